//! Node-to-node copies as the master keeps them: which are running (what,
//! from where, to where, how far), which sources a new copy may use, and
//! the failures counted against sources and links.
//!
//! Pure code with time as an argument. The master's tasks ask it what to
//! start ([`CopyBook::plan`]), tell it what the nodes report
//! ([`CopyBook::progress`], [`CopyBook::finished`]), and turn its answers
//! into requests.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use streamcache_types::{Npt, NptSpan};
use tokio::time::Instant;

use super::content::Held;
use super::schedule::{CopyId, Flow};

/// How many sources one title is taken from at once, at most.
pub const MAX_SOURCES: usize = 2;
/// A faulty source or link is tried again (one copy) after this long; a
/// success clears it.
pub const PROBE_AFTER: Duration = Duration::from_secs(60);
/// Finished copies kept for the admin API.
const HISTORY: usize = 64;

/// A source the master may copy a title from.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub node: String,
    pub peer_url: String,
    pub held: Held,
    /// Its copy egress left now (after players and running copies), bit/s.
    pub egress_left: u64,
}

/// One copy: a span of one title from one source to one destination.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Copy {
    pub id: CopyId,
    pub key: String,
    pub source: String,
    #[serde(skip)]
    pub source_url: String,
    pub destination: String,
    /// npt seconds; `end` None: to the end of the title.
    pub from_secs: f64,
    pub to_secs: Option<f64>,
    pub rate_bps: u64,
    pub bytes: u64,
    pub held_to_secs: f64,
    #[serde(skip)]
    pub span: NptSpan,
    #[serde(skip)]
    pub started: Instant,
    /// Why it ended, once it has ("done", or the node's error).
    pub outcome: Option<String>,
}

/// What failed, for the counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// What the source sent did not verify.
    Checksum,
    /// The connection or the source went away.
    Transfer,
}

#[derive(Debug, Default)]
struct Failures {
    at: VecDeque<Instant>,
    /// Faulty since then (for copies only: it still serves players).
    faulty_since: Option<Instant>,
    total: u64,
}

impl Failures {
    fn count(&mut self, now: Instant, window: Duration, faulty_after: u32) -> bool {
        self.total += 1;
        self.at.push_back(now);
        while self
            .at
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) > window)
        {
            self.at.pop_front();
        }
        let newly = self.faulty_since.is_none() && self.at.len() >= faulty_after as usize;
        if self.at.len() >= faulty_after as usize {
            self.faulty_since = Some(now);
        }
        newly
    }

    /// Usable as a source: not faulty, or faulty long enough to be probed.
    fn usable(&self, now: Instant) -> bool {
        self.faulty_since
            .is_none_or(|since| now.saturating_duration_since(since) >= PROBE_AFTER)
    }
}

/// Failures of one source or link, for the admin API.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FailureCount {
    pub name: String,
    pub recent: usize,
    pub total: u64,
    pub faulty: bool,
}

#[derive(Debug)]
pub struct CopyBook {
    next_id: CopyId,
    running: BTreeMap<CopyId, Copy>,
    history: VecDeque<Copy>,
    sources: BTreeMap<String, Failures>,
    links: BTreeMap<(String, String), Failures>,
    window: Duration,
    faulty_after: u32,
}

impl CopyBook {
    pub fn new(window: Duration, faulty_after: u32) -> CopyBook {
        CopyBook {
            next_id: 1,
            running: BTreeMap::new(),
            history: VecDeque::new(),
            sources: BTreeMap::new(),
            links: BTreeMap::new(),
            window,
            faulty_after: faulty_after.max(1),
        }
    }

    /// Whether `destination` is copying `key` now.
    pub fn copying(&self, key: &str, destination: &str) -> bool {
        self.running
            .values()
            .any(|c| c.key == key && c.destination == destination)
    }

    /// The copies that would fill `span` of `key` on `destination` (the
    /// whole title: `span.end` = the title's end, or unbounded), best sources
    /// first: nodes holding the span (complete ones first, then most
    /// egress left: a source whose copy egress is all given to other
    /// copies still qualifies, the allocation shares it), not faulty for
    /// copies (unless due for a probe), not the destination. Up to [`MAX_SOURCES`] sources share the span, each
    /// an equal part of it in npt order. Empty when nobody can give it.
    pub fn plan(
        &self,
        span: NptSpan,
        destination: &str,
        candidates: &[Candidate],
        now: Instant,
    ) -> Vec<(Candidate, NptSpan)> {
        let mut usable: Vec<&Candidate> = candidates
            .iter()
            .filter(|c| c.node != destination)
            .filter(|c| self.sources.get(&c.node).is_none_or(|f| f.usable(now)))
            .filter(|c| {
                self.links
                    .get(&(c.node.clone(), destination.to_owned()))
                    .is_none_or(|f| f.usable(now))
            })
            .filter(|c| {
                c.held.complete || NptSpan::held_from_start(&c.held.spans, span.start, span.end)
            })
            .collect();
        usable.sort_by(|a, b| {
            b.held
                .complete
                .cmp(&a.held.complete)
                .then(b.egress_left.cmp(&a.egress_left))
                .then(a.node.cmp(&b.node))
        });
        usable.truncate(MAX_SOURCES);
        let parts = split(span, usable.len());
        usable.into_iter().cloned().zip(parts).collect()
    }

