//! Relay through the proxy, real peers on loopback: what players receive
//! through `streamcache serve` decodes exactly like a direct pull from the
//! origin, over UDP and TCP toward the player, and the transport toward the
//! origin follows the mount's `transport`.

mod support;

use std::thread;
use std::time::Duration;

use support::*;

const VOD_SECS: u32 = 6;
const FRAME_RATE: u64 = 25;

/// A proxy with the given mounts and a fresh cache directory (kept alive by
/// the returned guard).
fn start_proxy(mounts: &[Mount]) -> (Proxy, tempfile::TempDir) {
    let cache = temp_dir();
    let proxy = Proxy::start(&Proxy::config(cache.path(), mounts));
    (proxy, cache)
}

fn vod_origin(opts: OriginOpts) -> Origin {
    Origin::start(opts.media(test_media(VOD_SECS)))
}

/// The SETUP Transport lines the origin received.
fn origin_setup_transports(origin: &Origin) -> Vec<String> {
    origin
        .requests("SETUP")
        .into_iter()
        .map(|r| r.transport.unwrap_or_default())
        .collect()
}

/// The daemon's log line for a player of an on-demand title that is being
/// fetched: it plays the recording while the origin fills it.
const FILLING: &str = "playing the recording while the origin fills it";

/// Waits until `n` players of the proxy play the title being fetched, so
/// that the next pull joins that fetch rather than a complete cache entry.
fn staggered(proxy: &Proxy, n: usize) {
    assert!(
        proxy.wait_log_count(FILLING, n, Duration::from_secs(30)),
        "{}",
        proxy.logs()
    );
}

/// ffprobe through the proxy decodes every frame of the on-demand title,
/// with the player on TCP interleaved and on UDP.
#[test]
fn ffprobe_through_proxy_counts_every_vod_frame_over_tcp_and_udp() {
    let origin = vod_origin(OriginOpts::new());
    let (proxy, _cache) = start_proxy(&[Mount::new("/o", &origin.url("/"))]);
    let url = proxy.url("/o/vod");

    // Overlapping, so that both play while the title is fetched (once it is
    // complete in the store, a later player would be a plain cache hit).
    let (tcp, udp) = thread::scope(|s| {
        let tcp = s.spawn(|| ffprobe_count_frames(&url, "tcp", None));
        staggered(&proxy, 1);
        let udp = s.spawn(|| ffprobe_count_frames(&url, "udp", None));
        (tcp.join().unwrap(), udp.join().unwrap())
    });
    for (transport, frames) in [("tcp", tcp), ("udp", udp)] {
        assert_eq!(
            frames.video,
            u64::from(VOD_SECS) * FRAME_RATE,
            "{transport}: {frames:?}"
        );
        assert!(frames.audio > 0, "{transport}: {frames:?}");
    }
    // Both played the one fetch from the origin.
    assert_eq!(origin.sessions(), 1, "{:?}", origin.lines());
    let filling = proxy.logs().matches(FILLING).count();
    assert_eq!(filling, 2, "{}", proxy.logs());
}

/// `ffmpeg -f framemd5` of pulls through the proxy (player over TCP and over
/// UDP) equals, frame by frame, that of a direct pull from the origin; the
/// audio's MD5 too. The proxy relays the origin's packets untouched.
#[test]
fn framemd5_through_proxy_equals_direct_pull() {
    let origin = vod_origin(OriginOpts::new());
    let (proxy, _cache) = start_proxy(&[Mount::new("/o", &origin.url("/"))]);
    let direct = origin.url("/vod");
    let relayed = proxy.url("/o/vod");

    // Each pull takes the title's duration in real time: run them together
    // (the proxy's pulls staggered, see `staggered`).
    let (direct_video, direct_audio, tcp, udp, audio) = thread::scope(|s| {
        let direct_video = s.spawn(|| framemd5(&direct, Some("tcp"), "0:v", &[]));
        let direct_audio = s.spawn(|| audio_md5(&direct, Some("tcp"), &[]));
        let tcp = s.spawn(|| framemd5(&relayed, Some("tcp"), "0:v", &[]));
        staggered(&proxy, 1);
        let udp = s.spawn(|| framemd5(&relayed, Some("udp"), "0:v", &[]));
        staggered(&proxy, 2);
        let audio = s.spawn(|| audio_md5(&relayed, Some("tcp"), &[]));
        (
            direct_video.join().unwrap(),
            direct_audio.join().unwrap(),
            tcp.join().unwrap(),
            udp.join().unwrap(),
            audio.join().unwrap(),
        )
    });
    assert_eq!(direct_video.len() as u64, u64::from(VOD_SECS) * FRAME_RATE);
    assert!(
        tcp == direct_video,
        "tcp pull through the proxy: {} frames vs {} direct",
        tcp.len(),
        direct_video.len()
    );
    assert!(
        udp == direct_video,
        "udp pull through the proxy: {} frames vs {} direct",
        udp.len(),
        direct_video.len()
    );
    assert_eq!(audio, direct_audio, "audio MD5 through the proxy");
    let filling = proxy.logs().matches(FILLING).count();
    assert_eq!(filling, 3, "all three played the fetch: {}", proxy.logs());
    // Two direct pulls, and one fetch shared by the three proxy players.
    assert_eq!(origin.sessions(), 2 + 1, "{:?}", origin.lines());
}

