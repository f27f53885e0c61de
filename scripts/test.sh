#!/usr/bin/env bash
# Runs the whole test suite: formatting, lints, unit and integration tests of every crate (attack
# suite, fault run, token flood included), the benchmarks' compilation and a bounded fuzz run of
# every target. This is what CI (.ci/run) runs.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/prereqs.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace --no-fail-fast
cargo bench --workspace --no-run
# Bounded fuzzing of every cargo-fuzz target (FUZZ_SECONDS each; longer runs: scripts/fuzz.sh 600).
bash scripts/fuzz.sh "${FUZZ_SECONDS:-30}"
