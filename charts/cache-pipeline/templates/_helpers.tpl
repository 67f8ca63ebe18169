{{/* Chart name, truncated to the 63 characters a label value allows. */}}
{{- define "cache-pipeline.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name of the release's objects. */}}
{{- define "cache-pipeline.fullname" -}}
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

{{- define "cache-pipeline.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels every object carries. */}}
{{- define "cache-pipeline.labels" -}}
helm.sh/chart: {{ include "cache-pipeline.chart" . }}
{{ include "cache-pipeline.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: worker
{{- end }}

{{/* Labels that select the worker pods (never change them on upgrade). */}}
{{- define "cache-pipeline.selectorLabels" -}}
app.kubernetes.io/name: {{ include "cache-pipeline.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "cache-pipeline.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "cache-pipeline.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "cache-pipeline.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
A setting rendered as an environment variable value: booleans become 1/0,
whole numbers never turn into exponent notation (values arrive as float64).
*/}}
{{- define "cache-pipeline.envValue" -}}
{{- if kindIs "bool" . }}
{{- ternary "1" "0" . }}
{{- else if and (kindIs "float64" .) (eq (. | int64 | float64) .) }}
{{- . | int64 | toString }}
{{- else }}
{{- . | toString }}
{{- end }}
{{- end }}

{{/* The ConfigMap's data: every non-empty config value, named as its variable. */}}
{{- define "cache-pipeline.configData" -}}
{{- range $key, $value := .Values.config }}
{{- if not (and (kindIs "string" $value) (eq $value "")) }}
{{ $key | snakecase | upper }}: {{ include "cache-pipeline.envValue" $value | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/* Secret data the chart manages (empty when an existing Secret is used). */}}
{{- define "cache-pipeline.secretData" -}}
{{- if not .Values.secrets.existingSecret }}
{{- with .Values.secrets.serverApiKey }}
SERVER_API_KEY: {{ . | b64enc | quote }}
{{- end }}
{{- with .Values.secrets.redisPassword }}
REDIS_PASSWORD: {{ . | b64enc | quote }}
{{- end }}
{{- with .Values.secrets.sentryDsn }}
SENTRY_DSN: {{ . | b64enc | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/* Name of the Secret the pods read, or "" when there is none. */}}
{{- define "cache-pipeline.secretName" -}}
{{- if .Values.secrets.existingSecret }}
{{- .Values.secrets.existingSecret }}
{{- else if include "cache-pipeline.secretData" . | trim }}
{{- include "cache-pipeline.fullname" . }}
{{- end }}
{{- end }}

{{/*
SIGTERM grace: the worker exits within SHUTDOWN_BUDGET_SECS (8 s) of SIGTERM and
its teardown whatever Redis and SQS do (cache_pipeline/config.py); at least
SHUTDOWN_GRACE_SECS (15) so that SIGKILL never lands on a worker still settling.
*/}}
{{- define "cache-pipeline.terminationGracePeriodSeconds" -}}
{{- $least := 15 }}
{{- if kindIs "invalid" .Values.terminationGracePeriodSeconds }}
{{- 30 }}
{{- else }}
{{- $grace := int .Values.terminationGracePeriodSeconds }}
{{- if lt $grace $least }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must be at least %d: the worker may take 8 s and its teardown to stop, a pod killed earlier abandons messages it is still settling" $grace $least) }}
{{- end }}
{{- $grace }}
{{- end }}
{{- end }}

{{/* The fewest pods the Deployment runs: the autoscaler's floor, or replicaCount. */}}
{{- define "cache-pipeline.leastReplicas" -}}
{{- if .Values.keda.enabled }}
{{- .Values.keda.minReplicaCount | int }}
{{- else if .Values.autoscaling.enabled }}
{{- .Values.autoscaling.minReplicas | int }}
{{- else }}
{{- .Values.replicaCount | int }}
{{- end }}
{{- end }}

{{/*
The settings of a container of this release (the worker and the jobs alike):
envFrom (the ConfigMap, the Secret when there is one, extraEnvFrom) and env (extraEnv).
*/}}
{{- define "cache-pipeline.env" -}}
{{- $secretName := include "cache-pipeline.secretName" . -}}
envFrom:
  - configMapRef:
      name: {{ include "cache-pipeline.fullname" . }}
  {{- if $secretName }}
  - secretRef:
      name: {{ $secretName }}
  {{- end }}
  {{- with .Values.extraEnvFrom }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- with .Values.extraEnv }}
env:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* Volumes of a pod of this release: /tmp (the root filesystem is read-only) and extraVolumes. */}}
{{- define "cache-pipeline.volumes" -}}
- name: tmp
  emptyDir:
    sizeLimit: {{ .Values.tmpSizeLimit }}
{{- with .Values.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "cache-pipeline.volumeMounts" -}}
- name: tmp
  mountPath: /tmp
{{- with .Values.extraVolumeMounts }}
{{ toYaml . }}
{{- end }}
{{- end }}
