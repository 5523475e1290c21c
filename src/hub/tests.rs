//! The hub's claim and close rules, driven by hand and through its task.

use super::*;

const LINGER_0: Duration = Duration::ZERO;
const GRACE: Duration = Duration::from_secs(60);

/// A live title with no tracks, as its origin would describe it.
fn live_title() -> Described {
    let sdp_text = "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n".to_string();
    Described {
        sdp: streamcache_rtsp::sdp::Sdp::parse(&sdp_text).expect("SDP"),
        sdp_text,
        base_url: "rtsp://origin/live".parse().expect("URL"),
        tracks: Vec::new(),
        cache_headers: Default::default(),
        range: None,
    }
}

fn settings(linger: Duration) -> HubSettings {
    HubSettings {
        queue_packets: 16,
        linger,
        reconnect_attempts: 0,
        gop_max_bytes: 1 << 20,
        setup_grace: GRACE,
    }
}

/// A live hub without its task, to drive its state by hand; claimed by
/// nobody.
fn bare_hub() -> Arc<Hub> {
    let (hub, _, _) = Hub::new(
        "rtsp://origin/live".into(),
        live_title(),
        None,
        settings(LINGER_0),
    );
    hub.lock().claimed_at = None;
    hub
}

/// The hub a DESCRIBE created (and a SETUP claimed again) for a player
/// that never comes back to PLAY closes once the grace has passed,
/// without ever having asked the origin for a session.
#[tokio::test(start_paused = true)]
async fn a_hub_whose_player_never_plays_closes_after_the_grace() {
    let dir = tempfile::tempdir().unwrap();
    let config = streamcache_cache::StoreConfig {
        budget_bytes: 1 << 30,
        segment_max_bytes: 1 << 20,
        segment_max_duration_ns: 0,
    };
    let (store, _) = Store::open(dir.path(), config).unwrap();
    let target = OriginTarget {
        url: "rtsp://127.0.0.1:9/live".parse().unwrap(),
        username: None,
        password: None,
        transport: crate::origin::TransportPref::Tcp,
        connect_timeout: Duration::from_secs(1),
        udp_fallback: Duration::from_secs(1),
    };
    let metrics = crate::metrics::Metrics::new();
    let (closed, on_close) = oneshot::channel();
    let grace = Duration::from_secs(30);
    let created = Instant::now();
    let hub = Hub::spawn(
        "rtsp://127.0.0.1:9/live".into(),
        HubOrigin {
            target,
            counters: metrics.origin("/m"),
        },
        live_title(),
        None,
        store,
        HubSettings {
            setup_grace: grace,
            ..settings(LINGER_0)
        },
        Box::new(move || {
            let _ = closed.send(());
        }),
    );
    assert!(hub.claim(), "handed to the player's SETUP");
    on_close.await.expect("the hub closes after the grace");
    assert!(
        Instant::now() >= created + grace,
        "not before the grace has passed"
    );
    assert!(!hub.claim(), "a closed hub is handed to nobody");
    assert_eq!(
        metrics
            .sample("streamcache_origin_failures_total{mount=\"/m\",reason=\"connect_refused\"}"),
        None,
        "the origin was never asked"
    );
}

#[test]
fn an_idle_hub_past_its_deadline_closes() {
    let hub = bare_hub();
    let long_ago = Instant::now() - Duration::from_secs(1);
    assert_eq!(hub.close_if_idle(long_ago, &settings(LINGER_0)), None);
    assert!(!hub.claim(), "a closed hub is handed to nobody");
}

#[test]
fn a_player_attaching_as_the_deadline_passes_keeps_the_hub_open() {
    // The task saw no player, then a player attached (PLAY) before the
    // task took the lock to close: the hub must stay open for it.
    let hub = bare_hub();
    let idle_since = Instant::now() - Duration::from_secs(1);
    let sub = hub.subscribe().expect("the hub is open");
    assert!(hub.close_if_idle(idle_since, &settings(LINGER_0)).is_some());
    assert!(!hub.lock().closed);
    drop(sub);
    assert_eq!(hub.close_if_idle(idle_since, &settings(LINGER_0)), None);
}
