//! Limits on what players may take, against the real daemon: sessions in
//! all (503 + Retry-After) and per IP address (453), open connections (503,
//! then close), idle connections (closed), oversized requests and header
//! floods (413 / 400). Each refusal is one log line, and a real player
//! (ffprobe) keeps being served meanwhile.
//!
//! The refused requests are scripted with the raw client; sessions are only
//! SETUP, never played, so nothing has to read their media.

mod support;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use support::*;

const VOD_SECS: u32 = 3;
const FRAMES: u64 = VOD_SECS as u64 * 25;
const OTHER_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

/// A proxy on a `/o` mount of an on-demand origin, with `limits` lines
/// added to `[rtsp]`.
fn proxy_with_limits(origin: &Origin, limits: &str) -> (Proxy, tempfile::TempDir) {
    let cache = temp_dir();
    let config = Proxy::config(cache.path(), &[Mount::new("/o", &origin.url("/"))]);
    let anchor = "player_queue_packets = 2048\n";
    assert!(config.contains(anchor));
    let config = config.replacen(anchor, &format!("{anchor}{limits}"), 1);
    (Proxy::start(&config), cache)
}

fn vod_origin() -> Origin {
    Origin::start(OriginOpts::new().media(test_media(VOD_SECS)))
}

fn assert_ffprobe_plays(proxy: &Proxy, url: &str) {
    let counts = ffprobe_count_frames(url, "tcp", None);
    assert_eq!(
        counts.video,
        FRAMES,
        "{:?}\n{}",
        counts.output,
        proxy.logs()
    );
}

#[test]
fn session_limits_answer_453_per_address_and_503_in_all() {
    let origin = vod_origin();
    let (proxy, _cache) = proxy_with_limits(&origin, "max_sessions = 3\nmax_sessions_per_ip = 2\n");
    let url = proxy.url("/o/vod");

    // Another address takes its two sessions; a third is refused with 453.
    let mut other = RtspConn::connect_from(proxy.port(), OTHER_IP);
    for _ in 0..2 {
        let setup = other.describe_and_setup_first(&url).1;
        assert_eq!(setup.status(), 200, "{setup:?}");
    }
    let refused = other.describe_and_setup_first(&url).1;
    assert_eq!(refused.status(), 453, "{refused:?}");
    assert!(proxy.wait_log("session refused: 453", Duration::from_secs(5)));
    // The refused player's connection still works.
    assert_eq!(other.request("OPTIONS", &url, &[]).status(), 200);

    // A player from 127.0.0.1 is served meanwhile (3 sessions in all).
    assert_ffprobe_plays(&proxy, &url);

    // With 3 sessions held, the server is full: 503 with Retry-After.
    let mut local = RtspConn::connect(proxy.port());
    let held = local.describe_and_setup_first(&url).1;
    assert_eq!(held.status(), 200, "{held:?}");
    let full = local.describe_and_setup_first(&url).1;
    assert_eq!(full.status(), 503, "{full:?}");
    assert!(
        full.header("Retry-After")
            .is_some_and(|s| s.trim().parse::<u32>().is_ok()),
        "{full:?}"
    );
    assert!(proxy.wait_log("session refused: 503", Duration::from_secs(5)));
    assert_eq!(
        proxy.logs().matches("session refused").count(),
        2,
        "one line per refusal:\n{}",
        proxy.logs()
    );

    // Once a session ends, players get in again.
    let session = held.session().unwrap().to_owned();
    assert_eq!(
        local
            .request("TEARDOWN", &url, &[("Session", &session)])
            .status(),
        200
    );
    assert_ffprobe_plays(&proxy, &url);
}

