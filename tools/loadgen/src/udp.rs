//! RTP over UDP for a player (`--transport udp`).
//!
//! Per track, the player binds an even/odd pair of UDP sockets on its
//! loopback address ([`bind_pair`]: RTP on the even port, RTCP on the next),
//! offers them in SETUP as `client_port`, and after PLAY reads each socket in
//! a task of its own ([`spawn`]) until told to stop. The RTP task owns the
//! track's [`TrackReceiver`], so every figure is accounted exactly as for
//! interleaved frames; the RTCP task only counts.
//!
//! Receiving is meant to cost the client little, since it shares the cores
//! with the server it measures: one `recvmmsg` takes up to a batch of
//! datagrams into one buffer reused for the whole run, and a batch that
//! comes back short shows the socket drained, so readiness is cleared without
//! the extra call that would only return `EAGAIN`. Each datagram's arrival
//! time is the return of the call that brought it (as for a TCP `read`).
//!
//! Each socket asks for a [`RECEIVE_BUFFER`] receive buffer (the kernel caps
//! it at `net.core.rmem_max`); a datagram that finds it full is dropped by
//! the kernel and shows as lost. The kernel's count of those drops is read
//! per socket at the end (`SO_MEMINFO`) and reported apart.

use crate::receiver::TrackReceiver;
use nix::sys::socket::{recvmmsg, setsockopt, sockopt, MsgFlags, MultiHeaders};
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;
use tokio::io::unix::AsyncFd;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The receive buffer each socket asks for, bytes.
pub const RECEIVE_BUFFER: usize = 4 << 20;

/// The range the RTP ports are taken from (RTCP is the next port): below
/// Linux's default ephemeral range (32768–60999), where the servers under
/// test bind their own UDP ports, so the two rarely meet.
pub const PORT_RANGE: (u16, u16) = (20000, 32767);

/// Bytes per datagram slot; a larger datagram is counted malformed.
const SLOT: usize = 4096;
/// Datagrams one `recvmmsg` takes on an RTP socket.
const RTP_BATCH: usize = 8;
/// … on an RTCP socket (a few sender reports a second).
const RTCP_BATCH: usize = 2;
/// Pairs tried before giving up.
const BIND_ATTEMPTS: u32 = 1024;

/// Hands out even RTP ports from a range, round-robin, to every session of
/// the run: a port that was just tried is not tried again until the range
/// wraps.
#[derive(Debug)]
pub struct PortCursor {
    first: u16,
    pairs: u32,
    next: AtomicU32,
}

impl PortCursor {
    /// Even ports from `first` (rounded up to even) to `last - 1` at most,
    /// so that RTCP's `port + 1` stays within `last`; the first one handed
    /// out is chosen by `start` (e.g. the process id, so that consecutive
    /// runs use different ports).
    pub fn new((first, last): (u16, u16), start: u32) -> Self {
        let first = first.saturating_add(first % 2);
        let pairs = u32::from(last).saturating_sub(u32::from(first)).div_ceil(2);
        let pairs = pairs.max(1);
        PortCursor {
            first,
            pairs,
            next: AtomicU32::new(start % pairs),
        }
    }

    /// The next even port to try.
    pub fn next_port(&self) -> u16 {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.pairs;
        // first + 2i ≤ first + 2(pairs − 1) ≤ last − 1, which fits.
        u16::try_from(u32::from(self.first) + 2 * i).unwrap_or(self.first)
    }
}

/// One track's sockets, bound and registered with the runtime.
pub struct PortPair {
    /// The RTP port (even); RTCP is on the next.
    pub port: u16,
    rtp: AsyncFd<UdpSocket>,
    rtcp: AsyncFd<UdpSocket>,
}

/// Binds RTP on an even port of `ip` and RTCP on the next, trying the pairs
/// of `ports` until one is free. Must run inside the runtime.
pub fn bind_pair(ip: IpAddr, ports: &PortCursor) -> io::Result<PortPair> {
    for _ in 0..BIND_ATTEMPTS.min(ports.pairs) {
        let port = ports.next_port();
        let rtp = match bind(ip, port) {
            Ok(s) => s,
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => continue,
            Err(e) => return Err(e),
        };
        let Some(rtcp_port) = port.checked_add(1) else {
            continue;
        };
        let rtcp = match bind(ip, rtcp_port) {
            Ok(s) => s,
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => continue,
            Err(e) => return Err(e),
        };
        return Ok(PortPair {
            port,
            rtp: register(rtp)?,
            rtcp: register(rtcp)?,
        });
    }
    Err(io::Error::new(
        io::ErrorKind::AddrInUse,
        "no free even/odd UDP port pair",
    ))
}

