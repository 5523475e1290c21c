//! The cluster's two sections: `[master]` makes the process the cluster's
//! master (`streamcache master`), `[cluster]` makes a proxy one of its
//! nodes. A file has at most one of them.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use toml::Spanned;

use super::check::Found;
use super::MAX_TIMEOUT_SECS;

/// `[master]`: where players and nodes reach the master, and how it judges
/// nodes.
#[derive(Clone)]
pub struct MasterConfig {
    /// RTSP listener for players (who are redirected to a node).
    pub listen: Spanned<String>,
    /// gRPC listener for nodes' control connections.
    pub control_listen: Spanned<String>,
    /// The cluster token every node must present.
    pub token: String,
    /// How often nodes report; a node silent for one period is polled.
    pub report_period_ms: u64,
    /// Unanswered polls after which a node is down.
    pub down_after_polls: u32,
    /// The bandwidth history placement averages each node's egress over.
    pub egress_window_secs: u64,
    /// How long a chosen node may take to prepare before the next is tried.
    pub prepare_timeout_ms: u64,
    /// The egress a new player is expected to draw, bit/s (for headroom).
    pub player_bitrate_bps: u64,
    /// `Retry-After` of the 503 sent when no node has headroom.
    pub retry_after_secs: u64,
    /// Node-to-node copies: the cap of each link (source → destination)
    /// and of all copies together, bit/s.
    pub copy_link_bps: u64,
    pub copy_cluster_bps: u64,
    /// A source (or link) whose copies fail this many times within
    /// `copy_failure_window_secs` is faulty for copies until a probe
    /// succeeds or an operator clears it.
    pub copy_faulty_after: u32,
    pub copy_failure_window_secs: u64,
}

impl Default for MasterConfig {
    fn default() -> Self {
        MasterConfig {
            listen: Spanned::new(0..0, "127.0.0.1:8564".to_owned()),
            control_listen: Spanned::new(0..0, "127.0.0.1:8566".to_owned()),
            token: String::new(),
            report_period_ms: 1000,
            down_after_polls: 3,
            egress_window_secs: 30,
            prepare_timeout_ms: 3000,
            player_bitrate_bps: 4_000_000,
            retry_after_secs: 5,
            copy_link_bps: 100_000_000,
            copy_cluster_bps: 1_000_000_000,
            copy_faulty_after: 3,
            copy_failure_window_secs: 300,
        }
    }
}

// Hand-written: the token never reaches a log line through `{:?}`.
impl fmt::Debug for MasterConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MasterConfig")
            .field("listen", self.listen.get_ref())
            .field("control_listen", self.control_listen.get_ref())
            .field("report_period_ms", &self.report_period_ms)
            .field("down_after_polls", &self.down_after_polls)
            .finish_non_exhaustive()
    }
}

impl MasterConfig {
    pub fn listen_addr(&self) -> Option<SocketAddr> {
        self.listen.get_ref().parse().ok()
    }

    pub fn control_addr(&self) -> Option<SocketAddr> {
        self.control_listen.get_ref().parse().ok()
    }

    pub fn report_period(&self) -> Duration {
        Duration::from_millis(self.report_period_ms)
    }

    pub fn egress_window(&self) -> Duration {
        Duration::from_secs(self.egress_window_secs)
    }

    pub fn prepare_timeout(&self) -> Duration {
        Duration::from_millis(self.prepare_timeout_ms)
    }

    pub(super) fn problems(&self, found: &mut Found) {
        for (key, value, valid) in [
            ("listen", &self.listen, self.listen_addr().is_some()),
            (
                "control_listen",
                &self.control_listen,
                self.control_addr().is_some(),
            ),
        ] {
            if !valid {
                found.add(
                    format!("master.{key}"),
                    format!(
                        "`{}` is not an address:port (e.g. \"0.0.0.0:8564\")",
                        value.get_ref()
                    ),
                );
            }
        }
        token_problems(&self.token, "master.token", found);
        if !(50..=MAX_TIMEOUT_SECS * 1000).contains(&self.report_period_ms) {
            found.add(
                "master.report_period_ms",
                format!("must be between 50 and {}", MAX_TIMEOUT_SECS * 1000),
            );
        }
        if self.down_after_polls == 0 {
            found.add("master.down_after_polls", "must be > 0");
        }
        if !(1..=MAX_TIMEOUT_SECS).contains(&self.egress_window_secs) {
            found.add(
                "master.egress_window_secs",
                format!("must be between 1 and {MAX_TIMEOUT_SECS}"),
            );
        }
        if !(1..=60_000).contains(&self.prepare_timeout_ms) {
            found.add("master.prepare_timeout_ms", "must be between 1 and 60000");
        }
        if self.player_bitrate_bps == 0 {
            found.add("master.player_bitrate_bps", "must be > 0");
        }
        if !(1..=MAX_TIMEOUT_SECS).contains(&self.retry_after_secs) {
            found.add(
                "master.retry_after_secs",
                format!("must be between 1 and {MAX_TIMEOUT_SECS}"),
            );
        }
        for (key, value) in [
            ("copy_link_bps", self.copy_link_bps),
            ("copy_cluster_bps", self.copy_cluster_bps),
            ("copy_faulty_after", u64::from(self.copy_faulty_after)),
        ] {
            if value == 0 {
                found.add(format!("master.{key}"), "must be > 0");
            }
        }
        if !(1..=MAX_TIMEOUT_SECS).contains(&self.copy_failure_window_secs) {
            found.add(
                "master.copy_failure_window_secs",
                format!("must be between 1 and {MAX_TIMEOUT_SECS}"),
            );
        }
    }
}

