//! SETUP: one track of a presentation joins a new or existing player
//! session, delivered the way [`negotiate`] chose among the player's
//! transports: interleaved on this connection, or UDP from a port pair
//! bound for the player.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use rtsp_types::headers;
use rtsp_types::Request;
use tracing::warn;

use super::super::cache_status::CacheStatus;
use super::super::connection::Conn;
use super::super::delivery::TrackDelivery;
use super::super::session::PlayerSession;
use super::super::Server;
use super::source::{source_for, PlayerCacheControl};
use super::transport::{negotiate, Chosen};
use super::{resolve, session_header, Reply};

pub(super) async fn setup(
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
        if let Err(status) =
            server
                .player_limits
                .admit_session(&server.sessions, &server.refusals, conn.peer)
        {
            let reply = Reply::status(status);
            return if status == 503 {
                reply.header(
                    headers::RETRY_AFTER,
                    super::super::limits::RETRY_AFTER_SECS.to_string(),
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
    let offered = request.header(&headers::TRANSPORT).map(|v| v.as_str());
    let chosen = match negotiate(offered, |c| {
        session.as_ref().is_some_and(|s| s.uses_channel(c))
    }) {
        Ok(chosen) => chosen,
        Err(status) => return Reply::status(status),
    };
    let session = session.unwrap_or_else(|| {
        let status = CacheStatus::of(&source, PlayerCacheControl::of(request).no_cache);
        PlayerSession::new(resolved, source, conn.peer, user, status)
    });
    let (delivery, answer) = match chosen {
        Chosen::Interleaved((rtp, rtcp)) => {
            *session
                .interleaved_conn
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = Some(conn.id);
            let delivery = TrackDelivery::Interleaved {
                rtp,
                rtcp,
                out: conn.out.clone(),
            };
            (delivery, chosen.answer(None))
        }
        Chosen::Udp(client_ports) => {
            let ip = conn.peer.ip();
            match udp_delivery(server, &session, ip, client_ports).await {
                Ok((delivery, server_ports)) => (delivery, chosen.answer(Some(server_ports))),
                Err(e) => {
                    warn!(error = %e, "cannot bind UDP ports for a player");
                    return Reply::status(503);
                }
            }
        }
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
