/* The float32 fast paths of the CNN kernels (src/kernels/conv.c): batch norm's f32 kernels
 * (float lanes, the corrected two-pass variance) against a float64 reference computed from the
 * same float inputs, on data whose mean is large next to its spread (where sum x^2 - (sum x)^2 /
 * M, or y = x a + b, would lose most digits), with chunked and tail runs and [N,F] inputs; and the
 * 2x2 stride-2 max pool (SSE rows) against a naive scan on odd sizes, short rows, ties, NaN and
 * -inf, forward and backward (bit for bit, since each pixel gets at most one term). Each also on
 * 1 and 2 threads, bit for bit. */
#include "kernels/conv.h"
#include "kernels/parallel.h"

#include <criterion/criterion.h>
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static double rnd(tg_rng *rng) { return tg_rng_uniform(rng) * 2 - 1; }

static void *xmalloc(size_t bytes) {
    void *p = malloc(bytes ? bytes : 1);
    cr_assert_not_null(p);
    return p;
}

/* ---- Batch norm, float32 ---- */

typedef struct bn32_case {
    int rank;
    int64_t shape[4];
    double offset; /* added to every value: the mean */
} bn32_case;

static const bn32_case bn32_cases[] = {
    {4, {3, 2, 33, 34}, 0},     /* HW 1122: a chunk of 1024 and one of 98 */
    {4, {3, 2, 33, 34}, 1000},  /* the same about a large mean */
    {4, {5, 3, 7, 7}, -500},    /* HW 49: 3 vectors of 16 and a tail of 1 */
    {2, {37, 5, 1, 1}, 300},    /* [N,F]: runs of 1 */
    {4, {64, 2, 28, 28}, 4096}, /* the CNN's size of run, a mean of 2^12 */
    {4, {2, 3, 1, 5}, 1e-3},    /* runs shorter than a vector */
};
#define N_BN32 (sizeof bn32_cases / sizeof bn32_cases[0])

#define F32_EPS ((double)FLT_EPSILON) /* 2^-23 */

Test(cnn_fast, bn_f32_matches_a_float64_reference_about_a_large_mean) {
    const double eps = 1e-5, mom = 0.1;
    for (size_t ci = 0; ci < N_BN32; ci++)
        for (int affine = 0; affine < 2; affine++) {
            const bn32_case *bc = &bn32_cases[ci];
            tg__bn_geom g;
            char msg[256];
            cr_assert_eq(
                tg__bn_geom_init(&g, "batch_norm", bc->rank, bc->shape, 1, msg, sizeof msg), TG_OK,
                "%s", msg);
            const int64_t C = g.C, HW = g.HW, M = g.N * HW, nx = M * C;
            tg_rng rng;
            tg_rng_seed(&rng, 900 + ci * 2 + (size_t)affine);
            float *x = xmalloc(4 * (size_t)nx), *dy = xmalloc(4 * (size_t)nx);
            float *y = xmalloc(4 * (size_t)nx), *dx = xmalloc(4 * (size_t)nx);
            float *dx0 = xmalloc(4 * (size_t)nx);
            float *gamma = affine ? xmalloc(4 * (size_t)C) : NULL;
            float *beta = affine ? xmalloc(4 * (size_t)C) : NULL;
            float *sm = xmalloc(4 * (size_t)C), *sr = xmalloc(4 * (size_t)C);
            float *rm = xmalloc(4 * (size_t)C), *rv = xmalloc(4 * (size_t)C);
            float *rm0 = xmalloc(4 * (size_t)C), *rv0 = xmalloc(4 * (size_t)C);
            float *dg = xmalloc(4 * (size_t)C), *db = xmalloc(4 * (size_t)C);
            for (int64_t i = 0; i < nx; i++) {
                const int64_t c = (i / HW) % C;
                x[i] = (float)(bc->offset + (double)(c + 1) * 0.5 * rnd(&rng));
                dy[i] = (float)rnd(&rng);
                dx0[i] = (float)rnd(&rng);
            }
            for (int64_t c = 0; c < C; c++) {
                if (affine) {
                    gamma[c] = (float)(1.5 * rnd(&rng));
                    beta[c] = (float)rnd(&rng);
                }
                rm0[c] = (float)rnd(&rng);
                rv0[c] = (float)(1 + tg_rng_uniform(&rng));
                dg[c] = (float)rnd(&rng);
                db[c] = (float)rnd(&rng);
            }
            memcpy(rm, rm0, 4 * (size_t)C);
            memcpy(rv, rv0, 4 * (size_t)C);
            memcpy(dx, dx0, 4 * (size_t)nx);
            const float *dg0 = memcpy(xmalloc(4 * (size_t)C), dg, 4 * (size_t)C);
            const float *db0 = memcpy(xmalloc(4 * (size_t)C), db, 4 * (size_t)C);

            tg__bn_forward_train(&g, TG_F32, x, gamma, beta, eps, mom, y, sm, sr, rm, rv);
            tg__bn_backward(&g, TG_F32, 1, x, gamma, sm, sr, dy, dx, dg, db, false);

            int bad = 0;
            for (int64_t c = 0; c < C && bad < 5; c++) {
                /* the reference, in double from the same floats: two passes */
                double s = 0, ss = 0;
                for (int64_t n = 0; n < g.N; n++)
                    for (int64_t q = 0; q < HW; q++)
                        s += x[(n * C + c) * HW + q];
                const double mean = s / (double)M;
                for (int64_t n = 0; n < g.N; n++)
                    for (int64_t q = 0; q < HW; q++) {
                        const double d = x[(n * C + c) * HW + q] - mean;
                        ss += d * d;
                    }
                const double var = ss / (double)M, rstd = 1 / sqrt(var + eps);
                const double ga = gamma ? gamma[c] : 1, be = beta ? beta[c] : 0;
                /* the statistics to within an ulp or two of their float value (the mean: of
                 * its size or of the spread, which the float sums' rounding is relative to) */
                const double sd = sqrt(var);
                if (fabs(sm[c] - mean) > F32_EPS * (fabs(mean) + sd) ||
                    fabs(sr[c] - rstd) > 2 * F32_EPS * rstd ||
                    fabs(rm[c] - (0.9 * rm0[c] + 0.1 * mean)) >
                        F32_EPS * (0.9 * fabs(rm0[c]) + 0.1 * fabs(mean)) * 2 ||
                    fabs(rv[c] - (0.9 * rv0[c] + 0.1 * ss / (double)(M - 1))) >
                        2 * F32_EPS * (0.9 * rv0[c] + 0.1 * ss / (double)(M - 1))) {
                    cr_expect(0,
                              "case %zu affine %d channel %lld: mean %.9g (want %.9g), rstd %.9g "
                              "(%.9g), running %.9g %.9g",
                              ci, affine, (long long)c, (double)sm[c], mean, (double)sr[c], rstd,
                              (double)rm[c], (double)rv[c]);
                    bad++;
                }
                /* y: a few roundings of values of size |xhat gamma| + |beta|, and the mean's
                 * error above times rstd gamma (an ulp of |gamma|) */
                for (int64_t n = 0; n < g.N; n++)
                    for (int64_t q = 0; q < HW; q++) {
                        const int64_t i = (n * C + c) * HW + q;
                        const double xh = (x[i] - mean) * rstd, want = xh * ga + be;
                        const double tol = 4 * F32_EPS * (fabs(xh * ga) + fabs(be) + fabs(ga));
                        if (fabs(y[i] - want) > tol && bad++ < 5)
                            cr_expect(0, "case %zu affine %d y[%lld] = %.9g, want %.9g (tol %.3g)",
                                      ci, affine, (long long)i, (double)y[i], want, tol);
                    }
                /* backward from the saved (float) mean and rstd, in double */
                const double mu = sm[c], rs = sr[c];
                double sdy = 0, sdyx = 0, sady = 0, sadyx = 0;
                for (int64_t n = 0; n < g.N; n++)
                    for (int64_t q = 0; q < HW; q++) {
                        const int64_t i = (n * C + c) * HW + q;
                        const double xh = (x[i] - mu) * rs;
                        sdy += dy[i], sdyx += dy[i] * xh;
                        sady += fabs(dy[i]), sadyx += fabs(dy[i] * xh);
                    }
                const double k = ga * rs, mdy = sdy / (double)M, mdyx = sdyx / (double)M;
                for (int64_t n = 0; n < g.N; n++)
                    for (int64_t q = 0; q < HW; q++) {
                        const int64_t i = (n * C + c) * HW + q;
                        const double xh = (x[i] - mu) * rs;
                        const double want = dx0[i] + k * (dy[i] - mdy - xh * mdyx);
                        const double tol = 4 * F32_EPS *
                                               (fabs(dx0[i]) + fabs(k) * (fabs(dy[i]) + fabs(mdy) +
                                                                          fabs(xh * mdyx))) +
                                           1e-30;
                        if (fabs(dx[i] - want) > tol && bad++ < 5)
                            cr_expect(0, "case %zu affine %d dx[%lld] = %.9g, want %.9g (tol %.3g)",
                                      ci, affine, (long long)i, (double)dx[i], want, tol);
                    }
                const double wg = dg0[c] + sdyx, wb = db0[c] + sdy;
                if (fabs(dg[c] - wg) > 4 * F32_EPS * (fabs(dg0[c]) + sadyx) ||
                    fabs(db[c] - wb) > 4 * F32_EPS * (fabs(db0[c]) + sady)) {
                    cr_expect(0,
                              "case %zu affine %d channel %lld: dgamma %.9g (want %.9g), dbeta "
                              "%.9g (%.9g)",
                              ci, affine, (long long)c, (double)dg[c], wg, (double)db[c], wb);
                    bad++;
                }
            }
            free(x), free(dy), free(y), free(dx), free(dx0), free(gamma), free(beta), free(sm);
            free(sr), free(rm), free(rv), free(rm0), free(rv0), free(dg), free(db);
            free((void *)dg0), free((void *)db0);
        }
}

