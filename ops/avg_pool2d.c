/* avg_pool2d: y[n,c,i,j] = (1/d) sum over the window of x[n,c, i sh - ph + r, j sw - pw + s]
 *   x [N,C,H,W], y [N,C,OH,OW], OH = floor((H + 2 ph - kh) / sh) + 1 (OW alike); the divisor d is
 *   kh kw with count_include_pad (the padding counts as zeros), else the number of image pixels
 *   in the window (PyTorch's two conventions).
 * y is linear in x:  dx[pixel] += dy[n,c,i,j] / d  for every window (i,j) holding the pixel.
 * Saves nothing. */
#include "pooling.h"

static tg_status avg_pool2d_shape(tg_tensor *y, char *msg, size_t len) {
    return tg__pool2d_shape(y, "avg_pool2d", msg, len);
}

static tg_status avg_pool2d_forward(tg_tape *tape, tg_tensor *y) {
    const tg__pool2d_params *p = y->params;
    (void)tape;
    tg__avg_pool2d_forward(&p->g, y->dtype, p->count_include_pad, y->inputs[0]->data, y->data);
    return TG_OK;
}

static void avg_pool2d_backward(const tg_tensor *y, const tg_tensor *dout, tg_tensor *const *din) {
    if (!din[0])
        return;
    const tg__pool2d_params *p = y->params;
    tg__avg_pool2d_backward(&p->g, y->dtype, p->count_include_pad, dout->data, din[0]->data);
}

static int avg_pool2d_print(const tg_tensor *y, char *buf, size_t len) {
    return tg__pool2d_print(y, true, buf, len);
}

const tg__op_desc tg__op_avg_pool2d = {
    .name = "avg_pool2d",
    .saves = "nothing (the divisors follow from the geometry)",
    .min_inputs = 1,
    .max_inputs = 1,
    .params_size = sizeof(tg__pool2d_params),
    .shape = avg_pool2d_shape,
    .forward = avg_pool2d_forward,
    .backward = avg_pool2d_backward,
    .print_params = avg_pool2d_print,
    .rule = "dx += dy / d over every window holding the pixel (d: the window's divisor)",
};

tg_tensor *tg_avg_pool2d_at(tg_tape *t, tg_tensor *x, const tg_pool2d_opts *opts, const char *file,
                            int line) {
    const tg__pool2d_params p = tg__pool2d_params_of(opts);
    return tg__record(t, &tg__op_avg_pool2d, &x, 1, &p, file, line);
}
