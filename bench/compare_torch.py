#!/usr/bin/python3
"""compare_torch.py -- the tapegrad benchmarks next to the same workloads in PyTorch autograd.

Runs tg_bench (circles and MLP steps) and times the same training steps in PyTorch, at 1 and 2
threads each, then prints one JSON line per PyTorch result and a side-by-side table with the
ratios. Each PyTorch measurement runs in its own process, where torch's pools, OpenMP, OpenBLAS
and MKL are all set to the thread count before torch is imported (torch_env.py), once with
OMP_WAIT_POLICY=PASSIVE and once ACTIVE, each (when the environment sets OPENBLAS_CORETYPE) with
it and with it unset (OpenBLAS's own kernel choice); the table takes PyTorch's best. Every timing
starts with a warm-up run that is not counted.

  circles  the 2-4-2 tanh network on 200 points, float32: forward, cross-entropy, backward and a
           plain SGD step (torch.optim.SGD, lr 0.1) -- microseconds per step.
  mlp      784-256-128-10 ReLU MLP on a random float32 batch of 128, cross-entropy, SGD (lr 0.01)
           -- samples per second.

Usage: /usr/bin/python3 bench/compare_torch.py [--tg-bench build/bench/tg_bench] [--quick]
Needs Debian's python3-torch (apt-get install python3-torch).
"""
import argparse
import json
import math
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_env  # noqa: E402 -- torch is imported only through torch_env.setup, in a child

torch = None  # set in the child process (torch_side), after the thread counts


def best_time_per_step(step, steps, reps=4):
    """Best of `reps` timed runs of `steps` steps (plus one warm-up run), in seconds per step."""
    best = math.inf
    for rep in range(reps + 1):
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        dt = (time.perf_counter() - t0) / steps
        if rep > 0:
            best = min(best, dt)
    return best


def torch_circles(steps):
    g = torch.Generator().manual_seed(42)
    n = 200
    r = torch.where(torch.arange(n) % 2 == 1, 1.0, 0.5) + 0.1 * torch.randn(n, generator=g)
    a = 2 * math.pi * torch.rand(n, generator=g)
    x = torch.stack([r * torch.cos(a), r * torch.sin(a)], dim=1).float()
    y = (torch.arange(n) % 2).long()
    model = torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step():
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()

    return best_time_per_step(step, steps)


def torch_mlp(steps):
    g = torch.Generator().manual_seed(7)
    batch = 128
    x = torch.rand(batch, 784, generator=g)
    y = torch.randint(0, 10, (batch,), generator=g)
    model = torch.nn.Sequential(torch.nn.Linear(784, 256), torch.nn.ReLU(),
                                torch.nn.Linear(256, 128), torch.nn.ReLU(),
                                torch.nn.Linear(128, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step():
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()

    return best_time_per_step(step, steps)


def torch_side(threads, policy, quick):
    """The PyTorch timings at `threads`, in this (child) process: JSON lines on stdout."""
    global torch
    torch = torch_env.setup(threads, policy)
    info = torch_env.describe(torch)
    us = torch_circles(500 if quick else 3000) * 1e6
    print(json.dumps({"bench": "circles", "impl": "pytorch", "us_per_step": round(us, 3),
                      **info}))
    sec = torch_mlp(10 if quick else 60)
    print(json.dumps({"bench": "mlp", "impl": "pytorch", "us_per_step": round(sec * 1e6, 1),
                      "samples_per_s": round(128 / sec), **info}))


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tg-bench", default=os.path.join(here, "..", "build", "bench", "tg_bench"),
                    help="path to the tg_bench program (default: build/bench/tg_bench)")
    ap.add_argument("--quick", action="store_true", help="fewer steps")
    ap.add_argument("--torch-side", nargs=2, metavar=("THREADS", "POLICY"),
                    help=argparse.SUPPRESS)  # internal: the PyTorch timings, in a child
    args = ap.parse_args()
    if args.torch_side:
        torch_side(int(args.torch_side[0]), args.torch_side[1], args.quick)
        return

    tg = {}
    for only in ("circles", "mlp"):
        cmd = [args.tg_bench, "--only", only] + (["--quick"] if args.quick else [])
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        for line in out.splitlines():
            rec = json.loads(line)
            if rec["bench"] == "process":
                continue  # its peak RSS would include this Python process (kept across exec)
            print(line)
            if rec["bench"] in ("circles", "mlp"):
                tg[(rec["bench"], rec["threads"])] = rec

    rows = []
    for threads in (1, 2):
        best = {}
        # OpenBLAS's kernel as the environment sets it and, when it is set, OpenBLAS's own choice
        cores = ["env", "auto"] if os.environ.get("OPENBLAS_CORETYPE") else ["auto"]
        for policy, core in [(p, c) for p in ("passive", "active") for c in cores]:
            cmd = [sys.executable, os.path.abspath(__file__), "--torch-side", str(threads), policy]
            cmd += ["--quick"] if args.quick else []
            env = dict(os.environ)
            if core == "auto":
                env.pop("OPENBLAS_CORETYPE", None)
            out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
            for line in out.splitlines():
                print(line)
                rec = json.loads(line)
                key = rec["bench"]
                better = (rec["us_per_step"] < best[key]["us_per_step"]) if key in best else True
                if better:
                    best[key] = rec
        sys.stdout.flush()
        us = best["circles"]["us_per_step"]
        rows.append(("circles us/step", threads, tg[("circles", threads)]["us_per_step"], us,
                     us / tg[("circles", threads)]["us_per_step"]))
        sps = best["mlp"]["samples_per_s"]
        rows.append(("mlp samples/s", threads, tg[("mlp", threads)]["samples_per_s"], sps,
                     tg[("mlp", threads)]["samples_per_s"] / sps))

    # The real Fashion-MNIST training step, when the data set is installed: bench/mnist.sh runs
    # examples/mnist_mlp --bench and bench/torch_mnist.py alternately and keeps each side's best.
    build = os.path.dirname(os.path.dirname(os.path.abspath(args.tg_bench)))
    data = os.environ.get("DATA", "/usr/share/datasets/fashion-mnist")
    if os.path.isdir(data) and os.path.exists(os.path.join(build, "examples", "mnist_mlp")):
        out = subprocess.run(["sh", os.path.join(here, "mnist.sh"), build,
                              "100" if args.quick else "300", "3"],
                             check=True, capture_output=True, text=True).stdout
        for line in out.splitlines():
            print(line)
            rec = json.loads(line)
            if rec["bench"] == "mnist_vs_torch":
                rows.append((f"fashion-mnist {rec['optim']} sam/s", rec["threads"],
                             rec["tapegrad_samples_per_s"], rec["torch_samples_per_s"],
                             rec["ratio_tapegrad_over_torch"]))
    else:
        print(f"(no Fashion-MNIST figures: {data} or {build}/examples/mnist_mlp is missing)")

    print()
    print(f"{'workload':<24} {'threads':>7} {'tapegrad':>12} {'pytorch':>12} {'speed-up':>9}")
    for name, threads, t, p, ratio in rows:
        print(f"{name:<24} {threads:>7} {t:>12.1f} {p:>12.1f} {ratio:>8.2f}x")


if __name__ == "__main__":
    main()
