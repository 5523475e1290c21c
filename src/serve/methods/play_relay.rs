//! PLAY relayed from a live hub: the player joins the hub's fan-out at the
//! latest keyframe (the GOP backlog) and gets what the origin sends from
//! then on.

use std::sync::Arc;

use rtsp_types::headers;
use tracing::{info, warn};

use super::super::session::PlayerSession;
use super::super::Server;
use super::play::relayed_range;
use super::{session_header, After, Reply};
use crate::hub::{Hub, HubPacket};
use crate::mounts::track_suffix;

pub(super) async fn play_live(
    server: &Server,
    session: &Arc<PlayerSession>,
    hub: &Arc<Hub>,
    base: &str,
) -> (Reply, Option<After>) {
    let session_value = session_header(server, session);
    if session.is_playing() {
        // Already playing: a PLAY used as a keep-alive changes nothing.
        return (Reply::ok().header(headers::SESSION, session_value), None);
    }
    let sub = match hub.play().await {
        Ok(sub) => sub,
        Err(e) => {
            warn!(session = %session.id, error = %e, "PLAY failed at the origin");
            return (Reply::status(e.rtsp_status()), None);
        }
    };
    let tracks = session.tracks();
    let rtp_info = rtp_info(base, &sub.backlog, tracks.keys().copied());
    let mut reply = Reply::ok()
        .header(headers::SESSION, session_value)
        .header(headers::RANGE, relayed_range(hub.is_live()));
    if !rtp_info.is_empty() {
        reply = reply.header(headers::RTP_INFO, rtp_info);
    }
    info!(session = %session.id, player = %session.peer, backlog = sub.backlog.len(), "playing from the origin");
    (
        reply,
        Some(After::StartForwarding(Arc::clone(session), sub)),
    )
}

/// `RTP-Info` for the tracks whose first packet the player will get is known
/// (the GOP backlog); the others start with whatever the origin sends next.
fn rtp_info(base: &str, backlog: &[HubPacket], tracks: impl Iterator<Item = usize>) -> String {
    tracks
        .filter_map(|track| {
            let first = backlog.iter().find(|p| p.track == track && !p.rtcp)?;
            let view = streamcache_rtsp::rtp::RtpView::parse(&first.data).ok()?;
            Some(format!(
                "url={base}/{};seq={};rtptime={}",
                track_suffix(track),
                view.sequence_number(),
                view.timestamp()
            ))
        })
        .collect::<Vec<_>>()
        .join(",")
}
