//! A hub and a leaf node in one account, with JetStream domains: a leaf without JetStream
//! reaching the hub's pipes (`--js-domain`), and a leaf with JetStream of its own never
//! making a second home for a prefix's pipes, where each payload would be taken twice.

use std::process::{Command, Output, Stdio};

use super::harness::*;

/// Runs a skypipe command with `data` on stdin.
fn send(mut cmd: Command, data: &[u8]) -> Output {
    let (child, writer) = spawn_with_input(cmd.stdout(Stdio::piped()), data);
    let out = child.wait_output(HANG);
    writer.join().expect("writer");
    out
}

#[test]
fn a_leaf_without_jetstream_reaches_the_hubs_pipes_with_its_domain() {
    let both = HubAndLeaf::start(false);

    // Leaf to hub, the domain given as a flag.
    let data = random_bytes(700 * 1024, 71);
    let out = send(both.leaf_cmd(&["send", "up", "--js-domain", "hub"]), &data);
    assert_ok(&out);
    let out = run_to_end(both.hub_cmd(&["recv", "up"]));
    assert_ok(&out);
    assert_eq!(
        sha(&out.stdout),
        sha(&data),
        "the hub's taker got the leaf's bytes"
    );

    // Hub to leaf, the domain given in the environment.
    let data = random_bytes(300 * 1024, 72);
    assert_ok(&send(both.hub_cmd(&["send", "down"]), &data));
    let mut taker = both.leaf_cmd(&["recv", "down"]);
    taker.env("NATS_JS_DOMAIN", "hub");
    let out = run_to_end(taker);
    assert_ok(&out);
    assert_eq!(
        sha(&out.stdout),
        sha(&data),
        "the leaf's taker got the hub's bytes"
    );

    // Without the domain the leaf has no JetStream, and says what to give.
    let out = run_to_end(both.leaf_cmd(&["recv", "down", "--timeout", "2s"]));
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    assert!(
        stderr_of(&out).contains("--js-domain"),
        "{}",
        stderr_of(&out)
    );
}

#[test]
fn check_on_a_leaf_passes_and_names_the_hubs_domain() {
    let both = HubAndLeaf::start(false);
    let out = run_to_end(both.leaf_cmd(&["check", "--js-domain", "hub"]));
    assert_ok(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("all checks passed"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("ok") && l.contains("jetstream") && l.contains("domain hub")),
        "{text}"
    );
    assert!(
        text.lines().any(|l| l.starts_with("ok")
            && l.contains("domain")
            && l.contains("JetStream domain hub")),
        "{text}"
    );
    // The probe's messages are gone again.
    assert_eq!(
        HubAndLeaf::stream_messages(&both.hub, "skypipe-data"),
        Some(0)
    );
}

#[test]
fn setup_on_a_leaf_saves_the_domain_and_later_commands_use_it() {
    let both = HubAndLeaf::start(false);
    let out = run_to_end(both.cmd(&["setup", "-s", &both.leaf_url(), "--js-domain", "hub"]));
    assert_ok(&out);
    let context = std::fs::read_to_string(both.home().join(".config/nats/context/skypipe.json"))
        .expect("setup wrote the context");
    let context: serde_json::Value = serde_json::from_str(&context).expect("JSON");
    assert_eq!(context["jetstream_domain"], "hub", "{context}");

    // Nothing named on the command line: the saved context reaches the hub through the leaf.
    let data = random_bytes(200 * 1024, 73);
    assert_ok(&send(both.cmd(&["send", "saved"]), &data));
    let out = run_to_end(both.hub_cmd(&["recv", "saved"]));
    assert_ok(&out);
    assert_eq!(sha(&out.stdout), sha(&data));
}

#[test]
fn with_the_hub_down_a_leaf_client_names_the_domain_and_waits_for_it() {
    let mut both = HubAndLeaf::start(false);
    both.stop_hub();

    // Given up after the retry time, naming the domain.
    let mut quick = both.leaf_cmd(&["recv", "p", "--js-domain", "hub"]);
    quick.env("SKYPIPE_RETRY_FOR", "2s");
    let out = run_to_end(quick);
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    let text = stderr_of(&out);
    assert!(
        text.contains("JetStream domain hub does not answer") && text.contains("for 2s"),
        "{text}"
    );

    // Back within the retry time: the command goes on and takes the payload.
    let mut taker = both.leaf_cmd(&["recv", "p", "--js-domain", "hub"]);
    taker.env("SKYPIPE_RETRY_FOR", "60s");
    let mut taker = taker
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .start();
    taker.wait_stderr("JetStream domain hub does not answer");
    both.restart_hub();
    let data = random_bytes(100 * 1024, 74);
    assert_ok(&send(both.hub_cmd(&["send", "p"]), &data));
    let out = taker.wait_output(HANG);
    assert_ok(&out);
    assert_eq!(sha(&out.stdout), sha(&data));
}

