#!/bin/sh
# The Fashion-MNIST CNN of issue 14: training throughput of tapegrad (examples/fashion_cnn --bench)
# next to the same model in Debian's PyTorch (bench/torch_cnn.py), at 1 and 2 threads, then the
# per-layer conv kernels against their GEMMs (tg_cnn_bench).
#
# Fair settings for PyTorch (set by torch_cnn.py in a fresh process before torch is imported):
# OMP_NUM_THREADS = OPENBLAS_NUM_THREADS = MKL_NUM_THREADS = torch.set_num_threads = T, with
#   GLIBC_TUNABLES=glibc.malloc.trim_threshold=4294967296:glibc.malloc.mmap_threshold=33554432
# (which makes Debian's PyTorch CNN 2-3x faster), OMP_WAIT_POLICY=PASSIVE and ACTIVE, each with
# OpenBLAS's kernel as OPENBLAS_CORETYPE sets it and (when it is set) with it unset, OpenBLAS's
# own choice; tapegrad is compared with the BEST of these.
# The machine is shared and noisy: ROUNDS rounds, each running tapegrad and PyTorch back to back at
# each thread count (alternating sides), and the best figure of each side counts.
#
# Both with Adam and with SGD + momentum 0.9 (fashion_cnn --optim, torch_cnn.py --optim).
# Prints every run's JSON line, then one summary line per optimizer:
#   {"bench":"cnn_vs_torch","optim":"adam"|"sgd","tapegrad_samples_per_s":{"1":..,"2":..},
#    "torch_best_samples_per_s":{"1":..,"2":..},"torch_best_config":{..},
#    "torch_blas":{..},"ratio_tapegrad_over_torch":{"1":..,"2":..},"tapegrad_2t_over_1t":..,
#    "loadavg_before":[..],"loadavg_after":[..]}
# and, from tg_cnn_bench, one line per conv layer and thread count with conv (fwd+bwd) / GEMM.
#
#   bench/cnn.sh [BUILD_DIR] [STEPS] [ROUNDS]      (defaults: build, 30, 3)
#
# Needs the data (apt-get install dataset-fashion-mnist, or DATA=/path/to/fashion-mnist) and, for
# the PyTorch lines, Debian's python3-torch (skipped with a note when it is missing).
set -eu
build=${1:-build}
steps=${2:-30}
rounds=${3:-3}
here=$(cd "$(dirname "$0")" && pwd)
data=${DATA:-/usr/share/datasets/fashion-mnist}
prog="$build/examples/fashion_cnn"
kern="$build/bench/tg_cnn_bench"
[ -x "$prog" ] || { echo "cnn.sh: $prog not found; build first (cmake --build $build)" >&2; exit 2; }
have_torch=1
/usr/bin/python3 -c 'import torch' 2>/dev/null || {
  have_torch=0
  echo "cnn.sh: /usr/bin/python3 cannot import torch (apt-get install python3-torch); no PyTorch figures" >&2
}

# The machine's state: how far apart its two cores are right now (a VM's host moves its vCPUs,
# and a 2-thread figure moves with them); again after the runs.
if [ -x "$build/bench/tg_bench" ]; then "$build/bench/tg_bench" --only cpu; fi
for optim in adam sgd; do
  load0=$(cut -d' ' -f1-3 /proc/loadavg)
  lines=""
  r=0
  while [ "$r" -lt "$rounds" ]; do
    for threads in 1 2; do
      line=$("$prog" --data "$data" --threads "$threads" --optim "$optim" --bench "$steps")
      echo "$line"
      lines="$lines$line
"
      if [ "$have_torch" = 1 ]; then
        line=$(/usr/bin/python3 "$here/torch_cnn.py" --data "$data" --threads "$threads" \
                 --steps "$steps" --rounds 1 --optim "$optim")
        echo "$line"
        lines="$lines$line
"
      fi
    done
    r=$((r + 1))
  done
  load1=$(cut -d' ' -f1-3 /proc/loadavg)

  printf '%s' "$lines" | /usr/bin/python3 -c '
import json, sys
runs = [json.loads(l) for l in sys.stdin if l.strip()]
tg, torch, cfg = {}, {}, {}
for r in runs:
    if r.get("optim") != sys.argv[5]:
        continue
    if r["bench"] == "fashion_cnn":
        t = str(r["threads"])
        if t not in tg or r["samples_per_s"] > tg[t]["samples_per_s"]:
            tg[t] = r
    elif r["bench"] == "torch_cnn":
        for conf, per_t in r["samples_per_s"].items():
            for t, v in per_t.items():
                if v > torch.get(t, 0):
                    torch[t], cfg[t] = v, conf
out = {"bench": "cnn_vs_torch", "optim": sys.argv[5], "rounds": int(sys.argv[1]), "steps": int(sys.argv[2]),
       "tapegrad_samples_per_s": {t: v["samples_per_s"] for t, v in sorted(tg.items())},
       "tapegrad_peak_rss_mib": {t: v["peak_rss_mib"] for t, v in sorted(tg.items())},
       "tapegrad_allocs_per_step": {t: v["allocs_per_step"] for t, v in sorted(tg.items())}}
if torch:
    out["torch_best_samples_per_s"] = dict(sorted(torch.items()))
    out["torch_best_config"] = dict(sorted(cfg.items()))
    out["torch_blas"] = next(r["blas"] for r in runs if r["bench"] == "torch_cnn")
    out["ratio_tapegrad_over_torch"] = {t: round(tg[t]["samples_per_s"] / torch[t], 2)
                                        for t in sorted(tg) if t in torch}
if "1" in tg and "2" in tg:
    out["tapegrad_2t_over_1t"] = round(tg["2"]["samples_per_s"] / tg["1"]["samples_per_s"], 2)
out["loadavg_before"] = [float(x) for x in sys.argv[3].split()]
out["loadavg_after"] = [float(x) for x in sys.argv[4].split()]
print(json.dumps(out, separators=(",", ":")))
  ' "$rounds" "$steps" "$load0" "$load1" "$optim"
done
if [ -x "$build/bench/tg_bench" ]; then "$build/bench/tg_bench" --only cpu; fi

if [ -x "$kern" ]; then
  "$kern" --rounds 5 | /usr/bin/python3 -c '
import json, sys
for l in sys.stdin:
    r = json.loads(l)
    print(l.strip())
    if r["bench"] == "cnn_conv":
        print(json.dumps({"bench": "cnn_conv_summary", "layer": r["layer"],
                          "threads": r["threads"], "conv_fwd_bwd_ms": round(r["conv_fwd_ms"] +
                          r["conv_bwd_ms"], 3), "gemm_fwd_bwd_ms": round(r["gemm_fwd_ms"] +
                          r["gemm_bwd_ms"], 3), "ratio_conv_over_gemm": r["ratio"]},
                         separators=(",", ":")))
'
else
  echo "cnn.sh: $kern not found; no per-layer conv/GEMM ratios" >&2
fi
