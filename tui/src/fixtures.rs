//! Fixed data for the tests: a server, pipes, and apps fed with a few seconds of samples.

use std::time::{Duration, SystemTime};

use crate::app::App;
use crate::snapshot::{
    ConnState, PayloadSample, PayloadState, PipeSample, ServerStatus, Snapshot, Update,
};

pub(crate) fn server() -> ServerStatus {
    ServerStatus {
        url: "nats://127.0.0.1:4222".to_string(),
        version: "2.11.4".to_string(),
        state: ConnState::Connected,
        rtt: Some(Duration::from_micros(1240)),
        storage_used: 1_530_000_000,
        storage_available: Some(8_470_000_000),
    }
}

/// An idle pipe with nothing in it.
pub(crate) fn pipe(name: &str) -> PipeSample {
    PipeSample {
        name: name.to_string(),
        bytes_in: 0,
        bytes_out: 0,
        rate_in: Some(0.0),
        rate_out: Some(0.0),
        payloads_stored: 0,
        payloads_waiting: 0,
        bytes_stored: 0,
        oldest_waiting: None,
        senders: 0,
        takers: 0,
        listeners: 0,
        idle_for: Some(Duration::from_secs(5)),
        payloads: Vec::new(),
    }
}

/// The wall time of a sample taken `at` after the monitor started.
pub(crate) fn wall(at: Duration) -> SystemTime {
    // 2027-01-15T08:00:00Z
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000) + at
}

pub(crate) fn snapshot(at_secs: u64, pipes: Vec<PipeSample>) -> Snapshot {
    let at = Duration::from_secs(at_secs);
    Snapshot {
        at,
        wall: wall(at),
        server: server(),
        pipes,
    }
}

pub(crate) fn payload(id: &str, bytes: u64, age_secs: u64, state: PayloadState) -> PayloadSample {
    PayloadSample {
        id: id.to_string(),
        bytes,
        age: Duration::from_secs(age_secs),
        sender: (state == PayloadState::Sending).then(|| "5be07e2a91c4d3f0".to_string()),
        state,
    }
}

/// How a fixture pipe behaves: bytes per second in and out over time `t`, and what it holds.
struct Shape {
    name: &'static str,
    rate_in: fn(u64) -> u64,
    rate_out: fn(u64) -> u64,
    waiting: u64,
    stored: u64,
    oldest: Option<u64>,
    senders: u32,
    takers: u32,
    listeners: u32,
}

