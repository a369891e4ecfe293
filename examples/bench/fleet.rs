//! The fleet case: many hosts, each a line generator piped into `skypipe send logs`, into one
//! `skypipe recv --follow logs`. Every line carries its host, its number and the instant it was
//! written to its sender's stdin; the bench reads the follower's stdout and times each line.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::{close_monitor, cpu_ticks, open_monitor, percentile, Bench};

/// One fleet run's figures.
pub(crate) struct Fleet {
    pub(crate) hosts: usize,
    pub(crate) lines: u64,
    pub(crate) lost: u64,
    pub(crate) twice: u64,
    pub(crate) broken: u64,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) max_ms: f64,
    pub(crate) server_cpu_s: f64,
    pub(crate) follower_cpu_s: f64,
    pub(crate) follower_mib: f64,
    pub(crate) sender_mib: f64,
    /// What the tools showed midway.
    pub(crate) probe: Probe,
}

/// What `ls --json`, `monitor --json` and the dashboard showed midway through a run.
#[derive(Default, Clone)]
pub(crate) struct Probe {
    /// Senders, takers and listeners on the pipe, and how long the answer took.
    pub(crate) ls: Option<((u64, u64, u64), Duration)>,
    pub(crate) monitor: Option<((u64, u64, u64), Duration)>,
    /// The slowest of the dashboard's answers to `?` (help shown) and `esc` (help gone).
    pub(crate) key: Option<Duration>,
}

impl Probe {
    fn counts(c: Option<((u64, u64, u64), Duration)>) -> String {
        c.map_or("-".into(), |((s, t, l), d)| {
            format!("{s} / {t} / {l} in {:.2} s", d.as_secs_f64())
        })
    }
}

impl Fleet {
    /// Server CPU seconds per host-second of sending.
    pub(crate) fn server_per_host_s(&self, secs: u64) -> f64 {
        self.server_cpu_s / (self.hosts as f64 * secs as f64)
    }
}

/// Peak resident memory of a process, in MiB, from /proc.
pub(crate) fn peak_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Starts `skypipe -v recv --follow pipe` with `stdout`, and waits until it says it waits.
/// FLEET_FOLLOWER_LOG=FILE keeps its debug log.
fn spawn_follower(b: &Bench, pipe: &str, stdout: Stdio) -> Child {
    let mut c = b.skypipe(&["-v", "recv", "--follow", pipe]);
    c.stdout(stdout).stderr(Stdio::piped());
    let mut log = std::env::var_os("FLEET_FOLLOWER_LOG").map(|p| {
        c.env("SKYPIPE_LOG", "skypipe=debug");
        std::fs::File::create(p).expect("the follower's log file")
    });
    let mut child = c.spawn().expect("spawn follower");
    let stderr = child.stderr.take().expect("stderr");
    let (ready_tx, ready_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut ready = Some(ready_tx);
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if let Some(log) = log.as_mut() {
                let _ = writeln!(log, "{line}");
            }
            if line.contains("waiting on pipe") {
                if let Some(tx) = ready.take() {
                    let _ = tx.send(());
                }
            } else if line.contains("ERROR") || line.contains("WARN") {
                eprintln!("follower: {line}");
            }
        }
    });
    ready_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the follower waits");
    child
}

