#!/usr/bin/env python3
"""Writes Vigil's Grafana dashboards (dashboards/*.json) from the definitions below.

The JSON files are what Grafana provisions and what `tests/tests/dashboards.rs` checks;
this script is how they are kept consistent (grid layout, units, datasource references,
variables). Edit it, run `python3 dashboards/generate.py`, commit both. Standard library
only.

Every metric name below is one Vigil emits: `vigil_collector_*` (collector/src/telemetry.rs),
`vigil_agent_*` (agent/src/telemetry.rs, agent/src/scrape/telemetry.rs), the scrape
reports `up` / `scrape_*` (agent/src/scrape/target.rs), node_exporter names from the
agent's host metrics (agent/src/host/), and the anomaly service's `anomaly_*` series and
`vigil_anomaly_*` self-metrics. The e2e test runs every expression against a real
VictoriaMetrics fed by the real pipeline.
"""

import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))

PROM = {"type": "prometheus", "uid": "${datasource}"}
LOKI = {"type": "loki", "uid": "vigil-loki"}
TEMPO = {"type": "tempo", "uid": "vigil-tempo"}
GRAFANA = {"type": "grafana", "uid": "-- Grafana --"}


class Layout:
    """Places panels left to right on Grafana's 24-column grid, wrapping at the edge."""

    def __init__(self):
        self.panels = []
        self.x = 0
        self.y = 0
        self.row_height = 0

    def add(self, panel, w, h):
        if self.x + w > 24:
            self.x = 0
            self.y += self.row_height
            self.row_height = 0
        panel["id"] = len(self.panels) + 1
        panel["gridPos"] = {"h": h, "w": w, "x": self.x, "y": self.y}
        self.x += w
        self.row_height = max(self.row_height, h)
        self.panels.append(panel)

    def row(self, title):
        if self.x:
            self.y += self.row_height
        self.x = 0
        self.row_height = 0
        self.add({"type": "row", "title": title, "collapsed": False, "panels": []}, 24, 1)
        self.x = 0
        self.y += 1
        self.row_height = 0


def targets(queries, datasource=PROM):
    out = []
    for i, (expr, legend) in enumerate(queries):
        out.append(
            {
                "datasource": datasource,
                "expr": expr,
                "legendFormat": legend,
                "range": True,
                "refId": chr(ord("A") + i),
            }
        )
    return out


def timeseries(title, queries, unit, description="", stack=False, overrides=None, min0=True):
    custom = {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10, "showPoints": "never"}
    if stack:
        custom["stacking"] = {"mode": "normal", "group": "A"}
    defaults = {"unit": unit, "custom": custom}
    if min0:
        defaults["min"] = 0
    return {
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": PROM,
        "fieldConfig": {"defaults": defaults, "overrides": overrides or []},
        "options": {
            "legend": {"displayMode": "table", "placement": "bottom", "calcs": ["lastNotNull", "max"]},
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
        "targets": targets(queries),
    }


def stat(title, expr, unit, description="", thresholds=None, decimals=None):
    defaults = {
        "unit": unit,
        "color": {"mode": "thresholds"},
        "thresholds": {
            "mode": "absolute",
            "steps": thresholds or [{"color": "green", "value": None}],
        },
    }
    if decimals is not None:
        defaults["decimals"] = decimals
    return {
        "type": "stat",
        "title": title,
        "description": description,
        "datasource": PROM,
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "value",
            "graphMode": "area",
            "textMode": "auto",
        },
        "targets": targets([(expr, "")]),
    }


def red_above(value):
    return [{"color": "green", "value": None}, {"color": "red", "value": value}]


def datasource_variable():
    return {
        "name": "datasource",
        "label": "VictoriaMetrics",
        "type": "datasource",
        "query": "prometheus",
        "current": {"selected": True, "text": "VictoriaMetrics", "value": "vigil-victoriametrics"},
        "hide": 0,
        "refresh": 1,
        "regex": "",
        "options": [],
    }


def query_variable(name, label, query, multi=True):
    """A variable from `label_values(...)`, with `All` as `.*` so `=~"$var"` also matches
    series without the label."""
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": PROM,
        "definition": query,
        "query": {"query": query, "refId": "PrometheusVariableQueryEditor-VariableQuery"},
        "refresh": 2,
        "sort": 1,
        "multi": multi,
        "includeAll": True,
        "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "hide": 0,
        "regex": "",
        "options": [],
    }


def builtin_annotation():
    return {
        "builtIn": 1,
        "datasource": GRAFANA,
        "enable": True,
        "hide": True,
        "iconColor": "rgba(0, 211, 255, 1)",
        "name": "Annotations & Alerts",
        "type": "dashboard",
    }


def dashboard(uid, title, description, layout, variables, annotations=(), links=()):
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["vigil"],
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "timepicker": {},
        "timezone": "",
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "weekStart": "",
        "annotations": {"list": [builtin_annotation(), *annotations]},
        "links": [
            {
                "title": "Vigil dashboards",
                "type": "dashboards",
                "tags": ["vigil"],
                "asDropdown": True,
                "includeVars": False,
                "keepTime": True,
            },
            *links,
        ],
        "templating": {"list": variables},
        "panels": layout.panels,
    }


