//! Keys a node-to-node copy is bringing into the store now
//! (`crate::node::copy`), from its `CopyStart` until it ends. Such a title
//! is served from the store as it arrives, never from the origin: players
//! follow the copy's writer as they follow a fill's, and the cluster's
//! `Prepare` (which the master sends right after the copy is acknowledged)
//! finds it held.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use streamcache_cache::Store;
use tokio::sync::watch;
use tokio::time::Instant;

/// Shared by the catalog (which asks) and the copy engine (which tells).
#[derive(Debug, Clone)]
pub struct CopyingKeys(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    /// Copies running, by key.
    keys: Mutex<HashMap<String, usize>>,
    /// Bumped when a copy of a key starts, ends or opens its writer.
    changes: watch::Sender<u64>,
}

impl Default for CopyingKeys {
    fn default() -> Self {
        CopyingKeys(Arc::new(Inner {
            keys: Mutex::default(),
            changes: watch::channel(0).0,
        }))
    }
}

impl CopyingKeys {
    /// A copy of `key` has started (counted: several may run at once).
    pub fn started(&self, key: &str) {
        *self.lock().entry(key.to_owned()).or_insert(0) += 1;
        self.touch();
    }

    /// A copy of `key` has ended (its writer closed when it was the last).
    pub fn ended(&self, key: &str) {
        {
            let mut keys = self.lock();
            if let Some(count) = keys.get_mut(key) {
                *count -= 1;
                if *count == 0 {
                    keys.remove(key);
                }
            }
        }
        self.touch();
    }

    /// A copy opened its writer: the title's metadata is in the store.
    pub fn touch(&self) {
        self.0.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    pub fn contains(&self, key: &str) -> bool {
        self.lock().contains_key(key)
    }

    /// While a copy of `key` has started but not yet stored its metadata
    /// (it is asking its source), waits for it, at most `wait`.
    pub async fn settle(&self, store: &Store, key: &str, wait: Duration) {
        let deadline = Instant::now() + wait;
        let mut changes = self.0.changes.subscribe();
        while self.contains(key) && matches!(store.metadata(key), Ok(None)) {
            let changed = tokio::time::timeout_at(deadline, changes.changed()).await;
            if !matches!(changed, Ok(Ok(()))) {
                return;
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        self.0.keys.lock().unwrap_or_else(|e| e.into_inner())
    }
}
