//! Older servers: the core cases against a nats-server from before per-message TTL (2.9 and
//! 2.10; Debian ships 2.9.10). The binary comes from `SKYPIPE_COMPAT_NATS_SERVER`, else
//! Debian's package when it is installed (`scripts/test` unpacks it under target/tools/ and names
//! it there, installing nothing); without one, each test
//! says why it did nothing and passes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::harness::*;

/// Names the old `nats-server` binary to test against.
const COMPAT_ENV: &str = "SKYPIPE_COMPAT_NATS_SERVER";

/// Where Debian's `nats-server` package puts the binary (and where some builds put it).
const DISTRO_PATHS: [&str; 2] = ["/usr/sbin/nats-server", "/usr/bin/nats-server"];

/// Whether `version` is older than 2.11, the first release with per-message TTL.
fn before_ttl(version: &str) -> bool {
    let mut parts = version.split(['.', '-']).map(|p| p.parse::<u64>().ok());
    matches!(
        (parts.next(), parts.next()),
        (Some(Some(2)), Some(Some(minor))) if minor < 11
    )
}

/// The old server to test against, or why there is none.
fn old_server() -> Result<(PathBuf, String), String> {
    if let Some(path) = std::env::var_os(COMPAT_ENV).filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        let version = skypipe_nats::binary_version(&path)
            .unwrap_or_else(|e| panic!("{COMPAT_ENV}={}: {e}", path.display()));
        // Set on purpose, so a server that is not old is a mistake, not a reason to skip.
        assert!(
            before_ttl(&version),
            "{COMPAT_ENV}={} is nats-server {version}, not one older than 2.11",
            path.display()
        );
        return Ok((path, version));
    }
    for candidate in DISTRO_PATHS.map(Path::new) {
        if let Ok(version) = skypipe_nats::binary_version(candidate) {
            if before_ttl(&version) {
                return Ok((candidate.to_path_buf(), version));
            }
        }
    }
    Err(format!(
        "no nats-server older than 2.11 found (set {COMPAT_ENV}, or `apt-get install \
         nats-server` for Debian's 2.9.10 in {})",
        DISTRO_PATHS[0]
    ))
}

/// A bench on the old server, or `None` after saying why the test is skipped.
fn old_bench(test: &str) -> Option<(Bench, String)> {
    match old_server() {
        Ok((binary, version)) => {
            let b = Bench::with(|c| c.binary = Some(binary));
            Some((b, version))
        }
        Err(why) => {
            eprintln!("compat::{test} skipped: {why}");
            None
        }
    }
}

#[test]
fn before_ttl_reads_versions() {
    assert!(before_ttl("2.9.10"));
    assert!(before_ttl("2.10.22"));
    assert!(!before_ttl("2.11.0"));
    assert!(!before_ttl("2.15.1"));
    assert!(!before_ttl("3.0.0"));
    assert!(!before_ttl(""));
}

#[test]
fn stored_payloads_round_trip_in_order_on_an_old_server() {
    let Some((b, _)) = old_bench("stored_payloads_round_trip_in_order_on_an_old_server") else {
        return;
    };
    let first = b.file("a", &random_bytes(700_000, 31));
    let second = b.file("b", b"second payload\n");
    let sent = b.send_file(&["files"], &first);
    assert_ok(&sent);
    assert!(
        sent.stderr.is_empty(),
        "no warning without --ttl: {}",
        stderr_of(&sent)
    );
    assert_ok(&b.send_file(&["files"], &second));
    let out = b.recv(&["files"]);
    assert_ok(&out);
    assert_eq!(sha(&out.stdout), sha_file(&first));
    let out = b.recv(&["files"]);
    assert_ok(&out);
    assert_eq!(out.stdout, b"second payload\n");
    let out = b.recv(&["files", "--timeout", "1s"]);
    assert_eq!(out.status.code(), Some(124), "{}", stderr_of(&out));
    assert!(out.stdout.is_empty());
}

#[test]
fn a_waiting_receiver_gets_a_live_transfer_from_an_old_server() {
    let Some((b, _)) = old_bench("a_waiting_receiver_gets_a_live_transfer_from_an_old_server")
    else {
        return;
    };
    let data = random_bytes(3_000_000, 32);
    let receiver = b.spawn_ready(&["live"], &waiting("live"));
    assert_ok(&b.send_bytes(&["live"], &data));
    let out = wait_output(receiver, HANG);
    assert_ok(&out);
    assert_eq!(sha(&out.stdout), sha(&data));
}

#[test]
fn a_trigger_wakes_a_waiter_on_an_old_server() {
    let Some((b, _)) = old_bench("a_trigger_wakes_a_waiter_on_an_old_server") else {
        return;
    };
    let waiter = b.spawn_ready(&["go"], &waiting("go"));
    assert_ok(&b.send_bytes(&["go"], b"\n"));
    let out = wait_output(waiter, HANG);
    assert_ok(&out);
    assert_eq!(out.stdout, b"\n");
}

#[test]
fn ttl_on_an_old_server_is_one_warning_and_the_payload_arrives() {
    let Some((b, version)) =
        old_bench("ttl_on_an_old_server_is_one_warning_and_the_payload_arrives")
    else {
        return;
    };
    let data = random_bytes(400_000, 33);
    let sent = b.send_bytes(&["kept", "--ttl", "1h"], &data);
    assert_ok(&sent);
    let err = stderr_of(&sent);
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(err.contains("warning"), "{err}");
    assert!(err.contains("2.11"), "says which version has it: {err}");
    assert!(err.contains(&version), "names the server's version: {err}");
    assert!(err.contains("--ttl"), "{err}");
    let out = b.recv(&["kept"]);
    assert_ok(&out);
    assert_eq!(sha(&out.stdout), sha(&data));
    assert!(out.stderr.is_empty(), "receiver: {}", stderr_of(&out));
    // The streams fell back to an age limit, so payloads still expire.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let ages = rt.block_on(async {
        let client = async_nats::connect(b.url()).await.expect("connect");
        let js = async_nats::jetstream::new(client);
        let mut ages = Vec::new();
        for name in ["skypipe-data", "skypipe-queue"] {
            let mut stream = js.get_stream(name).await.expect("stream");
            ages.push(stream.info().await.expect("info").config.max_age);
        }
        ages
    });
    assert!(
        ages.iter().all(|a| *a == Duration::from_secs(24 * 60 * 60)),
        "{ages:?}"
    );
}

#[test]
fn check_warns_that_an_old_server_has_no_per_message_ttl() {
    let Some((b, version)) = old_bench("check_warns_that_an_old_server_has_no_per_message_ttl")
    else {
        return;
    };
    let out = b.recv(&["check"]);
    assert_ok(&out);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let line = text
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some("version"))
        .unwrap_or_else(|| panic!("a version line: {text}"));
    assert!(line.starts_with("warn"), "{text}");
    assert!(line.contains(&version), "{line}");
    assert!(line.contains("2.11") && line.contains("TTL"), "{line}");
    assert!(!text.lines().any(|l| l.starts_with("FAIL")), "{text}");
}
