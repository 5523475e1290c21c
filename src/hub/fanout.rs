//! The fan-out: one copy of each packet however many players, and the GOP
//! buffer for players who join late.
//!
//! A `tokio::sync::broadcast` channel of reference-counted batches of
//! packets: what the origin delivered together goes out as one batch, so a
//! player's task wakes, and the shared counts change, once per batch rather
//! than once per packet. Its capacity (in batches) is the per-player queue
//! bound: a player that falls that far behind sees `Lagged` and is dropped by
//! its forwarder, and never slows the hub or anyone else. The *GOP buffer* keeps everything since the latest
//! video keyframe, so a late joiner starts with a keyframe and its parameter
//! sets instead of waiting up to a GOP. The buffer and the broadcast change
//! under one lock (the hub's), so that a joining player's backlog and its
//! receiver neither overlap nor leave a gap.

use std::sync::Arc;

use bytes::Bytes;
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
pub type HubBatch = Arc<[HubPacket]>;

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
        let batch: HubBatch = packets
            .into_iter()
            .map(|(packet, keyframe_ts)| {
                self.keep_in_gop(&packet, keyframe_ts);
                packet
            })
            .collect();
        // No receivers is fine: the hub lingers with nobody watching.
        if let (Some(tx), false) = (&self.tx, batch.is_empty()) {
            let _ = tx.send(batch);
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
