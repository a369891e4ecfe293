//! Sending: stdin becomes one payload on a pipe.
//!
//! Order of operations (see docs/protocol.md): when the first chunk is cut (or the input
//! ends), publish the ticket and wait for its ack, creating the streams if the server has
//! none; then publish chunks through a window of outstanding acks; the last chunk carries the
//! EOF totals. Ctrl-C publishes an abort marker instead, so no receiver mistakes a cut-off
//! payload for a whole one.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context as _};
use std::future::IntoFuture as _;

use async_nats::jetstream::context::{PublishError, PublishErrorKind};
use async_nats::jetstream::publish::PublishAck;
use async_nats::HeaderMap;
use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::PipeSettings;
use crate::error::Failure;
use crate::input::Piece;
use crate::pipe::{self, ChunkMeta, End, PayloadId, Totals};
use crate::session::{has_code, Session, CODE_TTL_DISABLED};

/// At most this many chunks wait for their acks at once.
pub const WINDOW_CHUNKS: usize = 32;
/// At most this many bytes wait for their acks at once (bounds the sender's memory).
pub const WINDOW_BYTES: usize = 8 * 1024 * 1024;
/// How long a chunk whose ack was lost is published again, well inside the streams'
/// two-minute duplicate window.
pub const REPUBLISH_FOR: Duration = Duration::from_secs(60);

/// A published chunk waiting for its ack, kept so it can be published again. The ack is
/// awaited on a task of its own from the moment of publishing: a `PublishAckFuture` starts
/// its timeout only when first polled, so awaiting a window of lost acks one after another
/// would stall for the timeout once per chunk.
struct InFlight {
    ack: JoinHandle<Result<PublishAck, PublishError>>,
    headers: HeaderMap,
    data: Bytes,
}

/// Errors after which the chunk may or may not be stored, and the server may be back soon:
/// an ack lost with a cluster node that died or a connection that dropped, or a stream with
/// no leader for a moment.
fn retryable(e: &PublishError) -> bool {
    matches!(
        e.kind(),
        PublishErrorKind::TimedOut
            | PublishErrorKind::BrokenPipe
            | PublishErrorKind::StreamNotFound
    ) || has_code(e, 10008)
}

fn not_stored(e: PublishError) -> anyhow::Error {
    if has_code(&e, 10077) || e.to_string().contains("maximum bytes") {
        anyhow!("the server's storage for pipes is full ({e}); the payload is incomplete")
    } else {
        anyhow!("a chunk was not stored: {e}")
    }
}

/// What a finished send did.
#[derive(Debug, Clone)]
pub struct Sent {
    pub id: Option<PayloadId>,
    pub bytes: u64,
    pub chunks: u64,
}

struct Sender<'a> {
    session: &'a Session,
    settings: &'a PipeSettings,
    id: PayloadId,
    subject: String,
    ttl: Option<Duration>,
    ticket_sent: bool,
    chunk: u64,
    offset: u64,
    crc: crc32fast::Hasher,
    window: VecDeque<InFlight>,
    window_bytes: usize,
}

impl<'a> Sender<'a> {
    fn new(session: &'a Session, settings: &'a PipeSettings) -> Self {
        let id = PayloadId::random();
        let subject = session.layout.payload_subject(&settings.pipe, &id);
        let ttl = session.ttl_supported.then_some(settings.ttl);
        if !session.ttl_supported && settings.ttl_given && !settings.quiet {
            eprintln!(
                "skypipe: warning: nats-server {} has no per-message TTL (2.11 and later do); \
                 --ttl is ignored and payloads expire after the stream's age limit",
                session.server_version
            );
        }
        Sender {
            session,
            settings,
            id,
            subject,
            ttl,
            ticket_sent: false,
            chunk: 0,
            offset: 0,
            crc: crc32fast::Hasher::new(),
            window: VecDeque::new(),
            window_bytes: 0,
        }
    }

