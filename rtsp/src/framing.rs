//! Splitting an RTSP byte stream into messages.
//!
//! One TCP connection carries RTSP requests, responses and, once a TCP
//! interleaved transport is set up, `$`-framed binary RTP/RTCP (RFC 2326
//! §10.12). [`decode`] looks at the front of a receive buffer and returns the
//! first complete [`Frame`] and how many bytes it used, `Ok(None)` when more
//! bytes are needed, or a [`FramingError`] carrying the RTSP status to answer.
//!
//! The header block is checked here (bounds, header count, version, request
//! line, `Content-Length`) before `rtsp-types` parses it, so that errors name
//! what was wrong and an oversized message is refused as soon as its size is
//! known rather than after it has been buffered. Parsing restarts from the
//! front of the buffer on every call; the scan is linear and the buffer is
//! bounded by [`Limits::max_message_bytes`], so a slowly arriving message
//! costs at most a few passes over 64 KiB.
//!
//! Only RTSP/1.0 is accepted: the proxy speaks RFC 2326. Any other
//! `RTSP/x.y` or an `HTTP/x.y` line gives [`FramingError::UnsupportedVersion`]
//! (answer 505).
//!
//! After an error the stream cannot be re-synchronised reliably (the length
//! of a broken message is unknown): answer with [`FramingError::status`]
//! (using [`cseq_hint`] for the `CSeq`) and close the connection.

use rtsp_types::{Message, Request, Response};

/// Bounds applied while decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest RTSP message (header block plus body) accepted, in bytes.
    /// Interleaved binary frames are bounded by their 16-bit length instead.
    pub max_message_bytes: usize,
    /// Largest number of header lines (continuation lines included).
    pub max_headers: usize,
}

impl Default for Limits {
    /// 64 KiB messages with at most 100 header lines.
    fn default() -> Self {
        Limits {
            max_message_bytes: 64 * 1024,
            max_headers: 100,
        }
    }
}

/// One unit read off an RTSP connection.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// An RTSP request (server side).
    Request(Request<Vec<u8>>),
    /// An RTSP response (client side).
    Response(Response<Vec<u8>>),
    /// A `$`-framed binary packet on an interleaved channel.
    Interleaved {
        /// The interleaved channel number.
        channel: u8,
        /// The RTP or RTCP packet.
        payload: Vec<u8>,
    },
}

/// Why the front of a buffer is not a valid message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    /// The message is, or will be, larger than [`Limits::max_message_bytes`].
    #[error("message larger than {limit} bytes")]
    TooLarge {
        /// The bound that was exceeded.
        limit: usize,
    },
    /// The header block has more lines than [`Limits::max_headers`].
    #[error("more than {limit} header lines")]
    TooManyHeaders {
        /// The bound that was exceeded.
        limit: usize,
    },
    /// The bytes are not an RTSP message; the text names the faulty part.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// A protocol version other than RTSP/1.0.
    #[error("unsupported protocol version {0:?}")]
    UnsupportedVersion(String),
}

impl FramingError {
    /// The RTSP status code to answer with: 413 for too large, 400 for too
    /// many headers or malformed input, 505 for an unsupported version.
    pub fn status(&self) -> u16 {
        match self {
            FramingError::TooLarge { .. } => 413,
            FramingError::TooManyHeaders { .. } | FramingError::Malformed(_) => 400,
            FramingError::UnsupportedVersion(_) => 505,
        }
    }
}

/// Decodes the first complete frame at the front of `buf`.
///
/// Returns the frame and the number of bytes it used (leading stray CRLFs
/// included), `Ok(None)` if `buf` holds only part of a frame, or an error.
pub fn decode(buf: &[u8], limits: &Limits) -> Result<Option<(Frame, usize)>, FramingError> {
    let skipped = stray_crlf_len(buf);
    let rest = &buf[skipped..];
    match rest.first() {
        None => Ok(None),
        Some(b'$') => Ok(decode_interleaved(rest).map(|(f, n)| (f, skipped + n))),
        Some(_) => Ok(decode_message(rest, limits)?.map(|(f, n)| (f, skipped + n))),
    }
}

