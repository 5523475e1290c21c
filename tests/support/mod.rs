//! Shared harness for the end-to-end tests: real peers on loopback.
//!
//! Every `tests/*.rs` file includes this with `mod support;` and
//! `use support::*;`. It starts the real processes — the GStreamer RTSP
//! origin (`tests/peers/origin.py`), the `streamcache` daemon,
//! ffmpeg/ffprobe and gst-launch players — each in its own process group,
//! bounded in time, killed (the whole group) on drop.
//!
//! Tests in one file run in parallel threads on a 2-core machine, so nothing
//! here is global: every test starts its own origin and its own proxy, both
//! on ports the OS picks (port 0) and read back from the process itself;
//! no port is ever probed free and handed over.
//!
//! - `peers`: are the real peers installed ([`require_peers`]).
//! - `processes`: child processes, their output ([`Lines`], [`run_bounded`]).
//! - `net`: loopback URLs and sockets ([`udp_port_pair`], [`closed_port`]).
//! - `origin`: the GStreamer origin ([`Origin`], [`OriginOpts`]).
//! - `proxy`: the daemon ([`Proxy`], [`Mount`]).
//! - `players`: ffprobe, ffmpeg, gst-launch ([`ffprobe_count_frames`], ...).
//! - `rtsp_client`: a raw RTSP client ([`RtspConn`], [`Rtp`]).
//! - `admin_client`: the admin HTTP API ([`admin_request`]).
//! - `cluster`: a master and its nodes ([`Master`], [`Node`], [`Cluster`]).
//! - `copies`: node-to-node copies ([`copy_cluster`], [`Sampler`], [`rates`]).
//! - here: directories, test media, polling, base64.

// Each test file uses its own subset of the harness, and so of the
// re-exports below.
#![allow(dead_code, unused_imports)]

mod admin_client;
mod cluster;
mod copies;
mod net;
mod origin;
mod peers;
mod players;
mod processes;
mod proxy;
mod rtsp_client;

pub use admin_client::*;
pub use cluster::*;
pub use copies::*;
pub use net::*;
pub use origin::*;
pub use peers::*;
pub use players::*;
pub use processes::*;
pub use proxy::*;
pub use rtsp_client::*;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

/// Upper bound for one player run (a `/vod` title plays in real time).
pub const PLAYER_LIMIT: Duration = Duration::from_secs(60);
/// How long a peer may take to start listening.
const START_LIMIT: Duration = Duration::from_secs(20);

/// The repository root (the daemon package is the workspace root).
pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A fresh temporary directory, removed when dropped.
pub fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("streamcache-test-")
        .tempdir()
        .expect("create temp dir")
}

/// The deterministic test title of `secs` seconds (H.264 + AAC in MKV, see
/// `scripts/make-test-media`), made once per duration and shared by every
/// test under the target directory.
pub fn test_media(secs: u32) -> PathBuf {
    test_media_of(secs, "h264")
}

/// As [`test_media`], with H.265 video (libx265, same size, rate and GOP):
/// serve it with `OriginOpts::video_codec("h265")`.
pub fn test_media_h265(secs: u32) -> PathBuf {
    test_media_of(secs, "h265")
}

/// Frames per second of the test titles ([`test_media`]).
pub const TEST_MEDIA_FPS: usize = 25;

/// Video frame hashes of a direct pull of the `secs` title from an origin
/// of its own (so that a test's origin counts only the proxy's requests);
/// made once per duration and shared by the tests of a binary.
pub fn direct_pull(secs: u32) -> Vec<String> {
    static MADE: Mutex<Vec<(u32, Vec<String>)>> = Mutex::new(Vec::new());
    let mut made = MADE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, video)) = made.iter().find(|(s, _)| *s == secs) {
        return video.clone();
    }
    let origin = Origin::start(OriginOpts::new().media(test_media(secs)));
    let video = framemd5(&origin.url("/vod"), Some("tcp"), "0:v", &[]);
    assert_eq!(video.len(), secs as usize * TEST_MEDIA_FPS, "direct pull");
    made.push((secs, video.clone()));
    video
}

