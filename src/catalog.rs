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

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime};

use streamcache_cache::CacheError;
use streamcache_cache::{Metadata, PresentationState, Store};
use streamcache_types::{Npt, NptSpan};
use tokio::sync::Mutex as AsyncMutex;
use tracing::{debug, info, warn};

use crate::config::MountTransport;
use crate::freshness::{self, Freshness};
use crate::hub::{Hub, HubOrigin, HubSettings};
use crate::metrics::{LookupOutcome, Metrics, RevalidationResult};
use crate::mounts::{OriginTiming, Resolved};
use crate::origin::{
    self, CacheHeaders, Described, OriginError, OriginTarget, Revalidation, Stored, TransportPref,
};

type Slot = Arc<AsyncMutex<Option<Arc<Hub>>>>;

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
        })
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Whether the store may serve a title, revalidating it at the origin if
    /// it is stale. With `only_if_cached` the origin is never contacted: a
    /// stale title is then a miss.
    /// Each lookup is counted once in `streamcache_cache_lookups_total`.
    pub async fn lookup(self: &Arc<Self>, resolved: &Resolved, only_if_cached: bool) -> Lookup {
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
        if metadata.state != PresentationState::Complete {
            return None;
        }
        let freshness = freshness::assess(
            &metadata.cache_headers,
            metadata.validated_at_unix_ms.map(freshness::from_unix_ms),
            SystemTime::now(),
            self.default_fresh,
        );
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

    /// Revalidates a stale title under its key's lock, so that players
    /// arriving together send one conditional DESCRIBE.
    async fn revalidate(self: &Arc<Self>, resolved: &Resolved) -> (LookupOutcome, Lookup) {
        let key = &resolved.key;
        let slot = self.slot(key);
        let current = slot.lock().await;
        // Another player may have revalidated (or replaced) it meanwhile.
        let lookup = match self.stored(key) {
            None => (self.not_held(key), Lookup::Miss(None)),
            Some((title, Freshness::Fresh)) => (LookupOutcome::Hit, Lookup::Hit(title)),
            Some((_, Freshness::NotStorable)) => {
                self.discard(key);
                (LookupOutcome::Miss, Lookup::Miss(None))
            }
            Some((title, Freshness::Stale { strict })) => {
                self.ask_origin(resolved, title, strict).await
            }
        };
        if current.is_none() {
            drop(current);
            self.forget(key, &slot);
        }
        lookup
    }

    async fn ask_origin(
        &self,
        resolved: &Resolved,
        title: Arc<CachedTitle>,
        strict: bool,
    ) -> (LookupOutcome, Lookup) {
        let key = &resolved.key;
        let stored = Stored {
            cache_headers: &title.metadata.cache_headers,
            sdp_text: &title.metadata.sdp,
        };
        let counters = self.metrics.origin(&resolved.mount.path);
        let asked = Instant::now();
        let answer = origin::revalidate(&self.target(resolved), stored).await;
        match &answer {
            Ok(_) => counters.described_in(asked.elapsed()),
            Err(e) => counters.failed(e),
        }
        let (result, outcome, lookup) = match answer {
            Ok(Revalidation::NotModified(headers)) => {
                info!(key = %key, "stored title still current");
                let title = self.mark_validated(&title, &headers).await;
                (
                    RevalidationResult::NotModified,
                    LookupOutcome::Revalidated,
                    Lookup::Hit(title),
                )
            }
            Ok(Revalidation::Changed(described)) => {
                info!(key = %key, "title changed at the origin: fetching it again");
                self.replace(key);
                (
                    RevalidationResult::Changed,
                    LookupOutcome::Miss,
                    Lookup::Miss(Some(described)),
                )
            }
            Err(OriginError::Status { status, .. }) if (400..500).contains(&status) => {
                // Gone or refused: the origin's answer is the player's.
                info!(key = %key, status, "origin refuses the stored title: dropping it");
                self.replace(key);
                (
                    RevalidationResult::Refused,
                    LookupOutcome::Miss,
                    Lookup::Miss(None),
                )
            }
            Err(e) if strict => {
                warn!(key = %key, error = %e, "cannot revalidate a title that must be: 504");
                (
                    RevalidationResult::Failed,
                    LookupOutcome::Unavailable,
                    Lookup::Unavailable,
                )
            }
            Err(e) => {
                warn!(key = %key, error = %e, "cannot revalidate: serving the stale copy");
                (
                    RevalidationResult::Failed,
                    LookupOutcome::Stale,
                    Lookup::Hit(title),
                )
            }
        };
        self.metrics.revalidation(result);
        (outcome, lookup)
    }

    /// Stores the new cache headers and validation time of a title the
    /// origin confirmed, and returns the title with them.
    async fn mark_validated(
        &self,
        title: &CachedTitle,
        headers: &CacheHeaders,
    ) -> Arc<CachedTitle> {
        let mut metadata = title.metadata.clone();
        metadata.cache_headers = headers.clone();
        metadata.validated_at_unix_ms = freshness::unix_ms(SystemTime::now());
        let store = self.store.clone();
        let saved = metadata.clone();
        // A metadata update is a file replacement with fsync: off the runtime.
        let saved = match tokio::task::spawn_blocking(move || save_metadata(&store, saved)).await {
            Ok(result) => result.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = saved {
            warn!(key = %metadata.key, error = %e, "validation time not stored");
        }
        Arc::new(CachedTitle {
            store: self.store.clone(),
            metadata,
        })
    }

    /// Removes a stored title that must be fetched again; one somebody is
    /// playing stays until they are done.
    fn replace(&self, key: &str) {
        match self.store.purge(key, false) {
            Ok(()) => info!(key, "old recording purged"),
            Err(CacheError::NotFound { .. }) => {}
            Err(e) => warn!(key, error = %e, "old recording kept"),
        }
    }

    /// Removes a title the origin forbids storing, unless it is in use.
    fn discard(&self, key: &str) {
        match self.store.purge(key, false) {
            Ok(()) => info!(
                key,
                "title marked private or no-store by the origin: purged"
            ),
            Err(e) => debug!(key, error = %e, "uncacheable title not purged"),
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

/// Replaces a title's stored metadata with `metadata` (same state, spans
/// kept): a recording run that appends nothing.
fn save_metadata(store: &Store, metadata: Metadata) -> Result<(), CacheError> {
    let (key, state) = (metadata.key.clone(), metadata.state);
    let writer = store.open_writer(&key, metadata)?;
    writer.finish(state)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use streamcache_cache::StoreConfig;

    use super::*;
    use crate::mounts::Mount;
    use crate::origin::fake::{FakeOrigin, Script};

    struct Setup {
        _dir: tempfile::TempDir,
        store: Store,
        catalog: Arc<Catalog>,
        origin: FakeOrigin,
        resolved: Resolved,
        metrics: Arc<Metrics>,
    }

    impl Setup {
        /// `streamcache_cache_lookups_total{outcome}` so far.
        fn lookups(&self, outcome: &str) -> Option<f64> {
            self.metrics.sample(&format!(
                "streamcache_cache_lookups_total{{outcome=\"{outcome}\"}}"
            ))
        }

        /// `streamcache_cache_revalidations_total{result}` so far.
        fn revalidations(&self, result: &str) -> Option<f64> {
            self.metrics.sample(&format!(
                "streamcache_cache_revalidations_total{{result=\"{result}\"}}"
            ))
        }
    }

    /// A catalog whose store holds the fake origin's title, complete, with
    /// `cache_control` and the fake's validators, validated `age` ago.
    async fn setup(script: Script, cache_control: &str, age: Duration) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let cfg = StoreConfig {
            budget_bytes: 1 << 30,
            segment_max_bytes: 1 << 20,
            segment_max_duration_ns: 0,
        };
        let (store, _) = Store::open(dir.path(), cfg).unwrap();
        let origin = FakeOrigin::start(script).await;
        let url = origin.url();
        let resolved = Resolved {
            mount: Mount {
                path: "/".into(),
                origin: url.clone(),
                transport: MountTransport::Tcp,
                username: None,
                password: None,
                player_auth: None,
            },
            presentation_path: "/test".into(),
            key: url.to_string(),
            origin_url: url,
            track: None,
        };
        let meta = Metadata {
            key: resolved.key.clone(),
            sdp: crate::origin::fake::SDP.into(),
            cache_headers: CacheHeaders {
                last_modified: Some("Tue, 06 Feb 2024 10:00:00 GMT".into()),
                etag: Some("\"abc\"".into()),
                cache_control: Some(cache_control.into()),
                expires: None,
            },
            validated_at_unix_ms: freshness::unix_ms(SystemTime::now() - age),
            ..Metadata::default()
        };
        let writer = store.open_writer(&resolved.key, meta).unwrap();
        writer.finish(PresentationState::Complete).unwrap();
        let timing = OriginTiming {
            connect_timeout: Duration::from_secs(2),
            udp_fallback: Duration::from_millis(300),
            linger: Duration::from_secs(1),
            reconnect_attempts: 0,
        };
        let settings = HubSettings {
            queue_packets: 64,
            linger: timing.linger,
            reconnect_attempts: 0,
            gop_max_bytes: 1 << 20,
            setup_grace: Duration::from_secs(60),
        };
        let metrics = Arc::new(Metrics::new());
        let catalog = Catalog::new(
            store.clone(),
            timing,
            settings,
            Duration::from_secs(3600),
            Arc::clone(&metrics),
        );
        Setup {
            _dir: dir,
            store,
            catalog,
            origin,
            resolved,
            metrics,
        }
    }

    const STALE: Duration = Duration::from_secs(120);

    #[tokio::test]
    async fn a_fresh_title_is_served_without_the_origin() {
        let s = setup(Script::default(), "max-age=600", STALE).await;
        assert!(matches!(
            s.catalog.lookup(&s.resolved, false).await,
            Lookup::Hit(_)
        ));
        assert!(s.origin.log().is_empty());
        assert_eq!(s.lookups("hit"), Some(1.0));
        assert_eq!(s.lookups("miss"), None);
    }

    #[tokio::test]
    async fn a_stale_title_is_revalidated_once_then_fresh_again() {
        let s = setup(Script::default(), "max-age=60", STALE).await;
        let Lookup::Hit(title) = s.catalog.lookup(&s.resolved, false).await else {
            panic!("not served from the store");
        };
        assert_eq!(
            s.origin.log(),
            ["DESCRIBE if-modified-since=Tue, 06 Feb 2024 10:00:00 GMT"]
        );
        let stored = s.store.metadata(&s.resolved.key).unwrap().unwrap();
        assert_eq!(stored, title.metadata);
        assert_eq!(stored.state, PresentationState::Complete);
        let validated = freshness::from_unix_ms(stored.validated_at_unix_ms.unwrap());
        assert!(validated.elapsed().unwrap_or_default() < Duration::from_secs(10));
        // Fresh again (from the stored validation time): no second DESCRIBE.
        assert!(matches!(
            s.catalog.lookup(&s.resolved, false).await,
            Lookup::Hit(_)
        ));
        assert_eq!(s.origin.count("DESCRIBE"), 1);
        assert_eq!(s.lookups("revalidated"), Some(1.0));
        assert_eq!(s.lookups("hit"), Some(1.0));
        assert_eq!(s.revalidations("not_modified"), Some(1.0));
    }

    #[tokio::test]
    async fn a_changed_title_is_purged_and_its_new_description_handed_over() {
        let script = Script {
            cache_headers: "Last-Modified: Wed, 07 Feb 2024 10:00:00 GMT\r\n",
            ..Script::default()
        };
        let s = setup(script, "max-age=60", STALE).await;
        let Lookup::Miss(Some(described)) = s.catalog.lookup(&s.resolved, false).await else {
            panic!("not a miss with the new description");
        };
        assert_eq!(
            described.cache_headers.last_modified.as_deref(),
            Some("Wed, 07 Feb 2024 10:00:00 GMT")
        );
        assert!(s.store.metadata(&s.resolved.key).unwrap().is_none());
        assert_eq!(s.lookups("miss"), Some(1.0));
        assert_eq!(s.revalidations("changed"), Some(1.0));
    }

    #[tokio::test]
    async fn a_changed_title_being_played_stays() {
        let script = Script {
            cache_headers: "Last-Modified: Wed, 07 Feb 2024 10:00:00 GMT\r\n",
            ..Script::default()
        };
        let s = setup(script, "max-age=60", STALE).await;
        let _player = s.store.open_reader(&s.resolved.key).unwrap().unwrap();
        assert!(matches!(
            s.catalog.lookup(&s.resolved, false).await,
            Lookup::Miss(Some(_))
        ));
        assert!(s.store.metadata(&s.resolved.key).unwrap().is_some());
    }

    #[tokio::test]
    async fn unreachable_origin_serves_stale_unless_revalidation_is_required() {
        let mute = Script {
            mute: true,
            ..Script::default()
        };
        let s = setup(mute.clone(), "max-age=60", STALE).await;
        assert!(matches!(
            s.catalog.lookup(&s.resolved, false).await,
            Lookup::Hit(_)
        ));
        assert_eq!(s.lookups("stale"), Some(1.0));
        assert_eq!(s.revalidations("failed"), Some(1.0));
        for strict in [
            "max-age=60, must-revalidate",
            "proxy-revalidate, max-age=60",
            "no-cache",
        ] {
            let s = setup(mute.clone(), strict, STALE).await;
            assert!(
                matches!(
                    s.catalog.lookup(&s.resolved, false).await,
                    Lookup::Unavailable
                ),
                "{strict}"
            );
            assert_eq!(s.lookups("unavailable"), Some(1.0), "{strict}");
        }
    }

    #[tokio::test]
    async fn a_partly_held_vod_title_counts_as_partial_a_live_recording_as_a_miss() {
        let s = setup(Script::default(), "max-age=600", Duration::ZERO).await;
        let mut meta = s.store.metadata(&s.resolved.key).unwrap().unwrap();
        for (end, outcome) in [(Some(Npt::from_secs(10)), "partial"), (None, "miss")] {
            meta.range = Some(streamcache_cache::NptRange {
                start: Npt::ZERO,
                end,
            });
            let writer = s.store.open_writer(&s.resolved.key, meta.clone()).unwrap();
            writer.finish(PresentationState::Partial).unwrap();
            assert!(matches!(
                s.catalog.lookup(&s.resolved, false).await,
                Lookup::Miss(None)
            ));
            assert_eq!(s.lookups(outcome), Some(1.0), "{outcome}");
        }
        assert!(s.origin.log().is_empty());
    }

    #[tokio::test]
    async fn only_if_cached_never_asks_the_origin() {
        let s = setup(Script::default(), "max-age=60", STALE).await;
        assert!(matches!(
            s.catalog.lookup(&s.resolved, true).await,
            Lookup::Miss(None)
        ));
        assert!(s.origin.log().is_empty());
        assert!(s.store.metadata(&s.resolved.key).unwrap().is_some());
    }

    #[tokio::test]
    async fn a_private_title_is_never_served_from_the_store() {
        for cc in ["private", "no-store, max-age=600"] {
            let s = setup(Script::default(), cc, Duration::ZERO).await;
            assert!(matches!(
                s.catalog.lookup(&s.resolved, false).await,
                Lookup::Miss(None)
            ));
            assert!(s.origin.log().is_empty());
            assert!(s.store.metadata(&s.resolved.key).unwrap().is_none(), "{cc}");
        }
    }
}
