/* log: y = ln x                          x [..], y same shape
 * dy/dx = 1/x, so  dx += dy / x  -- reads the input x, which the node references.
 * x <= 0 gives -inf or NaN, as ln does; anomaly mode reports it. */
#include "core/engine.h"

#include <tgmath.h>

static tg_status log_forward(tg_tape *tape, tg_tensor *y) {
    (void)tape;
    const tg_tensor *x = y->inputs[0];
    TG_FOR_DTYPE(y->dtype, T, const T *px = x->data; T *py = y->data;
                 for (int64_t i = 0; i < y->numel; i++) py[i] = log(px[i]););
    return TG_OK;
}

static void log_backward(const tg_tensor *y, const tg_tensor *dout, tg_tensor *const *din) {
    if (!din[0])
        return; /* the engine decided x needs no gradient */
    const tg_tensor *x = y->inputs[0];
    TG_FOR_DTYPE(y->dtype, T, const T *px = x->data; const T *dy = dout->data;
                 T *dx = din[0]->data;
                 for (int64_t i = 0; i < y->numel; i++) dx[i] += dy[i] / px[i];);
}

const tg__op_desc tg__op_log = {
    .name = "log",
    .saves = "its input x (by reference)",
    .min_inputs = 1,
    .max_inputs = 1,
    .flags = TG__OP_ELEMENTWISE,
    .local = "1 / x",
    .shape = tg__shape_same,
    .forward = log_forward,
    .backward = log_backward,
    .rule = "dx += dy / x",
};

tg_tensor *tg_log_at(tg_tape *t, tg_tensor *x, const char *file, int line) {
    return tg__record(t, &tg__op_log, &x, 1, NULL, file, line);
}
