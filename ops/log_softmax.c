/* log_softmax: y_i = (x_i - m) - log sum_j e^(x_j - m), m = max_j x_j, along the last axis
 *                                        x [.., C], y same shape
 * dy_i/dx_k = delta_ik - softmax_k = delta_ik - e^(y_k), so per row
 * dx_k += dy_k - e^(y_k) sum_i dy_i  -- uses the saved output y (e^y is the softmax). */
#include "kernels/parallel.h"

#include <tgmath.h>

/* float32, a row at a time: e^(x - m) into y with the vector exp (src/kernels/vmath.c), its sum
 * in column order, then y = (x - m) - log s over it. */
static void log_softmax_forward_f32(const float *px, float *py, int64_t C, int64_t rows) {
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = px + r * C;
        float *yr = py + r * C;
        float m = xr[0];
        for (int64_t c = 1; c < C; c++)
            m = xr[c] > m ? xr[c] : m;
        for (int64_t c = 0; c < C; c++)
            yr[c] = xr[c] - m;
        tg__exp_f32(yr, yr, C);
        float s = 0;
        for (int64_t c = 0; c < C; c++)
            s += yr[c];
        float ls;
        tg__log_f32(&s, &ls, 1);
        for (int64_t c = 0; c < C; c++)
            yr[c] = (xr[c] - m) - ls;
    }
}

static tg_status log_softmax_forward(tg_tape *tape, tg_tensor *y) {
    (void)tape;
    const tg_tensor *x = y->inputs[0];
    const int64_t C = x->shape[x->rank - 1], rows = C ? x->numel / C : 0;
    if (y->dtype == TG_F32) {
        log_softmax_forward_f32(x->data, y->data, C, rows);
        return TG_OK;
    }
    const double *px = x->data;
    double *py = y->data;
    for (int64_t r = 0; r < rows; r++) {
        const double *xr = px + r * C;
        double m = xr[0];
        for (int64_t c = 1; c < C; c++)
            m = xr[c] > m ? xr[c] : m;
        double s = 0;
        for (int64_t c = 0; c < C; c++)
            s += exp(xr[c] - m);
        /* (x - m) - log s, not x - (m + log s): x - m is exact (Sterbenz) where it matters,
         * while m + log s rounds log s away once |m| >> log s (float32 [1e7, 1e7] would give
         * -1 instead of -ln 2). */
        const double ls = log(s);
        for (int64_t c = 0; c < C; c++)
            py[r * C + c] = (xr[c] - m) - ls;
    }
    return TG_OK;
}

/* float32: dx += dy - e^y s, e^y a piece of the row at a time with the vector exp. */
enum { LOG_SOFTMAX_BLOCK = 512 };

static void log_softmax_backward_f32(const float *py, const float *dy, float *dx, int64_t C,
                                     int64_t rows) {
    float e[LOG_SOFTMAX_BLOCK];
    for (int64_t r = 0; r < rows; r++) {
        const float *yr = py + r * C, *dyr = dy + r * C;
        float *dxr = dx + r * C;
        float s = 0;
        for (int64_t c = 0; c < C; c++)
            s += dyr[c];
        for (int64_t b = 0; b < C; b += LOG_SOFTMAX_BLOCK) {
            const int64_t n = C - b < LOG_SOFTMAX_BLOCK ? C - b : LOG_SOFTMAX_BLOCK;
            tg__exp_f32(yr + b, e, n);
            for (int64_t c = 0; c < n; c++)
                dxr[b + c] += dyr[b + c] - e[c] * s;
        }
    }
}

static void log_softmax_backward(const tg_tensor *y, const tg_tensor *dout, tg_tensor *const *din) {
    if (!din[0])
        return; /* the engine decided x needs no gradient */
    const int64_t C = y->shape[y->rank - 1], rows = C ? y->numel / C : 0;
    if (y->dtype == TG_F32) {
        log_softmax_backward_f32(y->data, dout->data, din[0]->data, C, rows);
        return;
    }
    const double *py = y->data, *dy = dout->data;
    double *dx = din[0]->data;
    for (int64_t r = 0; r < rows; r++) {
        const double *yr = py + r * C, *dyr = dy + r * C;
        double s = 0;
        for (int64_t c = 0; c < C; c++)
            s += dyr[c];
        for (int64_t c = 0; c < C; c++)
            dx[r * C + c] += dyr[c] - exp(yr[c]) * s;
    }
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
