//! Fault injection (issue 8, "prove nothing lost"): a load generator writes uniquely numbered
//! records — log lines through the agent binary, OTLP metrics and spans straight to the
//! collector binary, each retried until acknowledged as an SDK would — while a scheduler
//! injects faults: kill -9 of the agent, of the collector (with data flowing and with a
//! backlog), of the broker (Redis with an fsynced AOF, JetStream on disk), backends that
//! answer 503 for a while, backends that hang, and a disk buffer filled to its size cap.
//! Then everything is read back from VictoriaMetrics (raw samples via /api/v1/export; this
//! VictoriaMetrics keeps duplicate samples with deduplication off, so duplicates show), Loki
//! and Tempo, and lost, duplicated and reordered records are counted per signal.
//!
//! Pass: nothing acknowledged is lost; duplicates at most the batches that can be in flight
//! at each kill. `VIGIL_FAULT_RECORDS` (all signals together) and `VIGIL_FAULT_OUTAGE_SECS`
//! size a run; `VIGIL_FAULT_REPORT` names a file the markdown table is appended to
//! (`scripts/faults` runs the full-size suite).

use std::path::PathBuf;
use std::time::Duration;

use tokio::time::Instant;
use vigil_e2e::collector::CollectorProcess;
use vigil_e2e::fakes::{FakeLoki, FakeTempo};
use vigil_e2e::faults::{self, FaultProxy, Faults, Mode, Pace, Tally};
use vigil_e2e::process::VigilProcess;
use vigil_e2e::servers::{Server, VictoriaMetrics};
use vigil_e2e::{agent, free_port};

/// Records per OTLP request of the generator.
const PER_REQUEST: u64 = 100;
/// The agent's batch (lines per request to the collector).
const AGENT_BATCH: u64 = 500;
/// The exporters' batch, in buffered records (one record is one received request).
const EXPORT_BATCH: u64 = 8;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Disk,
    Redis,
    Nats,
}

/// What happens to the pipeline while the load flows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Schedule {
    /// Kills, broker restarts, outages, hangs, a full buffer: see [`Stack::inject`].
    Faults,
    /// Rolling restarts with SIGTERM, as Kubernetes does them: the agent, the collector,
    /// then both at once. A graceful stop drains, so nothing may be lost or repeated.
    Sigterm,
}

struct Params {
    /// Records of all three signals together.
    records: u64,
    outage: Duration,
}

impl Params {
    fn from_env() -> Params {
        let var = |name: &str, default: u64| {
            std::env::var(name)
                .ok()
                .map(|v| {
                    v.parse()
                        .unwrap_or_else(|_| panic!("{name}={v} is not a number"))
                })
                .unwrap_or(default)
        };
        Params {
            records: var("VIGIL_FAULT_RECORDS", 99_000),
            outage: Duration::from_secs(var("VIGIL_FAULT_OUTAGE_SECS", 10)),
        }
    }
}

/// The pipeline under test, on fixed loopback ports so that restarts find each other.
struct Stack {
    kind: Kind,
    dir: tempfile::TempDir,
    faults: Faults,
    grpc_port: u16,
    http_port: u16,
    admin_port: u16,
    agent_admin_port: u16,
    collector: Option<CollectorProcess>,
    agent: Option<VigilProcess>,
    broker: Option<Server>,
    /// Kills so far, of the agent and of the collector or broker.
    agent_kills: u64,
    server_kills: u64,
    /// The faults injected, in order, for the report.
    log: Vec<String>,
}

impl Stack {
    fn collector_config(&self) -> PathBuf {
        self.dir.path().join("collector.yaml")
    }

    fn agent_config(&self) -> PathBuf {
        self.dir.path().join("agent.yaml")
    }

    fn logs_dir(&self) -> PathBuf {
        self.dir.path().join("logs")
    }

    async fn start_collector(&mut self) {
        self.collector = Some(
            CollectorProcess::start(&self.collector_config(), self.admin_port, self.http_port)
                .await,
        );
    }

