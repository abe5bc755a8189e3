//! Buffers that live outside the collector process: [`redis`] (Redis Streams).

pub mod redis;
