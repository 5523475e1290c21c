//! Admin API routes: request in, JSON (or Prometheus text) out.

use std::sync::Arc;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::json;

use super::Body;
use crate::serve::Server;

/// The largest request body accepted (reload and purge take none).
const MAX_BODY: usize = 64 * 1024;

/// What the admin API works on.
pub struct Admin {
    server: Arc<Server>,
    token: Option<String>,
}

impl Admin {
    pub fn new(server: Arc<Server>, token: Option<String>) -> Admin {
        Admin { server, token }
    }

    pub async fn handle(&self, request: Request<Incoming>) -> Response<Body> {
        let (parts, body) = request.into_parts();
        if !self.authorized(parts.headers.get(AUTHORIZATION)) {
            let mut response = error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
            response.headers_mut().insert(
                WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"streamcache\""),
            );
            return response;
        }
        // Drain the body (bounded) so that the connection can be reused.
        if Limited::new(body, MAX_BODY).collect().await.is_err() {
            return error(StatusCode::PAYLOAD_TOO_LARGE, "request body too large");
        }
        self.route(&parts.method, parts.uri.path())
    }

    fn route(&self, method: &Method, path: &str) -> Response<Body> {
        match (method, path) {
            (&Method::GET, "/healthz") => json_response(StatusCode::OK, &json!({"status": "ok"})),
            (&Method::GET, "/metrics") => {
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
            (_, "/healthz" | "/metrics") => error(
                StatusCode::METHOD_NOT_ALLOWED,
                &format!("{method} is not allowed on {path}"),
            ),
            _ => error(StatusCode::NOT_FOUND, &format!("no such endpoint: {path}")),
        }
    }

    fn authorized(&self, header: Option<&HeaderValue>) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        let Some(presented) = header
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.strip_prefix("Bearer "))
        else {
            return false;
        };
        constant_time_eq(presented.trim().as_bytes(), token.as_bytes())
    }
}

/// Compares without an early exit, so that response timing does not tell
/// how much of a guessed token was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for (i, byte) in a.iter().enumerate() {
        diff |= usize::from(byte ^ b.get(i).copied().unwrap_or(!byte));
    }
    diff == 0
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
    use super::constant_time_eq;

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"secret"));
        assert!(constant_time_eq(b"", b""));
    }
}
