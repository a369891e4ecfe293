//! Validated settings, built from the command line, the environment and natscli context
//! files. First match wins: flag, then `NATS_*` variable, then the context, then defaults.

use std::path::{Path, PathBuf};
use std::time::Duration;

mod contexts;

pub(crate) use contexts::{load_context, merge_json, write_context, write_private, ContextFile};

use crate::cli::{Cli, ConnArgs, PipeArgs};
use crate::client::retry::RetryPolicy;
use crate::protocol::crypto::{Crypto, Secret};
use crate::protocol::pipe::{Layout, NameError, PipeName, DEFAULT_PIPE, DEFAULT_PREFIX};
use crate::transfer::progress::ProgressMode;

/// The port skypipe looks at on 127.0.0.1 when nothing names a server (and where its local
/// server listens), unless `SKYPIPE_LOCAL_PORT` names another port.
pub(crate) const DEFAULT_PORT: u16 = 4222;
/// The variable that moves the default address, and the local server, to another port.
pub(crate) const LOCAL_PORT_ENV: &str = "SKYPIPE_LOCAL_PORT";
/// The variable that sets the local server's store size (as `--max-store` does).
pub(crate) const LOCAL_MAX_STORE_ENV: &str = "SKYPIPE_LOCAL_MAX_STORE";
/// The most disk the local server's store may use unless told otherwise: room for several
/// large payloads waiting at once, while a forgotten pipe cannot fill the disk. Live
/// transfers of any size still pass: a sender facing a full store waits for takers.
pub(crate) const DEFAULT_LOCAL_MAX_STORE: u64 = 10 << 30;
/// The variable that names the JetStream domain (as `--js-domain` does).
pub(crate) const JS_DOMAIN_ENV: &str = "NATS_JS_DOMAIN";
/// The most replicas a JetStream stream can have.
pub(crate) const MAX_REPLICAS: usize = 5;
/// How long a payload waits when `--ttl` is not given.
pub(crate) const DEFAULT_TTL: Duration = Duration::from_secs(24 * 60 * 60);
/// The longest `--ttl`: 100 years (of 365.25 days, as `humantime` counts them). The server
/// keeps a message's expiry as nanoseconds since 1970 in an int64, which runs out in 2262; a
/// TTL that reaches past that wraps around and the payload expires at once.
pub(crate) const MAX_TTL: Duration = Duration::from_secs(100 * 31_557_600);
/// The shortest `--ttl`: the server counts per-message TTLs in whole seconds, from one.
pub(crate) const MIN_TTL: Duration = Duration::from_secs(1);

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
    /// What to do cannot be told, or a flag does not apply to what the command does.
    #[error("{0}")]
    Mode(String),
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

/// Where the server URL came from, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Source {
    Flag,
    Env,
    Context(String),
    Default,
}

/// How to reach and log in to the server.
#[derive(Debug, Clone)]
pub(crate) struct Conn {
    pub(crate) urls: Vec<String>,
    pub(crate) source: Source,
    pub(crate) user: Option<String>,
    pub(crate) password: Option<String>,
    pub(crate) token: Option<String>,
    pub(crate) creds: Option<PathBuf>,
    pub(crate) nkey: Option<PathBuf>,
    pub(crate) cert: Option<PathBuf>,
    pub(crate) key: Option<PathBuf>,
    pub(crate) ca: Option<PathBuf>,
    pub(crate) tls_first: bool,
    pub(crate) inbox_prefix: Option<String>,
    pub(crate) js_domain: Option<String>,
    pub(crate) js_api_prefix: Option<String>,
    pub(crate) layout: Layout,
    /// Replicas for skypipe's streams when they are created; `None`: decided at creation
    /// (see `Session::replicas_for_new_streams`).
    pub(crate) replicas: Option<usize>,
    /// The port of the default address, where skypipe's local server listens.
    pub(crate) local_port: u16,
    /// The local server's credential (an nkey seed file), used to log in when nothing names
    /// a server and no credential is given; it may not exist (yet). See `crate::admin::local`.
    pub(crate) local_nkey: Option<PathBuf>,
    /// The most disk the local server's store may use when skypipe starts it.
    pub(crate) local_max_store: u64,
    /// How long to keep trying a server that went away.
    pub(crate) retry: RetryPolicy,
    /// The secret to seal with when neither `--secret-file` nor `SKYPIPE_SECRET` gives one:
    /// the context's `skypipe_secret_file`, or for the local server the one `skypipe invite
    /// --with-secret` made (`secret` in the data directory). It may not exist.
    pub(crate) secret_file: Option<PathBuf>,
    /// The bytes skypipe's two streams may hold together when it creates them (`--max-bytes`,
    /// `SKYPIPE_MAX_BYTES`, the context's `skypipe_max_bytes`); `None`: no limit, or a share
    /// of the account's storage when the account requires one (see `client::budget`).
    pub(crate) max_bytes: Option<u64>,
}

impl Conn {
    /// The URLs as one string, for messages (never includes credentials).
    pub(crate) fn display_urls(&self) -> String {
        self.urls
            .iter()
            .map(|u| redact_url(u))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Removes `user:password@` from a URL so it can be shown.
pub(crate) fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}{}", &url[..s + 3], &url[at + 1..]),
        (None, Some(at)) => url[at + 1..].to_string(),
        _ => url.to_string(),
    }
}

