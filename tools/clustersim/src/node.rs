//! One simulated node: its control stream to the master, reconnected when
//! it breaks, until the end of the run.
//!
//! On connect: Hello, wait for Welcome, then one batch with the full
//! inventory and a load report. Every report period: a LoadReport and an
//! InventoryDelta in one batch. Every Prepare is answered Ack at once and
//! Done (success) after the configured delay; every Poll with Ack, a
//! LoadReport and Done in one batch.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use streamcache::cluster::protocol::{pb, PROTOCOL_VERSION};
use tokio::sync::mpsc;
use tokio::time::{sleep, sleep_until, Instant};
use tonic::metadata::MetadataValue;

use crate::titles::Holdings;

/// Batches queued toward the master.
const TO_MASTER_QUEUE: usize = 64;
/// Wait before reconnecting a broken stream.
const RECONNECT_AFTER: Duration = Duration::from_secs(1);

/// What every node is told.
#[derive(Debug, Clone)]
pub struct Plan {
    pub master: String,
    pub token: String,
    pub period: Duration,
    /// Titles that change in each report.
    pub delta: u64,
    pub prepare_delay: Duration,
    pub max_sessions: u32,
    pub max_egress_bps: u64,
    pub stop_at: Instant,
}

/// Counters over every node, printed at the end.
#[derive(Debug, Default)]
pub struct Stats {
    pub attached: AtomicU64,
    pub inventories: AtomicU64,
    pub inventory_titles: AtomicU64,
    pub reports: AtomicU64,
    pub prepares: AtomicU64,
    pub polls: AtomicU64,
    pub broken: AtomicU64,
}

pub struct Node {
    pub id: String,
    pub rtsp_url: String,
    /// Where its reports start within the period (nodes are spread over it).
    pub phase: Duration,
    pub holdings: Holdings,
}

/// Runs the node until the plan's end, reconnecting after any failure.
pub async fn run(plan: Arc<Plan>, mut node: Node, stats: Arc<Stats>) {
    while Instant::now() < plan.stop_at {
        match attached(&plan, &mut node, &stats).await {
            Ok(()) => return,
            Err(e) => {
                stats.broken.fetch_add(1, Relaxed);
                eprintln!("clustersim: {}: {e:#}; reconnecting", node.id);
                sleep(RECONNECT_AFTER).await;
            }
        }
    }
}

/// One control stream, until the end of the run (`Ok`) or a failure.
async fn attached(plan: &Plan, node: &mut Node, stats: &Stats) -> anyhow::Result<()> {
    // The client must live as long as the stream.
    let mut client = pb::control_client::ControlClient::connect(plan.master.clone())
        .await
        .with_context(|| format!("connecting to {}", plan.master))?;
    let (to_master, rx) = mpsc::channel(TO_MASTER_QUEUE);
    let hello = pb::envelope::Body::Hello(pb::Hello {
        protocol_version: PROTOCOL_VERSION,
        node_id: node.id.clone(),
        rtsp_url: node.rtsp_url.clone(),
        max_sessions: plan.max_sessions,
        max_egress_bps: plan.max_egress_bps,
        // Serves no copies.
        ..pb::Hello::default()
    });
    to_master.send(batch(vec![(0, hello)])).await?;
    let outbound =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) });
    let mut request = tonic::Request::new(outbound);
    let bearer = MetadataValue::try_from(format!("Bearer {}", plan.token))
        .context("the token is not a valid header value")?;
    request.metadata_mut().insert("authorization", bearer);
    let mut inbound = client.attach(request).await?.into_inner();
    let first = inbound
        .message()
        .await?
        .context("the master closed the stream before Welcome")?;
    match first.messages.into_iter().next().and_then(|m| m.body) {
        Some(pb::envelope::Body::Welcome(_)) => {}
        Some(pb::envelope::Body::Refused(r)) => bail!("refused: {}", r.reason),
        other => bail!("expected Welcome, got {other:?}"),
    }
    stats.attached.fetch_add(1, Relaxed);
    let inventory = node.holdings.inventory();
    let titles = inventory.titles.len() as u64;
    to_master
        .send(batch(vec![
            (0, pb::envelope::Body::Inventory(inventory)),
            (0, load(plan)),
        ]))
        .await?;
    stats.inventories.fetch_add(1, Relaxed);
    stats.inventory_titles.fetch_add(titles, Relaxed);

    let mut tick = tokio::time::interval_at(Instant::now() + node.phase, plan.period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = sleep_until(plan.stop_at) => return Ok(()),
            _ = tick.tick() => {
                let delta = pb::envelope::Body::Delta(node.holdings.slide(plan.delta));
                to_master.send(batch(vec![(0, load(plan)), (0, delta)])).await?;
                stats.reports.fetch_add(1, Relaxed);
            }
            received = inbound.message() => {
                let Some(received) = received? else {
                    bail!("the master closed the stream");
                };
                for message in received.messages {
                    answer(plan, node, stats, &to_master, message).await?;
                }
            }
        }
    }
}

/// Answers one request from the master.
async fn answer(
    plan: &Plan,
    node: &Node,
    stats: &Stats,
    to_master: &mpsc::Sender<pb::Batch>,
    message: pb::Envelope,
) -> anyhow::Result<()> {
    use pb::envelope::Body;
    let id = message.request_id;
    let ack = (0, Body::Ack(pb::Ack { request_id: id }));
    let done = || {
        let done = pb::Done {
            request_id: id,
            error: String::new(),
        };
        (0, Body::Done(done))
    };
    match message.body {
        Some(Body::Prepare(_)) => {
            stats.prepares.fetch_add(1, Relaxed);
            if plan.prepare_delay.is_zero() {
                to_master.send(batch(vec![ack, done()])).await?;
            } else {
                to_master.send(batch(vec![ack])).await?;
                let (to_master, delay, done) = (to_master.clone(), plan.prepare_delay, done());
                tokio::spawn(async move {
                    sleep(delay).await;
                    let _ = to_master.send(batch(vec![done])).await;
                });
            }
        }
        Some(Body::Poll(_)) => {
            stats.polls.fetch_add(1, Relaxed);
            to_master
                .send(batch(vec![ack, (0, load(plan)), done()]))
                .await?;
        }
        other => eprintln!("clustersim: {}: unexpected {other:?}", node.id),
    }
    Ok(())
}

/// A load report: a steady fifth of the node's capacity.
fn load(plan: &Plan) -> pb::envelope::Body {
    pb::envelope::Body::Load(pb::LoadReport {
        sessions: plan.max_sessions / 5,
        egress_bps: plan.max_egress_bps / 5,
        ingress_bps: plan.max_egress_bps / 50,
        disk_used_bytes: 1 << 40,
        healthy: true,
    })
}

fn batch(messages: Vec<(u64, pb::envelope::Body)>) -> pb::Batch {
    pb::Batch {
        messages: messages
            .into_iter()
            .map(|(request_id, body)| pb::Envelope {
                request_id,
                body: Some(body),
            })
            .collect(),
    }
}
