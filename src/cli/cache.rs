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

pub fn run(config: &Config, action: CacheAction) -> anyhow::Result<ExitCode> {
    match action {
        CacheAction::Ls => {
            let store = open_store(config, true)?;
            println!("{:<10} {:>12} {:>10}  key", "state", "bytes", "held");
            for entry in store.list() {
                let held = NptSpan::total(&entry.spans);
                println!(
                    "{:<10} {:>12} {:>9.1}s  {}",
                    format!("{:?}", entry.state).to_lowercase(),
                    entry.bytes,
                    held.as_secs_f64(),
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
