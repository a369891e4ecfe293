//! The settings of a pipe command ([`PipeSettings`]), built once from the command line, the
//! environment and the context: the rest of the program reads them, never the environment.

use std::time::Duration;

use crate::config::cli::Cli;
use crate::config::connection::{resolve_conn, Conn};
use crate::config::mode::{Mode, PipeRequest};
use crate::config::progress::ProgressMode;
use crate::config::secret::resolve_crypto;
use crate::config::stdin::Streams;
use crate::config::ConfigError;
use crate::protocol::crypto::Crypto;
use crate::protocol::pipe::{PipeName, DEFAULT_PIPE};

/// How long a payload waits when `--ttl` is not given.
pub(crate) const DEFAULT_TTL: Duration = Duration::from_secs(24 * 60 * 60);
/// The longest `--ttl`: 100 years (of 365.25 days, as `humantime` counts them). The server
/// keeps a message's expiry as nanoseconds since 1970 in an int64, which runs out in 2262; a
/// TTL that reaches past that wraps around and the payload expires at once.
pub(crate) const MAX_TTL: Duration = Duration::from_secs(100 * 31_557_600);
/// The shortest `--ttl`: the server counts per-message TTLs in whole seconds, from one.
pub(crate) const MIN_TTL: Duration = Duration::from_secs(1);

/// Everything a pipe command needs.
#[derive(Debug, Clone)]
pub(crate) struct PipeSettings {
    pub(crate) pipe: PipeName,
    pub(crate) mode: Mode,
    /// The mode was guessed by the bare form (not named by a verb or a flag): an empty stdin
    /// is then refused rather than sent.
    pub(crate) guessed: bool,
    pub(crate) ttl: Duration,
    pub(crate) ttl_given: bool,
    pub(crate) timeout: Option<Duration>,
    pub(crate) sender_timeout: Duration,
    pub(crate) progress: ProgressMode,
    pub(crate) quiet: bool,

    pub(crate) conn: Conn,
    pub(crate) crypto: Crypto,
}

/// How long a taker waits for a silent sender unless `--sender-timeout` says otherwise.
pub(crate) const DEFAULT_SENDER_TIMEOUT: Duration = Duration::from_secs(60);

/// Checks a `--ttl` against what the server can hold: [`MIN_TTL`] to [`MAX_TTL`].
pub(crate) fn check_ttl(ttl: Duration) -> Result<Duration, ConfigError> {
    if ttl > MAX_TTL {
        Err(ConfigError::TtlTooLong(ttl))
    } else if ttl < MIN_TTL {
        Err(ConfigError::TtlTooShort(ttl))
    } else {
        Ok(ttl)
    }
}

/// Builds the settings of a pipe command.
pub(crate) fn pipe_settings(
    request: &PipeRequest,
    cli: &Cli,
    io: Streams,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<PipeSettings, ConfigError> {
    let pipe = PipeName::new(request.name.as_deref().unwrap_or(DEFAULT_PIPE))?;
    let (mode, guessed) = request.mode(io)?;
    let f = &request.flags;
    let conn = resolve_conn(&cli.conn, env)?;
    Ok(PipeSettings {
        pipe,
        mode,
        guessed,
        ttl: f.ttl.map(check_ttl).transpose()?.unwrap_or(DEFAULT_TTL),
        ttl_given: f.ttl.is_some(),
        timeout: f.timeout,
        sender_timeout: f.sender_timeout.unwrap_or(DEFAULT_SENDER_TIMEOUT),
        progress: ProgressMode::choose(
            f.quiet,
            f.progress,
            std::io::IsTerminal::is_terminal(&std::io::stderr()),
        ),
        quiet: f.quiet,
        crypto: resolve_crypto(
            f.secret_file.as_deref(),
            f.allow_plaintext,
            env,
            conn.secret_file.as_deref(),
        )?,
        conn,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn ttls_the_server_can_hold() {
        let years = |n: u64| Duration::from_secs(n * 31_557_600);
        assert_eq!(check_ttl(years(100)).ok(), Some(MAX_TTL));
        assert!(check_ttl(years(50)).is_ok());
        assert!(check_ttl(MIN_TTL).is_ok());
        let long = check_ttl(years(300)).expect_err("too long");
        assert_eq!(
            long.to_string().split(':').next(),
            Some("--ttl 300years is longer than the longest TTL, 100years")
        );
        // Past 100 years and still short of the wrap-around: refused all the same.
        assert!(check_ttl(MAX_TTL + Duration::from_secs(1)).is_err());
        let short = check_ttl(Duration::from_millis(500)).expect_err("too short");
        assert!(short
            .to_string()
            .starts_with("--ttl 500ms is shorter than the shortest TTL, 1s"));
    }
}