/// gst-launch's rtspsrc plays the on-demand title through the proxy to the
/// end of stream, over TCP and over UDP.
#[test]
fn gst_launch_reaches_eos_through_proxy_over_tcp_and_udp() {
    let origin = vod_origin(OriginOpts::new());
    let (proxy, _cache) = start_proxy(&[Mount::new("/o", &origin.url("/"))]);
    let url = proxy.url("/o/vod");
    let (tcp, udp) = thread::scope(|s| {
        let tcp = s.spawn(|| gst_play(&url, "tcp", None));
        let udp = s.spawn(|| gst_play(&url, "udp", None));
        (tcp.join().unwrap(), udp.join().unwrap())
    });
    assert!(tcp.got_eos, "tcp: {tcp:?}");
    assert!(udp.got_eos, "udp: {udp:?}");
}

/// `transport = "tcp"` on a mount: the proxy sets up every track at the
/// origin interleaved, never UDP; and the player still decodes.
#[test]
fn mount_transport_tcp_forces_interleaved_toward_origin() {
    let origin = Origin::start(OriginOpts::new());
    let (proxy, _cache) = start_proxy(&[Mount::new("/cam", &origin.url("/live")).transport("tcp")]);
    let frames = ffprobe_count_video_frames(&proxy.url("/cam"), "udp", 2);
    assert!(frames.video > FRAME_RATE, "{frames:?}");
    let setups = origin_setup_transports(&origin);
    assert_eq!(setups.len(), 2, "one SETUP per track: {setups:?}");
    for t in &setups {
        assert!(
            t.starts_with("RTP/AVP/TCP") && t.contains("interleaved="),
            "{setups:?}"
        );
        assert!(!t.contains("client_port="), "{setups:?}");
    }
}

/// `transport = "auto"`: UDP toward the origin (client_port pairs) when the
/// origin's packets arrive; the player, on TCP, decodes.
#[test]
fn mount_transport_auto_uses_udp_toward_origin() {
    let origin = Origin::start(OriginOpts::new());
    let (proxy, _cache) = start_proxy(&[Mount::new("/cam", &origin.url("/live"))]);
    let frames = ffprobe_count_video_frames(&proxy.url("/cam"), "tcp", 2);
    assert!(frames.video > FRAME_RATE, "{frames:?}");
    let setups = origin_setup_transports(&origin);
    assert_eq!(setups.len(), 2, "one SETUP per track: {setups:?}");
    for t in &setups {
        assert!(
            t.starts_with("RTP/AVP") && !t.starts_with("RTP/AVP/TCP"),
            "{setups:?}"
        );
        assert!(t.contains("client_port="), "{setups:?}");
    }
}

/// `transport = "auto"` against an origin whose UDP never arrives (it sends
/// it where nobody reads, as behind a firewall): after `udp_fallback_secs`
/// the proxy sets the session up again over TCP interleaved, and the player
/// decodes.
#[test]
fn mount_transport_auto_falls_back_to_tcp_when_udp_never_arrives() {
    let origin = Origin::start(OriginOpts::new().udp_blackhole());
    let cache = temp_dir();
    let config = Proxy::config(cache.path(), &[Mount::new("/cam", &origin.url("/live"))])
        .replace("udp_fallback_secs = 3", "udp_fallback_secs = 1");
    let proxy = Proxy::start(&config);
    let frames = ffprobe_count_video_frames(&proxy.url("/cam"), "tcp", 2);
    assert!(frames.video > FRAME_RATE, "{frames:?}");

    let setups = origin_setup_transports(&origin);
    let udp = setups.iter().filter(|t| t.contains("client_port=")).count();
    let tcp: Vec<_> = setups
        .iter()
        .filter(|t| t.starts_with("RTP/AVP/TCP"))
        .collect();
    assert!(udp >= 1, "UDP was tried first: {setups:?}");
    assert_eq!(tcp.len(), 2, "then every track over TCP: {setups:?}");
    assert!(
        setups
            .iter()
            .rposition(|t| t.contains("client_port="))
            .unwrap()
            < setups
                .iter()
                .position(|t| t.starts_with("RTP/AVP/TCP"))
                .unwrap(),
        "UDP first, then TCP: {setups:?}"
    );
    // The silent UDP session was torn down at the origin.
    assert!(
        origin.wait_count("ORIGIN session-removed", 1, Duration::from_secs(5)) >= 1,
        "{:?}",
        origin.lines()
    );
}
