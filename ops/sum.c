/* sum: y = sum_i x_i                     x [..], y [] (rank 0)
 * dy/dx_i = 1, so  dx_i += dy.  Saves nothing. Accumulates in double. */
#include "core/engine.h"

static tg_status sum_shape(tg_tensor *y, char *msg, size_t len) {
    (void)msg;
    (void)len;
    y->rank = 0;
    return TG_OK;
}

static tg_status sum_forward(tg_tape *tape, tg_tensor *y) {
    (void)tape;
    const tg_tensor *x = y->inputs[0];
    TG_FOR_DTYPE(y->dtype, T, const T *px = x->data; double acc = 0;
                 for (int64_t i = 0; i < x->numel; i++) acc += px[i];
                 *(T *)y->data = (T)acc;);
    return TG_OK;
}

static void sum_backward(const tg_tensor *y, const tg_tensor *dout, tg_tensor *const *din) {
    if (!din[0])
        return; /* the engine decided x needs no gradient */
    const tg_tensor *x = y->inputs[0];
    TG_FOR_DTYPE(y->dtype, T, const T dy = *(const T *)dout->data; T *dx = din[0]->data;
                 for (int64_t i = 0; i < x->numel; i++) dx[i] += dy;);
}

const tg__op_desc tg__op_sum = {
    .name = "sum",
    .saves = "nothing (the derivative is 1)",
    .min_inputs = 1,
    .max_inputs = 1,
    .shape = sum_shape,
    .forward = sum_forward,
    .backward = sum_backward,
    .rule = "dx += dy at every element",
};

tg_tensor *tg_sum_at(tg_tape *t, tg_tensor *x, const char *file, int line) {
    return tg__record(t, &tg__op_sum, &x, 1, NULL, file, line);
}
