//! The data side of `skypipe monitor`: samples the server once a second through the ordinary
//! NATS connection and the JetStream API (no monitoring port), and sends
//! [`skypipe_tui::Snapshot`]s to the dashboard, with the connection's state in between.
//!
//! Where each figure comes from, without ever pulling payload bytes:
//! - bytes in: a `headers_only` ordered consumer on the data subjects (`Nats-Msg-Size` per
//!   chunk, about 100 bytes of headers per 256 KiB chunk), timed as they arrive;
//! - bytes out, senders, takers, listeners: the presence announcements of running skypipes,
//!   timed as they are heard;
//! - payloads waiting, waiting takers: the pipe's work-queue consumer info;
//! - bytes stored: per payload subject, the number of chunks still stored (stream info with
//!   subjects) and the chunk offsets seen in the headers;
//! - oldest waiting payload: the time of the first ticket still queued.
//!
//! This module only gathers; [`aggregate`] turns what was gathered into a snapshot, without
//! NATS or a clock, so it is tested on recorded observations.

mod aggregate;

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use async_nats::jetstream::{
    self,
    consumer::{pull, DeliverPolicy},
};
use futures::StreamExt;
use skypipe_tui::{ServerStatus, Snapshot, Update};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use self::aggregate::{conn_state, Aggregator, Chunk, Gathered, Queue};
use crate::client::session::Session;
use crate::protocol::pipe::{self, Layout, H_END, H_OFFSET};
use crate::transfer::presence::Announce;

/// How often the server is sampled.
pub(crate) const SAMPLE_EVERY: Duration = Duration::from_secs(1);
/// How often the dashboard hears the state of the connection, between samples.
const STATE_EVERY: Duration = Duration::from_millis(250);
/// A sample that takes longer than this is dropped: the server is not answering.
const SAMPLE_LIMIT: Duration = Duration::from_secs(3);
/// At most this many "oldest ticket" look-ups per sample (round robin over pipes).
const OLDEST_LOOKUPS: usize = 64;
/// The first sample waits at most this long for the stored chunks' headers to be read.
const BACKLOG_WAIT: Duration = Duration::from_secs(2);
/// `--once` and `--json` wait at most this long for every rate to be known.
const ONCE_LIMIT: Duration = Duration::from_millis(2600);
/// `--once` and `--json` give up when no sample could be taken by then: the server does not
/// answer (a paused or overloaded server that keeps the connection open).
pub(crate) const ONCE_ANSWER: Duration = Duration::from_secs(5);

/// The monitor's clock: time since it started, and the wall time of that.
#[derive(Clone, Copy)]
struct Clock {
    start: Instant,
    wall: SystemTime,
}

impl Clock {
    fn new() -> Self {
        Clock {
            start: Instant::now(),
            wall: SystemTime::now(),
        }
    }

    fn at(&self) -> Duration {
        self.start.elapsed()
    }

    fn wall(&self, at: Duration) -> SystemTime {
        self.wall + at
    }
}

/// A chunk as the headers-only consumer delivers it, or `None` when it is not a chunk.
fn chunk_of(msg: &async_nats::jetstream::Message) -> Option<Chunk> {
    // subject: P.data.PIPE.ID
    let mut parts = msg.subject.as_str().rsplitn(3, '.');
    let (id, pipe) = (parts.next()?, parts.next()?);
    // Not a pipe's: a home probe (docs/protocol.md, "JetStream domains").
    pipe::PipeName::new(pipe).ok()?;
    let h = msg.headers.as_ref()?;
    let number = |name: &str| {
        h.get(name)
            .and_then(|v| v.as_str().parse::<u64>().ok())
            .unwrap_or(0)
    };
    Some(Chunk {
        pipe: pipe.to_string(),
        id: id.to_string(),
        offset: number(H_OFFSET),
        size: number("Nats-Msg-Size"),
        end: h.get(H_END).is_some(),
        published: msg.info().ok().map(|i| SystemTime::from(i.published)),
    })
}

fn heard(agg: &mut Aggregator, msg: &async_nats::Message, at: Duration) {
    if !crate::client::published_by_a_client(msg) {
        return;
    }
    let Some(pipe) = msg.subject.as_str().rsplit('.').next() else {
        return;
    };
    if let Ok(announce) = serde_json::from_slice::<Announce>(&msg.payload) {
        agg.announce(pipe, announce, at);
    }
}

