//! A player's RTP and RTCP datagrams toward its UDP ports, in as few system
//! calls as the kernel allows.
//!
//! What a flush carries for one socket leaves in one `sendmmsg`. With UDP
//! generic segmentation offload (`UDP_SEGMENT`, Linux ≥ 4.18) runs of
//! datagrams of one size to one address — the fragments of a video frame —
//! become one message that the kernel cuts into the datagrams at the last
//! moment, so the stack is walked once per run instead of once per packet.
//! A kernel or a route that refuses it turns it off for the process (logged
//! once) and the datagrams go one by one, as they would without it.

use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use nix::errno::Errno;
use nix::sys::socket::{sendmmsg, ControlMessage, MsgFlags, MultiHeaders, SockaddrStorage};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tracing::{debug, warn};

use super::delivery::KEEP_BUFFER_BYTES;

/// Most datagrams in one segmented message (the kernel's `UDP_MAX_SEGMENTS`
/// was 64 before Linux 6.1).
const MAX_SEGMENTS: usize = 64;
/// Most bytes in one segmented message: a UDP/IPv4 datagram's payload limit.
const MAX_MESSAGE_BYTES: usize = 65_507;

/// Whether segmentation offload is still tried (until a refusal).
static GSO: AtomicBool = AtomicBool::new(true);

/// The datagrams queued for one socket: their bytes one after the other in
/// one buffer, reused from flush to flush (no allocation per packet).
pub(super) struct UdpQueue {
    socket: Arc<UdpSocket>,
    bytes: Vec<u8>,
    /// Destination and end offset in `bytes` of each datagram, in order.
    ends: Vec<(SocketAddr, usize)>,
}

impl UdpQueue {
    pub(super) fn new(socket: Arc<UdpSocket>) -> UdpQueue {
        UdpQueue {
            socket,
            bytes: Vec::new(),
            ends: Vec::new(),
        }
    }

    pub(super) fn is_for(&self, socket: &Arc<UdpSocket>) -> bool {
        Arc::ptr_eq(&self.socket, socket)
    }

    pub(super) fn push(&mut self, dest: SocketAddr, data: &[u8]) {
        self.bytes.extend_from_slice(data);
        self.ends.push((dest, self.bytes.len()));
    }

    /// Sends everything queued; returns the bytes sent.
    pub(super) async fn flush(&mut self) -> u64 {
        if self.ends.is_empty() {
            return 0;
        }
        let mut start = 0;
        let datagrams: Vec<(SocketAddr, &[u8])> = self
            .ends
            .iter()
            .map(|&(dest, end)| {
                let datagram = (dest, &self.bytes[start..end]);
                start = end;
                datagram
            })
            .collect();
        let sent = send_datagrams(&self.socket, &datagrams).await;
        if self.bytes.capacity() > KEEP_BUFFER_BYTES {
            self.bytes = Vec::new();
        }
        self.bytes.clear();
        self.ends.clear();
        sent
    }
}

/// Sends datagrams, each to its own destination, in order per destination.
/// Returns the bytes sent.
///
/// A message the kernel refuses (e.g. ECONNREFUSED left by an ICMP error)
/// is skipped and the rest still go: a lost datagram is UDP's nature, and an
/// unreachable player shows up as silence and its session times out.
pub(super) async fn send_datagrams<D: AsRef<[u8]>>(
    socket: &UdpSocket,
    datagrams: &[(SocketAddr, D)],
) -> u64 {
    let sizes: Vec<(SocketAddr, usize)> = datagrams
        .iter()
        .map(|(dest, d)| (*dest, d.as_ref().len()))
        .collect();
    let (mut messages, mut segment) = plan(&sizes, GSO.load(Ordering::Relaxed));
    let mut rest = &messages[..];
    let mut sent = 0u64;
    while !rest.is_empty() {
        // The socket is non-blocking: `try_io` clears its readiness on
        // WouldBlock, so that `writable()` waits for room.
        match socket.try_io(Interest::WRITABLE, || {
            sendmmsg_once(socket, datagrams, rest, segment)
        }) {
            Ok(n) => {
                // sendmmsg may send fewer than asked (a full buffer, an
                // error after the first): go on with the rest.
                sent += rest[..n]
                    .iter()
                    .flat_map(|m| &datagrams[m.clone()])
                    .map(|(_, d)| d.as_ref().len() as u64)
                    .sum::<u64>();
                rest = &rest[n..];
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if let Err(e) = socket.writable().await {
                    debug!(error = %e, dropped = rest.len(), "udp socket unusable");
                    break;
                }
            }
            Err(e) if segment.is_some() && refuses_segmentation(&e) => {
                if GSO.swap(false, Ordering::Relaxed) {
                    warn!(error = %e, "UDP segmentation offload refused: datagrams go one by one from now on");
                }
                // What is left, a datagram a message.
                messages = (rest[0].start..datagrams.len()).map(|i| i..i + 1).collect();
                segment = None;
                rest = &messages[..];
            }
            Err(e) => {
                // The first message of `rest` failed on its own.
                debug!(dest = %datagrams[rest[0].start].0, error = %e, "udp send failed");
                rest = &rest[1..];
            }
        }
    }
    sent
}

