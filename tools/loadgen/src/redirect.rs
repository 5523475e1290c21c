//! Redirect mode (`--redirect-rate`): DESCRIBE requests at a fixed rate
//! against a redirecting server (a streamcache master), each on a new
//! connection as a player's would be, and the latency of their answers.
//!
//! Open loop: request `i` is due at `t0 + i / rate` whether or not earlier
//! ones were answered, so a server falling behind shows in the figures
//! instead of slowing the load down. Latency counts from the moment the
//! client starts connecting; how late that was against the due time (the
//! client's own timer and scheduling lag, about a millisecond with tokio's
//! timer) is reported apart. The connection is closed once the answer is
//! read.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use streamcache_rtsp::rtsp_types::Url;
use tokio::net::TcpStream;
use tokio::time::{sleep_until, timeout_at};

use crate::client::Connection;
use crate::histogram::Histogram;
use crate::report::Quantiles;

/// How to run the redirect load.
#[derive(Debug, Clone)]
pub struct RedirectPlan {
    /// The URL requested, or the base of `<url>/title-<n>` with `titles`.
    pub url: Url,
    pub addr: SocketAddr,
    /// DESCRIBEs per second.
    pub rate: f64,
    pub duration: Duration,
    /// Spread requests over `<url>/title-0 …/title-<titles − 1>`.
    pub titles: Option<u64>,
    /// Bound on connecting plus the answer.
    pub timeout: Duration,
}

/// The figures of a redirect run.
#[derive(Debug, Clone, Serialize)]
pub struct RedirectReport {
    pub url: String,
    pub rate_per_sec: f64,
    pub duration_secs: f64,
    /// One new TCP connection per DESCRIBE.
    pub connection: &'static str,
    pub sent: u64,
    /// Answers by status (`"302"`), and failures by reason.
    pub outcomes: BTreeMap<String, u64>,
    /// Connecting → answer read, ms, over the 302 answers.
    pub latency_ms: Option<Quantiles>,
    /// Connected → answer read, ms, over the 302 answers (the request's
    /// exchange alone).
    pub exchange_ms: Option<Quantiles>,
    /// Connecting → connected, ms, over every request that connected.
    pub connect_ms: Option<Quantiles>,
    /// Due time → connecting, ms, over every request: the client's lag.
    pub start_lag_ms: Option<Quantiles>,
}

#[derive(Default)]
struct Tally {
    outcomes: BTreeMap<String, u64>,
    latency: Histogram,
    exchange: Histogram,
    connect: Histogram,
    lag: Histogram,
}

/// Sends the DESCRIBEs on schedule and waits for the last answers.
pub async fn run(plan: &RedirectPlan) -> RedirectReport {
    let tally = Arc::new(Mutex::new(Tally::default()));
    let total = (plan.rate * plan.duration.as_secs_f64()).round() as u64;
    let t0 = Instant::now() + Duration::from_millis(50);
    let mut tasks = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    for i in 0..total {
        let due = t0 + Duration::from_secs_f64(i as f64 / plan.rate);
        sleep_until(due.into()).await;
        let url = request_url(plan, i);
        let (addr, timeout, tally) = (plan.addr, plan.timeout, Arc::clone(&tally));
        tasks.push(tokio::spawn(async move {
            let lag = due.elapsed();
            let outcome = describe(addr, &url, timeout).await;
            count(&tally, lag, outcome);
        }));
    }
    for task in tasks {
        if let Err(e) = task.await {
            count(&tally, Duration::ZERO, Err(format!("task failed: {e}")));
        }
    }
    let tally = std::mem::take(&mut *tally.lock().unwrap_or_else(|e| e.into_inner()));
    RedirectReport {
        url: plan.url.to_string(),
        rate_per_sec: plan.rate,
        duration_secs: plan.duration.as_secs_f64(),
        connection: "new",
        sent: total,
        outcomes: tally.outcomes,
        latency_ms: Quantiles::from_micros(&tally.latency),
        exchange_ms: Quantiles::from_micros(&tally.exchange),
        connect_ms: Quantiles::from_micros(&tally.connect),
        start_lag_ms: Quantiles::from_micros(&tally.lag),
    }
}

/// Request `i`'s URL: spread over the titles by a stable pseudo-random
/// choice, so that consecutive requests hit unrelated titles.
fn request_url(plan: &RedirectPlan, i: u64) -> String {
    match plan.titles {
        Some(n) if n > 0 => {
            let base = plan.url.as_str().trim_end_matches('/');
            format!("{base}/title-{}", mix(i) % n)
        }
        _ => plan.url.to_string(),
    }
}

