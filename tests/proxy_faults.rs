//! Bad input and faults, against the real daemon and real peers: each bad
//! request gets the RTSP status a player would expect (and the connection
//! is closed or stays usable, as asserted per case); origin failures reach
//! the player as an error within seconds and the logs name the origin but
//! never its password; players that vanish or stop reading are dropped
//! without disturbing anyone else.

mod support;

use std::path::Path;
use std::thread;
use std::time::Duration;

use support::*;

const PASSWORD: &str = "pa55-w0rd!Secret";

/// A proxy with these mounts (and config tweaks) and a fresh cache dir; the
/// config file is kept next to the cache for `streamcache cache ls`.
struct TestProxy {
    proxy: Proxy,
    config: String,
    dir: tempfile::TempDir,
}

impl TestProxy {
    fn start(mounts: &[Mount], tweaks: &[(&str, &str)]) -> TestProxy {
        let dir = temp_dir();
        let mut config = Proxy::config(&dir.path().join("cache"), mounts);
        for (from, to) in tweaks {
            assert!(config.contains(from), "no `{from}` in the test config");
            config = config.replace(from, to);
        }
        std::fs::write(dir.path().join("streamcache.toml"), &config).unwrap();
        let proxy = Proxy::start(&config);
        TestProxy { proxy, config, dir }
    }
}

/// A mount to an origin port where nothing listens (never contacted by the
/// requests that are refused before reaching an origin).
fn nowhere_mount(path: &str) -> Mount {
    let port = closed_port();
    Mount::new(path, &format!("rtsp://127.0.0.1:{port}/live"))
}

fn assert_no_password(logs: &str) {
    assert!(
        !logs.contains(PASSWORD),
        "the daemon logged an origin password:\n{logs}"
    );
}

// ---------------------------------------------------------------------------
// Bad requests

/// A request line that is not RTSP → 400, and the daemon closes the
/// connection (it cannot know where the next request would start).
#[test]
fn malformed_request_gets_400_and_the_connection_is_closed() {
    let t = TestProxy::start(&[nowhere_mount("/cam")], &[]);
    let mut conn = RtspConn::connect(t.proxy.port());
    conn.send_raw(b"DESCRIBE\r\nCSeq: 7\r\n\r\n").unwrap();
    let resp = conn.read_response().expect("a response");
    assert_eq!(resp.status(), 400, "{resp:?}");
    assert!(conn.closed_within(Duration::from_secs(5)));

    // Without a CSeq the request cannot be answered in sequence: 400, close.
    let mut conn = RtspConn::connect(t.proxy.port());
    conn.send_raw(format!("OPTIONS {} RTSP/1.0\r\n\r\n", t.proxy.url("/cam")).as_bytes())
        .unwrap();
    let resp = conn.read_response().expect("a response");
    assert_eq!(resp.status(), 400, "{resp:?}");
    assert!(conn.closed_within(Duration::from_secs(5)));

    // The daemon keeps serving others.
    let mut conn = RtspConn::connect(t.proxy.port());
    assert_eq!(
        conn.request("OPTIONS", &t.proxy.url("/cam"), &[]).status(),
        200
    );
}

/// A request larger than `max_request_bytes` (64 KiB here) → 413 and the
/// connection is closed.
#[test]
fn oversized_request_gets_413_and_the_connection_is_closed() {
    let t = TestProxy::start(&[nowhere_mount("/cam")], &[]);
    let mut conn = RtspConn::connect(t.proxy.port());
    let mut req = format!("OPTIONS {} RTSP/1.0\r\nCSeq: 1\r\n", t.proxy.url("/cam"));
    req += &format!("X-Padding: {}\r\n\r\n", "a".repeat(70 * 1024));
    // The daemon may answer and close before it has read everything.
    let _ = conn.send_raw(req.as_bytes());
    let resp = conn.read_response().expect("a response");
    assert_eq!(resp.status(), 413, "{resp:?}");
    assert!(conn.closed_within(Duration::from_secs(5)));
}

