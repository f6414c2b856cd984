#!/usr/bin/env bash
# Smoke test of the real Kubernetes tools from scripts/kube-tools.sh, and the reference for
# how Strait's tests start them (envtest's way: etcd + kube-apiserver on loopback, no
# kubelet, no controller-manager):
#   1. etcd on free loopback ports, data in a temporary folder, --unsafe-no-fsync;
#   2. kube-apiserver on a free loopback port with a token file (an admin in
#      system:masters), RBAC, a service-account key made with openssl, serving
#      certificates generated into --cert-dir; since Kubernetes 1.37 the default (lease)
#      endpoint reconciler refuses a loopback --advertise-address, hence
#      --endpoint-reconciler-type=none (the default/kubernetes Service gets no endpoints);
#      the ServiceAccount admission plugin is disabled: with no controller-manager no
#      namespace gets its "default" ServiceAccount, and Pods would be refused (for the
#      same reason a deleted namespace stays Terminating: no namespace controller);
#   3. waits for /readyz, applies the Istio and Gateway API CRDs, creates a namespace, an
#      Istio VirtualService and a Gateway API HTTPRoute, reads them back, checks that the
#      CRDs' validation rejects a bad HTTPRoute, creates a Pod, a Service and an
#      EndpointSlice, reads with kubectl, installs a chart with helm;
#   4. stops everything and removes the temporary folder.
# Uses STRAIT_KUBE_APISERVER, STRAIT_KUBECTL, STRAIT_ETCD, STRAIT_HELM, STRAIT_ISTIO_CRDS
# and STRAIT_GATEWAY_API_CRDS when set, otherwise runs `scripts/kube-tools.sh --print-env`.
# KEEP=1 keeps the temporary folder (logs, kubeconfig) for a look afterwards.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
if [ -z "${STRAIT_KUBE_APISERVER:-}" ] || [ -z "${STRAIT_KUBECTL:-}" ] || [ -z "${STRAIT_ETCD:-}" ] ||
  [ -z "${STRAIT_HELM:-}" ] || [ -z "${STRAIT_ISTIO_CRDS:-}" ] || [ -z "${STRAIT_GATEWAY_API_CRDS:-}" ]; then
  tools_env=$("$here/kube-tools.sh" --print-env)
  eval "$tools_env"
fi

log() { echo "smoke: $*" >&2; }
now_ms() { date +%s%3N; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/strait-kube-smoke.XXXXXX")
etcd_pid=""
apiserver_pid=""
failed=1
stop() {
  # Only the two processes this script started, by pid.
  if [ -n "$apiserver_pid" ]; then kill "$apiserver_pid" 2>/dev/null || true; wait "$apiserver_pid" 2>/dev/null || true; fi
  if [ -n "$etcd_pid" ]; then kill "$etcd_pid" 2>/dev/null || true; wait "$etcd_pid" 2>/dev/null || true; fi
  if [ "$failed" = 1 ]; then
    for f in etcd.log apiserver.log; do
      [ -s "$tmp/$f" ] && { echo "--- last lines of $f:" >&2; tail -n 30 "$tmp/$f" >&2; }
    done
    echo "smoke: FAILED" >&2
  fi
  if [ "${KEEP:-0}" = 1 ]; then log "kept $tmp"; else rm -rf "$tmp"; fi
}
trap stop EXIT
fail() { echo "smoke: error: $*" >&2; exit 1; }

# free_port <var>: a loopback port for a server, below the kernel's ephemeral range (no
# outgoing connection can hold it) and absent from /proc/net/tcp*. A start that still
# loses a race for its port is retried with new ones. (Tests in Rust would rather bind
# :0 and pass the listener where the server allows it.)
used_ports=" "
free_port() {
  local lo p
  read -r lo _ </proc/sys/net/ipv4/ip_local_port_range || lo=32768
  [ "$lo" -gt 11000 ] || lo=32768
  while :; do
    p=$((10000 + RANDOM % (lo - 10000)))
    case $used_ports in *" $p "*) continue ;; esac
    grep -qi "$(printf ':%04X ' "$p")" /proc/net/tcp /proc/net/tcp6 2>/dev/null && continue
    used_ports+="$p "
    printf -v "$1" %s "$p"
    return
  done
}
# wait_up <pid> <what> <seconds> <command...>: polls the command every 100 ms until it
# succeeds; returns 1 as soon as process <pid> has exited, fails after <seconds>.
wait_up() {
  local pid=$1 what=$2 deadline=$(($(date +%s) + $3))
  shift 3
  until "$@" >/dev/null 2>&1; do
    kill -0 "$pid" 2>/dev/null || return 1
    [ "$(date +%s)" -lt "$deadline" ] || fail "timed out waiting for $what"
    sleep 0.1
  done
}
# wait_for <what> <seconds> <command...>: the same, with the API server running.
wait_for() {
  wait_up "$apiserver_pid" "$@" || fail "kube-apiserver exited while waiting for $1"
}
# After a server exited during start-up: retry if it lost a port, else fail.
retry_or_fail() { # <name> <log> <attempt>
  if grep -q 'address already in use' "$2" && [ "$3" -lt 5 ]; then
    log "$1 lost a race for its port, retrying with another"
  else
    fail "$1 exited during start-up"
  fi
}

