//! What each RTSP method does for a player.
//!
//! Every answer echoes CSeq and names the server. Errors use RFC 2326's
//! codes: 400 for a request we cannot read, 404 for a path under no mount,
//! 454 for an unknown session, 455 for a method not valid in the session's
//! state, 459/461 for SETUP we cannot honour, 501 for unknown methods and 551
//! for `Require`/`Proxy-Require` options we do not have. Problems at the
//! origin come back as the status the origin client picked (404, 502, 503, 504…).
//!
//! This module reads the request's common headers (CSeq, Require, Session,
//! credentials), hands it to its method and builds the response; the methods
//! live one per file:
//!
//! - [`describe`]: DESCRIBE (the SDP with the proxy's own control URLs);
//! - [`source`]: where a new session's media comes from (store or hub),
//!   shared by DESCRIBE and SETUP;
//! - [`setup`]: SETUP, with the choice among the player's transports in
//!   [`transport`];
//! - [`play`]: PLAY (Scale and Range decisions), from the store in
//!   [`play_store`] or relayed from a live hub in [`play_relay`];
//! - [`pause_teardown`]: PAUSE and TEARDOWN;
//! - [`parameters`]: GET_PARAMETER and SET_PARAMETER keep-alives.

mod describe;
mod parameters;
mod pause_teardown;
mod play;
mod play_relay;
mod play_store;
mod setup;
mod source;
mod transport;

pub(crate) use source::prepare;

use std::sync::Arc;

use rtsp_types::headers::{self, HeaderName};
use rtsp_types::{Method, Request, Response, StatusCode, Url, Version};
use tokio::sync::mpsc;
use tracing::info;

use super::connection::Conn;
use super::delivery;
use super::refusals::Refusal;
use super::session::PlayerSession;
use super::Server;
use crate::hub::Subscription;
use crate::mounts::Resolved;
use crate::playback::Control;

pub const SERVER: &str = concat!("streamcache/", env!("CARGO_PKG_VERSION"));
const PUBLIC: &str =
    "OPTIONS, DESCRIBE, SETUP, PLAY, PAUSE, TEARDOWN, GET_PARAMETER, SET_PARAMETER";

/// Work to do once the response is on its way (media must follow the PLAY
/// response, never precede it).
pub enum After {
    StartForwarding(Arc<PlayerSession>, Subscription),
    StartPlayback(mpsc::Sender<Control>),
}