/// The `user:password` (or a lone token) before the `@` of a URL, percent-decoded.
pub(crate) fn url_credentials(url: &str) -> Option<(String, Option<String>)> {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split('/').next().unwrap_or(rest);
    let (info, _) = authority.rsplit_once('@')?;
    let (name, password) = match info.split_once(':') {
        Some((n, p)) => (n, Some(percent_decode(p))),
        None => (info, None),
    };
    Some((percent_decode(name), password)).filter(|(n, _)| !n.is_empty())
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The port of the default address: `SKYPIPE_LOCAL_PORT`, or 4222.
pub(crate) fn local_port(env: &dyn Fn(&str) -> Option<String>) -> Result<u16, ConfigError> {
    match env(LOCAL_PORT_ENV).filter(|s| !s.trim().is_empty()) {
        None => Ok(DEFAULT_PORT),
        Some(v) => v
            .trim()
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or(ConfigError::LocalPort { value: v }),
    }
}

/// The local server's store size: `SKYPIPE_LOCAL_MAX_STORE`, or 10 GiB.
pub(crate) fn local_max_store(env: &dyn Fn(&str) -> Option<String>) -> Result<u64, ConfigError> {
    match env(LOCAL_MAX_STORE_ENV).filter(|s| !s.trim().is_empty()) {
        None => Ok(DEFAULT_LOCAL_MAX_STORE),
        Some(v) => crate::cli::parse_max_store(&v).map_err(ConfigError::LocalMaxStore),
    }
}

/// Checks a replica count.
pub(crate) fn parse_replicas(value: &str, from: &'static str) -> Result<usize, ConfigError> {
    value
        .trim()
        .parse::<usize>()
        .ok()
        .filter(|n| (1..=MAX_REPLICAS).contains(n))
        .ok_or_else(|| ConfigError::Replicas {
            value: value.to_string(),
            from,
        })
}

fn expand_home(path: &str, env: &dyn Fn(&str) -> Option<String>) -> PathBuf {
    match (path.strip_prefix("~/"), env("HOME")) {
        (Some(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => PathBuf::from(path),
    }
}

fn nonempty(s: &str) -> Option<String> {
    let t = s.trim();
    (!t.is_empty()).then(|| t.to_string())
}

/// Splits a comma-separated URL list and checks each URL.
pub(crate) fn parse_urls(text: &str) -> Result<Vec<String>, ConfigError> {
    let urls: Vec<String> = text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    if urls.is_empty() {
        return Err(ConfigError::Url {
            url: text.to_string(),
            reason: "no URL given".into(),
        });
    }
    for url in &urls {
        check_url(url)?;
    }
    Ok(urls)
}

/// Whether a URL dials a WebSocket listener (`ws://` or `wss://`) rather than a NATS
/// client port.
pub(crate) fn is_websocket(url: &str) -> bool {
    url.starts_with("ws://") || url.starts_with("wss://")
}

/// `ws://` becomes `wss://`: used when TLS is asked for (a CA, a client certificate or TLS
/// first), so a plain WebSocket URL never quietly drops it. The natscli does the same.
fn with_websocket_tls(url: String) -> String {
    match url.strip_prefix("ws://") {
        Some(rest) => format!("wss://{rest}"),
        None => url,
    }
}

fn check_url(url: &str) -> Result<(), ConfigError> {
    let bad = |reason: &str| ConfigError::Url {
        url: redact_url(url),
        reason: reason.to_string(),
    };
    let rest = match url.split_once("://") {
        Some((scheme, rest)) => {
            if !matches!(scheme, "nats" | "tls" | "ws" | "wss") {
                return Err(bad("the scheme must be nats://, tls://, ws:// or wss://"));
            }
            rest
        }
        None => url,
    };
    let host_port = rest.rsplit('@').next().unwrap_or(rest);
    let host_port = host_port.split('/').next().unwrap_or(host_port);
    if host_port.is_empty() {
        return Err(bad("no host"));
    }
    let port = match host_port.strip_prefix('[') {
        Some(v6) => v6.split_once(']').and_then(|(_, p)| p.strip_prefix(':')),
        None => host_port.rsplit_once(':').map(|(_, p)| p),
    };
    if port.is_some_and(|p| p.parse::<u16>().is_err()) {
        return Err(bad("the port is not a number from 0 to 65535"));
    }
    url.parse::<async_nats::ServerAddr>()
        .map(|_| ())
        .map_err(|e| bad(&e.to_string()))
}

fn readable(what: &'static str, path: PathBuf) -> Result<PathBuf, ConfigError> {
    match std::fs::File::open(&path) {
        Ok(f) => match f.metadata() {
            Ok(m) if m.is_dir() => Err(ConfigError::File {
                what,
                path,
                reason: "is a directory".into(),
            }),
            _ => Ok(path),
        },
        Err(e) => Err(ConfigError::File {
            what,
            path,
            reason: io_reason(&e),
        }),
    }
}

fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "does not exist".into(),
        std::io::ErrorKind::PermissionDenied => "is not readable (permission denied)".into(),
        _ => e.to_string(),
    }
}

/// The host and port a URL dials, for telling servers apart (the scheme's default port when
/// none is given).
fn server_of(url: &str) -> Option<(String, u16)> {
    let addr = url.parse::<async_nats::ServerAddr>().ok()?;
    Some((addr.host().to_ascii_lowercase(), addr.port()))
}

/// Whether a context's settings go with the server skypipe dials: it came from the context,
/// or every URL named elsewhere is one of the context's own.
fn context_applies(source: &Source, urls: &[String], ctx: &ContextFile) -> bool {
    if matches!(source, Source::Context(_)) {
        return true;
    }
    let Ok(own) = parse_urls(&ctx.url) else {
        return false;
    };
    let own: Vec<(String, u16)> = own.iter().filter_map(|u| server_of(u)).collect();
    urls.iter()
        .all(|u| server_of(u).is_some_and(|s| own.contains(&s)))
}

/// Resolves connection settings from flags, environment and context.
pub(crate) fn resolve_conn(
    args: &ConnArgs,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Conn, ConfigError> {
    let context = load_context(args.context.as_deref(), env)?;
    let (ctx_name, ctx) = match context {
        Some((n, c)) => (Some(n), c),
        None => (None, ContextFile::default()),
    };
    let envs = |k: &str| env(k).filter(|s| !s.is_empty());
    let local_port = local_port(env)?;
    let local_max_store = local_max_store(env)?;

    let (url_text, source) = if let Some(s) = args.server.clone() {
        (s, Source::Flag)
    } else if let Some(s) = envs("NATS_URL") {
        (s, Source::Env)
    } else if let (Some(u), Some(n)) = (nonempty(&ctx.url), ctx_name.clone()) {
        (u, Source::Context(n))
    } else {
        (format!("nats://127.0.0.1:{local_port}"), Source::Default)
    };
    let urls = parse_urls(&url_text)?;
    // A context is a server and how to use it: its logins, TLS files and skypipe settings go
    // to its own servers only, never to one named with --server or NATS_URL.
    let ctx = match &ctx_name {
        Some(name) if !context_applies(&source, &urls, &ctx) => {
            tracing::info!(
                "context {name:?} is not used: {} is not one of its servers",
                urls.iter()
                    .map(|u| redact_url(u))
                    .collect::<Vec<_>>()
                    .join(",")
            );
            ContextFile::default()
        }
        _ => ctx,
    };

    let pick = |flag: &Option<String>, var: &str, ctx_value: &str| -> Option<String> {
        flag.clone()
            .or_else(|| envs(var))
            .or_else(|| nonempty(ctx_value))
    };
    let pick_path = |flag: &Option<PathBuf>, var: &str, ctx_value: &str| -> Option<PathBuf> {
        flag.clone()
            .or_else(|| envs(var).map(PathBuf::from))
            .or_else(|| nonempty(ctx_value).map(|p| expand_home(&p, env)))
    };

    let mut user = pick(&args.user, "NATS_USER", &ctx.user);
    let mut password = pick(&args.password, "NATS_PASSWORD", &ctx.password);
    if password.is_some() && user.is_none() {
        return Err(ConfigError::PasswordWithoutUser);
    }
    let mut token = pick(&args.token, "NATS_TOKEN", &ctx.token);
    // `nats://user:password@host` (or `nats://token@host`), as every NATS client reads it;
    // the client library does not, so it is taken here, when nothing else names a login.
    if user.is_none() && token.is_none() {
        match urls.iter().find_map(|u| url_credentials(u)) {
            Some((u, Some(p))) => (user, password) = (Some(u), Some(p)),
            Some((t, None)) => token = Some(t),
            None => {}
        }
    }
    let creds = pick_path(&args.creds, "NATS_CREDS", &ctx.creds)
        .map(|p| readable("credentials", p))
        .transpose()?;
    let nkey = pick_path(&args.nkey, "NATS_NKEY", &ctx.nkey)
        .map(|p| readable("nkey seed", p))
        .transpose()?;
    let cert = pick_path(&args.tlscert, "NATS_CERT", &ctx.cert)
        .map(|p| readable("TLS certificate", p))
        .transpose()?;
    let key = pick_path(&args.tlskey, "NATS_KEY", &ctx.key)
        .map(|p| readable("TLS key", p))
        .transpose()?;
    if cert.is_some() != key.is_some() {
        return Err(ConfigError::HalfClientCert);
    }
    let ca = pick_path(&args.tlsca, "NATS_CA", &ctx.ca)
        .map(|p| readable("TLS CA", p))
        .transpose()?;
    let tls_first = args.tlsfirst
        || envs("NATS_TLSFIRST").is_some_and(|v| v != "0" && v != "false")
        || ctx.tls_first;
    let urls = if ca.is_some() || cert.is_some() || tls_first {
        urls.into_iter().map(with_websocket_tls).collect()
    } else {
        urls
    };
    let prefix = args
        .prefix
        .clone()
        .or_else(|| envs("SKYPIPE_PREFIX"))
        .or_else(|| nonempty(&ctx.skypipe_prefix))
        .unwrap_or_else(|| DEFAULT_PREFIX.to_string());
    let layout = Layout::new(&prefix).map_err(ConfigError::Prefix)?;
    let replicas = match (args.replicas, envs("SKYPIPE_REPLICAS")) {
        (Some(n), _) => Some(parse_replicas(&n.to_string(), "--replicas")?),
        (None, Some(v)) => Some(parse_replicas(&v, "SKYPIPE_REPLICAS")?),
        (None, None) if ctx.skypipe_replicas > 0 => Some(parse_replicas(
            &ctx.skypipe_replicas.to_string(),
            "the context's skypipe_replicas",
        )?),
        (None, None) => None,
    };
    let max_bytes = match (args.max_bytes, envs("SKYPIPE_MAX_BYTES")) {
        (Some(n), _) => Some(n),
        (None, Some(v)) => Some(parse_max_bytes(&v, "SKYPIPE_MAX_BYTES")?),
        (None, None) if ctx.skypipe_max_bytes > 0 => Some(ctx.skypipe_max_bytes),
        (None, None) => None,
    };

    // Nothing named and no login given: the default address is skypipe's local server, which
    // lets in whoever holds the seed its owner's skypipe made.
    let local_nkey = (source == Source::Default
        && user.is_none()
        && token.is_none()
        && creds.is_none()
        && nkey.is_none())
    .then(|| crate::paths::data_dir(env).ok())
    .flatten()
    .map(|dir| dir.join(crate::paths::NKEY_FILE));

    // The local server made public listens with TLS where it was told to: its owner reaches
    // it there and pins its CA.
    let (urls, ca) = match (&source, &ca) {
        (Source::Default, None) => match crate::paths::owner_route(env) {
            Some((url, ca)) => (vec![url], Some(ca)),
            None => (urls, ca),
        },
        _ => (urls, ca),
    };
    let secret_file = match &source {
        Source::Default => crate::paths::data_dir(env)
            .ok()
            .map(|d| d.join(crate::paths::SECRET_FILE)),
        _ => nonempty(&ctx.skypipe_secret_file).map(|p| expand_home(&p, env)),
    };

    Ok(Conn {
        urls,
        source,
        user,
        password,
        token,
        creds,
        nkey,
        cert,
        key,
        ca,
        tls_first,
        inbox_prefix: nonempty(&ctx.inbox_prefix),
        js_domain: js_domain(args, &envs, &ctx)?,
        js_api_prefix: nonempty(&ctx.jetstream_api_prefix),
        layout,
        replicas,
        local_port,
        local_nkey,
        local_max_store,
        retry: RetryPolicy::from_env(env),
        secret_file,
        max_bytes,
    })
}

/// The JetStream domain: `--js-domain`, `NATS_JS_DOMAIN`, then the context's
/// `jetstream_domain`.
fn js_domain(
    args: &ConnArgs,
    envs: &dyn Fn(&str) -> Option<String>,
    ctx: &ContextFile,
) -> Result<Option<String>, ConfigError> {
    let (value, from) = match (&args.js_domain, envs(JS_DOMAIN_ENV)) {
        (Some(d), _) => (d.clone(), "--js-domain"),
        (None, Some(d)) => (d, JS_DOMAIN_ENV),
        (None, None) => match nonempty(&ctx.jetstream_domain) {
            Some(d) => (d, "the context's jetstream_domain"),
            None => return Ok(None),
        },
    };
    let value = value.trim().to_string();
    let bad = |c: char| c.is_whitespace() || matches!(c, '.' | '*' | '>');
    if value.is_empty() || value.chars().any(bad) {
        return Err(ConfigError::JsDomain { value, from });
    }
    Ok(Some(value))
}

/// Reads a byte limit for skypipe's streams: a size ([`crate::cli::parse_size`]) of at
/// least [`crate::client::budget::MIN_MAX_BYTES`].
pub(crate) fn parse_max_bytes(value: &str, from: &'static str) -> Result<u64, ConfigError> {
    let bytes =
        crate::cli::parse_size(value).map_err(|reason| ConfigError::MaxBytes { from, reason })?;
    if bytes < crate::client::budget::MIN_MAX_BYTES {
        return Err(ConfigError::MaxBytes {
            from,
            reason: format!(
                "{value:?} is less than the smallest, {} bytes",
                crate::client::budget::MIN_MAX_BYTES
            ),
        });
    }
    Ok(bytes)
}

/// What a pipe command does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// stdin becomes one payload.
    Send,
    /// Take the oldest payload (waiting for one) and end at its end.
    Take,
    /// Take every payload as it comes, for ever (or until `--timeout`).
    Follow,
    /// A live copy of what is sent; takes nothing. Ends at the first payload's end unless
    /// `follow`.
    Listen { follow: bool },
}

impl Mode {
    /// The receiving mode that `--listen` and `--follow` make.
    pub(crate) fn receiving(listen: bool, follow: bool) -> Mode {
        match (listen, follow) {
            (true, follow) => Mode::Listen { follow },
            (false, true) => Mode::Follow,
            (false, false) => Mode::Take,
        }
    }

    /// Whether it writes payloads to stdout.
    pub(crate) fn receives(self) -> bool {
        self != Mode::Send
    }

    /// Whether it goes on after a payload's end.
    pub(crate) fn keeps_going(self) -> bool {
        matches!(self, Mode::Follow | Mode::Listen { follow: true })
    }
}

/// What stdin is, as far as the mode choice cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StdinKind {
    /// A regular file: something to read.
    File,
    /// A pipe (FIFO): something to read.
    Fifo,
    /// A socket: something to read.
    Socket,
    /// A terminal, /dev/null, closed, or unknown: do not read.
    Other,
}

