//! Writing payload bytes to stdout on a thread of its own, unbuffered (chunks are already
//! large), and reporting how far it got so that only written bytes are removed from the
//! server. Several payloads can share one writer (a follower interleaves them chunk by
//! chunk); each has its own [`Mark`]. A closed stdout (EPIPE) is reported as such: it is a
//! normal end, not an error.

use std::io::Write;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::oneshot;

/// How a write ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteEnd {
    Ok,
    /// The reader of stdout went away.
    Closed,
    Failed(String),
}

/// How far one payload's writes got: the value given with its last written chunk.
#[derive(Debug, Clone, Default)]
pub struct Mark(Arc<AtomicU64>);

impl Mark {
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }
}

/// A byte count shared between threads (bytes written, bytes sent).
#[derive(Debug, Clone, Default)]
pub struct Counter(Arc<AtomicU64>);

impl Counter {
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
}

enum Cmd {
    Data {
        bytes: Bytes,
        mark: Mark,
        value: u64,
    },
    Flush(oneshot::Sender<WriteEnd>),
}

/// The handle of the writer thread.
pub struct Writer {
    tx: std::sync::mpsc::SyncSender<Cmd>,
    failed: Arc<std::sync::Mutex<Option<WriteEnd>>>,
    written: Counter,
}

impl Writer {
    /// A writer on a duplicate of fd 1.
    pub fn stdout() -> std::io::Result<Writer> {
        let fd = std::io::stdout().as_fd().try_clone_to_owned()?;
        Ok(Writer::new(std::fs::File::from(fd)))
    }

    pub fn new<W: Write + Send + 'static>(mut out: W) -> Writer {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Cmd>(8);
        let failed = Arc::new(std::sync::Mutex::new(None));
        let fail = failed.clone();
        let written = Counter::default();
        let count = written.clone();
        let _ = std::thread::Builder::new()
            .name("stdout".into())
            .spawn(move || {
                let mut end = WriteEnd::Ok;
                while let Ok(cmd) = rx.recv() {
                    match cmd {
                        Cmd::Data { bytes, mark, value } => {
                            if end != WriteEnd::Ok {
                                continue;
                            }
                            match out.write_all(&bytes) {
                                Ok(()) => {
                                    count.add(bytes.len() as u64);
                                    mark.0.store(value, Ordering::Release)
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
        }
    }

    /// Bytes written so far.
    pub fn counter(&self) -> Counter {
        self.written.clone()
    }

    /// Queues bytes; `mark` takes `value` once they are written. Waits only when eight
    /// chunks are already queued (backpressure from a slow stdout).
    pub async fn write(&self, bytes: Bytes, mark: &Mark, value: u64) -> WriteEnd {
        if let Some(end) = self.failure() {
            return end;
        }
        let cmd = Cmd::Data {
            bytes,
            mark: mark.clone(),
            value,
        };
        if self.queue(cmd).await {
            WriteEnd::Ok
        } else {
            WriteEnd::Failed("the stdout writer stopped".into())
        }
    }

    /// Hands a command to the writer thread; false when the thread is gone. Waits on a
    /// blocking thread only when the queue is full: starting one costs more than a small
    /// payload's whole read.
    async fn queue(&self, cmd: Cmd) -> bool {
        let tx = self.tx.clone();
        match tx.try_send(cmd) {
            Ok(()) => true,
            Err(std::sync::mpsc::TrySendError::Full(cmd)) => {
                tokio::task::spawn_blocking(move || tx.send(cmd).is_ok())
                    .await
                    .unwrap_or(false)
            }
            Err(std::sync::mpsc::TrySendError::Disconnected(_)) => false,
        }
    }

    /// Waits until everything queued is written.
    pub async fn flush(&self) -> WriteEnd {
        let (done, wait) = oneshot::channel();
        if !self.queue(Cmd::Flush(done)).await {
            return WriteEnd::Failed("the stdout writer stopped".into());
        }
        wait.await
            .unwrap_or_else(|_| WriteEnd::Failed("the stdout writer stopped".into()))
    }

    /// Set once a write failed or stdout closed.
    pub fn failure(&self) -> Option<WriteEnd> {
        self.failed.lock().ok().and_then(|f| f.clone())
    }
}
