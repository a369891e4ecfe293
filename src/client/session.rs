//! One connection to the server and the JetStream context on it: connecting with the
//! configured credentials, turning connect failures into one clear line, and creating
//! skypipe's two streams when they are missing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context as _};
use async_nats::jetstream::{self, consumer, stream};
use async_nats::{ConnectErrorKind, ConnectOptions};
use futures::StreamExt as _;

pub(crate) use crate::client::account::query_account;
use crate::client::budget;
use crate::client::domain;
use crate::client::errors::{self, Refusal};
use crate::config::{is_websocket, Conn, Source, DEFAULT_TTL, LOCAL_PORT_ENV};
use crate::error::Failure;
use crate::protocol::crypto::{Crypto, Opener, Place};
use crate::protocol::pipe::{self, Layout, PipeName};

/// What [`Denied`] holds when the server turned a reconnect's login down.
/// How long an unreachable server may take to say so.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(4);
/// How long a taken ticket stays with its receiver without a progress ack.
pub(crate) const TICKET_ACK_WAIT: Duration = Duration::from_secs(30);
/// How often a receiver tells the server it is still working on its ticket.
pub(crate) const TICKET_PROGRESS: Duration = Duration::from_secs(10);
/// Durable queue consumers of pipes nobody uses go away after this (or sooner, to make room
/// under the account's consumer limit: docs/protocol.md, "Consumers").
pub(crate) const QUEUE_CONSUMER_IDLE: Duration = Duration::from_secs(24 * 60 * 60);
/// How long a queue consumer is paused while skypipe looks at it before removing it: one
/// found busy (or a skypipe that dies in between) leaves it paused no longer than this.
const REMOVAL_PAUSE: Duration = Duration::from_secs(4);
/// The longest a look at a paused consumer may take for its removal to go ahead (well within
/// the pause, whatever the clocks of client and server say).
const REMOVAL_WITHIN: Duration = Duration::from_secs(1);
/// Idle queue consumers removed at once when the account's consumer limit refuses a new one:
/// room for a pipe's queue consumer and the consumers that read its payloads.
const MAKE_ROOM: usize = 4;
/// How many times a taker at the consumer limit makes room before it gives up.
const ROOM_ROUNDS: u32 = 4;
/// The pause between two tries at making a queue consumer, times the try: after a round of
/// making room that freed nothing, or after the consumer went while being made.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// A connected client plus what skypipe learned about the server.
#[derive(Clone)]
pub(crate) struct Session {
    /// The first permission violation the server reported on this connection.
    pub(crate) denied: Denied,
    /// Replicas of skypipe's streams when this session creates them.
    pub(crate) replicas: usize,
    pub(crate) client: async_nats::Client,
    pub(crate) js: jetstream::Context,
    pub(crate) layout: Layout,
    pub(crate) url: String,
    /// Whether the server knows per-message TTL (2.11 and later).
    pub(crate) ttl_supported: bool,
    pub(crate) server_version: String,
    pub(crate) chunk_size: usize,
    /// The same for chunks sent on the live path.
    pub(crate) live_chunk_size: usize,
    /// How this session was made, to make another.
    pub(crate) conn: Conn,
    /// The secret that seals and opens payloads, if any.
    pub(crate) crypto: Crypto,
    /// The JetStream domain this session's streams are in, once known: the one given
    /// (`--js-domain`), or the server's own as its account info says (`""`: none).
    pub(crate) domain: Option<String>,
}

/// `major.minor` of a version string such as `2.15.1`.
pub(crate) fn version_at_least(version: &str, major: u64, minor: u64) -> bool {
    let mut parts = version
        .trim_start_matches('v')
        .split(['.', '-'])
        .map(|p| p.parse::<u64>().unwrap_or(0));
    let (ma, mi) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (ma, mi) >= (major, minor)
}

fn hint_unreachable(url: &str) -> String {
    format!(
        "cannot reach a NATS server at {url}; start one with `skypipe server start` (or \
         `nats-server -js`), or point skypipe at one with --server URL or NATS_URL"
    )
}

/// The TLS error somewhere in a connect error's chain, if any. std's `io::Error` hides the
/// error it wraps from `source()`, so wrapped errors are looked at too.
fn tls_failure(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(tls) = e.downcast_ref::<async_nats::rustls::Error>() {
            return Some(tls.to_string());
        }
        if let Some(inner) = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<async_nats::rustls::Error>())
        {
            return Some(inner.to_string());
        }
        cur = e.source();
    }
    None
}

/// Whether a connect error comes from the socket itself (refused, reset, unreachable), as
/// opposed to a peer that answered in a way the client did not expect.
fn has_io_error(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if e.is::<std::io::Error>() {
            return true;
        }
        cur = e.source();
    }
    false
}

/// The server's word that this connection may not publish or subscribe somewhere. A NATS
/// server answers a forbidden publish with an asynchronous `-ERR` and drops the message, so
/// the request behind it would only time out; this lets a command fail at once instead.
#[derive(Clone)]
pub(crate) struct Denied(
    tokio::sync::watch::Receiver<Option<Denial>>,
    Arc<std::sync::atomic::AtomicBool>,
    Arc<TicketCheck>,
);

