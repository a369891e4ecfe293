//! `skypipe join HOST CODE`: the joining side of an invite (docs/protocol.md, "Joining").
//!
//! It reaches the host's server with TLS before it can know the host's CA, so it accepts the
//! certificate it is shown only to remember it: once the key agreed from the code has opened
//! the host's answer, the certificate shown must be the one the host says it serves, else
//! someone is in the middle and nothing is saved. From then on the context pins the CA.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context as _};
use async_nats::rustls;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use crate::admin::machines::errors::JoinError;
use crate::admin::server::tls::host_name;
use crate::admin::setup;
use crate::config::cli::JoinArgs;
use crate::config::{Conn, Source};
use crate::error::{code, Failure};
use crate::protocol::join::{
    b64, invite_subject, new_session, session_subject, sha256_hex, unb64, Channel, Code, Envelope,
    Hello, HelloReply, Joiner, Outcome, Pake, Side, Welcome, JOIN_INBOX, JOIN_VERSION,
};
use crate::protocol::pipe::Layout;

/// How long one step of the exchange may take (the host's own steps are quick).
const STEP_WAIT: Duration = Duration::from_secs(20);
/// How long the host's server may take to let the new key in.
const LOGIN_WAIT: Duration = Duration::from_secs(15);

/// Accepts any certificate, and keeps the one it was shown.
#[derive(Debug)]
struct Remember {
    shown: Mutex<Option<Vec<u8>>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl Remember {
    /// SHA-256 (hex) of the certificate the server showed, when it showed one.
    fn shown_sha256(&self) -> Option<String> {
        let shown = self.shown.lock().ok()?;
        shown.as_deref().map(sha256_hex)
    }
}

impl ServerCertVerifier for Remember {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Ok(mut slot) = self.shown.lock() {
            *slot = Some(end_entity.as_ref().to_vec());
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The URL to dial for `HOST[:PORT]` or a URL, and the host as the user typed it.
fn target_url(text: &str) -> Result<(String, String), String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("give the host that runs `skypipe invite`".into());
    }
    if let Some((scheme, rest)) = text.split_once("://") {
        if !matches!(scheme, "tls" | "wss") {
            return Err(format!(
                "{text}: a public skypipe server speaks TLS: use tls://HOST:PORT or \
                 wss://HOST:PORT, or just HOST:PORT"
            ));
        }
        let host = rest.split('/').next().unwrap_or(rest).to_string();
        return Ok((text.to_string(), host));
    }
    let has_port = match text.rsplit_once(':') {
        Some((h, p)) => p.parse::<u16>().is_ok() && (!h.contains(':') || h.ends_with(']')),
        None => false,
    };
    let host = if has_port {
        text.to_string()
    } else if text.contains(':') && !text.starts_with('[') {
        format!("[{text}]:4222")
    } else {
        format!("{text}:4222")
    };
    Ok((format!("tls://{host}"), text.to_string()))
}

/// The context a join or a deploy saves for a server reached as `host`.
pub(crate) fn context_name(host: &str) -> String {
    let h: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("skypipe-{}", h.trim_matches(['-', '.']))
}

/// `skypipe join HOST CODE`.
pub(crate) async fn cmd_join(
    base: &Conn,
    args: &JoinArgs,
    env: &dyn Fn(&str) -> Option<String>,
) -> anyhow::Result<i32> {
    let code = Code::parse(&args.code).map_err(Failure::Usage)?;
    let (url, shown_host) = target_url(&args.host).map_err(Failure::Usage)?;
    let ctx_name = args
        .context_name
        .clone()
        .unwrap_or_else(|| context_name(&shown_host));
    let (nats_dir, skypipe_dir) = crate::paths::context_dirs(env)?;

    if let Some(at) = url.strip_prefix("tls://") {
        let (at, host) = (at.to_string(), shown_host.clone());
        tokio::task::spawn_blocking(move || probe(&at, &host))
            .await
            .context("probe failed")??;
    }
    let (client, remember) = connect(&url, &shown_host).await?;
    let guest = Guest::meet(client, &code, &shown_host).await?;
    let (welcome, seed) = guest.introduce().await?;

    // The certificate shown must be the host's.
    if remember.shown_sha256().as_deref() != Some(welcome.cert_sha256.as_str()) {
        guest
            .tell(
                false,
                Some("the joining machine was shown another certificate".into()),
            )
            .await;
        return Err(JoinError::Middle { host: shown_host }.into());
    }

    // Save what it needs, try it, and keep it only when it works.
    let dirs = Dirs {
        nats: &nats_dir,
        skypipe: &skypipe_dir,
    };
    let place = Place {
        ctx_name: &ctx_name,
        shown_host: &shown_host,
        first_url: Some(&url),
    };
    match settle(base, &welcome, &seed, &place, &dirs).await {
        Ok(()) => {
            guest.tell(true, None).await;
            println!(
                "joined {shown_host}: pipes now go through it (TLS pinned, this machine is {:?}, \
                 prefix {:?}{})",
                welcome.name,
                welcome.prefix,
                if welcome.secret.is_some() {
                    ", payloads sealed with the host's secret"
                } else {
                    ""
                }
            );
            Ok(code::OK)
        }
        Err(e) => {
            guest.tell(false, Some(crate::error::one_line(&e))).await;
            Err(e.context("nothing was saved"))
        }
    }
}

/// Connects to the host's server over TLS, taking whatever certificate it shows and keeping
/// it, with the join's inbox for replies.
async fn connect(
    url: &str,
    shown_host: &str,
) -> anyhow::Result<(async_nats::Client, Arc<Remember>)> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let remember = Arc::new(Remember {
        shown: Mutex::new(None),
        provider: provider.clone(),
    });
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS")?
        .dangerous()
        .with_custom_certificate_verifier(remember.clone())
        .with_no_client_auth();
    let client = async_nats::ConnectOptions::new()
        .name("skypipe join")
        .tls_client_config(tls)
        .require_tls(true)
        .custom_inbox_prefix(JOIN_INBOX)
        .connection_timeout(Duration::from_secs(10))
        .max_reconnects(Some(1))
        .connect(url)
        .await
        .map_err(|e| JoinError::from_connect(shown_host, &e))?;
    Ok((client, remember))
}

