//! The store as the daemon uses it: write, read back, live tail, seek,
//! partial fill, eviction, purge, and what survives bad bytes on disk.

mod common;

use std::fs;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use common::*;
use streamcache_cache::{CacheError, Cursor, Npt, NptSpan, PresentationState, Store, StoreConfig};

#[test]
fn records_round_trip_across_segments_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), config(BIG));
    let recs = write(
        &store,
        "rtsp://o/a",
        1,
        1000,
        0,
        PresentationState::Complete,
    );
    assert!(
        segment_files(&store, "rtsp://o/a").len() >= 9,
        "rolled over by size"
    );
    assert_eq!(read_all(&store, "rtsp://o/a"), recs);
    let meta = store.metadata("rtsp://o/a").unwrap().unwrap();
    assert_eq!(meta.state, PresentationState::Complete);
    assert_eq!(
        meta.spans,
        [NptSpan {
            start: Npt::ZERO,
            end: Npt::from_ns(999 * FRAME_NS)
        }]
    );
    assert!(store
        .verify(None)
        .iter()
        .all(|r| r.is_ok() && r.records == 1000));
    drop(store);

    let store = open(dir.path(), config(BIG));
    assert_eq!(read_all(&store, "rtsp://o/a"), recs);
    assert_eq!(store.metadata("rtsp://o/a").unwrap().unwrap(), meta);
    assert_eq!(
        store.open_reader("rtsp://o/other").unwrap().map(|_| ()),
        None
    );
}

#[test]
fn segments_roll_over_by_duration() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = StoreConfig {
        segment_max_duration_ns: 1_000_000_000,
        ..config(BIG)
    };
    let store = open(dir.path(), cfg);
    let mut writer = store.open_writer("k", meta("k")).unwrap();
    for i in 0..250 {
        writer.append(&rec(1, i, 0, 100).input()).unwrap();
    }
    writer.finish(PresentationState::Complete).unwrap();
    // 250 records 40 ms apart: 10 s, one segment per second.
    assert_eq!(store.verify(Some("k"))[0].segments, 10);
    assert_eq!(read_all(&store, "k").len(), 250);
}

#[test]
fn live_tail_sees_records_as_they_are_appended() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), config(BIG));
    let mut writer = store.open_writer("live", meta("live")).unwrap();
    let reader = store.open_reader("live").unwrap().unwrap();
    let mut cursor = reader.cursor();
    assert!(cursor.next().is_none() && !cursor.is_complete());
    let mut seen = Vec::new();
    for batch in 0..20u64 {
        for i in batch * 50..(batch + 1) * 50 {
            writer.append(&rec(1, i, 0, 1200).input()).unwrap();
        }
        seen.extend(drain(&mut cursor));
        assert_eq!(seen.len() as u64, (batch + 1) * 50);
        assert!(!cursor.is_complete());
    }
    writer.finish(PresentationState::Complete).unwrap();
    assert!(cursor.next().is_none());
    assert!(cursor.is_complete());
    assert_eq!(
        seen,
        (0..1000).map(|i| rec(1, i, 0, 1200)).collect::<Vec<_>>()
    );
}

#[test]
fn readers_on_other_threads_follow_a_writer() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), config(BIG));
    let mut writer = store.open_writer("live", meta("live")).unwrap();
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let mut cursor = store.open_reader("live").unwrap().unwrap().cursor();
            std::thread::spawn(move || {
                let mut next = 0u64;
                loop {
                    match cursor.next() {
                        Some(r) => {
                            assert_eq!(identify(&r.unwrap()), (1, next));
                            next += 1;
                        }
                        None => {
                            if cursor.is_complete() {
                                return next;
                            }
                            std::thread::yield_now();
                        }
                    }
                }
            })
        })
        .collect();
    for i in 0..3000 {
        writer.append(&rec(1, i, 0, 700).input()).unwrap();
    }
    writer.finish(PresentationState::Complete).unwrap();
    for reader in readers {
        assert_eq!(reader.join().unwrap(), 3000);
    }
}

