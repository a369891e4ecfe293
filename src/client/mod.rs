//! Talking to the server: connecting, skypipe's streams and consumers, and the JetStream
//! error codes skypipe acts on.
//!
//! - `session`: connecting ([`session::connect`]), the [`session::Session`] every command
//!   uses, skypipe's two streams and the queue's consumers, and the server's word that a
//!   login may not do something.
//! - `account`: the account's JetStream usage and limits; `budget`: the byte limit skypipe
//!   gives its streams from them.
//! - `domain`: JetStream domains, judged by their own answer, and the verdict on where a
//!   prefix's streams live; `home`: the probe that finds out, on a session.
//! - `errors`: the server's refusals ([`errors::Refusal`]) read from its error codes.

pub(crate) mod account;
pub(crate) mod budget;
pub(crate) mod domain;
pub(crate) mod errors;
mod home;
pub(crate) mod session;

/// Whether a message that reached one of skypipe's core NATS subscriptions (tickets for
/// listeners, live chunks and their acknowledgements, presence) was published by a client,
/// and so checked against that client's permissions. The server publishes without any such
/// check for a JetStream push consumer (its deliveries carry a `$JS.ACK.` reply, its flow
/// control a `$JS.FC.` one, its heartbeats a status) and for a stream that republishes (a
/// `Nats-Stream` header): a machine allowed only its own prefix can create either on its own
/// streams and aim it at another prefix's subjects. skypipe itself never uses them there.
pub(crate) fn published_by_a_client(msg: &async_nats::Message) -> bool {
    let from_jetstream = msg.reply.as_ref().is_some_and(|r| r.starts_with("$JS."));
    let republished = msg
        .headers
        .as_ref()
        .is_some_and(|h| h.get("Nats-Stream").is_some());
    !(from_jetstream || republished || msg.status.is_some())
}
