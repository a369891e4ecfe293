//! The server's refusals that skypipe acts on, read from async-nats's error kinds and
//! JetStream's error codes, never from message text.

use async_nats::jetstream::context::{
    AccountError, AccountErrorKind, CreateStreamError, CreateStreamErrorKind, PublishError,
    PublishErrorKind,
};
use async_nats::jetstream::stream::{ConsumerError, ConsumerErrorKind};
use async_nats::jetstream::{self, ErrorCode};

use crate::protocol::pipe::Layout;

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
    /// The account may have no more streams (skypipe needs two per prefix).
    StreamLimit,
    /// The account may have no more consumers.
    ConsumerLimit,
    /// The account requires every stream to say how many bytes it may hold.
    BytesRequired,
    /// A stream's byte limit is more than the account allows one stream.
    StreamBytesTooBig,
    /// The account's storage, or the server's, cannot hold a stream of the size asked for.
    NoRoom,
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
            ErrorCode::MAXIMUM_STREAMS_LIMIT => Refusal::StreamLimit,
            ErrorCode::MAXIMUM_CONSUMERS_LIMIT => Refusal::ConsumerLimit,
            STREAM_MAX_BYTES_REQUIRED => Refusal::BytesRequired,
            STREAM_MAX_BYTES_EXCEEDED => Refusal::StreamBytesTooBig,
            ErrorCode::STORAGE_RESOURCES_EXCEEDED => Refusal::NoRoom,
            other => Refusal::Other(other),
        }
    }

    /// What a refusal of a stream or consumer creation means for the user and what to do
    /// about it, in words for the end of an error line; `None` when there is nothing better
    /// to say than the server's own words.
    pub(crate) fn advice(self, layout: &Layout) -> Option<String> {
        let prefix = layout.prefix();
        let streams = format!("{} and {}", layout.data_stream(), layout.queue_stream());
        Some(match self {
            Refusal::StreamLimit => format!(
                "the account's stream limit is reached: skypipe needs 2 streams for prefix \
                 {prefix:?} ({streams}); ask the account's operator for room for 2 more \
                 streams, or remove streams the account no longer needs (`nats stream ls`)"
            ),
            Refusal::ConsumerLimit => "the account's consumer limit is reached: skypipe needs \
                 one consumer per pipe received on; remove consumers the account no longer \
                 needs (`nats consumer ls`) or ask the account's operator for more"
                .to_string(),
            Refusal::BytesRequired => "the account requires every stream to set a byte limit: \
                 give one with --max-bytes SIZE (or SKYPIPE_MAX_BYTES, or save it with \
                 `skypipe setup --max-bytes SIZE`)"
                .to_string(),
            Refusal::StreamBytesTooBig => "the byte limit is more than the account allows one \
                 stream: give a smaller --max-bytes (`skypipe check` shows the account's limits)"
                .to_string(),
            Refusal::NoRoom | Refusal::Full => format!(
                "the account's storage (or the server's) has no room for {streams} of the \
                 size asked for: give a smaller --max-bytes, remove streams the account no \
                 longer needs, or ask for more storage"
            ),
            Refusal::NoJetStream => "JetStream is off for this account: ask the account's \
                 operator to enable it"
                .to_string(),
            _ => return None,
        })
    }
}

/// "account requires a stream config to have max bytes set".
const STREAM_MAX_BYTES_REQUIRED: ErrorCode = ErrorCode(10113);
/// "stream max bytes exceeds account limit max stream bytes".
const STREAM_MAX_BYTES_EXCEEDED: ErrorCode = ErrorCode(10122);

/// The advice for the refusal an error carries (see [`Refusal::advice`]).
pub(crate) fn advice(err: &(dyn std::error::Error + 'static), layout: &Layout) -> Option<String> {
    refusal(err).and_then(|r| r.advice(layout))
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
        if let Some(c) = e.downcast_ref::<CreateStreamError>() {
            if let CreateStreamErrorKind::JetStream(api) = c.kind() {
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
        assert_eq!(refusal(&api(10027)), Some(Refusal::StreamLimit));
        assert_eq!(refusal(&api(10026)), Some(Refusal::ConsumerLimit));
        assert_eq!(refusal(&api(10113)), Some(Refusal::BytesRequired));
        assert_eq!(refusal(&api(10122)), Some(Refusal::StreamBytesTooBig));
        assert_eq!(refusal(&api(10047)), Some(Refusal::NoRoom));
        let layout = Layout::new("team").expect("a prefix");
        assert!(advice(&api(10027), &layout).is_some_and(|a| a.contains("stream limit")));
        assert!(advice(&api(10113), &layout).is_some_and(|a| a.contains("--max-bytes")));
        assert!(advice(&api(10002), &layout).is_some_and(|a| a.contains("storage")));
        assert_eq!(advice(&api(10071), &layout), None);
        let create = CreateStreamError::new(CreateStreamErrorKind::JetStream(api(10027)));
        assert!(is(&create, Refusal::StreamLimit));
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
