//! Node-to-node copies (issue 13) as the tests see them: nodes with a peer
//! server, the master's `/api/v1/copies`, sessions held to fill a node up,
//! a process's I/O counters sampled over time (the bytes a source served,
//! a destination received) and the rates they show, stored titles checked
//! (`cache verify`) and compared record for record (`cache export`).

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::admin_client::{admin_request, AdminResponse};
use super::cluster::{cluster_section, poll_until, Cluster, Master, Node, CLUSTER_TOKEN};
use super::processes::Output;
use super::proxy::{run_streamcache, Mount};
use super::rtsp_client::RtspConn;
use super::temp_dir;

/// A master config ([`Master::config`]) with `lines` added to `[master]`
/// (e.g. `copy_link_bps = 20000000`).
pub fn master_config_with(mounts: &[Mount], lines: &str) -> String {
    Master::config(mounts).replacen(
        "retry_after_secs = 2\n",
        &format!("retry_after_secs = 2\n{lines}"),
        1,
    )
}

/// How a node of a copy test is set up.
#[derive(Clone, Debug)]
pub struct NodeSetup {
    pub id: &'static str,
    /// Lines added to its `[cluster]` section (`peer_listen`, caps, ...).
    pub cluster: String,
    /// `[cache] segment_secs`: small on a source, so that a copy out of it
    /// stores (and reports) its progress segment by segment.
    pub segment_secs: u32,
}

impl NodeSetup {
    /// A node with a peer server on a port the OS picks.
    pub fn peer(id: &'static str) -> NodeSetup {
        NodeSetup {
            id,
            cluster: "peer_listen = \"127.0.0.1:0\"\n".into(),
            segment_secs: 60,
        }
    }

    /// Adds `line` to the `[cluster]` section.
    pub fn with(mut self, line: &str) -> NodeSetup {
        self.cluster += line;
        self.cluster += "\n";
        self
    }

    pub fn segment_secs(mut self, secs: u32) -> NodeSetup {
        self.segment_secs = secs;
        self
    }
}

/// A master (with `master_lines` in `[master]`) and a node per setup, in
/// order; returns once every node is up. Player sessions time out after
/// 600 s, so that a session held to fill a node stays for the whole test.
pub fn copy_cluster(mounts: &[Mount], master_lines: &str, nodes: &[NodeSetup]) -> Cluster {
    let master = Master::start(&master_config_with(mounts, master_lines));
    let nodes: Vec<Node> = nodes
        .iter()
        .map(|setup| {
            Node::start(&master, setup.id, mounts, |config| {
                // The [cluster] section comes last: lines appended are in it.
                debug_assert!(config.ends_with(&cluster_section(&master.control_url(), setup.id)));
                config
                    .replacen("session_timeout_secs = 60", "session_timeout_secs = 600", 1)
                    .replacen(
                        "segment_secs = 60",
                        &format!("segment_secs = {}", setup.segment_secs),
                        1,
                    )
                    + &setup.cluster
            })
        })
        .collect();
    let n = nodes.len();
    let cluster = Cluster { master, nodes };
    cluster.master.wait_nodes_up(n, Duration::from_secs(20));
    cluster
}

impl Node {
    /// The port of the node's peer server (from its `listening` log line).
    pub fn peer_port(&self) -> u16 {
        let logs = self.logs();
        let line = logs
            .lines()
            .find(|l| l.contains("listening") && l.contains(" peer="))
            .unwrap_or_else(|| panic!("{}: no listening line with peer=\n{logs}", self.id));
        let addr = line
            .split("peer=")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_default();
        super::port_of(addr).unwrap_or_else(|| panic!("{}: peer={addr}: no peer server", self.id))
    }

    /// `GET path` on the node's peer server, with the cluster token.
    pub fn peer_get(&self, path: &str) -> AdminResponse {
        let token = format!("Bearer {CLUSTER_TOKEN}");
        admin_request(self.peer_port(), "GET", path, &[("Authorization", &token)])
    }

    /// `streamcache cache ARGS...` on the node's store (as its config says).
    pub fn cache_command(&self, args: &[&str]) -> Output {
        let config = self.config_path().to_str().unwrap().to_owned();
        let mut all = vec!["cache", "--config", config.as_str()];
        all.extend_from_slice(args);
        run_streamcache(&all)
    }

    /// `streamcache cache verify KEY` passes on the node's store.
    pub fn assert_verifies(&self, key: &str) {
        let out = self.cache_command(&["verify", key]);
        assert!(
            out.success() && out.stdout.starts_with("ok:"),
            "cache verify on {}: {out:?}",
            self.id
        );
    }

    /// The title `key` as `streamcache cache export --format ts` writes it
    /// from the node's store: the same records give the same bytes.
    pub fn export_ts(&self, key: &str) -> Vec<u8> {
        let dir = temp_dir();
        let out = dir.path().join("title.ts");
        let run = self.cache_command(&["export", key, out.to_str().unwrap(), "--format", "ts"]);
        assert!(run.success(), "cache export on {}: {run:?}", self.id);
        std::fs::read(&out).unwrap()
    }

