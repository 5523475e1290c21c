//! Player authentication per mount, with real players: users stored as the
//! HA1 secrets `streamcache hash-password` prints; ffprobe (Digest MD5 or
//! Basic, credentials in the URL) and gst-launch (`rtspsrc user-id= user-pw=`)
//! get in with the right password and are refused with a wrong or missing
//! one; the session log lines name the user, transport, bytes and cache status.

mod support;

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::*;

const VOD_SECS: u32 = 4;
const USER: &str = "viewer";
const PASSWORD: &str = "s3cret-Pl4yer";

/// A proxy with one mount `/o` on `origin`, protected by `extra` (the mount
/// keys and `[[mount.user]]` tables appended after the mount).
fn protected_proxy(origin: &Origin, extra: &str) -> (Proxy, tempfile::TempDir) {
    let cache = temp_dir();
    let config = Proxy::config(cache.path(), &[Mount::new("/o", &origin.url("/"))]) + extra;
    (Proxy::start(&config), cache)
}

fn with_credentials(url: &str, user: &str, password: &str) -> String {
    url.replacen("rtsp://", &format!("rtsp://{user}:{password}@"), 1)
}

/// The session log lines (`session started` / `session ended`) so far.
fn session_lines(proxy: &Proxy, what: &str) -> Vec<String> {
    proxy
        .logs()
        .lines()
        .filter(|l| l.contains(what))
        .map(str::to_owned)
        .collect()
}

/// ffprobe gets in with Digest (credentials in the URL), is refused without
/// them or with a wrong password, and the session lines tell a miss from
/// the hit that follows, with the user.
#[test]
fn ffprobe_digest_in_the_url_and_session_log_lines() {
    let origin = Origin::start(OriginOpts::new().media(test_media(VOD_SECS)));
    let users = hash_password_lines(None, USER, PASSWORD);
    let (proxy, _cache) = protected_proxy(&origin, &users);
    let url = proxy.url("/o/vod");

    let anonymous = ffprobe_count_frames(&url, "tcp", None);
    assert_eq!(anonymous.video, 0, "{:?}", anonymous.output);
    assert!(
        anonymous.output.stderr.contains("401"),
        "{:?}",
        anonymous.output
    );
    let wrong = ffprobe_count_frames(&with_credentials(&url, USER, "guess"), "tcp", None);
    assert_eq!(wrong.video, 0, "{:?}", wrong.output);
    assert!(proxy.wait_log("player authentication failed", Duration::from_secs(5)));
    assert_eq!(
        origin.count("ORIGIN request method=DESCRIBE"),
        0,
        "refused players reached the origin"
    );

    let authed = with_credentials(&url, USER, PASSWORD);
    let first = ffprobe_count_frames(&authed, "tcp", None);
    assert_eq!(first.video, u64::from(VOD_SECS) * 25, "{:?}", first.output);
    assert!(proxy.wait_log_count("session ended", 1, Duration::from_secs(10)));
    let second = ffprobe_count_frames(&authed, "udp", None);
    assert_eq!(
        second.video,
        u64::from(VOD_SECS) * 25,
        "{:?}",
        second.output
    );
    assert!(proxy.wait_log_count("session ended", 2, Duration::from_secs(10)));

    assert!(
        !proxy.logs().contains(PASSWORD),
        "a player password was logged"
    );
    let started = session_lines(&proxy, "session started");
    let ended = session_lines(&proxy, "session ended");
    assert_eq!(started.len(), 2, "{started:#?}");
    assert_eq!(ended.len(), 2, "{ended:#?}");
    for (i, (cache, transport)) in [("miss", "tcp"), ("hit", "udp")].into_iter().enumerate() {
        for line in [&started[i], &ended[i]] {
            for field in [
                format!("cache={cache}"),
                format!("transport=\"{transport}\""),
                format!("user=\"{USER}\""),
                "mount=/o".to_owned(),
                "player=127.0.0.1:".to_owned(),
            ] {
                assert!(line.contains(&field), "no {field} in {line}");
            }
        }
        let bytes: u64 = field_value(&ended[i], "bytes").parse().expect("bytes=N");
        assert!(bytes > 100_000, "{}", ended[i]);
        assert!(
            field_value(&ended[i], "secs").parse::<f64>().is_ok(),
            "{}",
            ended[i]
        );
    }
}