#[test]
fn seek_lands_on_the_random_access_point_at_or_before() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), config(BIG));
    // Random access every 25 records = every second; 40 s over many segments.
    write(&store, "k", 1, 1000, 0, PresentationState::Complete);
    let reader = store.open_reader("k").unwrap().unwrap();
    let mut cursor = reader.cursor();
    for npt_ms in [0u64, 1, 999, 1000, 1001, 17_500, 39_960, 100_000] {
        cursor.seek(Npt::from_millis(npt_ms)).unwrap();
        let first = Rec::of(&cursor.next().unwrap().unwrap());
        let want_s = (npt_ms / 1000).min(39);
        assert!(first.flags.random_access);
        assert_eq!(
            first.media_time_ns,
            want_s * 1_000_000_000,
            "seek to {npt_ms} ms"
        );
        // Playback continues in order from there.
        let second = Rec::of(&cursor.next().unwrap().unwrap());
        assert_eq!(second.media_time_ns, first.media_time_ns + FRAME_NS);
    }
}

#[test]
fn random_access_points_are_listed_in_play_order_and_the_first_found_alone() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), config(BIG));
    // Random access every second from 0.3 s, over many segments.
    write(
        &store,
        "k",
        1,
        1000,
        300_000_000,
        PresentationState::Complete,
    );
    let reader = store.open_reader("k").unwrap().unwrap();
    let points = reader.random_access_points();
    let want: Vec<Npt> = (0..40).map(|s| Npt::from_millis(300 + s * 1000)).collect();
    assert_eq!(points, want);
    assert_eq!(
        reader.first_random_access_point(),
        Some(Npt::from_millis(300))
    );
}

#[test]
fn partial_fill_runs_play_in_npt_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), config(BIG));
    // The later part was recorded first (a viewer started at 8 s) ...
    let late = write(
        &store,
        "k",
        2,
        300,
        8_000_000_000,
        PresentationState::Partial,
    );
    // ... then a second run filled 0-8 s.
    let early = write(&store, "k", 1, 200, 0, PresentationState::Complete);
    let meta = store.metadata("k").unwrap().unwrap();
    assert_eq!(
        meta.spans,
        [NptSpan {
            start: Npt::ZERO,
            end: Npt::from_ns(8_000_000_000 + 299 * FRAME_NS)
        }]
    );
    let all: Vec<_> = early.into_iter().chain(late).collect();
    assert_eq!(read_all(&store, "k"), all);
    let reader = store.open_reader("k").unwrap().unwrap();
    let mut cursor = reader.cursor();
    cursor.seek(Npt::from_secs(9)).unwrap();
    assert_eq!(
        Rec::of(&cursor.next().unwrap().unwrap()),
        rec(2, 25, 8_000_000_000, 1200)
    );
    drop((reader, cursor, store));
    let store = open(dir.path(), config(BIG));
    assert_eq!(read_all(&store, "k"), all);
}

#[test]
fn one_writer_per_key_and_purge_respects_users() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), config(BIG));
    let mut writer = store.open_writer("k", meta("k")).unwrap();
    writer.append(&rec(1, 0, 0, 100).input()).unwrap();
    assert!(matches!(
        store.open_writer("k", meta("k")),
        Err(CacheError::Busy { .. })
    ));
    assert!(matches!(
        store.purge("k", false),
        Err(CacheError::InUse { writing: true, .. })
    ));
    let listed = store.list();
    assert_eq!(listed.len(), 1);
    assert!(listed[0].writing && listed[0].state == PresentationState::Recording);

    let reader = store.open_reader("k").unwrap().unwrap();
    let mut cursor = reader.cursor();
    assert_eq!(Rec::of(&cursor.next().unwrap().unwrap()), rec(1, 0, 0, 100));
    store.purge("k", true).unwrap();
    assert!(matches!(
        writer.append(&rec(1, 1, 0, 100).input()),
        Err(CacheError::Purged { .. })
    ));
    assert!(matches!(
        writer.append(&rec(1, 2, 0, 100).input()),
        Err(CacheError::WriterStopped { .. })
    ));
    drop(writer);
    // The open cursor keeps its mapping; there is nothing more.
    assert!(cursor.next().is_none() && cursor.is_complete());
    assert!(store.open_reader("k").unwrap().is_none());
    assert!(store.list().is_empty());
    assert!(matches!(
        store.purge("k", false),
        Err(CacheError::NotFound { .. })
    ));
}

