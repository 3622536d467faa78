#!/usr/bin/env bash
# lint.sh -- static analysis of the library (src/ and ops/): cppcheck, then clang-tidy's
# path-sensitive analyzer and bug-pattern checks (.clang-tidy). Any finding fails the run.
# Known false positives are listed, with reasons, in .ci/cppcheck-suppressions.txt and .clang-tidy.
#   bash .ci/lint.sh
set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

need() { # need COMMAND PACKAGE
    command -v "$1" >/dev/null && return 0
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get update -qq >/dev/null && apt-get install -y -qq "$2" >/dev/null
    fi
    command -v "$1" >/dev/null || { echo "lint: FAIL: $1 is not installed (apt-get install $2)"; exit 1; }
}
need cppcheck cppcheck
need clang-tidy clang-tidy

mapfile -t sources < <(git ls-files 'src/*.c' 'ops/*.c')
status=0

# The layers: dependencies point one way (tools, train and io use the core; the core uses the
# kernels); nothing in the core includes a tool, an op, train or io; an op includes the core and
# the kernels only; and no src/ file outside the op table names an op.
layers=$(
    grep -Hn '#include "' src/core/* | grep -Ev '"(engine\.h|tg_op_list\.h|tapegrad\.h)"'
    grep -Hn '#include "' src/kernels/* | grep -Ev '"(core/engine\.h|[a-z0-9_]+\.h)"'
    grep -Hn '#include "' ops/* | grep -Ev '"(core/engine\.h|kernels/[a-z_]+\.h|[a-z_]+\.h)"'  # an ops/ header is shared by a family of ops
    grep -Hn 'tg__op_[a-z]' src/*/*.c src/*/*.h | grep -v '^src/core/op_table\.c' |
        grep -Ev 'tg__op_(desc|table|count|label)\b'
)
if [ -n "$layers" ]; then
    echo "lint: FAIL: an include or a name crosses the layers:"
    echo "$layers"
    status=1
else
    echo "lint: PASS: layers (core <- kernels, ops; tools, train, io use the core)"
fi

# cppcheck: warnings (real bugs), performance and portability; not style, which is mostly noise
# here (variable scope, const-ness of parameters).
if cppcheck --quiet --std=c11 --enable=warning,performance,portability --library=posix \
    --inline-suppr --suppressions-list=.ci/cppcheck-suppressions.txt --error-exitcode=1 \
    -D_POSIX_C_SOURCE=200809L -I include -I src -I src/core "${sources[@]}"; then
    echo "lint: PASS: cppcheck $(cppcheck --version | cut -d' ' -f2), ${#sources[@]} files"
else
    echo "lint: FAIL: cppcheck"
    status=1
fi

# clang-tidy needs the compile commands: configure (not build) a scratch tree.
db=$(mktemp -d "${TMPDIR:-/tmp}/tapegrad-lint.XXXXXX")
trap 'rm -rf "$db"' EXIT
cmake -S . -B "$db" -DTG_BUILD_TESTS=OFF -DTG_BUILD_EXAMPLES=OFF -DTG_BUILD_BENCH=OFF \
    -DCMAKE_EXPORT_COMPILE_COMMANDS=ON >/dev/null || { echo "lint: FAIL: cmake configure"; exit 1; }
# -Wshadow=local is gcc's; clang would report it as unknown.
if clang-tidy -p "$db" --quiet --extra-arg=-Wno-unknown-warning-option "${sources[@]}" \
    2>"$db/tidy.err" >"$db/tidy.out"; then
    echo "lint: PASS: clang-tidy $(clang-tidy --version | sed -n 's/.*version \([0-9.]*\).*/\1/p' | head -1), ${#sources[@]} files"
else
    cat "$db/tidy.out"
    grep -v "warnings generated\|Suppressed\|Use -header-filter\|NOLINT" "$db/tidy.err" || true
    echo "lint: FAIL: clang-tidy"
    status=1
fi
exit $status
