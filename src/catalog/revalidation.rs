//! Stale titles: one conditional DESCRIBE per key at a time, and what its
//! answer does to the stored title (validated again, replaced, dropped).

use super::*;

impl Catalog {
    /// Revalidates a stale title under its key's lock, so that players
    /// arriving together send one conditional DESCRIBE.
    pub(super) async fn revalidate(
        self: &Arc<Self>,
        resolved: &Resolved,
    ) -> (LookupOutcome, Lookup) {
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
    pub(super) fn discard(&self, key: &str) {
        match self.store.purge(key, false) {
            Ok(()) => info!(
                key,
                "title marked private or no-store by the origin: purged"
            ),
            Err(e) => debug!(key, error = %e, "uncacheable title not purged"),
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
