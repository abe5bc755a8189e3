//! A bounded in-memory buffer, for tests and throwaway runs. Everything in it is lost when
//! the process exits; it never says otherwise.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Notify;

use super::{
    BatchLimits, Buffer, BufferError, BufferStats, Consumer, DeadLetter, Delivery, DeliveryId,
    Record, SignalStats, now_ms,
};
use crate::Signal;

/// Most dead letters kept; the oldest is dropped (and counted) beyond this.
const MAX_DEAD_LETTERS: usize = 10_000;

#[derive(Clone)]
pub struct MemoryBuffer {
    inner: Arc<Inner>,
}

struct Inner {
    capacity: u64,
    state: Mutex<State>,
    /// One per signal: woken when a record is pushed.
    pushed: [Notify; 3],
}

#[derive(Default)]
struct State {
    used: u64,
    closed: bool,
    queues: [Queue; 3],
    dead: VecDeque<DeadLetter>,
    dead_dropped: u64,
}

#[derive(Default)]
struct Queue {
    next_seq: u64,
    /// Not yet handed out.
    ready: VecDeque<(u64, Record)>,
    /// Handed out, not yet acked.
    in_flight: BTreeMap<u64, Record>,
}

impl MemoryBuffer {
    pub fn new(capacity_bytes: u64) -> MemoryBuffer {
        MemoryBuffer {
            inner: Arc::new(Inner {
                capacity: capacity_bytes,
                state: Mutex::new(State::default()),
                pushed: Default::default(),
            }),
        }
    }

