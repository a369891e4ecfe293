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

use crate::admin::setup;
use crate::admin::tls::host_name;
use crate::config::cli::JoinArgs;
use crate::config::{Conn, Source};
use crate::error::{code, Failure};
use crate::protocol::join::{
    b64, invite_subject, new_session, session_subject, sha256_hex, unb64, Code, Envelope, Hello,
    HelloReply, Joiner, Outcome, Pake, Side, Welcome, JOIN_INBOX, JOIN_VERSION,
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
    let nats_dir = crate::paths::nats_config_dir(env)
        .ok_or_else(|| anyhow!("cannot tell where contexts go: set HOME or XDG_CONFIG_HOME"))?;
    let skypipe_dir = crate::paths::skypipe_config_dir(env)
        .ok_or_else(|| anyhow!("cannot tell where skypipe's config goes: set HOME"))?;

    if url.starts_with("tls://") {
        let at = url.trim_start_matches("tls://").to_string();
        let host = shown_host.clone();
        tokio::task::spawn_blocking(move || probe(&at, &host))
            .await
            .map_err(|e| anyhow!("probe failed: {e}"))??;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let remember = Arc::new(Remember {
        shown: Mutex::new(None),
        provider: provider.clone(),
    });
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| anyhow!("TLS: {e}"))?
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
        .connect(url.as_str())
        .await
        .map_err(|e| connect_error(&shown_host, &e))?;

    // The key, from the code.
    let (pake, ours) = Pake::start(Side::Joiner, &code);
    let session_token = new_session();
    let hello = Hello {
        v: JOIN_VERSION,
        pake: b64(&ours),
        session: session_token.clone(),
    };
    let answer = request(
        &client,
        invite_subject(code.nameplate),
        serde_json::to_vec(&hello)?,
        &shown_host,
        &code,
    )
    .await?;
    let reply: HelloReply =
        serde_json::from_slice(&answer).map_err(|_| not_skypipe(&shown_host))?;
    if let Some(error) = reply.error {
        return Err(anyhow!("{shown_host} refused: {error}"));
    }
    if reply.v != JOIN_VERSION {
        return Err(anyhow!(
            "{shown_host} speaks join version {}, this skypipe {JOIN_VERSION}: use the same \
             skypipe version on both machines (the code {code} is dead now)",
            reply.v
        ));
    }
    let channel = unb64(&reply.pake)
        .and_then(|theirs| pake.finish(&theirs))
        .map_err(|e| anyhow!("{shown_host}: {e}"))?;
    let session = session_subject(code.nameplate, &session_token);

    // Who this machine is: a key of its own, whose seed stays here.
    let pair = nkeys::KeyPair::new_user();
    let seed = zeroize::Zeroizing::new(
        pair.seed()
            .map_err(|e| anyhow!("cannot make this machine's key: {e}"))?,
    );
    let me = Joiner {
        name: host_name().unwrap_or_else(|| "machine".into()),
        nkey: pair.public_key(),
        version: env!("CARGO_PKG_VERSION").into(),
    };
    let sealed = channel
        .seal(Side::Joiner, 0, &me)
        .map_err(|e| anyhow!("{e}"))?;
    let answer = request(
        &client,
        session.clone(),
        serde_json::to_vec(&Envelope {
            sealed: Some(sealed),
            error: None,
        })?,
        &shown_host,
        &code,
    )
    .await?;
    let envelope: Envelope = serde_json::from_slice(&answer).unwrap_or_default();
    let wrong_code = || {
        anyhow!(
            "the code {code} is wrong (it is dead now): ask for a new one with `skypipe invite` \
             on {shown_host}; nothing was saved"
        )
    };
    if envelope.error.is_some() {
        return Err(wrong_code());
    }
    let welcome: Welcome = match envelope
        .sealed
        .as_deref()
        .map(|s| channel.open(Side::Host, 0, s))
    {
        Some(Ok(w)) => w,
        Some(Err(Some(why))) => return Err(anyhow!("{shown_host}: {why}")),
        _ => return Err(wrong_code()),
    };
    let tell = |outcome: Outcome| {
        let client = client.clone();
        let session = session.clone();
        let sealed = channel.seal(Side::Joiner, 1, &outcome);
        async move {
            if let Ok(sealed) = sealed {
                let body = serde_json::to_vec(&Envelope {
                    sealed: Some(sealed),
                    error: None,
                })
                .unwrap_or_default();
                let _ = tokio::time::timeout(STEP_WAIT, client.request(session, body.into())).await;
            }
        }
    };

    // The certificate shown must be the host's.
    let shown = remember
        .shown
        .lock()
        .ok()
        .and_then(|s| s.clone())
        .map(|der| sha256_hex(&der));
    if shown.as_deref() != Some(welcome.cert_sha256.as_str()) {
        tell(Outcome {
            ok: false,
            error: Some("the joining machine was shown another certificate".into()),
        })
        .await;
        return Err(anyhow!(
            "the server at {shown_host} showed a certificate that is not the one the host \
             serves: someone is in the middle (or the address leads elsewhere); nothing was \
             saved"
        ));
    }

    // Save what it needs, try it, and keep it only when it works.
    let result = settle(
        base,
        &welcome,
        &seed,
        Some(&url),
        &ctx_name,
        &shown_host,
        &nats_dir,
        &skypipe_dir,
    )
    .await;
    match result {
        Ok(_) => {
            tell(Outcome {
                ok: true,
                error: None,
            })
            .await;
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
            tell(Outcome {
                ok: false,
                error: Some(format!("{e:#}")),
            })
            .await;
            Err(e.context("nothing was saved"))
        }
    }
}

