//! Getting a hub's packets to one player: over its RTSP connection
//! (RTP/AVP/TCP interleaved) or to its UDP ports.
//!
//! Each playing session has one forwarder task. It sends the hub's GOP backlog
//! first, then the batches the hub broadcasts. Over TCP every packet already
//! waiting is framed into one buffer and handed to the connection's writer as a
//! single write; UDP datagrams already waiting leave in one `sendmmsg` per
//! socket. A forwarder that falls behind the hub's broadcast capacity
//! ends its session (the player is too slow); when the hub ends, the player
//! gets an RTCP BYE for each track and, over TCP, the connection is closed.

use std::collections::BTreeMap;
use std::io::IoSlice;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use streamcache_rtsp::{codec, rtp};
use tokio::net::UdpSocket;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::warn;

use super::conn_writer::{ConnWriter, Refused};
use super::session::{PlayerSession, Sessions};
use super::udp_out::UdpQueue;
use crate::hub::{
    track_bit, usual_channel, Batch, HubPacket, LastSsrcs, PlayerGuard, Subscription,
};
use crate::playback::{Control, Ended, Playback, Sink, SinkClosed};
use crate::timing::WriteTicks;

/// Where one of a session's tracks goes.
#[derive(Clone, Debug)]
pub enum TrackDelivery {
    Interleaved {
        rtp: u8,
        rtcp: u8,
        out: Arc<ConnWriter>,
    },
    Udp {
        rtp_socket: Arc<UdpSocket>,
        rtcp_socket: Arc<UdpSocket>,
        rtp_dest: SocketAddr,
        rtcp_dest: SocketAddr,
    },
}

impl TrackDelivery {
    pub fn uses_channel(&self, channel: u8) -> bool {
        matches!(self, TrackDelivery::Interleaved { rtp, rtcp, .. } if *rtp == channel || *rtcp == channel)
    }

    pub fn is_rtcp_channel(&self, channel: u8) -> bool {
        matches!(self, TrackDelivery::Interleaved { rtcp, .. } if *rtcp == channel)
    }
}

/// Most of the hub's batches framed into one TCP write.
const BATCHES_PER_WRITE: usize = 64;
/// A player's send buffer is reused from write to write up to this size; a
/// bigger one (a joining player's GOP backlog, a burst after a seek, a
/// merged tick: 200 ms at 1 Mbit/s is 25 KB) is let go once sent, so that
/// a thousand players do not each keep that much between writes (the
/// allocator hands the same memory to the next player's write).
pub(super) const KEEP_BUFFER_BYTES: usize = 16 * 1024;

/// Runs until the session is stopped (the task is aborted), the player falls
/// too far behind, or the presentation ends.
pub async fn forward(
    session: Arc<PlayerSession>,
    sessions: Arc<Sessions>,
    mut sub: Subscription,
    tracks: BTreeMap<usize, TrackDelivery>,
    ticks: WriteTicks,
) {
    let rx = &mut sub.rx;
    let mut sender = Sender::new(tracks);
    sender.push_batch(&std::mem::take(&mut sub.backlog));
    let mut end = sender.flush(Some(&session)).await.err();
    while end.is_none() {
        match rx.recv().await {
            Ok(batch) => sender.push_hub_batch(&batch),
            Err(RecvError::Lagged(n)) => end = Some(End::TooSlow(n)),
            Err(RecvError::Closed) => end = Some(End::PresentationEnded),
        }
        // Merged writes: what the hub publishes until the next tick joins
        // this write.
        // Not when more is queued already (a backlog goes out at once).
        if let (None, Some(tick)) = (&end, ticks.next_tick(Instant::now())) {
            if rx.is_empty() {
                tokio::time::sleep_until(tick).await;
            }
        }
        // Everything already waiting goes out in the same write.
        for _ in 1..BATCHES_PER_WRITE {
            if end.is_some() {
                break;
            }
            match rx.try_recv() {
                Ok(batch) => sender.push_hub_batch(&batch),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Lagged(n)) => end = Some(End::TooSlow(n)),
                Err(TryRecvError::Closed) => end = Some(End::PresentationEnded),
            }
        }
        if let Err(failed) = sender.flush(Some(&session)).await {
            end = Some(failed);
        }
    }
    match end {
        Some(End::TooSlow(missed)) => {
            warn!(session = %session.id, player = %session.peer, missed, "player too slow: dropped");
            sender.close();
            sessions.end(&session.id, "player too slow");
        }
        Some(End::PresentationEnded) => {
            sender.bye();
            let _ = sender.flush(Some(&session)).await;
            sender.close();
            sessions.end(&session.id, "presentation ended");
        }
        Some(End::ConnectionClosed) | None => sessions.end(&session.id, "player connection closed"),
    }
}

