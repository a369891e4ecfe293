//! Sending: stdin becomes one payload on a pipe.
//!
//! Order of operations (see docs/protocol.md): when the first chunk is cut (or the input
//! ends), publish the ticket and, right behind it, the first chunk; wait for the ticket's ack.
//! Should the ticket be refused (no streams yet, no per-message TTL, a busy server), fix that
//! and publish both again: their `Nats-Msg-Id`s keep the server from storing either twice.
//! Then publish the remaining chunks through a window of outstanding acks; the last chunk
//! carries the EOF totals. Ctrl-C, SIGTERM or any failure once the ticket is out (a store that
//! stayed full for `--timeout`, a refusal, a lost server) publishes an abort marker instead,
//! in place of the first chunk not stored, so no receiver waits on a cut-off payload or
//! mistakes it for a whole one. A full store (the stream's, the server's or the account's
//! limit) is waited out until takers drain it; a signal ends every wait at once.
//!
//! The live path: when the payload's taker asks for it (it is waiting as the payload starts),
//! the chunks between the first and the last go to it over core NATS instead of the data
//! stream, each kept here until the taker says it wrote it; when the taker stops, goes quiet
//! or another takes its place, every chunk not acknowledged is stored after all and the rest
//! goes stored. What to do at each word or silence is decided by
//! [`crate::rules::live::LivePath`] (each rule of docs/protocol.md's section a test there);
//! this file carries its steps out ([`Live`]). With a secret, every chunk is sealed before it
//! leaves ([`crate::protocol::crypto`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context as _};
use async_nats::jetstream::context::{PublishAckFuture, PublishErrorKind};
use async_nats::jetstream::stream::RawMessageErrorKind;
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::client::errors::{self, Refusal};
use crate::client::session::Session;
use crate::config::PipeSettings;
use crate::error::Failure;
use crate::protocol::crypto::Sealer;
use crate::protocol::pipe::{self, ChunkMeta, End, PayloadId, Totals};
use crate::protocol::proof::Half;
use crate::rules::live::{
    window_has_room, Leave, LivePath, Purge, Room, Step, TicketCheck, ABORT_SETTLE, DROPPED_SETTLE,
    TICKET_CHECK_EVERY,
};
use crate::transfer::input::{ChunkSize, Piece};
use crate::transfer::output::Counter;
use crate::transfer::presence::{self, Payloads, Presence, Role};
use crate::transfer::progress::Progress;

/// A short, growing, jittered pause before publishing again what a busy server refused.
fn busy_pause(attempt: u32) -> Duration {
    let base = 20u64 << attempt.min(5);
    Duration::from_millis(base + rand::random::<u64>() % base)
}

/// A chunk as published: kept whole so it can be published again (with the same
/// `Nats-Msg-Id`, so the server stores it once), or stored after going live.
struct Chunk {
    at: Place,
    headers: async_nats::HeaderMap,
    /// The body as published (sealed when sealing).
    data: Bytes,
    /// How many payload bytes the body carries.
    plain_len: u64,
}

/// A published chunk whose ack has not arrived.
struct InFlight {
    /// `None`: published, but its ack was given up on (a wait cut short): publish it again
    /// to learn whether it is stored.
    ack: Option<PublishAckFuture>,
    chunk: Chunk,
}

/// Where a chunk sits in its payload: enough to put an end marker in its place when it
/// turns out not to be stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Place {
    chunk: u64,
    /// Payload bytes before the chunk.
    offset: u64,
    /// CRC-32 of the bodies before the chunk.
    prior_crc: u32,
}

/// The live path of one payload: its subscription and subject; the decisions are
/// [`LivePath`]'s (docs/protocol.md, "The live path").
struct Live {
    /// Where takers ask and acknowledge; `None` when the sender offers no live path.
    acks: Option<async_nats::Subscriber>,
    subject: String,
    path: LivePath<Chunk>,
    /// Payload bytes the live taker wrote of the chunks sent live (for presence; its clock
    /// starts when the payload goes live).
    written: Counter,
}

/// What waiting on the live taker brought.
enum Heard {
    Ack(async_nats::Message),
    /// Nothing until the time waited for.
    Quiet,
    /// The subscription ended (the connection was replaced).
    Closed,
}

impl Live {
    /// Waits for the taker's next word until it has been quiet for long enough.
    async fn next(&mut self) -> Heard {
        self.next_by(self.path.quiet_at()).await
    }

    /// Waits for the next word until `until`.
    async fn next_by(&mut self, until: Instant) -> Heard {
        let Some(acks) = self.acks.as_mut() else {
            return Heard::Closed;
        };
        let until = tokio::time::Instant::from_std(until);
        loop {
            match tokio::time::timeout_at(until, acks.next()).await {
                Ok(Some(m)) if !crate::client::published_by_a_client(&m) => {}
                Ok(Some(m)) => return Heard::Ack(m),
                Ok(None) => return Heard::Closed,
                Err(_) => return Heard::Quiet,
            }
        }
    }
}

/// Stdin, cut into pieces on a thread of its own, and the size of a full piece there.
pub(crate) struct Input {
    pub(crate) pieces: mpsc::Receiver<std::io::Result<Piece>>,
    pub(crate) size: ChunkSize,
}

/// What a finished send did.
#[derive(Debug, Clone)]
pub(crate) struct Sent {
    pub(crate) id: Option<PayloadId>,
}

struct Sender<'a> {
    session: Session,
    settings: &'a PipeSettings,
    id: PayloadId,
    subject: String,
    ttl: Option<Duration>,
    ticket_sent: bool,
    /// The ticket's stream sequence in the queue stream, once it is stored.
    ticket_seq: Option<u64>,
    /// When the ticket is next checked for in the pipe.
    ticket_check: TicketCheck,
    chunk: u64,
    offset: u64,
    /// CRC-32 of the bodies published so far (sealed bodies when sealing).
    crc: crc32fast::Hasher,
    window: std::collections::VecDeque<InFlight>,
    window_bytes: usize,
    /// Said once: the server's storage is full and the sender waits.
    told_full: bool,
    /// Since when the server owes an answer (an ack) with none coming: `--timeout` counts
    /// from here, across every wait on it.
    owed_since: Option<Instant>,
    /// Bytes stored (acked), for progress.
    stored: Counter,
    /// The payload being sent, once announced, for presence.
    active: Payloads,
    sealer: Option<Sealer>,
    /// The payload's size, when stdin is a regular file: told in the ticket, for the
    /// receiver's progress.
    size: Option<u64>,
    live: Live,
    /// The stdin reader's chunk size: bigger while live.
    input_chunk: Option<ChunkSize>,
    /// The JetStream domain that stored the ticket, when it is not the one meant.
    landed_in: Option<String>,
    /// Ctrl-C or SIGTERM: every wait of the sender ends at once (a full store, a busy or
    /// silent server), and the payload is marked aborted.
    cancel: CancellationToken,
    /// The payload's end (complete or aborted) is published, or it was dropped: nothing more
    /// to mark.
    ended: bool,
}

