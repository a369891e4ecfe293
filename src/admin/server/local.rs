//! `skypipe server start|stop|status|run|preflight`: skypipe's local server as its user sees
//! it, and [`autostart`], which starts it for a pipe command when no server is configured and
//! nothing answers at the default address. The server itself is [`Local`].

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context as _};

use crate::admin::machines::seen::remember_seen;
use crate::admin::machines::store::Machines;
use crate::admin::server::instance::{
    auth_required, lets_anyone_in, Local, Running, Start, LAYOUT, LAYOUT_FILE, LOG_FILES,
    LOG_SIZE_LIMIT, PROBE_WAIT,
};
use crate::admin::server::public::{self, Public};
use crate::config::cli::LocalServerArgs;
use crate::config::{Conn, Source};
use crate::error::code;
use crate::paths::{data_dir, owner_route};
use crate::transfer::progress::human_bytes;

/// What to say about a local server that an older skypipe started without authentication.
fn open_warning(r: &Running) -> String {
    let fix = if r.foreground {
        "restart the `skypipe server run` that runs it (or its service) to turn authentication on"
    } else {
        "`skypipe server start` restarts it with authentication (payloads waiting are kept)"
    };
    format!(
        "skypipe: warning: the local server at {} (pid {}) was started by an older skypipe \
         without authentication, so every user of this machine can read and write its pipes; \
         {fix}",
        r.url(),
        r.pid
    )
}

/// The nats-server version in an INFO line's JSON.
fn version_of(info_json: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(info_json).ok()?;
    v.get("version")?.as_str().map(str::to_string)
}

fn show(path: &Path) -> String {
    path.display().to_string()
}

/// What [`autostart`] found at the default address.
enum Found {
    Started(Running),
    /// This user's local server, started by an older skypipe without authentication.
    Open(Running),
    Other,
}

/// Starts the local server unless something answers at 127.0.0.1:`port`; readies an open
/// one of this user's for its next start. Blocking.
fn find_or_start(local: anyhow::Result<Local>, port: u16) -> anyhow::Result<Found> {
    if let Some(info) = skypipe_nats::server_info(port, PROBE_WAIT) {
        if auth_required(&info) {
            return Ok(Found::Other);
        }
        let ours = local.ok().and_then(|l| {
            // A public one lets strangers in only to knock at an invite.
            let r = l
                .running()
                .filter(|r| r.port == port && r.public.is_none())?;
            // Ready for its next start; the warning says how to get there now.
            let _ = l.prepare_upgrade(port);
            Some(r)
        });
        return Ok(ours.map_or(Found::Other, Found::Open));
    }
    match local?.start(false, false)? {
        Start::Started(r) | Start::Restarted { running: r, .. } => Ok(Found::Started(r)),
        Start::AlreadyRunning(_) => Ok(Found::Other),
    }
}

/// Before a pipe command: when nothing names a server and nothing answers at the default
/// address, start the local server and say so in one line on stderr. That line is printed
/// even with `--quiet`: a server left running is something the user must hear about.
/// Returns where its owner reaches the server it started, when that is not where `conn`
/// points (a server made public listens where it was told to, with TLS).
pub(crate) async fn autostart(
    conn: &Conn,
    env: &dyn Fn(&str) -> Option<String>,
) -> anyhow::Result<Option<(String, PathBuf)>> {
    if conn.source != Source::Default {
        return Ok(None);
    }
    let port = conn.local_port;
    // Only needed when nothing answers, or an open server answers: a server that runs needs
    // no HOME.
    let local = Local::new(env, port, conn.local_max_store);
    let found = tokio::task::spawn_blocking(move || find_or_start(local, port))
        .await
        .context("the local server's starter failed")?
        .with_context(|| {
            format!(
                "no NATS server answers at nats://127.0.0.1:{port} and skypipe could not start \
                 its local one"
            )
        })?;
    let started = match found {
        Found::Started(r) => Some(r),
        Found::Open(r) => {
            eprintln!("{}", open_warning(&r));
            None
        }
        Found::Other => None,
    };
    if let Some(r) = started {
        let dir = data_dir(env).map(|d| show(&d)).unwrap_or_default();
        let version = skypipe_nats::server_info(r.port, PROBE_WAIT)
            .and_then(|i| version_of(&i))
            .map(|v| format!("nats-server {v}, "))
            .unwrap_or_default();
        eprintln!(
            "skypipe: no NATS server was running, so skypipe started its local one at {} \
             ({version}pid {}, data in {dir}); `skypipe server stop` stops it",
            r.url(),
            r.pid
        );
        // Read after the start: the server records where it listens as it starts.
        if let Some((url, ca)) = owner_route(env) {
            if !conn.urls.contains(&url) {
                return Ok(Some((url, ca)));
            }
        }
    }
    Ok(None)
}

