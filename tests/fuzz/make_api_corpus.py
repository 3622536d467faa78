#!/usr/bin/env python3
"""Writes the seed corpus of fuzz_api (tests/fuzz/corpus/api/): small programs in the byte
encoding tests/fuzz/fuzz_api.c interprets -- every builder call at least once with valid operands,
a small network with a backward pass, and the error paths (NULL operands, mixed dtypes, bad
axes, a NULL tape, stale tensors after a reset, a second tape, anomaly mode, the trace, an
observer that stops a pass). Run it after changing the encoding:
    python3 tests/fuzz/make_api_corpus.py
"""
import os
import sys

OPS = ("neg exp log tanh sigmoid relu abs silu sqrt sum mean softmax log_softmax transpose scale "
       "add_scalar leaky_relu elu pow_scalar softplus clamp gelu add sub mul div pow maximum "
       "minimum matmul matmul_bt mse softmax_cross_entropy sum_axis mean_axis max_axis min_axis "
       "logsumexp argmax var std reshape flatten fz_custom").split()
UNARY = OPS[:14]
SCALAR1 = ["scale", "add_scalar", "leaky_relu", "elu", "pow_scalar"]
BINARY = ["add", "sub", "mul", "div", "pow", "maximum", "minimum", "matmul", "matmul_bt", "mse",
          "softmax_cross_entropy"]
AXIS = ["sum_axis", "mean_axis", "max_axis", "min_axis", "logsumexp", "argmax"]

F32, F64, I32 = 0, 1, 2
# Actions (first byte of each; see run_round in fuzz_api.c).
RESET, BACKWARD, REQ_GRAD, CLONE, COPY = 200, 206, 212, 218, 222
ANOMALY_ON, TRAINING_OFF, OTHER, PRINT, OUTPUTS, TRACE_ON, INTROSPECT = 227, 228, 230, 234, 236, 241, 244
END = 0xFF
NULL_OPERAND, STALE, OTHER_TAPE, GRAD = 232, 238, 244, 250
LOC = 0x10  # the call's location byte: this tape, fuzz_api.c line 16
NULL_TAPE = 0xFF


def val(v):
    """A byte whose value is v (multiples of 1/24 in [-4, 4))."""
    b = int(round(96 + 24 * v))
    assert 0 <= b < 192, v
    return b


SPECIAL = {"nan": 192 + 18, "inf": 192 + 20, "-inf": 192 + 21, "huge": 192 + 13, "0": 192}


class Program:
    def __init__(self, modes=0):
        self.b = [modes]
        self.pool = 0  # tensors in the pool (operand bytes below 16 name them)
        self.leaves = 0  # leaves stay in the pool across resets, in order

    def leaf(self, dtype, shape, values=None, grad=False, mode=None):
        rank = len(shape)
        h = next(h for h in range(248) if h % 3 == dtype and (h >> 2) % 10 == rank)
        if mode is None:
            mode = 0 if values is not None else 1
        m = mode | (4 if grad else 0)
        self.b += [176, h, m] + list(shape)
        if mode == 0:
            n = 1
            for d in shape:
                n *= d
            values = values or [0.5] * n
            assert len(values) == n
            for v in values:
                if dtype == I32:
                    self.b.append(int(v) + 1)  # b % 7 - 1
                else:
                    self.b.append(SPECIAL[v] if isinstance(v, str) else val(v))
        elif mode == 2:
            self.b += [val(-1), val(1)]
        self.leaves += 1
        return self._add()

    def _add(self):
        self.pool += 1
        return min(self.pool, 16) - 1

    def call(self, op, *operands, args=(), loc=LOC):
        self.b += [OPS.index(op), loc] + list(operands) + list(args)
        return self._add()

    def custom(self, *operands, shape=(2,), kind=0):
        self.b += [OPS.index("fz_custom"), LOC, kind, len(operands) - 1] + list(operands)
        self.b += [len(shape)] + list(shape)
        return self._add()

    def action(self, *bytes_):
        self.b += list(bytes_)

    def finish(self, backward=(0, 0), gc=(40, 50, 60, 70, 80, 90, 100, 110, 120, 10, 20, 30)):
        """Ends a round: the backward pass, the listing and DOT graph, gradcheck values."""
        assert len(gc) == 12  # fuzz_api reads GC_TOTAL bytes
        self.b += [END] + list(backward) + [0] + list(gc)
        self.pool = self.leaves  # nodes leave the pool at the reset

    def bytes(self):
        return bytes(self.b)