    /// Records a copy being started; returns its id.
    pub fn start(
        &mut self,
        key: &str,
        source: &Candidate,
        destination: &str,
        span: NptSpan,
        now: Instant,
    ) -> CopyId {
        let id = self.next_id;
        self.next_id += 1;
        let open_end = span.end == Npt::MAX;
        self.running.insert(
            id,
            Copy {
                id,
                key: key.to_owned(),
                source: source.node.clone(),
                source_url: source.peer_url.clone(),
                destination: destination.to_owned(),
                from_secs: span.start.as_secs_f64(),
                to_secs: (!open_end).then(|| span.end.as_secs_f64()),
                rate_bps: 0,
                bytes: 0,
                held_to_secs: span.start.as_secs_f64(),
                span,
                started: now,
                outcome: None,
            },
        );
        id
    }

    pub fn get(&self, id: CopyId) -> Option<&Copy> {
        self.running.get(&id)
    }

    pub fn set_rate(&mut self, id: CopyId, rate_bps: u64) {
        if let Some(copy) = self.running.get_mut(&id) {
            copy.rate_bps = rate_bps;
        }
    }

    /// A node's progress report for one of its copies.
    pub fn progress(&mut self, destination: &str, id: CopyId, bytes: u64, held_to: Npt) {
        if let Some(copy) = self
            .running
            .get_mut(&id)
            .filter(|c| c.destination == destination)
        {
            copy.bytes = bytes;
            copy.held_to_secs = held_to.as_secs_f64().max(copy.from_secs);
        }
    }

    /// A copy ended: done (`failure` None) or failed. A failure is counted
    /// against the source (and the link); returns the copy, and whether the
    /// source or link became faulty with it. A success clears a source
    /// that was being probed.
    pub fn finished(
        &mut self,
        id: CopyId,
        failure: Option<(Failure, String)>,
        now: Instant,
    ) -> Option<(Copy, bool)> {
        let mut copy = self.running.remove(&id)?;
        let mut newly_faulty = false;
        match &failure {
            None => {
                for failures in [
                    self.sources.get_mut(&copy.source),
                    self.links
                        .get_mut(&(copy.source.clone(), copy.destination.clone())),
                ]
                .into_iter()
                .flatten()
                {
                    failures.faulty_since = None;
                    failures.at.clear();
                }
                copy.outcome = Some("done".into());
            }
            Some((kind, why)) => {
                let (window, after) = (self.window, self.faulty_after);
                // A checksum failure is the source's fault; a lost transfer
                // may be the link's as much as the source's: both count.
                newly_faulty |= self
                    .sources
                    .entry(copy.source.clone())
                    .or_default()
                    .count(now, window, after);
                if *kind == Failure::Transfer {
                    newly_faulty |= self
                        .links
                        .entry((copy.source.clone(), copy.destination.clone()))
                        .or_default()
                        .count(now, window, after);
                }
                copy.outcome = Some(why.clone());
            }
        }
        if self.history.len() == HISTORY {
            self.history.pop_front();
        }
        self.history.push_back(copy.clone());
        Some((copy, newly_faulty))
    }

    /// An operator clears a node's (or its links') faulty mark.
    pub fn clear_faulty(&mut self, node: &str) -> bool {
        let mut cleared = false;
        for (_, failures) in self
            .sources
            .iter_mut()
            .filter(|(n, _)| n.as_str() == node)
            .chain(
                self.links
                    .iter_mut()
                    .filter(|((s, d), _)| s == node || d == node)
                    .map(|((s, _), f)| (s, f)),
            )
        {
            cleared |= failures.faulty_since.take().is_some();
            failures.at.clear();
        }
        cleared
    }

    /// The running copies as the rate allocation sees them.
    pub fn flows(&self) -> Vec<Flow> {
        self.running
            .values()
            .map(|c| Flow {
                id: c.id,
                source: c.source.clone(),
                destination: c.destination.clone(),
                weight: 1,
            })
            .collect()
    }

    pub fn running(&self) -> impl Iterator<Item = &Copy> {
        self.running.values()
    }

    pub fn history(&self) -> impl Iterator<Item = &Copy> {
        self.history.iter()
    }

    /// Failure counts of sources and links, for the admin API.
    pub fn failure_counts(&self, now: Instant) -> (Vec<FailureCount>, Vec<FailureCount>) {
        let count = |name: String, f: &Failures| FailureCount {
            name,
            recent: f
                .at
                .iter()
                .filter(|t| now.saturating_duration_since(**t) <= self.window)
                .count(),
            total: f.total,
            faulty: f.faulty_since.is_some(),
        };
        (
            self.sources
                .iter()
                .map(|(n, f)| count(n.clone(), f))
                .collect(),
            self.links
                .iter()
                .map(|((s, d), f)| count(format!("{s}->{d}"), f))
                .collect(),
        )
    }

    /// Copies running into `node` or out of it.
    pub fn involving(&self, node: &str) -> Vec<CopyId> {
        self.running
            .values()
            .filter(|c| c.source == node || c.destination == node)
            .map(|c| c.id)
            .collect()
    }
}

/// `span` cut into `n` consecutive parts of equal length (an unbounded
/// span is given whole to one source).
fn split(span: NptSpan, n: usize) -> Vec<NptSpan> {
    if n == 0 {
        return Vec::new();
    }
    if n == 1 || span.end == Npt::MAX {
        return vec![span];
    }
    let length = span.end.as_ns().saturating_sub(span.start.as_ns());
    (0..n as u64)
        .map(|i| NptSpan {
            start: Npt::from_ns(span.start.as_ns() + length * i / n as u64),
            end: Npt::from_ns(span.start.as_ns() + length * (i + 1) / n as u64),
        })
        .collect()
}

#[cfg(test)]
mod tests;
