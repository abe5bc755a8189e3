//! The scraper's own metrics, named in one place.

use prometheus::{IntCounter, IntCounterVec, Opts, Registry};

use super::ScrapeError;

/// Counters of the scraper; clones share the same counters.
#[derive(Clone)]
pub struct ScrapeTelemetry {
    /// `vigil_agent_scrape_scrapes_total`: scrapes attempted.
    pub scrapes: IntCounter,
    /// `vigil_agent_scrape_failures_total{reason}`: scrapes that failed, by
    /// [`ScrapeError::reason`].
    pub failures: IntCounterVec,
    /// `vigil_agent_scrape_samples_total`: samples kept after metric relabeling.
    pub samples: IntCounter,
    /// `vigil_agent_scrape_stale_markers_total`: staleness markers sent.
    pub stale_markers: IntCounter,
}

impl ScrapeTelemetry {
    pub fn new() -> ScrapeTelemetry {
        let counter = |name: &str, help: &str| {
            IntCounter::new(name, help).unwrap_or_else(|e| panic!("metric {name}: {e}"))
        };
        let telemetry = ScrapeTelemetry {
            scrapes: counter("vigil_agent_scrape_scrapes_total", "Scrapes attempted."),
            failures: IntCounterVec::new(
                Opts::new(
                    "vigil_agent_scrape_failures_total",
                    "Scrapes that failed, by reason.",
                ),
                &["reason"],
            )
            .unwrap_or_else(|e| panic!("metric vigil_agent_scrape_failures_total: {e}")),
            samples: counter(
                "vigil_agent_scrape_samples_total",
                "Samples kept after metric relabeling.",
            ),
            stale_markers: counter(
                "vigil_agent_scrape_stale_markers_total",
                "Staleness markers sent for series that vanished.",
            ),
        };
        // Every reason shows from the start, at 0, so a rate over it has a baseline.
        for reason in ScrapeError::REASONS {
            telemetry.failures.with_label_values(&[reason]);
        }
        telemetry
    }

    /// Registers every counter in `registry` (an admin `/metrics` serves it).
    pub fn register(&self, registry: &Registry) -> prometheus::Result<()> {
        registry.register(Box::new(self.scrapes.clone()))?;
        registry.register(Box::new(self.failures.clone()))?;
        registry.register(Box::new(self.samples.clone()))?;
        registry.register(Box::new(self.stale_markers.clone()))
    }

    /// Failed scrapes, all reasons together.
    pub fn failures_total(&self) -> u64 {
        [
            "http",
            "status",
            "timeout",
            "body_limit",
            "parse",
            "sample_limit",
        ]
        .iter()
        .map(|r| self.failures.with_label_values(&[*r]).get())
        .sum()
    }
}

impl Default for ScrapeTelemetry {
    fn default() -> Self {
        ScrapeTelemetry::new()
    }
}
