//! Looking after pipes: `skypipe ls` (and `--json`), `peek` and `rm`.

use std::io::Write as _;
use std::process::{Output, Stdio};

use super::harness::*;

const SECRET: &str = "correct horse battery staple";

/// `skypipe ls --json`, parsed; the entry of each pipe by name.
fn ls_json(b: &Bench, login: &[&str]) -> serde_json::Map<String, serde_json::Value> {
    let out = b.recv(&[login, &["ls", "--json"]].concat());
    assert_ok(&out);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    report["pipes"]
        .as_array()
        .expect("a list of pipes")
        .iter()
        .map(|p| (p["pipe"].as_str().expect("a name").to_string(), p.clone()))
        .collect()
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn ls_and_ls_json_show_what_waits_and_who_listens() {
    let b = Bench::new();
    assert_ok(&b.send_bytes(&["files"], &random_bytes(700_000, 3)));
    assert_ok(&b.send_bytes(&["files"], b"ab\n"));
    assert_ok(&b.send_bytes(&["empty-one"], b""));
    let listener = b.spawn_ready(&["tapped", "--listen"], &listening("tapped"));

    let pipes = ls_json(&b, &[]);
    let files = &pipes["files"];
    assert_eq!(files["payloads_waiting"], 2, "{files}");
    assert_eq!(files["bytes_stored"], 700_003, "{files}");
    assert!(files["oldest_waiting_seconds"].is_u64(), "{files}");
    assert_eq!(files["takers"], 0, "{files}");
    let empty = &pipes["empty-one"];
    assert_eq!(empty["payloads_waiting"], 1, "{empty}");
    assert_eq!(empty["bytes_stored"], 0, "{empty}");
    let tapped = &pipes["tapped"];
    assert_eq!(tapped["listeners"], 1, "{tapped}");
    assert_eq!(tapped["payloads_waiting"], 0, "{tapped}");

    let out = b.recv(&["ls"]);
    assert_ok(&out);
    let table = text(&out);
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().expect("a header").split_whitespace().collect();
    assert_eq!(
        header,
        [
            "PIPE",
            "WAITING",
            "BYTES",
            "OLDEST",
            "SENDERS",
            "TAKERS",
            "LISTENERS"
        ]
    );
    let row = |name: &str| -> Vec<String> {
        table
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("a row for {name}: {table}"))
            .split_whitespace()
            .map(str::to_string)
            .collect()
    };
    let files = row("files");
    assert_eq!(files[1], "2", "{table}");
    assert_eq!(files[2..4], ["700", "kB"], "one unit style: {table}");
    assert_eq!(row("empty-one")[1], "1", "{table}");
    assert_eq!(
        row("tapped").last().map(String::as_str),
        Some("1"),
        "{table}"
    );
    drop(listener);

    // Taken, a pipe is gone from the list.
    assert_ok(&b.recv(&["files"]));
    assert_ok(&b.recv(&["files"]));
    assert!(!ls_json(&b, &[]).contains_key("files"));
}

