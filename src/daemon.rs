//! Running the daemon: open the store, bind the listeners, serve until
//! SIGTERM or Ctrl-C.

use std::io::IsTerminal as _;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use streamcache_cache::{Store, StoreConfig};
use streamcache_rtsp::framing::Limits;
use tracing::{info, warn};

use crate::catalog::Catalog;
use crate::config::Config;
use crate::hub::HubSettings;
use crate::metrics::Metrics;
use crate::mounts::{Mounts, OriginTiming};
use crate::sample::SampleOrigin;
use crate::{admin, descriptors, http, listener, node, notify, reload, serve};

/// Opens the configured store. The daemon opens it for writing (and holds
/// its lock); the `cache` inspection commands open it read-only, which is
/// safe while the daemon runs.
pub fn open_store(config: &Config, read_only: bool) -> anyhow::Result<Store> {
    let store_config = StoreConfig {
        budget_bytes: config.cache.disk_budget.0,
        segment_max_bytes: config.cache.segment_size.0,
        segment_max_duration_ns: config.cache.segment_secs.saturating_mul(1_000_000_000),
    };
    let dir = &config.cache.dir;
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create cache directory {}", dir.display()))?;
    let opened = if read_only {
        Store::open_read_only(dir, store_config)
    } else {
        Store::open(dir, store_config)
    };
    let (store, problems) =
        opened.with_context(|| format!("cannot open cache {}", dir.display()))?;
    // Runs cut at damage, titles refused or reclaimed, segments skipped:
    // one line each, naming the file and what was done.
    for problem in problems {
        warn!(problem = %problem, "cache repaired at open");
    }
    Ok(store)
}

/// A disk budget larger than the file system cannot be kept: the disk fills
/// before eviction starts, and recordings stop short (see the writer). Said
/// once at start, naming both sizes, rather than discovered at the first
/// full disk.
fn warn_if_budget_exceeds_disk(store: &Store) {
    let budget = store.config().budget_bytes;
    match store.disk_space() {
        Ok(space) if budget > space.total => warn!(
            dir = %store.root().display(),
            disk_budget = budget,
            filesystem_bytes = space.total,
            "cache.disk_budget is larger than the cache's file system: recordings will stop when the disk is full"
        ),
        Ok(_) => {}
        Err(e) => {
            warn!(dir = %store.root().display(), error = %e, "cannot read the cache file system's size")
        }
    }
}

/// Runs the daemon on the configuration file at `path`; with `ready_file`,
/// writes the bound addresses there once every listener is bound.
pub fn serve(path: &Path, ready_file: Option<&Path>) -> anyhow::Result<ExitCode> {
    // Read once, for both the daemon and the reloader's record of the file.
    let loaded = reload::read(path)?;
    let config = &loaded.config;
    if config.master.is_some() {
        anyhow::bail!(
            "{} has a [master] section: run it with `streamcache master` (or `streamcache run`)",
            path.display()
        );
    }
    init_logging(&config.log.level);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(run_server(&loaded, path, ready_file))?;
    Ok(ExitCode::SUCCESS)
}