/// Runs a store playback toward one player until the session ends or the
/// player is gone. `_hold` keeps the origin fill of the title running
/// meanwhile (when the store does not hold it all yet).
pub async fn play_from_store(
    session: Arc<PlayerSession>,
    sessions: Arc<Sessions>,
    playback: Playback<PlayerSink>,
    control: mpsc::Receiver<Control>,
    _hold: Option<PlayerGuard>,
) {
    if playback.run(control).await == Ended::SinkClosed {
        sessions.end(&session.id, "player gone or too slow");
    }
}

/// A [`Sink`] toward one player, for store playback.
pub struct PlayerSink {
    sender: Sender,
    /// `None` in benches: nothing is counted nor logged.
    session: Option<Arc<PlayerSession>>,
}

impl PlayerSink {
    pub fn new(session: Arc<PlayerSession>, tracks: BTreeMap<usize, TrackDelivery>) -> PlayerSink {
        PlayerSink {
            sender: Sender::new(tracks),
            session: Some(session),
        }
    }

    /// A sink without a session (benches).
    pub fn detached(tracks: BTreeMap<usize, TrackDelivery>) -> PlayerSink {
        PlayerSink {
            sender: Sender::new(tracks),
            session: None,
        }
    }
}

impl Sink for PlayerSink {
    fn push(&mut self, track: usize, rtcp: bool, data: &[u8]) {
        self.sender.push_raw(track, rtcp, data);
    }

    async fn flush(&mut self) -> Result<(), SinkClosed> {
        if let Err(end) = self.sender.flush(self.session.as_deref()).await {
            if let End::TooSlow(_) = end {
                if let Some(session) = &self.session {
                    warn!(session = %session.id, player = %session.peer, "player too slow: dropped");
                }
                self.sender.close();
            }
            return Err(SinkClosed);
        }
        Ok(())
    }
}

enum End {
    TooSlow(u64),
    PresentationEnded,
    ConnectionClosed,
}

/// Frames and sends packets toward one player.
struct Sender {
    tracks: BTreeMap<usize, TrackDelivery>,
    /// Interleaved frames waiting for the next flush, framed here.
    batch: BytesMut,
    /// Interleaved output waiting for the next flush when some of it is the
    /// hub's own framing (written as it is): pieces in order, `batch` sealed
    /// into one before each of the hub's.
    parts: Vec<Bytes>,
    /// Bit `t`: track `t` goes over interleaved channels `2t` and `2t + 1`,
    /// as the hub frames it.
    usual: u64,
    out: Option<Arc<ConnWriter>>,
    /// UDP datagrams waiting for the next flush, per socket (a session has
    /// at most an RTP and an RTCP socket), in the order they were queued.
    datagrams: Vec<UdpQueue>,
    /// For the BYE.
    ssrcs: LastSsrcs,
}

impl Sender {
    fn new(tracks: BTreeMap<usize, TrackDelivery>) -> Sender {
        let out = tracks.values().find_map(|t| match t {
            TrackDelivery::Interleaved { out, .. } => Some(Arc::clone(out)),
            TrackDelivery::Udp { .. } => None,
        });
        let usual = tracks
            .iter()
            .filter(|(&track, delivery)| {
                matches!(delivery, TrackDelivery::Interleaved { rtp, rtcp, .. }
                    if Some(*rtp) == usual_channel(track, false) && Some(*rtcp) == usual_channel(track, true))
            })
            .fold(0, |bits, (&track, _)| bits | track_bit(track));
        Sender {
            tracks,
            batch: BytesMut::new(),
            parts: Vec::new(),
            usual,
            out,
            datagrams: Vec::new(),
            ssrcs: LastSsrcs::default(),
        }
    }

