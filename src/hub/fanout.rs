//! The fan-out: one copy of each packet however many players, and the GOP
//! buffer for players who join late.
//!
//! A `tokio::sync::broadcast` channel of reference-counted batches of
//! packets: what the origin delivered together goes out as one batch, so a
//! player's task wakes, and the shared counts change, once per batch rather
//! than once per packet. A batch also carries its packets framed once for
//! TCP interleaved players on the usual channels (track `t` on `2t` and
//! `2t + 1`), which most players' forwarders write as they are instead of
//! framing a copy each. Its capacity (in batches) is the per-player queue
//! bound: a player that falls that far behind sees `Lagged` and is dropped by
//! its forwarder, and never slows the hub or anyone else. The *GOP buffer* keeps everything since the latest
//! video keyframe, so a late joiner starts with a keyframe and its parameter
//! sets instead of waiting up to a GOP. The buffer and the broadcast change
//! under one lock (the hub's), so that a joining player's backlog and its
//! receiver neither overlap nor leave a gap.

use std::sync::Arc;

use std::ops::Deref;
use std::sync::OnceLock;

use bytes::{Bytes, BytesMut};
use streamcache_rtsp::{codec, rtp};
use streamcache_types::Npt;
use tokio::sync::broadcast;

/// A packet as the hub fans it out. Cloning is cheap (`Bytes`).
#[derive(Debug, Clone)]
pub struct HubPacket {
    /// Index into the presentation's track list.
    pub track: usize,
    pub rtcp: bool,
    pub data: Bytes,
    /// Media time, as stamped (see `clock`): what store playback paces and
    /// renumbers on when it goes on from a fill's [`Tail`](super::Tail).
    pub npt: Npt,
}

/// Packets published together, in order; shared by every player.
pub type HubBatch = Arc<Batch>;

/// See [`HubBatch`]; derefs to its packets.
#[derive(Debug)]
pub struct Batch {
    packets: Vec<HubPacket>,
    /// The packets as interleaved frames on the usual channels (`None` when
    /// a track has no [`Batch::tracks`] bit), made when a player first asks:
    /// not at all when none plays over TCP.
    framed: OnceLock<Option<Bytes>>,
    tracks: u64,
    /// Read once for every player.
    ssrcs: LastSsrcs,
}

impl Batch {
    pub fn new(packets: Vec<HubPacket>) -> Batch {
        let mut ssrcs = LastSsrcs::default();
        ssrcs.note_packets(&packets);
        Batch {
            tracks: packets.iter().fold(0, |bits, p| bits | track_bit(p.track)),
            packets,
            framed: OnceLock::new(),
            ssrcs,
        }
    }

    /// Bit `t` set: the batch has packets of track `t` (`t` < 64).
    pub fn tracks(&self) -> u64 {
        self.tracks
    }

    /// The SSRC of each track's last RTP packet.
    pub fn ssrcs(&self) -> &LastSsrcs {
        &self.ssrcs
    }

    /// The packets framed on the usual channels, if they can be.
    pub fn framed(&self) -> Option<&Bytes> {
        self.framed
            .get_or_init(|| {
                let mut framed = BytesMut::new();
                let all = self.packets.iter().all(|p| {
                    p.track < 64
                        && usual_channel(p.track, p.rtcp).is_some_and(|ch| {
                            codec::put_interleaved(ch, &p.data, &mut framed).is_ok()
                        })
                });
                all.then(|| framed.freeze())
            })
            .as_ref()
    }
}

/// The SSRC of each track's last RTP packet, for the RTCP BYE a player gets
/// at the end (a presentation has a handful of tracks).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LastSsrcs(Vec<(usize, u32)>);

impl LastSsrcs {
    pub fn note(&mut self, track: usize, ssrc: u32) {
        match self.0.iter_mut().find(|(t, _)| *t == track) {
            Some((_, last)) => *last = ssrc,
            None => self.0.push((track, ssrc)),
        }
    }

