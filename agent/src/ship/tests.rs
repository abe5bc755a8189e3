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

#[test]
fn the_request_encoded_from_the_batch_is_the_request_encoded() {
    let a = Arc::new(Resource {
        attributes: vec![string_attribute("log.file.path", "/a")],
        ..Default::default()
    });
    let b = Arc::new(Resource::default());
    let batch = vec![
        record(&a, "1", 1),
        record(&b, "2", 2),
        record(&a, &"x".repeat(300), 3),
        record(&b, "", 4),
    ];
    assert_eq!(
        encode_logs_request(&batch),
        prost::Message::encode_to_vec(&logs_request(&batch))
    );
    assert!(encode_logs_request(&[]).is_empty());
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

/// An OTLP/gRPC logs and metrics service on a loopback port that answers with scripted
/// statuses first, then accepts, recording what it accepted.
mod fake_collector {
    use std::collections::VecDeque;

    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceResponse;
    use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
        LogsService, LogsServiceServer,
    };
    use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
        MetricsService, MetricsServiceServer,
    };
    use opentelemetry_proto::tonic::collector::metrics::v1::{
        ExportMetricsServiceRequest, ExportMetricsServiceResponse,
    };

    use super::*;

    #[derive(Default)]
    pub struct State {
        pub script: VecDeque<tonic::Code>,
        pub logs: Vec<ExportLogsServiceRequest>,
        pub metrics: Vec<ExportMetricsServiceRequest>,
        pub calls: usize,
        /// The `grpc-encoding` of each request that reached a service.
        pub encodings: Vec<String>,
    }

    #[derive(Clone, Default)]
    pub struct Fake(pub Arc<Mutex<State>>);

    impl Fake {
        fn answer(&self, metadata: &tonic::metadata::MetadataMap) -> Result<(), tonic::Status> {
            let mut state = self.0.lock().unwrap();
            state.calls += 1;
            let encoding = metadata
                .get("grpc-encoding")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("identity");
            state.encodings.push(encoding.to_string());
            match state.script.pop_front() {
                Some(code) => Err(tonic::Status::new(code, "scripted")),
                None => Ok(()),
            }
        }
    }

    #[tonic::async_trait]
    impl LogsService for Fake {
        async fn export(
            &self,
            request: tonic::Request<ExportLogsServiceRequest>,
        ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
            self.answer(request.metadata())?;
            self.0.lock().unwrap().logs.push(request.into_inner());
            Ok(tonic::Response::new(ExportLogsServiceResponse::default()))
        }
    }

    #[tonic::async_trait]
    impl MetricsService for Fake {
        async fn export(
            &self,
            request: tonic::Request<ExportMetricsServiceRequest>,
        ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
            self.answer(request.metadata())?;
            self.0.lock().unwrap().metrics.push(request.into_inner());
            Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
        }
    }

    /// Starts the fake, taking zstd and gzip; returns it and a collector config pointing
    /// at it.
    pub async fn start(script: &[tonic::Code]) -> (Fake, CollectorConfig) {
        use tonic::codec::CompressionEncoding::{Gzip, Zstd};
        start_accepting(script, &[Zstd, Gzip]).await
    }

    /// Starts the fake, taking only the `accepted` request compressions.
    pub async fn start_accepting(
        script: &[tonic::Code],
        accepted: &[tonic::codec::CompressionEncoding],
    ) -> (Fake, CollectorConfig) {
        let fake = Fake::default();
        fake.0.lock().unwrap().script = script.iter().copied().collect();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut logs = LogsServiceServer::new(fake.clone());
        let mut metrics = MetricsServiceServer::new(fake.clone());
        for encoding in accepted {
            logs = logs.accept_compressed(*encoding);
            metrics = metrics.accept_compressed(*encoding);
        }
        let server = tonic::transport::Server::builder()
            .add_service(logs)
            .add_service(metrics);
        tokio::spawn(
            server.serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
        );
        let yaml = format!(
            "endpoint: \"http://{addr}\"\nretry: {{ initial: 10ms, max: 50ms }}\nbatch: {{ max_lines: 3, max_wait: 20ms }}\n"
        );
        (fake, vigil_core::config::parse(&yaml).unwrap())
    }
}