/// Appends an interleaved frame (`$`, channel, 16-bit length, payload) to
/// `out`.
///
/// Payloads longer than 65535 bytes cannot be framed; they are rejected with
/// [`FramingError::TooLarge`] and nothing is written.
pub fn encode_interleaved(
    channel: u8,
    payload: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), FramingError> {
    let header = interleaved_header(channel, payload.len())?;
    out.reserve(4 + payload.len());
    out.extend_from_slice(&header);
    out.extend_from_slice(payload);
    Ok(())
}

/// The 4 bytes that precede an interleaved payload of `len` bytes, or
/// [`FramingError::TooLarge`] if `len` does not fit the 16-bit length.
pub fn interleaved_header(channel: u8, len: usize) -> Result<[u8; 4], FramingError> {
    let len = u16::try_from(len).map_err(|_| FramingError::TooLarge {
        limit: usize::from(u16::MAX),
    })?;
    let [hi, lo] = len.to_be_bytes();
    Ok([b'$', channel, hi, lo])
}

/// Finds a `CSeq` header in the (possibly broken) message at the front of
/// `buf`, so that an error answer can carry it.
pub fn cseq_hint(buf: &[u8]) -> Option<u32> {
    let rest = &buf[stray_crlf_len(buf)..];
    let head = &rest[..find(rest, b"\r\n\r\n").unwrap_or(rest.len())];
    head.split(|&b| b == b'\n').skip(1).find_map(|line| {
        let line = std::str::from_utf8(line).ok()?;
        let (name, value) = line.split_once(':')?;
        if name.trim().eq_ignore_ascii_case("cseq") {
            value.trim().parse().ok()
        } else {
            None
        }
    })
}

fn stray_crlf_len(buf: &[u8]) -> usize {
    let mut n = 0;
    while buf[n..].starts_with(b"\r\n") {
        n += 2;
    }
    n
}

fn decode_interleaved(buf: &[u8]) -> Option<(Frame, usize)> {
    let header = buf.get(..4)?;
    let len = usize::from(u16::from_be_bytes([header[2], header[3]]));
    let payload = buf.get(4..4 + len)?;
    Some((
        Frame::Interleaved {
            channel: header[1],
            payload: payload.to_vec(),
        },
        4 + len,
    ))
}

fn decode_message(buf: &[u8], limits: &Limits) -> Result<Option<(Frame, usize)>, FramingError> {
    // The start line can be judged as soon as it is complete, which stops a
    // peer speaking another protocol before it fills the buffer.
    if let Some(end) = find(buf, b"\r\n") {
        check_start_line(&buf[..end])?;
    } else if !buf.iter().all(is_start_line_byte) {
        return Err(FramingError::Malformed(
            "start line contains control bytes".into(),
        ));
    }

    let Some(head_end) = find(buf, b"\r\n\r\n") else {
        // Complete header lines so far: every line feed but the start line's.
        if count_newlines(buf).saturating_sub(1) > limits.max_headers {
            return Err(FramingError::TooManyHeaders {
                limit: limits.max_headers,
            });
        }
        if buf.len() >= limits.max_message_bytes {
            return Err(FramingError::TooLarge {
                limit: limits.max_message_bytes,
            });
        }
        return Ok(None);
    };
    let head_len = head_end + 4;
    let head = &buf[..head_end];
    // `head` has no trailing CRLF: one line feed per header line.
    if count_newlines(head) > limits.max_headers {
        return Err(FramingError::TooManyHeaders {
            limit: limits.max_headers,
        });
    }
    let content_length = check_headers(head)?;
    let total = head_len
        .checked_add(content_length)
        .filter(|&t| t <= limits.max_message_bytes)
        .ok_or(FramingError::TooLarge {
            limit: limits.max_message_bytes,
        })?;
    if buf.len() < total {
        return Ok(None);
    }

    match Message::<Vec<u8>>::parse(&buf[..total]) {
        Ok((Message::Request(r), n)) if n == total => Ok(Some((Frame::Request(r), n))),
        Ok((Message::Response(r), n)) if n == total => Ok(Some((Frame::Response(r), n))),
        Ok(_) => Err(FramingError::Malformed(
            "message length disagrees with Content-Length".into(),
        )),
        // The pre-checks above make this rare: a request URI that is not a
        // URL, or a header value that is not UTF-8.
        Err(_) => Err(FramingError::Malformed(
            "request URI or header value not parseable".into(),
        )),
    }
}

