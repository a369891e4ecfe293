//! The server's refusals that skypipe acts on, read from async-nats's error kinds and
//! JetStream's error codes, never from message text.

use async_nats::jetstream::context::{
    AccountError, AccountErrorKind, PublishError, PublishErrorKind,
};
use async_nats::jetstream::stream::{ConsumerError, ConsumerErrorKind};
use async_nats::jetstream::{self, ErrorCode};

/// What a refused request or publish tells skypipe to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// skypipe's streams do not exist (yet): create them.
    NoStream,
    /// The store is full (the stream's limit, the server's, or the account's storage limit):
    /// wait for takers to drain it.
    Full,
    /// More publishes wait on the stream than the server takes at once (many senders
    /// together): the publish was not stored; publish it again after a pause.
    Busy,
    /// The stream does not allow per-message TTL: publish without it.
    NoTtl,
    /// JetStream is off for this account, or on this server.
    NoJetStream,
    /// Any other JetStream API error.
    Other(ErrorCode),
    /// The account (or stream) has as many consumers as its limit allows: make room.
    MaxConsumers,
}

impl Refusal {
    fn from_code(code: ErrorCode) -> Refusal {
        match code {
            ErrorCode::STREAM_NOT_FOUND => Refusal::NoStream,
            // "maximum bytes exceeded" (the stream's limit), "insufficient resources" (the
            // server's store) and "resource limits exceeded for account" (the account's
            // storage limit: a full store too, which takers drain).
            ErrorCode::STREAM_STORE_FAILED
            | ErrorCode::INSUFFICIENT_RESOURCES
            | ErrorCode::ACCOUNT_RESOURCES_EXCEEDED => Refusal::Full,
            ErrorCode::STREAM_TOO_MANY_REQUESTS => Refusal::Busy,
            ErrorCode::MESSAGE_TTL_DISABLED => Refusal::NoTtl,
            ErrorCode::JETSTREAM_NOT_ENABLED_FOR_ACCOUNT | ErrorCode::JETSTREAM_NOT_ENABLED => {
                Refusal::NoJetStream
            }
            ErrorCode::MAXIMUM_CONSUMERS_LIMIT => Refusal::MaxConsumers,
            other => Refusal::Other(other),
        }
    }
}

/// The refusal an error carries, anywhere in its chain; `None` when the server did not refuse
/// (a lost connection, a timeout, something on this side).
pub(crate) fn refusal(err: &(dyn std::error::Error + 'static)) -> Option<Refusal> {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(api) = e.downcast_ref::<jetstream::Error>() {
            return Some(Refusal::from_code(api.error_code()));
        }
        if let Some(p) = e.downcast_ref::<PublishError>() {
            // No stream answered the subject (no responders).
            if p.kind() == PublishErrorKind::StreamNotFound {
                return Some(Refusal::NoStream);
            }
        }
        if let Some(c) = e.downcast_ref::<ConsumerError>() {
            if let ConsumerErrorKind::JetStream(api) = c.kind() {
                return Some(Refusal::from_code(api.error_code()));
            }
        }
        if let Some(a) = e.downcast_ref::<AccountError>() {
            match a.kind() {
                AccountErrorKind::JetStream(api) => {
                    return Some(Refusal::from_code(api.error_code()))
                }
                AccountErrorKind::JetStreamUnavailable => return Some(Refusal::NoJetStream),
                _ => {}
            }
        }
        cur = e.source();
    }
    None
}

/// Whether an error is the given refusal.
pub(crate) fn is(err: &(dyn std::error::Error + 'static), what: Refusal) -> bool {
    refusal(err) == Some(what)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: u64) -> jetstream::Error {
        serde_json::from_value(serde_json::json!({
            "code": 400, "err_code": code, "description": "refused"
        }))
        .expect("a JetStream error")
    }

    #[test]
    fn codes_are_read_from_the_error_not_its_text() {
        assert_eq!(refusal(&api(10059)), Some(Refusal::NoStream));
        assert_eq!(refusal(&api(10077)), Some(Refusal::Full));
        assert_eq!(refusal(&api(10023)), Some(Refusal::Full));
        assert_eq!(refusal(&api(10002)), Some(Refusal::Full));
        assert_eq!(refusal(&api(10167)), Some(Refusal::Busy));
        assert_eq!(refusal(&api(10166)), Some(Refusal::NoTtl));
        assert_eq!(refusal(&api(10039)), Some(Refusal::NoJetStream));
        assert_eq!(refusal(&api(10071)), Some(Refusal::Other(ErrorCode(10071))));
        assert_eq!(refusal(&api(10026)), Some(Refusal::MaxConsumers));
        let wrapped = PublishError::with_source(PublishErrorKind::Other, api(10167));
        assert!(is(&wrapped, Refusal::Busy));
        let text_only = std::io::Error::other("error code 10059");
        assert_eq!(refusal(&text_only), None);
        assert!(is(
            &PublishError::new(PublishErrorKind::StreamNotFound),
            Refusal::NoStream
        ));
    }
}
