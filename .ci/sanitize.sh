#!/usr/bin/env bash
# Builds with AddressSanitizer + UBSan and runs the tests. Criterion runs each test in a child
# process whose leak report does not fail the test, so we also read the whole output for any
# sanitizer report.
set -uo pipefail
dir=${1:-build-asan}
cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=Debug -DTG_SANITIZE=ON -DTG_BUILD_BENCH=OFF -DTG_WERROR=ON >/dev/null &&
  cmake --build "$dir" -j"$(nproc)" >/dev/null || exit 1
log="$dir/sanitizer-test.log"
# -V puts every test's own output in the log, where the sanitizers write.
(cd "$dir" && ctest -V -j"$(nproc)" >sanitizer-test.log 2>&1)
status=$?
grep -E "tests passed|tests failed|\*\*\*Failed|Test +#" "$log" | tail -n 30
if grep -E "SUMMARY: (AddressSanitizer|UndefinedBehaviorSanitizer|LeakSanitizer)|runtime error:" "$log"; then
  echo "sanitizers: reports found (full log: $log)"
  exit 1
fi
echo "sanitizers: no reports"
exit $status
