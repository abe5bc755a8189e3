//! How the buffer reaches Redis: one server, the master Redis Sentinel names, or a Redis
//! Cluster (<https://redis.io/docs/latest/operate/oss_and_stack/management/sentinel/>,
//! <https://redis.io/docs/latest/operate/oss_and_stack/management/scaling/>).
//!
//! Choices:
//! - **Sentinel.** The master's address comes from the sentinels at start and again every
//!   second (see [`Endpoint::follow_master`]), which costs a short connection to the
//!   master to check its ROLE. A connection manager alone would keep reconnecting to the
//!   old address, or keep writing to an old master that is still alive.
//! - **Cluster.** The crate's cluster connection follows MOVED/ASK and failovers itself.
//!   Its pipelines must stay within one slot (and a MULTI on one node), so the buffer's
//!   keys share a hash tag.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{Sentinel, SentinelNodeConnectionInfo};
use redis::{
    Cmd, ConnectionAddr, IntoConnectionInfo, Pipeline, RedisFuture, RedisResult, TlsMode, Value,
};
use tracing::{info, warn};

/// Where the buffer's data nodes are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Topology {
    /// One Redis at the options' `url`.
    #[default]
    Single,
    /// The master the sentinels know as `master`. The options' `url` gives only TLS
    /// (`rediss://`), user, password and db for the data nodes; its host is not used.
    Sentinel {
        master: String,
        /// `redis://[user:password@]host:port` of each sentinel (`rediss://` for TLS).
        sentinels: Vec<String>,
    },
    /// A Redis Cluster, found through the options' `url` and these further seed nodes
    /// (same scheme and credentials).
    Cluster { seeds: Vec<String> },
}

/// Wherever the buffer's keys live: the connection shared by pushes, acks and stats, and
/// new connections for consumers.
pub(super) struct Endpoint {
    nodes: Nodes,
    /// Shared, multiplexed. Replaced when Sentinel names a new master.
    shared: RwLock<Connection>,
    /// Counts replacements of `shared`; consumers reconnect when theirs is older.
    generation: AtomicU64,
    /// Sentinel: the last lookup failed (logged once, not every second).
    lookup_failing: AtomicBool,
}

enum Nodes {
    Single(redis::Client),
    Sentinel {
        sentinel: tokio::sync::Mutex<Sentinel>,
        master: String,
        node: SentinelNodeConnectionInfo,
        /// The master found last.
        current: Mutex<redis::Client>,
    },
    Cluster(ClusterClient),
}

impl Endpoint {
    /// Parses the URLs, finds the master (Sentinel) and opens the shared connection.
    pub(super) async fn open(url: &str, topology: &Topology) -> RedisResult<Endpoint> {
        let nodes = Nodes::open(url, topology).await?;
        let shared = nodes.connect(None).await?;
        Ok(Endpoint {
            nodes,
            shared: RwLock::new(shared),
            generation: AtomicU64::new(0),
            lookup_failing: AtomicBool::new(false),
        })
    }

    /// The shared connection (a cheap clone).
    pub(super) fn shared(&self) -> Connection {
        self.shared
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Changes whenever the shared connection was replaced for a new master.
    pub(super) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    /// A new connection; `response_timeout` for one that blocks (XREADGROUP ... BLOCK).
    pub(super) async fn connect(
        &self,
        response_timeout: Option<Duration>,
    ) -> RedisResult<Connection> {
        self.nodes.connect(response_timeout).await
    }

    /// Sentinel only: asks the sentinels for the master and, when it moved, replaces the
    /// shared connection. Called every second, so that the buffer also leaves a master
    /// that was demoted while alive: its connections do not break, and the sentinels
    /// turn it into a replica only some seconds after the promotion (until then it still
    /// takes writes, which it drops when it resyncs).
    pub(super) async fn follow_master(&self) {
        if !matches!(self.nodes, Nodes::Sentinel { .. }) {
            return;
        }
        let moved_to = match self.nodes.locate_master().await {
            Ok(moved_to) => {
                if self.lookup_failing.swap(false, Ordering::Relaxed) {
                    info!("redis sentinel: the sentinels name a master again");
                }
                moved_to
            }
            Err(e) => {
                if !self.lookup_failing.swap(true, Ordering::Relaxed) {
                    warn!(error = %e, "redis sentinel: no master found; asking each second");
                }
                return;
            }
        };
        let Some(client) = moved_to else { return };
        let master = client.get_connection_info().addr().to_string();
        // Adopted only once connected, so a failed attempt is retried on the next call.
        let conn = match node_connection(client.clone(), None, true).await {
            Ok(conn) => conn,
            Err(e) => {
                warn!(%master, error = %e, "redis sentinel: cannot connect to the new master");
                return;
            }
        };
        self.nodes.adopt_master(client);
        *self.shared.write().unwrap_or_else(|e| e.into_inner()) = conn;
        self.generation.fetch_add(1, Ordering::Relaxed);
        info!(%master, "redis sentinel: the master moved; reconnected");
    }
}

impl Nodes {
    async fn open(url: &str, topology: &Topology) -> RedisResult<Nodes> {
        match topology {
            Topology::Single => Ok(Nodes::Single(redis::Client::open(url)?)),
            Topology::Sentinel { master, sentinels } => {
                let info = url.into_connection_info()?;
                let mut node = SentinelNodeConnectionInfo::default()
                    .set_redis_connection_info(info.redis_settings().clone());
                if let ConnectionAddr::TcpTls { insecure, .. } = info.addr() {
                    node = node.set_tls_mode(match insecure {
                        true => TlsMode::Insecure,
                        false => TlsMode::Secure,
                    });
                }
                let mut sentinel = Sentinel::build(sentinels.iter().map(String::as_str).collect())?;
                let client = sentinel.async_master_for(master, Some(&node)).await?;
                Ok(Nodes::Sentinel {
                    sentinel: tokio::sync::Mutex::new(sentinel),
                    master: master.clone(),
                    node,
                    current: Mutex::new(client),
                })
            }
            Topology::Cluster { seeds } => {
                let nodes = std::iter::once(url).chain(seeds.iter().map(String::as_str));
                ClusterClient::new(nodes.collect::<Vec<_>>()).map(Nodes::Cluster)
            }
        }
    }

