#!/usr/bin/env bash
# Instructions per proxied request, counted by callgrind: the noise-free figure behind
# the CPU tables. Each proxy runs under valgrind; after a warm-up, REQUESTS keep-alive
# requests go through it on one connection and callgrind's counters for exactly that
# stretch are divided by REQUESTS. Counts user space only (the kernel's share of a
# request, about half of it, is the same for every proxy: see loadtests/README.md).
#   loadtests/bench/instructions.sh            # bare Pingora, Strait, nginx
#   REQUESTS=5000 loadtests/bench/instructions.sh
#   ONLY=strait KEEP=/tmp/cg loadtests/bench/instructions.sh   # one target; keep its
#     callgrind profile of the measured stretch (KEEP/strait.out) for callgrind_top.py
# A run of every target writes its table to loadtests/results/instructions.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
REQUESTS=${REQUESTS:-2000}
ONLY=${ONLY:-}
KEEP=${KEEP:-}
command -v valgrind >/dev/null || { echo "needs valgrind (apt-get install valgrind)" >&2; exit 1; }
[ -n "${NO_BUILD:-}" ] || scripts/dist.sh -p strait-gateway -p strait-sidecar -p strait-loadtests --bins
B=target/dist
W=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done; rm -rf "$W"; }
trap cleanup EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
urls() { # $1 port, $2 count, $3 path: the same URL $2 times, so curl reuses one connection
  for _ in $(seq "$2"); do printf 'http://127.0.0.1:%s%s\n' "$1" "$3"; done > "$W/urls"
  sed 's/^\(.*\)$/url = \1\noutput = \/dev\/null/' "$W/urls" > "$W/curlrc"
}

BACKEND=$(port)
$B/bench-backend --listen "127.0.0.1:$BACKEND" >/dev/null 2>&1 &
PIDS+=($!)
disown $!

# count NAME PORT HOST PATH -- COMMAND...
count() {
  local name=$1 p=$2 host=$3 path=$4
  shift 5
  if [ -n "$ONLY" ] && [ "$ONLY" != "$name" ]; then return; fi
  valgrind --tool=callgrind --callgrind-out-file="$W/$name.out" "$@" >"$W/$name.log" 2>&1 &
  local vp=$!
  disown "$vp"
  PIDS+=($vp)
  for _ in $(seq 120); do
    curl -s -o /dev/null "http://127.0.0.1:$p/" && break
    sleep 0.5
  done
  urls "$p" 300 "$path"
  curl -s -H "Host: $host" -H "x-tenant: t1" -K "$W/curlrc"
  callgrind_control -d "$vp" >/dev/null 2>&1
  urls "$p" "$REQUESTS" "$path"
  curl -s -w '%{http_code}\n' -H "Host: $host" -H "x-tenant: t1" -K "$W/curlrc" | sort | uniq -c > "$W/$name.codes"
  callgrind_control -d "$vp" >/dev/null 2>&1
  kill -9 "$vp"
  local total
  total=$(grep '^totals:' "$W/$name.out.2" | cut -d' ' -f2)
  printf '| %s | %s | %s |\n' "$name" "$((total / REQUESTS))" "$(tr -s ' \n' ' ' < "$W/$name.codes")" | tee -a "$W/table"
  if [ -n "$KEEP" ]; then
    mkdir -p "$KEEP"
    cp "$W/$name.out.2" "$KEEP/$name.out"
  fi
}

printf '| target | instructions/request | status codes |\n|---|---|---|\n' | tee "$W/table"
P=$(port)
count pingora-bare "$P" app.example.com / -- $B/pingora-bare --listen "127.0.0.1:$P" --upstream "127.0.0.1:$BACKEND"

mkdir -p "$W/strait"
cp examples/app-example-com/{gateway,virtualservice,destinationrule}.yaml "$W/strait/"
sed "s/900[123]/$BACKEND/g" examples/app-example-com/serviceentry.yaml > "$W/strait/serviceentry.yaml"
# Without the Secret the HTTPS server is skipped (with a warning); HTTP is what is measured.
P=$(port)
count strait "$P" app.example.com / -- $B/strait-gateway --config-dir "$W/strait" --bind-address 127.0.0.1 \
  --namespace default "--port-map=80=$P,443=$(port)" --admin-port=0 "--health-port=$(port)" --threads=1

if command -v nginx >/dev/null; then
  P=$(port)
  mkdir -p "$W/nginx"
  cat > "$W/nginx/nginx.conf" <<EOF
worker_processes 1;
daemon off;
master_process off;
pid $W/nginx/nginx.pid;
error_log $W/nginx/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $W/nginx/body;
  proxy_temp_path $W/nginx/proxy;
  keepalive_requests 10000000;
  upstream backend { server 127.0.0.1:$BACKEND; keepalive 16; }
  server {
    listen 127.0.0.1:$P;
    location / { proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
EOF
  count nginx "$P" app.example.com / -- nginx -c "$W/nginx/nginx.conf" -p "$W/nginx" -e "$W/nginx/stderr.log"
fi

if [ -z "$ONLY" ]; then
  {
    echo "## Instructions per request (callgrind, $(date -u '+%Y-%m-%d %H:%M UTC'))"
    echo
    echo "Machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores," \
      "Linux $(uname -r). $(valgrind --version); $(nginx -v 2>&1 || true); Cargo.lock sha256 $(sha256sum Cargo.lock | cut -c1-12)."
    echo
    echo "User-space instructions per proxied request: $REQUESTS keep-alive requests on one connection" \
      "after 300 of warm-up, tiny responses, HTTP/1.1, one worker (loadtests/bench/instructions.sh)." \
      "Both Pingora-based proxies built with the \`dist\` profile (scripts/dist.sh; whole-program LTO), Strait with its function order too."
    echo
    cat "$W/table"
  } > loadtests/results/instructions.md
fi
