//! Reliability under faults: a server killed or frozen mid-transfer, senders that vanish or
//! just go quiet, receivers killed mid-payload.

use std::io::Write;
use std::process::Stdio;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::harness::*;

/// A sender (`-v`) fed `data` in 1 MiB blocks, `pause` apart.
fn paced_sender(b: &Bench, pipe: &str, data: Vec<u8>, pause: Duration) -> (Proc, JoinHandle<()>) {
    feed_paced(b.cmd(&["-v", "send", pipe]), data, MIB, pause)
}

fn kill9(child: &Proc) {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).expect("kill -9");
}

/// A sender on `pipe` that sends `line`, then, once `receiver` wrote it, is killed with
/// SIGKILL before it ends the payload (it cannot send an abort).
fn send_then_die(b: &Bench, pipe: &str, line: &[u8], receiver: &mut Proc) {
    let mut sender = b
        .cmd(&["send", pipe])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .start();
    let mut stdin = sender.stdin.take().expect("stdin");
    stdin.write_all(line).expect("write");
    receiver.wait_stdout(line.len());
    kill9(&sender);
    let _ = sender.wait();
    drop(stdin);
}

#[test]
fn a_sender_killed_mid_payload_is_reported_gone_not_awaited_forever() {
    let b = Bench::new();
    let mut receiver = b.spawn_ready(&["doomed", "--sender-timeout", "3s"], &waiting("doomed"));
    send_then_die(&b, "doomed", b"the first line\n", &mut receiver);
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
        err.contains("stopped") && err.contains("incomplete"),
        "{err}"
    );
    assert_eq!(out.stdout, b"the first line\n");
}

