//! From what the collector gathered to a [`Snapshot`]: pure, no NATS, no clock. Every
//! observation comes with its time, so the same observations always give the same snapshot,
//! and the tests below feed recorded ones.
//!
//! Rates are measured where the data is timed finely, not from one-second sample deltas:
//! - in: the bytes of the chunks that arrived over the last [`RATE_WINDOW`], over the time
//!   watched (at most the window), once the backlog was read;
//! - out: each taker's own byte counter, from its announcements: the bytes between its first
//!   and last announcement in the window over the time between them. A taker heard once
//!   has no rate yet, and neither has its pipe: unknown, not zero;
//! - in, for chunks sent on the live path (never stored, so no chunk headers to see): the
//!   sender's own count of them (`live` in its announcements), the same way as out. A live
//!   sender heard once makes its pipe's in rate unknown.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, SystemTime};

use skypipe_tui::{ConnState, PayloadSample, PayloadState, PipeSample, ServerStatus, Snapshot};

use crate::transfer::presence::{Announce, Role, INTERVAL, STALE};

/// Rates are measured over this last stretch of time.
pub(crate) const RATE_WINDOW: Duration = Duration::from_secs(3);
/// An in rate needs this much watching of live chunks first.
const MIN_WATCHED: Duration = Duration::from_millis(900);
/// An out rate needs two announcements of a taker at least this far apart.
const MIN_SPAN: Duration = Duration::from_millis(500);
/// Until presence was heard this long, a pipe may have a taker not heard from yet.
const HEARD_ENOUGH: Duration = INTERVAL;

/// A chunk's headers, as the headers-only consumer delivered them.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Chunk {
    pub(crate) pipe: String,
    pub(crate) id: String,
    /// `Skypipe-Offset`.
    pub(crate) offset: u64,
    /// `Nats-Msg-Size`.
    pub(crate) size: u64,
    /// Whether it carries `Skypipe-End`.
    pub(crate) end: bool,
    /// When the server stored it (its clock).
    pub(crate) published: Option<SystemTime>,
}

/// A pipe's work queue at the moment of a sample.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Queue {
    /// Tickets stored for the pipe (waiting and being taken).
    pub(crate) tickets: u64,
    /// Tickets handed to a taker and not acknowledged yet.
    pub(crate) ack_pending: u64,
    /// Takers waiting for a ticket.
    pub(crate) waiting_pulls: u64,
    /// When the consumer last delivered (or was made), if the pipe has one.
    pub(crate) last_active: Option<SystemTime>,
    /// When its oldest waiting ticket was stored, when looked up.
    pub(crate) oldest: Option<SystemTime>,
}

/// What one sample asked the server.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Gathered {
    /// When, on the monitor's clock.
    pub(crate) at: Duration,
    /// When, on the wall clock.
    pub(crate) wall: SystemTime,
    pub(crate) server: ServerStatus,
    pub(crate) queues: HashMap<String, Queue>,
    /// Chunks still stored, by `(pipe, payload id)`.
    pub(crate) stored_chunks: HashMap<(String, String), usize>,
}

#[derive(Default)]
struct PayloadTrack {
    /// Offset of each chunk seen, in chunk order.
    offsets: Vec<u64>,
    /// Bytes through the end of the last chunk seen.
    total: u64,
    ended: bool,
    first_published: Option<SystemTime>,
    last_seen: Option<Duration>,
}

#[derive(Default)]
struct PipeTrack {
    bytes_in: u64,
    bytes_out: u64,
    /// Live chunks over the rate window: `(arrived, bytes)`.
    arrivals: VecDeque<(Duration, u64)>,
    payloads: HashMap<String, PayloadTrack>,
    /// When something was last seen happening, on the monitor's clock.
    last_activity: Option<Duration>,
    /// When the newest chunk seen was stored, by the server's clock (the backlog's too).
    last_published: Option<SystemTime>,
}

struct Heard {
    announce: Announce,
    /// Announcements over the rate window and one before: `(at, bytes, live bytes)`.
    history: VecDeque<(Duration, u64, Option<u64>)>,
}

impl Heard {
    fn last_at(&self) -> Duration {
        self.history.back().map_or(Duration::ZERO, |&(t, _, _)| t)
    }