/// A hub and a leaf with JetStream of its own, each with skypipe's streams of prefix
/// `skypipe` (made while they were apart, as older skypipes made them through a leaf node).
fn two_homes() -> HubAndLeaf {
    let mut both = HubAndLeaf::start(true);
    assert_ok(&run_to_end(both.hub_cmd(&["check"])));
    both.stop_hub();
    assert_ok(&run_to_end(both.leaf_cmd(&["check"])));
    both.restart_hub();
    // The hub's JetStream answers a moment after its clients are let in.
    assert!(eventually(HANG, || HubAndLeaf::stream_messages(
        &both.hub,
        "skypipe-queue"
    )
    .is_some()));
    assert!(HubAndLeaf::stream_messages(&both.leaf, "skypipe-queue").is_some());
    both
}

#[test]
fn a_payload_is_never_taken_in_two_domains() {
    let both = two_homes();
    let data = random_bytes(50 * 1024, 81);
    let sent = send(both.hub_cmd(&["send", "once"]), &data);
    let on_hub = run_to_end(both.hub_cmd(&["recv", "once", "--timeout", "3s"]));
    let on_leaf = run_to_end(both.leaf_cmd(&["recv", "once", "--timeout", "3s"]));
    let copies = [&on_hub, &on_leaf]
        .iter()
        .filter(|o| o.status.success() && sha(&o.stdout) == sha(&data))
        .count();
    assert!(copies <= 1, "the payload was taken {copies} times");
    // Refused with a message that names both domains, on either side.
    for out in [&sent, &on_leaf] {
        assert_eq!(out.status.code(), Some(1), "{}", stderr_of(out));
        let text = stderr_of(out);
        assert!(
            text.contains("JetStream domain hub") && text.contains("JetStream domain leaf"),
            "{text}"
        );
    }
    // check on either side finds the overlap.
    let out = run_to_end(both.leaf_cmd(&["check"]));
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with("FAIL") && l.contains("domain")),
        "{text}"
    );
}

#[test]
fn check_on_a_leaf_refuses_a_second_home_for_the_hubs_pipes() {
    let both = HubAndLeaf::start(true);
    let data = random_bytes(10 * 1024, 82);
    assert_ok(&send(both.hub_cmd(&["send", "p"]), &data));
    let out = run_to_end(both.leaf_cmd(&["check"]));
    assert_eq!(out.status.code(), Some(1), "check on the leaf must fail");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("use --js-domain hub"), "{text}");
    assert!(
        HubAndLeaf::stream_messages(&both.leaf, "skypipe-queue").is_none(),
        "check made a second set of streams on the leaf"
    );
    // What it says to do works: the hub's payload, taken through the leaf.
    let out = run_to_end(both.leaf_cmd(&["recv", "p", "--js-domain", "hub"]));
    assert_ok(&out);
    assert_eq!(sha(&out.stdout), sha(&data));
}

#[test]
fn a_send_on_the_hub_is_not_lost_in_the_leafs_streams() {
    let both = HubAndLeaf::start(true);
    // Only the leaf has streams of prefix skypipe.
    assert_ok(&run_to_end(both.leaf_cmd(&["check"])));
    assert!(HubAndLeaf::stream_messages(&both.hub, "skypipe-queue").is_none());
    let data = random_bytes(20 * 1024, 83);
    let out = send(both.hub_cmd(&["send", "p"]), &data);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a send whose payload no hub taker finds must fail: {}",
        stderr_of(&out)
    );
    assert!(
        stderr_of(&out).contains("--js-domain leaf"),
        "{}",
        stderr_of(&out)
    );
    // Nothing of it (nor of the probe) waits on the leaf.
    assert_eq!(
        HubAndLeaf::stream_messages(&both.leaf, "skypipe-queue"),
        Some(0)
    );
    assert_eq!(
        HubAndLeaf::stream_messages(&both.leaf, "skypipe-data"),
        Some(0)
    );
    // Sent to the domain it names, it arrives there.
    assert_ok(&send(
        both.hub_cmd(&["send", "p", "--js-domain", "leaf"]),
        &data,
    ));
    let out = run_to_end(both.leaf_cmd(&["recv", "p"]));
    assert_ok(&out);
    assert_eq!(sha(&out.stdout), sha(&data));
}

#[test]
fn a_sender_whose_ticket_lands_in_another_domain_fails_and_takes_it_back() {
    let both = HubAndLeaf::start(true);
    // The hub holds the prefix's chunks, but a queue stream made by hand on the leaf
    // captures its tickets.
    HubAndLeaf::create_stream(&both.hub, "skypipe-data", "skypipe.data.>", false);
    HubAndLeaf::create_stream(&both.leaf, "skypipe-queue", "skypipe.q.*", true);
    let data = random_bytes(4 * 1024, 84);
    let out = send(both.hub_cmd(&["send", "p"]), &data);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a send whose ticket no hub taker finds must fail: {}",
        stderr_of(&out)
    );
    let text = stderr_of(&out);
    assert!(
        text.contains("stored in JetStream domain leaf") && text.contains("--js-domain leaf"),
        "{text}"
    );
    // Its ticket is gone from the leaf again: no taker there waits on it.
    assert_eq!(
        HubAndLeaf::stream_messages(&both.leaf, "skypipe-queue"),
        Some(0)
    );
}