/* Evaluation: y = (x - running_mean) gamma rstd + beta, about a large running mean. */
Test(cnn_fast, bn_f32_eval_about_a_large_running_mean) {
    const int64_t shape[4] = {3, 2, 9, 11};
    tg__bn_geom g;
    char msg[256];
    cr_assert_eq(tg__bn_geom_init(&g, "batch_norm", 4, shape, 0, msg, sizeof msg), TG_OK, "%s",
                 msg);
    const int64_t nx = g.N * g.C * g.HW;
    tg_rng rng;
    tg_rng_seed(&rng, 31);
    float *x = xmalloc(4 * (size_t)nx), *y = xmalloc(4 * (size_t)nx);
    const float gamma[2] = {0.75f, -2}, beta[2] = {0.25f, 1}, rm[2] = {2000, -3000},
                rv[2] = {0.5f, 2};
    float sm[2], sr[2], dx[2 * 99 * 3] = {0};
    for (int64_t i = 0; i < nx; i++)
        x[i] = (float)(rm[(i / g.HW) % 2] + rnd(&rng));
    tg__bn_forward_eval(&g, TG_F32, x, gamma, beta, rm, rv, 1e-5, y, sm, sr);
    for (int64_t i = 0; i < nx; i++) {
        const int64_t c = (i / g.HW) % 2;
        const double rstd = 1 / sqrt((double)rv[c] + 1e-5);
        const double xh = ((double)x[i] - rm[c]) * rstd, want = xh * gamma[c] + beta[c];
        cr_expect(fabs(y[i] - want) <= 4 * F32_EPS * (fabs(xh * gamma[c]) + fabs(beta[c])),
                  "y[%lld] = %.9g, want %.9g", (long long)i, (double)y[i], want);
    }
    cr_expect(sm[0] == rm[0] && sm[1] == rm[1]);
    /* eval backward: dx = dy gamma rstd */
    float dy[2 * 99 * 3];
    for (int64_t i = 0; i < nx; i++)
        dy[i] = (float)rnd(&rng);
    tg__bn_backward(&g, TG_F32, 0, x, gamma, sm, sr, dy, dx, NULL, NULL, false);
    for (int64_t i = 0; i < nx; i++) {
        const int64_t c = (i / g.HW) % 2;
        const double want = (double)dy[i] * gamma[c] * sr[c];
        cr_expect(fabs(dx[i] - want) <= 2 * F32_EPS * fabs(want), "dx[%lld] = %.9g, want %.9g",
                  (long long)i, (double)dx[i], want);
    }
    free(x), free(y);
}

Test(cnn_fast, bn_f32_thread_count_bit_identity) {
    const int64_t shape[4] = {8, 16, 24, 24};
    tg__bn_geom g;
    char msg[256];
    cr_assert_eq(tg__bn_geom_init(&g, "batch_norm", 4, shape, 1, msg, sizeof msg), TG_OK, "%s",
                 msg);
    const int64_t nx = g.N * g.C * g.HW, C = g.C;
    tg_rng rng;
    tg_rng_seed(&rng, 12);
    float *x = xmalloc(4 * (size_t)nx), *dy = xmalloc(4 * (size_t)nx);
    float *gamma = xmalloc(4 * (size_t)C), *beta = xmalloc(4 * (size_t)C);
    for (int64_t i = 0; i < nx; i++)
        x[i] = (float)(3 + rnd(&rng)), dy[i] = (float)rnd(&rng);
    for (int64_t c = 0; c < C; c++)
        gamma[c] = (float)rnd(&rng), beta[c] = (float)rnd(&rng);
    float *y[2], *dx[2], *st[2];
    for (int t = 0; t < 2; t++) {
        cr_assert_eq(tg_set_num_threads(t + 1), TG_OK);
        y[t] = xmalloc(4 * (size_t)nx);
        dx[t] = calloc((size_t)nx, 4);
        st[t] = calloc(6 * (size_t)C, 4); /* mean, rstd, running mean, var, dgamma, dbeta */
        cr_assert(dx[t] && st[t]);
        float *s = st[t];
        tg__bn_forward_train(&g, TG_F32, x, gamma, beta, 1e-5, 0.1, y[t], s, s + C, s + 2 * C,
                             s + 3 * C);
        tg__bn_backward(&g, TG_F32, 1, x, gamma, s, s + C, dy, dx[t], s + 4 * C, s + 5 * C, false);
    }
    cr_expect_eq(memcmp(y[0], y[1], 4 * (size_t)nx), 0);
    cr_expect_eq(memcmp(dx[0], dx[1], 4 * (size_t)nx), 0);
    cr_expect_eq(memcmp(st[0], st[1], 4 * 6 * (size_t)C), 0);
    for (int t = 0; t < 2; t++)
        free(y[t]), free(dx[t]), free(st[t]);
    free(x), free(dy), free(gamma), free(beta);
    tg_set_num_threads(1);
}

