//! Issue 13 (Cluster II), the proof with real processes on loopback: one
//! `streamcache master` and three nodes with peer servers, the GStreamer
//! origin, ffmpeg and gst-launch players sent via the master.
//!
//! - A title complete on A, A at its session cap: players sent via the
//!   master go to B, which copies the title from A — the origin sees
//!   nothing, the players decode frame for frame as a direct pull, B's
//!   records are A's.
//! - Rates: a copy under a 20 Mbit/s link cap never goes above it by more
//!   than 5 % over any window of 2 s or more; two copies out of a source
//!   with 30 Mbit/s of copy egress get 15 Mbit/s each, and keep to it.
//! - Two sources, one destination: each gives a disjoint part of the
//!   title, together all of it.
//!
//! Failures (bytes flipped on the source, the source killed mid-copy) are
//! in `cluster_copy_faults.rs`.

mod support;

use std::thread;
use std::time::Duration;

use serde_json::Value;
use support::*;

const WAIT: Duration = Duration::from_secs(60);

/// A source node: at most one player from the master, a segment every
/// 2 s.
fn source(id: &'static str) -> NodeSetup {
    NodeSetup::peer(id).with("max_sessions = 1").segment_secs(2)
}

/// The value of the master's metric line starting with `prefix`.
fn metric(master: &Master, prefix: &str) -> f64 {
    let text = master.admin_get("/metrics").body;
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no metric {prefix}:\n{text}"))
}

