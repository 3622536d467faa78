/* The cnnops ops (issue 14) by value, where PyTorch's conventions decide the numbers and finite
 * differences cannot judge (test_ops_grad checks every smooth case): conv2d's output size and
 * values against a naive loop, max-pool ties (the first maximum) and -inf padding, avg-pool with
 * and without count_include_pad, batch-norm statistics and the running-statistics update worked
 * out by hand, evaluation mode, dropout's mask statistics, scaling, identities, and the layers. */
#include "core/engine.h"  /* the saved views of a node */
#include "kernels/conv.h" /* tg__conv_wide_simd */
#include "op_catalog.h"

#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

static tg_tape *tape;
static void setup(void) { tape = tg_tape_new(); }
static void teardown(void) { tg_tape_free(tape); }
TestSuite(cnn, .init = setup, .fini = teardown);

static tg_tensor *leaf(int rank, const int64_t *shape, const double *v) {
    tg_tensor *x = tg_tensor_from(TG_F64, rank, shape, v);
    cr_assert_not_null(x, "%s", tg_last_errmsg());
    tg_tensor_set_requires_grad(x, 1);
    return x;
}

static void backward_sum(tg_tensor *y) {
    cr_assert_not_null(y, "%s", tg_tape_errmsg(tape));
    cr_assert_eq(tg_backward(tape, tg_sum(tape, y)), TG_OK, "%s", tg_tape_errmsg(tape));
}

static void expect_values(const char *what, const tg_tensor *t, const double *want, int64_t n,
                          double tol) {
    cr_assert_not_null(t, "%s: NULL", what);
    cr_assert_eq(tg_tensor_numel(t), n, "%s: %lld elements", what, (long long)tg_tensor_numel(t));
    for (int64_t i = 0; i < n; i++) {
        const double got = tg_tensor_get(t, i);
        cr_expect(fabs(got - want[i]) <= tol, "%s[%lld]: got %.17g, want %.17g", what, (long long)i,
                  got, want[i]);
    }
}

/* The saved view `k` of node y. */
static tg_tensor saved_view(const tg_tensor *y, int k) {
    tg__saved_view v[4];
    const int n = y->op->saved_views ? y->op->saved_views(y, v, 4) : 0;
    cr_assert_gt(n, k, "%s has %d saved views", y->op->name, n);
    return v[k].tensor;
}

static void expect_view(const char *what, const tg_tensor *y, int k, const double *want, int64_t n,
                        double tol) {
    const tg_tensor v = saved_view(y, k);
    expect_values(what, &v, want, n, tol);
}

/* ---- conv2d ---- */

/* y = x - x[+1,+1] + 0.5 on a 3x3 image: a 2x2 kernel [[1,0],[0,-1]]. */
Test(cnn, conv2d_by_hand) {
    tg_tensor *x = leaf(TG_SHAPE(1, 1, 3, 3), (double[]){1, 2, 3, 4, 5, 6, 7, 8, 9});
    tg_tensor *w = leaf(TG_SHAPE(1, 1, 2, 2), (double[]){1, 0, 0, -1});
    tg_tensor *b = leaf(TG_SHAPE(1), (double[]){0.5});
    tg_tensor *y = tg_conv2d(tape, x, w, b, NULL);
    expect_values("y", y, (double[]){-3.5, -3.5, -3.5, -3.5}, 4, 0);
    backward_sum(y);
    /* dx: +1 at each window's top left, -1 at its bottom right */
    expect_values("dx", tg_tensor_grad(x), (double[]){1, 1, 0, 1, 0, -1, 0, -1, -1}, 9, 0);
    /* dw[r,s] = sum of the pixels each tap saw */
    expect_values("dw", tg_tensor_grad(w),
                  (double[]){1 + 2 + 4 + 5, 2 + 3 + 5 + 6, 4 + 5 + 7 + 8, 5 + 6 + 8 + 9}, 4, 0);
    expect_values("db", tg_tensor_grad(b), (double[]){4}, 1, 0);
    tg_tensor_free(x);
    tg_tensor_free(w);
    tg_tensor_free(b);
}

