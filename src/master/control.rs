//! The master's end of the control protocol: a gRPC service (`Control.Attach`,
//! one bidirectional stream per node) served over HTTP/2 connection by
//! connection, so that a peer speaking anything else is refused with a log
//! line naming it, and disturbs no other connection.
//!
//! A call must carry the cluster token (`authorization: Bearer …`, checked
//! before the stream is accepted) and open with a valid `Hello`; the node is
//! then registered and answered `Welcome`, and everything it sends after is
//! applied to the master's state as it arrives.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::Stream;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use streamcache_rtsp::auth::ct_eq;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tonic::codegen::Service as _;
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, info, warn};

use super::copies;
use super::metrics::MasterMetrics;
use super::state::MasterState;
use crate::cluster::content::Delta;
use crate::cluster::membership::Registered;
use crate::cluster::protocol::{check_hello, held_of, pb, PROTOCOL_VERSION};

/// A node must send its Hello this soon after opening the stream.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// Batches queued toward one node; a node that stops reading loses requests
/// (they fail as unanswered) rather than growing the queue.
const TO_NODE_QUEUE: usize = 256;
/// Largest message accepted from a node (a full inventory of 100,000
/// titles is a few MiB).
const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// The peer address of a control connection, for the token check's log.
#[derive(Clone, Copy)]
struct Peer(SocketAddr);

type BatchStream = Pin<Box<dyn Stream<Item = Result<pb::Batch, Status>> + Send>>;

struct ControlService {
    state: Arc<MasterState>,
    metrics: Arc<MasterMetrics>,
}

/// Serves nodes' control connections until the task is dropped.
pub async fn run(
    listener: TcpListener,
    state: Arc<MasterState>,
    metrics: Arc<MasterMetrics>,
    token: String,
) {
    let service = ControlService {
        state,
        metrics: Arc::clone(&metrics),
    };
    let checked = pb::control_server::ControlServer::new(service)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let token_metrics = Arc::clone(&metrics);
    let quiet = Arc::new(QuietLog::default());
    let intercepted = tonic::service::interceptor::InterceptedService::new(
        checked,
        move |request: Request<()>| check_token(request, &token, &token_metrics, &quiet),
    );
    let routes = tonic::service::Routes::new(intercepted).prepare();
    loop {
        let (stream, peer) = crate::listener::accept(&listener, "control").await;
        let _ = stream.set_nodelay(true);
        let routes = routes.clone();
        let metrics = Arc::clone(&metrics);
        tokio::spawn(async move {
            // hyper waits for the client's preface without a bound of its own.
            if tokio::time::timeout(HELLO_TIMEOUT, preface(&stream))
                .await
                .is_err()
            {
                metrics.control_refused("malformed");
                info!(%peer, "control connection closed: no HTTP/2 preface within 5 s");
                return;
            }
            let service =
                hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
                    request.extensions_mut().insert(Peer(peer));
                    // The router is always ready (it needs no poll_ready).
                    routes.clone().call(request)
                });
            let served = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .keep_alive_interval(Duration::from_secs(10))
                .keep_alive_timeout(Duration::from_secs(20))
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(e) = served {
                // Not HTTP/2 (or not gRPC), or a connection cut: nothing
                // else is affected.
                metrics.control_refused("malformed");
                info!(%peer, error = %e, "control connection refused or broken: not a valid HTTP/2 peer");
            }
        });
    }
}

/// A misconfigured node retries every few seconds: its refusal is logged
/// once per address per minute (the metric counts every one).
#[derive(Default)]
struct QuietLog(std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, Instant>>);

impl QuietLog {
    const EVERY: Duration = Duration::from_secs(60);

    fn should_log(&self, peer: Option<SocketAddr>) -> bool {
        let Some(peer) = peer else { return true };
        let now = Instant::now();
        let mut last = self.0.lock().unwrap_or_else(|e| e.into_inner());
        last.retain(|_, at| now.saturating_duration_since(*at) < Self::EVERY);
        if last.contains_key(&peer.ip()) {
            return false;
        }
        last.insert(peer.ip(), now);
        true
    }
}

/// Waits until the 24 bytes of an HTTP/2 client preface have arrived (or
/// the peer closed), without reading them.
async fn preface(stream: &tokio::net::TcpStream) {
    let mut buf = [0u8; 24];
    loop {
        match stream.peek(&mut buf).await {
            Ok(n) if n < buf.len() && n > 0 => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            _ => return,
        }
    }
}

fn check_token(
    request: Request<()>,
    token: &str,
    metrics: &MasterMetrics,
    quiet: &QuietLog,
) -> Result<Request<()>, Status> {
    let presented = request
        .metadata()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if presented.is_some_and(|p| ct_eq(p.as_bytes(), token.as_bytes())) {
        return Ok(request);
    }
    let peer = request.extensions().get::<Peer>().map(|p| p.0);
    metrics.control_refused("token");
    if quiet.should_log(peer) {
        warn!(peer = ?peer, presented = presented.is_some(), "control connection refused: missing or wrong cluster token (logged once a minute per address)");
    }
    Err(Status::unauthenticated("missing or wrong cluster token"))
}

#[tonic::async_trait]
impl pb::control_server::Control for ControlService {
    type AttachStream = BatchStream;

