//! Receiving: take the oldest payload of a pipe and write it to stdout.
//!
//! Order of operations (see docs/protocol.md): take one ticket from the pipe's work-queue
//! consumer (waiting for one if none is there); read the payload's subject with an ordered
//! consumer, writing chunks in chunk order and checking each one's offset and checksum;
//! remove written chunks from the server as it goes, so a live transfer never piles up; at
//! the end check the totals, ack the ticket, and remove what is left.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context as _};
use async_nats::jetstream::consumer::{pull, DeliverPolicy};
use async_nats::jetstream::message::AckKind;
use async_nats::jetstream::{self, stream};
use bytes::Bytes;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::config::PipeSettings;
use crate::error::Failure;
use crate::output::{WriteEnd, Writer};
use crate::pipe::{self, ChunkMeta, End, PayloadId, PipeName};
use crate::session::{Session, TICKET_PROGRESS};

/// Longest single pull request for a ticket; longer waits repeat it.
const TICKET_POLL: Duration = Duration::from_secs(30);
/// Chunks asked for per pull request while reading a payload (bounds memory).
const READ_BATCH: i64 = 16;
/// How often written chunks are removed from the server.
const PURGE_EVERY: Duration = Duration::from_millis(500);
/// More chunks than this arriving ahead of a missing one means it is lost.
const MAX_OUT_OF_ORDER: usize = 1024;

/// A payload that does not add up. It is removed from the pipe (its ticket terminated) so
/// that it cannot block the payloads behind it; what was verified before the fault was
/// written, and the receiver exits 1.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Corrupt(pub String);

/// What a finished receive did.
#[derive(Debug, Clone)]
pub struct Received {
    pub id: PayloadId,
    pub bytes: u64,
    /// The reader of stdout went away before the end.
    pub stdout_closed: bool,
}

/// Waits for the next ticket of a pipe. `Ok(None)` when `timeout` ran out.
pub async fn take_ticket(
    consumer: &jetstream::consumer::Consumer<pull::Config>,
    timeout: Option<Duration>,
    cancel: &CancellationToken,
) -> anyhow::Result<Option<jetstream::Message>> {
    let deadline = timeout.map(|t| Instant::now() + t);
    loop {
        let wait = match deadline {
            Some(d) => d.saturating_duration_since(Instant::now()).min(TICKET_POLL),
            None => TICKET_POLL,
        };
        if wait < Duration::from_millis(1) {
            return Ok(None);
        }
        let mut batch = consumer
            .batch()
            .max_messages(1)
            .expires(wait)
            .messages()
            .await
            .context("cannot ask the server for a payload")?;
        let next = tokio::select! {
            biased;
            _ = cancel.cancelled() => return Err(Failure::Interrupted.into()),
            next = batch.next() => next,
        };
        match next {
            Some(Ok(msg)) => return Ok(Some(msg)),
            Some(Err(e)) => {
                // A pull request that ran out, or a server that went away for a moment: ask
                // again; the deadline decides when to stop.
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return Ok(None);
                }
                tracing_hint(&e);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            None => {}
        }
    }
}

fn tracing_hint(e: &dyn std::fmt::Display) {
    if std::env::var_os("SKYPIPE_DEBUG").is_some() {
        eprintln!("skypipe: debug: {e}");
    }
}

/// Reads one payload: verifies order, offsets and checksums, writes to `out`.
struct Reader<'a> {
    id: &'a PayloadId,
    next: Option<u64>,
    offset: u64,
    crc: crc32fast::Hasher,
    pending: BTreeMap<u64, (ChunkMeta, Bytes, u64)>,
    max_seen: u64,
    resumed_at: Option<u64>,
}

enum Step {
    More,
    End(End),
}

impl<'a> Reader<'a> {
    fn new(id: &'a PayloadId) -> Self {
        Reader {
            id,
            next: None,
            offset: 0,
            crc: crc32fast::Hasher::new(),
            pending: BTreeMap::new(),
            max_seen: 0,
            resumed_at: None,
        }
    }

