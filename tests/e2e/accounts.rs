//! Hosted NATS accounts: an operator-mode server with JWT accounts (tests/e2e/operator.rs),
//! the user logging in with a `.creds` file; limits flat or per replica tier, with or without
//! a byte limit required of every stream.

use std::process::{Command, Output, Stdio};

use super::harness::*;
use super::operator::{Account, OperatorBench};

const MIB: i64 = 1024 * 1024;

fn stdout_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The line of `skypipe check`'s report about `what`.
fn check_line(out: &Output, what: &str) -> String {
    stdout_of(out)
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some(what))
        .unwrap_or_else(|| panic!("no {what} line: {}", stdout_of(out)))
        .to_string()
}

/// Sends `data` on `pipe` and takes it back, byte for byte.
fn round_trip(b: &OperatorBench, pipe: &str, data: &[u8]) {
    let sent = b.send_bytes(&[pipe], data);
    assert_ok(&sent);
    let got = b.recv(&[pipe]);
    assert_ok(&got);
    assert_eq!(sha(&got.stdout), sha(data), "bytes of pipe {pipe}");
}

/// `monitor --json`'s `server.storage_available`.
fn storage_available(b: &OperatorBench) -> serde_json::Value {
    let out = b.recv(&["monitor", "--json"]);
    assert_ok(&out);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    report["server"]["storage_available"].clone()
}

#[test]
fn a_tiered_account_passes_check_setup_and_monitor_by_its_r1_tier() {
    let b = OperatorBench::new(Account::tiered().disk(200 * MIB));
    let check = b.recv(&["check"]);
    assert_ok(&check);
    let storage = check_line(&check, "storage");
    assert!(storage.starts_with("ok"), "{storage}");
    assert!(storage.contains("of 210 MB"), "{storage}");
    assert!(storage.contains("tier R1"), "{storage}");

    round_trip(&b, "tiered", &random_bytes(2_000_000, 1));
    let data = random_bytes(3_000_000, 2);
    assert_ok(&b.send_bytes(&["parked"], &data));
    let used = b.account_info()["tiers"]["R1"]["storage"]
        .as_u64()
        .expect("the tier's use");
    assert!(used >= 3_000_000, "{used}");
    assert_eq!(
        storage_available(&b),
        serde_json::Value::from(200 * MIB as u64 - used)
    );

    let setup = b.recv(&["setup", "--name", "hosted"]);
    assert_ok(&setup);
    assert!(
        stdout_of(&setup).contains("saved context \"hosted\""),
        "{}",
        stdout_of(&setup)
    );
}

/// An account that requires a byte limit of every stream, flat or in its R1 tier: skypipe's
/// streams get a share of its storage, pipes work and `check` says what it chose.
fn a_byte_limit_is_chosen(account: Account) {
    let b = OperatorBench::new(account.disk(100 * MIB).max_bytes_required());
    let check = b.recv(&["check"]);
    assert_ok(&check);
    let streams = check_line(&check, "streams");
    // Half of the 100 MiB free (52.4 MB): 49.2 MB for chunks, 3.3 MB for tickets.
    assert!(
        streams.contains("byte limit 49.2 MB for data and 3.3 MB for tickets"),
        "{streams}"
    );
    assert_eq!(b.stream_max_bytes("skypipe-data"), 50 * MIB - 50 * MIB / 16);
    assert_eq!(b.stream_max_bytes("skypipe-queue"), 50 * MIB / 16);
    round_trip(&b, "limited", &random_bytes(5_000_000, 3));
    round_trip(&b, "small", b"a line\n");
}

#[test]
fn a_flat_account_that_requires_a_byte_limit_gets_one() {
    a_byte_limit_is_chosen(Account::flat());
}

#[test]
fn a_tiered_account_that_requires_a_byte_limit_gets_one() {
    a_byte_limit_is_chosen(Account::tiered());
}

