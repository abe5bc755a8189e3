//! Kubernetes metadata read from a log file's path, as the kubelet lays files out:
//! `/var/log/pods/<namespace>_<pod>_<uid>/<container>/<restart count>.log`.
//!
//! Names follow the OpenTelemetry semantic conventions, so the collector's Loki exporter
//! makes `k8s_namespace_name`, `k8s_pod_name` and `k8s_container_name` stream labels by
//! default (low cardinality) and keeps the uid and restart count as structured metadata.

use std::path::Path;

/// What the kubelet's path says about the container that wrote the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodLogPath {
    pub namespace: String,
    pub pod: String,
    pub uid: String,
    pub container: String,
    pub restart_count: u32,
}

impl PodLogPath {
    /// Reads the metadata from a path, if it has the kubelet's layout.
    pub fn parse(path: &Path) -> Option<PodLogPath> {
        let file = path.file_name()?.to_str()?;
        let container_dir = path.parent()?;
        let pod_dir = container_dir.parent()?;
        if pod_dir.parent()?.file_name()?.to_str()? != "pods" {
            return None;
        }
        // `0.log`, and the kubelet's rotated `0.log.20240101-120000`.
        let (count, _) = file.split_once(".log")?;
        let restart_count = count.parse().ok()?;
        let container = container_dir.file_name()?.to_str()?;
        // Namespace and pod names are DNS names, and uids are hex and dashes: no `_` in any.
        let mut parts = pod_dir.file_name()?.to_str()?.splitn(3, '_');
        let (namespace, pod, uid) = (parts.next()?, parts.next()?, parts.next()?);
        if [namespace, pod, uid, container]
            .iter()
            .any(|s| s.is_empty())
        {
            return None;
        }
        Some(PodLogPath {
            namespace: namespace.to_string(),
            pod: pod.to_string(),
            uid: uid.to_string(),
            container: container.to_string(),
            restart_count,
        })
    }

    /// As OTel resource attributes.
    pub fn attributes(&self) -> Vec<(&'static str, String)> {
        vec![
            ("k8s.namespace.name", self.namespace.clone()),
            ("k8s.pod.name", self.pod.clone()),
            ("k8s.pod.uid", self.uid.clone()),
            ("k8s.container.name", self.container.clone()),
            (
                "k8s.container.restart_count",
                self.restart_count.to_string(),
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_kubelet_layout() {
        let path = Path::new(
            "/var/log/pods/shop_checkout-7d9f8-x2x4z_0f1e2d3c-aaaa-bbbb-cccc-000000000001/app/3.log",
        );
        let meta = PodLogPath::parse(path).unwrap();
        assert_eq!(
            meta,
            PodLogPath {
                namespace: "shop".into(),
                pod: "checkout-7d9f8-x2x4z".into(),
                uid: "0f1e2d3c-aaaa-bbbb-cccc-000000000001".into(),
                container: "app".into(),
                restart_count: 3,
            }
        );
        assert_eq!(
            meta.attributes()[4],
            ("k8s.container.restart_count", "3".into())
        );
        let rotated = Path::new("/x/pods/ns_pod_uid/c/0.log.20240101-120000");
        assert_eq!(PodLogPath::parse(rotated).unwrap().restart_count, 0);
    }

    #[test]
    fn other_paths_have_no_metadata() {
        for path in [
            "/var/log/syslog",
            "/var/log/pods/ns_pod/c/0.log",
            "/var/log/pods/ns_pod_uid/c/app.log",
            "/var/log/containers/ns_pod_uid/c/0.log",
            "/var/log/pods/_pod_uid/c/0.log",
            "0.log",
        ] {
            assert_eq!(PodLogPath::parse(Path::new(path)), None, "{path}");
        }
    }
}
