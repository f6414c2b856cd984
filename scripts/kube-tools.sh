#!/usr/bin/env bash
# Builds the real Kubernetes pieces Strait's tests run against (DESIGN.md, "Kubernetes, for
# real"): kube-apiserver and kubectl, etcd and helm, built from their Go modules through
# the Go module proxy, and the Istio and Gateway API CRDs, read from their modules.
# Versions are pinned in tools/{kube,etcd,helm,crds}/go.mod (and go.sum); the results are
# cached outside the repository, one folder per tool and version:
#   ${STRAIT_TOOLS_CACHE:-$HOME/.cache/strait-tools}/
#     kube-apiserver-<v>/kube-apiserver  kubectl-<v>/kubectl  etcd-<v>/etcd  helm-<v>/helm
#     istio-api-<v>/crds/istio/*.yaml    gateway-api-<v>/crds/gateway-api/*.yaml
# Idempotent: builds only what is missing (a cold build takes minutes; Go's own caches,
# GOMODCACHE and GOCACHE, are the defaults). Progress goes to stderr; stdout stays empty
# unless --print-env is given, which prints the `export STRAIT_...=...` lines tests use:
#   eval "$(scripts/kube-tools.sh --print-env)"
# Needs Go 1.26 or newer (`go` on PATH, or /usr/local/go/bin/go) and the Go module proxy.
set -euo pipefail

usage() { echo "usage: $0 [--print-env]" >&2; }
print_env=0
case "${1:-}" in
  "") ;;
  --print-env) print_env=1 ;;
  -h | --help) usage; exit 0 ;;
  *) usage; exit 2 ;;
esac

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
tools=$root/tools
cache=${STRAIT_TOOLS_CACHE:-$HOME/.cache/strait-tools}

# Each tools/* module stands alone, whatever go.work a parent folder may hold.
export GOWORK=off

# Temporary folders (under $cache) that an early exit leaves behind are removed.
tmps=()
trap 'rm -rf "${tmps[@]}"' EXIT

log() { echo "kube-tools: $*" >&2; }
die() { echo "kube-tools: error: $*" >&2; exit 1; }

# The version of module $2 required by tools/$1/go.mod.
pinned() {
  local v
  v=$(awk -v m="$2" '
    $1 == "require" && $2 == m && $3 ~ /^v/ { print $3; exit }
    $1 == m && $2 ~ /^v/ { print $2; exit }' "$tools/$1/go.mod")
  [ -n "$v" ] || die "tools/$1/go.mod does not require $2"
  echo "$v"
}

kube_v=$(pinned kube k8s.io/kubernetes)
etcd_v=$(pinned etcd go.etcd.io/etcd/server/v3)
helm_v=$(pinned helm helm.sh/helm/v4)
istio_v=$(pinned crds istio.io/api)
gwapi_v=$(pinned crds sigs.k8s.io/gateway-api)

apiserver=$cache/kube-apiserver-$kube_v/kube-apiserver
kubectl=$cache/kubectl-$kube_v/kubectl
etcd=$cache/etcd-$etcd_v/etcd
helm=$cache/helm-$helm_v/helm
istio_crds=$cache/istio-api-$istio_v/crds/istio
gwapi_crds=$cache/gateway-api-$gwapi_v/crds/gateway-api

GO=""
find_go() {
  [ -z "$GO" ] || return 0
  if command -v go >/dev/null; then
    GO=$(command -v go)
  elif [ -x /usr/local/go/bin/go ]; then
    GO=/usr/local/go/bin/go
  else
    die "Go 1.26 or newer is needed to build kube-apiserver, etcd and helm; install it (https://go.dev/dl/) and put it on PATH"
  fi
  # (A Go older than tools/*/go.mod's `go 1.26.0` fetches that toolchain from the module
  # proxy by itself when GOTOOLCHAIN allows it, as it does by default, from Go 1.21 on.)
  log "using $("$GO" version)"
}

# Runs go in tools/$1 with the rest of the arguments; go's own error (e.g. the module
# proxy refusing a module) is printed as is, then this script stops.
go_in() {
  local dir=$1
  shift
  if ! (cd "$tools/$dir" && CGO_ENABLED=0 "$GO" "$@"); then
    die "\`go $1\` failed in tools/$dir (go's error is above)"
  fi
}

# Moves a finished temporary folder into place ($1 -> $2), so that an interrupted or
# concurrent run never leaves a half-built tool behind.
install_dir() {
  chmod 755 "$1"
  mkdir -p "$(dirname "$2")"
  if ! mv -T "$1" "$2" 2>/dev/null; then
    rm -rf "$1"
    [ -d "$2" ] || die "could not move $1 to $2"
  fi
}

# build <tools dir> <version> <extra ldflags> <binary>=<package>...
# Builds the packages in one `go build` (they share its work), checks that each binary
# runs, and installs each as $cache/<binary>-<version>/<binary>.
build() {
  local dir=$1 version=$2 ldflags=$3
  shift 3
  find_go
  local spec bin pkg name tmp start check names=() pkgs=()
  for spec in "$@"; do
    names+=("${spec%%=*}")
    pkgs+=("${spec#*=}")
  done
  mkdir -p "$cache"
  tmp=$(mktemp -d "$cache/.build.XXXXXX")
  tmps+=("$tmp")
  log "building ${names[*]} $version (tools/$dir; a cold build takes minutes)"
  start=$SECONDS
  # -dwarf=false: the binaries are stripped anyway, and it saves ~10% of the compile.
  go_in "$dir" build -mod=readonly -trimpath -gcflags=all=-dwarf=false \
    -ldflags="-s -w $ldflags" -o "$tmp/" "${pkgs[@]}"
  for spec in "$@"; do
    bin=${spec%%=*}
    pkg=${spec#*=}
    # go names a binary after its package path's last element, or the one before a
    # major-version suffix (go.etcd.io/etcd/server/v3 -> server).
    name=${pkg##*/}
    if [[ $name =~ ^v[0-9]+$ ]]; then name=${pkg%/*} && name=${name##*/}; fi
    mkdir "$tmp/$bin.d"
    mv "$tmp/$name" "$tmp/$bin.d/$bin"
    case $bin in
      kubectl) check=(version --client) ;;
      helm) check=(version) ;;
      *) check=(--version) ;;
    esac
    "$tmp/$bin.d/$bin" "${check[@]}" >/dev/null || die "the freshly built $bin does not run"
    install_dir "$tmp/$bin.d" "$cache/$bin-$version"
    log "built $bin $version: $cache/$bin-$version/$bin ($(du -h "$cache/$bin-$version/$bin" | cut -f1))"
  done
  rm -rf "$tmp"
  log "built ${names[*]} $version in $((SECONDS - start))s"
}

