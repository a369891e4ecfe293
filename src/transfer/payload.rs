//! Putting one payload's chunks back together: order by chunk number, check each chunk's
//! offset and running checksum, open it when it is sealed, check the totals at the end, and
//! hand the bytes to the writer. Shared by takers (which may resume a payload another taker
//! started) and listeners (which may join a payload in the middle).
//!
//! Offsets and byte totals count payload bytes; the checksums cover the bodies as stored
//! (ciphertext when sealed), so they reveal nothing of a sealed payload.

use std::collections::BTreeMap;

use bytes::Bytes;

use crate::protocol::crypto::{OpenError, Opener};
use crate::protocol::pipe::{ChunkMeta, End, PayloadId};
pub(crate) use crate::rules::take::Start;
use crate::transfer::output::{Mark, WriteEnd, Writer, Written};

/// More chunks than this arriving ahead of a missing one means it is lost.
const MAX_OUT_OF_ORDER: usize = 1024;
/// A listener holds at most this many live chunks that arrived ahead of stored ones before
/// it counts the stored ones as missed (chunks stored before a sender went live reach a
/// listener's consumer after the live ones that follow them).
pub(crate) const LIVE_AHEAD: usize = 64;
/// And at most this many bytes of them.
pub(crate) const LIVE_AHEAD_BYTES: usize = 32 * 1024 * 1024;
/// The stream sequence given with a chunk that did not come from the data stream (a live
/// chunk, or the one an inline ticket carries).
pub(crate) const NOT_STORED: u64 = 0;
/// A reader that keeps lines whole holds back at most this many bytes of a line whose end
/// has not arrived; a longer line is written in parts.
pub(crate) const MAX_HELD_LINE: usize = crate::protocol::pipe::MAX_CHUNK;

/// A payload that does not add up. A taker removes it from the pipe (its ticket terminated)
/// so it cannot block the payloads behind it; what was verified before the fault was written.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Corrupt(pub(crate) String);

/// A listener fell behind and chunks were removed before it read them.
#[derive(Debug, thiserror::Error)]
#[error("missed {chunks} chunks of payload {id}: the pipe's takers removed them before this listener read them")]
pub(crate) struct Missed {
    pub(crate) id: PayloadId,
    pub(crate) chunks: u64,
}

/// A listener whose payload stopped arriving after its sender was gone: the rest (its end
/// included) was taken before the listener read it.
#[derive(Debug, thiserror::Error)]
#[error("missed the rest of payload {id} after {bytes} bytes: its sender is gone and nothing more of it arrived (it was cut off, or the pipe's takers removed the rest before this listener read it)")]
pub(crate) struct MissedEnd {
    pub(crate) id: PayloadId,
    pub(crate) bytes: u64,
}

/// A payload announced while a listener listened, none of which reached it: taken whole
/// before the listener read it.
#[derive(Debug, thiserror::Error)]
#[error("missed payload {id}: it was sent and taken before this listener read any of it")]
pub(crate) struct MissedWhole {
    pub(crate) id: PayloadId,
}

/// A payload whose sender stopped without ending it (killed, or its machine gone).
#[derive(Debug, thiserror::Error)]
#[error("the sender of payload {id} stopped: no data and no sign of it for {waited} (it was killed or cut off, or the payload outlived its --ttl); the {bytes} bytes that arrived were written, but the payload is incomplete")]
pub(crate) struct Vanished {
    pub(crate) id: PayloadId,
    pub(crate) waited: String,
    pub(crate) bytes: u64,
}

/// A payload fault after which a taker removed the payload from the pipe.
#[derive(Debug, thiserror::Error)]
#[error("{0}; it was removed from the pipe")]
pub(crate) struct Removed(pub(crate) anyhow::Error);

/// A payload written for a newer skypipe (a higher protocol version, an unknown seal): it is
/// left in the pipe, untouched, for a skypipe that can read it.
#[derive(Debug, thiserror::Error)]
#[error("{0}; it was left in the pipe")]
pub(crate) struct Newer(pub(crate) String);

/// What accepting a chunk led to.
#[derive(Debug)]
pub(crate) enum Step {
    More,
    End(End),
    /// stdout closed or failed.
    Stopped(WriteEnd),
}