/// The local server for a `server` subcommand: the flag's store size, else the variable's.
fn local_for(
    conn: &Conn,
    args: &LocalServerArgs,
    env: &dyn Fn(&str) -> Option<String>,
) -> anyhow::Result<Local> {
    Local::new(
        env,
        conn.local_port,
        args.max_store.unwrap_or(conn.local_max_store),
    )
}

/// `skypipe server start`.
pub(crate) async fn cmd_start(
    conn: &Conn,
    args: &LocalServerArgs,
    env: &dyn Fn(&str) -> Option<String>,
) -> anyhow::Result<i32> {
    let changed = settle_public(args, env)?;
    let local = local_for(conn, args, env)?;
    if changed {
        // A server restarted with new settings forgets the machines' closed connections.
        if let Err(e) = remember_seen(&local).await {
            tracing::debug!("cannot note when the machines were last seen: {e:#}");
        }
    }
    let files = Files {
        dir: local.dir.clone(),
        log: local.log_file(),
    };
    let public = local.public.clone();
    let listening = public
        .as_ref()
        .map(|p| format!("{}:{}", p.host(), local.port));
    let (outcome, open) = tokio::task::spawn_blocking(move || {
        let outcome = local.start(true, changed)?;
        let open = match &outcome {
            Start::AlreadyRunning(r) => r.public.is_none() && lets_anyone_in(r.port),
            _ => false,
        };
        anyhow::Ok((outcome, open))
    })
    .await
    .context("the local server's starter failed")??;
    match (&public, &listening) {
        (Some(p), Some(at)) => say_public_start(p, at, &outcome, &files),
        _ => say_start(outcome, open, changed, args, &files),
    }
    Ok(code::OK)
}

/// Where the local server keeps its data and its log, as a start reports them.
struct Files {
    dir: PathBuf,
    log: PathBuf,
}

/// What `skypipe server start` did to a public server, listening `at`.
fn say_public_start(p: &Public, at: &str, outcome: &Start, files: &Files) {
    let names = crate::admin::server::tls::names_for(p.listen, &p.names);
    let cert = match &p.own_tls {
        Some(own) => format!("the certificate {}", show(&own.cert)),
        None => format!("a certificate for {}", names.join(", ")),
    };
    let ws = p
        .websocket
        .map(|w| format!(", WebSocket on port {w}"))
        .unwrap_or_default();
    match outcome {
        Start::AlreadyRunning(r) if r.public.is_some() => println!(
            "the local server already runs (pid {}), public on {at} (TLS{ws})",
            r.pid
        ),
        Start::AlreadyRunning(r) => println!(
            "the local server already runs (pid {}) and listens on 127.0.0.1 only (it was \
             started by `skypipe server run`: restart that to make it public)",
            r.pid
        ),
        _ => println!(
            "skypipe: the local server now listens on {at} (TLS, {cert}{ws}); data in {}, \
             log in {}; `skypipe invite` lets another machine in",
            show(&files.dir),
            show(&files.log)
        ),
    }
}

