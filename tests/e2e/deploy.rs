//! `skypipe server deploy` over a real `sshd` started by the test on 127.0.0.2, with a host
//! key and a user key made here and the remote user's HOME in a temp dir; the deploying
//! machine and a second one are HOMEs of their own.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::harness::*;
use super::machines::{invite_from, stream};

const SSHD: &str = "/usr/sbin/sshd";

/// An sshd on 127.0.0.2 that lets in one key as the current user, with HOME (and, for the
/// tests of other systems, PATH) set for the session.
struct Sshd {
    dir: tempfile::TempDir,
    _proc: Proc,
}

impl Sshd {
    fn start() -> Sshd {
        Sshd::with_path(None)
    }

    /// With `fake_bin` first on the session's PATH.
    fn with_path(fake_bin: Option<&Path>) -> Sshd {
        assert!(
            Path::new(SSHD).exists(),
            "{SSHD} is missing: scripts/test installs openssh-server"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        std::fs::create_dir_all(d.join("remote")).expect("remote home");
        std::fs::create_dir_all(d.join("ssh")).expect("ssh dir");
        // sshd wants its privilege separation directory.
        let _ = std::fs::create_dir_all("/run/sshd");
        for (key, what) in [
            ("host_key", "host"),
            ("ssh/id", "user"),
            ("ssh/other", "other"),
        ] {
            let ok = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", what, "-f"])
                .arg(d.join(key))
                .status()
                .expect("ssh-keygen");
            assert!(ok.success());
        }
        std::fs::copy(d.join("ssh/id.pub"), d.join("authorized_keys")).expect("authorized");
        let port = skypipe_nats::free_port().expect("port");
        let path = match fake_bin {
            Some(p) => format!(" PATH={}:/usr/local/bin:/usr/bin:/bin", p.display()),
            None => String::new(),
        };
        let user = whoami();
        let config = format!(
            "Port {port}\nListenAddress 127.0.0.2\nHostKey {d}/host_key\nPidFile {d}/sshd.pid\n\
             AuthorizedKeysFile {d}/authorized_keys\nPasswordAuthentication no\n\
             KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n\
             PermitRootLogin prohibit-password\nAllowUsers {user}\nSetEnv HOME={d}/remote{path}\n",
            d = d.display()
        );
        std::fs::write(d.join("sshd_config"), config).expect("sshd_config");
        let host_pub = std::fs::read_to_string(d.join("host_key.pub")).expect("host key");
        let host_pub: Vec<&str> = host_pub.split_whitespace().take(2).collect();
        std::fs::write(
            d.join("ssh/known_hosts"),
            format!("[127.0.0.2]:{port} {}\n", host_pub.join(" ")),
        )
        .expect("known_hosts");
        let gone = skypipe_nats::free_port().expect("port");
        let client = format!(
            "Host vps\n  HostName 127.0.0.2\n  Port {port}\n  User {user}\n  IdentityFile {d}/ssh/id\n\
             Host wrongkey\n  HostName 127.0.0.2\n  Port {port}\n  User {user}\n  IdentityFile {d}/ssh/other\n\
             Host gone\n  HostName 127.0.0.2\n  Port {gone}\n  User {user}\n  IdentityFile {d}/ssh/id\n\
             Host *\n  IdentitiesOnly yes\n  UserKnownHostsFile {d}/ssh/known_hosts\n\
             StrictHostKeyChecking yes\n  BatchMode yes\n  LogLevel ERROR\n",
            d = d.display()
        );
        std::fs::write(d.join("ssh/config"), client).expect("ssh config");
        let proc = Proc::spawn(
            Command::new(SSHD)
                .args(["-D", "-e", "-f"])
                .arg(d.join("sshd_config"))
                .stdout(Stdio::null())
                .stderr(Stdio::piped()),
        );
        let mut proc = proc;
        proc.wait_stderr("Server listening on 127.0.0.2");
        Sshd { dir, _proc: proc }
    }

    fn remote_home(&self) -> PathBuf {
        self.dir.path().join("remote")
    }

    fn ssh_command(&self) -> String {
        format!("ssh -F {}", self.dir.path().join("ssh/config").display())
    }

    /// `skypipe ARGS` on `h` with ssh going through this sshd's client config.
    fn skypipe(&self, h: &LocalHome, args: &[&str]) -> std::process::Output {
        h.cmd(args)
            .env("SKYPIPE_SSH_COMMAND", self.ssh_command())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .start()
            .wait_output(HANG)
    }

    /// `ssh vps SCRIPT`, as a person would type it.
    fn ssh(&self, script: &str) -> Command {
        let mut c = Command::new("ssh");
        c.arg("-F")
            .arg(self.dir.path().join("ssh/config"))
            .arg("vps")
            .arg(script);
        c
    }

    /// The regular files under the remote HOME.
    fn remote_files(&self) -> Vec<PathBuf> {
        let mut out = vec![];
        let mut todo = vec![self.remote_home()];
        while let Some(p) = todo.pop() {
            if p.is_dir() {
                todo.extend(
                    std::fs::read_dir(&p)
                        .expect("dir")
                        .map(|e| e.expect("e").path()),
                );
            } else {
                out.push(p);
            }
        }
        out
    }
}

impl Drop for Sshd {
    /// A test that failed half way may leave the server it deployed running: stopped here.
    fn drop(&mut self) {
        for pid in nats_servers_mentioning(&self.remote_home()) {
            let _ = skypipe_nats::stop_pid(pid, std::time::Duration::from_secs(5));
        }
    }
}

fn whoami() -> String {
    let out = Command::new("id").arg("-un").output().expect("id -un");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// One line on stderr, exit 1, and nothing left on the remote.
#[track_caller]
fn refused(out: &std::process::Output, says: &str, sshd: &Sshd) {
    let err = stderr_of(out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(err.contains(says), "{err}");
    assert!(out.stdout.len() < 200 || !String::from_utf8_lossy(&out.stdout).contains("done"));
    assert_eq!(
        sshd.remote_files(),
        Vec::<PathBuf>::new(),
        "nothing installed"
    );
}

#[test]
fn deploy_join_a_second_machine_upgrade_and_remove() {
    let sshd = Sshd::start();
    let laptop = LocalHome::new();
    let port = skypipe_nats::free_port().expect("port");
    let listen = format!("127.0.0.2:{port}");
    let out = sshd.skypipe(&laptop, &["server", "deploy", "vps", "--listen", &listen]);
    assert_ok(&out);
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(said.contains("installed in ~/.local/bin on vps"), "{said}");
    assert!(
        said.contains("background process"),
        "which it chose: {said}"
    );
    assert!(said.contains("joined as"), "{said}");
    assert!(sshd.remote_home().join(".local/bin/skypipe").exists());
    assert!(sshd.remote_home().join(".local/bin/nats-server").exists());

    // A second machine joins with an invite made there.
    let desk = LocalHome::new();
    let mut inv = sshd.ssh("$HOME/.local/bin/skypipe invite");
    let (inv, target, code) = invite_from(&mut inv);
    assert_ok(&desk.run(&["join", &target, &code]));
    assert_ok(&inv.wait_output(HANG));
    stream(&laptop, &desk, "big", 100 << 20, 3);

    // Deploying again upgrades and keeps what waits.
    let waiting = random_bytes(5_000_000, 4);
    assert_ok(&laptop.send(&["kept"], &waiting));
    let out = sshd.skypipe(&laptop, &["server", "deploy", "vps", "--listen", &listen]);
    assert_ok(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("data, keys and machines kept"));
    let got = desk.run(&["--recv", "kept"]);
    assert_ok(&got);
    assert_eq!(sha(&got.stdout), sha(&waiting));

    let status = sshd.skypipe(&laptop, &["server", "deploy", "vps", "--status"]);
    assert_ok(&status);
    let text = String::from_utf8_lossy(&status.stdout).into_owned();
    assert!(text.contains("running") && text.contains("up:"), "{text}");
    assert!(
        text.contains("connected now") || text.contains("LAST SEEN"),
        "{text}"
    );

    // Stopping stops it; removing leaves no process and no file behind.
    let out = sshd.skypipe(&laptop, &["server", "deploy", "vps", "--stop"]);
    assert_ok(&out);
    assert!(nats_servers_mentioning(&sshd.remote_home()).is_empty());
    let out = sshd.skypipe(&laptop, &["server", "deploy", "vps", "--remove"]);
    assert_ok(&out);
    assert_eq!(sshd.remote_files(), Vec::<PathBuf>::new());
    assert!(eventually(std::time::Duration::from_secs(10), || {
        nats_servers_mentioning(&sshd.remote_home()).is_empty()
    }));
    assert!(!laptop
        .home()
        .join(".config/nats/context/skypipe-127.0.0.2.json")
        .exists());
}

#[test]
fn an_unreachable_host_and_a_refused_key_are_one_line_each() {
    let sshd = Sshd::start();
    let laptop = LocalHome::new();
    let out = sshd.skypipe(&laptop, &["server", "deploy", "gone"]);
    refused(&out, "cannot reach gone over ssh", &sshd);
    let out = sshd.skypipe(&laptop, &["server", "deploy", "wrongkey"]);
    refused(&out, "ssh to wrongkey was refused", &sshd);
}

/// An sshd whose sessions find `name` (a script printing `output`) first on PATH.
fn sshd_with_fake(name: &str, output: &str) -> (Sshd, tempfile::TempDir) {
    let bin = tempfile::tempdir().expect("tempdir");
    let path = bin.path().join(name);
    std::fs::write(&path, format!("#!/bin/sh\nprintf '%s\\n' '{output}'\n")).expect("fake");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    (Sshd::with_path(Some(bin.path())), bin)
}

#[test]
fn another_system_is_refused_before_anything_is_copied() {
    let (sshd, _bin) = sshd_with_fake("uname", "FreeBSD amd64");
    let laptop = LocalHome::new();
    let out = sshd.skypipe(&laptop, &["server", "deploy", "vps"]);
    refused(&out, "runs \"FreeBSD amd64\"", &sshd);
}

#[test]
fn a_full_disk_is_refused_before_anything_is_copied() {
    let (sshd, _bin) = sshd_with_fake(
        "df",
        "Filesystem 1024-blocks Used Available Capacity Mounted on\n/dev/x 100 99 1 99% /",
    );
    let laptop = LocalHome::new();
    let out = sshd.skypipe(&laptop, &["server", "deploy", "vps"]);
    refused(&out, "no room on vps", &sshd);
}

#[test]
fn a_taken_port_leaves_nothing_installed() {
    let sshd = Sshd::start();
    let laptop = LocalHome::new();
    let taken = std::net::TcpListener::bind("127.0.0.2:0").expect("bind");
    let at = taken.local_addr().expect("addr").to_string();
    let out = sshd.skypipe(&laptop, &["server", "deploy", "vps", "--listen", &at]);
    refused(&out, "is taken", &sshd);
}

#[test]
fn data_from_a_newer_skypipe_is_left_alone() {
    let sshd = Sshd::start();
    let data = sshd.remote_home().join(".local/share/skypipe");
    std::fs::create_dir_all(&data).expect("data");
    std::fs::write(data.join("layout"), "99\n").expect("layout");
    let laptop = LocalHome::new();
    let out = sshd.skypipe(&laptop, &["server", "deploy", "vps"]);
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("newer skypipe"), "{err}");
    assert_eq!(sshd.remote_files(), vec![data.join("layout")]);
}

#[test]
fn an_older_skypipes_data_there_is_upgraded_in_place() {
    let sshd = Sshd::start();
    // An older skypipe's local server left a payload there, and its data has no layout mark.
    let old = LocalHome::new();
    let remote = sshd.remote_home();
    let mut c = bare_cmd(&remote);
    c.env("SKYPIPE_LOCAL_PORT", old.port.to_string())
        .args(["--send", "left"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let data = random_bytes(1_000_000, 12);
    let (child, writer) = spawn_with_input(&mut c, &data);
    assert_ok(&child.wait_output(HANG));
    writer.join().expect("writer");
    let mut stop = bare_cmd(&remote);
    stop.env("SKYPIPE_LOCAL_PORT", old.port.to_string())
        .args(["server", "stop"])
        .stdout(Stdio::null());
    assert!(stop.status().expect("stop").success());
    std::fs::remove_file(remote.join(".local/share/skypipe/layout")).expect("no layout mark");

    let laptop = LocalHome::new();
    let port = skypipe_nats::free_port().expect("port");
    let out = sshd.skypipe(
        &laptop,
        &[
            "server",
            "deploy",
            "vps",
            "--listen",
            &format!("127.0.0.2:{port}"),
        ],
    );
    assert_ok(&out);
    let got = laptop.run(&["--recv", "left"]);
    assert_ok(&got);
    assert_eq!(sha(&got.stdout), sha(&data));
    let out = sshd.skypipe(&laptop, &["server", "deploy", "vps", "--remove"]);
    assert_ok(&out);
}
