//! The master's admin API: what it knows of the nodes, the content map and
//! its recent placements, as JSON; its metrics for Prometheus.

use std::sync::Arc;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::json;
use tokio::time::Instant;

use super::metrics::MasterMetrics;
use super::state::MasterState;
use crate::admin::{self, Body};
use crate::cluster::membership::Health;

pub struct MasterAdmin {
    pub state: Arc<MasterState>,
    pub metrics: Arc<MasterMetrics>,
    pub token: Option<String>,
}

const ENDPOINTS: [(&str, &str, &str); 8] = [
    ("GET", "/healthz", "liveness"),
    ("GET", "/metrics", "Prometheus metrics"),
    (
        "GET",
        "/api/v1/nodes",
        "nodes: health, capacity, load, egress history",
    ),
    (
        "GET",
        "/api/v1/content",
        "the content map: which nodes hold which title",
    ),
    (
        "GET",
        "/api/v1/placements",
        "recent placements, newest last: path, node, reason, status",
    ),
    (
        "GET",
        "/api/v1/copies",
        "node-to-node copies: running (rate, progress), recent, failures per source and link",
    ),
    (
        "POST",
        "/api/v1/copies/clear?node=ID",
        "clear a node's faulty mark for copies",
    ),
    ("GET", "/", "this list"),
];

impl admin::Handler for MasterAdmin {
    async fn handle(&self, request: Request<Incoming>) -> Response<Body> {
        if !admin::authorized(self.token.as_deref(), request.headers().get(AUTHORIZATION)) {
            return admin::unauthorized();
        }
        let path = request.uri().path();
        let path = path
            .strip_suffix('/')
            .filter(|p| !p.is_empty())
            .unwrap_or(path);
        if path == "/api/v1/copies/clear" {
            if request.method() != Method::POST {
                return admin::error(StatusCode::METHOD_NOT_ALLOWED, "use POST");
            }
            return self.clear(request.uri().query());
        }
        if request.method() != Method::GET {
            return admin::error(
                StatusCode::METHOD_NOT_ALLOWED,
                &format!("{} is not allowed here", request.method()),
            );
        }
        match path {
            "/" => {
                let endpoints: Vec<_> = ENDPOINTS
                    .iter()
                    .map(|(method, path, what)| json!({"method": method, "path": path, "description": what}))
                    .collect();
                admin::json_response(StatusCode::OK, &json!({ "endpoints": endpoints }))
            }
            "/healthz" => admin::json_response(StatusCode::OK, &json!({"status": "ok"})),
            "/metrics" => {
                let mut response = Response::new(Full::new(Bytes::from(self.metrics.encode())));
                response.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static(
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    ),
                );
                response
            }
            "/api/v1/nodes" => admin::json_response(StatusCode::OK, &self.nodes()),
            "/api/v1/content" => admin::json_response(StatusCode::OK, &self.content()),
            "/api/v1/placements" => admin::json_response(StatusCode::OK, &self.placements()),
            "/api/v1/copies" => {
                admin::json_response(StatusCode::OK, &self.state.copies_view(Instant::now()))
            }
            _ => admin::error(StatusCode::NOT_FOUND, &format!("no such endpoint: {path}")),
        }
    }
}

impl MasterAdmin {
    fn clear(&self, query: Option<&str>) -> Response<Body> {
        let node = url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
            .find(|(k, _)| k == "node")
            .map(|(_, v)| v.into_owned());
        let Some(node) = node else {
            return admin::error(StatusCode::BAD_REQUEST, "name the node: ?node=ID");
        };
        let cleared = self.state.clear_faulty(&node);
        tracing::info!(%node, cleared, "faulty mark for copies cleared by the operator");
        admin::json_response(
            StatusCode::OK,
            &json!({"node": node, "was_faulty": cleared}),
        )
    }

    fn nodes(&self) -> serde_json::Value {
        let now = Instant::now();
        let nodes: Vec<_> = self
            .state
            .members()
            .into_iter()
            .map(|(m, connected)| {
                let (health, failed_polls) = match m.health {
                    Health::Up => ("up", 0),
                    Health::Suspect { failed } => ("suspect", failed),
                    Health::Down => ("down", 0),
                };
                json!({
                    "id": m.id,
                    "rtsp_url": m.rtsp_url,
                    "health": health,
                    "failed_polls": failed_polls,
                    "connected": connected,
                    "last_report_ms_ago": now.saturating_duration_since(m.last_report).as_millis() as u64,
                    "sessions": m.load.sessions,
                    "max_sessions": m.capacity.max_sessions,
                    "assigned": m.assigned,
                    "egress_bps": m.load.egress_bps,
                    "egress_window_bps": m.egress.mean(),
                    "max_egress_bps": m.capacity.max_egress_bps,
                    "ingress_bps": m.load.ingress_bps,
                    "disk_used_bytes": m.load.disk_used_bytes,
                    "healthy": m.load.healthy,
                })
            })
            .collect();
        json!({ "nodes": nodes })
    }

    fn content(&self) -> serde_json::Value {
        let titles: Vec<_> = self
            .state
            .content()
            .into_iter()
            .map(|(key, nodes)| {
                let nodes: Vec<_> = nodes
                    .into_iter()
                    .map(|(id, held)| {
                        let spans: Vec<_> = held
                            .spans
                            .iter()
                            .map(|s| json!([s.start.as_secs_f64(), s.end.as_secs_f64()]))
                            .collect();
                        json!({"id": id, "complete": held.complete, "spans": spans})
                    })
                    .collect();
                json!({"key": key, "nodes": nodes})
            })
            .collect();
        json!({ "titles": titles })
    }

    fn placements(&self) -> serde_json::Value {
        let now = Instant::now();
        let placements: Vec<_> = self
            .state
            .placements()
            .into_iter()
            .map(|p| {
                let mut value = json!(p);
                value["ms_ago"] = json!(now.saturating_duration_since(p.at).as_millis() as u64);
                value
            })
            .collect();
        json!({ "placements": placements })
    }
}
