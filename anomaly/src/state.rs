//! Snapshots of every query's detector and alert state, so a restart is not a cold start.
//!
//! A snapshot is one [`QuerySnapshot`] per query, encoded with postcard. It goes to Redis
//! when `state.redis` is set (one hash per query, written under a temporary key and renamed
//! into place, so a reader never sees half a snapshot), else to a local file (written to a
//! temporary file, fsynced and renamed).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::alerts::AlertState;
use crate::config::StateConfig;
use crate::detector::SeriesState;

/// Bumped when the encoding changes; an older snapshot is ignored (the queries warm again).
const VERSION: u32 = 1;
/// Series per Redis hash field.
const SERIES_PER_CHUNK: usize = 1000;

/// One series: labels, detector state, alert state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeriesEntry {
    pub labels: BTreeMap<String, String>,
    pub detector: SeriesState,
    pub alert: AlertState,
    /// Time of the last point scored (ms).
    pub last_ts: i64,
}

/// A query's state apart from its series.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct QueryMeta {
    /// What the state was learned with (expression, detector, direction, ...); state
    /// learned under another configuration is discarded.
    pub fingerprint: String,
    /// The last evaluated step (ms); the next evaluation starts one step later.
    pub scored_until: Option<i64>,
    /// The overflow alert's start, while more series are anomalous than `max_alerts`.
    pub overflow_since: Option<i64>,
    pub overflow_notified: bool,
}

/// A query's saved state, as loaded.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QuerySnapshot {
    pub meta: QueryMeta,
    pub series: Vec<SeriesEntry>,
}

/// A query's state to save, borrowed from the running service: a snapshot is encoded
/// straight from it, never copied first. Encodes exactly like [`QuerySnapshot`].
pub struct QueryState<'a> {
    pub meta: &'a QueryMeta,
    pub series: Vec<&'a SeriesEntry>,
}

impl QuerySnapshot {
    pub fn state(&self) -> QueryState<'_> {
        QueryState {
            meta: &self.meta,
            series: self.series.iter().collect(),
        }
    }
}

#[derive(Deserialize)]
struct FileSnapshot {
    version: u32,
    queries: BTreeMap<String, (QueryMeta, Vec<SeriesEntry>)>,
}

/// What [`FileSnapshot`] reads back, written from borrowed state.
#[derive(Serialize)]
struct FileSnapshotRef<'a> {
    version: u32,
    queries: BTreeMap<&'a str, (&'a QueryMeta, &'a [&'a SeriesEntry])>,
}

pub enum Store {
    File(PathBuf),
    Redis {
        connection: redis::aio::ConnectionManager,
        key: String,
    },
}

impl Store {
    pub async fn open(config: &StateConfig) -> Result<Store, String> {
        match &config.redis {
            Some(url) => {
                let client =
                    redis::Client::open(url.as_str()).map_err(|e| format!("state.redis: {e}"))?;
                let connection = redis::aio::ConnectionManager::new(client)
                    .await
                    .map_err(|e| format!("state.redis {url}: {e}"))?;
                Ok(Store::Redis {
                    connection,
                    key: config.key.clone(),
                })
            }
            None => Ok(Store::File(config.path.clone())),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Store::File(path) => path.display().to_string(),
            Store::Redis { key, .. } => format!("redis key {key}:*"),
        }
    }

    /// Loads the saved state of the named queries; a query without saved state is absent.
    pub async fn load(
        &mut self,
        queries: &[&str],
    ) -> Result<BTreeMap<String, QuerySnapshot>, String> {
        match self {
            Store::File(path) => load_file(path, queries),
            Store::Redis { connection, key } => {
                let mut out = BTreeMap::new();
                for query in queries {
                    let fields: BTreeMap<String, Vec<u8>> = redis::cmd("HGETALL")
                        .arg(format!("{key}:{query}"))
                        .query_async(connection)
                        .await
                        .map_err(|e| format!("reading state of {query}: {e}"))?;
                    if let Some(snapshot) = decode_hash(query, &fields)? {
                        out.insert(query.to_string(), snapshot);
                    }
                }
                Ok(out)
            }
        }
    }

