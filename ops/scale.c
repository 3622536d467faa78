/* scale: y = s x, s a scalar fixed when recorded     x [..], y same shape
 * dy/dx = s, so  dx += s dy.  Saves the scalar s. */
#include "internal.h"

static tg_status scale_forward(tg_tape *tape, tg_tensor *y) {
    (void)tape;
    const tg_tensor *x = y->inputs[0];
    TG_FOR_DTYPE(y->dtype, T, const T s = (T)y->params.scalar; const T *px = x->data;
                 T *py = y->data; for (int64_t i = 0; i < y->numel; i++) py[i] = s * px[i];);
    return TG_OK;
}

static void scale_backward(tg_tensor *y) {
    TG_FOR_DTYPE(y->dtype, T, const T s = (T)y->params.scalar; const T *dy = y->grad->data;
                 T *dx = y->inputs[0]->grad->data;
                 for (int64_t i = 0; i < y->numel; i++) dx[i] += s * dy[i];);
}

tg_tensor *tg_scale_at(tg_tape *t, tg_tensor *x, double s, const char *file, int line) {
    tg_op_params p = {.scalar = s};
    return tg__record(t, TG_OP_SCALE, &x, 1, &p, file, line);
}

const tg_op_desc tg_op_scale = {
    .name = "scale",
    .saves = "the scalar s",
    .n_inputs = 1,
    .shape = tg__shape_same,
    .forward = scale_forward,
    .backward = scale_backward,
    .local = "dx += s * dy",
};