    /// Publishes the ticket and waits for it to be stored; creates the streams when missing
    /// and drops the TTL header when the stream refuses it.
    async fn send_ticket(&mut self) -> anyhow::Result<()> {
        let subject = self.session.layout.queue_subject(&self.settings.pipe);
        let mut created = false;
        loop {
            let headers = pipe::ticket_headers(&self.id, self.ttl);
            let result = match self
                .session
                .js
                .publish_with_headers(subject.clone(), headers, Bytes::new())
                .await
            {
                Ok(ack) => ack.await,
                Err(e) => Err(e),
            };
            match result {
                Ok(_) => break,
                Err(e) if e.kind() == PublishErrorKind::StreamNotFound && !created => {
                    self.session.ensure_streams().await?;
                    created = true;
                }
                Err(e) if has_code(&e, CODE_TTL_DISABLED) && self.ttl.is_some() => {
                    if !self.settings.quiet {
                        eprintln!(
                            "skypipe: warning: stream {} does not allow per-message TTL; \
                             payloads expire after the stream's age limit",
                            self.session.layout.queue_stream()
                        );
                    }
                    self.ttl = None;
                }
                Err(e) => {
                    return Err(anyhow!(e)).with_context(|| {
                        format!(
                            "cannot queue a payload on pipe {} at {}",
                            self.settings.pipe, self.session.url
                        )
                    })
                }
            }
        }
        self.ticket_sent = true;
        Ok(())
    }

    /// Publishes one chunk into the window, waiting for old acks when the window is full.
    /// `prior_crc` and `self.offset` describe the bytes before this chunk.
    async fn publish(
        &mut self,
        data: Bytes,
        prior_crc: u32,
        end: Option<End>,
    ) -> anyhow::Result<()> {
        if !self.ticket_sent {
            self.send_ticket().await?;
        }
        let meta = ChunkMeta {
            id: self.id.clone(),
            chunk: self.chunk,
            offset: self.offset,
            prior_crc,
            end,
        };
        let headers = pipe::chunk_headers(&meta, self.ttl);
        let len = data.len();
        while self.window.len() >= WINDOW_CHUNKS
            || (self.window_bytes + len > WINDOW_BYTES && !self.window.is_empty())
        {
            self.await_oldest().await?;
        }
        let ack = self
            .session
            .js
            .publish_with_headers(self.subject.clone(), headers.clone(), data.clone())
            .await
            .with_context(|| format!("cannot publish to {}", self.session.url))?;
        self.window.push_back(InFlight {
            ack: tokio::spawn(ack.into_future()),
            headers,
            data,
        });
        self.window_bytes += len;
        self.chunk += 1;
        Ok(())
    }

    async fn await_oldest(&mut self) -> anyhow::Result<()> {
        if let Some(chunk) = self.window.pop_front() {
            self.window_bytes -= chunk.data.len();
            let acked = chunk
                .ack
                .await
                .map_err(|e| anyhow!("waiting for a chunk's ack failed: {e}"))?;
            match acked {
                Ok(_) => {}
                Err(e) if retryable(&e) => self.republish(chunk.headers, chunk.data, e).await?,
                Err(e) => return Err(not_stored(e)),
            }
        }
        Ok(())
    }