/// One payload being reassembled.
pub(crate) struct Reader {
    pub(crate) id: PayloadId,
    start: Start,
    /// With listeners, a gap is data removed before it could be read, not a late chunk.
    gaps_are_losses: bool,
    next: Option<u64>,
    pub(crate) offset: u64,
    crc: crc32fast::Hasher,
    pending: BTreeMap<u64, (ChunkMeta, Bytes, u64)>,
    pub(crate) max_seen: u64,
    /// Offset of the first byte this reader wrote when it did not start at chunk 0.
    pub(crate) started_at: Option<u64>,
    /// Carries the purge bound of each written chunk back from the writer.
    pub(crate) mark: Mark,
    opener: Opener,
    /// Whether a chunk of this payload came live: chunks then come two ways, stored and
    /// live, in no fixed order between them, so a stored one ahead may wait too.
    live_seen: bool,
    /// Whether bytes are held back until a newline (or the payload's end) so that lines
    /// from payloads interleaved on one output stay whole.
    whole_lines: bool,
    /// Opened chunks not yet written: the start of a line whose end has not arrived.
    held: Vec<Bytes>,
    held_len: usize,
}

impl Reader {
    pub(crate) fn new(id: PayloadId, start: Start, gaps_are_losses: bool) -> Self {
        Reader {
            id,
            start,
            gaps_are_losses,
            next: None,
            offset: 0,
            crc: crc32fast::Hasher::new(),
            pending: BTreeMap::new(),
            max_seen: 0,
            started_at: None,
            mark: Mark::default(),
            opener: Opener::default(),
            live_seen: false,
            whole_lines: false,
            held: Vec::new(),
            held_len: 0,
        }
    }

    /// Writes only whole lines (up to [`MAX_HELD_LINE`] bytes), for outputs that several
    /// payloads share. A chunk held back is not written, so it is not purged either: a taker
    /// that stops gives it back with the rest.
    /// Chunks of this payload may come live (its ticket offered the live path): a chunk
    /// ahead of the next one expected waits for it from the first chunk on, as it does once
    /// a live chunk came.
    pub(crate) fn may_come_live(mut self, may: bool) -> Self {
        self.live_seen |= may;
        self
    }

    pub(crate) fn whole_lines(mut self, on: bool) -> Self {
        self.whole_lines = on;
        self
    }

    /// Chunks written (or held) so far, counted from chunk 0.
    pub(crate) fn chunks(&self) -> u64 {
        self.next.unwrap_or(0)
    }

    /// The chunk being waited for while later ones already arrived.
    pub(crate) fn missing(&self) -> Option<u64> {
        (!self.pending.is_empty()).then(|| self.next.unwrap_or(0))
    }

    /// Opens chunks with `opener` (a reader without one reads plain payloads only).
    pub(crate) fn opening(mut self, opener: Opener) -> Self {
        self.opener = opener;
        self
    }

    /// A corrupt payload, saying what of it was already written.
    pub(crate) fn corrupt(&self, what: String) -> anyhow::Error {
        let written = self.offset - self.started_at.unwrap_or(0);
        let note = if written == 0 {
            "nothing of it was written".to_string()
        } else {
            format!("the {written} bytes written before the fault are incomplete")
        };
        Corrupt(format!("payload {} is corrupt: {what}; {note}", self.id)).into()
    }

    /// Called when the server holds nothing more for this reader: a chunk still missing
    /// below a stored last chunk is lost, because a sender publishes its last chunk after
    /// every other (docs/protocol.md, "Receiving").
    pub(crate) fn nothing_more_stored(&self) -> anyhow::Result<()> {
        let next = self.next.unwrap_or(0);
        match self.pending.values().find(|(m, _, _)| m.end.is_some()) {
            Some((last, _, _)) => Err(self.corrupt(format!(
                "chunk {next} is missing: the payload ends at chunk {} and nothing more is \
                 stored",
                last.chunk
            ))),
            None => Ok(()),
        }
    }

