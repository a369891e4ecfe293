//! Sealed payloads: round trips with a secret, what the server keeps, receivers without the
//! secret or with another, and payloads tampered with on the server by a raw NATS client.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use async_nats::jetstream;
use async_nats::HeaderMap;
use bytes::Bytes;

use super::harness::*;

const SECRET: &str = "correct horse battery staple";

/// `skypipe ARGS` with `SKYPIPE_SECRET` set when `secret` is given.
fn cmd(b: &Bench, args: &[&str], secret: Option<&str>) -> Command {
    let mut c = b.cmd(args);
    if let Some(s) = secret {
        c.env("SKYPIPE_SECRET", s);
    }
    c
}

fn send(b: &Bench, args: &[&str], secret: Option<&str>, file: &Path) -> Output {
    let input = std::fs::File::open(file).expect("open input");
    let child = cmd(b, &[&["send"], args].concat(), secret)
        .stdin(Stdio::from(input))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .start();
    wait_output(child, HANG)
}

fn spawn_recv(b: &Bench, args: &[&str], secret: Option<&str>) -> Proc {
    cmd(b, args, secret)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .start()
}

/// `skypipe -v ARGS` in the background, once it said `line` (see [`Proc::ready`]).
fn spawn_ready(b: &Bench, args: &[&str], secret: Option<&str>, line: &str) -> Proc {
    spawn_recv(b, &[&["-v"], args].concat(), secret).ready(line)
}

fn recv(b: &Bench, args: &[&str], secret: Option<&str>) -> Output {
    wait_output(spawn_recv(b, args, secret), HANG)
}

