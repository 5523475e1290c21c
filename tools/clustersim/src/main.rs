//! `streamcache-clustersim`: simulated cluster nodes for measuring a
//! streamcache master on loopback. N control connections, each with a full
//! inventory of T titles (overlapping between nodes), a load report and a
//! small inventory delta every period, and every Prepare and Poll answered
//! (Prepare successfully, after `--prepare-delay-ms`). It serves no media:
//! the nodes' RTSP URLs are dummies. On SIGTERM it stops early and still
//! prints its counts. See `tools/clustersim/README.md`.
//!
//! Modules: [`titles`] (what each node holds and how it changes), [`node`]
//! (one node's control stream).

mod node;
mod titles;

use std::process::ExitCode;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, ensure, Context as _};
use clap::Parser;
use tokio::time::Instant;

use node::{Node, Plan, Stats};
use titles::{Catalogue, Holdings};

/// Simulated streamcache nodes attached to a master's control port.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The master's control address, http://127.0.0.1:PORT (loopback only).
    #[arg(long)]
    master: String,
    /// The cluster token (`[master] token`).
    #[arg(long)]
    token: String,
    /// Simulated nodes (control connections).
    #[arg(long, default_value_t = 100)]
    nodes: u64,
    /// Titles in each node's inventory.
    #[arg(long, default_value_t = 10_000)]
    titles: u64,
    /// Distinct titles in the catalogue [default: 5 × --titles, so each
    /// title is held by about nodes / 5 nodes].
    #[arg(long)]
    universe: Option<u64>,
    /// Key of title n: PREFIX<n> (the master's key for a path under a mount
    /// is `rtsp://host:port/path`).
    #[arg(long, default_value = "rtsp://origin:554/title-")]
    key_prefix: String,
    /// Report period, ms (the master's `report_period_ms`).
    #[arg(long, default_value_t = 1000)]
    period_ms: u64,
    /// Titles dropped, completed and recorded in each report (the delta
    /// holds 2 × this many titles and drops this many).
    #[arg(long, default_value_t = 5)]
    delta: u64,
    /// How long a node takes to prepare before answering Done, ms.
    #[arg(long, default_value_t = 0)]
    prepare_delay_ms: u64,
    /// Seconds to run (then every stream is closed and the counts printed).
    #[arg(long, default_value_t = 30)]
    duration_secs: u64,
    /// Node i's id is <PREFIX><i, 3 digits> (a second simulator with another
    /// prefix adds nodes; the same prefix replaces the first one's).
    #[arg(long, default_value = "sim-")]
    id_prefix: String,
    /// Node i says its RTSP URL is rtsp://127.0.0.1:<BASE + i> (a dummy).
    #[arg(long, default_value_t = 20_000)]
    rtsp_port_base: u16,
    /// Each node's max_sessions (it reports a fifth of it in use).
    #[arg(long, default_value_t = 10_000)]
    max_sessions: u32,
    /// Each node's max_egress_bps (it reports a fifth of it in use).
    #[arg(long, default_value_t = 100_000_000_000)]
    max_egress_bps: u64,
    /// Runtime worker threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match start(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("streamcache-clustersim: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn start(args: &Args) -> anyhow::Result<()> {
    check_loopback(&args.master)?;
    ensure!(
        args.nodes > 0 && args.titles > 0,
        "--nodes and --titles must be > 0"
    );
    let universe = args.universe.unwrap_or(args.titles.saturating_mul(5));
    ensure!(
        universe >= args.titles,
        "--universe must be at least --titles"
    );
    ensure!(args.period_ms > 0, "--period-ms must be > 0");
    ensure!(
        u64::from(args.rtsp_port_base) + args.nodes <= 65_535,
        "--rtsp-port-base + --nodes must stay below 65536"
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(run(args, universe));
    Ok(())
}

