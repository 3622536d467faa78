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

/* The edge tiles (tg__edge_fn): the micro-kernel's loop, C's rows below `rows` and columns
 * below `cols` loaded and stored through masks. */
#define EDGE_LOAD_PS(r)                                                                            \
    c##r##_0 =                                                                                     \
        accumulate && (r) < rows ? _mm512_maskz_loadu_ps(m0, c + (r)*ldc) : _mm512_setzero_ps();   \
    c##r##_1 = accumulate && (r) < rows ? _mm512_maskz_loadu_ps(m1, c + (r)*ldc + 16)              \
                                        : _mm512_setzero_ps();
#define EDGE_STORE_PS(r)                                                                           \
    if ((r) < rows) {                                                                              \
        _mm512_mask_storeu_ps(c + (r)*ldc, m0, c##r##_0);                                          \
        _mm512_mask_storeu_ps(c + (r)*ldc + 16, m1, c##r##_1);                                     \
    }

TG_AVX512 static void edge_avx512_f32(int64_t kc, const void *a_, const void *b_, void *c_,
                                      int64_t ldc, int accumulate, int rows, int cols) {
    const float *a = a_, *b = b_;
    float *c = c_;
    const __mmask16 m0 = (__mmask16)(cols >= 16 ? 0xffff : (1u << cols) - 1);
    const __mmask16 m1 = (__mmask16)(cols <= 16 ? 0 : (1u << (cols - 16)) - 1);
    ROWS(DECL_PS)
    ROWS(EDGE_LOAD_PS)
    for (int64_t k = 0; k < kc; k++, a += 12, b += 32) {
        const __m512 b0 = _mm512_loadu_ps(b), b1 = _mm512_loadu_ps(b + 16);
        ROWS(FMA_PS)
    }
    ROWS(EDGE_STORE_PS)
}

#define EDGE_LOAD_PD(r)                                                                            \
    c##r##_0 =                                                                                     \
        accumulate && (r) < rows ? _mm512_maskz_loadu_pd(m0, c + (r)*ldc) : _mm512_setzero_pd();   \
    c##r##_1 = accumulate && (r) < rows ? _mm512_maskz_loadu_pd(m1, c + (r)*ldc + 8)               \
                                        : _mm512_setzero_pd();
#define EDGE_STORE_PD(r)                                                                           \
    if ((r) < rows) {                                                                              \
        _mm512_mask_storeu_pd(c + (r)*ldc, m0, c##r##_0);                                          \
        _mm512_mask_storeu_pd(c + (r)*ldc + 8, m1, c##r##_1);                                      \
    }

TG_AVX512 static void edge_avx512_f64(int64_t kc, const void *a_, const void *b_, void *c_,
                                      int64_t ldc, int accumulate, int rows, int cols) {
    const double *a = a_, *b = b_;
    double *c = c_;
    const __mmask8 m0 = (__mmask8)(cols >= 8 ? 0xff : (1u << cols) - 1);
    const __mmask8 m1 = (__mmask8)(cols <= 8 ? 0 : (1u << (cols - 8)) - 1);
    ROWS(DECL_PD)
    ROWS(EDGE_LOAD_PD)
    for (int64_t k = 0; k < kc; k++, a += 12, b += 16) {
        const __m512d b0 = _mm512_loadu_pd(b), b1 = _mm512_loadu_pd(b + 8);
        ROWS(FMA_PD)
    }
    ROWS(EDGE_STORE_PD)
}

/* ---- Direct kernels: small products straight from A, B and C (tg__direct_fn) ----
 * Tiles of up to 12 rows x 2 vectors of C (12 x 32 f32, 12 x 16 f64), the columns past N masked
 * off in the loads and stores of B and C; rows of A broadcast from where they are (A or A^T),
 * B's rows loaded from B. The same fused multiply-adds from the same start as the micro-kernel:
 * the result is the blocked path's. */

#define DIRECT_FUNCS(sfx, T, VT, MT, L, LOADU, STOREU, LOADZ, STOREM, SET1, FMA, ZERO)             \
    /* C[0:R, 0:V*L] (masks m0, m1) += op(A)[0:R, :] B[:, 0:V*L], R and V constant */              \
    TG_AVX512 static inline __attribute__((always_inline)) void dtile_##sfx(                       \
        const int R, const int V, const int P, bool ta, int64_t K, const T *a, int64_t lda,        \
        const T *b, int64_t ldb, int beta, T *c, int64_t ldc, MT m0, MT m1) {                      \
        VT acc[12][2];                                                                             \
        const MT m[2] = {m0, m1};                                                                  \
        _Pragma("GCC unroll 12") for (int r = 0; r < R; r++)                                       \
            _Pragma("GCC unroll 2") for (int v = 0; v < V; v++) acc[r][v] =                        \
                beta ? LOADZ(m[v], c + r * ldc + (int64_t)v * (L)) : ZERO();                       \
        /* op(A)[r][k] at a + r*sr + k*sk */                                                       \
        const int64_t sr = ta ? 1 : lda, sk = ta ? lda : 1;                                        \
        for (int64_t k = 0; k < K; k++, a += sk, b += ldb) {                                       \
            VT bv[2];                                                                              \
            _Pragma("GCC unroll 2") for (int v = 0; v < V; v++) bv[v] =                            \
                P && v == V - 1 ? LOADZ(m[v], b + (int64_t)v * (L)) : LOADU(b + (int64_t)v * (L)); \
            _Pragma("GCC unroll 12") for (int r = 0; r < R; r++) {                                 \
                const VT ar = SET1(a[r * sr]);                                                     \
                _Pragma("GCC unroll 2") for (int v = 0; v < V; v++) acc[r][v] =                    \
                    FMA(ar, bv[v], acc[r][v]);                                                     \
            }                                                                                      \
        }                                                                                          \
        _Pragma("GCC unroll 12") for (int r = 0; r < R; r++)                                       \
            _Pragma("GCC unroll 2") for (int v = 0; v < V; v++) {                                  \
            if (P && v == V - 1)                                                                   \
                STOREM(c + r * ldc + (int64_t)v * (L), m[v], acc[r][v]);                           \
            else                                                                                   \
                STOREU(c + r * ldc + (int64_t)v * (L), acc[r][v]);                                 \
        }                                                                                          \
    }                                                                                              \
    TG_AVX512 static inline __attribute__((always_inline)) void drive_##sfx(                       \
        const bool ta, int64_t M, int64_t N, int64_t K, const void *A_, int64_t lda,               \
        const void *B_, int64_t ldb, int beta, void *C_, int64_t ldc) {                            \
        const T *A = A_, *B = B_;                                                                  \
        T *C = C_;                                                                                 \
        for (int64_t j0 = 0; j0 < N; j0 += (int64_t)2 * (L)) {                                     \
            const int64_t nj = N - j0 < (int64_t)2 * (L) ? N - j0 : (int64_t)2 * (L);              \
            const int V = nj > (L) ? 2 : 1, P = nj % (L) != 0;                                     \
            const MT full = (MT)((1u << (L)) - 1);                                                 \
            const MT m0 = V == 2 ? full : (MT)((1u << nj) - 1);                                    \
            const MT m1 = V == 2 ? (MT)((1u << (nj - (L))) - 1) : 0;                               \
            for (int64_t i0 = 0; i0 < M;) {                                                        \
                const int64_t rows = M - i0;                                                       \
                const int R = rows >= 12 ? 12 : rows >= 8 ? 8 : rows >= 4 ? 4 : (int)rows;         \
                const T *a = ta ? A + i0 : A + i0 * lda;                                           \
                T *c = C + i0 * ldc + j0;                                                          \
                switch (R * 4 + (V - 1) * 2 + P) {                                                 \
                    DIRECT_CASE(sfx, 12)                                                           \
                    DIRECT_CASE(sfx, 8)                                                            \
                    DIRECT_CASE(sfx, 4)                                                            \
                    DIRECT_CASE(sfx, 3)                                                            \
                    DIRECT_CASE(sfx, 2)                                                            \
                    DIRECT_CASE(sfx, 1)                                                            \
                default: break;                                                                    \
                }                                                                                  \
                i0 += R;                                                                           \
            }                                                                                      \
        }                                                                                          \
    }                                                                                              \
    TG_AVX512 static void direct_##sfx(bool ta, int64_t M, int64_t N, int64_t K, const void *A,    \
                                       int64_t lda, const void *B, int64_t ldb, int beta, void *C, \
                                       int64_t ldc) {                                              \
        if (ta) /* constant in each copy: op(A)'s strides become immediates or invariants */       \
            drive_##sfx(true, M, N, K, A, lda, B, ldb, beta, C, ldc);                              \
        else                                                                                       \
            drive_##sfx(false, M, N, K, A, lda, B, ldb, beta, C, ldc);                             \
    }
#define DIRECT_CASE1(sfx, R, V, P)                                                                 \
    case (R)*4 + ((V)-1) * 2 + (P):                                                                \
        dtile_##sfx(R, V, P, ta, K, a, lda, B + j0, ldb, beta, c, ldc, m0, m1);                    \
        break;
#define DIRECT_CASE(sfx, R)                                                                        \
    DIRECT_CASE1(sfx, R, 1, 0)                                                                     \
    DIRECT_CASE1(sfx, R, 1, 1) DIRECT_CASE1(sfx, R, 2, 0) DIRECT_CASE1(sfx, R, 2, 1)

#define SET1_PS(p) _mm512_set1_ps(p)
#define SET1_PD(p) _mm512_set1_pd(p)
DIRECT_FUNCS(f32, float, __m512, __mmask16, 16, _mm512_loadu_ps, _mm512_storeu_ps,
             _mm512_maskz_loadu_ps, _mm512_mask_storeu_ps, SET1_PS, _mm512_fmadd_ps,
             _mm512_setzero_ps)
DIRECT_FUNCS(f64, double, __m512d, __mmask8, 8, _mm512_loadu_pd, _mm512_storeu_pd,
             _mm512_maskz_loadu_pd, _mm512_mask_storeu_pd, SET1_PD, _mm512_fmadd_pd,
             _mm512_setzero_pd)

/* ---- Narrow products (tg__gemm_narrow_avx512_f32 in parallel.h) ----
 * Lane l of the vector at flat index o of C is element (o + l) / N, (o + l) % N. For each k it
 * takes A[row][k] from the 32 floats of A that the 16/N rows occupy (one two-vector permute) and
 * B[k][col] from a vector built once. */
TG_AVX512 bool tg__gemm_narrow_avx512_f32(int64_t M, int64_t N, int64_t K, const float *A,
                                          int64_t lda, const float *B, int64_t ldb, int beta,
                                          float *C, int64_t ldc) {
    if ((N != 1 && N != 2 && N != 4 && N != 8) || K < 1 || K > 2 * N || lda != K || ldc != N)
        return false;
    const int rows = 16 / (int)N; /* rows of C per vector */
    __m512 bk[16];
    __m512i ak[16];
    for (int k = 0; k < K; k++) {
        float bl[16];
        int32_t al[16];
        for (int l = 0; l < 16; l++) {
            bl[l] = B[k * ldb + l % N];
            al[l] = (int32_t)((l / N) * K + k); /* A's float for lane l, of the 32 loaded */
        }
        bk[k] = _mm512_loadu_ps(bl);
        ak[k] = _mm512_loadu_si512(al);
    }
    const int64_t total = M * N;
    for (int64_t o = 0, i = 0; o < total; o += 16, i += rows) {
        const int64_t left = total - o < 16 ? total - o : 16;
        const __mmask16 mc = (__mmask16)(left == 16 ? 0xffff : (1u << left) - 1);
        const int64_t a_left = (left / N) * K; /* floats of A the rows hold, at most 32 */
        const float *a = A + i * K;
        const __mmask16 m0 = (__mmask16)(a_left >= 16 ? 0xffff : (1u << a_left) - 1);
        const __mmask16 m1 = (__mmask16)(a_left >= 32  ? 0xffff
                                         : a_left > 16 ? (1u << (a_left - 16)) - 1
                                                       : 0);
        const __m512 a0 = _mm512_maskz_loadu_ps(m0, a), a1 = _mm512_maskz_loadu_ps(m1, a + 16);
        __m512 acc = beta ? _mm512_maskz_loadu_ps(mc, C + o) : _mm512_setzero_ps();
        for (int k = 0; k < K; k++)
            acc = _mm512_fmadd_ps(_mm512_permutex2var_ps(a0, ak[k], a1), bk[k], acc);
        _mm512_mask_storeu_ps(C + o, mc, acc);
    }
    return true;
}

/* ---- Transposing packs (tg__pack_t_fn): op(A) = A and op(B) = B^T ----
 * The block is read as L x L squares (16 x 16 floats, 8 x 8 doubles): L rows of src, L values of
 * k each (masked loads past kb, zeros for rows past the block), transposed in registers, and
 * stored as L columns k of the panel, each of the square's L rows (masked to the panel's width).
 * The scalar loops this replaces wrote one element per cycle at best. */

/* out[j] = lane j of each r[i]: a 16 x 16 transpose (unpack pairs, then 4 x 4 of 32-bit values
 * within 128-bit lanes, then 4 x 4 of the lanes). */
TG_AVX512 static inline __attribute__((always_inline)) void transpose16_ps(__m512 r[16]) {
    __m512 t[16], u[16];
    for (int64_t m = 0; m < 8; m++) {
        t[2 * m] = _mm512_unpacklo_ps(r[2 * m], r[2 * m + 1]);
        t[2 * m + 1] = _mm512_unpackhi_ps(r[2 * m], r[2 * m + 1]);
    }
    for (int64_t q = 0; q < 4; q++) { /* u[4q + c], lane L: rows 4q..4q+3 at column 4L + c */
        u[4 * q + 0] = _mm512_shuffle_ps(t[4 * q], t[4 * q + 2], 0x44);
        u[4 * q + 1] = _mm512_shuffle_ps(t[4 * q], t[4 * q + 2], 0xEE);
        u[4 * q + 2] = _mm512_shuffle_ps(t[4 * q + 1], t[4 * q + 3], 0x44);
        u[4 * q + 3] = _mm512_shuffle_ps(t[4 * q + 1], t[4 * q + 3], 0xEE);
    }
    for (int64_t c = 0; c < 4; c++) {
        const __m512 v0 = _mm512_shuffle_f32x4(u[c], u[4 + c], 0x44);
        const __m512 v1 = _mm512_shuffle_f32x4(u[c], u[4 + c], 0xEE);
        const __m512 v2 = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0x44);
        const __m512 v3 = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0xEE);
        r[c] = _mm512_shuffle_f32x4(v0, v2, 0x88);
        r[4 + c] = _mm512_shuffle_f32x4(v0, v2, 0xDD);
        r[8 + c] = _mm512_shuffle_f32x4(v1, v3, 0x88);
        r[12 + c] = _mm512_shuffle_f32x4(v1, v3, 0xDD);
    }
}