/// The joining side of one exchange, once the key is agreed.
struct Guest {
    client: async_nats::Client,
    channel: Channel,
    /// The subject of the rest of the exchange.
    session: String,
    code: Code,
    host: String,
}

impl Guest {
    /// Knocks at the invite with this side's half of the key agreement and finishes it with
    /// the host's.
    async fn meet(client: async_nats::Client, code: &Code, host: &str) -> anyhow::Result<Guest> {
        let (pake, ours) = Pake::start(Side::Joiner, code);
        let session_token = new_session();
        let hello = Hello {
            v: JOIN_VERSION,
            pake: b64(&ours),
            session: session_token.clone(),
        };
        let subject = invite_subject(code.nameplate);
        let answer = request(&client, subject, serde_json::to_vec(&hello)?, host, code).await?;
        let reply: HelloReply =
            serde_json::from_slice(&answer).map_err(|_| JoinError::NotSkypipe {
                host: host.to_string(),
            })?;
        if let Some(error) = reply.error {
            return Err(JoinError::Refused {
                host: host.to_string(),
                error,
            }
            .into());
        }
        if reply.v != JOIN_VERSION {
            return Err(JoinError::Version {
                host: host.to_string(),
                theirs: reply.v,
                ours: JOIN_VERSION,
                code: code.to_string(),
            }
            .into());
        }
        let channel = unb64(&reply.pake)
            .and_then(|theirs| pake.finish(&theirs))
            .map_err(|why| JoinError::Malformed {
                host: host.to_string(),
                why,
            })?;
        Ok(Guest {
            client,
            channel,
            session: session_subject(code.nameplate, &session_token),
            code: code.clone(),
            host: host.to_string(),
        })
    }

    /// Says who this machine is, with a key of its own whose seed stays here, and opens what
    /// the host sends back: what it needs to reach and trust the server.
    async fn introduce(&self) -> anyhow::Result<(Welcome, zeroize::Zeroizing<String>)> {
        let pair = nkeys::KeyPair::new_user();
        let seed = zeroize::Zeroizing::new(pair.seed().context("cannot make this machine's key")?);
        let me = Joiner {
            name: host_name().unwrap_or_else(|| "machine".into()),
            nkey: pair.public_key(),
            version: env!("CARGO_PKG_VERSION").into(),
        };
        let sealed = self
            .channel
            .seal(Side::Joiner, 0, &me)
            .map_err(|e| anyhow!("{e}"))?;
        let body = serde_json::to_vec(&Envelope {
            sealed: Some(sealed),
            error: None,
        })?;
        let answer = request(
            &self.client,
            self.session.clone(),
            body,
            &self.host,
            &self.code,
        )
        .await?;
        let envelope: Envelope = serde_json::from_slice(&answer).unwrap_or_default();
        let wrong_code = || JoinError::WrongCode {
            host: self.host.clone(),
            code: self.code.to_string(),
        };
        if envelope.error.is_some() {
            return Err(wrong_code().into());
        }
        match envelope
            .sealed
            .as_deref()
            .map(|s| self.channel.open(Side::Host, 0, s))
        {
            Some(Ok(welcome)) => Ok((welcome, seed)),
            Some(Err(Some(why))) => Err(JoinError::Malformed {
                host: self.host.clone(),
                why,
            }
            .into()),
            _ => Err(wrong_code().into()),
        }
    }

