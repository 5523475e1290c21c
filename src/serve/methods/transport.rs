//! Transport negotiation for SETUP: which of the transports a player offers
//! we serve, on which interleaved channels, and the `Transport` header we
//! answer with. Plain decisions, no sockets: SETUP binds the UDP ports or
//! takes the connection's channels afterwards.
//!
//! We serve `RTP/AVP` unicast, over UDP to the player's own address and
//! `client_port`s, or interleaved on the RTSP connection. Nothing else we
//! can serve among the offers (another profile such as `RTP/SAVP`,
//! multicast, a `destination=`, a UDP offer without ports, channels another
//! track of the session already uses, a parameter that does not parse, or
//! no `Transport` header at all) is answered 461 Unsupported Transport.

use streamcache_rtsp::transport::{self, LowerTransport, TransportSpec};

/// 461 Unsupported Transport: none of the player's offers can be served.
pub(super) const UNSUPPORTED_TRANSPORT: u16 = 461;

/// The transport chosen for one track.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Chosen {
    /// Interleaved on the RTSP connection, on these (RTP, RTCP) channels.
    Interleaved((u8, u8)),
    /// UDP to the player's address, on its (RTP, RTCP) `client_port`s.
    Udp((u16, u16)),
}

impl Chosen {
    /// The `Transport` header answering the SETUP; `server_port` is the UDP
    /// pair we send from (none for interleaved).
    pub(super) fn answer(self, server_port: Option<(u16, u16)>) -> TransportSpec {
        match self {
            Chosen::Interleaved(channels) => TransportSpec::tcp(channels),
            Chosen::Udp(client_port) => TransportSpec {
                server_port,
                ..TransportSpec::udp(client_port)
            },
        }
    }
}

/// The first transport of the player's `Transport` header (`offered`, `None`
/// when the request has none) that we can serve, or the status to answer.
/// `uses_channel` tells the interleaved channels the session's other tracks
/// already take; an interleaved offer without channels gets the lowest free
/// pair.
pub(super) fn negotiate(
    offered: Option<&str>,
    uses_channel: impl Fn(u8) -> bool,
) -> Result<Chosen, u16> {
    let offered = offered.ok_or(UNSUPPORTED_TRANSPORT)?;
    let chosen = transport::choose(offered, |t| acceptable(t, &uses_channel))
        .map_err(|_| UNSUPPORTED_TRANSPORT)?;
    match (chosen.lower, chosen.client_port) {
        (LowerTransport::Tcp, _) => Ok(Chosen::Interleaved(
            chosen
                .interleaved
                .unwrap_or_else(|| free_channels(&uses_channel)),
        )),
        (LowerTransport::Udp, Some(client_port)) => Ok(Chosen::Udp(client_port)),
        // `acceptable` takes no UDP offer without ports.
        (LowerTransport::Udp, None) => Err(UNSUPPORTED_TRANSPORT),
    }
}

/// Whether we can serve one alternative: unicast, media to the player's own
/// address (a `destination=` elsewhere would make us a traffic reflector),
/// and interleaved channels not already taken by another track.
fn acceptable(t: &TransportSpec, uses_channel: &impl Fn(u8) -> bool) -> bool {
    !t.multicast
        && t.destination.is_none()
        && match t.lower {
            LowerTransport::Tcp => t
                .interleaved
                .is_none_or(|(a, b)| !uses_channel(a) && !uses_channel(b)),
            LowerTransport::Udp => t.client_port.is_some(),
        }
}

