/* softmax: y_i = e^(x_i - m) / sum_j e^(x_j - m), m = max_j x_j, along the last axis
 *                                        x [.., C], y same shape
 * dy_i/dx_k = y_i (delta_ik - y_k), so per row  dx_k += y_k (dy_k - sum_i dy_i y_i)
 * -- uses the saved output y. Subtracting the row max keeps e^ from overflowing (logits of 1e4). */
#include "kernels/parallel.h"

#include <tgmath.h>

tg_status tg__shape_last_axis(tg_tensor *y, char *msg, size_t len) {
    const tg_tensor *x = y->inputs[0];
    if (x->rank < 1) {
        snprintf(msg, len, "needs at least one axis (works along the last), got a scalar");
        return TG_ERR_SHAPE;
    }
    return tg__shape_same(y, msg, len);
}

/* float32: y = x - m for a block of rows, e^ of the whole block at once with the vector exp
 * (src/kernels/vmath.c), then each row's sum (in column order) and the division. */
enum { SOFTMAX_BLOCK = 1024 }; /* elements per call of the vector exp, about */

static void softmax_rows_f32(const float *px, float *py, int64_t C, int64_t r0, int64_t r1) {
    const int64_t step = C < SOFTMAX_BLOCK ? SOFTMAX_BLOCK / C : 1;
    for (int64_t b = r0; b < r1; b += step) {
        const int64_t e = r1 - b < step ? r1 : b + step;
        for (int64_t r = b; r < e; r++) {
            const float *xr = px + r * C;
            float *yr = py + r * C;
            float m = xr[0];
            for (int64_t c = 1; c < C; c++)
                m = xr[c] > m ? xr[c] : m;
            for (int64_t c = 0; c < C; c++)
                yr[c] = xr[c] - m;
        }
        tg__exp_f32(py + b * C, py + b * C, (e - b) * C);
        for (int64_t r = b; r < e; r++) {
            float *yr = py + r * C;
            float s = 0;
            for (int64_t c = 0; c < C; c++)
                s += yr[c];
            for (int64_t c = 0; c < C; c++)
                yr[c] /= s;
        }
    }
}

/* Rows are independent: above TG_PAR_MIN_ELEMS elements they are split over the threads. */
static void softmax_forward_rows(void *ctx, int64_t r0, int64_t r1) {
    tg_tensor *y = ctx;
    const tg_tensor *x = y->inputs[0];
    const int64_t C = x->shape[x->rank - 1];
    if (y->dtype == TG_F32) {
        softmax_rows_f32(x->data, y->data, C, r0, r1);
        return;
    }
    const double *px = x->data;
    double *py = y->data;
    for (int64_t r = r0; r < r1; r++) {
        const double *xr = px + r * C;
        double *yr = py + r * C;
        double m = xr[0];
        for (int64_t c = 1; c < C; c++)
            m = xr[c] > m ? xr[c] : m;
        double s = 0;
        for (int64_t c = 0; c < C; c++)
            s += (yr[c] = exp(xr[c] - m));
        for (int64_t c = 0; c < C; c++)
            yr[c] /= s;
    }
}

static tg_status softmax_forward(tg_tape *tape, tg_tensor *y) {
    (void)tape;
    const tg_tensor *x = y->inputs[0];
    const int64_t C = x->shape[x->rank - 1], rows = C ? x->numel / C : 0;
    if (rows)
        tg__parallel_range(rows, (TG_PAR_MIN_ELEMS + C - 1) / C, softmax_forward_rows, y);
    return TG_OK;
}

static void softmax_backward_rows(void *ctx, int64_t r0, int64_t r1) {
    const tg__backward_args *g = ctx;
    const tg_tensor *y = g->y;
    const int64_t C = y->shape[y->rank - 1];
    TG_FOR_DTYPE(y->dtype, T, const T *py = y->data; const T *dy = g->dout->data;
                 T *dx = g->din[0]->data;
                 for (int64_t r = r0; r < r1; r++) {
                     const T *yr = py + r * C, *dyr = dy + r * C;
                     T dot = 0;
                     for (int64_t c = 0; c < C; c++) dot += dyr[c] * yr[c];
                     for (int64_t c = 0; c < C; c++) dx[r * C + c] += yr[c] * (dyr[c] - dot);
                 });
}

static void softmax_backward(const tg_tensor *y, const tg_tensor *dout, tg_tensor *const *din) {
    if (!din[0])
        return;
    const int64_t C = y->shape[y->rank - 1], rows = C ? y->numel / C : 0;
    tg__backward_args g = {y, dout, din};
    if (rows)
        tg__parallel_range(rows, (TG_PAR_MIN_ELEMS + C - 1) / C, softmax_backward_rows, &g);
}

const tg__op_desc tg__op_softmax = {
    .name = "softmax",
    .saves = "its output y (the probabilities)",
    .min_inputs = 1,
    .max_inputs = 1,
    .shape = tg__shape_last_axis,
    .forward = softmax_forward,
    .backward = softmax_backward,
    .rule = "dx += y * (dy - sum(dy * y)) per row",
};

tg_tensor *tg_softmax_at(tg_tape *t, tg_tensor *x, const char *file, int line) {
    return tg__record(t, &tg__op_softmax, &x, 1, NULL, file, line);
}