impl StdinKind {
    /// Whether the bare form may send it.
    pub(crate) fn readable(self) -> bool {
        self != StdinKind::Other
    }

    fn describe(self) -> &'static str {
        match self {
            StdinKind::File => "a file",
            StdinKind::Fifo => "a pipe",
            StdinKind::Socket => "a socket",
            StdinKind::Other => "not a file, pipe or socket",
        }
    }
}

/// What the mode choice looks at: stdin and stdout as the process found them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Streams {
    pub(crate) stdin: StdinKind,
    /// Bytes were waiting on stdin when skypipe started (a file not read to its end, a pipe
    /// with data in it); looked at without reading any.
    pub(crate) stdin_has_data: bool,
    pub(crate) stdout_is_terminal: bool,
}

impl Streams {
    /// Looks at this process's stdin and stdout.
    pub(crate) fn observe() -> Streams {
        let stdin = stdin_kind();
        Streams {
            stdin,
            stdin_has_data: stdin_has_data(stdin),
            stdout_is_terminal: std::io::IsTerminal::is_terminal(&std::io::stdout()),
        }
    }
}

/// Inspects fd 0 the safe way: regular file, FIFO and socket are readable; anything else
/// (a terminal, a character device such as /dev/null, a closed fd) is not.
pub(crate) fn stdin_kind() -> StdinKind {
    use std::os::fd::AsFd;
    use std::os::unix::fs::FileTypeExt;
    let Ok(fd) = std::io::stdin().as_fd().try_clone_to_owned() else {
        return StdinKind::Other;
    };
    match std::fs::File::from(fd).metadata() {
        Ok(m) => {
            let t = m.file_type();
            if t.is_file() {
                StdinKind::File
            } else if t.is_fifo() {
                StdinKind::Fifo
            } else if t.is_socket() {
                StdinKind::Socket
            } else {
                StdinKind::Other
            }
        }
        Err(_) => StdinKind::Other,
    }
}

