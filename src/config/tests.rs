//! Loading and checking configuration files.

use super::*;

#[test]
fn default_config_file_is_valid() {
    let text = include_str!("../../etc/streamcache.toml");
    let config = Config::parse(text).expect("etc/streamcache.toml must validate");
    assert_eq!(config.rtsp.listen_addr(), "127.0.0.1:8554".parse().ok());
    assert_eq!(config.cache.disk_budget, ByteSize(10 << 30));
    assert_eq!(config.mounts.len(), 2);
    assert_eq!(
        config.sample_origin.listen_addr(),
        "127.0.0.1:8654".parse().ok()
    );
}

#[test]
fn empty_file_gets_defaults() {
    let config = Config::parse("").expect("empty config is valid");
    assert_eq!(config.rtsp.session_timeout_secs, 60);
    assert!(config.mounts.is_empty());
}

#[test]
fn sizes_parse_with_units() {
    assert_eq!(ByteSize::parse("64KiB"), Ok(ByteSize(65536)));
    assert_eq!(ByteSize::parse("2 GB"), Ok(ByteSize(2_000_000_000)));
    assert_eq!(ByteSize::parse("17"), Ok(ByteSize(17)));
    assert!(ByteSize::parse("12 parsecs").is_err());
    assert!(ByteSize::parse("99999999999TiB").is_err());
}

#[test]
fn problems_name_key_and_line() {
    let text = "[rtsp]\nlisten = \"nowhere\"\n\n[[mount]]\npath = \"cams\"\norigin = \"http://x/\"\n\n[[mount]]\npath = \"/b\"\norigin = \"rtsp://u:p@h/x\"\n";
    let problems = Config::parse(text).expect_err("invalid");
    let lines: Vec<_> = problems.iter().map(|p| (p.key.as_str(), p.line)).collect();
    assert_eq!(
        lines,
        vec![
            ("rtsp.listen", Some(2)),
            ("mount[0].path", Some(5)),
            ("mount[0].origin", Some(6)),
            ("mount[1].origin", Some(10)),
        ]
    );
    assert!(!problems[3].message.contains("u:p"));
}

#[test]
fn unknown_keys_are_refused_with_line() {
    let problems = Config::parse("[rtsp]\nlisen = \"x\"\n").expect_err("typo");
    assert_eq!(problems[0].line, Some(2));
    assert!(problems[0].message.contains("lisen"), "{problems:?}");
}

#[test]
fn duplicate_mounts_are_refused() {
    let text = "[[mount]]\npath = \"/a/\"\norigin = \"rtsp://h/x\"\n[[mount]]\npath = \"/a\"\norigin = \"rtsp://h/y\"\n";
    let problems = Config::parse(text).expect_err("duplicate");
    assert_eq!(problems[0].key, "mount[1].path");
    assert_eq!(problems[0].line, Some(5));
}

#[test]
fn player_auth_keys_are_checked_with_lines() {
    let md5 = "0123456789abcdef0123456789abcdef";
    let text = format!(
        "[[mount]]\npath = \"/a\"\norigin = \"rtsp://h/x\"\nrealm = \"cams\"\nauth_schemes = [\"digest\", \"ntlm\"]\n\
         [[mount.user]]\nname = \"ann\"\nmd5 = \"{md5}\"\n\
         [[mount.user]]\nname = \"bo:b\"\nsha256 = \"secret\"\n\
         [[mount.user]]\nname = \"ann\"\n\
         [[mount]]\npath = \"/b\"\norigin = \"rtsp://h/y\"\nrealm = \"open\"\n"
    );
    let problems = Config::parse(&text).expect_err("invalid");
    let got: Vec<_> = problems.iter().map(|p| (p.key.as_str(), p.line)).collect();
    assert_eq!(
        got,
        vec![
            ("mount[0].auth_schemes", Some(5)),
            ("mount[0].user[1].name", Some(10)),
            ("mount[0].user[1].sha256", Some(11)),
            ("mount[0].user[2].name", Some(13)),
            ("mount[0].user[2]", Some(13)),
            ("mount[1].user", Some(17)),
        ],
        "{problems:#?}"
    );
    assert!(problems.iter().all(|p| !p.message.contains("secret")));
    // A plain password is not a key a user may have (and the user, who has
    // no digest, is reported in the same run).
    let text = "[[mount]]\npath = \"/a\"\norigin = \"rtsp://h/x\"\n[[mount.user]]\nname = \"ann\"\npassword = \"pw\"\n";
    let problems = Config::parse(text).expect_err("password key");
    let got: Vec<_> = problems.iter().map(|p| (p.key.as_str(), p.line)).collect();
    assert_eq!(
        got,
        [
            ("mount[0].user[0]", Some(5)),
            ("mount[0].user[0].password", Some(6))
        ],
        "{problems:?}"
    );
}

