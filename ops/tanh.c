/* tanh: y = tanh(x)                      x [..], y same shape
 * dy/dx = 1 - y^2, so  dx += dy * (1 - y*y)  -- uses the saved output y, nothing recomputed
 * (the report's h = tanh(h~), whose derivative 1 - h^2 appears in its answer 17). */
#include "parallel.h"

#include <tgmath.h>

static tg_status tanh_forward(tg_tape *tape, tg_tensor *y) {
    (void)tape;
    const tg_tensor *x = y->inputs[0];
    if (y->dtype == TG_F32) { /* 8 lanes at a time (src/vmath.c) */
        tg__tanh_f32(x->data, y->data, y->numel);
        return TG_OK;
    }
    TG_FOR_DTYPE(y->dtype, T, const T *px = x->data; T *py = y->data;
                 for (int64_t i = 0; i < y->numel; i++) py[i] = tanh(px[i]););
    return TG_OK;
}

static void tanh_backward(tg_tensor *y) {
    TG_FOR_DTYPE(y->dtype, T, const T *py = y->data; const T *dy = y->grad->data;
                 T *dx = y->inputs[0]->grad->data;
                 for (int64_t i = 0; i < y->numel; i++) dx[i] += dy[i] * (1 - py[i] * py[i]););
}

tg_tensor *tg_tanh_at(tg_tape *t, tg_tensor *x, const char *file, int line) {
    return tg__record(t, TG_OP_TANH, &x, 1, NULL, file, line);
}

const tg_op_desc tg_op_tanh = {"tanh", "its output y = tanh(x)", 1,
                               tg__shape_same, tanh_forward, tanh_backward};
