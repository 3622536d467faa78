#!/usr/bin/env bash
# consumer.sh -- installs tapegrad into a temporary prefix, then builds and runs a separate program
# against the *installed* package two ways: CMake find_package and pkg-config. Prints PASS/FAIL per
# step and a closing "consumer: N passed, N failed" line; exits non-zero on any failure.
#   bash .ci/consumer.sh            (from anywhere; uses at most -j2)
set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/tapegrad-consumer.XXXXXX")
trap 'rm -rf "$work"' EXIT
prefix=$work/prefix
src=$root/tests/consumer
passed=0
failed=0

step() { # step NAME COMMAND...: runs the command, output to a log shown only on failure
    local name=$1 log
    shift
    log=$work/log.$((passed + failed))
    if "$@" >"$log" 2>&1; then
        echo "PASS: $name"
        passed=$((passed + 1))
    else
        echo "FAIL: $name"
        sed 's/^/    /' "$log"
        failed=$((failed + 1))
    fi
}

finish() {
    echo "consumer: $passed passed, $failed failed"
    [ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
    exit $?
}

# 1. Build tapegrad alone and install it. The install prefix is given only to `cmake --install`,
#    not at configure time, which also checks that the installed files are relocatable.
step "configure tapegrad" cmake -S "$root" -B "$work/build" -DCMAKE_BUILD_TYPE=Release \
    -DTG_BUILD_TESTS=OFF -DTG_BUILD_EXAMPLES=OFF -DTG_BUILD_BENCH=OFF
step "build tapegrad" cmake --build "$work/build" -j2
step "install tapegrad into a temporary prefix" cmake --install "$work/build" --prefix "$prefix"
[ "$failed" -eq 0 ] || finish

# 1b. The core without the I/O part: builds, and the library links none of zlib, cJSON, xxHash.
no_io() {
    cmake -S "$root" -B "$work/build-noio" -DCMAKE_BUILD_TYPE=Release -DTG_WITH_IO=OFF \
        -DTG_BUILD_TESTS=OFF -DTG_BUILD_EXAMPLES=OFF -DTG_BUILD_BENCH=OFF >/dev/null &&
        cmake --build "$work/build-noio" -j2 >/dev/null &&
        ! ldd "$work/build-noio/libtapegrad.so" | grep -E 'libz\.|libcjson|libxxhash'
}
step "core without the I/O part: builds, links no zlib/cJSON/xxHash" no_io

# 2. CMake: find_package(tapegrad CONFIG REQUIRED), shared, static and C++ programs. The package
#    registry is off so that nothing but the temporary prefix can satisfy find_package.
step "cmake consumer: configure (find_package)" cmake -S "$src" -B "$work/consumer" \
    -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_FIND_PACKAGE_NO_PACKAGE_REGISTRY=ON \
    -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF
step "cmake consumer: build" cmake --build "$work/consumer" -j2
for prog in consumer_c consumer_c_static consumer_cxx; do
    step "cmake consumer: run $prog" "$work/consumer/$prog"
done

# 3. pkg-config: the way a Makefile or a shell would do it.
pcfile=$(find "$prefix" -name tapegrad.pc -print -quit)
if [ -z "$pcfile" ]; then
    echo "FAIL: tapegrad.pc was not installed"
    failed=$((failed + 1))
    finish
fi
export PKG_CONFIG_PATH
PKG_CONFIG_PATH=$(dirname "$pcfile")${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}
libdir=$(pkg-config --variable=libdir tapegrad)
cc=${CC:-cc}
cxx=${CXX:-c++}
step "pkg-config: module found, version $(pkg-config --modversion tapegrad 2>/dev/null)" \
    pkg-config --exists --print-errors tapegrad
# shellcheck disable=SC2046  # word splitting of pkg-config's flags is intended
step "pkg-config: build C program (shared)" $cc -std=c11 -Wall -Wextra -Wpedantic -Werror \
    "$src/consumer.c" -o "$work/pc_c" $(pkg-config --cflags --libs tapegrad) -lm \
    -Wl,-rpath,"$libdir"
step "pkg-config: run C program (shared)" "$work/pc_c"
# shellcheck disable=SC2046
step "pkg-config: build C++ program (shared)" $cxx -std=c++11 -Wall -Wextra -Wpedantic -Werror \
    "$src/consumer.cpp" -o "$work/pc_cxx" $(pkg-config --cflags --libs tapegrad) \
    -Wl,-rpath,"$libdir"
step "pkg-config: run C++ program (shared)" "$work/pc_cxx"
# Static: libtapegrad.a itself, plus everything `pkg-config --static` says it needs.
# shellcheck disable=SC2046
step "pkg-config: build C program (static, --static flags)" $cc -std=c11 -Wall -Wextra -Werror \
    "$src/consumer.c" -o "$work/pc_c_static" $(pkg-config --cflags tapegrad) \
    "$libdir/libtapegrad.a" $(pkg-config --static --libs-only-L --libs-only-other tapegrad) \
    $(pkg-config --static --libs-only-l tapegrad | sed 's/-ltapegrad\b//') -lm
step "pkg-config: static program does not need libtapegrad.so" \
    bash -c "! objdump -p '$work/pc_c_static' | grep -q 'NEEDED.*libtapegrad'"
step "pkg-config: run C program (static)" "$work/pc_c_static"

# 4. The MPI part, when tapegrad was built with it (MPI found): find_package(tapegrad COMPONENTS
#    mpi) and pkg-config tapegrad_mpi. The program runs as one MPI process (singleton, no mpirun).
if [ -e "$libdir/pkgconfig/tapegrad_mpi.pc" ]; then
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 # CI runs as root
    step "cmake consumer (MPI): configure (COMPONENTS mpi)" cmake -S "$root/tests/mpi/consumer" \
        -B "$work/consumer_mpi" -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF
    step "cmake consumer (MPI): build" cmake --build "$work/consumer_mpi"
    step "cmake consumer (MPI): run" timeout 120 "$work/consumer_mpi/consumer_mpi"
    # shellcheck disable=SC2046
    step "pkg-config: build MPI program" $cc -std=c11 -Wall -Wextra -Werror \
        "$root/tests/mpi/consumer/consumer_mpi.c" -o "$work/pc_mpi" \
        $(pkg-config --cflags --libs tapegrad_mpi) -Wl,-rpath,"$libdir"
    step "pkg-config: run MPI program" timeout 120 "$work/pc_mpi"
else
    echo "(tapegrad was built without MPI: no tapegrad_mpi.pc, the MPI consumer is skipped)"
fi

finish
