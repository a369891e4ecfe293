//! The connection settings ([`Conn`]): which servers, how to log in, TLS, the prefix and
//! the streams' limits, each from a flag, else a variable, else the context, else a default
//! (the local server's address, and its credential when nothing names a login).

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::config::cli::ConnArgs;
use crate::config::contexts::{load_context, merge_json, ContextFile};
use crate::config::retry::RetryPolicy;
use crate::config::sizes::{parse_max_bytes, parse_max_store};
use crate::config::urls::{parse_urls, redact_url, server_of, url_credentials, with_websocket_tls};
use crate::config::{io_reason, nonempty, ConfigError};
use crate::protocol::pipe::{Layout, DEFAULT_PREFIX};

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
/// Turns the live path off: `SKYPIPE_LIVE=off` (docs/protocol.md, "The live path").
pub(crate) const LIVE_ENV: &str = "SKYPIPE_LIVE";

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
    /// Whether this skypipe offers (sending) and asks for (taking) the live path: off with
    /// [`LIVE_ENV`]` = off`.
    pub(crate) live: bool,
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
        Some(v) => parse_max_store(&v).map_err(ConfigError::LocalMaxStore),
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

/// Where a connection setting comes from, first match wins: a flag, then a variable (an
/// empty one counts as unset), then the context's value.
struct Lookup<'a> {
    env: &'a dyn Fn(&str) -> Option<String>,
    ctx: &'a ContextFile,
}

impl Lookup<'_> {
    fn var(&self, key: &str) -> Option<String> {
        (self.env)(key).filter(|s| !s.is_empty())
    }

    fn text(&self, flag: &Option<String>, var: &str, ctx_value: &str) -> Option<String> {
        flag.clone()
            .or_else(|| self.var(var))
            .or_else(|| nonempty(ctx_value))
    }

    /// A file that must be there to read, for `what` it holds.
    fn file(
        &self,
        what: &'static str,
        flag: &Option<PathBuf>,
        var: &str,
        ctx_value: &str,
    ) -> Result<Option<PathBuf>, ConfigError> {
        flag.clone()
            .or_else(|| self.var(var).map(PathBuf::from))
            .or_else(|| nonempty(ctx_value).map(|p| expand_home(&p, self.env)))
            .map(|p| readable(what, p))
            .transpose()
    }
}

/// How to log in: a user and password, a token, a credentials file or an nkey seed.
struct Login {
    user: Option<String>,
    password: Option<String>,
    token: Option<String>,
    creds: Option<PathBuf>,
    nkey: Option<PathBuf>,
}

impl Login {
    fn given(&self) -> bool {
        self.user.is_some() || self.token.is_some() || self.creds.is_some() || self.nkey.is_some()
    }
}

/// The TLS files and whether TLS comes before the NATS handshake.
struct Tls {
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    ca: Option<PathBuf>,
    first: bool,
}

impl Tls {
    /// Whether TLS is asked for at all.
    fn asked(&self) -> bool {
        self.ca.is_some() || self.cert.is_some() || self.first
    }
}

