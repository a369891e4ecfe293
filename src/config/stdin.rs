//! What stdin and stdout are when skypipe starts, looked at without reading: the bare form
//! `skypipe NAME` decides from them whether to send or receive.

/// What stdin is, as far as the mode choice cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StdinKind {
    /// A regular file: something to read.
    File,
    /// A pipe (FIFO): something to read.
    Fifo,
    /// A socket: something to read.
    Socket,
    /// A terminal, /dev/null, closed, or unknown: do not read.
    Other,
}

impl StdinKind {
    /// Whether the bare form may send it.
    pub(crate) fn readable(self) -> bool {
        self != StdinKind::Other
    }

    pub(crate) fn describe(self) -> &'static str {
        match self {
            StdinKind::File => "a file",
            StdinKind::Fifo => "a pipe",
            StdinKind::Socket => "a socket",
            StdinKind::Other => "not a file, pipe or socket",
        }
    }
}

/// What the mode choice looks at: stdin and stdout as the process found them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Streams {
    pub(crate) stdin: StdinKind,
    /// Bytes were waiting on stdin when skypipe started (a file not read to its end, a pipe
    /// with data in it); looked at without reading any.
    pub(crate) stdin_has_data: bool,
    pub(crate) stdout_is_terminal: bool,
}

impl Streams {
    /// Looks at this process's stdin and stdout.
    pub(crate) fn observe() -> Streams {
        let stdin = stdin_kind();
        Streams {
            stdin,
            stdin_has_data: stdin_has_data(stdin),
            stdout_is_terminal: std::io::IsTerminal::is_terminal(&std::io::stdout()),
        }
    }
}

/// Inspects fd 0 the safe way: regular file, FIFO and socket are readable; anything else
/// (a terminal, a character device such as /dev/null, a closed fd) is not.
pub(crate) fn stdin_kind() -> StdinKind {
    use std::os::fd::AsFd;
    use std::os::unix::fs::FileTypeExt;
    let Ok(fd) = std::io::stdin().as_fd().try_clone_to_owned() else {
        return StdinKind::Other;
    };
    match std::fs::File::from(fd).metadata() {
        Ok(m) => {
            let t = m.file_type();
            if t.is_file() {
                StdinKind::File
            } else if t.is_fifo() {
                StdinKind::Fifo
            } else if t.is_socket() {
                StdinKind::Socket
            } else {
                StdinKind::Other
            }
        }
        Err(_) => StdinKind::Other,
    }
}

/// Whether bytes wait on stdin now, found without taking any: the rest of a regular file, or
/// what a pipe holds (copied, not read, with `tee(2)`). A socket, or a pipe whose writer has
/// not written yet, counts as empty.
fn stdin_has_data(kind: StdinKind) -> bool {
    match kind {
        StdinKind::File => stdin_file_size().is_some_and(|n| n > 0),
        StdinKind::Fifo => {
            use nix::fcntl::{tee, SpliceFFlags};
            let Ok((_read, write)) = nix::unistd::pipe() else {
                return false;
            };
            matches!(
                tee(std::io::stdin(), &write, 1, SpliceFFlags::SPLICE_F_NONBLOCK),
                Ok(n) if n > 0
            )
        }
        StdinKind::Socket | StdinKind::Other => false,
    }
}

/// The bytes left to read when stdin is a regular file (for progress).
pub(crate) fn stdin_file_size() -> Option<u64> {
    use std::io::Seek;
    use std::os::fd::AsFd;
    let fd = std::io::stdin().as_fd().try_clone_to_owned().ok()?;
    let mut file = std::fs::File::from(fd);
    let meta = file.metadata().ok()?;
    if !meta.is_file() {
        return None;
    }
    let pos = file.stream_position().unwrap_or(0);
    Some(meta.len().saturating_sub(pos))
}
