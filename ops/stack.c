/* stack: y = the n inputs stacked along a new axis `axis`   x_i [..] (one shape), y has the new
 * axis of size n at position axis in 0..rank (torch.stack). y[.., i, ..] = x_i, so
 * dx_i += dy[.., i, ..]. Saves nothing. */
#include "core/engine.h"

typedef struct stack_params {
    int axis; /* as given; normalised to 0..rank by the shape check */
} stack_params;

static tg_status stack_shape(tg_tensor *y, char *msg, size_t len) {
    stack_params *p = y->params;
    const tg_tensor *x0 = y->inputs[0];
    char s1[TG_SHAPE_STR_LEN], s2[TG_SHAPE_STR_LEN];
    const int r = x0->rank, axis = p->axis < 0 ? p->axis + r + 1 : p->axis;
    if (axis < 0 || axis > r) {
        snprintf(msg, len, "axis %d is out of range for stacking tensors of shape %s (0..%d)",
                 p->axis, tg__shape_str(x0, s1, sizeof s1), r);
        return TG_ERR_VALUE;
    }
    if (r + 1 > TG_MAX_RANK) {
        snprintf(msg, len, "stacking tensors of rank %d would give rank %d (at most %d)", r, r + 1,
                 TG_MAX_RANK);
        return TG_ERR_SHAPE;
    }
    for (int i = 1; i < y->n_inputs; i++) {
        const tg_tensor *x = y->inputs[i];
        bool same = x->rank == r;
        for (int k = 0; same && k < r; k++)
            same = x->shape[k] == x0->shape[k];
        if (!same) {
            snprintf(msg, len, "input %d %s differs from input 1 %s; stacked inputs share a shape",
                     i + 1, tg__shape_str(x, s2, sizeof s2), tg__shape_str(x0, s1, sizeof s1));
            return TG_ERR_SHAPE;
        }
    }
    p->axis = axis;
    y->rank = r + 1;
    for (int k = 0, j = 0; k <= r; k++)
        y->shape[k] = k == axis ? y->n_inputs : x0->shape[j++];
    return TG_OK;
}

static int stack_print(const tg_tensor *y, char *buf, size_t len) {
    return snprintf(buf, len, "axis=%d", ((const stack_params *)y->params)->axis);
}

/* outer = product of y's axes before the new one; inner = x's elements after it. */
static void outer_inner(const tg_tensor *y, int64_t *outer, int64_t *inner) {
    const int axis = ((const stack_params *)y->params)->axis;
    *outer = *inner = 1;
    for (int k = 0; k < axis; k++)
        *outer *= y->shape[k];
    for (int k = axis + 1; k < y->rank; k++)
        *inner *= y->shape[k];
}

static tg_status stack_forward(tg_tape *tape, tg_tensor *y) {
    (void)tape;
    int64_t outer, inner;
    outer_inner(y, &outer, &inner);
    const size_t es = tg__dtype_size(y->dtype);
    const int n = y->n_inputs;
    for (int i = 0; i < n && inner; i++)
        for (int64_t o = 0; o < outer; o++)
            memcpy((char *)y->data + (size_t)((o * n + i) * inner) * es,
                   (const char *)y->inputs[i]->data + (size_t)(o * inner) * es, (size_t)inner * es);
    return TG_OK;
}

static void stack_backward(const tg_tensor *y, const tg_tensor *dout, tg_tensor *const *din) {
    int64_t outer, inner;
    outer_inner(y, &outer, &inner);
    const int n = y->n_inputs;
    for (int i = 0; i < n; i++)
        if (din[i])
            TG_FOR_DTYPE(y->dtype, T, const T *dy = dout->data; T *dx = din[i]->data;
                         for (int64_t o = 0; o < outer; o++) for (int64_t k = 0; k < inner; k++)
                             dx[o * inner + k] += dy[(o * n + i) * inner + k];);
}

const tg__op_desc tg__op_stack = {
    .name = "stack",
    .saves = "nothing (it only moves elements)",
    .min_inputs = 1,
    .max_inputs = 64,
    .params_size = sizeof(stack_params),
    .shape = stack_shape,
    .forward = stack_forward,
    .backward = stack_backward,
    .print_params = stack_print,
    .rule = "dx_i += dy[.., i, ..]",
};

tg_tensor *tg_stack_at(tg_tape *t, tg_tensor *const *inputs, int n, int axis, const char *file,
                       int line) {
    stack_params p = {axis};
    return tg__record(t, &tg__op_stack, inputs, n, &p, file, line);
}