#[test]
fn an_idle_but_living_sender_is_not_mistaken_for_a_dead_one() {
    let b = Bench::new();
    let receiver = b.spawn_ready(
        &["quiet-tail", "--sender-timeout", "2s"],
        &waiting("quiet-tail"),
    );
    let mut sender = b
        .cmd(&["send", "quiet-tail"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .start();
    let mut stdin = sender.stdin.take().expect("stdin");
    stdin.write_all(b"before the silence\n").expect("write");
    // The scenario: the sender stays silent for longer than the receiver's --sender-timeout.
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
        .cmd(&["-v", "send", "survivor"])
        .stdin(Stdio::from(std::fs::File::open(&input).expect("open")))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .start()
        .ready(&queued("survivor"));
    b.kill_server_for(OUTAGE);
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
    let receiver = spawn_to_file(&mut b.cmd(&["-v", "live-survivor"]), &output)
        .ready(&waiting("live-survivor"));
    let (sender, feeder) =
        paced_sender(&b, "live-survivor", data.clone(), Duration::from_millis(50));
    // A fifth of the way through.
    wait_file_len(&output, 8 * MIB as u64);
    b.kill_server_for(OUTAGE);
    feeder.join().expect("feeder");
    let sent = wait_output(sender, HANG);
    assert_ok(&sent);
    assert!(went_live(&sent), "on the live path: {}", stderr_of(&sent));
    assert_ok(&wait_output(receiver, HANG));
    assert_eq!(sha_file(&output), sha(&data));
}

#[test]
fn a_transfer_survives_the_server_frozen_for_five_seconds() {
    let b = Bench::new();
    let data = random_bytes(30 * 1024 * 1024, 8);
    let output = b.path("output");
    let receiver = spawn_to_file(&mut b.cmd(&["-v", "frozen"]), &output).ready(&waiting("frozen"));
    let (sender, feeder) = paced_sender(&b, "frozen", data.clone(), Duration::from_millis(40));
    // A quarter of the way through.
    wait_file_len(&output, 8 * MIB as u64);
    b.server.pause().expect("SIGSTOP");
    // The scenario: the server stays frozen (its sockets open) for five seconds.
    std::thread::sleep(Duration::from_secs(5));
    b.server.resume().expect("SIGCONT");
    feeder.join().expect("feeder");
    let sent = wait_output(sender, HANG);
    assert_ok(&sent);
    assert!(went_live(&sent), "on the live path: {}", stderr_of(&sent));
    assert_ok(&wait_output(receiver, HANG));
    assert_eq!(sha_file(&output), sha(&data));
}

/// How long a killed server stays down before it is started again.
const OUTAGE: Duration = Duration::from_millis(700);

#[test]
fn a_receive_of_a_stored_payload_survives_a_server_kill_and_restart() {
    let mut b = Bench::new();
    let input = b.path("input");
    random_file(&input, 150 * MIB, 11);
    assert_ok(&b.send_file(&["stored-read"], &input));
    let mut receiver = b.spawn_recv(&["stored-read"]);
    let held = Held::new(&mut receiver, 20 * MIB);
    held.wait_first();
    b.kill_server_for(OUTAGE);
    held.release();
    let out = wait_output(receiver, HANG);
    let got = held.finish();
    assert_ok(&out);
    assert_eq!(got.len(), 150 * MIB, "{}", stderr_of(&out));
    assert_eq!(sha(&got), sha_file(&input));
    // Taken exactly once: nothing is left in the pipe.
    let again = b.recv(&["stored-read", "--timeout", "1s"]);
    assert_eq!(again.status.code(), Some(124), "{}", stderr_of(&again));
}

#[test]
fn a_follow_aggregation_survives_a_server_kill_and_restart() {
    let mut b = Bench::new();
    let mut follower = b.spawn_ready(&["agg", "--follow", "--timeout", "30s"], &following("agg"));
    let inputs: Vec<Vec<u8>> = (0..4)
        .map(|s| numbered(&format!("host-{s} line"), 150_000))
        .collect();
    let senders: Vec<_> = inputs
        .iter()
        .map(|data| {
            // About three seconds of input, so the restart falls in the middle of it.
            feed_paced(
                b.cmd(&["-v", "send", "agg"]),
                data.clone(),
                64 * 1024,
                Duration::from_millis(60),
            )
        })
        .collect();
    // A third of the way through.
    follower.wait_stdout(inputs.iter().map(Vec::len).sum::<usize>() / 3);
    b.kill_server_for(OUTAGE);
    let mut live = 0;
    for (child, feeder) in senders {
        feeder.join().expect("feeder");
        let sent = wait_output(child, HANG);
        assert_ok(&sent);
        live += usize::from(went_live(&sent));
    }
    assert!(live > 0, "some senders were on the live path");
    // A follower ends when nothing arrived for its --timeout (exit 124).
    let out = wait_output(follower, HANG);
    assert_eq!(out.status.code(), Some(124), "{}", stderr_of(&out));
    // Each sender's lines, picked out of the aggregate, are its input byte for byte.
    let text = String::from_utf8(out.stdout.clone()).expect("whole lines of text");
    for (s, data) in inputs.iter().enumerate() {
        let tag = format!("host-{s} line ");
        let mine: String = text
            .lines()
            .filter(|l| l.starts_with(&tag))
            .flat_map(|l| [l, "\n"])
            .collect();
        if mine.as_bytes() != data.as_slice() {
            let want = String::from_utf8_lossy(data);
            let at = mine.lines().zip(want.lines()).position(|(a, b)| a != b);
            panic!(
                "sender {s}: {} lines of {}, first difference at line {at:?}; follower: {}",
                mine.lines().count(),
                want.lines().count(),
                stderr_of(&out)
            );
        }
    }
    let total: usize = inputs.iter().map(Vec::len).sum();
    assert_eq!(text.len(), total, "nothing but the senders' lines");
}

#[test]
fn a_receiver_killed_mid_payload_leaves_the_rest_to_the_next_one() {
    let b = Bench::new();
    let data = random_bytes(40 * MIB, 12);
    assert_ok(&b.send_bytes(&["handover"], &data));
    let stored = data_messages(&b.url());
    let mut first = b.spawn_recv(&["handover"]);
    let held = Held::new(&mut first, 8 * MIB);
    held.wait_first();
    // Blocked on its stdout, it still removes what it wrote from the server (every 0.5 s).
    assert!(
        eventually(HANG, || data_messages(&b.url()) < stored),
        "the first receiver removed nothing of the {stored} chunks"
    );
    kill9(&first);
    let status = wait_status(&mut first, HANG);
    assert_eq!(status.code(), None, "killed by a signal");
    let one = held.finish();
    assert!(
        one.len() >= 8 * MIB && one.len() < data.len(),
        "{}",
        one.len()
    );
    assert_eq!(sha(&one), sha(&data[..one.len()]), "the first got a prefix");
    // The ticket comes back after its ack wait (30 s); this receiver waits for it.
    let two = b.recv(&["handover"]);
    assert_resumed_rest(&one, &two, &data);
}

#[test]
fn a_sender_bigger_than_the_storage_waits_for_a_taker_to_drain_it() {
    let b = Bench::with(|c| c.max_file_store = Some(16 * MIB as u64));
    let input = b.path("input");
    random_file(&input, 48 * MIB, 13);
    let mut sender = b
        .cmd(&["send", "narrow"])
        .stdin(Stdio::from(std::fs::File::open(&input).expect("open")))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .start();
    let (err, err_reader) = collect_stderr(&mut sender);
    let full = eventually(HANG, || {
        err.lock()
            .expect("stderr")
            .contains("storage for pipes is full")
            || sender.try_wait().ok().flatten().is_some()
    });
    assert!(full, "the sender neither waited nor exited");
    assert!(
        err.lock().expect("stderr").contains("waiting for takers"),
        "{}",
        err.lock().expect("stderr")
    );
    let output = b.path("output");
    let (status, recv_err) = b.recv_to_file(&["narrow"], &output);
    assert!(status.success(), "{recv_err}");
    let status = wait_status(&mut sender, HANG);
    err_reader.join().expect("stderr reader");
    assert!(status.success(), "{}", err.lock().expect("stderr"));
    assert_eq!(sha_file(&output), sha_file(&input));
}

#[test]
fn a_sender_facing_a_full_store_gives_up_at_its_timeout_and_drops_nothing_stored() {
    let b = Bench::with(|c| c.max_file_store = Some(16 * MIB as u64));
    let earlier = random_bytes(4 * MIB, 14);
    assert_ok(&b.send_bytes(&["kept"], &earlier));
    let big = b.path("big");
    random_file(&big, 40 * MIB, 15);
    let out = b.send_file(&["kept", "--timeout", "3s"], &big);
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    let err = stderr_of(&out);
    let last = err.trim().lines().last().unwrap_or_default();
    assert!(
        last.contains("stayed full for 3s") && last.contains("incomplete"),
        "{err}"
    );
    // The payload stored before is whole.
    let first = b.recv(&["kept"]);
    assert_ok(&first);
    assert_eq!(sha(&first.stdout), sha(&earlier));
    // The one that gave up is not taken for a complete payload.
    let second = b.recv(&["kept", "--sender-timeout", "3s", "--timeout", "5s"]);
    assert_ne!(second.status.code(), Some(0), "{}", stderr_of(&second));
}

#[test]
fn a_listener_whose_sender_dies_mid_payload_says_so_and_exits() {
    let b = Bench::new();
    let mut listener = b.spawn_ready(&["tapped", "--listen"], &listening("tapped"));
    send_then_die(&b, "tapped", b"heard before the end\n", &mut listener);
    // Not awaited forever: the listener notices the sender is gone and nothing more comes.
    let out = wait_output(listener, Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    let err = stderr_of(&out);
    assert!(err.contains("missed the rest of payload"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert_eq!(out.stdout, b"heard before the end\n");
}