# --- etcd ---------------------------------------------------------------------------
t0=$(now_ms)
for attempt in 1 2 3 4 5; do
  free_port etcd_client
  free_port etcd_peer
  rm -rf "$tmp/etcd"
  "$STRAIT_ETCD" \
    --name=default \
    --data-dir="$tmp/etcd" \
    --listen-client-urls="http://127.0.0.1:$etcd_client" \
    --advertise-client-urls="http://127.0.0.1:$etcd_client" \
    --listen-peer-urls="http://127.0.0.1:$etcd_peer" \
    --initial-advertise-peer-urls="http://127.0.0.1:$etcd_peer" \
    --initial-cluster="default=http://127.0.0.1:$etcd_peer" \
    --unsafe-no-fsync \
    --log-level=warn \
    >"$tmp/etcd.log" 2>&1 &
  etcd_pid=$!
  wait_up "$etcd_pid" "etcd's /health" 30 curl -sf "http://127.0.0.1:$etcd_client/health" && break
  wait "$etcd_pid" || true
  etcd_pid=""
  retry_or_fail etcd "$tmp/etcd.log" "$attempt"
done
log "etcd $("$STRAIT_ETCD" --version | awk 'NR==1{print $3}') healthy on 127.0.0.1:$etcd_client after $(($(now_ms) - t0)) ms"

# --- kube-apiserver -------------------------------------------------------------------
token=$(openssl rand -hex 24)
# token,user,uid,"group,..."
echo "$token,strait-admin,strait-admin,\"system:masters\"" >"$tmp/tokens.csv"
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$tmp/sa.key" 2>/dev/null
# The serving certificate is self-signed, generated into --cert-dir at start-up;
# apiserver.crt holds it and its CA.
ca=$tmp/certs/apiserver.crt
api() { curl -sS --cacert "$ca" -H "Authorization: Bearer $token" "$@"; }
t0=$(now_ms)
for attempt in 1 2 3 4 5; do
  free_port port
  server="https://127.0.0.1:$port"
  rm -rf "$tmp/certs" && mkdir "$tmp/certs"
  "$STRAIT_KUBE_APISERVER" \
    --etcd-servers="http://127.0.0.1:$etcd_client" \
    --cert-dir="$tmp/certs" \
    --secure-port="$port" \
    --bind-address=127.0.0.1 \
    --advertise-address=127.0.0.1 \
    --endpoint-reconciler-type=none \
    --service-cluster-ip-range=10.0.0.0/24 \
    --service-account-issuer="https://127.0.0.1:$port" \
    --service-account-key-file="$tmp/sa.key" \
    --service-account-signing-key-file="$tmp/sa.key" \
    --authorization-mode=RBAC \
    --token-auth-file="$tmp/tokens.csv" \
    --allow-privileged=true \
    --disable-admission-plugins=ServiceAccount \
    >"$tmp/apiserver.log" 2>&1 &
  apiserver_pid=$!
  wait_up "$apiserver_pid" "kube-apiserver's serving certificate" 60 test -s "$ca" &&
    wait_up "$apiserver_pid" "kube-apiserver's /readyz" 120 api -f "$server/readyz" && break
  wait "$apiserver_pid" || true
  apiserver_pid=""
  retry_or_fail kube-apiserver "$tmp/apiserver.log" "$attempt"
