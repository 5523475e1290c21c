//! What the master knows, behind one lock: membership and load
//! ([`Membership`]), who holds what ([`ContentMap`]), which node was just
//! asked to fill which title, the recent placements, and the control link
//! to each connected node with its requests in flight.
//!
//! Every method is quick and takes the time as an argument; the tasks
//! around it (control streams, the redirector, the poll loop) do the
//! waiting.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::cluster::content::{ContentMap, Delta, Held};
use crate::cluster::copies::CopyBook;
use crate::cluster::membership::{Health, LoadSample, Member, Membership, Registered};
use crate::cluster::placement::{self, Holding, Reason};
use crate::cluster::protocol::{pb, Registration};
use crate::cluster::schedule::Allocation;

mod copying;

pub use copying::{CopyOrder, RateChange};

/// Placements kept for `/api/v1/placements`.
const PLACEMENTS_KEPT: usize = 256;

/// The settings the master runs with (from `[master]`).
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub report_period: Duration,
    pub down_after_polls: u32,
    pub egress_window: Duration,
    pub prepare_timeout: Duration,
    pub player_bitrate_bps: u64,
    pub copy_link_bps: u64,
    pub copy_cluster_bps: u64,
    pub copy_faulty_after: u32,
    pub copy_failure_window: Duration,
}

/// A request's outcome as the node answered it: `Ok` on `Done` without an
/// error, the node's reason otherwise.
pub type Answer = Result<(), String>;

/// The control link to one connected node.
struct Link {
    /// Distinguishes this connection from an earlier one of the same node,
    /// so that the end of a stale stream does not cut the new one off.
    epoch: u64,
    to_node: mpsc::Sender<pb::Batch>,
    /// Requests sent and not answered yet, by request id: told of the
    /// Ack, then of the Done.
    pending: HashMap<u64, Waiter>,
}

struct Waiter {
    acked: Option<oneshot::Sender<()>>,
    done: oneshot::Sender<Answer>,
}

/// One placement, for the admin API and the log.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Placement {
    #[serde(skip)]
    pub at: Instant,
    pub path: String,
    pub key: String,
    /// The node the player was sent to, if any.
    pub node: Option<String>,
    pub reason: Option<&'static str>,
    /// RTSP status answered: 302, or 503 when no node could take it.
    pub status: u16,
    /// Nodes that refused or did not answer before it, with why.
    pub refused_by: Vec<String>,
    /// DESCRIBE → answer, in microseconds.
    pub micros: u64,
}

struct Inner {
    membership: Membership,
    content: ContentMap,
    /// key → (node, until): a node just asked to fill a title counts as
    /// holding part of it until its reports say so (or the time passes),
    /// so the next players of that title go to the same node.
    filling: HashMap<String, (String, Instant)>,
    links: BTreeMap<String, Link>,
    next_epoch: u64,
    next_request: u64,
    placements: VecDeque<Placement>,
    /// Each node's peer server and copy caps, from its Hello.
    peers: BTreeMap<String, copying::Peer>,
    copies: CopyBook,
    rates: Allocation,
    /// Copies whose destination reported a checksum failure.
    checksum_failed: std::collections::HashSet<u64>,
}

