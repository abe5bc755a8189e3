//! What the agent keeps of one pod, and the OTel resource attributes it gives a record.
//!
//! Owner workloads follow the OpenTelemetry semantic conventions and are derived without
//! further API calls, as the OTel Collector's `k8sattributes` processor does by default:
//! - a ReplicaSet's Deployment is the ReplicaSet name without its `-<pod-template-hash>`
//!   suffix, and only when the pod carries that `pod-template-hash` label (a ReplicaSet
//!   made by hand has none, and then no Deployment is claimed);
//! - a Job's CronJob is the Job name without a `-<digits>` suffix of at least 8 digits:
//!   the CronJob controller names its Jobs `<cronjob>-<scheduled time in minutes since
//!   the epoch>`. A hand-made Job called `migrate-2` keeps no CronJob.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;

/// Annotations Prometheus-style discovery reads; the pod's other annotations are kept only
/// for pods that ask to be scraped (see [`PodMeta::from_pod`]).
pub const SCRAPE_ANNOTATION: &str = "prometheus.io/scrape";
/// Large and never useful as a label.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// The small strings the agent keeps of a pod.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PodMeta {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    pub node: String,
    /// Phase `Running`.
    pub running: bool,
    pub ip: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// Only of pods annotated `prometheus.io/scrape: "true"`, and only when discovery asked.
    pub annotations: BTreeMap<String, String>,
    /// Owner workload attributes (`k8s.replicaset.name`, `k8s.deployment.name`, ...).
    pub owners: Vec<(&'static str, String)>,
    /// Declared TCP container ports, in spec order: (container, port).
    pub ports: Vec<(String, u16)>,
}

