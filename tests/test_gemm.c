/* The matmul kernels: every kernel this CPU runs (portable, avx2, avx512, openblas when built)
 * against a naive double-precision product, in the four transpose forms, with beta 0 and 1,
 * odd sizes and padded leading dimensions, on 1 and 2 threads; and the results of 1 and 2
 * threads must be identical bit for bit. */
#include "kernels/parallel.h"

#include <criterion/criterion.h>
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct gemm_case {
    int64_t M, N, K;
} gemm_case;

/* Odd sizes around the tiles (4x8, 6x16, 12x32), the blocks (kc 256, mc 72..144, nc 2048-4096)
 * and the threading threshold (2^21 multiply-adds), kept small enough for valgrind. */
static const gemm_case cases[] = {
    {1, 1, 1},      {1, 7, 17},     {7, 1, 17},      {17, 7, 1},    {7, 17, 65},
    {65, 7, 17},    {17, 65, 7},    {33, 40, 520},   {257, 65, 17}, {65, 130, 300},
    {200, 90, 150}, {13, 3100, 60}, {150, 13, 1100},
};
#define N_CASES (sizeof cases / sizeof cases[0])

static double rnd(tg_rng *rng) { return tg_rng_uniform(rng) * 2 - 1; }

/* One product with op(A) [M,K], op(B) [K,N]; leading dimensions padded by 3 to catch code that
 * assumes packed rows. Returns the number of elements off the reference. */
