//! Across machines: `skypipe server start --public`, `skypipe invite` and `skypipe join`.
//! Each machine is a HOME of its own (config, data, keys); the host's public server listens
//! on 127.0.0.2, named in its certificate, so nothing passes through 127.0.0.1 by accident.

use std::io::{Read, Write};
use std::process::Stdio;
use std::sync::Arc;
use std::thread::JoinHandle;

use sha2::{Digest, Sha256};

use super::harness::*;

/// A machine whose local server is public on 127.0.0.2.
fn public_host() -> LocalHome {
    let h = LocalHome::new();
    let out = h.run(&["server", "start", "--public", "--listen", "127.0.0.2"]);
    assert_ok(&out);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.contains(&format!("127.0.0.2:{}", h.port)), "{text}");
    assert!(text.contains("TLS"), "{text}");
    h
}

/// `skypipe invite ARGS` on `host`, and the target and code of the join line it printed.
fn invite(host: &LocalHome, args: &[&str]) -> (Proc, String, String) {
    let mut all = vec!["invite"];
    all.extend_from_slice(args);
    invite_from(&mut host.cmd(&all))
}

/// Runs a `skypipe invite` command; the target and code of the join line it printed.
pub(super) fn invite_from(cmd: &mut std::process::Command) -> (Proc, String, String) {
    let mut p = Proc::spawn(cmd.stdout(Stdio::piped()).stderr(Stdio::piped()));
    p.wait_stdout_until("the join line", |b| {
        String::from_utf8_lossy(b).contains("waiting...")
    });
    let text = String::from_utf8_lossy(&p.stdout_now()).into_owned();
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("skypipe join "))
        .unwrap_or_else(|| panic!("no join line in {text:?}"))
        .to_string();
    let words: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(words.len(), 4, "{line}");
    (p, words[2].to_string(), words[3].to_string())
}

/// `skypipe invite list` on `host`: its whole text and its first machine's row.
fn first_machine_row(host: &LocalHome) -> (String, String) {
    let list = host.run(&["invite", "list"]);
    assert_ok(&list);
    let text = String::from_utf8_lossy(&list.stdout).into_owned();
    let row = text
        .lines()
        .nth(1)
        .unwrap_or_else(|| panic!("a row: {text}"))
        .to_string();
    (text, row)
}

/// A machine joined to `host`.
fn joined(host: &LocalHome) -> LocalHome {
    joined_with(host, &[])
}

/// A machine joined to `host` by `skypipe invite ARGS`.
fn joined_with(host: &LocalHome, args: &[&str]) -> LocalHome {
    let j = LocalHome::new();
    let (inv, target, code) = invite(host, args);
    assert_eq!(target, format!("127.0.0.2:{}", host.port));
    let out = j.run(&["join", &target, &code]);
    assert_ok(&out);
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(said.contains("joined 127.0.0.2"), "{said}");
    assert!(said.contains("all checks passed"), "{said}");
    let inv = inv.wait_output(HANG);
    assert_ok(&inv);
    assert!(
        String::from_utf8_lossy(&inv.stdout).contains("joined as"),
        "{}",
        String::from_utf8_lossy(&inv.stdout)
    );
    j
}

/// A stream of `len` pseudo-random bytes into `w`; its SHA-256.
fn feed(mut w: impl Write, len: u64, seed: u64) -> String {
    let mut h = Sha256::new();
    let mut left = len;
    let mut s = seed;
    while left > 0 {
        let n = left.min(1 << 20) as usize;
        let block = random_bytes(n, s);
        h.update(&block);
        if w.write_all(&block).is_err() {
            break;
        }
        s = s.wrapping_mul(6364136223846793005).wrapping_add(1);
        left -= n as u64;
    }
    format!("{:x}", h.finalize())
}

/// SHA-256 and length of everything `r` gives.
fn digest(mut r: impl Read) -> (String, u64) {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = r.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        total += n as u64;
        h.update(&buf[..n]);
    }
    (format!("{:x}", h.finalize()), total)
}

/// `len` bytes from `from` to `to` through pipe `pipe`, both ends at once; checked by
/// checksum.
pub(super) fn stream(from: &LocalHome, to: &LocalHome, pipe: &str, len: u64, seed: u64) {
    let mut recv = Proc::spawn(
        to.cmd(&["-v", "--recv", pipe])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    )
    .ready(&waiting(pipe));
    let out = recv.stdout.take().expect("stdout");
    let reader: JoinHandle<(String, u64)> = std::thread::spawn(move || digest(out));
    let mut send = Proc::spawn(
        from.cmd(&["--send", pipe])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    );
    let stdin = send.stdin.take().expect("stdin");
    let sent = feed(stdin, len, seed);
    let send = send.wait_output(HANG);
    assert_ok(&send);
    let recv = recv.wait_output(HANG);
    assert_ok(&recv);
    let (got, n) = reader.join().expect("reader");
    assert_eq!(n, len);
    assert_eq!(got, sent, "bytes out equal bytes in");
}

