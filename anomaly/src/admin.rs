//! The admin port: `/metrics` (Prometheus text), `/healthz` (the process answers),
//! `/readyz` (state restored and the evaluation loop running).

use crate::telemetry::Telemetry;

/// The admin port's state: the telemetry, and a flag set once state is restored and the
/// loop runs, cleared when shutting down.
pub type AdminState = vigil_core::admin::Running<Telemetry>;

impl vigil_core::admin::Metrics for Telemetry {
    fn render(&self) -> String {
        Telemetry::render(self)
    }
}