RATE = "$__rate_interval"


def pipeline():
    c = 'cluster=~"$cluster",namespace=~"$namespace",instance=~"$collector"'
    cs = c + ',signal=~"$signal"'
    a = 'cluster=~"$cluster",namespace=~"$namespace",instance=~"$agent"'
    L = Layout()

    L.row("Overview")
    for title, expr, unit, desc, th in [
        (
            "Received",
            f"sum(rate(vigil_collector_received_items_total{{{cs}}}[{RATE}])) or vector(0)",
            "cps",
            "Items (data points, log records, spans) received and acknowledged per second.",
            None,
        ),
        (
            "Exported",
            f"sum(rate(vigil_collector_exported_items_total{{{cs}}}[{RATE}])) or vector(0)",
            "cps",
            "Items the backends accepted per second.",
            None,
        ),
        (
            "Refused",
            # Requests, not items: an undecodable or not-exported request has no item count
            # (vigil_collector_refused_items_total only counts decodable ones).
            f"sum(rate(vigil_collector_refused_requests_total{{{cs}}}[{RATE}])) or vector(0)",
            "reqps",
            "Requests refused at the receiver (buffer full: the sender retries; invalid, too large, not exported: lost).",
            red_above(0.001),
        ),
        (
            "Export retries",
            f"sum(rate(vigil_collector_export_retries_total{{{cs}}}[{RATE}])) or vector(0)",
            "reqps",
            "Backend requests that failed with a retryable error per second.",
            red_above(0.001),
        ),
        (
            "Dead-lettered in range",
            f"sum(increase(vigil_collector_dead_lettered_items_total{{{cs}}}[$__range])) or vector(0)",
            "short",
            "Items a backend refused for good, moved to the dead-letter store.",
            red_above(1),
        ),
        (
            "Oldest unexported",
            f"max(vigil_collector_buffer_oldest_unacked_age_seconds{{{cs}}}) or vector(0)",
            "s",
            "Age of the oldest buffered request no backend has accepted yet.",
            [{"color": "green", "value": None}, {"color": "orange", "value": 60}, {"color": "red", "value": 300}],
        ),
    ]:
        L.add(stat(title, expr, unit, desc, th), 4, 4)

    L.row("Collector: items per signal")
    L.add(
        timeseries(
            "Received items/s",
            [(f"sum by (signal, transport) (rate(vigil_collector_received_items_total{{{cs}}}[{RATE}]))", "{{signal}} {{transport}}")],
            "cps",
            "Acknowledged to the sender: durably in the buffer.",
        ),
        8,
        8,
    )
    L.add(
        timeseries(
            "Exported items/s",
            [(f"sum by (signal, exporter) (rate(vigil_collector_exported_items_total{{{cs}}}[{RATE}]))", "{{signal}} → {{exporter}}")],
            "cps",
            "Accepted by the backend.",
        ),
        8,
        8,
    )
    L.add(
        timeseries(
            "Received items/s per collector",
            [(f"sum by (instance) (rate(vigil_collector_received_items_total{{{cs}}}[{RATE}]))", "{{instance}}")],
            "cps",
        ),
        8,
        8,
    )
    L.add(
        timeseries(
            "Refused requests/s",
            [(f"sum by (signal, reason) (rate(vigil_collector_refused_requests_total{{{cs}}}[{RATE}]))", "{{signal}} {{reason}}")],
            "reqps",
            "buffer_full: answered 429 / RESOURCE_EXHAUSTED, the sender retries. invalid: bad input, not retried.",
        ),
        6,
        8,
    )
    L.add(
        timeseries(
            "Export retries/s",
            [(f"sum by (signal, exporter) (rate(vigil_collector_export_retries_total{{{cs}}}[{RATE}]))", "{{signal}} → {{exporter}}")],
            "reqps",
            "Network errors, 429 and 5xx from the backend; retried with backoff.",
        ),
        6,
        8,
    )
    L.add(
        timeseries(
            "Dropped items/s",
            [(f"sum by (signal, reason) (rate(vigil_collector_dropped_items_total{{{cs}}}[{RATE}]))", "{{signal}} {{reason}}")],
            "cps",
            "Items an exporter cannot represent for its backend (e.g. delta temporality for remote write).",
        ),
        6,
        8,
    )
    L.add(
        timeseries(
            "Dead-lettered items/s",
            [(f"sum by (signal, exporter) (rate(vigil_collector_dead_lettered_items_total{{{cs}}}[{RATE}]))", "{{signal}} → {{exporter}}")],
            "cps",
            "Refused for good by the backend (4xx other than 429), kept in the dead-letter store with the reason.",
        ),
        6,
        8,
    )

    L.row("Collector: buffer")
    L.add(
        timeseries(
            "Buffer bytes",
            [
                (f"sum by (instance) (vigil_collector_buffer_used_bytes{{{c}}})", "{{instance}} used"),
                (f"sum by (instance) (vigil_collector_buffer_capacity_bytes{{{c}}})", "{{instance}} capacity"),
            ],
            "bytes",
            "Bytes held by the buffer against its bound; full means 429 to senders.",
        ),
        8,
        8,
    )
    L.add(
        timeseries(
            "Pending records",
            [(f"sum by (instance, signal) (vigil_collector_buffer_pending_records{{{cs}}})", "{{instance}} {{signal}}")],
            "short",
            "Requests buffered and not yet acknowledged by an exporter.",
        ),
        8,
        8,
    )
    L.add(
        timeseries(
            "Oldest unexported record age",
            [(f"max by (instance, signal) (vigil_collector_buffer_oldest_unacked_age_seconds{{{cs}}})", "{{instance}} {{signal}}")],
            "s",
        ),
        8,
        8,
    )
    L.add(
        timeseries(
            "Consumer lag (shared buffers)",
            [(f"sum by (signal) (vigil_collector_buffer_undelivered_records{{{cs}}})", "{{signal}}")],
            "short",
            "Records in Redis / NATS no collector has taken yet: what autoscaling reads. Not reported by the disk buffer.",
        ),
        8,
        8,
    )
    L.add(
        timeseries(
            "Buffer write latency p99",
            [
                (
                    f"histogram_quantile(0.99, sum by (le, signal) (rate(vigil_collector_buffer_write_duration_seconds_bucket{{{cs}}}[{RATE}])))",
                    "{{signal}}",
                )
            ],
            "s",
            "Until durable: disk fsync, Redis XADD reply, JetStream publish ack.",
        ),
        8,
        8,
    )
    L.add(
        timeseries(
            "Redelivered / reclaimed records/s",
            [
                (f"sum by (signal) (rate(vigil_collector_buffer_redelivered_records_total{{{cs}}}[{RATE}]))", "{{signal}} redelivered"),
                (f"sum by (signal) (rate(vigil_collector_buffer_reclaimed_records_total{{{cs}}}[{RATE}]))", "{{signal}} reclaimed"),
            ],
            "cps",
            "Redelivered after an unacked delivery; reclaimed from a dead consumer (Redis XAUTOCLAIM).",
        ),
        8,
        8,
    )
    L.add(
        stat(
            "Dead letters dropped (store full)",
            f"sum(vigil_collector_dead_letters_dropped{{{c}}})",
            "short",
            "Dead letters dropped oldest first because the dead-letter store was full.",
            red_above(1),
        ),
        8,
        4,
    )
    L.add(
        stat(
            "Corrupt records cut at open",
            f"sum(vigil_collector_buffer_recovery_corrupt_records{{{c}}})",
            "short",
            "Damaged disk-buffer records cut off at the last start.",
            red_above(1),
        ),
        8,
        4,
    )
    L.add(
        stat(
            "Bytes truncated at open",
            f"sum(vigil_collector_buffer_recovery_truncated_bytes{{{c}}})",
            "bytes",
            "Disk-buffer bytes cut off at the last start (a torn write after a crash).",
            red_above(1),
        ),
        8,
        4,
    )

    L.row("Collector: exporters")
    L.add(
        timeseries(
            "Export latency",
            [
                (
                    f"histogram_quantile(0.5, sum by (le, exporter) (rate(vigil_collector_export_duration_seconds_bucket{{{c}}}[{RATE}])))",
                    "{{exporter}} p50",
                ),
                (
                    f"histogram_quantile(0.99, sum by (le, exporter) (rate(vigil_collector_export_duration_seconds_bucket{{{c}}}[{RATE}])))",
                    "{{exporter}} p99",
                ),
            ],
            "s",
            "Time one backend request took.",
        ),
        12,
        8,
    )
    L.add(
        timeseries(
            "Export requests/s by outcome",
            [
                (
                    f"sum by (exporter, outcome) (rate(vigil_collector_export_duration_seconds_count{{{c}}}[{RATE}]))",
                    "{{exporter}} {{outcome}}",
                )
            ],
            "reqps",
        ),
        12,
        8,
    )

    L.row("Agent: logs")
    L.add(
        timeseries(
            "Lines read / shipped per second",
            [
                (f"sum by (instance) (rate(vigil_agent_lines_read_total{{{a}}}[{RATE}]))", "{{instance}} read"),
                (f"sum by (instance) (rate(vigil_agent_lines_shipped_total{{{a}}}[{RATE}]))", "{{instance}} shipped"),
            ],
            "cps",
            "Shipped = acknowledged by the collector; checkpoints move only then.",
        ),
        8,
        8,
    )
    L.add(
        timeseries(
            "File lag",
            [(f"sum by (instance) (vigil_agent_file_lag_bytes{{{a}}})", "{{instance}}")],
            "bytes",
            "Bytes written to the watched files and not read yet. Grows while the collector is away: the files are the buffer.",
        ),
        8,
        8,
    )
    L.add(
        timeseries(
            "Bytes read/s",
            [(f"sum by (instance) (rate(vigil_agent_bytes_read_total{{{a}}}[{RATE}]))", "{{instance}}")],
            "Bps",
        ),
        8,
        8,
    )
    L.add(
        timeseries(
            "Ship failures/s",
            [(f"sum by (instance, signal, kind) (rate(vigil_agent_ship_failures_total{{{a}}}[{RATE}]))", "{{instance}} {{signal}} {{kind}}")],
            "reqps",
            "Export requests to the collector that failed: retryable ones are retried, permanent ones dropped.",
        ),
        8,
        8,
    )
    L.add(
        timeseries(
            "Lines dropped / split / malformed per second",
            [
                (f"sum by (instance, reason) (rate(vigil_agent_lines_dropped_total{{{a}}}[{RATE}]))", "{{instance}} dropped {{reason}}"),
                (f"sum by (instance) (rate(vigil_agent_lines_split_total{{{a}}}[{RATE}]))", "{{instance}} split"),
                (f"sum by (instance) (rate(vigil_agent_lines_malformed_total{{{a}}}[{RATE}]))", "{{instance}} malformed"),
            ],
            "cps",
        ),
        8,
        8,
    )
    L.add(
        timeseries(
            "Files",
            [
                (f"sum by (instance) (vigil_agent_files_watched{{{a}}})", "{{instance}} watched"),
                (f"sum by (instance) (rate(vigil_agent_files_opened_total{{{a}}}[{RATE}]))", "{{instance}} opened/s"),
                (f"sum by (instance) (rate(vigil_agent_files_closed_total{{{a}}}[{RATE}]))", "{{instance}} closed/s"),
                (f"sum by (instance) (rate(vigil_agent_checkpoint_failures_total{{{a}}}[{RATE}]))", "{{instance}} checkpoint failures/s"),
            ],
            "short",
        ),
        8,
        8,
    )

    L.row("Agent: metrics and scraping")
    L.add(
        timeseries(
            "Metrics shipped / dropped per second",
            [
                (f"sum by (instance) (rate(vigil_agent_metrics_shipped_total{{{a}}}[{RATE}]))", "{{instance}} shipped"),
                (f"sum by (instance, reason) (rate(vigil_agent_metrics_dropped_total{{{a}}}[{RATE}]))", "{{instance}} dropped {{reason}}"),
            ],
            "cps",
            "Resource-metrics entries (one scrape of one target, or one host collection).",
        ),
        8,
        8,
    )
    L.add(
        timeseries(
            "Scrapes / failures per second",
            [
                (f"sum by (instance) (rate(vigil_agent_scrape_scrapes_total{{{a}}}[{RATE}]))", "{{instance}} scrapes"),
                (f"sum by (instance, reason) (rate(vigil_agent_scrape_failures_total{{{a}}}[{RATE}]))", "{{instance}} failed {{reason}}"),
            ],
            "reqps",
        ),
        8,
        8,
    )
    L.add(
        timeseries(
            "Scraped samples / stale markers per second",
            [
                (f"sum by (instance) (rate(vigil_agent_scrape_samples_total{{{a}}}[{RATE}]))", "{{instance}} samples"),
                (f"sum by (instance) (rate(vigil_agent_scrape_stale_markers_total{{{a}}}[{RATE}]))", "{{instance}} stale markers"),
            ],
            "cps",
        ),
        8,
        8,
    )
    t = 'cluster=~"$cluster",namespace=~"$namespace"'
    L.add(
        timeseries(
            "Scrape targets up",
            [(f"min by (job, instance) (up{{{t}}})", "{{job}} {{instance}}")],
            "short",
            "1 when the last scrape of the target succeeded.",
        ),
        8,
        8,
    )
    L.add(
        timeseries(
            "Scrape duration",
            [(f"max by (job, instance) (scrape_duration_seconds{{{t}}})", "{{job}} {{instance}}")],
            "s",
        ),
        8,
        8,
    )
    L.add(
        timeseries(
            "Kubernetes metadata",
            [
                (f"sum by (instance) (vigil_agent_kubernetes_pods{{{a}}})", "{{instance}} pods known"),
                (f"sum by (instance) (rate(vigil_agent_kubernetes_watch_errors_total{{{a}}}[{RATE}]))", "{{instance}} watch errors/s"),
            ],
            "short",
            "Pods of the node known from the API (with kubernetes.enabled) and failed LIST/WATCH requests.",
        ),
        8,
        8,
    )

    variables = [
        datasource_variable(),
        query_variable("cluster", "Cluster", "label_values(vigil_collector_buffered_items_total, cluster)"),
        query_variable(
            "namespace", "Namespace", 'label_values(vigil_collector_buffered_items_total{cluster=~"$cluster"}, namespace)'
        ),
        query_variable(
            "collector",
            "Collector",
            'label_values(vigil_collector_buffered_items_total{cluster=~"$cluster",namespace=~"$namespace"}, instance)',
        ),
        query_variable(
            "agent", "Agent", 'label_values(vigil_agent_lines_read_total{cluster=~"$cluster",namespace=~"$namespace"}, instance)'
        ),
        query_variable("signal", "Signal", "label_values(vigil_collector_buffered_items_total, signal)"),
    ]
    return dashboard(
        "vigil-pipeline",
        "Vigil / Pipeline",
        "Vigil's own health: what the collectors received, buffered, exported, retried, dropped and dead-lettered, "
        "per signal; the buffers; and the agents' tailing, shipping and scraping.",
        L,
        variables,
    )


