/* sub: y = a - b                         a, b broadcastable (NumPy rules); y their broadcast shape
 * dy/da = 1 and dy/db = -1, so  da += dy,  db -= dy,  each summed over its broadcast axes.
 * Saves nothing. */
#include "core/engine.h"

static tg_status sub_shape(tg_tensor *y, char *msg, size_t len) {
    return tg__bcast_shape(y->inputs[0], y->inputs[1], y, msg, len);
}

static tg_status sub_forward(tg_tape *tape, tg_tensor *y) {
    (void)tape;
    const tg_tensor *a = y->inputs[0], *b = y->inputs[1];
    tg__bcast bc;
    tg__bcast_init(&bc, a, b, y);
    TG_FOR_DTYPE(y->dtype, T, const T *pa = a->data; const T *pb = b->data; T *py = y->data;
                 TG_BCAST_FOR(bc, o, ia, ib, py[o] = pa[ia] - pb[ib];););
    return TG_OK;
}

static void sub_backward(const tg_tensor *y, const tg_tensor *dout, tg_tensor *const *din) {
    const tg_tensor *a = y->inputs[0], *b = y->inputs[1];
    tg__bcast bc;
    tg__bcast_init(&bc, a, b, y);
    TG_FOR_DTYPE(y->dtype, T, const T *dy = dout->data;
                 T *da = din[0] ? din[0]->data : NULL; T *db = din[1] ? din[1]->data : NULL;
                 if (da) TG_BCAST_FOR(bc, o, ia, ib, (void)ib; da[ia] += dy[o];);
                 if (db) TG_BCAST_FOR(bc, o, ia, ib, (void)ia; db[ib] -= dy[o];););
}

const tg__op_desc tg__op_sub = {
    .name = "sub",
    .saves = "nothing (the derivatives are 1 and -1)",
    .min_inputs = 2,
    .max_inputs = 2,
    .flags = TG__OP_BROADCAST,
    .shape = sub_shape,
    .forward = sub_forward,
    .backward = sub_backward,
    .rule = "da += dy, db -= dy",
};

tg_tensor *tg_sub_at(tg_tape *t, tg_tensor *a, tg_tensor *b, const char *file, int line) {
    tg_tensor *in[2] = {a, b};
    return tg__record(t, &tg__op_sub, in, 2, NULL, file, line);
}
