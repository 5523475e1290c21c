//! What a playing session receives, whatever carries the media.
//!
//! Per track, a [`TrackReceiver`]: the RTP accounting of
//! [`TrackStats`](crate::track::TrackStats) (packets, bytes, loss, pacing)
//! plus, on the session's first H.264/H.265 video track, its first packet,
//! first frame and first random-access point.
//! Per session, a [`Receiver`]: the answers read on the RTSP connection (PLAY,
//! keep-alives) and, over TCP, the interleaved frames it hands to the tracks.
//!
//! Over TCP the [`Receiver`] owns the track receivers; over UDP each one is
//! moved into the task reading its track's RTP socket and handed back at the
//! end (see [`crate::udp`]). Either way the session's figures come from
//! [`session_result`], so both transports are measured the same way.

use crate::client::ResponseInfo;
use crate::rap::is_rap;
use crate::session::{FirstVideo, SessionResult, Track};
use std::time::{Duration, Instant};
use streamcache_rtsp::framing::Frame;
use streamcache_rtsp::rtp::Codec;

/// The first video packet of a track and the frame it belongs to.
#[derive(Debug, Clone, Copy)]
struct VideoStart {
    at: Instant,
    packet_rap: bool,
    timestamp: u32,
    frame_rap: bool,
}

/// What one track of a playing session has received.
#[derive(Debug)]
pub struct TrackReceiver {
    /// The track and its counters.
    pub track: Track,
    /// Whether this is the session's first H.264/H.265 video track, the one
    /// whose random-access points are looked for.
    video: bool,
    first_arrival: Option<Instant>,
    first_video: Option<VideoStart>,
    first_rap: Option<Instant>,
}

impl TrackReceiver {
    /// Receivers for a session's tracks, in order; the first H.264/H.265
    /// video track is the one judged for random access.
    pub fn for_tracks(tracks: Vec<Track>) -> Vec<TrackReceiver> {
        let video = tracks
            .iter()
            .position(|t| t.kind == "video" && t.codec != Codec::Other);
        tracks
            .into_iter()
            .enumerate()
            .map(|(index, track)| TrackReceiver {
                track,
                video: Some(index) == video,
                first_arrival: None,
                first_video: None,
                first_rap: None,
            })
            .collect()
    }

    /// Accounts one packet received for the track's RTP at `at` (the return
    /// of the read that completed it).
    pub fn on_rtp(&mut self, packet: &[u8], at: Instant) {
        let Some(header) = self.track.stats.on_rtp(packet, at) else {
            return;
        };
        self.first_arrival.get_or_insert(at);
        if !self.video {
            return;
        }
        let rap = is_rap(self.track.codec, header.payload(packet));
        let first = self.first_video.get_or_insert(VideoStart {
            at,
            packet_rap: rap,
            timestamp: header.timestamp,
            frame_rap: false,
        });
        if header.timestamp == first.timestamp {
            first.frame_rap |= rap;
        }
        if rap {
            self.first_rap.get_or_insert(at);
        }
    }

    /// Accounts one RTCP packet.
    pub fn on_rtcp(&mut self) {
        self.track.stats.rtcp_packets += 1;
    }

    /// Accounts a datagram too large for the receive buffer: not measured,
    /// counted as malformed.
    pub fn on_truncated(&mut self) {
        self.track.stats.malformed += 1;
    }
}

/// A session's figures from its tracks: PLAY was written at `play_sent`,
/// receiving ended at `end`. The first packet is the earliest first RTP
/// packet of any track; the first video packet, frame and random-access
/// point are those of the video track.
pub fn session_result(
    tracks: Vec<TrackReceiver>,
    play_sent: Instant,
    end: Instant,
) -> SessionResult {
    let after = |at: Instant| at.saturating_duration_since(play_sent);
    let first_arrival = tracks.iter().filter_map(|t| t.first_arrival).min();
    let video = tracks.iter().find(|t| t.video);
    SessionResult {
        first_packet: first_arrival.map(after),
        first_video: video.and_then(|t| t.first_video).map(|v| FirstVideo {
            after: after(v.at),
            packet_rap: v.packet_rap,
            timestamp: v.timestamp,
            frame_rap: v.frame_rap,
        }),
        first_rap: video.and_then(|t| t.first_rap).map(after),
        receiving: first_arrival.map_or(Duration::ZERO, |f| end.saturating_duration_since(f)),
        tracks: tracks.into_iter().map(|t| t.track).collect(),
        ..SessionResult::default()
    }
}

/// What the RTSP connection of a playing session brings: answers, and over
/// TCP the interleaved media.
pub struct Receiver {
    /// Interleaved channel → (track index, is RTCP); empty over UDP.
    channels: Vec<Option<(usize, bool)>>,
    /// The tracks fed from the connection (none over UDP).
    pub tracks: Vec<TrackReceiver>,
    play_cseq: u32,
    /// Whether PLAY was answered 2xx.
    pub answered: bool,
    /// Answers other than to PLAY (keep-alives) with a non-2xx status.
    pub keepalive_errors: u32,
}

