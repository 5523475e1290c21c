//! The per-packet send path of store playback: records read from the mapped
//! segments, renumbered for the player, framed for TCP interleaved and handed
//! to the connection's writer — everything but the socket (the writer writes
//! into a stand-in that only counts).
//!
//! One iteration plays a whole 10 s title through [`Playback`] on a tokio
//! runtime whose clock is paused: the runtime jumps to each next due time as
//! soon as it idles, so the schedule (one wake-up per due time, as in real
//! time) is kept and only the CPU time is measured. Titles of 0.5, 1, 4 and
//! 8 Mbit/s (25 fps video in ≤ 1,400-byte packets, AAC every 21.3 ms).
//!
//! `cargo bench --bench send_path` — criterion time per packet.
//! `SEND_PATH_PLAYS=N cargo bench --bench send_path`: no criterion; N plays of
//! every title, then allocations per packet (a counting allocator) are
//! printed (`SEND_PATH_KBPS=1000`: that title only). Instructions per packet
//! come from two such runs with different N under an instruction counter,
//! the difference divided by the difference in packets:
//! `scripts/send-path-instructions` (valgrind, as virtual machines often
//! have no hardware counters for `perf stat -e instructions`).

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::io::IoSlice;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use criterion::{criterion_group, Criterion, Throughput};
use streamcache::playback::synthetic::{av_metadata, rtp};
use streamcache::playback::{Control, Playback};
use streamcache::serve::bench_support::{ConnWriter, PlayerSink, TrackDelivery, WriteSocket};
use streamcache_cache::{
    Npt, PresentationState, RecordFlags, RecordIn, RecordKind, Store, StoreConfig,
};
use tokio::sync::{mpsc, oneshot};

/// Counts every allocation (and reallocation) of the process.
struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const TITLE_SECS: u64 = 10;
const MTU_PAYLOAD: usize = 1400;
const RATES_KBPS: [u64; 4] = [500, 1000, 4000, 8000];

/// Writes a title of `kbps` (video 25 fps + 96 kbit/s audio); returns its
/// RTP packet count.
fn write_title(store: &Store, key: &str, kbps: u64) -> u64 {
    let meta = av_metadata(key);
    // (npt ns, track, packet)
    let mut packets: Vec<(u64, u8, Vec<u8>)> = Vec::new();
    let frame_bytes = ((kbps.saturating_sub(96)) * 1000 / 8 / 25) as usize;
    let mut seq = 0u16;
    for frame in 0..TITLE_SECS * 25 {
        let npt = frame * 40_000_000;
        let mut left = frame_bytes.max(200);
        while left > 0 {
            let len = left.min(MTU_PAYLOAD);
            left -= len;
            packets.push((npt, 0, rtp(96, seq, (frame * 3600) as u32, 12 + len)));
            seq = seq.wrapping_add(1);
        }
    }
    for au in 0..TITLE_SECS * 48_000 / 1024 {
        let npt = au * 1024 * 1_000_000_000 / 48_000;
        packets.push((npt, 1, rtp(97, au as u16, (au * 1024) as u32, 12 + 4 + 250)));
    }
    packets.sort_by_key(|(npt, track, _)| (*npt, *track));
    let mut writer = store.open_writer(key, meta).expect("writer");
    for (i, (npt, track, data)) in packets.iter().enumerate() {
        writer
            .append(&RecordIn {
                track: *track,
                kind: RecordKind::Rtp,
                flags: RecordFlags {
                    random_access: *track == 0 && npt % 1_000_000_000 == 0,
                    discontinuity: i == 0,
                },
                media_time: Npt::from_ns(*npt),
                payload: data,
            })
            .expect("append");
    }
    writer.finish(PresentationState::Complete).expect("finish");
    packets.len() as u64
}

/// The player's socket: counts bytes and tells when the BYE went out.
struct Counter {
    state: Mutex<(u64, Option<oneshot::Sender<u64>>)>,
}

