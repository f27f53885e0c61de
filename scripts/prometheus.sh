#!/usr/bin/env bash
# Installs Prometheus and promtool (Debian's `prometheus`, binaries in /usr/bin) when either is
# missing: tests/ops_prometheus.rs scrapes sessiongate with a real Prometheus, and scripts/test.sh
# checks deploy/prometheus/alerts.yaml with promtool. Safe to run again (does nothing when both are
# there): `bash scripts/prometheus.sh` (scripts/test.sh).
# The package's postinst starts a service; machines without an init system (containers) would fail
# that step, so service starts are refused during the install (policy-rc.d exit 101) and nothing is
# left running: the test starts its own Prometheus.
set -euo pipefail
if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; then
  exit 0
fi
echo "installing prometheus (the metrics test and the alert rule checks use it)..." >&2
if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
policy=/usr/sbin/policy-rc.d
own_policy=""
if [ ! -e "$policy" ]; then
  own_policy=1
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
  $SUDO chmod 755 "$policy"
  trap '$SUDO rm -f "$policy"' EXIT
fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null
if [ -n "$own_policy" ]; then
  $SUDO rm -f "$policy"
  trap - EXIT
fi
for b in prometheus promtool; do
  command -v "$b" >/dev/null 2>&1 || { echo "$b is still missing after apt-get install prometheus" >&2; exit 1; }
done