/// The value of `name=value` in a log line.
fn field_value<'a>(line: &'a str, name: &str) -> &'a str {
    let start = line
        .find(&format!(" {name}="))
        .unwrap_or_else(|| panic!("no {name}= in {line}"))
        + name.len()
        + 2;
    line[start..].split(' ').next().unwrap_or_default()
}

/// gst-launch's rtspsrc answers the Digest challenge with `user-id`/`user-pw`
/// and plays to the end; with a wrong password it gets nothing.
#[test]
fn gst_launch_rtspsrc_user_id_and_user_pw() {
    let origin = Origin::start(OriginOpts::new().media(test_media(VOD_SECS)));
    let users = hash_password_lines(None, USER, PASSWORD);
    let (proxy, _cache) = protected_proxy(&origin, &users);
    let url = proxy.url("/o/vod");

    let play = |password: &str| {
        run_bounded(
            Command::new("gst-launch-1.0").args([
                "rtspsrc",
                &format!("location={url}"),
                "protocols=tcp",
                &format!("user-id={USER}"),
                &format!("user-pw={password}"),
                "!",
                "decodebin",
                "!",
                "fakesink",
            ]),
            Duration::from_secs(40),
        )
    };
    require_peers();
    let good = play(PASSWORD);
    assert!(
        good.stdout.contains("Got EOS"),
        "{good:?}\n{}",
        proxy.logs()
    );
    let bad = play("wrong");
    assert!(!bad.stdout.contains("Got EOS"), "{bad:?}");
    assert!(proxy.wait_log("player authentication failed", Duration::from_secs(5)));
    let started = session_lines(&proxy, "session started");
    assert_eq!(started.len(), 1, "{started:#?}");
    assert!(
        started[0].contains(&format!("user=\"{USER}\"")),
        "{}",
        started[0]
    );
}

/// Basic, when the mount allows it, with a realm of its own: ffprobe sends
/// the credentials from the URL. OPTIONS stays open; every other method
/// needs credentials, and the 401 carries one WWW-Authenticate line per
/// scheme and algorithm.
#[test]
fn basic_and_challenges_on_the_wire() {
    let origin = Origin::start(OriginOpts::new().media(test_media(VOD_SECS)));
    let users = hash_password_lines(Some("Front door"), USER, PASSWORD);
    let extra = format!("realm = \"Front door\"\nauth_schemes = [\"basic\", \"digest\"]\n{users}");
    let (proxy, _cache) = protected_proxy(&origin, &extra);
    let url = proxy.url("/o/vod");

    let mut conn = RtspConn::connect(proxy.port());
    assert_eq!(conn.request("OPTIONS", &url, &[]).status(), 200);
    let refused = conn.request("DESCRIBE", &url, &[]);
    assert_eq!(refused.status(), 401, "{refused:?}");
    let challenges: Vec<&str> = refused
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("WWW-Authenticate"))
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(challenges.len(), 3, "{refused:?}");
    assert!(
        challenges[0].starts_with("Digest realm=\"Front door\"")
            && challenges[0].contains("algorithm=SHA-256")
    );
    assert!(challenges[1].contains("algorithm=MD5") && challenges[1].contains("qop=\"auth\""));
    assert_eq!(challenges[2], "Basic realm=\"Front door\"");
    // A forged nonce is refused; the connection keeps serving.
    let forged = conn.request(
        "DESCRIBE",
        &url,
        &[("Authorization", &format!("Digest username=\"{USER}\", realm=\"Front door\", nonce=\"1.00\", uri=\"{url}\", response=\"00\""))],
    );
    assert_eq!(forged.status(), 401);
    assert_eq!(conn.request("OPTIONS", &url, &[]).status(), 200);

    // Basic from the URL: ffmpeg picks Digest when offered; both work.
    let counts = ffprobe_count_frames(&with_credentials(&url, USER, PASSWORD), "tcp", None);
    assert_eq!(
        counts.video,
        u64::from(VOD_SECS) * 25,
        "{:?}",
        counts.output
    );
    let basic = format!("Basic {}", base64(format!("{USER}:{PASSWORD}").as_bytes()));
    let described = conn.request("DESCRIBE", &url, &[("Authorization", &basic)]);
    assert_eq!(described.status(), 200, "{described:?}");
    assert!(described.body_text().contains("m=video"));
    let wrong = format!("Basic {}", base64(format!("{USER}:nope").as_bytes()));
    assert_eq!(
        conn.request("DESCRIBE", &url, &[("Authorization", &wrong)])
            .status(),
        401
    );
}

