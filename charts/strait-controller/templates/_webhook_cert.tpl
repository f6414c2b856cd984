{{/*
The webhook's serving certificate the chart makes (when certificate.secretName is
empty), as a dict of base64 values: tls.crt, tls.key, ca.crt, and the names it was
made for. Made once: an upgrade reuses the Secret in the cluster as long as the
names asked for are the same (a new certificate would need a restart of every
replica for nothing). `helm template` has no cluster and makes a new one each time.
Memoized in .Values so that the Secret and the pod's checksum see the same one.
*/}}
{{- define "strait-controller.webhookCert" -}}
{{- if not (hasKey .Values "__webhookCert") -}}
{{- $ns := include "strait-controller.namespace" . -}}
{{- $dns := list "strait-controller" (printf "strait-controller.%s" $ns) (printf "strait-controller.%s.svc" $ns) (printf "strait-controller.%s.svc.cluster.local" $ns) -}}
{{- $dns = concat $dns .Values.webhooks.certificate.dnsNames -}}
{{- $ips := .Values.webhooks.certificate.ipAddresses -}}
{{- $names := printf "%s|%s|%d" (join "," $dns) (join "," $ips) (int .Values.webhooks.certificate.validityDays) -}}
{{- $existing := lookup "v1" "Secret" $ns "strait-controller-webhook-cert" -}}
{{- $cert := dict -}}
{{- if and $existing (index ($existing.data | default dict) "tls.crt") (eq (index ($existing.metadata.annotations | default dict) "strait.io/certificate-names") $names) -}}
{{- $cert = dict "tls.crt" (index $existing.data "tls.crt") "tls.key" (index $existing.data "tls.key") "ca.crt" (index $existing.data "ca.crt") -}}
{{- else -}}
{{- $days := int .Values.webhooks.certificate.validityDays -}}
{{- $ca := genCA "strait-controller webhook CA" $days -}}
{{- $leaf := genSignedCert "strait-controller" $ips $dns $days $ca -}}
{{- $cert = dict "tls.crt" ($leaf.Cert | b64enc) "tls.key" ($leaf.Key | b64enc) "ca.crt" ($ca.Cert | b64enc) -}}
{{- end -}}
{{- $_ := set $cert "names" $names -}}
{{- $_ := set .Values "__webhookCert" $cert -}}
{{- end -}}
{{- toJson (get .Values "__webhookCert") -}}
{{- end }}
