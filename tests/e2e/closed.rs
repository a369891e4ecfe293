//! Every subcommand into a closed pipe (`skypipe check | grep -q x`, `skypipe server status |
//! head -1`): the output ends there, the command keeps its own exit code, nothing panics.

use std::process::{Command, Stdio};

use super::harness::*;

/// Which of the two outputs is the closed pipe.
#[derive(Debug, Clone, Copy)]
enum Closed {
    Stdout,
    Stderr,
}

/// Runs `cmd` with stdout (or stderr) the write end of a pipe whose reader is gone, stdin at
/// /dev/null, and returns its exit code and what it said on the other output.
fn run_into_closed_pipe(mut cmd: Command, closed: Closed) -> (Option<i32>, String) {
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    cmd.stdin(Stdio::null());
    match closed {
        Closed::Stdout => cmd.stdout(writer).stderr(Stdio::piped()),
        Closed::Stderr => cmd.stderr(writer).stdout(Stdio::piped()),
    };
    let out = cmd.start().wait_output(HANG);
    let other = match closed {
        Closed::Stdout => stderr_of(&out),
        Closed::Stderr => String::from_utf8_lossy(&out.stdout).into_owned(),
    };
    (out.status.code(), other)
}

/// Asserts that `args` run into a closed stdout and into a closed stderr exit with `code`
/// and never panic.
#[track_caller]
fn assert_ends_quietly(cmd: impl Fn(&[&str]) -> Command, args: &[&str], code: i32) {
    for closed in [Closed::Stdout, Closed::Stderr] {
        let (got, said) = run_into_closed_pipe(cmd(args), closed);
        assert!(!said.contains("panicked"), "{args:?} {closed:?}: {said}");
        assert_eq!(got, Some(code), "{args:?} into a closed {closed:?}: {said}");
    }
}

#[test]
fn reports_and_tables_end_quietly_at_a_closed_pipe() {
    let b = Bench::new();
    let cmd = |args: &[&str]| b.cmd(args);
    assert_ends_quietly(cmd, &["check"], 0);
    assert_ends_quietly(cmd, &["monitor", "--once"], 0);
    assert_ends_quietly(cmd, &["monitor", "--json"], 0);
    for help in [
        &["--help"][..],
        &["-h"],
        &["--version"],
        &["help"],
        &["send", "--help"],
        &["server", "--help"],
    ] {
        assert_ends_quietly(cmd, help, 0);
    }
    assert_ok(&b.send_bytes(&["looked-at"], &random_bytes(3_000_000, 62)));
    assert_ends_quietly(cmd, &["ls"], 0);
    assert_ends_quietly(cmd, &["ls", "--json"], 0);
    assert_ends_quietly(cmd, &["peek", "looked-at"], 0);
    assert_ends_quietly(cmd, &["rm", "--yes", "looked-at"], 0);
    assert_eq!(queue_messages(&b.url()), 0, "rm dropped it");
    assert_ends_quietly(cmd, &["completions", "bash"], 0);
    assert_ends_quietly(cmd, &["man"], 0);
    assert_ends_quietly(cmd, &["setup", "--name", "closed"], 0);
    // As reported: `skypipe check | grep -q jetstream`, and into `head -c 1`.
    for reader in ["grep -q jetstream", "head -c 1 > /dev/null"] {
        let script = format!("\"$SKYPIPE\" check | {reader}; echo \"${{PIPESTATUS[0]}}\"");
        let out = shell(&b, &script).output().expect("bash");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "0\n",
            "{reader}: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
    // A usage error says so on stderr, or nowhere when stderr is closed: exit 2 either way.
    assert_ends_quietly(cmd, &["p", "--ttl", "1h"], 2);
}

#[test]
fn pipes_end_quietly_at_a_closed_pipe() {
    let b = Bench::new();
    let data = random_bytes(3_000_000, 61);
    let file = b.file("in", &data);
    let send = |args: &[&str]| {
        let mut c = b.cmd(&[&["send", "--progress"], args].concat());
        c.stdin(Stdio::from(std::fs::File::open(&file).expect("open")));
        c
    };
    // A sender writes nothing to stdout; its progress goes to stderr.
    for closed in [Closed::Stdout, Closed::Stderr] {
        let (reader, writer) = std::io::pipe().expect("pipe");
        drop(reader);
        let mut c = send(&["p"]);
        match closed {
            Closed::Stdout => c.stdout(writer).stderr(Stdio::piped()),
            Closed::Stderr => c.stderr(writer).stdout(Stdio::piped()),
        };
        let out = c.start().wait_output(HANG);
        assert_eq!(
            out.status.code(),
            Some(0),
            "send, {closed:?}: {}",
            stderr_of(&out)
        );
    }
    // A receiver whose reader went away took the payload and ends with exit 0 (README).
    let cmd = |args: &[&str]| b.cmd(args);
    assert_ends_quietly(cmd, &["recv", "--progress", "p"], 0);
    assert_eq!(queue_messages(&b.url()), 0, "both payloads were taken");
}

#[test]
fn the_local_servers_commands_end_quietly_at_a_closed_pipe() {
    let h = LocalHome::new();
    let cmd = |args: &[&str]| h.cmd(args);
    assert_ends_quietly(cmd, &["server", "status"], 3);
    assert_ends_quietly(cmd, &["server", "start"], 0);
    assert_ends_quietly(cmd, &["server", "status"], 0);
    assert_ends_quietly(cmd, &["server", "stop"], 0);
}