#[test]
fn a_session_id_does_not_bypass_a_protected_mount() {
    use streamcache_rtsp::auth::{parse_challenges, ClientAuth, Credentials};

    let origin = Origin::start(OriginOpts::new().media(test_media(VOD_SECS)));
    let users = hash_password_lines(None, USER, PASSWORD);
    let cache = temp_dir();
    let config = Proxy::config(
        cache.path(),
        &[
            Mount::new("/open", &origin.url("/")),
            Mount::new("/p", &origin.url("/")),
        ],
    ) + &users;
    let proxy = Proxy::start(&config);
    let (open_url, protected_url) = (proxy.url("/open/vod"), proxy.url("/p/vod"));
    let mut conn = RtspConn::connect(proxy.port());

    // An open mount's session does not open the protected mount.
    let describe = conn.request("DESCRIBE", &open_url, &[]);
    assert_eq!(describe.status(), 200, "{describe:?}");
    let track = describe.sdp_track_urls(&open_url)[0].clone();
    let transport = ("Transport", "RTP/AVP/TCP;unicast;interleaved=0-1");
    let open_session = conn.request("SETUP", &track, &[transport]);
    assert_eq!(open_session.status(), 200, "{open_session:?}");
    let open_id = open_session.session().unwrap().to_owned();
    let sneaky = conn.request("DESCRIBE", &protected_url, &[("Session", &open_id)]);
    assert_eq!(sneaky.status(), 401, "{sneaky:?}");

    // An authenticated session of the protected mount, driven through the
    // open mount's URL, still needs the credentials.
    let challenge = conn.request("DESCRIBE", &protected_url, &[]);
    assert_eq!(challenge.status(), 401);
    let challenges = parse_challenges(challenge.header("WWW-Authenticate").unwrap());
    let mut auth = ClientAuth::new(challenges[0].clone());
    let creds = Credentials {
        username: USER.into(),
        password: PASSWORD.into(),
    };
    let mut authorized = |method: &str, url: &str| auth.authorization(&creds, method, url);
    let header = authorized("DESCRIBE", &protected_url);
    let describe = conn.request("DESCRIBE", &protected_url, &[("Authorization", &header)]);
    assert_eq!(describe.status(), 200, "{describe:?}");
    let track = describe.sdp_track_urls(&protected_url)[0].clone();
    let header = authorized("SETUP", &track);
    let setup = conn.request("SETUP", &track, &[transport, ("Authorization", &header)]);
    assert_eq!(setup.status(), 200, "{setup:?}");
    let id = setup.session().unwrap().to_owned();
    let through_open = conn.request("GET_PARAMETER", &open_url, &[("Session", &id)]);
    assert_eq!(through_open.status(), 401, "{through_open:?}");
    let header = authorized("GET_PARAMETER", &open_url);
    let with_auth = conn.request(
        "GET_PARAMETER",
        &open_url,
        &[("Session", &id), ("Authorization", &header)],
    );
    assert_eq!(with_auth.status(), 200, "{with_auth:?}");
    // The daemon's log reaches the test a moment after its answers.
    assert!(proxy.wait_log_count("session started", 2, Duration::from_secs(10)));
    let started = session_lines(&proxy, "session started");
    assert!(
        started
            .iter()
            .any(|l| l.contains("mount=/p") && l.contains(&format!("user=\"{USER}\""))),
        "{started:#?}"
    );
    assert!(
        started
            .iter()
            .any(|l| l.contains("mount=/open") && l.contains("user=\"-\"")),
        "{started:#?}"
    );
}

