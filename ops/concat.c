/* concat: y = [x_1, .., x_n] joined along `axis`     x_i [.., d_i, ..] (same shape but along
 * axis), y [.., sum d_i, ..], n = 1..64 (torch.cat). Each block of y is a copy of one input, so
 * dx_i += the block of dy that x_i was copied to. Saves nothing. */
#include "core/engine.h"

typedef struct concat_params {
    int axis; /* as given; normalised to 0..rank-1 by the shape check */
} concat_params;

static tg_status concat_shape(tg_tensor *y, char *msg, size_t len) {
    concat_params *p = y->params;
    const tg_tensor *x0 = y->inputs[0];
    char s1[TG_SHAPE_STR_LEN], s2[TG_SHAPE_STR_LEN];
    const int r = x0->rank, axis = p->axis < 0 ? p->axis + r : p->axis;
    if (r < 1 || axis < 0 || axis >= r) {
        snprintf(msg, len, "axis %d is out of range for %s", p->axis,
                 tg__shape_str(x0, s1, sizeof s1));
        return TG_ERR_VALUE;
    }
    int64_t total = 0;
    for (int i = 0; i < y->n_inputs; i++) {
        const tg_tensor *x = y->inputs[i];
        bool same = x->rank == r;
        for (int k = 0; same && k < r; k++)
            same = k == axis || x->shape[k] == x0->shape[k];
        if (!same) {
            snprintf(msg, len, "input %d %s does not fit input 1 %s (only axis %d may differ)",
                     i + 1, tg__shape_str(x, s2, sizeof s2), tg__shape_str(x0, s1, sizeof s1),
                     axis);
            return TG_ERR_SHAPE;
        }
        total += x->shape[axis];
    }
    p->axis = axis;
    y->rank = r;
    memcpy(y->shape, x0->shape, sizeof(int64_t) * (size_t)r);
    y->shape[axis] = total;
    return TG_OK;
}

static int concat_print(const tg_tensor *y, char *buf, size_t len) {
    return snprintf(buf, len, "axis=%d", ((const concat_params *)y->params)->axis);
}

/* outer = product of the axes before `axis`; inner = after it. */
static void outer_inner(const tg_tensor *y, int axis, int64_t *outer, int64_t *inner) {
    *outer = *inner = 1;
    for (int k = 0; k < axis; k++)
        *outer *= y->shape[k];
    for (int k = axis + 1; k < y->rank; k++)
        *inner *= y->shape[k];
}

static tg_status concat_forward(tg_tape *tape, tg_tensor *y) {
    (void)tape;
    const int axis = ((const concat_params *)y->params)->axis;
    int64_t outer, inner;
    outer_inner(y, axis, &outer, &inner);
    const size_t es = tg__dtype_size(y->dtype);
    const int64_t row = y->shape[axis] * inner; /* y's elements per outer index */
    int64_t at = 0;                             /* where input i starts within a row */
    for (int i = 0; i < y->n_inputs; i++) {
        const tg_tensor *x = y->inputs[i];
        const int64_t w = x->shape[axis] * inner;
        for (int64_t o = 0; o < outer && w; o++)
            memcpy((char *)y->data + (size_t)(o * row + at) * es,
                   (const char *)x->data + (size_t)(o * w) * es, (size_t)w * es);
        at += w;
    }
    return TG_OK;
}

static void concat_backward(const tg_tensor *y, const tg_tensor *dout, tg_tensor *const *din) {
    const int axis = ((const concat_params *)y->params)->axis;
    int64_t outer, inner;
    outer_inner(y, axis, &outer, &inner);
    const int64_t row = y->shape[axis] * inner;
    int64_t at = 0;
    for (int i = 0; i < y->n_inputs; i++) {
        const int64_t w = y->inputs[i]->shape[axis] * inner;
        if (din[i])
            TG_FOR_DTYPE(y->dtype, T, const T *dy = dout->data; T *dx = din[i]->data;
                         for (int64_t o = 0; o < outer; o++) for (int64_t k = 0; k < w; k++)
                             dx[o * w + k] += dy[o * row + at + k];);
        at += w;
    }
}

const tg__op_desc tg__op_concat = {
    .name = "concat",
    .saves = "nothing (it only moves elements)",
    .min_inputs = 1,
    .max_inputs = 64,
    .params_size = sizeof(concat_params),
    .shape = concat_shape,
    .forward = concat_forward,
    .backward = concat_backward,
    .print_params = concat_print,
    .rule = "dx_i += the block of dy that x_i was copied to",
};

tg_tensor *tg_concat_at(tg_tape *t, tg_tensor *const *inputs, int n, int axis, const char *file,
                        int line) {
    concat_params p = {axis};
    return tg__record(t, &tg__op_concat, inputs, n, &p, file, line);
}
