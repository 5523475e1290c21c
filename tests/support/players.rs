//! Real players on a URL or a file: ffprobe, ffmpeg and gst-launch, each
//! run to completion under a time limit.

use std::process::Command;
use std::time::Duration;

use super::peers::require_peers;
use super::processes::{run_bounded, Output};
use super::PLAYER_LIMIT;

/// Decoded frames per media type, from `ffprobe -count_frames`.
#[derive(Debug)]
pub struct FrameCounts {
    pub video: u64,
    pub audio: u64,
    pub output: Output,
}

/// Decodes `url` pulled over `transport` (`"tcp"`/`"udp"`) with ffprobe and
/// counts the frames. `read_secs` bounds a live stream (`-read_intervals`).
pub fn ffprobe_count_frames(url: &str, transport: &str, read_secs: Option<u32>) -> FrameCounts {
    require_peers();
    let mut cmd = Command::new("ffprobe");
    cmd.args(["-v", "error", "-rtsp_transport", transport]);
    if let Some(secs) = read_secs {
        cmd.args(["-read_intervals", &format!("%+{secs}")]);
    }
    cmd.args([
        "-count_frames",
        "-show_entries",
        "stream=codec_type,nb_read_frames",
    ])
    .args(["-of", "csv=p=0", url]);
    let output = run_bounded(&mut cmd, PLAYER_LIMIT);
    let (mut video, mut audio) = (0, 0);
    for line in output.stdout.lines() {
        match line.trim().split_once(',') {
            Some(("video", n)) => video += n.parse().unwrap_or(0),
            Some(("audio", n)) => audio += n.parse().unwrap_or(0),
            _ => {}
        }
    }
    FrameCounts {
        video,
        audio,
        output,
    }
}

/// Decoded video frames of a live `url` over `read_secs` seconds of the
/// video's own timestamps (`-select_streams v`). ffprobe's `-read_intervals`
/// window over all streams closes at the first packet of any stream past its
/// end: on a loaded machine a live origin's audio keeps real time while its
/// video encoder lags, so that window closes before the video's seconds are
/// in and counts fewer frames though none was lost. Measured on the video's
/// timeline, the count says whether video frames went missing.
pub fn ffprobe_count_video_frames(url: &str, transport: &str, read_secs: u32) -> FrameCounts {
    require_peers();
    let output = run_bounded(
        Command::new("ffprobe")
            .args(["-v", "error", "-rtsp_transport", transport])
            .args(["-select_streams", "v"])
            .args(["-read_intervals", &format!("%+{read_secs}")])
            .args(["-count_frames", "-show_entries", "stream=nb_read_frames"])
            .args(["-of", "csv=p=0", url]),
        PLAYER_LIMIT,
    );
    let video = output
        .stdout
        .lines()
        .filter_map(|line| line.trim().parse::<u64>().ok())
        .sum();
    FrameCounts {
        video,
        audio: 0,
        output,
    }
}

/// One decoded frame as ffprobe reports it.
#[derive(Clone, Debug)]
pub struct FrameInfo {
    /// `"video"` or `"audio"`.
    pub media_type: String,
    pub key_frame: bool,
    pub pts_time: Option<f64>,
}

/// Every decoded frame of `url` for `read_secs`, in decoding order: for
/// checking that a (late-joining) player starts at a keyframe.
pub fn ffprobe_frames(url: &str, transport: &str, read_secs: u32) -> (Vec<FrameInfo>, Output) {
    require_peers();
    let output = run_bounded(
        Command::new("ffprobe")
            .args(["-v", "error", "-rtsp_transport", transport])
            .args(["-read_intervals", &format!("%+{read_secs}")])
            .args(["-show_entries", "frame=media_type,key_frame,pts_time"])
            .args(["-of", "csv=p=0", url]),
        PLAYER_LIMIT,
    );
    let frames = output
        .stdout
        .lines()
        .filter_map(|line| {
            let mut f = line.trim().split(',');
            let media_type = f.next()?.to_string();
            let key_frame = f.next()? == "1";
            let pts_time = f.next().and_then(|t| t.parse().ok());
            Some(FrameInfo {
                media_type,
                key_frame,
                pts_time,
            })
        })
        .collect();
    (frames, output)
}

