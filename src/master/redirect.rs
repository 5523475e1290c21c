//! The master's RTSP port: players send OPTIONS and DESCRIBE here and are
//! sent to a node with `302 Found` (never 301: a player may remember a
//! permanent redirect).
//!
//! For a DESCRIBE of a path under a mount (its player accounts checked as a
//! node checks them), the master takes the placement's candidates in order,
//! asks each to prepare the title (bounded by `prepare_timeout_ms`) and
//! sends the player to the first that is ready; when none is, `503` with
//! `Retry-After`. The node checks the player's credentials again: a redirect
//! never lets anyone in.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use futures_util::StreamExt as _;
use rtsp_types::{headers, Method, Request, Response, StatusCode, Version};
use streamcache_rtsp::auth::{AuthRequest, NonceKey, Verdict};
use streamcache_rtsp::codec::{CodecError, RtspCodec};
use streamcache_rtsp::framing::{Frame, Limits};
use tokio::io::AsyncWriteExt as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_util::codec::{Encoder as _, FramedRead};
use tracing::{debug, info, warn};

use super::copies;
use super::metrics::MasterMetrics;
use super::state::{MasterState, Placement};
use crate::cluster::protocol::pb;
use crate::mounts::{Mounts, Resolved};

const SERVER: &str = concat!("streamcache-master/", env!("CARGO_PKG_VERSION"));
/// The methods of the nodes players are sent to.
const NODE_METHODS: &str =
    "OPTIONS, DESCRIBE, SETUP, PLAY, PAUSE, TEARDOWN, GET_PARAMETER, SET_PARAMETER";
/// A connection that sends no request for this long is closed.
const IDLE: Duration = Duration::from_secs(30);

pub struct Redirector {
    pub state: Arc<MasterState>,
    pub metrics: Arc<MasterMetrics>,
    pub mounts: Mounts,
    pub limits: Limits,
    pub retry_after_secs: u64,
    nonces: NonceKey,
    epoch: Instant,
    /// Under overload every player is refused: one line a second says so.
    refusals: Throttle,
}

/// At most one log line a second, with how many were left out.
#[derive(Default)]
struct Throttle(std::sync::Mutex<(Option<Instant>, u64)>);

impl Throttle {
    /// `Some(left out since the last line)` when a line may be written now.
    fn allow(&self, now: Instant) -> Option<u64> {
        let mut state = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let (last, skipped) = &mut *state;
        if last.is_some_and(|t| now.saturating_duration_since(t) < Duration::from_secs(1)) {
            *skipped += 1;
            return None;
        }
        *last = Some(now);
        Some(std::mem::take(skipped))
    }
}

impl Redirector {
    pub fn new(
        state: Arc<MasterState>,
        metrics: Arc<MasterMetrics>,
        mounts: Mounts,
        limits: Limits,
        retry_after_secs: u64,
    ) -> Redirector {
        Redirector {
            state,
            metrics,
            mounts,
            limits,
            retry_after_secs,
            nonces: NonceKey::random(),
            epoch: Instant::now(),
            refusals: Throttle::default(),
        }
    }
}

/// Accepts players until the task is dropped.
pub async fn run(listener: TcpListener, redirector: Arc<Redirector>) {
    loop {
        let (stream, peer) = crate::listener::accept(&listener, "rtsp").await;
        let _ = stream.set_nodelay(true);
        tokio::spawn(connection(Arc::clone(&redirector), stream, peer));
    }
}

async fn connection(redirector: Arc<Redirector>, stream: TcpStream, peer: SocketAddr) {
    let (reader, mut writer) = stream.into_split();
    let mut frames = FramedRead::new(reader, RtspCodec::new(redirector.limits));
    loop {
        let frame = match tokio::time::timeout(IDLE, frames.next()).await {
            Ok(Some(frame)) => frame,
            Ok(None) | Err(_) => break,
        };
        let (response, close) = match frame {
            Ok(Frame::Request(request)) => {
                let response = answer(&redirector, &request, peer).await;
                let close = response.status() == StatusCode::BadRequest;
                (response, close)
            }
            // Nothing is set up here: interleaved data and responses are noise.
            Ok(_) => continue,
            Err(CodecError::Framing { error, cseq }) => {
                redirector.metrics.request("bad_request");
                info!(player = %peer, error = %error, "bad request from player: closing connection");
                let mut response =
                    Response::builder(Version::V1_0, StatusCode::from(error.status()))
                        .header(headers::SERVER, SERVER)
                        .header(headers::CONNECTION, "close");
                if let Some(cseq) = cseq {
                    response = response.header(headers::CSEQ, cseq.to_string());
                }
                (response.build(Vec::new()), true)
            }
            Err(CodecError::Io(_)) => break,
        };
        let mut bytes = BytesMut::new();
        if RtspCodec::default().encode(&response, &mut bytes).is_err()
            || writer.write_all(&bytes).await.is_err()
            || close
        {
            break;
        }
    }
    let _ = writer.shutdown().await;
}

