//! Moving payloads: stdin cut into chunks and sent; payloads taken, followed or listened to,
//! put back together and written to stdout; progress and presence on the side.

pub(crate) mod input;
pub(crate) mod listen;
pub(crate) mod live;
pub(crate) mod liveness;
pub(crate) mod output;
pub(crate) mod payload;
pub(crate) mod presence;
pub(crate) mod progress;
pub(crate) mod reception;
pub(crate) mod recv;
pub(crate) mod send;

/// Turns the live path off: `SKYPIPE_LIVE=off` (docs/protocol.md, "The live path").
pub(crate) const LIVE_ENV: &str = "SKYPIPE_LIVE";

/// Whether this skypipe offers (sending) and asks for (taking) the live path.
pub(crate) fn live_path_on() -> bool {
    std::env::var(LIVE_ENV).map_or(true, |v| v.trim() != "off")
}