    /// The stream sequence below which every message seen has been handed to the writer.
    fn purge_bound(&self) -> u64 {
        let stored = self.pending.values().map(|(_, _, s)| *s);
        match stored.filter(|s| *s != NOT_STORED).min() {
            Some(s) => s,
            None => self.max_seen + 1,
        }
    }

    /// Accepts one chunk (stored at `stream_seq`, or [`NOT_STORED`]) and writes whatever is
    /// now in order.
    pub(crate) async fn accept(
        &mut self,
        meta: ChunkMeta,
        data: Bytes,
        stream_seq: u64,
        out: &Writer,
    ) -> anyhow::Result<Step> {
        if meta.id != self.id {
            return Err(self.corrupt(format!(
                "a chunk of payload {} is stored under its subject",
                meta.id
            )));
        }
        self.max_seen = self.max_seen.max(stream_seq);
        let next = self.begin(&meta);
        if meta.chunk < next {
            return Ok(Step::More); // a duplicate of a chunk already written
        }
        self.check_ahead(meta.chunk, stream_seq, next)?;
        self.pending.insert(meta.chunk, (meta, data, stream_seq));
        if self.pending.len() > MAX_OUT_OF_ORDER {
            return Err(self.corrupt(format!(
                "chunk {next} never arrived while {} later chunks did",
                self.pending.len()
            )));
        }
        self.write_in_order(out).await
    }

    /// The chunk expected next, decided at the first chunk seen: chunk 0, or that chunk when
    /// the payload starts at the first chunk seen (its running checksum from there on).
    fn begin(&mut self, first: &ChunkMeta) -> u64 {
        if self.next.is_none() {
            if first.chunk != 0 && self.start == Start::AtFirstSeen {
                self.next = Some(first.chunk);
                self.offset = first.offset;
                self.crc = crc32fast::Hasher::new_with_initial_len(first.prior_crc, first.offset);
                self.started_at = Some(first.offset);
            } else {
                self.next = Some(0);
            }
        }
        self.next.unwrap_or(0)
    }

    /// A chunk beyond the `next` one expected: with listeners, chunks removed before they
    /// were read ([`Missed`]), unless it may wait. A live chunk ahead of the stored ones
    /// before it may wait for them a little, and once chunks come live, a stored one ahead of
    /// live ones not read yet.
    fn check_ahead(&mut self, chunk: u64, stream_seq: u64, next: u64) -> anyhow::Result<()> {
        self.live_seen |= stream_seq == NOT_STORED;
        let may_wait = self.live_seen
            && self.pending.len() < LIVE_AHEAD
            && self
                .pending
                .values()
                .map(|(_, b, _)| b.len())
                .sum::<usize>()
                < LIVE_AHEAD_BYTES;
        if chunk > next && self.gaps_are_losses && !may_wait {
            let first = self.pending.keys().next().copied().unwrap_or(chunk);
            return Err(Missed {
                id: self.id.clone(),
                chunks: first.min(chunk) - next,
            }
            .into());
        }
        Ok(())
    }

    /// Writes the chunks now in order, up to the end or a stop of the writer.
    async fn write_in_order(&mut self, out: &Writer) -> anyhow::Result<Step> {
        while let Some((meta, data, _)) = self.pending.remove(&self.next.unwrap_or(0)) {
            let plain = self.open(&meta, data).await?;
            self.next = Some(meta.chunk + 1);
            let ready = if self.whole_lines {
                self.hold(plain, meta.end.is_some())
            } else {
                Some(plain)
            };
            if let Some(bytes) = ready.filter(|b| !b.is_empty()) {
                let written = Written {
                    bound: self.purge_bound(),
                    chunks: meta.chunk + 1,
                };
                let end = out.write(bytes, &self.mark, written).await;
                if end != WriteEnd::Ok {
                    return Ok(Step::Stopped(end));
                }
            }
            if let Some(end) = meta.end {
                self.check_totals(&end, meta.chunk)?;
                return Ok(Step::End(end));
            }
        }
        Ok(Step::More)
    }