/* The same for 8 x 8 doubles: unpack pairs, then 4 x 4 of the 128-bit lanes. */
TG_AVX512 static inline __attribute__((always_inline)) void transpose8_pd(__m512d r[8]) {
    __m512d t[8];
    for (int64_t m = 0; m < 4; m++) { /* t[2m + c], lane L: rows 2m, 2m+1 at column 2L + c */
        t[2 * m] = _mm512_unpacklo_pd(r[2 * m], r[2 * m + 1]);
        t[2 * m + 1] = _mm512_unpackhi_pd(r[2 * m], r[2 * m + 1]);
    }
    for (int64_t c = 0; c < 2; c++) {
        const __m512d v0 = _mm512_shuffle_f64x2(t[c], t[2 + c], 0x44);
        const __m512d v1 = _mm512_shuffle_f64x2(t[c], t[2 + c], 0xEE);
        const __m512d v2 = _mm512_shuffle_f64x2(t[4 + c], t[6 + c], 0x44);
        const __m512d v3 = _mm512_shuffle_f64x2(t[4 + c], t[6 + c], 0xEE);
        r[c] = _mm512_shuffle_f64x2(v0, v2, 0x88);
        r[2 + c] = _mm512_shuffle_f64x2(v0, v2, 0xDD);
        r[4 + c] = _mm512_shuffle_f64x2(v1, v3, 0x88);
        r[6 + c] = _mm512_shuffle_f64x2(v1, v3, 0xDD);
    }
}

