//! GET_PARAMETER and SET_PARAMETER: players send them as keep-alives (the
//! session was already touched by the dispatcher); we have no parameters.

use std::sync::Arc;

use rtsp_types::headers;
use rtsp_types::{Method, Request};

use super::super::session::PlayerSession;
use super::Reply;

pub(super) fn keep_alive(request: &Request<Vec<u8>>, session: Option<Arc<PlayerSession>>) -> Reply {
    if *request.method() == Method::SetParameter && !request.body().is_empty() {
        // We have no parameters to set.
        return Reply::status(451);
    }
    let reply = Reply::ok();
    match session {
        Some(session) => reply.header(headers::SESSION, session.id.clone()),
        None => reply,
    }
}
