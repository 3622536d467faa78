/* log_softmax: y_i = x_i - m - log sum_j e^(x_j - m), m = max_j x_j, along the last axis
 *                                        x [.., C], y same shape
 * dy_i/dx_k = delta_ik - softmax_k = delta_ik - e^(y_k), so per row
 * dx_k += dy_k - e^(y_k) sum_i dy_i  -- uses the saved output y (e^y is the softmax). */
#include "internal.h"

#include <tgmath.h>

static tg_status log_softmax_forward(tg_tape *tape, tg_tensor *y) {
    (void)tape;
    const tg_tensor *x = y->inputs[0];
    const int64_t C = x->shape[x->rank - 1], rows = C ? x->numel / C : 0;
    TG_FOR_DTYPE(y->dtype, T, const T *px = x->data; T *py = y->data;
                 for (int64_t r = 0; r < rows; r++) {
                     const T *xr = px + r * C;
                     T m = xr[0];
                     for (int64_t c = 1; c < C; c++) m = xr[c] > m ? xr[c] : m;
                     T s = 0;
                     for (int64_t c = 0; c < C; c++) s += exp(xr[c] - m);
                     const T lse = m + log(s);
                     for (int64_t c = 0; c < C; c++) py[r * C + c] = xr[c] - lse;
                 });
    return TG_OK;
}

static void log_softmax_backward(tg_tensor *y) {
    const int64_t C = y->shape[y->rank - 1], rows = C ? y->numel / C : 0;
    TG_FOR_DTYPE(y->dtype, T, const T *py = y->data; const T *dy = y->grad->data;
                 T *dx = y->inputs[0]->grad->data;
                 for (int64_t r = 0; r < rows; r++) {
                     const T *yr = py + r * C, *dyr = dy + r * C;
                     T s = 0;
                     for (int64_t c = 0; c < C; c++) s += dyr[c];
                     for (int64_t c = 0; c < C; c++) dx[r * C + c] += dyr[c] - exp(yr[c]) * s;
                 });
}

tg_tensor *tg_log_softmax_at(tg_tape *t, tg_tensor *x, const char *file, int line) {
    return tg__record(t, TG_OP_LOG_SOFTMAX, &x, 1, NULL, file, line);
}

const tg_op_desc tg_op_log_softmax = {
    .name = "log_softmax",
    .saves = "its output y (the log-probabilities)",
    .n_inputs = 1,
    .shape = tg__shape_last_axis,
    .forward = log_softmax_forward,
    .backward = log_softmax_backward,
    .local = "dx += dy - e^y * sum(dy) per row",
};
