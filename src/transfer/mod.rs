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
