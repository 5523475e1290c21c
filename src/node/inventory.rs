//! What this node holds, as the master's content map wants it: a snapshot of
//! the store and the open hubs, and the delta between two snapshots. Plain
//! functions, snapshot in, message out.

use std::collections::BTreeMap;

use streamcache_cache::{EntryInfo, PresentationState};

use crate::cluster::content::Held;
use crate::cluster::protocol::{pb, title_of};

/// Everything held, by presentation key.
pub type Snapshot = BTreeMap<String, Held>;

/// The titles of `stored` (the store's list), each complete or partial with
/// the spans it holds, and every key with an open hub (`hubs`) that the
/// store does not hold complete, as partial: a live relay or a fill in
/// progress is where the master should send that title's next players
/// (joining the hub costs no second origin session). Such a key may hold
/// no spans yet (a live relay records nothing replayable).
pub fn snapshot(stored: &[EntryInfo], hubs: &[String]) -> Snapshot {
    let mut held: Snapshot = stored
        .iter()
        .map(|entry| {
            let title = Held {
                complete: entry.state == PresentationState::Complete,
                spans: entry.spans.clone(),
            };
            (entry.key.clone(), title)
        })
        .collect();
    for key in hubs {
        held.entry(key.clone()).or_insert_with(|| Held {
            complete: false,
            spans: Vec::new(),
        });
    }
    held
}

/// The full inventory, sent once the master has welcomed the node.
pub fn inventory(now: &Snapshot) -> pb::Inventory {
    pb::Inventory {
        titles: now.iter().map(|(key, held)| title_of(key, held)).collect(),
    }
}

/// What changed from `before` (what the master was last told) to `now`:
/// titles new or different, and keys no longer held. `None` when nothing
/// changed, so that a report carries no empty delta.
pub fn delta(before: &Snapshot, now: &Snapshot) -> Option<pb::InventoryDelta> {
    let holds: Vec<pb::Title> = now
        .iter()
        .filter(|(key, held)| before.get(*key) != Some(held))
        .map(|(key, held)| title_of(key, held))
        .collect();
    let dropped: Vec<String> = before
        .keys()
        .filter(|key| !now.contains_key(*key))
        .cloned()
        .collect();
    (!holds.is_empty() || !dropped.is_empty()).then_some(pb::InventoryDelta { holds, dropped })
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use streamcache_types::{Npt, NptSpan};

    use super::*;
    use crate::cluster::content::{ContentMap, Delta};
    use crate::cluster::placement::Holding;
    use crate::cluster::protocol::held_of;

    fn span(secs: u64) -> NptSpan {
        NptSpan {
            start: Npt::ZERO,
            end: Npt::from_secs(secs),
        }
    }

    fn entry(key: &str, state: PresentationState, secs: u64) -> EntryInfo {
        EntryInfo {
            id: format!("id-{key}"),
            key: key.into(),
            state,
            bytes: 1000,
            spans: vec![span(secs)],
            tracks: Vec::new(),
            last_played: UNIX_EPOCH,
            readers: 0,
            writing: false,
        }
    }

    #[test]
    fn the_store_and_the_open_hubs_make_the_snapshot() {
        let stored = [
            entry("rtsp://o:554/done", PresentationState::Complete, 10),
            entry("rtsp://o:554/half", PresentationState::Partial, 4),
        ];
        let hubs = [
            "rtsp://o:554/done".to_owned(), // revalidated, refilling: still complete
            "rtsp://o:554/half".to_owned(),
            "rtsp://o:554/live".to_owned(),
        ];
        let now = snapshot(&stored, &hubs);
        assert_eq!(now.len(), 3);
        assert!(now["rtsp://o:554/done"].complete);
        assert_eq!(now["rtsp://o:554/half"].spans, vec![span(4)]);
        assert!(!now["rtsp://o:554/half"].complete);
        let live = &now["rtsp://o:554/live"];
        assert!(!live.complete && live.spans.is_empty());
        // On the wire, in key order.
        let keys: Vec<_> = inventory(&now).titles.into_iter().map(|t| t.key).collect();
        assert_eq!(
            keys,
            [
                "rtsp://o:554/done",
                "rtsp://o:554/half",
                "rtsp://o:554/live"
            ]
        );
    }

    #[test]
    fn a_delta_names_what_changed_and_nothing_else() {
        let before = snapshot(
            &[
                entry("a", PresentationState::Recording, 2),
                entry("b", PresentationState::Complete, 9),
                entry("c", PresentationState::Complete, 5),
            ],
            &[],
        );
        assert_eq!(delta(&before, &before), None);
        let now = snapshot(
            &[
                entry("a", PresentationState::Recording, 6), // grown
                entry("c", PresentationState::Complete, 5),  // the same
                entry("d", PresentationState::Partial, 1),   // new
            ],
            &["e".to_owned()], // a hub opened
        );
        let Some(change) = delta(&before, &now) else {
            panic!("no delta");
        };
        let keys: Vec<_> = change.holds.iter().map(|t| t.key.as_str()).collect();
        assert_eq!(keys, ["a", "d", "e"]);
        assert_eq!(change.dropped, ["b"]);
        assert_eq!(held_of(&change.holds[0]).spans, vec![span(6)]);
    }

    /// The master's content map, fed the full inventory then the deltas,
    /// ends up with what the node holds now.
    #[test]
    fn inventory_then_deltas_rebuild_the_snapshot_at_the_master() {
        let steps = [
            snapshot(&[entry("a", PresentationState::Recording, 1)], &[]),
            snapshot(
                &[entry("a", PresentationState::Complete, 8)],
                &["live".to_owned()],
            ),
            snapshot(&[entry("b", PresentationState::Partial, 3)], &[]),
        ];
        let mut map = ContentMap::default();
        let titles = inventory(&steps[0]).titles;
        map.replace_inventory(
            "n1",
            titles.iter().map(|t| (t.key.clone(), held_of(t))).collect(),
        );
        for pair in steps.windows(2) {
            let Some(change) = delta(&pair[0], &pair[1]) else {
                continue;
            };
            for title in &change.holds {
                map.apply(
                    "n1",
                    Delta::Holds {
                        key: title.key.clone(),
                        held: held_of(title),
                    },
                );
            }
            for key in change.dropped {
                map.apply("n1", Delta::Dropped { key });
            }
        }
        assert_eq!(map.holding("a", "n1"), Holding::Nothing);
        assert_eq!(map.holding("live", "n1"), Holding::Nothing);
        assert_eq!(
            map.holding("b", "n1"),
            Holding::Partial(Duration::from_secs(3))
        );
    }
}
