//! The admin HTTP API (hyper), for the operator and the monitoring system.
//!
//! - [`routes`]: which endpoint a request names, the token check, JSON
//!   errors, the index at `/`; the endpoints themselves in [`presentations`]
//!   (list, purge), [`sessions`] and [`mounts`]; reload is [`crate::reload`];
//! - [`client`]: the few lines of HTTP the CLI needs to ask a running daemon
//!   (`streamcache cache purge` while the daemon holds the store);
//! - this module: the listener, connection limits and timeouts.
//!
//! It listens on loopback by default (`[admin] listen`), and when a token is
//! configured every request, `/healthz` included, must carry it.

pub mod client;
mod mounts;
mod presentations;
mod routes;
mod sessions;
mod status;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::Request;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::debug;

use crate::node;
use crate::reload::Reloader;
use crate::serve::Server;

pub use routes::{authorized, error, json_response, unauthorized, Admin};

/// Concurrent admin connections; beyond this new ones wait in the backlog.
/// The API is for a handful of operators and scrapers, not for the public.
pub const MAX_CONNECTIONS: usize = 64;
/// Concurrent connections from one address; beyond, a new one is closed at
/// once. A client holding connections open without sending anything (before
/// the token is even checked) can then take only this many slots, and
/// cannot keep the operator's own requests waiting.
const MAX_CONNECTIONS_PER_ADDRESS: usize = 8;
/// A client must send its request headers within this time: curl and
/// scrapers send theirs at once, and a slow client's slot is freed soon.
const HEADER_TIMEOUT: Duration = Duration::from_secs(3);
/// A connection (keep-alive included) is closed after this long…
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(60);
/// …once the exchange in progress, if any, has ended within this one.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// What answers the requests of an admin listener: the proxy's API
/// ([`Admin`]) or the cluster master's.
pub trait Handler: Send + Sync + 'static {
    fn handle(
        &self,
        request: Request<Incoming>,
    ) -> impl std::future::Future<Output = hyper::Response<Body>> + Send;
}

impl Handler for Admin {
    async fn handle(&self, request: Request<Incoming>) -> hyper::Response<Body> {
        Admin::handle(self, request).await
    }
}

/// Serves the proxy's admin API until the task is dropped.
pub async fn run(
    listener: TcpListener,
    server: Arc<Server>,
    token: Option<String>,
    reloader: Option<Arc<Reloader>>,
    cluster: Option<Arc<node::Status>>,
    viewer: Option<SocketAddr>,
) {
    let admin = Admin::new(server, token, reloader, cluster).with_viewer(viewer);
    serve(listener, Arc::new(admin)).await;
}

/// Serves an admin API (with the listener's connection limits and
/// timeouts) until the task is dropped.
pub async fn serve<H: Handler>(listener: TcpListener, admin: Arc<H>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let per_address = Arc::new(PerAddress::default());
    loop {
        let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let (stream, peer) = crate::listener::accept(&listener, "admin").await;
        let Some(address_slot) = per_address.try_take(peer.ip(), MAX_CONNECTIONS_PER_ADDRESS)
        else {
            debug!(%peer, limit = MAX_CONNECTIONS_PER_ADDRESS, "admin connection closed: too many from this address");
            continue;
        };
        let admin = Arc::clone(&admin);
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<Incoming>| {
                let admin = Arc::clone(&admin);
                async move { Ok::<_, Infallible>(admin.handle(request).await) }
            });
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(64 * 1024)
                .serve_connection(TokioIo::new(stream), service);
            let mut connection = std::pin::pin!(connection);
            let outcome = match tokio::time::timeout(CONNECTION_TIMEOUT, connection.as_mut()).await
            {
                Ok(result) => Ok(result),
                Err(_) => {
                    // Time is up: close once the exchange in progress (a
                    // keep-alive scraper's next request, say) is answered,
                    // rather than cutting its answer off.
                    connection.as_mut().graceful_shutdown();
                    tokio::time::timeout(SHUTDOWN_GRACE, connection.as_mut()).await
                }
            };
            match outcome {
                Ok(Ok(())) => {}
                Ok(Err(e)) => debug!(%peer, error = %e, "admin connection failed"),
                Err(_) => debug!(%peer, "admin connection timed out"),
            }
            drop(permit);
            drop(address_slot);
        });
    }
}

/// Open admin connections per client address (only addresses with one open
/// are kept, so the map is bounded by [`MAX_CONNECTIONS`]).
#[derive(Default)]
struct PerAddress(Mutex<HashMap<IpAddr, usize>>);

/// One connection's place in [`PerAddress`], given back when dropped.
struct AddressSlot {
    map: Arc<PerAddress>,
    ip: IpAddr,
}

impl PerAddress {
    fn lock(&self) -> MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn try_take(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<AddressSlot> {
        let mut map = self.lock();
        let open = map.entry(ip).or_insert(0);
        if *open >= max {
            return None;
        }
        *open += 1;
        Some(AddressSlot {
            map: Arc::clone(self),
            ip,
        })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut map = self.map.lock();
        if let Some(open) = map.get_mut(&self.ip) {
            *open -= 1;
            if *open == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// A response body.
pub type Body = Full<Bytes>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn connections_per_address_are_bounded_and_given_back() {
        let map = Arc::new(PerAddress::default());
        let a = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
        let b = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));
        let first = map.try_take(a, 2).expect("first");
        let second = map.try_take(a, 2).expect("second");
        assert!(map.try_take(a, 2).is_none());
        assert!(map.try_take(b, 2).is_some());
        drop(first);
        assert!(map.try_take(a, 2).is_some());
        drop(second);
        assert!(map.lock().is_empty(), "every slot was given back");
    }
}
