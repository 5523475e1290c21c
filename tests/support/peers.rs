//! Whether the real peers (ffmpeg, GStreamer, python3-gi) are installed.

use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// Panics, naming the Debian package to install, unless every real peer the
/// tests use is present. Tests must fail, not pass vacuously, without them.
pub fn require_peers() {
    static CHECK: OnceLock<Result<(), String>> = OnceLock::new();
    if let Err(missing) = CHECK.get_or_init(check_peers) {
        panic!(
            "real test peers missing: {missing}\n(run scripts/install-test-deps, or scripts/test)"
        );
    }
}

fn check_peers() -> Result<(), String> {
    let mut missing = Vec::new();
    for (cmd, package) in [
        ("ffmpeg", "ffmpeg"),
        ("ffprobe", "ffmpeg"),
        ("gst-launch-1.0", "gstreamer1.0-tools"),
        ("timeout", "coreutils"),
    ] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {cmd}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            missing.push(format!("command `{cmd}` (Debian package {package})"));
        }
    }
    // One python3-gi run checks the bindings and every GStreamer element the
    // origin and the gst-launch player need; it prints what it lacks.
    let probe = r#"
import sys
try:
    import gi
except ImportError:
    print("python module gi (Debian package python3-gi)"); sys.exit()
try:
    gi.require_version("Gst", "1.0"); gi.require_version("GstRtsp", "1.0")
    gi.require_version("GstRtspServer", "1.0")
    from gi.repository import Gst, GstRtspServer
except (ImportError, ValueError):
    print("GstRtspServer typelib (Debian package gir1.2-gst-rtsp-server-1.0)"); sys.exit()
Gst.init(None)
need = [("videotestsrc", "gstreamer1.0-plugins-base"), ("decodebin", "gstreamer1.0-plugins-base"),
        ("timeoverlay", "gstreamer1.0-x"), ("x264enc", "gstreamer1.0-plugins-ugly"),
        ("rtph264pay", "gstreamer1.0-plugins-good"), ("rtpmp4gpay", "gstreamer1.0-plugins-good"),
        ("matroskademux", "gstreamer1.0-plugins-good"), ("rtspsrc", "gstreamer1.0-plugins-good"),
        ("h264parse", "gstreamer1.0-plugins-bad"), ("avdec_h264", "gstreamer1.0-libav")]
for name, pkg in need:
    if Gst.ElementFactory.find(name) is None:
        print(f"GStreamer element {name} (Debian package {pkg})")
if not (Gst.ElementFactory.find("avenc_aac") or Gst.ElementFactory.find("voaacenc")):
    print("GStreamer AAC encoder avenc_aac (Debian package gstreamer1.0-libav)")
"#;
    match Command::new("/usr/bin/python3")
        .args(["-c", probe])
        .output()
    {
        Ok(out) => missing.extend(
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(String::from),
        ),
        Err(e) => missing.push(format!("/usr/bin/python3 ({e}; Debian package python3)")),
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(missing.join(", "))
    }
}
