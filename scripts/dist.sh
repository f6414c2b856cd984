#!/usr/bin/env bash
# Builds Strait's binaries as they ship (the Dockerfile) and as the benchmarks measure
# them: cargo's `dist` profile (whole-program LTO, one codegen unit, start-up-only
# crates for size), with the functions laid out in the order a training run used them.
#   scripts/dist.sh -p strait-gateway -p strait-sidecar     # any `cargo build` selection
#   RETRAIN=1 scripts/dist.sh ...                           # measure the order again
# Binaries land in target/dist/. The order is the list of functions that ran, hottest
# first, under callgrind: the gateway serving the app.example.com example (start-up,
# HTTP/1 and HTTP/2 over TLS and plain, the admin, metrics and health ports) and the
# sidecar starting up. lld packs them together (gateway/build.rs), which takes the
# gateway's idle resident memory from about 15 MiB to about 11. It is measured again
# whenever the gateway or the sidecar changed since. Needs valgrind, openssl and curl.
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
build() { cargo build --profile dist --locked -p strait-gateway -p strait-sidecar "$@"; }
# Linked with the current order (none on a first build).
build "$@"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

W=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done; rm -rf "$W"; }
trap cleanup EXIT

# Starts NAME's command (after HEALTH_PORT) under callgrind, its profile in $W/NAME.out,
# and waits until its health port says ready; the process id goes to $profiled.
profile_start() {
  local name=$1 health=$2
  shift 2
  valgrind --tool=callgrind --demangle=no --callgrind-out-file="$W/$name.out" "$@" >"$W/$name.log" 2>&1 &
  profiled=$!
  pids+=("$profiled")
  # No "Killed" notice when it is stopped.
  disown "$profiled"
  for _ in $(seq 240); do
    curl -sf -o /dev/null "http://127.0.0.1:$health/healthz/ready" && return 0
    sleep 0.5
  done
  echo "dist: the training $name did not start:" >&2
  tail -20 "$W/$name.log" >&2
  return 1
}

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
  scripts/example-secret.sh "$W" 2 >"$W/conf/secret.yaml"
  profile_start gateway "$health" "$B/strait-gateway" --config-dir "$W/conf" \
    --bind-address 127.0.0.1 --namespace default "--port-map=80=$http,443=$https" \
    "--admin-port=$admin" "--health-port=$health" "--metrics-port=$metrics" --threads=1
  callgrind_control -d "$profiled" >/dev/null 2>&1
  local urls=()
  for _ in $(seq 200); do urls+=("http://127.0.0.1:$http/"); done
  # curl writes every answer but the first to stdout.
  curl -sf -o /dev/null -H "Host: app.example.com" "${urls[@]}" >/dev/null
  local tls=(--cacert "$W/app.example.com.crt" --resolve "app.example.com:$https:127.0.0.1")
  urls=()
  for _ in $(seq 50); do urls+=("https://app.example.com:$https/"); done
  curl -sf -o /dev/null --http1.1 "${tls[@]}" "${urls[@]}" >/dev/null
  curl -sf -o /dev/null --http2 "${tls[@]}" "${urls[@]}" >/dev/null
  curl -s -o /dev/null -H "Host: unknown.example.com" "http://127.0.0.1:$http/"
  for path in /stats /config_dump /clusters; do curl -s -o /dev/null "http://127.0.0.1:$admin$path"; done
  curl -sf -o /dev/null "http://127.0.0.1:$metrics/stats/prometheus"
  callgrind_control -d "$profiled" >/dev/null 2>&1
  train_sidecar
  python3 scripts/link_order.py "$W/gateway.out.2" "$W/gateway.out.1" "$W/sidecar.out.1"
  cleanup
  pids=()
}

# The sidecar's own start-up (identity, mesh configuration, capture listeners), run
# outside a pod on free ports with a workload certificate of a throwaway CA; its request
# path is the engine's, which the gateway's run already ordered.
train_sidecar() {
  local id=$W/identity ports=()
  mkdir -p "$id"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj "/O=cluster.local" -addext basicConstraints=critical,CA:TRUE \
    -addext keyUsage=critical,keyCertSign -keyout "$W/ca.key" -out "$id/root-cert.pem" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/O=training" \
    -keyout "$id/key.pem" -out "$W/workload.csr" 2>/dev/null
  printf 'subjectAltName=URI:spiffe://cluster.local/ns/shop/sa/reviews\nextendedKeyUsage=serverAuth,clientAuth\n' >"$W/workload.ext"
  openssl x509 -req -in "$W/workload.csr" -CA "$id/root-cert.pem" -CAkey "$W/ca.key" -days 2 \
    -extfile "$W/workload.ext" -out "$id/cert-chain.pem" 2>/dev/null
  for _ in 1 2 3 4 5; do ports+=("$(free_port)"); done
  profile_start sidecar "${ports[3]}" "$B/strait-sidecar" run --config-dir examples/mesh \
    --identity-dir "$id" --namespace shop --service-account reviews --pod-name reviews-v1 \
    --pod-ip 127.0.0.1 --labels app=reviews,version=v1 --bind-address 127.0.0.1 \
    --outbound-port "${ports[0]}" --inbound-port "${ports[1]}" --admin-port "${ports[2]}" \
    --health-port "${ports[3]}" --metrics-port "${ports[4]}" --threads 1
  curl -s -o /dev/null "http://127.0.0.1:${ports[2]}/stats"
  curl -s -o /dev/null "http://127.0.0.1:${ports[4]}/stats/prometheus"
  callgrind_control -d "$profiled" >/dev/null 2>&1
}

# The order is measured again when the binaries are not those it was last built into.
stamp() { cat "$B/strait-gateway" "$B/strait-sidecar" | sha256sum | cut -d' ' -f1; }
stamp=$(stamp)
if [ ! -s "$ORDER" ] || [ -n "${RETRAIN:-}" ] || [ "$stamp" != "$(cat "$ORDER.built" 2>/dev/null)" ]; then
  echo "dist: measuring the function order (the gateway and the sidecar under callgrind)..." >&2
  train >"$ORDER.new"
  mv "$ORDER.new" "$ORDER"
  echo "dist: $(wc -l <"$ORDER") functions ordered" >&2
  # Cargo does not watch the list (gateway/build.rs): newer crate roots make it link
  # the two ordered binaries again, and only them.
  touch gateway/src/bin/strait-gateway.rs mesh-sidecar/src/main.rs
fi
build "$@"
stamp >"$ORDER.built"