/// On a Basic-only mount ffprobe sends Basic credentials from the URL; the
/// Digest challenge is not offered at all.
#[test]
fn ffprobe_basic_only_mount() {
    let origin = Origin::start(OriginOpts::new().media(test_media(VOD_SECS)));
    let users = hash_password_lines(None, USER, PASSWORD);
    let (proxy, _cache) = protected_proxy(&origin, &format!("auth_schemes = [\"basic\"]\n{users}"));
    let url = proxy.url("/o/vod");
    let mut conn = RtspConn::connect(proxy.port());
    let refused = conn.request("DESCRIBE", &url, &[]);
    assert_eq!(refused.status(), 401);
    assert_eq!(
        refused.header("WWW-Authenticate"),
        Some("Basic realm=\"streamcache\"")
    );

    let counts = ffprobe_count_frames(&with_credentials(&url, USER, PASSWORD), "tcp", None);
    assert_eq!(
        counts.video,
        u64::from(VOD_SECS) * 25,
        "{:?}",
        counts.output
    );
    let wrong = ffprobe_count_frames(&with_credentials(&url, USER, "nope"), "tcp", None);
    assert_eq!(wrong.video, 0, "{:?}", wrong.output);
    assert!(proxy.wait_log("player authentication failed", Duration::from_secs(5)));
    assert!(!proxy.logs().contains(PASSWORD));
}

/// A player that leaves early leaves a partial recording: the next player's
/// session lines say `cache=partial` (the store held the start, the origin
/// fills the rest), on an open mount with no user.
#[test]
fn session_lines_tell_a_partial_title() {
    let origin = Origin::start(OriginOpts::new().media(test_media(20)));
    let cache = temp_dir();
    let config = Proxy::config(cache.path(), &[Mount::new("/o", &origin.url("/"))]);
    let proxy = Proxy::start(&config);
    let url = proxy.url("/o/vod");

    let early = ffprobe_count_frames(&url, "tcp", Some(1));
    assert!(early.video > 0, "{:?}", early.output);
    assert!(proxy.wait_log(
        "no players left: closing origin session",
        Duration::from_secs(20)
    ));
    let second = ffprobe_count_frames(&url, "tcp", Some(1));
    assert!(second.video > 0, "{:?}", second.output);
    assert!(proxy.wait_log_count("session ended", 2, Duration::from_secs(20)));
    let started = session_lines(&proxy, "session started");
    assert!(
        started[0].contains("cache=miss") && started[0].contains("user=\"-\""),
        "{started:#?}"
    );
    assert!(
        started[1].contains("cache=partial"),
        "{started:#?}\n{}",
        proxy.logs()
    );
}

/// `hash-password` refuses what the daemon would refuse, and an empty
/// password, with a message and exit status 2.
#[test]
fn hash_password_refuses_bad_input() {
    for (args, stdin, expect) in [
        (vec!["bad:name"], "pw\n", "name"),
        (vec!["--realm", "quo\"te", "viewer"], "pw\n", "realm"),
        (vec!["viewer"], "", "no password"),
    ] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_streamcache"))
            .arg("hash-password")
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?}");
        assert!(stderr.contains(expect), "{args:?}: {stderr}");
        assert!(!stderr.contains("pw"), "{args:?}: {stderr}");
    }
}

