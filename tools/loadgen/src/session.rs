//! One player session: DESCRIBE → SETUP of every track (RTP/AVP/TCP
//! interleaved, or RTP/AVP over UDP on a port pair of its own) → PLAY, then
//! receive until the end of the run while sending a `GET_PARAMETER`
//! keep-alive at half the session timeout, then TEARDOWN.
//!
//! The player answers nothing (no RTCP receiver reports). Every wait is
//! bounded: the set-up requests by the set-up timeout, playing by the end of
//! the run, TEARDOWN by [`TEARDOWN_WAIT`].

use crate::client::{ConnError, Connection, ResponseInfo};
use crate::receiver::{session_result, Receiver, TrackReceiver};
use crate::track::TrackStats;
use crate::udp::{self, PortCursor, PortPair};
use serde::Serialize;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use streamcache_rtsp::rtp::Codec;
use streamcache_rtsp::rtsp_types::Url;
use streamcache_rtsp::sdp::{self, Sdp};
use streamcache_rtsp::transport::{LowerTransport, TransportSpec};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{sleep_until, timeout_at};

/// How long to wait for the answer to TEARDOWN at the end.
pub const TEARDOWN_WAIT: Duration = Duration::from_secs(2);

/// How a player receives the media.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// RTP/AVP/TCP interleaved on the RTSP connection.
    Tcp,
    /// RTP/AVP over UDP, on an even/odd loopback port pair per track.
    Udp,
}

/// What one session is to do.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Presentation URL (DESCRIBE target).
    pub url: Url,
    /// Where to connect (the URL's host, resolved and checked as loopback).
    pub addr: SocketAddr,
    /// `Range` header value for PLAY, if any.
    pub range: Option<String>,
    /// Bound on connecting and on each set-up request (PLAY included).
    pub setup_timeout: Duration,
    /// When to stop playing.
    pub stop_at: Instant,
    /// How the media is to come.
    pub transport: Transport,
    /// Where UDP port pairs are taken from (shared by every session).
    pub ports: Arc<PortCursor>,
}

/// One track as set up.
#[derive(Debug, Clone)]
pub struct Track {
    /// The SDP media kind (`video`, `audio`, …).
    pub kind: String,
    /// The codec, for random-access detection on video.
    pub codec: Codec,
    /// What was received.
    pub stats: TrackStats,
}

/// The first video packet of a session, and the frame it belongs to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FirstVideo {
    /// Time from sending PLAY.
    pub after: Duration,
    /// Whether that packet was a random-access point.
    pub packet_rap: bool,
    /// Its RTP timestamp: the packets of its frame (access unit) share it.
    pub timestamp: u32,
    /// Whether any packet of that first frame was a random-access point (an
    /// encoder may put an SEI before the SPS, PPS and IDR of a keyframe).
    pub frame_rap: bool,
}

/// What happened to one session.
#[derive(Debug, Clone, Default)]
pub struct SessionResult {
    /// Why the session could not be established (`None`: PLAY got 2xx).
    pub failure: Option<String>,
    /// Why it stopped before the end of the run, if it did.
    pub ended_early: Option<String>,
    /// The tracks, in SDP order.
    pub tracks: Vec<Track>,
    /// Time from sending PLAY to the first RTP packet (any track).
    pub first_packet: Option<Duration>,
    /// The first packet of the first H.264/H.265 video track.
    pub first_video: Option<FirstVideo>,
    /// Time from sending PLAY to the first random-access video packet.
    pub first_rap: Option<Duration>,
    /// From the first RTP packet to the end of receiving.
    pub receiving: Duration,
    /// Keep-alives sent.
    pub keepalives: u32,
    /// Keep-alives answered with a non-2xx status.
    pub keepalive_errors: u32,
    /// Over UDP: datagrams the kernel dropped on the session's own sockets
    /// (receive buffer full), when it could be read.
    pub udp_drops: Option<u64>,
}

impl SessionResult {
    fn failed(failure: String) -> Self {
        SessionResult {
            failure: Some(failure),
            ..Self::default()
        }
    }

    /// RTP bytes over all tracks.
    pub fn bytes(&self) -> u64 {
        self.tracks.iter().map(|t| t.stats.bytes).sum()
    }

    /// RTP packets over all tracks.
    pub fn packets(&self) -> u64 {
        self.tracks.iter().map(|t| t.stats.packets).sum()
    }

    /// Lost packets over all tracks.
    pub fn lost(&self) -> u64 {
        self.tracks.iter().map(|t| t.stats.lost()).sum()
    }
}

/// A session set up and ready to PLAY.
struct Prepared {
    conn: Connection,
    tracks: Vec<Track>,
    media: Media,
    session_id: String,
    aggregate_url: String,
    keepalive_every: Duration,
}

