//! On-demand HLS of stored titles: plans and segments, built on demand in a
//! blocking task and kept in small memory caches (moka: bounded, least
//! recently used out first, concurrent; nothing here needs the store's
//! deterministic eviction).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::StatusCode;
use moka::sync::Cache;
use streamcache_cache::Store;
use tracing::{debug, info};

use super::title::{Dropped, Plan};
use super::Refusal;

/// A plan is looked at again after this long, so a title re-recorded or
/// grown is cut again (its fingerprint then names new segments).
const PLAN_TTL: Duration = Duration::from_secs(30);
/// Plans kept (a plan is the title's init segment and its segment times).
const PLANS: u64 = 256;

pub struct Vod {
    plans: Cache<String, Arc<Plan>>,
    /// Built segments by (title fingerprint, number), weighed in bytes.
    segments: Cache<(u64, usize), Bytes>,
}

impl Vod {
    pub fn new(segment_cache_bytes: u64) -> Vod {
        Vod {
            plans: Cache::builder()
                .max_capacity(PLANS)
                .time_to_live(PLAN_TTL)
                .build(),
            segments: Cache::builder()
                .max_capacity(segment_cache_bytes)
                .weigher(|_, data: &Bytes| u32::try_from(data.len()).unwrap_or(u32::MAX))
                .build(),
        }
    }

    /// The plan of the stored title `key`.
    pub async fn plan(&self, store: &Store, key: &str) -> Result<Arc<Plan>, Refusal> {
        if let Some(plan) = self.plans.get(key) {
            return Ok(plan);
        }
        let (store2, key2) = (store.clone(), key.to_owned());
        let (plan, zero, dropped) = blocking(move || Plan::open(&store2, &key2)).await?;
        note_dropped(key, 0, dropped);
        let plan = Arc::new(plan);
        self.segments.insert((plan.fingerprint, 0), zero);
        self.plans.insert(key.to_owned(), Arc::clone(&plan));
        info!(
            key,
            segments = plan.segments.len(),
            "HLS: title cut into segments"
        );
        Ok(plan)
    }

    /// Segment `n` of `plan`, from the cache or built now.
    pub async fn segment(
        &self,
        store: &Store,
        plan: Arc<Plan>,
        n: usize,
    ) -> Result<Bytes, Refusal> {
        let id = (plan.fingerprint, n);
        if let Some(data) = self.segments.get(&id) {
            return Ok(data);
        }
        let store = store.clone();
        let built = Arc::clone(&plan);
        let (data, dropped) = blocking(move || built.segment(&store, n)).await?;
        note_dropped(&plan.key, n, dropped);
        self.segments.insert(id, data.clone());
        Ok(data)
    }
}

/// Runs store reading and muxing off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, Refusal> + Send + 'static,
) -> Result<T, Refusal> {
    tokio::task::spawn_blocking(work).await.map_err(|e| {
        Refusal::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("segment builder failed: {e}"),
        )
    })?
}

/// Malformed stored packets cost their frame, never the segment: said once
/// per segment built.
fn note_dropped(key: &str, n: usize, dropped: Dropped) {
    if dropped != Dropped::default() {
        info!(
            key,
            segment = n,
            malformed_packets = dropped.malformed_packets,
            dropped_frames = dropped.dropped_frames,
            "HLS: frames dropped from a segment"
        );
    } else {
        debug!(key, segment = n, "HLS segment built");
    }
}
