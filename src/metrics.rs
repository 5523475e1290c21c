//! The daemon's Prometheus metrics (`GET /metrics` on the admin API).
//!
//! One [`Metrics`] is shared by every part of the daemon; each part updates
//! its own counters and gauges, and the admin API encodes the registry in
//! the Prometheus text format on request.

use prometheus_client::encoding::text::encode;
use prometheus_client::registry::Registry;

pub struct Metrics {
    registry: Registry,
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::with_prefix("streamcache");
        Metrics { registry }
    }

    /// The registry in the Prometheus text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}
