//! Core pipes: send, FIFO receive, store-and-forward, triggers, aborts, binary safety.

use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;
use std::time::{Duration, Instant};

use super::harness::*;

#[test]
fn stored_payloads_are_taken_in_order_after_their_senders_exit() {
    let b = Bench::new();
    let a = b.file("a", &random_bytes(700_000, 1));
    let bb = b.file("b", b"second payload\n");
    assert_ok(&b.send_file(&["files"], &a));
    assert_ok(&b.send_file(&["files"], &bb));
    let first = b.recv(&["files"]);
    assert_ok(&first);
    let second = b.recv(&["files"]);
    assert_ok(&second);
    assert_eq!(sha(&first.stdout), sha_file(&a));
    assert_eq!(second.stdout, b"second payload\n");
    // Nothing is left.
    let third = b.recv(&["files", "--timeout", "1s"]);
    assert_eq!(third.status.code(), Some(124), "{}", stderr_of(&third));
    assert!(third.stdout.is_empty());
}

#[test]
fn a_waiting_receiver_gets_the_payload_through_gzip() {
    let b = Bench::new();
    let data = random_bytes(2_000_000, 7);
    let out_gz = b.path("out.gz");
    // In a script stdin is /dev/null: skypipe receives.
    let script = format!("\"$SKYPIPE\" -v | gzip -9 -c > '{}'", out_gz.display());
    let mut receiver = shell(&b, &script)
        .stderr(Stdio::piped())
        .start()
        .ready(&waiting("default"));
    assert_ok(&b.send_bytes(&[], &data));
    let status = wait_status(&mut receiver, HANG);
    assert!(status.success());
    let gunzip = std::process::Command::new("gzip")
        .arg("-dc")
        .arg(&out_gz)
        .output()
        .expect("gzip -d");
    assert_eq!(sha(&gunzip.stdout), sha(&data));
}

#[test]
fn receiver_started_after_the_sender_exits_gets_the_payload() {
    let b = Bench::new();
    let data = random_bytes(123_457, 3);
    assert_ok(&b.send_bytes(&[], &data));
    let out = b.recv(&[]);
    assert_ok(&out);
    assert_eq!(sha(&out.stdout), sha(&data));
}

#[test]
fn trigger_wakes_a_waiting_script_and_prints_a_newline() {
    let b = Bench::new();
    let waiter = b.spawn_ready(&["trigger"], &waiting("trigger"));
    let sent = b.send_bytes(&["trigger"], b"\n");
    assert_ok(&sent);
    let out = wait_output(waiter, HANG);
    assert_ok(&out);
    assert_eq!(out.stdout, b"\n");
    // The other order: the trigger waits for the next waiter.
    assert_ok(&b.send_bytes(&["trigger"], b"\n"));
    let out = b.recv(&["trigger"]);
    assert_ok(&out);
    assert_eq!(out.stdout, b"\n");
}

#[test]
fn two_waiting_receivers_get_different_whole_payloads() {
    let b = Bench::new();
    let r1 = b.spawn_ready(&["pair"], &waiting("pair"));
    let r2 = b.spawn_ready(&["pair"], &waiting("pair"));
    let p1 = random_bytes(600_000, 11);
    let p2 = random_bytes(900_000, 12);
    assert_ok(&b.send_bytes(&["pair"], &p1));
    assert_ok(&b.send_bytes(&["pair"], &p2));
    let o1 = wait_output(r1, HANG);
    let o2 = wait_output(r2, HANG);
    assert_ok(&o1);
    assert_ok(&o2);
    let mut got = vec![sha(&o1.stdout), sha(&o2.stdout)];
    got.sort();
    let mut want = vec![sha(&p1), sha(&p2)];
    want.sort();
    assert_eq!(got, want);
}

fn round_trip(b: &Bench, pipe: &str, data: &[u8]) {
    let f = b.file(pipe, data);
    assert_ok(&b.send_file(&[pipe], &f));
    let out = b.recv(&[pipe]);
    assert_ok(&out);
    assert_eq!(out.stdout.len(), data.len(), "length of {pipe}");
    assert_eq!(sha(&out.stdout), sha(data), "bytes of {pipe}");
}

