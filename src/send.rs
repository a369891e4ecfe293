//! Sending: stdin becomes one payload on a pipe.
//!
//! Order of operations (see docs/protocol.md): when the first chunk is cut (or the input
//! ends), publish the ticket and wait for its ack, creating the streams if the server has
//! none; then publish chunks through a window of outstanding acks; the last chunk carries the
//! EOF totals. Ctrl-C publishes an abort marker instead, so no receiver mistakes a cut-off
//! payload for a whole one. With a secret, every chunk is sealed before it leaves
//! ([`crate::crypto`]).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context as _};
use async_nats::jetstream::context::{PublishAckFuture, PublishErrorKind};
use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::PipeSettings;
use crate::crypto::Sealer;
use crate::error::Failure;
use crate::input::Piece;
use crate::output::Counter;
use crate::pipe::{self, ChunkMeta, End, PayloadId, Totals};
use crate::progress::Progress;
use crate::session::{has_code, Session, CODE_TTL_DISABLED};

/// At most this many chunks wait for their acks at once.
pub const WINDOW_CHUNKS: usize = 32;
/// At most this many bytes wait for their acks at once (bounds the sender's memory).
pub const WINDOW_BYTES: usize = 8 * 1024 * 1024;

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
    /// CRC-32 of the bodies published so far (sealed bodies when sealing).
    crc: crc32fast::Hasher,
    /// Each unacknowledged chunk: its ack, its body's size, its payload bytes.
    window: VecDeque<(PublishAckFuture, usize, u64)>,
    window_bytes: usize,
    /// Bytes stored (acked), for progress.
    stored: Counter,
    sealer: Option<Sealer>,
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
            stored: Counter::default(),
            sealer: None,
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

    /// Publishes the next chunk into the window, waiting for old acks when the window is
    /// full: `data` are its payload bytes, sealed first when sealing; `end` its end, whose
    /// CRC this fills in. Afterwards `self.offset` counts `data` in.
    async fn publish(&mut self, data: Bytes, end: Option<End>) -> anyhow::Result<()> {
        if !self.ticket_sent {
            self.send_ticket().await?;
        }
        let mut meta = ChunkMeta {
            id: self.id.clone(),
            chunk: self.chunk,
            offset: self.offset,
            prior_crc: self.crc.clone().finalize(),
            end,
            seal: self.sealer.as_ref().map(Sealer::seal_headers),
        };
        let plain_len = data.len() as u64;
        let body = match &self.sealer {
            Some(sealer) => sealer.seal(&meta, &data)?,
            None => data,
        };
        self.crc.update(&body);
        if let Some(End::Eof(totals) | End::Abort { totals, .. }) = &mut meta.end {
            totals.crc = self.crc.clone().finalize();
        }
        let headers = pipe::chunk_headers(&meta, self.ttl);
        let len = body.len();
        while self.window.len() >= WINDOW_CHUNKS
            || (self.window_bytes + len > WINDOW_BYTES && !self.window.is_empty())
        {
            self.await_oldest().await?;
        }
        let ack = self
            .session
            .js
            .publish_with_headers(self.subject.clone(), headers, body)
            .await
            .with_context(|| format!("cannot publish to {}", self.session.url))?;
        self.window.push_back((ack, len, plain_len));
        self.window_bytes += len;
        self.chunk += 1;
        self.offset += plain_len;
        Ok(())
    }

    async fn await_oldest(&mut self) -> anyhow::Result<()> {
        if let Some((ack, len, plain_len)) = self.window.pop_front() {
            self.window_bytes -= len;
            self.stored.add(plain_len);
            ack.await.map_err(|e| {
                if has_code(&e, 10077) || e.to_string().contains("maximum bytes") {
                    anyhow!(
                        "the server's storage for pipes is full ({e}); the payload is incomplete"
                    )
                } else {
                    anyhow!("a chunk was not stored: {e}")
                }
            })?;
        }
        Ok(())
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
        let end = eof.then(|| {
            End::Eof(Totals {
                chunks: self.chunk + 1,
                bytes: self.offset + data.len() as u64,
                crc: 0, // filled in by publish
            })
        });
        self.publish(data, end).await
    }

    /// Marks the payload aborted (only when a ticket announced it).
    async fn abort(&mut self, reason: &str) -> anyhow::Result<()> {
        if !self.ticket_sent {
            return Ok(());
        }
        let totals = Totals {
            chunks: self.chunk + 1,
            bytes: self.offset,
            crc: 0, // filled in by publish
        };
        let end = End::Abort {
            totals,
            reason: reason.to_string(),
        };
        self.publish(Bytes::new(), Some(end)).await?;
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
    total: Option<u64>,
) -> anyhow::Result<Sent> {
    let mut s = Sender::new(session, settings);
    if let Some(secret) = &session.crypto.secret {
        // Stdin is read meanwhile, on its own thread.
        let key = tokio::select! {
            biased;
            _ = cancel.cancelled() => return Err(Failure::Interrupted.into()),
            key = secret.new_payload_key() => key?,
        };
        s.sealer = Some(Sealer::new(key, session.place(&settings.pipe)));
    }
    let progress = Progress::start(settings.progress, "sent", total, s.stored.clone());
    let result = send_all(&mut s, &mut input, &cancel, &interrupted).await;
    progress.finish();
    result
}

async fn send_all(
    s: &mut Sender<'_>,
    input: &mut mpsc::Receiver<std::io::Result<Piece>>,
    cancel: &CancellationToken,
    interrupted: &AtomicBool,
) -> anyhow::Result<Sent> {
    loop {
        let next = tokio::select! {
            biased;
            _ = cancel.cancelled() => None,
            piece = input.recv() => Some(piece),
        };
        match next {
            None => {
                abort_within(s, "the sender was interrupted").await;
                return Err(Failure::Interrupted.into());
            }
            Some(Some(Ok(piece))) => {
                // Ctrl-C in a shell also kills the program feeding stdin, which closes it:
                // that EOF is the interruption's, not the end of the data.
                if piece.eof && (interrupted.load(Ordering::SeqCst) || cancel.is_cancelled()) {
                    abort_within(s, "the sender was interrupted").await;
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
                abort_within(s, &reason).await;
                return Err(anyhow!(
                    "cannot read stdin: {e}; the payload was marked aborted"
                ));
            }
            Some(None) => {
                abort_within(s, "the sender's input reader stopped").await;
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