/// Where a set-up session's media will come from.
enum Media {
    /// Interleaved channel → (track index, is RTCP).
    Interleaved(Vec<Option<(usize, bool)>>),
    /// One bound port pair per track, in track order.
    Udp(Vec<PortPair>),
}

/// Runs one session to the end of the run. Never panics on network input.
pub async fn run(plan: &Plan) -> SessionResult {
    let deadline = (Instant::now() + plan.setup_timeout).min(plan.stop_at);
    match set_up(plan, deadline.into()).await {
        Ok(prepared) => play(plan, prepared).await,
        Err(failure) => SessionResult::failed(failure),
    }
}

/// Connects, DESCRIBEs and SETUPs every track, each step by `deadline`.
async fn set_up(plan: &Plan, deadline: tokio::time::Instant) -> Result<Prepared, String> {
    let stream = match timeout_at(deadline, TcpStream::connect(plan.addr)).await {
        Err(_) => return Err("connect: timed out".into()),
        Ok(Err(e)) => return Err(format!("connect: {e}")),
        Ok(Ok(s)) => s,
    };
    // UDP ports are bound on the address the server sees us at, which on
    // a loopback connection is a loopback address.
    let local_ip = stream
        .local_addr()
        .map_err(|e| format!("connect: {e}"))?
        .ip();
    let mut conn = Connection::new(stream);
    let url = plan.url.as_str();
    let describe = exchange(
        &mut conn,
        deadline,
        "DESCRIBE",
        url,
        None,
        &[("Accept", "application/sdp")],
    )
    .await?;
    let text = std::str::from_utf8(&describe.body).map_err(|_| "DESCRIBE: SDP is not UTF-8")?;
    let sdp = Sdp::parse(text).map_err(|e| format!("DESCRIBE: {e}"))?;
    let base = sdp::base_url(
        &plan.url,
        describe.content_base.as_deref(),
        describe.content_location.as_deref(),
    );
    let track_urls = sdp
        .track_urls(&base)
        .map_err(|e| format!("DESCRIBE: {e}"))?;
    let aggregate_url = sdp
        .aggregate_url(&base)
        .map_err(|e| format!("DESCRIBE: {e}"))?
        .to_string();
    if track_urls.is_empty() || track_urls.len() > 127 {
        return Err(format!("DESCRIBE: SDP has {} tracks", track_urls.len()));
    }

    let mut tracks = Vec::with_capacity(track_urls.len());
    let mut channels = vec![None; 256];
    let mut pairs = Vec::new();
    let mut session: Option<(String, u32)> = None;
    for (index, (media, track_url)) in sdp.media.iter().zip(&track_urls).enumerate() {
        let offer = match plan.transport {
            Transport::Tcp => TransportSpec::tcp(((2 * index) as u8, (2 * index + 1) as u8)),
            Transport::Udp => {
                let pair = bind_udp(local_ip, &plan.ports)?;
                let offer = TransportSpec::udp((pair.port, pair.port + 1));
                pairs.push(pair);
                offer
            }
        };
        let reply = exchange(
            &mut conn,
            deadline,
            "SETUP",
            track_url.as_str(),
            session.as_ref().map(|(id, _)| id.as_str()),
            &[("Transport", &offer.to_string())],
        )
        .await?;
        if let Some((rtp, rtcp)) = accepted(&reply, &offer)? {
            channels[usize::from(rtp)] = Some((index, false));
            channels[usize::from(rtcp)] = Some((index, true));
        }
        if session.is_none() {
            let s = reply
                .session
                .ok_or("SETUP: no Session header in the answer")?;
            session = Some((s.id.clone(), s.timeout_or_default()));
        }
        let payload_type = media.payload_types().first().copied();
        let encoding = payload_type
            .and_then(|pt| media.rtpmap(pt))
            .map(|m| m.encoding.as_str());
        tracks.push(Track {
            kind: media.kind.clone(),
            codec: Codec::from_encoding_name(encoding.unwrap_or("")),
            stats: TrackStats::new(payload_type.and_then(|pt| media.clock_rate(pt))),
        });
    }
    let (session_id, timeout_secs) = session.ok_or("SETUP: no track set up")?;
    Ok(Prepared {
        conn,
        tracks,
        media: match plan.transport {
            Transport::Tcp => Media::Interleaved(channels),
            Transport::Udp => Media::Udp(pairs),
        },
        session_id,
        aggregate_url,
        keepalive_every: Duration::from_secs(u64::from(timeout_secs.max(2)) / 2),
    })
}