    async fn attach(
        &self,
        request: Request<Streaming<pb::Batch>>,
    ) -> Result<Response<BatchStream>, Status> {
        let peer = request.extensions().get::<Peer>().map(|p| p.0);
        let mut inbound = request.into_inner();
        let first = match tokio::time::timeout(HELLO_TIMEOUT, inbound.message()).await {
            Ok(Ok(Some(batch))) => batch,
            Ok(Ok(None)) => return Err(self.refuse(peer, "the stream ended before Hello")),
            Ok(Err(status)) => {
                return Err(self.refuse(peer, &format!("malformed message: {}", status.message())))
            }
            Err(_) => return Err(self.refuse(peer, "no Hello within 5 s")),
        };
        let mut messages = first.messages.into_iter();
        let hello = match messages.next().and_then(|m| m.body) {
            Some(pb::envelope::Body::Hello(hello)) => hello,
            _ => return Err(self.refuse(peer, "the first message must be Hello")),
        };
        let node = match check_hello(&hello) {
            Ok(node) => node,
            Err(reason) => {
                self.refuse(peer, &format!("node `{}`: {reason}", hello.node_id));
                // Said in the stream too, so the node can log why.
                let refused = envelope(0, pb::envelope::Body::Refused(pb::Refused { reason }));
                return Ok(Response::new(Box::pin(futures_util::stream::iter([Ok(
                    refused,
                )]))));
            }
        };
        let (to_node, from_master) = mpsc::channel(TO_NODE_QUEUE);
        let welcome = envelope(
            0,
            pb::envelope::Body::Welcome(pb::Welcome {
                protocol_version: PROTOCOL_VERSION,
                report_period_ms: u32::try_from(self.state.settings.report_period.as_millis())
                    .unwrap_or(u32::MAX),
            }),
        );
        // The Welcome is queued before the link is visible to any request.
        let _ = to_node.try_send(welcome);
        let (registered, epoch) = self.state.connect(&node, to_node, Instant::now());
        let what = match registered {
            Registered::New => "node registered",
            Registered::Rejoined => "node rejoined",
        };
        info!(node = %node.node_id, peer = ?peer, rtsp_url = %node.rtsp_url, max_sessions = node.capacity.max_sessions, max_egress_bps = node.capacity.max_egress_bps, "{what}");
        for message in messages {
            apply(&self.state, &node.node_id, message);
        }
        tokio::spawn(read_node(
            Arc::clone(&self.state),
            node.node_id,
            epoch,
            inbound,
        ));
        let outbound = futures_util::stream::unfold(from_master, |mut rx| async move {
            rx.recv().await.map(|batch| (Ok(batch), rx))
        });
        Ok(Response::new(Box::pin(outbound)))
    }
}

impl ControlService {
    fn refuse(&self, peer: Option<SocketAddr>, reason: &str) -> Status {
        self.metrics.control_refused("hello");
        warn!(peer = ?peer, reason, "control connection refused");
        Status::failed_precondition(reason.to_owned())
    }
}

fn envelope(request_id: u64, body: pb::envelope::Body) -> pb::Batch {
    pb::Batch {
        messages: vec![pb::Envelope {
            request_id,
            body: Some(body),
        }],
    }
}

/// Applies what a node sends until its stream ends.
async fn read_node(
    state: Arc<MasterState>,
    node: String,
    epoch: u64,
    mut inbound: Streaming<pb::Batch>,
) {
    let why = loop {
        match inbound.message().await {
            Ok(Some(batch)) => {
                if !state.is_current(&node, epoch) {
                    break "replaced by a newer connection of the same node".to_owned();
                }
                for message in batch.messages {
                    match message.body {
                        Some(pb::envelope::Body::Inventory(inventory)) => {
                            replace_inventory(&state, &node, inventory).await
                        }
                        _ => apply(&state, &node, message),
                    }
                }
            }
            Ok(None) => break "closed by the node".to_owned(),
            Err(status) => break format!("broken: {}", status.message()),
        }
    };
    if state.disconnect(&node, epoch) {
        info!(%node, reason = %why, "node control stream ended");
    }
}

/// Titles a node holds, as content-map changes.
fn holds(titles: Vec<pb::Title>) -> Vec<Delta> {
    titles
        .into_iter()
        .map(|t| {
            let held = held_of(&t);
            Delta::Holds { key: t.key, held }
        })
        .collect()
}

/// Titles applied under one hold of the state's lock: a node's full
/// inventory (10,000s of titles when a node reconnects) goes in by chunks,
/// so that placements wait for at most one chunk, never for the whole of it.
const INVENTORY_CHUNK: usize = 512;

/// A node's full inventory replaces what it was known to hold.
async fn replace_inventory(state: &MasterState, node: &str, inventory: pb::Inventory) {
    state.forget_inventory(node);
    let mut titles = inventory.titles;
    while !titles.is_empty() {
        let rest = titles.split_off(titles.len().min(INVENTORY_CHUNK));
        state.delta(node, holds(titles));
        titles = rest;
        tokio::task::yield_now().await;
    }
}

/// One message from a registered node.
fn apply(state: &MasterState, node: &str, message: pb::Envelope) {
    use pb::envelope::Body;
    match message.body {
        Some(Body::Load(load)) => {
            state.report(node, &load, Instant::now());
            // Its players' egress changed what its copies may use.
            copies::send_rates(state, state.copy_rates_after_report(node));
        }
        Some(Body::CopyProgress(progress)) => state.copy_progress(node, &progress),
        // The first batch's inventory (later ones are applied in chunks
        // by `read_node`).
        Some(Body::Inventory(inventory)) => {
            state.forget_inventory(node);
            state.delta(node, holds(inventory.titles));
        }
        Some(Body::Delta(delta)) => {
            let holds = holds(delta.holds).into_iter();
            let dropped = delta.dropped.into_iter().map(|key| Delta::Dropped { key });
            state.delta(node, holds.chain(dropped).collect());
        }
        Some(Body::Done(done)) => state.answered(node, done.request_id, done.error),
        Some(Body::Ack(ack)) => state.acked(node, ack.request_id),
        other => debug!(%node, message = ?other, "unexpected control message from a node: ignored"),
    }
}
