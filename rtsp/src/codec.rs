//! The one RTSP framed codec: a tokio-util [`Decoder`]/[`Encoder`] over the
//! sans-io [`framing`] parser (feature `codec`).
//!
//! Every place that reads RTSP off a socket (the origin client, the player
//! connection, the load client) wraps it in `FramedRead`/`Framed` with
//! [`RtspCodec`] and gets one [`Frame`] per item: a request, a response or an
//! interleaved binary packet. The bounds of [`Limits`] are enforced by the
//! parser; a violation is a [`CodecError::Framing`] carrying the status to
//! answer (413, 400, 505) and the `CSeq` of the broken message, after which
//! the stream is over (it cannot be re-synchronised).
//!
//! A peer that closes in the middle of a frame ends the stream like a clean
//! close ([`Decoder::decode_eof`] drops the partial tail): for every caller
//! both mean "the peer is gone", and a truncated message has nobody to be
//! answered.
//!
//! Encoding appends requests, responses and interleaved frames to the write
//! buffer. [`put_interleaved`] is the same framing for callers that batch
//! many packets into one buffer of their own (the player delivery path).

use bytes::{Buf, BufMut, BytesMut};
use rtsp_types::{Request, Response};
use tokio_util::codec::{Decoder, Encoder};

use crate::framing::{self, Frame, FramingError, Limits};

/// Decodes [`Frame`]s within [`Limits`]; encodes RTSP messages and
/// interleaved frames.
#[derive(Debug, Clone, Default)]
pub struct RtspCodec {
    limits: Limits,
}

impl RtspCodec {
    /// A codec enforcing `limits` on what it decodes.
    pub fn new(limits: Limits) -> Self {
        RtspCodec { limits }
    }
}

/// An interleaved frame to encode: `$`, channel, 16-bit length, payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interleaved<'a> {
    /// The interleaved channel number.
    pub channel: u8,
    /// The RTP or RTCP packet (at most 65535 bytes).
    pub payload: &'a [u8],
}

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The socket failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The peer's bytes are not a valid frame, or are out of bounds; or an
    /// outgoing interleaved payload is too long to be framed.
    #[error("{error}")]
    Framing {
        /// What was wrong.
        error: FramingError,
        /// The `CSeq` of the broken message, if one could be read, for the
        /// error answer.
        cseq: Option<u32>,
    },
}

impl Decoder for RtspCodec {
    type Item = Frame;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        match framing::decode(src, &self.limits) {
            Ok(Some((frame, used))) => {
                src.advance(used);
                Ok(Some(frame))
            }
            Ok(None) => {
                // An interleaved frame announces its length: make room for it
                // in one go rather than growing the buffer read by read.
                if let [b'$', _, hi, lo, ..] = src[..] {
                    src.reserve(4 + usize::from(u16::from_be_bytes([hi, lo])));
                }
                Ok(None)
            }
            Err(error) => Err(CodecError::Framing {
                cseq: framing::cseq_hint(src),
                error,
            }),
        }
    }

    /// A partial frame left at end of stream is dropped: see the module
    /// docs.
    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        self.decode(src)
    }
}

impl<B: AsRef<[u8]>> Encoder<&Request<B>> for RtspCodec {
    type Error = CodecError;

    fn encode(&mut self, request: &Request<B>, dst: &mut BytesMut) -> Result<(), CodecError> {
        dst.reserve(usize::try_from(request.write_len()).unwrap_or(0));
        request.write(&mut dst.writer()).map_err(write_error)
    }
}

impl<B: AsRef<[u8]>> Encoder<&Response<B>> for RtspCodec {
    type Error = CodecError;

    fn encode(&mut self, response: &Response<B>, dst: &mut BytesMut) -> Result<(), CodecError> {
        dst.reserve(usize::try_from(response.write_len()).unwrap_or(0));
        response.write(&mut dst.writer()).map_err(write_error)
    }
}

impl Encoder<Interleaved<'_>> for RtspCodec {
    type Error = CodecError;

    fn encode(&mut self, frame: Interleaved<'_>, dst: &mut BytesMut) -> Result<(), CodecError> {
        put_interleaved(frame.channel, frame.payload, dst)
            .map_err(|error| CodecError::Framing { error, cseq: None })
    }
}

