//! The RTSP client toward origin servers.
//!
//! # Why our own client and not `retina`
//!
//! `retina` is a good RTSP *camera* client and knows many camera quirks, but
//! it is built around playing one live stream into depacketized frames. The
//! proxy needs something else from its origin client:
//!
//! - the packets exactly as the origin sent them (RTP and RTCP), because the
//!   cache stores and replays the streaming form, not frames;
//! - on-demand control: `Range` on PLAY, PAUSE and re-PLAY to fill the parts
//!   of a title the cache lacks, which `retina` does not expose;
//! - the same framing, Transport, Range, SDP and auth code as the
//!   player-facing server (`streamcache_rtsp`), so both sides agree on what is
//!   valid and one set of fuzz targets covers both;
//! - control over transport fallback (UDP, then TCP interleaved) and over
//!   what a failure tells the player (an RTSP status).
//!
//! So this module is a thin tokio layer over the sans-io codec in
//! `streamcache_rtsp`. Camera quirks met later get handled here as they come.
//!
//! # Interface
//!
//! - [`describe`]`(&OriginTarget)` → [`Described`]: DESCRIBE (with Basic or
//!   Digest auth, retried once on 401), the SDP, the resolved track control
//!   URLs, the origin's cache headers and the npt range.
//! - [`revalidate`]`(&OriginTarget, `[`Stored`]`)` → [`Revalidation`]: a
//!   conditional DESCRIBE (`If-Modified-Since`, `If-None-Match`) telling
//!   whether a stored title is still current, or its new description.
//! - [`OriginSession::start`]`(&target, &described, start_npt)` → the
//!   session and a bounded `mpsc::Receiver<`[`OriginEvent`]`>`: SETUP of
//!   every track and PLAY (with `Range: npt=start-` when `start_npt` is
//!   given). [`TransportPref::Auto`] tries UDP unicast (even/odd port pair
//!   per track) and, if no RTP arrives within `udp_fallback` (or the origin
//!   answers 461), tears down and sets up again over TCP interleaved.
//!   [`TransportPref::Udp`] fails with [`OriginError::NoMedia`] instead;
//!   [`TransportPref::Tcp`] goes straight to interleaved.
//! - While the session runs, one task owns the connection and sockets: it
//!   forwards every RTP/RTCP packet as [`OriginEvent::Packet`], sends a
//!   keep-alive (GET_PARAMETER if the origin lists it in `Public`, else
//!   OPTIONS) at half the session timeout, sends RTCP receiver reports every
//!   5 s, and ends with [`OriginEvent::Ended`] when the origin sends RTCP BYE
//!   on every track ([`EndReason::Bye`]; over UDP after `session::BYE_GRACE`,
//!   for RTP packets read after the BYE), closes the connection
//!   ([`EndReason::Eof`]), or fails or falls silent for
//!   `session::MEDIA_STALL` ([`EndReason::Failed`]).
//! - [`OriginSession::teardown`] sends TEARDOWN and waits for the task.
//!   Dropping the session or the receiver also tears the session down (in
//!   the background); no `Ended` event follows a teardown the consumer asked
//!   for.
//! - [`Backoff`]: reconnect delays for the hub.
//! - [`OriginError::rtsp_status`]: what to answer the player.
//!
//! # Slow consumers
//!
//! The event channel holds `session::EVENT_QUEUE` packets. When it is full, packets
//! are dropped (and counted in a log line) rather than blocking the socket
//! reader: blocking would stall the RTSP connection and its keep-alives, and
//! over UDP the kernel would drop them anyway. Only the final `Ended` event
//! waits for room.
//!
//! Credentials are never logged nor put into errors: URLs are printed
//! through [`error::redacted`], and `OriginTarget`'s `Debug` hides the
//! password.

mod backoff;
mod conn;
mod error;
mod revalidate;
mod session;
mod udp;

#[cfg(test)]
pub(crate) mod fake;
#[cfg(test)]
mod tests;

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use streamcache_rtsp::rtsp_types::{headers, HeaderName, Method, Response};
use streamcache_rtsp::sdp::{self, Media, Sdp};
pub use streamcache_types::CacheHeaders;
use streamcache_types::NptRange;
use tracing::{info, warn};
use url::Url;

pub use backoff::Backoff;
pub use error::OriginError;
pub use revalidate::{revalidate, same_sdp, Revalidation, Stored};
pub use session::{OriginSession, PlayInfo};

use conn::{Connection, Req};

/// Which lower transport to use toward the origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportPref {
    /// UDP unicast, falling back to TCP interleaved when nothing arrives.
    Auto,
    /// UDP unicast only.
    Udp,
    /// TCP interleaved only.
    Tcp,
}

/// Where and how to reach one presentation at an origin.
#[derive(Clone)]
pub struct OriginTarget {
    /// The presentation URL, without credentials.
    pub url: Url,
    /// User name for Basic/Digest auth.
    pub username: Option<String>,
    /// Password for Basic/Digest auth (never printed).
    pub password: Option<String>,
    /// Lower transport preference.
    pub transport: TransportPref,
    /// Bound on the TCP connect and on waiting for each response.
    pub connect_timeout: Duration,
    /// How long to wait for the first RTP packet over UDP before falling
    /// back to TCP (with [`TransportPref::Auto`]).
    pub udp_fallback: Duration,
}

impl fmt::Debug for OriginTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OriginTarget")
            .field("url", &error::redacted(&self.url))
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("transport", &self.transport)
            .field("connect_timeout", &self.connect_timeout)
            .field("udp_fallback", &self.udp_fallback)
            .finish()
    }
}

