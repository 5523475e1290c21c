//! The mount table: which player URLs the proxy serves, and from which origin.
//!
//! A mount maps a path prefix on the proxy to an origin URL prefix. A request
//! path under no mount resolves to nothing (the server answers 404): the proxy
//! is never an open relay. Matching is on whole path segments, so `/cams`
//! serves `/cams` and `/cams/front` but not `/camshaft`; the longest prefix wins.
//!
//! The proxy's own SDP names each track `<presentation>/trackID=<n>`, so a
//! SETUP URL resolves to its presentation plus a track index.

use std::sync::Arc;
use std::time::Duration;

use streamcache_rtsp::auth::{ServerAuth, UserSecret};
use url::Url;

use crate::config::{trim_slash, Config, MountTransport};

/// One configured mount, ready to use.
#[derive(Clone)]
pub struct Mount {
    /// Path prefix on the proxy, without a trailing slash (`/` for the root).
    pub path: String,
    /// Origin URL prefix (never carries credentials: config validation refuses them).
    pub origin: Url,
    pub transport: MountTransport,
    pub username: Option<String>,
    pub password: Option<String>,
    /// Players must authenticate when set (the mount has users).
    pub player_auth: Option<Arc<ServerAuth>>,
}

// Hand-written so that the password can never reach a log line through `{:?}`.
impl std::fmt::Debug for Mount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mount")
            .field("path", &self.path)
            .field("origin", &self.origin.as_str())
            .field("transport", &self.transport)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// What a player's request path means.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub mount: Mount,
    /// The presentation's path on the proxy (track suffix removed, no trailing slash).
    pub presentation_path: String,
    /// The presentation's URL at the origin.
    pub origin_url: Url,
    /// The presentation key: the normalised origin URL.
    pub key: String,
    /// The track named by a `trackID=<n>` last segment, for SETUP.
    pub track: Option<usize>,
}

/// Where a proxy track's control URL points, relative to its presentation.
pub fn track_suffix(index: usize) -> String {
    format!("trackID={index}")
}

#[derive(Debug, Clone, Default)]
pub struct Mounts {
    mounts: Vec<Mount>,
}

impl Mounts {
    pub fn from_config(config: &Config) -> Mounts {
        let mounts = config
            .mounts
            .iter()
            .filter_map(|m| {
                Some(Mount {
                    path: trim_slash(m.path.get_ref()).to_owned(),
                    origin: Url::parse(m.origin.get_ref()).ok()?,
                    transport: m.transport,
                    username: m.username.clone(),
                    password: m.password.clone(),
                    player_auth: player_auth(m),
                })
            })
            .collect();
        Mounts { mounts }
    }

