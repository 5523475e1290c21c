//! The Debian package, end to end (issue 5, part 1): build it with
//! `cargo deb` from the binary this test run built, install it with
//! `dpkg -i`, run the installed binary as the service user against a real
//! origin and player, check the unit, then remove and purge it.
//!
//! It changes the machine (a package, a system user), so it runs only as
//! root on Debian (CI: `.ci/run`), unless `STREAMCACHE_TEST_NO_PACKAGE` is
//! set (`scripts/test --no-package`); anywhere else it prints why and passes.
//! Whatever happens, the package is purged before the test ends.

mod support;

use std::io::{BufRead as _, BufReader, Read};
use std::net::TcpStream;
use std::os::linux::net::SocketAddrExt as _;
use std::os::unix::fs::MetadataExt as _;
use std::os::unix::net::{self, UnixDatagram};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use support::*;

const PACKAGE: &str = "streamcache";
const CONFIG: &str = "/etc/streamcache/streamcache.toml";
const UNIT: &str = "/lib/systemd/system/streamcache.service";
const CACHE: &str = "/var/cache/streamcache";
const USER: &str = "streamcache";
const STEP_LIMIT: Duration = Duration::from_secs(300);

fn sh_ok(script: &str) -> bool {
    Command::new("sh")
        .args(["-c", script])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn have(cmd: &str) -> bool {
    sh_ok(&format!("command -v {cmd}"))
}

/// Why this machine cannot run the test, if it cannot.
fn skip_reason() -> Option<String> {
    if std::env::var_os("STREAMCACHE_TEST_NO_PACKAGE").is_some_and(|v| !v.is_empty()) {
        return Some("STREAMCACHE_TEST_NO_PACKAGE is set (scripts/test --no-package)".into());
    }
    // /proc/self belongs to the effective user of this process.
    match std::fs::metadata("/proc/self").map(|m| m.uid()) {
        Ok(0) => {}
        Ok(uid) => {
            return Some(format!(
                "not root (uid {uid}): installing a package needs root"
            ))
        }
        Err(e) => {
            return Some(format!(
                "cannot tell whether this is root (/proc/self: {e})"
            ))
        }
    }
    if !have("dpkg") || !have("dpkg-deb") {
        return Some("not a Debian system (no dpkg)".into());
    }
    None
}

/// `cmd` must succeed within [`STEP_LIMIT`]; returns its output.
fn must(cmd: &mut Command) -> Output {
    let shown = format!("{cmd:?}");
    let out = run_bounded(cmd, STEP_LIMIT);
    assert!(out.success(), "{shown} failed: {out:?}");
    out
}

fn package_status() -> String {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", PACKAGE])
        .output()
        .expect("run dpkg-query");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn user_exists() -> bool {
    sh_ok(&format!("getent passwd {USER}"))
}

fn group_exists() -> bool {
    sh_ok(&format!("getent group {USER}"))
}

/// Purges the package when dropped, so that a failing step cannot leave it
/// (or its user) on the machine.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        if package_status().is_empty() && !user_exists() {
            return;
        }
        let out = run_bounded(Command::new("dpkg").args(["--purge", PACKAGE]), STEP_LIMIT);
        if !out.success() {
            eprintln!("package test: cleanup `dpkg --purge {PACKAGE}` failed: {out:?}");
        }
    }
}

/// The target directory and cargo profile the test binary's `streamcache`
/// was built in: `cargo deb --no-build` must package exactly that binary.
fn built_binary() -> (PathBuf, PathBuf, String) {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_streamcache"));
    let profile_dir = bin.parent().expect("binary in a profile directory");
    let target_dir = profile_dir.parent().expect("profile directory in target");
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => "dev".to_string(),
        Some(name) => name.to_string(),
        None => panic!("unexpected binary path {}", bin.display()),
    };
    (bin.clone(), target_dir.to_path_buf(), profile)
}

