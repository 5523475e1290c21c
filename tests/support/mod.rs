//! Shared harness for the end-to-end tests: real peers on loopback.
//!
//! Every `tests/*.rs` file includes this with `mod support;`. It starts the
//! real processes — the GStreamer RTSP origin (`tests/peers/origin.py`), the
//! `streamcache` daemon, ffmpeg/ffprobe and gst-launch players — each in its
//! own process group, bounded in time, killed (the whole group) on drop.
//!
//! Tests in one file run in parallel threads on a 2-core machine, so nothing
//! here is global: every test starts its own origin (on a port the OS picks)
//! and its own proxy.

// Each test file uses its own subset of the harness.
#![allow(dead_code)]

use std::collections::HashMap;
use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
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

// ---------------------------------------------------------------------------
// Peers present?

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

// ---------------------------------------------------------------------------
// Ports, directories, media

/// `rtsp://127.0.0.1:PORT/PATH` (`path` without its leading slash is fine).
pub fn loopback_url(port: u16, path: &str) -> String {
    format!("rtsp://127.0.0.1:{port}/{}", path.trim_start_matches('/'))
}

/// A TCP port on 127.0.0.1 that was free a moment ago, for the proxy's RTSP
/// listener. Chosen below Linux's ephemeral range (32768+) so that no
/// outgoing connection of a parallel test can be holding it, and never the
/// same twice in one test binary. (The origin needs none: it binds port 0.)
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const FIRST: u32 = 20_000;
    const SPAN: u32 = 12_000;
    // Spread test binaries apart, should two ever run at once.
    let offset = std::process::id().wrapping_mul(7919) % SPAN;
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (FIRST + (offset + n) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free TCP port in {FIRST}..{}", FIRST + SPAN);
}

/// Two bound UDP sockets on consecutive ports, the first even (RTP, then
/// RTCP), for a raw client's `client_port=` in a UDP SETUP. Bound, not just
/// probed, so nothing can take them in between.
pub fn udp_port_pair() -> (UdpSocket, UdpSocket) {
    for _ in 0..100 {
        let rtp = UdpSocket::bind("127.0.0.1:0").expect("bind UDP");
        let port = rtp.local_addr().unwrap().port();
        if !port.is_multiple_of(2) || port == u16::MAX {
            continue;
        }
        if let Ok(rtcp) = UdpSocket::bind(("127.0.0.1", port + 1)) {
            for s in [&rtp, &rtcp] {
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            }
            return (rtp, rtcp);
        }
    }
    panic!("no free even/odd UDP port pair on 127.0.0.1");
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
    static MAKING: Mutex<()> = Mutex::new(());
    let _one_at_a_time = MAKING.lock().unwrap_or_else(|e| e.into_inner());
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("test-media");
    let path = dir.join(format!("testsrc2-{secs}s.mkv"));
    if !path.exists() {
        // The script writes a temporary file and renames it: a file under
        // the final name is always complete, even across test binaries.
        let out = run_bounded(
            Command::new(repo_root().join("scripts/make-test-media"))
                .arg(&path)
                .arg(secs.to_string()),
            PLAYER_LIMIT,
        );
        assert!(out.success(), "make-test-media failed: {out:?}");
    }
    path
}

// ---------------------------------------------------------------------------
// Processes

/// Lines a child process wrote, collected by reader threads as they come.
#[derive(Clone, Default)]
pub struct Lines(Arc<(Mutex<Vec<String>>, Condvar)>);

impl Lines {
    fn collect(&self, stream: impl Read + Send + 'static, prefix: &'static str) {
        let lines = self.clone();
        thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                let (buf, cond) = &*lines.0;
                buf.lock().unwrap().push(format!("{prefix}{line}"));
                cond.notify_all();
            }
        });
    }

    /// Everything so far.
    pub fn snapshot(&self) -> Vec<String> {
        self.0 .0.lock().unwrap().clone()
    }

    /// Waits until `done` holds for the lines so far, or `limit` passes;
    /// returns whether it held.
    pub fn wait_until(&self, limit: Duration, mut done: impl FnMut(&[String]) -> bool) -> bool {
        let deadline = Instant::now() + limit;
        let (buf, cond) = &*self.0;
        let mut lines = buf.lock().unwrap();
        loop {
            if done(&lines) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            lines = cond.wait_timeout(lines, left).unwrap().0;
        }
    }
}

impl fmt::Debug for Lines {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for line in self.snapshot() {
            writeln!(f, "    {line}")?;
        }
        Ok(())
    }
}

/// Sends `signal` (`"KILL"`, `"TERM"`) to a process, or with a `-` before
/// the id to a process group. The tests have no libc/nix-signal dependency:
/// the shell's builtin kill (dash, always there) does it.
fn send_signal(signal: &str, target: &str) {
    let _ = Command::new("sh")
        .args(["-c", &format!("kill -s {signal} -- {target}")])
        .stderr(Stdio::null())
        .status();
}

