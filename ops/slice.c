/* slice: y = x[.., start : start + length*step : step, ..] along `axis`      x [.., d, ..],
 * y [.., length, ..] (x.narrow / x[a:b:step] in PyTorch; step >= 1, start < 0 counts from the end).
 * y[.., j, ..] = x[.., start + j*step, ..], distinct elements of x, so
 * dx[.., start + j*step, ..] += dy[.., j, ..] and the rest of dx gets nothing. Saves nothing. */
#include "core/engine.h"
#include "kernels/parallel.h"

typedef struct slice_params {
    int axis;                    /* normalised to 0..rank-1 by the shape check */
    int64_t start, length, step; /* start normalised to 0..d */
} slice_params;

static tg_status slice_shape(tg_tensor *y, char *msg, size_t len) {
    slice_params *p = y->params;
    const tg_tensor *x = y->inputs[0];
    char s[TG_SHAPE_STR_LEN];
    const int r = x->rank, axis = p->axis < 0 ? p->axis + r : p->axis;
    if (axis < 0 || axis >= r) {
        snprintf(msg, len, "axis %d is out of range for %s", p->axis,
                 tg__shape_str(x, s, sizeof s));
        return TG_ERR_VALUE;
    }
    const int64_t d = x->shape[axis], start = p->start < 0 ? p->start + d : p->start;
    if (p->step < 1 || p->length < 0) {
        snprintf(msg, len, "step %lld must be >= 1 and length %lld >= 0", (long long)p->step,
                 (long long)p->length);
        return TG_ERR_VALUE;
    }
    if (start < 0 || start > d || (p->length > 0 && (d - 1 - start) / p->step < p->length - 1) ||
        (p->length > 0 && start == d)) {
        snprintf(msg, len,
                 "start %lld, length %lld, step %lld reach past axis %d of %s (size %lld)",
                 (long long)p->start, (long long)p->length, (long long)p->step, axis,
                 tg__shape_str(x, s, sizeof s), (long long)d);
        return TG_ERR_VALUE;
    }
    p->axis = axis;
    p->start = start;
    y->rank = r;
    memcpy(y->shape, x->shape, sizeof(int64_t) * (size_t)r);
    y->shape[axis] = p->length;
    return TG_OK;
}

static int slice_print(const tg_tensor *y, char *buf, size_t len) {
    const slice_params *p = y->params;
    return snprintf(buf, len, "axis=%d, start=%lld, length=%lld, step=%lld", p->axis,
                    (long long)p->start, (long long)p->length, (long long)p->step);
}

/* For each outer index o in o0..o1-1 and j in 0..length: y[(o*length + j)*inner + k] pairs with
 * x[(o*d + start + j*step)*inner + k]. With step 1 the pairs of one o are one contiguous run of
 * length*inner elements on both sides (a plain loop the compiler vectorizes). */
#define SLICE_FOR(y, o0, o1, yo, xo, ...)                                                          \
    do {                                                                                           \
        const slice_params *p_ = (y)->params;                                                      \
        const tg_tensor *x_ = (y)->inputs[0];                                                      \
        int64_t inner_ = 1;                                                                        \
        for (int k_ = p_->axis + 1; k_ < x_->rank; k_++)                                           \
            inner_ *= x_->shape[k_];                                                               \
        const int64_t d_ = x_->shape[p_->axis];                                                    \
        const int64_t runs_ = p_->step == 1 ? 1 : p_->length;                                      \
        const int64_t run_ = p_->step == 1 ? p_->length * inner_ : inner_;                         \
        for (int64_t o_ = (o0); o_ < (o1); o_++)                                                   \
            for (int64_t j_ = 0; j_ < runs_; j_++) {                                               \
                const int64_t ybase_ = (o_ * p_->length + j_) * inner_;                            \
                const int64_t xbase_ = (o_ * d_ + p_->start + j_ * p_->step) * inner_;             \
                for (int64_t k_ = 0; k_ < run_; k_++) {                                            \
                    const int64_t yo = ybase_ + k_, xo = xbase_ + k_;                              \
                    __VA_ARGS__                                                                    \
                }                                                                                  \
            }                                                                                      \
    } while (0)

/* The outer indices (the axes before the sliced one) split over threads: each element moves
 * once, so the split changes nothing; a [tokens, features] activation sliced along its features
 * (an attention block's q, k and v) keeps each thread's half of the rows on that thread. */
typedef struct slice_job {
    const tg_tensor *y;
    const void *src; /* x (forward) or dy (backward) */
    void *dst;       /* y or dx */
    bool backward;   /* dx += dy instead of y = x */
} slice_job;

static int64_t slice_outer(const tg_tensor *y) {
    const slice_params *p = y->params;
    int64_t outer = 1;
    for (int k = 0; k < p->axis; k++)
        outer *= y->shape[k];
    return outer;
}

static void slice_job_run(void *ctx, int tid, int nth) {
    const slice_job *j = ctx;
    const tg_tensor *y = j->y;
    int64_t o0, o1;
    tg__split(slice_outer(y), 1, tid, nth, &o0, &o1);
    if (!j->backward)
        TG_FOR_DTYPE(y->dtype, T, const T *px = j->src; T *py = j->dst;
                     SLICE_FOR(y, o0, o1, yo, xo, py[yo] = px[xo];););
    else
        TG_FOR_DTYPE(y->dtype, T, const T *dy = j->src; T *dx = j->dst;
                     SLICE_FOR(y, o0, o1, yo, xo, dx[xo] += dy[yo];););
}

static void slice_run(const tg_tensor *y, const void *src, void *dst, bool backward) {
    const slice_job j = {y, src, dst, backward};
    const int64_t outer = slice_outer(y);
    tg__parallel_run(tg__threads_for_rows(y->numel, outer), slice_job_run, (void *)&j);
}

static tg_status slice_forward(tg_tape *tape, tg_tensor *y) {
    (void)tape;
    slice_run(y, y->inputs[0]->data, y->data, false);
    return TG_OK;
}

static void slice_backward(const tg_tensor *y, const tg_tensor *dout, tg_tensor *const *din) {
    if (!din[0])
        return; /* the engine decided x needs no gradient */
    slice_run(y, dout->data, din[0]->data, true);
}

const tg__op_desc tg__op_slice = {
    .name = "slice",
    .saves = "nothing (it only moves elements)",
    .min_inputs = 1,
    .max_inputs = 1,
    .params_size = sizeof(slice_params),
    .shape = slice_shape,
    .forward = slice_forward,
    .backward = slice_backward,
    .print_params = slice_print,
    .rule = "dx[.., start + j*step, ..] += dy[.., j, ..]",
};

tg_tensor *tg_slice_at(tg_tape *t, tg_tensor *x, int axis, int64_t start, int64_t length,
                       int64_t step, const char *file, int line) {
    slice_params p = {axis, start, length, step};
    return tg__record(t, &tg__op_slice, &x, 1, &p, file, line);
}
