/* log: y = ln x                          x [..], y same shape
 * dy/dx = 1/x, so  dx += dy / x  -- reads the input x, which the node references.
 * x <= 0 gives -inf or NaN, as ln does; anomaly mode reports it. */
#include "internal.h"

#include <tgmath.h>

static tg_status log_forward(tg_tape *tape, tg_tensor *y) {
    (void)tape;
    const tg_tensor *x = y->inputs[0];
    TG_FOR_DTYPE(y->dtype, T, const T *px = x->data; T *py = y->data;
                 for (int64_t i = 0; i < y->numel; i++) py[i] = log(px[i]););
    return TG_OK;
}

static void log_backward(tg_tensor *y) {
    const tg_tensor *x = y->inputs[0];
    TG_FOR_DTYPE(y->dtype, T, const T *px = x->data; const T *dy = y->grad->data;
                 T *dx = x->grad->data;
                 for (int64_t i = 0; i < y->numel; i++) dx[i] += dy[i] / px[i];);
}

tg_tensor *tg_log_at(tg_tape *t, tg_tensor *x, const char *file, int line) {
    return tg__record(t, TG_OP_LOG, &x, 1, NULL, file, line);
}

const tg_op_desc tg_op_log = {
    .name = "log",
    .saves = "its input x (by reference)",
    .n_inputs = 1,
    .shape = tg__shape_same,
    .forward = log_forward,
    .backward = log_backward,
    .local = "dx += dy / x",
};
