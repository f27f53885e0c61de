#!/usr/bin/env bash
# Starts the local demo: sessiongate on 127.0.0.1:8080 in front of an echo upstream, with a Kratos
# stand-in holding demo sessions. Installs cmake first when missing (pingora's zlib-ng build needs it).
#
#   bash scripts/demo.sh          the stand-in demo (no Go needed)
#   bash scripts/demo.sh --real   real Ory Kratos and Ory Hydra (built from the Go module proxy the
#                                 first time), sessiongate on 127.0.0.1:4455 as their public origin
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/prereqs.sh
if [ "${1:-}" = "--real" ]; then
  bash scripts/ory.sh build
  export ORY_RUN_DIR="$PWD/target/ory/demo"
  bash scripts/ory.sh stop
  trap 'bash scripts/ory.sh stop' EXIT
  bash scripts/ory.sh start
  cargo run --quiet --example demo_real -- "${2:-config/demo-real.toml}"
else
  exec cargo run --quiet --example demo -- "${1:-config/demo.toml}"
fi
