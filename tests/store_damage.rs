//! The store tells the truth about damaged files (issue 10, cases 2–5),
//! with the real daemon, the GStreamer origin and ffmpeg: a title recorded
//! whole is damaged on disk while the daemon is stopped (a segment cut
//! short, bytes flipped inside a record, its metadata deleted or
//! contradicting its SDP). `streamcache cache verify` names the damage and
//! fails; at the next start the store reports what really verifies
//! (`partial`, or nothing), and the next play gets the whole title,
//! frame-identical to a direct pull from the origin, the missing part
//! fetched again from the origin.

mod support;

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::Duration;

use serde_json::Value;
use support::*;

const SECS: u32 = 10;
const WAIT: Duration = Duration::from_secs(30);

/// An origin serving one title at `/vod`, and a proxy (restartable) with its
/// cache in a directory of the test's own.
struct Rig {
    origin: Origin,
    proxy: Option<Proxy>,
    toml: String,
    cache: PathBuf,
    /// The config for the `cache` commands (they read only `[cache]`).
    config: PathBuf,
    _dir: tempfile::TempDir,
}

impl Rig {
    fn start() -> Rig {
        let origin = Origin::start(OriginOpts::new().media(test_media(SECS)));
        let dir = temp_dir();
        let cache = dir.path().join("cache");
        fs::create_dir(&cache).unwrap();
        let toml = Proxy::config(&cache, &[Mount::new("/vod", &origin.url("/vod"))])
            .replace("linger_secs = 2", "linger_secs = 0");
        let config = dir.path().join("streamcache.toml");
        fs::write(&config, &toml).unwrap();
        let proxy = Some(Proxy::start(&toml));
        Rig {
            origin,
            proxy,
            toml,
            cache,
            config,
            _dir: dir,
        }
    }

    fn proxy(&self) -> &Proxy {
        self.proxy.as_ref().expect("the proxy runs")
    }

    fn url(&self) -> String {
        self.proxy().url("/vod")
    }

    fn stop(&mut self) {
        let proxy = self.proxy.take().expect("the proxy runs");
        assert!(proxy.stop(WAIT).is_some(), "the daemon did not stop");
    }

    fn restart(&mut self) {
        assert!(self.proxy.is_none());
        self.proxy = Some(Proxy::start(&self.toml));
    }

    fn presentations(&self) -> Vec<Value> {
        let answer = self.proxy().admin_get("/api/v1/presentations");
        assert_eq!(answer.status, 200, "{answer:?}");
        answer.json()["presentations"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Waits until the store lists exactly one title, in `state`; returns it.
    fn wait_state(&self, state: &str) -> Value {
        wait_for(WAIT, || match self.presentations().as_slice() {
            [p] if p["state"] == state && p["recording"] == false => Some(p.clone()),
            _ => None,
        })
        .unwrap_or_else(|| {
            panic!(
                "the title never became {state}: {:?}\n{}",
                self.presentations(),
                self.proxy().logs()
            )
        })
    }

    /// The title's directory in the store (there is one).
    fn title_dir(&self) -> PathBuf {
        let dirs: Vec<PathBuf> = fs::read_dir(&self.cache)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_dir() && !file_name(p).starts_with('.'))
            .collect();
        assert_eq!(dirs.len(), 1, "{dirs:?}");
        dirs.into_iter().next().unwrap()
    }

    /// The title's largest segment file.
    fn segment(&self) -> PathBuf {
        fs::read_dir(self.title_dir())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "seg"))
            .max_by_key(|p| fs::metadata(p).unwrap().len())
            .expect("a segment")
    }

    /// `streamcache cache verify` (the daemon stopped).
    fn verify(&self, args: &[&str]) -> Output {
        let mut all = vec!["cache", "--config", self.config.to_str().unwrap(), "verify"];
        all.extend_from_slice(args);
        run_streamcache(&all)
    }

    fn origin_plays(&self) -> Vec<OriginRequest> {
        self.origin.requests("PLAY")
    }
}