impl WriteSocket for Counter {
    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> std::io::Result<usize> {
        let mut state = self.state.lock().expect("counter");
        let n: usize = bufs.iter().map(|b| b.len()).sum();
        state.0 += n as u64;
        // The last frame written is an RTCP RR+BYE (16 bytes + `$` header):
        // playback is over.
        if let Some(last) = bufs.iter().rev().find(|b| !b.is_empty()) {
            let len = last.len();
            if len >= 20 && last[len - 20] == b'$' && last[len - 7] == 203 {
                if let Some(done) = state.1.take() {
                    let _ = done.send(state.0);
                }
            }
        }
        Ok(n)
    }

    fn poll_writable(&self, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Plays the title once, start to end, with the clock paused.
fn play(rt: &tokio::runtime::Runtime, store: &Store, key: &str) -> u64 {
    rt.block_on(async {
        let reader = store.open_reader(key).expect("open").expect("held");
        let (done_tx, done_rx) = oneshot::channel();
        let (out, writer) = ConnWriter::spawn(Counter {
            state: Mutex::new((0, Some(done_tx))),
        });
        let tracks: BTreeMap<usize, TrackDelivery> = (0..2u8)
            .map(|t| {
                let delivery = TrackDelivery::Interleaved {
                    rtp: 2 * t,
                    rtcp: 2 * t + 1,
                    out: Arc::clone(&out),
                };
                (usize::from(t), delivery)
            })
            .collect();
        let playback = Playback::new(
            reader,
            &[(0, 90_000), (1, 48_000)],
            PlayerSink::detached(tracks),
        );
        let (control, rx) = mpsc::channel(4);
        let task = tokio::spawn(playback.run(rx));
        let (reply, started) = oneshot::channel();
        control
            .send(Control::Play {
                from: Some(Npt::ZERO),
                until: None,
                reply,
            })
            .await
            .expect("play");
        started.await.expect("reply").expect("started");
        control.send(Control::Start).await.expect("start");
        let bytes = done_rx.await.expect("played to the end");
        drop(control);
        task.await.expect("playback");
        out.close();
        writer.await.expect("writer");
        bytes
    })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime")
}

struct Titles {
    _dir: tempfile::TempDir,
    store: Store,
    /// (kbps, key, packets)
    titles: Vec<(u64, String, u64)>,
}

fn titles() -> Titles {
    let dir = tempfile::tempdir().expect("temp dir");
    let cfg = StoreConfig {
        budget_bytes: 1 << 40,
        segment_max_bytes: 64 << 20,
        segment_max_duration_ns: 0,
    };
    let (store, _) = Store::open(dir.path(), cfg).expect("store");
    let titles = RATES_KBPS
        .iter()
        .map(|&kbps| {
            let key = format!("rtsp://bench/{kbps}");
            let packets = write_title(&store, &key, kbps);
            (kbps, key, packets)
        })
        .collect();
    Titles {
        _dir: dir,
        store,
        titles,
    }
}

fn send_path(c: &mut Criterion) {
    let t = titles();
    let rt = runtime();
    let mut group = c.benchmark_group("send_path");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(5));
    for (kbps, key, packets) in &t.titles {
        group.throughput(Throughput::Elements(*packets));
        group.bench_function(format!("tcp_interleaved_{kbps}kbps"), |b| {
            b.iter(|| play(&rt, &t.store, key))
        });
    }
    group.finish();
}

/// `SEND_PATH_PLAYS=N`: N plays of every title, allocations per packet.
fn counted(plays: u64) {
    let t = titles();
    let rt = runtime();
    let only: Option<u64> = std::env::var("SEND_PATH_KBPS")
        .ok()
        .and_then(|v| v.parse().ok());
    for (kbps, key, packets) in &t.titles {
        if only.is_some_and(|only| only != *kbps) {
            continue;
        }
        play(&rt, &t.store, key); // warm: first mapping, lazy statics
        let a0 = ALLOCS.load(Ordering::Relaxed);
        let start = Instant::now();
        for _ in 0..plays {
            play(&rt, &t.store, key);
        }
        let allocs = ALLOCS.load(Ordering::Relaxed) - a0;
        let n = packets * plays;
        println!(
            "{kbps} kbit/s: {n} packets, {:.2} allocations/packet, {:.0} ns/packet",
            allocs as f64 / n as f64,
            start.elapsed().as_nanos() as f64 / n as f64
        );
    }
}

criterion_group!(benches, send_path);

fn main() {
    if let Some(plays) = std::env::var("SEND_PATH_PLAYS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        counted(plays);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