impl PodMeta {
    /// What is kept of a pod from the API; `None` without a uid. `annotations`: keep the
    /// annotations of pods that ask to be scraped.
    pub fn from_pod(pod: &Pod, annotations: bool) -> Option<PodMeta> {
        let meta = &pod.metadata;
        let uid = meta.uid.clone().filter(|u| !u.is_empty())?;
        let labels = meta.labels.clone().unwrap_or_default();
        let all_annotations = meta.annotations.as_ref();
        let scraped = all_annotations
            .and_then(|a| a.get(SCRAPE_ANNOTATION))
            .is_some_and(|v| v == "true");
        let annotations = match (annotations && scraped, all_annotations) {
            (true, Some(a)) => a
                .iter()
                .filter(|(k, _)| k.as_str() != LAST_APPLIED)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            _ => BTreeMap::new(),
        };
        let controller = meta.owner_references.as_ref().and_then(|refs| {
            refs.iter()
                .find(|r| r.controller == Some(true))
                .or_else(|| refs.first())
        });
        let owners = controller
            .map(|r| owners(&r.kind, &r.name, labels.get("pod-template-hash")))
            .unwrap_or_default();
        let spec = pod.spec.as_ref();
        let ports = spec
            .map(|s| {
                s.containers
                    .iter()
                    .flat_map(|c| {
                        c.ports.iter().flatten().filter_map(|p| {
                            let tcp = p.protocol.as_deref().is_none_or(|p| p == "TCP");
                            let port = u16::try_from(p.container_port).ok()?;
                            tcp.then(|| (c.name.clone(), port))
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        let status = pod.status.as_ref();
        Some(PodMeta {
            uid,
            namespace: meta.namespace.clone().unwrap_or_default(),
            name: meta.name.clone().unwrap_or_default(),
            node: spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
            running: status.and_then(|s| s.phase.as_deref()) == Some("Running"),
            ip: status
                .and_then(|s| s.pod_ip.clone())
                .filter(|ip| !ip.is_empty()),
            labels,
            annotations,
            owners,
            ports,
        })
    }

    /// The resource attributes this pod adds to its containers' log records.
    pub fn attributes(&self, pod_labels: bool) -> Vec<(String, String)> {
        let mut out = Vec::with_capacity(1 + self.owners.len() + self.labels.len());
        if !self.node.is_empty() {
            out.push(("k8s.node.name".to_owned(), self.node.clone()));
        }
        for (key, value) in &self.owners {
            out.push(((*key).to_owned(), value.clone()));
        }
        if pod_labels {
            for (key, value) in &self.labels {
                out.push((format!("k8s.pod.label.{key}"), value.clone()));
            }
        }
        out
    }
}

/// The OTel owner attributes of a pod whose controller is `kind`/`name`.
pub fn owners(
    kind: &str,
    name: &str,
    pod_template_hash: Option<&String>,
) -> Vec<(&'static str, String)> {
    let mut out = Vec::with_capacity(2);
    match kind {
        "ReplicaSet" => {
            out.push(("k8s.replicaset.name", name.to_owned()));
            let deployment = pod_template_hash
                .filter(|h| !h.is_empty())
                .and_then(|h| name.strip_suffix(h.as_str())?.strip_suffix('-'))
                .filter(|d| !d.is_empty());
            if let Some(deployment) = deployment {
                out.push(("k8s.deployment.name", deployment.to_owned()));
            }
        }
        "StatefulSet" => out.push(("k8s.statefulset.name", name.to_owned())),
        "DaemonSet" => out.push(("k8s.daemonset.name", name.to_owned())),
        "Job" => {
            out.push(("k8s.job.name", name.to_owned()));
            let cronjob = name.rsplit_once('-').filter(|(prefix, digits)| {
                !prefix.is_empty()
                    && digits.len() >= 8
                    && digits.bytes().all(|b| b.is_ascii_digit())
            });
            if let Some((cronjob, _)) = cronjob {
                out.push(("k8s.cronjob.name", cronjob.to_owned()));
            }
        }
        _ => {}
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(kind: &str, name: &str, hash: Option<&str>) -> Vec<(&'static str, String)> {
        owners(kind, name, hash.map(str::to_owned).as_ref())
    }

    #[test]
    fn replicaset_owner_gives_the_deployment_by_its_pod_template_hash() {
        assert_eq!(
            names("ReplicaSet", "checkout-5d8f9c7b4", Some("5d8f9c7b4")),
            vec![
                ("k8s.replicaset.name", "checkout-5d8f9c7b4".to_owned()),
                ("k8s.deployment.name", "checkout".to_owned()),
            ]
        );
        // A ReplicaSet made by hand: no hash label, or one that is not its suffix.
        assert_eq!(names("ReplicaSet", "cache-abc", None).len(), 1);
        assert_eq!(names("ReplicaSet", "cache-abc", Some("xyz")).len(), 1);
    }

    #[test]
    fn other_owners() {
        assert_eq!(
            names("StatefulSet", "db", None),
            vec![("k8s.statefulset.name", "db".to_owned())]
        );
        assert_eq!(
            names("DaemonSet", "vigil-agent", None),
            vec![("k8s.daemonset.name", "vigil-agent".to_owned())]
        );
        assert_eq!(
            names("Job", "backup-29123456", None),
            vec![
                ("k8s.job.name", "backup-29123456".to_owned()),
                ("k8s.cronjob.name", "backup".to_owned()),
            ]
        );
        assert_eq!(names("Job", "migrate-2", None).len(), 1);
        assert!(names("Node", "n1", None).is_empty());
    }

    #[test]
    fn from_pod_keeps_what_is_needed() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": "web-7c9-x", "namespace": "shop", "uid": "u1",
                "labels": { "app": "web", "pod-template-hash": "7c9" },
                "annotations": { "prometheus.io/scrape": "true", LAST_APPLIED: "{...}" },
                "ownerReferences": [
                    { "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7c9", "uid": "r", "controller": true }
                ]
            },
            "spec": { "nodeName": "n1", "containers": [
                { "name": "app", "ports": [ { "containerPort": 9000, "protocol": "UDP" }, { "containerPort": 8080 } ] }
            ] },
            "status": { "phase": "Running", "podIP": "10.0.0.7" }
        }))
        .unwrap();
        let meta = PodMeta::from_pod(&pod, true).unwrap();
        assert!(meta.running);
        assert_eq!(meta.ip.as_deref(), Some("10.0.0.7"));
        assert_eq!(meta.ports, vec![("app".to_owned(), 8080)]);
        assert_eq!(meta.annotations.len(), 1);
        assert!(
            PodMeta::from_pod(&pod, false)
                .unwrap()
                .annotations
                .is_empty()
        );
        let attributes = meta.attributes(true);
        for expected in [
            ("k8s.node.name", "n1"),
            ("k8s.replicaset.name", "web-7c9"),
            ("k8s.deployment.name", "web"),
            ("k8s.pod.label.app", "web"),
        ] {
            assert!(
                attributes.contains(&(expected.0.to_owned(), expected.1.to_owned())),
                "{expected:?} in {attributes:?}"
            );
        }
        assert!(
            meta.attributes(false)
                .iter()
                .all(|(k, _)| !k.starts_with("k8s.pod.label."))
        );
    }
}
