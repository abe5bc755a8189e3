//! The shipped Alertmanager configuration (`compose/alertmanager/`) in a real Alertmanager:
//! anomaly alerts built by vigil-anomaly's own code are delivered to a loopback stand-in for Slack's webhook and
//! to a real SMTP server (aiosmtpd, STARTTLS and AUTH) as one message per incident.
//!
//! The test copy of alertmanager.yml differs from the shipped one only where it must: the
//! secret files and templates are found in a temporary directory, the SMTP smarthost is the
//! loopback server, and `group_wait` is 1s instead of 30s (a timing).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::State;
use axum::routing::post;
use serde_json::Value;
use vigil_anomaly::alerts::{AlertTemplate, Observation, PostableAlert};
use vigil_e2e::deploy::{self, replace_once};
use vigil_e2e::{eventually, free_port, http_client, require_program};

const SMTP_USER: &str = "vigil-alerts@example.com";
const SMTP_PASSWORD: &str = "s3cret-smtp";

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A self-signed certificate for 127.0.0.1: the SMTP server's, and Alertmanager's only root.
fn certificate(dir: &Path) {
    let openssl = require_program("openssl", "openssl");
    let (ok, _, err) = deploy::output(
        Command::new(openssl)
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            ])
            .args([
                "-subj",
                "/CN=127.0.0.1",
                "-addext",
                "subjectAltName=IP:127.0.0.1",
            ])
            .arg("-keyout")
            .arg(dir.join("key.pem"))
            .arg("-out")
            .arg(dir.join("cert.pem")),
    );
    assert!(ok, "openssl: {err}");
}

fn start_smtp(dir: &Path, port: u16, mail: &Path) -> Killed {
    let mut child = Command::new(deploy::python())
        .arg(deploy::repo().join("tests/deploy/smtp_sink.py"))
        .arg(port.to_string())
        .arg(dir.join("cert.pem"))
        .arg(dir.join("key.pem"))
        .args([SMTP_USER, SMTP_PASSWORD])
        .arg(mail)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the SMTP server");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read the SMTP server's ready line");
    assert_eq!(line.trim(), "ready", "the SMTP server did not start");
    Killed(child)
}

/// Slack's incoming webhook as a loopback receiver: every POSTed JSON body, in order.
async fn start_slack() -> (u16, Arc<Mutex<Vec<Value>>>) {
    let received = Arc::new(Mutex::new(Vec::new()));
    let app = Router::new()
        .route(
            "/slack",
            post(
                |State(r): State<Arc<Mutex<Vec<Value>>>>, body: String| async move {
                    r.lock()
                        .unwrap()
                        .push(serde_json::from_str(&body).expect("Slack payload is JSON"));
                    "ok"
                },
            ),
        )
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (port, received)
}