static int check_case(tg_dtype dtype, bool ta, bool tb, int beta, const gemm_case *cs,
                      const char *kname, bool bit_identical) {
    const int64_t M = cs->M, N = cs->N, K = cs->K;
    const int64_t ar = ta ? K : M, ac = ta ? M : K, br = tb ? N : K, bc = tb ? K : N;
    const int64_t lda = ac + 3, ldb = bc + 3, ldc = N + 3;
    const size_t esz = tg__dtype_size(dtype);
    double *Ad = malloc(sizeof(double) * (size_t)(ar * lda));
    double *Bd = malloc(sizeof(double) * (size_t)(br * ldb));
    double *C0 = malloc(sizeof(double) * (size_t)(M * ldc));
    void *A = malloc(esz * (size_t)(ar * lda)), *B = malloc(esz * (size_t)(br * ldb));
    void *C1 = malloc(esz * (size_t)(M * ldc)), *C2 = malloc(esz * (size_t)(M * ldc));
    cr_assert(Ad && Bd && C0 && A && B && C1 && C2);
    tg_rng rng;
    tg_rng_seed(&rng, (uint64_t)(M * 1000003 + N * 1009 + K) ^ (uint64_t)(ta * 2 + tb));
    /* Values exactly representable in float, so the f32 and f64 inputs agree with Ad and Bd. */
    for (int64_t i = 0; i < ar * lda; i++)
        Ad[i] = (float)rnd(&rng);
    for (int64_t i = 0; i < br * ldb; i++)
        Bd[i] = (float)rnd(&rng);
    for (int64_t i = 0; i < M * ldc; i++)
        C0[i] = beta ? (float)rnd(&rng) : NAN; /* beta 0 must overwrite, never read C */
    for (int64_t i = 0; i < ar * lda; i++) {
        if (dtype == TG_F32)
            ((float *)A)[i] = (float)Ad[i];
        else
            ((double *)A)[i] = Ad[i];
    }
    for (int64_t i = 0; i < br * ldb; i++) {
        if (dtype == TG_F32)
            ((float *)B)[i] = (float)Bd[i];
        else
            ((double *)B)[i] = Bd[i];
    }
    void *Cs[2] = {C1, C2};
    for (int t = 0; t < 2; t++) {
        for (int64_t i = 0; i < M * ldc; i++) {
            if (dtype == TG_F32)
                ((float *)Cs[t])[i] = (float)C0[i];
            else
                ((double *)Cs[t])[i] = C0[i];
        }
        cr_assert_eq(tg_set_num_threads(t + 1), TG_OK);
        tg__gemm(dtype, ta, tb, M, N, K, A, lda, B, ldb, beta, Cs[t], ldc);
    }
    tg_set_num_threads(1);

    const double eps = dtype == TG_F32 ? FLT_EPSILON : DBL_EPSILON;
    int bad = 0;
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++) {
            double ref = beta ? C0[i * ldc + j] : 0, mag = fabs(ref);
            for (int64_t k = 0; k < K; k++) {
                const double a = ta ? Ad[k * lda + i] : Ad[i * lda + k];
                const double b = tb ? Bd[j * ldb + k] : Bd[k * ldb + j];
                ref += a * b;
                mag += fabs(a * b);
            }
            /* The standard bound for a sum of K+1 rounded terms: (K+1) eps sum |terms|. */
            const double tol = (double)(K + 2) * eps * mag + 1e-300;
            const double got =
                dtype == TG_F32 ? ((float *)C1)[i * ldc + j] : ((double *)C1)[i * ldc + j];
            if (!(fabs(got - ref) <= tol) && bad++ < 3)
                cr_log_error("%s %s ta=%d tb=%d beta=%d [%lld,%lld,%lld]: C[%lld,%lld] = %.9g, "
                             "reference %.9g (tolerance %.3g)",
                             kname, tg__dtype_name(dtype), ta, tb, beta, (long long)M, (long long)N,
                             (long long)K, (long long)i, (long long)j, got, ref, tol);
        }
    /* The padding between rows must be untouched. */
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = N; j < ldc; j++) {
            const double got =
                dtype == TG_F32 ? ((float *)C1)[i * ldc + j] : ((double *)C1)[i * ldc + j];
            const double want = C0[i * ldc + j];
            if (!(got == want || (isnan(got) && isnan(want))) && bad++ < 3)
                cr_log_error("%s: padding C[%lld,%lld] was written", kname, (long long)i,
                             (long long)j);
        }
    for (int64_t i = 0; i < M && bit_identical; i++) /* 1 and 2 threads: the same bits */
        if (memcmp((char *)C1 + (size_t)(i * ldc) * esz, (char *)C2 + (size_t)(i * ldc) * esz,
                   (size_t)N * esz) != 0 &&
            bad++ < 3)
            cr_log_error("%s %s ta=%d tb=%d beta=%d [%lld,%lld,%lld]: row %lld differs between "
                         "1 and 2 threads",
                         kname, tg__dtype_name(dtype), ta, tb, beta, (long long)M, (long long)N,
                         (long long)K, (long long)i);
    free(Ad), free(Bd), free(C0), free(A), free(B), free(C1), free(C2);
    return bad;
}

static void check_kernel(tg__kernel_id id) {
    if (!tg__kernel_available(id)) {
        cr_log_info("kernel %s is not available here: skipped", tg__kernel_id_name(id));
        cr_skip_test("kernel %s not available on this CPU or build", tg__kernel_id_name(id));
    }
    const tg__kernel_id saved = tg__kernel_get();
    cr_assert_eq(tg__kernel_set(id), TG_OK);
    cr_assert_str_eq(tg_kernel_name(), tg__kernel_id_name(id));
    int bad = 0;
    for (int d = 0; d < 2; d++)
        for (int form = 0; form < 4; form++)
            for (size_t c = 0; c < N_CASES; c++) {
                /* Both betas on the small cases, alternating on the large ones (time). */
                for (int beta = 0; beta < 2; beta++) {
                    if (cases[c].M * cases[c].N * cases[c].K > 100000 &&
                        (int)((c + form) % 2) != beta)
                        continue;
                    /* OpenBLAS blocks by size and thread count: accuracy only. */
                    bad += check_case(d ? TG_F64 : TG_F32, form & 1, form >> 1, beta, &cases[c],
                                      tg__kernel_id_name(id), id != TG_KERNEL_OPENBLAS);
                }
            }
    cr_expect_eq(bad, 0, "kernel %s: %d mismatches (see the log)", tg__kernel_id_name(id), bad);
    tg__kernel_set(saved);
}

