//! Writing payload bytes to stdout on a thread of its own, unbuffered (chunks are already
//! large), and reporting how far it got so that only written bytes are removed from the
//! server. Several payloads can share one writer (a follower interleaves them chunk by
//! chunk); each has its own [`Mark`]. A closed stdout (EPIPE) is reported as such: it is a
//! normal end, not an error.
//!
//! A writer is tied to a cancellation (Ctrl-C): once it fires, a write or flush waiting on a
//! stuck stdout returns at once, and nothing still queued is written, so a taker can give
//! back exactly what it did not write.

use std::io::Write;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

/// How a write ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum WriteEnd {
    Ok,
    /// The reader of stdout went away.
    Closed,
    Failed(String),
    /// Cancelled (Ctrl-C) while waiting on stdout.
    Interrupted,
}

impl WriteEnd {
    /// How a receiver ends when its writes stopped so: a closed stdout is a normal end.
    pub(crate) fn ending(self) -> anyhow::Result<()> {
        match self {
            WriteEnd::Closed => Ok(()),
            WriteEnd::Interrupted => Err(crate::error::Failure::Interrupted.into()),
            WriteEnd::Failed(m) => Err(anyhow::anyhow!(m)),
            WriteEnd::Ok => Err(anyhow::anyhow!("the stdout writer stopped")),
        }
    }
}

/// How far one payload's writes got: the purge bound given with its last written chunk, and
/// how many of its chunks are written (for a live sender's acknowledgements).
#[derive(Debug, Clone, Default)]
pub(crate) struct Mark(Arc<MarkInner>);

#[derive(Debug, Default)]
struct MarkInner {
    bound: AtomicU64,
    chunks: AtomicU64,
    written: tokio::sync::Notify,
}

/// What a written piece stands for: the purge bound below which everything it came from is
/// written, and the number of chunks written with it.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Written {
    pub(crate) bound: u64,
    pub(crate) chunks: u64,
}

impl Mark {
    /// The purge bound: stream messages below it are written.
    pub(crate) fn get(&self) -> u64 {
        self.0.bound.load(Ordering::Acquire)
    }

    /// Chunks `0..n` are written.
    pub(crate) fn chunks(&self) -> u64 {
        self.0.chunks.load(Ordering::Acquire)
    }

    /// Waits until a write moved the mark (returns at once when one did since the last call).
    pub(crate) async fn moved(&self) {
        self.0.written.notified().await
    }

    fn set(&self, p: Written) {
        self.0.bound.fetch_max(p.bound, Ordering::AcqRel);
        self.0.chunks.fetch_max(p.chunks, Ordering::AcqRel);
        self.0.written.notify_one();
    }
}

/// A byte count shared between threads (bytes written, bytes sent), and when the first byte
/// was counted.
#[derive(Debug, Clone, Default)]
pub(crate) struct Counter(Arc<(AtomicU64, std::sync::OnceLock<std::time::Instant>)>);

impl Counter {
    pub(crate) fn get(&self) -> u64 {
        self.0 .0.load(Ordering::Relaxed)
    }

    pub(crate) fn add(&self, n: u64) {
        if n > 0 {
            self.0 .1.get_or_init(std::time::Instant::now);
        }
        self.0 .0.fetch_add(n, Ordering::Relaxed);
    }

    /// Starts the clock without counting a byte (what is counted has begun).
    pub(crate) fn touch(&self) {
        self.0 .1.get_or_init(std::time::Instant::now);
    }

    /// When the first byte was counted (or [`Counter::touch`] was called).
    pub(crate) fn since(&self) -> Option<std::time::Instant> {
        self.0 .1.get().copied()
    }
}

enum Cmd {
    Data {
        bytes: Bytes,
        mark: Mark,
        value: Written,
    },
    Flush(oneshot::Sender<WriteEnd>),
}

/// The handle of the writer thread.
pub(crate) struct Writer {
    tx: std::sync::mpsc::SyncSender<Cmd>,
    failed: Arc<std::sync::Mutex<Option<WriteEnd>>>,
    written: Counter,
    /// Bytes handed to the writer thread.
    queued: Counter,
    cancel: CancellationToken,
}

