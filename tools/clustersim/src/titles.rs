//! The simulated content: which titles each node holds, and how its
//! inventory changes from one report to the next.
//!
//! The catalogue is a universe of titles `<prefix><n>`. Node `i` holds a
//! window of consecutive titles starting at `i × universe / nodes`
//! (wrapping), so the windows overlap and each title is held by about
//! `nodes × per_node / universe` nodes. About 70 % of a node's titles are
//! complete; the others are partial, with one to three spans. Every report
//! the window slides by `k`: the first `k` titles are dropped, the `k`
//! recorded in the previous report are now complete, and `k` new ones are
//! recorded (partial, the first 30 s).

use std::sync::Arc;

use streamcache::cluster::protocol::pb;

const NS_PER_SEC: u64 = 1_000_000_000;

/// What every node shares: the key prefix and the sizes.
#[derive(Debug, Clone)]
pub struct Catalogue {
    pub prefix: Arc<str>,
    pub universe: u64,
    pub per_node: u64,
    pub nodes: u64,
}

/// One node's window of titles.
#[derive(Debug, Clone)]
pub struct Holdings {
    catalogue: Catalogue,
    node: u64,
    /// The window's first title (not reduced modulo the universe).
    start: u64,
}

impl Holdings {
    pub fn new(catalogue: Catalogue, node: u64) -> Holdings {
        let start = node * catalogue.universe / catalogue.nodes.max(1);
        Holdings {
            catalogue,
            node,
            start,
        }
    }

    fn key(&self, n: u64) -> String {
        format!("{}{}", self.catalogue.prefix, n % self.catalogue.universe)
    }

    /// Title `n` as this node holds it in its full inventory.
    fn title(&self, n: u64) -> pb::Title {
        let h = mix((self.node << 40) ^ (n % self.catalogue.universe));
        let complete = h % 10 < 7;
        let spans = if complete {
            vec![span(0, 1800)]
        } else {
            // One to three spans of 10 to 70 s, with gaps between them.
            let count = 1 + (h >> 8) % 3;
            let mut at = 0;
            (0..count)
                .map(|i| {
                    let gap = (h >> (16 + 8 * i)) % 120;
                    let len = 10 + (h >> (20 + 8 * i)) % 60;
                    at += gap;
                    let s = span(at, at + len);
                    at += len;
                    s
                })
                .collect()
        };
        pb::Title {
            key: self.key(n),
            complete,
            spans,
        }
    }

    /// Everything the node holds (sent on connect).
    pub fn inventory(&self) -> pb::Inventory {
        let end = self.start + self.catalogue.per_node;
        pb::Inventory {
            titles: (self.start..end).map(|n| self.title(n)).collect(),
        }
    }

    /// The changes of one report: the window slides by `k` titles.
    pub fn slide(&mut self, k: u64) -> pb::InventoryDelta {
        let k = k.min(self.catalogue.per_node);
        let end = self.start + self.catalogue.per_node;
        let dropped = (self.start..self.start + k).map(|n| self.key(n)).collect();
        let completed = (end.saturating_sub(k)..end).map(|n| pb::Title {
            key: self.key(n),
            complete: true,
            spans: vec![span(0, 1800)],
        });
        let recorded = (end..end + k).map(|n| pb::Title {
            key: self.key(n),
            complete: false,
            spans: vec![span(0, 30)],
        });
        let holds = completed.chain(recorded).collect();
        self.start += k;
        pb::InventoryDelta { holds, dropped }
    }
}

fn span(start_secs: u64, end_secs: u64) -> pb::Span {
    pb::Span {
        start_ns: start_secs * NS_PER_SEC,
        end_ns: end_secs * NS_PER_SEC,
    }
}

/// splitmix64's finaliser: a stable pseudo-random choice per (node, title).
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn catalogue() -> Catalogue {
        Catalogue {
            prefix: "rtsp://origin:554/title-".into(),
            universe: 1000,
            per_node: 200,
            nodes: 10,
        }
    }

    #[test]
    fn windows_overlap_and_mix_complete_and_partial() {
        let mut holders: HashMap<String, usize> = HashMap::new();
        let mut complete = 0;
        for node in 0..10 {
            let inventory = Holdings::new(catalogue(), node).inventory();
            assert_eq!(inventory.titles.len(), 200);
            for t in &inventory.titles {
                *holders.entry(t.key.clone()).or_default() += 1;
                complete += usize::from(t.complete);
                assert!(!t.spans.is_empty());
                assert!(t.spans.iter().all(|s| s.end_ns > s.start_ns));
            }
        }
        // 10 × 200 over 1000 titles: each held by two nodes.
        assert_eq!(holders.len(), 1000);
        assert!(holders.values().all(|&n| n == 2));
        assert!((1200..1600).contains(&complete), "{complete} complete");
    }

    #[test]
    fn a_slide_drops_the_front_and_records_at_the_back() {
        let mut h = Holdings::new(catalogue(), 0);
        let delta = h.slide(3);
        assert_eq!(
            delta.dropped,
            [
                "rtsp://origin:554/title-0",
                "rtsp://origin:554/title-1",
                "rtsp://origin:554/title-2"
            ]
        );
        let keys: Vec<_> = delta.holds.iter().map(|t| t.key.as_str()).collect();
        assert_eq!(
            keys[..3],
            [
                "rtsp://origin:554/title-197",
                "rtsp://origin:554/title-198",
                "rtsp://origin:554/title-199"
            ]
        );
        assert_eq!(
            keys[3..],
            [
                "rtsp://origin:554/title-200",
                "rtsp://origin:554/title-201",
                "rtsp://origin:554/title-202"
            ]
        );
        assert_eq!(h.inventory().titles[0].key, "rtsp://origin:554/title-3");
        // It wraps around the universe.
        let mut last = Holdings::new(catalogue(), 9);
        assert_eq!(
            last.slide(200).holds.last().map(|t| t.key.as_str()),
            Some("rtsp://origin:554/title-299")
        );
    }
}
