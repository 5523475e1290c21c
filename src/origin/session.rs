//! A playing origin session: SETUP + PLAY, then one task that receives
//! media, keeps the session alive and reports how it ends.
//!
//! The task owns the RTSP connection and, in UDP mode, two sockets per track
//! (RTP on even ports, RTCP on the next). It waits on all of them at once
//! with `select!`; every branch's future is cancel-safe (socket reads into
//! buffers the task owns), and writes happen only in the handlers.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use streamcache_rtsp::framing::Frame;
use streamcache_rtsp::range::{parse_rtp_info, NptStart, PlayRange, SessionHeader};
use streamcache_rtsp::rtp::{build_receiver_report, parse_rtcp, ReportBlock, RtpHeader};
use streamcache_rtsp::rtsp_types::{headers, Method, Response};
use streamcache_rtsp::transport::{LowerTransport, TransportSpec};
use streamcache_types::Npt;
use tokio::net::UdpSocket;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::{interval, interval_at, timeout, Instant, MissedTickBehavior};
use tracing::{debug, info, warn};
use url::Url;

use crate::timing::sleep_until_opt;

use super::conn::{method_name, response_cseq, Connection, Req};
use super::udp::{bind_pair, recv_any};
use super::{Described, EndReason, OriginError, OriginEvent, OriginTarget, TransportPref};

/// Capacity of the event channel, in packets (about 10 s of a 2 Mbit/s
/// stream). When it is full, packets are dropped and counted.
pub const EVENT_QUEUE: usize = 2048;

/// A playing session that delivers no RTP for this long has failed.
pub const MEDIA_STALL: Duration = Duration::from_secs(10);

/// Interval of our RTCP receiver reports (RFC 3550's minimum).
const REPORT_EVERY: Duration = Duration::from_secs(5);
const HOUSEKEEPING: Duration = Duration::from_secs(1);
/// Over UDP, how long the session keeps receiving after the origin's BYE on
/// every track before it ends. RTP and RTCP arrive on separate sockets, so
/// the order in which they are read is not the order in which they were
/// sent: the BYE of a track can be read before that track's last RTP
/// packets, which are still queued on (or on their way to) the RTP socket.
/// Ending at once lost the title's last audio packet from the recording now
/// and then under load. Over TCP the stream keeps the origin's order.
pub const BYE_GRACE: Duration = Duration::from_millis(250);
const CNAME: &str = "streamcache";

/// A running origin session. Dropping it tears the session down in the
/// background; [`OriginSession::teardown`] does so and waits.
pub struct OriginSession {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
    play: PlayInfo,
}

/// What the origin's PLAY response said about where media starts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PlayInfo {
    /// Start of the `Range` the origin answered (it may snap a requested
    /// start back to a keyframe).
    pub start_npt: Option<Npt>,
    /// Per track (index into [`Described::tracks`]): the RTP timestamp that
    /// stands for `start_npt`, from `RTP-Info`.
    pub rtptimes: Vec<Option<u32>>,
}

impl PlayInfo {
    fn from_response(resp: &Response<Vec<u8>>, d: &Described, aggregate: &Url) -> PlayInfo {
        let start_npt = resp
            .header(&headers::RANGE)
            .and_then(|v| PlayRange::parse(v.as_str()).ok())
            .and_then(|r| r.title_range())
            .map(|r| r.start);
        let infos = resp
            .header(&headers::RTP_INFO)
            .and_then(|v| parse_rtp_info(v.as_str()).ok())
            .unwrap_or_default();
        let rtptimes = d
            .tracks
            .iter()
            .map(|track| {
                infos
                    .iter()
                    .find(|info| {
                        // RTP-Info URLs may be absolute or relative to the aggregate.
                        aggregate.join(&info.url).is_ok_and(|u| {
                            u.path().trim_end_matches('/')
                                == track.control_url.path().trim_end_matches('/')
                        })
                    })
                    .and_then(|info| info.rtptime)
            })
            .collect();
        PlayInfo {
            start_npt,
            rtptimes,
        }
    }
}