/* Transposing B for the direct kernel, dst[k*N + j] = B[j*ldb + k]: L x L squares of B (L rows j,
 * L columns k; masked loads at the edges, zeros for rows past N, which no store writes),
 * transposed in registers as the packs below do: 4 shuffles a row where gathering each row of
 * op(B) costs about L loads (the attention's 16 x 16 products transpose one operand each). */
#define TRANSPOSE_B_FUNC(sfx, T, VT, L, MT, LOADZ, ZERO, STOREM, TRANSPOSE)                        \
    TG_AVX512 static void transpose_##sfx(const void *B_, int64_t ldb, int64_t K, int64_t N,       \
                                          void *dst_) {                                            \
        const T *B = B_;                                                                           \
        T *dst = dst_;                                                                             \
        for (int64_t j0 = 0; j0 < N; j0 += (L)) {                                                  \
            const int nj = N - j0 < (L) ? (int)(N - j0) : (L);                                     \
            const MT mj = (MT)((1u << nj) - 1);                                                    \
            for (int64_t k0 = 0; k0 < K; k0 += (L)) {                                              \
                const int nk = K - k0 < (L) ? (int)(K - k0) : (L);                                 \
                const MT mk = (MT)((1u << nk) - 1);                                                \
                VT r[L];                                                                           \
                for (int i = 0; i < (L); i++)                                                      \
                    r[i] = i < nj ? LOADZ(mk, B + (j0 + i) * ldb + k0) : ZERO();                   \
                TRANSPOSE(r);                                                                      \
                for (int c = 0; c < nk; c++)                                                       \
                    STOREM(dst + (k0 + c) * N + j0, mj, r[c]);                                     \
            }                                                                                      \
        }                                                                                          \
    }
