//! What a command does: the verbs `send` and `recv`, and the bare form's guess, which never
//! sends a script's input and never sends an empty payload it guessed.

use std::os::fd::OwnedFd;
use std::process::{Output, Stdio};

use super::harness::*;

/// A terminal: the child gets the pty's other end; this end is kept open (and its output
/// never read: the commands here write nothing to a terminal but a line or two).
fn terminal() -> (OwnedFd, OwnedFd) {
    let pty = nix::pty::openpty(None, None).expect("openpty");
    (pty.master, pty.slave)
}

/// Asserts a usage error: exit 2 and one line on stderr that contains each of `needles`.
#[track_caller]
fn assert_usage(out: &Output, needles: &[&str]) {
    let err = stderr_of(out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    for needle in needles {
        assert!(err.contains(needle), "{needle:?} in: {err}");
    }
}

/// Nothing waits in the pipe: a taker finds nothing within a second.
#[track_caller]
fn assert_nothing_queued(b: &Bench, pipe: &str) {
    let out = b.recv(&[pipe, "--timeout", "1s"]);
    assert_eq!(out.status.code(), Some(124), "{}", stderr_of(&out));
    assert!(out.stdout.is_empty());
}

#[test]
fn a_while_read_loop_keeps_its_input_and_is_told_to_say_which_side() {
    let b = Bench::new();
    let dir = b.path("loop");
    std::fs::create_dir_all(&dir).expect("mkdir");
    // As a user wrote it: each skypipe was meant to receive into its own file.
    let script = format!(
        "cd '{}' && printf 'h1\\nh2\\n' | while read h; do \"$SKYPIPE\" p > out.$h; \
         echo \"$h: exit $?\"; done",
        dir.display()
    );
    let out = shell(&b, &script).output().expect("bash");
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        said, "h1: exit 2\nh2: exit 2\n",
        "the loop ran for each line"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 2, "one line each: {err}");
    assert!(err.contains("`skypipe recv p`"), "{err}");
    assert!(err.contains("`skypipe send p`"), "{err}");
    assert_nothing_queued(&b, "p");

    // Said as the message says, the loop does what was meant.
    assert_ok(&b.send_bytes(&["p"], b"first\n"));
    assert_ok(&b.send_bytes(&["p"], b"second\n"));
    let script = format!(
        "cd '{}' && printf 'h1\\nh2\\n' | while read h; do \"$SKYPIPE\" recv p > out.$h || exit 1; \
         done",
        dir.display()
    );
    let out = shell(&b, &script).output().expect("bash");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read(dir.join("out.h1")).expect("out.h1"),
        b"first\n"
    );
    assert_eq!(
        std::fs::read(dir.join("out.h2")).expect("out.h2"),
        b"second\n"
    );
}

#[test]
fn a_skypipe_run_by_ssh_with_stdout_redirected_is_refused_not_sent() {
    // ssh without a terminal gives the remote command a socket (or pipe) as stdin, and its
    // stdout goes back over the connection: `ssh host skypipe logs > x`.
    let b = Bench::new();
    let (stdin, _ssh) = std::os::unix::net::UnixStream::pair().expect("socketpair");
    let x = b.path("x");
    let child = b
        .cmd(&["logs"])
        .stdin(Stdio::from(OwnedFd::from(stdin)))
        .stdout(Stdio::from(std::fs::File::create(&x).expect("create")))
        .stderr(Stdio::piped())
        .start();
    let out = wait_output(child, HANG);
    assert_usage(&out, &["stdin is a socket", "`skypipe recv logs`"]);
    assert_nothing_queued(&b, "logs");

    // `ssh host skypipe recv logs > x` receives.
    assert_ok(&b.send_bytes(&["logs"], b"log line\n"));
    let (stdin, _ssh) = std::os::unix::net::UnixStream::pair().expect("socketpair");
    let child = b
        .cmd(&["recv", "logs"])
        .stdin(Stdio::from(OwnedFd::from(stdin)))
        .stdout(Stdio::from(std::fs::File::create(&x).expect("create")))
        .stderr(Stdio::piped())
        .start();
    assert_ok(&wait_output(child, HANG));
    assert_eq!(std::fs::read(&x).expect("x"), b"log line\n");
}

#[test]
fn an_empty_stdin_is_never_sent_by_a_guess() {
    let b = Bench::new();
    let got = b.path("got");
    // `: | skypipe p > got`
    let out = shell(&b, &format!(": | \"$SKYPIPE\" p > '{}'", got.display()))
        .output()
        .expect("bash");
    assert_usage(&out, &["`skypipe send p`", "`skypipe recv p`"]);
    // `: | skypipe p` at a terminal: the guess is send, and there is nothing to send.
    let (_term, tty) = terminal();
    let mut child = b
        .cmd(&["p"])
        .stdin(Stdio::piped())
        .stdout(Stdio::from(tty))
        .stderr(Stdio::piped())
        .start();
    drop(child.stdin.take());
    let out = wait_output(child, HANG);
    assert_usage(&out, &["stdin was empty", "`skypipe send p`"]);
    assert_nothing_queued(&b, "p");
    // Said plainly, an empty payload is sent and taken.
    assert_ok(&b.send_bytes(&["p"], b""));
    let out = b.recv(&["p", "--timeout", "10s"]);
    assert_ok(&out);
    assert!(out.stdout.is_empty());
}