/// Asserts exit 1 with one line on stderr containing each of `needles`, and returns it.
#[track_caller]
fn assert_fails_with(out: &Output, needles: &[&str]) -> String {
    let err = stderr_of(out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    for n in needles {
        assert!(err.contains(n), "stderr lacks {n:?}: {err}");
    }
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    err
}

fn round_trip(b: &Bench, pipe: &str, data: &[u8]) {
    let f = b.file(pipe, data);
    let sent = send(b, &[pipe], Some(SECRET), &f);
    assert_ok(&sent);
    let out = recv(b, &[pipe], Some(SECRET));
    assert_ok(&out);
    assert_eq!(out.stdout.len(), data.len(), "length of {pipe}");
    assert_eq!(sha(&out.stdout), sha(data), "bytes of {pipe}");
}

#[test]
fn sealed_payloads_of_zero_and_one_byte_round_trip() {
    let b = Bench::new();
    round_trip(&b, "empty", b"");
    round_trip(&b, "one", b"x");
    round_trip(&b, "lines", &[b'\n'; 700_000]);
}

#[test]
fn three_hundred_mib_sealed_reach_a_taker_and_a_listener_with_the_secret() {
    let b = Bench::new();
    let input = b.path("big");
    random_file(&input, 300 * 1024 * 1024, 4242);
    let want = sha_file(&input);
    let taken = b.path("taken");
    let heard = b.path("heard");
    let spawn_to = |args: &[&str], out: &Path| spawn_to_file(&mut cmd(&b, args, Some(SECRET)), out);
    let listener = spawn_to(&["-v", "big", "--listen"], &heard).ready(&listening("big"));
    let taker = spawn_to(&["-v", "big"], &taken).ready(&waiting("big"));
    assert_ok(&send(&b, &["big"], Some(SECRET), &input));
    let out = wait_output(taker, HANG);
    assert_ok(&out);
    assert_eq!(sha_file(&taken), want, "taker");
    let out = wait_output(listener, HANG);
    assert_ok(&out);
    assert_eq!(sha_file(&heard), want, "listener");
}

/// A raw NATS client on the bench's server: what skypipe stored, as the operator sees it.
struct Raw {
    rt: tokio::runtime::Runtime,
    js: jetstream::Context,
}

/// One stored message of a payload's subject.
#[derive(Clone)]
struct Stored {
    subject: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Stored {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn num(&self, name: &str) -> u64 {
        self.header(name)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("header {name}"))
    }

    fn set(&mut self, name: &str, value: &str) {
        self.remove(name);
        self.headers.push((name.to_string(), value.to_string()));
    }

    fn remove(&mut self, name: &str) {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
    }
}

impl Raw {
    fn connect(b: &Bench) -> Raw {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        // The JetStream context starts a task of its own: make it inside the runtime.
        let js = rt.block_on(async {
            let client = async_nats::connect(b.url())
                .await
                .expect("raw client connects");
            jetstream::new(client)
        });
        Raw { rt, js }
    }

    /// Every message stored under `skypipe.data.PIPE.*`, in chunk order.
    fn chunks(&self, pipe: &str) -> Vec<Stored> {
        let prefix = format!("skypipe.data.{pipe}.");
        let mut found: Vec<Stored> = self.rt.block_on(async {
            let mut stream = self.js.get_stream("skypipe-data").await.expect("stream");
            let state = stream.info().await.expect("info").state.clone();
            let mut found = Vec::new();
            for seq in state.first_sequence..=state.last_sequence {
                let Ok(m) = stream.get_raw_message(seq).await else {
                    continue; // removed
                };
                if !m.subject.starts_with(&prefix) {
                    continue;
                }
                let headers = m
                    .headers
                    .iter()
                    .flat_map(|(n, vs)| vs.iter().map(move |v| (n.to_string(), v.to_string())))
                    .collect();
                found.push(Stored {
                    subject: m.subject.to_string(),
                    headers,
                    body: m.payload.to_vec(),
                });
            }
            found
        });
        found.sort_by_key(|m| m.num("Skypipe-Chunk"));
        found
    }

    /// Replaces what `subject` holds with `messages`, as an operator could: purge, then
    /// publish again (without `Nats-Msg-Id`, which the de-duplication window remembers).
    fn replace(&self, subject: &str, messages: &[Stored]) {
        self.rt.block_on(async {
            let stream = self.js.get_stream("skypipe-data").await.expect("stream");
            stream
                .purge()
                .filter(subject)
                .await
                .expect("purge the payload");
            for m in messages {
                self.publish(&m.subject, &m.headers, &m.body).await;
            }
        });
    }

    async fn publish(&self, subject: &str, headers: &[(String, String)], body: &[u8]) {
        let mut h = HeaderMap::new();
        for (n, v) in headers {
            if !n.eq_ignore_ascii_case("Nats-Msg-Id") {
                h.append(n.as_str(), v.as_str());
            }
        }
        self.js
            .publish_with_headers(subject.to_string(), h, Bytes::copy_from_slice(body))
            .await
            .expect("publish")
            .await
            .expect("stored");
    }

    /// What a headers-only reader (the monitor's way) sees of each chunk of `pipe`:
    /// `Nats-Msg-Size` and `Skypipe-Offset`, in chunk order.
    fn sizes(&self, pipe: &str, count: usize) -> Vec<(u64, u64)> {
        use futures::StreamExt;
        self.rt.block_on(async {
            let stream = self.js.get_stream("skypipe-data").await.expect("stream");
            let consumer = stream
                .create_consumer(jetstream::consumer::pull::OrderedConfig {
                    filter_subject: format!("skypipe.data.{pipe}.*"),
                    headers_only: true,
                    ..Default::default()
                })
                .await
                .expect("consumer");
            let mut messages = consumer.messages().await.expect("messages");
            let mut seen = Vec::new();
            while seen.len() < count {
                let next = tokio::time::timeout(Duration::from_secs(10), messages.next()).await;
                let m = next.expect("in time").expect("a message").expect("ok");
                let h = m.headers.as_ref().expect("headers");
                let num = |n: &str| -> u64 {
                    h.get(n)
                        .and_then(|v| v.as_str().parse().ok())
                        .unwrap_or_else(|| panic!("header {n}"))
                };
                assert!(m.payload.is_empty(), "headers only");
                seen.push((num("Nats-Msg-Size"), num("Skypipe-Offset")));
            }
            seen
        })
    }

    /// Announces payload `id` on `pipe` with a ticket of its own.
    fn ticket(&self, pipe: &str, id: &str) {
        let headers = [
            ("Skypipe-Version".to_string(), "1".to_string()),
            ("Skypipe-Id".to_string(), id.to_string()),
        ];
        self.rt
            .block_on(self.publish(&format!("skypipe.q.{pipe}"), &headers, b""));
    }
}

/// Sends `data` sealed on `pipe` with nobody waiting, and returns its stored chunks.
fn stored_sealed(b: &Bench, raw: &Raw, pipe: &str, data: &[u8]) -> Vec<Stored> {
    let f = b.file(pipe, data);
    assert_ok(&send(b, &[pipe], Some(SECRET), &f));
    let chunks = raw.chunks(pipe);
    assert!(chunks.len() >= 4, "{} chunks", chunks.len());
    for (i, c) in chunks.iter().enumerate() {
        assert_eq!(c.num("Skypipe-Chunk"), i as u64);
        assert!(c.header("Skypipe-Seal").is_some(), "chunk {i} is sealed");
    }
    chunks
}

fn memmem(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Whether any file under `dir` holds `needle`.
fn dir_holds(dir: &Path, needle: &[u8]) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|e| {
        let p = e.path();
        if p.is_dir() {
            dir_holds(&p, needle)
        } else {
            std::fs::read(&p).is_ok_and(|bytes| memmem(&bytes, needle))
        }
    })
}

