//! The daemon's Prometheus metrics (`GET /metrics` on the admin API).
//!
//! One [`Metrics`] is shared by every part of the daemon. Counters on the
//! media path are resolved once per session or origin session
//! ([`PlayerCounters`], [`OriginCounters`]) and then cost one atomic add per
//! batch or packet, never a lock or a label lookup. What can be read off
//! the daemon's state (sessions, store usage) is computed at scrape time by
//! collectors, so that it cannot drift from the truth.
//!
//! Labels are bounded: `mount` is a configured mount path (never an origin
//! URL, which may carry credentials), the others take a fixed set of values.
//! The families are listed in the README, section "Metrics".

use std::collections::BTreeSet;
use std::fmt;
use std::sync::{Mutex, MutexGuard};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use streamcache_cache::Store;

use crate::origin::OriginError;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MountLabels {
    mount: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabels {
    mount: String,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SessionLabels {
    state: &'static str,
    transport: &'static str,
}

/// Where a request's title came from, as the catalog decided it. One is
/// counted per decision: each DESCRIBE, and each SETUP that starts a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LookupOutcome {
    /// Served from the store, fresh by the origin's cache rules.
    Hit,
    /// Served from the store after the origin confirmed it unchanged.
    Revalidated,
    /// Served from the store although stale: the origin could not be
    /// reached and the rules allow it.
    Stale,
    /// The store holds part of an on-demand title (a fill is running, or
    /// an earlier one was cut short): played from the store while the
    /// origin supplies the rest.
    Partial,
    /// Not in the store (or changed, not storable, a live stream): from the
    /// origin.
    Miss,
    /// The player's `Cache-Control: no-cache`: from the origin without
    /// looking at the store.
    Bypass,
    /// Stale, the rules demand revalidation and the origin cannot be
    /// reached: 504.
    Unavailable,
}

impl LookupOutcome {
    fn label(self) -> &'static str {
        match self {
            LookupOutcome::Hit => "hit",
            LookupOutcome::Revalidated => "revalidated",
            LookupOutcome::Stale => "stale",
            LookupOutcome::Partial => "partial",
            LookupOutcome::Miss => "miss",
            LookupOutcome::Bypass => "bypass",
            LookupOutcome::Unavailable => "unavailable",
        }
    }
}

/// What a conditional DESCRIBE of a stale title found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevalidationResult {
    /// Unchanged: the stored copy is fresh again.
    NotModified,
    /// Changed: fetched again.
    Changed,
    /// The origin answered with an error status (gone, forbidden…).
    Refused,
    /// The origin could not be asked (connection, timeout, protocol).
    Failed,
}

impl RevalidationResult {
    fn label(self) -> &'static str {
        match self {
            RevalidationResult::NotModified => "not_modified",
            RevalidationResult::Changed => "changed",
            RevalidationResult::Refused => "refused",
            RevalidationResult::Failed => "failed",
        }
    }
}

/// Session states and transports reported by `streamcache_sessions`.
pub const SESSION_STATES: [&str; 3] = ["ready", "playing", "paused"];
pub const SESSION_TRANSPORTS: [&str; 2] = ["tcp", "udp"];

