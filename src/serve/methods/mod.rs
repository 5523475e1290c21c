//! What each RTSP method does for a player.
//!
//! Every answer echoes CSeq and names the server. Errors use RFC 2326's
//! codes: 400 for a request we cannot read, 404 for a path under no mount,
//! 454 for an unknown session, 455 for a method not valid in the session's
//! state, 459/461 for SETUP we cannot honour, 501 for unknown methods and 551
//! for `Require`/`Proxy-Require` options we do not have. Problems at the
//! origin come back as the status the origin client picked (404, 502, 503, 504…).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use rtsp_types::headers::{self, HeaderName};
use rtsp_types::{Method, Request, Response, StatusCode, Url, Version};
use streamcache_cache::PresentationState;
use streamcache_rtsp::range::{NptStart, PlayRange};
use streamcache_rtsp::sdp::Sdp;
use streamcache_rtsp::transport::{self, LowerTransport, TransportSpec};
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

use super::cache_status::CacheStatus;
use super::connection::Conn;
use super::delivery::{self, PlayerSink, TrackDelivery};
use super::session::{PlayerSession, Source};
use super::Server;
use crate::catalog::{CachedTitle, Lookup};
use crate::hub::{Hub, HubError, HubPacket, PlayerGuard, Subscription};
use crate::metrics::LookupOutcome;
use crate::mounts::{track_suffix, Resolved};
use crate::playback::{Control, Playback};

pub const SERVER: &str = concat!("streamcache/", env!("CARGO_PKG_VERSION"));
const PUBLIC: &str =
    "OPTIONS, DESCRIBE, SETUP, PLAY, PAUSE, TEARDOWN, GET_PARAMETER, SET_PARAMETER";

/// Work to do once the response is on its way (media must follow the PLAY
/// response, never precede it).
pub enum After {
    StartForwarding(Arc<PlayerSession>, Subscription),
    StartPlayback(mpsc::Sender<Control>),
}

