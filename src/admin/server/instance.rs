//! skypipe's local server as a process: a `nats-server` with JetStream on 127.0.0.1 for this
//! user (or public, with TLS), with its store, config, log and pid file in the user's data
//! directory. [`Local`] finds it running, starts, stops and reloads it; the commands that do
//! so are in `local`.
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
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, Context as _};
use nix::fcntl::{Flock, FlockArg};
use skypipe_nats::ServerConfig;

use crate::admin::machines::store::Machines;
use crate::admin::server::public::{self, Public};
use crate::config::{Conn, Source, LOCAL_PORT_ENV};
use crate::paths::{
    data_dir, open_lock, private_dir, read_state, state_file, PublicState, State, NKEY_FILE,
};

/// How long an INFO line may take on loopback before the port counts as silent.
pub(crate) const PROBE_WAIT: Duration = Duration::from_millis(500);
/// How long a stopping server may take to write its store before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(15);
/// The layout of the data directory this skypipe writes, in `layout` there: a skypipe refuses
/// to deploy over data of a newer layout. Data without the file is from an older skypipe and
/// is used as it is.
pub(crate) const LAYOUT: u32 = 1;
pub(crate) const LAYOUT_FILE: &str = "layout";
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
pub(crate) fn auth_required(info_json: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(info_json)
        .ok()
        .and_then(|v| v.get("auth_required")?.as_bool())
        .unwrap_or(false)
}

/// Whether the NATS server at 127.0.0.1:`port` lets clients in without a login. `false` when
/// nothing answers.
pub(crate) fn lets_anyone_in(port: u16) -> bool {
    skypipe_nats::server_info(port, PROBE_WAIT).is_some_and(|info| !auth_required(&info))
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
    pub(crate) fn listen_ip(&self) -> std::net::IpAddr {
        self.public
            .as_ref()
            .map_or(std::net::Ipv4Addr::LOCALHOST.into(), |p| p.listen)
    }

    /// Where this machine reaches the server, for probes.
    pub(crate) fn probe_address(&self) -> std::net::SocketAddr {
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

    pub(crate) fn state_file(&self) -> PathBuf {
        state_file(&self.dir)
    }

    fn lock_file(&self) -> PathBuf {
        self.dir.join("server.lock")
    }

    /// The server's config: loopback only, JetStream with its store in the data directory
    /// and at most `max_store` bytes of it, a log that rotates, and one user, the holder of
    /// the seed whose public key is `user`. A public server listens where it was told to,
    /// with TLS, and lets in the machines that joined as well (`crate::admin::public`);
    /// `http_port` is its monitoring port on 127.0.0.1 (picked when `None`); `machines`, the
    /// machines that joined (read from the data directory when `None`).
    fn server_config(
        &self,
        user: &str,
        http_port: Option<u16>,
        machines: Option<&Machines>,
    ) -> anyhow::Result<(ServerConfig, Option<PublicState>)> {
        let mut config = self.private_config(user);
        let Some(public) = &self.public else {
            return Ok((config, None));
        };
        let tls = public.tls(&self.dir)?;
        let loaded;
        let machines = match machines {
            Some(m) => m,
            None => {
                loaded = Machines::load(&self.dir)?;
                &loaded
            }
        };
        let http_port = match http_port {
            Some(p) => p,
            None => skypipe_nats::free_port()?,
        };
        config.host = public.host();
        config.nkey_users = Vec::new();
        config.extra = format!(
            "{}{}http: \"127.0.0.1:{http_port}\"\n",
            public::render_tls(&tls),
            public::render_auth(user, machines, &join_password(user))?
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
                    .context("no randomness for the local server's credential")?;
                let pair = nkeys::KeyPair::new_from_raw(nkeys::KeyPairType::User, *raw)
                    .context("cannot make the local server's credential")?;
                let seed = zeroize::Zeroizing::new(
                    pair.seed()
                        .context("cannot make the local server's credential")?,
                );
                skypipe_nats::write_private(&path, &format!("{}\n", seed.as_str()))
                    .with_context(|| format!("cannot write {}", path.display()))?;
                Ok(pair.public_key())
            }
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    /// For a running server an older skypipe started without authentication: makes the
    /// credential and writes the config it will start with next time.
    pub(crate) fn prepare_upgrade(&self, port: u16) -> anyhow::Result<()> {
        let _lock = self.lock()?;
        let user = self.credential()?;
        self.server_config(&user, None, None)?
            .0
            .write_config(port)
            .context("cannot write the local server's config")?;
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
            .map_err(|(_, e)| e)
            .with_context(|| format!("cannot lock {}", path.display()))
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
        let (config, public) = self.server_config(&user, None, None)?;
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

    /// Changes the machines that joined, under the lock: reads their list once, lets `edit`
    /// change it (`edit` says whether it did), and when it did, saves it, writes the config
    /// again and has the running server read it (SIGHUP): a machine no longer listed loses
    /// its connections at once. `Ok((t, Err(e)))`: the change was saved but the server could
    /// not be told.
    pub(crate) fn change_machines<T>(
        &self,
        edit: impl FnOnce(&mut Machines) -> (T, bool),
    ) -> anyhow::Result<(T, anyhow::Result<()>)> {
        let _lock = self.lock()?;
        let mut machines = Machines::load(&self.dir)?;
        let (out, changed) = edit(&mut machines);
        if !changed {
            return Ok((out, Ok(())));
        }
        machines.save(&self.dir)?;
        Ok((out, self.reload(&machines)))
    }

    /// Writes the config again with these machines and has the running server read it. Call
    /// with the lock held.
    fn reload(&self, machines: &Machines) -> anyhow::Result<()> {
        let Some(r) = self.running() else {
            return Ok(());
        };
        let user = self.credential()?;
        let http = r.public.as_ref().and_then(|p| p.http_port);
        let (mut config, _) = self.server_config(&user, http, Some(machines))?;
        if r.foreground {
            config.log_file = None;
        }
        config
            .write_config(r.port)
            .context("cannot write the local server's config")?;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(r.pid as i32),
            nix::sys::signal::Signal::SIGHUP,
        )
        .with_context(|| format!("cannot tell the local server (pid {}) to reload", r.pid))
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
        let (mut config, public) = match self.server_config(&user, None, None) {
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
        skypipe_nats::Error::NotFound => e.into(),
        other => anyhow::Error::new(other).context("cannot start the local server"),
    }
}
