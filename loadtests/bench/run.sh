#!/usr/bin/env bash
# The benchmark: Strait against direct, bare Pingora, nginx and haproxy, in one run.
#   loadtests/bench/run.sh          quick mode (~4 minutes)
#   loadtests/bench/run.sh full     full mode (~15 minutes)
# Writes loadtests/results/latest.md and latest.json.
set -euo pipefail
cd "$(dirname "$0")/../.."
scripts/setup.sh
if ! command -v nginx >/dev/null || ! command -v haproxy >/dev/null || ! command -v valgrind >/dev/null; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nginx-light haproxy valgrind >/dev/null
fi
# The binaries as they ship (scripts/dist.sh), bare Pingora and the harness included.
scripts/dist.sh -p strait-gateway -p strait-sidecar -p strait-loadtests --bins
target/dist/strait-bench --mode "${1:-quick}"
# The README's chart of the headline figures.
python3 loadtests/chart.py
