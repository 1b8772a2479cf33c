{{/*
The objects every Tocsin service is made of. Each service's folder under templates/
includes these with (dict "root" $ "component" "<service>"), so the five services
differ only in their values block.
*/}}

{{/* True when an HPA or a KEDA ScaledObject owns the replica count. */}}
{{- define "tocsin.autoscaled" -}}
{{- $svc := index .root.Values .component }}
{{- if or (and (hasKey $svc "autoscaling") $svc.autoscaling.enabled) (and (hasKey $svc "keda") $svc.keda.enabled) }}true{{- end }}
{{- end }}

{{- define "tocsin.deployment" -}}
{{- $root := .root }}
{{- $component := .component }}
{{- $svc := index $root.Values $component }}
{{- $ctx := dict "root" $root "component" $component }}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "tocsin.componentName" $ctx }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "tocsin.componentLabels" $ctx | nindent 4 }}
spec:
  {{- if not (include "tocsin.autoscaled" $ctx) }}
  replicas: {{ $svc.replicaCount }}
  {{- end }}
  revisionHistoryLimit: 5
  selector:
    matchLabels:
      {{- include "tocsin.componentSelectorLabels" $ctx | nindent 6 }}
  {{- if eq $component "scheduler" }}
  strategy:
    # The leader hands over through its Redis lease; never run two old+new surges at once.
    type: RollingUpdate
    rollingUpdate:
      maxSurge: 0
      maxUnavailable: 1
  {{- end }}
  template:
    metadata:
      labels:
        {{- include "tocsin.componentLabels" $ctx | nindent 8 }}
      annotations:
        kubectl.kubernetes.io/default-container: {{ $component }}
        {{- with $root.Values.common.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      serviceAccountName: {{ include "tocsin.serviceAccountName" $root }}
      automountServiceAccountToken: {{ $root.Values.serviceAccount.automountServiceAccountToken }}
      {{- with $root.Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      securityContext:
        {{- toYaml $root.Values.podSecurityContext | nindent 8 }}
      terminationGracePeriodSeconds: {{ include "tocsin.terminationGracePeriod" $ctx }}
      {{- if and (eq $component "gateway") $svc.topologySpreadConstraints }}
      {{- $selector := dict "matchLabels" (include "tocsin.componentSelectorLabels" $ctx | fromYaml) }}
      topologySpreadConstraints:
        {{- range $svc.topologySpreadConstraints }}
        {{- toYaml (list (merge (dict "labelSelector" $selector) .)) | nindent 8 }}
        {{- end }}
      {{- end }}
      containers:
        - name: {{ $component }}
          image: {{ include "tocsin.image" $root | quote }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          args: [{{ $component | quote }}]
          ports:
            - name: http
              containerPort: {{ $svc.port }}
              protocol: TCP
            {{- if hasKey $svc "metricsPort" }}
            - name: metrics
              containerPort: {{ $svc.metricsPort }}
              protocol: TCP
            {{- end }}
          env:
            - name: TOCSIN_HOST
              value: "0.0.0.0"
            - name: TOCSIN_PORT
              value: {{ $svc.port | quote }}
            - name: TOCSIN_LOG_FORMAT
              value: {{ $root.Values.common.logFormat | quote }}
            - name: TOCSIN_LOG_LEVEL
              value: {{ $root.Values.common.logLevel | quote }}
            {{- include "tocsin.redisEnv" $root | trim | nindent 12 }}
            {{- if hasKey $svc "metricsPort" }}
            - name: TOCSIN_METRICS_PORT
              value: {{ $svc.metricsPort | quote }}
            {{- end }}
            {{- if eq $component "gateway" }}
            {{- $notifier := dict "root" $root "component" "notifier" }}
            - name: TOCSIN_NOTIFIER_URL
              value: {{ printf "http://%s:%d" (include "tocsin.componentName" $notifier) (int $root.Values.notifier.port) | quote }}
            {{- end }}
            {{- /* Only the services that verify tokens get the signing secret (the notifier
            verifies the token of a template preview the gateway forwards). */}}
            {{- if has $component (list "gateway" "ingest" "notifier") }}
            - name: TOCSIN_JWT_SECRET
              valueFrom:
                secretKeyRef:
                  name: {{ include "tocsin.authSecretName" $root }}
                  key: {{ $root.Values.auth.jwtSecretKey }}
            - name: TOCSIN_JWT_AUDIENCE
              value: {{ $root.Values.auth.jwtAudience | quote }}
            {{- with $root.Values.auth.jwtIssuer }}
            - name: TOCSIN_JWT_ISSUER
              value: {{ . | quote }}
            {{- end }}
            {{- with $root.Values.auth.jwtPublicKey }}
            - name: TOCSIN_JWT_PUBLIC_KEY
              value: {{ . | quote }}
            {{- end }}
            {{- end }}
            {{- if hasKey $svc "drainSeconds" }}
            - name: TOCSIN_DRAIN_WINDOW
              value: {{ $svc.drainSeconds | quote }}
            {{- end }}
            {{- if hasKey $svc "shutdownTimeoutSeconds" }}
            - name: TOCSIN_SHUTDOWN_TIMEOUT_SECONDS
              value: {{ $svc.shutdownTimeoutSeconds | quote }}
            {{- end }}
            {{- if eq $component "notifier" }}
            - name: TOCSIN_ROUTES_FILE
              value: /etc/tocsin/routes.yaml
            {{- end }}
            {{- if and (eq $component "scheduler") (or $root.Values.config.schedules $root.Values.config.existingConfigMap) }}
            - name: TOCSIN_SCHEDULES
              value: /etc/tocsin/schedules.json
            {{- end }}
            {{- range $name, $value := merge (dict) $svc.env $root.Values.common.env }}
            - name: {{ $name }}
              value: {{ $value | quote }}
            {{- end }}
          startupProbe:
            httpGet:
              path: /healthz
              port: http
            periodSeconds: {{ $root.Values.probes.startup.periodSeconds }}
            failureThreshold: {{ $root.Values.probes.startup.failureThreshold }}
          livenessProbe:
            httpGet:
              path: /healthz
              port: http
            periodSeconds: {{ $root.Values.probes.liveness.periodSeconds }}
            timeoutSeconds: {{ $root.Values.probes.liveness.timeoutSeconds }}
            failureThreshold: {{ $root.Values.probes.liveness.failureThreshold }}
          readinessProbe:
            httpGet:
              path: /readyz
              port: http
            periodSeconds: {{ $root.Values.probes.readiness.periodSeconds }}
            timeoutSeconds: {{ $root.Values.probes.readiness.timeoutSeconds }}
            failureThreshold: {{ $root.Values.probes.readiness.failureThreshold }}
          securityContext:
            {{- toYaml $root.Values.securityContext | nindent 12 }}
          resources:
            {{- toYaml $svc.resources | nindent 12 }}
          volumeMounts:
            # The root filesystem is read-only: /tmp is the one scratch directory.
            - name: tmp
              mountPath: /tmp
            - name: config
              mountPath: /etc/tocsin
              readOnly: true
      volumes:
        - name: tmp
          emptyDir:
            sizeLimit: 64Mi
        - name: config
          configMap:
            name: {{ include "tocsin.configMapName" $root }}
      {{- with $svc.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $svc.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $svc.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
{{- end }}

{{/* ClusterIP Service: gateway and ingest expose http plus their metrics port, workers their
ops port (health and metrics, never routed by the Ingress) as `metrics`. */}}
{{- define "tocsin.service" -}}
{{- $root := .root }}
{{- $component := .component }}
{{- $svc := index $root.Values $component }}
{{- $ctx := dict "root" $root "component" $component }}
apiVersion: v1
kind: Service
metadata:
  name: {{ include "tocsin.componentName" $ctx }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "tocsin.componentLabels" $ctx | nindent 4 }}
spec:
  type: ClusterIP
  selector:
    {{- include "tocsin.componentSelectorLabels" $ctx | nindent 4 }}
  ports:
    {{- /* The notifier's http port serves the template preview the gateway forwards. */}}
    {{- if has $component (list "gateway" "ingest" "notifier") }}
    - name: http
      port: {{ $svc.port }}
      targetPort: http
      protocol: TCP
      {{- if eq $component "gateway" }}
      appProtocol: kubernetes.io/ws
      {{- end }}
    {{- end }}
    - name: metrics
      port: {{ add $svc.port 1000 }}
      targetPort: {{ ternary "metrics" "http" (hasKey $svc "metricsPort") }}
      protocol: TCP
{{- end }}

{{/* CPU HorizontalPodAutoscaler, unless KEDA owns the scaling. */}}
{{- define "tocsin.hpa" -}}
{{- $root := .root }}
{{- $component := .component }}
{{- $svc := index $root.Values $component }}
{{- $ctx := dict "root" $root "component" $component }}
{{- if and $svc.autoscaling.enabled (not (and (hasKey $svc "keda") $svc.keda.enabled)) }}
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ include "tocsin.componentName" $ctx }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "tocsin.componentLabels" $ctx | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ include "tocsin.componentName" $ctx }}
  minReplicas: {{ $svc.autoscaling.minReplicas }}
  maxReplicas: {{ $svc.autoscaling.maxReplicas }}
  metrics:
    - type: Resource
      resource:
        name: cpu
        target:
          type: Utilization
          averageUtilization: {{ $svc.autoscaling.targetCPUUtilizationPercentage }}
{{- end }}
{{- end }}

{{- define "tocsin.pdb" -}}
{{- $root := .root }}
{{- $component := .component }}
{{- $svc := index $root.Values $component }}
{{- $ctx := dict "root" $root "component" $component }}
{{- if $svc.pdb.enabled }}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "tocsin.componentName" $ctx }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "tocsin.componentLabels" $ctx | nindent 4 }}
spec:
  minAvailable: {{ $svc.pdb.minAvailable }}
  selector:
    matchLabels:
      {{- include "tocsin.componentSelectorLabels" $ctx | nindent 6 }}
{{- end }}
{{- end }}