/* OH = floor((H + 2 ph - dh (R - 1) - 1) / sh) + 1, and the values of a naive loop. */
Test(cnn, conv2d_output_size_and_values_match_a_naive_loop) {
    const struct {
        int64_t N, C, H, W, K, R, S;
        tg_conv2d_opts o;
    } cases[] = {
        {2, 3, 5, 5, 4, 3, 3, {{0}, {0}, {0}, 0}},
        {1, 2, 7, 6, 3, 3, 2, {{2, 3}, {1, 0}, {0}, 0}},
        {2, 4, 9, 8, 6, 3, 3, {{3, 2}, {2, 1}, {2, 3}, 2}},
        {1, 3, 6, 6, 3, 3, 3, {{1, 1}, {1, 1}, {1, 1}, 3}},
        {3, 2, 4, 9, 2, 1, 4, {{1, 2}, {0, 0}, {1, 2}, 1}},
    };
    tg_rng rng;
    tg_rng_seed(&rng, 5);
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        const int64_t N = cases[k].N, C = cases[k].C, H = cases[k].H, W = cases[k].W,
                      K = cases[k].K, R = cases[k].R, S = cases[k].S;
        const tg_conv2d_opts *o = &cases[k].o;
        const int64_t G = o->groups ? o->groups : 1, Cg = C / G;
        const int64_t sh = o->stride[0] ? o->stride[0] : 1, sw = o->stride[1] ? o->stride[1] : 1;
        const int64_t dh = o->dilation[0] ? o->dilation[0] : 1,
                      dw = o->dilation[1] ? o->dilation[1] : 1;
        const int64_t ph = o->padding[0], pw = o->padding[1];
        const int64_t OH = (H + 2 * ph - dh * (R - 1) - 1) / sh + 1;
        const int64_t OW = (W + 2 * pw - dw * (S - 1) - 1) / sw + 1;
        tg_tensor *x = tg_tensor_rand(TG_F64, TG_SHAPE(N, C, H, W), -1, 1, &rng);
        tg_tensor *w = tg_tensor_rand(TG_F64, TG_SHAPE(K, Cg, R, S), -1, 1, &rng);
        tg_tensor *b = tg_tensor_rand(TG_F64, TG_SHAPE(K), -1, 1, &rng);
        tg_tensor *y = tg_conv2d(tape, x, w, b, o);
        cr_assert_not_null(y, "case %zu: %s", k, tg_tape_errmsg(tape));
        cr_assert_eq(tg_tensor_rank(y), 4);
        const int64_t *ys = tg_tensor_shape(y);
        cr_expect(ys[0] == N && ys[1] == K && ys[2] == OH && ys[3] == OW,
                  "case %zu: [%lld,%lld,%lld,%lld], want [%lld,%lld,%lld,%lld]", k,
                  (long long)ys[0], (long long)ys[1], (long long)ys[2], (long long)ys[3],
                  (long long)N, (long long)K, (long long)OH, (long long)OW);
        const double *px = tg_tensor_cdata(x), *pw_ = tg_tensor_cdata(w), *pb = tg_tensor_cdata(b);
        const double *py = tg_tensor_cdata(y);
        for (int64_t n = 0; n < N; n++)
            for (int64_t kk = 0; kk < K; kk++)
                for (int64_t i = 0; i < OH; i++)
                    for (int64_t j = 0; j < OW; j++) {
                        const int64_t g = kk / (K / G);
                        double s = pb[kk];
                        for (int64_t c = 0; c < Cg; c++)
                            for (int64_t r = 0; r < R; r++)
                                for (int64_t q = 0; q < S; q++) {
                                    const int64_t ih = i * sh - ph + r * dh,
                                                  iw = j * sw - pw + q * dw;
                                    if (ih < 0 || ih >= H || iw < 0 || iw >= W)
                                        continue;
                                    s += pw_[((kk * Cg + c) * R + r) * S + q] *
                                         px[((n * C + g * Cg + c) * H + ih) * W + iw];
                                }
                        const double got = py[((n * K + kk) * OH + i) * OW + j];
                        cr_expect(fabs(got - s) <= 1e-12,
                                  "case %zu y[%lld,%lld,%lld,%lld]: %.17g vs %.17g", k,
                                  (long long)n, (long long)kk, (long long)i, (long long)j, got, s);
                    }
        tg_tape_reset(tape);
        tg_tensor_free(x);
        tg_tensor_free(w);
        tg_tensor_free(b);
    }
}

/* ---- pooling ---- */

/* Ties go to the first maximum in scan order (row by row), as PyTorch's return_indices. */
Test(cnn, max_pool2d_ties_go_to_the_first_maximum) {
    /* [[1,3,3,0],[3,2,1,3]], kernel 2: window 0 {1,3 / 3,2} -> the 3 at (0,1); window 1
     * {3,0 / 1,3} -> the 3 at (0,2) */
    tg_tensor *x = leaf(TG_SHAPE(1, 1, 2, 4), (double[]){1, 3, 3, 0, 3, 2, 1, 3});
    tg_tensor *y = tg_max_pool2d(tape, x, &(tg_pool2d_opts){.kernel = {2, 2}});
    expect_values("y", y, (double[]){3, 3}, 2, 0);
    const tg_tensor a = saved_view(y, 0);
    cr_expect_eq(a.dtype, TG_I32);
    expect_values("argmax", &a, (double[]){1, 2}, 2, 0);
    backward_sum(y);
    expect_values("dx", tg_tensor_grad(x), (double[]){0, 1, 1, 0, 0, 0, 0, 0}, 8, 0);
    tg_tape_reset(tape);
    tg_tensor_zero_grad(x);
    tg_tensor_free(x);

    /* overlapping windows of equal values, stride 1: each window takes its own first pixel */
    x = leaf(TG_SHAPE(1, 1, 1, 3), (double[]){5, 5, 5});
    y = tg_max_pool2d(tape, x, &(tg_pool2d_opts){.kernel = {1, 2}, .stride = {1, 1}});
    expect_values("y", y, (double[]){5, 5}, 2, 0);
    backward_sum(y);
    expect_values("dx", tg_tensor_grad(x), (double[]){1, 1, 0}, 3, 0);
    tg_tensor_free(x);
}

/* The padding counts as -inf: negative pixels still win their windows. */
Test(cnn, max_pool2d_padding_is_minus_infinity) {
    tg_tensor *x = leaf(TG_SHAPE(1, 1, 2, 2), (double[]){-1, -2, -3, -4});
    tg_tensor *y = tg_max_pool2d(tape, x, &(tg_pool2d_opts){.kernel = {2, 2}, .padding = {1, 1}});
    cr_assert_not_null(y, "%s", tg_tape_errmsg(tape));
    cr_expect(tg_tensor_dim(y, 2) == 2 && tg_tensor_dim(y, 3) == 2); /* (2 + 2 - 2) / 2 + 1 */
    expect_values("y", y, (double[]){-1, -2, -3, -4}, 4, 0);
    tg_tensor_free(x);
}

/* [[1,2],[3,4]], kernel 2, stride 1, padding 1: a 3x3 output whose windows hold 1, 2 or 4
 * pixels; divided by 4 with count_include_pad, by the pixels present without. */