/// Decodes a quoted-printable body, as Alertmanager encodes its email parts.
fn quoted_printable(text: &str) -> String {
    let text = text.replace("=\r\n", "").replace("=\n", "");
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'='
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&text[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anomaly_alerts_reach_slack_and_email_once_per_incident() {
    let alertmanager = require_program("prometheus-alertmanager", "prometheus-alertmanager");
    let dir = tempfile::tempdir().unwrap();
    let secrets = dir.path().join("secrets");
    let mail = dir.path().join("mail");
    std::fs::create_dir_all(&secrets).unwrap();
    std::fs::create_dir_all(&mail).unwrap();
    certificate(dir.path());

    let smtp_port = free_port();
    let _smtp = start_smtp(dir.path(), smtp_port, &mail);
    let (slack_port, slack) = start_slack().await;
    std::fs::write(
        secrets.join("slack_api_url"),
        format!("http://127.0.0.1:{slack_port}/slack\n"),
    )
    .unwrap();
    std::fs::write(secrets.join("smtp_password"), SMTP_PASSWORD).unwrap();

    let shipped = deploy::repo().join("compose/alertmanager");
    let config = replace_once(
        &std::fs::read_to_string(shipped.join("alertmanager.yml")).unwrap(),
        &[
            (
                "smtp_auth_password_file: /etc/alertmanager/secrets/smtp_password",
                &format!(
                    "smtp_auth_password_file: {}",
                    secrets.join("smtp_password").display()
                ),
            ),
            (
                "slack_api_url_file: /etc/alertmanager/secrets/slack_api_url",
                &format!(
                    "slack_api_url_file: {}",
                    secrets.join("slack_api_url").display()
                ),
            ),
            (
                "  - /etc/alertmanager/templates/*.tmpl",
                &format!("  - {}", shipped.join("*.tmpl").display()),
            ),
            (
                "smtp_smarthost: \"smtp.example.com:587\"",
                &format!("smtp_smarthost: \"127.0.0.1:{smtp_port}\""),
            ),
            ("group_wait: 30s", "group_wait: 1s"),
        ],
    );
    let config_path = dir.path().join("alertmanager.yml");
    std::fs::write(&config_path, config).unwrap();

    let web = free_port();
    let _am = Killed(
        Command::new(alertmanager)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{web}"))
            .arg("--cluster.listen-address=")
            .arg("--log.level=warn")
            // The SMTP server's self-signed certificate is the only trusted root.
            .env("SSL_CERT_FILE", dir.path().join("cert.pem"))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start alertmanager"),
    );
    let client = http_client();
    let base = format!("http://127.0.0.1:{web}");
    eventually(Duration::from_secs(20), "alertmanager ready", || {
        let r = client.get(format!("{base}/-/ready")).send();
        async move { r.await.ok()?.status().is_success().then_some(()) }
    })
    .await;

    // The alerts exactly as vigil-anomaly builds them (its own `AlertTemplate`).
    let now = SystemTime::now();
    let now_ms = now.duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;
    let ends = now + Duration::from_secs(600);
    let no_labels = BTreeMap::new();
    let errors = AlertTemplate {
        query: "DemoErrorRate",
        expr: r#"sum by (service, route) (rate(demo_requests_total{outcome="error"}[2m]))"#,
        severity: "warning",
        labels: &no_labels,
        threshold: 1.0,
        grafana: Some(("http://grafana.test/", Some("victoriametrics"))),
    };
    let observation = |value: f64| Observation {
        timestamp_ms: now_ms,
        value,
        score: 3.5,
        expected: 0.8,
        lower: 0.2,
        upper: 1.6,
    };
    let series = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    // A burst: 100 anomalous series (endpoints) of one service, one query.
    let burst: Vec<PostableAlert> = (0..100)
        .map(|i| {
            let route = format!("/api/item/{i}");
            errors.series_alert(
                &series(&[("service", "checkout"), ("route", &route)]),
                now_ms,
                ends,
                Some(&observation(12.0 + f64::from(i) / 100.0)),
            )
        })
        .collect();
    let mut alerts = burst.clone();
    // Another service: another incident.
    alerts.push(errors.series_alert(
        &series(&[("service", "payments")]),
        now_ms,
        ends,
        Some(&observation(3.5)),
    ));
    // An overflowing query: its summary alert stands for its series, which are inhibited.
    let latency = AlertTemplate {
        query: "DemoLatency",
        severity: "warning",
        grafana: None,
        ..errors
    };
    for service in ["a", "b", "c"] {
        alerts.push(latency.series_alert(
            &series(&[("service", service)]),
            now_ms,
            ends,
            Some(&observation(2.0)),
        ));
    }
    alerts.push(latency.overflow_alert(57, now_ms, ends));
    let r = client
        .post(format!("{base}/api/v2/alerts"))
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&alerts).unwrap())
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "POST alerts: {}", r.status());

    let mails = || {
        let mut names: Vec<_> = std::fs::read_dir(&mail)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "eml"))
            .collect();
        names.sort();
        names
    };
    eventually(
        Duration::from_secs(30),
        "3 Slack and 3 email notifications",
        || {
            let done = slack.lock().unwrap().len() >= 3 && mails().len() >= 3;
            async move { done.then_some(()) }
        },
    )
    .await;
    // Nothing else follows: the groups' next notification would be a group_interval (5m)
    // away, and the inhibited series never notify.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let slack = slack.lock().unwrap().clone();
    assert_eq!(slack.len(), 3, "Slack notifications: {slack:#?}");
    let by_title = |prefix: &str| {
        slack
            .iter()
            .map(|p| &p["attachments"][0])
            .find(|a| a["title"].as_str().unwrap_or("").starts_with(prefix))
            .unwrap_or_else(|| panic!("no Slack message titled {prefix}: {slack:#?}"))
            .clone()
    };
    let message = by_title("[FIRING:100] DemoErrorRate on checkout (warning)");
    let text = message["text"].as_str().unwrap();
    for i in [0, 42, 99] {
        let alert = &burst[i];
        for expected in [
            format!("FIRING: {}", alert.annotations["summary"]),
            format!("Series: route=\"/api/item/{i}\" service=\"checkout\""),
            // value, expected value and range, score
            alert.annotations["description"].clone(),
            format!("Grafana: {}", alert.generator_url),
        ] {
            assert!(text.contains(&expected), "{expected:?} not in:\n{text}");
        }
    }
    assert!(
        text.contains("value 12.42 is outside the expected range [0.2, 1.6] (expected 0.8)"),
        "{text}"
    );
    assert!(
        !text.contains("alertname="),
        "Vigil's own labels are not series labels"
    );
    assert!(
        burst[0]
            .generator_url
            .starts_with("http://grafana.test/explore?")
    );
    assert_eq!(
        message["title_link"].as_str(),
        Some(burst[0].generator_url.as_str()),
        "the title links to Grafana"
    );
    assert_eq!(message["color"], "warning");
    let payments = by_title("[FIRING:1] DemoErrorRate on payments");
    assert!(
        payments["text"]
            .as_str()
            .unwrap()
            .contains("value 3.5 is outside the expected range [0.2, 1.6]")
    );
    let overflow = by_title("[FIRING:1] DemoLatency (warning)");
    let text = overflow["text"].as_str().unwrap();
    assert!(
        text.contains("DemoLatency: 57 more series are anomalous"),
        "{text}"
    );
    assert!(
        !text.contains("service=\"a\""),
        "inhibited series were sent: {text}"
    );

    let mails = mails();
    assert_eq!(mails.len(), 3, "emails: {mails:?}");
    let email = mails
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .find(|m| m.contains("Subject: [FIRING:100] DemoErrorRate on checkout (warning)"))
        .unwrap_or_else(|| panic!("no email for the burst"));
    assert!(email.contains("To: oncall@example.com"), "{email}");
    let body = quoted_printable(&email);
    for expected in [
        "Series: route=\"/api/item/7\" service=\"checkout\"",
        &burst[7].annotations["description"],
        &format!("Grafana: {}", burst[7].generator_url),
        ">Grafana</a>",
    ] {
        assert!(body.contains(expected), "{expected:?} not in:\n{body}");
    }
}
