//! Damage on disk: random truncations and byte flips of sealed and unsealed
//! segments and of metadata files, segments and metadata deleted. After
//! each, in a copy of a small store:
//!
//! - a read-only open (and its verify) reports the damage before anything
//!   is repaired;
//! - an open for writing succeeds, and what it serves is only records that
//!   were written (checked byte for byte), in order, with no error;
//! - a title it calls complete plays whole, and every record served lies
//!   in the spans it reports;
//! - `verify` afterwards finds nothing, and a second open has nothing left
//!   to repair.
//!
//! Beside it, the two paths by hand: damage found at open, and damage a
//! cursor finds in a file changed under the running store.
//!
//! `STREAMCACHE_DAMAGE_ITERS` sets the number of iterations (default 1000);
//! `STREAMCACHE_DAMAGE_SEED` replays a run (the seed is printed).

mod common;

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use common::*;
use streamcache_cache::{
    CacheError, Metadata, Npt, NptRange, NptSpan, PresentationState, Store, StoreConfig,
};

const N: u64 = 100;

fn cfg() -> StoreConfig {
    StoreConfig {
        budget_bytes: 1 << 30,
        segment_max_bytes: SEGMENT,
        // 25 records a segment: several segments per run.
        segment_max_duration_ns: 1_000_000_000,
    }
}

fn payload_len(i: u64) -> usize {
    12 + (i * 7919 % 600) as usize
}

fn title(key: &str) -> Metadata {
    Metadata {
        range: Some(NptRange {
            start: Npt::ZERO,
            end: Some(Npt::from_ns((N - 1) * FRAME_NS)),
        }),
        ..meta(key)
    }
}

fn record(
    store: &Store,
    key: &str,
    tag: u32,
    range: std::ops::Range<u64>,
    state: PresentationState,
) {
    let mut writer = store.open_writer(key, title(key)).unwrap();
    for i in range {
        writer
            .append(&rec(tag, i, 0, payload_len(i)).input())
            .unwrap();
    }
    writer.finish(state).unwrap();
}

/// `a`: one run, complete. `b`: a run cut short and the fill that
/// completed it. `c`: a recording whose process died (its last segment
/// unsealed, its metadata still `recording`).
fn pristine(root: &Path) {
    let (store, _) = Store::open(root, cfg()).unwrap();
    record(&store, "a", 1, 0..N, PresentationState::Complete);
    record(&store, "b", 2, 0..N / 2, PresentationState::Partial);
    record(&store, "b", 2, N / 2..N, PresentationState::Complete);
    record(&store, "c", 3, 0..60, PresentationState::Partial);
    let c = dir_of(&store, "c");
    drop(store);
    let meta = c.join("meta.json");
    let text = fs::read_to_string(&meta).unwrap();
    fs::write(&meta, text.replace("\"partial\"", "\"recording\"")).unwrap();
    // As a kill leaves a segment: no trailer, zeros up to its capacity.
    let last = segments(&c).pop().unwrap();
    let bytes = fs::read(&last).unwrap();
    let records_end = u64::from_le_bytes(bytes[bytes.len() - 16..][..8].try_into().unwrap());
    let file = fs::OpenOptions::new().write(true).open(&last).unwrap();
    file.set_len(records_end).unwrap();
    file.set_len(SEGMENT).unwrap();
}

fn dir_of(store: &Store, key: &str) -> PathBuf {
    let id = store.list().into_iter().find(|e| e.key == key).unwrap().id;
    store.root().join(id)
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    files.sort();
    files
}

fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), target).unwrap();
        }
    }
}

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

/// One random damage to the store in `root`; returns what was done.
fn damage(root: &Path, rng: &mut Rng) -> String {
    let mut dirs: Vec<_> = fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir() && !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    dirs.sort();
    let dir = &dirs[rng.below(dirs.len() as u64) as usize];
    let mut files = segments(dir);
    let meta = dir.join("meta.json");
    if rng.below(5) == 0 || files.is_empty() {
        if !meta.exists() {
            return "nothing".into();
        }
        let text = fs::read_to_string(&meta).unwrap_or_default();
        return match rng.below(5) {
            0 => {
                fs::remove_file(&meta).unwrap();
                format!("deleted {}", meta.display())
            }
            1 => {
                let edited = text.replacen("\"tracks\": [", "\"tracks\": [], \"x\": [", 1);
                fs::write(&meta, edited).unwrap();
                format!("emptied the tracks of {}", meta.display())
            }
            2 => {
                fs::write(&meta, text.replacen("m=audio", "a=audio", 1)).unwrap();
                format!("removed a media section from {}", meta.display())
            }
            3 => {
                let len = rng.below(text.len() as u64);
                fs::OpenOptions::new()
                    .write(true)
                    .open(&meta)
                    .unwrap()
                    .set_len(len)
                    .unwrap();
                format!("truncated {} to {len}", meta.display())
            }
            _ => flip_random(&meta, rng),
        };
    }
    let file = files.swap_remove(rng.below(files.len() as u64) as usize);
    match rng.below(4) {
        0 => {
            let len = fs::metadata(&file).unwrap().len();
            let cut = rng.below(len);
            fs::OpenOptions::new()
                .write(true)
                .open(&file)
                .unwrap()
                .set_len(cut)
                .unwrap();
            format!("truncated {} to {cut}", file.display())
        }
        1 if rng.below(4) == 0 => {
            fs::remove_file(&file).unwrap();
            format!("deleted {}", file.display())
        }
        _ => flip_random(&file, rng),
    }
}

