//! The configuration as an operator meets it: `streamcache check-config`
//! accepts the shipped default and names the key and line of every problem
//! of a broken file in one run; `streamcache serve` refuses to start on a
//! broken file with the same clear message; `--config`/`-c` is accepted
//! after every subcommand, with a default that finds the installed or the
//! checkout's file; the daemon's log is plain text when piped.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use support::*;

fn write_config(dir: &Path, text: &str) -> String {
    let path = dir.join("streamcache.toml");
    std::fs::write(&path, text).unwrap();
    path.to_str().expect("UTF-8 path").to_owned()
}

/// Line 2: an address that is not one; line 8: a mount path that is not
/// absolute; line 9: credentials inside the origin URL (which would leak into
/// logs).
const BROKEN: &str = "[rtsp]
listen = \"nowhere\"

[origin]
linger_secs = 2

[[mount]]
path = \"cams\"
origin = \"rtsp://viewer:hunter2@127.0.0.1:8654/live\"
";

/// The shipped `etc/streamcache.toml` validates, and so do the cluster
/// examples `etc/master.toml` and `etc/node.toml`.
#[test]
fn check_config_accepts_the_default_file() {
    for name in ["streamcache.toml", "master.toml", "node.toml"] {
        let file = repo_root().join("etc").join(name);
        let out = run_streamcache(&["check-config", file.to_str().unwrap()]);
        assert!(out.success(), "{name}: {out:?}");
        assert!(out.stdout.contains("valid"), "{name}: {out:?}");
    }
}

/// A broken file fails, and each problem names its key and line; the
/// password put in the origin URL is not repeated.
#[test]
fn check_config_names_key_and_line_of_each_problem() {
    let dir = temp_dir();
    let file = write_config(dir.path(), BROKEN);
    let out = run_streamcache(&["check-config", &file]);
    assert!(!out.success(), "{out:?}");
    let text = format!("{}{}", out.stdout, out.stderr);
    for expected in [
        "line 2: rtsp.listen",
        "line 8: mount[0].path",
        "line 9: mount[0].origin",
    ] {
        assert!(text.contains(expected), "no `{expected}` in:\n{text}");
    }
    assert!(!text.contains("hunter2"), "{text}");
}

/// A misspelt key is refused with its name and line.
#[test]
fn check_config_refuses_unknown_keys() {
    let dir = temp_dir();
    let file = write_config(
        dir.path(),
        "[rtsp]\nlisten = \"127.0.0.1:8554\"\nsesion_timeout_secs = 5\n",
    );
    let out = run_streamcache(&["check-config", &file]);
    assert!(!out.success(), "{out:?}");
    assert!(
        out.stdout.contains("line 3") && out.stdout.contains("sesion_timeout_secs"),
        "{out:?}"
    );
}

/// Ten mistakes of every kind (unknown keys and sections, wrong types, an
/// unknown size unit and variant, a missing key, bad values), each on the
/// line the comment gives.
const TEN_MISTAKES: &str = "[rtsp]
lisen = \"127.0.0.1:8554\"
session_timeout_secs = \"sixty\"
max_request_bytes = \"12 parsecs\"
[cache]
segment_size = \"1KiB\"
[origin]
linger_secs = 100000
[admin]
token = 31337

[[mount]]
path = \"cams\"
origin = \"rtsp://127.0.0.1:8654/live\"
transport = \"quic\"

[[mount]]
path = \"/b\"
[bogus]
";

/// One run of check-config reports all ten mistakes, each with its line
/// and key, in the order of the file; the token is not echoed.
#[test]
fn check_config_reports_every_problem_in_one_run() {
    let dir = temp_dir();
    let file = write_config(dir.path(), TEN_MISTAKES);
    let out = run_streamcache(&["check-config", &file]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let expected = [
        "line 2: rtsp.lisen: unknown field `lisen`",
        "line 3: rtsp.session_timeout_secs: invalid type",
        "line 4: rtsp.max_request_bytes: unknown size unit `parsecs`",
        "line 6: cache.segment_size: must be at least 64KiB",
        "line 8: origin.linger_secs: must be at most 86400",
        "line 10: admin.token: invalid type",
        "line 13: mount[0].path:",
        "line 15: mount[0].transport: unknown variant `quic`",
        "line 17: mount[1].origin: missing field `origin`",
        "line 19: bogus: unknown field `bogus`",
    ];
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), expected.len(), "{out:?}");
    for (line, expected) in lines.iter().zip(expected) {
        assert!(
            line.starts_with(&format!("{file}: {expected}")),
            "`{line}` is not `{expected}`"
        );
    }
    assert!(!out.stdout.contains("31337"), "{out:?}");
}