/// What `skypipe server start` did to a server on 127.0.0.1; `open`: one that runs already
/// lets anyone in; `changed`: it was restarted because its settings changed.
fn say_start(outcome: Start, open: bool, changed: bool, args: &LocalServerArgs, files: &Files) {
    let (dir, log) = (show(&files.dir), show(&files.log));
    match outcome {
        Start::Restarted { old_pid, running } if changed => {
            println!(
                "restarted the local server at {} (pid {old_pid} is now pid {}), on 127.0.0.1 \
                 only; data in {dir}, log in {log}",
                running.url(),
                running.pid,
            );
        }
        Start::Started(r) => {
            println!(
                "started the local server at {} (pid {}); data in {dir}, log in {log}",
                r.url(),
                r.pid,
            );
        }
        Start::Restarted { old_pid, running } => {
            println!(
                "restarted the local server at {} with authentication (pid {old_pid}, started \
                 by an older skypipe without it, is now pid {}); data in {dir}, log in {log}",
                running.url(),
                running.pid,
            );
        }
        Start::AlreadyRunning(r) => {
            println!(
                "the local server already runs at {} (pid {})",
                r.url(),
                r.pid
            );
            if open {
                eprintln!("{}", open_warning(&r));
            }
            if args.max_store.is_some() {
                eprintln!(
                    "skypipe: --max-store applies at the next start; `skypipe server stop` \
                     first to start it with another size now"
                );
            }
        }
    }
}

/// Saves or forgets how the server is public, as `--public`/`--no-public` say. `true` when
/// that changed what the server should be.
fn settle_public(
    args: &LocalServerArgs,
    env: &dyn Fn(&str) -> Option<String>,
) -> anyhow::Result<bool> {
    let dir = data_dir(env)?;
    let old = Public::load(&dir)?;
    let Some(new) = wanted_public(args)? else {
        return Ok(false);
    };
    if new == old {
        return Ok(false);
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", show(&dir)))?;
    match &new {
        Some(p) => p.save(&dir)?,
        None => Public::forget(&dir)?,
    }
    Ok(true)
}

/// How `--public`/`--no-public` and their options want the server: `None` when they say
/// nothing (it stays as it is).
fn wanted_public(args: &LocalServerArgs) -> anyhow::Result<Option<Option<Public>>> {
    use crate::error::Failure;
    let new = if args.public {
        let (listen, port) = match &args.listen {
            Some(text) => public::parse_listen(text).map_err(Failure::Usage)?,
            None => (std::net::Ipv4Addr::UNSPECIFIED.into(), None),
        };
        let own_tls = match (&args.tls_cert, &args.tls_key, &args.tls_ca) {
            (Some(cert), Some(key), Some(ca)) => {
                for (what, f) in [("--tls-cert", cert), ("--tls-key", key), ("--tls-ca", ca)] {
                    std::fs::File::open(f).with_context(|| format!("{what} {}", show(f)))?;
                }
                let abs = |f: &PathBuf| std::fs::canonicalize(f).unwrap_or_else(|_| f.clone());
                Some(public::OwnTls {
                    cert: abs(cert),
                    key: abs(key),
                    ca: abs(ca),
                })
            }
            _ => None,
        };
        for name in &args.names {
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | ':'))
            {
                return Err(Failure::Usage(format!(
                    "--name {name:?}: give a host name or an address"
                ))
                .into());
            }
        }
        Some(Public {
            listen,
            port,
            names: args.names.clone(),
            own_tls,
            websocket: args.websocket,
        })
    } else if args.no_public {
        None
    } else {
        return Ok(None);
    };
    Ok(Some(new))
}