/// Registers a socket with the runtime's reactor.
fn register(socket: UdpSocket) -> io::Result<AsyncFd<UdpSocket>> {
    // SAFETY: the `AsyncFd` owns the socket, so its descriptor stays open
    // and the same for the `AsyncFd`'s whole life.
    Ok(unsafe { AsyncFd::register(socket) }?)
}

fn bind(ip: IpAddr, port: u16) -> io::Result<UdpSocket> {
    let socket = UdpSocket::bind(SocketAddr::new(ip, port))?;
    socket.set_nonblocking(true)?;
    // Best effort: the kernel caps it at net.core.rmem_max.
    let _ = setsockopt(&socket, sockopt::RcvBuf, &RECEIVE_BUFFER);
    Ok(socket)
}

/// The receive buffer the kernel grants a socket that asks for
/// [`RECEIVE_BUFFER`] (as `SO_RCVBUF` reads it back: doubled for the
/// kernel's bookkeeping), measured on a throw-away socket.
pub fn granted_receive_buffer() -> Option<usize> {
    let socket = bind(IpAddr::from([127, 0, 0, 1]), 0).ok()?;
    nix::sys::socket::getsockopt(&socket, sockopt::RcvBuf).ok()
}

/// Datagrams the kernel dropped on `socket` because its receive buffer was
/// full (`SK_MEMINFO_DROPS` of `SO_MEMINFO`, Linux 3.x+); `None` if it
/// cannot be read.
fn kernel_drops(socket: &UdpSocket) -> Option<u64> {
    const DROPS: usize = libc::SK_MEMINFO_DROPS as usize;
    let mut info = [0u32; DROPS + 1];
    let mut len = libc::socklen_t::try_from(std::mem::size_of_val(&info)).ok()?;
    // SAFETY: `info` is a writable buffer of `len` bytes that outlives the
    // call; the kernel writes at most `len` bytes and sets `len` to what it
    // wrote. The descriptor is open for the duration (borrowed `socket`).
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_MEMINFO,
            info.as_mut_ptr().cast(),
            &mut len,
        )
    };
    let wrote = usize::try_from(len).ok()?;
    (rc == 0 && wrote >= std::mem::size_of_val(&info)).then(|| u64::from(info[DROPS]))
}

/// One buffer of `N` datagram slots, reused for every call.
struct Batch<const N: usize> {
    buf: Box<[u8]>,
    /// Per slot of the last call: bytes, and whether the datagram was
    /// larger than the slot.
    lens: [(usize, bool); N],
}

impl<const N: usize> Batch<N> {
    fn new() -> Self {
        Batch {
            buf: vec![0; N * SLOT].into_boxed_slice(),
            lens: [(0, false); N],
        }
    }

