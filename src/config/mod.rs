//! The daemon's configuration: a TOML file (`etc/streamcache.toml` is the
//! commented default).
//!
//! Loading is three steps, so that one run finds every problem of a file: the
//! text is parsed as TOML (a syntax error stops there: the parser cannot go
//! on), the document is read key by key against the schema (`read.rs`:
//! unknown keys, wrong types, unknown size units or variants), then
//! [`Config::problems`] checks the values (URLs, mount prefixes, ranges).
//! Every problem is a [`Problem`] naming the key and the line, which is what
//! `streamcache check-config` prints.

mod check;
mod cluster;
mod http;
mod read;
mod secrets;
mod size;
#[cfg(test)]
mod tests;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use check::line_of;
pub use cluster::{ClusterConfig, MasterConfig};
pub use http::HttpConfig;
use secrets::{assigns_a_secret, hide_values, line_at};
pub use size::ByteSize;

/// One thing wrong with a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line in the file, when known.
    pub line: Option<usize>,
    /// Dotted key, e.g. `mount[2].origin`.
    pub key: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "line {line}: {}: {}", self.key, self.message),
            None => write!(f, "{}: {}", self.key, self.message),
        }
    }
}

/// A configuration that did not load: every problem found, with the file name.
#[derive(Debug)]
pub struct ConfigError {
    pub file: PathBuf,
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} is not a valid configuration:", self.file.display())?;
        for p in &self.problems {
            write!(f, "\n  {}: {p}", self.file.display())?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// A configuration; every key left out has its default.
#[derive(Debug, Clone, Default)]
pub struct Config {
    pub rtsp: RtspConfig,
    pub cache: CacheConfig,
    pub origin: OriginConfig,
    pub admin: AdminConfig,
    /// `[http]`: viewers over HTTP (HLS, MP4).
    pub http: HttpConfig,
    pub log: LogConfig,
    /// `[sample_origin]`
    pub sample_origin: SampleOriginConfig,
    /// `[[mount]]`
    pub mounts: Vec<MountConfig>,
    /// `[master]`: this process is the cluster's master.
    pub master: Option<MasterConfig>,
    /// `[cluster]`: this proxy is a node of a cluster.
    pub cluster: Option<ClusterConfig>,
}

#[derive(Debug, Clone)]
pub struct RtspConfig {
    pub listen: Spanned<String>,
    pub session_timeout_secs: u64,
    pub max_request_bytes: ByteSize,
    pub max_headers: usize,
    pub player_queue_packets: usize,
    /// Player sessions in all (503 with Retry-After beyond).
    pub max_sessions: Spanned<usize>,
    /// Player sessions from one IP address (453 beyond).
    pub max_sessions_per_ip: Spanned<usize>,
    /// Open player connections (503, then close, beyond).
    pub max_connections: Spanned<usize>,
    /// A connection with no session that sends no request for this long is closed.
    pub idle_connection_secs: Spanned<u64>,
    /// Media due within one interval of this many ms leaves in one write
    /// per player (0: every due time at once), for playback from the cache.
    pub merge_writes_ms: u64,
    /// The same for players fed straight from an origin session (live
    /// streams, titles relayed without storing).
    pub relay_merge_writes_ms: u64,
}

impl Default for RtspConfig {
    fn default() -> Self {
        RtspConfig {
            listen: Spanned::new(0..0, "127.0.0.1:8554".to_owned()),
            session_timeout_secs: 60,
            max_request_bytes: ByteSize(64 * 1024),
            max_headers: 64,
            player_queue_packets: 2048,
            max_sessions: Spanned::new(0..0, 4000),
            max_sessions_per_ip: Spanned::new(0..0, 1000),
            max_connections: Spanned::new(0..0, 8000),
            idle_connection_secs: Spanned::new(0..0, 60),
            merge_writes_ms: DEFAULT_MERGE_WRITES_MS,
            relay_merge_writes_ms: DEFAULT_RELAY_MERGE_WRITES_MS,
        }
    }
}

/// See `[rtsp] merge_writes_ms` in etc/streamcache.toml.
pub const DEFAULT_MERGE_WRITES_MS: u64 = 0;
/// See `[rtsp] relay_merge_writes_ms` in etc/streamcache.toml.
pub const DEFAULT_RELAY_MERGE_WRITES_MS: u64 = 100;
/// Above this, players' jitter buffers would have to hide the merging.
pub const MAX_MERGE_WRITES_MS: u64 = 200;

/// The longest session or idle-connection timeout, or hub linger (a day):
/// deadlines are computed as `now + timeout`, which must not overflow the
/// clock.
pub const MAX_TIMEOUT_SECS: u64 = 86_400;

impl RtspConfig {
    /// The listen address; [`Config::problems`] has checked that it parses.
    pub fn listen_addr(&self) -> Option<SocketAddr> {
        self.listen.get_ref().parse().ok()
    }

    pub fn session_timeout(&self) -> Duration {
        Duration::from_secs(self.session_timeout_secs)
    }
}

#[derive(Debug, Clone)]
pub struct CacheConfig {
    pub dir: PathBuf,
    pub disk_budget: ByteSize,
    pub segment_size: ByteSize,
    pub segment_secs: u64,
    /// How long a stored title whose origin sent no cache headers at all
    /// (no Cache-Control max-age, Expires or Last-Modified) stays fresh.
    pub default_fresh_secs: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            dir: PathBuf::from("var/cache"),
            disk_budget: ByteSize(10 << 30),
            segment_size: ByteSize(64 << 20),
            segment_secs: 60,
            default_fresh_secs: 3600,
        }
    }
}

