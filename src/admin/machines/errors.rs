//! Why a join failed, by kind: each decided from what the host's address, its server or the
//! host said (a connection's error kind, a request's, the answers' fields), never from an
//! error's text. The one line a user sees is each kind's `Display`.

use thiserror::Error;

const IS_IT_RUNNING: &str = "is `skypipe server start --public` running there, and the port open?";

/// What went wrong between `skypipe join` and the host it was pointed at.
#[derive(Debug, Error, PartialEq, Eq)]
pub(crate) enum JoinError {
    /// Nothing answered at the address (before any TLS).
    #[error("nothing answers at {host} ({why}): {IS_IT_RUNNING}")]
    NothingAnswers { host: String, why: String },
    /// Something answered, but not with a NATS server's first line.
    #[error("{host} is not a skypipe server: it does not answer as a NATS server")]
    NotNats { host: String },
    /// A NATS server answered that does not require TLS.
    #[error("{host} is not a skypipe public server: it is a NATS server without TLS")]
    NoTls { host: String },
    /// The connection failed on the way (I/O, time, name lookup).
    #[error("nothing answers at {host} as a skypipe server ({why}): {IS_IT_RUNNING}")]
    Unreachable { host: String, why: String },
    /// The server wants a login before anything.
    #[error(
        "{host} is a NATS server that lets nobody in without a login: not a skypipe server \
         with invites"
    )]
    LoginWall { host: String },
    /// The TLS handshake or the NATS protocol over it failed.
    #[error("{host} is not a skypipe public server: it does not speak NATS over TLS ({why})")]
    NotTlsNats { host: String, why: String },
    /// Nobody listens at the invite's subject.
    #[error(
        "no invite waits at {host} for the code {code}: it expired, was used, or was never \
         made there; ask for a new one with `skypipe invite`"
    )]
    NoInvite { host: String, code: String },
    /// A request of the exchange failed.
    #[error("{host} did not answer the join: {why}")]
    NoAnswer { host: String, why: String },
    /// A request of the exchange had no answer in time.
    #[error("{host} did not answer the join within {wait}")]
    Quiet { host: String, wait: String },
    /// The answer to the hello is not the join's.
    #[error("{host} answered, but not as a skypipe server with invites")]
    NotSkypipe { host: String },
    /// The host said no, in the clear.
    #[error("{host} refused: {error}")]
    Refused { host: String, error: String },
    /// The host speaks another version of the exchange.
    #[error(
        "{host} speaks join version {theirs}, this skypipe {ours}: use the same skypipe \
         version on both machines (the code {code} is dead now)"
    )]
    Version {
        host: String,
        theirs: u32,
        ours: u32,
        code: String,
    },
    /// The host's key agreement or sealed answer is malformed.
    #[error("{host}: {why}")]
    Malformed { host: String, why: String },
    /// The host's answer did not open: the code typed is not the host's.
    #[error(
        "the code {code} is wrong (it is dead now): ask for a new one with `skypipe invite` \
         on {host}; nothing was saved"
    )]
    WrongCode { host: String, code: String },
    /// The certificate shown is not the one the host says it serves.
    #[error(
        "the server at {host} showed a certificate that is not the one the host serves: \
         someone is in the middle (or the address leads elsewhere); nothing was saved"
    )]
    Middle { host: String },
}

impl JoinError {
    /// The kind of a failed connection to the host's server.
    pub(crate) fn from_connect(host: &str, e: &async_nats::ConnectError) -> JoinError {
        use async_nats::ConnectErrorKind as K;
        let host = host.to_string();
        match e.kind() {
            K::Io | K::TimedOut | K::MaxReconnects | K::Dns => JoinError::Unreachable {
                host,
                why: e.to_string(),
            },
            K::AuthorizationViolation | K::Authentication => JoinError::LoginWall { host },
            K::Tls | K::ServerParse => JoinError::NotTlsNats {
                host,
                why: e.to_string(),
            },
        }
    }

    /// The kind of a failed request of the exchange.
    pub(crate) fn from_request(host: &str, code: &str, e: &async_nats::RequestError) -> JoinError {
        let host = host.to_string();
        match e.kind() {
            async_nats::RequestErrorKind::NoResponders => JoinError::NoInvite {
                host,
                code: code.to_string(),
            },
            _ => JoinError::NoAnswer {
                host,
                why: e.to_string(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_says_its_one_line() {
        let host = || "box".to_string();
        assert_eq!(
            JoinError::NothingAnswers {
                host: host(),
                why: "refused".into()
            }
            .to_string(),
            "nothing answers at box (refused): is `skypipe server start --public` running \
             there, and the port open?"
        );
        assert_eq!(
            JoinError::WrongCode {
                host: host(),
                code: "7-a-b".into()
            }
            .to_string(),
            "the code 7-a-b is wrong (it is dead now): ask for a new one with `skypipe invite` \
             on box; nothing was saved"
        );
    }

    #[test]
    fn no_responders_means_no_invite_waits() {
        let e = async_nats::RequestError::new(async_nats::RequestErrorKind::NoResponders);
        assert!(matches!(
            JoinError::from_request("box", "7-a-b", &e),
            JoinError::NoInvite { .. }
        ));
        let e = async_nats::RequestError::new(async_nats::RequestErrorKind::Other);
        assert!(matches!(
            JoinError::from_request("box", "7-a-b", &e),
            JoinError::NoAnswer { .. }
        ));
    }

    #[test]
    fn a_login_wall_is_no_skypipe_server() {
        let e = async_nats::ConnectError::new(async_nats::ConnectErrorKind::AuthorizationViolation);
        assert_eq!(
            JoinError::from_connect("box", &e),
            JoinError::LoginWall { host: "box".into() }
        );
    }
}
