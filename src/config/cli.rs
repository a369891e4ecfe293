//! The command line as clap sees it. Nothing here is validated beyond what clap does;
//! [`crate::config`] turns it into the settings the rest of the program uses.

use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Args, Parser, Subcommand};

use crate::config::sizes;

const AFTER_HELP: &str = "\
Examples:
  skypipe | gzip -c > out.gz          wait for a payload on the default pipe
  cat file | skypipe                  send file into the default pipe
  cat a | skypipe files               queue a payload on pipe 'files'
  skypipe files > a                   take the oldest payload of 'files'
  skypipe go                          block until someone runs: echo | skypipe go
  skypipe logs --follow > all.log     take every payload of 'logs', forever
  skypipe logs --listen               tap 'logs' live without taking anything
  skypipe send jobs < job.json        in scripts, cron and ssh: say which side, never guess
  skypipe recv jobs > job.json
  skypipe ls                          the pipes: payloads waiting, bytes, senders, takers
  skypipe peek jobs                   the oldest payload of 'jobs', left for its taker
  skypipe rm jobs                     drop what waits in 'jobs'
  SKYPIPE_SECRET=... skypipe docs     with a secret: payloads are encrypted end to end

Mode of `skypipe NAME`: it receives when stdin is a terminal, /dev/null or closed; it sends
when stdin is a file, a FIFO or a socket and stdout is a terminal. When stdin could be sent
and stdout is not a terminal (a script, ssh, cron), it refuses (exit 2) rather than guess:
use `skypipe send NAME` or `skypipe recv NAME` (or --send / --recv). A guessed send whose
stdin is empty sends nothing (exit 2). The words send, recv, ls, peek, rm, monitor, server,
setup, check, completions, man and help are commands: a pipe named so is reached with
`skypipe -- NAME` (or `skypipe send NAME`, `skypipe recv NAME`).

Exit codes: 0 success, 1 runtime error, 2 usage error, 3 payload aborted by its sender,
4 only the rest of a payload another taker began was written (from the byte it names),
124 --timeout ran out, 130 interrupted, 141 a sender's payload left the pipe before it was all
sent (its receiver stopped reading, or `skypipe rm` dropped it).";

/// `skypipe --version`: the release, the protocol it speaks and the commit it was built from.
static VERSION: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "{} (protocol {}, commit {})",
        env!("CARGO_PKG_VERSION"),
        crate::protocol::pipe::VERSION,
        env!("SKYPIPE_COMMIT")
    )
});

/// Named pipes in the sky: move bytes between shells and machines through NATS JetStream.
#[derive(Debug, Parser)]
#[command(
    name = "skypipe",
    version = VERSION.as_str(),
    about,
    after_help = AFTER_HELP,
    subcommand_negates_reqs = true
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Option<Command>,

    /// Pipe name: letters, digits, '-' and '_' (1 to 128 characters). A pipe named like a
    /// subcommand is reached with `skypipe -- NAME`.
    #[arg(value_name = "NAME")]
    pub(crate) name: Option<String>,

    /// Send stdin into the pipe, whatever stdin and stdout are (as `skypipe send NAME`).
    #[arg(long)]
    pub(crate) send: bool,

    /// Receive from the pipe, whatever stdin and stdout are (as `skypipe recv NAME`).
    #[arg(long)]
    pub(crate) recv: bool,

    #[command(flatten)]
    pub(crate) pipe: PipeArgs,

    /// Say more about what skypipe does, on stderr (repeat for more).
    #[arg(short, long, action = ArgAction::Count, global = true)]
    pub(crate) verbose: u8,

    #[command(flatten)]
    pub(crate) conn: ConnArgs,
}