    /// The dead letters kept so far, oldest first.
    pub fn dead_letters(&self) -> Vec<DeadLetter> {
        self.inner.lock().dead.iter().cloned().collect()
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves the queues consistent (every mutation is a
        // single push/pop), so a poisoned lock is still safe to use.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl Buffer for MemoryBuffer {
    async fn push(&self, record: Record) -> Result<(), BufferError> {
        let size = record.encoded_len() as u64;
        if size > self.inner.capacity {
            return Err(BufferError::TooLarge {
                size,
                limit: self.inner.capacity,
            });
        }
        let signal = record.signal;
        {
            let mut state = self.inner.lock();
            if state.closed {
                return Err(BufferError::Closed);
            }
            if state.used + size > self.inner.capacity {
                return Err(BufferError::Full {
                    used: state.used,
                    capacity: self.inner.capacity,
                    bound: super::Bound::Bytes,
                    retry_after: Duration::from_secs(1),
                });
            }
            state.used += size;
            let queue = &mut state.queues[signal.index()];
            let seq = queue.next_seq;
            queue.next_seq += 1;
            queue.ready.push_back((seq, record));
        }
        self.inner.pushed[signal.index()].notify_one();
        Ok(())
    }

    async fn consumer(&self, signal: Signal) -> Result<Box<dyn Consumer>, BufferError> {
        Ok(Box::new(MemoryConsumer {
            inner: self.inner.clone(),
            signal,
        }))
    }

    async fn dead_letter(&self, letter: DeadLetter) -> Result<(), BufferError> {
        let mut state = self.inner.lock();
        if state.dead.len() >= MAX_DEAD_LETTERS {
            state.dead.pop_front();
            state.dead_dropped += 1;
        }
        state.dead.push_back(letter);
        Ok(())
    }

    fn is_ready(&self) -> bool {
        !self.inner.lock().closed
    }

    async fn stats(&self) -> BufferStats {
        let state = self.inner.lock();
        let now = now_ms();
        let mut stats = BufferStats {
            used_bytes: state.used,
            capacity_bytes: self.inner.capacity,
            dead_letters_dropped: state.dead_dropped,
            ..Default::default()
        };
        for signal in Signal::ALL {
            let queue = &state.queues[signal.index()];
            let oldest = queue
                .in_flight
                .values()
                .next()
                .or(queue.ready.front().map(|(_, r)| r))
                .map(|r| Duration::from_millis(now.saturating_sub(r.received_at_ms)));
            stats.signals[signal.index()] = SignalStats {
                pending_records: (queue.ready.len() + queue.in_flight.len()) as u64,
                oldest_unacked_age: oldest,
                undelivered_records: Some(queue.ready.len() as u64),
                ..Default::default()
            };
        }
        stats
    }

    async fn close(&self) -> Result<(), BufferError> {
        self.inner.lock().closed = true;
        Ok(())
    }
}

struct MemoryConsumer {
    inner: Arc<Inner>,
    signal: Signal,
}

#[async_trait]
impl Consumer for MemoryConsumer {
    async fn next_batch(&mut self, limits: BatchLimits) -> Result<Vec<Delivery>, BufferError> {
        loop {
            // Register interest before looking, so a push between the look and the wait
            // is not missed.
            let notified = self.inner.pushed[self.signal.index()].notified();
            {
                let mut state = self.inner.lock();
                let queue = &mut state.queues[self.signal.index()];
                let mut batch = Vec::new();
                let mut bytes = 0usize;
                while let Some((_, record)) = queue.ready.front() {
                    let size = record.payload.len();
                    if !batch.is_empty()
                        && (batch.len() >= limits.max_records || bytes + size > limits.max_bytes)
                    {
                        break;
                    }
                    let (seq, record) = queue.ready.pop_front().expect("front was Some");
                    bytes += size;
                    queue.in_flight.insert(seq, record.clone());
                    batch.push(Delivery {
                        id: DeliveryId(seq),
                        record,
                    });
                }
                if !batch.is_empty() {
                    return Ok(batch);
                }
            }
            notified.await;
        }
    }

    async fn ack(&mut self, ids: &[DeliveryId]) -> Result<(), BufferError> {
        let mut state = self.inner.lock();
        let mut freed = 0;
        let queue = &mut state.queues[self.signal.index()];
        for id in ids {
            if let Some(record) = queue.in_flight.remove(&id.0) {
                freed += record.encoded_len() as u64;
            }
        }
        state.used -= freed;
        Ok(())
    }
}

impl Drop for MemoryConsumer {
    /// Records handed out but never acked go back to the front of the queue, as a broker
    /// would redeliver them.
    fn drop(&mut self) {
        let mut state = self.inner.lock();
        let queue = &mut state.queues[self.signal.index()];
        let in_flight = std::mem::take(&mut queue.in_flight);
        for (seq, record) in in_flight.into_iter().rev() {
            queue.ready.push_front((seq, record));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn record(signal: Signal, n: usize) -> Record {
        Record::new(signal, None, 1, Bytes::from(vec![b'x'; n]))
    }

    const LIMITS: BatchLimits = BatchLimits {
        max_records: 10,
        max_bytes: 1 << 20,
    };

    #[tokio::test]
    async fn refuses_when_full_and_frees_on_ack() {
        let one = record(Signal::Logs, 100).encoded_len() as u64;
        let buffer = MemoryBuffer::new(one * 2);
        buffer.push(record(Signal::Logs, 100)).await.unwrap();
        buffer.push(record(Signal::Logs, 100)).await.unwrap();
        assert!(matches!(
            buffer.push(record(Signal::Logs, 100)).await,
            Err(BufferError::Full { .. })
        ));
        let mut consumer = buffer.consumer(Signal::Logs).await.unwrap();
        let batch = consumer.next_batch(LIMITS).await.unwrap();
        assert_eq!(batch.len(), 2);
        consumer.ack(&[batch[0].id]).await.unwrap();
        buffer.push(record(Signal::Logs, 100)).await.unwrap();
    }

    #[tokio::test]
    async fn too_large_is_not_full() {
        let buffer = MemoryBuffer::new(10);
        assert!(matches!(
            buffer.push(record(Signal::Metrics, 100)).await,
            Err(BufferError::TooLarge { .. })
        ));
    }

    #[tokio::test]
    async fn unacked_records_are_redelivered_to_the_next_consumer() {
        let buffer = MemoryBuffer::new(1 << 20);
        for _ in 0..3 {
            buffer.push(record(Signal::Traces, 10)).await.unwrap();
        }
        let mut consumer = buffer.consumer(Signal::Traces).await.unwrap();
        let batch = consumer.next_batch(LIMITS).await.unwrap();
        consumer.ack(&[batch[0].id]).await.unwrap();
        drop(consumer);
        let mut consumer = buffer.consumer(Signal::Traces).await.unwrap();
        let again = consumer.next_batch(LIMITS).await.unwrap();
        let ids: Vec<_> = again.iter().map(|d| d.id).collect();
        assert_eq!(ids, vec![batch[1].id, batch[2].id]);
        let stats = buffer.stats().await;
        assert_eq!(stats.signals[Signal::Traces.index()].pending_records, 2);
        // Both are handed out again: pending, but none waits for a consumer.
        assert_eq!(
            stats.signals[Signal::Traces.index()].undelivered_records,
            Some(0)
        );
    }

    #[tokio::test]
    async fn batches_respect_limits_and_signals_are_separate() {
        let buffer = MemoryBuffer::new(1 << 20);
        for _ in 0..5 {
            buffer.push(record(Signal::Metrics, 10)).await.unwrap();
        }
        buffer.push(record(Signal::Logs, 10)).await.unwrap();
        let mut consumer = buffer.consumer(Signal::Metrics).await.unwrap();
        let limits = BatchLimits {
            max_records: 2,
            max_bytes: 1 << 20,
        };
        assert_eq!(consumer.next_batch(limits).await.unwrap().len(), 2);
        let by_bytes = BatchLimits {
            max_records: 100,
            max_bytes: 15,
        };
        assert_eq!(consumer.next_batch(by_bytes).await.unwrap().len(), 1);
        assert_eq!(consumer.next_batch(LIMITS).await.unwrap().len(), 2);
    }
}
