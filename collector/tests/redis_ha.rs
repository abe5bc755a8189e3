//! The Redis Streams buffer against a real Redis Sentinel setup and a real Redis Cluster,
//! started by each test on free loopback ports in a temp dir and killed when done.

mod support;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::{LIMITS, free_port, read, record};
use tempfile::TempDir;
use vigil_collector::buffer::redis::{RedisBuffer, RedisOptions, Topology};
use vigil_core::Signal;
use vigil_core::buffer::{Bound, Buffer, BufferError, Consumer, Record};

const REDIS_SERVER: &str = "/usr/bin/redis-server";
const REDIS_CLI: &str = "/usr/bin/redis-cli";

/// Child processes, killed on drop.
struct Processes(Vec<Child>);

impl Drop for Processes {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn need(binary: &str) {
    assert!(
        Path::new(binary).exists(),
        "{binary} is missing: `sudo apt-get install redis-server` (it brings redis-cli and \
         sentinel mode), or run `scripts/test`, which installs what the tests need"
    );
}

/// Starts `redis-server` with `args` (after the port) and waits until it listens.
fn start(port: u16, args: &[&str]) -> Child {
    need(REDIS_SERVER);
    let mut child = Command::new(REDIS_SERVER)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start redis-server");
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return child;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("redis-server did not listen on port {port} within 5s");
}

/// A data node: AOF with fsync always, so what Redis acknowledged is on disk.
fn start_node(port: u16, dir: &Path, extra: &[&str]) -> Child {
    std::fs::create_dir_all(dir).unwrap();
    let port_arg = port.to_string();
    let dir_arg = dir.to_str().unwrap();
    let mut args = vec![
        "--port",
        &port_arg,
        "--bind",
        "127.0.0.1",
        "--dir",
        dir_arg,
        "--save",
        "",
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
    ];
    args.extend_from_slice(extra);
    start(port, &args)
}

/// `redis-cli -p <port> <args>`'s output.
fn cli(port: u16, args: &[&str]) -> String {
    need(REDIS_CLI);
    let out = Command::new(REDIS_CLI)
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .expect("run redis-cli");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Polls `check` every 100ms until it holds, failing after `within`.
fn wait_for(what: &str, within: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check() {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A free port whose cluster bus port (+10000) is free too.
fn free_cluster_port() -> u16 {
    loop {
        let port = free_port();
        if port < 55_000 && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

/// A master, its replica and one sentinel watching them as `mymaster`.
struct SentinelSetup {
    processes: Processes,
    master: u16,
    replica: u16,
    sentinel: u16,
    _dir: TempDir,
}

impl SentinelSetup {
    fn start() -> SentinelSetup {
        SentinelSetup::start_with_password(None)
    }

    /// With a password, the data nodes require it (also from each other); the sentinel
    /// knows it, the sentinel itself asks for none.
    fn start_with_password(password: Option<&str>) -> SentinelSetup {
        let dir = TempDir::new().unwrap();
        let (master, replica, sentinel) = (free_port(), free_port(), free_port());
        let auth: Vec<&str> = match password {
            Some(password) => vec!["--requirepass", password, "--masterauth", password],
            None => vec![],
        };
        let mut master_args = vec!["--repl-diskless-sync-delay", "0"];
        master_args.extend(&auth);
        let mut processes = Processes(vec![start_node(
            master,
            &dir.path().join("master"),
            &master_args,
        )]);
        let master_arg = master.to_string();
        let mut replica_args = vec!["--replicaof", "127.0.0.1", &master_arg];
        replica_args.extend(&auth);
        processes.0.push(start_node(
            replica,
            &dir.path().join("replica"),
            &replica_args,
        ));
        let mut info = match password {
            Some(password) => vec!["-a", password, "--no-auth-warning"],
            None => vec![],
        };
        info.extend(["INFO", "replication"]);
        wait_for("replica in sync", Duration::from_secs(5), || {
            cli(replica, &info).contains("master_link_status:up")
        });
        // Started after the replica synced, so its first INFO of the master names the replica.
        let conf = dir.path().join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {sentinel}\nbind 127.0.0.1\ndir {}\n\
                 sentinel monitor mymaster 127.0.0.1 {master} 1\n\
                 sentinel down-after-milliseconds mymaster 500\n\
                 sentinel failover-timeout mymaster 2000\n{}",
                dir.path().display(),
                password
                    .map(|p| format!("sentinel auth-pass mymaster {p}\n"))
                    .unwrap_or_default()
            ),
        )
        .unwrap();
        processes
            .0
            .push(start(sentinel, &[conf.to_str().unwrap(), "--sentinel"]));
        wait_for("sentinel knows the replica", Duration::from_secs(5), || {
            cli(sentinel, &["SENTINEL", "replicas", "mymaster"]).contains(&replica.to_string())
        });
        SentinelSetup {
            processes,
            master,
            replica,
            sentinel,
            _dir: dir,
        }
    }

    fn options(&self, consumer: &str) -> RedisOptions {
        RedisOptions {
            consumer: consumer.into(),
            topology: Topology::Sentinel {
                master: "mymaster".into(),
                sentinels: vec![format!("redis://127.0.0.1:{}", self.sentinel)],
            },
            // Only scheme, credentials and db count: the sentinels give the address.
            ..RedisOptions::new("redis://mymaster")
        }
    }

    /// Waits until the sentinel names the replica as the master.
    fn wait_for_promotion(&self) {
        wait_for("failover to the replica", Duration::from_secs(15), || {
            cli(
                self.sentinel,
                &["SENTINEL", "get-master-addr-by-name", "mymaster"],
            )
            .contains(&self.replica.to_string())
        });
    }
}

/// Pushes until a push succeeds, failing after 10s.
async fn push_until_stored(buffer: &RedisBuffer, record: Record) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match buffer.push(record.clone()).await {
            Ok(()) => return,
            Err(e) => assert!(
                Instant::now() < deadline,
                "no push after the failover within 10s: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Reads (acking) until a record whose payload starts with `byte` arrives, tolerating the
/// errors of a consumer whose master just went away.
async fn read_until(consumer: &mut dyn Consumer, byte: u8) {
    let found = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match consumer.next_batch(LIMITS).await {
                Ok(batch) => {
                    let ids: Vec<_> = batch.iter().map(|d| d.id).collect();
                    consumer.ack(&ids).await.unwrap();
                    if batch.iter().any(|d| d.record.payload[0] == byte) {
                        return;
                    }
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    })
    .await;
    assert!(found.is_ok(), "record {byte} was not read within 5s");
}

#[tokio::test]
async fn sentinel_failover_is_followed_without_a_restart() {
    let mut setup = SentinelSetup::start();
    let (master, replica) = (setup.master, setup.replica);
    let buffer = RedisBuffer::connect(setup.options("s1")).await.unwrap();
    for n in 0..3 {
        buffer.push(record(Signal::Logs, n)).await.unwrap();
    }
    let mut consumer = buffer.consumer(Signal::Logs).await.unwrap();
    let got = read(consumer.as_mut(), 3).await;
    let ids: Vec<_> = got.iter().map(|d| d.id).collect();
    consumer.ack(&ids).await.unwrap();
    assert!(cli(master, &["XLEN", "vigil:logs"]).starts_with('0'));

    // kill -9 the master; the sentinel promotes the replica.
    let _ = setup.processes.0[0].kill();
    let _ = setup.processes.0[0].wait();
    setup.wait_for_promotion();

    // The buffer finds the new master by itself. Writes the old master acked but had not
    // replicated yet would be lost and acked entries could come back (replication is
    // asynchronous; the buffer does not WAIT), so nothing here counts on either.
    push_until_stored(&buffer, record(Signal::Logs, 42)).await;
    assert!(cli(replica, &["ROLE"]).starts_with("master"));
    assert!(!cli(replica, &["XLEN", "vigil:logs"]).starts_with('0'));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(buffer.is_ready(), "ready again once the new master answers");
    // The consumer made before the failover reads from the new master too.
    read_until(consumer.as_mut(), 42).await;
    assert!(buffer.is_ready());
}

#[tokio::test]
async fn a_master_demoted_while_alive_is_left_for_the_new_one() {
    let setup = SentinelSetup::start();
    let buffer = RedisBuffer::connect(setup.options("s1")).await.unwrap();
    buffer.push(record(Signal::Logs, 1)).await.unwrap();
    let mut consumer = buffer.consumer(Signal::Logs).await.unwrap();
    read_until(consumer.as_mut(), 1).await;

    // A switchover: the old master stays up, and until the sentinels demote it (seconds
    // later) it still takes writes, so the connections to it neither break nor fail.
    // Refused (NOGOODSLAVE) until the sentinel has its own fresh INFO of the replica.
    wait_for("SENTINEL FAILOVER accepted", Duration::from_secs(5), || {
        cli(setup.sentinel, &["SENTINEL", "FAILOVER", "mymaster"]).starts_with("OK")
    });
    setup.wait_for_promotion();
    assert!(cli(setup.master, &["ROLE"]).starts_with("master"));
    // Pushes reach the new master soon; the ones before went to the old one.
    let deadline = Instant::now() + Duration::from_secs(5);
    while cli(setup.replica, &["XLEN", "vigil:logs"]).starts_with('0') {
        assert!(
            Instant::now() < deadline,
            "pushes did not reach the new master within 5s"
        );
        let _ = buffer.push(record(Signal::Logs, 2)).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    read_until(consumer.as_mut(), 2).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(buffer.is_ready());
}

#[tokio::test]
async fn with_sentinel_the_url_password_is_for_the_data_nodes() {
    let setup = SentinelSetup::start_with_password(Some("s3cret"));
    let options = |url: &str| RedisOptions {
        url: url.into(),
        ..setup.options("p1")
    };
    match RedisBuffer::connect(options("redis://mymaster")).await {
        Ok(_) => panic!("connected to a master that requires a password without one"),
        Err(e) => assert!(matches!(e, BufferError::Unavailable(_)), "{e}"),
    }
    let buffer = RedisBuffer::connect(options("redis://:s3cret@mymaster"))
        .await
        .unwrap();
    buffer.push(record(Signal::Metrics, 5)).await.unwrap();
    let mut consumer = buffer.consumer(Signal::Metrics).await.unwrap();
    read_until(consumer.as_mut(), 5).await;
}

#[tokio::test]
async fn a_cluster_holds_the_buffer_on_one_slot() {
    let dir = TempDir::new().unwrap();
    let ports = [
        free_cluster_port(),
        free_cluster_port(),
        free_cluster_port(),
    ];
    let mut processes = Processes(Vec::new());
    for port in ports {
        let node = dir.path().join(port.to_string());
        let nodes_conf = node.join("nodes.conf");
        std::fs::create_dir_all(&node).unwrap();
        processes.0.push(start_node(
            port,
            &node,
            &[
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                nodes_conf.to_str().unwrap(),
            ],
        ));
    }
    let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let mut create = vec!["--cluster", "create"];
    create.extend(addrs.iter().map(String::as_str));
    create.extend(["--cluster-replicas", "0", "--cluster-yes"]);
    cli(ports[0], &create);
    wait_for("cluster_state:ok", Duration::from_secs(10), || {
        ports
            .iter()
            .all(|p| cli(*p, &["CLUSTER", "INFO"]).contains("cluster_state:ok"))
    });

    let options = |name: &str| RedisOptions {
        consumer: name.into(),
        topology: Topology::Cluster {
            seeds: addrs[1..].iter().map(|a| format!("redis://{a}")).collect(),
        },
        max_len: 2,
        claim_idle: Duration::from_millis(100),
        max_deliveries: 1,
        ..RedisOptions::new(format!("redis://{}", addrs[0]))
    };
    let buffer = RedisBuffer::connect(options("c1")).await.unwrap();
    assert!(buffer.is_ready());

    // A round trip, and the bound.
    for n in 0..2 {
        buffer.push(record(Signal::Logs, n)).await.unwrap();
    }
    match buffer.push(record(Signal::Logs, 2)).await {
        Err(BufferError::Full { used, bound, .. }) => {
            assert_eq!((used, bound), (2, Bound::Entries));
        }
        other => panic!("expected Full, got {other:?}"),
    }
    let stats = buffer.stats().await;
    assert_eq!(stats.signals[Signal::Logs.index()].pending_records, 2);
    let mut consumer = buffer.consumer(Signal::Logs).await.unwrap();
    let got = read(consumer.as_mut(), 2).await;
    let ids: Vec<_> = got.iter().map(|d| d.id).collect();
    consumer.ack(&ids).await.unwrap();
    let lag = buffer.group_lag().await.unwrap()[Signal::Logs.index()];
    assert_eq!((lag.entries, lag.pending), (0, 0));

    // Delivered once and never acked: the next delivery would exceed max_deliveries, so it
    // goes to the dead-letter stream, in the same MULTI as its XACK.
    buffer.push(record(Signal::Traces, 7)).await.unwrap();
    let mut first = buffer.consumer(Signal::Traces).await.unwrap();
    assert_eq!(read(first.as_mut(), 1).await.len(), 1);
    let other = RedisBuffer::connect(options("c2")).await.unwrap();
    let mut second = other.consumer(Signal::Traces).await.unwrap();
    let _ = tokio::time::timeout(Duration::from_millis(600), second.next_batch(LIMITS)).await;
    let letters = other.dead_letters(10).await.unwrap();
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0].record.payload[0], 7);
    assert_eq!(
        other.group_lag().await.unwrap()[Signal::Traces.index()].pending,
        0
    );

    // Every key of the buffer is in the slot of its hash tag.
    let slot = cli(ports[0], &["CLUSTER", "KEYSLOT", "{vigil}"]);
    for key in ["{vigil}:logs", "{vigil}:traces", "{vigil}:dead_letter"] {
        assert_eq!(cli(ports[0], &["CLUSTER", "KEYSLOT", key]), slot);
    }
    // Only the shard owning that slot answers; the others answer MOVED.
    let holders = ports
        .iter()
        .filter(|p| cli(**p, &["EXISTS", "{vigil}:dead_letter"]).starts_with('1'))
        .count();
    assert_eq!(holders, 1);
}
