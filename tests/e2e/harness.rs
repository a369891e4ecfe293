//! The test bench: a real `nats-server` per test (its own port and temp dir, killed on
//! drop) and the real `skypipe` binary, run with a clean environment.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use skypipe_nats::{Server, ServerConfig};
use tempfile::TempDir;

pub const BIN: &str = env!("CARGO_BIN_EXE_skypipe");

/// Longest any single skypipe command may run in a test before it counts as hung.
pub const HANG: Duration = Duration::from_secs(120);

pub struct Bench {
    pub dir: TempDir,
    pub server: Server,
}

impl Bench {
    /// A fresh JetStream server.
    pub fn new() -> Bench {
        Bench::with(|_| {})
    }

    /// A fresh server whose config the caller adjusts first (auth blocks and such).
    pub fn with(adjust: impl FnOnce(&mut ServerConfig)) -> Bench {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = ServerConfig::new(dir.path().join("server"));
        adjust(&mut config);
        let server = config.start().expect("nats-server starts (is it on PATH?)");
        std::fs::create_dir_all(dir.path().join("home")).expect("home");
        Bench { dir, server }
    }

    /// A fresh server that also listens for WebSocket clients (plain text, loopback).
    pub fn websocket() -> Bench {
        Bench::with(|c| {
            c.websocket_any_port();
        })
    }

    pub fn url(&self) -> String {
        self.server.url()
    }

    /// The `ws://` (or `wss://`) URL of the server's WebSocket listener.
    pub fn ws_url(&self) -> String {
        self.server
            .websocket_url()
            .expect("this bench's server has a websocket listener")
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `skypipe ARGS` with HOME in the temp dir, no NATS_* from the outside, and NATS_URL
    /// pointing at this bench's server.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = bare_cmd(&self.path("home"));
        c.env("NATS_URL", self.url());
        c.args(args);
        c
    }

    /// Writes `data` to a file in the temp dir and returns its path.
    pub fn file(&self, name: &str, data: &[u8]) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, data).expect("write input file");
        p
    }

    /// `skypipe ARGS < file`: a sender whose stdin is a regular file.
    pub fn send_file(&self, args: &[&str], file: &Path) -> Output {
        let input = std::fs::File::open(file).expect("open input");
        let child = self
            .cmd(args)
            .stdin(Stdio::from(input))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn skypipe");
        wait_output(child, HANG)
    }

    /// `cat data | skypipe ARGS`: a sender whose stdin is a pipe.
    pub fn send_bytes(&self, args: &[&str], data: &[u8]) -> Output {
        let mut child = self
            .cmd(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn skypipe");
        let mut stdin = child.stdin.take().expect("stdin");
        let data = data.to_vec();
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(&data);
        });
        let out = wait_output(child, HANG);
        writer.join().expect("writer");
        out
    }

    /// `skypipe ARGS < /dev/null` with stdout captured.
    pub fn recv(&self, args: &[&str]) -> Output {
        let child = self.spawn_recv(args);
        wait_output(child, HANG)
    }

    /// A receiver running in the background, stdout and stderr piped.
    pub fn spawn_recv(&self, args: &[&str]) -> Child {
        self.cmd(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn skypipe")
    }

    /// Receives into a file (for big payloads), returns the exit status and stderr.
    pub fn recv_to_file(&self, args: &[&str], out: &Path) -> (ExitStatus, String) {
        let file = std::fs::File::create(out).expect("create output");
        let child = self
            .cmd(args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(file))
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn skypipe");
        let out = wait_output(child, HANG);
        (
            out.status,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

/// `bash -c SCRIPT` with the same clean environment as [`Bench::cmd`], stdin at /dev/null.
pub fn shell(bench: &Bench, script: &str) -> Command {
    let mut c = Command::new("bash");
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().to_string();
        if k.starts_with("NATS_") || k.starts_with("SKYPIPE_") || k.starts_with("XDG_") {
            c.env_remove(&k);
        }
    }
    c.env("HOME", bench.path("home"))
        .env("NATS_URL", bench.url())
        .env("SKYPIPE", BIN)
        .arg("-c")
        .arg(script)
        .stdin(Stdio::null());
    c
}

/// `skypipe` with a clean environment: HOME set, no NATS or skypipe variables.
pub fn bare_cmd(home: &Path) -> Command {
    let mut c = Command::new(BIN);
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().to_string();
        if k.starts_with("NATS_") || k.starts_with("SKYPIPE_") || k.starts_with("XDG_") {
            c.env_remove(&k);
        }
    }
    c.env("HOME", home);
    c
}

/// A user with nothing configured: a temporary HOME, no NATS variables, and the default
/// address moved to a free loopback port (`SKYPIPE_LOCAL_PORT`), where nothing answers yet.
/// Whatever local server its commands start is killed when this is dropped.
pub struct LocalHome {
    pub dir: TempDir,
    pub port: u16,
}

impl LocalHome {
    pub fn new() -> LocalHome {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("home")).expect("home");
        let port = skypipe_nats::free_port().expect("free port");
        LocalHome { dir, port }
    }

    pub fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Where the local server keeps its files.
    pub fn data_dir(&self) -> PathBuf {
        self.home().join(".local/share/skypipe")
    }

    pub fn pid(&self) -> Option<u32> {
        skypipe_nats::read_pid(&self.data_dir().join("nats-server.pid"))
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `skypipe ARGS` as this user.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = bare_cmd(&self.home());
        c.env("SKYPIPE_LOCAL_PORT", self.port.to_string());
        c.args(args);
        c
    }

    /// `skypipe ARGS < /dev/null`, output captured.
    pub fn run(&self, args: &[&str]) -> Output {
        let child = self
            .cmd(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn skypipe");
        wait_output(child, HANG)
    }

    /// A sender of `data` (stdin a pipe), running in the background.
    pub fn spawn_send(&self, args: &[&str], data: &[u8]) -> (Child, std::thread::JoinHandle<()>) {
        let mut child = self
            .cmd(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn skypipe");
        let mut stdin = child.stdin.take().expect("stdin");
        let data = data.to_vec();
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(&data);
        });
        (child, writer)
    }

    /// `cat data | skypipe ARGS`.
    pub fn send(&self, args: &[&str], data: &[u8]) -> Output {
        let (child, writer) = self.spawn_send(args, data);
        let out = wait_output(child, HANG);
        writer.join().expect("writer");
        out
    }
}

