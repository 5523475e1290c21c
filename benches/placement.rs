//! Placement decisions per second: 100 nodes, 100,000 presentations each
//! held by two nodes (complete or partial), one decision = the nodes' views
//! with what each holds of the key (content map lookups) + the ranking.
//!
//! `cargo bench --bench placement`

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use streamcache::cluster::content::{ContentMap, Delta, Held};
use streamcache::cluster::membership::{Capacity, LoadSample, Membership};
use streamcache::cluster::placement::candidates;
use streamcache_types::{Npt, NptSpan};
use tokio::time::Instant;

const NODES: usize = 100;
const TITLES: usize = 100_000;

fn cluster() -> (Membership, ContentMap) {
    let now = Instant::now();
    let mut members = Membership::new(Duration::from_secs(1), 3, Duration::from_secs(30));
    for n in 0..NODES {
        let id = format!("node-{n:03}");
        let capacity = Capacity {
            max_sessions: 1000,
            max_egress_bps: 10_000_000_000,
        };
        members.register(&id, &format!("rtsp://10.0.0.{n}:554"), capacity, now);
        let sample = LoadSample {
            sessions: (n as u32 * 7) % 900,
            egress_bps: (n as u64 * 37_000_000) % 9_000_000_000,
            healthy: true,
            ..LoadSample::default()
        };
        members.report(&id, sample, now);
    }
    let mut content = ContentMap::default();
    for t in 0..TITLES {
        for (i, n) in [t % NODES, (t * 7 + 3) % NODES].into_iter().enumerate() {
            let held = Held {
                complete: i == 0,
                spans: vec![NptSpan {
                    start: Npt::ZERO,
                    end: Npt::from_secs(60),
                }],
            };
            let key = format!("rtsp://origin/title/{t}");
            content.apply(&format!("node-{n:03}"), Delta::Holds { key, held });
        }
    }
    (members, content)
}

fn placement(c: &mut Criterion) {
    let (members, content) = cluster();
    let keys: Vec<String> = (0..1024)
        .map(|i| format!("rtsp://origin/title/{}", (i * 977) % (TITLES + 500)))
        .collect();
    let mut group = c.benchmark_group("placement");
    group.throughput(Throughput::Elements(1));
    let mut i = 0;
    group.bench_function("decision_100_nodes_100k_titles", |b| {
        b.iter(|| {
            let key = &keys[i % keys.len()];
            i += 1;
            let views = members.views(|node| content.holding(key, node));
            black_box(candidates(key, &views, 2_000_000))
        })
    });
    group.finish();
}

criterion_group!(benches, placement);
criterion_main!(benches);
