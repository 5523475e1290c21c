use std::time::Duration;

use tokio::sync::mpsc;

use super::super::{MasterState, Settings};
use super::*;
use crate::cluster::content::Held;
use crate::cluster::membership::Capacity;
use crate::cluster::protocol::Registration;

const M: u64 = 1_000_000;

fn settings() -> Settings {
    Settings {
        report_period: Duration::from_secs(1),
        down_after_polls: 2,
        egress_window: Duration::from_secs(10),
        prepare_timeout: Duration::from_secs(1),
        player_bitrate_bps: M,
        copy_link_bps: 20 * M,
        copy_cluster_bps: 1000 * M,
        copy_faulty_after: 3,
        copy_failure_window: Duration::from_secs(300),
    }
}

fn join(
    state: &MasterState,
    id: &str,
    copy_egress: u64,
    now: Instant,
) -> mpsc::Receiver<pb::Batch> {
    let (tx, rx) = mpsc::channel(64);
    state.connect(
        &Registration {
            node_id: id.into(),
            rtsp_url: format!("rtsp://{id}"),
            capacity: Capacity {
                max_sessions: 10,
                max_egress_bps: 1000 * M,
            },
            peer_url: Some(format!("http://{id}")),
            max_copy_egress_bps: copy_egress,
            max_copy_ingress_bps: 100 * M,
        },
        tx,
        now,
    );
    state.report(
        id,
        &pb::LoadReport {
            healthy: true,
            ..Default::default()
        },
        now,
    );
    rx
}

fn complete(secs: u64) -> Held {
    Held {
        complete: true,
        spans: vec![NptSpan {
            start: Npt::ZERO,
            end: Npt::from_secs(secs),
        }],
    }
}

#[test]
fn a_title_held_elsewhere_is_copied_capped_by_the_link_and_resumed_after_a_failure() {
    let state = MasterState::new(settings());
    let now = Instant::now();
    let _links: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|n| join(&state, n, 30 * M, now))
        .collect();
    state.inventory("a", vec![("k".into(), complete(10))]);
    let (orders, _) = state.copies_for_placement("k", "b", now);
    assert_eq!(orders.len(), 1);
    let start = &orders[0].start;
    assert_eq!(
        (start.source_node.as_str(), start.rate_bps),
        ("a", 20 * M),
        "the link cap"
    );
    assert_eq!(
        start.span.map(|s| s.end_ns),
        Some(Npt::from_secs(10).as_ns())
    );
    assert!(!start.resume, "a first copy starts at a keyframe");
    // Asked again while it runs: nothing more.
    assert!(state.copies_for_placement("k", "b", now).0.is_empty());

    // A second copy out of a: a's 30 Mbit/s are shared, 15 each.
    let (more, changed) = state.copies_for_placement("k", "c", now);
    assert_eq!(more[0].start.rate_bps, 15 * M);
    assert_eq!(
        changed,
        [RateChange {
            destination: "b".into(),
            copy_id: start.copy_id,
            rate_bps: 15 * M
        }]
    );

    // b's copy fails at 4 s with a checksum error, c now holds it all:
    // the rest comes from c.
    state.copy_progress(
        "b",
        &pb::CopyProgress {
            copy_id: start.copy_id,
            bytes: 100,
            held_to_ns: Npt::from_secs(4).as_ns(),
            checksum_failure: true,
        },
    );
    state.inventory("c", vec![("k".into(), complete(10))]);
    let end = state
        .copy_ended(
            start.copy_id,
            Err("record 12 checksum mismatch".into()),
            now,
        )
        .expect("was running");
    assert_eq!(
        end.copy.outcome.as_deref(),
        Some("record 12 checksum mismatch")
    );
    assert_eq!(end.resumed.len(), 1);
    let resumed = &end.resumed[0].start;
    assert_eq!(resumed.source_node, "c");
    assert_eq!(
        resumed.span.map(|s| (s.start_ns, s.end_ns)),
        Some((Npt::from_secs(4).as_ns(), Npt::from_secs(10).as_ns()))
    );
    assert!(resumed.resume, "continues exactly after what b stored");
    let view = state.copies_view(now);
    assert_eq!(view["sources"][0]["name"], "a");
    assert_eq!(view["sources"][0]["total"], 1);
}

