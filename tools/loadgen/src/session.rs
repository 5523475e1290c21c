//! One player session: DESCRIBE → SETUP of every track over RTP/AVP/TCP
//! interleaved → PLAY, then receive until the end of the run while sending
//! a `GET_PARAMETER` keep-alive at half the session timeout, then TEARDOWN.
//!
//! The player answers nothing (no RTCP receiver reports). Every wait is
//! bounded: the set-up requests by the set-up timeout, playing by the end of
//! the run, TEARDOWN by [`TEARDOWN_WAIT`].

use crate::client::{ConnError, Connection, ResponseInfo};
use crate::rap::is_rap;
use crate::track::TrackStats;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use streamcache_rtsp::framing::Frame;
use streamcache_rtsp::rtp::Codec;
use streamcache_rtsp::rtsp_types::Url;
use streamcache_rtsp::sdp::{self, Sdp};
use streamcache_rtsp::transport::{LowerTransport, TransportSpec};
use tokio::net::TcpStream;
use tokio::time::{sleep_until, timeout_at};

/// How long to wait for the answer to TEARDOWN at the end.
pub const TEARDOWN_WAIT: Duration = Duration::from_secs(2);

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
    /// Interleaved channel → (track index, is RTCP).
    channels: Vec<Option<(usize, bool)>>,
    session_id: String,
    aggregate_url: String,
    keepalive_every: Duration,
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
    let mut session: Option<(String, u32)> = None;
    for (index, (media, track_url)) in sdp.media.iter().zip(&track_urls).enumerate() {
        let wanted = ((2 * index) as u8, (2 * index + 1) as u8);
        let transport = format!("RTP/AVP/TCP;unicast;interleaved={}-{}", wanted.0, wanted.1);
        let reply = exchange(
            &mut conn,
            deadline,
            "SETUP",
            track_url.as_str(),
            session.as_ref().map(|(id, _)| id.as_str()),
            &[("Transport", &transport)],
        )
        .await?;
        let (rtp, rtcp) = interleaved_channels(&reply, wanted)?;
        channels[usize::from(rtp)] = Some((index, false));
        channels[usize::from(rtcp)] = Some((index, true));
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
        channels,
        session_id,
        aggregate_url,
        keepalive_every: Duration::from_secs(u64::from(timeout_secs.max(2)) / 2),
    })
}