/// Asks the server what one sample needs: storage, the work queues, the stored chunks.
#[derive(Default)]
struct Gatherer {
    /// When each pipe's oldest waiting ticket was stored, as last looked up.
    oldest: HashMap<String, SystemTime>,
    oldest_cursor: usize,
}

impl Gatherer {
    async fn gather(&mut self, session: &Session, clock: &Clock) -> Gathered {
        let client = &session.client;
        let t = Instant::now();
        let rtt = client.flush().await.ok().map(|_| t.elapsed());
        let state = conn_state(client.connection_state());
        let (storage_used, storage_available) =
            match crate::client::account::query_account(&session.js).await {
                Ok(a) => {
                    // The replica tier skypipe's streams use, when the account has tiers.
                    let budget = crate::client::budget::budget(&a, session.replicas);
                    (budget.storage, budget.available())
                }
                Err(_) => (0, None),
            };
        let layout = &session.layout;
        let mut queues: HashMap<String, Queue> = HashMap::new();
        if let Ok(queue) = session.js.get_stream_no_info(layout.queue_stream()).await {
            queues = queues_of(&queue, layout).await;
            self.look_up_oldest(&queue, layout, &mut queues).await;
        }
        let stored_chunks = stored_chunks(session).await;
        let at = clock.at();
        Gathered {
            at,
            wall: clock.wall(at),
            server: ServerStatus {
                url: session.url.clone(),
                version: session.server_version.clone(),
                state,
                rtt,
                storage_used,
                storage_available,
            },
            queues,
            stored_chunks,
        }
    }

    /// The oldest ticket of pipes with payloads waiting, a bounded number per sample.
    async fn look_up_oldest(
        &mut self,
        queue: &jetstream::stream::Stream<()>,
        layout: &Layout,
        queues: &mut HashMap<String, Queue>,
    ) {
        let mut waiting: Vec<String> = queues
            .iter()
            .filter(|(_, q)| q.tickets > q.ack_pending)
            .map(|(name, _)| name.clone())
            .collect();
        waiting.sort();
        self.oldest.retain(|name, _| waiting.contains(name));
        let n = waiting.len();
        for i in 0..n.min(OLDEST_LOOKUPS) {
            let name = &waiting[(self.oldest_cursor + i) % n];
            let Ok(pipe) = pipe::PipeName::new(name) else {
                continue;
            };
            if let Ok(msg) = queue
                .get_first_raw_message_by_subject(layout.queue_subject(&pipe), 0)
                .await
            {
                self.oldest.insert(name.clone(), SystemTime::from(msg.time));
            }
        }
        self.oldest_cursor = self.oldest_cursor.wrapping_add(OLDEST_LOOKUPS);
        for (name, q) in queues.iter_mut() {
            q.oldest = self.oldest.get(name).copied();
        }
    }
}

/// The work queue of each pipe: its consumer's state and the tickets stored.
async fn queues_of(
    queue: &jetstream::stream::Stream<()>,
    layout: &Layout,
) -> HashMap<String, Queue> {
    let mut queues: HashMap<String, Queue> = HashMap::new();
    // Work-queue consumers: one per pipe that was ever received from.
    let mut consumers = queue.consumers();
    while let Some(Ok(info)) = consumers.next().await {
        let last = info.delivered.last_active.unwrap_or(info.created);
        queues.insert(
            info.name.clone(),
            Queue {
                ack_pending: info.num_ack_pending as u64,
                waiting_pulls: info.num_waiting as u64,
                last_active: Some(SystemTime::from(last)),
                ..Queue::default()
            },
        );
    }
    // Tickets stored per pipe. A pipe nobody ever received from has no consumer yet.
    if let Ok(mut subjects) = queue.info_with_subjects(layout.queue_wildcard()).await {
        while let Some(Ok((subject, count))) = subjects.next().await {
            if let Some(name) = subject.rsplit('.').next() {
                queues.entry(name.to_string()).or_default().tickets = count as u64;
            }
        }
    }
    queues
}