/// `skypipe server preflight`: whether the server could start here as asked, changing
/// nothing. Used by `skypipe server deploy` before it replaces anything.
pub(crate) fn cmd_preflight(
    conn: &Conn,
    args: &LocalServerArgs,
    env: &dyn Fn(&str) -> Option<String>,
) -> anyhow::Result<i32> {
    let mut local = local_for(conn, args, env)?;
    if let Some(wanted) = wanted_public(args)? {
        local.port = wanted
            .as_ref()
            .and_then(|p| p.port)
            .unwrap_or(conn.local_port);
        local.public = wanted;
    }
    let layout = std::fs::read_to_string(local.dir.join(LAYOUT_FILE))
        .ok()
        .and_then(|t| t.trim().parse::<u32>().ok())
        .unwrap_or(0);
    if layout > LAYOUT {
        return Err(anyhow!(
            "its data in {} is from a newer skypipe (data layout {layout}, this one knows up to \
             {LAYOUT}): deploy that skypipe or a newer one",
            show(&local.dir)
        ));
    }
    if let Some(r) = local.running() {
        if r.port == local.port {
            println!(
                "ok: skypipe's server runs here (pid {}) and will be upgraded",
                r.pid
            );
            return Ok(code::OK);
        }
    }
    let listen = local.listen_ip();
    if skypipe_nats::port_in_use_at(listen, local.port) {
        return Err(anyhow!(
            "port {} on {listen} is taken (or {listen} is not an address of that machine); \
             choose another with --listen",
            local.port
        ));
    }
    if let Some(ws) = local.public.as_ref().and_then(|p| p.websocket) {
        if skypipe_nats::port_in_use_at(listen, ws) {
            return Err(anyhow!("the WebSocket port {ws} on {listen} is taken"));
        }
    }
    println!("ok: port {} on {listen} is free", local.port);
    Ok(code::OK)
}

/// `skypipe server stop`.
pub(crate) async fn cmd_stop(
    conn: &Conn,
    env: &dyn Fn(&str) -> Option<String>,
) -> anyhow::Result<i32> {
    let local = Local::new(env, conn.local_port, conn.local_max_store)?;
    // The server forgets the machines' closed connections when it stops.
    if let Err(e) = remember_seen(&local).await {
        tracing::debug!("cannot note when the machines were last seen: {e:#}");
    }
    let stopped = tokio::task::spawn_blocking(move || local.stop())
        .await
        .context("the local server's stopper failed")??;
    match stopped {
        Some(r) => println!("stopped the local server at {} (pid {})", r.url(), r.pid),
        None => println!("the local server is not running"),
    }
    Ok(code::OK)
}

/// `skypipe server run`.
pub(crate) fn cmd_run(
    conn: &Conn,
    args: &LocalServerArgs,
    env: &dyn Fn(&str) -> Option<String>,
) -> anyhow::Result<i32> {
    settle_public(args, env)?;
    let local = local_for(conn, args, env)?;
    Err(local.run_foreground())
}

/// `skypipe server status`: exit 0 when the server runs, 3 when it does not (as LSB init
/// scripts and `systemctl status` do).
pub(crate) async fn cmd_status(
    conn: &Conn,
    env: &dyn Fn(&str) -> Option<String>,
) -> anyhow::Result<i32> {
    const NOT_RUNNING: i32 = 3;
    let local = Local::new(env, conn.local_port, conn.local_max_store)?;
    let probe = local.clone();
    let (running, info) = tokio::task::spawn_blocking(move || {
        let r = probe.running();
        let port = r.as_ref().map_or(probe.port, |r| r.port);
        let at = std::net::SocketAddr::new(probe.probe_address().ip(), port);
        (r, skypipe_nats::server_info_at(at, PROBE_WAIT))
    })
    .await
    .context("status failed")?;
    let Some(r) = running else {
        println!("local server: not running");
        println!("  data:     {}", show(&local.dir));
        if info.is_some() {
            println!(
                "  note:     another NATS server (not skypipe's) answers at {}",
                local.url()
            );
        } else {
            println!("  start it: skypipe server start (or just use a pipe)");
        }
        say_what_skypipe_uses(conn);
        return Ok(NOT_RUNNING);
    };
    say_running(&local, &r, info.as_deref());
    println!(
        "  pipes:    {}",
        pipes_stored(&local.client_conn(conn, &r)).await
    );
    say_what_skypipe_uses(conn);
    Ok(code::OK)
}

