/* mean_axis: y = (1/n) sum over one axis of x  x [.., n, ..], y [.., ..] (or [.., 1, ..] keepdims)
 * dy[o,i]/dx[o,j,i] = 1/n, so  dx[o,j,i] += dy[o,i] / n.  Saves nothing.
 * Shares its loops with sum_axis (ops/sum_axis.c). */
#include "core/engine.h"

static tg_status mean_axis_forward(tg_tape *tape, tg_tensor *y) {
    (void)tape;
    tg__reduce_axis_forward(y, 1.0 / (double)tg__reduce_axis_len(y));
    return TG_OK;
}

static void mean_axis_backward(const tg_tensor *y, const tg_tensor *dout, tg_tensor *const *din) {
    if (!din[0])
        return; /* the engine decided x needs no gradient */
    tg__reduce_axis_backward(y, dout, din[0], 1.0 / (double)tg__reduce_axis_len(y));
}

const tg__op_desc tg__op_mean_axis = {
    .name = "mean_axis",
    .saves = "nothing (the derivative is 1/n)",
    .min_inputs = 1,
    .max_inputs = 1,
    .params_size = sizeof(tg__axis_params),
    .shape = tg__reduce_axis_shape,
    .print_params = tg__reduce_axis_print,
    .forward = mean_axis_forward,
    .backward = mean_axis_backward,
    .rule = "dx += dy / n, repeated along the averaged axis",
};

tg_tensor *tg_mean_axis_at(tg_tape *t, tg_tensor *x, int axis, int keepdims, const char *file,
                           int line) {
    tg__axis_params p = {axis, keepdims != 0};
    return tg__record(t, &tg__op_mean_axis, &x, 1, &p, file, line);
}
