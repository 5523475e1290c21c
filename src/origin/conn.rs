//! One RTSP control connection to an origin: requests out, frames in.
//!
//! The connection numbers requests (`CSeq`), carries the `Session` once
//! there is one, adds `Authorization` once a challenge has been seen, and
//! reads and writes through the shared framed codec ([`RtspCodec`]). While
//! a response is awaited, interleaved RTP/RTCP frames are handed to a
//! callback so no media is lost during a request.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use streamcache_rtsp::auth::{best_challenge, parse_challenges, ClientAuth, Credentials};
use streamcache_rtsp::codec::{CodecError, Interleaved, RtspCodec};
use streamcache_rtsp::framing::{Frame, Limits};
use streamcache_rtsp::rtsp_types::{
    headers, HeaderName, Method, Request, Response, StatusCode, Version,
};
use tokio::net::TcpStream;
use tokio::time::{timeout, timeout_at, Instant};
use tokio_util::codec::Framed;
use tracing::debug;
use url::Url;

use super::error::{redacted, OriginError};
use super::OriginTarget;

const USER_AGENT: &str = concat!("streamcache/", env!("CARGO_PKG_VERSION"));
const DEFAULT_PORT: u16 = 554;

/// A request to send: method, URL and extra headers (CSeq, Session,
/// Authorization and User-Agent are added by the connection).
#[derive(Debug, Clone)]
pub(crate) struct Req {
    pub method: Method,
    pub url: Url,
    pub headers: Vec<(HeaderName, String)>,
}

impl Req {
    pub fn new(method: Method, url: &Url) -> Self {
        Req {
            method,
            url: url.clone(),
            headers: Vec::new(),
        }
    }

    pub fn header(mut self, name: HeaderName, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
}

pub(crate) struct Connection {
    framed: Framed<TcpStream, RtspCodec>,
    cseq: u32,
    origin: String,
    peer: SocketAddr,
    creds: Option<Credentials>,
    auth: Option<ClientAuth>,
    session: Option<String>,
    response_timeout: Duration,
}

impl Connection {
    /// Connects to the target's host within its connect timeout.
    pub async fn connect(t: &OriginTarget) -> Result<Self, OriginError> {
        let origin = redacted(&t.url);
        let host = t
            .url
            .host_str()
            .ok_or_else(|| OriginError::protocol(&origin, "a URL without a host"))?;
        // IPv6 literals come bracketed from host_str().
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = t.url.port().unwrap_or(DEFAULT_PORT);
        let stream = match timeout(t.connect_timeout, TcpStream::connect((host, port))).await {
            Err(_) => return Err(OriginError::ConnectTimeout { origin }),
            Ok(Err(e)) => {
                return Err(OriginError::Connect {
                    origin,
                    kind: e.kind(),
                    message: e.to_string(),
                })
            }
            Ok(Ok(s)) => s,
        };
        let _ = stream.set_nodelay(true);
        let peer = stream
            .peer_addr()
            .map_err(|e| OriginError::io(&origin, &e))?;
        let creds = t.username.as_ref().map(|u| Credentials {
            username: u.clone(),
            password: t.password.clone().unwrap_or_default(),
        });
        let codec = RtspCodec::new(Limits {
            // A DESCRIBE answer can carry a long SDP; stay bounded anyway.
            max_message_bytes: 256 * 1024,
            max_headers: 128,
        });
        Ok(Connection {
            framed: Framed::with_capacity(stream, codec, 64 * 1024),
            cseq: 0,
            origin,
            peer,
            creds,
            auth: None,
            session: None,
            response_timeout: t.connect_timeout,
        })
    }

    /// The origin URL without credentials, for errors and logs.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The origin's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// Sends `Session: id` with every later request.
    pub fn set_session(&mut self, id: String) {
        self.session = Some(id);
    }

    /// Writes a request and returns its CSeq.
    pub async fn send(&mut self, req: &Req) -> Result<u32, OriginError> {
        self.cseq += 1;
        let mut builder = Request::builder(req.method.clone(), Version::V1_0)
            .request_uri(req.url.clone())
            .header(headers::CSEQ, self.cseq.to_string())
            .header(headers::USER_AGENT, USER_AGENT);
        if let Some(s) = &self.session {
            builder = builder.header(headers::SESSION, s.as_str());
        }
        if let (Some(auth), Some(creds)) = (self.auth.as_mut(), self.creds.as_ref()) {
            let method: &str = (&req.method).into();
            builder = builder.header(
                headers::AUTHORIZATION,
                auth.authorization(creds, method, req.url.as_str()),
            );
        }
        for (name, value) in &req.headers {
            builder = builder.header(name.clone(), value.as_str());
        }
        self.framed
            .send(&builder.empty())
            .await
            .map_err(|e| self.codec_error(e))?;
        Ok(self.cseq)
    }

    /// Writes an interleaved frame (an RTCP report on a TCP transport).
    pub async fn send_interleaved(
        &mut self,
        channel: u8,
        payload: &[u8],
    ) -> Result<(), OriginError> {
        self.framed
            .send(Interleaved { channel, payload })
            .await
            .map_err(|e| self.codec_error(e))
    }