/// Every flag of a pipe command, as given on the bare form (`skypipe NAME ...`). The verbs
/// take the ones that apply to them ([`SendArgs`], [`RecvArgs`]); [`crate::config`] refuses
/// a flag that does not apply to what the command does.
#[derive(Debug, Clone, Default, Args)]
pub(crate) struct PipeArgs {
    /// Tap the pipe: a live copy of everything sent from now on; takes nothing. Exits at the
    /// first end of a payload unless --follow.
    #[arg(short, long)]
    pub(crate) listen: bool,

    /// Keep going: take (or, with --listen, copy) every payload as it comes, oldest first,
    /// concurrent payloads interleaved chunk by chunk.
    #[arg(short, long)]
    pub(crate) follow: bool,

    /// Taker: declare a payload's sender gone after DURATION with no data and no sign of life
    /// (living senders announce themselves every second, even when idle) [default: 60s]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub(crate) sender_timeout: Option<Duration>,

    /// Show progress on stderr even when it is not a terminal (plain lines).
    #[arg(long, conflicts_with = "quiet")]
    pub(crate) progress: bool,

    /// Sender: how long a payload waits in the pipe before it expires (e.g. 30m, 2h, 7days;
    /// from 1s to 100years).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub(crate) ttl: Option<Duration>,

    /// Receiver: give up with exit code 124 when no payload arrives within DURATION (with
    /// --follow: when nothing arrives for DURATION). Sender: give up (exit 1) when the server
    /// stores nothing for DURATION (its storage is full, or it stopped answering).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub(crate) timeout: Option<Duration>,

    /// Print nothing but errors on stderr.
    #[arg(short, long)]
    pub(crate) quiet: bool,

    /// Encrypt end to end with the secret in FILE (its contents, less a final line break;
    /// overrides SKYPIPE_SECRET): senders seal payloads, receivers open them and refuse
    /// plain ones
    #[arg(long, value_name = "FILE")]
    pub(crate) secret_file: Option<PathBuf>,

    /// Receiver with a secret: accept payloads that are not encrypted too.
    #[arg(long)]
    pub(crate) allow_plaintext: bool,
}

impl PipeArgs {
    /// The flags given, each with its name, in the order of `--help`.
    pub(crate) fn given(&self) -> Vec<&'static str> {
        [
            (self.listen, "--listen"),
            (self.follow, "--follow"),
            (self.sender_timeout.is_some(), "--sender-timeout"),
            (self.progress, "--progress"),
            (self.ttl.is_some(), "--ttl"),
            (self.timeout.is_some(), "--timeout"),
            (self.quiet, "--quiet"),
            (self.secret_file.is_some(), "--secret-file"),
            (self.allow_plaintext, "--allow-plaintext"),
        ]
        .into_iter()
        .filter_map(|(given, flag)| given.then_some(flag))
        .collect()
    }

    /// These flags with `later`'s on top (flags given after a verb over those before it).
    pub(crate) fn overlaid(&self, later: PipeArgs) -> PipeArgs {
        PipeArgs {
            listen: self.listen || later.listen,
            follow: self.follow || later.follow,
            sender_timeout: later.sender_timeout.or(self.sender_timeout),
            progress: self.progress || later.progress,
            ttl: later.ttl.or(self.ttl),
            timeout: later.timeout.or(self.timeout),
            quiet: self.quiet || later.quiet,
            secret_file: later.secret_file.or_else(|| self.secret_file.clone()),
            allow_plaintext: self.allow_plaintext || later.allow_plaintext,
        }
    }
}

/// `skypipe send NAME` and `skypipe recv NAME`: the pipe flags, the ones of the other side
/// hidden from `--help` (and refused by name when given).
#[derive(Debug, Clone, Args)]
pub(crate) struct VerbArgs {
    /// Pipe name (the pipe `default` when none is given)
    #[arg(value_name = "NAME")]
    pub(crate) name: Option<String>,

    #[command(flatten)]
    pub(crate) pipe: PipeArgs,
}

/// `skypipe peek NAME`.
#[derive(Debug, Clone, Args)]
pub(crate) struct PeekArgs {
    /// Pipe name (the pipe `default` when none is given)
    #[arg(value_name = "NAME")]
    pub(crate) name: Option<String>,

