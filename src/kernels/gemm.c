/* gemm.c -- C = beta C + op(A) op(B), row-major: a cache-blocked, packing kernel.
 *
 * The layout is the classic one (Goto; BLIS): for each block of nc columns of C and each block of
 * kc of the inner dimension, op(B)'s kc x nc block is packed into panels of nr columns, then for
 * each block of mc rows op(A)'s mc x kc block into panels of mr rows, and a register-blocked
 * micro-kernel computes each mr x nr tile of C from one A panel and one B panel. Packing turns the
 * four transpose forms into one contiguous access pattern and keeps the panels in cache.
 *
 * Micro-kernels: AVX-512 (src/gemm_avx512.c), AVX2+FMA (src/gemm_avx2.c) and portable C (here),
 * the best the CPU runs chosen at the first call, or the one named by TG_KERNEL
 * (portable|avx2|avx512|openblas). With -DTG_USE_OPENBLAS=ON, OpenBLAS's cblas_?gemm is one more
 * choice, and the default.
 *
 * Determinism: each C element is summed over k in increasing order, kc at a time, by the same
 * micro-kernel whatever tile, block or thread it falls in (edge tiles through the kernel's edge
 * variant, masked loads and stores of C, or a scratch tile, with the same arithmetic). Threads
 * split C into ranges of rows or of columns, never k, so the result is bit-identical for any
 * thread count. Different kernels (FMA or not) round differently.
 *
 * Small products (the 2-4-2 network's [200,2] x [2,4], attention's per-head [16,16] x [16,16])
 * skip packing, blocks and threads: the kernel's direct kernel (tg__direct_fn) reads A, B and C
 * in place (a transposed B is copied into the [K, N] form first) with the micro-kernel's own
 * arithmetic, so the result is bit for bit that of the blocked path: the size at which tg__gemm
 * switches between the two does not change any result. */
#include "parallel.h"

#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#ifdef TG_HAVE_OPENBLAS
#include <cblas.h>
#endif

/* Below this many multiply-adds a product runs on one thread (a wake-up costs microseconds). */
#define TG_GEMM_PAR_MIN ((int64_t)1 << 21)
/* Below this many multiply-adds a product takes the direct kernel (no packing, no blocks, one
 * thread): measured faster than the blocked path for every shape below 2^21 on the AVX-512
 * machine (1.04x at 128^3 to 10x at 16^3 and on shapes with a side under the tile), and the
 * blocked path's threads only start at 2^21. The result is the same either way. */
#define TG_GEMM_DIRECT_MAX TG_GEMM_PAR_MIN
/* A product that runs on one thread anyway (one thread set, or called from inside a job, as the
 * convolutions' per-image products are) takes the direct kernel up to this size (and on more
 * threads, with M >= N, the direct kernel on each thread's rows: gemm_direct_job_run): packing
 * costs more than it saves below it (measured on AVX-512 at 1 thread: the Fashion-MNIST MLP step 3-4%
 * faster, the CNN's 5-7%, the char-level transformer's 5-9%; at 2^25 the MLP's 128 x 784 x 256
 * went direct too and its step got slower). Same result, so the thread count still changes
 * nothing. */
#define TG_GEMM_DIRECT_1T_MAX ((int64_t)1 << 24)

/* ---- The portable micro-kernel: plain C the compiler vectorizes with SSE2 ---- */

#define PORT_MR 4
#define PORT_NR 8
#define PORT_UKERNEL(name, T)                                                                      \
    static void name(int64_t kc, const void *a_, const void *b_, void *c_, int64_t ldc,            \
                     int accumulate) {                                                             \
        const T *a = a_, *b = b_;                                                                  \
        T *c = c_;                                                                                 \
        T acc[PORT_MR][PORT_NR];                                                                   \
        for (int r = 0; r < PORT_MR; r++)                                                          \
            for (int j = 0; j < PORT_NR; j++)                                                      \
                acc[r][j] = accumulate ? c[r * ldc + j] : 0;                                       \
        for (int64_t k = 0; k < kc; k++, a += PORT_MR, b += PORT_NR)                               \
            for (int r = 0; r < PORT_MR; r++)                                                      \
                for (int j = 0; j < PORT_NR; j++)                                                  \
                    acc[r][j] += a[r] * b[j];                                                      \
        for (int r = 0; r < PORT_MR; r++)                                                          \
            for (int j = 0; j < PORT_NR; j++)                                                      \
                c[r * ldc + j] = acc[r][j];                                                        \
    }
PORT_UKERNEL(uk_portable_f32, float)
PORT_UKERNEL(uk_portable_f64, double)

/* The portable direct kernel, with op(B)[k][j] at B[k*rsb + j*csb] (csb 1: tg__direct_fn's B;
 * B^T: the fallback when no pack buffer can be had). Tiles of up to PORT_MR x PORT_NR, each
 * element C (or 0) plus a_ik b_kj in increasing k: the portable micro-kernel's arithmetic. */
