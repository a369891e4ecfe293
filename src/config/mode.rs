//! What a pipe command does ([`Mode`]): named by a verb (`send`, `recv`) or a flag, or
//! guessed by the bare form from stdin and stdout; a flag of the other side is refused.

use crate::config::cli::{Cli, PipeArgs};
#[cfg(test)]
use crate::config::stdin::StdinKind;
use crate::config::stdin::Streams;
use crate::config::ConfigError;

/// What a pipe command does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// stdin becomes one payload.
    Send,
    /// Take the oldest payload (waiting for one) and end at its end.
    Take,
    /// Take every payload as it comes, for ever (or until `--timeout`).
    Follow,
    /// A live copy of what is sent; takes nothing. Ends at the first payload's end unless
    /// `follow`.
    Listen { follow: bool },
}

impl Mode {
    /// The receiving mode that `--listen` and `--follow` make.
    pub(crate) fn receiving(listen: bool, follow: bool) -> Mode {
        match (listen, follow) {
            (true, follow) => Mode::Listen { follow },
            (false, true) => Mode::Follow,
            (false, false) => Mode::Take,
        }
    }

    /// Whether it writes payloads to stdout.
    pub(crate) fn receives(self) -> bool {
        self != Mode::Send
    }

    /// Whether it goes on after a payload's end.
    pub(crate) fn keeps_going(self) -> bool {
        matches!(self, Mode::Follow | Mode::Listen { follow: true })
    }
}

/// Which side the command line names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Asked {
    /// `skypipe send NAME`, or `--send`.
    Send,
    /// `skypipe recv NAME`, or `--recv`.
    Recv,
    /// `skypipe NAME`: the mode is guessed from stdin and stdout.
    Bare,
}

/// A pipe command as the command line puts it, before it is checked.
#[derive(Debug, Clone)]
pub(crate) struct PipeRequest {
    pub(crate) name: Option<String>,
    pub(crate) asked: Asked,
    /// How the command names its side, for messages: `skypipe send`, `--recv`, ...
    pub(crate) asked_as: &'static str,
    pub(crate) flags: PipeArgs,
}

impl PipeRequest {
    /// The pipe command of a command line: the bare form, or the verbs `send` and `recv`
    /// (pipe flags before the verb count as given after it). `None` for other subcommands.
    pub(crate) fn from_cli(cli: &Cli) -> Result<Option<PipeRequest>, ConfigError> {
        use crate::config::cli::Command;
        let verb = match &cli.command {
            None => None,
            Some(Command::Send(a)) => Some((Asked::Send, "skypipe send", &a.name, &a.pipe)),
            Some(Command::Recv(a)) => Some((Asked::Recv, "skypipe recv", &a.name, &a.pipe)),
            Some(_) => return Ok(None),
        };
        let forced = match (cli.send, cli.recv) {
            (true, true) => {
                return Err(ConfigError::Side(
                    "--send and --recv contradict each other: give one".into(),
                ))
            }
            (true, false) => Some((Asked::Send, "--send")),
            (false, true) => Some((Asked::Recv, "--recv")),
            (false, false) => None,
        };
        Ok(Some(match verb {
            Some((asked, asked_as, name, flags)) => {
                if let Some((_, flag)) = forced {
                    return Err(ConfigError::Side(format!(
                        "{flag} is not for `{asked_as}`, which already says what it does"
                    )));
                }
                if let Some(before) = &cli.name {
                    return Err(ConfigError::Side(format!(
                        "the pipe name goes after the verb: `{asked_as} {before}`"
                    )));
                }
                PipeRequest {
                    name: name.clone(),
                    asked,
                    asked_as,
                    flags: cli.pipe.overlaid(flags.clone()),
                }
            }
            None => {
                let (asked, asked_as) = forced.unwrap_or((Asked::Bare, "skypipe"));
                PipeRequest {
                    name: cli.name.clone(),
                    asked,
                    asked_as,
                    flags: cli.pipe.clone(),
                }
            }
        }))
    }

    /// `skypipe VERB NAME`, for messages.
    fn suggest(&self, verb: &str) -> String {
        match &self.name {
            Some(n) => format!("`skypipe {verb} {n}`"),
            None => format!("`skypipe {verb}`"),
        }
    }

