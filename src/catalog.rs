//! The catalog: from a resolved player URL to the hub that serves it.
//!
//! Presentations are keyed by their normalised origin URL ([`crate::mounts`]).
//! A key has at most one joinable hub; the first player to ask for a key
//! describes it at the origin and creates the hub, and players asking at the
//! same time wait for that one DESCRIBE instead of sending their own (each key
//! has its own async lock, so a slow origin delays only its own players).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use streamcache_cache::{Metadata, PresentationState, Store};
use tokio::sync::Mutex as AsyncMutex;
use tracing::{info, warn};

use crate::config::MountTransport;
use crate::hub::{Hub, HubSettings};
use crate::mounts::{OriginTiming, Resolved};
use crate::origin::{self, OriginError, OriginTarget, TransportPref};

type Slot = Arc<AsyncMutex<Option<Arc<Hub>>>>;

/// A presentation the store holds completely: it plays without the origin.
pub struct CachedTitle {
    pub store: Store,
    pub metadata: Metadata,
}

pub struct Catalog {
    store: Store,
    timing: OriginTiming,
    hub_settings: HubSettings,
    slots: Mutex<HashMap<String, Slot>>,
}

impl Catalog {
    pub fn new(store: Store, timing: OriginTiming, hub_settings: HubSettings) -> Arc<Catalog> {
        Arc::new(Catalog {
            store,
            timing,
            hub_settings,
            slots: Mutex::new(HashMap::new()),
        })
    }

    /// The stored title for a key, if the store holds all of it.
    pub fn cached(&self, key: &str) -> Option<Arc<CachedTitle>> {
        let metadata = match self.store.metadata(key) {
            Ok(Some(metadata)) => metadata,
            Ok(None) => return None,
            Err(e) => {
                warn!(key, error = %e, "cache entry unreadable: going to the origin");
                return None;
            }
        };
        (metadata.state == PresentationState::Complete).then(|| {
            Arc::new(CachedTitle {
                store: self.store.clone(),
                metadata,
            })
        })
    }

    /// The hub for a presentation: a joinable one if it exists, otherwise a
    /// new one after a DESCRIBE at the origin.
    pub async fn hub(self: &Arc<Self>, resolved: &Resolved) -> Result<Arc<Hub>, OriginError> {
        let slot = self.slot(&resolved.key);
        let mut current = slot.lock().await;
        if let Some(hub) = current.as_ref().filter(|h| h.joinable()) {
            return Ok(Arc::clone(hub));
        }
        let target = self.target(resolved);
        let described = match origin::describe(&target).await {
            Ok(d) => d,
            Err(e) => {
                if current.is_none() {
                    drop(current);
                    self.forget(&resolved.key, &slot);
                }
                return Err(e);
            }
        };
        info!(key = %resolved.key, tracks = described.tracks.len(), "presentation described");
        let weak: Weak<Catalog> = Arc::downgrade(self);
        let key = resolved.key.clone();
        let weak_slot = Arc::downgrade(&slot);
        let hub = Hub::spawn(
            resolved.key.clone(),
            target,
            described,
            self.store.clone(),
            self.hub_settings,
            Box::new(move || {
                if let (Some(catalog), Some(slot)) = (weak.upgrade(), weak_slot.upgrade()) {
                    catalog.forget_closed(&key, &slot);
                }
            }),
        );
        *current = Some(Arc::clone(&hub));
        Ok(hub)
    }

    fn slot(&self, key: &str) -> Slot {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        Arc::clone(slots.entry(key.to_owned()).or_default())
    }

    /// Drops the slot of a key that has no hub (a failed DESCRIBE), so that
    /// requests for endless made-up paths do not grow the table.
    fn forget(&self, key: &str, slot: &Slot) {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        if slots.get(key).is_some_and(|s| Arc::ptr_eq(s, slot)) && Arc::strong_count(slot) <= 2 {
            slots.remove(key);
        }
    }

    /// Called when a hub ends: forget its slot unless another hub took it.
    fn forget_closed(&self, key: &str, slot: &Slot) {
        let Ok(current) = slot.try_lock() else {
            return; // someone is creating the next hub for this key right now
        };
        if current.as_ref().is_some_and(|h| h.is_closed()) {
            drop(current);
            self.forget(key, slot);
        }
    }

    fn target(&self, resolved: &Resolved) -> OriginTarget {
        OriginTarget {
            url: resolved.origin_url.clone(),
            username: resolved.mount.username.clone(),
            password: resolved.mount.password.clone(),
            transport: match resolved.mount.transport {
                MountTransport::Auto => TransportPref::Auto,
                MountTransport::Udp => TransportPref::Udp,
                MountTransport::Tcp => TransportPref::Tcp,
            },
            connect_timeout: self.timing.connect_timeout,
            udp_fallback: self.timing.udp_fallback,
        }
    }
}
