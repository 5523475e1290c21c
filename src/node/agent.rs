//! The control connection, from the node's side: connect, say Hello, wait
//! for the master's Welcome, send the full inventory, then a report every
//! period (load, and the inventory's changes when there are any) and the
//! answers to the master's requests. When the master is unreachable or the
//! stream breaks: again after a backoff, forever.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};
use tonic::metadata::MetadataValue;
use tonic::transport::Endpoint;
use tonic::{Code, Streaming};
use tracing::{debug, error, info, warn};

use super::inventory::{self, Snapshot};
use super::requests::{self, message};
use super::{Node, Status};
use crate::cluster::protocol::pb::control_client::ControlClient;
use crate::cluster::protocol::pb::envelope::Body;
use crate::cluster::protocol::{pb, PROTOCOL_VERSION};
use crate::config::ClusterConfig;
use crate::origin::Backoff;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// A master that accepts the stream but says nothing is as good as down.
const WELCOME_TIMEOUT: Duration = Duration::from_secs(10);
/// HTTP/2 pings find a master gone without a word (a cut cable, a frozen
/// host) that TCP alone would notice only after many minutes.
const KEEP_ALIVE: Duration = Duration::from_secs(10);
/// Batches waiting to be sent. A master that leaves this many unread is
/// not reading: the stream is dropped and made again, rather than queueing
/// without bound or blocking the answers to its own requests.
const OUTGOING_BATCHES: usize = 256;
/// While the master stays unreachable, how often that is said again.
const REMIND_EVERY: Duration = Duration::from_secs(60);
/// Used when the Welcome names no period.
const DEFAULT_PERIOD: Duration = Duration::from_secs(1);

/// Why an attempt found no master to work with.
enum Failure {
    /// Unreachable, or the stream failed before the Welcome.
    Unreachable(String),
    /// The master does not want this node (its Refused, or the token).
    Refused(String),
}

/// Connects, serves the stream while it lasts, and again, forever.
pub(super) async fn run(
    node: Arc<Node>,
    cluster: &ClusterConfig,
    hello: pb::Hello,
    status: &Status,
) {
    let master = cluster.master.get_ref().as_str();
    let mut failures = Failures::default();
    let mut backoff = new_backoff();
    loop {
        match connect(cluster, &hello).await {
            Ok(link) => {
                info!(
                    master,
                    period_ms = link.period.as_millis(),
                    failed_attempts = failures.count,
                    "connected to the cluster master"
                );
                failures = Failures::default();
                status.set_connected(true);
                let why = link.serve(&node).await;
                status.set_connected(false);
                info!(master, reason = %why, "disconnected from the cluster master");
                backoff = new_backoff();
            }
            Err(failure) => failures.note(master, &failure),
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

/// 200 ms doubling to 5 s, with jitter: a restarted master has all its
/// nodes back within seconds, not all in the same instant.
fn new_backoff() -> Backoff {
    Backoff::new(Duration::from_millis(200), Duration::from_secs(5))
}

/// Failed attempts since the node was last connected. The first is
/// logged, then a different reason, else one line a minute at most: a
/// master down for an hour must not fill the log with one line per attempt.
#[derive(Default)]
struct Failures {
    count: u32,
    /// When the last line was logged, and its reason.
    logged: Option<(Instant, String)>,
}

impl Failures {
    fn note(&mut self, master: &str, failure: &Failure) {
        self.count = self.count.saturating_add(1);
        let now = Instant::now();
        let (Failure::Refused(why) | Failure::Unreachable(why)) = failure;
        let due = self.logged.as_ref().is_none_or(|(at, logged)| {
            logged != why || now.saturating_duration_since(*at) >= REMIND_EVERY
        });
        let attempts = self.count;
        match failure {
            Failure::Refused(reason) if due => {
                error!(master, reason = %reason, attempts, "the cluster master refused this node; trying again")
            }
            Failure::Unreachable(why) if due => {
                warn!(master, error = %why, attempts, "cannot reach the cluster master; trying again")
            }
            _ => {
                debug!(master, error = %why, attempts, "cluster master attempt failed");
                return;
            }
        }
        self.logged = Some((now, why.clone()));
    }
}

/// A control stream the master has welcomed.
struct Link {
    outgoing: mpsc::Sender<pb::Batch>,
    incoming: Streaming<pb::Batch>,
    period: Duration,
    /// What arrived after the Welcome in its batch.
    early: Vec<pb::Envelope>,
}

/// Opens the stream with Hello first and the token in its metadata, and
/// waits for the Welcome.
async fn connect(cluster: &ClusterConfig, hello: &pb::Hello) -> Result<Link, Failure> {
    let unreachable = |e: &dyn std::fmt::Display| Failure::Unreachable(e.to_string());
    let endpoint = Endpoint::from_shared(cluster.master.get_ref().clone())
        .map_err(|e| unreachable(&e))?
        .connect_timeout(CONNECT_TIMEOUT)
        .http2_keep_alive_interval(KEEP_ALIVE)
        .keep_alive_timeout(KEEP_ALIVE)
        .keep_alive_while_idle(true);
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| unreachable(&error_chain(&e)))?;
    let (outgoing, queued) = mpsc::channel(OUTGOING_BATCHES);
    let first = pb::Batch {
        messages: vec![message(Body::Hello(hello.clone()))],
    };
    outgoing
        .try_send(first)
        .map_err(|_| unreachable(&"the outgoing queue refused the Hello"))?;
    // The request's body: the batches queued, in order, until the sender
    // (the Link) is dropped, which ends the stream.
    let body = futures_util::stream::unfold(queued, |mut queued| async move {
        queued.recv().await.map(|batch| (batch, queued))
    });
    let mut request = tonic::Request::new(body);
    let bearer = MetadataValue::try_from(format!("Bearer {}", cluster.token))
        .map_err(|_| Failure::Refused("the cluster token is not a valid header value".into()))?;
    request.metadata_mut().insert("authorization", bearer);
    let mut incoming = ControlClient::new(channel)
        .attach(request)
        .await
        .map_err(failure_of)?
        .into_inner();
    let (welcome, early) = tokio::time::timeout(WELCOME_TIMEOUT, welcome(&mut incoming))
        .await
        .map_err(|_| unreachable(&"the master sent no Welcome in time"))??;
    if welcome.protocol_version != PROTOCOL_VERSION {
        return Err(Failure::Refused(format!(
            "the master speaks protocol version {}, this node {PROTOCOL_VERSION}",
            welcome.protocol_version
        )));
    }
    let period = match welcome.report_period_ms {
        0 => DEFAULT_PERIOD,
        ms => Duration::from_millis(u64::from(ms).clamp(50, 60_000)),
    };
    Ok(Link {
        outgoing,
        incoming,
        period,
        early,
    })
}

/// Reads until the Welcome (or a Refused); returns it and whatever
/// followed it in the same batch.
async fn welcome(
    incoming: &mut Streaming<pb::Batch>,
) -> Result<(pb::Welcome, Vec<pb::Envelope>), Failure> {
    loop {
        let batch = match incoming.message().await {
            Ok(Some(batch)) => batch,
            Ok(None) => {
                return Err(Failure::Unreachable(
                    "the master closed the stream without a Welcome".into(),
                ))
            }
            Err(status) => return Err(failure_of(status)),
        };
        let mut messages = batch.messages.into_iter();
        while let Some(envelope) = messages.next() {
            match envelope.body {
                Some(Body::Welcome(welcome)) => return Ok((welcome, messages.collect())),
                Some(Body::Refused(refused)) => return Err(Failure::Refused(refused.reason)),
                _ => debug!(
                    request_id = envelope.request_id,
                    "ignored a message from the master before its Welcome"
                ),
            }
        }
    }
}

/// A failed call: the master's refusal of the token, or anything else.
fn failure_of(status: tonic::Status) -> Failure {
    match status.code() {
        Code::Unauthenticated | Code::PermissionDenied => {
            Failure::Refused(status.message().to_owned())
        }
        code => Failure::Unreachable(format!("{code:?}: {}", status.message())),
    }
}

/// An error with its sources: tonic's transport error alone says only
/// "transport error". A source some error already tells is not repeated.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let told = cause.to_string();
        if !text.contains(&told) {
            text.push_str(": ");
            text.push_str(&told);
        }
        source = cause.source();
    }
    text
}

