//! `streamcache cache …`: inspect and maintain the store a configuration
//! points at.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Subcommand;

use streamcache_types::NptSpan;

use crate::admin;
use crate::config::Config;
use crate::daemon::open_store;

#[derive(Subcommand)]
pub enum CacheAction {
    /// List cached presentations (id, state, bytes, held, key) and the
    /// directories that are not presentations (orphans).
    Ls,
    /// Check every segment of every presentation (or of one, by key or id)
    /// from its bytes on disk; exits 1 if anything is damaged, or if the key
    /// or id is unknown.
    Verify {
        /// Only this presentation: its key or its id (as `cache ls` shows).
        key: Option<String>,
    },
    /// Remove a presentation from the cache.
    Purge {
        /// Its key or its id (as `cache ls` shows).
        key: String,
        /// Remove it even while it is being played or recorded.
        #[arg(long)]
        force: bool,
    },
    /// Write a cached title (or a part of it) as an MP4 (moov first) or an
    /// MPEG-TS file, without re-encoding; works while the daemon runs. OUT
    /// is written under a temporary name beside it and renamed once
    /// complete: a failed export leaves no partial file.
    Export(super::export::ExportArgs),
}

pub fn run(config: &Config, action: CacheAction) -> anyhow::Result<ExitCode> {
    match action {
        CacheAction::Ls => {
            let store = open_store(config, true)?;
            println!(
                "{:<18} {:<10} {:>12} {:>10}  key",
                "id", "state", "bytes", "held"
            );
            for entry in store.list() {
                let held = NptSpan::total(&entry.spans);
                println!(
                    "{:<18} {:<10} {:>12} {:>9.1}s  {}",
                    entry.id,
                    format!("{:?}", entry.state).to_lowercase(),
                    entry.bytes,
                    held.as_secs_f64(),
                    entry.key
                );
            }
            let orphans = store.orphans();
            if !orphans.is_empty() {
                println!();
                println!("not presentations (reclaimed when the daemon next opens the cache, unless another version's):");
                println!("{:<18} {:>8} {:>12}  why", "id", "segments", "bytes");
                for orphan in orphans {
                    println!(
                        "{:<18} {:>8} {:>12}  {}",
                        orphan.id, orphan.segments, orphan.bytes, orphan.reason
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        CacheAction::Verify { key } => {
            let store = open_store(config, true)?;
            let reports = store.verify(key.as_deref());
            if let (Some(key), true) = (&key, reports.is_empty()) {
                eprintln!(
                    "cannot verify {key}: no presentation or directory with that key or id in {}",
                    config.cache.dir.display()
                );
                return Ok(ExitCode::FAILURE);
            }
            let mut bad = false;
            for report in reports {
                let verdict = if report.is_ok() { "ok" } else { "DAMAGED" };
                let name = if report.key.is_empty() {
                    "(orphan: no usable metadata)"
                } else {
                    &report.key
                };
                println!(
                    "{verdict}: {} {name} ({} segments, {} records, {} bytes)",
                    report.id, report.segments, report.records, report.bytes
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
        CacheAction::Export(args) => super::export::run(config, args),
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
    let Some(resolved) = store.resolve(key) else {
        anyhow::bail!("cannot purge {key}: no presentation with that key or id in the cache");
    };
    store
        .purge(&resolved, force)
        .with_context(|| format!("cannot purge {resolved}"))?;
    println!("purged {resolved}");
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
        .find(|p| p["key"].as_str() == Some(key) || p["id"].as_str() == Some(key))
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
