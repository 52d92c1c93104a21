{{- define "traceo-sampler.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "traceo-sampler.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "traceo-sampler.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{ include "traceo-sampler.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: {{ .Values.mode }}
{{- end -}}

{{- define "traceo-sampler.selectorLabels" -}}
app.kubernetes.io/name: {{ include "traceo-sampler.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "traceo-sampler.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "traceo-sampler.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "traceo-sampler.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/*
The sampler's config file: .Values.config with the parts the chart owns filled in
from the mode. A sidecar listens on the pod's loopback only; the other shapes on
every interface of the pod.
*/}}
{{- define "traceo-sampler.config" -}}
{{- $mode := .Values.mode -}}
{{- $host := ternary "127.0.0.1" "0.0.0.0" (eq $mode "sidecar") -}}
{{- $cfg := deepCopy .Values.config -}}
{{- $otlp := dict "grpc" (dict "endpoint" (printf "%s:%d" $host (int .Values.ports.grpc))) "http" (dict "endpoint" (printf "%s:%d" $host (int .Values.ports.http))) -}}
{{- if eq $mode "consumer-group" -}}
{{- $kafka := mustMergeOverwrite (dict "brokers" .Values.kafka.brokers "topic" .Values.kafka.topic "group_id" .Values.kafka.groupId) (deepCopy .Values.kafka.receiver) -}}
{{- $_ := set $cfg "receivers" (dict "kafka" $kafka) -}}
{{- else -}}
{{- $_ := set $cfg "receivers" (dict "otlp" $otlp) -}}
{{- end -}}
{{- if eq $mode "router" -}}
{{- $producer := mustMergeOverwrite (dict "brokers" .Values.kafka.brokers "topic" .Values.kafka.topic) (deepCopy .Values.kafka.producer) -}}
{{- $_ := set $cfg "exporters" (dict "kafka" $producer) -}}
{{- end -}}
{{- $_ := set $cfg "admin" (mustMergeOverwrite (default (dict) (get $cfg "admin")) (dict "endpoint" (printf "0.0.0.0:%d" (int .Values.ports.admin)))) -}}
{{- if eq $mode "sidecar" -}}
{{- $_ := set $cfg.admin "endpoint" (printf "127.0.0.1:%d" (int .Values.ports.admin)) -}}
{{- $sd := .Values.sidecar.sharedDecisions -}}
{{- if $sd.enabled -}}
{{- $sampler := default (dict) (get $cfg "sampler") -}}
{{- $shared := mustMergeOverwrite (dict "brokers" .Values.kafka.brokers "topic" $sd.topic "hold" $sd.hold) (default (dict) (get $sampler "shared_decisions")) -}}
{{- $_ := set $sampler "shared_decisions" $shared -}}
{{- $_ := set $cfg "sampler" $sampler -}}
{{- end -}}
{{- end -}}
{{- if and (eq $mode "gateway") .Values.gateway.wal.enabled -}}
{{- /* the write-ahead log on the data volume: kill -9 or an OOM kill of the container loses no acknowledged span (README "Crash safety") */ -}}
{{- $w := .Values.gateway.wal -}}
{{- $sampler := default (dict) (get $cfg "sampler") -}}
{{- $wal := mustMergeOverwrite (dict "dir" "/var/lib/traceo-sampler/wal" "fsync" $w.fsync "max_bytes" (int64 $w.maxBytes)) (default (dict) (get $sampler "wal")) -}}
{{- $_ := set $sampler "wal" $wal -}}
{{- $_ := set $cfg "sampler" $sampler -}}
{{- end -}}
{{- $svc := default (dict) (get $cfg "service") -}}
{{- $_ := set $svc "shutdown_timeout" (printf "%ds" (int .Values.shutdownTimeoutSeconds)) -}}
{{- $_ := set $svc "workers" (int .Values.workers) -}}
{{- $_ := set $cfg "service" $svc -}}
{{- toYaml $cfg -}}
{{- end -}}

{{/* Pod memory: buffer bound + export queues + 64 MiB per worker + 128 MiB headroom. */}}
{{- define "traceo-sampler.memory" -}}
{{- if .Values.resources.memory -}}
{{- .Values.resources.memory -}}
{{- else -}}
{{- $buffer := int (default 1024 .Values.config.sampler.memory_limit_mib) -}}
{{- if eq .Values.mode "router" -}}{{- $buffer = 0 -}}{{- end -}}
{{- $queue := 0 -}}
{{- if ne .Values.mode "router" -}}
{{- range $name, $exp := (default (dict) .Values.config.exporters) -}}
{{- $queue = add $queue (div (int (default 268435456 $exp.queue_max_bytes)) 1048576) -}}
{{- end -}}
{{- end -}}
{{- printf "%dMi" (add $buffer $queue (mul 64 (int .Values.workers)) 128) -}}
{{- end -}}
{{- end -}}

{{- define "traceo-sampler.resources" -}}
requests:
  cpu: {{ ternary .Values.sidecar.cpuRequest .Values.resources.cpu.request (eq .Values.mode "sidecar") | quote }}
  memory: {{ include "traceo-sampler.memory" . }}
limits:
  {{- with .Values.resources.cpu.limit }}
  cpu: {{ . | quote }}
  {{- end }}
  memory: {{ include "traceo-sampler.memory" . }}
{{- end -}}

{{- define "traceo-sampler.gracePeriod" -}}
{{- add (int .Values.shutdownTimeoutSeconds) (int .Values.preStopSleepSeconds) 15 -}}
{{- end -}}

{{/* The sampler container; also the sidecar (mode: sidecar), with loopback probes. */}}
{{- define "traceo-sampler.container" -}}
name: traceo-sampler
image: {{ include "traceo-sampler.image" . }}
imagePullPolicy: {{ .Values.image.pullPolicy }}
args: ["serve", "-c", "/etc/traceo-sampler/config.yaml"]
{{- if ne .Values.mode "consumer-group" }}
ports:
  - {name: otlp-grpc, containerPort: {{ .Values.ports.grpc }}, protocol: TCP}
  - {name: otlp-http, containerPort: {{ .Values.ports.http }}, protocol: TCP}
  - {name: admin, containerPort: {{ .Values.ports.admin }}, protocol: TCP}
{{- else }}
ports:
  - {name: admin, containerPort: {{ .Values.ports.admin }}, protocol: TCP}
{{- end }}
env:
  - {name: TRACEO_SAMPLER_HEALTH_URL, value: "http://127.0.0.1:{{ .Values.ports.admin }}/healthz"}
  {{- with .Values.extraEnv }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- if eq .Values.mode "sidecar" }}
{{- /* the sidecar's admin listens on the pod's loopback: probe it with the image's own check */}}
startupProbe:
  exec: {command: ["/usr/local/bin/traceo-healthcheck"]}
  periodSeconds: 1
  failureThreshold: 30
livenessProbe:
  exec: {command: ["/usr/local/bin/traceo-healthcheck"]}
  {{- toYaml .Values.probes.liveness | nindent 2 }}
{{- else }}
livenessProbe:
  httpGet: {path: /healthz, port: admin}
  {{- toYaml .Values.probes.liveness | nindent 2 }}
readinessProbe:
  httpGet: {path: /readyz, port: admin}
  {{- toYaml .Values.probes.readiness | nindent 2 }}
{{- end }}
{{- if gt (int .Values.preStopSleepSeconds) 0 }}
lifecycle:
  preStop:
    exec: {command: ["/bin/sleep", "{{ .Values.preStopSleepSeconds }}"]}
{{- end }}
resources:
  {{- include "traceo-sampler.resources" . | nindent 2 }}
securityContext:
  runAsNonRoot: true
  runAsUser: 10001
  runAsGroup: 10001
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  capabilities: {drop: [ALL]}
volumeMounts:
  - {name: config, mountPath: /etc/traceo-sampler, readOnly: true}
  - {name: data, mountPath: /var/lib/traceo-sampler}
  - {name: tmp, mountPath: /tmp}
{{- end -}}

{{- define "traceo-sampler.volumes" -}}
- name: config
  configMap: {name: {{ include "traceo-sampler.fullname" . }}-config}
- name: data
  emptyDir: {}
- name: tmp
  emptyDir: {medium: Memory, sizeLimit: 16Mi}
{{- end -}}
