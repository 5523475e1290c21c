//! The admin HTTP API of the real daemon, with the real GStreamer origin and
//! real players: the token, JSON errors, presentations listed and purged
//! (refused while played unless forced), player sessions, configuration
//! reload through the API and by SIGHUP, and `streamcache cache purge` while
//! the daemon runs.

mod support;

use std::thread;
use std::time::Duration;

use serde_json::Value;
use support::*;

const TOKEN: &str = "s3cret-token";
const VOD_SECS: u32 = 6;
const WAIT: Duration = Duration::from_secs(30);

/// One request to the admin API on `port`, with the bearer `token` if
/// given; every answer of the API is JSON (panics otherwise).
fn http(port: u16, method: &str, path: &str, token: Option<&str>) -> AdminResponse {
    let auth = token.map(bearer);
    let headers: Vec<(&str, &str)> = auth.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let answer = admin_request(port, method, path, &headers);
    answer.json();
    answer
}

/// Whether the answer's header `name` starts with `value` (any case).
fn header_starts(answer: &AdminResponse, name: &str, value: &str) -> bool {
    answer
        .header(name)
        .is_some_and(|v| v.to_ascii_lowercase().starts_with(value))
}

fn with_token(config: String) -> String {
    config.replace("[admin]\n", &format!("[admin]\ntoken = \"{TOKEN}\"\n"))
}

