#!/usr/bin/env bash
# The README's second command: the whole test suite. Each stage prints its own result; the last
# line counts the stages that passed and failed.
set -uo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc)
passed=0
failed=0
failed_names=()

stage() { # stage NAME COMMAND...: runs a stage, counts its result
  local name=$1
  shift
  echo
  echo "== $name"
  local start=$SECONDS
  if "$@"; then
    passed=$((passed + 1))
    echo "-- passed in $((SECONDS - start)) s: $name"
  else
    failed=$((failed + 1))
    failed_names+=("$name")
    echo "-- FAILED in $((SECONDS - start)) s: $name"
  fi
}

build_and_test() { # build_and_test DIR CMAKE-ARGS...
  local dir=$1
  shift
  cmake -S . -B "$dir" "$@" >/dev/null &&
    cmake --build "$dir" -j"$jobs" >/dev/null &&
    (cd "$dir" && ctest --output-on-failure -j"$jobs")
}

browser_test() { # the step-through page, from build/examples/trace, in headless chromium
  if [ ! -d tests/browser/node_modules/puppeteer-core ]; then
    echo "browser: puppeteer-core is not installed: run bash .ci/setup.sh (npm ci in tests/browser)"
    return 1
  fi
  (cd tests/browser && TG_BUILD=build node page.test.js)
}

stage "unit tests (release build)" build_and_test build -DCMAKE_BUILD_TYPE=Release -DTG_WERROR=ON
stage "clang build, warnings as errors, unit tests" \
  build_and_test build-clang -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=Release -DTG_BUILD_BENCH=OFF -DTG_WERROR=ON
stage "unit tests under AddressSanitizer + UBSan" bash .ci/sanitize.sh build-asan
stage "unit tests under valgrind memcheck" bash .ci/valgrind.sh build
stage "browser: the step-through page in headless chromium" browser_test
stage "fuzzing the checkpoint and IDX loaders and the builder API (libFuzzer, 60 s each)" bash tests/fuzz/run.sh 60
stage "installed package: consumers via CMake and pkg-config, C and C++" bash .ci/consumer.sh
stage "API reference (Doxygen, undocumented symbols are errors)" bash .ci/docs.sh
stage "static analysis (cppcheck, clang-tidy)" bash .ci/lint.sh
stage "formatting (.clang-format, .editorconfig)" bash .ci/format-check.sh --strict

echo
if ((failed)); then
  echo "failed stages: ${failed_names[*]}"
fi
echo "stages: $passed passed, $failed failed"
((failed == 0))
