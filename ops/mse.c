/* mse: L = (1/n) sum_i (a_i - b_i)^2     a, b [..] of one shape with n elements; L [] (rank 0)
 * dL/da_i = 2 (a_i - b_i) / n = -dL/db_i, so  da += dL * 2(a - b)/n,  db -= the same.
 * Saves nothing new: backward reads a and b, which the node references. */
#include "core/engine.h"

static tg_status mse_shape(tg_tensor *y, char *msg, size_t len) {
    const tg_tensor *a = y->inputs[0], *b = y->inputs[1];
    if (a->rank != b->rank || memcmp(a->shape, b->shape, sizeof(int64_t) * (size_t)a->rank)) {
        char s1[TG_SHAPE_STR_LEN], s2[TG_SHAPE_STR_LEN];
        snprintf(msg, len, "shapes differ: %s and %s", tg__shape_str(a, s1, sizeof s1),
                 tg__shape_str(b, s2, sizeof s2));
        return TG_ERR_SHAPE;
    }
    y->rank = 0;
    return TG_OK;
}

static tg_status mse_forward(tg_tape *tape, tg_tensor *y) {
    (void)tape;
    const tg_tensor *a = y->inputs[0], *b = y->inputs[1];
    TG_FOR_DTYPE(y->dtype, T, const T *pa = a->data; const T *pb = b->data; double acc = 0;
                 for (int64_t i = 0; i < a->numel; i++) {
                     double d = (double)pa[i] - (double)pb[i];
                     acc += d * d;
                 } *(T *)y->data = (T)(acc / (double)a->numel););
    return TG_OK;
}

static void mse_backward(const tg_tensor *y, const tg_tensor *dout, tg_tensor *const *din) {
    const tg_tensor *a = y->inputs[0], *b = y->inputs[1];
    TG_FOR_DTYPE(y->dtype, T, const T f = 2 * *(const T *)dout->data / (T)a->numel;
                 const T *pa = a->data; const T *pb = b->data;
                 T *da = din[0] ? din[0]->data : NULL; T *db = din[1] ? din[1]->data : NULL;
                 for (int64_t i = 0; i < a->numel; i++) {
                     const T d = f * (pa[i] - pb[i]);
                     if (da) da[i] += d;
                     if (db) db[i] -= d;
                 });
}

const tg__op_desc tg__op_mse = {
    .name = "mse",
    .saves = "its inputs a and b (by reference)",
    .min_inputs = 2,
    .max_inputs = 2,
    .shape = mse_shape,
    .forward = mse_forward,
    .backward = mse_backward,
    .rule = "da += dL * 2 (a - b) / n, db -= the same",
};

tg_tensor *tg_mse_at(tg_tape *t, tg_tensor *a, tg_tensor *b, const char *file, int line) {
    tg_tensor *in[2] = {a, b};
    return tg__record(t, &tg__op_mse, in, 2, NULL, file, line);
}
