//! A network that fails between client and server: a TCP proxy on loopback in front of the
//! bench's server that can cut every connection and refuse new ones for a while.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
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
    /// While set, nothing listens on the port: connects are refused.
    cut: AtomicBool,
    /// The listener is bound (after a start or a restore).
    listening: AtomicBool,
    stop: AtomicBool,
    /// Both sockets of every connection forwarded so far, to close them on a cut.
    sockets: Mutex<Vec<TcpStream>>,
}

impl Proxy {
    fn start(upstream: u16) -> Proxy {
        let port = skypipe_nats::free_port().expect("free port");
        let shared = Arc::new(Shared::default());
        let state = shared.clone();
        let acceptor = std::thread::spawn(move || accept_loop(port, upstream, &state));
        let proxy = Proxy {
            port,
            shared,
            acceptor: Some(acceptor),
        };
        proxy.wait_listening();
        proxy
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Closes every connection and refuses new ones until [`Proxy::restore`].
    fn cut(&self) {
        let sockets = self.shared.sockets.lock().expect("sockets");
        self.shared.cut.store(true, Ordering::SeqCst);
        for s in sockets.iter() {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    /// Listens again; returns once new connections are accepted.
    fn restore(&self) {
        self.shared.cut.store(false, Ordering::SeqCst);
        self.wait_listening();
    }

    fn wait_listening(&self) {
        assert!(
            eventually(Duration::from_secs(10), || {
                self.shared.listening.load(Ordering::SeqCst)
            }),
            "the proxy listens on port {}",
            self.port
        );
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.cut();
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

fn accept_loop(port: u16, upstream: u16, shared: &Arc<Shared>) {
    let mut listener: Option<TcpListener> = None;
    while !shared.stop.load(Ordering::SeqCst) {
        if shared.cut.load(Ordering::SeqCst) {
            listener = None;
            shared.listening.store(false, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(10));
            continue;
        }
        let Some(l) = listener.as_ref() else {
            // std sets SO_REUSEADDR, so the port is free again at once after a cut.
            if let Ok(l) = TcpListener::bind(("127.0.0.1", port)) {
                l.set_nonblocking(true).expect("nonblocking listener");
                listener = Some(l);
                shared.listening.store(true, Ordering::SeqCst);
            } else {
                std::thread::sleep(Duration::from_millis(10));
            }
            continue;
        };
        match l.accept() {
            Ok((client, _)) => forward(client, upstream, shared),
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
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
    if shared.cut.load(Ordering::SeqCst) {
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
    let receiver = spawn_to_file(&mut via(&b, &proxy, &["cut-short"]), &output);
    std::thread::sleep(Duration::from_millis(300));
    let (sender, feeder) = paced_sender_via(
        &b,
        &proxy,
        &["cut-short"],
        data.clone(),
        Duration::from_millis(50),
    );
    std::thread::sleep(Duration::from_millis(800));
    proxy.cut();
    std::thread::sleep(Duration::from_secs(3));
    proxy.restore();
    feeder.join().expect("feeder");
    assert_ok(&wait_output(sender, HANG));
    assert_ok(&wait_output(receiver, HANG));
    assert_eq!(sha_file(&output), sha(&data));
}

#[test]
fn a_sender_cut_off_for_longer_than_it_retries_fails_and_delivers_nothing_complete() {
    let b = Bench::new();
    let proxy = Proxy::start(b.server.port());
    let data = random_bytes(40 * 1024 * 1024, 32);
    let (sender, feeder) = {
        let mut c = via(&b, &proxy, &["cut-long"]);
        // Give up after 5 s instead of a minute (send::RETRY_FOR_ENV).
        c.env("SKYPIPE_RETRY_FOR", "5s");
        feed_paced(c, data.clone(), 1024 * 1024, Duration::from_millis(50))
    };
    std::thread::sleep(Duration::from_millis(800));
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
