//! The transfer's decisions without I/O: each type here takes events (a chunk acknowledged, a
//! ticket seen, time passed) with the instant they happened, and returns what to do. No
//! connection, no clock, no task: `transfer/` runs the loops that feed them and carries out
//! their steps, and the rules docs/protocol.md states are unit tests here, with explicit
//! instants.

pub(crate) mod follow;
pub(crate) mod listen;
pub(crate) mod take;
