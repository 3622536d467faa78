/* add_scalar: y = x + s, s a scalar fixed when recorded     x [..], y same shape
 * dy/dx = 1, so  dx += dy.  Saves nothing. */
#include "core/engine.h"

static tg_status add_scalar_forward(tg_tape *tape, tg_tensor *y) {
    (void)tape;
    const tg_tensor *x = y->inputs[0];
    TG_FOR_DTYPE(y->dtype, T, const T s = (T)((const tg__scalar_params *)y->params)->s; const T *px = x->data;
                 T *py = y->data; for (int64_t i = 0; i < y->numel; i++) py[i] = px[i] + s;);
    return TG_OK;
}

static void add_scalar_backward(const tg_tensor *y, const tg_tensor *dout, tg_tensor *const *din) {
    if (!din[0])
        return; /* the engine decided x needs no gradient */
    TG_FOR_DTYPE(y->dtype, T, const T *dy = dout->data; T *dx = din[0]->data;
                 for (int64_t i = 0; i < y->numel; i++) dx[i] += dy[i];);
}

const tg__op_desc tg__op_add_scalar = {
    .name = "add_scalar",
    .saves = "nothing (the derivative is 1)",
    .min_inputs = 1,
    .max_inputs = 1,
    .flags = TG__OP_ELEMENTWISE,
    .local = "1",
    .params_size = sizeof(tg__scalar_params),
    .shape = tg__shape_same,
    .print_params = tg__scalar_print,
    .forward = add_scalar_forward,
    .backward = add_scalar_backward,
    .rule = "dx += dy",
};

tg_tensor *tg_add_scalar_at(tg_tape *t, tg_tensor *x, double s, const char *file, int line) {
    tg__scalar_params p = {s};
    return tg__record(t, &tg__op_add_scalar, &x, 1, &p, file, line);
}