fn marked(marker: &str, lines: usize) -> Vec<u8> {
    (0..lines)
        .flat_map(|i| format!("{marker} line {i}\n").into_bytes())
        .collect()
}

#[test]
fn the_server_stores_no_plaintext_of_a_sealed_payload() {
    let b = Bench::new();
    let raw = Raw::connect(&b);
    let secret_text = marked("SEALED-MARKER-4b1d9", 20_000);
    let plain_text = marked("PLAIN-MARKER-77c2e", 20_000);
    let sealed_file = b.file("sealed", &secret_text);
    let plain_file = b.file("plain", &plain_text);
    assert_ok(&send(&b, &["sealed"], Some(SECRET), &sealed_file));
    assert_ok(&send(&b, &["plain"], None, &plain_file));

    // The store's files: the plain payload, stored after the sealed one, is there in
    // clear, which shows that the search sees what was written; the sealed one is not.
    let store = b.path("server/jetstream");
    assert!(
        eventually(Duration::from_secs(20), || dir_holds(
            &store,
            b"PLAIN-MARKER-77c2e"
        )),
        "the control payload never showed up in {}",
        store.display()
    );
    assert!(!dir_holds(&store, b"SEALED-MARKER-4b1d9"));

    // What a client of the server reads: neither bodies nor headers hold the text, and the
    // checksums are not those of the plaintext.
    let chunks = raw.chunks("sealed");
    assert!(chunks.len() > 1);
    let mut stored_bytes = 0;
    for c in &chunks {
        assert!(!memmem(&c.body, b"MARKER"), "a body holds plaintext");
        assert!(c.headers.iter().all(|(_, v)| !v.contains("MARKER")));
        stored_bytes += c.body.len();
    }
    assert_eq!(stored_bytes, secret_text.len() + 40 * chunks.len());
    // A headers-only reader, as the monitor is, still sees every size.
    let sizes = raw.sizes("sealed", chunks.len());
    for (c, (size, offset)) in chunks.iter().zip(&sizes) {
        assert_eq!(*size, c.body.len() as u64);
        assert_eq!(*offset, c.num("Skypipe-Offset"));
    }
    let last = chunks.last().expect("chunks");
    let plain_crc = format!("{:08x}", crc32fast::hash(&secret_text));
    assert_eq!(last.num("Skypipe-Total-Bytes"), secret_text.len() as u64);
    assert_ne!(last.header("Skypipe-Total-Crc32"), Some(plain_crc.as_str()));

    // Both still arrive whole.
    let out = recv(&b, &["sealed"], Some(SECRET));
    assert_ok(&out);
    assert_eq!(sha(&out.stdout), sha(&secret_text));
    let out = recv(&b, &["plain"], None);
    assert_ok(&out);
    assert_eq!(sha(&out.stdout), sha(&plain_text));
}

#[test]
fn no_secret_or_another_secret_writes_nothing_and_leaves_the_payload() {
    let b = Bench::new();
    let data = random_bytes(900_000, 81);
    let f = b.file("docs", &data);
    let listener = spawn_ready(&b, &["docs", "--listen"], None, &listening("docs"));
    assert_ok(&send(&b, &["docs"], Some(SECRET), &f));

    let out = recv(&b, &["docs"], None);
    assert_fails_with(
        &out,
        &["is encrypted and no secret was given", "SKYPIPE_SECRET"],
    );
    assert!(out.stdout.is_empty());
    let out = recv(&b, &["docs"], Some("Correct horse battery staple"));
    assert_fails_with(&out, &["encrypted with a different secret"]);
    assert!(out.stdout.is_empty());
    let out = wait_output(listener, HANG);
    assert_fails_with(&out, &["is encrypted and no secret was given"]);
    assert!(out.stdout.is_empty());

    // The payload was left in the pipe for a receiver with the secret, here from a file.
    let secret_file = b.file("secret", format!("{SECRET}\n").as_bytes());
    let out = recv(
        &b,
        &["docs", "--secret-file", &secret_file.to_string_lossy()],
        None,
    );
    assert_ok(&out);
    assert_eq!(sha(&out.stdout), sha(&data));
}

