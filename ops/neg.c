/* neg: y = -x                            x [..], y same shape
 * dy/dx = -1, so  dx -= dy.  Saves nothing. */
#include "core/engine.h"

static tg_status neg_forward(tg_tape *tape, tg_tensor *y) {
    (void)tape;
    const tg_tensor *x = y->inputs[0];
    TG_FOR_DTYPE(y->dtype, T, const T *px = x->data; T *py = y->data;
                 for (int64_t i = 0; i < y->numel; i++) py[i] = -px[i];);
    return TG_OK;
}

static void neg_backward(const tg_tensor *y, const tg_tensor *dout, tg_tensor *const *din) {
    if (!din[0])
        return; /* the engine decided x needs no gradient */
    TG_FOR_DTYPE(y->dtype, T, const T *dy = dout->data; T *dx = din[0]->data;
                 for (int64_t i = 0; i < y->numel; i++) dx[i] -= dy[i];);
}

const tg__op_desc tg__op_neg = {
    .name = "neg",
    .saves = "nothing (the derivative is -1)",
    .min_inputs = 1,
    .max_inputs = 1,
    .flags = TG__OP_ELEMENTWISE,
    .local = "-1",
    .shape = tg__shape_same,
    .forward = neg_forward,
    .backward = neg_backward,
    .rule = "dx -= dy",
};

tg_tensor *tg_neg_at(tg_tape *t, tg_tensor *x, const char *file, int line) {
    return tg__record(t, &tg__op_neg, &x, 1, NULL, file, line);
}
