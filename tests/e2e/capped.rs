//! A full store met mid-payload: the account's storage limit (JetStream error 10002) or the
//! server's, waited out like a full stream; a sender that gives up, fails or is stopped by
//! SIGTERM or SIGINT while it waits marks its payload aborted, so a later taker gets the
//! abort at once (exit 3) and never a corrupt or half payload it waits on.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::harness::*;

/// A server whose one account may store `max_file` of JetStream files (a plain config
/// account limit, as a hosted account has), and the URL that logs in to it.
fn account_capped(max_file: &str) -> (Bench, String) {
    let b = Bench::with(|c| {
        c.extra = format!(
            "accounts {{\n  PIPES {{\n    jetstream {{ max_file: {max_file}, max_mem: 16M }}\n    \
             users: [ {{ user: piper, password: s3cret }} ]\n  }}\n}}\n"
        );
    });
    let url = b.url().replacen("://", "://piper:s3cret@", 1);
    (b, url)
}

/// `skypipe ARGS` logged in to the capped account.
fn as_piper(b: &Bench, url: &str, args: &[&str]) -> Command {
    let mut c = b.cmd(args);
    c.env("NATS_URL", url);
    c
}

/// A sender of the file `input` on `pipe`, its stderr piped.
fn spawn_sender(mut cmd: Command, input: &std::path::Path) -> Proc {
    cmd.stdin(Stdio::from(std::fs::File::open(input).expect("open input")))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .start()
}

/// A taker that comes after its sender ended: it must get the abort at once (exit 3),
/// saying how many bytes it wrote, with nothing corrupt, and not wait on the payload.
fn assert_taker_gets_the_abort(mut cmd: Command) {
    let started = Instant::now();
    let out = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .start()
        .wait_output(Duration::from_secs(30));
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the taker waited {:?} on an aborted payload: {err}",
        started.elapsed()
    );
    assert!(err.contains("aborted by its sender"), "{err}");
    assert!(!err.contains("corrupt"), "{err}");
    let said = format!("the {} bytes that arrived were written", out.stdout.len());
    assert!(
        err.contains(&said),
        "wrote {} bytes: {err}",
        out.stdout.len()
    );
}

#[test]
fn a_sender_reaching_the_accounts_storage_limit_waits_for_a_taker_to_drain_it() {
    let (b, url) = account_capped("100M");
    let input = b.path("input");
    random_file(&input, 210 * 1000 * 1000, 31);
    let mut sender = spawn_sender(as_piper(&b, &url, &["send", "capped"]), &input);
    sender.wait_stderr("waiting for takers to drain it");
    assert!(
        matches!(sender.try_wait(), Ok(None)),
        "the sender ended instead of waiting"
    );
    let output = b.path("output");
    let taker = spawn_to_file(&mut as_piper(&b, &url, &["recv", "capped"]), &output);
    let taken = taker.wait_output(HANG);
    assert!(taken.status.success(), "{}", stderr_of(&taken));
    let sent = sender.wait_output(HANG);
    assert!(sent.status.success(), "{}", stderr_of(&sent));
    assert_eq!(sha_file(&output), sha_file(&input));
}

#[test]
fn a_sender_whose_account_stays_full_gives_up_at_its_timeout_and_marks_the_payload_aborted() {
    let (b, url) = account_capped("100M");
    let input = b.path("input");
    random_file(&input, 210 * 1000 * 1000, 32);
    let sender = spawn_sender(
        as_piper(&b, &url, &["send", "capped", "--timeout", "3s"]),
        &input,
    );
    let out = sender.wait_output(HANG);
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let last = err.trim().lines().last().unwrap_or_default();
    assert!(
        last.contains("stayed full for 3s") && last.contains("marked aborted"),
        "{err}"
    );
    // The default sender timeout is 60 s: a taker that waited on the payload would show.
    assert_taker_gets_the_abort(as_piper(&b, &url, &["recv", "capped"]));
}

/// Creates the data stream before skypipe does, as `adjust` makes it (skypipe uses a stream
/// it finds as it is).
fn own_data_stream(b: &Bench, adjust: impl FnOnce(&mut async_nats::jetstream::stream::Config)) {
    let mut config = async_nats::jetstream::stream::Config {
        name: "skypipe-data".into(),
        subjects: vec!["skypipe.data.>".into()],
        allow_message_ttl: true,
        discard: async_nats::jetstream::stream::DiscardPolicy::New,
        ..Default::default()
    };
    adjust(&mut config);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let client = async_nats::connect(b.url()).await.expect("connect");
        let js = async_nats::jetstream::new(client);
        js.create_stream(config)
            .await
            .expect("create the data stream");
    });
}

