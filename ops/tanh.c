/* tanh: y = tanh(x)                      x [..], y same shape
 * dy/dx = 1 - y^2, so  dx += dy * (1 - y*y)  -- uses the saved output y, nothing recomputed
 * (the report's h = tanh(h~), whose derivative 1 - h^2 appears in its answer 17). */
#include "kernels/parallel.h"

#include <tgmath.h>

/* Elements are independent: above TG_PAR_MIN_ELEMS the range is split over the threads. */
static void tanh_forward_range(void *ctx, int64_t i0, int64_t i1) {
    tg_tensor *y = ctx;
    const tg_tensor *x = y->inputs[0];
    if (y->dtype == TG_F32) { /* 8 lanes at a time (src/vmath.c) */
        tg__tanh_f32((const float *)x->data + i0, (float *)y->data + i0, i1 - i0);
        return;
    }
    TG_FOR_DTYPE(y->dtype, T, const T *px = x->data; T *py = y->data;
                 for (int64_t i = i0; i < i1; i++) py[i] = tanh(px[i]););
}

static tg_status tanh_forward(tg_tape *tape, tg_tensor *y) {
    (void)tape;
    tg__parallel_range(y->numel, TG_PAR_MIN_ELEMS, tanh_forward_range, y);
    return TG_OK;
}

static void tanh_backward_range(void *ctx, int64_t i0, int64_t i1) {
    const tg__backward_args *g = ctx;
    const tg_tensor *y = g->y;
    TG_FOR_DTYPE(y->dtype, T, const T *py = y->data; const T *dy = g->dout->data;
                 T *dx = g->din[0]->data; if (tg__dx_fresh(g->din[0])) {
                     for (int64_t i = i0; i < i1; i++) dx[i] = dy[i] * (1 - py[i] * py[i]);
                 } else {
                     for (int64_t i = i0; i < i1; i++) dx[i] += dy[i] * (1 - py[i] * py[i]);
                 });
}

static void tanh_backward(const tg_tensor *y, const tg_tensor *dout, tg_tensor *const *din) {
    if (!din[0])
        return;
    tg__backward_args g = {y, dout, din};
    tg__parallel_range(y->numel, TG_PAR_MIN_ELEMS, tanh_backward_range, &g);
}

const tg__op_desc tg__op_tanh = {
    .name = "tanh",
    .saves = "its output y = tanh(x)",
    .min_inputs = 1,
    .max_inputs = 1,
    .flags = TG__OP_ELEMENTWISE | TG__OP_WRITES_GRAD,
    .local = "1 - y^2",
    .shape = tg__shape_same,
    .forward = tanh_forward,
    .backward = tanh_backward,
    .rule = "dx += dy * (1 - y^2)",
};

tg_tensor *tg_tanh_at(tg_tape *t, tg_tensor *x, const char *file, int line) {
    return tg__record(t, &tg__op_tanh, &x, 1, NULL, file, line);
}
