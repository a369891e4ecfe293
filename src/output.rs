//! Writing payload bytes to stdout on a thread of its own, unbuffered (chunks are already
//! large), and reporting how far it got so that only written bytes are removed from the
//! server. A closed stdout (EPIPE) is reported as such: it is a normal end, not an error.

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

enum Cmd {
    Data { bytes: Bytes, mark: u64 },
    Flush(oneshot::Sender<WriteEnd>),
}

/// The handle of the writer thread.
pub struct Writer {
    tx: std::sync::mpsc::SyncSender<Cmd>,
    written_mark: Arc<AtomicU64>,
    failed: Arc<std::sync::Mutex<Option<WriteEnd>>>,
}

impl Writer {
    /// A writer on a duplicate of fd 1.
    pub fn stdout() -> std::io::Result<Writer> {
        let fd = std::io::stdout().as_fd().try_clone_to_owned()?;
        Ok(Writer::new(std::fs::File::from(fd)))
    }

    pub fn new<W: Write + Send + 'static>(mut out: W) -> Writer {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Cmd>(8);
        let written_mark = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(std::sync::Mutex::new(None));
        let (mark, fail) = (written_mark.clone(), failed.clone());
        let _ = std::thread::Builder::new()
            .name("stdout".into())
            .spawn(move || {
                let mut end = WriteEnd::Ok;
                while let Ok(cmd) = rx.recv() {
                    match cmd {
                        Cmd::Data { bytes, mark: m } => {
                            if end != WriteEnd::Ok {
                                continue;
                            }
                            match out.write_all(&bytes) {
                                Ok(()) => mark.store(m, Ordering::Release),
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
            written_mark,
            failed,
        }
    }

    /// Queues bytes; `mark` becomes [`Writer::written_mark`] once they are written. Blocks
    /// the calling task only when eight chunks are already queued (backpressure).
    pub async fn write(&self, bytes: Bytes, mark: u64) -> WriteEnd {
        if let Some(end) = self.failure() {
            return end;
        }
        let tx = self.tx.clone();
        let sent = match tx.try_send(Cmd::Data { bytes, mark }) {
            Ok(()) => true,
            Err(std::sync::mpsc::TrySendError::Full(cmd)) => {
                tokio::task::spawn_blocking(move || tx.send(cmd).is_ok())
                    .await
                    .unwrap_or(false)
            }
            Err(std::sync::mpsc::TrySendError::Disconnected(_)) => false,
        };
        if sent {
            WriteEnd::Ok
        } else {
            WriteEnd::Failed("the stdout writer stopped".into())
        }
    }

    /// Waits until everything queued is written.
    pub async fn flush(&self) -> WriteEnd {
        let (done, wait) = oneshot::channel();
        let tx = self.tx.clone();
        let sent = tokio::task::spawn_blocking(move || tx.send(Cmd::Flush(done)).is_ok())
            .await
            .unwrap_or(false);
        if !sent {
            return WriteEnd::Failed("the stdout writer stopped".into());
        }
        wait.await
            .unwrap_or_else(|_| WriteEnd::Failed("the stdout writer stopped".into()))
    }

    /// The mark of the last chunk fully written.
    pub fn written_mark(&self) -> u64 {
        self.written_mark.load(Ordering::Acquire)
    }

    /// Set once a write failed or stdout closed.
    pub fn failure(&self) -> Option<WriteEnd> {
        self.failed.lock().ok().and_then(|f| f.clone())
    }
}
