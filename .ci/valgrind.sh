#!/usr/bin/env bash
# Runs every test program of a build under valgrind memcheck and fails on any error or leak.
# Criterion runs each test in a child process, so valgrind must trace children, and a child's
# report does not change the parent's exit code: we read valgrind's logs instead.
set -euo pipefail
build=$(cd "${1:-build}" && pwd)
logs=$(mktemp -d)
# Tests run where ctest runs them: in tests/, with TG_TEST_DATA naming their data folder.
cd "$(dirname "$0")/../tests"
export TG_TEST_DATA=$PWD/data
status=0
for test in "$build"/tests/test_*; do
  [ -x "$test" ] || continue
  name=$(basename "$test")
  if ! valgrind --trace-children=yes --trace-children-skip='*python*,*/sh,*/dot,*/gnuplot' --leak-check=full --errors-for-leak-kinds=definite,indirect \
       --log-file="$logs/$name.%p" "$test" --jobs=1 >"$logs/$name.out" 2>&1; then
    echo "valgrind: $name: the tests failed"; cat "$logs/$name.out"; status=1
  fi
  if grep -l "ERROR SUMMARY: [1-9]" "$logs/$name".* >/dev/null 2>&1; then
    echo "valgrind: $name: memory errors or leaks:"
    grep -l "ERROR SUMMARY: [1-9]" "$logs/$name".* | xargs grep -v "^==[0-9]*== *$" | head -n 60
    status=1
  else
    echo "valgrind: $name: clean"
  fi
done
rm -rf "$logs"
exit $status
