//! Response bodies: whole (playlists, segments, errors) or streamed from a
//! blocking task through a bounded channel (an MP4 export, written while
//! it is read from the store).

use std::io::{self, Write};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Frame;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::Response;
use tokio::sync::mpsc;

pub type Body = BoxBody<Bytes, io::Error>;

/// A whole body of `content_type`.
pub fn bytes(data: Bytes, content_type: &'static str) -> Response<Body> {
    let mut response = Response::new(Full::new(data).map_err(|never| match never {}).boxed());
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

pub fn text(message: String) -> Response<Body> {
    bytes(Bytes::from(message), "text/plain; charset=utf-8")
}

/// The receiving end: a body whose frames a blocking task sends.
pub struct ChannelBody(mpsc::Receiver<io::Result<Bytes>>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|r| r.map(Frame::data)))
    }
}

/// The sending end, as a `Write` for the muxers: it sends a chunk once it
/// has `CHUNK` bytes, waiting while the channel is full (so a slow viewer
/// slows the export down instead of filling memory).
pub struct ChannelWriter {
    tx: mpsc::Sender<io::Result<Bytes>>,
    buf: Vec<u8>,
}

const CHUNK: usize = 256 * 1024;
/// Chunks in flight between the exporting task and the connection.
const CHUNKS_QUEUED: usize = 4;

/// A connected writer and body.
pub fn channel() -> (ChannelWriter, ChannelBody) {
    let (tx, rx) = mpsc::channel(CHUNKS_QUEUED);
    (
        ChannelWriter {
            tx,
            buf: Vec::with_capacity(CHUNK),
        },
        ChannelBody(rx),
    )
}

impl ChannelWriter {
    /// Ends the body with an error (the viewer sees a cut connection, not a
    /// file that looks whole).
    pub fn fail(self, error: io::Error) {
        let _ = self.tx.blocking_send(Err(error));
    }

    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the viewer went away"))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}
