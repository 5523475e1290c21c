//! The RTSP server players talk to (RTSP 1.0, RFC 2326).
//!
//! - [`connection`]: one task per TCP connection: reads bytes, cuts them into
//!   requests and interleaved frames with the framed codec
//!   (`streamcache_rtsp::codec`) and answers;
//! - [`conn_writer`]: a connection's write side, shared by responses and
//!   media: written straight to the socket, queued only when it is full;
//! - [`methods`]: what each RTSP method does;
//! - [`session`]: player sessions and their timeouts;
//! - [`delivery`]: getting a hub's packets to a player over TCP or UDP.

mod cache_status;
mod conn_writer;
mod connection;
mod delivery;
pub mod limits;
mod methods;
mod player_auth;
mod refusals;
mod seen;
mod session;
mod udp_out;

/// The per-packet send path without a server, for `benches/send_path.rs`.
#[doc(hidden)]
pub mod bench_support {
    pub use super::conn_writer::{ConnWriter, WriteSocket};
    pub use super::delivery::{PlayerSink, TrackDelivery};
}

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context as _;
use streamcache_rtsp::framing::Limits;
use tokio::net::TcpListener;
use tracing::info;

use crate::catalog::Catalog;
use crate::metrics::Metrics;
use crate::mounts::Mounts;
use limits::{ConnectionCount, PlayerLimits};
use player_auth::NonceClock;
use refusals::{Refusal, Refusals};
use session::Sessions;

pub(crate) use methods::prepare;

/// What every connection task shares.
pub struct Server {
    pub catalog: Arc<Catalog>,
    /// Swapped whole by a configuration reload; a request resolves against
    /// the table current when it arrives.
    mounts: RwLock<Arc<Mounts>>,
    pub metrics: Arc<Metrics>,
    pub sessions: Arc<Sessions>,
    pub limits: Limits,
    /// The address players reach us on; UDP media is sent from this IP.
    pub local_addr: SocketAddr,
    next_conn: AtomicU64,
    pub player_limits: PlayerLimits,
    connections: ConnectionCount,
    /// Connections being answered 503 (over `max_connections`).
    refusing: ConnectionCount,
    /// Signs the Digest nonces of mounts with users.
    nonces: NonceClock,
    /// Refusals in the log, at most one line per client and reason per interval.
    refusals: Refusals,
    /// Presentations served under each mount, for the admin API.
    pub seen: seen::Seen,
}

impl Server {
    pub fn new(
        catalog: Arc<Catalog>,
        mounts: Mounts,
        metrics: Arc<Metrics>,
        limits: Limits,
        session_timeout: Duration,
        local_addr: SocketAddr,
        player_limits: PlayerLimits,
    ) -> Arc<Server> {
        Arc::new(Server {
            catalog,
            mounts: RwLock::new(Arc::new(mounts)),
            metrics: Arc::clone(&metrics),
            sessions: Sessions::new(session_timeout, metrics),
            limits,
            local_addr,
            next_conn: AtomicU64::new(1),
            player_limits,
            connections: ConnectionCount::default(),
            refusing: ConnectionCount::default(),
            nonces: NonceClock::new(),
            refusals: Refusals::new(),
            seen: seen::Seen::default(),
        })
    }

    /// The mount table in force.
    pub fn mounts(&self) -> Arc<Mounts> {
        Arc::clone(&self.mounts.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Puts a new mount table in force (a configuration reload). Requests
    /// already resolved keep the mount they resolved to.
    pub fn set_mounts(&self, mounts: Mounts) {
        *self.mounts.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(mounts);
    }

    /// Accepts players until the task is dropped.
    pub async fn run(self: Arc<Self>, listener: TcpListener) -> anyhow::Result<()> {
        let reaper = Arc::clone(&self.sessions);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                reaper.reap();
            }
        });
        let flusher = Arc::clone(&self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                flusher.refusals.flush();
            }
        });
        loop {
            let (stream, peer) = crate::listener::accept(&listener, "rtsp").await;
            let _ = stream.set_nodelay(true);
            let Some(slot) = self
                .connections
                .try_take(self.player_limits.max_connections)
            else {
                let open = self.connections.open();
                match self.refusing.try_take(limits::MAX_REFUSING) {
                    Some(refusing) => {
                        if let Some(repeated) = self.refusals.note(peer.ip(), Refusal::Connections)
                        {
                            info!(player = %peer, connections = open, repeated, "{}", Refusal::Connections.message());
                        }
                        tokio::spawn(limits::refuse_connection(stream, refusing));
                    }
                    None => {
                        if let Some(repeated) =
                            self.refusals.note(peer.ip(), Refusal::ConnectionDropped)
                        {
                            info!(player = %peer, connections = open, refusing = limits::MAX_REFUSING, repeated, "{}", Refusal::ConnectionDropped.message());
                        }
                    }
                }
                continue;
            };
            let id = self.next_conn.fetch_add(1, Ordering::Relaxed);
            let server = Arc::clone(&self);
            tokio::spawn(async move {
                connection::run(server, stream, peer, id).await;
                drop(slot);
            });
        }
    }
}

/// Binds the RTSP listener (with a backlog for bursts of players).
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    crate::listener::bind(addr).with_context(|| format!("cannot listen for RTSP on {addr}"))
}