    /// A batch from the hub: its own framing when it fits this player (no
    /// copy), else framed here.
    fn push_hub_batch(&mut self, batch: &Batch) {
        match batch.framed() {
            Some(framed) if self.out.is_some() && batch.tracks() & !self.usual == 0 => {
                self.ssrcs.note_all(batch.ssrcs());
                self.seal_batch();
                self.parts.push(framed.clone());
            }
            _ => self.push_batch(batch),
        }
    }

    fn push_batch(&mut self, packets: &[HubPacket]) {
        self.ssrcs.note_packets(packets);
        for packet in packets {
            self.push_raw(packet.track, packet.rtcp, &packet.data);
        }
    }

    /// What was framed here so far becomes a piece of `parts`.
    fn seal_batch(&mut self) {
        if !self.batch.is_empty() {
            self.parts.push(self.batch.split().freeze());
        }
    }

    fn push_raw(&mut self, track: usize, rtcp: bool, data: &[u8]) {
        match self.tracks.get(&track) {
            Some(TrackDelivery::Interleaved {
                rtp, rtcp: rtcp_ch, ..
            }) => {
                let channel = if rtcp { *rtcp_ch } else { *rtp };
                // Appended to the batch: no allocation per packet. A packet
                // over 65535 bytes cannot be framed (an RTP packet never is
                // this big) and is left out.
                let _ = codec::put_interleaved(channel, data, &mut self.batch);
            }
            Some(TrackDelivery::Udp {
                rtp_socket,
                rtcp_socket,
                rtp_dest,
                rtcp_dest,
            }) => {
                let (socket, dest) = if rtcp {
                    (rtcp_socket, rtcp_dest)
                } else {
                    (rtp_socket, rtp_dest)
                };
                let queue = match self.datagrams.iter().position(|q| q.is_for(socket)) {
                    Some(at) => &mut self.datagrams[at],
                    None => {
                        self.datagrams.push(UdpQueue::new(Arc::clone(socket)));
                        let last = self.datagrams.len() - 1;
                        &mut self.datagrams[last]
                    }
                };
                queue.push(*dest, data);
            }
            None => {} // a track the player did not set up
        }
    }

    /// Queues an RTCP BYE on every track that carried RTP.
    fn bye(&mut self) {
        let byes: Vec<(usize, Vec<u8>)> = self
            .ssrcs
            .iter()
            .map(|(track, ssrc)| (track, rtp::build_bye(ssrc)))
            .collect();
        for (track, bye) in byes {
            self.push_raw(track, true, &bye);
        }
    }

    /// Sends what is queued. Media never waits for a TCP player: if its
    /// connection's queue is full, the player is too slow.
    async fn flush(&mut self, session: Option<&PlayerSession>) -> Result<(), End> {
        let mut sent = 0u64;
        for queue in &mut self.datagrams {
            sent += queue.flush().await;
        }
        if !self.batch.is_empty() || !self.parts.is_empty() {
            if !self.parts.is_empty() {
                self.seal_batch();
            }
            let written = match &self.out {
                // Written from this task straight to the socket when the
                // connection has nothing queued; the batch is reused.
                Some(out) if self.parts.is_empty() => {
                    sent += self.batch.len() as u64;
                    out.write(&self.batch)
                }
                Some(out) => {
                    let parts: Vec<IoSlice<'_>> =
                        self.parts.iter().map(|p| IoSlice::new(p)).collect();
                    sent += parts.iter().map(|p| p.len() as u64).sum::<u64>();
                    out.write_parts(&parts)
                }
                None => Ok(()),
            };
            self.parts.clear();
            if self.batch.capacity() > KEEP_BUFFER_BYTES {
                self.batch = BytesMut::new();
            }
            self.batch.clear();
            written.map_err(|refused| match refused {
                Refused::Full => End::TooSlow(0),
                Refused::Closed => End::ConnectionClosed,
            })?;
        }
        if let Some(session) = session {
            session.add_bytes(sent);
        }
        Ok(())
    }