TRANSPOSE_B_FUNC(f32, float, __m512, 16, __mmask16, _mm512_maskz_loadu_ps, _mm512_setzero_ps,
                 _mm512_mask_storeu_ps, transpose16_ps)
TRANSPOSE_B_FUNC(f64, double, __m512d, 8, __mmask8, _mm512_maskz_loadu_pd, _mm512_setzero_pd,
                 _mm512_mask_storeu_pd, transpose8_pd)

#define PACK_T_FUNC(sfx, T, VT, MT, L, LOADZ, STOREM, ZERO, TRANSPOSE)                             \
    TG_AVX512 static void pack_t_##sfx(const void *src_, int64_t ld, int64_t rows, int64_t kb,     \
                                       int w, void *dst_) {                                        \
        const T *src = src_;                                                                       \
        T *dst = dst_;                                                                             \
        for (int64_t p = 0; p < rows; p += w, dst += (int64_t)w * kb) {                            \
            for (int i0 = 0; i0 < w; i0 += (L)) {           /* the panel's rows i0.. in squares */ \
                const int wi = w - i0 < (L) ? w - i0 : (L); /* rows stored */                      \
                const int64_t left = rows - p - i0;         /* rows of src left */                 \
                const int ni = left < wi ? (left > 0 ? (int)left : 0) : wi; /* rows loaded */      \
                const MT sm = (MT)((1u << wi) - 1);                                                \
                const T *s = src + (p + i0) * ld;                                                  \
                for (int64_t k0 = 0; k0 < kb; k0 += (L)) {                                         \
                    const int nk = kb - k0 < (L) ? (int)(kb - k0) : (L);                           \
                    const MT km = (MT)((1u << nk) - 1);                                            \
                    VT r[L];                                                                       \
                    for (int i = 0; i < (L); i++)                                                  \
                        r[i] = i < ni ? LOADZ(km, s + i * ld + k0) : ZERO();                       \
                    TRANSPOSE(r);                                                                  \
                    T *d = dst + k0 * w + i0;                                                      \
                    for (int k = 0; k < nk; k++)                                                   \
                        STOREM(d + (int64_t)k * w, sm, r[k]);                                      \
                }                                                                                  \
            }                                                                                      \
        }                                                                                          \
    }