    fn corrupt(&self, what: String) -> anyhow::Error {
        Corrupt(format!("payload {} is corrupt: {what}", self.id)).into()
    }

    /// The stream sequence below which everything seen has been handed to the writer.
    fn purge_bound(&self) -> u64 {
        match self.pending.values().map(|(_, _, s)| *s).min() {
            Some(s) => s,
            None => self.max_seen + 1,
        }
    }

    /// Accepts one message; writes whatever is now in order.
    async fn accept(
        &mut self,
        meta: ChunkMeta,
        data: Bytes,
        stream_seq: u64,
        redelivered: bool,
        out: &Writer,
    ) -> anyhow::Result<Result<Step, WriteEnd>> {
        if &meta.id != self.id {
            return Err(self.corrupt(format!(
                "a chunk of payload {} is stored under its subject",
                meta.id
            )));
        }
        self.max_seen = self.max_seen.max(stream_seq);
        if self.next.is_none() {
            if meta.chunk != 0 && redelivered {
                // An earlier receiver took and removed the chunks before this one.
                self.next = Some(meta.chunk);
                self.offset = meta.offset;
                self.crc = crc32fast::Hasher::new_with_initial_len(meta.prior_crc, meta.offset);
                self.resumed_at = Some(meta.offset);
            } else {
                self.next = Some(0);
            }
        }
        let next = self.next.unwrap_or(0);
        if meta.chunk < next {
            return Ok(Ok(Step::More)); // a duplicate of a chunk already written
        }
        self.pending.insert(meta.chunk, (meta, data, stream_seq));
        if self.pending.len() > MAX_OUT_OF_ORDER {
            return Err(self.corrupt(format!(
                "chunk {next} never arrived while {} later chunks did",
                self.pending.len()
            )));
        }
        while let Some((meta, data, _)) = self.pending.remove(&self.next.unwrap_or(0)) {
            let before = self.crc.clone().finalize();
            if meta.offset != self.offset || meta.prior_crc != before {
                return Err(self.corrupt(format!(
                    "chunk {} says {} bytes with checksum {:08x} came before it, \
                     but {} bytes with checksum {:08x} did",
                    meta.chunk, meta.offset, meta.prior_crc, self.offset, before
                )));
            }
            self.crc.update(&data);
            self.offset += data.len() as u64;
            self.next = Some(meta.chunk + 1);
            if !data.is_empty() {
                let bound = self.purge_bound();
                let end = out.write(data, bound).await;
                if end != WriteEnd::Ok {
                    return Ok(Err(end));
                }
            }
            if let Some(end) = meta.end {
                let totals = match &end {
                    End::Eof(t) | End::Abort { totals: t, .. } => *t,
                };
                let crc = self.crc.clone().finalize();
                if totals.chunks != meta.chunk + 1 || totals.bytes != self.offset {
                    return Err(self.corrupt(format!(
                        "its end says {} chunks and {} bytes, but {} chunks and {} bytes arrived",
                        totals.chunks,
                        totals.bytes,
                        meta.chunk + 1,
                        self.offset
                    )));
                }
                if totals.crc != crc {
                    return Err(self.corrupt(format!(
                        "checksum {crc:08x} of the bytes received does not match {:08x} sent",
                        totals.crc
                    )));
                }
                return Ok(Ok(Step::End(end)));
            }
        }
        Ok(Ok(Step::More))
    }
}

/// Removes a payload's chunks below `bound` (all of them when `None`).
async fn purge(data: &stream::Stream<()>, subject: &str, bound: Option<u64>) -> anyhow::Result<()> {
    let req = data.purge().filter(subject);
    match bound {
        Some(seq) => req.sequence(seq).await.map(|_| ()),
        None => req.await.map(|_| ()),
    }
    .map_err(|e| anyhow!("cannot remove taken chunks of {subject}: {e}"))
}

/// How long a reader that lost its consumer tries to get a new one.
const REREAD_FOR: Duration = Duration::from_secs(60);

