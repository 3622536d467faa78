/* conv.c -- kernels of the convolutional ops: conv2d (lowered onto tg_gemm), max/avg pooling and
 * batch norm, float32 and float64, PyTorch's conventions (see conv.h for the contracts).
 *
 * conv2d as GEMMs. For one image n and one group g, im2col lays the input windows out as
 *   col [Cg*R*S, OH*OW],  col[(c*R + r)*S + s][oh*OW + ow] = x[n, g*Cg + c, ih, iw] (0 if padded)
 * with ih = oh*sh - ph + r*dh, iw = ow*sw - pw + s*dw. Then, with W_g = w[g*Kg.., :] as a
 * [Kg, Cg*R*S] matrix and dY_g = dy[n, g*Kg.., :] as [Kg, OH*OW]:
 *   forward  y[n, g*Kg..]  = W_g col                  (M = Kg,     N = OH*OW, K = Cg*R*S)
 *   dx       dcol          = W_g^T dY_g, col2im'ed   (M = Cg*R*S, N = OH*OW, K = Kg)
 *   dw       dW_g^T       += col dY_g^T, over images (M = Cg*R*S, N = Kg,    K = OH*OW each)
 * A 1x1 convolution with stride 1, no padding (any dilation) has col = x: no copy.
 *
 * Threads and determinism. The passes run image by image, each thread with its own col in the
 * workspace and its GEMMs on that thread alone (tg_gemm runs single-threaded inside a job), so
 * every per-image product is the same call whatever the split. The forward and dx split the
 * images over threads freely: no image's result depends on another's. dw and db sum over
 * images, so the batch is cut into TG_CONV_PARTS partitions fixed by N alone; each partition's
 * sums are taken image after image (tg_gemm with beta 1 adds to the stored sum, one multiply-add
 * per term in increasing order) by whichever thread owns the partition, and the partial sums are
 * added in partition order at the end. Pooling and batch norm split over planes or channels,
 * each summed on one thread in a fixed order. */
#include "conv.h"

#include "parallel.h"

#include <math.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif
#if defined(__x86_64__)
#include <immintrin.h>
#endif

/* Wide SIMD. The float32 batch-norm and 2x2-pool kernels are written once (TG_BODY: inlined
 * into each caller) and built twice: for the baseline ISA and, on x86-64, for AVX-512 (wider
 * vectors for the same arithmetic), chosen at run time. Their sums keep 16 explicit lanes and no
 * multiply-add is fused (gcc in ISO C mode does not contract; clang is told not to), so both
 * builds give the same bits. */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif
#define TG_BODY static inline __attribute__((always_inline))
#if defined(__x86_64__)
#define TG_WIDE_SIMD 1
#define TG_WIDE __attribute__((target("avx512f")))
#else
#define TG_WIDE_SIMD 0
#endif

/* -1: not yet known; 0 or 1 (every thread computes the same value) */
static atomic_int wide_simd = -1;

static bool use_wide(void) {
    int w = atomic_load_explicit(&wide_simd, memory_order_relaxed);
    if (w < 0) {
        w = TG_WIDE_SIMD && tg__kernel_available(TG_KERNEL_AVX512);
        atomic_store_explicit(&wide_simd, w, memory_order_relaxed);
    }
    return w;
}

size_t tg__stream_min_bytes(void) {
    static atomic_size_t min_bytes; /* 0: not yet known (every thread computes the same value) */
    size_t b = atomic_load_explicit(&min_bytes, memory_order_relaxed);
    if (b == 0) {
        int64_t cs[3];
        tg__gemm_cache_sizes(cs);
        b = cs[1] > 0 ? 2 * (size_t)cs[1] : (size_t)4 << 20;
        atomic_store_explicit(&min_bytes, b, memory_order_relaxed);
    }
    return b;
}

/* After streaming stores: ordered before what follows (the job's end, another thread's read). */
static void stream_fence(bool streamed) {
#if defined(__SSE2__)
    if (streamed)
        _mm_sfence();
#else
    (void)streamed;
#endif
}

bool tg__conv_wide_simd_in_use(void) { return use_wide(); }

int tg__conv_wide_simd(int on) {
    const int was = use_wide();
    atomic_store_explicit(&wide_simd, on && TG_WIDE_SIMD && tg__kernel_available(TG_KERNEL_AVX512),
                          memory_order_relaxed);
    return was;
}

/* ---- Small helpers ---- */

static const char *shape_str(char *buf, size_t len, int rank, const int64_t *shape) {
    size_t n = 0;
    buf[0] = '\0';
    n += (size_t)snprintf(buf + n, len - n, "[");
    for (int i = 0; i < rank && n < len; i++)
        n += (size_t)snprintf(buf + n, len - n, i ? ",%lld" : "%lld", (long long)shape[i]);
    if (n < len)
        snprintf(buf + n, len - n, "]");
    return buf;
}

static tg_status fail(tg_status st, char *msg, size_t msg_len, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static tg_status fail(tg_status st, char *msg, size_t msg_len, const char *fmt, ...) {
    if (msg && msg_len) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, msg_len, fmt, ap);
        va_end(ap);
    }
    return st;
}

/* a * b, or -1 if it exceeds the bound we allow for element counts (2^56, far beyond memory). */
static int64_t mul_cap(int64_t a, int64_t b) {
    int64_t r;
    if (a < 0 || b < 0 || __builtin_mul_overflow(a, b, &r) || r > ((int64_t)1 << 56))
        return -1;
    return r;
}

static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
static int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

/* out += the sum of `expr` for q in [0, n), in 8 interleaved partial sums (independent chains
 * of adds, which the compiler vectorizes, instead of one chain at an add's latency) combined in
 * a fixed order: the result depends on n only. */
#define LANE_SUM(n, q, out, expr)                                                                  \
    do {                                                                                           \
        double acc_[8] = {0, 0, 0, 0, 0, 0, 0, 0};                                                 \
        int64_t q = 0;                                                                             \
        for (; q + 8 <= (n); q += 8) {                                                             \
            const int64_t q0_ = q;                                                                 \
            for (int l_ = 0; l_ < 8; l_++) {                                                       \
                q = q0_ + l_;                                                                      \
                acc_[l_] += (expr);                                                                \
            }                                                                                      \
            q = q0_;                                                                               \
        }                                                                                          \
        for (; q < (n); q++)                                                                       \
            acc_[0] += (expr);                                                                     \
        (out) += ((acc_[0] + acc_[1]) + (acc_[2] + acc_[3])) +                                     \
                 ((acc_[4] + acc_[5]) + (acc_[6] + acc_[7]));                                      \
    } while (0)

/* ---- Float32 sums in float lanes ----
 * An f32 sum that vectorizes and stays accurate: the run is cut into chunks of at most SUM_CHUNK
 * values, each chunk summed in 16 float lanes (at most 64 values a lane), the lanes added in
 * double, the chunks in double. The order depends on n alone. */
typedef float v4f __attribute__((vector_size(16)));
#define SUM_CHUNK 1024

/* v = the 4 floats at p (unaligned; a macro: a vector value crossing a call changes the ABI) */
#define V4_LOAD(v, p) memcpy(&(v), (p), sizeof(v))

/* The 16 lanes, in 4 vectors of 4 (SSE registers in the baseline build), then the tail values
 * of the chunk added to lanes 0, 1, ..: all 16 summed in double. */
TG_BODY double lanes_sum(const v4f acc[4]) {
    float l[16];
    /* acc is 4 vectors of 4 floats, 64 bytes: the analyzer takes it for one element */
    // cppcheck-suppress bufferAccessOutOfBounds
    memcpy(l, acc, sizeof l);
    double s = 0;
    for (int i = 0; i < 16; i++)
        s += (double)l[i];
    return s;
}

/* s1 += sum over x[0..n) of x - mu, and (if s2) s2 += sum of (x - mu)^2. */
TG_BODY void sums_f32(const float *x, int64_t n, float mu, double *s1, double *s2) {
    const v4f vmu = {mu, mu, mu, mu};
    for (int64_t c0 = 0; c0 < n; c0 += SUM_CHUNK) {
        const int64_t len = min64(SUM_CHUNK, n - c0);
        const float *p = x + c0;
        v4f a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0}, b0 = {0}, b1 = {0}, b2 = {0}, b3 = {0};
        int64_t i = 0;
        for (; i + 16 <= len; i += 16) {
            v4f d0, d1, d2, d3;
            V4_LOAD(d0, p + i);
            V4_LOAD(d1, p + i + 4);
            V4_LOAD(d2, p + i + 8);
            V4_LOAD(d3, p + i + 12);
            d0 -= vmu, d1 -= vmu, d2 -= vmu, d3 -= vmu;
            a0 += d0, a1 += d1, a2 += d2, a3 += d3;
            b0 += d0 * d0, b1 += d1 * d1, b2 += d2 * d2, b3 += d3 * d3;
        }
        v4f a[4] = {a0, a1, a2, a3}, b[4] = {b0, b1, b2, b3};
        for (int l = 0; i < len; i++, l++) {
            const float d = p[i] - mu;
            a[l / 4][l % 4] += d;
            b[l / 4][l % 4] += d * d;
        }
        *s1 += lanes_sum(a);
        if (s2)
            *s2 += lanes_sum(b);
    }
}

/* sdy += sum dy, sdyd += sum dy (x - mu), over [0, n). */
TG_BODY void dsums_f32(const float *x, const float *dy, int64_t n, float mu, double *sdy,
                       double *sdyd) {
    const v4f vmu = {mu, mu, mu, mu};
    for (int64_t c0 = 0; c0 < n; c0 += SUM_CHUNK) {
        const int64_t len = min64(SUM_CHUNK, n - c0);
        const float *px = x + c0, *pd = dy + c0;
        v4f a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0}, b0 = {0}, b1 = {0}, b2 = {0}, b3 = {0};
        int64_t i = 0;
        for (; i + 16 <= len; i += 16) {
            v4f g0, g1, g2, g3, v0, v1, v2, v3;
            V4_LOAD(g0, pd + i);
            V4_LOAD(g1, pd + i + 4);
            V4_LOAD(g2, pd + i + 8);
            V4_LOAD(g3, pd + i + 12);
            V4_LOAD(v0, px + i);
            V4_LOAD(v1, px + i + 4);
            V4_LOAD(v2, px + i + 8);
            V4_LOAD(v3, px + i + 12);
            a0 += g0, a1 += g1, a2 += g2, a3 += g3;
            b0 += g0 * (v0 - vmu), b1 += g1 * (v1 - vmu);
            b2 += g2 * (v2 - vmu), b3 += g3 * (v3 - vmu);
        }
        v4f a[4] = {a0, a1, a2, a3}, b[4] = {b0, b1, b2, b3};
        for (int l = 0; i < len; i++, l++) {
            a[l / 4][l % 4] += pd[i];
            b[l / 4][l % 4] += pd[i] * (px[i] - mu);
        }
        *sdy += lanes_sum(a);
        *sdyd += lanes_sum(b);
    }
}

/* Runs body(ctx, i0, i1) over [0, n) items, on several threads when `work` (elements touched)
 * is worth a wake-up. Items must be independent: the result cannot depend on the split. */
typedef struct items_job {
    int64_t n;
    tg__range_fn body;
    void *ctx;
} items_job;

static void items_run(void *p, int tid, int nth) {
    const items_job *j = p;
    int64_t b, e;
    tg__split(j->n, 1, tid, nth, &b, &e);
    if (b < e)
        j->body(j->ctx, b, e);
}

static void parallel_items(int64_t n, int64_t work, tg__range_fn body, void *ctx) {
    if (n <= 0)
        return;
    const int avail = tg_get_num_threads();
    if (avail <= 1 || n == 1 || work < TG_PAR_MIN_ELEMS) {
        body(ctx, 0, n);
        return;
    }
    items_job j = {n, body, ctx};
    tg__parallel_run(n < avail ? (int)n : avail, items_run, &j);
}

/* ---- conv2d: geometry ---- */

