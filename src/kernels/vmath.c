/* vmath.c -- vectorized float32 exp, log, erf and tanh over arrays, for the elementwise ops
 * (gelu, softmax, log_softmax, softmax_cross_entropy, tanh, silu, exp, log): the charlm and
 * circles networks otherwise spend much of a step in scalar libm calls.
 *
 * Three paths, chosen once at run time (tg__vmath_isa): AVX-512F (16 lanes), AVX2+FMA (8 lanes)
 * and portable C (libm). The two SIMD paths perform the same IEEE operations in the same order,
 * lane for lane, so they give the same bits (tests/test_vmath.c checks it). An array's tail
 * (n not a multiple of the vector width) is copied into a padded vector and goes through the
 * same code, so an element's result never depends on its position, the array's length or how
 * a caller split the array over threads. No -ffast-math: ordinary IEEE arithmetic throughout.
 *
 * exp:  n = round(x log2 e), r = x - n ln 2 (ln 2 in two parts, fused multiply-adds),
 *       e^r by its Taylor polynomial of degree 7 (|r| <= ln2/2: truncation 5e-9 relative), times
 *       2^n as 2^(n/2) 2^(n - n/2) so that denormal results are rounded once and overflow gives
 *       inf. x is clamped at 89 (e^x rounds to inf beyond), and below -104 (where e^x rounds to
 *       0) the lane computes e^0 and gives 0, so that no multiply underflows needlessly.
 * log:  x = 2^k m with m in [sqrt(1/2), sqrt 2) (denormals scaled by 2^23 first), f = m - 1,
 *       s = f / (2 + f), log(1 + f) = f - (f^2/2 - s (f^2/2 + R)), R = 2s^2/3 + 2s^4/5 + 2s^6/7
 *       + 2s^8/9 (the series of 2 atanh s), plus k ln 2 in two parts.
 * erf:  |x| < 1: x + x P(x^2), P of degree 6; 1 <= |x| < 3.92: 1 - E(|x| - c), E a polynomial of
 *       degree 11 for erfc around c = 1.75 on [1, 2.5) and c = 3.21 on [2.5, 3.92); beyond,
 *       +-1 (erf rounds to 1 in float32 from 3.9145 on). The coefficients are Chebyshev fits
 *       made for this file (mpmath.chebyfit, 40 digits; error of the fits about 1e-9).
 * tanh: Cephes's tanhf (S. Moshier): |x| < 0.625: x + x^3 P(x^2), P of degree 4 (minimax);
 *       otherwise sign(x) (1 - 2 / (e^(2|x|) + 1)) with |x| clamped at 10, e^ as above but
 *       with 2^n in one step (n <= 29 here).
 * NaN propagates (quieted), and the special values are IEEE's: exp(-inf) = 0, exp(inf) = inf,
 * log(0) = -inf, log(x < 0) = NaN, log(inf) = inf, erf(+-inf) = +-1, tanh(+-inf) = +-1, and
 * the sign of zero is kept where the function is odd. tests/test_vmath.c bounds the errors
 * against double precision over a dense sweep of the float range. */
#include "parallel.h"

#include <math.h>
#include <stdatomic.h>
#include <string.h>

/* ---- which path runs ---- */

static atomic_int vm_isa = -1; /* TG_VMATH_*; every thread computes the same value */

static int vm_detect(void) {
#if defined(__x86_64__)
    if (tg__kernel_available(TG_KERNEL_AVX2)) /* AVX-512 paths use FMA and AVX2 too */
        return tg__kernel_available(TG_KERNEL_AVX512) ? TG_VMATH_AVX512 : TG_VMATH_AVX2;
#endif
    return TG_VMATH_PORTABLE;
}

int tg__vmath_isa(void) {
    int isa = atomic_load_explicit(&vm_isa, memory_order_relaxed);
    if (isa < 0) {
        isa = vm_detect();
        atomic_store_explicit(&vm_isa, isa, memory_order_relaxed);
    }
    return isa;
}

