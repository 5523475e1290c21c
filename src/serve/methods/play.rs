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
        Source::Cache(title) => {
            play_cached(server, request, &session, &title, &base, None, None).await
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    const TITLE_END: Option<Npt> = Some(Npt::from_secs(60));

    fn secs(s: u64) -> Option<Npt> {
        Some(Npt::from_secs(s))
    }

    #[test]
    fn only_normal_speed_is_served() {
        assert_eq!(check_scale(None), Ok(()));
        assert_eq!(check_scale(Some("1")), Ok(()));
        assert_eq!(check_scale(Some("1.0")), Ok(()));
        assert_eq!(check_scale(Some(" 1.000 ")), Ok(()));
        for scale in ["2", "0.5", "-1", "-1.0", "0", "fast", ""] {
            assert_eq!(check_scale(Some(scale)), Err(456), "{scale:?}");
        }
    }

    #[test]
    fn no_range_plays_on_from_where_the_session_is() {
        assert_eq!(
            requested_range(None, TITLE_END),
            Ok(Requested {
                from: None,
                until: None
            })
        );
    }

    #[test]
    fn an_open_range_seeks_and_plays_to_the_end() {
        assert_eq!(
            requested_range(Some("npt=10-"), TITLE_END),
            Ok(Requested {
                from: secs(10),
                until: None
            })
        );
        assert_eq!(
            requested_range(Some("npt=0:00:10.5-"), TITLE_END),
            Ok(Requested {
                from: Some(Npt::from_millis(10_500)),
                until: None
            })
        );
    }

    #[test]
    fn a_closed_range_stops_at_its_end() {
        assert_eq!(
            requested_range(Some("npt=10-20"), TITLE_END),
            Ok(Requested {
                from: secs(10),
                until: secs(20)
            })
        );
    }

    #[test]
    fn now_on_a_cached_title_plays_on_without_a_seek() {
        assert_eq!(
            requested_range(Some("npt=now-"), TITLE_END),
            Ok(Requested {
                from: None,
                until: None
            })
        );
    }

    #[test]
    fn bad_ranges_are_457() {
        for range in [
            "npt=20-10",
            "smpte=0:10:00-",
            "clock=19961108T142300Z-",
            "npt=abc-",
            "npt=10",
            "npt",
            "",
        ] {
            assert_eq!(
                requested_range(Some(range), TITLE_END),
                Err(457),
                "{range:?}"
            );
        }
    }

    #[test]
    fn a_start_past_the_titles_end_is_457() {
        assert_eq!(requested_range(Some("npt=61-"), TITLE_END), Err(457));
        // The very end is a place to start (play then ends at once).
        assert_eq!(
            requested_range(Some("npt=60-"), TITLE_END),
            Ok(Requested {
                from: secs(60),
                until: None
            })
        );
        // A title whose length is not known takes any start.
        assert_eq!(
            requested_range(Some("npt=3600-"), None),
            Ok(Requested {
                from: secs(3600),
                until: None
            })
        );
    }

    #[test]
    fn the_answered_range_starts_where_play_does() {
        assert_eq!(
            answered_range(Npt::from_millis(9_960), None, TITLE_END),
            "npt=9.960-60.000"
        );
        assert_eq!(
            answered_range(Npt::from_secs(10), secs(20), TITLE_END),
            "npt=10.000-20.000"
        );
        assert_eq!(answered_range(Npt::ZERO, None, None), "npt=0.000-");
    }

    #[test]
    fn a_relayed_hub_answers_its_kind_of_range() {
        assert_eq!(relayed_range(true), "npt=now-");
        assert_eq!(relayed_range(false), "npt=0.000-");
    }
}