async fn run_server(
    loaded: &reload::Loaded,
    path: &Path,
    ready_file: Option<&Path>,
) -> anyhow::Result<()> {
    let config = &loaded.config;
    let store = open_store(config, false)?;
    warn_if_budget_exceeds_disk(&store);
    let mounts = Mounts::from_config(config);
    if mounts.is_empty() {
        warn!("no mounts configured: every request will be answered 404 until [[mount]] sections are added");
    }
    for mount in mounts.iter() {
        info!(path = %mount.path, origin = %mount.origin, transport = ?mount.transport, "mount");
    }
    let timing = OriginTiming::from_config(config);
    let metrics = Arc::new(Metrics::new());
    metrics.watch_store(store.clone());
    let catalog = Catalog::new(
        store,
        timing,
        HubSettings {
            queue_packets: config.rtsp.player_queue_packets,
            linger: timing.linger,
            reconnect_attempts: timing.reconnect_attempts,
            gop_max_bytes: 8 << 20,
            setup_grace: config.rtsp.session_timeout(),
        },
        Duration::from_secs(config.cache.default_fresh_secs),
        Arc::clone(&metrics),
    );
    // Before binding anything: the limits in force must fit in the
    // descriptors the process may open.
    let player_limits = descriptors::apply(serve::limits::PlayerLimits::from_config(&config.rtsp))?;
    // The built-in sample origin starts before the proxy, so that its
    // mounts work from the first request.
    if let Some(addr) = config.sample_origin.listen_addr() {
        let sample = SampleOrigin::bind(addr).await?;
        tokio::spawn(sample.run());
    }
    let listen = config
        .rtsp
        .listen_addr()
        .context("rtsp.listen is not an address")?;
    let listener = serve::bind(listen).await?;
    let local = listener.local_addr().context("listener has no address")?;
    let admin_listener = listener::bind_optional(config.admin.listen_addr(), "the admin API")?;
    let admin_local = admin_listener.as_ref().map(|(_, a)| *a);
    let http_listener = listener::bind_optional(config.http.listen_addr(), "HTTP viewers")?;
    let http_local = http_listener.as_ref().map(|(_, a)| *a);
    let limits = Limits {
        max_message_bytes: usize::try_from(config.rtsp.max_request_bytes.0).unwrap_or(usize::MAX),
        max_headers: config.rtsp.max_headers,
    };
    let server = serve::Server::new(
        catalog,
        mounts,
        metrics,
        limits,
        config.rtsp.session_timeout(),
        local,
        player_limits,
    );
    // A node's peer server, which other nodes copy its titles from.
    let peer_listener =
        listener::bind_optional(config.cluster.as_ref().and_then(|c| c.peer_addr()), "peers")?;
    let peer_local = peer_listener.as_ref().map(|(_, a)| *a);
    if let (Some((listener, _)), Some(cluster)) = (peer_listener, config.cluster.as_ref()) {
        let peer =
            node::peer::PeerServer::new(server.catalog.store().clone(), cluster.token.clone());
        tokio::spawn(admin::serve(listener, peer));
    }
    // A node of a cluster: the control connection to the master runs on
    // its own; serving never waits for it.
    let cluster = config.cluster.as_ref().map(|cluster| {
        let peer_url = peer_local.map(|bound| {
            cluster
                .peer_url
                .clone()
                .unwrap_or_else(|| format!("http://{bound}"))
        });
        let rtsp_url = cluster
            .rtsp_url
            .clone()
            .unwrap_or_else(|| format!("rtsp://{local}"));
        // By default the player session limit in force (`[rtsp]
        // max_sessions`, lowered if the descriptors could not hold it).
        let max_sessions = cluster.max_sessions.unwrap_or_else(|| {
            u32::try_from(server.player_limits.max_sessions).unwrap_or(u32::MAX)
        });
        let status = node::Status::new(cluster, &rtsp_url);
        tokio::spawn(node::run(
            Arc::clone(&server),
            cluster.clone(),
            rtsp_url,
            max_sessions,
            peer_url,
            Arc::clone(&status),
        ));
        status
    });
    // Reload by SIGHUP (`systemctl reload`) or through the admin API.
    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    let reloader = reload::Reloader::new(path, Arc::clone(&server), loaded);
    Arc::clone(&reloader).watch_sighup();
    if let Some((http_listener, _)) = http_listener {
        let viewer = http::Viewer::new(Arc::clone(&server), config.http.segment_cache.0);
        tokio::spawn(http::run(http_listener, viewer));
    }
    if let Some((admin_listener, _)) = admin_listener {
        tokio::spawn(admin::run(
            admin_listener,
            Arc::clone(&server),
            config.admin.token.clone(),
            Some(reloader),
            cluster,
            http_local,
        ));
    }
    // Every listener is bound (connections wait in the backlog until the
    // accept loops run). One line names them all: with `listen =
    // "127.0.0.1:0"` it is where the ports the OS chose are told.
    let admin_shown = admin_local.map_or_else(|| "off".to_owned(), |a| a.to_string());
    let peer_shown = peer_local.map_or_else(|| "off".to_owned(), |a| a.to_string());
    let http_shown = http_local.map_or_else(|| "off".to_owned(), |a| a.to_string());
    info!(rtsp = %local, admin = %admin_shown, peer = %peer_shown, http = %http_shown, "listening");
    if let Some(ready_file) = ready_file {
        let addresses = serde_json::json!({
            "rtsp": local.to_string(),
            "admin": admin_local.map(|a| a.to_string()),
            "peer": peer_local.map(|a| a.to_string()),
            "http": http_local.map(|a| a.to_string()),
        });
        write_ready_file(ready_file, &addresses)?;
    }
    // Tell systemd (Type=notify) we are ready.
    match notify::ready() {
        Ok(true) => info!(%local, "readiness sent to systemd"),
        Ok(false) => {}
        Err(e) => warn!(error = %e, "cannot notify systemd of readiness"),
    }
    tokio::select! {
        result = server.run(listener) => result,
        _ = shutdown_signal() => {
            info!("shutting down");
            Ok(())
        }
    }
}

/// Logs to standard output at the configured level (`RUST_LOG` wins).
pub fn init_logging(level: &str) {
    tracing_subscriber::fmt()
        .with_env_filter(
            // check-config validated the configured level.
            tracing_subscriber::EnvFilter::try_from_default_env()
                .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_ansi(log_colours())
        .init();
}

/// SIGHUP (`systemctl reload`) would end a process that does not handle
/// it: a role with nothing to reload says so instead.
pub fn ignore_sighup(message: &'static str) {
    let Ok(mut hangups) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
    else {
        return;
    };
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            warn!("SIGHUP: {message}");
        }
    });
}

/// Whether the log (on standard output) may be coloured: only for a person
/// at a terminal. Colour codes in a file or the journal are noise; under
/// systemd (`JOURNAL_STREAM`, `INVOCATION_ID`) even a tty output goes to a
/// log; `NO_COLOR` (https://no-color.org) turns colour off when not empty.
fn log_colours() -> bool {
    let set = |name: &str| std::env::var_os(name).is_some_and(|v| !v.is_empty());
    std::io::stdout().is_terminal()
        && !set("NO_COLOR")
        && !set("JOURNAL_STREAM")
        && !set("INVOCATION_ID")
}

/// Writes the bound addresses (`{"rtsp": "IP:PORT", "admin": "IP:PORT" |
/// null}`, the master adds `"control"`) to `path` through a temporary file
/// and a rename, so that a reader polling for the file never sees it half
/// written.
pub fn write_ready_file(path: &Path, addresses: &serde_json::Value) -> anyhow::Result<()> {
    let text = addresses.to_string();
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    std::fs::write(&temporary, text + "\n")
        .and_then(|()| std::fs::rename(&temporary, path))
        .with_context(|| format!("cannot write the ready file {}", path.display()))
}

pub async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
