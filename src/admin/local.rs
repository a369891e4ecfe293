//! skypipe's local server: a `nats-server` with JetStream on 127.0.0.1 for this user, with
//! its store, config, log and pid file in the user's data directory. `skypipe server`
//! starts, stops and reports on it, and a pipe command starts it by itself when no server is
//! configured and nothing answers at the default address ([`autostart`]).
//!
//! Starting is done under an exclusive lock on a file beside the store, re-checking once the
//! lock is held, so two commands that both find nothing running start one server, not two.
//!
//! The server lets in one user only: whoever holds the nkey seed in [`NKEY_FILE`] (mode 0600,
//! made at the first start). Its config names the public key, and a client proves it holds
//! the seed by signing the server's nonce, so the seed never leaves the file: not on a command
//! line, not to the server, not to whatever else might answer at the port. skypipe logs in
//! with it whenever nothing names a server (`Conn::local_nkey`).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, Context as _};
use nix::fcntl::{Flock, FlockArg};
use skypipe_nats::ServerConfig;

use crate::admin::public::{self, Public};
use crate::config::cli::LocalServerArgs;
use crate::config::{Conn, Source, LOCAL_PORT_ENV};
use crate::error::code;
use crate::paths::{
    data_dir, open_lock, owner_route, private_dir, read_state, state_file, PublicState, State,
    NKEY_FILE,
};
use crate::transfer::progress::human_bytes;

/// How long an INFO line may take on loopback before the port counts as silent.
const PROBE_WAIT: Duration = Duration::from_millis(500);
/// How long a stopping server may take to write its store before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(15);
/// The layout of the data directory this skypipe writes, in `layout` there: a skypipe refuses
/// to deploy over data of a newer layout. Data without the file is from an older skypipe and
/// is used as it is.
pub(crate) const LAYOUT: u32 = 1;
const LAYOUT_FILE: &str = "layout";
/// The size at which the local server moves its log aside and starts a new one.
pub(crate) const LOG_SIZE_LIMIT: u64 = 10 << 20;
/// How many log files the local server keeps, the current one included: at most 40 MiB.
pub(crate) const LOG_FILES: u32 = 4;

/// The local server's files, for one port, and the store size it starts with.
#[derive(Debug, Clone)]
pub(crate) struct Local {
    pub(crate) dir: PathBuf,
    pub(crate) port: u16,
    pub(crate) max_store: u64,
    /// How it is public (`public.json`), when it is.
    pub(crate) public: Option<Public>,
}

/// A local server found running.
#[derive(Debug, Clone)]
pub(crate) struct Running {
    pub(crate) pid: u32,
    pub(crate) port: u16,
    pub(crate) foreground: bool,
    /// The store size it started with, when skypipe recorded it.
    pub(crate) max_store: Option<u64>,
    /// How it is public, when it is.
    pub(crate) public: Option<PublicState>,
}

impl Running {
    pub(crate) fn url(&self) -> String {
        match &self.public {
            Some(p) => format!("tls://{}:{}", p.host, self.port),
            None => format!("nats://127.0.0.1:{}", self.port),
        }
    }
}

/// What [`Local::start`] did.
#[derive(Debug)]
pub(crate) enum Start {
    Started(Running),
    AlreadyRunning(Running),
    /// A server an older skypipe started without authentication was stopped, and this one
    /// started in its place.
    Restarted {
        old_pid: u32,
        running: Running,
    },
}

/// Whether the INFO line's JSON says the server wants clients to log in.
fn auth_required(info_json: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(info_json)
        .ok()
        .and_then(|v| v.get("auth_required")?.as_bool())
        .unwrap_or(false)
}

/// Whether the NATS server at 127.0.0.1:`port` lets clients in without a login. `false` when
/// nothing answers.
fn lets_anyone_in(port: u16) -> bool {
    skypipe_nats::server_info(port, PROBE_WAIT).is_some_and(|info| !auth_required(&info))
}

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

