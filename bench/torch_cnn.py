#!/usr/bin/python3
"""The Fashion-MNIST CNN of issue 14 trained in Debian's PyTorch: samples/s per thread count.

The model: conv 1->32 3x3 pad 1, batch norm, relu, max pool 2; conv 32->64 3x3 pad 1, batch norm,
relu, max pool 2; dropout 0.25; linear 3136->128, relu; linear 128->10; cross-entropy (mean over
the batch); Adam (lr 3e-3) or SGD with momentum 0.9 (lr 0.05), as examples/fashion_cnn
--optim; mini-batches of 128 shuffled training images, bytes converted to
float32 and standardized ((pixel / 255 - mean) / std) at each step, as bench/torch_mnist.py does.

Fair settings. Each measurement runs in a fresh child process whose environment is set before
torch is imported: OMP_NUM_THREADS, OPENBLAS_NUM_THREADS, MKL_NUM_THREADS = T (and
torch.set_num_threads(T), torch.set_num_interop_threads(1)), OMP_WAIT_POLICY = PASSIVE or ACTIVE,
GLIBC_TUNABLES=glibc.malloc.trim_threshold=4294967296:glibc.malloc.mmap_threshold=33554432
(glibc otherwise returns the large activation buffers to the kernel after every step and faults
them back in at the next: Debian's PyTorch CNN runs 2-3x faster with it), and OpenBLAS's kernel
as OPENBLAS_CORETYPE sets it and, when that is set, also with it unset (OpenBLAS's own choice,
its AVX-512 kernel on AVX-512 CPUs). Each child warms up, then times --rounds rounds of --steps
steps and keeps the best round.

Prints one JSON line:
  {"bench":"torch_cnn", "optim":..., "torch":..., "cpu":..., "batch":128, "steps":..., "rounds":...,
   "samples_per_s": {"<policy>/openblas_<core>": {"1": ..., "2": ...}, ...},
   "blas": <what the last child loaded: torch_env.describe>}
Usage: /usr/bin/python3 bench/torch_cnn.py [--threads 1,2] [--steps 30] [--rounds 3]
       [--optim adam|sgd] [--synthetic]   (random images instead of /usr/share/datasets/fashion-mnist)
"""
import argparse
import gzip
import json
import os
import subprocess
import sys
import time

DEFAULT_DATA = "/usr/share/datasets/fashion-mnist"
TUNABLES = "glibc.malloc.trim_threshold=4294967296:glibc.malloc.mmap_threshold=33554432"
WARMUP = 10


def read_idx(path):
    """An IDX file of unsigned bytes (.gz or plain) as a numpy array of its shape."""
    import numpy as np
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        sys.exit(f"{path}: not an IDX file of unsigned bytes")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        sys.exit(f"{path}: {data.size} bytes of data for dimensions {dims}")
    return data.reshape(dims)


def worker(args):
    """One measurement; the environment was set by the parent before this process started."""
    import numpy as np
    import torch
    import torch.nn as nn
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import torch_env  # describe() only: the parent set the environment before this process

    threads = int(os.environ["OMP_NUM_THREADS"])
    torch.set_num_threads(threads)
    torch.set_num_interop_threads(1)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)

    if args.synthetic:
        images = rng.integers(0, 256, size=(60000, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=60000).astype(np.int64)
    else:
        images = read_idx(os.path.join(args.data, "train-images-idx3-ubyte.gz"))
        labels = read_idx(os.path.join(args.data, "train-labels-idx1-ubyte.gz")).astype(np.int64)
    mean = float(images.mean() / 255.0)
    std = float((images / 255.0).std())

    # The relus after batch norm run in place, as torchvision's models have them: PyTorch's own
    # way to not keep batch norm's output (tapegrad fuses the pair into batch_norm_relu); in place
    # they were 0-3% faster here (best of the four settings, two rounds each way).
    model = nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Dropout(0.25), nn.Flatten(),
        nn.Linear(3136, 128), nn.ReLU(), nn.Linear(128, 10))
    model.train()
    if args.optim == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    batch = args.batch
    order = rng.permutation(len(images))
    pos = [0]

    def step():
        if pos[0] + batch > len(order):
            pos[0] = 0
        idx = order[pos[0]:pos[0] + batch]
        pos[0] += batch
        xb = torch.from_numpy(
            ((images[idx].astype(np.float32) / 255.0 - mean) / std).reshape(batch, 1, 28, 28))
        yb = torch.from_numpy(labels[idx])
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(xb), yb)
        loss.backward()
        opt.step()
        return loss

    for _ in range(WARMUP):
        step()
    best = 0.0
    for _ in range(args.rounds):
        t0 = time.perf_counter()
        for _ in range(args.steps):
            step()
        dt = time.perf_counter() - t0
        best = max(best, args.steps * batch / dt)
    print(json.dumps({"samples_per_s": round(best, 1), "torch": torch.__version__,
                      "threads_torch": torch.get_num_threads(),
                      "describe": torch_env.describe(torch)}))


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=DEFAULT_DATA)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--optim", choices=("adam", "sgd"), default="adam")
    ap.add_argument("--synthetic", action="store_true")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return

    threads = [int(t) for t in args.threads.split(",")]
    results, version, described = {}, None, None
    # Alternate the configurations inside each thread count so that load from other processes
    # on the shared machine falls on all of them alike.
    # OpenBLAS's kernel: as the environment sets it (OPENBLAS_CORETYPE) and, when it is set,
    # also OpenBLAS's own choice for this CPU (unset: its AVX-512 kernel where the CPU has it).
    cores = ["env", "auto"] if os.environ.get("OPENBLAS_CORETYPE") else ["auto"]
    for t in threads:
        for policy in ("PASSIVE", "ACTIVE"):
            for core in cores:
                env = dict(os.environ)
                for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
                    env[var] = str(t)
                env["OMP_WAIT_POLICY"] = policy
                env["GLIBC_TUNABLES"] = TUNABLES
                if core == "auto":
                    env.pop("OPENBLAS_CORETYPE", None)
                cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--data", args.data,
                       "--steps", str(args.steps), "--rounds", str(args.rounds),
                       "--batch", str(args.batch), "--optim", args.optim] + (["--synthetic"] if args.synthetic else [])
                out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
                r = json.loads(out.stdout.strip().splitlines()[-1])
                version, described = r["torch"], r["describe"]
                name = described.get("openblas_core") or core
                results.setdefault(f"{policy}/openblas_{name}", {})[str(t)] = r["samples_per_s"]
    blas = {k: described[k] for k in ("blas_info", "blas_libs", "openblas_core")}
    print(json.dumps({"bench": "torch_cnn", "optim": args.optim, "torch": version, "cpu": cpu_name(),
                      "batch": args.batch, "steps": args.steps, "rounds": args.rounds,
                      "data": "synthetic" if args.synthetic else args.data,
                      "tunables": TUNABLES, "samples_per_s": results, "blas": blas}))


if __name__ == "__main__":
    main()
