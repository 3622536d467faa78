/* pow: y = a^b (elementwise)             a, b broadcastable (NumPy rules); y their broadcast shape
 * dy/da = b a^(b-1) and dy/db = a^b log a = y log a, so
 *   da += dy * b a^(b-1)  (0 where b = 0)
 *   db += dy * y log a    (0 where a = 0 and b >= 0)
 * each summed over its broadcast axes. The two zeros are PyTorch's (pow_backward_self and
 * pow_backward_exponent): a^0 = 1 is constant in a, and 0^b = 0 for b > 0 is treated as constant
 * in b (where y log a would be 0 * -inf). Elsewhere the IEEE values stand: a < 0 gives a NaN
 * gradient for b, a = 0 with b < 0 an infinite one. Saves its output y; reads a and b. */
#include "core/engine.h"

#include <tgmath.h>

static tg_status pow_shape(tg_tensor *y, char *msg, size_t len) {
    return tg__bcast_shape(y->inputs[0], y->inputs[1], y, msg, len);
}

static tg_status pow_forward(tg_tape *tape, tg_tensor *y) {
    (void)tape;
    const tg_tensor *a = y->inputs[0], *b = y->inputs[1];
    tg__bcast bc;
    tg__bcast_init(&bc, a, b, y);
    TG_FOR_DTYPE(y->dtype, T, const T *pa = a->data; const T *pb = b->data; T *py = y->data;
                 TG_BCAST_FOR(bc, o, ia, ib, py[o] = pow(pa[ia], pb[ib]);););
    return TG_OK;
}

static void pow_backward(const tg_tensor *y, const tg_tensor *dout, tg_tensor *const *din) {
    const tg_tensor *a = y->inputs[0], *b = y->inputs[1];
    tg__bcast bc;
    tg__bcast_init(&bc, a, b, y);
    TG_FOR_DTYPE(
        y->dtype, T, const T *dy = dout->data; const T *py = y->data; const T *pa = a->data;
        const T *pb = b->data; T *da = din[0] ? din[0]->data : NULL;
        T *db = din[1] ? din[1]->data : NULL;
        if (da) TG_BCAST_FOR(bc, o, ia, ib, {
            const T e = pb[ib];
            da[ia] += e == 0 ? 0 : dy[o] * (e * pow(pa[ia], e - 1));
        });
        if (db) TG_BCAST_FOR(bc, o, ia, ib, {
            const T base = pa[ia];
            db[ib] += base == 0 && pb[ib] >= 0 ? 0 : dy[o] * (py[o] * log(base));
        }););
}

const tg__op_desc tg__op_pow = {
    .name = "pow",
    .saves = "its output y = a^b (and reads a and b by reference)",
    .min_inputs = 2,
    .max_inputs = 2,
    .flags = TG__OP_BROADCAST,
    .shape = pow_shape,
    .forward = pow_forward,
    .backward = pow_backward,
    .rule = "da += dy * b a^(b-1), db += dy * y log a",
};

tg_tensor *tg_pow_at(tg_tape *t, tg_tensor *a, tg_tensor *b, const char *file, int line) {
    tg_tensor *in[2] = {a, b};
    return tg__record(t, &tg__op_pow, in, 2, NULL, file, line);
}
