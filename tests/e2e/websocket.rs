//! Pipes over NATS WebSocket: `ws://` and `wss://` URLs from the flag, `NATS_URL` and a
//! context, mixed lists, TLS with a CA made here, and the errors of a wrong transport.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use super::harness::*;

#[test]
fn stored_payloads_round_trip_over_ws() {
    let b = Bench::websocket();
    let ws = b.ws_url();
    assert!(ws.starts_with("ws://127.0.0.1:"), "{ws}");
    let first = b.file("first", &random_bytes(1_300_000, 91));
    let second = b.file("second", b"second payload\n");
    assert_ok(&b.send_file(&["-s", &ws, "files"], &first));
    // From NATS_URL this time.
    let sent = b
        .cmd(&["send", "files"])
        .env("NATS_URL", &ws)
        .stdin(Stdio::from(std::fs::File::open(&second).expect("open")))
        .output()
        .expect("run");
    assert_ok(&sent);
    let out = b.recv(&["-s", &ws, "files"]);
    assert_ok(&out);
    assert_eq!(sha(&out.stdout), sha_file(&first));
    let out = b.recv(&["--server", &ws, "files"]);
    assert_ok(&out);
    assert_eq!(out.stdout, b"second payload\n");
    let empty = b.recv(&["-s", &ws, "files", "--timeout", "1s"]);
    assert_eq!(empty.status.code(), Some(124), "{}", stderr_of(&empty));
    assert!(empty.stdout.is_empty());
}

#[test]
fn a_payload_sent_over_ws_is_taken_over_nats_and_back() {
    let b = Bench::websocket();
    let ws = b.ws_url();
    let data = random_bytes(900_001, 92);
    assert_ok(&b.send_bytes(&["-s", &ws, "across"], &data));
    // The bench's NATS_URL is the plain client port.
    let out = b.recv(&["across"]);
    assert_ok(&out);
    assert_eq!(sha(&out.stdout), sha(&data));
    assert_ok(&b.send_bytes(&["across"], &data));
    let out = b.recv(&["-s", &ws, "across"]);
    assert_ok(&out);
    assert_eq!(sha(&out.stdout), sha(&data));
}

#[test]
fn a_live_transfer_over_ws_reaches_the_waiting_receiver_and_a_listener() {
    let b = Bench::websocket();
    let ws = b.ws_url();
    let input = b.path("live.in");
    random_file(&input, 6 * 1024 * 1024 + 7, 93);
    let want = sha_file(&input);
    let output = b.path("live.out");
    let receiver =
        spawn_to_file(&mut b.cmd(&["-v", "-s", &ws, "live"]), &output).ready(&waiting("live"));
    // A listener sees what is sent after it subscribed.
    let listener = b.spawn_ready(
        &["-s", &ws, "live", "--listen", "--timeout", "20s"],
        &listening("live"),
    );
    assert_ok(&b.send_file(&["-s", &ws, "live"], &input));
    let out = wait_output(receiver, HANG);
    assert_ok(&out);
    assert_eq!(sha_file(&output), want, "the receiver's bytes");
    let heard = wait_output(listener, HANG);
    assert_ok(&heard);
    assert_eq!(sha(&heard.stdout), want, "the listener's bytes");
    // The receiver took it: nothing is left.
    let after = b.recv(&["-s", &ws, "live", "--timeout", "1s"]);
    assert_eq!(after.status.code(), Some(124), "{}", stderr_of(&after));
}

#[test]
fn a_trigger_over_ws_wakes_the_waiting_script() {
    let b = Bench::websocket();
    let ws = b.ws_url();
    let waiter = b.spawn_ready(&["-s", &ws, "go"], &waiting("go"));
    assert_ok(&b.send_bytes(&["-s", &ws, "go"], b"\n"));
    let out = wait_output(waiter, HANG);
    assert_ok(&out);
    assert_eq!(out.stdout, b"\n");
    // The trigger waits for the next waiter when nobody is there.
    assert_ok(&b.send_bytes(&["-s", &ws, "go"], b"\n"));
    let out = b.recv(&["-s", &ws, "go"]);
    assert_ok(&out);
    assert_eq!(out.stdout, b"\n");
}