#[test]
fn admin_tokens_are_what_a_header_can_carry() {
    let parse = |token: &str| Config::parse(&format!("[admin]\ntoken = \"{token}\"\n"));
    assert!(parse("s3cret-T0ken_+/=~.").is_ok());
    assert!(parse("two words").is_ok());
    for token in ["pässword", " padded", "padded ", "tab\\t", "line\\r\\nX: y"] {
        let problems = parse(token).expect_err(token);
        assert_eq!(problems.len(), 1, "{token:?}: {problems:?}");
        assert_eq!(problems[0].key, "admin.token");
        assert!(!problems[0].message.contains(token.trim()), "{problems:?}");
    }
}

#[test]
fn secrets_of_the_wrong_type_are_not_echoed() {
    // A numeric camera password, token or digest written without quotes.
    for (text, secret) in [
        (
            "[[mount]]\npath = \"/a\"\norigin = \"rtsp://h/x\"\nusername = \"u\"\npassword = 12345\n",
            "12345",
        ),
        ("[admin]\ntoken = 987654\n", "987654"),
        (
            "[[mount]]\npath = \"/a\"\norigin = \"rtsp://h/x\"\n[[mount.user]]\nname = \"a\"\nmd5 = 77\n",
            "77",
        ),
        (
            "[[mount]]\npath = \"/a\"\norigin = \"rtsp://h/x\"\n\"password\" = 4242\n",
            "4242",
        ),
        // The deserializer quotes the value as it read it, not as written.
        ("[admin]\ntoken = 1e3\n", "1000"),
    ] {
        let problems = Config::parse(text).expect_err("wrong type");
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(!problems[0].message.contains(secret), "{problems:?}");
        assert!(
            problems[0].message.contains("expected a string"),
            "{problems:?}"
        );
        assert!(problems[0].line.is_some(), "{problems:?}");
    }
    // Other values are shown: they help and are no secret.
    let problems = Config::parse("[[mount]]\npath = \"/a\"\norigin = 5\n").expect_err("wrong type");
    assert!(problems[0].message.contains("`5`"), "{problems:?}");
    assert_eq!(hide_values("a `x1` b `y`"), "a `…` b `…`");
    assert!(assigns_a_secret("{ path = \"/a\", password = 1 }"));
    assert!(!assigns_a_secret("origin = \"rtsp://h/password=1\""));
    // A key that is not allowed keeps its name in the message.
    let problems = Config::parse(
        "[[mount]]\npath = \"/a\"\norigin = \"rtsp://h/x\"\n[[mount.user]]\nname = \"a\"\npassword = \"pw\"\n",
    )
    .expect_err("password key");
    assert!(
        problems.iter().any(|p| p.message.contains("`password`")),
        "{problems:?}"
    );
}

