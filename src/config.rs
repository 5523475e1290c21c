//! The daemon's configuration: a TOML file (`etc/streamcache.toml` is the
//! commented default).
//!
//! Loading is two steps: serde parses the text (syntax errors and unknown keys
//! come back from `toml` with their line), then [`Config::problems`] checks what
//! serde cannot (URLs, mount prefixes, ranges). Both kinds of problem are
//! reported as [`Problem`]s naming the key and the line, which is what
//! `streamcache check-config` prints.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::{self, Deserializer};
use serde::Deserialize;
use toml::Spanned;

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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub rtsp: RtspConfig,
    #[serde(default)]
    pub cache: CacheConfig,
    #[serde(default)]
    pub origin: OriginConfig,
    #[serde(default)]
    pub admin: AdminConfig,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default, rename = "mount")]
    pub mounts: Vec<MountConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
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
        }
    }
}

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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
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
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
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

/// Logging. `RUST_LOG`, when set, overrides `level`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MountConfig {
    pub path: Spanned<String>,
    pub origin: Spanned<String>,
    #[serde(default)]
    pub transport: MountTransport,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    /// Players must authenticate when the mount has users (see `[[mount.user]]`).
    #[serde(default)]
    pub realm: Option<Spanned<String>>,
    /// `["digest"]` (the default) or `["basic", "digest"]`, `["basic"]`.
    #[serde(default)]
    pub auth_schemes: Option<Spanned<Vec<String>>>,
    #[serde(default, rename = "user")]
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
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MountUserConfig {
    pub name: Spanned<String>,
    #[serde(default)]
    pub md5: Option<Spanned<String>>,
    #[serde(default)]
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

/// A size in bytes, written as a number or a string with a unit
/// (`"64KiB"`, `"512MiB"`, `"10GiB"`, `"1TiB"`, also `KB`/`MB`/`GB` as powers of 1000).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub fn parse(text: &str) -> Result<ByteSize, String> {
        let text = text.trim();
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (digits, unit) = text.split_at(split);
        let number: u64 = digits
            .parse()
            .map_err(|_| format!("`{text}` is not a size (e.g. \"64MiB\")"))?;
        let multiplier: u64 = match unit.trim() {
            "" | "B" => 1,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            "TiB" => 1 << 40,
            "KB" => 1_000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            "TB" => 1_000_000_000_000,
            other => return Err(format!("unknown size unit `{other}` in `{text}`")),
        };
        number
            .checked_mul(multiplier)
            .map(ByteSize)
            .ok_or_else(|| format!("`{text}` is too large"))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Number(n) => Ok(ByteSize(n)),
            Raw::Text(t) => ByteSize::parse(&t).map_err(de::Error::custom),
        }
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

    /// Parses and validates configuration text.
    pub fn parse(text: &str) -> Result<Config, Vec<Problem>> {
        let config: Config = toml::from_str(text).map_err(|e| {
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
        let problems = config.problems(text);
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(problems)
        }
    }

    /// What serde cannot check. `text` is the source, for line numbers.
    fn problems(&self, text: &str) -> Vec<Problem> {
        let mut out = Vec::new();
        let mut problem = |span: Option<std::ops::Range<usize>>, key: String, message: String| {
            out.push(Problem {
                line: span.filter(|s| s.end > 0).map(|s| line_of(text, s.start)),
                key,
                message,
            })
        };
        if self.rtsp.listen_addr().is_none() {
            problem(
                Some(self.rtsp.listen.span()),
                "rtsp.listen".into(),
                format!(
                    "`{}` is not an address:port (e.g. \"127.0.0.1:8554\")",
                    self.rtsp.listen.get_ref()
                ),
            );
        }
        if !(1..=MAX_TIMEOUT_SECS).contains(&self.rtsp.session_timeout_secs) {
            problem(
                None,
                "rtsp.session_timeout_secs".into(),
                format!("must be between 1 and {MAX_TIMEOUT_SECS}"),
            );
        }
        if self.rtsp.max_request_bytes.0 < 1024 {
            problem(
                None,
                "rtsp.max_request_bytes".into(),
                "must be at least 1KiB".into(),
            );
        }
        if self.rtsp.max_headers == 0 || self.rtsp.player_queue_packets == 0 {
            problem(
                None,
                "rtsp".into(),
                "max_headers and player_queue_packets must be > 0".into(),
            );
        }
        for (key, value) in [
            ("max_sessions", &self.rtsp.max_sessions),
            ("max_sessions_per_ip", &self.rtsp.max_sessions_per_ip),
            ("max_connections", &self.rtsp.max_connections),
        ] {
            if *value.get_ref() == 0 {
                problem(
                    Some(value.span()),
                    format!("rtsp.{key}"),
                    "must be > 0".into(),
                );
            }
        }
        if !(1..=MAX_TIMEOUT_SECS).contains(self.rtsp.idle_connection_secs.get_ref()) {
            problem(
                Some(self.rtsp.idle_connection_secs.span()),
                "rtsp.idle_connection_secs".into(),
                format!("must be between 1 and {MAX_TIMEOUT_SECS}"),
            );
        }
        if self.cache.segment_size.0 < 64 * 1024 {
            problem(
                None,
                "cache.segment_size".into(),
                "must be at least 64KiB".into(),
            );
        }
        if self.cache.segment_size.0 > self.cache.disk_budget.0 {
            problem(
                None,
                "cache.disk_budget".into(),
                "must be at least one segment_size".into(),
            );
        }
        if self.origin.connect_timeout_secs == 0 || self.origin.udp_fallback_secs == 0 {
            problem(
                None,
                "origin".into(),
                "connect_timeout_secs and udp_fallback_secs must be > 0".into(),
            );
        }
        if self.origin.linger_secs > MAX_TIMEOUT_SECS {
            problem(
                None,
                "origin.linger_secs".into(),
                format!("must be at most {MAX_TIMEOUT_SECS}"),
            );
        }
        let admin_listen = self.admin.listen.get_ref();
        if !admin_listen.is_empty() && self.admin.listen_addr().is_none() {
            problem(
                Some(self.admin.listen.span()),
                "admin.listen".into(),
                format!("`{admin_listen}` is not an address:port (e.g. \"127.0.0.1:8555\"), or \"\" to disable"),
            );
        }
        if self
            .admin
            .token
            .as_ref()
            .is_some_and(|t| t.trim().is_empty())
        {
            problem(
                None,
                "admin.token".into(),
                "must not be empty (leave the key out for no token)".into(),
            );
        } else if self
            .admin
            .token
            .as_ref()
            .is_some_and(|t| t.trim() != t || !t.chars().all(|c| c.is_ascii_graphic() || c == ' '))
        {
            // A client cannot send anything else in an HTTP header: such a
            // token would lock everyone out. Never echo it.
            problem(
                None,
                "admin.token".into(),
                "must be printable ASCII, without spaces around it (it is sent as `Authorization: Bearer <token>`)".into(),
            );
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            problem(
                None,
                "log.level".into(),
                format!("`{}` is not a log filter: {e}", self.log.level),
            );
        }
        for (i, mount) in self.mounts.iter().enumerate() {
            let path = mount.path.get_ref();
            if !path.starts_with('/') || path.contains(['?', '#', ' ']) {
                problem(
                    Some(mount.path.span()),
                    format!("mount[{i}].path"),
                    format!("`{path}` must be an absolute URL path such as \"/cams/front\""),
                );
            }
            if let Some(j) = self.mounts[..i]
                .iter()
                .position(|m| trim_slash(m.path.get_ref()) == trim_slash(path))
            {
                problem(
                    Some(mount.path.span()),
                    format!("mount[{i}].path"),
                    format!("`{path}` is already mounted by mount[{j}]"),
                );
            }
            if let Err(msg) = check_origin_url(mount.origin.get_ref()) {
                problem(Some(mount.origin.span()), format!("mount[{i}].origin"), msg);
            }
            if mount.password.is_some() && mount.username.is_none() {
                problem(
                    Some(mount.path.span()),
                    format!("mount[{i}].password"),
                    "a password needs a username".into(),
                );
            }
            for (span, key, message) in mount_auth_problems(mount) {
                problem(span, format!("mount[{i}].{key}"), message);
            }
        }
        out
    }
}

