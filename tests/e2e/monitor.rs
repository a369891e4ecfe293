//! `skypipe monitor`: the JSON and text forms during a real transfer, and the real dashboard
//! in a terminal (tmux).

use std::io::Write as _;
use std::process::{Command, Output, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use super::harness::*;

/// A live transfer of `mib` MiB on `pipe`, paced over a few seconds so the monitor sees it
/// running. Returns, once the receiver took the payload, the sender, its feeding thread and
/// the receiver.
fn paced_transfer(b: &Bench, pipe: &str, mib: usize) -> (Proc, JoinHandle<()>, Proc) {
    let receiver = b
        .cmd(&["-v", pipe])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .start()
        .ready(&waiting(pipe));
    let block = random_bytes(2 * 1024 * 1024, 77);
    let blocks = std::iter::repeat_n(block, mib / 2);
    let (sender, feeder) = feed_pieces(b.cmd(&["send", pipe]), blocks, Duration::from_millis(60));
    (sender, feeder, receiver.ready(&took(pipe)))
}

/// The row of pipe `name` in a JSON report's `pipes` (`key` names the pipe: `name` in
/// `monitor --json`, `pipe` in `ls --json`).
fn row<'a>(report: &'a serde_json::Value, key: &str, name: &str) -> &'a serde_json::Value {
    report["pipes"]
        .as_array()
        .and_then(|pipes| pipes.iter().find(|p| p[key] == name))
        .unwrap_or_else(|| panic!("no row for pipe {name}: {report}"))
}

/// Waits for both ends; returns what the sender said.
fn finish(sender: Proc, feeder: JoinHandle<()>, receiver: Proc) -> Output {
    feeder.join().expect("feeder");
    let sent = wait_output(sender, HANG);
    assert_ok(&sent);
    assert_ok(&wait_output(receiver, HANG));
    sent
}

#[test]
fn monitor_json_shows_a_running_transfer_with_a_rate() {
    let b = Bench::new();
    let (sender, feeder, receiver) = paced_transfer(&b, "busy", 200);
    let out = b.recv(&["monitor", "--json"]);
    assert_ok(&out);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let pipes = report["pipes"].as_array().expect("pipes");
    let busy = pipes
        .iter()
        .find(|p| p["name"] == "busy")
        .unwrap_or_else(|| panic!("no row for the pipe: {report}"));
    let rate = busy["in_per_sec"].as_f64().unwrap_or(0.0);
    assert!(rate > 0.0, "in rate {rate}: {busy}");
    assert_eq!(busy["senders"], 1, "{busy}");
    assert!(busy["takers"].as_u64().unwrap_or(0) >= 1, "{busy}");
    assert_eq!(report["server"]["state"], "connected");
    finish(sender, feeder, receiver);
}

#[test]
fn monitor_json_reports_what_a_parked_pipe_holds_and_that_nothing_moves() {
    let b = Bench::new();
    let data = random_bytes(3_000_000, 5);
    assert_ok(&b.send_bytes(&["parked"], &data));
    let out = b.recv(&["monitor", "--json"]);
    assert_ok(&out);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let parked = row(&report, "name", "parked");
    assert_eq!(parked["bytes_stored"], 3_000_000, "{parked}");
    assert_eq!(parked["payloads_stored"], 1, "{parked}");
    assert_eq!(parked["payloads_waiting"], 1, "{parked}");
    // Watched for a second: nothing moves, and that is known.
    assert_eq!(parked["in_per_sec"], 0.0, "{parked}");
    assert_eq!(parked["out_per_sec"], 0.0, "{parked}");
    // Sent before the monitor started: not counted as the monitor's bytes in.
    assert_eq!(parked["bytes_in"], 0, "{parked}");
    assert_eq!(
        parked["stalled"], false,
        "waiting for a taker is normal: {parked}"
    );
}

