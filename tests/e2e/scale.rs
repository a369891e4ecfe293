//! Many at once: hundreds of senders on one pipe, a hundred pipes in use together. What is
//! checked is what a user relies on: every payload whole, exactly once, byte for byte.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::{ChildStdin, Stdio};

use super::harness::*;

/// Spawning this many processes at once chokes a small machine: at most this many are
/// starting (spawned and not yet ready) at any time.
const STARTING: usize = 16;

/// Spawns `n` processes with `spawn`, waiting with `ready` for each, at most [`STARTING`] of
/// them starting at a time; returns them all ready.
fn start_windowed<T>(
    n: usize,
    mut spawn: impl FnMut(usize) -> T,
    ready: impl Fn(&mut T),
) -> Vec<T> {
    let mut all: Vec<T> = Vec::with_capacity(n);
    for i in 0..n {
        all.push(spawn(i));
        if i >= STARTING {
            ready(&mut all[i - STARTING]);
        }
    }
    for started in all.iter_mut().skip(n.saturating_sub(STARTING)) {
        ready(started);
    }
    all
}

/// Payload `n`: a header line naming it, then lines of pseudo-random hex, each tagged with
/// the payload's number, about 64 KiB in all.
fn tagged_payload(n: usize) -> Vec<u8> {
    let tag = format!("p{n:03}");
    let mut v = format!("{tag} header: payload {n}\n").into_bytes();
    let noise = random_bytes(30 * 1024, 1000 + n as u64);
    for (i, piece) in noise.chunks(48).enumerate() {
        let hex: String = piece.iter().map(|b| format!("{b:02x}")).collect();
        v.extend_from_slice(format!("{tag} {i:04} {hex}\n").as_bytes());
    }
    v
}

/// A sender on `pipe` (stdin a pipe) that has been given the first `head` bytes of `data`
/// and holds the rest until [`Held::finish`]: once [`Held::ready`], it has announced its
/// payload and keeps it open.
struct Held {
    pipe: String,
    child: Proc,
    stdin: ChildStdin,
    rest: Vec<u8>,
}

impl Held {
    fn start(b: &Bench, pipe: &str, data: &[u8], head: usize) -> Held {
        let mut child = b
            .cmd(&["-v", "send", pipe])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .start();
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(&data[..head]).expect("write the head");
        stdin.flush().expect("flush");
        Held {
            pipe: pipe.to_string(),
            child,
            stdin,
            rest: data[head..].to_vec(),
        }
    }

    /// Waits until the payload is in the pipe.
    fn ready(&mut self) {
        self.child.wait_for(&queued(&self.pipe));
    }

    /// Writes the rest and closes stdin; the sender then finishes on its own.
    fn finish(mut self) -> Proc {
        self.stdin.write_all(&self.rest).expect("write the rest");
        drop(self.stdin);
        self.child
    }
}

/// A receiver on `args` writing to the file `out`, running in the background.
fn spawn_receiver(b: &Bench, args: &[&str], out: &PathBuf) -> Proc {
    b.cmd(args)
        .stdin(Stdio::null())
        .stdout(Stdio::from(
            std::fs::File::create(out).expect("create output"),
        ))
        .stderr(Stdio::piped())
        .start()
}

/// A receiver or a sender, started on a pipe.
enum Side {
    Receiver(Proc, String),
    Sender(Held),
}

impl Side {
    /// Waits until a receiver waits on its pipe, or a sender's payload is in it.
    fn ready(&mut self) {
        match self {
            Side::Receiver(r, pipe) => r.wait_for(&waiting(pipe)),
            Side::Sender(s) => s.ready(),
        }
    }
}

