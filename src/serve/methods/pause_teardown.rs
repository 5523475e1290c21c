//! PAUSE and TEARDOWN: stopping a session's media for a while, or for good.

use std::sync::Arc;

use rtsp_types::headers;
use tokio::sync::oneshot;

use super::super::session::PlayerSession;
use super::super::Server;
use super::Reply;
use crate::playback::Control;

pub(super) async fn pause(session: Option<Arc<PlayerSession>>) -> Reply {
    let Some(session) = session else {
        return Reply::status(454);
    };
    match session.playback() {
        // From the store: stop the clock, keep the position.
        Some(control) => {
            let (reply, done) = oneshot::channel();
            if control.send(Control::Pause { reply }).await.is_ok() {
                let _ = done.await;
            }
        }
        // Live: the player resumes at the latest keyframe when it plays again.
        None => session.stop(),
    }
    session.set_paused(true);
    Reply::ok().header(headers::SESSION, session.id.clone())
}

pub(super) fn teardown(server: &Server, session: Option<Arc<PlayerSession>>) -> Reply {
    let Some(session) = session else {
        return Reply::status(454);
    };
    server.sessions.end(&session.id, "teardown");
    Reply::ok()
}