Test(cnn, avg_pool2d_with_and_without_count_include_pad) {
    tg_tensor *x = leaf(TG_SHAPE(1, 1, 2, 2), (double[]){1, 2, 3, 4});
    tg_pool2d_opts o = {.kernel = {2, 2}, .stride = {1, 1}, .padding = {1, 1}};
    o.count_include_pad = 1;
    tg_tensor *y = tg_avg_pool2d(tape, x, &o);
    expect_values("count_include_pad", y, (double[]){0.25, 0.75, 0.5, 1, 2.5, 1.5, 0.75, 1.75, 1},
                  9, 1e-15);
    backward_sum(y); /* each pixel is in 4 windows, each dividing by 4 */
    expect_values("dx (count_include_pad)", tg_tensor_grad(x), (double[]){1, 1, 1, 1}, 4, 1e-15);
    tg_tensor_zero_grad(x);
    tg_tape_reset(tape);
    o.count_include_pad = 0;
    y = tg_avg_pool2d(tape, x, &o);
    expect_values("padding not counted", y, (double[]){1, 1.5, 2, 2, 2.5, 3, 3, 3.5, 4}, 9, 1e-15);
    backward_sum(y); /* pixel (0,0): windows of 1, 2, 2 and 4 pixels */
    const double d = 1 + 0.5 + 0.5 + 0.25;
    expect_values("dx (padding not counted)", tg_tensor_grad(x), (double[]){d, d, d, d}, 4, 1e-15);
    tg_tensor_free(x);
}

/* stride 0 means the kernel: non-overlapping windows; a stride that does not divide drops the
 * remainder (floor). */
Test(cnn, pool_stride_defaults_to_the_kernel) {
    tg_tensor *x =
        leaf(TG_SHAPE(1, 1, 3, 5), (double[]){1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15});
    tg_tensor *y = tg_avg_pool2d(tape, x, &(tg_pool2d_opts){.kernel = {2, 2}});
    cr_assert_not_null(y, "%s", tg_tape_errmsg(tape));
    cr_expect(tg_tensor_dim(y, 2) == 1 && tg_tensor_dim(y, 3) == 2);
    expect_values("y", y, (double[]){(1 + 2 + 6 + 7) / 4.0, (3 + 4 + 8 + 9) / 4.0}, 2, 1e-15);
    tg_tensor_free(x);
}

/* ---- batch norm ---- */

/* x [4,1] = 1..4: mean 2.5, biased variance 1.25 normalizes, the unbiased 5/3 goes into the
 * running variance: rm = 0.9 * 0 + 0.1 * 2.5, rv = 0.9 * 1 + 0.1 * 5/3. Then evaluation mode
 * uses exactly those. */
Test(cnn, batch_norm_statistics_and_running_update_by_hand) {
    tg_tensor *x = leaf(TG_SHAPE(4, 1), (double[]){1, 2, 3, 4});
    tg_batch_norm_layer *bn = tg_batch_norm_layer_new(TG_F64, 1, "bn");
    cr_assert_not_null(bn, "%s", tg_last_errmsg());
    tg_tensor_set(bn->weight, 0, 2);
    tg_tensor_set(bn->bias, 0, 0.5);
    const double eps = 1e-5, r = 1 / sqrt(1.25 + eps);
    tg_tensor *y = tg_batch_norm_layer_forward(tape, bn, x);
    expect_values(
        "y (training)", y,
        (double[]){2 * -1.5 * r + 0.5, 2 * -0.5 * r + 0.5, 2 * 0.5 * r + 0.5, 2 * 1.5 * r + 0.5}, 4,
        1e-14);
    expect_view("mu", y, 0, (double[]){2.5}, 1, 0);
    expect_view("rstd", y, 1, (double[]){r}, 1, 1e-15);
    expect_values("running_mean", bn->running_mean, (double[]){0.25}, 1, 1e-16);
    expect_values("running_var", bn->running_var, (double[]){0.9 + 0.1 * 5.0 / 3.0}, 1, 1e-15);
    /* training: the statistics depend on x, so sum(y) is constant in x */
    backward_sum(y);
    expect_values("dx (training)", tg_tensor_grad(x), (double[]){0, 0, 0, 0}, 4, 1e-14);
    expect_values("dweight", tg_tensor_grad(bn->weight), (double[]){0}, 1, 1e-14);
    expect_values("dbias", tg_tensor_grad(bn->bias), (double[]){4}, 1, 0);

    tg_tape_reset(tape);
    tg_tensor_zero_grad(x);
    cr_assert_eq(tg_tape_set_training(tape, 0), TG_OK);
    const double rm = 0.25, rv = 0.9 + 0.1 * 5.0 / 3.0, re = 1 / sqrt(rv + eps);
    y = tg_batch_norm_layer_forward(tape, bn, x);
    double want[4];
    for (int i = 0; i < 4; i++)
        want[i] = 2 * (i + 1 - rm) * re + 0.5;
    expect_values("y (evaluation)", y, want, 4, 1e-14);
    expect_values("running_mean unchanged", bn->running_mean, (double[]){0.25}, 1, 1e-16);
    expect_values("running_var unchanged", bn->running_var, (double[]){rv}, 1, 1e-15);
    /* evaluation: constants, dx = dy gamma rstd */
    backward_sum(y);
    expect_values("dx (evaluation)", tg_tensor_grad(x), (double[]){2 * re, 2 * re, 2 * re, 2 * re},
                  4, 1e-14);
    tg_batch_norm_layer_free(bn);
    tg_tensor_free(x);
}

/* x [2,2,1,2]: channel 0 holds {0,2,4,6} (mean 3, biased variance 5, unbiased 20/3), channel 1
 * {1,1,1,1} (variance 0: y = bias). momentum 0.5, running statistics starting at 0 and 1. */