#[test]
fn eviction_is_least_recently_played_first_and_skips_pinned() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), config(BIG));
    for (tag, key) in ["a", "b", "c"].into_iter().enumerate() {
        write(&store, key, tag as u32, 50, 0, PresentationState::Complete);
    }
    let each = store.used_bytes() / 3;
    drop(store);

    // Budget for two: the least recently played goes. "a" was just played.
    let store = open(dir.path(), config(each * 2 + each / 2));
    drop(store.open_reader("a").unwrap());
    let pinned = store.open_reader("b").unwrap().unwrap();
    assert_eq!(store.evictions(), 0);
    assert_eq!(store.evict_to_budget(), ["c"]);
    assert_eq!(store.evictions(), 1);
    assert!(store.used_bytes() <= each * 2 + each / 2);
    drop(store);

    // Budget for nothing: all but the pinned one go.
    let store = open(dir.path(), config(0));
    let pinned_again = store.open_reader("b").unwrap().unwrap();
    assert_eq!(store.evict_to_budget(), ["a"]);
    let keys: Vec<_> = store.list().into_iter().map(|e| e.key).collect();
    assert_eq!(keys, ["b"]);
    drop((pinned, pinned_again));
}

#[test]
fn a_growing_writer_evicts_old_entries() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), config(3 * SEGMENT));
    write(&store, "old", 1, 50, 0, PresentationState::Complete);
    write(&store, "new", 2, 300, 0, PresentationState::Complete);
    assert!(
        store.metadata("old").unwrap().is_none(),
        "evicted to make room"
    );
    assert_eq!(store.evictions(), 1);
    assert_eq!(read_all(&store, "new").len(), 300);

    // A writer that cannot fit even after evicting stops with an error.
    let reader = store.open_reader("new").unwrap().unwrap();
    let mut writer = store.open_writer("big", meta("big")).unwrap();
    let err = (0..10_000)
        .find_map(|i| writer.append(&rec(3, i, 0, 1200).input()).err())
        .unwrap();
    assert!(matches!(err, CacheError::OverBudget { .. }), "{err}");
    writer.finish(PresentationState::Partial).unwrap();
    assert!(store.used_bytes() <= 3 * SEGMENT);
    drop(reader);
}

#[test]
fn writer_dropped_without_finish_leaves_a_readable_partial() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), config(BIG));
    let mut writer = store.open_writer("k", meta("k")).unwrap();
    for i in 0..300 {
        writer.append(&rec(1, i, 0, 1200).input()).unwrap();
    }
    drop(writer);
    assert_eq!(
        store.metadata("k").unwrap().unwrap().state,
        PresentationState::Partial
    );
    drop(store);
    let store = open(dir.path(), config(BIG));
    assert_eq!(read_all(&store, "k").len(), 300);
}

#[test]
fn metadata_updates_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), config(BIG));
    let mut writer = store.open_writer("k", meta("k")).unwrap();
    writer
        .update_metadata(|m| {
            m.cache_headers.etag = Some("\"v2\"".into());
            m.key = "ignored".into();
        })
        .unwrap();
    writer.finish(PresentationState::Complete).unwrap();
    drop(store);
    let store = open(dir.path(), config(BIG));
    let meta = store.metadata("k").unwrap().unwrap();
    assert_eq!(meta.cache_headers.etag.as_deref(), Some("\"v2\""));
    assert_eq!(meta.key, "k");
}

