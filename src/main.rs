//! streamcache: a caching RTSP streaming proxy.
//!
//! The path of a request through the code (see `docs/` and the design notes):
//! `serve` (RTSP server for players) → `catalog` (URL → presentation, one hub
//! per key) → `hub` (one `origin` session, fan-out, recording into the
//! `streamcache_cache` store) → `serve::delivery` (to each player).

mod admin;
mod catalog;
mod config;
mod freshness;
mod hash_password;
mod hub;
mod metrics;
mod mounts;
mod notify;
mod origin;
mod playback;
mod reload;
mod serve;
mod timing;
mod udp_pair;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use streamcache_cache::{Store, StoreConfig};
use streamcache_rtsp::framing::Limits;
use tracing::{info, warn};

use crate::catalog::Catalog;
use crate::config::Config;
use crate::hub::HubSettings;
use crate::metrics::Metrics;
use crate::mounts::{Mounts, OriginTiming};

const DEFAULT_CONFIG: &str = "/etc/streamcache/streamcache.toml";

#[derive(Parser)]
#[command(version, about = "Caching streaming proxy for RTSP origins")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the caching RTSP proxy.
    Serve {
        /// Configuration file.
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Validate a configuration file; prints every problem with its line.
    CheckConfig {
        /// Configuration file.
        file: PathBuf,
    },
    /// Print the `[[mount.user]]` lines for a player, reading the password
    /// from standard input (one line). The secrets are H(user:realm:password):
    /// they stay valid only for that realm.
    HashPassword {
        /// The mount's `realm` (the default unless the mount sets one).
        #[arg(long, default_value = config::DEFAULT_REALM)]
        realm: String,
        /// The player's user name.
        user: String,
    },
    /// Inspect and maintain the cache a configuration points at (safe while
    /// the daemon runs).
    Cache {
        /// Configuration file naming the cache directory.
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        #[command(subcommand)]
        action: CacheAction,
    },
}