fn sessions(port: u16) -> Vec<Value> {
    let answer = http(port, "GET", "/api/v1/sessions", Some(TOKEN));
    assert_eq!(answer.status, 200, "{answer:?}");
    answer.json()["sessions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn presentations(port: u16) -> Vec<Value> {
    let answer = http(port, "GET", "/api/v1/presentations", Some(TOKEN));
    assert_eq!(answer.status, 200, "{answer:?}");
    answer.json()["presentations"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn describe_status(proxy: &Proxy, path: &str) -> u16 {
    RtspConn::connect(proxy.port())
        .request(
            "DESCRIBE",
            &proxy.url(path),
            &[("Accept", "application/sdp")],
        )
        .status()
}

/// Without the token, or with a wrong one, nothing is answered but 401;
/// errors are JSON with a message; a daemon without an admin API makes
/// `cache purge` say so.
#[test]
fn token_is_required_and_errors_are_json() {
    let cache = temp_dir();
    let proxy = Proxy::start(&with_token(Proxy::config(cache.path(), &[])));
    let port = proxy.admin_port().expect("admin API enabled");

    for token in [None, Some("wrong"), Some("s3cret-token-and-more")] {
        for (method, path) in [
            ("GET", "/healthz"),
            ("GET", "/api/v1/presentations"),
            ("POST", "/api/v1/reload"),
        ] {
            let answer = http(port, method, path, token);
            assert_eq!(
                answer.status, 401,
                "{method} {path} with {token:?}: {answer:?}"
            );
            assert!(!answer.error().is_empty(), "{answer:?}");
            assert!(
                header_starts(&answer, "www-authenticate", "bearer"),
                "{answer:?}"
            );
        }
    }
    let ok = http(port, "GET", "/healthz", Some(TOKEN));
    assert_eq!((ok.status, ok.json()["status"].as_str()), (200, Some("ok")));
    assert_eq!(presentations(port), Vec::<Value>::new());
    assert_eq!(sessions(port), Vec::<Value>::new());

    let unknown = http(port, "GET", "/api/v1/nothing", Some(TOKEN));
    assert_eq!(unknown.status, 404, "{unknown:?}");
    assert!(unknown.error().contains("/api/v1/nothing"), "{unknown:?}");
    let wrong_method = http(port, "POST", "/api/v1/sessions", Some(TOKEN));
    assert_eq!(wrong_method.status, 405, "{wrong_method:?}");
    assert!(
        header_starts(&wrong_method, "allow", "get"),
        "{wrong_method:?}"
    );
    assert!(!wrong_method.error().is_empty());
    let no_id = http(
        port,
        "DELETE",
        "/api/v1/presentations/0123abcd",
        Some(TOKEN),
    );
    assert_eq!(no_id.status, 404, "{no_id:?}");
    assert!(no_id.error().contains("0123abcd"), "{no_id:?}");
    let bad_force = http(
        port,
        "DELETE",
        "/api/v1/presentations/0123abcd?force=perhaps",
        Some(TOKEN),
    );
    assert_eq!(bad_force.status, 400, "{bad_force:?}");

    // A daemon holds the store and has no admin API: purge cannot happen,
    // and the CLI says why.
    let quiet_cache = temp_dir();
    let quiet = Proxy::start(&without_admin(Proxy::config(quiet_cache.path(), &[])));
    assert_eq!(quiet.admin_port(), None);
    let config = quiet.config_path().to_str().unwrap();
    let out = run_streamcache(&["cache", "--config", config, "purge", "rtsp://h:554/x"]);
    assert!(!out.success(), "{out:?}");
    assert!(out.stderr.contains("admin API is disabled"), "{out:?}");
}

/// HEAD is answered as GET is, without a body; the `Bearer` scheme name is
/// case-insensitive.
#[test]
fn head_and_any_case_bearer() {
    let cache = temp_dir();
    let proxy = Proxy::start(&with_token(Proxy::config(cache.path(), &[])));
    let port = proxy.admin_port().expect("admin API enabled");
    let auth = format!("bearer {TOKEN}");
    let auth = [("Authorization", auth.as_str())];
    for path in ["/healthz", "/metrics", "/api/v1/sessions"] {
        let head = admin_request(port, "HEAD", path, &auth);
        assert_eq!(head.status, 200, "HEAD {path}: {head:?}");
        assert!(head.body.is_empty(), "HEAD {path}: {head:?}");
        let get = admin_request(port, "GET", path, &auth);
        assert_eq!(get.status, 200, "GET {path}: {get:?}");
        assert!(!get.body.is_empty(), "GET {path}: {get:?}");
    }
    let head = admin_request(port, "HEAD", "/api/v1/reload", &auth);
    assert_eq!(head.status, 405, "{head:?}");
    assert!(
        head.headers
            .iter()
            .any(|(n, v)| n == "allow" && v == "POST"),
        "{head:?}"
    );
    let wrong = admin_request(port, "GET", "/healthz", &[("Authorization", "bearer nope")]);
    assert_eq!(wrong.status, 401, "{wrong:?}");
}

/// The config with `[admin] listen = ""`.
fn without_admin(config: String) -> String {
    let start = config
        .find("[admin]\nlisten = ")
        .expect("an [admin] listen line")
        + 8;
    let end = start + config[start..].find('\n').expect("line end");
    format!("{}listen = \"\"{}", &config[..start], &config[end..])
}

/// A fetched title is listed with its id, tracks and spans; a purge is
/// refused while a player plays it, forced it ends that player (its TCP
/// connection closes) and removes the title; `streamcache cache purge` goes
/// through the running daemon.
#[test]
fn presentations_listed_and_purged_unless_played() {
    let origin = Origin::start(OriginOpts::new().media(test_media(VOD_SECS)));
    let cache = temp_dir();
    let proxy = Proxy::start(&with_token(Proxy::config(
        cache.path(),
        &[Mount::new("/o", &origin.url("/"))],
    )));
    let port = proxy.admin_port().expect("admin API enabled");
    let url = proxy.url("/o/vod");
    let key = format!("rtsp://127.0.0.1:{}/vod", origin.port());
    let stored = || {
        wait_for(WAIT, || {
            presentations(port).into_iter().find(|p| {
                p["key"] == key.as_str() && p["state"] == "complete" && p["recording"] == false
            })
        })
    };

    let first = ffmpeg_pull(&url, "tcp", VOD_SECS + 5);
    assert!(first.video_kb > 0, "{first:?}");
    let entry = stored().unwrap_or_else(|| panic!("not stored: {:?}", presentations(port)));
    let id = entry["id"].as_str().expect("id").to_owned();
    assert!(
        !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'),
        "{entry}"
    );
    assert!(entry["bytes"].as_u64() > Some(0), "{entry}");
    let media: Vec<&str> = entry["tracks"]
        .as_array()
        .expect("tracks")
        .iter()
        .filter_map(|t| t["media"].as_str())
        .collect();
    assert_eq!(media, ["video", "audio"], "{entry}");
    let span = &entry["spans"][0];
    assert!(span["end"].as_f64() > span["start"].as_f64(), "{entry}");
    assert_eq!(entry["viewers"], 0, "{entry}");

    // A player of the stored title (TCP interleaved).
    let mut player = RtspConn::connect(proxy.port());
    let (session_id, _) = player.play(&url, None);
    let session = wait_for(WAIT, || {
        sessions(port)
            .into_iter()
            .find(|s| s["id"] == session_id.as_str() && s["state"] == "playing")
    })
    .unwrap_or_else(|| panic!("session not listed: {:?}", sessions(port)));
    assert_eq!(session["transport"], "tcp", "{session}");
    assert_eq!(session["source"], "cache", "{session}");
    assert_eq!(session["mount"], "/o", "{session}");
    assert_eq!(session["path"], "/o/vod", "{session}");
    assert!(
        session["player"]
            .as_str()
            .is_some_and(|p| p.starts_with("127.0.0.1:")),
        "{session}"
    );
    assert!(session["since_secs"].as_f64().is_some(), "{session}");
    assert!(session["started_at"].as_str().is_some(), "{session}");
    let listed = presentations(port);
    let entry = listed
        .iter()
        .find(|p| p["id"] == id.as_str())
        .expect("listed");
    assert_eq!(entry["viewers"], 1, "{entry}");
    assert!(entry["last_played"].as_str().is_some(), "{entry}");

    let path = format!("/api/v1/presentations/{id}");
    let refused = http(port, "DELETE", &path, Some(TOKEN));
    assert_eq!(refused.status, 409, "{refused:?}");
    assert!(refused.error().contains("force=true"), "{refused:?}");
    assert!(presentations(port).iter().any(|p| p["id"] == id.as_str()));

    let forced = http(port, "DELETE", &format!("{path}?force=true"), Some(TOKEN));
    assert_eq!(forced.status, 200, "{forced:?}");
    assert_eq!(forced.json()["sessions_ended"], 1, "{forced:?}");
    assert!(player.closed_within(WAIT), "player's connection not closed");
    assert!(
        !presentations(port).iter().any(|p| p["key"] == key.as_str()),
        "{:?}",
        presentations(port)
    );
    assert!(sessions(port).is_empty(), "{:?}", sessions(port));
    let gone = http(port, "DELETE", &path, Some(TOKEN));
    assert_eq!(gone.status, 404, "{gone:?}");

    // Fetched afresh, then purged by its key (percent-encoded in the query).
    let again = ffmpeg_pull(&url, "tcp", VOD_SECS + 5);
    assert!(again.video_kb > 0, "{again:?}");
    stored().unwrap_or_else(|| panic!("not stored again: {:?}", presentations(port)));
    let by_key = format!(
        "/api/v1/presentations?key={}",
        key.replace(':', "%3A").replace('/', "%2F")
    );
    let purged = http(port, "DELETE", &by_key, Some(TOKEN));
    assert_eq!(purged.status, 200, "{purged:?}");
    assert_eq!(purged.json()["key"], key.as_str(), "{purged:?}");
    let gone = http(port, "DELETE", &by_key, Some(TOKEN));
    assert_eq!(gone.status, 404, "{gone:?}");
    let unnamed = http(port, "DELETE", "/api/v1/presentations", Some(TOKEN));
    assert_eq!(unnamed.status, 400, "{unnamed:?}");

    // Fetched afresh, then purged by the CLI while the daemon holds the store.
    let again = ffmpeg_pull(&url, "tcp", VOD_SECS + 5);
    assert!(again.video_kb > 0, "{again:?}");
    stored().unwrap_or_else(|| panic!("not stored again: {:?}", presentations(port)));
    // The CLI finds the daemon's admin API by the config's address: give it
    // the bound one (the daemon's own file says port 0).
    let cli_dir = temp_dir();
    let cli_config = cli_dir.path().join("streamcache.toml");
    std::fs::write(&cli_config, proxy.config_as_bound()).unwrap();
    let config = cli_config.to_str().unwrap();
    let out = run_streamcache(&["cache", "--config", config, "purge", &key]);
    assert!(out.success(), "{out:?}");
    assert!(out.stdout.contains("through the running daemon"), "{out:?}");
    assert!(
        !presentations(port).iter().any(|p| p["key"] == key.as_str()),
        "{:?}",
        presentations(port)
    );
    let out = run_streamcache(&["cache", "--config", config, "purge", &key]);
    assert!(!out.success(), "{out:?}");
    assert!(out.stderr.contains("not in the cache"), "{out:?}");
}

/// A reload puts new mounts in force and takes removed ones away, ending
/// their players, while a player of an unchanged mount plays on; an invalid
/// file is refused with its problems and changes nothing; SIGHUP reloads too.
#[test]
fn reload_changes_mounts_and_keeps_other_players() {
    let origin = Origin::start(OriginOpts::new());
    let cache = temp_dir();
    let live = origin.url("/");
    let proxy = Proxy::start(&with_token(Proxy::config(
        cache.path(),
        &[Mount::new("/keep", &live), Mount::new("/gone", &live)],
    )));
    let port = proxy.admin_port().expect("admin API enabled");
    let original = std::fs::read_to_string(proxy.config_path()).unwrap();
    let write = |text: &str| std::fs::write(proxy.config_path(), text).unwrap();
    let reload = || http(port, "POST", "/api/v1/reload", Some(TOKEN));

    thread::scope(|s| {
        // Both mounts lead to the same origin title: one shared hub.
        let keep = s.spawn(|| ffmpeg_pull(&proxy.url("/keep/live"), "udp", 30));
        let gone = s.spawn(|| ffmpeg_pull(&proxy.url("/gone/live"), "tcp", 30));
        let playing = wait_for(WAIT, || {
            let list = sessions(port);
            let n = list.iter().filter(|s| s["state"] == "playing").count();
            (n == 2).then_some(list)
        })
        .unwrap_or_else(|| panic!("two players not listed: {:?}", sessions(port)));
        let keep_id = playing
            .iter()
            .find(|s| s["mount"] == "/keep")
            .map(|s| s["id"].clone())
            .expect("the /keep player");
        for session in &playing {
            assert_eq!(session["source"], "origin", "{session}");
            let transport = if session["mount"] == "/keep" {
                "udp"
            } else {
                "tcp"
            };
            assert_eq!(session["transport"], transport, "{session}");
        }

        write(
            &original
                .replace("path = \"/gone\"", "path = \"/new\"")
                .replace("linger_secs = 2", "linger_secs = 3"),
        );
        let answer = reload();
        assert_eq!(answer.status, 200, "{answer:?}");
        assert_eq!(
            answer.json()["added"],
            serde_json::json!(["/new"]),
            "{answer:?}"
        );
        assert_eq!(
            answer.json()["removed"],
            serde_json::json!(["/gone"]),
            "{answer:?}"
        );
        assert_eq!(
            answer.json()["changed"],
            serde_json::json!([]),
            "{answer:?}"
        );
        assert_eq!(
            answer.json()["restart_needed"],
            serde_json::json!(["origin.linger_secs"]),
            "{answer:?}"
        );
        assert_eq!(answer.json()["sessions_ended"], 1, "{answer:?}");

        // The removed mount's player was ended (its connection closed).
        let gone = gone.join().unwrap();
        assert!(gone.video_kb > 0, "{gone:?}");
        assert_eq!(describe_status(&proxy, "/gone/live"), 404);
        let fresh = ffprobe_count_frames(&proxy.url("/new/live"), "tcp", Some(2));
        assert!(fresh.video > 0, "{fresh:?}");

        // An invalid file is refused with its problems; nothing changes.
        write(&format!("{original}\n[bogus]\nsetting = 1\n"));
        let refused = reload();
        assert_eq!(refused.status, 422, "{refused:?}");
        // Logged as a refused SIGHUP is, naming the problem.
        assert!(
            proxy.wait_log_count("reload refused", 1, WAIT),
            "{}",
            proxy.logs()
        );
        assert!(proxy.logs().contains("bogus"), "{}", proxy.logs());
        assert!(!refused.error().is_empty(), "{refused:?}");
        let problem = &refused.json()["problems"][0];
        assert!(problem["line"].as_u64() > Some(0), "{refused:?}");
        assert!(
            problem["message"]
                .as_str()
                .is_some_and(|m| m.contains("bogus")),
            "{refused:?}"
        );
        assert_eq!(describe_status(&proxy, "/new/live"), 200);
        assert_eq!(describe_status(&proxy, "/gone/live"), 404);

        // SIGHUP: the same reload.
        write(&original.replace("path = \"/gone\"", "path = \"/hup\""));
        proxy.hangup();
        assert!(
            proxy.wait_log_count("configuration reloaded", 2, WAIT),
            "{}",
            proxy.logs()
        );
        assert_eq!(describe_status(&proxy, "/hup/live"), 200);
        assert_eq!(describe_status(&proxy, "/new/live"), 404);
        // A mount whose settings change is reported as changed.
        let hup = original.replace("path = \"/gone\"", "path = \"/hup\"");
        let block = format!("path = \"/hup\"\norigin = \"{live}\"\ntransport = \"auto\"");
        assert!(hup.contains(&block), "{hup}");
        write(&hup.replace(&block, &block.replace("auto", "tcp")));
        let answer = reload();
        assert_eq!(answer.status, 200, "{answer:?}");
        assert_eq!(
            answer.json()["changed"],
            serde_json::json!(["/hup"]),
            "{answer:?}"
        );
        assert_eq!(answer.json()["added"], serde_json::json!([]), "{answer:?}");
        assert_eq!(
            answer.json()["removed"],
            serde_json::json!([]),
            "{answer:?}"
        );
        assert_eq!(answer.json()["sessions_ended"], 0, "{answer:?}");

        write("[rtsp]\nlisen = \"typo\"\n");
        proxy.hangup();
        assert!(
            proxy.wait_log_count("reload refused", 2, WAIT),
            "{}",
            proxy.logs()
        );
        assert_eq!(describe_status(&proxy, "/hup/live"), 200);

        // The unchanged mount's player was never interrupted.
        let list = sessions(port);
        assert!(
            list.iter()
                .any(|s| s["id"] == keep_id && s["state"] == "playing"),
            "{list:?}"
        );
        let keep = keep.join().unwrap();
        assert!(keep.output.success(), "{keep:?}");
        assert!(keep.video_kb > 0, "{keep:?}");
    });
}