/// A response under construction: status, headers, body.
struct Reply {
    status: StatusCode,
    headers: Vec<(HeaderName, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn status(code: u16) -> Reply {
        Reply {
            status: StatusCode::from(code),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    fn ok() -> Reply {
        Reply::status(200)
    }

    fn header(mut self, name: HeaderName, value: impl Into<String>) -> Reply {
        self.headers.push((name, value.into()));
        self
    }
}

pub async fn handle(
    server: &Arc<Server>,
    conn: &mut Conn,
    request: &Request<Vec<u8>>,
) -> (Response<Vec<u8>>, Option<After>) {
    let cseq = request
        .header(&headers::CSEQ)
        .map(|v| v.as_str().to_owned());
    let (reply, after) = match &cseq {
        None => (
            Reply::status(400).header(headers::CONNECTION, "close"),
            None,
        ),
        Some(_) => dispatch(server, conn, request).await,
    };
    let mut builder =
        Response::builder(Version::V1_0, reply.status).header(headers::SERVER, SERVER);
    if let Some(cseq) = cseq {
        builder = builder.header(headers::CSEQ, cseq);
    }
    let mut challenges = Vec::new();
    for (name, value) in reply.headers {
        if name == headers::WWW_AUTHENTICATE {
            challenges.push(value);
        } else {
            builder = builder.header(name, value);
        }
    }
    if !challenges.is_empty() {
        // One header line per challenge: rtsp-types would join repeated
        // headers with commas, which players do not split (ffmpeg reads a
        // joined value as one challenge). Our own values, no CR/LF inside.
        builder = builder.header(
            headers::WWW_AUTHENTICATE,
            challenges.join("\r\nWWW-Authenticate: "),
        );
    }
    (builder.build(reply.body), after)
}

async fn dispatch(
    server: &Arc<Server>,
    conn: &mut Conn,
    request: &Request<Vec<u8>>,
) -> (Reply, Option<After>) {
    for name in [headers::REQUIRE, headers::PROXY_REQUIRE] {
        if let Some(options) = request.header(&name) {
            // We implement no option tags: refuse every one we are required to have.
            return (
                Reply::status(551).header(headers::UNSUPPORTED, options.as_str()),
                None,
            );
        }
    }
    let session = match request.header(&headers::SESSION) {
        Some(value) => {
            let id = value.as_str().split(';').next().unwrap_or_default().trim();
            match server.sessions.get(id) {
                Some(session) => Some(session),
                None => return (Reply::status(454), None),
            }
        }
        None => None,
    };
    let user = match super::player_auth::check(server, conn, request, session.as_ref()) {
        Ok(user) => {
            // Only a request the player may make keeps the session alive:
            // a user removed by a reload cannot hold it open with refused
            // keep-alives.
            if let Some(session) = &session {
                session.touch();
            }
            user
        }
        Err(challenges) => {
            let mut reply = Reply::status(401);
            for challenge in challenges {
                reply = reply.header(headers::WWW_AUTHENTICATE, challenge);
            }
            return (reply, None);
        }
    };
    match request.method() {
        Method::Options => (Reply::ok().header(headers::PUBLIC, PUBLIC), None),
        Method::Describe => (describe(server, request).await, None),
        Method::Setup => (setup(server, conn, request, session, user).await, None),
        Method::Play => play(server, request, session).await,
        Method::Pause => (pause(session).await, None),
        Method::Teardown => (teardown(server, session), None),
        Method::GetParameter | Method::SetParameter => (keep_alive(request, session), None),
        Method::Announce | Method::Record | Method::Redirect | Method::PlayNotify => {
            (Reply::status(405).header(headers::ALLOW, PUBLIC), None)
        }
        Method::Extension(_) => (Reply::status(501).header(headers::PUBLIC, PUBLIC), None),
    }
}

/// The request URL resolved through the mounts, or the error reply.
fn resolve(server: &Server, request: &Request<Vec<u8>>) -> Result<(Url, Resolved), Reply> {
    let url = request.request_uri().ok_or_else(|| Reply::status(400))?;
    let resolved = server
        .mounts()
        .resolve(url.path())
        .ok_or_else(|| Reply::status(404))?;
    Ok((url.clone(), resolved))
}

/// The presentation's URL as this player reaches the proxy.
fn presentation_url(request_url: &Url, resolved: &Resolved) -> String {
    let host = request_url.host_str().unwrap_or("localhost");
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_owned()
    };
    let port = request_url
        .port()
        .map(|p| format!(":{p}"))
        .unwrap_or_default();
    format!("rtsp://{host}{port}{}", resolved.presentation_path)
}

/// A player's `Cache-Control` request directives that change where a
/// presentation comes from (RFC 2326 §12.8).
#[derive(Debug, Clone, Copy, Default)]
struct PlayerCacheControl {
    /// Go to the origin even if the store holds the title.
    no_cache: bool,
    /// Never go to the origin: 504 when the store does not hold the title.
    only_if_cached: bool,
}

impl PlayerCacheControl {
    fn of(request: &Request<Vec<u8>>) -> PlayerCacheControl {
        let mut cc = PlayerCacheControl::default();
        if let Some(value) = request.header(&headers::CACHE_CONTROL) {
            for directive in value.as_str().split(',') {
                match directive.trim().to_ascii_lowercase().as_str() {
                    "no-cache" => cc.no_cache = true,
                    "only-if-cached" => cc.only_if_cached = true,
                    _ => {}
                }
            }
        }
        cc
    }
}

/// Where a new session's media comes from: the store when it holds the
/// whole title, the origin's cache rules let it be served (revalidating it
/// if stale) and the player allows it; otherwise the origin's hub.
async fn source_for(
    server: &Arc<Server>,
    request: &Request<Vec<u8>>,
    resolved: &Resolved,
) -> Result<Source, Reply> {
    let cc = PlayerCacheControl::of(request);
    let described = if cc.no_cache {
        server.metrics.lookup(LookupOutcome::Bypass);
        None
    } else {
        match server.catalog.lookup(resolved, cc.only_if_cached).await {
            Lookup::Hit(title) => return Ok(Source::Cache(title)),
            Lookup::Unavailable => return Err(Reply::status(504)),
            Lookup::Miss(described) => described,
        }
    };
    if cc.only_if_cached {
        return Err(Reply::status(504));
    }
    // A SETUP's hub waits for the player's PLAY; a DESCRIBE's need not.
    let claim = request.method() == Method::Setup;
    match server.catalog.hub(resolved, described, claim).await {
        Ok(hub) => Ok(Source::Hub(hub)),
        Err(e) => {
            warn!(mount = %resolved.mount.path, origin = %resolved.origin_url, error = %e, "origin request failed");
            Err(Reply::status(e.rtsp_status()))
        }
    }
}

async fn describe(server: &Arc<Server>, request: &Request<Vec<u8>>) -> Reply {
    let (url, resolved) = match resolve(server, request) {
        Ok(r) => r,
        Err(reply) => return reply,
    };
    let source = match source_for(server, request, &resolved).await {
        Ok(source) => source,
        Err(reply) => return reply,
    };
    let sdp_text = match &source {
        Source::Hub(hub) => hub.described().sdp_text.as_str(),
        Source::Cache(title) => title.metadata.sdp.as_str(),
    };
    let base = presentation_url(&url, &resolved);
    let sdp = match Sdp::parse(sdp_text) {
        Ok(sdp) => sdp,
        Err(e) => {
            warn!(origin = %resolved.origin_url, error = %e, "origin SDP does not parse");
            return Reply::status(502);
        }
    };
    let controls: Vec<String> = (0..sdp.media.len())
        .map(|i| format!("{base}/{}", track_suffix(i)))
        .collect();
    let body = sdp.rewrite_controls(None, &controls);
    let mut reply = Reply::ok()
        .header(headers::CONTENT_TYPE, "application/sdp")
        .header(headers::CONTENT_BASE, format!("{base}/"))
        .header(
            headers::VIA,
            format!("RTSP/1.0 {}", SERVER.replace('/', "-")),
        );
    reply.body = body.into_bytes();
    reply
}

async fn setup(
    server: &Arc<Server>,
    conn: &mut Conn,
    request: &Request<Vec<u8>>,
    session: Option<Arc<PlayerSession>>,
    user: Option<String>,
) -> Reply {
    let (_, resolved) = match resolve(server, request) {
        Ok(r) => r,
        Err(reply) => return reply,
    };
    if session.is_none() {
        if let Err(status) = server
            .player_limits
            .admit_session(&server.sessions, conn.peer)
        {
            let reply = Reply::status(status);
            return if status == 503 {
                reply.header(
                    headers::RETRY_AFTER,
                    super::limits::RETRY_AFTER_SECS.to_string(),
                )
            } else {
                reply
            };
        }
    }
    let Some(track) = resolved.track else {
        // SETUP of the whole presentation: we only set up tracks one by one.
        return Reply::status(459);
    };
    if let Some(session) = &session {
        if session.presentation.key != resolved.key {
            return Reply::status(459);
        }
        if session.is_playing() {
            return Reply::status(455);
        }
    }
    let source = match &session {
        Some(session) => session.source.clone(),
        None => match source_for(server, request, &resolved).await {
            Ok(source) => source,
            Err(reply) => return reply,
        },
    };
    if track >= source.track_count() {
        return Reply::status(404);
    }
    let offered = match request.header(&headers::TRANSPORT) {
        Some(value) => value.as_str(),
        None => return Reply::status(461),
    };
    let session = session.unwrap_or_else(|| {
        let status = CacheStatus::of(&source, PlayerCacheControl::of(request).no_cache);
        PlayerSession::new(resolved, source, conn.peer, user, status)
    });
    let Some(chosen) = choose_transport(offered, &session) else {
        return Reply::status(461);
    };
    let (delivery, answer) = match (chosen.lower, chosen.client_port) {
        (LowerTransport::Tcp, _) => {
            let (rtp, rtcp) = chosen
                .interleaved
                .unwrap_or_else(|| free_channels(&session));
            *session
                .interleaved_conn
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = Some(conn.id);
            let delivery = TrackDelivery::Interleaved {
                rtp,
                rtcp,
                out: conn.out.clone(),
            };
            (delivery, TransportSpec::tcp((rtp, rtcp)))
        }
        (LowerTransport::Udp, Some(client_ports)) => {
            let ip = conn.peer.ip();
            match udp_delivery(server, &session, ip, client_ports).await {
                Ok((delivery, server_ports)) => {
                    let mut answer = TransportSpec::udp(client_ports);
                    answer.server_port = Some(server_ports);
                    (delivery, answer)
                }
                Err(e) => {
                    warn!(error = %e, "cannot bind UDP ports for a player");
                    return Reply::status(503);
                }
            }
        }
        (LowerTransport::Udp, None) => return Reply::status(461),
    };
    session.add_track(track, delivery);
    if server.sessions.get(&session.id).is_none() {
        server.sessions.insert(Arc::clone(&session));
        conn.sessions.push(session.id.clone());
    }
    Reply::ok()
        .header(headers::TRANSPORT, answer.to_string())
        .header(headers::SESSION, session_header(server, &session))
}

/// The first alternative we can serve: unicast, media to the player's own
/// address (a `destination=` elsewhere would make us a traffic reflector),
/// and interleaved channels not already taken by another track.
fn choose_transport(offered: &str, session: &PlayerSession) -> Option<TransportSpec> {
    transport::choose(offered, |t| {
        !t.multicast
            && t.destination.is_none()
            && match t.lower {
                LowerTransport::Tcp => t
                    .interleaved
                    .is_none_or(|(a, b)| !session.uses_channel(a) && !session.uses_channel(b)),
                LowerTransport::Udp => t.client_port.is_some(),
            }
    })
    .ok()
}

/// The lowest even interleaved channel pair the session does not use yet.
fn free_channels(session: &PlayerSession) -> (u8, u8) {
    (0..=127u8)
        .map(|i| (2 * i, 2 * i + 1))
        .find(|&(a, b)| !session.uses_channel(a) && !session.uses_channel(b))
        .unwrap_or((254, 255))
}

fn session_header(server: &Server, session: &PlayerSession) -> String {
    format!(
        "{};timeout={}",
        session.id,
        server.sessions.timeout().as_secs()
    )
}

/// How often a UDP player's RTCP listener that hears nothing looks whether
/// its session has ended.
const RTCP_LISTENER_CHECK: Duration = Duration::from_secs(2);

/// Binds an RTP/RTCP port pair toward a UDP player and listens to its RTCP
/// (receiver reports keep the session alive and tell its losses) until the
/// session ends.
async fn udp_delivery(
    server: &Server,
    session: &Arc<PlayerSession>,
    player_ip: IpAddr,
    (rtp_port, rtcp_port): (u16, u16),
) -> std::io::Result<(TrackDelivery, (u16, u16))> {
    let (rtp_socket, rtcp_socket) = crate::udp_pair::bind(server.local_addr.ip()).await?;
    let ports = (
        rtp_socket.local_addr()?.port(),
        rtcp_socket.local_addr()?.port(),
    );
    let rtcp_socket = Arc::new(rtcp_socket);
    let listener = Arc::clone(&rtcp_socket);
    let weak = Arc::downgrade(session);
    tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        loop {
            match tokio::time::timeout(RTCP_LISTENER_CHECK, listener.recv_from(&mut buf)).await {
                Ok(Ok((len, from))) => {
                    let Some(session) = weak.upgrade() else { break };
                    if from.ip() == player_ip {
                        session.player_rtcp(&buf[..len]);
                    }
                }
                Ok(Err(_)) => break,
                // A player that has left sends nothing more: without this
                // look, the task and the ports it holds would outlive its
                // session for good.
                Err(_) if weak.strong_count() == 0 => break,
                Err(_) => {}
            }
        }
    });
    Ok((
        TrackDelivery::Udp {
            rtp_socket: Arc::new(rtp_socket),
            rtcp_socket,
            rtp_dest: SocketAddr::new(player_ip, rtp_port),
            rtcp_dest: SocketAddr::new(player_ip, rtcp_port),
        },
        ports,
    ))
}