    /// Checks that the chunk fits after what came before it and opens it, counting it in.
    /// Nothing is written before it is opened: a refused or forged chunk writes nothing.
    async fn open(&mut self, meta: &ChunkMeta, data: Bytes) -> anyhow::Result<Bytes> {
        let before = self.crc.clone().finalize();
        if meta.offset != self.offset || meta.prior_crc != before {
            return Err(self.corrupt(format!(
                "chunk {} says {} bytes with checksum {:08x} came before it, \
                 but {} bytes with checksum {:08x} did",
                meta.chunk, meta.offset, meta.prior_crc, self.offset, before
            )));
        }
        let plain = match self.opener.open(meta, data.clone()).await {
            Ok(plain) => plain,
            Err(OpenError::Refused(r)) => return Err(r.into()),
            Err(OpenError::Bad(what)) => return Err(self.corrupt(what)),
            Err(OpenError::Failed(e)) => return Err(e),
        };
        self.crc.update(&data);
        self.offset += plain.len() as u64;
        Ok(plain)
    }

    /// Adds an opened chunk to what is held back, and returns what may be written now: all of
    /// it once it ends a line, ends the payload, or grows past [`MAX_HELD_LINE`].
    fn hold(&mut self, plain: Bytes, last: bool) -> Option<Bytes> {
        let ends_line = plain.last() == Some(&b'\n');
        if !plain.is_empty() {
            self.held_len += plain.len();
            self.held.push(plain);
        }
        if !(ends_line || last || self.held_len >= MAX_HELD_LINE) {
            return None;
        }
        self.held_len = 0;
        let mut held = std::mem::take(&mut self.held);
        if held.len() <= 1 {
            return held.pop();
        }
        let mut all = bytes::BytesMut::with_capacity(held.iter().map(Bytes::len).sum());
        for piece in held {
            all.extend_from_slice(&piece);
        }
        Some(all.freeze())
    }

    fn check_totals(&self, end: &End, chunk: u64) -> anyhow::Result<()> {
        let totals = match end {
            End::Eof(t) | End::Abort { totals: t, .. } => *t,
        };
        if totals.chunks != chunk + 1 || totals.bytes != self.offset {
            return Err(self.corrupt(format!(
                "its end says {} chunks and {} bytes, but {} chunks and {} bytes arrived",
                totals.chunks,
                totals.bytes,
                chunk + 1,
                self.offset
            )));
        }
        let crc = self.crc.clone().finalize();
        if totals.crc != crc {
            return Err(self.corrupt(format!(
                "checksum {crc:08x} of the bytes received does not match {:08x} sent",
                totals.crc
            )));
        }
        Ok(())
    }
}

/// The one-line report of an aborted payload.
pub(crate) fn aborted_message(
    id: &PayloadId,
    pipe: &str,
    reason: &str,
    bytes: Option<u64>,
) -> String {
    let written = match bytes {
        Some(n) => format!("the {n} bytes that arrived were written"),
        None => "what arrived was written".to_string(),
    };
    format!("payload {id} on pipe {pipe} was aborted by its sender ({reason}); {written}")
}

/// Whether an error is one of this module's payload faults.
pub(crate) fn is_payload_fault(e: &anyhow::Error) -> bool {
    e.downcast_ref::<Removed>().is_some()
        || e.downcast_ref::<Corrupt>().is_some()
        || e.downcast_ref::<Missed>().is_some()
        || e.downcast_ref::<MissedEnd>().is_some()
        || e.downcast_ref::<MissedWhole>().is_some()
        || e.downcast_ref::<Vanished>().is_some()
}

/// Turns a header parse failure into an error: a corrupt payload, except that a payload of a
/// newer protocol is left alone for a newer skypipe to take.
pub(crate) fn bad_headers(
    id: &PayloadId,
    seq: u64,
    e: crate::protocol::pipe::HeaderError,
) -> anyhow::Error {
    if let crate::protocol::pipe::HeaderError::Version(_)
    | crate::protocol::pipe::HeaderError::UnknownSeal(_) = e
    {
        return Newer(format!("payload {id}: {e}")).into();
    }
    Corrupt(format!(
        "payload {id} is corrupt: chunk at stream sequence {seq}: {e}"
    ))
    .into()
}