/// `streamcache serve` on a broken file exits at once with an error that
/// names the file, the key and the line, and listens on nothing.
#[test]
fn serve_refuses_to_start_on_a_broken_config() {
    let dir = temp_dir();
    let file = write_config(dir.path(), BROKEN);
    let out = run_streamcache(&["serve", "--config", &file]);
    assert!(!out.success() && !out.timed_out(), "{out:?}");
    assert!(out.stderr.contains(&file), "{out:?}");
    assert!(
        out.stderr.contains("line 2: rtsp.listen") && out.stderr.contains("mount[0].path"),
        "{out:?}"
    );
    assert!(!out.stderr.contains("hunter2"), "{out:?}");

    // A valid listen address but a broken mount: still refused, and it never
    // got as far as binding a listener (it would have said so and written
    // its ready file).
    let text = BROKEN.replace("\"nowhere\"", "\"127.0.0.1:0\"");
    let file = write_config(dir.path(), &text);
    let ready = dir.path().join("ready.json");
    let ready_arg = ready.to_str().expect("UTF-8 path");
    let out = run_streamcache(&["serve", "--config", &file, "--ready-file", ready_arg]);
    assert!(!out.success() && !out.timed_out(), "{out:?}");
    assert!(out.stderr.contains("line 8: mount[0].path"), "{out:?}");
    assert!(!ready.exists(), "{out:?}");
    let output = format!("{}\n{}", out.stdout, out.stderr);
    assert!(listening_addrs(&output).is_none(), "{out:?}");
}

/// `--config FILE` and `-c FILE` work after every subcommand (and before
/// it); check-config also takes the file positionally.
#[test]
fn config_flag_works_after_every_subcommand() {
    let dir = temp_dir();
    let cache = dir.path().join("cache");
    let file = write_config(dir.path(), &Proxy::config(&cache, &[]));
    for args in [
        vec!["check-config", &file],
        vec!["check-config", "--config", &file],
        vec!["check-config", "-c", &file],
        vec!["--config", &file, "check-config"],
    ] {
        let out = run_streamcache(&args);
        assert!(out.success(), "{args:?}: {out:?}");
        assert!(out.stdout.contains(&format!("{file}: valid")), "{out:?}");
    }
    for args in [
        vec!["cache", "ls", "--config", &file],
        vec!["cache", "ls", "-c", &file],
        vec!["cache", "--config", &file, "ls"],
        vec!["cache", "verify", "-c", &file],
        vec!["-c", &file, "cache", "ls"],
    ] {
        let out = run_streamcache(&args);
        assert!(out.success(), "{args:?}: {out:?}");
    }
    assert!(cache.is_dir(), "the cache of {file} was not opened");
    // Two different files is a mistake, not a choice.
    let out = run_streamcache(&["check-config", &file, "--config", "/elsewhere.toml"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    // serve takes it after the subcommand too: a broken file names itself.
    let broken = dir.path().join("broken.toml");
    std::fs::write(&broken, BROKEN).unwrap();
    let broken = broken.to_str().expect("UTF-8 path");
    let out = run_streamcache(&["serve", "-c", broken]);
    assert!(!out.success() && out.stderr.contains(broken), "{out:?}");
}

/// Without `--config`: the installed file when there is one, else
/// `etc/streamcache.toml` of the checkout the command runs in; elsewhere
/// the error names the installed path.
#[test]
fn config_defaults_to_the_installed_or_the_checkout_file() {
    let installed = Path::new("/etc/streamcache/streamcache.toml");
    let run_in = |dir: &Path| {
        run_bounded(
            Command::new(env!("CARGO_BIN_EXE_streamcache"))
                .arg("check-config")
                .current_dir(dir),
            PLAYER_LIMIT,
        )
    };
    let out = run_in(repo_root());
    let expected = if installed.exists() {
        installed.to_str().unwrap()
    } else {
        "etc/streamcache.toml"
    };
    assert!(out.stdout.starts_with(&format!("{expected}: ")), "{out:?}");
    if !installed.exists() {
        assert!(out.success(), "{out:?}");
        let elsewhere = temp_dir();
        let out = run_in(elsewhere.path());
        assert!(!out.success(), "{out:?}");
        assert!(
            out.stdout
                .contains("/etc/streamcache/streamcache.toml: (file): cannot read"),
            "{out:?}"
        );
    }
}

/// The daemon's log read through a pipe (a file, the journal) carries no
/// colour codes: `Proxy::start` turns nothing off but the terminal.
#[test]
fn daemon_log_has_no_colour_codes_when_piped() {
    let dir = temp_dir();
    let proxy = Proxy::start(&Proxy::config(dir.path(), &[]));
    assert!(
        proxy.wait_log("listening", Duration::from_secs(10)),
        "{}",
        proxy.logs()
    );
    let log = proxy.logs();
    assert!(log.contains("INFO"), "{log}");
    assert!(!log.contains('\x1b'), "{log:?}");
}