#[test]
fn monitor_prints_text_when_stdout_is_not_a_terminal() {
    let b = Bench::new();
    assert_ok(&b.send_bytes(&["parked"], b"waiting for a taker\n"));
    let out = b.recv(&["monitor"]);
    assert_ok(&out);
    assert!(
        stderr_of(&out).contains("not a terminal"),
        "{}",
        stderr_of(&out)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let row = text
        .lines()
        .find(|l| l.starts_with("parked"))
        .unwrap_or_else(|| panic!("no row: {text}"));
    let cols: Vec<&str> = row.split_whitespace().collect();
    // name, in/s (2 words), out/s (2 words), waiting...
    assert_eq!(cols.get(5), Some(&"1"), "one payload waiting: {row}");
}

/// The true rate of [`steady_transfer`]: 250 kB every 25 ms.
const STEADY_RATE: f64 = 10_000_000.0;
const STEADY_PIECE: usize = 250_000;
const STEADY_EVERY: Duration = Duration::from_millis(25);

/// A transfer of exactly [`STEADY_RATE`] for `secs` seconds on `pipe`, into a receiver that
/// was already waiting: pieces written on a fixed schedule (each on its deadline, so slow
/// writes do not slow the rate down). Returns once the receiver took the payload.
fn steady_transfer(b: &Bench, pipe: &str, secs: u32) -> (Proc, JoinHandle<()>, Proc) {
    let receiver = b
        .cmd(&["-v", pipe])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .start()
        .ready(&waiting(pipe));
    let mut sender = b
        .cmd(&["-v", "send", pipe])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .start();
    let mut stdin = sender.stdin.take().expect("stdin");
    let piece = random_bytes(STEADY_PIECE, 19);
    let pieces = secs as u64 * 1000 / STEADY_EVERY.as_millis() as u64;
    let feeder = std::thread::spawn(move || {
        let start = Instant::now();
        for n in 0..pieces {
            // The scenario: a producer with a fixed rate, the way a camera or a meter writes.
            let due = start + STEADY_EVERY * u32::try_from(n).expect("few pieces");
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            if stdin.write_all(&piece).is_err() {
                return;
            }
        }
    });
    (sender, feeder, receiver.ready(&took(pipe)))
}

fn within(got: Option<f64>, want: f64, tolerance: f64) -> bool {
    got.is_some_and(|g| (g - want).abs() <= want * tolerance)
}

#[test]
fn monitor_json_reports_the_true_rate_of_a_steady_transfer_in_and_out() {
    let b = Bench::new();
    // Long enough for three runs on a busy machine, each inside the transfer.
    let (sender, feeder, receiver) = steady_transfer(&b, "steady", 14);
    let mut seen = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        let out = b.recv(&["monitor", "--json"]);
        let took = started.elapsed();
        assert_ok(&out);
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
        let pipe = row(&report, "name", "steady").clone();
        let (rate_in, rate_out) = (pipe["in_per_sec"].as_f64(), pipe["out_per_sec"].as_f64());
        seen.push((rate_in, rate_out, took));
        assert!(
            within(rate_in, STEADY_RATE, 0.10) && within(rate_out, STEADY_RATE, 0.10),
            "in {rate_in:?} and out {rate_out:?} B/s, true rate {STEADY_RATE}: {pipe}"
        );
        // A live transfer does not pile up on the server, and the monitor does not say it
        // does: the receiver purges what it wrote twice a second.
        let stored = pipe["bytes_stored"].as_u64().unwrap_or(u64::MAX);
        assert!(
            stored < 3 * STEADY_RATE as u64,
            "{stored} bytes stored: {pipe}"
        );
        assert_eq!(pipe["payloads_stored"], 1, "{pipe}");
        assert_eq!(pipe["stalled"], false, "{pipe}");
        // About a second: each skypipe says its rate in every announcement, so one heard is
        // enough (found: 2.0 s while a transfer ran, waiting for a second announcement). The
        // answer's own clock says when its sample was taken.
        assert!(took < Duration::from_secs(4), "--json took {took:?}");
        let at = report["at_secs"].as_f64().unwrap_or(f64::MAX);
        assert!(
            at < 1.8,
            "the sample was taken {at} s after the start: {report}"
        );
        let time = report["time"].as_str().expect("an absolute time");
        let when = humantime::parse_rfc3339(time).expect("RFC 3339");
        let skew = SystemTime::now()
            .duration_since(when)
            .unwrap_or_else(|e| e.duration());
        assert!(skew < Duration::from_secs(10), "{time} is not now");
    }
    eprintln!("in, out, time taken of each --json: {seen:?}");
    // The waiting receiver had the payload on the live path: its in rate came from the
    // sender's count of live bytes, not from stored chunks.
    let sent = finish(sender, feeder, receiver);
    assert!(went_live(&sent), "{}", stderr_of(&sent));
}

fn tmux(socket: &str, args: &[&str]) -> std::process::Output {
    Command::new("tmux")
        .arg("-L")
        .arg(socket)
        .args(args)
        .output()
        .expect("tmux (install it: apt-get install tmux)")
}