done
log "kube-apiserver $(api "$server/version" | sed -n 's/.*"gitVersion": "\([^"]*\)".*/\1/p') ready on $server after $(($(now_ms) - t0)) ms"

# --- CRDs -----------------------------------------------------------------------------
# POSTs every document of the YAML files given, to the collection its kind belongs to.
apply_yaml() {
  local file doc kind url code n=0
  for file in "$@"; do
    rm -rf "$tmp/docs" && mkdir "$tmp/docs"
    awk -v dir="$tmp/docs" '/^---/ { n++; next } { print > (dir "/" sprintf("%04d", n) ".yaml") }' "$file"
    for doc in "$tmp"/docs/*.yaml; do
      kind=$(awk '/^kind:/ { print $2; exit }' "$doc")
      case "$kind" in
        "") continue ;; # comments only
        CustomResourceDefinition) url=/apis/apiextensions.k8s.io/v1/customresourcedefinitions ;;
        ValidatingAdmissionPolicy) url=/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicies ;;
        ValidatingAdmissionPolicyBinding) url=/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicybindings ;;
        *) fail "$file: no collection known for kind $kind" ;;
      esac
      code=$(api -o "$tmp/out.json" -w '%{http_code}' -X POST -H 'Content-Type: application/yaml' \
        --data-binary "@$doc" "$server$url")
      [ "$code" = 201 ] || { cat "$tmp/out.json" >&2; fail "$file: POST $kind answered $code"; }
      n=$((n + 1))
    done
  done
  echo "$n"
}
t0=$(now_ms)
n=$(apply_yaml "$STRAIT_ISTIO_CRDS"/*.yaml)
log "applied $n Istio objects from $STRAIT_ISTIO_CRDS in $(($(now_ms) - t0)) ms"
t0=$(now_ms)
n=$(apply_yaml "$STRAIT_GATEWAY_API_CRDS"/*.yaml)
log "applied $n Gateway API objects from $STRAIT_GATEWAY_API_CRDS in $(($(now_ms) - t0)) ms"

established() {
  api -f "$server/apis/apiextensions.k8s.io/v1/customresourcedefinitions/$1" |
    tr -d ' \n' | grep -q '"type":"Established","status":"True"'
}
t0=$(now_ms)
wait_for "the VirtualService CRD to be established" 30 established virtualservices.networking.istio.io
wait_for "the HTTPRoute CRD to be established" 30 established httproutes.gateway.networking.k8s.io
# Established is not quite "served": discovery may lag a little.
wait_for "networking.istio.io/v1 to be served" 30 api -f "$server/apis/networking.istio.io/v1"
wait_for "gateway.networking.k8s.io/v1 to be served" 30 api -f "$server/apis/gateway.networking.k8s.io/v1"
log "CRDs established and served after $(($(now_ms) - t0)) ms"

# --- objects ----------------------------------------------------------------------------
post() { # post <path> <json> -> expects 201
  local code
  code=$(api -o "$tmp/out.json" -w '%{http_code}' -X POST -H 'Content-Type: application/json' \
    --data-binary "$2" "$server$1")
  [ "$code" = 201 ] || { cat "$tmp/out.json" >&2; fail "POST $1 answered $code"; }
}
post /api/v1/namespaces '{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"smoke"}}'
post /apis/networking.istio.io/v1/namespaces/smoke/virtualservices '{
  "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
  "metadata": {"name": "reviews"},
  "spec": {"hosts": ["reviews.smoke.svc.cluster.local"],
           "http": [{"match": [{"uri": {"prefix": "/v2"}}],
                     "route": [{"destination": {"host": "reviews", "subset": "v2"}, "weight": 100}]}]}}'
got=$(api -f "$server/apis/networking.istio.io/v1/namespaces/smoke/virtualservices/reviews" | tr -d ' \n')
case "$got" in
  *'"hosts":["reviews.smoke.svc.cluster.local"]'*'"prefix":"/v2"'*) ;;
  *) echo "$got" >&2; fail "the VirtualService read back differs" ;;
esac
log "created and read back VirtualService smoke/reviews"

post /apis/gateway.networking.k8s.io/v1/namespaces/smoke/httproutes '{
  "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
  "metadata": {"name": "web"},
  "spec": {"parentRefs": [{"name": "gw"}], "hostnames": ["web.example.com"],
           "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/api"}}],
                      "backendRefs": [{"name": "web", "port": 8080}]}]}}'
got=$(api -f "$server/apis/gateway.networking.k8s.io/v1/namespaces/smoke/httproutes/web" | tr -d ' \n')
case "$got" in
  *'"hostnames":["web.example.com"]'*) ;;
  *) echo "$got" >&2; fail "the HTTPRoute read back differs" ;;
esac
log "created and read back HTTPRoute smoke/web"
# The CRD's own validation (OpenAPI schema + CEL rules) runs in the API server: a path
# that does not start with "/" is refused with 422.
code=$(api -o "$tmp/out.json" -w '%{http_code}' -X POST -H 'Content-Type: application/json' --data-binary '{
  "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": {"name": "bad"},
  "spec": {"rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "api"}}]}]}}' \
  "$server/apis/gateway.networking.k8s.io/v1/namespaces/smoke/httproutes")
[ "$code" = 422 ] || { cat "$tmp/out.json" >&2; fail "a bad HTTPRoute answered $code, not 422"; }
log "a bad HTTPRoute is refused (422): $(sed -n 's/^  "message": "\(.*\)",$/\1/p' "$tmp/out.json" | cut -c1-160)"

# What tests stand in for a cluster's kubelet and controllers with: a Pod (accepted with
# no ServiceAccount in the namespace), a Service (its ClusterIP comes from
# --service-cluster-ip-range) and the EndpointSlice a controller would have written.
post /api/v1/namespaces/smoke/pods '{"apiVersion":"v1","kind":"Pod",
  "metadata":{"name":"web-0","labels":{"app":"web"}},
  "spec":{"containers":[{"name":"web","image":"example.invalid/web"}]}}'
post /api/v1/namespaces/smoke/services '{"apiVersion":"v1","kind":"Service","metadata":{"name":"web"},
  "spec":{"selector":{"app":"web"},"ports":[{"name":"http","port":8080}]}}'
cluster_ip=$(sed -n 's/^    "clusterIP": "\(.*\)",$/\1/p' "$tmp/out.json")
case "$cluster_ip" in 10.0.0.*) ;; *) fail "the Service got ClusterIP '$cluster_ip', not one of 10.0.0.0/24" ;; esac
post /apis/discovery.k8s.io/v1/namespaces/smoke/endpointslices '{"apiVersion":"discovery.k8s.io/v1",
  "kind":"EndpointSlice","metadata":{"name":"web-1","labels":{"kubernetes.io/service-name":"web"}},
  "addressType":"IPv4","ports":[{"name":"http","port":8080,"protocol":"TCP"}],
  "endpoints":[{"addresses":["10.1.0.5"],"conditions":{"ready":true},
                "targetRef":{"kind":"Pod","namespace":"smoke","name":"web-0"}}]}'
log "created Pod smoke/web-0, Service smoke/web ($cluster_ip) and its EndpointSlice"

# --- kubectl and helm ------------------------------------------------------------------
cat >"$tmp/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: smoke
  cluster: {server: "$server", certificate-authority: "$ca"}
users:
- name: admin
  user: {token: "$token"}
contexts:
- name: smoke
  context: {cluster: smoke, user: admin, namespace: smoke}
current-context: smoke
EOF
export KUBECONFIG=$tmp/kubeconfig
got=$("$STRAIT_KUBECTL" get virtualservices.networking.istio.io reviews -o 'jsonpath={.spec.http[0].route[0].destination.subset}')
[ "$got" = v2 ] || fail "kubectl read the VirtualService's subset as '$got', not v2"
n=$("$STRAIT_KUBECTL" get crds --no-headers | wc -l)
log "kubectl $("$STRAIT_KUBECTL" version --client | awk '/Client/{print $3}') reads the VirtualService; $n CRDs listed"
export HELM_CACHE_HOME=$tmp/helm/cache HELM_CONFIG_HOME=$tmp/helm/config \
  HELM_DATA_HOME=$tmp/helm/data
t0=$(now_ms)
"$STRAIT_HELM" create "$tmp/demo" >/dev/null
"$STRAIT_HELM" install demo "$tmp/demo" --namespace smoke >"$tmp/helm.out" ||
  { cat "$tmp/helm.out" >&2; fail "helm install failed"; }
"$STRAIT_HELM" list --namespace smoke --deployed --short | grep -qx demo || fail "helm list does not show the release"
api -f "$server/apis/apps/v1/namespaces/smoke/deployments/demo" >/dev/null || fail "the chart's Deployment is missing"
log "helm $("$STRAIT_HELM" version --short) installed a chart (Deployment smoke/demo stored) in $(($(now_ms) - t0)) ms"

failed=0
log "OK"
