//! Listening in, log aggregation (`--follow`) and scripted coordination.

use std::collections::HashMap;
use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

use super::harness::*;

/// Lines of a payload named `tag`: "tag 0\n", "tag 1\n", ...
fn numbered(tag: &str, n: usize) -> Vec<u8> {
    (0..n)
        .flat_map(|i| format!("{tag} {i}\n").into_bytes())
        .collect()
}

#[test]
fn listeners_get_a_copy_and_the_taker_gets_what_it_would_alone() {
    let b = Bench::new();
    let listeners: Vec<_> = (0..3)
        .map(|_| {
            b.spawn_ready(
                &["news", "--listen", "--follow", "--timeout", "3s"],
                &listening("news"),
            )
        })
        .collect();
    let taker = b.spawn_ready(&["news", "--follow", "--timeout", "3s"], &following("news"));
    let p1 = random_bytes(1_500_000, 21);
    let p2 = random_bytes(700_001, 22);
    assert_ok(&b.send_bytes(&["news"], &p1));
    assert_ok(&b.send_bytes(&["news"], &p2));
    let want = sha(&[p1.as_slice(), p2.as_slice()].concat());
    for l in listeners {
        let out = wait_output(l, HANG);
        assert_eq!(out.status.code(), Some(124), "{}", stderr_of(&out));
        assert_eq!(sha(&out.stdout), want, "listener output");
    }
    let out = wait_output(taker, HANG);
    assert_eq!(out.status.code(), Some(124), "{}", stderr_of(&out));
    assert_eq!(sha(&out.stdout), want, "taker output");
    // Listening took nothing and left nothing behind.
    let after = b.recv(&["news", "--timeout", "1s"]);
    assert_eq!(after.status.code(), Some(124));
}

#[test]
fn a_listener_without_follow_exits_at_the_first_end() {
    let b = Bench::new();
    let listener = b.spawn_ready(&["one", "--listen"], &listening("one"));
    assert_ok(&b.send_bytes(&["one"], b"first\n"));
    let out = wait_output(listener, HANG);
    assert_ok(&out);
    assert_eq!(out.stdout, b"first\n");
    // The payload is still there for a taker.
    let taken = b.recv(&["one"]);
    assert_ok(&taken);
    assert_eq!(taken.stdout, b"first\n");
}

#[test]
fn twenty_concurrent_senders_aggregate_whole_lines_in_order() {
    let b = Bench::new();
    let follower = b.spawn_ready(&["logs", "--follow", "--timeout", "4s"], &following("logs"));
    let senders: Vec<_> = (0..20)
        .map(|s| {
            let (child, mut stdin) = host(&b);
            let data = numbered(&format!("sender-{s:02} line"), 5000);
            let writer = std::thread::spawn(move || {
                // Written in odd-sized pieces so cuts can only keep lines whole by choice.
                for piece in data.chunks(4093) {
                    stdin.write_all(piece).expect("write");
                }
            });
            (child, writer)
        })
        .collect();
    for (child, writer) in senders {
        writer.join().expect("writer");
        assert_ok(&wait_output(child, HANG));
    }
    let out = wait_output(follower, HANG);
    assert_eq!(out.status.code(), Some(124), "{}", stderr_of(&out));
    let text = String::from_utf8(out.stdout).expect("utf8");
    let mut next: HashMap<String, usize> = HashMap::new();
    let mut lines = 0;
    for line in text.lines() {
        let (tag, n) = line.rsplit_once(' ').expect("a whole line");
        let n: usize = n.parse().expect("a whole number");
        let expected = next.entry(tag.to_string()).or_insert(0);
        assert_eq!(n, *expected, "{tag}: line {n} out of order or torn");
        *expected += 1;
        lines += 1;
    }
    assert_eq!(lines, 20 * 5000);
    assert_eq!(next.len(), 20);
    assert!(next.values().all(|n| *n == 5000));
}

#[test]
fn a_trigger_wakes_the_taker_and_every_listener() {
    let b = Bench::new();
    let plain = b.spawn_ready(&["go"], &waiting("go"));
    let l1 = b.spawn_ready(&["go", "--listen"], &listening("go"));
    let l2 = b.spawn_ready(&["go", "--listen"], &listening("go"));
    assert_ok(&b.send_bytes(&["go"], b"\n"));
    for child in [plain, l1, l2] {
        let out = wait_output(child, HANG);
        assert_ok(&out);
        assert_eq!(out.stdout, b"\n");
    }
}

