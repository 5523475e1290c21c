//! The harness proven against the real origin alone (no proxy): what the
//! daemon's end-to-end tests build on. Each test starts its own origin.

mod support;

use std::thread;
use std::time::Duration;

use support::*;

const VOD_SECS: u32 = 6;
const FRAME_RATE: u64 = 25;

fn vod_origin() -> Origin {
    Origin::start(OriginOpts::new().media(test_media(VOD_SECS)))
}

/// Pulls 3 s of `/live` over `transport` and returns the Transport of the
/// first SETUP the origin logged.
fn live_decodes_over(transport: &str) -> String {
    let origin = Origin::start(OriginOpts::new());
    let frames = ffprobe_count_frames(&origin.url("/live"), transport, Some(3));
    // 3 s at 25 fps; the start-up may cost a few frames.
    assert!(frames.video >= 2 * FRAME_RATE, "{frames:?}");
    assert!(frames.audio > 0, "{frames:?}");
    let setup = &origin.requests("SETUP")[0];
    setup.transport.clone().unwrap_or_default()
}

#[test]
fn live_decodes_over_tcp() {
    let setup = live_decodes_over("tcp");
    assert!(setup.starts_with("RTP/AVP/TCP"), "{setup:?}");
}

#[test]
fn live_decodes_over_udp() {
    let setup = live_decodes_over("udp");
    assert!(setup.contains("client_port="), "{setup:?}");
}

/// Keyframes once a second is what late-joiner tests rely on.
#[test]
fn live_has_a_keyframe_every_second() {
    let origin = Origin::start(OriginOpts::new());
    let (frames, out) = ffprobe_frames(&origin.url("/live"), "tcp", 3);
    let video: Vec<_> = frames.iter().filter(|f| f.media_type == "video").collect();
    let keys: Vec<usize> = (0..video.len()).filter(|&i| video[i].key_frame).collect();
    assert!(
        keys.len() >= 2,
        "keyframes at {keys:?} of {} frames; {out:?}",
        video.len()
    );
    for pair in keys.windows(2) {
        assert_eq!(
            pair[1] - pair[0],
            FRAME_RATE as usize,
            "keyframes at {keys:?}"
        );
    }
}

/// The live source is ~2 Mbit/s of video, so load tests move real volume.
#[test]
fn live_is_about_two_megabits() {
    let origin = Origin::start(OriginOpts::new());
    let secs = 4;
    let pull = ffmpeg_pull(&origin.url("/live"), "tcp", secs);
    let kbit_per_s = pull.video_kb * 8 / u64::from(secs);
    assert!(
        (1000..4000).contains(&kbit_per_s),
        "{kbit_per_s} kbit/s: {pull:?}"
    );
    assert!(pull.audio_kb > 0, "{pull:?}");
}

/// A pull decodes to exactly the file's frames, over both transports, and
/// the audio too.
#[test]
fn vod_is_frame_identical_to_the_file() {
    let media = test_media(VOD_SECS);
    let origin = vod_origin();
    let url = origin.url("/vod");
    let file = framemd5(media.to_str().unwrap(), None, "0:v", &[]);
    assert_eq!(file.len() as u64, u64::from(VOD_SECS) * FRAME_RATE);

    // Each pull takes the title's duration in real time: run them together.
    let (tcp, udp, audio) = thread::scope(|s| {
        let tcp = s.spawn(|| framemd5(&url, Some("tcp"), "0:v", &[]));
        let udp = s.spawn(|| framemd5(&url, Some("udp"), "0:v", &[]));
        let audio = s.spawn(|| audio_md5(&url, Some("tcp"), &[]));
        (
            tcp.join().unwrap(),
            udp.join().unwrap(),
            audio.join().unwrap(),
        )
    });
    assert!(
        tcp == file,
        "tcp pull: {} frames vs {} in the file",
        tcp.len(),
        file.len()
    );
    assert!(
        udp == file,
        "udp pull: {} frames vs {} in the file",
        udp.len(),
        file.len()
    );
    assert_eq!(audio, audio_md5(media.to_str().unwrap(), None, &[]));
    assert_eq!(origin.sessions(), 3);
}

