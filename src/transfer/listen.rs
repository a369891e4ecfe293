//! Listening in: a live copy of everything sent to a pipe from now on, through an ephemeral
//! ordered consumer on the pipe's data subjects. It takes no ticket and removes nothing, so
//! what the pipe's takers get is exactly what they would get without it.
//!
//! A listener that joins in the middle of a payload starts at the next chunk. It exits at the
//! first end of a payload unless `--follow`. One that falls behind so far that takers removed
//! chunks before it read them says how many it missed and exits 1 (with `--follow`: says so
//! and goes on with the other payloads): it never writes a gap. It also watches the pipe's
//! tickets, so a payload sent and taken whole before the listener could read any of it is
//! reported too, never silently skipped. With `--follow`, lines stay whole.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context as _};
use async_nats::jetstream::consumer::{pull, DeliverPolicy};
use async_nats::jetstream::stream;
use async_nats::HeaderMap;
use bytes::Bytes;
use futures::stream::Peekable;
use futures::{FutureExt as _, StreamExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

use crate::client::errors::{self, Refusal};
use crate::client::session::Session;
use crate::config::PipeSettings;
use crate::error::Failure;
use crate::protocol::pipe::{self, ChunkMeta, End, Layout, PayloadId, PipeName};
use crate::rules::listen::{self, After, Book, Carried, LiveFeed, Missed, OnTicket};
use crate::transfer::live::Acker;
use crate::transfer::output::Writer;
use crate::transfer::payload::{self, Reader, Step, NOT_STORED};
use crate::transfer::presence::{self, Role, Watch};
use crate::transfer::reception::Reception;

/// Chunks asked for per pull request. Larger than a taker's, so a listener reading as fast
/// as the takers has the chunks in hand before they are removed.
const LISTEN_BATCH: i64 = 64;
/// How long a listener waits for the server to hold its first pull request before it says it
/// listens anyway, and how often it asks meanwhile.
const PULL_IN_PLACE_WITHIN: Duration = Duration::from_secs(5);
const PULL_IN_PLACE_POLL: Duration = Duration::from_millis(5);

/// A chunk to write: its headers, its body, and its stream sequence ([`NOT_STORED`] when it
/// came live or in a ticket).
type Chunk = (ChunkMeta, Bytes, u64);

/// Listens on the pipe until the first payload ends (or forever with `--follow`).
pub(crate) async fn listen(
    session: &Session,
    settings: &PipeSettings,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let pipe = &settings.pipe;
    let (data, consumer_name, messages) = open_consumer(session, pipe).await?;
    // This listener's token in its acknowledgements of live chunks.
    let token = format!("{:016x}", rand::random::<u64>());
    // Chunks sent live to a taker (docs/protocol.md, "The live path"), subscribed to before
    // the tickets below: every payload announced from then on reaches this listener stored or
    // live.
    let held = Arc::new(AtomicUsize::new(0));
    let (_live_feed, live) = subscribe_live(session, pipe, &token, held.clone()).await;
    // Tickets published from now on: their chunks are published after the consumer above
    // exists, so each of them must reach this listener, or be reported as missed.
    let tickets = session
        .client
        .subscribe(session.layout.queue_subject(pipe))
        .await
        .with_context(|| format!("cannot listen on pipe {pipe} at {}", session.url))?;
    let mut messages = messages.peekable();
    pull_in_place(&data, &consumer_name, &mut messages).await;
    tracing::info!("listening on pipe {pipe}");
    let reception = Reception::start(session, settings, Role::Listen, cancel.clone()).await?;
    let follow = settings.mode.keeps_going();
    let mut listener = Listener {
        session,
        settings,
        out: &reception.out,
        senders: &reception.senders,
        book: Book::new(
            Instant::now(),
            follow,
            settings.timeout,
            presence::STALE,
            reception.out.counter().get(),
        ),
        follow,
        readers: HashMap::new(),
        ackers: HashMap::new(),
        token,
        held,
    };
    let result = listener.run(&cancel, messages, tickets, live).await;
    let _ = reception.out.flush().await;
    reception.finish();
    // Senders still pacing themselves to this listener need not any more.
    let _ = tokio::time::timeout(Duration::from_secs(2), listener.stop_ackers()).await;
    let _ =
        tokio::time::timeout(Duration::from_secs(2), data.delete_consumer(&consumer_name)).await;
    result
}

/// The listener's ephemeral ordered consumer on the pipe's data subjects, from new chunks on:
/// the data stream, the consumer's name and its messages.
async fn open_consumer(
    session: &Session,
    pipe: &PipeName,
) -> anyhow::Result<(stream::Stream<()>, String, pull::Ordered)> {
    let data = session
        .js
        .get_stream_no_info(session.layout.data_stream())
        .await?;
    let config = pull::OrderedConfig {
        filter_subject: session.layout.pipe_data_wildcard(pipe),
        deliver_policy: DeliverPolicy::New,
        max_batch: LISTEN_BATCH,
        ..Default::default()
    };
    let consumer = match data.create_consumer(config.clone()).await {
        Ok(c) => c,
        Err(e) if errors::is(&e, Refusal::NoStream) => {
            session.ensure_streams().await?;
            data.create_consumer(config).await?
        }
        Err(e) if errors::is(&e, Refusal::ConsumerLimit) && session.make_room().await > 0 => {
            data.create_consumer(config).await?
        }
        Err(e) => {
            return Err(e)
                .with_context(|| format!("cannot listen on pipe {pipe} at {}", session.url))
        }
    };
    let name = consumer.cached_info().name.clone();
    let messages = consumer
        .messages()
        .await
        .with_context(|| format!("cannot listen on pipe {pipe} at {}", session.url))?;
    Ok((data, name, messages))
}

/// Starts the listener's pull and waits until the server holds it (at most
/// [`PULL_IN_PLACE_WITHIN`]): only then is every chunk stored from now on delivered to this
/// listener before a taker can remove it, and, the server reading a connection in order, the
/// subscriptions made before are in place too. So the readiness line that follows is true.
async fn pull_in_place(
    data: &stream::Stream<()>,
    consumer: &str,
    messages: &mut Peekable<pull::Ordered>,
) {
    // The first poll starts the pull; a chunk already there stays for the loop.
    let _ = std::pin::Pin::new(&mut *messages).peek().now_or_never();
    let deadline = Instant::now() + PULL_IN_PLACE_WITHIN;
    while Instant::now() < deadline {
        match data.consumer_info(consumer).await {
            Ok(info) if info.num_waiting > 0 || info.delivered.stream_sequence > 0 => return,
            Ok(_) => tokio::time::sleep(PULL_IN_PLACE_POLL).await,
            Err(e) => {
                tracing::debug!("cannot tell whether the listener's pull is in place: {e}");
                return;
            }
        }
    }
}

/// Subscribes to the live chunks of every payload of the pipe; they come through the
/// returned channel, `held` counting their bytes until they are taken out of it. No task
/// (and a channel that never brings anything) when the server does not allow the subject.
async fn subscribe_live(
    session: &Session,
    pipe: &PipeName,
    token: &str,
    held: Arc<AtomicUsize>,
) -> (
    Option<AbortOnDropHandle<()>>,
    mpsc::UnboundedReceiver<async_nats::Message>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    match session
        .client
        .subscribe(session.layout.pipe_live_wildcard(pipe))
        .await
    {
        Ok(sub) => {
            let feed = feed_live(sub, session.client.clone(), token.to_string(), held, tx);
            (Some(AbortOnDropHandle::new(tokio::spawn(feed))), rx)
        }
        Err(e) => {
            tracing::debug!("no live chunks for this listener: {e}");
            (None, rx)
        }
    }
}

/// Passes live chunks on, at most [`listen::LIVE_BUFFER_BYTES`] of them not taken yet (more
/// are dropped, and the payload reported as missed). The sender hears of this listener at
/// its first live chunk, before the listener gets to it (opening a sealed payload takes a
/// while).
async fn feed_live(
    mut sub: async_nats::Subscriber,
    client: async_nats::Client,
    token: String,
    held: Arc<AtomicUsize>,
    tx: mpsc::UnboundedSender<async_nats::Message>,
) {
    let mut feed = LiveFeed::default();
    while let Some(m) = sub.next().await {
        if !crate::client::published_by_a_client(&m) {
            continue;
        }
        if let Ok(meta) = pipe::parse_chunk(m.headers.as_ref()) {
            if feed.on_chunk(&meta.id) {
                let ack = pipe::LiveAck {
                    id: meta.id,
                    taker: token.clone(),
                    written: 0,
                    stop: false,
                    listener: true,
                    proof: None,
                };
                let subject = Layout::ack_subject_of(&m.subject);
                crate::transfer::live::tell(&client, &subject, &ack).await;
            }
        }
        let len = m.payload.len();
        if !listen::live_chunk_fits(held.load(Ordering::Relaxed), len) {
            tracing::debug!("a live chunk dropped: this listener is behind");
            continue;
        }
        held.fetch_add(len, Ordering::Relaxed);
        if tx.send(m).is_err() {
            return;
        }
    }
}

/// One listener: its book and the payloads it writes.
struct Listener<'a> {
    session: &'a Session,
    settings: &'a PipeSettings,
    out: &'a Writer,
    senders: &'a Watch,
    book: Book,
    follow: bool,
    readers: HashMap<PayloadId, Reader>,
    /// The live payloads' acknowledgements.
    ackers: HashMap<PayloadId, Acker>,
    /// This listener's token in its acknowledgements.
    token: String,
    /// Bytes of live chunks passed on and not taken yet.
    held: Arc<AtomicUsize>,
}