    /// Holds a player session on the node: DESCRIBE and SETUP of `path`
    /// (no PLAY, so no media flows), kept while the connection lives.
    pub fn hold_session(&self, path: &str) -> RtspConn {
        let mut conn = RtspConn::connect(self.port());
        let (_, setup) = conn.describe_and_setup_first(&self.url(path));
        assert_eq!(setup.status(), 200, "SETUP on {}: {setup:?}", self.id);
        conn
    }

    /// The directory of title `key` in the node's store.
    pub fn title_dir(&self, key: &str) -> std::path::PathBuf {
        std::fs::read_dir(self.cache_dir())
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| {
                std::fs::read_to_string(p.join("meta.json"))
                    .is_ok_and(|m| m.contains(&format!("\"{key}\"")))
            })
            .unwrap_or_else(|| panic!("{} holds no {key}", self.id))
    }
}

impl Master {
    /// `/api/v1/copies`.
    pub fn copies(&self) -> Value {
        self.admin_json("/api/v1/copies")
    }

    /// Waits until the master counts node `id` at its session cap (so that
    /// placement passes it over).
    pub fn wait_full(&self, id: &str, limit: Duration) {
        let full = poll_until(limit, || {
            self.node(id).is_some_and(|n| {
                n["sessions"].as_u64().unwrap_or(0) >= n["max_sessions"].as_u64().unwrap_or(1)
            })
        });
        assert!(full, "{id} never full: {:#?}", self.node(id));
    }

    /// The node a DESCRIBE of `path` at the master is sent to (its id).
    pub fn place(&self, cluster: &Cluster, path: &str) -> String {
        let redirect = self.describe(path, &[]);
        assert_eq!(redirect.status, 302, "{redirect:?}");
        let location = redirect.location.unwrap();
        cluster
            .node_of(&location)
            .unwrap_or_else(|| panic!("{location} is no running node"))
            .id
            .clone()
    }

    /// Waits until no copy of `key` runs and at least `n` have ended;
    /// returns the ended ones (oldest first).
    pub fn wait_copies_ended(&self, key: &str, n: usize, limit: Duration) -> Vec<Value> {
        let mut ended = Vec::new();
        let settled = poll_until(limit, || {
            let copies = self.copies();
            let running = entries(&copies["running"], key);
            ended = entries(&copies["recent"], key);
            running.is_empty() && ended.len() >= n
        });
        assert!(
            settled,
            "copies of {key} did not end within {limit:?}: {:#}",
            self.copies()
        );
        ended
    }
}

/// The entries of `list` (running or recent copies) of title `key`.
pub fn entries(list: &Value, key: &str) -> Vec<Value> {
    list.as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["key"] == key)
        .cloned()
        .collect()
}

/// XORs the byte at `offset` of `path` with 0x40 (as the cache crate's
/// damage tests do), in place, while whoever has the file open runs on.
pub fn flip_byte(path: &Path, offset: u64) {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8];
    file.read_exact_at(&mut b, offset).unwrap();
    file.write_all_at(&[b[0] ^ 0x40], offset).unwrap();
}

/// A process's cumulative I/O from `/proc/PID/io`: bytes its read and
/// write system calls moved (sockets included).
#[derive(Clone, Copy, Debug, Default)]
pub struct Io {
    pub rchar: u64,
    pub wchar: u64,
}

pub fn proc_io(pid: u32) -> Option<Io> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
    };
    Some(Io {
        rchar: field("rchar:")?,
        wchar: field("wchar:")?,
    })
}

/// When (s since the start) and each process's counters then.
type IoSample = (f64, HashMap<u32, Io>);
/// `(t, bytes)` samples of one counter.
type Series = Vec<(f64, u64)>;

