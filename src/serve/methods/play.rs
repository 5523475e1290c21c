//! PLAY: refuses what we do not serve (no session, no track set up, trick
//! play), then plays from where the session's media comes from: relayed from
//! a live hub ([`play_relay`](super::play_relay)), or from the store, whole
//! or being filled ([`play_store`](super::play_store)).
//!
//! The `Scale` and `Range` decisions are plain functions of the headers and
//! the title's range, below.

use std::sync::Arc;

use rtsp_types::headers;
use rtsp_types::{Request, StatusCode};
use streamcache_rtsp::range::{NptStart, PlayRange};
use streamcache_types::Npt;

use super::super::session::{PlayerSession, Source};
use super::super::Server;
use super::play_relay::play_live;
use super::play_store::{play_cached, play_filling};
use super::{After, Reply};

pub(super) async fn play(
    server: &Arc<Server>,
    request: &Request<Vec<u8>>,
    session: Option<Arc<PlayerSession>>,
) -> (Reply, Option<After>) {
    let Some(session) = session else {
        return (Reply::status(454), None);
    };
    if session.tracks().is_empty() {
        return (Reply::status(455), None);
    }
    if let Err(status) = check_scale(request.header(&headers::SCALE).map(|v| v.as_str())) {
        return (Reply::status(status), None);
    }
    let base = request
        .request_uri()
        .map(|u| u.as_str().trim_end_matches('/').to_owned())
        .unwrap_or_default();
    let (reply, after) = match session.source.clone() {
        Source::Hub(hub) if hub.relays_to_players() => {
            play_live(server, &session, &hub, &base).await
        }
        Source::Hub(hub) => play_filling(server, request, &session, &hub, &base).await,
        Source::Cache(title) => play_cached(server, request, &session, &title, &base, None).await,
    };
    if reply.status == StatusCode::Ok {
        session.set_paused(false);
    }
    (reply, after)
}

/// A `Scale` header (none means 1), or 456 Header Field Not Valid for
/// Resource: trick play is not served, only normal speed.
pub(super) fn check_scale(scale: Option<&str>) -> Result<(), u16> {
    match scale {
        Some(scale) if scale.trim().parse::<f64>().ok() != Some(1.0) => Err(456),
        _ => Ok(()),
    }
}

/// Where PLAY of a stored title asks play to go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Requested {
    /// Seek here first; `None` (no Range, or `npt=now-`) plays on from
    /// where the session is (the start for a first PLAY).
    pub(super) from: Option<Npt>,
    /// Stop here; `None` plays to the end.
    pub(super) until: Option<Npt>,
}

/// The player's `Range` header read against the title's end (`None` when
/// the title's length is not known), or 457 Invalid Range: a unit other
/// than npt, an end before the start, a start past the title's end, or a
/// header that does not parse.
pub(super) fn requested_range(
    range: Option<&str>,
    title_end: Option<Npt>,
) -> Result<Requested, u16> {
    let requested = match range.map(PlayRange::parse) {
        None => Requested {
            from: None,
            until: None,
        },
        Some(Ok(range)) => Requested {
            from: match range.start {
                NptStart::At(npt) => Some(npt),
                NptStart::Now => None,
            },
            until: range.end,
        },
        Some(Err(_)) => return Err(457),
    };
    if requested
        .from
        .zip(title_end)
        .is_some_and(|(from, end)| from > end)
    {
        return Err(457);
    }
    Ok(requested)
}

/// The `Range` answering PLAY of a stored title: from where play really
/// starts (the keyframe at or before the asked position), to where it was
/// asked to stop or else the title's end.
pub(super) fn answered_range(started: Npt, until: Option<Npt>, title_end: Option<Npt>) -> String {
    PlayRange {
        start: NptStart::At(started),
        end: until.or(title_end),
    }
    .to_string()
}

/// The `Range` answering PLAY relayed from a hub: a live source has no
/// position to give; an on-demand one is relayed from its beginning.
pub(super) fn relayed_range(is_live: bool) -> &'static str {
    if is_live {
        "npt=now-"
    } else {
        "npt=0.000-"
    }
}