/* ---- Max pool 2x2, stride 2 ---- */

/* PyTorch's scan, window by window: from -inf, take v when v > max or v is NaN; the index of
 * the first pixel if nothing is taken (an all -inf window). */
static void naive_pool2x2(const tg__pool2d_geom *g, const double *x, double *y, int32_t *am) {
    for (int64_t p = 0; p < g->N * g->C; p++)
        for (int64_t oh = 0; oh < g->OH; oh++)
            for (int64_t ow = 0; ow < g->OW; ow++) {
                double m = -INFINITY;
                int64_t best = 2 * oh * g->W + 2 * ow;
                for (int r = 0; r < 2; r++)
                    for (int s = 0; s < 2; s++) {
                        const int64_t at = (2 * oh + r) * g->W + 2 * ow + s;
                        const double v = x[p * g->H * g->W + at];
                        if (v > m || isnan(v))
                            m = v, best = at;
                    }
                y[(p * g->OH + oh) * g->OW + ow] = m;
                am[(p * g->OH + oh) * g->OW + ow] = (int32_t)best;
            }
}

/* kind 0: distinct values; 1: ties from {-1, 0, 1}; 2: ties with NaN and -inf sprinkled in */
static double pool_value(tg_rng *rng, int kind) {
    if (kind == 0)
        return rnd(rng);
    const double v = (double)tg_rng_below(rng, 3) - 1;
    if (kind == 2) {
        const uint64_t r = tg_rng_below(rng, 8);
        return r == 0 ? NAN : r == 1 ? -INFINITY : v;
    }
    return v;
}

Test(cnn_fast, maxpool2x2_fast_path_matches_a_naive_scan) {
    /* odd heights and widths (a last row or column in no window), rows of 1, 3, 4, 7, 8, 15
     * windows (shorter than a vector, the overlapping last group, whole vectors) */
    static const int64_t shapes[][4] = {{2, 3, 7, 9},  {1, 2, 6, 8},   {3, 2, 5, 5},
                                        {1, 1, 2, 2},  {2, 2, 4, 16},  {1, 3, 9, 15},
                                        {1, 1, 3, 30}, {2, 2, 14, 14}, {1, 2, 29, 29}};
    const int64_t k2[2] = {2, 2}, p0[2] = {0, 0};
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++)
        for (int kind = 0; kind < 3; kind++)
            for (int f32 = 0; f32 < 2; f32++) {
                tg__pool2d_geom g;
                char msg[256];
                cr_assert_eq(tg__pool2d_geom_init(&g, "max_pool2d", 4, shapes[si], k2, k2, p0, msg,
                                                  sizeof msg),
                             TG_OK, "%s", msg);
                const int64_t nx = g.N * g.C * g.H * g.W, ny = g.N * g.C * g.OH * g.OW;
                tg_rng rng;
                tg_rng_seed(&rng, 40 + si * 6 + (size_t)kind * 2 + (size_t)f32);
                double *x = xmalloc(8 * (size_t)nx), *ry = xmalloc(8 * (size_t)ny);
                double *dy = xmalloc(8 * (size_t)ny), *dx0 = xmalloc(8 * (size_t)nx);
                int32_t *ram = xmalloc(4 * (size_t)ny), *am = xmalloc(4 * (size_t)ny);
                for (int64_t i = 0; i < nx; i++) {
                    x[i] = pool_value(&rng, kind);
                    if (f32) /* the reference scans the same values */
                        x[i] = (float)x[i];
                    const uint64_t r = tg_rng_below(&rng, 4); /* some -0 and +0 to add to */
                    dx0[i] = r == 0 ? -0.0 : r == 1 ? 0.0 : rnd(&rng);
                }
                for (int64_t i = 0; i < ny; i++) /* exact in float: the sums compare exactly */
                    dy[i] = tg_rng_below(&rng, 5) == 0
                                ? -0.0
                                : (double)(int)tg_rng_below(&rng, 64) / 8 - 4;
                naive_pool2x2(&g, x, ry, ram);
                const tg_dtype dt = f32 ? TG_F32 : TG_F64;
                const size_t es = f32 ? 4 : 8;
                void *bx = xmalloc(es * (size_t)nx), *by = xmalloc(es * (size_t)ny);
                void *bdy = xmalloc(es * (size_t)ny), *bdx = xmalloc(es * (size_t)nx);
                void *wdx = xmalloc(es * (size_t)nx);
                for (int64_t i = 0; i < nx; i++)
                    if (f32)
                        ((float *)bx)[i] = (float)x[i], ((float *)bdx)[i] = (float)dx0[i];
                    else
                        ((double *)bx)[i] = x[i], ((double *)bdx)[i] = dx0[i];
                for (int64_t i = 0; i < ny; i++)
                    if (f32)
                        ((float *)bdy)[i] = (float)dy[i];
                    else
                        ((double *)bdy)[i] = dy[i];
                memcpy(wdx, bdx, es * (size_t)nx);
                tg__max_pool2d_forward(&g, dt, bx, by, am);
                int bad = 0;
                for (int64_t i = 0; i < ny && bad < 5; i++) {
                    const double got = f32 ? ((float *)by)[i] : ((double *)by)[i];
                    const bool same = isnan(ry[i]) ? isnan(got) : got == ry[i];
                    if (!same || am[i] != ram[i]) {
                        cr_expect(0, "shape %zu kind %d f32 %d: y[%lld] %g at %d, want %g at %d",
                                  si, kind, f32, (long long)i, got, am[i], ry[i], ram[i]);
                        bad++;
                    }
                }
                /* backward: the scatter dx[a] += dy in the dtype, bit for bit */
                const int64_t hw = g.H * g.W, ohow = g.OH * g.OW;
                for (int64_t i = 0; i < ny; i++) {
                    const int64_t at = (i / ohow) * hw + ram[i];
                    if (f32)
                        ((float *)wdx)[at] += ((float *)bdy)[i];
                    else
                        ((double *)wdx)[at] += ((double *)bdy)[i];
                }
                tg__max_pool2d_backward(&g, dt, am, bdy, bdx, false);
                cr_expect_eq(memcmp(bdx, wdx, es * (size_t)nx), 0,
                             "shape %zu kind %d f32 %d: dx differs from the scatter", si, kind,
                             f32);
                /* a fresh dx (over garbage): the scatter into zeros, by value (where the windows
                 * tile the image dy is stored, so a dy of -0 stays -0 where 0 + -0 is +0) */
                double *fdx = xmalloc(8 * (size_t)nx);
                for (int64_t i = 0; i < nx; i++) {
                    fdx[i] = 0;
                    if (f32)
                        ((float *)bdx)[i] = NAN;
                    else
                        ((double *)bdx)[i] = NAN;
                }
                for (int64_t i = 0; i < ny; i++)
                    fdx[(i / ohow) * hw + ram[i]] += dy[i];
                tg__max_pool2d_backward(&g, dt, am, bdy, bdx, true);
                bad = 0;
                for (int64_t i = 0; i < nx && bad < 5; i++) {
                    const double got = f32 ? ((float *)bdx)[i] : ((double *)bdx)[i];
                    if (got != fdx[i] && bad++ < 5)
                        cr_expect(0, "shape %zu kind %d f32 %d: fresh dx[%lld] %g, want %g", si,
                                  kind, f32, (long long)i, got, fdx[i]);
                }
                free(x), free(ry), free(dy), free(dx0), free(ram), free(am), free(bx), free(by);
                free(bdy), free(bdx), free(wdx), free(fdx);
            }
}

