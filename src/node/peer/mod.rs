//! The peer server: this node's stored titles and segment bytes, for the
//! other nodes' copies (issue 13, `[cluster] peer_listen`). HTTP/1.1 on the
//! admin API's listener plumbing (connection limits, timeouts); every
//! request carries the cluster token as `Authorization: Bearer`.
//!
//! - `GET /peer/v1/titles`: every stored title with its segments;
//! - `GET /peer/v1/titles/{id}`: one title, with its metadata and the
//!   segments' sparse indexes;
//! - `GET /peer/v1/titles/{id}/segments/{name}` with `Range: bytes=a-b`:
//!   the segment's bytes, never past what is committed (a growing segment
//!   is served as far as it is written: the client comes back for more),
//!   at most [`api::MAX_CHUNK`] at a time, with its readable length,
//!   sealed and final flags and, sealed, the CRC-32C of the whole file.
//!
//! The files are read with plain reads, not through the store's mappings:
//! a mapping made while a segment was open covers its preallocated length,
//! and the bytes past the trimmed end of a sealed one are not there.

pub mod api;

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_RANGE, CONTENT_TYPE, RANGE};
use hyper::{Method, Request, Response, StatusCode};
use streamcache_cache::{SegmentInfo, Store};
use tracing::warn;

use crate::admin::{self, Body, Handler};
use api::{Title, TitleList};

/// Sealed segments' digests kept (a sealed file never changes); past this
/// many the table starts over.
const DIGESTS_KEPT: usize = 4096;

pub struct PeerServer {
    store: Store,
    token: String,
    /// CRC-32C of sealed segment files, by path and length: a copy asks
    /// for a segment in many chunks, each answer carries the digest.
    digests: Mutex<HashMap<(PathBuf, u64), u32>>,
}

impl PeerServer {
    pub fn new(store: Store, token: String) -> Arc<PeerServer> {
        Arc::new(PeerServer {
            store,
            token,
            digests: Mutex::default(),
        })
    }

    fn titles(&self) -> Response<Body> {
        let titles = self
            .store
            .list()
            .iter()
            .filter_map(|entry| self.store.title(&entry.id))
            .map(|info| Title::of(info, false))
            .collect();
        json(&TitleList { titles })
    }

    fn title(&self, id: &str) -> Response<Body> {
        match self.store.title(id) {
            Some(info) => json(&Title::of(info, true)),
            None => admin::error(StatusCode::NOT_FOUND, "no such title"),
        }
    }

    async fn segment(&self, id: &str, name: &str, range: Option<&HeaderValue>) -> Response<Body> {
        let Some(segment) = self
            .store
            .title(id)
            .and_then(|t| t.segments.into_iter().find(|s| s.name == name))
        else {
            return admin::error(StatusCode::NOT_FOUND, "no such segment");
        };
        let range = range.map(|v| v.to_str().unwrap_or_default());
        let Some((from, to)) = api::parse_range(range) else {
            return admin::error(
                StatusCode::BAD_REQUEST,
                "Range must be bytes=a-b or bytes=a-",
            );
        };
        let length = segment.readable;
        if from >= length && !(from == 0 && length == 0) {
            let mut response = admin::error(StatusCode::RANGE_NOT_SATISFIABLE, "nothing there yet");
            self.describe(&mut response, &segment, format!("bytes */{length}"))
                .await;
            return response;
        }
        let to = to
            .unwrap_or(length)
            .min(length)
            .min(from.saturating_add(api::MAX_CHUNK));
        let path = segment.path.clone();
        let read = tokio::task::spawn_blocking(move || read_at(&path, from, to)).await;
        let bytes = match read {
            Ok(Ok(bytes)) => bytes,
            Ok(Err(e)) => {
                warn!(file = %segment.path.display(), error = %e, "peer read failed");
                return admin::error(StatusCode::NOT_FOUND, "segment unreadable");
            }
            Err(_) => return admin::error(StatusCode::INTERNAL_SERVER_ERROR, "read failed"),
        };
        let whole = from == 0 && to == length && range.is_none();
        let total = if segment.sealed {
            length.to_string()
        } else {
            "*".to_owned()
        };
        let mut response = Response::new(Body::new(Bytes::from(bytes)));
        *response.status_mut() = if whole {
            StatusCode::OK
        } else {
            StatusCode::PARTIAL_CONTENT
        };
        let content_range = format!("bytes {from}-{}/{total}", to.saturating_sub(1));
        self.describe(&mut response, &segment, content_range).await;
        response
    }