/// What the server turned down on a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Denial {
    /// A publish or subscription outside the login's permissions: the server's words.
    Permission(String),
    /// A reconnect turned down: the login was revoked (or changed) meanwhile.
    Login,
}

/// A sender's check that its ticket is still in the pipe (`STREAM.MSG.GET` on the queue
/// stream, which pipes alone do not need: README, "Permissions for a prefix"): on a
/// connection that does it, the server refusing it only turns the check off.
#[derive(Default)]
pub(crate) struct TicketCheck {
    on: std::sync::atomic::AtomicBool,
    refused: std::sync::atomic::AtomicBool,
}

/// Whether a permission violation is about reading a message of a queue stream.
fn about_queue_get(text: &str) -> bool {
    let subject = text.split('"').nth(1).unwrap_or("");
    subject.starts_with("$JS.API.STREAM.MSG.GET.") && subject.ends_with("-queue")
}

/// Whether a permission violation is about a live-path subject (`P.live.>`): a server whose
/// users may not use the live path still carries every payload stored, so such a refusal
/// only turns the live path off (docs/protocol.md, "The live path").
fn about_live_path(text: &str) -> bool {
    let subject = text.split('"').nth(1).unwrap_or("");
    subject.split('.').nth(1) == Some("live")
}

impl Denied {
    /// Whether the server refused this connection a live-path subject.
    pub(crate) fn live_refused(&self) -> bool {
        self.1.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// This connection checks tickets: a refusal of the check is not a failure.
    pub(crate) fn tolerate_ticket_check(&self) {
        self.2.on.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether the server refused this connection the ticket check.
    pub(crate) fn ticket_check_refused(&self) -> bool {
        self.2.refused.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Waits until the server reports a permission violation, and returns it.
    pub(crate) async fn wait(&self) -> Denial {
        let mut rx = self.0.clone();
        let seen = rx.wait_for(Option::is_some).await.map(|v| v.clone());
        match seen {
            Ok(Some(v)) => v,
            // The client is gone; nothing more will be reported.
            _ => std::future::pending().await,
        }
    }

    /// The violation reported so far, if any.
    pub(crate) fn get(&self) -> Option<Denial> {
        self.0.borrow().clone()
    }
}

/// The server turned the login down (or wanted one): not something a local server started
/// in its place would fix.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Refused(pub(crate) String);

/// The nkey seed in a seed file's text: its first line that starts with `S`.
fn seed_in(text: &str) -> Option<&str> {
    text.lines().map(str::trim).find(|l| l.starts_with('S'))
}

/// The local server's seed, when the default address is used and skypipe has made one.
fn local_seed(conn: &Conn) -> anyhow::Result<Option<String>> {
    let Some(path) = &conn.local_nkey else {
        return Ok(None);
    };
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(anyhow!(
                "cannot read skypipe's local server credential {}: {e}",
                path.display()
            ))
        }
    };
    match seed_in(&text).filter(|seed| nkeys::KeyPair::from_seed(seed).is_ok()) {
        Some(seed) => Ok(Some(seed.to_string())),
        None => Err(anyhow!(
            "skypipe's local server credential {} holds no valid nkey seed; stop the local \
             server, remove the file and start it again (`skypipe server start` makes a new one)",
            path.display()
        )),
    }
}

/// Why the default address turned skypipe down: it is not this user's local server.
fn default_refused(shown: &str, sent_local_key: bool, port: u16) -> String {
    let (what, or_yours) = if sent_local_key {
        (
            "requires authentication and refused skypipe's local server credential",
            ", your local server started with another credential (`skypipe server stop`, then \
             `skypipe server start`)",
        )
    } else {
        ("requires authentication", "")
    };
    format!(
        "the server at {shown} {what}: it is another user's local skypipe server{or_yours}, or \
         a NATS server that needs credentials (--user, --token, --creds, --nkey or a context); \
         for a local server of your own, set {LOCAL_PORT_ENV} to a free port (not {port})"
    )
}

/// A connected client, before anything JetStream is asked of it.
pub(crate) struct Connected {
    pub(crate) client: async_nats::Client,
    pub(crate) denied: Denied,
    /// The URLs, without credentials, for messages.
    pub(crate) shown: String,
}

/// Connects, mapping failures to one line that names the server.
pub(crate) async fn connect_client(conn: &Conn) -> anyhow::Result<Connected> {
    let shown = conn.display_urls();
    let (denied_tx, denied_rx) = tokio::sync::watch::channel(None::<Denial>);
    let live_refused = Arc::new(AtomicBool::new(false));
    let ticket_check = Arc::new(TicketCheck::default());
    let watch = Refusals {
        denied: denied_tx,
        live_refused: live_refused.clone(),
        ticket_check: ticket_check.clone(),
    };
    let opts = ConnectOptions::new()
        .name("skypipe")
        .connection_timeout(CONNECT_TIMEOUT)
        .request_timeout(Some(Duration::from_secs(10)))
        .event_callback(move |event| {
            let watch = watch.clone();
            async move { watch.on_event(event) }
        });
    let (opts, sent_local_key) = with_login(one_server_at_once(opts, conn), conn).await?;
    let urls: Vec<async_nats::ServerAddr> = conn
        .urls
        .iter()
        .map(|u| u.parse())
        .collect::<Result<_, _>>()
        .map_err(|e| Failure::Usage(format!("bad server URL {shown}: {e}")))?;
    let client = match opts.connect(urls).await {
        Ok(c) => c,
        Err(e) => return Err(connect_failure(&e, conn, &shown, sent_local_key)),
    };
    Ok(Connected {
        client,
        denied: Denied(denied_rx, live_refused, ticket_check),
        shown,
    })
}

/// Where the connection's events put the server's refusals: the first one that fails the
/// command, and the two that only turn something off (the live path, the ticket check).
#[derive(Clone)]
struct Refusals {
    denied: tokio::sync::watch::Sender<Option<Denial>>,
    live_refused: Arc<AtomicBool>,
    ticket_check: Arc<TicketCheck>,
}

impl Refusals {
    fn on_event(&self, event: async_nats::Event) {
        tracing::debug!("connection event: {event}");
        let denial = match event {
            // The server names a permission violation only in its `-ERR` line's words.
            async_nats::Event::ServerError(async_nats::ServerError::Other(text))
                if text.to_ascii_lowercase().contains("permissions violation") =>
            {
                Denial::Permission(text)
            }
            async_nats::Event::ServerError(async_nats::ServerError::AuthorizationViolation) => {
                Denial::Login
            }
            // The client passes a failed reconnect's kind on as the kind's own words.
            async_nats::Event::ClientError(async_nats::ClientError::Other(kind))
                if kind == ConnectErrorKind::AuthorizationViolation.to_string() =>
            {
                Denial::Login
            }
            _ => return,
        };
        match &denial {
            Denial::Permission(text) if about_live_path(text) => {
                self.live_refused.store(true, Ordering::Relaxed);
            }
            Denial::Permission(text)
                if self.ticket_check.on.load(Ordering::Relaxed) && about_queue_get(text) =>
            {
                self.ticket_check.refused.store(true, Ordering::Relaxed);
            }
            _ => {
                self.denied.send_if_modified(|slot| {
                    slot.is_none().then(|| *slot = Some(denial)).is_some()
                });
            }
        }
    }
}

/// With one server, name it: the client then dials at once instead of after a timer tick (a
/// zero-length sleep, up to a millisecond). Reconnects keep their back-off (`delay: None`),
/// and a pool that grew by discovery gets the usual choice.
fn one_server_at_once(opts: ConnectOptions, conn: &Conn) -> ConnectOptions {
    if conn.urls.len() != 1 {
        return opts;
    }
    opts.reconnect_to_server_callback(|servers, _info| async move {
        match servers.as_slice() {
            [only] => Some(async_nats::ReconnectToServer {
                addr: only.addr.clone(),
                delay: None,
            }),
            _ => None,
        }
    })
}

/// The login and TLS of `conn`; also whether the local server's key is sent.
async fn with_login(
    mut opts: ConnectOptions,
    conn: &Conn,
) -> anyhow::Result<(ConnectOptions, bool)> {
    if let (Some(u), Some(p)) = (&conn.user, &conn.password) {
        opts = opts.user_and_password(u.clone(), p.clone());
    } else if let Some(u) = &conn.user {
        // A user name without a password is how the natscli passes a token too.
        opts = opts.token(u.clone());
    }
    if let Some(t) = &conn.token {
        opts = opts.token(t.clone());
    }
    if let Some(path) = &conn.creds {
        opts = opts
            .credentials_file(path)
            .await
            .map_err(|e| Failure::Usage(format!("credentials file {}: {e}", path.display())))?;
    }
    if let Some(path) = &conn.nkey {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Failure::Usage(format!("nkey seed file {}: {e}", path.display())))?;
        let seed = seed_in(&text).ok_or_else(|| {
            Failure::Usage(format!(
                "nkey seed file {} holds no seed (a line starting with 'S')",
                path.display()
            ))
        })?;
        opts = opts.nkey(seed.to_string());
    }
    let local_seed = local_seed(conn)?;
    let sent_local_key = local_seed.is_some();
    if let Some(seed) = local_seed {
        opts = opts.nkey(seed);
    }
    if let Some(ca) = &conn.ca {
        opts = opts.add_root_certificates(ca.clone()).require_tls(true);
    }
    if let (Some(cert), Some(key)) = (&conn.cert, &conn.key) {
        opts = opts
            .add_client_certificate(cert.clone(), key.clone())
            .require_tls(true);
    }
    if conn.tls_first {
        opts = opts.tls_first();
    }
    if let Some(p) = &conn.inbox_prefix {
        opts = opts.custom_inbox_prefix(p);
    }
    Ok((opts, sent_local_key))
}