fn open_checkpoints(dir: &std::path::Path) -> (Arc<Mutex<Checkpoints>>, FileKey, u32) {
    let mut checkpoints = Checkpoints::open(dir).unwrap();
    let key = FileKey { dev: 1, ino: 1 };
    let generation = checkpoints.track(
        key,
        crate::checkpoint::Fingerprint::of(b"x"),
        0,
        std::path::Path::new("/x"),
    );
    (Arc::new(Mutex::new(checkpoints)), key, generation)
}

#[tokio::test]
async fn checkpoints_move_after_acceptance_and_after_a_permanent_refusal_only() {
    use tonic::Code;
    let (fake, config) = fake_collector::start(&[Code::Unavailable, Code::InvalidArgument]).await;
    let dir = tempfile::tempdir().unwrap();
    let (checkpoints, key, generation) = open_checkpoints(dir.path());
    let telemetry = Telemetry::new();
    let (tx, rx) = mpsc::channel(16);
    let shipper = LogShipper::new(
        rx,
        CollectorClient::new(&config).unwrap(),
        &config,
        checkpoints.clone(),
        telemetry.clone(),
    )
    .unwrap();
    let resource = Arc::new(Resource::default());
    let with_generation = |mut r: TailedRecord| {
        r.ack.generation = generation;
        r
    };
    // First batch (3 lines): UNAVAILABLE, retried, then refused for good: dropped, and
    // its checkpoint moves, since it can never be delivered.
    for (i, body) in ["a", "b", "c"].iter().enumerate() {
        tx.send(with_generation(record(
            &resource,
            body,
            10 * (i as u64 + 1),
        )))
        .await
        .unwrap();
    }
    let shipping = tokio::spawn(shipper.run());
    let delivered = || lock(&checkpoints).delivered(key, generation);
    for _ in 0..200 {
        if delivered() == Some(30) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(delivered(), Some(30));
    assert_eq!(fake.0.lock().unwrap().calls, 2);
    assert_eq!(
        telemetry
            .lines_dropped
            .with_label_values(&["refused"])
            .get(),
        3
    );
    // Second batch: accepted.
    tx.send(with_generation(record(&resource, "d", 40)))
        .await
        .unwrap();
    drop(tx);
    shipping.await.unwrap();
    assert_eq!(delivered(), Some(40));
    assert_eq!(telemetry.lines_shipped.get(), 1);
    let state = fake.0.lock().unwrap();
    assert_eq!(state.logs.len(), 1);
    assert_eq!(
        state.logs[0].resource_logs[0].scope_logs[0]
            .log_records
            .len(),
        1
    );
    drop(state);
    // What was acknowledged is on disk.
    let reopened = Checkpoints::open(dir.path()).unwrap();
    let probe = dir.path().join("probe");
    std::fs::write(&probe, b"x").unwrap(); // what the fingerprint was taken of
    let probe = std::fs::File::open(probe).unwrap();
    assert_eq!(reopened.resume_offset(key, &probe), Some(40));
}

#[tokio::test]
async fn queued_metrics_are_shipped_with_retry() {
    use opentelemetry_proto::tonic::metrics::v1::ResourceMetrics;
    use prost::Message;
    let (fake, config) = fake_collector::start(&[tonic::Code::ResourceExhausted]).await;
    let telemetry = Telemetry::new();
    let queue = metrics::MetricsQueue::new(1 << 20, telemetry.clone());
    let shipper = metrics::MetricsShipper::new(
        queue.clone(),
        CollectorClient::new(&config).unwrap(),
        &config,
        telemetry.clone(),
    )
    .unwrap();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let shipping = tokio::spawn(shipper.run(stopped));
    queue.push(vec![ResourceMetrics::default().encode_to_vec(); 4]);
    for _ in 0..200 {
        if telemetry.metrics_shipped.get() == 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(telemetry.metrics_shipped.get(), 4);
    let _ = stop.send(true);
    shipping.await.unwrap();
    let state = fake.0.lock().unwrap();
    let sizes: Vec<usize> = state
        .metrics
        .iter()
        .map(|r| r.resource_metrics.len())
        .collect();
    assert_eq!(sizes.iter().sum::<usize>(), 4);
    assert!(
        sizes.iter().all(|n| *n <= 3),
        "batches of max_lines: {sizes:?}"
    );
    assert_eq!(
        telemetry
            .ship_failures
            .with_label_values(&["metrics", "retryable"])
            .get(),
        1
    );
}

#[test]
fn a_refused_compression_falls_back_to_one_the_receiver_lists() {
    use crate::config::Compression::{Gzip, None, Zstd};
    assert_eq!(Zstd.fallback("gzip"), Some(Gzip));
    assert_eq!(Zstd.fallback("deflate, gzip,identity"), Some(Gzip));
    assert_eq!(Zstd.fallback("identity"), Some(None));
    assert_eq!(Gzip.fallback("identity"), Some(None));
    assert_eq!(Gzip.fallback("zstd"), Some(None));
    // Listed yet refused: the refusal is about something else; nothing to retry.
    assert_eq!(Zstd.fallback("zstd,gzip"), Option::None);
    assert_eq!(None.fallback("gzip"), Option::None);
}

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;

/// Exports one metrics request through a fresh client of `config`; returns the client.
async fn export_one(config: &CollectorConfig) -> (CollectorClient, Result<Accepted, ShipError>) {
    use opentelemetry_proto::tonic::metrics::v1::ResourceMetrics;
    let client = CollectorClient::new(config).unwrap();
    let request = ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics::default()],
    };
    let result = client.export_metrics(Encoded::new(&request)).await;
    (client, result)
}