Test(cnn, batch_norm_over_images_and_a_constant_channel) {
    tg_tensor *x = leaf(TG_SHAPE(2, 2, 1, 2), (double[]){0, 2, 1, 1, 4, 6, 1, 1});
    tg_tensor *rm = tg_tensor_new(TG_F64, TG_SHAPE(2));
    tg_tensor *rv = tg_tensor_ones(TG_F64, TG_SHAPE(2));
    tg_tensor *beta = tg_tensor_from(TG_F64, TG_SHAPE(2), (double[]){0, 7});
    const double eps = 1e-3, r = 1 / sqrt(5 + eps);
    tg_tensor *y = tg_batch_norm(tape, x, NULL, beta, rm, rv, 0.5, eps);
    expect_values("y", y, (double[]){-3 * r, -r, 7, 7, r, 3 * r, 7, 7}, 8, 1e-14);
    expect_values("running_mean", rm, (double[]){1.5, 0.5}, 2, 1e-15);
    expect_values("running_var", rv, (double[]){0.5 + 0.5 * 20.0 / 3.0, 0.5}, 2, 1e-15);
    expect_view("rstd", y, 1, (double[]){r, 1 / sqrt(eps)}, 2, 1e-12);
    tg_tensor_free(x);
    tg_tensor_free(rm);
    tg_tensor_free(rv);
    tg_tensor_free(beta);
}

/* Evaluation mode accepts a single value per channel (training refuses it, test_errors_cnn). */
Test(cnn, batch_norm_eval_single_value) {
    tg_tensor *x = leaf(TG_SHAPE(1, 2), (double[]){3, -1});
    tg_tensor *rm = tg_tensor_from(TG_F64, TG_SHAPE(2), (double[]){1, 1});
    tg_tensor *rv = tg_tensor_from(TG_F64, TG_SHAPE(2), (double[]){4, 0.25});
    tg_tape_set_training(tape, 0);
    tg_tensor *y = tg_batch_norm(tape, x, NULL, NULL, rm, rv, 0.1, 1e-5);
    expect_values("y", y, (double[]){2 / sqrt(4 + 1e-5), -2 / sqrt(0.25 + 1e-5)}, 2, 1e-14);
    tg_tensor_free(x);
    tg_tensor_free(rm);
    tg_tensor_free(rv);
}

/* ---- dropout ---- */

/* Over 200000 elements the kept fraction is within 5 standard deviations of 1 - p; every kept
 * value is x / (1 - p) exactly (x = 1), the rest 0; the gradient is the saved mask. */
static void dropout_statistics(tg_dtype dt, double p) {
    const int64_t n = 200000;
    tg_tensor *x = tg_tensor_ones(dt, TG_SHAPE(n));
    tg_tensor_set_requires_grad(x, 1);
    tg_rng rng;
    tg_rng_seed(&rng, 99);
    tg_tensor *y = tg_dropout(tape, x, p, &rng);
    cr_assert_not_null(y, "%s", tg_tape_errmsg(tape));
    const double scale = dt == TG_F32 ? (double)(float)(1.0 / (1.0 - p)) : 1.0 / (1.0 - p);
    int64_t kept = 0, bad = 0;
    for (int64_t i = 0; i < n; i++) {
        const double v = tg_tensor_get(y, i);
        kept += v != 0;
        bad += v != 0 && v != scale;
    }
    cr_expect_eq(bad, 0, "p %g: %lld kept values differ from 1/(1-p) = %.17g", p, (long long)bad,
                 scale);
    const double frac = (double)kept / (double)n, sd = sqrt(p * (1 - p) / (double)n);
    cr_expect(fabs(frac - (1 - p)) <= 5 * sd, "p %g: kept %.5f, want %.5f +- %.5f", p, frac, 1 - p,
              5 * sd);
    const tg_tensor s = saved_view(y, 0);
    cr_expect_eq(memcmp(s.data, tg_tensor_cdata(y), (size_t)n * tg__dtype_size(dt)), 0,
                 "the saved mask is y / x");
    backward_sum(y);
    cr_expect_eq(memcmp(tg_tensor_cdata(tg_tensor_grad(x)), tg_tensor_cdata(y),
                        (size_t)n * tg__dtype_size(dt)),
                 0, "p %g: dx = the mask", p);
    tg_tape_reset(tape);
    tg_tensor_free(x);
}

Test(cnn, dropout_mask_statistics_and_scaling) {
    dropout_statistics(TG_F64, 0.5);
    dropout_statistics(TG_F64, 0.1);
    dropout_statistics(TG_F32, 0.3);
    dropout_statistics(TG_F32, 0.9);
}

/* p = 0 and evaluation mode are the identity, bit for bit, and draw nothing from the rng. */
Test(cnn, dropout_identity_cases_draw_nothing) {
    tg_rng rng, before;
    tg_rng_seed(&rng, 3);
    tg_tensor *x = tg_tensor_rand(TG_F32, TG_SHAPE(3, 7), -5, 5, &rng);
    tg_tensor_set_requires_grad(x, 1);
    before = rng;
    tg_tensor *y = tg_dropout(tape, x, 0, &rng);
    cr_assert_not_null(y, "%s", tg_tape_errmsg(tape));
    cr_expect_eq(memcmp(tg_tensor_cdata(y), tg_tensor_cdata(x), 21 * sizeof(float)), 0);
    cr_expect_eq(memcmp(&rng, &before, sizeof rng), 0, "p = 0 drew from the rng");
    tg_tape_reset(tape);
    tg_tape_set_training(tape, 0);
    y = tg_dropout(tape, x, 0.7, &rng);
    cr_assert_not_null(y, "%s", tg_tape_errmsg(tape));
    cr_expect_eq(memcmp(tg_tensor_cdata(y), tg_tensor_cdata(x), 21 * sizeof(float)), 0);
    cr_expect_eq(memcmp(&rng, &before, sizeof rng), 0, "evaluation mode drew from the rng");
    backward_sum(y);
    for (int64_t i = 0; i < 21; i++)
        cr_expect_eq(tg_tensor_get(tg_tensor_grad(x), i), 1.0);
    /* evaluation mode needs no rng at all */
    tg_tape_reset(tape);
    cr_expect_not_null(tg_dropout(tape, x, 0.7, NULL), "%s", tg_tape_errmsg(tape));
    tg_tensor_free(x);
}

