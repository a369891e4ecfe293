//! `skypipe monitor`: the JSON and text forms during a real transfer, and the real dashboard
//! in a terminal (tmux).

use std::process::{Command, Stdio};
use std::thread::JoinHandle;
use std::time::Duration;

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

fn finish(sender: Proc, feeder: JoinHandle<()>, receiver: Proc) {
    feeder.join().expect("feeder");
    assert_ok(&wait_output(sender, HANG));
    assert_ok(&wait_output(receiver, HANG));
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

fn tmux(socket: &str, args: &[&str]) -> std::process::Output {
    Command::new("tmux")
        .arg("-L")
        .arg(socket)
        .args(args)
        .output()
        .expect("tmux (install it: apt-get install tmux)")
}

#[test]
fn the_dashboard_in_a_terminal_shows_the_pipe_and_q_restores_the_terminal() {
    let b = Bench::new();
    let socket = format!("skypipe-test-{}", std::process::id());
    // A shell in a real terminal, with the bench's environment.
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
            "-x",
            "120",
            "-y",
            "30",
        ])
        .arg("bash --norc --noprofile")
        .env("NATS_URL", b.url())
        .env("HOME", b.path("home"))
        .env("PS1", "$ ")
        .env_remove("NATS_CONTEXT")
        .status()
        .expect("tmux (install it: apt-get install tmux)");
    assert!(start.success());
    struct Kill(String);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = Command::new("tmux")
                .args(["-L", &self.0, "kill-server"])
                .status();
        }
    }
    let _kill = Kill(socket.clone());
    let (sender, feeder, receiver) = paced_transfer(&b, "on-screen", 200);
    tmux(
        &socket,
        &[
            "send-keys",
            "-t",
            "t",
            &format!("{BIN} monitor; echo exit=$?"),
            "Enter",
        ],
    );
    let mut screen = String::new();
    let seen = eventually(Duration::from_secs(15), || {
        screen = String::from_utf8_lossy(&tmux(&socket, &["capture-pane", "-p", "-t", "t"]).stdout)
            .into_owned();
        screen.contains("on-screen") && screen.contains("skypipe monitor")
    });
    assert!(seen, "the dashboard never showed the pipe:\n{screen}");
    tmux(&socket, &["send-keys", "-t", "t", "q"]);
    let exited = eventually(Duration::from_secs(10), || {
        screen = String::from_utf8_lossy(&tmux(&socket, &["capture-pane", "-p", "-t", "t"]).stdout)
            .into_owned();
        screen.contains("exit=0")
    });
    assert!(exited, "q did not exit 0:\n{screen}");
    // The terminal is usable again: typed text echoes and runs.
    tmux(
        &socket,
        &["send-keys", "-t", "t", "echo usable-$((40+2))", "Enter"],
    );
    let usable = eventually(Duration::from_secs(5), || {
        screen = String::from_utf8_lossy(&tmux(&socket, &["capture-pane", "-p", "-t", "t"]).stdout)
            .into_owned();
        screen.contains("usable-42")
    });
    assert!(usable, "the terminal was left unusable:\n{screen}");
    finish(sender, feeder, receiver);
}