#[derive(Subcommand)]
enum CacheAction {
    /// List cached presentations.
    Ls,
    /// Check every record's checksum; exits 1 if anything is corrupt.
    Verify {
        /// Only this presentation key.
        key: Option<String>,
    },
    /// Remove a presentation from the cache.
    Purge {
        key: String,
        /// Remove it even while it is being played or recorded.
        #[arg(long)]
        force: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve { config } => serve(&config),
        Command::CheckConfig { file } => check_config(&file),
        Command::HashPassword { realm, user } => hash_password::run(&realm, &user),
        Command::Cache { config, action } => load(&config).and_then(|c| cache(&c, action)),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("streamcache: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn load(path: &Path) -> anyhow::Result<Config> {
    Ok(Config::load(path)?)
}

fn check_config(path: &Path) -> anyhow::Result<ExitCode> {
    match Config::load(path) {
        Ok(config) => {
            println!(
                "{}: valid ({} mount{})",
                path.display(),
                config.mounts.len(),
                if config.mounts.len() == 1 { "" } else { "s" }
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            for problem in &e.problems {
                println!("{}: {problem}", path.display());
            }
            Ok(ExitCode::FAILURE)
        }
    }
}

/// Opens the configured store. The daemon opens it for writing (and holds
/// its lock); the `cache` inspection commands open it read-only, which is
/// safe while the daemon runs.
fn open_store(config: &Config, read_only: bool) -> anyhow::Result<Store> {
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
    for problem in problems {
        warn!(error = %problem, "cache entry skipped");
    }
    Ok(store)
}

fn serve(path: &Path) -> anyhow::Result<ExitCode> {
    // Read once, for both the daemon and the reloader's record of the file.
    let loaded = reload::read(path)?;
    let config = &loaded.config;
    tracing_subscriber::fmt()
        .with_env_filter(
            // RUST_LOG wins over the configured level; check-config validated the latter.
            tracing_subscriber::EnvFilter::try_from_default_env()
                .or_else(|_| tracing_subscriber::EnvFilter::try_new(&config.log.level))
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(run_server(&loaded, path))?;
    Ok(ExitCode::SUCCESS)
}

async fn run_server(loaded: &reload::Loaded, path: &Path) -> anyhow::Result<()> {
    let config = &loaded.config;
    let store = open_store(config, false)?;
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
    let listen = config
        .rtsp
        .listen_addr()
        .context("rtsp.listen is not an address")?;
    let listener = serve::bind(listen).await?;
    let local = listener.local_addr().context("listener has no address")?;
    let admin_listener = match config.admin.listen_addr() {
        Some(addr) => Some(admin::bind(addr).await?),
        None => None,
    };
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
        serve::limits::PlayerLimits::from_config(&config.rtsp),
    );
    // Reload by SIGHUP (`systemctl reload`) or through the admin API.
    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    let reloader = reload::Reloader::new(path, Arc::clone(&server), loaded);
    Arc::clone(&reloader).watch_sighup();
    if let Some(admin_listener) = admin_listener {
        tokio::spawn(admin::run(
            admin_listener,
            Arc::clone(&server),
            config.admin.token.clone(),
            Some(reloader),
        ));
    }
    // Every listener is bound: tell systemd (Type=notify) we are ready.
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

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// Total npt held: the union of the spans (runs of a partial fill overlap).
fn held_ns(spans: &[streamcache_cache::NptSpan]) -> u64 {
    let mut spans: Vec<(u64, u64)> = spans.iter().map(|s| (s.start_ns, s.end_ns)).collect();
    spans.sort_unstable();
    let (mut total, mut reach) = (0u64, 0u64);
    for (start, end) in spans {
        let start = start.max(reach);
        if end > start {
            total += end - start;
            reach = end;
        }
    }
    total
}

fn cache(config: &Config, action: CacheAction) -> anyhow::Result<ExitCode> {
    match action {
        CacheAction::Ls => {
            let store = open_store(config, true)?;
            println!("{:<10} {:>12} {:>10}  key", "state", "bytes", "held");
            for entry in store.list() {
                let held = held_ns(&entry.spans);
                println!(
                    "{:<10} {:>12} {:>9.1}s  {}",
                    format!("{:?}", entry.state).to_lowercase(),
                    entry.bytes,
                    held as f64 / 1e9,
                    entry.key
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        CacheAction::Verify { key } => {
            let store = open_store(config, true)?;
            let mut bad = false;
            for report in store.verify(key.as_deref()) {
                let verdict = if report.is_ok() { "ok" } else { "CORRUPT" };
                println!(
                    "{verdict}: {} ({} segments, {} records, {} bytes)",
                    report.key, report.segments, report.records, report.bytes
                );
                for problem in &report.problems {
                    println!("  {problem}");
                }
                bad |= !report.is_ok();
            }
            Ok(if bad {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        CacheAction::Purge { key, force } => purge(config, &key, force),
    }
}

/// Purges a presentation: in the store directly when no daemon holds it,
/// otherwise through the running daemon's admin API (which also ends the
/// title's players when forced).
fn purge(config: &Config, key: &str, force: bool) -> anyhow::Result<ExitCode> {
    let store = match open_store(config, false) {
        Ok(store) => store,
        Err(e) if is_locked(&e) => return purge_via_admin(config, key, force),
        Err(e) => return Err(e),
    };
    store
        .purge(key, force)
        .with_context(|| format!("cannot purge {key}"))?;
    println!("purged {key}");
    Ok(ExitCode::SUCCESS)
}

fn is_locked(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<streamcache_cache::CacheError>(),
            Some(streamcache_cache::CacheError::Locked { .. })
        )
    })
}

fn purge_via_admin(config: &Config, key: &str, force: bool) -> anyhow::Result<ExitCode> {
    let dir = config.cache.dir.display();
    let Some(addr) = config.admin.listen_addr() else {
        anyhow::bail!(
            "the cache {dir} is in use by the running daemon and its admin API is disabled \
             ([admin] listen = \"\"): stop the daemon to purge, or enable the admin API"
        );
    };
    let token = config.admin.token.as_deref();
    let unreachable = |e: anyhow::Error| {
        e.context(format!(
            "the cache {dir} is in use by the running daemon, whose admin API ({addr}) cannot be reached"
        ))
    };
    let listing =
        admin::client::request(addr, "GET", "/api/v1/presentations", token).map_err(unreachable)?;
    if listing.status != 200 {
        anyhow::bail!(
            "the daemon's admin API refused the listing: {}",
            listing.message()
        );
    }
    let id = listing.body["presentations"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["key"].as_str() == Some(key))
        .and_then(|p| p["id"].as_str().map(str::to_owned));
    let Some(id) = id else {
        anyhow::bail!("cannot purge {key}: not in the cache");
    };
    // The id goes into the request line: only what the store makes ids of.
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        anyhow::bail!("the daemon's admin API listed {key} with an unusable id {id:?}");
    }
    let path = format!(
        "/api/v1/presentations/{id}{}",
        if force { "?force=true" } else { "" }
    );
    let answer = admin::client::request(addr, "DELETE", &path, token).map_err(unreachable)?;
    match answer.status {
        200 => {
            let ended = answer.body["sessions_ended"].as_u64().unwrap_or(0);
            if ended > 0 {
                println!(
                    "purged {key} (through the running daemon; {ended} player session(s) ended)"
                );
            } else {
                println!("purged {key} (through the running daemon)");
            }
            Ok(ExitCode::SUCCESS)
        }
        _ => anyhow::bail!("cannot purge {key}: {}", answer.message()),
    }
}
