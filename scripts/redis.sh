#!/usr/bin/env bash
# Installs redis-server (Debian's `redis-server`) when it is missing: tests/fleet.rs starts its own
# Redis on a free 127.0.0.1 port for the multi-replica tests (purge broadcast, shared L2 cache,
# Redis outages). Safe to run again (does nothing when it is there): `bash scripts/redis.sh`
# (scripts/test.sh).
# The package's postinst starts a service; machines without an init system (containers) would fail
# that step, so service starts are refused during the install (policy-rc.d exit 101) and nothing is
# left running: the tests start their own redis-server.
set -euo pipefail
if command -v redis-server >/dev/null 2>&1; then
  exit 0
fi
echo "installing redis-server (the fleet tests use it)..." >&2
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
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends redis-server >/dev/null
if [ -n "$own_policy" ]; then
  $SUDO rm -f "$policy"
  trap - EXIT
fi
command -v redis-server >/dev/null 2>&1 || { echo "redis-server is still missing after apt-get install redis-server" >&2; exit 1; }
