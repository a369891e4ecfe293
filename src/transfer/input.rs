//! Reading stdin into chunks on a thread of its own.
//!
//! A chunk is cut when it is full, or when the input pauses, so that a waiting receiver sees
//! live text at once. Cuts prefer the end of a line: a full chunk is cut after its last
//! newline, and a short pause sends only whole lines; a partial line goes out on its own only
//! after a longer pause. Lines that fit in a chunk are therefore never split between chunks,
//! which keeps many senders' lines whole when a follower interleaves them.

use std::io::Read;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use tokio::sync::mpsc;

/// A pause this long sends the whole lines read so far.
pub(crate) const LINE_PAUSE: Duration = Duration::from_millis(20);
/// A pause this long sends whatever was read, partial line included.
pub(crate) const PARTIAL_PAUSE: Duration = Duration::from_millis(250);
/// Whole lines never wait longer than this, even when the input never pauses (a steady
/// trickle of lines must not wait for a full chunk).
pub(crate) const LINE_DELAY: Duration = Duration::from_millis(100);

/// The size of a full chunk, which the sender may change while the reader runs (bigger on
/// the live path).
#[derive(Debug, Clone)]
pub(crate) struct ChunkSize(Arc<AtomicUsize>);

impl ChunkSize {
    pub(crate) fn new(size: usize) -> Self {
        ChunkSize(Arc::new(AtomicUsize::new(size)))
    }

    pub(crate) fn set(&self, size: usize) {
        self.0.store(size, Ordering::Relaxed);
    }

    fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed).max(1)
    }
}

/// One cut of the input.
#[derive(Debug)]
pub(crate) struct Piece {
    pub(crate) data: Bytes,
    /// The input ended after this piece.
    pub(crate) eof: bool,
}

/// Where to cut a buffer of `filled` bytes whose last newline is at `newline`.
/// `full`: the buffer reached the chunk size; otherwise the input paused for `paused`.
pub(crate) fn cut_point(
    filled: usize,
    newline: Option<usize>,
    full: bool,
    paused: Duration,
) -> Option<usize> {
    if filled == 0 {
        return None;
    }
    match newline {
        Some(p) => Some(p + 1),
        None if full || paused >= PARTIAL_PAUSE => Some(filled),
        None => None,
    }
}

struct Chunker<R> {
    input: R,
    size: ChunkSize,
    chunk: usize,
    buf: BytesMut,
    filled: usize,
    newline: Option<usize>,
    last_data: Instant,
    /// When the oldest byte in the buffer arrived.
    first_data: Instant,
}

impl<R: Read + AsFd> Chunker<R> {
    fn new(input: R, size: ChunkSize) -> Self {
        let chunk = size.get();
        Chunker {
            input,
            size,
            chunk,
            buf: BytesMut::zeroed(chunk),
            filled: 0,
            newline: None,
            last_data: Instant::now(),
            first_data: Instant::now(),
        }
    }

    /// Takes the first `at` bytes out as a piece; the rest stays for the next chunk.
    fn cut(&mut self, at: usize) -> Bytes {
        let out = self.buf.split_to(at).freeze();
        self.buf.truncate(self.filled - at);
        self.filled -= at;
        // Only the remainder is copied into the fresh buffer, never the whole chunk.
        self.buf.resize(self.chunk.max(self.filled), 0);
        self.newline = memchr::memrchr(b'\n', &self.buf[..self.filled]);
        // The remainder is a partial line that arrived with the last read.
        self.first_data = self.last_data;
        out
    }

    /// Waits until stdin is readable or `wait` passes; true when readable.
    fn wait_readable(&self, wait: Duration) -> std::io::Result<bool> {
        let ms = u16::try_from(wait.as_millis().max(1)).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(self.input.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(0) => Ok(false),
            Ok(_) => Ok(true),
            Err(nix::errno::Errno::EINTR) => Ok(false),
            Err(e) => Err(std::io::Error::from(e)),
        }
    }