    /// Reads the next frame. Cancel-safe: a frame is only taken out of the
    /// codec's buffer when it is returned.
    pub async fn read_frame(&mut self) -> Result<Frame, OriginError> {
        match self.framed.next().await {
            Some(Ok(frame)) => Ok(frame),
            Some(Err(e)) => Err(self.codec_error(e)),
            None => Err(OriginError::Io {
                origin: self.origin.clone(),
                kind: std::io::ErrorKind::UnexpectedEof,
                message: "closed by the origin".into(),
            }),
        }
    }

    /// A socket error as such; whatever the codec refused (undecodable
    /// input, an unframeable payload) is a protocol error.
    fn codec_error(&self, e: CodecError) -> OriginError {
        match e {
            CodecError::Io(e) => OriginError::io(&self.origin, &e),
            CodecError::Framing { error, .. } => {
                OriginError::protocol(&self.origin, error.to_string())
            }
        }
    }

    /// Sends `req` and waits for its response, passing interleaved frames
    /// that arrive meanwhile to `on_data`. A 401 is answered once with the
    /// challenge (again if the origin says the nonce went stale); a second
    /// refusal is [`OriginError::Unauthorized`]. Other statuses are returned
    /// for the caller to judge.
    pub async fn request(
        &mut self,
        req: &Req,
        mut on_data: impl FnMut(u8, Vec<u8>),
    ) -> Result<Response<Vec<u8>>, OriginError> {
        let mut retried = false;
        loop {
            let cseq = self.send(req).await?;
            let deadline = Instant::now() + self.response_timeout;
            let resp = loop {
                let frame = timeout_at(deadline, self.read_frame())
                    .await
                    .map_err(|_| self.response_timeout_error(&req.method))??;
                match frame {
                    Frame::Interleaved { channel, payload } => on_data(channel, payload),
                    Frame::Response(r) if !matches!(response_cseq(&r), Some(c) if c != cseq) => {
                        break r
                    }
                    Frame::Response(r) => {
                        debug!(origin = %self.origin, status = %u16::from(r.status()), "stray response");
                    }
                    Frame::Request(r) => self.answer_origin_request(&r).await?,
                }
            };
            if resp.status() != StatusCode::Unauthorized {
                return Ok(resp);
            }
            if retried || !self.accept_challenge(&resp) {
                return Err(OriginError::Unauthorized {
                    origin: self.origin.clone(),
                    method: method_name(&req.method),
                });
            }
            retried = true;
        }
    }

    /// Adopts the best challenge of a 401 response; `false` if we have no
    /// credentials or nothing usable was offered.
    pub fn accept_challenge(&mut self, resp: &Response<Vec<u8>>) -> bool {
        if self.creds.is_none() {
            return false;
        }
        let Some(value) = resp.header(&headers::WWW_AUTHENTICATE) else {
            return false;
        };
        let challenges = parse_challenges(value.as_str());
        match best_challenge(&challenges) {
            Some(c) => {
                self.auth = Some(ClientAuth::new(c.clone()));
                true
            }
            None => false,
        }
    }

    /// Origins may send their own requests (keep-alive pings, ANNOUNCE…):
    /// pings are acknowledged, anything else refused with 501.
    pub async fn answer_origin_request(
        &mut self,
        req: &Request<Vec<u8>>,
    ) -> Result<(), OriginError> {
        let status = match req.method() {
            Method::Options | Method::GetParameter | Method::SetParameter => StatusCode::Ok,
            _ => StatusCode::NotImplemented,
        };
        let mut builder = Response::builder(Version::V1_0, status);
        if let Some(cseq) = req.header(&headers::CSEQ) {
            builder = builder.header(headers::CSEQ, cseq.as_str());
        }
        self.framed
            .send(&builder.empty())
            .await
            .map_err(|e| self.codec_error(e))
    }

    pub fn response_timeout_error(&self, method: &Method) -> OriginError {
        OriginError::ResponseTimeout {
            origin: self.origin.clone(),
            method: method_name(method),
        }
    }

    /// `Ok(resp)` if 2xx, else the matching [`OriginError::Status`].
    pub fn expect_success(
        &self,
        method: &Method,
        resp: Response<Vec<u8>>,
    ) -> Result<Response<Vec<u8>>, OriginError> {
        if resp.status().is_success() {
            Ok(resp)
        } else {
            Err(OriginError::Status {
                origin: self.origin.clone(),
                method: method_name(method),
                status: resp.status().into(),
                reason: resp.reason_phrase().chars().take(100).collect(),
            })
        }
    }
}

pub(crate) fn method_name(m: &Method) -> String {
    let s: &str = m.into();
    s.to_owned()
}

/// The CSeq of a response, if it has a readable one.
pub(crate) fn response_cseq(r: &Response<Vec<u8>>) -> Option<u32> {
    r.header(&headers::CSEQ)?.as_str().trim().parse().ok()
}