    pub fn note_packets(&mut self, packets: &[HubPacket]) {
        for p in packets.iter().filter(|p| !p.rtcp) {
            if let Some(ssrc) = rtp::ssrc_of(&p.data) {
                self.note(p.track, ssrc);
            }
        }
    }

    /// Takes `later`'s SSRCs over these.
    pub fn note_all(&mut self, later: &LastSsrcs) {
        for &(track, ssrc) in &later.0 {
            self.note(track, ssrc);
        }
    }

    /// Track and SSRC, in the order the tracks were first seen.
    pub fn iter(&self) -> impl Iterator<Item = (usize, u32)> + '_ {
        self.0.iter().copied()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Deref for Batch {
    type Target = [HubPacket];

    fn deref(&self) -> &[HubPacket] {
        &self.packets
    }
}

/// Bit `track` (0 for tracks from 64 on, which have none).
pub fn track_bit(track: usize) -> u64 {
    u32::try_from(track)
        .ok()
        .and_then(|t| 1u64.checked_shl(t))
        .unwrap_or(0)
}

/// The interleaved channel a player that set up the tracks in order gets a
/// track's RTP (`2t`) or RTCP (`2t + 1`) on.
pub fn usual_channel(track: usize, rtcp: bool) -> Option<u8> {
    u8::try_from(2 * track + usize::from(rtcp)).ok()
}

/// The broadcast and the GOP buffer; lives inside the hub's lock.
pub(super) struct Fanout {
    gop: Vec<HubPacket>,
    gop_bytes: usize,
    /// RTP timestamp of the access unit that opened the GOP buffer.
    gop_ts: Option<u32>,
    /// Upper bound of the GOP buffer; a stream without keyframes this often
    /// just gives late joiners no backlog.
    gop_max_bytes: usize,
    /// Dropped when the hub closes, so that every player's receiver sees the
    /// end (and gets its RTCP BYE) even while sessions still hold the hub.
    tx: Option<broadcast::Sender<HubBatch>>,
}

impl Fanout {
    pub(super) fn new(queue_packets: usize, gop_max_bytes: usize) -> Fanout {
        let (tx, _) = broadcast::channel(queue_packets.max(16));
        Fanout {
            gop: Vec::new(),
            gop_bytes: 0,
            gop_ts: None,
            gop_max_bytes,
            tx: Some(tx),
        }
    }

    /// The backlog a joining player gets first, and its receiver of what
    /// follows; `None` once closed.
    pub(super) fn subscribe(&self) -> Option<(Vec<HubPacket>, broadcast::Receiver<HubBatch>)> {
        let rx = self.tx.as_ref()?.subscribe();
        Some((self.gop.clone(), rx))
    }

    /// Sends a batch of packets to every player, each with its
    /// `keyframe_ts`: set for the packets of a video keyframe's access unit,
    /// the first of which restarts the GOP buffer.
    pub(super) fn publish(&mut self, packets: Vec<(HubPacket, Option<u32>)>) {
        let packets: Vec<HubPacket> = packets
            .into_iter()
            .map(|(packet, keyframe_ts)| {
                self.keep_in_gop(&packet, keyframe_ts);
                packet
            })
            .collect();
        // No receivers is fine: the hub lingers with nobody watching.
        if let (Some(tx), false) = (&self.tx, packets.is_empty()) {
            let _ = tx.send(Arc::new(Batch::new(packets)));
        }
    }

    fn keep_in_gop(&mut self, packet: &HubPacket, keyframe_ts: Option<u32>) {
        if let Some(ts) = keyframe_ts {
            if self.gop_ts != Some(ts) {
                self.clear_gop();
                self.gop_ts = Some(ts);
            }
        }
        if self.gop_ts.is_some() {
            if self.gop_bytes + packet.data.len() > self.gop_max_bytes {
                self.clear_gop();
            } else {
                self.gop_bytes += packet.data.len();
                self.gop.push(packet.clone());
            }
        }
    }

    /// Ends the fan-out: every receiver sees the end.
    pub(super) fn close(&mut self) {
        self.clear_gop();
        self.tx = None;
    }