/// The installed daemon, run as the service user, killed (group) on drop.
struct Daemon {
    child: Child,
    log: Arc<Mutex<String>>,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = Command::new("sh")
            .args(["-c", &format!("kill -s KILL -- -{}", self.child.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
        if thread::panicking() {
            eprintln!("--- installed daemon log:\n{}", self.log.lock().unwrap());
        }
    }
}

#[test]
fn deb_installs_runs_and_purges() {
    if let Some(reason) = skip_reason() {
        eprintln!("package test skipped: {reason}");
        return;
    }
    assert!(
        package_status().is_empty() && !user_exists(),
        "package `{PACKAGE}` or user `{USER}` already present: this test installs and purges \
         them, run `dpkg --purge {PACKAGE}` first"
    );
    assert!(
        sh_ok("cargo deb --version"),
        "cargo-deb missing: `cargo install cargo-deb --locked` (scripts/test does it)"
    );
    let started = Instant::now();

    // Build the package from the binary this test run built.
    let (bin, target_dir, profile) = built_binary();
    let out_dir = temp_dir();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    must(
        Command::new(&cargo)
            .args([
                "deb",
                "--no-build",
                "--no-strip",
                "--fast",
                "--profile",
                &profile,
            ])
            .arg("--output")
            .arg(out_dir.path())
            .env("CARGO_TARGET_DIR", &target_dir)
            .current_dir(repo_root()),
    );
    let deb = std::fs::read_dir(out_dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .expect("cargo deb wrote a .deb");
    let name = deb.file_name().unwrap().to_string_lossy().into_owned();
    let version = env!("CARGO_PKG_VERSION");
    assert!(
        name.starts_with(&format!("{PACKAGE}_{version}")) && name.ends_with(".deb"),
        "{name}"
    );
    let contents = must(Command::new("dpkg-deb").arg("--contents").arg(&deb)).stdout;
    for path in [
        "./usr/bin/streamcache",
        "./etc/streamcache/streamcache.toml",
        "./lib/systemd/system/streamcache.service",
    ] {
        assert!(
            contents.contains(path),
            "{path} not in the package:\n{contents}"
        );
    }

    // Install.
    let installed = Installed;
    must(Command::new("dpkg").arg("-i").arg(&deb));
    assert_eq!(package_status(), "install ok installed");
    assert_eq!(
        std::fs::read("/usr/bin/streamcache").unwrap(),
        std::fs::read(&bin).unwrap(),
        "the package must hold the binary this test built"
    );
    let conffiles = must(Command::new("dpkg-query").args(["-W", "-f=${Conffiles}", PACKAGE]));
    assert!(
        conffiles.stdout.contains(CONFIG),
        "conffiles: {conffiles:?}"
    );
    let passwd = must(Command::new("getent").args(["passwd", USER])).stdout;
    assert!(
        passwd.contains(&format!(":{CACHE}:")),
        "service user's home: {passwd}"
    );
    assert!(group_exists(), "group {USER} created");

    let out = must(Command::new("/usr/bin/streamcache").arg("--version"));
    assert_eq!(out.stdout.trim(), format!("streamcache {version}"));
    let out = must(Command::new("streamcache").args(["check-config", CONFIG]));
    assert!(out.stdout.contains("valid (0 mounts)"), "{out:?}");

    // The installed binary, as the service user, on a copy of the installed
    // config: loopback ports the OS picks, a temporary cache, one mount on a
    // real origin.
    let origin = Origin::start(OriginOpts::new());
    let work = temp_dir();
    let cache = work.path().join("cache");
    std::fs::create_dir(&cache).unwrap();
    let installed_config = std::fs::read_to_string(CONFIG).unwrap();
    let q = |s: &str| toml::Value::String(s.into()).to_string();
    let config = installed_config
        .replace("listen = \"0.0.0.0:554\"", "listen = \"127.0.0.1:0\"")
        .replace(
            &format!("dir = \"{CACHE}\""),
            &format!("dir = {}", q(cache.to_str().unwrap())),
        )
        // The packaged admin port may be taken by tests running alongside.
        .replace("listen = \"127.0.0.1:8555\"", "listen = \"127.0.0.1:0\"")
        + &format!(
            "\n[[mount]]\npath = \"/pkg\"\norigin = {}\ntransport = \"auto\"\n",
            q(&origin.url("/"))
        );
    assert_ne!(config, installed_config);
    let config_path = work.path().join("streamcache.toml");
    std::fs::write(&config_path, &config).unwrap();
    must(
        Command::new("chown")
            .arg("-R")
            .arg(format!("{USER}:{USER}"))
            .arg(work.path()),
    );
    must(
        Command::new("streamcache")
            .arg("check-config")
            .arg(&config_path),
    );

    // Readiness as systemd would see it: an abstract NOTIFY_SOCKET (no file
    // permissions involved for the unprivileged daemon).
    let notify_name = format!("streamcache-package-test-{}", std::process::id());
    let notify =
        UnixDatagram::bind_addr(&net::SocketAddr::from_abstract_name(&notify_name).unwrap())
            .expect("bind the notify socket");
    notify
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();

    let mut child = Command::new("setpriv")
        .args([
            "--reuid",
            USER,
            "--regid",
            USER,
            "--clear-groups",
            "--",
            "/usr/bin/streamcache",
            "serve",
            "--config",
        ])
        .arg(&config_path)
        .env("NOTIFY_SOCKET", format!("@{notify_name}"))
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .current_dir(work.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("spawn setpriv (util-linux)");
    let log = Arc::new(Mutex::new(String::new()));
    for stream in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let log = Arc::clone(&log);
        thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                let mut log = log.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
    }
    let mut daemon = Daemon { child, log };

    let mut buf = [0u8; 64];
    let n = notify
        .recv(&mut buf)
        .expect("READY=1 on NOTIFY_SOCKET once the listener is bound");
    assert_eq!(&buf[..n], b"READY=1");
    // The daemon logged the bound addresses before it sent READY=1 (our
    // reader thread may still be catching up).
    let (listen, admin) = wait_for(Duration::from_secs(5), || {
        listening_addrs(&daemon.log.lock().unwrap())
    })
    .unwrap_or_else(|| panic!("no `listening` line:\n{}", daemon.log.lock().unwrap()));
    let port = listen.port();
    let admin_port = admin
        .expect("the packaged config enables the admin API")
        .port();
    assert!(
        TcpStream::connect_timeout(&listen, Duration::from_secs(2)).is_ok(),
        "ready, so the RTSP port accepts connections"
    );

    let url = format!("rtsp://127.0.0.1:{port}/pkg/live");
    let frames = ffprobe_count_frames(&url, "tcp", Some(3));
    assert!(
        frames.video > 0,
        "no video through the installed daemon: {frames:?}"
    );

    // The admin API answers on its port.
    let health = admin_request(admin_port, "GET", "/healthz", &[]);
    assert!(
        health.status == 200 && health.body.contains("\"ok\""),
        "{health}"
    );

    // `systemctl reload` (SIGHUP, as the unit's ExecReload sends it): the
    // daemon, as the service user, re-reads its configuration.
    let _ = Command::new("sh")
        .args(["-c", &format!("kill -s HUP {}", daemon.child.id())])
        .status();
    let deadline = Instant::now() + Duration::from_secs(15);
    while !daemon
        .log
        .lock()
        .unwrap()
        .contains("configuration reloaded")
    {
        assert!(
            Instant::now() < deadline,
            "no reload on SIGHUP:\n{}",
            daemon.log.lock().unwrap()
        );
        thread::sleep(Duration::from_millis(50));
    }

    // Stop it as systemd does (SIGTERM) and expect a clean exit.
    let _ = Command::new("sh")
        .args(["-c", &format!("kill -s TERM {}", daemon.child.id())])
        .status();
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = daemon.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "daemon did not stop on SIGTERM");
        thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "daemon exit on SIGTERM: {status:?}");
    drop(daemon);
    drop(origin);

    verify_unit();

    // `dpkg --remove` keeps the configuration, the cache and the user.
    std::fs::create_dir_all(CACHE).unwrap();
    std::fs::write(Path::new(CACHE).join("marker"), b"cached").unwrap();
    must(Command::new("dpkg").args(["--remove", PACKAGE]));
    assert!(!Path::new("/usr/bin/streamcache").exists());
    assert!(Path::new(CONFIG).exists(), "remove keeps the config");
    assert!(
        Path::new(CACHE).join("marker").exists(),
        "remove keeps the cache"
    );
    assert!(user_exists(), "remove keeps the user");

    // `dpkg --purge` takes them all.
    std::fs::write("/etc/streamcache/streamcache.toml.local-notes", b"x").unwrap();
    must(Command::new("dpkg").args(["--purge", PACKAGE]));
    assert!(package_status().is_empty() || package_status().contains("not-installed"));
    assert!(
        !Path::new("/etc/streamcache").exists(),
        "purge removes /etc/streamcache"
    );
    assert!(!Path::new(CACHE).exists(), "purge removes {CACHE}");
    assert!(!user_exists(), "purge removes user {USER}");
    assert!(!group_exists(), "purge removes group {USER}");
    drop(installed);
    eprintln!("package test: done in {:.1?}", started.elapsed());
}

/// The packaged configuration is valid and is what the package promises;
/// runs everywhere (the install test needs root on Debian).
#[test]
fn packaged_config_and_unit_are_as_promised() {
    let file = repo_root().join("packaging/streamcache.toml");
    let out = run_streamcache(&["check-config", file.to_str().unwrap()]);
    assert!(
        out.success() && out.stdout.contains("valid (0 mounts)"),
        "{out:?}"
    );
    let table: toml::Table = std::fs::read_to_string(&file).unwrap().parse().unwrap();
    assert_eq!(table["rtsp"]["listen"].as_str(), Some("0.0.0.0:554"));
    assert_eq!(table["cache"]["dir"].as_str(), Some(CACHE));
    assert!(!table.contains_key("mount"));

    let unit = std::fs::read_to_string(repo_root().join("packaging/streamcache.service")).unwrap();
    let lines: Vec<&str> = unit.lines().map(str::trim).collect();
    for line in [
        "Type=notify",
        "User=streamcache",
        "CacheDirectory=streamcache",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "LimitNOFILE=65536",
        "ExecStart=/usr/bin/streamcache run --config /etc/streamcache/streamcache.toml",
        "Restart=on-failure",
    ] {
        assert!(lines.contains(&line), "unit lacks `{line}`");
    }
    assert!(
        lines.contains(&"ExecReload=/bin/kill -HUP $MAINPID"),
        "unit reloads by SIGHUP"
    );
}

/// `systemd-analyze verify` on the installed unit, where it can work: it
/// needs systemd's tools, and some containers cannot run it at all (checked
/// on a trivial unit first, so that a real problem of ours still fails).
fn verify_unit() {
    if !have("systemd-analyze") {
        eprintln!("package test: systemd-analyze missing; unit not verified");
        return;
    }
    let scratch = temp_dir();
    let probe = scratch.path().join("streamcache-probe.service");
    std::fs::write(
        &probe,
        "[Unit]\nDescription=probe\n\n[Service]\nType=oneshot\nExecStart=/bin/true\n",
    )
    .unwrap();
    let usable = run_bounded(
        Command::new("systemd-analyze").arg("verify").arg(&probe),
        Duration::from_secs(60),
    );
    if !usable.success() {
        eprintln!(
            "package test: systemd-analyze verify does not work here (even on a trivial unit); \
             unit not verified: {usable:?}"
        );
        return;
    }
    let out = run_bounded(
        Command::new("systemd-analyze").arg("verify").arg(UNIT),
        Duration::from_secs(60),
    );
    let complaints = format!("{}{}", out.stdout, out.stderr);
    assert!(
        out.success() && !complaints.contains("streamcache.service"),
        "systemd-analyze verify {UNIT}: {out:?}"
    );
    eprintln!("package test: systemd-analyze verify {UNIT}: ok");
}
