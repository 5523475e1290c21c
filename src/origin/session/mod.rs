//! A playing origin session: SETUP + PLAY, then one task that receives
//! media, keeps the session alive and reports how it ends.
//!
//! The task owns the RTSP connection and, in UDP mode, two sockets per track
//! (RTP on even ports, RTCP on the next). It waits on all of them at once
//! with `select!`; every branch's future is cancel-safe (socket reads into
//! buffers the task owns), and writes happen only in the handlers.

mod establish;
mod running;
mod stats;

use stats::RecvStats;

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