impl Writer {
    /// A writer on a duplicate of fd 1 that stops writing once `cancel` fires.
    pub(crate) fn stdout(cancel: CancellationToken) -> std::io::Result<Writer> {
        let fd = std::io::stdout().as_fd().try_clone_to_owned()?;
        Ok(Writer::new(std::fs::File::from(fd), cancel))
    }

    pub(crate) fn new<W: Write + Send + 'static>(mut out: W, cancel: CancellationToken) -> Writer {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Cmd>(8);
        let failed = Arc::new(std::sync::Mutex::new(None));
        let fail = failed.clone();
        let written = Counter::default();
        let count = written.clone();
        let stop = cancel.clone();
        let _ = std::thread::Builder::new()
            .name("stdout".into())
            .spawn(move || {
                let mut end = WriteEnd::Ok;
                while let Ok(cmd) = rx.recv() {
                    match cmd {
                        Cmd::Data { bytes, mark, value } => {
                            // After cancellation what is queued stays unwritten: its chunks
                            // are given back to the pipe, not written here.
                            if end != WriteEnd::Ok || stop.is_cancelled() {
                                continue;
                            }
                            match out.write_all(&bytes) {
                                Ok(()) => {
                                    count.add(bytes.len() as u64);
                                    mark.set(value)
                                }
                                Err(e) => {
                                    end = if e.kind() == std::io::ErrorKind::BrokenPipe {
                                        WriteEnd::Closed
                                    } else {
                                        WriteEnd::Failed(format!("cannot write to stdout: {e}"))
                                    };
                                    if let Ok(mut f) = fail.lock() {
                                        *f = Some(end.clone());
                                    }
                                }
                            }
                        }
                        Cmd::Flush(done) => {
                            if end == WriteEnd::Ok {
                                if let Err(e) = out.flush() {
                                    end = if e.kind() == std::io::ErrorKind::BrokenPipe {
                                        WriteEnd::Closed
                                    } else {
                                        WriteEnd::Failed(format!("cannot write to stdout: {e}"))
                                    };
                                }
                            }
                            let _ = done.send(end.clone());
                        }
                    }
                }
            });
        Writer {
            tx,
            failed,
            written,
            queued: Counter::default(),
            cancel,
        }
    }

    /// Bytes written so far.
    pub(crate) fn counter(&self) -> Counter {
        self.written.clone()
    }

    /// Queues bytes; `mark` takes `value` once they are written. Waits only when eight
    /// chunks are already queued (backpressure from a slow stdout).
    pub(crate) async fn write(&self, bytes: Bytes, mark: &Mark, value: Written) -> WriteEnd {
        if let Some(end) = self.failure() {
            return end;
        }
        if self.cancel.is_cancelled() {
            return WriteEnd::Interrupted;
        }
        let len = bytes.len() as u64;
        let cmd = Cmd::Data {
            bytes,
            mark: mark.clone(),
            value,
        };
        match self.queue(cmd, true).await {
            Ok(()) => {
                self.queued.add(len);
                WriteEnd::Ok
            }
            Err(end) => end,
        }
    }

    /// Whether bytes wait to be written: a slow stdout, not an idle pipe.
    pub(crate) fn busy(&self) -> bool {
        self.queued.get() > self.written.get() && self.failure().is_none()
    }

    /// Hands a command to the writer thread. Waits on a blocking thread only when the queue
    /// is full (starting one costs more than a small payload's whole read), and then, when
    /// `cancellable`, only until cancellation.
    async fn queue(&self, cmd: Cmd, cancellable: bool) -> Result<(), WriteEnd> {
        let stopped = || WriteEnd::Failed("the stdout writer stopped".into());
        let tx = self.tx.clone();
        match tx.try_send(cmd) {
            Ok(()) => Ok(()),
            Err(std::sync::mpsc::TrySendError::Full(cmd)) => {
                let send = tokio::task::spawn_blocking(move || tx.send(cmd).is_ok());
                let cancelled = async {
                    if cancellable {
                        self.cancel.cancelled().await
                    } else {
                        std::future::pending().await
                    }
                };
                tokio::select! {
                    biased;
                    // The blocked send may still hand the command over later; the thread
                    // then drops it unwritten, since cancellation has fired.
                    _ = cancelled => Err(WriteEnd::Interrupted),
                    sent = send => match sent {
                        Ok(true) => Ok(()),
                        _ => Err(stopped()),
                    },
                }
            }
            Err(std::sync::mpsc::TrySendError::Disconnected(_)) => Err(stopped()),
        }
    }

    /// Waits until everything queued is written, or until cancellation.
    pub(crate) async fn flush(&self) -> WriteEnd {
        self.flush_inner(true).await
    }

    /// After cancellation: waits up to `limit` for a write in progress to end (what is
    /// queued behind it is dropped), so the mark of every chunk written is known.
    pub(crate) async fn settle(&self, limit: std::time::Duration) {
        let _ = tokio::time::timeout(limit, self.flush_inner(false)).await;
    }

    async fn flush_inner(&self, cancellable: bool) -> WriteEnd {
        let (done, wait) = oneshot::channel();
        if let Err(end) = self.queue(Cmd::Flush(done), cancellable).await {
            return end;
        }
        let wait = async {
            wait.await
                .unwrap_or_else(|_| WriteEnd::Failed("the stdout writer stopped".into()))
        };
        if !cancellable {
            return wait.await;
        }
        tokio::select! {
            biased;
            _ = self.cancel.cancelled() => WriteEnd::Interrupted,
            end = wait => end,
        }
    }

    /// Set once a write failed or stdout closed.
    pub(crate) fn failure(&self) -> Option<WriteEnd> {
        self.failed.lock().ok().and_then(|f| f.clone())
    }
}

