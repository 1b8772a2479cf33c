{{/*
Names, labels and the image reference shared by every template.
*/}}

{{/* The chart name, or nameOverride. */}}
{{- define "tocsin.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The prefix of every resource name: release-chart, or fullnameOverride. */}}
{{- define "tocsin.fullname" -}}
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

{{/* chart-version, for the helm.sh/chart label. */}}
{{- define "tocsin.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels every resource carries. */}}
{{- define "tocsin.labels" -}}
helm.sh/chart: {{ include "tocsin.chart" . }}
app.kubernetes.io/name: {{ include "tocsin.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: tocsin
{{- with .Values.common.labels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels of the whole release. */}}
{{- define "tocsin.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tocsin.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels of one component; call with (dict "root" $ "component" "gateway"). */}}
{{- define "tocsin.componentLabels" -}}
{{ include "tocsin.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Selector labels of one component; call with (dict "root" $ "component" "gateway"). */}}
{{- define "tocsin.componentSelectorLabels" -}}
{{ include "tocsin.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Resource name of one component; call with (dict "root" $ "component" "gateway"). */}}
{{- define "tocsin.componentName" -}}
{{- printf "%s-%s" (include "tocsin.fullname" .root) .component | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The image reference: digest wins over tag, tag defaults to appVersion. */}}
{{- define "tocsin.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{- define "tocsin.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "tocsin.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Secret holding the JWT signing secret. */}}
{{- define "tocsin.authSecretName" -}}
{{- default (printf "%s-auth" (include "tocsin.fullname" .)) .Values.auth.existingSecret }}
{{- end }}

{{/* ConfigMap holding routes.yaml and schedules.json. */}}
{{- define "tocsin.configMapName" -}}
{{- default (printf "%s-config" (include "tocsin.fullname" .)) .Values.config.existingConfigMap }}
{{- end }}

{{/* Secret holding the bundled Redis's password. */}}
{{- define "tocsin.redisSecretName" -}}
{{- default (printf "%s-redis" (include "tocsin.fullname" .)) .Values.redis.auth.existingSecret }}
{{- end }}

{{/* In-cluster Service name of the bundled Redis. */}}
{{- define "tocsin.redisName" -}}
{{- printf "%s-redis" (include "tocsin.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Redis connection variables. The password, when there is one, comes from a Secret and
is spliced into REDIS_URL by Kubernetes' $(VAR) expansion, so it never sits in a manifest.
*/}}
{{- define "tocsin.redisEnv" -}}
{{- if .Values.redis.enabled }}
- name: REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "tocsin.redisSecretName" . }}
      key: {{ .Values.redis.auth.existingSecretPasswordKey }}
- name: REDIS_URL
  value: {{ printf "redis://:$(REDIS_PASSWORD)@%s:%d/0" (include "tocsin.redisName" .) (int .Values.redis.port) | quote }}
{{- else }}
{{- with .Values.externalRedis }}
{{- if .existingSecret }}
- name: REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .existingSecret }}
      key: {{ .existingSecretPasswordKey }}
{{- end }}
{{- if .sentinel.hosts }}
- name: TOCSIN_REDIS_SENTINELS
  value: {{ join "," .sentinel.hosts | quote }}
- name: TOCSIN_REDIS_SENTINEL_MASTER
  value: {{ .sentinel.masterName | quote }}
{{- if .existingSecret }}
- name: TOCSIN_REDIS_PASSWORD
  value: "$(REDIS_PASSWORD)"
{{- end }}
{{- else }}
{{- $url := required "externalRedis.url or externalRedis.sentinel.hosts is required when redis.enabled is false" .url }}
- name: REDIS_URL
{{- if .existingSecret }}
  value: {{ regexReplaceAll "^(rediss?://)(.*)$" $url "${1}:$(REDIS_PASSWORD)@${2}" | quote }}
{{- else }}
  value: {{ $url | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/* Seconds Kubernetes waits after SIGTERM: the service's own shutdown window plus a margin. */}}
{{- define "tocsin.terminationGracePeriod" -}}
{{- $svc := index .root.Values .component }}
{{- if hasKey $svc "drainSeconds" }}
{{- add $svc.drainSeconds $svc.terminationGraceMarginSeconds }}
{{- else if hasKey $svc "shutdownTimeoutSeconds" }}
{{- add $svc.shutdownTimeoutSeconds $svc.terminationGraceMarginSeconds }}
{{- else }}
{{- $svc.terminationGracePeriodSeconds }}
{{- end }}
{{- end }}

{{/* The producer endpoints ingest serves; everything else over HTTP is the gateway's. */}}
{{- define "tocsin.producerPaths" -}}
["/v1/alerts", "/v1/integrations/alertmanager", "/api/v2/alerts", "/v2/enqueue"]
{{- end }}