/* The same seed gives the same mask; the next call on the same rng a different one. */
Test(cnn, dropout_mask_follows_the_rng) {
    tg_tensor *x = tg_tensor_ones(TG_F64, TG_SHAPE(64));
    tg_rng a, b;
    tg_rng_seed(&a, 42);
    tg_rng_seed(&b, 42);
    tg_tensor *ya = tg_dropout(tape, x, 0.5, &a), *yb = tg_dropout(tape, x, 0.5, &b);
    tg_tensor *ya2 = tg_dropout(tape, x, 0.5, &a);
    cr_assert(ya && yb && ya2, "%s", tg_tape_errmsg(tape));
    cr_expect_eq(memcmp(tg_tensor_cdata(ya), tg_tensor_cdata(yb), 64 * sizeof(double)), 0);
    cr_expect_neq(memcmp(tg_tensor_cdata(ya), tg_tensor_cdata(ya2), 64 * sizeof(double)), 0);
    tg_tensor_free(x);
}

/* ---- layers ---- */

Test(cnn, conv2d_layer_he_uniform_and_one_node) {
    tg_rng rng;
    tg_rng_seed(&rng, 8);
    const tg_conv2d_opts o = {.padding = {1, 1}, .groups = 2};
    tg_conv2d_layer *l = tg_conv2d_layer_new(TG_F32, 4, 6, 3, 3, &o, "conv1", &rng);
    cr_assert_not_null(l, "%s", tg_last_errmsg());
    cr_expect_str_eq(tg_tensor_name(l->W), "conv1.W");
    cr_expect_str_eq(tg_tensor_name(l->b), "conv1.b");
    cr_assert_eq(tg_tensor_rank(l->W), 4);
    const int64_t *ws = tg_tensor_shape(l->W);
    cr_expect(ws[0] == 6 && ws[1] == 2 && ws[2] == 3 && ws[3] == 3);
    const double a = sqrt(6.0 / (2 * 3 * 3)); /* fan-in C/groups * R * S */
    double maxabs = 0;
    for (int64_t i = 0; i < tg_tensor_numel(l->W); i++)
        maxabs = fmax(maxabs, fabs(tg_tensor_get(l->W, i)));
    cr_expect(maxabs <= a && maxabs > 0.8 * a, "max |W| %g for bound %g", maxabs, a);
    for (int64_t i = 0; i < 6; i++)
        cr_expect_eq(tg_tensor_get(l->b, i), 0.0);
    cr_expect(tg_tensor_requires_grad(l->W) && tg_tensor_requires_grad(l->b));
    tg_tensor *x = tg_tensor_rand(TG_F32, TG_SHAPE(2, 4, 5, 5), -1, 1, &rng);
    tg_tensor *y = tg_conv2d_layer_forward(tape, l, x);
    cr_assert_not_null(y, "%s", tg_tape_errmsg(tape));
    cr_expect_eq(tg_tape_size(tape), 1);
    cr_expect_str_eq(tg_tensor_op_name(y), "conv2d");
    cr_expect(tg_tensor_input(y, 1) == l->W && tg_tensor_input(y, 2) == l->b);
    cr_expect(tg_tensor_dim(y, 1) == 6 && tg_tensor_dim(y, 2) == 5 && tg_tensor_dim(y, 3) == 5);
    tg_tensor_free(x);
    tg_conv2d_layer_free(l);
    tg_conv2d_layer_free(NULL);
}

Test(cnn, batch_norm_layer_initial_values_and_one_node) {
    tg_batch_norm_layer *l = tg_batch_norm_layer_new(TG_F64, 3, "bn1");
    cr_assert_not_null(l, "%s", tg_last_errmsg());
    cr_expect_str_eq(tg_tensor_name(l->weight), "bn1.weight");
    cr_expect_str_eq(tg_tensor_name(l->bias), "bn1.bias");
    cr_expect_str_eq(tg_tensor_name(l->running_mean), "bn1.running_mean");
    cr_expect_str_eq(tg_tensor_name(l->running_var), "bn1.running_var");
    for (int64_t i = 0; i < 3; i++) {
        cr_expect_eq(tg_tensor_get(l->weight, i), 1.0);
        cr_expect_eq(tg_tensor_get(l->bias, i), 0.0);
        cr_expect_eq(tg_tensor_get(l->running_mean, i), 0.0);
        cr_expect_eq(tg_tensor_get(l->running_var, i), 1.0);
    }
    cr_expect(tg_tensor_requires_grad(l->weight) && tg_tensor_requires_grad(l->bias));
    cr_expect(!tg_tensor_requires_grad(l->running_mean) &&
              !tg_tensor_requires_grad(l->running_var));
    cr_expect_eq(l->momentum, 0.1);
    cr_expect_eq(l->eps, 1e-5);
    tg_rng rng;
    tg_rng_seed(&rng, 1);
    tg_tensor *x = tg_tensor_rand(TG_F64, TG_SHAPE(4, 3, 2, 2), -1, 1, &rng);
    tg_tensor *y = tg_batch_norm_layer_forward(tape, l, x);
    cr_assert_not_null(y, "%s", tg_tape_errmsg(tape));
    cr_expect_eq(tg_tape_size(tape), 1);
    cr_expect_str_eq(tg_tensor_op_name(y), "batch_norm");
    cr_expect_eq(tg_tensor_n_inputs(y), 5);
    tg_tensor_free(x);
    tg_batch_norm_layer_free(l);
    tg_batch_norm_layer_free(NULL);
}

