//! The HTTP listener for viewers (`[http] listen`): every title a mount
//! serves over RTSP, also as HLS (fMP4 segments) and as an MP4 file, for
//! browsers and tools that do not speak RTSP.
//!
//! - `PATH/index.m3u8`: a cached on-demand title (the store holds it
//!   completely) gets a VOD playlist whose segments are built on demand
//!   from the store ([`vod`], [`title`]); a live title a sliding playlist
//!   that follows its hub ([`live`]), the same hub, and so the same origin
//!   session, as its RTSP players;
//! - `PATH/export.mp4[?from=NPT&to=NPT]`: the stored title as an MP4 with
//!   the moov first ([`export`]);
//! - `/by-id/ID/...`: the same for a stored title named by the id the admin
//!   API lists (the status page's player uses it).
//!
//! The mount's player accounts apply, with the schemes the mount allows
//! (HTTP Basic and Digest are RTSP's, RFC 7617/7616, so the sans-io
//! `ServerAuth` checks them as it does for RTSP). Every answer carries
//! `Access-Control-Allow-Origin: *`: the status page is on another port, and
//! `*` never lets a page read what needs credentials (browsers send none
//! with it).

mod body;
mod export;
mod hls;
mod live;
mod routes;
pub mod title;
mod vod;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use streamcache_rtsp::auth::NonceKey;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::serve::Server;
pub use body::Body;

/// Concurrent viewer connections; beyond, new ones wait in the backlog.
const MAX_CONNECTIONS: usize = 512;
/// A client must send its request headers within this time.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// What the viewers' listener shares between connections.
pub struct Viewer {
    server: Arc<Server>,
    /// Signs Digest nonces of this listener (seconds count from `epoch`).
    nonces: NonceKey,
    epoch: Instant,
    vod: vod::Vod,
    live: Arc<live::Live>,
}

impl Viewer {
    pub fn new(server: Arc<Server>, segment_cache_bytes: u64) -> Arc<Viewer> {
        Arc::new(Viewer {
            server,
            nonces: NonceKey::random(),
            epoch: Instant::now(),
            vod: vod::Vod::new(segment_cache_bytes),
            live: Arc::default(),
        })
    }
}

/// Serves viewers until the task is dropped.
pub async fn run(listener: TcpListener, viewer: Arc<Viewer>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                warn!(error = %e, "HTTP accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let viewer = Arc::clone(&viewer);
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<Incoming>| {
                let viewer = Arc::clone(&viewer);
                async move { Ok::<_, Infallible>(routes::handle(&viewer, request, peer).await) }
            });
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(64 * 1024)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = connection.await {
                debug!(%peer, error = %e, "HTTP viewer connection failed");
            }
            drop(permit);
        });
    }
}

/// Why a request gets no media: the status and a line saying why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: StatusCode,
    pub message: String,
}

impl Refusal {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Refusal {
        Refusal {
            status,
            message: message.into(),
        }
    }

    fn response(&self) -> Response<Body> {
        let mut response = body::text(format!("{}\n", self.message));
        *response.status_mut() = self.status;
        response
    }
}
