//! The test bench: a real `nats-server` per test (on a port it picks itself, in a temp dir,
//! killed on drop) and the real `skypipe` binary, run with a clean environment as a [`Proc`]
//! (killed on drop). Tests wait for readiness, not for time: [`Bench::spawn_ready`] returns
//! once skypipe said it is ready (`-v`), and [`Proc`] waits for what a child writes.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::ops::{Deref, DerefMut};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Condvar, Mutex};
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
    /// Variables every [`Bench::cmd`] sets besides NATS_URL (such as NATS_CREDS).
    pub env: Vec<(String, String)>,
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
        Bench {
            dir,
            server,
            env: Vec::new(),
        }
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
        c.envs(self.env.iter().map(|(k, v)| (k, v)));
        c.args(args);
        c
    }

    /// Writes `data` to a file in the temp dir and returns its path.
    pub fn file(&self, name: &str, data: &[u8]) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, data).expect("write input file");
        p
    }

    /// `skypipe send ARGS < file`: a sender whose stdin is a regular file.
    pub fn send_file(&self, args: &[&str], file: &Path) -> Output {
        let input = std::fs::File::open(file).expect("open input");
        self.cmd(&[&["send"], args].concat())
            .stdin(Stdio::from(input))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .start()
            .wait_output(HANG)
    }

    /// `cat data | skypipe send ARGS`: a sender whose stdin is a pipe.
    pub fn send_bytes(&self, args: &[&str], data: &[u8]) -> Output {
        let args = [&["send"], args].concat();
        output_with_input(&mut self.cmd(&args), data)
    }

    /// `skypipe ARGS < /dev/null` with stdout captured.
    pub fn recv(&self, args: &[&str]) -> Output {
        self.spawn_recv(args).wait_output(HANG)
    }

    /// A receiver running in the background, stdout and stderr piped.
    pub fn spawn_recv(&self, args: &[&str]) -> Proc {
        self.cmd(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .start()
    }

    /// `skypipe -v ARGS` in the background (stdin at /dev/null, stdout and stderr piped),
    /// returned once it said `line` (see [`Proc::ready`]), such as `waiting on pipe p` for a
    /// receiver: from then on, what is sent to the pipe is its.
    pub fn spawn_ready(&self, args: &[&str], line: &str) -> Proc {
        self.spawn_recv(&[&["-v"], args].concat()).ready(line)
    }

    /// Receives into a file (for big payloads), returns the exit status and stderr.
    pub fn recv_to_file(&self, args: &[&str], out: &Path) -> (ExitStatus, String) {
        let out = spawn_to_file(&mut self.cmd(args), out).wait_output(HANG);
        (out.status, stderr_of(&out))
    }

    /// Kills the server (SIGKILL), leaves it down for `down`, then starts it again on the same
    /// port with the same store.
    pub fn kill_server_for(&mut self, down: Duration) {
        self.server.kill().expect("kill -9 the server");
        // The scenario: for this long clients find nothing at the server's address.
        std::thread::sleep(down);
        self.server.restart().expect("restart the server");
    }
}

/// The readiness line of a receiver taking from `pipe`.
pub fn waiting(pipe: &str) -> String {
    format!("waiting on pipe {pipe}")
}

/// The readiness line of a follower (`--follow`) of `pipe`.
pub fn following(pipe: &str) -> String {
    format!("waiting on pipe {pipe} (following)")
}

/// The readiness line of a listener (`--listen`) of `pipe`.
pub fn listening(pipe: &str) -> String {
    format!("listening on pipe {pipe}")
}

/// What a sender says once its payload is in `pipe` (its ticket and first chunk stored).
pub fn queued(pipe: &str) -> String {
    format!("payload * queued on pipe {pipe}")
}

pub const MIB: usize = 1024 * 1024;

/// What a sender says (with `-v`) when a waiting taker asked for its payload live.
pub const WENT_LIVE: &str = "goes live to taker";

/// Whether a sender's stderr says its payload went live to a taker.
pub fn went_live(out: &Output) -> bool {
    stderr_of(out).contains(WENT_LIVE)
}

