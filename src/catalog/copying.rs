//! Keys a node-to-node copy is writing into the store now
//! (`crate::node::copy`). Such a title is served from the store as it
//! arrives, never from the origin: players follow the copy's writer as
//! they follow a fill's, and the cluster's `Prepare` finds it held.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Shared by the catalog (which asks) and the copy engine (which tells).
#[derive(Debug, Clone, Default)]
pub struct CopyingKeys(Arc<Mutex<HashMap<String, usize>>>);

impl CopyingKeys {
    /// A copy's writer of `key` is open; counted, so that overlapping
    /// marks of one key end with the last.
    pub fn started(&self, key: &str) {
        *self.lock().entry(key.to_owned()).or_insert(0) += 1;
    }

    /// The copy's writer of `key` is closed (its state is final).
    pub fn ended(&self, key: &str) {
        let mut keys = self.lock();
        if let Some(count) = keys.get_mut(key) {
            *count -= 1;
            if *count == 0 {
                keys.remove(key);
            }
        }
    }

    pub fn contains(&self, key: &str) -> bool {
        self.lock().contains_key(key)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}
