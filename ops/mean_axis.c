/* mean_axis: y = (1/n) sum over one axis of x  x [.., n, ..], y [.., ..] (or [.., 1, ..] keepdims)
 * dy[o,i]/dx[o,j,i] = 1/n, so  dx[o,j,i] += dy[o,i] / n.  Saves nothing.
 * Shares its loops with sum_axis (ops/sum_axis.c). */
#include "internal.h"

static tg_status mean_axis_forward(tg_tape *tape, tg_tensor *y) {
    (void)tape;
    tg__reduce_axis_forward(y, 1.0 / (double)tg__reduce_axis_len(y));
    return TG_OK;
}

static void mean_axis_backward(tg_tensor *y) {
    tg__reduce_axis_backward(y, 1.0 / (double)tg__reduce_axis_len(y));
}

tg_tensor *tg_mean_axis_at(tg_tape *t, tg_tensor *x, int axis, int keepdims, const char *file,
                           int line) {
    tg_op_params p = {.axis = axis, .keepdims = keepdims != 0};
    return tg__record(t, TG_OP_MEAN_AXIS, &x, 1, &p, file, line);
}

const tg_op_desc tg_op_mean_axis = {
    .name = "mean_axis",
    .saves = "nothing (the derivative is 1/n)",
    .n_inputs = 1,
    .shape = tg__reduce_axis_shape,
    .forward = mean_axis_forward,
    .backward = mean_axis_backward,
    .local = "dx += dy / n, repeated along the averaged axis",
};