#[test]
fn odd_payloads_come_out_identical() {
    let b = Bench::new();
    round_trip(&b, "empty", b"");
    round_trip(&b, "one", b"x");
    round_trip(&b, "nul", &[0u8; 300_000]);
    round_trip(&b, "newlines", &[b'\n'; 600_000]);
    let mut line = vec![b'a'; 5 * 1024 * 1024];
    line[17] = 0;
    round_trip(&b, "long-line", &line);
}

#[test]
fn three_hundred_mib_of_random_bytes_arrive_intact() {
    let b = Bench::new();
    let input = b.path("big");
    random_file(&input, 300 * 1024 * 1024, 42);
    let want = sha_file(&input);
    // Live: the receiver waits while the sender streams.
    let output = b.path("big.out");
    let file = std::fs::File::create(&output).expect("create");
    let receiver = b
        .cmd(&["big"])
        .stdin(Stdio::null())
        .stdout(Stdio::from(file))
        .stderr(Stdio::piped())
        .start();
    assert_ok(&b.send_file(&["big"], &input));
    let out = wait_output(receiver, HANG);
    assert_ok(&out);
    assert_eq!(sha_file(&output), want);
    // Stored: sent with nobody waiting, taken afterwards.
    assert_ok(&b.send_file(&["big"], &input));
    let (status, err) = b.recv_to_file(&["big"], &output);
    assert!(status.success(), "{err}");
    assert_eq!(sha_file(&output), want);
}

