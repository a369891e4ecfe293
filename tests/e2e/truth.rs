//! Breaks an adversarial run found, each reproduced as it was found: slow readers, bad
//! payloads among good ones, a closed stdout, an unknown seal, Ctrl-C on a stuck stdout, a
//! paused server. Every guarantee of README must hold in each.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::harness::*;
use super::malformed::{chunk, publish_raw, ticket};

/// Longer than the ticket's ack wait (30 s): a taker that did not keep its ticket loses it.
const PAST_ACK_WAIT: Duration = Duration::from_secs(40);

/// Reads a child's stdout only after `delay`: a reader that does not read (`sleep 40; cat`).
fn read_late(child: &mut Proc, delay: Duration) -> std::thread::JoinHandle<Vec<u8>> {
    let mut stdout = child.stdout.take().expect("stdout piped");
    std::thread::spawn(move || {
        // The scenario itself: stdout is not read for this long.
        std::thread::sleep(delay);
        let mut v = Vec::new();
        let _ = stdout.read_to_end(&mut v);
        v
    })
}

/// Each line with how often it occurs.
fn line_counts(bytes: &[u8]) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for line in String::from_utf8_lossy(bytes).lines() {
        *m.entry(line.to_string()).or_insert(0) += 1;
    }
    m
}

#[test]
fn a_reader_slower_than_the_ack_wait_keeps_its_payload_and_nobody_else_gets_it() {
    let b = Bench::new();
    let f = b.path("f");
    random_file(&f, 1_500_000, 14);
    assert_ok(&b.send_file(&["p"], &f));
    // skypipe p | (sleep 40; cat > o1) &
    let mut slow = b.spawn_recv(&["p"]);
    let o1 = read_late(&mut slow, PAST_ACK_WAIT);
    wait_taken(&b.url(), "p");
    // skypipe p --timeout 50s > o2
    let o2 = b.path("o2");
    let (status, err) = b.recv_to_file(&["p", "--timeout", "50s"], &o2);
    let first = wait_output(slow, HANG);
    let o1 = o1.join().expect("reader");
    assert_ok(&first);
    assert_eq!(
        sha(&o1),
        sha_file(&f),
        "the slow reader got the whole payload"
    );
    assert_eq!(
        status.code(),
        Some(124),
        "the second reader must get nothing: {err}"
    );
    assert_eq!(std::fs::metadata(&o2).expect("o2").len(), 0);
}

#[test]
fn a_follower_slower_than_the_ack_wait_shares_nothing_twice() {
    let b = Bench::new();
    let mut slow = b.spawn_recv(&["p", "--follow", "--timeout", "10s"]);
    let slow_out = read_late(&mut slow, PAST_ACK_WAIT);
    wait_waiting(&b.url(), "p");
    let mut all = Vec::new();
    for i in 0..10 {
        let payload = numbered(&format!("payload{i}"), 2000);
        all.extend_from_slice(&payload);
        assert_ok(&b.send_bytes(&["p"], &payload));
    }
    // A second follower that would get whatever the first one lost.
    let other = b.spawn_recv(&["p", "--follow", "--timeout", "45s"]);
    let first = wait_output(slow, HANG);
    let second = wait_output(other, HANG);
    let mut got = slow_out.join().expect("reader");
    assert_eq!(first.status.code(), Some(124), "{}", stderr_of(&first));
    assert_eq!(second.status.code(), Some(124), "{}", stderr_of(&second));
    got.extend_from_slice(&second.stdout);
    let counts = line_counts(&got);
    let twice = counts.values().filter(|&&n| n > 1).count();
    assert_eq!(twice, 0, "{twice} lines written more than once");
    assert_eq!(counts, line_counts(&all), "every line exactly once");
}

/// A sender of lines "TAG N" fed from a pipe, one line every `pause`; its stdin closes after
/// the last line.
fn line_feeder(b: &Bench, pipe: &str, tag: &str, lines: usize, pause: Duration) -> Proc {
    let lines = (0..lines).map(|i| format!("{tag} {i}\n"));
    feed_pieces(b.cmd(&["send", pipe]), lines.collect::<Vec<_>>(), pause).0
}