impl Drop for LocalHome {
    fn drop(&mut self) {
        if let Some(pid) = self.pid() {
            let _ = skypipe_nats::stop_pid(pid, Duration::from_secs(5));
        }
    }
}

/// The pids of running nats-servers whose command line mentions `needle`.
pub fn nats_servers_mentioning(needle: &Path) -> Vec<u32> {
    let needle = needle.to_string_lossy().to_string();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            comm.trim() == "nats-server" && String::from_utf8_lossy(&cmdline).contains(&needle)
        })
        .collect()
}

/// Waits for a child with a deadline; a child still running then is killed and the test
/// fails, so no test can hang.
pub fn wait_output(mut child: Child, limit: Duration) -> Output {
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let out_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        if let Some(s) = stdout.as_mut() {
            let _ = s.read_to_end(&mut v);
        }
        v
    });
    let err_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        if let Some(s) = stderr.as_mut() {
            let _ = s.read_to_end(&mut v);
        }
        v
    });
    let status = wait_status(&mut child, limit);
    Output {
        status,
        stdout: out_t.join().expect("stdout reader"),
        stderr: err_t.join().expect("stderr reader"),
    }
}

/// Waits for exit with a deadline, killing the child and failing the test when it passes.
pub fn wait_status(child: &mut Child, limit: Duration) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("skypipe (pid {}) still running after {limit:?}", child.id());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub fn sha(data: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(data);
    format!("{:x}", h.finalize())
}

pub fn sha_file(path: &Path) -> String {
    let mut f = std::fs::File::open(path).expect("open");
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    format!("{:x}", h.finalize())
}

/// Deterministic pseudo-random bytes (xorshift), so failures can be reproduced.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

/// Writes `len` pseudo-random bytes to a file without holding them all in memory.
pub fn random_file(path: &Path, len: usize, seed: u64) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).expect("create"));
    let mut left = len;
    let mut s = seed;
    while left > 0 {
        let n = left.min(1 << 20);
        f.write_all(&random_bytes(n, s)).expect("write");
        s = s.wrapping_mul(6364136223846793005).wrapping_add(1);
        left -= n;
    }
    f.flush().expect("flush");
}

pub fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts a clean exit with a readable message when it is not.
#[track_caller]
pub fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "exit {:?}, stderr: {}",
        out.status.code(),
        stderr_of(out)
    );
}

/// Sends SIGINT to a child.
pub fn interrupt(child: &Child) {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).expect("kill -INT");
}

/// Waits until `cond` holds, up to `limit`.
pub fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Spawns `cmd` as a receiver writing to the file `output` (stdin from nowhere, stderr kept).
pub fn spawn_to_file(cmd: &mut Command, output: &Path) -> Child {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(std::fs::File::create(output).expect("create")))
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn a receiver")
}

/// Spawns `cmd` (stdout to nowhere, stderr kept) and feeds `data` to its stdin in blocks of
/// `block` bytes, `pause` apart, from a thread of its own; stdin closes after the last block.
pub fn feed_paced(
    mut cmd: Command,
    data: Vec<u8>,
    block: usize,
    pause: Duration,
) -> (Child, std::thread::JoinHandle<()>) {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn a paced sender");
    let mut stdin = child.stdin.take().expect("stdin");
    let feeder = std::thread::spawn(move || {
        for piece in data.chunks(block) {
            if stdin.write_all(piece).is_err() {
                return;
            }
            std::thread::sleep(pause);
        }
    });
    (child, feeder)
}

