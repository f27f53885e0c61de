#!/usr/bin/env bash
# Installs redis-server (Debian's `redis-server`) when it is missing: tests/fleet.rs starts its own
# Redis on a free 127.0.0.1 port for the multi-replica tests (purge broadcast, shared L2 cache,
# Redis outages). Safe to run again (does nothing when it is there): `bash scripts/redis.sh`
# (scripts/test.sh).
# Service starts are refused during the install (scripts/lib/apt.sh): the tests start their own.
set -euo pipefail
if command -v redis-server >/dev/null 2>&1; then
  exit 0
fi
echo "installing redis-server (the fleet tests use it)..." >&2
source "$(dirname "$0")/lib/apt.sh"
apt_install redis-server
command -v redis-server >/dev/null 2>&1 || { echo "redis-server is still missing after apt-get install redis-server" >&2; exit 1; }
