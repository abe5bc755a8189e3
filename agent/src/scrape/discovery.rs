//! Pods to scrape, from the agent's pod cache, the way Prometheus' `kubernetes_sd_configs`
//! role `pod` and its widely copied `kubernetes-pods` example job find them:
//!
//! - only pods of this node (the cache watches no other), phase `Running`, with an IP, and
//!   annotated `prometheus.io/scrape: "true"`;
//! - one target per pod: port `prometheus.io/port`, else the first declared TCP container
//!   port, else the pod is skipped (Prometheus would make a port-less target of it, which
//!   only a relabel rule could make scrapeable);
//! - path `prometheus.io/path` (default `/metrics`), scheme `prometheus.io/scheme` (`http`
//!   or `https`, default `http`), address `<pod IP>:<port>`;
//! - labels before relabeling: `__meta_kubernetes_namespace`, `_pod_name`, `_pod_uid`,
//!   `_pod_ip`, `_pod_node_name`, `_pod_phase`, `_pod_label_<name>`,
//!   `_pod_labelpresent_<name>`, `_pod_annotation_<name>`, `_pod_annotationpresent_<name>`,
//!   `_pod_container_name` and `_pod_container_port_number` (of the container declaring the
//!   port, when one does); and, as the example job's relabeling gives them, `job:
//!   kubernetes-pods`, `namespace` and `pod`. The `scrape.relabel` rules run after, and may
//!   change or drop any of them.

use super::relabel::Labels;
use crate::kubernetes::PodMeta;
use crate::kubernetes::pod::SCRAPE_ANNOTATION;

/// The `job` of a discovered pod unless relabeling sets another.
pub const POD_JOB: &str = "kubernetes-pods";

/// A pod's target labels before relabeling; `None` for a pod not to be scraped.
pub fn pod_target_labels(pod: &PodMeta) -> Option<Labels> {
    let annotation = |name: &str| pod.annotations.get(name).map(String::as_str);
    if !pod.running || annotation(SCRAPE_ANNOTATION) != Some("true") {
        return None;
    }
    let ip = pod.ip.as_deref()?;
    let port = match annotation("prometheus.io/port") {
        Some(port) => port.trim().parse::<u16>().ok()?,
        None => pod.ports.first()?.1,
    };
    let scheme = match annotation("prometheus.io/scheme") {
        Some("https") => "https",
        _ => "http",
    };
    let path = annotation("prometheus.io/path")
        .filter(|p| p.starts_with('/'))
        .unwrap_or("/metrics");
    let address = match ip.contains(':') {
        true => format!("[{ip}]:{port}"),
        false => format!("{ip}:{port}"),
    };
    let mut labels = Labels::new();
    let mut set = |name: String, value: &str| {
        labels.insert(name, value.to_owned());
    };
    set("__address__".into(), &address);
    set("__scheme__".into(), scheme);
    set("__metrics_path__".into(), path);
    let meta = "__meta_kubernetes_";
    set(format!("{meta}namespace"), &pod.namespace);
    set(format!("{meta}pod_name"), &pod.name);
    set(format!("{meta}pod_uid"), &pod.uid);
    set(format!("{meta}pod_ip"), ip);
    set(format!("{meta}pod_node_name"), &pod.node);
    set(format!("{meta}pod_phase"), "Running");
    for (name, value) in &pod.labels {
        set(format!("{meta}pod_label_{}", label_name(name)), value);
        set(
            format!("{meta}pod_labelpresent_{}", label_name(name)),
            "true",
        );
    }
    for (name, value) in &pod.annotations {
        set(format!("{meta}pod_annotation_{}", label_name(name)), value);
        set(
            format!("{meta}pod_annotationpresent_{}", label_name(name)),
            "true",
        );
    }
    if let Some((container, _)) = pod.ports.iter().find(|(_, p)| *p == port) {
        set(format!("{meta}pod_container_name"), container);
        set(
            format!("{meta}pod_container_port_number"),
            &port.to_string(),
        );
    }
    set("job".into(), POD_JOB);
    set("namespace".into(), &pod.namespace);
    set("pod".into(), &pod.name);
    Some(labels)
}

/// A Kubernetes label or annotation name as a Prometheus label name part, as Prometheus
/// makes it: every character other than `[a-zA-Z0-9_]` becomes `_`.
fn label_name(name: &str) -> String {
    name.chars()
        .map(|c| match c.is_ascii_alphanumeric() {
            true => c,
            false => '_',
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn annotated(annotations: &[(&str, &str)]) -> PodMeta {
        PodMeta {
            uid: "u1".into(),
            namespace: "shop".into(),
            name: "web-1".into(),
            node: "n1".into(),
            running: true,
            ip: Some("10.0.0.7".into()),
            labels: [("app.kubernetes.io/name".to_owned(), "web".to_owned())].into(),
            annotations: annotations
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            ports: vec![("app".into(), 8080), ("sidecar".into(), 9090)],
            ..Default::default()
        }
    }

    #[test]
    fn an_annotated_pod_becomes_a_target() {
        let labels = pod_target_labels(&annotated(&[
            ("prometheus.io/scrape", "true"),
            ("prometheus.io/port", "9090"),
            ("prometheus.io/path", "/stats"),
        ]))
        .unwrap();
        for (name, value) in [
            ("__address__", "10.0.0.7:9090"),
            ("__scheme__", "http"),
            ("__metrics_path__", "/stats"),
            ("__meta_kubernetes_namespace", "shop"),
            ("__meta_kubernetes_pod_label_app_kubernetes_io_name", "web"),
            (
                "__meta_kubernetes_pod_annotation_prometheus_io_port",
                "9090",
            ),
            ("__meta_kubernetes_pod_container_name", "sidecar"),
            ("job", "kubernetes-pods"),
            ("namespace", "shop"),
            ("pod", "web-1"),
        ] {
            assert_eq!(labels.get(name).map(String::as_str), Some(value), "{name}");
        }
        // Without a port annotation: the first declared port.
        let first = pod_target_labels(&annotated(&[("prometheus.io/scrape", "true")])).unwrap();
        assert_eq!(first["__address__"], "10.0.0.7:8080");
        assert_eq!(first["__metrics_path__"], "/metrics");
    }

    #[test]
    fn other_pods_are_not_targets() {
        assert!(pod_target_labels(&annotated(&[])).is_none());
        assert!(pod_target_labels(&annotated(&[("prometheus.io/scrape", "false")])).is_none());
        let mut pending = annotated(&[("prometheus.io/scrape", "true")]);
        pending.running = false;
        assert!(pod_target_labels(&pending).is_none());
        let mut no_ip = annotated(&[("prometheus.io/scrape", "true")]);
        no_ip.ip = None;
        assert!(pod_target_labels(&no_ip).is_none());
        let mut no_port = annotated(&[("prometheus.io/scrape", "true")]);
        no_port.ports.clear();
        assert!(pod_target_labels(&no_port).is_none());
    }
}
