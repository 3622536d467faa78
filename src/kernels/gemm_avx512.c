/* gemm_avx512.c -- AVX-512F micro-kernels for src/kernels/gemm.c, compiled through target attributes and
 * only called when the CPU reports avx512f.
 *
 * f32: a 12 x 32 tile in 24 zmm accumulators; f64: 12 x 16, also 24. Per k: two loads of the B
 * panel, twelve broadcasts of the A panel, 24 FMAs -- 27 of the 32 zmm registers in use, enough
 * independent FMAs to cover their latency on two FMA ports. */
#include "parallel.h"

#if defined(__x86_64__)
#include <immintrin.h>

#define TG_AVX512 __attribute__((target("avx512f")))

#define ROWS(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11)

#define DECL_PS(r) __m512 c##r##_0, c##r##_1;
#define LOAD_PS(r)                                                                                 \
    c##r##_0 = _mm512_loadu_ps(c + (r)*ldc);                                                       \
    c##r##_1 = _mm512_loadu_ps(c + (r)*ldc + 16);
#define ZERO_PS(r) c##r##_0 = c##r##_1 = _mm512_setzero_ps();
#define FMA_PS(r)                                                                                  \
    {                                                                                              \
        const __m512 ar = _mm512_set1_ps(a[r]);                                                    \
        c##r##_0 = _mm512_fmadd_ps(ar, b0, c##r##_0);                                              \
        c##r##_1 = _mm512_fmadd_ps(ar, b1, c##r##_1);                                              \
    }
#define STORE_PS(r)                                                                                \
    _mm512_storeu_ps(c + (r)*ldc, c##r##_0);                                                       \
    _mm512_storeu_ps(c + (r)*ldc + 16, c##r##_1);

TG_AVX512 static void uk_avx512_f32(int64_t kc, const void *a_, const void *b_, void *c_,
                                    int64_t ldc, int accumulate) {
    const float *a = a_, *b = b_;
    float *c = c_;
    ROWS(DECL_PS)
    if (accumulate) {
        ROWS(LOAD_PS)
    } else {
        ROWS(ZERO_PS)
    }
    for (int64_t k = 0; k < kc; k++, a += 12, b += 32) {
        const __m512 b0 = _mm512_loadu_ps(b), b1 = _mm512_loadu_ps(b + 16);
        ROWS(FMA_PS)
    }
    ROWS(STORE_PS)
}

#define DECL_PD(r) __m512d c##r##_0, c##r##_1;
#define LOAD_PD(r)                                                                                 \
    c##r##_0 = _mm512_loadu_pd(c + (r)*ldc);                                                       \
    c##r##_1 = _mm512_loadu_pd(c + (r)*ldc + 8);
#define ZERO_PD(r) c##r##_0 = c##r##_1 = _mm512_setzero_pd();
#define FMA_PD(r)                                                                                  \
    {                                                                                              \
        const __m512d ar = _mm512_set1_pd(a[r]);                                                   \
        c##r##_0 = _mm512_fmadd_pd(ar, b0, c##r##_0);                                              \
        c##r##_1 = _mm512_fmadd_pd(ar, b1, c##r##_1);                                              \
    }
#define STORE_PD(r)                                                                                \
    _mm512_storeu_pd(c + (r)*ldc, c##r##_0);                                                       \
    _mm512_storeu_pd(c + (r)*ldc + 8, c##r##_1);

TG_AVX512 static void uk_avx512_f64(int64_t kc, const void *a_, const void *b_, void *c_,
                                    int64_t ldc, int accumulate) {
    const double *a = a_, *b = b_;
    double *c = c_;
    ROWS(DECL_PD)
    if (accumulate) {
        ROWS(LOAD_PD)
    } else {
        ROWS(ZERO_PD)
    }
    for (int64_t k = 0; k < kc; k++, a += 12, b += 16) {
        const __m512d b0 = _mm512_loadu_pd(b), b1 = _mm512_loadu_pd(b + 8);
        ROWS(FMA_PD)
    }
    ROWS(STORE_PD)
}

/* Blocks for a 32-48 KiB L1d and 1-2 MiB L2 (Intel server cores): a kc x nr B panel (32 KiB at
 * kc 256) in L1, the mc x kc A block (144 KiB f32) in L2. Not tuned on hardware: the machine this
 * was written on has no AVX-512. */
const tg__ukernel tg__uk_avx512_f32 = {12, 32, 144, 256, 4096, uk_avx512_f32};
const tg__ukernel tg__uk_avx512_f64 = {12, 16, 96, 256, 2048, uk_avx512_f64};

#else
const tg__ukernel tg__uk_avx512_f32 = {4, 8, 128, 256, 2048, NULL};
const tg__ukernel tg__uk_avx512_f64 = {4, 8, 64, 256, 2048, NULL};
#endif
