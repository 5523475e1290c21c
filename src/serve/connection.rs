//! One player's RTSP connection.
//!
//! The read side takes frames off the shared framed codec ([`RtspCodec`])
//! and handles each request in order. Everything written — responses and interleaved media from the
//! session forwarders — goes through one writer task via a bounded queue, so
//! frames are never torn and a player that stops reading cannot make the
//! daemon buffer without bound.

use std::net::SocketAddr;
use std::sync::Arc;

use std::io::IoSlice;

use bytes::{Buf, Bytes, BytesMut};
use futures_util::StreamExt;
use rtsp_types::{Response, StatusCode, Version};
use streamcache_rtsp::codec::{CodecError, RtspCodec};
use streamcache_rtsp::framing::Frame;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::codec::{Encoder, FramedRead};
use tracing::{debug, info};

use super::delivery::Outgoing;
use super::methods;
use super::Server;

/// Batches of media (and responses) queued toward one connection. Beyond
/// this the player is not reading and its sessions are ended.
pub const OUT_QUEUE: usize = 256;

/// What a request handler knows about the connection it came on.
pub struct Conn {
    pub id: u64,
    pub peer: SocketAddr,
    pub out: mpsc::Sender<Outgoing>,
    /// Sessions set up on this connection (RTCP on it keeps them alive).
    pub sessions: Vec<String>,
}

pub async fn run(server: Arc<Server>, stream: TcpStream, peer: SocketAddr, id: u64) {
    let (reader, writer) = stream.into_split();
    let mut frames = FramedRead::with_capacity(reader, RtspCodec::new(server.limits), 4096);
    let (out, out_rx) = mpsc::channel(OUT_QUEUE);
    let mut writer = tokio::spawn(write_loop(writer, out_rx));
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
    let _ = conn.out.send(Outgoing::Close).await;
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
    conn.out.send(Outgoing::Bytes(bytes.freeze())).await.is_ok()
}

/// Most queued items written in one `writev`.
const WRITE_BATCH: usize = 64;

/// Writes what the connection's queue carries, in order, until `Close`.
/// Everything already queued when the writer wakes (media batches of
/// several sessions, responses) leaves in one `writev`, not one write each.
pub async fn write_loop<W: AsyncWrite + Unpin>(mut writer: W, mut queue: mpsc::Receiver<Outgoing>) {
    let mut batch: Vec<Bytes> = Vec::with_capacity(WRITE_BATCH);
    let mut close = false;
    while !close {
        match queue.recv().await {
            Some(Outgoing::Bytes(bytes)) => batch.push(bytes),
            Some(Outgoing::Close) | None => break,
        }
        while batch.len() < WRITE_BATCH {
            match queue.try_recv() {
                Ok(Outgoing::Bytes(bytes)) => batch.push(bytes),
                Ok(Outgoing::Close) => {
                    close = true;
                    break;
                }
                Err(_) => break,
            }
        }
        if write_all_vectored(&mut writer, &mut batch).await.is_err() {
            break;
        }
    }
    let _ = writer.shutdown().await;
}

/// Writes every buffer of `batch` (emptied), as few `writev`s as it takes.
async fn write_all_vectored<W: AsyncWrite + Unpin>(
    writer: &mut W,
    batch: &mut Vec<Bytes>,
) -> std::io::Result<()> {
    let mut first = 0;
    while first < batch.len() {
        let slices: [IoSlice<'_>; WRITE_BATCH] =
            std::array::from_fn(|i| IoSlice::new(batch.get(first + i).map_or(&[][..], |b| &b[..])));
        let count = (batch.len() - first).min(WRITE_BATCH);
        let mut n = writer.write_vectored(&slices[..count]).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        // Drop what was written; a partly written buffer keeps its rest.
        while n > 0 {
            let len = batch[first].len();
            if n >= len {
                n -= len;
                first += 1;
            } else {
                batch[first].advance(n);
                n = 0;
            }
        }
    }
    batch.clear();
    Ok(())
}