/// `[cluster]`: this proxy is a node of a cluster.
#[derive(Clone)]
pub struct ClusterConfig {
    /// The master's control URL, `http://host:port`.
    pub master: Spanned<String>,
    /// This node's id: the same after a restart (it is the same node).
    pub node_id: String,
    /// The URL players are sent to, `rtsp://host:port`; by default the
    /// address `[rtsp] listen` is bound to (which must then not be a
    /// wildcard such as 0.0.0.0).
    pub rtsp_url: Option<String>,
    /// The cluster token (the master's `[master] token`).
    pub token: String,
    /// Player sessions the master may send here; by default `[rtsp]
    /// max_sessions`.
    pub max_sessions: Option<u32>,
    /// Egress for players the master may fill, bit/s.
    pub max_egress_bps: u64,
    /// Where this node serves its stored segments to the other nodes
    /// (cluster token required); "" (the default) serves none.
    pub peer_listen: Spanned<String>,
    /// The URL peers reach it by, `http://host:port`; by default the
    /// address `peer_listen` is bound to (which must then not be a
    /// wildcard).
    pub peer_url: Option<String>,
    /// Bandwidth node-to-node copies may use out of and into this node,
    /// bit/s (players' egress comes first).
    pub max_copy_egress_bps: u64,
    pub max_copy_ingress_bps: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            master: Spanned::new(0..0, String::new()),
            node_id: String::new(),
            rtsp_url: None,
            token: String::new(),
            max_sessions: None,
            max_egress_bps: 1_000_000_000,
            peer_listen: Spanned::new(0..0, String::new()),
            peer_url: None,
            max_copy_egress_bps: 100_000_000,
            max_copy_ingress_bps: 100_000_000,
        }
    }
}

impl fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterConfig")
            .field("master", self.master.get_ref())
            .field("node_id", &self.node_id)
            .field("rtsp_url", &self.rtsp_url)
            .field("max_sessions", &self.max_sessions)
            .field("max_egress_bps", &self.max_egress_bps)
            .finish_non_exhaustive()
    }
}

impl ClusterConfig {
    /// The peer server's address, or `None` when it is off.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.peer_listen.get_ref().parse().ok()
    }

    pub(super) fn problems(&self, found: &mut Found, rtsp_listen: Option<SocketAddr>) {
        match url::Url::parse(self.master.get_ref()) {
            Ok(url) if url.scheme() == "http" && url.host().is_some() => {}
            _ => found.add(
                "cluster.master",
                format!(
                    "`{}` is not the master's control URL (e.g. \"http://10.0.0.1:8566\")",
                    self.master.get_ref()
                ),
            ),
        }
        let id = &self.node_id;
        if id.is_empty()
            || id.len() > 64
            || !id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            found.add(
                "cluster.node_id",
                "must be 1 to 64 letters, digits, '-', '_' or '.'",
            );
        }
        match &self.rtsp_url {
            Some(text) => match url::Url::parse(text) {
                Ok(url)
                    if url.scheme() == "rtsp"
                        && url.host().is_some()
                        && matches!(url.path(), "" | "/") => {}
                _ => found.add(
                    "cluster.rtsp_url",
                    format!("`{text}` is not rtsp://host[:port] (e.g. \"rtsp://10.0.0.2:8554\")"),
                ),
            },
            None => {
                if rtsp_listen.is_some_and(|a| a.ip().is_unspecified()) {
                    found.add(
                        "cluster.rtsp_url",
                        "missing: rtsp.listen is a wildcard address, so the URL players are sent to must be given",
                    );
                }
            }
        }
        token_problems(&self.token, "cluster.token", found);
        if self.max_sessions == Some(0) {
            found.add("cluster.max_sessions", "must be > 0");
        }
        if self.max_egress_bps == 0 {
            found.add("cluster.max_egress_bps", "must be > 0");
        }
        let peer_listen = self.peer_listen.get_ref();
        if !peer_listen.is_empty() {
            match self.peer_addr() {
                None => found.add(
                    "cluster.peer_listen",
                    format!("`{peer_listen}` is not an address:port (e.g. \"10.0.0.2:8567\"), or \"\" to serve no copies"),
                ),
                Some(addr) if addr.ip().is_unspecified() && self.peer_url.is_none() => found.add(
                    "cluster.peer_url",
                    "missing: peer_listen is a wildcard address, so the URL peers use must be given",
                ),
                Some(_) => {}
            }
        }
        if let Some(text) = &self.peer_url {
            match url::Url::parse(text) {
                Ok(url)
                    if url.scheme() == "http"
                        && url.host().is_some()
                        && matches!(url.path(), "" | "/") => {}
                _ => found.add(
                    "cluster.peer_url",
                    format!("`{text}` is not http://host:port (e.g. \"http://10.0.0.2:8567\")"),
                ),
            }
        }
    }
}

/// The cluster token travels as `authorization: Bearer <token>`.
fn token_problems(token: &str, key: &str, found: &mut Found) {
    if token.len() < 16 {
        found.add(key, "must be at least 16 characters (a shared secret)");
    } else if token.trim() != token || !token.chars().all(|c| c.is_ascii_graphic()) {
        // Never echo it.
        found.add(key, "must be printable ASCII without spaces");
    }
}