tg_status tg__conv2d_geom_init(tg__conv2d_geom *g, int x_rank, const int64_t *x_shape, int w_rank,
                               const int64_t *w_shape, int b_rank, const int64_t *b_shape,
                               const int64_t stride[2], const int64_t pad[2], const int64_t dil[2],
                               int64_t groups, char *msg, size_t msg_len) {
    char xs[TG_SHAPE_STR_LEN], wsb[TG_SHAPE_STR_LEN], bs[TG_SHAPE_STR_LEN];
    if (!g || !x_shape || !w_shape || !stride || !pad || !dil)
        return fail(TG_ERR_NULL, msg, msg_len, "conv2d: NULL geometry argument");
    memset(g, 0, sizeof *g);
    if (x_rank != 4)
        return fail(TG_ERR_SHAPE, msg, msg_len, "conv2d: input %s must be rank 4 [N,C,H,W]",
                    shape_str(xs, sizeof xs, x_rank, x_shape));
    if (w_rank != 4)
        return fail(TG_ERR_SHAPE, msg, msg_len, "conv2d: weight %s must be rank 4 [K,C/groups,R,S]",
                    shape_str(wsb, sizeof wsb, w_rank, w_shape));
    shape_str(xs, sizeof xs, 4, x_shape);
    shape_str(wsb, sizeof wsb, 4, w_shape);
    for (int i = 0; i < 4; i++)
        if (x_shape[i] < 1 || w_shape[i] < 1)
            return fail(TG_ERR_SHAPE, msg, msg_len,
                        "conv2d: input %s and weight %s must have no empty dimension", xs, wsb);
    for (int i = 0; i < 2; i++) {
        if (stride[i] < 1 || dil[i] < 1 || pad[i] < 0)
            return fail(TG_ERR_VALUE, msg, msg_len,
                        "conv2d: stride [%lld,%lld] and dilation [%lld,%lld] must be >= 1, "
                        "padding [%lld,%lld] >= 0",
                        (long long)stride[0], (long long)stride[1], (long long)dil[0],
                        (long long)dil[1], (long long)pad[0], (long long)pad[1]);
    }
    const int64_t N = x_shape[0], C = x_shape[1], H = x_shape[2], W = x_shape[3];
    const int64_t K = w_shape[0], Cg = w_shape[1], R = w_shape[2], S = w_shape[3];
    if (groups < 1 || C % groups != 0 || K % groups != 0)
        return fail(TG_ERR_VALUE, msg, msg_len,
                    "conv2d: groups %lld must be >= 1 and divide the input channels (input %s) "
                    "and the output channels (weight %s)",
                    (long long)groups, xs, wsb);
    if (Cg != C / groups)
        return fail(TG_ERR_SHAPE, msg, msg_len,
                    "conv2d: input %s has %lld channels but weight %s with groups %lld expects "
                    "%lld",
                    xs, (long long)C, wsb, (long long)groups, (long long)Cg * (long long)groups);
    if (b_shape && (b_rank != 1 || b_shape[0] != K))
        return fail(TG_ERR_SHAPE, msg, msg_len, "conv2d: bias %s must be [%lld] for weight %s",
                    shape_str(bs, sizeof bs, b_rank, b_shape), (long long)K, wsb);
    /* The extent of the dilated kernel, dil (R - 1) + 1, must fit in the padded input. */
    int64_t span[2], in[2] = {H, W}, ks[2] = {R, S}, out[2];
    for (int i = 0; i < 2; i++) {
        const int64_t ext = mul_cap(dil[i], ks[i] - 1), padded = mul_cap(pad[i], 2);
        if (ext < 0 || padded < 0 || padded > ((int64_t)1 << 56) - in[i])
            return fail(TG_ERR_VALUE, msg, msg_len, "conv2d: padding or dilation too large");
        span[i] = ext + 1;
    }
    for (int i = 0; i < 2; i++) {
        const int64_t room = in[i] + 2 * pad[i] - span[i];
        if (room < 0)
            return fail(TG_ERR_SHAPE, msg, msg_len,
                        "conv2d: input %s with padding [%lld,%lld] is smaller than weight %s "
                        "dilated by [%lld,%lld] (%lld x %lld)",
                        xs, (long long)pad[0], (long long)pad[1], wsb, (long long)dil[0],
                        (long long)dil[1], (long long)span[0], (long long)span[1]);
        out[i] = room / stride[i] + 1;
    }
    *g = (tg__conv2d_geom){.N = N,
                           .C = C,
                           .H = H,
                           .W = W,
                           .K = K,
                           .R = R,
                           .S = S,
                           .stride = {stride[0], stride[1]},
                           .pad = {pad[0], pad[1]},
                           .dil = {dil[0], dil[1]},
                           .groups = groups,
                           .OH = out[0],
                           .OW = out[1]};
    /* Every count the kernels form must be representable (and a buffer that large absurd). */
    const int64_t ohow = mul_cap(out[0], out[1]), crs = mul_cap(C, mul_cap(R, S));
    if (ohow < 0 || crs < 0 || mul_cap(N, mul_cap(C, mul_cap(H, W))) < 0 ||
        mul_cap(N, mul_cap(K, ohow)) < 0 || mul_cap(crs, ohow) < 0 ||
        mul_cap(K, mul_cap(Cg, mul_cap(R, S))) < 0 || mul_cap(crs + K, mul_cap(N, ohow)) < 0) {
        memset(g, 0, sizeof *g);
        return fail(TG_ERR_VALUE, msg, msg_len, "conv2d: input %s and weight %s are too large", xs,
                    wsb);
    }
    return TG_OK;
}

/* ---- conv2d: workspace ---- */

/* Backward's sums over images (dw, db) are taken in this many partial sums, each over a fixed
 * contiguous range of the batch, then added in order: threads take whole partitions, so the
 * result depends on this constant, never on the thread count. */
#define TG_CONV_PARTS 8

static size_t round64(size_t b) { return (b + 63) & ~(size_t)63; }

typedef struct conv_plan {
    int64_t Cg, Kg, crs_g, ohow, parts;
    size_t slot_bytes;  /* one thread's col for one image and group */
    size_t sum_bytes;   /* one partition's dw sums [groups][Cg*R*S][Kg] */
    size_t dbsum_bytes; /* one partition's db sums [K], in double */
    size_t parts_bytes; /* all partitions' sums, at the start of the workspace */
} conv_plan;

static conv_plan conv_plan_of(const tg__conv2d_geom *g, size_t esz) {
    conv_plan p;
    p.Cg = g->C / g->groups;
    p.Kg = g->K / g->groups;
    p.crs_g = p.Cg * g->R * g->S;
    p.ohow = g->OH * g->OW;
    p.parts = min64(g->N, TG_CONV_PARTS);
    p.slot_bytes = round64((size_t)(p.crs_g * p.ohow) * esz);
    p.sum_bytes = round64((size_t)(g->K * p.crs_g) * esz);
    p.dbsum_bytes = round64((size_t)g->K * sizeof(double));
    p.parts_bytes = (size_t)p.parts * (p.sum_bytes + p.dbsum_bytes);
    return p;
}

size_t tg__conv2d_workspace_bytes(const tg__conv2d_geom *g, tg_dtype dtype, int nthreads) {
    const conv_plan p = conv_plan_of(g, tg__dtype_size(dtype));
    return p.parts_bytes + (size_t)(nthreads < 1 ? 1 : nthreads) * p.slot_bytes;
}

/* ---- conv2d: im2col and col2im ----
 * Rows cr*S + s for the (channel, kernel row) pairs cr = c*R + r in [cr0, cr1) of one image
 * whose first channel is at x; `ld` is col's row stride. For each kernel column s the output
 * columns [lo, hi) read inside the image: iw = ow*sw + off in [0, W). */

static void ow_range(const tg__conv2d_geom *g, int64_t s, int64_t *off, int64_t *lo, int64_t *hi) {
    const int64_t sw = g->stride[1], o = s * g->dil[1] - g->pad[1];
    int64_t l = o >= 0 ? 0 : (-o + sw - 1) / sw;
    int64_t h = g->W - 1 - o < 0 ? 0 : (g->W - 1 - o) / sw + 1;
    l = min64(l, g->OW);
    h = min64(h, g->OW);
    *off = o;
    *lo = l;
    *hi = h < l ? l : h;
}

/* memcpy of a short run (im2col's rows are OW elements, 14 or 28 floats in the CNN: a call to
 * memcpy per row costs more than the copy), 16 bytes at a time, then the rest. */
static void copy_run(void *restrict dst, const void *restrict src, size_t bytes) {
    unsigned char *d = dst;
    const unsigned char *s = src;
    size_t i = 0;
    for (; i + 16 <= bytes; i += 16) {
        unsigned char v[16];
        memcpy(v, s + i, 16);
        memcpy(d + i, v, 16);
    }
    for (; i + 4 <= bytes; i += 4) {
        unsigned char v[4];
        memcpy(v, s + i, 4);
        memcpy(d + i, v, 4);
    }
    for (; i < bytes; i++)
        d[i] = s[i];
}

/* memset to 0 of a short run (im2col's padding: a column or two), without a call. */
static void zero_run(void *dst, size_t bytes) {
    unsigned char *d = dst;
    if (bytes > 16) {
        memset(d, 0, bytes);
        return;
    }
    const uint64_t z = 0;
    if (bytes >= 8) { /* twice: up to 16 */
        memcpy(d, &z, 8);
        d += 8, bytes -= 8;
    }
    if (bytes >= 8) {
        memcpy(d, &z, 8);
        d += 8, bytes -= 8;
    }
    if (bytes >= 4) {
        memcpy(d, &z, 4);
        d += 4, bytes -= 4;
    }
    if (bytes >= 2) {
        memcpy(d, &z, 2);
        d += 2, bytes -= 2;
    }
    if (bytes)
        *d = 0;
}

#define IM2COL_FUNCS(T, sfx)                                                                        \
    /* One row of col when both strides are 1 and OW = W (a "same" padding, the CNN's 3x3 pad 1): \
     * the image shifted by ih0 rows and o columns, read as one flat run                         \
     * dst[q] = xc[q + ih0 W + o], then 0 in the rows outside the image and in the |o| columns  \
     * that the flat run wrapped around from the next or previous row. */ \
    static void im2col_flat_##sfx(const T *xc, int64_t H, int64_t W, int64_t OH, int64_t ih0,       \
                                  int64_t o, T *dst) {                                              \
        const int64_t n = OH * W, shift = ih0 * W + o;                                              \
        const int64_t oh_lo = min64(max64(-ih0, 0), OH);                                            \
        const int64_t oh_hi = max64(min64(H - ih0, OH), oh_lo);                                     \
        const int64_t qa = min64(max64(oh_lo * W, -shift), oh_hi * W);                              \
        const int64_t qb = max64(min64(oh_hi * W, H * W - shift), qa);                              \
        if (qa > 0)                                                                                 \
            memset(dst, 0, (size_t)qa * sizeof(T));                                                 \
        memcpy(dst + qa, xc + qa + shift, (size_t)(qb - qa) * sizeof(T));                           \
        if (qb < n)                                                                                 \
            memset(dst + qb, 0, (size_t)(n - qb) * sizeof(T));                                      \
        if (o == 0 || qa == qb)                                                                     \
            return;                                                                                 \
        const int64_t c0 = o < 0 ? 0 : max64(W - o, 0), c1 = o < 0 ? min64(-o, W) : W;              \
        for (int64_t oh = oh_lo; oh < oh_hi; oh++)                                                  \
            zero_run(dst + oh * W + c0, (size_t)(c1 - c0) * sizeof(T));                             \
    }                                                                                               \
    static void im2col_##sfx(const tg__conv2d_geom *g, const T *x, int64_t cr0, int64_t cr1,        \
                             T *col, int64_t ld) {                                                  \
        const int64_t H = g->H, W = g->W, R = g->R, S = g->S, OH = g->OH, OW = g->OW;               \
        const int64_t sh = g->stride[0], sw = g->stride[1];                                         \
        const bool flat = sh == 1 && sw == 1 && OW == W;                                            \
        for (int64_t cr = cr0; cr < cr1; cr++) {                                                    \
            const T *xc = x + (cr / R) * H * W;                                                     \
            const int64_t ih0 = (cr % R) * g->dil[0] - g->pad[0];                                   \
            for (int64_t s = 0; s < S; s++) {                                                       \
                T *dst = col + (cr * S + s) * ld;                                                   \
                int64_t off, lo, hi;                                                                \
                ow_range(g, s, &off, &lo, &hi);                                                     \
                if (flat) {                                                                         \
                    im2col_flat_##sfx(xc, H, W, OH, ih0, off, dst);                                 \
                    continue;                                                                       \
                }                                                                                   \
                for (int64_t oh = 0; oh < OH; oh++, dst += OW) {                                    \
                    const int64_t ih = oh * sh + ih0;                                               \
                    if (ih < 0 || ih >= H || lo == hi) {                                            \
                        memset(dst, 0, (size_t)OW * sizeof(T));                                     \
                        continue;                                                                   \
                    }                                                                               \
                    const T *src = xc + ih * W + (lo * sw + off);                                   \
                    if (lo > 0)                                                                     \
                        zero_run(dst, (size_t)lo * sizeof(T));                                      \
                    if (sw == 1)                                                                    \
                        copy_run(dst + lo, src, (size_t)(hi - lo) * sizeof(T));                     \
                    else                                                                            \
                        for (int64_t j = 0; j < hi - lo; j++)                                       \
                            dst[lo + j] = src[j * sw];                                              \
                    if (hi < OW)                                                                    \
                        zero_run(dst + hi, (size_t)(OW - hi) * sizeof(T));                          \
                }                                                                                   \
            }                                                                                       \
        }                                                                                           \
    }                                                                                               \
    /* One row of col back into the image when im2col_flat made it: dc[q + ih0 W + o] += src[q]  \
     * over the same flat run, after setting the |o| wrapped columns of src (which im2col had     \
     * zeroed, and which belong to no pixel) to -0, the one value whose addition changes nothing  \
     * (x + -0 = x, -0 and NaN included). One vector loop over OH*W values instead of OH loops of  \
     * W - |o| (14 and 13 in the CNN's conv2): the same terms in the same order for each pixel. */  \
    static void col2im_flat_##sfx(T *src, int64_t H, int64_t W, int64_t OH, int64_t ih0,            \
                                  int64_t o, T *dc) {                                               \
        const int64_t shift = ih0 * W + o;                                                          \
        const int64_t oh_lo = min64(max64(-ih0, 0), OH);                                            \
        const int64_t oh_hi = max64(min64(H - ih0, OH), oh_lo);                                     \
        const int64_t qa = min64(max64(oh_lo * W, -shift), oh_hi * W);                              \
        const int64_t qb = max64(min64(oh_hi * W, H * W - shift), qa);                              \
        if (qa == qb)                                                                               \
            return;                                                                                 \
        if (o != 0) {                                                                               \
            const int64_t c0 = o < 0 ? 0 : max64(W - o, 0), c1 = o < 0 ? min64(-o, W) : W;          \
            for (int64_t oh = oh_lo; oh < oh_hi; oh++)                                              \
                for (int64_t c = c0; c < c1; c++)                                                   \
                    src[oh * W + c] = (T)-0.0;                                                      \
        }                                                                                           \
        T *restrict d = dc + (qa + shift); /* (qa + shift >= 0: the first pixel written) */         \
        const T *restrict v = src + qa;                                                             \
        for (int64_t q = 0; q < qb - qa; q++)                                                       \
            d[q] += v[q];                                                                           \
    }                                                                                               \
    /* dx[c, ih, iw] += col[row][oh*OW + ow] for every window position: the transpose of        \
     * im2col. Each dx element receives its terms in the fixed order of this loop. col is the  \
     * caller's scratch: the flat rows write -0 into it. */   \
    static void col2im_##sfx(const tg__conv2d_geom *g, T *col, int64_t cr0, int64_t cr1, T *dx) {   \
        const int64_t H = g->H, W = g->W, R = g->R, S = g->S, OH = g->OH, OW = g->OW;               \
        const int64_t sh = g->stride[0], sw = g->stride[1];                                         \
        const bool flat = sh == 1 && sw == 1 && OW == W;                                            \
        for (int64_t cr = cr0; cr < cr1; cr++) {                                                    \
            T *dc = dx + (cr / R) * H * W;                                                          \
            const int64_t ih0 = (cr % R) * g->dil[0] - g->pad[0];                                   \
            for (int64_t s = 0; s < S; s++) {                                                       \
                T *src = col + (cr * S + s) * OH * OW;                                              \
                int64_t off, lo, hi;                                                                \
                ow_range(g, s, &off, &lo, &hi);                                                     \
                if (flat) {                                                                         \
                    col2im_flat_##sfx(src, H, W, OH, ih0, off, dc);                                 \
                    continue;                                                                       \
                }                                                                                   \
                for (int64_t oh = 0; oh < OH; oh++, src += OW) {                                    \
                    const int64_t ih = oh * sh + ih0;                                               \
                    if (ih < 0 || ih >= H)                                                          \
                        continue;                                                                   \
                    T *d = dc + ih * W + (lo * sw + off);                                           \
                    if (sw == 1)                                                                    \
                        for (int64_t j = 0; j < hi - lo; j++)                                       \
                            d[j] += src[lo + j];                                                    \
                    else                                                                            \
                        for (int64_t j = 0; j < hi - lo; j++)                                       \
                            d[j * sw] += src[lo + j];                                               \
                }                                                                                   \
            }                                                                                       \
        }                                                                                           \
    }