    fn close(&self) {
        if let Some(out) = &self.out {
            out.close();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sender over a loopback TCP connection, with what the player reads.
    async fn interleaved(channels: &[(usize, u8)]) -> (Sender, tokio::net::TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap());
        let (client, accepted) = tokio::join!(client, listener.accept());
        let (_read, write) = accepted.unwrap().0.into_split();
        let (out, _flusher) = ConnWriter::spawn(write);
        let tracks = channels.iter().map(|&(track, rtp)| {
            let out = Arc::clone(&out);
            let delivery = TrackDelivery::Interleaved {
                rtp,
                rtcp: rtp + 1,
                out,
            };
            (track, delivery)
        });
        (Sender::new(tracks.collect()), client.unwrap())
    }

    async fn read_exactly(client: &mut tokio::net::TcpStream, n: usize) -> Vec<u8> {
        use tokio::io::AsyncReadExt;
        let mut got = vec![0; n];
        client.read_exact(&mut got).await.unwrap();
        got
    }

    fn hub_packet(track: usize, rtcp: bool, fill: u8) -> HubPacket {
        let mut data = vec![fill; 20];
        data[0] = 0x80; // RTP version 2
        HubPacket {
            track,
            rtcp,
            data: Bytes::from(data),
            npt: streamcache_types::Npt::ZERO,
        }
    }

    #[tokio::test]
    async fn a_player_gets_the_hub_s_framing_or_its_own_as_its_channels_say() {
        let batch = Batch::new(vec![
            hub_packet(0, false, 1),
            hub_packet(1, false, 2),
            hub_packet(1, true, 3),
        ]);
        let own = |channels: &[(usize, u8)]| {
            let mut framed = BytesMut::new();
            for p in batch.iter() {
                let Some(&(_, rtp)) = channels.iter().find(|(t, _)| *t == p.track) else {
                    continue;
                };
                codec::put_interleaved(rtp + u8::from(p.rtcp), &p.data, &mut framed).unwrap();
            }
            framed.to_vec()
        };
        let usual = [(0, 0), (1, 2)];
        let swapped = [(0, 2), (1, 0)];
        let video_only = [(0, 0)];
        for channels in [&usual[..], &swapped, &video_only] {
            let (mut sender, mut client) = interleaved(channels).await;
            sender.push_hub_batch(&batch);
            let shared = !sender.parts.is_empty();
            assert_eq!(shared, channels == usual, "{channels:?}");
            assert!(sender.flush(None).await.is_ok());
            let want = own(channels);
            assert_eq!(
                read_exactly(&mut client, want.len()).await,
                want,
                "{channels:?}"
            );
        }
        // The hub's framing is these same bytes.
        assert_eq!(batch.framed().unwrap().to_vec(), own(&usual));
    }

    #[tokio::test]
    async fn what_a_sender_frames_itself_and_the_hub_s_framing_keep_their_order() {
        let (mut sender, mut client) = interleaved(&[(0, 0)]).await;
        let backlog = [hub_packet(0, false, 1)];
        sender.push_batch(&backlog);
        sender.push_hub_batch(&Batch::new(vec![hub_packet(0, false, 2)]));
        assert!(!sender.parts.is_empty(), "the hub's framing");
        assert_eq!(
            sender.ssrcs.iter().collect::<Vec<_>>(),
            [(0, 0x0202_0202)],
            "the BYE's SSRC, from the batch"
        );
        sender.bye();
        assert!(sender.flush(None).await.is_ok());
        let got = read_exactly(&mut client, 2 * 24).await;
        assert_eq!((got[4 + 1], got[24 + 4 + 1]), (1, 2));
        // Then the BYE on the RTCP channel.
        let bye = read_exactly(&mut client, 4).await;
        assert_eq!(&bye[..2], &[b'$', 1]);
    }

    #[tokio::test]
    async fn a_big_send_buffer_is_let_go_once_written() {
        let (mut sender, _client) = interleaved(&[(0, 0)]).await;
        // A GOP backlog's worth, then what a live tick carries.
        for _ in 0..100 {
            sender.push_raw(0, false, &[0u8; 1400]);
        }
        assert!(sender.flush(None).await.is_ok());
        assert!(sender.batch.capacity() <= KEEP_BUFFER_BYTES);
        for _ in 0..3 {
            sender.push_raw(0, false, &[0u8; 1400]);
        }
        let small = sender.batch.capacity();
        assert!(sender.flush(None).await.is_ok());
        assert_eq!(sender.batch.capacity(), small, "a small buffer is reused");
    }
}