Test(gemm, portable) { check_kernel(TG_KERNEL_PORTABLE); }
Test(gemm, avx2) { check_kernel(TG_KERNEL_AVX2); }
Test(gemm, avx512) { check_kernel(TG_KERNEL_AVX512); }
Test(gemm, openblas) { check_kernel(TG_KERNEL_OPENBLAS); }

/* The direct path (every product below the threading threshold): sizes 1..40 around its tiles
 * (12 x 32 and 12 x 16 for AVX-512, 6 x 16 and 6 x 8 for AVX2, 4 x 8 portable) and their
 * masked tails, in the four forms, beta 0 and 1, f32 and f64, padded leading dimensions, against
 * the double-precision reference, and 1 and 2 threads bit for bit (check_case). */
static void check_small(tg__kernel_id id) {
    if (!tg__kernel_available(id))
        cr_skip_test("kernel %s not available on this CPU or build", tg__kernel_id_name(id));
    const tg__kernel_id saved = tg__kernel_get();
    cr_assert_eq(tg__kernel_set(id), TG_OK);
    static const int64_t edge[] = {1, 2, 3, 4, 5, 7, 8, 9, 11, 12, 13, 16, 17, 24, 31, 32, 33, 40};
    const int n_edge = sizeof edge / sizeof edge[0];
    tg_rng rng;
    tg_rng_seed(&rng, 40);
    int bad = 0, n = 0;
    for (int t = 0; t < 160; t++) {
        /* Half the triples from the edge sizes, half uniform in 1..40. */
        gemm_case cs;
        int64_t *dims[3] = {&cs.M, &cs.N, &cs.K};
        for (int d = 0; d < 3; d++)
            *dims[d] = t % 2 ? edge[(int)(tg_rng_uniform(&rng) * n_edge) % n_edge]
                             : 1 + (int64_t)(tg_rng_uniform(&rng) * 40) % 40;
        for (int d = 0; d < 2; d++)
            for (int form = 0; form < 4; form++)
                for (int beta = 0; beta < 2; beta++, n++)
                    bad += check_case(d ? TG_F64 : TG_F32, form & 1, form >> 1, beta, &cs,
                                      tg__kernel_id_name(id), id != TG_KERNEL_OPENBLAS);
    }
    cr_expect_eq(bad, 0, "kernel %s: %d mismatches in %d small products (see the log)",
                 tg__kernel_id_name(id), bad, n);
    tg__kernel_set(saved);
}

Test(gemm, small_portable) { check_small(TG_KERNEL_PORTABLE); }
Test(gemm, small_avx2) { check_small(TG_KERNEL_AVX2); }
Test(gemm, small_avx512) { check_small(TG_KERNEL_AVX512); }
Test(gemm, small_openblas) { check_small(TG_KERNEL_OPENBLAS); }

/* Narrow contiguous products (N 1, 2, 4, 8, K up to 2N: the 2-4-2 network's layers), which the
 * AVX-512 kernel computes as one flat array (tg__gemm_narrow_avx512_f32): the bits of the blocked
 * path. A [M,K] x [K,N] product of at least 2^21 multiply-adds, forced onto the blocked path
 * (tg__gemm_force_blocked) and split on 2 threads; runs of its rows, from 1 to 37 (the masked
 * tails), through tg__gemm at 1 thread go direct. Both with B
 * as is and transposed (tg__gemm transposes it first), beta 0 and 1. */
