//! skypipe-tui: the `skypipe monitor` dashboard, a live view of every pipe, like `top`.
//!
//! The crate knows a [`Snapshot`] type and never NATS: the product's collector samples the
//! server about once a second and sends snapshots (with the connection's state in between)
//! down a channel; this crate turns them into history, stalls and screens. So every screen
//! can be drawn from fixed data in a test.
//!
//! A map of the modules:
//! - [`snapshot`]: what the collector sends, the whole contract with it.
//! - [`app`]: the state: history, stalls and staleness derived from snapshots, the keys
//!   and the mouse.
//! - [`ui`]: drawing the state (`impl Widget for &App`).
//! - [`text`]: the same without a terminal: a plain table and a JSON report.
//! - [`units`]: human sizes, rates and ages.
//! - [`term`]: the interactive loop over the terminal, a frame tick and the channel.
//!
//! ```no_run
//! # async fn collect(tx: tokio::sync::mpsc::Sender<skypipe_tui::Update>) {}
//! # async fn demo() -> std::io::Result<()> {
//! let (tx, rx) = tokio::sync::mpsc::channel(16);
//! tokio::spawn(collect(tx));
//! skypipe_tui::run(rx, skypipe_tui::App::new()).await
//! # }
//! ```

pub mod app;
mod layout;
pub mod snapshot;
pub mod term;
pub mod text;
pub mod ui;
pub mod units;

#[cfg(test)]
mod fixtures;

pub use app::{
    is_idle, is_stalled, Action, App, SortKey, Stall, IDLE_AFTER, STALE_AFTER, STALL_AFTER,
};
pub use snapshot::{
    ConnState, PayloadSample, PayloadState, PipeSample, ServerStatus, Snapshot, Update,
};
pub use term::run;
pub use text::{json_report, report, text_table, Report};
