/* softmax_cross_entropy: L = (1/N) sum_n sum_c t_nc (lse_n - z_nc),  lse_n = log sum_c e^(z_nc)
 *   logits z [N,C]; targets t either class indices [N] (i32: t_nc = 1 if c == index) or
 *   probability rows [N,C]; L [] (rank 0). This is mean_n of -sum_c t_nc log softmax(z_n)_c.
 * dL/dz_nc = (p_nc sum_c' t_nc' - t_nc) / N, with p = softmax(z); for rows that sum to 1 this is
 *   the report's (y^ - y), divided by N for the batch mean.
 * dL/dt_nc = (lse_n - z_nc) / N = -log p_nc / N  (when the targets themselves need a gradient).
 * Fused because it is stabler: lse is computed around the row max, so logits of 1e4 are fine.
 * Saves the probabilities p [N,C], each row's max and log-sum; backward recomputes no
 * exponential. */
#include "kernels/parallel.h"

#include <tgmath.h>

typedef struct sce_saved {
    void *prob;     /* [N,C], logits' dtype */
    double *max;    /* [N] each row's largest logit m_n */
    double *logsum; /* [N] log sum_c e^(z_nc - m_n); lse_n = m_n + logsum_n */
} sce_saved;

static tg_status sce_shape(tg_tensor *y, char *msg, size_t len) {
    const tg_tensor *z = y->inputs[0], *t = y->inputs[1];
    char s1[TG_SHAPE_STR_LEN], s2[TG_SHAPE_STR_LEN];
    if (z->rank != 2) {
        snprintf(msg, len, "logits must be [N,C], got %s", tg__shape_str(z, s1, sizeof s1));
        return TG_ERR_SHAPE;
    }
    const int64_t N = z->shape[0], C = z->shape[1];
    if (C == 0) { /* a softmax over no classes: no row max, no probabilities */
        snprintf(msg, len, "logits %s have no classes", tg__shape_str(z, s1, sizeof s1));
        return TG_ERR_SHAPE;
    }
    if (t->dtype == TG_I32) {
        if (t->rank != 1 || t->shape[0] != N) {
            snprintf(msg, len, "class-index targets must be [%lld] for logits %s, got %s",
                     (long long)N, tg__shape_str(z, s1, sizeof s1),
                     tg__shape_str(t, s2, sizeof s2));
            return TG_ERR_SHAPE;
        }
        const int32_t *idx = t->data;
        /* One branch-free pass, then the first bad index for the message. The pass compares
         * 32-bit integers (the baseline's vector instructions have no 64-bit compare), with C
         * capped at INT32_MAX: no index is larger. */
        const int32_t last = C > INT32_MAX ? INT32_MAX : (int32_t)(C - 1);
        int32_t lo = 0, hi = 0;
        for (int64_t n = 0; n < N; n++) {
            lo = idx[n] < lo ? idx[n] : lo;
            hi = idx[n] > hi ? idx[n] : hi;
        }
        const bool any_bad = lo < 0 || hi > last;
        for (int64_t n = 0; any_bad && n < N; n++)
            if (idx[n] < 0 || idx[n] >= C) {
                snprintf(msg, len, "class index %d in row %lld is out of range 0..%lld",
                         (int)idx[n], (long long)n, (long long)C - 1);
                return TG_ERR_VALUE;
            }
    } else if (t->rank != 2 || t->shape[0] != N || t->shape[1] != C) {
        snprintf(msg, len, "probability targets must have the logits' shape %s, got %s",
                 tg__shape_str(z, s1, sizeof s1), tg__shape_str(t, s2, sizeof s2));
        return TG_ERR_SHAPE;
    }
    if (N == 0) {
        snprintf(msg, len, "the batch is empty (logits %s)", tg__shape_str(z, s1, sizeof s1));
        return TG_ERR_SHAPE;
    }
    y->rank = 0;
    return TG_OK;
}

/* float32, a block of rows at a time: z - m into p, e^ of the block with the vector exp
 * (src/kernels/vmath.c), each row's sum s (in column order), log s of the block's sums with the
 * vector log, then p /= s by 1/s and the loss terms, as in the generic loop below. */
enum { SCE_BLOCK = 1024, SCE_ROWS = 256 }; /* elements and rows per block, about */

