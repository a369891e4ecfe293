//! The transfer's decisions without I/O: each type here takes events (a chunk acknowledged, a
//! ticket seen, time passed) with the instant they happened, and returns what to do. No
//! connection, no clock, no task: `transfer/` runs the loops that feed them and carries out
//! their steps, and the rules docs/protocol.md states are unit tests here, with explicit
//! instants.

/// The follower's order: when a payload lets the next one write.
pub(crate) mod follow;
/// The listener's book of payloads: announced, opened, missed.
pub(crate) mod listen;
/// The live path, the sender's side: route, kept chunks, leaving, listeners' pace.
pub(crate) mod live;
/// The taker's hold and purge, and what a stopped read does with its ticket.
pub(crate) mod take;
