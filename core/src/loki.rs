//! OTLP logs → Grafana Loki push: filled in by its own change.