IM2COL_FUNCS(float, f32)
IM2COL_FUNCS(double, f64)

static void im2col(tg_dtype dt, const tg__conv2d_geom *g, const void *x, int64_t cr0, int64_t cr1,
                   void *col, int64_t ld) {
    if (dt == TG_F32)
        im2col_f32(g, x, cr0, cr1, col, ld);
    else
        im2col_f64(g, x, cr0, cr1, col, ld);
}

static void col2im(tg_dtype dt, const tg__conv2d_geom *g, void *col, int64_t cr0, int64_t cr1,
                   void *dx) {
    if (dt == TG_F32)
        col2im_f32(g, col, cr0, cr1, dx);
    else
        col2im_f64(g, col, cr0, cr1, dx);
}

/* ---- conv2d: forward and dx, image by image ---- */

typedef struct conv_job {
    const tg__conv2d_geom *g;
    conv_plan p;
    tg_dtype dtype;
    size_t esz;
    bool pointwise; /* 1x1, stride 1, no padding: col is x itself */
    const void *x, *w, *b, *dy;
    void *y, *dx, *dw, *db;
    bool dx_fresh; /* backward: dx holds no value yet (each image's is zeroed before its col2im) */
    void *ws;      /* the partitions' sums (backward), then one col slot per thread */
} conv_job;

/* Thread tid's col slot. */
#define SLOT(j, tid) byte_off((j)->ws, (j)->p.parts_bytes + (size_t)(tid) * (j)->p.slot_bytes)

/* p + bytes, and p + elems elements of the job's dtype (CAT: for a const p). */
static void *byte_off(void *p, size_t bytes) { return (unsigned char *)p + bytes; }
static const void *cbyte_off(const void *p, size_t bytes) {
    return (const unsigned char *)p + bytes;
}
#define AT(ptr, elems) byte_off((ptr), (size_t)(elems)*j->esz)
#define CAT(ptr, elems) cbyte_off((ptr), (size_t)(elems)*j->esz)

/* ---- conv2d: products with a short inner dimension ----
 * When C/groups R S is small (conv1 of the CNN: 9), tg_gemm's packing and tiles cost more than
 * the products; in float32 with AVX-512 they are done directly, 16 columns at a time with fused
 * multiply-adds (so they differ from tg_gemm's results by rounding, and from the baseline build,
 * which keeps tg_gemm; each is the same for any thread count). */
#define SMALL_CRS 32

static bool small_crs(const conv_job *j) {
    return TG_WIDE_SIMD && j->dtype == TG_F32 && j->p.crs_g <= SMALL_CRS && use_wide();
}

#if TG_WIDE_SIMD
/* y[k][q] = sum_j w[k*ldw + j] col[j][q] (+ b[k] when b) for k < M, q < n, j < crs: in
 * increasing j, from w[k][0] col[0][q] by fused multiply-adds, the bias added to the sum (as a
 * separate pass over y would). Four rows of y at a time share each vector of col and keep four
 * chains of multiply-adds in flight (one chain waited on each multiply-add's latency). With
 * `stream` the full, aligned vectors of y are stored around the caches: y is far larger than
 * L2 (conv1 of the CNN: 12.8 MB a batch) and is read next by another op. */
TG_WIDE static inline __attribute__((always_inline)) void
small_forward_rows(const int rows, const float *w, int64_t ldw, const float *col, const float *b,
                   float *y, int64_t crs, int64_t n, int64_t q, __mmask16 mk, bool stream) {
    __m512 acc[4];
    const __m512 c0 = _mm512_maskz_loadu_ps(mk, col + q);
    _Pragma("GCC unroll 4") for (int r = 0; r < rows; r++) acc[r] =
        _mm512_mul_ps(_mm512_set1_ps(w[r * ldw]), c0);
    for (int64_t j = 1; j < crs; j++) {
        const __m512 cj = _mm512_maskz_loadu_ps(mk, col + j * n + q);
        _Pragma("GCC unroll 4") for (int r = 0; r < rows; r++) acc[r] =
            _mm512_fmadd_ps(_mm512_set1_ps(w[r * ldw + j]), cj, acc[r]);
    }
    _Pragma("GCC unroll 4") for (int r = 0; r < rows; r++) {
        float *dst = y + r * n + q;
        const __m512 v = b ? _mm512_add_ps(acc[r], _mm512_set1_ps(b[r])) : acc[r];
        if (stream && mk == 0xFFFF && ((uintptr_t)dst & 63) == 0)
            _mm512_stream_ps(dst, v);
        else
            _mm512_mask_storeu_ps(dst, mk, v);
    }
}

TG_WIDE static void small_forward(const float *w, int64_t ldw, const float *col, const float *b,
                                  float *y, int64_t M, int64_t crs, int64_t n, bool stream) {
    for (int64_t q = 0; q < n; q += 16) {
        const __mmask16 mk = n - q >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - q)) - 1);
        int64_t k = 0;
        for (; k + 4 <= M; k += 4)
            small_forward_rows(4, w + k * ldw, ldw, col, b ? b + k : NULL, y + k * n, crs, n, q, mk,
                               stream);
        for (; k < M; k++)
            small_forward_rows(1, w + k * ldw, ldw, col, b ? b + k : NULL, y + k * n, crs, n, q, mk,
                               stream);
    }
}

/* sum[j*lds + k] (+)= sum_q col[j][q] dy[k][q] for j < crs, k < M (accumulate: added to the
 * stored sum, else stored): each in 16 lanes of fused multiply-adds over q in increasing order,
 * the lanes added in double. Up to ten j at a time (all nine of a 3x3 kernel on one channel)
 * share each vector of dy[k] and keep that many chains of multiply-adds in flight (one chain at a
 * time waited on each multiply-add's latency). */
TG_WIDE static inline __attribute__((always_inline)) void
small_dw_cols(const int js, const float *col, const float *d, float *sum, int64_t lds, int64_t n,
              bool accumulate) {
    __m512 acc[10];
    _Pragma("GCC unroll 10") for (int t = 0; t < js; t++) acc[t] = _mm512_setzero_ps();
    for (int64_t q = 0; q < n; q += 16) {
        const __mmask16 mk = n - q >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - q)) - 1);
        const __m512 dv = _mm512_maskz_loadu_ps(mk, d + q);
        _Pragma("GCC unroll 10") for (int t = 0; t < js; t++) acc[t] =
            _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mk, col + t * n + q), dv, acc[t]);
    }
    for (int t = 0; t < js; t++) {
        float l[16];
        _mm512_storeu_ps(l, acc[t]);
        double s = 0;
        for (int i = 0; i < 16; i++)
            s += (double)l[i];
        float *dst = sum + t * lds;
        *dst = accumulate ? *dst + (float)s : (float)s;
    }
}

TG_WIDE static void small_dw(const float *col, const float *dy, float *sum, int64_t lds, int64_t M,
                             int64_t crs, int64_t n, bool accumulate) {
    for (int64_t k = 0; k < M; k++)
        for (int64_t j0 = 0; j0 < crs; j0 += 10) {
            const float *c = col + j0 * n, *d = dy + k * n;
            float *dst = sum + j0 * lds + k;
            switch (crs - j0 < 10 ? crs - j0 : 10) {
#define SMALL_DW_CASE(js)                                                                          \
    case js: small_dw_cols(js, c, d, dst, lds, n, accumulate); break;
                SMALL_DW_CASE(1)
                SMALL_DW_CASE(2)
                SMALL_DW_CASE(3)
                SMALL_DW_CASE(4)
                SMALL_DW_CASE(5)
                SMALL_DW_CASE(6)
                SMALL_DW_CASE(7)
                SMALL_DW_CASE(8)
                SMALL_DW_CASE(9)
                SMALL_DW_CASE(10)
#undef SMALL_DW_CASE
            default: break;
            }
        }
}
#endif

static void forward_images(const conv_job *j, int64_t n0, int64_t n1, void *col) {
    const tg__conv2d_geom *g = j->g;
    const conv_plan *p = &j->p;
    const int64_t chw = g->C * g->H * g->W, kohow = g->K * p->ohow;
    const bool small = small_crs(j);
    /* y stored around the caches by the short-product path when it is large (see
     * tg__stream_min_bytes); the GEMM stores normally. */
    const bool stream = small && (size_t)(g->N * kohow) * j->esz >= tg__stream_min_bytes();
    (void)small;
    for (int64_t n = n0; n < n1; n++) {
        const void *xn = CAT(j->x, n * chw);
        void *yn = AT(j->y, n * kohow);
        for (int64_t gi = 0; gi < g->groups; gi++) {
            const void *xg = CAT(xn, gi * p->Cg * g->H * g->W);
            const void *bmat = xg;
            if (!j->pointwise) {
                im2col(j->dtype, g, xg, 0, p->Cg * g->R, col, p->ohow);
                bmat = col;
            }
#if TG_WIDE_SIMD
            if (small) {
                small_forward((const float *)CAT(j->w, gi * p->Kg * p->crs_g), p->crs_g, bmat,
                              j->b ? (const float *)CAT(j->b, gi * p->Kg) : NULL,
                              AT(yn, gi * p->Kg * p->ohow), p->Kg, p->crs_g, p->ohow, stream);
                continue;
            }
#endif
            tg__gemm(j->dtype, false, false, p->Kg, p->ohow, p->crs_g,
                     CAT(j->w, gi * p->Kg * p->crs_g), p->crs_g, bmat, p->ohow, 0,
                     AT(yn, gi * p->Kg * p->ohow), p->ohow);
        }
        if (j->b && !small) /* while y[n] is in cache (small_forward adds it itself) */
            TG_FOR_DTYPE(j->dtype, T, {
                const T *b = (const T *)j->b;
                T *y = (T *)yn;
                for (int64_t k = 0; k < g->K; k++)
                    for (int64_t q = 0; q < p->ohow; q++)
                        y[k * p->ohow + q] += b[k];
            });
    }
    stream_fence(stream);
}

static void forward_run(void *ctx, int tid, int nth) {
    const conv_job *j = ctx;
    int64_t n0, n1;
    tg__split(j->g->N, 1, tid, nth, &n0, &n1);
    if (n0 < n1)
        forward_images(j, n0, n1, SLOT(j, tid));
}

/* Threads for the image-by-image passes: at most one per image and per col slot in ws, and one
 * alone for products too small to pay for a wake-up. */
static int image_threads(const conv_job *j, size_t ws_bytes, int64_t units) {
    const tg__conv2d_geom *g = j->g;
    int64_t nth = tg_get_num_threads();
    nth = min64(nth, units);
    nth = min64(nth, (int64_t)((ws_bytes - j->p.parts_bytes) / j->p.slot_bytes));
    const int64_t macs = g->N * g->K * j->p.ohow * j->p.crs_g;
    if (macs < ((int64_t)1 << 20))
        nth = 1;
    return nth < 1 ? 1 : (int)nth;
}

static tg_status conv_job_init(conv_job *j, const char *fn, const tg__conv2d_geom *g,
                               tg_dtype dtype, void *ws, size_t ws_bytes) {
    memset(j, 0, sizeof *j);
    /* (each error returns its code itself, not tg__set_last_error's: the analyzer can see it) */
    if (!g) {
        tg__set_last_error(TG_ERR_NULL, "%s: NULL geometry", fn);
        return TG_ERR_NULL;
    }
    if (dtype != TG_F32 && dtype != TG_F64) {
        tg__set_last_error(TG_ERR_DTYPE, "%s: dtype %s, expected f32 or f64", fn,
                           tg__dtype_name(dtype));
        return TG_ERR_DTYPE;
    }
    j->g = g;
    j->dtype = dtype;
    j->esz = tg__dtype_size(dtype);
    j->p = conv_plan_of(g, j->esz);
    j->pointwise = g->R == 1 && g->S == 1 && g->stride[0] == 1 && g->stride[1] == 1 &&
                   g->pad[0] == 0 && g->pad[1] == 0;
    j->ws = ws;
    const size_t need = tg__conv2d_workspace_bytes(g, dtype, 1);
    if (!ws || ws_bytes < need) {
        tg__set_last_error(TG_ERR_VALUE,
                           "%s: workspace of %zu bytes, at least %zu needed "
                           "(tg__conv2d_workspace_bytes)",
                           fn, ws ? ws_bytes : 0, need);
        return TG_ERR_VALUE;
    }
    return TG_OK;
}

tg_status tg__conv2d_forward(const tg__conv2d_geom *g, tg_dtype dtype, const void *x, const void *w,
                             const void *b, void *y, void *ws, size_t ws_bytes) {
    conv_job j;
    tg_status st = conv_job_init(&j, "tg__conv2d_forward", g, dtype, ws, ws_bytes);
    if (st != TG_OK)
        return st;
    j.x = x;
    j.w = w;
    j.b = b;
    j.y = y;
    tg__parallel_run(image_threads(&j, ws_bytes, g->N), forward_run, &j);
    return TG_OK;
}

/* ---- conv2d: backward, partition by partition ---- */

/* The images of partition `part`: for each, its dw and db terms are added to the partition's
 * sums (in image order), and its dx computed. */