    fn clear_gop(&mut self) {
        self.gop.clear();
        self.gop_bytes = 0;
        self.gop_ts = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(n: u8, len: usize) -> HubPacket {
        HubPacket {
            track: 0,
            rtcp: false,
            data: Bytes::from(vec![n; len]),
            npt: Npt::ZERO,
        }
    }

    fn firsts(backlog: &[HubPacket]) -> Vec<u8> {
        backlog.iter().map(|p| p.data[0]).collect()
    }

    #[test]
    fn a_late_joiner_gets_everything_since_the_latest_keyframe_then_the_feed() {
        let mut fanout = Fanout::new(16, 1 << 20);
        fanout.publish(vec![(packet(1, 10), None)]); // before any keyframe: not kept
        fanout.publish(vec![(packet(2, 10), Some(100))]);
        fanout.publish(vec![(packet(3, 10), Some(100))]); // same access unit
        fanout.publish(vec![(packet(4, 10), None)]);
        let (backlog, _) = fanout.subscribe().expect("open");
        assert_eq!(firsts(&backlog), [2, 3, 4]);
        fanout.publish(vec![(packet(5, 10), Some(200))]);
        let (backlog, mut rx) = fanout.subscribe().expect("open");
        assert_eq!(firsts(&backlog), [5]);
        fanout.publish(vec![(packet(6, 10), None)]);
        assert_eq!(firsts(&rx.try_recv().expect("fed")), [6]);
    }

    #[test]
    fn a_batch_reaches_players_whole_and_a_keyframe_inside_it_restarts_the_gop() {
        let mut fanout = Fanout::new(16, 1 << 20);
        let (_, mut rx) = fanout.subscribe().expect("open");
        fanout.publish(vec![
            (packet(1, 10), Some(1)),
            (packet(2, 10), None),
            (packet(3, 10), Some(2)),
            (packet(4, 10), None),
        ]);
        assert_eq!(firsts(&rx.try_recv().expect("fed")), [1, 2, 3, 4]);
        assert!(rx.try_recv().is_err(), "one batch, sent once");
        assert_eq!(firsts(&fanout.subscribe().expect("open").0), [3, 4]);
    }

    #[test]
    fn a_batch_is_framed_once_on_the_usual_channels() {
        let mut audio_rtcp = packet(9, 3);
        (audio_rtcp.track, audio_rtcp.rtcp) = (1, true);
        let batch = Batch::new(vec![packet(7, 2), audio_rtcp]);
        assert_eq!(batch.tracks(), 0b11);
        assert!(batch.ssrcs().is_empty(), "version 0: no RTP, no SSRC");
        let framed = batch.framed().expect("framed");
        assert_eq!(&framed[..], &[b'$', 0, 0, 2, 7, 7, b'$', 3, 0, 3, 9, 9, 9]);
        // Track 64 has no bit: no shared framing.
        let mut far = packet(1, 1);
        far.track = 64;
        assert!(Batch::new(vec![far]).framed().is_none());
    }

    #[test]
    fn an_oversized_gop_is_dropped_until_the_next_keyframe() {
        let mut fanout = Fanout::new(16, 25);
        fanout.publish(vec![(packet(1, 10), Some(1))]);
        fanout.publish(vec![(packet(2, 10), None)]);
        fanout.publish(vec![(packet(3, 10), None)]); // 30 bytes > 25
        fanout.publish(vec![(packet(4, 10), None)]);
        assert!(fanout.subscribe().expect("open").0.is_empty());
        fanout.publish(vec![(packet(5, 10), Some(2))]);
        assert_eq!(firsts(&fanout.subscribe().expect("open").0), [5]);
    }

    #[test]
    fn closing_ends_every_receiver() {
        let mut fanout = Fanout::new(16, 1 << 20);
        let (_, mut rx) = fanout.subscribe().expect("open");
        fanout.close();
        assert!(fanout.subscribe().is_none());
        assert!(matches!(
            rx.try_recv(),
            Err(broadcast::error::TryRecvError::Closed)
        ));
    }
}
