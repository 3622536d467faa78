/* min_axis: y = the smallest value along one axis k   x [.., n, ..], y [.., ..] (or [.., 1, ..]
 *                                        keepdims); n >= 1
 * View x as [outer, n, inner]: y[o,i] = x[o,j*,i] with j* the first index of the minimum in scan
 * order (the index PyTorch's min(dim) returns; a NaN counts as the minimum). dy[o,i]/dx[o,j,i] = 1 for
 * j = j*, 0 otherwise, so  dx[o,j*,i] += dy[o,i]: at a tie the whole gradient goes to the first
 * minimum, as in PyTorch. Saves the indices j*. */
#include "axis_reduce.h"

static tg_status min_axis_shape(tg_tensor *y, char *msg, size_t len) {
    return tg__axis_reduce_shape(y, true, "minimum", msg, len);
}

static tg_status min_axis_forward(tg_tape *tape, tg_tensor *y) {
    int64_t *arg = tg__tape_alloc_raw(tape, sizeof(int64_t) * (size_t)y->numel);
    if (!arg)
        return TG_ERR_NOMEM;
    y->saved = arg;
    tg__axis_extremum(y->inputs[0], ((const tg__axis_params *)y->params)->axis, false, y->data, arg,
                      NULL);
    return TG_OK;
}

static void min_axis_backward(const tg_tensor *y, const tg_tensor *dout, tg_tensor *const *din) {
    if (!din[0])
        return; /* the engine decided x needs no gradient */
    int64_t outer, n, inner;
    tg__axis_view(y->inputs[0], ((const tg__axis_params *)y->params)->axis, &outer, &n, &inner);
    const int64_t *arg = y->saved;
    TG_FOR_DTYPE(y->dtype, T, const T *dy = dout->data; T *dx = din[0]->data;
                 for (int64_t o = 0; o < outer; o++) for (int64_t i = 0; i < inner; i++) {
                     const int64_t k = o * inner + i;
                     dx[(o * n + arg[k]) * inner + i] += dy[k];
                 });
}

const tg__op_desc tg__op_min_axis = {
    .name = "min_axis",
    .saves = "the index of the first minimum along the axis, for each output",
    .min_inputs = 1,
    .max_inputs = 1,
    .params_size = sizeof(tg__axis_params),
    .shape = min_axis_shape,
    .print_params = tg__reduce_axis_print,
    .forward = min_axis_forward,
    .backward = min_axis_backward,
    .rule = "dx += dy at the first minimum along the axis, 0 elsewhere",
};

tg_tensor *tg_min_axis_at(tg_tape *t, tg_tensor *x, int axis, int keepdims, const char *file,
                          int line) {
    tg__axis_params p = {axis, keepdims != 0};
    return tg__record(t, &tg__op_min_axis, &x, 1, &p, file, line);
}
