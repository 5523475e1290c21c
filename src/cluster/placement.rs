//! Placement: which node a player of a title is sent to.
//!
//! Pure code: the master's view of the nodes goes in, an ordered list of
//! candidates comes out (the master asks the first to prepare, and the next
//! if it refuses or does not answer). The order:
//!
//! 1. nodes holding the title **complete**, least loaded first;
//! 2. nodes holding **part** of it, most held first, then least loaded;
//! 3. every other node, by **rendezvous (highest-random-weight) hashing** of
//!    the key, weighted by capacity, among the nodes under a bounded load:
//!    none whose load (sessions, the new one included) would exceed
//!    [`LOAD_BOUND`] × the cluster's mean, capacities taken into account.
//!    Requests for an uncached title so concentrate on one node (which
//!    fetches it once from the origin) instead of filling every node, and
//!    spill over to the next only when it is loaded well above the rest.
//!
//! A node that is down, or has no headroom (sessions or egress), is never a
//! candidate. Load counts the sessions of the node's last report plus the
//! players sent to it since, so that a burst between two reports does not
//! pile onto one node.

use std::cmp::Ordering;
use std::time::Duration;

/// A node's load may reach this many times the cluster's mean before new
/// titles hash past it.
pub const LOAD_BOUND: f64 = 1.25;

/// What the master knows of one node, for one placement.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeView {
    pub id: String,
    /// Reporting (or answering polls).
    pub up: bool,
    pub max_sessions: u32,
    /// Egress capacity for players, bit/s.
    pub max_egress_bps: u64,
    /// Sessions at the last report plus players sent since.
    pub sessions: u32,
    /// Egress over the bandwidth-history window, bit/s, plus the expected
    /// egress of players sent since the last report.
    pub egress_bps: u64,
    /// How much of the title it holds.
    pub holds: Holding,
}

/// How much of the title a node holds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Holding {
    Nothing,
    /// Part of an on-demand title: the npt it holds.
    Partial(Duration),
    Complete,
}

/// Why a node was chosen, for logs and the admin API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Complete,
    Partial,
    Hashed,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Complete => "complete",
            Reason::Partial => "partial",
            Reason::Hashed => "hashed",
        }
    }
}

impl NodeView {
    /// Up, with room for one more player of `bitrate_bps`.
    fn has_headroom(&self, bitrate_bps: u64) -> bool {
        self.up
            && self.sessions < self.max_sessions
            && self.egress_bps.saturating_add(bitrate_bps) <= self.max_egress_bps
    }

    /// Sessions over capacity, the new player counted.
    fn load_after(&self) -> f64 {
        f64::from(self.sessions + 1) / f64::from(self.max_sessions.max(1))
    }
}

/// The candidates for a player of `key` expected to draw `bitrate_bps`, best
/// first. Empty when no node has headroom (the master answers 503).
pub fn candidates(key: &str, nodes: &[NodeView], bitrate_bps: u64) -> Vec<(String, Reason)> {
    let open: Vec<&NodeView> = nodes
        .iter()
        .filter(|n| n.has_headroom(bitrate_bps))
        .collect();
    let by_load = |a: &&NodeView, b: &&NodeView| {
        a.load_after()
            .partial_cmp(&b.load_after())
            .unwrap_or(Ordering::Equal)
            .then_with(|| a.id.cmp(&b.id))
    };
    let mut complete: Vec<&NodeView> = open
        .iter()
        .copied()
        .filter(|n| n.holds == Holding::Complete)
        .collect();
    complete.sort_by(by_load);
    let mut partial: Vec<(&NodeView, Duration)> = open
        .iter()
        .filter_map(|n| match n.holds {
            Holding::Partial(held) => Some((*n, held)),
            _ => None,
        })
        .collect();
    partial.sort_by(|(a, held_a), (b, held_b)| held_b.cmp(held_a).then_with(|| by_load(a, b)));
    let rest: Vec<&NodeView> = open
        .iter()
        .copied()
        .filter(|n| n.holds == Holding::Nothing)
        .collect();

    let mut out: Vec<(String, Reason)> = Vec::with_capacity(open.len());
    out.extend(complete.iter().map(|n| (n.id.clone(), Reason::Complete)));
    out.extend(partial.iter().map(|(n, _)| (n.id.clone(), Reason::Partial)));
    out.extend(
        hashed(key, nodes, &rest)
            .into_iter()
            .map(|id| (id, Reason::Hashed)),
    );
    out
}

/// `rest` ordered by weighted rendezvous hashing of `key`: first the nodes
/// under the load bound, then those above it (still usable when the ones
/// below refuse). The bound is computed over every node that is up.
fn hashed(key: &str, nodes: &[NodeView], rest: &[&NodeView]) -> Vec<String> {
    let up = nodes.iter().filter(|n| n.up);
    let (sessions, capacity) = up.fold((0u64, 0u64), |(s, c), n| {
        (
            s + u64::from(n.sessions),
            c + u64::from(n.max_sessions.max(1)),
        )
    });
    // Consistent hashing with bounded loads: with the new player, a node
    // may hold up to ⌈bound × its capacity's share of all sessions⌉.
    let total_after = (sessions + 1) as f64;
    let under_bound = |n: &NodeView| {
        let share = f64::from(n.max_sessions.max(1)) / capacity.max(1) as f64;
        f64::from(n.sessions + 1) <= (LOAD_BOUND * total_after * share).ceil()
    };
    let mut ranked: Vec<(bool, f64, &NodeView)> = rest
        .iter()
        .map(|n| {
            let weight = f64::from(n.max_sessions.max(1));
            (under_bound(n), hrw_score(key, &n.id, weight), *n)
        })
        .collect();
    ranked.sort_by(|a, b| {
        b.0.cmp(&a.0)
            .then_with(|| b.1.partial_cmp(&a.1).unwrap_or(Ordering::Equal))
            .then_with(|| a.2.id.cmp(&b.2.id))
    });
    ranked.into_iter().map(|(_, _, n)| n.id.clone()).collect()
}

/// Weighted rendezvous score (the logarithmic method): `-w / ln(u)` with
/// `u` in (0, 1) drawn from a stable hash of (key, node). A node's share of
/// keys is proportional to its weight, and adding or removing a node moves
/// only the keys that rank it first.
pub fn hrw_score(key: &str, node: &str, weight: f64) -> f64 {
    let h = mix(fnv1a(
        fnv1a(FNV_OFFSET, key.as_bytes()) ^ 0xff,
        node.as_bytes(),
    ));
    // 53 bits, strictly inside (0, 1).
    let u = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    -weight / u.ln()
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// FNV-1a: stable across builds and platforms (the std hasher is not), so a
/// restarted master ranks nodes as the one before did.
fn fnv1a(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// splitmix64's finaliser: FNV's low bits are weak.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests;
