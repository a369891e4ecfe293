//! `skypipe check` and `skypipe setup`: what a server offers and allows, one line per check,
//! and saving a checked server as a natscli context that skypipe uses from then on.

use std::fmt::Display;
use std::io::Write as _;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context as _};
use async_nats::jetstream::account::Account;
use async_nats::jetstream::consumer::{pull, DeliverPolicy};
use bytes::Bytes;
use futures::StreamExt as _;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::client::domain;
use crate::client::session::{self, Session};
use crate::client::{budget, errors};
use crate::config::cli::SetupArgs;
use crate::config::{self, merge_json, write_context, write_private, Conn, Source, LOCAL_PORT_ENV};
use crate::error::{code, Failure};
use crate::protocol::pipe::{self, PayloadId, PipeName};
use crate::transfer::input::Piece;
use crate::transfer::progress::human_bytes;

/// How long any one check may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(15);

/// The result lines of a check run.
#[derive(Default)]
struct Report {
    failed: Vec<String>,
}

impl Report {
    /// "N checks failed (which)", or `None` when none did.
    fn failures(&self) -> Option<String> {
        let n = self.failed.len();
        (n > 0).then(|| {
            format!(
                "{n} check{} failed ({})",
                if n == 1 { "" } else { "s" },
                self.failed.join(", ")
            )
        })
    }

    fn line(&self, status: &str, what: &str, text: impl Display) {
        println!("{status:<5} {what:<11} {text}");
        let _ = std::io::stdout().flush();
    }

    fn ok(&self, what: &str, text: impl Display) {
        self.line("ok", what, text);
    }

    fn warn(&self, what: &str, text: impl Display) {
        self.line("warn", what, text);
    }

    fn fail(&mut self, what: &str, text: impl Display) {
        self.line("FAIL", what, &text);
        self.failed.push(what.to_string());
    }
}

