//! skypipe: named pipes in the sky, on NATS JetStream. The library is the program; `main.rs`
//! only calls [`main`]. Nothing here is an API: every module is private to the crate.
//!
//! The modules in layers, low to high; a module imports from its own layer or lower only,
//! and no two files import each other:
//! 1. Ground, importing nothing else of the crate: [`console`] writes reports and messages
//!    (the crate's `println!`, `print!`, `eprintln!` and `eprint!` go through it, so a closed
//!    stdout or stderr never panics); [`diag`] is `-v`, diagnostics through `tracing`;
//!    [`error`] holds the failures with their own exit codes, mapped in one place; [`paths`]
//!    the data and config directories and the local server's files.
//! 2. [`protocol`]: the wire without IO: names, subjects, headers, sealing, proofs, the join
//!    handshake and the permissions a prefix needs.
//! 3. [`rules`]: the transfer's decisions without IO, events and `now` in, steps out: the
//!    sender's route and window, the taker's hold and purge, the listener's book, the
//!    follower's order.
//! 4. [`config`]: the command line's grammar (`config::cli`) and the settings validated from
//!    it, the `NATS_*` variables and natscli contexts, read once: the connection, the mode,
//!    the pipe settings.
//! 5. [`client`]: connecting, skypipe's streams and consumers, the home of a prefix's streams
//!    among JetStream domains, and the server's refusals as types.
//! 6. [`transfer`] moves the bytes: `input` cuts stdin into chunks and `send` publishes them;
//!    `recv` takes the oldest payload (or follows every one), `listen` taps a pipe; `payload`
//!    puts a payload's chunks back together and `output` writes them to stdout; `progress` and
//!    `presence` report on the side. [`monitor`] samples the server for the dashboard
//!    (`skypipe-tui` draws it) and for `ls`.
//! 7. The commands: [`manage`] is `ls`, `peek` and `rm`; [`admin`] is the server (local,
//!    public, TLS, deploy), the machines (invite, join), setup and completions.
//! 8. `run()` here dispatches a parsed command line to them.

// Defined before the modules, so that these shadow the standard macros in all of them.
macro_rules! println {
    () => {
        $crate::console::out(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::console::out(format_args!("{}\n", format_args!($($arg)*)))
    };
}
macro_rules! print {
    ($($arg:tt)*) => {
        $crate::console::out(format_args!($($arg)*))
    };
}
macro_rules! eprintln {
    () => {
        $crate::console::err(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::console::err(format_args!("{}\n", format_args!($($arg)*)))
    };
}
#[allow(unused_macros)] // none yet; there so that one added later is safe too
macro_rules! eprint {
    ($($arg:tt)*) => {
        $crate::console::err(format_args!($($arg)*))
    };
}

mod admin;
mod client;
mod config;
mod console;
mod diag;
mod error;
mod manage;
mod monitor;
mod paths;
mod protocol;
mod rules;
mod transfer;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

use crate::admin::machines::{invite, join};
use crate::admin::server::{deploy, local};
use crate::admin::{completions, setup};
use crate::client::session;
use crate::config::cli::{self, Cli, Command, ServerAction};
use crate::config::{Mode, PipeSettings};
use crate::error::{code, Failure};
use crate::protocol::pipe;
use crate::transfer::{input, listen, output, recv, send};

/// Parses the command line, runs it, and returns the process exit code.
/// Looks at fds 0-2 as the process got them, before the Rust runtime replaces closed ones:
/// for the binary's earliest code, and nothing else.
#[doc(hidden)]
pub fn note_std_fds() {
    transfer::output::note_std_fds();
}

pub fn main() -> i32 {
    use clap::Parser as _;
    run(Cli::parse())
}

/// Runs a parsed command line and returns the process exit code.
fn run(cli: Cli) -> i32 {
    diag::init(cli.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("skypipe: cannot start: {e}");
            return code::RUNTIME;
        }
    };
    let result = runtime.block_on(run_async(cli));
    // The stdin reader may be blocked in read(); do not wait for it.
    runtime.shutdown_background();
    match result {
        Ok(code) => code,
        Err(err) => {
            let code = error::exit_code(&err);
            if code != code::INTERRUPTED {
                eprintln!("skypipe: {}", crate::error::one_line(&err));
            }
            code
        }
    }
}

fn env_var(key: &str) -> Option<String> {
    std::env::var(key).ok()
}

/// Ctrl-C and SIGTERM cancel the token; a second one exits at once. The flag is set inside
/// the signal handler itself, before anything else can run: a sender whose stdin ends because
/// Ctrl-C also killed the program feeding it checks the flag to tell that end from the data's,
/// and a flag set later by the task (as the token is) could lose that race.
fn watch_signals(cancel: CancellationToken) -> Arc<AtomicBool> {
    let interrupted = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        let _ = signal_hook::flag::register(sig, interrupted.clone());
    }
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut int), Ok(mut term)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            return;
        };
        for round in 0..2 {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            if round == 0 {
                cancel.cancel();
            } else {
                std::process::exit(code::INTERRUPTED);
            }
        }
    });
    interrupted
}

