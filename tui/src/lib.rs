//! skypipe-tui: the `skypipe monitor` dashboard, a live view of every pipe, like `top`.
//!
//! The crate knows a [`Snapshot`] type and never NATS: the product's collector samples the
//! server about once a second and sends snapshots down a channel; this crate turns them into
//! rates and screens. So every screen can be drawn from fixed data in a test.
//!
//! A map of the modules:
//! - [`snapshot`]: what the collector sends, the whole contract with it.
//! - [`units`]: human sizes, rates and ages.

pub mod snapshot;
pub mod units;

pub use snapshot::{ConnState, PayloadSample, PayloadState, PipeSample, ServerStatus, Snapshot};
