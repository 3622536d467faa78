#!/bin/sh
# Fashion-MNIST MLP training throughput, tapegrad and PyTorch side by side, at 1 and 2 threads,
# with Adam and with SGD + momentum 0.9. PyTorch runs with OMP_WAIT_POLICY=PASSIVE and ACTIVE, its
# OpenMP/OpenBLAS/MKL thread counts set to the same number before torch is imported
# (bench/torch_env.py), after 20 warm-up steps like mnist_mlp --bench. This machine is shared and
# noisy, so each side runs ROUNDS times, alternating, and the best run of each counts (the least
# disturbed one); the ratio is taken against PyTorch's better wait policy, all in one invocation.
# Prints every run's JSON line, then one summary line per optimizer and thread count:
#   {"bench":"mnist_vs_torch","optim":O,"threads":T,"tapegrad_samples_per_s":...,
#    "torch_passive_samples_per_s":...,"torch_active_samples_per_s":...,"torch_samples_per_s":...,
#    "ratio_tapegrad_over_torch":...,"tapegrad_peak_rss_mib":...,"torch_peak_rss_mib":...}
#
#   bench/mnist.sh [BUILD_DIR] [STEPS] [ROUNDS]      (defaults: build, 200, 3)
#
# Needs the data (apt-get install dataset-fashion-mnist, or DATA=/path/to/mnist) and, for the
# PyTorch lines, Debian's python3-torch (skipped with a note when it is missing).
set -eu
build=${1:-build}
steps=${2:-200}
rounds=${3:-3}
here=$(cd "$(dirname "$0")" && pwd)
data=${DATA:-/usr/share/datasets/fashion-mnist}
prog="$build/examples/mnist_mlp"
[ -x "$prog" ] || { echo "mnist.sh: $prog not found; build first (cmake --build $build)" >&2; exit 2; }
have_torch=1
/usr/bin/python3 -c 'import torch' 2>/dev/null || {
  have_torch=0
  echo "mnist.sh: /usr/bin/python3 cannot import torch (apt-get install python3-torch); no PyTorch figures" >&2
}

cores="auto"
[ -n "${OPENBLAS_CORETYPE:-}" ] && cores="env auto"

# The machine's state: how far apart its two cores are right now (a VM's host moves its vCPUs,
# and a 2-thread figure moves with them); again after the runs.
if [ -x "$build/bench/tg_bench" ]; then "$build/bench/tg_bench" --only cpu; fi
for optim in adam sgd; do
for threads in 1 2; do
  lines=""
  r=0
  while [ "$r" -lt "$rounds" ]; do
    line=$("$prog" --data "$data" --threads "$threads" --optim "$optim" --bench "$steps")
    echo "$line"
    lines="$lines$line
"
    if [ "$have_torch" = 1 ]; then
      for policy in passive active; do
      for core in $cores; do
        # OpenBLAS's kernel as the environment sets it, and (when it is set) OpenBLAS's own choice
        if [ "$core" = auto ]; then unset_core="-u OPENBLAS_CORETYPE"; else unset_core=""; fi
        # shellcheck disable=SC2086
        line=$(env $unset_core /usr/bin/python3 "$here/torch_mnist.py" --data "$data" --threads "$threads" \
                 --optim "$optim" --wait-policy "$policy" --steps "$steps")
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
    key = r["bench"] + ("/" + r["omp_wait_policy"].lower() + "/" + str(r.get("openblas_core"))
                        if "omp_wait_policy" in r else "")
    if key not in best or r["samples_per_s"] > best[key]["samples_per_s"]:
        best[key] = r
tg = best["mnist_mlp"]
out = {"bench": "mnist_vs_torch", "optim": sys.argv[3], "threads": int(sys.argv[1]),
       "rounds": int(sys.argv[2]), "tapegrad_samples_per_s": tg["samples_per_s"],
       "tapegrad_peak_rss_mib": tg["peak_rss_mib"]}
torch_runs = [v for k, v in best.items() if k.startswith("torch_mnist")]
for v in torch_runs:  # each wait policy at its better OpenBLAS kernel
    k = "torch_" + v["omp_wait_policy"].lower() + "_samples_per_s"
    out[k] = max(out.get(k, 0), v["samples_per_s"])
if torch_runs:
    th = max(torch_runs, key=lambda v: v["samples_per_s"])  # the better wait policy
    out.update({"torch_samples_per_s": th["samples_per_s"],
                "torch_omp_wait_policy": th["omp_wait_policy"],
                "torch_peak_rss_mib": th["peak_rss_mib"], "torch_blas": th.get("blas_libs"),
                "torch_openblas_core": th.get("openblas_core"),
                "ratio_tapegrad_over_torch": round(tg["samples_per_s"] / th["samples_per_s"], 2)})
print(json.dumps(out, separators=(",", ":")))
' "$threads" "$rounds" "$optim"
done
done
if [ -x "$build/bench/tg_bench" ]; then "$build/bench/tg_bench" --only cpu; fi