/// A reload (SIGHUP) puts a changed user list in force for the next
/// request, on connections already open too: the old password is refused,
/// the new one let in.
#[test]
fn a_reload_puts_a_changed_user_list_in_force() {
    let origin = Origin::start(OriginOpts::new().media(test_media(VOD_SECS)));
    let users = hash_password_lines(None, USER, PASSWORD);
    let extra = format!("auth_schemes = [\"basic\", \"digest\"]\n{users}");
    let (proxy, _cache) = protected_proxy(&origin, &extra);
    let url = proxy.url("/o/vod");
    let basic =
        |password: &str| format!("Basic {}", base64(format!("{USER}:{password}").as_bytes()));
    let mut conn = RtspConn::connect(proxy.port());
    let describe = |conn: &mut RtspConn, password: &str| {
        conn.request("DESCRIBE", &url, &[("Authorization", &basic(password))])
            .status()
    };
    assert_eq!(describe(&mut conn, PASSWORD), 200);
    assert_eq!(describe(&mut conn, "n3w-Pl4yer"), 401);

    let config = std::fs::read_to_string(proxy.config_path()).unwrap();
    assert!(config.contains(&users), "{config}");
    let changed = config.replace(&users, &hash_password_lines(None, USER, "n3w-Pl4yer"));
    std::fs::write(proxy.config_path(), changed).unwrap();
    proxy.hangup();
    assert!(
        proxy.wait_log("configuration reloaded", Duration::from_secs(30)),
        "{}",
        proxy.logs()
    );

    assert_eq!(describe(&mut conn, PASSWORD), 401);
    assert_eq!(describe(&mut conn, "n3w-Pl4yer"), 200);
    let mut fresh = RtspConn::connect(proxy.port());
    assert_eq!(describe(&mut fresh, PASSWORD), 401);
    assert_eq!(describe(&mut fresh, "n3w-Pl4yer"), 200);
}

