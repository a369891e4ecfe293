//! The data side of `skypipe monitor`: samples the server once a second through the ordinary
//! NATS connection and the JetStream API (no monitoring port), and sends
//! [`skypipe_tui::Snapshot`]s to the dashboard.
//!
//! Where each figure comes from, without ever pulling payload bytes:
//! - bytes in: a `headers_only` ordered consumer on the data subjects (`Nats-Msg-Size` per
//!   chunk, about 100 bytes of headers per 256 KiB chunk);
//! - bytes out, senders, takers, listeners: the presence announcements of running skypipes;
//! - payloads waiting, waiting takers: the pipe's work-queue consumer info;
//! - bytes stored: per payload subject, the number of chunks still stored (stream info with
//!   subjects) and the chunk offsets seen in the headers;
//! - oldest waiting payload: the time of the first ticket still queued.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use async_nats::jetstream::consumer::{pull, DeliverPolicy};
use futures::StreamExt;
use skypipe_tui::{ConnState, PayloadSample, PayloadState, PipeSample, ServerStatus, Snapshot};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::client::session::Session;
use crate::protocol::pipe::{self, H_END, H_OFFSET};
use crate::transfer::presence::{Announce, Role, STALE};

/// How often the server is sampled.
pub(crate) const SAMPLE_EVERY: Duration = Duration::from_secs(1);
/// At most this many "oldest ticket" look-ups per sample (round robin over pipes).
const OLDEST_LOOKUPS: usize = 64;

#[derive(Default)]
struct PayloadTrack {
    /// Offset of each chunk seen, in chunk order.
    offsets: Vec<u64>,
    /// Bytes through the end of the last chunk seen.
    total: u64,
    ended: bool,
    first_seen: Option<Instant>,
    last_seen: Option<Instant>,
}

#[derive(Default)]
struct PipeTrack {
    bytes_in: u64,
    bytes_out: u64,
    payloads: HashMap<String, PayloadTrack>,
    oldest: Option<Duration>,
}

struct Seen {
    announce: Announce,
    at: Instant,
}