static void backward_partition(const conv_job *j, int64_t part, void *col) {
    const tg__conv2d_geom *g = j->g;
    const conv_plan *p = &j->p;
    const int64_t chw = g->C * g->H * g->W, kohow = g->K * p->ohow;
    void *sum = byte_off(j->ws, (size_t)part * (p->sum_bytes + p->dbsum_bytes));
    double *dbsum = byte_off(sum, p->sum_bytes);
    const bool small = small_crs(j);
    (void)small;
    int64_t n0, n1;
    tg__split(g->N, 1, (int)part, (int)p->parts, &n0, &n1);
    for (int64_t n = n0; n < n1; n++) {
        const void *dyn = CAT(j->dy, n * kohow);
        if (j->db)
            TG_FOR_DTYPE(j->dtype, T, {
                const T *d = (const T *)dyn;
                for (int64_t k = 0; k < g->K; k++) {
                    const T *row = d + k * p->ohow;
                    double s = 0;
                    if (j->dtype == TG_F32) /* (T is float here: the cast is a no-op) */
                        sums_f32((const float *)(const void *)row, p->ohow, 0.0f, &s, NULL);
                    else
                        LANE_SUM(p->ohow, q, s, (double)row[q]);
                    dbsum[k] = n > n0 ? dbsum[k] + s : s;
                }
            });
        for (int64_t gi = 0; gi < g->groups; gi++) {
            const void *dyg = CAT(dyn, gi * p->Kg * p->ohow);
            if (j->dw) { /* sum_g^T [Cg*R*S, Kg] (+)= col dY_g^T */
                const void *xg = CAT(j->x, n * chw + gi * p->Cg * g->H * g->W);
                const void *amat = xg;
                if (!j->pointwise) {
                    im2col(j->dtype, g, xg, 0, p->Cg * g->R, col, p->ohow);
                    amat = col;
                }
#if TG_WIDE_SIMD
                if (small)
                    small_dw(amat, dyg, AT(sum, gi * p->crs_g * p->Kg), p->Kg, p->Kg, p->crs_g,
                             p->ohow, n > n0);
                else
#endif
                    tg__gemm(j->dtype, false, true, p->crs_g, p->Kg, p->ohow, amat, p->ohow, dyg,
                             p->ohow, n > n0, AT(sum, gi * p->crs_g * p->Kg), p->Kg);
            }
            if (j->dx) { /* dcol = W_g^T dY_g, then col2im into dx (1x1: straight into dx) */
                void *dxg = AT(j->dx, n * chw + gi * p->Cg * g->H * g->W);
                const void *wg = CAT(j->w, gi * p->Kg * p->crs_g);
                if (j->pointwise) {
                    tg__gemm(j->dtype, true, false, p->Cg, p->ohow, p->Kg, wg, p->crs_g, dyg,
                             p->ohow, !j->dx_fresh, dxg, p->ohow);
                    continue;
                }
                tg__gemm(j->dtype, true, false, p->crs_g, p->ohow, p->Kg, wg, p->crs_g, dyg,
                         p->ohow, 0, col, p->ohow);
                if (j->dx_fresh) /* zeroed here, by this thread, in cache for the col2im */
                    memset(dxg, 0, j->esz * (size_t)(p->Cg * g->H * g->W));
                col2im(j->dtype, g, col, 0, p->Cg * g->R, dxg);
            }
        }
    }
}

static void backward_run(void *ctx, int tid, int nth) {
    const conv_job *j = ctx;
    int64_t p0, p1;
    tg__split(j->p.parts, 1, tid, nth, &p0, &p1);
    for (int64_t part = p0; part < p1; part++)
        backward_partition(j, part, SLOT(j, tid));
}

/* dw[g*Kg + k][row] += sum over partitions of sum_p[g][row][k]; db[k] += sum of dbsum_p[k]. */
static void backward_reduce(const conv_job *j) {
    const tg__conv2d_geom *g = j->g;
    const conv_plan *p = &j->p;
    const size_t stride = p->sum_bytes + p->dbsum_bytes;
    TG_FOR_DTYPE(j->dtype, T, {
        if (j->dw) {
            T *dw = (T *)j->dw;
            for (int64_t gi = 0; gi < g->groups; gi++)
                for (int64_t row = 0; row < p->crs_g; row++)
                    for (int64_t k = 0; k < p->Kg; k++) {
                        const int64_t si = (gi * p->crs_g + row) * p->Kg + k;
                        T s = ((const T *)j->ws)[si];
                        for (int64_t part = 1; part < p->parts; part++)
                            s += ((const T *)byte_off(j->ws, (size_t)part * stride))[si];
                        dw[(gi * p->Kg + k) * p->crs_g + row] += s;
                    }
        }
        if (j->db) {
            T *db = (T *)j->db;
            for (int64_t k = 0; k < g->K; k++) {
                double s = 0;
                for (int64_t part = 0; part < p->parts; part++)
                    s += ((const double *)byte_off(j->ws, (size_t)part * stride + p->sum_bytes))[k];
                db[k] += (T)s;
            }
        }
    });
}

tg_status tg__conv2d_backward(const tg__conv2d_geom *g, tg_dtype dtype, const void *x,
                              const void *w, const void *dy, void *dx, void *dw, void *db, void *ws,
                              size_t ws_bytes, bool dx_fresh) {
    conv_job j;
    tg_status st = conv_job_init(&j, "tg__conv2d_backward", g, dtype, ws, ws_bytes);
    if (st != TG_OK)
        return st;
    if (!dy || (dx && !w) || (dw && !x))
        return tg__set_last_error(TG_ERR_NULL, "tg__conv2d_backward: %s is NULL",
                                  !dy          ? "dy"
                                  : (dx && !w) ? "w (needed for dx)"
                                               : "x (needed for dw)");
    if (!dx && !dw && !db)
        return TG_OK;
    j.x = x;
    j.w = w;
    j.dy = dy;
    j.dx = dx;
    j.dx_fresh = dx && dx_fresh;
    j.dw = dw;
    j.db = db;
    tg__parallel_run(image_threads(&j, ws_bytes, j.p.parts), backward_run, &j);
    backward_reduce(&j);
    return TG_OK;
}

/* ---- Pooling ---- */

tg_status tg__pool2d_geom_init(tg__pool2d_geom *g, const char *op, int x_rank,
                               const int64_t *x_shape, const int64_t kernel[2],
                               const int64_t stride[2], const int64_t pad[2], char *msg,
                               size_t msg_len) {
    char xs[TG_SHAPE_STR_LEN];
    if (!g || !op || !x_shape || !kernel || !stride || !pad)
        return fail(TG_ERR_NULL, msg, msg_len, "pool2d: NULL geometry argument");
    memset(g, 0, sizeof *g);
    shape_str(xs, sizeof xs, x_rank, x_shape);
    if (x_rank != 4)
        return fail(TG_ERR_SHAPE, msg, msg_len, "%s: input %s must be rank 4 [N,C,H,W]", op, xs);
    for (int i = 0; i < 4; i++)
        if (x_shape[i] < 1)
            return fail(TG_ERR_SHAPE, msg, msg_len, "%s: input %s has an empty dimension", op, xs);
    const int64_t in[2] = {x_shape[2], x_shape[3]};
    int64_t out[2];
    for (int i = 0; i < 2; i++) {
        if (kernel[i] < 1 || stride[i] < 1 || pad[i] < 0 || pad[i] > kernel[i] / 2 ||
            kernel[i] > ((int64_t)1 << 30) || stride[i] > ((int64_t)1 << 30))
            return fail(TG_ERR_VALUE, msg, msg_len,
                        "%s: kernel [%lld,%lld] and stride [%lld,%lld] must be >= 1, padding "
                        "[%lld,%lld] between 0 and half the kernel",
                        op, (long long)kernel[0], (long long)kernel[1], (long long)stride[0],
                        (long long)stride[1], (long long)pad[0], (long long)pad[1]);
        const int64_t room = in[i] + 2 * pad[i] - kernel[i];
        if (room < 0)
            return fail(TG_ERR_SHAPE, msg, msg_len,
                        "%s: input %s with padding [%lld,%lld] is smaller than the kernel "
                        "[%lld,%lld]",
                        op, xs, (long long)pad[0], (long long)pad[1], (long long)kernel[0],
                        (long long)kernel[1]);
        out[i] = room / stride[i] + 1;
    }
    const int64_t numel = mul_cap(x_shape[0], mul_cap(x_shape[1], mul_cap(in[0], in[1])));
    if (mul_cap(in[0], in[1]) < 0 || mul_cap(in[0], in[1]) > INT32_MAX || numel < 0)
        return fail(TG_ERR_VALUE, msg, msg_len,
                    "%s: input %s is too large (H*W must be below 2^31)", op, xs);
    *g = (tg__pool2d_geom){.N = x_shape[0],
                           .C = x_shape[1],
                           .H = in[0],
                           .W = in[1],
                           .kernel = {kernel[0], kernel[1]},
                           .stride = {stride[0], stride[1]},
                           .pad = {pad[0], pad[1]},
                           .OH = out[0],
                           .OW = out[1]};
    return TG_OK;
}

typedef struct pool_job {
    const tg__pool2d_geom *g;
    tg_dtype dtype;
    int count_include_pad;
    const void *x, *dy;
    const int32_t *argmax_in;
    void *y, *dx;
    bool dx_fresh; /* max_pool2d backward: dx holds no value yet (stored, not added) */
    int32_t *argmax;
} pool_job;

/* The window of output (oh, ow), clipped to the image: rows [h0, h1), columns [w0, w1). */
#define POOL_WINDOW(g, oh, ow)                                                                     \
    const int64_t hs_ = (oh) * (g)->stride[0] - (g)->pad[0];                                       \
    const int64_t ws_ = (ow) * (g)->stride[1] - (g)->pad[1];                                       \
    const int64_t h0 = max64(hs_, 0), h1 = min64(hs_ + (g)->kernel[0], (g)->H);                    \
    const int64_t w0 = max64(ws_, 0), w1 = min64(ws_ + (g)->kernel[1], (g)->W)

/* 2x2 windows at stride 2, no padding: the CNN's pool. The windows do not overlap and hold 4
 * image pixels each (a last odd row or column belongs to none). */
static bool is_pool2x2(const tg__pool2d_geom *g) {
    return g->kernel[0] == 2 && g->kernel[1] == 2 && g->stride[0] == 2 && g->stride[1] == 2 &&
           g->pad[0] == 0 && g->pad[1] == 0;
}

#if defined(__SSE2__)
/* One output row of the 2x2 pool in float32, 4 windows at a time: a, b (row r0) and c, d (row
 * r1) de-interleaved from the two input rows, then the scan a, b, c, d as selects
 * (take v if v > m or v is NaN), as the scalar loop. Returns the first column not done; a row
 * of at least 4 windows is done entirely (the last group overlaps the one before: it rewrites
 * the same values). */
TG_BODY int64_t maxpool2x2_row_sse(const float *r0, const float *r1, float *yr, int32_t *ar,
                                   int64_t OW, int32_t base, int32_t w32) {
    if (OW < 4)
        return 0;
    const __m128i one = _mm_set1_epi32(1), vw = _mm_set1_epi32(w32), vw1 = _mm_set1_epi32(w32 + 1);
    const __m128i step = _mm_setr_epi32(0, 2, 4, 6);
    for (int64_t ow = 0;; ow += 4) {
        if (ow + 4 > OW)
            ow = OW - 4;
        const __m128 p0 = _mm_loadu_ps(r0 + 2 * ow), p1 = _mm_loadu_ps(r0 + 2 * ow + 4);
        const __m128 q0 = _mm_loadu_ps(r1 + 2 * ow), q1 = _mm_loadu_ps(r1 + 2 * ow + 4);
        const __m128 a = _mm_shuffle_ps(p0, p1, _MM_SHUFFLE(2, 0, 2, 0));
        const __m128 b = _mm_shuffle_ps(p0, p1, _MM_SHUFFLE(3, 1, 3, 1));
        const __m128 c = _mm_shuffle_ps(q0, q1, _MM_SHUFFLE(2, 0, 2, 0));
        const __m128 d = _mm_shuffle_ps(q0, q1, _MM_SHUFFLE(3, 1, 3, 1));
        __m128 m = a;
        __m128i bi = _mm_setzero_si128();
#define POOL_TAKE(v, idx)                                                                          \
    do {                                                                                           \
        const __m128 t_ = _mm_or_ps(_mm_cmpgt_ps(v, m), _mm_cmpunord_ps(v, v));                    \
        const __m128i ti_ = _mm_castps_si128(t_);                                                  \
        m = _mm_or_ps(_mm_and_ps(t_, v), _mm_andnot_ps(t_, m));                                    \
        bi = _mm_or_si128(_mm_and_si128(ti_, idx), _mm_andnot_si128(ti_, bi));                     \
    } while (0)
        POOL_TAKE(b, one);
        POOL_TAKE(c, vw);
        POOL_TAKE(d, vw1);
#undef POOL_TAKE
        _mm_storeu_ps(yr + ow, m);
        const __m128i at = _mm_add_epi32(_mm_set1_epi32(base + 2 * (int32_t)ow), step);
        _mm_storeu_si128((__m128i *)(void *)(ar + ow), _mm_add_epi32(at, bi));
        if (ow + 4 >= OW)
            return OW;
    }
}

/* The backward of one output row: dx[argmax] += dy for 4 windows at a time, written as adds to
 * all 4 pixels of each window, -0 to the 3 that are not its argmax (x + -0 is x, for x = -0
 * too, so nothing else changes). With `store` the 4 pixels are stored instead: dy at the
 * argmax, 0 at the others. The argmax must be in its window, as forward leaves it. mr (NULL:
 * none) is the pool's output row when a relu precedes it (batch_norm_relu_max_pool2d): a window
 * whose maximum is not > 0 passes 0, relu's backward at that argmax. Returns the first column
 * not done. */
TG_BODY int64_t maxpool2x2_bwd_row_sse(float *d0, float *d1, const float *dyr, const float *mr,
                                       const int32_t *ar, int64_t OW, int32_t base, int32_t w32,
                                       bool store) {
    const __m128 nz = store ? _mm_setzero_ps() : _mm_set1_ps(-0.0f);
    const __m128i one = _mm_set1_epi32(1), vw = _mm_set1_epi32(w32), vw1 = _mm_set1_epi32(w32 + 1);
    const __m128i step = _mm_setr_epi32(0, 2, 4, 6);
    int64_t ow = 0;
    for (; ow + 4 <= OW; ow += 4) {
        __m128 g = _mm_loadu_ps(dyr + ow);
        if (mr) /* a fused relu before the pool: relu's select, y > 0 ? dy : 0 */
            g = _mm_and_ps(_mm_cmpgt_ps(_mm_loadu_ps(mr + ow), _mm_setzero_ps()), g);
        const __m128i at = _mm_add_epi32(_mm_set1_epi32(base + 2 * (int32_t)ow), step);
        const __m128i k =
            _mm_sub_epi32(_mm_loadu_si128((const __m128i *)(const void *)(ar + ow)), at);
#define POOL_PART(idx)                                                                             \
    _mm_or_ps(_mm_and_ps(_mm_castsi128_ps(_mm_cmpeq_epi32(k, idx)), g),                            \
              _mm_andnot_ps(_mm_castsi128_ps(_mm_cmpeq_epi32(k, idx)), nz))
        const __m128 ga = POOL_PART(_mm_setzero_si128()), gb = POOL_PART(one);
        const __m128 gc = POOL_PART(vw), gd = POOL_PART(vw1);
#undef POOL_PART
        float *p = d0 + 2 * ow, *q = d1 + 2 * ow;
        if (store) {
            _mm_storeu_ps(p, _mm_unpacklo_ps(ga, gb));
            _mm_storeu_ps(p + 4, _mm_unpackhi_ps(ga, gb));
            _mm_storeu_ps(q, _mm_unpacklo_ps(gc, gd));
            _mm_storeu_ps(q + 4, _mm_unpackhi_ps(gc, gd));
            continue;
        }
        _mm_storeu_ps(p, _mm_add_ps(_mm_loadu_ps(p), _mm_unpacklo_ps(ga, gb)));
        _mm_storeu_ps(p + 4, _mm_add_ps(_mm_loadu_ps(p + 4), _mm_unpackhi_ps(ga, gb)));
        _mm_storeu_ps(q, _mm_add_ps(_mm_loadu_ps(q), _mm_unpacklo_ps(gc, gd)));
        _mm_storeu_ps(q + 4, _mm_add_ps(_mm_loadu_ps(q + 4), _mm_unpackhi_ps(gc, gd)));
    }
    return ow;
}
#endif