#define PORT_DIRECT(name, T)                                                                       \
    static void name##_strided(bool ta, int64_t M, int64_t N, int64_t K, const T *A, int64_t lda,  \
                               const T *B, int64_t rsb, int64_t csb, int beta, T *C,               \
                               int64_t ldc) {                                                      \
        const int64_t sr = ta ? 1 : lda, sk = ta ? lda : 1;                                        \
        for (int64_t i0 = 0; i0 < M; i0 += PORT_MR)                                                \
            for (int64_t j0 = 0; j0 < N; j0 += PORT_NR) {                                          \
                const int64_t mr = M - i0 < PORT_MR ? M - i0 : PORT_MR;                            \
                const int64_t nr = N - j0 < PORT_NR ? N - j0 : PORT_NR;                            \
                T acc[PORT_MR][PORT_NR];                                                           \
                for (int64_t r = 0; r < mr; r++)                                                   \
                    for (int64_t j = 0; j < nr; j++)                                               \
                        acc[r][j] = beta ? C[(i0 + r) * ldc + j0 + j] : 0;                         \
                for (int64_t k = 0; k < K; k++) {                                                  \
                    const T *a = A + i0 * sr + k * sk, *b = B + k * rsb + j0 * csb;                \
                    for (int64_t r = 0; r < mr; r++)                                               \
                        for (int64_t j = 0; j < nr; j++)                                           \
                            acc[r][j] += a[r * sr] * b[j * csb];                                   \
                }                                                                                  \
                for (int64_t r = 0; r < mr; r++)                                                   \
                    for (int64_t j = 0; j < nr; j++)                                               \
                        C[(i0 + r) * ldc + j0 + j] = acc[r][j];                                    \
            }                                                                                      \
    }                                                                                              \
    static void name(bool ta, int64_t M, int64_t N, int64_t K, const void *A, int64_t lda,         \
                     const void *B, int64_t ldb, int beta, void *C, int64_t ldc) {                 \
        name##_strided(ta, M, N, K, A, lda, B, ldb, 1, beta, C, ldc);                              \
    }
PORT_DIRECT(direct_portable_f32, float)
PORT_DIRECT(direct_portable_f64, double)

static const tg__ukernel uk_portable[2] = {
    {PORT_MR, PORT_NR, 128, 256, 2048, uk_portable_f32, direct_portable_f32, NULL, NULL, NULL},
    {PORT_MR, PORT_NR, 64, 256, 2048, uk_portable_f64, direct_portable_f64, NULL, NULL, NULL},
};

/* The whole product in portable C from the operands as they are, with no buffer (out of
 * memory: still correct, just slow; rounded as the portable kernel rounds). */
static void gemm_unpacked(tg_dtype dtype, bool ta, bool tb, int64_t M, int64_t N, int64_t K,
                          const void *A, int64_t lda, const void *B, int64_t ldb, int beta, void *C,
                          int64_t ldc) {
    const int64_t rsb = tb ? 1 : ldb, csb = tb ? ldb : 1;
    if (dtype == TG_F32)
        direct_portable_f32_strided(ta, M, N, K, A, lda, B, rsb, csb, beta, C, ldc);
    else
        direct_portable_f64_strided(ta, M, N, K, A, lda, B, rsb, csb, beta, C, ldc);
}

/* ---- Kernel selection ---- */

static const char *const kernel_names[TG_KERNEL_COUNT] = {"portable", "avx2", "avx512", "openblas"};

const char *tg__kernel_id_name(tg__kernel_id id) {
    return (id >= 0 && id < TG_KERNEL_COUNT) ? kernel_names[id] : "unknown";
}

int tg__kernel_available(tg__kernel_id id) {
#if defined(__x86_64__)
    __builtin_cpu_init();
#endif
    switch (id) {
    case TG_KERNEL_PORTABLE: return 1;
#if defined(__x86_64__)
    case TG_KERNEL_AVX2: return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case TG_KERNEL_AVX512: return __builtin_cpu_supports("avx512f");
#endif
#ifdef TG_HAVE_OPENBLAS
    case TG_KERNEL_OPENBLAS: return 1;
#endif
    default: return 0; /* OpenBLAS when not built with it, or a kernel for another CPU */
    }
}

bool tg__have_avx512(void) {
    static atomic_int have = -1; /* every thread computes the same value */
    int w = atomic_load_explicit(&have, memory_order_relaxed);
    if (w < 0) {
        w = tg__kernel_available(TG_KERNEL_AVX512);
        atomic_store_explicit(&have, w, memory_order_relaxed);
    }
    return w;
}

static atomic_int current_kernel = -1;

static tg__kernel_id kernel_default(void) {
    const char *env = getenv("TG_KERNEL");
    if (env)
        for (int id = 0; id < TG_KERNEL_COUNT; id++)
            if (strcmp(env, kernel_names[id]) == 0 && tg__kernel_available((tg__kernel_id)id))
                return (tg__kernel_id)id;
    /* An unknown or unavailable TG_KERNEL falls back to the best kernel; tg_kernel_name()
     * tells which one runs. */
    for (int id = TG_KERNEL_COUNT - 1; id >= 0; id--)
        if (tg__kernel_available((tg__kernel_id)id))
            return (tg__kernel_id)id;
    return TG_KERNEL_PORTABLE;
}

tg__kernel_id tg__kernel_get(void) {
    int k = atomic_load(&current_kernel);
    if (k < 0) {
        int expected = -1;
        atomic_compare_exchange_strong(&current_kernel, &expected, (int)kernel_default());
        k = atomic_load(&current_kernel);
    }
    return (tg__kernel_id)k;
}

