//! Player authentication per mount: a request for a path under a mount with
//! users must carry valid credentials (Basic and/or Digest, as the mount
//! allows); the verification itself is sans-io in
//! `streamcache_rtsp::auth::ServerAuth`. OPTIONS stays open (players send it
//! before anything else, and it reveals nothing about a mount).

use std::sync::Arc;
use tokio::time::Instant;

use rtsp_types::{headers, Method, Request};
use streamcache_rtsp::auth::{AuthRequest, Denied, NonceKey, ServerAuth, Verdict};
use tracing::{debug, info};

use super::connection::Conn;
use super::refusals::Refusal;
use super::session::PlayerSession;
use super::Server;

/// Signs and checks Digest nonces for this process.
pub struct NonceClock {
    key: NonceKey,
    /// Nonces count seconds from here (the key dies with the process anyway).
    epoch: Instant,
}

impl NonceClock {
    pub fn new() -> NonceClock {
        NonceClock {
            key: NonceKey::random(),
            epoch: Instant::now(),
        }
    }
}

/// What the request may do: `Ok(Some(user))` authenticated, `Ok(None)` the
/// mount is open (or the request needs no authentication), `Err(challenges)`
/// for a 401 with these `WWW-Authenticate` values.
pub fn check(
    server: &Server,
    conn: &Conn,
    request: &Request<Vec<u8>>,
    session: Option<&Arc<PlayerSession>>,
) -> Result<Option<String>, Vec<String>> {
    if *request.method() == Method::Options {
        return Ok(None);
    }
    // The URL's mount and the session's must both let the player in (a
    // session id alone must not open a protected mount, nor a protected
    // session be driven through an open mount's URL).
    let mounts = server.mounts();
    let url_mount = request
        .request_uri()
        .and_then(|url| mounts.resolve(url.path()))
        .map(|r| r.mount);
    // The session's mount as the table in force has it, not as it was at
    // SETUP: a reload that changes only a mount's users keeps its sessions,
    // and a user removed from the list must lose control of theirs. A mount
    // gone from the table is being ended by that same reload; until then its
    // users at SETUP still apply.
    let session_mount = session.map(|s| {
        let captured = &s.presentation.mount;
        mounts.get(&captured.path).unwrap_or(captured).clone()
    });
    let mut guards: Vec<Arc<ServerAuth>> = Vec::new();
    for guard in [url_mount, session_mount]
        .into_iter()
        .flatten()
        .filter_map(|m| m.player_auth)
    {
        if !guards.iter().any(|g| Arc::ptr_eq(g, &guard)) {
            guards.push(guard);
        }
    }
    let mut user = None;
    for guard in guards {
        user = Some(check_one(server, conn, request, &guard)?);
    }
    Ok(user)
}

fn check_one(
    server: &Server,
    conn: &Conn,
    request: &Request<Vec<u8>>,
    guard: &ServerAuth,
) -> Result<String, Vec<String>> {
    let method: &str = request.method().into();
    let uri = request.request_uri().map_or("*", |u| u.as_str());
    let client = conn.peer.ip().to_string();
    let verdict = guard.check(
        &server.nonces.key,
        AuthRequest {
            authorization: request.header(&headers::AUTHORIZATION).map(|v| v.as_str()),
            method,
            uri,
            client: &client,
            now: server.nonces.epoch.elapsed().as_secs(),
        },
    );
    match verdict {
        Verdict::Allowed(user) => Ok(user),
        Verdict::Refused {
            why,
            claimed,
            challenges,
        } => {
            match why {
                // The first round of every Digest exchange, and stale nonces:
                // normal, not worth a line at info.
                Denied::NoCredentials | Denied::StaleNonce => {
                    debug!(player = %conn.peer, method, realm = guard.realm(), %why, "authentication required: 401")
                }
                _ => {
                    if let Some(repeated) =
                        server.refusals.note(conn.peer.ip(), Refusal::AuthFailed)
                    {
                        info!(player = %conn.peer, method, realm = guard.realm(), user = ?claimed, %why, repeated, "{}", Refusal::AuthFailed.message());
                    }
                }
            }
            Err(challenges)
        }
    }
}