/// A failed connection as one line that names the server and says what to do.
fn connect_failure(
    e: &async_nats::ConnectError,
    conn: &Conn,
    shown: &str,
    sent_local_key: bool,
) -> anyhow::Error {
    let tls = tls_failure(e);
    let msg = match e.kind() {
        ConnectErrorKind::AuthorizationViolation if conn.source == Source::Default => {
            return Refused(default_refused(shown, sent_local_key, conn.local_port)).into();
        }
        ConnectErrorKind::AuthorizationViolation => {
            return Refused(format!(
                "the server at {shown} refused the credentials (authorization violation)"
            ))
            .into();
        }
        ConnectErrorKind::Authentication => format!("could not authenticate to {shown}: {e}"),
        ConnectErrorKind::Tls => format!("TLS with {shown} failed: {e}"),
        // Over wss:// the TLS handshake happens inside the WebSocket dial, and its failures
        // arrive as IO errors.
        _ if tls.is_some() => {
            let tls = tls.unwrap_or_default();
            match tls_hint(&tls) {
                Some(hint) => format!("TLS with {shown} failed: {tls}; {hint}"),
                None => format!("TLS with {shown} failed: {tls}"),
            }
        }
        ConnectErrorKind::TimedOut if !conn.urls.iter().any(|u| is_websocket(u)) => format!(
            "{} (no answer within {CONNECT_TIMEOUT:?}; a WebSocket port needs a ws:// or \
             wss:// URL)",
            hint_unreachable(shown)
        ),
        // async-nats reports certificates refused on either side as IO errors.
        _ if tls_hint(&e.to_string()).is_some() => format!(
            "TLS with {shown} failed: {e}; {}",
            tls_hint(&e.to_string()).unwrap_or_default()
        ),
        ConnectErrorKind::TimedOut => format!(
            "{} (no answer within {CONNECT_TIMEOUT:?})",
            hint_unreachable(shown)
        ),
        ConnectErrorKind::Io if conn.urls.iter().all(|u| is_websocket(u)) && !has_io_error(e) => {
            format!(
                "the server at {shown} did not accept a NATS WebSocket connection ({e}); a \
                 ws:// or wss:// URL needs the port of the server's websocket block (wss:// \
                 when that has TLS), a client port needs nats://"
            )
        }
        _ => format!("{} ({e})", hint_unreachable(shown)),
    };
    anyhow!(msg)
}