/// Resolves connection settings from flags, environment and context.
pub(crate) fn resolve_conn(
    args: &ConnArgs,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Conn, ConfigError> {
    let context = load_context(args.context.as_deref(), env)?;
    let local_port = local_port(env)?;
    let local_max_store = local_max_store(env)?;
    let (urls, source, ctx) = servers(args, context, env, local_port)?;
    let look = Lookup { env, ctx: &ctx };
    let login = login(args, &look, &urls)?;
    let tls = tls(args, &look)?;
    let urls = if tls.asked() {
        urls.into_iter().map(with_websocket_tls).collect()
    } else {
        urls
    };
    let (layout, replicas, max_bytes) = streams(args, &look)?;
    let local_nkey = (source == Source::Default && !login.given())
        .then(|| crate::paths::data_dir(env).ok())
        .flatten()
        .map(|dir| dir.join(crate::paths::NKEY_FILE));
    let (urls, ca) = owner_route(&source, urls, tls.ca, env);
    Ok(Conn {
        urls,
        secret_file: secret_file(&source, &ctx, env),
        source,
        user: login.user,
        password: login.password,
        token: login.token,
        creds: login.creds,
        nkey: login.nkey,
        cert: tls.cert,
        key: tls.key,
        ca,
        tls_first: tls.first,
        inbox_prefix: nonempty(&ctx.inbox_prefix),
        js_domain: js_domain(args, &look)?,
        js_api_prefix: nonempty(&ctx.jetstream_api_prefix),
        layout,
        replicas,
        local_port,
        local_nkey,
        local_max_store,
        retry: RetryPolicy::from_env(env),
        live: env(LIVE_ENV).is_none_or(|v| v.trim() != "off"),
        max_bytes,
    })
}

/// The servers to dial and where they were named, with the context's settings when they go
/// with those servers (else none of them).
fn servers(
    args: &ConnArgs,
    context: Option<(String, ContextFile)>,
    env: &dyn Fn(&str) -> Option<String>,
    local_port: u16,
) -> Result<(Vec<String>, Source, ContextFile), ConfigError> {
    let (ctx_name, ctx) = match context {
        Some((n, c)) => (Some(n), c),
        None => (None, ContextFile::default()),
    };
    let (url_text, source) = if let Some(s) = args.server.clone() {
        (s, Source::Flag)
    } else if let Some(s) = env("NATS_URL").filter(|s| !s.is_empty()) {
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
    Ok((urls, source, ctx))
}

/// The login: flags, variables and the context first, else one in a URL.
fn login(args: &ConnArgs, look: &Lookup, urls: &[String]) -> Result<Login, ConfigError> {
    let ctx = look.ctx;
    let mut user = look.text(&args.user, "NATS_USER", &ctx.user);
    let mut password = look.text(&args.password, "NATS_PASSWORD", &ctx.password);
    if password.is_some() && user.is_none() {
        return Err(ConfigError::PasswordWithoutUser);
    }
    let mut token = look.text(&args.token, "NATS_TOKEN", &ctx.token);
    // `nats://user:password@host` (or `nats://token@host`), as every NATS client reads it;
    // the client library does not, so it is taken here, when nothing else names a login.
    if user.is_none() && token.is_none() {
        match urls.iter().find_map(|u| url_credentials(u)) {
            Some((u, Some(p))) => (user, password) = (Some(u), Some(p)),
            Some((t, None)) => token = Some(t),
            None => {}
        }
    }
    Ok(Login {
        user,
        password,
        token,
        creds: look.file("credentials", &args.creds, "NATS_CREDS", &ctx.creds)?,
        nkey: look.file("nkey seed", &args.nkey, "NATS_NKEY", &ctx.nkey)?,
    })
}

/// The TLS settings; a client certificate needs its key.
fn tls(args: &ConnArgs, look: &Lookup) -> Result<Tls, ConfigError> {
    let ctx = look.ctx;
    let cert = look.file("TLS certificate", &args.tlscert, "NATS_CERT", &ctx.cert)?;
    let key = look.file("TLS key", &args.tlskey, "NATS_KEY", &ctx.key)?;
    if cert.is_some() != key.is_some() {
        return Err(ConfigError::HalfClientCert);
    }
    Ok(Tls {
        cert,
        key,
        ca: look.file("TLS CA", &args.tlsca, "NATS_CA", &ctx.ca)?,
        first: args.tlsfirst
            || look
                .var("NATS_TLSFIRST")
                .is_some_and(|v| v != "0" && v != "false")
            || ctx.tls_first,
    })
}

/// skypipe's own settings for its streams: the prefix's layout, the replicas and the byte
/// limit when it creates them.
fn streams(
    args: &ConnArgs,
    look: &Lookup,
) -> Result<(Layout, Option<usize>, Option<u64>), ConfigError> {
    let ctx = look.ctx;
    let prefix = args
        .prefix
        .clone()
        .or_else(|| look.var("SKYPIPE_PREFIX"))
        .or_else(|| nonempty(&ctx.skypipe_prefix))
        .unwrap_or_else(|| DEFAULT_PREFIX.to_string());
    let layout = Layout::new(&prefix).map_err(ConfigError::Prefix)?;
    let replicas = match (args.replicas, look.var("SKYPIPE_REPLICAS")) {
        (Some(n), _) => Some(parse_replicas(&n.to_string(), "--replicas")?),
        (None, Some(v)) => Some(parse_replicas(&v, "SKYPIPE_REPLICAS")?),
        (None, None) if ctx.skypipe_replicas > 0 => Some(parse_replicas(
            &ctx.skypipe_replicas.to_string(),
            "the context's skypipe_replicas",
        )?),
        (None, None) => None,
    };
    let max_bytes = match (args.max_bytes, look.var("SKYPIPE_MAX_BYTES")) {
        (Some(n), _) => Some(n),
        (None, Some(v)) => Some(parse_max_bytes(&v, "SKYPIPE_MAX_BYTES")?),
        (None, None) if ctx.skypipe_max_bytes > 0 => Some(ctx.skypipe_max_bytes),
        (None, None) => None,
    };
    Ok((layout, replicas, max_bytes))
}

/// The local server made public listens with TLS where it was told to: its owner reaches it
/// there and pins its CA.
fn owner_route(
    source: &Source,
    urls: Vec<String>,
    ca: Option<PathBuf>,
    env: &dyn Fn(&str) -> Option<String>,
) -> (Vec<String>, Option<PathBuf>) {
    match (source, &ca) {
        (Source::Default, None) => match crate::paths::owner_route(env) {
            Some((url, ca)) => (vec![url], Some(ca)),
            None => (urls, ca),
        },
        _ => (urls, ca),
    }
}

/// The secret saved for the servers named: the local server's, or the context's.
fn secret_file(
    source: &Source,
    ctx: &ContextFile,
    env: &dyn Fn(&str) -> Option<String>,
) -> Option<PathBuf> {
    match source {
        Source::Default => crate::paths::data_dir(env)
            .ok()
            .map(|d| d.join(crate::paths::SECRET_FILE)),
        _ => nonempty(&ctx.skypipe_secret_file).map(|p| expand_home(&p, env)),
    }
}

/// The JetStream domain: `--js-domain`, `NATS_JS_DOMAIN`, then the context's
/// `jetstream_domain`.
fn js_domain(args: &ConnArgs, look: &Lookup) -> Result<Option<String>, ConfigError> {
    let (value, from) = match (&args.js_domain, look.var(JS_DOMAIN_ENV)) {
        (Some(d), _) => (d.clone(), "--js-domain"),
        (None, Some(d)) => (d, JS_DOMAIN_ENV),
        (None, None) => match nonempty(&look.ctx.jetstream_domain) {
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

fn absolute(path: &Path) -> String {
    std::fs::canonicalize(path)
        .unwrap_or_else(|_| path.to_path_buf())
        .display()
        .to_string()
}

/// Writes the natscli context, keeping fields of an existing file that skypipe does not
/// set (a description, the natscli's other options).
pub(crate) fn write_context(path: &Path, conn: &Conn, replicas: usize) -> anyhow::Result<()> {
    let text = |v: &Option<String>| Value::String(v.clone().unwrap_or_default());
    let file = |v: &Option<PathBuf>| Value::String(v.as_deref().map(absolute).unwrap_or_default());
    merge_json(path, |m| {
        m.entry("description")
            .or_insert_with(|| Value::String("skypipe: saved by skypipe (setup or join)".into()));
        m.insert("url".into(), Value::String(conn.urls.join(",")));
        m.insert("user".into(), text(&conn.user));
        m.insert("password".into(), text(&conn.password));
        m.insert("token".into(), text(&conn.token));
        m.insert("creds".into(), file(&conn.creds));
        m.insert("nkey".into(), file(&conn.nkey));
        m.insert("cert".into(), file(&conn.cert));
        m.insert("key".into(), file(&conn.key));
        m.insert("ca".into(), file(&conn.ca));
        m.insert("tls_first".into(), Value::Bool(conn.tls_first));
        m.insert(
            "skypipe_prefix".into(),
            Value::String(conn.layout.prefix().to_string()),
        );
        m.insert("skypipe_replicas".into(), Value::from(replicas));
        m.insert(
            "inbox_prefix".into(),
            Value::String(conn.inbox_prefix.clone().unwrap_or_default()),
        );
        if let Some(domain) = &conn.js_domain {
            m.insert("jetstream_domain".into(), Value::String(domain.clone()));
        }
        match conn.max_bytes {
            Some(n) => m.insert("skypipe_max_bytes".into(), Value::from(n)),
            None => m.remove("skypipe_max_bytes"),
        };
        if let Some(secret) = &conn.secret_file {
            m.insert(
                "skypipe_secret_file".into(),
                Value::String(absolute(secret)),
            );
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::cli::ConnArgs;
    use crate::config::env_of;

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
}
