//! TCP listeners with a backlog for bursts.
//!
//! The standard library and tokio listen with a backlog of 128: a burst of
//! players connecting at once (a wall of cameras coming back, a load test)
//! overflows it and the kernel drops the excess SYNs, which clients only
//! retry after a second or more. We ask for [`BACKLOG`], bounded by what the
//! kernel grants anyway (`net.core.somaxconn`).

use std::net::SocketAddr;

use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tracing::warn;

/// Connections waiting to be accepted.
pub const BACKLOG: u32 = 1024;

/// Binds `addr` and listens with [`BACKLOG`] (at most `somaxconn`).
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // As std's `TcpListener::bind` does: a restarted daemon can bind its
    // port while the previous one's connections are in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog(somaxconn()))
}

/// Binds `addr` for `what` (named in the error), or nothing when the
/// listener is off (`None`); with the address it is bound to (port 0 asks
/// the OS for one).
pub fn bind_optional(
    addr: Option<SocketAddr>,
    what: &str,
) -> anyhow::Result<Option<(TcpListener, SocketAddr)>> {
    use anyhow::Context as _;
    let Some(addr) = addr else {
        return Ok(None);
    };
    let listener = bind(addr).with_context(|| format!("cannot listen for {what} on {addr}"))?;
    let local = listener
        .local_addr()
        .with_context(|| format!("the {what} listener has no address"))?;
    Ok(Some((listener, local)))
}

/// The next connection of `listener` (`what` names it in the log). An
/// accept error (out of file descriptors and the like) is logged and
/// retried 100 ms later: the server keeps serving whoever is connected.
pub async fn accept(listener: &TcpListener, what: &str) -> (TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok(accepted) => return accepted,
            Err(e) => {
                warn!(listener = what, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// The backlog to ask for, given the kernel's `somaxconn` if known.
fn backlog(somaxconn: Option<u32>) -> u32 {
    somaxconn.map_or(BACKLOG, |max| BACKLOG.min(max.max(1)))
}

fn somaxconn() -> Option<u32> {
    crate::descriptors::proc_value("/proc/sys/net/core/somaxconn")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backlog_is_bounded_by_somaxconn() {
        assert_eq!(backlog(None), BACKLOG);
        assert_eq!(backlog(Some(4096)), BACKLOG);
        assert_eq!(backlog(Some(128)), 128);
        assert_eq!(backlog(Some(0)), 1);
    }

    #[tokio::test]
    async fn binds_and_accepts() {
        let listener = bind("127.0.0.1:0".parse().expect("address")).expect("bind");
        let addr = listener.local_addr().expect("address");
        let (connected, accepted) =
            tokio::join!(tokio::net::TcpStream::connect(addr), listener.accept());
        connected.expect("connect");
        accepted.expect("accept");
    }
}
