/* mean: y = (1/n) sum_i x_i              x [..] with n elements, y [] (rank 0)
 * dy/dx_i = 1/n, so  dx_i += dy / n.  Saves nothing. Accumulates in double.
 * The mean of no elements is NaN, as in NumPy. */
#include "core/engine.h"

static tg_status mean_shape(tg_tensor *y, char *msg, size_t len) {
    (void)msg;
    (void)len;
    y->rank = 0;
    return TG_OK;
}

static tg_status mean_forward(tg_tape *tape, tg_tensor *y) {
    (void)tape;
    const tg_tensor *x = y->inputs[0];
    TG_FOR_DTYPE(y->dtype, T, const T *px = x->data; double acc = 0;
                 for (int64_t i = 0; i < x->numel; i++) acc += px[i];
                 *(T *)y->data = (T)(acc / (double)x->numel););
    return TG_OK;
}

static void mean_backward(const tg_tensor *y, const tg_tensor *dout, tg_tensor *const *din) {
    if (!din[0])
        return; /* the engine decided x needs no gradient */
    const tg_tensor *x = y->inputs[0];
    TG_FOR_DTYPE(y->dtype, T, const T dy = *(const T *)dout->data / (T)x->numel;
                 T *dx = din[0]->data; for (int64_t i = 0; i < x->numel; i++) dx[i] += dy;);
}

const tg__op_desc tg__op_mean = {
    .name = "mean",
    .saves = "nothing (the derivative is 1/n)",
    .min_inputs = 1,
    .max_inputs = 1,
    .shape = mean_shape,
    .forward = mean_forward,
    .backward = mean_backward,
    .rule = "dx += dy / n at every element",
};

tg_tensor *tg_mean_at(tg_tape *t, tg_tensor *x, const char *file, int line) {
    return tg__record(t, &tg__op_mean, &x, 1, NULL, file, line);
}
