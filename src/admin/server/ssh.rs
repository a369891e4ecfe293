//! Running commands on another machine through the system's `ssh` (the user's keys, agent
//! and `~/.ssh/config`), for `skypipe server deploy`, and what went wrong when they fail.

use std::io::IsTerminal as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use anyhow::Context as _;
use thiserror::Error;

/// Why a command on the other machine failed.
#[derive(Debug, Error, PartialEq, Eq)]
pub(crate) enum SshError {
    /// ssh was not let in.
    #[error(
        "ssh to {target} was refused ({said}): check the key, agent and ~/.ssh/config you use \
         for it"
    )]
    Refused { target: String, said: String },
    /// ssh stopped over the machine's host key.
    #[error("ssh to {target} stopped: {said}")]
    HostKey { target: String, said: String },
    /// ssh did not get there.
    #[error("cannot reach {target} over ssh: {said}")]
    Unreachable { target: String, said: String },
    /// The command ran there and failed.
    #[error("{what} on {target} failed: {said}")]
    Failed {
        what: String,
        target: String,
        said: String,
    },
}

impl SshError {
    /// The kind of an ssh failure (exit 255), from the last line ssh wrote: ssh tells the
    /// kinds apart in its words only.
    fn of_ssh(target: &str, said: String) -> SshError {
        let lower = said.to_ascii_lowercase();
        let target = target.to_string();
        if lower.contains("permission denied") || lower.contains("too many authentication") {
            SshError::Refused { target, said }
        } else if lower.contains("host key") {
            SshError::HostKey { target, said }
        } else {
            SshError::Unreachable { target, said }
        }
    }
}

/// Quotes a word for a POSIX shell.
pub(crate) fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// The ssh command: `SKYPIPE_SSH_COMMAND` (run by `sh`, as git runs `GIT_SSH_COMMAND`) or
/// `ssh`, towards one target.
pub(crate) struct Ssh {
    command: String,
    target: String,
}

impl Ssh {
    pub(crate) fn new(env: &dyn Fn(&str) -> Option<String>, target: &str) -> Ssh {
        Ssh {
            command: env("SKYPIPE_SSH_COMMAND")
                .filter(|c| !c.trim().is_empty())
                .unwrap_or_else(|| "ssh".into()),
            target: target.to_string(),
        }
    }

    fn base(&self, options: &[&str]) -> Command {
        let mut c = Command::new("sh");
        c.arg("-c")
            .arg(format!("{} \"$@\"", self.command))
            .arg("ssh")
            .args(options);
        c
    }

    /// Runs `script` with `sh` on the machine, its stdin from `input` (or nothing).
    pub(crate) fn run(&self, script: &str, input: Option<Input<'_>>) -> anyhow::Result<Output> {
        let mut options = vec!["-o", "ConnectTimeout=10"];
        if !std::io::stdin().is_terminal() {
            options.extend(["-o", "BatchMode=yes"]);
        }
        let mut c = self.base(&options);
        c.arg("--")
            .arg(&self.target)
            .arg(format!("sh -c {}", sh_quote(script)));
        c.stdin(match input {
            Some(Input::File(path)) => Stdio::from(
                std::fs::File::open(path)
                    .with_context(|| format!("cannot read {}", path.display()))?,
            ),
            Some(Input::Text(_)) => Stdio::piped(),
            None => Stdio::null(),
        });
        let mut child = c
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot run ssh")?;
        if let (Some(Input::Text(text)), Some(mut stdin)) = (input, child.stdin.take()) {
            use std::io::Write as _;
            stdin
                .write_all(text.as_bytes())
                .context("cannot write to ssh")?;
        }
        let out = child.wait_with_output().context("cannot run ssh")?;
        if out.status.code() == Some(255) {
            return Err(self.ssh_failed(&out));
        }
        Ok(out)
    }

    /// Runs `script` and insists on exit 0; its last line of stderr is the error.
    pub(crate) fn ok(
        &self,
        script: &str,
        input: Option<Input<'_>>,
        what: &str,
    ) -> anyhow::Result<String> {
        let out = self.run(script, input)?;
        if !out.status.success() {
            return Err(SshError::Failed {
                what: what.to_string(),
                target: self.target.clone(),
                said: last_line(&out.stderr).unwrap_or_else(|| format!("exit {}", out.status)),
            }
            .into());
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Why ssh itself failed (exit 255), from its last line on stderr.
    fn ssh_failed(&self, out: &Output) -> anyhow::Error {
        let said = last_line(&out.stderr).unwrap_or_else(|| "no reason given".into());
        SshError::of_ssh(&self.target, said).into()
    }

    /// The host name ssh connects to (`HostName` of `~/.ssh/config`, else the target's).
    pub(crate) fn host_name(&self) -> String {
        let from_target = self
            .target
            .rsplit('@')
            .next()
            .unwrap_or(&self.target)
            .to_string();
        let out = self
            .base(&["-G", "--"])
            .arg(&self.target)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output();
        out.ok()
            .filter(|o| o.status.success())
            .and_then(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .find_map(|l| l.strip_prefix("hostname ").map(str::to_string))
            })
            .unwrap_or(from_target)
    }
}

/// What a remote command reads.
#[derive(Clone, Copy)]
pub(crate) enum Input<'a> {
    File(&'a Path),
    Text(&'a str),
}

pub(crate) fn last_line(bytes: &[u8]) -> Option<String> {
    String::from_utf8_lossy(bytes)
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty() && !l.starts_with("Warning: Permanently added"))
        .map(|l| l.trim_start_matches("skypipe: ").to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_for_the_remote_shell() {
        assert_eq!(sh_quote("a b"), "'a b'");
        assert_eq!(sh_quote("it's"), "'it'\\''s'");
    }

    #[test]
    fn what_ssh_said_tells_the_kind() {
        let kind = |said: &str| SshError::of_ssh("box", said.into());
        assert!(matches!(
            kind("user@box: Permission denied (publickey)."),
            SshError::Refused { .. }
        ));
        assert!(matches!(
            kind("Host key verification failed."),
            SshError::HostKey { .. }
        ));
        assert!(matches!(
            kind("ssh: connect to host box port 22: Connection refused"),
            SshError::Unreachable { .. }
        ));
        assert_eq!(
            last_line(b"Warning: Permanently added 'box'\nskypipe: no room\n\n").as_deref(),
            Some("no room")
        );
    }
}