    /// Open a sealed payload with the secret in FILE (overrides SKYPIPE_SECRET).
    #[arg(long, value_name = "FILE")]
    pub(crate) secret_file: Option<PathBuf>,

    /// With a secret: show a payload that is not encrypted too.
    #[arg(long)]
    pub(crate) allow_plaintext: bool,
}

/// `skypipe rm NAME`.
#[derive(Debug, Clone, Args)]
pub(crate) struct RmArgs {
    /// Pipe name
    #[arg(value_name = "NAME")]
    pub(crate) name: String,

    /// Do not ask, even on a terminal.
    #[arg(short, long)]
    pub(crate) yes: bool,
}

/// `skypipe ls`.
#[derive(Debug, Clone, Args)]
pub(crate) struct LsArgs {
    /// Print JSON, for scripts.
    #[arg(long)]
    pub(crate) json: bool,
}

/// Commands other than using a pipe.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Send stdin into a pipe as one payload, whatever stdin and stdout are (for scripts)
    #[command(
        mut_arg("listen", |a| a.hide(true)),
        mut_arg("follow", |a| a.hide(true)),
        mut_arg("sender_timeout", |a| a.hide(true)),
        mut_arg("allow_plaintext", |a| a.hide(true))
    )]
    Send(VerbArgs),
    /// Receive from a pipe, whatever stdin is (for scripts): the oldest payload, or every one
    /// with --follow, or a live copy with --listen
    #[command(mut_arg("ttl", |a| a.hide(true)))]
    Recv(VerbArgs),
    /// List the pipes that have payloads waiting or skypipes on them
    Ls(LsArgs),
    /// Write the oldest payload waiting in a pipe to stdout, without taking it
    Peek(PeekArgs),
    /// Drop the payloads waiting in a pipe (asks first at a terminal; --yes does not)
    Rm(RmArgs),
    /// A live dashboard of every pipe on the server: throughput, waiting payloads, takers.
    Monitor(MonitorArgs),
    /// Run skypipe's own NATS server: for this user on 127.0.0.1, public for other machines
    /// (--public), or deployed to a machine you reach with ssh (deploy)
    Server(ServerArgs),
    /// Check a server and save it as the one skypipe uses from now on
    Setup(SetupArgs),
    /// Check the server skypipe uses: connection, JetStream, version, permissions, storage
    Check,
    /// Let another machine use this one's public server: print a one-time code for `skypipe
    /// join`; also list and revoke the machines that joined
    Invite(InviteArgs),
    /// Use another machine's public server from now on, with the code its `skypipe invite`
    /// printed
    Join(JoinArgs),
    /// Print a shell completion script to stdout
    Completions {
        /// The shell to complete for
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) to stdout
    Man,
}

#[derive(Debug, Args)]
pub(crate) struct MonitorArgs {
    /// Print the table once as text and exit, after about a second, once the rates are known
    /// (also what happens when stdout is not a terminal).
    #[arg(long)]
    pub(crate) once: bool,

    /// Print the table once as JSON and exit (its fields: README, "The dashboard").
    #[arg(long, conflicts_with = "once")]
    pub(crate) json: bool,
}

impl Command {
    /// The subcommand's name, as typed.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Command::Send(_) => "send",
            Command::Recv(_) => "recv",
            Command::Ls(_) => "ls",
            Command::Peek(_) => "peek",
            Command::Rm(_) => "rm",
            Command::Monitor(_) => "monitor",
            Command::Server(_) => "server",
            Command::Setup(_) => "setup",
            Command::Check => "check",
            Command::Invite(_) => "invite",
            Command::Join(_) => "join",
            Command::Completions { .. } => "completions",
            Command::Man => "man",
        }
    }
}