    /// Takes up to `N` queued datagrams without waiting; `WouldBlock` if
    /// there is none.
    fn recv(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        // The headers hold raw pointers, so they cannot be kept in a task
        // (not `Send`): one small allocation per call.
        let mut headers = MultiHeaders::<()>::preallocate(N, None);
        let mut slots = self.buf.chunks_exact_mut(SLOT);
        let mut iovs: [[IoSliceMut<'_>; 1]; N] =
            std::array::from_fn(|_| [IoSliceMut::new(slots.next().unwrap_or_default())]);
        let received = recvmmsg(
            socket.as_raw_fd(),
            &mut headers,
            iovs.iter_mut(),
            MsgFlags::MSG_DONTWAIT,
            None,
        )?;
        let mut n = 0;
        for (len, msg) in self.lens.iter_mut().zip(received) {
            *len = (msg.bytes, msg.flags.contains(MsgFlags::MSG_TRUNC));
            n += 1;
        }
        Ok(n)
    }

    /// The first `n` datagrams of the last call, with their truncation flag.
    fn datagrams(&self, n: usize) -> impl Iterator<Item = (&[u8], bool)> {
        self.buf
            .chunks_exact(SLOT)
            .zip(&self.lens)
            .take(n)
            .map(|(slot, &(len, truncated))| (&slot[..len.min(SLOT)], truncated))
    }
}

/// How reading one socket ended.
#[derive(Debug, Default)]
pub struct Ended {
    /// The error that stopped it early, if one did.
    pub error: Option<String>,
    /// The kernel's drops on the socket, if readable.
    pub drops: Option<u64>,
}

/// Reads `socket` until `stop` is signalled (or its sender dropped), handing
/// each datagram, whether it was truncated, and its arrival time to `on`.
async fn receive<const N: usize>(
    socket: AsyncFd<UdpSocket>,
    mut stop: watch::Receiver<()>,
    mut on: impl FnMut(&[u8], bool, Instant),
) -> Ended {
    let mut batch = Batch::<N>::new();
    let error = loop {
        let mut guard = tokio::select! {
            biased;
            _ = stop.changed() => break None,
            ready = socket.readable() => match ready {
                Ok(guard) => guard,
                Err(e) => break Some(e),
            },
        };
        let n = match guard.try_io(|s| batch.recv(s.get_ref())) {
            Err(_would_block) => continue, // readiness cleared by try_io
            Ok(Err(e)) => break Some(e),
            Ok(Ok(n)) => n,
        };
        let at = Instant::now();
        if n < N {
            // A short batch means the queue was empty: wait for the next
            // datagram rather than make a call that would only say so.
            // (This clears only readiness seen before the guard was taken.)
            guard.clear_ready();
        }
        for (datagram, truncated) in batch.datagrams(n) {
            on(datagram, truncated, at);
        }
    };
    Ended {
        error: error.map(|e| e.to_string()),
        drops: kernel_drops(socket.get_ref()),
    }
}

/// The receiving tasks of one track.
pub struct Receiving {
    rtp: JoinHandle<(TrackReceiver, Ended)>,
    rtcp: JoinHandle<(u64, Ended)>,
}

/// Starts reading a track's pair: RTP into `track`, RTCP counted. Both stop
/// when `stop` is signalled or its sender dropped.
pub fn spawn(pair: PortPair, mut track: TrackReceiver, stop: &watch::Receiver<()>) -> Receiving {
    let stop_rtp = stop.clone();
    let rtp = tokio::spawn(async move {
        let ended = receive::<RTP_BATCH>(pair.rtp, stop_rtp, |datagram, truncated, at| {
            if truncated {
                track.on_truncated();
            } else {
                track.on_rtp(datagram, at);
            }
        })
        .await;
        (track, ended)
    });
    let stop_rtcp = stop.clone();
    let rtcp = tokio::spawn(async move {
        let mut packets = 0;
        let ended = receive::<RTCP_BATCH>(pair.rtcp, stop_rtcp, |_, _, _| packets += 1).await;
        (packets, ended)
    });
    Receiving { rtp, rtcp }
}

/// What the tasks of a session's tracks received, once they have stopped.
#[derive(Debug, Default)]
pub struct Received {
    /// The track receivers, in track order (a track whose task failed is
    /// missing).
    pub tracks: Vec<TrackReceiver>,
    /// The kernel's drops summed over the sockets, if any could be read.
    pub drops: Option<u64>,
    /// The first error that stopped a socket's reading early.
    pub error: Option<String>,
}

/// Waits for every track's tasks (signal them to stop first).
pub async fn join(receiving: Vec<Receiving>) -> Received {
    let mut out = Received::default();
    let note = |out: &mut Received, ended: Ended| {
        if let Some(d) = ended.drops {
            *out.drops.get_or_insert(0) += d;
        }
        if out.error.is_none() {
            out.error = ended.error;
        }
    };
    for r in receiving {
        let rtcp = match r.rtcp.await {
            Ok((packets, ended)) => {
                note(&mut out, ended);
                packets
            }
            Err(e) => {
                out.error.get_or_insert(format!("RTCP task: {e}"));
                0
            }
        };
        match r.rtp.await {
            Ok((mut track, ended)) => {
                note(&mut out, ended);
                track.track.stats.rtcp_packets += rtcp;
                out.tracks.push(track);
            }
            Err(e) => {
                out.error.get_or_insert(format!("RTP task: {e}"));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::Track;
    use crate::track::TrackStats;
    use std::time::Duration;
    use streamcache_rtsp::rtp::Codec;

    #[test]
    fn ports_are_even_within_the_range_and_wrap() {
        let ports = PortCursor::new((20000, 20007), 0);
        let got: Vec<u16> = (0..5).map(|_| ports.next_port()).collect();
        assert_eq!(got, [20000, 20002, 20004, 20006, 20000]);
        // An odd start is rounded up; RTCP (port + 1) stays within `last`.
        let ports = PortCursor::new((20001, 20006), 1);
        let got: Vec<u16> = (0..3).map(|_| ports.next_port()).collect();
        assert_eq!(got, [20004, 20002, 20004]);
        let ports = PortCursor::new((65534, 65535), 9);
        assert_eq!(ports.next_port(), 65534);
        // The start spreads runs over the range.
        let ports = PortCursor::new(PORT_RANGE, 1_000_003);
        let p = ports.next_port();
        assert!(
            p.is_multiple_of(2) && (PORT_RANGE.0..PORT_RANGE.1).contains(&p),
            "{p}"
        );
    }

    #[tokio::test]
    async fn taken_pairs_are_skipped() {
        let ip = IpAddr::from([127, 0, 0, 1]);
        // Find a free pair, then take its RTCP port so that it is refused.
        let probe = PortCursor::new((24000, 24999), std::process::id());
        let first = bind_pair(ip, &probe).unwrap();
        let port = first.port;
        drop(first);
        let _rtcp_taken = UdpSocket::bind(SocketAddr::new(ip, port + 1)).unwrap();
        let ports = PortCursor::new((port, port + 3), 0);
        let pair = bind_pair(ip, &ports).unwrap();
        assert_eq!(pair.port, port + 2);
        // Every pair taken: an error, not a loop.
        let err = bind_pair(ip, &PortCursor::new((port, port + 1), 0))
            .err()
            .unwrap();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
    }

    fn rtp(sequence: u16, len: usize) -> Vec<u8> {
        let mut p = vec![0x80, 96];
        p.extend_from_slice(&sequence.to_be_bytes());
        p.extend_from_slice(&(u32::from(sequence) * 3000).to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, 1]);
        p.resize(len, 0x41);
        p
    }

    #[tokio::test]
    async fn datagrams_are_accounted_per_track() {
        let ip = IpAddr::from([127, 0, 0, 1]);
        let pair = bind_pair(ip, &PortCursor::new((25000, 25999), std::process::id())).unwrap();
        let (rtp_to, rtcp_to) = (
            SocketAddr::new(ip, pair.port),
            SocketAddr::new(ip, pair.port + 1),
        );
        let track = TrackReceiver::for_tracks(vec![Track {
            kind: "video".into(),
            codec: Codec::H264,
            stats: TrackStats::new(Some(90_000)),
        }])
        .remove(0);
        let (stop, stopped) = watch::channel(());
        let receiving = spawn(pair, track, &stopped);
        let sender = UdpSocket::bind(SocketAddr::new(ip, 0)).unwrap();
        // More than a batch at once, one lost (4), one too large (9).
        for s in (1..=12).filter(|&s| s != 4) {
            let len = if s == 9 { SLOT + 1 } else { 1200 };
            sender.send_to(&rtp(s, len), rtp_to).unwrap();
        }
        sender.send_to(&[0x80, 200, 0, 6], rtcp_to).unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(stop);
        let received = join(vec![receiving]).await;
        assert!(received.error.is_none(), "{:?}", received.error);
        assert_eq!(received.drops, Some(0));
        let stats = &received.tracks[0].track.stats;
        assert_eq!(
            (
                stats.packets,
                stats.bytes,
                stats.malformed,
                stats.rtcp_packets
            ),
            (10, 12_000, 1, 1)
        );
        // 4 missing, and 9 (truncated, not measured).
        assert_eq!((stats.lost(), stats.gaps()), (2, 2));
    }

    #[tokio::test]
    async fn a_full_receive_buffer_shows_as_kernel_drops() {
        let ip = IpAddr::from([127, 0, 0, 1]);
        let socket = UdpSocket::bind(SocketAddr::new(ip, 0)).unwrap();
        setsockopt(&socket, sockopt::RcvBuf, &4096).unwrap();
        assert_eq!(kernel_drops(&socket), Some(0));
        let to = socket.local_addr().unwrap();
        let sender = UdpSocket::bind(SocketAddr::new(ip, 0)).unwrap();
        for s in 0..200 {
            sender.send_to(&rtp(s, 1000), to).unwrap();
        }
        assert!(kernel_drops(&socket).unwrap() > 0);
        assert!(granted_receive_buffer().unwrap() > 0);
    }
}
