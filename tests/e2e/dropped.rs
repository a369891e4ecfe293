//! A payload nobody can take any more while its sender still sends: dropped by `skypipe rm`,
//! or taken by a receiver whose output closed (`skypipe recv p | head -c 1000`). The sender
//! stops, removes what it stored of the payload, and says so (exit 141, like a writer to a
//! pipe whose reader went away): nothing of it holds the store until its TTL.

use std::io::Write as _;
use std::process::{ChildStdin, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::harness::*;

/// What a sender whose payload was dropped says.
const DROPPED: &str = "was dropped";

/// A sender (`-v`) on `pipe` whose stdin the test writes.
fn sender(b: &Bench, pipe: &str, live: bool) -> (Proc, ChildStdin) {
    let mut cmd = b.cmd(&["-v", "send", pipe]);
    if !live {
        cmd.env("SKYPIPE_LIVE", "off");
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .start();
    let stdin = child.stdin.take().expect("stdin");
    (child, stdin)
}

/// Goes on feeding `stdin` (256 KiB every 20 ms, 13 MB/s) until the sender stops reading it,
/// or for at most `limit`; then closes it.
fn feed_until_stopped(mut stdin: ChildStdin, limit: Duration) -> JoinHandle<u64> {
    std::thread::spawn(move || {
        let until = Instant::now() + limit;
        let mut fed = 0u64;
        let mut seed = 7;
        while Instant::now() < until {
            seed += 1;
            if stdin.write_all(&random_bytes(256 * 1024, seed)).is_err() {
                break;
            }
            fed += 256 * 1024;
            // The scenario: a sender still being fed, as from a slow producer.
            std::thread::sleep(Duration::from_millis(20));
        }
        fed
    })
}

#[track_caller]
fn assert_dropped(sent: &std::process::Output) {
    let err = stderr_of(sent);
    assert_eq!(sent.status.code(), Some(141), "{err}");
    assert!(err.contains(DROPPED), "{err}");
}

#[test]
fn rm_during_a_send_stops_the_sender_and_nothing_of_it_stays_stored() {
    let b = Bench::new();
    let (mut sending, mut stdin) = sender(&b, "p", true);
    stdin.write_all(&random_bytes(2 * MIB, 5)).expect("write");
    sending.wait_for(&queued("p"));
    let out = b.recv(&["rm", "p", "--yes"]);
    assert_ok(&out);
    assert!(
        stderr_of(&out).contains("dropped 1 payload(s)"),
        "{}",
        stderr_of(&out)
    );
    let feeder = feed_until_stopped(stdin, Duration::from_secs(15));
    let sent = sending.wait_output(HANG);
    let fed = feeder.join().expect("feeder");
    assert_dropped(&sent);
    assert!(fed < 150 * MIB as u64, "it stopped reading, fed {fed}");
    assert_eq!(data_messages(&b.url()), 0, "no chunk is left");
    assert_eq!(queue_messages(&b.url()), 0, "no ticket is left");
}

/// `skypipe recv big | head -c 1000` while `big` is still being sent.
fn a_taker_that_stops_reading_early_leaves_nothing_stored(live: bool) {
    let b = Bench::new();
    let mut cmd = b.cmd(&["-v", "recv", "big"]);
    if !live {
        cmd.env("SKYPIPE_LIVE", "off");
    }
    let mut taker = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .start()
        .ready(&waiting("big"));
    let (sending, mut stdin) = sender(&b, "big", live);
    stdin.write_all(&random_bytes(MIB, 6)).expect("write");
    // The reader reads 1000 bytes and goes away; the taker takes the payload and ends.
    let mut stdout = taker.stdout.take().expect("stdout");
    let mut head = vec![0u8; 1000];
    assert_eq!(read_up_to(&mut stdout, &mut head), 1000);
    drop(stdout);
    assert_ok(&taker.wait_output(HANG));
    // The sender, still fed, learns that no one will take the rest.
    let feeder = feed_until_stopped(stdin, Duration::from_secs(15));
    let sent = sending.wait_output(HANG);
    feeder.join().expect("feeder");
    assert_dropped(&sent);
    assert_eq!(data_messages(&b.url()), 0, "no chunk is left");
    assert_eq!(queue_messages(&b.url()), 0, "no ticket is left");
}

#[test]
fn a_live_taker_that_stops_reading_early_leaves_nothing_stored() {
    a_taker_that_stops_reading_early_leaves_nothing_stored(true);
}

#[test]
fn a_stored_taker_that_stops_reading_early_leaves_nothing_stored() {
    a_taker_that_stops_reading_early_leaves_nothing_stored(false);
}
