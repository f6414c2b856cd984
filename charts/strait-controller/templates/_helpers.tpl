{{/*
Names are fixed, as istiod's are: the sidecars reach the controller at
strait-controller.istio-system.svc, its TLS certificate names that, its Lease is
strait-controller, and the webhook configurations are the ones its flags keep.
*/}}
{{- define "strait-controller.name" -}}strait-controller{{- end }}

{{- define "strait-controller.labels" -}}
app: strait-controller
app.kubernetes.io/name: strait-controller
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: strait
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end }}

{{- define "strait-controller.selector" -}}
app: strait-controller
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "strait-controller.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{- define "strait-controller.webhookSecret" -}}
{{ .Values.webhooks.certificate.secretName | default "strait-controller-webhook-cert" }}
{{- end }}

{{/* The controller's namespace: istio-system, where the binaries look for the mesh config. */}}
{{- define "strait-controller.namespace" -}}
{{- if ne .Release.Namespace "istio-system" -}}
{{- fail (printf "strait-controller must be installed in istio-system (helm install -n istio-system), not %q: the mesh config, the CA's Secrets and the sidecars' controller address are there" .Release.Namespace) -}}
{{- end -}}
{{ .Release.Namespace }}
{{- end }}

{{/* The webhook clientConfig for `path`: the Service, or `webhooks.url` in development. */}}
{{- define "strait-controller.clientConfig" -}}
{{- if .root.Values.webhooks.url -}}
url: {{ printf "%s%s" (trimSuffix "/" .root.Values.webhooks.url) .path | quote }}
{{- else -}}
service:
  name: strait-controller
  namespace: {{ include "strait-controller.namespace" .root }}
  path: {{ .path }}
  port: 443
{{- end }}
{{- end }}