#[test]
fn the_bare_forms_work_at_a_terminal() {
    let b = Bench::new();
    let data = random_bytes(300_000, 18);
    let file = b.file("f", &data);
    // `cat f | skypipe files`, stdout a terminal: sends.
    let (_term, tty) = terminal();
    let mut c = b.cmd(&["files"]);
    c.stdout(Stdio::from(tty));
    let (child, writer) = {
        let mut child = c.stdin(Stdio::piped()).stderr(Stdio::piped()).start();
        let mut stdin = child.stdin.take().expect("stdin");
        let data = data.clone();
        let writer = std::thread::spawn(move || {
            let _ = std::io::Write::write_all(&mut stdin, &data);
        });
        (child, writer)
    };
    let out = wait_output(child, HANG);
    writer.join().expect("writer");
    assert_ok(&out);
    // `skypipe files > out`, stdin a terminal: receives.
    let (_term, tty) = terminal();
    let output = b.path("out");
    let child = b
        .cmd(&["files"])
        .stdin(Stdio::from(tty))
        .stdout(Stdio::from(std::fs::File::create(&output).expect("create")))
        .stderr(Stdio::piped())
        .start();
    assert_ok(&wait_output(child, HANG));
    assert_eq!(sha_file(&output), sha_file(&file));

    // `echo | skypipe trigger` at a terminal wakes a waiting `skypipe trigger`.
    let waiter = b.spawn_ready(&["trigger"], &waiting("trigger"));
    let (_term, tty) = terminal();
    let out = shell(&b, "echo | \"$SKYPIPE\" trigger")
        .stdout(Stdio::from(tty))
        .stderr(Stdio::piped())
        .output()
        .expect("bash");
    assert!(out.status.success(), "{}", stderr_of(&out));
    let woken = wait_output(waiter, HANG);
    assert_ok(&woken);
    assert_eq!(woken.stdout, b"\n");
}

#[test]
fn the_verbs_are_reserved_and_pipes_named_like_them_are_reached() {
    let b = Bench::new();
    // A pipe named `send`: `skypipe send send` puts a payload in it, `skypipe -- send` and
    // `skypipe recv send` take from it.
    assert_ok(&b.send_bytes(&["send"], b"one\n"));
    assert_ok(&b.send_bytes(&["send"], b"two\n"));
    let out = b.recv(&["--", "send"]);
    assert_ok(&out);
    assert_eq!(out.stdout, b"one\n");
    let out = b.recv(&["recv", "send"]);
    assert_ok(&out);
    assert_eq!(out.stdout, b"two\n");
    // Flags before the verb count; a name before it is refused.
    assert_ok(&b.send_bytes(&["-q", "recv"], b"three\n"));
    let out = b.recv(&["-q", "recv", "--timeout", "10s", "recv"]);
    assert_ok(&out);
    assert_eq!(out.stdout, b"three\n");
    assert_usage(&b.recv(&["p", "recv"]), &["`skypipe recv p`"]);
}

#[test]
fn flags_that_do_not_apply_are_usage_errors_that_name_them() {
    let b = Bench::new();
    let file = b.file("f", b"data\n");
    // --ttl on a receiver.
    assert_usage(&b.recv(&["p", "--ttl", "1h"]), &["--ttl is for senders"]);
    assert_usage(&b.recv(&["recv", "p", "--ttl", "1h"]), &["--ttl", "`recv`"]);
    // --sender-timeout on a listener, which takes nothing.
    assert_usage(
        &b.recv(&["p", "--listen", "--sender-timeout", "5s"]),
        &["--sender-timeout is for takers"],
    );
    // --allow-plaintext, --follow, --listen, --sender-timeout on a sender.
    for flag in [
        &["--allow-plaintext"][..],
        &["--follow"],
        &["--listen"],
        &["--sender-timeout", "5s"],
    ] {
        let out = b.send_file(&[&["p"], flag].concat(), &file);
        assert_usage(&out, &[flag[0], "`send` sends"]);
        let script = format!("echo data | \"$SKYPIPE\" --send p {}", flag.join(" "));
        let out = shell(&b, &script).output().expect("bash");
        assert_usage(&out, &[flag[0], "`--send` sends"]);
    }
    // --follow with data on stdin: the bare form would take, and the data would be lost.
    let child = b
        .cmd(&["p", "--follow"])
        .stdin(Stdio::from(std::fs::File::open(&file).expect("open")))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .start();
    assert_usage(&wait_output(child, HANG), &["--follow", "has data to send"]);
    // ... or with stdin a pipe and stdout a terminal, which is the bare form's send.
    let (_term, tty) = terminal();
    let out = shell(&b, "echo hi | \"$SKYPIPE\" p --allow-plaintext")
        .stdout(Stdio::from(tty))
        .stderr(Stdio::piped())
        .output()
        .expect("bash");
    assert_usage(
        &out,
        &["--allow-plaintext is for receivers", "`skypipe recv p`"],
    );
    assert_nothing_queued(&b, "p");
}