    /// Bytes per second between its first and last announcement kept, or as the process
    /// said it in its last one when heard only once.
    fn rate(&self) -> Option<f64> {
        let (&(t0, b0, _), &(t1, b1, _)) = (self.history.front()?, self.history.back()?);
        let span = t1.checked_sub(t0)?;
        if span >= MIN_SPAN {
            return Some(b1.saturating_sub(b0) as f64 / span.as_secs_f64());
        }
        self.announce.rate.map(|r| r as f64)
    }

    /// The same for a live sender's live bytes, from its first announcement that has them.
    fn live_rate(&self) -> Option<f64> {
        let mut live = self
            .history
            .iter()
            .filter_map(|&(t, _, l)| l.map(|l| (t, l)));
        let said = self.announce.live_rate.map(|r| r as f64);
        let Some((t0, b0)) = live.next() else {
            return said;
        };
        let Some((t1, b1)) = live.next_back() else {
            return said;
        };
        match t1.checked_sub(t0) {
            Some(span) if span >= MIN_SPAN => {
                Some(b1.saturating_sub(b0) as f64 / span.as_secs_f64())
            }
            _ => said,
        }
    }
}

/// Everything kept between samples.
#[derive(Default)]
pub(crate) struct Aggregator {
    pipes: HashMap<String, PipeTrack>,
    presence: HashMap<(String, String), Heard>,
    /// Since when live chunks are watched (the backlog was read), if yet.
    live_since: Option<Duration>,
    /// Since when presence is heard.
    heard_since: Option<Duration>,
}

impl Aggregator {
    /// Presence is heard from `at` on.
    pub(crate) fn listening_from(&mut self, at: Duration) {
        self.heard_since.get_or_insert(at);
    }

    /// The stored chunks were all read at `at`: chunks from now on are live.
    pub(crate) fn live_from(&mut self, at: Duration) {
        self.live_since.get_or_insert(at);
    }

    pub(crate) fn is_live(&self) -> bool {
        self.live_since.is_some()
    }

    /// A chunk's headers, arrived at `at`: counted in rates and totals when live, else only
    /// kept to know what is stored.
    pub(crate) fn chunk(&mut self, chunk: Chunk, at: Duration) {
        let live = self.live_since.is_some();
        let track = self.pipes.entry(chunk.pipe).or_default();
        if live {
            track.bytes_in = track.bytes_in.saturating_add(chunk.size);
            track.arrivals.push_back((at, chunk.size));
            track.last_activity = Some(at);
        }
        track.last_published = track.last_published.max(chunk.published);
        let p = track.payloads.entry(chunk.id).or_default();
        if p.first_published.is_none() {
            p.first_published = chunk.published;
        }
        p.last_seen = Some(at);
        p.offsets.push(chunk.offset);
        p.total = p.total.max(chunk.offset.saturating_add(chunk.size));
        p.ended |= chunk.end;
    }

    /// A presence announcement on `pipe`, heard at `at`.
    pub(crate) fn announce(&mut self, pipe: &str, announce: Announce, at: Duration) {
        let key = (pipe.to_string(), announce.instance.clone());
        let takes = matches!(announce.role, Role::Take | Role::Follow);
        let track = self.pipes.entry(pipe.to_string()).or_default();
        track.last_activity = Some(at);
        let heard = self.presence.entry(key).or_insert_with(|| Heard {
            announce: announce.clone(),
            history: VecDeque::new(),
        });
        // Its bytes before the first announcement moved before the monitor looked.
        if let Some(&(_, before, live_before)) = heard.history.back() {
            if takes {
                track.bytes_out = track
                    .bytes_out
                    .saturating_add(announce.bytes.saturating_sub(before));
            }
            if let (Role::Send, Some(live)) = (announce.role, announce.live) {
                track.bytes_in = track
                    .bytes_in
                    .saturating_add(live.saturating_sub(live_before.unwrap_or(0)));
                track.last_activity = Some(at);
            }
        }
        heard.history.push_back((at, announce.bytes, announce.live));
        heard.announce = announce;
    }