/// Everything the collector keeps between samples.
#[derive(Default)]
pub(crate) struct Collector {
    pipes: HashMap<String, PipeTrack>,
    presence: HashMap<(String, String), Seen>,
    oldest_cursor: usize,
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl Collector {
    /// A chunk's headers, seen live or from the backlog at start-up.
    fn on_chunk(&mut self, subject: &str, headers: Option<&async_nats::HeaderMap>, live: bool) {
        // subject: P.data.PIPE.ID
        let mut parts = subject.rsplitn(3, '.');
        let (Some(id), Some(pipe)) = (parts.next(), parts.next()) else {
            return;
        };
        let Some(h) = headers else { return };
        let size = h
            .get("Nats-Msg-Size")
            .and_then(|v| v.as_str().parse::<u64>().ok())
            .unwrap_or(0);
        let offset = h
            .get(H_OFFSET)
            .and_then(|v| v.as_str().parse::<u64>().ok())
            .unwrap_or(0);
        let track = self.pipes.entry(pipe.to_string()).or_default();
        if live {
            track.bytes_in += size;
        }
        let p = track.payloads.entry(id.to_string()).or_default();
        let now = Instant::now();
        p.first_seen.get_or_insert(now);
        p.last_seen = Some(now);
        p.offsets.push(offset);
        p.total = p.total.max(offset + size);
        if h.get(H_END).is_some() {
            p.ended = true;
        }
    }

    fn on_presence(&mut self, subject: &str, body: &[u8]) {
        let Some(pipe) = subject.rsplit('.').next() else {
            return;
        };
        let Ok(announce) = serde_json::from_slice::<Announce>(body) else {
            return;
        };
        let key = (pipe.to_string(), announce.instance.clone());
        if matches!(announce.role, Role::Take | Role::Follow) {
            let before = self.presence.get(&key).map(|s| s.announce.bytes);
            let track = self.pipes.entry(pipe.to_string()).or_default();
            // First sight of a taker: its bytes so far happened before we looked.
            if let Some(before) = before {
                track.bytes_out += announce.bytes.saturating_sub(before);
            }
        }
        self.presence.insert(
            key,
            Seen {
                announce,
                at: Instant::now(),
            },
        );
    }

    /// Samples the server and builds a snapshot.
    async fn sample(&mut self, session: &Session, start: Instant) -> Snapshot {
        let client = &session.client;
        let t = Instant::now();
        let rtt = client.flush().await.ok().map(|_| t.elapsed());
        let state = match client.connection_state() {
            async_nats::connection::State::Connected => ConnState::Connected,
            async_nats::connection::State::Pending => ConnState::Reconnecting,
            async_nats::connection::State::Disconnected => ConnState::Disconnected,
        };
        let (storage_used, storage_available) =
            match crate::client::session::query_account(&session.js).await {
                Ok(a) => {
                    let avail = a
                        .limits
                        .max_storage
                        .filter(|m| *m >= 0)
                        .map(|m| (m as u64).saturating_sub(a.storage));
                    (a.storage, avail)
                }
                Err(_) => (0, None),
            };
        let layout = &session.layout;
        // Work-queue consumers: one per pipe that was ever received from.
        let mut queue_info: HashMap<String, (u64, u64, u64)> = HashMap::new();
        if let Ok(queue) = session.js.get_stream_no_info(layout.queue_stream()).await {
            let mut consumers = queue.consumers();
            while let Some(Ok(info)) = consumers.next().await {
                queue_info.insert(
                    info.name.clone(),
                    (
                        info.num_pending,
                        info.num_ack_pending as u64,
                        info.num_waiting as u64,
                    ),
                );
            }
            // Tickets stored per pipe: waiting ones and those being taken. A pipe nobody ever
            // received from has no consumer yet, only tickets.
            if let Ok(mut subjects) = queue.info_with_subjects(layout.queue_wildcard()).await {
                while let Some(Ok((subject, count))) = subjects.next().await {
                    if let Some(name) = subject.rsplit('.').next() {
                        let entry = queue_info.entry(name.to_string()).or_insert((0, 0, 0));
                        entry.0 = (count as u64).saturating_sub(entry.1);
                    }
                }
            }
            // The oldest ticket of pipes with payloads waiting, a bounded number per sample.
            let mut waiting: Vec<&String> = queue_info
                .iter()
                .filter(|(_, (pending, _, _))| *pending > 0)
                .map(|(name, _)| name)
                .collect();
            waiting.sort();
            let n = waiting.len();
            for i in 0..n.min(OLDEST_LOOKUPS) {
                let name = waiting[(self.oldest_cursor + i) % n];
                let Ok(pipe) = pipe::PipeName::new(name) else {
                    continue;
                };
                if let Ok(msg) = queue
                    .get_first_raw_message_by_subject(layout.queue_subject(&pipe), 0)
                    .await
                {
                    let age = (now_unix() - msg.time.unix_timestamp()).max(0) as u64;
                    self.pipes.entry(name.clone()).or_default().oldest =
                        Some(Duration::from_secs(age));
                }
            }
            self.oldest_cursor = self.oldest_cursor.wrapping_add(OLDEST_LOOKUPS);
        }
        // Chunks still stored, per payload subject.
        let mut stored_chunks: HashMap<String, usize> = HashMap::new();
        if let Ok(data) = session.js.get_stream_no_info(layout.data_stream()).await {
            if let Ok(mut subjects) = data.info_with_subjects(layout.data_wildcard()).await {
                while let Some(Ok((subject, count))) = subjects.next().await {
                    stored_chunks.insert(subject, count);
                }
            }
        }
        // Presence older than STALE is gone.
        self.presence.retain(|_, s| s.at.elapsed() < STALE);
        let mut names: HashSet<String> = self.pipes.keys().cloned().collect();
        names.extend(queue_info.keys().cloned());
        names.extend(self.presence.keys().map(|(p, _)| p.clone()));

        let mut pipes = Vec::new();
        for name in names {
            let (pending, ack_pending, waiting_pulls) =
                queue_info.get(&name).copied().unwrap_or((0, 0, 0));
            let (mut senders, mut takers, mut listeners) = (0u32, 0u32, 0u32);
            let mut taking: HashSet<String> = HashSet::new();
            let mut sending: HashSet<String> = HashSet::new();
            for ((p, _), seen) in &self.presence {
                if *p != name {
                    continue;
                }
                match seen.announce.role {
                    Role::Send => {
                        senders += 1;
                        sending.extend(seen.announce.payloads.iter().cloned());
                    }
                    Role::Take | Role::Follow => {
                        takers += 1;
                        taking.extend(seen.announce.payloads.iter().cloned());
                    }
                    Role::Listen => listeners += 1,
                }
            }
            let takers = takers.max(u32::try_from(waiting_pulls + ack_pending).unwrap_or(u32::MAX));
            let track = self.pipes.entry(name.clone()).or_default();
            let mut bytes_stored = 0;
            let mut payloads = Vec::new();
            track.payloads.retain(|id, p| {
                let count = stored_chunks
                    .get(&layout.payload_subject_of(&name, id))
                    .copied()
                    .unwrap_or(0);
                let stored = if count == 0 {
                    0
                } else {
                    let first = p.offsets.len().saturating_sub(count);
                    p.total - p.offsets.get(first).copied().unwrap_or(0)
                };
                bytes_stored += stored;
                let state = if taking.contains(id) {
                    PayloadState::Taking
                } else if sending.contains(id) || !p.ended {
                    PayloadState::Sending
                } else {
                    PayloadState::Waiting
                };
                let alive = count > 0
                    || taking.contains(id)
                    || sending.contains(id)
                    || p.last_seen.is_some_and(|t| t.elapsed() < STALE);
                if alive {
                    payloads.push(PayloadSample {
                        id: id.clone(),
                        bytes: p.total,
                        age: p.first_seen.map(|t| t.elapsed()).unwrap_or_default(),
                        state,
                    });
                }
                alive
            });
            if pending == 0 {
                track.oldest = None;
            }
            payloads.sort_by_key(|p| std::cmp::Reverse(p.age));
            pipes.push(PipeSample {
                name,
                bytes_in: track.bytes_in,
                bytes_out: track.bytes_out,
                payloads_waiting: pending,
                bytes_stored,
                oldest_waiting: track.oldest,
                senders,
                takers,
                listeners,
                payloads,
            });
        }
        pipes.sort_by(|a, b| a.name.cmp(&b.name));
        Snapshot {
            at: start.elapsed(),
            server: ServerStatus {
                url: session.url.clone(),
                version: session.server_version.clone(),
                state,
                rtt,
                storage_used,
                storage_available,
            },
            pipes,
        }
    }
}

/// One snapshot, for `skypipe ls`: every chunk header stored is read first, and presence
/// announcements are heard for a little longer than their period, so that senders, takers
/// and listeners are counted. Creates nothing on the server but a short-lived consumer.
pub(crate) async fn once(session: &Session) -> anyhow::Result<Snapshot> {
    let start = Instant::now();
    let layout = &session.layout;
    let mut presence = session
        .client
        .subscribe(layout.presence_wildcard())
        .await
        .context("cannot watch presence announcements")?;
    let heard =
        tokio::time::sleep(crate::transfer::presence::INTERVAL + Duration::from_millis(300));
    tokio::pin!(heard);
    let data = session.js.get_stream_no_info(layout.data_stream()).await?;
    let consumer = match data.create_consumer(chunk_headers(layout)).await {
        Ok(c) => Some(c),
        // No streams yet: nothing was ever sent.
        Err(e) if crate::client::errors::is(&e, crate::client::errors::Refusal::NoStream) => None,
        Err(e) => return Err(anyhow::anyhow!(e)).context("cannot read the pipes' chunks"),
    };
    let mut collector = Collector::default();
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
            _ = &mut heard, if listening => listening = false,
            Some(msg) = presence.next() => {
                collector.on_presence(msg.subject.as_str(), &msg.payload);
            }
            msg = async { chunks.as_mut()?.next().await }, if !caught_up => match msg {
                Some(Ok(m)) => {
                    collector.on_chunk(m.subject.as_str(), m.headers.as_ref(), false);
                    caught_up = m.info().map_or(true, |i| i.pending == 0);
                }
                Some(Err(e)) => return Err(anyhow::anyhow!("cannot read the pipes' chunks: {e}")),
                None => caught_up = true,
            },
        }
    }
    let snapshot = collector.sample(session, start).await;
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