/// The answer to one request.
async fn answer(
    redirector: &Redirector,
    request: &Request<Vec<u8>>,
    peer: SocketAddr,
) -> Response<Vec<u8>> {
    let started = Instant::now();
    let reply = |status: u16| {
        let mut builder = Response::builder(Version::V1_0, StatusCode::from(status))
            .header(headers::SERVER, SERVER);
        if let Some(cseq) = request.header(&headers::CSEQ) {
            builder = builder.header(headers::CSEQ, cseq.as_str());
        }
        builder
    };
    if *request.method() == Method::Options {
        // What the player will get from the node it is sent to: rtspsrc
        // refuses a server whose OPTIONS does not list SETUP and PLAY.
        return reply(200)
            .header(headers::PUBLIC, NODE_METHODS)
            .build(Vec::new());
    }
    let Some(url) = request.request_uri() else {
        redirector.metrics.request("bad_request");
        return reply(400).build(Vec::new());
    };
    let Some(resolved) = redirector.mounts.resolve(url.path()) else {
        redirector.metrics.request("not_found");
        return reply(404).build(Vec::new());
    };
    if let Err(challenges) = authenticate(redirector, request, &resolved, peer) {
        redirector.metrics.request("unauthorized");
        let mut builder = reply(401);
        for challenge in challenges {
            builder = builder.header(headers::WWW_AUTHENTICATE, challenge);
        }
        return builder.build(Vec::new());
    }
    if *request.method() != Method::Describe {
        // Sessions live on the nodes; a player starts here with DESCRIBE.
        redirector.metrics.request("refused");
        return reply(455)
            .header(headers::ALLOW, "OPTIONS, DESCRIBE")
            .build(Vec::new());
    }
    let path_and_query = match url.query() {
        Some(query) => format!("{}?{query}", url.path()),
        None => url.path().to_owned(),
    };
    let (placement, node_url) = place(redirector, &resolved, &path_and_query, started).await;
    let status = placement.status;
    let response = match node_url {
        Some(node_url) => {
            redirector.metrics.request("redirected");
            redirector.metrics.redirected_in(started.elapsed());
            debug!(player = %peer, path = %path_and_query, node = ?placement.node, reason = ?placement.reason, "redirected");
            reply(status)
                .header(headers::LOCATION, format!("{node_url}{path_and_query}"))
                .build(Vec::new())
        }
        None => {
            redirector.metrics.request("no_node");
            if let Some(left_out) = redirector.refusals.allow(Instant::now()) {
                warn!(player = %peer, path = %path_and_query, refused_by = ?placement.refused_by, left_out, "no node can take this player: 503 (at most one line a second; left_out: refusals since the last)");
            }
            reply(status)
                .header(
                    headers::RETRY_AFTER,
                    redirector.retry_after_secs.to_string(),
                )
                .build(Vec::new())
        }
    };
    redirector.state.record(placement);
    response
}

/// Asks the candidates in order until one is ready for the player.
async fn place(
    redirector: &Redirector,
    resolved: &Resolved,
    path: &str,
    started: Instant,
) -> (Placement, Option<String>) {
    let state = &redirector.state;
    let mut refused_by = Vec::new();
    for (node, url, reason) in state.candidates(&resolved.key, Instant::now()) {
        // Another node holds it: this one copies it from there rather
        // than from the origin (and knows it before it is asked to prepare).
        let (orders, rates) = state.copies_for_placement(&resolved.key, &node, Instant::now());
        if !orders.is_empty() {
            copies::start(state, &redirector.metrics, orders, rates).await;
        }
        let prepare = pb::envelope::Body::Prepare(pb::Prepare {
            path: path.to_owned(),
        });
        let outcome = match state.request(&node, prepare) {
            None => Err("no control connection".to_owned()),
            Some(in_flight) => {
                match tokio::time::timeout(state.settings.prepare_timeout, in_flight.answer).await {
                    Ok(Ok(answer)) => answer,
                    Ok(Err(_)) => Err("control connection lost".to_owned()),
                    Err(_) => {
                        state.abandon(&node, in_flight.request_id);
                        Err("no answer in time".to_owned())
                    }
                }
            }
        };
        match outcome {
            Ok(()) => {
                state.assigned(&node, &resolved.key, reason, Instant::now());
                let placement = Placement {
                    at: started,
                    path: path.to_owned(),
                    key: resolved.key.clone(),
                    node: Some(node),
                    reason: Some(reason.as_str()),
                    status: 302,
                    refused_by,
                    micros: elapsed_micros(started),
                };
                return (placement, Some(url));
            }
            Err(why) => {
                redirector.metrics.prepare_failed();
                info!(%node, path, reason = %why, "node did not prepare: trying the next");
                refused_by.push(format!("{node}: {why}"));
            }
        }
    }
    let placement = Placement {
        at: started,
        path: path.to_owned(),
        key: resolved.key.clone(),
        node: None,
        reason: None,
        status: 503,
        refused_by,
        micros: elapsed_micros(started),
    };
    (placement, None)
}

fn elapsed_micros(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// The mount's player accounts, as on a node: `Err(challenges)` for a 401.
fn authenticate(
    redirector: &Redirector,
    request: &Request<Vec<u8>>,
    resolved: &Resolved,
    peer: SocketAddr,
) -> Result<(), Vec<String>> {
    let Some(guard) = &resolved.mount.player_auth else {
        return Ok(());
    };
    let method: &str = request.method().into();
    let client = peer.ip().to_string();
    let verdict = guard.check(
        &redirector.nonces,
        AuthRequest {
            authorization: request.header(&headers::AUTHORIZATION).map(|v| v.as_str()),
            method,
            uri: request.request_uri().map_or("*", |u| u.as_str()),
            client: &client,
            now: redirector.epoch.elapsed().as_secs(),
        },
    );
    match verdict {
        Verdict::Allowed(_) => Ok(()),
        Verdict::Refused {
            why,
            claimed,
            challenges,
        } => {
            debug!(player = %peer, realm = guard.realm(), user = ?claimed, %why, "authentication required: 401");
            Err(challenges)
        }
    }
}
