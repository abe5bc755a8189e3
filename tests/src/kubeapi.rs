//! A fake Kubernetes API server that speaks the documented protocol for pods, enough for a
//! client-go style LIST + WATCH (kube-rs' `watcher`):
//!
//! - `GET /api/v1/pods` → a `PodList` with `metadata.resourceVersion`;
//! - `GET /api/v1/pods?watch=true&resourceVersion=N` → a chunked stream of newline-delimited
//!   watch events `{"type":"ADDED|MODIFIED|DELETED","object":{...}}`, every event after `N`
//!   first, then new ones as they happen
//!   (<https://kubernetes.io/docs/reference/using-api/api-concepts/#efficient-detection-of-changes>).
//!
//! Every request's `fieldSelector` is recorded, so a test checks what the client asked for.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

#[derive(Default)]
struct ApiState {
    /// Current pods by uid.
    pods: BTreeMap<String, Value>,
    /// Every event so far, with the resourceVersion it made.
    events: Vec<(u64, Value)>,
    resource_version: u64,
    field_selectors: Vec<String>,
    watches: usize,
}

struct Shared {
    state: Mutex<ApiState>,
    live: broadcast::Sender<(u64, Value)>,
}

pub struct FakeKubeApi {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl FakeKubeApi {
    pub async fn start() -> FakeKubeApi {
        let shared = Arc::new(Shared {
            state: Mutex::new(ApiState::default()),
            live: broadcast::channel(1024).0,
        });
        let app = Router::new()
            .route("/api/v1/pods", get(pods))
            .with_state(shared.clone());
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake kube api");
        let addr = listener.local_addr().expect("local addr");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeKubeApi { addr, shared, task }
    }

    /// Writes a kubeconfig for this server (plain HTTP, no credentials) into `dir`.
    pub fn kubeconfig(&self, dir: &Path) -> PathBuf {
        let path = dir.join("kubeconfig");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: \"http://{}\"\n\
             users:\n- name: fake\n  user: {{}}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n\
             current-context: fake\n",
            self.addr
        );
        std::fs::write(&path, text).expect("write kubeconfig");
        path
    }

    /// ADDED or MODIFIED, as the pod is new or not.
    pub fn put(&self, pod: Value) {
        let uid = pod["metadata"]["uid"].as_str().expect("pod uid").to_owned();
        let mut state = self.shared.state.lock().unwrap();
        let kind = match state.pods.contains_key(&uid) {
            true => "MODIFIED",
            false => "ADDED",
        };
        self.event(&mut state, kind, uid, Some(pod));
    }

    pub fn delete(&self, uid: &str) {
        let mut state = self.shared.state.lock().unwrap();
        self.event(&mut state, "DELETED", uid.to_owned(), None);
    }

    fn event(&self, state: &mut ApiState, kind: &str, uid: String, pod: Option<Value>) {
        state.resource_version += 1;
        let rv = state.resource_version;
        let mut object = match pod {
            Some(pod) => pod,
            None => state.pods.get(&uid).cloned().expect("deleting a known pod"),
        };
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        match kind {
            "DELETED" => state.pods.remove(&uid),
            _ => state.pods.insert(uid, object.clone()),
        };
        let event = json!({ "type": kind, "object": object });
        state.events.push((rv, event.clone()));
        let _ = self.shared.live.send((rv, event));
    }

    /// The `fieldSelector` of every request so far (empty string when there was none).
    pub fn field_selectors(&self) -> Vec<String> {
        self.shared.state.lock().unwrap().field_selectors.clone()
    }

    /// How many watch requests were made.
    pub fn watches(&self) -> usize {
        self.shared.state.lock().unwrap().watches
    }
}

impl Drop for FakeKubeApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A pod as a test describes it.
pub struct TestPod<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub uid: &'a str,
    pub node: &'a str,
    pub ip: &'a str,
    pub labels: Value,
    pub annotations: Value,
    /// `(kind, name)` of its controller.
    pub owner: Option<(&'a str, &'a str)>,
}

/// A Pod object as the API serves it: one container `app`, phase Running.
pub fn pod(p: TestPod<'_>) -> Value {
    let owners: Vec<Value> = p
        .owner
        .into_iter()
        .map(|(kind, owner)| {
            json!({ "apiVersion": "apps/v1", "kind": kind, "name": owner, "uid": format!("{owner}-uid"), "controller": true })
        })
        .collect();
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": p.name, "namespace": p.namespace, "uid": p.uid,
            "labels": p.labels, "annotations": p.annotations, "ownerReferences": owners
        },
        "spec": { "nodeName": p.node, "containers": [ { "name": "app", "image": "app:1" } ] },
        "status": { "phase": "Running", "podIP": p.ip }
    })
}

async fn pods(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let watch = matches!(query.get("watch").map(String::as_str), Some("true" | "1"));
    let mut state = shared.state.lock().unwrap();
    state
        .field_selectors
        .push(query.get("fieldSelector").cloned().unwrap_or_default());
    if !watch {
        let list = json!({
            "kind": "PodList",
            "apiVersion": "v1",
            "metadata": { "resourceVersion": state.resource_version.to_string() },
            "items": state.pods.values().cloned().collect::<Vec<_>>(),
        });
        return axum::Json(list).into_response();
    }
    state.watches += 1;
    let since: u64 = query
        .get("resourceVersion")
        .and_then(|rv| rv.parse().ok())
        .unwrap_or(0);
    // Under the lock: nothing happens between the replay and the subscription.
    let replay: Vec<(u64, Value)> = state
        .events
        .iter()
        .filter(|(rv, _)| *rv > since)
        .cloned()
        .collect();
    let live = shared.live.subscribe();
    drop(state);
    let lines = futures_util::stream::unfold(
        (replay.into_iter(), live, since),
        |(mut replay, mut live, mut last)| async move {
            let (rv, event) = match replay.next() {
                Some(e) => e,
                None => loop {
                    match live.recv().await {
                        Ok((rv, e)) if rv > last => break (rv, e),
                        Ok(_) => continue,
                        Err(_) => return None,
                    }
                },
            };
            last = rv;
            let line = format!("{event}\n");
            Some((Ok::<_, Infallible>(line), (replay, live, last)))
        },
    );
    (
        [("content-type", "application/json")],
        Body::from_stream(lines),
    )
        .into_response()
}