pub struct Metrics {
    /// Locked to add collectors once the parts they read exist, and to encode.
    registry: Mutex<Registry>,
    player_sent_bytes: Family<MountLabels, Counter>,
    player_rtp_lost: Family<MountLabels, Counter>,
    origin_received_bytes: Family<MountLabels, Counter>,
    origin_failures: Family<FailureLabels, Counter>,
    origin_describe_seconds: Family<MountLabels, Histogram>,
    cache_lookups: Family<OutcomeLabels, Counter>,
    cache_revalidations: Family<ResultLabels, Counter>,
    /// Every mount label the byte counters were created with (a family
    /// cannot list its series), for their totals.
    counted_mounts: Mutex<BTreeSet<String>>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("streamcache");
        let player_sent_bytes = Family::default();
        registry.register(
            "player_sent_bytes",
            "Bytes of RTP and RTCP sent to players (UDP payloads, or interleaved frames over RTSP)",
            player_sent_bytes.clone(),
        );
        let player_rtp_lost = Family::default();
        registry.register(
            "player_rtp_lost_packets",
            "RTP packets players reported lost in their RTCP reception reports (rises of the cumulative totals)",
            player_rtp_lost.clone(),
        );
        let origin_received_bytes = Family::default();
        registry.register(
            "origin_received_bytes",
            "Bytes of RTP and RTCP received from origins",
            origin_received_bytes.clone(),
        );
        let origin_failures = Family::default();
        registry.register(
            "origin_failures",
            "Failed origin requests and origin sessions, by mount and reason",
            origin_failures.clone(),
        );
        let origin_describe_seconds =
            Family::<MountLabels, Histogram>::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.005, 2.0, 12))
            });
        registry.register(
            "origin_describe_seconds",
            "Time of successful DESCRIBE exchanges with origins, connection and authentication included",
            origin_describe_seconds.clone(),
        );
        let cache_lookups = Family::default();
        registry.register(
            "cache_lookups",
            "Where requested titles came from: one per DESCRIBE and per SETUP starting a session",
            cache_lookups.clone(),
        );
        let cache_revalidations = Family::default();
        registry.register(
            "cache_revalidations",
            "Conditional DESCRIBEs of stale stored titles, by result",
            cache_revalidations.clone(),
        );
        Metrics {
            registry: Mutex::new(registry),
            player_sent_bytes,
            player_rtp_lost,
            origin_received_bytes,
            origin_failures,
            origin_describe_seconds,
            cache_lookups,
            cache_revalidations,
            counted_mounts: Mutex::default(),
        }
    }

    fn registry(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The registry in the Prometheus text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry());
        out
    }

    /// The value of one series, e.g. `streamcache_x_total{mount="/a"}`, as
    /// encoded now (for tests).
    #[cfg(test)]
    pub fn sample(&self, series: &str) -> Option<f64> {
        self.encode()
            .lines()
            .filter(|l| !l.starts_with('#'))
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    }

    /// The counters of one player session on `mount`.
    pub fn player(&self, mount: &str) -> PlayerCounters {
        let labels = self.mount_labels(mount);
        PlayerCounters {
            sent_bytes: self.player_sent_bytes.get_or_create(&labels).clone(),
            rtp_lost: self.player_rtp_lost.get_or_create(&labels).clone(),
        }
    }

    /// The counters of origin work for `mount`.
    pub fn origin(&self, mount: &str) -> OriginCounters {
        let labels = self.mount_labels(mount);
        OriginCounters {
            received_bytes: self.origin_received_bytes.get_or_create(&labels).clone(),
            describe_seconds: self.origin_describe_seconds.get_or_create(&labels).clone(),
            failures: self.origin_failures.clone(),
            mount: labels.mount,
        }
    }

    /// The labels of `mount`'s counters, noted for the totals.
    fn mount_labels(&self, mount: &str) -> MountLabels {
        let mut counted = self
            .counted_mounts
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if !counted.contains(mount) {
            counted.insert(mount.to_owned());
        }
        MountLabels {
            mount: mount.to_owned(),
        }
    }

    /// The sum of one byte counter over every mount.
    fn total(&self, family: &Family<MountLabels, Counter>) -> u64 {
        let counted = self
            .counted_mounts
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        counted
            .iter()
            .filter_map(|mount| {
                family
                    .get(&MountLabels {
                        mount: mount.clone(),
                    })
                    .map(|c| c.get())
            })
            .fold(0, u64::saturating_add)
    }

    /// Bytes sent to players so far, over every mount.
    pub fn player_sent_bytes_total(&self) -> u64 {
        self.total(&self.player_sent_bytes)
    }

    /// Bytes received from origins so far, over every mount.
    pub fn origin_received_bytes_total(&self) -> u64 {
        self.total(&self.origin_received_bytes)
    }

    pub fn lookup(&self, outcome: LookupOutcome) {
        self.cache_lookups
            .get_or_create(&OutcomeLabels {
                outcome: outcome.label(),
            })
            .inc();
    }

    pub fn revalidation(&self, result: RevalidationResult) {
        self.cache_revalidations
            .get_or_create(&ResultLabels {
                result: result.label(),
            })
            .inc();
    }

    /// Reports the store's usage, budget and evictions at each scrape.
    pub fn watch_store(&self, store: Store) {
        self.registry()
            .register_collector(Box::new(StoreCollector { store }));
    }

    /// Reports player sessions by state and transport at each scrape;
    /// `census` lists the (state, transport) of every session.
    pub fn watch_sessions(
        &self,
        census: impl Fn() -> Vec<(&'static str, &'static str)> + Send + Sync + 'static,
    ) {
        self.registry()
            .register_collector(Box::new(SessionsCollector {
                census: Box::new(census),
            }));
    }
}

/// One player session's counters (labels resolved once).
#[derive(Clone, Debug)]
pub struct PlayerCounters {
    pub sent_bytes: Counter,
    pub rtp_lost: Counter,
}

/// Counters of origin work for one mount.
#[derive(Clone, Debug)]
pub struct OriginCounters {
    pub received_bytes: Counter,
    describe_seconds: Histogram,
    failures: Family<FailureLabels, Counter>,
    mount: String,
}

impl OriginCounters {
    pub fn failed(&self, e: &OriginError) {
        self.failures
            .get_or_create(&FailureLabels {
                mount: self.mount.clone(),
                reason: e.reason_label(),
            })
            .inc();
    }

    pub fn described_in(&self, elapsed: std::time::Duration) {
        self.describe_seconds.observe(elapsed.as_secs_f64());
    }
}

struct StoreCollector {
    store: Store,
}

impl fmt::Debug for StoreCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StoreCollector")
    }
}