PACK_T_FUNC(f32, float, __m512, __mmask16, 16, _mm512_maskz_loadu_ps, _mm512_mask_storeu_ps,
            _mm512_setzero_ps, transpose16_ps)
PACK_T_FUNC(f64, double, __m512d, __mmask8, 8, _mm512_maskz_loadu_pd, _mm512_mask_storeu_pd,
            _mm512_setzero_pd, transpose8_pd)

/* Blocks for a 32-48 KiB L1d and 1-2 MiB L2 (Intel server cores): a kc x nr B panel (32 KiB at
 * kc 256) in L1, the mc x kc A block (144 KiB f32) in L2. Not tuned on hardware: the machine this
 * was written on has no AVX-512. */
const tg__ukernel tg__uk_avx512_f32 = {.mr = 12,
                                       .nr = 32,
                                       .mc = 144,
                                       .kc = 256,
                                       .nc = 4096,
                                       .fn = uk_avx512_f32,
                                       .direct = direct_f32,
                                       .transpose = transpose_f32,
                                       .edge = edge_avx512_f32,
                                       .pack_t = pack_t_f32};
const tg__ukernel tg__uk_avx512_f64 = {.mr = 12,
                                       .nr = 16,
                                       .mc = 96,
                                       .kc = 256,
                                       .nc = 2048,
                                       .fn = uk_avx512_f64,
                                       .direct = direct_f64,
                                       .transpose = transpose_f64,
                                       .edge = edge_avx512_f64,
                                       .pack_t = pack_t_f64};

#else
const tg__ukernel tg__uk_avx512_f32 = {4, 8, 128, 256, 2048, NULL, NULL, NULL, NULL, NULL};
const tg__ukernel tg__uk_avx512_f64 = {4, 8, 64, 256, 2048, NULL, NULL, NULL, NULL, NULL};
#endif