/// XORs 16 bytes in the middle of `path` with `mask`.
fn flip_middle(path: &Path, mask: u8) {
    let len = fs::metadata(path).unwrap().len();
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut bytes = [0u8; 16];
    file.read_exact_at(&mut bytes, len / 2).unwrap();
    for b in &mut bytes {
        *b ^= mask;
    }
    file.write_all_at(&bytes, len / 2).unwrap();
}

fn file_name(path: &Path) -> String {
    path.file_name().unwrap().to_string_lossy().into_owned()
}

/// Records the whole title through the proxy (checked against the direct
/// pull), then stops the daemon.
fn recorded_then_stopped(reference: &[String]) -> Rig {
    let mut rig = Rig::start();
    let first = framemd5(&rig.url(), Some("tcp"), "0:v", &[]);
    assert_same_video("the recording play", &first, reference);
    rig.wait_state("complete");
    rig.stop();
    rig
}

/// After damage and a restart: the title is `partial` (holding less than
/// the whole), and a play is frame-identical to the direct pull, its
/// missing part fetched from the origin with a Range PLAY; the title is
/// `complete` again afterwards.
fn refilled_after_restart(rig: &mut Rig, reference: &[String]) {
    rig.restart();
    let entry = rig.wait_state("partial");
    let held: f64 = entry["spans"]
        .as_array()
        .expect("spans")
        .iter()
        .map(|s| s["end"].as_f64().unwrap_or(0.0) - s["start"].as_f64().unwrap_or(0.0))
        .sum();
    assert!(held < f64::from(SECS) - 1.0, "holds {held} s: {entry}");
    let plays_before = rig.origin_plays().len();
    let video = framemd5(&rig.url(), Some("tcp"), "0:v", &[]);
    assert_same_video("the play after the damage", &video, reference);
    let plays = rig.origin_plays();
    let refill: Vec<_> = plays[plays_before..].iter().collect();
    assert_eq!(refill.len(), 1, "origin PLAYs of the refill: {refill:?}");
    assert!(
        refill[0]
            .range
            .as_deref()
            .is_some_and(|r| !r.starts_with("npt=0")),
        "the refill did not resume after the held part: {refill:?}"
    );
    rig.wait_state("complete");
}

/// Case 2: a sealed segment cut short.
#[test]
fn a_truncated_segment_makes_the_title_partial_and_is_refilled() {
    let reference = thread::spawn(|| direct_pull(SECS));
    let reference = reference.join().unwrap();
    let mut rig = recorded_then_stopped(&reference);
    let segment = rig.segment();
    let len = fs::metadata(&segment).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .unwrap()
        .set_len(len / 2)
        .unwrap();

    let out = rig.verify(&[]);
    assert!(!out.success(), "verify passed a truncated segment: {out:?}");
    assert!(out.stdout.contains(&file_name(&segment)), "{out:?}");

    refilled_after_restart(&mut rig, &reference);
    assert!(rig.verify(&[]).success(), "verify after the refill");
}

/// Case 3: 16 bytes flipped in the middle of a sealed segment.
#[test]
fn a_corrupt_record_is_cut_out_and_refilled() {
    let reference = thread::spawn(|| direct_pull(SECS)).join().unwrap();
    let mut rig = recorded_then_stopped(&reference);
    let segment = rig.segment();
    flip_middle(&segment, 0x5a);

    let out = rig.verify(&[]);
    assert!(!out.success(), "verify passed a corrupt record: {out:?}");
    assert!(out.stdout.contains(&file_name(&segment)), "{out:?}");

    refilled_after_restart(&mut rig, &reference);
}

/// Case 4: metadata deleted. The orphan segments are reclaimed at start and
/// the title is fetched anew, whole.
#[test]
fn segments_without_metadata_are_reclaimed_and_the_title_fetched_anew() {
    let reference = thread::spawn(|| direct_pull(SECS)).join().unwrap();
    let mut rig = recorded_then_stopped(&reference);
    let orphan = rig.title_dir();
    fs::remove_file(orphan.join("meta.json")).unwrap();

    let ls = run_streamcache(&["cache", "--config", rig.config.to_str().unwrap(), "ls"]);
    assert!(ls.success(), "{ls:?}");
    assert!(
        ls.stdout.contains(&file_name(&orphan)),
        "ls hides the orphan: {ls:?}"
    );
    assert!(!rig.verify(&[]).success(), "verify passed an orphan");

    rig.restart();
    assert!(!orphan.exists(), "the orphan directory stayed");
    assert!(rig.presentations().is_empty(), "{:?}", rig.presentations());
    let video = framemd5(&rig.url(), Some("tcp"), "0:v", &[]);
    assert_same_video("the play after the orphan", &video, &reference);
    rig.wait_state("complete");
    rig.title_dir(); // one directory: the new recording
}