Test(cnn_fast, maxpool2x2_f32_thread_count_bit_identity) {
    const int64_t shape[4] = {8, 16, 28, 28}, k2[2] = {2, 2}, p0[2] = {0, 0};
    tg__pool2d_geom g;
    char msg[256];
    cr_assert_eq(tg__pool2d_geom_init(&g, "max_pool2d", 4, shape, k2, k2, p0, msg, sizeof msg),
                 TG_OK, "%s", msg);
    const int64_t nx = g.N * g.C * g.H * g.W, ny = g.N * g.C * g.OH * g.OW;
    tg_rng rng;
    tg_rng_seed(&rng, 13);
    float *x = xmalloc(4 * (size_t)nx), *dy = xmalloc(4 * (size_t)ny);
    for (int64_t i = 0; i < nx; i++)
        x[i] = (float)pool_value(&rng, 1);
    for (int64_t i = 0; i < ny; i++)
        dy[i] = (float)rnd(&rng);
    float *y[2], *dx[2];
    int32_t *am[2];
    for (int t = 0; t < 2; t++) {
        cr_assert_eq(tg_set_num_threads(t + 1), TG_OK);
        y[t] = xmalloc(4 * (size_t)ny);
        am[t] = xmalloc(4 * (size_t)ny);
        dx[t] = calloc((size_t)nx, 4);
        cr_assert(dx[t]);
        tg__max_pool2d_forward(&g, TG_F32, x, y[t], am[t]);
        tg__max_pool2d_backward(&g, TG_F32, am[t], dy, dx[t], false);
    }
    cr_expect_eq(memcmp(y[0], y[1], 4 * (size_t)ny), 0);
    cr_expect_eq(memcmp(am[0], am[1], 4 * (size_t)ny), 0);
    cr_expect_eq(memcmp(dx[0], dx[1], 4 * (size_t)nx), 0);
    for (int t = 0; t < 2; t++)
        free(y[t]), free(am[t]), free(dx[t]);
    free(x), free(dy);
    tg_set_num_threads(1);
}

/* ---- conv2d: the flat im2col (strides 1, OW = W) ---- */

/* y = conv2d(x, w), no bias, groups 1, straight from the definition. */
static void naive_conv(const tg__conv2d_geom *g, const double *x, const double *w, double *y) {
    for (int64_t n = 0; n < g->N; n++)
        for (int64_t k = 0; k < g->K; k++)
            for (int64_t oh = 0; oh < g->OH; oh++)
                for (int64_t ow = 0; ow < g->OW; ow++) {
                    double s = 0;
                    for (int64_t c = 0; c < g->C; c++)
                        for (int64_t r = 0; r < g->R; r++)
                            for (int64_t q = 0; q < g->S; q++) {
                                const int64_t ih = oh * g->stride[0] - g->pad[0] + r * g->dil[0];
                                const int64_t iw = ow * g->stride[1] - g->pad[1] + q * g->dil[1];
                                if (ih < 0 || ih >= g->H || iw < 0 || iw >= g->W)
                                    continue;
                                s += w[((k * g->C + c) * g->R + r) * g->S + q] *
                                     x[((n * g->C + c) * g->H + ih) * g->W + iw];
                            }
                    y[((n * g->K + k) * g->OH + oh) * g->OW + ow] = s;
                }
}

Test(cnn_fast, conv2d_flat_im2col_matches_a_naive_loop) {
    /* {N, C, H, W, K, R, S, pad h, pad w, dil h, dil w}: all with OW = W at stride 1 */
    static const int64_t cases[][11] = {
        {2, 3, 5, 5, 4, 3, 3, 1, 1, 1, 1}, /* the CNN's 3x3 pad 1 */
        {2, 3, 6, 7, 4, 3, 3, 0, 1, 1, 1}, /* OH = H - 2: no padding rows */
        {1, 2, 4, 6, 3, 2, 5, 1, 2, 1, 1}, /* 5 wide: shifts of -2..2 */
        {1, 2, 5, 6, 2, 3, 3, 2, 2, 2, 2}, /* dilated */
        {2, 1, 3, 2, 2, 5, 5, 2, 2, 1, 1}, /* shifts as wide as the image */
        {1, 2, 4, 1, 3, 3, 1, 1, 0, 1, 1}, /* W = 1 */
        {3, 2, 1, 9, 2, 1, 3, 0, 1, 1, 1}, /* H = 1 */
    };
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++)
        for (int f32 = 0; f32 < 2; f32++) {
            const int64_t *cs = cases[ci];
            const int64_t xs[4] = {cs[0], cs[1], cs[2], cs[3]},
                          wsh[4] = {cs[4], cs[1], cs[5], cs[6]};
            const int64_t one[2] = {1, 1}, pad[2] = {cs[7], cs[8]}, dil[2] = {cs[9], cs[10]};
            tg__conv2d_geom g;
            char msg[256];
            cr_assert_eq(
                tg__conv2d_geom_init(&g, 4, xs, 4, wsh, 0, NULL, one, pad, dil, 1, msg, sizeof msg),
                TG_OK, "%s", msg);
            cr_assert_eq(g.OW, g.W, "case %zu is not a flat case", ci);
            const int64_t nx = g.N * g.C * g.H * g.W, nw = g.K * g.C * g.R * g.S;
            const int64_t ny = g.N * g.K * g.OH * g.OW;
            tg_rng rng;
            tg_rng_seed(&rng, 70 + ci);
            double *x = xmalloc(8 * (size_t)nx), *w = xmalloc(8 * (size_t)nw);
            double *ry = xmalloc(8 * (size_t)ny);
            for (int64_t i = 0; i < nx; i++) /* multiples of 1/8 and weights of 1/16: exact */
                x[i] = (double)(int)tg_rng_below(&rng, 33) / 8 - 2;
            for (int64_t i = 0; i < nw; i++)
                w[i] = (double)(int)tg_rng_below(&rng, 17) / 16 - 0.5;
            naive_conv(&g, x, w, ry);
            const size_t es = f32 ? 4 : 8;
            void *bx = xmalloc(es * (size_t)nx), *bw = xmalloc(es * (size_t)nw);
            void *by = xmalloc(es * (size_t)ny);
            for (int64_t i = 0; i < nx; i++)
                if (f32)
                    ((float *)bx)[i] = (float)x[i];
                else
                    ((double *)bx)[i] = x[i];
            for (int64_t i = 0; i < nw; i++)
                if (f32)
                    ((float *)bw)[i] = (float)w[i];
                else
                    ((double *)bw)[i] = w[i];
            const size_t wsb = tg__conv2d_workspace_bytes(&g, f32 ? TG_F32 : TG_F64, 1);
            void *ws = aligned_alloc(64, (wsb + 63) & ~(size_t)63);
            cr_assert(ws);
            cr_assert_eq(tg__conv2d_forward(&g, f32 ? TG_F32 : TG_F64, bx, bw, NULL, by, ws, wsb),
                         TG_OK, "%s", tg_last_errmsg());
            int bad = 0;
            for (int64_t i = 0; i < ny; i++) {
                const double got = f32 ? ((float *)by)[i] : ((double *)by)[i];
                /* every product and partial sum is a multiple of 2^-7 below 2^12: exact */
                if (got != ry[i] && bad++ < 5)
                    cr_expect(0, "case %zu f32 %d: y[%lld] = %.17g, want %.17g", ci, f32,
                              (long long)i, got, ry[i]);
            }
            free(x), free(w), free(ry), free(bx), free(bw), free(by), free(ws);
        }
}

