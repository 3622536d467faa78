/* div: y = a / b (elementwise)           a, b broadcastable (NumPy rules); y their broadcast shape
 * dy/da = 1/b and dy/db = -a/b^2 = -y/b, so  da += dy / b,  db -= dy * y / b,
 * each summed over its broadcast axes. Saves its output y (and reads b by reference). */
#include "core/engine.h"

static tg_status div_shape(tg_tensor *y, char *msg, size_t len) {
    return tg__bcast_shape(y->inputs[0], y->inputs[1], y, msg, len);
}

static tg_status div_forward(tg_tape *tape, tg_tensor *y) {
    (void)tape;
    const tg_tensor *a = y->inputs[0], *b = y->inputs[1];
    tg__bcast bc;
    tg__bcast_init(&bc, a, b, y);
    TG_FOR_DTYPE(y->dtype, T, const T *pa = a->data; const T *pb = b->data; T *py = y->data;
                 TG_BCAST_FOR(bc, o, ia, ib, py[o] = pa[ia] / pb[ib];););
    return TG_OK;
}

static void div_backward(const tg_tensor *y, const tg_tensor *dout, tg_tensor *const *din) {
    const tg_tensor *a = y->inputs[0], *b = y->inputs[1];
    tg__bcast bc;
    tg__bcast_init(&bc, a, b, y);
    TG_FOR_DTYPE(y->dtype, T, const T *dy = dout->data; const T *py = y->data;
                 const T *pb = b->data;
                 T *da = din[0] ? din[0]->data : NULL; T *db = din[1] ? din[1]->data : NULL;
                 if (da) TG_BCAST_FOR(bc, o, ia, ib, da[ia] += dy[o] / pb[ib];);
                 if (db) TG_BCAST_FOR(bc, o, ia, ib, (void)ia; db[ib] -= dy[o] * py[o] / pb[ib];););
}

const tg__op_desc tg__op_div = {
    .name = "div",
    .saves = "its output y = a/b and its divisor b",
    .min_inputs = 2,
    .max_inputs = 2,
    .flags = TG__OP_BROADCAST,
    .shape = div_shape,
    .forward = div_forward,
    .backward = div_backward,
    .rule = "da += dy / b, db -= dy * y / b",
};

tg_tensor *tg_div_at(tg_tape *t, tg_tensor *a, tg_tensor *b, const char *file, int line) {
    tg_tensor *in[2] = {a, b};
    return tg__record(t, &tg__op_div, in, 2, NULL, file, line);
}
