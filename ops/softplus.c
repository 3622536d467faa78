/* softplus: y = log(1 + e^(b x)) / b, and y = x where b x > threshold (PyTorch's Softplus: b =
 * beta, default 1; threshold default 20)  x [..], y same shape
 * dy/dx = sigmoid(b x) = 1 - e^(-b y) below the threshold, 1 above it, so
 * dx += dy * (b x > threshold ? 1 : -expm1(-b y))  -- uses the saved output y (and reads x for
 * the threshold test). Forward is PyTorch's log1p(exp(b x)) / b, the same formula (it
 * overflows as PyTorch's does for a threshold above ~88 in f32). */
#include "kernels/parallel.h"

#include <tgmath.h>

typedef struct softplus_params {
    double beta, threshold;
} softplus_params;

static tg_status softplus_shape(tg_tensor *y, char *msg, size_t len) {
    const softplus_params *p = y->params;
    if (!(p->beta != 0 && isfinite(p->beta)) || isnan(p->threshold)) {
        snprintf(msg, len,
                 "beta is %g and threshold %g; beta must be finite and nonzero, "
                 "threshold a number",
                 p->beta, p->threshold);
        return TG_ERR_VALUE;
    }
    return tg__shape_same(y, msg, len);
}

static int softplus_print(const tg_tensor *y, char *buf, size_t len) {
    const softplus_params *p = y->params;
    return snprintf(buf, len, "beta=%g, threshold=%g", p->beta, p->threshold);
}

/* Elements are independent: above TG_PAR_MIN_ELEMS the range is split over the threads. */
static void softplus_forward_range(void *ctx, int64_t i0, int64_t i1) {
    tg_tensor *y = ctx;
    const tg_tensor *x = y->inputs[0];
    const softplus_params *p = y->params;
    TG_FOR_DTYPE(y->dtype, T, const T b = (T)p->beta; const T thr = (T)p->threshold;
                 const T *px = x->data; T *py = y->data;
                 for (int64_t i = i0; i < i1; i++) {
                     const T bx = px[i] * b;
                     py[i] = bx > thr ? px[i] : log1p(exp(bx)) / b;
                 });
}

static tg_status softplus_forward(tg_tape *tape, tg_tensor *y) {
    (void)tape;
    tg__parallel_range(y->numel, TG_PAR_MIN_ELEMS, softplus_forward_range, y);
    return TG_OK;
}

static void softplus_backward_range(void *ctx, int64_t i0, int64_t i1) {
    const tg__backward_args *g = ctx;
    const tg_tensor *y = g->y;
    const softplus_params *p = y->params;
    TG_FOR_DTYPE(y->dtype, T, const T b = (T)p->beta; const T thr = (T)p->threshold;
                 const T *px = y->inputs[0]->data; const T *py = y->data;
                 const T *dy = g->dout->data; T *dx = g->din[0]->data;
                 for (int64_t i = i0; i < i1; i++)
                     dx[i] += px[i] * b > thr ? dy[i] : dy[i] * -expm1(-b * py[i]););
}

static void softplus_backward(const tg_tensor *y, const tg_tensor *dout, tg_tensor *const *din) {
    if (!din[0])
        return; /* the engine decided x needs no gradient */
    tg__backward_args g = {y, dout, din};
    tg__parallel_range(y->numel, TG_PAR_MIN_ELEMS, softplus_backward_range, &g);
}

const tg__op_desc tg__op_softplus = {
    .name = "softplus",
    .saves = "its output y = softplus(x), its input x (by reference), beta and threshold",
    .min_inputs = 1,
    .max_inputs = 1,
    .flags = TG__OP_ELEMENTWISE,
    .params_size = sizeof(softplus_params),
    .local = "1 - e^(-b y) (1 above the threshold)",
    .shape = softplus_shape,
    .print_params = softplus_print,
    .forward = softplus_forward,
    .backward = softplus_backward,
    .rule = "dx += dy * (b x > threshold ? 1 : 1 - e^(-b y))",
};

tg_tensor *tg_softplus_at(tg_tape *t, tg_tensor *x, double beta, double threshold, const char *file,
                          int line) {
    softplus_params p = {beta, threshold};
    return tg__record(t, &tg__op_softplus, &x, 1, &p, file, line);
}