impl Local {
    pub(crate) fn new(
        env: &dyn Fn(&str) -> Option<String>,
        port: u16,
        max_store: u64,
    ) -> anyhow::Result<Local> {
        let dir = data_dir(env)?;
        let public = Public::load(&dir)?;
        Ok(Local {
            port: public.as_ref().and_then(|p| p.port).unwrap_or(port),
            dir,
            max_store,
            public,
        })
    }

    pub(crate) fn url(&self) -> String {
        match &self.public {
            Some(p) => format!("tls://{}:{}", p.client_host(), self.port),
            None => format!("nats://127.0.0.1:{}", self.port),
        }
    }

    /// The address the server listens on: the public one, else loopback.
    fn listen_ip(&self) -> std::net::IpAddr {
        self.public
            .as_ref()
            .map_or(std::net::Ipv4Addr::LOCALHOST.into(), |p| p.listen)
    }

    /// Where this machine reaches the server, for probes.
    fn probe_address(&self) -> std::net::SocketAddr {
        let host = self
            .public
            .as_ref()
            .map_or("127.0.0.1".into(), Public::host);
        skypipe_nats::probe_address(&host, self.port)
    }

    pub(crate) fn pid_file(&self) -> PathBuf {
        self.dir.join("nats-server.pid")
    }

    pub(crate) fn log_file(&self) -> PathBuf {
        self.dir.join("nats-server.log")
    }

    /// The credential: the seed of the server's only user.
    pub(crate) fn nkey_file(&self) -> PathBuf {
        self.dir.join(NKEY_FILE)
    }

    fn state_file(&self) -> PathBuf {
        state_file(&self.dir)
    }

    fn lock_file(&self) -> PathBuf {
        self.dir.join("server.lock")
    }

    /// The server's config: loopback only, JetStream with its store in the data directory
    /// and at most `max_store` bytes of it, a log that rotates, and one user, the holder of
    /// the seed whose public key is `user`. A public server listens where it was told to,
    /// with TLS, and lets in the machines that joined as well (`crate::admin::public`);
    /// `http_port` is its monitoring port on 127.0.0.1 (picked when `None`).
    pub(crate) fn server_config(
        &self,
        user: &str,
        http_port: Option<u16>,
    ) -> anyhow::Result<(ServerConfig, Option<PublicState>)> {
        let mut config = self.private_config(user);
        let Some(public) = &self.public else {
            return Ok((config, None));
        };
        let tls = public.tls(&self.dir)?;
        let machines = public::load_machines(&self.dir)?;
        let http_port = match http_port {
            Some(p) => p,
            None => skypipe_nats::free_port()?,
        };
        config.host = public.host();
        config.nkey_users = Vec::new();
        config.extra = format!(
            "{}{}http: \"127.0.0.1:{http_port}\"\n",
            public::render_tls(&tls),
            public::render_auth(user, &machines, &join_password(user))
        );
        if let Some(ws) = public.websocket {
            config.websocket_port = Some(ws);
            config.websocket_tls = Some(skypipe_nats::TlsFiles {
                cert_file: tls.cert.clone(),
                key_file: tls.key.clone(),
            });
        }
        Ok((
            config,
            Some(PublicState {
                host: public.client_host(),
                ca: tls.ca,
                websocket: public.websocket,
                http_port: Some(http_port),
            }),
        ))
    }

    fn private_config(&self, user: &str) -> ServerConfig {
        let mut config = ServerConfig::new(&self.dir);
        config.port = Some(self.port);
        config.name = Some("skypipe-local".into());
        config.pid_file = Some(self.pid_file());
        config.log_file = Some(self.log_file());
        config.log_size_limit = Some(LOG_SIZE_LIMIT);
        config.log_max_num = Some(LOG_FILES);
        config.max_file_store = Some(self.max_store);
        config.nkey_users = vec![user.to_string()];
        config
    }