tg_status tg__kernel_set(tg__kernel_id id) {
    if (!tg__kernel_available(id))
        return tg__set_last_error(TG_ERR_VALUE, "tg__kernel_set: kernel %s is not available",
                                  tg__kernel_id_name(id));
    atomic_store(&current_kernel, (int)id);
    return TG_OK;
}

const char *tg_kernel_name(void) { return tg__kernel_id_name(tg__kernel_get()); }

static const tg__ukernel *ukernel_for(tg__kernel_id id, tg_dtype dtype) {
    const int d = dtype == TG_F32 ? 0 : 1;
    switch (id) {
    case TG_KERNEL_AVX2: return d ? &tg__uk_avx2_f64 : &tg__uk_avx2_f32;
    case TG_KERNEL_AVX512: return d ? &tg__uk_avx512_f64 : &tg__uk_avx512_f32;
    default: return &uk_portable[d];
    }
}

/* ---- Cache blocks, from the cache sizes this CPU reports ----
 * The loops keep one mr x kc panel of op(A) in L1 while the kc x nr panels of the kc x nc block
 * of op(B) stream past it from L2 (compute_block), a row of tiles at a time:
 *   kc = 2/3 of L1d / (nr * size),  mc = 1/2 of L2 / (kc * size),  nc = 1/2 of L2 / (kc * size)
 * (the rest of each level holds the other operand's panels and C), clamped to sane ranges. The
 * sizes come from sysconf, else /sys/devices/system/cpu/cpu0/cache, else the kernel's own
 * defaults. The blocks change speed only: each element is still summed over k in increasing
 * order, and storing C between k blocks is exact, so the result does not depend on them. */

static int64_t cache_sizes[3]; /* L1d, L2, L3 in bytes; 0 = unknown */
static pthread_once_t cache_once = PTHREAD_ONCE_INIT;

/* The size of the cache of `level` (1: data) from sysfs, or 0. */
static int64_t sysfs_cache_size(int level) {
    for (int idx = 0; idx < 8; idx++) {
        char path[96], buf[32] = "";
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu0/cache/index%d/level", idx);
        FILE *f = fopen(path, "r");
        if (!f)
            return 0;
        const int lv = fgets(buf, sizeof buf, f) ? (int)strtol(buf, NULL, 10) : 0;
        fclose(f);
        if (lv != level)
            continue;
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu0/cache/index%d/type", idx);
        if ((f = fopen(path, "r")) != NULL) {
            const bool instr = fgets(buf, sizeof buf, f) && strncmp(buf, "Instruction", 11) == 0;
            fclose(f);
            if (instr)
                continue;
        }
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu0/cache/index%d/size", idx);
        if (!(f = fopen(path, "r")))
            continue;
        char *end = NULL;
        int64_t v = fgets(buf, sizeof buf, f) ? strtoll(buf, &end, 10) : 0;
        fclose(f);
        if (end && (*end == 'K' || *end == 'k'))
            v <<= 10;
        else if (end && *end == 'M')
            v <<= 20;
        return v > 0 ? v : 0;
    }
    return 0;
}

static void cache_read(void) {
    long sc[3] = {-1, -1, -1};
#if defined(_SC_LEVEL1_DCACHE_SIZE) && defined(_SC_LEVEL2_CACHE_SIZE) &&                           \
    defined(_SC_LEVEL3_CACHE_SIZE)
    sc[0] = sysconf(_SC_LEVEL1_DCACHE_SIZE);
    sc[1] = sysconf(_SC_LEVEL2_CACHE_SIZE);
    sc[2] = sysconf(_SC_LEVEL3_CACHE_SIZE);
#endif
    for (int l = 0; l < 3; l++)
        cache_sizes[l] = sc[l] > 0 ? sc[l] : sysfs_cache_size(l + 1);
}

void tg__gemm_cache_sizes(int64_t sizes[3]) {
    pthread_once(&cache_once, cache_read);
    memcpy(sizes, cache_sizes, sizeof cache_sizes);
}

static int64_t clamp64(int64_t v, int64_t lo, int64_t hi) { return v < lo ? lo : v > hi ? hi : v; }

void tg__gemm_blocks(const tg__ukernel *uk, size_t esz, int64_t *mc, int64_t *kc, int64_t *nc) {
    int64_t cs[3];
    tg__gemm_cache_sizes(cs);
    const int64_t e = (int64_t)esz;
    int64_t k = uk->kc, m = uk->mc, n = uk->nc;
    /* Sizes below these are not believable for a CPU with these kernels: keep the defaults. */
    if (cs[0] >= 16384)
        k = clamp64(cs[0] * 2 / 3 / ((int64_t)uk->nr * e) / 8 * 8, 64, 512);
    if (cs[1] >= 131072)
        m = clamp64(cs[1] / 2 / (k * e) / uk->mr * uk->mr, uk->mr,
                    (int64_t)(960 / uk->mr) * uk->mr);
    if (cs[1] >= 131072)
        n = clamp64(cs[1] / 2 / (k * e) / uk->nr * uk->nr, (int64_t)16 * uk->nr,
                    (int64_t)(4096 / uk->nr) * uk->nr);
    *mc = m, *kc = k, *nc = n;
}