/// More header lines than `max_headers` (64 here) → refused with 400 and
/// the connection closed.
#[test]
fn too_many_headers_are_refused_and_the_connection_is_closed() {
    let t = TestProxy::start(&[nowhere_mount("/cam")], &[]);
    let mut conn = RtspConn::connect(t.proxy.port());
    let mut req = format!("OPTIONS {} RTSP/1.0\r\nCSeq: 1\r\n", t.proxy.url("/cam"));
    for i in 0..100 {
        req += &format!("X-Header-{i}: {i}\r\n");
    }
    req += "\r\n";
    let _ = conn.send_raw(req.as_bytes());
    let resp = conn.read_response().expect("a response");
    assert_eq!(resp.status(), 400, "{resp:?}");
    assert!(conn.closed_within(Duration::from_secs(5)));
}

/// A method RTSP 1.0 does not define → 501 (with `Public`), and the
/// connection stays usable.
#[test]
fn unknown_method_gets_501_and_the_connection_stays_usable() {
    let t = TestProxy::start(&[nowhere_mount("/cam")], &[]);
    let url = t.proxy.url("/cam");
    let mut conn = RtspConn::connect(t.proxy.port());
    let resp = conn.request("FROBNICATE", &url, &[]);
    assert_eq!(resp.status(), 501, "{resp:?}");
    assert!(resp
        .header("Public")
        .is_some_and(|p| p.contains("DESCRIBE")));
    assert_eq!(conn.request("OPTIONS", &url, &[]).status(), 200);
}

/// A path under no mount → 404 (never an open relay), connection usable.
#[test]
fn unknown_path_gets_404_and_the_connection_stays_usable() {
    let t = TestProxy::start(&[nowhere_mount("/cam")], &[]);
    let mut conn = RtspConn::connect(t.proxy.port());
    for path in ["/nope", "/camshaft", "/"] {
        let resp = conn.request("DESCRIBE", &t.proxy.url(path), &[]);
        assert_eq!(resp.status(), 404, "{path}: {resp:?}");
    }
    assert_eq!(
        conn.request("OPTIONS", &t.proxy.url("/cam"), &[]).status(),
        200
    );
}

/// `Require` / `Proxy-Require` an option we lack → 551 naming it in
/// `Unsupported`.
#[test]
fn required_option_gets_551_with_unsupported() {
    let t = TestProxy::start(&[nowhere_mount("/cam")], &[]);
    let url = t.proxy.url("/cam");
    let mut conn = RtspConn::connect(t.proxy.port());
    for header in ["Require", "Proxy-Require"] {
        let resp = conn.request("OPTIONS", &url, &[(header, "foo")]);
        assert_eq!(resp.status(), 551, "{header}: {resp:?}");
        assert_eq!(resp.header("Unsupported"), Some("foo"), "{resp:?}");
    }
    assert_eq!(conn.request("OPTIONS", &url, &[]).status(), 200);
}

/// PLAY, PAUSE (and TEARDOWN) with a session id the daemon never gave → 454.
#[test]
fn unknown_session_gets_454() {
    let t = TestProxy::start(&[nowhere_mount("/cam")], &[]);
    let url = t.proxy.url("/cam");
    let mut conn = RtspConn::connect(t.proxy.port());
    for method in ["PLAY", "PAUSE", "TEARDOWN"] {
        let resp = conn.request(method, &url, &[("Session", "DEADBEEF12345678")]);
        assert_eq!(resp.status(), 454, "{method}: {resp:?}");
    }
}

// ---------------------------------------------------------------------------
// Origin faults and credentials