/// The interleaved channels the server chose (ours if it does not say).
fn interleaved_channels(reply: &ResponseInfo, wanted: (u8, u8)) -> Result<(u8, u8), String> {
    let Some(value) = reply.transport.as_deref() else {
        return Ok(wanted);
    };
    let first = value.split(',').next().unwrap_or("");
    let spec = TransportSpec::parse(first).map_err(|e| format!("SETUP: {e}"))?;
    if spec.lower != LowerTransport::Tcp {
        return Err(format!(
            "SETUP: server answered a non-TCP transport {first:?}"
        ));
    }
    Ok(spec.interleaved.unwrap_or(wanted))
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

/// What a playing session has received so far.
struct Receiver {
    /// Interleaved channel → (track index, is RTCP).
    channels: Vec<Option<(usize, bool)>>,
    /// The first H.264/H.265 video track, if any.
    video: Option<usize>,
    play_sent: Instant,
    play_cseq: u32,
    /// Whether PLAY was answered 2xx.
    answered: bool,
    first_arrival: Option<Instant>,
    result: SessionResult,
}

impl Receiver {
    fn new(
        tracks: Vec<Track>,
        channels: Vec<Option<(usize, bool)>>,
        play_sent: Instant,
        play_cseq: u32,
    ) -> Self {
        let video = tracks
            .iter()
            .position(|t| t.kind == "video" && t.codec != Codec::Other);
        Receiver {
            channels,
            video,
            play_sent,
            play_cseq,
            answered: false,
            first_arrival: None,
            result: SessionResult {
                tracks,
                ..SessionResult::default()
            },
        }
    }

    /// Accounts one frame that arrived at `at`. An error answer to PLAY
    /// fails the session.
    fn on_frame(&mut self, frame: Frame, at: Instant) -> Result<(), String> {
        match frame {
            Frame::Response(resp) => {
                let info = ResponseInfo::from_response(&resp);
                if info.cseq == Some(self.play_cseq) {
                    if !info.is_success() {
                        return Err(format!("PLAY: {}", info.status_line()));
                    }
                    self.answered = true;
                } else if !info.is_success() {
                    self.result.keepalive_errors += 1;
                }
            }
            Frame::Interleaved { channel, payload } => self.on_interleaved(channel, &payload, at),
            Frame::Request(_) => {} // requests from the server go unanswered
        }
        Ok(())
    }

    fn on_interleaved(&mut self, channel: u8, packet: &[u8], at: Instant) {
        let Some((index, is_rtcp)) = self.channels[usize::from(channel)] else {
            return;
        };
        let track = &mut self.result.tracks[index];
        if is_rtcp {
            track.stats.rtcp_packets += 1;
            return;
        }
        let Some(header) = track.stats.on_rtp(packet, at) else {
            return;
        };
        let after = at.saturating_duration_since(self.play_sent);
        self.first_arrival.get_or_insert(at);
        self.result.first_packet.get_or_insert(after);
        if Some(index) == self.video {
            let rap = is_rap(track.codec, header.payload(packet));
            let first = self.result.first_video.get_or_insert(FirstVideo {
                after,
                packet_rap: rap,
                timestamp: header.timestamp,
                frame_rap: false,
            });
            if header.timestamp == first.timestamp {
                first.frame_rap |= rap;
            }
            if rap {
                self.result.first_rap.get_or_insert(after);
            }
        }
    }

    /// The result, with receiving counted up to `end`.
    fn finish(mut self, end: Instant) -> SessionResult {
        self.result.receiving = self
            .first_arrival
            .map_or(Duration::ZERO, |f| end.saturating_duration_since(f));
        self.result
    }
}

/// Sends PLAY and receives until the end of the run.
async fn play(plan: &Plan, p: Prepared) -> SessionResult {
    let Prepared {
        mut conn,
        tracks,
        channels,
        session_id,
        aggregate_url,
        keepalive_every,
    } = p;
    let session = Some(session_id.as_str());
    let range: Vec<(&str, &str)> = plan.range.iter().map(|r| ("Range", r.as_str())).collect();

    let play_sent = Instant::now();
    let play_cseq = match conn.send("PLAY", &aggregate_url, session, &range).await {
        Ok(c) => c,
        Err(e) => return SessionResult::failed(format!("PLAY: {e}")),
    };
    let mut rx = Receiver::new(tracks, channels, play_sent, play_cseq);
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
    if ended_early.is_none() {
        teardown(&mut conn, &aggregate_url, &session_id).await;
    }
    let mut result = rx.finish(end);
    result.keepalives = keepalives;
    result.ended_early = ended_early;
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
    fn uses_the_channels_the_server_chose() {
        let r = reply(Some("RTP/AVP/TCP;unicast;interleaved=6-7;ssrc=01020304"));
        assert_eq!(interleaved_channels(&r, (0, 1)), Ok((6, 7)));
        assert_eq!(interleaved_channels(&reply(None), (2, 3)), Ok((2, 3)));
        let r = reply(Some("RTP/AVP/TCP;unicast"));
        assert_eq!(interleaved_channels(&r, (4, 5)), Ok((4, 5)));
    }

    fn h264_packet(sequence: u16, timestamp: u32, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0x80, 96];
        p.extend_from_slice(&sequence.to_be_bytes());
        p.extend_from_slice(&timestamp.to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, 1]);
        p.extend_from_slice(payload);
        p
    }

    fn receiver() -> Receiver {
        let tracks = vec![
            Track {
                kind: "video".into(),
                codec: Codec::H264,
                stats: TrackStats::new(Some(90_000)),
            },
            Track {
                kind: "audio".into(),
                codec: Codec::Other,
                stats: TrackStats::new(Some(48_000)),
            },
        ];
        let mut channels = vec![None; 256];
        channels[..4].copy_from_slice(&[
            Some((0, false)),
            Some((0, true)),
            Some((1, false)),
            Some((1, true)),
        ]);
        Receiver::new(tracks, channels, Instant::now(), 5)
    }

    fn interleaved(channel: u8, payload: Vec<u8>) -> Frame {
        Frame::Interleaved { channel, payload }
    }

    #[test]
    fn first_video_frame_is_judged_as_a_whole() {
        let mut rx = receiver();
        let t = rx.play_sent + Duration::from_millis(3);
        // Audio first, then SEI, SPS, IDR start of one frame, then the next frame.
        for (ch, p) in [
            (2, h264_packet(1, 0, &[0x11])),
            (0, h264_packet(10, 900, &[0x06, 0x05])),
            (0, h264_packet(11, 900, &[0x67, 0x42])),
            (0, h264_packet(12, 900, &[0x7c, 0x85])),
            (0, h264_packet(13, 4500, &[0x41, 0x9a])),
            (1, vec![0x80, 200, 0, 6]),      // RTCP
            (9, h264_packet(1, 1, &[0x65])), // unknown channel
        ] {
            rx.on_frame(interleaved(ch, p), t).unwrap();
        }
        let r = rx.finish(t + Duration::from_secs(1));
        assert_eq!(r.first_packet, Some(Duration::from_millis(3)));
        let v = r.first_video.unwrap();
        assert!(!v.packet_rap && v.frame_rap, "{v:?}");
        assert_eq!(r.first_rap, Some(Duration::from_millis(3)));
        assert_eq!(
            (r.tracks[0].stats.packets, r.tracks[1].stats.packets),
            (4, 1)
        );
        assert_eq!(r.tracks[0].stats.rtcp_packets, 1);
        assert_eq!(r.receiving, Duration::from_secs(1));
    }

    #[test]
    fn play_error_fails_and_other_errors_count_as_keepalive_errors() {
        let answer = |status: &str, cseq: u32| {
            let text = format!("RTSP/1.0 {status}\r\nCSeq: {cseq}\r\n\r\n");
            match streamcache_rtsp::framing::decode(text.as_bytes(), &Default::default()) {
                Ok(Some((frame, _))) => frame,
                other => panic!("{other:?}"),
            }
        };
        let mut rx = receiver();
        let now = Instant::now();
        rx.on_frame(answer("200 OK", 5), now).unwrap();
        assert!(rx.answered);
        rx.on_frame(answer("454 Session Not Found", 6), now)
            .unwrap();
        assert_eq!(rx.result.keepalive_errors, 1);
        let mut rx = receiver();
        assert_eq!(
            rx.on_frame(answer("503 Service Unavailable", 5), now),
            Err("PLAY: 503 Service Unavailable".into())
        );
    }

    #[test]
    fn refuses_a_udp_answer() {
        let r = reply(Some("RTP/AVP;unicast;client_port=5000-5001"));
        assert!(interleaved_channels(&r, (0, 1))
            .unwrap_err()
            .contains("non-TCP"));
    }
}