/// Flips 1 to 16 bytes, contiguous or scattered, in `path`.
fn flip_random(path: &Path, rng: &mut Rng) -> String {
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let len = file.metadata().unwrap().len();
    if len == 0 {
        return "nothing".into();
    }
    let n = 1 + rng.below(16);
    let contiguous = rng.below(2) == 0;
    let start = rng.below(len);
    for k in 0..n {
        let at = if contiguous {
            (start + k).min(len - 1)
        } else {
            rng.below(len)
        };
        let mut b = [0u8];
        file.read_exact_at(&mut b, at).unwrap();
        b[0] ^= 1 + rng.below(255) as u8;
        file.write_all_at(&b, at).unwrap();
    }
    format!("flipped {n} bytes of {} from {start}", path.display())
}

/// Problems worth a read-only report: not a live writer's torn tail (`c`
/// is recording, so read-only its unsealed tail is taken as live).
fn reportable(p: &CacheError, live: &Path) -> bool {
    !matches!(p, CacheError::Recovered { path, .. } if path.parent() == Some(live))
}

#[test]
fn damage_is_reported_cut_and_never_served() {
    let iterations: u32 =
        std::env::var("STREAMCACHE_DAMAGE_ITERS").map_or(1000, |v| v.parse().unwrap());
    let seed = std::env::var("STREAMCACHE_DAMAGE_SEED").map_or_else(
        |_| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        },
        |v| v.parse().unwrap(),
    );
    println!("STREAMCACHE_DAMAGE_SEED={seed}");
    let mut rng = Rng(seed);
    let base = tempfile::tempdir().unwrap();
    let pristine_dir = base.path().join("pristine");
    pristine(&pristine_dir);
    let c_dir = {
        let (ro, _) = Store::open_read_only(&pristine_dir, cfg()).unwrap();
        PathBuf::from(dir_of(&ro, "c").file_name().unwrap())
    };
    let started = Instant::now();
    let (mut cut, mut complete) = (0, 0);
    for iteration in 0..iterations {
        let root = base.path().join(format!("i{iteration}"));
        copy_tree(&pristine_dir, &root);
        let done: Vec<_> = (0..1 + rng.below(3))
            .map(|_| damage(&root, &mut rng))
            .collect();
        let ctx = format!("iteration {iteration} ({done:?})");
        let live = root.join(&c_dir);

        let (ro, ro_open) = Store::open_read_only(&root, cfg()).unwrap();
        let ro_verify: Vec<_> = ro
            .verify(None)
            .into_iter()
            .flat_map(|r| r.problems)
            .collect();
        drop(ro);

        let (store, problems) = Store::open(&root, cfg()).unwrap();
        if problems.iter().any(|p| reportable(p, &live)) {
            assert!(
                ro_open
                    .iter()
                    .chain(&ro_verify)
                    .any(|p| reportable(p, &live)),
                "{ctx}: open found {problems:?}, read-only nothing"
            );
            cut += 1;
        }
        let served = check_served(&store, &ctx);
        complete += served;
        // What stays is only files of another format version (a flip in
        // a version number), which open reported and keeps.
        let kept_for_another_version = |p: &CacheError| match p {
            CacheError::UnsupportedVersion { path, .. } => problems
                .iter()
                .any(|q| matches!(q, CacheError::UnsupportedVersion { path: q, .. } if q == path)),
            CacheError::Orphan { reason, .. } => reason.contains("is not supported"),
            _ => false,
        };
        for report in store.verify(None) {
            assert!(
                report.problems.iter().all(kept_for_another_version),
                "{ctx}: after repair: {:?}",
                report.problems
            );
        }
        assert!(
            store
                .orphans()
                .iter()
                .all(|o| o.reason.contains("is not supported")),
            "{ctx}"
        );
        drop(store);
        let (store, again) = Store::open(&root, cfg()).unwrap();
        assert!(
            again.iter().all(kept_for_another_version),
            "{ctx}: a second open found {again:?}"
        );
        assert_eq!(check_served(&store, &ctx), served, "{ctx}");
        drop(store);
        fs::remove_dir_all(&root).unwrap();
    }
    println!(
        "{iterations} damaged stores in {:.1?}: {cut} with damage repaired, {complete} complete titles played whole",
        started.elapsed()
    );
}

