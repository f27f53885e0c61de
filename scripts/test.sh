#!/usr/bin/env bash
# Runs the whole test suite: formatting, lints, unit and integration tests of every crate (attack
# suite, fault run, token flood and the real Ory stack included), promtool's checks of the alert
# rules, the benchmarks' compilation and a bounded fuzz run of every target. This is what CI
# (.ci/run) runs.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/prereqs.sh
# A clean build of everything below takes a few GB of disk; show what is free, for a failed run's log.
df -h . | tail -1 | awk '{print "disk free here: " $4}'
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
# The real Ory stack (tests/real_ory): Kratos and Hydra built from the Go module proxy (minutes the
# first time, seconds after), and headless Chromium for the browser test. A failure here fails the
# run with its reason: the real-stack tests never skip.
bash scripts/ory.sh build
bash scripts/chromium.sh
# Prometheus and promtool: the alert rules and their unit tests, and the real scrape in
# tests/ops_prometheus.rs (which also checks every query of deploy/grafana/sessiongate.json).
bash scripts/prometheus.sh
# redis-server for the fleet tests (tests/fleet.rs: three replicas sharing one Redis).
bash scripts/redis.sh
# nginx, Traefik, Caddy and Envoy in front of the decision API (tests/decisions_nginx.rs,
# tests/decisions_ingresses.rs).
bash scripts/ingresses.sh
promtool check rules deploy/prometheus/alerts.yaml
promtool test rules deploy/prometheus/alerts.test.yaml
cargo test --workspace --no-fail-fast
cargo bench --workspace --no-run
# Bounded fuzzing of every cargo-fuzz target (FUZZ_SECONDS each; longer runs: scripts/fuzz.sh 600).
bash scripts/fuzz.sh "${FUZZ_SECONDS:-30}"