/* ---- dropout: the counter-based mask ---- */

/* SplitMix64's output i for the seed key, written from its definition (Steele, Lea and Flood
 * 2014), apart from the library's loop. */
static uint64_t splitmix64_ref(uint64_t key, uint64_t i) {
    uint64_t z = key;
    for (uint64_t k = 0; k <= i; k++)
        z += UINT64_C(0x9E3779B97F4A7C15);
    z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
    return z ^ (z >> 31);
}

Test(cnn_fast, splitmix64_reference_gives_the_published_sequence) {
    /* the first outputs for seed 1234567 (Rosetta Code, "Pseudo-random numbers/Splitmix64") */
    static const uint64_t want[5] = {UINT64_C(6457827717110365317), UINT64_C(3203168211198807973),
                                     UINT64_C(9817491932198370423), UINT64_C(4593380528125082431),
                                     UINT64_C(16408922859458223821)};
    for (uint64_t i = 0; i < 5; i++)
        cr_expect_eq(splitmix64_ref(1234567, i), want[i], "output %llu", (unsigned long long)i);
}

/* Element i is kept when (splitmix64_i(k) >> 11) 2^-53 >= p, k one tg_rng_next of the caller's
 * rng, and the rng is left as after that one draw: checked against the reference in both dtypes,
 * for p that are and are not multiples of 2^-53 (the threshold's rounding). */
Test(cnn_fast, dropout_mask_is_splitmix64_keyed_by_one_draw) {
    static const double ps[] = {0.5, 0.25, 0.1, 1.0 / 3, 0x1p-53, 0.999999};
    for (size_t pi = 0; pi < sizeof ps / sizeof ps[0]; pi++)
        for (int f32 = 0; f32 < 2; f32++) {
            tg_tape *tape = tg_tape_new();
            cr_assert_not_null(tape);
            const int64_t n = 1000;
            tg_tensor *x = tg_tensor_ones(f32 ? TG_F32 : TG_F64, TG_SHAPE(n));
            cr_assert_not_null(x);
            tg_rng a, b;
            tg_rng_seed(&a, 77 + pi);
            tg_rng_seed(&b, 77 + pi);
            tg_tensor *y = tg_dropout(tape, x, ps[pi], &a);
            cr_assert_not_null(y, "%s", tg_tape_errmsg(tape));
            const uint64_t key = tg_rng_next(&b);
            const double scale = f32 ? (double)(float)(1.0 / (1.0 - ps[pi])) : 1.0 / (1.0 - ps[pi]);
            int bad = 0, kept = 0;
            for (int64_t i = 0; i < n; i++) {
                const double u = (double)(splitmix64_ref(key, (uint64_t)i) >> 11) * 0x1p-53;
                const double want = u >= ps[pi] ? scale : 0;
                kept += want != 0;
                if (tg_tensor_get(y, i) != want && bad++ < 5)
                    cr_expect(0, "p %g f32 %d: y[%lld] = %g, want %g", ps[pi], f32, (long long)i,
                              tg_tensor_get(y, i), want);
            }
            cr_expect(kept > 0 || ps[pi] > 0.99, "p %g: nothing kept", ps[pi]);
            cr_expect_eq(memcmp(a.s, b.s, sizeof a.s), 0, "p %g: the rng after the mask", ps[pi]);
            tg_tensor_free(x);
            tg_tape_free(tape);
        }
}

/* The mask and y of a tensor large enough to be split over threads (and not a multiple of a
 * vector) are the same bits at 1 and 2 threads and in the AVX-512 and baseline builds; so is the
 * backward's dx, fresh and accumulated. */
Test(cnn_fast, dropout_same_bits_for_any_thread_count_and_simd_build) {
    const int64_t n = 3 * TG_PAR_MIN_ELEMS + 13;
    const int threads_was = tg_get_num_threads(), wide_was = tg__conv_wide_simd(1);
    for (int f32 = 0; f32 < 2; f32++) {
        const tg_dtype dt = f32 ? TG_F32 : TG_F64;
        const size_t bytes = (size_t)n * tg__dtype_size(dt);
        void *ref[3] = {NULL, NULL, NULL}; /* y, dx of a leaf (accumulated), dx of y * 1 (fresh) */
        for (int run = 0; run < 4; run++) {
            tg_set_num_threads(run & 1 ? 2 : 1);
            tg__conv_wide_simd(run < 2);
            tg_tape *tape = tg_tape_new();
            tg_rng rng;
            tg_rng_seed(&rng, 5);
            tg_tensor *x = tg_tensor_rand(dt, TG_SHAPE(n), -1, 1, &rng);
            tg_tensor *dyt = tg_tensor_rand(dt, TG_SHAPE(n), -1, 1, &rng);
            cr_assert(tape && x && dyt);
            tg_tensor_set_requires_grad(x, 1);
            tg_tensor *h = tg_scale(tape, x, 1.0);
            tg_tensor *y = tg_dropout(tape, x, 0.3, &rng), *y2 = tg_dropout(tape, h, 0.3, &rng);
            tg_tensor *loss = tg_add(tape, tg_sum(tape, tg_mul(tape, y, dyt)),
                                     tg_sum(tape, tg_mul(tape, y2, dyt)));
            cr_assert_not_null(loss, "%s", tg_tape_errmsg(tape));
            cr_assert_eq(tg_backward(tape, loss), TG_OK, "%s", tg_tape_errmsg(tape));
            const void *got[3] = {tg_tensor_cdata(y), tg_tensor_cdata(tg_tensor_grad(x)),
                                  tg_tensor_cdata(y2)};
            for (int k = 0; k < 3; k++) {
                if (run == 0) {
                    ref[k] = xmalloc(bytes);
                    memcpy(ref[k], got[k], bytes);
                } else
                    cr_expect_eq(memcmp(ref[k], got[k], bytes), 0,
                                 "f32 %d, %d threads, wide %d: output %d differs", f32,
                                 run & 1 ? 2 : 1, run < 2, k);
            }
            tg_tensor_free(x);
            tg_tensor_free(dyt);
            tg_tape_free(tape);
        }
        for (int k = 0; k < 3; k++)
            free(ref[k]);
    }
    tg_set_num_threads(threads_was);
    tg__conv_wide_simd(wide_was);
}

/* ---- The AVX-512 and baseline builds of the f32 kernels: the same bits ---- */

