//! Fixed data for the tests: a server, pipes, and apps fed with a few seconds of samples.

use std::time::Duration;

use crate::app::App;
use crate::snapshot::{ConnState, PayloadSample, PayloadState, PipeSample, ServerStatus, Snapshot};

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
        payloads_waiting: 0,
        bytes_stored: 0,
        oldest_waiting: None,
        senders: 0,
        takers: 0,
        listeners: 0,
        payloads: Vec::new(),
    }
}

pub(crate) fn snapshot(at_secs: u64, pipes: Vec<PipeSample>) -> Snapshot {
    Snapshot {
        at: Duration::from_secs(at_secs),
        server: server(),
        pipes,
    }
}

pub(crate) fn payload(id: &str, bytes: u64, age_secs: u64, state: PayloadState) -> PayloadSample {
    PayloadSample {
        id: id.to_string(),
        bytes,
        age: Duration::from_secs(age_secs),
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
            PipeSample {
                name: shape.name.to_string(),
                bytes_in,
                bytes_out,
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
        p.payloads_waiting = 3;
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
        stuck.payloads_waiting = 1 + t / 2;
        stuck.bytes_stored = 2_000_000 * t;
        stuck.oldest_waiting = Some(Duration::from_secs(30 + t));
        stuck.senders = 1;
        let mut fine = pipe("logs");
        fine.bytes_in = 100_000 * t;
        fine.bytes_out = 100_000 * t;
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