impl OriginSession {
    /// Sets up every track of `d` and plays from `start_npt` (or wherever the
    /// origin starts when `None`). See the module documentation for the
    /// transport choice and fallback.
    pub async fn start(
        t: &OriginTarget,
        d: &Described,
        start_npt: Option<Npt>,
    ) -> Result<(OriginSession, mpsc::Receiver<OriginEvent>), OriginError> {
        let (events, rx) = mpsc::channel(EVENT_QUEUE);
        if t.transport != TransportPref::Tcp {
            match Self::launch(t, d, start_npt, LowerTransport::Udp, &events).await {
                Ok(session) => return Ok((session, rx)),
                Err(e) if t.transport == TransportPref::Auto && udp_failure_falls_back(&e) => {
                    info!(origin = %error_origin(t), error = %e, "UDP did not work: trying TCP interleaved");
                }
                Err(e) => return Err(e),
            }
        }
        let session = Self::launch(t, d, start_npt, LowerTransport::Tcp, &events).await?;
        Ok((session, rx))
    }

    async fn launch(
        t: &OriginTarget,
        d: &Described,
        start_npt: Option<Npt>,
        lower: LowerTransport,
        events: &mpsc::Sender<OriginEvent>,
    ) -> Result<OriginSession, OriginError> {
        let running = Running::establish(t, d, start_npt, lower, events.clone()).await?;
        let origin = running.conn.origin().to_owned();
        let (stop_tx, stop_rx) = oneshot::channel();
        let (first_tx, first_rx) = oneshot::channel();
        let udp = lower == LowerTransport::Udp;
        let play = running.play.clone();
        let task = tokio::spawn(running.run(stop_rx, udp.then_some(first_tx)));
        let session = OriginSession {
            stop: Some(stop_tx),
            task,
            play,
        };
        if !udp {
            return Ok(session);
        }
        // Over UDP, only the first packet proves the path works.
        match timeout(t.udp_fallback, first_rx).await {
            Ok(Ok(Ok(()))) => Ok(session),
            Ok(Ok(Err(e))) => {
                session.teardown().await;
                Err(e)
            }
            Ok(Err(_)) | Err(_) => {
                session.teardown().await;
                Err(OriginError::NoMedia {
                    origin,
                    seconds: t.udp_fallback.as_secs(),
                })
            }
        }
    }

    /// Where the origin said media starts.
    pub fn play_info(&self) -> &PlayInfo {
        &self.play
    }

    /// Sends TEARDOWN to the origin and waits for the session task to end.
    pub async fn teardown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Err(e) = (&mut self.task).await {
            warn!(error = %e, "origin session task failed");
        }
    }
}

/// Failures of a UDP attempt after which TCP interleaved is worth a try.
fn udp_failure_falls_back(e: &OriginError) -> bool {
    matches!(
        e,
        OriginError::NoMedia { .. }
            | OriginError::Local { .. }
            | OriginError::Status { status: 461, .. }
            | OriginError::Protocol { .. }
    )
}

fn error_origin(t: &OriginTarget) -> String {
    super::error::redacted(&t.url)
}

/// How the task's main loop ended.
enum Exit {
    /// The consumer asked (teardown, or dropped the session or receiver).
    Stopped,
    /// The origin ended the session or it failed.
    Ended(EndReason),
}

struct Track {
    /// Interleaved (RTP, RTCP) channels in TCP mode.
    channels: Option<(u8, u8)>,
    /// The origin's RTCP address in UDP mode.
    server_rtcp: Option<SocketAddr>,
    stats: RecvStats,
    bye: bool,
}

struct Running {
    conn: Connection,
    origin_ip: IpAddr,
    aggregate: Url,
    tracks: Vec<Track>,
    /// UDP mode: `[rtp0, rtcp0, rtp1, rtcp1, …]`; empty over TCP.
    udp: Vec<UdpSocket>,
    events: mpsc::Sender<OriginEvent>,
    /// Interleaved frames that arrived with the PLAY response.
    early: Vec<(u8, Vec<u8>)>,
    play: PlayInfo,
    keepalive: Method,
    keepalive_every: Duration,
    pending_keepalive: Option<u32>,
    keepalive_reauthorized: bool,
    last_media: Instant,
    last_report: Instant,
    dropped: u64,
    ssrc: u32,
    first_media: Option<oneshot::Sender<Result<(), OriginError>>>,
    /// UDP mode, BYE seen on every track: when the session ends (see
    /// [`BYE_GRACE`]).
    bye_deadline: Option<Instant>,
}

