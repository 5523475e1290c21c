//! The master's Prometheus metrics (`GET /metrics` on its admin API):
//! redirects by outcome and their latency, control connections refused,
//! and (read off the state at scrape time) nodes by health.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use super::state::MasterState;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

pub struct MasterMetrics {
    registry: Mutex<Registry>,
    redirects: Family<OutcomeLabels, Counter>,
    redirect_seconds: Histogram,
    prepare_refusals: Counter,
    control_refusals: Family<ReasonLabels, Counter>,
    copies_started: Counter,
    copies_ended: Family<OutcomeLabels, Counter>,
}

impl MasterMetrics {
    pub fn new(state: Arc<MasterState>) -> MasterMetrics {
        let mut registry = Registry::with_prefix("streamcache_master");
        let redirects = Family::default();
        registry.register(
            "player_requests",
            "Players' requests by outcome: redirected (302), no_node (503), not_found, unauthorized, refused (other methods), bad_request",
            redirects.clone(),
        );
        let redirect_seconds = Histogram::new(exponential_buckets(0.0005, 2.0, 14));
        registry.register(
            "redirect_seconds",
            "Time from a DESCRIBE to its 302, the chosen node's preparation included",
            redirect_seconds.clone(),
        );
        let prepare_refusals = Counter::default();
        registry.register(
            "prepare_failures",
            "Prepare requests a node refused or did not answer in time (the next node was tried)",
            prepare_refusals.clone(),
        );
        let control_refusals = Family::default();
        registry.register(
            "control_refusals",
            "Control connections refused: token, hello (version, id, first message), malformed (not HTTP/2 gRPC)",
            control_refusals.clone(),
        );
        let copies_started = Counter::default();
        registry.register(
            "copies_started",
            "Node-to-node copies started (one source, one span each)",
            copies_started.clone(),
        );
        let copies_ended = Family::default();
        registry.register(
            "copies_ended",
            "Node-to-node copies ended, by outcome: done, failed (resumed from another source where there is one)",
            copies_ended.clone(),
        );
        registry.register_collector(Box::new(NodeHealth(state)));
        MasterMetrics {
            registry: Mutex::new(registry),
            redirects,
            redirect_seconds,
            prepare_refusals,
            control_refusals,
            copies_started,
            copies_ended,
        }
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &registry);
        out
    }

    pub fn request(&self, outcome: &'static str) {
        self.redirects
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    pub fn redirected_in(&self, elapsed: Duration) {
        self.redirect_seconds.observe(elapsed.as_secs_f64());
    }

    pub fn prepare_failed(&self) {
        self.prepare_refusals.inc();
    }

    pub fn copy_started(&self) {
        self.copies_started.inc();
    }

    pub fn copy_ended(&self, outcome: &'static str) {
        self.copies_ended
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    pub fn control_refused(&self, reason: &'static str) {
        self.control_refusals
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }
}

/// `streamcache_master_nodes{health}`, read off the state when scraped.
#[derive(Debug)]
struct NodeHealth(Arc<MasterState>);

impl Collector for NodeHealth {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let (up, suspect, down) = self.0.health_counts();
        let mut metric = encoder.encode_descriptor(
            "nodes",
            "Nodes known to the master, by health",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for (health, count) in [("up", up), ("suspect", suspect), ("down", down)] {
            let gauge = ConstGauge::new(i64::try_from(count).unwrap_or(i64::MAX));
            let labels = [("health", health)];
            gauge.encode(metric.encode_family(&labels)?)?;
        }
        let (running, allocated_bps) = self.0.copy_totals();
        for (name, help, value) in [
            (
                "copies_running",
                "Node-to-node copies running now",
                running as u64,
            ),
            (
                "copy_allocated_bps",
                "Bandwidth allocated to the running copies, bit/s",
                allocated_bps,
            ),
        ] {
            let gauge = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
            let metric = encoder.encode_descriptor(
                name,
                help,
                None,
                prometheus_client::metrics::MetricType::Gauge,
            )?;
            gauge.encode(metric)?;
        }
        Ok(())
    }
}