/// Reads a child's stdout in two parts: the first `first` bytes, then, once told to go on,
/// the rest. In between the child blocks on a full pipe, so it is held in the middle of its
/// payload for as long as the test needs.
pub struct Held {
    got_first: std::sync::mpsc::Receiver<()>,
    go: std::sync::mpsc::Sender<()>,
    reader: JoinHandle<Vec<u8>>,
}

impl Held {
    pub fn new(child: &mut Child, first: usize) -> Held {
        let mut stdout = child.stdout.take().expect("stdout piped");
        let (first_tx, got_first) = std::sync::mpsc::channel();
        let (go, go_rx) = std::sync::mpsc::channel::<()>();
        let reader = std::thread::spawn(move || {
            let mut got = vec![0u8; first];
            let n = read_up_to(&mut stdout, &mut got);
            got.truncate(n);
            let _ = first_tx.send(());
            let _ = go_rx.recv();
            let _ = stdout.read_to_end(&mut got);
            got
        });
        Held {
            got_first,
            go,
            reader,
        }
    }

    /// Waits until the first part was read (or the output ended before it).
    pub fn wait_first(&self) {
        self.got_first
            .recv_timeout(HANG)
            .expect("the first part of the output within the hang limit");
    }

    /// Lets the rest through.
    pub fn release(&self) {
        let _ = self.go.send(());
    }

    /// All the bytes read, once the output ended (after [`Held::release`], or the child's end).
    pub fn finish(self) -> Vec<u8> {
        self.release();
        self.reader.join().expect("stdout reader")
    }
}

/// Reads until `buf` is full or the stream ends; returns how many bytes were read.
pub fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> usize {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
    n
}

/// A child's stderr, collected as it is written, so a test can wait for a message while the
/// child still runs.
pub fn collect_stderr(child: &mut Child) -> (Arc<Mutex<String>>, JoinHandle<()>) {
    let mut stderr = child.stderr.take().expect("stderr piped");
    let text = Arc::new(Mutex::new(String::new()));
    let sink = text.clone();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        loop {
            match stderr.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => sink
                    .lock()
                    .expect("stderr text")
                    .push_str(&String::from_utf8_lossy(&buf[..n])),
            }
        }
    });
    (text, reader)
}

/// Lines "TAG N\n" for N in 0..n.
pub fn numbered(tag: &str, n: usize) -> Vec<u8> {
    (0..n)
        .flat_map(|i| format!("{tag} {i}\n").into_bytes())
        .collect()
}

/// What the server says of a pipe's queue consumer: tickets waiting, tickets out with a
/// taker (not yet acked), and pull requests waiting. `None` before any taker made it.
pub fn queue_state(url: &str, pipe: &str) -> Option<(u64, usize, usize)> {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let client = async_nats::connect(url).await.ok()?;
        let js = async_nats::jetstream::new(client);
        let stream = js.get_stream("skypipe-queue").await.ok()?;
        let mut consumer: async_nats::jetstream::consumer::PullConsumer =
            stream.get_consumer(pipe).await.ok()?;
        let info = consumer.info().await.ok()?;
        Some((info.num_pending, info.num_ack_pending, info.num_waiting))
    })
}

/// Waits until a taker holds a ticket of `pipe` (readiness: it has taken a payload).
pub fn wait_taken(url: &str, pipe: &str) {
    assert!(
        eventually(HANG, || queue_state(url, pipe)
            .is_some_and(|(_, out, _)| out > 0)),
        "no taker took a payload of pipe {pipe}"
    );
}

/// Waits until a taker waits on `pipe` (readiness: its pull request is at the server).
pub fn wait_waiting(url: &str, pipe: &str) {
    assert!(
        eventually(HANG, || queue_state(url, pipe)
            .is_some_and(|(_, _, w)| w > 0)),
        "no taker waits on pipe {pipe}"
    );
}

/// Sends a signal to a child.
pub fn signal(child: &Child, sig: nix::sys::signal::Signal) {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid"));
    nix::sys::signal::kill(pid, sig).expect("kill");
}

/// How many consumers the data stream has (a listener adds one while it listens).
pub fn data_consumers(url: &str) -> usize {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let Ok(client) = async_nats::connect(url).await else {
            return 0;
        };
        let js = async_nats::jetstream::new(client);
        let Ok(mut stream) = js.get_stream("skypipe-data").await else {
            return 0;
        };
        stream.info().await.map_or(0, |i| i.state.consumer_count)
    })
}

/// How many tickets the queue stream holds, of all pipes.
pub fn queue_messages(url: &str) -> u64 {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let Ok(client) = async_nats::connect(url).await else {
            return 0;
        };
        let js = async_nats::jetstream::new(client);
        let Ok(mut stream) = js.get_stream("skypipe-queue").await else {
            return 0;
        };
        stream.info().await.map_or(0, |i| i.state.messages)
    })
}