int tg__vmath_set_isa(int isa) {
    const int best = vm_detect();
    if (isa < TG_VMATH_PORTABLE || isa > best)
        return -1;
    atomic_store_explicit(&vm_isa, isa, memory_order_relaxed);
    return 0;
}

#if defined(__x86_64__)
#include <immintrin.h>

/* ---- the constants, shared by both SIMD paths ---- */

#define LOG2E 1.44269504088896341f
#define LN2_HI 0.693145751953125f         /* ln 2 to 16 bits: n LN2_HI is exact for |n| < 2^8 */
#define LN2_LO 1.42860682030941723212e-6f /* ln 2 - LN2_HI */
#define EXP_LO -104.0f                    /* e^x rounds to 0 below */
#define EXP_HI 89.0f                      /* and to inf above */
#define SQRT_HALF_BITS 0x3f3504f3         /* float sqrt(1/2) */
#define ERF_BIG 3.92f                     /* erf(x) rounds to 1 from here */

/* erf(x) / x - 1 as a polynomial in t = x^2 on [0, 1], highest degree first (erf = x + x P:
 * the rounding of P's value and coefficients then counts for little next to x) */
static const float erf_small[7] = {7.875875063e-05f,  -8.016864287e-04f, 5.189087423e-03f,
                                   -2.685421201e-02f, 1.128359472e-01f,  -3.761262667e-01f,
                                   1.283791658e-01f};
/* erfc(c + w), |w| <= 0.75, c = 1.75, highest degree first */
static const float erfc_a[12] = {2.999477767e-05f,  3.352815084e-04f,  -9.086662478e-04f,
                                 -6.637792922e-04f, 6.062835947e-03f,  -8.982136409e-03f,
                                 -6.624890413e-03f, 4.810471031e-02f,  -9.015725943e-02f,
                                 9.235612270e-02f,  -5.277499613e-02f, 1.332832972e-02f};
/* erfc(c + w), |w| <= 0.71, c = 3.21, highest degree first */
static const float erfc_b[12] = {4.538380787e-06f,  -2.361736902e-06f, -2.693539286e-05f,
                                 9.291824494e-05f,  -1.975326702e-04f, 3.144545863e-04f,
                                 -3.830677442e-04f, 3.561045556e-04f,  -2.470341178e-04f,
                                 1.213215006e-04f,  -3.779560713e-05f, 5.635438804e-06f};
#define ERFC_A_C 1.75f
#define ERFC_B_C 3.21f
#define ERFC_AB 2.5f /* the boundary between the two */

/* ---- AVX2 + FMA, 8 lanes ---- */
#define A2 __attribute__((target("avx2,fma")))
#define S8 _mm256_set1_ps

A2 static __m256 exp8(__m256 x) {
    /* Lanes below EXP_LO compute e^0 and are set to 0 at the end: a multiply giving a denormal
     * or 0 costs a micro-code assist on many CPUs, and causal softmax has many -inf inputs. */
    const __m256 under = _mm256_cmp_ps(x, S8(EXP_LO), _CMP_LT_OQ);
    const __m256 xc = _mm256_andnot_ps(under, _mm256_min_ps(x, S8(EXP_HI)));
    const __m256 n = _mm256_round_ps(_mm256_mul_ps(xc, S8(LOG2E)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, S8(LN2_HI), xc);
    r = _mm256_fnmadd_ps(n, S8(LN2_LO), r);
    __m256 p = S8(1.0f / 5040);
    p = _mm256_fmadd_ps(p, r, S8(1.0f / 720));
    p = _mm256_fmadd_ps(p, r, S8(1.0f / 120));
    p = _mm256_fmadd_ps(p, r, S8(1.0f / 24));
    p = _mm256_fmadd_ps(p, r, S8(1.0f / 6));
    p = _mm256_fmadd_ps(p, r, S8(0.5f));
    p = _mm256_fmadd_ps(p, r, S8(1.0f));
    p = _mm256_fmadd_ps(p, r, S8(1.0f));
    const __m256i ni = _mm256_cvtps_epi32(n); /* in [-150, 128] */
    const __m256i n1 = _mm256_srai_epi32(ni, 1), n2 = _mm256_sub_epi32(ni, n1);
    const __m256i bias = _mm256_set1_epi32(127);
    const __m256 s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n1, bias), 23));
    const __m256 s2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n2, bias), 23));
    const __m256 out = _mm256_andnot_ps(under, _mm256_mul_ps(_mm256_mul_ps(p, s1), s2));
    return _mm256_blendv_ps(out, _mm256_add_ps(x, x), _mm256_cmp_ps(x, x, _CMP_UNORD_Q));
}

