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
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use streamcache_rtsp::{codec, rtp};
use tokio::net::UdpSocket;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::warn;

use super::conn_writer::{ConnWriter, Refused};
use super::session::{PlayerSession, Sessions};
use super::udp_out::UdpQueue;
use crate::hub::{HubPacket, PlayerGuard, Subscription};
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
/// bigger one (a joining player's GOP backlog, a burst after a seek) is
/// let go once sent, so that a thousand players do not each keep a GOP's
/// worth of memory.
const KEEP_BUFFER_BYTES: usize = 64 * 1024;

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
            Ok(batch) => sender.push_batch(&batch),
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
                Ok(batch) => sender.push_batch(&batch),
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
    /// Interleaved frames waiting for the next flush.
    batch: BytesMut,
    out: Option<Arc<ConnWriter>>,
    /// UDP datagrams waiting for the next flush, per socket (a session has
    /// at most an RTP and an RTCP socket), in the order they were queued.
    datagrams: Vec<UdpQueue>,
    /// Last SSRC seen per track (a handful), for the BYE.
    ssrcs: Vec<(usize, u32)>,
}

impl Sender {
    fn new(tracks: BTreeMap<usize, TrackDelivery>) -> Sender {
        let out = tracks.values().find_map(|t| match t {
            TrackDelivery::Interleaved { out, .. } => Some(Arc::clone(out)),
            TrackDelivery::Udp { .. } => None,
        });
        Sender {
            tracks,
            batch: BytesMut::new(),
            out,
            datagrams: Vec::new(),
            ssrcs: Vec::new(),
        }
    }

    fn push_batch(&mut self, packets: &[HubPacket]) {
        for packet in packets {
            if !packet.rtcp {
                if let Some(ssrc) = rtp::ssrc_of(&packet.data) {
                    self.note_ssrc(packet.track, ssrc);
                }
            }
            self.push_raw(packet.track, packet.rtcp, &packet.data);
        }
    }

    fn note_ssrc(&mut self, track: usize, ssrc: u32) {
        match self.ssrcs.iter_mut().find(|(t, _)| *t == track) {
            Some((_, known)) => *known = ssrc,
            None => self.ssrcs.push((track, ssrc)),
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
            .map(|&(track, ssrc)| (track, rtp::build_bye(ssrc)))
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
        if !self.batch.is_empty() {
            sent += self.batch.len() as u64;
            let written = match &self.out {
                // Written from this task straight to the socket when the
                // connection has nothing queued; the batch is reused.
                Some(out) => out.write(&self.batch),
                None => Ok(()),
            };
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

    #[tokio::test]
    async fn a_big_send_buffer_is_let_go_once_written() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap());
        let (client, accepted) = tokio::join!(client, listener.accept());
        let (_read, write) = accepted.unwrap().0.into_split();
        let (out, _flusher) = ConnWriter::spawn(write);
        let delivery = TrackDelivery::Interleaved {
            rtp: 0,
            rtcp: 1,
            out,
        };
        let mut sender = Sender::new(BTreeMap::from([(0, delivery)]));
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
        drop(client);
    }
}