#[test]
fn merged_writes_are_off_for_the_cache_on_for_relays_and_bounded() {
    let config = Config::parse("").expect("empty is valid");
    assert_eq!(config.rtsp.merge_writes_ms, 0);
    assert_eq!(config.rtsp.relay_merge_writes_ms, 100);
    let text = "[rtsp]\nmerge_writes_ms = 20\nrelay_merge_writes_ms = 0\n";
    let config = Config::parse(text).expect("valid");
    assert_eq!(config.rtsp.merge_writes_ms, 20);
    assert_eq!(config.rtsp.relay_merge_writes_ms, 0);
    let text = "[rtsp]\nmerge_writes_ms = 201\nrelay_merge_writes_ms = 1000\n";
    let problems = Config::parse(text).expect_err("too long");
    let got: Vec<_> = problems.iter().map(|p| (p.key.as_str(), p.line)).collect();
    assert_eq!(
        got,
        vec![
            ("rtsp.merge_writes_ms", Some(2)),
            ("rtsp.relay_merge_writes_ms", Some(3))
        ]
    );
}

#[test]
fn player_auth_defaults_and_limits() {
    let text = "[rtsp]\nmax_sessions = 0\nidle_connection_secs = 0\n";
    let problems = Config::parse(text).expect_err("zero limits");
    let got: Vec<_> = problems.iter().map(|p| (p.key.as_str(), p.line)).collect();
    assert_eq!(
        got,
        vec![
            ("rtsp.max_sessions", Some(2)),
            ("rtsp.idle_connection_secs", Some(3))
        ]
    );
    // Timeouts so long that `now + timeout` would overflow the clock
    // (a panic in every connection) are refused.
    let text = "[rtsp]\nsession_timeout_secs = 9223372036854775807\nidle_connection_secs = 9223372036854775807\n[origin]\nlinger_secs = 9223372036854775807\n";
    let problems = Config::parse(text).expect_err("huge timeouts");
    let got: Vec<_> = problems.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        got,
        [
            "rtsp.session_timeout_secs",
            "rtsp.idle_connection_secs",
            "origin.linger_secs"
        ],
        "{problems:?}"
    );
    let text = "[[mount]]\npath = \"/a\"\norigin = \"rtsp://h/x\"\n[[mount.user]]\nname = \"ann\"\nmd5 = \"0123456789ABCDEF0123456789abcdef\"\n";
    let config = Config::parse(text).expect("valid");
    assert_eq!(config.mounts[0].realm(), DEFAULT_REALM);
    assert!(config.mounts[0].allows_scheme("digest"));
    assert!(!config.mounts[0].allows_scheme("basic"));
    assert_eq!(*config.rtsp.max_sessions.get_ref(), 4000);
}

/// One run reports every mistake of a file, of every kind, each with its
/// key and line, in the order of the file.
#[test]
fn every_problem_of_a_file_in_one_run() {
    let text = "\
[rtsp]
lisen = \"127.0.0.1:8554\"
session_timeout_secs = \"sixty\"
max_request_bytes = \"12 parsecs\"
[cache]
segment_size = \"1KiB\"
[origin]
linger_secs = 100000

[[mount]]
path = \"cams\"
origin = \"http://h/x\"
transport = \"quic\"

[[mount]]
origin = \"rtsp://h/y\"

[bogus]
setting = 1
";
    let problems = Config::parse(text).expect_err("ten mistakes");
    let got: Vec<_> = problems.iter().map(|p| (p.key.as_str(), p.line)).collect();
    assert_eq!(
        got,
        [
            ("rtsp.lisen", Some(2)),
            ("rtsp.session_timeout_secs", Some(3)),
            ("rtsp.max_request_bytes", Some(4)),
            ("cache.segment_size", Some(6)),
            ("origin.linger_secs", Some(8)),
            ("mount[0].path", Some(11)),
            ("mount[0].origin", Some(12)),
            ("mount[0].transport", Some(13)),
            ("mount[1].path", Some(15)),
            ("bogus", Some(18)),
        ],
        "{problems:#?}"
    );
    for (problem, words) in problems.iter().zip([
        "unknown field `lisen`",
        "expected u64",
        "unknown size unit `parsecs`",
        "at least 64KiB",
        "at most 86400",
        "absolute URL path",
        "rtsp:// URL",
        "unknown variant `quic`",
        "missing field `path`",
        "unknown field `bogus`",
    ]) {
        assert!(problem.message.contains(words), "{problem}");
    }
}

