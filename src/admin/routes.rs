//! Admin API routes: request in, JSON (or Prometheus text) out.

use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, ALLOW, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::json;
use streamcache_rtsp::auth::ct_eq;

use super::mounts;
use super::presentations::{self, Selector};
use super::{sessions, status, Body};
use crate::node;
use crate::reload::Reloader;
use crate::serve::Server;

/// The largest request body accepted (reload and purge take none).
const MAX_BODY: usize = 64 * 1024;

/// What the admin API works on.
pub struct Admin {
    server: Arc<Server>,
    token: Option<String>,
    reloader: Option<Arc<Reloader>>,
    /// The node's side of the cluster, when it is a node.
    cluster: Option<Arc<node::Status>>,
    /// The HTTP listener for viewers, if it runs (the status page plays
    /// titles from it).
    viewer: Option<SocketAddr>,
}

impl Admin {
    pub fn new(
        server: Arc<Server>,
        token: Option<String>,
        reloader: Option<Arc<Reloader>>,
        cluster: Option<Arc<node::Status>>,
    ) -> Admin {
        Admin {
            server,
            token,
            reloader,
            cluster,
            viewer: None,
        }
    }

    pub fn with_viewer(mut self, viewer: Option<SocketAddr>) -> Admin {
        self.viewer = viewer;
        self
    }

    pub async fn handle(&self, request: Request<Incoming>) -> Response<Body> {
        let (parts, body) = request.into_parts();
        if let Some(page) = status::page(&parts.method, parts.uri.path(), &parts.headers) {
            return page;
        }
        if !self.authorized(parts.headers.get(AUTHORIZATION)) {
            return unauthorized();
        }
        // Drain the body (bounded) so that the connection can be reused.
        if Limited::new(body, MAX_BODY).collect().await.is_err() {
            return error(StatusCode::PAYLOAD_TOO_LARGE, "request body too large");
        }
        self.route(&parts.method, parts.uri.path(), parts.uri.query())
    }

    fn route(&self, method: &Method, path: &str, query: Option<&str>) -> Response<Body> {
        let Some(route) = Route::parse(path) else {
            return error(StatusCode::NOT_FOUND, &format!("no such endpoint: {path}"));
        };
        if !route.allows(method) {
            let mut response = error(
                StatusCode::METHOD_NOT_ALLOWED,
                &format!("{method} is not allowed on {path}"),
            );
            response
                .headers_mut()
                .insert(ALLOW, HeaderValue::from_static(route.allowed()));
            return response;
        }
        match route {
            Route::Index => index(),
            Route::Healthz => json_response(StatusCode::OK, &json!({"status": "ok"})),
            Route::Metrics => {
                let mut response =
                    Response::new(Full::new(Bytes::from(self.server.metrics.encode())));
                response.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static(
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    ),
                );
                response
            }
            Route::Presentations if method == Method::DELETE => match purge_params(query) {
                Ok(PurgeParams {
                    key: Some(key),
                    force,
                }) => presentations::purge(&self.server, Selector::Key(&key), force),
                Ok(_) => error(
                    StatusCode::BAD_REQUEST,
                    "name the presentation: DELETE /api/v1/presentations/{id} or ?key=<origin URL>",
                ),
                Err(message) => error(StatusCode::BAD_REQUEST, &message),
            },
            Route::Presentations => presentations::list(&self.server),
            Route::Presentation(id) => match purge_params(query) {
                Ok(PurgeParams { key: None, force }) => {
                    presentations::purge(&self.server, Selector::Id(id), force)
                }
                Ok(_) => error(
                    StatusCode::BAD_REQUEST,
                    "a presentation is named by its id in the path or by ?key=, not both",
                ),
                Err(message) => error(StatusCode::BAD_REQUEST, &message),
            },
            Route::Sessions => sessions::list(&self.server),
            Route::Mounts => mounts::list(&self.server),
            Route::Status => status::status(&self.server, self.viewer, self.cluster.as_deref()),
            Route::Reload => self.reload(),
            Route::Cluster => match &self.cluster {
                Some(status) => json_response(
                    StatusCode::OK,
                    &json!({
                        "node_id": status.node_id,
                        "master": status.master,
                        "connected": status.connected(),
                        "rtsp_url": status.rtsp_url,
                    }),
                ),
                None => error(
                    StatusCode::NOT_FOUND,
                    "this proxy is not a cluster node (no [cluster] section)",
                ),
            },
        }
    }

    fn reload(&self) -> Response<Body> {
        let Some(reloader) = &self.reloader else {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "this daemon cannot reload its configuration",
            );
        };
        match reloader.reload() {
            Ok(report) => json_response(StatusCode::OK, &json!(report)),
            Err(e) => {
                reloader.log_refused(&e);
                let problems: Vec<_> = e
                    .problems
                    .iter()
                    .map(|p| json!({"line": p.line, "key": p.key, "message": p.message}))
                    .collect();
                json_response(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    &json!({
                        "error": format!(
                            "{} is not a valid configuration; the previous one stays in force",
                            e.file.display()
                        ),
                        "problems": problems,
                    }),
                )
            }
        }
    }

    fn authorized(&self, header: Option<&HeaderValue>) -> bool {
        authorized(self.token.as_deref(), header)
    }
}