impl Cli {
    /// The first flag given that only a pipe command takes, if any.
    pub(crate) fn pipe_flag(&self) -> Option<&'static str> {
        [(self.send, "--send"), (self.recv, "--recv")]
            .into_iter()
            .find_map(|(given, flag)| given.then_some(flag))
            .or_else(|| self.pipe.given().first().copied())
    }
}

/// `skypipe server ...`
#[derive(Debug, Args)]
#[command(after_help = SERVER_AFTER_HELP)]
pub(crate) struct ServerArgs {
    #[command(subcommand)]
    pub(crate) action: ServerAction,
}

const SERVER_AFTER_HELP: &str = "\
The local server listens on 127.0.0.1:4222 (SKYPIPE_LOCAL_PORT moves it), keeps its data, log
and pid file in $XDG_DATA_HOME/skypipe (~/.local/share/skypipe), and is what skypipe uses
when no server is configured. A pipe command starts it by itself when nothing answers there.
Only this user can use it: it lets in the holder of the key in local-user.nk (mode 0600) in
the data directory, which skypipe makes and logs in with by itself. With --public it listens
for other machines too, with TLS, and lets in those that joined with `skypipe invite`.";

/// What to do with the local server.
#[derive(Debug, Subcommand)]
pub(crate) enum ServerAction {
    /// Start the local server in the background (nothing happens when it runs already, unless
    /// --public or --no-public changes how it listens: then it restarts)
    Start(LocalServerArgs),
    /// Stop the local server
    Stop,
    /// Show whether the local server runs, where, its version, data and stored pipes
    /// (exit 0 when it runs, 3 when it does not)
    Status,
    /// Run the local server in the foreground, logging to stderr (for service managers)
    Run(LocalServerArgs),
    /// Make a machine you reach with ssh your pipe server: install skypipe and nats-server
    /// there, run it as a service (public, TLS) and join this machine to it
    Deploy(DeployArgs),
    /// (Used by `skypipe server deploy` on the remote machine.) Check that the server can
    /// start there as asked
    #[command(hide = true)]
    Preflight(LocalServerArgs),
}

/// `skypipe server deploy ...`
#[derive(Debug, Args)]
#[command(after_help = DEPLOY_AFTER_HELP)]
pub(crate) struct DeployArgs {
    /// The machine: [USER@]HOST, or a Host of ~/.ssh/config
    #[arg(value_name = "[USER@]HOST")]
    pub(crate) target: String,

    /// Show how it runs there: version, uptime, storage, machines
    #[arg(long, conflicts_with_all = ["stop", "remove"])]
    pub(crate) status: bool,

    /// Stop the server there (a deploy starts it again)
    #[arg(long, conflicts_with = "remove")]
    pub(crate) stop: bool,

    /// Stop the server there and remove everything the deploy put there: binaries, service,
    /// data (waiting payloads, keys, CA) and this machine's context for it
    #[arg(long)]
    pub(crate) remove: bool,

    /// The address (and port) it listens on there [default: 0.0.0.0:4222]
    #[arg(long, value_name = "ADDR[:PORT]")]
    pub(crate) listen: Option<String>,

    /// A name other machines reach it by, besides the one ssh connects to; may be repeated
    #[arg(long = "name", value_name = "HOSTNAME")]
    pub(crate) names: Vec<String>,

    /// Also a WebSocket listener on this port, with the same TLS and logins
    #[arg(long, value_name = "PORT")]
    pub(crate) websocket: Option<u16>,
}

const DEPLOY_AFTER_HELP: &str = "\
Uses the system's ssh with your keys, agent and ~/.ssh/config (SKYPIPE_SSH_COMMAND replaces
`ssh`, e.g. \"ssh -F ~/work/ssh_config\"). skypipe and the nats-server it uses here are copied
to ~/.local/bin there when the machine's OS and architecture match this one's (`uname -sm`);
the server runs as a systemd user unit (started at boot when lingering is allowed), or as a
background process with a pid file where there is no systemd. Deploying again upgrades the
binaries and keeps the data, the CA and the machines that joined.";