Test(gemm, narrow_products_give_the_blocked_bits) {
    if (!tg__kernel_available(TG_KERNEL_AVX512))
        cr_skip_test("AVX-512 not available on this CPU or build");
    const tg__kernel_id saved = tg__kernel_get();
    cr_assert_eq(tg__kernel_set(TG_KERNEL_AVX512), TG_OK);
    static const int64_t ns[] = {1, 2, 4, 8};
    tg_rng rng;
    tg_rng_seed(&rng, 77);
    int bad = 0, ran = 0;
    for (int ni = 0; ni < 4; ni++)
        for (int64_t K = 1; K <= 2 * ns[ni]; K++)
            for (int tb = 0; tb < 2; tb++)
                for (int beta = 0; beta < 2; beta++) {
                    const int64_t N = ns[ni];
                    const int64_t M = ((int64_t)1 << 21) / (N * K) + 40; /* blocked at 2 threads */
                    float *A = malloc(sizeof(float) * (size_t)(M * K));
                    float *B = malloc(sizeof(float) * (size_t)(K * N));
                    float *C0 = malloc(sizeof(float) * (size_t)(M * N));
                    float *C1 = malloc(sizeof(float) * (size_t)(M * N));
                    cr_assert(A && B && C0 && C1);
                    for (int64_t i = 0; i < M * K; i++)
                        A[i] = (float)rnd(&rng);
                    for (int64_t i = 0; i < K * N; i++)
                        B[i] = (float)rnd(&rng);
                    for (int64_t i = 0; i < M * N; i++)
                        C0[i] = C1[i] = (float)rnd(&rng);
                    const int64_t ldb = tb ? K : N; /* B is [N,K] when transposed */
                    cr_assert_eq(tg_set_num_threads(2), TG_OK);
                    cr_assert(M * N * K >= ((int64_t)1 << 21));
                    const bool was = tg__gemm_force_blocked(true);
                    tg__gemm(TG_F32, false, tb, M, N, K, A, K, B, ldb, beta, C0, N);
                    tg__gemm_force_blocked(was);
                    tg_set_num_threads(1);
                    for (int64_t i0 = 0, m = 1; i0 + m <= M && m <= 37; i0 += m, m++) {
                        tg__gemm(TG_F32, false, tb, m, N, K, A + i0 * K, K, B, ldb, beta,
                                 C1 + i0 * N, N);
                        ran++;
                        if (memcmp(C0 + i0 * N, C1 + i0 * N, sizeof(float) * (size_t)(m * N)) &&
                            bad++ < 3)
                            cr_log_error("N=%lld K=%lld tb=%d beta=%d: rows %lld..%lld differ "
                                         "from the blocked product",
                                         (long long)N, (long long)K, tb, beta, (long long)i0,
                                         (long long)(i0 + m - 1));
                    }
                    free(A), free(B), free(C0), free(C1);
                }
    tg__kernel_set(saved);
    cr_expect_gt(ran, 0);
    cr_expect_eq(bad, 0, "%d narrow products differ from the blocked path (see the log)", bad);
}

/* The direct path gives the blocked path's bits: a [160,150] x [150,140] product (forced onto
 * the blocked path, on 2 threads: split) and the same elements from products
 * of a corner of it (below the threshold: direct), with the full K so that each element is the
 * same sum. For each own kernel, form, beta and dtype. */
