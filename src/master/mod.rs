//! The cluster's master (`streamcache master`): it knows every node, what
//! each holds and how loaded each is, and sends each player to the best
//! node. It serves no media.
//!
//! - [`control`]: the nodes' control connections (gRPC, one bidirectional
//!   stream per node; `proto/cluster.proto`);
//! - [`redirect`]: the RTSP port players come to (DESCRIBE → prepare on a
//!   node → 302);
//! - [`state`]: what it knows, over the pure parts in [`crate::cluster`];
//! - [`admin`] and [`metrics`]: its admin API;
//! - this module: start-up and the poll loop (a node silent for a report
//!   period is polled; down after `down_after_polls` unanswered polls).
//!
//! It keeps no state on disk: a restarted master rebuilds everything from
//! the nodes, which reconnect and send their full inventories.

mod admin;
mod control;
mod copies;
mod metrics;
mod redirect;
mod state;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use streamcache_rtsp::framing::Limits;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::cluster::protocol::pb;
use crate::config::{Config, MasterConfig};
use crate::mounts::Mounts;
use crate::{daemon, listener};
pub use metrics::MasterMetrics;
pub use state::{MasterState, Settings};

/// Runs the master on the configuration file at `path` (which must have a
/// `[master]` section); with `ready_file`, writes the bound addresses there.
pub fn run(path: &Path, ready_file: Option<&Path>) -> anyhow::Result<std::process::ExitCode> {
    let config = Config::load(path)?;
    let Some(master) = config.master.clone() else {
        anyhow::bail!(
            "{} has no [master] section: `streamcache master` needs one (a node runs `streamcache serve`)",
            path.display()
        );
    };
    daemon::init_logging(&config.log.level);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(&config, &master, ready_file))?;
    Ok(std::process::ExitCode::SUCCESS)
}

async fn serve(
    config: &Config,
    master: &MasterConfig,
    ready_file: Option<&Path>,
) -> anyhow::Result<()> {
    let settings = Settings {
        report_period: master.report_period(),
        down_after_polls: master.down_after_polls,
        egress_window: master.egress_window(),
        prepare_timeout: master.prepare_timeout(),
        player_bitrate_bps: master.player_bitrate_bps,
        copy_link_bps: master.copy_link_bps,
        copy_cluster_bps: master.copy_cluster_bps,
        copy_faulty_after: master.copy_faulty_after,
        copy_failure_window: Duration::from_secs(master.copy_failure_window_secs),
    };
    let state = Arc::new(MasterState::new(settings));
    let metrics = Arc::new(MasterMetrics::new(Arc::clone(&state)));
    let mounts = Mounts::from_config(config);
    for mount in mounts.iter() {
        info!(path = %mount.path, origin = %mount.origin, "mount");
    }
    let bound = |addr: Option<SocketAddr>, key: &str| {
        listener::bind_optional(addr, &format!("master.{key}"))?
            .with_context(|| format!("master.{key} is not an address"))
    };
    let (rtsp, rtsp_local) = bound(master.listen_addr(), "listen")?;
    let (control, control_local) = bound(master.control_addr(), "control_listen")?;
    let admin_listener = listener::bind_optional(config.admin.listen_addr(), "the admin API")?;
    let admin_local = admin_listener.as_ref().map(|(_, a)| *a);
    tokio::spawn(control::run(
        control,
        Arc::clone(&state),
        Arc::clone(&metrics),
        master.token.clone(),
    ));
    let limits = Limits {
        max_message_bytes: usize::try_from(config.rtsp.max_request_bytes.0).unwrap_or(usize::MAX),
        max_headers: config.rtsp.max_headers,
    };
    let redirector = redirect::Redirector::new(
        Arc::clone(&state),
        Arc::clone(&metrics),
        mounts,
        limits,
        master.retry_after_secs,
    );
    tokio::spawn(redirect::run(rtsp, Arc::new(redirector)));
    if let Some((listener, _)) = admin_listener {
        tokio::spawn(crate::admin::serve(
            listener,
            Arc::new(admin::MasterAdmin {
                state: Arc::clone(&state),
                metrics,
                token: config.admin.token.clone(),
            }),
        ));
    }
    tokio::spawn(poll_loop(Arc::clone(&state)));
    let admin_shown = admin_local.map_or_else(|| "off".to_owned(), |a| a.to_string());
    info!(rtsp = %rtsp_local, control = %control_local, admin = %admin_shown, "listening");
    if let Some(path) = ready_file {
        daemon::write_ready_file(
            path,
            &serde_json::json!({
                "rtsp": rtsp_local.to_string(),
                "control": control_local.to_string(),
                "admin": admin_local.map(|a| a.to_string()),
            }),
        )?;
    }
    if let Err(e) = crate::notify::ready() {
        warn!(error = %e, "cannot notify systemd of readiness");
    }
    daemon::ignore_sighup(
        "the master has nothing to reload: restart it to apply a new configuration",
    );
    daemon::shutdown_signal().await;
    info!("shutting down");
    Ok(())
}

/// Polls the nodes that have been silent for a report period; one whose
/// polls go unanswered `down_after_polls` times is down (until it reports).
async fn poll_loop(state: Arc<MasterState>) {
    let period = state.settings.report_period;
    let mut tick = tokio::time::interval(period / 4);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        state.prune(Instant::now());
        for node in state.due_polls(Instant::now()) {
            let state = Arc::clone(&state);
            tokio::spawn(async move {
                let answered = match state.request(&node, pb::envelope::Body::Poll(pb::Poll {})) {
                    None => false,
                    Some(in_flight) => {
                        let answer = tokio::time::timeout(period, in_flight.answer).await;
                        if answer.is_err() {
                            state.abandon(&node, in_flight.request_id);
                        }
                        matches!(answer, Ok(Ok(Ok(()))))
                    }
                };
                if !answered && state.poll_failed(&node) {
                    warn!(%node, "node down: silent, and its polls went unanswered");
                    copies::source_down(&state, &node);
                }
            });
        }
    }
}

#[cfg(test)]
mod tests;