/// How the local server starts.
#[derive(Debug, Clone, Default, Args)]
pub(crate) struct LocalServerArgs {
    /// The most disk the server's store may use, e.g. 500MiB, 10GiB, 1TiB (units of 1024;
    /// default 10GiB, at least 1MiB). A full store makes senders wait for takers
    /// [env: SKYPIPE_LOCAL_MAX_STORE]
    #[arg(long, value_name = "SIZE", value_parser = sizes::parse_max_store)]
    pub(crate) max_store: Option<u64>,

    /// Listen beyond loopback, for other machines (`skypipe invite`, `skypipe join`): always
    /// with TLS and authentication. Remembered: later starts stay public until --no-public
    #[arg(long, conflicts_with = "no_public")]
    pub(crate) public: bool,

    /// Listen on 127.0.0.1 only again (what --public changed)
    #[arg(long)]
    pub(crate) no_public: bool,

    /// With --public: the address (and port) to listen on [default: 0.0.0.0 and the local
    /// port, 4222 unless SKYPIPE_LOCAL_PORT says otherwise]
    #[arg(long, value_name = "ADDR[:PORT]", requires = "public")]
    pub(crate) listen: Option<String>,

    /// With --public: a name other machines reach this one by (DNS name or address), put in
    /// the certificate and in the `skypipe join` line; may be given more than once
    #[arg(long = "name", value_name = "HOSTNAME", requires = "public")]
    pub(crate) names: Vec<String>,

    /// With --public: serve this certificate (PEM chain) instead of one from skypipe's own CA;
    /// needs --tls-key and --tls-ca
    #[arg(long, value_name = "FILE", requires_all = ["public", "tls_key", "tls_ca"])]
    pub(crate) tls_cert: Option<PathBuf>,

    /// With --tls-cert: its private key (PEM)
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub(crate) tls_key: Option<PathBuf>,

    /// With --tls-cert: the CA that signed it, which joined machines pin
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub(crate) tls_ca: Option<PathBuf>,

    /// With --public: also a WebSocket listener on this port, with the same TLS and logins,
    /// for machines that only get out through HTTPS
    #[arg(long, value_name = "PORT", requires = "public")]
    pub(crate) websocket: Option<u16>,
}

/// `skypipe invite ...`
#[derive(Debug, Args)]
#[command(after_help = INVITE_AFTER_HELP, args_conflicts_with_subcommands = true)]
pub(crate) struct InviteArgs {
    #[command(subcommand)]
    pub(crate) action: Option<InviteAction>,

    /// How long the code works (it works once)
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "10m")]
    pub(crate) expires: std::time::Duration,

    /// The name the machine gets here [default: its host name]
    #[arg(long = "as", value_name = "NAME")]
    pub(crate) as_name: Option<String>,

    /// Also hand over the end-to-end secret (made now when there is none), so both machines
    /// seal payloads with a secret nobody typed
    #[arg(long)]
    pub(crate) with_secret: bool,
}

/// The machines that joined.
#[derive(Debug, Subcommand)]
pub(crate) enum InviteAction {
    /// The machines that joined: name, prefix, when, whether connected now, last seen
    List {
        /// As JSON
        #[arg(long)]
        json: bool,
    },
    /// Refuse a machine from now on; its connections are dropped at once
    Revoke {
        /// The machine's name, as `skypipe invite list` shows it
        name: String,
    },
    /// (Used by `skypipe server deploy` over ssh.) Let in the machine with this public nkey,
    /// replacing one of the same name, and print what it needs to join as JSON
    #[command(hide = true)]
    Admit {
        #[arg(long)]
        machine: String,
        #[arg(long)]
        public_key: String,
    },
}

