/* scale: y = s x, s a scalar fixed when recorded     x [..], y same shape
 * dy/dx = s, so  dx += s dy.  Saves the scalar s. */
#include "core/engine.h"

int tg__scalar_print(const tg_tensor *y, char *buf, size_t len) {
    return snprintf(buf, len, "%g", ((const tg__scalar_params *)y->params)->s);
}

static tg_status scale_forward(tg_tape *tape, tg_tensor *y) {
    (void)tape;
    const tg_tensor *x = y->inputs[0];
    TG_FOR_DTYPE(y->dtype, T, const T s = (T)((const tg__scalar_params *)y->params)->s; const T *px = x->data;
                 T *py = y->data; for (int64_t i = 0; i < y->numel; i++) py[i] = s * px[i];);
    return TG_OK;
}

static void scale_backward(const tg_tensor *y, const tg_tensor *dout, tg_tensor *const *din) {
    if (!din[0])
        return; /* the engine decided x needs no gradient */
    TG_FOR_DTYPE(y->dtype, T, const T s = (T)((const tg__scalar_params *)y->params)->s; const T *dy = dout->data;
                 T *dx = din[0]->data; if (tg__dx_fresh(din[0])) {
                     for (int64_t i = 0; i < y->numel; i++) dx[i] = s * dy[i];
                 } else {
                     for (int64_t i = 0; i < y->numel; i++) dx[i] += s * dy[i];
                 });
}

const tg__op_desc tg__op_scale = {
    .name = "scale",
    .saves = "the scalar s",
    .min_inputs = 1,
    .max_inputs = 1,
    .flags = TG__OP_ELEMENTWISE | TG__OP_WRITES_GRAD,
    .local = "s",
    .params_size = sizeof(tg__scalar_params),
    .shape = tg__shape_same,
    .print_params = tg__scalar_print,
    .forward = scale_forward,
    .backward = scale_backward,
    .rule = "dx += s * dy",
};

tg_tensor *tg_scale_at(tg_tape *t, tg_tensor *x, double s, const char *file, int line) {
    tg__scalar_params p = {s};
    return tg__record(t, &tg__op_scale, &x, 1, &p, file, line);
}