    /// The snapshot of one sample.
    pub(crate) fn snapshot(&mut self, g: &Gathered) -> Snapshot {
        let now = g.at;
        let horizon = now.saturating_sub(RATE_WINDOW);
        self.forget(now, horizon);
        let in_span = self.live_since.and_then(|since| {
            let span = now.saturating_sub(since.max(horizon));
            (now.saturating_sub(since) >= MIN_WATCHED).then_some(span)
        });
        let heard_enough = self
            .heard_since
            .is_some_and(|since| now.saturating_sub(since) >= HEARD_ENOUGH);
        let mut names: HashSet<String> = self.pipes.keys().cloned().collect();
        names.extend(g.queues.keys().cloned());
        names.extend(self.presence.keys().map(|(p, _)| p.clone()));
        let mut pipes: Vec<PipeSample> = names
            .into_iter()
            .map(|name| self.pipe_sample(g, name, horizon, in_span, heard_enough))
            .collect();
        pipes.sort_by(|a, b| a.name.cmp(&b.name));
        Snapshot {
            at: now,
            wall: g.wall,
            server: g.server.clone(),
            pipes,
        }
    }

    /// Gone: not heard for STALE. Kept: the window and the announcement before it.
    fn forget(&mut self, now: Duration, horizon: Duration) {
        self.presence
            .retain(|_, h| now.saturating_sub(h.last_at()) < STALE);
        for heard in self.presence.values_mut() {
            while heard.history.len() > 2
                && heard.history.get(1).is_some_and(|&(t, _, _)| t <= horizon)
            {
                heard.history.pop_front();
            }
        }
    }

    /// What the clients of pipe `name` announce, summed.
    fn heard_on(&self, name: &str) -> OnPipe<'_> {
        let mut on = OnPipe {
            rate_out: Some(0.0),
            rate_live: Some(0.0),
            ..OnPipe::default()
        };
        for ((p, instance), heard) in &self.presence {
            if p != name {
                continue;
            }
            match heard.announce.role {
                Role::Send => {
                    on.senders += 1;
                    for id in &heard.announce.payloads {
                        on.sending.insert(id, (instance, heard.announce.bytes));
                    }
                    if heard.announce.live.is_some() {
                        on.rate_live = sum(on.rate_live, heard.live_rate());
                    }
                }
                Role::Take | Role::Follow => {
                    on.takers += 1;
                    on.taking
                        .extend(heard.announce.payloads.iter().map(String::as_str));
                    on.rate_out = sum(on.rate_out, heard.rate());
                }
                Role::Listen => on.listeners += 1,
            }
        }
        on
    }

    /// The sample of pipe `name`.
    fn pipe_sample(
        &mut self,
        g: &Gathered,
        name: String,
        horizon: Duration,
        in_span: Option<Duration>,
        heard_enough: bool,
    ) -> PipeSample {
        let queue = g.queues.get(&name).cloned().unwrap_or_default();
        let waiting = queue.tickets.saturating_sub(queue.ack_pending);
        let on = self.heard_on(&name);
        // A payload being taken by someone not heard from yet: its rate is not known. A
        // follower holds many tickets, so the tickets held are weighed against the payloads
        // the takers heard say they take, not against the takers.
        let announced = u64::try_from(on.taking.len()).unwrap_or(u64::MAX);
        let rate_out = if !heard_enough || queue.ack_pending > announced {
            None
        } else {
            on.rate_out
        };
        // Takers are the processes heard announcing themselves: one killed leaves the count
        // within STALE, though the ticket it held stays out until the server's ack wait.
        // With none heard, the pull requests waiting stand for clients that do not announce.
        let takers = if on.takers > 0 {
            on.takers
        } else {
            u32::try_from(queue.waiting_pulls).unwrap_or(u32::MAX)
        };
        let (senders, listeners, rate_live) = (on.senders, on.listeners, on.rate_live);
        let sending: HashMap<String, (String, u64)> = on
            .sending
            .iter()
            .map(|(id, (s, b))| (id.to_string(), (s.to_string(), *b)))
            .collect();
        let taking: HashSet<String> = on.taking.iter().map(|t| t.to_string()).collect();
        let track = self.pipes.entry(name.clone()).or_default();
        while track.arrivals.front().is_some_and(|&(t, _)| t <= horizon) {
            track.arrivals.pop_front();
        }
        let rate_stored = in_span.map(|span| {
            let bytes: u64 = track.arrivals.iter().map(|&(_, b)| b).sum();
            if span.is_zero() {
                0.0
            } else {
                bytes as f64 / span.as_secs_f64()
            }
        });
        let (payloads, bytes_stored) = payload_samples(track, g, &name, &sending, &taking);
        PipeSample {
            bytes_in: track.bytes_in,
            bytes_out: track.bytes_out,
            rate_in: rate_stored.zip(rate_live).map(|(s, l)| s + l),
            rate_out,
            payloads_stored: queue.tickets,
            payloads_waiting: waiting,
            bytes_stored,
            oldest_waiting: (waiting > 0)
                .then(|| queue.oldest.map(|t| since(g, t)))
                .flatten(),
            senders,
            takers,
            listeners,
            idle_for: idle_for(track, &queue, g),
            payloads,
            name,
        }
    }
}

