#!/usr/bin/env bash
# Runs Strait's test suite: formatting, lints, then every crate's unit, table and
# end-to-end tests (real gateway processes, echo backends and TLS on loopback; the
# controller's against a real kube-apiserver and etcd).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
mkdir -p target
# The Kubernetes pieces the controller's tests run against (kube-apiserver, etcd,
# kubectl, helm, Istio's and the Gateway API's CRDs): built with Go into a cache outside
# the repository (scripts/kube-tools.sh; a cold build takes some 7 minutes), meanwhile
# formatting and lints are checked.
scripts/kube-tools.sh --print-env >target/kube-tools.env 2>target/kube-tools.log &
tools=$!
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
if ! wait "$tools"; then
  cat target/kube-tools.log >&2
  echo "test: building the Kubernetes test tools failed (scripts/kube-tools.sh, above)" >&2
  exit 1
fi
grep -h 'built .* in [0-9]*s$' target/kube-tools.log >&2 || true
# shellcheck source=/dev/null
. target/kube-tools.env
set +e
cargo test --workspace --locked 2>&1 | tee target/test-output.log
status=${PIPESTATUS[0]}
# The gateway's engine and end-to-end suites (the hardening cases among them) once
# more with every HTTP/1 request on Pingora's proxy: the lean path (the default) and
# the full path are held to the same rules.
echo "== the gateway's suites again with STRAIT_HTTP1_PATH=full" | tee -a target/test-output.log
STRAIT_HTTP1_PATH=full cargo test --locked -p strait-gateway --test engine --test e2e 2>&1 | tee -a target/test-output.log
full=${PIPESTATUS[0]}
[ "$status" -ne 0 ] || status=$full
set -e
# One total for the whole workspace (cargo prints one line per test binary).
awk '/^test result:/ {p += $4; f += $6} END {printf "%d passed, %d failed\n", p, f}' target/test-output.log
exit "$status"
