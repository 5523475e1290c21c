//! UDP sockets for RTP/AVP unicast from an origin.
//!
//! [`bind_pair`] binds an RTP/RTCP port pair on the unspecified address of
//! the origin's IP family, and [`recv_any`] waits on all of a session's
//! sockets at once from one task.

use std::future::poll_fn;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::task::Poll;

use tokio::io::ReadBuf;
use tokio::net::UdpSocket;

/// An even/odd port pair (see [`crate::udp_pair`]) to receive from `origin`.
pub(crate) async fn bind_pair(origin: IpAddr) -> io::Result<(UdpSocket, UdpSocket)> {
    let any: IpAddr = match origin {
        IpAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        IpAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    };
    crate::udp_pair::bind(any).await
}

/// Receives one datagram from whichever socket has one, starting the scan
/// at `*next` and advancing it so that a busy socket cannot starve the
/// others. Returns the socket's index, the length and the sender.
/// Cancel-safe: nothing is consumed unless the future completes.
pub(crate) async fn recv_any(
    sockets: &[UdpSocket],
    buf: &mut [u8],
    next: &mut usize,
) -> (usize, io::Result<(usize, SocketAddr)>) {
    if sockets.is_empty() {
        return std::future::pending().await;
    }
    poll_fn(|cx| {
        for k in 0..sockets.len() {
            let i = (*next + k) % sockets.len();
            let mut rb = ReadBuf::new(&mut *buf);
            match sockets[i].poll_recv_from(cx, &mut rb) {
                Poll::Ready(result) => {
                    *next = (i + 1) % sockets.len();
                    return Poll::Ready((i, result.map(|addr| (rb.filled().len(), addr))));
                }
                Poll::Pending => {}
            }
        }
        Poll::Pending
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pairs_are_even_and_adjacent() {
        let (rtp, rtcp) = bind_pair(Ipv4Addr::LOCALHOST.into()).await.unwrap();
        let a = rtp.local_addr().unwrap().port();
        let b = rtcp.local_addr().unwrap().port();
        assert_eq!(a % 2, 0);
        assert_eq!(b, a + 1);
    }

    #[tokio::test]
    async fn receives_from_every_socket() {
        let (a, b) = bind_pair(Ipv4Addr::LOCALHOST.into()).await.unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let port = |s: &UdpSocket| s.local_addr().unwrap().port();
        tx.send_to(b"one", ("127.0.0.1", port(&b))).await.unwrap();
        tx.send_to(b"two", ("127.0.0.1", port(&a))).await.unwrap();
        let mut buf = [0u8; 16];
        let sockets = [a, b];
        let mut next = 0;
        let mut got = Vec::new();
        for _ in 0..2 {
            let (i, r) = recv_any(&sockets, &mut buf, &mut next).await;
            let (n, _) = r.unwrap();
            got.push((i, buf[..n].to_vec()));
        }
        got.sort();
        assert_eq!(got, vec![(0, b"two".to_vec()), (1, b"one".to_vec())]);
    }
}
