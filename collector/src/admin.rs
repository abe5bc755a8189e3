//! The admin port: `/metrics` (Prometheus text), `/healthz` (the process answers),
//! `/readyz` (the buffer is open and the receivers are bound).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use vigil_core::buffer::Buffer;

use crate::telemetry::Telemetry;

pub struct AdminState {
    pub telemetry: Telemetry,
    pub buffer: Arc<dyn Buffer>,
    /// Set once every receiver is bound.
    pub receivers_bound: AtomicBool,
}

#[async_trait]
impl vigil_core::admin::Admin for AdminState {
    async fn metrics(&self) -> String {
        self.telemetry.observe_buffer(&self.buffer.stats().await);
        self.telemetry.render()
    }

    fn ready(&self) -> Result<(), String> {
        let bound = self.receivers_bound.load(Ordering::Acquire);
        let buffer = self.buffer.is_ready();
        match bound && buffer {
            true => Ok(()),
            false => Err(format!("receivers bound={bound}, buffer ready={buffer}")),
        }
    }
}
