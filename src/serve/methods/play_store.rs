//! PLAY from the store: a title it holds whole, or one a hub is filling from
//! the origin while the player follows the recording. Either way the
//! session's playback task (`crate::playback`) seeks for the Range and paces
//! the packets out.

use std::sync::Arc;

use rtsp_types::headers;
use rtsp_types::Request;
use streamcache_cache::PresentationState;
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

use super::super::delivery::{self, PlayerSink};
use super::super::session::PlayerSession;
use super::super::Server;
use super::play::{answered_range, requested_range};
use super::play_relay::play_live;
use super::{session_header, After, Reply};
use crate::catalog::CachedTitle;
use crate::hub::{Hub, HubError, PlayerGuard};
use crate::mounts::track_suffix;
use crate::playback::{Control, Playback};

/// PLAY of an on-demand title the store does not hold completely: the hub
/// fills the store from the origin (one fetch however many players) and the
/// player is served from the store, following the recording as it grows. If
/// the recording stops short (disk full), the player goes on from the hub's
/// tail at the store's end; if the store has nothing of the title at all
/// (the recording was refused), the fill is relayed like a title that may
/// not be stored.
pub(super) async fn play_filling(
    server: &Arc<Server>,
    request: &Request<Vec<u8>>,
    session: &Arc<PlayerSession>,
    hub: &Arc<Hub>,
    base: &str,
) -> (Reply, Option<After>) {
    let hold = if session.playback().is_some() {
        None // already playing: the playback task holds the fill
    } else {
        match hub.hold().await {
            Ok(guard) => Some(guard),
            // The fill is over: the store has all it will get.
            Err(HubError::Closed) => None,
            Err(e) => {
                warn!(session = %session.id, error = %e, "PLAY failed at the origin");
                return (Reply::status(e.rtsp_status()), None);
            }
        }
    };
    let store = server.catalog.store();
    let metadata = match store.metadata(hub.key()) {
        Ok(Some(metadata)) => metadata,
        Ok(None) if hub.tail().is_some() => {
            return play_live(server, session, hub, base).await;
        }
        Ok(None) => return (Reply::status(503), None),
        Err(e) => {
            warn!(key = hub.key(), error = %e, "recording unreadable");
            return (Reply::status(500), None);
        }
    };
    let title = CachedTitle {
        store: store.clone(),
        metadata,
    };
    play_cached(server, request, session, &title, base, hold, Some(hub)).await
}

/// PLAY of a stored title: seek (for a Range), then paced playback. `hold`
/// keeps a running fill alive for as long as the playback runs; `fill` is
/// the hub filling the title, whose tail playback follows.
pub(super) async fn play_cached(
    server: &Arc<Server>,
    request: &Request<Vec<u8>>,
    session: &Arc<PlayerSession>,
    title: &CachedTitle,
    base: &str,
    hold: Option<PlayerGuard>,
    fill: Option<&Arc<Hub>>,
) -> (Reply, Option<After>) {
    let end = title.metadata.range.and_then(|r| r.end);
    let requested = match requested_range(request.header(&headers::RANGE).map(|v| v.as_str()), end)
    {
        Ok(requested) => requested,
        Err(status) => return (Reply::status(status), None),
    };
    let control = match session.playback() {
        Some(control) => control,
        None => match start_playback(server, session, title, hold, fill) {
            Ok(control) => control,
            Err(reply) => return (reply, None),
        },
    };
    let (reply_tx, reply_rx) = oneshot::channel();
    let prepared = match control
        .send(Control::Play {
            from: requested.from,
            until: requested.until,
            reply: reply_tx,
        })
        .await
    {
        Ok(()) => reply_rx.await.ok(),
        Err(_) => None,
    };
    let started = match prepared {
        Some(Ok(started)) => started,
        Some(Err(e)) => {
            warn!(key = %title.metadata.key, error = %e, "cached title unreadable");
            return (Reply::status(500), None);
        }
        None => return (Reply::status(500), None),
    };
    let rtp_info = started
        .rtp_info
        .iter()
        .map(|(track, seq, rtptime)| {
            format!(
                "url={base}/{};seq={seq};rtptime={rtptime}",
                track_suffix(*track)
            )
        })
        .collect::<Vec<_>>()
        .join(",");
    if title.metadata.state == PresentationState::Complete {
        info!(session = %session.id, player = %session.peer, npt = %started.npt, "playing from the cache");
    } else {
        info!(session = %session.id, player = %session.peer, npt = %started.npt, "playing the recording while the origin fills it");
    }
    let reply = Reply::ok()
        .header(headers::SESSION, session_header(server, session))
        .header(
            headers::RANGE,
            answered_range(started.npt, requested.until, end),
        )
        .header(headers::RTP_INFO, rtp_info);
    (reply, Some(After::StartPlayback(control)))
}

/// Spawns the session's store playback task.
fn start_playback(
    server: &Arc<Server>,
    session: &Arc<PlayerSession>,
    title: &CachedTitle,
    hold: Option<PlayerGuard>,
    fill: Option<&Arc<Hub>>,
) -> Result<mpsc::Sender<Control>, Reply> {
    let reader = match title.store.open_reader(&title.metadata.key) {
        Ok(Some(reader)) => reader,
        // Evicted or purged since DESCRIBE.
        Ok(None) => return Err(Reply::status(404)),
        Err(e) => {
            warn!(key = %title.metadata.key, error = %e, "cannot open cached title");
            return Err(Reply::status(500));
        }
    };
    let tracks = session.tracks();
    let clocks: Vec<(usize, u32)> = tracks
        .keys()
        .map(|&t| (t, session.source.clock_rate(t)))
        .collect();
    let sink = PlayerSink::new(Arc::clone(session), tracks);
    let mut playback =
        Playback::new(reader, &clocks, sink).merge_writes(server.player_limits.write_ticks);
    if let Some(hub) = fill {
        playback = playback.follow(Arc::clone(hub));
    }
    let (control, control_rx) = mpsc::channel(8);
    let task = tokio::spawn(delivery::play_from_store(
        Arc::clone(session),
        Arc::clone(&server.sessions),
        playback,
        control_rx,
        hold,
    ));
    session.set_playback(control.clone(), task);
    Ok(control)
}