impl Running {
    /// Connects, SETUPs every track over `lower` and PLAYs.
    async fn establish(
        t: &OriginTarget,
        d: &Described,
        start_npt: Option<Npt>,
        lower: LowerTransport,
        events: mpsc::Sender<OriginEvent>,
    ) -> Result<Running, OriginError> {
        let mut conn = Connection::connect(t).await?;
        let origin_ip = conn.peer().ip();
        let aggregate = d
            .sdp
            .aggregate_url(&d.base_url)
            .map_err(|e| OriginError::protocol(conn.origin(), e.to_string()))?;

        let options = Req::new(Method::Options, &aggregate);
        let resp = conn.request(&options, |_, _| {}).await?;
        let keepalive = if resp.status().is_success() && lists_method(&resp, "GET_PARAMETER") {
            Method::GetParameter
        } else {
            Method::Options
        };

        let mut tracks = Vec::with_capacity(d.tracks.len());
        let mut udp = Vec::new();
        let mut session_timeout = None;
        for (i, track) in d.tracks.iter().enumerate() {
            let offer = match lower {
                LowerTransport::Udp => {
                    let (rtp, rtcp) =
                        bind_pair(origin_ip).await.map_err(|e| OriginError::Local {
                            origin: conn.origin().to_owned(),
                            message: format!("no UDP port pair: {e}"),
                        })?;
                    let port = |s: &UdpSocket| s.local_addr().map(|a| a.port());
                    let ports = (port(&rtp), port(&rtcp));
                    udp.extend([rtp, rtcp]);
                    match ports {
                        (Ok(a), Ok(b)) => TransportSpec::udp((a, b)),
                        (Err(e), _) | (_, Err(e)) => {
                            return Err(OriginError::io(conn.origin(), &e))
                        }
                    }
                }
                LowerTransport::Tcp => {
                    let rtp = u8::try_from(2 * i)
                        .ok()
                        .filter(|c| *c < 254)
                        .ok_or_else(|| {
                            OriginError::protocol(
                                conn.origin(),
                                "more tracks than interleaved channels",
                            )
                        })?;
                    TransportSpec::tcp((rtp, rtp + 1))
                }
            };
            let setup = Req::new(Method::Setup, &track.control_url)
                .header(headers::TRANSPORT, offer.to_string());
            let resp = conn.request(&setup, |_, _| {}).await?;
            let resp = conn.expect_success(&setup.method, resp)?;
            if session_timeout.is_none() {
                let session = resp
                    .header(&headers::SESSION)
                    .and_then(|v| SessionHeader::parse(v.as_str()).ok())
                    .ok_or_else(|| {
                        OriginError::protocol(conn.origin(), "a SETUP answer without Session")
                    })?;
                session_timeout = Some(session.timeout_or_default());
                conn.set_session(session.id);
            }
            let reply = resp
                .header(&headers::TRANSPORT)
                .and_then(|v| TransportSpec::parse(v.as_str()).ok());
            let reply_lower = reply.as_ref().map_or(lower, |r| r.lower);
            if reply_lower != lower {
                return Err(OriginError::protocol(
                    conn.origin(),
                    format!("a SETUP answer with another transport than {offer}"),
                ));
            }
            tracks.push(Track {
                channels: match lower {
                    LowerTransport::Tcp => reply
                        .as_ref()
                        .and_then(|r| r.interleaved)
                        .or(offer.interleaved),
                    LowerTransport::Udp => None,
                },
                server_rtcp: reply
                    .as_ref()
                    .and_then(|r| r.server_port)
                    .map(|(_, rtcp)| SocketAddr::new(origin_ip, rtcp)),
                stats: RecvStats::default(),
                bye: false,
            });
        }

        let mut play = Req::new(Method::Play, &aggregate);
        if let Some(npt) = start_npt {
            let range = PlayRange {
                start: NptStart::At(npt),
                end: None,
            };
            play = play.header(headers::RANGE, range.to_string());
        }
        let mut early = Vec::new();
        let resp = conn.request(&play, |ch, p| early.push((ch, p))).await?;
        let play_info = PlayInfo::from_response(&resp, d, &aggregate);
        conn.expect_success(&play.method, resp)?;
        let timeout_secs = session_timeout.unwrap_or(SessionHeader::DEFAULT_TIMEOUT);
        info!(
            origin = conn.origin(),
            transport = ?lower,
            tracks = tracks.len(),
            session_timeout = timeout_secs,
            "origin session playing"
        );
        let now = Instant::now();
        Ok(Running {
            conn,
            origin_ip,
            aggregate,
            tracks,
            udp,
            events,
            early,
            play: play_info,
            keepalive,
            keepalive_every: Duration::from_secs(u64::from(timeout_secs / 2).max(1)),
            pending_keepalive: None,
            keepalive_reauthorized: false,
            last_media: now,
            last_report: now,
            dropped: 0,
            ssrc: rand::random(),
            first_media: None,
            bye_deadline: None,
        })
    }

