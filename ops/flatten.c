/* flatten: y = x with axes start..end merged into one (torch.flatten)
 *                                        x [d0, .., dk], y [d0, .., d_start * .. * d_end, .., dk]
 * A named reshape: element i of y is element i of x (row-major), so  dx_i += dy_i. Saves
 * nothing. As torch.flatten: negative axes count from the end, start may equal end (y has x's
 * shape), and a rank-0 x (axes 0 or -1) gives a [1]. A view of x when x is a node of the same
 * tape (TG__OP_VIEW). */
#include "core/engine.h"

typedef struct flatten_params {
    int start, end; /* as given */
} flatten_params;

static tg_status flatten_shape(tg_tensor *y, char *msg, size_t len) {
    const tg_tensor *x = y->inputs[0];
    const flatten_params *p = y->params;
    char s[TG_SHAPE_STR_LEN];
    const int r = x->rank > 0 ? x->rank : 1; /* a scalar has one axis here, as in PyTorch */
    const int start = p->start < 0 ? p->start + r : p->start;
    const int end = p->end < 0 ? p->end + r : p->end;
    if (start < 0 || start >= r || end < 0 || end >= r) {
        snprintf(msg, len, "start_dim %d or end_dim %d is out of range for %s", p->start, p->end,
                 tg__shape_str(x, s, sizeof s));
        return TG_ERR_VALUE;
    }
    if (start > end) {
        snprintf(msg, len, "start_dim %d comes after end_dim %d for %s", p->start, p->end,
                 tg__shape_str(x, s, sizeof s));
        return TG_ERR_VALUE;
    }
    if (x->rank == 0) {
        y->rank = 1;
        y->shape[0] = 1;
        return TG_OK;
    }
    y->rank = 0;
    for (int i = 0; i < start; i++)
        y->shape[y->rank++] = x->shape[i];
    int64_t merged = 1;
    for (int i = start; i <= end; i++)
        merged *= x->shape[i]; /* bounded: x's own element count fits */
    y->shape[y->rank++] = merged;
    for (int i = end + 1; i < x->rank; i++)
        y->shape[y->rank++] = x->shape[i];
    return TG_OK;
}

static int flatten_print(const tg_tensor *y, char *buf, size_t len) {
    const flatten_params *p = y->params;
    return snprintf(buf, len, "start_dim=%d, end_dim=%d", p->start, p->end);
}

static tg_status flatten_forward(tg_tape *tape, tg_tensor *y) {
    (void)tape;
    if (y->data != y->inputs[0]->data) /* else the engine made y a view (TG__OP_VIEW) */
        memcpy(y->data, y->inputs[0]->data, (size_t)y->numel * tg__dtype_size(y->dtype));
    return TG_OK;
}

static void flatten_backward(const tg_tensor *y, const tg_tensor *dout, tg_tensor *const *din) {
    if (!din[0])
        return;                 /* the engine decided x needs no gradient */
    if (tg__dx_fresh(din[0])) { /* the first gradient x receives: a copy */
        memcpy(din[0]->data, dout->data, (size_t)y->numel * tg__dtype_size(y->dtype));
        return;
    }
    TG_FOR_DTYPE(y->dtype, T, const T *dy = dout->data; T *dx = din[0]->data;
                 for (int64_t i = 0; i < y->numel; i++) dx[i] += dy[i];);
}

/* dx = dy, element for element (only the shape differs). */
static bool flatten_grad_is_dy(const tg_tensor *y, int k) {
    (void)y;
    return k == 0;
}

const tg__op_desc tg__op_flatten = {
    .name = "flatten",
    .saves = "nothing (it only relabels elements)",
    .min_inputs = 1,
    .flags = TG__OP_WRITES_GRAD | TG__OP_VIEW,
    .max_inputs = 1,
    .params_size = sizeof(flatten_params),
    .shape = flatten_shape,
    .print_params = flatten_print,
    .forward = flatten_forward,
    .backward = flatten_backward,
    .rule = "dx += dy, element by element",
    .grad_is_dy = flatten_grad_is_dy,
};

tg_tensor *tg_flatten_at(tg_tape *t, tg_tensor *x, int start_dim, int end_dim, const char *file,
                         int line) {
    flatten_params p = {start_dim, end_dim};
    return tg__record(t, &tg__op_flatten, &x, 1, &p, file, line);
}