A2 static __m256 log8(__m256 x) {
    const __m256 den = _mm256_cmp_ps(x, S8(0x1p-126f), _CMP_LT_OQ);
    const __m256 xs = _mm256_blendv_ps(x, _mm256_mul_ps(x, S8(0x1p23f)), den);
    const __m256i ix = _mm256_sub_epi32(_mm256_castps_si256(xs), _mm256_set1_epi32(SQRT_HALF_BITS));
    __m256i k = _mm256_srai_epi32(ix, 23);
    k = _mm256_sub_epi32(k, _mm256_and_si256(_mm256_castps_si256(den), _mm256_set1_epi32(23)));
    const __m256 m = _mm256_castsi256_ps(_mm256_add_epi32(
        _mm256_and_si256(ix, _mm256_set1_epi32(0x7fffff)), _mm256_set1_epi32(SQRT_HALF_BITS)));
    const __m256 f = _mm256_sub_ps(m, S8(1.0f));
    const __m256 s = _mm256_div_ps(f, _mm256_add_ps(f, S8(2.0f)));
    const __m256 z = _mm256_mul_ps(s, s);
    __m256 R = S8(2.0f / 9);
    R = _mm256_fmadd_ps(R, z, S8(2.0f / 7));
    R = _mm256_fmadd_ps(R, z, S8(2.0f / 5));
    R = _mm256_fmadd_ps(R, z, S8(2.0f / 3));
    R = _mm256_mul_ps(R, z);
    const __m256 hfsq = _mm256_mul_ps(_mm256_mul_ps(f, f), S8(0.5f));
    const __m256 dk = _mm256_cvtepi32_ps(k);
    __m256 r = _mm256_fmadd_ps(s, _mm256_add_ps(hfsq, R), _mm256_mul_ps(dk, S8(LN2_LO)));
    r = _mm256_sub_ps(_mm256_sub_ps(hfsq, r), f);
    __m256 out = _mm256_fmsub_ps(dk, S8(LN2_HI), r);
    out = _mm256_blendv_ps(out, S8(-INFINITY), _mm256_cmp_ps(x, _mm256_setzero_ps(), _CMP_EQ_OQ));
    out = _mm256_blendv_ps(out, S8(NAN), _mm256_cmp_ps(x, _mm256_setzero_ps(), _CMP_LT_OQ));
    /* inf and NaN give themselves (NaN quieted) */
    const __m256 pass = _mm256_cmp_ps(x, S8(INFINITY), _CMP_NLT_UQ);
    return _mm256_blendv_ps(out, _mm256_add_ps(x, x), pass);
}