/* ---- Packing ----
 * A: rows i0.. i0+mb of op(A), columns k0.. k0+kb, into panels of mr rows: panel p holds
 *    dst[p*mr*kb + k*mr + r] = op(A)[i0 + p*mr + r][k0 + k], zero past the last row.
 * B: rows k0.., columns j0.. j0+nb of op(B), into panels of nr columns:
 *    dst[p*nr*kb + k*nr + c] = op(B)[k0 + k][j0 + p*nr + c], zero past the last column. */
/* A full panel of MR rows of A (not transposed), k by k: dst[k*MR + r] = A[r][k]. */
#define PACK_A_PANEL(T, MR)                                                                        \
    for (int64_t k = 0; k < kb; k++)                                                               \
        for (int r = 0; r < (MR); r++)                                                             \
            dst[k * (MR) + r] = src0[r * lda + k];

/* Row k of op(B) into the full panels of NR columns: dst[p*kb + k*NR + c] = src[p + c]. */
#define PACK_B_ROW(T, NR)                                                                          \
    for (int64_t p = 0; p < full; p += (NR)) {                                                     \
        T *restrict d = dst + p * kb + k * (NR);                                                   \
        const T *restrict s = src + p;                                                             \
        for (int c = 0; c < (NR); c++)                                                             \
            d[c] = s[c];                                                                           \
    }

/* Row k of A (A transposed) into the full panels of MR rows: dst[p*kb + k*MR + r] = src[p + r]. */
#define PACK_AT_ROW(T, MR)                                                                         \
    for (int64_t p = 0; p < full; p += (MR)) {                                                     \
        T *restrict d = dst + p * kb + k * (MR);                                                   \
        const T *restrict s = src + p;                                                             \
        for (int r = 0; r < (MR); r++)                                                             \
            d[r] = s[r];                                                                           \
    }

#define PACK_FUNCS(T, sfx)                                                                         \
    static void pack_a_##sfx(bool ta, const T *A, int64_t lda, int64_t i0, int64_t mb, int64_t k0, \
                             int64_t kb, int mr, T *dst) {                                         \
        if (ta) { /* op(A)[i][k] = A[k][i]: read each row of A once, contiguously, and deal it  \
                     out to the panels (row by row keeps large strides out of the inner loop) */  \
            const int64_t full = mb / mr * mr;                                                     \
            for (int64_t k = 0; k < kb; k++) {                                                     \
                const T *src = A + (k0 + k) * lda + i0;                                            \
                switch (mr) {                                                                      \
                case 4: PACK_AT_ROW(T, 4) break;                                                   \
                case 6: PACK_AT_ROW(T, 6) break;                                                   \
                case 12: PACK_AT_ROW(T, 12) break;                                                 \
                default: PACK_AT_ROW(T, mr) break;                                                 \
                }                                                                                  \
                for (int64_t p = full; p < mb; p += mr) {                                          \
                    const int64_t rows = mb - p;                                                   \
                    T *d = dst + p * kb + k * mr;                                                  \
                    int64_t r = 0;                                                                 \
                    for (; r < rows; r++)                                                          \
                        d[r] = src[p + r];                                                         \
                    for (; r < mr; r++)                                                            \
                        d[r] = 0;                                                                  \
                }                                                                                  \
            }                                                                                      \
            return;                                                                                \
        }                                                                                          \
        for (int64_t p = 0; p < mb; p += mr, dst += mr * kb) {                                     \
            const int64_t rows = mb - p < mr ? mb - p : mr;                                        \
            const T *src0 = A + (i0 + p) * lda + k0;                                               \
            if (rows == mr) { /* full panel: read mr rows side by side, write contiguously */      \
                switch (mr) {                                                                      \
                case 4: PACK_A_PANEL(T, 4) break;                                                  \
                case 6: PACK_A_PANEL(T, 6) break;                                                  \
                case 12: PACK_A_PANEL(T, 12) break;                                                \
                default: PACK_A_PANEL(T, mr) break;                                                \
                }                                                                                  \
                continue;                                                                          \
            }                                                                                      \
            /* the last, partial panel: each row of A is contiguous in k; stride mr */             \
            int64_t r = 0;                                                                         \
            for (; r < rows; r++) {                                                                \
                const T *src = A + (i0 + p + r) * lda + k0;                                        \
                for (int64_t k = 0; k < kb; k++)                                                   \
                    dst[k * mr + r] = src[k];                                                      \
            }                                                                                      \
            for (; r < mr; r++)                                                                    \
                for (int64_t k = 0; k < kb; k++)                                                   \
                    dst[k * mr + r] = 0;                                                           \
        }                                                                                          \
    }                                                                                              \
    static void pack_b_##sfx(bool tb, const T *B, int64_t ldb, int64_t k0, int64_t kb, int64_t j0, \
                             int64_t nb, int nr, T *dst) {                                         \
        if (!tb) { /* op(B)[k][j] = B[k][j]: read each row of B once and deal it out */            \
            const int64_t full = nb / nr * nr; /* full panels: fixed-length copies */              \
            for (int64_t k = 0; k < kb; k++) {                                                     \
                const T *src = B + (k0 + k) * ldb + j0;                                            \
                switch (nr) {                                                                      \
                case 8: PACK_B_ROW(T, 8) break;                                                    \
                case 16: PACK_B_ROW(T, 16) break;                                                  \
                case 32: PACK_B_ROW(T, 32) break;                                                  \
                default: PACK_B_ROW(T, nr) break;                                                  \
                }                                                                                  \
                for (int64_t p = full; p < nb; p += nr) {                                          \
                    const int64_t cols = nb - p;                                                   \
                    T *d = dst + p * kb + k * nr;                                                  \
                    int64_t c = 0;                                                                 \
                    for (; c < cols; c++)                                                          \
                        d[c] = src[p + c];                                                         \
                    for (; c < nr; c++)                                                            \
                        d[c] = 0;                                                                  \
                }                                                                                  \
            }                                                                                      \
            return;                                                                                \
        }                                                                                          \
        for (int64_t p = 0; p < nb; p += nr, dst += nr * kb) {                                     \
            const int64_t cols = nb - p < nr ? nb - p : nr;                                        \
            /* op(B)[k][j] = B[j][k]: each row of B is contiguous in k */                          \
            int64_t c = 0;                                                                         \
            for (; c < cols; c++) {                                                                \
                const T *src = B + (j0 + p + c) * ldb + k0;                                        \
                for (int64_t k = 0; k < kb; k++)                                                   \
                    dst[k * nr + c] = src[k];                                                      \
            }                                                                                      \
            for (; c < nr; c++)                                                                    \
                for (int64_t k = 0; k < kb; k++)                                                   \
                    dst[k * nr + c] = 0;                                                           \
        }                                                                                          \
    }
