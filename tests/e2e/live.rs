//! The live path (docs/protocol.md, "The live path"): a taker already waiting gets a payload's
//! chunks over core NATS, acknowledging what it wrote, and the server stores almost none of
//! it; every guarantee still holds when the taker, the sender, the server or the network
//! fails, and a taker that does not ask gets the payload stored.

use std::process::Stdio;
use std::time::Duration;

use super::harness::*;

fn kill9(child: &Proc) {
    signal(child, nix::sys::signal::Signal::SIGKILL);
}

/// A sender (`-v`) fed `data` in 1 MiB blocks, `pause` apart.
fn paced(
    b: &Bench,
    pipe: &str,
    data: Vec<u8>,
    pause: Duration,
) -> (Proc, std::thread::JoinHandle<()>) {
    feed_paced(b.cmd(&["-v", "send", pipe]), data, MIB, pause)
}

#[test]
fn a_waiting_taker_gets_the_payload_live_and_the_server_stores_almost_none_of_it() {
    let b = Bench::new();
    let input = b.path("input");
    random_file(&input, 64 * MIB, 41);
    let output = b.path("output");
    let receiver =
        spawn_to_file(&mut b.cmd(&["-v", "recv", "wire"]), &output).ready(&waiting("wire"));
    let sender = b
        .cmd(&["-v", "send", "wire"])
        .stdin(Stdio::from(std::fs::File::open(&input).expect("open")))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .start();
    let sent = wait_output(sender, HANG);
    assert_ok(&sent);
    assert_ok(&wait_output(receiver, HANG));
    assert_eq!(sha_file(&output), sha_file(&input));
    assert!(went_live(&sent), "{}", stderr_of(&sent));
    // Of 256 chunks of 256 KiB, the store saw the first (with the ticket), the last, and those
    // sent before the taker's request arrived (the sender does not wait for one): a few
    // milliseconds' worth.
    let stored = data_stored_ever(&b.url());
    assert!(stored <= 64, "{stored} chunks went through the store");
    assert_eq!(data_messages(&b.url()), 0, "nothing is left behind");
}

#[test]
fn a_taker_that_does_not_ask_gets_the_payload_stored() {
    let b = Bench::new();
    let data = random_bytes(8 * MIB, 42);
    let receiver = b
        .cmd(&["-v", "recv", "plain"])
        .env("SKYPIPE_LIVE", "off")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .start()
        .ready(&waiting("plain"));
    let (sender, feeder) = paced(&b, "plain", data.clone(), Duration::from_millis(5));
    feeder.join().expect("feeder");
    let sent = wait_output(sender, HANG);
    assert_ok(&sent);
    let out = wait_output(receiver, HANG);
    assert_ok(&out);
    assert_eq!(sha(&out.stdout), sha(&data));
    assert!(!went_live(&sent), "{}", stderr_of(&sent));
    let stored = data_stored_ever(&b.url());
    assert!(stored >= 32, "every chunk went through the store: {stored}");
}

#[test]
fn a_taker_killed_on_the_live_path_leaves_exactly_the_rest_to_the_next_one() {
    let b = Bench::new();
    let data = random_bytes(40 * MIB, 43);
    let mut first = b.spawn_ready(&["recv", "handover"], &waiting("handover"));
    let (sender, feeder) = paced(&b, "handover", data.clone(), Duration::from_millis(20));
    let held = Held::new(&mut first, 8 * MIB);
    held.wait_first();
    // Killed while live: it cannot tell the sender it stops.
    kill9(&first);
    assert_eq!(
        wait_status(&mut first, HANG).code(),
        None,
        "killed by a signal"
    );
    let one = held.finish();
    assert!(
        one.len() >= 8 * MIB && one.len() < data.len(),
        "{}",
        one.len()
    );
    assert_eq!(sha(&one), sha(&data[..one.len()]), "the first got a prefix");
    // The sender stores what the dead taker did not acknowledge, and the rest.
    feeder.join().expect("feeder");
    let sent = wait_output(sender, HANG);
    assert_ok(&sent);
    let err = stderr_of(&sent);
    assert!(went_live(&sent), "{err}");
    assert!(err.contains("went quiet"), "{err}");
    // The ticket comes back after its ack wait (30 s); this receiver waits for it.
    let two = b.recv(&["handover"]);
    assert_resumed_rest(&one, &two, &data);
}

#[test]
fn a_taker_interrupted_on_the_live_path_hands_the_rest_over_at_once() {
    let b = Bench::new();
    let data = random_bytes(24 * MIB, 44);
    let mut first = b.spawn_ready(&["recv", "relay"], &waiting("relay"));
    let (sender, feeder) = paced(&b, "relay", data.clone(), Duration::from_millis(20));
    first.wait_stdout(4 * MIB);
    interrupt(&first);
    let one = wait_output(first, HANG);
    assert_eq!(one.status.code(), Some(130), "{}", stderr_of(&one));
    // No ack wait: the next taker gets the ticket at once and resumes after what was written.
    let two = b.recv(&["relay"]);
    feeder.join().expect("feeder");
    let sent = wait_output(sender, HANG);
    assert_ok(&sent);
    assert!(went_live(&sent), "{}", stderr_of(&sent));
    assert_eq!(two.status.code(), Some(4), "{}", stderr_of(&two));
    assert_eq!(
        sha(&[one.stdout.as_slice(), two.stdout.as_slice()].concat()),
        sha(&data),
        "between them every byte once, in order"
    );
}

