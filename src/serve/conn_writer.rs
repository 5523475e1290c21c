//! The write side of one player's connection, shared by the connection's
//! request handling (responses) and its sessions' senders (media).
//!
//! A sender writes straight to the socket from its own task when nothing is
//! waiting before it: on a player that keeps up, a tick of media costs one
//! `writev` and no other task's wake-up. Only what the socket does not take
//! at once is queued (copied), and the connection's flusher task writes the
//! queue out when the socket has room, before anything newer. Every write
//! happens under one lock, so frames are never torn nor reordered, and the
//! queue is bounded: a player that stops reading cannot make the daemon
//! buffer without bound.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::pin::pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Pieces of output queued toward one connection. Beyond this the player is
/// not reading: media is refused ([`Refused::Full`]) and its sessions end;
/// responses wait for room.
pub const OUT_QUEUE: usize = 256;
/// The same when the oldest piece queued has waited this long: with merged
/// writes a piece is a tick's worth of media, and 256 of them would let a
/// player that stopped reading hold half a minute of it.
pub const OUT_QUEUE_AGE: Duration = Duration::from_secs(4);

/// Most queued pieces written in one `writev`.
const WRITE_BATCH: usize = 64;

/// A non-blocking byte sink: the socket's write half (or, in benches and
/// tests, a stand-in). Dropping it closes the writing direction.
pub trait WriteSocket: Send + 'static {
    /// Writes what it can now; `WouldBlock` when nothing fits.
    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize>;
    /// Ready once a write may succeed again.
    fn poll_writable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
}

impl WriteSocket for OwnedWriteHalf {
    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        OwnedWriteHalf::try_write_vectored(self, bufs)
    }

    fn poll_writable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.as_ref().poll_write_ready(cx)
    }
}

/// Why output was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The queue is full: the player does not read.
    Full,
    /// The connection is closed (or closing).
    Closed,
}

pub struct ConnWriter {
    state: Mutex<State>,
    /// Wakes the flusher: something was queued, or the connection closes.
    work: Notify,
    /// Wakes responses waiting for room in the queue.
    room: Notify,
}

struct State {
    /// `None` once closed or failed.
    socket: Option<Box<dyn WriteSocket>>,
    queue: VecDeque<Piece>,
    /// Close once the queue is written.
    closing: bool,
}

impl std::fmt::Debug for ConnWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.lock();
        f.debug_struct("ConnWriter")
            .field("open", &state.socket.is_some())
            .field("queued", &state.queue.len())
            .field("closing", &state.closing)
            .finish()
    }
}

impl ConnWriter {
    /// A writer over `socket` and its flusher task, which ends when the
    /// connection is closed (after writing what was queued) or a write
    /// fails (the peer is gone).
    pub fn spawn(socket: impl WriteSocket) -> (Arc<ConnWriter>, JoinHandle<()>) {
        let writer = Arc::new(ConnWriter {
            state: Mutex::new(State {
                socket: Some(Box::new(socket)),
                queue: VecDeque::new(),
                closing: false,
            }),
            work: Notify::new(),
            room: Notify::new(),
        });
        let flusher = tokio::spawn(Arc::clone(&writer).flush_loop());
        (writer, flusher)
    }

    /// Media: written now, or queued behind what waits. Never waits itself
    /// (media must not pile up behind a slow player).
    pub fn write(&self, bytes: &[u8]) -> Result<(), Refused> {
        self.write_parts(&[IoSlice::new(bytes)])
    }