/// Samples the server every second and sends snapshots until `cancel` or the receiver goes.
pub(crate) async fn collect(
    session: Session,
    tx: mpsc::Sender<Snapshot>,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let start = Instant::now();
    let started_unix = now_unix();
    let layout = session.layout.clone();
    let data = session.js.get_stream_no_info(layout.data_stream()).await?;
    if data.get_info().await.is_err() {
        session.ensure_streams().await?;
    }
    let consumer = data
        .create_consumer(chunk_headers(&layout))
        .await
        .context("cannot watch the pipes' chunks")?;
    let consumer_name = consumer.cached_info().name.clone();
    let mut chunks = consumer.messages().await?;
    let mut presence = session
        .client
        .subscribe(layout.presence_wildcard())
        .await
        .context("cannot watch presence announcements")?;
    let mut collector = Collector::default();
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    let result = loop {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => break Ok(()),
            _ = tick.tick() => {
                let snapshot = collector.sample(&session, start).await;
                if tx.send(snapshot).await.is_err() {
                    break Ok(());
                }
            }
            Some(msg) = presence.next() => {
                collector.on_presence(msg.subject.as_str(), &msg.payload);
            }
            msg = chunks.next() => {
                match msg {
                    Some(Ok(m)) => {
                        let live = m
                            .info()
                            .map(|i| i.published.unix_timestamp() >= started_unix)
                            .unwrap_or(true);
                        collector.on_chunk(m.subject.as_str(), m.headers.as_ref(), live);
                    }
                    Some(Err(e)) => tracing::debug!("monitor: {e}"),
                    None => break Err(anyhow::anyhow!("the server ended the monitor's watch")),
                }
            }
        }
    };
    let _ = data.delete_consumer(&consumer_name).await;
    result
}