PACK_FUNCS(float, f32)
PACK_FUNCS(double, f64)

/* ---- The blocked driver ---- */

typedef struct gemm_job {
    const tg__ukernel *uk;
    tg_dtype dtype;
    size_t esz;
    bool ta, tb, split_n;
    int64_t M, N, K;
    const void *A, *B;
    void *C;
    int64_t lda, ldb, ldc;
    int beta;
    int64_t kc, mc, nc; /* blocks for this product: K and M cut into near-equal blocks */
} gemm_job;

static void pack_a(const gemm_job *j, int64_t i0, int64_t mb, int64_t k0, int64_t kb, void *dst) {
    if (!j->ta && j->uk->pack_t) /* rows of A are the panels' rows, k contiguous */
        j->uk->pack_t((const unsigned char *)j->A + (size_t)(i0 * j->lda + k0) * j->esz, j->lda, mb,
                      kb, j->uk->mr, dst);
    else if (j->dtype == TG_F32)
        pack_a_f32(j->ta, j->A, j->lda, i0, mb, k0, kb, j->uk->mr, dst);
    else
        pack_a_f64(j->ta, j->A, j->lda, i0, mb, k0, kb, j->uk->mr, dst);
}

static void pack_b(const gemm_job *j, int64_t k0, int64_t kb, int64_t j0, int64_t nb, void *dst) {
    if (j->tb && j->uk->pack_t) /* rows of B are the panels' columns, k contiguous */
        j->uk->pack_t((const unsigned char *)j->B + (size_t)(j0 * j->ldb + k0) * j->esz, j->ldb, nb,
                      kb, j->uk->nr, dst);
    else if (j->dtype == TG_F32)
        pack_b_f32(j->tb, j->B, j->ldb, k0, kb, j0, nb, j->uk->nr, dst);
    else
        pack_b_f64(j->tb, j->B, j->ldb, k0, kb, j0, nb, j->uk->nr, dst);
}

/* The largest tile any kernel uses, in bytes (AVX-512: 12 x 32 floats or 12 x 16 doubles). */
#define TG_TILE_BYTES 2048