#[test]
fn two_machines_invite_join_and_pipe_a_gibibyte_each_way() {
    let host = public_host();
    let laptop = joined(&host);
    stream(&laptop, &host, "up", 1 << 30, 1);
    stream(&host, &laptop, "down", 1 << 30, 2);
}

#[test]
fn a_joined_machine_feeds_a_follower_wakes_a_trigger_and_listens() {
    let host = public_host();
    let laptop = joined(&host);

    // Aggregation: the host follows, the laptop sends two payloads.
    let follower = Proc::spawn(
        host.cmd(&["-v", "logs", "--follow", "--timeout", "5s"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    )
    .ready(&following("logs"));
    let a = numbered("a", 2000);
    let b = numbered("b", 2000);
    assert_ok(&laptop.send(&["logs"], &a));
    assert_ok(&laptop.send(&["logs"], &b));
    let got = follower.wait_output(HANG);
    assert_eq!(got.status.code(), Some(124), "{}", stderr_of(&got));
    let mut want = a.clone();
    want.extend_from_slice(&b);
    assert_eq!(sha(&got.stdout), sha(&want));

    // A trigger from the host wakes a script blocked on the laptop.
    let waiter = Proc::spawn(
        laptop
            .cmd(&["-v", "--recv", "go"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    )
    .ready(&waiting("go"));
    assert_ok(&host.send(&["go"], b"\n"));
    let woke = waiter.wait_output(HANG);
    assert_ok(&woke);
    assert_eq!(woke.stdout, b"\n");

    // The laptop listens while the host sends; a taker on the host still gets it all.
    let listener = Proc::spawn(
        laptop
            .cmd(&["-v", "tap", "--listen"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    )
    .ready(&listening("tap"));
    let data = random_bytes(3_000_000, 9);
    assert_ok(&host.send(&["tap"], &data));
    let heard = listener.wait_output(HANG);
    assert_ok(&heard);
    assert_eq!(sha(&heard.stdout), sha(&data));
    let taken = host.run(&["--recv", "tap"]);
    assert_ok(&taken);
    assert_eq!(sha(&taken.stdout), sha(&data));

    // Its prefix's permissions are enough for the dashboard too.
    assert_ok(&laptop.send(&["shown"], b"x\n"));
    let table = laptop.run(&["monitor", "--once"]);
    assert_ok(&table);
    assert!(String::from_utf8_lossy(&table.stdout).contains("shown"));
    // And for looking at pipes and clearing them.
    let listed = laptop.run(&["ls"]);
    assert_ok(&listed);
    assert!(String::from_utf8_lossy(&listed.stdout).contains("shown"));
    let peeked = laptop.run(&["peek", "shown"]);
    assert_ok(&peeked);
    assert_eq!(peeked.stdout, b"x\n");
    assert_ok(&laptop.run(&["rm", "--yes", "shown"]));
    let after = host.run(&["peek", "shown"]);
    assert_eq!(after.status.code(), Some(1), "{}", stderr_of(&after));
}

#[test]
fn a_public_server_with_a_certificate_of_ones_own() {
    let h = LocalHome::new();
    let ca_key = rcgen::KeyPair::generate().expect("CA key");
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).expect("CA");
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.2".to_string()])
        .expect("params")
        .signed_by(&key, &issuer)
        .expect("cert");
    let files = [
        ("ca.pem", ca_cert.pem()),
        ("cert.pem", cert.pem()),
        ("key.pem", key.serialize_pem()),
    ];
    for (name, text) in &files {
        std::fs::write(h.path(name), text).expect("write");
    }
    let p = |n: &str| h.path(n).display().to_string();
    let out = h.run(&[
        "server",
        "start",
        "--public",
        "--listen",
        "127.0.0.2",
        "--tls-cert",
        &p("cert.pem"),
        "--tls-key",
        &p("key.pem"),
        "--tls-ca",
        &p("ca.pem"),
    ]);
    assert_ok(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("cert.pem"));
    assert!(!h.data_dir().join("tls").exists(), "no CA of skypipe's own");
    let j = LocalHome::new();
    let (inv, target, code) = invite(&h, &[]);
    assert_ok(&j.run(&["join", &target, &code]));
    assert_ok(&inv.wait_output(HANG));
    let saved = std::fs::read_dir(j.home().join(".config/skypipe/joined"))
        .expect("joined")
        .next()
        .expect("one")
        .expect("entry")
        .path()
        .join("ca.pem");
    assert_eq!(std::fs::read_to_string(saved).expect("ca"), files[0].1);
    let data = random_bytes(2_000_000, 8);
    assert_ok(&h.send(&["own"], &data));
    let got = j.run(&["--recv", "own"]);
    assert_ok(&got);
    assert_eq!(sha(&got.stdout), sha(&data));
}

#[test]
fn invite_list_shows_the_machine_and_revoke_refuses_it_at_once() {
    let host = public_host();
    let laptop = joined(&host);
    let follower = Proc::spawn(
        laptop
            .cmd(&["-v", "logs", "--follow"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    )
    .ready(&following("logs"));

    let (text, row) = first_machine_row(&host);
    assert!(row.contains("skypipe"), "{text}");
    assert!(row.contains("connected now"), "{text}");
    let json = host.run(&["invite", "list", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).expect("json");
    let name = v[0]["name"].as_str().expect("a name").to_string();
    assert_eq!(v[0]["connected"], true);

    let revoked = host.run(&["invite", "revoke", &name]);
    assert_ok(&revoked);
    // Its connection is dropped and not let back in: the follower ends with one line.
    let ended = follower.wait_output(HANG);
    assert_eq!(ended.status.code(), Some(1), "{}", stderr_of(&ended));
    assert!(
        stderr_of(&ended).contains("revoked"),
        "{}",
        stderr_of(&ended)
    );
    // A new command is refused.
    let refused = laptop.send(&["logs"], b"after\n");
    assert_eq!(refused.status.code(), Some(1), "{}", stderr_of(&refused));
    assert!(
        stderr_of(&refused).contains("authorization violation"),
        "{}",
        stderr_of(&refused)
    );
    let list = host.run(&["invite", "list"]);
    assert!(String::from_utf8_lossy(&list.stdout).contains("no machine has joined"));
    // Nothing it tried to send is in the pipe.
    nothing_stored(&host);
}

/// The joining machine saved nothing: no context, no key.
fn saved_nothing(j: &LocalHome) {
    assert!(!j.home().join(".config/nats/context").exists());
    assert!(
        !j.home().join(".config/skypipe/joined").exists() || {
            std::fs::read_dir(j.home().join(".config/skypipe/joined"))
                .expect("dir")
                .next()
                .is_none()
        }
    );
    assert!(!j.home().join(".config/skypipe/config.json").exists());
}

#[test]
fn a_wrong_code_fails_on_both_sides_and_kills_the_code() {
    let host = public_host();
    let j = LocalHome::new();
    let (inv, target, code) = invite(&host, &[]);
    let (number, words) = code.split_once('-').expect("N-w-w");
    let wrong = if words == "acorn-acorn" {
        format!("{number}-apple-apple")
    } else {
        format!("{number}-acorn-acorn")
    };
    let out = j.run(&["join", &target, &wrong]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    let err = stderr_of(&out);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("is wrong"), "{err}");
    saved_nothing(&j);
    let inv = inv.wait_output(HANG);
    assert_eq!(inv.status.code(), Some(1), "{}", stderr_of(&inv));
    assert!(
        stderr_of(&inv).contains("wrong code"),
        "{}",
        stderr_of(&inv)
    );
    // The right code is dead now.
    let out = j.run(&["join", &target, &code]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    assert!(
        stderr_of(&out).contains("no invite waits"),
        "{}",
        stderr_of(&out)
    );
    saved_nothing(&j);
    assert!(
        String::from_utf8_lossy(&host.run(&["invite", "list"]).stdout)
            .contains("no machine has joined")
    );
}

#[test]
fn an_expired_code_and_a_used_code_are_refused() {
    let host = public_host();
    let j = LocalHome::new();
    let (inv, target, code) = invite(&host, &["--expires", "1s"]);
    let inv = inv.wait_output(HANG);
    assert_eq!(inv.status.code(), Some(124), "{}", stderr_of(&inv));
    assert!(stderr_of(&inv).contains("expired"), "{}", stderr_of(&inv));
    let out = j.run(&["join", &target, &code]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    assert!(
        stderr_of(&out).contains("no invite waits"),
        "{}",
        stderr_of(&out)
    );
    saved_nothing(&j);

    // Used once: a second machine cannot use it again.
    let (inv, target, code) = invite(&host, &[]);
    let first = LocalHome::new();
    assert_ok(&first.run(&["join", &target, &code]));
    assert_ok(&inv.wait_output(HANG));
    let second = LocalHome::new();
    let out = second.run(&["join", &target, &code]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    assert!(
        stderr_of(&out).contains("no invite waits"),
        "{}",
        stderr_of(&out)
    );
    saved_nothing(&second);
}

#[test]
fn joining_where_there_is_no_public_skypipe_server_says_so() {
    let j = LocalHome::new();
    // Nothing listens.
    let port = skypipe_nats::free_port().expect("port");
    let out = j.run(&["join", &format!("127.0.0.2:{port}"), "7-acorn-apple"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    assert!(
        stderr_of(&out).contains("nothing answers"),
        "{}",
        stderr_of(&out)
    );
    saved_nothing(&j);
    // A NATS server that is not skypipe's public one (no TLS).
    let b = Bench::new();
    let target = b.url().trim_start_matches("nats://").to_string();
    let out = j.run(&["join", &target, "7-acorn-apple"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    assert!(
        stderr_of(&out).contains("not a skypipe"),
        "{}",
        stderr_of(&out)
    );
    assert_eq!(stderr_of(&out).trim_end().lines().count(), 1);
    saved_nothing(&j);
    // A malformed code is a usage error.
    let out = j.run(&["join", &target, "seven-acorn"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr_of(&out));
}

/// Waits until the server reports a permission violation about `of`.
async fn violation(rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>, of: &str) -> String {
    loop {
        let said = tokio::time::timeout(std::time::Duration::from_secs(10), rx.recv())
            .await
            .expect("the server reports a violation")
            .expect("an event");
        if said.contains("Permissions Violation") && said.contains(of) {
            return said;
        }
    }
}

#[test]
fn an_unauthenticated_client_reaches_no_pipe_and_no_jetstream_api() {
    let host = public_host();
    let ca = host.data_dir().join("tls/ca.pem");
    let url = format!("tls://127.0.0.2:{}", host.port);
    let stranger = LocalHome::new();
    let ca_s = ca.display().to_string();
    let out = stranger.send(&["-s", &url, "--tlsca", &ca_s, "p"], b"intruder\n");
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    assert!(stderr_of(&out).contains("ermission"), "{}", stderr_of(&out));

    // Straight at the server: a publish to a pipe subject is refused, and so is the
    // JetStream API.
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let client = async_nats::ConnectOptions::new()
            .add_root_certificates(ca.clone())
            .require_tls(true)
            .event_callback(move |e| {
                let tx = tx.clone();
                async move {
                    let _ = tx.send(e.to_string());
                }
            })
            .connect(&url)
            .await
            .expect("a stranger gets as far as the rendezvous");
        client
            .publish("skypipe.q.p", "x".into())
            .await
            .expect("publish");
        client.flush().await.expect("flush");
        violation(&mut rx, "skypipe.q.p").await;
        let api = client
            .request("$JS.API.INFO", "".into())
            .await
            .map(|m| String::from_utf8_lossy(&m.payload).into_owned());
        assert!(api.is_err(), "the JetStream API answered: {api:?}");
        let sub = client.subscribe("skypipe.>").await.expect("subscribe call");
        drop(sub);
        client.flush().await.ok();
        violation(&mut rx, "skypipe.>").await;
    });
    nothing_stored(&host);
}

/// No payload waits on the host.
fn nothing_stored(host: &LocalHome) {
    let status = host.run(&["server", "status"]);
    let text = String::from_utf8_lossy(&status.stdout).into_owned();
    assert!(
        text.contains("0 payloads waiting") || text.contains("pipes:    none yet"),
        "{text}"
    );
}

#[test]
fn with_secret_the_host_stores_sealed_and_the_joined_machine_opens() {
    let host = public_host();
    let j = LocalHome::new();
    let (inv, target, code) = invite(&host, &["--with-secret", "--as", "desk"]);
    assert_ok(&j.run(&["join", &target, &code]));
    let inv = inv.wait_output(HANG);
    assert_ok(&inv);
    let said = String::from_utf8_lossy(&inv.stdout).into_owned();
    assert!(said.contains("end-to-end secret"), "{said}");
    assert!(said.contains("joined as \"desk\""), "{said}");
    let marker = b"PLAINTEXT-MARKER-".repeat(20_000);
    assert_ok(&host.send(&["s"], &marker));
    // In the host's store the payload is sealed: the marker is nowhere.
    let store = host.data_dir().join("jetstream");
    let mut files = vec![store];
    let mut seen = 0;
    while let Some(p) = files.pop() {
        if p.is_dir() {
            files.extend(
                std::fs::read_dir(&p)
                    .expect("dir")
                    .map(|e| e.expect("entry").path()),
            );
        } else {
            let bytes = std::fs::read(&p).expect("read");
            seen += bytes.len();
            assert!(
                !bytes.windows(17).any(|w| w == b"PLAINTEXT-MARKER-"),
                "plaintext in {}",
                p.display()
            );
        }
    }
    assert!(
        seen > marker.len() / 2,
        "the payload is stored ({seen} bytes)"
    );
    let got = j.run(&["--recv", "s"]);
    assert_ok(&got);
    assert_eq!(sha(&got.stdout), sha(&marker));
}

/// Someone in the middle: a proxy on 127.0.0.3 that relays the NATS greeting but ends the
/// client's TLS with a certificate of its own and talks on to the real server.
struct Middle {
    port: u16,
    _rt: tokio::runtime::Runtime,
}

#[derive(Debug)]
struct AnyCert(Arc<tokio_rustls::rustls::crypto::CryptoProvider>);

impl tokio_rustls::rustls::client::danger::ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &tokio_rustls::rustls::pki_types::CertificateDer<'_>,
        _: &[tokio_rustls::rustls::pki_types::CertificateDer<'_>],
        _: &tokio_rustls::rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: tokio_rustls::rustls::pki_types::UnixTime,
    ) -> Result<tokio_rustls::rustls::client::danger::ServerCertVerified, tokio_rustls::rustls::Error>
    {
        Ok(tokio_rustls::rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &tokio_rustls::rustls::pki_types::CertificateDer<'_>,
        d: &tokio_rustls::rustls::DigitallySignedStruct,
    ) -> Result<
        tokio_rustls::rustls::client::danger::HandshakeSignatureValid,
        tokio_rustls::rustls::Error,
    > {
        tokio_rustls::rustls::crypto::verify_tls12_signature(
            m,
            c,
            d,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &tokio_rustls::rustls::pki_types::CertificateDer<'_>,
        d: &tokio_rustls::rustls::DigitallySignedStruct,
    ) -> Result<
        tokio_rustls::rustls::client::danger::HandshakeSignatureValid,
        tokio_rustls::rustls::Error,
    > {
        tokio_rustls::rustls::crypto::verify_tls13_signature(
            m,
            c,
            d,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<tokio_rustls::rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

impl Middle {
    fn start(upstream: std::net::SocketAddr) -> Middle {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
        use tokio_rustls::rustls;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["127.0.0.3".to_string(), "127.0.0.2".into()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        let server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .expect("server config");
        let client = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
            .with_no_client_auth();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.3:0"))
            .expect("bind 127.0.0.3");
        let port = listener.local_addr().expect("addr").port();
        rt.spawn(async move {
            while let Ok((down, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let connector = connector.clone();
                tokio::spawn(async move {
                    let Ok(up) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    let mut up = tokio::io::BufReader::new(up);
                    let mut info = String::new();
                    if up.read_line(&mut info).await.is_err() {
                        return;
                    }
                    let mut down = down;
                    if down.write_all(info.as_bytes()).await.is_err() {
                        return;
                    }
                    let Ok(mut down) = acceptor.accept(down).await else {
                        return;
                    };
                    let name = rustls::pki_types::ServerName::try_from("127.0.0.2")
                        .expect("name")
                        .to_owned();
                    let Ok(mut up) = connector.connect(name, up.into_inner()).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                });
            }
        });
        Middle { port, _rt: rt }
    }
}

#[test]
fn a_man_in_the_middle_with_another_certificate_is_caught_and_nothing_is_saved() {
    let host = public_host();
    let middle = Middle::start(format!("127.0.0.2:{}", host.port).parse().expect("addr"));
    let j = LocalHome::new();
    let (inv, _, code) = invite(&host, &[]);
    let out = j.run(&["join", &format!("127.0.0.3:{}", middle.port), &code]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    let err = stderr_of(&out);
    assert!(err.contains("in the middle"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    saved_nothing(&j);
    let inv = inv.wait_output(HANG);
    assert_eq!(inv.status.code(), Some(1), "{}", stderr_of(&inv));
    assert!(
        String::from_utf8_lossy(&host.run(&["invite", "list"]).stdout)
            .contains("no machine has joined")
    );
}

#[test]
fn invite_needs_a_public_server() {
    let h = LocalHome::new();
    let out = h.run(&["invite"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    assert!(
        stderr_of(&out).contains("server start --public"),
        "{}",
        stderr_of(&out)
    );
}

#[test]
fn a_machine_joins_and_pipes_through_the_websocket_listener() {
    let h = LocalHome::new();
    // A port free on 127.0.0.2 when asked may be taken by another test's server before this
    // one binds it: another port then, a few times (the race is the test's, not skypipe's).
    let mut tries = 0;
    let ws = loop {
        let ws = std::net::TcpListener::bind("127.0.0.2:0")
            .and_then(|l| l.local_addr())
            .expect("a free port on 127.0.0.2")
            .port();
        let out = h.run(&[
            "server",
            "start",
            "--public",
            "--listen",
            "127.0.0.2",
            "--websocket",
            &ws.to_string(),
        ]);
        tries += 1;
        if tries < 3 && !out.status.success() && stderr_of(&out).contains("address already in use")
        {
            continue;
        }
        assert_ok(&out);
        break ws;
    };
    let j = LocalHome::new();
    let (inv, _, code) = invite(&h, &[]);
    let out = j.run(&["join", &format!("wss://127.0.0.2:{ws}"), &code]);
    assert_ok(&out);
    assert_ok(&inv.wait_output(HANG));
    let ctx = std::fs::read_dir(j.home().join(".config/nats/context"))
        .expect("a context")
        .next()
        .expect("one")
        .expect("entry")
        .path();
    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(ctx).expect("read")).expect("json");
    assert!(
        saved["url"]
            .as_str()
            .is_some_and(|u| u.starts_with(&format!("wss://127.0.0.2:{ws}"))),
        "{saved}"
    );
    stream(&j, &h, "ws-up", 20 << 20, 5);
    stream(&h, &j, "ws-down", 20 << 20, 6);
}

/// After `server stop`, the next pipe command on a host made public starts its server again
/// and reaches it where it listens (found: it started it on 127.0.0.2 and then looked for it
/// on 127.0.0.1, failing; only the second command worked).
#[test]
fn a_public_host_after_server_stop_starts_its_server_and_pipes_on_the_first_try() {
    let h = public_host();
    for round in ["send first", "recv first"] {
        assert_ok(&h.run(&["server", "stop"]));
        let (first, second) = match round {
            "send first" => (h.send(&["p"], b"after a stop\n"), h.run(&["recv", "p"])),
            _ => {
                let mut taker = Proc::spawn(
                    h.cmd(&["recv", "p"])
                        .stdin(Stdio::null())
                        .stdout(Stdio::piped())
                        .stderr(Stdio::piped()),
                );
                taker.wait_stderr("started its local one");
                let sent = h.send(&["p"], b"after a stop\n");
                (taker.wait_output(HANG), sent)
            }
        };
        assert_ok(&first);
        assert_ok(&second);
        let started = stderr_of(&first);
        assert!(
            started.contains(&format!("tls://127.0.0.2:{}", h.port)),
            "{round}: {started}"
        );
        let got = if round == "send first" {
            &second
        } else {
            &first
        };
        assert_eq!(got.stdout, b"after a stop\n", "{round}");
    }
}

/// A NATS client logged in as the joined machine `m`, with the key, CA and inbox prefix its
/// join saved: what a user of that machine can do by hand with any NATS client.
async fn machine_client(m: &LocalHome) -> async_nats::Client {
    let ctx_dir = m.home().join(".config/nats/context");
    let ctx = std::fs::read_dir(&ctx_dir)
        .expect("a context")
        .next()
        .expect("one")
        .expect("entry")
        .path();
    let ctx: serde_json::Value =
        serde_json::from_slice(&std::fs::read(ctx).expect("read")).expect("json");
    let field = |k: &str| {
        ctx[k]
            .as_str()
            .unwrap_or_else(|| panic!("{k} in {ctx}"))
            .to_string()
    };
    let seed = std::fs::read_to_string(field("nkey")).expect("seed");
    let url = field("url");
    let url = url.split(',').next().expect("a url").to_string();
    async_nats::ConnectOptions::with_nkey(seed.trim().to_string())
        .add_root_certificates(field("ca").into())
        .require_tls(true)
        .custom_inbox_prefix(field("inbox_prefix"))
        .connect(url)
        .await
        .expect("the joined machine logs in")
}

#[test]
fn a_joined_machine_cannot_push_its_own_bytes_into_another_prefixs_listeners() {
    use async_nats::jetstream::consumer::{push, AckPolicy, DeliverPolicy};
    let host = public_host();
    let a = joined_with(&host, &["--prefix", "teama"]);
    let b = joined_with(&host, &["--prefix", "teamb"]);
    // teamb and the owner listen on their pipe "logs".
    let b_listener = Proc::spawn(
        b.cmd(&["-v", "logs", "--listen"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    )
    .ready(&listening("logs"));
    let owner_listener = Proc::spawn(
        host.cmd(&["-v", "logs", "--listen"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    )
    .ready(&listening("logs"));
    // teama stores a one-chunk payload of its own, and has the server deliver it where the
    // others' listeners read: teamb's tickets, and the owner's live chunks.
    assert_ok(&a.send(&["x"], b"INJECTED by teama\n"));
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let client = machine_client(&a).await;
        let js = async_nats::jetstream::new(client);
        // Consumers on another prefix's streams are refused.
        let theirs = js
            .create_consumer_on_stream(
                push::Config {
                    deliver_subject: "teama.q.stolen".into(),
                    ..Default::default()
                },
                "teamb-data",
            )
            .await;
        assert!(theirs.is_err(), "a consumer on teamb's stream");
        let data = js
            .get_stream("teama-data")
            .await
            .expect("teama's data stream");
        for (n, to) in [
            "teamb.q.logs".to_string(),
            format!("skypipe.live.logs.{}", "0123456789abcdef"),
        ]
        .into_iter()
        .enumerate()
        {
            let created = data
                .create_consumer(push::Config {
                    durable_name: Some(format!("evil{n}")),
                    deliver_subject: to.clone(),
                    filter_subject: "teama.data.x.>".into(),
                    deliver_policy: DeliverPolicy::All,
                    ack_policy: AckPolicy::None,
                    ..Default::default()
                })
                .await;
            // Refused is as good as ignored; created, its delivery must be ignored.
            let Ok(mut consumer) = created else { continue };
            let start = std::time::Instant::now();
            while !consumer
                .info()
                .await
                .is_ok_and(|i| i.delivered.stream_sequence > 0)
            {
                assert!(
                    start.elapsed() < std::time::Duration::from_secs(10),
                    "the server delivers to {to}"
                );
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
    });
    // The owner and teamb each send a payload of their own: their listeners write that, and
    // nothing of teama's.
    assert_ok(&b.send(&["logs"], b"genuine teamb\n"));
    assert_ok(&host.send(&["logs"], b"genuine owner\n"));
    let heard = b_listener.wait_output(HANG);
    assert_ok(&heard);
    assert_eq!(
        String::from_utf8_lossy(&heard.stdout),
        "genuine teamb\n",
        "teamb's listener"
    );
    let heard = owner_listener.wait_output(HANG);
    assert_ok(&heard);
    assert_eq!(
        String::from_utf8_lossy(&heard.stdout),
        "genuine owner\n",
        "the owner's listener"
    );
}

#[test]
fn someone_without_a_login_can_neither_read_nor_abort_anothers_join() {
    use futures::StreamExt as _;
    let host = public_host();
    let ca = host.data_dir().join("tls/ca.pem");
    let url = format!("tls://127.0.0.2:{}", host.port);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    // A stranger watches every joiner's inbox it may, and once it knows a join's session
    // subject, answers each reply of the host there with the joiner's "I give up".
    let (seen_tx, seen_rx) = std::sync::mpsc::channel::<Vec<u8>>();
    let (client, mut all) = rt.block_on(async {
        let client = async_nats::ConnectOptions::new()
            .add_root_certificates(ca.clone())
            .require_tls(true)
            .connect(&url)
            .await
            .expect("a stranger gets as far as the rendezvous");
        let mut subs = Vec::new();
        for wide in ["_SKYPIPE_JOIN_INBOX.>", "_SKYPIPE_JOIN_INBOX.*.*"] {
            if let Ok(sub) = client.subscribe(wide).await {
                subs.push(sub);
            }
        }
        client.flush().await.ok();
        (client, futures::stream::select_all(subs))
    });
    let watching = rt.spawn(async move {
        let mut session: Option<String> = None;
        while let Some(m) = all.next().await {
            let _ = seen_tx.send(m.payload.to_vec());
            match &session {
                Some(s) => {
                    for _ in 0..3 {
                        let _ = client
                            .publish_with_reply(
                                s.clone(),
                                client.new_inbox(),
                                r#"{"error":"x"}"#.into(),
                            )
                            .await;
                    }
                    let _ = client.flush().await;
                }
                None => {
                    session = serde_json::from_slice::<serde_json::Value>(&m.payload)
                        .ok()
                        .and_then(|v| Some(v.get("session")?.as_str()?.to_string()))
                        .filter(|s| !s.is_empty());
                }
            }
        }
    });
    // The join goes through, and the machine stays in.
    let laptop = joined(&host);
    assert_ok(&laptop.send(&["after"], b"still in\n"));
    let got = host.run(&["--recv", "after"]);
    assert_ok(&got);
    assert_eq!(got.stdout, b"still in\n");
    let list = host.run(&["invite", "list", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&list.stdout).expect("json");
    assert_eq!(v.as_array().map(Vec::len), Some(1), "{v}");
    watching.abort();
    // Whatever the stranger saw told it nothing it could use: no session subject, no
    // certificate, no key.
    let seen: Vec<String> = seen_rx
        .try_iter()
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .collect();
    assert!(!seen.is_empty(), "the stranger watched the host's replies");
    for text in &seen {
        assert!(!text.contains("_SKYPIPE_JOIN."), "a session seen: {text}");
        assert!(!text.contains("CERTIFICATE"), "a certificate seen: {text}");
    }
}

#[test]
fn a_silent_connection_to_the_public_port_stalls_no_revoke_and_no_owner_command() {
    use std::io::BufRead as _;
    use std::time::{Duration, Instant};
    let host = public_host();
    let _laptop = joined(&host);
    let list = host.run(&["invite", "list", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&list.stdout).expect("json");
    let name = v[0]["name"].as_str().expect("a name").to_string();
    // How long the owner's `ls` takes with nobody silent on the port.
    let started = Instant::now();
    assert_ok(&host.run(&["ls"]));
    let usual = started.elapsed();
    // Someone opens the public port, reads the greeting and says nothing more.
    let silent = std::net::TcpStream::connect(("127.0.0.2", host.port)).expect("connect");
    let mut greeting = String::new();
    std::io::BufReader::new(silent.try_clone().expect("clone"))
        .read_line(&mut greeting)
        .expect("INFO");
    assert!(greeting.starts_with("INFO"), "{greeting}");
    let started = Instant::now();
    let revoked = host.run(&["invite", "revoke", &name]);
    assert_ok(&revoked);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "revoke took {:?}",
        started.elapsed()
    );
    // The owner's commands go on, held up for a moment at most.
    let started = Instant::now();
    let listed = host.run(&["ls"]);
    let took = started.elapsed();
    assert_ok(&listed);
    assert!(
        took < usual + Duration::from_secs(3),
        "ls took {took:?}, {usual:?} with nobody silent"
    );
    // And a new machine joins meanwhile.
    let _desk = joined(&host);
    drop(silent);
}

#[test]
fn invite_list_keeps_when_a_machine_that_left_was_last_seen() {
    let host = public_host();
    let laptop = joined(&host);
    // The laptop moves some data and disconnects; nobody asked the list meanwhile.
    let data = random_bytes(4_000_000, 3);
    assert_ok(&laptop.send(&["moved"], &data));
    let got = host.run(&["--recv", "moved"]);
    assert_ok(&got);
    assert_eq!(sha(&got.stdout), sha(&data));
    let (text, row) = first_machine_row(&host);
    assert!(
        row.ends_with("just now") || row.ends_with(" ago"),
        "last seen: {text}"
    );
    let json = host.run(&["invite", "list", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).expect("json");
    assert_eq!(v[0]["connected"], false, "{v}");
    let seen = v[0]["last_seen"].as_u64().expect("a last_seen");
    assert!(seen >= v[0]["joined"].as_u64().expect("joined"), "{v}");
    // Another machine joins and sends while nobody looks at the list, and the server
    // restarts (it forgets its closed connections): both are still known as seen.
    let desk = joined(&host);
    assert_ok(&desk.send(&["moved"], b"from the desk\n"));
    assert_ok(&host.run(&["server", "stop"]));
    assert_ok(&host.run(&["server", "start"]));
    let json = host.run(&["invite", "list", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).expect("json");
    assert_eq!(v.as_array().map(Vec::len), Some(2), "{v}");
    assert_eq!(v[0]["last_seen"].as_u64(), Some(seen), "{v}");
    assert_eq!(v[1]["connected"], false, "{v}");
    assert!(
        v[1]["last_seen"].as_u64() >= v[1]["joined"].as_u64(),
        "the desk was seen: {v}"
    );
    assert!(v[1]["last_seen"].is_u64(), "the desk was seen: {v}");
}