/// Starts a follower of `pipe` and waits until it says it waits; its stdout comes back as
/// lines with the instant each was read.
fn start_follower(b: &Bench, pipe: &str) -> (Child, mpsc::Receiver<(Instant, String)>) {
    let mut child = spawn_follower(b, pipe, Stdio::piped());
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::with_capacity(1 << 20, stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send((Instant::now(), line)).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

/// `hosts` senders into one follower, each writing `rate` lines a second for `secs` seconds.
pub(crate) fn run(b: &Bench, hosts: usize, rate: u32, secs: u64) -> Fleet {
    let pipe = format!("fleet-{hosts}");
    let (mut follower, lines_rx) = start_follower(b, &pipe);
    let follower_pid = follower.id();
    // One listener taps the pipe, and a dashboard is open on the server.
    let mut listener = b
        .skypipe(&["recv", "--listen", &pipe])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn listener");
    let dashboard = format!("fleet-monitor-{hosts}");
    open_monitor(b, &dashboard);
    let mut senders: Vec<(Child, ChildStdin)> = (0..hosts)
        .map(|_| {
            let mut s = b.skypipe(&["send", &pipe]);
            s.stdin(Stdio::piped()).env_remove("SKYPIPE_LOG");
            let mut child = s.spawn().expect("spawn sender");
            let stdin = child.stdin.take().expect("stdin");
            (child, stdin)
        })
        .collect();
    // Every host's lines are spread evenly over the interval between two of its lines.
    let epoch = Instant::now() + Duration::from_millis(500);
    let every = Duration::from_secs(1) / rate;
    let per_host = secs * u64::from(rate);
    let server_before = b.server_pid.and_then(cpu_ticks).unwrap_or(0);
    let follower_before = cpu_ticks(follower_pid).unwrap_or(0);
    let mut schedule: Vec<(Duration, usize)> = (0..hosts)
        .map(|h| (every * h as u32 / hosts as u32, h))
        .collect();
    schedule.sort();
    let pad = "x".repeat(60);
    let probe = {
        let (ls, mon) = (
            b.skypipe(&["ls", "--json"]),
            b.skypipe(&["monitor", "--json"]),
        );
        let (pipe, dashboard) = (pipe.clone(), dashboard.clone());
        let midway = epoch + Duration::from_secs(secs) / 2;
        std::thread::spawn(move || {
            std::thread::sleep(midway.saturating_duration_since(Instant::now()));
            Probe {
                ls: ask(ls, "pipe", &pipe),
                monitor: ask(mon, "name", &pipe),
                key: keys_answered(&dashboard),
            }
        })
    };
    for k in 0..per_host {
        for &(offset, h) in &schedule {
            let at = epoch + every * k as u32 + offset;
            let now = Instant::now();
            if at > now {
                std::thread::sleep(at - now);
            }
            let sent_us = at.max(now).duration_since(epoch).as_micros();
            let line = format!("h{h} n{k} t{sent_us} {pad}\n");
            if let Err(e) = senders[h].1.write_all(line.as_bytes()) {
                panic!("host {h}'s sender stopped: {e}");
            }
        }
    }
    let sender_mib = senders
        .iter()
        .map(|(c, _)| peak_mib(c.id()))
        .fold(0.0, f64::max);
    // End every host's payload and wait for the last line.
    let mut children = Vec::with_capacity(hosts);
    for (child, stdin) in senders.drain(..) {
        drop(stdin);
        children.push(child);
    }
    let expected = hosts as u64 * per_host;
    let mut seen: HashMap<(usize, u64), u32> = HashMap::with_capacity(expected as usize);
    let mut latencies = Vec::with_capacity(expected as usize);
    let mut broken = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    while (seen.len() as u64) < expected {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok((at, line)) = lines_rx.recv_timeout(left) else {
            break;
        };
        match parse(&line, &pad) {
            Some((h, k, sent_us)) => {
                *seen.entry((h, k)).or_default() += 1;
                let got_us = at.saturating_duration_since(epoch).as_micros() as f64;
                latencies.push((got_us - sent_us as f64) / 1000.0);
            }
            None => broken += 1,
        }
    }
    for mut child in children {
        let _ = child.wait();
    }
    // Anything that came twice comes soon after.
    while let Ok((_, line)) = lines_rx.recv_timeout(Duration::from_millis(500)) {
        match parse(&line, &pad) {
            Some((h, k, _)) => *seen.entry((h, k)).or_default() += 1,
            None => broken += 1,
        }
    }
    let server_cpu_s =
        (b.server_pid.and_then(cpu_ticks).unwrap_or(0) - server_before) as f64 / 100.0;
    let follower_cpu_s = (cpu_ticks(follower_pid).unwrap_or(0) - follower_before) as f64 / 100.0;
    let follower_mib = peak_mib(follower_pid);
    let _ = super::nix_kill(&follower);
    let _ = follower.wait();
    let _ = listener.kill();
    let _ = listener.wait();
    close_monitor(&dashboard);
    let probe = probe.join().unwrap_or_default();
    let twice = seen.values().filter(|&&n| n > 1).count() as u64;
    Fleet {
        hosts,
        lines: expected,
        lost: expected - seen.len() as u64,
        twice,
        broken,
        p50_ms: percentile(latencies.clone(), 0.50),
        p99_ms: percentile(latencies.clone(), 0.99),
        max_ms: latencies.iter().copied().fold(0.0, f64::max),
        server_cpu_s,
        follower_cpu_s,
        follower_mib,
        sender_mib,
        probe,
    }
}

/// Runs `ls --json` or `monitor --json`: the senders, takers and listeners it counts on
/// `pipe` (its row's `key` names it), and how long it took.
fn ask(mut c: std::process::Command, key: &str, pipe: &str) -> Option<((u64, u64, u64), Duration)> {
    let start = Instant::now();
    let out = c.stdin(Stdio::null()).output().ok()?;
    let took = start.elapsed();
    if !out.status.success() {
        eprintln!("{c:?}: {}", String::from_utf8_lossy(&out.stderr));
        return None;
    }
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    let row = report["pipes"]
        .as_array()?
        .iter()
        .find(|p| p[key] == pipe)?;
    let n = |k: &str| row[k].as_u64().unwrap_or(0);
    Some(((n("senders"), n("takers"), n("listeners")), took))
}

/// The dashboard's screen in tmux session `session`.
fn screen(session: &str) -> String {
    std::process::Command::new("tmux")
        .args(["capture-pane", "-p", "-t", session])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// Presses `?` and `esc` five times each in the dashboard: the slowest time until the screen
/// showed the help, or no longer showed it.
fn keys_answered(session: &str) -> Option<Duration> {
    const HELP: &str = "keys (esc closes)";
    let mut slowest = Duration::ZERO;
    for _ in 0..5 {
        for (key, shown) in [("?", true), ("Escape", false)] {
            let start = Instant::now();
            std::process::Command::new("tmux")
                .args(["send-keys", "-t", session, key])
                .status()
                .ok()?;
            while screen(session).contains(HELP) != shown {
                if start.elapsed() > Duration::from_secs(10) {
                    return None;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            slowest = slowest.max(start.elapsed());
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    Some(slowest)
}

/// `h{host} n{number} t{micros} {pad}`, or `None` for a line that is not whole.
fn parse(line: &str, pad: &str) -> Option<(usize, u64, u128)> {
    let mut parts = line.split(' ');
    let h = parts.next()?.strip_prefix('h')?.parse().ok()?;
    let k = parts.next()?.strip_prefix('n')?.parse().ok()?;
    let t = parts.next()?.strip_prefix('t')?.parse().ok()?;
    (parts.next()? == pad && parts.next().is_none()).then_some((h, k, t))
}

/// The fleet table for each size in `sizes`.
pub(crate) fn fleet(b: &Bench, sizes: &[usize], rate: u32, secs: u64) {
    let mut rows = vec![];
    for &hosts in sizes {
        eprintln!("fleet: {hosts} hosts x {rate} lines/s for {secs} s");
        rows.push(run(b, hosts, rate, secs));
    }
    println!("\n## Fleet: N hosts x {rate} lines/s for {secs} s into one `--follow`\n");
    println!(
        "| hosts | lines | lost / twice / broken | latency p50 / p99 / max ms | server CPU s | per host-second ms | follower CPU s | follower MiB | sender MiB (max) |"
    );
    println!("| ---: | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: |");
    for r in &rows {
        println!(
            "| {} | {} | {} / {} / {} | {:.0} / {:.0} / {:.0} | {:.1} | {:.2} | {:.1} | {:.1} | {:.1} |",
            r.hosts,
            r.lines,
            r.lost,
            r.twice,
            r.broken,
            r.p50_ms,
            r.p99_ms,
            r.max_ms,
            r.server_cpu_s,
            r.server_per_host_s(secs) * 1000.0,
            r.follower_cpu_s,
            r.follower_mib,
            r.sender_mib
        );
    }
    println!(
        "\nMidway through each run, with one listener on the pipe: senders / takers / listeners \
         as counted, and how long the answer took; the dashboard's slowest answer to a key.\n"
    );
    println!("| hosts | `ls --json` | `monitor --json` | dashboard key |");
    println!("| ---: | --- | --- | ---: |");
    for r in &rows {
        println!(
            "| {} | {} | {} | {} |",
            r.hosts,
            Probe::counts(r.probe.ls),
            Probe::counts(r.probe.monitor),
            r.probe.key.map_or("-".into(), |d| format!(
                "{:.0} ms",
                d.as_secs_f64() * 1000.0
            ))
        );
    }
}

/// Starts a follower of `pipe` writing to `out`, and waits until it says it waits.
pub(crate) fn follower_into(b: &Bench, pipe: &str, out: &std::path::Path) -> Child {
    spawn_follower(b, pipe, super::file_out(out))
}

/// Writes host `h`'s payload to `path`: lines `h{h} l{n} {pad}` until it holds `bytes`.
fn host_lines(path: &std::path::Path, h: usize, bytes: u64) -> u64 {
    let mut w = std::io::BufWriter::new(std::fs::File::create(path).expect("create"));
    let pad = "y".repeat(80);
    let (mut written, mut n) = (0u64, 0u64);
    while written < bytes {
        let line = format!("h{h} l{n} {pad}\n");
        w.write_all(line.as_bytes()).expect("write");
        written += line.len() as u64;
        n += 1;
    }
    w.flush().expect("flush");
    n
}

/// Reads a follower's output: whether each host's lines all came, once and in order.
fn check_lines(out: &std::path::Path, lines: &[u64]) -> (usize, u64) {
    let mut next = vec![0u64; lines.len()];
    let mut broken = 0u64;
    let file = std::fs::File::open(out).expect("the follower's output");
    for line in BufReader::with_capacity(1 << 20, file).lines() {
        let Ok(line) = line else {
            broken += 1;
            continue;
        };
        let mut parts = line.split(' ');
        let host = parts
            .next()
            .and_then(|p| p.strip_prefix('h')?.parse::<usize>().ok());
        let n = parts
            .next()
            .and_then(|p| p.strip_prefix('l')?.parse::<u64>().ok());
        match (host, n) {
            (Some(h), Some(n)) if h < next.len() && next[h] == n => next[h] += 1,
            _ => broken += 1,
        }
    }
    let whole = next.iter().zip(lines).filter(|(a, b)| a == b).count();
    (whole, broken)
}

/// `hosts` senders of `mb` MB each started at the same moment into one follower, against one
/// host sending all those bytes as one payload into a follower, in the same run.
pub(crate) fn burst(b: &Bench, hosts: usize, mb: u64) {
    let bytes = mb * 1_000_000;
    eprintln!(
        "burst: {hosts} hosts x {mb} MB at once, and one host's {} MB",
        hosts as u64 * mb
    );
    let inputs: Vec<_> = (0..hosts)
        .map(|h| b.path(&format!("burst-in-{h}")))
        .collect();
    let lines: Vec<u64> = inputs
        .iter()
        .enumerate()
        .map(|(h, p)| host_lines(p, h, bytes))
        .collect();
    let total: u64 = inputs
        .iter()
        .map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .sum();
    let one = b.path("burst-one-in");
    let one_lines = host_lines(&one, 0, total);
    let one_total = std::fs::metadata(&one).map(|m| m.len()).unwrap_or(0);
    // One host, all of it.
    let out = b.path("burst-one-out");
    let mut follower = follower_into(b, "burst-one", &out);
    let start = Instant::now();
    let mut s = b.skypipe(&["send", "burst-one"]);
    s.stdin(super::file_in(&one));
    super::wait_ok(s.spawn().expect("spawn sender"), "the one host");
    super::wait_sizes(
        std::slice::from_ref(&out),
        one_total,
        Duration::from_secs(600),
    );
    let one_took = start.elapsed();
    let _ = super::nix_kill(&follower);
    let _ = follower.wait();
    let (one_whole, one_broken) = check_lines(&out, &[one_lines]);
    // Every host at once.
    let out = b.path("burst-out");
    let server_before = b.server_pid.and_then(cpu_ticks).unwrap_or(0);
    let mut follower = follower_into(b, "burst", &out);
    let (follower_before, children_before) = (
        cpu_ticks(follower.id()).unwrap_or(0),
        super::children_ticks(),
    );
    let start = Instant::now();
    let senders: Vec<Child> = inputs
        .iter()
        .map(|p| {
            let mut s = b.skypipe(&["send", "burst"]);
            s.stdin(super::file_in(p));
            s.spawn().expect("spawn sender")
        })
        .collect();
    let started = start.elapsed();
    super::wait_sizes(std::slice::from_ref(&out), total, Duration::from_secs(600));
    let took = start.elapsed();
    for (h, s) in senders.into_iter().enumerate() {
        super::wait_ok(s, &format!("burst sender {h}"));
    }
    let server_cpu_s =
        (b.server_pid.and_then(cpu_ticks).unwrap_or(0) - server_before) as f64 / 100.0;
    let follower_cpu_s = (cpu_ticks(follower.id()).unwrap_or(0) - follower_before) as f64 / 100.0;
    let senders_cpu_s = (super::children_ticks() - children_before) as f64 / 100.0;
    let _ = super::nix_kill(&follower);
    let _ = follower.wait();
    let (whole, broken) = check_lines(&out, &lines);
    println!("\n## Burst: {hosts} hosts x {mb} MB at the same moment into one `--follow`\n");
    println!("| case | payloads whole | broken lines | time s | MB/s | burst / one host |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    println!(
        "| one host, {:.0} MB | {one_whole} of 1 | {one_broken} | {:.2} | {:.0} | |",
        one_total as f64 / 1e6,
        one_took.as_secs_f64(),
        super::mbs(one_total, one_took)
    );
    println!(
        "| {hosts} hosts x {mb} MB (all started within {:.2} s) | {whole} of {hosts} | {broken} | {:.2} | {:.0} | {:.2} |",
        started.as_secs_f64(),
        took.as_secs_f64(),
        super::mbs(total, took),
        took.as_secs_f64() / one_took.as_secs_f64()
    );
    println!(
        "\nCPU of the burst: server {server_cpu_s:.2} s, follower {follower_cpu_s:.2} s, the {hosts} senders {senders_cpu_s:.2} s."
    );
}
