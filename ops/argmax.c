/* argmax: y = the index of the largest value along one axis k   x [.., n, ..], y [.., ..] (or
 *                                        [.., 1, ..] keepdims), y TG_I32; n >= 1
 * The first index of the maximum in scan order, a NaN counting as the maximum (as torch.argmax,
 * whose int64 result this gives as int32). An integer output carries no gradient: the engine
 * never asks this op for one, and its backward does nothing (the derivative is 0 almost
 * everywhere and undefined at ties). Saves nothing. */
#include "axis_reduce.h"

static tg_status argmax_shape(tg_tensor *y, char *msg, size_t len) {
    const tg_status st = tg__axis_reduce_shape(y, true, "maximum", msg, len);
    if (st != TG_OK)
        return st;
    const tg_tensor *x = y->inputs[0];
    const int axis = ((const tg__axis_params *)y->params)->axis;
    if (x->rank && x->shape[axis] > INT32_MAX) {
        char s[TG_SHAPE_STR_LEN];
        snprintf(msg, len, "axis %d of %s is too long for int32 indices", axis,
                 tg__shape_str(x, s, sizeof s));
        return TG_ERR_SHAPE;
    }
    y->dtype = TG_I32; /* TG__OP_SETS_DTYPE */
    return TG_OK;
}

static tg_status argmax_forward(tg_tape *tape, tg_tensor *y) {
    (void)tape;
    tg__axis_extremum(y->inputs[0], ((const tg__axis_params *)y->params)->axis, true, NULL, NULL,
                      y->data);
    return TG_OK;
}

static void argmax_backward(const tg_tensor *y, const tg_tensor *dout, tg_tensor *const *din) {
    (void)y;
    (void)dout;
    (void)din; /* an integer output: no gradient flows through it */
}

const tg__op_desc tg__op_argmax = {
    .name = "argmax",
    .saves = "nothing (its integer output carries no gradient)",
    .min_inputs = 1,
    .max_inputs = 1,
    .flags = TG__OP_SETS_DTYPE,
    .params_size = sizeof(tg__axis_params),
    .shape = argmax_shape,
    .print_params = tg__reduce_axis_print,
    .forward = argmax_forward,
    .backward = argmax_backward,
    .rule = "none: an integer output has no gradient",
};

tg_tensor *tg_argmax_at(tg_tape *t, tg_tensor *x, int axis, int keepdims, const char *file,
                        int line) {
    tg__axis_params p = {axis, keepdims != 0};
    return tg__record(t, &tg__op_argmax, &x, 1, &p, file, line);
}
