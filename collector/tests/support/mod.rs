//! What the Redis buffer test files share. Each test binary uses only part of it.
#![allow(dead_code)]

use std::net::TcpListener;
use std::time::Duration;

use bytes::Bytes;
use vigil_core::Signal;
use vigil_core::buffer::{BatchLimits, Consumer, Delivery, Record};

pub const LIMITS: BatchLimits = BatchLimits {
    max_records: 100,
    max_bytes: 1 << 20,
};

pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// A one-item record of `signal` whose 8 payload bytes are all `n`.
pub fn record(signal: Signal, n: u8) -> Record {
    Record::new(signal, Some("team-a".into()), 1, Bytes::from(vec![n; 8]))
}

/// Reads until `want` records arrived, failing after 5s.
pub async fn read(consumer: &mut dyn Consumer, want: usize) -> Vec<Delivery> {
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), async {
        while got.len() < want {
            got.extend(consumer.next_batch(LIMITS).await.expect("next_batch"));
        }
    })
    .await
    .unwrap_or_else(|_| panic!("only {} of {want} records within 5s", got.len()));
    got
}
