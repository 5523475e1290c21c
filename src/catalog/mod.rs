//! The catalog: from a resolved player URL to the store or the hub that
//! serves it.
//!
//! Presentations are keyed by their normalised origin URL ([`crate::mounts`]).
//! A key has at most one joinable hub; the first player to ask for a key
//! describes it at the origin and creates the hub, and players asking at the
//! same time wait for that one DESCRIBE instead of sending their own (each key
//! has its own async lock, so a slow origin delays only its own players).
//!
//! A title the store holds completely is served from it while the origin's
//! cache rules ([`crate::freshness`]) say it is fresh. A stale one is first
//! revalidated by a conditional DESCRIBE (one per key at a time, under the
//! key's lock): unchanged, it is served from the store and its validation
//! time stored; changed, the old recording is purged (unless somebody is
//! playing it) and the title is fetched again through a hub. When the origin
//! cannot be reached, a stale title is served anyway unless its rules demand
//! revalidation (`no-cache`, `must-revalidate`, `proxy-revalidate`): then the
//! player gets 504.
//!
//! A title a node-to-node copy is writing ([`CopyingKeys`]) is a hit
//! whatever its state and freshness: it plays from the store as the copy
//! arrives, the cursor waiting at the copy's writer for more.

mod copying;
mod revalidation;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use streamcache_cache::CacheError;
use streamcache_cache::{Metadata, PresentationState, Store};
use streamcache_types::{Npt, NptSpan};
use tokio::sync::Mutex as AsyncMutex;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::config::MountTransport;
use crate::freshness::{self, Freshness};
use crate::hub::{Hub, HubOrigin, HubSettings};
use crate::metrics::{LookupOutcome, Metrics, RevalidationResult};
use crate::mounts::{OriginTiming, Resolved};
pub use copying::CopyingKeys;

use crate::origin::{
    self, CacheHeaders, Described, OriginError, OriginTarget, Revalidation, Stored, TransportPref,
};

type Slot = Arc<AsyncMutex<Option<Arc<Hub>>>>;

/// How long a lookup waits for a copy that has just started to store the
/// title's description (one request to its source).
const COPY_SETTLE: Duration = Duration::from_secs(5);

/// A presentation the store holds completely: it plays without the origin.
pub struct CachedTitle {
    pub store: Store,
    pub metadata: Metadata,
}

/// Where a player's title comes from, as far as the store is concerned.
pub enum Lookup {
    /// Serve it from the store.
    Hit(Arc<CachedTitle>),
    /// Go to the origin. A revalidation that found the title changed hands
    /// over the new description, so that it is not asked for twice.
    Miss(Option<Box<Described>>),
    /// Stored but stale, its rules forbid serving it unvalidated, and the
    /// origin cannot be reached: 504.
    Unavailable,
}

pub struct Catalog {
    store: Store,
    timing: OriginTiming,
    hub_settings: HubSettings,
    /// Freshness lifetime of titles whose origin sent no cache headers.
    default_fresh: Duration,
    slots: Mutex<HashMap<String, Slot>>,
    metrics: Arc<Metrics>,
    copying: CopyingKeys,
}

