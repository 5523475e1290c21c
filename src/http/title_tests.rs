//! Plans and segments on stores made for the purpose: the embedded sample
//! title with a damaged packet, and a G.711 title MP4 cannot hold.

use std::path::Path;

use hyper::StatusCode;
use streamcache_cache::{
    Metadata, PresentationState, RecordFlags, RecordIn, RecordKind, Store, StoreConfig, TrackMeta,
};
use streamcache_types::{Npt, NptRange};

use super::*;

const SAMPLE_KEY: &str = "streamcache:sample";

fn config() -> StoreConfig {
    StoreConfig {
        budget_bytes: u64::MAX,
        segment_max_bytes: 64 << 20,
        segment_max_duration_ns: 0,
    }
}

/// A writable store under `root` with the sample title's records copied
/// to `key`, `damage` applied to each (by its index).
fn sample_copy(root: &Path, key: &str, damage: impl Fn(usize, &RecordIn) -> Vec<u8>) -> Store {
    let assets = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/sample");
    let source = root.join("source");
    std::fs::create_dir_all(source.join("sample")).expect("dir");
    for name in ["meta.json", "r00000001-s000000.seg"] {
        std::fs::copy(assets.join(name), source.join("sample").join(name)).expect("copy");
    }
    let (sample, _) = Store::open_read_only(&source, config()).expect("sample store");
    let reader = sample
        .open_reader(SAMPLE_KEY)
        .expect("open")
        .expect("the sample");
    let (store, _) = Store::open(&root.join("store"), config()).expect("store");
    let meta = Metadata {
        key: key.to_owned(),
        ..reader.metadata().clone()
    };
    let mut writer = store.open_writer(key, meta).expect("writer");
    let mut cursor = reader.cursor();
    let mut i = 0;
    while let Some(record) = cursor.next() {
        let record = record.expect("the sample verifies");
        let payload = damage(i, &record.as_input());
        writer
            .append(&RecordIn {
                payload: &payload,
                ..record.as_input()
            })
            .expect("append");
        i += 1;
    }
    writer.finish(PresentationState::Complete).expect("finish");
    store
}

fn video_frames(store: &Store, plan: &Plan) -> (usize, Dropped) {
    let reader = store.open_reader(&plan.key).expect("open").expect("title");
    let mut count = 0;
    let mut dropped = Dropped::default();
    for (n, span) in plan.segments.iter().enumerate() {
        let last = n + 1 == plan.segments.len();
        let (frames, _, d) = frames(&reader, &plan.specs, *span, last).expect("frames");
        count += frames.iter().filter(|f| f.track == 0).count();
        dropped.malformed_packets += d.malformed_packets;
        dropped.dropped_frames += d.dropped_frames;
    }
    (count, dropped)
}

#[test]
fn the_sample_title_is_cut_at_keyframes_with_every_frame_once() {
    let root = tempfile::tempdir().expect("temp dir");
    let store = sample_copy(root.path(), "k", |_, r| r.payload.to_vec());
    let (plan, zero, dropped) = Plan::open(&store, "k").expect("plan");
    assert_eq!(dropped, Dropped::default());
    assert!(!zero.is_empty() && !plan.init.is_empty());
    let starts: Vec<u64> = plan
        .segments
        .iter()
        .map(|s| s.start.as_ns() / 1_000_000)
        .collect();
    assert_eq!(
        starts,
        [21, 4021, 8021],
        "keyframes every second, 4 s segments"
    );
    assert_eq!(plan.target_duration(), 4);
    assert_eq!(
        video_frames(&store, &plan).0,
        250,
        "10 s at 25 fps, each once"
    );
    let (last, _) = plan.segment(&store, 2).expect("the last segment");
    assert!(!last.is_empty());
    assert_eq!(
        plan.segment(&store, 3).expect_err("no such").status,
        StatusCode::NOT_FOUND
    );
}

#[test]
fn a_malformed_stored_packet_costs_its_frame_and_is_counted() {
    let root = tempfile::tempdir().expect("temp dir");
    // The first video packet from record 300 on, well inside the title:
    // cut to a stub no RTP parser takes.
    let damaged = std::cell::Cell::new(false);
    let store = sample_copy(root.path(), "k", |i, r| {
        if i >= 300 && r.track == 0 && r.kind == RecordKind::Rtp && !damaged.replace(true) {
            return r.payload[..3].to_vec();
        }
        r.payload.to_vec()
    });
    let (plan, _, _) = Plan::open(&store, "k").expect("plan");
    let (count, dropped) = video_frames(&store, &plan);
    assert!(
        dropped.malformed_packets + dropped.dropped_frames > 0,
        "{dropped:?}"
    );
    assert!(
        (240..250).contains(&count),
        "a frame or a GOP's rest dropped, no more: {count}"
    );
    for n in 0..plan.segments.len() {
        plan.segment(&store, n).expect("every segment still builds");
    }
}

#[test]
fn a_codec_mp4_cannot_hold_is_415_naming_it() {
    let root = tempfile::tempdir().expect("temp dir");
    let (store, _) = Store::open(root.path(), config()).expect("store");
    let sdp = "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=t\r\nt=0 0\r\n\
               m=audio 0 RTP/AVP 0\r\na=control:stream=0\r\n";
    let meta = Metadata {
        key: "g711".into(),
        sdp: sdp.into(),
        tracks: vec![TrackMeta {
            payload_type: 0,
            clock_rate: 8000,
            media: "audio".into(),
            encoding: "PCMU".into(),
            ..Default::default()
        }],
        range: Some(NptRange {
            start: Npt::ZERO,
            end: Some(Npt::from_secs(2)),
        }),
        ..Default::default()
    };
    let mut writer = store.open_writer("g711", meta).expect("writer");
    for i in 0..100u16 {
        let mut rtp = vec![0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        rtp[2..4].copy_from_slice(&i.to_be_bytes());
        rtp[4..8].copy_from_slice(&(u32::from(i) * 160).to_be_bytes());
        rtp.extend([0xff; 160]);
        let record = RecordIn {
            track: 0,
            kind: RecordKind::Rtp,
            flags: RecordFlags {
                random_access: true,
                discontinuity: false,
            },
            media_time: Npt::from_millis(u64::from(i) * 20),
            payload: &rtp,
        };
        writer.append(&record).expect("append");
    }
    writer.finish(PresentationState::Complete).expect("finish");
    let refusal = Plan::open(&store, "g711").err().expect("refused");
    assert_eq!(refusal.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(refusal.message.contains("G.711"), "{}", refusal.message);
}
