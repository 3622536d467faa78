/* transpose: y = x^T                     x [M,N], y [N,M]
 * y_ji = x_ij, so  dx_ij += dy_ji  (dx += dy^T).  Saves nothing. */
#include "internal.h"

static tg_status transpose_shape(tg_tensor *y, char *msg, size_t len) {
    const tg_tensor *x = y->inputs[0];
    char s[TG_SHAPE_STR_LEN];
    if (x->rank != 2) {
        snprintf(msg, len, "needs a 2-D tensor, got %s", tg_shape_str(x, s, sizeof s));
        return TG_ERR_SHAPE;
    }
    y->rank = 2;
    y->shape[0] = x->shape[1];
    y->shape[1] = x->shape[0];
    return TG_OK;
}

static tg_status transpose_forward(tg_tape *tape, tg_tensor *y) {
    (void)tape;
    const tg_tensor *x = y->inputs[0];
    const int64_t M = x->shape[0], N = x->shape[1];
    TG_FOR_DTYPE(y->dtype, T, const T *px = x->data; T *py = y->data;
                 for (int64_t i = 0; i < M; i++) for (int64_t j = 0; j < N; j++)
                     py[j * M + i] = px[i * N + j];);
    return TG_OK;
}

static void transpose_backward(tg_tensor *y) {
    const tg_tensor *x = y->inputs[0];
    const int64_t M = x->shape[0], N = x->shape[1];
    TG_FOR_DTYPE(y->dtype, T, const T *dy = y->grad->data; T *dx = x->grad->data;
                 for (int64_t i = 0; i < M; i++) for (int64_t j = 0; j < N; j++)
                     dx[i * N + j] += dy[j * M + i];);
}

tg_tensor *tg_transpose_at(tg_tape *t, tg_tensor *x, const char *file, int line) {
    return tg__record(t, TG_OP_TRANSPOSE, &x, 1, NULL, file, line);
}

const tg_op_desc tg_op_transpose = {"transpose", "nothing (it only moves elements)", 1,
                                    transpose_shape, transpose_forward, transpose_backward,
                                    "dx += dy^T"};