#[test]
fn an_interrupted_sender_makes_the_receiver_exit_3() {
    let b = Bench::new();
    let mut receiver = b.spawn_recv(&["cut"]);
    let mut sender = b
        .cmd(&["send", "cut"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .start();
    let mut stdin = sender.stdin.take().expect("stdin");
    let lines = b"partial line one\npartial line two\n";
    stdin.write_all(lines).expect("write");
    // Interrupted once its lines are through.
    receiver.wait_stdout(lines.len());
    interrupt(&sender);
    let status = wait_status(&mut sender, HANG);
    assert_eq!(status.code(), Some(130));
    drop(stdin);
    let out = wait_output(receiver, HANG);
    assert_eq!(out.status.code(), Some(3), "{}", stderr_of(&out));
    assert!(stderr_of(&out).contains("aborted"), "{}", stderr_of(&out));
    assert_eq!(out.stdout, b"partial line one\npartial line two\n");
}

#[test]
fn a_receiver_with_stdin_at_dev_null_receives_and_sends_nothing() {
    let b = Bench::new();
    let out = b.recv(&["quiet", "--timeout", "1s"]);
    assert_eq!(out.status.code(), Some(124));
    assert!(
        stderr_of(&out).contains("no payload arrived"),
        "{}",
        stderr_of(&out)
    );
    // Had it sent an empty payload, this one would get it.
    let again = b.recv(&["quiet", "--timeout", "1s"]);
    assert_eq!(again.status.code(), Some(124));
}

#[test]
fn bad_pipe_names_are_usage_errors_that_name_the_problem() {
    let b = Bench::new();
    let long = "x".repeat(129);
    for (name, needle) in [
        ("a.b", "'.'"),
        ("*", "'*'"),
        (">", "'>'"),
        ("", "empty"),
        (long.as_str(), "129 characters"),
        ("a b", "' '"),
    ] {
        let out = b.recv(&[name]);
        assert_eq!(out.status.code(), Some(2), "{name:?}: {}", stderr_of(&out));
        let err = stderr_of(&out);
        assert!(err.contains(needle), "{name:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    }
}

#[test]
fn an_unreachable_server_is_one_line_within_seconds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = skypipe_nats::free_port().expect("port");
    let url = format!("nats://127.0.0.1:{port}");
    let start = Instant::now();
    let child = bare_cmd(dir.path())
        .args(["-s", &url, "x"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .start();
    let out = wait_output(child, Duration::from_secs(30));
    assert!(
        start.elapsed() < Duration::from_secs(6),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(out.status.code(), Some(1));
    let err = stderr_of(&out);
    assert!(err.contains(&url), "{err}");
    assert!(
        err.contains("nats-server"),
        "says how to get a server: {err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
}

#[test]
fn timeout_on_an_empty_pipe_exits_124() {
    let b = Bench::new();
    let start = Instant::now();
    let out = b.recv(&["nothing", "--timeout", "1s"]);
    assert_eq!(out.status.code(), Some(124));
    assert!(start.elapsed() < Duration::from_secs(10));
}

#[test]
fn a_closed_stdout_is_not_an_error() {
    let b = Bench::new();
    assert_ok(&b.send_bytes(&["head"], &random_bytes(5_000_000, 5)));
    let out = shell(
        &b,
        "\"$SKYPIPE\" head | head -c 10 > /dev/null; echo \"${PIPESTATUS[0]}\"",
    )
    .output()
    .expect("bash");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "0",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn lines_written_slowly_reach_a_waiting_receiver_live() {
    let b = Bench::new();
    let mut receiver = b.spawn_ready(&["live"], &waiting("live"));
    let mut sender = b
        .cmd(&["send", "live"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .start();
    let mut stdin = sender.stdin.take().expect("stdin");
    let mut lines = BufReader::new(receiver.stdout.take().expect("stdout"));
    let mut worst = Duration::ZERO;
    for i in 0..10 {
        let written = Instant::now();
        writeln!(stdin, "line {i}").expect("write");
        stdin.flush().expect("flush");
        let mut got = String::new();
        lines.read_line(&mut got).expect("read line");
        assert_eq!(got, format!("line {i}\n"));
        worst = worst.max(written.elapsed());
        // The scenario: a line now and then, the sender idle in between.
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(stdin);
    assert!(wait_status(&mut sender, HANG).success());
    assert!(wait_status(&mut receiver, HANG).success());
    assert!(
        worst < Duration::from_millis(500),
        "slowest line took {worst:?}"
    );
}

/// A sender fed `lines` in two halves: the first half now, the rest when the returned closure
/// is called (which then waits for the sender to end).
fn half_sent(b: &Bench, pipe: &str, lines: &[Vec<u8>]) -> impl FnOnce() {
    let mut sender = b
        .cmd(&["send", pipe])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .start();
    let mut stdin = sender.stdin.take().expect("stdin");
    let pause = Duration::from_millis(120);
    let half = lines.len() / 2;
    write_paced(&mut stdin, &lines[..half], pause).expect("write");
    let rest = lines[half..].to_vec();
    move || {
        write_paced(&mut stdin, &rest, pause).expect("write");
        drop(stdin);
        assert!(wait_status(&mut sender, HANG).success());
    }
}

/// A payload of `lines` that a first taker began: it wrote the first half and was
/// interrupted (Ctrl-C). Returns what it wrote; the sender has ended the payload since.
fn half_taken(b: &Bench, pipe: &str, lines: &[Vec<u8>]) -> Vec<u8> {
    let mut first = b.spawn_ready(&[pipe], &waiting(pipe));
    let finish = half_sent(b, pipe, lines);
    first.wait_stdout(lines[..lines.len() / 2].concat().len());
    interrupt(&first);
    let one = wait_output(first, HANG);
    assert_eq!(one.status.code(), Some(130), "{}", stderr_of(&one));
    finish();
    assert!(!one.stdout.is_empty());
    one.stdout
}

#[test]
fn a_receiver_that_got_only_the_rest_of_a_payload_exits_4_and_says_from_which_byte() {
    let b = Bench::new();
    let lines: Vec<Vec<u8>> = (0..12)
        .map(|i| format!("line {i}\n").into_bytes())
        .collect();
    let one = half_taken(&b, "relay", &lines);
    let two = b.recv(&["relay"]);
    let err = stderr_of(&two);
    assert_eq!(two.status.code(), Some(4), "{err}");
    assert!(
        err.contains(&format!("resumed at byte {}", one.len())),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert_eq!(
        [one, two.stdout].concat(),
        lines.concat(),
        "every byte once"
    );
}

#[test]
fn a_follower_that_resumes_a_payload_goes_on_with_a_note() {
    let b = Bench::new();
    let lines: Vec<Vec<u8>> = (0..12)
        .map(|i| format!("line {i}\n").into_bytes())
        .collect();
    let one = half_taken(&b, "relay", &lines);
    assert_ok(&b.send_bytes(&["relay"], b"next payload\n"));
    let two = b.recv(&["relay", "--follow", "--timeout", "3s"]);
    let err = stderr_of(&two);
    assert_eq!(
        two.status.code(),
        Some(124),
        "went on to its timeout: {err}"
    );
    assert!(
        err.contains(&format!("resumed at byte {}", one.len())),
        "{err}"
    );
    assert_eq!(
        [one, two.stdout].concat(),
        [lines.concat().as_slice(), b"next payload\n"].concat()
    );
}
