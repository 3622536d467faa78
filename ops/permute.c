/* permute: y = x with its axes reordered, y.shape[i] = x.shape[axes[i]]   x [..] rank <= 8
 * (torch.permute). y[i_0, .., i_{r-1}] = x[j] with j_{axes[k]} = i_k: a pure move of elements,
 * so dx[j] += dy[i] at the same pairs (the inverse permutation). Saves nothing.
 * tg_transpose_axes(x, a, b) records a permute that swaps two axes (torch.transpose). */
#include "core/engine.h"
#include "kernels/parallel.h"

typedef struct permute_params {
    int n;                 /* number of axes given */
    int axes[TG_MAX_RANK]; /* as given; normalised to 0..rank-1 by the shape check */
} permute_params;

static tg_status permute_shape(tg_tensor *y, char *msg, size_t len) {
    permute_params *p = y->params;
    const tg_tensor *x = y->inputs[0];
    char s[TG_SHAPE_STR_LEN];
    if (p->n != x->rank) {
        snprintf(msg, len, "%d axes given for %s of rank %d", p->n, tg__shape_str(x, s, sizeof s),
                 x->rank);
        return TG_ERR_VALUE;
    }
    bool seen[TG_MAX_RANK] = {false};
    for (int i = 0; i < p->n; i++) {
        const int a = p->axes[i] < 0 ? p->axes[i] + x->rank : p->axes[i];
        if (a < 0 || a >= x->rank) {
            snprintf(msg, len, "axis %d is out of range for %s", p->axes[i],
                     tg__shape_str(x, s, sizeof s));
            return TG_ERR_VALUE;
        }
        if (seen[a]) {
            snprintf(msg, len, "axis %d appears twice in the permutation of %s", a,
                     tg__shape_str(x, s, sizeof s));
            return TG_ERR_VALUE;
        }
        seen[a] = true;
        p->axes[i] = a;
        y->shape[i] = x->shape[a];
    }
    y->rank = x->rank;
    return TG_OK;
}

static int permute_print(const tg_tensor *y, char *buf, size_t len) {
    const permute_params *p = y->params;
    size_t n = (size_t)snprintf(buf, len, "axes=(");
    for (int i = 0; i < p->n && n < len; i++)
        n += (size_t)snprintf(buf + n, len - n, "%s%d", i ? "," : "", p->axes[i]);
    if (n < len)
        n += (size_t)snprintf(buf + n, len - n, ")");
    return (int)n;
}

/* Walks y's rows q0..q1-1 (a row: the last axis) in row-major order; `xo` is the matching offset
 * in x. body sees o (y's offset) and xo. Odometer over y's axes with x's strides permuted,
 * started at row q0; the last axis is the inner loop. */
#define PERMUTE_FOR(y, p, q0, q1, o, xo, ...)                                                      \
    do {                                                                                           \
        const tg_tensor *x_ = (y)->inputs[0];                                                      \
        const int r_ = (y)->rank;                                                                  \
        int64_t xs_[TG_MAX_RANK] = {0}, st_[TG_MAX_RANK] = {0}, idx_[TG_MAX_RANK] = {0};           \
        int64_t s_ = 1;                                                                            \
        for (int k_ = x_->rank - 1; k_ >= 0; k_--) {                                               \
            xs_[k_] = s_;                                                                          \
            s_ *= x_->shape[k_];                                                                   \
        }                                                                                          \
        for (int k_ = 0; k_ < r_; k_++)                                                            \
            st_[k_] = xs_[(p)->axes[k_]];                                                          \
        const int64_t inner_ = r_ ? (y)->shape[r_ - 1] : 1, istr_ = r_ ? st_[r_ - 1] : 0;          \
        int64_t base_ = 0, o = (q0)*inner_;                                                        \
        for (int64_t k_ = r_ - 2, rest_ = (q0); k_ >= 0; k_--) { /* row q0's index and offset */   \
            idx_[k_] = rest_ % (y)->shape[k_];                                                     \
            rest_ /= (y)->shape[k_];                                                               \
            base_ += idx_[k_] * st_[k_];                                                           \
        }                                                                                          \
        for (int64_t q_ = (q0); q_ < (q1); q_++) {                                                 \
            int64_t xo = base_;                                                                    \
            if (istr_ == 1) /* the last axis stays last: a contiguous run, vectorizable */         \
                for (int64_t c_ = 0; c_ < inner_; c_++, o++, xo++) {                               \
                    __VA_ARGS__                                                                    \
                }                                                                                  \
            else                                                                                   \
                for (int64_t c_ = 0; c_ < inner_; c_++, o++, xo += istr_) {                        \
                    __VA_ARGS__                                                                    \
                }                                                                                  \
            for (int k_ = r_ - 2; k_ >= 0; k_--) {                                                 \
                base_ += st_[k_];                                                                  \
                if (++idx_[k_] < (y)->shape[k_])                                                   \
                    break;                                                                         \
                base_ -= st_[k_] * (y)->shape[k_];                                                 \
                idx_[k_] = 0;                                                                      \
            }                                                                                      \
        }                                                                                          \
    } while (0)