/* The tiles of C[ic:ic+mb, jc:jc+nb] from a packed A block (mb x kb) and B block (kb x nb). */
static void compute_block(const gemm_job *j, const unsigned char *ap, const unsigned char *bp,
                          int64_t ic, int64_t mb, int64_t jc, int64_t nb, int64_t kb, int acc) {
    const tg__ukernel *uk = j->uk;
    const int mr = uk->mr, nr = uk->nr;
    const size_t esz = j->esz;
    _Alignas(64) unsigned char tile[TG_TILE_BYTES];
    TG_CHECK((size_t)(mr * nr) * esz <= sizeof tile);
    /* Row of tiles after row: one mr x kb panel of A stays in L1 while the kb x nb block of B
     * streams past it from L2 (measured 1.1-1.25x faster at 1024^3-2048^3 than keeping the
     * kb x nr panel of B in L1, which at 32 KiB left too little of a 48 KiB L1 for A). */
    const int64_t n_j = (nb + nr - 1) / nr, n_t = (mb + mr - 1) / mr * n_j;
    for (int64_t t = 0; t < n_t; t++) {
        const int64_t ir = t / n_j * mr, jr = t % n_j * nr;
        const int64_t nre = nb - jr < nr ? nb - jr : nr;
        const unsigned char *bpanel = bp + (size_t)(jr * kb) * esz;
        const int64_t mre = mb - ir < mr ? mb - ir : mr;
        const unsigned char *apanel = ap + (size_t)(ir * kb) * esz;
        unsigned char *c = (unsigned char *)j->C + (size_t)((ic + ir) * j->ldc + jc + jr) * esz;
        /* The next tile's rows of C, fetched while this one computes: C is read (or written)
         * once per tile per k block, from memory when the product is large, and the kernel
         * loads it first thing. */
        if (t + 1 < n_t) {
            const int64_t ni = (t + 1) / n_j * mr, nj = (t + 1) % n_j * nr;
            const int64_t nrows = mb - ni < mr ? mb - ni : mr;
            const unsigned char *cn =
                (unsigned char *)j->C + (size_t)((ic + ni) * j->ldc + jc + nj) * esz;
            const size_t row_bytes = (size_t)(nb - nj < nr ? nb - nj : nr) * esz;
            for (int64_t r = 0; r < nrows; r++, cn += (size_t)j->ldc * esz) {
                __builtin_prefetch(cn, 1, 3);
                __builtin_prefetch(cn + row_bytes - 1, 1, 3);
            }
        }
        {
            if (mre == mr && nre == nr) {
                uk->fn(kb, apanel, bpanel, c, j->ldc, acc);
                continue;
            }
            if (uk->edge) {
                uk->edge(kb, apanel, bpanel, c, j->ldc, acc, (int)mre, (int)nre);
                continue;
            }
            /* Edge tile, for a kernel without an edge variant: the same kernel on a scratch
             * copy, so the arithmetic (and the result) does not depend on where the tile
             * boundaries fall. */
            memset(tile, 0, (size_t)(mr * nr) * esz);
            if (acc)
                for (int64_t r = 0; r < mre; r++)
                    memcpy(tile + (size_t)(r * nr) * esz, c + (size_t)(r * j->ldc) * esz,
                           (size_t)nre * esz);
            uk->fn(kb, apanel, bpanel, tile, nr, 1);
            for (int64_t r = 0; r < mre; r++)
                memcpy(c + (size_t)(r * j->ldc) * esz, tile + (size_t)(r * nr) * esz,
                       (size_t)nre * esz);
        }
    }
}

/* Bytes of a packed block of `elems` elements, rounded up to 64 so the next block is aligned. */
static size_t block_bytes(int64_t elems, size_t esz) {
    return ((size_t)elems * esz + 63) & ~(size_t)63;
}

/* C[m0:m1, n0:n1] on the calling thread, packing both operands itself. */
static void gemm_block(const gemm_job *j, int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
    const size_t esz = j->esz;
    const int64_t kc = j->kc, mc = j->mc, nc = j->nc;
    /* B's block first, rounded up to 64 bytes so A's block starts aligned too. */
    const size_t b_bytes = block_bytes(kc * nc, esz);
    const size_t a_bytes = block_bytes(kc * mc, esz);
    unsigned char *buf = tg__thread_scratch(b_bytes + a_bytes); /* kept: no allocation */
    if (!buf) { /* out of memory: still correct, just slow */
        const unsigned char *A = j->A, *B = j->B;
        gemm_unpacked(j->dtype, j->ta, j->tb, m1 - m0, n1 - n0, j->K,
                      A + (size_t)(j->ta ? m0 : m0 * j->lda) * esz, j->lda,
                      B + (size_t)(j->tb ? n0 * j->ldb : n0) * esz, j->ldb, j->beta,
                      (unsigned char *)j->C + (size_t)(m0 * j->ldc + n0) * esz, j->ldc);
        return;
    }
    unsigned char *bp = buf, *ap = buf + b_bytes;
    for (int64_t jc = n0; jc < n1; jc += nc) {
        const int64_t nb = n1 - jc < nc ? n1 - jc : nc;
        for (int64_t pc = 0; pc < j->K; pc += kc) {
            const int64_t kb = j->K - pc < kc ? j->K - pc : kc;
            const int acc = j->beta || pc > 0;
            pack_b(j, pc, kb, jc, nb, bp);
            for (int64_t ic = m0; ic < m1; ic += mc) {
                const int64_t mb = m1 - ic < mc ? m1 - ic : mc;
                pack_a(j, ic, mb, pc, kb, ap);
                compute_block(j, ap, bp, ic, mb, jc, nb, kb, acc);
            }
        }
    }
}

/* ---- Threads: each packs what its part reads ----
 * Split over columns of C, every thread needs all of op(A); split over rows, all of op(B). Each
 * thread packs its own copy of that operand's blocks, in its own buffer, rather than the threads
 * packing it once together and reading each other's halves. Sharing was the design until the
 * AMD EPYC virtual machine of issue 13, whose two vCPUs sit where a cache line takes about
 * 250 ns to cross from one to the other (a ping-pong round trip of 480-550 ns): there the shared
 * packing made the 2-thread [128,784] x [784,256] product no faster than 1 thread (313 against
 * 304 us) while private packing took 200 us; 256^3 145 -> 108 us, 512^3 983 -> 843 us. The copy
 * that is packed twice is the smaller operand, a few percent of the product. Packing is copying:
 * the result is the same bits either way, and for any thread count. */