Test(cnn_fast, wide_and_baseline_simd_builds_agree_bit_for_bit) {
    const int64_t shape[4] = {4, 6, 29, 31}, k2[2] = {2, 2}, p0[2] = {0, 0};
    tg__bn_geom bg;
    tg__pool2d_geom pg;
    char msg[256];
    cr_assert_eq(tg__bn_geom_init(&bg, "batch_norm", 4, shape, 1, msg, sizeof msg), TG_OK);
    cr_assert_eq(tg__pool2d_geom_init(&pg, "max_pool2d", 4, shape, k2, k2, p0, msg, sizeof msg),
                 TG_OK);
    const int64_t nx = bg.N * bg.C * bg.HW, C = bg.C, ny = pg.N * pg.C * pg.OH * pg.OW;
    tg_rng rng;
    tg_rng_seed(&rng, 14);
    float *x = xmalloc(4 * (size_t)nx), *dy = xmalloc(4 * (size_t)nx);
    float *gamma = xmalloc(4 * (size_t)C), *beta = xmalloc(4 * (size_t)C);
    for (int64_t i = 0; i < nx; i++)
        x[i] = (float)(10 + rnd(&rng)), dy[i] = (float)rnd(&rng);
    for (int64_t c = 0; c < C; c++)
        gamma[c] = (float)rnd(&rng), beta[c] = (float)rnd(&rng);
    float *out[2];
    int32_t *am[2];
    const int64_t nout = 3 * nx + 8 * C + ny; /* y, dx, eval y, 8 [C], pool y; then pool dx */
    const int was = tg__conv_wide_simd(1);
    for (int w = 0; w < 2; w++) {
        tg__conv_wide_simd(w);
        float *o = out[w] = calloc((size_t)(nout + nx), 4);
        am[w] = xmalloc(4 * (size_t)ny);
        cr_assert(o);
        float *y = o, *dx = o + nx, *ye = o + 2 * nx, *st = o + 3 * nx;
        float *py = st + 8 * C, *pdx = py + ny;
        tg__bn_forward_train(&bg, TG_F32, x, gamma, beta, 1e-5, 0.1, y, st, st + C, st + 2 * C,
                             st + 3 * C);
        tg__bn_backward(&bg, TG_F32, 1, x, gamma, st, st + C, dy, dx, st + 4 * C, st + 5 * C,
                        false);
        for (int64_t c = 0; c < C; c++)
            st[3 * C + c] += 1; /* a positive running variance */
        tg__bn_forward_eval(&bg, TG_F32, x, gamma, beta, st + 2 * C, st + 3 * C, 1e-5, ye,
                            st + 6 * C, st + 7 * C);
        tg__max_pool2d_forward(&pg, TG_F32, y, py, am[w]);
        tg__max_pool2d_backward(&pg, TG_F32, am[w], dy, pdx, false);
    }
    tg__conv_wide_simd(was);
    cr_expect_eq(memcmp(out[0], out[1], 4 * (size_t)(nout + nx)), 0);
    cr_expect_eq(memcmp(am[0], am[1], 4 * (size_t)ny), 0);
    for (int w = 0; w < 2; w++)
        free(out[w]), free(am[w]);
    free(x), free(dy), free(gamma), free(beta);
}

/* The 2x2 pool's AVX-512 planes (16 windows at a time, a row's last group under a mask) against
 * the baseline SSE rows and scalar tails: forward, backward adding and storing, and the fused
 * batch_norm_relu_max_pool2d kernels (whose backward masks by the pool's output), on rows of 7
 * (no full group), 15, 16, 18 (a full group and a masked one) and 40 windows, an odd last row and
 * column, with ties (values on a coarse grid) and NaNs in the input. */
Test(cnn_fast, pool2x2_wide_and_baseline_agree_bit_for_bit) {
    static const int64_t shapes[][4] = {
        {2, 3, 14, 14}, {2, 2, 9, 31}, {1, 2, 32, 32}, {2, 1, 7, 37}, {1, 2, 6, 80}};
    const int64_t k2[2] = {2, 2}, p0[2] = {0, 0};
    const int was = tg__conv_wide_simd(1);
    for (int s = 0; s < 5; s++) {
        tg__pool2d_geom pg;
        tg__bn_geom bg;
        char msg[256];
        cr_assert_eq(
            tg__pool2d_geom_init(&pg, "max_pool2d", 4, shapes[s], k2, k2, p0, msg, sizeof msg),
            TG_OK);
        cr_assert_eq(tg__bn_geom_init(&bg, "batch_norm", 4, shapes[s], 1, msg, sizeof msg), TG_OK);
        const int64_t nx = bg.N * bg.C * bg.HW, ny = pg.N * pg.C * pg.OH * pg.OW, C = bg.C;
        tg_rng rng;
        tg_rng_seed(&rng, 40 + (uint64_t)s);
        float *x = xmalloc(4 * (size_t)nx), *dyp = xmalloc(4 * (size_t)ny);
        float *gamma = xmalloc(4 * (size_t)C), *beta = xmalloc(4 * (size_t)C);
        for (int64_t i = 0; i < nx; i++) /* a grid of 9 values: many ties */
            x[i] = (float)floor(4 * rnd(&rng)) / 4;
        for (int64_t i = 0; i < nx; i += 37)
            x[i] = NAN;
        for (int64_t i = 0; i < ny; i++)
            dyp[i] = (float)rnd(&rng);
        for (int64_t c = 0; c < C; c++)
            gamma[c] = (float)(1 + rnd(&rng)), beta[c] = (float)rnd(&rng) / 2;
        float *o[2], *fo[2];
        int32_t *am[2], *fam[2];
        for (int w = 0; w < 2; w++) {
            tg__conv_wide_simd(w);
            o[w] = calloc((size_t)(ny + 2 * nx), 4);
            fo[w] = calloc((size_t)(ny + nx + 4 * C), 4);
            am[w] = xmalloc(4 * (size_t)ny);
            fam[w] = xmalloc(4 * (size_t)ny);
            cr_assert(o[w] && fo[w]);
            float *py = o[w], *dxa = py + ny, *dxs = dxa + nx;
            tg__max_pool2d_forward(&pg, TG_F32, x, py, am[w]);
            for (int64_t i = 0; i < nx; i++)
                dxa[i] = (float)i / 64;
            tg__max_pool2d_backward(&pg, TG_F32, am[w], dyp, dxa, false);
            tg__max_pool2d_backward(&pg, TG_F32, am[w], dyp, dxs, true);
            /* the fused kernels, on x without its NaNs (batch norm's statistics would be NaN) */
            float *fy = fo[w], *fdx = fy + ny, *st = fdx + nx;
            float *xc = xmalloc(4 * (size_t)nx);
            for (int64_t i = 0; i < nx; i++)
                xc[i] = x[i] == x[i] ? x[i] : 0.25f;
            const size_t wsb = tg__bn_relu_pool_workspace_bytes(&bg, TG_F32, 2);
            void *ws = aligned_alloc(64, wsb);
            cr_assert(ws);
            cr_assert_eq(tg__bn_relu_pool_forward(&bg, &pg, TG_F32, 1, xc, gamma, beta, 1e-5, 0.1,
                                                  NULL, NULL, fy, fam[w], st, st + C, ws, wsb),
                         TG_OK);
            cr_assert_eq(tg__bn_relu_pool_backward(&bg, &pg, TG_F32, 1, xc, fy, fam[w], gamma, st,
                                                   st + C, dyp, fdx, st + 2 * C, st + 3 * C, true,
                                                   ws, wsb),
                         TG_OK);
            free(ws), free(xc);
        }
        cr_expect_eq(memcmp(o[0], o[1], 4 * (size_t)(ny + 2 * nx)), 0, "shape %d: max_pool2d", s);
        cr_expect_eq(memcmp(am[0], am[1], 4 * (size_t)ny), 0, "shape %d: argmax", s);
        cr_expect_eq(memcmp(fo[0], fo[1], 4 * (size_t)(ny + nx + 4 * C)), 0,
                     "shape %d: batch_norm_relu_max_pool2d", s);
        cr_expect_eq(memcmp(fam[0], fam[1], 4 * (size_t)ny), 0, "shape %d: fused argmax", s);
        for (int w = 0; w < 2; w++)
            free(o[w]), free(fo[w]), free(am[w]), free(fam[w]);
        free(x), free(dyp), free(gamma), free(beta);
    }
    tg__conv_wide_simd(was);
}

