//! From RTP timestamps to media time (npt), and where a player or a seek may
//! start.
//!
//! Every packet the origin sends is *stamped* before it is fanned out and
//! recorded: its npt (from its track's RTP clock, anchored by the origin's
//! PLAY answer) and whether it is a random-access point. The rules are in
//! `docs/design/time.md`.

use bytes::Bytes;
use streamcache_rtsp::rtp::{self, Codec, RtpView};
use streamcache_types::Npt;

use crate::origin::{Described, PlayInfo};

/// Per-track state for turning RTP timestamps into media time.
#[derive(Debug, Clone)]
pub(super) struct TrackClock {
    clock_rate: u32,
    base: Option<u32>,
    /// Last timestamp extended to 64 bits, to carry across 32-bit wrap.
    last_ext: Option<i64>,
    /// `base` came from the origin's RTP-Info and is checked against the
    /// first packet (see [`TrackClock::npt`]).
    check_base: bool,
}

impl TrackClock {
    pub(super) fn new(clock_rate: u32) -> TrackClock {
        TrackClock {
            clock_rate,
            base: None,
            last_ext: None,
            check_base: false,
        }
    }

    /// Anchors the clock on the origin's RTP-Info `rtptime` (which stands
    /// for the PLAY's start); without one the first packet is the anchor.
    pub(super) fn anchor(&mut self, rtptime: Option<u32>) {
        self.base = rtptime;
        self.last_ext = rtptime.map(i64::from);
        self.check_base = rtptime.is_some();
    }

    /// Media time of an RTP timestamp: `offset` stands for the base.
    /// Packets may come before the base (an origin answering a Range PLAY
    /// starts at the keyframe before the position its RTP-Info names), so
    /// ticks are signed; the result stops at npt 0.
    ///
    /// An RTP-Info anchor is trusted unless the first packet comes more than
    /// a second after it: gst-rtsp-server, for one, answers a Range PLAY of
    /// a Matroska title with the video track's `rtptime` of the file's start;
    /// the first packet then stands for the Range start instead.
    pub(super) fn npt(&mut self, ts: u32, offset: Npt) -> Npt {
        if std::mem::take(&mut self.check_base) {
            let ahead = self
                .base
                .map_or(0, |base| i64::from(ts.wrapping_sub(base) as i32));
            if ahead > i64::from(self.clock_rate) {
                self.base = Some(ts);
                self.last_ext = Some(i64::from(ts));
            }
        }
        let base = *self.base.get_or_insert(ts);
        let ext = match self.last_ext {
            // The nearest 64-bit value to the last one with these low 32 bits.
            Some(last) => last + i64::from(ts.wrapping_sub(last as u32) as i32),
            None => i64::from(ts),
        };
        self.last_ext = Some(ext);
        let ticks = i128::from(ext - i64::from(base));
        let ns = (ticks * 1_000_000_000).div_euclid(i128::from(self.clock_rate.max(1)));
        let npt = (i128::from(offset.as_ns()) + ns).max(0);
        Npt::from_ns(u64::try_from(npt).unwrap_or(u64::MAX))
    }
}

/// A packet from the origin with its place in the title.
#[derive(Debug, Clone)]
pub struct Stamped {
    /// Index into the presentation's track list.
    pub track: usize,
    pub rtcp: bool,
    pub data: Bytes,
    /// Media time: of its RTP timestamp, or for RTCP of the latest packet.
    pub npt: Npt,
    /// The first packet of an access unit a decoder can start with (a
    /// keyframe's, with its parameter sets; any audio packet of a title
    /// without video): where a seek may land.
    pub random_access: bool,
    /// Video only: the packet belongs to a keyframe's access unit, whose
    /// RTP timestamp this is (the GOP buffer restarts there).
    pub keyframe_ts: Option<u32>,
}

struct TrackState {
    clock: TrackClock,
    codec: Codec,
    video: bool,
    /// Timestamp of the last access unit that was a random-access point.
    last_rap_ts: Option<u32>,
}

/// Stamps every packet of one presentation's origin session(s).
pub(super) struct Stamper {
    tracks: Vec<TrackState>,
    has_video: bool,
    /// The npt of the origin session's start (its RTP clocks' anchor).
    offset: Npt,
    /// The latest npt stamped.
    last: Npt,
}

impl Stamper {
    pub(super) fn new(described: &Described) -> Stamper {
        let tracks: Vec<TrackState> = described
            .tracks
            .iter()
            .map(|t| TrackState {
                clock: TrackClock::new(t.clock_rate),
                codec: Codec::from_encoding_name(&t.encoding),
                video: t.media.eq_ignore_ascii_case("video"),
                last_rap_ts: None,
            })
            .collect();
        let has_video = tracks.iter().any(|t| t.video);
        Stamper {
            tracks,
            has_video,
            offset: Npt::ZERO,
            last: Npt::ZERO,
        }
    }