#[test]
fn two_hundred_concurrent_senders_each_arrive_whole_exactly_once() {
    const SENDERS: usize = 200;
    let b = Bench::new();
    let payloads: Vec<Vec<u8>> = (0..SENDERS).map(tagged_payload).collect();
    let total: u64 = payloads.iter().map(|p| p.len() as u64).sum();

    let collected = b.path("collected");
    let follower =
        spawn_receiver(&b, &["-v", "crowd", "--follow"], &collected).ready(&following("crowd"));
    // Every sender first gets its header line, so that all of them have a payload open at
    // once; then each gets the rest of its payload.
    let start = |n: usize| {
        let p = &payloads[n];
        let head = p.iter().position(|&c| c == b'\n').expect("a header line") + 1;
        Held::start(&b, "crowd", p, head)
    };
    let held = start_windowed(SENDERS, start, Held::ready);
    let senders: Vec<Proc> = held.into_iter().map(Held::finish).collect();
    for (n, sender) in senders.into_iter().enumerate() {
        let out = wait_output(sender, HANG);
        assert!(
            out.status.success(),
            "sender {n}: exit {:?}: {}",
            out.status.code(),
            stderr_of(&out)
        );
    }

    // Everything was stored; the follower has it all once its output reaches the total.
    let size = || std::fs::metadata(&collected).map_or(0, |m| m.len());
    let complete = eventually(HANG, || size() >= total);
    interrupt(&follower);
    let out = wait_output(follower, HANG);
    let (status, err) = (out.status, stderr_of(&out));
    assert!(
        complete,
        "the follower wrote {} of {total} bytes: {err}",
        size()
    );
    assert_eq!(status.code(), Some(130), "{err}");

    // Payloads may interleave chunk by chunk, but chunks end at line ends: put each
    // payload's lines back together by their tag.
    let text = std::fs::read(&collected).expect("read output");
    assert_eq!(text.len() as u64, total, "nothing twice, nothing extra");
    let mut by_tag: BTreeMap<usize, Vec<u8>> = BTreeMap::new();
    for line in text.split_inclusive(|&c| c == b'\n') {
        let tag = line
            .strip_prefix(b"p")
            .and_then(|l| std::str::from_utf8(&l[..3.min(l.len())]).ok())
            .and_then(|t| t.parse::<usize>().ok())
            .filter(|n| *n < SENDERS)
            .unwrap_or_else(|| panic!("a line of no payload: {:?}", String::from_utf8_lossy(line)));
        by_tag.entry(tag).or_default().extend_from_slice(line);
    }
    assert_eq!(by_tag.len(), SENDERS, "every payload arrived");
    for (n, got) in &by_tag {
        assert_eq!(sha(got), sha(&payloads[*n]), "payload {n}");
    }
    // Nothing is left in the pipe.
    let out = b.recv(&["crowd", "--timeout", "1s"]);
    assert_eq!(out.status.code(), Some(124), "{}", stderr_of(&out));
}

#[test]
fn a_hundred_pipes_in_use_at_once_deliver_every_byte() {
    const PIPES: usize = 100;
    let b = Bench::new();
    let sizes = |n: usize| 300_000 + n * 4099;
    let payloads: Vec<Vec<u8>> = (0..PIPES)
        .map(|n| random_bytes(sizes(n), 5000 + n as u64))
        .collect();
    let outputs: Vec<PathBuf> = (0..PIPES).map(|n| b.path(&format!("out{n:03}"))).collect();
    // Half the receivers wait before their sender starts, half come after it; every sender
    // has begun its payload before any finishes, so all the pipes are in use at once.
    let pipe = |n: usize| format!("pipe-{n:03}");
    let receiver = |n: usize| {
        let out = &outputs[n];
        Side::Receiver(spawn_receiver(&b, &["-v", &pipe(n)], out), pipe(n))
    };
    let sender = |n: usize| Side::Sender(Held::start(&b, &pipe(n), &payloads[n], 1000));
    let first = start_windowed(
        PIPES,
        |n| if n % 2 == 0 { receiver(n) } else { sender(n) },
        Side::ready,
    );
    let then = start_windowed(
        PIPES,
        |n| if n % 2 == 0 { sender(n) } else { receiver(n) },
        Side::ready,
    );
    let mut receivers = Vec::new();
    let mut held = Vec::new();
    for pair in first.into_iter().zip(then) {
        match pair {
            (Side::Receiver(r, _), Side::Sender(s)) | (Side::Sender(s), Side::Receiver(r, _)) => {
                receivers.push(r);
                held.push(s);
            }
            _ => unreachable!("a receiver and a sender on each pipe"),
        }
    }
    let senders: Vec<Proc> = held.into_iter().map(Held::finish).collect();
    for (n, (receiver, sender)) in receivers.into_iter().zip(senders).enumerate() {
        let sent = wait_output(sender, HANG);
        assert!(
            sent.status.success(),
            "sender {n}: exit {:?}: {}",
            sent.status.code(),
            stderr_of(&sent)
        );
        let got = wait_output(receiver, HANG);
        assert!(
            got.status.success(),
            "receiver {n}: exit {:?}: {}",
            got.status.code(),
            stderr_of(&got)
        );
    }
    for n in 0..PIPES {
        let len = std::fs::metadata(&outputs[n]).expect("output").len();
        assert_eq!(len, sizes(n) as u64, "length on pipe {n}");
        assert_eq!(
            sha_file(&outputs[n]),
            sha(&payloads[n]),
            "bytes on pipe {n}"
        );
    }
}