/// `got` and `reference` are the same frames; names the first that differs.
pub fn assert_same_video(name: &str, got: &[String], reference: &[String]) {
    assert!(
        got == reference,
        "{name}: {} frames vs {} direct; first difference at frame {:?}",
        got.len(),
        reference.len(),
        got.iter().zip(reference).position(|(a, b)| a != b)
    );
}

/// Every fill play ("fill 0", "fill 1", ...) got the reference's frames.
pub fn assert_fills_same_video(filled: &[Vec<String>], reference: &[String]) {
    for (i, filled) in filled.iter().enumerate() {
        assert_same_video(&format!("fill {i}"), filled, reference);
    }
}

fn test_media_of(secs: u32, codec: &str) -> PathBuf {
    static MAKING: Mutex<()> = Mutex::new(());
    let _one_at_a_time = MAKING.lock().unwrap_or_else(|e| e.into_inner());
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("test-media");
    let name = match codec {
        "h264" => format!("testsrc2-{secs}s.mkv"),
        _ => format!("testsrc2-{codec}-{secs}s.mkv"),
    };
    let path = dir.join(name);
    if !path.exists() {
        // The script writes a temporary file and renames it: a file under
        // the final name is always complete, even across test binaries.
        let out = run_bounded(
            Command::new(repo_root().join("scripts/make-test-media"))
                .arg(&path)
                .arg(secs.to_string())
                .arg(codec),
            PLAYER_LIMIT,
        );
        assert!(out.success(), "make-test-media failed: {out:?}");
    }
    path
}

/// A heavy title for rate tests: `secs` seconds of noisy 640×360 H.264 at
/// about `mbps` Mbit/s (a keyframe every second, no B-frames) + AAC, in
/// Matroska; made once per (duration, rate) under the target directory.
pub fn noisy_media(secs: u32, mbps: u32) -> PathBuf {
    static MAKING: Mutex<()> = Mutex::new(());
    let _one_at_a_time = MAKING.lock().unwrap_or_else(|e| e.into_inner());
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("test-media");
    let path = dir.join(format!("noise-{secs}s-{mbps}M.mkv"));
    if !path.exists() {
        std::fs::create_dir_all(&dir).unwrap();
        let tmp = dir.join(format!(
            "noise-{secs}s-{mbps}M.{}.tmp.mkv",
            std::process::id()
        ));
        let (rate, d) = (format!("{mbps}M"), secs.to_string());
        let out = run_bounded(
            Command::new("ffmpeg")
                .args(["-nostdin", "-hide_banner", "-loglevel", "error", "-y"])
                .args([
                    "-f",
                    "lavfi",
                    "-i",
                    &format!("testsrc2=size=640x360:rate=25:duration={d}"),
                ])
                .args([
                    "-f",
                    "lavfi",
                    "-i",
                    &format!("sine=frequency=440:sample_rate=48000:duration={d}"),
                ])
                .args(["-map", "0:v", "-map", "1:a", "-vf", "noise=alls=40:allf=t"])
                .args([
                    "-c:v",
                    "libx264",
                    "-preset",
                    "ultrafast",
                    "-profile:v",
                    "main",
                ])
                .args([
                    "-pix_fmt", "yuv420p", "-b:v", &rate, "-maxrate", &rate, "-bufsize", "4M",
                ])
                .args([
                    "-g",
                    "25",
                    "-keyint_min",
                    "25",
                    "-sc_threshold",
                    "0",
                    "-bf",
                    "0",
                ])
                .args(["-threads", "1", "-c:a", "aac", "-b:a", "96k", "-ac", "1"])
                .args(["-f", "matroska"])
                .arg(&tmp),
            PLAYER_LIMIT,
        );
        assert!(
            out.success(),
            "ffmpeg could not make {}: {out:?}",
            path.display()
        );
        std::fs::rename(&tmp, &path).unwrap();
    }
    path
}

/// Polls `probe` every 200 ms until it returns something, for up to `limit`.
pub fn wait_for<T>(limit: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(found) = probe() {
            return Some(found);
        }
        if Instant::now() > deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(200));
    }
}

/// Standard base64 (RFC 4648, padded): `Basic` credentials, and the form a
/// leaked `user:password` would take.
pub fn base64(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            out.push(if i <= chunk.len() {
                ABC[(n >> (18 - 6 * i)) as usize & 63] as char
            } else {
                '='
            });
        }
    }
    out
}
