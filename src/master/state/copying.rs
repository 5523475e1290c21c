//! The master's state for node-to-node copies: what to copy from whom
//! (over [`CopyBook`]), at what rate (over [`Allocation`]), with the
//! capacities read off membership: a node's copy egress is what its
//! players leave of its egress, capped by its configured copy egress.

use streamcache_types::{Npt, NptSpan};
use tokio::time::Instant;

use super::{Inner, MasterState};
use crate::cluster::copies::{Candidate, Copy, Failure};
use crate::cluster::membership::Health;
use crate::cluster::protocol::pb;
use crate::cluster::schedule::{Capacities, CopyId};

/// A node's peer server and copy caps, from its Hello.
#[derive(Debug, Clone)]
pub struct Peer {
    pub url: Option<String>,
    pub copy_egress_bps: u64,
    pub copy_ingress_bps: u64,
}

/// A copy to start: the request for its destination.
#[derive(Debug, Clone)]
pub struct CopyOrder {
    pub destination: String,
    pub start: pb::CopyStart,
}

/// A running copy's new rate, for its destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateChange {
    pub destination: String,
    pub copy_id: CopyId,
    pub rate_bps: u64,
}

/// What the end of a copy brings.
#[derive(Debug)]
pub struct CopyEnd {
    pub copy: Copy,
    /// The source (or link) is now faulty for copies.
    pub newly_faulty: bool,
    pub rates: Vec<RateChange>,
    /// Copies resuming what a failed one left, from other sources.
    pub resumed: Vec<CopyOrder>,
}

impl Inner {
    fn capacities(&self, settings: &super::Settings) -> Capacities {
        let mut caps = Capacities {
            link_default: settings.copy_link_bps,
            cluster: settings.copy_cluster_bps,
            ..Capacities::default()
        };
        for member in self.membership.members() {
            let usable = member.health != Health::Down && self.links.contains_key(&member.id);
            let Some(peer) = self.peers.get(&member.id).filter(|_| usable) else {
                continue;
            };
            // Players first: what they draw (history and assignments since
            // the last report) is not available to copies.
            let players = member.egress.mean().saturating_add(member.assigned_bps);
            let left = member.capacity.max_egress_bps.saturating_sub(players);
            caps.egress
                .insert(member.id.clone(), peer.copy_egress_bps.min(left));
            caps.ingress
                .insert(member.id.clone(), peer.copy_ingress_bps);
        }
        caps
    }

    /// The nodes that could give `key` to `destination`, with what each
    /// holds and its copy egress not yet allocated.
    fn copy_candidates(&self, key: &str, caps: &Capacities) -> Vec<Candidate> {
        let Some(holders) = self.content.holders(key) else {
            return Vec::new();
        };
        holders
            .iter()
            .filter_map(|(node, held)| {
                let url = self.peers.get(node)?.url.clone()?;
                // No copy egress at all (its players take it all): not a
                // source. Egress given to other copies is no bar: the
                // allocation shares it (max-min) with the new one.
                let cap = *caps.egress.get(node)?;
                if cap == 0 {
                    return None;
                }
                let allocated: u64 = self
                    .copies
                    .running()
                    .filter(|c| &c.source == node)
                    .map(|c| c.rate_bps)
                    .sum();
                Some(Candidate {
                    node: node.clone(),
                    peer_url: url,
                    held: held.clone(),
                    egress_left: cap.saturating_sub(allocated),
                })
            })
            .collect()
    }

