//! The muxers against real ffmpeg: a libx264 + AAC clip (as
//! shared/TESTING.md makes stable test media) is read into frames, muxed
//! to MP4, fragmented MP4 and MPEG-TS, and ffprobe/ffmpeg must see the
//! same frames as in the source: frame counts, keyframe positions and
//! times, video framemd5. Skipped, saying so, when ffmpeg is missing.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use streamcache_transcoding::mux::fmp4::{fragment, init_segment, Segmenter};
use streamcache_transcoding::mux::mp4::Mp4Plan;
use streamcache_transcoding::mux::ts::TsMuxer;
use streamcache_transcoding::mux::FrameHeader;
use streamcache_types::Npt;
use support::source::{read, Source};

fn have_ffmpeg() -> bool {
    let ok = |tool: &str| {
        Command::new(tool)
            .arg("-version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if ok("ffprobe") && ok("ffmpeg") {
        true
    } else {
        eprintln!("SKIPPED: ffprobe/ffmpeg not installed (apt-get install ffmpeg)");
        false
    }
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run ffmpeg/ffprobe");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A 4 s 320x240 25 fps H.264 (GOP 25, `bframes` B-frames) + AAC clip.
fn clip(dir: &Path, bframes: u32) -> PathBuf {
    let path = dir.join(format!("source-bf{bframes}.mp4"));
    run(Command::new("ffmpeg")
        .args(["-v", "error", "-y"])
        .args([
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=320x240:rate=25",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=44100",
            "-t",
            "4",
            "-c:v",
            "libx264",
            "-g",
            "25",
            "-bf",
            &bframes.to_string(),
            "-threads",
            "1",
            "-fflags",
            "+bitexact",
            "-c:a",
            "aac",
        ])
        .arg(&path));
    path
}

/// What ffprobe/ffmpeg see of a file.
#[derive(Debug, PartialEq)]
struct Seen {
    video_frames: usize,
    audio_frames: usize,
    /// Video frames in presentation order: keyframe?, time from the first.
    video: Vec<(bool, f64)>,
    video_md5: Vec<String>,
    duration: f64,
}

fn seen(path: &Path) -> Seen {
    let count = |stream: &str| -> usize {
        run(Command::new("ffprobe")
            .args(["-v", "error", "-count_frames", "-select_streams", stream])
            .args(["-show_entries", "stream=nb_read_frames", "-of", "csv=p=0"])
            .arg(path))
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .expect("a frame count")
    };
    let frames = run(Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0", "-show_frames"])
        .args([
            "-show_entries",
            "frame=key_frame,pts_time",
            "-of",
            "csv=p=0",
        ])
        .arg(path));
    let mut video: Vec<(bool, f64)> = frames
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            // key_frame,pts_time[,side data]
            let mut fields = l.split(',');
            let key = fields.next() == Some("1");
            let t = fields
                .next()
                .and_then(|t| t.parse().ok())
                .expect("pts_time");
            (key, t)
        })
        .collect();
    let first = video.first().map_or(0.0, |v| v.1);
    for v in &mut video {
        v.1 = ((v.1 - first) * 1000.0).round() / 1000.0;
    }
    let md5 = run(Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(path)
        .args(["-map", "0:v", "-f", "framemd5", "-"]));
    let video_md5 = md5
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit(',').next().map(|h| h.trim().to_owned()))
        .collect();
    let duration = run(Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "format=duration",
            "-of",
            "csv=p=0",
        ])
        .arg(path))
    .trim()
    .parse()
    .expect("a duration");
    Seen {
        video_frames: count("v:0"),
        audio_frames: count("a:0"),
        video,
        video_md5,
        duration,
    }
}