    /// Media in several parts, one after the other: as [`ConnWriter::write`],
    /// in one `writev`.
    pub fn write_parts(&self, parts: &[IoSlice<'_>]) -> Result<(), Refused> {
        let mut state = self.lock();
        if state.socket.is_none() || state.closing {
            return Err(Refused::Closed);
        }
        if state.is_full() {
            return Err(Refused::Full);
        }
        self.write_or_queue(&mut state, parts);
        Ok(())
    }

    /// A response: waits while the queue is full. False once the connection
    /// is closed.
    pub async fn write_waiting(&self, bytes: &[u8]) -> bool {
        loop {
            let mut room = pin!(self.room.notified());
            room.as_mut().enable();
            match self.write(bytes) {
                Ok(()) => return true,
                Err(Refused::Closed) => return false,
                Err(Refused::Full) => room.await,
            }
        }
    }

    /// Closes the connection once what is queued is written; later writes
    /// are refused.
    pub fn close(&self) {
        self.lock().closing = true;
        self.work.notify_one();
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves nothing half-done that a
        // later writer could not cope with: the queue holds whole pieces.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write_or_queue(&self, state: &mut State, parts: &[IoSlice<'_>]) {
        let mut written = 0;
        if state.queue.is_empty() {
            let Some(socket) = &state.socket else {
                return;
            };
            match socket.try_write_vectored(parts) {
                Ok(n) => written = n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => {
                    // The peer is gone: the flusher ends, and with it the
                    // connection.
                    state.fail();
                    self.work.notify_one();
                    return;
                }
            }
        }
        let total: usize = parts.iter().map(|p| p.len()).sum();
        if written < total {
            // What the socket did not take, copied into one piece.
            let mut rest = Vec::with_capacity(total - written);
            for part in parts {
                let skip = written.min(part.len());
                written -= skip;
                rest.extend_from_slice(&part[skip..]);
            }
            state.queue.push_back(Piece {
                bytes: Bytes::from(rest),
                queued_at: Instant::now(),
            });
            self.work.notify_one();
        }
    }

    async fn flush_loop(self: Arc<Self>) {
        loop {
            let mut work = pin!(self.work.notified());
            work.as_mut().enable();
            // The guard must not live across an await.
            let flushed = self.lock().write_queued();
            match flushed {
                Flushed::Empty => {}
                Flushed::Blocked => {
                    if self.writable().await.is_err() {
                        self.lock().fail();
                        self.room.notify_waiters();
                        return;
                    }
                    continue;
                }
                Flushed::Over => {
                    self.room.notify_waiters();
                    return;
                }
            }
            self.room.notify_waiters();
            work.await;
        }
    }

    async fn writable(&self) -> io::Result<()> {
        poll_fn(|cx| match &self.lock().socket {
            Some(socket) => socket.poll_writable(cx),
            None => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        })
        .await
    }
}

/// Output the socket did not take at once.
struct Piece {
    bytes: Bytes,
    queued_at: Instant,
}

/// What the flusher found.
enum Flushed {
    /// The queue is written out.
    Empty,
    /// The socket is full; the queue waits.
    Blocked,
    /// Closed (as asked, or the peer is gone): the flusher ends.
    Over,
}

impl State {
    fn is_full(&self) -> bool {
        self.queue.len() >= OUT_QUEUE
            || self
                .queue
                .front()
                .is_some_and(|p| p.queued_at.elapsed() >= OUT_QUEUE_AGE)
    }

    fn write_queued(&mut self) -> Flushed {
        let Some(socket) = &self.socket else {
            return Flushed::Over;
        };
        while !self.queue.is_empty() {
            let slices: [IoSlice<'_>; WRITE_BATCH] = std::array::from_fn(|i| {
                IoSlice::new(self.queue.get(i).map_or(&[][..], |p| &p.bytes[..]))
            });
            let count = self.queue.len().min(WRITE_BATCH);
            let mut n = match socket.try_write_vectored(&slices[..count]) {
                Ok(0) => {
                    self.fail();
                    return Flushed::Over;
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Flushed::Blocked,
                Err(_) => {
                    self.fail();
                    return Flushed::Over;
                }
            };
            // Drop what was written; a partly written piece keeps its rest.
            while n > 0 {
                let Some(front) = self.queue.front_mut() else {
                    break;
                };
                if n >= front.bytes.len() {
                    n -= front.bytes.len();
                    self.queue.pop_front();
                } else {
                    front.bytes.advance(n);
                    n = 0;
                }
            }
        }
        if self.closing {
            // Dropping the socket closes the writing direction.
            self.socket = None;
            return Flushed::Over;
        }
        Flushed::Empty
    }

    fn fail(&mut self) {
        self.socket = None;
        self.queue.clear();
    }
}

#[cfg(test)]
mod tests;