#[test]
fn two_followers_share_ten_queued_payloads_exactly_once() {
    let b = Bench::new();
    for p in 0..10 {
        assert_ok(&b.send_bytes(&["jobs"], &numbered(&format!("job-{p}"), 2000)));
    }
    let f1 = b.spawn_recv(&["jobs", "--follow", "--timeout", "2s"]);
    let f2 = b.spawn_recv(&["jobs", "--follow", "--timeout", "2s"]);
    let o1 = wait_output(f1, HANG);
    let o2 = wait_output(f2, HANG);
    assert_eq!(o1.status.code(), Some(124), "{}", stderr_of(&o1));
    assert_eq!(o2.status.code(), Some(124), "{}", stderr_of(&o2));
    let mut count: HashMap<String, usize> = HashMap::new();
    for out in [&o1.stdout, &o2.stdout] {
        for line in String::from_utf8_lossy(out).lines() {
            *count.entry(line.to_string()).or_insert(0) += 1;
        }
    }
    assert_eq!(count.len(), 10 * 2000, "every line arrived");
    assert!(count.values().all(|n| *n == 1), "no line twice");
}

#[test]
fn an_interrupted_follower_leaves_the_rest_for_the_next_taker() {
    let b = Bench::new();
    let lines = numbered("slow", 300);
    let pieces = lines
        .split_inclusive(|c| *c == b'\n')
        .map(<[u8]>::to_vec)
        .collect::<Vec<_>>();
    let (sender, writer) = feed_pieces(b.cmd(&["send", "tail"]), pieces, Duration::from_millis(8));
    let mut first = b.spawn_recv(&["tail", "--follow"]);
    // Interrupted midway, once it wrote some of the lines.
    first.wait_stdout(numbered("slow", 10).len());
    interrupt(&first);
    let o1 = wait_output(first, HANG);
    assert_eq!(o1.status.code(), Some(130), "{}", stderr_of(&o1));
    let second = b.spawn_recv(&["tail", "--follow", "--timeout", "3s"]);
    writer.join().expect("writer");
    assert_ok(&wait_output(sender, HANG));
    let o2 = wait_output(second, HANG);
    assert_eq!(o2.status.code(), Some(124), "{}", stderr_of(&o2));
    assert!(!o1.stdout.is_empty(), "the first follower took some lines");
    let both = [o1.stdout.as_slice(), o2.stdout.as_slice()].concat();
    assert_eq!(
        String::from_utf8_lossy(&both),
        String::from_utf8_lossy(&lines),
        "between them every byte once, in order"
    );
}

#[test]
fn progress_lines_appear_only_when_asked_and_quiet_silences() {
    let b = Bench::new();
    let f = b.file("in", &random_bytes(3_000_000, 9));
    let out = b.send_file(&["prog", "--progress"], &f);
    assert_ok(&out);
    let err = stderr_of(&out);
    assert!(err.contains("sent"), "{err}");
    let out = b.recv(&["prog", "-q"]);
    assert_ok(&out);
    assert!(out.stderr.is_empty(), "{}", stderr_of(&out));
    let out = b.send_file(&["prog"], &f);
    assert_ok(&out);
    assert!(
        out.stderr.is_empty(),
        "no progress without a terminal: {}",
        stderr_of(&out)
    );
}

/// A small payload taken (and removed) while a listener is still busy writing an earlier one
/// reaches the listener all the same: it rides whole in its ticket. (Seen first as a rare
/// failure of the trigger test under load: the taker removed the stored copy before the
/// listener's consumer read it, and the listener reported the payload as missed.) Here the
/// listener's stdout is held, so it asks the server for no more chunks, while a held taker
/// keeps the big payload stored and a second taker takes and removes the small one.
#[test]
fn a_small_payload_taken_while_a_listener_is_busy_still_reaches_it() {
    let b = Bench::new();
    let mut listener = b.spawn_ready(
        &["tap", "--listen", "--follow", "--timeout", "5s"],
        &listening("tap"),
    );
    let listened = Held::new(&mut listener, 1024);
    let mut first = b.spawn_ready(&["--recv", "tap"], &waiting("tap"));
    let taken_first = Held::new(&mut first, 1024);
    let big = numbered("big", 2_000_000);
    assert_ok(&b.send_bytes(&["tap"], &big));
    listened.wait_first();
    taken_first.wait_first();
    let small = b"small payload, one chunk\n".to_vec();
    assert_ok(&b.send_bytes(&["tap"], &small));
    let taken = b.recv(&["--recv", "tap"]);
    assert_ok(&taken);
    assert_eq!(taken.stdout, small);

    let got = listened.finish();
    assert_eq!(sha(&taken_first.finish()), sha(&big));
    assert_ok(&first.wait_output(HANG));
    let out = listener.wait_output(HANG);
    assert_eq!(out.status.code(), Some(124), "{}", stderr_of(&out));
    assert!(!stderr_of(&out).contains("missed"), "{}", stderr_of(&out));
    // Every line once; the big payload's in order, the small one somewhere among them.
    let text = String::from_utf8_lossy(&got).into_owned();
    let small_line = String::from_utf8_lossy(&small).trim_end().to_string();
    assert_eq!(
        text.lines().filter(|l| *l == small_line).count(),
        1,
        "the small payload"
    );
    let rest: Vec<&str> = text.lines().filter(|l| *l != small_line).collect();
    let want = String::from_utf8_lossy(&big).into_owned();
    assert_eq!(rest, want.lines().collect::<Vec<_>>());
}

