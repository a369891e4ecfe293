//! A network that fails between client and server: a TCP proxy on loopback in front of the
//! bench's server that can cut every connection and refuse new ones for a while.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use super::harness::*;

/// Forwards bytes between 127.0.0.1:`port` and a server, both ways, one thread per
/// direction per connection.
struct Proxy {
    port: u16,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    /// Both sockets of every connection forwarded so far, to close them on a cut.
    sockets: Mutex<Vec<TcpStream>>,
}

#[derive(Default)]
struct State {
    /// While set, nothing listens on the port: connects are refused.
    cut: bool,
    /// The listener is bound (after a start or a restore).
    listening: bool,
    stop: bool,
}

impl Shared {
    fn update(&self, change: impl FnOnce(&mut State)) {
        change(&mut self.state.lock().expect("state"));
        self.changed.notify_all();
    }

    /// Waits until `cond` holds of the state, up to `limit`; returns the state then.
    fn wait(&self, limit: Duration, cond: impl Fn(&State) -> bool) -> MutexGuard<'_, State> {
        let state = self.state.lock().expect("state");
        self.changed
            .wait_timeout_while(state, limit, |s| !cond(s))
            .expect("state")
            .0
    }
}

impl Proxy {
    fn start(upstream: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a port for the proxy");
        let port = listener.local_addr().expect("the proxy's address").port();
        let shared = Arc::new(Shared::default());
        let state = shared.clone();
        let acceptor = std::thread::spawn(move || accept_loop(listener, port, upstream, &state));
        let proxy = Proxy {
            port,
            shared,
            acceptor: Some(acceptor),
        };
        proxy.wait_listening(true);
        proxy
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Closes every connection and refuses new ones until [`Proxy::restore`]; returns once
    /// nothing listens.
    fn cut(&self) {
        {
            let sockets = self.shared.sockets.lock().expect("sockets");
            self.shared.update(|s| s.cut = true);
            for s in sockets.iter() {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
        // Wakes the acceptor, which sees the cut and closes the listener.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        self.wait_listening(false);
    }

    /// Listens again; returns once new connections are accepted.
    fn restore(&self) {
        self.shared.update(|s| s.cut = false);
        self.wait_listening(true);
    }

    fn wait_listening(&self, listening: bool) {
        let state = self
            .shared
            .wait(Duration::from_secs(10), |s| s.listening == listening);
        assert_eq!(
            state.listening, listening,
            "the proxy on port {} listening",
            self.port
        );
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.update(|s| s.stop = true);
        self.cut();
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

fn accept_loop(listener: TcpListener, port: u16, upstream: u16, shared: &Arc<Shared>) {
    let mut bound = Some(listener);
    loop {
        let listener = match bound.take() {
            Some(l) => l,
            None => {
                if shared.wait(HANG, |s| !s.cut || s.stop).stop {
                    return;
                }
                // std sets SO_REUSEADDR, so the port is free again at once after a cut.
                TcpListener::bind(("127.0.0.1", port)).expect("the proxy's port again")
            }
        };
        shared.update(|s| s.listening = true);
        for client in listener.incoming() {
            let state = shared.state.lock().expect("state");
            if state.cut || state.stop {
                break;
            }
            drop(state);
            if let Ok(client) = client {
                forward(client, upstream, shared);
            }
        }
        drop(listener);
        shared.update(|s| s.listening = false);
        if shared.state.lock().expect("state").stop {
            return;
        }
    }
}

fn forward(client: TcpStream, upstream: u16, shared: &Arc<Shared>) {
    let _ = client.set_nonblocking(false);
    let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
        return;
    };
    let mut sockets = shared.sockets.lock().expect("sockets");
    // A connection accepted just as the cut came is closed with the others.
    if shared.state.lock().expect("state").cut {
        return;
    }
    let (Ok(c2), Ok(s2), Ok(c3), Ok(s3)) = (
        client.try_clone(),
        server.try_clone(),
        client.try_clone(),
        server.try_clone(),
    ) else {
        return;
    };
    sockets.push(c3);
    sockets.push(s3);
    std::thread::spawn(move || pump(client, server));
    std::thread::spawn(move || pump(s2, c2));
}

/// Copies `from` to `to` until either side closes, then closes both.
fn pump(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

/// `skypipe ARGS` through the proxy.
fn via(b: &Bench, proxy: &Proxy, args: &[&str]) -> std::process::Command {
    let mut c = b.cmd(args);
    c.env("NATS_URL", proxy.url());
    c
}

/// A sender through the proxy fed `data` in 1 MiB blocks, `pause` apart.
fn paced_sender_via(
    b: &Bench,
    proxy: &Proxy,
    args: &[&str],
    data: Vec<u8>,
    pause: Duration,
) -> (Proc, JoinHandle<()>) {
    feed_paced(via(b, proxy, args), data, 1024 * 1024, pause)
}

#[test]
fn a_transfer_through_a_network_cut_for_three_seconds_completes() {
    let b = Bench::new();
    let proxy = Proxy::start(b.server.port());
    let data = random_bytes(40 * 1024 * 1024, 31);
    let output = b.path("output");
    let receiver = spawn_to_file(&mut via(&b, &proxy, &["-v", "cut-short"]), &output)
        .ready(&waiting("cut-short"));
    let (sender, feeder) = paced_sender_via(
        &b,
        &proxy,
        &["-v", "send", "cut-short"],
        data.clone(),
        Duration::from_millis(50),
    );
    // A fifth of the way through.
    wait_file_len(&output, 8 * 1024 * 1024);
    proxy.cut();
    // The scenario: the network stays cut for three seconds.
    std::thread::sleep(Duration::from_secs(3));
    proxy.restore();
    feeder.join().expect("feeder");
    let sent = wait_output(sender, HANG);
    assert_ok(&sent);
    assert!(went_live(&sent), "on the live path: {}", stderr_of(&sent));
    assert_ok(&wait_output(receiver, HANG));
    assert_eq!(sha_file(&output), sha(&data));
}

#[test]
fn a_sender_cut_off_for_longer_than_it_retries_fails_and_delivers_nothing_complete() {
    let b = Bench::new();
    let proxy = Proxy::start(b.server.port());
    let data = random_bytes(40 * 1024 * 1024, 32);
    let (mut sender, feeder) = {
        let mut c = via(&b, &proxy, &["-v", "send", "cut-long"]);
        // Give up after 5 s instead of a minute (send::RETRY_FOR_ENV).
        c.env("SKYPIPE_RETRY_FOR", "5s");
        feed_paced(c, data.clone(), 1024 * 1024, Duration::from_millis(50))
    };
    // Cut once the payload is in the pipe and some chunks of it are stored.
    sender.wait_for(&queued("cut-long"));
    assert!(
        eventually(HANG, || data_messages(&b.url()) >= 8),
        "chunks stored"
    );
    proxy.cut();
    let out = wait_output(sender, HANG);
    feeder.join().expect("feeder");
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(
        err.contains(&proxy.url()) && err.contains("incomplete"),
        "{err}"
    );
    // Whatever reached the server is not handed out as a whole payload.
    let taken = b.recv(&["cut-long", "--sender-timeout", "3s", "--timeout", "5s"]);
    assert_ne!(taken.status.code(), Some(0), "{}", stderr_of(&taken));
    assert!(taken.stdout.len() < data.len());
    assert_eq!(sha(&taken.stdout), sha(&data[..taken.stdout.len()]));
}