const INVITE_AFTER_HELP: &str = "\
The server must be public first: skypipe server start --public. The code is good for one
`skypipe join` and only until it expires; a wrong code ends it. The joined machine logs in
with a key it made itself (its seed never leaves it) and may use one prefix only: the one
this command uses (`skypipe invite --prefix teama`; `skypipe` by default).";

/// `skypipe join ...`
#[derive(Debug, Args)]
#[command(after_help = JOIN_AFTER_HELP)]
pub(crate) struct JoinArgs {
    /// The machine that runs `skypipe invite`: HOST or HOST:PORT (port 4222 when not given),
    /// or a URL (tls://HOST:PORT, wss://HOST:PORT)
    #[arg(value_name = "HOST[:PORT]")]
    pub(crate) host: String,

    /// The code `skypipe invite` printed, e.g. 7-acorn-zebra
    #[arg(value_name = "CODE")]
    pub(crate) code: String,

    /// Name of the natscli context to write [default: skypipe-HOST]
    #[arg(long = "context-name", value_name = "NAME")]
    pub(crate) context_name: Option<String>,
}

const JOIN_AFTER_HELP: &str = "\
The two machines agree on a key from the code (SPAKE2), so nobody who watches or sits in
between learns the code or can change what is exchanged. The host's CA is then pinned, the
context saved and selected for skypipe (as `skypipe setup` does), and `skypipe check` run.
When anything fails, nothing is saved.";

/// `skypipe setup ...`
#[derive(Debug, Args)]
#[command(after_help = SETUP_AFTER_HELP)]
pub(crate) struct SetupArgs {
    /// Name of the natscli context to write
    #[arg(long, value_name = "NAME", default_value = "skypipe")]
    pub(crate) name: String,

    /// Also make it the natscli's selected context (context.txt)
    #[arg(long)]
    pub(crate) select: bool,
}

const SETUP_AFTER_HELP: &str = "\
Examples:
  skypipe setup -s nats://nats.example.internal:4222 --creds team.creds
  skypipe setup -s tls://a:4222,tls://b:4222,tls://c:4222 --replicas 3 --tlsca ca.pem

The server is checked first (as `skypipe check` does); when a check fails nothing is saved.
The context is written to ~/.config/nats/context/NAME.json (natscli's format and fields) and
named in ~/.config/skypipe/config.json, so skypipe uses it from then on; the natscli's own
selection changes only with --select.";

/// Where the server is and how to log in; the natscli's flags and variables.
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "Connection")]
pub(crate) struct ConnArgs {
    /// NATS server URL(s), comma-separated [env: NATS_URL]
    #[arg(short, long, value_name = "URL", global = true)]
    pub(crate) server: Option<String>,

    /// natscli context to use [env: NATS_CONTEXT]
    #[arg(long, value_name = "NAME", global = true)]
    pub(crate) context: Option<String>,

    /// Subject prefix: pipes under different prefixes are separate [env: SKYPIPE_PREFIX]
    #[arg(long, value_name = "PREFIX", global = true)]
    pub(crate) prefix: Option<String>,

    /// User name [env: NATS_USER]
    #[arg(long, value_name = "USER", global = true)]
    pub(crate) user: Option<String>,

    /// Password [env: NATS_PASSWORD]
    #[arg(long, value_name = "PASSWORD", global = true)]
    pub(crate) password: Option<String>,

    /// Authentication token [env: NATS_TOKEN]
    #[arg(long, value_name = "TOKEN", global = true)]
    pub(crate) token: Option<String>,

    /// Credentials file (JWT and nkey seed) [env: NATS_CREDS]
    #[arg(long, value_name = "FILE", global = true)]
    pub(crate) creds: Option<PathBuf>,

    /// Nkey seed file [env: NATS_NKEY]
    #[arg(long, value_name = "FILE", global = true)]
    pub(crate) nkey: Option<PathBuf>,

    /// TLS client certificate [env: NATS_CERT]
    #[arg(long, value_name = "FILE", global = true)]
    pub(crate) tlscert: Option<PathBuf>,