A2 static __m256 erf8(__m256 x) {
    const __m256 sign = S8(-0.0f);
    const __m256 a = _mm256_andnot_ps(sign, x);
    /* |x| < 1 */
    const __m256 t = _mm256_mul_ps(x, x);
    __m256 ps = S8(erf_small[0]);
    for (int j = 1; j < 7; j++)
        ps = _mm256_fmadd_ps(ps, t, S8(erf_small[j]));
    ps = _mm256_fmadd_ps(ps, x, x);
    /* 1 <= |x| < 3.92 */
    const __m256 ac = _mm256_min_ps(a, S8(ERF_BIG)); /* NaN lanes are fixed below */
    const __m256 in_a = _mm256_cmp_ps(ac, S8(ERFC_AB), _CMP_LT_OQ);
    const __m256 w = _mm256_sub_ps(ac, _mm256_blendv_ps(S8(ERFC_B_C), S8(ERFC_A_C), in_a));
    __m256 e = _mm256_blendv_ps(S8(erfc_b[0]), S8(erfc_a[0]), in_a);
    for (int j = 1; j < 12; j++)
        e = _mm256_fmadd_ps(e, w, _mm256_blendv_ps(S8(erfc_b[j]), S8(erfc_a[j]), in_a));
    __m256 pb = _mm256_sub_ps(S8(1.0f), e);
    pb = _mm256_blendv_ps(pb, S8(1.0f), _mm256_cmp_ps(a, S8(ERF_BIG), _CMP_GE_OQ));
    pb = _mm256_or_ps(pb, _mm256_and_ps(x, sign));
    const __m256 out = _mm256_blendv_ps(pb, ps, _mm256_cmp_ps(a, S8(1.0f), _CMP_LT_OQ));
    return _mm256_blendv_ps(out, _mm256_add_ps(x, x), _mm256_cmp_ps(x, x, _CMP_UNORD_Q));
}

