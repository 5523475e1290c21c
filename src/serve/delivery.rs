//! Getting a hub's packets to one player: over its RTSP connection
//! (RTP/AVP/TCP interleaved) or to its UDP ports.
//!
//! Each playing session has one forwarder task. It sends the hub's GOP backlog
//! first, then whatever the hub broadcasts. Over TCP every packet already
//! waiting is framed into one buffer and handed to the connection's writer as a
//! single write. A forwarder that falls behind the hub's broadcast capacity
//! ends its session (the player is too slow); when the hub ends, the player
//! gets an RTCP BYE for each track and, over TCP, the connection is closed.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use streamcache_rtsp::rtp;
use tokio::net::UdpSocket;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::mpsc::{self, error::TrySendError};
use tracing::{debug, warn};

use super::session::{PlayerSession, Sessions};
use crate::hub::{HubPacket, Subscription};
use crate::playback::{Control, Ended, Playback, Sink, SinkClosed};

/// What a connection's writer task is asked to do.
#[derive(Debug)]
pub enum Outgoing {
    Bytes(Bytes),
    /// Flush what came before, then close the connection.
    Close,
}

/// Where one of a session's tracks goes.
#[derive(Clone, Debug)]
pub enum TrackDelivery {
    Interleaved {
        rtp: u8,
        rtcp: u8,
        out: mpsc::Sender<Outgoing>,
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
}

/// Most packets framed into one TCP write.
const BATCH_PACKETS: usize = 256;

/// Runs until the session is stopped (the task is aborted), the player falls
/// too far behind, or the presentation ends.
pub async fn forward(
    session: Arc<PlayerSession>,
    sessions: Arc<Sessions>,
    mut sub: Subscription,
    tracks: BTreeMap<usize, TrackDelivery>,
) {
    let rx = &mut sub.rx;
    let mut sender = Sender::new(tracks);
    for packet in std::mem::take(&mut sub.backlog) {
        sender.push(&packet);
    }
    let mut end = sender.flush(&session).await.err();
    while end.is_none() {
        match rx.recv().await {
            Ok(packet) => sender.push(&packet),
            Err(RecvError::Lagged(n)) => end = Some(End::TooSlow(n)),
            Err(RecvError::Closed) => end = Some(End::PresentationEnded),
        }
        // Everything already waiting goes out in the same write.
        for _ in 1..BATCH_PACKETS {
            if end.is_some() {
                break;
            }
            match rx.try_recv() {
                Ok(packet) => sender.push(&packet),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Lagged(n)) => end = Some(End::TooSlow(n)),
                Err(TryRecvError::Closed) => end = Some(End::PresentationEnded),
            }
        }
        if let Err(failed) = sender.flush(&session).await {
            end = Some(failed);
        }
    }
    match end {
        Some(End::TooSlow(missed)) => {
            warn!(session = %session.id, player = %session.peer, missed, "player too slow: dropped");
            sender.close().await;
            sessions.end(&session.id, "player too slow");
        }
        Some(End::PresentationEnded) => {
            sender.bye();
            let _ = sender.flush(&session).await;
            sender.close().await;
            sessions.end(&session.id, "presentation ended");
        }
        Some(End::ConnectionClosed) | None => sessions.end(&session.id, "player connection closed"),
    }
}

/// Runs a store playback toward one player until the session ends or the
/// player is gone.
pub async fn play_from_store(
    session: Arc<PlayerSession>,
    sessions: Arc<Sessions>,
    playback: Playback<PlayerSink>,
    control: mpsc::Receiver<Control>,
) {
    if playback.run(control).await == Ended::SinkClosed {
        sessions.end(&session.id, "player gone or too slow");
    }
}

/// A [`Sink`] toward one player, for store playback.
pub struct PlayerSink {
    sender: Sender,
    session: Arc<PlayerSession>,
}

impl PlayerSink {
    pub fn new(session: Arc<PlayerSession>, tracks: BTreeMap<usize, TrackDelivery>) -> PlayerSink {
        PlayerSink {
            sender: Sender::new(tracks),
            session,
        }
    }
}