{{/* KEDA ScaledObject on the length of the worker's Dramatiq queue (a Redis list). */}}
{{- define "tocsin.scaledObject" -}}
{{- $root := .root }}
{{- $component := .component }}
{{- $svc := index $root.Values $component }}
{{- $ctx := dict "root" $root "component" $component }}
{{- if $svc.keda.enabled }}
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata:
  name: {{ include "tocsin.componentName" $ctx }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "tocsin.componentLabels" $ctx | nindent 4 }}
spec:
  scaleTargetRef:
    name: {{ include "tocsin.componentName" $ctx }}
  minReplicaCount: {{ $svc.autoscaling.minReplicas }}
  maxReplicaCount: {{ $svc.autoscaling.maxReplicas }}
  pollingInterval: {{ $svc.keda.pollingInterval }}
  cooldownPeriod: {{ $svc.keda.cooldownPeriod }}
  triggers:
    {{- /* Dramatiq keeps a queue's pending message ids in the list <namespace>:<queue>. */}}
    {{- $list := printf "tocsin:dramatiq:%s" $svc.keda.queue }}
    {{- if $root.Values.redis.enabled }}
    - type: redis
      metadata:
        address: {{ printf "%s:%d" (include "tocsin.redisName" $root) (int $root.Values.redis.port) | quote }}
        listName: {{ $list | quote }}
        listLength: {{ $svc.keda.listLength | quote }}
        passwordFromEnv: REDIS_PASSWORD
    {{- else if $root.Values.externalRedis.sentinel.hosts }}
    - type: redis-sentinel
      metadata:
        addresses: {{ join "," $root.Values.externalRedis.sentinel.hosts | quote }}
        sentinelMaster: {{ $root.Values.externalRedis.sentinel.masterName | quote }}
        listName: {{ $list | quote }}
        listLength: {{ $svc.keda.listLength | quote }}
        {{- if $root.Values.externalRedis.existingSecret }}
        passwordFromEnv: REDIS_PASSWORD
        {{- end }}
    {{- else }}
    {{- $url := $root.Values.externalRedis.url }}
    - type: redis
      metadata:
        address: {{ regexReplaceAll "^rediss?://([^/]+).*$" $url "${1}" | quote }}
        databaseIndex: {{ regexReplaceAll "^rediss?://[^/]+/?([0-9]*).*$" $url "${1}" | default "0" | quote }}
        enableTLS: {{ hasPrefix "rediss://" $url | quote }}
        listName: {{ $list | quote }}
        listLength: {{ $svc.keda.listLength | quote }}
        {{- if $root.Values.externalRedis.existingSecret }}
        passwordFromEnv: REDIS_PASSWORD
        {{- end }}
    {{- end }}
{{- end }}
{{- end }}
