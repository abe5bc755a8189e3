use std::sync::atomic::{AtomicU32, Ordering};

use opentelemetry_proto::tonic::logs::v1::LogRecord;

use super::*;
use crate::checkpoint::FileKey;
use crate::tail::{Ack, string_attribute};

fn record(resource: &Arc<Resource>, body: &str, offset: u64) -> TailedRecord {
    TailedRecord {
        resource: resource.clone(),
        record: LogRecord {
            body: Some(opentelemetry_proto::tonic::common::v1::AnyValue {
                value: Some(
                    opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(
                        body.into(),
                    ),
                ),
            }),
            ..Default::default()
        },
        ack: Ack {
            key: FileKey { dev: 1, ino: 1 },
            generation: 0,
            offset,
        },
        size: body.len(),
    }
}

#[test]
fn records_of_one_file_share_a_resource_in_the_request() {
    let a = Arc::new(Resource {
        attributes: vec![string_attribute("log.file.path", "/a")],
        ..Default::default()
    });
    let b = Arc::new(Resource {
        attributes: vec![string_attribute("log.file.path", "/b")],
        ..Default::default()
    });
    let batch = vec![record(&a, "1", 1), record(&b, "2", 2), record(&a, "3", 3)];
    let request = logs_request(&batch);
    assert_eq!(request.resource_logs.len(), 2);
    let counts: Vec<usize> = request
        .resource_logs
        .iter()
        .map(|r| r.scope_logs[0].log_records.len())
        .collect();
    assert_eq!(counts, vec![2, 1]);
    assert_eq!(
        request.resource_logs[0].scope_logs[0]
            .scope
            .as_ref()
            .unwrap()
            .name,
        SCOPE_NAME
    );
}

#[tokio::test(start_paused = true)]
async fn retryable_failures_are_retried_and_permanent_ones_are_not() {
    let telemetry = Telemetry::new();
    let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1)).unwrap();
    let tries = AtomicU32::new(0);
    let outcome = deliver("logs", &backoff, Duration::from_secs(1), &telemetry, || {
        let n = tries.fetch_add(1, Ordering::SeqCst);
        async move {
            match n {
                0 => Err(ShipError::Retryable {
                    reason: "down".into(),
                    retry_after: None,
                }),
                1 => Err(ShipError::Retryable {
                    reason: "full".into(),
                    retry_after: Some(Duration::from_secs(3600)),
                }),
                _ => Ok(Accepted::default()),
            }
        }
    })
    .await;
    assert_eq!(outcome, Delivery::Accepted(Accepted::default()));
    assert_eq!(tries.load(Ordering::SeqCst), 3);
    let failures = |kind: &str| {
        telemetry
            .ship_failures
            .with_label_values(&["logs", kind])
            .get()
    };
    assert_eq!(failures("retryable"), 2);

    let tries = AtomicU32::new(0);
    let outcome = deliver("logs", &backoff, Duration::from_secs(1), &telemetry, || {
        tries.fetch_add(1, Ordering::SeqCst);
        async {
            Err(ShipError::Permanent {
                reason: "bad".into(),
            })
        }
    })
    .await;
    assert_eq!(outcome, Delivery::Refused("bad".into()));
    assert_eq!(tries.load(Ordering::SeqCst), 1);
    assert_eq!(failures("permanent"), 1);
}