/// Checks a request line (`METHOD SP URI SP RTSP/1.0`) or a status line
/// (`RTSP/1.0 SP code SP reason`).
fn check_start_line(line: &[u8]) -> Result<(), FramingError> {
    let line = std::str::from_utf8(line)
        .map_err(|_| FramingError::Malformed("start line is not UTF-8".into()))?;
    if line.contains(['\r', '\n']) {
        return Err(FramingError::Malformed(
            "start line has a bare CR or LF".into(),
        ));
    }
    if let Some(version) = line.split(' ').next().filter(|v| is_version_token(v)) {
        // Status line.
        check_version(version)?;
        let mut parts = line.splitn(3, ' ').skip(1);
        let code = parts.next().unwrap_or("");
        if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) || parts.next().is_none() {
            return Err(FramingError::Malformed(format!("status line {line:?}")));
        }
        return Ok(());
    }
    let parts: Vec<&str> = line.split(' ').collect();
    let [method, uri, version] = parts.as_slice() else {
        return Err(FramingError::Malformed(format!(
            "request line {:?} does not have three parts",
            truncate(line)
        )));
    };
    if method.is_empty() || !method.bytes().all(is_token_byte) {
        return Err(FramingError::Malformed(format!(
            "method {:?}",
            truncate(method)
        )));
    }
    if uri.is_empty() {
        return Err(FramingError::Malformed("empty request URI".into()));
    }
    if !is_version_token(version) {
        return Err(FramingError::Malformed(format!(
            "request line {:?} has no protocol version",
            truncate(line)
        )));
    }
    check_version(version)
}

fn is_version_token(s: &str) -> bool {
    s.starts_with("RTSP/") || s.starts_with("HTTP/")
}

fn check_version(v: &str) -> Result<(), FramingError> {
    if v == "RTSP/1.0" {
        Ok(())
    } else {
        Err(FramingError::UnsupportedVersion(truncate(v).to_string()))
    }
}

/// Checks each header line and returns the `Content-Length` (0 if absent).
fn check_headers(head: &[u8]) -> Result<usize, FramingError> {
    let mut content_length = None;
    for (i, line) in split_crlf(head).enumerate().skip(1) {
        if line.contains(&b'\r') || line.contains(&b'\n') {
            return Err(FramingError::Malformed(format!(
                "header line {i} has a bare CR or LF"
            )));
        }
        if line.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
            continue; // continuation of the previous header's value
        }
        let line = std::str::from_utf8(line)
            .map_err(|_| FramingError::Malformed(format!("header line {i} is not UTF-8")))?;
        let Some((name, value)) = line.split_once(':') else {
            return Err(FramingError::Malformed(format!(
                "header line {i} has no colon"
            )));
        };
        if name.is_empty() || !name.bytes().all(is_token_byte) {
            return Err(FramingError::Malformed(format!(
                "header name {:?}",
                truncate(name)
            )));
        }
        if name.eq_ignore_ascii_case("content-length") {
            let n = value.trim().parse::<usize>().map_err(|_| {
                FramingError::Malformed(format!("Content-Length {:?}", truncate(value.trim())))
            })?;
            if content_length.is_some_and(|c| c != n) {
                return Err(FramingError::Malformed(
                    "conflicting Content-Length headers".into(),
                ));
            }
            content_length = Some(n);
        }
    }
    Ok(content_length.unwrap_or(0))
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_start_line_byte(b: &u8) -> bool {
    *b >= 0x20 || *b == b'\r' || *b == b'\t'
}

/// Splits at each CRLF.
fn split_crlf(buf: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(buf);
    std::iter::from_fn(move || {
        let r = rest?;
        match find(r, b"\r\n") {
            Some(at) => {
                rest = Some(&r[at + 2..]);
                Some(&r[..at])
            }
            None => rest.take(),
        }
    })
}