/// An origin where nothing listens (mounted with credentials): the player
/// gets a 5xx within a few seconds, and the log names the origin URL but
/// never the password.
#[test]
fn unreachable_origin_gets_5xx_and_a_log_line_without_the_password() {
    let port = closed_port();
    let origin = format!("rtsp://127.0.0.1:{port}/live");
    let mount = Mount::new("/cam", &origin).credentials("viewer", PASSWORD);
    let t = TestProxy::start(&[mount], &[]);
    let mut conn = RtspConn::connect(t.proxy.port());
    // The raw client gives up after 10 s: "within a few seconds".
    let resp = conn.request("DESCRIBE", &t.proxy.url("/cam"), &[]);
    assert!(
        (502..=504).contains(&resp.status()),
        "expected 502/503/504: {resp:?}"
    );
    assert!(
        t.proxy.wait_log(&origin, Duration::from_secs(5)),
        "no log line names {origin}:\n{}",
        t.proxy.logs()
    );
    assert_no_password(&t.proxy.logs());
}

/// An origin refusing the mount's (wrong) credentials: the player gets an
/// error status, and no password reaches the logs.
#[test]
fn origin_refusing_credentials_gets_an_error_without_the_password_logged() {
    let origin = Origin::start(OriginOpts::new().auth(AuthScheme::Digest, "viewer", PASSWORD));
    let wrong = format!("{PASSWORD}-wrong");
    let mount = Mount::new("/cam", &origin.url("/live")).credentials("viewer", &wrong);
    let t = TestProxy::start(&[mount], &[]);
    let mut conn = RtspConn::connect(t.proxy.port());
    let resp = conn.request("DESCRIBE", &t.proxy.url("/cam"), &[]);
    assert!(
        (400..600).contains(&resp.status()) && resp.status() != 404,
        "{resp:?}"
    );
    assert_eq!(origin.sessions(), 0);
    // The origin was asked with credentials (and said no); its log lines
    // come asynchronously.
    origin.wait_count("ORIGIN request method=DESCRIBE", 2, Duration::from_secs(5));
    assert!(origin
        .requests("DESCRIBE")
        .iter()
        .any(|r| r.auth.as_deref() == Some("Digest")));
    assert!(t
        .proxy
        .wait_log(&origin.url("/live"), Duration::from_secs(5)));
    assert_no_password(&t.proxy.logs());
}

fn plays_with_credentials(scheme: AuthScheme, header_scheme: &str) {
    let origin = Origin::start(OriginOpts::new().auth(scheme, "viewer", PASSWORD));
    let mount = Mount::new("/cam", &origin.url("/live")).credentials("viewer", PASSWORD);
    let t = TestProxy::start(&[mount], &[]);
    let frames = ffprobe_count_frames(&t.proxy.url("/cam"), "tcp", Some(2));
    assert!(frames.video > 0 && frames.audio > 0, "{frames:?}");
    assert_eq!(origin.sessions(), 1);
    let plays = origin.requests("PLAY");
    assert_eq!(plays.last().unwrap().auth.as_deref(), Some(header_scheme));
    assert_no_password(&t.proxy.logs());
}

/// The mount's credentials, Basic: the origin accepts them and the player decodes.
#[test]
fn basic_credentials_play() {
    plays_with_credentials(AuthScheme::Basic, "Basic");
}

/// The mount's credentials, Digest: the origin accepts them and the player decodes.
#[test]
fn digest_credentials_play() {
    plays_with_credentials(AuthScheme::Digest, "Digest");
}