/// SIGKILL to a whole process group (the child was started as its leader),
/// then reap the child.
fn kill_group(child: &mut Child) {
    send_signal("KILL", &format!("-{}", child.id()));
    let _ = child.kill();
    let _ = child.wait();
}

/// A finished, time-limited run of a command.
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// Whether `timeout` had to stop it (TERM: 124, then KILL: 137).
    pub fn timed_out(&self) -> bool {
        matches!(self.status.code(), Some(124 | 137)) || self.status.signal().is_some()
    }
}

impl fmt::Debug for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The tail is where the error is; keep failure messages readable.
        let tail = |s: &str| {
            let lines: Vec<&str> = s.lines().collect();
            lines[lines.len().saturating_sub(30)..].join("\n    ")
        };
        write!(
            f,
            "exit {:?}\n  stdout:\n    {}\n  stderr:\n    {}",
            self.status,
            tail(&self.stdout),
            tail(&self.stderr)
        )
    }
}

/// Runs `cmd` under `timeout -k 3 LIMIT` in its own process group (players
/// can ignore SIGTERM while stuck in an RTSP read), collects its output, and
/// kills whatever is left of the group.
pub fn run_bounded(cmd: &mut Command, limit: Duration) -> Output {
    let mut wrapped = Command::new("timeout");
    wrapped
        .args(["-k", "3", &format!("{}", limit.as_secs().max(1))])
        .arg(cmd.get_program())
        .args(cmd.get_args())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    for (key, value) in cmd.get_envs() {
        match value {
            Some(value) => wrapped.env(key, value),
            None => wrapped.env_remove(key),
        };
    }
    if let Some(dir) = cmd.get_current_dir() {
        wrapped.current_dir(dir);
    }
    let mut child = wrapped
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {:?}: {e}", cmd.get_program()));
    // Read both pipes at once so neither can fill up and block the child.
    let mut stderr = child.stderr.take().unwrap();
    let err_reader = thread::spawn(move || {
        let mut s = Vec::new();
        let _ = stderr.read_to_end(&mut s);
        s
    });
    let mut stdout = Vec::new();
    let _ = child.stdout.take().unwrap().read_to_end(&mut stdout);
    let status = child.wait().expect("wait for player");
    kill_group(&mut child);
    Output {
        status,
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&err_reader.join().unwrap()).into_owned(),
    }
}

// ---------------------------------------------------------------------------
// The origin

/// Origin credentials and the scheme the origin demands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthScheme {
    Basic,
    Digest,
}

/// How to start the test origin.
#[derive(Clone, Debug, Default)]
pub struct OriginOpts {
    /// The title served at `/vod` (see [`test_media`]); no `/vod` without it.
    pub media: Option<PathBuf>,
    /// Protect everything with these credentials.
    pub auth: Option<(AuthScheme, String, String)>,
    /// Accept UDP SETUPs but send their media where nobody reads it
    /// (`--udp-blackhole`): UDP toward the client stays silent.
    pub udp_blackhole: bool,
}

impl OriginOpts {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn media(mut self, path: impl Into<PathBuf>) -> Self {
        self.media = Some(path.into());
        self
    }

    pub fn auth(mut self, scheme: AuthScheme, user: &str, password: &str) -> Self {
        self.auth = Some((scheme, user.into(), password.into()));
        self
    }

    pub fn udp_blackhole(mut self) -> Self {
        self.udp_blackhole = true;
        self
    }
}

/// One request as the origin logged it (`ORIGIN request ...`).
#[derive(Clone, Debug)]
pub struct OriginRequest {
    pub method: String,
    pub uri: String,
    /// The `Range` header, e.g. `npt=10.000-`.
    pub range: Option<String>,
    /// The `Transport` header of a SETUP.
    pub transport: Option<String>,
    /// The scheme of the `Authorization` header (`Basic`/`Digest`).
    pub auth: Option<String>,
    pub session: Option<String>,
    /// Which TCP connection (1, 2, ... in accept order) sent it.
    pub client: u32,
}

/// A running `tests/peers/origin.py`, killed with its process group on drop.
pub struct Origin {
    child: Child,
    port: u16,
    lines: Lines,
    /// Held open: the origin exits by itself if we vanish (`--watch-stdin`).
    _stdin: ChildStdin,
}