/// Samples, in threads of its own until stopped, the I/O counters of some
/// processes every 20 ms and, given the master's admin port, the bytes of
/// every running copy in `/api/v1/copies` every 25 ms (a node reports them
/// every report period: the first sample of each new value is kept).
pub struct Sampler {
    pub started: Instant,
    stop: Arc<AtomicBool>,
    io: Arc<Mutex<Vec<IoSample>>>,
    copies: Arc<Mutex<HashMap<u64, Series>>>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl Sampler {
    pub fn start(pids: &[u32], master_admin: Option<u16>) -> Sampler {
        let started = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let io = Arc::new(Mutex::new(Vec::new()));
        let copies = Arc::new(Mutex::new(HashMap::new()));
        let mut threads = Vec::new();
        {
            let (stop, io, pids) = (Arc::clone(&stop), Arc::clone(&io), pids.to_vec());
            threads.push(thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let at = started.elapsed().as_secs_f64();
                    let now = pids
                        .iter()
                        .filter_map(|&pid| Some((pid, proc_io(pid)?)))
                        .collect();
                    io.lock().unwrap().push((at, now));
                    thread::sleep(Duration::from_millis(20));
                }
            }));
        }
        if let Some(port) = master_admin {
            let (stop, copies) = (Arc::clone(&stop), Arc::clone(&copies));
            threads.push(thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let answer = admin_request(port, "GET", "/api/v1/copies", &[]);
                    let at = started.elapsed().as_secs_f64();
                    let running = answer.json()["running"].as_array().cloned();
                    let mut copies = copies.lock().unwrap();
                    for copy in running.into_iter().flatten() {
                        let (Some(id), Some(bytes)) = (copy["id"].as_u64(), copy["bytes"].as_u64())
                        else {
                            continue;
                        };
                        let series: &mut Series = copies.entry(id).or_default();
                        if series.last().is_none_or(|&(_, last)| last != bytes) {
                            series.push((at, bytes));
                        }
                    }
                    drop(copies);
                    thread::sleep(Duration::from_millis(25));
                }
            }));
        }
        Sampler {
            started,
            stop,
            io,
            copies,
            threads,
        }
    }

    /// Seconds since the sampler started.
    pub fn now(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// `(t, counter)` of process `pid` between `from` and `to` seconds.
    pub fn io_series(&self, pid: u32, from: f64, to: f64, pick: fn(&Io) -> u64) -> Vec<(f64, u64)> {
        self.io
            .lock()
            .unwrap()
            .iter()
            .filter(|(t, _)| (from..=to).contains(t))
            .filter_map(|(t, io)| Some((*t, pick(io.get(&pid)?))))
            .collect()
    }

    /// `(t, bytes)` of copy `id` between `from` and `to` seconds: when each
    /// new value of its progress was first seen.
    pub fn copy_series(&self, id: u64, from: f64, to: f64) -> Vec<(f64, u64)> {
        self.copies
            .lock()
            .unwrap()
            .get(&id)
            .into_iter()
            .flatten()
            .filter(|(t, _)| (from..=to).contains(t))
            .copied()
            .collect()
    }

    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Rates measured off a sampled byte counter.
#[derive(Clone, Copy, Debug)]
pub struct Rates {
    /// The highest rate over any window of at least the given length
    /// between two samples, bit/s.
    pub max_bps: f64,
    /// Over the whole series, bit/s.
    pub mean_bps: f64,
    /// The series' length, s.
    pub secs: f64,
}

/// The rates of `series` (`(t, bytes)`) over windows of `min_window` s or
/// more: bytes counted between two samples over the time between them.
pub fn rates(series: &[(f64, u64)], min_window: f64) -> Rates {
    let mut max_bps: f64 = 0.0;
    for (i, &(t0, b0)) in series.iter().enumerate() {
        for &(t1, b1) in &series[i + 1..] {
            if t1 - t0 >= min_window {
                max_bps = max_bps.max((b1 - b0) as f64 * 8.0 / (t1 - t0));
            }
        }
    }
    let (first, last) = (series.first(), series.last());
    let (secs, mean_bps) = match (first, last) {
        (Some(&(t0, b0)), Some(&(t1, b1))) if t1 > t0 => {
            (t1 - t0, (b1 - b0) as f64 * 8.0 / (t1 - t0))
        }
        _ => (0.0, 0.0),
    };
    Rates {
        max_bps,
        mean_bps,
        secs,
    }
}

/// Plays `path` directly on each of the nodes `ids` at once until each
/// stores it complete (returning each play's video frame hashes), then
/// holds a session on each and waits until the master counts them full
/// (their `max_sessions` is 1) and knows them as complete holders of
/// `key`: a player of it sent via the master then goes to another node.
pub fn fill_and_fill_up(
    cluster: &Cluster,
    ids: &[&str],
    path: &str,
    key: &str,
) -> (Vec<Vec<String>>, Vec<RtspConn>) {
    let limit = Duration::from_secs(60);
    let played: Vec<Vec<String>> = thread::scope(|s| {
        let plays: Vec<_> = ids
            .iter()
            .map(|id| {
                let node = cluster.node(id);
                s.spawn(move || {
                    let url = node.url(path);
                    let video = super::players::framemd5(&url, Some("tcp"), "0:v", &[]);
                    node.wait_cached(&url, limit);
                    video
                })
            })
            .collect();
        plays.into_iter().map(|p| p.join().unwrap()).collect()
    });
    let held = ids
        .iter()
        .map(|id| cluster.node(id).hold_session(path))
        .collect();
    for id in ids {
        cluster.master.wait_full(id, limit);
        let known = poll_until(limit, || cluster.master.holds_complete(key, id));
        assert!(
            known,
            "the master never learnt that {id} holds {key}: {:#}",
            cluster.master.admin_json("/api/v1/content")
        );
    }
    (played, held)
}
