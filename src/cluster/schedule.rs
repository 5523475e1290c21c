//! Rates for node-to-node copies: weighted max-min fair sharing of every
//! resource a copy uses.
//!
//! A copy (one source, one destination) draws on four resources: the
//! source's copy egress, the destination's copy ingress, the link between
//! them and the cluster's overall copy cap. Players come first: a node's
//! copy egress is what its players leave of its egress (from its reports
//! and bandwidth history), capped by its configured copy egress.
//!
//! Progressive filling: every copy's rate rises with its weight, all
//! together; when a resource is full, the copies through it are frozen at
//! their rate; the others go on rising; until every copy is frozen. No
//! resource is ever over-allocated, and no copy can get more without
//! taking from one that has no more than it (weighted).
//!
//! When one copy starts or ends, or a node's load changes, only the copies
//! that share a node or link with it (transitively) are recomputed, with
//! what the others hold of the cluster cap set aside; if the cluster cap
//! is what stops them, every copy is recomputed (the cap links them all).
//!
//! Pure code: the copies and capacities in, the rates out.

use std::collections::{BTreeMap, BTreeSet};

/// A copy's identity (the master's copy id).
pub type CopyId = u64;

/// A running copy as the allocation sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flow {
    pub id: CopyId,
    pub source: String,
    pub destination: String,
    /// Share of a contended resource relative to other copies (≥ 1).
    pub weight: u32,
}

/// What copies may use, bit/s.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capacities {
    /// Per node: copy egress left after its players.
    pub egress: BTreeMap<String, u64>,
    /// Per node: copy ingress.
    pub ingress: BTreeMap<String, u64>,
    /// Per link (source, destination); a link not listed has `link_default`.
    pub links: BTreeMap<(String, String), u64>,
    pub link_default: u64,
    /// All copies together.
    pub cluster: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Resource {
    Egress(String),
    Ingress(String),
    Link(String, String),
    Cluster,
}

impl Flow {
    fn resources(&self) -> [Resource; 4] {
        [
            Resource::Egress(self.source.clone()),
            Resource::Ingress(self.destination.clone()),
            Resource::Link(self.source.clone(), self.destination.clone()),
            Resource::Cluster,
        ]
    }
}

impl Capacities {
    fn of(&self, resource: &Resource) -> u64 {
        match resource {
            Resource::Egress(node) => self.egress.get(node).copied().unwrap_or(0),
            Resource::Ingress(node) => self.ingress.get(node).copied().unwrap_or(0),
            Resource::Link(s, d) => self
                .links
                .get(&(s.clone(), d.clone()))
                .copied()
                .unwrap_or(self.link_default),
            Resource::Cluster => self.cluster,
        }
    }
}

/// Weighted max-min fair rates of `flows`, bit/s. `cluster_left`: what of
/// the cluster cap these flows may share (the whole cap, or what other
/// flows leave). Returns the rates and whether the cluster cap is what
/// froze any flow.
fn fill(flows: &[&Flow], caps: &Capacities, cluster_left: u64) -> (BTreeMap<CopyId, u64>, bool) {
    let mut rates: BTreeMap<CopyId, f64> = flows.iter().map(|f| (f.id, 0.0)).collect();
    let mut frozen: BTreeSet<CopyId> = BTreeSet::new();
    let mut used: BTreeMap<Resource, f64> = BTreeMap::new();
    let capacity = |r: &Resource| match r {
        Resource::Cluster => cluster_left as f64,
        other => caps.of(other) as f64,
    };
    let mut cluster_bound = false;
    // Each round freezes at least one flow, so this ends.
    while frozen.len() < flows.len() {
        // Per resource: the weight of its unfrozen flows.
        let mut weights: BTreeMap<Resource, f64> = BTreeMap::new();
        for flow in flows.iter().filter(|f| !frozen.contains(&f.id)) {
            for r in flow.resources() {
                *weights.entry(r).or_default() += f64::from(flow.weight.max(1));
            }
        }
        // How far the level can rise before the first resource fills.
        let Some((step, _)) = weights
            .iter()
            .map(|(r, w)| {
                let left = (capacity(r) - used.get(r).copied().unwrap_or(0.0)).max(0.0);
                (left / w, r)
            })
            .min_by(|a, b| a.0.total_cmp(&b.0))
        else {
            break;
        };
        for flow in flows.iter().filter(|f| !frozen.contains(&f.id)) {
            let add = step * f64::from(flow.weight.max(1));
            if let Some(rate) = rates.get_mut(&flow.id) {
                *rate += add;
            }
            for r in flow.resources() {
                *used.entry(r).or_default() += add;
            }
        }
        // Freeze the flows of every resource that is now full.
        let full: Vec<Resource> = weights
            .keys()
            .filter(|r| used.get(*r).copied().unwrap_or(0.0) >= capacity(r) * (1.0 - 1e-9))
            .cloned()
            .collect();
        for flow in flows.iter() {
            if frozen.contains(&flow.id) {
                continue;
            }
            let resources = flow.resources();
            if let Some(r) = full.iter().find(|r| resources.contains(r)) {
                if *r == Resource::Cluster {
                    cluster_bound = true;
                }
                frozen.insert(flow.id);
            }
        }
    }
    // Rounded down: the sum of rates never exceeds a capacity.
    let rates = rates
        .into_iter()
        .map(|(id, r)| (id, r.floor() as u64))
        .collect();
    (rates, cluster_bound)
}