    async fn start_agent(&mut self) {
        self.agent = Some(agent::start_process(&self.agent_config(), self.agent_admin_port).await);
    }

    async fn kill_agent(&mut self) {
        self.log.push("kill -9 agent".into());
        self.agent.take().expect("agent running").kill_9();
        self.agent_kills += 1;
        tokio::time::sleep(Duration::from_secs(1)).await;
        self.start_agent().await;
    }

    async fn kill_collector(&mut self, note: &str) {
        self.log.push(format!("kill -9 collector{note}"));
        self.collector.take().expect("collector running").kill_9();
        self.server_kills += 1;
        tokio::time::sleep(Duration::from_secs(1)).await;
        self.start_collector().await;
    }

    async fn kill_broker(&mut self) {
        let name = match self.kind {
            Kind::Redis => "redis-server",
            _ => "nats-server",
        };
        self.log.push(format!("kill -9 {name}"));
        let broker = self.broker.as_mut().expect("broker running");
        broker.kill_9();
        self.server_kills += 1;
        tokio::time::sleep(Duration::from_secs(2)).await;
        broker.restart().await;
    }

    /// SIGTERM to the agent and/or the collector (both at once when both), then started
    /// again.
    async fn terminate(&mut self, agent: bool, collector: bool) {
        let mut stopping = Vec::new();
        if agent {
            self.log.push("SIGTERM agent".into());
            let process = self.agent.take().expect("agent running");
            stopping.push(tokio::task::spawn_blocking(move || process.terminate()));
        }
        if collector {
            self.log.push("SIGTERM collector".into());
            let process = self.collector.take().expect("collector running");
            stopping.push(tokio::task::spawn_blocking(move || process.terminate()));
        }
        for stopped in stopping {
            let status = stopped.await.unwrap();
            assert!(status.success(), "a SIGTERM stop exits 0: {status:?}");
        }
        if collector {
            self.start_collector().await;
        }
        if agent {
            self.start_agent().await;
        }
    }

    /// Rolling restarts while the load flows.
    async fn roll(&mut self) {
        let flow = Duration::from_secs(2);
        tokio::time::sleep(flow).await;
        self.terminate(true, false).await;
        tokio::time::sleep(flow).await;
        self.terminate(false, true).await;
        tokio::time::sleep(flow).await;
        self.terminate(true, true).await;
        tokio::time::sleep(flow).await;
    }

    /// The backends in `mode` for `length`, then passing again.
    async fn outage(&mut self, mode: Mode, length: Duration) {
        self.log.push(outage_name(mode, length));
        self.faults.set(mode);
        tokio::time::sleep(length).await;
        self.faults.set(Mode::Pass);
    }

    /// Backends answer 503 until the size-capped disk buffer refuses records as full, a
    /// moment longer, then recover.
    async fn fill_the_buffer(&mut self, limit: Duration) {
        self.log.push("disk buffer full".into());
        self.faults.set(Mode::Unavailable);
        let admin = format!("127.0.0.1:{}", self.admin_port);
        vigil_e2e::eventually(limit, "the buffer to fill and refuse records", || {
            let admin = admin.clone();
            async move {
                let refused = vigil_e2e::metric_sum(
                    admin,
                    "vigil_collector_refused_requests_total",
                    &["reason=\"buffer_full\""],
                )
                .await;
                (refused > 0.0).then_some(())
            }
        })
        .await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        self.faults.set(Mode::Pass);
    }