    /// Tells the host whether this machine got in as itself (sealed; the host keeps it only
    /// when it did).
    async fn tell(&self, ok: bool, error: Option<String>) {
        let Ok(sealed) = self.channel.seal(Side::Joiner, 1, &Outcome { ok, error }) else {
            return;
        };
        let body = serde_json::to_vec(&Envelope {
            sealed: Some(sealed),
            error: None,
        })
        .unwrap_or_default();
        let asked = self.client.request(self.session.clone(), body.into());
        let _ = tokio::time::timeout(STEP_WAIT, asked).await;
    }
}

/// Where a join saves: the natscli's config directory and skypipe's.
pub(crate) struct Dirs<'a> {
    pub(crate) nats: &'a Path,
    pub(crate) skypipe: &'a Path,
}

/// The server joined, as this machine names it: the context saved for it, the host as the
/// user knows it, and the URL to try first (the one the user gave).
pub(crate) struct Place<'a> {
    pub(crate) ctx_name: &'a str,
    pub(crate) shown_host: &'a str,
    pub(crate) first_url: Option<&'a str>,
}

/// The last step of joining, here and for `skypipe server deploy`: saves the CA, the seed
/// and the secret under `joined/CTX` in skypipe's config directory, logs in (trying
/// `first_url` first), runs the checks of `skypipe check` and saves the context, selected for
/// skypipe. When anything fails, what it wrote is removed again.
pub(crate) async fn settle(
    base: &Conn,
    welcome: &Welcome,
    seed: &str,
    place: &Place<'_>,
    dirs: &Dirs<'_>,
) -> anyhow::Result<()> {
    let dir = dirs.skypipe.join("joined").join(place.ctx_name);
    let saved = Saved::new(&dir);
    let result = async {
        saved.write("ca.pem", &welcome.ca_pem)?;
        saved.write("user.nk", &format!("{seed}\n"))?;
        if let Some(secret) = &welcome.secret {
            saved.write("secret", &format!("{secret}\n"))?;
        }
        let conn = joined_conn(base, welcome, place, &dir)?;
        log_in(&conn, place.shown_host).await?;
        let replicas = setup::checked(&conn).await?;
        setup::save_context(
            place.ctx_name,
            &conn,
            replicas,
            dirs.nats,
            dirs.skypipe,
            false,
        )
    }
    .await;
    if result.is_err() {
        saved.remove();
    }
    result
}

/// How this machine reaches the server it joined, with the files saved in `dir`: the URL the
/// user gave first, then the others the host named.
fn joined_conn(
    base: &Conn,
    welcome: &Welcome,
    place: &Place<'_>,
    dir: &Path,
) -> anyhow::Result<Conn> {
    let first_url = place.first_url;
    let mut urls: Vec<String> = first_url.map(str::to_string).into_iter().collect();
    urls.extend(
        welcome
            .urls
            .iter()
            .filter(|u| Some(u.as_str()) != first_url)
            .cloned(),
    );
    Ok(Conn {
        urls,
        source: Source::Context(place.ctx_name.to_string()),
        user: None,
        password: None,
        token: None,
        creds: None,
        nkey: Some(dir.join("user.nk")),
        cert: None,
        key: None,
        ca: Some(dir.join("ca.pem")),
        tls_first: false,
        inbox_prefix: Some(welcome.inbox_prefix.clone()),
        js_domain: None,
        js_api_prefix: None,
        layout: Layout::new(&welcome.prefix)?,
        local_nkey: None,
        secret_file: welcome.secret.as_ref().map(|_| dir.join("secret")),
        ..base.clone()
    })
}

