use super::*;

const WINDOW: Duration = Duration::from_secs(300);

fn held(complete: bool, secs: u64) -> Held {
    Held {
        complete,
        spans: vec![NptSpan {
            start: Npt::ZERO,
            end: Npt::from_secs(secs),
        }],
    }
}

fn candidate(node: &str, complete: bool, egress_left: u64) -> Candidate {
    Candidate {
        node: node.into(),
        peer_url: format!("http://{node}"),
        held: held(complete, 10),
        egress_left,
    }
}

fn whole() -> NptSpan {
    NptSpan {
        start: Npt::ZERO,
        end: Npt::from_secs(10),
    }
}

#[test]
fn two_sources_take_disjoint_halves_that_cover_the_title() {
    let book = CopyBook::new(WINDOW, 3);
    let now = Instant::now();
    let plan = book.plan(
        whole(),
        "b",
        &[
            candidate("a", true, 10),
            candidate("c", true, 20),
            candidate("b", true, 99),
        ],
        now,
    );
    let parts: Vec<(&str, NptSpan)> = plan.iter().map(|(c, s)| (c.node.as_str(), *s)).collect();
    assert_eq!(
        parts,
        [
            (
                "c",
                NptSpan {
                    start: Npt::ZERO,
                    end: Npt::from_secs(5)
                }
            ),
            (
                "a",
                NptSpan {
                    start: Npt::from_secs(5),
                    end: Npt::from_secs(10)
                }
            ),
        ],
        "most egress left first; never the destination itself"
    );
}

#[test]
fn a_partial_holder_is_a_source_only_for_what_it_holds() {
    let book = CopyBook::new(WINDOW, 3);
    let now = Instant::now();
    let mut partial = candidate("a", false, 10);
    partial.held = held(false, 4);
    assert!(book.plan(whole(), "b", &[partial.clone()], now).is_empty());
    let first_part = NptSpan {
        start: Npt::ZERO,
        end: Npt::from_secs(4),
    };
    assert_eq!(book.plan(first_part, "b", &[partial], now).len(), 1);
}

#[test]
fn a_source_failing_too_often_is_faulty_until_probed_or_cleared() {
    let mut book = CopyBook::new(WINDOW, 2);
    let t0 = Instant::now();
    let a = candidate("a", true, 10);
    for i in 0..2 {
        let id = book.start("k", &a, "b", whole(), t0);
        let (_, newly) = book
            .finished(id, Some((Failure::Checksum, "bad crc".into())), t0)
            .expect("running");
        assert_eq!(newly, i == 1, "faulty at the second failure");
    }
    assert!(book
        .plan(whole(), "b", std::slice::from_ref(&a), t0)
        .is_empty());
    // Probed after a while: one copy allowed; its success clears it.
    let later = t0 + PROBE_AFTER;
    assert_eq!(
        book.plan(whole(), "b", std::slice::from_ref(&a), later)
            .len(),
        1
    );
    let id = book.start("k", &a, "b", whole(), later);
    book.finished(id, None, later);
    let (sources, _) = book.failure_counts(later);
    assert!(!sources[0].faulty);
    assert_eq!(sources[0].total, 2);
    // An operator's clear works at once.
    for _ in 0..2 {
        let id = book.start("k", &a, "b", whole(), later);
        book.finished(id, Some((Failure::Transfer, "cut".into())), later);
    }
    assert!(book
        .plan(whole(), "b", std::slice::from_ref(&a), later)
        .is_empty());
    assert!(book.clear_faulty("a"));
    assert_eq!(book.plan(whole(), "b", &[a], later).len(), 1);
}

#[test]
fn progress_and_flows_follow_the_running_copies() {
    let mut book = CopyBook::new(WINDOW, 3);
    let now = Instant::now();
    let id = book.start("k", &candidate("a", true, 10), "b", whole(), now);
    assert!(book.copying("k", "b"));
    book.progress("b", id, 1000, Npt::from_secs(3));
    book.progress("c", id, 9999, Npt::from_secs(9));
    let copy = book.get(id).expect("running");
    assert_eq!(
        (copy.bytes, copy.held_to_secs),
        (1000, 3.0),
        "only its destination reports it"
    );
    assert_eq!(book.flows().len(), 1);
    assert_eq!(book.involving("a"), [id]);
    book.finished(id, None, now);
    assert!(book.flows().is_empty());
    assert_eq!(book.history().count(), 1);
}
