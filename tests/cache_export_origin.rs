//! `streamcache cache export` end to end, on titles recorded from the real
//! GStreamer origin: an H.264 + AAC title and an H.265 + AAC title (10 s,
//! 25 fps, a keyframe every second, `scripts/make-test-media`), each played
//! once through the proxy until the store holds it complete, then exported
//! to MP4 and to MPEG-TS while the daemon runs (the CLI opens the store
//! read-only). Against a direct pull from the origin (`ffprobe
//! -show_frames`, `ffmpeg -f framemd5` of the video):
//!
//! - the same number of video frames, the keyframes at the same frame
//!   indices and the same relative times;
//! - every decoded video frame identical (framemd5);
//! - the video's duration within one frame;
//! - as many audio frames;
//! - `--from 3.5 --to 7` starts at the keyframe at or before 3.5 s (frame
//!   75, 3 s in) and is that stretch of the direct pull, frame for frame.
//!
//! Needs the real peers (ffmpeg, the GStreamer RTSP server, libx265 in
//! ffmpeg for the H.265 title), as every end-to-end test does.

mod support;

use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::Duration;

use support::*;

const SECS: u32 = 10;
/// Frame duration at 25 fps.
const FRAME: f64 = 0.04;

/// What ffprobe and ffmpeg make of a title's video.
#[derive(Debug)]
struct Video {
    /// Every decoded video frame's pts (None where ffprobe gives N/A).
    pts: Vec<Option<f64>>,
    /// Indices of the keyframes among them.
    keys: Vec<usize>,
    /// framemd5 of each decoded frame, in order.
    md5: Vec<String>,
    /// Decoded audio frames.
    audio_frames: usize,
}

impl Video {
    fn of(frames: &[FrameInfo], md5: Vec<String>) -> Video {
        let video: Vec<&FrameInfo> = frames.iter().filter(|f| f.media_type == "video").collect();
        Video {
            pts: video.iter().map(|f| f.pts_time).collect(),
            keys: (0..video.len()).filter(|&i| video[i].key_frame).collect(),
            md5,
            audio_frames: frames.iter().filter(|f| f.media_type == "audio").count(),
        }
    }

    /// Time between consecutive keyframes in ms, where ffprobe knows both
    /// pts (a pull's very first frame may have none).
    fn key_intervals(&self) -> Vec<Option<i64>> {
        self.keys
            .windows(2)
            .map(|w| {
                let (a, b) = (self.pts[w[0]]?, self.pts[w[1]]?);
                Some(((b - a) * 1000.0).round() as i64)
            })
            .collect()
    }

    /// Each keyframe's time relative to the first frame, in ms.
    fn key_times(&self) -> Vec<Option<i64>> {
        let first = self.pts.first().copied().flatten();
        self.keys
            .iter()
            .map(|&k| Some(((self.pts[k]? - first?) * 1000.0).round() as i64))
            .collect()
    }

    /// First to last frame plus one frame's duration (the median step).
    fn duration(&self) -> f64 {
        let known: Vec<f64> = self.pts.iter().flatten().copied().collect();
        let mut steps: Vec<f64> = known.windows(2).map(|w| w[1] - w[0]).collect();
        steps.sort_by(f64::total_cmp);
        let step = steps.get(steps.len() / 2).copied().unwrap_or(FRAME);
        // Frames without a pts (at the start of a pull) count at that step.
        let unknown = self.pts.len() - known.len();
        match (known.first(), known.last()) {
            (Some(a), Some(b)) => b - a + step * (unknown as f64 + 1.0),
            _ => 0.0,
        }
    }
}

