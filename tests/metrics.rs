//! Issue 5: the Prometheus metrics at `GET /metrics` on the admin API, read
//! from the real daemon while real players (ffprobe) and scripted RTSP
//! clients play through it from the GStreamer origin. The exposition text is
//! parsed (families, label sets, values), never grepped.

mod support;

use std::collections::BTreeMap;
use std::net::UdpSocket;
use std::thread;
use std::time::{Duration, Instant};

use support::*;

const VOD_SECS: u32 = 4;
const FRAME_RATE: u64 = 25;

// ---------------------------------------------------------------------------
// The exposition format (OpenMetrics text, as prometheus-client writes it)

#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A parsed `/metrics` answer.
#[derive(Debug)]
struct Exposition {
    /// Family name → type (`counter`, `gauge`, `histogram`).
    types: BTreeMap<String, String>,
    samples: Vec<Sample>,
    text: String,
}

impl Exposition {
    /// Parses the text; panics on any line that is not a comment, `# EOF`
    /// or a well-formed sample.
    fn parse(text: &str) -> Exposition {
        let mut types = BTreeMap::new();
        let mut samples = Vec::new();
        let mut saw_eof = false;
        for line in text.lines() {
            assert!(!saw_eof, "text after # EOF: {line:?}");
            if line == "# EOF" {
                saw_eof = true;
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
                types.insert(name.to_string(), kind.to_string());
            } else if line.starts_with("# HELP ") || line.starts_with("# UNIT ") {
            } else {
                samples.push(parse_sample(line));
            }
        }
        assert!(saw_eof, "no # EOF at the end:\n{text}");
        Exposition {
            types,
            samples,
            text: text.to_string(),
        }
    }

    /// The value of the sample `name` whose labels are exactly `labels`.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let want: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.samples
            .iter()
            .find(|s| s.name == name && s.labels == want)
            .map(|s| s.value)
    }

    /// Like [`get`](Self::get), a counter not yet incremented reading 0.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels).unwrap_or(0.0)
    }

    /// Like [`get`](Self::get), but the sample must be there.
    fn must(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels)
            .unwrap_or_else(|| panic!("no sample {name}{labels:?} in:\n{}", self.text))
    }

    fn lookups(&self, outcome: &str) -> f64 {
        self.value("streamcache_cache_lookups_total", &[("outcome", outcome)])
    }

    fn sessions(&self, state: &str, transport: &str) -> f64 {
        self.must(
            "streamcache_sessions",
            &[("state", state), ("transport", transport)],
        )
    }
}

/// `name{k="v",...} value` (labels optional), with escapes in label values.
fn parse_sample(line: &str) -> Sample {
    let bad = || -> ! { panic!("malformed sample line {line:?}") };
    let name_end = line.find(['{', ' ']).unwrap_or_else(|| bad());
    let name = &line[..name_end];
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    {
        bad();
    }
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(mut inner) = rest.strip_prefix('{') {
        loop {
            if let Some(after) = inner.strip_prefix('}') {
                rest = after;
                break;
            }
            let (key, after) = inner.split_once("=\"").unwrap_or_else(|| bad());
            let mut value = String::new();
            let mut chars = after.char_indices();
            let end = loop {
                match chars.next() {
                    Some((_, '\\')) => match chars.next() {
                        Some((_, 'n')) => value.push('\n'),
                        Some((_, c @ ('\\' | '"'))) => value.push(c),
                        _ => bad(),
                    },
                    Some((i, '"')) => break i,
                    Some((_, c)) => value.push(c),
                    None => bad(),
                }
            };
            assert!(
                labels.insert(key.to_string(), value).is_none(),
                "label {key} twice in {line:?}"
            );
            inner = &after[end + 1..];
            inner = inner.strip_prefix(',').unwrap_or(inner);
        }
    }
    let value = rest
        .strip_prefix(' ')
        .map(|v| v.split(' ').next().unwrap_or(v)) // an optional timestamp follows
        .and_then(|v| match v {
            "+Inf" => Some(f64::INFINITY),
            "-Inf" => Some(f64::NEG_INFINITY),
            v => v.parse().ok(),
        })
        .unwrap_or_else(|| bad());
    Sample {
        name: name.to_string(),
        labels,
        value,
    }
}

