//! A saved context belongs to its own servers: a server named with `-s` or `NATS_URL` never
//! gets the context's login, and the context's skypipe settings (replicas) do not go with it.

use skypipe_nats::Cluster;
use std::process::Stdio;

use super::harness::*;

/// A server that lets in `ann` with the context's password.
fn server_a(c: &mut skypipe_nats::ServerConfig) {
    c.extra = "authorization {\n  user: ann\n  password: \"secret-of-a\"\n}\n".into();
}

/// Another server with a user of the same name and another password, where a client that
/// gives no login gets in as `anon`; it traces each client's CONNECT to its log.
fn server_b(c: &mut skypipe_nats::ServerConfig) {
    c.extra = "trace: true\n\
               no_auth_user: anon\n\
               authorization {\n  users = [\n    { user: ann, password: \"secret-of-b\" }\n    \
               { user: anon, password: \"unguessable-anon\" }\n  ]\n}\n"
        .into();
}

/// `skypipe setup` with ann's login at server A, from `home`: the context it saves is
/// selected for skypipe from then on.
fn setup_context(home: &std::path::Path, url: &str) {
    let out = bare_cmd(home)
        .args([
            "setup",
            "-s",
            url,
            "--user",
            "ann",
            "--password",
            "secret-of-a",
        ])
        .stdin(Stdio::null())
        .output()
        .expect("setup");
    assert_ok(&out);
}

#[test]
fn a_server_named_with_s_or_nats_url_never_gets_the_contexts_login() {
    let a = Bench::with(server_a);
    let b = Bench::with(server_b);
    let home = a.path("home");
    setup_context(&home, &a.url());

    // -s names server B: pipes work there as the user with no login, anon.
    let data = random_bytes(70_000, 9);
    let sent = output_with_input(bare_cmd(&home).args(["-s", &b.url(), "send", "p"]), &data);
    assert_ok(&sent);
    let got = bare_cmd(&home)
        .args(["-s", &b.url(), "recv", "p"])
        .stdin(Stdio::null())
        .output()
        .expect("recv");
    assert_ok(&got);
    assert_eq!(sha(&got.stdout), sha(&data));

    // NATS_URL names it: the same.
    let sent = output_with_input(
        bare_cmd(&home).env("NATS_URL", b.url()).args(["send", "q"]),
        b"via NATS_URL\n",
    );
    assert_ok(&sent);
    let got = bare_cmd(&home)
        .env("NATS_URL", b.url())
        .args(["recv", "q"])
        .stdin(Stdio::null())
        .output()
        .expect("recv");
    assert_ok(&got);
    assert_eq!(got.stdout, b"via NATS_URL\n");

    // Server B never saw the context's user name.
    let log = std::fs::read_to_string(b.server.log_path()).expect("server B's log");
    assert!(log.contains("CONNECT {"), "the server traces logins: {log}");
    assert!(
        !log.contains("\"user\":\"ann\""),
        "server B was sent the context's login:\n{}",
        log.lines()
            .filter(|l| l.contains("CONNECT {"))
            .collect::<Vec<_>>()
            .join("\n")
    );

    // A login given with the server named goes with it.
    let got = bare_cmd(&home)
        .args([
            "-s",
            &b.url(),
            "--user",
            "ann",
            "--password",
            "secret-of-b",
            "check",
        ])
        .stdin(Stdio::null())
        .output()
        .expect("check");
    assert_ok(&got);

    // The context still works for its own server, named or not.
    let sent = output_with_input(bare_cmd(&home).args(["send", "r"]), b"to a\n");
    assert_ok(&sent);
    let got = bare_cmd(&home)
        .args(["-s", &a.url(), "recv", "r"])
        .stdin(Stdio::null())
        .output()
        .expect("recv");
    assert_ok(&got);
    assert_eq!(got.stdout, b"to a\n");
}

/// `skypipe check`'s line about skypipe's streams, from `home` with `args`.
fn streams_line(home: &std::path::Path, env: Option<&str>, args: &[&str]) -> String {
    let mut cmd = bare_cmd(home);
    if let Some(url) = env {
        cmd.env("NATS_URL", url);
    }
    let out = cmd
        .args(args)
        .arg("check")
        .stdin(Stdio::null())
        .output()
        .expect("check");
    assert_ok(&out);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.contains("streams"))
        .unwrap_or_default()
        .to_string()
}

#[test]
fn replicas_come_from_the_server_named_not_the_context() {
    // The context is of a single server: setup saves one replica.
    let single = Bench::new();
    let home = single.path("home");
    let out = bare_cmd(&home)
        .args(["setup", "-s", &single.url()])
        .stdin(Stdio::null())
        .output()
        .expect("setup");
    assert_ok(&out);
    let ctx = std::fs::read_to_string(home.join(".config/nats/context/skypipe.json"))
        .expect("the context");
    assert!(ctx.contains("\"skypipe_replicas\": 1"), "{ctx}");

    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = Cluster::start(dir.path().join("cluster")).expect("cluster starts");
    let urls = cluster.urls();
    // Readiness: the cluster has a JetStream leader (this makes prefix skypipe's streams,
    // with three replicas asked for: the checks below use prefixes of their own).
    super::cluster::wait_for_cluster(&home, &urls);

    // Named with -s, the cluster of three gets three replicas, not the context's one.
    let line = streams_line(&home, None, &["-s", &urls, "--prefix", "named"]);
    assert!(line.contains("(3 replicas"), "{line}");
    // Named in NATS_URL, the same.
    let line = streams_line(&home, Some(&urls), &["--prefix", "viaenv"]);
    assert!(line.contains("(3 replicas"), "{line}");
}