#[test]
fn max_bytes_sets_the_streams_limit_and_setup_saves_it() {
    // The account requires nothing: the flag still sets the limit.
    let b = OperatorBench::new(Account::flat());
    let setup = b.recv(&["setup", "--name", "hosted", "--max-bytes", "64MiB"]);
    assert_ok(&setup);
    assert!(
        check_line(&setup, "streams").contains("--max-bytes 67.1 MB"),
        "{}",
        stdout_of(&setup)
    );
    assert_eq!(b.stream_max_bytes("skypipe-data"), 60 * MIB);
    assert_eq!(b.stream_max_bytes("skypipe-queue"), 4 * MIB);
    let ctx: serde_json::Value = serde_json::from_slice(
        &std::fs::read(b.path("home/.config/nats/context/hosted.json")).expect("context"),
    )
    .expect("JSON");
    assert_eq!(ctx["skypipe_max_bytes"], 64 * MIB, "{ctx}");
    round_trip(&b, "fits", &random_bytes(10_000_000, 4));
}

#[test]
fn a_stream_limit_is_named_as_such() {
    let b = OperatorBench::new(Account::flat().streams(1));
    let check = b.recv(&["check"]);
    assert_eq!(check.status.code(), Some(1), "{}", stdout_of(&check));
    let streams = check_line(&check, "streams");
    assert!(streams.contains("stream limit is reached"), "{streams}");
    assert!(streams.contains("skypipe needs 2 streams"), "{streams}");
    assert!(!streams.contains("permissions"), "{streams}");
    let sent = b.send_bytes(&["p"], b"x\n");
    assert!(!sent.status.success());
    let err = stderr_of(&sent);
    assert!(err.contains("stream limit is reached"), "{err}");
    assert!(!err.contains("permissions"), "{err}");
}

#[test]
fn a_byte_limit_beyond_the_account_names_its_storage() {
    let b = OperatorBench::new(Account::flat().disk(8 * MIB).max_bytes_required());
    let check = b.recv(&["check", "--max-bytes", "1GiB"]);
    assert_eq!(check.status.code(), Some(1), "{}", stdout_of(&check));
    let streams = check_line(&check, "streams");
    assert!(streams.contains("account's storage"), "{streams}");
    assert!(streams.contains("smaller --max-bytes"), "{streams}");
    assert!(!streams.contains("permissions"), "{streams}");
}

#[test]
fn a_byte_limit_beyond_the_accounts_per_stream_limit_is_named() {
    let b = OperatorBench::new(Account::flat().disk_max_stream_bytes(4 * MIB));
    let sent = b.send_bytes(&["--max-bytes", "64MiB", "p"], b"x\n");
    assert!(!sent.status.success());
    let err = stderr_of(&sent);
    assert!(
        err.contains("more than the account allows one stream"),
        "{err}"
    );
    assert!(!err.contains("permissions"), "{err}");
}