impl Origin {
    /// Starts an origin on a port the OS picks and waits until it listens.
    pub fn start(opts: OriginOpts) -> Origin {
        require_peers();
        let mut cmd = Command::new("/usr/bin/python3");
        cmd.arg(repo_root().join("tests/peers/origin.py"))
            .args(["--port", "0", "--watch-stdin"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        if let Some(media) = &opts.media {
            cmd.arg("--media").arg(media);
        }
        if let Some((scheme, user, password)) = &opts.auth {
            let scheme = match scheme {
                AuthScheme::Basic => "basic",
                AuthScheme::Digest => "digest",
            };
            cmd.args(["--user", user, "--password", password, "--auth", scheme]);
        }
        if opts.udp_blackhole {
            cmd.arg("--udp-blackhole");
        }
        let mut child = cmd.spawn().expect("spawn tests/peers/origin.py");
        let lines = Lines::default();
        lines.collect(child.stdout.take().unwrap(), "");
        lines.collect(child.stderr.take().unwrap(), "stderr: ");
        let stdin = child.stdin.take().unwrap();

        // Wait for READY in short slices, so an origin that dies at start-up
        // (bad arguments, missing plugin) fails the test at once.
        let deadline = Instant::now() + START_LIMIT;
        let mut port = None;
        let mut exited = None;
        while port.is_none() && exited.is_none() && Instant::now() < deadline {
            lines.wait_until(Duration::from_millis(200), |lines| {
                port = lines
                    .iter()
                    .find_map(|l| l.strip_prefix("READY port=")?.parse().ok());
                port.is_some()
            });
            exited = child.try_wait().ok().flatten();
        }
        let Some(port) = port else {
            kill_group(&mut child);
            thread::sleep(Duration::from_millis(100)); // let the readers drain
            panic!("origin did not get ready (exit {exited:?}):\n{lines:?}");
        };
        Origin {
            child,
            port,
            lines,
            _stdin: stdin,
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `rtsp://127.0.0.1:PORT/PATH` (`path` without its leading slash is fine).
    pub fn url(&self, path: &str) -> String {
        loopback_url(self.port, path)
    }

    /// [`Origin::url`] with credentials in it, percent-encoded.
    pub fn url_with_credentials(&self, path: &str, user: &str, password: &str) -> String {
        format!(
            "rtsp://{}:{}@127.0.0.1:{}/{}",
            percent_encode(user),
            percent_encode(password),
            self.port,
            path.trim_start_matches('/')
        )
    }

    /// Every line the origin wrote so far (stderr lines start `stderr: `).
    pub fn lines(&self) -> Vec<String> {
        self.lines.snapshot()
    }

    /// How many log lines so far start with `prefix`, e.g.
    /// `origin.count("ORIGIN new-session")`.
    pub fn count(&self, prefix: &str) -> usize {
        self.lines()
            .iter()
            .filter(|l| l.starts_with(prefix))
            .count()
    }

    /// Waits until at least `n` lines start with `prefix` (events are logged
    /// asynchronously, e.g. `client-closed` after the player is gone);
    /// returns the count reached.
    pub fn wait_count(&self, prefix: &str, n: usize, limit: Duration) -> usize {
        let mut count = 0;
        self.lines.wait_until(limit, |lines| {
            count = lines.iter().filter(|l| l.starts_with(prefix)).count();
            count >= n
        });
        count
    }

    /// Kills the origin (its whole process group) at once, as a crash would;
    /// its log stays readable.
    pub fn kill(&mut self) {
        kill_group(&mut self.child);
    }

    /// Origin sessions created so far.
    pub fn sessions(&self) -> usize {
        self.count("ORIGIN new-session")
    }

    /// The requests with this method (`"PLAY"`, ...; `""` for all), in order.
    pub fn requests(&self, method: &str) -> Vec<OriginRequest> {
        self.lines()
            .iter()
            .filter_map(|l| parse_request_line(l))
            .filter(|r| method.is_empty() || r.method == method)
            .collect()
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        kill_group(&mut self.child);
        if thread::panicking() {
            eprintln!("--- origin log (port {}):\n{:?}", self.port, self.lines);
        }
    }
}

fn parse_request_line(line: &str) -> Option<OriginRequest> {
    let fields: HashMap<&str, &str> = line
        .strip_prefix("ORIGIN request ")?
        .split(' ')
        .filter_map(|kv| kv.split_once('='))
        .collect();
    // origin.py writes `-` for an absent header and %20 for a space.
    let opt = |key: &str| {
        fields
            .get(key)
            .filter(|v| **v != "-")
            .map(|v| v.replace("%20", " "))
    };
    Some(OriginRequest {
        method: opt("method")?,
        uri: opt("uri").unwrap_or_default(),
        range: opt("range"),
        transport: opt("transport"),
        auth: opt("auth"),
        session: opt("session"),
        client: fields.get("client")?.parse().ok()?,
    })
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

// ---------------------------------------------------------------------------
// The daemon

/// A proxy mount, rendered by [`Proxy::config`] as a `[[mount]]` table.
#[derive(Clone, Debug)]
pub struct Mount {
    pub path: String,
    pub origin: String,
    /// `"auto"`, `"udp"` or `"tcp"`: the transport toward the origin.
    pub transport: String,
    pub credentials: Option<(String, String)>,
}

impl Mount {
    pub fn new(path: &str, origin: &str) -> Mount {
        Mount {
            path: path.into(),
            origin: origin.into(),
            transport: "auto".into(),
            credentials: None,
        }
    }

    pub fn transport(mut self, transport: &str) -> Mount {
        self.transport = transport.into();
        self
    }

    pub fn credentials(mut self, user: &str, password: &str) -> Mount {
        self.credentials = Some((user.into(), password.into()));
        self
    }
}

/// The real `streamcache serve` daemon, killed with its process group on drop.
pub struct Proxy {
    child: Child,
    port: u16,
    /// The admin HTTP port, when the config has `[admin] listen`.
    admin_port: Option<u16>,
    config_path: PathBuf,
    lines: Lines,
    /// Holds the config file.
    _dir: tempfile::TempDir,
}

impl Proxy {
    /// A complete config in the format of `etc/streamcache.toml`, with
    /// test-friendly timings. Each key is on its own `key = value` line, so a
    /// test can adjust one with `str::replace`, e.g.
    /// `.replace("linger_secs = 2", "linger_secs = 0")`.
    pub fn config(rtsp_port: u16, cache_dir: &Path, mounts: &[Mount]) -> String {
        let q = |s: &str| toml::Value::String(s.into()).to_string();
        let mut cfg = format!(
            "[rtsp]\n\
             listen = {listen}\n\
             session_timeout_secs = 60\n\
             max_request_bytes = \"64KiB\"\n\
             max_headers = 64\n\
             player_queue_packets = 2048\n\
             \n\
             [cache]\n\
             dir = {dir}\n\
             disk_budget = \"1GiB\"\n\
             segment_size = \"64MiB\"\n\
             segment_secs = 60\n\
             \n\
             [origin]\n\
             connect_timeout_secs = 5\n\
             udp_fallback_secs = 3\n\
             linger_secs = 2\n\
             reconnect_attempts = 3\n\
             \n\
             [admin]\n\
             listen = {admin}\n",
            listen = q(&format!("127.0.0.1:{rtsp_port}")),
            // Tests run in parallel: never the default admin port.
            admin = q(&format!("127.0.0.1:{}", free_port())),
            dir = q(cache_dir.to_str().expect("cache dir path is UTF-8")),
        );
        for m in mounts {
            cfg += &format!(
                "\n[[mount]]\npath = {}\norigin = {}\ntransport = {}\n",
                q(&m.path),
                q(&m.origin),
                q(&m.transport)
            );
            if let Some((user, password)) = &m.credentials {
                cfg += &format!("username = {}\npassword = {}\n", q(user), q(password));
            }
        }
        cfg
    }

    /// Writes `config_toml` to a file, runs `streamcache serve --config FILE`
    /// and waits until the `[rtsp] listen` port accepts connections.
    pub fn start(config_toml: &str) -> Proxy {
        let table: toml::Table = config_toml.parse().expect("test config is TOML");
        let listen: SocketAddr = table["rtsp"]["listen"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .expect("config has [rtsp] listen = \"IP:PORT\"");
        let admin_port = table
            .get("admin")
            .and_then(|a| a.get("listen"))
            .and_then(|l| l.as_str())
            .and_then(|s| s.parse::<SocketAddr>().ok())
            .map(|a| a.port());
        let dir = temp_dir();
        let config = dir.path().join("streamcache.toml");
        std::fs::write(&config, config_toml).unwrap();

        let mut child = Command::new(env!("CARGO_BIN_EXE_streamcache"))
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            // Plain text for assertions (tracing-subscriber colours even a pipe).
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("spawn streamcache");
        let lines = Lines::default();
        lines.collect(child.stdout.take().unwrap(), "");
        lines.collect(child.stderr.take().unwrap(), "");

        // Ready once it logs so (not by connecting: a probe connection would
        // hold one of the connections tests count against max_connections).
        let deadline = Instant::now() + START_LIMIT;
        loop {
            if lines
                .snapshot()
                .iter()
                .any(|l| l.contains("RTSP server listening"))
            {
                break;
            }
            let exited = child.try_wait().ok().flatten();
            if exited.is_some() || Instant::now() > deadline {
                kill_group(&mut child);
                thread::sleep(Duration::from_millis(100)); // let the readers drain
                panic!(
                    "streamcache did not listen on {listen} (exit {exited:?}):\n{lines:?}\n  config:\n{config_toml}"
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
        Proxy {
            child,
            port: listen.port(),
            admin_port,
            config_path: config,
            lines,
            _dir: dir,
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The admin HTTP port, if the config enabled the admin API.
    pub fn admin_port(&self) -> Option<u16> {
        self.admin_port
    }

    /// The configuration file the daemon was started with (a test may rewrite
    /// it and ask for a reload).
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// `rtsp://127.0.0.1:PORT/PATH` on the proxy.
    pub fn url(&self, path: &str) -> String {
        loopback_url(self.port, path)
    }

    /// Everything the daemon wrote so far, stdout and stderr.
    pub fn logs(&self) -> String {
        self.lines.snapshot().join("\n")
    }

    /// Waits until a log line contains `needle`; returns whether one did.
    pub fn wait_log(&self, needle: &str, limit: Duration) -> bool {
        self.lines
            .wait_until(limit, |lines| lines.iter().any(|l| l.contains(needle)))
    }

    /// Waits until at least `n` log lines contain `needle`; returns whether
    /// they did.
    pub fn wait_log_count(&self, needle: &str, n: usize, limit: Duration) -> bool {
        self.lines.wait_until(limit, |lines| {
            lines.iter().filter(|l| l.contains(needle)).count() >= n
        })
    }

    /// SIGTERM, then wait up to `limit` for a clean exit; SIGKILL after that.
    /// Returns the exit status if it exited by itself.
    pub fn stop(mut self, limit: Duration) -> Option<ExitStatus> {
        send_signal("TERM", &self.child.id().to_string());
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            thread::sleep(Duration::from_millis(50));
        }
        None // Drop kills it.
    }

    /// Waits until the store holds the whole title at `url`: a DESCRIBE with
    /// `Cache-Control: only-if-cached` is answered 200 rather than 504
    /// (any other answer panics), asked every 100 ms; panics after `limit`.
    pub fn wait_cached(&self, url: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let mut conn = RtspConn::connect(self.port());
            let resp = conn.request("DESCRIBE", url, &[("Cache-Control", "only-if-cached")]);
            if resp.status() == 200 {
                return;
            }
            assert_eq!(resp.status(), 504, "{resp:?}");
            assert!(
                Instant::now() < deadline,
                "{url} never became a complete cache entry\n{}",
                self.logs()
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGHUP: the daemon reloads its configuration file.
    pub fn hangup(&self) {
        send_signal("HUP", &self.child.id().to_string());
    }

    /// `kill -9` the daemon at once (crash-recovery tests).
    pub fn kill9(mut self) {
        kill_group(&mut self.child);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        kill_group(&mut self.child);
        if thread::panicking() {
            eprintln!(
                "--- streamcache log (port {}):\n{:?}",
                self.port, self.lines
            );
        }
    }
}

/// Runs the daemon binary with `args` to completion (e.g. `check-config`).
pub fn run_streamcache(args: &[&str]) -> Output {
    run_bounded(
        Command::new(env!("CARGO_BIN_EXE_streamcache")).args(args),
        PLAYER_LIMIT,
    )
}

// ---------------------------------------------------------------------------
// Players

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

// ---------------------------------------------------------------------------
// A raw RTSP client, for scripted and malformed requests

/// An RTSP response (or a request the server sent us).
#[derive(Clone, Debug)]
pub struct RtspMessage {
    /// `RTSP/1.0 200 OK`, or a request line.
    pub start_line: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RtspMessage {
    /// The status code of a response (0 for a request).
    pub fn status(&self) -> u16 {
        let mut parts = self.start_line.split(' ');
        match (parts.next(), parts.next()) {
            (Some(v), Some(code)) if v.starts_with("RTSP/") => code.parse().unwrap_or(0),
            _ => 0,
        }
    }

    /// The first header of that name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The session id from `Session:`, without `;timeout=`.
    pub fn session(&self) -> Option<&str> {
        Some(self.header("Session")?.split(';').next()?.trim())
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The absolute control URL of each media section of an SDP body,
    /// resolved against `Content-Base` (or `request_url`).
    pub fn sdp_track_urls(&self, request_url: &str) -> Vec<String> {
        let base = self
            .header("Content-Base")
            .or(self.header("Content-Location"))
            .unwrap_or(request_url);
        let mut urls = Vec::new();
        let mut in_media = false;
        for line in self.body_text().lines() {
            let line = line.trim();
            if line.starts_with("m=") {
                in_media = true;
            } else if let (true, Some(control)) = (in_media, line.strip_prefix("a=control:")) {
                urls.push(if control.contains("://") {
                    control.to_string()
                } else if base.ends_with('/') {
                    format!("{base}{control}")
                } else {
                    format!("{base}/{control}")
                });
            }
        }
        urls
    }
}

/// What arrived next on an RTSP connection.
#[derive(Debug)]
pub enum Received {
    Message(RtspMessage),
    /// `$`-framed RTP/RTCP on an interleaved channel.
    Interleaved {
        channel: u8,
        data: Vec<u8>,
    },
}

/// A blocking RTSP connection. Reads time out after 10 s (`io::Error`).
pub struct RtspConn {
    stream: TcpStream,
    buf: Vec<u8>,
    cseq: u32,
}

/// Largest message head we accept before calling the peer broken.
const MAX_HEAD: usize = 256 * 1024;

impl RtspConn {
    pub fn connect(port: u16) -> RtspConn {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("connect to 127.0.0.1:{port}: {e}"));
        RtspConn::over(stream)
    }

    /// A client on a connected stream (10 s read timeout, no Nagle).
    fn over(stream: TcpStream) -> RtspConn {
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream.set_nodelay(true).unwrap();
        RtspConn {
            stream,
            buf: Vec::new(),
            cseq: 0,
        }
    }

    /// As [`RtspConn::connect`], from another loopback address (e.g.
    /// `127.0.0.2`), so that the daemon sees another player IP.
    pub fn connect_from(port: u16, source: std::net::Ipv4Addr) -> RtspConn {
        use nix::sys::socket::{
            bind, connect, socket, AddressFamily, SockFlag, SockType, SockaddrIn,
        };
        use std::os::fd::AsRawFd;
        let fd = socket(
            AddressFamily::Inet,
            SockType::Stream,
            SockFlag::empty(),
            None,
        )
        .expect("socket");
        bind(
            fd.as_raw_fd(),
            &SockaddrIn::from(std::net::SocketAddrV4::new(source, 0)),
        )
        .unwrap_or_else(|e| panic!("bind {source}: {e}"));
        let server = SockaddrIn::from(std::net::SocketAddrV4::new(
            std::net::Ipv4Addr::LOCALHOST,
            port,
        ));
        connect(fd.as_raw_fd(), &server)
            .unwrap_or_else(|e| panic!("connect from {source} to port {port}: {e}"));
        RtspConn::over(TcpStream::from(fd))
    }

    pub fn set_read_timeout(&self, limit: Duration) {
        self.stream.set_read_timeout(Some(limit)).unwrap();
    }

    /// Sends bytes as they are (malformed requests, pipelining, ...).
    pub fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Sends a well-formed request with the next CSeq and the given extra
    /// headers, and returns its response, skipping interleaved packets.
    pub fn request(&mut self, method: &str, url: &str, headers: &[(&str, &str)]) -> RtspMessage {
        self.cseq += 1;
        let mut req = format!("{method} {url} RTSP/1.0\r\nCSeq: {}\r\n", self.cseq);
        for (name, value) in headers {
            req += &format!("{name}: {value}\r\n");
        }
        req += "User-Agent: streamcache-tests\r\n\r\n";
        self.send_raw(req.as_bytes())
            .unwrap_or_else(|e| panic!("send {method} {url}: {e}"));
        let resp = self
            .read_response()
            .unwrap_or_else(|e| panic!("response to {method} {url}: {e}"));
        assert_eq!(
            resp.header("CSeq").map(str::trim),
            Some(self.cseq.to_string().as_str()),
            "response to {method} {url} has the wrong CSeq: {resp:?}"
        );
        resp
    }

    /// DESCRIBE `url` (panics unless 200), then SETUP of its first track
    /// over TCP, interleaved on channels 0-1, as a new session: both
    /// answers, the SETUP's status left to the caller (it may be refused).
    pub fn describe_and_setup_first(&mut self, url: &str) -> (RtspMessage, RtspMessage) {
        let describe = self.request("DESCRIBE", url, &[]);
        assert_eq!(describe.status(), 200, "DESCRIBE {url}: {describe:?}");
        let track = describe.sdp_track_urls(url)[0].clone();
        let setup = self.request(
            "SETUP",
            &track,
            &[("Transport", "RTP/AVP/TCP;unicast;interleaved=0-1")],
        );
        (describe, setup)
    }

    /// DESCRIBE `url`, SETUP every track (RTP/AVP/TCP interleaved on
    /// channels 2i, 2i+1, or UDP to `udp[i]`'s ports when `udp` is given),
    /// then PLAY: returns the session id and the PLAY response. Panics on
    /// any answer but 200.
    pub fn play(
        &mut self,
        url: &str,
        udp: Option<&[(UdpSocket, UdpSocket)]>,
    ) -> (String, RtspMessage) {
        let describe = self.request("DESCRIBE", url, &[("Accept", "application/sdp")]);
        assert_eq!(describe.status(), 200, "DESCRIBE {url}: {describe:?}");
        let tracks = describe.sdp_track_urls(url);
        assert!(!tracks.is_empty(), "no tracks: {}", describe.body_text());
        let mut session = String::new();
        for (i, track) in tracks.iter().enumerate() {
            let transport = match udp {
                Some(pairs) => {
                    let Some((rtp, rtcp)) = pairs.get(i) else {
                        break;
                    };
                    format!(
                        "RTP/AVP;unicast;client_port={}-{}",
                        rtp.local_addr().unwrap().port(),
                        rtcp.local_addr().unwrap().port()
                    )
                }
                None => format!("RTP/AVP/TCP;unicast;interleaved={}-{}", 2 * i, 2 * i + 1),
            };
            let mut headers = vec![("Transport", transport.as_str())];
            if !session.is_empty() {
                headers.push(("Session", &session));
            }
            let setup = self.request("SETUP", track, &headers);
            assert_eq!(setup.status(), 200, "SETUP {track}: {setup:?}");
            session = setup.session().expect("SETUP gives a session").to_string();
        }
        let play = self.request("PLAY", url, &[("Session", &session)]);
        assert_eq!(play.status(), 200, "PLAY {url}: {play:?}");
        (session, play)
    }

    /// The next response, skipping interleaved packets and server requests.
    pub fn read_response(&mut self) -> io::Result<RtspMessage> {
        loop {
            if let Received::Message(m) = self.read()? {
                if m.status() != 0 {
                    return Ok(m);
                }
            }
        }
    }

    /// The next interleaved packet, skipping RTSP messages.
    pub fn read_interleaved(&mut self) -> io::Result<(u8, Vec<u8>)> {
        loop {
            if let Received::Interleaved { channel, data } = self.read()? {
                return Ok((channel, data));
            }
        }
    }

    /// Whether the server closes the connection within `limit` (data that
    /// arrives meanwhile is read and dropped).
    pub fn closed_within(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        let mut chunk = [0u8; 4096];
        let closed = loop {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                break false;
            };
            self.set_read_timeout(left.max(Duration::from_millis(1)));
            match self.stream.read(&mut chunk) {
                Ok(0) => break true,
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    break false
                }
                Err(_) => break true, // reset
            }
        };
        self.set_read_timeout(Duration::from_secs(10));
        closed
    }

    /// The next thing on the wire: an RTSP message or an interleaved packet.
    /// `UnexpectedEof` when the server closed the connection.
    pub fn read(&mut self) -> io::Result<Received> {
        loop {
            if let Some(received) = self.parse_buffered()? {
                return Ok(received);
            }
            let mut chunk = [0u8; 16 * 1024];
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "server closed the connection ({} bytes unparsed)",
                        self.buf.len()
                    ),
                ));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    fn parse_buffered(&mut self) -> io::Result<Option<Received>> {
        if self.buf.first() == Some(&b'$') {
            if self.buf.len() < 4 {
                return Ok(None);
            }
            let len = u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize;
            if self.buf.len() < 4 + len {
                return Ok(None);
            }
            let channel = self.buf[1];
            let data = self.buf[4..4 + len].to_vec();
            self.buf.drain(..4 + len);
            return Ok(Some(Received::Interleaved { channel, data }));
        }
        let Some(head_len) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            if self.buf.len() > MAX_HEAD {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "RTSP head too long",
                ));
            }
            return Ok(None);
        };
        let head = String::from_utf8_lossy(&self.buf[..head_len]).into_owned();
        let mut lines = head.split("\r\n");
        let start_line = lines.next().unwrap_or_default().to_string();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
            .collect();
        let body_len = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("Content-Length"))
            .and_then(|(_, v)| v.parse::<usize>().ok())
            .unwrap_or(0);
        let total = head_len + 4 + body_len;
        if self.buf.len() < total {
            return Ok(None);
        }
        let body = self.buf[head_len + 4..total].to_vec();
        self.buf.drain(..total);
        Ok(Some(Received::Message(RtspMessage {
            start_line,
            headers,
            body,
        })))
    }
}

/// The fixed part of an RTP packet (RFC 3550) and its payload.
#[derive(Clone, Debug)]
pub struct Rtp<'a> {
    pub payload_type: u8,
    pub marker: bool,
    pub sequence: u16,
    pub timestamp: u32,
    pub ssrc: u32,
    pub payload: &'a [u8],
}

impl<'a> Rtp<'a> {
    /// `None` for anything that is not RTP version 2 (RTCP included).
    pub fn parse(p: &'a [u8]) -> Option<Rtp<'a>> {
        if p.len() < 12 || p[0] >> 6 != 2 || (200..=204).contains(&p[1]) {
            return None;
        }
        let csrcs = (p[0] & 0x0f) as usize;
        let mut start = 12 + 4 * csrcs;
        if p[0] & 0x10 != 0 {
            // header extension: 4 bytes + length in 32-bit words
            let ext = p.get(start + 2..start + 4)?;
            start += 4 + 4 * u16::from_be_bytes([ext[0], ext[1]]) as usize;
        }
        let mut end = p.len();
        if p[0] & 0x20 != 0 {
            end = end.checked_sub(*p.last()? as usize)?; // padding
        }
        Some(Rtp {
            payload_type: p[1] & 0x7f,
            marker: p[1] & 0x80 != 0,
            sequence: u16::from_be_bytes([p[2], p[3]]),
            timestamp: u32::from_be_bytes([p[4], p[5], p[6], p[7]]),
            ssrc: u32::from_be_bytes([p[8], p[9], p[10], p[11]]),
            payload: p.get(start..end)?,
        })
    }

    /// The H.264 NAL unit type this packet starts (RFC 6184): the first
    /// aggregated unit of a STAP-A, the fragmented unit of a starting FU-A;
    /// `None` for a FU-A continuation. 5 = IDR, 7 = SPS, 8 = PPS.
    pub fn h264_nal_type(&self) -> Option<u8> {
        let first = *self.payload.first()? & 0x1f;
        match first {
            24 => Some(*self.payload.get(3)? & 0x1f), // STAP-A: skip the 2-byte size
            28 => {
                let fu = *self.payload.get(1)?;
                (fu & 0x80 != 0).then_some(fu & 0x1f)
            }
            t => Some(t),
        }
    }

    /// Whether this packet starts an IDR access unit or its parameter sets.
    pub fn starts_h264_keyframe(&self) -> bool {
        matches!(self.h264_nal_type(), Some(5 | 7 | 8))
    }
}

impl Proxy {
    /// Waits until a log line contains any of `needles`; returns whether one
    /// did.
    pub fn wait_log_any(&self, needles: &[&str], limit: Duration) -> bool {
        self.lines.wait_until(limit, |lines| {
            lines.iter().any(|l| needles.iter().any(|n| l.contains(n)))
        })
    }
}

// ---------------------------------------------------------------------------
// The admin HTTP API

/// An HTTP response from the admin API, its body de-chunked.
#[derive(Debug)]
pub struct AdminResponse {
    pub status: u16,
    /// (name in lower case, value), in order.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl AdminResponse {
    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON (`Null` when empty); panics if it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        if self.body.is_empty() {
            return serde_json::Value::Null;
        }
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    /// The message of a JSON error answer (`{"error": "..."}`), or "".
    pub fn error(&self) -> String {
        self.json()["error"].as_str().unwrap_or_default().to_owned()
    }
}

/// Status line, headers and body, as a person reading the answer sees them.
impl fmt::Display for AdminResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "HTTP {}", self.status)?;
        for (name, value) in &self.headers {
            writeln!(f, "{name}: {value}")?;
        }
        write!(f, "\n{}", self.body)
    }
}

impl Proxy {
    /// `GET path` on the admin API, without a token (see [`admin_request`]).
    /// Panics if the config has no admin listener.
    pub fn admin_get(&self, path: &str) -> AdminResponse {
        let port = self.admin_port.expect("the proxy's config enables [admin]");
        admin_request(port, "GET", path, &[])
    }
}

/// The `Authorization` header for the admin API's bearer `token`.
pub fn bearer(token: &str) -> (&'static str, String) {
    ("Authorization", format!("Bearer {token}"))
}

/// One HTTP/1.1 request without a body to the admin API on
/// `127.0.0.1:port` (`Connection: close`), with extra `headers` (e.g.
/// [`bearer`]); the whole response read. Panics if it cannot connect or
/// the answer is not HTTP/1.1.
pub fn admin_request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> AdminResponse {
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .unwrap_or_else(|e| panic!("connect to the admin API on {port}: {e}"));
    // A reload may end sessions before it answers.
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n"
    );
    for (name, value) in headers {
        request += &format!("{name}: {value}\r\n");
    }
    request += "\r\n";
    stream.write_all(request.as_bytes()).unwrap();
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .unwrap_or_else(|e| panic!("{method} {path} on the admin API: {e}"));
    let head_len = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP head in {:?}", String::from_utf8_lossy(&raw)));
    let head = String::from_utf8_lossy(&raw[..head_len]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.strip_prefix("HTTP/1.1 "))
        .and_then(|l| l.get(..3))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP/1.1 status line: {head}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let raw_body = &raw[head_len + 4..];
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let body = if chunked {
        dechunk(raw_body)
    } else {
        raw_body.to_vec()
    };
    AdminResponse {
        status,
        headers,
        body: String::from_utf8(body).expect("admin API bodies are UTF-8"),
    }
}

/// The payload of a `Transfer-Encoding: chunked` body.
fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = raw
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("chunk size line");
        let size_text = String::from_utf8_lossy(&raw[..line_end]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .expect("hex chunk size");
        raw = &raw[line_end + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&raw[..size]);
        raw = &raw[size + 2..];
    }
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