    /// The fault schedule; returns when the last fault has been repaired.
    async fn inject(&mut self, outage: Duration) {
        let flow = Duration::from_secs(2);
        tokio::time::sleep(flow).await;
        self.kill_agent().await;
        tokio::time::sleep(flow).await;
        self.kill_collector("").await;
        tokio::time::sleep(flow).await;
        if self.kind != Kind::Disk {
            self.kill_broker().await;
            tokio::time::sleep(flow).await;
        }
        // A collector killed with a backlog it could not export yet.
        self.log.push(outage_name(Mode::Unavailable, outage));
        self.faults.set(Mode::Unavailable);
        tokio::time::sleep(outage / 2).await;
        self.kill_collector(" with a backlog").await;
        tokio::time::sleep(outage / 2).await;
        self.faults.set(Mode::Pass);
        tokio::time::sleep(flow).await;
        self.outage(Mode::Hang, outage).await;
        if self.kind == Kind::Disk {
            tokio::time::sleep(flow).await;
            self.fill_the_buffer(outage * 6).await;
        }
    }

    /// How long the schedule takes, roughly, so the load spans it.
    fn schedule_length(&self, schedule: Schedule, outage: Duration) -> Duration {
        if schedule == Schedule::Sigterm {
            return Duration::from_secs(4 * 2 + 3 * 3);
        }
        let mut secs = 2 + 4 + 2 + 4 + 2 + 2 + 2;
        if self.kind != Kind::Disk {
            secs += 5 + 2;
        }
        if self.kind == Kind::Disk {
            secs += 2 + 4;
        }
        Duration::from_secs(secs) + outage * 3
    }
}

fn outage_name(mode: Mode, length: Duration) -> String {
    let what = match mode {
        Mode::Pass => "pass",
        Mode::Unavailable => "answer 503",
        Mode::Hang => "hang",
    };
    format!("backends {what} {}s", length.as_secs())
}