/// The lines of `skypipe server status` about a server that runs, from what it recorded and
/// its INFO line (`None`: it did not answer).
fn say_running(local: &Local, r: &Running, info: Option<&str>) {
    println!("local server: running");
    println!("  url:      {}", r.url());
    println!("  pid:      {}", r.pid);
    if let Some(up) = std::fs::metadata(local.state_file())
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
    {
        let up = std::time::Duration::from_secs(up.as_secs());
        println!("  up:       {}", humantime::format_duration(up));
    }
    let version = info.and_then(version_of);
    println!(
        "  version:  {}",
        version.map_or("(not answering)".to_string(), |v| format!(
            "nats-server {v}"
        ))
    );
    println!("  data:     {}", show(&local.dir));
    if let Some(p) = &r.public {
        let machines = Machines::load(&local.dir).map_or(0, |m| m.list.len());
        println!(
            "  public:   yes, with TLS (CA {}){}; {machines} machine{} joined",
            show(&p.ca),
            p.websocket
                .map(|w| format!(", WebSocket on port {w}"))
                .unwrap_or_default(),
            if machines == 1 { "" } else { "s" }
        );
    }
    if r.foreground {
        println!("  log:      standard error of `skypipe server run`");
    } else {
        println!(
            "  log:      {} (moved aside at {}, {LOG_FILES} files kept)",
            show(&local.log_file()),
            human_bytes(LOG_SIZE_LIMIT)
        );
    }
    if let Some(max) = r.max_store {
        println!("  store:    at most {} on disk", human_bytes(max));
    }
    match info {
        Some(_) if r.public.is_some() => println!(
            "  auth:     required; skypipe logs in with the key in {}, joined machines with \
             theirs, anyone else may only knock at an invite",
            show(&local.nkey_file())
        ),
        Some(i) if auth_required(i) => println!(
            "  auth:     required; skypipe logs in with the key in {}",
            show(&local.nkey_file())
        ),
        Some(_) => println!(
            "  auth:     none: started by an older skypipe, every user of this machine can use \
             it; `skypipe server start` restarts it with authentication"
        ),
        None => {}
    }
}

fn say_what_skypipe_uses(conn: &Conn) {
    let from = match &conn.source {
        Source::Default => return,
        Source::Flag => "--server".to_string(),
        Source::Env => "NATS_URL".to_string(),
        Source::Context(n) => format!("context {n:?}"),
    };
    println!(
        "  note:     skypipe uses {} (from {from}), not the local server",
        conn.display_urls()
    );
}

/// "N payloads waiting in M pipes (B bytes)" for the conn's prefix.
async fn pipes_stored(conn: &Conn) -> String {
    let session = match crate::client::session::connect(conn).await {
        Ok(s) => s,
        Err(e) => return format!("unknown ({})", crate::error::one_line(&e)),
    };
    let layout = &session.layout;
    let queue = match session.js.get_stream(layout.queue_stream()).await {
        Ok(mut s) => match s.info().await {
            Ok(i) => i.state.clone(),
            Err(e) => return format!("unknown ({e})"),
        },
        Err(_) => return format!("none yet (prefix {})", layout.prefix()),
    };
    let bytes = match session.js.get_stream(layout.data_stream()).await {
        Ok(mut s) => s.info().await.map(|i| i.state.bytes).unwrap_or(0),
        Err(_) => 0,
    };
    format!(
        "{} payload{} waiting in {} pipe{}, {} stored (prefix {})",
        queue.messages,
        if queue.messages == 1 { "" } else { "s" },
        queue.subjects_count,
        if queue.subjects_count == 1 { "" } else { "s" },
        human_bytes(bytes),
        layout.prefix()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_for_people() {}

    #[test]
    fn version_from_info() {
        assert_eq!(
            version_of(r#"{"server_id":"x","version":"2.15.1","jetstream":true}"#).as_deref(),
            Some("2.15.1")
        );
        assert_eq!(version_of("not json"), None);
    }
}