/// The origin dies while players watch `/live`: ffmpeg ends by itself (not
/// killed by its time limit), the raw TCP player gets RTCP BYE and the
/// connection closed; the daemon keeps serving (another origin on another
/// mount plays), and after the daemon stops the recording is in the store,
/// marked partial.
#[test]
fn origin_dying_mid_stream_ends_players_cleanly_and_keeps_the_recording() {
    let mut origin = Origin::start(OriginOpts::new());
    let other = Origin::start(OriginOpts::new());
    let t = TestProxy::start(
        &[
            Mount::new("/cam", &origin.url("/live")),
            Mount::new("/other", &other.url("/live")),
        ],
        &[("reconnect_attempts = 3", "reconnect_attempts = 1")],
    );
    let url = t.proxy.url("/cam");

    let mut raw = RtspConn::connect(t.proxy.port());
    raw.play(&url, None);
    thread::scope(|s| {
        // 60 s of media asked for: ffmpeg must end long before, by itself.
        let ffmpeg = s.spawn(|| ffmpeg_pull(&url, "tcp", 60));
        // Both players are playing (the raw one keeps reading meanwhile).
        let mut packets = 0;
        while t.proxy.logs().matches("playing from the origin").count() < 2 {
            raw.read_interleaved().expect("media while ffmpeg joins");
            packets += 1;
            assert!(packets < 20_000, "ffmpeg never played: {}", t.proxy.logs());
        }
        for _ in 0..50 {
            raw.read_interleaved().expect("media before the crash");
        }
        origin.kill();

        // The raw player: RTCP BYE (packet type 203) and the connection closed.
        let mut bye = false;
        loop {
            match raw.read() {
                Ok(Received::Interleaved { channel, data }) => {
                    bye |= channel % 2 == 1 && rtcp_has_bye(&data);
                }
                Ok(Received::Message(_)) => {}
                Err(e) => {
                    assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof, "{e}");
                    break;
                }
            }
        }
        assert!(bye, "no RTCP BYE before the close");

        let pull = ffmpeg.join().unwrap();
        assert!(
            !pull.output.timed_out(),
            "ffmpeg had to be killed: {pull:?}"
        );
        // It stopped well before the 60 s it asked for (~250 kB/s of video).
        assert!(pull.video_kb > 0 && pull.video_kb < 5_000, "{pull:?}");
    });

    // The daemon keeps serving: another origin on another mount plays.
    let frames = ffprobe_count_frames(&t.proxy.url("/other"), "tcp", Some(1));
    assert!(frames.video > 0, "{frames:?}");

    let logs = t.proxy.logs();
    // Closing the players' connections panicked no task of the daemon.
    assert!(!logs.contains("panicked"), "{logs}");
    let TestProxy { proxy, config, dir } = t;
    assert!(
        proxy.stop(Duration::from_secs(10)).is_some(),
        "the daemon did not stop on SIGTERM"
    );
    let config_file = dir.path().join("streamcache.toml");
    let ls = run_streamcache(&["cache", "--config", path_str(&config_file), "ls"]);
    let key = origin.url("/live");
    assert!(ls.success(), "cache ls: {ls:?}\nconfig:\n{config}\n{logs}");
    let line = ls.stdout.lines().find(|l| l.ends_with(&key));
    assert!(
        // id, state, bytes, held, key
        line.is_some_and(|l| l.split_whitespace().nth(1) == Some("partial")),
        "the recording of {key} is kept, partial: {ls:?}"
    );
}

