//! The tail of a fill whose recording stopped (disk full, an I/O error):
//! the packets the store did not get, kept for the fill's players.
//!
//! The players of a storable on-demand title read the store while the hub
//! fills it, each at its own pace (a later player is further behind). When
//! the recording stops, the hub keeps every packet from that point in one
//! shared, append-only buffer; a player that reaches the end of what the
//! store holds goes on from the buffer, paced and renumbered by the stamped
//! npt as the store's records are, to the title's end. The buffer has one
//! copy of each packet however many players, and a bound: past it the
//! oldest packets go, and a player that still needed them ends there.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use super::HubPacket;

/// Most bytes a tail keeps: about a minute of a 8 Mbit/s title, how far
/// behind the origin a player of the fill may be when the recording stops.
const TAIL_MAX_BYTES: usize = 64 << 20;
/// Most bytes all tails together keep: a full disk stops every fill at
/// once, and their tails must not then fill the memory too. A tail that
/// grows past it drops its own oldest packets.
const ALL_TAILS_MAX_BYTES: usize = 256 << 20;
/// Bytes held by every tail of the process.
static ALL_TAILS_BYTES: AtomicUsize = AtomicUsize::new(0);

pub struct Tail {
    /// The store holds this fill's packets up to the tail's first one: a
    /// player goes on from it directly. Otherwise (the recording stopped
    /// before writing anything) the tail overlaps what the store holds from
    /// an earlier fill and is spliced like a new recording run.
    continues_store: bool,
    buf: Mutex<Buf>,
}

struct Buf {
    /// Position (from the tail's start) of `packets[0]`.
    base: usize,
    packets: VecDeque<HubPacket>,
    bytes: usize,
    /// The fill is over: nothing more will come.
    closed: bool,
}

/// What a [`TailCursor`] has next.
#[derive(Debug)]
pub enum TailRead {
    Packet(HubPacket),
    /// Nothing yet: the origin has not sent it.
    Wait,
    /// The fill is over and everything was read.
    End,
    /// The packets this cursor needed next were dropped for the bound.
    Lost,
}

impl Tail {
    pub(super) fn new(continues_store: bool, first: Vec<HubPacket>) -> Tail {
        let tail = Tail {
            continues_store,
            buf: Mutex::new(Buf {
                base: 0,
                packets: VecDeque::new(),
                bytes: 0,
                closed: false,
            }),
        };
        for packet in first {
            tail.push(packet);
        }
        tail
    }

    pub(super) fn push(&self, packet: HubPacket) {
        let mut buf = self.lock();
        let len = packet.data.len();
        buf.bytes += len;
        let mut all = ALL_TAILS_BYTES.fetch_add(len, Ordering::Relaxed) + len;
        buf.packets.push_back(packet);
        while buf.bytes > TAIL_MAX_BYTES || (all > ALL_TAILS_MAX_BYTES && buf.packets.len() > 1) {
            let Some(old) = buf.packets.pop_front() else {
                break;
            };
            let len = old.data.len();
            buf.bytes -= len;
            buf.base += 1;
            all = ALL_TAILS_BYTES.fetch_sub(len, Ordering::Relaxed) - len;
        }
    }

    pub(super) fn close(&self) {
        self.lock().closed = true;
    }

    pub fn continues_store(&self) -> bool {
        self.continues_store
    }

    /// A cursor from the tail's first packet.
    pub fn cursor(self: &Arc<Self>) -> TailCursor {
        TailCursor {
            tail: Arc::clone(self),
            next: 0,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Buf> {
        // A panic while holding this lock leaves a queue of packets behind;
        // carrying on with it is safe.
        self.buf.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Tail {
    fn drop(&mut self) {
        let bytes = self.lock().bytes;
        ALL_TAILS_BYTES.fetch_sub(bytes, Ordering::Relaxed);
    }
}

/// One player's place in a [`Tail`].
pub struct TailCursor {
    tail: Arc<Tail>,
    next: usize,
}

impl TailCursor {
    pub fn read(&mut self) -> TailRead {
        let buf = self.tail.lock();
        if self.next < buf.base {
            return TailRead::Lost;
        }
        match buf.packets.get(self.next - buf.base) {
            Some(packet) => {
                self.next += 1;
                TailRead::Packet(packet.clone())
            }
            None if buf.closed => TailRead::End,
            None => TailRead::Wait,
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use streamcache_types::Npt;

    use super::*;

    fn packet(n: u8, len: usize) -> HubPacket {
        HubPacket {
            track: 0,
            rtcp: false,
            data: Bytes::from(vec![n; len]),
            npt: Npt::from_millis(u64::from(n)),
        }
    }

    fn read(cursor: &mut TailCursor) -> Option<u8> {
        match cursor.read() {
            TailRead::Packet(p) => Some(p.data[0]),
            _ => None,
        }
    }

    #[test]
    fn every_cursor_reads_from_the_start_then_waits_then_ends() {
        let tail = Arc::new(Tail::new(true, vec![packet(1, 10)]));
        let mut early = tail.cursor();
        assert_eq!(read(&mut early), Some(1));
        assert!(matches!(early.read(), TailRead::Wait));
        tail.push(packet(2, 10));
        let mut late = tail.cursor();
        assert_eq!(read(&mut late), Some(1));
        assert_eq!(read(&mut late), Some(2));
        assert_eq!(read(&mut early), Some(2));
        tail.close();
        assert!(matches!(early.read(), TailRead::End));
    }

    #[test]
    fn past_the_bound_the_oldest_packets_go_and_their_readers_end() {
        let tail = Arc::new(Tail::new(false, Vec::new()));
        let mut behind = tail.cursor();
        let big = TAIL_MAX_BYTES / 2 + 1;
        tail.push(packet(1, big));
        tail.push(packet(2, big)); // over the bound: packet 1 goes
        assert!(matches!(behind.read(), TailRead::Lost));
        let mut fresh = tail.cursor();
        assert!(matches!(fresh.read(), TailRead::Lost));
    }
}
