//! Hostile clients against the real daemon: a player driving another's
//! session, a flood of refused requests (the log stays short and still
//! names the path and the client), a connection flood beyond the file
//! descriptor limit, slow clients holding the admin API, a non-numeric CSeq;
//! and the admin API's index and list of mounts.

mod support;

use std::net::{Ipv4Addr, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use support::*;

const OTHER_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

fn proxy_for(origin: &Origin) -> (Proxy, tempfile::TempDir) {
    let cache = temp_dir();
    let config = Proxy::config(cache.path(), &[Mount::new("/o", &origin.url("/"))]);
    (Proxy::start(&config), cache)
}

/// Interleaved packets keep coming to `conn` (its session plays on).
fn receives_media(conn: &mut RtspConn, packets: usize) -> bool {
    (0..packets).all(|_| conn.read_interleaved().is_ok())
}

#[test]
fn another_address_cannot_drive_a_session() {
    let origin = Origin::start(OriginOpts::new().media(test_media(20)));
    let (proxy, _cache) = proxy_for(&origin);
    let url = proxy.url("/o/vod");

    let mut player = RtspConn::connect(proxy.port());
    let (session, _) = player.play(&url, None);
    assert!(receives_media(&mut player, 20), "{}", proxy.logs());

    // Another address presenting the id is told there is no such session.
    let mut intruder = RtspConn::connect_from(proxy.port(), OTHER_IP);
    let track = format!("{url}/trackID=1");
    for (method, target) in [
        ("PAUSE", url.as_str()),
        ("PLAY", url.as_str()),
        ("GET_PARAMETER", url.as_str()),
        ("SETUP", track.as_str()),
        ("TEARDOWN", url.as_str()),
    ] {
        let answer = intruder.request(
            method,
            target,
            &[
                ("Session", &session),
                ("Transport", "RTP/AVP/TCP;unicast;interleaved=2-3"),
            ],
        );
        assert_eq!(answer.status(), 454, "{method}: {answer:?}");
    }
    assert!(proxy.wait_log(
        "request refused: 454, the session belongs to another player",
        Duration::from_secs(5)
    ));

    // The player was not paused nor torn down: its media keeps coming, and
    // its own requests are answered.
    assert!(receives_media(&mut player, 50), "{}", proxy.logs());
    let own = player.request("GET_PARAMETER", &url, &[("Session", &session)]);
    assert_eq!(own.status(), 200, "{own:?}");
    let teardown = player.request("TEARDOWN", &url, &[("Session", &session)]);
    assert_eq!(teardown.status(), 200, "{teardown:?}");
}

/// The `repeated=N` of a log line (0 when absent).
fn repeated(line: &str) -> u64 {
    line.split_whitespace()
        .find_map(|field| field.strip_prefix("repeated="))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_refusal_flood_is_a_few_log_lines_with_a_count() {
    const FLOOD: u64 = 2000;
    let cache = temp_dir();
    let origin = loopback_url(closed_port(), "/");
    let config = Proxy::config(cache.path(), &[Mount::new("/demo", &origin)]);
    let proxy = Proxy::start(&config);

    // One request for an unmounted path, through `..` out of a mount.
    let mut typo = RtspConn::connect_from(proxy.port(), OTHER_IP);
    let answer = typo.request("DESCRIBE", &proxy.url("/demo/../vod"), &[]);
    assert_eq!(answer.status(), 404, "{answer:?}");
    assert!(proxy.wait_log("request refused: 404", Duration::from_secs(5)));
    let line = proxy
        .logs()
        .lines()
        .find(|l| l.contains("request refused: 404"))
        .map(str::to_owned)
        .unwrap_or_default();
    assert!(
        line.contains("path=\"/vod\"")
            && line.contains("player=127.0.0.2:")
            && line.contains("method=\"DESCRIBE\""),
        "{line}"
    );

    // A flood of them from another client, on one connection.
    let mut flood = RtspConn::connect(proxy.port());
    for _ in 0..FLOOD {
        let answer = flood.request("DESCRIBE", &proxy.url("/nowhere"), &[]);
        assert_eq!(answer.status(), 404, "{answer:?}");
    }
    // Its first line at once, the rest counted and told by the next flush:
    // every refusal is accounted for, in a handful of lines.
    let flood_lines = || -> Vec<String> {
        proxy
            .logs()
            .lines()
            .filter(|l| l.contains("request refused: 404") && !l.contains("127.0.0.2"))
            .map(str::to_owned)
            .collect()
    };
    let told = |lines: &[String]| -> u64 {
        lines
            .iter()
            .map(|l| repeated(l) + u64::from(!l.contains("(repeated)")))
            .sum()
    };
    let lines = wait_for(Duration::from_secs(30), || {
        let lines = flood_lines();
        (told(&lines) == FLOOD).then_some(lines)
    })
    .unwrap_or_else(|| panic!("{:#?}", flood_lines()));
    assert!(lines.len() <= 4, "{lines:#?}");
    assert!(lines[0].contains("path=\"/nowhere\""), "{lines:#?}");
}

#[test]
fn a_non_numeric_cseq_is_refused_with_400() {
    let cache = temp_dir();
    let origin = loopback_url(closed_port(), "/");
    let proxy = Proxy::start(&Proxy::config(cache.path(), &[Mount::new("/o", &origin)]));
    let mut conn = RtspConn::connect(proxy.port());
    conn.send_raw(b"OPTIONS * RTSP/1.0\r\nCSeq: 1; DROP TABLE\r\n\r\n")
        .expect("send");
    let answer = conn.read_response().expect("an answer");
    assert_eq!(answer.status(), 400, "{answer:?}");
    assert_eq!(answer.header("CSeq"), None, "{answer:?}");
}

#[test]
fn a_connection_flood_stays_within_the_descriptor_budget() {
    const NOFILE: u32 = 512;
    let cache = temp_dir();
    let origin = loopback_url(closed_port(), "/");
    let config = Proxy::config(cache.path(), &[Mount::new("/o", &origin)]);
    let nofile = format!("--nofile={NOFILE}:{NOFILE}");
    let proxy = Proxy::start_under(&config, &["prlimit", &nofile, "--"]);
    // The defaults (8,000 connections, 4,000 sessions) cannot fit: lowered.
    assert!(proxy.wait_log("lowered to fit", Duration::from_secs(5)));

    // More connections than the daemon has descriptors, held open.
    let flood: Vec<TcpStream> = (0..NOFILE + 100)
        .filter_map(|_| TcpStream::connect(("127.0.0.1", proxy.port())).ok())
        .collect();
    assert!(flood.len() > NOFILE as usize, "{} connected", flood.len());

    // The admin API answers meanwhile.
    let admin = proxy.admin_get("/healthz");
    assert_eq!(admin.status, 200, "{admin}");
    // A new player is refused politely (once the connections being refused
    // have had their say): 503 with Retry-After, never silence.
    let refused = wait_for(Duration::from_secs(15), || {
        let mut conn = RtspConn::connect(proxy.port());
        conn.set_read_timeout(Duration::from_secs(3));
        conn.send_raw(b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n\r\n")
            .ok()?;
        let answer = conn.read_response().ok()?;
        (answer.status() == 503).then_some(answer)
    })
    .unwrap_or_else(|| panic!("no 503 under the flood:\n{}", proxy.logs()));
    assert!(refused.header("Retry-After").is_some(), "{refused:?}");
    assert!(
        !proxy.logs().contains("accept failed"),
        "the daemon ran out of descriptors:\n{}",
        proxy.logs()
    );

    // The flood gone, players are served again.
    drop(flood);
    let served = wait_for(Duration::from_secs(10), || {
        let mut conn = RtspConn::connect(proxy.port());
        conn.set_read_timeout(Duration::from_secs(3));
        conn.send_raw(b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n\r\n")
            .ok()?;
        (conn.read_response().ok()?.status() == 200).then_some(())
    });
    assert!(served.is_some(), "{}", proxy.logs());
}

#[test]
fn the_admin_api_answers_under_200_slow_clients() {
    let cache = temp_dir();
    let origin = loopback_url(closed_port(), "/");
    let proxy = Proxy::start(&Proxy::config(cache.path(), &[Mount::new("/o", &origin)]));
    let port = proxy.admin_port().expect("admin API");

    // 200 clients that connect and send nothing, or half a request head.
    let slow: Vec<RtspConn> = (0..200)
        .map(|i| {
            let mut conn = RtspConn::connect_from(port, OTHER_IP);
            if i % 2 == 0 {
                let _ = conn.send_raw(b"GET /healthz HTTP/1.1\r\nHost: x\r\n");
            }
            conn
        })
        .collect();

    // The operator's request is answered while the slow clients the admin
    // API took in still hold their connections: its answer did not wait
    // for their header timeout to free a slot. (Judged by what is still
    // open when it answers, not by a time.)
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(admin_request(port, "GET", "/healthz", &[]));
    });
    let answer = rx
        .recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| panic!("the admin API did not answer:\n{}", proxy.logs()));
    assert_eq!(answer.status, 200, "{answer}");
    let mut slow = slow;
    let mut open = 0;
    for conn in &mut slow {
        if !conn.closed_within(Duration::from_millis(1)) {
            open += 1;
        }
    }
    assert!(
        (1..=8).contains(&open),
        "{open} slow connections still open when /healthz answered \
         (the per-address limit keeps at most 8)"
    );

    // The slow clients are cut off: those over the per-address limit at
    // once, the others by the header timeout.
    for conn in &mut slow {
        assert!(conn.closed_within(Duration::from_secs(10)));
    }
}

#[test]
fn the_admin_api_lists_its_endpoints_and_the_mounts() {
    let origin = Origin::start(OriginOpts::new().media(test_media(3)));
    let cache = temp_dir();
    let config = Proxy::config(
        cache.path(),
        &[
            Mount::new("/o", &origin.url("/")).credentials("origin-user", "origin-secret"),
            Mount::new("/tcp", &origin.url("/")).transport("tcp"),
        ],
    );
    let proxy = Proxy::start(&config);

    let index = proxy.admin_get("/").json();
    let paths: Vec<&str> = index["endpoints"]
        .as_array()
        .expect("endpoints")
        .iter()
        .filter_map(|e| e["path"].as_str())
        .collect();
    for path in ["/healthz", "/metrics", "/api/v1/mounts", "/api/v1/sessions"] {
        assert!(paths.contains(&path), "{index}");
    }

    let mounts = proxy.admin_get("/api/v1/mounts");
    assert_eq!(mounts.status, 200, "{mounts}");
    assert!(!mounts.to_string().contains("origin-secret"), "{mounts}");
    assert!(!mounts.to_string().contains("origin-user"), "{mounts}");
    let list = mounts.json();
    let o = &list["mounts"][0];
    assert_eq!(o["path"], "/o", "{list}");
    assert_eq!(o["origin"], origin.url("/"), "{list}");
    assert_eq!(o["transport"], "auto", "{list}");
    assert_eq!(o["auth"], false, "{list}");
    assert!(o["seen"].is_null(), "{list}");
    assert_eq!(list["mounts"][1]["transport"], "tcp", "{list}");

    // What players asked for under a mount is counted by kind.
    let mut player = RtspConn::connect(proxy.port());
    for path in ["/o/vod", "/o/live"] {
        let describe = player.request("DESCRIBE", &proxy.url(path), &[]);
        assert_eq!(describe.status(), 200, "{describe:?}");
    }
    let list = proxy.admin_get("/api/v1/mounts").json();
    assert_eq!(list["mounts"][0]["seen"]["on_demand"], 1, "{list}");
    assert_eq!(list["mounts"][0]["seen"]["live"], 1, "{list}");
    assert!(list["mounts"][1]["seen"].is_null(), "{list}");
}
