//! OTLP data points per second through receiver → buffer → remote-write encoding.
//!
//! `cargo bench -p vigil-collector --bench pipeline [-- --points N] [--histograms]
//! [--buffer disk|redis|nats] [--broker-limit]`
//!
//! Not a test: it asserts nothing about speed. It reports wall-clock throughput and, more
//! stable on shared machines, points per CPU-second of this process (user + system time
//! from /proc), which is the "per core" figure. Target: ≥ 200K points/s/core.
//!
//! With `redis` or `nats` the benchmark starts its own `redis-server` (append-only file,
//! fsync every second, as production Redis runs) or `nats-server -js` (file storage) on a
//! free loopback port and reports the broker's CPU seconds next to Vigil's: on a shared
//! buffer the goal is that the broker, not Vigil, is the bottleneck.
//!
//! `--broker-limit` (redis or nats) also publishes the same request bodies straight to a
//! fresh broker, without Vigil (pipelined XADD, 16 per round trip; JetStream publishes with
//! 16 acks outstanding), and reports the broker's own records/s: the limit Vigil's record
//! rate is compared with. Every run ends with one `bench-result key=value ...` line for
//! `scripts/bench`.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum, metric, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use vigil_collector::buffer::nats::{NatsBuffer, NatsOptions};
use vigil_collector::buffer::redis::{RedisBuffer, RedisOptions};
use vigil_collector::receiver::{Ingest, Transport};
use vigil_collector::telemetry::Telemetry;
use vigil_core::Signal;
use vigil_core::buffer::disk::{DiskBuffer, DiskOptions};
use vigil_core::buffer::{BatchLimits, Buffer};
use vigil_core::otlp::Encoding;
use vigil_core::remote_write::{self, ConvertOptions};

const POINTS_PER_REQUEST: usize = 1000;

fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

/// A node_exporter-like request: counters and gauges with a handful of labels.
/// Classic histograms with ten buckets: each data point becomes 13 series downstream.
fn histogram_points(n: usize, seq: usize, now: u64) -> Vec<HistogramDataPoint> {
    (0..n)
        .map(|i| {
            let counts: Vec<u64> = (0..11).map(|b| ((seq + i + b) % 7) as u64).collect();
            HistogramDataPoint {
                attributes: vec![
                    kv("route", &format!("/api/{}", i % 25)),
                    kv("method", "GET"),
                ],
                time_unix_nano: now,
                count: counts.iter().sum(),
                sum: Some((seq + i) as f64 * 0.25),
                bucket_counts: counts,
                explicit_bounds: vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0],
                ..Default::default()
            }
        })
        .collect()
}

fn request(seq: usize, histograms: bool) -> Bytes {
    let now = 1_700_000_000_000_000_000u64 + seq as u64 * 15_000_000_000;
    let points = |n: usize, metric: usize| -> Vec<NumberDataPoint> {
        (0..n)
            .map(|i| NumberDataPoint {
                attributes: vec![
                    kv("cpu", &i.to_string()),
                    kv("mode", ["user", "system", "idle"][i % 3]),
                ],
                time_unix_nano: now,
                value: Some(number_data_point::Value::AsDouble(
                    (seq * 31 + metric * 7 + i) as f64,
                )),
                ..Default::default()
            })
            .collect()
    };
    let metrics = (0..10)
        .map(|m| Metric {
            name: format!("node.metric{m}"),
            unit: "s".into(),
            data: Some(match m % 2 {
                _ if histograms => metric::Data::Histogram(Histogram {
                    data_points: histogram_points(POINTS_PER_REQUEST / 10, seq, now),
                    aggregation_temporality: AggregationTemporality::Cumulative as i32,
                }),
                0 => metric::Data::Sum(Sum {
                    data_points: points(POINTS_PER_REQUEST / 10, m),
                    aggregation_temporality: AggregationTemporality::Cumulative as i32,
                    is_monotonic: true,
                }),
                _ => metric::Data::Gauge(Gauge {
                    data_points: points(POINTS_PER_REQUEST / 10, m),
                }),
            }),
            ..Default::default()
        })
        .collect();
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![
                    kv("service.name", "node"),
                    kv("service.instance.id", &format!("host-{}", seq % 8)),
                ],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
    .into()
}

/// CPU seconds (user + system) of process `pid` ("self" for this one).
fn process_cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after_name = stat.rsplit(')').next().unwrap_or("");
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the line; 12 and 13 after "pid (comm)".
    (ticks(11) + ticks(12)) / 100.0
}

/// `(VmRSS, VmHWM)` of this process in bytes.
fn rss_bytes() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (kib("VmRSS:") * 1024, kib("VmHWM:") * 1024)
}

/// A broker process the benchmark started, killed when dropped.
struct Broker {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Broker {
    fn start(program: &str, args: impl FnOnce(u16, &str) -> Vec<String>) -> (Broker, u16) {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let dir = tempfile::tempdir().expect("temp dir");
        let child = Command::new(program)
            .args(args(port, &dir.path().display().to_string()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {program} ({e}); install it with scripts/install-test-deps")
            });
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "{program} did not listen"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        (Broker { child, _dir: dir }, port)
    }