/// Whether a request's `Authorization` header carries `token` (any request
/// does when there is none).
pub fn authorized(token: Option<&str>, header: Option<&HeaderValue>) -> bool {
    let Some(token) = token else {
        return true;
    };
    let Some(presented) = header.and_then(|h| h.to_str().ok()).and_then(bearer_token) else {
        return false;
    };
    ct_eq(presented.as_bytes(), token.as_bytes())
}

/// The 401 sent for a missing or wrong token.
pub fn unauthorized() -> Response<Body> {
    let mut response = error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
    response.headers_mut().insert(
        WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"streamcache\""),
    );
    response
}

/// The token of an `Authorization: Bearer <token>` value; the scheme name is
/// case-insensitive (RFC 9110 §11.1).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// An endpoint, parsed from the request path.
#[derive(Debug, PartialEq, Eq)]
enum Route<'a> {
    Index,
    Healthz,
    Metrics,
    Presentations,
    /// One presentation, by the id `GET /api/v1/presentations` lists.
    Presentation(&'a str),
    Sessions,
    Mounts,
    Reload,
    Cluster,
    Status,
}

impl<'a> Route<'a> {
    fn parse(path: &'a str) -> Option<Route<'a>> {
        let path = match path.strip_suffix('/') {
            Some(trimmed) if !trimmed.is_empty() => trimmed,
            _ => path,
        };
        Some(match path {
            "/" => Route::Index,
            "/healthz" => Route::Healthz,
            "/metrics" => Route::Metrics,
            "/api/v1/presentations" => Route::Presentations,
            "/api/v1/sessions" => Route::Sessions,
            "/api/v1/mounts" => Route::Mounts,
            "/api/v1/reload" => Route::Reload,
            "/api/v1/cluster" => Route::Cluster,
            "/api/v1/status" => Route::Status,
            _ => {
                let id = path.strip_prefix("/api/v1/presentations/")?;
                let url_safe = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
                if id.is_empty() || !id.chars().all(url_safe) {
                    return None;
                }
                Route::Presentation(id)
            }
        })
    }

    /// The methods it answers, as an `Allow` header. HEAD is answered as
    /// GET is (hyper leaves the body out).
    fn allowed(&self) -> &'static str {
        match self {
            Route::Index
            | Route::Healthz
            | Route::Metrics
            | Route::Sessions
            | Route::Mounts
            | Route::Cluster
            | Route::Status => "GET, HEAD",
            Route::Presentations => "GET, HEAD, DELETE",
            Route::Presentation(_) => "DELETE",
            Route::Reload => "POST",
        }
    }

    fn allows(&self, method: &Method) -> bool {
        self.allowed()
            .split(", ")
            .any(|allowed| allowed == method.as_str())
    }
}

/// What `GET /` lists: method, path, one line each.
const ENDPOINTS: &[(&str, &str, &str)] = &[
    (
        "GET",
        "/",
        "this list; a browser (Accept: text/html) gets the status page",
    ),
    (
        "GET",
        "/api/v1/status",
        "for the status page: the HTTP viewer listener, cache use, origin sessions, cluster",
    ),
    ("GET", "/healthz", "liveness: {\"status\": \"ok\"}"),
    (
        "GET",
        "/metrics",
        "Prometheus/OpenMetrics counters and gauges",
    ),
    (
        "GET",
        "/api/v1/mounts",
        "the mounts in force: path, origin, transport, auth, presentations seen",
    ),
    ("GET", "/api/v1/sessions", "player sessions now"),
    (
        "GET",
        "/api/v1/presentations",
        "stored presentations, with viewers",
    ),
    (
        "DELETE",
        "/api/v1/presentations/{id}",
        "purge a stored presentation (?force=true while played)",
    ),
    (
        "DELETE",
        "/api/v1/presentations?key=KEY",
        "purge by key (the origin URL)",
    ),
    ("POST", "/api/v1/reload", "re-read the configuration file"),
    (
        "GET",
        "/api/v1/cluster",
        "this node's cluster: node id, master, connected, RTSP URL",
    ),
];