#[test]
fn a_sender_killed_on_the_live_path_is_reported_gone() {
    let b = Bench::new();
    let data = random_bytes(32 * MIB, 45);
    let mut receiver = b.spawn_ready(
        &["recv", "cutoff", "--sender-timeout", "3s"],
        &waiting("cutoff"),
    );
    let (sender, _feeder) = paced(&b, "cutoff", data.clone(), Duration::from_millis(100));
    receiver.wait_stdout(3 * MIB);
    kill9(&sender);
    let sent = wait_output(sender, HANG);
    assert!(went_live(&sent), "{}", stderr_of(&sent));
    let out = wait_output(receiver, HANG);
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("stopped") && err.contains("incomplete"),
        "{err}"
    );
    assert!(out.stdout.len() >= 3 * MIB && out.stdout.len() < data.len());
    assert_eq!(sha(&out.stdout), sha(&data[..out.stdout.len()]));
}

#[test]
fn listeners_and_a_follower_see_live_payloads_whole() {
    let b = Bench::new();
    let listener = b.spawn_ready(
        &["news", "--listen", "--follow", "--timeout", "3s"],
        &listening("news"),
    );
    let taker = b.spawn_ready(&["news", "--follow", "--timeout", "3s"], &following("news"));
    let p1 = numbered("first", 200_000);
    let p2 = numbered("second", 150_000);
    for p in [&p1, &p2] {
        let (sender, feeder) = paced(&b, "news", p.clone(), Duration::from_millis(10));
        feeder.join().expect("feeder");
        let sent = wait_output(sender, HANG);
        assert_ok(&sent);
        assert!(went_live(&sent), "{}", stderr_of(&sent));
    }
    let want = sha(&[p1.as_slice(), p2.as_slice()].concat());
    let out = wait_output(listener, HANG);
    assert_eq!(out.status.code(), Some(124), "{}", stderr_of(&out));
    assert_eq!(sha(&out.stdout), want, "listener output");
    let out = wait_output(taker, HANG);
    assert_eq!(out.status.code(), Some(124), "{}", stderr_of(&out));
    assert_eq!(sha(&out.stdout), want, "follower output");
}

/// What a forger claims the stopped taker wrote, from the taker's last word.
enum Forged {
    /// Far more chunks than were sent.
    NeverSent,
    /// Three chunks more than the taker wrote, once the sender did send them.
    WithinSent,
}

/// A taker held up after 4 MiB of a live payload is stopped; a client of the prefix (any login
/// may read and publish there) republishes the taker's last word with a forged count, and the
/// taker is killed. The next taker resumes within what the dead one wrote: nothing between is
/// lost unsaid.
fn a_forged_acknowledgement(pipe: &str, seed: u64, forged: Forged) {
    use futures::StreamExt as _;
    let b = Bench::new();
    let data = random_bytes(40 * MIB, seed);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let client = rt.block_on(async_nats::connect(b.url())).expect("connect");
    let mut acks = rt
        .block_on(client.subscribe(format!("skypipe.live.{pipe}.*.ack")))
        .expect("subscribe");
    let mut chunks = rt
        .block_on(client.subscribe(format!("skypipe.live.{pipe}.*")))
        .expect("subscribe");
    rt.block_on(client.flush()).expect("flush");
    let mut first = b.spawn_ready(&["recv", pipe], &waiting(pipe));
    let (sender, feeder) = paced(&b, pipe, data.clone(), Duration::from_millis(20));
    // The taker stops reading after 4 MiB, so it stops writing and acknowledging there.
    let held = Held::new(&mut first, 4 * MIB);
    held.wait_first();
    // Held up, then stopped: the taker's last word is the last one heard. (Quick: 2 s
    // without a word and the sender leaves the live path by itself.)
    signal(&first, nix::sys::signal::Signal::SIGSTOP);
    let mut last = rt.block_on(acks.next()).expect("the taker acknowledges");
    while let Ok(Some(m)) =
        rt.block_on(async { tokio::time::timeout(Duration::from_millis(200), acks.next()).await })
    {
        last = m;
    }
    let header = |m: &async_nats::Message, name: &str| -> u64 {
        m.headers
            .as_ref()
            .and_then(|h| h.get(name))
            .and_then(|v| v.as_str().parse().ok())
            .unwrap_or(0)
    };
    let count = match forged {
        Forged::NeverSent => 1_000_000,
        Forged::WithinSent => {
            // A count the sender did send (a live chunk numbered that high came by), but that
            // the taker did not write.
            let count = header(&last, "Skypipe-Written") + 3;
            loop {
                let m = rt
                    .block_on(async { tokio::time::timeout(HANG, chunks.next()).await })
                    .expect("live chunks within the hang limit")
                    .expect("live chunks");
                if header(&m, "Skypipe-Chunk") >= count {
                    break count;
                }
            }
        }
    };
    let mut headers = last.headers.clone().expect("headers");
    headers.insert("Skypipe-Written", count.to_string().as_str());
    rt.block_on(client.publish_with_headers(last.subject.clone(), headers, "".into()))
        .expect("forge");
    rt.block_on(client.flush()).expect("flush");
    kill9(&first);
    assert_eq!(
        wait_status(&mut first, HANG).code(),
        None,
        "killed by a signal"
    );
    let one = held.finish();
    assert_eq!(sha(&one), sha(&data[..one.len()]), "the first got a prefix");
    feeder.join().expect("feeder");
    let sent = wait_output(sender, HANG);
    assert_ok(&sent);
    assert!(went_live(&sent), "{}", stderr_of(&sent));
    let two = b.recv(&[pipe]);
    assert_resumed_rest(&one, &two, &data);
}

#[test]
fn a_forged_acknowledgement_of_chunks_never_sent_loses_nothing() {
    a_forged_acknowledgement("forged", 46, Forged::NeverSent);
}

#[test]
fn a_forged_acknowledgement_within_what_was_sent_loses_nothing() {
    a_forged_acknowledgement("within", 47, Forged::WithinSent);
}