static int check_direct_equals_blocked(tg_dtype dtype, bool ta, bool tb, int beta) {
    const int64_t M = 160, N = 150, K = 140;
    const int64_t lda = (ta ? M : K) + 5, ldb = (tb ? K : N) + 5, ldc = N + 5;
    const int64_t ar = ta ? K : M, br = tb ? N : K;
    const size_t esz = tg__dtype_size(dtype);
    unsigned char *A = malloc(esz * (size_t)(ar * lda)), *B = malloc(esz * (size_t)(br * ldb));
    unsigned char *C0 = malloc(esz * (size_t)(M * ldc)), *C1 = malloc(esz * (size_t)(M * ldc));
    unsigned char *C2 = malloc(esz * (size_t)(M * ldc));
    cr_assert(A && B && C0 && C1 && C2);
    tg_rng rng;
    tg_rng_seed(&rng, (uint64_t)(ta * 4 + tb * 2 + beta));
    for (int64_t i = 0; i < ar * lda; i++)
        dtype == TG_F32 ? (void)(((float *)A)[i] = (float)rnd(&rng))
                        : (void)(((double *)A)[i] = rnd(&rng));
    for (int64_t i = 0; i < br * ldb; i++)
        dtype == TG_F32 ? (void)(((float *)B)[i] = (float)rnd(&rng))
                        : (void)(((double *)B)[i] = rnd(&rng));
    for (int64_t i = 0; i < M * ldc; i++)
        dtype == TG_F32 ? (void)(((float *)C0)[i] = (float)rnd(&rng))
                        : (void)(((double *)C0)[i] = rnd(&rng));
    memcpy(C1, C0, esz * (size_t)(M * ldc));
    memcpy(C2, C0, esz * (size_t)(M * ldc));
    cr_assert_eq(tg_set_num_threads(2), TG_OK);
    const bool was = tg__gemm_force_blocked(true);
    tg__gemm(dtype, ta, tb, M, N, K, A, lda, B, ldb, beta, C1, ldc);
    tg__gemm_force_blocked(was);
    tg_set_num_threads(1);
    /* Corners [i0:i0+m, j0:j0+n] with m n K below 2^21, through the same A, B, C strides. */
    /* Disjoint (beta 1 adds to C). n 8 and 4: with AVX-512, AVX2's direct kernel runs them. */
    static const int64_t corner[][4] = {
        {0, 0, 37, 41}, {37, 41, 13, 109}, {50, 0, 110, 9}, {60, 20, 20, 8}, {90, 100, 30, 4}};
    int bad = 0;
    for (int c = 0; c < 5; c++) {
        const int64_t i0 = corner[c][0], j0 = corner[c][1], m = corner[c][2], n = corner[c][3];
        cr_assert(m * n * K < ((int64_t)1 << 21));
        const unsigned char *a = A + (size_t)(ta ? i0 : i0 * lda) * esz;
        const unsigned char *b = B + (size_t)(tb ? j0 * ldb : j0) * esz;
        tg__gemm(dtype, ta, tb, m, n, K, a, lda, b, ldb, beta, C2 + (size_t)(i0 * ldc + j0) * esz,
                 ldc);
        for (int64_t i = i0; i < i0 + m; i++)
            if (memcmp(C1 + (size_t)(i * ldc + j0) * esz, C2 + (size_t)(i * ldc + j0) * esz,
                       (size_t)n * esz) != 0 &&
                bad++ < 3)
                cr_log_error("%s %s ta=%d tb=%d beta=%d: row %lld of corner %d differs from the "
                             "blocked product",
                             tg_kernel_name(), tg__dtype_name(dtype), ta, tb, beta, (long long)i,
                             c);
    }
    free(A), free(B), free(C0), free(C1), free(C2);
    return bad;
}

Test(gemm, direct_path_gives_the_blocked_bits) {
    const tg__kernel_id saved = tg__kernel_get();
    int bad = 0, tried = 0;
    for (int id = TG_KERNEL_PORTABLE; id <= TG_KERNEL_AVX512; id++) {
        if (!tg__kernel_available((tg__kernel_id)id))
            continue;
        cr_assert_eq(tg__kernel_set((tg__kernel_id)id), TG_OK);
        tried++;
        for (int d = 0; d < 2; d++)
            for (int form = 0; form < 4; form++)
                for (int beta = 0; beta < 2; beta++)
                    bad +=
                        check_direct_equals_blocked(d ? TG_F64 : TG_F32, form & 1, form >> 1, beta);
    }
    tg__kernel_set(saved);
    cr_expect(tried > 0);
    cr_expect_eq(bad, 0, "%d rows differ between the direct and the blocked path (see the log)",
                 bad);
}

