/* var: y = sum_j (x_j - mean)^2 / (n - c) along one axis k, c = correction (0 biased, 1 unbiased,
 * as PyTorch's var(dim, correction=c))   x [.., n, ..], y [.., ..] (or [.., 1, ..] keepdims)
 * dy/dx_j = 2 (x_j - mean) / (n - c) (the mean's own dependence on x_j sums to 0), so
 * dx_j += dy * 2 / (n - c) * (x_j - mean)  -- uses the saved means. As PyTorch: the divisor is
 * max(n - c, 0) in forward (n <= c gives NaN, or inf), while backward's factor 2 / (n - c) is
 * not clamped (n = c: inf * 0 = NaN gradients). The helpers are shared with std (ops/std.c). */
#include "axis_reduce.h"

#include <tgmath.h>

tg_status tg__var_shape(tg_tensor *y, char *msg, size_t len) {
    const tg__var_params *p = y->params;
    if (!(p->correction >= 0) || isinf(p->correction)) {
        snprintf(msg, len, "correction is %g; it must be finite and >= 0 (0 biased, 1 unbiased)",
                 p->correction);
        return TG_ERR_VALUE;
    }
    return tg__axis_reduce_shape(y, false, "variance", msg, len);
}

int tg__var_print(const tg_tensor *y, char *buf, size_t len) {
    const tg__var_params *p = y->params;
    return snprintf(buf, len, "axis=%d, correction=%g%s", p->ax.axis, p->correction,
                    p->ax.keepdims ? ", keepdims" : "");
}

tg_status tg__var_forward(tg_tape *tape, tg_tensor *y, bool take_sqrt) {
    const tg_tensor *x = y->inputs[0];
    const tg__var_params *p = y->params;
    int64_t outer, n, inner;
    tg__axis_view(x, p->ax.axis, &outer, &n, &inner);
    double *mean = tg__tape_alloc_raw(tape, sizeof(double) * (size_t)y->numel);
    if (!mean)
        return TG_ERR_NOMEM;
    y->saved = mean;
    const double dof = (double)n - p->correction, div = dof > 0 ? dof : 0;
    TG_FOR_DTYPE(y->dtype, T, const T *px = x->data; T *py = y->data;
                 for (int64_t o = 0; o < outer; o++) for (int64_t i = 0; i < inner; i++) {
                     const T *col = px + o * n * inner + i;
                     double s = 0; /* two passes, in double */
                     for (int64_t j = 0; j < n; j++) s += col[j * inner];
                     const double mu = s / (double)n;
                     double m2 = 0;
                     for (int64_t j = 0; j < n; j++) {
                         const double d = col[j * inner] - mu;
                         m2 += d * d;
                     }
                     const int64_t k = o * inner + i;
                     mean[k] = mu;
                     py[k] = (T)(take_sqrt ? sqrt(m2 / div) : m2 / div);
                 });
    return TG_OK;
}

void tg__var_backward(const tg_tensor *y, const tg_tensor *dout, tg_tensor *dx_t, bool of_sqrt) {
    const tg_tensor *x = y->inputs[0];
    const tg__var_params *p = y->params;
    int64_t outer, n, inner;
    tg__axis_view(x, p->ax.axis, &outer, &n, &inner);
    const double *mean = y->saved;
    const double f = 2 / ((double)n - p->correction);
    TG_FOR_DTYPE(y->dtype, T, const T *px = x->data; const T *py = y->data;
                 const T *dy = dout->data; T *dx = dx_t->data;
                 for (int64_t o = 0; o < outer; o++) for (int64_t i = 0; i < inner; i++) {
                     const int64_t k = o * inner + i;
                     /* std: dvar = dy / (2 std), 0 where std = 0 (PyTorch's std_backward) */
                     const double g = !of_sqrt ? dy[k] : py[k] == 0 ? 0 : dy[k] / (2.0 * py[k]);
                     for (int64_t j = 0; j < n; j++) {
                         const int64_t xi = (o * n + j) * inner + i;
                         dx[xi] += (T)(f * g * (px[xi] - mean[k]));
                     }
                 });
}

static tg_status var_forward(tg_tape *tape, tg_tensor *y) {
    return tg__var_forward(tape, y, false);
}

static void var_backward(const tg_tensor *y, const tg_tensor *dout, tg_tensor *const *din) {
    if (!din[0])
        return; /* the engine decided x needs no gradient */
    tg__var_backward(y, dout, din[0], false);
}

const tg__op_desc tg__op_var = {
    .name = "var",
    .saves = "the means along the axis (and reads x by reference)",
    .min_inputs = 1,
    .max_inputs = 1,
    .params_size = sizeof(tg__var_params),
    .shape = tg__var_shape,
    .print_params = tg__var_print,
    .forward = var_forward,
    .backward = var_backward,
    .rule = "dx += dy * 2 / (n - correction) * (x - mean)",
};

tg_tensor *tg_var_at(tg_tape *t, tg_tensor *x, int axis, double correction, int keepdims,
                     const char *file, int line) {
    tg__var_params p = {{axis, keepdims != 0}, correction};
    return tg__record(t, &tg__op_var, &x, 1, &p, file, line);
}