/* e^x for x in [0, 20] (tanh's argument): the same polynomial, 2^n in one step (n <= 29). */
A2 static __m256 exp8_tanh(__m256 x) {
    const __m256 n =
        _mm256_round_ps(_mm256_mul_ps(x, S8(LOG2E)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, S8(LN2_HI), x);
    r = _mm256_fnmadd_ps(n, S8(LN2_LO), r);
    __m256 p = S8(1.0f / 5040);
    p = _mm256_fmadd_ps(p, r, S8(1.0f / 720));
    p = _mm256_fmadd_ps(p, r, S8(1.0f / 120));
    p = _mm256_fmadd_ps(p, r, S8(1.0f / 24));
    p = _mm256_fmadd_ps(p, r, S8(1.0f / 6));
    p = _mm256_fmadd_ps(p, r, S8(0.5f));
    p = _mm256_fmadd_ps(p, r, S8(1.0f));
    p = _mm256_fmadd_ps(p, r, S8(1.0f));
    const __m256i e = _mm256_slli_epi32(_mm256_cvtps_epi32(n), 23);
    return _mm256_castsi256_ps(_mm256_add_epi32(_mm256_castps_si256(p), e));
}

A2 static __m256 tanh8(__m256 v) {
    const __m256 sign = S8(-0.0f), one = S8(1.0f);
    const __m256 z = _mm256_andnot_ps(sign, v); /* |x| */
    /* small |x|: |x| + |x| z^2 P(z^2), sign put back below (keeps tanh(-0) = -0) */
    const __m256 z2 = _mm256_mul_ps(z, z);
    __m256 p = S8(-5.70498872745E-3f);
    p = _mm256_fmadd_ps(p, z2, S8(2.06390887954E-2f));
    p = _mm256_fmadd_ps(p, z2, S8(-5.37397155531E-2f));
    p = _mm256_fmadd_ps(p, z2, S8(1.33314422036E-1f));
    p = _mm256_fmadd_ps(p, z2, S8(-3.33332819422E-1f));
    const __m256 ys = _mm256_fmadd_ps(_mm256_mul_ps(p, z2), z, z);
    /* large |x|: sign(x) (1 - 2 / (e^(2|x|) + 1)) */
    const __m256 zc = _mm256_min_ps(z, S8(10.0f)); /* NaN lanes are fixed below */
    const __m256 e = exp8_tanh(_mm256_add_ps(zc, zc));
    const __m256 yl = _mm256_sub_ps(one, _mm256_div_ps(S8(2.0f), _mm256_add_ps(e, one)));
    __m256 out = _mm256_blendv_ps(yl, ys, _mm256_cmp_ps(z, S8(0.625f), _CMP_LT_OQ));
    out = _mm256_or_ps(out, _mm256_and_ps(v, sign));
    return _mm256_blendv_ps(out, _mm256_add_ps(v, v), _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
}

/* y[i] = F(x[i]) for all n, the tail through a zero-padded vector (y may be x). */
#define VM_ARRAY8(name, F)                                                                         \
    A2 static void name(const float *x, float *y, int64_t n) {                                     \
        int64_t i = 0;                                                                             \
        for (; i + 8 <= n; i += 8)                                                                 \
            _mm256_storeu_ps(y + i, F(_mm256_loadu_ps(x + i)));                                    \
        if (i < n) {                                                                               \
            float buf[8] = {0};                                                                    \
            memcpy(buf, x + i, sizeof(float) * (size_t)(n - i));                                   \
            _mm256_storeu_ps(buf, F(_mm256_loadu_ps(buf)));                                        \
            memcpy(y + i, buf, sizeof(float) * (size_t)(n - i));                                   \
        }                                                                                          \
    }
VM_ARRAY8(exp_avx2, exp8)
VM_ARRAY8(log_avx2, log8)
VM_ARRAY8(erf_avx2, erf8)
VM_ARRAY8(tanh_avx2, tanh8)

/* ---- AVX-512F, 16 lanes: the same operations as above, lane for lane ---- */
#define A5 __attribute__((target("avx512f,avx2,fma")))
#define S16 _mm512_set1_ps
#define BL16(k, a, b) _mm512_mask_blend_ps((k), (a), (b)) /* k ? b : a */

A5 static __m512 exp16(__m512 x) {
    const __mmask16 under = _mm512_cmp_ps_mask(x, S16(EXP_LO), _CMP_LT_OQ);
    const __m512 xc = _mm512_maskz_mov_ps((__mmask16)~under, _mm512_min_ps(x, S16(EXP_HI)));
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(xc, S16(LOG2E)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, S16(LN2_HI), xc);
    r = _mm512_fnmadd_ps(n, S16(LN2_LO), r);
    __m512 p = S16(1.0f / 5040);
    p = _mm512_fmadd_ps(p, r, S16(1.0f / 720));
    p = _mm512_fmadd_ps(p, r, S16(1.0f / 120));
    p = _mm512_fmadd_ps(p, r, S16(1.0f / 24));
    p = _mm512_fmadd_ps(p, r, S16(1.0f / 6));
    p = _mm512_fmadd_ps(p, r, S16(0.5f));
    p = _mm512_fmadd_ps(p, r, S16(1.0f));
    p = _mm512_fmadd_ps(p, r, S16(1.0f));
    const __m512i ni = _mm512_cvtps_epi32(n);
    const __m512i n1 = _mm512_srai_epi32(ni, 1), n2 = _mm512_sub_epi32(ni, n1);
    const __m512i bias = _mm512_set1_epi32(127);
    const __m512 s1 = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(n1, bias), 23));
    const __m512 s2 = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(n2, bias), 23));
    const __m512 out =
        _mm512_maskz_mov_ps((__mmask16)~under, _mm512_mul_ps(_mm512_mul_ps(p, s1), s2));
    return BL16(_mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q), out, _mm512_add_ps(x, x));
}