/* A product between 2^21 and 2^24 multiply-adds runs in the direct kernel on one thread, in the
 * direct kernel on each thread's rows on two (M >= N), and, forced, blocked, packed and split
 * on two (K = 784: several K blocks): the same bits each way. */
Test(gemm, one_thread_direct_equals_two_thread_split_and_blocked) {
    int bad = 0;
    for (int d = 0; d < 2; d++)
        for (int form = 0; form < 4; form++)
            for (int beta = 0; beta < 2; beta++) {
                const tg_dtype dtype = d ? TG_F64 : TG_F32;
                const bool ta = form & 1, tb = form >> 1;
                const int64_t M = 128, N = 128, K = 784; /* 12.8M multiply-adds */
                const int64_t lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 3, ldc = N + 3;
                const int64_t na = (ta ? K : M) * lda, nb = (tb ? N : K) * ldb, nc = M * ldc;
                const size_t esz = tg__dtype_size(dtype);
                unsigned char *A = malloc(esz * (size_t)na), *B = malloc(esz * (size_t)nb);
                unsigned char *C1 = malloc(esz * (size_t)nc), *C2 = malloc(esz * (size_t)nc);
                cr_assert(A && B && C1 && C2);
                tg_rng rng;
                tg_rng_seed(&rng, (uint64_t)(d * 16 + form * 2 + beta));
                for (int64_t i = 0; i < na; i++)
                    d ? (void)(((double *)A)[i] = rnd(&rng))
                      : (void)(((float *)A)[i] = (float)rnd(&rng));
                for (int64_t i = 0; i < nb; i++)
                    d ? (void)(((double *)B)[i] = rnd(&rng))
                      : (void)(((float *)B)[i] = (float)rnd(&rng));
                for (int64_t i = 0; i < nc; i++)
                    d ? (void)(((double *)C1)[i] = rnd(&rng))
                      : (void)(((float *)C1)[i] = (float)rnd(&rng));
                memcpy(C2, C1, esz * (size_t)nc);
                unsigned char *C3 = malloc(esz * (size_t)nc);
                cr_assert(C3);
                memcpy(C3, C1, esz * (size_t)nc);
                tg_set_num_threads(1);
                tg__gemm(dtype, ta, tb, M, N, K, A, lda, B, ldb, beta, C1, ldc);
                cr_assert_eq(tg_set_num_threads(2), TG_OK);
                tg__gemm(dtype, ta, tb, M, N, K, A, lda, B, ldb, beta, C2, ldc);
                const bool was = tg__gemm_force_blocked(true);
                tg__gemm(dtype, ta, tb, M, N, K, A, lda, B, ldb, beta, C3, ldc);
                tg__gemm_force_blocked(was);
                tg_set_num_threads(1);
                if (memcmp(C1, C2, esz * (size_t)nc) != 0) {
                    bad++;
                    cr_log_error("%s ta %d tb %d beta %d: 1 and 2 threads (direct) differ",
                                 tg__dtype_name(dtype), ta, tb, beta);
                }
                if (memcmp(C1, C3, esz * (size_t)nc) != 0) {
                    bad++;
                    cr_log_error("%s ta %d tb %d beta %d: direct and blocked differ",
                                 tg__dtype_name(dtype), ta, tb, beta);
                }
                free(A);
                free(B);
                free(C1);
                free(C2);
                free(C3);
            }
    cr_expect_eq(bad, 0, "%d of 32 comparisons differ (see the log)", bad);
}

Test(gemm, empty_inner_dimension_gives_beta_c) {
    float C[6] = {1, 2, 3, 4, 5, 6};
    const float dummy = 7;
    tg__gemm(TG_F32, false, false, 2, 3, 0, &dummy, 1, &dummy, 3, 1, C, 3);
    cr_expect_eq(C[5], 6.0f, "beta 1, K 0: C unchanged");
    tg__gemm(TG_F32, false, false, 2, 3, 0, &dummy, 1, &dummy, 3, 0, C, 3);
    for (int i = 0; i < 6; i++)
        cr_expect_eq(C[i], 0.0f, "beta 0, K 0: C zeroed");
}

