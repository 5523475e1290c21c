//! HLS segment build time from a warm store: every segment of one stored
//! title built on demand (seek, depacketize, one fMP4 fragment), as the
//! HTTP listener does on a segment cache miss. Reports p50/p99/max and
//! what the segments weigh in the memory cache; then the export speed of
//! the same title (`streamcache cache export`'s code, MP4 to a file in the
//! system's temporary directory).
//!
//! `STREAMCACHE_BENCH_STORE=/var/cache/streamcache [STREAMCACHE_BENCH_KEY=KEY|ID]
//!  cargo bench --bench hls_segments` (default key: the largest title).

use std::time::Instant;

use streamcache::http::title::Plan;
use streamcache_cache::{Store, StoreConfig};

fn main() {
    let Some(dir) = std::env::var_os("STREAMCACHE_BENCH_STORE") else {
        eprintln!(
            "hls_segments: set STREAMCACHE_BENCH_STORE to a store directory (see the file's docs)"
        );
        return;
    };
    let config = StoreConfig {
        budget_bytes: u64::MAX,
        segment_max_bytes: 64 << 20,
        segment_max_duration_ns: 0,
    };
    let (store, _) =
        Store::open_read_only(std::path::Path::new(&dir), config).expect("the store opens");
    let key = match std::env::var("STREAMCACHE_BENCH_KEY") {
        Ok(k) => store.resolve(&k).expect("no such title"),
        Err(_) => {
            store
                .list()
                .into_iter()
                .max_by_key(|e| e.bytes)
                .expect("an empty store")
                .key
        }
    };
    let started = Instant::now();
    let (plan, _, _) = Plan::open(&store, &key).expect("the title can be cut");
    let open = started.elapsed();
    // Warm the page cache: the figure is the builder's, not the disk's.
    let mut bytes = 0;
    for n in 0..plan.segments.len() {
        bytes += plan.segment(&store, n).expect("segment").0.len();
    }
    let mut times = Vec::new();
    for _round in 0..3 {
        for n in 0..plan.segments.len() {
            let t = Instant::now();
            plan.segment(&store, n).expect("segment");
            times.push(t.elapsed());
        }
    }
    times.sort();
    let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
    let count = plan.segments.len();
    println!(
        "title {key}: {count} segments, {:.1} MB of fMP4",
        bytes as f64 / 1e6
    );
    println!("plan (index cut + segment 0): {:.1} ms", ms(open));
    println!(
        "segment build: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} builds)",
        ms(at(0.5)),
        ms(at(0.99)),
        ms(times[times.len() - 1]),
        times.len()
    );
    let mean = bytes / count.max(1);
    println!(
        "segment cache: {:.2} MB a segment; the default 64 MiB holds {} segments (the whole title takes {:.1} MB)",
        mean as f64 / 1e6,
        (64 << 20) / mean.max(1),
        bytes as f64 / 1e6
    );
    let config = streamcache::config::Config::parse(&format!(
        "[cache]\ndir = {}\n",
        toml::Value::String(dir.to_string_lossy().into_owned())
    ))
    .expect("config");
    let out = std::env::temp_dir().join("streamcache-bench-export.mp4");
    let args = streamcache::cli::export::ExportArgs {
        key: key.clone(),
        out: out.clone(),
        from: None,
        to: None,
        format: streamcache::cli::export::Format::Mp4,
    };
    let t = Instant::now();
    streamcache::cli::export::run(&config, args).expect("export");
    let took = t.elapsed().as_secs_f64();
    let size = std::fs::metadata(&out).map_or(0, |m| m.len());
    let _ = std::fs::remove_file(&out);
    let media = plan.segments.last().map_or(0.0, |s| s.end.as_secs_f64());
    println!(
        "export: {:.1} MB in {:.2} s = {:.0} MB/s, {:.0}x real time ({:.0} s of media)",
        size as f64 / 1e6,
        took,
        size as f64 / 1e6 / took,
        media / took,
        media
    );
}
