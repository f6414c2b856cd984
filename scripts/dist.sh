#!/usr/bin/env bash
# Builds Strait's binaries as they ship (the Dockerfile) and as the benchmarks measure
# them: cargo's `dist` profile (whole-program LTO, one codegen unit, start-up-only
# crates for size), with the functions laid out in the order a training run used them.
#   scripts/dist.sh -p strait-gateway -p strait-sidecar     # any `cargo build` selection
#   RETRAIN=1 scripts/dist.sh ...                           # measure the order again
# Binaries land in target/dist/. The order is the list of functions the gateway ran
# while serving the app.example.com example (start-up, HTTP/1 and HTTP/2 over TLS and
# plain, the admin, metrics and health ports) under callgrind, hottest first; lld packs
# them together (gateway/build.rs), which takes the gateway's idle resident memory from
# about 15 MiB to about 10. It is measured again whenever the gateway's code changed
# since the last measurement. Needs valgrind, openssl and curl.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
B=$TARGET/dist
ORDER=$TARGET/dist-order.txt
export STRAIT_LINK_ORDER=$ORDER
for tool in valgrind callgrind_control openssl curl; do
  command -v $tool >/dev/null || { echo "dist: needs $tool (apt-get install valgrind openssl curl)" >&2; exit 1; }
done
mkdir -p "$TARGET"
[ -f "$ORDER" ] || : >"$ORDER"

# The training run's gateway is the one shipped: built with the same selection, since
# cargo unifies the selected packages' features, which changes the symbols' names.
build() { cargo build --profile dist --locked -p strait-gateway "$@"; }
# Linked with the current order (none on a first build).
build "$@"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

W=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done; rm -rf "$W"; }
trap cleanup EXIT

train() {
  local echo_port http https admin health metrics
  echo_port=$(free_port) http=$(free_port) https=$(free_port) admin=$(free_port) health=$(free_port) metrics=$(free_port)
  "$B/strait-echo" --listen "127.0.0.1:$echo_port" --name stable --app-version v1 >/dev/null 2>&1 &
  pids+=($!)
  disown $!
  mkdir -p "$W/conf"
  cp examples/app-example-com/*.yaml "$W/conf/"
  rm -f "$W"/conf/*generated*
  sed -i "s/900[123]/$echo_port/" "$W/conf/serviceentry.yaml"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj "/CN=app.example.com" -addext "subjectAltName=DNS:app.example.com" \
    -keyout "$W/tls.key" -out "$W/tls.crt" 2>/dev/null
  {
    printf 'apiVersion: v1\nkind: Secret\nmetadata: {name: app-example-com-tls, namespace: default}\n'
    printf 'type: kubernetes.io/tls\nstringData:\n  tls.crt: |\n'
    sed 's/^/    /' "$W/tls.crt"
    echo "  tls.key: |"
    sed 's/^/    /' "$W/tls.key"
  } >"$W/conf/secret.yaml"
  valgrind --tool=callgrind --demangle=no --callgrind-out-file="$W/cg.out" \
    "$B/strait-gateway" --config-dir "$W/conf" --bind-address 127.0.0.1 --namespace default \
    "--port-map=80=$http,443=$https" "--admin-port=$admin" "--health-port=$health" \
    "--metrics-port=$metrics" --threads=1 >"$W/gateway.log" 2>&1 &
  local vp=$!
  pids+=($vp)
  # No "Killed" notice when it is stopped.
  disown $vp
  local ready=""
  for _ in $(seq 240); do
    if curl -sf -o /dev/null "http://127.0.0.1:$health/healthz/ready"; then ready=1; break; fi
    sleep 0.5
  done
  [ -n "$ready" ] || { echo "dist: the training gateway did not start:" >&2; tail -20 "$W/gateway.log" >&2; return 1; }
  callgrind_control -d "$vp" >/dev/null 2>&1
  local urls=()
  for _ in $(seq 200); do urls+=("http://127.0.0.1:$http/"); done
  # curl writes every answer but the first to stdout.
  curl -sf -o /dev/null -H "Host: app.example.com" "${urls[@]}" >/dev/null
  local tls=(--cacert "$W/tls.crt" --resolve "app.example.com:$https:127.0.0.1")
  urls=()
  for _ in $(seq 50); do urls+=("https://app.example.com:$https/"); done
  curl -sf -o /dev/null --http1.1 "${tls[@]}" "${urls[@]}" >/dev/null
  curl -sf -o /dev/null --http2 "${tls[@]}" "${urls[@]}" >/dev/null
  curl -s -o /dev/null -H "Host: unknown.example.com" "http://127.0.0.1:$http/"
  for path in /stats /config_dump /clusters; do curl -s -o /dev/null "http://127.0.0.1:$admin$path"; done
  curl -sf -o /dev/null "http://127.0.0.1:$metrics/stats/prometheus"
  callgrind_control -d "$vp" >/dev/null 2>&1
  python3 scripts/link_order.py "$W/cg.out.1" "$W/cg.out.2"
  cleanup
  pids=()
}

# The order is measured again when the gateway is not the binary it was last built into.
stamp=$(sha256sum "$B/strait-gateway" | cut -d' ' -f1)
if [ ! -s "$ORDER" ] || [ -n "${RETRAIN:-}" ] || [ "$stamp" != "$(cat "$ORDER.built" 2>/dev/null)" ]; then
  echo "dist: measuring the function order (the gateway under callgrind)..." >&2
  train >"$ORDER.new"
  mv "$ORDER.new" "$ORDER"
  echo "dist: $(wc -l <"$ORDER") functions ordered" >&2
  # Cargo does not watch the list (gateway/build.rs): newer crate roots make it link
  # the two ordered binaries again, and only them.
  touch gateway/src/bin/strait-gateway.rs mesh-sidecar/src/main.rs
fi
build "$@"
sha256sum "$B/strait-gateway" | cut -d' ' -f1 >"$ORDER.built"