/// Whether a (compound) RTCP packet holds a BYE (packet type 203).
fn rtcp_has_bye(mut data: &[u8]) -> bool {
    while data.len() >= 4 {
        if data[1] == 203 {
            return true;
        }
        let len = 4 * (usize::from(u16::from_be_bytes([data[2], data[3]])) + 1);
        data = data.get(len..).unwrap_or_default();
    }
    false
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

// ---------------------------------------------------------------------------
// Players that vanish or stop reading

/// A UDP player that plays and then goes silent (no RTCP, no request, no
/// TEARDOWN) is reaped after `session_timeout_secs` (3 here), and its
/// origin session then ends after the linger.
#[test]
fn vanished_udp_player_is_reaped_after_the_session_timeout() {
    let origin = Origin::start(OriginOpts::new());
    let t = TestProxy::start(
        &[Mount::new("/cam", &origin.url("/live"))],
        &[("session_timeout_secs = 60", "session_timeout_secs = 3")],
    );
    let ports = [udp_port_pair(), udp_port_pair()];
    let mut conn = RtspConn::connect(t.proxy.port());
    let (session, play) = conn.play(&t.proxy.url("/cam"), Some(&ports));
    assert!(play
        .header("Session")
        .is_some_and(|s| s.contains("timeout=3")));
    let mut buf = [0u8; 2048];
    let n = ports[0].0.recv(&mut buf).expect("RTP over UDP");
    assert!(Rtp::parse(&buf[..n]).is_some());

    // Silence, with the RTSP connection still open.
    assert!(
        t.proxy
            .wait_log("why=\"timed out\"", Duration::from_secs(20)),
        "{}",
        t.proxy.logs()
    );
    let logs = t.proxy.logs();
    let ended = logs.lines().find(|l| l.contains("session ended")).unwrap();
    assert!(
        ended.contains(&session) && ended.contains("timed out"),
        "{ended}"
    );
    assert!(t.proxy.wait_log(
        "no players left: closing origin session",
        Duration::from_secs(10)
    ));
    assert_eq!(
        origin.wait_count("ORIGIN session-removed", 1, Duration::from_secs(10)),
        1
    );
    // And the session is gone for the player too.
    let resp = conn.request("PLAY", &t.proxy.url("/cam"), &[("Session", &session)]);
    assert_eq!(resp.status(), 454, "{resp:?}");
}

/// A TCP player that SETUPs interleaved, PLAYs and never reads is dropped
/// ("player too slow") once its bounded queue overflows, while another
/// player of the same stream at the same time receives normally.
#[test]
fn slow_tcp_player_is_dropped_and_never_delays_the_others() {
    let origin = Origin::start(OriginOpts::new());
    let t = TestProxy::start(
        &[Mount::new("/cam", &origin.url("/live"))],
        &[("player_queue_packets = 2048", "player_queue_packets = 64")],
    );
    let url = t.proxy.url("/cam");
    let mut slow = RtspConn::connect(t.proxy.port());
    slow.play(&url, None);
    // Never read again: the kernel's socket buffers fill, then the daemon's queue.
    let pull = ffmpeg_pull(&url, "tcp", 8);
    assert!(pull.output.success(), "{pull:?}");
    // 8 s at ~2 Mbit/s: all of it arrived (no stall behind the slow player).
    assert!(pull.video_kb > 1_200, "{pull:?}");
    assert!(
        t.proxy.wait_log("player too slow", Duration::from_secs(30)),
        "{}",
        t.proxy.logs()
    );
    assert!(slow.closed_within(Duration::from_secs(30)));
    assert_eq!(origin.sessions(), 1);
}

/// A UDP player's ports at the proxy (RTP and RTCP) are let go once its
/// session ends, though the player never sends anything again (the RTCP
/// listener used to wait for a packet to notice, holding its port).
#[test]
fn udp_player_ports_are_released_when_the_session_ends() {
    let origin = Origin::start(OriginOpts::new());
    let cache = temp_dir();
    let proxy = Proxy::start(&Proxy::config(
        cache.path(),
        &[Mount::new("/cam", &origin.url("/live"))],
    ));
    let url = proxy.url("/cam");
    let pairs: Vec<_> = (0..2).map(|_| udp_port_pair()).collect();
    let mut conn = RtspConn::connect(proxy.port());
    let (session, _) = conn.play(&url, Some(&pairs));
    let mut buf = [0u8; 2048];
    let (_, media_from) = pairs[0].0.recv_from(&mut buf).expect("media over UDP");
    assert!(media_from.ip().is_loopback() && media_from.port() % 2 == 0);
    // The proxy's pair for the video track: RTP, and RTCP next to it.
    let ports = [media_from.port(), media_from.port() + 1];
    let free = |port: u16| std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok();
    assert!(
        !free(ports[1]),
        "the RTCP port is held while the session lives"
    );

    let bye = conn.request("TEARDOWN", &url, &[("Session", &session)]);
    assert_eq!(bye.status(), 200, "{bye:?}");
    drop(pairs);
    let released = wait_for(Duration::from_secs(20), || {
        ports.iter().all(|&port| free(port)).then_some(())
    });
    assert!(
        released.is_some(),
        "ports {ports:?} still held after the session ended\n{}",
        proxy.logs()
    );
}
