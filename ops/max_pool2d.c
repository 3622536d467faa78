/* max_pool2d: y[n,c,i,j] = max over the window of x[n,c, i sh - ph + r, j sw - pw + s]
 *   (0 <= r < kh, 0 <= s < kw; the padding counts as -inf)   x [N,C,H,W], y [N,C,OH,OW],
 *   OH = floor((H + 2 ph - kh) / sh) + 1 (OW alike).
 * y is x at the window's argmax a (the first maximum in scan order on ties, as PyTorch), so
 *   dy/dx = 1 at a and 0 elsewhere:  dx[n,c,a[n,c,i,j]] += dy[n,c,i,j]  (overlapping windows add).
 * Saves the argmax [N,C,OH,OW] (int32, the index ih*W + iw within its plane). */
#include "pooling.h"

static tg_status max_pool2d_shape(tg_tensor *y, char *msg, size_t len) {
    return tg__pool2d_shape(y, "max_pool2d", msg, len);
}

static tg_status max_pool2d_forward(tg_tape *tape, tg_tensor *y) {
    const tg__pool2d_params *p = y->params;
    int32_t *argmax = tg__tape_alloc_raw(tape, (size_t)y->numel * sizeof(int32_t));
    if (!argmax)
        return TG_ERR_NOMEM;
    y->saved = argmax;
    tg__max_pool2d_forward(&p->g, y->dtype, y->inputs[0]->data, y->data, argmax);
    return TG_OK;
}

static void max_pool2d_backward(const tg_tensor *y, const tg_tensor *dout, tg_tensor *const *din) {
    if (!din[0])
        return;
    const tg__pool2d_params *p = y->params;
    tg__max_pool2d_backward(&p->g, y->dtype, y->saved, dout->data, din[0]->data,
                            tg__dx_fresh(din[0]));
}

static int max_pool2d_print(const tg_tensor *y, char *buf, size_t len) {
    return tg__pool2d_print(y, false, buf, len);
}

/* a = the argmax, [N,C,OH,OW] int32: where each window's gradient goes. */
static int max_pool2d_saved_views(const tg_tensor *y, tg__saved_view *views, int max) {
    if (max < 1 || !y->saved)
        return 0;
    views[0] =
        tg__view("a", "the argmax of each window (ih*W + iw)", TG_I32, 4, y->shape, y->saved);
    return 1;
}

const tg__op_desc tg__op_max_pool2d = {
    .name = "max_pool2d",
    .saves = "the argmax a of each window",
    .min_inputs = 1,
    .flags = TG__OP_WRITES_GRAD,
    .max_inputs = 1,
    .params_size = sizeof(tg__pool2d_params),
    .shape = max_pool2d_shape,
    .forward = max_pool2d_forward,
    .backward = max_pool2d_backward,
    .print_params = max_pool2d_print,
    .saved_views = max_pool2d_saved_views,
    .rule = "dx[a] += dy: each window's gradient goes to its first maximum",
};

tg_tensor *tg_max_pool2d_at(tg_tape *t, tg_tensor *x, const tg_pool2d_opts *opts, const char *file,
                            int line) {
    const tg__pool2d_params p = tg__pool2d_params_of(opts);
    return tg__record(t, &tg__op_max_pool2d, &x, 1, &p, file, line);
}