/// What a receiver says once it took a payload of `pipe`.
pub fn took(pipe: &str) -> String {
    format!("took payload * of pipe {pipe} (delivery *)")
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
        self.cmd(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .start()
            .wait_output(HANG)
    }

    /// `skypipe send ARGS` fed `data` (stdin a pipe), running in the background.
    pub fn spawn_send(&self, args: &[&str], data: &[u8]) -> (Proc, JoinHandle<()>) {
        let args = [&["send"], args].concat();
        spawn_with_input(self.cmd(&args).stdout(Stdio::piped()), data)
    }

    /// `cat data | skypipe send ARGS`.
    pub fn send(&self, args: &[&str], data: &[u8]) -> Output {
        let args = [&["send"], args].concat();
        output_with_input(&mut self.cmd(&args), data)
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
pub fn wait_output(child: impl Into<Proc>, limit: Duration) -> Output {
    child.into().wait_output(limit)
}

/// Waits for exit with a deadline, killing the child and failing the test when it passes.
pub fn wait_status(child: &mut Child, limit: Duration) -> ExitStatus {
    if eventually(limit, || child.try_wait().expect("try_wait").is_some()) {
        return child.wait().expect("wait");
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("skypipe (pid {}) still running after {limit:?}", child.id());
}

/// A child process that is killed (SIGKILL, with the process group it leads) and reaped when
/// dropped while it still runs, so a test that fails leaves nothing behind. It derefs to its
/// [`Child`]; its stdout and stderr can be collected as they come, to wait for what it says.
pub struct Proc {
    child: Child,
    /// It leads a process group of its own (a shell's pipeline is killed with it).
    group: bool,
    stdout: Option<Collector>,
    stderr: Option<Collector>,
    /// Leave skypipe's diagnostic lines out of the stderr [`Proc::wait_output`] returns: they
    /// were turned on to wait for readiness, not by the test.
    hide_diagnostics: bool,
}

/// Spawns a [`Proc`]: `cmd.start()`.
pub trait Start {
    fn start(&mut self) -> Proc;
}

impl Start for Command {
    fn start(&mut self) -> Proc {
        Proc::spawn(self)
    }
}

impl From<Child> for Proc {
    fn from(child: Child) -> Proc {
        Proc {
            child,
            group: false,
            stdout: None,
            stderr: None,
            hide_diagnostics: false,
        }
    }
}

impl Deref for Proc {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.child
    }
}

impl DerefMut for Proc {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.child
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.kill_now();
        }
    }
}

impl Proc {
    /// Spawns `cmd` in a process group of its own.
    pub fn spawn(cmd: &mut Command) -> Proc {
        let child = cmd.process_group(0).spawn().expect("spawn");
        let mut proc = Proc::from(child);
        proc.group = true;
        proc
    }

    /// SIGKILL to the child (and its group), then reaps it.
    fn kill_now(&mut self) {
        let pid = i32::try_from(self.child.id()).expect("pid");
        let pid = nix::unistd::Pid::from_raw(pid);
        let sig = nix::sys::signal::Signal::SIGKILL;
        if self.group {
            let _ = nix::sys::signal::killpg(pid, sig);
        } else {
            let _ = nix::sys::signal::kill(pid, sig);
        }
        let _ = self.child.wait();
    }

    /// Waits until skypipe said `line` on stderr (run with `-v`; see [`Proc::wait_for`]), and
    /// returns it. Its diagnostic lines are then left out of what [`Proc::wait_output`]
    /// returns.
    #[track_caller]
    pub fn ready(mut self, line: &str) -> Proc {
        self.wait_for(line);
        self
    }

    /// Waits until skypipe (run with `-v`) wrote a diagnostic line whose message is `line`,
    /// where a `*` stands for any text (`payload * queued on pipe p`). Fails the test with
    /// the stderr seen so far when the child's stderr ends first, or after [`HANG`].
    #[track_caller]
    pub fn wait_for(&mut self, line: &str) {
        self.hide_diagnostics = true;
        let said = |bytes: &[u8]| {
            String::from_utf8_lossy(bytes)
                .split_inclusive('\n')
                .filter(|l| l.ends_with('\n'))
                .filter_map(diagnostic)
                .any(|message| glob(line, message))
        };
        self.wait_stderr_until(line, said);
    }

    /// Waits until the child's stderr contains `text`, as [`Proc::wait_for`] does.
    #[track_caller]
    pub fn wait_stderr(&mut self, text: &str) {
        let said = |bytes: &[u8]| String::from_utf8_lossy(bytes).contains(text);
        self.wait_stderr_until(text, said);
    }

