//! Talking to the server: connecting, skypipe's streams and consumers, and the JetStream
//! error codes skypipe acts on.

pub(crate) mod errors;
pub(crate) mod retry;
pub(crate) mod session;