Test(gemm, unavailable_kernel_is_refused) {
    for (int id = 0; id < TG_KERNEL_COUNT; id++)
        if (!tg__kernel_available((tg__kernel_id)id)) {
            cr_expect_eq(tg__kernel_set((tg__kernel_id)id), TG_ERR_VALUE);
            cr_expect(strstr(tg_last_errmsg(), tg__kernel_id_name((tg__kernel_id)id)) != NULL,
                      "message names the kernel: %s", tg_last_errmsg());
        }
    cr_expect_eq(tg__kernel_set(TG_KERNEL_COUNT), TG_ERR_VALUE);
}

Test(threads, count_is_validated) {
    cr_expect_eq(tg_set_num_threads(0), TG_ERR_VALUE);
    cr_expect_str_eq(tg_last_errmsg(), "tg_set_num_threads: 0 threads asked, must be in 1..256");
    cr_expect_eq(tg_set_num_threads(257), TG_ERR_VALUE);
    cr_expect_eq(tg_set_num_threads(2), TG_OK);
    cr_expect_eq(tg_get_num_threads(), 2);
    cr_expect_eq(tg_set_num_threads(1), TG_OK);
    cr_expect_eq(tg_get_num_threads(), 1);
}

/* Through the public op: a [96,300] x [300,200] matmul and its backward on 1 and 2 threads give
 * the same bits (forward and both gradients), with the own kernel the CPU picks. */
Test(threads, matmul_op_is_bit_identical_across_thread_counts) {
    const tg__kernel_id saved = tg__kernel_get();
    if (saved == TG_KERNEL_OPENBLAS) /* the best own kernel instead */
        for (int id = TG_KERNEL_AVX512; id >= TG_KERNEL_PORTABLE; id--)
            if (tg__kernel_set((tg__kernel_id)id) == TG_OK)
                break;
    tg_rng rng;
    tg_rng_seed(&rng, 6);
    tg_tensor *a = tg_tensor_rand(TG_F32, TG_SHAPE(96, 300), -1, 1, &rng);
    tg_tensor *b = tg_tensor_rand(TG_F32, TG_SHAPE(300, 200), -1, 1, &rng);
    tg_tensor *w = tg_tensor_rand(TG_F32, TG_SHAPE(96, 200), -1, 1, &rng);
    tg_tensor_set_requires_grad(a, 1);
    tg_tensor_set_requires_grad(b, 1);
    tg_tensor *out[2][3];
    tg_tape *t = tg_tape_new();
    for (int n = 0; n < 2; n++) {
        tg_set_num_threads(n + 1);
        tg_tape_reset(t);
        tg_tensor_zero_grad(a);
        tg_tensor_zero_grad(b);
        tg_tensor *y = tg_matmul(t, a, b);
        cr_assert_eq(tg_backward(t, tg_sum(t, tg_mul(t, y, w))), TG_OK, "%s", tg_tape_errmsg(t));
        out[n][0] = tg_tensor_clone(y, TG_F32);
        out[n][1] = tg_tensor_clone(tg_tensor_grad(a), TG_F32);
        out[n][2] = tg_tensor_clone(tg_tensor_grad(b), TG_F32);
    }
    tg_set_num_threads(1);
    const char *what[3] = {"y", "da", "db"};
    for (int k = 0; k < 3; k++) {
        cr_expect(memcmp(tg_tensor_cdata(out[0][k]), tg_tensor_cdata(out[1][k]),
                         sizeof(float) * (size_t)tg_tensor_numel(out[0][k])) == 0,
                  "%s differs between 1 and 2 threads", what[k]);
        tg_tensor_free(out[0][k]);
        tg_tensor_free(out[1][k]);
    }
    tg_tape_free(t);
    tg_tensor_free(a), tg_tensor_free(b), tg_tensor_free(w);
    tg__kernel_set(saved);
}