    #[track_caller]
    fn wait_stderr_until(&mut self, what: &str, said: impl FnMut(&[u8]) -> bool) {
        let err = self.stderr_collector();
        if !err.wait(HANG, said) {
            let seen = String::from_utf8_lossy(&err.now()).into_owned();
            let state = match self.child.try_wait() {
                Ok(Some(status)) => format!("it exited ({status})"),
                _ => format!("not within {HANG:?}"),
            };
            panic!(
                "pid {} never said {what:?}: {state}; its stderr: {seen}",
                self.child.id()
            );
        }
    }

    /// Waits until the child wrote at least `len` bytes to its stdout (which is then read as
    /// it comes), failing the test when its stdout ends first, or after [`HANG`].
    #[track_caller]
    pub fn wait_stdout(&mut self, len: usize) {
        self.wait_stdout_until(&format!("{len} bytes"), |bytes| bytes.len() >= len);
    }

    /// Waits until `cond` holds of what the child wrote to its stdout, as
    /// [`Proc::wait_stdout`] does; `what` names it in the failure.
    #[track_caller]
    pub fn wait_stdout_until(&mut self, what: &str, cond: impl FnMut(&[u8]) -> bool) {
        let out = self.stdout_collector();
        if !out.wait(HANG, cond) {
            let got = out.now().len();
            let err = match self.stderr.as_ref() {
                Some(err) => err.now(),
                None => Vec::new(),
            };
            panic!(
                "pid {}: not {what} on stdout ({got} bytes); its stderr: {}",
                self.child.id(),
                String::from_utf8_lossy(&err)
            );
        }
    }

    /// What the child wrote to stderr so far (collecting it from now on), diagnostics and all.
    pub fn stderr_now(&mut self) -> Vec<u8> {
        self.stderr_collector().now()
    }

    /// What the child wrote to stdout so far (collecting it from now on).
    pub fn stdout_now(&mut self) -> Vec<u8> {
        self.stdout_collector().now()
    }

    fn stderr_collector(&mut self) -> &Collector {
        let child = &mut self.child;
        self.stderr
            .get_or_insert_with(|| Collector::start(child.stderr.take().expect("stderr piped")))
    }

    fn stdout_collector(&mut self) -> &Collector {
        let child = &mut self.child;
        self.stdout
            .get_or_insert_with(|| Collector::start(child.stdout.take().expect("stdout piped")))
    }

    /// Waits for the exit with a deadline, killing the child (and its group) and failing the
    /// test when it passes.
    pub fn wait_status(&mut self, limit: Duration) -> ExitStatus {
        let child = &mut self.child;
        if eventually(limit, || child.try_wait().expect("try_wait").is_some()) {
            return self.child.wait().expect("wait");
        }
        self.kill_now();
        panic!("pid {} still running after {limit:?}", self.child.id());
    }

    /// Waits for the exit (see [`Proc::wait_status`]) and returns it with everything the
    /// child wrote to its piped stdout and stderr (empty when not piped, or taken).
    pub fn wait_output(mut self, limit: Duration) -> Output {
        if self.child.stdout.is_some() {
            self.stdout_collector();
        }
        if self.child.stderr.is_some() {
            self.stderr_collector();
        }
        let status = self.wait_status(limit);
        let stdout = self
            .stdout
            .take()
            .map(Collector::finish)
            .unwrap_or_default();
        let mut stderr = self
            .stderr
            .take()
            .map(Collector::finish)
            .unwrap_or_default();
        if self.hide_diagnostics {
            stderr = without_diagnostics(&stderr);
        }
        Output {
            status,
            stdout,
            stderr,
        }
    }
}

/// A child's output, read by a thread of its own as it comes.
struct Collector {
    shared: Arc<(Mutex<Collected>, Condvar)>,
    reader: JoinHandle<()>,
}

#[derive(Default)]
struct Collected {
    bytes: Vec<u8>,
    ended: bool,
}

