/* mul: y = a * b (elementwise)           a, b broadcastable (NumPy rules); y their broadcast shape
 * dy/da = b and dy/db = a, so  da += dy * b,  db += dy * a,  each summed over its broadcast axes.
 * Saves nothing new: backward reads the inputs a and b, which the node already references. */
#include "core/engine.h"

static tg_status mul_shape(tg_tensor *y, char *msg, size_t len) {
    return tg__bcast_shape(y->inputs[0], y->inputs[1], y, msg, len);
}

static tg_status mul_forward(tg_tape *tape, tg_tensor *y) {
    (void)tape;
    const tg_tensor *a = y->inputs[0], *b = y->inputs[1];
    tg__bcast bc;
    tg__bcast_init(&bc, a, b, y);
    TG_FOR_DTYPE(y->dtype, T, const T *pa = a->data; const T *pb = b->data; T *py = y->data;
                 TG_BCAST_FOR(bc, o, ia, ib, py[o] = pa[ia] * pb[ib];););
    return TG_OK;
}

static void mul_backward(const tg_tensor *y, const tg_tensor *dout, tg_tensor *const *din) {
    const tg_tensor *a = y->inputs[0], *b = y->inputs[1];
    tg__bcast bc;
    tg__bcast_init(&bc, a, b, y);
    TG_FOR_DTYPE(y->dtype, T, const T *dy = dout->data; const T *pa = a->data;
                 const T *pb = b->data;
                 T *da = din[0] ? din[0]->data : NULL; T *db = din[1] ? din[1]->data : NULL;
                 if (da) TG_BCAST_FOR(bc, o, ia, ib, da[ia] += dy[o] * pb[ib];);
                 if (db) TG_BCAST_FOR(bc, o, ia, ib, db[ib] += dy[o] * pa[ia];););
}

const tg__op_desc tg__op_mul = {
    .name = "mul",
    .saves = "its inputs a and b (by reference)",
    .min_inputs = 2,
    .max_inputs = 2,
    .flags = TG__OP_BROADCAST,
    .shape = mul_shape,
    .forward = mul_forward,
    .backward = mul_backward,
    .rule = "da += dy * b, db += dy * a",
};

tg_tensor *tg_mul_at(tg_tape *t, tg_tensor *a, tg_tensor *b, const char *file, int line) {
    tg_tensor *in[2] = {a, b};
    return tg__record(t, &tg__op_mul, in, 2, NULL, file, line);
}
