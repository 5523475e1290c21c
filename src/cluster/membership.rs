//! Membership and load: which nodes there are, whether they are up, and how
//! loaded each is.
//!
//! A state machine without a clock of its own: every event carries the time
//! it happened (tokio's clock in the master, any instant in tests). Nodes
//! register once per control connection and report every period. A node
//! silent for a period is polled ([`Membership::due_polls`]); after
//! `down_after` failed polls it is down; it is up again as soon as it
//! reports. A node that registers again under the same id (a restart) is
//! the same node, not a second one.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

use super::placement::{Holding, NodeView};

/// What a node can take, as it registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity {
    pub max_sessions: u32,
    pub max_egress_bps: u64,
}

/// One report's load sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LoadSample {
    pub sessions: u32,
    pub egress_bps: u64,
    pub ingress_bps: u64,
    pub disk_used_bytes: u64,
    pub healthy: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Up,
    /// Silent for a period: polled, `failed` polls unanswered so far.
    Suspect {
        failed: u32,
    },
    Down,
}

/// A moving window of egress samples: placement uses their mean, not the
/// last sample (one burst or lull does not swing it).
#[derive(Debug, Clone)]
pub struct EgressWindow {
    span: Duration,
    samples: VecDeque<(Instant, u64)>,
}

impl EgressWindow {
    pub fn new(span: Duration) -> EgressWindow {
        EgressWindow {
            span,
            samples: VecDeque::new(),
        }
    }

    pub fn push(&mut self, at: Instant, bps: u64) {
        self.samples.push_back((at, bps));
        while self
            .samples
            .front()
            .is_some_and(|(t, _)| at.saturating_duration_since(*t) > self.span)
        {
            self.samples.pop_front();
        }
    }

    /// Mean egress over the window; 0 without samples.
    pub fn mean(&self) -> u64 {
        let n = self.samples.len() as u64;
        if n == 0 {
            return 0;
        }
        self.samples.iter().map(|(_, b)| *b).sum::<u64>() / n
    }

    pub fn samples(&self) -> impl Iterator<Item = &(Instant, u64)> {
        self.samples.iter()
    }
}

#[derive(Debug, Clone)]
pub struct Member {
    pub id: String,
    /// Where players are sent: `rtsp://host:port`.
    pub rtsp_url: String,
    pub capacity: Capacity,
    pub health: Health,
    pub last_report: Instant,
    /// When it was last polled (a poll per silent period).
    last_poll: Option<Instant>,
    pub load: LoadSample,
    pub egress: EgressWindow,
    /// Players sent to it since its last report, and their expected egress.
    pub assigned: u32,
    pub assigned_bps: u64,
}

/// Whether a registration is a new node or one coming back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registered {
    New,
    Rejoined,
}

#[derive(Debug)]
pub struct Membership {
    period: Duration,
    down_after: u32,
    window: Duration,
    nodes: BTreeMap<String, Member>,
}

impl Membership {
    /// `period`: how often nodes report; `down_after`: failed polls before a
    /// node is down; `window`: the egress history placement averages over.
    pub fn new(period: Duration, down_after: u32, window: Duration) -> Membership {
        Membership {
            period,
            down_after: down_after.max(1),
            window,
            nodes: BTreeMap::new(),
        }
    }

    pub fn register(
        &mut self,
        id: &str,
        rtsp_url: &str,
        capacity: Capacity,
        now: Instant,
    ) -> Registered {
        let window = self.window;
        let known = self.nodes.contains_key(id);
        let member = self.nodes.entry(id.to_owned()).or_insert_with(|| Member {
            id: id.to_owned(),
            rtsp_url: rtsp_url.to_owned(),
            capacity,
            health: Health::Up,
            last_report: now,
            last_poll: None,
            load: LoadSample::default(),
            egress: EgressWindow::new(window),
            assigned: 0,
            assigned_bps: 0,
        });
        member.rtsp_url = rtsp_url.to_owned();
        member.capacity = capacity;
        member.health = Health::Up;
        member.last_report = now;
        member.last_poll = None;
        if known {
            Registered::Rejoined
        } else {
            Registered::New
        }
    }

    /// A report (or a poll's answer): the node is up, its load is the
    /// sample, and assignments made before it are now in its numbers.
    /// False for an unknown node (it must register first).
    pub fn report(&mut self, id: &str, sample: LoadSample, now: Instant) -> bool {
        let Some(member) = self.nodes.get_mut(id) else {
            return false;
        };
        member.health = Health::Up;
        member.last_report = now;
        member.last_poll = None;
        member.load = sample;
        member.egress.push(now, sample.egress_bps);
        member.assigned = 0;
        member.assigned_bps = 0;
        true
    }

    /// Nodes to poll now: silent for a period since their last report (a
    /// half period of grace for a report on its way: a node reporting on
    /// time is not polled), or a period since their last poll. Each is
    /// marked as polled.
    pub fn due_polls(&mut self, now: Instant) -> Vec<String> {
        let period = self.period;
        self.nodes
            .values_mut()
            .filter(|m| m.health != Health::Down)
            .filter(|m| match m.last_poll {
                Some(polled) => now.saturating_duration_since(polled) >= period,
                None => now.saturating_duration_since(m.last_report) >= period + period / 2,
            })
            .map(|m| {
                m.last_poll = Some(now);
                m.id.clone()
            })
            .collect()
    }

