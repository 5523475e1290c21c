//! RTP/RTCP UDP port pairs.
//!
//! RFC 3550 §11 wants RTP on an even port and RTCP on the next one; some
//! peers (and middleboxes) insist. Used toward origins and toward players.

use std::io;
use std::net::{IpAddr, SocketAddr};

use tokio::net::UdpSocket;

/// Attempts before giving up on finding an even/odd pair.
const PAIR_ATTEMPTS: usize = 64;

/// Binds an RTP socket on an even port of `local` and its RTCP socket on
/// the next (odd) port.
pub async fn bind(local: IpAddr) -> io::Result<(UdpSocket, UdpSocket)> {
    let any = local;
    let mut last_err = io::Error::new(io::ErrorKind::AddrInUse, "no free even/odd UDP port pair");
    for _ in 0..PAIR_ATTEMPTS {
        // Let the kernel pick a free port; if it is odd, step down to even
        // and try to take that one and the next.
        let probe = UdpSocket::bind(SocketAddr::new(any, 0)).await?;
        let port = probe.local_addr()?.port();
        let (rtp, rtp_port) = if port % 2 == 0 {
            (probe, port)
        } else {
            drop(probe);
            match UdpSocket::bind(SocketAddr::new(any, port - 1)).await {
                Ok(s) => (s, port - 1),
                Err(e) => {
                    last_err = e;
                    continue;
                }
            }
        };
        let Some(rtcp_port) = rtp_port.checked_add(1) else {
            continue;
        };
        match UdpSocket::bind(SocketAddr::new(any, rtcp_port)).await {
            Ok(rtcp) => return Ok((rtp, rtcp)),
            Err(e) => last_err = e,
        }
    }
    Err(last_err)
}