/// A follower whose stdout and stderr are collected as they come.
struct Follower(Proc);

impl Follower {
    fn start(b: &Bench, args: &[&str]) -> Follower {
        let mut child = b.spawn_recv(args);
        child.stdout_now();
        child.stderr_now();
        Follower(child)
    }

    /// Exit code, stdout, stderr, once it ended.
    fn finish(self) -> (Option<i32>, Vec<u8>, String) {
        let out = self.0.wait_output(HANG);
        let err = stderr_of(&out);
        (out.status.code(), out.stdout, err)
    }
}

#[test]
fn one_dead_sender_does_not_end_a_follow_aggregation() {
    let b = Bench::new();
    let mut follower = Follower::start(
        &b,
        &[
            "logs",
            "--follow",
            "--sender-timeout",
            "5s",
            "--timeout",
            "4s",
        ],
    );
    wait_waiting(&b.url(), "logs");
    let mut doomed = line_feeder(&b, "logs", "A", 1000, Duration::from_millis(50));
    let living = line_feeder(&b, "logs", "B", 240, Duration::from_millis(50));
    // Both hosts are flowing (the scenario: one dies while the other goes on).
    follower
        .0
        .wait_stdout_until("lines of both senders", |out| {
            let text = String::from_utf8_lossy(out);
            text.lines().any(|l| l == "A 10") && text.lines().any(|l| l == "B 10")
        });
    signal(&doomed, Signal::SIGKILL);
    let _ = doomed.wait();
    assert_ok(&wait_output(living, HANG));
    let (code, got, err) = follower.finish();
    assert_eq!(
        code,
        Some(124),
        "the follower goes on after one dead sender: {err}"
    );
    assert!(
        err.contains("stopped"),
        "the dead sender's payload is reported: {err}"
    );
    let counts = line_counts(&got);
    for i in 0..240 {
        assert_eq!(counts.get(&format!("B {i}")), Some(&1), "line B {i}: {err}");
    }
}

#[test]
fn one_corrupt_payload_does_not_end_a_follow_aggregation() {
    let b = Bench::new();
    let all = b"aaaabbbb\n".to_vec();
    // A chunk whose Skypipe-Offset is wrong (it says 3 bytes came before it, not 4).
    let mut bad = chunk("logs", "bad0", 1, &all[..3], &all[4..], Some((2, &all)));
    bad.1.retain(|(k, _)| *k != "Skypipe-Prior-Crc32");
    bad.1.push((
        "Skypipe-Prior-Crc32",
        format!("{:08x}", crc32fast::hash(&all[..4])),
    ));
    publish_raw(
        &b,
        vec![
            ticket("logs", "bad0"),
            chunk("logs", "bad0", 0, b"", &all[..4], None),
            bad,
        ],
    );
    assert_ok(&b.send_bytes(&["logs"], b"a good payload after it\n"));
    let out = b.recv(&["logs", "--follow", "--timeout", "3s"]);
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(124), "the follower goes on: {err}");
    assert!(err.contains("corrupt"), "{err}");
    assert_eq!(out.stdout, b"a good payload after it\n", "{err}");
}

#[test]
fn lines_of_concurrent_senders_stay_whole_in_a_follow() {
    let b = Bench::new();
    let follower = Follower::start(&b, &["logs", "--follow", "--timeout", "3s"]);
    wait_waiting(&b.url(), "logs");
    // A sender that writes half a line, pauses longer than a chunk's cut, writes the rest.
    let halves = (0..5).flat_map(|i| [format!("A{i}-first-half "), format!("A{i}-second-half\n")]);
    let (halves, feeder) = feed_pieces(
        b.cmd(&["send", "logs"]),
        halves.collect::<Vec<_>>(),
        Duration::from_millis(400),
    );
    let whole = line_feeder(&b, "logs", "B", 80, Duration::from_millis(30));
    feeder.join().expect("feeder");
    assert_ok(&wait_output(halves, HANG));
    assert_ok(&wait_output(whole, HANG));
    let (code, got, err) = follower.finish();
    assert_eq!(code, Some(124), "{err}");
    let text = String::from_utf8(got).expect("text");
    let mut a = 0;
    for line in text.lines() {
        if line.starts_with('A') {
            assert_eq!(
                line,
                format!("A{a}-first-half A{a}-second-half"),
                "torn: {text}"
            );
            a += 1;
        } else {
            assert!(
                line.starts_with("B ") && line.len() < 8,
                "torn: {line:?} in {text}"
            );
        }
    }
    assert_eq!(a, 5, "{text}");
}