/* ---- relu's float32 loops ---- */

/* y = x < 0 ? 0 : x (NaN and -0 pass through, as in PyTorch), dx += dy [y > 0], over a length
 * that is not a multiple of any vector and is split over threads. */
Test(cnn_fast, relu_f32_values_and_gradient) {
    const int64_t n = 70001;
    float *xv = xmalloc(4 * (size_t)n);
    tg_rng rng;
    tg_rng_seed(&rng, 15);
    for (int64_t i = 0; i < n; i++) {
        const uint64_t r = tg_rng_below(&rng, 16);
        xv[i] = r == 0   ? -0.0f
                : r == 1 ? NAN
                : r == 2 ? -INFINITY
                : r == 3 ? INFINITY
                         : (float)rnd(&rng);
    }
    for (int t = 1; t <= 2; t++) {
        cr_assert_eq(tg_set_num_threads(t), TG_OK);
        tg_tape *tape = tg_tape_new();
        tg_tensor *x = tg_tensor_new(TG_F32, 1, (int64_t[]){n});
        cr_assert(tape && x);
        memcpy(tg_tensor_data(x), xv, 4 * (size_t)n);
        tg_tensor_set_requires_grad(x, 1);
        tg_tensor *y = tg_relu(tape, x);
        cr_assert_not_null(y, "%s", tg_tape_errmsg(tape));
        /* the loss sum(y * w), w the index mod 7 minus 3: dy = w */
        tg_tensor *w = tg_tensor_new(TG_F32, 1, (int64_t[]){n});
        cr_assert(w);
        for (int64_t i = 0; i < n; i++)
            ((float *)tg_tensor_data(w))[i] = (float)(i % 7 - 3);
        cr_assert_eq(tg_backward(tape, tg_sum(tape, tg_mul(tape, y, w))), TG_OK, "%s",
                     tg_tape_errmsg(tape));
        const float *py = tg_tensor_cdata(y), *dx = tg_tensor_cdata(tg_tensor_grad(x));
        int bad = 0;
        for (int64_t i = 0; i < n && bad < 5; i++) {
            const float want = xv[i] < 0 ? 0 : xv[i];
            const float wg = py[i] > 0 ? (float)(i % 7 - 3) : 0;
            if (memcmp(&py[i], &want, 4) != 0 || dx[i] != wg) {
                cr_expect(0, "threads %d: x %g: y %g (want %g), dx %g (want %g)", t, (double)xv[i],
                          (double)py[i], (double)want, (double)dx[i], (double)wg);
                bad++;
            }
        }
        tg_tensor_free(x), tg_tensor_free(w);
        tg_tape_free(tape);
    }
    tg_set_num_threads(1);
    free(xv);
}

/* ---- Streaming stores for large outputs ---- */

/* Batch norm of a tensor large enough for streaming stores, channel by channel equal bit for bit
 * to batch norm of that channel alone (a tensor small enough for ordinary stores): channels are
 * independent, and each is summed in the same order. Training and evaluation. */
Test(cnn_fast, bn_f32_streamed_output_equals_ordinary_stores) {
    const int64_t C = 8, H = 30, W = 31; /* HW odd: the rows start at every alignment */
    const int64_t N = (int64_t)(tg__stream_min_bytes() / (4 * (size_t)(C * H * W))) + 1;
    const int64_t shape[4] = {N, C, H, W}, shape1[4] = {N, 1, H, W}, HW = H * W;
    tg__bn_geom g, g1;
    char msg[256];
    cr_assert_eq(tg__bn_geom_init(&g, "batch_norm", 4, shape, 1, msg, sizeof msg), TG_OK);
    cr_assert_eq(tg__bn_geom_init(&g1, "batch_norm", 4, shape1, 1, msg, sizeof msg), TG_OK);
    const int64_t nx = N * C * HW, n1 = N * HW;
    cr_assert_geq((size_t)nx * 4, tg__stream_min_bytes());
    cr_assert_lt((size_t)n1 * 4, tg__stream_min_bytes());
    tg_rng rng;
    tg_rng_seed(&rng, 16);
    float *x = xmalloc(4 * (size_t)nx), *y = xmalloc(4 * (size_t)nx), *ye = xmalloc(4 * (size_t)nx);
    float *x1 = xmalloc(4 * (size_t)n1), *y1 = xmalloc(4 * (size_t)n1);
    float gamma[8], beta[8], sm[8], sr[8], rv[8];
    for (int64_t i = 0; i < nx; i++)
        x[i] = (float)(5 + rnd(&rng));
    for (int64_t c = 0; c < C; c++)
        gamma[c] = (float)rnd(&rng), beta[c] = (float)rnd(&rng), rv[c] = 1 + (float)c;
    tg__bn_forward_train(&g, TG_F32, x, gamma, beta, 1e-5, 0.1, y, sm, sr, NULL, NULL);
    tg__bn_forward_eval(&g, TG_F32, x, gamma, beta, sm, rv, 1e-5, ye, NULL, NULL);
    for (int64_t c = 0; c < C; c++) {
        for (int64_t n = 0; n < N; n++)
            memcpy(x1 + n * HW, x + (n * C + c) * HW, 4 * (size_t)HW);
        float sm1, sr1;
        tg__bn_forward_train(&g1, TG_F32, x1, gamma + c, beta + c, 1e-5, 0.1, y1, &sm1, &sr1, NULL,
                             NULL);
        int same = sm1 == sm[c] && sr1 == sr[c];
        for (int64_t n = 0; n < N; n++)
            same &= memcmp(y1 + n * HW, y + (n * C + c) * HW, 4 * (size_t)HW) == 0;
        cr_expect(same, "channel %lld: training output differs", (long long)c);
        tg__bn_forward_eval(&g1, TG_F32, x1, gamma + c, beta + c, sm + c, rv + c, 1e-5, y1, NULL,
                            NULL);
        same = 1;
        for (int64_t n = 0; n < N; n++)
            same &= memcmp(y1 + n * HW, ye + (n * C + c) * HW, 4 * (size_t)HW) == 0;
        cr_expect(same, "channel %lld: evaluation output differs", (long long)c);
    }
    free(x), free(y), free(ye), free(x1), free(y1);
}

/* relu of a tensor large enough for streaming stores (and of odd length), on 1 and 2 threads,
 * against the plain loop bit for bit. */
Test(cnn_fast, relu_f32_streamed_output) {
    const int64_t n = (int64_t)(tg__stream_min_bytes() / 4) + 1001;
    float *xv = xmalloc(4 * (size_t)n);
    tg_rng rng;
    tg_rng_seed(&rng, 17);
    for (int64_t i = 0; i < n; i++) {
        const uint64_t r = tg_rng_below(&rng, 64);
        xv[i] = r == 0 ? -0.0f : r == 1 ? NAN : (float)rnd(&rng);
    }
    for (int t = 1; t <= 2; t++) {
        cr_assert_eq(tg_set_num_threads(t), TG_OK);
        tg_tape *tape = tg_tape_new();
        tg_tensor *x = tg_tensor_new(TG_F32, 1, (int64_t[]){n});
        cr_assert(tape && x);
        memcpy(tg_tensor_data(x), xv, 4 * (size_t)n);
        tg_tensor *y = tg_relu(tape, x);
        cr_assert_not_null(y, "%s", tg_tape_errmsg(tape));
        const float *py = tg_tensor_cdata(y);
        int bad = 0;
        for (int64_t i = 0; i < n && bad < 5; i++) {
            const float want = xv[i] < 0 ? 0 : xv[i];
            if (memcmp(&py[i], &want, 4) != 0 && bad++ < 5)
                cr_expect(0, "threads %d: relu(%g) = %g", t, (double)xv[i], (double)py[i]);
        }
        tg_tensor_free(x);
        tg_tape_free(tape);
    }
    tg_set_num_threads(1);
    free(xv);
}