/// Splits datagrams (destination and size, in order) into messages: ranges
/// of them sent as one. Without `gso` every datagram is a message. With it,
/// a message is a run to one destination of datagrams of the largest size
/// among them, the last of which may be shorter (how the kernel cuts a
/// segmented message); the size is returned to be set as `UDP_SEGMENT`
/// (`None` when no run is longer than one datagram).
fn plan(datagrams: &[(SocketAddr, usize)], gso: bool) -> (Vec<Range<usize>>, Option<u16>) {
    let largest = datagrams.iter().map(|&(_, len)| len).max().unwrap_or(0);
    let segment = u16::try_from(largest).ok().filter(|&s| gso && s > 0);
    let Some(size) = segment.map(usize::from) else {
        return ((0..datagrams.len()).map(|i| i..i + 1).collect(), None);
    };
    let most = MAX_SEGMENTS.min(MAX_MESSAGE_BYTES / size).max(1);
    let mut messages: Vec<Range<usize>> = Vec::new();
    let mut runs = false;
    // Whether the last message may take the next datagram: all of it is
    // full-size (only the last datagram of a message may be shorter).
    let mut open = false;
    for (i, &(dest, len)) in datagrams.iter().enumerate() {
        match messages.last_mut() {
            Some(last) if open && datagrams[last.start].0 == dest && last.len() < most => {
                last.end = i + 1;
                runs = true;
            }
            _ => messages.push(i..i + 1),
        }
        open = len == size;
    }
    (messages, runs.then_some(segment).flatten())
}

/// One `sendmmsg` of `messages` (non-empty): how many went.
fn sendmmsg_once<D: AsRef<[u8]>>(
    socket: &UdpSocket,
    datagrams: &[(SocketAddr, D)],
    messages: &[Range<usize>],
    segment: Option<u16>,
) -> io::Result<usize> {
    // The messages are consecutive ranges: one slice of buffers for all of
    // them, each message a part of it (no allocation per message).
    let base = messages.first().map_or(0, |m| m.start);
    let end = messages.last().map_or(base, |m| m.end);
    let buffers: Vec<IoSlice<'_>> = datagrams[base..end]
        .iter()
        .map(|(_, d)| IoSlice::new(d.as_ref()))
        .collect();
    let iovs: Vec<&[IoSlice<'_>]> = messages
        .iter()
        .map(|m| &buffers[m.start - base..m.end - base])
        .collect();
    let addrs: Vec<Option<SockaddrStorage>> = messages
        .iter()
        .map(|m| Some(SockaddrStorage::from(datagrams[m.start].0)))
        .collect();
    let sent = match &segment {
        Some(size) => {
            let space = nix::cmsg_space!(u16);
            let mut headers =
                MultiHeaders::<SockaddrStorage>::preallocate(messages.len(), Some(space));
            let cmsgs = [ControlMessage::UdpGsoSegments(size)];
            sendmmsg(
                socket.as_raw_fd(),
                &mut headers,
                &iovs,
                &addrs,
                cmsgs,
                MsgFlags::empty(),
            )?
            .count()
        }
        None => {
            let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(messages.len(), None);
            let none: [ControlMessage<'_>; 0] = [];
            sendmmsg(
                socket.as_raw_fd(),
                &mut headers,
                &iovs,
                &addrs,
                none,
                MsgFlags::empty(),
            )?
            .count()
        }
    };
    Ok(sent)
}

/// Errors that say segmentation offload is not to be had here (an old
/// kernel, a route through IPsec, a socket without checksums).
fn refuses_segmentation(e: &io::Error) -> bool {
    let errno = e.raw_os_error().map(Errno::from_raw);
    matches!(
        errno,
        Some(Errno::EINVAL | Errno::EIO | Errno::EMSGSIZE | Errno::ENOPROTOOPT | Errno::EOPNOTSUPP)
    )
}

#[cfg(test)]
mod tests;
