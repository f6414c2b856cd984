{{- define "strait-gateway.name" -}}
{{ .Release.Name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The gateway's own labels (Gateway selectors match them): `labels`, else kind's. */}}
{{- define "strait-gateway.gatewayLabels" -}}
{{- if .Values.labels -}}
{{ toYaml .Values.labels }}
{{- else if eq .Values.kind "egress" -}}
app: istio-egressgateway
istio: egressgateway
{{- else -}}
app: istio-ingressgateway
istio: ingressgateway
{{- end }}
{{- end }}

{{- define "strait-gateway.selector" -}}
app.kubernetes.io/name: strait-gateway
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "strait-gateway.labels" -}}
{{ include "strait-gateway.selector" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: {{ .Values.kind }}-gateway
app.kubernetes.io/part-of: strait
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end }}

{{- define "strait-gateway.serviceAccount" -}}
{{ .Values.serviceAccount.name | default (include "strait-gateway.name" .) }}
{{- end }}

{{/* `--labels`: KEY=VALUE,... of the gateway's labels. */}}
{{- define "strait-gateway.labelsFlag" -}}
{{- $pairs := list -}}
{{- range $k, $v := (include "strait-gateway.gatewayLabels" . | fromYaml) -}}
{{- $pairs = append $pairs (printf "%s=%s" $k $v) -}}
{{- end -}}
{{ join "," $pairs }}
{{- end }}

{{/* `--port-map`: FROM=TO for each Service port whose targetPort differs. */}}
{{- define "strait-gateway.portMap" -}}
{{- $pairs := list -}}
{{- range .Values.service.ports -}}
{{- if ne (int .port) (int .targetPort) -}}
{{- $pairs = append $pairs (printf "%d=%d" (int .port) (int .targetPort)) -}}
{{- end -}}
{{- end -}}
{{ join "," $pairs }}
{{- end }}

{{/* The drain fits in the grace period, or the chart refuses to render. */}}
{{- define "strait-gateway.checkDrain" -}}
{{- $used := add .Values.drainSeconds .Values.preStopSleepSeconds -}}
{{- if ge (int $used) (int .Values.terminationGracePeriodSeconds) -}}
{{- fail (printf "drainSeconds (%d) + preStopSleepSeconds (%d) must stay below terminationGracePeriodSeconds (%d): Kubernetes kills the gateway at the end of the grace period, cutting requests still draining" (int .Values.drainSeconds) (int .Values.preStopSleepSeconds) (int .Values.terminationGracePeriodSeconds)) -}}
{{- end -}}
{{- end }}

{{- define "strait-gateway.configMap" -}}
{{ .Values.config.existingConfigMap | default (printf "%s-config" (include "strait-gateway.name" .)) }}
{{- end }}
