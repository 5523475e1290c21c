//! A raw RTSP client, for scripted and malformed requests, and an RTP
//! packet parser for what it receives.

use std::io::{self, Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::time::{Duration, Instant};

/// An RTSP response (or a request the server sent us).
#[derive(Clone, Debug)]
pub struct RtspMessage {
    /// `RTSP/1.0 200 OK`, or a request line.
    pub start_line: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RtspMessage {
    /// The status code of a response (0 for a request).
    pub fn status(&self) -> u16 {
        let mut parts = self.start_line.split(' ');
        match (parts.next(), parts.next()) {
            (Some(v), Some(code)) if v.starts_with("RTSP/") => code.parse().unwrap_or(0),
            _ => 0,
        }
    }

    /// The first header of that name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The session id from `Session:`, without `;timeout=`.
    pub fn session(&self) -> Option<&str> {
        Some(self.header("Session")?.split(';').next()?.trim())
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The absolute control URL of each media section of an SDP body,
    /// resolved against `Content-Base` (or `request_url`).
    pub fn sdp_track_urls(&self, request_url: &str) -> Vec<String> {
        let base = self
            .header("Content-Base")
            .or(self.header("Content-Location"))
            .unwrap_or(request_url);
        let mut urls = Vec::new();
        let mut in_media = false;
        for line in self.body_text().lines() {
            let line = line.trim();
            if line.starts_with("m=") {
                in_media = true;
            } else if let (true, Some(control)) = (in_media, line.strip_prefix("a=control:")) {
                urls.push(if control.contains("://") {
                    control.to_string()
                } else if base.ends_with('/') {
                    format!("{base}{control}")
                } else {
                    format!("{base}/{control}")
                });
            }
        }
        urls
    }
}

/// What arrived next on an RTSP connection.
#[derive(Debug)]
pub enum Received {
    Message(RtspMessage),
    /// `$`-framed RTP/RTCP on an interleaved channel.
    Interleaved {
        channel: u8,
        data: Vec<u8>,
    },
}

/// A blocking RTSP connection. Reads time out after 10 s (`io::Error`).
pub struct RtspConn {
    stream: TcpStream,
    buf: Vec<u8>,
    cseq: u32,
}

/// Largest message head we accept before calling the peer broken.
const MAX_HEAD: usize = 256 * 1024;

impl RtspConn {
    pub fn connect(port: u16) -> RtspConn {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("connect to 127.0.0.1:{port}: {e}"));
        RtspConn::over(stream)
    }

    /// A client on a connected stream (10 s read timeout, no Nagle).
    fn over(stream: TcpStream) -> RtspConn {
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream.set_nodelay(true).unwrap();
        RtspConn {
            stream,
            buf: Vec::new(),
            cseq: 0,
        }
    }

    /// As [`RtspConn::connect`], from another loopback address (e.g.
    /// `127.0.0.2`), so that the daemon sees another player IP.
    pub fn connect_from(port: u16, source: std::net::Ipv4Addr) -> RtspConn {
        use nix::sys::socket::{
            bind, connect, socket, AddressFamily, SockFlag, SockType, SockaddrIn,
        };
        use std::os::fd::AsRawFd;
        let fd = socket(
            AddressFamily::Inet,
            SockType::Stream,
            SockFlag::empty(),
            None,
        )
        .expect("socket");
        bind(
            fd.as_raw_fd(),
            &SockaddrIn::from(std::net::SocketAddrV4::new(source, 0)),
        )
        .unwrap_or_else(|e| panic!("bind {source}: {e}"));
        let server = SockaddrIn::from(std::net::SocketAddrV4::new(
            std::net::Ipv4Addr::LOCALHOST,
            port,
        ));
        connect(fd.as_raw_fd(), &server)
            .unwrap_or_else(|e| panic!("connect from {source} to port {port}: {e}"));
        RtspConn::over(TcpStream::from(fd))
    }

    pub fn set_read_timeout(&self, limit: Duration) {
        self.stream.set_read_timeout(Some(limit)).unwrap();
    }

    /// Sends bytes as they are (malformed requests, pipelining, ...).
    pub fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Sends a well-formed request with the next CSeq and the given extra
    /// headers, and returns its response, skipping interleaved packets.
    pub fn request(&mut self, method: &str, url: &str, headers: &[(&str, &str)]) -> RtspMessage {
        self.cseq += 1;
        let mut req = format!("{method} {url} RTSP/1.0\r\nCSeq: {}\r\n", self.cseq);
        for (name, value) in headers {
            req += &format!("{name}: {value}\r\n");
        }
        req += "User-Agent: streamcache-tests\r\n\r\n";
        self.send_raw(req.as_bytes())
            .unwrap_or_else(|e| panic!("send {method} {url}: {e}"));
        let resp = self
            .read_response()
            .unwrap_or_else(|e| panic!("response to {method} {url}: {e}"));
        assert_eq!(
            resp.header("CSeq").map(str::trim),
            Some(self.cseq.to_string().as_str()),
            "response to {method} {url} has the wrong CSeq: {resp:?}"
        );
        resp
    }

    /// DESCRIBE `url` (panics unless 200), then SETUP of its first track
    /// over TCP, interleaved on channels 0-1, as a new session: both
    /// answers, the SETUP's status left to the caller (it may be refused).
    pub fn describe_and_setup_first(&mut self, url: &str) -> (RtspMessage, RtspMessage) {
        let describe = self.request("DESCRIBE", url, &[]);
        assert_eq!(describe.status(), 200, "DESCRIBE {url}: {describe:?}");
        let track = describe.sdp_track_urls(url)[0].clone();
        let setup = self.request(
            "SETUP",
            &track,
            &[("Transport", "RTP/AVP/TCP;unicast;interleaved=0-1")],
        );
        (describe, setup)
    }

    /// DESCRIBE `url`, SETUP every track (RTP/AVP/TCP interleaved on
    /// channels 2i, 2i+1, or UDP to `udp[i]`'s ports when `udp` is given),
    /// then PLAY: returns the session id and the PLAY response. Panics on
    /// any answer but 200.
    pub fn play(
        &mut self,
        url: &str,
        udp: Option<&[(UdpSocket, UdpSocket)]>,
    ) -> (String, RtspMessage) {
        let describe = self.request("DESCRIBE", url, &[("Accept", "application/sdp")]);
        assert_eq!(describe.status(), 200, "DESCRIBE {url}: {describe:?}");
        let tracks = describe.sdp_track_urls(url);
        assert!(!tracks.is_empty(), "no tracks: {}", describe.body_text());
        let mut session = String::new();
        for (i, track) in tracks.iter().enumerate() {
            let transport = match udp {
                Some(pairs) => {
                    let Some((rtp, rtcp)) = pairs.get(i) else {
                        break;
                    };
                    format!(
                        "RTP/AVP;unicast;client_port={}-{}",
                        rtp.local_addr().unwrap().port(),
                        rtcp.local_addr().unwrap().port()
                    )
                }
                None => format!("RTP/AVP/TCP;unicast;interleaved={}-{}", 2 * i, 2 * i + 1),
            };
            let mut headers = vec![("Transport", transport.as_str())];
            if !session.is_empty() {
                headers.push(("Session", &session));
            }
            let setup = self.request("SETUP", track, &headers);
            assert_eq!(setup.status(), 200, "SETUP {track}: {setup:?}");
            session = setup.session().expect("SETUP gives a session").to_string();
        }
        let play = self.request("PLAY", url, &[("Session", &session)]);
        assert_eq!(play.status(), 200, "PLAY {url}: {play:?}");
        (session, play)
    }

    /// The next response, skipping interleaved packets and server requests.
    pub fn read_response(&mut self) -> io::Result<RtspMessage> {
        loop {
            if let Received::Message(m) = self.read()? {
                if m.status() != 0 {
                    return Ok(m);
                }
            }
        }
    }

    /// The next interleaved packet, skipping RTSP messages.
    pub fn read_interleaved(&mut self) -> io::Result<(u8, Vec<u8>)> {
        loop {
            if let Received::Interleaved { channel, data } = self.read()? {
                return Ok((channel, data));
            }
        }
    }

    /// Whether the server closes the connection within `limit`. What
    /// arrives meanwhile is dropped whole message by whole packet, so the
    /// framing of what follows stays intact (a partial packet stays
    /// buffered for the next read).
    pub fn closed_within(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        let mut chunk = [0u8; 4096];
        let closed = loop {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                break false;
            };
            self.set_read_timeout(left.max(Duration::from_millis(1)));
            match self.stream.read(&mut chunk) {
                Ok(0) => break true,
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    loop {
                        match self.parse_buffered() {
                            Ok(Some(_)) => {}
                            Ok(None) => break,
                            // Garbage that never frames is dropped as a whole.
                            Err(_) => {
                                self.buf.clear();
                                break;
                            }
                        }
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    break false
                }
                Err(_) => break true, // reset
            }
        };
        self.set_read_timeout(Duration::from_secs(10));
        closed
    }

    /// The next thing on the wire: an RTSP message or an interleaved packet.
    /// `UnexpectedEof` when the server closed the connection.
    pub fn read(&mut self) -> io::Result<Received> {
        loop {
            if let Some(received) = self.parse_buffered()? {
                return Ok(received);
            }
            let mut chunk = [0u8; 16 * 1024];
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "server closed the connection ({} bytes unparsed)",
                        self.buf.len()
                    ),
                ));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    fn parse_buffered(&mut self) -> io::Result<Option<Received>> {
        if self.buf.first() == Some(&b'$') {
            if self.buf.len() < 4 {
                return Ok(None);
            }
            let len = u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize;
            if self.buf.len() < 4 + len {
                return Ok(None);
            }
            let channel = self.buf[1];
            let data = self.buf[4..4 + len].to_vec();
            self.buf.drain(..4 + len);
            return Ok(Some(Received::Interleaved { channel, data }));
        }
        let Some(head_len) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            if self.buf.len() > MAX_HEAD {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "RTSP head too long",
                ));
            }
            return Ok(None);
        };
        let head = String::from_utf8_lossy(&self.buf[..head_len]).into_owned();
        let mut lines = head.split("\r\n");
        let start_line = lines.next().unwrap_or_default().to_string();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
            .collect();
        let body_len = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("Content-Length"))
            .and_then(|(_, v)| v.parse::<usize>().ok())
            .unwrap_or(0);
        let total = head_len + 4 + body_len;
        if self.buf.len() < total {
            return Ok(None);
        }
        let body = self.buf[head_len + 4..total].to_vec();
        self.buf.drain(..total);
        Ok(Some(Received::Message(RtspMessage {
            start_line,
            headers,
            body,
        })))
    }
}

