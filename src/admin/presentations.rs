//! `GET /api/v1/presentations`, and `DELETE /api/v1/presentations/{id}`
//! or `DELETE /api/v1/presentations?key=<origin URL>`.

use std::time::{SystemTime, UNIX_EPOCH};

use hyper::{Response, StatusCode};
use serde_json::{json, Value};
use streamcache_cache::{CacheError, EntryInfo};
use tracing::info;

use super::routes::{error, json_response};
use super::Body;
use crate::serve::Server;

/// Every stored presentation, with how many players are on it now.
pub fn list(server: &Server) -> Response<Body> {
    let sessions = server.sessions.snapshot();
    let list: Vec<Value> = server
        .catalog
        .store()
        .list()
        .iter()
        .map(|entry| {
            let viewers = sessions.iter().filter(|s| s.key == entry.key).count();
            describe(entry, viewers)
        })
        .collect();
    json_response(StatusCode::OK, &json!({ "presentations": list }))
}

fn describe(entry: &EntryInfo, viewers: usize) -> Value {
    let tracks: Vec<Value> = entry
        .tracks
        .iter()
        .map(|t| json!({"media": t.media, "encoding": t.encoding, "clock_rate": t.clock_rate}))
        .collect();
    let spans: Vec<Value> = entry
        .spans
        .iter()
        .map(|s| json!({"start": s.start.as_secs_f64(), "end": s.end.as_secs_f64()}))
        .collect();
    // The store records a play time only once somebody played the title.
    let played = entry
        .last_played
        .duration_since(UNIX_EPOCH)
        .ok()
        .filter(|d| !d.is_zero());
    json!({
        "id": entry.id,
        "key": redact(&entry.key),
        "state": format!("{:?}", entry.state).to_lowercase(),
        "bytes": entry.bytes,
        "tracks": tracks,
        "spans": spans,
        "last_played": played.map(|_| httpdate::fmt_http_date(entry.last_played)),
        "last_played_unix": played.map(|d| d.as_secs()),
        "viewers": viewers,
        "recording": entry.writing,
    })
}

/// Keys are normalised origin URLs built without credentials; this makes
/// sure no `user:password@` ever leaves through the API even so.
fn redact(key: &str) -> String {
    match url::Url::parse(key) {
        Ok(mut url) if !url.username().is_empty() || url.password().is_some() => {
            let _ = url.set_username("");
            let _ = url.set_password(None);
            url.to_string()
        }
        _ => key.to_owned(),
    }
}

/// How a purge names its presentation.
#[derive(Debug, Clone, Copy)]
pub enum Selector<'a> {
    /// The id `GET /api/v1/presentations` lists.
    Id(&'a str),
    /// The presentation key (the origin URL).
    Key(&'a str),
}

/// Removes a presentation from the store. One being played or recorded
/// stays unless `force`: then its players are ended and its fill stopped.
pub fn purge(server: &Server, which: Selector, force: bool) -> Response<Body> {
    let store = server.catalog.store();
    let entry = store.list().into_iter().find(|e| match which {
        Selector::Id(id) => e.id == id,
        Selector::Key(key) => e.key == key,
    });
    let Some(entry) = entry else {
        let what = match which {
            Selector::Id(id) => format!("no presentation with id {id}"),
            Selector::Key(key) => format!("no presentation with key {}", redact(key)),
        };
        return error(StatusCode::NOT_FOUND, &what);
    };
    let id = entry.id.as_str();
    let key = entry.key.clone();
    let players: Vec<String> = server
        .sessions
        .snapshot()
        .into_iter()
        .filter(|s| s.key == key)
        .map(|s| s.id)
        .collect();
    if !force && (!players.is_empty() || entry.readers > 0 || entry.writing) {
        return in_use(id, players.len().max(entry.readers), entry.writing);
    }
    for session in &players {
        server.sessions.terminate(session, "presentation purged");
    }
    match store.purge(&key, force) {
        Ok(()) => {
            // Whatever hub fills or relays it ends too; the next player
            // starts afresh.
            server.catalog.retire(&key);
            info!(key = %redact(&key), id, force, sessions_ended = players.len(), "presentation purged");
            json_response(
                StatusCode::OK,
                &json!({
                    "purged": id,
                    "key": redact(&key),
                    "sessions_ended": players.len(),
                }),
            )
        }
        Err(CacheError::NotFound { .. }) => error(
            StatusCode::NOT_FOUND,
            &format!("no presentation with id {id}"),
        ),
        Err(CacheError::InUse {
            readers, writing, ..
        }) => in_use(id, readers, writing),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("cannot purge {id}: {e}"),
        ),
    }
}

fn in_use(id: &str, players: usize, recording: bool) -> Response<Body> {
    let what = match (players, recording) {
        (0, _) => "being recorded".to_owned(),
        (1, false) => "being played by 1 player".to_owned(),
        (n, false) => format!("being played by {n} players"),
        (n, true) => format!("being recorded and played by {n} player(s)"),
    };
    json_response(
        StatusCode::CONFLICT,
        &json!({
            "error": format!("presentation {id} is {what}; add ?force=true to remove it anyway"),
            "players": players,
            "recording": recording,
        }),
    )
}

/// Seconds since the Unix epoch, for JSON.
pub fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn credentials_never_shown() {
        assert_eq!(redact("rtsp://user:secret@h:554/x"), "rtsp://h:554/x");
        assert_eq!(redact("rtsp://h:554/x?a=1"), "rtsp://h:554/x?a=1");
    }
}
