/* sum_axis: y = sum over one axis k of x       x [.., n, ..], y [.., ..] (or [.., 1, ..] keepdims)
 * View x as [outer, n, inner]: y[o,i] = sum_j x[o,j,i], so dy[o,i]/dx[o,j,i] = 1 and
 * dx[o,j,i] += dy[o,i]  (the gradient is broadcast back along the summed axis). Saves nothing.
 * The helpers below are shared with mean_axis, which is the same with a factor 1/n. */
#include "core/engine.h"

tg_status tg__reduce_axis_shape(tg_tensor *y, char *msg, size_t len) {
    const tg_tensor *x = y->inputs[0];
    tg__axis_params *p = y->params;
    int axis = p->axis;
    char s[TG_SHAPE_STR_LEN];
    if (axis < 0)
        axis += x->rank;
    if (axis < 0 || axis >= x->rank) {
        snprintf(msg, len, "axis %d is out of range for %s", p->axis,
                 tg__shape_str(x, s, sizeof s));
        return TG_ERR_VALUE;
    }
    p->axis = axis;
    y->rank = 0;
    for (int i = 0; i < x->rank; i++) {
        if (i != axis)
            y->shape[y->rank++] = x->shape[i];
        else if (p->keepdims)
            y->shape[y->rank++] = 1;
    }
    return TG_OK;
}

/* x as [outer, n, inner] around the reduced axis. */
static void axis_split(const tg_tensor *x, int axis, int64_t *outer, int64_t *n, int64_t *inner) {
    *outer = 1;
    *inner = 1;
    for (int i = 0; i < axis; i++)
        *outer *= x->shape[i];
    for (int i = axis + 1; i < x->rank; i++)
        *inner *= x->shape[i];
    *n = x->shape[axis];
}

static int axis_of(const tg_tensor *y) { return ((const tg__axis_params *)y->params)->axis; }

int64_t tg__reduce_axis_len(const tg_tensor *y) { return y->inputs[0]->shape[axis_of(y)]; }

int tg__reduce_axis_print(const tg_tensor *y, char *buf, size_t len) {
    const tg__axis_params *p = y->params;
    return snprintf(buf, len, "axis=%d%s", p->axis, p->keepdims ? ", keepdims" : "");
}

/* y[o,i] = factor * sum_j x[o,j,i], summed in double */
void tg__reduce_axis_forward(tg_tensor *y, double factor) {
    const tg_tensor *x = y->inputs[0];
    int64_t outer, n, inner;
    axis_split(x, axis_of(y), &outer, &n, &inner);
    TG_FOR_DTYPE(y->dtype, T, const T *px = x->data; T *py = y->data;
                 for (int64_t o = 0; o < outer; o++) for (int64_t i = 0; i < inner; i++) {
                     double acc = 0;
                     for (int64_t j = 0; j < n; j++) acc += px[(o * n + j) * inner + i];
                     py[o * inner + i] = (T)(acc * factor);
                 });
}

/* dx[o,j,i] += factor * dy[o,i] */
void tg__reduce_axis_backward(const tg_tensor *y, const tg_tensor *dout, tg_tensor *dx_t,
                              double factor) {
    const tg_tensor *x = y->inputs[0];
    if (!dx_t)
        return;
    int64_t outer, n, inner;
    axis_split(x, axis_of(y), &outer, &n, &inner);
    TG_FOR_DTYPE(y->dtype, T, const T *dy = dout->data; T *dx = dx_t->data;
                 const T f = (T)factor;
                 for (int64_t o = 0; o < outer; o++) for (int64_t j = 0; j < n; j++)
                     for (int64_t i = 0; i < inner; i++)
                         dx[(o * n + j) * inner + i] += f * dy[o * inner + i];);
}

static tg_status sum_axis_forward(tg_tape *tape, tg_tensor *y) {
    (void)tape;
    tg__reduce_axis_forward(y, 1.0);
    return TG_OK;
}

static void sum_axis_backward(const tg_tensor *y, const tg_tensor *dout, tg_tensor *const *din) {
    if (!din[0])
        return; /* the engine decided x needs no gradient */
    tg__reduce_axis_backward(y, dout, din[0], 1.0);
}

const tg__op_desc tg__op_sum_axis = {
    .name = "sum_axis",
    .saves = "nothing (the derivative is 1)",
    .min_inputs = 1,
    .max_inputs = 1,
    .params_size = sizeof(tg__axis_params),
    .shape = tg__reduce_axis_shape,
    .print_params = tg__reduce_axis_print,
    .forward = sum_axis_forward,
    .backward = sum_axis_backward,
    .rule = "dx += dy, repeated along the summed axis",
};

tg_tensor *tg_sum_axis_at(tg_tape *t, tg_tensor *x, int axis, int keepdims, const char *file,
                          int line) {
    tg__axis_params p = {axis, keepdims != 0};
    return tg__record(t, &tg__op_sum_axis, &x, 1, &p, file, line);
}