async fn play(
    server: &Arc<Server>,
    request: &Request<Vec<u8>>,
    session: Option<Arc<PlayerSession>>,
) -> (Reply, Option<After>) {
    let Some(session) = session else {
        return (Reply::status(454), None);
    };
    if session.tracks().is_empty() {
        return (Reply::status(455), None);
    }
    if let Some(scale) = request.header(&headers::SCALE) {
        // Trick play is not served: only normal speed.
        if scale.as_str().trim().parse::<f64>().ok() != Some(1.0) {
            return (Reply::status(456), None);
        }
    }
    let base = request
        .request_uri()
        .map(|u| u.as_str().trim_end_matches('/').to_owned())
        .unwrap_or_default();
    let (reply, after) = match session.source.clone() {
        Source::Hub(hub) if hub.relays_to_players() => {
            play_live(server, &session, &hub, &base).await
        }
        Source::Hub(hub) => play_filling(server, request, &session, &hub, &base).await,
        Source::Cache(title) => play_cached(server, request, &session, &title, &base, None).await,
    };
    if reply.status == StatusCode::Ok {
        session.set_paused(false);
    }
    (reply, after)
}

async fn play_live(
    server: &Server,
    session: &Arc<PlayerSession>,
    hub: &Arc<Hub>,
    base: &str,
) -> (Reply, Option<After>) {
    let session_value = session_header(server, session);
    if session.is_playing() {
        // Already playing: a PLAY used as a keep-alive changes nothing.
        return (Reply::ok().header(headers::SESSION, session_value), None);
    }
    let sub = match hub.play().await {
        Ok(sub) => sub,
        Err(e) => {
            warn!(session = %session.id, error = %e, "PLAY failed at the origin");
            return (Reply::status(e.rtsp_status()), None);
        }
    };
    let tracks = session.tracks();
    let rtp_info = rtp_info(base, &sub.backlog, tracks.keys().copied());
    let range = if hub.is_live() {
        "npt=now-"
    } else {
        "npt=0.000-"
    };
    let mut reply = Reply::ok()
        .header(headers::SESSION, session_value)
        .header(headers::RANGE, range);
    if !rtp_info.is_empty() {
        reply = reply.header(headers::RTP_INFO, rtp_info);
    }
    info!(session = %session.id, player = %session.peer, backlog = sub.backlog.len(), "playing from the origin");
    (
        reply,
        Some(After::StartForwarding(Arc::clone(session), sub)),
    )
}