#if defined(__SSE2__)
/* The 2x2 pool in float32 over one plane: rows of 4 windows at a time (the SSE rows), the rest
 * of a short row by the scalar scan. */
TG_BODY void maxpool2x2_plane_f32(const tg__pool2d_geom *g, const float *x, float *y, int32_t *am) {
    const int64_t W = g->W, OW = g->OW;
    const int32_t w32 = (int32_t)W;
    for (int64_t oh = 0; oh < g->OH; oh++) {
        const float *r0 = x + 2 * oh * W, *r1 = r0 + W;
        float *yr = y + oh * OW;
        int32_t *ar = am + oh * OW;
        const int32_t base = (int32_t)(2 * oh * W);
        for (int64_t ow = maxpool2x2_row_sse(r0, r1, yr, ar, OW, base, w32); ow < OW; ow++) {
            const float a = r0[2 * ow], b = r0[2 * ow + 1], c = r1[2 * ow];
            const float d = r1[2 * ow + 1];
            float m = a;
            int32_t bi = 0;
            bool t = (b > m) | (b != b);
            m = t ? b : m;
            bi = t ? 1 : bi;
            t = (c > m) | (c != c);
            m = t ? c : m;
            bi = t ? w32 : bi;
            t = (d > m) | (d != d);
            m = t ? d : m;
            bi = t ? w32 + 1 : bi;
            yr[ow] = m;
            ar[ow] = base + 2 * (int32_t)ow + bi;
        }
    }
}

TG_BODY void maxpool2x2_fwd_f32(const pool_job *j, int64_t p0, int64_t p1) {
    const tg__pool2d_geom *g = j->g;
    const int64_t hw = g->H * g->W, ohow = g->OH * g->OW;
    for (int64_t pl = p0; pl < p1; pl++)
        maxpool2x2_plane_f32(g, (const float *)j->x + pl * hw, (float *)j->y + pl * ohow,
                             j->argmax + pl * ohow);
}

/* Its backward over one plane: the SSE rows, then dx[a] += dy for the rest of a row. A fresh dx
 * whose plane the windows tile exactly (H and W even) is stored window by window; any other is
 * zeroed first, right before the adds. mask: as maxpool2x2_bwd_row_sse's mr. */
TG_BODY void maxpool2x2_bwd_plane_f32(const tg__pool2d_geom *g, const float *dy, const float *mask,
                                      const int32_t *am, float *dx, bool dx_fresh) {
    const int64_t W = g->W, OW = g->OW, hw = g->H * g->W;
    const bool store = dx_fresh && g->H % 2 == 0 && W % 2 == 0;
    if (dx_fresh && !store)
        memset(dx, 0, sizeof(float) * (size_t)hw);
    for (int64_t oh = 0; oh < g->OH; oh++) {
        float *d0 = dx + 2 * oh * W;
        const float *dyr = dy + oh * OW, *mr = mask ? mask + oh * OW : NULL;
        const int32_t *ar = am + oh * OW;
        int64_t ow = maxpool2x2_bwd_row_sse(d0, d0 + W, dyr, mr, ar, OW, (int32_t)(2 * oh * W),
                                            (int32_t)W, store);
        for (; ow < OW; ow++) {
            const float up = dyr[ow], v = mr && !(mr[ow] > 0) ? 0 : up;
            if (store) { /* the window's 4 pixels, then its argmax */
                d0[2 * ow] = d0[2 * ow + 1] = d0[W + 2 * ow] = d0[W + 2 * ow + 1] = 0;
                dx[ar[ow]] = v;
            } else {
                dx[ar[ow]] += v;
            }
        }
    }
}

TG_BODY void maxpool2x2_bwd_f32(const pool_job *j, int64_t p0, int64_t p1) {
    const tg__pool2d_geom *g = j->g;
    const int64_t hw = g->H * g->W, ohow = g->OH * g->OW;
    for (int64_t pl = p0; pl < p1; pl++)
        maxpool2x2_bwd_plane_f32(g, (const float *)j->dy + pl * ohow, NULL,
                                 j->argmax_in + pl * ohow, (float *)j->dx + pl * hw, j->dx_fresh);
}

#if TG_WIDE_SIMD
TG_WIDE static void maxpool2x2_fwd_f32_wide(const pool_job *j, int64_t p0, int64_t p1) {
    maxpool2x2_fwd_f32(j, p0, p1);
}
TG_WIDE static void maxpool2x2_bwd_f32_wide(const pool_job *j, int64_t p0, int64_t p1) {
    maxpool2x2_bwd_f32(j, p0, p1);
}
#endif
#endif

/* The pool of one plane in any dtype: the 2x2 windows (the CNN's) as selects over a row of
 * windows, which the compiler vectorizes; any other geometry window by window. */
static void maxpool_plane(const tg__pool2d_geom *g, tg_dtype dtype, const void *xp, void *yp,
                          int32_t *am) {
    TG_FOR_DTYPE(dtype, T, {
        const T *x = xp;
        T *y = yp;
        if (is_pool2x2(g)) { /* whole windows */
            const int64_t W = g->W, OW = g->OW;
            const int32_t w32 = (int32_t)W;
            for (int64_t oh = 0; oh < g->OH; oh++) {
                const T *r0 = x + 2 * oh * W, *r1 = r0 + W;
                T *yr = y + oh * OW;
                int32_t *ar = am + oh * OW;
                const int32_t base = (int32_t)(2 * oh * W);
                for (int64_t ow = 0; ow < OW; ow++) {
                    const T a = r0[2 * ow], b = r0[2 * ow + 1], c = r1[2 * ow];
                    const T d = r1[2 * ow + 1];
                    /* starting from m = a is starting from -inf and taking a (or a = -inf) */
                    T m = a;
                    int32_t bi = 0;
                    bool t = (b > m) | (b != b); /* b != b: NaN */
                    m = t ? b : m;
                    bi = t ? 1 : bi;
                    t = (c > m) | (c != c);
                    m = t ? c : m;
                    bi = t ? w32 : bi;
                    t = (d > m) | (d != d);
                    m = t ? d : m;
                    bi = t ? w32 + 1 : bi;
                    yr[ow] = m;
                    ar[ow] = base + 2 * (int32_t)ow + bi;
                }
            }
        } else {
            for (int64_t oh = 0; oh < g->OH; oh++)
                for (int64_t ow = 0; ow < g->OW; ow++) {
                    POOL_WINDOW(g, oh, ow);
                    int64_t best = h0 * g->W + w0;
                    T m = -INFINITY;
                    for (int64_t ih = h0; ih < h1; ih++)
                        for (int64_t iw = w0; iw < w1; iw++) {
                            /* as selects, not a branch: which value wins is data */
                            const T v = x[ih * g->W + iw];
                            const bool take = (v > m) | (v != v); /* v != v: NaN */
                            m = take ? v : m;
                            best = take ? ih * g->W + iw : best;
                        }
                    y[oh * g->OW + ow] = m;
                    am[oh * g->OW + ow] = (int32_t)best;
                }
        }
    });
}

/* Its backward over one plane in any dtype: dx[a] += dy, dx zeroed first when fresh. mask (NULL:
 * none): the pool's output when a relu precedes it; a window whose maximum is not > 0 passes 0
 * (relu's select at its argmax, whose value the maximum is). */
static void maxpool_bwd_plane(const tg__pool2d_geom *g, tg_dtype dtype, const int32_t *am,
                              const void *dyp, const void *maskp, void *dxp, bool dx_fresh) {
    const int64_t hw = g->H * g->W, ohow = g->OH * g->OW;
    TG_FOR_DTYPE(dtype, T, {
        const T *dy = dyp, *mask = maskp;
        T *dx = dxp;
        if (dx_fresh) /* zeroed here, in cache for the adds */
            memset(dx, 0, sizeof(T) * (size_t)hw);
        if (mask)
            for (int64_t q = 0; q < ohow; q++) {
                const T up = dy[q];
                dx[am[q]] += mask[q] > 0 ? up : (T)0;
            }
        else
            for (int64_t q = 0; q < ohow; q++)
                dx[am[q]] += dy[q];
    });
}

static void maxpool_fwd_planes(void *ctx, int64_t p0, int64_t p1) {
    const pool_job *j = ctx;
    const tg__pool2d_geom *g = j->g;
    const int64_t hw = g->H * g->W, ohow = g->OH * g->OW;
#if defined(__SSE2__)
    if (is_pool2x2(g) && j->dtype == TG_F32) {
#if TG_WIDE_SIMD
        if (use_wide()) {
            maxpool2x2_fwd_f32_wide(j, p0, p1);
            return;
        }
#endif
        maxpool2x2_fwd_f32(j, p0, p1);
        return;
    }
#endif
    const size_t esz = tg__dtype_size(j->dtype);
    for (int64_t pl = p0; pl < p1; pl++)
        maxpool_plane(g, j->dtype, cbyte_off(j->x, (size_t)(pl * hw) * esz),
                      byte_off(j->y, (size_t)(pl * ohow) * esz), j->argmax + pl * ohow);
}

static void maxpool_bwd_planes(void *ctx, int64_t p0, int64_t p1) {
    const pool_job *j = ctx;
    const tg__pool2d_geom *g = j->g;
    const int64_t hw = g->H * g->W, ohow = g->OH * g->OW;
#if defined(__SSE2__)
    if (is_pool2x2(g) && j->dtype == TG_F32) {
#if TG_WIDE_SIMD
        if (use_wide()) {
            maxpool2x2_bwd_f32_wide(j, p0, p1);
            return;
        }
#endif
        maxpool2x2_bwd_f32(j, p0, p1);
        return;
    }
#endif
    const size_t esz = tg__dtype_size(j->dtype);
    for (int64_t pl = p0; pl < p1; pl++)
        maxpool_bwd_plane(g, j->dtype, j->argmax_in + pl * ohow,
                          cbyte_off(j->dy, (size_t)(pl * ohow) * esz), NULL,
                          byte_off(j->dx, (size_t)(pl * hw) * esz), j->dx_fresh);
}

/* The divisor of window (oh, ow): PyTorch's pool_size (the window clipped to the padded image,
 * which with ceil_mode false is the whole kernel) or the count of image pixels in it. */
static int64_t avg_divisor(const tg__pool2d_geom *g, int cip, int64_t h0, int64_t h1, int64_t w0,
                           int64_t w1) {
    return cip ? g->kernel[0] * g->kernel[1] : (h1 - h0) * (w1 - w0);
}

static void avgpool_fwd_planes(void *ctx, int64_t p0, int64_t p1) {
    const pool_job *j = ctx;
    const tg__pool2d_geom *g = j->g;
    const int64_t hw = g->H * g->W, ohow = g->OH * g->OW;
    TG_FOR_DTYPE(j->dtype, T, {
        for (int64_t pl = p0; pl < p1; pl++) {
            const T *x = (const T *)j->x + pl * hw;
            T *y = (T *)j->y + pl * ohow;
            for (int64_t oh = 0; oh < g->OH; oh++)
                for (int64_t ow = 0; ow < g->OW; ow++) {
                    POOL_WINDOW(g, oh, ow);
                    double s = 0;
                    for (int64_t ih = h0; ih < h1; ih++)
                        for (int64_t iw = w0; iw < w1; iw++)
                            s += x[ih * g->W + iw];
                    y[oh * g->OW + ow] =
                        (T)(s / (double)avg_divisor(g, j->count_include_pad, h0, h1, w0, w1));
                }
        }
    });
}

static void avgpool_bwd_planes(void *ctx, int64_t p0, int64_t p1) {
    const pool_job *j = ctx;
    const tg__pool2d_geom *g = j->g;
    const int64_t hw = g->H * g->W, ohow = g->OH * g->OW;
    TG_FOR_DTYPE(j->dtype, T, {
        for (int64_t pl = p0; pl < p1; pl++) {
            const T *dy = (const T *)j->dy + pl * ohow;
            T *dx = (T *)j->dx + pl * hw;
            for (int64_t oh = 0; oh < g->OH; oh++)
                for (int64_t ow = 0; ow < g->OW; ow++) {
                    POOL_WINDOW(g, oh, ow);
                    const T d =
                        dy[oh * g->OW + ow] /
                        (T)avg_divisor(g, j->count_include_pad, h0, h1, w0, w1);
                    for (int64_t ih = h0; ih < h1; ih++)
                        for (int64_t iw = w0; iw < w1; iw++)
                            dx[ih * g->W + iw] += d;
                }
        }
    });
}

static int64_t pool_work(const tg__pool2d_geom *g) {
    return g->N * g->C * (g->H * g->W + g->OH * g->OW * g->kernel[0] * g->kernel[1]);
}

void tg__max_pool2d_forward(const tg__pool2d_geom *g, tg_dtype dtype, const void *x, void *y,
                            int32_t *argmax) {
    pool_job j = {.g = g, .dtype = dtype, .x = x, .y = y, .argmax = argmax};
    parallel_items(g->N * g->C, pool_work(g), maxpool_fwd_planes, &j);
}

void tg__max_pool2d_backward(const tg__pool2d_geom *g, tg_dtype dtype, const int32_t *argmax,
                             const void *dy, void *dx, bool dx_fresh) {
    if (!dx)
        return;
    pool_job j = {
        .g = g, .dtype = dtype, .argmax_in = argmax, .dy = dy, .dx = dx, .dx_fresh = dx_fresh};
    parallel_items(g->N * g->C, g->N * g->C * (g->H * g->W + g->OH * g->OW), maxpool_bwd_planes,
                   &j);
}

