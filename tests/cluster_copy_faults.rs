//! Issue 13 (Cluster II), copies that fail, with real processes on
//! loopback (one master, three nodes with peer servers, the GStreamer
//! origin, ffmpeg players sent via the master):
//!
//! - Bytes flipped in the source's segment files while it runs: the
//!   destination finds out before storing any of it, the failure is counted
//!   against the source, and the rest comes from the third node.
//! - The source killed (`kill -9`) mid-copy: the copy resumes from the
//!   third node where it stopped; a player during it and one after decode
//!   as a direct pull, and the destination's store verifies. (Killed when
//!   the copy has stopped mid-GOP, the resumed copy completes the GOP.)
//!
//! In both, the title is complete on A and C (a segment every 2 s), both
//! at their session cap, so that the master sends its player to B and B
//! takes the title from both (a half each, A's first).

mod support;

use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;

const SECS: u32 = 10;
const WAIT: Duration = Duration::from_secs(60);

fn source(id: &'static str) -> NodeSetup {
    NodeSetup::peer(id).with("max_sessions = 1").segment_secs(2)
}

/// An origin serving the 10 s title as `name`, the direct pull's frames
/// (being made), and the cluster: A and C sources, B with room, the
/// master's `[master]` lines added.
fn setup(name: &str, master_lines: &str) -> (Origin, thread::JoinHandle<Vec<String>>, Cluster) {
    let media = test_media(SECS);
    let origin = Origin::start(OriginOpts::new().media(&media).titles(&[name]));
    let reference = thread::spawn(move || direct_pull(SECS));
    let cluster = copy_cluster(
        &[cluster_mount(&origin)],
        master_lines,
        &[
            source("node-1"),
            NodeSetup::peer("node-2"),
            source("node-3"),
        ],
    );
    (origin, reference, cluster)
}

/// Bytes flipped in every segment file of A (one byte in the middle of
/// its records, past its first keyframe) while A runs. B's copy of A's
/// half fails its checksum (`recent`: the copy from node-1 with
/// "checksum failure"), `sources` counts it against node-1, and the half
/// is copied again from C, from where the failed copy had stored. B's
/// title is then complete, verifies, and plays frame-identical via the
/// master; the origin sees nothing; A still serves its players.
#[test]
fn bytes_flipped_on_the_source_are_refused_and_refetched_from_the_third_node() {
    let (origin, reference, cluster) = setup("flip", "");
    let (path, k) = (cluster_title("flip"), cluster_key(&origin, "flip"));
    let (filled, _held) = fill_and_fill_up(&cluster, &["node-1", "node-3"], &path, &k);
    let a = cluster.node("node-1");
    let dir = a.title_dir(&k);
    let mut flipped = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let file = entry.unwrap().path();
        if file.extension().is_some_and(|x| x == "seg") {
            let len = std::fs::metadata(&file).unwrap().len();
            flip_byte(&file, len / 2);
            flipped.push(file);
        }
    }
    assert!(flipped.len() >= 4, "segments of A: {flipped:?}");
    let before = origin.describes_and_plays();

    assert_eq!(cluster.master.place(&cluster, &path), "node-2");
    let ended = cluster.master.wait_copies_ended(&k, 3, WAIT);
    let from_a: Vec<&Value> = ended.iter().filter(|c| c["source"] == "node-1").collect();
    let from_c: Vec<&Value> = ended.iter().filter(|c| c["source"] == "node-3").collect();
    assert_eq!(from_a.len(), 1, "{ended:#?}");
    let failed = from_a[0];
    assert!(
        failed["outcome"]
            .as_str()
            .is_some_and(|o| o.contains("checksum failure")),
        "{ended:#?}"
    );
    assert_eq!(failed["from_secs"], 0.0, "A had the first half: {ended:#?}");
    assert_eq!(from_c.len(), 2, "{ended:#?}");
    for copy in &from_c {
        assert_eq!(copy["outcome"], "done", "{ended:#?}");
    }
    // The rest of A's half came from C, from where A's copy had stored.
    assert!(
        from_c
            .iter()
            .any(|c| c["from_secs"] == failed["held_to_secs"] && c["to_secs"] == failed["to_secs"]),
        "{ended:#?}"
    );
    let copies = cluster.master.copies();
    let counted = copies["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "node-1")
        .cloned()
        .unwrap_or_default();
    assert!(
        counted["total"].as_u64() >= Some(1) && counted["recent"].as_u64() >= Some(1),
        "no failure counted against node-1: {copies:#}"
    );
    assert!(
        copies["sources"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["name"] == "node-1" || s["total"] == 0),
        "{copies:#}"
    );
    let b = cluster.node("node-2");
    assert!(b.logs().contains("checksum failure"), "{}", b.logs());

    b.wait_cached(&b.url(&path), WAIT);
    b.assert_verifies(&k);
    let video = framemd5(&cluster.master.url(&path), Some("tcp"), "0:v", &[]);
    let reference = reference.join().unwrap();
    assert_fills_same_video(&filled, &reference);
    assert_same_video("a player via the master", &video, &reference);
    origin.assert_untouched_since(before);
    assert!(b.export_ts(&k) == cluster.node("node-3").export_ts(&k));
}