impl Collector {
    fn start(mut from: impl Read + Send + 'static) -> Collector {
        let shared = Arc::new((Mutex::new(Collected::default()), Condvar::new()));
        let sink = shared.clone();
        let reader = std::thread::spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = match from.read(&mut buf) {
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    read => read.unwrap_or(0),
                };
                let mut c = sink.0.lock().expect("collected");
                c.bytes.extend_from_slice(&buf[..n]);
                c.ended = n == 0;
                sink.1.notify_all();
                if n == 0 {
                    return;
                }
            }
        });
        Collector { shared, reader }
    }

    /// Waits until `cond` holds of the bytes so far; `false` when the output ended or
    /// `limit` passed first.
    fn wait(&self, limit: Duration, mut cond: impl FnMut(&[u8]) -> bool) -> bool {
        let deadline = Instant::now() + limit;
        let mut c = self.shared.0.lock().expect("collected");
        loop {
            if cond(&c.bytes) {
                return true;
            }
            let now = Instant::now();
            if c.ended || now >= deadline {
                return false;
            }
            c = self
                .shared
                .1
                .wait_timeout(c, deadline - now)
                .expect("collected")
                .0;
        }
    }

    fn now(&self) -> Vec<u8> {
        self.shared.0.lock().expect("collected").bytes.clone()
    }

    /// Everything, once the output ended.
    fn finish(self) -> Vec<u8> {
        self.reader.join().expect("output reader");
        std::mem::take(&mut self.shared.0.lock().expect("collected").bytes)
    }
}

/// The message of one of skypipe's diagnostic lines (`   0.002809815s  INFO waiting on pipe
/// p`), or `None` when the line is not one.
pub fn diagnostic(line: &str) -> Option<&str> {
    let (uptime, rest) = line.trim_start().split_once("s ")?;
    uptime.parse::<f64>().ok()?;
    let (level, message) = rest.trim_start().split_once(' ')?;
    matches!(level, "TRACE" | "DEBUG" | "INFO" | "WARN" | "ERROR")
        .then(|| message.trim_end_matches(['\n', '\r']))
}

/// Stderr without skypipe's diagnostic lines.
pub fn without_diagnostics(stderr: &[u8]) -> Vec<u8> {
    stderr
        .split_inclusive(|&c| c == b'\n')
        .filter(|line| diagnostic(&String::from_utf8_lossy(line)).is_none())
        .flatten()
        .copied()
        .collect()
}

/// Whether `text` is `pattern`, where each `*` of the pattern stands for any text.
fn glob(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.ends_with(last)
}

/// Spawns `cmd` (stderr piped) and writes `data` to its stdin from a thread of its own,
/// closing it after.
pub fn spawn_with_input(cmd: &mut Command, data: &[u8]) -> (Proc, JoinHandle<()>) {
    let mut child = cmd.stdin(Stdio::piped()).stderr(Stdio::piped()).start();
    let mut stdin = child.stdin.take().expect("stdin");
    let data = data.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&data);
    });
    (child, writer)
}

/// Runs `cmd` fed `data` on stdin (a pipe), stdout and stderr captured, to its end.
pub fn output_with_input(cmd: &mut Command, data: &[u8]) -> Output {
    let (child, writer) = spawn_with_input(cmd.stdout(Stdio::piped()), data);
    let out = child.wait_output(HANG);
    writer.join().expect("writer");
    out
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

/// Runs a command to its end with stdin at /dev/null, its output captured.
pub fn run_to_end(mut cmd: Command) -> Output {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .start()
        .wait_output(HANG)
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

/// Checks a hand-over after a taker was killed: `two`, the next taker, exited 4 saying from
/// which byte it resumed, at most what the first one wrote (`one`), and the first one's bytes
/// up to there followed by the second one's are `data`.
pub fn assert_resumed_rest(one: &[u8], two: &Output, data: &[u8]) {
    let err = stderr_of(two);
    assert_eq!(two.status.code(), Some(4), "only the rest: {err}");
    let at: usize = err
        .split("resumed at byte ")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("says where it resumed: {err}"));
    // It resumes after what the first one removed, which is at most what it wrote.
    assert!(
        at > 0 && at <= one.len(),
        "resumed at {at}, first wrote {}",
        one.len()
    );
    assert_eq!(
        sha(&[&one[..at], two.stdout.as_slice()].concat()),
        sha(data),
        "the first one's bytes up to the resume point, then the second one's, are the payload"
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
        // Polling: what is waited for has no way to say when it happens.
        std::thread::sleep(Duration::from_millis(10));
    }
    cond()
}

/// Spawns `cmd` as a receiver writing to the file `output` (stdin from nowhere, stderr kept).
pub fn spawn_to_file(cmd: &mut Command, output: &Path) -> Proc {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(std::fs::File::create(output).expect("create")))
        .stderr(Stdio::piped())
        .start()
}