#[test]
fn a_follow_backlog_comes_out_oldest_first() {
    let b = Bench::new();
    let script = "for i in $(seq 0 499); do echo \"line $i\" | \"$SKYPIPE\" send p || exit 1; done";
    let sent = shell(&b, script).output().expect("bash");
    assert!(
        sent.status.success(),
        "{}",
        String::from_utf8_lossy(&sent.stderr)
    );
    let out = b.recv(&["p", "--follow", "--timeout", "3s"]);
    assert_eq!(out.status.code(), Some(124), "{}", stderr_of(&out));
    let want: String = (0..500).map(|i| format!("line {i}\n")).collect();
    assert_eq!(String::from_utf8_lossy(&out.stdout), want);
}

#[test]
fn a_big_stored_payload_comes_out_before_a_small_newer_one() {
    let b = Bench::new();
    let big = b.path("big");
    random_file(&big, 6_000_000, 6);
    assert_ok(&b.send_file(&["p"], &big));
    assert_ok(&b.send_bytes(&["p"], b"small and newer\n"));
    let out = b.recv(&["p", "--follow", "--timeout", "3s"]);
    assert_eq!(out.status.code(), Some(124), "{}", stderr_of(&out));
    let mut want = std::fs::read(&big).expect("big");
    want.extend_from_slice(b"small and newer\n");
    assert_eq!(out.stdout.len(), want.len());
    assert_eq!(sha(&out.stdout), sha(&want), "oldest first, each whole");
}

/// How a follower's stored backlog is held up in [`a_follower_never_times_out_while_stored_data_waits`].
#[derive(Debug, Clone, Copy)]
enum HeldUp {
    /// The server stops answering for a while (SIGSTOP).
    Server,
    /// The follower gets no CPU for a while (SIGSTOP).
    Starved,
    /// Its stdout is not read for a while.
    Stdout,
}

/// A follower whose stored backlog is held up for longer than its `--timeout` writes all of it:
/// its idle clock runs only when nothing waits for it (found on a busy machine: a follower
/// ended at `--timeout 3s` with the rest of a 6 MB payload stored).
fn a_follower_never_times_out_while_stored_data_waits(how: HeldUp) {
    let b = Bench::new();
    let big = b.path("big");
    random_file(&big, 40_000_000, 8);
    assert_ok(&b.send_file(&["p"], &big));
    let mut follower = b.spawn_recv(&["p", "--follow", "--timeout", "2s"]);
    let held = Held::new(&mut follower, 1_000_000);
    held.wait_first();
    // The scenario: held up for twice its timeout, with 39 MB stored and waiting for it.
    let hold = Duration::from_secs(4);
    match how {
        HeldUp::Server => {
            b.server.pause().expect("SIGSTOP");
            held.release();
            std::thread::sleep(hold);
            b.server.resume().expect("SIGCONT");
        }
        HeldUp::Starved => {
            signal(&follower, Signal::SIGSTOP);
            held.release();
            std::thread::sleep(hold);
            signal(&follower, Signal::SIGCONT);
        }
        HeldUp::Stdout => {
            std::thread::sleep(hold);
            held.release();
        }
    }
    let status = wait_status(&mut follower, HANG);
    let got = held.finish();
    assert_eq!(status.code(), Some(124), "{how:?}: ends idle at last");
    assert_eq!(got.len(), 40_000_000, "{how:?}: every byte written");
    assert_eq!(
        sha(&got),
        sha_file(&big),
        "{how:?}: bytes out equal bytes in"
    );
}

#[test]
fn a_follower_waits_out_a_slow_server_while_stored_data_waits() {
    a_follower_never_times_out_while_stored_data_waits(HeldUp::Server);
}