    /// Reads until the next cut: a piece of data, or the last piece (`eof`) at the end.
    fn next(&mut self) -> std::io::Result<Piece> {
        let want = self.size.get();
        if want != self.chunk {
            self.chunk = want;
            if self.buf.len() < want {
                self.buf.resize(want, 0);
            }
        }
        loop {
            if self.filled >= self.chunk {
                let at = cut_point(self.filled, self.newline, true, Duration::ZERO)
                    .unwrap_or(self.filled);
                return Ok(Piece {
                    data: self.cut(at),
                    eof: false,
                });
            }
            if self.filled > 0 {
                // Time left before a cut: whole lines go after a short pause or a short
                // delay; a partial line only after a long one.
                let (pause, delay) = if self.newline.is_some() {
                    (LINE_PAUSE, LINE_DELAY)
                } else {
                    (PARTIAL_PAUSE, PARTIAL_PAUSE)
                };
                let left = pause
                    .saturating_sub(self.last_data.elapsed())
                    .min(delay.saturating_sub(self.first_data.elapsed()));
                let ready = !left.is_zero() && self.wait_readable(left)?;
                if !ready {
                    let waited = self.first_data.elapsed();
                    if let Some(at) = cut_point(self.filled, self.newline, false, waited) {
                        return Ok(Piece {
                            data: self.cut(at),
                            eof: false,
                        });
                    }
                    continue;
                }
            }
            let start = self.filled;
            let n = match self.input.read(&mut self.buf[start..self.chunk]) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if n == 0 {
                // The last piece: no fresh buffer for input that will not come (for a
                // one-line payload, that would be a quarter of a megabyte zeroed for nothing).
                let all = self.filled;
                self.filled = 0;
                return Ok(Piece {
                    data: self.buf.split_to(all).freeze(),
                    eof: true,
                });
            }
            if self.filled == 0 {
                self.first_data = Instant::now();
            }
            self.filled += n;
            self.last_data = Instant::now();
            if let Some(p) = memchr::memrchr(b'\n', &self.buf[start..self.filled]) {
                self.newline = Some(start + p);
            }
        }
    }
}

/// Starts the reader thread on a duplicate of fd 0. Pieces arrive in order; the last one has
/// `eof` set, or an error ends the stream.
pub(crate) fn spawn_stdin(
    size: ChunkSize,
) -> std::io::Result<mpsc::Receiver<std::io::Result<Piece>>> {
    let fd = std::io::stdin().as_fd().try_clone_to_owned()?;
    let file = std::fs::File::from(fd);
    Ok(spawn(file, size))
}

/// Starts the reader thread on any readable file.
pub(crate) fn spawn(
    input: std::fs::File,
    size: ChunkSize,
) -> mpsc::Receiver<std::io::Result<Piece>> {
    let (tx, rx) = mpsc::channel(2);
    std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || {
            let mut chunker = Chunker::new(input, size);
            loop {
                let piece = chunker.next();
                let stop = !matches!(piece, Ok(Piece { eof: false, .. }));
                if tx.blocking_send(piece).is_err() || stop {
                    return;
                }
            }
        })
        .map(|_| ())
        .unwrap_or_else(|e| eprintln!("skypipe: cannot start the stdin reader: {e}"));
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_prefer_line_ends() {
        assert_eq!(cut_point(0, None, true, Duration::ZERO), None);
        assert_eq!(cut_point(10, Some(4), true, Duration::ZERO), Some(5));
        assert_eq!(cut_point(10, None, true, Duration::ZERO), Some(10));
        assert_eq!(cut_point(10, Some(9), false, LINE_PAUSE), Some(10));
        assert_eq!(cut_point(10, None, false, LINE_PAUSE), None);
        assert_eq!(cut_point(10, None, false, PARTIAL_PAUSE), Some(10));
    }

    fn pieces_of(data: &[u8], chunk: usize) -> Vec<Piece> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("in");
        std::fs::write(&path, data).expect("write");
        let file = std::fs::File::open(&path).expect("open");
        let mut c = Chunker::new(file, ChunkSize::new(chunk));
        let mut out = Vec::new();
        loop {
            let p = c.next().expect("read");
            let eof = p.eof;
            out.push(p);
            if eof {
                return out;
            }
        }
    }

    #[test]
    fn file_input_is_cut_at_lines_and_reassembles() {
        let mut data = Vec::new();
        for i in 0..500 {
            data.extend_from_slice(format!("line {i} {}\n", "x".repeat(i % 37)).as_bytes());
        }
        data.extend_from_slice(b"no newline at the end");
        let pieces = pieces_of(&data, 1024);
        let joined: Vec<u8> = pieces.iter().flat_map(|p| p.data.to_vec()).collect();
        assert_eq!(joined, data);
        for p in &pieces[..pieces.len() - 2] {
            assert_eq!(
                p.data.last(),
                Some(&b'\n'),
                "a full chunk ends at a line end"
            );
            assert!(p.data.len() <= 1024);
        }
        assert!(pieces.last().map(|p| p.eof).unwrap_or(false));
    }

    #[test]
    fn empty_input_is_one_empty_eof_piece() {
        let pieces = pieces_of(b"", 1024);
        assert_eq!(pieces.len(), 1);
        assert!(pieces[0].eof && pieces[0].data.is_empty());
    }

    #[test]
    fn binary_without_newlines_fills_chunks() {
        let data: Vec<u8> = (0..5000u32)
            .map(|i| (i % 250) as u8 + 1)
            .filter(|b| *b != b'\n')
            .collect();
        let pieces = pieces_of(&data, 1000);
        assert!(pieces[0].data.len() == 1000);
        let joined: Vec<u8> = pieces.iter().flat_map(|p| p.data.to_vec()).collect();
        assert_eq!(joined, data);
    }
}