/// What to do about a TLS failure, judged from rustls' words for it.
fn tls_hint(text: &str) -> Option<&'static str> {
    let t = text.to_ascii_lowercase();
    if t.contains("certificaterequired") {
        Some("the server asks for a client certificate: give --tlscert and --tlskey")
    } else if t.contains("unknownca") || t.contains("badcertificate") {
        Some("the server does not accept the client certificate (--tlscert)")
    } else if t.contains("certificate") || t.contains("unknownissuer") {
        Some("is --tlsca (NATS_CA) the CA that signed the server's certificate?")
    } else {
        None
    }
}

/// The error for a permission violation, naming the prefix the user may be missing.
pub(crate) fn denied_error(denial: &Denial, url: &str, layout: &Layout) -> anyhow::Error {
    let text = match denial {
        Denial::Login => {
            return anyhow!(
                "the server at {url} no longer lets this login in (authorization violation): it \
                 was revoked (`skypipe invite revoke`) or changed"
            )
        }
        Denial::Permission(text) => text,
    };
    anyhow!(
        "permission denied by the server at {url}: {text}; the user needs the permissions for \
         prefix {:?} (see \"Permissions\" in the README), or another --prefix",
        layout.prefix()
    )
}

/// Whether the server says it is one of a cluster of at least three JetStream servers.
pub(crate) fn cluster_of_three(info: &async_nats::ServerInfo) -> bool {
    info.cluster.is_some() && info.connect_urls.len() >= 3
}

/// The JetStream context for a client, honouring the context's domain or API prefix.
pub(crate) fn jetstream_context(client: &async_nats::Client, conn: &Conn) -> jetstream::Context {
    let builder = jetstream::ContextBuilder::new().timeout(Duration::from_secs(10));
    match (&conn.js_domain, &conn.js_api_prefix) {
        (Some(d), _) => builder.domain(d).build(client.clone()),
        (None, Some(p)) => builder.api_prefix(p).build(client.clone()),
        (None, None) => builder.build(client.clone()),
    }
}

/// Connects and checks that the server has JetStream (with a domain given: that the domain
/// answers, waiting for it within the retry time).
pub(crate) async fn connect(conn: &Conn) -> anyhow::Result<Session> {
    Session::new(conn, connect_client(conn).await?, domain::Wait::Retry).await
}

