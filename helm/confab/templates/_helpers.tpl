{{/* Chart name, truncated to the 63 characters a label value may have. */}}
{{- define "confab.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name: the release name, plus the chart name unless it already has it. */}}
{{- define "confab.fullname" -}}
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

{{- define "confab.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The standard app.kubernetes.io labels of every object. */}}
{{- define "confab.labels" -}}
helm.sh/chart: {{ include "confab.chart" . }}
{{ include "confab.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: server
app.kubernetes.io/part-of: confab
{{- end }}

{{/* The labels that select the pods (never change them between releases). */}}
{{- define "confab.selectorLabels" -}}
app.kubernetes.io/name: {{ include "confab.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "confab.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "confab.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Secret holding the JWT secret, the API key and the database and Redis URLs. */}}
{{- define "confab.secretName" -}}
{{- default (include "confab.fullname" .) .Values.secrets.existingSecret }}
{{- end }}

{{- define "confab.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/*
The pod's grace period: the pre-stop delay, then the drain (CONFAB_SHUTDOWN_TIMEOUT), then a
margin for the process to exit; an explicit value below the first two is refused.
*/}}
{{- define "confab.terminationGracePeriodSeconds" -}}
{{- $floor := add .Values.preStopSleepSeconds .Values.config.shutdownTimeout }}
{{- if kindIs "invalid" .Values.terminationGracePeriodSeconds }}
{{- add $floor 10 }}
{{- else if le (int .Values.terminationGracePeriodSeconds) (int $floor) }}
{{- fail (printf "terminationGracePeriodSeconds (%v) must exceed preStopSleepSeconds + config.shutdownTimeout (%v), or rolling updates kill pods in the middle of their drain" .Values.terminationGracePeriodSeconds $floor) }}
{{- else }}
{{- .Values.terminationGracePeriodSeconds }}
{{- end }}
{{- end }}

{{/* More than one pod needs a shared database and backplane: refuse to render otherwise. */}}
{{- define "confab.checkCluster" -}}
{{- $many := or .Values.autoscaling.enabled (gt (int .Values.replicaCount) 1) }}
{{- if and $many (not .Values.secrets.existingSecret) }}
{{- if not (hasPrefix "postgres" .Values.secrets.databaseUrl) }}
{{- fail "more than one pod (replicaCount > 1 or autoscaling) needs secrets.databaseUrl set to a postgres:// URL (or secrets.existingSecret)" }}
{{- end }}
{{- if not .Values.secrets.redisUrl }}
{{- fail "more than one pod (replicaCount > 1 or autoscaling) needs secrets.redisUrl (or secrets.existingSecret)" }}
{{- end }}
{{- end }}
{{- end }}