/* Inlined twice: for two classes (the course's circles) with C a constant, so that the loops
 * over a row are unrolled, and for any C. */
static inline __attribute__((always_inline)) double
sce_forward_f32_c(const float *pz, const float *pt, const int32_t *idx, float *p, sce_saved *sv,
                  int64_t N, int64_t C) {
    const int64_t cap = C < SCE_BLOCK ? SCE_BLOCK / C : 1;
    const int64_t step = cap < SCE_ROWS ? cap : SCE_ROWS;
    float s[SCE_ROWS], ls[SCE_ROWS];
    double loss = 0;
    for (int64_t b = 0; b < N; b += step) {
        const int64_t e = N - b < step ? N : b + step;
        for (int64_t n = b; n < e; n++) {
            const float *zr = pz + n * C;
            float *pr = p + n * C;
            float m = zr[0];
            for (int64_t c = 1; c < C; c++)
                m = zr[c] > m ? zr[c] : m;
            for (int64_t c = 0; c < C; c++)
                pr[c] = zr[c] - m;
            sv->max[n] = (double)m;
        }
        tg__exp_f32(p + b * C, p + b * C, (e - b) * C);
        for (int64_t n = b; n < e; n++) {
            const float *pr = p + n * C;
            float sum = 0;
            for (int64_t c = 0; c < C; c++)
                sum += pr[c];
            s[n - b] = sum;
        }
        tg__log_f32(s, ls, e - b);
        for (int64_t n = b; n < e; n++) {
            const float *zr = pz + n * C;
            float *pr = p + n * C;
            const double l = (double)ls[n - b], m = sv->max[n];
            sv->logsum[n] = l;
            const float inv_s = 1 / s[n - b];
            for (int64_t c = 0; c < C; c++)
                pr[c] *= inv_s;
            if (idx)
                loss += (m - (double)zr[idx[n]]) + l;
            else
                for (int64_t c = 0; c < C; c++)
                    /* pt is the targets whenever idx is NULL (analyzer false positive) */
                    /* NOLINTNEXTLINE(clang-analyzer-core.NullDereference) */
                    loss += (double)pt[n * C + c] * ((m - (double)zr[c]) + l);
        }
    }
    return loss;
}

/* Two classes with class-index targets (the course's circles): the same operations in the same
 * order as sce_forward_f32_c, written as loops over the rows of a block with nothing left to do
 * within a row, so that the compiler vectorizes them across rows; compiled twice, for the
 * baseline and for AVX-512. The loss terms are summed in row order afterwards, as above. */
#define SCE2_F32(sfx, attr)                                                                        \
    attr static double sce2_forward_f32_##sfx(                                                     \
        const float *restrict pz, const int32_t *restrict idx, float *restrict p,                  \
        double *restrict rmax, double *restrict rlogsum, int64_t N) {                              \
        float s[SCE_ROWS], ls[SCE_ROWS];                                                           \
        double term[SCE_ROWS], loss = 0;                                                           \
        for (int64_t b = 0; b < N; b += SCE_ROWS) {                                                \
            const int64_t e = N - b < SCE_ROWS ? N : b + SCE_ROWS;                                 \
            for (int64_t n = b; n < e; n++) {                                                      \
                const float z0 = pz[2 * n], z1 = pz[2 * n + 1], m = z1 > z0 ? z1 : z0;             \
                p[2 * n] = z0 - m;                                                                 \
                p[2 * n + 1] = z1 - m;                                                             \
                rmax[n] = (double)m;                                                               \
            }                                                                                      \
            tg__exp_f32(p + 2 * b, p + 2 * b, 2 * (e - b));                                        \
            for (int64_t n = b; n < e; n++) /* (0 + e0) + e1 above: 0 + e0 is e0 */                \
                s[n - b] = p[2 * n] + p[2 * n + 1];                                                \
            tg__log_f32(s, ls, e - b);                                                             \
            for (int64_t n = b; n < e; n++) {                                                      \
                const float z0 = pz[2 * n], z1 = pz[2 * n + 1], inv_s = 1 / s[n - b];              \
                const float zt = idx[n] ? z1 : z0; /* both loaded: a blend, not a branch */        \
                const double l = (double)ls[n - b];                                                \
                rlogsum[n] = l;                                                                    \
                p[2 * n] *= inv_s;                                                                 \
                p[2 * n + 1] *= inv_s;                                                             \
                term[n - b] = (rmax[n] - (double)zt) + l;                                          \
            }                                                                                      \
            /* eight partial sums, then those in order: a fixed order (the float loss it rounds \
             * to is, but for ties, the row-order sum's), without a chain of dependent adds */  \
            double part[8] = {0};                                                                  \
            int64_t n = b;                                                                         \
            for (; n + 8 <= e; n += 8)                                                             \
                for (int k = 0; k < 8; k++)                                                        \
                    part[k] += term[n - b + k];                                                    \
            for (; n < e; n++)                                                                     \
                part[0] += term[n - b];                                                            \
            for (int k = 0; k < 8; k++)                                                            \
                loss += part[k];                                                                   \
        }                                                                                          \
        return loss;                                                                               \
    }