A5 static __m512 log16(__m512 x) {
    const __mmask16 den = _mm512_cmp_ps_mask(x, S16(0x1p-126f), _CMP_LT_OQ);
    const __m512 xs = BL16(den, x, _mm512_mul_ps(x, S16(0x1p23f)));
    const __m512i ix = _mm512_sub_epi32(_mm512_castps_si512(xs), _mm512_set1_epi32(SQRT_HALF_BITS));
    __m512i k = _mm512_srai_epi32(ix, 23);
    k = _mm512_mask_sub_epi32(k, den, k, _mm512_set1_epi32(23));
    const __m512 m = _mm512_castsi512_ps(_mm512_add_epi32(
        _mm512_and_si512(ix, _mm512_set1_epi32(0x7fffff)), _mm512_set1_epi32(SQRT_HALF_BITS)));
    const __m512 f = _mm512_sub_ps(m, S16(1.0f));
    const __m512 s = _mm512_div_ps(f, _mm512_add_ps(f, S16(2.0f)));
    const __m512 z = _mm512_mul_ps(s, s);
    __m512 R = S16(2.0f / 9);
    R = _mm512_fmadd_ps(R, z, S16(2.0f / 7));
    R = _mm512_fmadd_ps(R, z, S16(2.0f / 5));
    R = _mm512_fmadd_ps(R, z, S16(2.0f / 3));
    R = _mm512_mul_ps(R, z);
    const __m512 hfsq = _mm512_mul_ps(_mm512_mul_ps(f, f), S16(0.5f));
    const __m512 dk = _mm512_cvtepi32_ps(k);
    __m512 r = _mm512_fmadd_ps(s, _mm512_add_ps(hfsq, R), _mm512_mul_ps(dk, S16(LN2_LO)));
    r = _mm512_sub_ps(_mm512_sub_ps(hfsq, r), f);
    __m512 out = _mm512_fmsub_ps(dk, S16(LN2_HI), r);
    out = BL16(_mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_EQ_OQ), out, S16(-INFINITY));
    out = BL16(_mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_LT_OQ), out, S16(NAN));
    return BL16(_mm512_cmp_ps_mask(x, S16(INFINITY), _CMP_NLT_UQ), out, _mm512_add_ps(x, x));
}

A5 static __m512 erf16(__m512 x) {
    const __m512i sbit = _mm512_set1_epi32((int)0x80000000u);
    const __m512 a = _mm512_castsi512_ps(_mm512_andnot_si512(sbit, _mm512_castps_si512(x)));
    const __m512 t = _mm512_mul_ps(x, x);
    __m512 ps = S16(erf_small[0]);
    for (int j = 1; j < 7; j++)
        ps = _mm512_fmadd_ps(ps, t, S16(erf_small[j]));
    ps = _mm512_fmadd_ps(ps, x, x);
    const __m512 ac = _mm512_min_ps(a, S16(ERF_BIG));
    const __mmask16 in_a = _mm512_cmp_ps_mask(ac, S16(ERFC_AB), _CMP_LT_OQ);
    const __m512 w = _mm512_sub_ps(ac, BL16(in_a, S16(ERFC_B_C), S16(ERFC_A_C)));
    __m512 e = BL16(in_a, S16(erfc_b[0]), S16(erfc_a[0]));
    for (int j = 1; j < 12; j++)
        e = _mm512_fmadd_ps(e, w, BL16(in_a, S16(erfc_b[j]), S16(erfc_a[j])));
    __m512 pb = _mm512_sub_ps(S16(1.0f), e);
    pb = BL16(_mm512_cmp_ps_mask(a, S16(ERF_BIG), _CMP_GE_OQ), pb, S16(1.0f));
    pb = _mm512_castsi512_ps(
        _mm512_or_si512(_mm512_castps_si512(pb), _mm512_and_si512(_mm512_castps_si512(x), sbit)));
    const __m512 out = BL16(_mm512_cmp_ps_mask(a, S16(1.0f), _CMP_LT_OQ), pb, ps);
    return BL16(_mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q), out, _mm512_add_ps(x, x));
}

A5 static __m512 exp16_tanh(__m512 x) {
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, S16(LOG2E)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, S16(LN2_HI), x);
    r = _mm512_fnmadd_ps(n, S16(LN2_LO), r);
    __m512 p = S16(1.0f / 5040);
    p = _mm512_fmadd_ps(p, r, S16(1.0f / 720));
    p = _mm512_fmadd_ps(p, r, S16(1.0f / 120));
    p = _mm512_fmadd_ps(p, r, S16(1.0f / 24));
    p = _mm512_fmadd_ps(p, r, S16(1.0f / 6));
    p = _mm512_fmadd_ps(p, r, S16(0.5f));
    p = _mm512_fmadd_ps(p, r, S16(1.0f));
    p = _mm512_fmadd_ps(p, r, S16(1.0f));
    const __m512i e = _mm512_slli_epi32(_mm512_cvtps_epi32(n), 23);
    return _mm512_castsi512_ps(_mm512_add_epi32(_mm512_castps_si512(p), e));
}

