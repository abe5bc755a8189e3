//! OTLP metrics → Prometheus remote write 1.0: filled in by its own change.
