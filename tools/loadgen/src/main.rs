//! `streamcache-loadgen`: a raw RTSP load client for measuring streamcache
//! (or any RTSP server) on loopback.
//!
//! It opens N player sessions over RTP/AVP/TCP interleaved (or RTP/AVP over
//! UDP with `--transport udp`), ramped at a given rate, keeps them all
//! playing for a duration, optionally starts one late joiner, and reports
//! set-up outcomes, bytes and packets received, sequence loss, PLAY →
//! first-packet latency, and the pacing error of packets against their RTP
//! timestamps. See `tools/loadgen/README.md` for what each figure means
//! exactly.
//!
//! With `--redirect-rate`, it instead sends DESCRIBE requests at a fixed
//! rate, one new connection each, and reports the latency of the answers
//! (a streamcache master's 302 redirects): see [`redirect`].
//!
//! Modules: [`client`] (one RTSP connection on the project's sans-io codec),
//! [`session`] (one player from DESCRIBE to TEARDOWN), [`receiver`] (what a
//! playing session receives, per track), [`udp`] (port pairs and receiving
//! tasks over UDP), [`track`] (per-track counters, loss and pacing), [`rap`]
//! (random-access detection), [`redirect`], [`histogram`], [`report`].

mod client;
mod histogram;
mod rap;
mod receiver;
mod redirect;
mod report;
mod session;
mod track;
mod udp;

use anyhow::{bail, ensure, Context, Result};
use clap::Parser;
use report::{Report, RunInfo};
use session::{Plan, SessionResult, Transport, TEARDOWN_WAIT};
use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};
use streamcache_rtsp::rtsp_types::{Host, Url};
use tokio::time::{sleep_until, timeout_at};

/// Raw RTSP load client: N players over TCP interleaved or UDP against a
/// loopback RTSP server, reporting loss, first-packet latency and pacing.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// rtsp:// URL of the presentation; its host must be a loopback address.
    url: String,
    /// Number of player sessions.
    #[arg(short = 'n', long, default_value_t = 10)]
    players: usize,
    /// Sessions started per second while ramping up.
    #[arg(long, default_value_t = 50.0)]
    rate: f64,
    /// Seconds all players keep playing together once the ramp is done.
    #[arg(long, default_value_t = 30.0)]
    duration: f64,
    /// Seconds allowed for connecting and for each set-up request.
    #[arg(long, default_value_t = 10.0)]
    setup_timeout: f64,
    /// `Range` header for PLAY, e.g. `npt=0.000-` (none by default).
    #[arg(long)]
    range: Option<String>,
    /// How players receive the media: `tcp` interleaved on the RTSP
    /// connection, or `udp`: per track an even/odd pair of loopback UDP
    /// ports (RTP, RTCP) offered as `client_port`, from 20000-32767, with a
    /// 4 MiB receive buffer asked for (capped at net.core.rmem_max).
    #[arg(long, value_enum, default_value_t = Transport::Tcp)]
    transport: Transport,
    /// Also start one extra session after the ramp and report it apart.
    #[arg(long)]
    late_joiner: bool,
    /// Seconds after the ramp at which the late joiner starts [default: half
    /// the duration].
    #[arg(long)]
    late_delay: Option<f64>,
    /// Print the report as JSON (with one line per session) instead of text.
    #[arg(long)]
    json: bool,
    /// Runtime worker threads (the load client's share of the CPU).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Redirect mode: DESCRIBE requests per second, each on a new
    /// connection, for --duration seconds (open loop); the answers'
    /// latency is reported instead of playing. --setup-timeout bounds each.
    #[arg(long)]
    redirect_rate: Option<f64>,
    /// Redirect mode: request <URL>/title-<n> for n spread over 0..TITLES
    /// instead of the URL itself.
    #[arg(long)]
    titles: Option<u64>,
}

/// Slack after the last deadline before unfinished sessions are abandoned.
const FINISH_SLACK: Duration = Duration::from_secs(5);

