//! Issue 4, item 2: the origin's RTSP cache rules, end to end. The GStreamer
//! origin is started with `--cache-control` and `--last-modified`, a title
//! is recorded by one full play through the proxy, and a later play shows
//! what the rules allowed: nothing at all asked of the origin while the
//! entry is fresh, exactly one revalidation DESCRIBE (and no SETUP/PLAY)
//! once it is stale and the origin says it has not changed.

mod support;

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use support::*;

const LAST_MODIFIED: &str = "Tue, 06 Feb 2024 10:00:00 GMT";

/// `tests/peers/origin.py` serving the 6 s title at `/vod` with cache
/// headers on DESCRIBE (the shared harness's `Origin` has no such option).
struct CachingOrigin {
    child: Child,
    port: u16,
    lines: Arc<Mutex<Vec<String>>>,
    _stdin: ChildStdin,
}

impl CachingOrigin {
    fn start(cache_control: &str) -> CachingOrigin {
        require_peers();
        let mut child = Command::new("/usr/bin/python3")
            .arg(repo_root().join("tests/peers/origin.py"))
            .args(["--port", "0", "--watch-stdin", "--media"])
            .arg(test_media(6))
            .args(["--cache-control", cache_control])
            .args(["--last-modified", LAST_MODIFIED])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("spawn tests/peers/origin.py");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().expect("piped stdout");
        let sink = Arc::clone(&lines);
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let stdin = child.stdin.take().expect("piped stdin");
        let mut origin = CachingOrigin {
            child,
            port: 0,
            lines,
            _stdin: stdin,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while origin.port == 0 {
            assert!(Instant::now() < deadline, "origin did not get ready");
            origin.port = origin
                .lines()
                .iter()
                .find_map(|l| l.strip_prefix("READY port=")?.parse().ok())
                .unwrap_or(0);
            thread::sleep(Duration::from_millis(50));
        }
        origin
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Requests of `method` the origin has logged.
    fn count(&self, method: &str) -> usize {
        let prefix = format!("ORIGIN request method={method} ");
        self.lines()
            .iter()
            .filter(|l| l.starts_with(&prefix))
            .count()
    }
}

impl Drop for CachingOrigin {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill")
            .args(["-s", "KILL", "--", &group])
            .status();
        let _ = self.child.wait();
    }
}

struct Rig {
    origin: CachingOrigin,
    proxy: Proxy,
    cache: tempfile::TempDir,
}

impl Rig {
    fn start(cache_control: &str) -> Rig {
        let origin = CachingOrigin::start(cache_control);
        let cache = temp_dir();
        let origin_url = format!("rtsp://127.0.0.1:{}/vod", origin.port);
        let proxy = Proxy::start(&Proxy::config(
            free_port(),
            cache.path(),
            &[Mount::new("/vod", &origin_url)],
        ));
        Rig {
            origin,
            proxy,
            cache,
        }
    }

    /// Plays the title through the proxy with ffmpeg (`-t` seconds of it,
    /// or all of it).
    fn play(&self, secs: Option<u32>) {
        let mut cmd = Command::new("ffmpeg");
        cmd.args(["-nostdin", "-v", "error", "-rtsp_transport", "tcp"])
            .args(["-i", &self.proxy.url("/vod")]);
        if let Some(secs) = secs {
            cmd.args(["-t", &secs.to_string()]);
        }
        cmd.args(["-f", "null", "-"]);
        let out = run_bounded(&mut cmd, PLAYER_LIMIT);
        assert!(out.success(), "ffmpeg through the proxy: {out:?}");
    }

    /// Records the title with one full play and waits until the store
    /// holds it completely.
    fn fill(&self) {
        self.play(None);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !complete_entry(self.cache.path()) {
            assert!(
                Instant::now() < deadline,
                "the title never became a complete cache entry\n{}",
                self.proxy.logs()
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// (DESCRIBE, SETUP, PLAY) requests the origin has seen.
    fn origin_requests(&self) -> (usize, usize, usize) {
        (
            self.origin.count("DESCRIBE"),
            self.origin.count("SETUP"),
            self.origin.count("PLAY"),
        )
    }
}

/// Whether a presentation in the store directory is marked complete.
fn complete_entry(cache: &Path) -> bool {
    let Ok(dirs) = std::fs::read_dir(cache) else {
        return false;
    };
    dirs.flatten().any(|d| {
        std::fs::read_to_string(d.path().join("meta.json"))
            .is_ok_and(|meta| meta.contains("\"state\": \"complete\""))
    })
}

#[test]
fn a_fresh_entry_is_replayed_without_contacting_the_origin() {
    let rig = Rig::start("max-age=3600");
    rig.fill();
    let before = rig.origin.lines().len();
    rig.play(Some(2));
    let after = rig.origin.lines();
    assert_eq!(
        after.len(),
        before,
        "the origin heard from us during a fresh replay: {:?}",
        &after[before..]
    );
}

#[test]
fn a_stale_entry_is_revalidated_by_one_describe_and_served_from_the_store() {
    let rig = Rig::start("max-age=1");
    rig.fill();
    // Recording took the title's 6 s: the entry is well past max-age.
    let (describes, setups, plays) = rig.origin_requests();
    rig.play(Some(2));
    assert_eq!(
        rig.origin_requests(),
        (describes + 1, setups, plays),
        "expected exactly one revalidation DESCRIBE and no SETUP/PLAY"
    );
    assert!(
        rig.proxy
            .wait_log("stored title still current", Duration::from_secs(5)),
        "{}",
        rig.proxy.logs()
    );
}
