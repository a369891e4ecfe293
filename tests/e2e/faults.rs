//! Reliability under faults: a server killed or frozen mid-transfer, senders that vanish or
//! just go quiet, receivers killed mid-payload.

use std::io::Write;
use std::process::{Child, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::harness::*;

/// A sender fed `blocks` blocks of 1 MiB (from `data`), `pause` apart.
fn paced_sender(b: &Bench, pipe: &str, data: Vec<u8>, pause: Duration) -> (Child, JoinHandle<()>) {
    let mut sender = b
        .cmd(&[pipe])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sender");
    let mut stdin = sender.stdin.take().expect("stdin");
    let feeder = std::thread::spawn(move || {
        for block in data.chunks(1024 * 1024) {
            if stdin.write_all(block).is_err() {
                return;
            }
            std::thread::sleep(pause);
        }
    });
    (sender, feeder)
}

fn kill9(child: &Child) {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).expect("kill -9");
}

#[test]
fn a_sender_killed_mid_payload_is_reported_gone_not_awaited_forever() {
    let b = Bench::new();
    let receiver = b.spawn_recv(&["doomed", "--sender-timeout", "3s"]);
    std::thread::sleep(Duration::from_millis(300));
    let mut sender = b
        .cmd(&["doomed"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sender");
    let mut stdin = sender.stdin.take().expect("stdin");
    stdin.write_all(b"the first line\n").expect("write");
    std::thread::sleep(Duration::from_millis(800));
    kill9(&sender);
    let _ = sender.wait();
    drop(stdin);
    let start = Instant::now();
    let out = wait_output(receiver, Duration::from_secs(60));
    assert!(
        start.elapsed() < Duration::from_secs(15),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    let err = stderr_of(&out);
    assert!(
        err.contains("vanished") && err.contains("incomplete"),
        "{err}"
    );
    assert_eq!(out.stdout, b"the first line\n");
}

#[test]
fn an_idle_but_living_sender_is_not_mistaken_for_a_dead_one() {
    let b = Bench::new();
    let receiver = b.spawn_recv(&["quiet-tail", "--sender-timeout", "2s"]);
    std::thread::sleep(Duration::from_millis(300));
    let mut sender = b
        .cmd(&["quiet-tail"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sender");
    let mut stdin = sender.stdin.take().expect("stdin");
    stdin.write_all(b"before the silence\n").expect("write");
    std::thread::sleep(Duration::from_secs(5));
    stdin.write_all(b"after the silence\n").expect("write");
    drop(stdin);
    assert_ok(&wait_output(sender, HANG));
    let out = wait_output(receiver, HANG);
    assert_ok(&out);
    assert_eq!(out.stdout, b"before the silence\nafter the silence\n");
}

#[test]
fn a_stored_send_survives_a_server_kill_and_restart() {
    let mut b = Bench::new();
    let input = b.path("input");
    random_file(&input, 120 * 1024 * 1024, 5);
    let sender = b
        .cmd(&["survivor"])
        .stdin(Stdio::from(std::fs::File::open(&input).expect("open")))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sender");
    std::thread::sleep(Duration::from_millis(150));
    b.server.kill().expect("kill -9 the server");
    std::thread::sleep(Duration::from_millis(700));
    b.server.restart().expect("restart the server");
    let out = wait_output(sender, HANG);
    assert_ok(&out);
    let output = b.path("output");
    let (status, err) = b.recv_to_file(&["survivor"], &output);
    assert!(status.success(), "{err}");
    assert_eq!(sha_file(&output), sha_file(&input));
}

#[test]
fn a_live_transfer_survives_a_server_kill_and_restart() {
    let mut b = Bench::new();
    let data = random_bytes(40 * 1024 * 1024, 6);
    let output = b.path("output");
    let receiver = b
        .cmd(&["live-survivor"])
        .stdin(Stdio::null())
        .stdout(Stdio::from(std::fs::File::create(&output).expect("create")))
        .stderr(Stdio::piped())
        .spawn()
        .expect("receiver");
    std::thread::sleep(Duration::from_millis(300));
    let (sender, feeder) =
        paced_sender(&b, "live-survivor", data.clone(), Duration::from_millis(50));
    std::thread::sleep(Duration::from_millis(700));
    b.server.kill().expect("kill -9 the server");
    std::thread::sleep(Duration::from_millis(700));
    b.server.restart().expect("restart the server");
    feeder.join().expect("feeder");
    assert_ok(&wait_output(sender, HANG));
    assert_ok(&wait_output(receiver, HANG));
    assert_eq!(sha_file(&output), sha(&data));
}

#[test]
fn a_transfer_survives_the_server_frozen_for_five_seconds() {
    let b = Bench::new();
    let data = random_bytes(30 * 1024 * 1024, 8);
    let output = b.path("output");
    let receiver = b
        .cmd(&["frozen"])
        .stdin(Stdio::null())
        .stdout(Stdio::from(std::fs::File::create(&output).expect("create")))
        .stderr(Stdio::piped())
        .spawn()
        .expect("receiver");
    std::thread::sleep(Duration::from_millis(300));
    let (sender, feeder) = paced_sender(&b, "frozen", data.clone(), Duration::from_millis(40));
    std::thread::sleep(Duration::from_millis(500));
    b.server.pause().expect("SIGSTOP");
    std::thread::sleep(Duration::from_secs(5));
    b.server.resume().expect("SIGCONT");
    feeder.join().expect("feeder");
    assert_ok(&wait_output(sender, HANG));
    assert_ok(&wait_output(receiver, HANG));
    assert_eq!(sha_file(&output), sha(&data));
}