impl Listener<'_> {
    /// Writes what comes until the listener ends.
    async fn run(
        &mut self,
        cancel: &CancellationToken,
        mut messages: Peekable<pull::Ordered>,
        mut tickets: async_nats::Subscriber,
        mut live: mpsc::UnboundedReceiver<async_nats::Message>,
    ) -> anyhow::Result<()> {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            // A chunk to write: from the data stream, live, or the one an inline ticket carries.
            let chunk = tokio::select! {
                biased;
                _ = cancel.cancelled() => return Err(Failure::Interrupted.into()),
                _ = tick.tick() => {
                    self.on_tick()?;
                    None
                }
                Some(ticket) = tickets.next() => self.on_ticket(&ticket),
                // Stored chunks first: live ones that follow them wait for them.
                msg = messages.next() => self.on_stored(msg)?,
                Some(msg) = live.recv() => self.on_live(msg),
            };
            if let Some(chunk) = chunk {
                if let Some(end) = self.write(chunk).await {
                    return end;
                }
            }
        }
    }

    /// The periodic check: payloads missed, and the `--timeout`.
    fn on_tick(&mut self) -> anyhow::Result<()> {
        let senders = self.senders;
        let tick = self.book.on_tick(
            Instant::now(),
            self.out.counter().get(),
            self.out.busy(),
            |id| senders.sender_seen(id.as_str()),
        );
        if let Some(missed) = tick.missed {
            let e = match missed {
                Missed::End(id) => {
                    let bytes = self.readers.remove(&id).map_or(0, |r| r.offset);
                    self.ackers.remove(&id);
                    payload::MissedEnd { id, bytes }.into()
                }
                Missed::Whole(id) => payload::MissedWhole { id }.into(),
            };
            self.report(e)?;
        }
        match tick.timed_out {
            Some(t) => {
                let what = if self.follow {
                    "nothing arrived"
                } else {
                    "no payload ended"
                };
                Err(Failure::TimedOut(format!(
                    "{what} on pipe {} within {}",
                    self.settings.pipe,
                    humantime::format_duration(t)
                ))
                .into())
            }
            None => Ok(()),
        }
    }

    /// Says a payload's fault and goes on (`--follow`), or ends with it.
    fn report(&self, e: anyhow::Error) -> anyhow::Result<()> {
        match self.book.report() {
            After::Fail => Err(e),
            _ => {
                eprintln!("skypipe: {e}");
                Ok(())
            }
        }
    }

    /// A ticket published on the pipe: the chunk it carries, when that is to be written.
    fn on_ticket(&mut self, ticket: &async_nats::Message) -> Option<Chunk> {
        if !crate::client::published_by_a_client(ticket) {
            return None;
        }
        let h = ticket.headers.as_ref();
        let id = pipe::parse_ticket(h).ok()?;
        let inline = pipe::ticket_is_inline(h)
            .then(|| pipe::parse_chunk(h).ok())
            .flatten();
        let carried = match &inline {
            None if pipe::ticket_offers_live(h) => Carried::LiveOffer,
            None => Carried::Nothing,
            Some(meta) if meta.id == id => Carried::Its,
            Some(_) => Carried::Another,
        };
        match self.book.on_ticket(id, carried, Instant::now()) {
            OnTicket::Write => inline.map(|meta| (meta, ticket.payload.clone(), NOT_STORED)),
            OnTicket::Announced | OnTicket::Ignore => None,
        }
    }

    /// What the consumer delivered: a stored chunk, or the end of the listen.
    fn on_stored(
        &mut self,
        msg: Option<Result<async_nats::jetstream::Message, pull::OrderedError>>,
    ) -> anyhow::Result<Option<Chunk>> {
        let pipe = &self.settings.pipe;
        let msg = match msg {
            Some(Ok(m)) => m,
            Some(Err(e)) => {
                return Err(e).with_context(|| {
                    format!(
                        "lost the connection while listening on pipe {pipe} at {}",
                        self.session.url
                    )
                })
            }
            None => return Err(anyhow!("the server ended the listen on pipe {pipe}")),
        };
        let (seq, pending) = msg
            .info()
            .map(|i| (i.stream_sequence, i.pending))
            .map_err(payload::no_info)?;
        self.book.on_stored(pending, Instant::now());
        let meta = self.parse(msg.headers.as_ref());
        Ok(meta.map(|meta| (meta, msg.message.payload.clone(), seq)))
    }

    /// A chunk that came live.
    fn on_live(&mut self, msg: async_nats::Message) -> Option<Chunk> {
        self.held.fetch_sub(msg.payload.len(), Ordering::Relaxed);
        self.book.on_live(Instant::now());
        let meta = self.parse(msg.headers.as_ref())?;
        Some((meta, msg.payload, NOT_STORED))
    }

    fn parse(&self, headers: Option<&HeaderMap>) -> Option<ChunkMeta> {
        match pipe::parse_chunk(headers) {
            Ok(meta) => Some(meta),
            Err(e) => {
                let pipe = &self.settings.pipe;
                eprintln!("skypipe: ignoring a malformed message on pipe {pipe}: {e}");
                None
            }
        }
    }

    /// Writes a chunk of its payload; `Some` when the listener ends with it.
    async fn write(&mut self, (meta, chunk, seq): Chunk) -> Option<anyhow::Result<()>> {
        let id = meta.id.clone();
        let start = self.book.on_chunk(&id, Instant::now())?;
        let (session, pipe) = (self.session, &self.settings.pipe);
        let book = &mut self.book;
        let reader = self.readers.entry(id.clone()).or_insert_with(|| {
            Reader::new(id.clone(), start, true)
                .opening(session.opener(pipe))
                .whole_lines(self.follow)
                .may_come_live(book.may_come_live(&id))
        });
        // A payload that came live: its sender paces itself to what this listener wrote.
        if seq == NOT_STORED && !self.ackers.contains_key(&id) {
            let acker = Acker::start(
                session.client.clone(),
                session.layout.live_ack_subject(pipe, &id),
                id.clone(),
                self.token.clone(),
                true,
                reader.mark.clone(),
                None,
            );
            self.ackers.insert(id.clone(), acker);
        }
        let step = reader.accept(meta, chunk, seq, self.out).await;
        // After the write: time spent waiting on stdout is not the sender's silence.
        self.book.on_written(&id, Instant::now());
        self.after(id, step).await
    }

    /// What a written chunk led to; `Some` when the listener ends with it.
    async fn after(
        &mut self,
        id: PayloadId,
        step: anyhow::Result<Step>,
    ) -> Option<anyhow::Result<()>> {
        match step {
            Ok(Step::More) => None,
            Ok(Step::Stopped(end)) => Some(end.ending()),
            Ok(Step::End(end)) => self.ended(id, end),
            // A payload this listener fell behind on: said, and the others go on.
            Err(e) if payload::is_payload_fault(&e) => match self.book.on_fault(&id) {
                After::Fail => Some(Err(e)),
                _ => {
                    self.readers.remove(&id);
                    if let Some(acker) = self.ackers.remove(&id) {
                        acker.stop().await;
                    }
                    eprintln!("skypipe: {e}");
                    None
                }
            },
            Err(e) => Some(Err(e)),
        }
    }

    /// A payload's end reached the listener.
    fn ended(&mut self, id: PayloadId, end: End) -> Option<anyhow::Result<()>> {
        self.readers.remove(&id);
        self.ackers.remove(&id);
        let aborted = match &end {
            End::Eof(_) => None,
            End::Abort { reason, .. } => Some(payload::aborted_message(
                &id,
                self.settings.pipe.as_str(),
                reason,
                None,
            )),
        };
        match (self.book.on_end(&id, aborted.is_some()), aborted) {
            (After::Exit, _) => Some(Ok(())),
            (After::Fail, Some(m)) => Some(Err(Failure::Aborted(m).into())),
            (After::Say, Some(m)) => {
                eprintln!("skypipe: {m}");
                None
            }
            _ => None,
        }
    }

    /// Tells the senders still pacing themselves to this listener that they need not.
    async fn stop_ackers(&self) {
        for acker in self.ackers.values() {
            acker.stop().await;
        }
        let _ = self.session.client.flush().await;
    }
}