/// What is wrong with a mount's player authentication keys.
fn mount_auth_problems(
    mount: &MountConfig,
) -> Vec<(Option<std::ops::Range<usize>>, String, String)> {
    let mut out = Vec::new();
    let bad_text =
        |s: &str| s.is_empty() || s.chars().any(|c| c.is_control() || c == '"' || c == '\\');
    if let Some(realm) = &mount.realm {
        if bad_text(realm.get_ref()) {
            out.push((
                Some(realm.span()),
                "realm".into(),
                "must be non-empty, without quotes, backslashes or control characters".into(),
            ));
        }
    }
    if let Some(schemes) = &mount.auth_schemes {
        let list = schemes.get_ref();
        if list.is_empty() {
            out.push((
                Some(schemes.span()),
                "auth_schemes".into(),
                "must name at least one of \"basic\", \"digest\"".into(),
            ));
        }
        for (j, scheme) in list.iter().enumerate() {
            if scheme != "basic" && scheme != "digest" {
                out.push((
                    Some(schemes.span()),
                    "auth_schemes".into(),
                    format!("`{scheme}` is not \"basic\" or \"digest\""),
                ));
            } else if list[..j].contains(scheme) {
                out.push((
                    Some(schemes.span()),
                    "auth_schemes".into(),
                    format!("`{scheme}` is listed twice"),
                ));
            }
        }
    }
    if mount.users.is_empty() && (mount.realm.is_some() || mount.auth_schemes.is_some()) {
        let span = mount
            .realm
            .as_ref()
            .map(|r| r.span())
            .or_else(|| mount.auth_schemes.as_ref().map(|s| s.span()));
        out.push((
            span,
            "user".into(),
            "realm/auth_schemes are set but no [[mount.user]] is: the mount would be open to anyone".into(),
        ));
    }
    for (j, user) in mount.users.iter().enumerate() {
        let name = user.name.get_ref();
        if bad_text(name) || name.contains(':') {
            out.push((
                Some(user.name.span()),
                format!("user[{j}].name"),
                "must be non-empty, without `:`, quotes, backslashes or control characters".into(),
            ));
        }
        if mount.users[..j].iter().any(|u| u.name.get_ref() == name) {
            out.push((
                Some(user.name.span()),
                format!("user[{j}].name"),
                format!("user `{name}` is listed twice"),
            ));
        }
        if user.md5.is_none() && user.sha256.is_none() {
            out.push((
                Some(user.name.span()),
                format!("user[{j}]"),
                "needs md5 and/or sha256 (the output of `streamcache hash-password`)".into(),
            ));
        }
        for (key, secret, digits) in [("md5", &user.md5, 32), ("sha256", &user.sha256, 64)] {
            if let Some(secret) = secret {
                let text = secret.get_ref();
                if text.len() != digits || !text.chars().all(|c| c.is_ascii_hexdigit()) {
                    // Never echo the value: it may be a pasted password.
                    out.push((
                        Some(secret.span()),
                        format!("user[{j}].{key}"),
                        format!("must be {digits} hex digits, H(user:realm:password) as printed by `streamcache hash-password`"),
                    ));
                }
            }
        }
    }
    out
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

fn check_origin_url(text: &str) -> Result<(), String> {
    let url = url::Url::parse(text).map_err(|e| format!("`{text}` is not a URL: {e}"))?;
    if url.scheme() != "rtsp" {
        return Err(format!(
            "origin must be an rtsp:// URL, not {}://",
            url.scheme()
        ));
    }
    if url.host_str().is_none() {
        return Err("origin URL has no host".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        // Credentials in a URL end up in logs; they have their own keys.
        return Err("put origin credentials in `username`/`password`, not in the URL".into());
    }
    Ok(())
}

/// Keys whose values are secrets (origin passwords, the admin token, HA1
/// digests): never echoed in a problem, which reaches the terminal, the
/// journal and the admin API's reload answer.
const SECRET_KEYS: [&str; 4] = ["password", "token", "md5", "sha256"];

/// The line of `text` that holds byte `offset`.
fn line_at(text: &str, offset: usize) -> &str {
    let offset = offset.min(text.len());
    let start = text.as_bytes()[..offset]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    let end = text.as_bytes()[offset..]
        .iter()
        .position(|&b| b == b'\n')
        .map_or(text.len(), |i| offset + i);
    text.get(start..end).unwrap_or_default()
}

/// Whether a line assigns one of the [`SECRET_KEYS`] (`key = value`, also
/// inside an inline table).
fn assigns_a_secret(line: &str) -> bool {
    line.split(['{', ',']).any(|part| {
        part.split_once('=')
            .is_some_and(|(key, _)| SECRET_KEYS.contains(&key.trim().trim_matches(['"', '\''])))
    })
}

/// A deserializer message about a secret's line without the values it
/// quotes between backticks ("invalid type: integer `1234`, expected a
/// string", or `1000` for `1e3`): only messages about keys, which quote key
/// names, keep them.
fn hide_values(message: &str) -> String {
    if message.starts_with("unknown field") || message.starts_with("missing field") {
        return message.to_owned();
    }
    message
        .split('`')
        .enumerate()
        .map(|(i, part)| if i % 2 == 1 { "…" } else { part })
        .collect::<Vec<_>>()
        .join("`")
}

fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_file_is_valid() {
        let text = include_str!("../etc/streamcache.toml");
        let config = Config::parse(text).expect("etc/streamcache.toml must validate");
        assert_eq!(config.rtsp.listen_addr(), "127.0.0.1:8554".parse().ok());
        assert_eq!(config.cache.disk_budget, ByteSize(10 << 30));
        assert_eq!(config.mounts.len(), 1);
    }

    #[test]
    fn empty_file_gets_defaults() {
        let config = Config::parse("").expect("empty config is valid");
        assert_eq!(config.rtsp.session_timeout_secs, 60);
        assert!(config.mounts.is_empty());
    }

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(ByteSize::parse("64KiB"), Ok(ByteSize(65536)));
        assert_eq!(ByteSize::parse("2 GB"), Ok(ByteSize(2_000_000_000)));
        assert_eq!(ByteSize::parse("17"), Ok(ByteSize(17)));
        assert!(ByteSize::parse("12 parsecs").is_err());
        assert!(ByteSize::parse("99999999999TiB").is_err());
    }

    #[test]
    fn problems_name_key_and_line() {
        let text = "[rtsp]\nlisten = \"nowhere\"\n\n[[mount]]\npath = \"cams\"\norigin = \"http://x/\"\n\n[[mount]]\npath = \"/b\"\norigin = \"rtsp://u:p@h/x\"\n";
        let problems = Config::parse(text).expect_err("invalid");
        let lines: Vec<_> = problems.iter().map(|p| (p.key.as_str(), p.line)).collect();
        assert_eq!(
            lines,
            vec![
                ("rtsp.listen", Some(2)),
                ("mount[0].path", Some(5)),
                ("mount[0].origin", Some(6)),
                ("mount[1].origin", Some(10)),
            ]
        );
        assert!(!problems[3].message.contains("u:p"));
    }

    #[test]
    fn unknown_keys_are_refused_with_line() {
        let problems = Config::parse("[rtsp]\nlisen = \"x\"\n").expect_err("typo");
        assert_eq!(problems[0].line, Some(2));
        assert!(problems[0].message.contains("lisen"), "{problems:?}");
    }

    #[test]
    fn duplicate_mounts_are_refused() {
        let text = "[[mount]]\npath = \"/a/\"\norigin = \"rtsp://h/x\"\n[[mount]]\npath = \"/a\"\norigin = \"rtsp://h/y\"\n";
        let problems = Config::parse(text).expect_err("duplicate");
        assert_eq!(problems[0].key, "mount[1].path");
        assert_eq!(problems[0].line, Some(5));
    }

    #[test]
    fn player_auth_keys_are_checked_with_lines() {
        let md5 = "0123456789abcdef0123456789abcdef";
        let text = format!(
            "[[mount]]\npath = \"/a\"\norigin = \"rtsp://h/x\"\nrealm = \"cams\"\nauth_schemes = [\"digest\", \"ntlm\"]\n\
             [[mount.user]]\nname = \"ann\"\nmd5 = \"{md5}\"\n\
             [[mount.user]]\nname = \"bo:b\"\nsha256 = \"secret\"\n\
             [[mount.user]]\nname = \"ann\"\n\
             [[mount]]\npath = \"/b\"\norigin = \"rtsp://h/y\"\nrealm = \"open\"\n"
        );
        let problems = Config::parse(&text).expect_err("invalid");
        let got: Vec<_> = problems.iter().map(|p| (p.key.as_str(), p.line)).collect();
        assert_eq!(
            got,
            vec![
                ("mount[0].auth_schemes", Some(5)),
                ("mount[0].user[1].name", Some(10)),
                ("mount[0].user[1].sha256", Some(11)),
                ("mount[0].user[2].name", Some(13)),
                ("mount[0].user[2]", Some(13)),
                ("mount[1].user", Some(17)),
            ],
            "{problems:#?}"
        );
        assert!(problems.iter().all(|p| !p.message.contains("secret")));
        // A plain password is not a key a user may have.
        let text = "[[mount]]\npath = \"/a\"\norigin = \"rtsp://h/x\"\n[[mount.user]]\nname = \"ann\"\npassword = \"pw\"\n";
        let problems = Config::parse(text).expect_err("password key");
        assert_eq!(problems[0].line, Some(6), "{problems:?}");
    }

    #[test]
    fn admin_tokens_are_what_a_header_can_carry() {
        let parse = |token: &str| Config::parse(&format!("[admin]\ntoken = \"{token}\"\n"));
        assert!(parse("s3cret-T0ken_+/=~.").is_ok());
        assert!(parse("two words").is_ok());
        for token in ["pässword", " padded", "padded ", "tab\\t", "line\\r\\nX: y"] {
            let problems = parse(token).expect_err(token);
            assert_eq!(problems.len(), 1, "{token:?}: {problems:?}");
            assert_eq!(problems[0].key, "admin.token");
            assert!(!problems[0].message.contains(token.trim()), "{problems:?}");
        }
    }

    #[test]
    fn secrets_of_the_wrong_type_are_not_echoed() {
        // A numeric camera password, token or digest written without quotes.
        for (text, secret) in [
            (
                "[[mount]]\npath = \"/a\"\norigin = \"rtsp://h/x\"\nusername = \"u\"\npassword = 12345\n",
                "12345",
            ),
            ("[admin]\ntoken = 987654\n", "987654"),
            (
                "[[mount]]\npath = \"/a\"\norigin = \"rtsp://h/x\"\n[[mount.user]]\nname = \"a\"\nmd5 = 77\n",
                "77",
            ),
            (
                "[[mount]]\npath = \"/a\"\norigin = \"rtsp://h/x\"\n\"password\" = 4242\n",
                "4242",
            ),
            // The deserializer quotes the value as it read it, not as written.
            ("[admin]\ntoken = 1e3\n", "1000"),
        ] {
            let problems = Config::parse(text).expect_err("wrong type");
            assert_eq!(problems.len(), 1, "{problems:?}");
            assert!(!problems[0].message.contains(secret), "{problems:?}");
            assert!(
                problems[0].message.contains("expected a string"),
                "{problems:?}"
            );
            assert!(problems[0].line.is_some(), "{problems:?}");
        }
        // Other values are shown: they help and are no secret.
        let problems =
            Config::parse("[[mount]]\npath = \"/a\"\norigin = 5\n").expect_err("wrong type");
        assert!(problems[0].message.contains("`5`"), "{problems:?}");
        assert_eq!(hide_values("a `x1` b `y`"), "a `…` b `…`");
        assert!(assigns_a_secret("{ path = \"/a\", password = 1 }"));
        assert!(!assigns_a_secret("origin = \"rtsp://h/password=1\""));
        // A key that is not allowed keeps its name in the message.
        let problems = Config::parse(
            "[[mount]]\npath = \"/a\"\norigin = \"rtsp://h/x\"\n[[mount.user]]\nname = \"a\"\npassword = \"pw\"\n",
        )
        .expect_err("password key");
        assert!(problems[0].message.contains("`password`"), "{problems:?}");
    }

    #[test]
    fn player_auth_defaults_and_limits() {
        let text = "[rtsp]\nmax_sessions = 0\nidle_connection_secs = 0\n";
        let problems = Config::parse(text).expect_err("zero limits");
        let got: Vec<_> = problems.iter().map(|p| (p.key.as_str(), p.line)).collect();
        assert_eq!(
            got,
            vec![
                ("rtsp.max_sessions", Some(2)),
                ("rtsp.idle_connection_secs", Some(3))
            ]
        );
        // Timeouts so long that `now + timeout` would overflow the clock
        // (a panic in every connection) are refused.
        let text = "[rtsp]\nsession_timeout_secs = 9223372036854775807\nidle_connection_secs = 9223372036854775807\n[origin]\nlinger_secs = 9223372036854775807\n";
        let problems = Config::parse(text).expect_err("huge timeouts");
        let got: Vec<_> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            got,
            [
                "rtsp.session_timeout_secs",
                "rtsp.idle_connection_secs",
                "origin.linger_secs"
            ],
            "{problems:?}"
        );
        let text = "[[mount]]\npath = \"/a\"\norigin = \"rtsp://h/x\"\n[[mount.user]]\nname = \"ann\"\nmd5 = \"0123456789ABCDEF0123456789abcdef\"\n";
        let config = Config::parse(text).expect("valid");
        assert_eq!(config.mounts[0].realm(), DEFAULT_REALM);
        assert!(config.mounts[0].allows_scheme("digest"));
        assert!(!config.mounts[0].allows_scheme("basic"));
        assert_eq!(*config.rtsp.max_sessions.get_ref(), 4000);
    }
}
