//! Issue 4, item 2: the origin's RTSP cache rules, end to end. The GStreamer
//! origin is started with `--cache-control` and `--last-modified`, a title
//! is recorded by one full play through the proxy, and a later play shows
//! what the rules allowed: nothing at all asked of the origin while the
//! entry is fresh, exactly one revalidation DESCRIBE (and no SETUP/PLAY)
//! once it is stale and the origin says it has not changed.

mod support;

use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use support::*;

const LAST_MODIFIED: &str = "Tue, 06 Feb 2024 10:00:00 GMT";

struct Rig {
    origin: Origin,
    proxy: Proxy,
    cache: tempfile::TempDir,
}

impl Rig {
    fn start(cache_control: &str) -> Rig {
        // The 6 s title at `/vod`, with cache headers on DESCRIBE.
        let origin = Origin::start(
            OriginOpts::new()
                .media(test_media(6))
                .cache_control(cache_control)
                .last_modified(LAST_MODIFIED),
        );
        let cache = temp_dir();
        let proxy = Proxy::start(&Proxy::config(
            cache.path(),
            &[Mount::new("/vod", &origin.url("/vod"))],
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
        let count = |method| self.origin.requests(method).len();
        (count("DESCRIBE"), count("SETUP"), count("PLAY"))
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
    // Its events, not its stderr (GStreamer may warn at any time).
    let events = || {
        let lines = rig.origin.lines().into_iter();
        lines
            .filter(|l| l.starts_with("ORIGIN "))
            .collect::<Vec<_>>()
    };
    let before = events().len();
    rig.play(Some(2));
    let after = events();
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
