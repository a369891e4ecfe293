//! The benchmark: skypipe beside raw async-nats (examples/raw_baseline.rs) and `nc`, on
//! loopback, against a nats-server it starts itself (with a WebSocket listener too, for the
//! live case over `ws://`), and skypipe live with a secret beside skypipe live without one.
//! Prints a table of medians and ratios.
//! Run it with `scripts/bench` (which builds everything in release mode first).
//!
//! ```text
//! bench [--size-mib N] [--runs N] [--latency-runs N] [--memory-mib N] [--only CASES]
//!       [--hosts N,N,...] [--fleet-secs N] [--fleet-rate N]
//! ```
//! CASES is a comma-separated list of: throughput, latency, memory, fan, monitor, startup,
//! join, fleet, burst (fleet and burst run only when named; burst sends one 1 MB payload from
//! each of the largest of `--hosts` at once).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use skypipe_nats::ServerConfig;

mod fleet;

struct Opts {
    size_mib: u64,
    runs: usize,
    latency_runs: usize,
    memory_mib: u64,
    only: Vec<String>,
    hosts: Vec<usize>,
    fleet_secs: u64,
    fleet_rate: u32,
}

fn parse_opts() -> Opts {
    let mut o = Opts {
        size_mib: 1024,
        runs: 3,
        latency_runs: 50,
        memory_mib: 4096,
        only: [
            "throughput",
            "latency",
            "memory",
            "fan",
            "monitor",
            "startup",
            "join",
        ]
        .map(String::from)
        .to_vec(),
        hosts: vec![50, 100, 200, 300],
        fleet_secs: 60,
        fleet_rate: 5,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let v = args.get(i + 1).cloned().unwrap_or_default();
        match args[i].as_str() {
            "--size-mib" => o.size_mib = v.parse().unwrap_or(o.size_mib),
            "--runs" => o.runs = v.parse().unwrap_or(o.runs),
            "--latency-runs" => o.latency_runs = v.parse().unwrap_or(o.latency_runs),
            "--memory-mib" => o.memory_mib = v.parse().unwrap_or(o.memory_mib),
            "--only" => o.only = v.split(',').map(str::to_string).collect(),
            "--hosts" => o.hosts = v.split(',').filter_map(|n| n.parse().ok()).collect(),
            "--fleet-secs" => o.fleet_secs = v.parse().unwrap_or(o.fleet_secs),
            "--fleet-rate" => o.fleet_rate = v.parse().unwrap_or(o.fleet_rate),
            other => {
                eprintln!("unknown argument {other}");
                std::process::exit(2);
            }
        }
        i += 2;
    }
    o
}

struct Bench {
    url: String,
    /// The server's WebSocket listener, `ws://127.0.0.1:PORT`.
    ws_url: String,
    dir: PathBuf,
    skypipe: PathBuf,
    raw: PathBuf,
    /// The bench's nats-server, for its CPU time.
    server_pid: Option<u32>,
    /// piping-server's script, when installed.
    piping: Option<PathBuf>,
}

impl Bench {
    fn skypipe(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.skypipe);
        c.env("NATS_URL", &self.url).args(args);
        c
    }

    /// skypipe dialing the WebSocket listener (`-s` wins over `NATS_URL`).
    fn skypipe_ws(&self, args: &[&str]) -> Command {
        let mut c = self.skypipe(&["-s", &self.ws_url]);
        c.args(args);
        c
    }

    /// skypipe with a secret: payloads sealed end to end.
    fn sealed(&self, args: &[&str]) -> Command {
        let mut c = self.skypipe(args);
        c.env(
            "SKYPIPE_SECRET",
            "bench secret: correct horse battery staple",
        );
        c
    }

    fn raw(&self, mode: &str, subject: &str) -> Command {
        self.raw_at(&self.url, mode, subject)
    }

    fn raw_at(&self, url: &str, mode: &str, subject: &str) -> Command {
        let mut c = Command::new(&self.raw);
        c.args([mode, url, subject]);
        c
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

fn file_in(path: &Path) -> Stdio {
    Stdio::from(std::fs::File::open(path).expect("open input"))
}

fn file_out(path: &Path) -> Stdio {
    Stdio::from(std::fs::File::create(path).expect("create output"))
}

fn run_ok(mut c: Command) -> Duration {
    let start = Instant::now();
    let status = c.status().expect("spawn");
    let t = start.elapsed();
    assert!(status.success(), "{c:?} failed: {status}");
    t
}

fn wait_ok(mut child: Child, what: &str) {
    let status = child.wait().expect("wait");
    assert!(status.success(), "{what} failed: {status}");
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return f64::NAN;
    }
    v[v.len() / 2]
}

fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return f64::NAN;
    }
    let idx = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[idx.min(v.len() - 1)]
}

