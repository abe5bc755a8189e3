//! Buffers that live outside the collector: shared by several collectors.

pub mod nats;
