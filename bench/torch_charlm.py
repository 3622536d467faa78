#!/usr/bin/python3
"""The model of examples/charlm.c in PyTorch, one training step timed the same way.

Same workload: 27 tokens, context 16, batches of 32 random training words ('.' + word as input,
word + '.' as target, the padding ignored by the loss); token + position embeddings of 64; 2
pre-LayerNorm blocks of 4-head causal self-attention (a fused q,k,v Linear, masked_fill(-inf) +
softmax) and a 64-256-64 exact-GELU MLP; final LayerNorm; Linear to 27; cross-entropy at every
position; clip_grad_norm_(1.0); AdamW (lr 2e-3, weight decay 0.01) or, with --optim sgd, SGD with
momentum 0.9 (lr 0.05), as charlm --optim. float32. WARMUP steps, then N
timed steps. Prints one JSON line like `charlm --bench N`:

    {"bench":"torch_charlm_train_step","threads":T,"ms_per_step":...,"tokens_per_s":...}

tokens/s counts the 32 x 16 positions of a step, as charlm does. The thread count is set in
OMP_NUM_THREADS, OPENBLAS_NUM_THREADS and MKL_NUM_THREADS, and OMP_WAIT_POLICY to --wait-policy,
before torch is imported, then torch.set_num_threads and set_num_interop_threads (torch_env.py);
the JSON line names the BLAS it loaded. Run it with Debian's python3-torch:
    /usr/bin/python3 bench/torch_charlm.py --threads 1 --steps 200 [--optim sgd] [--wait-policy active]
"""
import argparse
import json
import os
import random
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_env  # noqa: E402 -- sets the thread counts before torch is imported

WARMUP = 20
V, CTX, EMB, HEADS, MLP, LAYERS = 27, 16, 64, 4, 256, 2

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("--threads", type=int, default=1)
ap.add_argument("--steps", type=int, default=200)
ap.add_argument("--batch", type=int, default=32)
ap.add_argument("--words", default="/usr/share/dict/words")
ap.add_argument("--seed", type=int, default=1)
ap.add_argument("--optim", choices=("adamw", "sgd"), default="adamw")
ap.add_argument("--wait-policy", choices=("passive", "active"), default="passive")
args = ap.parse_args()
torch = torch_env.setup(args.threads, args.wait_policy)
import torch.nn as nn  # noqa: E402  (after torch_env.setup)
import torch.nn.functional as F  # noqa: E402

torch.manual_seed(args.seed)


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(EMB), nn.LayerNorm(EMB)
        self.qkv, self.proj = nn.Linear(EMB, 3 * EMB), nn.Linear(EMB, EMB)
        self.fc, self.out = nn.Linear(EMB, MLP), nn.Linear(MLP, EMB)
        self.register_buffer("mask", torch.triu(torch.ones(CTX, CTX, dtype=torch.bool), 1))

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(EMB, dim=2)
        q, k, v = (z.view(B, T, HEADS, C // HEADS).transpose(1, 2) for z in (q, k, v))
        att = (q @ k.transpose(-2, -1)) * (1.0 / (C // HEADS) ** 0.5)
        att = F.softmax(att.masked_fill(self.mask, float("-inf")), dim=-1)
        y = (att @ v).transpose(1, 2).reshape(B, T, C)
        x = x + self.proj(y)
        return x + self.out(F.gelu(self.fc(self.ln2(x))))


class GPT(nn.Module):
    def __init__(self):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(V, EMB), nn.Embedding(CTX, EMB)
        self.blocks = nn.ModuleList(Block() for _ in range(LAYERS))
        self.ln_f, self.head = nn.LayerNorm(EMB), nn.Linear(EMB, V)
        for name, p in self.named_parameters():  # GPT-2's initialization, as charlm
            if p.dim() == 2:
                std = 0.02 / (2 * LAYERS) ** 0.5 if name.endswith(("proj.weight", "out.weight")) else 0.02
                nn.init.normal_(p, 0.0, std)
            elif "ln" in name and name.endswith("weight"):
                nn.init.ones_(p)
            else:
                nn.init.zeros_(p)

    def forward(self, idx):
        x = self.wte(idx) + self.wpe.weight
        for b in self.blocks:
            x = b(x)
        return self.head(self.ln_f(x))


def load_words(path):
    with open(path) as f:
        ws = sorted({w for w in (line.strip() for line in f)
                     if 1 <= len(w) <= CTX - 1 and all("a" <= c <= "z" for c in w)})
    random.Random(args.seed).shuffle(ws)
    return ws[: len(ws) * 9 // 10]


def batch(words, rng):
    x = torch.zeros(args.batch, CTX, dtype=torch.long)
    y = torch.full((args.batch, CTX), -1, dtype=torch.long)
    for r in range(args.batch):
        w = [ord(c) - 96 for c in words[rng.randrange(len(words))]]
        x[r, 1: len(w) + 1] = torch.tensor(w)
        y[r, : len(w) + 1] = torch.tensor(w + [0])
    return x, y


train = load_words(args.words)
model = GPT()
if args.optim == "adamw":
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.01)
else:
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
rng = random.Random(args.seed + 2)


def step():
    x, y = batch(train, rng)
    logits = model(x)
    loss = F.cross_entropy(logits.view(-1, V), y.view(-1), ignore_index=-1)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    return loss.item()


for _ in range(WARMUP):
    step()
t0 = time.perf_counter()
for _ in range(args.steps):
    step()
s = (time.perf_counter() - t0) / args.steps
result = {"bench": "torch_charlm_train_step", "optim": args.optim, "threads": args.threads,
          "batch": args.batch, "context": CTX,
          "params": sum(p.numel() for p in model.parameters()), "steps": args.steps,
          "ms_per_step": round(1e3 * s, 3), "tokens_per_s": round(args.batch * CTX / s)}
result.update(torch_env.describe(torch))
print(json.dumps(result, separators=(",", ":")))