/// Writes each piece and flushes it, then pauses for `pause`.
pub fn write_paced<P: AsRef<[u8]>>(
    to: &mut impl Write,
    pieces: impl IntoIterator<Item = P>,
    pause: Duration,
) -> std::io::Result<()> {
    for piece in pieces {
        to.write_all(piece.as_ref())?;
        to.flush()?;
        // The scenario: input that comes slowly, the way a log or a person writes it.
        std::thread::sleep(pause);
    }
    Ok(())
}

/// Spawns `cmd` (stdout to nowhere, stderr kept) and feeds `data` to its stdin in blocks of
/// `block` bytes, `pause` apart, from a thread of its own; stdin closes after the last block.
pub fn feed_paced(
    cmd: Command,
    data: Vec<u8>,
    block: usize,
    pause: Duration,
) -> (Proc, JoinHandle<()>) {
    feed(cmd, move |stdin| {
        write_paced(stdin, data.chunks(block), pause)
    })
}

/// Spawns `cmd` (stdout to nowhere, stderr kept) and feeds it `pieces` (each with a flush),
/// `pause` apart, from a thread of its own; stdin closes after the last one.
pub fn feed_pieces<P: AsRef<[u8]>>(
    cmd: Command,
    pieces: impl IntoIterator<Item = P> + Send + 'static,
    pause: Duration,
) -> (Proc, JoinHandle<()>) {
    feed(cmd, move |stdin| write_paced(stdin, pieces, pause))
}

/// Spawns `cmd` (stdout to nowhere, stderr kept) and runs `write` on its stdin in a thread of
/// its own; stdin closes when it returns (early when the child stops reading).
fn feed(
    mut cmd: Command,
    write: impl FnOnce(&mut std::process::ChildStdin) -> std::io::Result<()> + Send + 'static,
) -> (Proc, JoinHandle<()>) {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .start();
    let mut stdin = child.stdin.take().expect("stdin");
    let feeder = std::thread::spawn(move || {
        let _ = write(&mut stdin);
    });
    (child, feeder)
}

/// Whether the write end of a pipe has room (false: it is full, a writer would block).
pub fn has_room(pipe: &std::io::PipeWriter) -> bool {
    use std::os::fd::AsFd as _;
    let mut fds = [nix::poll::PollFd::new(
        pipe.as_fd(),
        nix::poll::PollFlags::POLLOUT,
    )];
    nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO).expect("poll") > 0
}

/// The length of a file, 0 when there is none.
pub fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

/// Waits until the file at `path` holds at least `len` bytes.
#[track_caller]
pub fn wait_file_len(path: &Path, len: u64) {
    assert!(
        eventually(HANG, || file_len(path) >= len),
        "{} has {} bytes, not {len}",
        path.display(),
        file_len(path)
    );
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
    stream_state(url, "skypipe-data").map_or(0, |s| s.consumer_count)
}

/// How many chunks the data stream holds, of all pipes.
pub fn data_messages(url: &str) -> u64 {
    stream_messages(url, "skypipe-data")
}

/// How many tickets the queue stream holds, of all pipes.
pub fn queue_messages(url: &str) -> u64 {
    stream_messages(url, "skypipe-queue")
}

/// How many messages the data stream ever stored (its last sequence), of all pipes: what a
/// live transfer kept out of the store shows here.
pub fn data_stored_ever(url: &str) -> u64 {
    stream_state(url, "skypipe-data").map_or(0, |s| s.last_sequence)
}

fn stream_messages(url: &str, stream: &str) -> u64 {
    stream_state(url, stream).map_or(0, |s| s.messages)
}

/// A stream's state as the server reports it; `None` when there is no such stream (yet).
fn stream_state(url: &str, stream: &str) -> Option<async_nats::jetstream::stream::State> {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let client = async_nats::connect(url).await.ok()?;
        let js = async_nats::jetstream::new(client);
        let mut stream = js.get_stream(stream).await.ok()?;
        stream.info().await.ok().map(|i| i.state.clone())
    })
}

/// The account, user and password on both servers of a [`HubAndLeaf`].
const LEAF_ACCOUNT: &str = "A";
const LEAF_USER: &str = "ann";
const LEAF_PASSWORD: &str = "leaf-test-secret";