    async fn run(
        mut self,
        mut stop: oneshot::Receiver<()>,
        first_media: Option<oneshot::Sender<Result<(), OriginError>>>,
    ) {
        self.first_media = first_media;
        // Open the RTCP path (and any NAT binding) right away.
        let exit = match self.send_reports().await {
            Some(exit) => exit,
            None => self.main_loop(&mut stop).await,
        };
        match exit {
            Exit::Stopped => self.teardown().await,
            Exit::Ended(reason) => {
                if !matches!(reason, EndReason::Eof) {
                    self.teardown().await;
                }
                match self.first_media.take() {
                    // Still being started: the failure goes to `start`.
                    Some(first) => {
                        let _ = first.send(Err(self.as_error(reason)));
                    }
                    None => {
                        let _ = self.events.send(OriginEvent::Ended { reason }).await;
                    }
                }
            }
        }
    }

    async fn main_loop(&mut self, stop: &mut oneshot::Receiver<()>) -> Exit {
        for (channel, payload) in std::mem::take(&mut self.early) {
            if let Some(exit) = self.on_interleaved(channel, payload) {
                return exit;
            }
        }
        let mut housekeeping = interval(HOUSEKEEPING);
        housekeeping.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut keepalive =
            interval_at(Instant::now() + self.keepalive_every, self.keepalive_every);
        keepalive.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut buf = vec![0u8; 65536];
        let mut next_socket = 0;
        loop {
            let exit = tokio::select! {
                _ = &mut *stop => Some(Exit::Stopped),
                frame = self.conn.read_frame() => self.on_frame(frame).await,
                (i, r) = recv_any(&self.udp, &mut buf, &mut next_socket) => match r {
                    Ok((n, from)) => self.on_datagram(i, &buf[..n], from),
                    Err(e) => {
                        // E.g. ICMP port unreachable after an RTCP report.
                        debug!(origin = self.conn.origin(), error = %e, "UDP receive error");
                        None
                    }
                },
                _ = keepalive.tick() => self.send_keepalive().await,
                _ = housekeeping.tick() => self.housekeeping().await,
                _ = sleep_until_opt(self.bye_deadline) => Some(self.end_after_bye(&mut buf)),
            };
            if let Some(exit) = exit {
                if self.bye_deadline.is_some() && matches!(exit, Exit::Ended(EndReason::Eof)) {
                    // Closed during the BYE grace: the datagrams already
                    // queued still count.
                    return self.end_after_bye(&mut buf);
                }
                return exit;
            }
        }
    }