def ax(a):
    return a + 9


def programs():
    out = {}
    # Every unary op on a [2,3] f64 leaf, then its sum's backward.
    for op in UNARY:
        p = Program()
        x = p.leaf(F64, (2, 3), [0.5, 1.0, 1.5, 2.0, 0.25, 0.75], grad=True)
        y = p.call(op, x)
        if op not in ("sum", "mean"):
            y = p.call("sum", y)
        p.finish()
        out["unary_" + op] = p
    for op in SCALAR1:
        p = Program()
        x = p.leaf(F32, (3,), [0.5, -1.0, 2.0], grad=True)
        p.call("sum", p.call(op, x, args=[val(1.5)]))
        p.finish()
        out["scalar_" + op] = p
    p = Program()
    x = p.leaf(F64, (2, 2), [0.5, -1.0, 2.0, 0.0], grad=True)
    p.call("softplus", x, args=[val(1), val(3)])
    p.call("clamp", x, args=[val(-0.5), val(1)])
    p.call("gelu", x, args=[0])
    p.call("gelu", x, args=[1])
    p.call("sum", p.call("gelu", x, args=[1]))
    p.finish()
    out["softplus_clamp_gelu"] = p
    for op in BINARY:
        p = Program()
        if op in ("matmul", "matmul_bt"):
            a = p.leaf(F64, (2, 3), [0.5, 1, 1.5, -1, 0.25, 2], grad=True)
            b = p.leaf(F64, (3, 2) if op == "matmul" else (2, 3), [1, 2, 0.5, -0.5, 1, 1], grad=True)
        elif op == "softmax_cross_entropy":
            a = p.leaf(F64, (2, 3), [0.5, 1, 1.5, -1, 0.25, 2], grad=True)
            b = p.leaf(I32, (2,), [2, 0])
        elif op == "mse":
            a = p.leaf(F32, (2, 2), [0.5, 1, 1.5, -1], grad=True)
            b = p.leaf(F32, (2, 2), [1, 1, 1, 1])
        else:
            a = p.leaf(F64, (2, 1), [0.5, 1.5], grad=True)
            b = p.leaf(F64, (3,), [1, 2, 0.5], grad=True)
        y = p.call(op, a, b)
        if op not in ("mse", "softmax_cross_entropy"):
            y = p.call("sum", y)
        p.finish()
        out["binary_" + op] = p
    for op in AXIS + ["var", "std"]:
        p = Program()
        x = p.leaf(F64, (2, 3), [0.5, 1, 1.5, -1, 0.25, 2], grad=True)
        args = [ax(-1), 1] if op not in ("var", "std") else [ax(1), 1, 0]
        y = p.call(op, x, args=args)
        if op != "argmax":
            p.call("sum", y)
        p.finish()
        out["axis_" + op] = p
    p = Program()
    x = p.leaf(F32, (2, 3, 2), grad=True, mode=2)
    p.call("reshape", x, args=[2, 4, 0])  # [3, -1]
    p.call("flatten", x, args=[ax(0), ax(1)])
    p.call("sum", p.call("reshape", x, args=[240]))  # [-1]
    p.finish()
    out["reshape_flatten"] = p
    p = Program()
    a = p.leaf(F64, (2,), [0.5, 1.0], grad=True)
    b = p.leaf(F64, (3,), [1.0, 2.0, -1.0], grad=True)
    p.call("sum", p.custom(a, b, shape=(2, 2)))
    p.custom(a, shape=(3,), kind=248 + 1)  # NULL op
    p.finish()
    out["custom"] = p

    # A 2-3-2 network: tanh(x W1^T + b1) W2^T + b2, cross-entropy with class indices.
    p = Program(modes=4)  # with the trace on
    x = p.leaf(F32, (4, 2), [0.5, -1, 1, 0.25, -0.5, 2, 1.5, -1.5])
    w1 = p.leaf(F32, (3, 2), grad=True, mode=2)
    b1 = p.leaf(F32, (3,), grad=True, mode=1)
    w2 = p.leaf(F32, (2, 3), grad=True, mode=2)
    b2 = p.leaf(F32, (2,), grad=True, mode=1)
    y = p.leaf(I32, (4,), [0, 1, 1, 0])
    h = p.call("tanh", p.call("add", p.call("matmul_bt", x, w1), b1))
    z = p.call("add", p.call("matmul_bt", h, w2), b2)
    p.call("softmax_cross_entropy", z, y)
    p.action(PRINT, z)
    p.finish()
    p.leaf(F32, (1,), [1.0], grad=True)  # the second round reuses the tape
    p.finish()
    out["network"] = p

    # Errors: NULL operands, mixed dtypes, bad axes, a NULL tape, calls after an error.
    p = Program()
    a = p.leaf(F32, (2, 3))
    b = p.leaf(F64, (2, 3))
    p.call("add", a, NULL_OPERAND)
    p.call("neg", a)  # after the error: NULL
    p.action(RESET)
    p.call("add", a, b)
    p.action(RESET)
    p.call("sum_axis", a, args=[ax(5), 0])
    p.action(RESET)
    p.call("matmul", a, a)
    p.action(RESET)
    p.call("exp", a, loc=NULL_TAPE)
    p.call("reshape", a, args=[2, 5, 5])  # [4,4]: 16 elements, not 6
    p.finish()
    out["errors"] = p

    # Stale tensors after a reset, a node of a second tape, a gradient as an operand.
    p = Program()
    a = p.leaf(F64, (3,), [1, 2, 3], grad=True)
    n = p.call("tanh", a)
    s = p.call("sum", n)
    p.action(BACKWARD, 0x40, s)
    p.call("add", a, GRAD + a)  # the leaf's gradient is a leaf: fine
    p.call("add", a, GRAD + n)  # a node's gradient is not an input
    p.action(RESET)
    p.call("neg", a)
    p.call("neg", a)
    p.call("add", a, STALE)
    p.action(OTHER, 0, 200, a)
    p.call("add", a, OTHER_TAPE)
    p.finish()
    out["stale_other_grad"] = p

    # Anomaly mode with a NaN, an observer that stops the third event, evaluation mode.
    p = Program(modes=1 | 2 | 8 | (0 << 4))
    a = p.leaf(F64, (2,), ["nan", 1.0], grad=True)
    p.call("exp", a)
    p.finish()
    p.leaf(F64, (2,), [0.5, 1.0], grad=True)
    p.call("sum", p.call("exp", 0))
    p.finish()
    out["anomaly_observer"] = p

    # Seeds: tg_backward_seed with a seed of the output's shape, and one of another shape.
    p = Program()
    a = p.leaf(F64, (2, 2), [0.5, 1, -1, 2], grad=True)
    y = p.call("sigmoid", a)
    p.action(BACKWARD, 0xC0, y, 10, val(1), val(2), val(0.5), val(-1))
    p.action(BACKWARD, 0xC0, y, 210, a)
    p.finish(backward=(0x40, y))
    out["seeds"] = p

    # Edge values and shapes: zero sizes, rank 8, infinities, clone/copy/requires-grad.
    p = Program()
    z = p.leaf(F32, (0, 3), grad=True)
    r8 = p.leaf(F64, (1, 2, 1, 2, 1, 1, 2, 1), mode=1, grad=True)
    e = p.leaf(F64, (3,), ["inf", "-inf", "huge"])
    p.call("sum", z)
    p.call("max_axis", r8, args=[ax(-1), 1])
    p.call("logsumexp", e, args=[ax(0), 0])
    p.call("softmax", e)
    p.action(CLONE, e, 2)  # to i32: refused (infinities)
    p.action(CLONE, r8, 0)
    p.action(COPY, e, e)
    p.action(REQ_GRAD, e, 2)
    p.action(INTROSPECT, r8, ax(3))
    p.action(OUTPUTS)
    p.finish()
    out["edges"] = p
    return out


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    target = os.path.join(here, "corpus", "api")
    os.makedirs(target, exist_ok=True)
    for f in os.listdir(target):
        os.remove(os.path.join(target, f))
    progs = programs()
    for name, p in sorted(progs.items()):
        with open(os.path.join(target, name + ".bin"), "wb") as f:
            f.write(p.bytes())
    print(f"wrote {len(progs)} programs to {os.path.relpath(target)}", file=sys.stderr)


if __name__ == "__main__":
    main()
