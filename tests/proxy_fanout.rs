//! Live fan-out through the proxy, real peers on loopback: many players of
//! one live URL share one origin session, which ends a linger after the last
//! player leaves; a player joining late starts at the current keyframe.

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;

use support::*;

/// RTP clock of H.264 video.
const VIDEO_CLOCK: u32 = 90_000;
/// The test origin's live GOP: a keyframe every 25 frames at 25 fps.
const GOP_TICKS: u32 = VIDEO_CLOCK;
const FRAME_TICKS: u32 = VIDEO_CLOCK / 25;

fn live_proxy(origin: &Origin) -> (Proxy, tempfile::TempDir) {
    let cache = temp_dir();
    let mounts = [Mount::new("/cam", &origin.url("/live"))];
    let proxy = Proxy::start(&Proxy::config(cache.path(), &mounts));
    (proxy, cache)
}

/// Five players on one live URL at the same time (TCP and UDP toward the
/// players) → exactly one origin session; once they have all left, the
/// proxy tears that session down after the linger.
#[test]
fn five_players_share_one_origin_session_torn_down_after_linger() {
    let origin = Origin::start(OriginOpts::new());
    let (proxy, _cache) = live_proxy(&origin);
    let url = proxy.url("/cam");

    let pulls: Vec<Pull> = thread::scope(|s| {
        let players: Vec<_> = (0..5)
            .map(|i| {
                let url = &url;
                let transport = if i % 2 == 0 { "tcp" } else { "udp" };
                s.spawn(move || ffmpeg_pull(url, transport, 4))
            })
            .collect();
        players.into_iter().map(|p| p.join().unwrap()).collect()
    });
    for pull in &pulls {
        assert!(pull.output.success(), "{pull:?}");
        assert!(pull.video_kb > 100 && pull.audio_kb > 0, "{pull:?}");
    }
    assert_eq!(origin.sessions(), 1, "{:?}", origin.lines());
    assert_eq!(origin.requests("PLAY").len(), 1);
    assert_eq!(proxy.logs().matches("playing from the origin").count(), 5);

    // Linger (2 s in the test config), then TEARDOWN at the origin.
    assert!(
        proxy.wait_log(
            "no players left: closing origin session",
            Duration::from_secs(15)
        ),
        "{}",
        proxy.logs()
    );
    assert_eq!(
        origin.wait_count("ORIGIN session-removed", 1, Duration::from_secs(10)),
        1
    );
    assert_eq!(origin.requests("TEARDOWN").len(), 1);
}

/// A player joining a live stream that has run for a few seconds gets, as
/// its very first video packet, the start of a keyframe (its parameter sets
/// or IDR) from the current GOP — at most one GOP behind what the players
/// already there receive at that moment — and ffprobe's first decoded video
/// frame is a key frame. All on the one origin session.
#[test]
fn late_joiner_starts_at_the_current_keyframe() {
    let origin = Origin::start(OriginOpts::new());
    let (proxy, _cache) = live_proxy(&origin);
    let url = proxy.url("/cam");

    // A first player keeps the stream running and tracks the newest video
    // RTP timestamp it has received (the proxy relays timestamps untouched).
    let latest = Arc::new(AtomicU64::new(u64::MAX));
    let stop = Arc::new(AtomicBool::new(false));
    let (ran_3s_tx, ran_3s) = mpsc::channel();
    let mut first = RtspConn::connect(proxy.port());
    first.play(&url, None);
    let holder = {
        let (latest, stop) = (Arc::clone(&latest), Arc::clone(&stop));
        thread::spawn(move || {
            let mut start = None;
            while !stop.load(Ordering::Relaxed) {
                let Ok((channel, data)) = first.read_interleaved() else {
                    break;
                };
                let Some(rtp) = Rtp::parse(&data).filter(|_| channel == 0) else {
                    continue;
                };
                latest.store(u64::from(rtp.timestamp), Ordering::Relaxed);
                let start = *start.get_or_insert(rtp.timestamp);
                if rtp.timestamp.wrapping_sub(start) >= 3 * VIDEO_CLOCK {
                    let _ = ran_3s_tx.send(());
                }
            }
            first
        })
    };
    ran_3s
        .recv_timeout(Duration::from_secs(20))
        .expect("the first player received 3 s of video");

    // The late joiner, with the raw client: its first video packet.
    let mut joiner = RtspConn::connect(proxy.port());
    joiner.play(&url, None);
    let live_edge = latest.load(Ordering::Relaxed) as u32;
    let first_video = loop {
        let (channel, data) = joiner.read_interleaved().expect("media for the joiner");
        if channel == 0 {
            if let Some(rtp) = Rtp::parse(&data) {
                break (
                    rtp.h264_nal_type(),
                    rtp.starts_h264_keyframe(),
                    rtp.timestamp,
                );
            }
        }
    };
    let (nal, keyframe, ts) = first_video;
    assert!(keyframe, "first video packet starts NAL type {nal:?}");
    let behind = live_edge.wrapping_sub(ts) as i32;
    assert!(
        behind <= (GOP_TICKS + 2 * FRAME_TICKS) as i32,
        "the joiner started {behind} ticks (> one GOP) behind the live edge"
    );

    // A real player joining late: its first decoded video frame is a key frame.
    let (frames, out) = ffprobe_frames(&url, "tcp", 2);
    let first_frame = frames.iter().find(|f| f.media_type == "video");
    assert!(
        first_frame.is_some_and(|f| f.key_frame),
        "first video frame {first_frame:?}; {out:?}"
    );

    stop.store(true, Ordering::Relaxed);
    drop(joiner);
    drop(holder.join().unwrap());
    assert_eq!(origin.sessions(), 1, "{:?}", origin.lines());
}
