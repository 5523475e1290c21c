//! `GET /api/v1/mounts`: the mount table in force (a reload changes it),
//! with what players have been served under each mount. Never credentials:
//! neither the origin's user name and password nor the players' users.

use hyper::{Response, StatusCode};
use serde_json::{json, Value};

use super::routes::json_response;
use super::Body;
use crate::config::MountTransport;
use crate::serve::Server;

pub fn list(server: &Server) -> Response<Body> {
    let mounts: Vec<Value> = server
        .mounts()
        .iter()
        .map(|mount| {
            // Config validation refuses credentials in origin URLs; strip
            // them even so, as for presentation keys.
            let mut origin = mount.origin.clone();
            let _ = origin.set_username("");
            let _ = origin.set_password(None);
            let seen = server
                .seen
                .counts(mount)
                .map(|(live, on_demand)| json!({"live": live, "on_demand": on_demand}));
            json!({
                "path": mount.path,
                "origin": origin.as_str(),
                "transport": match mount.transport {
                    MountTransport::Auto => "auto",
                    MountTransport::Udp => "udp",
                    MountTransport::Tcp => "tcp",
                },
                "auth": mount.player_auth.is_some(),
                "seen": seen,
            })
        })
        .collect();
    json_response(StatusCode::OK, &json!({ "mounts": mounts }))
}