/// Everything a user does, on a flat operator-mode account, logged in by `login`.
fn everything(b: &OperatorBench, login: &dyn Fn(&[&str]) -> Command, tag: &str) {
    let cmd = |args: &[&str]| login(args);
    let pipe = |name: &str| format!("{tag}-{name}");
    // Stored.
    let data = random_bytes(3_000_000, 7);
    let stored = pipe("stored");
    let (sender, feeder) = spawn_with_input(cmd(&["send", &stored]).stdout(Stdio::piped()), &data);
    assert_ok(&sender.wait_output(HANG));
    feeder.join().expect("feeder");
    let got = run_to_end(cmd(&["recv", &stored]));
    assert_ok(&got);
    assert_eq!(sha(&got.stdout), sha(&data));
    // Live: a taker waits, the sender goes live to it.
    let live = pipe("live");
    let taker = cmd(&["-v", "recv", &live])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .start()
        .ready(&waiting(&live));
    let (sender, feeder) = spawn_with_input(cmd(&["send", &live]).stdout(Stdio::piped()), &data);
    let sent = sender.wait_output(HANG);
    feeder.join().expect("feeder");
    assert_ok(&sent);
    let got = taker.wait_output(HANG);
    assert_ok(&got);
    assert_eq!(sha(&got.stdout), sha(&data));
    // Listen and trigger: `echo | skypipe send go` wakes a taker and a listener.
    let go = pipe("go");
    let spawn_ready = |args: &[&str], line: &str| {
        cmd(&[&["-v"], args].concat())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .start()
            .ready(line)
    };
    let waiter = spawn_ready(&["recv", &go], &waiting(&go));
    let listener = spawn_ready(&["recv", &go, "--listen"], &listening(&go));
    let (s, f) = spawn_with_input(cmd(&["send", &go]).stdout(Stdio::piped()), b"\n");
    assert_ok(&s.wait_output(HANG));
    f.join().expect("feeder");
    for child in [waiter, listener] {
        let out = child.wait_output(HANG);
        assert_ok(&out);
        assert_eq!(out.stdout, b"\n");
    }
    // Follow: two payloads in order.
    let follow = pipe("follow");
    for n in 0..2 {
        let line = format!("payload {n}\n");
        let (s, f) = spawn_with_input(
            cmd(&["send", &follow]).stdout(Stdio::piped()),
            line.as_bytes(),
        );
        assert_ok(&s.wait_output(HANG));
        f.join().expect("feeder");
    }
    let followed = run_to_end(cmd(&["recv", &follow, "--follow", "--timeout", "2s"]));
    assert_eq!(
        followed.status.code(),
        Some(124),
        "{}",
        stderr_of(&followed)
    );
    assert_eq!(followed.stdout, b"payload 0\npayload 1\n");
    // ls, peek, rm.
    let kept = pipe("kept");
    let (s, f) = spawn_with_input(cmd(&["send", &kept]).stdout(Stdio::piped()), b"look\n");
    assert_ok(&s.wait_output(HANG));
    f.join().expect("feeder");
    let listed = run_to_end(cmd(&["ls", "--json"]));
    assert_ok(&listed);
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).expect("JSON");
    assert!(
        listed["pipes"]
            .as_array()
            .is_some_and(|p| p.iter().any(|p| p["pipe"] == kept.as_str())),
        "{listed}"
    );
    let peeked = run_to_end(cmd(&["peek", &kept]));
    assert_ok(&peeked);
    assert_eq!(peeked.stdout, b"look\n");
    assert_ok(&run_to_end(cmd(&["rm", "--yes", &kept])));
    let gone = run_to_end(cmd(&["recv", &kept, "--timeout", "1s"]));
    assert_eq!(gone.status.code(), Some(124), "{}", stderr_of(&gone));
    // Monitor.
    assert_ok(&run_to_end(cmd(&["monitor", "--once"])));
    let json = run_to_end(cmd(&["monitor", "--json"]));
    assert_ok(&json);
    let report: serde_json::Value = serde_json::from_slice(&json.stdout).expect("JSON");
    assert!(
        report["server"]["storage_available"]
            .as_u64()
            .is_some_and(|a| a > 0),
        "{report}"
    );
    // Check.
    let check = run_to_end(cmd(&["check"]));
    assert_ok(&check);
    assert!(stdout_of(&check).contains("all checks passed"));
    let _ = b;
}

#[test]
fn a_flat_operator_account_does_everything_with_creds_and_a_context() {
    let b = OperatorBench::new(Account::flat());
    // The creds file named on the command line.
    everything(&b, &|args| b.creds_cmd(args), "flag");
    // Saved as a context by setup, then used with nothing on the command line.
    let setup = run_to_end(b.creds_cmd(&["setup", "--name", "hosted"]));
    assert_ok(&setup);
    let home = b.path("home");
    everything(
        &b,
        &|args| {
            let mut c = bare_cmd(&home);
            c.args(args);
            c
        },
        "ctx",
    );
}