    fn cpu_seconds(&self) -> f64 {
        process_cpu_seconds(&self.child.id().to_string())
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `redis-server` as production runs it: append-only file, fsync every second.
fn start_redis() -> (Broker, u16) {
    Broker::start("redis-server", |port, dir| {
        [
            "--bind",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--dir",
            dir,
        ]
        .map(String::from)
        .to_vec()
    })
}

/// `nats-server` with JetStream on file storage.
fn start_nats() -> (Broker, u16) {
    Broker::start("nats-server", |port, dir| {
        [
            "-a",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-js",
            "-sd",
            dir,
        ]
        .map(String::from)
        .to_vec()
    })
}

/// Records per round trip (or acks outstanding) when publishing without Vigil.
const LIMIT_IN_FLIGHT: usize = 16;

/// The broker's own limit: the same bodies published raw to a fresh broker, without Vigil.
/// Returns `(wall seconds, broker cpu seconds)`.
async fn broker_limit(kind: &str, requests: &[Bytes]) -> (f64, f64) {
    match kind {
        "redis" => {
            let (broker, port) = start_redis();
            let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).expect("url");
            let mut conn = client
                .get_multiplexed_async_connection()
                .await
                .expect("redis connection");
            let (wall, cpu) = (Instant::now(), broker.cpu_seconds());
            for chunk in requests.chunks(LIMIT_IN_FLIGHT) {
                let mut pipe = redis::pipe();
                for body in chunk {
                    pipe.cmd("XADD")
                        .arg("vigil-limit")
                        .arg("*")
                        .arg("record")
                        .arg(body.as_ref())
                        .ignore();
                }
                pipe.query_async::<()>(&mut conn).await.expect("XADD");
            }
            (wall.elapsed().as_secs_f64(), broker.cpu_seconds() - cpu)
        }
        "nats" => {
            let (broker, port) = start_nats();
            let client = async_nats::connect(format!("nats://127.0.0.1:{port}"))
                .await
                .expect("nats connection");
            let js = async_nats::jetstream::new(client);
            js.create_stream(async_nats::jetstream::stream::Config {
                name: "vigil-limit".into(),
                subjects: vec!["vigil.limit".into()],
                storage: async_nats::jetstream::stream::StorageType::File,
                ..Default::default()
            })
            .await
            .expect("create stream");
            let (wall, cpu) = (Instant::now(), broker.cpu_seconds());
            for chunk in requests.chunks(LIMIT_IN_FLIGHT) {
                let mut acks = Vec::with_capacity(chunk.len());
                for body in chunk {
                    acks.push(
                        js.publish("vigil.limit", body.clone())
                            .await
                            .expect("publish"),
                    );
                }
                for ack in acks {
                    ack.await.expect("publish ack");
                }
            }
            (wall.elapsed().as_secs_f64(), broker.cpu_seconds() - cpu)
        }
        other => panic!("--broker-limit needs --buffer redis or nats, not {other}"),
    }
}

/// The buffer under test, with the broker behind it when there is one.
async fn open_buffer(kind: &str, dir: &std::path::Path) -> (Arc<dyn Buffer>, Option<Broker>) {
    match kind {
        "disk" => {
            let buffer = DiskBuffer::open(DiskOptions::new(dir, 4 << 30))
                .await
                .expect("disk buffer");
            (Arc::new(buffer), None)
        }
        "redis" => {
            let (broker, port) = start_redis();
            let options = RedisOptions {
                max_len: 10_000_000,
                ..RedisOptions::new(format!("redis://127.0.0.1:{port}"))
            };
            (
                Arc::new(RedisBuffer::connect(options).await.expect("redis buffer")),
                Some(broker),
            )
        }
        "nats" => {
            let (broker, port) = start_nats();
            let options = NatsOptions {
                max_bytes: 4 << 30,
                ..NatsOptions::new(format!("nats://127.0.0.1:{port}"))
            };
            (
                Arc::new(NatsBuffer::open(options).await.expect("nats buffer")),
                Some(broker),
            )
        }
        other => panic!("--buffer {other}: expected disk, redis or nats"),
    }
}

fn main() {
    let mut points_total = 200_000usize;
    let mut histograms = false;
    let mut buffer_kind = String::from("disk");
    let mut with_broker_limit = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--histograms" {
            histograms = true;
        } else if a == "--broker-limit" {
            with_broker_limit = true;
        } else if a == "--buffer" {
            buffer_kind = args.next().unwrap_or(buffer_kind);
        } else if a == "--points" {
            points_total = args
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or(points_total);
        }
    }
    let requests: Vec<Bytes> = (0..points_total / POINTS_PER_REQUEST)
        .map(|seq| request(seq, histograms))
        .collect();
    let points = (requests.len() * POINTS_PER_REQUEST) as f64;
    let body_bytes: usize = requests.iter().map(Bytes::len).sum();

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let limit_requests = with_broker_limit.then(|| requests.clone());
    runtime.block_on(async move {
        let dir = tempfile::tempdir().expect("temp dir");
        let (buffer, broker) = open_buffer(&buffer_kind, dir.path()).await;
        let broker_cpu = || broker.as_ref().map_or(0.0, Broker::cpu_seconds);
        let broker_start = broker_cpu();
        let ingest = Arc::new(Ingest::new(buffer.clone(), Telemetry::new(), [true; 3], None));

        // Receive: decode, validate, count and durably store, 16 requests in flight so
        // concurrent pushes share fsyncs as they do under load.
        let (wall, cpu) = (Instant::now(), vigil_core::testing::cpu_seconds());
        let mut in_flight: tokio::task::JoinSet<Result<_, vigil_collector::receiver::Refusal>> =
            tokio::task::JoinSet::new();
        for body in requests {
            while in_flight.len() >= 16 {
                in_flight.join_next().await.expect("task").expect("join").expect("accepted");
            }
            let ingest = ingest.clone();
            in_flight.spawn(async move {
                ingest.accept_body(Signal::Metrics, Encoding::Protobuf, body, Default::default(), Transport::Http).await
            });
        }
        while let Some(r) = in_flight.join_next().await {
            r.expect("join").expect("accepted");
        }
        let receive = (wall.elapsed().as_secs_f64(), vigil_core::testing::cpu_seconds() - cpu);

        // Export side: read back, convert to remote write, snappy-encode, ack.
        let (wall, cpu) = (Instant::now(), vigil_core::testing::cpu_seconds());
        let mut consumer = buffer.consumer(Signal::Metrics).await.expect("consumer");
        let mut seen = 0.0;
        let mut encoded = 0usize;
        while seen < points {
            let batch = consumer
                .next_batch(BatchLimits { max_records: 64, max_bytes: 8 << 20 })
                .await
                .expect("batch");
            let payloads = batch.iter().map(|d| &d.record.payload);
            let converted = remote_write::convert_payloads(payloads, &ConvertOptions::default()).expect("decode");
            encoded += converted.body().expect("encode").len();
            seen += batch.iter().map(|d| f64::from(d.record.items)).sum::<f64>();
            let ids: Vec<_> = batch.iter().map(|d| d.id).collect();
            consumer.ack(&ids).await.expect("ack");
        }
        let export = (wall.elapsed().as_secs_f64(), vigil_core::testing::cpu_seconds() - cpu);

        let total = (receive.0 + export.0, receive.1 + export.1);
        let kind = if histograms { "histogram (10 buckets)" } else { "counter and gauge" };
        let buffer_note = match buffer_kind.as_str() {
            "disk" => "disk buffer fsync=always",
            "redis" => "redis buffer (redis-server, AOF fsync every second)",
            _ => "nats buffer (nats-server -js, file storage)",
        };
        println!("pipeline benchmark: {points} {kind} data points in {} requests ({:.1} MiB of OTLP), {buffer_note}", points / POINTS_PER_REQUEST as f64, body_bytes as f64 / 1048576.0);
        println!("{:<34} {:>12} {:>14} {:>16}", "stage", "wall s", "cpu s", "points/s/core");
        for (name, (w, c)) in [("receive → buffer", receive), ("buffer → remote write (encoded)", export), ("end to end", total)] {
            println!("{name:<34} {w:>12.3} {c:>14.3} {:>16.0}", points / c.max(1e-9));
        }
        println!("remote write bytes (snappy): {:.1} MiB; target ≥ 200000 points/s/core", encoded as f64 / 1048576.0);
        println!("end to end: {:.1} MiB/s of OTLP, {:.0} requests/s", body_bytes as f64 / 1048576.0 / total.0, points / POINTS_PER_REQUEST as f64 / total.0);
        let broker_used = broker_cpu() - broker_start;
        if broker.is_some() {
            println!("broker cpu s: {broker_used:.3} (vigil {:.3}); the {} spent more CPU", total.1, if broker_used > total.1 { "broker" } else { "collector" });
        }
        drop(broker);
        let (rss, hwm) = rss_bytes();
        let records = points / POINTS_PER_REQUEST as f64;
        let mut result = format!(
            "bench-result points={points} records={records} otlp_bytes={body_bytes} \
             receive_wall={:.4} receive_cpu={:.4} export_wall={:.4} export_cpu={:.4} \
             total_wall={:.4} total_cpu={:.4} broker_cpu={broker_used:.4} rss={rss} hwm={hwm}",
            receive.0, receive.1, export.0, export.1, total.0, total.1
        );
        if let Some(requests) = limit_requests {
            let (wall, cpu) = broker_limit(&buffer_kind, &requests).await;
            println!(
                "broker limit, same {records} records published raw ({LIMIT_IN_FLIGHT} in flight): {:.0} records/s, broker cpu {cpu:.3} s",
                records / wall
            );
            result.push_str(&format!(" limit_wall={wall:.4} limit_broker_cpu={cpu:.4}"));
        }
        println!("{result}");
    });
}