/// An error for a message whose JetStream metadata cannot be read.
pub(crate) fn no_info(e: async_nats::Error) -> anyhow::Error {
    anyhow::Error::from_boxed(e).context("a message without JetStream metadata")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::pipe::Totals;
    use std::sync::{Arc, Mutex};
    use tokio_util::sync::CancellationToken;

    /// An in-memory stdout.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("sink").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn id() -> PayloadId {
        PayloadId::parse("p1").expect("id")
    }

    /// The chunks of `parts` as a sender would make them, the last one carrying the end.
    fn chunks(parts: &[&[u8]]) -> Vec<(ChunkMeta, Bytes)> {
        let mut crc = crc32fast::Hasher::new();
        let mut offset = 0u64;
        let total: Vec<u8> = parts.concat();
        parts
            .iter()
            .enumerate()
            .map(|(n, part)| {
                let last = n + 1 == parts.len();
                let meta = ChunkMeta {
                    id: id(),
                    chunk: n as u64,
                    offset,
                    prior_crc: crc.clone().finalize(),
                    end: last.then(|| {
                        End::Eof(Totals {
                            chunks: parts.len() as u64,
                            bytes: total.len() as u64,
                            crc: crc32fast::hash(&total),
                        })
                    }),
                    seal: None,
                };
                crc.update(part);
                offset += part.len() as u64;
                (meta, Bytes::copy_from_slice(part))
            })
            .collect()
    }

    /// Feeds chunks in the given order (stream sequences from 1); returns the last step and
    /// what was written.
    async fn feed(
        reader: &mut Reader,
        order: &[(ChunkMeta, Bytes)],
    ) -> (anyhow::Result<Step>, Vec<u8>) {
        let sink = Sink::default();
        let out = Writer::new(sink.clone(), CancellationToken::new());
        let mut last = Ok(Step::More);
        for (seq, (meta, body)) in order.iter().enumerate() {
            last = reader
                .accept(meta.clone(), body.clone(), seq as u64 + 1, &out)
                .await;
            if !matches!(last, Ok(Step::More)) {
                break;
            }
        }
        let _ = out.flush().await;
        let written = sink.0.lock().expect("sink").clone();
        (last, written)
    }

    #[tokio::test]
    async fn chunks_out_of_order_and_duplicated_are_written_once_in_order() {
        let c = chunks(&[b"one ", b"two ", b"three\n"]);
        let order = vec![c[1].clone(), c[0].clone(), c[0].clone(), c[2].clone()];
        let mut r = Reader::new(id(), Start::AtZero, false);
        let (step, out) = feed(&mut r, &order).await;
        assert!(matches!(step, Ok(Step::End(End::Eof(_)))), "{step:?}");
        assert_eq!(out, b"one two three\n");
    }

    #[tokio::test]
    async fn a_chunk_that_does_not_fit_is_corrupt_after_what_came_before_it() {
        let mut c = chunks(&[b"aaaa", b"bbbb\n"]);
        c[1].0.offset = 3;
        let mut r = Reader::new(id(), Start::AtZero, false);
        let (step, out) = feed(&mut r, &c).await;
        let e = step.expect_err("corrupt");
        assert!(is_payload_fault(&e), "{e}");
        assert!(e.to_string().contains("says 3 bytes"), "{e}");
        assert_eq!(out, b"aaaa");
    }

    #[tokio::test]
    async fn totals_that_do_not_add_up_are_corrupt() {
        let mut c = chunks(&[b"aaaa", b"bbbb\n"]);
        if let Some(End::Eof(t)) = &mut c[1].0.end {
            t.crc ^= 1;
        }
        let mut r = Reader::new(id(), Start::AtZero, false);
        let (step, _) = feed(&mut r, &c).await;
        assert!(step.expect_err("corrupt").to_string().contains("checksum"));
    }

    #[tokio::test]
    async fn a_resumed_payload_starts_at_its_first_stored_chunk_and_checks_the_rest() {
        let c = chunks(&[b"aaaa", b"bbbb", b"cccc\n"]);
        let mut r = Reader::new(id(), Start::AtFirstSeen, false);
        let (step, out) = feed(&mut r, &c[1..]).await;
        assert!(matches!(step, Ok(Step::End(_))), "{step:?}");
        assert_eq!(out, b"bbbbcccc\n");
        assert_eq!(r.started_at, Some(4));
    }

    #[tokio::test]
    async fn a_listener_that_missed_chunks_says_so_and_writes_no_gap() {
        let c = chunks(&[b"aaaa", b"bbbb", b"cccc\n"]);
        let mut r = Reader::new(id(), Start::AtFirstSeen, true);
        let (step, out) = feed(&mut r, &[c[0].clone(), c[2].clone()]).await;
        let e = step.expect_err("missed");
        assert!(e.downcast_ref::<Missed>().is_some(), "{e}");
        assert_eq!(out, b"aaaa");
    }

    #[tokio::test]
    async fn a_listener_holds_live_chunks_for_the_stored_ones_before_them() {
        let c = chunks(&[b"aaaa", b"bbbb", b"cccc", b"dddd\n"]);
        let sink = Sink::default();
        let out = Writer::new(sink.clone(), CancellationToken::new());
        let mut r = Reader::new(id(), Start::AtZero, true);
        // Live chunks 2 and 1 first, then the stored 0, then the stored last one.
        for (n, seq) in [(2, NOT_STORED), (1, NOT_STORED), (0, 7), (3, 8)] {
            let (meta, body) = c[n].clone();
            let step = r.accept(meta, body, seq, &out).await;
            assert!(step.is_ok(), "chunk {n}: {step:?}");
        }
        let _ = out.flush().await;
        assert_eq!(
            sink.0.lock().expect("sink").as_slice(),
            b"aaaabbbbccccdddd\n"
        );
        // Once chunks came live, a stored one ahead waits too (live ones may still be on
        // their way); before that, a stored chunk beyond a gap is a loss.
        let mut r = Reader::new(id(), Start::AtZero, true);
        let (meta, body) = c[1].clone();
        assert!(r.accept(meta, body, NOT_STORED, &out).await.is_ok());
        let (meta, body) = c[3].clone();
        assert!(r.accept(meta, body, 9, &out).await.is_ok());
        let mut r = Reader::new(id(), Start::AtZero, true);
        let (meta, body) = c[2].clone();
        let e = r.accept(meta, body, 9, &out).await.expect_err("missed");
        assert!(e.to_string().contains("missed 2 chunks"), "{e}");
    }

    #[tokio::test]
    async fn whole_lines_hold_the_start_of_a_line_until_its_end() {
        let c = chunks(&[b"first half ", b"second half\nnext ", b"line\n"]);
        let mut r = Reader::new(id(), Start::AtZero, false).whole_lines(true);
        let (step, out) = feed(&mut r, &c[..1]).await;
        assert!(matches!(step, Ok(Step::More)));
        assert!(out.is_empty(), "half a line is held back");
        let mut r = Reader::new(id(), Start::AtZero, false).whole_lines(true);
        let (step, out) = feed(&mut r, &c[..2]).await;
        assert!(matches!(step, Ok(Step::More)));
        // Held as whole chunks: the second chunk ends mid-line, so it waits too.
        assert!(out.is_empty());
        let mut r = Reader::new(id(), Start::AtZero, false).whole_lines(true);
        let (step, out) = feed(&mut r, &c).await;
        assert!(matches!(step, Ok(Step::End(_))));
        assert_eq!(out, b"first half second half\nnext line\n");
    }

    #[tokio::test]
    async fn a_held_line_is_written_at_the_end_of_its_payload_or_past_the_limit() {
        let c = chunks(&[b"no newline at all"]);
        let mut r = Reader::new(id(), Start::AtZero, false).whole_lines(true);
        let (step, out) = feed(&mut r, &c).await;
        assert!(matches!(step, Ok(Step::End(_))));
        assert_eq!(out, b"no newline at all");
        let long = vec![b'x'; MAX_HELD_LINE];
        let c = chunks(&[&long, b"tail\n"]);
        let mut r = Reader::new(id(), Start::AtZero, false).whole_lines(true);
        let (step, out) = feed(&mut r, &c[..1]).await;
        assert!(matches!(step, Ok(Step::More)));
        assert_eq!(
            out.len(),
            MAX_HELD_LINE,
            "a line that long is written in parts"
        );
    }
}