#[test]
fn follow_over_ws_aggregates_payloads_from_a_log_tail() {
    let b = Bench::websocket();
    let ws = b.ws_url();
    let follower = b.spawn_recv(&["-s", &ws, "logs", "--follow", "--timeout", "3s"]);
    let one = b"host-a: started\nhost-a: ready\n".to_vec();
    let two = b"host-b: started\n".to_vec();
    assert_ok(&b.send_bytes(&["-s", &ws, "logs"], &one));
    assert_ok(&b.send_bytes(&["-s", &ws, "logs"], &two));
    let out = wait_output(follower, HANG);
    assert_eq!(out.status.code(), Some(124), "{}", stderr_of(&out));
    // Payloads taken at once are interleaved line by line; each keeps its own order.
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let mut got: Vec<&str> = text.lines().collect();
    let a_started = got.iter().position(|l| *l == "host-a: started");
    let a_ready = got.iter().position(|l| *l == "host-a: ready");
    assert!(a_started < a_ready, "{text}");
    got.sort_unstable();
    assert_eq!(got, ["host-a: ready", "host-a: started", "host-b: started"]);
}

#[test]
fn url_lists_may_mix_ws_and_nats() {
    let b = Bench::websocket();
    let ws = b.ws_url();
    let dead = skypipe_nats::free_port().expect("port");
    let data = random_bytes(400_000, 94);
    // A dead NATS port beside a live WebSocket one, and the other way round: whichever
    // the client tries first, it ends up connected.
    let ws_alive = format!("nats://127.0.0.1:{dead},{ws}");
    let nats_alive = format!("ws://127.0.0.1:{dead}, {}", b.url());
    assert_ok(&b.send_bytes(&["-s", &ws_alive, "mixed"], &data));
    let out = b.recv(&["-s", &nats_alive, "mixed"]);
    assert_ok(&out);
    assert_eq!(sha(&out.stdout), sha(&data));
    let both = format!("{},{ws}", b.url());
    assert_ok(&b.send_bytes(&["-s", &both, "mixed"], &data));
    let out = b.recv(&["-s", &both, "mixed"]);
    assert_ok(&out);
    assert_eq!(sha(&out.stdout), sha(&data));
}

#[test]
fn a_natscli_context_can_name_a_ws_url() {
    let b = Bench::websocket();
    let nats = b.path("home").join(".config/nats");
    std::fs::create_dir_all(nats.join("context")).expect("mkdir");
    std::fs::write(nats.join("context.txt"), "edge").expect("write");
    std::fs::write(
        nats.join("context/edge.json"),
        format!(
            r#"{{"description":"behind a firewall","url":"{}"}}"#,
            b.ws_url()
        ),
    )
    .expect("write");
    let context_only = |args: &[&str]| {
        let mut c = b.cmd(args);
        c.env_remove("NATS_URL");
        c
    };
    let input = b.file("ctx.in", b"through the context\n");
    let sent = context_only(&["send", "ctx"])
        .stdin(Stdio::from(std::fs::File::open(&input).expect("open")))
        .output()
        .expect("run");
    assert_ok(&sent);
    let out = context_only(&["ctx"])
        .stdin(Stdio::null())
        .output()
        .expect("run");
    assert_ok(&out);
    assert_eq!(out.stdout, b"through the context\n");
}