def nodes():
    n = 'job="node",cluster=~"$cluster",instance=~"$instance"'
    L = Layout()
    L.row("Overview")
    L.add(
        stat(
            "CPU busy",
            f'1 - avg(rate(node_cpu_seconds_total{{{n},mode="idle"}}[{RATE}]))',
            "percentunit",
            "Share of CPU time not idle, over the selected nodes.",
            [{"color": "green", "value": None}, {"color": "orange", "value": 0.8}, {"color": "red", "value": 0.95}],
        ),
        4,
        4,
    )
    L.add(
        stat(
            "Memory used",
            f"1 - sum(node_memory_MemAvailable_bytes{{{n}}}) / sum(node_memory_MemTotal_bytes{{{n}}})",
            "percentunit",
            "1 − MemAvailable / MemTotal.",
            [{"color": "green", "value": None}, {"color": "orange", "value": 0.8}, {"color": "red", "value": 0.95}],
        ),
        4,
        4,
    )
    L.add(
        stat(
            "Load1 per CPU",
            f'max(node_load1{{{n}}} / on (instance) count by (instance) (node_cpu_seconds_total{{{n},mode="idle"}}))',
            "short",
            "The busiest node's one-minute load average divided by its CPU count.",
            [{"color": "green", "value": None}, {"color": "orange", "value": 1}, {"color": "red", "value": 2}],
            decimals=2,
        ),
        4,
        4,
    )
    L.add(
        stat(
            "Fullest file system",
            f"max(1 - node_filesystem_avail_bytes{{{n}}} / node_filesystem_size_bytes{{{n}}})",
            "percentunit",
            "Highest share used of any file system (space available to non-root users).",
            [{"color": "green", "value": None}, {"color": "orange", "value": 0.8}, {"color": "red", "value": 0.9}],
        ),
        4,
        4,
    )
    L.add(
        stat(
            "Nodes",
            f"count(node_time_seconds{{{n}}})",
            "short",
            "Nodes reporting host metrics.",
        ),
        4,
        4,
    )
    L.add(
        stat(
            "Shortest uptime",
            f"min(node_time_seconds{{{n}}} - node_boot_time_seconds{{{n}}})",
            "s",
        ),
        4,
        4,
    )

    L.row("CPU and memory")
    L.add(
        timeseries(
            "CPU by mode",
            [(f'avg by (instance, mode) (rate(node_cpu_seconds_total{{{n},mode!="idle"}}[{RATE}]))', "{{instance}} {{mode}}")],
            "percentunit",
            "Average over each node's CPUs; idle left out.",
            stack=True,
        ),
        12,
        8,
    )
    L.add(
        timeseries(
            "Load average",
            [
                (f"node_load1{{{n}}}", "{{instance}} 1m"),
                (f"node_load5{{{n}}}", "{{instance}} 5m"),
                (f"node_load15{{{n}}}", "{{instance}} 15m"),
            ],
            "short",
        ),
        12,
        8,
    )
    L.add(
        timeseries(
            "Memory",
            [
                (f"node_memory_MemTotal_bytes{{{n}}}", "{{instance}} total"),
                (f"node_memory_MemTotal_bytes{{{n}}} - node_memory_MemAvailable_bytes{{{n}}}", "{{instance}} used"),
                (f"node_memory_Cached_bytes{{{n}}} + node_memory_Buffers_bytes{{{n}}}", "{{instance}} cache + buffers"),
                (f"node_memory_SwapTotal_bytes{{{n}}} - node_memory_SwapFree_bytes{{{n}}}", "{{instance}} swap used"),
            ],
            "bytes",
        ),
        12,
        8,
    )
    L.add(
        timeseries(
            "Processes and context switches",
            [
                (f"node_procs_running{{{n}}}", "{{instance}} running"),
                (f"node_procs_blocked{{{n}}}", "{{instance}} blocked"),
                (f"rate(node_forks_total{{{n}}}[{RATE}])", "{{instance}} forks/s"),
                (f"rate(node_context_switches_total{{{n}}}[{RATE}]) / 1000", "{{instance}} context switches/ms"),
            ],
            "short",
        ),
        12,
        8,
    )

    L.row("Disks and file systems")
    L.add(
        timeseries(
            "File system space used",
            [
                (
                    f"1 - node_filesystem_avail_bytes{{{n}}} / node_filesystem_size_bytes{{{n}}}",
                    "{{instance}} {{mountpoint}}",
                )
            ],
            "percentunit",
        ),
        8,
        8,
    )
    L.add(
        timeseries(
            "File system inodes used",
            [
                (
                    f"1 - node_filesystem_files_free{{{n}}} / (node_filesystem_files{{{n}}} > 0)",
                    "{{instance}} {{mountpoint}}",
                )
            ],
            "percentunit",
        ),
        8,
        8,
    )
    L.add(
        timeseries(
            "Read-only file systems",
            [(f"sum by (instance) (node_filesystem_readonly{{{n}}})", "{{instance}}")],
            "short",
        ),
        8,
        8,
    )
    L.add(
        timeseries(
            "Disk throughput",
            [
                (f"rate(node_disk_read_bytes_total{{{n}}}[{RATE}])", "{{instance}} {{device}} read"),
                (f"rate(node_disk_written_bytes_total{{{n}}}[{RATE}])", "{{instance}} {{device}} written"),
            ],
            "Bps",
        ),
        8,
        8,
    )
    L.add(
        timeseries(
            "Disk IOPS",
            [
                (f"rate(node_disk_reads_completed_total{{{n}}}[{RATE}])", "{{instance}} {{device}} reads"),
                (f"rate(node_disk_writes_completed_total{{{n}}}[{RATE}])", "{{instance}} {{device}} writes"),
            ],
            "iops",
        ),
        8,
        8,
    )
    L.add(
        timeseries(
            "Disk busy and latency",
            [
                (f"rate(node_disk_io_time_seconds_total{{{n}}}[{RATE}])", "{{instance}} {{device}} busy"),
                (
                    f"rate(node_disk_read_time_seconds_total{{{n}}}[{RATE}]) / clamp_min(rate(node_disk_reads_completed_total{{{n}}}[{RATE}]), 1e-9)",
                    "{{instance}} {{device}} read latency",
                ),
                (
                    f"rate(node_disk_write_time_seconds_total{{{n}}}[{RATE}]) / clamp_min(rate(node_disk_writes_completed_total{{{n}}}[{RATE}]), 1e-9)",
                    "{{instance}} {{device}} write latency",
                ),
            ],
            "s",
            "Busy: seconds doing I/O per second (1 = saturated). Latency: seconds per completed request (0 while idle).",
        ),
        8,
        8,
    )

    L.row("Network")
    L.add(
        timeseries(
            "Network traffic",
            [
                (f'rate(node_network_receive_bytes_total{{{n},device!="lo"}}[{RATE}])', "{{instance}} {{device}} in"),
                (f'rate(node_network_transmit_bytes_total{{{n},device!="lo"}}[{RATE}])', "{{instance}} {{device}} out"),
            ],
            "Bps",
        ),
        8,
        8,
    )
    L.add(
        timeseries(
            "Network packets",
            [
                (f"rate(node_network_receive_packets_total{{{n}}}[{RATE}])", "{{instance}} {{device}} in"),
                (f"rate(node_network_transmit_packets_total{{{n}}}[{RATE}])", "{{instance}} {{device}} out"),
            ],
            "pps",
        ),
        8,
        8,
    )
    L.add(
        timeseries(
            "Network errors and drops",
            [
                (f"rate(node_network_receive_errs_total{{{n}}}[{RATE}])", "{{instance}} {{device}} receive errors"),
                (f"rate(node_network_transmit_errs_total{{{n}}}[{RATE}])", "{{instance}} {{device}} transmit errors"),
                (f"rate(node_network_receive_drop_total{{{n}}}[{RATE}])", "{{instance}} {{device}} receive drops"),
                (f"rate(node_network_transmit_drop_total{{{n}}}[{RATE}])", "{{instance}} {{device}} transmit drops"),
            ],
            "pps",
        ),
        8,
        8,
    )

    variables = [
        datasource_variable(),
        query_variable("cluster", "Cluster", 'label_values(node_time_seconds{job="node"}, cluster)'),
        query_variable("instance", "Node", 'label_values(node_time_seconds{job="node",cluster=~"$cluster"}, instance)'),
    ]
    return dashboard(
        "vigil-nodes",
        "Vigil / Nodes",
        "Host metrics the Vigil agent reads from /proc and statvfs on every node, under node_exporter's names (job=\"node\").",
        L,
        variables,
    )