impl Session {
    /// A session on a connected client; fails when the server has no JetStream, or, with a
    /// domain given, when that domain does not answer through it (see [`domain::answers`]).
    pub(crate) async fn new(
        conn: &Conn,
        connected: Connected,
        wait: domain::Wait,
    ) -> anyhow::Result<Session> {
        let Connected {
            client,
            denied,
            shown,
        } = connected;
        let info = client.server_info();
        let js = jetstream_context(&client, conn);
        match &conn.js_domain {
            // A leaf node without JetStream of its own still reaches a domain's.
            Some(name) => domain::answers(&js, name, &shown, conn, wait).await?,
            None if !info.jetstream => {
                return Err(anyhow!(
                    "the server at {shown} (nats-server {}) has JetStream disabled; start it \
                     with -js (or, on a leaf node, name the hub's JetStream domain with \
                     --js-domain)",
                    info.version
                ));
            }
            None => {}
        }
        let replicas = conn
            .replicas
            .unwrap_or(if cluster_of_three(&info) { 3 } else { 1 });
        tracing::info!(
            "connected to {shown} (nats-server {}, max payload {} bytes, {replicas} replica{})",
            info.version,
            info.max_payload,
            if replicas == 1 { "" } else { "s" }
        );
        Ok(Session {
            denied,
            replicas,
            js,
            layout: conn.layout.clone(),
            url: shown,
            ttl_supported: version_at_least(&info.version, 2, 11),
            server_version: info.version.clone(),
            chunk_size: pipe::chunk_size(info.max_payload),
            live_chunk_size: pipe::live_chunk_size(info.max_payload),
            conn: conn.clone(),
            client,
            crypto: Crypto::default(),
            domain: conn.js_domain.clone(),
        })
    }
}

impl Session {
    /// Where a pipe's payloads belong, as sealed chunks bind it.
    pub(crate) fn place(&self, pipe: &PipeName) -> Place {
        Place {
            prefix: self.layout.prefix().to_string(),
            pipe: pipe.to_string(),
        }
    }

    /// What opens one payload of a pipe.
    pub(crate) fn opener(&self, pipe: &PipeName) -> Opener {
        Opener::new(self.crypto.clone(), self.place(pipe))
    }

    /// Runs `work`, but ends it with a one-line error as soon as the server reports a
    /// permission violation on this connection.
    pub(crate) async fn unless_denied<T>(
        &self,
        work: impl std::future::Future<Output = anyhow::Result<T>>,
    ) -> anyhow::Result<T> {
        tokio::select! {
            r = work => match (r, self.denied.get()) {
                // A request that failed after a violation failed because of it.
                (Err(_), Some(denial)) => Err(denied_error(&denial, &self.url, &self.layout)),
                (r, _) => r,
            },
            denial = self.denied.wait() => Err(denied_error(&denial, &self.url, &self.layout)),
        }
    }

    /// The data stream's config.
    pub(crate) fn data_stream_config(&self) -> stream::Config {
        self.stream_config(
            self.layout.data_stream(),
            "skypipe: chunks of payloads, one subject per payload",
            self.layout.data_wildcard(),
            stream::RetentionPolicy::Limits,
        )
    }

    /// The queue stream's config.
    pub(crate) fn queue_stream_config(&self) -> stream::Config {
        self.stream_config(
            self.layout.queue_stream(),
            "skypipe: one ticket per payload, taken in order",
            self.layout.queue_wildcard(),
            stream::RetentionPolicy::WorkQueue,
        )
    }

    /// What both streams share (docs/protocol.md, "Streams"): file storage, a full stream
    /// refuses new data, per-message TTL where the server has it (else a day's age limit).
    fn stream_config(
        &self,
        name: String,
        description: &str,
        subjects: String,
        retention: stream::RetentionPolicy,
    ) -> stream::Config {
        stream::Config {
            name,
            description: Some(description.into()),
            subjects: vec![subjects],
            retention,
            storage: stream::StorageType::File,
            discard: stream::DiscardPolicy::New,
            allow_message_ttl: self.ttl_supported,
            max_age: if self.ttl_supported {
                Duration::ZERO
            } else {
                DEFAULT_TTL
            },
            duplicate_window: Duration::from_secs(120),
            num_replicas: self.replicas,
            ..Default::default()
        }
    }

    /// Hands one JetStream publish to the client; its ack comes later.
    pub(crate) async fn js_publish(
        &self,
        subject: &str,
        headers: &async_nats::HeaderMap,
        data: &bytes::Bytes,
    ) -> anyhow::Result<jetstream::context::PublishAckFuture> {
        self.js
            .publish_with_headers(subject.to_string(), headers.clone(), data.clone())
            .await
            .with_context(|| format!("cannot publish to {}", self.url))
    }

    /// The byte limits (data stream, queue stream) for streams this session creates:
    /// `--max-bytes` (or its variable, or the context's setting) split between them, else a
    /// share of the account's (or its tier's) free storage when the account requires a byte
    /// limit, else none (README, "Hosted NATS and leaf nodes").
    pub(crate) async fn stream_bytes(&self) -> Option<(u64, u64)> {
        if let Some(total) = self.conn.max_bytes {
            return Some(budget::split(total, None));
        }
        let account = query_account(&self.js).await.ok()?;
        let b = budget::budget(&account, self.replicas);
        b.limits.max_bytes_required.then(|| {
            budget::split(
                b.default_share(self.replicas)
                    .max(crate::config::MIN_MAX_BYTES),
                b.limits.storage_max_stream_bytes,
            )
        })
    }