    /// Decides the mode, and whether it was guessed. A flag that only the other side takes is
    /// a usage error naming it; the bare form refuses when stdin could be sent but stdout is
    /// not a terminal, since then a script's input and a receiver's output look the same.
    pub(crate) fn mode(&self, io: Streams) -> Result<(Mode, bool), ConfigError> {
        let decided = self.side(io)?;
        if matches!(decided.0, Mode::Listen { .. }) && self.flags.sender_timeout.is_some() {
            return Err(ConfigError::Side(
                "--sender-timeout is for takers, and --listen takes nothing".into(),
            ));
        }
        Ok(decided)
    }

    fn side(&self, io: Streams) -> Result<(Mode, bool), ConfigError> {
        let f = &self.flags;
        let receiver_flag = [
            (f.listen, "--listen"),
            (f.follow, "--follow"),
            (f.sender_timeout.is_some(), "--sender-timeout"),
            (f.allow_plaintext, "--allow-plaintext"),
        ]
        .into_iter()
        .find_map(|(given, flag)| given.then_some(flag));
        let sender_flag = f.ttl.is_some().then_some("--ttl");
        let receive = Mode::receiving(f.listen, f.follow);
        let refuse = |text: String| Err(ConfigError::Side(text));
        match self.asked {
            Asked::Send => match receiver_flag {
                Some(flag) => refuse(format!(
                    "{flag} is for receivers, and `{}` sends",
                    self.asked_as.trim_start_matches("skypipe ")
                )),
                None => Ok((Mode::Send, false)),
            },
            Asked::Recv => match sender_flag {
                Some(flag) => refuse(format!(
                    "{flag} is for senders, and `{}` receives",
                    self.asked_as.trim_start_matches("skypipe ")
                )),
                None => Ok((receive, false)),
            },
            Asked::Bare => match (receiver_flag, sender_flag) {
                (Some(r), Some(s)) => refuse(format!(
                    "{s} is for senders and {r} for receivers: give the flags of one side \
                     (with {} or {})",
                    self.suggest("send"),
                    self.suggest("recv")
                )),
                (Some(r), None) if io.stdin.readable() && io.stdout_is_terminal => refuse(format!(
                    "{r} is for receivers, but stdin is {} and stdout a terminal, which \
                         makes `skypipe NAME` send: {} receives, {} sends",
                    io.stdin.describe(),
                    self.suggest("recv"),
                    self.suggest("send")
                )),
                (Some(r), None) if io.stdin.readable() && io.stdin_has_data => refuse(format!(
                    "{r} is for receivers, but stdin ({}) has data to send, which a receiver \
                     never reads: {} sends it, {} receives",
                    io.stdin.describe(),
                    self.suggest("send"),
                    self.suggest(&format!("recv {r}"))
                )),
                (Some(_), None) => Ok((receive, false)),
                (None, Some(s)) if !io.stdin.readable() => refuse(format!(
                    "{s} is for senders, but stdin is {}, which makes `skypipe NAME` receive: \
                     {} sends (what you type, at a terminal)",
                    io.stdin.describe(),
                    self.suggest("send")
                )),
                (None, Some(_)) => Ok((Mode::Send, true)),
                (None, None) if !io.stdin.readable() => Ok((Mode::Take, false)),
                (None, None) if io.stdout_is_terminal => Ok((Mode::Send, true)),
                (None, None) => refuse(format!(
                    "stdin is {} and stdout is not a terminal, so skypipe cannot tell whether to \
                     send stdin or receive into stdout (as in a script, ssh or cron): use {} or \
                     {} (or --send / --recv); nothing was read or taken",
                    io.stdin.describe(),
                    self.suggest("send"),
                    self.suggest("recv")
                )),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    fn request(args: &[&str]) -> Result<PipeRequest, ConfigError> {
        use clap::Parser;
        let cli = Cli::try_parse_from(std::iter::once("skypipe").chain(args.iter().copied()))
            .expect("parses");
        PipeRequest::from_cli(&cli).map(|r| r.expect("a pipe command"))
    }

    fn io(stdin: StdinKind, stdin_has_data: bool, stdout_is_terminal: bool) -> Streams {
        Streams {
            stdin,
            stdin_has_data,
            stdout_is_terminal,
        }
    }

    fn mode_of(args: &[&str], io: Streams) -> Result<(Mode, bool), String> {
        request(args)
            .and_then(|r| r.mode(io))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn the_bare_form_guesses_only_when_it_is_clear() {
        let tty_in = io(StdinKind::Other, false, false);
        let piped_to_tty = io(StdinKind::Fifo, true, true);
        let piped_to_file = io(StdinKind::Fifo, false, false);
        assert_eq!(mode_of(&["p"], tty_in), Ok((Mode::Take, false)));
        assert_eq!(mode_of(&["p"], piped_to_tty), Ok((Mode::Send, true)));
        let unclear = mode_of(&["p"], piped_to_file).expect_err("refused");
        assert!(unclear.contains("`skypipe send p`") && unclear.contains("`skypipe recv p`"));
        assert!(unclear.contains("stdin is a pipe"), "{unclear}");
        let file_to_file = mode_of(&[], io(StdinKind::File, true, false)).expect_err("refused");
        assert!(file_to_file.contains("`skypipe send`"), "{file_to_file}");
        // A flag of one side settles it; a flag of the other side is refused, by name.
        assert_eq!(
            mode_of(&["p", "--follow"], piped_to_file),
            Ok((Mode::Follow, false))
        );
        assert_eq!(
            mode_of(&["p", "--ttl", "1h"], piped_to_file),
            Ok((Mode::Send, true))
        );
        let e = mode_of(&["p", "--follow"], piped_to_tty).expect_err("refused");
        assert!(e.starts_with("--follow is for receivers"), "{e}");
        let e = mode_of(&["p", "--follow"], io(StdinKind::Fifo, true, false)).expect_err("data");
        assert!(e.contains("has data to send"), "{e}");
        let e = mode_of(&["p", "--ttl", "1h"], tty_in).expect_err("refused");
        assert!(e.starts_with("--ttl is for senders"), "{e}");
        let e = mode_of(&["p", "--listen", "--sender-timeout", "5s"], tty_in).expect_err("tap");
        assert!(e.starts_with("--sender-timeout is for takers"), "{e}");
        let e = mode_of(&["p", "--ttl", "1h", "--listen"], tty_in).expect_err("both");
        assert!(e.contains("--ttl") && e.contains("--listen"), "{e}");
    }

    #[test]
    fn the_verbs_never_guess_and_refuse_the_other_sides_flags() {
        for io in [
            io(StdinKind::Other, false, false),
            io(StdinKind::Fifo, true, true),
            io(StdinKind::Fifo, false, false),
        ] {
            assert_eq!(mode_of(&["send", "p"], io), Ok((Mode::Send, false)));
            assert_eq!(mode_of(&["--send", "p"], io), Ok((Mode::Send, false)));
            assert_eq!(mode_of(&["recv", "p"], io), Ok((Mode::Take, false)));
            assert_eq!(mode_of(&["recv", "p", "-f"], io), Ok((Mode::Follow, false)));
            assert_eq!(
                mode_of(&["-q", "recv", "p", "--listen"], io),
                Ok((Mode::Listen { follow: false }, false))
            );
        }
        let io = io(StdinKind::Other, false, true);
        let e = mode_of(&["recv", "p", "--ttl", "1h"], io).expect_err("refused");
        assert_eq!(e, "--ttl is for senders, and `recv` receives");
        let e = mode_of(&["--follow", "send", "p"], io).expect_err("refused");
        assert_eq!(e, "--follow is for receivers, and `send` sends");
        let e = mode_of(&["--send", "p", "--allow-plaintext"], io).expect_err("refused");
        assert_eq!(e, "--allow-plaintext is for receivers, and `--send` sends");
        assert!(request(&["--recv", "send", "p"]).is_err());
        assert!(request(&["--send", "--recv", "p"]).is_err());
        let r = request(&["--", "send"]).expect("a pipe named send");
        assert_eq!((r.name.as_deref(), r.asked), (Some("send"), Asked::Bare));
        let r = request(&["recv", "ls"]).expect("a pipe named ls");
        assert_eq!((r.name.as_deref(), r.asked), (Some("ls"), Asked::Recv));
    }
}