    /// Records the planned copies, allocates rates, and returns the orders
    /// (with their rates) and the rate changes of running copies. `resume`:
    /// `span` is the rest of a failed copy, from where it had stored; the
    /// part starting there continues exactly after what the destination
    /// stored (`CopyStart.resume`).
    #[allow(clippy::too_many_arguments)]
    fn start_copies(
        &mut self,
        settings: &super::Settings,
        key: &str,
        destination: &str,
        span: NptSpan,
        exclude: &[String],
        resume: bool,
        now: Instant,
    ) -> (Vec<CopyOrder>, Vec<RateChange>) {
        let caps = self.capacities(settings);
        if caps.ingress.get(destination).copied().unwrap_or(0) == 0 {
            return (Vec::new(), Vec::new());
        }
        let candidates: Vec<Candidate> = self
            .copy_candidates(key, &caps)
            .into_iter()
            .filter(|c| !exclude.contains(&c.node))
            .collect();
        let plan = self.copies.plan(span, destination, &candidates, now);
        let ids: Vec<CopyId> = plan
            .iter()
            .map(|(source, part)| self.copies.start(key, source, destination, *part, now))
            .collect();
        let changes = self.reallocate(settings, &ids, &[]);
        let orders = ids
            .iter()
            .filter_map(|id| self.copies.get(*id))
            .map(|copy| CopyOrder {
                destination: copy.destination.clone(),
                start: pb::CopyStart {
                    copy_id: copy.id,
                    key: copy.key.clone(),
                    source_node: copy.source.clone(),
                    source_url: copy.source_url.clone(),
                    span: Some(pb::Span {
                        start_ns: copy.span.start.as_ns(),
                        end_ns: if copy.span.end == Npt::MAX {
                            0
                        } else {
                            copy.span.end.as_ns()
                        },
                    }),
                    rate_bps: copy.rate_bps,
                    // A later part of the rest starts where the parts
                    // split: at a keyframe, as any other.
                    resume: resume && copy.span.start == span.start,
                },
            })
            .collect();
        // The new copies' rates travel in their CopyStart.
        let changes = changes
            .into_iter()
            .filter(|c| !ids.contains(&c.copy_id))
            .collect();
        (orders, changes)
    }

    /// Recomputes the rates reached by `touched` copies or `nodes`.
    fn reallocate(
        &mut self,
        settings: &super::Settings,
        touched: &[CopyId],
        nodes: &[String],
    ) -> Vec<RateChange> {
        let caps = self.capacities(settings);
        let flows = self.copies.flows();
        let changed = self.rates.update(&flows, &caps, touched, nodes);
        changed
            .into_iter()
            .filter_map(|(id, rate)| {
                self.copies.set_rate(id, rate);
                let copy = self.copies.get(id)?;
                Some(RateChange {
                    destination: copy.destination.clone(),
                    copy_id: id,
                    rate_bps: rate,
                })
            })
            .collect()
    }
}

/// The span a title's copy covers: from the start to the end of what its
/// complete holders hold, or open-ended (following a recording).
fn title_span(inner: &Inner, key: &str) -> NptSpan {
    let end = inner
        .content
        .holders(key)
        .and_then(|holders| {
            holders
                .values()
                .filter(|h| h.complete)
                .filter_map(|h| h.spans.iter().map(|s| s.end).max())
                .max()
        })
        .unwrap_or(Npt::MAX);
    NptSpan {
        start: Npt::ZERO,
        end,
    }
}

impl MasterState {
    /// Copies to start so that `destination`, chosen for a player of
    /// `key`, gets the title from the nodes that hold it instead of from
    /// the origin. Nothing when it holds or copies it already, when no
    /// node can give it, or when it takes no copies.
    pub fn copies_for_placement(
        &self,
        key: &str,
        destination: &str,
        now: Instant,
    ) -> (Vec<CopyOrder>, Vec<RateChange>) {
        let mut inner = self.lock();
        // Nobody holds it (the common case of an uncached title): nothing
        // to plan, and nothing computed on the players' path.
        let Some(holders) = inner.content.holders(key) else {
            return (Vec::new(), Vec::new());
        };
        // Anything of it there (a fill from the origin, a live relay) or
        // coming: the node's one writer of the title is taken.
        let held_here = holders.contains_key(destination);
        let filling_here = inner
            .filling
            .get(key)
            .is_some_and(|(node, until)| node == destination && *until > now);
        if held_here || filling_here || inner.copies.copying(key, destination) {
            return (Vec::new(), Vec::new());
        }
        let span = title_span(&inner, key);
        inner.start_copies(&self.settings, key, destination, span, &[], false, now)
    }

