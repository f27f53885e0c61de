#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for SECONDS each (default 60) and prints one line per
# target: `fuzz <target>: <N> execs, <C> crashes`. Exits non-zero when a target crashed; the
# crashing input is in fuzz/artifacts/<target>/ (reproduce with
# `RUSTC_BOOTSTRAP=1 cargo fuzz run -s none <target> fuzz/artifacts/<target>/<file>`).
#
# Works on the stable toolchain: cargo-fuzz needs nightly only for the sanitizers and `-Z` flags,
# so it runs with `--sanitizer none` (libFuzzer's coverage instrumentation is a stable codegen
# option) and RUSTC_BOOTSTRAP=1 for the rest. Rust's own checks (bounds, overflow in debug
# assertions, which cargo fuzz enables) turn memory and arithmetic bugs into panics, i.e. crashes.
#
#   scripts/fuzz.sh            # every target, 60 s each
#   scripts/fuzz.sh 300        # every target, 5 min each
#   scripts/fuzz.sh 30 credential template
set -uo pipefail
cd "$(dirname "$0")/.."
source scripts/prereqs.sh

seconds="${1:-60}"
shift || true
if ! [[ "$seconds" =~ ^[0-9]+$ ]]; then
  echo "usage: $0 [SECONDS] [TARGET...]" >&2
  exit 2
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz..." >&2
  cargo install cargo-fuzz --locked >&2 || exit 1
fi

export RUSTC_BOOTSTRAP=1
# cargo fuzz finds fuzz/Cargo.toml from the repository root too; working inside fuzz/ keeps the
# corpus, artifacts and logs paths short. fuzz/ is its own workspace with its own target dir.
cd fuzz
if [ "$#" -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo fuzz list)
fi

logs="target/fuzz-logs"
mkdir -p "$logs"
failed=0
for t in "${targets[@]}"; do
  echo "building $t..." >&2
  if ! cargo fuzz build -s none "$t" >"$logs/$t.build.log" 2>&1; then
    tail -n 30 "$logs/$t.build.log" >&2
    echo "fuzz $t: build failed (see fuzz/$logs/$t.build.log)"
    failed=1
    continue
  fi
  mkdir -p "corpus/$t" "artifacts/$t"
  before=$(find "artifacts/$t" -type f | wc -l)
  echo "fuzzing $t for ${seconds}s..." >&2
  cargo fuzz run -s none "$t" "corpus/$t" -- \
    -max_total_time="$seconds" -print_final_stats=1 >"$logs/$t.log" 2>&1
  rc=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *\([0-9]*\).*/\1/p' "$logs/$t.log" |
    awk '{ s += $1 } END { print s + 0 }')
  after=$(find "artifacts/$t" -type f | wc -l)
  crashes=$((after - before))
  if [ "$rc" -ne 0 ] && [ "$crashes" -eq 0 ]; then
    # A failure that left no artifact (e.g. the harness itself broke) still counts.
    crashes=1
  fi
  if [ "$crashes" -ne 0 ]; then
    failed=1
    grep -E "panicked|ERROR: libFuzzer|Test unit written|SUMMARY" "$logs/$t.log" | head -n 10 >&2
  fi
  echo "fuzz $t: $execs execs, $crashes crashes"
done
exit "$failed"