impl Collector for StoreCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let used = ConstGauge::new(i64::try_from(self.store.used_bytes()).unwrap_or(i64::MAX));
        used.encode(encoder.encode_descriptor(
            "store_used_bytes",
            "Bytes of the store's files on disk",
            None,
            used.metric_type(),
        )?)?;
        let budget =
            ConstGauge::new(i64::try_from(self.store.config().budget_bytes).unwrap_or(i64::MAX));
        budget.encode(encoder.encode_descriptor(
            "store_budget_bytes",
            "The store's disk budget (cache.disk_budget)",
            None,
            budget.metric_type(),
        )?)?;
        let evictions = ConstCounter::new(self.store.evictions());
        evictions.encode(encoder.encode_descriptor(
            "store_evictions",
            "Presentations evicted to stay under the disk budget",
            None,
            evictions.metric_type(),
        )?)?;
        let corrupt = ConstCounter::new(self.store.corrupt_records());
        corrupt.encode(encoder.encode_descriptor(
            "store_corrupt_records",
            "Damaged records found in the store: runs cut at open, records players skipped",
            None,
            corrupt.metric_type(),
        )?)?;
        Ok(())
    }
}

type Census = Box<dyn Fn() -> Vec<(&'static str, &'static str)> + Send + Sync>;

struct SessionsCollector {
    census: Census,
}

impl fmt::Debug for SessionsCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionsCollector")
    }
}

impl Collector for SessionsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let family = Family::<SessionLabels, Gauge>::default();
        // Every combination is reported, zeros included, so that series do
        // not come and go with the sessions.
        for state in SESSION_STATES {
            for transport in SESSION_TRANSPORTS {
                family
                    .get_or_create(&SessionLabels { state, transport })
                    .set(0);
            }
        }
        for (state, transport) in (self.census)() {
            family
                .get_or_create(&SessionLabels { state, transport })
                .inc();
        }
        family.encode(encoder.encode_descriptor(
            "sessions",
            "Player sessions, by state (ready: set up, not playing) and media transport",
            None,
            family.metric_type(),
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_show_with_their_labels() {
        let m = Metrics::new();
        let player = m.player("/cams");
        player.sent_bytes.inc_by(1200);
        m.player("/cams").sent_bytes.inc_by(34);
        player.rtp_lost.inc_by(2);
        m.lookup(LookupOutcome::Miss);
        m.lookup(LookupOutcome::Hit);
        m.lookup(LookupOutcome::Hit);
        m.revalidation(RevalidationResult::NotModified);
        let origin = m.origin("/vod");
        origin.received_bytes.inc_by(99);
        origin.failed(&OriginError::ConnectTimeout {
            origin: "rtsp://o/x".into(),
        });
        origin.described_in(std::time::Duration::from_millis(30));
        let s = |n| m.sample(n);
        assert_eq!(
            s("streamcache_player_sent_bytes_total{mount=\"/cams\"}"),
            Some(1234.0)
        );
        assert_eq!(
            s("streamcache_player_rtp_lost_packets_total{mount=\"/cams\"}"),
            Some(2.0)
        );
        assert_eq!(
            s("streamcache_cache_lookups_total{outcome=\"hit\"}"),
            Some(2.0)
        );
        assert_eq!(
            s("streamcache_cache_lookups_total{outcome=\"miss\"}"),
            Some(1.0)
        );
        assert_eq!(
            s("streamcache_cache_revalidations_total{result=\"not_modified\"}"),
            Some(1.0)
        );
        assert_eq!(
            s("streamcache_origin_received_bytes_total{mount=\"/vod\"}"),
            Some(99.0)
        );
        assert_eq!(
            s("streamcache_origin_failures_total{mount=\"/vod\",reason=\"connect_timeout\"}"),
            Some(1.0)
        );
        assert_eq!(
            s("streamcache_origin_describe_seconds_count{mount=\"/vod\"}"),
            Some(1.0)
        );
        assert_eq!(
            s("streamcache_origin_describe_seconds_bucket{le=\"0.04\",mount=\"/vod\"}"),
            Some(1.0)
        );
        // Totals over every mount (the cluster's load report).
        m.player("/vod").sent_bytes.inc_by(6);
        assert_eq!(m.player_sent_bytes_total(), 1240);
        assert_eq!(m.origin_received_bytes_total(), 99);
    }

    #[test]
    fn sessions_are_counted_at_scrape_time_zeros_included() {
        let m = Metrics::new();
        let census = std::sync::Arc::new(Mutex::new(vec![("playing", "tcp"), ("playing", "tcp")]));
        let shared = std::sync::Arc::clone(&census);
        m.watch_sessions(move || shared.lock().unwrap().clone());
        let playing_tcp = "streamcache_sessions{state=\"playing\",transport=\"tcp\"}";
        let paused_udp = "streamcache_sessions{state=\"paused\",transport=\"udp\"}";
        assert_eq!(m.sample(playing_tcp), Some(2.0));
        assert_eq!(m.sample(paused_udp), Some(0.0));
        *census.lock().unwrap() = vec![("paused", "udp")];
        assert_eq!(m.sample(playing_tcp), Some(0.0));
        assert_eq!(m.sample(paused_udp), Some(1.0));
    }
}