    /// Creates both streams when missing (an existing stream is left as it is), with the
    /// byte limits of [`Self::stream_bytes`], unless the prefix's streams live in another
    /// JetStream domain: never a second home for its pipes. A server without a domain is
    /// asked nothing more.
    pub(crate) async fn ensure_streams(&self) -> anyhow::Result<()> {
        let meant = self.meant_domain().await.filter(|d| !d.is_empty());
        if let Some(meant) = meant {
            let verdict = self.home_verdict(&meant).await?;
            if let Some(text) = domain::refusal(&self.layout, &meant, &verdict) {
                return Err(anyhow!(text));
            }
        }
        let bytes = self.stream_bytes().await;
        let mut configs = [self.data_stream_config(), self.queue_stream_config()];
        if let Some((data, queue)) = bytes {
            configs[0].max_bytes = i64::try_from(data).unwrap_or(i64::MAX);
            configs[1].max_bytes = i64::try_from(queue).unwrap_or(i64::MAX);
        }
        for config in configs {
            let name = config.name.clone();
            if let Err(e) = self.js.create_stream(config).await {
                // Another client may have created it a moment ago, with this or an older
                // config; either way the stream is there to use.
                if self.js.get_stream_no_info(&name).await.is_ok()
                    && self.js.get_stream(&name).await.is_ok()
                {
                    continue;
                }
                let advice = errors::advice(&e, &self.layout);
                let err =
                    anyhow!(e).context(format!("cannot create stream {name} on {}", self.url));
                return Err(match advice {
                    Some(advice) => err.context(advice),
                    None => err,
                });
            }
        }
        Ok(())
    }

    /// The durable work-queue consumer that hands out a pipe's tickets, created on demand
    /// (and the streams with it). When the account's consumer limit refuses it, skypipe's
    /// idle queue consumers of other pipes make room (see [`Session::make_room`]).
    pub(crate) async fn queue_consumer(
        &self,
        pipe: &PipeName,
    ) -> anyhow::Result<consumer::Consumer<consumer::pull::Config>> {
        let (mut tries, mut rooms) = (0, 0);
        loop {
            match self.create_queue_consumer(pipe).await {
                // Other takers may take the room made before this one uses it: a few rounds,
                // a little apart.
                Err(e) if errors::is(e.as_ref(), Refusal::ConsumerLimit) => {
                    rooms += 1;
                    if rooms > ROOM_ROUNDS {
                        return Err(e.context(self.no_room()));
                    }
                    if self.make_room().await == 0 {
                        tokio::time::sleep(RETRY_PAUSE * rooms).await;
                    }
                }
                // Made while another client removed it to make room (docs/protocol.md,
                // "Consumers"): the server found it gone half way; made again.
                Err(e) if tries < QUEUE_CONSUMER_TRIES && consumer_went(e.as_ref()) => {
                    tracing::debug!("the queue consumer of pipe {pipe} went meanwhile: {e:#}");
                    tries += 1;
                    tokio::time::sleep(RETRY_PAUSE * tries).await;
                }
                r => return r,
            }
        }
    }

    /// What to say when the account's consumer limit leaves no room.
    pub(crate) fn no_room(&self) -> String {
        let why = if self.can_pause() {
            "none of skypipe's own is idle"
        } else {
            "skypipe frees idle ones on servers 2.11 and later only"
        };
        format!(
            "the account at {} has as many JetStream consumers as its limit allows and {why}; try again when a pipe is done, remove consumers the account no longer needs (`nats consumer ls`), or ask for a higher consumer limit",
            self.url
        )
    }

    async fn create_queue_consumer(
        &self,
        pipe: &PipeName,
    ) -> anyhow::Result<consumer::Consumer<consumer::pull::Config>> {
        let config = consumer::pull::Config {
            durable_name: Some(self.layout.queue_consumer(pipe)),
            description: Some(format!("skypipe: takers of pipe {pipe}")),
            filter_subject: self.layout.queue_subject(pipe),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: TICKET_ACK_WAIT,
            max_deliver: -1,
            inactive_threshold: QUEUE_CONSUMER_IDLE,
            ..Default::default()
        };
        let stream = self
            .js
            .get_stream_no_info(self.layout.queue_stream())
            .await?;
        match stream.create_consumer(config.clone()).await {
            Ok(c) => Ok(c),
            Err(e) if errors::is(&e, Refusal::NoStream) => {
                self.ensure_streams().await?;
                Ok(stream
                    .create_consumer(config)
                    .await
                    .with_context(|| format!("cannot create the queue consumer of pipe {pipe}"))?)
            }
            Err(e) => {
                // An existing consumer with an older config is still usable.
                match stream
                    .get_consumer::<consumer::pull::Config>(&self.layout.queue_consumer(pipe))
                    .await
                {
                    Ok(c) => Ok(c),
                    Err(_) => {
                        // At the consumer limit the caller makes room, and says so if it can't.
                        let advice = (!errors::is(&e, Refusal::ConsumerLimit))
                            .then(|| errors::advice(&e, &self.layout))
                            .flatten();
                        let err = anyhow!(e).context(format!(
                            "cannot create the queue consumer of pipe {pipe} on {}",
                            self.url
                        ));
                        Err(match advice {
                            Some(advice) => err.context(advice),
                            None => err,
                        })
                    }
                }
            }
        }
    }
}

/// Whether nothing is in flight on a queue consumer: every ticket it handed out is
/// acknowledged (none out with a taker, none given back for the next one) and no taker waits.
fn idle(info: &consumer::Info) -> bool {
    info.num_ack_pending == 0
        && info.num_waiting == 0
        && info.num_redelivered == 0
        && info.ack_floor.consumer_sequence >= info.delivered.consumer_sequence
}