/// A hub and a leaf node in one account (plain config users): the hub runs JetStream in
/// domain `hub` and listens for leaf nodes; the leaf joins it with a user of the account, and
/// runs JetStream in domain `leaf` of its own, or none. Both have a monitoring port, so tests
/// wait for the leaf node connection (`/leafz`) rather than for time.
pub struct HubAndLeaf {
    pub dir: TempDir,
    pub hub: Server,
    pub leaf: Server,
    hub_http: u16,
    leaf_http: u16,
}

impl HubAndLeaf {
    /// Starts both and waits until the leaf node connection is up.
    pub fn start(leaf_jetstream: bool) -> HubAndLeaf {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = || skypipe_nats::free_port().expect("port");
        let (hub_http, leaf_http, leafnodes) = (port(), port(), port());
        let users = format!(
            "accounts {{ {LEAF_ACCOUNT} {{ jetstream: enabled, users: [ {{ user: {LEAF_USER}, \
             password: {LEAF_PASSWORD} }} ] }} }}\n"
        );
        let jetstream = |name: &str, domain: &str| {
            format!(
                "jetstream {{ store_dir: \"{}\", domain: {domain} }}\n",
                dir.path().join(name).join("jetstream").display()
            )
        };
        let mut hub = ServerConfig::new(dir.path().join("hub"));
        hub.name = Some("hub".into());
        hub.jetstream = false;
        hub.extra = format!(
            "{}{users}http: \"127.0.0.1:{hub_http}\"\nleafnodes {{ listen: \"127.0.0.1:{leafnodes}\" }}\n",
            jetstream("hub", "hub")
        );
        let hub = hub
            .start()
            .expect("the hub starts (is nats-server on PATH?)");
        let mut leaf = ServerConfig::new(dir.path().join("leaf"));
        leaf.name = Some("leaf".into());
        leaf.jetstream = false;
        let own = if leaf_jetstream {
            jetstream("leaf", "leaf")
        } else {
            String::new()
        };
        let users = if leaf_jetstream {
            users
        } else {
            users.replace("jetstream: enabled, ", "")
        };
        leaf.extra = format!(
            "{own}{users}http: \"127.0.0.1:{leaf_http}\"\nleafnodes {{ remotes [ {{ url: \
             \"nats-leaf://{LEAF_USER}:{LEAF_PASSWORD}@127.0.0.1:{leafnodes}\", account: \
             {LEAF_ACCOUNT} }} ] }}\n"
        );
        let leaf = leaf.start().expect("the leaf starts");
        let both = HubAndLeaf {
            dir,
            hub,
            leaf,
            hub_http,
            leaf_http,
        };
        both.wait_joined();
        std::fs::create_dir_all(both.home()).expect("home");
        both
    }

    fn url_of(server: &Server) -> String {
        format!(
            "nats://{LEAF_USER}:{LEAF_PASSWORD}@127.0.0.1:{}",
            server.port()
        )
    }

    /// The hub's client URL, with the user's login.
    pub fn hub_url(&self) -> String {
        Self::url_of(&self.hub)
    }

    /// The leaf's client URL, with the user's login.
    pub fn leaf_url(&self) -> String {
        Self::url_of(&self.leaf)
    }