SCE2_F32(base, )
#if defined(__x86_64__)
SCE2_F32(wide, __attribute__((target("avx512f"))))
#endif

static double sce_forward_f32(const float *pz, const float *pt, const int32_t *idx, float *p,
                              sce_saved *sv, int64_t N, int64_t C) {
    if (C == 2 && idx) {
#if defined(__x86_64__)
        if (tg__have_avx512())
            return sce2_forward_f32_wide(pz, idx, p, sv->max, sv->logsum, N);
#endif
        return sce2_forward_f32_base(pz, idx, p, sv->max, sv->logsum, N);
    }
    if (C == 2)
        return sce_forward_f32_c(pz, pt, idx, p, sv, N, 2);
    return sce_forward_f32_c(pz, pt, idx, p, sv, N, C);
}

static tg_status sce_forward(tg_tape *tape, tg_tensor *y) {
    const tg_tensor *z = y->inputs[0], *t = y->inputs[1];
    const int64_t N = z->shape[0], C = z->shape[1];
    sce_saved *sv = tg__tape_alloc(tape, sizeof *sv);
    void *prob = sv ? tg__tape_alloc_raw(tape, (size_t)(N * C) * tg__dtype_size(z->dtype)) : NULL;
    double *rmax = prob ? tg__tape_alloc_raw(tape, 2 * (size_t)N * sizeof(double)) : NULL;
    if (!rmax)
        return TG_ERR_NOMEM;
    sv->prob = prob;
    sv->max = rmax;
    sv->logsum = rmax + N;
    y->saved = sv;
    const int32_t *idx = t->dtype == TG_I32 ? t->data : NULL;
    if (y->dtype == TG_F32) {
        const double loss = sce_forward_f32(z->data, idx ? NULL : t->data, idx, prob, sv, N, C);
        *(float *)y->data = (float)(loss / (double)N);
        return TG_OK;
    }
    TG_FOR_DTYPE(y->dtype, T, const T *pz = z->data; const T *pt = idx ? NULL : t->data;
                 T *p = prob; double loss = 0;
                 for (int64_t n = 0; n < N; n++) {
                     const T *zr = pz + n * C;
                     T *pr = p + n * C;
                     /* In the logits' precision (expf/logf for f32: p is stored as T
                      * anyway, and they cost half of exp/log); the loss sums in double. */
                     T m = zr[0];
                     for (int64_t c = 1; c < C; c++) m = zr[c] > m ? zr[c] : m;
                     /* e_c = e^(z_c - m) once: kept in pr, then p_c = e_c / s */
                     T s = 0;
                     for (int64_t c = 0; c < C; c++) {
                         const T e = exp(zr[c] - m);
                         pr[c] = e;
                         s += e;
                     }
                     const double ls = (double)log(s);
                     rmax[n] = (double)m;
                     sv->logsum[n] = ls;
                     const T inv_s = 1 / s;
                     for (int64_t c = 0; c < C; c++) pr[c] *= inv_s;
                     /* -log p_c = (m - z_c) + log s, in that order: m - z_c is exact in double,
                      * while (m + log s) - z_c loses log s for |m| >> 1 (three logits of -1e30
                      * would give 0 instead of ln 3). */
                     if (idx)
                         loss += ((double)m - (double)zr[idx[n]]) + ls;
                     else
                         for (int64_t c = 0; c < C; c++)
                             /* pt = t->data whenever idx is NULL (analyzer false positive) */
                             /* NOLINTNEXTLINE(clang-analyzer-core.NullDereference) */
                             loss += (double)pt[n * C + c] * (((double)m - (double)zr[c]) + ls);
                 }
                 *(T *)y->data = (T)(loss / (double)N););
    return TG_OK;
}