#[derive(Debug, Clone)]
pub struct OriginConfig {
    pub connect_timeout_secs: u64,
    pub udp_fallback_secs: u64,
    pub linger_secs: u64,
    pub reconnect_attempts: u32,
}

impl Default for OriginConfig {
    fn default() -> Self {
        OriginConfig {
            connect_timeout_secs: 5,
            udp_fallback_secs: 3,
            linger_secs: 10,
            reconnect_attempts: 3,
        }
    }
}

/// The admin HTTP API (health, metrics, presentations, sessions, reload).
#[derive(Clone)]
pub struct AdminConfig {
    /// Address of the admin HTTP server; an empty string disables it.
    pub listen: Spanned<String>,
    /// Bearer token every request must carry (`Authorization: Bearer …`);
    /// none means the API is open to whoever reaches `listen`.
    pub token: Option<String>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: Spanned::new(0..0, "127.0.0.1:8555".to_owned()),
            token: None,
        }
    }
}

// Hand-written so that the token can never reach a log line through `{:?}`.
impl fmt::Debug for AdminConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminConfig")
            .field("listen", self.listen.get_ref())
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .finish()
    }
}

impl AdminConfig {
    /// The admin listen address, or `None` when the API is disabled (an
    /// unparsable address is reported by [`Config::problems`]).
    pub fn listen_addr(&self) -> Option<SocketAddr> {
        self.listen.get_ref().parse().ok()
    }
}

/// The sample origin built into the binary (`streamcache sample-origin`),
/// run inside the daemon: an RTSP origin serving the embedded sample clip
/// at `/vod` (on demand) and `/live`, so that a first run has something to
/// play and to cache.
#[derive(Debug, Clone)]
pub struct SampleOriginConfig {
    /// Its RTSP address (keep it on loopback); an empty string (the
    /// default) does not run it.
    pub listen: Spanned<String>,
}

impl Default for SampleOriginConfig {
    fn default() -> Self {
        SampleOriginConfig {
            listen: Spanned::new(0..0, String::new()),
        }
    }
}

impl SampleOriginConfig {
    /// The address to run it on, or `None` when it is off (an unparsable
    /// address is reported by [`Config::problems`]).
    pub fn listen_addr(&self) -> Option<SocketAddr> {
        self.listen.get_ref().parse().ok()
    }
}

/// Logging. `RUST_LOG`, when set, overrides `level`.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// A `tracing` filter: `info`, `debug`, `streamcache=debug,info`…
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".to_owned(),
        }
    }
}