    async fn connect(&self, response_timeout: Option<Duration>) -> RedisResult<Connection> {
        match self {
            Nodes::Single(client) => node_connection(client.clone(), response_timeout, false).await,
            Nodes::Sentinel { current, .. } => {
                let client = current.lock().unwrap_or_else(|e| e.into_inner()).clone();
                node_connection(client, response_timeout, true).await
            }
            Nodes::Cluster(client) => {
                let mut config =
                    ClusterConfig::new().set_connection_timeout(Duration::from_secs(1));
                if let Some(timeout) = response_timeout {
                    config = config.set_response_timeout(timeout);
                }
                let conn = client.get_async_connection_with_config(config).await?;
                Ok(Connection::Cluster(conn))
            }
        }
    }

    /// Sentinel only: asks the sentinels for the master (which must answer as one); the
    /// master when it is not the one in use.
    async fn locate_master(&self) -> RedisResult<Option<redis::Client>> {
        let Nodes::Sentinel {
            sentinel,
            master,
            node,
            current,
        } = self
        else {
            return Ok(None);
        };
        let client = sentinel
            .lock()
            .await
            .async_master_for(master, Some(node))
            .await?;
        let current = current.lock().unwrap_or_else(|e| e.into_inner());
        let moved = current.get_connection_info().addr() != client.get_connection_info().addr();
        Ok(moved.then_some(client))
    }

    /// Sentinel only: new connections go to `client` from now on.
    fn adopt_master(&self, client: redis::Client) {
        if let Nodes::Sentinel { current, .. } = self {
            *current.lock().unwrap_or_else(|e| e.into_inner()) = client;
        }
    }
}

/// A reconnecting connection to one node.
async fn node_connection(
    client: redis::Client,
    response_timeout: Option<Duration>,
    sentinel_named: bool,
) -> RedisResult<Connection> {
    let mut config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(1)))
        .set_max_delay(Duration::from_secs(2));
    if let Some(timeout) = response_timeout {
        config = config.set_response_timeout(Some(timeout));
    }
    if sentinel_named {
        // Commands wait for the reconnection; after a failover the old address is gone
        // for good, so fail them fast and let the sentinels name the new master.
        config = config.set_number_of_retries(1);
    }
    let conn = ConnectionManager::new_with_config(client, config).await?;
    Ok(Connection::Node(conn))
}

/// One node's reconnecting connection, or a cluster's.
#[derive(Clone)]
pub(super) enum Connection {
    Node(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Node(conn) => conn.req_packed_command(cmd),
            Connection::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Connection::Node(conn) => conn.req_packed_commands(pipeline, offset, count),
            Connection::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Node(conn) => conn.get_db(),
            Connection::Cluster(conn) => conn.get_db(),
        }
    }
}

/// The key prefix: in a cluster a hash tag (`{vigil}`), so that every key of the buffer
/// lands in one slot, which the dead-letter MULTI (dead-letter stream and signal stream)
/// and the stats pipeline (all three signal streams) need. A prefix that already
/// holds a hash tag is kept.
pub(super) fn key_prefix(prefix: &str, topology: &Topology) -> String {
    let tagged = prefix
        .find('{')
        .is_some_and(|open| prefix[open + 1..].find('}').is_some_and(|len| len > 0));
    match topology {
        Topology::Cluster { .. } if !tagged => format!("{{{prefix}}}"),
        _ => prefix.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_keys_share_a_hash_tag() {
        let cluster = Topology::Cluster { seeds: vec![] };
        assert_eq!(key_prefix("vigil", &cluster), "{vigil}");
        assert_eq!(key_prefix("app:{vigil}", &cluster), "app:{vigil}");
        // `{}` is no hash tag: Redis hashes the whole key.
        assert_eq!(key_prefix("a{}", &cluster), "{a{}}");
        assert_eq!(key_prefix("vigil", &Topology::Single), "vigil");
    }
}