impl Catalog {
    pub fn new(
        store: Store,
        timing: OriginTiming,
        hub_settings: HubSettings,
        default_fresh: Duration,
        metrics: Arc<Metrics>,
    ) -> Arc<Catalog> {
        Arc::new(Catalog {
            store,
            timing,
            hub_settings,
            default_fresh,
            slots: Mutex::new(HashMap::new()),
            metrics,
            copying: CopyingKeys::default(),
        })
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The keys node-to-node copies are writing now.
    pub fn copying(&self) -> &CopyingKeys {
        &self.copying
    }

    /// Whether the store may serve a title, revalidating it at the origin if
    /// it is stale. With `only_if_cached` the origin is never contacted: a
    /// stale title is then a miss.
    /// Each lookup is counted once in `streamcache_cache_lookups_total`.
    pub async fn lookup(self: &Arc<Self>, resolved: &Resolved, only_if_cached: bool) -> Lookup {
        // A copy just ordered is asking its source for the title's
        // description: the store has it in a moment.
        self.copying
            .settle(&self.store, &resolved.key, COPY_SETTLE)
            .await;
        let (outcome, lookup) = match self.stored(&resolved.key) {
            None => (self.not_held(&resolved.key), Lookup::Miss(None)),
            Some((title, Freshness::Fresh)) => (LookupOutcome::Hit, Lookup::Hit(title)),
            Some((_, Freshness::NotStorable)) => {
                self.discard(&resolved.key);
                (LookupOutcome::Miss, Lookup::Miss(None))
            }
            Some((_, Freshness::Stale { .. })) if only_if_cached => {
                (LookupOutcome::Miss, Lookup::Miss(None))
            }
            Some((_, Freshness::Stale { .. })) => self.revalidate(resolved).await,
        };
        self.metrics.lookup(outcome);
        lookup
    }

    /// The complete stored title of a key and what the cache rules say
    /// about it now.
    fn stored(&self, key: &str) -> Option<(Arc<CachedTitle>, Freshness)> {
        let metadata = match self.store.metadata(key) {
            Ok(Some(metadata)) => metadata,
            Ok(None) => return None,
            Err(e) => {
                warn!(key, error = %e, "cache entry unreadable: going to the origin");
                return None;
            }
        };
        // A copy in progress is the cluster's own fresh copy, not a title
        // to fetch or revalidate at the origin.
        let copying = self.copying.contains(key);
        if metadata.state != PresentationState::Complete && !copying {
            return None;
        }
        let freshness = if copying {
            Freshness::Fresh
        } else {
            freshness::assess(
                &metadata.cache_headers,
                metadata.validated_at_unix_ms.map(freshness::from_unix_ms),
                SystemTime::now(),
                self.default_fresh,
            )
        };
        let title = Arc::new(CachedTitle {
            store: self.store.clone(),
            metadata,
        });
        Some((title, freshness))
    }

    /// How a lookup of a title the store does not hold completely counts:
    /// `Partial` when it holds part of an on-demand title (its range has an
    /// end; a live recording is never replayed as live).
    fn not_held(&self, key: &str) -> LookupOutcome {
        match self.store.metadata(key) {
            Ok(Some(meta)) if meta.range.is_some_and(|r| r.end.is_some()) => LookupOutcome::Partial,
            _ => LookupOutcome::Miss,
        }
    }

    /// The hub for a presentation: a joinable one if it exists, otherwise a
    /// new one, described by `described` (fetched by a revalidation just
    /// now) or else by a DESCRIBE at the origin. For a SETUP (`claim`) the
    /// hub waits for the player's PLAY (see `Hub::claim`); a new hub always
    /// does.
    pub async fn hub(
        self: &Arc<Self>,
        resolved: &Resolved,
        described: Option<Box<Described>>,
        claim: bool,
    ) -> Result<Arc<Hub>, OriginError> {
        let slot = self.slot(&resolved.key);
        let mut current = slot.lock().await;
        let joined = |h: &&Arc<Hub>| if claim { h.claim() } else { h.joinable() };
        if let Some(hub) = current.as_ref().filter(joined) {
            return Ok(Arc::clone(hub));
        }
        let target = self.target(resolved);
        let counters = self.metrics.origin(&resolved.mount.path);
        let described = match described {
            Some(d) => Ok(*d),
            None => {
                let asked = Instant::now();
                let described = origin::describe(&target).await;
                if described.is_ok() {
                    counters.described_in(asked.elapsed());
                }
                described
            }
        };
        let described = match described {
            Ok(d) => d,
            Err(e) => {
                counters.failed(&e);
                if current.is_none() {
                    drop(current);
                    self.forget(&resolved.key, &slot);
                }
                return Err(e);
            }
        };
        info!(key = %resolved.key, tracks = described.tracks.len(), "presentation described");
        let start_npt = self.fill_start(&resolved.key, &described);
        let weak: Weak<Catalog> = Arc::downgrade(self);
        let key = resolved.key.clone();
        let weak_slot = Arc::downgrade(&slot);
        let hub = Hub::spawn(
            resolved.key.clone(),
            HubOrigin { target, counters },
            described,
            start_npt,
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

    /// Keys with a hub (or one being created) now.
    pub fn hub_keys(&self) -> Vec<String> {
        let slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots.keys().cloned().collect()
    }

    /// Ends the hub of a key (if any) and forgets it, so that the next
    /// player of the key gets a new one: after a purge, or when the mount
    /// that led to it was removed or changed by a reload.
    pub fn retire(&self, key: &str) {
        let slot = self
            .slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
        if let Some(slot) = slot {
            // The slot's lock is held while a hub is being created: wait for it.
            tokio::spawn(async move {
                if let Some(hub) = slot.lock().await.as_ref() {
                    hub.stop();
                }
            });
        }
    }

    /// Where an on-demand fill starts: after what the store already holds
    /// from the title's start (a partial fill), or at the start. A partial
    /// recording of a title that has changed since is dropped first.
    fn fill_start(&self, key: &str, described: &Described) -> Option<Npt> {
        let meta = self.store.metadata(key).ok().flatten()?;
        if meta.state == PresentationState::Recording {
            return None; // a fill is running elsewhere; its hub would be joinable
        }
        if !origin::same_sdp(&meta.sdp, &described.sdp_text) {
            match self.store.purge(key, false) {
                Ok(()) => info!(key, "partial recording of a changed title dropped"),
                Err(e) => debug!(key, error = %e, "partial recording of a changed title kept"),
            }
            return None;
        }
        let start = meta.range.map_or(Npt::ZERO, |r| r.start);
        let held_to = NptSpan::held_to(&meta.spans, start);
        if held_to <= start {
            return None;
        }
        info!(
            key,
            held_secs = held_to.as_secs_f64(),
            "partial title: filling the rest from the origin"
        );
        Some(held_to)
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
