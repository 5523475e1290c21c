//! The background syncer: makes written segments durable off the append path.
//!
//! A writer registers its open segment as a [`SyncTarget`] and flags it dirty
//! after each append (one relaxed store). Once a second the syncer thread
//! `fdatasync`s every dirty target; on Linux that writes back the pages dirtied
//! through a shared mapping, like `msync(MS_SYNC)`. A sealed segment gets one
//! last sync, and new directory entries a directory sync. Crash safety does not
//! depend on any of this (records are checksummed); it bounds what a power
//! loss can take.

use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tracing::warn;

const PERIOD: Duration = Duration::from_secs(1);

/// A segment file being written.
pub struct SyncTarget {
    pub file: File,
    pub path: PathBuf,
    dirty: AtomicBool,
}

impl SyncTarget {
    pub fn new(file: File, path: PathBuf) -> Arc<SyncTarget> {
        Arc::new(SyncTarget {
            file,
            path,
            dirty: AtomicBool::new(false),
        })
    }

    /// Notes that the file has unsynced writes.
    #[inline]
    pub fn mark_dirty(&self) {
        self.dirty.store(true, Ordering::Relaxed);
    }

    fn sync_if_dirty(&self) {
        if self.dirty.swap(false, Ordering::Relaxed) {
            if let Err(e) = self.file.sync_data() {
                warn!(path = %self.path.display(), error = %e, "segment sync failed");
            }
        }
    }
}

enum Job {
    Watch(Arc<SyncTarget>),
    /// Sync once more and stop watching.
    Release(Arc<SyncTarget>),
    Dir(PathBuf),
}

/// Handle to the syncer thread; the thread ends when this is dropped.
pub struct Syncer {
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    thread: Option<JoinHandle<()>>,
}

impl Syncer {
    pub fn start() -> std::io::Result<Syncer> {
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("streamcache-sync".into())
            .spawn(move || run(rx))?;
        Ok(Syncer {
            jobs: Mutex::new(Some(tx)),
            thread: Some(thread),
        })
    }

    pub fn watch(&self, target: Arc<SyncTarget>) {
        self.send(Job::Watch(target));
    }

    pub fn release(&self, target: Arc<SyncTarget>) {
        self.send(Job::Release(target));
    }

    pub fn sync_dir(&self, dir: PathBuf) {
        self.send(Job::Dir(dir));
    }

    fn send(&self, job: Job) {
        let jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = jobs.as_ref() {
            // The thread only goes away when `self` is dropped.
            let _ = tx.send(job);
        }
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        // Closing the channel lets the thread finish what is queued and end.
        self.jobs.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(rx: mpsc::Receiver<Job>) {
    let mut watched: Vec<Arc<SyncTarget>> = Vec::new();
    let mut next_round = Instant::now() + PERIOD;
    loop {
        let wait = next_round.saturating_duration_since(Instant::now());
        match rx.recv_timeout(wait) {
            Ok(Job::Watch(target)) => watched.push(target),
            Ok(Job::Release(target)) => {
                watched.retain(|w| !Arc::ptr_eq(w, &target));
                target.sync_if_dirty();
            }
            Ok(Job::Dir(dir)) => {
                if let Err(e) = crate::fsutil::sync_dir(&dir) {
                    warn!(path = %dir.display(), error = %e, "directory sync failed");
                }
            }
            Err(RecvTimeoutError::Timeout) => {
                watched.iter().for_each(|t| t.sync_if_dirty());
                next_round = Instant::now() + PERIOD;
            }
            Err(RecvTimeoutError::Disconnected) => {
                watched.iter().for_each(|t| t.sync_if_dirty());
                return;
            }
        }
    }
}
