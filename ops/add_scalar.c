/* add_scalar: y = x + s, s a scalar fixed when recorded     x [..], y same shape
 * dy/dx = 1, so  dx += dy.  Saves nothing. */
#include "internal.h"

static tg_status add_scalar_forward(tg_tape *tape, tg_tensor *y) {
    (void)tape;
    const tg_tensor *x = y->inputs[0];
    TG_FOR_DTYPE(y->dtype, T, const T s = (T)y->params.scalar; const T *px = x->data;
                 T *py = y->data; for (int64_t i = 0; i < y->numel; i++) py[i] = px[i] + s;);
    return TG_OK;
}

static void add_scalar_backward(tg_tensor *y) {
    TG_FOR_DTYPE(y->dtype, T, const T *dy = y->grad->data; T *dx = y->inputs[0]->grad->data;
                 for (int64_t i = 0; i < y->numel; i++) dx[i] += dy[i];);
}

tg_tensor *tg_add_scalar_at(tg_tape *t, tg_tensor *x, double s, const char *file, int line) {
    tg_op_params p = {.scalar = s};
    return tg__record(t, TG_OP_ADD_SCALAR, &x, 1, &p, file, line);
}

const tg_op_desc tg_op_add_scalar = {
    .name = "add_scalar",
    .saves = "nothing (the derivative is 1)",
    .n_inputs = 1,
    .shape = tg__shape_same,
    .forward = add_scalar_forward,
    .backward = add_scalar_backward,
    .local = "dx += dy",
};