#[test]
fn a_second_process_cannot_open_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let _store = open(dir.path(), config(BIG));
    assert!(matches!(
        Store::open(dir.path(), config(BIG)),
        Err(CacheError::Locked { .. })
    ));
}

#[test]
fn a_torn_segment_is_cut_to_its_whole_records_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), config(BIG));
    write(&store, "k", 1, 100, 0, PresentationState::Complete);
    write(&store, "other", 2, 10, 0, PresentationState::Complete);
    let files = segment_files(&store, "k");
    assert_eq!(files.len(), 1);
    drop(store);
    // As if killed while writing record 51: its bytes half there, no trailer.
    let cut = 64 + 50 * 1220 + 700;
    let file = fs::OpenOptions::new().write(true).open(&files[0]).unwrap();
    file.set_len(cut).unwrap();
    file.set_len(SEGMENT).unwrap();
    drop(file);

    let (store, problems) = Store::open(dir.path(), config(BIG)).unwrap();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(matches!(
        &problems[0],
        CacheError::Recovered { path, offset, kept_records: 50 } if *path == files[0] && *offset == 64 + 50 * 1220
    ));
    let got = read_all(&store, "k");
    assert_eq!(got, (0..50).map(|i| rec(1, i, 0, 1200)).collect::<Vec<_>>());
    assert!(store.verify(None).iter().all(|r| r.is_ok()));
    assert_eq!(read_all(&store, "other").len(), 10);
    drop(store);
    // The cut is final: a second open finds nothing to do.
    let store = open(dir.path(), config(BIG));
    assert_eq!(read_all(&store, "k").len(), 50);
}

#[test]
fn bad_metadata_and_unknown_versions_are_skipped_and_the_rest_works() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), config(BIG));
    for (tag, key) in ["a", "b", "c"].into_iter().enumerate() {
        write(&store, key, tag as u32, 200, 0, PresentationState::Complete);
    }
    let a_meta = segment_files(&store, "a")[0]
        .parent()
        .unwrap()
        .join("meta.json");
    let b_segments = segment_files(&store, "b");
    drop(store);
    fs::write(
        &a_meta,
        b"{\"format\": \"streamcache-metadata\", \"version\": ",
    )
    .unwrap();
    // A segment from a future major version: its header checksum holds (a
    // newer writer keeps it), so it is refused by version, not as damage.
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&b_segments[0])
        .unwrap();
    let mut header = [0u8; 64];
    file.read_exact_at(&mut header, 0).unwrap();
    header[8..10].copy_from_slice(&9u16.to_le_bytes());
    let crc = crc32c::crc32c(&header[..60]);
    header[60..64].copy_from_slice(&crc.to_le_bytes());
    file.write_all_at(&header, 0).unwrap();
    drop(file);

    let (store, problems) = Store::open(dir.path(), config(BIG)).unwrap();
    let messages: Vec<_> = problems.iter().map(|p| p.to_string()).collect();
    assert_eq!(problems.len(), 3, "{messages:?}");
    // a: segments without usable metadata are an orphan, reclaimed.
    let a_dir = a_meta.parent().unwrap();
    assert!(problems.iter().any(|p| matches!(
        p,
        CacheError::Orphan { path, segments: 2, reclaimed: true, .. } if path == a_dir
    )));
    assert!(!a_dir.exists());
    assert!(store.orphans().is_empty());
    assert!(problems
        .iter()
        .any(|p| matches!(p, CacheError::UnsupportedVersion { path, major: 9, .. } if *path == b_segments[0])));
    assert!(messages
        .iter()
        .any(|m| m.contains("9.0") && m.contains(&b_segments[0].display().to_string())));
    assert!(store.metadata("a").unwrap().is_none());
    // b's run is cut before its first segment (kept on disk: another
    // version's), so the rest of the run is dropped, to be refetched.
    assert!(problems.iter().any(|p| matches!(
        p,
        CacheError::Damaged { path, dropped_segments: 1, .. } if *path == b_segments[0]
    )));
    assert!(read_all(&store, "b").is_empty());
    assert_eq!(
        store.metadata("b").unwrap().unwrap().state,
        PresentationState::Partial
    );
    assert!(b_segments[0].exists() && !b_segments[1].exists());
    assert_eq!(read_all(&store, "c").len(), 200);
    write(&store, "d", 4, 10, 0, PresentationState::Complete);
    assert_eq!(read_all(&store, "d").len(), 10);
}

