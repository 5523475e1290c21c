use proptest::prelude::*;

use super::*;

fn node(id: &str) -> NodeView {
    NodeView {
        id: id.into(),
        up: true,
        max_sessions: 100,
        max_egress_bps: 1_000_000_000,
        sessions: 0,
        egress_bps: 0,
        holds: Holding::Nothing,
    }
}

fn ids(c: &[(String, Reason)]) -> Vec<&str> {
    c.iter().map(|(id, _)| id.as_str()).collect()
}

const RATE: u64 = 2_000_000;

#[test]
fn complete_then_partial_then_hashed() {
    let nodes = vec![
        NodeView {
            holds: Holding::Partial(Duration::from_secs(5)),
            ..node("p5")
        },
        node("x"),
        NodeView {
            holds: Holding::Complete,
            sessions: 50,
            ..node("c-busy")
        },
        NodeView {
            holds: Holding::Partial(Duration::from_secs(9)),
            ..node("p9")
        },
        NodeView {
            holds: Holding::Complete,
            sessions: 10,
            ..node("c-idle")
        },
        node("y"),
    ];
    let c = candidates("rtsp://o/a", &nodes, RATE);
    assert_eq!(&ids(&c)[..4], ["c-idle", "c-busy", "p9", "p5"]);
    let reasons: Vec<Reason> = c.iter().map(|(_, r)| *r).collect();
    assert_eq!(
        reasons,
        [
            Reason::Complete,
            Reason::Complete,
            Reason::Partial,
            Reason::Partial,
            Reason::Hashed,
            Reason::Hashed
        ]
    );
}

#[test]
fn down_and_full_nodes_are_never_candidates() {
    let nodes = vec![
        NodeView {
            up: false,
            holds: Holding::Complete,
            ..node("down")
        },
        NodeView {
            sessions: 100,
            holds: Holding::Complete,
            ..node("full")
        },
        NodeView {
            egress_bps: 999_000_000,
            ..node("no-egress")
        },
        node("ok"),
    ];
    assert_eq!(ids(&candidates("k", &nodes, RATE)), ["ok"]);
    assert!(
        candidates("k", &nodes[..3], RATE).is_empty(),
        "no headroom: 503"
    );
}

#[test]
fn an_uncached_title_concentrates_on_one_node_until_it_is_loaded_well_above_the_rest() {
    let mut nodes: Vec<NodeView> = ["a", "b", "c"].iter().map(|id| node(id)).collect();
    let first = candidates("rtsp://o/title", &nodes, RATE)[0].0.clone();
    // Players of the one title keep going to the same node while its load
    // stays within the bound of the mean...
    let mut sent_to_first = 0;
    for _ in 0..30 {
        let chosen = candidates("rtsp://o/title", &nodes, RATE)[0].0.clone();
        if chosen == first {
            sent_to_first += 1;
        }
        let n = nodes.iter_mut().find(|n| n.id == chosen).unwrap();
        n.sessions += 1;
    }
    // ...and spill over once it exceeds 1.25 × the mean.
    assert!(sent_to_first < 30, "never spilled over");
    let loads: Vec<u32> = nodes.iter().map(|n| n.sessions).collect();
    let max = *loads.iter().max().unwrap();
    let mean = 30.0 / 3.0;
    assert!(
        f64::from(max) <= LOAD_BOUND * (mean + 1.0) + 1.0,
        "{loads:?}"
    );
}

#[test]
fn keys_spread_over_nodes_in_proportion_to_capacity() {
    let nodes = vec![
        NodeView {
            max_sessions: 100,
            ..node("small")
        },
        NodeView {
            max_sessions: 300,
            ..node("big")
        },
    ];
    let big = (0..4000)
        .filter(|i| candidates(&format!("rtsp://o/{i}"), &nodes, RATE)[0].0 == "big")
        .count();
    // Expect 3/4 of the keys.
    assert!((2800..3200).contains(&big), "{big} of 4000");
}

fn arb_node(i: usize) -> impl Strategy<Value = NodeView> {
    (
        any::<bool>(),
        1u32..50,
        0u32..60,
        0u64..120,
        prop_oneof![
            Just(Holding::Nothing),
            Just(Holding::Complete),
            (0u64..20).prop_map(|s| Holding::Partial(Duration::from_secs(s))),
        ],
    )
        .prop_map(move |(up, max, sessions, egress_mbps, holds)| NodeView {
            id: format!("n{i}"),
            up,
            max_sessions: max,
            max_egress_bps: 100_000_000,
            sessions,
            egress_bps: egress_mbps * 1_000_000,
            holds,
        })
}

fn arb_nodes() -> impl Strategy<Value = Vec<NodeView>> {
    (1usize..12).prop_flat_map(|n| (0..n).map(arb_node).collect::<Vec<_>>())
}

proptest! {
    #[test]
    fn candidates_have_headroom_and_are_each_listed_once(
        nodes in arb_nodes(), key in "[a-z/]{1,20}"
    ) {
        let c = candidates(&key, &nodes, RATE);
        let open: Vec<&NodeView> = nodes.iter().filter(|n| n.has_headroom(RATE)).collect();
        prop_assert_eq!(c.len(), open.len());
        for (id, reason) in &c {
            let n = nodes.iter().find(|n| &n.id == id).unwrap();
            prop_assert!(n.up && n.sessions < n.max_sessions);
            prop_assert!(n.egress_bps + RATE <= n.max_egress_bps);
            let expected = match n.holds {
                Holding::Complete => Reason::Complete,
                Holding::Partial(_) => Reason::Partial,
                Holding::Nothing => Reason::Hashed,
            };
            prop_assert_eq!(*reason, expected);
        }
        // complete > partial > hashed
        let rank = |r: &Reason| match r { Reason::Complete => 0, Reason::Partial => 1, Reason::Hashed => 2 };
        prop_assert!(c.windows(2).all(|w| rank(&w[0].1) <= rank(&w[1].1)));
    }

    #[test]
    fn the_hashed_choice_is_stable_when_an_unrelated_node_joins_or_leaves(
        n in 2usize..10, key in "[a-z0-9/]{1,30}", extra in "[a-z]{3,8}"
    ) {
        let nodes: Vec<NodeView> = (0..n).map(|i| node(&format!("n{i}"))).collect();
        let first = candidates(&key, &nodes, RATE)[0].0.clone();
        // A node joins: the choice is the old one, or the newcomer.
        let mut joined = nodes.clone();
        joined.push(node(&format!("new-{extra}")));
        let now = candidates(&key, &joined, RATE)[0].0.clone();
        prop_assert!(now == first || now.starts_with("new-"));
        // A node other than the chosen one leaves: the choice stays.
        let left: Vec<NodeView> = nodes.iter().filter(|n| n.id != first).skip(1)
            .chain(nodes.iter().filter(|n| n.id == first)).cloned().collect();
        prop_assert_eq!(&candidates(&key, &left, RATE)[0].0, &first);
    }

    #[test]
    fn hrw_scores_are_finite_and_positive(key in ".{0,40}", node in ".{0,20}", w in 1.0f64..1e6) {
        let s = hrw_score(&key, &node, w);
        prop_assert!(s.is_finite() && s > 0.0);
    }
}