#[test]
fn peek_leaves_the_payload_for_the_next_taker_byte_for_byte() {
    let b = Bench::new();
    let first = random_bytes(3_000_000, 44);
    assert_ok(&b.send_bytes(&["p"], &first));
    assert_ok(&b.send_bytes(&["p"], b"second\n"));
    for _ in 0..2 {
        let out = b.recv(&["peek", "p"]);
        assert_ok(&out);
        assert_eq!(sha(&out.stdout), sha(&first));
    }
    let taken = b.recv(&["p"]);
    assert_ok(&taken);
    assert_eq!(sha(&taken.stdout), sha(&first));
    let out = b.recv(&["peek", "p"]);
    assert_ok(&out);
    assert_eq!(out.stdout, b"second\n");
    assert_ok(&b.recv(&["p"]));
    // An empty pipe: one line, exit 1.
    let out = b.recv(&["peek", "p"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    assert!(stderr_of(&out).contains("no payload waits in pipe p"));
    assert!(out.stdout.is_empty());

    // Sealed: opened with the secret, refused without it, and left for the taker either way.
    let sealed = random_bytes(500_000, 45);
    let mut send = b.cmd(&["send", "s"]);
    send.env("SKYPIPE_SECRET", SECRET);
    let f = b.file("sealed", &sealed);
    let out = send
        .stdin(Stdio::from(std::fs::File::open(&f).expect("open")))
        .output()
        .expect("send");
    assert_ok(&out);
    let out = b.recv(&["peek", "s"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    assert!(stderr_of(&out).contains("encrypted"), "{}", stderr_of(&out));
    assert!(out.stdout.is_empty());
    let mut peek = b.cmd(&["peek", "s"]);
    peek.env("SKYPIPE_SECRET", SECRET);
    let out = peek.output().expect("peek");
    assert_ok(&out);
    assert_eq!(sha(&out.stdout), sha(&sealed));
    let mut take = b.cmd(&["s"]);
    take.env("SKYPIPE_SECRET", SECRET);
    let out = take.output().expect("take");
    assert_ok(&out);
    assert_eq!(sha(&out.stdout), sha(&sealed));
}

#[test]
fn rm_empties_the_pipe_and_a_waiting_receiver_is_not_hurt() {
    let b = Bench::new();
    assert_ok(&b.send_bytes(&["p"], &random_bytes(1_000_000, 8)));
    assert_ok(&b.send_bytes(&["p"], b"two\n"));
    // Not at a terminal: no question.
    let out = b.recv(&["rm", "p"]);
    assert_ok(&out);
    assert!(
        stderr_of(&out).contains("dropped 2 payload(s)"),
        "{}",
        stderr_of(&out)
    );
    assert_eq!(queue_messages(&b.url()), 0, "no ticket is left");
    assert_eq!(data_messages(&b.url()), 0, "no chunk is left");
    assert!(!ls_json(&b, &[]).contains_key("p"));
    let out = b.recv(&["p", "--timeout", "1s"]);
    assert_eq!(out.status.code(), Some(124), "{}", stderr_of(&out));

    // A receiver waiting on the pipe goes on waiting, and gets what comes next.
    let waiter = b.spawn_ready(&["p"], &waiting("p"));
    let out = b.recv(&["rm", "--yes", "p"]);
    assert_ok(&out);
    assert!(
        stderr_of(&out).contains("no payload waits"),
        "{}",
        stderr_of(&out)
    );
    assert_ok(&b.send_bytes(&["p"], b"after\n"));
    let got = wait_output(waiter, HANG);
    assert_ok(&got);
    assert_eq!(got.stdout, b"after\n");
}

#[test]
fn rm_at_a_terminal_asks_first() {
    let b = Bench::new();
    assert_ok(&b.send_bytes(&["p"], b"keep me\n"));
    let ask = |answer: &[u8]| -> Output {
        let pty = nix::pty::openpty(None, None).expect("openpty");
        let tty = std::fs::File::from(pty.slave);
        let child = b
            .cmd(&["rm", "p"])
            .stdin(Stdio::from(tty.try_clone().expect("dup")))
            .stdout(Stdio::piped())
            .stderr(Stdio::from(tty))
            .start();
        let mut term = std::fs::File::from(pty.master);
        term.write_all(answer).expect("answer");
        wait_output(child, HANG)
    };
    let out = ask(b"n\n");
    assert_eq!(out.status.code(), Some(1));
    let out = b.recv(&["peek", "p"]);
    assert_ok(&out);
    assert_eq!(out.stdout, b"keep me\n", "not dropped");
    let out = ask(b"y\n");
    assert_ok(&out);
    assert_eq!(queue_messages(&b.url()), 0, "dropped");
}

#[test]
fn rm_leaves_a_payload_a_taker_holds_to_its_taker() {
    let b = Bench::new();
    let held_payload = random_bytes(2_000_000, 81);
    assert_ok(&b.send_bytes(&["p"], &held_payload));
    assert_ok(&b.send_bytes(&["p"], b"waiting\n"));
    // A taker holds the first payload, its stdout not read past 100 kB.
    let mut taker = b.spawn_recv(&["p"]);
    let reader = Held::new(&mut taker, 100_000);
    reader.wait_first();
    wait_taken(&b.url(), "p");
    let out = b.recv(&["rm", "p"]);
    assert_ok(&out);
    let err = stderr_of(&out);
    assert!(err.contains("dropped 1 payload(s)"), "{err}");
    assert!(err.contains("1 held by takers"), "{err}");
    // The taker gets its payload whole; the one that waited is gone.
    let got = reader.finish();
    assert_ok(&wait_output(taker, HANG));
    assert_eq!(sha(&got), sha(&held_payload));
    let out = b.recv(&["p", "--timeout", "1s"]);
    assert_eq!(out.status.code(), Some(124), "{}", stderr_of(&out));
}

#[test]
fn peek_says_when_a_payload_is_still_being_sent_or_was_aborted() {
    let b = Bench::new();
    // Still being sent: what is stored is written, then exit 1, saying so.
    let mut sender = b
        .cmd(&["-v", "send", "live"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .start();
    let mut stdin = sender.stdin.take().expect("stdin");
    stdin.write_all(b"first line\n").expect("write");
    stdin.flush().expect("flush");
    sender.wait_for(&queued("live"));
    let out = b.recv(&["peek", "live"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    assert!(
        stderr_of(&out).contains("still being sent"),
        "{}",
        stderr_of(&out)
    );
    assert_eq!(out.stdout, b"first line\n");
    // Aborted by its sender (Ctrl-C): exit 3, as a taker would.
    interrupt(&sender);
    assert_eq!(wait_status(&mut sender, HANG).code(), Some(130));
    drop(stdin);
    let out = b.recv(&["peek", "live"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr_of(&out));
    assert!(stderr_of(&out).contains("aborted"), "{}", stderr_of(&out));
    assert_eq!(out.stdout, b"first line\n");
}

#[test]
fn rm_racing_takers_never_cuts_a_payload_a_taker_was_handed() {
    let b = Bench::new();
    let payloads: Vec<Vec<u8>> = (0..40).map(|i| random_bytes(512 * 1024, 900 + i)).collect();
    for p in &payloads {
        let f = b.file("payload", p);
        assert_ok(&b.send_file(&["rr"], &f));
    }
    let sent: std::collections::HashSet<String> = payloads.iter().map(|p| sha(p)).collect();
    // Three workers take until the pipe stays empty for 2 s, while `rm` runs over and over.
    let workers: Vec<_> = (0..3)
        .map(|_| {
            let cmd = {
                let mut c = b.cmd(&["recv", "rr", "--timeout", "2s", "--sender-timeout", "5s"]);
                c.stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped());
                c
            };
            std::thread::spawn(move || {
                let mut cmd = cmd;
                let mut got = Vec::new();
                loop {
                    let out = cmd.start().wait_output(HANG);
                    if out.status.code() == Some(124) {
                        return got;
                    }
                    got.push(out);
                }
            })
        })
        .collect();
    // `rm` races takers that are taking.
    wait_taken(&b.url(), "rr");
    let until = std::time::Instant::now() + std::time::Duration::from_secs(3);
    let mut rms = Vec::new();
    while std::time::Instant::now() < until {
        rms.push(b.recv(&["rm", "rr", "--yes"]));
    }
    let mut taken = 0;
    for w in workers {
        for out in w.join().expect("worker") {
            assert_ok(&out);
            assert!(
                sent.contains(&sha(&out.stdout)),
                "a taker wrote {} bytes that are no payload sent whole",
                out.stdout.len()
            );
            taken += 1;
        }
    }
    eprintln!("{taken} payloads taken, the rest dropped");
    // Racing the takers is no error for `rm`, and it says what it did.
    for out in &rms {
        assert_ok(out);
        let err = stderr_of(out);
        assert!(
            err.contains("dropped") || err.contains("no payload waits"),
            "{err}"
        );
    }
    assert_eq!(queue_messages(&b.url()), 0, "no ticket is left");
    assert_eq!(data_messages(&b.url()), 0, "no chunk is left");
}

#[test]
fn rm_drops_what_waits_behind_a_payload_given_back_part_way_and_leaves_that_one_first() {
    let b = Bench::new();
    let first = random_bytes(3_000_000, 82);
    assert_ok(&b.send_bytes(&["p"], &first));
    assert_ok(&b.send_bytes(&["p"], b"waiting\n"));
    // A taker writes part of the first payload, is interrupted, and gives the rest back: its
    // ticket is handed out again before any other.
    let mut taker = b.spawn_recv(&["p"]);
    let reader = Held::new(&mut taker, 600_000);
    reader.wait_first();
    interrupt(&taker);
    assert_eq!(wait_status(&mut taker, HANG).code(), Some(130));
    let one = reader.finish();
    let out = b.recv(&["rm", "p"]);
    assert_ok(&out);
    let err = stderr_of(&out);
    assert!(err.contains("dropped 1 payload(s)"), "{err}");
    // The rest of the first payload is still first in line; the one behind it is gone.
    let two = b.recv(&["p"]);
    assert_resumed_rest(&one, &two, &first);
    let out = b.recv(&["p", "--timeout", "1s"]);
    assert_eq!(out.status.code(), Some(124), "{}", stderr_of(&out));
}
