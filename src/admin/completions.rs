//! Shell completions and the man page, generated from the clap definition so they never
//! drift from it.

use std::io::Write as _;

use clap::CommandFactory as _;

use crate::cli::Cli;
use crate::error::code;

/// Writes generated text to stdout; a reader that went away (`| head`) is not an error.
fn emit(text: &[u8]) -> anyhow::Result<i32> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text).and_then(|_| out.flush()) {
        Ok(()) => Ok(code::OK),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(code::OK),
        Err(e) => Err(anyhow::anyhow!("cannot write to stdout: {e}")),
    }
}

/// `skypipe completions SHELL`.
pub(crate) fn completions(shell: clap_complete::Shell) -> anyhow::Result<i32> {
    let mut text = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "skypipe", &mut text);
    emit(&text)
}

/// `skypipe man`.
pub(crate) fn man() -> anyhow::Result<i32> {
    let mut text = Vec::new();
    clap_mangen::Man::new(Cli::command())
        .render(&mut text)
        .map_err(|e| anyhow::anyhow!("cannot render the man page: {e}"))?;
    emit(&text)
}