/// What the clients of one pipe announce, summed.
#[derive(Default)]
struct OnPipe<'a> {
    senders: u32,
    takers: u32,
    listeners: u32,
    /// Payloads being taken.
    taking: HashSet<&'a str>,
    /// Payload id to its sender's instance and bytes sent (a sender sends one payload).
    sending: HashMap<&'a str, (&'a str, u64)>,
    rate_out: Option<f64>,
    rate_live: Option<f64>,
}

/// A sum of rates, unknown when one of them is.
fn sum(total: Option<f64>, rate: Option<f64>) -> Option<f64> {
    total.zip(rate).map(|(t, r)| t + r)
}

/// How long ago a wall-clock time was, at the sample.
fn since(g: &Gathered, t: std::time::SystemTime) -> Duration {
    g.wall.duration_since(t).unwrap_or_default()
}

/// How long a pipe has been idle: since the last thing anyone did on it.
fn idle_for(track: &PipeTrack, queue: &Queue, g: &Gathered) -> Option<Duration> {
    let seen_ago = track.last_activity.map(|t| g.at.saturating_sub(t));
    let delivered_ago = queue.last_active.map(|t| since(g, t));
    let published_ago = track.last_published.map(|t| since(g, t));
    [seen_ago, delivered_ago, published_ago]
        .into_iter()
        .flatten()
        .min()
}

/// The payloads of a pipe still alive (stored, being sent or taken, or seen within STALE),
/// oldest first, and the bytes the stream holds of them; forgets the others.
fn payload_samples(
    track: &mut PipeTrack,
    g: &Gathered,
    name: &str,
    sending: &HashMap<String, (String, u64)>,
    taking: &HashSet<String>,
) -> (Vec<PayloadSample>, u64) {
    let now = g.at;
    let mut bytes_stored = 0u64;
    let mut payloads = Vec::new();
    track.payloads.retain(|id, p| {
        let count = g
            .stored_chunks
            .get(&(name.to_string(), id.clone()))
            .copied()
            .unwrap_or(0);
        let stored = if count == 0 {
            0
        } else {
            let first = p.offsets.len().saturating_sub(count);
            p.total
                .saturating_sub(p.offsets.get(first).copied().unwrap_or(0))
        };
        bytes_stored = bytes_stored.saturating_add(stored);
        let sent = sending.get(id.as_str());
        let sender = sent.map(|(s, _)| s.to_string());
        let state = if taking.contains(id.as_str()) {
            PayloadState::Taking
        } else if sender.is_some() || !p.ended {
            PayloadState::Sending
        } else {
            PayloadState::Waiting
        };
        let alive = count > 0
            || sender.is_some()
            || taking.contains(id.as_str())
            || p.last_seen.is_some_and(|t| now.saturating_sub(t) < STALE);
        if alive {
            payloads.push(PayloadSample {
                id: id.clone(),
                // Chunks sent live are never stored: the sender's count has them.
                bytes: p.total.max(sent.map_or(0, |&(_, b)| b)),
                age: p.first_published.map(|t| since(g, t)).unwrap_or_default(),
                sender,
                state,
            });
        }
        alive
    });
    payloads.sort_by(|a, b| b.age.cmp(&a.age).then_with(|| a.id.cmp(&b.id)));
    (payloads, bytes_stored)
}

