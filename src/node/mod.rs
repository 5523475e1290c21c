//! A proxy as a node of a cluster (`[cluster]`): the control connection to
//! the master, from the node's side.
//!
//! [`run`] is one independent task: it connects to the master, says Hello,
//! and once welcomed sends its full inventory, then every report period its
//! load and what changed in its inventory, and answers the master's
//! requests (Prepare a title for a player about to come, Poll). When the
//! master is down or the stream breaks it reconnects with backoff, forever.
//! Nothing on the players' path waits for it: a node without its master
//! serves the players who come to it as a lone proxy does.
//!
//! - [`agent`]: the connection, its reports and its reconnections;
//! - [`requests`]: the master's requests and their answers;
//! - [`inventory`]: what the node holds, and deltas (plain functions);
//! - [`load`]: rates and reserved sessions (plain functions);
//! - [`peer`]: the peer server other nodes copy this node's titles from;
//! - [`copy`]: the copies the master orders into this node's store.
//!
//! See `docs/design/cluster.md`.

mod agent;
pub mod copy;
mod inventory;
mod load;
pub mod peer;
mod requests;
#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::time::Instant;

use crate::cluster::protocol::{pb, PROTOCOL_VERSION};
use crate::config::ClusterConfig;
use crate::serve::Server;
use copy::Copies;
use inventory::Snapshot;
use load::{Meter, Reservations, Ticket};

/// The node's side of the cluster as the admin API shows it.
#[derive(Debug)]
pub struct Status {
    pub node_id: String,
    /// The master's control URL.
    pub master: String,
    /// Where the master sends players.
    pub rtsp_url: String,
    connected: AtomicBool,
}

impl Status {
    pub fn new(cluster: &ClusterConfig, rtsp_url: &str) -> Arc<Status> {
        Arc::new(Status {
            node_id: cluster.node_id.clone(),
            master: cluster.master.get_ref().clone(),
            rtsp_url: rtsp_url.to_owned(),
            connected: AtomicBool::new(false),
        })
    }

    /// Whether the master has welcomed this node and the stream is up.
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    fn set_connected(&self, connected: bool) {
        self.connected.store(connected, Ordering::Relaxed);
    }
}

/// Runs the node's side of the control connection until the task is
/// dropped. `rtsp_url` is where the master sends players, `max_sessions`
/// the player sessions it may send here, `peer_url` where this node's
/// peer server is (if it runs one); `status` is kept up to date.
pub async fn run(
    server: Arc<Server>,
    cluster: ClusterConfig,
    rtsp_url: String,
    max_sessions: u32,
    peer_url: Option<String>,
    status: Arc<Status>,
) {
    let hello = pb::Hello {
        protocol_version: PROTOCOL_VERSION,
        node_id: cluster.node_id.clone(),
        rtsp_url,
        max_sessions,
        max_egress_bps: cluster.max_egress_bps,
        // Without a peer server this node serves no copies (it may still
        // take them).
        max_copy_egress_bps: if peer_url.is_some() {
            cluster.max_copy_egress_bps
        } else {
            0
        },
        peer_url: peer_url.unwrap_or_default(),
        max_copy_ingress_bps: cluster.max_copy_ingress_bps,
    };
    let copies = Copies::new(
        server.catalog.store().clone(),
        server.catalog.copying().clone(),
        cluster.token.clone(),
    );
    let node = Arc::new(Node::new(server, max_sessions, copies));
    agent::run(node, &cluster, hello, &status).await;
}

/// What the agent reads off the server, and the sessions it promised.
struct Node {
    server: Arc<Server>,
    max_sessions: u32,
    reservations: Mutex<Reservations>,
    meter: Mutex<Meter>,
    copies: Arc<Copies>,
}

impl Node {
    fn new(server: Arc<Server>, max_sessions: u32, copies: Arc<Copies>) -> Node {
        let meter = Meter::new(
            Instant::now(),
            server.metrics.player_sent_bytes_total(),
            server.metrics.origin_received_bytes_total(),
        );
        Node {
            server,
            max_sessions,
            reservations: Mutex::default(),
            meter: Mutex::new(meter),
            copies,
        }
    }

    /// The load now. Health is only whether the store's file system
    /// answers (a cache directory gone or unreadable); everything else a
    /// node can suffer shows in its other numbers or in a lost stream.
    fn load(&self) -> pb::LoadReport {
        let now = Instant::now();
        let metrics = &self.server.metrics;
        let rates = lock(&self.meter).sample(
            now,
            metrics.player_sent_bytes_total(),
            metrics.origin_received_bytes_total(),
        );
        let reserved = {
            let mut reservations = lock(&self.reservations);
            reservations.sessions_started(self.server.sessions.started());
            reservations.count(now)
        };
        let store = self.server.catalog.store();
        pb::LoadReport {
            sessions: load::reported_sessions(self.server.sessions.total(), reserved),
            egress_bps: rates.egress_bps,
            ingress_bps: rates.ingress_bps,
            disk_used_bytes: store.used_bytes(),
            healthy: store.disk_space().is_ok(),
        }
    }

    /// Everything held now: the store's titles and the open hubs.
    fn holdings(&self) -> Snapshot {
        let catalog = &self.server.catalog;
        inventory::snapshot(&catalog.store().list(), &catalog.hub_keys())
    }

    /// A session for a prepared player, unless this node is full.
    fn reserve(&self) -> Option<Ticket> {
        let mut reservations = lock(&self.reservations);
        reservations.sessions_started(self.server.sessions.started());
        reservations.try_reserve(
            Instant::now(),
            self.server.sessions.total(),
            self.max_sessions,
        )
    }

    fn release(&self, ticket: Ticket) {
        lock(&self.reservations).release(ticket);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
