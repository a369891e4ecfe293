//! The example scripts in examples/, run as README.md says, print what they promise.

use std::path::Path;
use std::process::Command;

use super::harness::*;

fn run_example(b: &Bench, script: &str) -> String {
    let bin_dir = Path::new(BIN).parent().expect("bin dir");
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let child = Command::new("bash")
        .arg(root.join("examples").join(script))
        .env("PATH", path)
        .env("NATS_URL", b.url())
        .env("HOME", b.path("home"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .start();
    let out = wait_output(child, HANG);
    assert_ok(&out);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn aggregate_example_collects_every_line_in_order() {
    let b = Bench::new();
    let out = run_example(&b, "aggregate.sh");
    assert!(out.contains("aggregated 300 lines from 3 senders"), "{out}");
    for host in ["web1", "web2", "db1"] {
        assert!(
            out.contains(&format!("{host}: 100 lines, in order: yes")),
            "{out}"
        );
    }
}

#[test]
fn trigger_example_wakes_the_waiter() {
    let b = Bench::new();
    let out = run_example(&b, "trigger.sh");
    assert!(out.contains("waiter: woken by the trigger"), "{out}");
}

#[test]
fn job_queue_example_gives_each_job_to_one_worker() {
    let b = Bench::new();
    let out = run_example(&b, "job_queue.sh");
    assert!(out.contains("9 jobs taken, 9 distinct"), "{out}");
}

#[test]
fn broadcast_example_reaches_every_listener_and_the_taker() {
    let b = Bench::new();
    let out = run_example(&b, "broadcast.sh");
    for who in ["listener1", "listener2", "listener3", "taker"] {
        assert!(
            out.contains(&format!("{who} got: hello, everyone")),
            "{out}"
        );
    }
}