/// One media track of a described presentation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginTrack {
    /// The track's control URL at the origin (for SETUP).
    pub control_url: Url,
    /// The RTP payload type (first format of the `m=` line).
    pub payload_type: u8,
    /// RTP clock rate in Hz.
    pub clock_rate: u32,
    /// Media kind: `video`, `audio`, …
    pub media: String,
    /// Encoding name, e.g. `H264`, `MPEG4-GENERIC` (empty if unknown).
    pub encoding: String,
}

/// What DESCRIBE told us about a presentation.
#[derive(Debug, Clone)]
pub struct Described {
    /// The SDP exactly as the origin sent it.
    pub sdp_text: String,
    /// The parsed SDP.
    pub sdp: Sdp,
    /// Base for control URLs (Content-Base, Content-Location or request
    /// URL); with `sdp` it gives the aggregate URL for PLAY and TEARDOWN.
    pub base_url: Url,
    /// The tracks, in SDP order.
    pub tracks: Vec<OriginTrack>,
    /// Caching headers of the DESCRIBE response.
    pub cache_headers: CacheHeaders,
    /// The npt range from `a=range`; `None` for live (`npt=now-`) or
    /// unknown. An open end (`npt=0-`) is live too.
    pub range: Option<NptRange>,
}

/// Something the origin session has to report.
#[derive(Debug, Clone)]
pub enum OriginEvent {
    /// One RTP or RTCP packet as received.
    Packet {
        /// Index into [`Described::tracks`].
        track: usize,
        /// `true` for RTCP.
        rtcp: bool,
        /// The packet bytes.
        data: Bytes,
    },
    /// The session is over; nothing follows.
    Ended {
        /// Why.
        reason: EndReason,
    },
}

/// Why an origin session ended on its own.
#[derive(Debug, Clone)]
pub enum EndReason {
    /// The origin sent RTCP BYE on every track (end of an on-demand title).
    Bye,
    /// The origin closed the RTSP connection.
    Eof,
    /// Something failed: the connection, a keep-alive, or media stopped.
    Failed(OriginError),
}

/// DESCRIBEs the target's presentation on a connection of its own.
pub async fn describe(t: &OriginTarget) -> Result<Described, OriginError> {
    let mut conn = Connection::connect(t).await?;
    let req = Req::new(Method::Describe, &t.url).header(headers::ACCEPT, "application/sdp");
    let resp = conn.request(&req, |_, _| {}).await?;
    let resp = conn.expect_success(&req.method, resp)?;
    let described = described_from(conn.origin(), &t.url, &resp)?;
    info!(
        origin = conn.origin(),
        tracks = described.tracks.len(),
        range = ?described.range,
        "described"
    );
    Ok(described)
}

/// Builds [`Described`] from a successful DESCRIBE response.
fn described_from(
    origin: &str,
    request_url: &Url,
    resp: &Response<Vec<u8>>,
) -> Result<Described, OriginError> {
    let header = |name: &HeaderName| resp.header(name).map(|v| v.as_str().to_owned());
    let sdp_text = String::from_utf8(resp.body().clone())
        .map_err(|_| OriginError::protocol(origin, "an SDP that is not UTF-8"))?;
    let sdp = Sdp::parse(&sdp_text).map_err(|e| OriginError::protocol(origin, e.to_string()))?;
    let base_url = sdp::base_url(
        request_url,
        header(&headers::CONTENT_BASE).as_deref(),
        header(&headers::CONTENT_LOCATION).as_deref(),
    );
    let bad_control = |e: sdp::SdpError| OriginError::protocol(origin, e.to_string());
    // Resolved now so that a bad aggregate control fails DESCRIBE, not PLAY.
    sdp.aggregate_url(&base_url).map_err(bad_control)?;
    let urls = sdp.track_urls(&base_url).map_err(bad_control)?;
    if urls.is_empty() {
        return Err(OriginError::protocol(
            origin,
            "an SDP without media sections",
        ));
    }
    let tracks = sdp
        .media
        .iter()
        .zip(urls)
        .enumerate()
        .map(|(i, (m, control_url))| track_from(origin, i, m, control_url))
        .collect::<Result<Vec<_>, _>>()?;
    let range = sdp.range().and_then(|r| r.title_range());
    Ok(Described {
        cache_headers: revalidate::headers_of(resp),
        sdp_text,
        sdp,
        base_url,
        tracks,
        range,
    })
}

fn track_from(
    origin: &str,
    index: usize,
    m: &Media,
    control_url: Url,
) -> Result<OriginTrack, OriginError> {
    let payload_type = *m.payload_types().first().ok_or_else(|| {
        OriginError::protocol(
            origin,
            format!("media section {index} without an RTP payload type"),
        )
    })?;
    let clock_rate = m.clock_rate(payload_type).unwrap_or_else(|| {
        // A dynamic payload type without rtpmap: guess the usual rate.
        let guess = if m.kind == "audio" { 8000 } else { 90000 };
        warn!(
            origin,
            track = index,
            payload_type,
            guess,
            "no clock rate in SDP; guessing"
        );
        guess
    });
    let encoding = match m.rtpmap(payload_type) {
        Some(map) => map.encoding.clone(),
        None => streamcache_rtsp::sdp::static_encoding(payload_type).to_owned(),
    };
    Ok(OriginTrack {
        control_url,
        payload_type,
        clock_rate,
        media: m.kind.clone(),
        encoding,
    })
}
