{{/* Names, labels and shared pieces of the chart. */}}

{{- define "vigil.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "vigil.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "vigil.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "vigil.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* The name of a component's objects: <fullname>-<component>. */}}
{{- define "vigil.component" -}}
{{- printf "%s-%s" (include "vigil.fullname" .root) .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "vigil.selectorLabels" -}}
app.kubernetes.io/name: {{ include "vigil.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "vigil.labels" -}}
{{ include "vigil.selectorLabels" . }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "vigil.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* An env var from a Secret key, when the secret's name is set: (list NAME secretRef). */}}
{{- define "vigil.secretEnv" -}}
{{- $name := index . 0 -}}
{{- $ref := index . 1 -}}
{{- if $ref.name }}
- name: {{ $name }}
  valueFrom:
    secretKeyRef: { name: {{ $ref.name | quote }}, key: {{ $ref.key | quote }} }
{{- end }}
{{- end -}}

{{/* The hardened container security context of the collector and the anomaly service. */}}
{{- define "vigil.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
readOnlyRootFilesystem: true
allowPrivilegeEscalation: false
capabilities: { drop: [ALL] }
seccompProfile: { type: RuntimeDefault }
{{- end -}}

{{- define "vigil.probes" -}}
livenessProbe:
  httpGet: { path: /healthz, port: admin }
  periodSeconds: 10
  failureThreshold: 6
readinessProbe:
  httpGet: { path: /readyz, port: admin }
  periodSeconds: 5
  failureThreshold: 3
{{- end -}}

{{/* Base URL without a trailing slash. */}}
{{- define "vigil.base" -}}
{{- trimSuffix "/" . -}}
{{- end -}}

{{/* host:port of a URL (credentials and path dropped). */}}
{{- define "vigil.hostPort" -}}
{{- regexReplaceAll "^[a-z]+://([^@/]*@)?([^/?]+).*$" . "${2}" -}}
{{- end -}}

{{- define "vigil.collector.workload" -}}
{{- if and (eq .Values.collector.buffer.kind "disk") .Values.collector.buffer.disk.persistence.enabled -}}
StatefulSet
{{- else -}}
Deployment
{{- end -}}
{{- end -}}

{{/* The collector's config (config/collector.yaml), from the values. */}}
{{- define "vigil.collector.config" -}}
{{- $c := .Values.collector -}}
{{- $b := $c.buffer -}}
{{- $buffer := dict "kind" $b.kind -}}
{{- if eq $b.kind "disk" -}}
{{- $_ := set $buffer "disk" (dict "path" "/var/lib/vigil-collector/buffer" "max_bytes" $b.disk.maxBytes "fsync" $b.disk.fsync) -}}
{{- else if eq $b.kind "redis" -}}
{{- $_ := set $buffer "redis" (dict "url" $b.redis.url "stream_prefix" $b.redis.streamPrefix "group" $b.redis.group "max_len" (int64 $b.redis.maxLen) "consumer" "${POD_NAME}") -}}
{{- else if eq $b.kind "nats" -}}
{{- $nats := dict "url" $b.nats.url "stream" $b.nats.stream "subject_prefix" $b.nats.subjectPrefix "max_bytes" $b.nats.maxBytes "replicas" (int64 $b.nats.replicas) -}}
{{- if $b.nats.tokenSecret.name }}{{ $_ := set $nats "token" "${NATS_TOKEN}" }}{{ end -}}
{{- $_ := set $buffer "nats" $nats -}}
{{- end -}}
{{- $be := .Values.backends -}}
{{- $grpc := dict "listen" (printf "0.0.0.0:%d" (int $c.service.grpcPort)) -}}
{{- $http := dict "listen" (printf "0.0.0.0:%d" (int $c.service.httpPort)) -}}
{{- if and $c.tls.clientCaSecret.name (not $c.tls.enabled) -}}
{{- fail "collector.tls.clientCaSecret needs collector.tls.enabled: client certificates are asked for in the TLS handshake" -}}
{{- end -}}
{{- if $c.tls.enabled -}}
{{- $tls := dict "cert_file" "/etc/vigil-tls/tls.crt" "key_file" "/etc/vigil-tls/tls.key" -}}
{{- if $c.tls.clientCaSecret.name }}{{ $_ := set $tls "client_ca_file" "/etc/vigil-client-ca/ca.crt" }}{{ end -}}
{{- $_ := set $grpc "tls" $tls -}}
{{- $_ := set $http "tls" (deepCopy $tls) -}}
{{- end -}}
{{- $config := dict
  "receivers" (dict "otlp" (dict "grpc" $grpc "http" $http))
  "buffer" $buffer
  "exporters" (dict
    "victoriametrics" (dict "endpoint" (printf "%s/api/v1/write" (include "vigil.base" $be.victoriametrics.url)) "headers" $be.victoriametrics.headers)
    "loki" (dict "endpoint" (printf "%s/loki/api/v1/push" (include "vigil.base" $be.loki.url)) "headers" $be.loki.headers)
    "tempo" (dict "endpoint" $be.tempo.url "protocol" $be.tempo.protocol "headers" $be.tempo.headers))
  "admin" (dict "listen" (printf "0.0.0.0:%d" (int $c.service.adminPort)))
-}}
{{- toYaml (mustMergeOverwrite $config (deepCopy $c.config)) -}}
{{- end -}}

{{/* Whether the agent speaks https to the collector. */}}
{{- define "vigil.agent.tls" -}}
{{- or .Values.agent.tls.enabled .Values.collector.tls.enabled -}}
{{- end -}}

{{/* The Secret (name, key) holding the CA the agent trusts for the collector. */}}
{{- define "vigil.agent.caSecret" -}}
{{- if .Values.agent.tls.caSecret.name -}}
{{- toYaml .Values.agent.tls.caSecret -}}
{{- else -}}
{{- toYaml (dict "name" .Values.collector.tls.secretName "key" "ca.crt") -}}
{{- end -}}
{{- end -}}

{{/* The agent's config (config/agent.yaml), from the values. */}}
{{- define "vigil.agent.config" -}}
{{- $a := .Values.agent -}}
{{- $endpoint := $a.collectorEndpoint -}}
{{- if not $endpoint -}}
{{- $endpoint = printf "%s://%s.%s.svc:%d" (ternary "https" "http" (include "vigil.agent.tls" . | eq "true")) (include "vigil.component" (dict "root" . "component" "collector")) .Release.Namespace (int .Values.collector.service.grpcPort) -}}
{{- end -}}
{{- $collector := dict "endpoint" $endpoint "compression" "zstd" -}}
{{- if and $a.tls.clientCertSecret (ne (include "vigil.agent.tls" .) "true") -}}
{{- fail "agent.tls.clientCertSecret needs TLS to the collector: agent.tls.enabled or collector.tls.enabled" -}}
{{- end -}}
{{- if eq (include "vigil.agent.tls" .) "true" -}}
{{- $tls := dict "ca_file" "/etc/vigil-ca/ca.crt" -}}
{{- if $a.tls.serverName }}{{ $_ := set $tls "server_name" $a.tls.serverName }}{{ end -}}
{{- if $a.tls.clientCertSecret -}}
{{- $_ := set $tls "cert_file" "/etc/vigil-client-tls/tls.crt" -}}
{{- $_ := set $tls "key_file" "/etc/vigil-client-tls/tls.key" -}}
{{- end -}}
{{- $_ := set $collector "tls" $tls -}}
{{- end -}}
{{- if $a.bearerTokenSecret.name }}{{ $_ := set $collector "bearer_token" "${VIGIL_TOKEN}" }}{{ end -}}
{{- $config := dict
  "collector" $collector
  "state_dir" "/var/lib/vigil-agent"
  "logs" (list (dict "include" $a.logs.include "exclude" $a.logs.exclude "format" "cri" "start_at" $a.logs.startAt))
  "scrape" (dict "kubernetes_pods" (dict "enabled" $a.kubernetes.scrapePods))
  "host_metrics" (dict "enabled" $a.hostMetrics.enabled "interval" $a.hostMetrics.interval "root" "/host")
  "kubernetes" (dict "enabled" true "node_name" "${NODE_NAME}" "pod_labels" $a.kubernetes.podLabels)
  "admin" (dict "listen" (printf "0.0.0.0:%d" (int $a.adminPort)))
-}}
{{- toYaml (mustMergeOverwrite $config (deepCopy $a.config)) -}}
{{- end -}}

{{/* The anomaly service's config, from the values. */}}
{{- define "vigil.anomaly.config" -}}
{{- $n := .Values.anomaly -}}
{{- $be := .Values.backends -}}
{{- $vm := include "vigil.base" $be.victoriametrics.url -}}
{{- $config := dict
  "source" (dict "victoriametrics" $vm "headers" $be.victoriametrics.headers)
  "interval" $n.interval
  "queries" $n.queries
  "writeback" (dict "endpoint" (printf "%s/api/v1/import" $vm) "headers" $be.victoriametrics.headers)
  "admin" (dict "listen" (printf "0.0.0.0:%d" (int $n.adminPort)))
-}}
{{- if $be.alertmanager.url }}{{ $_ := set $config "alertmanager" (dict "endpoint" $be.alertmanager.url) }}{{ end -}}
{{- if $be.grafana.url -}}
{{- $g := dict "endpoint" $be.grafana.url "dashboard_uid" $be.grafana.dashboardUid -}}
{{- if $be.grafana.datasourceUid }}{{ $_ := set $g "datasource_uid" $be.grafana.datasourceUid }}{{ end -}}
{{- if $be.grafana.tokenSecret.name }}{{ $_ := set $g "token" "${GRAFANA_TOKEN}" }}{{ end -}}
{{- $_ := set $config "grafana" $g -}}
{{- end -}}
{{- if $n.state.redis.url -}}
{{- $_ := set $config "state" (dict "redis" $n.state.redis.url) -}}
{{- else -}}
{{- $_ := set $config "state" (dict "path" "/var/lib/vigil-anomaly/state.bin") -}}
{{- end -}}
{{- toYaml (mustMergeOverwrite $config (deepCopy $n.config)) -}}
{{- end -}}
