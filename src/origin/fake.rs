//! A scripted in-process RTSP origin for the origin client's unit tests.
//!
//! It speaks just enough RTSP 1.0 (through the same framed codec) to
//! DESCRIBE an H.264 + AAC presentation, SETUP over UDP or TCP, PLAY a
//! burst of RTP packets, and then end the way a test asks. Every request is
//! logged so tests can assert what the client sent.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use streamcache_rtsp::auth::{basic_challenge, digest_challenge, Authorization, DigestAlgorithm};
use streamcache_rtsp::codec::RtspCodec;
use streamcache_rtsp::framing::{encode_interleaved, Frame};
use streamcache_rtsp::rtp::build_bye;
use streamcache_rtsp::rtsp_types::{headers, Method, Request};
use streamcache_rtsp::transport::{LowerTransport, TransportSpec};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio_util::codec::FramedRead;

pub const SDP: &str = "v=0\r\n\
o=- 1 1 IN IP4 127.0.0.1\r\n\
s=fake\r\n\
t=0 0\r\n\
a=range:npt=0-20.000\r\n\
a=control:*\r\n\
m=video 0 RTP/AVP 96\r\n\
a=rtpmap:96 H264/90000\r\n\
a=control:stream=0\r\n\
m=audio 0 RTP/AVP 97\r\n\
a=rtpmap:97 MPEG4-GENERIC/48000/2\r\n\
a=control:stream=1\r\n";

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    None,
    Basic,
    Digest,
}

/// What happens after the burst of packets.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum After {
    /// Nothing: the session stays open.
    Idle,
    /// RTCP BYE on every track.
    Bye,
    /// RTCP BYE on every track, then one more RTP packet per track: what a
    /// client sees when it reads a BYE (RTCP socket) before the last RTP
    /// packets (RTP socket).
    ByeBeforeLastPacket,
    /// As `ByeBeforeLastPacket`, then the TCP connection is closed.
    ByeBeforeLastPacketThenClose,
    /// The TCP connection is closed.
    Close,
}

#[derive(Clone)]
pub struct Script {
    pub auth: Auth,
    pub describe_status: u16,
    /// Answer 461 to UDP SETUPs.
    pub refuse_udp: bool,
    /// Accept UDP SETUPs but never send anything over UDP.
    pub silent_udp: bool,
    /// Do not answer requests at all.
    pub mute: bool,
    pub packets: usize,
    pub after: After,
    pub session_timeout: u32,
    /// Cache headers of a DESCRIBE answer, each line ending in CRLF.
    pub cache_headers: &'static str,
    /// Answer 304 to a DESCRIBE whose `If-Modified-Since` equals the
    /// `Last-Modified` in `cache_headers`.
    pub conditional: bool,
}

pub const CACHE_HEADERS: &str = "Last-Modified: Tue, 06 Feb 2024 10:00:00 GMT\r\nETag: \"abc\"\r\nCache-Control: max-age=60\r\n";

impl Default for Script {
    fn default() -> Self {
        Script {
            auth: Auth::None,
            describe_status: 200,
            refuse_udp: false,
            silent_udp: false,
            mute: false,
            packets: 10,
            after: After::Idle,
            session_timeout: 60,
            cache_headers: CACHE_HEADERS,
            conditional: true,
        }
    }
}

pub const USER: &str = "viewer";
pub const PASSWORD: &str = "hunter2-secret";
const REALM: &str = "fake-origin";
const NONCE: &str = "0123456789abcdef";

pub struct FakeOrigin {
    pub addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
}

impl FakeOrigin {
    pub async fn start(script: Script) -> FakeOrigin {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let log2 = Arc::clone(&log);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, script.clone(), Arc::clone(&log2)));
            }
        });
        FakeOrigin { addr, log }
    }

    pub fn url(&self) -> url::Url {
        url::Url::parse(&format!("rtsp://{}/test", self.addr)).unwrap()
    }

    /// Every request as "METHOD transport-or-empty".
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    pub fn count(&self, prefix: &str) -> usize {
        self.log().iter().filter(|l| l.starts_with(prefix)).count()
    }
}