/// ffmpeg's seek goes out as PLAY Range; with -noaccurate_seek both the file
/// and the pull start at the same keyframe.
#[test]
fn vod_seek_sends_range_and_matches_the_file() {
    let media = test_media(VOD_SECS);
    let origin = vod_origin();
    let seek = ["-ss", "3", "-noaccurate_seek"];
    let pulled = framemd5(&origin.url("/vod"), Some("tcp"), "0:v", &seek);
    let file = framemd5(media.to_str().unwrap(), None, "0:v", &seek);
    assert!(
        !pulled.is_empty() && pulled == file,
        "{} vs {} frames",
        pulled.len(),
        file.len()
    );

    let ranges: Vec<_> = origin
        .requests("PLAY")
        .into_iter()
        .map(|r| r.range)
        .collect();
    assert_eq!(
        ranges.last().unwrap().as_deref(),
        Some("npt=3.000-"),
        "PLAY ranges {ranges:?}"
    );
}

#[test]
fn gst_launch_plays_vod_to_eos() {
    let origin = vod_origin();
    let mut run = gst_play(&origin.url("/vod"), "tcp", None);
    if !run.got_eos {
        // Seen once in a full-suite run on a loaded 2-core machine: the
        // GStreamer pair (rtspsrc against gst-rtsp-server, no streamcache
        // between them) stalled after PLAY until the time limit. This test
        // is about the peers working here at all, so they get one more try.
        eprintln!("gst-launch did not reach EOS; trying once more: {run:?}");
        run = gst_play(&origin.url("/vod"), "tcp", None);
    }
    assert!(run.got_eos, "{run:?}");
}

#[test]
fn gst_launch_plays_live_over_udp() {
    let origin = Origin::start(OriginOpts::new());
    let run = gst_play(&origin.url("/live"), "udp", Some(50));
    assert!(run.got_eos, "{run:?}");
}

/// The origin's log is how tests count origin sessions.
#[test]
fn origin_counts_sequential_sessions() {
    let origin = Origin::start(OriginOpts::new());
    assert_eq!(origin.sessions(), 0);
    for expected in 1..=2 {
        let frames = ffprobe_count_frames(&origin.url("/live"), "tcp", Some(1));
        assert!(frames.video > 0, "{frames:?}");
        assert_eq!(origin.sessions(), expected);
    }
    assert_eq!(origin.count("ORIGIN client-connected"), 2);
    assert_eq!(
        origin.wait_count("ORIGIN client-closed", 2, Duration::from_secs(5)),
        2
    );
    let plays = origin.requests("PLAY");
    assert_eq!(plays.len(), 2);
    assert_ne!(plays[0].client, plays[1].client);
    assert_eq!(plays[0].range.as_deref(), Some("npt=0.000-"));
    assert_eq!(origin.count("ORIGIN session-removed"), 2);
}

fn check_auth(scheme: AuthScheme, header_scheme: &str) {
    let (user, password) = ("viewer", "s3cret pass@x");
    let origin = Origin::start(OriginOpts::new().auth(scheme, user, password));

    let refused = ffprobe_count_frames(&origin.url("/live"), "tcp", Some(1));
    assert_eq!(refused.video, 0, "{refused:?}");
    assert!(refused.output.stderr.contains("401"), "{refused:?}");
    assert_eq!(origin.sessions(), 0);

    let url = origin.url_with_credentials("/live", user, password);
    let accepted = ffprobe_count_frames(&url, "tcp", Some(1));
    assert!(accepted.video > 0, "{accepted:?}");
    assert_eq!(origin.sessions(), 1);
    let describes = origin.requests("DESCRIBE");
    assert_eq!(describes.first().unwrap().auth, None);
    assert_eq!(
        describes.last().unwrap().auth.as_deref(),
        Some(header_scheme)
    );
    // The log names the scheme, never the secret.
    assert!(origin.lines().iter().all(|l| !l.contains("s3cret")));
}

#[test]
fn basic_auth_refuses_anonymous_and_accepts_credentials() {
    check_auth(AuthScheme::Basic, "Basic");
}

#[test]
fn digest_auth_refuses_anonymous_and_accepts_credentials() {
    check_auth(AuthScheme::Digest, "Digest");
}

