//! What skypipe says of itself: `--version`, `--help` and the man page.

use std::process::{Command, Stdio};

use super::harness::*;

fn run(args: &[&str]) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = bare_cmd(dir.path())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run");
    assert_ok(&out);
    String::from_utf8(out.stdout).expect("text")
}

#[test]
fn version_names_the_protocol_and_the_commit() {
    let text = run(&["--version"]);
    let commit = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    assert_eq!(
        text.trim(),
        format!(
            "skypipe {} (protocol 2, commit {commit})",
            env!("CARGO_PKG_VERSION")
        )
    );
}

#[test]
fn help_puts_the_connection_flags_under_their_own_heading() {
    let text = run(&["--help"]);
    let (options, connection) = text.split_once("\nConnection:\n").expect("a heading");
    for flag in ["--server", "--context", "--creds", "--tlsca", "--prefix"] {
        assert!(connection.contains(flag), "{flag} under Connection: {text}");
        assert!(
            !options.contains(&format!("{flag} ")),
            "{flag} once: {text}"
        );
    }
    assert!(options.contains("--follow"), "{text}");
}

#[test]
fn the_man_page_lists_the_environment_and_the_files_and_only_pages_that_exist() {
    let page = run(&["man"]);
    let sections: Vec<&str> = page
        .lines()
        .filter_map(|l| l.strip_prefix(".SH "))
        .collect();
    for s in [
        "NAME",
        "SYNOPSIS",
        "OPTIONS",
        "COMMANDS",
        "ENVIRONMENT",
        "FILES",
    ] {
        assert!(sections.contains(&s), "{s} in {sections:?}");
    }
    // Every variable the README names is in the page (roff writes `_` as is).
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README");
    let mut vars: Vec<&str> = readme
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("NATS_") || w.starts_with("SKYPIPE_"))
        .collect();
    vars.sort();
    vars.dedup();
    assert!(vars.len() > 15, "{vars:?}");
    let environment = page
        .split(".SH ENVIRONMENT")
        .nth(1)
        .and_then(|rest| rest.split(".SH ").next())
        .expect("ENVIRONMENT");
    for var in vars.iter().filter(|v| **v != "SKYPIPE_COMMIT") {
        assert!(environment.contains(var), "{var} in ENVIRONMENT");
    }
    assert!(page.contains("context.txt") && page.contains("local\\-user.nk"));
    // No page per command exists: none is referred to.
    assert!(!page.contains("(1)"), "a reference to another page");
}