/* batch_norm_relu is relu after batch_norm, bit for bit: outputs, the gradients of x, weight and
 * bias, and the running statistics, in float32 and float64, training and evaluation, on both
 * SIMD builds, at 1 and 2 threads; with x a leaf (its gradient accumulates) and a node with one
 * consumer (written fresh); over images with more than one sum chunk (41 x 41 values). */
typedef struct bnr_run {
    tg_tensor *y, *dx, *dw, *db, *rm, *rv; /* clones, freed by the caller */
} bnr_run;

static bnr_run bnr_once(bool fused, tg_dtype dt, int training, bool node_input, int rank,
                        const int64_t *shape) {
    tg_rng rng;
    tg_rng_seed(&rng, 4242);
    const int64_t C = shape[1];
    tg_tensor *x = tg_tensor_rand(dt, rank, shape, -1.5, 1, &rng);
    tg_tensor *r = tg_tensor_rand(dt, rank, shape, -1, 1, &rng);
    tg_tensor *w = tg_tensor_rand(dt, 1, &C, 0.5, 2, &rng);
    tg_tensor *b = tg_tensor_rand(dt, 1, &C, -0.5, 0.5, &rng);
    tg_tensor *rm = tg_tensor_rand(dt, 1, &C, -0.2, 0.2, &rng);
    tg_tensor *rv = tg_tensor_rand(dt, 1, &C, 0.5, 1.5, &rng);
    tg_tensor_set_requires_grad(x, 1);
    tg_tensor_set_requires_grad(w, 1);
    tg_tensor_set_requires_grad(b, 1);
    tg_tape_reset(tape);
    tg_tape_set_training(tape, training);
    tg_tensor *in = node_input ? tg_add_scalar(tape, x, 0.25) : x;
    tg_tensor *y = fused ? tg_batch_norm_relu(tape, in, w, b, rm, rv, 0.1, 1e-5)
                         : tg_relu(tape, tg_batch_norm(tape, in, w, b, rm, rv, 0.1, 1e-5));
    cr_assert_not_null(y, "%s", tg_tape_errmsg(tape));
    cr_assert_str_eq(tg_tensor_op_name(y), fused ? "batch_norm_relu" : "relu");
    cr_assert_eq(tg_backward(tape, tg_sum(tape, tg_mul(tape, y, r))), TG_OK, "%s",
                 tg_tape_errmsg(tape));
    bnr_run o = {tg_tensor_clone(y, dt),
                 tg_tensor_clone(tg_tensor_grad(x), dt),
                 tg_tensor_clone(tg_tensor_grad(w), dt),
                 tg_tensor_clone(tg_tensor_grad(b), dt),
                 tg_tensor_clone(rm, dt),
                 tg_tensor_clone(rv, dt)};
    tg_tape_set_training(tape, 1);
    tg_tape_reset(tape);
    tg_tensor_free(x), tg_tensor_free(r), tg_tensor_free(w), tg_tensor_free(b);
    tg_tensor_free(rm), tg_tensor_free(rv);
    return o;
}

static void bnr_expect_same(const char *what, const char *cfg, tg_tensor *a, tg_tensor *b) {
    cr_assert_not_null(a, "%s %s: no tensor", what, cfg);
    cr_assert_not_null(b, "%s %s: no tensor", what, cfg);
    const size_t bytes = (size_t)tg_tensor_numel(a) * (tg_tensor_dtype(a) == TG_F32 ? 4 : 8);
    cr_expect_eq(tg_tensor_numel(a), tg_tensor_numel(b), "%s %s: sizes", what, cfg);
    cr_expect(memcmp(tg_tensor_data(a), tg_tensor_data(b), bytes) == 0,
              "%s %s: fused and unfused differ (first: %.17g against %.17g)", what, cfg,
              tg_tensor_get(a, 0), tg_tensor_get(b, 0));
    tg_tensor_free(a), tg_tensor_free(b);
}

Test(cnn, batch_norm_relu_is_relu_after_batch_norm_bit_for_bit) {
    static const int64_t shapes[][4] = {{6, 3, 5, 7}, {3, 2, 41, 41}, {9, 5, 0, 0}, {1, 4, 1, 3}};
    static const int ranks[] = {4, 4, 2, 4};
    const int wide_was = tg__conv_wide_simd(1);
    const int threads_was = tg_get_num_threads();
    int runs = 0;
    for (int s = 0; s < 4; s++)
        for (int d = 0; d < 2; d++)
            for (int training = 0; training < 2; training++)
                for (int node = 0; node < 2; node++)
                    for (int wide = 0; wide < 2; wide++)
                        for (int th = 1; th <= 2; th++) {
                            tg__conv_wide_simd(wide);
                            tg_set_num_threads(th);
                            const tg_dtype dt = d ? TG_F64 : TG_F32;
                            char cfg[128];
                            snprintf(cfg, sizeof cfg,
                                     "(shape %d, %s, %s, %s input, wide %d, %d threads)", s,
                                     d ? "f64" : "f32", training ? "training" : "eval",
                                     node ? "node" : "leaf", wide, th);
                            bnr_run f = bnr_once(true, dt, training, node, ranks[s], shapes[s]);
                            bnr_run u = bnr_once(false, dt, training, node, ranks[s], shapes[s]);
                            bnr_expect_same("y", cfg, f.y, u.y);
                            bnr_expect_same("dx", cfg, f.dx, u.dx);
                            bnr_expect_same("dweight", cfg, f.dw, u.dw);
                            bnr_expect_same("dbias", cfg, f.db, u.db);
                            bnr_expect_same("running_mean", cfg, f.rm, u.rm);
                            bnr_expect_same("running_var", cfg, f.rv, u.rv);
                            runs++;
                        }
    tg__conv_wide_simd(wide_was);
    tg_set_num_threads(threads_was);
    cr_expect_eq(runs, 4 * 2 * 2 * 2 * 2 * 2);
}