/// DESCRIBE, SETUP both tracks interleaved, PLAY: a keyframe within a GOP.
#[test]
fn raw_client_plays_live_interleaved() {
    let origin = Origin::start(OriginOpts::new());
    let url = origin.url("/live");
    let mut conn = RtspConn::connect(origin.port());
    assert_eq!(conn.request("OPTIONS", &url, &[]).status(), 200);
    let describe = conn.request("DESCRIBE", &url, &[("Accept", "application/sdp")]);
    assert_eq!(describe.status(), 200, "{describe:?}");
    let tracks = describe.sdp_track_urls(&url);
    assert_eq!(tracks.len(), 2, "{}", describe.body_text());

    let mut session = String::new();
    for (i, track) in tracks.iter().enumerate() {
        let transport = format!("RTP/AVP/TCP;unicast;interleaved={}-{}", 2 * i, 2 * i + 1);
        let mut headers = vec![("Transport", transport.as_str())];
        if !session.is_empty() {
            headers.push(("Session", &session));
        }
        let setup = conn.request("SETUP", track, &headers);
        assert_eq!(setup.status(), 200, "{setup:?}");
        session = setup.session().unwrap().to_string();
    }
    let play = conn.request(
        "PLAY",
        &url,
        &[("Session", &session), ("Range", "npt=0.000-")],
    );
    assert_eq!(play.status(), 200, "{play:?}");

    // 2 s of packets at most: a live GOP is 1 s.
    let mut video_packets = 0;
    let keyframe = (0..2000).any(|_| {
        let (channel, data) = conn.read_interleaved().expect("interleaved packet");
        let Some(rtp) = Rtp::parse(&data).filter(|_| channel == 0) else {
            return false;
        };
        assert_eq!(rtp.payload_type, 96);
        video_packets += 1;
        rtp.starts_h264_keyframe()
    });
    assert!(keyframe, "no keyframe in {video_packets} video packets");

    let teardown = conn.request("TEARDOWN", &url, &[("Session", &session)]);
    assert_eq!(teardown.status(), 200, "{teardown:?}");
    assert_eq!(origin.sessions(), 1);
}

/// The same over UDP: RTP arrives on the client ports we bound.
#[test]
fn raw_client_plays_live_over_udp() {
    let origin = Origin::start(OriginOpts::new());
    let url = origin.url("/live");
    let (rtp_sock, _rtcp_sock) = udp_port_pair();
    let rtp_port = rtp_sock.local_addr().unwrap().port();

    let mut conn = RtspConn::connect(origin.port());
    let describe = conn.request("DESCRIBE", &url, &[("Accept", "application/sdp")]);
    let video = &describe.sdp_track_urls(&url)[0];
    let transport = format!("RTP/AVP;unicast;client_port={}-{}", rtp_port, rtp_port + 1);
    let setup = conn.request("SETUP", video, &[("Transport", &transport)]);
    assert_eq!(setup.status(), 200, "{setup:?}");
    assert!(
        setup.header("Transport").unwrap().contains("server_port="),
        "{setup:?}"
    );
    let session = setup.session().unwrap().to_string();
    let play = conn.request("PLAY", &url, &[("Session", &session)]);
    assert_eq!(play.status(), 200, "{play:?}");

    let mut buf = [0u8; 2048];
    let keyframe = (0..2000).any(|_| {
        let n = rtp_sock.recv(&mut buf).expect("RTP over UDP");
        Rtp::parse(&buf[..n])
            .is_some_and(|rtp| rtp.payload_type == 96 && rtp.starts_h264_keyframe())
    });
    assert!(keyframe, "no keyframe over UDP");
    assert_eq!(
        conn.request("TEARDOWN", &url, &[("Session", &session)])
            .status(),
        200
    );
}

/// A malformed request gets an answer from the real server, not a hang:
/// what the raw client needs for the proxy's bad-input tests.
#[test]
fn raw_client_reads_an_error_response() {
    let origin = Origin::start(OriginOpts::new());
    let mut conn = RtspConn::connect(origin.port());
    conn.send_raw(b"DESCRIBE rtsp://127.0.0.1/nope RTSP/1.0\r\nCSeq: 1\r\n\r\n")
        .unwrap();
    let resp = conn.read_response().expect("a response");
    assert_eq!(resp.status(), 404, "{resp:?}");
    // The connection stays usable.
    let url = origin.url("/live");
    assert_eq!(conn.request("OPTIONS", &url, &[]).status(), 200);
}

/// A broken start fails the test at once, with the origin's own words.
#[test]
#[should_panic(expected = "no such file")]
fn origin_start_fails_loudly() {
    Origin::start(OriginOpts::new().media("/nonexistent/title.mkv"));
}
