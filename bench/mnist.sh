#!/bin/sh
# Fashion-MNIST MLP training throughput, tapegrad and PyTorch side by side, at 1 and 2 threads.
# Prints one JSON line per run: mnist_mlp --bench (samples/s, peak RSS, heap allocations per
# step), then bench/torch_mnist.py on the same workload with the ratio tapegrad / PyTorch.
#
#   bench/mnist.sh [BUILD_DIR] [STEPS]      (defaults: build, 200)
#
# Needs the data (apt-get install dataset-fashion-mnist, or DATA=/path/to/mnist) and, for the
# PyTorch lines, Debian's python3-torch (skipped with a note when it is missing).
set -eu
build=${1:-build}
steps=${2:-200}
here=$(cd "$(dirname "$0")" && pwd)
data=${DATA:-/usr/share/datasets/fashion-mnist}
prog="$build/examples/mnist_mlp"
[ -x "$prog" ] || { echo "mnist.sh: $prog not found; build first (cmake --build $build)" >&2; exit 2; }

for threads in 1 2; do
  line=$("$prog" --data "$data" --threads "$threads" --bench "$steps")
  echo "$line"
  if /usr/bin/python3 -c 'import torch' 2>/dev/null; then
    /usr/bin/python3 "$here/torch_mnist.py" --data "$data" --threads "$threads" --steps "$steps" \
      --tapegrad "$line"
  else
    echo "mnist.sh: /usr/bin/python3 cannot import torch (apt-get install python3-torch); no PyTorch figures" >&2
  fi
done