impl Link {
    /// Serves the stream until it breaks; returns why it ended.
    async fn serve(mut self, node: &Arc<Node>) -> String {
        let (answers, mut finished) = mpsc::unbounded_channel();
        let mut sent: Snapshot = node.holdings();
        let first = vec![
            message(Body::Inventory(inventory::inventory(&sent))),
            message(Body::Load(node.load())),
        ];
        if let Err(why) = self.send(first) {
            return why;
        }
        for envelope in std::mem::take(&mut self.early) {
            if let Err(why) = self.send(requests::handle(node, envelope, &answers)) {
                return why;
            }
        }
        let mut tick = tokio::time::interval_at(Instant::now() + self.period, self.period);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            let result = tokio::select! {
                _ = tick.tick() => {
                    let now = node.holdings();
                    let mut report = vec![message(Body::Load(node.load()))];
                    report.extend(inventory::delta(&sent, &now).map(|d| message(Body::Delta(d))));
                    report.extend(
                        node.copies
                            .progress()
                            .into_iter()
                            .map(|p| message(Body::CopyProgress(p))),
                    );
                    let result = self.send(report);
                    // Unsent, the change is sent with the next report.
                    if result.is_ok() {
                        sent = now;
                    }
                    result
                }
                Some(answer) = finished.recv() => {
                    // Answers finished together travel together.
                    let mut ready = vec![answer];
                    while let Ok(more) = finished.try_recv() {
                        ready.push(more);
                    }
                    self.send(ready)
                }
                received = self.incoming.message() => match received {
                    Ok(Some(batch)) => self.received(node, batch, &answers),
                    Ok(None) => Err("the master closed the stream".to_owned()),
                    Err(status) => Err(format!("{:?}: {}", status.code(), status.message())),
                },
            };
            if let Err(why) = result {
                return why;
            }
        }
    }

    /// Handles one batch from the master.
    fn received(
        &self,
        node: &Arc<Node>,
        batch: pb::Batch,
        answers: &mpsc::UnboundedSender<pb::Envelope>,
    ) -> Result<(), String> {
        let mut now = Vec::new();
        for envelope in batch.messages {
            if let Some(Body::Refused(refused)) = &envelope.body {
                error!(reason = %refused.reason, "the cluster master refused this node");
                return Err(format!("refused: {}", refused.reason));
            }
            now.extend(requests::handle(node, envelope, answers));
        }
        self.send(now)
    }

    /// Queues one batch (nothing for no messages).
    fn send(&self, messages: Vec<pb::Envelope>) -> Result<(), String> {
        if messages.is_empty() {
            return Ok(());
        }
        self.outgoing
            .try_send(pb::Batch { messages })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => {
                    format!("the master is not reading ({OUTGOING_BATCHES} batches unsent)")
                }
                mpsc::error::TrySendError::Closed(_) => "the stream ended".to_owned(),
            })
    }
}