/// Links capped at 400 kbit/s (a little under the title's bit rate), so
/// that B's copy of A's half takes seconds. A player starts via the master
/// (on B) as the copy does; once B has stored part of A's half
/// (`held_to_secs` > 0: its first segment, read whole, verified and
/// stored), A is killed with `kill -9`. The master calls A down and has
/// B's copy from A cancelled (within a second or so); it resumes it from
/// C at the npt where it stopped; the title completes on B. The player
/// during all of it, and one after, decode frame for frame as a direct
/// pull; B's store verifies (nothing torn); the origin sees nothing.
#[test]
fn a_source_killed_mid_copy_is_replaced_by_the_third_node_where_it_stopped() {
    killed_mid_copy(0.0);
}

/// As above, A killed once B holds more than 4.1 s of A's half
/// [0, 5.0025): A's last segment of it is read up to a limit, so its
/// records are stored as they arrive, and B stops mid-GOP (e.g. at 4.522
/// s). The copy resumed from C for [4.522, 5.0025) is a resume
/// (`CopyStart.resume`): B continues exactly after the records it stored
/// (per track, through its last stored packet), not from the first
/// keyframe at or after 4.522 — 5.021, past its end, which lost the frames
/// from 4.52 to 5.02 s (238 of 250 seen).
#[test]
fn a_source_killed_mid_gop_is_resumed_without_losing_frames() {
    killed_mid_copy(4.1);
}

/// The kill -9 scenario, A killed once B holds more than `after` s of it.
fn killed_mid_copy(after: f64) {
    let (origin, reference, mut cluster) = setup("kill", "copy_link_bps = 400000\n");
    let (path, k) = (cluster_title("kill"), cluster_key(&origin, "kill"));
    // C stays full (its session held): A killed, B is the one with room.
    let (filled, _held) = fill_and_fill_up(&cluster, &["node-1", "node-3"], &path, &k);
    let before = origin.describes_and_plays();

    assert_eq!(cluster.master.place(&cluster, &path), "node-2");
    let url = cluster.master.url(&path);
    let during = thread::spawn(move || framemd5(&url, Some("tcp"), "0:v", &[]));
    let mut from_a = Value::Null;
    let midway = poll_until(Duration::from_secs(20), || {
        let copies = cluster.master.copies();
        from_a = entries(&copies["running"], &k)
            .into_iter()
            .find(|c| c["source"] == "node-1")
            .unwrap_or_default();
        from_a["held_to_secs"].as_f64().is_some_and(|h| h > after)
    });
    assert!(
        midway,
        "A's copy never stored anything: {:#}",
        cluster.master.copies()
    );
    let to = from_a["to_secs"].as_f64().unwrap();
    assert!(
        from_a["held_to_secs"].as_f64().unwrap() < to - 0.4,
        "too late to kill A mid-copy: {from_a:#}"
    );
    cluster.nodes[0].kill9();
    let killed = Instant::now();

    // A's copy fails; the rest of A's half comes from C, from where it
    // stopped.
    let mut failed = Value::Null;
    let resumed = poll_until(Duration::from_secs(50), || {
        let copies = cluster.master.copies();
        failed = entries(&copies["recent"], &k)
            .into_iter()
            .find(|c| c["source"] == "node-1")
            .unwrap_or_default();
        !failed.is_null()
    });
    assert!(
        resumed,
        "A's copy never ended: {:#}",
        cluster.master.copies()
    );
    eprintln!(
        "A's copy ended {:?} after the kill: {failed:#}",
        killed.elapsed()
    );
    assert_ne!(failed["outcome"], "done", "{failed:#}");
    let stopped_at = failed["held_to_secs"].as_f64().unwrap();
    assert!(stopped_at > 0.0, "{failed:#}");
    let ended = cluster.master.wait_copies_ended(&k, 3, WAIT);
    let again: Vec<&Value> = ended
        .iter()
        .filter(|c| c["source"] == "node-3" && c["from_secs"].as_f64() == Some(stopped_at))
        .collect();
    assert_eq!(
        again.len(),
        1,
        "no copy from C resuming at {stopped_at}: {ended:#?}"
    );
    assert_eq!(again[0]["to_secs"], failed["to_secs"], "{ended:#?}");
    for copy in ended.iter().filter(|c| c["source"] == "node-3") {
        assert_eq!(copy["outcome"], "done", "{ended:#?}");
    }

    let b = cluster.node("node-2");
    b.wait_cached(&b.url(&path), WAIT);
    b.assert_verifies(&k);
    let during = during.join().unwrap();
    let after = framemd5(&cluster.master.url(&path), Some("tcp"), "0:v", &[]);
    let reference = reference.join().unwrap();
    assert_fills_same_video(&filled, &reference);
    assert_same_video("the player during the copy", &during, &reference);
    assert_same_video("a player after it", &after, &reference);
    origin.assert_untouched_since(before);
}
