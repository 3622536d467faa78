/* dropout (inverted): y_i = x_i m_i / (1 - p),  m_i ~ Bernoulli(1 - p)   x [..], y same shape
 *   In training mode the mask is drawn when the op is recorded: one tg_rng_next from the caller's
 *   rng is the key k, and element i (row-major) draws u_i = (splitmix64_i(k) >> 11) 2^-53, the
 *   i-th output of the SplitMix64 generator seeded with k; it is kept (m_i = 1) when u_i >= p.
 *   Counter-based: element i's draw depends on k and i alone, so the mask is split over threads
 *   and vectorized and is the same for any thread count. With p = 0, or in evaluation mode,
 *   y = x and nothing is drawn.
 * y is linear in x:  dx_i += dy_i m_i / (1 - p).
 * Saves the mask, scaled: s_i = m_i / (1 - p), in x's dtype (0 or 1/(1-p)); nothing when y = x. */
#include "core/engine.h"
#include "kernels/conv.h" /* tg__conv_wide_simd_in_use */
#include "kernels/parallel.h"

#include <math.h>
#include <stdatomic.h>

typedef struct dropout_params {
    double p;
    tg_rng *rng;  /* the caller's; read only while the op is recorded */
    int training; /* the tape's mode at recording time */
} dropout_params;

/* SplitMix64 (Steele, Lea and Flood 2014; the generator Vigna recommends for seeding xoshiro):
 * output i of the stream seeded with k is the finalizer of k + (i + 1) gamma. Only adds, shifts,
 * xors and 64-bit multiplies, with no state carried from one element to the next. */
#define SPLITMIX_GAMMA UINT64_C(0x9E3779B97F4A7C15)
static inline uint64_t splitmix64_at(uint64_t key, uint64_t i) {
    uint64_t z = key + (i + 1) * SPLITMIX_GAMMA;
    z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
    return z ^ (z >> 31);
}

/* Elements [i0, i1): s_i = u_i >= thresh ? scale : +0 and y_i = x_i s_i, without a branch (keep
 * or drop is a coin the branch predictor loses a quarter of the time at p = 0.25) and without
 * converting the comparison to a float: scale's bits under an all-ones or all-zeros mask. Written
 * once per dtype and built twice, for the baseline ISA and for AVX-512 with its 64-bit multiply
 * (AVX512DQ's vpmullq: eight draws a vector, where AVX512F alone takes three multiplies for one),
 * chosen at run time; both builds give the same bits (integer arithmetic and one multiply by 0
 * or scale). */
#define KEEP_LOOP(name, T, U, attr)                                                                \
    attr static void name(uint64_t key, int64_t i0, int64_t i1, uint64_t thresh, U scale_bits,     \
                          const T *restrict x, T *restrict y, T *restrict s) {                     \
        for (int64_t i = i0; i < i1; i++) {                                                        \
            const uint64_t u = splitmix64_at(key, (uint64_t)i) >> 11;                              \
            const U bits = ((U)0 - (U)(u >= thresh)) & scale_bits;                                 \
            T si;                                                                                  \
            memcpy(&si, &bits, sizeof si);                                                         \
            s[i] = si;                                                                             \
            y[i] = x[i] * si;                                                                      \
        }                                                                                          \
    }
#define DROPOUT_LOOPS(sfx, attr)                                                                   \
    KEEP_LOOP(keep_f32_##sfx, float, uint32_t, attr)                                               \
    KEEP_LOOP(keep_f64_##sfx, double, uint64_t, attr)
DROPOUT_LOOPS(base, )
#if defined(__x86_64__)
DROPOUT_LOOPS(wide, __attribute__((target("avx512f,avx512dq"))))
#endif

static bool dropout_wide(void) {
#if defined(__x86_64__)
    static atomic_int have_dq = -1; /* every thread computes the same value */
    int dq = atomic_load_explicit(&have_dq, memory_order_relaxed);
    if (dq < 0) {
        __builtin_cpu_init();
        dq = __builtin_cpu_supports("avx512dq");
        atomic_store_explicit(&have_dq, dq, memory_order_relaxed);
    }
    return dq && tg__conv_wide_simd_in_use();
#else
    return false;
#endif
}

typedef struct dropout_job {
    tg_tensor *y;
    uint64_t key, thresh;
    double scale;
} dropout_job;

/* keep_<dt> of the build in use: the AVX-512 one where dropout_wide() says so */
#if defined(__x86_64__)
#define KEEP(dt, ...) (wide ? keep_##dt##_wide(__VA_ARGS__) : keep_##dt##_base(__VA_ARGS__))
#else
#define KEEP(dt, ...) keep_##dt##_base(__VA_ARGS__)
#endif

static void dropout_forward_range(void *ctx, int64_t i0, int64_t i1) {
    const dropout_job *job = ctx;
    const tg_tensor *y = job->y, *x = y->inputs[0];
    const bool wide = dropout_wide();
    if (y->dtype == TG_F32) {
        const float scale = (float)job->scale;
        uint32_t bits;
        memcpy(&bits, &scale, sizeof bits);
        KEEP(f32, job->key, i0, i1, job->thresh, bits, x->data, y->data, y->saved);
    } else {
        uint64_t bits;
        memcpy(&bits, &job->scale, sizeof bits);
        KEEP(f64, job->key, i0, i1, job->thresh, bits, x->data, y->data, y->saved);
    }
    (void)wide;
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
    /* u_i >= p  <=>  (z_i >> 11) >= ceil(p 2^53), exactly (p 2^53 is exact, z_i >> 11 an
     * integer below 2^53, so the threshold is at most 2^53 and p = 0 keeps everything). */
    dropout_job job = {.y = y,
                       .key = tg_rng_next(p->rng),
                       .thresh = (uint64_t)ceil(p->p * 0x1p53),
                       .scale = 1.0 / (1.0 - p->p)};
    tg__parallel_range(y->numel, TG_PAR_MIN_ELEMS, dropout_forward_range, &job);
    return TG_OK;
}

/* dx (+)= dy s, or dy where nothing was saved; elements independent, split over threads. */
static void dropout_backward_range(void *ctx, int64_t i0, int64_t i1) {
    const tg__backward_args *g = ctx;
    const bool fresh = tg__dx_fresh(g->din[0]);
    TG_FOR_DTYPE(g->y->dtype, T, const T *dy = g->dout->data; T *dx = g->din[0]->data;
                 const T *s = g->y->saved; if (s && fresh) {
                     for (int64_t i = i0; i < i1; i++)
                         dx[i] = dy[i] * s[i];
                 } else if (s) {
                     for (int64_t i = i0; i < i1; i++)
                         dx[i] += dy[i] * s[i];
                 } else if (fresh) {
                     for (int64_t i = i0; i < i1; i++)
                         dx[i] = dy[i];
                 } else {
                     for (int64_t i = i0; i < i1; i++)
                         dx[i] += dy[i];
                 });
}

static void dropout_backward(const tg_tensor *y, const tg_tensor *dout, tg_tensor *const *din) {
    if (!din[0])
        return;
    tg__backward_args g = {y, dout, din};
    tg__parallel_range(y->numel, TG_PAR_MIN_ELEMS, dropout_backward_range, &g);
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