#[test]
fn a_starved_follower_writes_what_waits_before_its_timeout() {
    a_follower_never_times_out_while_stored_data_waits(HeldUp::Starved);
}

#[test]
fn a_follower_behind_a_slow_stdout_writes_what_waits_before_its_timeout() {
    a_follower_never_times_out_while_stored_data_waits(HeldUp::Stdout);
}

/// A quiet living sender is not data waiting: the follower ends at its timeout.
#[test]
fn a_follower_of_a_quiet_living_sender_ends_at_its_timeout() {
    let b = Bench::new();
    let mut sender = b
        .cmd(&["send", "p"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .start();
    let mut stdin = sender.stdin.take().expect("stdin");
    stdin.write_all(b"one line, then silence\n").expect("write");
    let mut follower = b.spawn_recv(&["p", "--follow", "--timeout", "2s"]);
    follower.wait_stdout(23);
    let out = wait_output(follower, Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(124), "{}", stderr_of(&out));
    assert_eq!(out.stdout, b"one line, then silence\n");
    drop(stdin);
    assert_ok(&wait_output(sender, HANG));
}

#[test]
fn a_listener_held_up_by_its_stdout_writes_or_reports_every_payload() {
    let b = Bench::new();
    let mut listener = b.spawn_recv(&["p", "--listen", "--follow", "--timeout", "6s"]);
    let (err, err_reader) = collect_stderr(&mut listener);
    let late = read_late(&mut listener, Duration::from_secs(14));
    assert!(
        eventually(HANG, || data_consumers(&b.url()) > 0),
        "the listener listens"
    );
    // Its timeout only ends it; generous, so a loaded machine cannot end it early.
    let taker = b.spawn_recv(&["p", "--follow", "--timeout", "20s"]);
    wait_waiting(&b.url(), "p");
    let payloads = [
        numbered("X", 480_000), // 4.3 MB
        numbered("Y", 600_000), // 5.5 MB
        numbered("Z", 2_000),
    ];
    assert_ok(&b.send_bytes(&["p"], &payloads[0]));
    assert_ok(&b.send_bytes(&["p"], &payloads[1]));
    let (slow, feeder) = feed_paced(
        b.cmd(&["send", "p"]),
        payloads[2].clone(),
        2000,
        Duration::from_millis(20),
    );
    feeder.join().expect("feeder");
    assert_ok(&wait_output(slow, HANG));
    let status = wait_status(&mut listener, HANG);
    err_reader.join().expect("stderr");
    let got = late.join().expect("stdout");
    let err = err.lock().expect("stderr").clone();
    assert_eq!(status.code(), Some(124), "{err}");
    // Each payload is written whole, or reported: never dropped in silence.
    let counts = line_counts(&got);
    let mut not_whole = 0;
    for (tag, p) in ["X", "Y", "Z"].iter().zip(&payloads) {
        let lines = p.iter().filter(|&&c| c == b'\n').count();
        let seen = (0..lines)
            .filter(|i| counts.contains_key(&format!("{tag} {i}")))
            .count();
        if seen != lines {
            not_whole += 1;
        }
    }
    let reported = err.lines().filter(|l| l.contains("missed")).count();
    eprintln!(
        "listener: {} bytes written, {not_whole} payloads not whole, stderr: {err}",
        got.len()
    );
    assert!(
        reported >= not_whole,
        "{not_whole} payloads not written whole, {reported} reported: {err}"
    );
    let taken = wait_output(taker, HANG);
    assert_eq!(taken.status.code(), Some(124));
    assert_eq!(
        line_counts(&taken.stdout),
        line_counts(&payloads.concat()),
        "the taker gets everything: {}",
        stderr_of(&taken)
    );
}

#[test]
fn a_taker_whose_stdout_is_closed_takes_nothing() {
    let b = Bench::new();
    let out = shell(
        &b,
        "echo precious | \"$SKYPIPE\" send h && \"$SKYPIPE\" h >&-; echo \"exit $?\" >&2",
    )
    .output()
    .expect("bash");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("exit 2"), "{err}");
    assert!(err.contains("stdout is closed"), "{err}");
    let after = b.recv(&["h", "--timeout", "5s"]);
    assert_ok(&after);
    assert_eq!(after.stdout, b"precious\n");
}

#[test]
fn a_payload_with_an_unknown_seal_stays_for_a_newer_skypipe() {
    let b = Bench::new();
    let mut c = chunk(
        "p",
        "new0",
        0,
        b"",
        b"sealed by a newer skypipe",
        Some((1, b"sealed by a newer skypipe")),
    );
    c.1.retain(|(k, _)| *k != "Skypipe-Version");
    c.1.push(("Skypipe-Version", "2".into()));
    c.1.push(("Skypipe-Seal", "argon2id-64m-3t-4p+aes256gcm".into()));
    c.1.push(("Skypipe-Salt", "00".repeat(16)));
    c.1.push(("Skypipe-Key-Check", "00".repeat(16)));
    publish_raw(&b, vec![ticket("p", "new0"), c]);
    for _ in 0..2 {
        let out = b.recv(&["p", "--timeout", "5s"]);
        let err = stderr_of(&out);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains("upgrade"), "{err}");
        assert!(err.contains("left in the pipe"), "{err}");
        assert!(out.stdout.is_empty());
    }
    assert_eq!(
        queue_messages(&b.url()),
        1,
        "the ticket is still in the pipe"
    );
}