    pub fn is_empty(&self) -> bool {
        self.mounts.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Mount> {
        self.mounts.iter()
    }

    /// The mount configured at exactly this path (as kept in [`Mount::path`]).
    pub fn get(&self, path: &str) -> Option<&Mount> {
        self.mounts.iter().find(|m| m.path == path)
    }

    /// Resolves a request path (percent-encoded, as in the request URL).
    pub fn resolve(&self, request_path: &str) -> Option<Resolved> {
        let path = trim_slash(request_path);
        let (presentation_path, track) = split_track(path);
        let mount = self
            .mounts
            .iter()
            .filter(|m| is_under(presentation_path, &m.path))
            .max_by_key(|m| m.path.len())?;
        let rest = &presentation_path[mount.path.len()..];
        let rest = rest.trim_start_matches('/');
        let mut origin_url = mount.origin.clone();
        if !rest.is_empty() {
            let base = origin_url.path().trim_end_matches('/').to_owned();
            origin_url.set_path(&format!("{base}/{rest}"));
        }
        Some(Resolved {
            mount: mount.clone(),
            presentation_path: presentation_path.to_owned(),
            key: presentation_key(&origin_url),
            origin_url,
            track,
        })
    }
}

/// The player authentication of a mount with users; `None` leaves it open.
fn player_auth(mount: &crate::config::MountConfig) -> Option<Arc<ServerAuth>> {
    if mount.users.is_empty() {
        return None;
    }
    let users = mount
        .users
        .iter()
        .map(|u| UserSecret {
            name: u.name.get_ref().clone(),
            md5: u.md5.as_ref().map(|h| h.get_ref().to_ascii_lowercase()),
            sha256: u.sha256.as_ref().map(|h| h.get_ref().to_ascii_lowercase()),
        })
        .collect();
    Some(Arc::new(ServerAuth::new(
        mount.realm(),
        mount.allows_scheme("basic"),
        mount.allows_scheme("digest"),
        users,
    )))
}

fn is_under(path: &str, prefix: &str) -> bool {
    prefix == "/"
        || path == prefix
        || (path.starts_with(prefix) && path.as_bytes().get(prefix.len()) == Some(&b'/'))
}

fn split_track(path: &str) -> (&str, Option<usize>) {
    if let Some((head, last)) = path.rsplit_once('/') {
        if let Some(n) = last.strip_prefix("trackID=") {
            if let Ok(n) = n.parse() {
                return (if head.is_empty() { "/" } else { head }, Some(n));
            }
        }
    }
    (path, None)
}

/// The normalised origin URL that keys a presentation in the catalog and the
/// store: lower-case scheme and host, explicit port, no credentials, no
/// fragment, no trailing slash.
pub fn presentation_key(url: &Url) -> String {
    let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
    let port = url.port().unwrap_or(554);
    let path = url.path().trim_end_matches('/');
    let query = url.query().map(|q| format!("?{q}")).unwrap_or_default();
    format!("rtsp://{host}:{port}{path}{query}")
}

/// Per-origin timing knobs shared by all mounts.
#[derive(Debug, Clone, Copy)]
pub struct OriginTiming {
    pub connect_timeout: Duration,
    pub udp_fallback: Duration,
    pub linger: Duration,
    pub reconnect_attempts: u32,
}

impl OriginTiming {
    pub fn from_config(config: &Config) -> OriginTiming {
        OriginTiming {
            connect_timeout: Duration::from_secs(config.origin.connect_timeout_secs),
            udp_fallback: Duration::from_secs(config.origin.udp_fallback_secs),
            linger: Duration::from_secs(config.origin.linger_secs),
            reconnect_attempts: config.origin.reconnect_attempts,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mounts() -> Mounts {
        let config = Config::parse(
            "[[mount]]\npath = \"/cams\"\norigin = \"rtsp://Origin.example:8554/live\"\n\
             [[mount]]\npath = \"/cams/special/\"\norigin = \"rtsp://other/x\"\ntransport = \"tcp\"\n",
        )
        .expect("valid");
        Mounts::from_config(&config)
    }

    #[test]
    fn resolves_under_mount_on_segment_boundaries() {
        let m = mounts();
        let r = m.resolve("/cams/front").expect("under /cams");
        assert_eq!(
            r.origin_url.as_str(),
            "rtsp://Origin.example:8554/live/front"
        );
        assert_eq!(r.key, "rtsp://origin.example:8554/live/front");
        assert_eq!(r.track, None);
        assert_eq!(
            m.resolve("/cams").expect("mount root").key,
            "rtsp://origin.example:8554/live"
        );
        assert!(m.resolve("/camshaft").is_none());
        assert!(m.resolve("/").is_none());
        assert!(m.resolve("/other").is_none());
    }

    #[test]
    fn longest_prefix_wins_and_default_port_is_explicit() {
        let r = mounts().resolve("/cams/special/a").expect("resolves");
        assert_eq!(r.mount.transport, MountTransport::Tcp);
        assert_eq!(r.key, "rtsp://other:554/x/a");
    }

    #[test]
    fn track_suffix_names_track() {
        let r = mounts().resolve("/cams/front/trackID=1").expect("resolves");
        assert_eq!(r.track, Some(1));
        assert_eq!(r.presentation_path, "/cams/front");
        assert_eq!(r.key, "rtsp://origin.example:8554/live/front");
        let r = mounts().resolve("/cams/front/").expect("trailing slash");
        assert_eq!(r.presentation_path, "/cams/front");
    }

    #[test]
    fn debug_never_shows_password() {
        let config = Config::parse(
            "[[mount]]\npath = \"/a\"\norigin = \"rtsp://h/x\"\nusername = \"u\"\npassword = \"hunter2\"\n",
        )
        .expect("valid");
        let m = Mounts::from_config(&config);
        assert!(!format!("{m:?}").contains("hunter2"));
    }
}
