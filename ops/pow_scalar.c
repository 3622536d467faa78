/* pow_scalar: y = x^p, p a scalar fixed when recorded     x [..], y same shape
 * dy/dx = p x^(p-1), so  dx += dy * p x^(p-1); for p = 0 the gradient is 0 everywhere (as
 * PyTorch's pow_backward, also at x = 0 where 0 * 0^-1 would be NaN). Saves p; reads x.
 * As PyTorch, p = 2, 3, 0.5, -1, -2, -0.5 are computed as x*x, x*x*x, sqrt(x), 1/x, 1/(x*x),
 * 1/sqrt(x) (the same values, rounded once). */
#include "kernels/parallel.h"

#include <tgmath.h>

static double p_of(const tg_tensor *y) { return ((const tg__scalar_params *)y->params)->s; }

static int pow_scalar_print(const tg_tensor *y, char *buf, size_t len) {
    return snprintf(buf, len, "p=%g", p_of(y));
}

/* Elements are independent: above TG_PAR_MIN_ELEMS the range is split over the threads. */
static void pow_scalar_forward_range(void *ctx, int64_t i0, int64_t i1) {
    tg_tensor *y = ctx;
    const tg_tensor *x = y->inputs[0];
    const double p = p_of(y);
    TG_FOR_DTYPE(y->dtype, T, const T *px = x->data; T *py = y->data;
                 if (p == 2) for (int64_t i = i0; i < i1; i++) py[i] = px[i] * px[i];
                 else if (p == 3) for (int64_t i = i0; i < i1; i++) py[i] = px[i] * px[i] * px[i];
                 else if (p == 0.5) for (int64_t i = i0; i < i1; i++) py[i] = sqrt(px[i]);
                 else if (p == -1) for (int64_t i = i0; i < i1; i++) py[i] = 1 / px[i];
                 else if (p == -2) for (int64_t i = i0; i < i1; i++) py[i] = 1 / (px[i] * px[i]);
                 else if (p == -0.5) for (int64_t i = i0; i < i1; i++) py[i] = 1 / sqrt(px[i]);
                 else for (int64_t i = i0; i < i1; i++) py[i] = pow(px[i], (T)p););
}

static tg_status pow_scalar_forward(tg_tape *tape, tg_tensor *y) {
    (void)tape;
    tg__parallel_range(y->numel, TG_PAR_MIN_ELEMS, pow_scalar_forward_range, y);
    return TG_OK;
}

static void pow_scalar_backward_range(void *ctx, int64_t i0, int64_t i1) {
    const tg__backward_args *g = ctx;
    const tg_tensor *y = g->y;
    const double p = p_of(y);
    TG_FOR_DTYPE(y->dtype, T, const T *px = y->inputs[0]->data; const T *dy = g->dout->data;
                 T *dx = g->din[0]->data; const T pt = (T)p;
                 if (p == 2) for (int64_t i = i0; i < i1; i++) dx[i] += dy[i] * (2 * px[i]);
                 else for (int64_t i = i0; i < i1; i++) dx[i] += dy[i] * (pt * pow(px[i], pt - 1)););
}

static void pow_scalar_backward(const tg_tensor *y, const tg_tensor *dout, tg_tensor *const *din) {
    if (!din[0] || p_of(y) == 0)
        return; /* no gradient wanted, or p = 0: the gradient is 0 */
    tg__backward_args g = {y, dout, din};
    tg__parallel_range(y->numel, TG_PAR_MIN_ELEMS, pow_scalar_backward_range, &g);
}

const tg__op_desc tg__op_pow_scalar = {
    .name = "pow_scalar",
    .saves = "its input x (by reference) and the exponent p",
    .min_inputs = 1,
    .max_inputs = 1,
    .flags = TG__OP_ELEMENTWISE,
    .params_size = sizeof(tg__scalar_params),
    .local = "p x^(p-1) (0 for p = 0)",
    .shape = tg__shape_same,
    .print_params = pow_scalar_print,
    .forward = pow_scalar_forward,
    .backward = pow_scalar_backward,
    .rule = "dx += dy * p x^(p-1)",
};

tg_tensor *tg_pow_scalar_at(tg_tape *t, tg_tensor *x, double p, const char *file, int line) {
    tg__scalar_params prm = {p};
    return tg__record(t, &tg__op_pow_scalar, &x, 1, &prm, file, line);
}