fn mbs(bytes: u64, t: Duration) -> f64 {
    bytes as f64 / 1e6 / t.as_secs_f64()
}

fn check_size(path: &Path, bytes: u64) {
    let got = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    assert_eq!(
        got,
        bytes,
        "{} has {got} bytes, expected {bytes}",
        path.display()
    );
}

/// Starts a receiver (writing to `out`), gives it time to be waiting, then times `sender`
/// (reading `input`) until the receiver exits: MB/s.
fn live(mut receiver: Command, mut sender: Command, input: &Path, out: &Path, bytes: u64) -> f64 {
    let child = receiver
        .stdout(file_out(out))
        .spawn()
        .expect("spawn receiver");
    std::thread::sleep(Duration::from_millis(400));
    let start = Instant::now();
    let status = sender.stdin(file_in(input)).status().expect("spawn sender");
    assert!(status.success(), "sender failed");
    wait_ok(child, "receiver");
    let t = start.elapsed();
    check_size(out, bytes);
    mbs(bytes, t)
}

/// A file of `mib` MiB of pseudo-random bytes (xorshift: incompressible, cheap to make).
fn random_file(path: &Path, mib: u64) {
    if std::fs::metadata(path).is_ok_and(|m| m.len() == mib * 1024 * 1024) {
        return;
    }
    eprintln!("writing {mib} MiB of random bytes");
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).expect("create"));
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut block = vec![0u8; 1 << 20];
    for _ in 0..mib {
        for c in block.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            c.copy_from_slice(&x.to_le_bytes());
        }
        f.write_all(&block).expect("write");
    }
}

/// Runs `f`, and returns what it returned with the CPU seconds process `pid` used meanwhile.
fn cpu_of<T>(pid: Option<u32>, f: impl FnOnce() -> T) -> (T, f64) {
    let ticks_per_s = 100.0; // USER_HZ on Linux
    let before = pid.and_then(cpu_ticks).unwrap_or(0);
    let r = f();
    let after = pid.and_then(cpu_ticks).unwrap_or(before);
    (r, after.saturating_sub(before) as f64 / ticks_per_s)
}

