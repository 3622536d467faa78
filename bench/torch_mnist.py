#!/usr/bin/python3
"""The Fashion-MNIST MLP of examples/mnist_mlp.c, trained in PyTorch, timed the same way.

Same workload: a 784-256-128-10 ReLU MLP, softmax cross-entropy (mean over the batch), mini-batches
of 128 shuffled images converted from bytes to float32 at each step and standardized with the
training set's mean and std ((pixel / 255 - mean) / std), Adam (lr 2e-3) or SGD with momentum 0.9
(lr 0.05). WARMUP steps, then N timed steps. torch's intra- and inter-op pools, OpenMP, OpenBLAS
and MKL are all given --threads before torch is imported (torch_env.py), with OMP_WAIT_POLICY
from --wait-policy. Prints one JSON line with the same fields as `mnist_mlp --bench N`, plus
what the run used (threads, wait policy, the BLAS library and its kernel):

    {"bench":"torch_mnist","threads":T,"samples_per_s":...,"peak_rss_mib":...,"allocs_per_step":null}

plus "ratio_tapegrad_over_torch" when --tapegrad gives tapegrad's samples/s (or its JSON line).
Run it with Debian's python3-torch: /usr/bin/python3 bench/torch_mnist.py --threads 1
The data is read from the IDX .gz files with gzip + numpy (nothing is downloaded).
"""
import argparse
import gzip
import json
import os
import resource
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_env  # noqa: E402 -- sets the thread counts before torch is imported

WARMUP = 20
DEFAULT_DATA = "/usr/share/datasets/fashion-mnist"


def read_idx(path):
    """An IDX file of unsigned bytes (.gz or plain) as a numpy array of its shape."""
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


def find(data_dir, name):
    for candidate in (os.path.join(data_dir, name + ".gz"), os.path.join(data_dir, name)):
        if os.path.exists(candidate):
            return candidate
    sys.exit(f"{data_dir}: no {name}[.gz]; install Fashion-MNIST with "
             "`sudo apt-get install dataset-fashion-mnist` or pass --data DIR")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=DEFAULT_DATA)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=200, help="timed steps after %d warm-up" % WARMUP)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--optim", choices=("adam", "sgd"), default="adam")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--wait-policy", choices=("passive", "active"), default="passive",
                    help="OMP_WAIT_POLICY for the OpenMP runtime (default passive)")
    ap.add_argument("--tapegrad", default=None,
                    help="tapegrad's samples/s, or its JSON line, to print the ratio")
    args = ap.parse_args()

    # torch, OpenMP, OpenBLAS and MKL all get --threads, set before torch is imported.
    torch = torch_env.setup(args.threads, args.wait_policy)
    torch.manual_seed(args.seed)
    images = read_idx(find(args.data, "train-images-idx3-ubyte"))
    labels = read_idx(find(args.data, "train-labels-idx1-ubyte")).astype(np.int64)
    n = images.shape[0]
    # From a histogram of the bytes, as tapegrad does (no float copy of the whole set).
    hist = np.bincount(images.ravel(), minlength=256).astype(np.float64)
    values = np.arange(256) / 255
    mean = float((hist * values).sum() / hist.sum())
    std = float(np.sqrt((hist * values * values).sum() / hist.sum() - mean * mean))
    images = torch.from_numpy(images.reshape(n, -1).copy())  # bytes, as tapegrad keeps them
    labels = torch.from_numpy(labels)

    model = torch.nn.Sequential(
        torch.nn.Linear(images.shape[1], 256), torch.nn.ReLU(),
        torch.nn.Linear(256, 128), torch.nn.ReLU(),
        torch.nn.Linear(128, 10))
    if args.optim == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    loss_fn = torch.nn.CrossEntropyLoss()

    gen = torch.Generator().manual_seed(args.seed)
    order = torch.randperm(n, generator=gen)
    cursor = 0
    samples = 0
    t0 = None
    for step in range(WARMUP + args.steps):
        if step == WARMUP:
            t0 = time.perf_counter()
        if cursor + args.batch > n:
            order = torch.randperm(n, generator=gen)
            cursor = 0
        idx = order[cursor:cursor + args.batch]
        cursor += args.batch
        # The per-batch conversion tapegrad does too.
        x = (images[idx].to(torch.float32) / 255 - mean) / std
        y = labels[idx]
        opt.zero_grad(set_to_none=False)
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        if step >= WARMUP:
            samples += x.shape[0]
    secs = time.perf_counter() - t0
    result = {
        "bench": "torch_mnist",
        "threads": args.threads,
        "batch": args.batch,
        "optim": args.optim,
        "steps": args.steps,
        "samples_per_s": round(samples / secs, 1),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "allocs_per_step": None,
        "final_loss": round(loss.item(), 4),
    }
    result.update(torch_env.describe(torch))
    if args.tapegrad:
        try:
            theirs = float(args.tapegrad)
        except ValueError:
            theirs = float(json.loads(args.tapegrad)["samples_per_s"])
        result["tapegrad_samples_per_s"] = theirs
        result["ratio_tapegrad_over_torch"] = round(theirs / result["samples_per_s"], 2)
    print(json.dumps(result, separators=(",", ":")))


if __name__ == "__main__":
    main()