/// What a child writes to a terminal (its stderr), collected as it comes.
struct Screen {
    text: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    reader: std::thread::JoinHandle<()>,
}

impl Screen {
    /// A terminal for a child's stderr: the end to give it, and what it shows.
    fn new() -> (OwnedFd, Screen) {
        let (master, slave) = terminal();
        let text = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = text.clone();
        let reader = std::thread::spawn(move || {
            let mut master = std::fs::File::from(master);
            let mut buf = [0u8; 4096];
            // Ends when the last holder of the other end is gone (EIO).
            while let Ok(n) = std::io::Read::read(&mut master, &mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().expect("screen").extend_from_slice(&buf[..n]);
            }
        });
        (slave, Screen { text, reader })
    }

    fn now(&self) -> String {
        String::from_utf8_lossy(&self.text.lock().expect("screen")).into_owned()
    }

    #[track_caller]
    fn wait_for(&self, what: &str) {
        assert!(
            eventually(HANG, || self.now().contains(what)),
            "{what:?} never shown: {:?}",
            self.now()
        );
    }

    /// Everything shown, once the child is gone.
    fn finish(self) -> String {
        self.reader.join().expect("screen reader");
        let text = self.text.lock().expect("screen").clone();
        String::from_utf8_lossy(&text).into_owned()
    }
}

#[test]
fn at_a_terminal_progress_says_it_waits_then_sums_up_and_ctrl_c_clears_it() {
    let b = Bench::new();
    let data = random_bytes(3_000_000, 71);
    // A receiver: "waiting on pipe p..." until the payload comes, one summary line after.
    let (tty, screen) = Screen::new();
    let receiver = b
        .cmd(&["p"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(tty))
        .start();
    screen.wait_for("waiting on pipe p...");
    assert_ok(&b.send_bytes(&["p"], &data));
    let out = wait_output(receiver, HANG);
    assert!(out.status.success());
    assert_eq!(sha(&out.stdout), sha(&data));
    let shown = screen.finish();
    let last = shown
        .trim_end()
        .rsplit(['\r', '\n'])
        .next()
        .unwrap_or_default();
    let last = last.trim_start_matches("\u{1b}[2K");
    assert!(
        last.starts_with("skypipe: 3.0 MB received in ") && last.ends_with("B/s"),
        "{shown:?}"
    );
    // A sender: the same summary.
    let (tty, screen) = Screen::new();
    let file = b.file("f", &data);
    let sender = b
        .cmd(&["send", "p"])
        .stdin(Stdio::from(std::fs::File::open(&file).expect("open")))
        .stdout(Stdio::piped())
        .stderr(Stdio::from(tty))
        .start();
    assert!(wait_output(sender, HANG).status.success());
    assert!(screen.finish().contains("skypipe: 3.0 MB sent in "));
    assert_ok(&b.recv(&["p"]));
    // Ctrl-C while waiting: the line is cleared, and nothing is summed up.
    let (tty, screen) = Screen::new();
    let waiter = b
        .cmd(&["p"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(tty))
        .start();
    screen.wait_for("waiting on pipe p...");
    interrupt(&waiter);
    assert_eq!(wait_output(waiter, HANG).status.code(), Some(130));
    let shown = screen.finish();
    let after = shown
        .rsplit("waiting on pipe p...")
        .next()
        .unwrap_or_default();
    assert!(after.contains("\u{1b}[2K"), "cleared: {shown:?}");
    assert!(!after.contains("received"), "{shown:?}");
}

#[test]
fn at_a_terminal_a_receiver_shows_the_share_of_a_size_its_sender_announced() {
    let b = Bench::new();
    let data = random_bytes(3_000_000, 72);
    let file = b.file("sized", &data);
    // A sender reading a regular file knows the size, and tells it in the ticket.
    assert_ok(&b.send_file(&["sized"], &file));
    let (tty, screen) = Screen::new();
    let mut receiver = b
        .cmd(&["sized"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(tty))
        .start();
    // Held in the middle of the payload: its stdout is not read past 1 MB for now.
    let held = Held::new(&mut receiver, 1_000_000);
    held.wait_first();
    screen.wait_for(" received of 3.0 MB (");
    let got = held.finish();
    assert!(wait_output(receiver, HANG).status.success());
    assert_eq!(sha(&got), sha(&data));
    assert!(screen.finish().contains("skypipe: 3.0 MB received in "));
}