#[test]
fn a_receiver_with_a_secret_takes_a_plain_payload_only_when_allowed() {
    let b = Bench::new();
    let f = b.file("notes", b"not a secret\n");
    assert_ok(&send(&b, &["notes"], None, &f));
    let out = recv(&b, &["notes"], Some(SECRET));
    assert_fails_with(&out, &["is not encrypted", "--allow-plaintext"]);
    assert!(out.stdout.is_empty());
    let out = recv(&b, &["notes", "--allow-plaintext"], Some(SECRET));
    assert_ok(&out);
    assert_eq!(out.stdout, b"not a secret\n");
}

/// Receives a tampered payload: exit 1, the documented message, exactly the verified bytes
/// before the fault on stdout, and the payload gone from the pipe.
#[track_caller]
fn assert_tamper_detected(b: &Bench, pipe: &str, data: &[u8], written: u64, needle: &str) {
    let out = recv(b, &[pipe], Some(SECRET));
    let err = assert_fails_with(&out, &["is corrupt", needle, "removed from the pipe"]);
    let note = if written == 0 {
        "nothing of it was written".to_string()
    } else {
        format!("the {written} bytes written before the fault are incomplete")
    };
    assert!(err.contains(&note), "{err}");
    assert_eq!(out.stdout.len() as u64, written, "{err}");
    assert_eq!(sha(&out.stdout), sha(&data[..written as usize]));
    let after = recv(b, &[pipe, "--timeout", "1s"], Some(SECRET));
    assert_eq!(after.status.code(), Some(124), "{}", stderr_of(&after));
}

#[test]
fn a_flipped_bit_in_a_stored_chunk_is_detected() {
    let b = Bench::new();
    let raw = Raw::connect(&b);
    let data = random_bytes(1_100_000, 91);
    let mut chunks = stored_sealed(&b, &raw, "flip", &data);
    let subject = chunks[0].subject.clone();
    let at = chunks[2].num("Skypipe-Offset");
    let middle = chunks[2].body.len() / 2;
    chunks[2].body[middle] ^= 0x10;
    raw.replace(&subject, &chunks);
    assert_tamper_detected(&b, "flip", &data, at, "chunk 2 failed authentication");
}

#[test]
fn a_deleted_chunk_is_detected() {
    let b = Bench::new();
    let raw = Raw::connect(&b);
    let data = random_bytes(1_100_000, 92);
    let mut chunks = stored_sealed(&b, &raw, "hole", &data);
    let subject = chunks[0].subject.clone();
    let at = chunks[2].num("Skypipe-Offset");
    chunks.remove(2);
    raw.replace(&subject, &chunks);
    assert_tamper_detected(&b, "hole", &data, at, "chunk 2 is missing");
}

#[test]
fn two_swapped_chunks_are_detected() {
    let b = Bench::new();
    let raw = Raw::connect(&b);
    let data = random_bytes(1_100_000, 93);
    let mut chunks = stored_sealed(&b, &raw, "swap", &data);
    let subject = chunks[0].subject.clone();
    let at = chunks[1].num("Skypipe-Offset");
    // Each body moves to the other's place; the headers stay in order.
    let (one, two) = (chunks[1].body.clone(), chunks[2].body.clone());
    chunks[1].body = two;
    chunks[2].body = one;
    raw.replace(&subject, &chunks);
    assert_tamper_detected(&b, "swap", &data, at, "chunk 1 failed authentication");
}