    pub fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `skypipe ARGS` with a clean environment and no server named.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = bare_cmd(&self.home());
        c.args(args);
        c
    }

    /// `skypipe ARGS` as a client of the hub (`NATS_URL`).
    pub fn hub_cmd(&self, args: &[&str]) -> Command {
        let mut c = self.cmd(args);
        c.env("NATS_URL", self.hub_url());
        c
    }

    /// `skypipe ARGS` as a client of the leaf (`NATS_URL`).
    pub fn leaf_cmd(&self, args: &[&str]) -> Command {
        let mut c = self.cmd(args);
        c.env("NATS_URL", self.leaf_url());
        c
    }

    /// The user's client of a server (the account's JetStream in the server's own domain).
    async fn jetstream_of(server: &Server) -> Option<async_nats::jetstream::Context> {
        let client = async_nats::ConnectOptions::with_user_and_password(
            LEAF_USER.into(),
            LEAF_PASSWORD.into(),
        )
        .connect(server.url())
        .await
        .ok()?;
        Some(async_nats::jetstream::new(client))
    }

    /// Creates a stream by hand in a server's own domain, as an operator (or an older
    /// skypipe) might have: `subject` captured, work-queue retention or limits.
    pub fn create_stream(server: &Server, name: &str, subject: &str, work_queue: bool) {
        use async_nats::jetstream::stream;
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        rt.block_on(async {
            let js = Self::jetstream_of(server).await.expect("connect");
            js.create_stream(stream::Config {
                name: name.into(),
                subjects: vec![subject.into()],
                retention: if work_queue {
                    stream::RetentionPolicy::WorkQueue
                } else {
                    stream::RetentionPolicy::Limits
                },
                allow_message_ttl: true,
                ..Default::default()
            })
            .await
            .expect("create the stream");
        });
    }

    /// What a server's own JetStream (`$JS.API`, its own domain) holds in stream `name`:
    /// its message count, `None` when there is no such stream.
    pub fn stream_messages(server: &Server, name: &str) -> Option<u64> {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        rt.block_on(async {
            let js = Self::jetstream_of(server).await?;
            let mut stream = js.get_stream(name).await.ok()?;
            stream.info().await.ok().map(|i| i.state.messages)
        })
    }

    /// How many leaf node connections a server's `/leafz` lists.
    fn leafnodes(http: u16) -> Option<u64> {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", http)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        stream
            .write_all(b"GET /leafz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .ok()?;
        let mut text = String::new();
        stream.read_to_string(&mut text).ok()?;
        let body = text.split_once("\r\n\r\n")?.1;
        let json: serde_json::Value = serde_json::from_str(body).ok()?;
        json.get("leafnodes")?.as_u64()
    }

    /// Waits until the leaf node connection is up, as both ends see it.
    pub fn wait_joined(&self) {
        let up = |http| Self::leafnodes(http).is_some_and(|n| n > 0);
        assert!(
            eventually(HANG, || up(self.hub_http) && up(self.leaf_http)),
            "the leaf node did not join the hub"
        );
    }

    /// Stops the hub (SIGTERM: its store is written out) and waits until the leaf noticed.
    pub fn stop_hub(&mut self) {
        self.hub
            .stop(Duration::from_secs(10))
            .expect("stop the hub");
        assert!(
            eventually(HANG, || Self::leafnodes(self.leaf_http) == Some(0)),
            "the leaf still counts the hub as joined"
        );
    }

    /// Starts the hub again (same ports, same store) and waits until the leaf joined it.
    pub fn restart_hub(&mut self) {
        self.hub.restart().expect("restart the hub");
        self.wait_joined();
    }
}

/// The harness's own pieces.
mod own {
    use super::*;

    #[test]
    fn diagnostic_lines_are_told_apart_and_matched() {
        let line = "   0.002809815s  INFO waiting on pipe p\n";
        assert_eq!(diagnostic(line), Some("waiting on pipe p"));
        assert_eq!(
            diagnostic("  12.5s DEBUG payload x is live"),
            Some("payload x is live")
        );
        assert_eq!(diagnostic("skypipe: payloads are gone\n"), None);
        assert_eq!(diagnostic("0.5s later INFO"), None);
        let err = format!("{line}skypipe: one error\n   0.1s  INFO connected to x\n");
        assert_eq!(without_diagnostics(err.as_bytes()), b"skypipe: one error\n");
        assert!(glob("waiting on pipe p", "waiting on pipe p"));
        assert!(!glob("waiting on pipe p", "waiting on pipe pair"));
        assert!(!glob("waiting on pipe p", "waiting on pipe p (following)"));
        assert!(glob(&queued("p"), "payload 01J8 queued on pipe p"));
        assert!(!glob(&queued("p"), "payload 01J8 queued on pipe xp"));
        assert!(glob(&took("p"), "took payload 01J8 of pipe p (delivery 2)"));
        assert!(!glob(
            &took("p"),
            "took payload 01J8 of pipe q (delivery 2)"
        ));
    }

    #[test]
    fn a_proc_dropped_while_it_runs_is_killed_with_its_group() {
        let mut shell = Command::new("bash");
        shell
            .args(["-c", "sleep 600 & echo $!; wait"])
            .stdout(Stdio::piped());
        let mut proc = shell.start();
        let pid = proc.id();
        proc.wait_stdout(2);
        let text = String::from_utf8(proc.stdout_now()).expect("text");
        let grandchild: i32 = text.trim().parse().expect("a pid");
        drop(proc);
        let gone =
            |pid: i32| nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_err();
        assert!(gone(i32::try_from(pid).expect("pid")), "the child is gone");
        assert!(eventually(HANG, || gone(grandchild)), "its own child too");
    }
}
