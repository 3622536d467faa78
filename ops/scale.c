/* scale: y = s x, s a scalar fixed when recorded     x [..], y same shape
 * dy/dx = s, so  dx += s dy.  Saves the scalar s. */
#include "kernels/parallel.h"

int tg__scalar_print(const tg_tensor *y, char *buf, size_t len) {
    return snprintf(buf, len, "%g", ((const tg__scalar_params *)y->params)->s);
}

/* Elements [i0, i1): y = s x (forward), dx = s dy or dx += s dy (backward). Elements are
 * independent, so the loops are split over threads above the size threshold (the same halves as
 * the elementwise ops and the batched matmul of an attention block give each thread). */
static void scale_forward_range(void *ctx, int64_t i0, int64_t i1) {
    const tg_tensor *y = ctx, *x = y->inputs[0];
    TG_FOR_DTYPE(y->dtype, T, const T s = (T)((const tg__scalar_params *)y->params)->s;
                 const T *px = x->data; T *py = y->data;
                 for (int64_t i = i0; i < i1; i++) py[i] = s * px[i];);
}

static tg_status scale_forward(tg_tape *tape, tg_tensor *y) {
    (void)tape;
    tg__parallel_range(y->numel, TG_PAR_MIN_ELEMS, scale_forward_range, y);
    return TG_OK;
}

static void scale_backward_range(void *ctx, int64_t i0, int64_t i1) {
    const tg__backward_args *g = ctx;
    const tg_tensor *y = g->y;
    TG_FOR_DTYPE(y->dtype, T, const T s = (T)((const tg__scalar_params *)y->params)->s;
                 const T *dy = g->dout->data; T *dx = g->din[0]->data;
                 if (tg__dx_fresh(g->din[0])) {
                     for (int64_t i = i0; i < i1; i++) dx[i] = s * dy[i];
                 } else {
                     for (int64_t i = i0; i < i1; i++) dx[i] += s * dy[i];
                 });
}

static void scale_backward(const tg_tensor *y, const tg_tensor *dout, tg_tensor *const *din) {
    if (!din[0])
        return; /* the engine decided x needs no gradient */
    tg__backward_args g = {y, dout, din};
    tg__parallel_range(y->numel, TG_PAR_MIN_ELEMS, scale_backward_range, &g);
}

const tg__op_desc tg__op_scale = {
    .name = "scale",
    .saves = "the scalar s",
    .min_inputs = 1,
    .max_inputs = 1,
    .flags = TG__OP_ELEMENTWISE | TG__OP_WRITES_GRAD,
    .local = "s",
    .params_size = sizeof(tg__scalar_params),
    .shape = tg__shape_same,
    .print_params = tg__scalar_print,
    .forward = scale_forward,
    .backward = scale_backward,
    .rule = "dx += s * dy",
};

tg_tensor *tg_scale_at(tg_tape *t, tg_tensor *x, double s, const char *file, int line) {
    tg__scalar_params p = {s};
    return tg__record(t, &tg__op_scale, &x, 1, &p, file, line);
}
