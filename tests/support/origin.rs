//! The test origin: GStreamer's RTSP server (`tests/peers/origin.py`), and
//! its event log (sessions, requests) as the tests read it.

use std::collections::HashMap;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::net::loopback_url;
use super::peers::require_peers;
use super::processes::{kill_group, Lines};
use super::{repo_root, START_LIMIT};

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
    /// `Cache-Control` on successful DESCRIBE answers (`--cache-control`).
    pub cache_control: Option<String>,
    /// `Last-Modified` on successful DESCRIBE answers (`--last-modified`).
    pub last_modified: Option<String>,
    /// The media also at `/vod/NAME` for each name (`--titles`): distinct
    /// titles (cache keys) of one file.
    pub titles: Vec<String>,
    /// The media's video codec, `"h264"` (the default) or `"h265"`
    /// (`--video-codec`): which parser and RTP payloader serve it.
    pub video_codec: Option<String>,
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

    pub fn cache_control(mut self, value: &str) -> Self {
        self.cache_control = Some(value.into());
        self
    }

    /// Serve the media also at `/vod/NAME` for each of `names`.
    pub fn titles(mut self, names: &[&str]) -> Self {
        self.titles = names.iter().map(|n| n.to_string()).collect();
        self
    }

    /// The media's video codec: `"h264"` (the default) or `"h265"`.
    pub fn video_codec(mut self, codec: &str) -> Self {
        self.video_codec = Some(codec.into());
        self
    }

    /// An HTTP date, e.g. `Tue, 06 Feb 2024 10:00:00 GMT`.
    pub fn last_modified(mut self, http_date: &str) -> Self {
        self.last_modified = Some(http_date.into());
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
        if let Some(value) = &opts.cache_control {
            cmd.args(["--cache-control", value]);
        }
        if let Some(value) = &opts.last_modified {
            cmd.args(["--last-modified", value]);
        }
        if let Some(codec) = &opts.video_codec {
            cmd.args(["--video-codec", codec]);
        }
        if !opts.titles.is_empty() {
            cmd.args(["--titles", &opts.titles.join(",")]);
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

    /// How many DESCRIBE and PLAY requests it has had so far, for
    /// [`Origin::assert_untouched_since`].
    pub fn describes_and_plays(&self) -> (usize, usize) {
        (self.requests("DESCRIBE").len(), self.requests("PLAY").len())
    }

    /// No DESCRIBE nor PLAY came since `before` was taken (every request
    /// shown otherwise).
    pub fn assert_untouched_since(&self, before: (usize, usize)) {
        assert_eq!(
            self.describes_and_plays(),
            before,
            "(DESCRIBEs, PLAYs): {:#?}",
            self.requests("")
        );
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