    /// Publishes a chunk whose ack was lost again, with the same `Nats-Msg-Id`: the stream
    /// stores it at most once, and a duplicate's ack means it was stored the first time.
    /// A receiver puts a chunk that lands late back in its place by its chunk number.
    async fn republish(
        &self,
        headers: HeaderMap,
        data: Bytes,
        first: PublishError,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + REPUBLISH_FOR;
        let mut delay = Duration::from_millis(100);
        let mut last = first;
        while Instant::now() < deadline {
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(2));
            let result = match self
                .session
                .js
                .publish_with_headers(self.subject.clone(), headers.clone(), data.clone())
                .await
            {
                Ok(ack) => ack.await,
                Err(e) => Err(e),
            };
            match result {
                Ok(_) => return Ok(()),
                Err(e) if retryable(&e) => last = e,
                Err(e) => return Err(not_stored(e)),
            }
        }
        Err(not_stored(last))
    }

    async fn drain(&mut self) -> anyhow::Result<()> {
        while !self.window.is_empty() {
            self.await_oldest().await?;
        }
        Ok(())
    }

    /// Adds a data piece; `eof` makes it the last chunk.
    async fn piece(&mut self, data: Bytes, eof: bool) -> anyhow::Result<()> {
        // An empty piece that is not the end carries nothing.
        if data.is_empty() && !eof {
            return Ok(());
        }
        let len = data.len() as u64;
        let prior_crc = self.crc.clone().finalize();
        self.crc.update(&data);
        let end = eof.then(|| {
            End::Eof(Totals {
                chunks: self.chunk + 1,
                bytes: self.offset + len,
                crc: self.crc.clone().finalize(),
            })
        });
        self.publish(data, prior_crc, end).await?;
        self.offset += len;
        Ok(())
    }

    /// Marks the payload aborted (only when a ticket announced it).
    async fn abort(&mut self, reason: &str) -> anyhow::Result<()> {
        if !self.ticket_sent {
            return Ok(());
        }
        let totals = Totals {
            chunks: self.chunk + 1,
            bytes: self.offset,
            crc: self.crc.clone().finalize(),
        };
        let end = End::Abort {
            totals,
            reason: reason.to_string(),
        };
        let prior_crc = totals.crc;
        self.publish(Bytes::new(), prior_crc, Some(end)).await?;
        self.drain().await
    }

    fn sent(&self) -> Sent {
        Sent {
            id: self.ticket_sent.then(|| self.id.clone()),
            bytes: self.offset,
            chunks: self.chunk,
        }
    }
}

/// Sends everything from `input` as one payload.
pub async fn send(
    session: &Session,
    settings: &PipeSettings,
    mut input: mpsc::Receiver<std::io::Result<Piece>>,
    cancel: CancellationToken,
    interrupted: Arc<AtomicBool>,
) -> anyhow::Result<Sent> {
    let mut s = Sender::new(session, settings);
    loop {
        let next = tokio::select! {
            biased;
            _ = cancel.cancelled() => None,
            piece = input.recv() => Some(piece),
        };
        match next {
            None => {
                abort_within(&mut s, "the sender was interrupted").await;
                return Err(Failure::Interrupted.into());
            }
            Some(Some(Ok(piece))) => {
                // Ctrl-C in a shell also kills the program feeding stdin, which closes it:
                // that EOF is the interruption's, not the end of the data.
                if piece.eof && (interrupted.load(Ordering::SeqCst) || cancel.is_cancelled()) {
                    abort_within(&mut s, "the sender was interrupted").await;
                    return Err(Failure::Interrupted.into());
                }
                s.piece(piece.data, piece.eof).await?;
                if piece.eof {
                    s.drain().await?;
                    return Ok(s.sent());
                }
            }
            Some(Some(Err(e))) => {
                let reason = format!("the sender could not read its input: {e}");
                abort_within(&mut s, &reason).await;
                return Err(anyhow!(
                    "cannot read stdin: {e}; the payload was marked aborted"
                ));
            }
            Some(None) => {
                abort_within(&mut s, "the sender's input reader stopped").await;
                return Err(anyhow!("the stdin reader stopped unexpectedly"));
            }
        }
    }
}

/// Tries to publish the abort marker, but never waits long for a server that is gone.
async fn abort_within(s: &mut Sender<'_>, reason: &str) {
    match tokio::time::timeout(Duration::from_secs(5), s.abort(reason)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => eprintln!("skypipe: could not mark the payload aborted: {e:#}"),
        Err(_) => {
            eprintln!("skypipe: could not mark the payload aborted: the server did not answer")
        }
    }
}
