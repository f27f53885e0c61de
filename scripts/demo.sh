#!/usr/bin/env bash
# Starts the local demo: sessiongate on 127.0.0.1:8080 in front of an echo upstream, with a Kratos
# stand-in holding demo sessions. Installs cmake first when missing (pingora's zlib-ng build needs it).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/prereqs.sh
exec cargo run --quiet --example demo -- "${1:-config/demo.toml}"
