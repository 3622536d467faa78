/* minimum: y = min(a, b) (elementwise)     a, b broadcastable (NumPy rules); y their broadcast shape
 * dy/da = 1 where a is the smaller, 0 where b is; at a tie a = b PyTorch splits the gradient half and
 * half (derivatives.yaml: where(a == b, dy / 2, dy), masked where the other is smaller), so
 *   da += a == b ? dy / 2 : (a > b ? 0 : dy),   db += a == b ? dy / 2 : (a < b ? 0 : dy)
 * each summed over its broadcast axes. A NaN in a or b makes y NaN (as torch.minimum) and, as in
 * PyTorch, sends dy to both inputs. Reads a and b by reference. */
#include "core/engine.h"

static tg_status minimum_shape(tg_tensor *y, char *msg, size_t len) {
    return tg__bcast_shape(y->inputs[0], y->inputs[1], y, msg, len);
}

static tg_status minimum_forward(tg_tape *tape, tg_tensor *y) {
    (void)tape;
    const tg_tensor *a = y->inputs[0], *b = y->inputs[1];
    tg__bcast bc;
    tg__bcast_init(&bc, a, b, y);
    /* b when it wins or is NaN, else a (a NaN a stays) */
    TG_FOR_DTYPE(y->dtype, T, const T *pa = a->data; const T *pb = b->data; T *py = y->data;
                 TG_BCAST_FOR(bc, o, ia, ib, {
                     const T va = pa[ia], vb = pb[ib];
                     py[o] = va > vb || vb != vb ? vb : va;
                 }););
    return TG_OK;
}

static void minimum_backward(const tg_tensor *y, const tg_tensor *dout, tg_tensor *const *din) {
    const tg_tensor *a = y->inputs[0], *b = y->inputs[1];
    tg__bcast bc;
    tg__bcast_init(&bc, a, b, y);
    TG_FOR_DTYPE(y->dtype, T, const T *dy = dout->data; const T *pa = a->data;
                 const T *pb = b->data; T *da = din[0] ? din[0]->data : NULL;
                 T *db = din[1] ? din[1]->data : NULL;
                 if (da) TG_BCAST_FOR(bc, o, ia, ib, {
                     const T va = pa[ia], vb = pb[ib];
                     da[ia] += va == vb ? dy[o] / 2 : (va > vb ? 0 : dy[o]);
                 });
                 if (db) TG_BCAST_FOR(bc, o, ia, ib, {
                     const T va = pa[ia], vb = pb[ib];
                     db[ib] += va == vb ? dy[o] / 2 : (va < vb ? 0 : dy[o]);
                 }););
}

const tg__op_desc tg__op_minimum = {
    .name = "minimum",
    .saves = "its inputs a and b (by reference)",
    .min_inputs = 2,
    .max_inputs = 2,
    .flags = TG__OP_BROADCAST,
    .shape = minimum_shape,
    .forward = minimum_forward,
    .backward = minimum_backward,
    .rule = "da += dy where a < b, db += dy where b < a, dy/2 to each at a tie",
};

tg_tensor *tg_minimum_at(tg_tape *t, tg_tensor *a, tg_tensor *b, const char *file, int line) {
    tg_tensor *in[2] = {a, b};
    return tg__record(t, &tg__op_minimum, in, 2, NULL, file, line);
}
