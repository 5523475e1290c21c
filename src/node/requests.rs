//! The master's requests and the node's answers.
//!
//! A request is an envelope with a non-zero id. It is acknowledged at once
//! (`Ack`, sent without waiting for the next report) and answered (`Done`,
//! with an error text or none) when its work is finished. A Prepare's work
//! runs in a task of its own, so that several run at once and finish in
//! any order; its `Done` comes back through the connection's answers
//! channel. So does a copy's (`CopyStart`, see [`super::copy`]), preceded
//! by its last `CopyProgress`; `CopyRate` is done at once, `CopyCancel`
//! once the copy has stopped. Anything else the master sends is logged at
//! debug and ignored.

use std::sync::Arc;

use tokio::sync::mpsc;
use tracing::debug;
use url::Url;

use super::copy::OnDone;
use super::Node;
use crate::cluster::protocol::pb;
use crate::cluster::protocol::pb::envelope::Body;
use crate::mounts::Resolved;
use crate::serve::{self, Server};

/// The error of a Prepare refused because the node is full.
pub(super) const AT_SESSION_CAP: &str = "at session cap";

/// An envelope that is not a request.
pub(super) fn message(body: Body) -> pb::Envelope {
    pb::Envelope {
        request_id: 0,
        body: Some(body),
    }
}

fn ack(request_id: u64) -> pb::Envelope {
    message(Body::Ack(pb::Ack { request_id }))
}

fn done(request_id: u64, result: Result<(), String>) -> pb::Envelope {
    message(Body::Done(pb::Done {
        request_id,
        error: result.err().unwrap_or_default(),
    }))
}

/// Handles one envelope from the master (after its Welcome): returns what
/// to send at once; a Prepare's `Done` is sent later on `answers`.
pub(super) fn handle(
    node: &Arc<Node>,
    envelope: pb::Envelope,
    answers: &mpsc::UnboundedSender<pb::Envelope>,
) -> Vec<pb::Envelope> {
    let id = envelope.request_id;
    match envelope.body {
        Some(Body::Prepare(prepare)) if id != 0 => {
            let mut now = vec![ack(id)];
            now.extend(start_prepare(node, id, prepare.path, answers));
            now
        }
        Some(Body::Poll(_)) if id != 0 => {
            vec![ack(id), message(Body::Load(node.load())), done(id, Ok(()))]
        }
        Some(Body::CopyStart(start)) if id != 0 => {
            let answers = answers.clone();
            let finished: OnDone = Box::new(move |result, progress| {
                // The last progress first: a checksum failure is told there.
                let _ = answers.send(message(Body::CopyProgress(progress)));
                let _ = answers.send(done(id, result.map_err(|e| e.to_string())));
            });
            let mut now = vec![ack(id)];
            if let Err(e) = node.copies.start(start, finished) {
                now.push(done(id, Err(e)));
            }
            now
        }
        Some(Body::CopyRate(rate)) if id != 0 => {
            vec![
                ack(id),
                done(id, node.copies.set_rate(rate.copy_id, rate.rate_bps)),
            ]
        }
        Some(Body::CopyCancel(cancel)) if id != 0 => match node.copies.cancel(cancel.copy_id) {
            // Done once the copy has stopped (its own Done says "cancelled").
            Some(mut stopped) => {
                let answers = answers.clone();
                tokio::spawn(async move {
                    let _ = stopped.wait_for(|&stopped| stopped).await;
                    let _ = answers.send(done(id, Ok(())));
                });
                vec![ack(id)]
            }
            // Already over: nothing to stop.
            None => vec![ack(id), done(id, Ok(()))],
        },
        other => {
            debug!(
                request_id = id,
                message = kind(other.as_ref()),
                "ignored a message from the master"
            );
            Vec::new()
        }
    }
}

/// Starts preparing `path` for a player: the answer when it is known at
/// once (refused), otherwise `None` and the `Done` comes on `answers`.
///
/// The session is reserved before the work starts, so that Prepares
/// running at once cannot together promise more sessions than fit.
fn start_prepare(
    node: &Arc<Node>,
    id: u64,
    path: String,
    answers: &mpsc::UnboundedSender<pb::Envelope>,
) -> Option<pb::Envelope> {
    let Some(ticket) = node.reserve() else {
        return Some(done(id, Err(AT_SESSION_CAP.into())));
    };
    let resolved = match resolve(&node.server, &path) {
        Ok(resolved) => resolved,
        Err(e) => {
            node.release(ticket);
            return Some(done(id, Err(e)));
        }
    };
    let node = Arc::clone(node);
    let answers = answers.clone();
    tokio::spawn(async move {
        let result = serve::prepare(&node.server, &resolved).await;
        if let Err(e) = &result {
            debug!(request_id = id, path, error = %e, "prepare failed");
            node.release(ticket);
        }
        // The stream may be gone by now: then the master never hears of
        // it, and the reservation (if any) simply expires.
        let _ = answers.send(done(id, result));
    });
    None
}

/// The presentation a player asking for `path` (a request path, perhaps
/// with a query) will get: parsed as a request URL is, so that `..` and
/// percent-encoding resolve as they will for that player.
fn resolve(server: &Server, path: &str) -> Result<Resolved, String> {
    let url = path
        .starts_with('/')
        .then(|| Url::parse(&format!("rtsp://node{path}")).ok())
        .flatten()
        .ok_or_else(|| format!("{path:?} is not a request path"))?;
    server
        .mounts()
        .resolve(url.path())
        .ok_or_else(|| format!("no mount for {path}"))
}

/// A message's kind, for the log (its contents may be large).
fn kind(body: Option<&Body>) -> &'static str {
    match body {
        None => "unknown",
        Some(Body::Hello(_)) => "Hello",
        Some(Body::Welcome(_)) => "Welcome",
        Some(Body::Load(_)) => "LoadReport",
        Some(Body::Inventory(_)) => "Inventory",
        Some(Body::Delta(_)) => "InventoryDelta",
        Some(Body::Prepare(_)) => "Prepare without a request id",
        Some(Body::Poll(_)) => "Poll without a request id",
        Some(Body::Ack(_)) => "Ack",
        Some(Body::Done(_)) => "Done",
        Some(Body::Refused(_)) => "Refused",
        Some(Body::CopyStart(_)) => "CopyStart without a request id",
        Some(Body::CopyRate(_)) => "CopyRate without a request id",
        Some(Body::CopyCancel(_)) => "CopyCancel without a request id",
        Some(Body::CopyProgress(_)) => "CopyProgress",
    }
}
