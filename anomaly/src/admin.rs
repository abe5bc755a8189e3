//! The admin port: `/metrics` (Prometheus text), `/healthz` (the process answers),
//! `/readyz` (state restored and the evaluation loop running).

use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;

use crate::telemetry::Telemetry;

pub struct AdminState {
    pub telemetry: Telemetry,
    /// Set once state is restored and the loop runs; cleared when shutting down.
    pub running: AtomicBool,
}

#[async_trait]
impl vigil_core::admin::Admin for AdminState {
    async fn metrics(&self) -> String {
        self.telemetry.render()
    }

    fn ready(&self) -> Result<(), String> {
        match self.running.load(Ordering::Acquire) {
            true => Ok(()),
            false => Err(String::new()),
        }
    }
}
