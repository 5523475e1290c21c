//! `GET /api/v1/sessions`: the player sessions now.

use hyper::{Response, StatusCode};
use serde_json::{json, Value};

use super::presentations::unix_secs;
use super::routes::json_response;
use super::Body;
use crate::serve::Server;

pub fn list(server: &Server) -> Response<Body> {
    let list: Vec<Value> = server
        .sessions
        .snapshot()
        .into_iter()
        .map(|s| {
            json!({
                "id": s.id,
                "player": s.player.to_string(),
                "mount": s.mount,
                "path": s.path,
                "transport": s.transport,
                "state": s.state,
                "bytes_sent": s.bytes_sent,
                "since_secs": s.since.as_secs_f64(),
                "started_at": httpdate::fmt_http_date(s.started_at),
                "started_at_unix": unix_secs(s.started_at),
                "source": s.source,
                "cache": s.cache,
                "user": s.user,
            })
        })
        .collect();
    json_response(StatusCode::OK, &json!({ "sessions": list }))
}
