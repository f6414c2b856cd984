#!/usr/bin/env bash
# Puts Istio's CRDs into the strait-crds chart before it is packaged or installed
# from a checkout: they come from the istio.io/api module pinned in tools/crds/go.mod
# (scripts/kube-tools.sh extracts them into its cache, or $STRAIT_ISTIO_CRDS names
# them), never from the repository, which commits only Strait's own RateLimit CRD.
#   scripts/chart-crds.sh [--gateway-api] [CHART_DIR]   # default: charts/strait-crds
#   helm package charts/strait-crds          # then, or helm install it
# --gateway-api adds the Kubernetes Gateway API's standard CRDs (sigs.k8s.io/gateway-api,
# pinned likewise; $STRAIT_GATEWAY_API_CRDS) for clusters that have none yet.
# Idempotent: the copies are replaced each run (git ignores them).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
gateway_api=false
if [ "${1:-}" = --gateway-api ]; then
  gateway_api=true
  shift
fi
chart=${1:-$root/charts/strait-crds}
[ -f "$chart/Chart.yaml" ] || { echo "chart-crds: $chart is not a chart (no Chart.yaml)" >&2; exit 2; }

if [ -z "${STRAIT_ISTIO_CRDS:-}" ] || { $gateway_api && [ -z "${STRAIT_GATEWAY_API_CRDS:-}" ]; }; then
  # shellcheck source=/dev/null
  . <("$root/scripts/kube-tools.sh" --print-env)
fi
src=${STRAIT_ISTIO_CRDS:?}
shopt -s nullglob
files=("$src"/*.yaml)
[ ${#files[@]} -gt 0 ] || { echo "chart-crds: no .yaml file in $src" >&2; exit 1; }

mkdir -p "$chart/crds"
rm -f "$chart"/crds/istio-*.yaml
for f in "${files[@]}"; do
  cp "$f" "$chart/crds/istio-$(basename "$f")"
done
echo "chart-crds: copied ${#files[@]} file(s) of Istio's CRDs from $src into $chart/crds" >&2
rm -f "$chart"/crds/gateway-api-*.yaml
if $gateway_api; then
  # Only the CRDs: the module's ValidatingAdmissionPolicy (safe upgrades) is not a
  # CRD, and Helm would apply it on every install.
  api=()
  for f in "${STRAIT_GATEWAY_API_CRDS:?}"/*.yaml; do
    grep -q '^kind: CustomResourceDefinition' "$f" && ! grep -q '^kind: ValidatingAdmissionPolicy' "$f" && api+=("$f")
  done
  [ ${#api[@]} -gt 0 ] || { echo "chart-crds: no CRD in $STRAIT_GATEWAY_API_CRDS" >&2; exit 1; }
  for f in "${api[@]}"; do
    cp "$f" "$chart/crds/gateway-api-$(basename "$f")"
  done
  echo "chart-crds: copied ${#api[@]} file(s) of the Gateway API's CRDs from $STRAIT_GATEWAY_API_CRDS" >&2
fi