#[test]
fn verify_is_safe_while_writing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), config(BIG));
    let mut writer = store.open_writer("k", meta("k")).unwrap();
    let verifier = {
        let store = store.clone();
        std::thread::spawn(move || {
            let mut rounds = 0;
            while store.list().first().is_some_and(|e| e.writing) {
                for report in store.verify(None) {
                    assert!(report.is_ok(), "{:?}", report.problems);
                }
                rounds += 1;
            }
            rounds
        })
    };
    for i in 0..5000 {
        writer.append(&rec(1, i, 0, 1200).input()).unwrap();
    }
    writer.finish(PresentationState::Complete).unwrap();
    assert!(verifier.join().unwrap() > 0);
    let report = &store.verify(Some("k"))[0];
    assert!(report.is_ok() && report.records == 5000);
}

#[test]
fn store_and_cursor_are_send_and_sync_as_the_daemon_needs() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<Store>();
    send::<Cursor>();
    send::<streamcache_cache::Writer>();
    send_sync::<Arc<streamcache_cache::Reader>>();
}

#[test]
fn a_read_only_store_reads_and_verifies_beside_a_live_writer() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), config(BIG));
    write(&store, "done", 1, 200, 0, PresentationState::Complete);
    let mut writer = store.open_writer("live", meta("live")).unwrap();
    for i in 0..500 {
        writer.append(&rec(2, i, 0, 1200).input()).unwrap();
    }

    let (ro, problems) = Store::open_read_only(dir.path(), config(BIG)).unwrap();
    assert!(problems.is_empty(), "{problems:?}");
    let reports = ro.verify(None);
    assert_eq!(
        reports
            .iter()
            .map(|r| (r.key.as_str(), r.records, r.is_ok()))
            .collect::<Vec<_>>(),
        [("done", 200, true), ("live", 500, true)]
    );
    let states: Vec<_> = ro.list().into_iter().map(|e| e.state).collect();
    assert_eq!(
        states,
        [PresentationState::Complete, PresentationState::Recording]
    );
    let reader = ro.open_reader("live").unwrap().unwrap();
    assert_eq!(drain(&mut reader.cursor()).len(), 500);
    assert!(matches!(
        ro.open_writer("x", meta("x")),
        Err(CacheError::ReadOnly { .. })
    ));
    assert!(matches!(
        ro.purge("done", true),
        Err(CacheError::ReadOnly { .. })
    ));
    drop((reader, ro));

    // The writer was not disturbed.
    for i in 500..1000 {
        writer.append(&rec(2, i, 0, 1200).input()).unwrap();
    }
    writer.finish(PresentationState::Complete).unwrap();
    assert_eq!(read_all(&store, "live").len(), 1000);
}

#[test]
fn an_interrupted_creation_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    // Killed between creating the directory and renaming its metadata in.
    let remains = dir.path().join("0123456789abcdef");
    fs::create_dir(&remains).unwrap();
    fs::write(remains.join("meta.json.tmp"), b"{\"format\"").unwrap();
    let store = open(dir.path(), config(BIG));
    assert!(store.list().is_empty());
    assert!(!remains.exists());
}