#[test]
fn ctrl_c_ends_a_taker_whose_stdout_is_stuck_and_gives_back_what_it_did_not_write() {
    let b = Bench::new();
    let data = random_bytes(3 << 20, 12);
    assert_ok(&b.send_bytes(&["p"], &data));
    let (mut stdout, writer) = std::io::pipe().expect("pipe");
    let watch = writer.try_clone().expect("pipe");
    let mut stuck = b
        .cmd(&["p"])
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(Stdio::piped())
        .start();
    wait_taken(&b.url(), "p");
    // Nobody reads its stdout; it is stuck in a write once the pipe (64 KiB) is full.
    assert!(
        eventually(HANG, || !has_room(&watch)),
        "the taker's stdout never filled"
    );
    drop(watch);
    signal(&stuck, Signal::SIGINT);
    let start = Instant::now();
    let status = wait_status(&mut stuck, HANG);
    let took = start.elapsed();
    let mut first = Vec::new();
    let _ = stdout.read_to_end(&mut first);
    assert_eq!(status.code(), Some(130));
    assert!(
        took < Duration::from_secs(3),
        "exited {took:?} after Ctrl-C"
    );
    let next = b.recv(&["p", "--timeout", "10s"]);
    // It resumed after what the first one wrote whole (exit 4, saying where), or, when that
    // was less than a chunk, took the payload from its start.
    let resumed = stderr_of(&next).contains("resumed at byte");
    let code = if resumed { 4 } else { 0 };
    assert_eq!(next.status.code(), Some(code), "{}", stderr_of(&next));
    // Nothing lost: the next taker writes what the first did not.
    assert!(data.starts_with(&first));
    assert!(data.ends_with(&next.stdout));
    assert!(first.len() + next.stdout.len() >= data.len(), "bytes lost");
}