#[test]
fn connections_over_max_connections_get_503_and_are_closed() {
    let origin = vod_origin();
    let (proxy, _cache) = proxy_with_limits(&origin, "max_connections = 2\n");
    let url = proxy.url("/o/vod");

    let mut a = RtspConn::connect(proxy.port());
    let mut b = RtspConn::connect(proxy.port());
    assert_eq!(a.request("OPTIONS", &url, &[]).status(), 200);
    assert_eq!(b.request("OPTIONS", &url, &[]).status(), 200);
    let mut refused = RtspConn::connect(proxy.port());
    let answer = refused.request("OPTIONS", &url, &[]);
    assert_eq!(answer.status(), 503, "{answer:?}");
    assert!(answer.header("Retry-After").is_some(), "{answer:?}");
    assert!(refused.closed_within(Duration::from_secs(5)));
    assert!(proxy.wait_log("connection refused: 503", Duration::from_secs(5)));
    // The connections that got in keep working.
    assert_eq!(a.request("OPTIONS", &url, &[]).status(), 200);

    // One leaves: a player gets its place.
    drop(b);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut probe = RtspConn::connect(proxy.port());
        if probe.request("OPTIONS", &url, &[]).status() == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "the slot was never released");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_ffprobe_plays(&proxy, &url);
}

#[test]
fn idle_connections_are_closed_unless_they_carry_a_session() {
    let origin = vod_origin();
    let (proxy, _cache) = proxy_with_limits(&origin, "idle_connection_secs = 1\n");
    let url = proxy.url("/o/vod");

    let mut idle = RtspConn::connect(proxy.port());
    assert_eq!(idle.request("OPTIONS", &url, &[]).status(), 200);
    // Half a request, never finished, does not count as activity.
    let mut slow = RtspConn::connect(proxy.port());
    slow.send_raw(b"OPTIONS rtsp://127.0.0.1/o RTSP/1.0\r\nCSeq: 1\r\n")
        .unwrap();
    let mut with_session = RtspConn::connect(proxy.port());
    let setup = with_session.describe_and_setup_first(&url).1;
    assert_eq!(setup.status(), 200, "{setup:?}");

    assert!(idle.closed_within(Duration::from_secs(10)));
    assert!(slow.closed_within(Duration::from_secs(10)));
    assert!(proxy.wait_log_count("idle connection closed", 2, Duration::from_secs(5)));
    // The connection with a session is kept past the idle time.
    assert!(!with_session.closed_within(Duration::from_secs(3)));
    let session = setup.session().unwrap().to_owned();
    assert_eq!(
        with_session
            .request("GET_PARAMETER", &url, &[("Session", &session)])
            .status(),
        200
    );
    assert_ffprobe_plays(&proxy, &url);
}

#[test]
fn oversized_requests_and_header_floods_are_refused_with_a_log_line() {
    let origin = vod_origin();
    let (proxy, _cache) = proxy_with_limits(&origin, "");
    let url = proxy.url("/o/vod");

    let mut big = RtspConn::connect(proxy.port());
    let request = format!(
        "DESCRIBE {url} RTSP/1.0\r\nCSeq: 7\r\nX-Padding: {}\r\n\r\n",
        "a".repeat(70 * 1024)
    );
    let _ = big.send_raw(request.as_bytes()); // the daemon may close before reading it all
    let answer = big.read_response().expect("an answer");
    assert_eq!(answer.status(), 413, "{answer:?}");
    assert_eq!(answer.header("CSeq").map(str::trim), Some("7"));
    assert!(big.closed_within(Duration::from_secs(5)));

    let mut flood = RtspConn::connect(proxy.port());
    let mut request = format!("DESCRIBE {url} RTSP/1.0\r\nCSeq: 8\r\n");
    for i in 0..100 {
        request += &format!("X-H{i}: {i}\r\n");
    }
    request += "\r\n";
    let _ = flood.send_raw(request.as_bytes());
    let answer = flood.read_response().expect("an answer");
    assert_eq!(answer.status(), 400, "{answer:?}");
    assert!(flood.closed_within(Duration::from_secs(5)));

    assert!(proxy.wait_log_count("bad request from player", 2, Duration::from_secs(5)));
    let logs = proxy.logs();
    assert!(logs.contains("larger than 65536 bytes"), "{logs}");
    assert!(logs.contains("more than 64 header lines"), "{logs}");
    assert_ffprobe_plays(&proxy, &url);
}
