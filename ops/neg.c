/* neg: y = -x                            x [..], y same shape
 * dy/dx = -1, so  dx -= dy.  Saves nothing. */
#include "internal.h"

static tg_status neg_forward(tg_tape *tape, tg_tensor *y) {
    (void)tape;
    const tg_tensor *x = y->inputs[0];
    TG_FOR_DTYPE(y->dtype, T, const T *px = x->data; T *py = y->data;
                 for (int64_t i = 0; i < y->numel; i++) py[i] = -px[i];);
    return TG_OK;
}

static void neg_backward(tg_tensor *y) {
    TG_FOR_DTYPE(y->dtype, T, const T *dy = y->grad->data; T *dx = y->inputs[0]->grad->data;
                 for (int64_t i = 0; i < y->numel; i++) dx[i] -= dy[i];);
}

tg_tensor *tg_neg_at(tg_tape *t, tg_tensor *x, const char *file, int line) {
    return tg__record(t, TG_OP_NEG, &x, 1, NULL, file, line);
}

const tg_op_desc tg_op_neg = {
    .name = "neg",
    .saves = "nothing (the derivative is -1)",
    .n_inputs = 1,
    .shape = tg__shape_same,
    .forward = neg_forward,
    .backward = neg_backward,
    .local = "dx -= dy",
};