/// The lowest even interleaved channel pair the session does not use yet.
fn free_channels(uses_channel: &impl Fn(u8) -> bool) -> (u8, u8) {
    (0..=127u8)
        .map(|i| (2 * i, 2 * i + 1))
        .find(|&(a, b)| !uses_channel(a) && !uses_channel(b))
        .unwrap_or((254, 255))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A session with no track set up yet.
    fn none_used(_: u8) -> bool {
        false
    }

    #[test]
    fn takes_the_first_offer_we_serve_in_the_players_order() {
        let tcp_first =
            "RTP/AVP/TCP;unicast;interleaved=0-1, RTP/AVP;unicast;client_port=5000-5001";
        assert_eq!(
            negotiate(Some(tcp_first), none_used),
            Ok(Chosen::Interleaved((0, 1)))
        );
        let udp_first =
            "RTP/AVP;unicast;client_port=5000-5001, RTP/AVP/TCP;unicast;interleaved=0-1";
        assert_eq!(
            negotiate(Some(udp_first), none_used),
            Ok(Chosen::Udp((5000, 5001)))
        );
        // Offers we cannot serve are passed over, whatever their place.
        let mixed = "RTP/SAVP;unicast;client_port=4000-4001, RTP/AVP;multicast, \
                     RTP/AVP;unicast;client_port=x, RTP/AVP/UDP;unicast;client_port=5000-5001";
        assert_eq!(
            negotiate(Some(mixed), none_used),
            Ok(Chosen::Udp((5000, 5001)))
        );
    }

    #[test]
    fn other_profiles_multicast_and_other_destinations_are_461() {
        for offer in [
            "RTP/SAVP;unicast;client_port=5000-5001",
            "RTP/SAVP/TCP;unicast;interleaved=0-1",
            "RAW/RAW/UDP;unicast;client_port=5000-5001",
            "RTP/AVP;multicast;client_port=5000-5001",
            "RTP/AVP/TCP;multicast;interleaved=0-1",
            "RTP/AVP;unicast;destination=192.0.2.1;client_port=5000-5001",
        ] {
            assert_eq!(negotiate(Some(offer), none_used), Err(461), "{offer}");
        }
    }

    #[test]
    fn no_or_unreadable_transport_is_461() {
        assert_eq!(negotiate(None, none_used), Err(461));
        assert_eq!(negotiate(Some(""), none_used), Err(461));
        assert_eq!(negotiate(Some("garbage"), none_used), Err(461));
        assert_eq!(
            negotiate(Some("RTP/AVP/TCP;unicast;interleaved=255"), none_used),
            Err(461)
        );
    }

    #[test]
    fn interleaved_channels_given_are_kept_when_free() {
        assert_eq!(
            negotiate(Some("RTP/AVP/TCP;unicast;interleaved=4-5"), none_used),
            Ok(Chosen::Interleaved((4, 5)))
        );
        // A single channel means the pair starting there.
        assert_eq!(
            negotiate(Some("RTP/AVP/TCP;unicast;interleaved=2"), none_used),
            Ok(Chosen::Interleaved((2, 3)))
        );
    }

    #[test]
    fn interleaved_channels_another_track_uses_are_refused() {
        let first_track = |c: u8| c < 2;
        assert_eq!(
            negotiate(Some("RTP/AVP/TCP;unicast;interleaved=0-1"), first_track),
            Err(461)
        );
        // Sharing only one of the two channels is as bad.
        assert_eq!(
            negotiate(Some("RTP/AVP/TCP;unicast;interleaved=1-2"), first_track),
            Err(461)
        );
        // ...but a later offer may still be served.
        assert_eq!(
            negotiate(
                Some("RTP/AVP/TCP;unicast;interleaved=0-1, RTP/AVP;unicast;client_port=5000-5001"),
                first_track
            ),
            Ok(Chosen::Udp((5000, 5001)))
        );
    }

    #[test]
    fn interleaved_without_channels_gets_the_lowest_free_pair() {
        let offer = Some("RTP/AVP/TCP;unicast");
        assert_eq!(negotiate(offer, none_used), Ok(Chosen::Interleaved((0, 1))));
        assert_eq!(negotiate(offer, |c| c < 2), Ok(Chosen::Interleaved((2, 3))));
        // A pair is free only when both its channels are.
        assert_eq!(
            negotiate(offer, |c| c == 1 || c == 4),
            Ok(Chosen::Interleaved((2, 3)))
        );
    }

    #[test]
    fn client_ports_are_taken_as_the_player_gives_them() {
        assert_eq!(
            negotiate(Some("RTP/AVP;unicast;client_port=5000-5001"), none_used),
            Ok(Chosen::Udp((5000, 5001)))
        );
        // An odd RTP port is the player's business: we send where it asks.
        assert_eq!(
            negotiate(Some("RTP/AVP;unicast;client_port=5001-5002"), none_used),
            Ok(Chosen::Udp((5001, 5002)))
        );
        // A single port means the pair starting there.
        assert_eq!(
            negotiate(Some("RTP/AVP;unicast;client_port=5000"), none_used),
            Ok(Chosen::Udp((5000, 5001)))
        );
        // No port to send to: nothing to serve.
        assert_eq!(negotiate(Some("RTP/AVP;unicast"), none_used), Err(461));
        assert_eq!(
            negotiate(Some("RTP/AVP;unicast;client_port=65535"), none_used),
            Err(461)
        );
    }

    #[test]
    fn the_answer_names_what_was_chosen() {
        assert_eq!(
            Chosen::Interleaved((2, 3)).answer(None).to_string(),
            "RTP/AVP/TCP;unicast;interleaved=2-3"
        );
        assert_eq!(
            Chosen::Udp((5000, 5001))
                .answer(Some((6000, 6001)))
                .to_string(),
            "RTP/AVP;unicast;client_port=5000-5001;server_port=6000-6001"
        );
    }
}