/// A shell in a real terminal (tmux, on a socket of its own, killed on drop), with the
/// bench's environment.
struct Terminal {
    socket: String,
}

impl Terminal {
    fn new(b: &Bench, tag: &str, width: u16, height: u16) -> Terminal {
        let socket = format!("skypipe-test-{}-{tag}", std::process::id());
        let start = Command::new("tmux")
            .args([
                "-L",
                &socket,
                "-f",
                "/dev/null",
                "new-session",
                "-d",
                "-s",
                "t",
            ])
            .args(["-x", &width.to_string(), "-y", &height.to_string()])
            .arg("bash --norc --noprofile")
            .env("NATS_URL", b.url())
            .env("HOME", b.path("home"))
            .env("PS1", "$ ")
            .env_remove("NATS_CONTEXT")
            .status()
            .expect("tmux (install it: apt-get install tmux)");
        assert!(start.success());
        Terminal { socket }
    }

    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "t"];
        args.extend(keys);
        tmux(&self.socket, &args);
    }

    fn screen(&self) -> String {
        String::from_utf8_lossy(&tmux(&self.socket, &["capture-pane", "-p", "-t", "t"]).stdout)
            .into_owned()
    }

    /// Polls the screen until `cond` holds or `limit` passes; returns whether it held, and
    /// the last screen.
    fn wait(&self, limit: Duration, mut cond: impl FnMut(&str) -> bool) -> (bool, String) {
        let mut screen = String::new();
        let held = eventually(limit, || {
            screen = self.screen();
            cond(&screen)
        });
        (held, screen)
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .status();
    }
}

#[test]
fn the_dashboard_in_a_terminal_shows_the_pipe_and_q_restores_the_terminal() {
    let b = Bench::new();
    let term = Terminal::new(&b, "q", 120, 30);
    let (sender, feeder, receiver) = paced_transfer(&b, "on-screen", 200);
    term.keys(&[&format!("{BIN} monitor; echo exit=$?"), "Enter"]);
    let (seen, screen) = term.wait(Duration::from_secs(15), |s| {
        s.contains("on-screen") && s.contains("skypipe monitor")
    });
    assert!(seen, "the dashboard never showed the pipe:\n{screen}");
    term.keys(&["q"]);
    let (exited, screen) = term.wait(Duration::from_secs(10), |s| s.contains("exit=0"));
    assert!(exited, "q did not exit 0:\n{screen}");
    // The terminal is usable again: typed text echoes and runs.
    term.keys(&["echo usable-$((40+2))", "Enter"]);
    let (usable, screen) = term.wait(Duration::from_secs(5), |s| s.contains("usable-42"));
    assert!(usable, "the terminal was left unusable:\n{screen}");
    finish(sender, feeder, receiver);
}

#[test]
fn the_dashboard_says_within_two_seconds_that_the_server_is_gone() {
    let mut b = Bench::new();
    assert_ok(&b.send_bytes(&["parked"], b"waiting for a taker\n"));
    let term = Terminal::new(&b, "kill", 100, 30);
    term.keys(&[&format!("{BIN} monitor"), "Enter"]);
    let (live, screen) = term.wait(Duration::from_secs(15), |s| {
        s.contains("parked") && s.contains("connected") && s.contains("rtt ")
    });
    assert!(live, "the dashboard never came up:\n{screen}");
    assert!(!screen.contains("rtt -"), "{screen}");
    b.server.kill().expect("kill the server");
    let killed = Instant::now();
    let header = |s: &str| s.lines().next().unwrap_or_default().to_string();
    let (told, screen) = term.wait(Duration::from_secs(2), |s| {
        header(s).contains("reconnecting")
    });
    let after = killed.elapsed();
    assert!(
        told,
        "2 s after the server died the header still says: {}\n{screen}",
        header(&screen)
    );
    // The round trip is no longer claimed, and the data's age shows.
    let (aged, screen) = term.wait(Duration::from_secs(5), |s| {
        let h = header(s);
        h.contains("rtt -") && h.contains("data ") && !h.contains("data 0s old")
    });
    assert!(
        aged,
        "the header does not say how old the data is:\n{screen}"
    );
    eprintln!(
        "the header said so {after:?} after the kill: {}",
        header(&screen)
    );
    term.keys(&["q"]);
}

