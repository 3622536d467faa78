/* relu: y = max(x, 0)                    x [..], y same shape
 * dy/dx = 1 where x > 0, 0 where x < 0; at the kink x = 0 we take 0 (the usual subgradient).
 * So  dx += dy * [y > 0]  -- the saved output y is the mask: y > 0 exactly where x > 0. */
#include "parallel.h"

/* Elements are independent: above TG_PAR_MIN_ELEMS the range is split over the threads. */
static void relu_forward_range(void *ctx, int64_t i0, int64_t i1) {
    tg_tensor *y = ctx;
    const tg_tensor *x = y->inputs[0];
    TG_FOR_DTYPE(y->dtype, T, const T *px = x->data; T *py = y->data;
                 for (int64_t i = i0; i < i1; i++) py[i] = px[i] > 0 ? px[i] : 0;);
}

static tg_status relu_forward(tg_tape *tape, tg_tensor *y) {
    (void)tape;
    tg__parallel_range(y->numel, TG_PAR_MIN_ELEMS, relu_forward_range, y);
    return TG_OK;
}

static void relu_backward_range(void *ctx, int64_t i0, int64_t i1) {
    tg_tensor *y = ctx;
    TG_FOR_DTYPE(y->dtype, T, const T *py = y->data; const T *dy = y->grad->data;
                 T *dx = y->inputs[0]->grad->data;
                 /* dy read unconditionally so the compiler can vectorize the select */
                 for (int64_t i = i0; i < i1; i++) {
                     const T g = dy[i];
                     dx[i] += py[i] > 0 ? g : 0;
                 });
}

static void relu_backward(tg_tensor *y) {
    tg__parallel_range(y->numel, TG_PAR_MIN_ELEMS, relu_backward_range, y);
}

tg_tensor *tg_relu_at(tg_tape *t, tg_tensor *x, const char *file, int line) {
    return tg__record(t, TG_OP_RELU, &x, 1, NULL, file, line);
}

const tg_op_desc tg_op_relu = {
    .name = "relu",
    .saves = "its output y, whose sign is the mask [x > 0]",
    .n_inputs = 1,
    .shape = tg__shape_same,
    .forward = relu_forward,
    .backward = relu_backward,
    .local = "dx += dy * [y > 0]",
};