    /// The running copies out of `node`: (id, destination).
    pub fn copies_from(&self, node: &str) -> Vec<(CopyId, String)> {
        self.lock()
            .copies
            .running()
            .filter(|c| c.source == node)
            .map(|c| (c.id, c.destination.clone()))
            .collect()
    }

    /// A destination's progress report.
    pub fn copy_progress(&self, node: &str, progress: &pb::CopyProgress) {
        let mut inner = self.lock();
        if progress.checksum_failure {
            inner.checksum_failed.insert(progress.copy_id);
        }
        inner.copies.progress(
            node,
            progress.copy_id,
            progress.bytes,
            Npt::from_ns(progress.held_to_ns),
        );
    }

    /// A copy's Done arrived (or its destination is gone: `Err`). A failed
    /// copy is counted against its source and link and resumed from where
    /// it stopped, from another source where there is one.
    pub fn copy_ended(
        &self,
        id: CopyId,
        result: Result<(), String>,
        now: Instant,
    ) -> Option<CopyEnd> {
        let mut inner = self.lock();
        let checksum = inner.checksum_failed.remove(&id);
        let failure = result.err().map(|why| {
            let kind = if checksum || why.contains("checksum") || why.contains("digest") {
                Failure::Checksum
            } else {
                Failure::Transfer
            };
            (kind, why)
        });
        let failed = failure.is_some();
        let (copy, newly_faulty) = inner.copies.finished(id, failure, now)?;
        let nodes = [copy.source.clone(), copy.destination.clone()];
        let mut rates = inner.reallocate(&self.settings, &[], &nodes);
        let mut resumed = Vec::new();
        let destination_up = inner.links.contains_key(&copy.destination);
        if failed && destination_up {
            let rest = NptSpan {
                start: Npt::from_secs_f64(copy.held_to_secs),
                end: copy.span.end,
            };
            let exclude = [copy.source.clone()];
            let (orders, more) = inner.start_copies(
                &self.settings,
                &copy.key,
                &copy.destination,
                rest,
                &exclude,
                true,
                now,
            );
            resumed = orders;
            rates.extend(more);
        }
        Some(CopyEnd {
            copy,
            newly_faulty,
            rates,
            resumed,
        })
    }

    /// A node's load changed (a report): the copies through it may get
    /// another rate.
    pub fn copy_rates_after_report(&self, node: &str) -> Vec<RateChange> {
        let mut inner = self.lock();
        if inner.copies.involving(node).is_empty() {
            return Vec::new();
        }
        inner.reallocate(&self.settings, &[], &[node.to_owned()])
    }

    /// The copies (running and recent) and failure counts, for the admin API.
    pub fn copies_view(&self, now: Instant) -> serde_json::Value {
        let inner = self.lock();
        let (sources, links) = inner.copies.failure_counts(now);
        serde_json::json!({
            "running": inner.copies.running().collect::<Vec<_>>(),
            "recent": inner.copies.history().collect::<Vec<_>>(),
            "sources": sources,
            "links": links,
        })
    }

    /// Clears a node's faulty mark (operator).
    pub fn clear_faulty(&self, node: &str) -> bool {
        self.lock().copies.clear_faulty(node)
    }

    /// Copies running now, and their allocated rates' sum (metrics).
    pub fn copy_totals(&self) -> (usize, u64) {
        let inner = self.lock();
        inner
            .copies
            .running()
            .fold((0, 0), |(n, bps), c| (n + 1, bps + c.rate_bps))
    }
}

#[cfg(test)]
mod tests;