/// An ordered consumer on a payload's subject, from the stream sequence after `after`
/// (from the start when 0), and its message stream.
async fn open_reader(
    data: &stream::Stream<()>,
    subject: &str,
    after: u64,
) -> anyhow::Result<(String, pull::Ordered)> {
    let deliver_policy = if after == 0 {
        DeliverPolicy::All
    } else {
        DeliverPolicy::ByStartSequence {
            start_sequence: after + 1,
        }
    };
    let consumer = data
        .create_consumer(pull::OrderedConfig {
            filter_subject: subject.to_string(),
            deliver_policy,
            max_batch: READ_BATCH,
            ..Default::default()
        })
        .await?;
    let name = consumer.cached_info().name.clone();
    Ok((name, consumer.messages().await?))
}

/// How a payload read ended.
enum Outcome {
    Done(End),
    StdoutClosed,
}

/// Reads the payload of `ticket` to `out`. Leaves the ticket to the caller.
async fn read_payload(
    session: &Session,
    pipe: &PipeName,
    id: &PayloadId,
    ticket: &jetstream::Message,
    out: &Writer,
    cancel: &CancellationToken,
) -> anyhow::Result<(Outcome, u64, Option<u64>)> {
    let subject = session.layout.payload_subject(pipe, id);
    let data = session
        .js
        .get_stream_no_info(session.layout.data_stream())
        .await?;
    let redelivered = ticket.info().map(|i| i.delivered > 1).unwrap_or(false);
    let (mut consumer_name, mut messages) = open_reader(&data, &subject, 0)
        .await
        .with_context(|| format!("cannot read payload {id} from {}", session.url))?;
    let mut lost_since: Option<Instant> = None;

    let mut reader = Reader::new(id);
    let mut progress = tokio::time::interval(TICKET_PROGRESS);
    progress.tick().await;
    let mut purge_tick = tokio::time::interval(PURGE_EVERY);
    let mut purged = 0u64;
    let mut purge_job: Option<tokio::task::JoinHandle<anyhow::Result<()>>> = None;

    let outcome = loop {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => {
                // Keep what was taken but not written: remove only written chunks, and give
                // the ticket back at once so the next taker resumes right after them.
                let _ = out.flush().await;
                if let Some(job) = purge_job.take() {
                    let _ = job.await;
                }
                let mark = out.written_mark();
                if mark > 0 {
                    purge(&data, &subject, Some(mark)).await?;
                }
                let _ = ticket.ack_with(AckKind::Nak(None)).await;
                let _ = session.client.flush().await;
                return Err(Failure::Interrupted.into());
            }
            _ = progress.tick() => {
                let _ = ticket.ack_with(AckKind::Progress).await;
            }
            _ = purge_tick.tick() => {
                let mark = out.written_mark();
                let idle = purge_job.as_ref().is_none_or(|j| j.is_finished());
                if mark > purged && idle {
                    purged = mark;
                    let (data, subject) = (data.clone(), subject.clone());
                    purge_job = Some(tokio::spawn(async move {
                        purge(&data, &subject, Some(mark)).await
                    }));
                }
            }
            msg = messages.next() => {
                let msg = match msg {
                    Some(Ok(m)) => m,
                    failed => {
                        // A cluster node that died can take the ordered consumer (a single
                        // replica) with it, and the client does not always recreate it: read
                        // on after the last chunk seen with a new one, for a while.
                        let since = *lost_since.get_or_insert_with(Instant::now);
                        if since.elapsed() > REREAD_FOR {
                            return match failed {
                                Some(Err(e)) => Err(anyhow!(e)).with_context(|| {
                                    format!("lost the connection while reading payload {id} from {}", session.url)
                                }),
                                _ => Err(anyhow!("the server ended the read of payload {id}")),
                            };
                        }
                        tracing_hint(&format!("reading payload {id} again after stream sequence {}", reader.max_seen));
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        if let Ok((name, m)) = open_reader(&data, &subject, reader.max_seen).await {
                            let (data, old) = (data.clone(), std::mem::replace(&mut consumer_name, name));
                            tokio::spawn(async move { data.delete_consumer(&old).await });
                            messages = m;
                        }
                        continue;
                    }
                };
                lost_since = None;
                let seq = msg.info().map(|i| i.stream_sequence).map_err(|e| anyhow!("{e}"))?;
                let meta = pipe::parse_chunk(msg.headers.as_ref())
                    .map_err(|e| reader.corrupt(format!("chunk at stream sequence {seq}: {e}")))?;
                let payload = msg.message.payload.clone();
                match reader.accept(meta, payload, seq, redelivered, out).await? {
                    Ok(Step::More) => {}
                    Ok(Step::End(end)) => break Outcome::Done(end),
                    Err(WriteEnd::Closed) => break Outcome::StdoutClosed,
                    Err(WriteEnd::Failed(m)) => return Err(anyhow!(m)),
                    Err(WriteEnd::Ok) => {}
                }
            }
        }
    };
    if let Some(job) = purge_job.take() {
        let _ = job.await;
    }
    let _ = data.delete_consumer(&consumer_name).await;
    Ok((outcome, reader.offset, reader.resumed_at))
}