#ifdef TG_HAVE_OPENBLAS
/* The whole product through OpenBLAS, threaded by OpenBLAS with our thread count. OpenBLAS's
 * blocking depends on the sizes and the thread count, so unlike the own kernels its result may
 * differ in the last bits between thread counts (tests/test_gemm.c checks its accuracy only). */
static void gemm_openblas(const gemm_job *j) {
    static atomic_int blas_threads;
    const int nt = tg_get_num_threads();
    if (atomic_exchange(&blas_threads, nt) != nt)
        openblas_set_num_threads(nt);
    const enum CBLAS_TRANSPOSE opa = j->ta ? CblasTrans : CblasNoTrans;
    const enum CBLAS_TRANSPOSE opb = j->tb ? CblasTrans : CblasNoTrans;
    if (j->dtype == TG_F32)
        cblas_sgemm(CblasRowMajor, opa, opb, (int)j->M, (int)j->N, (int)j->K, 1.0f, j->A,
                    (int)j->lda, j->B, (int)j->ldb, j->beta ? 1.0f : 0.0f, j->C, (int)j->ldc);
    else
        cblas_dgemm(CblasRowMajor, opa, opb, (int)j->M, (int)j->N, (int)j->K, 1.0, j->A,
                    (int)j->lda, j->B, (int)j->ldb, j->beta ? 1.0 : 0.0, j->C, (int)j->ldc);
}
#endif

static void gemm_job_run(void *p, int tid, int nth) {
    gemm_job *j = p;
    int64_t m0 = 0, m1 = j->M, n0 = 0, n1 = j->N;
    if (j->split_n)
        tg__split(j->N, j->uk->nr, tid, nth, &n0, &n1);
    else
        tg__split(j->M, j->uk->mr, tid, nth, &m0, &m1);
    if (m0 < m1 && n0 < n1)
        gemm_block(j, m0, m1, n0, n1);
}

/* ---- Small products: the direct kernel ---- */

/* The kernel whose direct kernel runs small products: the one in use, or with OpenBLAS (whose
 * start-up cost is the largest part of a small product) the best own one. */
static const tg__ukernel *direct_kernel_for(tg__kernel_id id, tg_dtype dtype) {
    if (id == TG_KERNEL_OPENBLAS)
        for (int k = TG_KERNEL_AVX512; k > TG_KERNEL_PORTABLE; k--)
            if (tg__kernel_available((tg__kernel_id)k)) {
                id = (tg__kernel_id)k;
                break;
            }
    return ukernel_for(id, dtype);
}

/* dst[k*N + j] = B[j*ldb + k]: op(B) of a transposed B in the form a direct kernel reads, in
 * 8 x 8 blocks so that both sides stay in a few cache lines. */
#define TRANSPOSE_BODY(T)                                                                          \
    do {                                                                                           \
        const T *b = B;                                                                            \
        T *d = dst;                                                                                \
        for (int64_t j0 = 0; j0 < N; j0 += 8)                                                      \
            for (int64_t k0 = 0; k0 < K; k0 += 8) {                                                \
                const int64_t j1 = N - j0 < 8 ? N : j0 + 8, k1 = K - k0 < 8 ? K : k0 + 8;          \
                for (int64_t j = j0; j < j1; j++)                                                  \
                    for (int64_t k = k0; k < k1; k++)                                              \
                        d[k * N + j] = b[j * ldb + k];                                             \
            }                                                                                      \
    } while (0)

static void transpose_b(tg_dtype dtype, const void *B, int64_t ldb, int64_t K, int64_t N,
                        void *dst) {
    if (dtype == TG_F32)
        TRANSPOSE_BODY(float);
    else
        TRANSPOSE_BODY(double);
}

static void gemm_direct(const tg__ukernel *uk, tg_dtype dtype, bool ta, bool tb, int64_t M,
                        int64_t N, int64_t K, const void *A, int64_t lda, const void *B,
                        int64_t ldb, int beta, void *C, int64_t ldc) {
    if (tb) {
        void *bt = tg__thread_scratch((size_t)(K * N) * tg__dtype_size(dtype));
        if (!bt) {
            gemm_unpacked(dtype, ta, tb, M, N, K, A, lda, B, ldb, beta, C, ldc);
            return;
        }
        if (uk->transpose)
            uk->transpose(B, ldb, K, N, bt);
        else
            transpose_b(dtype, B, ldb, K, N, bt);
        B = bt, ldb = N;
    }
    /* A few columns and a short K, contiguous (the 2-4-2 network's layers): the whole of C as
     * one flat array in AVX-512 vectors, several rows at a time (the same bits). */
    if (uk == &tg__uk_avx512_f32 && !ta &&
        tg__gemm_narrow_avx512_f32(M, N, K, A, lda, B, ldb, beta, C, ldc))
        return;
    /* A product at most 256 bits wide: AVX2's direct kernel, whose fused multiply-adds round as
     * AVX-512's do (the same bits), without 512-bit instructions (which can lower the clock). */
    if (uk == &tg__uk_avx512_f32 || uk == &tg__uk_avx512_f64) {
        const tg__ukernel *narrow = dtype == TG_F32 ? &tg__uk_avx2_f32 : &tg__uk_avx2_f64;
        if (N <= (dtype == TG_F32 ? 8 : 4) && tg__kernel_available(TG_KERNEL_AVX2))
            uk = narrow;
    }
    uk->direct(ta, M, N, K, A, lda, B, ldb, beta, C, ldc);
}