    /// Saves every query's state, replacing the previous snapshot.
    pub async fn save(&mut self, queries: &BTreeMap<&str, QueryState<'_>>) -> Result<(), String> {
        match self {
            Store::File(path) => {
                let snapshot = FileSnapshotRef {
                    version: VERSION,
                    queries: queries
                        .iter()
                        .map(|(q, s)| (*q, (s.meta, s.series.as_slice())))
                        .collect(),
                };
                let bytes = postcard::to_stdvec(&snapshot).map_err(|e| e.to_string())?;
                let path = path.clone();
                tokio::task::spawn_blocking(move || write_atomically(&path, &bytes))
                    .await
                    .map_err(|e| e.to_string())?
            }
            Store::Redis { connection, key } => {
                for (query, snapshot) in queries {
                    let target = format!("{key}:{query}");
                    let temporary = format!("{target}:writing");
                    let mut pipe = redis::pipe();
                    pipe.atomic().del(&temporary).ignore();
                    pipe.hset(&temporary, "version", VERSION).ignore();
                    pipe.hset(
                        &temporary,
                        "meta",
                        postcard::to_stdvec(snapshot.meta).map_err(|e| e.to_string())?,
                    )
                    .ignore();
                    for (i, chunk) in snapshot.series.chunks(SERIES_PER_CHUNK).enumerate() {
                        let bytes = postcard::to_stdvec(chunk).map_err(|e| e.to_string())?;
                        pipe.hset(&temporary, format!("series:{i}"), bytes).ignore();
                    }
                    pipe.rename(&temporary, &target).ignore();
                    pipe.query_async::<()>(connection)
                        .await
                        .map_err(|e| format!("writing state of {query}: {e}"))?;
                }
                Ok(())
            }
        }
    }
}

fn load_file(path: &Path, queries: &[&str]) -> Result<BTreeMap<String, QuerySnapshot>, String> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let snapshot: FileSnapshot = postcard::from_bytes(&bytes)
        .map_err(|e| format!("{} is not a state snapshot: {e}", path.display()))?;
    if snapshot.version != VERSION {
        tracing::warn!(
            path = %path.display(),
            version = snapshot.version,
            "state snapshot of another version is ignored"
        );
        return Ok(BTreeMap::new());
    }
    Ok(snapshot
        .queries
        .into_iter()
        .filter(|(q, _)| queries.contains(&q.as_str()))
        .map(|(q, (meta, series))| (q, QuerySnapshot { meta, series }))
        .collect())
}

fn decode_hash(
    query: &str,
    fields: &BTreeMap<String, Vec<u8>>,
) -> Result<Option<QuerySnapshot>, String> {
    if fields.is_empty() {
        return Ok(None);
    }
    let version = fields
        .get("version")
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| v.parse::<u32>().ok());
    if version != Some(VERSION) {
        tracing::warn!(
            query,
            ?version,
            "state snapshot of another version is ignored"
        );
        return Ok(None);
    }
    let bad = |e: postcard::Error| format!("state of {query} cannot be decoded: {e}");
    let meta: QueryMeta =
        postcard::from_bytes(fields.get("meta").map(Vec::as_slice).unwrap_or(&[])).map_err(bad)?;
    let mut series = Vec::new();
    for (name, bytes) in fields {
        if name.starts_with("series:") {
            let chunk: Vec<SeriesEntry> = postcard::from_bytes(bytes).map_err(bad)?;
            series.extend(chunk);
        }
    }
    Ok(Some(QuerySnapshot { meta, series }))
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), String> {
    use std::io::Write;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let temporary = path.with_extension("writing");
    let result = (|| {
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    result.map_err(|e| format!("cannot write {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot() -> QuerySnapshot {
        let config = crate::detector::DetectorConfig::default();
        let model = crate::detector::Model::new(
            &config,
            Default::default(),
            0.0,
            std::time::Duration::from_secs(60),
        );
        let mut detector = model.new_state();
        for i in 0..50 {
            model.score(&mut detector, i * 60_000, (i % 7) as f64);
        }
        QuerySnapshot {
            meta: QueryMeta {
                fingerprint: "f".into(),
                scored_until: Some(3_000_000),
                overflow_since: None,
                overflow_notified: false,
            },
            series: vec![SeriesEntry {
                labels: BTreeMap::from([("service".into(), "api".into())]),
                detector,
                alert: AlertState {
                    annotation: Some(7),
                    ..AlertState::default()
                },
                last_ts: 2_940_000,
            }],
        }
    }

    #[tokio::test]
    async fn a_file_snapshot_round_trips_and_a_missing_file_is_a_cold_start() {
        let dir = tempfile::tempdir().unwrap();
        let config = StateConfig {
            path: dir.path().join("sub/state.bin"),
            ..StateConfig::default()
        };
        let mut store = Store::open(&config).await.unwrap();
        assert!(store.load(&["q"]).await.unwrap().is_empty());
        let (q, gone) = (snapshot(), snapshot());
        let saved = BTreeMap::from([("q", q.state()), ("gone", gone.state())]);
        store.save(&saved).await.unwrap();
        let loaded = store.load(&["q", "other"]).await.unwrap();
        assert_eq!(loaded.len(), 1, "only configured queries are restored");
        assert_eq!(loaded["q"], snapshot());
    }

    #[tokio::test]
    async fn a_corrupt_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.bin");
        std::fs::write(&path, b"\x01garbage").unwrap();
        let mut store = Store::File(path);
        let error = store.load(&["q"]).await.unwrap_err();
        assert!(error.contains("state.bin"), "{error}");
    }
}