/// The last step of joining, here and for `skypipe server deploy`: saves the CA, the seed
/// and the secret under `joined/CTX` in skypipe's config directory, logs in (trying
/// `first_url` first), runs the checks of `skypipe check` and saves the context, selected for
/// skypipe. When anything fails, what it wrote is removed again.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn settle(
    base: &Conn,
    welcome: &Welcome,
    seed: &str,
    first_url: Option<&str>,
    ctx_name: &str,
    shown_host: &str,
    nats_dir: &Path,
    skypipe_dir: &Path,
) -> anyhow::Result<()> {
    let dir = skypipe_dir.join("joined").join(ctx_name);
    let saved = Saved::new(&dir);
    let result = async {
        saved.write("ca.pem", &welcome.ca_pem)?;
        saved.write("user.nk", &format!("{seed}\n"))?;
        if let Some(secret) = &welcome.secret {
            saved.write("secret", &format!("{secret}\n"))?;
        }
        let mut urls: Vec<String> = first_url.map(str::to_string).into_iter().collect();
        urls.extend(
            welcome
                .urls
                .iter()
                .filter(|u| Some(u.as_str()) != first_url)
                .cloned(),
        );
        let conn = Conn {
            urls,
            source: Source::Context(ctx_name.to_string()),
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
            layout: Layout::new(&welcome.prefix).map_err(|e| anyhow!("{e}"))?,
            local_nkey: None,
            secret_file: welcome.secret.as_ref().map(|_| dir.join("secret")),
            ..base.clone()
        };
        // The host's server reads its new list of users a moment after it answered.
        let start = Instant::now();
        loop {
            match crate::client::session::connect(&conn).await {
                Ok(_) => break,
                Err(e) if start.elapsed() < LOGIN_WAIT => {
                    tracing::debug!("not in yet: {e:#}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => return Err(e.context(format!("cannot log in to {shown_host}"))),
            }
        }
        let replicas = setup::checked(&conn).await?;
        setup::save_context(ctx_name, &conn, replicas, nats_dir, skypipe_dir, false)
    }
    .await;
    if result.is_err() {
        saved.remove();
    }
    result
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
fn probe(at: &str, host: &str) -> anyhow::Result<()> {
    use std::io::BufRead as _;
    use std::net::ToSocketAddrs as _;
    let nothing = |why: String| {
        anyhow!(
            "nothing answers at {host} ({why}): is `skypipe server start --public` running \
             there, and the port open?"
        )
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
                let Some(info) = line.strip_prefix("INFO") else {
                    return Err(anyhow!(
                        "{host} is not a skypipe server: it does not answer as a NATS server"
                    ));
                };
                let tls = serde_json::from_str::<serde_json::Value>(info.trim())
                    .ok()
                    .and_then(|v| v.get("tls_required")?.as_bool())
                    .unwrap_or(false);
                if !tls {
                    return Err(anyhow!(
                        "{host} is not a skypipe public server: it is a NATS server without TLS"
                    ));
                }
                return Ok(());
            }
            Err(e) => last = e.to_string(),
        }
    }
    Err(nothing(last))
}

fn not_skypipe(host: &str) -> anyhow::Error {
    anyhow!("{host} answered, but not as a skypipe server with invites")
}

fn connect_error(host: &str, e: &async_nats::ConnectError) -> anyhow::Error {
    use async_nats::ConnectErrorKind as K;
    match e.kind() {
        K::Io | K::TimedOut | K::MaxReconnects | K::Dns => anyhow!(
            "nothing answers at {host} as a skypipe server ({e}): is `skypipe server start \
             --public` running there, and the port open?"
        ),
        K::AuthorizationViolation | K::Authentication => anyhow!(
            "{host} is a NATS server that lets nobody in without a login: not a skypipe server \
             with invites"
        ),
        K::Tls | K::ServerParse => {
            anyhow!("{host} is not a skypipe public server: it does not speak NATS over TLS ({e})")
        }
    }
}

async fn request(
    client: &async_nats::Client,
    subject: String,
    body: Vec<u8>,
    host: &str,
    code: &Code,
) -> anyhow::Result<bytes::Bytes> {
    use async_nats::RequestErrorKind as K;
    match tokio::time::timeout(STEP_WAIT, client.request(subject, body.into())).await {
        Ok(Ok(msg)) => Ok(msg.payload),
        Ok(Err(e)) if e.kind() == K::NoResponders => Err(anyhow!(
            "no invite waits at {host} for the code {code}: it expired, was used, or was \
             never made there; ask for a new one with `skypipe invite`"
        )),
        Ok(Err(e)) => Err(anyhow!("{host} did not answer the join: {e}")),
        Err(_) => Err(anyhow!(
            "{host} did not answer the join within {}",
            humantime::format_duration(STEP_WAIT)
        )),
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
}