fn buffer_yaml(kind: Kind, dir: &std::path::Path, broker_port: u16) -> String {
    match kind {
        // Small, so that an outage fills it and the receivers refuse (429 /
        // RESOURCE_EXHAUSTED): the "full disk" of the issue, as a size cap.
        Kind::Disk => format!(
            "buffer:\n  kind: disk\n  disk: {{ path: \"{}\", max_bytes: 1MiB }}\n",
            dir.join("buffer").display()
        ),
        Kind::Redis => format!(
            "buffer:\n  kind: redis\n  redis: {{ url: \"redis://127.0.0.1:{broker_port}\", claim_idle: 3s }}\n"
        ),
        Kind::Nats => format!(
            "buffer:\n  kind: nats\n  nats: {{ url: \"nats://127.0.0.1:{broker_port}\", ack_wait: 3s, max_bytes: 256MiB }}\n"
        ),
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

async fn run(kind: Kind, schedule: Schedule) {
    let params = Params::from_env();
    let faults = Faults::default();
    let vm = VictoriaMetrics::start().await;
    let loki = FakeLoki::start().await;
    let tempo = FakeTempo::start_http().await;
    let vm_proxy = FaultProxy::start(
        vm.base(),
        faults.clone(),
        Some(faults::remote_write_seqs as faults::Observer),
    )
    .await;
    let loki_proxy = FaultProxy::start(format!("http://{}", loki.addr), faults.clone(), None).await;
    let tempo_proxy = FaultProxy::start(tempo.endpoint(), faults.clone(), None).await;
    let broker = match kind {
        Kind::Disk => None,
        Kind::Redis => Some(Server::redis_aof().await),
        Kind::Nats => Some(Server::nats().await),
    };

    let mut stack = Stack {
        kind,
        dir: tempfile::tempdir().unwrap(),
        faults: faults.clone(),
        grpc_port: free_port(),
        http_port: free_port(),
        admin_port: free_port(),
        agent_admin_port: free_port(),
        collector: None,
        agent: None,
        broker: None,
        agent_kills: 0,
        server_kills: 0,
        log: Vec::new(),
    };
    let exporter = |endpoint: String, extra: &str| {
        format!(
            "{{ endpoint: \"{endpoint}\",{extra} timeout: 5s, batch: {{ linger: 20ms, max_records: {EXPORT_BATCH} }}, retry: {{ initial: 100ms, max: 1s }} }}"
        )
    };
    std::fs::write(
        stack.collector_config(),
        format!(
            "receivers:\n  otlp:\n    grpc: {{ listen: \"127.0.0.1:{}\" }}\n    http: {{ listen: \"127.0.0.1:{}\" }}\nadmin: {{ listen: \"127.0.0.1:{}\" }}\n{}exporters:\n  victoriametrics: {}\n  loki: {}\n  tempo: {}\n",
            stack.grpc_port,
            stack.http_port,
            stack.admin_port,
            buffer_yaml(kind, stack.dir.path(), broker.as_ref().map_or(0, |b| b.port)),
            exporter(format!("{}/api/v1/write", vm_proxy.base()), ""),
            exporter(format!("{}/loki/api/v1/push", loki_proxy.base()), ""),
            exporter(tempo_proxy.base(), " protocol: http,"),
        ),
    )
    .unwrap();
    std::fs::create_dir_all(stack.logs_dir()).unwrap();
    std::fs::write(
        stack.agent_config(),
        agent::yaml_with_admin(
            &format!("127.0.0.1:{}", stack.grpc_port),
            &stack.dir.path().join("state"),
            &format!("127.0.0.1:{}", stack.agent_admin_port),
            &format!(
                "  - include: [\"{}/*.log\"]\n    format: raw\n    start_at: beginning\n    scan_interval: 100ms\n",
                stack.logs_dir().display()
            ),
        )
        .replace("max_lines: 500", &format!("max_lines: {AGENT_BATCH}")),
    )
    .unwrap();
    stack.broker = broker;
    stack.start_collector().await;
    stack.start_agent().await;

    // The load: a third of the records per signal, spread over the fault schedule.
    let per_signal = params.records / 3;
    // Half as long again as the schedule should take, so that the load outlasts it on a
    // slow machine too (the full buffer needs records coming in).
    let pace = Pace {
        start: Instant::now(),
        over: stack.schedule_length(schedule, params.outage).mul_f64(1.5),
        total: per_signal,
    };
    let give_up = params.outage * 4 + Duration::from_secs(120);
    let base_ms = (now_ms() / 1000 - 3 * 3600) * 1000;
    let base = format!("http://127.0.0.1:{}", stack.http_port);
    let metrics = tokio::spawn(faults::send_until_acked(
        format!("{base}/v1/metrics"),
        per_signal,
        PER_REQUEST,
        pace,
        give_up,
        move |r| faults::metrics_request(r, base_ms),
    ));
    let spans = tokio::spawn(faults::send_until_acked(
        format!("{base}/v1/traces"),
        per_signal,
        PER_REQUEST,
        pace,
        give_up,
        move |r| faults::spans_request(r, base_ms),
    ));
    let log_path = stack.logs_dir().join("app.log");
    let lines =
        tokio::task::spawn_blocking(move || faults::write_log_lines(log_path, per_signal, pace));

    match schedule {
        Schedule::Faults => stack.inject(params.outage).await,
        Schedule::Sigterm => stack.roll().await,
    }
    let metrics = metrics.await.unwrap();
    let spans = spans.await.unwrap();
    lines.await.unwrap();
    eprintln!(
        "{kind:?}: sender refusals (retried): metrics {:?}, traces {:?}",
        metrics.refusals, spans.refusals
    );
    // Every fault was met: the generator saw the collector gone, every backend answered
    // 503 and hung. (Rolling restarts inject no fault to meet.)
    if schedule == Schedule::Faults {
        for (what, sent) in [("metrics", &metrics), ("spans", &spans)] {
            assert!(
                sent.refusals.contains_key("connection"),
                "{what}: the collector kills went unnoticed: {:?}",
                sent.refusals
            );
        }
        for (backend, proxy) in [
            ("vm", &vm_proxy),
            ("loki", &loki_proxy),
            ("tempo", &tempo_proxy),
        ] {
            let (unavailable, hung) = proxy.faulted();
            assert!(
                unavailable > 0 && hung > 0,
                "{backend}: {unavailable} requests answered 503, {hung} hung"
            );
        }
    }
    assert_eq!(metrics.acked, per_signal, "metrics never acknowledged");
    assert_eq!(spans.acked, per_signal, "spans never acknowledged");

    // Read everything back once all of it arrived, or the drain time is up.
    let drain = params.outage * 2 + Duration::from_secs(60 + per_signal / 2_000);
    let metric_values = || async {
        let series = vm
            .export(&format!("{{__name__=\"{}\"}}", faults::METRIC))
            .await;
        series
            .iter()
            .flat_map(|s| s["values"].as_array().cloned().unwrap_or_default())
            .filter_map(|v| v.as_f64())
            .map(|v| v as u64)
            .collect::<Vec<u64>>()
    };
    let log_seqs = || -> Vec<u64> {
        loki.lines()
            .iter()
            .map(|l| faults::log_seq(l).unwrap_or(u64::MAX))
            .collect()
    };
    let span_seqs = || -> Vec<u64> {
        tempo
            .exports()
            .iter()
            .flat_map(|e| &e.request.resource_spans)
            .flat_map(|rs| &rs.scope_spans)
            .flat_map(|ss| &ss.spans)
            .map(|s| faults::span_seq(s).unwrap_or(u64::MAX))
            .collect()
    };
    let distinct = |v: &[u64]| v.iter().collect::<std::collections::HashSet<_>>().len() as u64;
    let deadline = Instant::now() + drain;
    while Instant::now() < deadline {
        // The cheap checks first; exporting every sample from VictoriaMetrics is not.
        let done = distinct(&log_seqs()) >= per_signal
            && distinct(&span_seqs()) >= per_signal
            && distinct(&metric_values().await) >= per_signal;
        if done {
            break;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    // A moment more, for a late duplicate.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let run_name = format!("{kind:?} | {}", stack.log.join(", "));
    let tallies = [
        Tally::count(
            "metrics",
            per_signal,
            &metric_values().await,
            Some(&vm_proxy.arrivals()),
        ),
        Tally::count("logs", per_signal, &log_seqs(), None),
        Tally::count("traces", per_signal, &span_seqs(), None),
    ];
    let rows: Vec<(String, Tally)> = tallies
        .iter()
        .map(|t| (run_name.clone(), t.clone()))
        .collect();
    let table = faults::table(&rows);
    eprintln!("{table}");
    if let Ok(path) = std::env::var("VIGIL_FAULT_REPORT") {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("open the report");
        let _ = writeln!(
            f,
            "{kind:?}: {} records, outages {}s\n\n{table}",
            params.records,
            params.outage.as_secs()
        );
    }

    for t in &tallies {
        assert_eq!(t.unexpected, 0, "{}: records never sent arrived", t.signal);
        assert_eq!(
            t.lost, 0,
            "{}: acknowledged records lost\n{table}",
            t.signal
        );
        // A kill can repeat what was in flight: the exporter's batch, and the request the
        // sender (agent or generator) had not seen acknowledged. Nothing else may repeat.
        let per_record = match t.signal {
            "logs" => AGENT_BATCH,
            _ => PER_REQUEST,
        };
        let kills = stack.server_kills
            + if t.signal == "logs" {
                stack.agent_kills
            } else {
                0
            };
        let bound = kills * (EXPORT_BATCH + 2) * per_record;
        assert!(
            t.duplicated <= bound,
            "{}: {} duplicates, more than the {bound} that {kills} kills can repeat\n{table}",
            t.signal,
            t.duplicated
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_acknowledged_is_lost_under_faults_with_the_disk_buffer() {
    run(Kind::Disk, Schedule::Faults).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_acknowledged_is_lost_under_faults_with_redis_streams() {
    run(Kind::Redis, Schedule::Faults).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_acknowledged_is_lost_under_faults_with_nats_jetstream() {
    run(Kind::Nats, Schedule::Faults).await;
}

/// Restarts after SIGTERM lose and repeat nothing: no kill, so the duplicate bound is 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restarts_with_sigterm_lose_and_repeat_nothing() {
    run(Kind::Disk, Schedule::Sigterm).await;
}
