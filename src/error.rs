//! Failures that end a command with a particular exit code, and the one place that maps an
//! error to its code. Anything else is a runtime error (exit 1).

/// Exit codes, as documented in README.md and `skypipe --help`.
pub(crate) mod code {
    pub(crate) const OK: i32 = 0;
    pub(crate) const RUNTIME: i32 = 1;
    pub(crate) const USAGE: i32 = 2;
    pub(crate) const ABORTED: i32 = 3;
    pub(crate) const RESUMED: i32 = 4;
    pub(crate) const TIMEOUT: i32 = 124;
    /// As a shell reports a writer killed by SIGPIPE (128 + 13): the pipe's reading end went
    /// away.
    pub(crate) const DROPPED: i32 = 141;
    pub(crate) const INTERRUPTED: i32 = 130;
}

/// An ending that is not a plain runtime error.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Failure {
    /// Bad input from the user: exit 2.
    #[error("{0}")]
    Usage(String),
    /// The sender aborted the payload: exit 3.
    #[error("{0}")]
    Aborted(String),
    /// A plain receiver wrote only the rest of a payload another taker began: exit 4.
    #[error("{0}")]
    Resumed(String),
    /// A sender's payload left the pipe before it was all sent (taken by a receiver that
    /// stopped reading, or dropped by `skypipe rm`): exit 141.
    #[error("{0}")]
    Dropped(String),
    /// `--timeout` ran out: exit 124.
    #[error("{0}")]
    TimedOut(String),
    /// A setting that cannot be used (flags, variables or a context that do not go
    /// together): exit 2, said as the setting's own error says it.
    #[error(transparent)]
    Setting(Box<dyn std::error::Error + Send + Sync>),
    /// Ctrl-C (or SIGTERM): exit 130.
    #[error("interrupted")]
    Interrupted,
}

/// The exit code for an error: a [`Failure`] anywhere in the chain decides, else 1.
pub(crate) fn exit_code(err: &anyhow::Error) -> i32 {
    for cause in err.chain() {
        if let Some(f) = cause.downcast_ref::<Failure>() {
            return match f {
                Failure::Usage(_) | Failure::Setting(_) => code::USAGE,
                Failure::Aborted(_) => code::ABORTED,
                Failure::Resumed(_) => code::RESUMED,
                Failure::TimedOut(_) => code::TIMEOUT,
                Failure::Dropped(_) => code::DROPPED,
                Failure::Interrupted => code::INTERRUPTED,
            };
        }
    }
    code::RUNTIME
}

/// An error and its causes on one line, each cause after a `: `, as `{:#}` writes them, but a
/// cause whose text ends the line already is not said twice (many errors print their source
/// in their own message and give it as their source too).
pub(crate) fn one_line(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if text.is_empty() || line.ends_with(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context as _;

    #[test]
    fn codes_follow_the_chain() {
        let e: anyhow::Result<()> = Err(Failure::TimedOut("x".into()).into());
        let e = e.context("while waiting").expect_err("error");
        assert_eq!(exit_code(&e), code::TIMEOUT);
        assert_eq!(exit_code(&anyhow::anyhow!("boom")), code::RUNTIME);
        let dropped: anyhow::Error = Failure::Dropped("x".into()).into();
        assert_eq!(exit_code(&dropped.context("while sending")), 141);
    }

    #[derive(Debug)]
    struct Says {
        text: &'static str,
        source: Option<std::io::Error>,
    }

    impl std::fmt::Display for Says {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.text)
        }
    }

    impl std::error::Error for Says {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.source.as_ref().map(|e| e as _)
        }
    }

    #[test]
    fn a_cause_its_error_already_said_is_not_said_twice() {
        let io = || std::io::Error::other("timed out");
        let e = anyhow::Error::new(Says {
            text: "request failed: timed out",
            source: Some(io()),
        })
        .context("cannot reach the server");
        assert_eq!(
            one_line(&e),
            "cannot reach the server: request failed: timed out"
        );
        let e = anyhow::Error::new(Says {
            text: "request failed",
            source: Some(io()),
        })
        .context("cannot reach the server");
        assert_eq!(
            one_line(&e),
            "cannot reach the server: request failed: timed out"
        );
    }
}
