//! Finding the server and logging in: flags, NATS_* variables, natscli contexts.

use std::process::Stdio;

use super::harness::*;

fn with_password(c: &mut skypipe_nats::ServerConfig) {
    c.extra = "authorization {\n  user: alice\n  password: s3cret\n}\n".into();
}

#[test]
fn a_wrong_password_is_one_line_and_exit_1() {
    let b = Bench::with(with_password);
    let out = b.recv(&[
        "--user",
        "alice",
        "--password",
        "wrong",
        "p",
        "--timeout",
        "1s",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    let err = stderr_of(&out);
    assert!(err.contains("refused the credentials"), "{err}");
    assert!(
        !err.contains("wrong"),
        "the password is never printed: {err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    // The right one works, from the variables.
    let mut send = b.cmd(&["send", "p"]);
    send.env("NATS_USER", "alice")
        .env("NATS_PASSWORD", "s3cret");
    let f = b.file("in", b"authorized\n");
    let out = send
        .stdin(Stdio::from(std::fs::File::open(&f).expect("open")))
        .output()
        .expect("run");
    assert_ok(&out);
    let out = b.recv(&["--user", "alice", "--password", "s3cret", "p"]);
    assert_ok(&out);
    assert_eq!(out.stdout, b"authorized\n");
}

#[test]
fn a_natscli_context_selects_the_server_and_credentials() {
    let b = Bench::with(with_password);
    let home = b.path("home");
    let nats = home.join(".config/nats");
    std::fs::create_dir_all(nats.join("context")).expect("mkdir");
    std::fs::write(nats.join("context.txt"), "team").expect("write");
    std::fs::write(
        nats.join("context/team.json"),
        format!(
            r#"{{"description":"test","url":"{}","user":"alice","password":"s3cret"}}"#,
            b.url()
        ),
    )
    .expect("write");
    // No NATS_URL: the context alone says where and who.
    let f = b.file("in", b"via context\n");
    let out = bare_cmd(&home)
        .args(["send", "ctx"])
        .stdin(Stdio::from(std::fs::File::open(&f).expect("open")))
        .output()
        .expect("run");
    assert_ok(&out);
    let out = bare_cmd(&home)
        .arg("ctx")
        .stdin(Stdio::null())
        .output()
        .expect("run");
    assert_ok(&out);
    assert_eq!(out.stdout, b"via context\n");
    // A context that does not exist is a usage error naming it.
    let out = bare_cmd(&home)
        .args(["--context", "nope", "ctx"])
        .stdin(Stdio::null())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr_of(&out).contains("\"nope\""), "{}", stderr_of(&out));
}

#[test]
fn bad_flag_values_are_one_line_usage_errors() {
    let b = Bench::new();
    for args in [
        vec!["--timeout", "soon", "p"],
        vec!["--ttl", "0s", "p"],
        vec!["-s", "http://127.0.0.1:1", "p"],
        vec!["--creds", "/nonexistent/x.creds", "p"],
    ] {
        let out = b.recv(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr_of(&out));
        assert!(!stderr_of(&out).is_empty());
    }
}

/// The server keeps a payload's expiry in nanoseconds since 1970 (int64, which runs out in
/// 2262): a TTL past that wrapped around and the payload expired at once, after exit 0.
#[test]
fn a_ttl_the_server_cannot_hold_is_refused_and_nothing_is_queued() {
    let b = Bench::new();
    let out = b.send_bytes(&["t", "--ttl", "300years"], b"keep\n");
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(err.contains("--ttl"), "{err}");
    assert!(err.contains("100years"), "names the limit: {err}");
    let got = b.recv(&["t", "--timeout", "2s"]);
    assert_eq!(got.status.code(), Some(124), "{}", stderr_of(&got));
    assert!(got.stdout.is_empty());

    // Below the server's one second, too.
    let out = b.send_bytes(&["t", "--ttl", "500ms"], b"keep\n");
    assert_eq!(out.status.code(), Some(2), "{}", stderr_of(&out));
    assert!(stderr_of(&out).contains("1s"), "{}", stderr_of(&out));

    // A long TTL within the limit keeps the payload.
    let data = random_bytes(100_000, 50);
    assert_ok(&b.send_bytes(&["t", "--ttl", "50years"], &data));
    let got = b.recv(&["t", "--timeout", "10s"]);
    assert_ok(&got);
    assert_eq!(sha(&got.stdout), sha(&data));
}