/// Chunks still stored, per payload subject.
async fn stored_chunks(session: &Session) -> HashMap<(String, String), usize> {
    let layout = &session.layout;
    let mut stored = HashMap::new();
    let Ok(data) = session.js.get_stream_no_info(layout.data_stream()).await else {
        return stored;
    };
    if let Ok(mut subjects) = data.info_with_subjects(layout.data_wildcard()).await {
        while let Some(Ok((subject, count))) = subjects.next().await {
            let mut parts = subject.rsplitn(3, '.');
            if let (Some(id), Some(pipe)) = (parts.next(), parts.next()) {
                // Only a payload's own subject: P.data.PIPE.ID, nothing deeper.
                if layout.payload_subject_of(pipe, id) == subject {
                    stored.insert((pipe.to_string(), id.to_string()), count);
                }
            }
        }
    }
    stored
}

/// One snapshot, for `skypipe ls`: every chunk header stored is read first, and presence
/// announcements are heard for a little longer than their period, so that senders, takers
/// and listeners are counted. Creates nothing on the server but a short-lived consumer.
pub(crate) async fn once(session: &Session) -> anyhow::Result<Snapshot> {
    let clock = Clock::new();
    let layout = &session.layout;
    let mut presence = session
        .client
        .subscribe(layout.presence_wildcard())
        .await
        .context("cannot watch presence announcements")?;
    let heard_for =
        tokio::time::sleep(crate::transfer::presence::INTERVAL + Duration::from_millis(300));
    tokio::pin!(heard_for);
    let data = session.js.get_stream_no_info(layout.data_stream()).await?;
    let consumer = match data.create_consumer(chunk_headers(layout)).await {
        Ok(c) => Some(c),
        // No streams yet: nothing was ever sent.
        Err(e) if crate::client::errors::is(&e, crate::client::errors::Refusal::NoStream) => None,
        Err(e) => return Err(anyhow::anyhow!(e)).context("cannot read the pipes' chunks"),
    };
    let mut agg = Aggregator::default();
    agg.listening_from(clock.at());
    let mut caught_up = consumer
        .as_ref()
        .is_none_or(|c| c.cached_info().num_pending == 0);
    let consumer_name = consumer.as_ref().map(|c| c.cached_info().name.clone());
    let mut chunks = match consumer {
        Some(c) => Some(c.messages().await?),
        None => None,
    };
    let mut listening = true;
    while listening || !caught_up {
        tokio::select! {
            _ = &mut heard_for, if listening => listening = false,
            Some(msg) = presence.next() => heard(&mut agg, &msg, clock.at()),
            msg = async { chunks.as_mut()?.next().await }, if !caught_up => match msg {
                Some(Ok(m)) => {
                    if let Some(chunk) = chunk_of(&m) {
                        agg.chunk(chunk, clock.at());
                    }
                    caught_up = m.info().map_or(true, |i| i.pending == 0);
                }
                Some(Err(e)) => {
                    return Err(anyhow::Error::new(e).context("cannot read the pipes' chunks"))
                }
                None => caught_up = true,
            },
        }
    }
    let gathered = Gatherer::default().gather(session, &clock).await;
    let snapshot = agg.snapshot(&gathered);
    if let Some(name) = consumer_name {
        let _ = data.delete_consumer(&name).await;
    }
    Ok(snapshot)
}

/// An ordered consumer of every stored chunk's headers (never its bytes), from the oldest.
fn chunk_headers(layout: &pipe::Layout) -> pull::OrderedConfig {
    pull::OrderedConfig {
        filter_subject: layout.data_wildcard(),
        deliver_policy: DeliverPolicy::All,
        headers_only: true,
        ..Default::default()
    }
}

/// How long the collector runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Sampling {
    /// A sample at once (its rates not known yet), then every second, and the connection's
    /// state in between, until cancelled.
    Live,
    /// One sample, as soon as every rate is known (after about a second; a taker heard only
    /// once makes it wait for its next announcement, up to [`ONCE_LIMIT`]).
    Once,
}

