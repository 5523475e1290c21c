//! The catalog's lookups and revalidation against a fake origin.

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

#[tokio::test]
async fn a_title_being_copied_is_served_from_the_store_without_the_origin() {
    let s = setup(Script::default(), "max-age=60", STALE).await;
    let meta = s.store.metadata(&s.resolved.key).unwrap().unwrap();
    // A copy's writer is open: the title is recording, and stale.
    let writer = s.store.open_writer(&s.resolved.key, meta).unwrap();
    s.catalog.copying().started(&s.resolved.key);
    let Lookup::Hit(title) = s.catalog.lookup(&s.resolved, false).await else {
        panic!("a hit while the copy runs");
    };
    assert_eq!(title.metadata.state, PresentationState::Recording);
    assert!(
        s.origin.log().is_empty(),
        "no origin session, no revalidation"
    );
    writer.finish(PresentationState::Partial).unwrap();
    s.catalog.copying().ended(&s.resolved.key);
    assert!(matches!(
        s.catalog.lookup(&s.resolved, false).await,
        Lookup::Miss(None)
    ));
}

#[tokio::test]
async fn a_lookup_right_after_a_copy_started_waits_for_its_description() {
    let s = setup(Script::default(), "max-age=60", STALE).await;
    let meta = s.store.metadata(&s.resolved.key).unwrap().unwrap();
    s.store.purge(&s.resolved.key, false).unwrap();
    // The copy is ordered; its description arrives a little later.
    s.catalog.copying().started(&s.resolved.key);
    let (store, copying, key) = (
        s.store.clone(),
        s.catalog.copying().clone(),
        s.resolved.key.clone(),
    );
    let copy = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let writer = store.open_writer(&key, meta).unwrap();
        copying.touch();
        writer
    });
    assert!(matches!(
        s.catalog.lookup(&s.resolved, false).await,
        Lookup::Hit(_)
    ));
    assert!(s.origin.log().is_empty());
    drop(copy.await.unwrap());
}
