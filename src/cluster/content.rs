//! The content map: for each presentation key, which nodes hold it,
//! complete or partial, and the npt spans each holds.
//!
//! Kept from the nodes' inventories: a full one when a node (re)connects,
//! deltas in every report after that. A master that starts with no state
//! rebuilds the map from the full inventories the nodes send on connect.

use std::collections::{BTreeMap, HashMap, HashSet};

use streamcache_types::NptSpan;

use super::placement::Holding;

/// What a node holds of one title.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub complete: bool,
    pub spans: Vec<NptSpan>,
}

impl Holding {
    /// How much of a title `held` is, for placement.
    pub fn of(held: &Held) -> Holding {
        if held.complete {
            Holding::Complete
        } else {
            Holding::Partial(NptSpan::total(&held.spans))
        }
    }
}

/// One change to a node's inventory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delta {
    /// Recorded, grown or completed: what it holds now.
    Holds { key: String, held: Held },
    /// Evicted or purged.
    Dropped { key: String },
}

#[derive(Debug, Default)]
pub struct ContentMap {
    /// key → node → what it holds.
    titles: HashMap<String, BTreeMap<String, Held>>,
    /// node → the keys it holds: a node's inventory is replaced without
    /// walking every title of the cluster (100 nodes reconnecting with
    /// 10,000 titles each would otherwise hold the master's lock for
    /// seconds).
    by_node: HashMap<String, HashSet<String>>,
}

impl ContentMap {
    /// A node's full inventory replaces all it was known to hold.
    pub fn replace_inventory(&mut self, node: &str, titles: Vec<(String, Held)>) {
        self.forget_node(node);
        for (key, held) in titles {
            self.apply(node, Delta::Holds { key, held });
        }
    }

    pub fn apply(&mut self, node: &str, delta: Delta) {
        match delta {
            Delta::Holds { key, held } => {
                self.by_node
                    .entry(node.to_owned())
                    .or_default()
                    .insert(key.clone());
                self.titles
                    .entry(key)
                    .or_default()
                    .insert(node.to_owned(), held);
            }
            Delta::Dropped { key } => {
                if let Some(keys) = self.by_node.get_mut(node) {
                    keys.remove(&key);
                }
                self.remove(&key, node);
            }
        }
    }

    /// Everything a node was known to hold is forgotten (before its full
    /// inventory replaces it).
    pub fn forget_node(&mut self, node: &str) {
        for key in self.by_node.remove(node).unwrap_or_default() {
            self.remove(&key, node);
        }
    }

    fn remove(&mut self, key: &str, node: &str) {
        if let Some(nodes) = self.titles.get_mut(key) {
            nodes.remove(node);
            if nodes.is_empty() {
                self.titles.remove(key);
            }
        }
    }

    /// What `node` holds of `key`, for placement.
    pub fn holding(&self, key: &str, node: &str) -> Holding {
        self.titles
            .get(key)
            .and_then(|nodes| nodes.get(node))
            .map_or(Holding::Nothing, Holding::of)
    }

    /// The nodes holding `key`, and what each holds.
    pub fn holders(&self, key: &str) -> Option<&BTreeMap<String, Held>> {
        self.titles.get(key)
    }

    /// Every title with the nodes holding it, for the admin API.
    pub fn titles(&self) -> impl Iterator<Item = (&String, &BTreeMap<String, Held>)> {
        self.titles.iter()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use streamcache_types::Npt;

    use super::*;

    fn held(complete: bool, secs: u64) -> Held {
        Held {
            complete,
            spans: vec![NptSpan {
                start: Npt::ZERO,
                end: Npt::from_secs(secs),
            }],
        }
    }

    #[test]
    fn deltas_and_full_inventories_keep_the_map() {
        let mut map = ContentMap::default();
        map.apply(
            "a",
            Delta::Holds {
                key: "k".into(),
                held: held(false, 4),
            },
        );
        assert_eq!(
            map.holding("k", "a"),
            Holding::Partial(Duration::from_secs(4))
        );
        map.apply(
            "a",
            Delta::Holds {
                key: "k".into(),
                held: held(true, 10),
            },
        );
        map.apply(
            "b",
            Delta::Holds {
                key: "k".into(),
                held: held(true, 10),
            },
        );
        assert_eq!(map.holding("k", "a"), Holding::Complete);
        map.apply("a", Delta::Dropped { key: "k".into() });
        assert_eq!(map.holding("k", "a"), Holding::Nothing);
        assert_eq!(map.holding("k", "b"), Holding::Complete);
        // b reconnects with a different inventory: the old one is gone.
        map.replace_inventory("b", vec![("other".into(), held(true, 3))]);
        assert_eq!(map.holding("k", "b"), Holding::Nothing);
        assert_eq!(map.holding("other", "b"), Holding::Complete);
        assert_eq!(map.titles().count(), 1);
    }
}