/// A host's `skypipe send logs`, its stdin left open for lines to come.
fn host(b: &Bench) -> (Proc, std::process::ChildStdin) {
    let mut child = b
        .cmd(&["send", "logs"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .start();
    let stdin = child.stdin.take().expect("stdin");
    (child, stdin)
}

/// Whether `text` holds `line` as a line of its own.
fn has_line(text: &[u8], line: &str) -> bool {
    String::from_utf8_lossy(text).lines().any(|l| l == line)
}

#[test]
fn a_quiet_host_does_not_hold_back_the_hosts_after_it() {
    let b = Bench::new();
    let mut follower = b.spawn_ready(&["logs", "--follow", "--timeout", "3s"], &following("logs"));
    // The first host writes one line, then nothing for a long time (a quiet log).
    let (quiet, mut quiet_in) = host(&b);
    quiet_in.write_all(b"quiet first\n").expect("write");
    follower.wait_stdout_until("the quiet host's line", |t| has_line(t, "quiet first"));
    // Twenty hosts after it each write a line: out while the first stays quiet.
    let hosts: Vec<_> = (0..20)
        .map(|i| {
            let (child, mut stdin) = host(&b);
            stdin
                .write_all(format!("host {i}\n").as_bytes())
                .expect("write");
            (child, stdin)
        })
        .collect();
    follower.wait_stdout_until("every host's line", |t| {
        (0..20).all(|i| has_line(t, &format!("host {i}")))
    });
    quiet_in.write_all(b"quiet last\n").expect("write");
    drop(quiet_in);
    for (child, stdin) in hosts {
        drop(stdin);
        assert_ok(&child.wait_output(HANG));
    }
    assert_ok(&quiet.wait_output(HANG));
    let out = follower.wait_output(HANG);
    assert_eq!(out.status.code(), Some(124), "{}", stderr_of(&out));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut lines: Vec<&str> = text.lines().collect();
    lines.sort();
    let mut want = vec!["quiet first".to_string(), "quiet last".to_string()];
    want.extend((0..20).map(|i| format!("host {i}")));
    want.sort();
    assert_eq!(lines, want);
}

#[test]
fn sixty_hosts_into_one_follower_every_line_once_and_soon() {
    // A fleet CI can afford: sixty hosts, each a live stream of twenty lines at five a second,
    // into one follower that stamps each line as it reads it.
    const HOSTS: usize = 60;
    const LINES: usize = 20;
    let b = Bench::new();
    let mut follower = b.spawn_ready(&["logs", "--follow", "--timeout", "3s"], &following("logs"));
    let stdout = follower.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .map(|l| (std::time::Instant::now(), l))
            .collect::<Vec<_>>()
    });
    let mut hosts: Vec<_> = (0..HOSTS).map(|_| host(&b)).collect();
    let mut sent = HashMap::new();
    for n in 0..LINES {
        for (h, (_, stdin)) in hosts.iter_mut().enumerate() {
            let line = format!("host {h} line {n}");
            stdin
                .write_all(format!("{line}\n").as_bytes())
                .expect("write");
            sent.insert(line, std::time::Instant::now());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    for (child, stdin) in hosts {
        drop(stdin);
        assert_ok(&child.wait_output(HANG));
    }
    let out = follower.wait_output(HANG);
    assert_eq!(out.status.code(), Some(124), "{}", stderr_of(&out));
    let got = reader.join().expect("reader");
    let mut seen = HashMap::new();
    let mut latest = Duration::ZERO;
    for (at, line) in &got {
        let sent_at = sent
            .get(line)
            .unwrap_or_else(|| panic!("a line nobody sent, or torn: {line:?}"));
        *seen.entry(line.clone()).or_insert(0) += 1;
        latest = latest.max(at.saturating_duration_since(*sent_at));
    }
    assert_eq!(seen.len(), HOSTS * LINES, "every line");
    assert!(seen.values().all(|n| *n == 1), "no line twice");
    assert!(
        latest < Duration::from_secs(10),
        "a line came {latest:?} after it was written"
    );
}
