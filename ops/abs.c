/* abs: y = |x|                           x [..], y same shape
 * dy/dx = sign(x): 1 where x > 0, -1 where x < 0, and 0 at the kink x = 0 (as PyTorch), so
 * dx += dy * sign(x)  -- reads the input x, which the node references. */
#include "core/engine.h"

#include <tgmath.h>

static tg_status abs_forward(tg_tape *tape, tg_tensor *y) {
    (void)tape;
    const tg_tensor *x = y->inputs[0];
    TG_FOR_DTYPE(y->dtype, T, const T *px = x->data; T *py = y->data;
                 for (int64_t i = 0; i < y->numel; i++) py[i] = fabs(px[i]););
    return TG_OK;
}

static void abs_backward(const tg_tensor *y, const tg_tensor *dout, tg_tensor *const *din) {
    if (!din[0])
        return; /* the engine decided x needs no gradient */
    TG_FOR_DTYPE(y->dtype, T, const T *px = y->inputs[0]->data; const T *dy = dout->data;
                 T *dx = din[0]->data; for (int64_t i = 0; i < y->numel; i++) {
                     const T s = px[i] > 0 ? 1 : px[i] < 0 ? -1 : 0;
                     dx[i] += dy[i] * s;
                 });
}

const tg__op_desc tg__op_abs = {
    .name = "abs",
    .min_inputs = 1,
    .max_inputs = 1,
    .flags = TG__OP_ELEMENTWISE,
    .saves = "its input x (by reference)",
    .rule = "dx += dy * sign(x)",
    .local = "sign(x)",
    .shape = tg__shape_same,
    .forward = abs_forward,
    .backward = abs_backward,
};

tg_tensor *tg_abs_at(tg_tape *t, tg_tensor *x, const char *file, int line) {
    return tg__record(t, &tg__op_abs, &x, 1, NULL, file, line);
}