/// Takes the oldest payload of the pipe and writes it to stdout.
pub async fn recv(
    session: &Session,
    settings: &PipeSettings,
    cancel: CancellationToken,
) -> anyhow::Result<Received> {
    let pipe = &settings.pipe;
    let consumer = session.queue_consumer(pipe).await?;
    let out = Writer::stdout().context("cannot open stdout")?;
    loop {
        let Some(ticket) = take_ticket(&consumer, settings.timeout, &cancel).await? else {
            let waited = settings
                .timeout
                .map(|t| humantime::format_duration(t).to_string())
                .unwrap_or_default();
            return Err(Failure::TimedOut(format!(
                "no payload arrived on pipe {pipe} within {waited}"
            ))
            .into());
        };
        let id = match pipe::parse_ticket(ticket.headers.as_ref()) {
            Ok(id) => id,
            Err(e) => {
                eprintln!("skypipe: skipping a malformed ticket on pipe {pipe}: {e}");
                let _ = ticket.double_ack_with(AckKind::Term).await;
                continue;
            }
        };
        let read = read_payload(session, pipe, &id, &ticket, &out, &cancel).await;
        let (outcome, bytes, resumed_at) = match read {
            Ok(r) => r,
            Err(e) if e.downcast_ref::<Corrupt>().is_some() => {
                let _ = out.flush().await;
                let data = session
                    .js
                    .get_stream_no_info(session.layout.data_stream())
                    .await?;
                let subject = session.layout.payload_subject(pipe, &id);
                let _ = tokio::join!(
                    ticket.double_ack_with(AckKind::Term),
                    purge(&data, &subject, None)
                );
                return Err(anyhow!("{e}; it was removed from the pipe"));
            }
            Err(e) => return Err(e),
        };
        if let Some(at) = resumed_at {
            if !settings.quiet {
                eprintln!(
                    "skypipe: payload {id} was resumed at byte {at}: the bytes before it went to \
                     a receiver that stopped"
                );
            }
        }
        let flushed = out.flush().await;
        // The payload is taken: ack the ticket and remove what is left, together.
        let data = session
            .js
            .get_stream_no_info(session.layout.data_stream())
            .await?;
        let subject = session.layout.payload_subject(pipe, &id);
        let (acked, purged) = tokio::join!(ticket.double_ack(), purge(&data, &subject, None));
        acked.map_err(|e| anyhow!("cannot confirm payload {id} as taken: {e}"))?;
        purged?;
        let stdout_closed = matches!(outcome, Outcome::StdoutClosed) || flushed == WriteEnd::Closed;
        if let WriteEnd::Failed(m) = flushed {
            return Err(anyhow!(m));
        }
        if let Outcome::Done(End::Abort { reason, .. }) = outcome {
            return Err(Failure::Aborted(format!(
                "payload {id} on pipe {pipe} was aborted by its sender ({reason}); \
                 the {bytes} bytes that arrived were written"
            ))
            .into());
        }
        return Ok(Received {
            id,
            bytes,
            stdout_closed,
        });
    }
}
