/* reshape: y = x with a new shape        x [..] with n elements, y [..] with n elements
 * Element i of y is element i of x (row-major), so  dx_i += dy_i.  Saves nothing. When x is a
 * node of the same tape, y shares its data (TG__OP_VIEW): no copy. */
#include "core/engine.h"

typedef struct reshape_params {
    int rank;           /* the requested shape, one entry possibly -1 */
    bool shape_missing; /* the caller passed NULL for a rank > 0 */
    int64_t shape[TG_MAX_RANK];
} reshape_params;

static tg_status reshape_shape(tg_tensor *y, char *msg, size_t len) {
    const tg_tensor *x = y->inputs[0];
    const reshape_params *p = y->params;
    char s[TG_SHAPE_STR_LEN];
    if (p->shape_missing) {
        snprintf(msg, len, "shape is NULL for rank %d", p->rank);
        return TG_ERR_NULL;
    }
    if (p->rank < 0 || p->rank > TG_MAX_RANK) {
        snprintf(msg, len, "rank %d is outside 0..%d", p->rank, TG_MAX_RANK);
        return TG_ERR_VALUE;
    }
    int infer = -1;
    int64_t known = 1, sizes = 1; /* sizes: the product of the nonzero sizes */
    for (int i = 0; i < p->rank; i++) {
        if (p->shape[i] == -1 && infer < 0) {
            infer = i;
        } else if (p->shape[i] < 0) {
            snprintf(msg, len, "axis %d has size %lld (only one axis may be -1)", i,
                     (long long)p->shape[i]);
            return TG_ERR_VALUE;
        } else {
            /* Bound the product as tensor.c does: a wrapped count could match x's and pass, and
             * a huge size beside a 0 would overflow the strides of later ops. */
            if (p->shape[i] > 0 && sizes > INT64_MAX / 16 / p->shape[i]) {
                snprintf(msg, len, "too many elements (axis %d has size %lld)", i,
                         (long long)p->shape[i]);
                return TG_ERR_VALUE;
            }
            known *= p->shape[i];
            sizes *= p->shape[i] > 0 ? p->shape[i] : 1;
        }
    }
    y->rank = p->rank;
    memcpy(y->shape, p->shape, sizeof y->shape);
    if (infer >= 0) {
        if (known == 0 || x->numel % known != 0) {
            snprintf(msg, len, "cannot infer axis %d: %lld elements of %s do not divide by %lld",
                     infer, (long long)x->numel, tg__shape_str(x, s, sizeof s), (long long)known);
            return TG_ERR_SHAPE;
        }
        y->shape[infer] = x->numel / known;
        known *= y->shape[infer];
    }
    if (known != x->numel) {
        char s2[TG_SHAPE_STR_LEN];
        snprintf(msg, len, "%s has %lld elements, %s has %lld", tg__shape_str(x, s, sizeof s),
                 (long long)x->numel, tg__shape_str(y, s2, sizeof s2), (long long)known);
        return TG_ERR_SHAPE;
    }
    return TG_OK;
}

static tg_status reshape_forward(tg_tape *tape, tg_tensor *y) {
    (void)tape;
    if (y->data != y->inputs[0]->data) /* else the engine made y a view (TG__OP_VIEW) */
        memcpy(y->data, y->inputs[0]->data, (size_t)y->numel * tg__dtype_size(y->dtype));
    return TG_OK;
}

static void reshape_backward(const tg_tensor *y, const tg_tensor *dout, tg_tensor *const *din) {
    if (!din[0])
        return;
    if (tg__dx_fresh(din[0])) { /* the first gradient x receives: a copy */
        memcpy(din[0]->data, dout->data, (size_t)y->numel * tg__dtype_size(y->dtype));
        return;
    }
    TG_FOR_DTYPE(y->dtype, T, const T *dy = dout->data; T *dx = din[0]->data;
                 for (int64_t i = 0; i < y->numel; i++) dx[i] += dy[i];);
}

/* dx = dy, element for element (only the shape differs). */
static bool reshape_grad_is_dy(const tg_tensor *y, int k) {
    (void)y;
    return k == 0;
}

const tg__op_desc tg__op_reshape = {
    .name = "reshape",
    .saves = "nothing (it only relabels elements)",
    .min_inputs = 1,
    .flags = TG__OP_WRITES_GRAD | TG__OP_VIEW,
    .max_inputs = 1,
    .params_size = sizeof(reshape_params),
    .shape = reshape_shape,
    .forward = reshape_forward,
    .backward = reshape_backward,
    .rule = "dx += dy, element by element",
    .grad_is_dy = reshape_grad_is_dy,
};

tg_tensor *tg_reshape_at(tg_tape *t, tg_tensor *x, int rank, const int64_t *shape, const char *file,
                         int line) {
    reshape_params p = {.rank = rank};
    if (rank > 0 && !shape) {
        /* Recorded anyway, so the usual path reports it with the caller's line. */
        p.shape_missing = true;
    } else if (rank > 0 && rank <= TG_MAX_RANK) {
        memcpy(p.shape, shape, sizeof(int64_t) * (size_t)rank);
    }
    return tg__record(t, &tg__op_reshape, &x, 1, &p, file, line);
}
