//! The RTSP client connection of one player: writes requests, reads
//! responses and `$`-interleaved frames through the project's framed codec
//! ([`RtspCodec`]).

use std::fmt::Write as _;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use futures_util::StreamExt;
use streamcache_rtsp::codec::{CodecError, RtspCodec};
use streamcache_rtsp::framing::{Frame, FramingError};
use streamcache_rtsp::range::SessionHeader;
use streamcache_rtsp::rtsp_types::{headers, Response};
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio_util::codec::FramedRead;

/// The `User-Agent` of every request.
const USER_AGENT: &str = concat!("streamcache-loadgen/", env!("CARGO_PKG_VERSION"));

/// Why reading or writing the connection failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    /// Socket error.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The server closed the connection.
    #[error("connection closed by the server")]
    Closed,
    /// The server sent bytes that are not RTSP.
    #[error("undecodable data from the server: {0}")]
    Framing(#[from] FramingError),
}

impl From<CodecError> for ConnError {
    fn from(e: CodecError) -> Self {
        match e {
            CodecError::Io(e) => ConnError::Io(e),
            CodecError::Framing { error, .. } => ConnError::Framing(error),
        }
    }
}

/// What the load client needs from a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseInfo {
    /// Status code.
    pub status: u16,
    /// Reason phrase as sent.
    pub reason: String,
    /// `CSeq`, if present and numeric.
    pub cseq: Option<u32>,
    /// `Session` header, if present and well-formed.
    pub session: Option<SessionHeader>,
    /// `Content-Base` header.
    pub content_base: Option<String>,
    /// `Content-Location` header.
    pub content_location: Option<String>,
    /// `Transport` header.
    pub transport: Option<String>,
    /// The body.
    pub body: Vec<u8>,
}

impl ResponseInfo {
    /// Extracts the fields above from a decoded response.
    pub fn from_response(resp: &Response<Vec<u8>>) -> Self {
        let text = |name| resp.header(name).map(|v| v.as_str().trim().to_string());
        ResponseInfo {
            status: resp.status().into(),
            reason: resp.reason_phrase().to_string(),
            cseq: text(&headers::CSEQ).and_then(|v| v.parse().ok()),
            session: text(&headers::SESSION).and_then(|v| SessionHeader::parse(&v).ok()),
            content_base: text(&headers::CONTENT_BASE),
            content_location: text(&headers::CONTENT_LOCATION),
            transport: text(&headers::TRANSPORT),
            body: resp.body().clone(),
        }
    }

    /// `true` for a 2xx status.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// `"<status> <reason>"`, e.g. `404 Not Found`.
    pub fn status_line(&self) -> String {
        format!("{} {}", self.status, self.reason)
    }
}

/// Formats a request with `CSeq`, `User-Agent`, the session (if any) and
/// the extra headers given as `(name, value)` pairs.
pub fn format_request(
    method: &str,
    url: &str,
    cseq: u32,
    session: Option<&str>,
    extra: &[(&str, &str)],
) -> String {
    let mut out =
        format!("{method} {url} RTSP/1.0\r\nCSeq: {cseq}\r\nUser-Agent: {USER_AGENT}\r\n");
    if let Some(id) = session {
        let _ = write!(out, "Session: {id}\r\n");
    }
    for (name, value) in extra {
        let _ = write!(out, "{name}: {value}\r\n");
    }
    out.push_str("\r\n");
    out
}

/// One RTSP-over-TCP connection.
pub struct Connection {
    frames: FramedRead<Stamped<OwnedReadHalf>, RtspCodec>,
    /// Requests are written as formatted, the way a player would.
    writer: OwnedWriteHalf,
    next_cseq: u32,
}

/// A reader that remembers when its last read brought bytes: the arrival
/// time of what that read completed.
struct Stamped<R> {
    inner: R,
    last_read: Instant,
}

impl<R: AsyncRead + Unpin> AsyncRead for Stamped<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.last_read = Instant::now();
        }
        polled
    }
}

/// A decoded frame and the arrival time of the read that completed it.
pub type Received = (Frame, Instant);

impl Connection {
    /// Wraps a connected stream.
    pub fn new(stream: TcpStream) -> Self {
        // Interleaved media is many small writes: no Nagle delay on ours.
        let _ = stream.set_nodelay(true);
        let (reader, writer) = stream.into_split();
        let reader = Stamped {
            inner: reader,
            last_read: Instant::now(),
        };
        Connection {
            frames: FramedRead::with_capacity(reader, RtspCodec::default(), 16 * 1024),
            writer,
            next_cseq: 1,
        }
    }