/// Plays every title; checks what it serves against what was written and
/// against the state and spans the store reports. Returns the number of
/// complete titles.
fn check_served(store: &Store, ctx: &str) -> u32 {
    let mut complete = 0;
    for entry in store.list() {
        let reader = store.open_reader(&entry.key).unwrap().unwrap();
        let meta = reader.metadata().clone();
        let mut cursor = reader.cursor();
        let mut served: Vec<(u32, u64, u64)> = Vec::new();
        while let Some(r) = cursor.next() {
            let r = r.unwrap_or_else(|e| panic!("{ctx}: {}: served an error: {e}", entry.key));
            let (tag, i) = identify(&r);
            served.push((tag, i, r.media_time.as_ns()));
        }
        assert!(cursor.is_complete(), "{ctx}");
        assert!(
            served
                .windows(2)
                .all(|w| w[0].0 == w[1].0 && w[0].1 < w[1].1),
            "{ctx}: {}: out of order or mixed: {served:?}",
            entry.key
        );
        for &(_, _, t) in &served {
            let t = Npt::from_ns(t);
            assert!(
                entry.spans.iter().any(|s| s.start <= t && t <= s.end),
                "{ctx}: {}: a record at {t} outside the spans {:?}",
                entry.key,
                entry.spans
            );
        }
        if entry.state == PresentationState::Complete {
            // Whole: from the start to within a second of the end, with no
            // gap wider than the slack the spans allow.
            let range = meta.range.unwrap();
            let end = range.end.unwrap();
            let times: Vec<u64> = served.iter().map(|s| s.2).collect();
            let held = [NptSpan {
                start: Npt::from_ns(times.first().copied().unwrap_or(u64::MAX)),
                end: Npt::from_ns(times.last().copied().unwrap_or(0)),
            }];
            assert!(
                NptSpan::held_to(&held, range.start).saturating_add(Npt::from_secs(1)) >= end
                    && times.windows(2).all(|w| w[1] - w[0] <= 500_000_000),
                "{ctx}: {} is complete but plays {} records",
                entry.key,
                served.len()
            );
            complete += 1;
        }
    }
    complete
}

/// Records per 128 KiB segment of 1,200-byte payloads.
const PER_SEGMENT: u64 = 107;

/// A store in `dir` holding title "k" complete: its 1,000 records and its
/// segment files.
fn stored_title(dir: &Path) -> (Store, Vec<Rec>, Vec<PathBuf>) {
    let store = open(dir, config(BIG));
    let recs = write(&store, "k", 1, 1000, 0, PresentationState::Complete);
    let files = segment_files(&store, "k");
    (store, recs, files)
}

#[test]
fn damage_found_at_open_cuts_the_run_and_makes_the_title_partial() {
    let dir = tempfile::tempdir().unwrap();
    let (store, recs, files) = stored_title(dir.path());
    drop(store);
    // In the payload of the 3rd record of the 2nd (sealed) segment.
    let damaged_at = 64 + 2 * 1220;
    flip(&files[1], damaged_at + 100);

    // Read-only, nothing changes and every problem is listed.
    let (ro, problems) = Store::open_read_only(dir.path(), config(BIG)).unwrap();
    assert_eq!(problems.len(), 1, "{problems:?}");
    let report = &ro.verify(Some("k"))[0];
    let messages: Vec<_> = report.problems.iter().map(|p| p.to_string()).collect();
    assert!(
        messages[0].starts_with(&format!(
            "{}: at offset {damaged_at}: record checksum mismatch; intact records resume at offset {}",
            files[1].display(),
            damaged_at + 1220
        )),
        "{messages:?}"
    );
    // And the segments after it in the run, which the cut drops.
    assert_eq!(messages.len(), 1 + files.len() - 2, "{messages:?}");
    assert_eq!(ro.list()[0].state, PresentationState::Partial);
    drop(ro);

    let (store, problems) = Store::open(dir.path(), config(BIG)).unwrap();
    assert!(
        matches!(
            &problems[..],
            [CacheError::Damaged { path, offset, kept_records: 2, dropped_records, dropped_segments, .. }]
                if *path == files[1] && *offset == damaged_at
                    && *dropped_records == 1000 - (PER_SEGMENT + 3) && *dropped_segments == files.len() - 2
        ),
        "{problems:?}"
    );
    assert_eq!(store.corrupt_records(), 1);
    let kept = (PER_SEGMENT + 2) as usize;
    assert_eq!(read_all(&store, "k"), recs[..kept]);
    let meta = store.metadata("k").unwrap().unwrap();
    assert_eq!(meta.state, PresentationState::Partial);
    assert_eq!(
        meta.spans,
        [NptSpan {
            start: Npt::ZERO,
            end: Npt::from_ns((kept as u64 - 1) * FRAME_NS)
        }]
    );
    assert!(store.verify(None).iter().all(|r| r.is_ok()));
    assert_eq!(segment_files(&store, "k").len(), 2);
    drop(store);
    // The cut is final.
    let store = open(dir.path(), config(BIG));
    assert_eq!(read_all(&store, "k").len(), kept);
}

