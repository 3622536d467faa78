/* matmul: y = a b                        a [M,K], b [K,N], y [M,N]
 * dy_ij/da_ik = b_kj and dy_ij/db_kj = a_ik, so  da += dy b^T  ([M,N][N,K]),
 * db += a^T dy  ([K,M][M,N]).  Saves nothing new: backward reads the operands a and b, which the
 * node references (the report's dl/dW_y = (y^ - y) h^T is the second product). */
#include "kernels/parallel.h"

static tg_status matmul_shape(tg_tensor *y, char *msg, size_t len) {
    const tg_tensor *a = y->inputs[0], *b = y->inputs[1];
    char s1[TG_SHAPE_STR_LEN], s2[TG_SHAPE_STR_LEN];
    if (a->rank != 2 || b->rank != 2) {
        snprintf(msg, len, "needs two 2-D tensors, got %s x %s", tg__shape_str(a, s1, sizeof s1),
                 tg__shape_str(b, s2, sizeof s2));
        return TG_ERR_SHAPE;
    }
    if (a->shape[1] != b->shape[0]) {
        snprintf(msg, len, "inner dimensions differ: %s x %s", tg__shape_str(a, s1, sizeof s1),
                 tg__shape_str(b, s2, sizeof s2));
        return TG_ERR_SHAPE;
    }
    y->rank = 2;
    y->shape[0] = a->shape[0];
    y->shape[1] = b->shape[1];
    return TG_OK;
}

static tg_status matmul_forward(tg_tape *tape, tg_tensor *y) {
    (void)tape;
    const tg_tensor *a = y->inputs[0], *b = y->inputs[1];
    const int64_t M = a->shape[0], K = a->shape[1], N = b->shape[1];
    tg__gemm(y->dtype, false, false, M, N, K, a->data, K, b->data, N, 0, y->data, N);
    return TG_OK;
}

static void matmul_backward(const tg_tensor *y, const tg_tensor *dout, tg_tensor *const *din) {
    const tg_tensor *a = y->inputs[0], *b = y->inputs[1];
    const int64_t M = a->shape[0], K = a->shape[1], N = b->shape[1];
    if (din[0]) /* da[M,K] += dy[M,N] b^T */
        tg__gemm(y->dtype, false, true, M, K, N, dout->data, N, b->data, N, !tg__dx_fresh(din[0]),
                 din[0]->data, K);
    if (din[1]) /* db[K,N] += a^T dy[M,N] */
        tg__gemm(y->dtype, true, false, K, N, M, a->data, K, dout->data, N, !tg__dx_fresh(din[1]),
                 din[1]->data, N);
}

const tg__op_desc tg__op_matmul = {
    .name = "matmul",
    .saves = "its operands a and b (by reference)",
    .min_inputs = 2,
    .flags = TG__OP_WRITES_GRAD,
    .max_inputs = 2,
    .shape = matmul_shape,
    .forward = matmul_forward,
    .backward = matmul_backward,
    .rule = "da += dy b^T, db += a^T dy",
};

tg_tensor *tg_matmul_at(tg_tape *t, tg_tensor *a, tg_tensor *b, const char *file, int line) {
    tg_tensor *in[2] = {a, b};
    return tg__record(t, &tg__op_matmul, in, 2, NULL, file, line);
}