impl<'a> Sender<'a> {
    fn new(session: Session, settings: &'a PipeSettings, cancel: CancellationToken) -> Self {
        let id = PayloadId::random();
        let subject = session.layout.payload_subject(&settings.pipe, &id);
        let live_subject = session.layout.live_subject(&settings.pipe, &id);
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
            id: id.clone(),
            subject,
            ttl,
            ticket_sent: false,
            ticket_seq: None,
            ticket_check: TicketCheck::new(Instant::now()),
            chunk: 0,
            offset: 0,
            crc: crc32fast::Hasher::new(),
            window: Default::default(),
            window_bytes: 0,
            told_full: false,
            owed_since: None,
            stored: Counter::default(),
            active: Payloads::default(),
            sealer: None,
            size: None,
            input_chunk: None,
            cancel,
            ended: false,
            live: Live {
                acks: None,
                subject: live_subject,
                path: LivePath::closed(id, Instant::now()),
                written: Counter::default(),
            },
            landed_in: None,
        }
    }

    /// Offers the live path: listens for a taker that asks for it before the ticket says so.
    async fn offer_live(&mut self) {
        if !self.session.conn.live {
            return;
        }
        let subject = self
            .session
            .layout
            .live_ack_subject(&self.settings.pipe, &self.id);
        match self.session.client.subscribe(subject).await {
            Ok(sub) => {
                self.live.acks = Some(sub);
                self.live.path.offer(Half::new());
            }
            Err(e) => tracing::debug!("no live path: {e}"),
        }
    }

    /// Takes in whatever takers said meanwhile, without waiting.
    async fn hear_live(&mut self) -> anyhow::Result<()> {
        use futures::FutureExt as _;
        while let Some(acks) = self.live.acks.as_mut() {
            match acks.next().now_or_never() {
                Some(Some(m)) if !crate::client::published_by_a_client(&m) => {}
                Some(Some(m)) => self.on_heard(Heard::Ack(m)).await?,
                Some(None) => self.on_heard(Heard::Closed).await?,
                None => break,
            }
        }
        Ok(())
    }

    /// Acts on a taker's word (or silence): goes live for the first taker that asks, drops
    /// what it wrote, and stores the rest when it stops, goes quiet or another takes over.
    async fn on_heard(&mut self, heard: Heard) -> anyhow::Result<()> {
        let step = match heard {
            Heard::Ack(m) => {
                let Ok(ack) = pipe::parse_live_ack(m.headers.as_ref()) else {
                    return Ok(());
                };
                let taker = ack.taker.clone();
                let heard = self.live.path.on_word(ack, self.chunk, Instant::now());
                self.stored.add(heard.written);
                self.live.written.add(heard.written);
                if heard.step == Step::NotBelieved {
                    tracing::info!(
                        "payload {}: an acknowledgement for taker {taker} that does not \
                         prove it is theirs; not believed",
                        self.id,
                    );
                }
                heard.step
            }
            Heard::Quiet => self.live.path.on_silence(Instant::now()),
            Heard::Closed => {
                self.live.acks = None;
                Step::Leave(Leave::Closed)
            }
        };
        match step {
            Step::Nothing | Step::NotBelieved => Ok(()),
            Step::GoLive => {
                self.went_live();
                Ok(())
            }
            Step::Leave(why) => {
                self.say_leaving(&why);
                self.store_live().await
            }
        }
    }

    /// The first taker asked: live chunks may be bigger.
    fn went_live(&mut self) {
        if let crate::rules::live::Route::Live(taker) = self.live.path.route() {
            tracing::info!("payload {} goes live to taker {taker}", self.id);
        }
        self.live.written.touch();
        if let Some(size) = &self.input_chunk {
            size.set(self.session.live_chunk_size);
        }
    }

    /// Says why the payload leaves the live path (before it does).
    fn say_leaving(&self, why: &Leave) {
        let taker = match self.live.path.route() {
            crate::rules::live::Route::Live(t) => t.as_str(),
            _ => "",
        };
        match why {
            Leave::Quiet => {
                tracing::info!("the live taker of payload {} went quiet", self.id)
            }
            // No taker wrote chunks that were never sent: the word is forged (or garbled).
            // Trusting it would drop chunks nobody wrote; the payload leaves the live path
            // with what the taker really acknowledged.
            Leave::Forged { written, published } => tracing::info!(
                "payload {} leaves the live path: an acknowledgement of {written} chunks, \
                 but {published} were sent",
                self.id,
            ),
            // The taker stopped, or another one has the ticket now: whatever this one did
            // not write is stored, and so is the rest.
            Leave::Stopped => tracing::info!(
                "payload {} leaves the live path: taker {taker} stopped",
                self.id
            ),
            Leave::TookOver(other) => tracing::info!(
                "payload {} leaves the live path: taker {other} took over",
                self.id
            ),
            Leave::Closed => {}
        }
    }

    /// Leaves the live path: every live chunk not acknowledged is stored, in order, and so is
    /// every chunk after it.
    async fn store_live(&mut self) -> anyhow::Result<()> {
        if self.live.path.is_live() {
            // The purge must know where each stored chunk is.
            while !self.window.is_empty() {
                self.await_oldest().await?;
            }
            if let Some(purge) = self.live.path.purge() {
                self.forget_written(purge).await?;
            }
        }
        let Some(unacked) = self.live.path.leave() else {
            return Ok(());
        };
        if let Some(size) = &self.input_chunk {
            size.set(self.session.chunk_size);
        }
        if let Some(first) = unacked.first() {
            tracing::info!(
                "storing payload {} from chunk {} on ({} chunks not acknowledged live)",
                self.id,
                first.at.chunk,
                unacked.len()
            );
        }
        for c in unacked {
            self.store(c).await?;
        }
        Ok(())
    }

    /// Removes the stored chunks the live taker wrote (those stored before the payload went
    /// live), so that what is stored of the payload is again exactly what no taker wrote: a
    /// taker that died may have written them without removing them, and the next one must
    /// not start there and find the live chunks after them missing.
    async fn forget_written(&mut self, purge: Purge) -> anyhow::Result<()> {
        tracing::debug!(
            "removing the stored chunks below chunk {}, which the taker wrote",
            self.live.path.acked()
        );
        // A server between leaders (a cluster node died) may not answer at once: ask again
        // for as long as a publish would be retried, then go on (a living taker drops those
        // chunks as written anyway).
        let deadline = Instant::now() + self.session.conn.retry.give_up_after;
        let data = self.data_stream().await?;
        loop {
            match crate::transfer::recv::purge(&data, &self.subject, purge.bound()).await {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() < deadline => {
                    tracing::debug!("cannot remove chunks the live taker wrote yet: {e}");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(e) => {
                    tracing::debug!("gave up removing chunks the live taker wrote: {e}");
                    return Ok(());
                }
            }
        }
    }

    /// Waits until every live chunk is acknowledged, or stored.
    async fn settle_live(&mut self) -> anyhow::Result<()> {
        self.hear_live().await?;
        while self.live.path.waiting() {
            let heard = self.live.next().await;
            self.on_heard(heard).await?;
        }
        Ok(())
    }

    /// Sends a chunk live, waiting while the taker has a window's worth unacknowledged or a
    /// listener is too far behind; when the live path ends meanwhile, stores it instead.
    async fn send_live(&mut self, c: Chunk) -> anyhow::Result<()> {
        while self.live.path.is_live() {
            let now = Instant::now();
            let (room, left) = self.live.path.room(self.chunk, c.data.len(), now);
            for _ in 0..left {
                tracing::info!(
                    "a listener of payload {} fell behind; not waiting for it",
                    self.id
                );
            }
            let Room::Wait { until, taker } = room else {
                break;
            };
            match self.live.next_by(until).await {
                // A listener's time ran out: the next look at the room leaves it behind.
                Heard::Quiet if !taker => {}
                heard => self.on_heard(heard).await?,
            }
        }
        if !self.live.path.is_live() {
            return self.store(c).await;
        }
        let (headers, data) = (c.headers.clone(), c.data.clone());
        let (chunk, len, plain) = (c.at.chunk, c.data.len(), c.plain_len);
        self.live
            .path
            .sent_live(chunk, len, plain, c, Instant::now());
        let sent = self
            .session
            .client
            .publish_with_headers(self.live.subject.clone(), headers, data)
            .await;
        if let Err(e) = sent {
            tracing::debug!("live publish failed ({e}): storing instead");
            self.store_live().await?;
        }
        Ok(())
    }

    /// Waits for the oldest acks until the window of stored chunks has room for `len` bytes.
    async fn make_room(&mut self, len: usize) -> anyhow::Result<()> {
        while !window_has_room(self.window.len(), self.window_bytes, len) {
            self.await_oldest().await?;
        }
        Ok(())
    }

    /// Stores a chunk through the window of outstanding acks.
    async fn store(&mut self, c: Chunk) -> anyhow::Result<()> {
        self.owed_since.get_or_insert_with(Instant::now);
        self.make_room(c.data.len()).await?;
        let ack = self.publish_once(&c.headers, &c.data).await?;
        self.push_in_flight(ack, c);
        Ok(())
    }

    /// A chunk is published: its ack is awaited in the window.
    fn push_in_flight(&mut self, ack: PublishAckFuture, chunk: Chunk) {
        self.window_bytes += chunk.data.len();
        self.window.push_back(InFlight {
            ack: Some(ack),
            chunk,
        });
    }

    /// Publishes the ticket (carrying `inline`, as [`Self::ticket_message`] does) and waits
    /// for it to be stored; creates the streams when missing and drops the TTL header when
    /// the stream refuses it.
    async fn send_ticket(&mut self, inline: Option<(&ChunkMeta, &Bytes)>) -> anyhow::Result<()> {
        let subject = self.session.layout.queue_subject(&self.settings.pipe);
        let mut created = false;
        let started = Instant::now();
        let mut busy = 0;
        loop {
            let (headers, body) = self.ticket_message(inline);
            let result = match self
                .session
                .js
                .publish_with_headers(subject.clone(), headers, body)
                .await
            {
                Ok(ack) => self.bounded(ack).await?,
                Err(e) => Err(e),
            };
            match result {
                Ok(ack) => {
                    self.ticket_seq = Some(ack.sequence);
                    self.note_home(&ack);
                    break;
                }
                Err(e) if e.kind() == PublishErrorKind::StreamNotFound && !created => {
                    self.session.ensure_streams().await?;
                    created = true;
                }
                Err(e)
                    if errors::is(&e, Refusal::Busy)
                        && started.elapsed() < self.session.conn.retry.give_up_after =>
                {
                    self.pause(busy_pause(busy)).await?;
                    busy += 1;
                }
                // The queue stream, the server's store or the account's storage is full: wait
                // for takers to drain it, as for a chunk.
                Err(e) if errors::is(&e, Refusal::Full) => self.wait_full(started, &e).await?,
                Err(e) if errors::is(&e, Refusal::NoTtl) && self.ttl.is_some() => {
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
                    return Err(anyhow::Error::new(e)).with_context(|| {
                        format!(
                            "cannot queue a payload on pipe {} at {}",
                            self.settings.pipe, self.session.url
                        )
                    })
                }
            }
        }
        self.announced();
        Ok(())
    }

    /// Notes the domain the ticket's acknowledgement names when it is not the one this
    /// sender meant: the payload is in a pipe no taker of this domain sees.
    fn note_home(&mut self, ack: &async_nats::jetstream::publish::PublishAck) {
        if let Some(meant) = &self.session.domain {
            if !ack.domain.is_empty() && ack.domain != *meant {
                self.landed_in = Some(ack.domain.clone());
            }
        }
    }

    /// Fails a payload whose ticket was stored in another JetStream domain than the one
    /// meant: marks it aborted there (any taker of that domain is told, none waits on it)
    /// and removes it there.
    async fn refuse_elsewhere(&mut self) -> anyhow::Result<()> {
        let Some(home) = self.landed_in.take() else {
            return Ok(());
        };
        let meant = self.session.domain.clone().unwrap_or_default();
        let reason = format!(
            "the payload was stored in JetStream domain {home}, not in {meant:?} where the \
             sender meant it"
        );
        abort_within(self, &reason).await;
        let there = async_nats::jetstream::ContextBuilder::new()
            .timeout(Duration::from_secs(5))
            .domain(&home)
            .build(self.session.client.clone());
        if let Ok(data) = there
            .get_stream_no_info(self.session.layout.data_stream())
            .await
        {
            let _ = data.purge().filter(self.subject.clone()).await;
        }
        if let (Some(seq), Ok(queue)) = (
            self.ticket_seq,
            there
                .get_stream_no_info(self.session.layout.queue_stream())
                .await,
        ) {
            let _ = queue.delete_message(seq).await;
        }
        Err(anyhow!(
            "payload {} was stored in JetStream domain {home}, not in {}: prefix {}'s pipes \
             live there, where no taker of this domain finds it (use --js-domain {home}); \
             it was marked aborted and removed",
            self.id,
            if meant.is_empty() {
                "the one this command uses".to_string()
            } else {
                format!("domain {meant}")
            },
            self.session.layout.prefix()
        ))
    }

    /// The ticket is stored: the payload is in the pipe.
    fn announced(&mut self) {
        tracing::info!("payload {} queued on pipe {}", self.id, self.settings.pipe);
        self.ticket_sent = true;
        self.owed_since = (!self.window.is_empty()).then(Instant::now);
        presence::track(&self.active, self.id.as_str(), true);
    }

    /// Publishes the ticket without waiting for its ack (a refusal shows in the ack). With
    /// `inline`, the payload's only chunk (headers, body) rides in the ticket too.
    async fn publish_ticket(
        &self,
        inline: Option<(&ChunkMeta, &Bytes)>,
    ) -> anyhow::Result<PublishAckFuture> {
        let subject = self.session.layout.queue_subject(&self.settings.pipe);
        let (headers, body) = self.ticket_message(inline);
        self.session.js_publish(&subject, &headers, &body).await
    }

    /// The ticket's headers and body. With `inline`, the payload's only chunk (its meta and
    /// its body as published) rides in the ticket too.
    fn ticket_message(
        &self,
        inline: Option<(&ChunkMeta, &Bytes)>,
    ) -> (async_nats::HeaderMap, Bytes) {
        match inline {
            Some((meta, body)) => {
                let chunk = pipe::chunk_headers(meta, self.ttl);
                (pipe::inline_ticket_headers(&chunk, &self.id), body.clone())
            }
            None => (
                pipe::ticket_headers(
                    &self.id,
                    self.ttl,
                    self.size,
                    self.live.path.ticket_key().as_ref(),
                ),
                Bytes::new(),
            ),
        }
    }

    /// Publishes the next chunk into the window, waiting for old acks when the window is
    /// full: `data` are its payload bytes, sealed first when sealing; `end` its end, whose
    /// CRC this fills in. Afterwards `self.offset` counts `data` in.
    ///
    /// The first chunk follows its ticket without waiting for the ticket's ack, so a
    /// one-chunk payload (a trigger, a line) is stored within one round trip; a small one
    /// rides in the ticket as well, so its receiver needs no request for it.
    async fn publish(&mut self, data: Bytes, end: Option<End>) -> anyhow::Result<()> {
        self.owed_since.get_or_insert_with(Instant::now);
        let (meta, chunk, crc) = self.cut(data, end)?;
        let plain_len = chunk.plain_len;
        if self.ticket_sent {
            self.publish_next(meta.end.is_some(), chunk).await?;
        } else {
            self.publish_first(&meta, chunk).await?;
        }
        // The running CRC counts the chunk in once it is handed on: a chunk that fails
        // before leaves the sender's place in the payload where it was.
        self.crc = crc;
        self.chunk += 1;
        self.offset += plain_len;
        Ok(())
    }

    /// The next chunk, ready to publish: its meta (the end's CRC filled in), the chunk as
    /// published (sealed when sealing), and the running CRC with its body counted in.
    fn cut(
        &self,
        data: Bytes,
        end: Option<End>,
    ) -> anyhow::Result<(ChunkMeta, Chunk, crc32fast::Hasher)> {
        let mut meta = ChunkMeta {
            id: self.id.clone(),
            chunk: self.chunk,
            offset: self.offset,
            prior_crc: self.crc.clone().finalize(),
            end,
            seal: self.sealer.as_ref().map(Sealer::seal_headers),
        };
        let at = Place {
            chunk: self.chunk,
            offset: self.offset,
            prior_crc: meta.prior_crc,
        };
        let plain_len = data.len() as u64;
        let body = match &self.sealer {
            Some(sealer) => sealer.seal(&meta, &data)?,
            None => data,
        };
        let mut crc = self.crc.clone();
        crc.update(&body);
        if let Some(End::Eof(totals) | End::Abort { totals, .. }) = &mut meta.end {
            totals.crc = crc.clone().finalize();
        }
        let headers = pipe::chunk_headers(&meta, self.ttl);
        let chunk = Chunk {
            at,
            headers,
            data: body,
            plain_len,
        };
        Ok((meta, chunk, crc))
    }

    /// A chunk after the ticket's: between the first chunk and the last, a taker that asked
    /// gets them live; the last one is stored after every live chunk is acknowledged (or
    /// stored).
    async fn publish_next(&mut self, last: bool, chunk: Chunk) -> anyhow::Result<()> {
        self.hear_live().await?;
        if last {
            self.settle_live().await?;
            // Nobody can have finished the payload before its end is stored: a ticket gone
            // now was dropped, and the end would be stored for no one.
            self.check_ticket(true).await?;
        } else {
            self.check_ticket(false).await?;
        }
        if !last && self.live.path.is_live() {
            self.send_live(chunk).await
        } else {
            self.store(chunk).await
        }
    }

    /// The first chunk, right behind its ticket (in it too, when the payload is one small
    /// chunk); when the ticket is refused, the careful path stores the ticket and the chunk
    /// goes again after it.
    async fn publish_first(&mut self, meta: &ChunkMeta, mut chunk: Chunk) -> anyhow::Result<()> {
        let whole = self.chunk == 0 && matches!(meta.end, Some(End::Eof(_)));
        let inline = (whole && chunk.data.len() <= pipe::INLINE_MAX).then_some((meta, &chunk.data));
        let ticket = self.publish_ticket(inline).await;
        self.make_room(chunk.data.len()).await?;
        let mut ack = self.publish_once(&chunk.headers, &chunk.data).await?;
        let stored = match ticket {
            Ok(ticket_ack) => match self.bounded(ticket_ack).await? {
                Ok(ack) => {
                    self.ticket_seq = Some(ack.sequence);
                    self.note_home(&ack);
                    true
                }
                Err(_) => false,
            },
            Err(_) => false,
        };
        if stored {
            self.announced();
        } else {
            // The way through (streams created, TTL dropped, a pause) is the careful path's;
            // the chunk goes again after the ticket, and whatever the first attempt stored of
            // it is not stored twice.
            drop(ack);
            if let Err(e) = self.send_ticket(inline).await {
                self.forget_unannounced().await;
                return Err(e);
            }
            chunk.headers = pipe::chunk_headers(meta, self.ttl);
            ack = self.publish_once(&chunk.headers, &chunk.data).await?;
        }
        self.push_in_flight(ack, chunk);
        Ok(())
    }

    /// The data stream, for taking chunks out of it.
    async fn data_stream(&self) -> anyhow::Result<async_nats::jetstream::stream::Stream<()>> {
        self.session
            .js
            .get_stream_no_info(self.session.layout.data_stream())
            .await
            .context("cannot reach the data stream")
    }

    /// Waits for the server's answer: with `--timeout`, for at most that long (a server that
    /// stopped answering, SIGSTOP or a hung host, keeps the connection open and says nothing).
    /// Ctrl-C or SIGTERM ends the wait at once.
    async fn bounded<F: std::future::IntoFuture>(&self, answer: F) -> anyhow::Result<F::Output> {
        let answer = answer.into_future();
        let Some(t) = self.settings.timeout else {
            return tokio::select! {
                biased;
                _ = self.cancel.cancelled() => Err(Failure::Interrupted.into()),
                a = answer => Ok(a),
            };
        };
        let since = self.owed_since.unwrap_or_else(Instant::now);
        let left = t.saturating_sub(since.elapsed());
        tokio::select! {
            biased;
            _ = self.cancel.cancelled() => Err(Failure::Interrupted.into()),
            a = tokio::time::timeout(left, answer) => a.map_err(|_| {
                anyhow!(
                    "the server at {} did not answer for {} (--timeout); the payload is incomplete",
                    self.session.url,
                    humantime::format_duration(t)
                )
            }),
        }
    }

    /// Sleeps, unless Ctrl-C or SIGTERM comes first.
    async fn pause(&self, d: Duration) -> anyhow::Result<()> {
        tokio::select! {
            biased;
            _ = self.cancel.cancelled() => Err(Failure::Interrupted.into()),
            _ = tokio::time::sleep(d) => Ok(()),
        }
    }

    /// The store refused a publish as full (a stream's limit, the server's store or the
    /// account's storage limit): says so once and waits a little for takers to drain it, or
    /// gives up when it stayed full for `--timeout` since `started`.
    async fn wait_full(
        &mut self,
        started: Instant,
        err: &(dyn std::error::Error + 'static),
    ) -> anyhow::Result<()> {
        if let Some(t) = self.settings.timeout {
            if started.elapsed() >= t {
                return Err(anyhow!(
                    "the storage for pipes stayed full for {} ({err}); the payload is incomplete",
                    humantime::format_duration(t)
                ));
            }
        }
        if !self.told_full && !self.settings.quiet {
            eprintln!(
                "skypipe: the storage for pipes is full (the server's, the stream's or the \
                 account's limit); waiting for takers to drain it"
            );
            self.told_full = true;
        }
        self.pause(Duration::from_millis(500)).await
    }

    /// Hands one message to the client, retrying while the server is away.
    async fn publish_once(
        &self,
        headers: &async_nats::HeaderMap,
        data: &Bytes,
    ) -> anyhow::Result<PublishAckFuture> {
        let deadline = Instant::now() + self.session.conn.retry.give_up_after;
        loop {
            // The client holds a publish back while too many acks are outstanding: a wait on
            // the server too.
            let publish = self.session.js.publish_with_headers(
                self.subject.clone(),
                headers.clone(),
                data.clone(),
            );
            match self.bounded(publish).await? {
                Ok(ack) => return Ok(ack),
                Err(e) if Instant::now() < deadline => {
                    tracing::debug!("{e}");
                    self.pause(Duration::from_millis(250)).await?;
                }
                Err(e) => return Err(self.lost(e)),
            }
        }
    }

    /// The server stayed away for as long as the retry policy allows.
    fn lost(&self, e: impl std::error::Error + Send + Sync + 'static) -> anyhow::Error {
        anyhow::Error::new(e).context(format!(
            "lost the server at {} for {}; the payload is incomplete",
            self.session.url,
            self.session.conn.retry.shown()
        ))
    }

    /// Waits for the oldest chunk's ack. A chunk whose ack never came (the server restarted,
    /// the connection dropped) is published again; a full server is waited out like a full
    /// pipe, up to `--timeout`.
    async fn await_oldest(&mut self) -> anyhow::Result<()> {
        let Some(mut f) = self.window.pop_front() else {
            return Ok(());
        };
        match self.store_oldest(&mut f).await {
            Ok(()) => Ok(()),
            Err(e) => {
                // Whether it is stored is not known: it stays first in the window, for an
                // abort marker to be put in its place should it not be.
                f.ack = None;
                self.window.push_front(f);
                Err(e)
            }
        }
    }

    /// Waits until chunk `f` (the oldest of the window) is stored, as [`Self::await_oldest`].
    async fn store_oldest(&mut self, f: &mut InFlight) -> anyhow::Result<()> {
        let started = Instant::now();
        let mut busy = 0;
        loop {
            let ack = match f.ack.take() {
                Some(ack) => ack,
                None => self.publish_once(&f.chunk.headers, &f.chunk.data).await?,
            };
            let err = match self.bounded(ack).await? {
                Ok(ack) => return self.stored_oldest(&f.chunk, ack.sequence).await,
                Err(e) => e,
            };
            if errors::refusal(&err).is_some() {
                // A refusal is an answer: the server is there (a full store has its own clock).
                self.owed_since = Some(Instant::now());
            }
            if errors::is(&err, Refusal::Full) {
                self.unstore_later().await?;
                self.wait_full(started, &err).await?;
            } else if errors::is(&err, Refusal::Busy)
                && started.elapsed() < self.session.conn.retry.give_up_after
            {
                tracing::debug!("{err}; publishing the chunk again");
                self.pause(busy_pause(busy)).await?;
                busy += 1;
            } else if errors::refusal(&err).is_some_and(|r| r != Refusal::NoStream) {
                // A refusal by JetStream itself. "No stream answered" is not one here: the
                // streams exist (the ticket was stored), so it is a stream between leaders
                // (a cluster node died), and the chunk goes again like a lost ack.
                return Err(anyhow::Error::new(err).context("a chunk was not stored"));
            } else if started.elapsed() >= self.session.conn.retry.give_up_after {
                return Err(self.lost(err));
            } else {
                // The ack never came: the server restarted or the connection dropped. A
                // fresh connection, and every unacknowledged chunk published again (the
                // server keeps one copy of each, by its Nats-Msg-Id).
                tracing::debug!("{err}; reconnecting and publishing again");
                self.reconnect().await?;
                for later in self.window.iter_mut() {
                    later.ack = None;
                }
                self.publish_taken_back().await?;
            }
            f.ack = Some(self.publish_once(&f.chunk.headers, &f.chunk.data).await?);
        }
    }

    /// The oldest chunk of the window is stored, at stream sequence `seq`.
    async fn stored_oldest(&mut self, chunk: &Chunk, seq: u64) -> anyhow::Result<()> {
        self.live.path.stored(chunk.at.chunk, seq);
        // The server answered: the clock of --timeout starts again.
        self.owed_since = (!self.window.is_empty()).then(Instant::now);
        self.window_bytes -= chunk.data.len();
        self.stored.add(chunk.plain_len);
        // Later chunks taken back after a refusal go again now, in order, before any new one.
        self.publish_taken_back().await
    }

    /// Publishes again, in order, every chunk of the window whose ack was given up on or
    /// taken back (after a refusal, or on a connection that was replaced).
    async fn publish_taken_back(&mut self) -> anyhow::Result<()> {
        let mut window = std::mem::take(&mut self.window);
        let again = async {
            for later in window.iter_mut().filter(|l| l.ack.is_none()) {
                let c = &later.chunk;
                later.ack = Some(self.publish_once(&c.headers, &c.data).await?);
            }
            anyhow::Ok(())
        }
        .await;
        self.window = window;
        again
    }

    /// The oldest chunk of the window was refused as full, and the later ones were published
    /// after it. Any the store took all the same (a taker made room meanwhile) would lie ahead
    /// of it: a taker holds them, waiting for the refused one, while they fill the room it
    /// needs. So they are taken out of the stream again and go after it, in order, under
    /// `Nats-Msg-Id`s of their own (docs/protocol.md, "Sending", step 3).
    async fn unstore_later(&mut self) -> anyhow::Result<()> {
        let mut stored = Vec::new();
        let mut window = std::mem::take(&mut self.window);
        let mut taken = Ok(());
        for later in window.iter_mut() {
            // Not published since it was last taken back: nothing to do.
            let Some(ack) = later.ack.take() else {
                continue;
            };
            match self.bounded(ack).await {
                Ok(Ok(ack)) => stored.push(ack.sequence),
                Ok(Err(_)) => {}
                Err(e) => {
                    taken = Err(e);
                    break;
                }
            }
            // Published again later, so under another id: the server remembers the old one.
            let headers = &mut later.chunk.headers;
            if let Some(id) = headers.get(pipe::H_NATS_MSG_ID) {
                let again = format!("{}+", id.as_str());
                headers.insert(pipe::H_NATS_MSG_ID, again.as_str());
            }
        }
        self.window = window;
        taken?;
        if stored.is_empty() {
            return Ok(());
        }
        tracing::debug!(
            "{} later chunks were stored ahead of a refused one: taking them out",
            stored.len()
        );
        let data = self.data_stream().await?;
        for seq in stored {
            if let Err(e) = self.bounded(data.delete_message(seq)).await? {
                tracing::debug!("cannot take out the chunk at stream sequence {seq}: {e}");
            }
        }
        Ok(())
    }

    /// Replaces the connection with a new one, for as long as the retry policy allows.
    async fn reconnect(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + self.session.conn.retry.give_up_after;
        loop {
            match crate::client::session::connect(&self.session.conn).await {
                Ok(mut fresh) => {
                    fresh.crypto = self.session.crypto.clone();
                    fresh.domain = self.session.domain.clone();
                    let old = std::mem::replace(&mut self.session, fresh);
                    drop(old);
                    return Ok(());
                }
                Err(e) if Instant::now() < deadline => {
                    tracing::debug!("{e}");
                    self.pause(Duration::from_millis(500)).await?;
                }
                Err(e) => {
                    return Err(e.context(format!(
                        "lost the server for {}; the payload is incomplete",
                        self.session.conn.retry.shown()
                    )))
                }
            }
        }
    }

    async fn drain(&mut self) -> anyhow::Result<()> {
        self.settle_live().await?;
        while !self.window.is_empty() {
            self.await_oldest().await?;
        }
        Ok(())
    }

    /// Adds a data piece; `eof` makes it the last chunk.
    async fn piece(&mut self, mut data: Bytes, eof: bool) -> anyhow::Result<()> {
        // An empty piece that is not the end carries nothing.
        if data.is_empty() && !eof {
            return Ok(());
        }
        // Stdin is cut before the server's message size is known: a server with a small
        // max_payload gets more, smaller chunks. Live chunks may be bigger.
        let max = if self.live.path.is_live() {
            self.session.live_chunk_size
        } else {
            self.session.chunk_size
        };
        while data.len() > max {
            let part = data.split_to(max);
            self.publish(part, None).await?;
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

    /// Stops the send when the payload's ticket left the pipe before the payload's end was
    /// stored: nobody can ever take the rest. That is `skypipe rm` dropping it, a taker that
    /// took it and stopped reading (its output closed), a taker that removed it as corrupt,
    /// or its TTL. Checks at most every [`TICKET_CHECK_EVERY`], or at once with `now`; a
    /// check the server does not answer (or refuses) counts as the ticket being there.
    async fn check_ticket(&mut self, now: bool) -> anyhow::Result<()> {
        let Some(seq) = self.ticket_seq else {
            return Ok(());
        };
        if !self.ticket_check.check(Instant::now(), now) {
            return Ok(());
        }
        // A login without the permission sends as before, unchecked.
        self.session.denied.tolerate_ticket_check();
        if self.session.denied.ticket_check_refused() {
            return Ok(());
        }
        let Ok(queue) = self
            .session
            .js
            .get_stream_no_info(self.session.layout.queue_stream())
            .await
        else {
            return Ok(());
        };
        let asked = tokio::time::timeout(TICKET_CHECK_EVERY, queue.get_raw_message(seq)).await;
        match asked {
            Ok(Err(e)) if e.kind() == RawMessageErrorKind::NoMessageFound => {}
            Ok(Err(e)) => {
                tracing::debug!("cannot check the ticket of payload {}: {e}", self.id);
                return Ok(());
            }
            Ok(Ok(_)) | Err(_) => return Ok(()),
        }
        tracing::info!(
            "the ticket of payload {} left pipe {} before the payload's end",
            self.id,
            self.settings.pipe
        );
        Err(self.dropped().await)
    }

    /// The payload was dropped: lets the chunks in flight be stored (for a while), so that
    /// none lands after the purge, then removes everything stored of the payload.
    async fn dropped(&mut self) -> anyhow::Error {
        self.ended = true;
        let window = std::mem::take(&mut self.window);
        self.window_bytes = 0;
        let _ = tokio::time::timeout(DROPPED_SETTLE, async {
            for f in window {
                if let Some(ack) = f.ack {
                    let _ = ack.await;
                }
            }
        })
        .await;
        self.live.path.drop_all();
        self.forget_unannounced().await;
        presence::track(&self.active, self.id.as_str(), false);
        Failure::Dropped(format!(
            "payload {} of pipe {} was dropped after {} bytes: it left the pipe before its \
             end (a receiver took it and stopped reading, `skypipe rm` dropped it, or its \
             --ttl ran out), so nothing more was sent and what was stored of it was removed",
            self.id, self.settings.pipe, self.offset
        ))
        .into()
    }

    /// Removes everything stored of the payload: what the first chunk may have stored when
    /// its ticket could not be, or what was stored of a payload dropped while it was sent.
    /// No receiver would ever take it.
    async fn forget_unannounced(&self) {
        if let Ok(data) = self.data_stream().await {
            let _ = data.purge().filter(self.subject.clone()).await;
        }
    }

    /// Marks the payload aborted (only when a ticket announced it, and only once), so that
    /// no taker waits on it: the abort marker goes right after the chunks that are written
    /// or stored, in place of the first one that is not (refused by a full store, or never
    /// acknowledged). When the store refuses the marker too (full), the payload's stored
    /// chunks are removed to make room, and the marker is stored as its chunk 0.
    async fn abort(&mut self, reason: &str) -> anyhow::Result<()> {
        if !self.ticket_sent || self.ended {
            return Ok(());
        }
        self.ended = true;
        let deadline = Instant::now() + ABORT_SETTLE;
        self.quiet_live(deadline).await;
        let mut place = Place {
            chunk: self.chunk,
            offset: self.offset,
            prior_crc: self.crc.clone().finalize(),
        };
        if let Some(c) = self.live.path.first_unacked() {
            place = c.at;
        }
        let place = self.first_not_stored(place, deadline).await;
        let refused = match self.store_marker(place, reason, false, deadline).await {
            Ok(()) => return Ok(()),
            Err(e) if errors::is(&*e, Refusal::Full) => e,
            Err(e) => return Err(e),
        };
        tracing::info!(
            "the store refused the abort marker of payload {} ({refused}); removing the \
             payload's chunks to make room for it",
            self.id
        );
        self.forget_unannounced().await;
        let start = Place {
            chunk: 0,
            offset: 0,
            prior_crc: 0,
        };
        // The store answered: it gets another while to take the marker.
        let deadline = Instant::now() + ABORT_SETTLE;
        self.store_marker(start, reason, true, deadline).await
    }

    /// The chunks in flight, oldest first, below `place`: the first one not stored (by
    /// `deadline`) is where the payload ends, else `place`. One whose ack was given up on is
    /// published again (its Nats-Msg-Id keeps it from being stored twice) to learn which it is.
    async fn first_not_stored(&mut self, place: Place, deadline: Instant) -> Place {
        let window = std::mem::take(&mut self.window);
        self.window_bytes = 0;
        for f in window {
            let c = f.chunk;
            if c.at.chunk >= place.chunk {
                break;
            }
            let ack = match f.ack {
                Some(ack) => Ok(ack),
                None => {
                    let subject = self.subject.clone();
                    self.session
                        .js
                        .publish_with_headers(subject, c.headers, c.data)
                        .await
                }
            };
            let stored = match ack {
                Ok(ack) => matches!(
                    tokio::time::timeout_at(deadline.into(), ack).await,
                    Ok(Ok(_))
                ),
                Err(_) => false,
            };
            if !stored {
                return c.at;
            }
        }
        place
    }

    /// Lets the live taker acknowledge what it wrote of the chunks sent live (until it is
    /// quiet, or `deadline`): those need no marker after them.
    async fn quiet_live(&mut self, deadline: Instant) {
        while self.live.path.waiting() && Instant::now() < deadline {
            let until = deadline.min(self.live.path.quiet_at());
            let Heard::Ack(m) = self.live.next_by(until).await else {
                return;
            };
            let Ok(ack) = pipe::parse_live_ack(m.headers.as_ref()) else {
                continue;
            };
            let written = self
                .live
                .path
                .on_word_aborting(&ack, self.chunk, Instant::now());
            self.stored.add(written);
            self.live.written.add(written);
        }
    }

    /// Stores the abort marker as chunk `place`, and waits for it to be stored until `deadline`.
    /// `alone`: it replaces every chunk of the payload, under a Nats-Msg-Id of its own (the
    /// payload's chunk 0 may be remembered by the server's de-duplication).
    async fn store_marker(
        &mut self,
        place: Place,
        reason: &str,
        alone: bool,
        deadline: Instant,
    ) -> anyhow::Result<()> {
        let totals = Totals {
            chunks: place.chunk + 1,
            bytes: place.offset,
            // The checksum takes in the sealed body: it is filled in below (a seal binds
            // the end but not its checksum).
            crc: 0,
        };
        let mut meta = ChunkMeta {
            id: self.id.clone(),
            chunk: place.chunk,
            offset: place.offset,
            prior_crc: place.prior_crc,
            end: Some(End::Abort {
                totals,
                reason: reason.to_string(),
            }),
            seal: self.sealer.as_ref().map(Sealer::seal_headers),
        };
        let body = match &self.sealer {
            Some(sealer) => sealer.seal(&meta, &Bytes::new())?,
            None => Bytes::new(),
        };
        let mut crc = crc32fast::Hasher::new_with_initial(place.prior_crc);
        crc.update(&body);
        if let Some(End::Abort { totals, .. }) = &mut meta.end {
            totals.crc = crc.finalize();
        }
        let mut headers = pipe::chunk_headers(&meta, self.ttl);
        if alone {
            headers.insert(pipe::H_NATS_MSG_ID, pipe::abort_msg_id(&self.id).as_str());
        }
        let ack = self
            .session
            .js
            .publish_with_headers(self.subject.clone(), headers, body)
            .await
            .context("the abort marker was not published")?;
        match tokio::time::timeout_at(deadline.into(), ack).await {
            Ok(Ok(_)) => {
                tracing::info!(
                    "payload {} marked aborted at chunk {} after {} bytes",
                    self.id,
                    place.chunk,
                    place.offset
                );
                Ok(())
            }
            Ok(Err(e)) => Err(anyhow::Error::new(e).context("the abort marker was not stored")),
            Err(_) => Err(anyhow!("the server did not acknowledge the abort marker")),
        }
    }

    fn sent(&self) -> Sent {
        tracing::info!(
            "payload {} stored: {} chunks, {} bytes",
            self.id,
            self.chunk,
            self.offset
        );
        Sent {
            id: self.ticket_sent.then(|| self.id.clone()),
        }
    }
}

/// Sends everything from `input` as one payload.
pub(crate) async fn send(
    session: &Session,
    settings: &PipeSettings,
    input: Input,
    cancel: CancellationToken,
    interrupted: Arc<AtomicBool>,
    total: Option<u64>,
) -> anyhow::Result<Sent> {
    let Input {
        pieces: mut input,
        size,
    } = input;
    let mut s = Sender::new(session.clone(), settings, cancel.clone());
    s.input_chunk = Some(size);
    s.size = total;
    s.offer_live().await;
    if let Some(secret) = &session.crypto.secret {
        // Stdin is read meanwhile, on its own thread.
        let key = tokio::select! {
            biased;
            _ = cancel.cancelled() => return Err(Failure::Interrupted.into()),
            key = secret.new_payload_key() => key?,
        };
        s.sealer = Some(Sealer::new(key, session.place(&settings.pipe)));
    }
    let progress = Progress::start(settings.progress, "sent", total, s.stored.clone(), None);
    let _presence = Presence::start(
        session.client.clone(),
        &session.layout,
        &settings.pipe,
        Role::Send,
        s.stored.clone(),
        s.active.clone(),
        Some(s.live.written.clone()),
    );
    let result = send_all(&mut s, &mut input, &cancel, &interrupted).await;
    match &result {
        Ok(_) => progress.finish(),
        Err(_) => progress.clear(),
    }
    result
}

/// Sends the pieces of stdin; on any failure once the ticket is out (a full store that stayed
/// full for `--timeout`, a refusal, a lost server, Ctrl-C or SIGTERM during any wait), marks
/// the payload aborted, so that no taker waits on it or takes it for one that may still end.
async fn send_all(
    s: &mut Sender<'_>,
    input: &mut mpsc::Receiver<std::io::Result<Piece>>,
    cancel: &CancellationToken,
    interrupted: &AtomicBool,
) -> anyhow::Result<Sent> {
    let e = match send_pieces(s, input, cancel, interrupted).await {
        Ok(sent) => return Ok(sent),
        Err(e) => e,
    };
    if !s.ticket_sent || s.ended {
        return Err(e);
    }
    if matches!(e.downcast_ref::<Failure>(), Some(Failure::Interrupted)) {
        abort_within(s, "the sender was interrupted").await;
        return Err(e);
    }
    let reason = format!("the sender failed: {e}");
    if let Err(why) = try_abort(s, &reason).await {
        // Most often the failure itself (a server lost for good) keeps the marker out too;
        // the error says the payload is incomplete either way.
        tracing::info!("could not mark payload {} aborted: {why}", s.id);
        return Err(e);
    }
    let marked = format!(
        "payload {} of pipe {} was marked aborted (takers get exit 3)",
        s.id, s.settings.pipe
    );
    Err(e.context(marked))
}

async fn send_pieces(
    s: &mut Sender<'_>,
    input: &mut mpsc::Receiver<std::io::Result<Piece>>,
    cancel: &CancellationToken,
    interrupted: &AtomicBool,
) -> anyhow::Result<Sent> {
    loop {
        // While stdin pauses, the live taker's word (or silence) is still acted on: a taker
        // that went away must not hold the chunks it did not write.
        let waiting = s.live.path.waiting();
        let check = tokio::time::Instant::from_std(s.ticket_check.due());
        let next = tokio::select! {
            biased;
            _ = cancel.cancelled() => None,
            piece = input.recv() => Some(piece),
            heard = s.live.next(), if waiting => {
                s.on_heard(heard).await?;
                continue;
            }
            // While stdin pauses, a payload nobody can take any more is still noticed.
            _ = tokio::time::sleep_until(check), if s.ticket_seq.is_some() => {
                s.check_ticket(false).await?;
                continue;
            }
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
                if piece.eof && piece.data.is_empty() && !s.ticket_sent && s.settings.guessed {
                    // A guess that found nothing to send was likely wrong: the empty end of a
                    // script's input, not a trigger (which is at least a newline).
                    return Err(Failure::Usage(format!(
                        "stdin was empty, so nothing was sent on pipe {p}: `skypipe send {p}` \
                         sends an empty payload, `skypipe recv {p}` receives",
                        p = s.settings.pipe
                    ))
                    .into());
                }
                s.piece(piece.data, piece.eof).await?;
                s.refuse_elsewhere().await?;
                if piece.eof {
                    s.drain().await?;
                    return Ok(s.sent());
                }
            }
            Some(Some(Err(e))) => {
                let reason = format!("the sender could not read its input: {e}");
                abort_within(s, &reason).await;
                return Err(anyhow::Error::new(e)
                    .context("cannot read stdin; the payload was marked aborted"));
            }
            Some(None) => {
                abort_within(s, "the sender's input reader stopped").await;
                return Err(anyhow!("the stdin reader stopped unexpectedly"));
            }
        }
    }
}

/// Tries to publish the abort marker, but never waits long for a server that is gone; whether
/// it was stored.
async fn abort_within(s: &mut Sender<'_>, reason: &str) -> bool {
    match try_abort(s, reason).await {
        Ok(()) => true,
        Err(why) => {
            eprintln!("skypipe: could not mark the payload aborted: {why}");
            false
        }
    }
}

/// [`abort_within`] without a word of its own: why the marker could not be stored.
async fn try_abort(s: &mut Sender<'_>, reason: &str) -> Result<(), String> {
    match tokio::time::timeout(Duration::from_secs(6), s.abort(reason)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(crate::error::one_line(&e)),
        Err(_) => Err("the server did not answer".into()),
    }
}
