//! The controller's metrics, with Istio's names where istiod has the same measure
//! (so its dashboards read them): connected proxies, pushes by type, rejects,
//! convergence time; and Strait's own translate time.

use prometheus::{Encoder, Histogram, HistogramOpts, IntCounterVec, IntGauge, Opts, Registry};

/// Push types, as the `type` label gives them.
pub const CONFIG: &str = "config";
/// An endpoint-only push.
pub const ENDPOINTS: &str = "endpoints";

/// Buckets in seconds, from a millisecond to half a minute.
const SECONDS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The controller's metric families.
pub struct Metrics {
    registry: Registry,
    /// `pilot_xds`: proxies connected now.
    pub connected: IntGauge,
    /// `pilot_xds_pushes{type}`: messages sent, by type.
    pub pushes: IntCounterVec,
    /// `pilot_total_xds_rejects{type}`: messages proxies refused (NACKs).
    pub rejects: IntCounterVec,
    /// `pilot_proxy_convergence_time`: from a version's first handling to a proxy's ACK.
    pub convergence: Histogram,
    /// `strait_controller_translate_seconds`: time of one proxy scope's build.
    pub translate: Histogram,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// The families, registered.
    pub fn new() -> prometheus::Result<Metrics> {
        let registry = Registry::new();
        let connected = IntGauge::new("pilot_xds", "Proxies connected to this controller.")?;
        let pushes = IntCounterVec::new(
            Opts::new("pilot_xds_pushes", "Configuration messages sent to proxies, by type."),
            &["type"],
        )?;
        let rejects = IntCounterVec::new(
            Opts::new(
                "pilot_total_xds_rejects",
                "Configuration messages proxies refused (NACK), by type.",
            ),
            &["type"],
        )?;
        let convergence = Histogram::with_opts(
            HistogramOpts::new(
                "pilot_proxy_convergence_time",
                "Seconds from a configuration change being handled to a proxy's ACK.",
            )
            .buckets(SECONDS.to_vec()),
        )?;
        let translate = Histogram::with_opts(
            HistogramOpts::new(
                "strait_controller_translate_seconds",
                "Seconds to build one proxy scope's configuration.",
            )
            .buckets(SECONDS.to_vec()),
        )?;
        registry.register(Box::new(connected.clone()))?;
        registry.register(Box::new(pushes.clone()))?;
        registry.register(Box::new(rejects.clone()))?;
        registry.register(Box::new(convergence.clone()))?;
        registry.register(Box::new(translate.clone()))?;
        for kind in [CONFIG, ENDPOINTS] {
            // Shown at zero before the first push, so that rates work from the start.
            pushes.with_label_values(&[kind]);
            rejects.with_label_values(&[kind]);
        }
        Ok(Metrics {
            registry,
            connected,
            pushes,
            rejects,
            convergence,
            translate,
        })
    }

    /// The registry, for the controller's other parts (the CA) to add their families
    /// to, so that `/metrics` shows them too.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The Prometheus text exposition of every family.
    pub fn encode(&self) -> String {
        let mut out = Vec::new();
        // Encoding into a Vec fails only for families the registry could not have.
        if let Err(e) = prometheus::TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            log::warn!("metrics: {e}");
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn istio_names_are_exported() {
        let m = Metrics::new().expect("metrics");
        m.connected.set(2);
        m.pushes.with_label_values(&[ENDPOINTS]).inc();
        let text = m.encode();
        assert!(text.contains("pilot_xds 2"), "{text}");
        assert!(text.contains("pilot_xds_pushes{type=\"endpoints\"} 1"), "{text}");
        assert!(text.contains("pilot_total_xds_rejects{type=\"config\"} 0"), "{text}");
        assert!(text.contains("pilot_proxy_convergence_time_bucket"), "{text}");
        assert!(text.contains("strait_controller_translate_seconds_count 0"), "{text}");
    }
}