/// `GET /`: the endpoints, so that the API can be found from its root.
fn index() -> Response<Body> {
    let endpoints: Vec<_> = ENDPOINTS
        .iter()
        .map(|(method, path, description)| {
            json!({"method": method, "path": path, "description": description})
        })
        .collect();
    json_response(StatusCode::OK, &json!({ "endpoints": endpoints }))
}

/// A purge's query: `force=true` (absent means false) and, on
/// `DELETE /api/v1/presentations`, the `key` (percent-encoded origin URL).
#[derive(Debug, Default, PartialEq, Eq)]
struct PurgeParams {
    key: Option<String>,
    force: bool,
}

fn purge_params(query: Option<&str>) -> Result<PurgeParams, String> {
    let mut params = PurgeParams::default();
    let query = query.unwrap_or_default();
    for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
        match (name.as_ref(), value.as_ref()) {
            ("force", "true" | "1" | "") => params.force = true,
            ("force", "false" | "0") => params.force = false,
            ("force", other) => return Err(format!("force must be true or false, not `{other}`")),
            ("key", "") => return Err("key is empty".into()),
            ("key", key) => params.key = Some(key.to_owned()),
            (other, _) => return Err(format!("unknown parameter `{other}`")),
        }
    }
    Ok(params)
}

pub fn json_response(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(value.to_string())));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// Every error is JSON: `{"error": "<message>"}`.
pub fn error(status: StatusCode, message: &str) -> Response<Body> {
    json_response(status, &json!({ "error": message }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_parse() {
        assert_eq!(Route::parse("/healthz"), Some(Route::Healthz));
        assert_eq!(Route::parse("/api/v1/sessions/"), Some(Route::Sessions));
        assert_eq!(
            Route::parse("/api/v1/presentations/00ab12cd-1"),
            Some(Route::Presentation("00ab12cd-1"))
        );
        assert_eq!(
            Route::parse("/api/v1/presentations/"),
            Some(Route::Presentations)
        );
        assert_eq!(Route::parse("/api/v1/presentations/a/b"), None);
        assert_eq!(Route::parse("/api/v1/presentations/%2e%2e"), None);
        assert_eq!(Route::parse("/api/v2/sessions"), None);
        assert_eq!(Route::parse("/"), Some(Route::Index));
        assert_eq!(Route::parse("/api/v1/mounts"), Some(Route::Mounts));
        assert_eq!(Route::parse("/api/v1/cluster"), Some(Route::Cluster));
        assert!(Route::Reload.allows(&Method::POST));
        assert!(!Route::Reload.allows(&Method::GET));
        assert!(Route::Presentation("x").allows(&Method::DELETE));
        assert!(Route::Presentations.allows(&Method::DELETE));
        assert!(Route::Metrics.allows(&Method::HEAD));
        assert!(!Route::Reload.allows(&Method::HEAD));
        assert!(!Route::Presentation("x").allows(&Method::HEAD));
    }

    #[test]
    fn the_index_lists_every_route() {
        for (method, path, _) in ENDPOINTS {
            let path = path.split('?').next().unwrap_or_default();
            let path = path.replace("{id}", "0a1b");
            let route = Route::parse(&path).unwrap_or_else(|| panic!("{path}"));
            let method = Method::from_bytes(method.as_bytes()).expect("method");
            assert!(route.allows(&method), "{method} {path}");
        }
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer abc"), Some("abc"));
        assert_eq!(bearer_token("BEARER  abc "), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearerabc"), None);
        assert_eq!(bearer_token("Bearer"), None);
    }

    #[test]
    fn force_parameter() {
        let force = |q| purge_params(Some(q)).map(|p| p.force);
        assert_eq!(purge_params(None).map(|p| p.force), Ok(false));
        assert_eq!(force("force=true"), Ok(true));
        assert_eq!(force("force"), Ok(true));
        assert_eq!(force("force=0"), Ok(false));
        assert!(force("force=maybe").is_err());
        assert!(force("forse=true").is_err());
    }

    #[test]
    fn purge_params_parse() {
        assert_eq!(purge_params(None), Ok(PurgeParams::default()));
        assert_eq!(
            purge_params(Some("force=true&key=rtsp%3A%2F%2Fo%3A554%2Fvod%2Fa.mkv")),
            Ok(PurgeParams {
                key: Some("rtsp://o:554/vod/a.mkv".into()),
                force: true
            })
        );
        assert!(purge_params(Some("force=maybe")).is_err());
        assert!(purge_params(Some("key=")).is_err());
        assert!(purge_params(Some("id=1")).is_err());
    }
}