void tg__avg_pool2d_forward(const tg__pool2d_geom *g, tg_dtype dtype, int count_include_pad,
                            const void *x, void *y) {
    pool_job j = {.g = g, .dtype = dtype, .count_include_pad = count_include_pad, .x = x, .y = y};
    parallel_items(g->N * g->C, pool_work(g), avgpool_fwd_planes, &j);
}

void tg__avg_pool2d_backward(const tg__pool2d_geom *g, tg_dtype dtype, int count_include_pad,
                             const void *dy, void *dx) {
    if (!dx)
        return;
    pool_job j = {
        .g = g, .dtype = dtype, .count_include_pad = count_include_pad, .dy = dy, .dx = dx};
    parallel_items(g->N * g->C, pool_work(g), avgpool_bwd_planes, &j);
}

/* ---- Batch norm ---- */

tg_status tg__bn_geom_init(tg__bn_geom *g, const char *op, int x_rank, const int64_t *x_shape,
                           int training, char *msg, size_t msg_len) {
    char xs[TG_SHAPE_STR_LEN];
    if (!g || !op || !x_shape)
        return fail(TG_ERR_NULL, msg, msg_len, "batch_norm: NULL geometry argument");
    memset(g, 0, sizeof *g);
    shape_str(xs, sizeof xs, x_rank, x_shape);
    if (x_rank != 2 && x_rank != 4)
        return fail(TG_ERR_SHAPE, msg, msg_len,
                    "%s: input %s must be rank 2 [N,F] or rank 4 [N,C,H,W]", op, xs);
    for (int i = 0; i < x_rank; i++)
        if (x_shape[i] < 1)
            return fail(TG_ERR_SHAPE, msg, msg_len, "%s: input %s has an empty dimension", op, xs);
    const int64_t hw = x_rank == 4 ? mul_cap(x_shape[2], x_shape[3]) : 1;
    const int64_t m = mul_cap(x_shape[0], hw);
    if (hw < 0 || m < 0 || mul_cap(m, x_shape[1]) < 0)
        return fail(TG_ERR_VALUE, msg, msg_len, "%s: input %s is too large", op, xs);
    if (training && m < 2)
        return fail(TG_ERR_SHAPE, msg, msg_len,
                    "%s: input %s has 1 value per channel; training needs more than 1", op, xs);
    *g = (tg__bn_geom){.N = x_shape[0], .C = x_shape[1], .HW = hw};
    return TG_OK;
}

typedef struct bn_job {
    const tg__bn_geom *g;
    tg_dtype dtype;
    int training;
    bool stream; /* f32: y (forward) or a fresh dx (backward) stored around the caches (see
                  * tg__stream_min_bytes) */
    double eps, momentum;
    const void *x, *gamma, *beta, *mean, *rstd, *dy, *rm_in, *rv_in;
    void *y, *save_mean, *save_rstd, *rm, *rv, *dx, *dgamma, *dbeta;
    bool dx_fresh;      /* backward: dx holds no value yet (stored, not added) */
    bool relu;          /* forward: y = max(bn(x), 0) */
    const void *relu_y; /* backward: that relu's output y, the mask: dy counts where y > 0 */
    /* batch_norm_relu_max_pool2d: the pool after the relu (NULL: none), its argmax (written
     * forward, read backward) and the per-thread plane buffers */
    const tg__pool2d_geom *pool;
    int32_t *argmax;
    const int32_t *argmax_in;
    void *ws;
    size_t plane_bytes; /* one thread's buffer in ws: a plane of HW values, rounded to 64 bytes */
} bn_job;

/* Channel c's values are x[(n*C + c)*HW + q] for n < N, q < HW. BN_SUM adds expr(i) over them
 * into out, image by image, each image's run summed by LANE_SUM. */
#define BN_SUM(g, c, i, out, expr)                                                                 \
    for (int64_t n_ = 0; n_ < (g)->N; n_++) {                                                      \
        const int64_t base_ = (n_ * (g)->C + (c)) * (g)->HW;                                       \
        LANE_SUM((g)->HW, q_, out, ((void)0, i = base_ + q_, (expr)));                             \
    }
#define BN_FOR(g, c, i, ...)                                                                       \
    for (int64_t n_ = 0; n_ < (g)->N; n_++) {                                                      \
        const int64_t base_ = (n_ * (g)->C + (c)) * (g)->HW;                                       \
        for (int64_t i = base_; i < base_ + (g)->HW; i++) {                                        \
            __VA_ARGS__                                                                            \
        }                                                                                          \
    }

/* ---- Batch norm in float32 ----
 * The f32 kernels keep every elementwise pass in float, so that it vectorizes, and keep the sums
 * accurate by blocking: each image's run of a channel is cut into chunks of at most SUM_CHUNK
 * values, each chunk summed in 16 float lanes (64 values a lane at most), the lanes added in
 * double, the chunks and images in double. The mean and variance take two passes (the second is
 * over data still in cache: a channel of the CNN is at most 400 KB), the corrected two-pass
 * formula: with mu_f the float mean of the first pass and d = x - mu_f,
 *   mean = mu_f + sum d / M,   var = sum d^2 / M - (sum d / M)^2
 * so a large mean costs no accuracy (no sum x^2 - (sum x)^2 cancellation). The outputs are then
 *   y  = (x - mu_f) a + b'            a = gamma rstd, b' = beta - (mean - mu_f) a
 *   dx += A dy + B (x - mu) + C       A = gamma rstd, B = -A rstd mean(dy xhat), C = -A mean(dy)
 * with x - mu taken first for the same reason. The order of every sum is fixed by the shape. */

/* y = (x - mu) a + b over one run of n values (stream: with streaming stores); with relu,
 * y = v < 0 ? 0 : v of that value v, relu's own select (a NaN passes), so the fused op gives the
 * bits of tg_relu after tg_batch_norm. */
TG_BODY void bn_affine_f32(const float *restrict x, float *restrict y, int64_t n, float mu, float a,
                           float b, bool stream, bool relu) {
    int64_t i = 0;
#if defined(__SSE2__)
    if (stream) { /* the same arithmetic, stored around the caches */
        for (; i < n && ((uintptr_t)(y + i) & 15) != 0; i++) {
            const float v = (x[i] - mu) * a + b;
            y[i] = relu && v < 0 ? 0 : v;
        }
        const __m128 vm = _mm_set1_ps(mu), va = _mm_set1_ps(a), vb = _mm_set1_ps(b),
                     zero = _mm_setzero_ps();
        for (; i + 4 <= n; i += 4) {
            __m128 v = _mm_add_ps(_mm_mul_ps(_mm_sub_ps(_mm_loadu_ps(x + i), vm), va), vb);
            if (relu)
                v = _mm_andnot_ps(_mm_cmplt_ps(v, zero), v);
            _mm_stream_ps(y + i, v);
        }
    }
#else
    (void)stream;
#endif
    if (relu) {
        for (; i < n; i++) {
            const float v = (x[i] - mu) * a + b;
            y[i] = v < 0 ? 0 : v;
        }
        return;
    }
    for (; i < n; i++)
        y[i] = (x[i] - mu) * a + b;
}

/* A channel's values are N runs of HW floats a channel apart (C HW); the hardware prefetcher
 * learns each run anew. The first pass over a channel reads from memory: it asks for the next
 * run's lines while it sums this one (write: for an output about to be written). */
TG_BODY void prefetch_run(const float *p, int64_t n, bool write) {
    for (int64_t i = 0; i < n; i += 16) {
        if (write)
            __builtin_prefetch(p + i, 1, 3);
        else
            __builtin_prefetch(p + i, 0, 3);
    }
}

/* The offset of the run after image n's in channel c: image n + 1's, or the next channel's first
 * (past the last channel, -1: nothing to fetch). */
TG_BODY int64_t next_run(const tg__bn_geom *g, int64_t c, int64_t n) {
    if (n + 1 < g->N)
        return c * g->HW + (n + 1) * g->C * g->HW;
    return c + 1 < g->C ? (c + 1) * g->HW : -1;
}

/* Training: channel c's statistics (saved, and the running ones updated), and the affine
 * y = (x - mu) a + b that normalizes with them. */
TG_BODY void bn_train_coef_f32(const bn_job *j, int64_t c, float *mu, float *fa, float *fb) {
    const tg__bn_geom *g = j->g;
    const int64_t HW = g->HW, CHW = g->C * g->HW;
    const double m = (double)(g->N * HW);
    const float *x = j->x, *gamma = j->gamma, *beta = j->beta;
    float *rm = j->rm, *rv = j->rv;
    const float *xc = x + c * HW;
    double s = 0;
    for (int64_t n = 0; n < g->N; n++) {
        const int64_t nx = next_run(g, c, n);
        if (nx >= 0)
            prefetch_run(x + nx, HW, false);
        sums_f32(xc + n * CHW, HW, 0.0f, &s, NULL);
    }
    const float muf = (float)(s / m);
    double s1 = 0, s2 = 0;
    for (int64_t n = 0; n < g->N; n++)
        sums_f32(xc + n * CHW, HW, muf, &s1, &s2);
    const double dm = s1 / m, mean = (double)muf + dm;
    double ss = s2 - s1 * dm; /* sum (x - mean)^2 */
    ss = ss > 0 ? ss : 0;
    const double var = ss / m, rstd = 1.0 / sqrt(var + j->eps);
    const double a = (gamma ? (double)gamma[c] : 1.0) * rstd;
    *mu = muf;
    *fa = (float)a;
    *fb = (float)((beta ? (double)beta[c] : 0.0) - dm * a);
    ((float *)j->save_mean)[c] = (float)mean;
    ((float *)j->save_rstd)[c] = (float)rstd;
    if (rm)
        rm[c] = (float)((1.0 - j->momentum) * rm[c] + j->momentum * mean);
    if (rv)
        rv[c] = (float)((1.0 - j->momentum) * rv[c] + j->momentum * (ss / (m - 1.0)));
}

/* Evaluation: the affine of channel c from the running statistics (mean and rstd saved). */
TG_BODY void bn_eval_coef_f32(const bn_job *j, int64_t c, float *mu, float *fa, float *fb) {
    const float *gamma = j->gamma, *beta = j->beta, *rm = j->rm_in, *rv = j->rv_in;
    const double rstd = 1.0 / sqrt((double)rv[c] + j->eps);
    *mu = rm[c];
    *fa = (float)((gamma ? (double)gamma[c] : 1.0) * rstd);
    *fb = beta ? beta[c] : 0.0f;
    if (j->save_mean)
        ((float *)j->save_mean)[c] = rm[c];
    if (j->save_rstd)
        ((float *)j->save_rstd)[c] = (float)rstd;
}

TG_BODY void bn_train_f32(const bn_job *j, int64_t c0, int64_t c1) {
    const int64_t HW = j->g->HW, CHW = j->g->C * HW;
    for (int64_t c = c0; c < c1; c++) {
        float mu, fa, fb;
        bn_train_coef_f32(j, c, &mu, &fa, &fb);
        for (int64_t n = 0; n < j->g->N; n++)
            bn_affine_f32((const float *)j->x + c * HW + n * CHW, (float *)j->y + c * HW + n * CHW,
                          HW, mu, fa, fb, j->stream, j->relu);
    }
}

TG_BODY void bn_eval_f32(const bn_job *j, int64_t c0, int64_t c1) {
    const int64_t HW = j->g->HW, CHW = j->g->C * HW;
    for (int64_t c = c0; c < c1; c++) {
        float mu, fa, fb;
        bn_eval_coef_f32(j, c, &mu, &fa, &fb);
        for (int64_t n = 0; n < j->g->N; n++)
            bn_affine_f32((const float *)j->x + c * HW + n * CHW, (float *)j->y + c * HW + n * CHW,
                          HW, mu, fa, fb, j->stream, j->relu);
    }
}

/* dx += A dy + B (x - mu) + C over one run of n values (stored instead with `store`; stream:
 * stored around the caches, which keeps the channel's x and dy in L2 for the next run and
 * spares reading dx's lines before writing them). */
TG_BODY void bn_dx_f32(const float *restrict x, const float *restrict dy, float *restrict dx,
                       int64_t n, float mu, float A, float B, float C, bool store, bool stream) {
    if (store) {
        int64_t i = 0;
#if defined(__SSE2__)
        if (stream) { /* the same arithmetic, in the same order */
            for (; i < n && ((uintptr_t)(dx + i) & 15) != 0; i++)
                dx[i] = (A * dy[i] + B * (x[i] - mu)) + C;
            const __m128 va = _mm_set1_ps(A), vb = _mm_set1_ps(B), vc = _mm_set1_ps(C),
                         vm = _mm_set1_ps(mu);
            for (; i + 4 <= n; i += 4) {
                const __m128 t = _mm_add_ps(_mm_mul_ps(va, _mm_loadu_ps(dy + i)),
                                            _mm_mul_ps(vb, _mm_sub_ps(_mm_loadu_ps(x + i), vm)));
                _mm_stream_ps(dx + i, _mm_add_ps(t, vc));
            }
        }
#else
        (void)stream;
#endif
        for (; i < n; i++)
            dx[i] = (A * dy[i] + B * (x[i] - mu)) + C;
        return;
    }
    for (int64_t i = 0; i < n; i++)
        dx[i] += (A * dy[i] + B * (x[i] - mu)) + C;
}

/* md = y > 0 ? dy : 0 over n values: relu's backward (its select, so the same bits). */
TG_BODY void relu_mask_f32(const float *restrict y, const float *restrict dy, float *restrict md,
                           int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        const float up = dy[i];
        md[i] = y[i] > 0 ? up : 0;
    }
}

/* The fused relu's backward feeds batch norm's the masked dy, a chunk at a time through a buffer
 * on the stack: chunks of SUM_CHUNK values, at the sums' own chunk boundaries, so every sum is
 * the one the unfused pair forms (dsums_f32 adds its chunks in order). */
TG_BODY void bn_dsums_masked_f32(const float *x, const float *y, const float *dy, int64_t n,
                                 float mu, double *sdy, double *sdyd) {
    float md[SUM_CHUNK];
    for (int64_t c0 = 0; c0 < n; c0 += SUM_CHUNK) {
        const int64_t len = min64(SUM_CHUNK, n - c0);
        relu_mask_f32(y + c0, dy + c0, md, len);
        dsums_f32(x + c0, md, len, mu, sdy, sdyd);
    }
}