/* A forward or backward over y's rows. Each element moves once, so any split gives the same
 * result; contiguous halves of y's rows are, when the permutation keeps axis 0 (the heads of an
 * attention block: [B, T, H, D] <-> [B, H, T, D]), the same halves of x that the matmuls and the
 * elementwise ops give each thread, so the elements stay in the cache of the core that wrote
 * them. */
typedef struct permute_job {
    const tg_tensor *y;
    const void *src; /* x (forward) or dy (backward) */
    void *dst;       /* y or dx */
    int mode;        /* 0: y = x, 1: dx = dy, 2: dx += dy */
} permute_job;

static void permute_rows(const permute_job *j, int64_t q0, int64_t q1) {
    const tg_tensor *y = j->y;
    const permute_params *p = y->params;
    if (j->mode == 0)
        TG_FOR_DTYPE(y->dtype, T, const T *px = j->src; T *py = j->dst;
                     PERMUTE_FOR(y, p, q0, q1, o, xo, py[o] = px[xo];););
    else if (j->mode == 1)
        TG_FOR_DTYPE(y->dtype, T, const T *dy = j->src; T *dx = j->dst;
                     PERMUTE_FOR(y, p, q0, q1, o, xo, dx[xo] = dy[o];););
    else
        TG_FOR_DTYPE(y->dtype, T, const T *dy = j->src; T *dx = j->dst;
                     PERMUTE_FOR(y, p, q0, q1, o, xo, dx[xo] += dy[o];););
}

static void permute_job_run(void *ctx, int tid, int nth) {
    const permute_job *j = ctx;
    const int64_t inner = j->y->rank ? j->y->shape[j->y->rank - 1] : 1;
    int64_t q0, q1;
    tg__split(inner ? j->y->numel / inner : 0, 1, tid, nth, &q0, &q1);
    if (q0 < q1)
        permute_rows(j, q0, q1);
}

static void permute_run(const tg_tensor *y, const void *src, void *dst, int mode) {
    const permute_job j = {y, src, dst, mode};
    const int64_t inner = y->rank ? y->shape[y->rank - 1] : 1, rows = inner ? y->numel / inner : 0;
    tg__parallel_run(tg__threads_for_rows(y->numel, rows), permute_job_run, (void *)&j);
}

static tg_status permute_forward(tg_tape *tape, tg_tensor *y) {
    (void)tape;
    permute_run(y, y->inputs[0]->data, y->data, 0);
    return TG_OK;
}

static void permute_backward(const tg_tensor *y, const tg_tensor *dout, tg_tensor *const *din) {
    if (!din[0])
        return; /* the engine decided x needs no gradient */
    /* a fresh dx: every element of x is one of y's, stored once */
    permute_run(y, dout->data, din[0]->data, tg__dx_fresh(din[0]) ? 1 : 2);
}

const tg__op_desc tg__op_permute = {
    .name = "permute",
    .saves = "nothing (it only moves elements)",
    .min_inputs = 1,
    .flags = TG__OP_WRITES_GRAD,
    .max_inputs = 1,
    .params_size = sizeof(permute_params),
    .shape = permute_shape,
    .forward = permute_forward,
    .backward = permute_backward,
    .print_params = permute_print,
    .rule = "dx += dy with the axes put back (the inverse permutation)",
};

tg_tensor *tg_permute_at(tg_tape *t, tg_tensor *x, int n_axes, const int *axes, const char *file,
                         int line) {
    permute_params p = {.n = n_axes};
    if (n_axes > 0 && !axes) {
        if (t && tg_tape_status(t) == TG_OK)
            tg__tape_fail(t, TG_ERR_NULL, file, line, "tg_permute", "the axes array is NULL");
        return NULL;
    }
    if (n_axes > TG_MAX_RANK || n_axes < 0)
        p.n = n_axes; /* the shape check names the count */
    else
        memcpy(p.axes, axes, sizeof(int) * (size_t)n_axes);
    return tg__record(t, &tg__op_permute, &x, 1, &p, file, line);
}

tg_tensor *tg_transpose_axes_at(tg_tape *t, tg_tensor *x, int axis0, int axis1, const char *file,
                                int line) {
    permute_params p = {.n = x && !tg__tensor_stale(x) ? x->rank : 0};
    for (int i = 0; i < p.n; i++)
        p.axes[i] = i;
    const int r = p.n;
    const int a0 = axis0 < 0 ? axis0 + r : axis0, a1 = axis1 < 0 ? axis1 + r : axis1;
    if (a0 < 0 || a0 >= r || a1 < 0 || a1 >= r) {
        /* an axis out of range: record with the offending axis so the check names it */
        if (r > 0)
            p.axes[0] = a0 < 0 || a0 >= r ? axis0 : axis1;
    } else {
        p.axes[a0] = a1;
        p.axes[a1] = a0;
    }
    return tg__record(t, &tg__op_permute, &x, 1, &p, file, line);
}