#[test]
fn a_chunk_refused_for_another_cause_marks_the_payload_aborted() {
    let b = Bench::new();
    // A data stream that refuses chunks of a full 256 KiB (its messages may be 64 KiB):
    // the ticket is stored, the chunks are not.
    own_data_stream(&b, |c| c.max_message_size = 64 * 1024);
    let input = b.path("input");
    random_file(&input, 2 * MIB, 33);
    let out = spawn_sender(b.cmd(&["send", "refused"]), &input).wait_output(HANG);
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("marked aborted"), "{err}");
    assert_taker_gets_the_abort(b.cmd(&["recv", "refused"]));
}

/// A sender waiting on a full store (the server's) ends at once on `sig`, exit 130, and its
/// payload is marked aborted.
fn a_waiting_sender_ends_at(sig: Signal) {
    let b = Bench::with(|c| c.max_file_store = Some(16 * MIB as u64));
    let input = b.path("input");
    random_file(&input, 48 * MIB, 34);
    let mut sender = spawn_sender(b.cmd(&["send", "stopped"]), &input);
    sender.wait_stderr("waiting for takers to drain it");
    signal(&sender, sig);
    let out = sender.wait_output(Duration::from_secs(3));
    assert_eq!(out.status.code(), Some(130), "{}", stderr_of(&out));
    assert_taker_gets_the_abort(b.cmd(&["recv", "stopped"]));
}

#[test]
fn a_sender_waiting_on_a_full_store_ends_at_sigterm_and_marks_its_payload_aborted() {
    a_waiting_sender_ends_at(Signal::SIGTERM);
}

#[test]
fn a_sender_waiting_on_a_full_store_ends_at_sigint_and_marks_its_payload_aborted() {
    a_waiting_sender_ends_at(Signal::SIGINT);
}

#[test]
fn a_sender_waiting_on_the_accounts_storage_limit_ends_at_sigterm() {
    let (b, url) = account_capped("100M");
    let input = b.path("input");
    random_file(&input, 210 * 1000 * 1000, 35);
    let mut sender = spawn_sender(as_piper(&b, &url, &["send", "capped"]), &input);
    sender.wait_stderr("waiting for takers to drain it");
    signal(&sender, Signal::SIGTERM);
    let out = sender.wait_output(Duration::from_secs(3));
    assert_eq!(out.status.code(), Some(130), "{}", stderr_of(&out));
    assert_taker_gets_the_abort(as_piper(&b, &url, &["recv", "capped"]));
}

#[test]
fn a_store_too_full_for_the_abort_mark_gets_it_in_place_of_the_payload() {
    let b = Bench::new();
    // A data stream that holds 5 messages and refuses more as full: the abort mark does not
    // fit after the 5 chunks stored, so it replaces them.
    own_data_stream(&b, |c| c.max_messages = 5);
    let input = b.path("input");
    random_file(&input, 2 * MIB, 36);
    let sender = spawn_sender(b.cmd(&["send", "brim", "--timeout", "2s"]), &input);
    let out = sender.wait_output(HANG);
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("stayed full for 2s") && err.contains("marked aborted"),
        "{err}"
    );
    assert_eq!(
        data_messages(&b.url()),
        1,
        "only the abort mark stays stored"
    );
    assert_taker_gets_the_abort(b.cmd(&["recv", "brim"]));
}

#[test]
fn a_payload_bigger_than_its_stream_flows_through_a_waiting_taker_in_order() {
    // Stored, not live: the data stream holds about 7.5 MiB, the payload is 20 MB, and the
    // taker makes room as it writes while the sender's later chunks are already on their way.
    let b = Bench::new();
    let input = b.path("input");
    random_file(&input, 20 * 1000 * 1000, 32);
    let output = b.path("output");
    let taker = spawn_to_file(
        b.cmd(&["-v", "--max-bytes", "8MiB", "recv", "small"])
            .env("SKYPIPE_LIVE", "off"),
        &output,
    )
    .ready(&waiting("small"));
    let mut send = b.cmd(&["--max-bytes", "8MiB", "--timeout", "30s", "send", "small"]);
    send.env("SKYPIPE_LIVE", "off");
    let sent = wait_output(spawn_sender(send, &input), HANG);
    assert_ok(&sent);
    assert_ok(&wait_output(taker, HANG));
    assert_eq!(sha_file(&output), sha_file(&input), "every byte, in order");
}
