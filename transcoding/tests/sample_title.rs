//! The embedded sample title (assets/sample: 10 s of H.264 at 25 fps and
//! AAC at 48 kHz, as stored by streamcache from a GStreamer origin),
//! depacketized record by record.

use std::path::Path;

use streamcache_cache::{RecordKind, Store, StoreConfig};
use streamcache_transcoding::depacketize::for_track;
use streamcache_transcoding::{Codec, Frame, TrackSpec};

const KEY: &str = "streamcache:sample";

#[test]
fn every_record_of_the_sample_title_depacketizes() {
    let assets = Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets/sample");
    let root = tempfile::tempdir().expect("temp dir");
    let title = root.path().join("sample");
    std::fs::create_dir(&title).expect("title dir");
    for name in ["meta.json", "r00000001-s000000.seg"] {
        std::fs::copy(assets.join(name), title.join(name)).expect("copy");
    }
    let config = StoreConfig {
        budget_bytes: u64::MAX,
        segment_max_bytes: 64 << 20,
        segment_max_duration_ns: 0,
    };
    let (store, problems) = Store::open_read_only(root.path(), config).expect("store");
    assert!(problems.is_empty(), "{problems:?}");
    let reader = store.open_reader(KEY).expect("reader").expect("the title");
    let tracks = TrackSpec::from_sdp(&reader.metadata().sdp).expect("SDP");
    assert_eq!(tracks.len(), 2);
    let mut depacketizers: Vec<_> = tracks
        .iter()
        .enumerate()
        .map(|(i, t)| for_track(i, t).expect("supported"))
        .collect();

    let mut frames: Vec<Vec<Frame>> = vec![Vec::new(); tracks.len()];
    let mut cursor = reader.cursor();
    while let Some(record) = cursor.next() {
        let record = record.expect("record verifies");
        if record.kind != RecordKind::Rtp {
            continue;
        }
        let track = usize::from(record.track);
        let d = &mut depacketizers[track];
        d.push(
            record.payload,
            record.media_time,
            record.flags.discontinuity,
        );
        frames[track].extend(std::iter::from_fn(|| d.pop()));
    }
    for (d, out) in depacketizers.iter_mut().zip(&mut frames) {
        d.finish();
        out.extend(std::iter::from_fn(|| d.pop()));
        assert_eq!(d.stats(), Default::default(), "nothing dropped");
    }

    let video = &frames[0];
    let keyframes = video.iter().filter(|f| f.keyframe).count();
    println!("video: {} frames, {keyframes} keyframes", video.len());
    // 25 fps for 10 s (the recording's span ends at 10.005 s).
    assert_eq!(video.len(), 250);
    assert_eq!(keyframes, 10, "a keyframe every second");
    assert!(video[0].keyframe && !video[0].discontinuity);
    assert!(steps_of(video, 40_000_000), "every 40 ms");
    let Some(Codec::H264 { sps, pps }) = depacketizers[0].codec() else {
        panic!("H.264 parameter sets known");
    };
    assert!(!sps.is_empty() && !pps.is_empty());

    let audio = &frames[1];
    let Some(Codec::Aac {
        sample_rate,
        channels,
        ..
    }) = depacketizers[1].codec()
    else {
        panic!("AAC config known");
    };
    assert_eq!((sample_rate, channels), (48000, 1));
    // 10 s × 48000 / 1024 ≈ 469 frames.
    println!("audio: {} frames", audio.len());
    assert!(
        (465..=472).contains(&audio.len()),
        "{} AAC frames",
        audio.len()
    );
    assert!(
        steps_of(audio, 1024 * 1_000_000_000 / 48000),
        "every 1024 samples"
    );
    assert!(audio.iter().all(|f| f.keyframe && !f.discontinuity));
}

/// Each frame `step` ns after the previous one, within a millisecond.
fn steps_of(frames: &[Frame], step: u64) -> bool {
    frames.windows(2).all(|w| {
        let d = w[1].pts.as_ns().saturating_sub(w[0].pts.as_ns());
        d.abs_diff(step) < 1_000_000
    })
}