/// ffprobe -show_frames on a file.
fn probe_file(path: &Path) -> Vec<FrameInfo> {
    let out = run_bounded(
        Command::new("ffprobe")
            .args(["-v", "error", "-show_entries"])
            .args(["frame=media_type,key_frame,pts_time", "-of", "csv=p=0"])
            .arg(path),
        PLAYER_LIMIT,
    );
    assert!(out.success(), "ffprobe {}: {out:?}", path.display());
    out.stdout
        .lines()
        .filter_map(|line| {
            let mut f = line.trim().split(',');
            Some(FrameInfo {
                media_type: f.next()?.to_string(),
                key_frame: f.next()? == "1",
                pts_time: f.next().and_then(|t| t.parse().ok()),
            })
        })
        .collect()
}

fn video_of_file(path: &Path) -> Video {
    let input = path.to_str().expect("UTF-8 path");
    Video::of(&probe_file(path), framemd5(input, None, "0:v", &[]))
}

/// A file's video stream duration as its container states it.
fn stated_video_duration(path: &Path) -> f64 {
    let out = run_bounded(
        Command::new("ffprobe")
            .args(["-v", "error", "-select_streams", "v:0"])
            .args(["-show_entries", "stream=duration", "-of", "csv=p=0"])
            .arg(path),
        PLAYER_LIMIT,
    );
    out.stdout
        .lines()
        .find_map(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("no video duration for {}: {out:?}", path.display()))
}

/// `streamcache cache export --config CONFIG ARGS...`; panics on failure.
fn export(config: &Path, args: &[&str]) {
    let out = run_bounded(
        Command::new(env!("CARGO_BIN_EXE_streamcache"))
            .args(["cache", "export", "--config"])
            .arg(config)
            .args(args),
        PLAYER_LIMIT,
    );
    assert!(out.success(), "cache export {args:?}: {out:?}");
}

/// The id of the one complete title in the cache (`cache ls`).
fn complete_title(config: &Path) -> String {
    let out = run_bounded(
        Command::new(env!("CARGO_BIN_EXE_streamcache"))
            .args(["cache", "ls", "--config"])
            .arg(config),
        PLAYER_LIMIT,
    );
    assert!(out.success(), "cache ls: {out:?}");
    let ids: Vec<&str> = out
        .stdout
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let id = f.next()?;
            (f.next()? == "complete").then_some(id)
        })
        .collect();
    assert_eq!(ids.len(), 1, "one complete title: {}", out.stdout);
    ids[0].to_owned()
}