/// Whether bytes wait on stdin now, found without taking any: the rest of a regular file, or
/// what a pipe holds (copied, not read, with `tee(2)`). A socket, or a pipe whose writer has
/// not written yet, counts as empty.
fn stdin_has_data(kind: StdinKind) -> bool {
    match kind {
        StdinKind::File => stdin_file_size().is_some_and(|n| n > 0),
        StdinKind::Fifo => {
            use nix::fcntl::{tee, SpliceFFlags};
            let Ok((_read, write)) = nix::unistd::pipe() else {
                return false;
            };
            matches!(
                tee(std::io::stdin(), &write, 1, SpliceFFlags::SPLICE_F_NONBLOCK),
                Ok(n) if n > 0
            )
        }
        StdinKind::Socket | StdinKind::Other => false,
    }
}

/// The bytes left to read when stdin is a regular file (for progress).
pub(crate) fn stdin_file_size() -> Option<u64> {
    use std::io::Seek;
    use std::os::fd::AsFd;
    let fd = std::io::stdin().as_fd().try_clone_to_owned().ok()?;
    let mut file = std::fs::File::from(fd);
    let meta = file.metadata().ok()?;
    if !meta.is_file() {
        return None;
    }
    let pos = file.stream_position().unwrap_or(0);
    Some(meta.len().saturating_sub(pos))
}

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

/// The secret from `--secret-file` (its contents less one final line break) or else
/// `SKYPIPE_SECRET`, and what to do with plain payloads.
pub(crate) fn resolve_crypto(
    secret_file: Option<&std::path::Path>,
    allow_plaintext: bool,
    env: &dyn Fn(&str) -> Option<String>,
    saved: Option<&Path>,
) -> Result<Crypto, ConfigError> {
    let saved = saved.filter(|p| p.exists()).map(Path::to_path_buf);
    let from_env = env("SKYPIPE_SECRET").filter(|s| !s.is_empty());
    let file = match (secret_file, &from_env) {
        (Some(f), _) => Some(f.to_path_buf()),
        (None, None) => saved,
        (None, Some(_)) => None,
    };
    let secret = match &file {
        Some(path) => {
            let mut bytes = std::fs::read(path).map_err(|e| ConfigError::File {
                what: "secret",
                path: path.to_path_buf(),
                reason: io_reason(&e),
            })?;
            if bytes.last() == Some(&b'\n') {
                bytes.pop();
                if bytes.last() == Some(&b'\r') {
                    bytes.pop();
                }
            }
            if bytes.is_empty() {
                return Err(ConfigError::EmptySecret(format!("in {}", path.display())));
            }
            Some(Secret::new(bytes))
        }
        None => from_env.map(|s| Secret::new(s.into_bytes())),
    };
    Ok(Crypto {
        secret,
        allow_plaintext,
    })
}

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

