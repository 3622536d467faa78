/* gemm_avx2.c -- AVX2+FMA micro-kernels for src/kernels/gemm.c, compiled through target attributes (the
 * rest of the library stays baseline x86-64) and only called when the CPU reports avx2 and fma.
 *
 * f32: a 6 x 16 tile in 12 ymm accumulators; f64: 6 x 8, also 12. Per k: two loads of the B
 * panel, six broadcasts of the A panel, twelve FMAs -- 14 of the 16 ymm registers in use. */
#include "parallel.h"

#if defined(__x86_64__)
#include <immintrin.h>

#define TG_AVX2 __attribute__((target("avx2,fma")))

/* Row r of the tile: two accumulators c<r>0, c<r>1. */
#define ROWS(X) X(0) X(1) X(2) X(3) X(4) X(5)

#define DECL_PS(r) __m256 c##r##0, c##r##1;
#define LOAD_PS(r)                                                                                 \
    c##r##0 = _mm256_loadu_ps(c + (r)*ldc);                                                        \
    c##r##1 = _mm256_loadu_ps(c + (r)*ldc + 8);
#define ZERO_PS(r) c##r##0 = c##r##1 = _mm256_setzero_ps();
#define FMA_PS(r)                                                                                  \
    {                                                                                              \
        const __m256 ar = _mm256_broadcast_ss(a + (r));                                            \
        c##r##0 = _mm256_fmadd_ps(ar, b0, c##r##0);                                                \
        c##r##1 = _mm256_fmadd_ps(ar, b1, c##r##1);                                                \
    }
