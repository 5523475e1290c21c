//! Store playback on paused time: when each packet leaves.

use std::sync::{Arc, Mutex};

use streamcache_cache::{PresentationState, RecordFlags, RecordIn, Store, StoreConfig};

use super::synthetic::{self, rtp};
use super::*;

const VIDEO: u8 = 0;
const AUDIO: u8 = 1;
/// The first keyframe comes this long after the first (audio) record, as
/// in files whose audio starts ahead of the video.
const VIDEO_START_MS: u64 = 30;

/// A complete 2 s title: AAC-like audio every 21.333 ms from 0, video at
/// 25 fps from `VIDEO_START_MS`, a keyframe every second.
fn title(dir: &std::path::Path) -> Reader {
    let cfg = StoreConfig {
        budget_bytes: 1 << 30,
        segment_max_bytes: 16 << 20,
        segment_max_duration_ns: 0,
    };
    let (store, _) = Store::open(dir, cfg).expect("store");
    let meta = synthetic::av_metadata("title");
    let mut records: Vec<(u64, u8, bool, Vec<u8>)> = Vec::new();
    for frame in 0..50u64 {
        let ns = (VIDEO_START_MS + frame * 40) * 1_000_000;
        records.push((
            ns,
            VIDEO,
            frame % 25 == 0,
            rtp(96, frame as u16, (frame * 3600) as u32, 200),
        ));
    }
    for au in 0..94u64 {
        let ns = au * 1024 * 1_000_000_000 / 48_000;
        records.push((
            ns,
            AUDIO,
            false,
            rtp(97, au as u16, (au * 1024) as u32, 200),
        ));
    }
    records.sort_by_key(|(ns, track, _, _)| (*ns, *track));
    let mut writer = store.open_writer("title", meta).expect("writer");
    for (i, (ns, track, key, data)) in records.iter().enumerate() {
        writer
            .append(&RecordIn {
                track: *track,
                kind: RecordKind::Rtp,
                flags: RecordFlags {
                    random_access: *key,
                    discontinuity: i == 0,
                },
                media_time: Npt::from_ns(*ns),
                payload: data,
            })
            .expect("append");
    }
    writer.finish(PresentationState::Complete).expect("finish");
    store.open_reader("title").expect("open").expect("held")
}

/// Every flush: when, and the (track, RTP timestamp) of what it carried.
type Flushes = Arc<Mutex<Vec<(Instant, Vec<(usize, u32)>)>>>;

struct Recorder {
    batch: Vec<(usize, u32)>,
    flushes: Flushes,
}

impl Sink for Recorder {
    fn push(&mut self, track: usize, rtcp: bool, data: &[u8]) {
        if !rtcp {
            let ts = u32::from_be_bytes([data[4], data[5], data[6], data[7]]);
            self.batch.push((track, ts));
        }
    }

    async fn flush(&mut self) -> Result<(), SinkClosed> {
        if !self.batch.is_empty() {
            let batch = std::mem::take(&mut self.batch);
            self.flushes.lock().unwrap().push((Instant::now(), batch));
        }
        Ok(())
    }
}

/// Plays the title from the start to its end (on paused time); returns
/// when PLAY started and every flush.
async fn play(ticks: WriteTicks) -> (Instant, Vec<(Instant, Vec<(usize, u32)>)>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let flushes = Flushes::default();
    let sink = Recorder {
        batch: Vec::new(),
        flushes: Arc::clone(&flushes),
    };
    let playback =
        Playback::new(title(dir.path()), &[(0, 90_000), (1, 48_000)], sink).merge_writes(ticks);
    let (control, rx) = mpsc::channel(4);
    let task = tokio::spawn(playback.run(rx));
    let (reply, started) = oneshot::channel();
    let play = Control::Play {
        from: Some(Npt::ZERO),
        until: None,
        reply,
    };
    control.send(play).await.expect("play");
    started.await.expect("reply").expect("started");
    let t0 = Instant::now();
    control.send(Control::Start).await.expect("start");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    drop(control);
    task.await.expect("playback");
    let flushes = flushes.lock().unwrap().clone();
    (t0, flushes)
}

/// When a packet is due: video frame `n` at n × 40 ms after the first
/// keyframe (which goes at once), audio at its npt minus that lead. RTP
/// times are renumbered from a random base per track: the first packet of
/// each track gives it.
fn due(t0: Instant, flushes: &[(Instant, Vec<(usize, u32)>)], track: usize, ts: u32) -> Instant {
    let base = flushes
        .iter()
        .flat_map(|(_, batch)| batch)
        .find(|(t, _)| *t == track)
        .map(|&(_, ts)| ts)
        .expect("a first packet");
    let since = u64::from(ts.wrapping_sub(base));
    let ns = if track == usize::from(VIDEO) {
        since * 1_000_000_000 / 90_000
    } else {
        (since * 1_000_000_000 / 48_000).saturating_sub(VIDEO_START_MS * 1_000_000)
    };
    t0 + Duration::from_nanos(ns)
}

#[tokio::test(start_paused = true)]
async fn a_play_from_the_start_sends_the_first_keyframe_at_once_then_keeps_time() {
    let (t0, flushes) = play(WriteTicks::OFF).await;
    // The first keyframe and the audio recorded ahead of it: at once.
    let (at, first) = &flushes[0];
    assert_eq!(*at, t0);
    assert!(
        first.iter().any(|(t, _)| *t == usize::from(VIDEO)),
        "{first:?}"
    );
    assert_eq!(
        first
            .iter()
            .filter(|(t, _)| *t == usize::from(AUDIO))
            .count(),
        2
    );
    // Everything else when due, on the clock the keyframe set (timers
    // fire on whole milliseconds).
    for (at, batch) in &flushes[1..] {
        for &(track, ts) in batch {
            let due = due(t0, &flushes, track, ts);
            assert!(
                *at >= due && *at <= due + Duration::from_millis(1),
                "track {track} ts {ts}"
            );
        }
    }
}

#[tokio::test(start_paused = true)]
async fn merged_writes_send_on_shared_ticks_never_early_nor_a_tick_late() {
    let tick = Duration::from_millis(20);
    let (t0, flushes) = play(WriteTicks::new(tick)).await;
    let (_, unmerged) = play(WriteTicks::OFF).await;
    assert_eq!(flushes[0].0, t0, "the first burst is not held back");
    for (at, batch) in &flushes[1..] {
        for &(track, ts) in batch {
            let due = due(t0, &flushes, track, ts);
            assert!(
                *at >= due && *at < due + tick,
                "track {track} ts {ts}: {at:?} vs due {due:?}"
            );
        }
    }
    let packets =
        |f: &[(Instant, Vec<(usize, u32)>)]| f.iter().map(|(_, b)| b.len()).sum::<usize>();
    assert_eq!((packets(&flushes), packets(&unmerged)), (144, 144));
    // 2 s: at most one write a tick, where unmerged writes follow every
    // video frame and every audio frame that falls between them.
    assert!(flushes.len() <= 102, "{} writes", flushes.len());
    assert!(unmerged.len() >= 130, "{} writes", unmerged.len());
}
