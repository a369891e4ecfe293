//! What the collector measures, once a second: the server and every pipe at one moment.
//!
//! These types are the whole contract between the dashboard and the code that talks to NATS.
//! Rates come measured: the collector sees every chunk and every announcement with its time,
//! which is finer than the one-second samples. Counters are cumulative, for totals.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

/// One sample of the server and all of its pipes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// When the sample was taken, on a monotonic clock started with the monitor. Rates are
    /// counter deltas divided by the difference of two `at`s, so this must be the time of
    /// the measurement, not the time of sending.
    pub at: Duration,
    /// The same moment on the wall clock, for people and scripts.
    pub wall: SystemTime,
    /// The server the collector is connected to.
    pub server: ServerStatus,
    /// Every pipe that exists on the server, in any order.
    pub pipes: Vec<PipeSample>,
}

/// What the collector sends down the channel: samples, and between them the state of the
/// connection, several times a second, so a lost server shows at once even while a sample
/// waits on it.
#[derive(Clone, Debug, PartialEq)]
pub enum Update {
    /// A full sample.
    Sample(Snapshot),
    /// The connection's state at `at` (same clock as [`Snapshot::at`]).
    Connection {
        /// When it was looked at.
        at: Duration,
        /// What it was.
        state: ConnState,
    },
}

/// The state of the connection and of the server's JetStream storage.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServerStatus {
    /// The server URL as the user gave it (or as the context resolved it).
    pub url: String,
    /// The `nats-server` version the server reported.
    pub version: String,
    /// Whether the client is connected right now.
    pub state: ConnState,
    /// The last measured round trip to the server, if any.
    pub rtt: Option<Duration>,
    /// Bytes of JetStream file storage in use by the account.
    pub storage_used: u64,
    /// Bytes of JetStream storage still free for the account; `None` when the server sets no
    /// limit (or did not say).
    pub storage_available: Option<u64>,
}

/// The client's connection to the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnState {
    /// Connected: the numbers are live.
    Connected,
    /// Lost, trying again: the numbers are the last ones seen.
    Reconnecting,
    /// Not connected and not trying.
    Disconnected,
}

/// One pipe at the moment of the sample.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PipeSample {
    /// The pipe's name.
    pub name: String,
    /// Bytes published into the pipe since the monitor started (cumulative).
    pub bytes_in: u64,
    /// Bytes taken out of the pipe by receivers since the monitor started (cumulative).
    pub bytes_out: u64,
    /// Bytes per second into the pipe over the last few seconds; `None` while not known yet
    /// (the monitor has not watched long enough).
    pub rate_in: Option<f64>,
    /// Bytes per second written by the pipe's takers over the last few seconds; `None` while
    /// not known yet (a taker was heard from only once).
    pub rate_out: Option<f64>,
    /// Payloads the server holds for the pipe: waiting ones and those being taken.
    pub payloads_stored: u64,
    /// Payloads in the pipe that no receiver has taken yet.
    pub payloads_waiting: u64,
    /// Bytes the pipe holds on the server right now.
    pub bytes_stored: u64,
    /// Age of the oldest payload waiting, if any is waiting.
    pub oldest_waiting: Option<Duration>,
    /// Senders publishing into the pipe right now.
    pub senders: u32,
    /// Receivers waiting for a payload or taking one.
    pub takers: u32,
    /// Listeners (`skypipe listen`) watching the pipe.
    pub listeners: u32,
    /// Time since anything was last seen happening on the pipe (a chunk, a delivery, an
    /// announcement); `None` when nothing tells.
    pub idle_for: Option<Duration>,
    /// Payloads in flight or waiting, oldest first, for the detail view. May be left empty
    /// when the collector does not look that deep.
    pub payloads: Vec<PayloadSample>,
}

/// One payload in a pipe.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PayloadSample {
    /// The payload's id, stable across samples (rates per payload are matched by it).
    pub id: String,
    /// Bytes of the payload on the server so far (grows while it is being sent).
    pub bytes: u64,
    /// Time since the payload's first byte reached the server.
    pub age: Duration,
    /// The process sending it (its presence instance), while one announces it.
    pub sender: Option<String>,
    /// What is happening to it.
    pub state: PayloadState,
}

/// Where a payload is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PayloadState {
    /// Its sender is still publishing it.
    Sending,
    /// Complete and stored, nobody has taken it yet.
    Waiting,
    /// A receiver is taking it.
    Taking,
}