/// Which side the command line names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Asked {
    /// `skypipe send NAME`, or `--send`.
    Send,
    /// `skypipe recv NAME`, or `--recv`.
    Recv,
    /// `skypipe NAME`: the mode is guessed from stdin and stdout.
    Bare,
}

/// A pipe command as the command line puts it, before it is checked.
#[derive(Debug, Clone)]
pub(crate) struct PipeRequest {
    pub(crate) name: Option<String>,
    pub(crate) asked: Asked,
    /// How the command names its side, for messages: `skypipe send`, `--recv`, ...
    pub(crate) asked_as: &'static str,
    pub(crate) flags: PipeArgs,
}

impl PipeRequest {
    /// The pipe command of a command line: the bare form, or the verbs `send` and `recv`
    /// (pipe flags before the verb count as given after it). `None` for other subcommands.
    pub(crate) fn from_cli(cli: &Cli) -> Result<Option<PipeRequest>, ConfigError> {
        use crate::cli::Command;
        let verb = match &cli.command {
            None => None,
            Some(Command::Send(a)) => Some((Asked::Send, "skypipe send", &a.name, &a.pipe)),
            Some(Command::Recv(a)) => Some((Asked::Recv, "skypipe recv", &a.name, &a.pipe)),
            Some(_) => return Ok(None),
        };
        let forced = match (cli.send, cli.recv) {
            (true, true) => {
                return Err(ConfigError::Mode(
                    "--send and --recv contradict each other: give one".into(),
                ))
            }
            (true, false) => Some((Asked::Send, "--send")),
            (false, true) => Some((Asked::Recv, "--recv")),
            (false, false) => None,
        };
        Ok(Some(match verb {
            Some((asked, asked_as, name, flags)) => {
                if let Some((_, flag)) = forced {
                    return Err(ConfigError::Mode(format!(
                        "{flag} is not for `{asked_as}`, which already says what it does"
                    )));
                }
                if let Some(before) = &cli.name {
                    return Err(ConfigError::Mode(format!(
                        "the pipe name goes after the verb: `{asked_as} {before}`"
                    )));
                }
                PipeRequest {
                    name: name.clone(),
                    asked,
                    asked_as,
                    flags: cli.pipe.overlaid(flags.clone()),
                }
            }
            None => {
                let (asked, asked_as) = forced.unwrap_or((Asked::Bare, "skypipe"));
                PipeRequest {
                    name: cli.name.clone(),
                    asked,
                    asked_as,
                    flags: cli.pipe.clone(),
                }
            }
        }))
    }

    /// `skypipe VERB NAME`, for messages.
    fn suggest(&self, verb: &str) -> String {
        match &self.name {
            Some(n) => format!("`skypipe {verb} {n}`"),
            None => format!("`skypipe {verb}`"),
        }
    }

    /// Decides the mode, and whether it was guessed. A flag that only the other side takes is
    /// a usage error naming it; the bare form refuses when stdin could be sent but stdout is
    /// not a terminal, since then a script's input and a receiver's output look the same.
    pub(crate) fn mode(&self, io: Streams) -> Result<(Mode, bool), ConfigError> {
        let decided = self.side(io)?;
        if matches!(decided.0, Mode::Listen { .. }) && self.flags.sender_timeout.is_some() {
            return Err(ConfigError::Mode(
                "--sender-timeout is for takers, and --listen takes nothing".into(),
            ));
        }
        Ok(decided)
    }