/// Whether a pause deadline the server reports is the one this client asked for (the server
/// keeps it to the nanosecond; a microsecond of slack for any rounding on the way).
fn same_instant(a: time::OffsetDateTime, b: time::OffsetDateTime) -> bool {
    (a - b).abs() < time::Duration::microseconds(1)
}

/// Whether every ticket a queue consumer saw acknowledged is gone from the stream. The server
/// moves a consumer's acknowledgement floor before it removes the acknowledged message from a
/// work-queue stream; a consumer removed in between would leave that ticket for the pipe's next
/// consumer, which would hand it out a second time.
async fn acks_settled(stream: &stream::Stream<()>, info: &consumer::Info) -> anyhow::Result<bool> {
    let floor = info.ack_floor.stream_sequence;
    if floor == 0 {
        return Ok(true);
    }
    match stream
        .get_first_raw_message_by_subject(&info.config.filter_subject, 1)
        .await
    {
        Ok(first) => Ok(first.sequence > floor),
        Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => Ok(true),
        Err(e) => Err(e.into()),
    }
}

/// How many times a taker makes its pipe's queue consumer when it goes while being made.
const QUEUE_CONSUMER_TRIES: u32 = 3;

const CONSUMER_STORE_FAILED: async_nats::jetstream::ErrorCode =
    async_nats::jetstream::ErrorCode(10012);

