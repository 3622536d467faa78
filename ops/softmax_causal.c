/* softmax_causal: softmax along the last axis of x [.., T, S] with position j > i of row i
 * excluded (a causal attention mask): y_ij = e^(x_ij - m_i) / sum_{k<=i} e^(x_ik - m_i) for j <= i,
 * m_i = max_{k<=i} x_ik, and y_ij = 0 exactly for j > i (x_ij is never read there, so it may be
 * anything, -inf or NaN included). Row 0 keeps only j = 0: y_00 = 1.
 * On the kept part dy_ij/dx_ik = y_ij (delta_jk - y_ik), so per row
 *   dx_ik += y_ik (dy_ik - sum_{j<=i} dy_ij y_ij)  for k <= i; the excluded positions get exactly 0.
 * Uses the saved output y. */
#include "kernels/parallel.h"

#include <tgmath.h>

static tg_status causal_shape(tg_tensor *y, char *msg, size_t len) {
    const tg_tensor *x = y->inputs[0];
    char s[TG_SHAPE_STR_LEN];
    if (x->rank < 2) {
        snprintf(msg, len, "needs at least two axes [.., T, T] (rows i, columns j), got %s",
                 tg__shape_str(x, s, sizeof s));
        return TG_ERR_SHAPE;
    }
    return tg__shape_same(y, msg, len);
}

/* float32: x - m on the kept part and -inf past it (e^-inf = 0 exactly) for a block of rows, e^
 * of the whole block with the vector exp (src/kernels/vmath.c), then each row's sum over the
 * kept part (in column order) and the division. */
enum { CAUSAL_BLOCK = 1024 }; /* elements per call of the vector exp, about */

static void causal_rows_f32(const float *px, float *py, int64_t S, int64_t T_, int64_t r0,
                            int64_t r1) {
    const int64_t step = S < CAUSAL_BLOCK ? CAUSAL_BLOCK / S : 1;
    for (int64_t b = r0; b < r1; b += step) {
        const int64_t e = r1 - b < step ? r1 : b + step;
        for (int64_t r = b; r < e; r++) {
            const float *xr = px + r * S;
            float *yr = py + r * S;
            const int64_t i = r % T_, keep = i + 1 < S ? i + 1 : S;
            float m = xr[0];
            for (int64_t c = 1; c < keep; c++)
                m = xr[c] > m ? xr[c] : m;
            for (int64_t c = 0; c < keep; c++)
                yr[c] = xr[c] - m;
            for (int64_t c = keep; c < S; c++)
                yr[c] = -INFINITY;
        }
        tg__exp_f32(py + b * S, py + b * S, (e - b) * S);
        for (int64_t r = b; r < e; r++) {
            float *yr = py + r * S;
            const int64_t i = r % T_, keep = i + 1 < S ? i + 1 : S;
            float s = 0;
            for (int64_t c = 0; c < keep; c++)
                s += yr[c];
            for (int64_t c = 0; c < keep; c++)
                yr[c] /= s;
            for (int64_t c = keep; c < S; c++)
                yr[c] = 0;
        }
    }
}

/* Row r of the flattened [rows, S] view is row i = r mod T of its matrix. */
static void causal_forward_rows(void *ctx, int64_t r0, int64_t r1) {
    tg_tensor *y = ctx;
    const tg_tensor *x = y->inputs[0];
    const int64_t S = x->shape[x->rank - 1], T_ = x->shape[x->rank - 2];
    if (y->dtype == TG_F32) {
        causal_rows_f32(x->data, y->data, S, T_, r0, r1);
        return;
    }
    const double *px = x->data;
    double *py = y->data;
    for (int64_t r = r0; r < r1; r++) {
        const double *xr = px + r * S;
        double *yr = py + r * S;
        const int64_t i = r % T_, keep = i + 1 < S ? i + 1 : S;
        double m = xr[0];
        for (int64_t c = 1; c < keep; c++)
            m = xr[c] > m ? xr[c] : m;
        double s = 0;
        for (int64_t c = 0; c < keep; c++)
            s += (yr[c] = exp(xr[c] - m));
        for (int64_t c = 0; c < keep; c++)
            yr[c] /= s;
        for (int64_t c = keep; c < S; c++)
            yr[c] = 0;
    }
}

static tg_status causal_forward(tg_tape *tape, tg_tensor *y) {
    (void)tape;
    const int64_t S = y->shape[y->rank - 1], rows = S ? y->numel / S : 0;
    if (rows)
        tg__parallel_range(rows, (TG_PAR_MIN_ELEMS + S - 1) / S, causal_forward_rows, y);
    return TG_OK;
}

static void causal_backward_rows(void *ctx, int64_t r0, int64_t r1) {
    const tg__backward_args *g = ctx;
    const tg_tensor *y = g->y;
    const int64_t S = y->shape[y->rank - 1], T_ = y->shape[y->rank - 2];
    TG_FOR_DTYPE(y->dtype, T, const T *py = y->data; const T *dy = g->dout->data;
                 T *dx = g->din[0]->data; const bool fresh = tg__dx_fresh(g->din[0]);
                 for (int64_t r = r0; r < r1; r++) {
                     const T *yr = py + r * S, *dyr = dy + r * S;
                     const int64_t i = r % T_, keep = i + 1 < S ? i + 1 : S;
                     T dot = 0;
                     for (int64_t c = 0; c < keep; c++) dot += dyr[c] * yr[c];
                     if (fresh) { /* stored, and 0 above the diagonal */
                         for (int64_t c = 0; c < keep; c++) dx[r * S + c] = yr[c] * (dyr[c] - dot);
                         for (int64_t c = keep; c < S; c++) dx[r * S + c] = 0;
                     } else {
                         for (int64_t c = 0; c < keep; c++) dx[r * S + c] += yr[c] * (dyr[c] - dot);
                     }
                 });
}

static void causal_backward(const tg_tensor *y, const tg_tensor *dout, tg_tensor *const *din) {
    if (!din[0])
        return; /* the engine decided x needs no gradient */
    const int64_t S = y->shape[y->rank - 1], rows = S ? y->numel / S : 0;
    tg__backward_args g = {y, dout, din};
    if (rows)
        tg__parallel_range(rows, (TG_PAR_MIN_ELEMS + S - 1) / S, causal_backward_rows, &g);
}

const tg__op_desc tg__op_softmax_causal = {
    .name = "softmax_causal",
    .saves = "its output y (the probabilities, 0 above the diagonal)",
    .min_inputs = 1,
    .flags = TG__OP_WRITES_GRAD,
    .max_inputs = 1,
    .shape = causal_shape,
    .forward = causal_forward,
    .backward = causal_backward,
    .rule = "dx += y * (dy - sum(dy * y)) over j <= i per row; 0 above the diagonal",
};

tg_tensor *tg_softmax_causal_at(tg_tape *t, tg_tensor *x, const char *file, int line) {
    return tg__record(t, &tg__op_softmax_causal, &x, 1, NULL, file, line);
}