/// `ls` and `monitor` count the processes on a pipe: a taker killed mid-payload (its sender
/// killed too) leaves the counts within seconds, though the ticket it held stays out until the
/// server's ack wait (found: it stayed in TAKERS for minutes).
#[test]
fn a_killed_taker_leaves_ls_and_monitor_at_once() {
    let b = Bench::new();
    let mut taker = b
        .cmd(&["-v", "recv", "p"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .start()
        .ready(&waiting("p"));
    let block = random_bytes(64 * 1024, 3);
    let (sender, feeder) = feed_pieces(
        b.cmd(&["send", "p"]),
        std::iter::repeat_n(block, 2000),
        Duration::from_millis(20),
    );
    taker.wait_stdout(1_000_000);
    signal(&taker, nix::sys::signal::Signal::SIGHUP);
    signal(&sender, nix::sys::signal::Signal::SIGKILL);
    let _ = wait_output(taker, HANG);
    let _ = wait_output(sender, HANG);
    feeder.join().expect("feeder");
    let (_, held, _) = queue_state(&b.url(), "p").expect("the pipe's consumer");
    assert_eq!(held, 1, "the dead taker's ticket is still out");
    let ls = b.recv(&["ls", "--json"]);
    assert_ok(&ls);
    let report: serde_json::Value = serde_json::from_slice(&ls.stdout).expect("JSON");
    let listed = row(&report, "pipe", "p");
    assert_eq!(listed["takers"], 0, "ls: {listed}");
    assert_eq!(listed["senders"], 0, "ls: {listed}");
    let out = b.recv(&["monitor", "--json"]);
    assert_ok(&out);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let shown = row(&report, "name", "p");
    assert_eq!(shown["takers"], 0, "monitor: {shown}");
}

/// `monitor --json` and `--once` whose server stops answering after they connected (SIGSTOP)
/// answer in their time, saying so (found: no output for minutes).
#[test]
fn monitor_once_and_json_say_when_a_paused_server_does_not_answer() {
    let b = Bench::new();
    assert_ok(&b.send_bytes(&["p"], b"something stored\n"));
    for form in ["--json", "--once"] {
        let monitor = b
            .cmd(&["-v", "monitor", form])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .start()
            .ready("connected to *");
        b.server.pause().expect("SIGSTOP");
        let out = wait_output(monitor, Duration::from_secs(30));
        b.server.resume().expect("SIGCONT");
        let err = stderr_of(&out);
        assert_eq!(out.status.code(), Some(1), "{form}: {err}");
        assert!(err.contains("did not answer within 5s"), "{form}: {err}");
        assert!(out.stdout.is_empty(), "{form}: no table made up");
    }
}

/// `monitor --json` beside a follower holding several payloads at once (many hosts' logs into
/// one aggregator): one taker, every sender, and the pipe's out rate known (found: a follower
/// holding more tickets than there were takers left the out rate unknown, so `monitor --json`
/// waited its whole limit and then printed `null`).
#[test]
fn monitor_json_knows_the_out_rate_of_a_follower_holding_many_payloads() {
    const HOSTS: usize = 4;
    let b = Bench::new();
    let mut follower = b.spawn_ready(&["logs", "--follow"], &following("logs"));
    let feeds: Vec<_> = (0..HOSTS)
        .map(|h| {
            let lines = (0..240).map(move |n| format!("host {h} line {n}\n").into_bytes());
            feed_pieces(b.cmd(&["send", "logs"]), lines, Duration::from_millis(25))
        })
        .collect();
    follower.wait_stdout_until("a line of every host", |text| {
        let text = String::from_utf8_lossy(text);
        (0..HOSTS).all(|h| text.contains(&format!("host {h} line 1\n")))
    });
    let out = b.recv(&["monitor", "--json"]);
    assert_ok(&out);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let logs = row(&report, "name", "logs");
    assert_eq!(logs["senders"], HOSTS, "{logs}");
    assert_eq!(logs["takers"], 1, "one follower: {logs}");
    let out_rate = logs["out_per_sec"].as_f64();
    assert!(out_rate.is_some_and(|r| r > 0.0), "out rate: {logs}");
    for (sender, feeder) in feeds {
        feeder.join().expect("feeder");
        assert_ok(&wait_output(sender, HANG));
    }
    interrupt(&follower);
    let got = wait_output(follower, HANG);
    let text = String::from_utf8_lossy(&got.stdout);
    for h in 0..HOSTS {
        let lines: Vec<_> = text
            .lines()
            .filter(|l| l.starts_with(&format!("host {h} ")))
            .collect();
        let want: Vec<_> = (0..240).map(|n| format!("host {h} line {n}")).collect();
        assert_eq!(lines, want, "host {h}'s lines, once each and in order");
    }
}
