//! Validated settings, built from the command line, the environment and natscli context
//! files. First match wins: flag, then `NATS_*` variable, then the context, then defaults.
//! Everything is read here once; the rest of the program reads the settings, never the
//! environment.
//!
//! - `cli`: the command line's grammar (clap), parsed before anything else.
//! - `connection`: [`Conn`], which servers, the login, TLS, the prefix and the streams'
//!   limits ([`resolve_conn`]); `urls` checks and shows server URLs; `contexts` reads and
//!   writes natscli contexts and skypipe's own config file.
//! - `mode`: what a pipe command does ([`Mode`]), named or guessed; `stdin` looks at stdin and
//!   stdout for the guess.
//! - `settings`: [`PipeSettings`], everything a pipe command needs, built by
//!   [`pipe_settings`]; `secret` the crypto settings, `progress` how progress is shown,
//!   `retry` how long a lost server is tried, `sizes` the sizes flags and variables give.
//! - [`ConfigError`]: a setting that cannot be used, a usage error (exit 2).

use std::path::PathBuf;
use std::time::Duration;

pub(crate) mod cli;
mod connection;
mod contexts;
mod mode;
mod progress;
pub(crate) mod retry;
mod secret;
mod settings;
mod sizes;
mod stdin;
mod urls;

#[cfg(test)] // read by the man page's test
pub(crate) use connection::JS_DOMAIN_ENV;
pub(crate) use connection::{
    resolve_conn, write_context, Conn, Source, LOCAL_MAX_STORE_ENV, LOCAL_PORT_ENV, MAX_REPLICAS,
};
pub(crate) use contexts::{merge_json, write_private};
pub(crate) use mode::{Mode, PipeRequest};
pub(crate) use progress::ProgressMode;
pub(crate) use secret::resolve_crypto;
pub(crate) use settings::{pipe_settings, PipeSettings, DEFAULT_TTL, MAX_TTL, MIN_TTL};
pub(crate) use sizes::MIN_MAX_BYTES;
pub(crate) use stdin::{stdin_file_size, Streams};
pub(crate) use urls::is_websocket;

use crate::error::Failure;
use crate::protocol::pipe::NameError;

/// A setting that cannot be used. All of these are usage errors (exit 2).
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConfigError {
    #[error(transparent)]
    Name(#[from] NameError),
    #[error("bad prefix: {0}")]
    Prefix(NameError),
    #[error("bad server URL {url:?}: {reason}")]
    Url { url: String, reason: String },
    #[error("context {name:?} not found: {path} does not exist")]
    NoContext { name: String, path: PathBuf },
    #[error("cannot read context {name:?} at {path}: {reason}")]
    BadContext {
        name: String,
        path: PathBuf,
        reason: String,
    },
    #[error("{what} file {path}: {reason}")]
    File {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("--password (or NATS_PASSWORD) needs a user name too (--user or NATS_USER)")]
    PasswordWithoutUser,
    #[error("a TLS client certificate needs its key, and a key its certificate (--tlscert and --tlskey)")]
    HalfClientCert,
    #[error("the secret {0} is empty")]
    EmptySecret(String),
    #[error("{LOCAL_PORT_ENV}={value:?} is not a port number from 1 to 65535")]
    LocalPort { value: String },
    /// Which side a pipe command takes (sending or receiving, and how) cannot be told, or a
    /// flag is for another side than the command's.
    #[error("{0}")]
    Side(String),
    #[error("{LOCAL_MAX_STORE_ENV}: {0}")]
    LocalMaxStore(String),
    #[error("bad replica count {value:?} (from {from}): give a number from 1 to {MAX_REPLICAS}")]
    Replicas { value: String, from: &'static str },
    #[error("cannot read skypipe's config file {path}: {reason}")]
    BadConfigFile { path: PathBuf, reason: String },
    #[error(
        "--ttl {} is longer than the longest TTL, {}: the server counts a payload's expiry in \
         nanoseconds since 1970, which run out in 2262",
        humantime::format_duration(*.0),
        humantime::format_duration(MAX_TTL)
    )]
    TtlTooLong(Duration),
    #[error(
        "--ttl {} is shorter than the shortest TTL, {}: the server counts TTLs in whole seconds",
        humantime::format_duration(*.0),
        humantime::format_duration(MIN_TTL)
    )]
    TtlTooShort(Duration),
    #[error(
        "bad JetStream domain {value:?} (from {from}): a domain is one subject token, without \
         spaces, '.', '*' or '>'"
    )]
    JsDomain { value: String, from: &'static str },

    #[error("bad byte limit (from {from}): {reason}")]
    MaxBytes { from: &'static str, reason: String },
}

/// A setting that cannot be used ends the command as a usage error (exit 2).
impl From<ConfigError> for Failure {
    fn from(e: ConfigError) -> Failure {
        Failure::Setting(Box::new(e))
    }
}

/// A setting's text with its spaces trimmed, `None` when nothing is left.
fn nonempty(s: &str) -> Option<String> {
    let t = s.trim();
    (!t.is_empty()).then(|| t.to_string())
}

fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "does not exist".into(),
        std::io::ErrorKind::PermissionDenied => "is not readable (permission denied)".into(),
        _ => e.to_string(),
    }
}

#[cfg(test)]
fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: std::collections::HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |k| map.get(k).cloned()
}
