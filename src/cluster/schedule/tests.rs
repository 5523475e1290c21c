use proptest::prelude::*;

use super::*;

fn flow(id: CopyId, source: &str, destination: &str) -> Flow {
    Flow {
        id,
        source: source.into(),
        destination: destination.into(),
        weight: 1,
    }
}

fn caps(nodes: &[&str], egress: u64, ingress: u64, link: u64, cluster: u64) -> Capacities {
    Capacities {
        egress: nodes.iter().map(|n| (n.to_string(), egress)).collect(),
        ingress: nodes.iter().map(|n| (n.to_string(), ingress)).collect(),
        links: BTreeMap::new(),
        link_default: link,
        cluster,
    }
}

const M: u64 = 1_000_000;

#[test]
fn two_copies_out_of_one_source_share_its_egress() {
    let caps = caps(&["a", "b", "c"], 30 * M, 100 * M, 100 * M, 1000 * M);
    let rates = allocate(&[flow(1, "a", "b"), flow(2, "a", "c")], &caps);
    assert_eq!(rates[&1], 15 * M);
    assert_eq!(rates[&2], 15 * M);
}

#[test]
fn a_link_cap_holds_and_what_it_leaves_goes_to_the_others() {
    let mut caps = caps(&["a", "b", "c"], 100 * M, 100 * M, 1000 * M, 1000 * M);
    caps.links.insert(("a".into(), "b".into()), 20 * M);
    let rates = allocate(&[flow(1, "a", "b"), flow(2, "a", "c")], &caps);
    assert_eq!(rates[&1], 20 * M);
    assert_eq!(rates[&2], 80 * M, "a's egress left by the capped link");
}

#[test]
fn weights_share_a_contended_resource_in_proportion() {
    let caps = caps(&["a", "b", "c"], 30 * M, 100 * M, 100 * M, 1000 * M);
    let heavy = Flow {
        weight: 2,
        ..flow(1, "a", "b")
    };
    let rates = allocate(&[heavy, flow(2, "a", "c")], &caps);
    assert_eq!((rates[&1], rates[&2]), (20 * M, 10 * M));
}

#[test]
fn a_node_without_copy_egress_gets_nothing() {
    let mut caps = caps(&["a", "b"], 30 * M, 100 * M, 100 * M, 1000 * M);
    caps.egress.insert("a".into(), 0);
    assert_eq!(allocate(&[flow(1, "a", "b")], &caps)[&1], 0);
}

#[test]
fn only_the_copies_sharing_a_node_are_recomputed() {
    let caps = caps(&["a", "b", "c", "d"], 30 * M, 100 * M, 100 * M, 1000 * M);
    let mut flows = vec![flow(1, "a", "b"), flow(2, "c", "d")];
    let mut allocation = Allocation::default();
    allocation.update(&flows, &caps, &[1, 2], &[]);
    assert_eq!(allocation.rates[&1], 30 * M);
    flows.push(flow(3, "a", "d"));
    let changed = allocation.update(&flows, &caps, &[3], &[]);
    // 3 shares a with 1 and d with 2: all three are in the group.
    assert_eq!(allocate(&flows, &caps), allocation.rates);
    assert!(changed.contains(&(1, 15 * M)) && changed.contains(&(3, 15 * M)));
    // A copy between two other nodes touches nobody else.
    let caps = {
        let mut c = caps;
        c.egress.insert("e".into(), 30 * M);
        c.ingress.insert("f".into(), 100 * M);
        c
    };
    flows.push(flow(4, "e", "f"));
    let changed = allocation.update(&flows, &caps, &[4], &[]);
    assert_eq!(changed, vec![(4, 30 * M)]);
}

fn arb_case() -> impl Strategy<Value = (Vec<Flow>, Capacities)> {
    let nodes = ["a", "b", "c", "d", "e"];
    let flows =
        prop::collection::vec((0usize..5, 0usize..5, 1u32..4), 0..12).prop_map(move |pairs| {
            pairs
                .into_iter()
                .enumerate()
                .filter(|(_, (s, d, _))| s != d)
                .map(|(i, (s, d, w))| Flow {
                    id: i as u64 + 1,
                    source: nodes[s].into(),
                    destination: nodes[d].into(),
                    weight: w,
                })
                .collect::<Vec<_>>()
        });
    let caps = (
        prop::collection::vec(0u64..100, 5),
        prop::collection::vec(0u64..100, 5),
        1u64..100,
        1u64..300,
    )
        .prop_map(move |(e, i, link, cluster)| Capacities {
            egress: nodes
                .iter()
                .zip(e)
                .map(|(n, c)| (n.to_string(), c * M))
                .collect(),
            ingress: nodes
                .iter()
                .zip(i)
                .map(|(n, c)| (n.to_string(), c * M))
                .collect(),
            links: BTreeMap::new(),
            link_default: link * M,
            cluster: cluster * M,
        });
    (flows, caps)
}

/// Sum of the rates through each resource.
fn usage(flows: &[Flow], rates: &BTreeMap<CopyId, u64>) -> BTreeMap<Resource, u64> {
    let mut used = BTreeMap::new();
    for f in flows {
        for r in f.resources() {
            *used.entry(r).or_default() += rates[&f.id];
        }
    }
    used
}

proptest! {
    #[test]
    fn no_resource_is_over_allocated_and_every_copy_has_a_bottleneck(
        (flows, caps) in arb_case()
    ) {
        let rates = allocate(&flows, &caps);
        let used = usage(&flows, &rates);
        for (r, u) in &used {
            prop_assert!(*u <= caps.of(r), "{r:?}: {u} > {}", caps.of(r));
        }
        // Max-min fairness: each copy goes through a full resource on which
        // no copy has a higher rate per weight than it does.
        for f in &flows {
            let mine = rates[&f.id] as f64 / f64::from(f.weight);
            let bottleneck = f.resources().into_iter().any(|r| {
                let full = used[&r] + flows.len() as u64 >= caps.of(&r);
                full && flows.iter().filter(|g| g.resources().contains(&r)).all(|g| {
                    rates[&g.id] as f64 / f64::from(g.weight) <= mine + 2.0
                })
            });
            prop_assert!(bottleneck, "copy {} has no bottleneck: {rates:?}", f.id);
        }
    }

    #[test]
    fn recomputing_a_part_gives_what_recomputing_all_would(
        (flows, caps) in arb_case(), split in 0usize..12
    ) {
        let split = split.min(flows.len());
        let mut allocation = Allocation::default();
        let first: Vec<CopyId> = flows[..split].iter().map(|f| f.id).collect();
        allocation.update(&flows[..split], &caps, &first, &[]);
        let added: Vec<CopyId> = flows[split..].iter().map(|f| f.id).collect();
        allocation.update(&flows, &caps, &added, &[]);
        let full = allocate(&flows, &caps);
        for f in &flows {
            let (a, b) = (allocation.rates[&f.id], full[&f.id]);
            prop_assert!(a.abs_diff(b) <= flows.len() as u64, "copy {}: {a} vs {b}", f.id);
        }
        // And when the first ones end.
        let rest = &flows[split..];
        let ended_nodes: Vec<String> = flows[..split]
            .iter()
            .flat_map(|f| [f.source.clone(), f.destination.clone()])
            .collect();
        allocation.update(rest, &caps, &[], &ended_nodes);
        let full = allocate(rest, &caps);
        for f in rest {
            let (a, b) = (allocation.rates[&f.id], full[&f.id]);
            prop_assert!(a.abs_diff(b) <= rest.len() as u64, "after ends, copy {}: {a} vs {b}", f.id);
        }
    }
}