async fn run_async(cli: Cli) -> anyhow::Result<i32> {
    if let Some(request) = config::PipeRequest::from_cli(&cli).map_err(Failure::from)? {
        let settings = config::pipe_settings(&request, &cli, config::Streams::observe(), &env_var)
            .map_err(Failure::from)?;
        let cancel = CancellationToken::new();
        let interrupted = watch_signals(cancel.clone());
        return run_pipe(&settings, cancel, interrupted).await;
    }
    let Some(command) = &cli.command else {
        // Without a subcommand the command line is a pipe command, handled above.
        return Err(anyhow::anyhow!("no command to run"));
    };
    if let Some(flag) = cli.pipe_flag() {
        return Err(error::Failure::Usage(format!(
            "{flag} is for pipes, not for `skypipe {}`; a pipe named like a subcommand is \
             reached with `skypipe [FLAGS] -- NAME`",
            command.name()
        ))
        .into());
    }
    run_command(command, &cli).await
}

async fn run_monitor(cli: &Cli, args: &cli::MonitorArgs) -> anyhow::Result<i32> {
    use std::io::IsTerminal;
    let conn = config::resolve_conn(&cli.conn, &env_var).map_err(Failure::from)?;
    let session = session::connect(&conn).await?;
    let url = session.url.clone();
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    let cancel = CancellationToken::new();
    let interactive = !(args.once || args.json) && std::io::stdout().is_terminal();
    let sampling = if interactive {
        monitor::Sampling::Live
    } else {
        monitor::Sampling::Once
    };
    let collector = tokio::spawn(monitor::collect(session, tx, cancel.clone(), sampling));
    if !(interactive || args.once || args.json) {
        eprintln!("skypipe: stdout is not a terminal: printing the table once (--json for JSON)");
    }
    let result = if interactive {
        skypipe_tui::run(rx, skypipe_tui::App::new())
            .await
            .context("the terminal failed")
    } else {
        // One sample, taken once every rate is known (about a second). Scripts get every
        // pipe, idle ones too.
        let mut app = skypipe_tui::App::new();
        app.set_show_idle(true);
        let answer_by = tokio::time::sleep(monitor::ONCE_ANSWER);
        tokio::pin!(answer_by);
        loop {
            tokio::select! {
                update = rx.recv() => match update {
                    Some(update) => app.update(update),
                    None => break,
                },
                // A server that stopped answering after the connection was made.
                _ = &mut answer_by => {
                    cancel.cancel();
                    collector.abort();
                    return Err(anyhow::anyhow!(
                        "the server at {url} did not answer within {}: no table to show",
                        humantime::format_duration(monitor::ONCE_ANSWER)
                    ));
                }
            }
        }
        if args.json {
            let report = serde_json::to_string_pretty(&skypipe_tui::json_report(&app))?;
            println!("{report}");
        } else {
            print!("{}", skypipe_tui::text_table(&app));
        }
        Ok(())
    };
    // The collector ends at its next step once cancelled; a failure of its own is the
    // command's, unless the screen failed first.
    cancel.cancel();
    let collected = match tokio::time::timeout(std::time::Duration::from_secs(2), collector).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => Err(anyhow::Error::new(e).context("the monitor's collector failed")),
        Err(_) => Ok(()),
    };
    result?;
    collected.map(|()| code::OK)
}