const SHAPES: [Shape; 10] = [
    Shape {
        name: "backups",
        rate_in: |t| 40_000_000 + (t % 4) * 5_000_000,
        rate_out: |t| 38_000_000 + (t % 3) * 4_000_000,
        waiting: 1,
        stored: 310_000_000,
        oldest: Some(12),
        senders: 1,
        takers: 1,
        listeners: 0,
    },
    Shape {
        name: "logs",
        rate_in: |t| 120_000 + (t % 5) * 30_000,
        rate_out: |t| 120_000 + (t % 5) * 30_000,
        waiting: 0,
        stored: 0,
        oldest: None,
        senders: 3,
        takers: 1,
        listeners: 2,
    },
    Shape {
        name: "metrics",
        rate_in: |t| if t % 2 == 0 { 64_000 } else { 8_000 },
        rate_out: |t| if t % 2 == 0 { 64_000 } else { 8_000 },
        waiting: 0,
        stored: 0,
        oldest: None,
        senders: 4,
        takers: 2,
        listeners: 0,
    },
    Shape {
        name: "iso",
        rate_in: |_| 0,
        rate_out: |_| 0,
        waiting: 2,
        stored: 734_003_200,
        oldest: Some(2 * 3600 + 300),
        senders: 0,
        takers: 0,
        listeners: 0,
    },
    Shape {
        name: "db-dump",
        rate_in: |t| if t < 6 { 0 } else { 9_500_000 },
        rate_out: |_| 0,
        waiting: 1,
        stored: 57_000_000,
        oldest: Some(6),
        senders: 1,
        takers: 1,
        listeners: 0,
    },
    Shape {
        name: "deploy-trigger",
        rate_in: |t| if t == 9 { 1 } else { 0 },
        rate_out: |t| if t == 9 { 1 } else { 0 },
        waiting: 0,
        stored: 0,
        oldest: None,
        senders: 0,
        takers: 3,
        listeners: 1,
    },
    Shape {
        name: "images",
        rate_in: |t| 2_000_000 * (t % 3),
        rate_out: |t| 1_900_000 * (t % 3),
        waiting: 3,
        stored: 4_200_000,
        oldest: Some(252),
        senders: 2,
        takers: 1,
        listeners: 0,
    },
    Shape {
        name: "events",
        rate_in: |t| 2_500 + t * 100,
        rate_out: |t| 2_500 + t * 100,
        waiting: 0,
        stored: 0,
        oldest: None,
        senders: 1,
        takers: 1,
        listeners: 5,
    },
    Shape {
        name: "builds",
        rate_in: |_| 0,
        rate_out: |_| 0,
        waiting: 0,
        stored: 0,
        oldest: None,
        senders: 0,
        takers: 0,
        listeners: 0,
    },
    Shape {
        name: "reports-quarterly-finance-eu-west",
        rate_in: |t| if t > 8 { 700_000 } else { 0 },
        rate_out: |t| if t > 10 { 650_000 } else { 0 },
        waiting: 4,
        stored: 21_000_000,
        oldest: Some(75),
        senders: 1,
        takers: 1,
        listeners: 0,
    },
];

/// The ten pipes as sampled at second `t`, after `t` seconds of traffic.
fn ten_pipes_at(t: u64) -> Vec<PipeSample> {
    SHAPES
        .iter()
        .map(|shape| {
            let bytes_in = (1..=t).map(shape.rate_in).sum();
            let bytes_out = (1..=t).map(shape.rate_out).sum();
            // The first sample knows no rate yet.
            let known = |rate: fn(u64) -> u64| (t > 0).then(|| rate(t) as f64);
            let busy = shape.senders + shape.takers + shape.listeners > 0;
            PipeSample {
                name: shape.name.to_string(),
                bytes_in,
                bytes_out,
                rate_in: known(shape.rate_in),
                rate_out: known(shape.rate_out),
                payloads_stored: shape.waiting + u64::from(shape.takers > 0 && shape.stored > 0),
                idle_for: Some(Duration::from_secs(if busy { 0 } else { 2400 })),
                payloads_waiting: shape.waiting,
                bytes_stored: shape.stored,
                oldest_waiting: shape.oldest.map(|s| Duration::from_secs(s + t)),
                senders: shape.senders,
                takers: shape.takers,
                listeners: shape.listeners,
                payloads: Vec::new(),
            }
        })
        .collect()
}

/// Twelve seconds of samples of ten pipes, one a second.
pub(crate) fn ten_pipes() -> App {
    let mut app = App::new();
    for t in 0..=12 {
        app.push(snapshot(t, ten_pipes_at(t)));
    }
    app
}

/// One pipe with payloads in every state, seen over two samples so rates are known.
pub(crate) fn busy_pipe() -> App {
    let sample = |t: u64| {
        let mut p = pipe("backups");
        // The sender speeds up and slows down; the taker is steady.
        let sent: u64 = (1..=t).map(|s| 15_000_000 + 10_000_000 * (s % 4)).sum();
        let taken = 40_000_000 * t;
        p.bytes_in = sent;
        p.bytes_out = taken;
        p.rate_in = Some((15_000_000 + 10_000_000 * (t % 4)) as f64);
        p.rate_out = Some(40_000_000.0);
        p.payloads_stored = 3;
        p.payloads_waiting = 2;
        p.bytes_stored = 400_000_000 + sent - taken.min(sent);
        p.oldest_waiting = Some(Duration::from_secs(250 + t));
        p.senders = 1;
        p.takers = 1;
        p.listeners = 2;
        p.payloads = vec![
            payload(
                "Qd3kV9x1Lm2Pz8",
                250_000_000 + taken,
                250 + t,
                PayloadState::Taking,
            ),
            payload("Qd3kV9x1Lm2Q1a", 120_000_000, 40 + t, PayloadState::Waiting),
            payload("Qd3kV9x1Lm2Q7c", sent, 2 + t, PayloadState::Sending),
        ];
        p
    };
    let mut app = App::new();
    for t in 0..=6 {
        app.push(snapshot(t, vec![sample(t)]));
    }
    app
}