#[test]
fn two_complete_holders_give_one_half_each() {
    let state = MasterState::new(settings());
    let now = Instant::now();
    let _links: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|n| join(&state, n, 30 * M, now))
        .collect();
    state.inventory("a", vec![("k".into(), complete(10))]);
    state.inventory("c", vec![("k".into(), complete(10))]);
    let (orders, _) = state.copies_for_placement("k", "b", now);
    let mut spans: Vec<(String, u64, u64)> = orders
        .iter()
        .map(|o| {
            let span = o.start.span.unwrap_or_default();
            (o.start.source_node.clone(), span.start_ns, span.end_ns)
        })
        .collect();
    spans.sort_by_key(|s| s.1);
    assert_eq!(spans.len(), 2);
    assert_ne!(spans[0].0, spans[1].0, "two sources");
    assert_eq!(spans[0].1, 0);
    assert_eq!(spans[0].2, spans[1].1, "disjoint and contiguous");
    assert_eq!(spans[1].2, Npt::from_secs(10).as_ns());
}

/// Found end to end (tests/cluster_copy_faults.rs): a and c give b a half
/// each; c's copy has all of c's copy egress (20 Mbit/s, the link cap too).
/// a's copy fails: its half is resumed from c, which shares its egress
/// between the two copies, rather than left undone because c had nothing
/// unallocated.
#[test]
fn a_failed_half_resumes_from_the_other_source_though_its_egress_is_all_allocated() {
    let state = MasterState::new(settings());
    let now = Instant::now();
    let _links = [
        join(&state, "a", 20 * M, now),
        join(&state, "b", 20 * M, now),
        join(&state, "c", 20 * M, now),
    ];
    state.inventory("a", vec![("k".into(), complete(10))]);
    state.inventory("c", vec![("k".into(), complete(10))]);
    let (orders, _) = state.copies_for_placement("k", "b", now);
    assert_eq!(orders.len(), 2);
    let from_a = orders.iter().find(|o| o.start.source_node == "a").unwrap();
    let end = state
        .copy_ended(from_a.start.copy_id, Err("checksum failure: x".into()), now)
        .expect("was running");
    assert_eq!(end.resumed.len(), 1, "{end:?}");
    let resumed = &end.resumed[0].start;
    assert_eq!(resumed.source_node, "c");
    assert_eq!(resumed.span, from_a.start.span);
    // c's 20 Mbit/s shared between its two copies into b.
    assert_eq!(resumed.rate_bps, 10 * M);
    assert!(end
        .rates
        .iter()
        .any(|r| r.destination == "b" && r.rate_bps == 10 * M));
}

/// Found end to end (tests/cluster_copy_faults.rs): a source killed
/// mid-copy is down, so it has no copy egress and its copy's rate became 0,
/// which holds the copy back for good (it never ran into its 30 s without
/// a source). Down, its copies are cancelled at their destinations; each
/// one's Done then resumes it elsewhere.
#[test]
fn a_down_source_s_copies_are_cancelled_at_their_destinations() {
    let state = MasterState::new(settings());
    let now = Instant::now();
    let _a = join(&state, "a", 30 * M, now);
    let mut b = join(&state, "b", 30 * M, now);
    let _c = join(&state, "c", 30 * M, now);
    state.inventory("a", vec![("k".into(), complete(10))]);
    let (orders, _) = state.copies_for_placement("k", "b", now);
    let id = orders[0].start.copy_id;
    assert_eq!(state.copies_from("a"), [(id, "b".to_owned())]);
    assert!(state.copies_from("c").is_empty());

    crate::master::copies::source_down(&state, "a");
    let mut cancelled = Vec::new();
    while let Ok(batch) = b.try_recv() {
        for envelope in batch.messages {
            if let Some(pb::envelope::Body::CopyCancel(cancel)) = envelope.body {
                assert_ne!(envelope.request_id, 0);
                cancelled.push(cancel.copy_id);
            }
        }
    }
    assert_eq!(cancelled, [id]);
}

#[test]
fn no_copy_into_a_node_that_already_has_part_of_the_title_or_takes_none() {
    let state = MasterState::new(settings());
    let now = Instant::now();
    let _a = join(&state, "a", 30 * M, now);
    let _b = join(&state, "b", 30 * M, now);
    state.inventory("a", vec![("k".into(), complete(10))]);
    state.inventory(
        "b",
        vec![(
            "k".into(),
            Held {
                complete: false,
                spans: Vec::new(),
            },
        )],
    );
    assert!(state.copies_for_placement("k", "b", now).0.is_empty());
    assert!(
        state.copies_for_placement("other", "b", now).0.is_empty(),
        "nobody holds it"
    );
}