/// Binds a track's UDP port pair on `ip`, which must be loopback.
fn bind_udp(ip: IpAddr, ports: &PortCursor) -> Result<PortPair, String> {
    if !ip.is_loopback() {
        return Err(format!(
            "SETUP: refusing to receive UDP on {ip}, not loopback"
        ));
    }
    udp::bind_pair(ip, ports).map_err(|e| format!("SETUP: UDP ports: {e}"))
}

/// Checks the server's answer to a SETUP that offered `offer`: the same
/// lower transport, and over UDP our own client ports (the server may leave
/// them out). Gives the interleaved channels the server chose (ours if it
/// does not say), `None` over UDP.
fn accepted(reply: &ResponseInfo, offer: &TransportSpec) -> Result<Option<(u8, u8)>, String> {
    let answer = match reply.transport.as_deref() {
        None => offer.clone(),
        Some(value) => {
            let first = value.split(',').next().unwrap_or("");
            let spec = TransportSpec::parse(first).map_err(|e| format!("SETUP: {e}"))?;
            if spec.lower != offer.lower {
                let wanted = match offer.lower {
                    LowerTransport::Tcp => "TCP",
                    LowerTransport::Udp => "UDP",
                };
                return Err(format!(
                    "SETUP: server answered a non-{wanted} transport {first:?}"
                ));
            }
            spec
        }
    };
    match offer.lower {
        LowerTransport::Tcp => Ok(Some(
            answer.interleaved.or(offer.interleaved).unwrap_or((0, 1)),
        )),
        LowerTransport::Udp => match (answer.client_port, offer.client_port) {
            (Some(theirs), Some(ours)) if theirs != ours => Err(format!(
                "SETUP: server answered client_port={}-{}, we listen on {}-{}",
                theirs.0, theirs.1, ours.0, ours.1
            )),
            _ => Ok(None),
        },
    }
}

/// Sends a request and waits for a 2xx answer by `deadline`; anything else
/// is a failure named after the method.
async fn exchange(
    conn: &mut Connection,
    deadline: tokio::time::Instant,
    method: &str,
    url: &str,
    session: Option<&str>,
    extra: &[(&str, &str)],
) -> Result<ResponseInfo, String> {
    match timeout_at(deadline, conn.request(method, url, session, extra)).await {
        Err(_) => Err(format!("{method}: no answer in time")),
        Ok(Err(e)) => Err(format!("{method}: {e}")),
        Ok(Ok(r)) if !r.is_success() => Err(format!("{method}: {}", r.status_line())),
        Ok(Ok(r)) => Ok(r),
    }
}

/// Sends PLAY and receives until the end of the run.
async fn play(plan: &Plan, p: Prepared) -> SessionResult {
    let Prepared {
        mut conn,
        tracks,
        media,
        session_id,
        aggregate_url,
        keepalive_every,
    } = p;
    let session = Some(session_id.as_str());
    let range: Vec<(&str, &str)> = plan.range.iter().map(|r| ("Range", r.as_str())).collect();

    let tracks = TrackReceiver::for_tracks(tracks);
    // Over UDP each track is read by tasks of its own, which stop when
    // `stop` is dropped (on every way out of this function).
    let (stop, stopped) = watch::channel(());
    let (tracks, channels, receiving) = match media {
        Media::Interleaved(channels) => (tracks, channels, Vec::new()),
        Media::Udp(pairs) => {
            let receiving = pairs
                .into_iter()
                .zip(tracks)
                .map(|(pair, track)| udp::spawn(pair, track, &stopped))
                .collect();
            (Vec::new(), Vec::new(), receiving)
        }
    };

    let play_sent = Instant::now();
    let play_cseq = match conn.send("PLAY", &aggregate_url, session, &range).await {
        Ok(c) => c,
        Err(e) => return SessionResult::failed(format!("PLAY: {e}")),
    };
    let mut rx = Receiver::new(tracks, channels, play_cseq);
    let play_deadline = play_sent + plan.setup_timeout;
    let mut next_keepalive = play_sent + keepalive_every;
    let mut keepalives = 0;
    let mut ended_early = None;

    let end = loop {
        let mut wake = next_keepalive.min(plan.stop_at);
        if !rx.answered {
            wake = wake.min(play_deadline);
        }
        tokio::select! {
            received = conn.next_frame() => match received {
                Ok((frame, at)) => {
                    if let Err(failure) = rx.on_frame(frame, at) {
                        return SessionResult::failed(failure);
                    }
                }
                Err(e) if !rx.answered => return SessionResult::failed(format!("PLAY: {e}")),
                Err(e) => {
                    ended_early = Some(e.to_string());
                    break Instant::now();
                }
            },
            _ = sleep_until(wake.into()) => {
                let now = Instant::now();
                if now >= plan.stop_at {
                    break plan.stop_at;
                }
                if !rx.answered && now >= play_deadline {
                    return SessionResult::failed("PLAY: no answer in time".into());
                }
                if now >= next_keepalive {
                    next_keepalive = now + keepalive_every;
                    keepalives += 1;
                    if let Err(e) = conn.send("GET_PARAMETER", &aggregate_url, session, &[]).await {
                        ended_early = Some(format!("keep-alive: {e}"));
                        break now;
                    }
                }
            }
        }
    };
    drop(stop);
    if ended_early.is_none() {
        teardown(&mut conn, &aggregate_url, &session_id).await;
    }
    let mut tracks = std::mem::take(&mut rx.tracks);
    let mut udp_drops = None;
    if !receiving.is_empty() {
        let received = udp::join(receiving).await;
        tracks = received.tracks;
        udp_drops = received.drops;
        if ended_early.is_none() {
            ended_early = received.error.map(|e| format!("UDP receive: {e}"));
        }
    }
    let mut result = session_result(tracks, play_sent, end);
    result.keepalives = keepalives;
    result.keepalive_errors = rx.keepalive_errors;
    result.ended_early = ended_early;
    result.udp_drops = udp_drops;
    result
}

