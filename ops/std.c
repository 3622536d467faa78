/* std: y = sqrt(var(x)) along one axis k, var with correction c as in ops/var.c (PyTorch's
 * std(dim, correction=c))                x [.., n, ..], y [.., ..] (or [.., 1, ..] keepdims)
 * dy/dx_j = dvar/dx_j / (2 y) = (x_j - mean) / ((n - c) y), so
 * dx_j += g * 2 / (n - c) * (x_j - mean),  g = dy / (2 y)  -- uses the saved output y and means.
 * Where y = 0 (all equal along the axis) g is 0, so the gradient is 0, not NaN: PyTorch's
 * std_backward masks that case the same way. n = c gives y NaN and NaN gradients, as PyTorch. */
#include "axis_reduce.h"

static tg_status std_forward(tg_tape *tape, tg_tensor *y) { return tg__var_forward(tape, y, true); }

static void std_backward(const tg_tensor *y, const tg_tensor *dout, tg_tensor *const *din) {
    if (!din[0])
        return; /* the engine decided x needs no gradient */
    tg__var_backward(y, dout, din[0], true);
}

const tg__op_desc tg__op_std = {
    .name = "std",
    .saves = "its output y = std(x) and the means along the axis (and reads x by reference)",
    .min_inputs = 1,
    .max_inputs = 1,
    .params_size = sizeof(tg__var_params),
    .shape = tg__var_shape,
    .print_params = tg__var_print,
    .forward = std_forward,
    .backward = std_backward,
    .rule = "dx += dy / (2 y) * 2 / (n - correction) * (x - mean), 0 where y = 0",
};

tg_tensor *tg_std_at(tg_tape *t, tg_tensor *x, int axis, double correction, int keepdims,
                     const char *file, int line) {
    tg__var_params p = {{axis, keepdims != 0}, correction};
    return tg__record(t, &tg__op_std, &x, 1, &p, file, line);
}