fn main() -> ExitCode {
    let args = Args::parse();
    match measure(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("streamcache-loadgen: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the load and prints the report.
fn measure(args: &Args) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()
        .context("starting the runtime")?;
    if let Some(rate) = args.redirect_rate {
        let report = runtime.block_on(redirect_load(args, rate))?;
        let text = if args.json {
            serde_json::to_string_pretty(&report)? + "\n"
        } else {
            report.human()
        };
        return std::io::stdout()
            .write_all(text.as_bytes())
            .context("writing the report");
    }
    let report = runtime.block_on(run(args))?;
    let text = if args.json {
        serde_json::to_string_pretty(&report)? + "\n"
    } else {
        report.human()
    };
    std::io::stdout()
        .write_all(text.as_bytes())
        .context("writing the report")
}

fn secs(value: f64, what: &str) -> Result<Duration> {
    Duration::try_from_secs_f64(value)
        .ok()
        .filter(|d| !d.is_zero())
        .with_context(|| format!("{what} must be a positive number of seconds, got {value}"))
}

/// Redirect mode: DESCRIBEs at `rate` per second.
async fn redirect_load(args: &Args, rate: f64) -> Result<redirect::RedirectReport> {
    ensure!(
        rate.is_finite() && rate > 0.0,
        "--redirect-rate must be positive"
    );
    let url = Url::parse(&args.url).with_context(|| format!("URL {:?}", args.url))?;
    ensure!(url.scheme() == "rtsp", "only rtsp:// URLs are supported");
    let plan = redirect::RedirectPlan {
        addr: loopback_addr(&url).await?,
        url,
        rate,
        duration: secs(args.duration, "--duration")?,
        titles: args.titles,
        timeout: secs(args.setup_timeout, "--setup-timeout")?,
    };
    Ok(redirect::run(&plan).await)
}

/// Starts every session on its schedule and waits for all of them.
async fn run(args: &Args) -> Result<Report> {
    ensure!(
        args.rate.is_finite() && args.rate > 0.0,
        "--rate must be positive"
    );
    ensure!(
        args.players > 0 || args.late_joiner,
        "nothing to do: no players and no late joiner"
    );
    let duration = secs(args.duration, "--duration")?;
    let setup_timeout = secs(args.setup_timeout, "--setup-timeout")?;
    let late_delay = match args.late_delay {
        Some(d) => Duration::try_from_secs_f64(d).context("--late-delay")?,
        None => duration / 2,
    };
    ensure!(
        late_delay < duration,
        "--late-delay must be shorter than --duration"
    );
    let url = Url::parse(&args.url).with_context(|| format!("URL {:?}", args.url))?;
    ensure!(url.scheme() == "rtsp", "only rtsp:// URLs are supported");
    let addr = loopback_addr(&url).await?;

    let t0 = Instant::now() + Duration::from_millis(50);
    let ramp = Duration::from_secs_f64(args.players as f64 / args.rate);
    let plan = Plan {
        url: url.clone(),
        addr,
        range: args.range.clone(),
        setup_timeout,
        stop_at: t0 + ramp + duration,
        transport: args.transport,
        ports: Arc::new(udp::PortCursor::new(udp::PORT_RANGE, std::process::id())),
    };
    let abandon_at = plan.stop_at + TEARDOWN_WAIT + FINISH_SLACK;

    let starts = (0..args.players).map(|i| t0 + Duration::from_secs_f64(i as f64 / args.rate));
    let handles: Vec<_> = starts.map(|start| spawn_session(&plan, start)).collect();
    let late = args
        .late_joiner
        .then(|| spawn_session(&plan, t0 + ramp + late_delay));

    let mut results = Vec::with_capacity(handles.len());
    for handle in handles {
        results.push(finish(handle, abandon_at).await);
    }
    let late = match late {
        Some(h) => Some(finish(h, abandon_at).await),
        None => None,
    };
    let info = RunInfo {
        url: url.to_string(),
        players: args.players,
        ramp_per_sec: args.rate,
        duration_secs: duration.as_secs_f64(),
        transport: args.transport,
        udp_receive_buffer: match args.transport {
            Transport::Udp => udp::granted_receive_buffer(),
            Transport::Tcp => None,
        },
    };
    Ok(Report::build(info, &results, late.as_ref()))
}

fn spawn_session(plan: &Plan, start: Instant) -> tokio::task::JoinHandle<SessionResult> {
    let plan = plan.clone();
    tokio::spawn(async move {
        sleep_until(start.into()).await;
        session::run(&plan).await
    })
}

/// Waits for a session until `abandon_at`; one still running is aborted.
async fn finish(
    mut handle: tokio::task::JoinHandle<SessionResult>,
    abandon_at: Instant,
) -> SessionResult {
    let failure = match timeout_at(abandon_at.into(), &mut handle).await {
        Ok(Ok(result)) => return result,
        Ok(Err(e)) => format!("session task failed: {e}"),
        Err(_) => {
            handle.abort();
            "session did not finish in time".to_string()
        }
    };
    SessionResult {
        failure: Some(failure),
        ..SessionResult::default()
    }
}

/// Resolves the URL's host and refuses anything that is not loopback: this
/// tool generates real load and must not be pointed at another machine.
async fn loopback_addr(url: &Url) -> Result<SocketAddr> {
    let port = url.port().unwrap_or(554);
    let addrs: Vec<SocketAddr> = match url.host() {
        Some(Host::Ipv4(a)) => vec![SocketAddr::new(IpAddr::V4(a), port)],
        Some(Host::Ipv6(a)) => vec![SocketAddr::new(IpAddr::V6(a), port)],
        Some(Host::Domain(name)) => tokio::net::lookup_host((name, port))
            .await
            .with_context(|| format!("resolving {name}"))?
            .collect(),
        None => bail!("URL {url} has no host"),
    };
    match addrs.first() {
        Some(first) if addrs.iter().all(|a| a.ip().is_loopback()) => Ok(*first),
        Some(_) => bail!("refusing {url}: its host is not a loopback address"),
        None => bail!("{url}: host resolves to no address"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn check(url: &str) -> Result<SocketAddr> {
        loopback_addr(&Url::parse(url).unwrap()).await
    }

    #[tokio::test]
    async fn accepts_only_loopback_hosts() {
        assert_eq!(
            check("rtsp://127.0.0.1:8554/x").await.unwrap(),
            "127.0.0.1:8554".parse().unwrap()
        );
        assert_eq!(check("rtsp://[::1]/x").await.unwrap().port(), 554);
        assert!(check("rtsp://localhost:1/x").await.is_ok());
        let err = check("rtsp://192.0.2.1/x").await.unwrap_err();
        assert!(err.to_string().contains("not a loopback"), "{err}");
    }

    #[test]
    fn arguments_parse() {
        let a = Args::try_parse_from([
            "streamcache-loadgen",
            "rtsp://127.0.0.1/x",
            "-n",
            "200",
            "--late-joiner",
            "--json",
        ])
        .unwrap();
        assert_eq!((a.players, a.late_joiner, a.json), (200, true, true));
        assert_eq!(a.duration, 30.0);
        assert_eq!(a.transport, Transport::Tcp);
        let a = Args::try_parse_from(["loadgen", "rtsp://127.0.0.1/x", "--transport", "udp"]);
        assert_eq!(a.unwrap().transport, Transport::Udp);
        assert!(Args::try_parse_from(["loadgen", "rtsp://h/x", "--transport", "sctp"]).is_err());
    }
}