/// A syntax error stops the parser: it is reported alone, with its line.
#[test]
fn a_syntax_error_is_reported_with_its_line() {
    let problems =
        Config::parse("[rtsp]\nlisten = \"x\"\nmax_headers = = 3\n").expect_err("syntax");
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(
        (problems[0].key.as_str(), problems[0].line),
        ("(syntax)", Some(3))
    );
}

/// Sections and mounts may be written inline; a mount that is not a table
/// is reported without shifting the names of the next ones.
#[test]
fn inline_tables_read_like_sections() {
    let text = "rtsp = { listen = \"127.0.0.1:1\" }\nmount = [5, { path = \"/b\", origin = \"ftp://h/\" }]\n";
    let problems = Config::parse(text).expect_err("invalid");
    let got: Vec<_> = problems.iter().map(|p| (p.key.as_str(), p.line)).collect();
    assert_eq!(
        got,
        [("mount[0]", Some(2)), ("mount[1].origin", Some(2))],
        "{problems:?}"
    );
    let config = Config::parse("rtsp = { listen = \"127.0.0.1:1\" }\n").expect("valid");
    assert_eq!(config.rtsp.listen_addr(), "127.0.0.1:1".parse().ok());
}

#[test]
fn sample_origin_is_off_by_default_and_its_address_is_checked() {
    assert_eq!(Config::parse("").unwrap().sample_origin.listen_addr(), None);
    let problems = Config::parse("[sample_origin]\nlisten = \"nope\"\nport = 1\n").unwrap_err();
    let keys: Vec<(&str, Option<usize>)> =
        problems.iter().map(|p| (p.key.as_str(), p.line)).collect();
    assert!(
        keys.contains(&("sample_origin.listen", Some(2))),
        "{problems:?}"
    );
    assert!(
        keys.contains(&("sample_origin.port", Some(3))),
        "{problems:?}"
    );
}

#[test]
fn master_and_node_sections_are_read_and_checked() {
    let master = Config::parse(
        "[master]\nlisten = \"127.0.0.1:0\"\ncontrol_listen = \"127.0.0.1:0\"\ntoken = \"0123456789abcdef\"\nreport_period_ms = 200\n",
    )
    .expect("valid master");
    let m = master.master.expect("[master]");
    assert_eq!(m.report_period(), Duration::from_millis(200));
    assert_eq!(m.down_after_polls, 3);
    assert!(master.cluster.is_none());

    let node = Config::parse(
        "[cluster]\nmaster = \"http://127.0.0.1:8566\"\nnode_id = \"edge-1\"\ntoken = \"0123456789abcdef\"\nmax_sessions = 25\n",
    )
    .expect("valid node");
    let c = node.cluster.expect("[cluster]");
    assert_eq!((c.node_id.as_str(), c.max_sessions), ("edge-1", Some(25)));
    assert_eq!(c.rtsp_url, None);

    let problems = Config::parse(
        "[rtsp]\nlisten = \"0.0.0.0:8554\"\n[master]\ntoken = \"short\"\ndown_after_polls = 0\n[cluster]\nmaster = \"ftp://x\"\nnode_id = \"a b\"\ntoken = \"0123456789abcdef\"\n",
    )
    .expect_err("invalid");
    let keys: Vec<(&str, Option<usize>)> =
        problems.iter().map(|p| (p.key.as_str(), p.line)).collect();
    for expected in [
        ("master.token", Some(4)),
        ("master.down_after_polls", Some(5)),
        ("cluster.master", Some(7)),
        ("cluster.node_id", None),
        ("cluster.rtsp_url", Some(6)),
        ("cluster", Some(6)),
    ] {
        assert!(
            keys.iter()
                .any(|(k, l)| *k == expected.0 && (expected.1.is_none() || *l == expected.1)),
            "{expected:?} in {keys:?}"
        );
    }
    assert!(problems.iter().all(|p| !p.message.contains("short")));
    let missing = Config::parse("[cluster]\nnode_id = \"n\"\n").expect_err("missing keys");
    assert!(missing.iter().any(|p| p.key == "cluster.master"));
    assert!(missing.iter().any(|p| p.key == "cluster.token"));
}