/// A 6 s title complete on A (played there directly), A at its session
/// cap (`max_sessions = 1`, one session held), C without room for a player
/// (`max_egress_bps` below one player's bit rate): the master sends the
/// title's players to B, and B copies the title from A before it serves
/// them — one copy A → B, done; the origin sees no DESCRIBE or PLAY after
/// A's fill; `ffmpeg -f framemd5` via the master equals a direct pull and
/// gst-launch plays to the end; B stores the title complete, its records
/// those of A (their exports are byte-identical) and `cache verify` passes.
#[test]
fn a_full_holder_s_title_is_copied_to_the_node_the_master_picks() {
    let secs = 6;
    let media = test_media(secs);
    let origin = Origin::start(OriginOpts::new().media(&media).titles(&["one"]));
    let reference = thread::spawn(move || direct_pull(secs));
    let no_room = NodeSetup {
        id: "node-3",
        cluster: "max_egress_bps = 1000\n".into(),
        segment_secs: 60,
    };
    let cluster = copy_cluster(
        &[cluster_mount(&origin)],
        "",
        &[source("node-1"), NodeSetup::peer("node-2"), no_room],
    );
    let (a, b) = (cluster.node("node-1"), cluster.node("node-2"));
    let (path, k) = (cluster_title("one"), cluster_key(&origin, "one"));
    let (filled, _held) = fill_and_fill_up(&cluster, &["node-1"], &path, &k);
    let before = origin.describes_and_plays();

    assert_eq!(cluster.master.place(&cluster, &path), "node-2");
    let url = cluster.master.url(&path);
    let video = framemd5(&url, Some("tcp"), "0:v", &[]);
    let gst = gst_play(&url, "tcp", None);
    let reference = reference.join().unwrap();
    assert_same_video("the fill on A", &filled[0], &reference);
    assert_same_video("ffmpeg via the master", &video, &reference);
    assert!(gst.got_eos, "gst-launch via the master: {:?}", gst.output);

    let ended = cluster.master.wait_copies_ended(&k, 1, WAIT);
    assert_eq!(ended.len(), 1, "{ended:#?}");
    let copy = &ended[0];
    assert_eq!(
        (&copy["source"], &copy["destination"], &copy["outcome"]),
        (
            &Value::from("node-1"),
            &Value::from("node-2"),
            &Value::from("done")
        ),
        "{copy:#}"
    );
    assert_eq!(copy["from_secs"], 0.0, "{copy:#}");
    assert!(copy["bytes"].as_u64().unwrap_or(0) > 0, "{copy:#}");
    assert_eq!(
        metric(&cluster.master, "streamcache_master_copies_started_total"),
        1.0
    );
    assert_eq!(
        metric(
            &cluster.master,
            "streamcache_master_copies_ended_total{outcome=\"done\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(&cluster.master, "streamcache_master_copies_running"),
        0.0
    );

    origin.assert_untouched_since(before);
    assert_eq!(
        b.logs().matches("session started").count(),
        2,
        "{}",
        b.logs()
    );
    b.wait_cached(&b.url(&path), WAIT);
    b.assert_verifies(&k);
    assert!(
        b.export_ts(&k) == a.export_ts(&k),
        "B's records are not A's"
    );
}

/// The copy-rate proof. A 15 s title of about 16 Mbit/s (30 MB) is
/// recorded on A twice, as titles x and y (15 s of real time, once for
/// both rate checks); A takes one player from the master and has one,
/// B and C take one each; A's copy egress is 30 Mbit/s and every link is
/// capped at 20 Mbit/s.
///
/// x placed via the master goes to D1 (B or C: A is full), whose session
/// is then held: the copy A → D1 is allocated 20 Mbit/s (the link cap).
/// After 6 s, y goes to D2, the other one: A's 30 Mbit/s is shared, both
/// copies are allocated 15 Mbit/s (`/api/v1/copies` `rate_bps`).
///
/// Measured, the rate over every window of 2 s or more between two
/// samples: what the source sent (its write calls' bytes, `/proc/PID/io`
/// `wchar`, sampled every 20 ms: the peer responses are nearly all of it),
/// and each copy's bytes received as its destination reports them
/// (`/api/v1/copies` `bytes`, every report period, sampled every 25 ms).
/// Alone, the copy stays within 20 × 1.05 Mbit/s (at the source and as
/// received); together, each within 15 × 1.05 and A within 30 × 1.05.
/// Both end done, both titles complete on their nodes, and the origin sees
/// nothing.
#[test]
fn copies_keep_to_the_link_cap_and_share_a_source_s_copy_egress() {
    const SECS: u32 = 15;
    const MBPS: u32 = 16;
    const LINK: f64 = 20e6;
    const SHARE: f64 = 15e6;
    const SLACK: f64 = 1.05;
    let media = noisy_media(SECS, MBPS);
    let origin = Origin::start(OriginOpts::new().media(&media).titles(&["x", "y"]));
    let cluster = copy_cluster(
        &[cluster_mount(&origin)],
        "copy_link_bps = 20000000\n",
        &[
            NodeSetup::peer("node-1")
                .with("max_sessions = 1")
                .with("max_copy_egress_bps = 30000000"),
            NodeSetup::peer("node-2").with("max_sessions = 1"),
            NodeSetup::peer("node-3").with("max_sessions = 1"),
        ],
    );
    let master = &cluster.master;
    let a = cluster.node("node-1");
    let (x, y) = (cluster_title("x"), cluster_title("y"));
    let (kx, ky) = (cluster_key(&origin, "x"), cluster_key(&origin, "y"));
    thread::scope(|s| {
        for path in [&x, &y] {
            s.spawn(move || {
                let pull = ffmpeg_pull(&a.url(path), "tcp", SECS);
                assert!(pull.output.success(), "recording {path} on A: {pull:?}");
                a.wait_cached(&a.url(path), WAIT);
            });
        }
    });
    let _held_a = a.hold_session(&x);
    master.wait_full("node-1", WAIT);
    for k in [&kx, &ky] {
        assert!(poll_until(WAIT, || master.holds_complete(k, "node-1")));
    }
    let plays = origin.requests("PLAY").len();
    let pa = a.pid();
    let mut sampler = Sampler::start(&[pa], master.admin_port());

    // One copy: the link cap.
    let d1 = master.place(&cluster, &x);
    assert_ne!(d1, "node-1");
    let _held_d1 = cluster.node(&d1).hold_session(&x);
    let p1_start = sampler.now();
    let alone = running_rates(master, &[&kx], |r| r[0] == LINK as u64);
    thread::sleep(Duration::from_secs_f64(
        (p1_start + 6.0 - sampler.now()).max(0.0),
    ));
    let p1_end = sampler.now();

    // Two copies out of A: its copy egress shared.
    let d2 = master.place(&cluster, &y);
    assert!(d2 != d1 && d2 != "node-1", "y went to {d2}, x to {d1}");
    let shared = running_rates(master, &[&kx, &ky], |r| {
        r.iter().all(|&r| r == SHARE as u64)
    });
    let p2_start = sampler.now() + 0.5;
    assert!(
        poll_until(WAIT, || entries(&master.copies()["running"], &kx)
            .is_empty()),
        "the copy of x never ended"
    );
    let p2_end = sampler.now() - 0.5;
    let ended_x = master.wait_copies_ended(&kx, 1, WAIT);
    let ended_y = master.wait_copies_ended(&ky, 1, WAIT);
    sampler.stop();

    let (idx, idy) = (alone[0].0, shared[1].0);
    assert_eq!(shared[0].0, idx);
    let wchar = |io: &Io| io.wchar;
    let measured = [
        (
            "alone: A sent",
            sampler.io_series(pa, p1_start, p1_end, wchar),
            LINK,
        ),
        (
            "alone: x's copy",
            sampler.copy_series(idx, p1_start, p1_end),
            LINK,
        ),
        (
            "shared: A sent",
            sampler.io_series(pa, p2_start, p2_end, wchar),
            2.0 * SHARE,
        ),
        (
            "shared: x's copy",
            sampler.copy_series(idx, p2_start, p2_end),
            SHARE,
        ),
        (
            "shared: y's copy",
            sampler.copy_series(idy, p2_start, p2_end),
            SHARE,
        ),
    ];
    let mut report = format!(
        "allocated (copy id, bit/s): alone {alone:?}, shared {shared:?}; x to {d1}, y to {d2}; \
         alone {p1_start:.1}-{p1_end:.1} s, shared {p2_start:.1}-{p2_end:.1} s\n"
    );
    let mut off = Vec::new();
    for (what, series, cap) in &measured {
        let r = rates(series, 2.0);
        report += &format!(
            "{what}: max {:.2} Mbit/s over windows >= 2 s, mean {:.2} Mbit/s over {:.1} s, {} samples (cap {:.1})\n",
            r.max_bps / 1e6,
            r.mean_bps / 1e6,
            r.secs,
            series.len(),
            cap / 1e6
        );
        // Within the cap; and held back by it, not by a slow machine.
        if r.max_bps > cap * SLACK || r.secs < 2.0 || r.mean_bps < cap * 0.5 {
            off.push(*what);
        }
    }
    eprintln!("{report}");
    assert!(off.is_empty(), "off the cap: {off:?}\n{report}");

    for (ended, dest) in [(&ended_x, &d1), (&ended_y, &d2)] {
        assert_eq!(ended.len(), 1, "{ended:#?}");
        assert_eq!(ended[0]["outcome"], "done", "{ended:#?}");
        assert_eq!(ended[0]["destination"], dest.as_str(), "{ended:#?}");
        assert_eq!(ended[0]["source"], "node-1", "{ended:#?}");
    }
    for (dest, path) in [(&d1, &x), (&d2, &y)] {
        let node = cluster.node(dest);
        node.wait_cached(&node.url(path), WAIT);
    }
    assert_eq!(
        origin.requests("PLAY").len(),
        plays,
        "{:#?}",
        origin.requests("")
    );
}

/// Waits until the running copies of `keys` (one each) have rates that
/// satisfy `wanted` (in the order of `keys`); returns their ids and rates.
fn running_rates(
    master: &Master,
    keys: &[&str],
    wanted: impl Fn(&[u64]) -> bool,
) -> Vec<(u64, u64)> {
    let mut rates: Vec<(u64, u64)> = Vec::new();
    let reached = poll_until(Duration::from_secs(10), || {
        let copies = master.copies();
        rates = keys
            .iter()
            .filter_map(|k| {
                let copy = entries(&copies["running"], k).into_iter().next()?;
                Some((copy["id"].as_u64()?, copy["rate_bps"].as_u64()?))
            })
            .collect();
        let only: Vec<u64> = rates.iter().map(|r| r.1).collect();
        rates.len() == keys.len() && wanted(&only)
    });
    assert!(reached, "rates {rates:?}: {:#}", master.copies());
    rates
}

/// A 10 s title complete on A and C (a segment every 2 s), both at their
/// session cap: a player sent via the master goes to B, which takes the
/// title from both at once — two copies, one from each, whose npt spans
/// are disjoint and together cover the title (`/api/v1/copies`). What each
/// source served (the copy's bytes, as the destination counted them) is
/// the byte range of its records in its segment files, to within one
/// index interval where the two meet (a part that starts after the title's
/// start is read from the index entry at or before its start). B stores the
/// title complete, verified; the player decodes as a direct pull; the
/// origin sees nothing.
#[test]
fn two_sources_give_disjoint_parts_of_a_title() {
    let secs = 10;
    let media = test_media(secs);
    let origin = Origin::start(OriginOpts::new().media(&media).titles(&["two"]));
    let reference = thread::spawn(move || direct_pull(secs));
    let cluster = copy_cluster(
        &[cluster_mount(&origin)],
        "",
        &[
            source("node-1"),
            NodeSetup::peer("node-2"),
            source("node-3"),
        ],
    );
    let (path, k) = (cluster_title("two"), cluster_key(&origin, "two"));
    let (filled, _held) = fill_and_fill_up(&cluster, &["node-1", "node-3"], &path, &k);
    let before = origin.describes_and_plays();

    assert_eq!(cluster.master.place(&cluster, &path), "node-2");
    let mut ended = cluster.master.wait_copies_ended(&k, 2, WAIT);
    ended.sort_by(|p, q| {
        p["from_secs"]
            .as_f64()
            .partial_cmp(&q["from_secs"].as_f64())
            .unwrap()
    });
    assert_eq!(ended.len(), 2, "{ended:#?}");
    let (first, second) = (&ended[0], &ended[1]);
    for copy in &ended {
        assert_eq!(copy["outcome"], "done", "{copy:#}");
        assert_eq!(copy["destination"], "node-2", "{copy:#}");
        assert!(copy["bytes"].as_u64().unwrap_or(0) > 0, "{copy:#}");
    }
    assert_ne!(first["source"], second["source"], "{ended:#?}");
    assert_eq!(first["from_secs"], 0.0, "{ended:#?}");
    let split = second["from_secs"].as_f64().unwrap();
    assert_eq!(first["to_secs"].as_f64(), Some(split), "{ended:#?}");
    let title_end = cluster.master.title(&k).unwrap()["nodes"][0]["spans"][0][1]
        .as_f64()
        .unwrap();
    assert!(
        second["to_secs"].is_null() || second["to_secs"].as_f64() >= Some(title_end - 0.05),
        "the second part ends before the title ({title_end} s): {ended:#?}"
    );
    assert!(split > 1.0 && split < title_end - 1.0, "{ended:#?}");

    // What each source served (the bytes the destination counted) is what
    // the receiver's rules read of its segment files: nothing twice (no
    // retry), from its part's start to its end. Where the parts meet, the
    // second reads from the index entry at or before the split and the
    // first to the entry at or after it: at most one index interval is
    // read by both (its records are kept by one only: the first keeps those
    // before the first keyframe at or after the split, the second the rest).
    let mut reads = Vec::new();
    for copy in &ended {
        let source = cluster.node(copy["source"].as_str().unwrap());
        let from_ns = (copy["from_secs"].as_f64().unwrap() * 1e9) as u64;
        let to_ns = copy["to_secs"].as_f64().map(|s| (s * 1e9) as u64);
        let read = read_range(source, &k, from_ns, to_ns);
        let got = copy["bytes"].as_u64().unwrap();
        eprintln!(
            "{} served {got} bytes for {}..{} s: reads {read:?}",
            source.id, copy["from_secs"], copy["to_secs"]
        );
        assert_eq!(got, read.bytes, "{}: {copy:#}", source.id);
        reads.push(read);
    }
    let (first_read, second_read) = (&reads[0], &reads[1]);
    assert_eq!(first_read.from_ns, 0);
    assert!(second_read.to_ns.is_none(), "{reads:?}");
    let end_of_first = first_read.to_ns.expect("the first part ends");
    let overlap_ns = end_of_first.saturating_sub(second_read.from_ns);
    eprintln!(
        "read by both sources: {:.3}..{:.3} s ({} ms; the split at {split} s)",
        second_read.from_ns as f64 / 1e9,
        end_of_first as f64 / 1e9,
        overlap_ns / 1_000_000
    );
    assert!(
        second_read.from_ns <= (split * 1e9) as u64 + 1_000_000
            && end_of_first >= (split * 1e9) as u64 - 1_000_000
            && overlap_ns <= 1_100_000_000,
        "{reads:?}"
    );

    let b = cluster.node("node-2");
    b.wait_cached(&b.url(&path), WAIT);
    b.assert_verifies(&k);
    let video = framemd5(&cluster.master.url(&path), Some("tcp"), "0:v", &[]);
    let reference = reference.join().unwrap();
    assert_fills_same_video(&filled, &reference);
    assert_same_video("a player via the master", &video, &reference);
    origin.assert_untouched_since(before);
}

/// What a copy of `[from_ns, to_ns)` reads of title `key` at `node`, by
/// the receiver's rules (`SpanFilter`): every segment in play order but the
/// final ones wholly before the part; in the first it reads, from the last
/// index entry at or before the part's start (from the file's start at the
/// title's start); up to the first index entry at or after the part's end,
/// else to the end of the file.
#[derive(Debug)]
struct Read {
    bytes: u64,
    /// The npt of the index entry it starts at (0: the title's start).
    from_ns: u64,
    /// The npt of the index entry it stops at (`None`: the title's end).
    to_ns: Option<u64>,
}

fn read_range(node: &Node, key: &str, from_ns: u64, to_ns: Option<u64>) -> Read {
    let mut read = Read {
        bytes: 0,
        from_ns: 0,
        to_ns: None,
    };
    let mut started = from_ns == 0;
    for s in peer_segments(node, key) {
        let length = s["bytes"].as_u64().unwrap();
        let index: Vec<(u64, u64)> = s["index"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e[0].as_u64().unwrap(), e[1].as_u64().unwrap()))
            .collect();
        let mut offset = 0;
        if !started {
            if s["final"] == true && s["last_ns"].as_u64().is_some_and(|l| l < from_ns) {
                continue;
            }
            if let Some(&(npt, at)) = index.iter().take_while(|(npt, _)| *npt <= from_ns).last() {
                (read.from_ns, offset) = (npt, at);
            }
            started = true;
        }
        let limit = to_ns.and_then(|end| index.iter().find(|(npt, _)| *npt >= end));
        match limit {
            Some(&(npt, at)) => {
                read.bytes += at - offset;
                read.to_ns = Some(npt);
                return read;
            }
            None => read.bytes += length - offset,
        }
    }
    read
}

/// The segments (with their index) of title `key` at `node`'s peer
/// server, in play order.
fn peer_segments(node: &Node, key: &str) -> Vec<Value> {
    let list = node.peer_get("/peer/v1/titles");
    assert_eq!(list.status, 200, "{list}");
    let id = list.json()["titles"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["key"] == key)
        .unwrap_or_else(|| panic!("{} lists no {key}: {list}", node.id))["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let detail = node.peer_get(&format!("/peer/v1/titles/{id}"));
    assert_eq!(detail.status, 200, "{detail}");
    detail.json()["segments"].as_array().unwrap().clone()
}