/// A response under construction: status, headers, body.
struct Reply {
    status: StatusCode,
    headers: Vec<(HeaderName, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn status(code: u16) -> Reply {
        Reply {
            status: StatusCode::from(code),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    fn ok() -> Reply {
        Reply::status(200)
    }

    fn header(mut self, name: HeaderName, value: impl Into<String>) -> Reply {
        self.headers.push((name, value.into()));
        self
    }
}

pub async fn handle(
    server: &Arc<Server>,
    conn: &mut Conn,
    request: &Request<Vec<u8>>,
) -> (Response<Vec<u8>>, Option<After>) {
    // CSeq is a number (RFC 2326 §12.17). One that is not is refused with
    // 400 and not echoed, as the codec does for requests it cannot frame: a
    // player cannot match an answer to garbage anyway, and we reflect no
    // bytes we did not understand.
    let cseq = request
        .header(&headers::CSEQ)
        .and_then(|v| v.as_str().trim().parse::<u32>().ok());
    let (reply, after) = match cseq {
        None => (
            Reply::status(400).header(headers::CONNECTION, "close"),
            None,
        ),
        Some(_) => dispatch(server, conn, request).await,
    };
    let mut builder =
        Response::builder(Version::V1_0, reply.status).header(headers::SERVER, SERVER);
    if let Some(cseq) = cseq {
        builder = builder.header(headers::CSEQ, cseq.to_string());
    }
    let mut challenges = Vec::new();
    for (name, value) in reply.headers {
        if name == headers::WWW_AUTHENTICATE {
            challenges.push(value);
        } else {
            builder = builder.header(name, value);
        }
    }
    if !challenges.is_empty() {
        // One header line per challenge: rtsp-types would join repeated
        // headers with commas, which players do not split (ffmpeg reads a
        // joined value as one challenge). Our own values, no CR/LF inside.
        builder = builder.header(
            headers::WWW_AUTHENTICATE,
            challenges.join("\r\nWWW-Authenticate: "),
        );
    }
    (builder.build(reply.body), after)
}

async fn dispatch(
    server: &Arc<Server>,
    conn: &mut Conn,
    request: &Request<Vec<u8>>,
) -> (Reply, Option<After>) {
    for name in [headers::REQUIRE, headers::PROXY_REQUIRE] {
        if let Some(options) = request.header(&name) {
            // We implement no option tags: refuse every one we are required to have.
            return (
                Reply::status(551).header(headers::UNSUPPORTED, options.as_str()),
                None,
            );
        }
    }
    let session = match request.header(&headers::SESSION) {
        Some(value) => {
            let id = value.as_str().split(';').next().unwrap_or_default().trim();
            // Only the player that set a session up may drive it: another
            // address presenting its id is told the session does not exist
            // (454, RFC 2326 §11.3.5), which reveals nothing about it.
            match server.sessions.get(id) {
                Some(session) if session.peer.ip() == conn.peer.ip() => Some(session),
                Some(_) => return (foreign_session(server, conn, request), None),
                None => return (Reply::status(454), None),
            }
        }
        None => None,
    };
    let user = match super::player_auth::check(server, conn, request, session.as_ref()) {
        // On a protected mount, the same address is not enough: the user
        // who set the session up must be the one driving it.
        Ok(user)
            if session
                .as_ref()
                .is_some_and(|s| s.user.is_some() && s.user != user) =>
        {
            return (foreign_session(server, conn, request), None);
        }
        Ok(user) => {
            // Only a request the player may make keeps the session alive:
            // a user removed by a reload cannot hold it open with refused
            // keep-alives.
            if let Some(session) = &session {
                session.touch();
            }
            user
        }
        Err(challenges) => {
            let mut reply = Reply::status(401);
            for challenge in challenges {
                reply = reply.header(headers::WWW_AUTHENTICATE, challenge);
            }
            return (reply, None);
        }
    };
    let (reply, after) = match request.method() {
        Method::Options => (Reply::ok().header(headers::PUBLIC, PUBLIC), None),
        Method::Describe => (describe::describe(server, request).await, None),
        Method::Setup => (
            setup::setup(server, conn, request, session, user).await,
            None,
        ),
        Method::Play => play::play(server, request, session).await,
        Method::Pause => (pause_teardown::pause(session).await, None),
        Method::Teardown => (pause_teardown::teardown(server, session), None),
        Method::GetParameter | Method::SetParameter => {
            (parameters::keep_alive(request, session), None)
        }
        Method::Announce | Method::Record | Method::Redirect | Method::PlayNotify => {
            (Reply::status(405).header(headers::ALLOW, PUBLIC), None)
        }
        Method::Extension(_) => (Reply::status(501).header(headers::PUBLIC, PUBLIC), None),
    };
    if reply.status == StatusCode::NotFound {
        log_unmounted(server, conn, request);
    }
    (reply, after)
}

/// Logs a 404 whose path is under no mount (rate-limited per address): a
/// typo in a player's URL must be diagnosable from the log. Other 404s (a
/// track the title lacks, the origin's own 404) are not refusals of ours.
fn log_unmounted(server: &Server, conn: &Conn, request: &Request<Vec<u8>>) {
    let Some(url) = request.request_uri() else {
        return;
    };
    if server.mounts().resolve(url.path()).is_some() {
        return;
    }
    if let Some(repeated) = server.refusals.note(conn.peer.ip(), Refusal::NoMount) {
        let method: &str = request.method().into();
        // The path as resolved: `..` segments are already folded away.
        info!(player = %conn.peer, method, path = url.path(), repeated, "{}", Refusal::NoMount.message());
    }
}

/// 454 for a session id presented by a player other than its own.
fn foreign_session(server: &Server, conn: &Conn, request: &Request<Vec<u8>>) -> Reply {
    if let Some(repeated) = server
        .refusals
        .note(conn.peer.ip(), Refusal::ForeignSession)
    {
        let method: &str = request.method().into();
        info!(player = %conn.peer, method, repeated, "{}", Refusal::ForeignSession.message());
    }
    Reply::status(454)
}

/// The request URL resolved through the mounts, or the error reply.
fn resolve(server: &Server, request: &Request<Vec<u8>>) -> Result<(Url, Resolved), Reply> {
    let url = request.request_uri().ok_or_else(|| Reply::status(400))?;
    let resolved = server
        .mounts()
        .resolve(url.path())
        .ok_or_else(|| Reply::status(404))?;
    Ok((url.clone(), resolved))
}

/// The `Session` header of a SETUP or PLAY answer: the id and its timeout.
fn session_header(server: &Server, session: &PlayerSession) -> String {
    format!(
        "{};timeout={}",
        session.id,
        server.sessions.timeout().as_secs()
    )
}

pub fn after_response(server: &Arc<Server>, after: After) {
    match after {
        After::StartForwarding(session, sub) => {
            let tracks = session.tracks();
            let forwarder = tokio::spawn(delivery::forward(
                Arc::clone(&session),
                Arc::clone(&server.sessions),
                sub,
                tracks,
                server.player_limits.relay_write_ticks,
            ));
            session.set_forwarder(forwarder);
        }
        After::StartPlayback(control) => {
            // The task is waiting for exactly this; a full queue cannot happen.
            let _ = control.try_send(Control::Start);
        }
    }
}