/// The subcommands: pipe management, the local server, setup and check, completions and the
/// man page.
async fn run_command(command: &Command, cli: &Cli) -> anyhow::Result<i32> {
    let conn = || config::resolve_conn(&cli.conn, &env_var).map_err(Failure::from);
    match command {
        Command::Completions { shell } => completions::completions(*shell),
        Command::Man => completions::man(),
        Command::Monitor(args) => run_monitor(cli, args).await,
        Command::Server(args) => {
            let conn = conn()?;
            match &args.action {
                ServerAction::Start(a) => local::cmd_start(&conn, a, &env_var).await,
                ServerAction::Stop => local::cmd_stop(&conn, &env_var).await,
                ServerAction::Status => local::cmd_status(&conn, &env_var).await,
                ServerAction::Run(a) => local::cmd_run(&conn, a, &env_var),
                ServerAction::Preflight(a) => local::cmd_preflight(&conn, a, &env_var),
                ServerAction::Deploy(a) => deploy::cmd_deploy(&conn, a, &env_var).await,
            }
        }
        Command::Setup(args) => setup::cmd_setup(&conn()?, args, &env_var).await,
        Command::Check => setup::cmd_check(&conn()?).await,
        Command::Invite(args) => invite::cmd_invite(&conn()?, args, &env_var).await,
        Command::Join(args) => join::cmd_join(&conn()?, args, &env_var).await,
        Command::Ls(args) => manage::ls(&session::connect(&conn()?).await?, args.json).await,
        Command::Peek(args) => {
            let pipe = pipe::PipeName::new(args.name.as_deref().unwrap_or(pipe::DEFAULT_PIPE))
                .map_err(|e| Failure::from(config::ConfigError::from(e)))?;
            let conn = conn()?;
            let mut session = session::connect(&conn).await?;
            session.crypto = config::resolve_crypto(
                args.secret_file.as_deref(),
                args.allow_plaintext,
                &env_var,
                conn.secret_file.as_deref(),
            )
            .map_err(Failure::from)?;
            let cancel = CancellationToken::new();
            let _ = watch_signals(cancel.clone());
            session
                .unless_denied(manage::peek(&session, &pipe, cancel))
                .await
        }
        Command::Rm(args) => {
            let pipe = pipe::PipeName::new(&args.name)
                .map_err(|e| Failure::from(config::ConfigError::from(e)))?;
            let session = session::connect(&conn()?).await?;
            session
                .unless_denied(manage::rm(&session, &pipe, args.yes))
                .await
        }
        Command::Send(_) | Command::Recv(_) => Err(anyhow::anyhow!(
            "`skypipe {}` is a pipe command",
            command.name()
        )),
    }
}

async fn run_pipe(
    settings: &PipeSettings,
    cancel: CancellationToken,
    interrupted: Arc<AtomicBool>,
) -> anyhow::Result<i32> {
    if settings.mode.receives() && output::stdout_was_closed() {
        return Err(error::Failure::Usage(format!(
            "stdout is closed, so a payload of pipe {} would have nowhere to go; nothing was \
             taken (redirect stdout to a file, or to /dev/null to discard a payload)",
            settings.pipe
        ))
        .into());
    }
    // The size before the reader starts: it reads while connecting, moving the offset.
    let total = match settings.mode {
        Mode::Send => config::stdin_file_size(),
        _ => None,
    };
    // Stdin is read while connecting (chunks are cut to the server's size when sent; the
    // sender makes them bigger on the live path).
    let chunk_size = input::ChunkSize::new(pipe::MAX_CHUNK);
    let mut input = match settings.mode {
        Mode::Send => Some(input::spawn_stdin(chunk_size.clone())?),
        Mode::Take | Mode::Follow | Mode::Listen { .. } => None,
    };
    let mut session = tokio::select! {
        s = async {
            match local::autostart(&settings.conn, &env_var).await? {
                // The server it started is public: its owner reaches it where it listens.
                Some((url, ca)) => {
                    let mut conn = settings.conn.clone();
                    conn.urls = vec![url];
                    conn.ca = Some(ca);
                    session::connect(&conn).await
                }
                None => session::connect(&settings.conn).await,
            }
        } => s?,
        _ = cancel.cancelled() => return Err(error::Failure::Interrupted.into()),
    };
    session.crypto = settings.crypto.clone();
    // With JetStream domains in play, the prefix's streams must be in this one's alone.
    tokio::select! {
        r = session.settle_domain() => r?,
        _ = cancel.cancelled() => return Err(error::Failure::Interrupted.into()),
    }
    session
        .unless_denied(async {
            match settings.mode {
                Mode::Send => {
                    let input = input
                        .take()
                        .ok_or_else(|| anyhow::anyhow!("the stdin reader did not start"))?;
                    let input = send::Input {
                        pieces: input,
                        size: chunk_size.clone(),
                    };
                    send::send(&session, settings, input, cancel, interrupted, total).await?;
                }
                Mode::Listen { .. } => listen::listen(&session, settings, cancel).await?,
                Mode::Follow => recv::follow(&session, settings, cancel).await?,
                Mode::Take => recv::recv(&session, settings, cancel).await?,
            }
            Ok(())
        })
        .await?;
    // Publishes and acks are buffered by the client: make sure they left.
    let _ = session.client.flush().await;
    Ok(code::OK)
}
