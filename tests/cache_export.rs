//! `streamcache cache export` on the embedded sample title (assets/sample:
//! 10 s of H.264 at 25 fps, keyframe every second, and AAC, as stored from
//! a GStreamer origin): the MP4 and the MPEG-TS have every frame, the
//! keyframes where they were, and the same decoded video; `--from 2 --to 5`
//! starts at a keyframe at or before 2 s; a span the cache does not hold is
//! refused naming what it holds. ffprobe/ffmpeg are needed (CI installs
//! them): skipped, saying so, without.

use std::path::Path;
use std::process::Command;

fn tool(name: &str) -> bool {
    Command::new(name)
        .arg("-version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// (frames, keyframe times) of the first video stream, and its framemd5s.
fn video(path: &Path) -> (usize, Vec<f64>, Vec<String>) {
    let frames = run(Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0", "-show_frames"])
        .args([
            "-show_entries",
            "frame=key_frame,pts_time",
            "-of",
            "csv=p=0",
        ])
        .arg(path));
    let mut count = 0;
    let mut keys = Vec::new();
    for line in frames.lines().filter(|l| l.starts_with(['0', '1'])) {
        let mut fields = line.split(',');
        let key = fields.next() == Some("1");
        let t: f64 = fields
            .next()
            .and_then(|t| t.parse().ok())
            .expect("pts_time");
        count += 1;
        if key {
            keys.push(t);
        }
    }
    let md5 = run(Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(path)
        .args(["-map", "0:v", "-f", "framemd5", "-"]));
    let md5 = md5
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit(',').next().map(str::to_owned))
        .collect();
    (count, keys, md5)
}

fn audio_frames(path: &Path) -> usize {
    run(Command::new("ffprobe")
        .args(["-v", "error", "-count_frames", "-select_streams", "a:0"])
        .args(["-show_entries", "stream=nb_read_frames", "-of", "csv=p=0"])
        .arg(path))
    .lines()
    .next()
    .and_then(|l| l.trim().parse().ok())
    .expect("an audio frame count")
}

#[test]
fn export_the_sample_title_to_mp4_and_ts() {
    if !tool("ffprobe") || !tool("ffmpeg") {
        eprintln!("SKIPPED: ffprobe/ffmpeg not installed (apt-get install ffmpeg)");
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().expect("temp dir");
    let title = dir.path().join("cache/sample");
    std::fs::create_dir_all(&title).expect("title dir");
    for name in ["meta.json", "r00000001-s000000.seg"] {
        std::fs::copy(root.join("assets/sample").join(name), title.join(name)).expect("copy");
    }
    let config = std::fs::read_to_string(root.join("etc/streamcache.toml")).expect("config");
    let cache_dir = dir.path().join("cache");
    let config = config.replace(
        "dir = \"var/cache\"",
        &format!("dir = {:?}", cache_dir.display().to_string()),
    );
    let config_path = dir.path().join("streamcache.toml");
    std::fs::write(&config_path, config).expect("write config");
    let export = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_streamcache"))
            .args(["cache", "export", "--config"])
            .arg(&config_path)
            .args(args)
            .output()
            .expect("run streamcache")
    };
    let path = |name: &str| dir.path().join(name).display().to_string();

    for (name, format) in [("full.mp4", "mp4"), ("full.ts", "ts")] {
        let out = export(&["streamcache:sample", &path(name), "--format", format]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let (mp4_frames, mp4_keys, mp4_md5) = video(Path::new(&path("full.mp4")));
    let (ts_frames, ts_keys, ts_md5) = video(Path::new(&path("full.ts")));
    eprintln!("mp4: {mp4_frames} video frames, keyframes at {mp4_keys:?}");
    eprintln!("ts: {ts_frames} video frames, keyframes at {ts_keys:?}");
    assert_eq!(mp4_frames, 250);
    assert_eq!(ts_frames, 250);
    assert_eq!(mp4_keys.len(), 10);
    let relative = |keys: &[f64]| -> Vec<i64> {
        keys.iter()
            .map(|k| ((k - keys[0]) * 1000.0).round() as i64)
            .collect()
    };
    assert_eq!(relative(&mp4_keys), relative(&ts_keys));
    assert_eq!(
        relative(&mp4_keys),
        (0..10).map(|s| s * 1000).collect::<Vec<_>>()
    );
    assert_eq!(mp4_md5, ts_md5, "same decoded video in both containers");
    let (mp4_audio, ts_audio) = (
        audio_frames(Path::new(&path("full.mp4"))),
        audio_frames(Path::new(&path("full.ts"))),
    );
    eprintln!("audio frames: mp4 {mp4_audio}, ts {ts_audio}");
    assert_eq!(mp4_audio, ts_audio);

    // A cut: from the keyframe at or before 2 s, to 5 s.
    let out = export(&[
        "streamcache:sample",
        &path("cut.mp4"),
        "--from",
        "2",
        "--to",
        "5",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (cut_frames, cut_keys, cut_md5) = video(Path::new(&path("cut.mp4")));
    eprintln!("cut: {cut_frames} video frames, keyframes at {cut_keys:?}");
    let first = mp4_md5
        .iter()
        .position(|m| *m == cut_md5[0])
        .expect("the cut's first frame is one of the title's");
    assert_eq!(first % 25, 0, "the cut starts at a keyframe");
    assert!(first <= 2 * 25, "at or before 2 s: frame {first}");
    assert_eq!(cut_md5[..], mp4_md5[first..first + cut_frames]);
    assert!(first + cut_frames >= 5 * 25 - 1 && first + cut_frames <= 5 * 25 + 1);

    // Not held: refused, naming what is.
    let out = export(&[
        "streamcache:sample",
        &path("no.mp4"),
        "--from",
        "2",
        "--to",
        "50",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("the cache holds 0.0–10.0 s of it"), "{err}");
}
