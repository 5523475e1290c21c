//! One player's RTSP connection.
//!
//! The read side takes frames off the shared framed codec ([`RtspCodec`])
//! and handles each request in order. Everything written — responses and
//! interleaved media from the sessions' senders — goes through the
//! connection's [`ConnWriter`], so frames are never torn and a player that
//! stops reading cannot make the daemon buffer without bound.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use futures_util::StreamExt;
use rtsp_types::{Response, StatusCode, Version};
use streamcache_rtsp::codec::{CodecError, RtspCodec};
use streamcache_rtsp::framing::Frame;
use tokio::net::TcpStream;
use tokio_util::codec::{Encoder, FramedRead};
use tracing::{debug, info};

use super::conn_writer::ConnWriter;
use super::methods;
use super::Server;

/// What a request handler knows about the connection it came on.
pub struct Conn {
    pub id: u64,
    pub peer: SocketAddr,
    pub out: Arc<ConnWriter>,
    /// Sessions set up on this connection (RTCP on it keeps them alive).
    pub sessions: Vec<String>,
}

pub async fn run(server: Arc<Server>, stream: TcpStream, peer: SocketAddr, id: u64) {
    let (reader, writer) = stream.into_split();
    let mut frames = FramedRead::with_capacity(reader, RtspCodec::new(server.limits), 4096);
    let (out, mut writer) = ConnWriter::spawn(writer);
    // A JoinHandle must not be polled again once it has completed.
    let mut writer_done = false;
    let mut conn = Conn {
        id,
        peer,
        out,
        sessions: Vec::new(),
    };
    let idle = server.player_limits.idle_connection;
    let mut idle_deadline = tokio::time::Instant::now() + idle;
    debug!(%peer, conn = id, "player connected");
    loop {
        // Not biased: a player streaming interleaved frames without a
        // session must not keep the idle timer from firing.
        tokio::select! {
            frame = frames.next() => match frame {
                Some(Ok(frame)) => {
                    if matches!(frame, Frame::Request(_)) {
                        idle_deadline = tokio::time::Instant::now() + idle;
                    }
                    if !handle_frame(&server, &mut conn, frame).await {
                        break;
                    }
                }
                Some(Err(CodecError::Framing { error, cseq })) => {
                    info!(%peer, error = %error, "bad request from player: closing connection");
                    let mut response =
                        Response::builder(Version::V1_0, StatusCode::from(error.status()))
                            .header(rtsp_types::headers::SERVER, methods::SERVER)
                            .header(rtsp_types::headers::CONNECTION, "close");
                    if let Some(cseq) = cseq {
                        response = response.header(rtsp_types::headers::CSEQ, cseq.to_string());
                    }
                    send_response(&conn, &response.build(Vec::new())).await;
                    break;
                }
                Some(Err(CodecError::Io(_))) | None => break,
            },
            // The writer stopped: the peer is gone or we closed on purpose.
            _ = &mut writer => {
                writer_done = true;
                break;
            }
            _ = tokio::time::sleep_until(idle_deadline) => {
                // A connection carrying a session lives as long as the session.
                if conn.sessions.iter().any(|s| server.sessions.get(s).is_some()) {
                    idle_deadline = tokio::time::Instant::now() + idle;
                } else {
                    info!(%peer, idle_secs = idle.as_secs(), "idle connection closed: no session and no request for idle_connection_secs");
                    break;
                }
            }
        }
    }
    server.sessions.end_for_connection(id);
    conn.out.close();
    drop(conn);
    if !writer_done {
        let _ = writer.await;
    }
    debug!(%peer, conn = id, "player disconnected");
}

/// Handles one decoded frame; false to close the connection.
async fn handle_frame(server: &Arc<Server>, conn: &mut Conn, frame: Frame) -> bool {
    match frame {
        Frame::Request(request) => {
            let (response, after) = methods::handle(server, conn, &request).await;
            let close = response.status() == StatusCode::BadRequest
                || response
                    .header(&rtsp_types::headers::CONNECTION)
                    .is_some_and(|v| v.as_str().eq_ignore_ascii_case("close"));
            if !send_response(conn, &response).await {
                return false;
            }
            if let Some(after) = after {
                methods::after_response(server, after);
            }
            !close
        }
        // RTCP receiver reports (or anything else) from the player: it is
        // alive; the reports on a track's RTCP channel also count its losses.
        Frame::Interleaved { channel, payload } => {
            for id in &conn.sessions {
                if let Some(session) = server.sessions.get(id) {
                    if session.is_rtcp_channel(channel) {
                        session.player_rtcp(&payload);
                    } else {
                        session.touch();
                    }
                }
            }
            true
        }
        // A player has no business sending responses; ignore them.
        Frame::Response(_) => true,
    }
}

async fn send_response(conn: &Conn, response: &Response<Vec<u8>>) -> bool {
    // Encoding needs no state: a fresh codec writes the same bytes as the
    // connection's own would.
    let mut bytes = BytesMut::new();
    if RtspCodec::default().encode(response, &mut bytes).is_err() {
        return false;
    }
    conn.out.write_waiting(&bytes).await
}