    /// Sends a request and returns its `CSeq`.
    pub async fn send(
        &mut self,
        method: &str,
        url: &str,
        session: Option<&str>,
        extra: &[(&str, &str)],
    ) -> Result<u32, ConnError> {
        let cseq = self.next_cseq;
        self.next_cseq += 1;
        let text = format_request(method, url, cseq, session, extra);
        self.writer.write_all(text.as_bytes()).await?;
        Ok(cseq)
    }

    /// Sends a request and waits for the response with its `CSeq`, dropping
    /// any interleaved frame that comes first. The caller bounds the wait.
    pub async fn request(
        &mut self,
        method: &str,
        url: &str,
        session: Option<&str>,
        extra: &[(&str, &str)],
    ) -> Result<ResponseInfo, ConnError> {
        let cseq = self.send(method, url, session, extra).await?;
        loop {
            if let (Frame::Response(resp), _) = self.next_frame().await? {
                let info = ResponseInfo::from_response(&resp);
                if info.cseq.is_none() || info.cseq == Some(cseq) {
                    return Ok(info);
                }
            }
        }
    }

    /// The next frame off the connection. Cancel-safe: dropping the future
    /// loses no data, so it can be raced against timers.
    pub async fn next_frame(&mut self) -> Result<Received, ConnError> {
        match self.frames.next().await {
            Some(frame) => Ok((frame?, self.frames.get_ref().last_read)),
            None => Err(ConnError::Closed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use streamcache_rtsp::framing::{self, Limits};

    fn parse(bytes: &[u8]) -> ResponseInfo {
        match framing::decode(bytes, &Limits::default()) {
            Ok(Some((Frame::Response(r), _))) => ResponseInfo::from_response(&r),
            other => panic!("not a response: {other:?}"),
        }
    }

    #[test]
    fn reads_a_gstreamer_describe_answer() {
        let r = parse(
            b"RTSP/1.0 200 OK\r\nCSeq: 1\r\nContent-Type: application/sdp\r\n\
Content-Base: rtsp://127.0.0.1:8654/live/\r\nServer: GStreamer RTSP server\r\n\
Content-Length: 5\r\n\r\nv=0\r\n",
        );
        assert!(r.is_success());
        assert_eq!(r.cseq, Some(1));
        assert_eq!(
            r.content_base.as_deref(),
            Some("rtsp://127.0.0.1:8654/live/")
        );
        assert_eq!(r.body, b"v=0\r\n");
        assert_eq!(r.session, None);
    }

    #[test]
    fn reads_session_timeout_and_transport() {
        let r = parse(
            b"RTSP/1.0 200 OK\r\nCSeq: 3\r\n\
Transport: RTP/AVP/TCP;unicast;interleaved=2-3;ssrc=6A1B0C2D\r\n\
Session: BDXkM9DVcaW2RfHd;timeout=60\r\n\r\n",
        );
        let session = r.session.unwrap();
        assert_eq!(session.id, "BDXkM9DVcaW2RfHd");
        assert_eq!(session.timeout, Some(60));
        assert_eq!(
            r.transport.as_deref(),
            Some("RTP/AVP/TCP;unicast;interleaved=2-3;ssrc=6A1B0C2D")
        );
    }

    #[test]
    fn reads_error_status() {
        let r = parse(b"RTSP/1.0 503 Service Unavailable\r\nCSeq: 2\r\n\r\n");
        assert!(!r.is_success());
        assert_eq!(r.status_line(), "503 Service Unavailable");
    }

    #[test]
    fn formats_requests() {
        let text = format_request(
            "SETUP",
            "rtsp://127.0.0.1/x/stream=0",
            4,
            Some("abc"),
            &[("Transport", "RTP/AVP/TCP;unicast;interleaved=0-1")],
        );
        assert!(text.starts_with("SETUP rtsp://127.0.0.1/x/stream=0 RTSP/1.0\r\nCSeq: 4\r\n"));
        assert!(text.contains("\r\nSession: abc\r\n"));
        assert!(text.ends_with("Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n\r\n"));
        // It must decode as a request with our own codec.
        assert!(matches!(
            framing::decode(text.as_bytes(), &Limits::default()),
            Ok(Some((Frame::Request(_), n))) if n == text.len()
        ));
    }
}