#[test]
fn the_exposition_parser_reads_labels_and_rejects_garbage() {
    let s = parse_sample(r#"a_total{mount="/x \"y\"",reason="r\\n"} 12"#);
    assert_eq!(s.name, "a_total");
    assert_eq!(s.labels["mount"], "/x \"y\"");
    assert_eq!(s.labels["reason"], "r\\n");
    assert_eq!(s.value, 12.0);
    assert_eq!(parse_sample("b 1.5").value, 1.5);
    assert_eq!(parse_sample("c{le=\"+Inf\"} 3").labels["le"], "+Inf");
    for bad in ["", "x", "x{a=\"1\" 2", "x{a=1} 2", "x 1e", "x{a=\"1\"}"] {
        assert!(
            std::panic::catch_unwind(|| parse_sample(bad)).is_err(),
            "{bad:?} parsed"
        );
    }
}

/// `GET /metrics`, checked and parsed.
fn scrape(proxy: &Proxy) -> Exposition {
    let response = proxy.admin_get("/metrics");
    assert_eq!(response.status, 200, "{response:?}");
    let content_type = response
        .headers
        .iter()
        .find(|(n, _)| n == "content-type")
        .map(|(_, v)| v.as_str());
    assert_eq!(
        content_type,
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    Exposition::parse(&response.body)
}

/// Scrapes until `done` holds; panics with the last scrape after 30 s.
/// `between` runs between scrapes (e.g. to keep reading a player's media).
fn wait_metrics(
    proxy: &Proxy,
    what: &str,
    mut between: impl FnMut(),
    done: impl Fn(&Exposition) -> bool,
) -> Exposition {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let m = scrape(proxy);
        if done(&m) {
            return m;
        }
        assert!(
            Instant::now() < deadline,
            "never: {what}\n{}\n{}",
            m.text,
            proxy.logs()
        );
        between();
        thread::sleep(Duration::from_millis(100));
    }
}

/// Every family the README lists, with its type.
const FAMILIES: [(&str, &str); 11] = [
    ("streamcache_sessions", "gauge"),
    ("streamcache_player_sent_bytes", "counter"),
    ("streamcache_player_rtp_lost_packets", "counter"),
    ("streamcache_origin_received_bytes", "counter"),
    ("streamcache_origin_failures", "counter"),
    ("streamcache_origin_describe_seconds", "histogram"),
    ("streamcache_cache_lookups", "counter"),
    ("streamcache_cache_revalidations", "counter"),
    ("streamcache_store_used_bytes", "gauge"),
    ("streamcache_store_budget_bytes", "gauge"),
    ("streamcache_store_evictions", "counter"),
];

fn assert_families(m: &Exposition) {
    for (name, kind) in FAMILIES {
        assert_eq!(
            m.types.get(name).map(String::as_str),
            Some(kind),
            "family {name}:\n{}",
            m.text
        );
    }
}

/// Mount labels are mount paths, never origin URLs (which may carry
/// credentials), and no label value names a player.
fn no_origin_urls_in_labels(m: &Exposition) {
    for s in &m.samples {
        for (key, value) in &s.labels {
            assert!(
                !value.contains("://") && !value.contains("127.0.0.1"),
                "{key}={value:?} in {}",
                s.name
            );
            if key == "mount" {
                assert!(value.starts_with('/'), "mount label {value:?}");
            }
        }
    }
}

fn all_sessions_ended(m: &Exposition) -> bool {
    m.samples
        .iter()
        .filter(|s| s.name == "streamcache_sessions")
        .all(|s| s.value == 0.0)
}

fn start_proxy(mounts: &[Mount]) -> (Proxy, tempfile::TempDir) {
    let cache = temp_dir();
    let proxy = Proxy::start(&Proxy::config(cache.path(), mounts));
    (proxy, cache)
}

// ---------------------------------------------------------------------------

/// An on-demand title: the first play is a miss relayed from the origin and
/// recorded (bytes in from the origin, bytes out to the player, the store
/// grows); the second is served from the store: hits, more bytes out,
/// nothing more from the origin.
#[test]
fn a_vod_title_is_a_miss_then_hits_with_bytes_and_store_usage() {
    let origin = Origin::start(OriginOpts::new().media(test_media(VOD_SECS)));
    let (proxy, _cache) = start_proxy(&[Mount::new("/vod", &origin.url("/vod"))]);
    let url = proxy.url("/vod");
    let mount = [("mount", "/vod")];

    let idle = scrape(&proxy);
    assert_families(&idle);
    assert_eq!(idle.lookups("miss"), 0.0);
    assert_eq!(idle.lookups("hit"), 0.0);
    assert_eq!(idle.must("streamcache_store_used_bytes", &[]), 0.0);
    assert_eq!(
        idle.must("streamcache_store_budget_bytes", &[]),
        (1u64 << 30) as f64
    );
    assert!(all_sessions_ended(&idle), "{}", idle.text);

    let first = ffprobe_count_frames(&url, "tcp", None);
    assert_eq!(first.video, u64::from(VOD_SECS) * FRAME_RATE, "{first:?}");
    proxy.wait_cached(&url, Duration::from_secs(30));
    let filled = scrape(&proxy);
    // ffprobe's DESCRIBE and first SETUP found nothing in the store (the
    // recording starts with PLAY); wait_cached's DESCRIBEs while it was
    // being recorded count as partial.
    assert_eq!(filled.lookups("miss"), 2.0, "{}", filled.text);
    assert_eq!(filled.lookups("hit"), 1.0, "wait_cached's last DESCRIBE");
    let from_origin = filled.must("streamcache_origin_received_bytes_total", &mount);
    assert!(from_origin > 0.0);
    let to_players = filled.must("streamcache_player_sent_bytes_total", &mount);
    assert!(to_players > 0.0);
    assert!(filled.must("streamcache_store_used_bytes", &[]) > 0.0);
    assert_eq!(filled.must("streamcache_store_evictions_total", &[]), 0.0);
    assert_eq!(
        filled.must("streamcache_origin_describe_seconds_count", &mount),
        1.0,
        "one DESCRIBE at the origin"
    );
    assert_eq!(
        filled.value(
            "streamcache_origin_failures_total",
            &[("mount", "/vod"), ("reason", "error_status")]
        ),
        0.0
    );

    let second = ffprobe_count_frames(&url, "udp", None);
    assert_eq!(second.video, first.video, "{second:?}");
    let after = wait_metrics(
        &proxy,
        "the second player's session ended",
        || {},
        all_sessions_ended,
    );
    // One lookup for the DESCRIBE, one for the SETUP that started the session.
    assert_eq!(
        after.lookups("hit") - filled.lookups("hit"),
        2.0,
        "{}",
        after.text
    );
    assert_eq!(after.lookups("miss"), filled.lookups("miss"));
    assert!(after.must("streamcache_player_sent_bytes_total", &mount) > to_players);
    assert_eq!(
        after.must("streamcache_origin_received_bytes_total", &mount),
        from_origin,
        "the store served it: nothing more from the origin"
    );
    assert_eq!(origin.sessions(), 1, "{:?}", origin.lines());
    no_origin_urls_in_labels(&after);
}

/// A compound RTCP receiver report (RFC 3550 §6.4.2) from `reporter` with
/// one block about `source`: `cumulative_lost` packets lost so far.
fn receiver_report(reporter: u32, source: u32, cumulative_lost: u32) -> Vec<u8> {
    let mut rr = vec![0x81, 201, 0, 7];
    rr.extend_from_slice(&reporter.to_be_bytes());
    rr.extend_from_slice(&source.to_be_bytes());
    rr.extend_from_slice(&(cumulative_lost & 0x00ff_ffff).to_be_bytes()); // fraction 0
    rr.extend_from_slice(&[0; 16]); // highest seq, jitter, LSR, DLSR
    rr
}

fn interleaved(channel: u8, data: &[u8]) -> Vec<u8> {
    let mut frame = vec![b'$', channel];
    frame.extend_from_slice(&(data.len() as u16).to_be_bytes());
    frame.extend_from_slice(data);
    frame
}

/// The sessions gauge follows players by state and transport while they
/// play a live stream, and the loss players report in RTCP (interleaved and
/// over UDP) is counted, malformed reports ignored.
#[test]
fn sessions_by_state_and_transport_and_reported_loss() {
    let origin = Origin::start(OriginOpts::new());
    let (proxy, _cache) = start_proxy(&[Mount::new("/cam", &origin.url("/live"))]);
    let url = proxy.url("/cam");
    let lost = |m: &Exposition| {
        m.must(
            "streamcache_player_rtp_lost_packets_total",
            &[("mount", "/cam")],
        )
    };

    // A TCP-interleaved player.
    let mut tcp = RtspConn::connect(proxy.port());
    let (tcp_session, _) = tcp.play(&url, None);
    let (channel, _) = tcp.read_interleaved().expect("media over TCP");
    assert!(channel < 4);
    let m = wait_metrics(
        &proxy,
        "one TCP player playing",
        || {},
        |m| m.sessions("playing", "tcp") == 1.0,
    );
    assert_eq!(m.sessions("playing", "udp"), 0.0);
    assert_eq!(lost(&m), 0.0);

    // Its receiver reports on the video track's RTCP channel: 5 lost, then
    // 12; a malformed one between them changes nothing.
    tcp.send_raw(&interleaved(1, &receiver_report(0xAB, 0x1234, 5)))
        .unwrap();
    tcp.send_raw(&interleaved(1, &[0x81, 201, 0, 40, 1, 2]))
        .unwrap();
    tcp.send_raw(&interleaved(1, &receiver_report(0xAB, 0x1234, 12)))
        .unwrap();
    let drain = |conn: &mut RtspConn| {
        conn.closed_within(Duration::from_millis(50));
    };
    wait_metrics(
        &proxy,
        "12 packets lost",
        || drain(&mut tcp),
        |m| lost(m) == 12.0,
    );

    // Paused.
    let pause = tcp.request("PAUSE", &url, &[("Session", &tcp_session)]);
    assert_eq!(pause.status(), 200, "{pause:?}");
    wait_metrics(
        &proxy,
        "the TCP player paused",
        || drain(&mut tcp),
        |m| m.sessions("paused", "tcp") == 1.0 && m.sessions("playing", "tcp") == 0.0,
    );

    // A UDP player; its RTCP goes to the port after the one media comes from.
    let pairs: Vec<(UdpSocket, UdpSocket)> = (0..2).map(|_| udp_port_pair()).collect();
    let mut udp = RtspConn::connect(proxy.port());
    let (udp_session, _) = udp.play(&url, Some(&pairs));
    let mut buf = [0u8; 2048];
    let (_, media_from) = pairs[0].0.recv_from(&mut buf).expect("media over UDP");
    let m = wait_metrics(
        &proxy,
        "one UDP player playing",
        || drain(&mut tcp),
        |m| m.sessions("playing", "udp") == 1.0,
    );
    assert_eq!(m.sessions("paused", "tcp"), 1.0);
    let rtcp_to = (media_from.ip(), media_from.port() + 1);
    pairs[0]
        .1
        .send_to(&receiver_report(0xCD, 0x5678, 3), rtcp_to)
        .unwrap();
    pairs[0].1.send_to(b"not rtcp", rtcp_to).unwrap();
    wait_metrics(
        &proxy,
        "15 packets lost",
        || drain(&mut tcp),
        |m| lost(m) == 15.0,
    );

    // Both leave: the gauge goes back to zero.
    let bye = tcp.request("TEARDOWN", &url, &[("Session", &tcp_session)]);
    assert_eq!(bye.status(), 200);
    let bye = udp.request("TEARDOWN", &url, &[("Session", &udp_session)]);
    assert_eq!(bye.status(), 200);
    let m = wait_metrics(&proxy, "no sessions left", || {}, all_sessions_ended);
    assert!(m.must("streamcache_player_sent_bytes_total", &[("mount", "/cam")]) > 0.0);
    assert!(
        m.must(
            "streamcache_origin_received_bytes_total",
            &[("mount", "/cam")]
        ) > 0.0
    );
    no_origin_urls_in_labels(&m);
}

/// A real player on a live mount: while ffmpeg pulls over UDP the gauge
/// shows it; the loss family has its series for the mount (on loopback the
/// player's reports say nothing was lost).
#[test]
fn a_real_udp_player_shows_in_the_sessions_gauge() {
    let origin = Origin::start(OriginOpts::new());
    let (proxy, _cache) = start_proxy(&[Mount::new("/cam", &origin.url("/live"))]);
    let url = proxy.url("/cam");
    thread::scope(|s| {
        let player = s.spawn(|| ffmpeg_pull(&url, "udp", 6));
        let m = wait_metrics(
            &proxy,
            "ffmpeg playing over UDP",
            || {},
            |m| m.sessions("playing", "udp") == 1.0,
        );
        assert_eq!(m.sessions("playing", "tcp"), 0.0);
        assert!(m
            .get(
                "streamcache_player_rtp_lost_packets_total",
                &[("mount", "/cam")]
            )
            .is_some());
        let pull = player.join().unwrap();
        assert!(pull.video_kb > 0, "{:?}", pull.output);
    });
    wait_metrics(&proxy, "ffmpeg's session ended", || {}, all_sessions_ended);
}

/// An origin that is down: the failure is counted under the mount's path
/// and the reason, and the mount's credentials appear nowhere.
#[test]
fn origin_failures_by_mount_and_reason() {
    let dead = closed_port(); // nothing listens there
    let (proxy, _cache) =
        start_proxy(&[
            Mount::new("/down", &format!("rtsp://127.0.0.1:{dead}/live"))
                .credentials("viewer", "s3cret-pw"),
        ]);
    let url = proxy.url("/down");
    let before = scrape(&proxy);
    assert_eq!(
        before.value(
            "streamcache_origin_failures_total",
            &[("mount", "/down"), ("reason", "connect_refused")]
        ),
        0.0
    );

    let mut conn = RtspConn::connect(proxy.port());
    let resp = conn.request("DESCRIBE", &url, &[]);
    assert_eq!(resp.status(), 503, "{resp:?}");
    let probe = ffprobe_count_frames(&url, "tcp", None);
    assert_eq!(probe.video, 0);

    let m = scrape(&proxy);
    assert_eq!(
        m.must(
            "streamcache_origin_failures_total",
            &[("mount", "/down"), ("reason", "connect_refused")]
        ),
        2.0,
        "one per DESCRIBE (ours and ffprobe's)"
    );
    assert_eq!(m.lookups("miss"), 2.0);
    assert_eq!(
        m.value(
            "streamcache_origin_describe_seconds_count",
            &[("mount", "/down")]
        ),
        0.0
    );
    assert!(!m.text.contains("s3cret-pw") && !m.text.contains("viewer"));
    no_origin_urls_in_labels(&m);
}
