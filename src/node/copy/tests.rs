//! Copies between two stores in temporary directories: a source title
//! written by a `Writer`, its peer server on 127.0.0.1:0 (through a proxy
//! the tests can cut), a receiver. Real sockets, so real time: the rate
//! test asserts a lower bound only.

use std::net::SocketAddr;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::body::{Body as _, Incoming};
use hyper::{Request, Response};
use streamcache_cache::{
    Metadata, Npt, NptRange, PresentationState, RecordFlags, RecordIn, RecordKind, Store,
    StoreConfig, TrackMeta,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::{Copies, Failure};
use crate::admin::{self, Body, Handler};
use crate::catalog::CopyingKeys;
use crate::cluster::protocol::pb;
use crate::node::peer::PeerServer;

const TOKEN: &str = "0123456789abcdef-cluster";
pub(super) const KEY: &str = "rtsp://origin/vod/a";
const WAIT: Duration = Duration::from_secs(30);
/// Records 40 ms apart, so 25 a second; 1000-byte payloads.
pub(super) const STEP_NS: u64 = 40_000_000;
const PAYLOAD: usize = 1000;

pub(super) fn open_store(dir: &std::path::Path) -> Store {
    let cfg = StoreConfig {
        budget_bytes: 1 << 30,
        segment_max_bytes: 128 * 1024,
        segment_max_duration_ns: 0,
    };
    Store::open(dir, cfg).expect("store").0
}

/// One record as compared: track, kind, flags, npt, payload.
type Rec = (u8, RecordKind, RecordFlags, u64, Vec<u8>);

/// `n` records, video and audio in turn, video random-access every 2 s
/// (one in 50), the first flagged as a run's first is.
fn records(n: u64) -> Vec<Rec> {
    (0..n)
        .map(|i| {
            let flags = RecordFlags {
                random_access: i.is_multiple_of(50),
                discontinuity: i == 0,
            };
            let payload = (0..PAYLOAD)
                .map(|b| (b as u64 * 7 + i * 13) as u8)
                .collect();
            ((i % 2) as u8, RecordKind::Rtp, flags, i * STEP_NS, payload)
        })
        .collect()
}

pub(super) fn meta(n: u64) -> Metadata {
    let track = |control: &str| TrackMeta {
        control: control.into(),
        payload_type: 96,
        clock_rate: 90_000,
        media: "video".into(),
        encoding: "H264".into(),
    };
    Metadata {
        key: KEY.into(),
        sdp: "v=0\r\nm=video 0 RTP/AVP 96\r\nm=audio 0 RTP/AVP 97\r\n".into(),
        tracks: vec![track("trackID=0"), track("trackID=1")],
        range: Some(NptRange {
            start: Npt::ZERO,
            end: Some(Npt::from_ns(n * STEP_NS)),
        }),
        ..Metadata::default()
    }
}

/// A complete title of `n` records in `store`.
fn write_title(store: &Store, n: u64) -> Vec<Rec> {
    let all = records(n);
    let mut writer = store.open_writer(KEY, meta(n)).expect("writer");
    for (track, kind, flags, npt, payload) in &all {
        let rec = RecordIn {
            track: *track,
            kind: *kind,
            flags: *flags,
            media_time: Npt::from_ns(*npt),
            payload,
        };
        writer.append(&rec).expect("append");
    }
    writer.finish(PresentationState::Complete).expect("finish");
    all
}

/// Every record `store` plays for the key.
fn stored(store: &Store) -> Vec<Rec> {
    let Some(reader) = store.open_reader(KEY).expect("readable") else {
        return Vec::new();
    };
    let mut cursor = reader.cursor();
    let mut out = Vec::new();
    while let Some(record) = cursor.next() {
        let r = record.expect("verified");
        out.push((
            r.track,
            r.kind,
            r.flags,
            r.media_time.as_ns(),
            r.payload.to_vec(),
        ));
    }
    out
}

/// The peer server, logging each segment request: (segment, from, bytes).
struct Logged {
    peer: Arc<PeerServer>,
    log: Arc<Mutex<Vec<(String, u64, u64)>>>,
}

impl Handler for Logged {
    async fn handle(&self, request: Request<Incoming>) -> Response<Body> {
        let name = request
            .uri()
            .path()
            .rsplit('/')
            .next()
            .unwrap_or("")
            .to_owned();
        let range = request.headers().get(hyper::header::RANGE).cloned();
        let segment = request.uri().path().contains("/segments/");
        let response = self.peer.handle(request).await;
        if segment {
            let from = range
                .and_then(|v| crate::node::peer::api::parse_range(v.to_str().ok()))
                .map_or(0, |(from, _)| from);
            let bytes = response.body().size_hint().exact().unwrap_or(0);
            self.log.lock().expect("log").push((name, from, bytes));
        }
        response
    }
}

struct Source {
    url: String,
    log: Arc<Mutex<Vec<(String, u64, u64)>>>,
    server: SocketAddr,
}

async fn serve(store: &Store) -> Source {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let server = listener.local_addr().expect("addr");
    let log = Arc::default();
    let logged = Logged {
        peer: PeerServer::new(store.clone(), TOKEN.into()),
        log: Arc::clone(&log),
    };
    tokio::spawn(admin::serve(listener, Arc::new(logged)));
    Source {
        url: format!("http://{server}"),
        log,
        server,
    }
}

/// A TCP proxy to `to` on `listener`; aborting its task cuts every
/// connection through it.
fn proxy(listener: TcpListener, to: SocketAddr) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut connections = JoinSet::new();
        while let Ok((mut inbound, _)) = listener.accept().await {
            connections.spawn(async move {
                if let Ok(mut outbound) = TcpStream::connect(to).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    })
}

type Ended = oneshot::Receiver<(Result<(), Failure>, pb::CopyProgress)>;

fn start(copies: &Arc<Copies>, id: u64, url: &str, span: (u64, u64), rate_bps: u64) -> Ended {
    let (tx, rx) = oneshot::channel();
    let start = pb::CopyStart {
        copy_id: id,
        key: KEY.into(),
        source_node: "source".into(),
        source_url: url.into(),
        span: Some(pb::Span {
            start_ns: span.0,
            end_ns: span.1,
        }),
        rate_bps,
        resume: false,
    };
    copies
        .start(
            start,
            Box::new(move |result, progress| {
                let _ = tx.send((result, progress));
            }),
        )
        .expect("started");
    rx
}

async fn ended(rx: Ended) -> (Result<(), Failure>, pb::CopyProgress) {
    tokio::time::timeout(WAIT, rx)
        .await
        .expect("in time")
        .expect("done")
}

#[tokio::test]
async fn a_copy_is_identical_and_complete() {
    let (src_dir, dst_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (source, dest) = (open_store(src_dir.path()), open_store(dst_dir.path()));
    let all = write_title(&source, 600);
    let served = serve(&source).await;
    let copies = Copies::new(dest.clone(), CopyingKeys::default(), TOKEN.into());
    let (result, progress) = ended(start(&copies, 1, &served.url, (0, 0), 1 << 30)).await;
    result.expect("copied");
    assert!(!progress.checksum_failure);
    assert_eq!(progress.held_to_ns, 599 * STEP_NS);
    assert!(progress.bytes >= (600 * PAYLOAD) as u64);
    assert_eq!(stored(&dest), all);
    let (from, to) = (
        source.metadata(KEY).unwrap().unwrap(),
        dest.metadata(KEY).unwrap().unwrap(),
    );
    assert_eq!(to.state, PresentationState::Complete);
    assert_eq!(to.spans, from.spans);
    assert_eq!(
        (to.sdp, to.tracks, to.range),
        (from.sdp, from.tracks, from.range)
    );
    assert!(copies.progress().is_empty(), "no copy runs any more");
}

#[tokio::test]
async fn the_rate_holds_and_players_follow_the_copy() {
    let (src_dir, dst_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (source, dest) = (open_store(src_dir.path()), open_store(dst_dir.path()));
    let all = write_title(&source, 300);
    let served = serve(&source).await;
    let copying = CopyingKeys::default();
    let copies = Copies::new(dest.clone(), copying.clone(), TOKEN.into());
    let rate = 2_000_000;
    let began = Instant::now();
    let done = start(&copies, 7, &served.url, (0, 0), rate);
    // A player starting during the copy: it waits at the copy's writer
    // for more, and plays everything.
    let reader = loop {
        if let Some(reader) = dest.open_reader(KEY).expect("readable") {
            break reader;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(copying.contains(KEY), "the catalog knows the copy");
    let mut cursor = reader.cursor();
    let mut played = Vec::new();
    loop {
        if let Some(r) = cursor.next() {
            let r = r.expect("verified");
            played.push((
                r.track,
                r.kind,
                r.flags,
                r.media_time.as_ns(),
                r.payload.to_vec(),
            ));
            continue;
        }
        if cursor.is_complete() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = began.elapsed();
    let (result, progress) = ended(done).await;
    result.expect("copied");
    assert_eq!(played, all, "the player got every record without a gap");
    assert!(!copying.contains(KEY));
    // The limiter lets one refill period (0.1 s) through at once.
    let least = Duration::from_secs_f64(progress.bytes as f64 * 8.0 / rate as f64 - 0.2);
    assert!(
        elapsed >= least,
        "{elapsed:?} < {least:?} for {} bytes",
        progress.bytes
    );
}

#[tokio::test]
async fn a_flipped_byte_fails_the_copy_and_stores_nothing_unverified() {
    let (src_dir, dst_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (source, dest) = (open_store(src_dir.path()), open_store(dst_dir.path()));
    let all = write_title(&source, 600);
    let title = source.title(KEY).expect("held");
    let (first, second) = (&title.segments[0], &title.segments[1]);
    // A payload byte of the second segment's third record.
    let third = second.header_len + 2 * (20 + PAYLOAD as u64) + 20 + 5;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&second.path)
        .unwrap();
    let mut byte = [0u8];
    std::fs::File::open(&second.path)
        .unwrap()
        .read_exact_at(&mut byte, third)
        .unwrap();
    file.write_all_at(&[byte[0] ^ 0x40], third).unwrap();
    let served = serve(&source).await;
    let copies = Copies::new(dest.clone(), CopyingKeys::default(), TOKEN.into());
    let (result, progress) = ended(start(&copies, 2, &served.url, (0, 0), 1 << 30)).await;
    let Err(Failure::Checksum(why)) = result else {
        panic!("a checksum failure, not {result:?}");
    };
    assert!(why.contains(&second.name), "{why}");
    assert!(progress.checksum_failure);
    // The first segment (verified with its digest) is stored, nothing of
    // the damaged one.
    let kept = stored(&dest);
    assert_eq!(kept.len() as u64, first.records);
    assert_eq!(kept, all[..kept.len()]);
    assert_eq!(
        dest.metadata(KEY).unwrap().unwrap().state,
        PresentationState::Partial
    );
}

#[tokio::test]
async fn a_cut_connection_resumes_from_the_last_verified_offset() {
    let (src_dir, dst_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (source, dest) = (open_store(src_dir.path()), open_store(dst_dir.path()));
    let all = write_title(&source, 300);
    let served = serve(&source).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let front = listener.local_addr().expect("addr");
    let running = proxy(listener, served.server);
    let copies = Copies::new(dest.clone(), CopyingKeys::default(), TOKEN.into());
    let done = start(&copies, 3, &format!("http://{front}"), (0, 0), 1_000_000);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    running.abort();
    let _ = running.await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let running = proxy(
        TcpListener::bind(front).await.expect("rebind"),
        served.server,
    );
    let (result, _) = ended(done).await;
    running.abort();
    result.expect("copied after the cut");
    assert_eq!(stored(&dest), all);
    // Only what followed the last verified record was asked for again
    // (a chunk or two), not the whole title from its start.
    let total: u64 = source
        .title(KEY)
        .unwrap()
        .segments
        .iter()
        .map(|s| s.readable)
        .sum();
    let served_bytes: u64 = served.log.lock().unwrap().iter().map(|(_, _, n)| n).sum();
    assert!(served_bytes >= total);
    assert!(
        served_bytes < total + 48 * 1024,
        "{served_bytes} served for {total}"
    );
}

#[tokio::test]
async fn two_sources_two_spans_split_the_title() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let (one, two, dest) = (
        open_store(dirs[0].path()),
        open_store(dirs[1].path()),
        open_store(dirs[2].path()),
    );
    let all = write_title(&one, 600);
    assert_eq!(write_title(&two, 600), all);
    let (first, second) = (serve(&one).await, serve(&two).await);
    let copies = Copies::new(dest.clone(), CopyingKeys::default(), TOKEN.into());
    // Split at 4 s (a random-access record, inside the first segment);
    // the later span starts first.
    let boundary = 100 * STEP_NS;
    let later = start(&copies, 12, &second.url, (boundary, 0), 1 << 30);
    let earlier = start(&copies, 11, &first.url, (0, boundary), 1 << 30);
    let (a, b) = (ended(earlier).await, ended(later).await);
    a.0.expect("first span");
    b.0.expect("second span");
    assert_eq!(a.1.held_to_ns, 99 * STEP_NS);
    assert_eq!(stored(&dest), all);
    let meta = dest.metadata(KEY).unwrap().unwrap();
    assert_eq!(meta.state, PresentationState::Complete);
    assert_eq!(meta.spans, one.metadata(KEY).unwrap().unwrap().spans);
    // The byte ranges served by the two sources do not overlap.
    let ranges = |log: &Mutex<Vec<(String, u64, u64)>>| log.lock().unwrap().clone();
    let (from_one, from_two) = (ranges(&first.log), ranges(&second.log));
    assert!(!from_one.is_empty() && !from_two.is_empty());
    for (name, start, len) in &from_one {
        for (other, s, l) in &from_two {
            let apart = name != other || start + len <= *s || s + l <= *start;
            assert!(apart, "{name} {start}+{len} and {other} {s}+{l} overlap");
        }
    }
}

#[tokio::test]
async fn the_peer_server_wants_the_cluster_token() {
    let dir = tempfile::tempdir().unwrap();
    let source = open_store(dir.path());
    write_title(&source, 10);
    let served = serve(&source).await;
    let mut wrong = super::client::PeerClient::new(&served.url, "not-the-token").unwrap();
    let err = wrong.find(KEY).await.expect_err("refused");
    assert!(err.contains("401"), "{err}");
    let mut right = super::client::PeerClient::new(&served.url, TOKEN).unwrap();
    let id = right.find(KEY).await.expect("listed").expect("held");
    let title = right.title(&id).await.expect("title");
    assert_eq!(title.metadata.expect("metadata").key, KEY);
    let segment = &title.segments[0];
    assert!(segment.sealed && segment.is_final && !segment.index.is_empty());
    let chunk = right
        .chunk(&id, &segment.name, 0, 100)
        .await
        .expect("bytes");
    assert_eq!((chunk.bytes.len(), chunk.length), (100, segment.bytes));
    assert!(chunk.sealed && chunk.digest.is_some());
    let past = right
        .chunk(&id, &segment.name, segment.bytes, segment.bytes + 10)
        .await;
    assert!(past.expect("416 is no error").bytes.is_empty());
}