impl Receiver {
    /// A receiver for a session whose PLAY has `CSeq` `play_cseq`.
    pub fn new(
        tracks: Vec<TrackReceiver>,
        channels: Vec<Option<(usize, bool)>>,
        play_cseq: u32,
    ) -> Self {
        Receiver {
            channels,
            tracks,
            play_cseq,
            answered: false,
            keepalive_errors: 0,
        }
    }

    /// Accounts one frame that arrived at `at`. An error answer to PLAY
    /// fails the session.
    pub fn on_frame(&mut self, frame: Frame, at: Instant) -> Result<(), String> {
        match frame {
            Frame::Response(resp) => {
                let info = ResponseInfo::from_response(&resp);
                if info.cseq == Some(self.play_cseq) {
                    if !info.is_success() {
                        return Err(format!("PLAY: {}", info.status_line()));
                    }
                    self.answered = true;
                } else if !info.is_success() {
                    self.keepalive_errors += 1;
                }
            }
            Frame::Interleaved { channel, payload } => {
                let slot = self.channels.get(usize::from(channel)).copied().flatten();
                let Some((index, is_rtcp)) = slot else {
                    return Ok(());
                };
                if let Some(track) = self.tracks.get_mut(index) {
                    if is_rtcp {
                        track.on_rtcp();
                    } else {
                        track.on_rtp(&payload, at);
                    }
                }
            }
            Frame::Request(_) => {} // requests from the server go unanswered
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::track::TrackStats;

    fn h264_packet(sequence: u16, timestamp: u32, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0x80, 96];
        p.extend_from_slice(&sequence.to_be_bytes());
        p.extend_from_slice(&timestamp.to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, 1]);
        p.extend_from_slice(payload);
        p
    }

    fn tracks() -> Vec<TrackReceiver> {
        TrackReceiver::for_tracks(vec![
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
        ])
    }

    fn receiver() -> Receiver {
        let mut channels = vec![None; 256];
        channels[..4].copy_from_slice(&[
            Some((0, false)),
            Some((0, true)),
            Some((1, false)),
            Some((1, true)),
        ]);
        Receiver::new(tracks(), channels, 5)
    }

    fn interleaved(channel: u8, payload: Vec<u8>) -> Frame {
        Frame::Interleaved { channel, payload }
    }

    /// Audio first, then SEI, SPS, IDR start of one frame, then the next frame.
    fn packets() -> Vec<(u8, Vec<u8>)> {
        vec![
            (2, h264_packet(1, 0, &[0x11])),
            (0, h264_packet(10, 900, &[0x06, 0x05])),
            (0, h264_packet(11, 900, &[0x67, 0x42])),
            (0, h264_packet(12, 900, &[0x7c, 0x85])),
            (0, h264_packet(13, 4500, &[0x41, 0x9a])),
            (1, vec![0x80, 200, 0, 6]),      // RTCP
            (9, h264_packet(1, 1, &[0x65])), // unknown channel
        ]
    }

    fn check(r: &SessionResult) {
        assert_eq!(r.first_packet, Some(Duration::from_millis(3)));
        let v = r.first_video.unwrap();
        assert!(!v.packet_rap && v.frame_rap, "{v:?}");
        assert_eq!(v.after, Duration::from_millis(4));
        assert_eq!(r.first_rap, Some(Duration::from_millis(4)));
        assert_eq!(
            (r.tracks[0].stats.packets, r.tracks[1].stats.packets),
            (4, 1)
        );
        assert_eq!(r.tracks[0].stats.rtcp_packets, 1);
        assert_eq!(r.receiving, Duration::from_secs(1));
    }

    #[test]
    fn first_video_frame_is_judged_as_a_whole() {
        let mut rx = receiver();
        let play_sent = Instant::now();
        let at = |i: u64| play_sent + Duration::from_millis(3 + i.min(1));
        for (i, (ch, p)) in (0..).zip(packets()) {
            rx.on_frame(interleaved(ch, p), at(i)).unwrap();
        }
        let r = session_result(rx.tracks, play_sent, at(0) + Duration::from_secs(1));
        check(&r);
    }

    #[test]
    fn tracks_fed_apart_give_the_same_figures() {
        // As over UDP: each track's datagrams in its own receiver, in
        // per-track order, interleaving lost.
        let mut tracks = tracks();
        let play_sent = Instant::now();
        let at = |i: u64| play_sent + Duration::from_millis(3 + i.min(1));
        for (i, (ch, p)) in (0..).zip(packets()) {
            match ch {
                0 | 2 => tracks[usize::from(ch / 2)].on_rtp(&p, at(i)),
                1 => tracks[0].on_rtcp(),
                _ => {}
            }
        }
        tracks[1].on_truncated();
        let r = session_result(tracks, play_sent, at(0) + Duration::from_secs(1));
        check(&r);
        assert_eq!(r.tracks[1].stats.malformed, 1);
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
        assert_eq!(rx.keepalive_errors, 1);
        let mut rx = receiver();
        assert_eq!(
            rx.on_frame(answer("503 Service Unavailable", 5), now),
            Err("PLAY: 503 Service Unavailable".into())
        );
        // Over UDP the connection carries no channels: stray frames are ignored.
        let mut rx = Receiver::new(Vec::new(), Vec::new(), 5);
        rx.on_frame(interleaved(0, h264_packet(1, 0, &[0x65])), now)
            .unwrap();
    }
}
