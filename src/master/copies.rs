//! Carrying out the copies the master decides: `CopyStart` requests to
//! their destinations, each one's `Done` watched (a failed copy is resumed
//! from another source), `CopyRate` for every rate the allocation changes.
//! The decisions themselves are in the state ([`MasterState`]) and the pure
//! parts under it.

use std::sync::Arc;

use tokio::sync::oneshot;
use tokio::time::Instant;
use tracing::{info, warn};

use super::metrics::MasterMetrics;
use super::state::{CopyOrder, MasterState, RateChange};
use crate::cluster::protocol::pb;
use crate::cluster::schedule::CopyId;

/// Starts `orders` and sends `rates`; returns once every destination has
/// acknowledged its CopyStart (or did not within the prepare timeout), so
/// that a Prepare sent next finds the copy known.
pub async fn start(
    state: &Arc<MasterState>,
    metrics: &Arc<MasterMetrics>,
    orders: Vec<CopyOrder>,
    rates: Vec<RateChange>,
) {
    send_rates(state, rates);
    let acks: Vec<oneshot::Receiver<()>> = orders
        .into_iter()
        .filter_map(|order| launch(state, metrics, order))
        .collect();
    for acked in acks {
        let _ = tokio::time::timeout(state.settings.prepare_timeout, acked).await;
    }
}

/// Sends one CopyStart and watches for its Done.
fn launch(
    state: &Arc<MasterState>,
    metrics: &Arc<MasterMetrics>,
    order: CopyOrder,
) -> Option<oneshot::Receiver<()>> {
    let id = order.start.copy_id;
    info!(copy = id, key = %order.start.key, source = %order.start.source_node, destination = %order.destination, rate_bps = order.start.rate_bps, "copy started");
    metrics.copy_started();
    let request = state.request(
        &order.destination,
        pb::envelope::Body::CopyStart(order.start),
    );
    let state = Arc::clone(state);
    let metrics = Arc::clone(metrics);
    match request {
        None => {
            ended(&state, &metrics, id, Err("no control connection".into()));
            None
        }
        Some(in_flight) => {
            tokio::spawn(async move {
                let result = in_flight
                    .answer
                    .await
                    .unwrap_or_else(|_| Err("control connection lost".into()));
                ended(&state, &metrics, id, result);
            });
            Some(in_flight.acked)
        }
    }
}

fn ended(
    state: &Arc<MasterState>,
    metrics: &Arc<MasterMetrics>,
    id: CopyId,
    result: Result<(), String>,
) {
    let Some(end) = state.copy_ended(id, result, Instant::now()) else {
        return;
    };
    let copy = &end.copy;
    match copy.outcome.as_deref() {
        Some("done") => {
            metrics.copy_ended("done");
            info!(copy = id, key = %copy.key, source = %copy.source, destination = %copy.destination, bytes = copy.bytes, "copy done");
        }
        why => {
            metrics.copy_ended("failed");
            warn!(copy = id, key = %copy.key, source = %copy.source, destination = %copy.destination, held_to = copy.held_to_secs, error = why.unwrap_or(""), resumed = end.resumed.len(), "copy failed");
        }
    }
    if end.newly_faulty {
        warn!(source = %copy.source, destination = %copy.destination, "too many failed copies: faulty for copies (it still serves players) until a probe succeeds or an operator clears it");
    }
    send_rates(state, end.rates);
    for order in end.resumed {
        launch(state, metrics, order);
    }
}

/// Tells destinations their copies' new rates (answers are not awaited).
pub fn send_rates(state: &MasterState, rates: Vec<RateChange>) {
    for change in rates {
        let body = pb::envelope::Body::CopyRate(pb::CopyRate {
            copy_id: change.copy_id,
            rate_bps: change.rate_bps,
        });
        if state.request(&change.destination, body).is_none() {
            warn!(copy = change.copy_id, destination = %change.destination, "cannot send a copy's new rate: no control connection");
        }
    }
}

/// Node `node` is down: the copies it was giving are cancelled at their
/// destinations, and each one's own Done ("cancelled") then resumes the
/// rest from another source ([`ended`]). Left running, they would wait
/// for good: a down node has no copy egress, so their rate is 0, which
/// holds a copy back (before its 30 s without a source can run out).
pub fn source_down(state: &MasterState, node: &str) {
    for (id, destination) in state.copies_from(node) {
        warn!(copy = id, source = node, %destination, "the source of a copy is down: cancelling it, to resume it from another source");
        let body = pb::envelope::Body::CopyCancel(pb::CopyCancel { copy_id: id });
        if state.request(&destination, body).is_none() {
            warn!(copy = id, %destination, "cannot cancel a copy: no control connection");
        }
    }
}
