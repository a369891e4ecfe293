//! What skypipe must never do for an attacker or by accident: let a name reach other
//! subjects, print a secret, trust a certificate nobody vouched for, or leave a user without
//! permission waiting forever.

use std::process::{Output, Stdio};

use rcgen::ExtendedKeyUsagePurpose;

use super::auth::{prefix_user, Ca};
use super::harness::*;

/// Names that are not pipe names, with what the one-line error must mention.
fn bad_names() -> Vec<(String, &'static str)> {
    vec![
        ("a.b".into(), "'.'"),
        ("*".into(), "'*'"),
        (">".into(), "'>'"),
        ("x.>".into(), "'.'"),
        ("a b".into(), "' '"),
        (String::new(), "empty"),
        ("x".repeat(129), "129 characters"),
    ]
}

/// The stream names on the bench's server.
fn streams(b: &Bench) -> Vec<String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        use futures::StreamExt as _;
        let client = async_nats::connect(b.url()).await.expect("connect");
        let js = async_nats::jetstream::new(client);
        let mut names = js.stream_names();
        let mut found = Vec::new();
        while let Some(name) = names.next().await {
            found.push(name.expect("stream name"));
        }
        found
    })
}

#[track_caller]
fn usage_error(out: &Output, what: &str, needle: &str) {
    let err = stderr_of(out);
    assert_eq!(out.status.code(), Some(2), "{what}: {err}");
    assert!(err.contains(needle), "{what}: {needle:?} in {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{what}: one line: {err}");
    assert!(out.stdout.is_empty(), "{what}: nothing on stdout");
}

#[test]
fn bad_names_never_reach_the_server_from_senders_listeners_followers_or_prefixes() {
    let b = Bench::new();
    let input = b.file("in", b"must go nowhere\n");
    for (name, needle) in bad_names() {
        usage_error(
            &b.send_file(&[&name], &input),
            &format!("send to {name:?}"),
            needle,
        );
        usage_error(
            &b.recv(&[&name, "--listen", "--timeout", "1s"]),
            &format!("listen to {name:?}"),
            needle,
        );
        usage_error(
            &b.recv(&[&name, "--follow", "--timeout", "1s"]),
            &format!("follow {name:?}"),
            needle,
        );
        usage_error(
            &b.send_file(&["--prefix", &name, "p"], &input),
            &format!("prefix {name:?}"),
            needle,
        );
        if name.is_empty() {
            // An empty variable is an unset one, as with NATS_URL and the rest.
            continue;
        }
        let from_env = b
            .cmd(&["send", "p"])
            .env("SKYPIPE_PREFIX", &name)
            .stdin(Stdio::from(std::fs::File::open(&input).expect("open")))
            .output()
            .expect("run");
        usage_error(&from_env, &format!("SKYPIPE_PREFIX={name:?}"), needle);
    }
    // Not a byte was stored anywhere: no sender got as far as creating the streams.
    assert_eq!(streams(&b), Vec::<String>::new());
}

/// Every secret the tests below use, each distinct and found nowhere else.
const PASSWORD: &str = "pw-Qe9xVb71";
const TOKEN: &str = "tok-R2d8LmZ4";
const URL_PASSWORD: &str = "urlpw-K4s1Zt6";
const SEAL: &str = "seal-H6n3Wp0q";
const WRONG: &str = "wrong-J8c5Nr2";

/// Asserts none of the secrets shows on stdout or stderr.
#[track_caller]
fn hidden(out: &Output, what: &str) {
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    for secret in [PASSWORD, TOKEN, URL_PASSWORD, SEAL, WRONG] {
        assert!(
            !stdout.contains(secret),
            "{what}: {secret} on stdout: {stdout}"
        );
        assert!(
            !stderr.contains(secret),
            "{what}: {secret} on stderr: {stderr}"
        );
    }
}

/// `skypipe -v -v -v ARGS` with every diagnostic on (SKYPIPE_LOG=trace, the NATS client's
/// own included) and SKYPIPE_SECRET set.
fn chatty(b: &Bench, args: &[&str]) -> std::process::Command {
    let mut c = b.cmd(&[&["-v", "-v", "-v"], args].concat());
    c.env("SKYPIPE_LOG", "trace")
        .env("SKYPIPE_SECRET", SEAL)
        .stdin(Stdio::null());
    c
}

fn run(mut c: std::process::Command) -> Output {
    let child = c.stdout(Stdio::piped()).stderr(Stdio::piped()).start();
    wait_output(child, HANG)
}

