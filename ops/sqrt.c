/* sqrt: y = sqrt(x)                      x [..], y same shape
 * dy/dx = 1 / (2 y), so  dx += dy / (2 y)  -- uses the saved output y. As PyTorch: at x = 0 the
 * gradient is dy / 0 (inf, or NaN when dy = 0); x < 0 gives NaN. */
#include "kernels/parallel.h"

#include <tgmath.h>

/* Elements are independent: above TG_PAR_MIN_ELEMS the range is split over the threads. */
static void sqrt_forward_range(void *ctx, int64_t i0, int64_t i1) {
    tg_tensor *y = ctx;
    const tg_tensor *x = y->inputs[0];
    TG_FOR_DTYPE(y->dtype, T, const T *px = x->data; T *py = y->data;
                 for (int64_t i = i0; i < i1; i++) py[i] = sqrt(px[i]););
}

static tg_status sqrt_forward(tg_tape *tape, tg_tensor *y) {
    (void)tape;
    tg__parallel_range(y->numel, TG_PAR_MIN_ELEMS, sqrt_forward_range, y);
    return TG_OK;
}

static void sqrt_backward_range(void *ctx, int64_t i0, int64_t i1) {
    const tg__backward_args *g = ctx;
    const tg_tensor *y = g->y;
    TG_FOR_DTYPE(y->dtype, T, const T *py = y->data; const T *dy = g->dout->data;
                 T *dx = g->din[0]->data;
                 for (int64_t i = i0; i < i1; i++) dx[i] += dy[i] / (2 * py[i]););
}

static void sqrt_backward(const tg_tensor *y, const tg_tensor *dout, tg_tensor *const *din) {
    if (!din[0])
        return; /* the engine decided x needs no gradient */
    tg__backward_args g = {y, dout, din};
    tg__parallel_range(y->numel, TG_PAR_MIN_ELEMS, sqrt_backward_range, &g);
}

const tg__op_desc tg__op_sqrt = {
    .name = "sqrt",
    .saves = "its output y = sqrt(x)",
    .min_inputs = 1,
    .max_inputs = 1,
    .flags = TG__OP_ELEMENTWISE,
    .local = "1 / (2 y)",
    .shape = tg__shape_same,
    .forward = sqrt_forward,
    .backward = sqrt_backward,
    .rule = "dx += dy / (2 y)",
};

tg_tensor *tg_sqrt_at(tg_tape *t, tg_tensor *x, const char *file, int line) {
    return tg__record(t, &tg__op_sqrt, &x, 1, NULL, file, line);
}