#[test]
fn a_removed_end_marker_and_a_truncation_are_detected() {
    let b = Bench::new();
    let raw = Raw::connect(&b);
    let end_headers = [
        "Skypipe-End",
        "Skypipe-Total-Chunks",
        "Skypipe-Total-Bytes",
        "Skypipe-Total-Crc32",
    ];

    // The last chunk kept, its end marker removed: it no longer authenticates.
    let data = random_bytes(1_100_000, 94);
    let mut chunks = stored_sealed(&b, &raw, "noend", &data);
    let subject = chunks[0].subject.clone();
    let last = chunks.len() - 1;
    let at = chunks[last].num("Skypipe-Offset");
    for h in end_headers {
        chunks[last].remove(h);
    }
    raw.replace(&subject, &chunks);
    let needle = format!("chunk {last} failed authentication");
    assert_tamper_detected(&b, "noend", &data, at, &needle);

    // The tail cut off and the end marker moved to the chunk before it, with totals and a
    // checksum that add up: that chunk was not sealed as the last one.
    let data = random_bytes(1_100_000, 95);
    let mut chunks = stored_sealed(&b, &raw, "cut", &data);
    let subject = chunks[0].subject.clone();
    chunks.pop().expect("last");
    let new_last = chunks.len() - 1;
    let at = chunks[new_last].num("Skypipe-Offset");
    let kept = at + (chunks[new_last].body.len() as u64 - 40);
    let crc = chunks
        .iter()
        .fold(crc32fast::Hasher::new(), |mut h, c| {
            h.update(&c.body);
            h
        })
        .finalize();
    chunks[new_last].set("Skypipe-End", "eof");
    chunks[new_last].set("Skypipe-Total-Chunks", &(new_last + 1).to_string());
    chunks[new_last].set("Skypipe-Total-Bytes", &kept.to_string());
    chunks[new_last].set("Skypipe-Total-Crc32", &format!("{crc:08x}"));
    raw.replace(&subject, &chunks);
    let needle = format!("chunk {new_last} failed authentication");
    assert_tamper_detected(&b, "cut", &data, at, &needle);
}

#[test]
fn a_payload_moved_to_another_pipe_does_not_open_there() {
    let b = Bench::new();
    let raw = Raw::connect(&b);
    let data = random_bytes(1_100_000, 96);
    let chunks = stored_sealed(&b, &raw, "from", &data);
    let id = chunks[0].header("Skypipe-Id").expect("id").to_string();
    let moved: Vec<Stored> = chunks
        .iter()
        .map(|c| Stored {
            subject: format!("skypipe.data.to.{id}"),
            ..c.clone()
        })
        .collect();
    raw.replace(&format!("skypipe.data.to.{id}"), &moved);
    raw.ticket("to", &id);
    assert_tamper_detected(&b, "to", &data, 0, "chunk 0 failed authentication");
    // The original is untouched.
    let out = recv(&b, &["from"], Some(SECRET));
    assert_ok(&out);
    assert_eq!(sha(&out.stdout), sha(&data));
}

#[test]
fn a_payload_whose_last_chunk_was_deleted_never_ends_in_success() {
    // With the whole last message gone, the stored chunks look like a live payload whose
    // sender has not finished: the receiver writes them and waits (docs/protocol.md).
    let b = Bench::new();
    let raw = Raw::connect(&b);
    let data = random_bytes(1_100_000, 97);
    let mut chunks = stored_sealed(&b, &raw, "gone", &data);
    let subject = chunks[0].subject.clone();
    let last = chunks.pop().expect("last");
    let at = last.num("Skypipe-Offset");
    raw.replace(&subject, &chunks);
    let mut receiver = spawn_recv(&b, &["gone"], Some(SECRET));
    // Its stdout is read as it comes (a stuck stdout would keep the chunks from being written
    // before Ctrl-C, and an interrupted taker writes nothing more).
    receiver.wait_stdout(at as usize);
    // The scenario: an end that never comes; the receiver goes on waiting for it.
    let ended = eventually(Duration::from_secs(3), || {
        receiver.try_wait().expect("try_wait").is_some()
    });
    assert!(!ended, "the receiver ended without the end of the payload");
    interrupt(&receiver);
    let out = wait_output(receiver, HANG);
    let written = out.stdout.clone();
    assert_eq!(out.status.code(), Some(130), "{}", stderr_of(&out));
    assert_eq!(written.len(), at as usize, "{}", stderr_of(&out));
    assert_eq!(sha(&written), sha(&data[..at as usize]));
}