/// Sends TEARDOWN and waits briefly for its answer; errors do not matter
/// any more at this point.
async fn teardown(conn: &mut Connection, url: &str, session_id: &str) {
    let deadline = tokio::time::Instant::now() + TEARDOWN_WAIT;
    let _: Result<Result<ResponseInfo, ConnError>, _> = timeout_at(
        deadline,
        conn.request("TEARDOWN", url, Some(session_id), &[]),
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(transport: Option<&str>) -> ResponseInfo {
        ResponseInfo {
            status: 200,
            reason: "OK".into(),
            cseq: Some(2),
            session: None,
            content_base: None,
            content_location: None,
            transport: transport.map(str::to_string),
            body: Vec::new(),
        }
    }

    #[test]
    fn offers_are_written_as_players_do() {
        assert_eq!(
            TransportSpec::tcp((2, 3)).to_string(),
            "RTP/AVP/TCP;unicast;interleaved=2-3"
        );
        assert_eq!(
            TransportSpec::udp((20000, 20001)).to_string(),
            "RTP/AVP;unicast;client_port=20000-20001"
        );
    }

    #[test]
    fn uses_the_channels_the_server_chose() {
        let offer = TransportSpec::tcp((0, 1));
        let r = reply(Some("RTP/AVP/TCP;unicast;interleaved=6-7;ssrc=01020304"));
        assert_eq!(accepted(&r, &offer), Ok(Some((6, 7))));
        let offer = TransportSpec::tcp((2, 3));
        assert_eq!(accepted(&reply(None), &offer), Ok(Some((2, 3))));
        let r = reply(Some("RTP/AVP/TCP;unicast"));
        assert_eq!(accepted(&r, &offer), Ok(Some((2, 3))));
    }

    #[test]
    fn refuses_a_udp_answer_to_tcp() {
        let r = reply(Some("RTP/AVP;unicast;client_port=5000-5001"));
        let err = accepted(&r, &TransportSpec::tcp((0, 1))).unwrap_err();
        assert!(err.contains("non-TCP"), "{err}");
    }

    #[test]
    fn accepts_a_udp_answer_on_our_ports_only() {
        let offer = TransportSpec::udp((20000, 20001));
        for answer in [
            None,
            Some("RTP/AVP;unicast;client_port=20000-20001;server_port=40000-40001;ssrc=1A2B3C4D"),
            Some("RTP/AVP/UDP;unicast;server_port=40000-40001"),
        ] {
            assert_eq!(accepted(&reply(answer), &offer), Ok(None), "{answer:?}");
        }
        let r = reply(Some("RTP/AVP;unicast;client_port=30000-30001"));
        let err = accepted(&r, &offer).unwrap_err();
        assert!(err.contains("we listen on 20000-20001"), "{err}");
        let r = reply(Some("RTP/AVP/TCP;unicast;interleaved=0-1"));
        let err = accepted(&r, &offer).unwrap_err();
        assert!(err.contains("non-UDP"), "{err}");
        let r = reply(Some("RTP/SAVP;unicast;client_port=20000-20001"));
        assert!(accepted(&r, &offer).is_err());
    }

    #[tokio::test]
    async fn udp_ports_only_on_loopback() {
        let ports = PortCursor::new(udp::PORT_RANGE, 7);
        let err = bind_udp("192.0.2.1".parse().unwrap(), &ports)
            .err()
            .unwrap();
        assert!(err.contains("not loopback"), "{err}");
        let pair = bind_udp("127.0.0.1".parse().unwrap(), &ports).ok().unwrap();
        assert_eq!(pair.port % 2, 0);
    }
}
