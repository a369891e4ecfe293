//! The fleet case: many hosts, each a line generator piped into `skypipe send logs`, into one
//! `skypipe recv --follow logs`. Every line carries its host, its number and the instant it was
//! written to its sender's stdin; the bench reads the follower's stdout and times each line.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::{cpu_ticks, percentile, Bench};

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

/// Starts a follower of `pipe` and waits until it says it waits; its stdout comes back as
/// lines with the instant each was read.
fn start_follower(b: &Bench, pipe: &str) -> (Child, mpsc::Receiver<(Instant, String)>) {
    let mut c = b.skypipe(&["-v", "recv", "--follow", pipe]);
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = c.spawn().expect("spawn follower");
    let stderr = child.stderr.take().expect("stderr");
    let (ready_tx, ready_rx) = mpsc::channel();
    // FLEET_FOLLOWER_LOG=FILE keeps the follower's log (with SKYPIPE_LOG for more of it).
    let mut log = std::env::var_os("FLEET_FOLLOWER_LOG")
        .map(|p| std::fs::File::create(p).expect("the follower's log file"));
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
    }
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
}
