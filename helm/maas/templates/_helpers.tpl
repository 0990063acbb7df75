{{/*
Chart name, truncated to the 63 characters a label value allows.
*/}}
{{- define "maas.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name of the chart's own resources: RELEASE-CHART, or RELEASE when it already holds the chart name.
*/}}
{{- define "maas.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "maas.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels of every object; selectors use only "maas.selectorLabels" (a version in a selector breaks upgrades).
*/}}
{{- define "maas.labels" -}}
helm.sh/chart: {{ include "maas.chart" . }}
{{ include "maas.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: maas
{{- end }}

{{- define "maas.selectorLabels" -}}
app.kubernetes.io/name: {{ include "maas.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "maas.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
Name of the chart's ServingRuntime; Knative-mode models use NAME-knative (Knative allows one container port).
*/}}
{{- define "maas.runtimeName" -}}
{{- default (include "maas.fullname" .) .Values.runtime.name | trunc 56 | trimSuffix "-" }}
{{- end }}

{{- define "maas.controllerName" -}}
{{- printf "%s-controller" (include "maas.fullname" . | trunc 52 | trimSuffix "-") }}
{{- end }}

{{- define "maas.controllerServiceAccountName" -}}
{{- if .Values.controller.serviceAccount.create }}
{{- default (include "maas.controllerName" .) .Values.controller.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.controller.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Namespace the version controller manages.
*/}}
{{- define "maas.controllerNamespace" -}}
{{- default .Release.Namespace .Values.controller.namespace }}
{{- end }}

{{/*
Deep-merge .override into .base in place: maps merge key by key, anything else replaces, null removes the key.
(sprig's mergeOverwrite skips zero values, so a model could not set minReplicas: 0 over a default of 1.)
*/}}
{{- define "maas.mergeInto" -}}
{{- $base := .base }}
{{- range $key, $value := .override }}
{{- $current := get $base $key }}
{{- if kindIs "invalid" $value }}
{{- $_ := unset $base $key }}
{{- else if and (kindIs "map" $value) (kindIs "map" $current) }}
{{- include "maas.mergeInto" (dict "base" $current "override" $value) }}
{{- else }}
{{- $_ := set $base $key $value }}
{{- end }}
{{- end }}
{{- end }}

{{/*
True ("true") when a value is set: neither null nor the empty string.
*/}}
{{- define "maas.isSet" -}}
{{- if not (or (kindIs "invalid" .) (eq (toString .) "")) }}true{{ end }}
{{- end }}

{{/*
The models, each merged over .Values.defaults, checked, and resolved into what the templates write.
Returns JSON {"models": [...]}; numbers come back as float64, so templates print them through `int`.
Every failure names the model and the value at fault.
*/}}
{{- define "maas.models" -}}
{{- $families := list "image" "sequence" "transformer" "generative" }}
{{- $seen := dict }}
{{- $models := list }}
{{- range $i, $model := .Values.models }}
{{- $m := deepCopy $.Values.defaults }}
{{- include "maas.mergeInto" (dict "base" $m "override" $model) }}
{{- $at := printf "models[%d] (%v)" $i $m.name }}
{{- if hasKey $seen (toString $m.name) }}
{{- fail (printf "%s: name %q is used by two models; names must be unique" $at $m.name) }}
{{- end }}
{{- $_ := set $seen (toString $m.name) true }}
{{- if not (has $m.family $families) }}
{{- fail (printf "%s: family %q is unknown; use one of %s" $at (toString $m.family) (join ", " $families)) }}
{{- end }}
{{- $knative := has $m.deploymentMode (list "Knative" "Serverless") }}
{{- $modeName := ternary "Knative" "Standard" $knative }}

{{- /* Autoscaling: which class, metric and replica counts each deployment mode accepts. */}}
{{- $as := $m.autoscaling }}
{{- $class := $as.class }}
{{- $min := int $as.minReplicas }}
{{- $max := int $as.maxReplicas }}
{{- $metric := toString $as.scaleMetric }}
{{- if gt $min $max }}
{{- fail (printf "%s: autoscaling.minReplicas (%d) is above autoscaling.maxReplicas (%d)" $at $min $max) }}
{{- end }}
{{- $classModes := dict "hpa" (list "Standard" "Knative") "kpa" (list "Knative") "keda" (list "Standard") "none" (list "Standard") }}
{{- if not (has $modeName (get $classModes $class)) }}
{{- fail (printf "%s: autoscaling.class %q is not available in deploymentMode %s; use one of hpa, keda, none (Standard) or hpa, kpa (Knative)" $at $class $m.deploymentMode) }}
{{- end }}
{{- $classMetrics := dict "hpa" (list "" "cpu" "memory") "kpa" (list "" "concurrency" "rps") "keda" (list "" "cpu" "memory" "prometheus") "none" (list "") }}
{{- if not (has $metric (get $classMetrics $class)) }}
{{- fail (printf "%s: autoscaling.scaleMetric %q does not go with autoscaling.class %s; allowed: %s" $at $metric $class (join ", " (rest (get $classMetrics $class)) | default "none")) }}
{{- end }}
{{- if eq $min 0 }}
{{- if not (or (and $knative (eq $class "kpa")) (and (eq $class "keda") (eq $metric "prometheus"))) }}
{{- fail (printf "%s: autoscaling.minReplicas 0 (scale to zero) is not possible with autoscaling.class %s in deploymentMode %s; scale to zero needs Knative with class kpa, or class keda with scaleMetric prometheus" $at $class $m.deploymentMode) }}
{{- end }}
{{- end }}
{{- $hasTarget := include "maas.isSet" $as.scaleTarget }}
{{- if $hasTarget }}
{{- $target := int $as.scaleTarget }}
{{- if and (has $metric (list "" "cpu" "memory")) (has $class (list "hpa" "keda")) (or (lt $target 1) (gt $target 100)) }}
{{- fail (printf "%s: autoscaling.scaleTarget (%d) is a utilization percentage for %s and must be 1-100" $at $target (default "cpu" $metric)) }}
{{- end }}
{{- else if eq $metric "prometheus" }}
{{- fail (printf "%s: autoscaling.scaleTarget is required with autoscaling.scaleMetric prometheus (the query value one replica handles)" $at) }}
{{- end }}
{{- $query := default (printf "sum(rate(maas_requests_total{namespace=%q,model=%q}[1m]))" $.Release.Namespace $m.name) $as.prometheus.query }}

{{- /* GPU placement. */}}
{{- $gpus := int $m.gpu.count }}
{{- if and (eq $m.device "cuda") (eq $gpus 0) }}
{{- fail (printf "%s: device cuda needs gpu.count of at least 1" $at) }}
{{- end }}
{{- if and (eq $m.device "cpu") (gt $gpus 0) }}
{{- fail (printf "%s: device cpu with gpu.count %d would leave the GPUs idle" $at $gpus) }}
{{- end }}
{{- $resources := deepCopy (default dict $m.resources) }}
{{- $nodeSelector := dict }}
{{- $tolerations := default list $m.tolerations }}
{{- if gt $gpus 0 }}
{{- $limits := deepCopy (default dict $resources.limits) }}
{{- $_ := set $limits $m.gpu.resourceName $gpus }}
{{- $_ := set $resources "limits" $limits }}
{{- $nodeSelector = deepCopy (default dict $m.gpu.nodeSelector) }}
{{- if $m.gpu.type }}
{{- $_ := set $nodeSelector $m.gpu.productLabel $m.gpu.type }}
{{- end }}
{{- $tolerations = concat $tolerations (default list $m.gpu.tolerations) | uniq }}
{{- else if $m.gpu.type }}
{{- fail (printf "%s: gpu.type %q is set but gpu.count is 0" $at $m.gpu.type) }}
{{- end }}
{{- $nodeSelector = merge (deepCopy (default dict $m.nodeSelector)) $nodeSelector }}

{{- /* Predictor settings travel as MAAS_* variables; the model's own env wins over them. */}}
{{- $userEnv := default list $m.env }}
{{- $userNames := list }}
{{- range $userEnv }}{{ $userNames = append $userNames .name }}{{ end }}
{{- $settings := dict "MAAS_FAMILY" $m.family "MAAS_DEVICE" $m.device "MAAS_DTYPE" $m.dtype }}
{{- range $key, $var := dict "maxBatchSize" "MAAS_MAX_BATCH_SIZE" "maxBatchDelayMs" "MAAS_MAX_BATCH_DELAY_MS" "maxQueueSize" "MAAS_MAX_QUEUE_SIZE" }}
{{- $value := get (default dict $m.batching) $key }}
{{- if include "maas.isSet" $value }}
{{- $_ := set $settings $var (toString (int $value)) }}
{{- end }}
{{- end }}
{{- $env := list }}
{{- range $name, $value := $settings }}
{{- if not (has $name $userNames) }}
{{- $env = append $env (dict "name" $name "value" $value) }}
{{- end }}
{{- end }}
{{- $env = concat $env $userEnv }}

{{- /* Canary: canaryTrafficPercent in Knative mode, spec.canary in Standard mode (KServe 0.20+). */}}
{{- $canary := dict }}
{{- if $m.canary }}
{{- $canary = deepCopy $m.canary }}
{{- if $knative }}
{{- if or (include "maas.isSet" $canary.name) (include "maas.isSet" $canary.replicas) }}
{{- fail (printf "%s: canary.name and canary.replicas are Standard-mode settings; a Knative canary is the new revision and autoscales like the model" $at) }}
{{- end }}
{{- else }}
{{- $_ := set $canary "name" (default "canary" $canary.name) }}
{{- if include "maas.isSet" $canary.replicas }}
{{- if gt (int $canary.replicas) $min }}
{{- fail (printf "%s: canary.replicas (%d) must not exceed autoscaling.minReplicas (%d); KServe rejects a larger canary" $at (int $canary.replicas) $min) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{- $runtime := $m.runtime }}
{{- if not $runtime }}
{{- $runtime = include "maas.runtimeName" $ }}
{{- if $knative }}{{ $runtime = printf "%s-knative" $runtime }}{{ end }}
{{- end }}

{{- $models = append $models (dict
  "name" $m.name "family" $m.family "storageUri" $m.storageUri "runtime" $runtime
  "deploymentMode" $m.deploymentMode "knative" $knative "chartRuntime" (not $m.runtime)
  "class" $class "minReplicas" $min "maxReplicas" $max "scaleMetric" $metric
  "scaleTarget" (ternary (int $as.scaleTarget) nil (eq $hasTarget "true"))
  "serverAddress" $as.prometheus.serverAddress "query" $query
  "resources" $resources "nodeSelector" $nodeSelector "tolerations" $tolerations
  "affinity" (default dict $m.affinity) "env" $env "canary" $canary
  "annotations" (default dict $m.annotations) "labels" (default dict $m.labels)
  "serviceAccountName" $m.serviceAccountName
  "timeoutSeconds" (ternary (int $m.timeoutSeconds) nil (eq (include "maas.isSet" $m.timeoutSeconds) "true"))) }}
{{- end }}
{{- toJson (dict "models" $models) }}
{{- end }}

{{/*
The root filesystem is read-only: HOME, TMPDIR and the torch and Hugging Face caches live on /tmp.
*/}}
{{- define "maas.writableHomeEnv" -}}
- name: HOME
  value: /tmp
- name: TMPDIR
  value: /tmp
- name: XDG_CACHE_HOME
  value: /tmp/.cache
- name: HF_HOME
  value: /tmp/huggingface
- name: TORCH_HOME
  value: /tmp/torch
{{- end }}

{{/*
Container securityContext of every container the chart runs; pass dict "runAsUser" UID-or-null.
*/}}
{{- define "maas.containerSecurityContext" -}}
allowPrivilegeEscalation: false
privileged: false
readOnlyRootFilesystem: true
runAsNonRoot: true
{{- if include "maas.isSet" .runAsUser }}
runAsUser: {{ int .runAsUser }}
{{- end }}
capabilities:
  drop:
    - ALL
seccompProfile:
  type: RuntimeDefault
{{- end }}