/// Logs in, again and again for a while: the host's server reads its new list of users a
/// moment after it answered.
async fn log_in(conn: &Conn, shown_host: &str) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        match crate::client::session::connect(conn).await {
            Ok(_) => return Ok(()),
            Err(e) if start.elapsed() < LOGIN_WAIT => {
                tracing::debug!("not in yet: {e:#}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e.context(format!("cannot log in to {shown_host}"))),
        }
    }
}

/// The files a join writes, removed again when it fails.
struct Saved {
    dir: PathBuf,
}

impl Saved {
    fn new(dir: &Path) -> Saved {
        Saved {
            dir: dir.to_path_buf(),
        }
    }

    fn write(&self, name: &str, text: &str) -> anyhow::Result<()> {
        crate::paths::private_dir(&self.dir)?;
        let path = self.dir.join(name);
        skypipe_nats::write_private(&path, text)
            .with_context(|| format!("cannot write {}", path.display()))
    }

    fn remove(&self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Before any TLS: whether a NATS server that wants TLS answers at `at` (`host:port`).
fn probe(at: &str, host: &str) -> Result<(), JoinError> {
    use std::io::BufRead as _;
    use std::net::ToSocketAddrs as _;
    let nothing = |why: String| JoinError::NothingAnswers {
        host: host.to_string(),
        why,
    };
    let addrs: Vec<_> = at
        .to_socket_addrs()
        .map_err(|e| nothing(e.to_string()))?
        .collect();
    let mut last = String::from("no address");
    for addr in addrs {
        match std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
            Ok(stream) => {
                stream.set_read_timeout(Some(Duration::from_secs(5))).ok();
                let mut line = String::new();
                let _ = std::io::BufReader::new(stream).read_line(&mut line);
                return info_wants_tls(&line, host);
            }
            Err(e) => last = e.to_string(),
        }
    }
    Err(nothing(last))
}

/// Whether the first line a server sent is a NATS server's INFO that requires TLS.
fn info_wants_tls(line: &str, host: &str) -> Result<(), JoinError> {
    let host = host.to_string();
    let Some(info) = line.strip_prefix("INFO") else {
        return Err(JoinError::NotNats { host });
    };
    let tls = serde_json::from_str::<serde_json::Value>(info.trim())
        .ok()
        .and_then(|v| v.get("tls_required")?.as_bool())
        .unwrap_or(false);
    if tls {
        Ok(())
    } else {
        Err(JoinError::NoTls { host })
    }
}

async fn request(
    client: &async_nats::Client,
    subject: String,
    body: Vec<u8>,
    host: &str,
    code: &Code,
) -> Result<bytes::Bytes, JoinError> {
    match tokio::time::timeout(STEP_WAIT, client.request(subject, body.into())).await {
        Ok(Ok(msg)) => Ok(msg.payload),
        Ok(Err(e)) => Err(JoinError::from_request(host, &code.to_string(), &e)),
        Err(_) => Err(JoinError::Quiet {
            host: host.to_string(),
            wait: humantime::format_duration(STEP_WAIT).to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(
            target_url("box.example.org").ok(),
            Some((
                "tls://box.example.org:4222".into(),
                "box.example.org".into()
            ))
        );
        assert_eq!(
            target_url("127.0.0.2:4333").map(|t| t.0).ok().as_deref(),
            Some("tls://127.0.0.2:4333")
        );
        assert_eq!(
            target_url("::1").map(|t| t.0).ok().as_deref(),
            Some("tls://[::1]:4222")
        );
        assert_eq!(
            target_url("wss://box:443").map(|t| t.0).ok().as_deref(),
            Some("wss://box:443")
        );
        assert!(target_url("nats://box:4222").is_err());
        assert_eq!(context_name("127.0.0.2:4333"), "skypipe-127.0.0.2-4333");
    }

    #[test]
    fn only_a_nats_server_that_wants_tls_is_a_public_server() {
        assert_eq!(
            info_wants_tls("INFO {\"tls_required\":true}\r\n", "box"),
            Ok(())
        );
        assert_eq!(
            info_wants_tls("INFO {\"tls_required\":false}\r\n", "box"),
            Err(JoinError::NoTls { host: "box".into() })
        );
        assert_eq!(
            info_wants_tls("SSH-2.0-OpenSSH_9.6\r\n", "box"),
            Err(JoinError::NotNats { host: "box".into() })
        );
    }
}
