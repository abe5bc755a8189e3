//! Buffers that live outside the collector process, shared by several collectors:
//! [`redis`] (Redis Streams, one consumer group) and [`nats`] (NATS JetStream, one durable
//! pull consumer per signal). The embedded disk and memory buffers are in `vigil-core`.

pub mod nats;
pub mod redis;