def anomalies():
    q = 'query=~"$query"'
    L = Layout()
    L.row("Overview")
    L.add(
        stat(
            "Alerts firing",
            f"sum(vigil_anomaly_alerts_firing{{{q}}}) or vector(0)",
            "short",
            "Alerts the anomaly service has sent to Alertmanager and not resolved.",
            red_above(1),
        ),
        6,
        4,
    )
    L.add(stat("Series scored", f"sum(vigil_anomaly_series{{{q}}})", "short", "Series the selected queries return."), 6, 4)
    L.add(
        stat(
            "Points scored",
            f"sum(rate(vigil_anomaly_points_scored_total{{{q}}}[{RATE}]))",
            "cps",
            "Points scored per second.",
        ),
        6,
        4,
    )
    L.add(
        stat(
            "Query errors in range",
            f"sum(increase(vigil_anomaly_query_errors_total{{{q}}}[$__range])) or vector(0)",
            "short",
            "Failed reads from VictoriaMetrics.",
            red_above(1),
        ),
        6,
        4,
    )

    # One row per query (repeated over the `query` variable): its expected band and its
    # score. Upper and lower are dotted lines, the
    # expected value dashed (Grafana's fillBelowTo pairs one field with one field, which
    # does not work for a query that returns many series, so the band is not shaded).
    L.row("$query")
    L.panels[-1]["repeat"] = "query"
    band = timeseries(
        "$query: expected band",
        [
            ('anomaly_upper{query=~"$query"}', "upper {{query}}"),
            ('anomaly_lower{query=~"$query"}', "lower {{query}}"),
            ('anomaly_expected{query=~"$query"}', "expected {{query}}"),
        ],
        "short",
        "What each series of the query was expected to be (dashed) and the band outside which it is "
        "anomalous (upper and lower). The tooltip shows each series' labels.",
        min0=False,
    )
    for target in band["targets"]:
        # Every label of the input series, not just the query name.
        target["legendFormat"] = "__auto"
    band["fieldConfig"]["overrides"] = [
        {
            "matcher": {"id": "byFrameRefID", "options": "A"},
            "properties": [
                {"id": "custom.fillOpacity", "value": 0},
                {"id": "custom.lineStyle", "value": {"fill": "dot", "dash": [0, 10]}},
            ],
        },
        {
            "matcher": {"id": "byFrameRefID", "options": "B"},
            "properties": [
                {"id": "custom.fillOpacity", "value": 0},
                {"id": "custom.lineStyle", "value": {"fill": "dot", "dash": [0, 10]}},
            ],
        },
        {
            "matcher": {"id": "byFrameRefID", "options": "C"},
            "properties": [
                {"id": "custom.fillOpacity", "value": 0},
                {"id": "custom.lineWidth", "value": 2},
                {"id": "custom.lineStyle", "value": {"fill": "dash", "dash": [10, 10]}},
            ],
        },
    ]
    band["options"]["legend"]["displayMode"] = "list"
    L.add(band, 16, 9)
    score = timeseries(
        "$query: score",
        [('anomaly_score{query=~"$query"}', "__auto")],
        "short",
        "Anomaly score per series; 1.0 is the calibrated boundary (the query's threshold may differ).",
        overrides=[],
    )
    score["fieldConfig"]["defaults"]["custom"]["thresholdsStyle"] = {"mode": "line"}
    score["fieldConfig"]["defaults"]["thresholds"] = {
        "mode": "absolute",
        "steps": [{"color": "transparent", "value": None}, {"color": "red", "value": 1}],
    }
    L.add(score, 8, 9)

    L.row("Anomaly service")
    L.add(
        timeseries(
            "Points scored/s",
            [(f"sum by (query) (rate(vigil_anomaly_points_scored_total{{{q}}}[{RATE}]))", "{{query}}")],
            "cps",
        ),
        8,
        8,
    )
    L.add(
        timeseries(
            "Series per query",
            [(f"sum by (query) (vigil_anomaly_series{{{q}}})", "{{query}}")],
            "short",
        ),
        8,
        8,
    )
    L.add(
        timeseries(
            "Alerts firing",
            [(f"sum by (query) (vigil_anomaly_alerts_firing{{{q}}})", "{{query}}")],
            "short",
        ),
        8,
        8,
    )
    L.add(
        timeseries(
            "Evaluation duration",
            [
                (
                    f"histogram_quantile(0.5, sum by (le, query) (rate(vigil_anomaly_evaluation_duration_seconds_bucket{{{q}}}[{RATE}])))",
                    "{{query}} p50",
                ),
                (
                    f"histogram_quantile(0.99, sum by (le, query) (rate(vigil_anomaly_evaluation_duration_seconds_bucket{{{q}}}[{RATE}])))",
                    "{{query}} p99",
                ),
            ],
            "s",
            "One evaluation of a query: read, score, write back.",
        ),
        12,
        8,
    )
    L.add(
        timeseries(
            "Query errors/s",
            [(f"sum by (query) (rate(vigil_anomaly_query_errors_total{{{q}}}[{RATE}]))", "{{query}}")],
            "reqps",
            "Failed reads from VictoriaMetrics.",
        ),
        12,
        8,
    )
    L.add(
        timeseries(
            "Anomalous points/s",
            [(f"sum by (query) (rate(vigil_anomaly_points_anomalous_total{{{q}}}[{RATE}]))", "{{query}}")],
            "cps",
            "Points scored above the query's threshold.",
        ),
        8,
        8,
    )
    L.add(
        timeseries(
            "Series not scored or not alerted",
            [
                (f"sum by (query) (vigil_anomaly_series_over_limit{{{q}}})", "{{query}} over max_series"),
                (f"sum by (query) (vigil_anomaly_alerts_suppressed{{{q}}})", "{{query}} beyond max_alerts"),
            ],
            "short",
            "Series beyond max_series are ignored; anomalous series beyond max_alerts are summarised in one overflow alert.",
        ),
        8,
        8,
    )
    L.add(
        timeseries(
            "Sink failures/s",
            [("sum by (sink) (rate(vigil_anomaly_sink_failures_total[$__rate_interval]))", "{{sink}}")],
            "reqps",
            "Failed requests to the write-back, Alertmanager, Grafana or the state store.",
        ),
        8,
        8,
    )
    L.add(
        timeseries(
            "Written back and state",
            [
                ("sum(rate(vigil_anomaly_samples_written_total[$__rate_interval]))", "samples written/s"),
                ("max(time() - (vigil_anomaly_last_snapshot_timestamp_seconds > 0))", "seconds since the last state snapshot"),
                ("sum(rate(vigil_anomaly_snapshot_failures_total[$__rate_interval]))", "snapshot failures/s"),
                (f"sum(increase(vigil_anomaly_warmups_total{{{q}}}[$__range]))", "warm-ups from history in range"),
            ],
            "short",
            "The service's output and its detector state snapshots (a restart with a recent snapshot is not a cold start).",
        ),
        24,
        8,
    )

    annotations = [
        {
            "name": "Anomaly alerts (Grafana annotations)",
            "datasource": GRAFANA,
            "enable": True,
            "hide": False,
            "iconColor": "red",
            "target": {"type": "tags", "tags": ["vigil"], "matchAny": False, "limit": 500},
        },
        {
            "name": "Alerts firing (service metric)",
            "datasource": PROM,
            "enable": False,
            "hide": False,
            "iconColor": "orange",
            "expr": f"vigil_anomaly_alerts_firing{{{q}}} > 0",
            "step": "60s",
            "titleFormat": "{{query}}: anomaly alerts firing",
            "textFormat": "{{query}}",
            "tagKeys": "query",
            "useValueForTime": False,
        },
    ]
    variables = [
        datasource_variable(),
        query_variable("query", "Query", "label_values(anomaly_score, query)"),
    ]
    return dashboard(
        "vigil-anomalies",
        "Vigil / Anomalies",
        "What vigil-anomaly sees: per query, the expected band and the score of every series it returns, "
        "the alerts it raised (Grafana annotations tagged vigil), and the service's own health.",
        L,
        variables,
        annotations=annotations,
    )


