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