/* batch_norm_relu_max_pool2d is max_pool2d after relu after batch_norm, bit for bit: the pooled
 * output, the gradients of x, weight and bias, and the running statistics, in float32 and
 * float64, training and evaluation, on both SIMD builds, at 1 and 2 threads; with x a leaf (its
 * gradient accumulates), a node with one consumer (written fresh), and a leaf with no gradient
 * (only weight's and bias's); for the CNN's 2x2 pool, overlapping 3x3 windows with padding (a
 * pixel the argmax of two windows), and an uneven window and stride; over images with more than
 * one sum chunk and with a last row and column no window covers. */
typedef enum bnp_input { BNP_LEAF, BNP_NODE, BNP_NO_GRAD } bnp_input;

static bnr_run bnp_once(bool fused, tg_dtype dt, int training, bnp_input input,
                        const int64_t shape[4], const tg_pool2d_opts *pool) {
    tg_rng rng;
    tg_rng_seed(&rng, 777);
    const int64_t C = shape[1];
    tg_tensor *x = tg_tensor_rand(dt, 4, shape, -1.5, 1, &rng);
    tg_tensor *w = tg_tensor_rand(dt, 1, &C, 0.5, 2, &rng);
    tg_tensor *b = tg_tensor_rand(dt, 1, &C, -0.5, 0.5, &rng);
    tg_tensor *rm = tg_tensor_rand(dt, 1, &C, -0.2, 0.2, &rng);
    tg_tensor *rv = tg_tensor_rand(dt, 1, &C, 0.5, 1.5, &rng);
    tg_tensor_set_requires_grad(x, input != BNP_NO_GRAD);
    tg_tensor_set_requires_grad(w, 1);
    tg_tensor_set_requires_grad(b, 1);
    tg_tape_reset(tape);
    tg_tape_set_training(tape, training);
    tg_tensor *in = input == BNP_NODE ? tg_add_scalar(tape, x, 0.25) : x;
    tg_tensor *y =
        fused ? tg_batch_norm_relu_max_pool2d(tape, in, w, b, rm, rv, 0.1, 1e-5, pool)
              : tg_max_pool2d(tape, tg_relu(tape, tg_batch_norm(tape, in, w, b, rm, rv, 0.1, 1e-5)),
                              pool);
    cr_assert_not_null(y, "%s", tg_tape_errmsg(tape));
    cr_assert_str_eq(tg_tensor_op_name(y), fused ? "batch_norm_relu_max_pool2d" : "max_pool2d");
    tg_tensor *r = tg_tensor_rand(dt, 4, tg_tensor_shape(y), -1, 1, &rng);
    cr_assert_eq(tg_backward(tape, tg_sum(tape, tg_mul(tape, y, r))), TG_OK, "%s",
                 tg_tape_errmsg(tape));
    bnr_run o = {tg_tensor_clone(y, dt),
                 input == BNP_NO_GRAD ? NULL : tg_tensor_clone(tg_tensor_grad(x), dt),
                 tg_tensor_clone(tg_tensor_grad(w), dt),
                 tg_tensor_clone(tg_tensor_grad(b), dt),
                 tg_tensor_clone(rm, dt),
                 tg_tensor_clone(rv, dt)};
    cr_expect(input != BNP_NO_GRAD || tg_tensor_grad(x) == NULL, "x without a gradient has one");
    tg_tape_set_training(tape, 1);
    tg_tape_reset(tape);
    tg_tensor_free(x), tg_tensor_free(r), tg_tensor_free(w), tg_tensor_free(b);
    tg_tensor_free(rm), tg_tensor_free(rv);
    return o;
}

Test(cnn, batch_norm_relu_max_pool2d_is_the_three_ops_bit_for_bit) {
    static const int64_t shapes[][4] = {{6, 3, 5, 7}, {3, 2, 41, 41}, {2, 4, 2, 3}, {1, 1, 8, 8}};
    const tg_pool2d_opts pools[] = {
        {.kernel = {2, 2}},
        {.kernel = {3, 3}, .stride = {2, 2}, .padding = {1, 1}},
        {.kernel = {2, 3}, .stride = {1, 2}, .padding = {1, 1}},
    };
    const int wide_was = tg__conv_wide_simd(1);
    const int threads_was = tg_get_num_threads();
    int runs = 0;
    for (int s = 0; s < 4; s++)
        for (int pl = 0; pl < 3; pl++)
            for (int d = 0; d < 2; d++)
                for (int training = 0; training < 2; training++)
                    for (int input = 0; input < 3; input++)
                        for (int wide = 0; wide < 2; wide++)
                            for (int th = 1; th <= 2; th++) {
                                tg__conv_wide_simd(wide);
                                tg_set_num_threads(th);
                                const tg_dtype dt = d ? TG_F64 : TG_F32;
                                char cfg[160];
                                snprintf(cfg, sizeof cfg,
                                         "(shape %d, pool %d, %s, %s, %s input, wide %d, "
                                         "%d threads)",
                                         s, pl, d ? "f64" : "f32", training ? "training" : "eval",
                                         input == BNP_LEAF   ? "leaf"
                                         : input == BNP_NODE ? "node"
                                                             : "no-gradient",
                                         wide, th);
                                bnr_run f = bnp_once(true, dt, training, (bnp_input)input,
                                                     shapes[s], &pools[pl]);
                                bnr_run u = bnp_once(false, dt, training, (bnp_input)input,
                                                     shapes[s], &pools[pl]);
                                bnr_expect_same("y", cfg, f.y, u.y);
                                if (input != BNP_NO_GRAD)
                                    bnr_expect_same("dx", cfg, f.dx, u.dx);
                                bnr_expect_same("dweight", cfg, f.dw, u.dw);
                                bnr_expect_same("dbias", cfg, f.db, u.db);
                                bnr_expect_same("running_mean", cfg, f.rm, u.rm);
                                bnr_expect_same("running_var", cfg, f.rv, u.rv);
                                runs++;
                            }
    tg__conv_wide_simd(wide_was);
    tg_set_num_threads(threads_was);
    cr_expect_eq(runs, 4 * 3 * 2 * 2 * 3 * 2 * 2);
}

