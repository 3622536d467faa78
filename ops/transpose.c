/* transpose: y = x^T                     x [M,N], y [N,M]
 * y_ji = x_ij, so  dx_ij += dy_ji  (dx += dy^T).  Saves nothing. */
#include "core/engine.h"

static tg_status transpose_shape(tg_tensor *y, char *msg, size_t len) {
    const tg_tensor *x = y->inputs[0];
    char s[TG_SHAPE_STR_LEN];
    if (x->rank != 2) {
        snprintf(msg, len, "needs a 2-D tensor, got %s", tg__shape_str(x, s, sizeof s));
        return TG_ERR_SHAPE;
    }
    y->rank = 2;
    y->shape[0] = x->shape[1];
    y->shape[1] = x->shape[0];
    return TG_OK;
}

/* Both directions walk TILE x TILE tiles: a plain double loop reads one matrix along rows and
 * the other down columns, one cache line per element for big matrices (the report's
 * x W_h^T written with tg_transpose transposes a weight matrix on every step; tg_linear uses
 * matmul_bt instead). Each element is still moved, or added, exactly once: the results are
 * those of the plain loop, bit for bit. */
#define TILE 32

static tg_status transpose_forward(tg_tape *tape, tg_tensor *y) {
    (void)tape;
    const tg_tensor *x = y->inputs[0];
    const int64_t M = x->shape[0], N = x->shape[1];
    TG_FOR_DTYPE(y->dtype, T, const T *px = x->data; T *py = y->data;
                 for (int64_t i0 = 0; i0 < M; i0 += TILE) {
                     const int64_t i1 = i0 + TILE < M ? i0 + TILE : M;
                     for (int64_t j0 = 0; j0 < N; j0 += TILE) {
                         const int64_t j1 = j0 + TILE < N ? j0 + TILE : N;
                         for (int64_t j = j0; j < j1; j++)
                             for (int64_t i = i0; i < i1; i++)
                                 py[j * M + i] = px[i * N + j];
                     }
                 });
    return TG_OK;
}

static void transpose_backward(const tg_tensor *y, const tg_tensor *dout, tg_tensor *const *din) {
    if (!din[0])
        return; /* the engine decided x needs no gradient */
    const tg_tensor *x = y->inputs[0];
    const int64_t M = x->shape[0], N = x->shape[1];
    TG_FOR_DTYPE(y->dtype, T, const T *dy = dout->data; T *dx = din[0]->data;
                 const bool fresh = tg__dx_fresh(din[0]); for (int64_t i0 = 0; i0 < M; i0 += TILE) {
                     const int64_t i1 = i0 + TILE < M ? i0 + TILE : M;
                     for (int64_t j0 = 0; j0 < N; j0 += TILE) {
                         const int64_t j1 = j0 + TILE < N ? j0 + TILE : N;
                         for (int64_t i = i0; i < i1; i++)
                             for (int64_t j = j0; j < j1; j++)
                                 dx[i * N + j] = (fresh ? 0 : dx[i * N + j]) + dy[j * M + i];
                     }
                 });
}

const tg__op_desc tg__op_transpose = {
    .name = "transpose",
    .saves = "nothing (it only moves elements)",
    .min_inputs = 1,
    .flags = TG__OP_WRITES_GRAD,
    .max_inputs = 1,
    .shape = transpose_shape,
    .forward = transpose_forward,
    .backward = transpose_backward,
    .rule = "dx += dy^T",
};

tg_tensor *tg_transpose_at(tg_tape *t, tg_tensor *x, const char *file, int line) {
    return tg__record(t, &tg__op_transpose, &x, 1, NULL, file, line);
}
