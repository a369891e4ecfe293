//! stdout and stderr for everything but payload bytes: reports, tables, messages. A reader
//! that went away (`skypipe check | grep -q x`, `skypipe server status | head -1`) ends that
//! output, and the command goes on to its own exit code; nothing panics. The crate's
//! `println!`, `print!`, `eprintln!` and `eprint!` are these (see `lib.rs`).

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

/// Set once a write to stdout failed: nothing more is written there.
static STDOUT_ENDED: AtomicBool = AtomicBool::new(false);
/// The same for stderr.
static STDERR_ENDED: AtomicBool = AtomicBool::new(false);

/// Writes to stdout, unless it ended.
pub(crate) fn out(args: std::fmt::Arguments<'_>) {
    if let Err(e) = write(&mut std::io::stdout().lock(), &STDOUT_ENDED, args) {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            err(format_args!("skypipe: cannot write to stdout: {e}\n"));
        }
    }
}

/// Writes to stderr, unless it ended.
pub(crate) fn err(args: std::fmt::Arguments<'_>) {
    let _ = write(&mut std::io::stderr().lock(), &STDERR_ENDED, args);
}

fn write(
    to: &mut impl Write,
    ended: &AtomicBool,
    args: std::fmt::Arguments<'_>,
) -> std::io::Result<()> {
    if ended.load(Ordering::Relaxed) {
        return Ok(());
    }
    let result = to.write_fmt(args).and_then(|()| to.flush());
    if result.is_err() {
        ended.store(true, Ordering::Relaxed);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer whose reader went away.
    struct Closed(usize);

    impl Write for Closed {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            self.0 += 1;
            Err(std::io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_closed_writer_ends_the_output_quietly() {
        let ended = AtomicBool::new(false);
        let mut closed = Closed(0);
        assert!(write(&mut closed, &ended, format_args!("a\n")).is_err());
        assert!(write(&mut closed, &ended, format_args!("b\n")).is_ok());
        assert_eq!(closed.0, 1, "not tried again");
    }
}
