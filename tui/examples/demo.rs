//! The dashboard on made-up data, no server needed: `cargo run -p skypipe-tui --example demo`.
//! With `--once` (or `--json`) it prints one sample as a table (or JSON) instead.

use std::time::{Duration, Instant, SystemTime};

use skypipe_tui::{
    App, ConnState, PayloadSample, PayloadState, PipeSample, ServerStatus, Snapshot, Update,
};
use tokio::sync::mpsc;

/// A pretend pipe: bytes per second in and out at second `t`, and whether anyone takes.
struct Fake {
    name: &'static str,
    rate_in: fn(f64) -> f64,
    rate_out: fn(f64) -> f64,
    takers: u32,
}

const FAKES: [Fake; 6] = [
    Fake {
        name: "backups",
        rate_in: |t| 30e6 + 15e6 * (t / 7.0).sin(),
        rate_out: |t| 0.95 * (30e6 + 15e6 * ((t - 1.0) / 7.0).sin()),
        takers: 1,
    },
    Fake {
        name: "logs",
        rate_in: |t| 150e3 + 100e3 * (t / 2.0).sin().abs(),
        rate_out: |t| 150e3 + 100e3 * (t / 2.0).sin().abs(),
        takers: 1,
    },
    Fake {
        name: "metrics",
        rate_in: |t| if (t as u64) % 10 < 2 { 500e3 } else { 0.0 },
        rate_out: |t| if (t as u64) % 10 < 2 { 500e3 } else { 0.0 },
        takers: 2,
    },
    Fake {
        name: "nightly-export",
        rate_in: |_| 2e6,
        rate_out: |_| 0.0,
        takers: 0,
    },
    Fake {
        name: "deploy-trigger",
        rate_in: |_| 0.0,
        rate_out: |_| 0.0,
        takers: 3,
    },
    Fake {
        name: "images",
        rate_in: |t| 4e6 * (t / 3.0).sin().max(0.0),
        rate_out: |t| 3.5e6 * (t / 3.0).sin().max(0.0),
        takers: 1,
    },
];

fn sample(at: Duration) -> Snapshot {
    let t = at.as_secs_f64();
    let pipes = FAKES
        .iter()
        .map(|fake| {
            // Cumulative counters: a crude integral of the rate, good enough for a demo.
            let steps = (t * 10.0) as u64;
            let integral = |rate: fn(f64) -> f64| -> u64 {
                (0..steps)
                    .map(|i| rate(i as f64 / 10.0) / 10.0)
                    .sum::<f64>() as u64
            };
            let bytes_in = integral(fake.rate_in);
            let bytes_out = integral(fake.rate_out);
            let stored = bytes_in.saturating_sub(bytes_out);
            let waiting = u64::from(stored > 0);
            let payloads = if stored > 0 {
                let state = if fake.takers > 0 {
                    PayloadState::Taking
                } else {
                    PayloadState::Sending
                };
                vec![PayloadSample {
                    id: format!("{}-1", fake.name),
                    bytes: bytes_in,
                    age: at,
                    sender: Some("5be07e2a91c4d3f0".to_string()),
                    state,
                }]
            } else {
                Vec::new()
            };
            PipeSample {
                name: fake.name.to_string(),
                bytes_in,
                bytes_out,
                rate_in: Some((fake.rate_in)(t)),
                rate_out: Some((fake.rate_out)(t)),
                payloads_stored: waiting,
                idle_for: Some(Duration::ZERO),
                payloads_waiting: waiting,
                bytes_stored: stored,
                oldest_waiting: (waiting > 0).then_some(at),
                senders: u32::from(bytes_in > 0),
                takers: fake.takers,
                listeners: 0,
                payloads,
            }
        })
        .collect();
    Snapshot {
        at,
        wall: SystemTime::now(),
        server: ServerStatus {
            url: "nats://127.0.0.1:4222".to_string(),
            version: "2.11.4".to_string(),
            state: ConnState::Connected,
            rtt: Some(Duration::from_micros(420)),
            storage_used: 120_000_000,
            storage_available: Some(10_000_000_000),
        },
        pipes,
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let arg = std::env::args().nth(1);
    if let Some(form @ ("--once" | "--json")) = arg.as_deref() {
        let mut app = App::new();
        app.push(sample(Duration::from_secs(1)));
        if form == "--json" {
            println!("{:#}", skypipe_tui::json_report(&app));
        } else {
            print!("{}", skypipe_tui::text_table(&app));
        }
        return Ok(());
    }
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        let start = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            if tx
                .send(Update::Sample(sample(start.elapsed())))
                .await
                .is_err()
            {
                return;
            }
        }
    });
    skypipe_tui::run(rx, App::new()).await
}