    /// The public key of the server's user, making the seed first when there is none. Call
    /// with the lock held.
    fn credential(&self) -> anyhow::Result<String> {
        use std::os::unix::fs::PermissionsExt;
        let path = self.nkey_file();
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                // Only its owner may read it, whatever happened to it since.
                let mode = std::fs::metadata(&path)
                    .with_context(|| format!("cannot read {}", path.display()))?
                    .permissions()
                    .mode();
                if mode & 0o077 != 0 {
                    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                        .with_context(|| format!("cannot make {} private", path.display()))?;
                }
                let seed = text.lines().map(str::trim).find(|l| l.starts_with('S'));
                seed.and_then(|seed| nkeys::KeyPair::from_seed(seed).ok())
                    .map(|pair| pair.public_key())
                    .ok_or_else(|| {
                        anyhow!(
                            "{} holds no valid nkey seed; stop the local server, remove the \
                             file and start it again (a new one is made)",
                            path.display()
                        )
                    })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                use rand::TryRngCore as _;
                let mut raw = zeroize::Zeroizing::new([0u8; 32]);
                rand::rngs::OsRng
                    .try_fill_bytes(raw.as_mut())
                    .map_err(|e| anyhow!("no randomness for the local server's credential: {e}"))?;
                let pair = nkeys::KeyPair::new_from_raw(nkeys::KeyPairType::User, *raw)
                    .map_err(|e| anyhow!("cannot make the local server's credential: {e}"))?;
                let seed = zeroize::Zeroizing::new(
                    pair.seed()
                        .map_err(|e| anyhow!("cannot make the local server's credential: {e}"))?,
                );
                skypipe_nats::write_private(&path, &format!("{}\n", seed.as_str()))
                    .with_context(|| format!("cannot write {}", path.display()))?;
                Ok(pair.public_key())
            }
            Err(e) => Err(anyhow!("cannot read {}: {e}", path.display())),
        }
    }

    /// For a running server an older skypipe started without authentication: makes the
    /// credential and writes the config it will start with next time.
    fn prepare_upgrade(&self, port: u16) -> anyhow::Result<()> {
        let _lock = self.lock()?;
        let user = self.credential()?;
        self.server_config(&user, None)?
            .0
            .write_config(port)
            .map_err(|e| anyhow!("cannot write the local server's config: {e}"))?;
        Ok(())
    }

    fn create_dir(&self) -> anyhow::Result<()> {
        private_dir(&self.dir)?;
        let layout = self.dir.join(LAYOUT_FILE);
        if !layout.exists() {
            std::fs::write(&layout, format!("{LAYOUT}\n"))
                .with_context(|| format!("cannot write {}", layout.display()))?;
        }
        Ok(())
    }

    /// Holds the start/stop lock until the returned value is dropped. Blocks while another
    /// skypipe starts or stops the server.
    fn lock(&self) -> anyhow::Result<Flock<File>> {
        self.create_dir()?;
        let path = self.lock_file();
        Flock::lock(open_lock(&path)?, FlockArg::LockExclusive)
            .map_err(|(_, e)| anyhow!("cannot lock {}: {e}", path.display()))
    }

    fn read_state(&self) -> Option<State> {
        read_state(&self.dir)
    }

    fn write_state(&self, state: &State) -> anyhow::Result<()> {
        let text = serde_json::to_string_pretty(state)?;
        std::fs::write(self.state_file(), text)
            .with_context(|| format!("cannot write {}", self.state_file().display()))
    }

    fn forget(&self) {
        let _ = std::fs::remove_file(self.pid_file());
        let _ = std::fs::remove_file(self.state_file());
    }

    /// The local server, when its pid file names a live `nats-server` started with this
    /// data directory's config (a pid reused by someone else's server does not count).
    pub(crate) fn running(&self) -> Option<Running> {
        let pid = skypipe_nats::read_pid(&self.pid_file())?;
        if !skypipe_nats::is_nats_server(pid) {
            return None;
        }
        if let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) {
            let config = self.dir.join("nats-server.conf");
            let config = config.to_string_lossy();
            if !String::from_utf8_lossy(&cmdline).contains(config.as_ref()) {
                return None;
            }
        }
        let state = self.read_state().filter(|s| s.pid == pid);
        Some(Running {
            pid,
            port: state.as_ref().map_or(self.port, |s| s.port),
            foreground: state.as_ref().is_some_and(|s| s.mode == "foreground"),
            max_store: state.as_ref().and_then(|s| s.max_store),
            public: state.and_then(|s| s.public),
        })
    }

    /// Refuses to start a second server on the same store, or one where a port is taken.
    fn check_free(&self) -> anyhow::Result<Option<Running>> {
        if let Some(r) = self.running() {
            if r.port != self.port {
                return Err(anyhow!(
                    "skypipe's local server runs on port {} (pid {}), not on port {} where \
                     skypipe now looks for it ({LOCAL_PORT_ENV}); stop it with \
                     `{LOCAL_PORT_ENV}={} skypipe server stop`, or set {LOCAL_PORT_ENV}={}",
                    r.port,
                    r.pid,
                    self.port,
                    r.port,
                    r.port
                ));
            }
            return Ok(Some(r));
        }
        if skypipe_nats::server_info_at(self.probe_address(), PROBE_WAIT).is_some() {
            return Err(anyhow!(
                "another NATS server (not skypipe's local one) answers at {}; skypipe uses that \
                 one as it is, or set {LOCAL_PORT_ENV} to run skypipe's own on another port",
                self.url()
            ));
        }
        let listen = self.listen_ip();
        if skypipe_nats::port_in_use_at(listen, self.port) {
            return Err(anyhow!(
                "port {} on {listen} is taken by something that is not a NATS server (or \
                 {listen} is not an address of this machine); set {LOCAL_PORT_ENV} or \
                 --listen to run skypipe's local server on another port",
                self.port
            ));
        }
        Ok(None)
    }

    /// Starts the server in the background unless it runs already. With `upgrade`, a server
    /// running in the background that an older skypipe started without authentication is
    /// stopped (its store kept) and started again with it. Blocking.
    /// With `changed`, a server running in the background is restarted with the settings of
    /// now (how it is public).
    pub(crate) fn start(&self, upgrade: bool, changed: bool) -> anyhow::Result<Start> {
        let _lock = self.lock()?;
        let mut old_pid = None;
        if let Some(r) = self.running() {
            if changed && !r.foreground {
                skypipe_nats::stop_pid(r.pid, STOP_GRACE)
                    .with_context(|| format!("cannot stop nats-server (pid {})", r.pid))?;
                old_pid = Some(r.pid);
                self.forget();
            }
        }
        if let Some(r) = self.check_free()? {
            if !(upgrade && !r.foreground && r.public.is_none() && lets_anyone_in(r.port)) {
                return Ok(Start::AlreadyRunning(r));
            }
            skypipe_nats::stop_pid(r.pid, STOP_GRACE)
                .with_context(|| format!("cannot stop nats-server (pid {})", r.pid))?;
            old_pid = Some(r.pid);
            if let Some(r) = self.check_free()? {
                return Ok(Start::AlreadyRunning(r));
            }
        }
        self.forget();
        let user = self.credential()?;
        let (config, public) = self.server_config(&user, None)?;
        let detached = config.start_detached().map_err(start_error)?;
        let running = Running {
            pid: detached.pid,
            port: detached.port,
            foreground: false,
            max_store: Some(self.max_store),
            public,
        };
        self.write_state(&State {
            pid: running.pid,
            port: running.port,
            mode: "background".into(),
            max_store: running.max_store,
            public: running.public.clone(),
        })?;
        Ok(match old_pid {
            Some(old_pid) => Start::Restarted { old_pid, running },
            None => Start::Started(running),
        })
    }

    /// After the machines that joined changed: writes the config again and has the running
    /// server read it (SIGHUP); a machine no longer listed loses its connections at once.
    pub(crate) fn reload(&self) -> anyhow::Result<()> {
        let _lock = self.lock()?;
        let Some(r) = self.running() else {
            return Ok(());
        };
        let user = self.credential()?;
        let http = r.public.as_ref().and_then(|p| p.http_port);
        let (mut config, _) = self.server_config(&user, http)?;
        if r.foreground {
            config.log_file = None;
        }
        config
            .write_config(r.port)
            .map_err(|e| anyhow!("cannot write the local server's config: {e}"))?;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(r.pid as i32),
            nix::sys::signal::Signal::SIGHUP,
        )
        .map_err(|e| {
            anyhow!(
                "cannot tell the local server (pid {}) to reload: {e}",
                r.pid
            )
        })
    }

    /// A connection to this server as its owner: its address and credential, nothing else
    /// from `base` but the prefix.
    pub(crate) fn client_conn(&self, base: &Conn, running: &Running) -> Conn {
        Conn {
            urls: vec![running.url()],
            source: Source::Default,
            user: None,
            password: None,
            token: None,
            creds: None,
            nkey: None,
            cert: None,
            key: None,
            ca: running.public.as_ref().map(|p| p.ca.clone()),
            tls_first: false,
            inbox_prefix: None,
            js_domain: None,
            js_api_prefix: None,
            local_nkey: Some(self.nkey_file()),
            ..base.clone()
        }
    }

    /// Stops the server. `Ok(None)` when none was running.
    pub(crate) fn stop(&self) -> anyhow::Result<Option<Running>> {
        let _lock = self.lock()?;
        let Some(r) = self.running() else {
            self.forget();
            return Ok(None);
        };
        skypipe_nats::stop_pid(r.pid, STOP_GRACE)
            .with_context(|| format!("cannot stop nats-server (pid {})", r.pid))?;
        self.forget();
        Ok(Some(r))
    }

    /// Becomes the server, in the foreground, logging to stderr. Returns only on failure.
    pub(crate) fn run_foreground(&self) -> anyhow::Error {
        let lock = match self.lock() {
            Ok(l) => l,
            Err(e) => return e,
        };
        match self.check_free() {
            Ok(Some(r)) => {
                return anyhow!(
                    "skypipe's local server already runs (pid {}, {}); stop it first with \
                     `skypipe server stop`",
                    r.pid,
                    r.url()
                )
            }
            Ok(None) => {}
            Err(e) => return e,
        }
        self.forget();
        // exec keeps the pid: the server that runs is this process.
        let user = match self.credential() {
            Ok(u) => u,
            Err(e) => return e,
        };
        let (mut config, public) = match self.server_config(&user, None) {
            Ok(c) => c,
            Err(e) => return e,
        };
        if let Err(e) = self.write_state(&State {
            pid: std::process::id(),
            port: self.port,
            mode: "foreground".into(),
            max_store: Some(self.max_store),
            public,
        }) {
            return e;
        }
        config.log_file = None;
        // The lock's descriptor is close-on-exec: exec releases it.
        let error = start_error(config.exec());
        drop(lock);
        error
    }
}

