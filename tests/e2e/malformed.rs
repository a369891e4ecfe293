//! Bad input on the wire: messages published straight onto skypipe's subjects by another NATS
//! client. The receiver reports the problem and exits non-zero (or, for harmless oddities,
//! delivers the right bytes); it never panics and never writes garbage as success.

use std::time::Duration;

use async_nats::HeaderMap;
use bytes::Bytes;

use super::harness::*;

/// A raw message: subject, headers, body.
pub(super) type Raw = (String, Vec<(&'static str, String)>, Vec<u8>);

/// Publishes raw messages through JetStream, creating skypipe's streams first (by running a
/// receiver that times out at once).
pub(super) fn publish_raw(b: &Bench, messages: Vec<Raw>) {
    let _ = b.recv(&["setup-streams", "--timeout", "10ms"]);
    let url = b.url();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async move {
        let client = async_nats::connect(url).await.expect("connect");
        let js = async_nats::jetstream::new(client.clone());
        for (subject, headers, body) in messages {
            let mut h = HeaderMap::new();
            for (k, v) in headers {
                h.insert(k, v.as_str());
            }
            js.publish_with_headers(subject, h, Bytes::from(body))
                .await
                .expect("publish")
                .await
                .expect("stored");
        }
        client.flush().await.expect("flush");
    });
}

pub(super) fn ticket(pipe: &str, id: &str) -> Raw {
    (
        format!("skypipe.q.{pipe}"),
        vec![("Skypipe-Version", "1".into()), ("Skypipe-Id", id.into())],
        vec![],
    )
}

/// A chunk with correct headers for `data` at `offset` after bytes `before`.
pub(super) fn chunk(
    pipe: &str,
    id: &str,
    n: u64,
    before: &[u8],
    data: &[u8],
    end: Option<(u64, &[u8])>,
) -> Raw {
    let mut h = vec![
        ("Skypipe-Version", "1".to_string()),
        ("Skypipe-Id", id.to_string()),
        ("Nats-Msg-Id", format!("{id}.{n}.{}", rand_suffix())),
        ("Skypipe-Chunk", n.to_string()),
        ("Skypipe-Offset", before.len().to_string()),
        (
            "Skypipe-Prior-Crc32",
            format!("{:08x}", crc32fast::hash(before)),
        ),
    ];
    if let Some((chunks, all)) = end {
        h.push(("Skypipe-End", "eof".into()));
        h.push(("Skypipe-Total-Chunks", chunks.to_string()));
        h.push(("Skypipe-Total-Bytes", all.len().to_string()));
        h.push((
            "Skypipe-Total-Crc32",
            format!("{:08x}", crc32fast::hash(all)),
        ));
    }
    (format!("skypipe.data.{pipe}.{id}"), h, data.to_vec())
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

fn assert_corrupt(out: &std::process::Output, needle: &str) {
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(out));
    let err = stderr_of(out);
    assert!(err.contains(needle), "expected {needle:?} in: {err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn a_payload_written_by_another_client_by_the_protocol_is_received() {
    let b = Bench::new();
    let all = b"hello from another client\n".to_vec();
    publish_raw(
        &b,
        vec![
            ticket("p", "aaaa"),
            chunk("p", "aaaa", 0, b"", &all[..6], None),
            chunk("p", "aaaa", 1, &all[..6], &all[6..], Some((2, &all))),
        ],
    );
    let out = b.recv(&["p"]);
    assert_ok(&out);
    assert_eq!(out.stdout, all);
}

#[test]
fn a_duplicated_chunk_is_written_once() {
    let b = Bench::new();
    let all = b"one two three\n".to_vec();
    publish_raw(
        &b,
        vec![
            ticket("p", "dup"),
            chunk("p", "dup", 0, b"", &all[..4], None),
            chunk("p", "dup", 0, b"", &all[..4], None),
            chunk("p", "dup", 1, &all[..4], &all[4..], Some((2, &all))),
        ],
    );
    let out = b.recv(&["p"]);
    assert_ok(&out);
    assert_eq!(out.stdout, all);
}

#[test]
fn a_missing_chunk_is_reported_and_the_payload_removed() {
    let b = Bench::new();
    let all = b"aaaabbbbcccc".to_vec();
    publish_raw(
        &b,
        vec![
            ticket("p", "gap"),
            chunk("p", "gap", 0, b"", &all[..4], None),
            chunk("p", "gap", 2, &all[..8], &all[8..], Some((3, &all))),
        ],
    );
    // The end is stored and no sender lives to publish chunk 1 again: reported at once.
    let out = b.recv(&["p", "--sender-timeout", "2s"]);
    assert_corrupt(&out, "chunk 1 is missing");
    assert_eq!(out.stdout, b"aaaa", "only the verified bytes were written");
    // Removed: the pipe is not blocked by it.
    let next = b.recv(&["p", "--timeout", "1s"]);
    assert_eq!(next.status.code(), Some(124), "{}", stderr_of(&next));
}

#[test]
fn a_wrong_checksum_at_the_end_is_an_error_not_a_success() {
    let b = Bench::new();
    let all = b"checksummed".to_vec();
    let mut last = chunk("p", "sum", 0, b"", &all, Some((1, &all)));
    for (k, v) in last.1.iter_mut() {
        if *k == "Skypipe-Total-Crc32" {
            *v = "00000000".into();
        }
    }
    publish_raw(&b, vec![ticket("p", "sum"), last]);
    let out = b.recv(&["p"]);
    assert_corrupt(&out, "checksum");
}

#[test]
fn broken_and_out_of_range_headers_are_errors() {
    let b = Bench::new();
    for (i, (name, value)) in [
        ("Skypipe-Chunk", "not-a-number"),
        ("Skypipe-Chunk", "-1"),
        ("Skypipe-Offset", "99999999999999999999999"),
        ("Skypipe-Prior-Crc32", "xyz"),
        ("Skypipe-End", "maybe"),
        // Last: a payload of a newer protocol is left in the pipe for a newer skypipe.
        ("Skypipe-Version", "9"),
    ]
    .into_iter()
    .enumerate()
    {
        let id = format!("bad{i}");
        let mut c = chunk("p", &id, 0, b"", b"data", Some((1, b"data")));
        for (k, v) in c.1.iter_mut() {
            if *k == name {
                *v = value.into();
            }
        }
        publish_raw(&b, vec![ticket("p", &id), c]);
        let out = b.recv(&["p", "--sender-timeout", "2s"]);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{name}={value}: {}",
            stderr_of(&out)
        );
        assert!(
            out.stdout.is_empty(),
            "{name}={value}: wrote {:?}",
            out.stdout
        );
        let needle = if name == "Skypipe-Version" {
            "upgrade skypipe"
        } else {
            name
        };
        assert!(
            stderr_of(&out).contains(needle),
            "{name}: {}",
            stderr_of(&out)
        );
    }
}

#[test]
fn unknown_headers_are_ignored() {
    let b = Bench::new();
    let mut c = chunk("p", "extra", 0, b"", b"fine\n", Some((1, b"fine\n")));
    c.1.push(("Skypipe-Future-Feature", "whatever".into()));
    publish_raw(&b, vec![ticket("p", "extra"), c]);
    let out = b.recv(&["p"]);
    assert_ok(&out);
    assert_eq!(out.stdout, b"fine\n");
}

#[test]
fn a_ticket_for_a_payload_that_does_not_exist_does_not_hang() {
    let b = Bench::new();
    publish_raw(&b, vec![ticket("p", "ghost")]);
    let out = wait_output(
        b.spawn_recv(&["p", "--sender-timeout", "2s"]),
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    assert!(stderr_of(&out).contains("stopped"), "{}", stderr_of(&out));
    assert!(out.stdout.is_empty());
}

#[test]
fn a_malformed_ticket_is_skipped() {
    let b = Bench::new();
    let all = b"after the bad ticket\n".to_vec();
    publish_raw(
        &b,
        vec![
            (
                "skypipe.q.p".into(),
                vec![("Skypipe-Id", "bad id with spaces".into())],
                vec![],
            ),
            ticket("p", "good"),
            chunk("p", "good", 0, b"", &all, Some((1, &all))),
        ],
    );
    let out = b.recv(&["p"]);
    assert_ok(&out);
    assert_eq!(out.stdout, all);
    assert!(
        stderr_of(&out).contains("malformed ticket"),
        "{}",
        stderr_of(&out)
    );
}

/// A whole small payload whose ticket carries it: the chunk's headers on the ticket, the
/// chunk as the ticket's body.
fn inline_ticket(pipe: &str, id: &str, all: &[u8]) -> Raw {
    let (_, mut headers, body) = chunk(pipe, id, 0, b"", all, Some((1, all)));
    headers.retain(|(k, _)| *k != "Nats-Msg-Id");
    (format!("skypipe.q.{pipe}"), headers, body)
}

#[test]
fn a_ticket_that_carries_its_payload_is_written_without_a_request_for_the_chunk() {
    let b = Bench::new();
    let all = b"carried in the ticket\n".to_vec();
    // Only the ticket holds the bytes: a receiver that asked the data stream would find
    // nothing there and, the sender being gone, report the payload as vanished.
    publish_raw(&b, vec![inline_ticket("p", "inl", &all)]);
    let out = b.recv(&["p", "--sender-timeout", "2s"]);
    assert_ok(&out);
    assert_eq!(out.stdout, all);
}

/// The ticket of the newest payload on pipe `pipe`: (its `Skypipe-Chunk` header, its body).
fn last_ticket(b: &Bench, pipe: &str) -> (Option<String>, Vec<u8>) {
    let url = b.url();
    let subject = format!("skypipe.q.{pipe}");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async move {
        let client = async_nats::connect(url).await.expect("connect");
        let js = async_nats::jetstream::new(client);
        let stream = js.get_stream("skypipe-queue").await.expect("queue stream");
        let msg = stream
            .get_last_raw_message_by_subject(&subject)
            .await
            .expect("a ticket");
        let chunk = msg
            .headers
            .get("Skypipe-Chunk")
            .map(|v| v.as_str().to_string());
        (chunk, msg.payload.to_vec())
    })
}

#[test]
fn a_small_payload_rides_in_its_ticket_and_a_large_one_does_not() {
    let b = Bench::new();
    let small = b"wake up\n".to_vec();
    assert_ok(&b.send_bytes(&["small"], &small));
    assert_eq!(last_ticket(&b, "small"), (Some("0".into()), small.clone()));
    let large = random_bytes(64 * 1024, 7);
    assert_ok(&b.send_bytes(&["large"], &large));
    assert_eq!(last_ticket(&b, "large"), (None, vec![]));
    // Both read back whole, whichever copy the receiver used.
    let out = b.recv(&["small"]);
    assert_ok(&out);
    assert_eq!(out.stdout, small);
    let out = b.recv(&["large"]);
    assert_ok(&out);
    assert_eq!(sha(&out.stdout), sha(&large));
}