#define STORE_PS(r)                                                                                \
    _mm256_storeu_ps(c + (r)*ldc, c##r##0);                                                        \
    _mm256_storeu_ps(c + (r)*ldc + 8, c##r##1);

TG_AVX2 static void uk_avx2_f32(int64_t kc, const void *a_, const void *b_, void *c_, int64_t ldc,
                                int accumulate) {
    const float *a = a_, *b = b_;
    float *c = c_;
    ROWS(DECL_PS)
    if (accumulate) {
        ROWS(LOAD_PS)
    } else {
        ROWS(ZERO_PS)
    }
    for (int64_t k = 0; k < kc; k++, a += 6, b += 16) {
        const __m256 b0 = _mm256_load_ps(b), b1 = _mm256_load_ps(b + 8);
        ROWS(FMA_PS)
    }
    ROWS(STORE_PS)
}

#define DECL_PD(r) __m256d c##r##0, c##r##1;
#define LOAD_PD(r)                                                                                 \
    c##r##0 = _mm256_loadu_pd(c + (r)*ldc);                                                        \
    c##r##1 = _mm256_loadu_pd(c + (r)*ldc + 4);
#define ZERO_PD(r) c##r##0 = c##r##1 = _mm256_setzero_pd();
#define FMA_PD(r)                                                                                  \
    {                                                                                              \
        const __m256d ar = _mm256_broadcast_sd(a + (r));                                           \
        c##r##0 = _mm256_fmadd_pd(ar, b0, c##r##0);                                                \
        c##r##1 = _mm256_fmadd_pd(ar, b1, c##r##1);                                                \
    }
#define STORE_PD(r)                                                                                \
    _mm256_storeu_pd(c + (r)*ldc, c##r##0);                                                        \
    _mm256_storeu_pd(c + (r)*ldc + 4, c##r##1);

TG_AVX2 static void uk_avx2_f64(int64_t kc, const void *a_, const void *b_, void *c_, int64_t ldc,
                                int accumulate) {
    const double *a = a_, *b = b_;
    double *c = c_;
    ROWS(DECL_PD)
    if (accumulate) {
        ROWS(LOAD_PD)
    } else {
        ROWS(ZERO_PD)
    }
    for (int64_t k = 0; k < kc; k++, a += 6, b += 8) {
        const __m256d b0 = _mm256_load_pd(b), b1 = _mm256_load_pd(b + 4);
        ROWS(FMA_PD)
    }
    ROWS(STORE_PD)
}

/* ---- Direct kernels: small products straight from A, B and C (tg__direct_fn) ----
 * Tiles of up to 6 rows x 2 vectors of C (6 x 16 f32, 6 x 8 f64); a last, partial vector of
 * columns goes through masked loads and stores (P: the tile has one), the others through plain
 * ones. Rows of A broadcast from where they are (A or A^T), B's rows loaded from B. The same
 * fused multiply-adds from the same start as the micro-kernel: the result is the blocked path's. */

#define DIRECT_FUNCS(sfx, T, VT, L, LOADU, STOREU, MLOAD, MSTORE, SET1, FMA, ZERO)                 \
    /* C[0:R, 0:V*L] += op(A)[0:R, :] B[:, 0:V*L], R, V, P constant; mask: the last vector's */    \
    TG_AVX2 static inline __attribute__((always_inline)) void dtile_##sfx(                         \
        const int R, const int V, const int P, bool ta, int64_t K, const T *a, int64_t lda,        \
        const T *b, int64_t ldb, int beta, T *c, int64_t ldc, __m256i mask) {                      \
        VT acc[6][2];                                                                              \
        _Pragma("GCC unroll 6") for (int r = 0; r < R; r++)                                        \
            _Pragma("GCC unroll 2") for (int v = 0; v < V; v++) acc[r][v] =                        \
                !beta               ? ZERO()                                                       \
                : (P && v == V - 1) ? MLOAD(c + r * ldc + (int64_t)v * (L), mask)                  \
                                    : LOADU(c + r * ldc + (int64_t)v * (L));                       \
        /* op(A)[r][k] at a + r*sr + k*sk */                                                       \
        const int64_t sr = ta ? 1 : lda, sk = ta ? lda : 1;                                        \
        for (int64_t k = 0; k < K; k++, a += sk, b += ldb) {                                       \
            VT bv[2];                                                                              \
            _Pragma("GCC unroll 2") for (int v = 0; v < V; v++) bv[v] =                            \
                (P && v == V - 1) ? MLOAD(b + (int64_t)v * (L), mask)                              \
                                  : LOADU(b + (int64_t)v * (L));                                   \
            _Pragma("GCC unroll 6") for (int r = 0; r < R; r++) {                                  \
                const VT ar = SET1(a + r * sr);                                                    \
                _Pragma("GCC unroll 2") for (int v = 0; v < V; v++) acc[r][v] =                    \
                    FMA(ar, bv[v], acc[r][v]);                                                     \
            }                                                                                      \
        }                                                                                          \
        _Pragma("GCC unroll 6") for (int r = 0; r < R; r++)                                        \
            _Pragma("GCC unroll 2") for (int v = 0; v < V; v++) {                                  \
            if (P && v == V - 1)                                                                   \
                MSTORE(c + r * ldc + (int64_t)v * (L), mask, acc[r][v]);                           \
            else                                                                                   \
                STOREU(c + r * ldc + (int64_t)v * (L), acc[r][v]);                                 \
        }                                                                                          \
    }                                                                                              \
    TG_AVX2 static inline __attribute__((always_inline)) void drive_##sfx(                         \
        const bool ta, int64_t M, int64_t N, int64_t K, const void *A_, int64_t lda,               \
        const void *B_, int64_t ldb, int beta, void *C_, int64_t ldc) {                            \
        const T *A = A_, *B = B_;                                                                  \
        T *C = C_;                                                                                 \
        for (int64_t j0 = 0; j0 < N; j0 += (int64_t)2 * (L)) {                                     \
            const int64_t nj = N - j0 < (int64_t)2 * (L) ? N - j0 : (int64_t)2 * (L);              \
            const int V = nj > (L) ? 2 : 1, P = nj % (L) != 0;                                     \
            const __m256i mask = tail_mask_##sfx(nj % (L));                                        \
            for (int64_t i0 = 0; i0 < M;) {                                                        \
                const int64_t rows = M - i0;                                                       \
                const int R = rows >= 6 ? 6 : rows >= 4 ? 4 : rows >= 2 ? 2 : 1;                   \
                const T *a = ta ? A + i0 : A + i0 * lda;                                           \
                T *c = C + i0 * ldc + j0;                                                          \
                switch (R * 4 + (V - 1) * 2 + P) {                                                 \
                    DIRECT_CASE(sfx, 6)                                                            \
                    DIRECT_CASE(sfx, 4)                                                            \
                    DIRECT_CASE(sfx, 2)                                                            \
                    DIRECT_CASE(sfx, 1)                                                            \
                default: break;                                                                    \
                }                                                                                  \
                i0 += R;                                                                           \
            }                                                                                      \
        }                                                                                          \
    }                                                                                              \
    TG_AVX2 static void direct_##sfx(bool ta, int64_t M, int64_t N, int64_t K, const void *A,      \
                                     int64_t lda, const void *B, int64_t ldb, int beta, void *C,   \
                                     int64_t ldc) {                                                \
        if (ta) /* constant in each copy: op(A)'s strides become immediates or invariants */       \
            drive_##sfx(true, M, N, K, A, lda, B, ldb, beta, C, ldc);                              \
        else                                                                                       \
            drive_##sfx(false, M, N, K, A, lda, B, ldb, beta, C, ldc);                             \
    }
#define DIRECT_CASE1(sfx, R, V, P)                                                                 \
    case (R)*4 + ((V)-1) * 2 + (P):                                                                \
        dtile_##sfx(R, V, P, ta, K, a, lda, B + j0, ldb, beta, c, ldc, mask);                      \
        break;
#define DIRECT_CASE(sfx, R)                                                                        \
    DIRECT_CASE1(sfx, R, 1, 0)                                                                     \
    DIRECT_CASE1(sfx, R, 1, 1) DIRECT_CASE1(sfx, R, 2, 0) DIRECT_CASE1(sfx, R, 2, 1)

/* The mask of the first n lanes (n < lanes; 0: none, unused). */
static const int32_t mask_i32[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
static const int64_t mask_i64[8] = {-1, -1, -1, -1, 0, 0, 0, 0};
TG_AVX2 static inline __m256i tail_mask_f32(int64_t n) {
    return _mm256_loadu_si256((const __m256i *)(mask_i32 + 8 - n));
}
TG_AVX2 static inline __m256i tail_mask_f64(int64_t n) {
    return _mm256_loadu_si256((const __m256i *)(mask_i64 + 4 - n));
}

DIRECT_FUNCS(f32, float, __m256, 8, _mm256_loadu_ps, _mm256_storeu_ps, _mm256_maskload_ps,
             _mm256_maskstore_ps, _mm256_broadcast_ss, _mm256_fmadd_ps, _mm256_setzero_ps)
DIRECT_FUNCS(f64, double, __m256d, 4, _mm256_loadu_pd, _mm256_storeu_pd, _mm256_maskload_pd,
             _mm256_maskstore_pd, _mm256_broadcast_sd, _mm256_fmadd_pd, _mm256_setzero_pd)

/* Transposing B for the direct kernel: each row k of op(B) gathered 8 (4) columns at a time
 * (column j of op(B) is row j of B). The offsets j*ldb must fit an int32, else a plain loop. */
#define TRANSPOSE_FUNC(sfx, T, L, VT, GATHER, MSTORE, SETZERO)                                     \
    TG_AVX2 static void transpose_##sfx(const void *B_, int64_t ldb, int64_t K, int64_t N,         \
                                        void *dst_) {                                              \
        const T *B = B_;                                                                           \
        T *dst = dst_;                                                                             \
        if (ldb > INT32_MAX / 8) {                                                                 \
            for (int64_t j = 0; j < N; j++)                                                        \
                for (int64_t k = 0; k < K; k++)                                                    \
                    dst[k * N + j] = B[j * ldb + k];                                               \
            return;                                                                                \
        }                                                                                          \
        const __m256i idx = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),          \
                                               _mm256_set1_epi32((int)ldb));                       \
        for (int64_t j0 = 0; j0 < N; j0 += (L)) {                                                  \
            const int64_t nj = N - j0 < (L) ? N - j0 : (L);                                        \
            const __m256i full = nj == (L) ? _mm256_set1_epi32(-1) : tail_mask_##sfx(nj);          \
            const T *src = B + j0 * ldb;                                                           \
            for (int64_t k = 0; k < K; k++) {                                                      \
                const VT v = GATHER(src + k, full, idx);                                           \
                MSTORE(dst + k * N + j0, full, v);                                                 \
            }                                                                                      \
        }                                                                                          \
    }
