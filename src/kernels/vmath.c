/* vmath.c -- vectorized float32 tanh for the tanh op (the circles network spends most of its
 * step in 800 libm tanhf calls otherwise).
 *
 * The method is Cephes's tanhf (S. Moshier), evaluated 8 lanes at a time with AVX2+FMA:
 *   |x| < 0.625:  tanh x = x + x^3 P(x^2), P of degree 4 (minimax)
 *   otherwise:    tanh x = sign(x) (1 - 2 / (e^(2|x|) + 1)), |x| clamped at 10 (tanh 10 is 1 in
 *                 float), with Cephes's expf: n = round(x log2 e), r = x - n ln 2 in two parts,
 *                 e^r by a degree-6 polynomial, times 2^n through the exponent bits.
 * NaN propagates, +-inf give +-1, -0 gives -0. tests/test_vmath.c bounds the error against
 * double-precision tanh over the float range (<= 2 ulp). Without AVX2, and for the tail of an
 * array, libm's tanhf. No -ffast-math anywhere: this is ordinary IEEE arithmetic. */
#include "parallel.h"

#include <math.h>
#include <stdatomic.h>

#if defined(__x86_64__)
#include <immintrin.h>

__attribute__((target("avx2,fma"))) static __m256 exp_avx2(__m256 x) {
    const __m256 log2e = _mm256_set1_ps(1.44269504088896341f);
    const __m256 c1 = _mm256_set1_ps(0.693359375f), c2 = _mm256_set1_ps(-2.12194440e-4f);
    const __m256 n =
        _mm256_round_ps(_mm256_mul_ps(x, log2e), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, c1, x);
    r = _mm256_fnmadd_ps(n, c2, r);
    __m256 p = _mm256_set1_ps(1.9875691500E-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507E-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073E-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894E-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459E-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201E-1f));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    const __m256i e = _mm256_slli_epi32(_mm256_cvtps_epi32(n), 23); /* 2^n, n in [0, 29] here */
    return _mm256_castsi256_ps(_mm256_add_epi32(_mm256_castps_si256(p), e));
}

__attribute__((target("avx2,fma"))) static int64_t tanh_avx2(const float *x, float *y, int64_t n) {
    const __m256 sign = _mm256_set1_ps(-0.0f), one = _mm256_set1_ps(1.0f);
    const __m256 two = _mm256_set1_ps(2.0f), small = _mm256_set1_ps(0.625f);
    const __m256 big = _mm256_set1_ps(10.0f);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 v = _mm256_loadu_ps(x + i);
        const __m256 z = _mm256_andnot_ps(sign, v); /* |x| */
        /* small |x|: |x| + |x| z^2 P(z^2), sign put back below (keeps tanh(-0) = -0) */
        const __m256 z2 = _mm256_mul_ps(z, z);
        __m256 p = _mm256_set1_ps(-5.70498872745E-3f);
        p = _mm256_fmadd_ps(p, z2, _mm256_set1_ps(2.06390887954E-2f));
        p = _mm256_fmadd_ps(p, z2, _mm256_set1_ps(-5.37397155531E-2f));
        p = _mm256_fmadd_ps(p, z2, _mm256_set1_ps(1.33314422036E-1f));
        p = _mm256_fmadd_ps(p, z2, _mm256_set1_ps(-3.33332819422E-1f));
        const __m256 ys = _mm256_fmadd_ps(_mm256_mul_ps(p, z2), z, z);
        /* large |x|: sign(x) (1 - 2 / (e^(2|x|) + 1)) */
        const __m256 zc = _mm256_min_ps(z, big); /* NaN lanes are fixed below */
        const __m256 e = exp_avx2(_mm256_add_ps(zc, zc));
        const __m256 yl = _mm256_sub_ps(one, _mm256_div_ps(two, _mm256_add_ps(e, one)));
        __m256 out = _mm256_blendv_ps(yl, ys, _mm256_cmp_ps(z, small, _CMP_LT_OQ));
        out = _mm256_or_ps(out, _mm256_and_ps(v, sign));
        out = _mm256_blendv_ps(out, v, _mm256_cmp_ps(v, v, _CMP_UNORD_Q)); /* NaN stays NaN */
        _mm256_storeu_ps(y + i, out);
    }
    return i;
}
#endif

void tg__tanh_f32(const float *x, float *y, int64_t n) {
    int64_t i = 0;
#if defined(__x86_64__)
    static atomic_int have_avx2 = -1; /* every thread computes the same value */
    int avx2 = atomic_load_explicit(&have_avx2, memory_order_relaxed);
    if (avx2 < 0) {
        avx2 = tg__kernel_available(TG_KERNEL_AVX2);
        atomic_store_explicit(&have_avx2, avx2, memory_order_relaxed);
    }
    if (avx2)
        i = tanh_avx2(x, y, n);
#endif
    for (; i < n; i++)
        y[i] = tanhf(x[i]);
}
