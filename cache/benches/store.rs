//! Store benchmarks: append of 1,200-byte records (checksummed), sequential
//! scan through a cursor (checksums verified), seek, and open (every record
//! of every segment verified).
//!
//! `cargo bench -p streamcache-cache`

// `u64::is_multiple_of` needs Rust 1.87; the workspace supports 1.80.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use streamcache_cache::{
    Metadata, Npt, PresentationState, RecordFlags, RecordIn, RecordKind, Store, StoreConfig,
    TrackMeta,
};

const PAYLOAD: usize = 1200;
const MIB: u64 = 1 << 20;

fn config(segment_max_bytes: u64) -> StoreConfig {
    StoreConfig {
        budget_bytes: 1 << 40,
        segment_max_bytes,
        segment_max_duration_ns: 0,
    }
}

fn store(segment_max_bytes: u64) -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("temp dir");
    let (store, _) = Store::open(dir.path(), config(segment_max_bytes)).expect("open store");
    (dir, store)
}

/// Two tracks, as [`record`] writes (open refuses records of a track the
/// metadata does not list).
fn meta(key: &str) -> Metadata {
    let track = TrackMeta::default();
    Metadata {
        key: key.into(),
        sdp: "v=0\r\nm=video 0 RTP/AVP 96\r\nm=audio 0 RTP/AVP 97\r\n".into(),
        tracks: vec![track.clone(), track],
        ..Metadata::default()
    }
}

/// A 5 Mbit/s-like stream: ~500 packets a second, a key frame every 2 s.
fn record(i: u64, payload: &[u8]) -> RecordIn<'_> {
    RecordIn {
        track: (i % 2) as u8,
        kind: RecordKind::Rtp,
        flags: RecordFlags {
            random_access: i.is_multiple_of(1000),
            discontinuity: false,
        },
        media_time: Npt::from_ns(i * 2_000_000),
        payload,
    }
}

fn write(store: &Store, key: &str, n: u64, payload: &[u8]) {
    let mut writer = store.open_writer(key, meta(key)).expect("writer");
    for i in 0..n {
        writer.append(&record(i, payload)).expect("append");
    }
    writer.finish(PresentationState::Complete).expect("finish");
}

fn append(c: &mut Criterion) {
    let (_dir, store) = store(64 * MIB);
    let payload = vec![0x5a; PAYLOAD];
    // ~122 MB per iteration: two 64 MiB segments created, mapped, sealed.
    const N: u64 = 100_000;
    let mut group = c.benchmark_group("append");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    group.throughput(Throughput::Bytes(N * PAYLOAD as u64));
    group.bench_function("1200B_records", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let mut writer = store.open_writer("append", meta("append")).expect("writer");
                let start = Instant::now();
                for i in 0..N {
                    writer.append(&record(i, &payload)).expect("append");
                }
                total += start.elapsed();
                writer.finish(PresentationState::Complete).expect("finish");
                store.purge("append", false).expect("purge");
            }
            total
        })
    });
    group.finish();
}

fn scan(c: &mut Criterion) {
    let (_dir, store) = store(64 * MIB);
    let payload = vec![0x5a; PAYLOAD];
    const N: u64 = 100_000;
    write(&store, "scan", N, &payload);
    let reader = store.open_reader("scan").expect("reader").expect("held");
    let mut group = c.benchmark_group("scan");
    group.sample_size(20);
    group.throughput(Throughput::Bytes(N * PAYLOAD as u64));
    group.bench_function("1200B_records", |b| {
        b.iter(|| {
            let mut cursor = reader.cursor();
            let mut bytes = 0usize;
            while let Some(record) = cursor.next() {
                bytes += black_box(record.expect("record").payload).len();
            }
            assert_eq!(bytes as u64, N * PAYLOAD as u64);
        })
    });
    group.finish();
}

fn seek(c: &mut Criterion) {
    // Four minutes of the stream in 4 MiB segments (~28 of them).
    let (_dir, store) = store(4 * MIB);
    let payload = vec![0x5a; PAYLOAD];
    const N: u64 = 120_000;
    write(&store, "seek", N, &payload);
    let reader = store.open_reader("seek").expect("reader").expect("held");
    let mut cursor = reader.cursor();
    let duration_ns = N * 2_000_000;
    let mut x = 0x2545_f491_4f6c_dd1d_u64;
    c.bench_function("seek/random_npt_then_first_record", |b| {
        b.iter(|| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            cursor.seek(Npt::from_ns(x % duration_ns)).expect("seek");
            let record = cursor.next().expect("a record").expect("intact");
            assert!(record.flags.random_access);
            black_box(record.payload.len())
        })
    });
}

fn open(c: &mut Criterion) {
    let (dir, store) = store(64 * MIB);
    let payload = vec![0x5a; PAYLOAD];
    const N: u64 = 100_000;
    write(&store, "open", N, &payload);
    drop(store);
    let mut group = c.benchmark_group("open");
    group.sample_size(10);
    group.throughput(Throughput::Bytes(N * PAYLOAD as u64));
    group.bench_function("verify_every_record", |b| {
        b.iter(|| {
            let (store, problems) = Store::open(dir.path(), config(64 * MIB)).expect("open");
            assert!(problems.is_empty());
            black_box(store.list().len())
        })
    });
    group.finish();
}

criterion_group!(benches, append, scan, seek, open);
criterion_main!(benches);