/// What one DESCRIBE gave.
struct Answered {
    status: u16,
    started: Instant,
    connected: Instant,
    at: Instant,
}

async fn describe(addr: SocketAddr, url: &str, timeout: Duration) -> Result<Answered, String> {
    let started = Instant::now();
    let deadline = (started + timeout).into();
    let stream = match timeout_at(deadline, TcpStream::connect(addr)).await {
        Err(_) => return Err("connect: no connection in time".into()),
        Ok(Err(e)) => return Err(format!("connect: {e}")),
        Ok(Ok(stream)) => stream,
    };
    let connected = Instant::now();
    let mut conn = Connection::new(stream);
    let accept = [("Accept", "application/sdp")];
    match timeout_at(deadline, conn.request("DESCRIBE", url, None, &accept)).await {
        Err(_) => Err("DESCRIBE: no answer in time".into()),
        Ok(Err(e)) => Err(format!("DESCRIBE: {e}")),
        Ok(Ok(r)) => Ok(Answered {
            status: r.status,
            started,
            connected,
            at: Instant::now(),
        }),
    }
}

fn count(tally: &Mutex<Tally>, lag: Duration, outcome: Result<Answered, String>) {
    let micros = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
    let mut tally = tally.lock().unwrap_or_else(|e| e.into_inner());
    tally.lag.record(micros(lag));
    match outcome {
        Ok(a) => {
            tally.connect.record(micros(a.connected - a.started));
            if a.status == 302 {
                tally.latency.record(micros(a.at - a.started));
                tally.exchange.record(micros(a.at - a.connected));
            }
            *tally.outcomes.entry(a.status.to_string()).or_default() += 1;
        }
        Err(why) => *tally.outcomes.entry(why).or_default() += 1,
    }
}

/// splitmix64's finaliser.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl RedirectReport {
    pub fn human(&self) -> String {
        let mut o = String::new();
        // Writing to a String cannot fail.
        let _ = self.write_human(&mut o);
        o
    }

    fn write_human(&self, o: &mut String) -> fmt::Result {
        writeln!(
            o,
            "{}: {} DESCRIBE/s for {} s, a {} connection for each: {} sent",
            self.url, self.rate_per_sec, self.duration_secs, self.connection, self.sent
        )?;
        for (what, n) in &self.outcomes {
            writeln!(o, "  {n} × {what}")?;
        }
        let line = |o: &mut String, name: &str, q: &Option<Quantiles>| match q {
            Some(q) => writeln!(
                o,
                "{name:<12} p50 {:.3} ms, p90 {:.3}, p99 {:.3}, max {:.3} ({} samples)",
                q.p50, q.p90, q.p99, q.max, q.samples
            ),
            None => writeln!(o, "{name:<12} -"),
        };
        line(o, "latency", &self.latency_ms)?;
        line(o, "exchange", &self.exchange_ms)?;
        line(o, "connect", &self.connect_ms)?;
        line(o, "client lag", &self.start_lag_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(titles: Option<u64>) -> RedirectPlan {
        RedirectPlan {
            url: Url::parse("rtsp://127.0.0.1:8564/vod/").unwrap(),
            addr: "127.0.0.1:8564".parse().unwrap(),
            rate: 1000.0,
            duration: Duration::from_secs(1),
            titles,
            timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn requests_spread_over_the_titles() {
        let p = plan(Some(50));
        let urls: std::collections::HashSet<_> = (0..1000).map(|i| request_url(&p, i)).collect();
        assert_eq!(urls.len(), 50);
        assert!(urls.contains("rtsp://127.0.0.1:8564/vod/title-0"));
        assert_eq!(request_url(&plan(None), 3), "rtsp://127.0.0.1:8564/vod/");
    }

    #[tokio::test]
    async fn counts_answers_by_status() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            for status in ["302 Found", "503 Service Unavailable"] {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 1024];
                let _ = tokio::io::AsyncReadExt::read(&mut s, &mut buf).await;
                let answer = format!("RTSP/1.0 {status}\r\nCSeq: 1\r\n\r\n");
                tokio::io::AsyncWriteExt::write_all(&mut s, answer.as_bytes())
                    .await
                    .unwrap();
            }
        });
        let plan = RedirectPlan {
            addr,
            rate: 20.0,
            duration: Duration::from_millis(100),
            ..plan(Some(10))
        };
        let report = run(&plan).await;
        assert_eq!(report.sent, 2);
        assert_eq!(report.outcomes.get("302"), Some(&1));
        assert_eq!(report.outcomes.get("503"), Some(&1));
        assert_eq!(report.latency_ms.map(|q| q.samples), Some(1));
    }
}