/// The fixed part of an RTP packet (RFC 3550) and its payload.
#[derive(Clone, Debug)]
pub struct Rtp<'a> {
    pub payload_type: u8,
    pub marker: bool,
    pub sequence: u16,
    pub timestamp: u32,
    pub ssrc: u32,
    pub payload: &'a [u8],
}

impl<'a> Rtp<'a> {
    /// `None` for anything that is not RTP version 2 (RTCP included).
    pub fn parse(p: &'a [u8]) -> Option<Rtp<'a>> {
        if p.len() < 12 || p[0] >> 6 != 2 || (200..=204).contains(&p[1]) {
            return None;
        }
        let csrcs = (p[0] & 0x0f) as usize;
        let mut start = 12 + 4 * csrcs;
        if p[0] & 0x10 != 0 {
            // header extension: 4 bytes + length in 32-bit words
            let ext = p.get(start + 2..start + 4)?;
            start += 4 + 4 * u16::from_be_bytes([ext[0], ext[1]]) as usize;
        }
        let mut end = p.len();
        if p[0] & 0x20 != 0 {
            end = end.checked_sub(*p.last()? as usize)?; // padding
        }
        Some(Rtp {
            payload_type: p[1] & 0x7f,
            marker: p[1] & 0x80 != 0,
            sequence: u16::from_be_bytes([p[2], p[3]]),
            timestamp: u32::from_be_bytes([p[4], p[5], p[6], p[7]]),
            ssrc: u32::from_be_bytes([p[8], p[9], p[10], p[11]]),
            payload: p.get(start..end)?,
        })
    }

    /// The H.264 NAL unit type this packet starts (RFC 6184): the first
    /// aggregated unit of a STAP-A, the fragmented unit of a starting FU-A;
    /// `None` for a FU-A continuation. 5 = IDR, 7 = SPS, 8 = PPS.
    pub fn h264_nal_type(&self) -> Option<u8> {
        let first = *self.payload.first()? & 0x1f;
        match first {
            24 => Some(*self.payload.get(3)? & 0x1f), // STAP-A: skip the 2-byte size
            28 => {
                let fu = *self.payload.get(1)?;
                (fu & 0x80 != 0).then_some(fu & 0x1f)
            }
            t => Some(t),
        }
    }

    /// Whether this packet starts an IDR access unit or its parameter sets.
    pub fn starts_h264_keyframe(&self) -> bool {
        matches!(self.h264_nal_type(), Some(5 | 7 | 8))
    }
}
