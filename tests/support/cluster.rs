//! A cluster as real processes on loopback: one `streamcache master` and
//! nodes (`streamcache serve` with a `[cluster]` section), each on ports the
//! OS picks; kill -9 and restart on the same ports (and, for a node, the
//! same id and cache directory); the master's admin API and a raw DESCRIBE
//! to its RTSP port.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Child;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::admin_client::{admin_request, AdminResponse};
use super::net::loopback_url;
use super::origin::Origin;
use super::processes::{kill_group, Lines};
use super::proxy::{mounts_toml, start_daemon, Mount, Proxy};
use super::rtsp_client::{RtspConn, RtspMessage};
use super::temp_dir;

/// The cluster token of every test cluster (at least 16 characters).
pub const CLUSTER_TOKEN: &str = "cluster-test-token-0123456789";
/// Nodes report this often in the test clusters: short, for quick tests.
pub const REPORT_PERIOD: Duration = Duration::from_millis(300);
/// Unanswered polls after which the master calls a node down.
pub const DOWN_AFTER_POLLS: u32 = 2;
/// The listen address of every listener in the generated configs.
const ANY_PORT: &str = "\"127.0.0.1:0\"";

/// The real `streamcache master`, killed with its process group on drop.
pub struct Master {
    child: Child,
    rtsp_port: u16,
    control_port: u16,
    admin_port: Option<u16>,
    config_path: PathBuf,
    /// The config as first written (listeners on port 0).
    config: String,
    lines: Lines,
    /// The logs of the runs before a restart.
    earlier: Vec<String>,
    _dir: tempfile::TempDir,
}

impl Master {
    /// A master config with test timings (a [`REPORT_PERIOD`] report
    /// period, down after [`DOWN_AFTER_POLLS`] polls), every listener on
    /// port 0, the admin API on, and `mounts`. One key per line, so a test
    /// may `str::replace` one.
    pub fn config(mounts: &[Mount]) -> String {
        format!(
            "[master]\n\
             listen = {ANY_PORT}\n\
             control_listen = {ANY_PORT}\n\
             token = \"{CLUSTER_TOKEN}\"\n\
             report_period_ms = {period}\n\
             down_after_polls = {DOWN_AFTER_POLLS}\n\
             egress_window_secs = 5\n\
             prepare_timeout_ms = 3000\n\
             player_bitrate_bps = 4000000\n\
             retry_after_secs = 2\n\
             \n\
             [admin]\n\
             listen = {ANY_PORT}\n\
             {mounts}",
            period = REPORT_PERIOD.as_millis(),
            mounts = mounts_toml(mounts),
        )
    }

    /// Writes `config_toml`, runs `streamcache master --config FILE
    /// --ready-file READY` and waits for READY (`{"rtsp", "control",
    /// "admin"}`).
    pub fn start(config_toml: &str) -> Master {
        let dir = temp_dir();
        let config_path = dir.path().join("master.toml");
        std::fs::write(&config_path, config_toml).unwrap();
        let started = start_daemon("master", &config_path, &[], config_toml);
        Master {
            rtsp_port: started.port("rtsp").expect("the ready file names rtsp"),
            control_port: started
                .port("control")
                .expect("the ready file names control"),
            admin_port: started.port("admin"),
            child: started.child,
            config_path,
            config: config_toml.to_owned(),
            lines: started.lines,
            earlier: Vec::new(),
            _dir: dir,
        }
    }

    pub fn rtsp_port(&self) -> u16 {
        self.rtsp_port
    }

    pub fn control_port(&self) -> u16 {
        self.control_port
    }

    /// The master's admin API port.
    pub fn admin_port(&self) -> Option<u16> {
        self.admin_port
    }