/// Case 4: metadata that contradicts its SDP (no tracks) is refused as a
/// whole, never half-served: the title is fetched anew.
#[test]
fn metadata_contradicting_its_sdp_is_refused_and_the_title_fetched_anew() {
    let reference = thread::spawn(|| direct_pull(SECS)).join().unwrap();
    let mut rig = recorded_then_stopped(&reference);
    let meta_path = rig.title_dir().join("meta.json");
    let mut meta: Value = serde_json::from_slice(&fs::read(&meta_path).unwrap()).unwrap();
    meta["metadata"]["tracks"] = Value::Array(Vec::new());
    fs::write(&meta_path, meta.to_string()).unwrap();
    assert!(!rig.verify(&[]).success(), "verify passed empty tracks");

    rig.restart();
    assert!(rig.presentations().is_empty(), "{:?}", rig.presentations());
    let video = framemd5(&rig.url(), Some("tcp"), "0:v", &[]);
    assert_same_video("the play after the refused metadata", &video, &reference);
    rig.wait_state("complete");
}

/// Case 5: `verify` of a key or id the store does not hold fails.
#[test]
fn verify_of_an_unknown_title_fails() {
    let dir = temp_dir();
    let cache = dir.path().join("cache");
    fs::create_dir(&cache).unwrap();
    let config = dir.path().join("streamcache.toml");
    fs::write(&config, Proxy::config(&cache, &[])).unwrap();
    let config = config.to_str().unwrap();
    let out = run_streamcache(&["cache", "--config", config, "verify", "rtsp://nowhere/x"]);
    assert!(!out.success(), "{out:?}");
    assert!(out.stderr.contains("rtsp://nowhere/x"), "{out:?}");
    assert!(run_streamcache(&["cache", "--config", config, "verify"]).success());
}

/// Case 3, found while the daemon runs: bytes flipped under a stored title.
/// The play that reads them skips exactly the damaged record(s) (the rest
/// of the segment plays on), the damage is counted in
/// `streamcache_store_corrupt_records_total` and logged once with its
/// file, the title becomes `partial`, and the next play is whole again,
/// frame-identical, the damaged part fetched from the origin.
#[test]
fn damage_found_while_playing_is_counted_logged_once_and_refilled() {
    let reference = thread::spawn(|| direct_pull(SECS)).join().unwrap();
    let rig = Rig::start();
    let first = framemd5(&rig.url(), Some("tcp"), "0:v", &[]);
    assert_same_video("the recording play", &first, &reference);
    rig.wait_state("complete");

    let segment = rig.segment();
    flip_middle(&segment, 0xa5);

    // The play that meets the damage: nearly every frame, not a cut title.
    let damaged = framemd5(&rig.url(), Some("tcp"), "0:v", &[]);
    assert!(
        damaged.len() + 10 >= reference.len(),
        "the damaged play stopped short: {} of {} frames",
        damaged.len(),
        reference.len()
    );
    let metrics = rig.proxy().admin_get("/metrics").body;
    let corrupt: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("streamcache_store_corrupt_records_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no corrupt-records counter:\n{metrics}"));
    assert!(corrupt >= 1.0, "{corrupt}");
    let name = file_name(&segment);
    let logs = rig.proxy().logs();
    assert_eq!(
        logs.lines().filter(|l| l.contains(&name)).count(),
        1,
        "the damage is logged once, naming {name}:\n{logs}"
    );

    rig.wait_state("partial");
    let plays_before = rig.origin_plays().len();
    let video = framemd5(&rig.url(), Some("tcp"), "0:v", &[]);
    assert_same_video("the play after the damage", &video, &reference);
    assert!(
        rig.origin_plays().len() > plays_before,
        "the damaged part was not fetched again"
    );
}