static void sce_backward(const tg_tensor *y, const tg_tensor *dout, tg_tensor *const *din) {
    const tg_tensor *z = y->inputs[0], *t = y->inputs[1];
    const int64_t N = z->shape[0], C = z->shape[1];
    const sce_saved *sv = y->saved;
    const int32_t *idx = t->dtype == TG_I32 ? t->data : NULL;
    if (y->dtype == TG_F32 && idx && din[0]) {
        /* class indices: dz += g p over the whole [N,C] at once, then dz[n, idx_n] -= g (the
         * same two operations on each element as the row loop below) */
        const float g = *(const float *)dout->data / (float)N;
        const float *restrict p = sv->prob;
        float *restrict dz = din[0]->data;
        if (tg__dx_fresh(din[0])) {
            for (int64_t i = 0; i < N * C; i++)
                dz[i] = g * p[i];
        } else {
            for (int64_t i = 0; i < N * C; i++)
                dz[i] += g * p[i];
        }
        for (int64_t n = 0; n < N; n++)
            dz[n * C + idx[n]] -= g;
        return;
    }
    tg__dx_zero_if_fresh(din[0]); /* the row loops below add */
    tg__dx_zero_if_fresh(din[1]);
    TG_FOR_DTYPE(y->dtype, T, const T g = *(const T *)dout->data / (T)N;
                 const T *p = sv->prob; const T *pt = idx ? NULL : t->data;
                 T *dz = din[0] ? din[0]->data : NULL;
                 T *dt = (!idx && din[1]) ? din[1]->data : NULL;
                 for (int64_t n = 0; n < N; n++) {
                     if (dz) {
                         if (idx) {
                             for (int64_t c = 0; c < C; c++) dz[n * C + c] += g * p[n * C + c];
                             dz[n * C + idx[n]] -= g;
                         } else {
                             T tsum = 0;
                             /* pt = t->data whenever idx is NULL (analyzer false positive) */
                             /* NOLINTNEXTLINE(clang-analyzer-core.NullDereference) */
                             for (int64_t c = 0; c < C; c++) tsum += pt[n * C + c];
                             for (int64_t c = 0; c < C; c++)
                                 dz[n * C + c] += g * (p[n * C + c] * tsum - pt[n * C + c]);
                         }
                     }
                     if (dt) {
                         const T *zr = (const T *)z->data + n * C;
                         for (int64_t c = 0; c < C; c++)
                             dt[n * C + c] +=
                                 g * (T)((sv->max[n] - (double)zr[c]) + sv->logsum[n]);
                     }
                 });
}

/* p = softmax(z), [N,C]: what backward reads, shown by the trace and the page. */
static int sce_saved_views(const tg_tensor *y, tg__saved_view *views, int max) {
    const tg_tensor *z = y->inputs[0];
    if (max < 1 || !y->saved)
        return 0;
    views[0] = tg__view("p", "the prediction, y^ in the usual notation", z->dtype, 2, z->shape,
                        ((const sce_saved *)y->saved)->prob);
    return 1;
}

const tg__op_desc tg__op_softmax_cross_entropy = {
    .name = "softmax_cross_entropy",
    .saves = "the probabilities p = softmax(z) and each row's log-sum-exp",
    .min_inputs = 2,
    .flags = TG__OP_WRITES_GRAD,
    .max_inputs = 2,
    .index_inputs = 1u << 1, /* the targets may be class indices */
    .shape = sce_shape,
    .saved_views = sce_saved_views,
    .forward = sce_forward,
    .backward = sce_backward,
    .rule = "dz += dL * (p - t) / N with p = softmax(z)",
};

tg_tensor *tg_softmax_cross_entropy_at(tg_tape *t, tg_tensor *logits, tg_tensor *targets,
                                       const char *file, int line) {
    tg_tensor *in[2] = {logits, targets};
    return tg__record(t, &tg__op_softmax_cross_entropy, in, 2, NULL, file, line);
}
