{{/*
Names, labels and the pieces every template shares.
*/}}

{{- define "roomcast.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
The release's base name, at most 46 characters: the longest suffix,
"-control-headless", still fits a 63-character DNS label.
*/}}
{{- define "roomcast.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 46 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 46 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 46 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "roomcast.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "roomcast.edge.fullname" -}}{{ include "roomcast.fullname" . }}-edge{{- end -}}
{{- define "roomcast.control.fullname" -}}{{ include "roomcast.fullname" . }}-control{{- end -}}
{{- define "roomcast.nats.fullname" -}}{{ include "roomcast.fullname" . }}-nats{{- end -}}
{{- define "roomcast.nats.headless" -}}{{ include "roomcast.fullname" . }}-nats-headless{{- end -}}

{{/* Labels that select one component's pods: call with (dict "root" $ "component" "edge"). */}}
{{- define "roomcast.selectorLabels" -}}
app.kubernetes.io/name: {{ include "roomcast.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Every label of one component's objects: call with (dict "root" $ "component" "edge"). */}}
{{- define "roomcast.labels" -}}
helm.sh/chart: {{ include "roomcast.chart" .root }}
{{ include "roomcast.selectorLabels" . }}
app.kubernetes.io/part-of: roomcast
{{- if .root.Chart.AppVersion }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "roomcast.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "roomcast.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "roomcast.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}
{{- end -}}

{{- define "roomcast.secretName" -}}
{{- default (printf "%s-secrets" (include "roomcast.fullname" .)) .Values.secrets.existingSecret -}}
{{- end -}}

{{/* Replicas of the presence KV bucket: the value, else 3 on the chart's NATS cluster, else 1. */}}
{{- define "roomcast.presenceReplicas" -}}
{{- if not (kindIs "invalid" .Values.presence.replicas) -}}
{{- .Values.presence.replicas | int -}}
{{- else if .Values.nats.internal.enabled -}}
{{- min 3 (.Values.nats.internal.replicas | int) -}}
{{- else -}}
1
{{- end -}}
{{- end -}}

{{/* The NATS servers roomcast connects to, as a list (JSON). */}}
{{- define "roomcast.natsUrls" -}}
{{- if .Values.nats.internal.enabled -}}
{{- $urls := list -}}
{{- $sts := include "roomcast.nats.fullname" . -}}
{{- $svc := include "roomcast.nats.headless" . -}}
{{- range $i := until (.Values.nats.internal.replicas | int) -}}
{{- $urls = append $urls (printf "nats://%s-%d.%s.%s.svc.%s:%d" $sts $i $svc $.Release.Namespace $.Values.clusterDomain ($.Values.nats.internal.ports.client | int)) -}}
{{- end -}}
{{- toJson $urls -}}
{{- else -}}
{{- toJson .Values.nats.external.urls -}}
{{- end -}}
{{- end -}}

{{/*
Settings that are inconsistent together stop the render with a message that
names the values to change (the binary would refuse them at start anyway).
*/}}
{{- define "roomcast.validate" -}}
{{- $v := .Values -}}
{{- if and (not $v.nats.internal.enabled) (empty $v.nats.external.urls) -}}
{{- fail "nats: set nats.external.urls to the servers of an existing NATS, or nats.internal.enabled=true" -}}
{{- end -}}
{{- if and $v.nats.internal.enabled (not (empty $v.nats.external.urls)) -}}
{{- fail "nats: nats.external.urls and nats.internal.enabled=true exclude each other; choose one" -}}
{{- end -}}
{{- if and $v.nats.internal.enabled (has $v.nats.auth.method (list "nkey" "creds")) -}}
{{- fail (printf "nats: nats.auth.method=%s needs accounts on the NATS servers; the chart's NATS supports none, token and userPassword" $v.nats.auth.method) -}}
{{- end -}}
{{- if and $v.nats.internal.enabled (gt (include "roomcast.presenceReplicas" . | int) ($v.nats.internal.replicas | int)) -}}
{{- fail (printf "presence.replicas (%s) cannot exceed nats.internal.replicas (%d)" (include "roomcast.presenceReplicas" .) ($v.nats.internal.replicas | int)) -}}
{{- end -}}
{{- if $v.nats.internal.enabled -}}
{{- /* The chart's NATS reads these from its environment as unquoted config values. */ -}}
{{- range $key, $secret := dict "secrets.natsToken" $v.secrets.natsToken "secrets.natsUser" $v.secrets.natsUser "secrets.natsPassword" $v.secrets.natsPassword -}}
{{- if and $secret (or (not (regexMatch "^[A-Za-z][A-Za-z0-9_]*$" $secret)) (has (lower $secret) (list "true" "false" "yes" "no" "on" "off"))) -}}
{{- fail (printf "%s: with the chart's NATS use letters, digits and '_' starting with a letter (NATS reads it unquoted from its environment), or leave it empty to generate one" $key) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- $hook := $v.auth.connectHook.url -}}
{{- if and $hook (or $v.auth.jwt.enabled $v.auth.allowAnonymous) -}}
{{- fail "auth: with auth.connectHook.url the hook decides every connect; set auth.jwt.enabled=false and auth.allowAnonymous=false" -}}
{{- end -}}
{{- if not (or $hook $v.auth.jwt.enabled $v.auth.allowAnonymous) -}}
{{- fail "auth: clients could not authenticate; enable auth.jwt, set auth.connectHook.url, or set auth.allowAnonymous=true" -}}
{{- end -}}
{{- if lt ($v.edgeTtlMs | int) (mul 2 ($v.heartbeatIntervalMs | int)) -}}
{{- fail (printf "edgeTtlMs (%d) must be at least twice heartbeatIntervalMs (%d)" ($v.edgeTtlMs | int) ($v.heartbeatIntervalMs | int)) -}}
{{- end -}}
{{- if lt ($v.socketio.outboundQueueBytes | int) ($v.socketio.maxPayload | int) -}}
{{- fail (printf "socketio.outboundQueueBytes (%d) must be at least socketio.maxPayload (%d)" ($v.socketio.outboundQueueBytes | int) ($v.socketio.maxPayload | int)) -}}
{{- end -}}
{{- if not $v.secrets.existingSecret -}}
{{- if and $v.auth.jwt.enabled (eq $v.auth.jwt.algorithm "RS256") (not $v.secrets.jwtPublicKey) -}}
{{- fail "secrets: auth.jwt.algorithm=RS256 needs secrets.jwtPublicKey (PEM) or secrets.existingSecret" -}}
{{- end -}}
{{- if and (not $v.nats.internal.enabled) (eq $v.nats.auth.method "token") (not $v.secrets.natsToken) -}}
{{- fail "secrets: nats.auth.method=token with an external NATS needs secrets.natsToken or secrets.existingSecret" -}}
{{- end -}}
{{- if and (not $v.nats.internal.enabled) (eq $v.nats.auth.method "userPassword") (not (and $v.secrets.natsUser $v.secrets.natsPassword)) -}}
{{- fail "secrets: nats.auth.method=userPassword with an external NATS needs secrets.natsUser and secrets.natsPassword, or secrets.existingSecret" -}}
{{- end -}}
{{- if and (eq $v.nats.auth.method "nkey") (not $v.secrets.natsNkeySeed) -}}
{{- fail "secrets: nats.auth.method=nkey needs secrets.natsNkeySeed or secrets.existingSecret" -}}
{{- end -}}
{{- if and (eq $v.nats.auth.method "creds") (not $v.secrets.natsCreds) -}}
{{- fail "secrets: nats.auth.method=creds needs secrets.natsCreds or secrets.existingSecret" -}}
{{- end -}}
{{- end -}}
{{- $drain := $v.edge.drain -}}
{{- $needed := add ($drain.preStopSleepSeconds | int) ($drain.delaySeconds | int) ($drain.windowSeconds | int) -}}
{{- if and (not (kindIs "invalid" $v.edge.terminationGracePeriodSeconds)) (le ($v.edge.terminationGracePeriodSeconds | int) $needed) -}}
{{- fail (printf "edge.terminationGracePeriodSeconds (%d) must be longer than edge.drain.preStopSleepSeconds + delaySeconds + windowSeconds (%d), or the kubelet kills edges in the middle of their drain" ($v.edge.terminationGracePeriodSeconds | int) $needed) -}}
{{- end -}}
{{- if and (not (kindIs "invalid" $v.control.terminationGracePeriodSeconds)) (le ($v.control.terminationGracePeriodSeconds | int) ($v.control.preStopSleepSeconds | int)) -}}
{{- fail (printf "control.terminationGracePeriodSeconds (%d) must be longer than control.preStopSleepSeconds (%d)" ($v.control.terminationGracePeriodSeconds | int) ($v.control.preStopSleepSeconds | int)) -}}
{{- end -}}
{{- if and $v.edge.autoscaling.enabled (gt ($v.edge.autoscaling.minReplicas | int) ($v.edge.autoscaling.maxReplicas | int)) -}}
{{- fail (printf "edge.autoscaling.minReplicas (%d) cannot exceed edge.autoscaling.maxReplicas (%d)" ($v.edge.autoscaling.minReplicas | int) ($v.edge.autoscaling.maxReplicas | int)) -}}
{{- end -}}
{{- if and $v.edge.autoscaling.enabled (kindIs "invalid" $v.edge.autoscaling.targetCPUUtilizationPercentage) (not $v.edge.autoscaling.connections.enabled) -}}
{{- fail "edge.autoscaling needs a metric: set targetCPUUtilizationPercentage or connections.enabled=true" -}}
{{- end -}}
{{- end -}}

{{/* An edge's grace period: the value, else the whole drain plus time to flush and exit. */}}
{{- define "roomcast.edge.terminationGracePeriodSeconds" -}}
{{- if not (kindIs "invalid" .Values.edge.terminationGracePeriodSeconds) -}}
{{- .Values.edge.terminationGracePeriodSeconds | int -}}
{{- else -}}
{{- $d := .Values.edge.drain -}}
{{- add ($d.preStopSleepSeconds | int) ($d.delaySeconds | int) ($d.windowSeconds | int) 15 -}}
{{- end -}}
{{- end -}}

{{/*
The settings file of one role, as a dict of snake_case keys (the binary's
flag names): call with (dict "root" $ "role" "edge"). Values that name
secrets are not here; they arrive as ROOMCAST_* variables.
*/}}
{{- define "roomcast.settings" -}}
{{- $root := .root -}}
{{- $v := $root.Values -}}
{{- $s := dict
  "cluster" $v.clusterName
  "request_timeout_ms" ($v.requestTimeoutMs | int64)
  "heartbeat_interval_ms" ($v.heartbeatIntervalMs | int64)
  "max_payload" ($v.socketio.maxPayload | int64)
  "max_attachments" ($v.socketio.maxAttachments | int64)
  "nats_urls" (include "roomcast.natsUrls" $root | fromJsonArray)
  "log" $v.log.filter
  "log_format" $v.log.format
  "presence" $v.presence.enabled
-}}
{{- if $v.presence.enabled -}}
{{- $_ := set $s "presence_grace_ms" ($v.presence.graceMs | int64) -}}
{{- $_ := set $s "presence_lease_ttl_ms" ($v.presence.leaseTtlMs | int64) -}}
{{- $_ := set $s "presence_audience" $v.presence.audience -}}
{{- $_ := set $s "presence_namespace" $v.presence.namespace -}}
{{- $_ := set $s "presence_replicas" (include "roomcast.presenceReplicas" $root | int64) -}}
{{- $_ := set $s "max_connections_per_user" ($v.presence.maxConnectionsPerUser | int64) -}}
{{- end -}}
{{- /* The recovery stream and sessions bucket (on when extraConfig names
       recovery_rooms) get as many replicas as presence's bucket. */ -}}
{{- $_ := set $s "recovery_replicas" (include "roomcast.presenceReplicas" $root | int64) -}}
{{- with $v.tracing.otlpEndpoint -}}
{{- $_ := set $s "otlp_endpoint" . -}}
{{- $_ := set $s "trace_sample_ratio" ($v.tracing.sampleRatio | float64) -}}
{{- end -}}
{{- if eq $v.nats.auth.method "creds" -}}
{{- $_ := set $s "nats_creds_file" "/etc/roomcast/secrets/nats.creds" -}}
{{- end -}}
{{- if eq .role "edge" -}}
{{- $e := $v.edge -}}
{{- $_ := set $s "listen" (printf "%s:%d" $v.listenAddress ($e.ports.http | int)) -}}
{{- $_ := set $s "admin_listen" (printf "%s:%d" $v.listenAddress ($e.ports.admin | int)) -}}
{{- $_ := set $s "path" $v.socketio.path -}}
{{- $_ := set $s "namespaces" $v.socketio.namespaces -}}
{{- $_ := set $s "ping_interval_ms" ($v.socketio.pingIntervalMs | int64) -}}
{{- $_ := set $s "ping_timeout_ms" ($v.socketio.pingTimeoutMs | int64) -}}
{{- $_ := set $s "connect_timeout_ms" ($v.socketio.connectTimeoutMs | int64) -}}
{{- $_ := set $s "upgrade_timeout_ms" ($v.socketio.upgradeTimeoutMs | int64) -}}
{{- $_ := set $s "outbound_queue_bytes" ($v.socketio.outboundQueueBytes | int64) -}}
{{- $_ := set $s "cors_origins" $v.socketio.corsOrigins -}}
{{- $_ := set $s "allow_anonymous" $v.auth.allowAnonymous -}}
{{- if $v.auth.jwt.enabled -}}
{{- if eq $v.auth.jwt.algorithm "RS256" -}}
{{- $_ := set $s "jwt_public_key_file" "/etc/roomcast/secrets/jwt-public-key.pem" -}}
{{- end -}}
{{- with $v.auth.jwt.audience }}{{ $_ := set $s "jwt_audience" . }}{{ end -}}
{{- with $v.auth.jwt.issuer }}{{ $_ := set $s "jwt_issuer" . }}{{ end -}}
{{- $_ := set $s "jwt_rooms_claim" $v.auth.jwt.roomsClaim -}}
{{- $_ := set $s "jwt_leeway_secs" ($v.auth.jwt.leewaySecs | int64) -}}
{{- end -}}
{{- with $v.auth.connectHook.url -}}
{{- $_ := set $s "connect_hook_url" . -}}
{{- $_ := set $s "connect_hook_timeout_ms" ($v.auth.connectHook.timeoutMs | int64) -}}
{{- end -}}
{{- else -}}
{{- $c := $v.control -}}
{{- $_ := set $s "grpc_listen" (printf "%s:%d" $v.listenAddress ($c.ports.grpc | int)) -}}
{{- $_ := set $s "admin_listen" (printf "%s:%d" $v.listenAddress ($c.ports.admin | int)) -}}
{{- $_ := set $s "edge_ttl_ms" ($v.edgeTtlMs | int64) -}}
{{- end -}}
{{- $extra := ternary $v.edge.extraConfig $v.control.extraConfig (eq .role "edge") -}}
{{- toJson (merge (deepCopy $extra) $s) -}}
{{- end -}}

{{/* The settings of one role as a TOML file. */}}
{{- define "roomcast.toml" -}}
# roomcast {{ .role }} settings, rendered by the Helm chart. Keys are the
# binary's flag names in snake_case; ROOMCAST_* variables and flags win over them.
{{- range $k, $val := (include "roomcast.settings" . | fromJson) }}
{{ $k }} = {{ toJson $val }}
{{- end }}
{{- end -}}

{{/* Pod anti-affinity preset: call with (dict "root" $ "component" "edge" "mode" "soft"). */}}
{{- define "roomcast.antiAffinity" -}}
{{- if eq .mode "hard" -}}
podAntiAffinity:
  requiredDuringSchedulingIgnoredDuringExecution:
    - topologyKey: kubernetes.io/hostname
      labelSelector:
        matchLabels:
          {{- include "roomcast.selectorLabels" (dict "root" .root "component" .component) | nindent 10 }}
{{- else if eq .mode "soft" -}}
podAntiAffinity:
  preferredDuringSchedulingIgnoredDuringExecution:
    - weight: 100
      podAffinityTerm:
        topologyKey: kubernetes.io/hostname
        labelSelector:
          matchLabels:
            {{- include "roomcast.selectorLabels" (dict "root" .root "component" .component) | nindent 12 }}
{{- end -}}
{{- end -}}

{{/*
Scheduling of one component: affinity (explicit, else the anti-affinity
preset), topology spread (each constraint gets the component's selector when
it has none), node selector, tolerations, priority class.
Call with (dict "root" $ "component" "edge" "values" .Values.edge).
*/}}
{{- define "roomcast.scheduling" -}}
{{- $c := .values -}}
{{- if $c.affinity }}
affinity:
  {{- toYaml $c.affinity | nindent 2 }}
{{- else if ne $c.podAntiAffinity "none" }}
affinity:
  {{- include "roomcast.antiAffinity" (dict "root" .root "component" .component "mode" $c.podAntiAffinity) | nindent 2 }}
{{- end }}
{{- with $c.topologySpreadConstraints }}
topologySpreadConstraints:
  {{- range . }}
  {{- $tsc := deepCopy . }}
  {{- if not $tsc.labelSelector }}
  {{- $_ := set $tsc "labelSelector" (dict "matchLabels" (include "roomcast.selectorLabels" (dict "root" $.root "component" $.component) | fromYaml)) }}
  {{- end }}
  - {{ toYaml $tsc | nindent 4 | trim }}
  {{- end }}
{{- end }}
{{- with $c.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $c.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $c.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- end -}}

{{/* ROOMCAST_* variables read from the Secret: call with (dict "root" $ "role" "edge"). */}}
{{- define "roomcast.secretEnv" -}}
{{- $v := .root.Values -}}
{{- $secret := include "roomcast.secretName" .root -}}
{{- if and (eq .role "edge") $v.auth.jwt.enabled (eq $v.auth.jwt.algorithm "HS256") }}
- name: ROOMCAST_JWT_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: jwt-secret
{{- end }}
{{- if and (eq .role "control") $v.auth.apiKeys.enabled }}
- name: ROOMCAST_API_KEYS
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: api-keys
{{- end }}
{{- if eq $v.nats.auth.method "token" }}
- name: ROOMCAST_NATS_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: nats-token
{{- else if eq $v.nats.auth.method "userPassword" }}
- name: ROOMCAST_NATS_USER
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: nats-user
- name: ROOMCAST_NATS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: nats-password
{{- else if eq $v.nats.auth.method "nkey" }}
- name: ROOMCAST_NATS_NKEY_SEED
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: nats-nkey-seed
{{- end }}
{{- end -}}

{{/* Files read from the Secret (items of the "secrets" volume), or nothing. */}}
{{- define "roomcast.secretFiles" -}}
{{- $v := .root.Values -}}
{{- if and (eq .role "edge") $v.auth.jwt.enabled (eq $v.auth.jwt.algorithm "RS256") }}
- key: jwt-public-key.pem
  path: jwt-public-key.pem
{{- end }}
{{- if eq $v.nats.auth.method "creds" }}
- key: nats.creds
  path: nats.creds
{{- end }}
{{- end -}}

{{/* A value of the chart-managed Secret: given, else kept from the live Secret, else generated. */}}
{{- define "roomcast.secretValue" -}}
{{- $given := index . 0 -}}
{{- $live := index . 1 -}}
{{- $key := index . 2 -}}
{{- if $given -}}
{{- $given | b64enc -}}
{{- else if hasKey $live $key -}}
{{- index $live $key -}}
{{- else -}}
{{- /* Letters only: NATS reads these from its environment as unquoted config values. */ -}}
{{- randAlpha 40 | b64enc -}}
{{- end -}}
{{- end -}}