/// How the proxy talks RTP with an origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MountTransport {
    /// UDP first, TCP interleaved when no packet arrives in time.
    #[default]
    Auto,
    Udp,
    Tcp,
}

#[derive(Debug, Clone)]
pub struct MountConfig {
    pub path: Spanned<String>,
    pub origin: Spanned<String>,
    pub transport: MountTransport,
    pub username: Option<String>,
    pub password: Option<String>,
    /// Players must authenticate when the mount has users (see `[[mount.user]]`).
    pub realm: Option<Spanned<String>>,
    /// `["digest"]` (the default) or `["basic", "digest"]`, `["basic"]`.
    pub auth_schemes: Option<Spanned<Vec<String>>>,
    /// `[[mount.user]]`
    pub users: Vec<MountUserConfig>,
}

/// The realm players authenticate in when a mount names none. HA1 secrets
/// depend on it: `streamcache hash-password` uses the same default.
pub const DEFAULT_REALM: &str = "streamcache";

impl MountConfig {
    pub fn realm(&self) -> &str {
        self.realm.as_ref().map_or(DEFAULT_REALM, |r| r.get_ref())
    }

    /// Whether `scheme` (`"basic"`/`"digest"`) is allowed; Digest alone by default.
    pub fn allows_scheme(&self, scheme: &str) -> bool {
        match &self.auth_schemes {
            Some(schemes) => schemes.get_ref().iter().any(|s| s == scheme),
            None => scheme == "digest",
        }
    }
}

/// A player allowed on a mount, stored as HA1 = H(name:realm:password) per
/// algorithm (`streamcache hash-password` prints these lines), never as a
/// password.
#[derive(Clone)]
pub struct MountUserConfig {
    pub name: Spanned<String>,
    pub md5: Option<Spanned<String>>,
    pub sha256: Option<Spanned<String>>,
}

// Hand-written: an HA1 is as good as the password for Digest.
impl fmt::Debug for MountUserConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MountUserConfig")
            .field("name", self.name.get_ref())
            .finish_non_exhaustive()
    }
}

/// `"/a/b/"` and `"/a/b"` name the same mount.
pub fn trim_slash(path: &str) -> &str {
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        "/"
    } else {
        trimmed
    }
}

impl Config {
    /// Reads, parses and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::load_with_text(path).map(|(config, _)| config)
    }

    /// [`Config::load`], also returning the file's text as read (the reload
    /// compares files as written).
    pub fn load_with_text(path: &Path) -> Result<(Config, String), ConfigError> {
        let fail = |problems| ConfigError {
            file: path.to_owned(),
            problems,
        };
        let text = std::fs::read_to_string(path).map_err(|e| {
            fail(vec![Problem {
                line: None,
                key: "(file)".into(),
                message: format!("cannot read: {e}"),
            }])
        })?;
        let config = Config::parse(&text).map_err(fail)?;
        Ok((config, text))
    }

    /// Parses and validates configuration text: the configuration, or
    /// every problem found, in the order of the file.
    pub fn parse(text: &str) -> Result<Config, Vec<Problem>> {
        // The parser stops at a syntax error: it is the only problem reported.
        let document = toml_edit::ImDocument::parse(text).map_err(|e| {
            let message = e.message().trim();
            vec![Problem {
                line: e.span().map(|s| line_of(text, s.start)),
                key: "(syntax)".into(),
                message: match e.span() {
                    Some(span) if assigns_a_secret(line_at(text, span.start)) => {
                        hide_values(message)
                    }
                    _ => message.to_owned(),
                },
            }]
        })?;
        let reading = read::read(text, document.as_table());
        let checked: Vec<Problem> = reading
            .config
            .problems(text, &reading.spans)
            .into_iter()
            .filter(|p| !reading.already_reported(&p.key))
            .collect();
        let mut problems = reading.problems;
        problems.extend(checked);
        // Stable: problems of one line keep the order they were found in.
        problems.sort_by_key(|p| p.line);
        if problems.is_empty() {
            Ok(reading.config)
        } else {
            Err(problems)
        }
    }
}
