/* exp: y = e^x                           x [..], y same shape
 * dy/dx = e^x = y, so  dx += dy * y  -- uses the saved output y, nothing recomputed. */
#include "internal.h"

#include <tgmath.h>

static tg_status exp_forward(tg_tape *tape, tg_tensor *y) {
    (void)tape;
    const tg_tensor *x = y->inputs[0];
    TG_FOR_DTYPE(y->dtype, T, const T *px = x->data; T *py = y->data;
                 for (int64_t i = 0; i < y->numel; i++) py[i] = exp(px[i]););
    return TG_OK;
}

static void exp_backward(tg_tensor *y) {
    TG_FOR_DTYPE(y->dtype, T, const T *py = y->data; const T *dy = y->grad->data;
                 T *dx = y->inputs[0]->grad->data;
                 for (int64_t i = 0; i < y->numel; i++) dx[i] += dy[i] * py[i];);
}

tg_tensor *tg_exp_at(tg_tape *t, tg_tensor *x, const char *file, int line) {
    return tg__record(t, TG_OP_EXP, &x, 1, NULL, file, line);
}

const tg_op_desc tg_op_exp = {
    .name = "exp",
    .saves = "its output y = e^x",
    .n_inputs = 1,
    .shape = tg__shape_same,
    .forward = exp_forward,
    .backward = exp_backward,
    .local = "dx += dy * y",
};
