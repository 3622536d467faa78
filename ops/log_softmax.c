/* log_softmax: y_i = (x_i - m) - log sum_j e^(x_j - m), m = max_j x_j, along the last axis
 *                                        x [.., C], y same shape
 * dy_i/dx_k = delta_ik - softmax_k = delta_ik - e^(y_k), so per row
 * dx_k += dy_k - e^(y_k) sum_i dy_i  -- uses the saved output y (e^y is the softmax). */
#include "core/engine.h"

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
                     /* (x - m) - log s, not x - (m + log s): x - m is exact (Sterbenz) where
                      * it matters, while m + log s rounds log s away once |m| >> log s
                      * (float32 [1e7, 1e7] would give -1 instead of -ln 2). */
                     const T ls = log(s);
                     for (int64_t c = 0; c < C; c++) py[r * C + c] = (xr[c] - m) - ls;
                 });
    return TG_OK;
}

static void log_softmax_backward(const tg_tensor *y, const tg_tensor *dout, tg_tensor *const *din) {
    if (!din[0])
        return; /* the engine decided x needs no gradient */
    const int64_t C = y->shape[y->rank - 1], rows = C ? y->numel / C : 0;
    TG_FOR_DTYPE(y->dtype, T, const T *py = y->data; const T *dy = dout->data;
                 T *dx = din[0]->data;
                 for (int64_t r = 0; r < rows; r++) {
                     const T *yr = py + r * C, *dyr = dy + r * C;
                     T s = 0;
                     for (int64_t c = 0; c < C; c++) s += dyr[c];
                     for (int64_t c = 0; c < C; c++) dx[r * C + c] += dyr[c] - exp(yr[c]) * s;
                 });
}

const tg__op_desc tg__op_log_softmax = {
    .name = "log_softmax",
    .saves = "its output y (the log-probabilities)",
    .min_inputs = 1,
    .max_inputs = 1,
    .shape = tg__shape_last_axis,
    .forward = log_softmax_forward,
    .backward = log_softmax_backward,
    .rule = "dx += dy - e^y * sum(dy) per row",
};

tg_tensor *tg_log_softmax_at(tg_tape *t, tg_tensor *x, const char *file, int line) {
    return tg__record(t, &tg__op_log_softmax, &x, 1, NULL, file, line);
}
