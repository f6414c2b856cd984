#!/usr/bin/env bash
# The TLS Secret the app.example.com example's Gateway names, written to stdout: a
# self-signed certificate for app.example.com, made in DIR (app.example.com.crt and
# .key, valid DAYS days, 365 by default) unless DIR already has one.
#   scripts/example-secret.sh DIR [DAYS] > secret.yaml
set -euo pipefail
dir=$1
days=${2:-365}
if [ ! -f "$dir/app.example.com.crt" ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days "$days" \
    -subj "/CN=app.example.com" -addext "subjectAltName=DNS:app.example.com" \
    -keyout "$dir/app.example.com.key" -out "$dir/app.example.com.crt" 2>/dev/null
fi
echo "apiVersion: v1"
echo "kind: Secret"
echo "metadata: {name: app-example-com-tls, namespace: default}"
echo "type: kubernetes.io/tls"
echo "stringData:"
echo "  tls.crt: |"; sed 's/^/    /' "$dir/app.example.com.crt"
echo "  tls.key: |"; sed 's/^/    /' "$dir/app.example.com.key"
