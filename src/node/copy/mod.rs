//! Node-to-node copies, the receiving side (issue 13): the master's
//! `CopyStart` makes this node fetch one npt span of a title from a peer's
//! server (`crate::node::peer`) into its own store, at a rate the master
//! sets and changes (`CopyRate`) and until it is done or cancelled
//! (`CopyCancel`). Every record is verified before it is stored, and goes
//! through the store's normal writer, so that the title's state and spans
//! end as a fill from the origin would leave them.
//!
//! - [`fetch`]: one copy's requests, pacing, retries and verification;
//! - [`parse`]: the span's records and the segment bytes' verification;
//! - [`sink`]: one writer per key, the copies of a key stored in npt order;
//! - [`client`]: the HTTP requests.
//!
//! From its `CopyStart` until it ends a copy's key is in the catalog's
//! [`CopyingKeys`]: players (and the master's Prepare) are served what has
//! arrived and wait for the rest, and no origin session is started for it.

pub mod client;
mod fetch;
pub mod parse;
mod sink;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use streamcache_cache::Store;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::catalog::CopyingKeys;
use crate::cluster::protocol::pb;
use sink::Sinks;

/// What the master may change while a copy runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Control {
    /// bit/s; 0 holds the copy back until it is raised.
    pub rate_bps: u64,
    pub cancelled: bool,
}

/// How far a copy has got (reported every period as `CopyProgress`).
#[derive(Debug, Default)]
pub struct Progress {
    /// Bytes received from the source.
    pub bytes: AtomicU64,
    /// npt of the last record stored.
    pub held_to_ns: AtomicU64,
    /// The copy failed on data that did not verify.
    pub checksum_failure: AtomicBool,
}

/// Why a copy ended without its span.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// What the source sent did not verify (counted against the source).
    Checksum(String),
    Cancelled,
    /// Anything else: the source unreachable, the store refusing.
    Other(String),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Checksum(why) => write!(f, "checksum failure: {why}"),
            Failure::Cancelled => f.write_str("cancelled"),
            Failure::Other(why) => f.write_str(why),
        }
    }
}

/// One copy's orders.
struct Job {
    id: u64,
    key: String,
    source_url: String,
    token: String,
    start_ns: u64,
    /// `None`: to the title's end (following a source still recording).
    end_ns: Option<u64>,
    /// The rest of a failed copy: what it stored last, to continue after.
    resume: Option<parse::Tail>,
    control: watch::Receiver<Control>,
    progress: Arc<Progress>,
}

/// The copies running on this node.
pub struct Copies {
    sinks: Sinks,
    copying: CopyingKeys,
    /// The cluster token, which the peers' servers ask for.
    token: String,
    running: Mutex<HashMap<u64, Running>>,
}

struct Running {
    control: watch::Sender<Control>,
    progress: Arc<Progress>,
    /// Becomes true once the copy's task has ended.
    finished: watch::Receiver<bool>,
}

/// Called once when a copy ends: its result and its last progress.
pub type OnDone = Box<dyn FnOnce(Result<(), Failure>, pb::CopyProgress) + Send>;

impl Copies {
    pub fn new(store: Store, copying: CopyingKeys, token: String) -> Arc<Copies> {
        Arc::new(Copies {
            sinks: Sinks::new(store, copying.clone()),
            copying,
            token,
            running: Mutex::default(),
        })
    }

    /// Starts a copy; `done` is called when it ends. Refused at once (and
    /// `done` never called) when the request is unusable.
    pub fn start(self: &Arc<Self>, start: pb::CopyStart, done: OnDone) -> Result<(), String> {
        let span = start.span.unwrap_or_default();
        let end_ns = (span.end_ns != 0).then_some(span.end_ns);
        if start.key.is_empty() || end_ns.is_some_and(|end| end <= span.start_ns) {
            return Err("a CopyStart needs a key and a span that is not empty".into());
        }
        let id = start.copy_id;
        let mut running = lock(&self.running);
        if running.contains_key(&id) {
            return Err(format!("copy {id} is running already"));
        }
        let (control, control_rx) = watch::channel(Control {
            rate_bps: start.rate_bps,
            cancelled: false,
        });
        let (finished_tx, finished) = watch::channel(false);
        let progress = Arc::new(Progress::default());
        // The failed copy's place has been left (before its Done): what it
        // stored is known here, unless it stored nothing.
        let resume = start
            .resume
            .then(|| self.sinks.tail(&start.key, span.start_ns))
            .flatten();
        let job = Job {
            id,
            key: start.key,
            source_url: start.source_url,
            token: self.token.clone(),
            start_ns: span.start_ns,
            end_ns,
            resume,
            control: control_rx,
            progress: Arc::clone(&progress),
        };
        running.insert(
            id,
            Running {
                control,
                progress: Arc::clone(&progress),
                finished,
            },
        );
        drop(running);
        info!(copy = id, key = %job.key, source = %start.source_node, start_ns = job.start_ns, end_ns = ?end_ns, resume = start.resume, after_stored = job.resume.is_some(), "copy started");
        // From now on the key is coming from a peer: the Prepare the
        // master sends next must not go to the origin.
        self.copying.started(&job.key);
        let copies = Arc::clone(self);
        tokio::spawn(async move {
            let place = copies.sinks.join(&job.key, id, job.start_ns);
            let key = job.key.clone();
            let result = match fetch::Copy::new(job, place) {
                Ok(copy) => copy.run().await,
                Err(e) => Err(e),
            };
            // The copy (and so its place, and the writer if it was the
            // last) is dropped by now.
            copies.copying.ended(&key);
            if matches!(result, Err(Failure::Checksum(_))) {
                progress.checksum_failure.store(true, Ordering::Relaxed);
            }
            match &result {
                Ok(()) => info!(copy = id, key, "copy done"),
                Err(e) => warn!(copy = id, key, error = %e, "copy ended without its span"),
            }
            lock(&copies.running).remove(&id);
            let _ = finished_tx.send(true);
            done(result, report(id, &progress));
        });
        Ok(())
    }

    /// A running copy's new rate.
    pub fn set_rate(&self, id: u64, rate_bps: u64) -> Result<(), String> {
        let running = lock(&self.running);
        let copy = running.get(&id).ok_or_else(|| format!("no copy {id}"))?;
        copy.control.send_modify(|c| c.rate_bps = rate_bps);
        Ok(())
    }

    /// Stops a copy; what it stored stays. Returns what becomes true once
    /// it has stopped, or `None` if no such copy runs.
    pub fn cancel(&self, id: u64) -> Option<watch::Receiver<bool>> {
        let running = lock(&self.running);
        let copy = running.get(&id)?;
        copy.control.send_modify(|c| c.cancelled = true);
        Some(copy.finished.clone())
    }

    /// Every running copy's progress.
    pub fn progress(&self) -> Vec<pb::CopyProgress> {
        let running = lock(&self.running);
        let mut all: Vec<_> = running
            .iter()
            .map(|(&id, copy)| report(id, &copy.progress))
            .collect();
        all.sort_by_key(|p| p.copy_id);
        all
    }
}

fn report(id: u64, progress: &Progress) -> pb::CopyProgress {
    pb::CopyProgress {
        copy_id: id,
        bytes: progress.bytes.load(Ordering::Relaxed),
        held_to_ns: progress.held_to_ns.load(Ordering::Relaxed),
        checksum_failure: progress.checksum_failure.load(Ordering::Relaxed),
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
