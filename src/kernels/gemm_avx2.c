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

/* Blocks for a 32 KiB L1d and 512 KiB L2 (AMD Zen; Intel client cores are close): a kc x nr
 * B panel (16 KiB) stays in L1, the mc x kc A block (144 KiB) in L2. */
const tg__ukernel tg__uk_avx2_f32 = {6, 16, 144, 256, 3072, uk_avx2_f32};
const tg__ukernel tg__uk_avx2_f64 = {6, 8, 72, 256, 2048, uk_avx2_f64};

#else /* not x86: never selected (tg__kernel_available says no), but the symbols must exist */
const tg__ukernel tg__uk_avx2_f32 = {4, 8, 128, 256, 2048, NULL};
const tg__ukernel tg__uk_avx2_f64 = {4, 8, 64, 256, 2048, NULL};
#endif