#[test]
fn ws_at_a_client_port_and_nats_at_a_websocket_port_say_what_is_wrong() {
    let b = Bench::websocket();
    let ws = b.ws_url();
    let port = b.server.port();
    // ws:// dialed at the NATS client port: it answers, but not to a WebSocket handshake.
    let wrong = format!("ws://127.0.0.1:{port}");
    let start = Instant::now();
    let out = b.recv(&["-s", &wrong, "p", "--timeout", "1s"]);
    assert!(
        start.elapsed() < Duration::from_secs(6),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    let err = stderr_of(&out);
    assert!(err.contains(&wrong), "{err}");
    assert!(
        err.contains("did not accept a NATS WebSocket connection"),
        "{err}"
    );
    assert!(err.contains("needs nats://"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    // nats:// dialed at the WebSocket port: it never says INFO, so the dial times out.
    let wrong = ws.replacen("ws://", "nats://", 1);
    let out = b.recv(&["-s", &wrong, "p", "--timeout", "1s"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    let err = stderr_of(&out);
    assert!(err.contains(&wrong), "{err}");
    assert!(err.contains("needs a ws:// or wss:// URL"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    // Nothing listening at all.
    let dead = format!(
        "ws://127.0.0.1:{}",
        skypipe_nats::free_port().expect("port")
    );
    let out = b.recv(&["-s", &dead, "p", "--timeout", "1s"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    let err = stderr_of(&out);
    assert!(err.contains("cannot reach a NATS server"), "{err}");
    assert!(err.contains(&dead), "{err}");
}

/// A CA, and a server certificate for 127.0.0.1 and localhost signed by it: (CA, cert, key)
/// as PEM files in `dir`.
fn make_certificates(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let ca_key = rcgen::KeyPair::generate().expect("CA key");
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    ca.distinguished_name = rcgen::DistinguishedName::new();
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "skypipe test CA");
    let ca_cert = ca.self_signed(&ca_key).expect("CA certificate");
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = rcgen::KeyPair::generate().expect("server key");
    let mut leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()])
        .expect("server params");
    leaf.distinguished_name = rcgen::DistinguishedName::new();
    leaf.distinguished_name
        .push(rcgen::DnType::CommonName, "127.0.0.1");
    leaf.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let cert = leaf.signed_by(&key, &issuer).expect("server certificate");
    let paths = (
        dir.join("ca.pem"),
        dir.join("server-cert.pem"),
        dir.join("server-key.pem"),
    );
    std::fs::write(&paths.0, ca_cert.pem()).expect("write CA");
    std::fs::write(&paths.1, cert.pem()).expect("write cert");
    std::fs::write(&paths.2, key.serialize_pem()).expect("write key");
    paths
}

#[test]
fn wss_with_a_ca_made_here_round_trips_and_refuses_an_unknown_ca() {
    let certs = tempfile::tempdir().expect("tempdir");
    let (ca, cert, key) = make_certificates(certs.path());
    let b = Bench::with(|c| {
        c.websocket_any_port_with_tls(&cert, &key);
    });
    let wss = b.ws_url();
    assert!(wss.starts_with("wss://127.0.0.1:"), "{wss}");
    let ca_arg = ca.to_string_lossy().to_string();
    let data = random_bytes(2_500_000, 95);
    assert_ok(&b.send_bytes(&["-s", &wss, "--tlsca", &ca_arg, "secret"], &data));
    let out = b.recv(&["-s", &wss, "--tlsca", &ca_arg, "secret"]);
    assert_ok(&out);
    assert_eq!(sha(&out.stdout), sha(&data));
    // ws:// with a CA is dialed with TLS, as the natscli does, never in the clear.
    let plain = wss.replacen("wss://", "ws://", 1);
    assert_ok(&b.send_bytes(&["-s", &plain, "--tlsca", &ca_arg, "secret"], &data));
    let mut taker = b.cmd(&["-s", &plain, "secret"]);
    taker.env("NATS_CA", &ca);
    let out = taker.stdin(Stdio::null()).output().expect("run");
    assert_ok(&out);
    assert_eq!(sha(&out.stdout), sha(&data));
    // Without the CA the server's certificate is not trusted: one line, exit 1.
    let out = b.recv(&["-s", &wss, "secret", "--timeout", "1s"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    let err = stderr_of(&out);
    assert!(err.contains(&format!("TLS with {wss} failed")), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    // wss:// at a plain WebSocket listener is a TLS failure too, not an unreachable server.
    let plain_server = Bench::websocket();
    let wrong = plain_server.ws_url().replacen("ws://", "wss://", 1);
    let out = plain_server.recv(&["-s", &wrong, "--tlsca", &ca_arg, "p", "--timeout", "1s"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    let err = stderr_of(&out);
    assert!(err.contains(&format!("TLS with {wrong} failed")), "{err}");
}

/// The `transport` line of `skypipe check` run with `args`, which must pass.
fn transport_line(b: &Bench, args: &[&str]) -> String {
    let child = b
        .cmd(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .start();
    let out = wait_output(child, HANG);
    assert_ok(&out);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    text.lines()
        .find(|l| l.contains("transport"))
        .unwrap_or_else(|| panic!("no transport line in:\n{text}"))
        .to_string()
}

#[test]
fn check_names_the_transport_in_use() {
    let b = Bench::websocket();
    let ws = b.ws_url();
    // Server flags before the subcommand's name, as people type them.
    let line = transport_line(&b, &["-s", &ws, "check"]);
    assert!(line.starts_with("ok"), "{line}");
    assert!(line.contains("WebSocket (ws://)"), "{line}");
    let line = transport_line(&b, &["check"]);
    assert!(
        line.contains("TCP") && !line.contains("WebSocket"),
        "{line}"
    );
}