/* ---- conv2d with a short inner dimension (C/groups R S <= 32: direct products) ---- */

/* conv1 of the CNN and a grouped, strided variant, big enough to run on 2 threads: forward and
 * backward against the naive loop at float32's accuracy, and bit for bit across thread counts. */
Test(cnn_fast, conv2d_short_inner_dimension_f32) {
    static const int64_t cases[][9] = {
        /* N, C, H, W, K, R, S, stride, groups */
        {16, 1, 28, 28, 32, 3, 3, 1, 1},
        {12, 4, 17, 19, 6, 3, 3, 2, 2},
    };
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        const int64_t *cs = cases[ci];
        const int64_t xs[4] = {cs[0], cs[1], cs[2], cs[3]};
        const int64_t wsh[4] = {cs[4], cs[1] / cs[8], cs[5], cs[6]}, bs[1] = {cs[4]};
        const int64_t st[2] = {cs[7], cs[7]}, pad[2] = {1, 1}, dil[2] = {1, 1};
        tg__conv2d_geom g;
        char msg[256];
        cr_assert_eq(
            tg__conv2d_geom_init(&g, 4, xs, 4, wsh, 1, bs, st, pad, dil, cs[8], msg, sizeof msg),
            TG_OK, "%s", msg);
        const int64_t Cg = g.C / g.groups, Kg = g.K / g.groups, crs = Cg * g.R * g.S;
        cr_assert_leq(crs, 32);
        const int64_t nx = g.N * g.C * g.H * g.W, nw = g.K * crs, ny = g.N * g.K * g.OH * g.OW;
        tg_rng rng;
        tg_rng_seed(&rng, 80 + ci);
        float *x = xmalloc(4 * (size_t)nx), *w = xmalloc(4 * (size_t)nw);
        float *b = xmalloc(4 * (size_t)g.K), *dy = xmalloc(4 * (size_t)ny);
        for (int64_t i = 0; i < nx; i++)
            x[i] = (float)rnd(&rng);
        for (int64_t i = 0; i < nw; i++)
            w[i] = (float)rnd(&rng);
        for (int64_t i = 0; i < g.K; i++)
            b[i] = (float)rnd(&rng);
        for (int64_t i = 0; i < ny; i++)
            dy[i] = (float)rnd(&rng);
        float *y[2], *dx[2], *dw[2], *db[2];
        for (int t = 0; t < 2; t++) {
            cr_assert_eq(tg_set_num_threads(t + 1), TG_OK);
            const size_t wsb = tg__conv2d_workspace_bytes(&g, TG_F32, t + 1);
            void *ws = aligned_alloc(64, (wsb + 63) & ~(size_t)63);
            y[t] = xmalloc(4 * (size_t)ny);
            dx[t] = calloc((size_t)nx, 4), dw[t] = calloc((size_t)nw, 4);
            db[t] = calloc((size_t)g.K, 4);
            cr_assert(ws && dx[t] && dw[t] && db[t]);
            cr_assert_eq(tg__conv2d_forward(&g, TG_F32, x, w, b, y[t], ws, wsb), TG_OK);
            cr_assert_eq(
                tg__conv2d_backward(&g, TG_F32, x, w, dy, dx[t], dw[t], db[t], ws, wsb, false),
                TG_OK);
            free(ws);
        }
        tg_set_num_threads(1);
        cr_expect_eq(memcmp(y[0], y[1], 4 * (size_t)ny), 0, "case %zu y", ci);
        cr_expect_eq(memcmp(dx[0], dx[1], 4 * (size_t)nx), 0, "case %zu dx", ci);
        cr_expect_eq(memcmp(dw[0], dw[1], 4 * (size_t)nw), 0, "case %zu dw", ci);
        cr_expect_eq(memcmp(db[0], db[1], 4 * (size_t)g.K), 0, "case %zu db", ci);
        /* the naive loop in double: y and dw, each within float rounding of its terms' size */
        int bad = 0;
        for (int64_t n = 0; n < g.N; n++)
            for (int64_t k = 0; k < g.K; k++) {
                const int64_t gi = k / Kg;
                for (int64_t oh = 0; oh < g.OH; oh++)
                    for (int64_t ow = 0; ow < g.OW; ow++) {
                        double s = b[k], sa = fabs(b[k]);
                        const int64_t o = ((n * g.K + k) * g.OH + oh) * g.OW + ow;
                        for (int64_t c = 0; c < Cg; c++)
                            for (int64_t r = 0; r < g.R; r++)
                                for (int64_t q = 0; q < g.S; q++) {
                                    const int64_t ih = oh * g.stride[0] - 1 + r;
                                    const int64_t iw = ow * g.stride[1] - 1 + q;
                                    if (ih < 0 || ih >= g.H || iw < 0 || iw >= g.W)
                                        continue;
                                    const double t =
                                        (double)w[((k * Cg + c) * g.R + r) * g.S + q] *
                                        x[((n * g.C + gi * Cg + c) * g.H + ih) * g.W + iw];
                                    s += t, sa += fabs(t);
                                }
                        if (fabs(y[0][o] - s) > 4 * F32_EPS * (double)(crs + 1) * sa && bad++ < 5)
                            cr_expect(0, "case %zu y[%lld] = %.9g, want %.9g", ci, (long long)o,
                                      (double)y[0][o], s);
                    }
            }
        for (int64_t k = 0; k < g.K; k++) {
            const int64_t gi = k / Kg;
            for (int64_t c = 0; c < Cg; c++)
                for (int64_t r = 0; r < g.R; r++)
                    for (int64_t q = 0; q < g.S; q++) {
                        double s = 0, sa = 0;
                        for (int64_t n = 0; n < g.N; n++)
                            for (int64_t oh = 0; oh < g.OH; oh++)
                                for (int64_t ow = 0; ow < g.OW; ow++) {
                                    const int64_t ih = oh * g.stride[0] - 1 + r;
                                    const int64_t iw = ow * g.stride[1] - 1 + q;
                                    if (ih < 0 || ih >= g.H || iw < 0 || iw >= g.W)
                                        continue;
                                    const double t =
                                        (double)dy[((n * g.K + k) * g.OH + oh) * g.OW + ow] *
                                        x[((n * g.C + gi * Cg + c) * g.H + ih) * g.W + iw];
                                    s += t, sa += fabs(t);
                                }
                        const int64_t i = ((k * Cg + c) * g.R + r) * g.S + q;
                        /* sums of up to N OH OW terms in float lanes and partial sums */
                        if (fabs(dw[0][i] - s) > 64 * F32_EPS * sa && bad++ < 5)
                            cr_expect(0, "case %zu dw[%lld] = %.9g, want %.9g", ci, (long long)i,
                                      (double)dw[0][i], s);
                    }
        }
        for (int t = 0; t < 2; t++)
            free(y[t]), free(dx[t]), free(dw[t]), free(db[t]);
        free(x), free(w), free(b), free(dy);
    }
}