impl Sink for PlayerSink {
    fn push(&mut self, track: usize, rtcp: bool, data: Bytes) {
        self.sender.push_raw(track, rtcp, data);
    }

    async fn flush(&mut self) -> Result<(), SinkClosed> {
        if let Err(end) = self.sender.flush(&self.session).await {
            if let End::TooSlow(_) = end {
                warn!(session = %self.session.id, player = %self.session.peer, "player too slow: dropped");
                self.sender.close().await;
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
    out: Option<mpsc::Sender<Outgoing>>,
    /// UDP datagrams waiting for the next flush.
    datagrams: Vec<(Arc<UdpSocket>, SocketAddr, Bytes)>,
    /// Last SSRC seen per track, for the BYE.
    ssrcs: BTreeMap<usize, u32>,
}

impl Sender {
    fn new(tracks: BTreeMap<usize, TrackDelivery>) -> Sender {
        let out = tracks.values().find_map(|t| match t {
            TrackDelivery::Interleaved { out, .. } => Some(out.clone()),
            TrackDelivery::Udp { .. } => None,
        });
        Sender {
            tracks,
            batch: BytesMut::new(),
            out,
            datagrams: Vec::new(),
            ssrcs: BTreeMap::new(),
        }
    }

    fn push(&mut self, packet: &HubPacket) {
        if !packet.rtcp {
            if let Ok(view) = rtp::RtpView::parse(&packet.data) {
                self.ssrcs.insert(packet.track, view.ssrc());
            }
        }
        self.push_raw(packet.track, packet.rtcp, packet.data.clone());
    }

    fn push_raw(&mut self, track: usize, rtcp: bool, data: Bytes) {
        match self.tracks.get(&track) {
            Some(TrackDelivery::Interleaved {
                rtp, rtcp: rtcp_ch, ..
            }) => {
                let Ok(len) = u16::try_from(data.len()) else {
                    return; // cannot be framed; an RTP packet never is this big
                };
                self.batch.reserve(4 + data.len());
                self.batch.put_u8(b'$');
                self.batch.put_u8(if rtcp { *rtcp_ch } else { *rtp });
                self.batch.put_u16(len);
                self.batch.put_slice(&data);
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
                self.datagrams.push((Arc::clone(socket), *dest, data));
            }
            None => {} // a track the player did not set up
        }
    }

    /// Queues an RTCP BYE on every track that carried RTP.
    fn bye(&mut self) {
        let byes: Vec<(usize, Bytes)> = self
            .ssrcs
            .iter()
            .map(|(&track, &ssrc)| (track, Bytes::from(rtp::build_bye(ssrc))))
            .collect();
        for (track, bye) in byes {
            self.push_raw(track, true, bye);
        }
    }

    /// Sends what is queued. Media never waits for a TCP player: if its
    /// connection's queue is full, the player is too slow.
    async fn flush(&mut self, session: &PlayerSession) -> Result<(), End> {
        let mut sent = 0u64;
        for (socket, dest, data) in self.datagrams.drain(..) {
            // A lost datagram is UDP's nature; an unreachable player shows up
            // as silence and its session times out.
            match socket.send_to(&data, dest).await {
                Ok(n) => sent += n as u64,
                Err(e) => debug!(%dest, error = %e, "udp send failed"),
            }
        }
        if !self.batch.is_empty() {
            let batch = self.batch.split().freeze();
            sent += batch.len() as u64;
            if let Some(out) = &self.out {
                out.try_send(Outgoing::Bytes(batch)).map_err(|e| match e {
                    TrySendError::Full(_) => End::TooSlow(0),
                    TrySendError::Closed(_) => End::ConnectionClosed,
                })?;
            }
        }
        session.add_bytes(sent);
        Ok(())
    }

    async fn close(&self) {
        if let Some(out) = &self.out {
            let _ = out.send(Outgoing::Close).await;
        }
    }
}