    /// A poll went unanswered (or its connection is gone). Returns true when
    /// this makes the node down.
    pub fn poll_failed(&mut self, id: &str) -> bool {
        let down_after = self.down_after;
        let Some(member) = self.nodes.get_mut(id) else {
            return false;
        };
        let failed = match member.health {
            Health::Up => 1,
            Health::Suspect { failed } => failed + 1,
            Health::Down => return false,
        };
        member.health = if failed >= down_after {
            Health::Down
        } else {
            Health::Suspect { failed }
        };
        member.health == Health::Down
    }

    /// A player was sent to `id`: counted in its load until its next report.
    pub fn assigned(&mut self, id: &str, bitrate_bps: u64) {
        if let Some(member) = self.nodes.get_mut(id) {
            member.assigned += 1;
            member.assigned_bps = member.assigned_bps.saturating_add(bitrate_bps);
        }
    }

    pub fn get(&self, id: &str) -> Option<&Member> {
        self.nodes.get(id)
    }

    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.nodes.values()
    }

    /// The placement view of every node, with what each holds of a title.
    pub fn views(&self, holds: impl Fn(&str) -> Holding) -> Vec<NodeView> {
        self.nodes
            .values()
            .map(|m| NodeView {
                id: m.id.clone(),
                // A suspect node still serves; only a down one is skipped.
                up: m.health != Health::Down && m.load.healthy,
                max_sessions: m.capacity.max_sessions,
                max_egress_bps: m.capacity.max_egress_bps,
                sessions: m.load.sessions.saturating_add(m.assigned),
                egress_bps: m.egress.mean().saturating_add(m.assigned_bps),
                holds: holds(&m.id),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PERIOD: Duration = Duration::from_secs(1);
    const CAP: Capacity = Capacity {
        max_sessions: 10,
        max_egress_bps: 100_000_000,
    };

    fn healthy(sessions: u32, egress_bps: u64) -> LoadSample {
        LoadSample {
            sessions,
            egress_bps,
            healthy: true,
            ..LoadSample::default()
        }
    }

    #[test]
    fn a_silent_node_is_polled_then_down_then_back_when_it_reports() {
        let t0 = Instant::now();
        let mut m = Membership::new(PERIOD, 3, Duration::from_secs(10));
        assert_eq!(m.register("a", "rtsp://a", CAP, t0), Registered::New);
        m.report("a", healthy(1, 0), t0);
        assert!(
            m.due_polls(t0 + PERIOD).is_empty(),
            "a report may be on its way"
        );
        for i in 1..=3 {
            let now = t0 + PERIOD / 2 + PERIOD * i;
            assert_eq!(m.due_polls(now), ["a"], "poll {i}");
            assert!(m.due_polls(now).is_empty(), "one poll per period");
            assert_eq!(m.poll_failed("a"), i == 3);
        }
        assert_eq!(m.get("a").unwrap().health, Health::Down);
        assert!(
            m.due_polls(t0 + PERIOD * 10).is_empty(),
            "a down node is not polled"
        );
        assert!(!m.views(|_| Holding::Nothing)[0].up);
        m.report("a", healthy(0, 0), t0 + PERIOD * 11);
        assert_eq!(m.get("a").unwrap().health, Health::Up);
        assert!(m.views(|_| Holding::Nothing)[0].up);
    }

    #[test]
    fn a_restarted_node_is_the_same_node() {
        let t0 = Instant::now();
        let mut m = Membership::new(PERIOD, 3, Duration::from_secs(10));
        m.register("a", "rtsp://a:1", CAP, t0);
        assert_eq!(m.register("a", "rtsp://a:2", CAP, t0), Registered::Rejoined);
        assert_eq!(m.members().count(), 1);
        assert_eq!(m.get("a").unwrap().rtsp_url, "rtsp://a:2");
    }

    #[test]
    fn assignments_count_until_the_next_report() {
        let t0 = Instant::now();
        let mut m = Membership::new(PERIOD, 3, Duration::from_secs(10));
        m.register("a", "rtsp://a", CAP, t0);
        m.report("a", healthy(2, 4_000_000), t0);
        m.assigned("a", 2_000_000);
        m.assigned("a", 2_000_000);
        let view = &m.views(|_| Holding::Nothing)[0];
        assert_eq!((view.sessions, view.egress_bps), (4, 8_000_000));
        m.report("a", healthy(4, 8_000_000), t0 + PERIOD);
        let view = &m.views(|_| Holding::Nothing)[0];
        assert_eq!(
            (view.sessions, view.egress_bps),
            (4, 6_000_000),
            "window mean"
        );
    }

    #[test]
    fn the_egress_window_forgets_old_samples() {
        let t0 = Instant::now();
        let mut w = EgressWindow::new(Duration::from_secs(10));
        w.push(t0, 100);
        w.push(t0 + Duration::from_secs(5), 300);
        assert_eq!(w.mean(), 200);
        w.push(t0 + Duration::from_secs(12), 500);
        assert_eq!(w.mean(), 400);
    }
}