    async fn on_frame(&mut self, frame: Result<Frame, OriginError>) -> Option<Exit> {
        match frame {
            Ok(Frame::Interleaved { channel, payload }) => self.on_interleaved(channel, payload),
            Ok(Frame::Response(r)) => self.on_response(r).await,
            Ok(Frame::Request(r)) => self
                .conn
                .answer_origin_request(&r)
                .await
                .err()
                .map(|e| Exit::Ended(EndReason::Failed(e))),
            Err(OriginError::Io {
                kind: std::io::ErrorKind::UnexpectedEof,
                ..
            }) => Some(Exit::Ended(EndReason::Eof)),
            Err(e) => Some(Exit::Ended(EndReason::Failed(e))),
        }
    }

    fn on_interleaved(&mut self, channel: u8, payload: Vec<u8>) -> Option<Exit> {
        let found = self
            .tracks
            .iter()
            .enumerate()
            .find_map(|(i, t)| match t.channels {
                Some((rtp, _)) if rtp == channel => Some((i, false)),
                Some((_, rtcp)) if rtcp == channel => Some((i, true)),
                _ => None,
            });
        match found {
            Some((track, rtcp)) => self.deliver(track, rtcp, Bytes::from(payload)),
            None => {
                debug!(
                    origin = self.conn.origin(),
                    channel, "data on an unknown interleaved channel"
                );
                None
            }
        }
    }

    fn on_datagram(&mut self, socket: usize, data: &[u8], from: SocketAddr) -> Option<Exit> {
        if from.ip() != self.origin_ip {
            debug!(origin = self.conn.origin(), %from, "UDP packet from a stranger ignored");
            return None;
        }
        self.deliver(socket / 2, socket % 2 == 1, Bytes::copy_from_slice(data))
    }