    /// What a node's `[cluster] master` names: `http://127.0.0.1:PORT`.
    pub fn control_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.control_port)
    }

    /// `rtsp://127.0.0.1:PORT/PATH` on the master's player port.
    pub fn url(&self, path: &str) -> String {
        loopback_url(self.rtsp_port, path)
    }

    /// `kill -9` the master (its whole process group); its log stays.
    pub fn kill9(&mut self) {
        kill_group(&mut self.child);
    }

    /// Starts the master again (killing it first if it still runs) on the
    /// ports the first run bound: the config is written again with them in
    /// place of port 0, so that the nodes find it where it was.
    pub fn restart(&mut self) {
        kill_group(&mut self.child);
        let bound = |text: String, key: &str, port: Option<u16>| match port {
            Some(port) => text.replacen(
                &format!("{key} = {ANY_PORT}"),
                &format!("{key} = \"127.0.0.1:{port}\""),
                1,
            ),
            None => text,
        };
        // [master] listen comes first, then control_listen, then [admin].
        let text = bound(self.config.clone(), "\nlisten", Some(self.rtsp_port));
        let text = bound(text, "control_listen", Some(self.control_port));
        let text = bound(text, "\nlisten", self.admin_port);
        std::fs::write(&self.config_path, &text).unwrap();
        let started = start_daemon("master", &self.config_path, &[], &text);
        assert_eq!(started.port("rtsp"), Some(self.rtsp_port));
        assert_eq!(started.port("control"), Some(self.control_port));
        self.earlier.extend(self.lines.snapshot());
        self.child = started.child;
        self.lines = started.lines;
    }

    /// The log of the current run.
    pub fn logs(&self) -> String {
        self.lines.snapshot().join("\n")
    }

    /// Waits until a log line of the current run contains `needle`.
    pub fn wait_log(&self, needle: &str, limit: Duration) -> bool {
        self.lines
            .wait_until(limit, |lines| lines.iter().any(|l| l.contains(needle)))
    }

    /// `GET path` on the master's admin API.
    pub fn admin_get(&self, path: &str) -> AdminResponse {
        let port = self
            .admin_port
            .expect("the master's config enables [admin]");
        admin_request(port, "GET", path, &[])
    }

    /// `GET path`, which must answer 200 with JSON.
    pub fn admin_json(&self, path: &str) -> Value {
        let resp = self.admin_get(path);
        assert_eq!(resp.status, 200, "GET {path} on the master: {resp}");
        resp.json()
    }

    /// `/api/v1/nodes`: every node the master knows.
    pub fn nodes(&self) -> Vec<Value> {
        self.admin_json("/api/v1/nodes")["nodes"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The node `id` as `/api/v1/nodes` shows it, if the master knows it.
    pub fn node(&self, id: &str) -> Option<Value> {
        self.nodes().into_iter().find(|n| n["id"] == id)
    }

    /// The health the master gives node `id` (`"up"`, `"suspect"`, `"down"`).
    pub fn health(&self, id: &str) -> Option<String> {
        Some(self.node(id)?["health"].as_str()?.to_owned())
    }

    /// Waits until node `id`'s health is `health`; panics after `limit`.
    pub fn wait_health(&self, id: &str, health: &str, limit: Duration) {
        let found = super::wait_for(limit, || {
            (self.health(id).as_deref() == Some(health)).then_some(())
        });
        assert!(
            found.is_some(),
            "node {id} never became {health} within {limit:?}: {:#?}\n--- master log:\n{}",
            self.nodes(),
            self.logs()
        );
    }

    /// Waits until at least `n` nodes are up; panics after `limit`.
    pub fn wait_nodes_up(&self, n: usize, limit: Duration) {
        let found = super::wait_for(limit, || {
            let up = self.nodes().iter().filter(|n| n["health"] == "up").count();
            (up >= n).then_some(())
        });
        assert!(
            found.is_some(),
            "fewer than {n} nodes up after {limit:?}: {:#?}\n--- master log:\n{}",
            self.nodes(),
            self.logs()
        );
    }

    /// `/api/v1/content`: the entry of title `key` (its holders), if any.
    pub fn title(&self, key: &str) -> Option<Value> {
        self.admin_json("/api/v1/content")["titles"]
            .as_array()?
            .iter()
            .find(|t| t["key"] == key)
            .cloned()
    }

    /// Whether the content map says node `id` holds title `key` complete.
    pub fn holds_complete(&self, key: &str, id: &str) -> bool {
        self.title(key).is_some_and(|t| {
            t["nodes"]
                .as_array()
                .is_some_and(|ns| ns.iter().any(|n| n["id"] == id && n["complete"] == true))
        })
    }

    /// One raw `DESCRIBE` of `path` at the master (extra `headers`, e.g.
    /// `Authorization`), on a connection of its own.
    pub fn describe(&self, path: &str, headers: &[(&str, &str)]) -> Redirect {
        let mut conn = RtspConn::connect(self.rtsp_port);
        let url = self.url(path);
        let mut all = vec![("Accept", "application/sdp")];
        all.extend_from_slice(headers);
        let answer = conn.request("DESCRIBE", &url, &all);
        Redirect {
            status: answer.status(),
            location: answer.header("Location").map(str::to_owned),
            answer,
        }
    }
}

impl Drop for Master {
    fn drop(&mut self) {
        kill_group(&mut self.child);
        if thread::panicking() {
            eprintln!(
                "--- master log (rtsp port {}, earlier runs first):\n    {}\n{:?}",
                self.rtsp_port,
                self.earlier.join("\n    "),
                self.lines
            );
        }
    }
}

/// The master's answer to a DESCRIBE.
#[derive(Debug)]
pub struct Redirect {
    pub status: u16,
    /// `Location:` of a 302.
    pub location: Option<String>,
    pub answer: RtspMessage,
}

impl Redirect {
    /// The port of the node a 302 sends the player to.
    pub fn node_port(&self) -> Option<u16> {
        let location = self.location.as_deref()?;
        url::Url::parse(location).ok()?.port()
    }
}

/// The `[cluster]` section of node `id` of the master at `master_url`.
pub fn cluster_section(master_url: &str, id: &str) -> String {
    format!(
        "\n[cluster]\n\
         master = \"{master_url}\"\n\
         node_id = \"{id}\"\n\
         token = \"{CLUSTER_TOKEN}\"\n"
    )
}

/// A node: the proxy daemon with a `[cluster]` section, its cache directory
/// kept across restarts.
pub struct Node {
    pub id: String,
    proxy: Option<Proxy>,
    /// The config as bound by the first run (same ports on a restart).
    config: String,
    _cache: tempfile::TempDir,
}

impl Node {
    /// A node `id` of `master` serving `mounts`; `adjust` may change its
    /// config (e.g. `[rtsp] max_sessions`) before it starts.
    pub fn start(
        master: &Master,
        id: &str,
        mounts: &[Mount],
        adjust: impl FnOnce(String) -> String,
    ) -> Node {
        let cache = temp_dir();
        let config = adjust(
            Proxy::config(cache.path(), mounts) + &cluster_section(&master.control_url(), id),
        );
        let proxy = Proxy::start(&config);
        Node {
            id: id.to_owned(),
            config: proxy.config_as_bound(),
            proxy: Some(proxy),
            _cache: cache,
        }
    }

    /// The running daemon (panics between `kill9` and `restart`).
    pub fn proxy(&self) -> &Proxy {
        self.proxy.as_ref().expect("the node runs")
    }

    /// The node's cache directory (kept across restarts).
    pub fn cache_dir(&self) -> &std::path::Path {
        self._cache.path()
    }

    /// `rtsp://127.0.0.1:PORT`: where the master sends its players.
    pub fn rtsp_url(&self) -> String {
        format!("rtsp://127.0.0.1:{}", self.port())
    }

    /// `kill -9` the node.
    pub fn kill9(&mut self) {
        if let Some(proxy) = self.proxy.take() {
            proxy.kill9();
        }
    }

    /// Starts the node again with the same id, cache directory and ports.
    pub fn restart(&mut self) {
        self.kill9();
        let proxy = Proxy::start(&self.config);
        self.proxy = Some(proxy);
    }

    /// The player sessions the node has now (`/api/v1/sessions`).
    pub fn sessions(&self) -> usize {
        let resp = self.admin_get("/api/v1/sessions");
        assert_eq!(resp.status, 200, "{resp}");
        resp.json()["sessions"].as_array().map_or(0, Vec::len)
    }
}

impl std::ops::Deref for Node {
    type Target = Proxy;

    fn deref(&self) -> &Proxy {
        self.proxy()
    }
}

/// One master and its nodes.
pub struct Cluster {
    pub master: Master,
    pub nodes: Vec<Node>,
}

impl Cluster {
    /// A master and `n` nodes (`node-1`, `node-2`, ...) serving `mounts`,
    /// each node's config passed through `adjust`; returns once the master
    /// has every node up.
    pub fn start(mounts: &[Mount], n: usize, adjust: impl Fn(String) -> String) -> Cluster {
        let master = Master::start(&Master::config(mounts));
        let nodes = (1..=n)
            .map(|i| Node::start(&master, &format!("node-{i}"), mounts, &adjust))
            .collect();
        let cluster = Cluster { master, nodes };
        cluster.master.wait_nodes_up(n, Duration::from_secs(20));
        cluster
    }

    /// The node a URL (a `Location`) points at.
    pub fn node_of(&self, location: &str) -> Option<&Node> {
        let port = url::Url::parse(location).ok()?.port()?;
        self.nodes
            .iter()
            .find(|n| n.proxy.as_ref().is_some_and(|p| p.port() == port))
    }

    /// The node with this id.
    pub fn node(&self, id: &str) -> &Node {
        self.nodes.iter().find(|n| n.id == id).expect("a node id")
    }
}

/// The address in a ready file or log field, as a port.
pub fn port_of(addr: &str) -> Option<u16> {
    Some(addr.parse::<SocketAddr>().ok()?.port())
}

/// Polls `probe` until it holds, for up to `limit`; whether it did.
pub fn poll_until(limit: Duration, mut probe: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if probe() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// The mount every test cluster serves: `/o/...` → the origin's `/...`;
/// titles are `/o/vod/NAME` (the origin's `.titles(...)`).
pub fn cluster_mount(origin: &Origin) -> Mount {
    Mount::new("/o", &origin.url("/")).transport("tcp")
}

/// The cache key of `/o/vod/NAME` (the origin URL, as `mounts.rs` keys it).
pub fn cluster_key(origin: &Origin, name: &str) -> String {
    format!("rtsp://127.0.0.1:{}/vod/{name}", origin.port())
}

/// The path of title NAME under [`cluster_mount`].
pub fn cluster_title(name: &str) -> String {
    format!("/o/vod/{name}")
}