if [ ! -x "$apiserver" ] || [ ! -x "$kubectl" ]; then
  # What hack/lib/version.sh stamps into release builds: without it the server reports
  # v0.0.0-master, which fails version checks such as a chart's kubeVersion in helm.
  find_go
  built=$(cd "$tools/kube" && "$GO" list -m -f '{{if .Time}}{{.Time.UTC.Format "2006-01-02T15:04:05Z"}}{{end}}' k8s.io/kubernetes) ||
    die "could not read k8s.io/kubernetes's release time (go's error is above)"
  minor=${kube_v#v1.}
  minor=${minor%%.*}
  ldflags=""
  for pkg in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
    ldflags+=" -X $pkg.gitVersion=$kube_v -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.gitCommit= -X $pkg.buildDate=${built:-1970-01-01T00:00:00Z}"
  done
  build kube "$kube_v" "$ldflags" \
    kube-apiserver=k8s.io/kubernetes/cmd/kube-apiserver kubectl=k8s.io/kubernetes/cmd/kubectl
fi

if [ ! -x "$etcd" ]; then
  build etcd "$etcd_v" "" etcd=go.etcd.io/etcd/server/v3
fi

if [ ! -x "$helm" ]; then
  build helm "$helm_v" "-X helm.sh/helm/v4/internal/version.version=$helm_v -X helm.sh/helm/v4/internal/version.gitTreeState=clean" \
    helm=helm.sh/helm/v4/cmd/helm
fi

# copy_crds <module> <version> <dest folder> <file patterns, relative to the module root...>
copy_crds() {
  local mod=$1 version=$2 dest=$3
  shift 3
  find_go
  log "fetching $mod $version for its CRDs"
  go_in crds mod download "$mod"
  local dir
  dir=$(cd "$tools/crds" && "$GO" list -m -f '{{.Dir}}' "$mod") || die "could not find $mod in the module cache"
  [ -n "$dir" ] && [ -d "$dir" ] || die "$mod $version was downloaded but has no folder in the module cache"
  local tmp pattern f n=0
  mkdir -p "$cache"
  tmp=$(mktemp -d "$cache/.crds.XXXXXX")
  tmps+=("$tmp")
  for pattern in "$@"; do
    for f in "$dir"/$pattern; do
      [ -f "$f" ] || die "$mod $version has no $pattern"
      cp "$f" "$tmp/"
      n=$((n + 1))
    done
  done
  chmod -R u+w "$tmp"
  install_dir "$tmp" "$dest"
  log "copied $n file(s) from $mod $version to $dest"
}

if [ ! -d "$istio_crds" ]; then
  copy_crds istio.io/api "$istio_v" "$istio_crds" kubernetes/customresourcedefinitions.gen.yaml
fi
if [ ! -d "$gwapi_crds" ]; then
  # The standard channel: CRDs, plus a ValidatingAdmissionPolicy and its binding that
  # guard upgrades (gateway.networking.k8s.io_vap_safeupgrades.yaml).
  copy_crds sigs.k8s.io/gateway-api "$gwapi_v" "$gwapi_crds" 'config/crd/standard/*.yaml'
fi

if [ "$print_env" = 1 ]; then
  printf 'export STRAIT_KUBE_APISERVER=%q\n' "$apiserver"
  printf 'export STRAIT_KUBECTL=%q\n' "$kubectl"
  printf 'export STRAIT_ETCD=%q\n' "$etcd"
  printf 'export STRAIT_HELM=%q\n' "$helm"
  printf 'export STRAIT_ISTIO_CRDS=%q\n' "$istio_crds"
  printf 'export STRAIT_GATEWAY_API_CRDS=%q\n' "$gwapi_crds"
fi
