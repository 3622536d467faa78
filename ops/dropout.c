/* dropout (inverted): y_i = x_i m_i / (1 - p),  m_i ~ Bernoulli(1 - p)   x [..], y same shape
 *   In training mode the mask is drawn from the caller's rng when the op is recorded: one
 *   tg_rng_uniform u_i per element in row-major order, kept (m_i = 1) when u_i >= p. With p = 0,
 *   or in evaluation mode, y = x and nothing is drawn.
 * y is linear in x:  dx_i += dy_i m_i / (1 - p).
 * Saves the mask, scaled: s_i = m_i / (1 - p), in x's dtype (0 or 1/(1-p)); nothing when y = x. */
#include "core/engine.h"

#include <math.h>

typedef struct dropout_params {
    double p;
    tg_rng *rng;  /* the caller's; read only while the op is recorded */
    int training; /* the tape's mode at recording time */
} dropout_params;

/* tg_rng_next's step (xoshiro256**, src/core/rng.c) on a state s: its next output. */
static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
static inline uint64_t rng_step(uint64_t s[4]) {
    const uint64_t result = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

/* m = u >= thresh ? scale : +0 and y = x m over one block, without a branch (keep or drop is a
 * coin the branch predictor loses a quarter of the time at p = 0.25) and without converting the
 * comparison to a float (cvtsi2ss would chain every element to the one before): scale's bits
 * under an all-ones or all-zeros mask. */
static void keep_block_f32(const uint64_t *u, int len, uint64_t thresh, float scale, const float *x,
                           float *y, float *m) {
    uint32_t scale_bits;
    memcpy(&scale_bits, &scale, sizeof scale_bits);
    for (int k = 0; k < len; k++) {
        const uint32_t bits = (0u - (uint32_t)(u[k] >= thresh)) & scale_bits;
        float mk;
        memcpy(&mk, &bits, sizeof mk);
        m[k] = mk;
        y[k] = x[k] * mk;
    }
}
static void keep_block_f64(const uint64_t *u, int len, uint64_t thresh, double scale,
                           const double *x, double *y, double *m) {
    uint64_t scale_bits;
    memcpy(&scale_bits, &scale, sizeof scale_bits);
    for (int k = 0; k < len; k++) {
        const uint64_t bits = (0u - (uint64_t)(u[k] >= thresh)) & scale_bits;
        double mk;
        memcpy(&mk, &bits, sizeof mk);
        m[k] = mk;
        y[k] = x[k] * mk;
    }
}

static bool dropout_identity(const dropout_params *p) { return !p->training || p->p == 0; }

static tg_status dropout_shape(tg_tensor *y, char *msg, size_t len) {
    const dropout_params *p = y->params;
    if (!(p->p >= 0 && p->p < 1)) {
        snprintf(msg, len, "p is %g; it must be in [0, 1)", p->p);
        return TG_ERR_VALUE;
    }
    if (!dropout_identity(p) && !p->rng) {
        snprintf(msg, len, "rng is NULL; training mode with p %g draws the mask from it", p->p);
        return TG_ERR_NULL;
    }
    return tg__shape_same(y, msg, len);
}

static tg_status dropout_forward(tg_tape *tape, tg_tensor *y) {
    const dropout_params *p = y->params;
    const tg_tensor *x = y->inputs[0];
    if (dropout_identity(p)) {
        memcpy(y->data, x->data, (size_t)y->numel * tg__dtype_size(y->dtype));
        return TG_OK;
    }
    void *mask = tg__tape_alloc_raw(tape, (size_t)y->numel * tg__dtype_size(y->dtype));
    if (!mask)
        return TG_ERR_NOMEM;
    y->saved = mask;
    /* u_i = tg_rng_uniform = (next >> 11) 2^-53 >= p  <=>  next >> 11 >= ceil(p 2^53), exactly
     * (p 2^53 is exact, and next >> 11 an integer); the generator's step inline, on a copy of
     * the state written back at the end: the same draws as numel calls of tg_rng_uniform. */
    const uint64_t thresh = (uint64_t)ceil(p->p * 0x1p53);
    uint64_t st[4];
    memcpy(st, p->rng->s, sizeof st);
    /* In blocks: first the block's draws alone (the generator's chain of dependent steps is
     * then all that loop waits on), then the mask and y from them (keep_block). */
    enum { DRAWS = 256 };
    uint64_t u[DRAWS];
    const double scale = 1.0 / (1.0 - p->p);
    for (int64_t i0 = 0; i0 < y->numel; i0 += DRAWS) {
        const int len = (int)(y->numel - i0 < DRAWS ? y->numel - i0 : DRAWS);
        for (int k = 0; k < len; k++)
            u[k] = rng_step(st) >> 11;
        if (y->dtype == TG_F32)
            keep_block_f32(u, len, thresh, (float)scale, (const float *)x->data + i0,
                           (float *)y->data + i0, (float *)mask + i0);
        else
            keep_block_f64(u, len, thresh, scale, (const double *)x->data + i0,
                           (double *)y->data + i0, (double *)mask + i0);
    }
    memcpy(p->rng->s, st, sizeof st);
    return TG_OK;
}

static void dropout_backward(const tg_tensor *y, const tg_tensor *dout, tg_tensor *const *din) {
    if (!din[0])
        return;
    TG_FOR_DTYPE(y->dtype, T, const T *dy = dout->data; T *dx = din[0]->data;
                 const T *m = y->saved; if (m && tg__dx_fresh(din[0])) {
                     for (int64_t i = 0; i < y->numel; i++)
                         dx[i] = dy[i] * m[i];
                 } else if (m) {
                     for (int64_t i = 0; i < y->numel; i++)
                         dx[i] += dy[i] * m[i];
                 } else if (tg__dx_fresh(din[0])) {
                     for (int64_t i = 0; i < y->numel; i++)
                         dx[i] = dy[i];
                 } else {
                     for (int64_t i = 0; i < y->numel; i++)
                         dx[i] += dy[i];
                 });
}

static int dropout_print(const tg_tensor *y, char *buf, size_t len) {
    const dropout_params *p = y->params;
    return snprintf(buf, len, "p=%g%s", p->p, p->training ? "" : ", evaluation (identity)");
}

/* s = m / (1 - p), y's shape: the mask backward multiplies by. */
static int dropout_saved_views(const tg_tensor *y, tg__saved_view *views, int max) {
    if (max < 1 || !y->saved)
        return 0;
    views[0] =
        tg__view("s", "the mask m / (1 - p): 0 or 1/(1-p)", y->dtype, y->rank, y->shape, y->saved);
    return 1;
}

const tg__op_desc tg__op_dropout = {
    .name = "dropout",
    .saves = "the mask s = m / (1 - p) (nothing in evaluation mode or with p = 0)",
    .min_inputs = 1,
    .flags = TG__OP_WRITES_GRAD,
    .max_inputs = 1,
    .params_size = sizeof(dropout_params),
    .shape = dropout_shape,
    .forward = dropout_forward,
    .backward = dropout_backward,
    .print_params = dropout_print,
    .saved_views = dropout_saved_views,
    .rule = "dx += dy * s, s = m / (1 - p) the saved mask",
};

tg_tensor *tg_dropout_at(tg_tape *t, tg_tensor *x, double p, tg_rng *rng, const char *file,
                         int line) {
    const dropout_params prm = {.p = p, .rng = rng, .training = tg_tape_training(t)};
    return tg__record(t, &tg__op_dropout, &x, 1, &prm, file, line);
}