/// A pipe with data waiting, no takers and growing storage, next to a healthy one.
pub(crate) fn stalled() -> App {
    let sample = |t: u64| {
        let mut stuck = pipe("nightly-export");
        stuck.bytes_in = 2_000_000 * t;
        stuck.rate_in = Some(2_000_000.0);
        stuck.payloads_waiting = 1 + t / 2;
        stuck.payloads_stored = 1 + t / 2;
        stuck.bytes_stored = 2_000_000 * t;
        stuck.oldest_waiting = Some(Duration::from_secs(30 + t));
        stuck.senders = 1;
        let mut fine = pipe("logs");
        fine.bytes_in = 100_000 * t;
        fine.bytes_out = 100_000 * t;
        fine.rate_in = Some(100_000.0);
        fine.rate_out = Some(100_000.0);
        fine.senders = 1;
        fine.takers = 1;
        vec![stuck, fine]
    };
    let mut app = App::new();
    for t in 0..=4 {
        app.push(snapshot(t, sample(t)));
    }
    app
}

/// Forty busy pipes and three idle ones, over three minutes: a long table and a chart with a
/// shape (a transfer that ramps up and a taker that catches up).
pub(crate) fn many_pipes() -> App {
    let sample = |t: u64| {
        let mut pipes: Vec<PipeSample> = (1..=40u64)
            .map(|i| {
                let mut p = pipe(&format!("job-{i:02}"));
                let rate = (i * 250_000 + (t % 7) * 10_000) as f64;
                p.rate_in = Some(rate);
                p.rate_out = Some(rate * 0.9);
                p.bytes_in = (rate as u64) * t;
                p.bytes_out = (rate as u64) * t * 9 / 10;
                p.senders = 1;
                p.takers = 1;
                p
            })
            .collect();
        let mut big = pipe("nightly-backup");
        let ramp = (t.min(60) * 500_000) as f64;
        let catch_up = if t < 90 { 0.0 } else { 45_000_000.0 };
        big.rate_in = Some(ramp);
        big.rate_out = Some(catch_up);
        big.bytes_in = 900_000_000 + t * 30_000_000;
        big.bytes_out = t.saturating_sub(90) * 45_000_000;
        big.bytes_stored = 2_000_000_000;
        big.payloads_stored = 2;
        big.payloads_waiting = 1;
        big.oldest_waiting = Some(Duration::from_secs(20));
        big.senders = 1;
        big.takers = u32::from(t >= 90);
        pipes.push(big);
        for name in ["old-trigger", "retired-logs", "tmp-test"] {
            let mut idle = pipe(name);
            idle.idle_for = Some(Duration::from_secs(86_400 + t));
            pipes.push(idle);
        }
        pipes
    };
    let mut app = App::new();
    for t in 0..=180 {
        app.push(snapshot(t, sample(t)));
    }
    app
}

/// Ten pipes, then the server gone: the connection reconnecting for six seconds, no sample.
pub(crate) fn server_lost() -> App {
    let mut app = ten_pipes();
    for quarter in 50..=72 {
        app.update(Update::Connection {
            at: Duration::from_millis(quarter * 250),
            state: ConnState::Reconnecting,
        });
    }
    app
}