    /// An on-demand session: media time is exactly where the origin said
    /// PLAY starts (it may snap a Range back to a keyframe), so that runs
    /// recorded by different fills line up to the tick.
    pub(super) fn anchor_on_demand(&mut self, play: &PlayInfo) {
        self.offset = play.start_npt.unwrap_or(Npt::ZERO);
        for (track, rtptime) in self.tracks.iter_mut().zip(&play.rtptimes) {
            track.clock.anchor(*rtptime);
        }
    }

    /// A new live session starts new RTP clocks: media time goes on from
    /// where the last one stopped. False when nothing was stamped yet.
    pub(super) fn continue_live(&mut self) -> bool {
        if self.last == Npt::ZERO {
            return false;
        }
        self.offset = self.last;
        for track in &mut self.tracks {
            track.clock.anchor(None);
        }
        true
    }

    /// Where this session's media time starts.
    pub(super) fn offset(&self) -> Npt {
        self.offset
    }

    /// `None` for a packet of an unknown track or an RTP packet that does
    /// not parse (nothing a player could use either).
    pub(super) fn stamp(&mut self, track: usize, rtcp: bool, data: Bytes) -> Option<Stamped> {
        let has_video = self.has_video;
        let state = self.tracks.get_mut(track)?;
        if rtcp {
            return Some(Stamped {
                track,
                rtcp,
                data,
                npt: self.last,
                random_access: false,
                keyframe_ts: None,
            });
        }
        let rtp = RtpView::parse(&data).ok()?;
        let ts = rtp.timestamp();
        let npt = state.clock.npt(ts, self.offset);
        let random_access = if state.video {
            // Parameter sets travel in packets of their own just before a
            // keyframe, with its timestamp (encoders and cameras send them
            // with keyframes): counting them starts a late joiner or a seek
            // with them, so its decoder starts clean.
            let payload = rtp.payload();
            rtp::is_random_access(state.codec, payload)
                || rtp::has_parameter_sets(state.codec, payload)
        } else {
            // Without video every audio packet is a place to start.
            !has_video
        };
        // Only the first packet of a keyframe's access unit (its parameter
        // sets come first, with the same timestamp) is where a seek may land.
        let first_of_unit = random_access && state.last_rap_ts != Some(ts);
        let keyframe_ts = (random_access && state.video).then_some(ts);
        if keyframe_ts.is_some() {
            state.last_rap_ts = Some(ts);
        }
        self.last = self.last.max(npt);
        Some(Stamped {
            track,
            rtcp,
            data,
            npt,
            random_access: first_of_unit,
            keyframe_ts,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(ms: u64) -> Npt {
        Npt::from_millis(ms)
    }

    #[test]
    fn media_time_counts_from_first_timestamp() {
        let mut c = TrackClock::new(90_000);
        assert_eq!(c.npt(1000, Npt::ZERO), Npt::ZERO);
        assert_eq!(c.npt(1000 + 90_000, Npt::ZERO), ms(1000));
        assert_eq!(c.npt(1000 + 45_000, Npt::ZERO), ms(500));
    }

    #[test]
    fn packets_before_the_base_come_before_the_offset() {
        let mut c = TrackClock::new(90_000);
        c.base = Some(9_000);
        c.last_ext = Some(9_000);
        // 0.1 s before the position RTP-Info named (10.1 s): 10.0 s.
        assert_eq!(c.npt(0, ms(10_100)), ms(10_000));
        assert_eq!(c.npt(9_000, ms(10_100)), ms(10_100));
        assert_eq!(c.npt(0, ms(50)), Npt::ZERO, "never before npt 0");
    }

    #[test]
    fn an_rtp_info_anchor_far_before_the_first_packet_is_not_trusted() {
        let mut c = TrackClock::new(90_000);
        c.anchor(Some(1_000));
        // The first packet is 10 s after the anchor: it is the Range start.
        assert_eq!(c.npt(901_000, ms(10_021)), ms(10_021));
        assert_eq!(c.npt(904_600, ms(10_021)), ms(10_061));
    }

    #[test]
    fn media_time_survives_timestamp_wrap() {
        let mut c = TrackClock::new(90_000);
        let start = u32::MAX - 44_999;
        assert_eq!(c.npt(start, Npt::ZERO), Npt::ZERO);
        assert_eq!(c.npt(start.wrapping_add(90_000), Npt::ZERO), ms(1000));
        assert_eq!(c.npt(start.wrapping_add(180_000), Npt::ZERO), ms(2000));
    }
}