    /// Updates statistics and forwards one packet to the consumer.
    fn deliver(&mut self, track: usize, rtcp: bool, data: Bytes) -> Option<Exit> {
        let t = &mut self.tracks[track];
        if rtcp {
            if let Ok(summary) = parse_rtcp(&data) {
                if let Some(sr) = summary.sender_reports.first() {
                    t.stats.on_sender_report(sr.ntp);
                }
                t.bye |= !summary.bye.is_empty();
            }
        } else {
            if let Ok(h) = RtpHeader::parse(&data) {
                t.stats.on_rtp(&h);
            }
            self.last_media = Instant::now();
            if let Some(first) = self.first_media.take() {
                let _ = first.send(Ok(()));
            }
        }
        match self
            .events
            .try_send(OriginEvent::Packet { track, rtcp, data })
        {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.dropped += 1;
                if self.dropped == 1 || self.dropped.is_multiple_of(1000) {
                    warn!(
                        origin = self.conn.origin(),
                        dropped = self.dropped,
                        "consumer too slow: dropping origin packets"
                    );
                }
            }
            Err(TrySendError::Closed(_)) => return Some(Exit::Stopped),
        }
        if rtcp && self.bye_deadline.is_none() && self.tracks.iter().all(|t| t.bye) {
            info!(
                origin = self.conn.origin(),
                "origin sent BYE on every track"
            );
            if self.udp.is_empty() {
                return Some(Exit::Ended(EndReason::Bye));
            }
            self.bye_deadline = Some(Instant::now() + BYE_GRACE);
        }
        None
    }

    /// The BYE grace is over: delivers the datagrams still queued on the
    /// sockets (the task may not have been scheduled to read them), then
    /// ends the session. At most a queue's worth per socket, so an origin
    /// that keeps sending after its BYE cannot hold the session open.
    fn end_after_bye(&mut self, buf: &mut [u8]) -> Exit {
        for socket in 0..self.udp.len() {
            for _ in 0..EVENT_QUEUE {
                let Ok((n, from)) = self.udp[socket].try_recv_from(buf) else {
                    break;
                };
                if let Some(exit) = self.on_datagram(socket, &buf[..n], from) {
                    return exit;
                }
            }
        }
        Exit::Ended(EndReason::Bye)
    }

    async fn send_keepalive(&mut self) -> Option<Exit> {
        if self.pending_keepalive.is_some() {
            warn!(
                origin = self.conn.origin(),
                "previous keep-alive still unanswered"
            );
        }
        let req = Req::new(self.keepalive.clone(), &self.aggregate);
        match self.conn.send(&req).await {
            Ok(cseq) => {
                self.pending_keepalive = Some(cseq);
                None
            }
            Err(e) => Some(Exit::Ended(EndReason::Failed(e))),
        }
    }

    async fn on_response(&mut self, r: Response<Vec<u8>>) -> Option<Exit> {
        if self.pending_keepalive.is_none() || response_cseq(&r) != self.pending_keepalive {
            debug!(
                origin = self.conn.origin(),
                status = u16::from(r.status()),
                "unexpected response"
            );
            return None;
        }
        self.pending_keepalive = None;
        let status = u16::from(r.status());
        match status {
            200..=299 => self.keepalive_reauthorized = false,
            // A Digest nonce can expire during a long session: answer anew, once.
            401 if !self.keepalive_reauthorized && self.conn.accept_challenge(&r) => {
                self.keepalive_reauthorized = true;
                return self.send_keepalive().await;
            }
            405 | 501 | 551 if self.keepalive == Method::GetParameter => {
                debug!(
                    origin = self.conn.origin(),
                    status, "GET_PARAMETER refused: keep-alive by OPTIONS"
                );
                self.keepalive = Method::Options;
            }
            _ => {
                let method = method_name(&self.keepalive);
                let error = self.conn.expect_success(&self.keepalive, r).err()?;
                if status == 454 || status == 401 {
                    return Some(Exit::Ended(EndReason::Failed(error)));
                }
                warn!(
                    origin = self.conn.origin(),
                    method, status, "keep-alive refused"
                );
            }
        }
        None
    }

    async fn housekeeping(&mut self) -> Option<Exit> {
        if self.last_media.elapsed() >= MEDIA_STALL {
            return Some(Exit::Ended(EndReason::Failed(OriginError::NoMedia {
                origin: self.conn.origin().to_owned(),
                seconds: MEDIA_STALL.as_secs(),
            })));
        }
        if self.last_report.elapsed() >= REPORT_EVERY {
            return self.send_reports().await;
        }
        None
    }

    /// One receiver report per track, to the origin's RTCP port or channel.
    async fn send_reports(&mut self) -> Option<Exit> {
        self.last_report = Instant::now();
        for i in 0..self.tracks.len() {
            let blocks: Vec<ReportBlock> =
                self.tracks[i].stats.report_block().into_iter().collect();
            let report = build_receiver_report(self.ssrc, &blocks, CNAME);
            let track = &self.tracks[i];
            if let (Some(socket), Some(to)) = (self.udp.get(2 * i + 1), track.server_rtcp) {
                if let Err(e) = socket.send_to(&report, to).await {
                    debug!(origin = self.conn.origin(), error = %e, "RTCP report not sent");
                }
            } else if let Some((_, channel)) = track.channels {
                if let Err(e) = self.conn.send_interleaved(channel, &report).await {
                    return Some(Exit::Ended(EndReason::Failed(e)));
                }
            }
        }
        None
    }

    async fn teardown(&mut self) {
        let req = Req::new(Method::Teardown, &self.aggregate);
        match self.conn.request(&req, |_, _| {}).await {
            Ok(r) if r.status().is_success() => {
                info!(origin = self.conn.origin(), "origin session torn down")
            }
            Ok(r) => debug!(
                origin = self.conn.origin(),
                status = u16::from(r.status()),
                "TEARDOWN refused"
            ),
            Err(e) => debug!(origin = self.conn.origin(), error = %e, "TEARDOWN not answered"),
        }
    }

    /// A failure reported to `start` (before any media) as an error.
    fn as_error(&self, reason: EndReason) -> OriginError {
        match reason {
            EndReason::Failed(e) => e,
            EndReason::Eof => OriginError::Io {
                origin: self.conn.origin().to_owned(),
                kind: std::io::ErrorKind::UnexpectedEof,
                message: "closed by the origin before any media".into(),
            },
            EndReason::Bye => {
                OriginError::protocol(self.conn.origin(), "RTCP BYE before any media")
            }
        }
    }
}