TG_BODY void bn_dx_masked_f32(const float *x, const float *y, const float *dy, float *dx, int64_t n,
                              float mu, float A, float B, float C, bool store, bool stream) {
    float md[SUM_CHUNK];
    for (int64_t c0 = 0; c0 < n; c0 += SUM_CHUNK) {
        const int64_t len = min64(SUM_CHUNK, n - c0);
        relu_mask_f32(y + c0, dy + c0, md, len);
        bn_dx_f32(x + c0, md, dx + c0, len, mu, A, B, C, store, stream);
    }
}

/* d = (A d + B (x - mu)) + C in place over n values: bn_dx_f32's arithmetic on a dy that the
 * fused relu's first pass left in dx (bn_backward_f32). */
TG_BODY void bn_dx_inplace_f32(const float *restrict x, float *d, int64_t n, float mu, float A,
                               float B, float C) {
    for (int64_t i = 0; i < n; i++)
        d[i] = (A * d[i] + B * (x[i] - mu)) + C;
}

/* The coefficients of dx = A dy + B (x - mu) + C for channel c, from its sums (sdy = sum dy,
 * sdyd = sum dy (x - mu)) and rstd rs: A = gamma rstd; in training B = -A rstd mean(dy xhat),
 * C = -A mean(dy); in evaluation B = C = 0. */
TG_BODY void bn_dx_coef_f32(const bn_job *j, int64_t c, double rs, double sdy, double sdyd,
                            float *A, float *B, float *C) {
    const double m = (double)(j->g->N * j->g->HW);
    const double k = (j->gamma ? (double)((const float *)j->gamma)[c] : 1.0) * rs;
    *A = (float)k;
    *B = j->training ? (float)(-k * rs * (sdyd * rs / m)) : 0;
    *C = j->training ? (float)(-k * (sdy / m)) : 0;
}

TG_BODY void bn_backward_f32(const bn_job *j, int64_t c0, int64_t c1) {
    const tg__bn_geom *g = j->g;
    const int64_t HW = g->HW, CHW = g->C * g->HW;
    const float *x = j->x, *dy = j->dy, *mean = j->mean, *rstd = j->rstd;
    const float *ry = j->relu_y;
    float *dx = j->dx, *dgamma = j->dgamma, *dbeta = j->dbeta;
    for (int64_t c = c0; c < c1; c++) {
        const float mu = mean[c];
        const double rs = rstd[c];
        double sdy = 0, sdyd = 0; /* sum dy, sum dy (x - mu) */
        /* The fused relu with dx to write: its masked dy goes into dx on the first pass (the
         * sums read it back from L1), and the second pass reads x and dx, which stay in L2,
         * instead of x, y and dy again. */
        const bool md_in_dx = ry && dx && j->dx_fresh;
        if (md_in_dx)
            for (int64_t n = 0; n < g->N; n++) {
                const int64_t o = c * HW + n * CHW, nx = next_run(g, c, n);
                if (nx >= 0) {
                    prefetch_run(x + nx, HW, false);
                    prefetch_run(ry + nx, HW, false);
                    prefetch_run(dy + nx, HW, false);
                    prefetch_run(dx + nx, HW, true);
                }
                relu_mask_f32(ry + o, dy + o, dx + o, HW);
                if (dgamma || dbeta || j->training)
                    dsums_f32(x + o, dx + o, HW, mu, &sdy, &sdyd);
            }
        else if (dgamma || dbeta || (dx && j->training))
            for (int64_t n = 0; n < g->N; n++) {
                const int64_t o = c * HW + n * CHW, nx = next_run(g, c, n);
                if (nx >= 0) {
                    prefetch_run(x + nx, HW, false);
                    prefetch_run(dy + nx, HW, false);
                    if (ry)
                        prefetch_run(ry + nx, HW, false);
                }
                if (ry)
                    bn_dsums_masked_f32(x + o, ry + o, dy + o, HW, mu, &sdy, &sdyd);
                else
                    dsums_f32(x + o, dy + o, HW, mu, &sdy, &sdyd);
            }
        if (dbeta)
            dbeta[c] += (float)sdy;
        if (dgamma)
            dgamma[c] += (float)(sdyd * rs);
        if (!dx)
            continue;
        float A, B, C;
        bn_dx_coef_f32(j, c, rs, sdy, sdyd, &A, &B, &C);
        for (int64_t n = 0; n < g->N; n++) {
            const int64_t o = c * HW + n * CHW;
            if (md_in_dx)
                bn_dx_inplace_f32(x + o, dx + o, HW, mu, A, B, C);
            else if (ry)
                bn_dx_masked_f32(x + o, ry + o, dy + o, dx + o, HW, mu, A, B, C, j->dx_fresh,
                                 j->stream);
            else
                bn_dx_f32(x + o, dy + o, dx + o, HW, mu, A, B, C, j->dx_fresh, j->stream);
        }
    }
}

#if TG_WIDE_SIMD
TG_WIDE static void bn_train_f32_wide(const bn_job *j, int64_t c0, int64_t c1) {
    bn_train_f32(j, c0, c1);
}
TG_WIDE static void bn_eval_f32_wide(const bn_job *j, int64_t c0, int64_t c1) {
    bn_eval_f32(j, c0, c1);
}
TG_WIDE static void bn_backward_f32_wide(const bn_job *j, int64_t c0, int64_t c1) {
    bn_backward_f32(j, c0, c1);
}
#endif

/* The float64 (any dtype) forward's statistics of channel c, saved (and in training the running
 * ones updated), and the affine y = x a + b that normalizes with them. Training: the batch mean,
 * then the biased variance about it, two passes in double; evaluation: the running ones. */
static void bn_coef(const bn_job *j, bool training, int64_t c, double *a, double *b) {
    const tg__bn_geom *g = j->g;
    const double m = (double)(g->N * g->HW);
    TG_FOR_DTYPE(j->dtype, T, {
        const T *x = j->x, *gamma = j->gamma, *beta = j->beta;
        if (!training) {
            const T *rm = j->rm_in, *rv = j->rv_in;
            const double rstd = 1.0 / sqrt((double)rv[c] + j->eps);
            *a = (gamma ? gamma[c] : 1.0) * rstd;
            *b = (beta ? beta[c] : 0.0) - rm[c] * *a;
            if (j->save_mean)
                ((T *)j->save_mean)[c] = rm[c];
            if (j->save_rstd)
                ((T *)j->save_rstd)[c] = (T)rstd;
            return;
        }
        T *rm = j->rm, *rv = j->rv;
        double s = 0, ss = 0;
        int64_t e;
        BN_SUM(g, c, e, s, (double)x[e]);
        const double mean = s / m;
        BN_SUM(g, c, e, ss, ((double)x[e] - mean) * ((double)x[e] - mean));
        const double var = ss / m, rstd = 1.0 / sqrt(var + j->eps);
        /* a = gamma rstd, b = beta - mean a */
        *a = (gamma ? gamma[c] : 1.0) * rstd;
        *b = (beta ? beta[c] : 0.0) - mean * *a;
        ((T *)j->save_mean)[c] = (T)mean;
        ((T *)j->save_rstd)[c] = (T)rstd;
        if (rm)
            rm[c] = (T)((1.0 - j->momentum) * rm[c] + j->momentum * mean);
        if (rv)
            rv[c] = (T)((1.0 - j->momentum) * rv[c] + j->momentum * (ss / (m - 1.0)));
    });
}

static void bn_train_channels(void *ctx, int64_t c0, int64_t c1) {
    const bn_job *j = ctx;
    if (j->dtype == TG_F32) {
#if TG_WIDE_SIMD
        if (use_wide())
            bn_train_f32_wide(j, c0, c1);
        else
#endif
            bn_train_f32(j, c0, c1);
        stream_fence(j->stream);
        return;
    }
    const tg__bn_geom *g = j->g;
    TG_FOR_DTYPE(j->dtype, T, {
        const T *x = j->x;
        T *y = j->y;
        for (int64_t c = c0; c < c1; c++) {
            double a, b;
            bn_coef(j, true, c, &a, &b);
            const T ta = (T)a, tb = (T)b;
            if (j->relu) {
                BN_FOR(g, c, i, const T v = x[i] * ta + tb; y[i] = v < 0 ? 0 : v;)
            } else {
                BN_FOR(g, c, i, y[i] = x[i] * ta + tb;)
            }
        }
    });
}

static void bn_eval_channels(void *ctx, int64_t c0, int64_t c1) {
    const bn_job *j = ctx;
    if (j->dtype == TG_F32) {
#if TG_WIDE_SIMD
        if (use_wide())
            bn_eval_f32_wide(j, c0, c1);
        else
#endif
            bn_eval_f32(j, c0, c1);
        stream_fence(j->stream);
        return;
    }
    const tg__bn_geom *g = j->g;
    TG_FOR_DTYPE(j->dtype, T, {
        const T *x = j->x;
        T *y = j->y;
        for (int64_t c = c0; c < c1; c++) {
            double a, b;
            bn_coef(j, false, c, &a, &b);
            const T ta = (T)a, tb = (T)b;
            if (j->relu) {
                BN_FOR(g, c, i, const T v = x[i] * ta + tb; y[i] = v < 0 ? 0 : v;)
            } else {
                BN_FOR(g, c, i, y[i] = x[i] * ta + tb;)
            }
        }
    });
}

/* Backward. With xhat = (x - mean) rstd and y = gamma xhat + beta, per channel over its M values:
 *   dbeta = sum dy,  dgamma = sum dy xhat.
 * In training mean and rstd depend on x (mean = sum x / M, rstd = (sum (x - mean)^2 / M + eps)^-1/2),
 * and differentiating through them gives the fused form
 *   dx = gamma rstd (dy - dbeta / M - xhat dgamma / M)
 * (the two sums are the projections of dy on 1 and on xhat that normalization removes). In
 * eval they are constants: dx = gamma rstd dy. */
/* dy at e, through the fused relu's mask when there is one (relu's select: the same bits) */
#define BN_DY(e) (ry ? (ry[e] > 0 ? dy[e] : (T)0) : dy[e])
static void bn_backward_channels(void *ctx, int64_t c0, int64_t c1) {
    const bn_job *j = ctx;
    if (j->dtype == TG_F32) {
#if TG_WIDE_SIMD
        if (use_wide())
            bn_backward_f32_wide(j, c0, c1);
        else
#endif
            bn_backward_f32(j, c0, c1);
        stream_fence(j->stream);
        return;
    }
    const tg__bn_geom *g = j->g;
    const double m = (double)(g->N * g->HW);
    TG_FOR_DTYPE(j->dtype, T, {
        const T *x = j->x, *dy = j->dy, *gamma = j->gamma, *mean = j->mean, *rstd = j->rstd;
        const T *ry = j->relu_y;
        T *dx = j->dx, *dgamma = j->dgamma, *dbeta = j->dbeta;
        for (int64_t c = c0; c < c1; c++) {
            const double mu = mean[c], rs = rstd[c];
            double sdy = 0, sdyx = 0;
            if (dgamma || dbeta || (dx && j->training)) {
                int64_t e;
                BN_SUM(g, c, e, sdy, (double)BN_DY(e));
                BN_SUM(g, c, e, sdyx, (double)BN_DY(e) * (((double)x[e] - mu) * rs));
            }
            if (dbeta)
                dbeta[c] += (T)sdy;
            if (dgamma)
                dgamma[c] += (T)sdyx;
            if (!dx)
                continue;
            const double k = (gamma ? gamma[c] : 1.0) * rs;
            if (j->training) {
                const double mdy = sdy / m, mdyx = sdyx / m;
                BN_FOR(g, c, i,
                       dx[i] = (j->dx_fresh ? 0 : dx[i]) +
                               (T)(k * (BN_DY(i) - mdy - (x[i] - mu) * rs * mdyx));)
            } else {
                BN_FOR(g, c, i, dx[i] = (j->dx_fresh ? 0 : dx[i]) + (T)(k * BN_DY(i));)
            }
        }
    });
#undef BN_DY
}

/* ---- Batch norm, relu and max pooling fused (batch_norm_relu_max_pool2d) ----
 * y = max_pool2d(relu(bn(x))), bit for bit the three ops in turn, without storing relu's output.
 * The work is split over channels as batch norm's; a channel's statistics are batch norm's, and
 * then image by image its plane of relu(bn(x)) is formed in the thread's buffer (L1 for the
 * CNN's 28 x 28) and pooled from there: the pool's own plane kernels, on the same values. The
 * backward forms each plane's dz = relu's backward of the pool's backward: the pool's plane
 * kernel with the mask of the pool's output (z at the argmax is the window's maximum, so z > 0
 * there exactly where the maximum is > 0; elsewhere dz is 0 either way), into dx when it is
 * fresh (batch_norm_relu's path: the sums read it back and the second pass finishes it in
 * place) or into the buffer, formed again for the second pass. The sums see the same dz run by
 * run, in the same order, as batch norm's. */

/* dz of one plane (po: its offset in the pool's output) into d, which is stored (fresh). */
TG_BODY void bnp_dz_plane_f32(const bn_job *j, int64_t po, float *d) {
#if defined(__SSE2__)
    if (is_pool2x2(j->pool)) {
        maxpool2x2_bwd_plane_f32(j->pool, (const float *)j->dy + po, (const float *)j->relu_y + po,
                                 j->argmax_in + po, d, true);
        return;
    }
#endif
    maxpool_bwd_plane(j->pool, TG_F32, j->argmax_in + po, (const float *)j->dy + po,
                      (const float *)j->relu_y + po, d, true);
}

TG_BODY void bnp_forward_f32(const bn_job *j, int64_t c0, int64_t c1, float *buf) {
    const tg__bn_geom *g = j->g;
    const int64_t HW = g->HW, CHW = g->C * HW, ohow = j->pool->OH * j->pool->OW;
    for (int64_t c = c0; c < c1; c++) {
        float mu, fa, fb;
        if (j->training)
            bn_train_coef_f32(j, c, &mu, &fa, &fb);
        else
            bn_eval_coef_f32(j, c, &mu, &fa, &fb);
        for (int64_t n = 0; n < g->N; n++) {
            const int64_t po = (n * g->C + c) * ohow;
            bn_affine_f32((const float *)j->x + c * HW + n * CHW, buf, HW, mu, fa, fb, false, true);
#if defined(__SSE2__)
            if (is_pool2x2(j->pool)) {
                maxpool2x2_plane_f32(j->pool, buf, (float *)j->y + po, j->argmax + po);
                continue;
            }
#endif
            maxpool_plane(j->pool, TG_F32, buf, (float *)j->y + po, j->argmax + po);
        }
    }
}