/// Whether a consumer's creation failed because another client removed it meanwhile.
fn consumer_went(err: &(dyn std::error::Error + 'static)) -> bool {
    use async_nats::jetstream::ErrorCode;
    [
        ErrorCode::CONSUMER_DOES_NOT_EXIST,
        ErrorCode::CONSUMER_NOT_FOUND,
        // The server still removing the store of the one removed.
        CONSUMER_STORE_FAILED,
    ]
    .into_iter()
    .any(|code| errors::is(err, Refusal::Other(code)))
}

/// When a queue consumer was last used: its last delivery or acknowledgement, else its
/// creation.
fn last_used(info: &consumer::Info) -> time::OffsetDateTime {
    [info.delivered.last_active, info.ack_floor.last_active]
        .into_iter()
        .flatten()
        .fold(info.created, std::cmp::max)
}

impl Session {
    /// Whether the server can pause a consumer (2.11 and later), which removing one safely
    /// needs.
    fn can_pause(&self) -> bool {
        version_at_least(&self.server_version, 2, 11)
    }

    /// Removes a pipe's queue consumer when nothing is in flight on it (docs/protocol.md,
    /// "Consumers"): it is paused first, so no ticket can be handed out between the look and
    /// the removal; a taker that asks meanwhile finds it gone and makes it again. The pause is
    /// this client's own (its deadline says so): one paused later by another client, or a
    /// consumer made again since, is left to that client. A consumer found busy is not resumed,
    /// since resuming could undo the pause another client is about to remove it under; its
    /// pause runs out within [`REMOVAL_PAUSE`]. `Ok(true)` when it was removed.
    pub(crate) async fn remove_idle_queue_consumer(&self, name: &str) -> anyhow::Result<bool> {
        if !self.can_pause() {
            return Ok(false);
        }
        let stream = self
            .js
            .get_stream_no_info(self.layout.queue_stream())
            .await?;
        let until = time::OffsetDateTime::now_utc() + REMOVAL_PAUSE;
        let paused = stream.pause_consumer(name, until).await?;
        let looked_from = std::time::Instant::now();
        if !paused.paused || paused.pause_remaining.unwrap_or_default() < REMOVAL_WITHIN * 2 {
            return Ok(false);
        }
        let info = stream.consumer_info(name).await?;
        let ours = info
            .config
            .pause_until
            .is_some_and(|at| same_instant(at, until));
        if !ours || !idle(&info) || !acks_settled(&stream, &info).await? {
            return Ok(false);
        }
        if looked_from.elapsed() >= REMOVAL_WITHIN {
            return Ok(false);
        }
        stream.delete_consumer(name).await?;
        tracing::debug!("removed the idle queue consumer {name}");
        Ok(true)
    }

    /// Makes room under the account's consumer limit: removes up to [`MAKE_ROOM`] of
    /// skypipe's queue consumers of this prefix with nothing in flight, least recently used
    /// first. Returns how many went.
    pub(crate) async fn make_room(&self) -> usize {
        if !self.can_pause() {
            return 0;
        }
        let Ok(stream) = self.js.get_stream_no_info(self.layout.queue_stream()).await else {
            return 0;
        };
        let mut idle_ones: Vec<(time::OffsetDateTime, String)> = Vec::new();
        let mut list = stream.consumers();
        while let Some(info) = list.next().await {
            match info {
                Ok(info) if idle(&info) => idle_ones.push((last_used(&info), info.name)),
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!("cannot list the queue consumers: {e}");
                    break;
                }
            }
        }
        idle_ones.sort();
        let mut removed = 0;
        for (_, name) in idle_ones {
            if removed == MAKE_ROOM {
                break;
            }
            match self.remove_idle_queue_consumer(&name).await {
                Ok(true) => removed += 1,
                Ok(false) => {}
                Err(e) => tracing::debug!("cannot remove the queue consumer {name}: {e:#}"),
            }
        }
        tracing::info!(
            "the account's consumer limit is reached: removed {removed} idle queue consumers"
        );
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusals() -> (Refusals, Denied) {
        let (tx, rx) = tokio::sync::watch::channel(None);
        let live = Arc::new(AtomicBool::new(false));
        let check = Arc::new(TicketCheck::default());
        let watch = Refusals {
            denied: tx,
            live_refused: live.clone(),
            ticket_check: check.clone(),
        };
        (watch, Denied(rx, live, check))
    }

    fn violation(subject: &str) -> async_nats::Event {
        async_nats::Event::ServerError(async_nats::ServerError::Other(format!(
            "Permissions Violation for Publish to \"{subject}\""
        )))
    }

    #[test]
    fn a_pause_is_ours_only_with_the_deadline_we_asked_for() {
        let ours = time::OffsetDateTime::UNIX_EPOCH + time::Duration::nanoseconds(1_765_000_123);
        assert!(same_instant(ours, ours));
        assert!(!same_instant(ours + time::Duration::milliseconds(1), ours));
        assert!(!same_instant(ours, ours + REMOVAL_PAUSE));
    }

    #[test]
    fn a_consumer_removed_while_being_made_is_made_again() {
        let api = |code: u64| -> async_nats::jetstream::Error {
            serde_json::from_value(serde_json::json!({
                "code": 400, "err_code": code, "description": "refused"
            }))
            .expect("a JetStream error")
        };
        assert!(consumer_went(&api(10149)));
        assert!(consumer_went(&api(10014)));
        assert!(consumer_went(&api(10012)));
        assert!(!consumer_went(&api(10026)));
    }

    #[test]
    fn events_are_read_by_their_kind() {
        let (watch, denied) = refusals();
        watch.on_event(violation("p.live.x.y"));
        assert!(denied.live_refused());
        assert_eq!(denied.get(), None, "a live-path refusal only turns it off");
        watch.on_event(async_nats::Event::ClientError(
            async_nats::ClientError::Other(ConnectErrorKind::AuthorizationViolation.to_string()),
        ));
        assert_eq!(denied.get(), Some(Denial::Login));
        watch.on_event(violation("p.q.x"));
        assert_eq!(denied.get(), Some(Denial::Login), "the first denial stays");
        let text = denied_error(
            &Denial::Login,
            "nats://h:4222",
            &Layout::new("p").expect("ok"),
        );
        assert!(
            text.to_string().contains("no longer lets this login in"),
            "{text}"
        );
    }

    #[test]
    fn a_permission_denial_names_the_prefix() {
        let (watch, denied) = refusals();
        watch.on_event(async_nats::Event::ClientError(
            async_nats::ClientError::MaxReconnects,
        ));
        assert_eq!(denied.get(), None);
        watch.on_event(violation("p.q.x"));
        let Some(denial @ Denial::Permission(_)) = denied.get() else {
            panic!("a permission denial");
        };
        let text = denied_error(&denial, "nats://h:4222", &Layout::new("p").expect("ok"));
        assert!(text.to_string().contains("prefix \"p\""), "{text}");
    }

    #[test]
    fn only_live_path_refusals_are_told_apart() {
        assert!(about_live_path(
            "permissions violation for subscription to \"team.live.p.0123.ack\""
        ));
        assert!(!about_live_path(
            "permissions violation for publish to \"team.q.live\""
        ));
        assert!(!about_live_path(
            "permissions violation for subscription to \"team.data.live.x\""
        ));
        assert!(!about_live_path("permissions violation"));
    }

    #[test]
    fn only_ticket_reads_are_told_apart() {
        assert!(about_queue_get(
            "Permissions Violation for Publish to \"$JS.API.STREAM.MSG.GET.team-queue\""
        ));
        assert!(!about_queue_get(
            "Permissions Violation for Publish to \"$JS.API.STREAM.MSG.GET.team-data\""
        ));
        assert!(!about_queue_get(
            "Permissions Violation for Publish to \"$JS.API.STREAM.MSG.DELETE.team-queue\""
        ));
        assert!(!about_queue_get("permissions violation"));
    }

    #[test]
    fn tls_failures_say_what_to_do() {
        assert!(
            tls_hint("IO error: received fatal alert: CertificateRequired")
                .is_some_and(|h| h.contains("--tlscert"))
        );
        assert!(tls_hint("IO error: received fatal alert: UnknownCA")
            .is_some_and(|h| h.contains("client certificate")));
        assert!(
            tls_hint("IO error: invalid peer certificate: UnknownIssuer")
                .is_some_and(|h| h.contains("--tlsca"))
        );
        assert_eq!(tls_hint("IO error: connection refused"), None);
    }

    #[test]
    fn versions() {
        assert!(version_at_least("2.15.1", 2, 11));
        assert!(version_at_least("2.11.0", 2, 11));
        assert!(!version_at_least("2.9.10", 2, 11));
        assert!(version_at_least("v3.0.0-beta", 2, 11));
    }
}