def logs_traces():
    L = Layout()
    selector = 'service_name=~"$service", k8s_namespace_name=~"$namespace"'
    L.add(
        {
            "type": "timeseries",
            "title": "Log lines/s",
            "description": "Lines per second by service, from Loki.",
            "datasource": LOKI,
            "fieldConfig": {
                "defaults": {"unit": "cps", "min": 0, "custom": {"drawStyle": "bars", "fillOpacity": 60, "stacking": {"mode": "normal", "group": "A"}}},
                "overrides": [],
            },
            "options": {"legend": {"displayMode": "list", "placement": "bottom"}, "tooltip": {"mode": "multi"}},
            "targets": [
                {
                    "datasource": LOKI,
                    "expr": f'sum by (service_name) (rate({{{selector}}} |~ "$search" [$__auto]))',
                    "legendFormat": "{{service_name}}",
                    "queryType": "range",
                    "refId": "A",
                }
            ],
        },
        24,
        6,
    )
    L.add(
        {
            "type": "logs",
            "title": "Logs",
            "description": "Log records as Vigil pushed them. Records with a trace id carry it as structured "
            "metadata `trace_id`; the Loki datasource's derived field links it to Tempo.",
            "datasource": LOKI,
            "options": {
                "showTime": True,
                "showLabels": False,
                "showCommonLabels": False,
                "wrapLogMessage": True,
                "prettifyLogMessage": False,
                "enableLogDetails": True,
                "dedupStrategy": "none",
                "sortOrder": "Descending",
            },
            "targets": [
                {
                    "datasource": LOKI,
                    "expr": f'{{{selector}}} |~ "$search"',
                    "queryType": "range",
                    "refId": "A",
                }
            ],
        },
        24,
        12,
    )
    L.add(
        {
            "type": "table",
            "title": "Traces",
            "description": "Tempo search for the selected service. A trace id opens the trace; from a span, "
            "“Logs for this span” queries Loki (the Tempo datasource's trace-to-logs link).",
            "datasource": TEMPO,
            "fieldConfig": {"defaults": {"unit": "none"}, "overrides": []},
            "options": {"showHeader": True},
            "targets": [
                {
                    "datasource": TEMPO,
                    "queryType": "traceql",
                    "query": '{resource.service.name=~"$service"}',
                    "limit": 50,
                    "tableType": "traces",
                    "refId": "A",
                }
            ],
        },
        24,
        10,
    )
    variables = [
        {
            "name": "service",
            "label": "Service",
            "type": "query",
            "datasource": LOKI,
            "definition": "label_values(service_name)",
            "query": {"label": "service_name", "refId": "LokiVariableQueryEditor-VariableQuery", "stream": "", "type": 1},
            "refresh": 2,
            "sort": 1,
            "multi": True,
            "includeAll": True,
            "allValue": ".+",
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
            "hide": 0,
            "regex": "",
            "options": [],
        },
        {
            "name": "namespace",
            "label": "Namespace",
            "type": "query",
            "datasource": LOKI,
            "definition": "label_values(k8s_namespace_name)",
            "query": {"label": "k8s_namespace_name", "refId": "LokiVariableQueryEditor-VariableQuery", "stream": "", "type": 1},
            "refresh": 2,
            "sort": 1,
            "multi": True,
            "includeAll": True,
            "allValue": ".*",
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
            "hide": 0,
            "regex": "",
            "options": [],
        },
        {
            "name": "search",
            "label": "Line contains (regex)",
            "type": "textbox",
            "query": "",
            "current": {"text": "", "value": ""},
            "hide": 0,
            "options": [],
        },
    ]
    return dashboard(
        "vigil-logs-traces",
        "Vigil / Logs & traces",
        "Logs in Loki and traces in Tempo, as Vigil delivered them, linked by trace id both ways.",
        L,
        variables,
    )


def main():
    for name, board in [
        ("pipeline", pipeline()),
        ("nodes", nodes()),
        ("anomalies", anomalies()),
        ("logs-traces", logs_traces()),
    ]:
        path = os.path.join(HERE, f"{name}.json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump(board, f, indent=2, ensure_ascii=False)
            f.write("\n")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
