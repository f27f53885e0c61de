#!/usr/bin/env bash
# Runs the whole test suite: formatting, lints, unit and integration tests of every crate, and the
# benchmarks' compilation. This is what CI (.ci/run) runs.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/prereqs.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace --no-fail-fast
cargo bench --workspace --no-run