/// Runs a step with a time limit, turning a permission violation into its own error.
async fn step<T>(
    session: &Session,
    work: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    match tokio::time::timeout(CHECK_TIMEOUT, session.unless_denied(work)).await {
        Ok(r) => r,
        Err(_) => Err(anyhow!("no answer within {CHECK_TIMEOUT:?}")),
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn source_text(source: &Source) -> String {
    match source {
        Source::Flag => "--server".into(),
        Source::Env => "NATS_URL".into(),
        Source::Context(n) => format!("context {n:?}"),
        Source::Default => "the default address".into(),
    }
}

/// How the client reaches the server: TCP or WebSocket, with or without TLS, by the URLs'
/// schemes (a list may mix them) and what the server requires.
pub(crate) fn transport(conn: &Conn, server_requires_tls: bool) -> String {
    let tls_asked =
        server_requires_tls || conn.ca.is_some() || conn.cert.is_some() || conn.tls_first;
    let mut kinds: Vec<&str> = Vec::new();
    for url in &conn.urls {
        let kind = if url.starts_with("wss://") {
            "WebSocket with TLS (wss://)"
        } else if url.starts_with("ws://") {
            "WebSocket (ws://)"
        } else if url.starts_with("tls://") || tls_asked {
            "TCP with TLS"
        } else {
            "TCP"
        };
        if !kinds.contains(&kind) {
            kinds.push(kind);
        }
    }
    kinds.join(" or ")
}

/// Checks the server in `conn`. Returns the session when every check passed.
async fn run_checks(conn: &Conn) -> (Report, Option<Session>) {
    let mut r = Report::default();
    let Some(session) = check_connection(&mut r, conn).await else {
        return (r, None);
    };
    let Some(account) = check_jetstream(&mut r, &session).await else {
        return (r, None);
    };

    // Streams.
    let stream_replicas = check_streams(&mut r, &session, conn).await;

    // A probe payload through the real send path and the receiver's consumers.
    if stream_replicas.is_some() {
        check_probe(&mut r, &session, conn).await;
    }

    // Storage, as it is now that the streams exist.
    let account = step(&session, async {
        session::query_account(&session.js).await
    })
    .await
    .unwrap_or(account);
    let replicas = stream_replicas.unwrap_or(session.replicas);
    check_storage(&mut r, &budget::budget(&account, replicas));
    check_consumers(&mut r, &account, replicas);

    let ok = r.failed.is_empty();
    (r, ok.then_some(session))
}

/// Connects, and reports how, to which server version, and whether it has JetStream (its
/// own, or a domain's reached through it). The session when it does.
async fn check_connection(r: &mut Report, conn: &Conn) -> Option<Session> {
    let shown = conn.display_urls();
    let started = Instant::now();
    let connected = match session::connect_client(conn).await {
        Ok(c) => c,
        Err(e) => {
            let refused = e.downcast_ref::<session::Refused>().is_some();
            let hint = if conn.source == Source::Default && !refused {
                format!(
                    "; nothing is configured, so a pipe command would start skypipe's local \
                     server here (or run `skypipe server start`; {LOCAL_PORT_ENV} moves it)"
                )
            } else {
                String::new()
            };
            r.fail("connect", format!("{}{hint}", crate::error::one_line(&e)));
            return None;
        }
    };
    r.ok(
        "connect",
        format!(
            "{shown} (from {}) in {}",
            source_text(&conn.source),
            ms(started.elapsed())
        ),
    );
    let info = connected.client.server_info();
    r.ok("transport", transport(conn, info.tls_required));
    check_version(r, &info.version);
    if !info.jetstream && conn.js_domain.is_none() {
        r.fail(
            "jetstream",
            format!(
                "the server at {shown} has JetStream disabled: skypipe keeps pipes in \
                 JetStream; start nats-server with -js (or `jetstream: enabled` in its config), \
                 or, on a leaf node, name the hub's JetStream domain with --js-domain"
            ),
        );
        return None;
    }
    match Session::new(conn, connected, domain::Wait::Once).await {
        Ok(s) => Some(s),
        Err(e) => {
            r.fail("jetstream", crate::error::one_line(&e));
            None
        }
    }
}

/// The server's version, and what it lacks.
fn check_version(r: &mut Report, version: &str) {
    if session::version_at_least(version, 2, 11) {
        r.ok("version", format!("nats-server {version}"));
    } else {
        r.warn(
            "version",
            format!(
                "nats-server {version} has no per-message TTL (2.11 and later do): --ttl is \
                 ignored and payloads expire after {} whatever it says; upgrade the server to fix",
                humantime::format_duration(config::DEFAULT_TTL)
            ),
        );
    }
}

/// Whether JetStream answers for this account, and in how long: the account's info when it
/// does.
async fn check_jetstream(r: &mut Report, session: &Session) -> Option<Account> {
    let t = Instant::now();
    let account = match step(session, session::query_account(&session.js)).await {
        Ok(a) => a,
        Err(e) => {
            let text = crate::error::one_line(&e);
            if errors::is(&*e, errors::Refusal::NoJetStream) {
                r.fail(
                    "jetstream",
                    format!(
                        "the server runs JetStream, but not for this account ({text}); \
                         ask its operator to enable JetStream for your account"
                    ),
                );
            } else {
                r.fail("jetstream", format!("cannot ask for account info: {text}"));
            }
            return None;
        }
    };
    let first = t.elapsed();
    let through = if session.client.server_info().jetstream {
        ""
    } else {
        ", reached through this server, which has none of its own"
    };
    r.ok(
        "jetstream",
        format!(
            "enabled{}{through}",
            account
                .domain
                .as_deref()
                .filter(|d| !d.is_empty())
                .map(|d| format!(" (domain {d})"))
                .unwrap_or_default(),
        ),
    );
    check_round_trip(r, session, first).await;
    Some(account)
}

/// Round trip: the median of a few JetStream API requests (the smallest request every
/// skypipe user may make; a core PING is not timed by the client), `first` among them.
async fn check_round_trip(r: &mut Report, session: &Session, first: Duration) {
    let mut rtts = vec![first];
    for _ in 0..4 {
        let t = Instant::now();
        if step(session, session::query_account(&session.js))
            .await
            .is_ok()
        {
            rtts.push(t.elapsed());
        }
    }
    rtts.sort();
    if let Some(d) = rtts.get(rtts.len() / 2) {
        r.ok("round trip", ms(*d));
    }
}

/// Which JetStream domain holds the prefix's pipes, when domains are in play: this session's
/// alone, or none yet (docs/protocol.md, "JetStream domains"). Fails on another domain's
/// streams, and on streams in two domains at once.
async fn check_home(r: &mut Report, session: &Session) -> bool {
    let Some(meant) = session.meant_domain().await.filter(|d| !d.is_empty()) else {
        return true;
    };
    let verdict = match step(session, session.home_verdict(&meant)).await {
        Ok(v) => v,
        Err(e) => {
            r.fail(
                "domain",
                format!(
                    "cannot tell which domain holds the pipes: {}",
                    crate::error::one_line(&e)
                ),
            );
            return false;
        }
    };
    if let Some(text) = domain::refusal(&session.layout, &meant, &verdict) {
        r.fail("domain", text);
        return false;
    }
    let prefix = session.layout.prefix();
    match (meant.as_str(), verdict) {
        (d, domain::Verdict::Homeless) => r.ok(
            "domain",
            format!("prefix {prefix}'s pipes go to JetStream domain {d}; no other domain has them"),
        ),
        (d, _) => r.ok(
            "domain",
            format!("prefix {prefix}'s pipes live in JetStream domain {d}, and in no other"),
        ),
    }
    true
}

/// Creates skypipe's streams when missing and reports them; their replicas when they exist.
async fn check_streams(r: &mut Report, session: &Session, conn: &Conn) -> Option<usize> {
    if !check_home(r, session).await {
        return None;
    }
    let layout = &session.layout;
    let names = format!("{} and {}", layout.data_stream(), layout.queue_stream());
    let existed = step(session, async {
        Ok(session.js.get_stream(layout.queue_stream()).await.is_ok()
            && session.js.get_stream(layout.data_stream()).await.is_ok())
    })
    .await
    .unwrap_or(false);
    if let Err(e) = step(session, session.ensure_streams()).await {
        // A refusal says its own cause (and what to do); a permission violation names the
        // prefix already.
        let hint = if errors::refusal(&*e).is_none() && session.denied.get().is_none() {
            format!(
                "; the user needs the permissions for prefix {:?} (see \"Permissions\" in the \
                 README)",
                layout.prefix()
            )
        } else {
            String::new()
        };
        r.fail(
            "streams",
            format!(
                "cannot create {names}: {}{hint}",
                crate::error::one_line(&e)
            ),
        );
        return None;
    }
    let info = step(session, async {
        let mut data = session.js.get_stream(layout.data_stream()).await?;
        let mut queue = session.js.get_stream(layout.queue_stream()).await?;
        Ok((
            data.info().await?.config.clone(),
            queue.info().await?.config.max_bytes,
        ))
    })
    .await;
    let (config, queue_max_bytes) = match info {
        Ok(c) => c,
        Err(e) => {
            r.fail(
                "streams",
                format!("cannot read {names}: {}", crate::error::one_line(&e)),
            );
            return None;
        }
    };
    let replicas = config.num_replicas.max(1);
    let verb = if existed { "exist" } else { "created" };
    let text = format!(
        "{names} {verb} ({replicas} replica{}, prefix {}, {})",
        if replicas == 1 { "" } else { "s" },
        layout.prefix(),
        byte_limits(config.max_bytes, queue_max_bytes, conn)
    );
    match conn.replicas {
        Some(want) if want != replicas => r.warn(
            "streams",
            format!(
                "{text}; --replicas {want} applies only to streams skypipe creates: change \
                 these with `nats stream edit --replicas {want}` on both"
            ),
        ),
        _ if session.ttl_supported && !config.allow_message_ttl => r.warn(
            "streams",
            format!(
                "{text}; they were made without per-message TTL (by an older server): \
                 payloads expire after the streams' age limit, not --ttl"
            ),
        ),
        _ => r.ok("streams", text),
    }
    Some(replicas)
}

/// The streams' byte limits, and where they came from, for the streams line.
fn byte_limits(data: i64, queue: i64, conn: &Conn) -> String {
    if data <= 0 && queue <= 0 {
        return "no byte limit".into();
    }
    let shown = |n: i64| {
        if n > 0 {
            human_bytes(n.unsigned_abs())
        } else {
            "none".into()
        }
    };
    let from = match conn.max_bytes {
        Some(n) => format!("--max-bytes {}", human_bytes(n)),
        None => "skypipe's share of the account's storage".into(),
    };
    format!(
        "byte limit {} for data and {} for tickets; {from} applies to streams it creates",
        shown(data),
        shown(queue)
    )
}

/// Sends a small payload on a probe pipe with the sender's code, then takes it the way a
/// receiver does: ticket from the pipe's work-queue consumer, chunks through an ordered
/// consumer, purge, ack. Cleans up after itself.
async fn check_probe(r: &mut Report, session: &Session, conn: &Conn) {
    let name = format!("check-{:08x}", rand::random::<u32>());
    let result = step(session, probe(session, conn, &name)).await;
    match result {
        Ok(n) => r.ok(
            "pipes",
            format!("sent and took a {n}-byte payload on pipe {name}"),
        ),
        Err(e) => r.fail(
            "pipes",
            format!(
                "the probe payload on pipe {name} failed: {}",
                crate::error::one_line(&e)
            ),
        ),
    }
}

async fn probe(session: &Session, conn: &Conn, name: &str) -> anyhow::Result<usize> {
    let pipe = PipeName::new(name)?;
    let body = Bytes::from(format!("skypipe check probe {name}\n"));
    let cancel = CancellationToken::new();
    let id = send_probe(session, conn, &pipe, body.clone(), &cancel).await?;
    let mut consumer = session.queue_consumer(&pipe).await?;
    let taken = take_probe(session, &pipe, &mut consumer, &id, &body, &cancel).await;
    // The probe pipe's consumer would otherwise linger for a day.
    if let Ok(queue) = session
        .js
        .get_stream_no_info(session.layout.queue_stream())
        .await
    {
        let _ = queue
            .delete_consumer(&session.layout.queue_consumer(&pipe))
            .await;
    }
    taken.map(|()| body.len())
}

/// Sends `body` on the probe pipe as a sender does; the payload's id.
async fn send_probe(
    session: &Session,
    conn: &Conn,
    pipe: &PipeName,
    body: Bytes,
    cancel: &CancellationToken,
) -> anyhow::Result<PayloadId> {
    let settings = config::PipeSettings {
        pipe: pipe.clone(),
        mode: config::Mode::Send,
        guessed: false,
        ttl: Duration::from_secs(5 * 60),
        ttl_given: true,
        timeout: None,
        sender_timeout: Duration::from_secs(60),
        progress: crate::config::ProgressMode::Off,
        quiet: true,
        conn: conn.clone(),
        crypto: Default::default(),
    };
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(Ok(Piece {
        data: body,
        eof: true,
    }))
    .await
    .map_err(|_| anyhow!("the probe's input closed"))?;
    let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let input = crate::transfer::send::Input {
        pieces: rx,
        size: crate::transfer::input::ChunkSize::new(crate::protocol::pipe::MAX_CHUNK),
    };
    let sent =
        crate::transfer::send::send(session, &settings, input, cancel.clone(), flag, None).await?;
    sent.id
        .ok_or_else(|| anyhow!("the probe payload was not queued"))
}

/// Takes the probe payload `id` as a receiver does: its ticket from the pipe's work-queue
/// consumer, its chunk through an ordered consumer, which must be `body`; then purge and ack.
async fn take_probe(
    session: &Session,
    pipe: &PipeName,
    consumer: &mut async_nats::jetstream::consumer::PullConsumer,
    id: &PayloadId,
    body: &Bytes,
    cancel: &CancellationToken,
) -> anyhow::Result<()> {
    let ticket =
        crate::transfer::recv::take_ticket(session, pipe, consumer, Some(CHECK_TIMEOUT), cancel)
            .await?
            .ok_or_else(|| anyhow!("its ticket did not arrive"))?;
    let got = pipe::parse_ticket(ticket.headers.as_ref())?;
    if got != *id {
        return Err(anyhow!("a ticket for another payload ({got}) arrived"));
    }
    let data = session
        .js
        .get_stream_no_info(session.layout.data_stream())
        .await?;
    let subject = session.layout.payload_subject(pipe, id);
    let reader = data
        .create_consumer(pull::OrderedConfig {
            filter_subject: subject.clone(),
            deliver_policy: DeliverPolicy::All,
            ..Default::default()
        })
        .await?;
    let mut messages = reader.messages().await?;
    let msg = messages
        .next()
        .await
        .ok_or_else(|| anyhow!("its data did not arrive"))??;
    if msg.message.payload != *body {
        return Err(anyhow!("the bytes that came back differ from those sent"));
    }
    drop(messages);
    data.purge()
        .filter(&subject)
        .await
        .context("cannot remove taken chunks")?;
    ticket
        .double_ack()
        .await
        .map_err(anyhow::Error::from_boxed)
        .context("cannot ack the ticket")
}

fn check_storage(r: &mut Report, budget: &budget::Budget) {
    let limits = &budget.limits;
    let used = budget.storage;
    let of = match limits.max_storage {
        Some(max) if max >= 0 => format!("of {}", human_bytes(max.unsigned_abs())),
        _ => "(no account limit)".into(),
    };
    let streams = match limits.max_streams {
        Some(max) => format!("{} of {max} streams", budget.streams),
        None => format!("{} streams", budget.streams),
    };
    let required = if limits.max_bytes_required {
        ", every stream needs a byte limit"
    } else {
        ""
    };
    let text = format!(
        "file storage {} used {of}, {streams} (limits of the {}{required})",
        human_bytes(used),
        budget.source()
    );
    match limits.max_storage {
        Some(0) if !budget.other_tiers.is_empty() => r.fail(
            "storage",
            format!(
                "{text}: the account gives storage to tier{} {} only, and skypipe's streams \
                 would use another; give --replicas to match (R1: --replicas 1)",
                if budget.other_tiers.len() == 1 {
                    ""
                } else {
                    "s"
                },
                budget.other_tiers.join(", ")
            ),
        ),
        Some(0) => r.fail(
            "storage",
            format!(
                "{text}: the account may not store anything on disk; ask for a file storage limit"
            ),
        ),
        Some(max) if max > 0 && used >= max.unsigned_abs() => r.fail(
            "storage",
            format!("{text}: full; take or let expire what waits in pipes, or ask for more"),
        ),
        Some(max) if max > 0 && used.saturating_mul(10) >= max.unsigned_abs().saturating_mul(9) => {
            r.warn("storage", format!("{text}: more than 90% full"))
        }
        _ => r.ok("storage", text),
    }
}

/// The account's consumers against its limit: the top-level one, or with limits per replica
/// tier, the tier of skypipe's streams. A limit reached is no failure: skypipe removes its own
/// idle consumers to make room (docs/protocol.md, "Consumers").
fn check_consumers(r: &mut Report, account: &Account, replicas: usize) {
    // With tiers, the top-level limits are all 0: the tier holds them.
    let (used, max) = match (
        account.limits.max_consumers,
        account.tiers.get(&format!("R{replicas}")),
    ) {
        (Some(max), _) if max > 0 => (account.consumers, max),
        (_, Some(tier)) => (tier.consumers, tier.limits.max_consumers.unwrap_or(-1)),
        _ => (account.consumers, -1),
    };
    if max > 0 {
        r.ok(
            "consumers",
            format!(
                "{used} of {max} (skypipe removes its idle ones to make room; a pipe holds one \
                 only while it is used)"
            ),
        );
    } else {
        r.ok("consumers", format!("{used} (no account limit)"));
    }
}

/// `skypipe check`.
pub(crate) async fn cmd_check(conn: &Conn) -> anyhow::Result<i32> {
    let (report, _) = run_checks(conn).await;
    finish(&report, "")
}

fn finish(report: &Report, consequence: &str) -> anyhow::Result<i32> {
    match report.failures() {
        None => {
            println!("all checks passed");
            Ok(code::OK)
        }
        Some(failed) => {
            eprintln!("skypipe: {failed}{consequence}");
            Ok(code::RUNTIME)
        }
    }
}

/// `skypipe setup`.
pub(crate) async fn cmd_setup(
    conn: &Conn,
    args: &SetupArgs,
    env: &dyn Fn(&str) -> Option<String>,
) -> anyhow::Result<i32> {
    if conn.source == Source::Default {
        return Err(Failure::Usage(
            "skypipe setup needs a server: skypipe setup -s URL [--creds FILE ...] \
             (skypipe's local server needs no setup)"
                .into(),
        )
        .into());
    }
    let name = args.name.trim();
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        || name.starts_with('.')
    {
        return Err(Failure::Usage(format!(
            "bad context name {name:?}: use letters, digits, '-', '_' and '.'"
        ))
        .into());
    }
    let (nats_dir, skypipe_dir) = crate::paths::context_dirs(env)?;

    let (report, session) = run_checks(conn).await;
    let Some(session) = session else {
        return finish(&report, "; nothing was saved");
    };
    let replicas = session.replicas;
    println!("all checks passed");
    save_context(name, conn, replicas, &nats_dir, &skypipe_dir, args.select)?;
    Ok(code::OK)
}

/// Runs the checks of `skypipe check`, printing them; an error when one failed. The
/// replicas for skypipe's streams on that server when they pass.
pub(crate) async fn checked(conn: &Conn) -> anyhow::Result<usize> {
    let (report, session) = run_checks(conn).await;
    match (session, report.failures()) {
        (Some(s), None) => {
            println!("all checks passed");
            Ok(s.replicas)
        }
        (_, failed) => Err(anyhow!(
            "{}",
            failed.unwrap_or_else(|| "the checks could not run".into())
        )),
    }
}

/// Saves a checked server as natscli context `name` and names it in skypipe's config file;
/// with `select`, in the natscli's `context.txt` too.
pub(crate) fn save_context(
    name: &str,
    conn: &Conn,
    replicas: usize,
    nats_dir: &std::path::Path,
    skypipe_dir: &std::path::Path,
    select: bool,
) -> anyhow::Result<()> {
    let ctx_path = nats_dir.join("context").join(format!("{name}.json"));
    write_context(&ctx_path, conn, replicas)?;
    let cfg_path = skypipe_dir.join("config.json");
    merge_json(&cfg_path, |m| {
        m.insert("context".into(), Value::String(name.to_string()));
    })?;
    println!("saved context {name:?} in {}", ctx_path.display());
    println!(
        "skypipe uses it from now on ({} names it); --context, NATS_CONTEXT, NATS_URL and \
         --server still win",
        cfg_path.display()
    );
    if select {
        let txt = nats_dir.join("context.txt");
        write_private(&txt, name.as_bytes())?;
        println!("selected it for the natscli too ({})", txt.display());
    } else {
        println!("the natscli's selected context is unchanged (--select changes it too)");
    }
    Ok(())
}
