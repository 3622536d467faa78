/* masked_fill: y = mask != 0 ? value : x      x [..], mask (i32 or x's dtype) broadcastable to
 * x's shape, y x's shape (torch.Tensor.masked_fill; value may be -INFINITY, the usual attention
 * mask). dy/dx is 1 where the mask is 0 and 0 where it fills, so dx += dy * (mask == 0): the
 * filled positions get no gradient. The mask is a constant: it gets none either. Saves nothing. */
#include "core/engine.h"

static tg_status mf_shape(tg_tensor *y, char *msg, size_t len) {
    const tg_tensor *x = y->inputs[0], *m = y->inputs[1];
    char s1[TG_SHAPE_STR_LEN], s2[TG_SHAPE_STR_LEN];
    tg_tensor out = {0};
    bool ok = m->rank <= x->rank && tg__bcast_shape(x, m, &out, msg, len) == TG_OK;
    for (int k = 0; ok && k < x->rank; k++)
        ok = out.shape[k] == x->shape[k];
    if (!ok) {
        snprintf(msg, len, "the mask %s does not broadcast to x %s",
                 tg__shape_str(m, s2, sizeof s2), tg__shape_str(x, s1, sizeof s1));
        return TG_ERR_SHAPE;
    }
    return tg__shape_same(y, msg, len);
}

static int mf_print(const tg_tensor *y, char *buf, size_t len) {
    return snprintf(buf, len, "value=%g", ((const tg__scalar_params *)y->params)->s);
}

static tg_status mf_forward(tg_tape *tape, tg_tensor *y) {
    (void)tape;
    const tg_tensor *x = y->inputs[0], *m = y->inputs[1];
    const double v = ((const tg__scalar_params *)y->params)->s;
    tg__bcast bc;
    tg__bcast_init(&bc, x, m, y);
    const int32_t *mi = m->dtype == TG_I32 ? m->data : NULL;
    TG_FOR_DTYPE(y->dtype, T, const T *px = x->data; const T *mf = mi ? NULL : m->data;
                 T *py = y->data; const T fill = (T)v;
                 if (mi) TG_BCAST_FOR(bc, o, ia, ib, py[o] = mi[ib] ? fill : px[ia];);
                 else TG_BCAST_FOR(bc, o, ia, ib, py[o] = mf[ib] != 0 ? fill : px[ia];););
    return TG_OK;
}

static void mf_backward(const tg_tensor *y, const tg_tensor *dout, tg_tensor *const *din) {
    if (!din[0])
        return; /* the engine decided x needs no gradient; the mask never gets one */
    const tg_tensor *x = y->inputs[0], *m = y->inputs[1];
    tg__bcast bc;
    tg__bcast_init(&bc, x, m, y);
    const int32_t *mi = m->dtype == TG_I32 ? m->data : NULL;
    TG_FOR_DTYPE(y->dtype, T, const T *dy = dout->data; const T *mf = mi ? NULL : m->data;
                 T *dx = din[0]->data;
                 if (mi) TG_BCAST_FOR(bc, o, ia, ib, if (!mi[ib]) dx[ia] += dy[o];);
                 else TG_BCAST_FOR(bc, o, ia, ib, if (mf[ib] == 0) dx[ia] += dy[o];););
}

const tg__op_desc tg__op_masked_fill = {
    .name = "masked_fill",
    .saves = "nothing (backward reads the mask)",
    .min_inputs = 2,
    .max_inputs = 2,
    .index_inputs = 1u << 1, /* the mask may be i32 */
    .params_size = sizeof(tg__scalar_params),
    .shape = mf_shape,
    .forward = mf_forward,
    .backward = mf_backward,
    .print_params = mf_print,
    .rule = "dx += dy where the mask is 0; nothing where it fills",
};

tg_tensor *tg_masked_fill_at(tg_tape *t, tg_tensor *x, tg_tensor *mask, double value,
                             const char *file, int line) {
    tg_tensor *in[2] = {x, mask};
    tg__scalar_params p = {value};
    return tg__record(t, &tg__op_masked_fill, in, 2, &p, file, line);
}