    /// The segment's headers: length, flags, digest, `Content-Range`.
    async fn describe(&self, response: &mut Response<Body>, s: &SegmentInfo, range: String) {
        let digest = if s.sealed {
            self.digest(&s.path, s.readable).await
        } else {
            None
        };
        let headers = response.headers_mut();
        let flag = |on: bool| HeaderValue::from_static(if on { "1" } else { "0" });
        headers.insert(api::SEGMENT_LENGTH, HeaderValue::from(s.readable));
        headers.insert(api::SEGMENT_SEALED, flag(s.sealed));
        headers.insert(api::SEGMENT_FINAL, flag(s.is_final));
        if let Some(digest) = digest {
            if let Ok(v) = HeaderValue::from_str(&format!("{digest:08x}")) {
                headers.insert(api::SEGMENT_CRC32C, v);
            }
        }
        if let Ok(v) = HeaderValue::from_str(&range) {
            headers.insert(CONTENT_RANGE, v);
        }
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
    }

    /// The CRC-32C of a sealed segment's `length` bytes (computed once).
    async fn digest(&self, path: &Path, length: u64) -> Option<u32> {
        let key = (path.to_path_buf(), length);
        if let Some(&digest) = lock(&self.digests).get(&key) {
            return Some(digest);
        }
        let file = path.to_path_buf();
        let digest = tokio::task::spawn_blocking(move || file_crc(&file, length))
            .await
            .ok()?
            .map_err(|e| warn!(file = %path.display(), error = %e, "peer digest failed"))
            .ok()?;
        let mut digests = lock(&self.digests);
        if digests.len() >= DIGESTS_KEPT {
            digests.clear();
        }
        digests.insert(key, digest);
        Some(digest)
    }
}

impl Handler for PeerServer {
    async fn handle(&self, request: Request<Incoming>) -> Response<Body> {
        if !admin::authorized(Some(&self.token), request.headers().get(AUTHORIZATION)) {
            return admin::unauthorized();
        }
        if request.method() != Method::GET {
            return admin::error(StatusCode::METHOD_NOT_ALLOWED, "only GET");
        }
        let path = request.uri().path();
        let Some(rest) = path.strip_prefix(api::TITLES_PATH) else {
            return admin::error(StatusCode::NOT_FOUND, "no such endpoint");
        };
        let parts: Vec<&str> = rest.split('/').collect();
        match parts.as_slice() {
            [] | [""] => self.titles(),
            ["", id] => self.title(id),
            ["", id, "segments", name] => {
                self.segment(id, name, request.headers().get(RANGE)).await
            }
            _ => admin::error(StatusCode::NOT_FOUND, "no such endpoint"),
        }
    }
}

fn json<T: serde::Serialize>(value: &T) -> Response<Body> {
    match serde_json::to_value(value) {
        Ok(value) => admin::json_response(StatusCode::OK, &value),
        Err(e) => admin::error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Bytes `from..to` of a file.
fn read_at(path: &Path, from: u64, to: u64) -> std::io::Result<Vec<u8>> {
    let len = usize::try_from(to.saturating_sub(from)).unwrap_or(usize::MAX);
    let mut buf = vec![0; len];
    File::open(path)?.read_exact_at(&mut buf, from)?;
    Ok(buf)
}

/// CRC-32C of a file's first `length` bytes.
fn file_crc(path: &Path, length: u64) -> std::io::Result<u32> {
    let file = File::open(path)?;
    let mut buf = vec![0; 1 << 20];
    let (mut at, mut crc) = (0u64, 0u32);
    while at < length {
        let n = usize::try_from(length - at).map_or(buf.len(), |left| left.min(buf.len()));
        file.read_exact_at(&mut buf[..n], at)?;
        crc = crc32c::crc32c_append(crc, &buf[..n]);
        at += n as u64;
    }
    Ok(crc)
}