pub struct MasterState {
    pub settings: Settings,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for MasterState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MasterState")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// A request on its way to a node: its id and where the answer arrives.
pub struct InFlight {
    pub request_id: u64,
    /// Fires when the node acknowledges the request.
    pub acked: oneshot::Receiver<()>,
    pub answer: oneshot::Receiver<Answer>,
}

impl MasterState {
    pub fn new(settings: Settings) -> MasterState {
        MasterState {
            settings,
            inner: Mutex::new(Inner {
                membership: Membership::new(
                    settings.report_period,
                    settings.down_after_polls,
                    settings.egress_window,
                ),
                content: ContentMap::default(),
                filling: HashMap::new(),
                links: BTreeMap::new(),
                next_epoch: 1,
                next_request: 1,
                placements: VecDeque::new(),
                peers: BTreeMap::new(),
                copies: CopyBook::new(settings.copy_failure_window, settings.copy_faulty_after),
                rates: Allocation::default(),
                checksum_failed: Default::default(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A node connected with a valid Hello. Its link replaces any earlier
    /// one (whose requests fail); returns the link's epoch.
    pub fn connect(
        &self,
        node: &Registration,
        to_node: mpsc::Sender<pb::Batch>,
        now: Instant,
    ) -> (Registered, u64) {
        let mut inner = self.lock();
        let registered =
            inner
                .membership
                .register(&node.node_id, &node.rtsp_url, node.capacity, now);
        inner.peers.insert(
            node.node_id.clone(),
            copying::Peer {
                url: node.peer_url.clone(),
                copy_egress_bps: node.max_copy_egress_bps,
                copy_ingress_bps: node.max_copy_ingress_bps,
            },
        );
        let epoch = inner.next_epoch;
        inner.next_epoch += 1;
        // Dropping the old link's answer senders fails its waiters.
        inner.links.insert(
            node.node_id.clone(),
            Link {
                epoch,
                to_node,
                pending: HashMap::new(),
            },
        );
        (registered, epoch)
    }

    /// The control stream of `node` (connection `epoch`) ended. Its
    /// requests in flight fail; its membership stays (it is polled, then
    /// down, unless it reconnects).
    pub fn disconnect(&self, node: &str, epoch: u64) -> bool {
        let mut inner = self.lock();
        if inner.links.get(node).is_some_and(|l| l.epoch == epoch) {
            inner.links.remove(node);
            return true;
        }
        false
    }

    pub fn is_current(&self, node: &str, epoch: u64) -> bool {
        self.lock()
            .links
            .get(node)
            .is_some_and(|l| l.epoch == epoch)
    }

    pub fn report(&self, node: &str, load: &pb::LoadReport, now: Instant) -> bool {
        let sample = LoadSample {
            sessions: load.sessions,
            egress_bps: load.egress_bps,
            ingress_bps: load.ingress_bps,
            disk_used_bytes: load.disk_used_bytes,
            healthy: load.healthy,
        };
        self.lock().membership.report(node, sample, now)
    }

    /// A node's full inventory at once (the control stream applies one in
    /// chunks: [`MasterState::forget_inventory`], then deltas).
    #[cfg(test)]
    pub fn inventory(&self, node: &str, titles: Vec<(String, Held)>) {
        self.lock().content.replace_inventory(node, titles);
    }

    /// Forgets what a node was known to hold (its full inventory follows).
    pub fn forget_inventory(&self, node: &str) {
        self.lock().content.forget_node(node);
    }

    pub fn delta(&self, node: &str, deltas: Vec<Delta>) {
        let mut inner = self.lock();
        for delta in deltas {
            inner.content.apply(node, delta);
        }
    }

    /// Sends a request to a connected node. `None` when it has no link, or
    /// its link is full (a node that does not read its stream).
    pub fn request(&self, node: &str, body: pb::envelope::Body) -> Option<InFlight> {
        let mut inner = self.lock();
        let request_id = inner.next_request;
        inner.next_request += 1;
        let link = inner.links.get_mut(node)?;
        let batch = pb::Batch {
            messages: vec![pb::Envelope {
                request_id,
                body: Some(body),
            }],
        };
        link.to_node.try_send(batch).ok()?;
        let (done, answer) = oneshot::channel();
        let (acked_tx, acked) = oneshot::channel();
        link.pending.insert(
            request_id,
            Waiter {
                acked: Some(acked_tx),
                done,
            },
        );
        Some(InFlight {
            request_id,
            acked,
            answer,
        })
    }

    /// A node's `Ack` for one of our requests.
    pub fn acked(&self, node: &str, request_id: u64) {
        let mut inner = self.lock();
        let waiter = inner
            .links
            .get_mut(node)
            .and_then(|l| l.pending.get_mut(&request_id))
            .and_then(|w| w.acked.take());
        if let Some(waiter) = waiter {
            let _ = waiter.send(());
        }
    }

    /// A node's `Done` for one of our requests (an unknown id is ignored:
    /// its waiter gave up).
    pub fn answered(&self, node: &str, request_id: u64, error: String) {
        let mut inner = self.lock();
        let waiter = inner
            .links
            .get_mut(node)
            .and_then(|l| l.pending.remove(&request_id));
        if let Some(waiter) = waiter {
            let _ = waiter
                .done
                .send(if error.is_empty() { Ok(()) } else { Err(error) });
        }
    }

    /// Forgets a request whose waiter gave up (a timeout).
    pub fn abandon(&self, node: &str, request_id: u64) {
        if let Some(link) = self.lock().links.get_mut(node) {
            link.pending.remove(&request_id);
        }
    }

    /// The nodes to poll now (each marked as polled).
    pub fn due_polls(&self, now: Instant) -> Vec<String> {
        self.lock().membership.due_polls(now)
    }

    /// A poll went unanswered; true when the node is now down.
    pub fn poll_failed(&self, node: &str) -> bool {
        self.lock().membership.poll_failed(node)
    }

    /// The candidates for a player of `key`, best first, with the URL
    /// players are sent to for each.
    pub fn candidates(&self, key: &str, now: Instant) -> Vec<(String, String, Reason)> {
        let inner = self.lock();
        let filler = inner
            .filling
            .get(key)
            .filter(|(_, until)| *until > now)
            .map(|(node, _)| node.as_str());
        // One lookup of the title, not one per node.
        let holders = inner.content.holders(key);
        let views = inner.membership.views(|node| {
            match holders.and_then(|h| h.get(node)) {
                Some(held) => Holding::of(held),
                // Asked to fill it and not reporting it yet: as good as a
                // partial holder with nothing held.
                None if filler == Some(node) => Holding::Partial(Duration::ZERO),
                None => Holding::Nothing,
            }
        });
        placement::candidates(key, &views, self.settings.player_bitrate_bps)
            .into_iter()
            // A node whose control stream is gone cannot be asked to prepare.
            .filter(|(id, _)| inner.links.contains_key(id))
            .filter_map(|(id, reason)| {
                let url = inner.membership.get(&id)?.rtsp_url.clone();
                Some((id, url, reason))
            })
            .collect()
    }

    /// A player of `key` is sent to `node` (chosen for `reason`): it counts
    /// toward the node's load until its next report; a node that did not
    /// hold the title completely is the one filling it for a while (long
    /// enough for its reports to say so).
    pub fn assigned(&self, node: &str, key: &str, reason: Reason, now: Instant) {
        let mut inner = self.lock();
        inner
            .membership
            .assigned(node, self.settings.player_bitrate_bps);
        if reason != Reason::Complete {
            let until = now + (self.settings.report_period * 3).max(Duration::from_secs(5));
            inner
                .filling
                .insert(key.to_owned(), (node.to_owned(), until));
        }
    }

    /// Forgets the fills whose time has passed (from the poll loop, off
    /// the players' path).
    pub fn prune(&self, now: Instant) {
        self.lock().filling.retain(|_, (_, until)| *until > now);
    }

    pub fn record(&self, placement: Placement) {
        let mut inner = self.lock();
        if inner.placements.len() == PLACEMENTS_KEPT {
            inner.placements.pop_front();
        }
        inner.placements.push_back(placement);
    }

    pub fn placements(&self) -> Vec<Placement> {
        self.lock().placements.iter().cloned().collect()
    }

    /// A copy of every member and whether it has a control link now.
    pub fn members(&self) -> Vec<(Member, bool)> {
        let inner = self.lock();
        inner
            .membership
            .members()
            .map(|m| (m.clone(), inner.links.contains_key(&m.id)))
            .collect()
    }

    /// Nodes by health, for the metrics.
    pub fn health_counts(&self) -> (usize, usize, usize) {
        let inner = self.lock();
        inner
            .membership
            .members()
            .fold((0, 0, 0), |(up, suspect, down), m| match m.health {
                Health::Up => (up + 1, suspect, down),
                Health::Suspect { .. } => (up, suspect + 1, down),
                Health::Down => (up, suspect, down + 1),
            })
    }

    /// Every title and who holds it.
    pub fn content(&self) -> Vec<(String, BTreeMap<String, Held>)> {
        let inner = self.lock();
        let mut titles: Vec<_> = inner
            .content
            .titles()
            .map(|(k, nodes)| (k.clone(), nodes.clone()))
            .collect();
        titles.sort_by(|a, b| a.0.cmp(&b.0));
        titles
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::membership::Capacity;

    fn settings() -> Settings {
        Settings {
            report_period: Duration::from_secs(1),
            down_after_polls: 2,
            egress_window: Duration::from_secs(10),
            prepare_timeout: Duration::from_secs(1),
            player_bitrate_bps: 1_000_000,
            copy_link_bps: 100_000_000,
            copy_cluster_bps: 1_000_000_000,
            copy_faulty_after: 3,
            copy_failure_window: Duration::from_secs(300),
        }
    }

    fn join(state: &MasterState, id: &str, now: Instant) -> mpsc::Receiver<pb::Batch> {
        let (tx, rx) = mpsc::channel(8);
        let registration = Registration {
            node_id: id.into(),
            rtsp_url: format!("rtsp://{id}"),
            capacity: Capacity {
                max_sessions: 100,
                max_egress_bps: 1_000_000_000,
            },
            peer_url: None,
            max_copy_egress_bps: 0,
            max_copy_ingress_bps: 0,
        };
        state.connect(&registration, tx, now);
        let load = pb::LoadReport {
            healthy: true,
            ..Default::default()
        };
        state.report(id, &load, now);
        rx
    }

    #[test]
    fn the_node_asked_to_fill_a_title_gets_its_next_players() {
        let state = MasterState::new(settings());
        let t0 = Instant::now();
        let _links: Vec<_> = ["a", "b", "c"]
            .iter()
            .map(|id| join(&state, id, t0))
            .collect();
        let first = state.candidates("rtsp://o/t", t0);
        assert_eq!(first[0].2, Reason::Hashed);
        let chosen = first[0].0.clone();
        state.assigned(&chosen, "rtsp://o/t", Reason::Hashed, t0);
        // Without the fill, the bounded load would send the second player
        // of this title elsewhere: with it, the filler comes first.
        for _ in 0..10 {
            let next = state.candidates("rtsp://o/t", t0);
            assert_eq!(
                (next[0].0.as_str(), next[0].2),
                (chosen.as_str(), Reason::Partial)
            );
            state.assigned(&chosen, "rtsp://o/t", Reason::Hashed, t0);
        }
        // Once the fill is forgotten (its reports never said so), hashing
        // with bounded load applies again.
        let later = t0 + Duration::from_secs(60);
        assert_eq!(state.candidates("rtsp://o/t", later)[0].2, Reason::Hashed);
    }

    #[test]
    fn answers_reach_their_request_and_a_new_link_fails_the_old_ones() {
        let state = MasterState::new(settings());
        let t0 = Instant::now();
        let mut link = join(&state, "a", t0);
        let mut first = state
            .request("a", pb::envelope::Body::Poll(pb::Poll {}))
            .expect("linked");
        let mut second = state
            .request("a", pb::envelope::Body::Poll(pb::Poll {}))
            .expect("linked");
        assert_ne!(first.request_id, second.request_id);
        let sent = link.try_recv().expect("sent");
        assert_eq!(sent.messages[0].request_id, first.request_id);
        // Out of order: the second is answered first.
        state.answered("a", second.request_id, "busy".into());
        assert_eq!(second.answer.try_recv(), Ok(Err("busy".to_owned())));
        assert!(first.answer.try_recv().is_err(), "not answered yet");
        let _relinked = join(&state, "a", t0);
        assert!(matches!(
            first.answer.try_recv(),
            Err(oneshot::error::TryRecvError::Closed)
        ));
        assert!(state
            .request("nobody", pb::envelope::Body::Poll(pb::Poll {}))
            .is_none());
    }
}