TG_BODY void bnp_backward_f32(const bn_job *j, int64_t c0, int64_t c1, float *buf) {
    const tg__bn_geom *g = j->g;
    const int64_t HW = g->HW, CHW = g->C * HW, ohow = j->pool->OH * j->pool->OW;
    const float *x = j->x, *mean = j->mean, *rstd = j->rstd;
    float *dx = j->dx, *dgamma = j->dgamma, *dbeta = j->dbeta;
    const bool in_dx = dx && j->dx_fresh; /* dz formed in dx, finished there in place */
    const bool sums = dgamma || dbeta || (dx && j->training);
    for (int64_t c = c0; c < c1; c++) {
        const float mu = mean[c];
        const double rs = rstd[c];
        double sdy = 0, sdyd = 0; /* sum dz, sum dz (x - mu) */
        if (sums || in_dx)
            for (int64_t n = 0; n < g->N; n++) {
                const int64_t o = c * HW + n * CHW, nx = next_run(g, c, n);
                if (nx >= 0 && sums)
                    prefetch_run(x + nx, HW, false);
                if (nx >= 0 && in_dx)
                    prefetch_run(dx + nx, HW, true);
                float *d = in_dx ? dx + o : buf;
                bnp_dz_plane_f32(j, (n * g->C + c) * ohow, d);
                if (sums)
                    dsums_f32(x + o, d, HW, mu, &sdy, &sdyd);
            }
        if (dbeta)
            dbeta[c] += (float)sdy;
        if (dgamma)
            dgamma[c] += (float)(sdyd * rs);
        if (!dx)
            continue;
        float A, B, C;
        bn_dx_coef_f32(j, c, rs, sdy, sdyd, &A, &B, &C);
        for (int64_t n = 0; n < g->N; n++) {
            const int64_t o = c * HW + n * CHW;
            if (in_dx) {
                bn_dx_inplace_f32(x + o, dx + o, HW, mu, A, B, C);
                continue;
            }
            bnp_dz_plane_f32(j, (n * g->C + c) * ohow, buf);
            bn_dx_f32(x + o, buf, dx + o, HW, mu, A, B, C, false, false);
        }
    }
}

#if TG_WIDE_SIMD
TG_WIDE static void bnp_forward_f32_wide(const bn_job *j, int64_t c0, int64_t c1, float *buf) {
    bnp_forward_f32(j, c0, c1, buf);
}
TG_WIDE static void bnp_backward_f32_wide(const bn_job *j, int64_t c0, int64_t c1, float *buf) {
    bnp_backward_f32(j, c0, c1, buf);
}
#endif

/* float64 (any dtype): batch norm's generic arithmetic (bn_train_channels, bn_backward_channels)
 * a plane at a time through the buffer; the two sums of a channel are taken run by run, each
 * in its own order, which is the order of batch norm's two passes. */
static void bnp_forward_generic(const bn_job *j, int64_t c0, int64_t c1, void *buf) {
    const tg__bn_geom *g = j->g;
    const int64_t HW = g->HW, CHW = g->C * HW, ohow = j->pool->OH * j->pool->OW;
    TG_FOR_DTYPE(j->dtype, T, {
        const T *x = j->x;
        T *z = buf, *y = j->y;
        for (int64_t c = c0; c < c1; c++) {
            double a, b;
            bn_coef(j, j->training, c, &a, &b);
            const T ta = (T)a, tb = (T)b;
            for (int64_t n = 0; n < g->N; n++) {
                const T *xr = x + c * HW + n * CHW;
                for (int64_t q = 0; q < HW; q++) {
                    const T v = xr[q] * ta + tb;
                    z[q] = v < 0 ? 0 : v;
                }
                const int64_t po = (n * g->C + c) * ohow;
                maxpool_plane(j->pool, j->dtype, z, y + po, j->argmax + po);
            }
        }
    });
}

static void bnp_backward_generic(const bn_job *j, int64_t c0, int64_t c1, void *buf) {
    const tg__bn_geom *g = j->g;
    const int64_t HW = g->HW, CHW = g->C * HW, ohow = j->pool->OH * j->pool->OW;
    const double m = (double)(g->N * HW);
    TG_FOR_DTYPE(j->dtype, T, {
        const T *x = j->x, *dy = j->dy, *py = j->relu_y, *gamma = j->gamma, *mean = j->mean;
        const T *rstd = j->rstd;
        T *dz = buf, *dx = j->dx, *dgamma = j->dgamma, *dbeta = j->dbeta;
        for (int64_t c = c0; c < c1; c++) {
            const double mu = mean[c], rs = rstd[c];
            double sdy = 0, sdyx = 0;
            if (dgamma || dbeta || (dx && j->training))
                for (int64_t n = 0; n < g->N; n++) {
                    const int64_t po = (n * g->C + c) * ohow;
                    const T *xr = x + c * HW + n * CHW;
                    maxpool_bwd_plane(j->pool, j->dtype, j->argmax_in + po, dy + po, py + po, dz,
                                      true);
                    LANE_SUM(HW, q, sdy, (double)dz[q]);
                    LANE_SUM(HW, q, sdyx, (double)dz[q] * (((double)xr[q] - mu) * rs));
                }
            if (dbeta)
                dbeta[c] += (T)sdy;
            if (dgamma)
                dgamma[c] += (T)sdyx;
            if (!dx)
                continue;
            const double k = (gamma ? gamma[c] : 1.0) * rs;
            const double mdy = sdy / m, mdyx = sdyx / m;
            for (int64_t n = 0; n < g->N; n++) {
                const int64_t po = (n * g->C + c) * ohow;
                const T *xr = x + c * HW + n * CHW;
                T *dxr = dx + c * HW + n * CHW;
                maxpool_bwd_plane(j->pool, j->dtype, j->argmax_in + po, dy + po, py + po, dz, true);
                for (int64_t q = 0; q < HW; q++) {
                    const T t = j->training ? (T)(k * (dz[q] - mdy - (xr[q] - mu) * rs * mdyx))
                                            : (T)(k * dz[q]);
                    dxr[q] = (j->dx_fresh ? 0 : dxr[q]) + t;
                }
            }
        }
    });
}

typedef struct bnp_task {
    const bn_job *j;
    bool backward;
} bnp_task;

static void bnp_channels(const bnp_task *t, int64_t c0, int64_t c1, void *buf) {
    const bn_job *j = t->j;
    if (j->dtype == TG_F32) {
#if TG_WIDE_SIMD
        if (use_wide()) {
            (t->backward ? bnp_backward_f32_wide : bnp_forward_f32_wide)(j, c0, c1, buf);
            return;
        }
#endif
        if (t->backward)
            bnp_backward_f32(j, c0, c1, buf);
        else
            bnp_forward_f32(j, c0, c1, buf);
        return;
    }
    (t->backward ? bnp_backward_generic : bnp_forward_generic)(j, c0, c1, buf);
}

static void bnp_run(void *p, int tid, int nth) {
    const bnp_task *t = p;
    int64_t b, e;
    tg__split(t->j->g->C, 1, tid, nth, &b, &e);
    if (b < e)
        bnp_channels(t, b, e, byte_off(t->j->ws, (size_t)tid * t->j->plane_bytes));
}

/* Over the channels on as many threads as the work, the channels and the buffers allow. */
static tg_status bnp_parallel(const bn_job *j, bool backward, size_t ws_bytes, int64_t work) {
    if (!j->ws || ws_bytes < j->plane_bytes) {
        tg__set_last_error(TG_ERR_VALUE,
                           "batch_norm_relu_max_pool2d: workspace of %zu bytes, at least %zu "
                           "needed (tg__bn_relu_pool_workspace_bytes)",
                           j->ws ? ws_bytes : 0, j->plane_bytes);
        return TG_ERR_VALUE;
    }
    const bnp_task t = {j, backward};
    int64_t nth = tg_get_num_threads();
    nth = min64(nth, min64(j->g->C, (int64_t)(ws_bytes / j->plane_bytes)));
    if (nth <= 1 || work < TG_PAR_MIN_ELEMS)
        bnp_channels(&t, 0, j->g->C, j->ws);
    else
        tg__parallel_run((int)nth, bnp_run, (void *)&t);
    return TG_OK;
}

static size_t bnp_plane_bytes(const tg__bn_geom *g, tg_dtype dtype) {
    return round64((size_t)g->HW * tg__dtype_size(dtype));
}

size_t tg__bn_relu_pool_workspace_bytes(const tg__bn_geom *g, tg_dtype dtype, int nthreads) {
    return (size_t)(nthreads < 1 ? 1 : nthreads) * bnp_plane_bytes(g, dtype);
}

tg_status tg__bn_relu_pool_forward(const tg__bn_geom *g, const tg__pool2d_geom *pg, tg_dtype dtype,
                                   int training, const void *x, const void *gamma, const void *beta,
                                   double eps, double momentum, void *running_mean,
                                   void *running_var, void *y, int32_t *argmax, void *save_mean,
                                   void *save_rstd, void *ws, size_t ws_bytes) {
    bn_job j = {.g = g,
                .pool = pg,
                .dtype = dtype,
                .training = training,
                .relu = true,
                .eps = eps,
                .momentum = momentum,
                .x = x,
                .gamma = gamma,
                .beta = beta,
                .y = y,
                .argmax = argmax,
                .save_mean = save_mean,
                .save_rstd = save_rstd,
                .ws = ws,
                .plane_bytes = bnp_plane_bytes(g, dtype)};
    if (training) {
        j.rm = running_mean;
        j.rv = running_var;
    } else {
        j.rm_in = running_mean;
        j.rv_in = running_var;
    }
    return bnp_parallel(&j, false, ws_bytes, (training ? 3 : 1) * g->N * g->C * g->HW);
}

tg_status tg__bn_relu_pool_backward(const tg__bn_geom *g, const tg__pool2d_geom *pg, tg_dtype dtype,
                                    int training, const void *x, const void *y,
                                    const int32_t *argmax, const void *gamma, const void *mean,
                                    const void *rstd, const void *dy, void *dx, void *dgamma,
                                    void *dbeta, bool dx_fresh, void *ws, size_t ws_bytes) {
    const bn_job j = {.g = g,
                      .pool = pg,
                      .dtype = dtype,
                      .training = training,
                      .x = x,
                      .relu_y = y,
                      .argmax_in = argmax,
                      .gamma = gamma,
                      .mean = mean,
                      .rstd = rstd,
                      .dy = dy,
                      .dx = dx,
                      .dgamma = dgamma,
                      .dbeta = dbeta,
                      .dx_fresh = dx_fresh,
                      .ws = ws,
                      .plane_bytes = bnp_plane_bytes(g, dtype)};
    return bnp_parallel(&j, true, ws_bytes, 2 * g->N * g->C * g->HW);
}

static int64_t bn_work(const tg__bn_geom *g) { return g->N * g->C * g->HW; }

void tg__bn_forward_train(const tg__bn_geom *g, tg_dtype dtype, const void *x, const void *gamma,
                          const void *beta, double eps, double momentum, void *y, void *save_mean,
                          void *save_rstd, void *running_mean, void *running_var) {
    tg__bn_relu_forward_train(g, dtype, false, x, gamma, beta, eps, momentum, y, save_mean,
                              save_rstd, running_mean, running_var);
}

void tg__bn_relu_forward_train(const tg__bn_geom *g, tg_dtype dtype, bool relu, const void *x,
                               const void *gamma, const void *beta, double eps, double momentum,
                               void *y, void *save_mean, void *save_rstd, void *running_mean,
                               void *running_var) {
    bn_job j = {.g = g,
                .relu = relu,
                .dtype = dtype,
                .eps = eps,
                .momentum = momentum,
                .x = x,
                .gamma = gamma,
                .beta = beta,
                .y = y,
                .save_mean = save_mean,
                .save_rstd = save_rstd,
                .rm = running_mean,
                .rv = running_var,
                .stream = dtype == TG_F32 && (size_t)bn_work(g) * 4 >= tg__stream_min_bytes()};
    parallel_items(g->C, 3 * bn_work(g), bn_train_channels, &j);
}

void tg__bn_forward_eval(const tg__bn_geom *g, tg_dtype dtype, const void *x, const void *gamma,
                         const void *beta, const void *running_mean, const void *running_var,
                         double eps, void *y, void *save_mean, void *save_rstd) {
    tg__bn_relu_forward_eval(g, dtype, false, x, gamma, beta, running_mean, running_var, eps, y,
                             save_mean, save_rstd);
}

void tg__bn_relu_forward_eval(const tg__bn_geom *g, tg_dtype dtype, bool relu, const void *x,
                              const void *gamma, const void *beta, const void *running_mean,
                              const void *running_var, double eps, void *y, void *save_mean,
                              void *save_rstd) {
    bn_job j = {.g = g,
                .relu = relu,
                .dtype = dtype,
                .eps = eps,
                .x = x,
                .gamma = gamma,
                .beta = beta,
                .rm_in = running_mean,
                .rv_in = running_var,
                .y = y,
                .save_mean = save_mean,
                .save_rstd = save_rstd,
                .stream = dtype == TG_F32 && (size_t)bn_work(g) * 4 >= tg__stream_min_bytes()};
    parallel_items(g->C, bn_work(g), bn_eval_channels, &j);
}

void tg__bn_backward(const tg__bn_geom *g, tg_dtype dtype, int training, const void *x,
                     const void *gamma, const void *mean, const void *rstd, const void *dy,
                     void *dx, void *dgamma, void *dbeta, bool dx_fresh) {
    tg__bn_relu_backward(g, dtype, training, x, NULL, gamma, mean, rstd, dy, dx, dgamma, dbeta,
                         dx_fresh);
}

void tg__bn_relu_backward(const tg__bn_geom *g, tg_dtype dtype, int training, const void *x,
                          const void *relu_y, const void *gamma, const void *mean, const void *rstd,
                          const void *dy, void *dx, void *dgamma, void *dbeta, bool dx_fresh) {
    bn_job j = {.g = g,
                .relu_y = relu_y,
                .dx_fresh = dx_fresh,
                .stream =
                    dx_fresh && dtype == TG_F32 && (size_t)bn_work(g) * 4 >= tg__stream_min_bytes(),
                .dtype = dtype,
                .training = training,
                .x = x,
                .gamma = gamma,
                .mean = mean,
                .rstd = rstd,
                .dy = dy,
                .dx = dx,
                .dgamma = dgamma,
                .dbeta = dbeta};
    parallel_items(g->C, 2 * bn_work(g), bn_backward_channels, &j);
}
