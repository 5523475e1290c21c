//! Crash safety: a writer in a child process is killed with SIGKILL at random
//! moments; after each kill the store must reopen, keep every record the
//! child had appended (acknowledged on its stdout), and serve nothing torn.
//!
//! The child is this test binary run again with `STREAMCACHE_CRASH_CHILD`
//! set, running only `crash_child`. It also finishes and reopens writers,
//! and purges a presentation that grew large, so kills land in those too,
//! and in the recovery its own `Store::open` does of the previous crash.
//!
//! `STREAMCACHE_CRASH_ITERS` sets the number of kills (default 50);
//! `STREAMCACHE_CRASH_SEED` replays a run (the seed is printed).

// `u64::is_multiple_of` needs Rust 1.87; the workspace supports 1.80.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use streamcache_cache::{CacheError, PresentationState, Store, StoreConfig};

const CHILD_ENV: &str = "STREAMCACHE_CRASH_CHILD";
const TAG_ENV: &str = "STREAMCACHE_CRASH_TAG";

fn cfg() -> StoreConfig {
    StoreConfig {
        budget_bytes: 48 << 20,
        segment_max_bytes: SEGMENT,
        segment_max_duration_ns: 4_000_000_000,
    }
}

fn key_of(tag: u32) -> String {
    format!("rtsp://origin/k{}", tag % 3)
}

/// Start time of tag `tag`'s records: later tags play later.
fn t0(tag: u32) -> u64 {
    u64::from(tag) * 1_000_000_000_000
}

fn payload_len(i: u64) -> usize {
    12 + (i * 7919 % 1400) as usize
}

/// The writer process. Does nothing unless run as the child.
#[test]
fn crash_child() {
    let Ok(root) = std::env::var(CHILD_ENV) else {
        return;
    };
    let tag: u32 = std::env::var(TAG_ENV).unwrap().parse().unwrap();
    if let Err(e) = child(Path::new(&root), tag) {
        eprintln!("child stopped: {e}");
    }
}

fn child(root: &Path, tag: u32) -> Result<(), CacheError> {
    let (store, _) = Store::open(root, cfg())?;
    let key = key_of(tag);
    if store
        .list()
        .iter()
        .any(|e| e.key == key && e.bytes > 8 << 20)
    {
        store.purge(&key, false)?;
    }
    let mut out = std::io::stdout().lock();
    let mut i = 0u64;
    loop {
        let mut writer = store.open_writer(&key, meta(&key))?;
        for _ in 0..2000 {
            writer.append(&rec(tag, i, t0(tag), payload_len(i)).input())?;
            i += 1;
            if i.is_multiple_of(8) {
                // Appended, so it must survive the kill.
                let _ = write!(out, "ack:{i};");
                let _ = out.flush();
            }
        }
        writer.finish(PresentationState::Partial)?;
    }
}

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[test]
fn killed_writers_lose_nothing_acknowledged_and_serve_nothing_torn() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let iterations: u32 =
        std::env::var("STREAMCACHE_CRASH_ITERS").map_or(50, |v| v.parse().unwrap());
    let seed = std::env::var("STREAMCACHE_CRASH_SEED").map_or_else(
        |_| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        },
        |v| v.parse().unwrap(),
    );
    println!("STREAMCACHE_CRASH_SEED={seed}");
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let started = Instant::now();
    // Records held per tag once recovered: must never change afterwards.
    let mut held: HashMap<u32, u64> = HashMap::new();
    let mut cut = 0;
    for tag in 0..iterations {
        let mut child = Command::new(&exe)
            .args(["crash_child", "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, dir.path())
            .env(TAG_ENV, tag.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let acks = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stdout.read_to_string(&mut text);
            text.split(';')
                .filter_map(|s| s.rsplit("ack:").next()?.parse::<u64>().ok())
                .max()
                .unwrap_or(0)
        });
        std::thread::sleep(Duration::from_micros(rng.below(120_000)));
        child.kill().unwrap();
        child.wait().unwrap();
        let acked = acks.join().unwrap();

        let (store, problems) = Store::open(dir.path(), cfg()).unwrap();
        for problem in &problems {
            assert!(
                matches!(problem, CacheError::Recovered { .. }),
                "iteration {tag}: {problem}"
            );
        }
        cut += problems.len();
        let mut counts: HashMap<u32, u64> = HashMap::new();
        for entry in store.list() {
            assert!(!entry.writing && entry.state == PresentationState::Partial);
            let reader = store.open_reader(&entry.key).unwrap().unwrap();
            let mut cursor = reader.cursor();
            while let Some(record) = cursor.next() {
                let record =
                    record.unwrap_or_else(|e| panic!("iteration {tag}: served an error: {e}"));
                let (t, i) = identify(&record);
                assert_eq!(key_of(t), entry.key);
                let n = counts.entry(t).or_default();
                assert_eq!(
                    i, *n,
                    "iteration {tag}: tag {t} out of order or with a hole"
                );
                *n += 1;
            }
            assert!(cursor.is_complete());
        }
        let now = counts.get(&tag).copied().unwrap_or(0);
        assert!(
            now >= acked,
            "iteration {tag}: {acked} records acknowledged, {now} recovered"
        );
        for (t, n) in &counts {
            if let Some(before) = held.get(t) {
                assert_eq!(before, n, "iteration {tag}: tag {t} changed after recovery");
            }
        }
        held.retain(|t, _| counts.contains_key(t));
        held.extend(counts);
        for report in store.verify(None) {
            assert!(report.is_ok(), "iteration {tag}: {:?}", report.problems);
        }
    }
    println!(
        "{iterations} kills in {:.1?}: {cut} torn segments cut, {} records held",
        started.elapsed(),
        held.values().sum::<u64>()
    );
}
