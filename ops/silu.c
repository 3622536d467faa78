/* silu: y = x sigmoid(x)                 x [..], y same shape
 * dy/dx = s (1 + x (1 - s)), s = sigmoid(x) = 1 / (1 + e^-x) (PyTorch's silu_backward), so
 * dx += dy * s (1 + x (1 - s))  -- forward saves s. */
#include "kernels/parallel.h"

#include <tgmath.h>

/* Elements are independent: above TG_PAR_MIN_ELEMS the range is split over the threads. */
static void silu_forward_range(void *ctx, int64_t i0, int64_t i1) {
    tg_tensor *y = ctx;
    const tg_tensor *x = y->inputs[0];
    TG_FOR_DTYPE(y->dtype, T, const T *px = x->data; T *py = y->data; T *s = y->saved;
                 for (int64_t i = i0; i < i1; i++) {
                     const T d = 1 + exp(-px[i]); /* e^-x = inf gives s = 0: no NaN */
                     s[i] = 1 / d;
                     py[i] = px[i] / d; /* as PyTorch: x / (1 + e^-x), one rounding */
                 });
}

static tg_status silu_forward(tg_tape *tape, tg_tensor *y) {
    y->saved = tg__tape_alloc_raw(tape, (size_t)y->numel * tg__dtype_size(y->dtype));
    if (!y->saved)
        return TG_ERR_NOMEM;
    tg__parallel_range(y->numel, TG_PAR_MIN_ELEMS, silu_forward_range, y);
    return TG_OK;
}

static void silu_backward_range(void *ctx, int64_t i0, int64_t i1) {
    const tg__backward_args *g = ctx;
    const tg_tensor *y = g->y;
    TG_FOR_DTYPE(y->dtype, T, const T *px = y->inputs[0]->data; const T *s = y->saved;
                 const T *dy = g->dout->data; T *dx = g->din[0]->data;
                 for (int64_t i = i0; i < i1; i++)
                     dx[i] += dy[i] * s[i] * (1 + px[i] * (1 - s[i])););
}

static void silu_backward(const tg_tensor *y, const tg_tensor *dout, tg_tensor *const *din) {
    if (!din[0])
        return; /* the engine decided x needs no gradient */
    tg__backward_args g = {y, dout, din};
    tg__parallel_range(y->numel, TG_PAR_MIN_ELEMS, silu_backward_range, &g);
}

const tg__op_desc tg__op_silu = {
    .name = "silu",
    .saves = "its input x (by reference) and s = sigmoid(x)",
    .min_inputs = 1,
    .max_inputs = 1,
    .flags = TG__OP_ELEMENTWISE,
    .local = "s (1 + x (1 - s))",
    .shape = tg__shape_same,
    .forward = silu_forward,
    .backward = silu_backward,
    .rule = "dx += dy * s (1 + x (1 - s)), s = sigmoid(x)",
};

tg_tensor *tg_silu_at(tg_tape *t, tg_tensor *x, const char *file, int line) {
    return tg__record(t, &tg__op_silu, &x, 1, NULL, file, line);
}
