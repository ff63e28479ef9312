{{/* Chart name, release-scoped full name, labels. */}}
{{- define "faceproof.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "faceproof.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Component name: callAgent -> call-agent. */}}
{{- define "faceproof.component" -}}
{{- . | kebabcase -}}
{{- end -}}

{{- define "faceproof.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "faceproof.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Selector labels of one component; call with (dict "root" $ "component" "gateway"). */}}
{{- define "faceproof.selectorLabels" -}}
app.kubernetes.io/name: {{ include "faceproof.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "faceproof.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "faceproof.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "faceproof.secretName" -}}
{{- default (printf "%s-settings" (include "faceproof.fullname" .)) .Values.existingSecret -}}
{{- end -}}

{{- define "faceproof.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "faceproof.gpuImage" -}}
{{- printf "%s:%s" .Values.gpuImage.repository (default (printf "%s-gpu" .Chart.AppVersion) .Values.gpuImage.tag) -}}
{{- end -}}

{{/*
The gateway's probe scheme: probes.gateway.scheme when set, else HTTPS when the gateway serves TLS
itself (settings.FACEPROOF_TLS_TERMINATION=native), else HTTP.
*/}}
{{- define "faceproof.probeScheme" -}}
{{- if .Values.probes.gateway.scheme -}}
{{- .Values.probes.gateway.scheme | upper -}}
{{- else if eq (index .Values.settings "FACEPROOF_TLS_TERMINATION" | default "" | toString | lower) "native" -}}
HTTPS
{{- else -}}
HTTP
{{- end -}}
{{- end -}}

{{/* Settings for every container: the ConfigMap, then the Secret. */}}
{{- define "faceproof.envFrom" -}}
- configMapRef:
    name: {{ include "faceproof.fullname" . }}-settings
- secretRef:
    name: {{ include "faceproof.secretName" . }}
{{- end -}}

{{/*
Refuse (at install/template time) the public secrets: a well-known password inside a connection URL,
or the development API token. The gateway refuses them at start too (docs/security.md).
*/}}
{{- define "faceproof.refusePublicSecrets" -}}
{{- $defaults := list "faceproof" "faceproof-secret" "guest" "minioadmin" -}}
{{- $urls := dict "externalPostgres.url" .Values.externalPostgres.url "externalRabbitmq.url" .Values.externalRabbitmq.url "externalS3.url" .Values.externalS3.url -}}
{{- range $name, $url := $urls -}}
{{- if $url -}}
{{- $userinfo := (urlParse $url).userinfo -}}
{{- if contains ":" $userinfo -}}
{{- $password := regexReplaceAll "^[^:]*:" $userinfo "" -}}
{{- if has $password $defaults -}}
{{- fail (printf "%s uses a well-known default password (%s): give the service a password of your own" $name $password) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if eq (toString (index .Values.secretSettings "FACEPROOF_API_TOKEN" | default "")) "faceproof-dev-token" -}}
{{- fail "secretSettings.FACEPROOF_API_TOKEN is the public development token: set a long random token, or \"\" to use API keys only (faceproof keys create NAME)" -}}
{{- end -}}
{{- end -}}
