//! vigil-agent: the node agent's inputs. (The integrator merges this map with the rest.)
//!
//! - [`scrape`]: scrapes Prometheus endpoints and turns the samples into OTLP metrics.
//! - [`host`]: reads host metrics from /proc and /sys under node_exporter's names.

pub mod host;
pub mod scrape;