    fn side(&self, io: Streams) -> Result<(Mode, bool), ConfigError> {
        let f = &self.flags;
        let receiver_flag = [
            (f.listen, "--listen"),
            (f.follow, "--follow"),
            (f.sender_timeout.is_some(), "--sender-timeout"),
            (f.allow_plaintext, "--allow-plaintext"),
        ]
        .into_iter()
        .find_map(|(given, flag)| given.then_some(flag));
        let sender_flag = f.ttl.is_some().then_some("--ttl");
        let receive = Mode::receiving(f.listen, f.follow);
        let refuse = |text: String| Err(ConfigError::Mode(text));
        match self.asked {
            Asked::Send => match receiver_flag {
                Some(flag) => refuse(format!(
                    "{flag} is for receivers, and `{}` sends",
                    self.asked_as.trim_start_matches("skypipe ")
                )),
                None => Ok((Mode::Send, false)),
            },
            Asked::Recv => match sender_flag {
                Some(flag) => refuse(format!(
                    "{flag} is for senders, and `{}` receives",
                    self.asked_as.trim_start_matches("skypipe ")
                )),
                None => Ok((receive, false)),
            },
            Asked::Bare => match (receiver_flag, sender_flag) {
                (Some(r), Some(s)) => refuse(format!(
                    "{s} is for senders and {r} for receivers: give the flags of one side \
                     (with {} or {})",
                    self.suggest("send"),
                    self.suggest("recv")
                )),
                (Some(r), None) if io.stdin.readable() && io.stdout_is_terminal => refuse(format!(
                    "{r} is for receivers, but stdin is {} and stdout a terminal, which \
                         makes `skypipe NAME` send: {} receives, {} sends",
                    io.stdin.describe(),
                    self.suggest("recv"),
                    self.suggest("send")
                )),
                (Some(r), None) if io.stdin.readable() && io.stdin_has_data => refuse(format!(
                    "{r} is for receivers, but stdin ({}) has data to send, which a receiver \
                     never reads: {} sends it, {} receives",
                    io.stdin.describe(),
                    self.suggest("send"),
                    self.suggest(&format!("recv {r}"))
                )),
                (Some(_), None) => Ok((receive, false)),
                (None, Some(s)) if !io.stdin.readable() => refuse(format!(
                    "{s} is for senders, but stdin is {}, which makes `skypipe NAME` receive: \
                     {} sends (what you type, at a terminal)",
                    io.stdin.describe(),
                    self.suggest("send")
                )),
                (None, Some(_)) => Ok((Mode::Send, true)),
                (None, None) if !io.stdin.readable() => Ok((Mode::Take, false)),
                (None, None) if io.stdout_is_terminal => Ok((Mode::Send, true)),
                (None, None) => refuse(format!(
                    "stdin is {} and stdout is not a terminal, so skypipe cannot tell whether to \
                     send stdin or receive into stdout (as in a script, ssh or cron): use {} or \
                     {} (or --send / --recv); nothing was read or taken",
                    io.stdin.describe(),
                    self.suggest("send"),
                    self.suggest("recv")
                )),
            },
        }
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
    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn default_url_when_nothing_is_set() {
        let c = resolve_conn(&ConnArgs::default(), &env_of(&[])).expect("resolves");
        assert_eq!(c.urls, vec!["nats://127.0.0.1:4222".to_string()]);
        assert_eq!(c.source, Source::Default);
    }

    #[test]
    fn the_local_credential_is_for_the_default_address_without_a_login() {
        let home = [("HOME", "/home/u")];
        let c = resolve_conn(&ConnArgs::default(), &env_of(&home)).expect("ok");
        assert_eq!(
            c.local_nkey,
            Some(PathBuf::from("/home/u/.local/share/skypipe/local-user.nk"))
        );
        let c = resolve_conn(
            &ConnArgs::default(),
            &env_of(&[("HOME", "/home/u"), ("NATS_TOKEN", "t")]),
        )
        .expect("ok");
        assert_eq!(c.local_nkey, None, "a login given is used instead");
        let c = resolve_conn(
            &ConnArgs::default(),
            &env_of(&[("HOME", "/home/u"), ("NATS_URL", "nats://127.0.0.1:4222")]),
        )
        .expect("ok");
        assert_eq!(c.local_nkey, None, "a server named is never sent it");
    }

    #[test]
    fn the_js_domain_comes_from_the_flag_then_the_variable() {
        let flag = ConnArgs {
            js_domain: Some("hub".into()),
            ..Default::default()
        };
        let c = resolve_conn(&flag, &env_of(&[(JS_DOMAIN_ENV, "edge")])).expect("ok");
        assert_eq!(c.js_domain.as_deref(), Some("hub"));
        let c =
            resolve_conn(&ConnArgs::default(), &env_of(&[(JS_DOMAIN_ENV, "edge")])).expect("ok");
        assert_eq!(c.js_domain.as_deref(), Some("edge"));
        let c = resolve_conn(&ConnArgs::default(), &env_of(&[])).expect("ok");
        assert_eq!(c.js_domain, None);
        for bad in ["a.b", "a b", "*", ">"] {
            let args = ConnArgs {
                js_domain: Some(bad.into()),
                ..Default::default()
            };
            assert!(matches!(
                resolve_conn(&args, &env_of(&[])),
                Err(ConfigError::JsDomain { .. })
            ));
        }
    }

    #[test]
    fn flag_beats_env() {
        let args = ConnArgs {
            server: Some("nats://a:1".into()),
            ..Default::default()
        };
        let c = resolve_conn(&args, &env_of(&[("NATS_URL", "nats://b:2")])).expect("ok");
        assert_eq!(c.urls, vec!["nats://a:1".to_string()]);
        let c = resolve_conn(
            &ConnArgs::default(),
            &env_of(&[("NATS_URL", "nats://b:2, c:3")]),
        )
        .expect("ok");
        assert_eq!(c.urls, vec!["nats://b:2".to_string(), "c:3".to_string()]);
        assert_eq!(c.source, Source::Env);
    }

    #[test]
    fn context_file_is_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let nats = dir.path().join("nats");
        std::fs::create_dir_all(nats.join("context")).expect("mkdir");
        std::fs::write(nats.join("context.txt"), "work\n").expect("write");
        std::fs::write(
            nats.join("context/work.json"),
            r#"{"url":"nats://ctx:4222","user":"u","password":"p","description":"x"}"#,
        )
        .expect("write");
        let xdg = dir.path().to_string_lossy().to_string();
        let c =
            resolve_conn(&ConnArgs::default(), &env_of(&[("XDG_CONFIG_HOME", &xdg)])).expect("ok");
        assert_eq!(c.urls, vec!["nats://ctx:4222".to_string()]);
        assert_eq!(c.source, Source::Context("work".into()));
        assert_eq!(c.user.as_deref(), Some("u"));
        // A variable beats the context, field by field.
        let c = resolve_conn(
            &ConnArgs::default(),
            &env_of(&[("XDG_CONFIG_HOME", &xdg), ("NATS_USER", "v")]),
        )
        .expect("ok");
        assert_eq!(c.user.as_deref(), Some("v"));
        let missing = ConnArgs {
            context: Some("nope".into()),
            ..Default::default()
        };
        assert!(matches!(
            resolve_conn(&missing, &env_of(&[("XDG_CONFIG_HOME", &xdg)])),
            Err(ConfigError::NoContext { .. })
        ));
    }

