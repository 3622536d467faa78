/* matmul_bt: y = a b^T                   a [M,K], b [N,K], y [M,N]
 * The product a linear layer needs (x W^T with W stored [out,in], as in the report and in
 * PyTorch), without materialising W^T and its gradient on every step.
 * dy_ij/da_ik = b_jk and dy_ij/db_jk = a_ik, so  da += dy b  ([M,N][N,K]),
 * db += dy^T a  ([N,M][M,K]).  Saves nothing new: backward reads the operands a and b. */
#include "kernels/parallel.h"

static tg_status matmul_bt_shape(tg_tensor *y, char *msg, size_t len) {
    const tg_tensor *a = y->inputs[0], *b = y->inputs[1];
    char s1[TG_SHAPE_STR_LEN], s2[TG_SHAPE_STR_LEN];
    if (a->rank != 2 || b->rank != 2) {
        snprintf(msg, len, "needs two 2-D tensors, got %s x %s^T", tg__shape_str(a, s1, sizeof s1),
                 tg__shape_str(b, s2, sizeof s2));
        return TG_ERR_SHAPE;
    }
    if (a->shape[1] != b->shape[1]) {
        snprintf(msg, len, "inner dimensions differ: %s x %s^T", tg__shape_str(a, s1, sizeof s1),
                 tg__shape_str(b, s2, sizeof s2));
        return TG_ERR_SHAPE;
    }
    y->rank = 2;
    y->shape[0] = a->shape[0];
    y->shape[1] = b->shape[0];
    return TG_OK;
}

static tg_status matmul_bt_forward(tg_tape *tape, tg_tensor *y) {
    (void)tape;
    const tg_tensor *a = y->inputs[0], *b = y->inputs[1];
    const int64_t M = a->shape[0], K = a->shape[1], N = b->shape[0];
    tg__gemm(y->dtype, false, true, M, N, K, a->data, K, b->data, K, 0, y->data, N);
    return TG_OK;
}

static void matmul_bt_backward(const tg_tensor *y, const tg_tensor *dout, tg_tensor *const *din) {
    const tg_tensor *a = y->inputs[0], *b = y->inputs[1];
    const int64_t M = a->shape[0], K = a->shape[1], N = b->shape[0];
    if (din[0]) /* da[M,K] += dy[M,N] b[N,K] */
        tg__gemm(y->dtype, false, false, M, K, N, dout->data, N, b->data, K, !tg__dx_fresh(din[0]),
                 din[0]->data, K);
    if (din[1]) /* db[N,K] += dy^T[N,M] a[M,K] */
        tg__gemm(y->dtype, true, false, N, K, M, dout->data, N, a->data, K, !tg__dx_fresh(din[1]),
                 din[1]->data, K);
}

const tg__op_desc tg__op_matmul_bt = {
    .name = "matmul_bt",
    .saves = "its operands a and b (by reference)",
    .min_inputs = 2,
    .flags = TG__OP_WRITES_GRAD,
    .max_inputs = 2,
    .shape = matmul_bt_shape,
    .forward = matmul_bt_forward,
    .backward = matmul_bt_backward,
    .rule = "da += dy b, db += dy^T a",
};

tg_tensor *tg_matmul_bt_at(tg_tape *t, tg_tensor *a, tg_tensor *b, const char *file, int line) {
    tg_tensor *in[2] = {a, b};
    return tg__record(t, &tg__op_matmul_bt, in, 2, NULL, file, line);
}