/// Sends, takes and checks a pipe with `login` (flags, or a URL as `-s`), and waits to
/// listen on an empty one, all as chatty as skypipe gets; asserts the payload arrives and no
/// secret is printed.
fn exercise(b: &Bench, login: &[&str], what: &str) {
    let data = random_bytes(300_000, 77);
    let input = b.file("in", &data);
    let args = |rest: &[&'static str]| -> Vec<String> {
        login.iter().chain(rest).map(|s| s.to_string()).collect()
    };
    let chatty = |args: Vec<String>| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        chatty(b, &args)
    };

    let mut send = chatty(args(&["send", "quiet"]));
    send.stdin(Stdio::from(std::fs::File::open(&input).expect("open")));
    let sent = run(send);
    assert_ok(&sent);
    hidden(&sent, &format!("{what}: send"));
    let got = run(chatty(args(&["quiet"])));
    assert_ok(&got);
    assert_eq!(sha(&got.stdout), sha(&data), "{what}");
    hidden(&got, &format!("{what}: receive"));
    let heard = run(chatty(args(&["quiet", "--listen", "--timeout", "1s"])));
    assert_eq!(
        heard.status.code(),
        Some(124),
        "{what}: {}",
        stderr_of(&heard)
    );
    hidden(&heard, &format!("{what}: listen"));
    let checked = run(chatty(args(&["check"])));
    assert_ok(&checked);
    hidden(&checked, &format!("{what}: check"));
    assert!(
        String::from_utf8_lossy(&checked.stdout).contains("all checks passed"),
        "{what}: {}",
        String::from_utf8_lossy(&checked.stdout)
    );
    // Every diagnostic was on: there was something to leak from.
    assert!(
        stderr_of(&sent).contains("DEBUG") && stderr_of(&sent).contains("connected to"),
        "{what}: {}",
        stderr_of(&sent)
    );
}

/// A refused login, as chatty as can be: exit 1, and no secret shown.
fn refused(b: &Bench, args: &[&str], what: &str) {
    let out = run(chatty(b, &[args, &["quiet", "--timeout", "1s"]].concat()));
    assert_eq!(out.status.code(), Some(1), "{what}: {}", stderr_of(&out));
    hidden(&out, what);
    let out = run(chatty(b, &[args, &["check"]].concat()));
    assert_eq!(
        out.status.code(),
        Some(1),
        "{what}: check: {}",
        stderr_of(&out)
    );
    hidden(&out, &format!("{what}: check"));
}

#[test]
fn a_user_and_password_are_never_printed() {
    let b = Bench::with(|c| {
        c.extra = format!("authorization {{\n  user: alice\n  password: \"{PASSWORD}\"\n}}\n");
    });
    exercise(&b, &["--user", "alice", "--password", PASSWORD], "flags");
    refused(
        &b,
        &["--user", "alice", "--password", WRONG],
        "wrong password",
    );
}

#[test]
fn a_password_in_the_url_is_never_printed() {
    let b = Bench::with(|c| {
        c.extra = format!("authorization {{\n  user: carol\n  password: \"{URL_PASSWORD}\"\n}}\n");
    });
    let port = b.server.port();
    let url = format!("nats://carol:{URL_PASSWORD}@127.0.0.1:{port}");
    exercise(&b, &["-s", &url], "-s URL");
    // From NATS_URL too.
    let mut c = chatty(&b, &["quiet", "--timeout", "1s"]);
    c.env("NATS_URL", &url);
    let out = run(c);
    assert_eq!(out.status.code(), Some(124), "{}", stderr_of(&out));
    hidden(&out, "NATS_URL");
    let wrong = format!("nats://carol:{WRONG}@127.0.0.1:{port}");
    refused(&b, &["-s", &wrong], "wrong password in the URL");
    // Nothing listening there: the error names the server, without the password.
    let gone = format!(
        "nats://carol:{URL_PASSWORD}@127.0.0.1:{}",
        skypipe_nats::free_port().expect("port")
    );
    refused(&b, &["-s", &gone], "unreachable URL with a password");
}

#[test]
fn a_token_is_never_printed() {
    let b = Bench::with(|c| {
        c.extra = format!("authorization {{\n  token: \"{TOKEN}\"\n}}\n");
    });
    exercise(&b, &["--token", TOKEN], "--token");
    refused(&b, &["--token", WRONG], "wrong token");
    let url = format!("nats://{TOKEN}@127.0.0.1:{}", b.server.port());
    let out = run(chatty(&b, &["-s", &url, "quiet", "--timeout", "1s"]));
    assert_eq!(out.status.code(), Some(124), "{}", stderr_of(&out));
    hidden(&out, "token in the URL");
}