/// piping-server (HTTP, stores nothing), started on a free loopback port; `None` when it is
/// not installed (`scripts/bench` installs it from npm).
fn start_piping(b: &Bench) -> Option<(Child, u16)> {
    let script = b.piping.as_ref()?;
    let port = skypipe_nats::free_port().expect("port");
    let child = Command::new("node")
        .arg(script)
        .args(["--host", "127.0.0.1", "--http-port", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "piping-server did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Some((child, port))
}

fn throughput(b: &Bench, o: &Opts) -> Vec<(String, f64)> {
    let bytes = o.size_mib * 1024 * 1024;
    let gib = bytes as f64 / (1u64 << 30) as f64;
    let input = b.path("input");
    random_file(&input, o.size_mib);
    let out = b.path("out");
    let (mut send, mut drain, mut live_t, mut sealed_t) = (vec![], vec![], vec![], vec![]);
    let (mut rsend, mut rread, mut rlive) = (vec![], vec![], vec![]);
    let (mut ws_live, mut rws_live) = (vec![], vec![]);
    let (mut stored_live, mut piping, mut nc) = (vec![], vec![], vec![]);
    // Server CPU seconds per case, per run.
    let (mut cpu_live, mut cpu_stored_live, mut cpu_rlive, mut cpu_piping) =
        (vec![], vec![], vec![], vec![]);
    let piping_server = start_piping(b);
    let piping_pid = piping_server.as_ref().map(|(c, _)| c.id());
    for run in 0..o.runs {
        eprintln!("throughput run {}/{}", run + 1, o.runs);
        // 1, 2: stored send, then drain.
        let mut c = b.skypipe(&["--send", "bench-stored"]);
        c.stdin(file_in(&input));
        send.push(mbs(bytes, run_ok(c)));
        let mut c = b.skypipe(&["--recv", "bench-stored"]);
        c.stdout(file_out(&out));
        drain.push(mbs(bytes, run_ok(c)));
        check_size(&out, bytes);
        // 3: live (the live path: the receiver waits).
        let r = b.skypipe(&["--recv", "bench-live"]);
        let s = b.skypipe(&["--send", "bench-live"]);
        let (t, cpu) = cpu_of(b.server_pid, || live(r, s, &input, &out, bytes));
        live_t.push(t);
        cpu_live.push(cpu / gib);
        // 3o: live through the store, as before the live path.
        let mut r = b.skypipe(&["--recv", "bench-live-stored"]);
        r.env("SKYPIPE_LIVE", "off");
        let mut s = b.skypipe(&["--send", "bench-live-stored"]);
        s.env("SKYPIPE_LIVE", "off");
        let (t, cpu) = cpu_of(b.server_pid, || live(r, s, &input, &out, bytes));
        stored_live.push(t);
        cpu_stored_live.push(cpu / gib);
        // 3s: live, sealed end to end.
        let r = b.sealed(&["--recv", "bench-sealed"]);
        let s = b.sealed(&["--send", "bench-sealed"]);
        sealed_t.push(live(r, s, &input, &out, bytes));
        // 4: the raw baseline.
        let mut c = b.raw("publish", "raw.stored");
        c.stdin(file_in(&input));
        rsend.push(mbs(bytes, run_ok(c)));
        let mut c = b.raw("read", "raw.stored");
        c.stdout(file_out(&out));
        rread.push(mbs(bytes, run_ok(c)));
        check_size(&out, bytes);
        let r = b.raw("read", "raw.live");
        let s = b.raw("publish", "raw.live");
        let (t, cpu) = cpu_of(b.server_pid, || live(r, s, &input, &out, bytes));
        rlive.push(t);
        cpu_rlive.push(cpu / gib);
        // 3w: live again, skypipe and the baseline both over WebSocket.
        let r = b.skypipe_ws(&["--recv", "bench-live-ws"]);
        let s = b.skypipe_ws(&["--send", "bench-live-ws"]);
        ws_live.push(live(r, s, &input, &out, bytes));
        let r = b.raw_at(&b.ws_url, "read", "raw.live-ws");
        let s = b.raw_at(&b.ws_url, "publish", "raw.live-ws");
        rws_live.push(live(r, s, &input, &out, bytes));
        // 5p: piping-server, receiver first.
        if let Some((_, port)) = &piping_server {
            let url = format!("http://127.0.0.1:{port}/bench-{run}");
            let mut r = Command::new("curl");
            r.args(["-sS", "--fail", &url]);
            let mut s = Command::new("curl");
            s.args(["-sS", "--fail", "-T", "-", &url]);
            s.stdout(Stdio::null());
            let (t, cpu) = cpu_of(piping_pid, || live(r, s, &input, &out, bytes));
            piping.push(t);
            cpu_piping.push(cpu / gib);
        }
        // 5: nc over loopback.
        let port = skypipe_nats::free_port().expect("port");
        let mut r = Command::new("nc");
        r.args(["-l", "127.0.0.1", &port.to_string()]);
        let mut s = Command::new("nc");
        s.args(["-N", "127.0.0.1", &port.to_string()]);
        nc.push(live(r, s, &input, &out, bytes));
    }
    if let Some((mut child, _)) = piping_server {
        let _ = child.kill();
        let _ = child.wait();
    }
    let _ = std::fs::remove_file(&out);
    let (send, drain, live_t) = (median(send), median(drain), median(live_t));
    let sealed_t = median(sealed_t);
    let (rsend, rread, rlive, nc) = (median(rsend), median(rread), median(rlive), median(nc));
    let (ws_live, rws_live) = (median(ws_live), median(rws_live));
    let (stored_live, piping) = (median(stored_live), median(piping));
    println!(
        "\n## Throughput: {} MiB, median of {} runs (MB/s = 10^6 bytes/s)\n",
        o.size_mib, o.runs
    );
    println!("| case | skypipe | raw async-nats | ratio | target |");
    println!("| --- | ---: | ---: | ---: | --- |");
    println!(
        "| 1. stored send | {send:.0} | {rsend:.0} | {:.2} | >= 0.9 |",
        send / rsend
    );
    println!(
        "| 2. drain | {drain:.0} | {rread:.0} | {:.2} | >= 0.9 |",
        drain / rread
    );
    println!(
        "| 3. live (the live path) | {live_t:.0} | {rlive:.0} | {:.2} | |",
        live_t / rlive
    );
    println!(
        "| 3o. live through the store (`SKYPIPE_LIVE=off`) | {stored_live:.0} | {rlive:.0} | {:.2} | >= 0.8 |",
        stored_live / rlive
    );
    println!(
        "| 3w. live over WebSocket (`-s ws://`) | {ws_live:.0} | {rws_live:.0} | {:.2} | cost: {:.2} of case 3 |",
        ws_live / rws_live,
        ws_live / live_t
    );
    println!(
        "| 3s. live, sealed (SKYPIPE_SECRET) | {sealed_t:.0} | skypipe live {live_t:.0} | {:.2} | >= 0.7 |",
        sealed_t / live_t
    );
    println!(
        "\n## Live, side by side: {} MiB, receiver waiting, median of {} runs\n",
        o.size_mib, o.runs
    );
    println!("| case | MB/s | server CPU s per GiB | live / this | target |");
    println!("| --- | ---: | ---: | ---: | --- |");
    println!(
        "| skypipe live (the live path) | {live_t:.0} | {:.2} (nats-server) | | CPU <= 1.5 |",
        median(cpu_live)
    );
    println!(
        "| skypipe live through the store | {stored_live:.0} | {:.2} (nats-server) | {:.2} | |",
        median(cpu_stored_live),
        live_t / stored_live
    );
    println!(
        "| raw async-nats, JetStream publish and ordered read | {rlive:.0} | {:.2} (nats-server) | {:.2} | |",
        median(cpu_rlive),
        live_t / rlive
    );
    if piping.is_nan() {
        println!("| piping-server | not installed | | | |");
    } else {
        println!(
            "| piping-server 1.12.9 (curl both sides) | {piping:.0} | {:.2} (node) | {:.2} | >= 1.0 |",
            median(cpu_piping),
            live_t / piping
        );
    }
    println!(
        "| `nc` over loopback | {nc:.0} | (no server) | {:.2} | >= 0.6 |",
        live_t / nc
    );
    vec![
        ("stored send".into(), send),
        ("drain".into(), drain),
        ("live".into(), live_t),
        ("live over WebSocket".into(), ws_live),
        ("live sealed".into(), sealed_t),
    ]
}

fn latency(b: &Bench, o: &Opts) {
    let (mut send_ms, mut recv_ms, mut trig_ms) = (vec![], vec![], vec![]);
    let x = b.path("x");
    std::fs::write(&x, b"x\n").expect("write");
    for _ in 0..o.latency_runs {
        let mut c = b.skypipe(&["--send", "small"]);
        c.stdin(file_in(&x));
        send_ms.push(run_ok(c).as_secs_f64() * 1e3);
        let mut c = b.skypipe(&["--recv", "small"]);
        c.stdout(Stdio::null());
        recv_ms.push(run_ok(c).as_secs_f64() * 1e3);
    }
    let nl = b.path("nl");
    std::fs::write(&nl, b"\n").expect("write");
    for _ in 0..o.latency_runs {
        let mut waiter = b.skypipe(&["--recv", "t"]);
        waiter.stdout(Stdio::null());
        let mut child = waiter.spawn().expect("spawn");
        std::thread::sleep(Duration::from_millis(300));
        let start = Instant::now();
        let mut s = b.skypipe(&["--send", "t"]);
        s.stdin(file_in(&nl));
        let mut sender = s.spawn().expect("spawn");
        let status = child.wait().expect("wait");
        let t = start.elapsed();
        assert!(status.success());
        let _ = sender.wait();
        trig_ms.push(t.as_secs_f64() * 1e3);
    }
    // 7r: the same with two minimal async-nats processes, for the ratio.
    let mut raw_ms = vec![];
    for _ in 0..o.latency_runs {
        let mut waiter = b.raw("wait", "raw.trigger");
        waiter.stdout(Stdio::null()).stderr(Stdio::null());
        let child = waiter.spawn().expect("spawn");
        std::thread::sleep(Duration::from_millis(300));
        let start = Instant::now();
        let mut s = b.raw("trigger", "raw.trigger");
        let mut sender = s.spawn().expect("spawn");
        wait_ok(child, "raw waiter");
        let t = start.elapsed();
        let _ = sender.wait();
        raw_ms.push(t.as_secs_f64() * 1e3);
    }
    println!(
        "\n## Latency: whole commands, {} runs each\n",
        o.latency_runs
    );
    println!("| case | median ms | p95 ms | target |");
    println!("| --- | ---: | ---: | --- |");
    println!(
        "| 6. `echo x \\| skypipe p` | {:.1} | {:.1} | <= 10 |",
        median(send_ms.clone()),
        percentile(send_ms, 0.95)
    );
    println!(
        "| 6. `skypipe p` (payload waiting) | {:.1} | {:.1} | <= 10 |",
        median(recv_ms.clone()),
        percentile(recv_ms, 0.95)
    );
    let (trig, raw) = (median(trig_ms.clone()), median(raw_ms.clone()));
    println!(
        "| 7. trigger: start of sender to exit of waiter | {trig:.1} | {:.1} | median <= 5, p95 <= 20 |",
        percentile(trig_ms, 0.95)
    );
    println!(
        "| 7r. raw async-nats trigger (`raw_baseline wait` / `trigger`) | {raw:.1} | {:.1} | skypipe / raw = {:.2} |",
        percentile(raw_ms, 0.95),
        trig / raw
    );
}

/// Peak RSS (KiB) of a command, through /usr/bin/time.
fn timed(b: &Bench, args: &[&str]) -> Command {
    let mut c = Command::new("/usr/bin/time");
    c.args(["-f", "%M"])
        .arg(&b.skypipe)
        .args(args)
        .env("NATS_URL", &b.url);
    c
}

fn peak_kib(stderr: &[u8]) -> u64 {
    String::from_utf8_lossy(stderr)
        .lines()
        .rev()
        .find_map(|l| l.trim().parse::<u64>().ok())
        .unwrap_or(0)
}

/// A sender of `bytes` zero bytes from a generator (no file that big needed) into `pipe`,
/// under /usr/bin/time: its peak RSS is the last line of its stderr.
fn generated_send(b: &Bench, bytes: u64, pipe: &str) -> std::process::Output {
    let script = format!(
        "head -c {bytes} /dev/zero | /usr/bin/time -f %M {} --send {pipe}",
        b.skypipe.display()
    );
    Command::new("bash")
        .args(["-c", &script])
        .env("NATS_URL", &b.url)
        .output()
        .expect("sender")
}

fn memory(b: &Bench, o: &Opts) {
    let bytes = o.memory_mib * 1024 * 1024;
    // Live: a receiver waiting, a sender fed from a generator (no 4 GiB file needed).
    let mut r = timed(b, &["--recv", "mem-live"]);
    r.stdout(Stdio::null()).stderr(Stdio::piped());
    let receiver = r.spawn().expect("spawn");
    std::thread::sleep(Duration::from_millis(400));
    let sender = generated_send(b, bytes, "mem-live");
    let recv_out = receiver.wait_with_output().expect("receiver");
    assert!(sender.status.success() && recv_out.status.success());
    let (s_live, r_live) = (peak_kib(&sender.stderr), peak_kib(&recv_out.stderr));
    // Stored: send all, then drain.
    let sender = generated_send(b, bytes, "mem-stored");
    let mut r = timed(b, &["--recv", "mem-stored"]);
    let recv_out = r.stdout(Stdio::null()).output().expect("receiver");
    assert!(sender.status.success() && recv_out.status.success());
    let (s_stored, r_stored) = (peak_kib(&sender.stderr), peak_kib(&recv_out.stderr));
    println!(
        "\n## Peak resident memory, {} MiB payload (/usr/bin/time %M)\n",
        o.memory_mib
    );
    println!("| case | sender MiB | receiver MiB | target |");
    println!("| --- | ---: | ---: | --- |");
    println!(
        "| 8. live | {:.1} | {:.1} | <= 32 |",
        s_live as f64 / 1024.0,
        r_live as f64 / 1024.0
    );
    println!(
        "| stored | {:.1} | {:.1} | <= 32 |",
        s_stored as f64 / 1024.0,
        r_stored as f64 / 1024.0
    );
}

fn main() {
    let o = parse_opts();
    let exe = std::env::current_exe().expect("current exe");
    let release = exe
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .to_path_buf();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = ServerConfig::new(dir.path().join("server"));
    config
        .websocket()
        .expect("a free port for the websocket listener");
    let server = config.start().expect("nats-server starts");
    let b = Bench {
        url: server.url(),
        ws_url: server.websocket_url().expect("websocket listener"),
        dir: dir.path().to_path_buf(),
        skypipe: release.join("skypipe"),
        raw: release.join("examples/raw_baseline"),
        server_pid: server.pid(),
        piping: release
            .parent()
            .map(|t| t.join("tools/piping-server/node_modules/piping-server/dist/src/index.js"))
            .filter(|p| p.exists()),
    };
    let version = Command::new(&b.skypipe)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    println!(
        "# {version} against nats-server {} on {} and {}, file store in {}",
        skypipe_nats::find_binary()
            .and_then(|p| skypipe_nats::binary_version(&p))
            .unwrap_or_default(),
        b.url,
        b.ws_url,
        dir.path().display()
    );
    if o.only.iter().any(|c| c == "throughput") {
        throughput(&b, &o);
    }
    if o.only.iter().any(|c| c == "latency") {
        latency(&b, &o);
    }
    if o.only.iter().any(|c| c == "memory") {
        memory(&b, &o);
    }
    if o.only.iter().any(|c| c == "fan") {
        fan(&b, &o);
    }
    if o.only.iter().any(|c| c == "monitor") {
        monitor(&b, &o);
    }
    if o.only.iter().any(|c| c == "startup") {
        startup(&b, &o);
    }
    if o.only.iter().any(|c| c == "join") {
        join(&b, &o);
    }
    if o.only.iter().any(|c| c == "fleet") {
        fleet::fleet(&b, &o.hosts, o.fleet_rate, o.fleet_secs);
    }
    if o.only.iter().any(|c| c == "burst") {
        fleet::burst(&b, o.hosts.iter().copied().max().unwrap_or(300), 1);
    }
    drop(server);
}

/// Waits until every file in `paths` holds `bytes` bytes (or `limit` passes: a panic).
fn wait_sizes(paths: &[PathBuf], bytes: u64, limit: Duration) {
    let start = Instant::now();
    loop {
        let done = paths
            .iter()
            .all(|p| std::fs::metadata(p).is_ok_and(|m| m.len() >= bytes));
        if done {
            return;
        }
        assert!(
            start.elapsed() < limit,
            "outputs did not fill within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// 9 and 10: one payload to a taker and ten listeners; fifty senders into one follower.
fn fan(b: &Bench, o: &Opts) {
    const LISTENERS: usize = 10;
    const SENDERS: usize = 50;
    let (mut out_mbs, mut in_mbs) = (vec![], vec![]);
    // Of the last fan-in run: CPU seconds of the server, the follower and the senders.
    let mut in_cpu = (0.0, 0.0, 0.0);
    // Listeners are a live tap: one that falls behind the taker misses chunks and exits 1.
    let mut behind = 0;
    let fan_mib = 512;
    let bytes = fan_mib * 1024 * 1024;
    let input = b.path("fan-input");
    random_file(&input, fan_mib);
    let small = b.path("fan-small");
    random_file(&small, 10);
    let small_bytes = 10 * 1024 * 1024;
    for run in 0..o.runs {
        eprintln!("fan run {}/{}", run + 1, o.runs);
        // 9: fan-out. Listeners hear what is sent after they subscribe: they start first.
        let pipe = format!("fan-out-{run}");
        let mut children = vec![];
        let mut outs = vec![];
        for i in 0..LISTENERS {
            let out = b.path(&format!("fan-listener-{i}"));
            let mut c = b.skypipe(&["--recv", "--listen", &pipe]);
            c.stdout(file_out(&out));
            children.push(c.spawn().expect("spawn listener"));
            outs.push(out);
        }
        let out = b.path("fan-taker");
        let mut c = b.skypipe(&["--recv", &pipe]);
        c.stdout(file_out(&out));
        children.push(c.spawn().expect("spawn taker"));
        outs.push(out);
        std::thread::sleep(Duration::from_millis(1500));
        let start = Instant::now();
        let mut s = b.skypipe(&["--send", &pipe]);
        s.stdin(file_in(&input));
        let status = s.status().expect("spawn sender");
        assert!(status.success(), "fan-out sender failed");
        let taker = children.pop().expect("the taker");
        for mut child in children {
            if !child.wait().expect("wait").success() {
                behind += 1;
            }
        }
        wait_ok(taker, "fan-out taker");
        let t = start.elapsed();
        check_size(outs.last().expect("the taker's output"), bytes);
        let written: u64 = outs
            .iter()
            .map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
            .sum();
        out_mbs.push(mbs(written, t));
        // 10: fan-in, into one follower that takes every payload.
        let pipe = format!("fan-in-{run}");
        let out = b.path("fan-follower");
        let mut follower = fleet::follower_into(b, &pipe, &out);
        let server_before = b.server_pid.and_then(cpu_ticks).unwrap_or(0);
        let (follower_before, children_before) =
            (cpu_ticks(follower.id()).unwrap_or(0), children_ticks());
        let start = Instant::now();
        let senders: Vec<Child> = (0..SENDERS)
            .map(|_| {
                let mut s = b.skypipe(&["--send", &pipe]);
                s.stdin(file_in(&small));
                s.spawn().expect("spawn sender")
            })
            .collect();
        for (i, sender) in senders.into_iter().enumerate() {
            wait_ok(sender, &format!("fan-in sender {i}"));
        }
        let total = small_bytes * SENDERS as u64;
        wait_sizes(std::slice::from_ref(&out), total, Duration::from_secs(300));
        let t = start.elapsed();
        let follower_cpu = cpu_ticks(follower.id()).unwrap_or(0) - follower_before;
        let senders_cpu = children_ticks() - children_before;
        let server_cpu = b.server_pid.and_then(cpu_ticks).unwrap_or(0) - server_before;
        in_cpu = (
            server_cpu as f64 / 100.0,
            follower_cpu as f64 / 100.0,
            senders_cpu as f64 / 100.0,
        );
        let _ = nix_kill(&follower);
        let _ = follower.wait();
        check_size(&out, total);
        in_mbs.push(mbs(total, t));
    }
    println!(
        "\n## Fan-out and fan-in, median of {} runs (aggregate MB/s)\n",
        o.runs
    );
    println!("| case | MB/s |");
    println!("| --- | ---: |");
    println!(
        "| 9. fan-out: one {fan_mib} MiB payload to 1 taker + {LISTENERS} listeners (bytes written by all 11) | {:.0} |",
        median(out_mbs)
    );
    println!(
        "| listeners that fell behind and missed chunks, of {} | {behind} |",
        LISTENERS * o.runs
    );
    println!(
        "| 10. fan-in: {SENDERS} senders x 10 MiB into one `--follow` taker | {:.0} |",
        median(in_mbs)
    );
    println!(
        "\nCPU of the last fan-in run: server {:.2} s, follower {:.2} s, the {SENDERS} senders {:.2} s.",
        in_cpu.0, in_cpu.1, in_cpu.2
    );
}

/// Stops a follower the way Ctrl-C does.
fn nix_kill(child: &Child) -> std::io::Result<()> {
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .map(|_| ())
}

/// CPU time (user + system, in clock ticks) a process has used so far, from /proc.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// CPU time (clock ticks) of this process's children that ended and were waited for.
pub(crate) fn children_ticks() -> u64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0;
    };
    let Some(end) = stat.rfind(')') else { return 0 };
    let fields: Vec<&str> = stat[end + 2..].split_whitespace().collect();
    let tick = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    tick(13) + tick(14)
}

/// The dashboard, running for real in a detached tmux session; returns its pid.
fn open_monitor(b: &Bench, session: &str) -> u32 {
    let cmd = format!(
        "exec env NATS_URL={} {} monitor",
        b.url,
        b.skypipe.display()
    );
    let status = Command::new("tmux")
        .args([
            "new-session",
            "-d",
            "-s",
            session,
            "-x",
            "160",
            "-y",
            "50",
            &cmd,
        ])
        .status()
        .expect("tmux (the monitor case needs it)");
    assert!(status.success(), "tmux new-session failed");
    std::thread::sleep(Duration::from_millis(500));
    let out = Command::new("tmux")
        .args(["list-panes", "-t", session, "-F", "#{pane_pid}"])
        .output()
        .expect("tmux list-panes");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("the monitor's pid")
}

fn close_monitor(session: &str) {
    let _ = Command::new("tmux")
        .args(["kill-session", "-t", session])
        .status();
}

/// The monitor's cost: a live transfer with and without a dashboard open, and the
/// dashboard's CPU with 1,000 pipes on the server.
fn monitor(b: &Bench, o: &Opts) {
    let bytes = o.size_mib * 1024 * 1024;
    let input = b.path("input");
    random_file(&input, o.size_mib);
    let out = b.path("out");
    let (mut without, mut with) = (vec![], vec![]);
    let mut during_live = vec![];
    let ticks_per_s = 100.0; // USER_HZ on Linux
    for run in 0..o.runs {
        eprintln!("monitor run {}/{}", run + 1, o.runs);
        let r = b.skypipe(&["--recv", "mon-live"]);
        let s = b.skypipe(&["--send", "mon-live"]);
        without.push(live(r, s, &input, &out, bytes));
        let pid = open_monitor(b, "skypipe-bench-monitor");
        let before = cpu_ticks(pid).unwrap_or(0);
        let started = Instant::now();
        let r = b.skypipe(&["--recv", "mon-live"]);
        let s = b.skypipe(&["--send", "mon-live"]);
        with.push(live(r, s, &input, &out, bytes));
        let used = cpu_ticks(pid).unwrap_or(0).saturating_sub(before) as f64 / ticks_per_s;
        during_live.push(100.0 * used / started.elapsed().as_secs_f64());
        close_monitor("skypipe-bench-monitor");
    }
    let _ = std::fs::remove_file(&out);
    // 1,000 pipes, each with a payload waiting.
    eprintln!("filling 1000 pipes");
    let x = b.path("x");
    std::fs::write(&x, b"x\n").expect("write");
    for i in 0..1000 {
        let mut c = b.skypipe(&["--send", &format!("many-{i:04}")]);
        c.stdin(file_in(&x));
        run_ok(c);
    }
    let pid = open_monitor(b, "skypipe-bench-monitor");
    std::thread::sleep(Duration::from_secs(3));
    let before = cpu_ticks(pid).unwrap_or(0);
    let window = Duration::from_secs(20);
    std::thread::sleep(window);
    let used = cpu_ticks(pid).unwrap_or(0).saturating_sub(before) as f64 / ticks_per_s;
    close_monitor("skypipe-bench-monitor");
    let idle_cpu = 100.0 * used / window.as_secs_f64();
    let (without, with) = (median(without), median(with));
    println!(
        "\n## With `skypipe monitor` open (the real dashboard, in tmux), median of {} runs\n",
        o.runs
    );
    println!("| case | result | target |");
    println!("| --- | ---: | --- |");
    println!(
        "| live {} MiB, no monitor | {without:.0} MB/s | |",
        o.size_mib
    );
    println!(
        "| live {} MiB, monitor open | {with:.0} MB/s ({:+.1}%) | loss < 5% |",
        o.size_mib,
        100.0 * (with - without) / without
    );
    println!(
        "| monitor CPU during that transfer | {:.1}% of a core | |",
        median(during_live)
    );
    println!("| monitor CPU, 1000 pipes, over {window:?} | {idle_cpu:.1}% of a core | < 10% |");
}

/// Start-up: commands that never touch the network.
fn startup(b: &Bench, o: &Opts) {
    let mut rows = vec![];
    for args in [&["--version"][..], &["--help"][..]] {
        let mut ms = vec![];
        for _ in 0..o.latency_runs {
            let mut c = b.skypipe(args);
            c.stdout(Stdio::null());
            ms.push(run_ok(c).as_secs_f64() * 1e3);
        }
        rows.push((args[0], median(ms.clone()), percentile(ms, 0.95)));
    }
    println!("\n## Start-up, {} runs each\n", o.latency_runs);
    println!("| command | median ms | p95 ms |");
    println!("| --- | ---: | ---: |");
    for (what, m, p) in rows {
        println!("| `skypipe {what}` | {m:.1} | {p:.1} |");
    }
}

/// `skypipe` as a user with HOME `home` and its local server on `port`, nothing else set.
fn as_user(b: &Bench, home: &Path, port: u16, args: &[&str]) -> Command {
    let mut c = Command::new(&b.skypipe);
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().to_string();
        if k.starts_with("NATS_") || k.starts_with("SKYPIPE_") || k.starts_with("XDG_") {
            c.env_remove(&k);
        }
    }
    c.env("HOME", home)
        .env("SKYPIPE_LOCAL_PORT", port.to_string())
        .args(args);
    c
}

/// From `skypipe join` to the first byte of a payload that waits on the host: a host made
/// public on 127.0.0.2, and for each run a new machine (HOME) that joins and takes.
fn join(b: &Bench, o: &Opts) {
    use std::io::{BufRead, Read};
    let runs = o.runs.max(5);
    let port = skypipe_nats::free_port().expect("port");
    let host = b.path("join-host");
    std::fs::create_dir_all(&host).expect("host home");
    let mut c = as_user(
        b,
        &host,
        port,
        &["server", "start", "--public", "--listen", "127.0.0.2"],
    );
    c.stdout(Stdio::null());
    run_ok(c);
    let (mut joins, mut firsts) = (vec![], vec![]);
    for run in 0..runs {
        let pipe = format!("first-{run}");
        let mut send = as_user(b, &host, port, &["--send", &pipe]);
        send.stdin(Stdio::piped()).stdout(Stdio::null());
        let mut child = send.spawn().expect("sender");
        if let Some(mut stdin) = child.stdin.take() {
            let _ = std::io::Write::write_all(&mut stdin, b"hello from the host\n");
        }
        wait_ok(child, "send on the host");
        let mut invite = as_user(b, &host, port, &["invite"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("invite");
        let mut lines = std::io::BufReader::new(invite.stdout.take().expect("stdout")).lines();
        let line = lines
            .by_ref()
            .map_while(Result::ok)
            .find(|l| l.trim_start().starts_with("skypipe join "))
            .expect("a join line");
        let words: Vec<String> = line.split_whitespace().map(str::to_string).collect();
        let joiner = b.path(&format!("join-machine-{run}"));
        std::fs::create_dir_all(&joiner).expect("joiner home");
        let start = Instant::now();
        let mut c = as_user(b, &joiner, port, &["join", &words[2], &words[3]]);
        c.stdout(Stdio::null());
        let joined = run_ok(c);
        let mut take = as_user(b, &joiner, port, &["--recv", &pipe])
            .stdout(Stdio::piped())
            .spawn()
            .expect("taker");
        let mut first = [0u8; 1];
        take.stdout
            .as_mut()
            .expect("stdout")
            .read_exact(&mut first)
            .expect("a first byte");
        let t = start.elapsed();
        wait_ok(take, "take on the joined machine");
        wait_ok(invite, "invite");
        joins.push(joined.as_secs_f64() * 1e3);
        firsts.push(t.as_secs_f64() * 1e3);
    }
    let _ = as_user(b, &host, port, &["server", "stop"])
        .stdout(Stdio::null())
        .status();
    println!("\n## Joining, {runs} machines one after the other\n");
    println!("| step | median ms | p95 ms |");
    println!("| --- | ---: | ---: |");
    println!(
        "| `skypipe join` (key agreement, login, the checks of `skypipe check`) | {:.1} | {:.1} |",
        median(joins.clone()),
        percentile(joins, 0.95)
    );
    println!(
        "| from `skypipe join` to the first byte of a waiting payload | {:.1} | {:.1} |",
        median(firsts.clone()),
        percentile(firsts, 0.95)
    );
}