/// The rendezvous user's password, which nobody needs: whoever has no login is that user.
/// It stays the same from one config to the next, since a server that reloads a user whose
/// password changed drops its connections, and with them a join under way.
fn join_password(owner: &str) -> String {
    crate::protocol::join::sha256_hex(format!("skypipe rendezvous {owner}").as_bytes())[..32]
        .to_string()
}

fn start_error(e: skypipe_nats::Error) -> anyhow::Error {
    match e {
        // Its text already says how to install one.
        skypipe_nats::Error::NotFound => anyhow!("{e}"),
        other => anyhow!("cannot start the local server: {other}"),
    }
}

/// The nats-server version in an INFO line's JSON.
fn version_of(info_json: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(info_json).ok()?;
    v.get("version")?.as_str().map(str::to_string)
}

fn show(path: &Path) -> String {
    path.display().to_string()
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
    enum Found {
        Started(Running),
        /// This user's local server, started by an older skypipe without authentication.
        Open(Running),
        Other,
    }
    let found = tokio::task::spawn_blocking(move || -> anyhow::Result<Found> {
        if let Some(info) = skypipe_nats::server_info(port, PROBE_WAIT) {
            if auth_required(&info) {
                return Ok(Found::Other);
            }
            let ours = local.ok().and_then(|l| {
                // A public one lets strangers in only to knock at an invite.
                let r = l
                    .running()
                    .filter(|r| r.port == port && r.public.is_none())?;
                // Ready for its next start; the warning below says how to get there now.
                let _ = l.prepare_upgrade(port);
                Some(r)
            });
            return Ok(ours.map_or(Found::Other, Found::Open));
        }
        match local?.start(false, false)? {
            Start::Started(r) | Start::Restarted { running: r, .. } => Ok(Found::Started(r)),
            Start::AlreadyRunning(_) => Ok(Found::Other),
        }
    })
    .await
    .map_err(|e| anyhow!("the local server's starter failed: {e}"))?
    .map_err(|e| {
        anyhow!(
            "no NATS server answers at nats://127.0.0.1:{port} and skypipe could not start its \
             local one: {e:#}"
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
        if let Err(e) = crate::admin::invite::remember_seen(&local).await {
            tracing::debug!("cannot note when the machines were last seen: {e:#}");
        }
    }
    let dir = local.dir.clone();
    let log = local.log_file();
    let public = local.public.clone();
    let listening = public
        .as_ref()
        .map(|p| format!("{}:{}", p.host(), local.port));
    let outcome = tokio::task::spawn_blocking(move || {
        let outcome = local.start(true, changed)?;
        let open = match &outcome {
            Start::AlreadyRunning(r) => r.public.is_none() && lets_anyone_in(r.port),
            _ => false,
        };
        anyhow::Ok((outcome, open))
    })
    .await
    .map_err(|e| anyhow!("the local server's starter failed: {e}"))??;
    if let (Some(p), Some(at)) = (&public, &listening) {
        let names = crate::admin::tls::names_for(p.listen, &p.names);
        let cert = match &p.own_tls {
            Some(own) => format!("the certificate {}", show(&own.cert)),
            None => format!("a certificate for {}", names.join(", ")),
        };
        let ws = p
            .websocket
            .map(|w| format!(", WebSocket on port {w}"))
            .unwrap_or_default();
        match &outcome.0 {
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
                show(&dir),
                show(&log)
            ),
        }
        return Ok(code::OK);
    }
    match outcome {
        (Start::Restarted { old_pid, running }, _) if changed => {
            println!(
                "restarted the local server at {} (pid {old_pid} is now pid {}), on 127.0.0.1 \
                 only; data in {}, log in {}",
                running.url(),
                running.pid,
                show(&dir),
                show(&log)
            );
        }
        (Start::Started(r), _) => {
            println!(
                "started the local server at {} (pid {}); data in {}, log in {}",
                r.url(),
                r.pid,
                show(&dir),
                show(&log)
            );
        }
        (Start::Restarted { old_pid, running }, _) => {
            println!(
                "restarted the local server at {} with authentication (pid {old_pid}, started \
                 by an older skypipe without it, is now pid {}); data in {}, log in {}",
                running.url(),
                running.pid,
                show(&dir),
                show(&log)
            );
        }
        (Start::AlreadyRunning(r), open) => {
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
    Ok(code::OK)
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
                    std::fs::File::open(f).map_err(|e| anyhow!("{what} {}: {e}", show(f)))?;
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
    if let Err(e) = crate::admin::invite::remember_seen(&local).await {
        tracing::debug!("cannot note when the machines were last seen: {e:#}");
    }
    let stopped = tokio::task::spawn_blocking(move || local.stop())
        .await
        .map_err(|e| anyhow!("the local server's stopper failed: {e}"))??;
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
    .map_err(|e| anyhow!("status failed: {e}"))?;
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
    let version = info.as_deref().and_then(version_of);
    println!(
        "  version:  {}",
        version.map_or("(not answering)".to_string(), |v| format!(
            "nats-server {v}"
        ))
    );
    println!("  data:     {}", show(&local.dir));
    if let Some(p) = &r.public {
        let machines = public::load_machines(&local.dir).map_or(0, |m| m.len());
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
    match info.as_deref() {
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
    println!(
        "  pipes:    {}",
        pipes_stored(&local.client_conn(conn, &r)).await
    );
    say_what_skypipe_uses(conn);
    Ok(code::OK)
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
        Err(e) => return format!("unknown ({e:#})"),
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