#[tokio::test]
async fn requests_go_out_with_the_configured_compression() {
    use crate::config::Compression;
    for (name, expected) in [("zstd", "zstd"), ("gzip", "gzip"), ("none", "identity")] {
        let (fake, mut config) = fake_collector::start(&[]).await;
        config.compression = vigil_core::config::parse::<Compression>(name).unwrap();
        let (_, result) = export_one(&config).await;
        result.unwrap();
        let state = fake.0.lock().unwrap();
        assert_eq!(state.encodings, vec![expected.to_string()], "{name}");
        assert_eq!(state.metrics.len(), 1, "{name}");
    }
    // zstd unless told otherwise.
    let (_, config) = fake_collector::start(&[]).await;
    assert_eq!(config.compression, Compression::Zstd);
}

#[tokio::test]
async fn a_receiver_without_zstd_gets_the_same_request_in_gzip_and_keeps_getting_gzip() {
    use tonic::codec::CompressionEncoding::Gzip;
    let (fake, config) = fake_collector::start_accepting(&[], &[Gzip]).await;
    let (client, result) = export_one(&config).await;
    result.unwrap();
    assert_eq!(client.compression(), crate::config::Compression::Gzip);
    let clone = client.clone();
    let request = ExportMetricsServiceRequest::default();
    clone.export_metrics(Encoded::new(&request)).await.unwrap();
    let state = fake.0.lock().unwrap();
    // The refused zstd request never reached the service; both requests arrived in gzip.
    assert_eq!(state.encodings, vec!["gzip", "gzip"]);
    assert_eq!(state.metrics.len(), 2);
}

#[tokio::test]
async fn a_receiver_without_any_compression_gets_the_request_uncompressed() {
    let (fake, config) = fake_collector::start_accepting(&[], &[]).await;
    let (client, result) = export_one(&config).await;
    result.unwrap();
    assert_eq!(client.compression(), crate::config::Compression::None);
    assert_eq!(fake.0.lock().unwrap().encodings, vec!["identity"]);
}

#[tokio::test]
async fn an_unimplemented_service_is_still_a_permanent_refusal() {
    // The fake has no trace service: UNIMPLEMENTED without grpc-accept-encoding is not a
    // compression refusal, and nothing is resent.
    let (fake, config) = fake_collector::start(&[tonic::Code::Unimplemented]).await;
    let (client, result) = export_one(&config).await;
    assert!(
        matches!(result, Err(ShipError::Permanent { .. })),
        "{result:?}"
    );
    assert_eq!(client.compression(), crate::config::Compression::Zstd);
    assert_eq!(fake.0.lock().unwrap().calls, 1);
}