/// A reload that only changes a mount's users keeps its players: ffmpeg
/// plays the protected mount as one user while a second user is added (the
/// reload answers `auth_changed`, ends no session, and the new user plays);
/// then the first user is removed: their session, scripted with Digest,
/// is refused with 401 on its next request, even through an open mount's
/// URL (the session-side check reads the mount table in force), and so is
/// any new request of theirs, while ffmpeg's media keeps flowing.
#[test]
fn a_users_only_reload_keeps_players_and_applies_to_their_next_request() {
    use streamcache_rtsp::auth::{parse_challenges, ClientAuth, Credentials};

    const OTHER: &str = "second-viewer";
    const OTHER_PASSWORD: &str = "an0ther-Pl4yer";
    const PLAY_SECS: u32 = 20;
    let wait = Duration::from_secs(30);
    let origin = Origin::start(OriginOpts::new());
    let first = hash_password_lines(None, USER, PASSWORD);
    let second = hash_password_lines(None, OTHER, OTHER_PASSWORD);
    let cache = temp_dir();
    let mounts = [
        Mount::new("/open", &origin.url("/")),
        Mount::new("/p", &origin.url("/")),
    ];
    // The users follow the last mount, `/p`.
    let config = Proxy::config(cache.path(), &mounts) + &first;
    let proxy = Proxy::start(&config);
    let port = proxy.admin_port().expect("the test config enables [admin]");
    let reload = |text: &str| {
        std::fs::write(proxy.config_path(), text).unwrap();
        let answer = admin_request(port, "POST", "/api/v1/reload", &[]);
        assert_eq!(answer.status, 200, "{answer:?}");
        let body: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
        assert_eq!(body["auth_changed"], serde_json::json!(["/p"]), "{body}");
        assert_eq!(body["changed"], serde_json::json!([]), "{body}");
        assert_eq!(body["removed"], serde_json::json!([]), "{body}");
        assert_eq!(body["sessions_ended"], 0, "{body}");
    };
    let sessions = || -> Vec<serde_json::Value> {
        let answer = admin_request(port, "GET", "/api/v1/sessions", &[]);
        assert_eq!(answer.status, 200, "{answer:?}");
        let body: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
        body["sessions"].as_array().cloned().unwrap_or_default()
    };
    let protected = proxy.url("/p/live");
    let open = proxy.url("/open/live");

    // A scripted player of the first user: DESCRIBE and SETUP with Digest.
    let mut conn = RtspConn::connect(proxy.port());
    let challenge = conn.request("DESCRIBE", &protected, &[]);
    assert_eq!(challenge.status(), 401, "{challenge:?}");
    let challenges = parse_challenges(challenge.header("WWW-Authenticate").unwrap());
    let mut auth = ClientAuth::new(challenges[0].clone());
    let creds = Credentials {
        username: USER.into(),
        password: PASSWORD.into(),
    };
    let header = auth.authorization(&creds, "DESCRIBE", &protected);
    let describe = conn.request("DESCRIBE", &protected, &[("Authorization", &header)]);
    assert_eq!(describe.status(), 200, "{describe:?}");
    let track = describe.sdp_track_urls(&protected)[0].clone();
    let header = auth.authorization(&creds, "SETUP", &track);
    let transport = ("Transport", "RTP/AVP/TCP;unicast;interleaved=0-1");
    let setup = conn.request("SETUP", &track, &[transport, ("Authorization", &header)]);
    assert_eq!(setup.status(), 200, "{setup:?}");
    let scripted = setup.session().unwrap().to_owned();

    std::thread::scope(|s| {
        let player = s.spawn(|| {
            ffmpeg_pull(
                &with_credentials(&protected, USER, PASSWORD),
                "tcp",
                PLAY_SECS,
            )
        });
        let playing = || {
            sessions()
                .into_iter()
                .find(|s| s["state"] == "playing" && s["user"] == USER)
        };
        let deadline = std::time::Instant::now() + wait;
        let ffmpeg_session = loop {
            if let Some(session) = playing() {
                break session["id"].clone();
            }
            assert!(std::time::Instant::now() < deadline, "{:?}", sessions());
            std::thread::sleep(Duration::from_millis(200));
        };

        // A second user is added: nobody is interrupted, and they get in.
        let config = std::fs::read_to_string(proxy.config_path()).unwrap();
        reload(&format!("{config}{second}"));
        let list = sessions();
        for id in [&ffmpeg_session, &serde_json::json!(scripted)] {
            assert!(list.iter().any(|s| &s["id"] == id), "{id} gone: {list:?}");
        }
        let other = ffprobe_count_frames(
            &with_credentials(&protected, OTHER, OTHER_PASSWORD),
            "tcp",
            Some(2),
        );
        assert!(other.video > 0, "{other:?}");
        let header = auth.authorization(&creds, "GET_PARAMETER", &open);
        let alive = conn.request(
            "GET_PARAMETER",
            &open,
            &[("Session", &scripted), ("Authorization", &header)],
        );
        assert_eq!(alive.status(), 200, "{alive:?}");

        // The first user is removed: their session stays listed, but every
        // new request of theirs is refused, also with a fresh challenge.
        reload(&format!("{}{second}", config.replace(&first, "")));
        let header = auth.authorization(&creds, "GET_PARAMETER", &open);
        let refused = conn.request(
            "GET_PARAMETER",
            &open,
            &[("Session", &scripted), ("Authorization", &header)],
        );
        assert_eq!(refused.status(), 401, "{refused:?}");
        let challenges = parse_challenges(refused.header("WWW-Authenticate").unwrap());
        let mut fresh = ClientAuth::new(challenges[0].clone());
        for (method, url) in [("PLAY", &protected), ("GET_PARAMETER", &open)] {
            let header = fresh.authorization(&creds, method, url);
            let refused = conn.request(
                method,
                url,
                &[("Session", &scripted), ("Authorization", &header)],
            );
            assert_eq!(refused.status(), 401, "{method}: {refused:?}");
        }
        let header = fresh.authorization(&creds, "DESCRIBE", &protected);
        let mut other_conn = RtspConn::connect(proxy.port());
        let describe = other_conn.request("DESCRIBE", &protected, &[("Authorization", &header)]);
        assert_eq!(describe.status(), 401, "{describe:?}");

        // ffmpeg played to its end, never cut off by either reload.
        let pull = player.join().unwrap();
        assert!(pull.output.success(), "{pull:?}");
        assert!(pull.video_kb > 0, "{pull:?}");
    });
    let ended = session_lines(&proxy, "session ended");
    assert!(
        !ended.iter().any(|l| l.contains("reload")),
        "{ended:#?}\n{}",
        proxy.logs()
    );
}
