#!/usr/bin/env bash
# Installs Prometheus and promtool (Debian's `prometheus`, binaries in /usr/bin) when either is
# missing: tests/ops_prometheus.rs scrapes sessiongate with a real Prometheus, and scripts/test.sh
# checks deploy/prometheus/alerts.yaml with promtool. Safe to run again (does nothing when both are
# there): `bash scripts/prometheus.sh` (scripts/test.sh).
# Service starts are refused during the install (scripts/lib/apt.sh): the test starts its own.
set -euo pipefail
if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; then
  exit 0
fi
echo "installing prometheus (the metrics test and the alert rule checks use it)..." >&2
source "$(dirname "$0")/lib/apt.sh"
apt_install prometheus
for b in prometheus promtool; do
  command -v "$b" >/dev/null 2>&1 || { echo "$b is still missing after apt-get install prometheus" >&2; exit 1; }
done