/// PLAY of a stored title: seek (for a Range), then paced playback.
/// PLAY of an on-demand title the store does not hold completely: the hub
/// fills the store from the origin (one fetch however many players) and the
/// player is served from the store, following the recording as it grows.
async fn play_filling(
    server: &Arc<Server>,
    request: &Request<Vec<u8>>,
    session: &Arc<PlayerSession>,
    hub: &Arc<Hub>,
    base: &str,
) -> (Reply, Option<After>) {
    let hold = if session.playback().is_some() {
        None // already playing: the playback task holds the fill
    } else {
        match hub.hold().await {
            Ok(guard) => Some(guard),
            // The fill is over: the store has all it will get.
            Err(HubError::Closed) => None,
            Err(e) => {
                warn!(session = %session.id, error = %e, "PLAY failed at the origin");
                return (Reply::status(e.rtsp_status()), None);
            }
        }
    };
    let store = server.catalog.store();
    let metadata = match store.metadata(hub.key()) {
        Ok(Some(metadata)) => metadata,
        Ok(None) => return (Reply::status(503), None),
        Err(e) => {
            warn!(key = hub.key(), error = %e, "recording unreadable");
            return (Reply::status(500), None);
        }
    };
    let title = CachedTitle {
        store: store.clone(),
        metadata,
    };
    play_cached(server, request, session, &title, base, hold).await
}

