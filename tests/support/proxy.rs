//! The real `streamcache serve` daemon with a generated config, on ports
//! the OS picks.

use std::io::Write as _;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::net::loopback_url;
use super::processes::{kill_group, run_bounded, send_signal, Lines, Output};
use super::rtsp_client::RtspConn;
use super::{temp_dir, PLAYER_LIMIT, START_LIMIT};

/// A proxy mount, rendered by [`Proxy::config`] as a `[[mount]]` table.
#[derive(Clone, Debug)]
pub struct Mount {
    pub path: String,
    pub origin: String,
    /// `"auto"`, `"udp"` or `"tcp"`: the transport toward the origin.
    pub transport: String,
    pub credentials: Option<(String, String)>,
    /// TOML appended after the mount's keys, e.g. its `[[mount.user]]`
    /// tables (as `streamcache hash-password` prints them).
    pub extra: String,
}

impl Mount {
    pub fn new(path: &str, origin: &str) -> Mount {
        Mount {
            path: path.into(),
            origin: origin.into(),
            transport: "auto".into(),
            credentials: None,
            extra: String::new(),
        }
    }

    /// Appends `toml` after the mount's keys (e.g. `[[mount.user]]` tables).
    pub fn extra(mut self, toml: &str) -> Mount {
        self.extra = toml.into();
        self
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

/// The listen address of every listener in [`Proxy::config`].
const ANY_LOOPBACK_PORT: &str = "127.0.0.1:0";

/// The addresses in the daemon's start-up line `listening rtsp=IP:PORT
/// admin=IP:PORT|off`, from its log; `None` before that line.
pub fn listening_addrs(log: &str) -> Option<(SocketAddr, Option<SocketAddr>)> {
    let line = log.lines().find(|l| l.contains(" listening rtsp="))?;
    let field = |key: &str| {
        let start = line.find(key)? + key.len();
        line[start..].split_whitespace().next()
    };
    let rtsp = field(" rtsp=")?.parse().ok()?;
    Some((rtsp, field(" admin=")?.parse().ok()))
}

/// The real `streamcache serve` daemon, killed with its process group on drop.
pub struct Proxy {
    child: Child,
    port: u16,
    /// The admin HTTP port, unless the config disables the admin API.
    admin_port: Option<u16>,
    /// The HTTP viewers' port, when the config has `[http] listen`.
    http_port: Option<u16>,
    config_path: PathBuf,
    lines: Lines,
    /// Holds the config file.
    _dir: tempfile::TempDir,
}

impl Proxy {
    /// A complete config in the format of `etc/streamcache.toml`, with
    /// test-friendly timings, the RTSP and admin listeners on ports the OS
    /// picks (`127.0.0.1:0`; [`Proxy::start`] learns which). Each key is on
    /// its own `key = value` line, so a test can adjust one with
    /// `str::replace`, e.g. `.replace("linger_secs = 2", "linger_secs = 0")`.
    pub fn config(cache_dir: &Path, mounts: &[Mount]) -> String {
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
             listen = {listen}\n",
            listen = q(ANY_LOOPBACK_PORT),
            dir = q(cache_dir.to_str().expect("cache dir path is UTF-8")),
        );
        cfg += &mounts_toml(mounts);
        cfg
    }

    /// Writes `config_toml` to a file, runs `streamcache serve --config FILE
    /// --ready-file READY` and waits until the daemon writes READY: every
    /// listener is bound then, and READY names their addresses. (Not by
    /// connecting: a probe connection would count against max_connections.)
    pub fn start(config_toml: &str) -> Proxy {
        Proxy::start_under(config_toml, &[])
    }

    /// As [`Proxy::start`], the daemon run by the command `wrapper` (e.g.
    /// `["prlimit", "--nofile=512:512", "--"]`, which execs it).
    pub fn start_under(config_toml: &str, wrapper: &[&str]) -> Proxy {
        let dir = temp_dir();
        let config = dir.path().join("streamcache.toml");
        std::fs::write(&config, config_toml).unwrap();
        let started = start_daemon("serve", &config, wrapper, config_toml);
        Proxy {
            port: started
                .port("rtsp")
                .expect("the ready file names the RTSP address"),
            admin_port: started.port("admin"),
            http_port: started.port("http"),
            child: started.child,
            config_path: config,
            lines: started.lines,
            _dir: dir,
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The daemon's process id (it is its process group's leader).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The admin HTTP port, if the config enabled the admin API.
    pub fn admin_port(&self) -> Option<u16> {
        self.admin_port
    }

    /// The HTTP viewers' port; panics unless the config has `[http] listen`.
    pub fn http_port(&self) -> u16 {
        self.http_port
            .expect("the proxy's config has [http] listen")
    }

    /// `http://127.0.0.1:PORT/PATH` on the HTTP viewers' listener.
    pub fn http_url(&self, path: &str) -> String {
        format!(
            "http://127.0.0.1:{}/{}",
            self.http_port(),
            path.trim_start_matches('/')
        )
    }

    /// The configuration file the daemon was started with (a test may rewrite
    /// it and ask for a reload). Its listeners are on port 0.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// The configuration with the bound addresses in place of port 0, for
    /// commands that find the running daemon through its config file
    /// (`streamcache cache purge` asks its admin API).
    pub fn config_as_bound(&self) -> String {
        let text = std::fs::read_to_string(&self.config_path).unwrap();
        let line = |port: u16| format!("listen = \"127.0.0.1:{port}\"");
        let zero = format!("listen = \"{ANY_LOOPBACK_PORT}\"");
        // [rtsp] comes first in the file, [admin] after it.
        let text = text.replacen(&zero, &line(self.port), 1);
        match self.admin_port {
            Some(port) => text.replacen(&zero, &line(port), 1),
            None => text,
        }
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

impl Proxy {
    /// Waits until a log line contains any of `needles`; returns whether one
    /// did.
    pub fn wait_log_any(&self, needles: &[&str], limit: Duration) -> bool {
        self.lines.wait_until(limit, |lines| {
            lines.iter().any(|l| needles.iter().any(|n| l.contains(n)))
        })
    }
}

/// The `[[mount]]` tables of `mounts`, as [`Proxy::config`] (and a cluster
/// master's config) writes them.
pub fn mounts_toml(mounts: &[Mount]) -> String {
    let q = |s: &str| toml::Value::String(s.into()).to_string();
    let mut cfg = String::new();
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
        cfg += &m.extra;
    }
    cfg
}

/// A daemon process started by [`start_daemon`], its listeners bound.
pub(super) struct Started {
    pub child: Child,
    pub lines: Lines,
    /// The ready file's JSON (`{"rtsp": "IP:PORT", ...}`).
    pub ready: serde_json::Value,
}

impl Started {
    /// The port of the ready file's address `key`, if it names one.
    pub fn port(&self, key: &str) -> Option<u16> {
        let addr = self.ready[key].as_str()?;
        let addr: SocketAddr = addr
            .parse()
            .unwrap_or_else(|e| panic!("ready file {key}: {addr}: {e}"));
        Some(addr.port())
    }
}

/// Runs `streamcache SUBCOMMAND --config CONFIG --ready-file READY` (under
/// the command `wrapper`, if any) in its own process group and waits until
/// it writes READY: every listener is bound then, and READY names their
/// addresses. (Not by connecting: a probe connection would count against
/// max_connections.) `config_toml` is only shown if it fails to start.
pub(super) fn start_daemon(
    subcommand: &str,
    config: &Path,
    wrapper: &[&str],
    config_toml: &str,
) -> Started {
    let ready_file = config.with_extension("ready.json");
    let _ = std::fs::remove_file(&ready_file);
    let binary = env!("CARGO_BIN_EXE_streamcache");
    let mut command = match wrapper.split_first() {
        Some((program, args)) => {
            let mut command = Command::new(program);
            command.args(args).arg(binary);
            command
        }
        None => Command::new(binary),
    };
    let mut child = command
        .arg(subcommand)
        .arg("--config")
        .arg(config)
        .arg("--ready-file")
        .arg(&ready_file)
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
        )
        // Nothing that turns colour off but the pipe itself: the daemon
        // must not colour what is not a terminal (proxy_config.rs checks).
        .env_remove("NO_COLOR")
        .env_remove("JOURNAL_STREAM")
        .env_remove("INVOCATION_ID")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("spawn streamcache");
    let lines = Lines::default();
    lines.collect(child.stdout.take().unwrap(), "");
    lines.collect(child.stderr.take().unwrap(), "");

    let deadline = Instant::now() + START_LIMIT;
    // The daemon renames the file into place: once there, it is whole.
    let ready = loop {
        if let Ok(text) = std::fs::read_to_string(&ready_file) {
            break text;
        }
        let exited = child.try_wait().ok().flatten();
        if exited.is_some() || Instant::now() > deadline {
            kill_group(&mut child);
            thread::sleep(Duration::from_millis(100)); // let the readers drain
            panic!(
                "streamcache {subcommand} did not get ready (exit {exited:?}):\n{lines:?}\n  config:\n{config_toml}"
            );
        }
        thread::sleep(Duration::from_millis(20));
    };
    let ready = serde_json::from_str(&ready)
        .unwrap_or_else(|e| panic!("ready file is not JSON ({e}): {ready}"));
    // The daemon logs `listening` (after every start-up warning) before it
    // writes the ready file, but our reader threads may not have taken the
    // lines off the pipe yet: a test reading the start-up log must find it.
    let left = deadline.saturating_duration_since(Instant::now());
    let logged = lines.wait_until(left, |lines| lines.iter().any(|l| l.contains("listening")));
    assert!(
        logged,
        "no `listening` line from streamcache {subcommand}:\n{lines:?}"
    );
    Started {
        child,
        lines,
        ready,
    }
}

/// The `[[mount.user]]` lines `streamcache hash-password [--realm R] USER`
/// prints for `password` (given on its stdin).
pub fn hash_password_lines(realm: Option<&str>, user: &str, password: &str) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_streamcache"));
    cmd.arg("hash-password");
    if let Some(realm) = realm {
        cmd.args(["--realm", realm]);
    }
    let mut child = cmd
        .arg(user)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn streamcache hash-password");
    writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "hash-password failed: {out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(!stdout.contains(password), "{stdout}");
    stdout
}