static atomic_bool force_blocked; /* tests only: see tg__gemm_force_blocked */

bool tg__gemm_force_blocked(bool on) { return atomic_exchange(&force_blocked, on); }

/* A mid-sized product on several threads: the direct kernel on each thread's rows of C (M is
 * the longer side of these products: the char-level transformer's 512 tokens), each thread
 * reading all of op(B) (transposing it itself when tb) and only its rows of op(A). Packing a
 * product of this size costs more than it saves, and the direct kernel's result does not
 * depend on where the rows are cut. */
static void gemm_direct_job_run(void *p, int tid, int nth) {
    const gemm_job *j = p;
    int64_t m0, m1;
    tg__split(j->M, 16, tid, nth, &m0, &m1);
    if (m0 >= m1)
        return;
    const unsigned char *A = j->A;
    gemm_direct(j->uk, j->dtype, j->ta, j->tb, m1 - m0, j->N, j->K,
                A + (size_t)(j->ta ? m0 : m0 * j->lda) * j->esz, j->lda, j->B, j->ldb, j->beta,
                (unsigned char *)j->C + (size_t)(m0 * j->ldc) * j->esz, j->ldc);
}

void tg__gemm(tg_dtype dtype, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K,
              const void *A, int64_t lda, const void *B, int64_t ldb, int beta, void *C,
              int64_t ldc) {
    if (M <= 0 || N <= 0)
        return;
    const size_t esz = tg__dtype_size(dtype);
    if (K <= 0) { /* an empty sum: C = beta C */
        if (!beta)
            for (int64_t i = 0; i < M; i++)
                memset((unsigned char *)C + (size_t)(i * ldc) * esz, 0, (size_t)N * esz);
        return;
    }
    const tg__kernel_id id = tg__kernel_get();
    const int64_t macs = M * N * K;
    /* (not when a test compares the blocked path's bits) */
    const bool direct = !atomic_load_explicit(&force_blocked, memory_order_relaxed);
    if (direct &&
        (macs < TG_GEMM_DIRECT_MAX ||
         (macs < TG_GEMM_DIRECT_1T_MAX && (tg_get_num_threads() == 1 || tg__parallel_in_job())))) {
        gemm_direct(direct_kernel_for(id, dtype), dtype, trans_a, trans_b, M, N, K, A, lda, B, ldb,
                    beta, C, ldc);
        return;
    }
    gemm_job j = {.uk = ukernel_for(id, dtype),
                  .dtype = dtype,
                  .esz = esz,
                  .ta = trans_a,
                  .tb = trans_b,
                  .M = M,
                  .N = N,
                  .K = K,
                  .A = A,
                  .B = B,
                  .C = C,
                  .lda = lda,
                  .ldb = ldb,
                  .ldc = ldc,
                  .beta = beta};
    const int avail = tg_get_num_threads();
    if (direct && macs < TG_GEMM_DIRECT_1T_MAX && M >= N && id != TG_KERNEL_OPENBLAS) {
        j.uk = direct_kernel_for(id, dtype);
        const int64_t parts = (M + 15) / 16;
        tg__parallel_run(parts < avail ? (int)parts : avail, gemm_direct_job_run, &j);
        return;
    }
#ifdef TG_HAVE_OPENBLAS
    if (id == TG_KERNEL_OPENBLAS && M <= INT_MAX && N <= INT_MAX && K <= INT_MAX &&
        lda <= INT_MAX && ldb <= INT_MAX && ldc <= INT_MAX) { /* cblas takes int sizes */
        gemm_openblas(&j);
        return;
    }
#endif
    const tg__ukernel *uk = j.uk;
    int64_t uk_mc, uk_kc, uk_nc;
    tg__gemm_blocks(uk, esz, &uk_mc, &uk_kc, &uk_nc);
    /* Near-equal blocks: K = 784 as 4 x 196 rather than 3 x 256 + 16 (a 16-deep block pays a
     * full load and store of C for little work). Each element is still summed over k in
     * increasing order by the same kernel, and storing C between blocks is exact, so the
     * blocking does not change the result. */
    const int64_t nk = (K + uk_kc - 1) / uk_kc, nm = (M + uk_mc - 1) / uk_mc;
    j.kc = (K + nk - 1) / nk;
    j.mc = ((M + nm - 1) / nm + uk->mr - 1) / uk->mr * uk->mr;
    const int64_t n_round = (N + uk->nr - 1) / uk->nr * uk->nr;
    j.nc = n_round < uk_nc ? n_round : uk_nc;
    /* Split the longer side of C; each thread then packs only its part of that operand. */
    j.split_n = N >= M;
    int nth = 1;
    if (M * N * K >= TG_GEMM_PAR_MIN) {
        const int64_t units = j.split_n ? (N + uk->nr - 1) / uk->nr : (M + uk->mr - 1) / uk->mr;
        nth = units < INT_MAX ? (int)units : INT_MAX;
    }
    if (nth > avail)
        nth = avail;
    tg__parallel_run(nth, gemm_job_run, &j);
}
