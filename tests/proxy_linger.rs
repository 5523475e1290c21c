//! `[origin] linger_secs = 0`, real peers on loopback: the origin session
//! closes as soon as the last player leaves, yet a player's own DESCRIBE →
//! SETUP → PLAY is never cut short. The hub a DESCRIBE creates has no player
//! until the PLAY; it must wait for it, whatever the linger.

mod support;

use std::thread;
use std::time::{Duration, Instant};

use support::*;

const VOD_SECS: u32 = 4;
const FRAME_RATE: u64 = 25;

/// An origin serving `/live` and `/vod`, and a proxy mounting it at `/o`
/// with `linger_secs = 0`.
fn rig() -> (Origin, Proxy, tempfile::TempDir) {
    let origin = Origin::start(OriginOpts::new().media(test_media(VOD_SECS)));
    let cache = temp_dir();
    let toml = Proxy::config(cache.path(), &[Mount::new("/o", &origin.url("/"))])
        .replace("linger_secs = 2", "linger_secs = 0");
    assert!(toml.contains("linger_secs = 0"), "{toml}");
    let proxy = Proxy::start(&toml);
    (origin, proxy, cache)
}

/// ffprobe's first play of an on-demand title (a cache miss) decodes every
/// frame, from one DESCRIBE and one origin session; the session closes once
/// ffprobe is done.
#[test]
fn vod_miss_plays_whole_with_linger_zero() {
    let (origin, proxy, _cache) = rig();
    let frames = ffprobe_count_frames(&proxy.url("/o/vod"), "tcp", None);
    assert_eq!(
        frames.video,
        u64::from(VOD_SECS) * FRAME_RATE,
        "{frames:?}\n{}",
        proxy.logs()
    );
    assert!(frames.audio > 0, "{frames:?}");
    // The player's SETUP and PLAY used the hub its DESCRIBE created.
    assert_eq!(origin.requests("DESCRIBE").len(), 1, "{:?}", origin.lines());
    assert_eq!(origin.sessions(), 1, "{:?}", origin.lines());
    assert_eq!(
        origin.wait_count("ORIGIN session-removed", 1, Duration::from_secs(15)),
        1,
        "{:?}",
        origin.lines()
    );
}

/// The same for a live title, the player on UDP: it plays, and once it has
/// left the origin session is torn down without a linger.
#[test]
fn live_plays_with_linger_zero_and_closes_when_the_player_leaves() {
    let (origin, proxy, _cache) = rig();
    let frames = ffprobe_count_frames(&proxy.url("/o/live"), "udp", Some(3));
    assert!(frames.video > 0, "{frames:?}\n{}", proxy.logs());
    assert_eq!(origin.requests("DESCRIBE").len(), 1, "{:?}", origin.lines());
    assert_eq!(origin.sessions(), 1, "{:?}", origin.lines());
    assert!(
        proxy.wait_log(
            "no players left: closing origin session",
            Duration::from_secs(15)
        ),
        "{}",
        proxy.logs()
    );
    assert_eq!(
        origin.wait_count("ORIGIN session-removed", 1, Duration::from_secs(15)),
        1,
        "{:?}",
        origin.lines()
    );
}

/// A hub waiting for its player's PLAY costs the origin nothing: a DESCRIBE
/// alone opens no origin session, and a player that DESCRIBEs, waits a
/// while (longer than the linger) and then plays still gets its title.
#[test]
fn a_described_title_waits_for_its_player_without_an_origin_session() {
    let (origin, proxy, _cache) = rig();
    let mut conn = RtspConn::connect(proxy.port());
    let url = proxy.url("/o/live");
    let describe = conn.request("DESCRIBE", &url, &[("Accept", "application/sdp")]);
    assert_eq!(describe.status(), 200, "{describe:?}");
    // Longer than the linger (0 s) and the log's own latency: a hub that
    // closed on the linger would be gone by now.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(origin.sessions(), 0, "{:?}", origin.lines());
    let (_session, play) = conn.play(&url, None);
    assert_eq!(play.status(), 200, "{play:?}");
    assert!(conn.read_interleaved().is_ok(), "no media after PLAY");
    // The first DESCRIBE's hub served both: one DESCRIBE at the origin.
    assert_eq!(origin.requests("DESCRIBE").len(), 1, "{:?}", origin.lines());
    assert_eq!(origin.sessions(), 1, "{:?}", origin.lines());
}

/// DESCRIBEs alone (a monitoring probe asking for the SDP every so often)
/// do not keep a live origin session open once its last player has left:
/// only a SETUP makes the hub wait for a player that has yet to PLAY.
#[test]
fn describes_alone_do_not_keep_the_origin_session_after_the_last_player() {
    let (origin, proxy, _cache) = rig();
    let url = proxy.url("/o/live");
    thread::scope(|s| {
        let player = s.spawn(|| ffprobe_count_frames(&url, "tcp", Some(3)));
        assert_eq!(
            origin.wait_count("ORIGIN new-session", 1, Duration::from_secs(20)),
            1,
            "{:?}",
            origin.lines()
        );
        // Probe while the player plays and after it has left, until the
        // origin session is torn down.
        let mut probe = RtspConn::connect(proxy.port());
        let deadline = Instant::now() + Duration::from_secs(30);
        while origin.count("ORIGIN session-removed") == 0 {
            let describe = probe.request("DESCRIBE", &url, &[("Accept", "application/sdp")]);
            assert_eq!(describe.status(), 200, "{describe:?}");
            assert!(
                Instant::now() < deadline,
                "the origin session outlived its player while only DESCRIBEs came\n{}",
                proxy.logs()
            );
            thread::sleep(Duration::from_millis(300));
        }
        let frames = player.join().unwrap();
        assert!(frames.video > 0, "{frames:?}");
    });
    assert_eq!(origin.sessions(), 1, "{:?}", origin.lines());
}