#[test]
fn a_listener_joining_a_sealed_payload_midway_opens_the_rest() {
    let b = Bench::new();
    let mut taker = spawn_ready(&b, &["ticker"], Some(SECRET), &waiting("ticker"));
    let ticks: Vec<Vec<u8>> = (0..12)
        .map(|i| format!("tick {i}\n").into_bytes())
        .collect();
    let all = ticks.concat();
    let (mut sender, feeder) = feed_pieces(
        cmd(&b, &["send", "ticker"], Some(SECRET)),
        ticks.clone(),
        Duration::from_millis(150),
    );
    // The listener joins once the taker got tick 4.
    taker.wait_stdout(ticks[..5].concat().len());
    let listener = spawn_recv(&b, &["ticker", "--listen"], Some(SECRET));
    feeder.join().expect("feeder");
    assert!(wait_status(&mut sender, HANG).success());
    let out = wait_output(taker, HANG);
    assert_ok(&out);
    assert_eq!(out.stdout, all);
    let out = wait_output(listener, HANG);
    assert_ok(&out);
    let heard = String::from_utf8(out.stdout).expect("text");
    assert!(
        !heard.is_empty() && !heard.starts_with("tick 0\n"),
        "{heard:?}"
    );
    assert!(all.ends_with(heard.as_bytes()), "{heard:?}");
}

#[test]
fn an_interrupted_sealed_sender_makes_the_receiver_exit_3() {
    let b = Bench::new();
    let mut receiver = spawn_recv(&b, &["cut"], Some(SECRET));
    let mut sender = cmd(&b, &["send", "cut"], Some(SECRET))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .start();
    let mut stdin = sender.stdin.take().expect("stdin");
    stdin.write_all(b"partial line one\n").expect("write");
    // Interrupted once its line is through.
    receiver.wait_stdout(b"partial line one\n".len());
    interrupt(&sender);
    assert_eq!(wait_status(&mut sender, HANG).code(), Some(130));
    drop(stdin);
    let out = wait_output(receiver, HANG);
    assert_eq!(out.status.code(), Some(3), "{}", stderr_of(&out));
    assert!(stderr_of(&out).contains("sender was interrupted"));
    assert_eq!(out.stdout, b"partial line one\n");
}

#[test]
fn a_taker_resumes_a_sealed_payload_another_one_gave_back() {
    let b = Bench::new();
    let mut first = spawn_ready(&b, &["relay"], Some(SECRET), &waiting("relay"));
    let mut sender = cmd(&b, &["send", "relay"], Some(SECRET))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .start();
    let mut stdin = sender.stdin.take().expect("stdin");
    let lines: Vec<Vec<u8>> = (0..12)
        .map(|i| format!("relay line {i}\n").into_bytes())
        .collect();
    let all = lines.concat();
    let pause = Duration::from_millis(120);
    write_paced(&mut stdin, &lines[..6], pause).expect("write");
    // Interrupted once it wrote what was sent so far.
    first.wait_stdout(lines[..6].concat().len());
    interrupt(&first);
    let one = wait_output(first, HANG);
    assert_eq!(one.status.code(), Some(130), "{}", stderr_of(&one));
    write_paced(&mut stdin, &lines[6..], pause).expect("write");
    drop(stdin);
    assert!(wait_status(&mut sender, HANG).success());
    let two = recv(&b, &["relay"], Some(SECRET));
    assert_eq!(
        two.status.code(),
        Some(4),
        "only the rest: {}",
        stderr_of(&two)
    );
    assert!(!one.stdout.is_empty());
    assert!(
        stderr_of(&two).contains(&format!("resumed at byte {}", one.stdout.len())),
        "{}",
        stderr_of(&two)
    );
    assert_eq!([one.stdout, two.stdout].concat(), all);
}

#[test]
fn a_follower_with_a_secret_takes_sealed_payloads_and_stops_at_a_plain_one() {
    let b = Bench::new();
    let mut follower = spawn_ready(&b, &["feed", "--follow"], Some(SECRET), &following("feed"));
    let one = b.file("one", b"first sealed\n");
    let two = b.file("two", b"second sealed\n");
    assert_ok(&send(&b, &["feed"], Some(SECRET), &one));
    assert_ok(&send(&b, &["feed"], Some(SECRET), &two));
    // The plain one comes once both were written.
    follower.wait_stdout(b"first sealed\nsecond sealed\n".len());
    let plain = b.file("plain", b"plain\n");
    assert_ok(&send(&b, &["feed"], None, &plain));
    let out = wait_output(follower, HANG);
    assert_fails_with(&out, &["is not encrypted", "left in the pipe"]);
    assert_eq!(out.stdout, b"first sealed\nsecond sealed\n");
    let out = recv(&b, &["feed"], None);
    assert_ok(&out);
    assert_eq!(out.stdout, b"plain\n");
}