fn count_newlines(buf: &[u8]) -> usize {
    buf.iter().filter(|&&b| b == b'\n').count()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Keeps error texts short when a peer sends a huge line.
fn truncate(s: &str) -> &str {
    let mut end = s.len().min(64);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rtsp_types::{headers, Method, StatusCode};

    const FFMPEG_DESCRIBE: &[u8] = b"DESCRIBE rtsp://127.0.0.1:8554/cams/front RTSP/1.0\r\n\
Accept: application/sdp\r\n\
CSeq: 2\r\n\
User-Agent: Lavf59.27.100\r\n\
\r\n";

    const GST_SETUP_REPLY: &[u8] = b"RTSP/1.0 200 OK\r\n\
CSeq: 3\r\n\
Transport: RTP/AVP;unicast;client_port=40000-40001;server_port=50000-50001;ssrc=6A1B0C2D;mode=\"PLAY\"\r\n\
Server: GStreamer RTSP server\r\n\
Session: BDXkM9DVcaW2RfHd;timeout=60\r\n\
Date: Tue, 06 Feb 2024 10:00:00 GMT\r\n\
\r\n";

    fn limits() -> Limits {
        Limits::default()
    }

    #[test]
    fn decodes_an_ffmpeg_request() {
        let (frame, n) = decode(FFMPEG_DESCRIBE, &limits()).unwrap().unwrap();
        assert_eq!(n, FFMPEG_DESCRIBE.len());
        let Frame::Request(req) = frame else {
            panic!("not a request")
        };
        assert_eq!(req.method(), Method::Describe);
        assert_eq!(req.header(&headers::CSEQ).unwrap().as_str(), "2");
        assert_eq!(
            req.request_uri().unwrap().as_str(),
            "rtsp://127.0.0.1:8554/cams/front"
        );
    }

    #[test]
    fn decodes_a_response_with_body_and_leaves_the_rest() {
        let mut buf =
            b"\r\n\r\nRTSP/1.0 200 OK\r\nCSeq: 1\r\nContent-Length: 5\r\n\r\nv=0\r\n".to_vec();
        buf.extend_from_slice(&[b'$', 1, 0, 2, 9, 9, b'$']);
        let (frame, n) = decode(&buf, &limits()).unwrap().unwrap();
        let Frame::Response(resp) = frame else {
            panic!("not a response")
        };
        assert_eq!(resp.status(), StatusCode::Ok);
        assert_eq!(resp.body(), b"v=0\r\n");
        let (frame, m) = decode(&buf[n..], &limits()).unwrap().unwrap();
        assert_eq!(
            frame,
            Frame::Interleaved {
                channel: 1,
                payload: vec![9, 9]
            }
        );
        assert_eq!(decode(&buf[n + m..], &limits()).unwrap(), None);
    }

    #[test]
    fn every_prefix_is_incomplete() {
        for msg in [FFMPEG_DESCRIBE, GST_SETUP_REPLY] {
            for end in 0..msg.len() {
                assert_eq!(decode(&msg[..end], &limits()), Ok(None), "prefix {end}");
            }
        }
        assert_eq!(decode(&[b'$', 0, 0, 10, 1, 2], &limits()), Ok(None));
    }

    #[test]
    fn refuses_oversized_messages() {
        let small = Limits {
            max_message_bytes: 100,
            max_headers: 10,
        };
        let long = format!("OPTIONS * RTSP/1.0\r\nX-Pad: {}", "a".repeat(200));
        assert_eq!(
            decode(long.as_bytes(), &small),
            Err(FramingError::TooLarge { limit: 100 })
        );
        // Refused from Content-Length alone, before the body arrives.
        let big_body = b"ANNOUNCE rtsp://h/x RTSP/1.0\r\nCSeq: 9\r\nContent-Length: 1000\r\n\r\n";
        let err = decode(big_body, &small).unwrap_err();
        assert_eq!(err.status(), 413);
        assert_eq!(cseq_hint(big_body), Some(9));
        let huge =
            b"ANNOUNCE rtsp://h/x RTSP/1.0\r\nContent-Length: 99999999999999999999999\r\n\r\n";
        assert_eq!(decode(huge, &small).unwrap_err().status(), 400);
    }

    #[test]
    fn refuses_too_many_headers_early() {
        let l = Limits {
            max_message_bytes: 1 << 20,
            max_headers: 3,
        };
        let ok = b"OPTIONS * RTSP/1.0\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n";
        assert!(decode(ok, &l).unwrap().is_some());
        let many = b"OPTIONS * RTSP/1.0\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n";
        assert_eq!(
            decode(many, &l),
            Err(FramingError::TooManyHeaders { limit: 3 })
        );
        let unfinished = b"OPTIONS * RTSP/1.0\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\nE";
        assert_eq!(
            decode(unfinished, &l),
            Err(FramingError::TooManyHeaders { limit: 3 })
        );
    }

    #[test]
    fn names_malformed_parts() {
        let cases: &[(&[u8], &str)] = &[
            (b"HELLO\r\n\r\n", "three parts"),
            (b"OPTIONS * FOO/1.0\r\n\r\n", "no protocol version"),
            (b"OPTIONS * RTSP/1.0\r\nNoColon\r\n\r\n", "no colon"),
            (
                b"OPTIONS * RTSP/1.0\r\nContent-Length: x\r\n\r\n",
                "Content-Length",
            ),
            (b"RTSP/1.0 2000 OK\r\n\r\n", "status line"),
            (b"OPT\x01IONS", "control bytes"),
            (b"OPTIONS * RTSP/1.0\nCSeq: 1\r\n\r\n", "bare CR or LF"),
            (
                b"OPTIONS * RTSP/1.0\r\nCSeq: 1\nA: b\r\n\r\n",
                "bare CR or LF",
            ),
            (
                b"DESCRIBE not-a-url RTSP/1.0\r\nCSeq: 4\r\n\r\n",
                "request URI",
            ),
        ];
        for (input, what) in cases {
            match decode(input, &limits()) {
                Err(FramingError::Malformed(m)) => {
                    assert!(m.contains(what), "{m:?} lacks {what:?}")
                }
                other => panic!("{input:?}: {other:?}"),
            }
        }
        assert_eq!(
            cseq_hint(b"DESCRIBE not-a-url RTSP/1.0\r\nCSeq: 4\r\n\r\n"),
            Some(4)
        );
    }

    #[test]
    fn refuses_other_versions() {
        for input in [
            &b"OPTIONS * RTSP/2.0\r\n"[..],
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
            b"RTSP/1.1 200 OK\r\n\r\n",
        ] {
            let err = decode(input, &limits()).unwrap_err();
            assert!(
                matches!(err, FramingError::UnsupportedVersion(_)),
                "{err:?}"
            );
            assert_eq!(err.status(), 505);
        }
    }

    #[test]
    fn header_continuation_lines_are_joined() {
        let msg = b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\nRequire: a,\r\n b\r\n\r\n";
        let (Frame::Request(req), _) = decode(msg, &limits()).unwrap().unwrap() else {
            panic!()
        };
        assert_eq!(req.header(&headers::REQUIRE).unwrap().as_str(), "a, b");
    }

    #[test]
    fn interleaved_round_trip() {
        let mut out = Vec::new();
        encode_interleaved(3, &[1, 2, 3], &mut out).unwrap();
        assert_eq!(out, [b'$', 3, 0, 3, 1, 2, 3]);
        assert!(encode_interleaved(0, &vec![0; 70_000], &mut out).is_err());
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let small = Limits { max_message_bytes: 512, max_headers: 8 };
            if let Ok(Some((_, n))) = decode(&bytes, &small) {
                prop_assert!(n > 0 && n <= bytes.len());
            }
        }

        #[test]
        fn decode_never_panics_on_near_messages(
            prefix in proptest::sample::select(vec![FFMPEG_DESCRIBE, GST_SETUP_REPLY]),
            cut in 0usize..300,
            noise in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let mut buf = prefix[..cut.min(prefix.len())].to_vec();
            buf.extend_from_slice(&noise);
            let _ = decode(&buf, &limits());
            let _ = cseq_hint(&buf);
        }

        #[test]
        fn split_anywhere_gives_the_same_frames(split in 0usize..400) {
            let mut stream = FFMPEG_DESCRIBE.to_vec();
            encode_interleaved(0, &[7; 33], &mut stream).unwrap();
            stream.extend_from_slice(GST_SETUP_REPLY);
            let split = split.min(stream.len());
            // Feed in two chunks, as a socket would.
            let mut buf = stream[..split].to_vec();
            let mut frames = Vec::new();
            let mut fed_rest = false;
            loop {
                match decode(&buf, &limits()).unwrap() {
                    Some((f, n)) => { frames.push(f); buf.drain(..n); }
                    None if !fed_rest => { buf.extend_from_slice(&stream[split..]); fed_rest = true; }
                    None => break,
                }
            }
            prop_assert_eq!(frames.len(), 3);
            prop_assert!(buf.is_empty());
        }
    }
}
