//! Loopback addresses and sockets for tests that need ports of their own.

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::time::Duration;

/// `rtsp://127.0.0.1:PORT/PATH` (`path` without its leading slash is fine).
pub fn loopback_url(port: u16, path: &str) -> String {
    format!("rtsp://127.0.0.1:{port}/{}", path.trim_start_matches('/'))
}

/// A TCP port on 127.0.0.1 where nothing listens and nothing can start
/// to: a socket is bound there but never listens (so connecting is refused)
/// and is kept until the test binary exits (so the OS hands the port to no
/// one else, as it could a port merely found free). For mounts whose origin
/// must be down.
pub fn closed_port() -> u16 {
    use nix::sys::socket::{
        bind, getsockname, socket, AddressFamily, SockFlag, SockType, SockaddrIn,
    };
    use std::os::fd::AsRawFd;
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .expect("socket");
    bind(
        fd.as_raw_fd(),
        &SockaddrIn::from(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0)),
    )
    .expect("bind 127.0.0.1:0");
    let port = getsockname::<SockaddrIn>(fd.as_raw_fd())
        .expect("getsockname")
        .port();
    std::mem::forget(fd); // held for the rest of the test binary, see above
    port
}

/// Two bound UDP sockets on consecutive ports, the first even (RTP, then
/// RTCP), for a raw client's `client_port=` in a UDP SETUP. Bound, not just
/// probed, so nothing can take them in between.
pub fn udp_port_pair() -> (UdpSocket, UdpSocket) {
    for _ in 0..100 {
        let rtp = UdpSocket::bind("127.0.0.1:0").expect("bind UDP");
        let port = rtp.local_addr().unwrap().port();
        if !port.is_multiple_of(2) || port == u16::MAX {
            continue;
        }
        if let Ok(rtcp) = UdpSocket::bind(("127.0.0.1", port + 1)) {
            for s in [&rtp, &rtcp] {
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            }
            return (rtp, rtcp);
        }
    }
    panic!("no free even/odd UDP port pair on 127.0.0.1");
}