/// A receiver whose stdout is /dev/null, opened however, waits and takes; one whose stdout is
/// really closed takes nothing (found: Python's `subprocess.DEVNULL`, which opens /dev/null
/// read-write, was refused as a closed stdout).
#[test]
fn a_receiver_writing_to_dev_null_waits_however_it_was_opened() {
    let b = Bench::new();
    let python = String::from(
        "python3 -c 'import subprocess, sys; \
         sys.exit(subprocess.run([sys.argv[1], \"recv\", \"go\"], \
         stdout=subprocess.DEVNULL).returncode)' \"$SKYPIPE\"",
    );
    let waiters = [
        python.clone(),
        format!("{python} <&-"),
        "\"$SKYPIPE\" recv go > /dev/null".to_string(),
        "\"$SKYPIPE\" recv go 1<>/dev/null".to_string(),
        "\"$SKYPIPE\" recv go 1<>/dev/null <&-".to_string(),
        "\"$SKYPIPE\" go 1<>/dev/null <&-".to_string(),
    ];
    for script in waiters {
        let waiter = shell(&b, &format!("{script}; echo \"exit $?\" >&2"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .start();
        wait_waiting(&b.url(), "go");
        assert_ok(&b.send_bytes(&["go"], b"\n"));
        let out = wait_output(waiter, HANG);
        let err = stderr_of(&out);
        assert!(err.contains("exit 0"), "{script}: {err}");
        // Taken: its ticket is gone from the work queue (and the pipe's consumer with the
        // taker that left).
        assert_eq!(queue_messages(&b.url()), 0, "{script}: taken");
    }
    // Really closed: nothing is taken, whatever stdin is.
    assert_ok(&b.send_bytes(&["go"], b"precious\n"));
    for script in [
        "\"$SKYPIPE\" recv go >&-",
        "\"$SKYPIPE\" recv go >&- <&-",
        "\"$SKYPIPE\" go >&- <&-",
    ] {
        let out = shell(&b, &format!("{script}; echo \"exit $?\" >&2"))
            .output()
            .expect("bash");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("exit 2"), "{script}: {err}");
        assert!(err.contains("stdout is closed"), "{script}: {err}");
    }
    let out = b.recv(&["go"]);
    assert_ok(&out);
    assert_eq!(out.stdout, b"precious\n", "the payload stayed in the pipe");
}

#[test]
fn a_follower_facing_a_paused_server_ends_at_its_timeout() {
    for round in 0..3 {
        let b = Bench::new();
        let follower = b.spawn_recv(&["p", "--follow", "--timeout", "3s"]);
        wait_waiting(&b.url(), "p");
        let start = Instant::now();
        b.server.pause().expect("SIGSTOP");
        let out = wait_output(follower, HANG);
        let took = start.elapsed();
        b.server.resume().expect("SIGCONT");
        assert_eq!(
            out.status.code(),
            Some(124),
            "round {round}: {}",
            stderr_of(&out)
        );
        assert!(
            took < Duration::from_secs(6),
            "round {round}: ended after {took:?}"
        );
    }
}

#[test]
fn a_short_sender_timeout_is_kept_and_said_as_it_is() {
    let b = Bench::new();
    let mut sender = b
        .cmd(&["send", "p"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .start();
    let mut stdin = sender.stdin.take().expect("stdin");
    stdin
        .write_all(b"a line, then the sender dies\n")
        .expect("write");
    let receiver = b.spawn_recv(&["p", "--sender-timeout", "2s"]);
    wait_taken(&b.url(), "p");
    signal(&sender, Signal::SIGKILL);
    let killed = Instant::now();
    let _ = sender.wait();
    drop(stdin);
    let out = wait_output(receiver, HANG);
    let took = killed.elapsed();
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("for 2s"), "{err}");
    // Presence goes stale after 3 s; then 2 s of silence; checked four times a second.
    assert!(
        took < Duration::from_secs(8),
        "gave up {took:?} after the sender died"
    );
}

#[test]
fn a_sender_facing_a_paused_server_ends_at_its_timeout() {
    for round in 0..3 {
        let b = Bench::new();
        let mut sender = b
            .cmd(&["--send", "p", "--timeout", "4s"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .start();
        let mut stdin = sender.stdin.take().expect("stdin");
        stdin.write_all(b"the first line\n").expect("write");
        // Readiness: the payload is in the pipe (its ticket is stored).
        assert!(
            eventually(HANG, || queue_messages(&b.url()) == 1),
            "ticket stored"
        );
        b.server.pause().expect("SIGSTOP");
        let start = Instant::now();
        let feeder = std::thread::spawn(move || {
            for _ in 0..100 {
                if stdin.write_all(&[b'x'; 65536]).is_err() {
                    return;
                }
            }
        });
        let out = wait_output(sender, HANG);
        let took = start.elapsed();
        b.server.resume().expect("SIGCONT");
        feeder.join().expect("feeder");
        let err = stderr_of(&out);
        assert_eq!(out.status.code(), Some(1), "round {round}: {err}");
        assert!(err.contains("did not answer"), "round {round}: {err}");
        assert!(
            took < Duration::from_secs(8),
            "round {round}: ended after {took:?}"
        );
    }
}
