/* exp: y = e^x                           x [..], y same shape
 * dy/dx = e^x = y, so  dx += dy * y  -- uses the saved output y, nothing recomputed. */
#include "core/engine.h"

#include <tgmath.h>

static tg_status exp_forward(tg_tape *tape, tg_tensor *y) {
    (void)tape;
    const tg_tensor *x = y->inputs[0];
    TG_FOR_DTYPE(y->dtype, T, const T *px = x->data; T *py = y->data;
                 for (int64_t i = 0; i < y->numel; i++) py[i] = exp(px[i]););
    return TG_OK;
}

static void exp_backward(const tg_tensor *y, const tg_tensor *dout, tg_tensor *const *din) {
    if (!din[0])
        return; /* the engine decided x needs no gradient */
    TG_FOR_DTYPE(y->dtype, T, const T *py = y->data; const T *dy = dout->data;
                 T *dx = din[0]->data;
                 for (int64_t i = 0; i < y->numel; i++) dx[i] += dy[i] * py[i];);
}

const tg__op_desc tg__op_exp = {
    .name = "exp",
    .saves = "its output y = e^x",
    .min_inputs = 1,
    .max_inputs = 1,
    .flags = TG__OP_ELEMENTWISE,
    .local = "y",
    .shape = tg__shape_same,
    .forward = exp_forward,
    .backward = exp_backward,
    .rule = "dx += dy * y",
};

tg_tensor *tg_exp_at(tg_tape *t, tg_tensor *x, const char *file, int line) {
    return tg__record(t, &tg__op_exp, &x, 1, NULL, file, line);
}
