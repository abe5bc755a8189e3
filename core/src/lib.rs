//! Shared parts of Vigil: what two or more of its binaries use.
//!
//! - [`signal`]: the three OTLP signals and how they are named everywhere.
//! - [`otlp`]: decoding and inspecting OTLP export requests (protobuf and JSON), and OTLP
//!   values as text ([`otlp::any_value_text`]), the same for every exporter.
//! - [`buffer`]: the [`buffer::Buffer`] trait, the seam between receivers and exporters, and
//!   its embedded implementations: [`buffer::disk`] (the default) and [`buffer::memory`].
//! - [`remote_write`]: OTLP metrics → Prometheus remote write 1.0.
//! - [`loki`]: OTLP logs → Grafana Loki push.
//! - [`gzip`]: inflating a gzip body with a bound on its decompressed size.
//! - [`snappy`]: a protobuf message as one snappy block, both ways, with a limit on the
//!   decompressed size when reading: the body format remote write and Loki share.
//! - [`config`]: YAML loading with `${ENV}` substitution, byte sizes, durations, and error
//!   collection so a config reports every problem at once, each with its path.
//! - [`retry`]: exponential backoff with jitter.
//! - [`process`]: a binary's own logs and its shutdown signal, the same in every `main`.
//! - [`telemetry`]: registering self-metrics and rendering them for `/metrics`.
//! - [`admin`]: the `/metrics`, `/healthz`, `/readyz` routes every binary serves.

pub mod admin;
pub mod buffer;
pub mod config;
pub mod gzip;
pub mod loki;
pub mod otlp;
pub mod process;
pub mod remote_write;
pub mod retry;
pub mod signal;
pub mod snappy;
pub mod telemetry;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod tls;
pub mod wire;

pub use signal::Signal;

/// An error and every cause under it, `outer: inner: innermost`: what a log line about a
/// failed request needs (reqwest's own message hides the cause).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_chain_shows_every_cause() {
        #[derive(Debug, thiserror::Error)]
        #[error("error sending request")]
        struct Outer(#[source] std::io::Error);
        let e = Outer(std::io::Error::other("connection refused"));
        assert_eq!(error_chain(&e), "error sending request: connection refused");
    }
}

#[cfg(test)]
mod proptests;
