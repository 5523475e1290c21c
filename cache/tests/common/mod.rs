//! Helpers shared by the integration tests.
#![allow(dead_code)]
// each test crate uses its own subset
// `u64::is_multiple_of` needs Rust 1.87; the workspace supports 1.80.

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use streamcache_cache::{
    Cursor, Metadata, Npt, NptRange, PresentationState, Record, RecordFlags, RecordIn, RecordKind,
    Store, StoreConfig, TrackMeta,
};

pub const SEGMENT: u64 = 128 * 1024;
/// A budget nothing in the tests reaches.
pub const BIG: u64 = 1 << 30;

pub fn config(budget_bytes: u64) -> StoreConfig {
    StoreConfig {
        budget_bytes,
        segment_max_bytes: SEGMENT,
        segment_max_duration_ns: 0,
    }
}

pub fn open(root: &Path, cfg: StoreConfig) -> Store {
    let (store, problems) = Store::open(root, cfg).unwrap();
    assert!(problems.is_empty(), "{problems:?}");
    store
}

/// Metadata with the two tracks [`rec`] writes records of.
pub fn meta(key: &str) -> Metadata {
    let track = |n: u8, media: &str, encoding: &str| TrackMeta {
        control: format!("{key}/trackID={n}"),
        payload_type: 96 + n,
        clock_rate: 90_000,
        media: media.into(),
        encoding: encoding.into(),
    };
    Metadata {
        key: key.into(),
        sdp: "v=0\r\nm=video 0 RTP/AVP 96\r\nm=audio 0 RTP/AVP 97\r\n".into(),
        tracks: vec![
            track(0, "video", "H264"),
            track(1, "audio", "MPEG4-GENERIC"),
        ],
        ..Metadata::default()
    }
}

/// A record we can recognise: its payload encodes `tag` and `i`, then
/// pseudo-random bytes derived from them; 25 per second of npt from `t0_ns`,
/// a random-access point every 25th.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rec {
    pub track: u8,
    pub kind: RecordKind,
    pub flags: RecordFlags,
    pub media_time_ns: u64,
    pub payload: Vec<u8>,
}

pub const FRAME_NS: u64 = 40_000_000;

pub fn rec(tag: u32, i: u64, t0_ns: u64, len: usize) -> Rec {
    let mut payload = Vec::with_capacity(len.max(12));
    payload.extend_from_slice(&tag.to_le_bytes());
    payload.extend_from_slice(&i.to_le_bytes());
    let mut x = (u64::from(tag) << 32 ^ i).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    while payload.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        payload.push(x as u8);
    }
    Rec {
        track: (i % 2) as u8,
        kind: if i % 50 == 49 {
            RecordKind::Rtcp
        } else {
            RecordKind::Rtp
        },
        flags: RecordFlags {
            random_access: i.is_multiple_of(25),
            discontinuity: i == 0,
        },
        media_time_ns: t0_ns + i * FRAME_NS,
        payload,
    }
}

impl Rec {
    pub fn input(&self) -> RecordIn<'_> {
        RecordIn {
            track: self.track,
            kind: self.kind,
            flags: self.flags,
            media_time: Npt::from_ns(self.media_time_ns),
            payload: &self.payload,
        }
    }

    pub fn of(r: &Record) -> Rec {
        Rec {
            track: r.track,
            kind: r.kind,
            flags: r.flags,
            media_time_ns: r.media_time.as_ns(),
            payload: r.payload.to_vec(),
        }
    }
}

/// (tag, i) of a record made by [`rec`], after checking all its bytes.
pub fn identify(r: &Record) -> (u32, u64) {
    let tag = u32::from_le_bytes(r.payload[..4].try_into().unwrap());
    let i = u64::from_le_bytes(r.payload[4..12].try_into().unwrap());
    let t0 = r.media_time.as_ns() - i * FRAME_NS;
    assert_eq!(
        Rec::of(r),
        rec(tag, i, t0, r.payload.len()),
        "record {tag}/{i} damaged"
    );
    (tag, i)
}

pub fn write(
    store: &Store,
    key: &str,
    tag: u32,
    n: u64,
    t0_ns: u64,
    state: PresentationState,
) -> Vec<Rec> {
    // A title recorded complete is one whose range the records cover (open
    // checks it).
    let range = (state == PresentationState::Complete).then(|| NptRange {
        start: Npt::from_ns(t0_ns),
        end: Some(Npt::from_ns(t0_ns + n.saturating_sub(1) * FRAME_NS)),
    });
    let mut writer = store
        .open_writer(key, Metadata { range, ..meta(key) })
        .unwrap();
    let recs: Vec<_> = (0..n).map(|i| rec(tag, i, t0_ns, 1200)).collect();
    for r in &recs {
        writer.append(&r.input()).unwrap();
    }
    writer.finish(state).unwrap();
    recs
}

/// Every record the cursor has now, stopping at the first error.
pub fn drain(cursor: &mut Cursor) -> Vec<Rec> {
    let mut out = Vec::new();
    while let Some(r) = cursor.next() {
        out.push(Rec::of(&r.unwrap()));
    }
    out
}

pub fn read_all(store: &Store, key: &str) -> Vec<Rec> {
    let reader = store.open_reader(key).unwrap().unwrap();
    let mut cursor = reader.cursor();
    let out = drain(&mut cursor);
    assert!(cursor.is_complete());
    out
}

pub fn segment_files(store: &Store, key: &str) -> Vec<PathBuf> {
    let dir = fs::read_dir(store.root())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            fs::read_to_string(p.join("meta.json"))
                .is_ok_and(|m| m.contains(&format!("\"key\": \"{key}\"")))
        })
        .unwrap();
    let mut files: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    files.sort();
    files
}

/// Flips bits of the byte at `offset` of `path`.
pub fn flip(path: &Path, offset: u64) {
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8];
    file.read_exact_at(&mut b, offset).unwrap();
    file.write_all_at(&[b[0] ^ 0x40], offset).unwrap();
}
