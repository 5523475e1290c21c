//! Bounds on what players may take: sessions in all and per IP address,
//! open connections, and connections left idle.
//!
//! Each refusal is a clear RTSP status and a log line (rate-limited per
//! address, see [`super::refusals`]); everyone else keeps being served.
//! Session counts are checked when a SETUP would create a session (two
//! SETUPs racing may both pass: the bound is approximate by the number of
//! requests in flight, which is what matters for capacity).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use streamcache_rtsp::framing;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::info;

use super::refusals::{Refusal, Refusals};
use super::session::Sessions;
use crate::config::RtspConfig;
use crate::timing::WriteTicks;

/// How long a refused connection may take to send its first request.
const REFUSAL_READ: Duration = Duration::from_secs(2);
/// Refused connections answered at once; beyond, a flood of connections is
/// closed without an answer rather than holding a task and a socket each.
pub const MAX_REFUSING: usize = 64;
/// What a client is told to wait before trying again after a 503.
pub const RETRY_AFTER_SECS: u64 = 5;

#[derive(Debug, Clone, Copy)]
pub struct PlayerLimits {
    pub max_sessions: usize,
    pub max_sessions_per_ip: usize,
    pub max_connections: usize,
    /// A connection with no session that sends no request for this long is closed.
    pub idle_connection: Duration,
    /// Merged writes: the ticks players' media leaves on, from the cache
    /// and from an origin session.
    pub write_ticks: WriteTicks,
    pub relay_write_ticks: WriteTicks,
}

impl PlayerLimits {
    pub fn from_config(rtsp: &RtspConfig) -> PlayerLimits {
        PlayerLimits {
            max_sessions: *rtsp.max_sessions.get_ref(),
            max_sessions_per_ip: *rtsp.max_sessions_per_ip.get_ref(),
            max_connections: *rtsp.max_connections.get_ref(),
            idle_connection: Duration::from_secs(*rtsp.idle_connection_secs.get_ref()),
            write_ticks: WriteTicks::new(Duration::from_millis(rtsp.merge_writes_ms)),
            relay_write_ticks: WriteTicks::new(Duration::from_millis(rtsp.relay_merge_writes_ms)),
        }
    }

    /// Whether one more session may start for `peer`: the refusal's status
    /// otherwise (503 with Retry-After for the total, 453 per address).
    /// Refusals are logged through `refusals` (rate-limited).
    pub fn admit_session(
        &self,
        sessions: &Sessions,
        refusals: &Refusals,
        peer: SocketAddr,
    ) -> Result<(), u16> {
        let (total, from_ip) = sessions.count(peer.ip());
        let (refusal, count, limit) = if total >= self.max_sessions {
            (Refusal::Sessions, total, self.max_sessions)
        } else if from_ip >= self.max_sessions_per_ip {
            (
                Refusal::SessionsPerAddress,
                from_ip,
                self.max_sessions_per_ip,
            )
        } else {
            return Ok(());
        };
        if let Some(repeated) = refusals.note(peer.ip(), refusal) {
            info!(player = %peer, sessions = count, limit, repeated, "{}", refusal.message());
        }
        Err(refusal.status())
    }
}

/// Counts open player connections; a slot is held while its guard lives.
#[derive(Default)]
pub struct ConnectionCount(Arc<AtomicUsize>);

pub struct ConnectionSlot(Arc<AtomicUsize>);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl ConnectionCount {
    /// A slot if fewer than `max` are taken.
    pub fn try_take(&self, max: usize) -> Option<ConnectionSlot> {
        self.0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| ConnectionSlot(Arc::clone(&self.0)))
    }

    pub fn open(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

/// Answers a connection over `max_connections`: waits briefly for its first
/// request (to echo its CSeq, so the player can match the answer), sends
/// 503 with Retry-After and closes.
pub async fn refuse_connection(mut stream: TcpStream, _slot: ConnectionSlot) {
    let mut buf = BytesMut::with_capacity(1024);
    let _ = tokio::time::timeout(REFUSAL_READ, async {
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 8192 {
            match stream.read_buf(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    let cseq = framing::cseq_hint(&buf)
        .map(|c| format!("CSeq: {c}\r\n"))
        .unwrap_or_default();
    let response = format!(
        "RTSP/1.0 503 Service Unavailable\r\n{cseq}Server: {}\r\nRetry-After: {RETRY_AFTER_SECS}\r\nConnection: close\r\n\r\n",
        super::methods::SERVER
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_slots_are_bounded_and_released() {
        let count = ConnectionCount::default();
        let a = count.try_take(2).expect("first");
        let _b = count.try_take(2).expect("second");
        assert!(count.try_take(2).is_none());
        drop(a);
        assert_eq!(count.open(), 1);
        assert!(count.try_take(2).is_some());
    }
}