/// `true` if the response's `Public` header lists `method`.
fn lists_method(resp: &Response<Vec<u8>>, method: &str) -> bool {
    resp.header(&headers::PUBLIC).is_some_and(|v| {
        v.as_str()
            .split(',')
            .any(|m| m.trim().eq_ignore_ascii_case(method))
    })
}

/// Reception statistics of one track for RTCP receiver reports
/// (RFC 3550 appendix A.3, without the probation logic).
#[derive(Debug, Default)]
struct RecvStats {
    ssrc: Option<u32>,
    base_seq: u32,
    max_seq: u16,
    cycles: u32,
    received: u32,
    expected_prior: u32,
    received_prior: u32,
    /// Middle 32 bits of the last SR's NTP time, and when it arrived.
    last_sr: Option<(u32, Instant)>,
}

impl RecvStats {
    fn on_rtp(&mut self, h: &RtpHeader) {
        if self.ssrc != Some(h.ssrc) {
            *self = RecvStats {
                ssrc: Some(h.ssrc),
                base_seq: u32::from(h.sequence),
                max_seq: h.sequence,
                last_sr: self.last_sr,
                ..RecvStats::default()
            };
        }
        let delta = h.sequence.wrapping_sub(self.max_seq);
        if delta != 0 && delta < 0x8000 {
            if h.sequence < self.max_seq {
                self.cycles = self.cycles.wrapping_add(1 << 16);
            }
            self.max_seq = h.sequence;
        }
        self.received = self.received.wrapping_add(1);
    }

    fn on_sender_report(&mut self, ntp: u64) {
        self.last_sr = Some(((ntp >> 16) as u32, Instant::now()));
    }

    fn report_block(&mut self) -> Option<ReportBlock> {
        let ssrc = self.ssrc?;
        let extended_max = self.cycles.wrapping_add(u32::from(self.max_seq));
        let expected = extended_max.wrapping_sub(self.base_seq).wrapping_add(1);
        let lost = i64::from(expected) - i64::from(self.received);
        let expected_interval = expected.wrapping_sub(self.expected_prior);
        let received_interval = self.received.wrapping_sub(self.received_prior);
        self.expected_prior = expected;
        self.received_prior = self.received;
        let lost_interval = i64::from(expected_interval) - i64::from(received_interval);
        let fraction_lost = if expected_interval == 0 || lost_interval <= 0 {
            0
        } else {
            ((lost_interval << 8) / i64::from(expected_interval)).min(255) as u8
        };
        let (last_sr, delay_since_last_sr) = match self.last_sr {
            Some((lsr, at)) => (lsr, (at.elapsed().as_secs_f64() * 65536.0) as u32),
            None => (0, 0),
        };
        Some(ReportBlock {
            ssrc,
            fraction_lost,
            cumulative_lost: lost.clamp(-0x80_0000, 0x7f_ffff) as i32,
            highest_seq: extended_max,
            jitter: 0,
            last_sr,
            delay_since_last_sr,
        })
    }
}

#[cfg(test)]
mod stats_tests {
    use super::*;

    fn header(seq: u16) -> RtpHeader {
        RtpHeader {
            marker: false,
            payload_type: 96,
            sequence: seq,
            timestamp: 0,
            ssrc: 9,
            csrc_count: 0,
            extension: false,
            padding: 0,
            payload_offset: 12,
            payload_len: 0,
        }
    }

    #[test]
    fn counts_loss_across_wraparound() {
        let mut s = RecvStats::default();
        assert!(s.report_block().is_none());
        for seq in [65530u16, 65531, 65533, 65535, 0, 1, 3] {
            s.on_rtp(&header(seq));
        }
        let b = s.report_block().unwrap();
        assert_eq!(b.highest_seq, 65536 + 3);
        assert_eq!(b.cumulative_lost, 3); // 65532, 65534, 2
        assert_eq!(b.fraction_lost, (3 * 256 / 10) as u8);
        s.on_rtp(&header(4));
        assert_eq!(s.report_block().unwrap().fraction_lost, 0);
    }
}