    /// TLS client key [env: NATS_KEY]
    #[arg(long, value_name = "FILE", global = true)]
    pub(crate) tlskey: Option<PathBuf>,

    /// TLS certificate authority [env: NATS_CA]
    #[arg(long, value_name = "FILE", global = true)]
    pub(crate) tlsca: Option<PathBuf>,

    /// Start TLS before the NATS handshake [env: NATS_TLSFIRST]
    #[arg(long, global = true)]
    pub(crate) tlsfirst: bool,

    /// Replicas of skypipe's streams when it creates them, 1 to 5 (3 on a cluster of three)
    /// [env: SKYPIPE_REPLICAS]
    #[arg(long, value_name = "N", global = true, value_parser = clap::value_parser!(u8).range(1..=5))]
    pub(crate) replicas: Option<u8>,

    /// JetStream domain whose streams hold the pipes, e.g. the hub's when connected to a leaf
    /// node [env: NATS_JS_DOMAIN]
    #[arg(long, value_name = "DOMAIN", global = true)]
    pub(crate) js_domain: Option<String>,

    /// Bytes skypipe's two streams may hold together when it creates them, such as 10GiB
    /// (default: no limit, or half of the account's free storage when the account requires
    /// a limit) [env: SKYPIPE_MAX_BYTES]
    #[arg(long, value_name = "SIZE", global = true, value_parser = parse_max_bytes)]
    pub(crate) max_bytes: Option<u64>,
}

/// A `--max-bytes` size (see [`sizes::parse_max_bytes`]).
fn parse_max_bytes(s: &str) -> Result<u64, String> {
    sizes::parse_max_bytes(s, "--max-bytes").map_err(|e| e.to_string())
}

/// A humantime duration that is not zero.
pub(crate) fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let d = humantime::parse_duration(s.trim())
        .map_err(|e| format!("{e} (try a duration such as 500ms, 30s, 2h or 7days)"))?;
    if d.is_zero() {
        return Err("a duration of zero is not allowed".into());
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations() {
        assert_eq!(
            parse_duration("2h"),
            Ok(std::time::Duration::from_secs(7200))
        );
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("soon").is_err());
    }

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("skypipe").chain(args.iter().copied()))
    }

    #[test]
    fn server_flags_may_come_before_a_subcommand() {
        let cli = parse(&["-s", "ws://127.0.0.1:8080", "check"]).expect("parses");
        assert!(matches!(cli.command, Some(Command::Check)), "{cli:?}");
        assert_eq!(cli.conn.server.as_deref(), Some("ws://127.0.0.1:8080"));
        let cli = parse(&["check", "-s", "nats://a:4222"]).expect("parses");
        assert!(matches!(cli.command, Some(Command::Check)), "{cli:?}");
        let cli = parse(&["--context", "x", "monitor", "--once"]).expect("parses");
        assert!(matches!(cli.command, Some(Command::Monitor(_))), "{cli:?}");
    }

    #[test]
    fn pipe_names_and_subcommand_names() {
        let cli = parse(&["logs", "--follow"]).expect("parses");
        assert_eq!(cli.name.as_deref(), Some("logs"));
        assert!(cli.command.is_none());
        let cli = parse(&["-s", "nats://a:4222", "logs"]).expect("parses");
        assert_eq!(cli.name.as_deref(), Some("logs"));
        let cli = parse(&["--", "check"]).expect("parses");
        assert_eq!(cli.name.as_deref(), Some("check"));
        assert!(cli.command.is_none());
        // Pipe flags belong to pipes, not to subcommands.
        // A pipe flag before a subcommand's name is refused when the command runs.
        let cli = parse(&["--follow", "check"]).expect("parses");
        assert_eq!(cli.pipe_flag(), Some("--follow"));
        assert_eq!(
            parse(&["-s", "x", "check"]).expect("parses").pipe_flag(),
            None
        );
    }
}