#[test]
fn damage_found_by_a_cursor_is_skipped_exactly_and_cuts_the_title_there() {
    let dir = tempfile::tempdir().unwrap();
    let (store, recs, files) = stored_title(dir.path());
    let reader = store.open_reader("k").unwrap().unwrap();
    let mut early = reader.cursor();
    // The file changes under the mapping: the length field of record 3 of
    // the 2nd segment, so that it claims the rest of the segment.
    let damaged_at = 64 + 2 * 1220;
    flip(&files[1], damaged_at + 2);
    let (mut good, mut errors) = (Vec::new(), Vec::new());
    while let Some(r) = early.next() {
        match r {
            Ok(r) => good.push(Rec::of(&r)),
            Err(e) => errors.push(e.to_string()),
        }
    }
    assert!(early.is_complete());
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].starts_with(&format!("{}: at offset {damaged_at}:", files[1].display())));
    // Exactly the damaged record is missing.
    let damaged = (PER_SEGMENT + 2) as usize;
    let mut want = recs.clone();
    want.remove(damaged);
    assert_eq!(good, want);
    assert_eq!(store.corrupt_records(), 1);

    // The title is now what plays before the damage.
    let meta = store.metadata("k").unwrap().unwrap();
    assert_eq!(meta.state, PresentationState::Partial);
    assert_eq!(
        meta.spans,
        [NptSpan {
            start: Npt::ZERO,
            end: Npt::from_ns((damaged as u64 - 1) * FRAME_NS)
        }]
    );
    assert_eq!(store.list()[0].state, PresentationState::Partial);
    // A new cursor plays up to it, then what a refill records.
    assert_eq!(read_all(&store, "k"), recs[..damaged]);
    let refill = write(
        &store,
        "k",
        1,
        1000 - damaged as u64,
        damaged as u64 * FRAME_NS,
        PresentationState::Complete,
    );
    let got = read_all(&store, "k");
    assert_eq!(got.len(), 1000);
    assert_eq!(got[..damaged], recs[..damaged]);
    assert_eq!(got[damaged..], refill[..]);
    // Counted once, however many cursors meet it.
    drop((early, reader));
    assert_eq!(store.corrupt_records(), 1);
    drop(store);

    // At the next open the damaged run is cut there and the refill plays
    // after it.
    let (store, problems) = Store::open(dir.path(), config(BIG)).unwrap();
    assert!(
        matches!(
            &problems[..],
            [CacheError::Damaged {
                kept_records: 2,
                ..
            }]
        ),
        "{problems:?}"
    );
    assert_eq!(read_all(&store, "k").len(), 1000);
    assert_eq!(
        store.metadata("k").unwrap().unwrap().state,
        PresentationState::Complete
    );
}

/// Cursors sharing a segment's mapping check each record's checksum once
/// between them; a play after the last of them has left the segment maps it
/// anew and checks again.
#[test]
fn records_are_checked_once_per_mapping_and_again_by_the_next_play() {
    let dir = tempfile::tempdir().unwrap();
    let (store, recs, files) = stored_title(dir.path());
    let reader = store.open_reader("k").unwrap().unwrap();
    // `ahead` reads into the 2nd segment, past its 3rd record, and stays there.
    let mut ahead = reader.cursor();
    let read = (PER_SEGMENT + 5) as usize;
    for want in &recs[..read] {
        let got = ahead.next().expect("a record").expect("intact");
        assert_eq!(Rec::of(&got), *want);
    }
    // The 3rd record's payload changes after `ahead` found it intact: a
    // cursor sharing the mapping takes it as checked.
    let damaged_at = 64 + 2 * 1220;
    flip(&files[1], damaged_at + 100);
    let mut behind = reader.cursor();
    let mut records = 0;
    while let Some(r) = behind.next() {
        r.expect("checked by `ahead`, not again");
        records += 1;
    }
    assert_eq!(records, 1000);
    assert_eq!(store.corrupt_records(), 0);
    drop((ahead, behind));

    // The next play checks every record again and meets the damage.
    let mut next = reader.cursor();
    let mut errors = 0;
    while let Some(r) = next.next() {
        errors += usize::from(r.is_err());
    }
    assert_eq!(errors, 1);
    assert_eq!(store.corrupt_records(), 1);
}