/// Which of fds 0-2 were closed when the process started, as [`note_std_fds`] found them:
/// bit `fd` set when closed, [`NOTED`] set once they were looked at.
static STD_FDS_CLOSED: AtomicU8 = AtomicU8::new(0);
const NOTED: u8 = 1 << 7;

/// Looks at fds 0-2 before the Rust runtime replaces closed ones with /dev/null (it opens
/// /dev/null read-write, as Python's `subprocess.DEVNULL` does for an open one, so the two
/// cannot be told apart later). Called by the binary from its earliest code.
pub(crate) fn note_std_fds() {
    let fds = std::path::Path::new("/proc/self/fd");
    if !fds.is_dir() {
        return;
    }
    let mut closed = NOTED;
    for fd in 0..3u8 {
        if std::fs::symlink_metadata(fds.join(fd.to_string())).is_err() {
            closed |= 1 << fd;
        }
    }
    STD_FDS_CLOSED.store(closed, Ordering::Relaxed);
}

/// Whether fd 1 was closed when skypipe started (`skypipe p >&-`). A taker with nowhere to
/// write must not take: the payload would be lost. `/dev/null`, opened however, is a place
/// to write to.
pub(crate) fn stdout_was_closed() -> bool {
    let noted = STD_FDS_CLOSED.load(Ordering::Relaxed);
    if noted & NOTED != 0 {
        return noted & (1 << 1) != 0;
    }
    stdout_is_runtime_dev_null()
}

/// Where fds were not looked at early (a platform without init functions): the Rust runtime
/// opens /dev/null read-write on a closed fd 1; a shell's `> /dev/null` opens it write-only.
fn stdout_is_runtime_dev_null() -> bool {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    use nix::sys::stat::{fstat, major, minor, SFlag};
    let stdout = std::io::stdout();
    let fd = stdout.as_fd();
    let Ok(flags) = fcntl(fd, FcntlArg::F_GETFL) else {
        return false;
    };
    if OFlag::from_bits_truncate(flags) & OFlag::O_ACCMODE != OFlag::O_RDWR {
        return false;
    }
    let Ok(st) = fstat(fd) else {
        return false;
    };
    let is_char = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFCHR;
    // /dev/null is character device 1:3.
    is_char && major(st.st_rdev) == 1 && minor(st.st_rdev) == 3
}