/// Appends an interleaved frame to `dst`, allocating nothing beyond the
/// buffer's own growth.
///
/// Payloads longer than 65535 bytes cannot be framed; they are rejected with
/// [`FramingError::TooLarge`] and nothing is written.
pub fn put_interleaved(
    channel: u8,
    payload: &[u8],
    dst: &mut BytesMut,
) -> Result<(), FramingError> {
    let header = framing::interleaved_header(channel, payload.len())?;
    dst.reserve(header.len() + payload.len());
    dst.extend_from_slice(&header);
    dst.extend_from_slice(payload);
    Ok(())
}

/// Writing into a `BytesMut` cannot fail; `rtsp-types` still says it might.
fn write_error(e: rtsp_types::WriteError) -> CodecError {
    match e {
        rtsp_types::WriteError::IoError(e) => CodecError::Io(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtsp_types::{headers, Method, StatusCode, Version};

    const DESCRIBE: &[u8] =
        b"DESCRIBE rtsp://127.0.0.1:8554/cams/front RTSP/1.0\r\nCSeq: 2\r\nAccept: application/sdp\r\n\r\n";
    const REPLY: &[u8] =
        b"RTSP/1.0 200 OK\r\nCSeq: 2\r\nContent-Type: application/sdp\r\nContent-Length: 5\r\n\r\nv=0\r\n";

    /// Feeds `stream` to a codec in `chunk`-byte reads, as a socket would:
    /// the frames decoded until the end of the stream or the first error.
    fn decode_stream(
        codec: &mut RtspCodec,
        stream: &[u8],
        chunk: usize,
    ) -> (Vec<Frame>, Result<(), CodecError>) {
        let mut buf = BytesMut::new();
        let mut frames = Vec::new();
        for piece in stream.chunks(chunk) {
            buf.extend_from_slice(piece);
            loop {
                match codec.decode(&mut buf) {
                    Ok(Some(frame)) => frames.push(frame),
                    Ok(None) => break,
                    Err(e) => return (frames, Err(e)),
                }
            }
        }
        loop {
            match codec.decode_eof(&mut buf) {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => return (frames, Ok(())),
                Err(e) => return (frames, Err(e)),
            }
        }
    }

    fn decode_in_chunks(
        codec: &mut RtspCodec,
        stream: &[u8],
        chunk: usize,
    ) -> Result<Vec<Frame>, CodecError> {
        let (frames, end) = decode_stream(codec, stream, chunk);
        end.map(|()| frames)
    }

    fn mixed_stream() -> Vec<u8> {
        let mut stream = BytesMut::new();
        let mut codec = RtspCodec::default();
        stream.extend_from_slice(DESCRIBE);
        codec
            .encode(
                Interleaved {
                    channel: 1,
                    payload: &[0x80, 0xc9, 0, 1],
                },
                &mut stream,
            )
            .unwrap();
        stream.extend_from_slice(b"\r\n"); // a stray keep-alive CRLF
        stream.extend_from_slice(REPLY);
        codec
            .encode(
                Interleaved {
                    channel: 0,
                    payload: &[7; 1400],
                },
                &mut stream,
            )
            .unwrap();
        stream.to_vec()
    }

    #[test]
    fn frames_split_across_reads_and_interleaved_between_messages() {
        let stream = mixed_stream();
        for chunk in [1, 2, 3, 7, 64, 1000, stream.len()] {
            let frames = decode_in_chunks(&mut RtspCodec::default(), &stream, chunk).unwrap();
            let [Frame::Request(req), Frame::Interleaved {
                channel: 1,
                payload: rtcp,
            }, Frame::Response(resp), Frame::Interleaved {
                channel: 0,
                payload: rtp,
            }] = frames.as_slice()
            else {
                panic!("chunk {chunk}: {frames:?}");
            };
            assert_eq!(req.method(), Method::Describe);
            assert_eq!(rtcp, &[0x80, 0xc9, 0, 1]);
            assert_eq!(resp.body(), b"v=0\r\n");
            assert_eq!(rtp.len(), 1400);
        }
    }

    #[test]
    fn a_partial_frame_at_end_of_stream_ends_it_quietly() {
        let stream = mixed_stream();
        let frames =
            decode_in_chunks(&mut RtspCodec::default(), &stream[..stream.len() - 1], 100).unwrap();
        assert_eq!(frames.len(), 3);
    }

    #[test]
    fn oversized_messages_are_refused_with_413_and_their_cseq() {
        let mut codec = RtspCodec::new(Limits {
            max_message_bytes: 256,
            max_headers: 16,
        });
        let big = b"ANNOUNCE rtsp://h/x RTSP/1.0\r\nCSeq: 7\r\nContent-Length: 4096\r\n\r\n";
        match decode_in_chunks(&mut codec, big, 10) {
            Err(CodecError::Framing { error, cseq }) => {
                assert_eq!(error.status(), 413);
                assert_eq!(cseq, Some(7));
            }
            other => panic!("{other:?}"),
        }
        // A header block that never ends is cut off at the bound.
        let endless = format!("OPTIONS * RTSP/1.0\r\nCSeq: 3\r\nX: {}", "a".repeat(300));
        match decode_in_chunks(&mut codec, endless.as_bytes(), 50) {
            Err(CodecError::Framing { error, cseq }) => {
                assert_eq!(error, FramingError::TooLarge { limit: 256 });
                assert_eq!(cseq, Some(3));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn garbage_is_refused_with_400_or_505() {
        for (input, status) in [
            (&b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"[..], 400),
            (b"HELLO THERE\r\n\r\n", 400),
            (b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\nNoColon\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 505),
        ] {
            match decode_in_chunks(&mut RtspCodec::default(), input, 4) {
                Err(CodecError::Framing { error, .. }) => {
                    assert_eq!(error.status(), status, "{input:?}")
                }
                other => panic!("{input:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn encodes_messages_that_decode_back() {
        let mut codec = RtspCodec::default();
        let mut buf = BytesMut::new();
        let request = Request::builder(Method::Setup, Version::V1_0)
            .request_uri(rtsp_types::Url::parse("rtsp://h/x/stream=0").unwrap())
            .header(headers::CSEQ, "4")
            .empty();
        codec.encode(&request, &mut buf).unwrap();
        let response = Response::builder(Version::V1_0, StatusCode::Ok)
            .header(headers::CSEQ, "4")
            .build(b"body".to_vec());
        codec.encode(&response, &mut buf).unwrap();
        let Some(Frame::Request(req)) = codec.decode(&mut buf).unwrap() else {
            panic!("no request")
        };
        assert_eq!(req.method(), Method::Setup);
        let Some(Frame::Response(resp)) = codec.decode(&mut buf).unwrap() else {
            panic!("no response")
        };
        assert_eq!(resp.body(), b"body");
        assert!(buf.is_empty());
    }

    proptest::proptest! {
        /// The property the `rtsp_codec` fuzz target checks: reads of any
        /// size give the frames of one read.
        #[test]
        fn read_size_does_not_change_the_frames(
            noise in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256),
            at in 0usize..1600,
            chunk in 1usize..64,
        ) {
            let mut stream = mixed_stream();
            let at = at.min(stream.len());
            stream.splice(at..at, noise);
            let small = || RtspCodec::new(Limits { max_message_bytes: 512, max_headers: 8 });
            let (whole, whole_end) = decode_stream(&mut small(), &stream, stream.len().max(1));
            let (pieces, pieces_end) = decode_stream(&mut small(), &stream, chunk);
            let common = whole.len().min(pieces.len());
            proptest::prop_assert_eq!(&whole[..common], &pieces[..common]);
            if whole_end.is_ok() && pieces_end.is_ok() {
                proptest::prop_assert_eq!(whole, pieces);
            }
        }
    }

    #[test]
    fn refuses_to_frame_an_oversized_payload() {
        let mut buf = BytesMut::new();
        let err = RtspCodec::default()
            .encode(
                Interleaved {
                    channel: 0,
                    payload: &vec![0; 70_000],
                },
                &mut buf,
            )
            .unwrap_err();
        assert!(matches!(
            err,
            CodecError::Framing {
                error: FramingError::TooLarge { limit: 65535 },
                ..
            }
        ));
        assert!(buf.is_empty());
    }
}
