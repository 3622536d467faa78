/* sigmoid: y = 1 / (1 + e^-x)            x [..], y same shape
 * dy/dx = y (1 - y), so  dx += dy * y * (1 - y)  -- uses the saved output y.
 * Forward takes e^-|x| only, so it never overflows: for x < 0, y = e^x / (1 + e^x). */
#include "internal.h"

#include <tgmath.h>

static tg_status sigmoid_forward(tg_tape *tape, tg_tensor *y) {
    (void)tape;
    const tg_tensor *x = y->inputs[0];
    TG_FOR_DTYPE(y->dtype, T, const T *px = x->data; T *py = y->data;
                 for (int64_t i = 0; i < y->numel; i++) {
                     T e = exp(-fabs(px[i]));
                     py[i] = px[i] >= 0 ? 1 / (1 + e) : e / (1 + e);
                 });
    return TG_OK;
}

static void sigmoid_backward(tg_tensor *y) {
    TG_FOR_DTYPE(y->dtype, T, const T *py = y->data; const T *dy = y->grad->data;
                 T *dx = y->inputs[0]->grad->data;
                 for (int64_t i = 0; i < y->numel; i++) dx[i] += dy[i] * py[i] * (1 - py[i]););
}

tg_tensor *tg_sigmoid_at(tg_tape *t, tg_tensor *x, const char *file, int line) {
    return tg__record(t, TG_OP_SIGMOID, &x, 1, NULL, file, line);
}

const tg_op_desc tg_op_sigmoid = {
    .name = "sigmoid",
    .saves = "its output y = sigmoid(x)",
    .n_inputs = 1,
    .shape = tg__shape_same,
    .forward = sigmoid_forward,
    .backward = sigmoid_backward,
    .local = "dx += dy * y * (1 - y)",
};