#define GATHER_PS(p, m, idx)                                                                       \
    _mm256_mask_i32gather_ps(_mm256_setzero_ps(), p, idx, _mm256_castsi256_ps(m), 4)
#define GATHER_PD(p, m, idx)                                                                       \
    _mm256_mask_i32gather_pd(_mm256_setzero_pd(), p, _mm256_castsi256_si128(idx),                  \
                             _mm256_castsi256_pd(m), 8)
TRANSPOSE_FUNC(f32, float, 8, __m256, GATHER_PS, _mm256_maskstore_ps, _mm256_setzero_ps)
TRANSPOSE_FUNC(f64, double, 4, __m256d, GATHER_PD, _mm256_maskstore_pd, _mm256_setzero_pd)

/* Blocks for a 32 KiB L1d and 512 KiB L2 (AMD Zen; Intel client cores are close): a kc x nr
 * B panel (16 KiB) stays in L1, the mc x kc A block (144 KiB) in L2. */
const tg__ukernel tg__uk_avx2_f32 = {.mr = 6,
                                     .nr = 16,
                                     .mc = 144,
                                     .kc = 256,
                                     .nc = 3072,
                                     .fn = uk_avx2_f32,
                                     .direct = direct_f32,
                                     .transpose = transpose_f32};
const tg__ukernel tg__uk_avx2_f64 = {.mr = 6,
                                     .nr = 8,
                                     .mc = 72,
                                     .kc = 256,
                                     .nc = 2048,
                                     .fn = uk_avx2_f64,
                                     .direct = direct_f64,
                                     .transpose = transpose_f64};

#else /* not x86: never selected (tg__kernel_available says no), but the symbols must exist */
const tg__ukernel tg__uk_avx2_f32 = {4, 8, 128, 256, 2048, NULL, NULL, NULL, NULL, NULL};
const tg__ukernel tg__uk_avx2_f64 = {4, 8, 64, 256, 2048, NULL, NULL, NULL, NULL, NULL};
#endif