/// `ffmpeg -f framemd5`: the hash of every decoded frame of `stream` (an
/// ffmpeg `-map` selector such as `"0:v"`), in order — timestamps left out,
/// as a pull's differ from the file's. `-fps_mode passthrough`: every decoded
/// frame exactly once (by default ffmpeg drops or duplicates frames to keep
/// a constant rate, which hides or fakes differences after a seek). `input` is a URL or a file; `transport`
/// is `Some("tcp"|"udp")` for URLs. `input_args` go before `-i`: e.g.
/// `["-ss", "10", "-noaccurate_seek"]` or `["-t", "3"]`.
pub fn framemd5(
    input: &str,
    transport: Option<&str>,
    stream: &str,
    input_args: &[&str],
) -> Vec<String> {
    let out = ffmpeg_decode(
        input,
        transport,
        input_args,
        &[
            "-map",
            stream,
            "-fps_mode",
            "passthrough",
            "-f",
            "framemd5",
            "-",
        ],
    );
    out.stdout
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| Some(l.rsplit(',').next()?.trim().to_string()))
        .collect()
}

/// `ffmpeg -map 0:a -f md5`: one hash over all decoded audio.
pub fn audio_md5(input: &str, transport: Option<&str>, input_args: &[&str]) -> String {
    let out = ffmpeg_decode(
        input,
        transport,
        input_args,
        &["-map", "0:a", "-f", "md5", "-"],
    );
    let md5 = out.stdout.trim().strip_prefix("MD5=").map(String::from);
    md5.unwrap_or_else(|| panic!("ffmpeg gave no audio MD5 for {input}: {out:?}"))
}

fn ffmpeg_decode(
    input: &str,
    transport: Option<&str>,
    input_args: &[&str],
    output_args: &[&str],
) -> Output {
    require_peers();
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-nostdin", "-hide_banner", "-v", "error"]);
    if let Some(transport) = transport {
        cmd.args(["-rtsp_transport", transport]);
    }
    cmd.args(input_args).args(["-i", input]).args(output_args);
    let out = run_bounded(&mut cmd, PLAYER_LIMIT);
    assert!(out.success(), "ffmpeg decode of {input} failed: {out:?}");
    out
}

/// What a time-limited `ffmpeg -c copy` pull received.
#[derive(Debug)]
pub struct Pull {
    /// Sizes from ffmpeg's final `video:…kB audio:…kB` line.
    pub video_kb: u64,
    pub audio_kb: u64,
    pub output: Output,
}

/// A cheap player (no decoding: `-c copy -f null`) that stays on `url` for
/// `secs` seconds of media (`-t`): for many concurrent viewers.
pub fn ffmpeg_pull(url: &str, transport: &str, secs: u32) -> Pull {
    require_peers();
    let output = run_bounded(
        Command::new("ffmpeg")
            .args(["-nostdin", "-hide_banner", "-v", "info", "-nostats"])
            .args(["-rtsp_transport", transport, "-i", url])
            .args([
                "-t",
                &secs.to_string(),
                "-map",
                "0",
                "-c",
                "copy",
                "-f",
                "null",
                "-",
            ]),
        PLAYER_LIMIT + Duration::from_secs(secs.into()),
    );
    // At -v info ffmpeg ends with a totals line on stderr:
    // "video:123kB audio:45kB subtitle:0kB ...".
    let kb = |key: &str| -> u64 {
        output
            .stderr
            .rsplit_once(key)
            .and_then(|(_, rest)| rest.split("kB").next()?.trim().parse().ok())
            .unwrap_or(0)
    };
    Pull {
        video_kb: kb("video:"),
        audio_kb: kb("audio:"),
        output,
    }
}

/// A `gst-launch-1.0 rtspsrc` run.
#[derive(Debug)]
pub struct GstRun {
    /// The pipeline reached end of stream. gst-launch sometimes exits 1 after
    /// EOS (a TEARDOWN race), so this, not the exit code, is the verdict.
    pub got_eos: bool,
    pub output: Output,
}

/// Plays `url` with `rtspsrc protocols=PROTOCOLS` (`"tcp"`, `"udp"`,
/// `"udp+tcp"`), decoding the first stream. An on-demand title ends by
/// itself; for a live one give `eos_after`: EOS after that many decoded frames.
pub fn gst_play(url: &str, protocols: &str, eos_after: Option<u32>) -> GstRun {
    require_peers();
    let mut cmd = Command::new("gst-launch-1.0");
    cmd.args([
        "rtspsrc",
        &format!("location={url}"),
        &format!("protocols={protocols}"),
    ])
    .args(["!", "decodebin", "!"]);
    if let Some(n) = eos_after {
        cmd.args(["identity", &format!("eos-after={n}"), "!"]);
    }
    cmd.arg("fakesink");
    let output = run_bounded(&mut cmd, PLAYER_LIMIT);
    GstRun {
        got_eos: output.stdout.contains("Got EOS"),
        output,
    }
}