/// The state of a connection as the dashboard names it. The client never gives up (it has
/// no limit of reconnects), so a connection that is not up is being made again.
pub(crate) fn conn_state(state: async_nats::connection::State) -> ConnState {
    match state {
        async_nats::connection::State::Connected => ConnState::Connected,
        async_nats::connection::State::Pending | async_nats::connection::State::Disconnected => {
            ConnState::Reconnecting
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: u64 = 1_000_000;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    fn wall(at: Duration) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000) + at
    }

    fn gathered(at: Duration) -> Gathered {
        Gathered {
            at,
            wall: wall(at),
            server: ServerStatus {
                url: "nats://127.0.0.1:4222".into(),
                version: "2.11.4".into(),
                state: ConnState::Connected,
                rtt: Some(Duration::from_micros(300)),
                storage_used: 0,
                storage_available: None,
            },
            queues: HashMap::new(),
            stored_chunks: HashMap::new(),
        }
    }

    fn chunk(pipe: &str, id: &str, offset: u64, size: u64, at: Duration) -> Chunk {
        Chunk {
            pipe: pipe.into(),
            id: id.into(),
            offset,
            size,
            end: false,
            published: Some(wall(at)),
        }
    }

    fn taker(instance: &str, bytes: u64, payload: &str) -> Announce {
        Announce {
            v: 1,
            role: Role::Take,
            instance: instance.into(),
            bytes,
            payloads: vec![payload.into()],
            live: None,
            rate: None,
            live_rate: None,
        }
    }

    fn sender(instance: &str, bytes: u64, payload: &str) -> Announce {
        Announce {
            role: Role::Send,
            ..taker(instance, bytes, payload)
        }
    }

    fn pipe<'a>(s: &'a Snapshot, name: &str) -> &'a PipeSample {
        s.pipes
            .iter()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("no pipe {name}: {s:?}"))
    }

    fn close(got: Option<f64>, want: f64) {
        let got = got.unwrap_or_else(|| panic!("rate unknown, want {want}"));
        assert!((got - want).abs() <= want * 0.02, "rate {got}, want {want}");
    }

    /// A steady 10 MB/s transfer into a waiting taker, recorded as the collector would see
    /// it: a 250 kB chunk every 25 ms, the taker's and the sender's announcements each second,
    /// the taker a first time at 0.7 s (it was already taking before the monitor came).
    fn steady(until: f64) -> (Aggregator, Vec<Snapshot>) {
        let mut agg = Aggregator::default();
        agg.listening_from(Duration::ZERO);
        agg.live_from(secs(0.01));
        let mut snapshots = Vec::new();
        let mut offset = 40 * MB;
        let mut next_sample = 0.0;
        let mut next_announce = 0.7;
        let mut t = 0.0;
        while t <= until {
            if t >= next_sample - 1e-9 {
                let mut g = gathered(secs(t));
                g.queues.insert(
                    "big".into(),
                    Queue {
                        tickets: 1,
                        ack_pending: 1,
                        ..Queue::default()
                    },
                );
                g.stored_chunks.insert(("big".into(), "p1".into()), 4);
                snapshots.push(agg.snapshot(&g));
                next_sample += 1.0;
            }
            if t >= next_announce - 1e-9 {
                // The taker wrote all but the last 4 chunks.
                let written = offset - MB;
                agg.announce("big", taker("t1", written, "p1"), secs(t));
                agg.announce("big", sender("s1", offset, "p1"), secs(t));
                next_announce += 1.0;
            }
            agg.chunk(chunk("big", "p1", offset, 250_000, secs(t)), secs(t));
            offset += 250_000;
            t += 0.025;
        }
        (agg, snapshots)
    }

    #[test]
    fn the_first_sample_knows_no_rate_yet() {
        let (_, snapshots) = steady(0.5);
        let big = pipe(&snapshots[0], "big");
        assert_eq!(big.rate_in, None);
        assert_eq!(big.rate_out, None);
    }

    #[test]
    fn after_a_second_in_is_right_and_out_waits_for_a_second_announcement() {
        let (_, snapshots) = steady(1.5);
        let big = pipe(&snapshots[1], "big");
        close(big.rate_in, 10e6);
        // The taker was heard once, at 0.7 s: its rate is not known, so neither is the pipe's.
        assert_eq!(big.rate_out, None);
    }

    #[test]
    fn a_steady_transfer_reads_its_true_rate_in_and_out() {
        let (_, snapshots) = steady(6.5);
        for s in &snapshots[2..] {
            let big = pipe(s, "big");
            close(big.rate_in, 10e6);
            close(big.rate_out, 10e6);
        }
        let last = pipe(&snapshots[6], "big");
        assert_eq!(last.senders, 1);
        assert_eq!(last.takers, 1);
        // Totals count from when the monitor looked: in from 0.01 s, out from 0.7 s.
        assert!(
            (last.bytes_in as f64 - 60e6).abs() <= 1e6,
            "{}",
            last.bytes_in
        );
        assert!(
            (last.bytes_out as f64 - 50e6).abs() <= 1e6,
            "{}",
            last.bytes_out
        );
    }

    #[test]
    fn stored_bytes_are_the_chunks_still_on_the_server() {
        let (_, snapshots) = steady(3.0);
        let big = pipe(&snapshots[3], "big");
        // 4 chunks of 250 kB still stored.
        assert_eq!(big.bytes_stored, MB);
        assert_eq!(big.payloads_stored, 1);
        assert_eq!(big.payloads_waiting, 0);
        let p = &big.payloads[0];
        assert_eq!(p.state, PayloadState::Taking);
        assert_eq!(p.sender.as_deref(), Some("s1"));
    }

    #[test]
    fn the_backlog_counts_as_stored_not_as_moving() {
        let mut agg = Aggregator::default();
        agg.listening_from(Duration::ZERO);
        for i in 0..8 {
            let mut c = chunk("parked", "p9", i * 250_000, 250_000, Duration::ZERO);
            c.published = Some(wall(Duration::ZERO) - Duration::from_secs(120));
            c.end = i == 7;
            agg.chunk(c, secs(0.05));
        }
        agg.live_from(secs(0.06));
        let mut g = gathered(secs(2.0));
        g.queues.insert(
            "parked".into(),
            Queue {
                tickets: 1,
                oldest: Some(wall(Duration::ZERO) - Duration::from_secs(120)),
                ..Queue::default()
            },
        );
        g.stored_chunks.insert(("parked".into(), "p9".into()), 8);
        let s = agg.snapshot(&g);
        let parked = pipe(&s, "parked");
        assert_eq!(parked.rate_in, Some(0.0));
        assert_eq!(parked.rate_out, Some(0.0), "nobody takes: zero, and known");
        assert_eq!(parked.bytes_in, 0);
        assert_eq!(parked.bytes_stored, 2 * MB);
        assert_eq!(parked.payloads_waiting, 1);
        assert_eq!(parked.oldest_waiting, Some(Duration::from_secs(122)));
        assert_eq!(parked.payloads[0].state, PayloadState::Waiting);
        assert_eq!(parked.payloads[0].age, Duration::from_secs(122));
        assert_eq!(
            parked.idle_for,
            Some(Duration::from_secs(122)),
            "its last chunk, though read from the backlog"
        );
    }

    #[test]
    fn a_killed_taker_leaves_the_count_while_its_ticket_is_still_out() {
        let mut agg = Aggregator::default();
        agg.listening_from(Duration::ZERO);
        agg.live_from(Duration::ZERO);
        for s in 0..3u32 {
            let at = 0.1 + f64::from(s);
            agg.announce("p", taker("t1", 1_000 * u64::from(s), "x"), secs(at));
        }
        let held = |at: f64| {
            let mut g = gathered(secs(at));
            g.queues.insert(
                "p".into(),
                Queue {
                    tickets: 1,
                    ack_pending: 1,
                    ..Queue::default()
                },
            );
            g
        };
        assert_eq!(pipe(&agg.snapshot(&held(2.5)), "p").takers, 1);
        // Killed at 2.1 s: its ticket stays out until the ack wait, the taker is gone.
        assert_eq!(pipe(&agg.snapshot(&held(5.5)), "p").takers, 0);
    }

    #[test]
    fn a_follower_holding_three_tickets_is_one_taker_with_a_known_rate() {
        let mut agg = Aggregator::default();
        agg.listening_from(Duration::ZERO);
        agg.live_from(Duration::ZERO);
        for s in 0..3u32 {
            let follower = Announce {
                role: Role::Follow,
                payloads: vec!["a".into(), "b".into(), "c".into()],
                rate: Some(1_000),
                ..taker("f1", 1_000 * u64::from(s), "a")
            };
            agg.announce("logs", follower, secs(0.1 + f64::from(s)));
        }
        let mut g = gathered(secs(2.5));
        let held = Queue {
            tickets: 3,
            ack_pending: 3,
            ..Queue::default()
        };
        g.queues.insert("logs".into(), held.clone());
        let logs = agg.snapshot(&g).pipes.remove(0);
        assert_eq!(logs.takers, 1);
        close(logs.rate_out, 1_000.0);
        // A fourth ticket out that no taker heard says it holds: its taker is not heard yet.
        g.queues.insert(
            "logs".into(),
            Queue {
                tickets: 4,
                ack_pending: 4,
                ..held
            },
        );
        assert_eq!(agg.snapshot(&g).pipes.remove(0).rate_out, None);
    }

    #[test]
    fn one_announcement_with_a_rate_tells_the_rate() {
        let mut agg = Aggregator::default();
        agg.listening_from(Duration::ZERO);
        agg.live_from(Duration::ZERO);
        let a = Announce {
            rate: Some(5_000_000),
            ..taker("t1", 80_000_000, "x")
        };
        agg.announce("p", a, secs(0.9));
        let s = agg.snapshot(&gathered(secs(1.0)));
        close(pipe(&s, "p").rate_out, 5e6);
    }

    #[test]
    fn a_taker_gone_quiet_leaves_the_rates() {
        let (mut agg, _) = steady(2.0);
        let s = agg.snapshot(&gathered(secs(6.0)));
        let big = pipe(&s, "big");
        assert_eq!(big.takers, 0);
        assert_eq!(big.senders, 0);
        assert_eq!(big.rate_out, Some(0.0));
        assert_eq!(big.rate_in, Some(0.0));
        assert_eq!(big.idle_for, Some(secs(6.0) - secs(2.0)));
    }

    #[test]
    fn a_payload_taken_by_someone_not_heard_yet_has_no_out_rate() {
        let mut agg = Aggregator::default();
        agg.listening_from(Duration::ZERO);
        agg.live_from(Duration::ZERO);
        let mut g = gathered(secs(1.0));
        g.queues.insert(
            "busy".into(),
            Queue {
                tickets: 1,
                ack_pending: 1,
                ..Queue::default()
            },
        );
        g.queues.insert("quiet".into(), Queue::default());
        let s = agg.snapshot(&g);
        assert_eq!(pipe(&s, "busy").rate_out, None);
        assert_eq!(
            pipe(&s, "busy").takers,
            0,
            "a held ticket is no process: its taker may be dead"
        );
        assert_eq!(
            pipe(&s, "quiet").rate_out,
            Some(0.0),
            "heard for a second, nobody takes: zero"
        );
    }

    #[test]
    fn a_live_transfer_is_counted_from_its_senders_live_bytes() {
        // 10 MB/s on the live path: no chunk is stored but the first; the sender says how
        // many bytes its live taker wrote, each second from 0.3 s on.
        let mut agg = Aggregator::default();
        agg.listening_from(Duration::ZERO);
        agg.live_from(secs(0.01));
        agg.chunk(chunk("wire", "p1", 0, 250_000, secs(0.02)), secs(0.02));
        let mut snapshots = Vec::new();
        for s in 0..6 {
            let at = 0.3 + f64::from(s);
            let live = (at * 10e6) as u64;
            let a = Announce {
                live: Some(live),
                ..sender("s1", live + 250_000, "p1")
            };
            agg.announce("wire", a, secs(at));
            agg.announce("wire", taker("t1", live, "p1"), secs(at + 0.01));
            let mut g = gathered(secs(at + 0.5));
            g.queues.insert(
                "wire".into(),
                Queue {
                    tickets: 1,
                    ack_pending: 1,
                    ..Queue::default()
                },
            );
            snapshots.push(agg.snapshot(&g));
        }
        assert_eq!(
            pipe(&snapshots[0], "wire").rate_in,
            None,
            "heard once: unknown"
        );
        for s in &snapshots[1..] {
            let wire = pipe(s, "wire");
            // The one stored chunk leaves the 3 s window after the first samples.
            let rate = wire.rate_in.expect("known");
            assert!((rate - 10e6).abs() <= 0.1 * 10e6, "{rate}");
            close(wire.rate_out, 10e6);
        }
        let last = pipe(&snapshots[5], "wire");
        assert!(
            (last.bytes_in as f64 - 50e6 - 250e3).abs() <= 1e6,
            "{}",
            last.bytes_in
        );
    }

    #[test]
    fn idle_time_comes_from_the_consumer_when_nothing_was_seen() {
        let mut agg = Aggregator::default();
        let mut g = gathered(secs(1.0));
        g.queues.insert(
            "old".into(),
            Queue {
                last_active: Some(g.wall - Duration::from_secs(7200)),
                ..Queue::default()
            },
        );
        let s = agg.snapshot(&g);
        assert_eq!(pipe(&s, "old").idle_for, Some(Duration::from_secs(7200)));
    }
}