fn rtp_packet(pt: u8, seq: u16) -> Vec<u8> {
    let mut p = vec![0x80, pt, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7];
    p[2..4].copy_from_slice(&seq.to_be_bytes());
    p[4..8].copy_from_slice(&(u32::from(seq) * 3000).to_be_bytes());
    p.extend_from_slice(&[0x65, 0x88, 0x80, 0x00]);
    p
}

enum Sink {
    Udp {
        socket: Arc<UdpSocket>,
        rtp: SocketAddr,
        rtcp: SocketAddr,
    },
    Tcp {
        rtp: u8,
        rtcp: u8,
    },
}

async fn serve(stream: TcpStream, script: Script, log: Arc<Mutex<Vec<String>>>) {
    let (rd, mut wr) = stream.into_split();
    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Vec<u8>>();
    tokio::spawn(async move {
        while let Some(bytes) = out_rx.recv().await {
            if bytes.is_empty() || wr.write_all(&bytes).await.is_err() {
                break; // empty = close
            }
        }
        let _ = wr.shutdown().await;
    });
    let mut frames = FramedRead::new(rd, RtspCodec::default());
    let mut sinks: Vec<Sink> = Vec::new();
    loop {
        let req = loop {
            match frames.next().await {
                Some(Ok(Frame::Request(r))) => break r,
                Some(Ok(_)) => {} // the proxy's RTCP reports
                Some(Err(_)) | None => return,
            }
        };
        let method: &str = req.method().into();
        let transport = req
            .header(&headers::TRANSPORT)
            .map(|v| v.as_str().to_owned());
        let if_modified_since = req
            .header(&headers::IF_MODIFIED_SINCE)
            .map(|v| v.as_str().to_owned());
        log.lock().unwrap().push(format!(
            "{method} {}",
            transport
                .clone()
                .or_else(|| if_modified_since
                    .clone()
                    .map(|d| format!("if-modified-since={d}")))
                .unwrap_or_default()
        ));
        if script.mute {
            continue;
        }
        let cseq = req
            .header(&headers::CSEQ)
            .map(|v| v.as_str().to_owned())
            .unwrap_or_default();
        let reply = |status: u16, extra: &str, body: &str| {
            let mut s = format!("RTSP/1.0 {status} X\r\nCSeq: {cseq}\r\n{extra}");
            if !body.is_empty() {
                s.push_str(&format!("Content-Length: {}\r\n", body.len()));
            }
            s.push_str("\r\n");
            s.push_str(body);
            s.into_bytes()
        };
        if !authorized(&script, &req) {
            let challenge = match script.auth {
                Auth::Digest => digest_challenge(REALM, NONCE, DigestAlgorithm::Md5),
                _ => basic_challenge(REALM),
            };
            let _ = out_tx.send(reply(
                401,
                &format!("WWW-Authenticate: {challenge}\r\n"),
                "",
            ));
            continue;
        }
        let session = format!("Session: fake1234;timeout={}\r\n", script.session_timeout);
        let answer = match req.method() {
            Method::Options => reply(
                200,
                "Public: OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN, GET_PARAMETER\r\n",
                "",
            ),
            Method::Describe if script.describe_status != 200 => {
                reply(script.describe_status, "", "")
            }
            Method::Describe
                if script.conditional
                    && if_modified_since.is_some_and(|d| {
                        script
                            .cache_headers
                            .contains(&format!("Last-Modified: {d}\r\n"))
                    }) =>
            {
                reply(304, script.cache_headers, "")
            }
            Method::Describe => reply(
                200,
                &format!(
                    "Content-Type: application/sdp\r\nContent-Base: rtsp://{}/test/\r\n{}",
                    req.request_uri()
                        .map(|u| format!(
                            "{}:{}",
                            u.host_str().unwrap_or(""),
                            u.port().unwrap_or(554)
                        ))
                        .unwrap_or_default(),
                    script.cache_headers,
                ),
                SDP,
            ),
            Method::Setup => {
                let spec = TransportSpec::parse(transport.as_deref().unwrap_or("")).unwrap();
                match spec.lower {
                    LowerTransport::Udp if script.refuse_udp => reply(461, "", ""),
                    LowerTransport::Udp => {
                        let socket = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
                        let port = socket.local_addr().unwrap().port();
                        let (a, b) = spec.client_port.unwrap();
                        sinks.push(Sink::Udp {
                            socket,
                            rtp: SocketAddr::from(([127, 0, 0, 1], a)),
                            rtcp: SocketAddr::from(([127, 0, 0, 1], b)),
                        });
                        reply(200, &format!("{session}Transport: RTP/AVP;unicast;client_port={a}-{b};server_port={port}-{}\r\n", port + 1), "")
                    }
                    LowerTransport::Tcp => {
                        let (a, b) = spec.interleaved.unwrap();
                        sinks.push(Sink::Tcp { rtp: a, rtcp: b });
                        reply(
                            200,
                            &format!(
                                "{session}Transport: RTP/AVP/TCP;unicast;interleaved={a}-{b}\r\n"
                            ),
                            "",
                        )
                    }
                }
            }
            Method::Play => {
                let _ = out_tx.send(reply(
                    200,
                    &format!("{session}Range: npt=0.000-20.000\r\n"),
                    "",
                ));
                let sinks = std::mem::take(&mut sinks);
                let out = out_tx.clone();
                let script = script.clone();
                tokio::spawn(async move { play(sinks, script, out).await });
                continue;
            }
            _ => reply(200, &session, ""),
        };
        let _ = out_tx.send(answer);
    }
}