/// PLAY of a stored title: seek (for a Range), then paced playback. `hold`
/// keeps a running fill alive for as long as the playback runs.
async fn play_cached(
    server: &Arc<Server>,
    request: &Request<Vec<u8>>,
    session: &Arc<PlayerSession>,
    title: &CachedTitle,
    base: &str,
    hold: Option<PlayerGuard>,
) -> (Reply, Option<After>) {
    let (from, until) = match request
        .header(&headers::RANGE)
        .map(|v| PlayRange::parse(v.as_str()))
    {
        None => (None, None),
        Some(Ok(range)) => (
            match range.start {
                NptStart::At(npt) => Some(npt),
                NptStart::Now => None,
            },
            range.end,
        ),
        Some(Err(_)) => return (Reply::status(457), None),
    };
    let end = title.metadata.range.and_then(|r| r.end);
    if from.zip(end).is_some_and(|(from, end)| from > end) {
        return (Reply::status(457), None);
    }
    let control = match session.playback() {
        Some(control) => control,
        None => match start_playback(server, session, title, hold) {
            Ok(control) => control,
            Err(reply) => return (reply, None),
        },
    };
    let (reply_tx, reply_rx) = oneshot::channel();
    let prepared = match control
        .send(Control::Play {
            from,
            until,
            reply: reply_tx,
        })
        .await
    {
        Ok(()) => reply_rx.await.ok(),
        Err(_) => None,
    };
    let started = match prepared {
        Some(Ok(started)) => started,
        Some(Err(e)) => {
            warn!(key = %title.metadata.key, error = %e, "cached title unreadable");
            return (Reply::status(500), None);
        }
        None => return (Reply::status(500), None),
    };
    let range = PlayRange {
        start: NptStart::At(started.npt),
        end: until.or(end),
    };
    let rtp_info = started
        .rtp_info
        .iter()
        .map(|(track, seq, rtptime)| {
            format!(
                "url={base}/{};seq={seq};rtptime={rtptime}",
                track_suffix(*track)
            )
        })
        .collect::<Vec<_>>()
        .join(",");
    if title.metadata.state == PresentationState::Complete {
        info!(session = %session.id, player = %session.peer, npt = %started.npt, "playing from the cache");
    } else {
        info!(session = %session.id, player = %session.peer, npt = %started.npt, "playing the recording while the origin fills it");
    }
    let reply = Reply::ok()
        .header(headers::SESSION, session_header(server, session))
        .header(headers::RANGE, range.to_string())
        .header(headers::RTP_INFO, rtp_info);
    (reply, Some(After::StartPlayback(control)))
}