A5 static __m512 tanh16(__m512 v) {
    const __m512i sbit = _mm512_set1_epi32((int)0x80000000u);
    const __m512 one = S16(1.0f);
    const __m512 z = _mm512_castsi512_ps(_mm512_andnot_si512(sbit, _mm512_castps_si512(v)));
    const __m512 z2 = _mm512_mul_ps(z, z);
    __m512 p = S16(-5.70498872745E-3f);
    p = _mm512_fmadd_ps(p, z2, S16(2.06390887954E-2f));
    p = _mm512_fmadd_ps(p, z2, S16(-5.37397155531E-2f));
    p = _mm512_fmadd_ps(p, z2, S16(1.33314422036E-1f));
    p = _mm512_fmadd_ps(p, z2, S16(-3.33332819422E-1f));
    const __m512 ys = _mm512_fmadd_ps(_mm512_mul_ps(p, z2), z, z);
    const __m512 zc = _mm512_min_ps(z, S16(10.0f));
    const __m512 e = exp16_tanh(_mm512_add_ps(zc, zc));
    const __m512 yl = _mm512_sub_ps(one, _mm512_div_ps(S16(2.0f), _mm512_add_ps(e, one)));
    __m512 out = BL16(_mm512_cmp_ps_mask(z, S16(0.625f), _CMP_LT_OQ), yl, ys);
    out = _mm512_castsi512_ps(
        _mm512_or_si512(_mm512_castps_si512(out), _mm512_and_si512(_mm512_castps_si512(v), sbit)));
    return BL16(_mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q), out, _mm512_add_ps(v, v));
}

/* The tail under a mask: the lanes past n are loaded as 0 and not stored. */
#define VM_ARRAY16(name, F)                                                                        \
    A5 static void name(const float *x, float *y, int64_t n) {                                     \
        int64_t i = 0;                                                                             \
        for (; i + 16 <= n; i += 16)                                                               \
            _mm512_storeu_ps(y + i, F(_mm512_loadu_ps(x + i)));                                    \
        if (i < n) {                                                                               \
            const __mmask16 k = (__mmask16)((1u << (n - i)) - 1);                                  \
            _mm512_mask_storeu_ps(y + i, k, F(_mm512_maskz_loadu_ps(k, x + i)));                   \
        }                                                                                          \
    }
VM_ARRAY16(exp_avx512, exp16)
VM_ARRAY16(log_avx512, log16)
VM_ARRAY16(erf_avx512, erf16)
VM_ARRAY16(tanh_avx512, tanh16)
#endif

/* The public array functions: the chosen path, libm's functions on the portable one. */
#define VM_DISPATCH(name, fn, libm)                                                                \
    void name(const float *x, float *y, int64_t n) {                                               \
        switch (tg__vmath_isa()) {                                                                 \
        case TG_VMATH_AVX512: fn##_avx512(x, y, n); return;                                        \
        case TG_VMATH_AVX2: fn##_avx2(x, y, n); return;                                            \
        default:                                                                                   \
            for (int64_t i = 0; i < n; i++)                                                        \
                y[i] = libm(x[i]);                                                                 \
        }                                                                                          \
    }
#if !defined(__x86_64__)
#define exp_avx512(x, y, n) (void)0
#define exp_avx2(x, y, n) (void)0
#define log_avx512(x, y, n) (void)0
#define log_avx2(x, y, n) (void)0
#define erf_avx512(x, y, n) (void)0
#define erf_avx2(x, y, n) (void)0
#define tanh_avx512(x, y, n) (void)0
#define tanh_avx2(x, y, n) (void)0
#endif
VM_DISPATCH(tg__exp_f32, exp, expf)
VM_DISPATCH(tg__log_f32, log, logf)
VM_DISPATCH(tg__erf_f32, erf, erff)
VM_DISPATCH(tg__tanh_f32, tanh, tanhf)
