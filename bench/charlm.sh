#!/bin/sh
# charlm's training step (examples/charlm.c), tapegrad and PyTorch side by side, at 1 and 2
# threads, with AdamW and with SGD + momentum 0.9 (charlm --optim, torch_charlm.py --optim).
# PyTorch runs with its thread pools, OpenMP's and OpenBLAS's all set to T before torch is
# imported (bench/torch_env.py), once with OMP_WAIT_POLICY=PASSIVE and once ACTIVE; its best
# counts. The machine is shared and noisy, so each side runs ROUNDS times, alternating, and the
# best run of each counts; the ratio is taken between those two, measured in one invocation.
# Prints every run's JSON line, then one summary line per optimizer and thread count:
#   {"bench":"charlm_vs_torch","optim":O,"threads":T,"tapegrad_tokens_per_s":...,
#    "torch_tokens_per_s":...,"torch_wait_policy":...,"torch_blas":...,"ratio_tapegrad_over_torch":...}
#
#   bench/charlm.sh [BUILD_DIR] [STEPS] [ROUNDS]      (defaults: build, 200, 3)
#
# Needs /usr/share/dict/words (apt-get install wamerican) and, for the PyTorch lines, Debian's
# python3-torch (skipped with a note when it is missing).
set -eu
build=${1:-build}
steps=${2:-200}
rounds=${3:-3}
here=$(cd "$(dirname "$0")" && pwd)
prog="$build/examples/charlm"
[ -x "$prog" ] || { echo "charlm.sh: $prog not found; build first (cmake --build $build)" >&2; exit 2; }
have_torch=1
/usr/bin/python3 -c 'import torch' 2>/dev/null || {
  have_torch=0
  echo "charlm.sh: /usr/bin/python3 cannot import torch (apt-get install python3-torch); no PyTorch figures" >&2
}
echo "# $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"

cores="auto"
[ -n "${OPENBLAS_CORETYPE:-}" ] && cores="env auto"

# The machine's state: how far apart its two cores are right now (a VM's host moves its vCPUs,
# and a 2-thread figure moves with them); again after the runs.
if [ -x "$build/bench/tg_bench" ]; then "$build/bench/tg_bench" --only cpu; fi
for optim in adamw sgd; do
for threads in 1 2; do
  lines=""
  r=0
  while [ "$r" -lt "$rounds" ]; do
    line=$("$prog" --threads "$threads" --optim "$optim" --bench "$steps")
    echo "$line"
    lines="$lines$line
"
    if [ "$have_torch" = 1 ]; then
      for policy in passive active; do
      for core in $cores; do
        # OpenBLAS's kernel as the environment sets it, and (when it is set) OpenBLAS's own choice
        if [ "$core" = auto ]; then unset_core="-u OPENBLAS_CORETYPE"; else unset_core=""; fi
        # shellcheck disable=SC2086
        line=$(env $unset_core /usr/bin/python3 "$here/torch_charlm.py" --threads "$threads" --steps "$steps" \
                 --optim "$optim" --wait-policy "$policy" 2>/dev/null)
        echo "$line"
        lines="$lines$line
"
      done
      done
    fi
    r=$((r + 1))
  done
  printf '%s' "$lines" | /usr/bin/python3 -c '
import json, sys
runs = [json.loads(l) for l in sys.stdin if l.strip()]
best = {}
for r in runs:
    if r["bench"] not in best or r["tokens_per_s"] > best[r["bench"]]["tokens_per_s"]:
        best[r["bench"]] = r
tg, th = best.get("charlm_train_step"), best.get("torch_charlm_train_step")
out = {"bench": "charlm_vs_torch", "optim": sys.argv[3], "threads": int(sys.argv[1]),
       "rounds": int(sys.argv[2]),
       "tapegrad_tokens_per_s": tg["tokens_per_s"], "tapegrad_ms_per_step": tg["ms_per_step"]}
if th:
    out.update({"torch_tokens_per_s": th["tokens_per_s"], "torch_ms_per_step": th["ms_per_step"],
                "torch_wait_policy": th["omp_wait_policy"], "torch_blas": th["blas_libs"],
                "openblas_core": th["openblas_core"],
                "ratio_tapegrad_over_torch": round(tg["tokens_per_s"] / th["tokens_per_s"], 2)})
print(json.dumps(out, separators=(",", ":")))
' "$threads" "$rounds" "$optim"
done
done
if [ -x "$build/bench/tg_bench" ]; then "$build/bench/tg_bench" --only cpu; fi