fn assert_same(source: &Seen, muxed: &Seen, audio_samples: usize, what: &str) {
    eprintln!(
        "{what}: video {} frames ({} keyframes), audio {} frames, duration {:.3} s (source {:.3} s), \
         {} framemd5 lines",
        muxed.video_frames,
        muxed.video.iter().filter(|v| v.0).count(),
        muxed.audio_frames,
        muxed.duration,
        source.duration,
        muxed.video_md5.len()
    );
    assert_eq!(
        muxed.video_frames, source.video_frames,
        "{what}: video frames"
    );
    // The source's edit list hides AAC's priming frame from ffmpeg; RTP
    // (and so the store) has no such list: every stored frame plays.
    assert_eq!(muxed.audio_frames, audio_samples, "{what}: audio frames");
    assert_eq!(muxed.video, source.video, "{what}: keyframes and times");
    assert_eq!(muxed.video_md5, source.video_md5, "{what}: video framemd5");
    // Within a video frame, plus the AAC priming frame the source's edit
    // list hides, plus (fMP4 with B-frames) the frame by which ffmpeg 5.1
    // delays a track with negative composition offsets.
    assert!(
        (muxed.duration - source.duration).abs() <= 0.04 + 0.0233 + 0.04 + 0.001,
        "{what}: duration {} vs {}",
        muxed.duration,
        source.duration
    );
}

fn write_mp4(src: &Source, path: &Path) {
    let plan = Mp4Plan::new(&src.codecs, src.frames.iter().map(FrameHeader::from)).expect("plan");
    let file = std::fs::File::create(path).expect("create");
    let mut writer = plan.writer(std::io::BufWriter::new(file)).expect("header");
    for frame in &src.frames {
        writer.write_frame(frame).expect("frame");
    }
    writer.finish().expect("finish");
}

fn write_fmp4(src: &Source, path: &Path) {
    let origin = src.frames.iter().map(|f| f.pts).min().expect("frames");
    let mut segmenter = Segmenter::new(Some(0), Npt::from_secs(1));
    let mut segments = Vec::new();
    for frame in src.frames.iter().cloned() {
        segments.extend(segmenter.push(frame));
    }
    segments.extend(segmenter.finish());
    assert!(segments.len() >= 3, "one segment a GOP: {}", segments.len());
    let mut out = init_segment(&src.codecs).expect("init").to_vec();
    for (i, segment) in segments.iter().enumerate() {
        let end = segments.get(i + 1).map(|s| s[0].pts);
        let bytes = fragment(i as u32 + 1, &src.codecs, origin, segment, end).expect("fragment");
        out.extend_from_slice(&bytes);
    }
    std::fs::write(path, out).expect("write");
}

fn write_ts(src: &Source, path: &Path) {
    let mut mux = TsMuxer::new(&src.codecs).expect("ts");
    let mut out = Vec::new();
    for frame in src.frames.iter().cloned() {
        mux.push(frame, &mut out).expect("push");
    }
    mux.finish(&mut out).expect("finish");
    assert_eq!(out.len() % 188, 0);
    std::fs::write(path, out).expect("write");
}

/// A container: its file extension and how to write it.
type Format = (&'static str, fn(&Source, &Path));

fn check(bframes: u32, formats: &[Format]) {
    if !have_ffmpeg() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let source_path = clip(dir.path(), bframes);
    let src = read(&source_path);
    let source = seen(&source_path);
    eprintln!(
        "source (-bf {bframes}): video {} frames ({} keyframes), audio {} frames",
        source.video_frames,
        source.video.iter().filter(|v| v.0).count(),
        source.audio_frames
    );
    assert_eq!(source.video_frames, 100);
    for (ext, write) in formats {
        let path = dir.path().join(format!("muxed.{ext}"));
        write(&src, &path);
        let audio_samples = src.frames.iter().filter(|f| f.track == 1).count();
        assert_same(
            &source,
            &seen(&path),
            audio_samples,
            &format!("{ext} (-bf {bframes})"),
        );
    }
}

#[test]
fn mp4_fmp4_ts_match_the_source() {
    check(
        0,
        &[
            ("mp4", write_mp4),
            ("fmp4.mp4", write_fmp4),
            ("ts", write_ts),
        ],
    );
}

#[test]
fn b_frames_mp4_fmp4_ts_match_the_source() {
    check(
        2,
        &[
            ("mp4", write_mp4),
            ("fmp4.mp4", write_fmp4),
            ("ts", write_ts),
        ],
    );
}