/// The rates of every flow, from scratch.
pub fn allocate(flows: &[Flow], caps: &Capacities) -> BTreeMap<CopyId, u64> {
    let all: Vec<&Flow> = flows.iter().collect();
    fill(&all, caps, caps.cluster).0
}

/// The allocation in force, recomputed in part when something changes.
#[derive(Debug, Default, Clone)]
pub struct Allocation {
    pub rates: BTreeMap<CopyId, u64>,
}

impl Allocation {
    /// Recomputes the flows that share a node with `touched` (copies that
    /// started) or use one of `nodes` (whose load changed, or where a copy
    /// ended), transitively; the others keep their rates. When the cluster
    /// cap was or becomes full, every flow is recomputed. Returns the flows
    /// whose rate changed, with the new rate.
    pub fn update(
        &mut self,
        flows: &[Flow],
        caps: &Capacities,
        touched: &[CopyId],
        nodes: &[String],
    ) -> Vec<(CopyId, u64)> {
        // Full before the change (ended copies included: what they free
        // goes to copies that may be anywhere). Rounding leaves at most a
        // bit/s per flow below a full cap.
        let held: u64 = self.rates.values().sum();
        let was_full = held + self.rates.len() as u64 >= caps.cluster;
        self.rates
            .retain(|id, _| flows.iter().any(|flow| flow.id == *id));
        let group = component(flows, touched, nodes);
        let others: u64 = self
            .rates
            .iter()
            .filter(|(id, _)| !group.contains(id))
            .map(|(_, r)| *r)
            .sum();
        let members: Vec<&Flow> = flows.iter().filter(|f| group.contains(&f.id)).collect();
        let (mut rates, cluster_bound) = fill(&members, caps, caps.cluster.saturating_sub(others));
        if (cluster_bound || was_full) && members.len() < flows.len() {
            // The cluster cap ties every copy together.
            rates = allocate(flows, caps);
        }
        let mut changed = Vec::new();
        for (id, rate) in rates {
            if self.rates.insert(id, rate) != Some(rate) {
                changed.push((id, rate));
            }
        }
        changed
    }
}

/// The flows connected to `touched` flows or `nodes` through shared nodes
/// and links (the cluster cap aside).
fn component(flows: &[Flow], touched: &[CopyId], nodes: &[String]) -> BTreeSet<CopyId> {
    let mut reached_nodes: BTreeSet<&str> = nodes.iter().map(String::as_str).collect();
    for flow in flows.iter().filter(|f| touched.contains(&f.id)) {
        reached_nodes.insert(&flow.source);
        reached_nodes.insert(&flow.destination);
    }
    let mut group: BTreeSet<CopyId> = BTreeSet::new();
    loop {
        let before = group.len();
        for flow in flows {
            if reached_nodes.contains(flow.source.as_str())
                || reached_nodes.contains(flow.destination.as_str())
            {
                group.insert(flow.id);
                reached_nodes.insert(&flow.source);
                reached_nodes.insert(&flow.destination);
            }
        }
        if group.len() == before {
            return group;
        }
    }
}

#[cfg(test)]
mod tests;
