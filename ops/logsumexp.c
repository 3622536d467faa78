/* logsumexp: y = log sum_j e^(x_j) along one axis k     x [.., n, ..], y [.., ..] (or [.., 1, ..]
 *                                        keepdims)
 * Computed as m + log sum_j e^(x_j - m), m = max_j x_j, taken as 0 when infinite (PyTorch's
 * rule: a row of -inf gives -inf, a +inf gives +inf, never inf - inf); an empty axis gives -inf.
 * dy/dx_j = e^(x_j - y) (the softmax), so  dx_j += dy * e^(x_j - y)  -- uses the saved output y,
 * as PyTorch's logsumexp_backward (a row of -inf gets NaN gradients there too). */
#include "axis_reduce.h"

#include <tgmath.h>

static tg_status logsumexp_shape(tg_tensor *y, char *msg, size_t len) {
    return tg__axis_reduce_shape(y, false, "logsumexp", msg, len);
}

static tg_status logsumexp_forward(tg_tape *tape, tg_tensor *y) {
    (void)tape;
    const tg_tensor *x = y->inputs[0];
    int64_t outer, n, inner;
    tg__axis_view(x, ((const tg__axis_params *)y->params)->axis, &outer, &n, &inner);
    TG_FOR_DTYPE(y->dtype, T, const T *px = x->data; T *py = y->data;
                 for (int64_t o = 0; o < outer; o++) for (int64_t i = 0; i < inner; i++) {
                     const T *col = px + o * n * inner + i;
                     T m = -INFINITY;
                     for (int64_t j = 0; j < n; j++) { /* a NaN makes m NaN, and y NaN */
                         const T v = col[j * inner];
                         m = v > m || v != v ? v : m;
                     }
                     if (isinf(m))
                         m = 0;
                     double s = 0; /* summed in double */
                     for (int64_t j = 0; j < n; j++) s += exp(col[j * inner] - m);
                     py[o * inner + i] = (T)log(s) + m;
                 });
    return TG_OK;
}

static void logsumexp_backward(const tg_tensor *y, const tg_tensor *dout, tg_tensor *const *din) {
    if (!din[0])
        return; /* the engine decided x needs no gradient */
    const tg_tensor *x = y->inputs[0];
    int64_t outer, n, inner;
    tg__axis_view(x, ((const tg__axis_params *)y->params)->axis, &outer, &n, &inner);
    TG_FOR_DTYPE(y->dtype, T, const T *px = x->data; const T *py = y->data;
                 const T *dy = dout->data; T *dx = din[0]->data;
                 for (int64_t o = 0; o < outer; o++) for (int64_t j = 0; j < n; j++)
                     for (int64_t i = 0; i < inner; i++) {
                         const int64_t k = o * inner + i, xi = (o * n + j) * inner + i;
                         dx[xi] += dy[k] * exp(px[xi] - py[k]);
                     });
}

const tg__op_desc tg__op_logsumexp = {
    .name = "logsumexp",
    .saves = "its output y = logsumexp(x) and its input x (by reference)",
    .min_inputs = 1,
    .max_inputs = 1,
    .params_size = sizeof(tg__axis_params),
    .shape = logsumexp_shape,
    .print_params = tg__reduce_axis_print,
    .forward = logsumexp_forward,
    .backward = logsumexp_backward,
    .rule = "dx += dy * e^(x - y) along the axis",
};

tg_tensor *tg_logsumexp_at(tg_tape *t, tg_tensor *x, int axis, int keepdims, const char *file,
                           int line) {
    tg__axis_params p = {axis, keepdims != 0};
    return tg__record(t, &tg__op_logsumexp, &x, 1, &p, file, line);
}