/// Spawns the session's store playback task.
fn start_playback(
    server: &Arc<Server>,
    session: &Arc<PlayerSession>,
    title: &CachedTitle,
    hold: Option<PlayerGuard>,
) -> Result<mpsc::Sender<Control>, Reply> {
    let reader = match title.store.open_reader(&title.metadata.key) {
        Ok(Some(reader)) => reader,
        // Evicted or purged since DESCRIBE.
        Ok(None) => return Err(Reply::status(404)),
        Err(e) => {
            warn!(key = %title.metadata.key, error = %e, "cannot open cached title");
            return Err(Reply::status(500));
        }
    };
    let tracks = session.tracks();
    let clocks: Vec<(usize, u32)> = tracks
        .keys()
        .map(|&t| (t, session.source.clock_rate(t)))
        .collect();
    let sink = PlayerSink::new(Arc::clone(session), tracks);
    let playback = Playback::new(reader, &clocks, sink);
    let (control, control_rx) = mpsc::channel(8);
    let task = tokio::spawn(delivery::play_from_store(
        Arc::clone(session),
        Arc::clone(&server.sessions),
        playback,
        control_rx,
        hold,
    ));
    session.set_playback(control.clone(), task);
    Ok(control)
}

/// `RTP-Info` for the tracks whose first packet the player will get is known
/// (the GOP backlog); the others start with whatever the origin sends next.
fn rtp_info(base: &str, backlog: &[HubPacket], tracks: impl Iterator<Item = usize>) -> String {
    tracks
        .filter_map(|track| {
            let first = backlog.iter().find(|p| p.track == track && !p.rtcp)?;
            let view = streamcache_rtsp::rtp::RtpView::parse(&first.data).ok()?;
            Some(format!(
                "url={base}/{};seq={};rtptime={}",
                track_suffix(track),
                view.sequence_number(),
                view.timestamp()
            ))
        })
        .collect::<Vec<_>>()
        .join(",")
}

pub fn after_response(server: &Arc<Server>, after: After) {
    match after {
        After::StartForwarding(session, sub) => {
            let tracks = session.tracks();
            let forwarder = tokio::spawn(delivery::forward(
                Arc::clone(&session),
                Arc::clone(&server.sessions),
                sub,
                tracks,
            ));
            session.set_forwarder(forwarder);
        }
        After::StartPlayback(control) => {
            // The task is waiting for exactly this; a full queue cannot happen.
            let _ = control.try_send(Control::Start);
        }
    }
}

async fn pause(session: Option<Arc<PlayerSession>>) -> Reply {
    let Some(session) = session else {
        return Reply::status(454);
    };
    match session.playback() {
        // From the store: stop the clock, keep the position.
        Some(control) => {
            let (reply, done) = oneshot::channel();
            if control.send(Control::Pause { reply }).await.is_ok() {
                let _ = done.await;
            }
        }
        // Live: the player resumes at the latest keyframe when it plays again.
        None => session.stop(),
    }
    session.set_paused(true);
    Reply::ok().header(headers::SESSION, session.id.clone())
}

fn teardown(server: &Server, session: Option<Arc<PlayerSession>>) -> Reply {
    let Some(session) = session else {
        return Reply::status(454);
    };
    server.sessions.end(&session.id, "teardown");
    Reply::ok()
}

fn keep_alive(request: &Request<Vec<u8>>, session: Option<Arc<PlayerSession>>) -> Reply {
    if *request.method() == Method::SetParameter && !request.body().is_empty() {
        // We have no parameters to set.
        return Reply::status(451);
    }
    let reply = Reply::ok();
    match session {
        Some(session) => reply.header(headers::SESSION, session.id.clone()),
        None => reply,
    }
}
