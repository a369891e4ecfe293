//! Logging in, end to end: token, nkey, TLS (server-verified and mutual), a creds file in an
//! operator-mode server, and the permissions of a prefix. Every secret and certificate is made
//! here, for this test run.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use super::harness::*;
use super::operator::{self, Account, OperatorBench};

/// Asserts the one-line, exit-1 failure of a refused login, and that `secret` is not shown.
#[track_caller]
fn refused(out: &Output, needle: &str, secret: &str) {
    let err = stderr_of(out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(err.contains(needle), "{needle:?} in: {err}");
    assert!(
        !secret.is_empty() && !err.contains(secret),
        "no secret shown: {err}"
    );
}

/// Sends `data` on `pipe` with `args`, receives it with the same args, compares checksums.
#[track_caller]
fn round_trip(b: &Bench, args: &[&str], pipe: &str, data: &[u8]) {
    let mut send: Vec<&str> = args.to_vec();
    send.push(pipe);
    assert_ok(&b.send_bytes(&send, data));
    let got = b.recv(&send);
    assert_ok(&got);
    assert_eq!(sha(&got.stdout), sha(data));
}

#[test]
fn a_token_logs_in_and_a_wrong_one_is_one_line() {
    let b = Bench::with(|c| {
        c.extra = "authorization {\n  token: \"t0ken-s3cret\"\n}\n".into();
    });
    round_trip(
        &b,
        &["--token", "t0ken-s3cret"],
        "tok",
        &random_bytes(100_000, 5),
    );
    // NATS_TOKEN too.
    let out = b
        .cmd(&["tok", "--timeout", "1s"])
        .env("NATS_TOKEN", "t0ken-s3cret")
        .stdin(Stdio::null())
        .output()
        .expect("run");
    assert_eq!(
        out.status.code(),
        Some(124),
        "logged in: {}",
        stderr_of(&out)
    );
    refused(
        &b.recv(&["--token", "not-the-t0ken", "tok", "--timeout", "1s"]),
        "refused the credentials",
        "not-the-t0ken",
    );
    refused(
        &b.recv(&["tok", "--timeout", "1s"]),
        "refused the credentials",
        "t0ken-s3cret",
    );
}

#[test]
fn an_nkey_seed_logs_in_and_another_seed_is_one_line() {
    let user = nkeys::KeyPair::new_user();
    let stranger = nkeys::KeyPair::new_user();
    let public = user.public_key();
    let b = Bench::with(|c| {
        c.extra = format!("authorization {{\n  users = [ {{ nkey: \"{public}\" }} ]\n}}\n");
    });
    let seed = b.path("user.nk");
    std::fs::write(&seed, user.seed().expect("seed")).expect("write seed");
    let seed = seed.display().to_string();
    round_trip(&b, &["--nkey", &seed], "nk", &random_bytes(70_000, 6));
    let other = b.path("other.nk");
    let other_seed = stranger.seed().expect("seed");
    std::fs::write(&other, &other_seed).expect("write seed");
    refused(
        &b.recv(&[
            "--nkey",
            &other.display().to_string(),
            "nk",
            "--timeout",
            "1s",
        ]),
        "refused the credentials",
        &other_seed,
    );
}

/// A certificate authority made for one test.
pub(super) struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

impl Ca {
    pub(super) fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("self-signed");
        Ca {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A certificate and key signed by this CA, written as `NAME.pem` and `NAME.key`.
    pub(super) fn leaf(
        &self,
        dir: &Path,
        name: &str,
        sans: &[&str],
        usage: ExtendedKeyUsagePurpose,
    ) -> (PathBuf, PathBuf) {
        let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(sans).expect("params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("signed");
        let (c, k) = (
            dir.join(format!("{name}.pem")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&c, cert.pem()).expect("write cert");
        std::fs::write(&k, key.serialize_pem()).expect("write key");
        (c, k)
    }

    pub(super) fn write(&self, path: &Path) -> String {
        std::fs::write(path, &self.pem).expect("write CA");
        path.display().to_string()
    }
}

#[test]
fn tls_with_a_private_ca_and_client_certificates() {
    let pki = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("skypipe test CA");
    let ca_file = ca.write(&pki.path().join("ca.pem"));
    let (server_cert, server_key) = ca.leaf(
        pki.path(),
        "server",
        &["127.0.0.1", "localhost"],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let (client_cert, client_key) = ca.leaf(
        pki.path(),
        "client",
        &[],
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    let tls_block = |verify: bool| {
        format!(
            "tls {{\n  cert_file: \"{}\"\n  key_file: \"{}\"\n  ca_file: \"{ca_file}\"\n  verify: {verify}\n}}\n",
            server_cert.display(),
            server_key.display()
        )
    };

    // The server proves who it is; the client trusts the test CA.
    let plain = Bench::with(|c| c.extra = tls_block(false));
    round_trip(
        &plain,
        &["--tlsca", &ca_file],
        "tls",
        &random_bytes(500_000, 8),
    );
    // Without the CA the server's certificate is not trusted.
    let out = plain.recv(&["tls", "--timeout", "1s"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    assert_eq!(
        stderr_of(&out).trim_end().lines().count(),
        1,
        "{}",
        stderr_of(&out)
    );
    // Nor with another CA.
    let stranger = Ca::new("another CA");
    let other_ca = stranger.write(&pki.path().join("other-ca.pem"));
    let out = plain.recv(&["--tlsca", &other_ca, "tls", "--timeout", "1s"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    let err = stderr_of(&out);
    assert!(err.contains("TLS"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");

    // Mutual TLS: the server verifies the client's certificate too.
    let mutual = Bench::with(|c| c.extra = tls_block(true));
    let (cert, key) = (
        client_cert.display().to_string(),
        client_key.display().to_string(),
    );
    round_trip(
        &mutual,
        &["--tlsca", &ca_file, "--tlscert", &cert, "--tlskey", &key],
        "mtls",
        &random_bytes(300_000, 9),
    );
    // Without a client certificate the server refuses the handshake.
    let out = mutual.recv(&["--tlsca", &ca_file, "mtls", "--timeout", "1s"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    let err = stderr_of(&out);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("--tlscert"), "says what is missing: {err}");
    // A client certificate from another CA is refused too.
    let (bad_cert, bad_key) = stranger.leaf(
        pki.path(),
        "intruder",
        &[],
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    let out = mutual.recv(&[
        "--tlsca",
        &ca_file,
        "--tlscert",
        &bad_cert.display().to_string(),
        "--tlskey",
        &bad_key.display().to_string(),
        "mtls",
        "--timeout",
        "1s",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    let err = stderr_of(&out);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("TLS"), "{err}");
}

#[test]
fn a_creds_file_logs_in_to_an_operator_mode_server() {
    let b = OperatorBench::new(Account::flat());
    let creds = b.creds_str().to_string();
    round_trip(
        &b.bench,
        &["--creds", &creds],
        "creds",
        &random_bytes(250_000, 12),
    );

    // A user signed by an account the operator never issued is refused.
    let rogue_account = nkeys::KeyPair::new_account();
    let rogue = nkeys::KeyPair::new_user();
    let rogue_jwt = operator::sign(
        &rogue_account,
        &rogue.public_key(),
        "rogue",
        serde_json::json!({
            "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1,
            "type": "user", "version": 2
        }),
    );
    let rogue_seed = rogue.seed().expect("seed");
    let rogue_creds = b.file(
        "rogue.creds",
        operator::creds_text(&rogue_jwt, &rogue_seed).as_bytes(),
    );
    refused(
        &b.recv(&[
            "--creds",
            &rogue_creds.display().to_string(),
            "creds",
            "--timeout",
            "1s",
        ]),
        "refused the credentials",
        &rogue_seed,
    );
}

/// The permissions README.md gives for a prefix, as a server config user block.
pub(super) fn prefix_user(user: &str, password: &str, prefix: &str) -> String {
    format!(
        r#"{{
      user: "{user}", password: "{password}"
      permissions: {{
        publish: {{ allow: [
          "{prefix}.>",
          "$JS.API.INFO",
          "$JS.API.STREAM.CREATE.{prefix}-data", "$JS.API.STREAM.CREATE.{prefix}-queue",
          "$JS.API.STREAM.INFO.{prefix}-data", "$JS.API.STREAM.INFO.{prefix}-queue",
          "$JS.API.STREAM.PURGE.{prefix}-data", "$JS.API.STREAM.MSG.GET.{prefix}-data",
          "$JS.API.STREAM.MSG.GET.{prefix}-queue", "$JS.API.STREAM.MSG.DELETE.{prefix}-queue",
          "$JS.API.CONSUMER.*.{prefix}-data", "$JS.API.CONSUMER.*.{prefix}-queue",
          "$JS.API.CONSUMER.*.{prefix}-data.>", "$JS.API.CONSUMER.*.{prefix}-queue.>",
          "$JS.API.CONSUMER.MSG.NEXT.{prefix}-data.>", "$JS.API.CONSUMER.MSG.NEXT.{prefix}-queue.>",
          "$JS.ACK.{prefix}-data.>", "$JS.ACK.{prefix}-queue.>",
          "$JS.FC.{prefix}-data.>"
        ] }}
        subscribe: {{ allow: [ "_INBOX.>", "{prefix}.presence.>", "{prefix}.q.>", "{prefix}.live.>" ] }}
      }}
    }}"#
    )
}

/// The quoted subjects of a permissions block, from its publish list to the end of its
/// subscribe list.
fn quoted_subjects(block: &str) -> Vec<String> {
    let from = block.find("publish: { allow: [").expect("a publish list");
    let block = &block[from..];
    let subscribe = block
        .find("subscribe: { allow: [")
        .expect("a subscribe list");
    let end = subscribe + block[subscribe..].find(']').expect("its end");
    block[..end]
        .split('"')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

#[test]
fn the_prefix_user_here_has_the_permissions_readme_gives() {
    // README's list is held to the one skypipe writes for joined machines by a unit test
    // (`protocol::permissions`); this holds the tests' copy to README's.
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let section = readme
        .split("## Permissions for a prefix")
        .nth(1)
        .expect("README has \"Permissions for a prefix\"");
    let ours = prefix_user("ann", "a long secret", "teama");
    assert_eq!(quoted_subjects(&ours), quoted_subjects(section));
}

/// The permissions README.md gave before the live path (no `P.live.>`).
fn prefix_user_before_live(user: &str, password: &str, prefix: &str) -> String {
    prefix_user(user, password, prefix).replace(&format!(", \"{prefix}.live.>\""), "")
}

#[test]
fn a_prefix_user_gets_live_transfers_and_one_without_the_live_subjects_gets_them_stored() {
    let b = Bench::with(|c| {
        c.extra = format!(
            "authorization {{\n  users = [\n    {}\n    {}\n  ]\n}}\n",
            prefix_user("ann", "ann-pw", "teama"),
            prefix_user_before_live("old", "old-pw", "teamo")
        );
    });
    assert!(!prefix_user_before_live("o", "p", "teamo").contains("live"));
    for (user, prefix) in [("ann", "teama"), ("old", "teamo")] {
        let password = format!("{user}-pw");
        let login = ["--user", user, "--password", &password, "--prefix", prefix];
        let data = random_bytes(6 * MIB, 23);
        let receiver = b
            .cmd(&[&["-v"], &login[..], &["recv", "wire"]].concat())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .start()
            .ready(&waiting("wire"));
        let start = Instant::now();
        let (sender, feeder) = feed_paced(
            b.cmd(&[&["-v"], &login[..], &["send", "wire"]].concat()),
            data.clone(),
            MIB,
            Duration::from_millis(20),
        );
        feeder.join().expect("feeder");
        let sent = wait_output(sender, HANG);
        assert_ok(&sent);
        let out = wait_output(receiver, HANG);
        assert_ok(&out);
        assert_eq!(sha(&out.stdout), sha(&data), "{user}");
        if user == "ann" {
            assert!(went_live(&sent), "{}", stderr_of(&sent));
        } else {
            // Refused the live subjects, the taker does not ask: no error, no stall.
            assert!(!went_live(&sent), "{}", stderr_of(&sent));
            assert!(
                start.elapsed() < Duration::from_secs(2),
                "no stall: {:?}",
                start.elapsed()
            );
        }
    }
}

#[test]
fn a_user_outside_a_prefix_gets_a_clear_permission_error() {
    let b = Bench::with(|c| {
        c.extra = format!(
            "authorization {{\n  users = [\n    {}\n    {}\n  ]\n}}\n",
            prefix_user("ann", "ann-pw", "teama"),
            prefix_user("bob", "bob-pw", "teamb")
        );
    });
    let ann = ["--user", "ann", "--password", "ann-pw", "--prefix", "teama"];
    round_trip(&b, &ann, "work", &random_bytes(1_000_000, 21));
    let check = b.recv(&[
        "check",
        "--user",
        "ann",
        "--password",
        "ann-pw",
        "--prefix",
        "teama",
    ]);
    assert_ok(&check);
    // ls, peek and rm work under the prefix with these permissions too.
    let login = |rest: &[&'static str]| [&ann[..], rest].concat();
    assert_ok(&b.send_bytes(&login(&["kept"]), b"look, do not take\n"));
    let out = b.recv(&login(&["ls", "--json"]));
    assert_ok(&out);
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(listed["pipes"][0]["pipe"], "kept", "{listed}");
    assert_eq!(listed["pipes"][0]["payloads_waiting"], 1, "{listed}");
    assert!(
        listed["pipes"][0]["oldest_waiting_seconds"].is_u64(),
        "{listed}"
    );
    let out = b.recv(&login(&["peek", "kept"]));
    assert_ok(&out);
    assert_eq!(out.stdout, b"look, do not take\n");
    assert_ok(&b.recv(&login(&["rm", "--yes", "kept"])));
    let out = b.recv(&login(&["kept", "--timeout", "1s"]));
    assert_eq!(out.status.code(), Some(124), "{}", stderr_of(&out));

    // Ann's pipes under Bob's prefix, or under the default one: denied, at once, one line.
    for prefix in ["teamb", "skypipe"] {
        for send in [true, false] {
            let args = [
                "--user",
                "ann",
                "--password",
                "ann-pw",
                "--prefix",
                prefix,
                "work",
                "--timeout",
                "30s",
            ];
            let start = Instant::now();
            let out = if send {
                b.send_bytes(&args, b"not for bob\n")
            } else {
                b.recv(&args)
            };
            let err = stderr_of(&out);
            assert_eq!(out.status.code(), Some(1), "send={send} {prefix}: {err}");
            assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
            assert!(err.contains("permission"), "{err}");
            assert!(err.contains(prefix), "names the prefix: {err}");
            assert!(
                start.elapsed() < Duration::from_secs(8),
                "no hang: {:?}",
                start.elapsed()
            );
        }
    }
    // check says so too, and fails.
    let out = b.recv(&[
        "check",
        "--user",
        "ann",
        "--password",
        "ann-pw",
        "--prefix",
        "teamb",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.lines()
            .any(|l| l.starts_with("FAIL") && l.contains("streams") && l.contains("ermission")),
        "{text}"
    );
    // Bob's own pipes work, and Ann's payload is not in them.
    let bob = ["--user", "bob", "--password", "bob-pw", "--prefix", "teamb"];
    let out = b.recv(&[&bob[..], &["work", "--timeout", "1s"]].concat());
    assert_eq!(out.status.code(), Some(124), "{}", stderr_of(&out));
}

#[test]
fn a_sender_without_the_queue_reads_sends_as_before() {
    // Pipes alone need neither reading nor deleting tickets (README); a sender's check that
    // its payload is still in the pipe is then left out, not an error.
    let b = Bench::with(|c| {
        let user = prefix_user("ann", "ann-pw", "teama").replace(
            "\"$JS.API.STREAM.MSG.GET.teama-queue\", \"$JS.API.STREAM.MSG.DELETE.teama-queue\",",
            "",
        );
        assert!(!user.contains("MSG.GET.teama-queue"), "{user}");
        c.extra = format!("authorization {{\n  users = [\n    {user}\n  ]\n}}\n");
    });
    let ann = ["--user", "ann", "--password", "ann-pw", "--prefix", "teama"];
    let data = random_bytes(3 * MIB, 23);
    // Sent over about 2 s, in several chunks: the sender checks on its ticket meanwhile.
    let (sender, feeder) = feed_paced(
        b.cmd(&[&ann[..], &["send", "slow"]].concat()),
        data.clone(),
        256 * 1024,
        Duration::from_millis(200),
    );
    feeder.join().expect("feeder");
    assert_ok(&wait_output(sender, HANG));
    let got = b.recv(&[&ann[..], &["recv", "slow"]].concat());
    assert_ok(&got);
    assert_eq!(sha(&got.stdout), sha(&data));
}
