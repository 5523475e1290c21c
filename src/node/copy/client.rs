//! The few requests a copy makes of a source's peer server, on one
//! keep-alive HTTP/1.1 connection made again after any failure.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{HeaderMap, AUTHORIZATION, HOST, RANGE};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use url::Url;

use crate::node::peer::api::{self, Title, TitleList};

/// A request and its whole answer (at most a chunk) within this time.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

pub struct PeerClient {
    /// `host:port`.
    authority: String,
    bearer: String,
    sender: Option<SendRequest<Empty<Bytes>>>,
}

/// What a segment request found.
#[derive(Debug)]
pub struct Chunk {
    /// Empty when nothing is there yet past the offset asked for.
    pub bytes: Bytes,
    /// The segment's readable length, flags and digest as of this answer.
    pub length: u64,
    pub sealed: bool,
    pub is_final: bool,
    pub digest: Option<u32>,
}

impl PeerClient {
    /// A client of the peer server at `url` (`http://host:port`).
    pub fn new(url: &str, token: &str) -> Result<PeerClient, String> {
        let parsed = Url::parse(url).map_err(|e| format!("source URL {url:?}: {e}"))?;
        let host = parsed
            .host_str()
            .filter(|_| parsed.scheme() == "http")
            .ok_or_else(|| format!("source URL {url:?} is not http://host:port"))?;
        let port = parsed.port_or_known_default().unwrap_or(80);
        Ok(PeerClient {
            authority: format!("{host}:{port}"),
            bearer: format!("Bearer {token}"),
            sender: None,
        })
    }

    /// The id of the source's title `key`, or `None` if it holds none.
    pub async fn find(&mut self, key: &str) -> Result<Option<String>, String> {
        let (status, _, body) = self.get(api::TITLES_PATH, None).await?;
        expect_ok(status, &body)?;
        let list: TitleList =
            serde_json::from_slice(&body).map_err(|e| format!("title list: {e}"))?;
        Ok(list.titles.into_iter().find(|t| t.key == key).map(|t| t.id))
    }

    /// The title `id` with its metadata and segment indexes.
    pub async fn title(&mut self, id: &str) -> Result<Title, String> {
        let path = format!("{}/{id}", api::TITLES_PATH);
        let (status, _, body) = self.get(&path, None).await?;
        expect_ok(status, &body)?;
        serde_json::from_slice(&body).map_err(|e| format!("title {id}: {e}"))
    }

    /// Bytes `from..to` of a segment (or fewer: what is there, at most a
    /// chunk).
    pub async fn chunk(
        &mut self,
        id: &str,
        name: &str,
        from: u64,
        to: u64,
    ) -> Result<Chunk, String> {
        let path = format!("{}/{id}/segments/{name}", api::TITLES_PATH);
        let (status, headers, bytes) = self.get(&path, Some((from, to))).await?;
        let bytes = match status {
            StatusCode::OK | StatusCode::PARTIAL_CONTENT => bytes,
            StatusCode::RANGE_NOT_SATISFIABLE => Bytes::new(),
            _ => return Err(expect_ok(status, &bytes).err().unwrap_or_default()),
        };
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let length = header(api::SEGMENT_LENGTH)
            .and_then(|v| v.parse().ok())
            .ok_or("segment answer without its length")?;
        Ok(Chunk {
            bytes,
            length,
            sealed: header(api::SEGMENT_SEALED) == Some("1"),
            is_final: header(api::SEGMENT_FINAL) == Some("1"),
            digest: header(api::SEGMENT_CRC32C).and_then(|v| u32::from_str_radix(v, 16).ok()),
        })
    }

    async fn get(
        &mut self,
        path: &str,
        range: Option<(u64, u64)>,
    ) -> Result<(StatusCode, HeaderMap, Bytes), String> {
        let result = tokio::time::timeout(REQUEST_TIMEOUT, self.exchange(path, range))
            .await
            .unwrap_or_else(|_| Err("the source did not answer in time".into()));
        if result.is_err() {
            // Whatever state the connection is in, the next request gets
            // a new one.
            self.sender = None;
        }
        result
    }

    async fn exchange(
        &mut self,
        path: &str,
        range: Option<(u64, u64)>,
    ) -> Result<(StatusCode, HeaderMap, Bytes), String> {
        let mut sender = match self.sender.take().filter(|s| !s.is_closed()) {
            Some(sender) => sender,
            None => self.connect().await?,
        };
        sender.ready().await.map_err(|e| e.to_string())?;
        let mut request = Request::get(path)
            .header(HOST, &self.authority)
            .header(AUTHORIZATION, &self.bearer);
        if let Some((from, to)) = range {
            request = request.header(RANGE, api::range_header(from, to));
        }
        let request = request.body(Empty::new()).map_err(|e| e.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
        self.sender = Some(sender);
        Ok((parts.status, parts.headers, body))
    }

    async fn connect(&self) -> Result<SendRequest<Empty<Bytes>>, String> {
        let stream = TcpStream::connect(&self.authority)
            .await
            .map_err(|e| format!("cannot connect to {}: {e}", self.authority))?;
        let _ = stream.set_nodelay(true);
        let (sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            // Ends with the connection (the sender dropped, or a failure
            // the next request sees).
            let _ = connection.await;
        });
        Ok(sender)
    }
}

/// An error unless 200; the server's JSON error says why.
fn expect_ok(status: StatusCode, body: &[u8]) -> Result<(), String> {
    if status == StatusCode::OK {
        return Ok(());
    }
    let why = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
        .unwrap_or_default();
    Err(format!("the source answered {status}: {why}"))
}
