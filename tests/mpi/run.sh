#!/usr/bin/env bash
# run.sh -- runs the MPI test programs under mpirun and checks their exit codes and messages.
# Builds nothing: give it the directory holding mpi_train, mpi_mismatch and mpi_error
# (ctest does: the test "mpi", registered when CMake found MPI).
#   bash tests/mpi/run.sh build/tests/mpi
# Every mpirun is wrapped in `timeout 120`: a deadlock fails the check instead of hanging CI.
# Prints PASS/FAIL per check and "mpi: N passed, N failed"; exits non-zero on any failure.
set -uo pipefail
bin=$(cd "${1:?usage: run.sh BIN_DIR}" && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/tapegrad-mpi.XXXXXX")
trap 'rm -rf "$work"' EXIT
passed=0
failed=0
# As root (CI containers) Open MPI wants --allow-run-as-root; shared memory and loopback only;
# more ranks than cores are allowed, and not pinned (2 cores, other jobs running).
mpirun_flags=(--oversubscribe --mca btl self,vader --bind-to none)
[ "$(id -u)" -eq 0 ] && mpirun_flags+=(--allow-run-as-root)

# check NAME EXPECTED_EXIT NP PROGRAM ARGS... -- PATTERN...: runs the program on NP ranks; passes
# if it exits with EXPECTED_EXIT (not 124: the timeout) and its output holds every PATTERN.
check() {
    local name=$1 expect=$2 np=$3
    shift 3
    local cmd=()
    while [ "$1" != -- ]; do
        cmd+=("$1")
        shift
    done
    shift
    local log=$work/log.$((passed + failed)) rc
    timeout 120 mpirun -np "$np" "${mpirun_flags[@]}" ${MCA:+--mca $MCA} "$bin/${cmd[0]}" "${cmd[@]:1}" >"$log" 2>&1
    rc=$?
    local why=""
    if [ "$rc" -eq 124 ]; then
        why="timed out after 120 s (a deadlock?)"
    elif [ "$rc" -ne "$expect" ]; then
        why="exit code $rc, expected $expect"
    fi
    for pattern in "$@"; do
        [ -z "$why" ] && ! grep -qF -- "$pattern" "$log" && why="no '$pattern' in the output"
    done
    if [ -z "$why" ]; then
        echo "PASS: $name"
        passed=$((passed + 1))
    else
        echo "FAIL: $name: $why"
        sed 's/^/    /' "$log"
        failed=$((failed + 1))
    fi
    grep -E "^(PASS|FAIL):|stopped" "$log" | sed 's/^/    | /'
}

check "deterministic, 2 ranks: bit-identical to one process" 0 2 mpi_train det 20 -- \
    "PASS: det mode, 2 ranks, 20 steps: parameters bit-identical to" "PASS: det mode, 2 ranks:"
check "deterministic, 3 ranks (uneven shards), then resume from rank 0's checkpoint" 0 3 \
    mpi_train det 20 "$work/model.safetensors" -- \
    "PASS: det mode, 3 ranks, 20 steps: parameters bit-identical to" "PASS: resume on 3 ranks"
# 100 rows in batches of 24: the last batch of an epoch has 4 rows, so rank 4 of 5 gets none.
check "deterministic, 5 ranks (an empty shard in each epoch's last batch)" 0 5 mpi_train det 12 -- \
    "PASS: det mode, 5 ranks, 12 steps: parameters bit-identical to" "PASS: det mode, 5 ranks:"
check "deterministic with blocking collectives (no overlap), 3 ranks: bit-identical" 0 3 \
    mpi_train det-blocking 20 -- "PASS: det-blocking mode, 3 ranks, 20 steps: parameters bit-identical to"
check "fast (MPI_Iallreduce), 2 ranks: within tolerance" 0 2 mpi_train fast 20 -- \
    "PASS: fast mode, 2 ranks, 20 steps" "PASS: fast mode, 2 ranks:"
check "fast (MPI_Iallreduce), 3 ranks: within tolerance" 0 3 mpi_train fast 20 -- \
    "PASS: fast mode, 3 ranks, 20 steps" "PASS: fast mode, 3 ranks:"
check "fast with a blocking MPI_Allreduce, 3 ranks: within tolerance" 0 3 mpi_train \
    fast-blocking 20 -- "PASS: fast-blocking mode, 3 ranks, 20 steps" "PASS: fast-blocking mode, 3 ranks:"
# Open MPI's ring algorithm adds the ranks' contributions in an order that depends on the element
# (each rank reduces one segment, starting from a different rank): not rank order.
MCA="coll_libnbc_iallreduce_algorithm 1" check \
    "fast, 3 ranks, ring allreduce: not rank order, still within tolerance" 0 3 mpi_train fast 20 -- \
    "PASS: fast mode, 3 ranks, 20 steps" "PASS: fast mode, 3 ranks:"
check "parameter lists differ (a shape): both ranks stop with the message" 3 2 \
    mpi_mismatch shape -- "the ranks' parameter lists differ" "rank 1 has 4 tensors:" \
    "l1.W f32[17,12]"
check "parameter lists differ (the count): both ranks stop with the message" 3 2 \
    mpi_mismatch count -- "the ranks' parameter lists differ" "rank 0 has 4 tensors:" \
    "rank 1 has 3 tensors:"
check "a failed tape on rank 1: both ranks stop with its message" 4 2 mpi_error tape -- \
    "mpi_error: stopped at step 3: rank 1: " "tg_matmul_bt"
check "a bad file on rank 1: both ranks stop with its message" 4 2 mpi_error file -- \
    "mpi_error: stopped loading the data: rank 1: " "/nonexistent/rank1-images.idx"
check "resuming from a missing checkpoint: every rank stops with rank 0's message" 4 2 \
    mpi_error checkpoint -- "mpi_error: rank 1 stopped resuming: rank 0: " \
    "/nonexistent/model.safetensors"

echo "mpi: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