fn export_matches_a_direct_pull(media: &Path, codec: &str) {
    let origin = Origin::start(OriginOpts::new().media(media).video_codec(codec));
    let direct_url = origin.url("vod");
    let dir = temp_dir();
    let cache = dir.path().join("cache");
    let proxy = Proxy::start(&Proxy::config(
        &cache,
        &[Mount::new("/o", &origin.url("")).transport("tcp")],
    ));
    let proxied_url = proxy.url("o/vod");

    // The direct pull (frames, then decoded video), and the one play through
    // the proxy that fills the cache, side by side: each takes the title's
    // 10 s of real time.
    let read_secs = SECS + 10;
    let (direct, proxied) = thread::scope(|s| {
        let frames = s.spawn(|| ffprobe_frames(&direct_url, "tcp", read_secs));
        let md5 = s.spawn(|| framemd5(&direct_url, Some("tcp"), "0:v", &[]));
        let proxied = s.spawn(|| framemd5(&proxied_url, Some("tcp"), "0:v", &[]));
        let (frames, output) = frames.join().expect("ffprobe thread");
        assert!(output.success(), "direct ffprobe: {output:?}");
        let direct = Video::of(&frames, md5.join().expect("framemd5 thread"));
        (direct, proxied.join().expect("proxied thread"))
    });
    proxy.wait_cached(&proxied_url, Duration::from_secs(30));
    let n = SECS as usize * 25;
    eprintln!(
        "{codec}: direct pull {} video frames, keyframes at frames {:?}, {} audio frames",
        direct.pts.len(),
        direct.keys,
        direct.audio_frames
    );
    assert_eq!(direct.pts.len(), n, "the direct pull decodes every frame");
    assert_eq!(direct.md5.len(), n);
    assert_eq!(proxied, direct.md5, "the play through the proxy");

    // Export while the daemon runs.
    let config = proxy.config_path();
    let id = complete_title(config);
    let file = |name: &str| dir.path().join(name);
    let path = |name: &str| file(name).to_str().expect("UTF-8").to_owned();
    export(config, &[&id, &path("full.mp4")]);
    export(config, &[&id, &path("full.ts"), "--format", "ts"]);
    export(
        config,
        &[&id, &path("cut.mp4"), "--from", "3.5", "--to", "7"],
    );
    export(
        config,
        &[
            &id,
            &path("cut.ts"),
            "--from",
            "3.5",
            "--to",
            "7",
            "--format",
            "ts",
        ],
    );
    let leftovers: Vec<String> = std::fs::read_dir(dir.path())
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");

    let direct_duration = direct.duration();
    for name in ["full.mp4", "full.ts"] {
        let video = video_of_file(&file(name));
        let stated = stated_video_duration(&file(name));
        eprintln!(
            "{codec} {name}: {} video frames, keyframes at frames {:?}, at {:?} ms; \
             video duration {stated:.3} s stated, {:.3} s by frames (direct pull {direct_duration:.3} s); \
             {} audio frames",
            video.pts.len(),
            video.keys,
            video.key_times(),
            video.duration(),
            video.audio_frames,
        );
        assert_eq!(video.pts.len(), n, "{name}: frame count");
        assert_eq!(video.keys, direct.keys, "{name}: keyframe positions");
        // Keyframe times, relative: every second from the first frame, with
        // the same spacing as in the direct pull wherever it has both pts.
        let expected: Vec<Option<i64>> = (0..SECS as i64).map(|s| Some(s * 1000)).collect();
        assert_eq!(video.key_times(), expected, "{name}: keyframe times");
        for (i, (ours, theirs)) in video
            .key_intervals()
            .iter()
            .zip(direct.key_intervals())
            .enumerate()
        {
            if let (Some(ours), Some(theirs)) = (ours, theirs) {
                assert_eq!(*ours, theirs, "{name}: keyframe interval {i}");
            }
        }
        assert_eq!(
            video.audio_frames, direct.audio_frames,
            "{name}: audio frame count"
        );
        assert!(
            video.md5 == direct.md5,
            "{name}: decoded video differs from the direct pull"
        );
        assert!(
            (stated - direct_duration).abs() <= FRAME + 1e-6,
            "{name}: video duration {stated} s, the direct pull's {direct_duration} s"
        );
        assert!(
            (video.duration() - direct_duration).abs() <= FRAME + 1e-6,
            "{name}: frames span {} s, the direct pull's {direct_duration} s",
            video.duration()
        );
    }

    // The cut: from the keyframe at or before 3.5 s, the direct pull's
    // frames 75.. (3 s in), up to 7 s.
    let from_key = 75;
    assert!(direct.keys.contains(&from_key));
    for name in ["cut.mp4", "cut.ts"] {
        let video = video_of_file(&file(name));
        eprintln!(
            "{codec} {name}: {} video frames, keyframes at frames {:?}, at {:?} ms",
            video.pts.len(),
            video.keys,
            video.key_times()
        );
        assert_eq!(video.keys.first(), Some(&0), "{name} starts at a keyframe");
        assert_eq!(video.keys, [0, 25, 50, 75], "{name}: keyframes");
        assert!(
            (99..=101).contains(&video.md5.len()),
            "{name}: 3 s to 7 s is about 100 frames, not {}",
            video.md5.len()
        );
        assert!(
            video.md5[..] == direct.md5[from_key..from_key + video.md5.len()],
            "{name}: not the direct pull's frames from {from_key} on"
        );
    }
}

#[test]
fn export_of_an_h264_aac_title_matches_a_direct_pull() {
    export_matches_a_direct_pull(&test_media(SECS), "h264");
}

#[test]
fn export_of_an_h265_aac_title_matches_a_direct_pull() {
    export_matches_a_direct_pull(&test_media_h265(SECS), "h265");
}