fn authorized(script: &Script, req: &Request<Vec<u8>>) -> bool {
    let Some(value) = req.header(&headers::AUTHORIZATION) else {
        return script.auth == Auth::None;
    };
    let method: &str = req.method().into();
    match Authorization::parse(value.as_str()) {
        Ok(a) => a.username() == USER && a.verify(method, REALM, NONCE, PASSWORD),
        Err(_) => false,
    }
}

async fn play(sinks: Vec<Sink>, script: Script, out: mpsc::UnboundedSender<Vec<u8>>) {
    for seq in 0..script.packets {
        for (i, sink) in sinks.iter().enumerate() {
            let packet = rtp_packet(96 + i as u8, seq as u16);
            match sink {
                Sink::Udp { socket, rtp, .. } if !script.silent_udp => {
                    let _ = socket.send_to(&packet, rtp).await;
                }
                Sink::Udp { .. } => {}
                Sink::Tcp { rtp, .. } => {
                    let mut frame = Vec::new();
                    encode_interleaved(*rtp, &packet, &mut frame).unwrap();
                    let _ = out.send(frame);
                }
            }
        }
        if script.packets < 1000 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    match script.after {
        After::Idle => {}
        After::Close => {
            let _ = out.send(Vec::new());
        }
        After::Bye | After::ByeBeforeLastPacket | After::ByeBeforeLastPacketThenClose => {
            for sink in &sinks {
                let bye = build_bye(7);
                match sink {
                    Sink::Udp { socket, rtcp, .. } => {
                        let _ = socket.send_to(&bye, rtcp).await;
                    }
                    Sink::Tcp { rtcp, .. } => {
                        let mut frame = Vec::new();
                        encode_interleaved(*rtcp, &bye, &mut frame).unwrap();
                        let _ = out.send(frame);
                    }
                }
            }
            if script.after != After::Bye {
                tokio::time::sleep(Duration::from_millis(5)).await;
                for (i, sink) in sinks.iter().enumerate() {
                    if let Sink::Udp { socket, rtp, .. } = sink {
                        let last = rtp_packet(96 + i as u8, script.packets as u16);
                        let _ = socket.send_to(&last, rtp).await;
                    }
                }
            }
            if script.after == After::ByeBeforeLastPacketThenClose {
                let _ = out.send(Vec::new());
            }
        }
    }
}
