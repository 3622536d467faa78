#!/usr/bin/env bash
# Builds the libFuzzer harnesses (clang, ASan + UBSan) and runs each for a bounded time.
#   tests/fuzz/run.sh [seconds per fuzzer, default 60]
# Environment: TG_FUZZ_BUILD_DIR (default <repo>/build-fuzz). The committed seed corpora under
# tests/fuzz/corpus/ are only read (corpus/api is written by tests/fuzz/make_api_corpus.py); new
# inputs go to a scratch directory. A crash or a sanitizer report leaves its input as
# <build>/crash-fuzz_<name>-*, stops the script with a non-zero status, and must become a
# regression test in tests/test_idx.c, tests/test_checkpoint.c or (fuzz_api: replay it with
# FUZZ_API_VERBOSE=1 to see the calls) tests/test_fuzz_regressions.c.
set -euo pipefail
secs=${1:-60}
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${TG_FUZZ_BUILD_DIR:-$root/build-fuzz}

cmake -S "$root" -B "$build" -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DTG_BUILD_FUZZ=ON -DTG_WERROR=ON -DTG_BUILD_TESTS=OFF -DTG_BUILD_EXAMPLES=OFF -DTG_BUILD_BENCH=OFF >/dev/null
cmake --build "$build" -j2 --target fuzz_checkpoint fuzz_idx fuzz_api >/dev/null

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
for name in checkpoint idx api; do
  # fuzz_api's inputs are programs of at most 2 x 40 actions: longer inputs only add dead bytes.
  max_len=4096
  [ "$name" = api ] && max_len=1024
  dict=()
  [ -f "$root/tests/fuzz/$name.dict" ] && dict=(-dict="$root/tests/fuzz/$name.dict")
  mkdir -p "$scratch/$name"
  log="$build/fuzz_$name.log"
  status=0
  "$build/tests/fuzz/fuzz_$name" "${dict[@]}" -max_total_time="$secs" -print_final_stats=1 \
    -max_len="$max_len" -timeout=10 -rss_limit_mb=2048 -artifact_prefix="$build/crash-fuzz_$name-" \
    "$scratch/$name" "$root/tests/fuzz/corpus/$name" >"$log" 2>&1 || status=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
  if [ "$status" -ne 0 ]; then
    tail -n 40 "$log"
    echo "fuzz_$name: FAILED after ${secs}s (exit $status); see $log"
    exit 1
  fi
  echo "fuzz_$name: ${secs} s, ${execs:-?} executions (${rate:-?}/s), no crash (log: $log)"
done