    #[test]
    fn skypipe_config_names_its_context_before_the_natscli_selection() {
        let dir = tempfile::tempdir().expect("tempdir");
        let nats = dir.path().join("nats");
        std::fs::create_dir_all(nats.join("context")).expect("mkdir");
        std::fs::create_dir_all(dir.path().join("skypipe")).expect("mkdir");
        std::fs::write(nats.join("context.txt"), "theirs").expect("write");
        std::fs::write(nats.join("context/theirs.json"), r#"{"url":"nats://a:1"}"#).expect("write");
        std::fs::write(
            nats.join("context/ours.json"),
            r#"{"url":"nats://b:2","skypipe_replicas":3}"#,
        )
        .expect("write");
        std::fs::write(
            dir.path().join("skypipe/config.json"),
            r#"{"context":"ours"}"#,
        )
        .expect("write");
        let xdg = dir.path().to_string_lossy().to_string();
        let c =
            resolve_conn(&ConnArgs::default(), &env_of(&[("XDG_CONFIG_HOME", &xdg)])).expect("ok");
        assert_eq!(c.source, Source::Context("ours".into()));
        assert_eq!(c.replicas, Some(3));
        // NATS_CONTEXT still wins over skypipe's choice.
        let c = resolve_conn(
            &ConnArgs::default(),
            &env_of(&[("XDG_CONFIG_HOME", &xdg), ("NATS_CONTEXT", "theirs")]),
        )
        .expect("ok");
        assert_eq!(c.urls, vec!["nats://a:1".to_string()]);
        assert_eq!(c.replicas, None);
    }

    #[test]
    fn a_context_goes_to_its_own_servers_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let nats = dir.path().join("nats");
        std::fs::create_dir_all(nats.join("context")).expect("mkdir");
        std::fs::write(nats.join("context.txt"), "work").expect("write");
        std::fs::write(
            nats.join("context/work.json"),
            r#"{"url":"nats://Ctx:4222,nats://ctx2:4333","user":"u","password":"p",
                "skypipe_replicas":1,"skypipe_prefix":"team","inbox_prefix":"_I"}"#,
        )
        .expect("write");
        let xdg = dir.path().to_string_lossy().to_string();
        let flag = |url: &str| ConnArgs {
            server: Some(url.into()),
            ..Default::default()
        };
        let env = env_of(&[("XDG_CONFIG_HOME", &xdg)]);
        for other in [
            "nats://other:4222",
            "nats://ctx:4223",
            "nats://ctx:4222,nats://other:1",
        ] {
            let c = resolve_conn(&flag(other), &env).expect("ok");
            assert_eq!(c.user, None, "{other}");
            assert_eq!(c.password, None, "{other}");
            assert_eq!(c.replicas, None, "{other}");
            assert_eq!(c.layout.prefix(), DEFAULT_PREFIX, "{other}");
            assert_eq!(c.inbox_prefix, None, "{other}");
        }
        let c = resolve_conn(
            &ConnArgs::default(),
            &env_of(&[("XDG_CONFIG_HOME", &xdg), ("NATS_URL", "nats://other:4222")]),
        )
        .expect("ok");
        assert_eq!((c.user, c.replicas), (None, None));
        // What is given with the server named still goes with it.
        let c = resolve_conn(
            &ConnArgs {
                user: Some("v".into()),
                ..flag("nats://other:4222")
            },
            &env,
        )
        .expect("ok");
        assert_eq!(c.user.as_deref(), Some("v"));
        // The context's own servers, named again (in any case, without the default port), are
        // still its own.
        for own in ["ctx", "nats://CTX:4222", "nats://ctx2:4333,ctx:4222"] {
            let c = resolve_conn(&flag(own), &env).expect("ok");
            assert_eq!(c.user.as_deref(), Some("u"), "{own}");
            assert_eq!(c.replicas, Some(1), "{own}");
        }
    }

    #[test]
    fn local_port_moves_the_default_address() {
        let c =
            resolve_conn(&ConnArgs::default(), &env_of(&[(LOCAL_PORT_ENV, "14222")])).expect("ok");
        assert_eq!(c.urls, vec!["nats://127.0.0.1:14222".to_string()]);
        assert_eq!(c.local_port, 14222);
        for bad in ["0", "70000", "x"] {
            assert!(matches!(
                resolve_conn(&ConnArgs::default(), &env_of(&[(LOCAL_PORT_ENV, bad)])),
                Err(ConfigError::LocalPort { .. })
            ));
        }
    }

    #[test]
    fn the_local_store_size_comes_from_the_environment() {
        let c = resolve_conn(&ConnArgs::default(), &env_of(&[])).expect("ok");
        assert_eq!(c.local_max_store, DEFAULT_LOCAL_MAX_STORE);
        let c = resolve_conn(
            &ConnArgs::default(),
            &env_of(&[(LOCAL_MAX_STORE_ENV, "2GiB")]),
        )
        .expect("ok");
        assert_eq!(c.local_max_store, 2 << 30);
        for bad in ["lots", "1K"] {
            assert!(matches!(
                resolve_conn(&ConnArgs::default(), &env_of(&[(LOCAL_MAX_STORE_ENV, bad)])),
                Err(ConfigError::LocalMaxStore(_))
            ));
        }
    }

    #[test]
    fn replicas_are_checked() {
        assert_eq!(parse_replicas("3", "x").ok(), Some(3));
        assert!(parse_replicas("0", "x").is_err());
        assert!(parse_replicas("6", "x").is_err());
        let c = resolve_conn(&ConnArgs::default(), &env_of(&[("SKYPIPE_REPLICAS", "7")]));
        assert!(matches!(c, Err(ConfigError::Replicas { .. })));
    }

    #[test]
    fn bad_urls() {
        for u in ["http://x:1", "nats://x:notaport", "", "nats://"] {
            assert!(parse_urls(u).is_err(), "{u}");
        }
        for u in [
            "nats://127.0.0.1:4222",
            "localhost:4222",
            "tls://a.b:4443",
            "ws://h:80",
            "wss://nats.example.org",
            "wss://u:p@nats.example.org:443/nats",
        ] {
            assert!(parse_urls(u).is_ok(), "{u}");
        }
        assert!(parse_urls("ws://h:notaport").is_err());
    }

    #[test]
    fn websocket_urls_mix_with_nats_urls() {
        let c = resolve_conn(
            &ConnArgs::default(),
            &env_of(&[("NATS_URL", "nats://a:4222, ws://b:8080,wss://c:443")]),
        )
        .expect("ok");
        assert_eq!(c.urls, ["nats://a:4222", "ws://b:8080", "wss://c:443"]);
        assert!(!is_websocket(&c.urls[0]));
        assert!(is_websocket(&c.urls[1]) && is_websocket(&c.urls[2]));
    }

    #[test]
    fn tls_settings_turn_ws_into_wss() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "not checked here").expect("write");
        let args = ConnArgs {
            server: Some("ws://a:8080,nats://b:4222,wss://c:443".into()),
            tlsca: Some(ca),
            ..Default::default()
        };
        let c = resolve_conn(&args, &env_of(&[])).expect("ok");
        assert_eq!(c.urls, ["wss://a:8080", "nats://b:4222", "wss://c:443"]);
        let c = resolve_conn(
            &ConnArgs {
                server: Some("ws://a:8080".into()),
                ..Default::default()
            },
            &env_of(&[("NATS_TLSFIRST", "1")]),
        )
        .expect("ok");
        assert_eq!(c.urls, ["wss://a:8080"]);
    }

    #[test]
    fn the_secret_comes_from_the_file_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("secret");
        std::fs::write(&file, "from file\r\n").expect("write");
        let env = env_of(&[("SKYPIPE_SECRET", "from env")]);
        let c = resolve_crypto(Some(&file), false, &env, None).expect("ok");
        assert!(c.secret.is_some());
        assert!(!format!("{c:?}").contains("from"), "never printed: {c:?}");
        let c = resolve_crypto(None, true, &env_of(&[("SKYPIPE_SECRET", "")]), None).expect("ok");
        assert!(c.secret.is_none() && c.allow_plaintext);
        std::fs::write(&file, "\n").expect("write");
        assert!(matches!(
            resolve_crypto(Some(&file), false, &env, None),
            Err(ConfigError::EmptySecret(_))
        ));
        let missing = std::path::Path::new("/nonexistent/s");
        assert!(matches!(
            resolve_crypto(Some(missing), false, &env, None),
            Err(ConfigError::File { .. })
        ));
    }

    fn request(args: &[&str]) -> Result<PipeRequest, ConfigError> {
        use clap::Parser;
        let cli = Cli::try_parse_from(std::iter::once("skypipe").chain(args.iter().copied()))
            .expect("parses");
        PipeRequest::from_cli(&cli).map(|r| r.expect("a pipe command"))
    }

    fn io(stdin: StdinKind, stdin_has_data: bool, stdout_is_terminal: bool) -> Streams {
        Streams {
            stdin,
            stdin_has_data,
            stdout_is_terminal,
        }
    }

    fn mode_of(args: &[&str], io: Streams) -> Result<(Mode, bool), String> {
        request(args)
            .and_then(|r| r.mode(io))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn the_bare_form_guesses_only_when_it_is_clear() {
        let tty_in = io(StdinKind::Other, false, false);
        let piped_to_tty = io(StdinKind::Fifo, true, true);
        let piped_to_file = io(StdinKind::Fifo, false, false);
        assert_eq!(mode_of(&["p"], tty_in), Ok((Mode::Take, false)));
        assert_eq!(mode_of(&["p"], piped_to_tty), Ok((Mode::Send, true)));
        let unclear = mode_of(&["p"], piped_to_file).expect_err("refused");
        assert!(unclear.contains("`skypipe send p`") && unclear.contains("`skypipe recv p`"));
        assert!(unclear.contains("stdin is a pipe"), "{unclear}");
        let file_to_file = mode_of(&[], io(StdinKind::File, true, false)).expect_err("refused");
        assert!(file_to_file.contains("`skypipe send`"), "{file_to_file}");
        // A flag of one side settles it; a flag of the other side is refused, by name.
        assert_eq!(
            mode_of(&["p", "--follow"], piped_to_file),
            Ok((Mode::Follow, false))
        );
        assert_eq!(
            mode_of(&["p", "--ttl", "1h"], piped_to_file),
            Ok((Mode::Send, true))
        );
        let e = mode_of(&["p", "--follow"], piped_to_tty).expect_err("refused");
        assert!(e.starts_with("--follow is for receivers"), "{e}");
        let e = mode_of(&["p", "--follow"], io(StdinKind::Fifo, true, false)).expect_err("data");
        assert!(e.contains("has data to send"), "{e}");
        let e = mode_of(&["p", "--ttl", "1h"], tty_in).expect_err("refused");
        assert!(e.starts_with("--ttl is for senders"), "{e}");
        let e = mode_of(&["p", "--listen", "--sender-timeout", "5s"], tty_in).expect_err("tap");
        assert!(e.starts_with("--sender-timeout is for takers"), "{e}");
        let e = mode_of(&["p", "--ttl", "1h", "--listen"], tty_in).expect_err("both");
        assert!(e.contains("--ttl") && e.contains("--listen"), "{e}");
    }

    #[test]
    fn the_verbs_never_guess_and_refuse_the_other_sides_flags() {
        for io in [
            io(StdinKind::Other, false, false),
            io(StdinKind::Fifo, true, true),
            io(StdinKind::Fifo, false, false),
        ] {
            assert_eq!(mode_of(&["send", "p"], io), Ok((Mode::Send, false)));
            assert_eq!(mode_of(&["--send", "p"], io), Ok((Mode::Send, false)));
            assert_eq!(mode_of(&["recv", "p"], io), Ok((Mode::Take, false)));
            assert_eq!(mode_of(&["recv", "p", "-f"], io), Ok((Mode::Follow, false)));
            assert_eq!(
                mode_of(&["-q", "recv", "p", "--listen"], io),
                Ok((Mode::Listen { follow: false }, false))
            );
        }
        let io = io(StdinKind::Other, false, true);
        let e = mode_of(&["recv", "p", "--ttl", "1h"], io).expect_err("refused");
        assert_eq!(e, "--ttl is for senders, and `recv` receives");
        let e = mode_of(&["--follow", "send", "p"], io).expect_err("refused");
        assert_eq!(e, "--follow is for receivers, and `send` sends");
        let e = mode_of(&["--send", "p", "--allow-plaintext"], io).expect_err("refused");
        assert_eq!(e, "--allow-plaintext is for receivers, and `--send` sends");
        assert!(request(&["--recv", "send", "p"]).is_err());
        assert!(request(&["--send", "--recv", "p"]).is_err());
        let r = request(&["--", "send"]).expect("a pipe named send");
        assert_eq!((r.name.as_deref(), r.asked), (Some("send"), Asked::Bare));
        let r = request(&["recv", "ls"]).expect("a pipe named ls");
        assert_eq!((r.name.as_deref(), r.asked), (Some("ls"), Asked::Recv));
    }

    #[test]
    fn credentials_in_urls() {
        assert_eq!(
            url_credentials("nats://u:p%40ss@h:1"),
            Some(("u".into(), Some("p@ss".into())))
        );
        assert_eq!(url_credentials("tls://tok@h"), Some(("tok".into(), None)));
        assert_eq!(url_credentials("nats://h:1"), None);
        assert_eq!(url_credentials("nats://h:1/a@b"), None);
        let server = |url: &str| ConnArgs {
            server: Some(url.into()),
            ..Default::default()
        };
        let conn =
            resolve_conn(&server("nats://h:1,nats://alice:pw@h:2"), &env_of(&[])).expect("ok");
        assert_eq!(
            (conn.user.as_deref(), conn.password.as_deref()),
            (Some("alice"), Some("pw"))
        );
        // A login given otherwise wins.
        let conn = resolve_conn(
            &server("nats://alice:pw@h:2"),
            &env_of(&[("NATS_TOKEN", "t")]),
        )
        .expect("ok");
        assert_eq!((conn.user, conn.token.as_deref()), (None, Some("t")));
    }

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

    #[test]
    fn redacts_passwords() {
        assert_eq!(redact_url("nats://u:p@h:1"), "nats://h:1");
        assert_eq!(redact_url("u:p@h:1"), "h:1");
        assert_eq!(redact_url("nats://h:1"), "nats://h:1");
    }
}
