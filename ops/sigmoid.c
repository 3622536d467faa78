/* sigmoid: y = 1 / (1 + e^-x)            x [..], y same shape
 * dy/dx = y (1 - y), so  dx += dy * y * (1 - y)  -- uses the saved output y.
 * Forward takes e^-|x| only, so it never overflows: for x < 0, y = e^x / (1 + e^x). */
#include "core/engine.h"

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

static void sigmoid_backward(const tg_tensor *y, const tg_tensor *dout, tg_tensor *const *din) {
    if (!din[0])
        return; /* the engine decided x needs no gradient */
    TG_FOR_DTYPE(y->dtype, T, const T *py = y->data; const T *dy = dout->data;
                 T *dx = din[0]->data;
                 for (int64_t i = 0; i < y->numel; i++) dx[i] += dy[i] * py[i] * (1 - py[i]););
}

const tg__op_desc tg__op_sigmoid = {
    .name = "sigmoid",
    .saves = "its output y = sigmoid(x)",
    .min_inputs = 1,
    .max_inputs = 1,
    .flags = TG__OP_ELEMENTWISE,
    .local = "y (1 - y)",
    .shape = tg__shape_same,
    .forward = sigmoid_forward,
    .backward = sigmoid_backward,
    .rule = "dx += dy * y * (1 - y)",
};

tg_tensor *tg_sigmoid_at(tg_tape *t, tg_tensor *x, const char *file, int line) {
    return tg__record(t, &tg__op_sigmoid, &x, 1, NULL, file, line);
}