async fn run(args: &Args, universe: u64) {
    let started = Instant::now();
    let period = Duration::from_millis(args.period_ms);
    let plan = Arc::new(Plan {
        master: args.master.clone(),
        token: args.token.clone(),
        period,
        delta: args.delta,
        prepare_delay: Duration::from_millis(args.prepare_delay_ms),
        max_sessions: args.max_sessions,
        max_egress_bps: args.max_egress_bps,
        stop_at: started + Duration::from_secs(args.duration_secs),
    });
    let catalogue = Catalogue {
        prefix: args.key_prefix.as_str().into(),
        universe,
        per_node: args.titles,
        nodes: args.nodes,
    };
    let stats = Arc::new(Stats::default());
    let tasks: Vec<_> = (0..args.nodes)
        .map(|i| {
            let port = u64::from(args.rtsp_port_base) + i;
            let node = Node {
                id: format!("{}{i:03}", args.id_prefix),
                rtsp_url: format!("rtsp://127.0.0.1:{port}"),
                phase: period.mul_f64(i as f64 / args.nodes as f64),
                holdings: Holdings::new(catalogue.clone(), i),
            };
            tokio::spawn(node::run(Arc::clone(&plan), node, Arc::clone(&stats)))
        })
        .collect();
    let all_done = async {
        announce_when_attached(&stats, args.nodes, started, plan.stop_at).await;
        for task in tasks {
            if let Err(e) = task.await {
                eprintln!("streamcache-clustersim: a node task failed: {e}");
            }
        }
    };
    tokio::select! {
        () = all_done => {}
        () = terminated() => eprintln!("clustersim: SIGTERM: stopping early"),
    }
    let n = |c: &std::sync::atomic::AtomicU64| c.load(Relaxed);
    println!(
        "clustersim: nodes {} titles/node {} universe {} period {} ms, ran {:.1} s: \
         attached {} inventories {} ({} titles) reports {} prepares {} polls {} broken {}",
        args.nodes,
        args.titles,
        universe,
        args.period_ms,
        started.elapsed().as_secs_f64(),
        n(&stats.attached),
        n(&stats.inventories),
        n(&stats.inventory_titles),
        n(&stats.reports),
        n(&stats.prepares),
        n(&stats.polls),
        n(&stats.broken),
    );
}

/// Resolves on SIGTERM (scripts stop the run with it and still get the
/// counts); never if it cannot be listened for.
async fn terminated() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            term.recv().await;
        }
        Err(_) => std::future::pending().await,
    }
}

/// Prints one line (scripts wait for it) once every node has sent its full
/// inventory, or gives up at the end of the run.
async fn announce_when_attached(stats: &Stats, nodes: u64, started: Instant, stop_at: Instant) {
    while stats.inventories.load(Relaxed) < nodes {
        if Instant::now() >= stop_at {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "clustersim: all {nodes} nodes attached, inventories sent in {:.2} s",
        started.elapsed().as_secs_f64()
    );
}

/// This tool generates load: it is only pointed at this machine.
fn check_loopback(master: &str) -> anyhow::Result<()> {
    let uri: tonic::codegen::http::Uri = master
        .parse()
        .with_context(|| format!("--master {master:?} is not a URL"))?;
    ensure!(
        uri.scheme_str() == Some("http"),
        "--master must be http://host:port (gRPC without TLS)"
    );
    match uri.host() {
        Some("localhost" | "[::1]") => Ok(()),
        Some(host)
            if host
                .parse::<std::net::Ipv4Addr>()
                .is_ok_and(|a| a.is_loopback()) =>
        {
            Ok(())
        }
        _ => bail!("refusing --master {master}: only loopback addresses"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_masters() {
        assert!(check_loopback("http://127.0.0.1:8566").is_ok());
        assert!(check_loopback("http://[::1]:8566").is_ok());
        assert!(check_loopback("http://192.0.2.1:8566").is_err());
        assert!(check_loopback("https://127.0.0.1:8566").is_err());
    }

    #[test]
    fn arguments_parse() {
        let a = Args::try_parse_from([
            "streamcache-clustersim",
            "--master",
            "http://127.0.0.1:1",
            "--token",
            "0123456789abcdef",
            "--prepare-delay-ms",
            "2",
        ])
        .expect("parses");
        assert_eq!((a.nodes, a.titles, a.period_ms), (100, 10_000, 1000));
        assert_eq!(a.prepare_delay_ms, 2);
    }
}
