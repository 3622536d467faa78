/* clamp: y = min(max(x, lo), hi)         x [..], y same shape; lo = -INFINITY or hi = INFINITY
 *                                        for no bound
 * dy/dx = 1 where lo <= x <= hi, 0 outside. At the bounds themselves the gradient is 1: PyTorch's
 * clamp_backward passes dy where x >= lo and x <= hi, and so does this. So
 * dx += dy * [lo <= x <= hi]  -- reads the input x. As PyTorch: lo > hi makes every y = hi (and
 * every gradient 0), and a NaN x gives y NaN and gradient 0. */
#include "kernels/parallel.h"

#include <tgmath.h>

typedef struct clamp_params {
    double lo, hi;
} clamp_params;

static tg_status clamp_shape(tg_tensor *y, char *msg, size_t len) {
    const clamp_params *p = y->params;
    if (isnan(p->lo) || isnan(p->hi)) {
        snprintf(msg, len, "min %g and max %g: a bound is NaN (use -INFINITY or INFINITY for none)",
                 p->lo, p->hi);
        return TG_ERR_VALUE;
    }
    return tg__shape_same(y, msg, len);
}

static int clamp_print(const tg_tensor *y, char *buf, size_t len) {
    const clamp_params *p = y->params;
    return snprintf(buf, len, "min=%g, max=%g", p->lo, p->hi);
}

/* Elements are independent: above TG_PAR_MIN_ELEMS the range is split over the threads. */
static void clamp_forward_range(void *ctx, int64_t i0, int64_t i1) {
    tg_tensor *y = ctx;
    const tg_tensor *x = y->inputs[0];
    const clamp_params *p = y->params;
    TG_FOR_DTYPE(y->dtype, T, const T lo = (T)p->lo; const T hi = (T)p->hi; const T *px = x->data;
                 T *py = y->data; for (int64_t i = i0; i < i1; i++) {
                     const T v = px[i] < lo ? lo : px[i]; /* a NaN passes both tests */
                     py[i] = v > hi ? hi : v;
                 });
}

static tg_status clamp_forward(tg_tape *tape, tg_tensor *y) {
    (void)tape;
    tg__parallel_range(y->numel, TG_PAR_MIN_ELEMS, clamp_forward_range, y);
    return TG_OK;
}

static void clamp_backward_range(void *ctx, int64_t i0, int64_t i1) {
    const tg__backward_args *g = ctx;
    const tg_tensor *y = g->y;
    const clamp_params *p = y->params;
    TG_FOR_DTYPE(y->dtype, T, const T lo = (T)p->lo; const T hi = (T)p->hi;
                 const T *px = y->inputs[0]->data; const T *dy = g->dout->data;
                 T *dx = g->din[0]->data; for (int64_t i = i0; i < i1; i++) {
                     const T up = dy[i]; /* read unconditionally so the select vectorizes */
                     dx[i] += px[i] >= lo && px[i] <= hi ? up : 0;
                 });
}

static void clamp_backward(const tg_tensor *y, const tg_tensor *dout, tg_tensor *const *din) {
    if (!din[0])
        return; /* the engine decided x needs no gradient */
    tg__backward_args g = {y, dout, din};
    tg__parallel_range(y->numel, TG_PAR_MIN_ELEMS, clamp_backward_range, &g);
}

const tg__op_desc tg__op_clamp = {
    .name = "clamp",
    .saves = "its input x (by reference) and the bounds",
    .min_inputs = 1,
    .max_inputs = 1,
    .flags = TG__OP_ELEMENTWISE,
    .params_size = sizeof(clamp_params),
    .local = "[min <= x <= max]",
    .shape = clamp_shape,
    .print_params = clamp_print,
    .forward = clamp_forward,
    .backward = clamp_backward,
    .rule = "dx += dy * [min <= x <= max]",
};

tg_tensor *tg_clamp_at(tg_tape *t, tg_tensor *x, double min, double max, const char *file,
                       int line) {
    clamp_params p = {min, max};
    return tg__record(t, &tg__op_clamp, &x, 1, &p, file, line);
}
