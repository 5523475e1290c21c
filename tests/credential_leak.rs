//! Origin credentials never leave the daemon: with a mount whose origin
//! demands a password, a player plays through it, then things go wrong
//! (the wrong origin password, the origin down, a malformed request), and
//! every output is collected — the daemon's log, the RTSP responses and SDP
//! players got, ffprobe's own output, `check-config` output (valid and
//! invalid), the admin `/metrics` and `/api/v1/...` answers — and searched
//! for the password, `user:password` and its Basic (base64) form.

mod support;

use std::time::Duration;

use support::*;

const USER: &str = "origin-user";
const PASSWORD: &str = "Orig1n-Pa55word";
const WRONG_PASSWORD: &str = "Wr0ng-Pa55word";

/// Everything an RTSP exchange showed the player.
fn exchange_text(messages: &[RtspMessage]) -> String {
    messages
        .iter()
        .map(|m| {
            let headers: Vec<String> = m.headers.iter().map(|(n, v)| format!("{n}: {v}")).collect();
            format!(
                "{}\n{}\n\n{}",
                m.start_line,
                headers.join("\n"),
                m.body_text()
            )
        })
        .collect::<Vec<_>>()
        .join("\n---\n")
}

/// The forms a leaked secret could take.
fn secrets() -> Vec<String> {
    let mut out = Vec::new();
    for password in [PASSWORD, WRONG_PASSWORD] {
        out.push(password.to_owned());
        out.push(format!("{USER}:{password}"));
        out.push(base64(format!("{USER}:{password}").as_bytes()));
    }
    out
}

fn assert_clean(what: &str, text: &str) {
    assert!(!text.is_empty(), "{what}: nothing collected");
    for secret in secrets() {
        assert!(
            !text.contains(&secret),
            "{what} shows an origin credential ({secret}):\n{text}"
        );
    }
}

#[test]
fn origin_credentials_appear_in_no_output() {
    let origin = Origin::start(OriginOpts::new().media(test_media(3)).auth(
        AuthScheme::Digest,
        USER,
        PASSWORD,
    ));
    let cache = temp_dir();
    let config = Proxy::config(
        cache.path(),
        &[
            Mount::new("/o", &origin.url("/")).credentials(USER, PASSWORD),
            Mount::new("/wrong", &origin.url("/")).credentials(USER, WRONG_PASSWORD),
        ],
    );
    assert!(
        config.contains(PASSWORD),
        "the test must configure the password"
    );
    let proxy = Proxy::start(&config);
    assert!(
        proxy.admin_port().is_some(),
        "the test config enables the admin API"
    );
    let mut collected: Vec<(String, String)> = Vec::new();

    // A real player through the proxy (a miss, then a hit), and the
    // scripted exchange with its SDP.
    for transport in ["tcp", "udp"] {
        let counts = ffprobe_count_frames(&proxy.url("/o/vod"), transport, None);
        assert_eq!(counts.video, 75, "{:?}\n{}", counts.output, proxy.logs());
        collected.push((
            format!("ffprobe {transport}"),
            format!("{:?}", counts.output),
        ));
    }
    // The wrong origin password (on the live title, before anything is
    // stored or relayed for it: a cached title would be served without the origin).
    let mut conn_wrong = RtspConn::connect(proxy.port());
    let wrong = conn_wrong.request("DESCRIBE", &proxy.url("/wrong/live"), &[]);
    assert!(wrong.status() >= 400, "{wrong:?}");
    let wrong_probe = ffprobe_count_frames(&proxy.url("/wrong/live"), "tcp", Some(2));
    assert_eq!(wrong_probe.video, 0);
    collected.push((
        "ffprobe wrong origin password".into(),
        format!("{:?}", wrong_probe.output),
    ));
    let mut conn = RtspConn::connect(proxy.port());
    let url = proxy.url("/o/live");
    let (describe, setup) = conn.describe_and_setup_first(&url);
    assert!(describe.body_text().contains("m=video"));
    assert_eq!(setup.status(), 200, "{setup:?}");
    let session = setup.session().unwrap().to_owned();
    let play = conn.request("PLAY", &url, &[("Session", &session)]);
    assert_eq!(play.status(), 200, "{play:?}");
    let _ = conn.read_interleaved().expect("media flows");
    // The admin API while a session runs.
    for path in [
        "/metrics",
        "/healthz",
        "/api/v1/presentations",
        "/api/v1/sessions",
        "/api/v1/cache",
        "/api/v1/nodes",
    ] {
        collected.push((format!("admin {path}"), proxy.admin_get(path).to_string()));
    }
    let teardown = conn.request("TEARDOWN", &url, &[("Session", &session)]);
    collected.push((
        "RTSP exchange".into(),
        exchange_text(&[describe, setup, play, teardown]),
    ));

    // A malformed request, then the origin down.
    let mut conn = RtspConn::connect(proxy.port());
    let mut bad = RtspConn::connect(proxy.port());
    bad.send_raw(b"DESCRIBE nonsense\r\nCSeq: 1\r\n\r\n")
        .unwrap();
    let bad_answer = bad.read_response().expect("an answer to a bad request");
    assert_eq!(bad_answer.status(), 400);
    let mut origin = origin;
    origin.kill();
    // A path not described yet: its DESCRIBE must go to the (dead) origin
    // (the live hub of /o/live may still be up for its linger).
    let down = conn.request("DESCRIBE", &proxy.url("/o/not-described"), &[]);
    assert!(down.status() >= 500, "{down:?}");
    collected.push((
        "RTSP errors".into(),
        exchange_text(&[wrong, bad_answer, down]),
    ));
    for path in ["/metrics", "/api/v1/presentations", "/api/v1/sessions"] {
        collected.push((
            format!("admin {path} after errors"),
            proxy.admin_get(path).to_string(),
        ));
    }

    // check-config, on the running config and on one that is invalid next
    // to the credentials.
    let checked = run_streamcache(&["check-config", proxy.config_path().to_str().unwrap()]);
    assert!(checked.success(), "{checked:?}");
    collected.push(("check-config".into(), format!("{checked:?}")));
    let broken = temp_dir();
    let in_url = config.replace(
        &format!("origin = \"{}\"", origin.url("/")),
        &format!(
            "origin = \"{}\"",
            origin.url_with_credentials("/", USER, PASSWORD)
        ),
    );
    let bad_key = config.replace("transport = \"auto\"", "transport = \"carrier-pigeon\"");
    for (name, text) in [("credentials-in-url", in_url), ("bad-key", bad_key)] {
        assert_ne!(text, config);
        let path = broken.path().join(format!("{name}.toml"));
        std::fs::write(&path, &text).unwrap();
        let refused = run_streamcache(&["check-config", path.to_str().unwrap()]);
        assert!(!refused.success(), "{refused:?}");
        collected.push((format!("check-config ({name})"), format!("{refused:?}")));
    }

    assert!(proxy.wait_log("origin", Duration::from_secs(5)));
    collected.push(("daemon log".into(), proxy.logs()));
    for (what, text) in &collected {
        assert_clean(what, text);
    }
}
