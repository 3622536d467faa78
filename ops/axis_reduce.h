/* axis_reduce.h -- private to ops/: what the reductions along one axis added with max_axis,
 * min_axis, argmax, logsumexp, var and std share (the shape check, the [outer, n, inner] view,
 * the scan for an extremum, the variance). Not an op (CMake compiles only the .c files of ops/). */
#ifndef TG_OPS_AXIS_REDUCE_H
#define TG_OPS_AXIS_REDUCE_H

#include "core/engine.h"

/* The output shape of a reduction along p->axis (negative counts from the end), with p->axis
 * normalised. As tg__reduce_axis_shape, plus PyTorch's rule for a rank-0 x: axis 0 or -1, one
 * element, a rank-0 y. With `nonempty` (max, min, argmax) an axis of size 0 is an error naming
 * `what`. y->params must begin with a tg__axis_params. */
static inline tg_status tg__axis_reduce_shape(tg_tensor *y, bool nonempty, const char *what,
                                              char *msg, size_t len) {
    const tg_tensor *x = y->inputs[0];
    tg__axis_params *p = y->params;
    if (x->rank == 0) {
        if (p->axis != 0 && p->axis != -1) {
            snprintf(msg, len, "axis %d is out of range for [] (a scalar takes axis 0 or -1)",
                     p->axis);
            return TG_ERR_VALUE;
        }
        p->axis = 0;
        y->rank = 0;
        return TG_OK;
    }
    const tg_status st = tg__reduce_axis_shape(y, msg, len);
    if (st != TG_OK)
        return st;
    if (nonempty && x->shape[p->axis] == 0) {
        char s[TG_SHAPE_STR_LEN];
        snprintf(msg, len, "axis %d of %s is empty: no %s", p->axis, tg__shape_str(x, s, sizeof s),
                 what);
        return TG_ERR_SHAPE;
    }
    return TG_OK;
}

/* x as [outer, n, inner] around the (normalised) axis; a rank-0 x is [1, 1, 1]. */
static inline void tg__axis_view(const tg_tensor *x, int axis, int64_t *outer, int64_t *n,
                                 int64_t *inner) {
    *outer = 1;
    *inner = 1;
    *n = x->rank ? x->shape[axis] : 1;
    for (int i = 0; i < axis && i < x->rank; i++)
        *outer *= x->shape[i];
    for (int i = axis + 1; i < x->rank; i++)
        *inner *= x->shape[i];
}

/* For each output element (o, i): the first index j of the largest (want_max) or smallest x[o,j,i]
 * in scan order, a NaN counting as the extremum (the first NaN wins), as PyTorch's max(dim),
 * min(dim) and argmax. Writes the value to values[o*inner+i] (x's dtype) and the index to arg64
 * or arg32, each when not NULL. The axis must not be empty. */
static inline void tg__axis_extremum(const tg_tensor *x, int axis, bool want_max, void *values,
                                     int64_t *arg64, int32_t *arg32) {
    int64_t outer, n, inner;
    tg__axis_view(x, axis, &outer, &n, &inner);
    TG_FOR_DTYPE(x->dtype, T, const T *px = x->data; T *pv = values;
                 for (int64_t o = 0; o < outer; o++) for (int64_t i = 0; i < inner; i++) {
                     const T *col = px + o * n * inner + i;
                     T best = col[0];
                     int64_t arg = 0;
                     for (int64_t j = 1; j < n; j++) {
                         const T v = col[j * inner];
                         const bool better = want_max ? v > best : v < best;
                         if (better || (v != v && best == best)) {
                             best = v;
                             arg = j;
                         }
                     }
                     const int64_t k = o * inner + i;
                     if (pv)
                         pv[k] = best;
                     if (arg64)
                         arg64[k] = arg;
                     if (arg32)
                         arg32[k] = (int32_t)arg;
                 });
}

/* var and std (ops/var.c): their parameters, and the shared forward and backward. */
typedef struct tg__var_params {
    tg__axis_params ax; /* first, for tg__axis_reduce_shape */
    double correction;
} tg__var_params;
tg_status tg__var_shape(tg_tensor *y, char *msg, size_t len);
int tg__var_print(const tg_tensor *y, char *buf, size_t len);
/* y = sum_j (x_j - mean)^2 / max(n - correction, 0), or its square root (take_sqrt); saves the
 * means (double) in y->saved. */
tg_status tg__var_forward(tg_tape *tape, tg_tensor *y, bool take_sqrt);
/* dx_j += 2 / (n - correction) * g * (x_j - mean) with g = dy (var), or g = dy / (2 y), 0 where
 * y = 0 (std). */
void tg__var_backward(const tg_tensor *y, const tg_tensor *dout, tg_tensor *dx, bool of_sqrt);

#endif