#[test]
fn a_server_certificate_for_another_name_or_a_missing_tls_is_refused() {
    let pki = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("skypipe security CA");
    let ca_file = ca.write(&pki.path().join("ca.pem"));
    // Signed by the CA the client trusts, but for another host.
    let (cert, key) = ca.leaf(
        pki.path(),
        "elsewhere",
        &["elsewhere.example"],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let b = Bench::with(|c| {
        c.extra = format!(
            "tls {{\n  cert_file: \"{}\"\n  key_file: \"{}\"\n}}\n",
            cert.display(),
            key.display()
        );
    });
    let input = b.file("in", b"for the right server only\n");
    for out in [
        b.send_file(&["--tlsca", &ca_file, "p"], &input),
        b.recv(&["--tlsca", &ca_file, "p", "--timeout", "1s"]),
    ] {
        let err = stderr_of(&out);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains("TLS"), "{err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    }
    // A server without TLS, when the user asked for it: refused, never spoken to in clear.
    let plain = Bench::new();
    let input = plain.file("in", b"not in the clear\n");
    for out in [
        plain.send_file(&["--tlsca", &ca_file, "p"], &input),
        plain.recv(&["--tlsca", &ca_file, "p", "--timeout", "1s"]),
        plain.send_file(
            &["-s", &plain.url().replace("nats://", "tls://"), "p"],
            &input,
        ),
    ] {
        let err = stderr_of(&out);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    }
    assert_eq!(streams(&plain), Vec::<String>::new(), "nothing was stored");
}

#[test]
fn a_user_denied_one_pipe_gets_a_permission_error_not_a_wait() {
    // Carol may use prefix "team", except pipe "private": she may neither queue on it,
    // write its chunks, nor take its tickets.
    let carol = prefix_user("carol", "carol-pw", "team").replacen(
        "publish: { allow: [",
        "publish: { deny: [ \"team.q.private\", \"team.data.private.>\", \
         \"$JS.API.CONSUMER.MSG.NEXT.team-queue.private\" ], allow: [",
        1,
    );
    assert!(carol.contains("deny"), "{carol}");
    let b = Bench::with(|c| {
        c.extra = format!(
            "authorization {{\n  users = [\n    {carol}\n    {}\n  ]\n}}\n",
            prefix_user("dave", "dave-pw", "team")
        );
    });
    let login = [
        "--user",
        "carol",
        "--password",
        "carol-pw",
        "--prefix",
        "team",
    ];
    let dave = [
        "--user",
        "dave",
        "--password",
        "dave-pw",
        "--prefix",
        "team",
    ];
    let with = |who: &[&str], rest: &[&str]| -> Vec<String> {
        who.iter().chain(rest).map(|s| s.to_string()).collect()
    };
    // Her other pipes work.
    let args = with(&login, &["open"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_ok(&b.send_bytes(&args, b"fine\n"));
    let out = b.recv(&args);
    assert_ok(&out);
    assert_eq!(out.stdout, b"fine\n");
    // Dave leaves a payload on "private"; Carol cannot take it, and says so rather than
    // waiting out her timeout (which would exit 124).
    let args = with(&dave, &["private"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_ok(&b.send_bytes(&args, b"for dave's eyes\n"));
    let args = with(&login, &["private", "--timeout", "60s"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    for follow in [false, true] {
        let mut args = args.clone();
        if follow {
            args.push("--follow");
        }
        let out = b.recv(&args);
        let err = stderr_of(&out);
        assert_eq!(out.status.code(), Some(1), "follow={follow}: {err}");
        assert!(err.contains("permission"), "{err}");
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
        assert!(out.stdout.is_empty(), "follow={follow}");
    }
    let sent = b.send_bytes(&args, b"not allowed\n");
    let err = stderr_of(&sent);
    assert_eq!(sent.status.code(), Some(1), "{err}");
    assert!(err.contains("permission"), "{err}");
    // Dave's payload is still there, whole, and Carol's never got in.
    let args = with(&dave, &["private", "--timeout", "1s"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = b.recv(&args);
    assert_ok(&out);
    assert_eq!(out.stdout, b"for dave's eyes\n");
    let out = b.recv(&args);
    assert_eq!(out.status.code(), Some(124), "{}", stderr_of(&out));
}

/// The ELF type of a binary (`e_type`: 2 a fixed-address executable, 3 position-independent).
fn elf_type(path: &str) -> u16 {
    use std::io::Read;
    let mut header = [0u8; 18];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut header))
        .unwrap_or_else(|e| panic!("read the ELF header of {path}: {e}"));
    assert_eq!(&header[..4], b"\x7fELF", "{path} is an ELF file");
    let bytes = [header[16], header[17]];
    match header[5] {
        1 => u16::from_le_bytes(bytes),
        2 => u16::from_be_bytes(bytes),
        other => panic!("{path}: unknown ELF data encoding {other}"),
    }
}

/// A tool that parses what others send keeps address-space layout randomisation: the binary
/// must be a position-independent executable, whatever it costs at start-up.
#[cfg(target_os = "linux")]
#[test]
fn the_binary_is_position_independent() {
    const ET_DYN: u16 = 3;
    assert_eq!(elf_type(BIN), ET_DYN, "{BIN} is not a PIE (ET_DYN)");
}