/* The workspace is sized for the threads at recording time: recorded at 1 thread and run back at
 * 2, the op runs on the one buffer it has and gives the same result. */
Test(cnn, batch_norm_relu_max_pool2d_fewer_buffers_than_threads) {
    const int threads_was = tg_get_num_threads();
    const int64_t shape[4] = {8, 6, 16, 16};
    const tg_pool2d_opts pool = {.kernel = {2, 2}};
    tg_set_num_threads(2);
    bnr_run ref = bnp_once(true, TG_F32, 1, BNP_LEAF, shape, &pool);
    tg_rng rng;
    tg_rng_seed(&rng, 777);
    const int64_t C = shape[1];
    tg_tensor *x = tg_tensor_rand(TG_F32, 4, shape, -1.5, 1, &rng);
    tg_tensor *w = tg_tensor_rand(TG_F32, 1, &C, 0.5, 2, &rng);
    tg_tensor *b = tg_tensor_rand(TG_F32, 1, &C, -0.5, 0.5, &rng);
    tg_tensor *rm = tg_tensor_rand(TG_F32, 1, &C, -0.2, 0.2, &rng);
    tg_tensor *rv = tg_tensor_rand(TG_F32, 1, &C, 0.5, 1.5, &rng);
    tg_tensor_set_requires_grad(x, 1);
    tg_tensor_set_requires_grad(w, 1);
    tg_tensor_set_requires_grad(b, 1);
    tg_tape_reset(tape);
    tg_set_num_threads(1);
    tg_tensor *y = tg_batch_norm_relu_max_pool2d(tape, x, w, b, rm, rv, 0.1, 1e-5, &pool);
    cr_assert_not_null(y, "%s", tg_tape_errmsg(tape));
    tg_tensor *r = tg_tensor_rand(TG_F32, 4, tg_tensor_shape(y), -1, 1, &rng);
    tg_set_num_threads(2);
    cr_assert_eq(tg_backward(tape, tg_sum(tape, tg_mul(tape, y, r))), TG_OK, "%s",
                 tg_tape_errmsg(tape));
    bnr_expect_same("y", "(recorded at 1 thread)", ref.y, tg_tensor_clone(y, TG_F32));
    bnr_expect_same("dx", "(recorded at 1 thread)", ref.dx,
                    tg_tensor_clone(tg_tensor_grad(x), TG_F32));
    bnr_expect_same("dweight", "(recorded at 1 thread)", ref.dw,
                    tg_tensor_clone(tg_tensor_grad(w), TG_F32));
    bnr_expect_same("dbias", "(recorded at 1 thread)", ref.db,
                    tg_tensor_clone(tg_tensor_grad(b), TG_F32));
    tg_tensor_free(ref.rm), tg_tensor_free(ref.rv);
    tg_tape_reset(tape);
    tg_tensor_free(x), tg_tensor_free(r), tg_tensor_free(w), tg_tensor_free(b);
    tg_tensor_free(rm), tg_tensor_free(rv);
    tg_set_num_threads(threads_was);
}

/* The fused op's mask is relu's: where batch norm's output is at or below 0, y = 0 and no
 * gradient passes. One channel x = [-1, 0, 4]: mean 1, biased variance 14/3, rstd = sqrt(3/14) =: q,
 * xhat = q [-2, -1, 3], y = [0, 0, 3q]. The loss sum(y * [1, 2, 3]) gives dz = [0, 0, 3], mean(dz)
 * = 1, mean(dz xhat) = 3q, and dx = q (dz - 1 - xhat 3q) = q [4, -5, 1] / 14. */
Test(cnn, batch_norm_relu_by_hand) {
    const int64_t shape[] = {3, 1};
    const double q = sqrt(3.0 / 14.0);
    tg_tensor *x = leaf(2, shape, (const double[]){-1, 0, 4});
    tg_tensor *r = tg_tensor_from(TG_F64, 2, shape, (const double[]){1, 2, 3});
    tg_tensor *y = tg_batch_norm_relu(tape, x, NULL, NULL, NULL, NULL, 0.1, 1e-12);
    cr_assert_not_null(y, "%s", tg_tape_errmsg(tape));
    expect_values("y", y, (const double[]){0, 0, 3 * q}, 3, 1e-12);
    backward_sum(tg_mul(tape, y, r));
    expect_values("dx", tg_tensor_grad(x), (const double[]){4 * q / 14, -5 * q / 14, q / 14}, 3,
                  1e-12);
    tg_tensor_free(x), tg_tensor_free(r);
}