/// Sends the connection's state every [`STATE_EVERY`] until `cancel` or the receiver goes.
async fn watch_state(
    client: async_nats::Client,
    clock: Clock,
    tx: mpsc::Sender<Update>,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval(STATE_EVERY);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {
                let update = Update::Connection {
                    at: clock.at(),
                    state: conn_state(client.connection_state()),
                };
                if tx.send(update).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Whether a sample may be taken now: the connection is up (else the state watch says why
/// the numbers stopped), and the first sample waits for the stored chunks to be read (a
/// little), so it does not show a full pipe as empty.
fn may_sample(session: &Session, agg: &Aggregator, clock: &Clock) -> bool {
    session.client.connection_state() == async_nats::connection::State::Connected
        && (agg.is_live() || clock.at() >= BACKLOG_WAIT)
}

/// The snapshot of a sample, unless a one-time sample waits for its rates to be known.
fn worth_sending(
    agg: &mut Aggregator,
    gathered: &Gathered,
    sampling: Sampling,
) -> Option<Snapshot> {
    let snapshot = agg.snapshot(gathered);
    let known = snapshot
        .pipes
        .iter()
        .all(|p| p.rate_in.is_some() && p.rate_out.is_some());
    if sampling == Sampling::Once && !known && gathered.at < ONCE_LIMIT {
        tracing::debug!(
            "monitor: at {:?} rates not known yet: {:?}",
            gathered.at,
            snapshot
                .pipes
                .iter()
                .filter(|p| p.rate_in.is_none() || p.rate_out.is_none())
                .map(|p| (&p.name, p.rate_in.is_some(), p.rate_out.is_some()))
                .collect::<Vec<_>>()
        );
        return None;
    }
    Some(snapshot)
}

/// A chunk read from the data stream; once the stored ones are read, the aggregate is live.
fn on_chunk(agg: &mut Aggregator, m: &async_nats::jetstream::Message, at: Duration) {
    if let Some(chunk) = chunk_of(m) {
        agg.chunk(chunk, at);
    }
    if !agg.is_live() && m.info().map_or(true, |i| i.pending == 0) {
        agg.live_from(at);
    }
}

/// Samples the server and sends updates, as `sampling` says, until `cancel` or the receiver goes.
pub(crate) async fn collect(
    session: Session,
    tx: mpsc::Sender<Update>,
    cancel: CancellationToken,
    sampling: Sampling,
) -> anyhow::Result<()> {
    let clock = Clock::new();
    let layout = session.layout.clone();
    let data = session.js.get_stream_no_info(layout.data_stream()).await?;
    if data.get_info().await.is_err() {
        session.ensure_streams().await?;
    }
    let mut presence = session
        .client
        .subscribe(layout.presence_wildcard())
        .await
        .context("cannot watch presence announcements")?;
    let mut agg = Aggregator::default();
    agg.listening_from(clock.at());
    let consumer = data
        .create_consumer(chunk_headers(&layout))
        .await
        .context("cannot watch the pipes' chunks")?;
    let consumer_name = consumer.cached_info().name.clone();
    if consumer.cached_info().num_pending == 0 {
        agg.live_from(clock.at());
    }
    let mut chunks = consumer.messages().await?;
    let state_watch = (sampling == Sampling::Live).then(|| {
        tokio::spawn(watch_state(
            session.client.clone(),
            clock,
            tx.clone(),
            cancel.child_token(),
        ))
    });
    let mut gatherer = Gatherer::default();
    // Live: a sample as soon as the stored chunks were read, then every second. Once: from a
    // second on, until the rates are known. Rates do not depend on when samples are taken,
    // so a coarse timer does.
    let mut due = match sampling {
        Sampling::Live => Duration::ZERO,
        Sampling::Once => SAMPLE_EVERY,
    };
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let result = loop {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => break Ok(()),
            _ = tick.tick() => {
                if clock.at() < due || !may_sample(&session, &agg, &clock) {
                    continue;
                }
                let Ok(gathered) =
                    tokio::time::timeout(SAMPLE_LIMIT, gatherer.gather(&session, &clock)).await
                else {
                    continue;
                };
                let Some(snapshot) = worth_sending(&mut agg, &gathered, sampling) else {
                    continue;
                };
                if tx.send(Update::Sample(snapshot)).await.is_err() || sampling == Sampling::Once {
                    break Ok(());
                }
                due = gathered.at + SAMPLE_EVERY;
            }
            Some(msg) = presence.next() => heard(&mut agg, &msg, clock.at()),
            msg = chunks.next() => match msg {
                Some(Ok(m)) => on_chunk(&mut agg, &m, clock.at()),
                Some(Err(e)) => tracing::debug!("monitor: {e}"),
                None => break Err(anyhow::anyhow!("the server ended the monitor's watch")),
            },
        }
    };
    if let Some(watch) = state_watch {
        watch.abort();
    }
    let _ = data.delete_consumer(&consumer_name).await;
    result
}
