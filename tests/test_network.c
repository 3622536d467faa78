/* Whole graphs: fan-out, the report's 2-4-2 network end to end, known forward values, memory reuse
 * across steps, and independence of two tapes on two threads. */
#include "core/engine.h"
#include "fd.h"

#include <criterion/criterion.h>
#include <math.h>
#include <pthread.h>

/* ---- Fan-out: a value used several times receives the sum of the contributions ---- */

static tg_tensor *fan_out3(tg_tape *t, tg_tensor *const *in, void *ctx) {
    (void)ctx;
    tg_tensor *x = in[0];
    return tg_add(t, tg_add(t, tg_mul(t, x, x), tg_tanh(t, x)), tg_exp(t, x));
}

Test(network, fan_out_sums_contributions) {
    tg_tensor *x = tg_tensor_from(TG_F64, TG_SHAPE(3), (double[]){-0.5, 0.25, 1.0});
    tg_tensor_set_requires_grad(x, 1);
    tg_tape *t = tg_tape_new();
    /* y = x + x + x: dy/dx = 3 exactly. */
    tg_tensor *y = tg_sum(t, tg_add(t, tg_add(t, x, x), x));
    cr_assert_eq(tg_backward(t, y), TG_OK);
    for (int i = 0; i < 3; i++)
        cr_expect_eq(tg_tensor_get(tg_tensor_grad(x), i), 3.0);
    tg_tape_free(t);
    /* x * x + tanh(x) + exp(x): x feeds four uses through three ops. */
    fd_check("fan-out x*x + tanh(x) + exp(x)", fan_out3, &x, 1, NULL, NULL);
    tg_tensor_free(x);
}

Test(network, leaf_gradients_accumulate_until_zeroed) {
    tg_tensor *x = tg_tensor_from(TG_F64, TG_SHAPE(2), (double[]){1, 2});
    tg_tensor_set_requires_grad(x, 1);
    tg_tape *t = tg_tape_new();
    for (int step = 1; step <= 2; step++) {
        tg_tape_reset(t);
        cr_assert_eq(tg_backward(t, tg_sum(t, tg_scale(t, x, 2.0))), TG_OK);
        cr_expect_eq(tg_tensor_get(tg_tensor_grad(x), 1), 2.0 * step);
    }
    tg_tensor_zero_grad(x);
    cr_expect_eq(tg_tensor_get(tg_tensor_grad(x), 0), 0.0);
    tg_tape_free(t);
    tg_tensor_free(x);
}

/* ---- Known forward values ---- */

Test(network, softmax_rows_sum_to_one) {
    tg_rng rng;
    tg_rng_seed(&rng, 21);
    tg_tensor *x = tg_tensor_randn(TG_F32, TG_SHAPE(7, 5), 0, 3, &rng);
    tg_tape *t = tg_tape_new();
    tg_tensor *p = tg_softmax(t, x);
    tg_tensor *lp = tg_log_softmax(t, x);
    for (int r = 0; r < 7; r++) {
        double s = 0;
        for (int c = 0; c < 5; c++) {
            s += tg_tensor_get(p, r * 5 + c);
            cr_expect_float_eq(exp(tg_tensor_get(lp, r * 5 + c)), tg_tensor_get(p, r * 5 + c),
                               1e-6);
        }
        cr_expect_float_eq(s, 1.0, 1e-6, "row %d sums to %.9g", r, s);
    }
    tg_tape_free(t);
    tg_tensor_free(x);
}

/* Worked by hand. Row 0: logits (1, 2), class 1: loss = log(e + e^2) - 2 = log(1 + e^-1)
 * = 0.313261687518223; p = (1/(1+e), e/(1+e)) = (0.268941421369995, 0.731058578630005).
 * Row 1: logits (0, 0), class 0: loss = log 2 = 0.693147180559945, p = (0.5, 0.5).
 * Mean = 0.503204434039084; dz = (p - onehot) / 2. */
Test(network, cross_entropy_worked_example) {
    tg_tensor *z = tg_tensor_from(TG_F64, TG_SHAPE(2, 2), (double[]){1, 2, 0, 0});
    tg_tensor *y = tg_tensor_from(TG_I32, TG_SHAPE(2), (int32_t[]){1, 0});
    tg_tensor_set_requires_grad(z, 1);
    tg_tape *t = tg_tape_new();
    tg_tensor *loss = tg_softmax_cross_entropy(t, z, y);
    cr_expect_float_eq(tg_tensor_item(loss), 0.503204434039084, 1e-15);
    cr_assert_eq(tg_backward(t, loss), TG_OK);
    const double *g = tg_tensor_cdata(tg_tensor_grad(z));
    cr_expect_float_eq(g[0], 0.268941421369995 / 2, 1e-15);
    cr_expect_float_eq(g[1], (0.731058578630005 - 1) / 2, 1e-15);
    cr_expect_float_eq(g[2], (0.5 - 1) / 2, 1e-15);
    cr_expect_float_eq(g[3], 0.5 / 2, 1e-15);

    /* The same with probability targets (one-hot rows) gives the same loss. */
    tg_tensor *onehot = tg_tensor_from(TG_F64, TG_SHAPE(2, 2), (double[]){0, 1, 1, 0});
    tg_tensor *loss2 = tg_softmax_cross_entropy(t, z, onehot);
    cr_expect_float_eq(tg_tensor_item(loss2), 0.503204434039084, 1e-15);
    tg_tape_free(t);
    tg_tensor_free(z);
    tg_tensor_free(y);
    tg_tensor_free(onehot);
}

/* Logits of 1e4 stay finite: the log-sum-exp is taken around the row max. */
Test(network, cross_entropy_is_stable_for_huge_logits) {
    tg_tensor *z =
        tg_tensor_from(TG_F32, TG_SHAPE(2, 3), (float[]){1e4f, -1e4f, 0, 1e4f, 1e4f, 1e4f});
    tg_tensor *y = tg_tensor_from(TG_I32, TG_SHAPE(2), (int32_t[]){1, 2});
    tg_tensor_set_requires_grad(z, 1);
    tg_tape *t = tg_tape_new();
    tg_tensor *loss = tg_softmax_cross_entropy(t, z, y);
    /* Row 0: lse = 1e4, loss = 1e4 - (-1e4) = 2e4; row 1: log 3. */
    cr_expect_float_eq(tg_tensor_item(loss), (2e4 + log(3.0)) / 2, 1e-2);
    cr_assert_eq(tg_backward(t, loss), TG_OK);
    for (int i = 0; i < 6; i++)
        cr_expect(isfinite(tg_tensor_get(tg_tensor_grad(z), i)));
    cr_expect_float_eq(tg_tensor_get(tg_tensor_grad(z), 1), -0.5, 1e-7);
    tg_tape_free(t);
    tg_tensor_free(z);
    tg_tensor_free(y);
}

/* ---- The report's 2-4-2 network, end to end ---- */

typedef struct {
    tg_tensor *labels;
} net_ctx;

/* inputs: X [N,2], W_h [4,2], b_h [4], W_y [2,4], b_y [2] -- the report's h~ = W_h x + b_h
 * written for a batch of row vectors: H~ = X W_h^T + b_h. */
static tg_tensor *net(tg_tape *t, tg_tensor *const *in, void *vctx) {
    const net_ctx *c = vctx;
    tg_tensor *h = tg_tanh(t, tg_add(t, tg_matmul(t, in[0], tg_transpose(t, in[1])), in[2]));
    tg_tensor *y = tg_add(t, tg_matmul(t, h, tg_transpose(t, in[3])), in[4]);
    return tg_softmax_cross_entropy(t, y, c->labels);
}

Test(network, report_2_4_2_gradients_match_finite_differences) {
    tg_rng rng;
    tg_rng_seed(&rng, 22);
    tg_tensor *X = tg_tensor_rand(TG_F64, TG_SHAPE(5, 2), -1, 1, &rng);
    tg_tensor *in[5] = {X, fd_param(&rng, TG_SHAPE(4, 2), -1, 1),
                        fd_param(&rng, TG_SHAPE(4), -1, 1), fd_param(&rng, TG_SHAPE(2, 4), -1, 1),
                        fd_param(&rng, TG_SHAPE(2), -1, 1)};
    net_ctx c = {tg_tensor_from(TG_I32, TG_SHAPE(5), (int32_t[]){0, 1, 1, 0, 1})};
    fd_check("2-4-2 network", net, in, 5, &c, NULL);
    for (int i = 0; i < 5; i++)
        tg_tensor_free(in[i]);
    tg_tensor_free(c.labels);
}

/* Reference values for one small fixed network, worked independently: x = (1, -1), W_h = 0.5 I
 * stacked over -0.5 I (so h~ = (0.5, -0.5, -0.5, 0.5)), b_h = 0, W_y = [[1,0,0,0],[0,1,0,0]],
 * b_y = 0, class 0. Then h = tanh(h~), y~ = (h_1, h_2) = (t, -t) with t = tanh(0.5), and
 * loss = log(1 + e^(-2t)); dl/dy~ = (p_0 - 1, p_1) with p_1 = 1/(1 + e^(2t)). */
Test(network, fixed_network_reference_values) {
    const double th = tanh(0.5), p1 = 1 / (1 + exp(2 * th));
    tg_tensor *X = tg_tensor_from(TG_F64, TG_SHAPE(1, 2), (double[]){1, -1});
    tg_tensor *Wh =
        tg_tensor_from(TG_F64, TG_SHAPE(4, 2), (double[]){0.5, 0, 0, 0.5, -0.5, 0, 0, -0.5});
    tg_tensor *bh = tg_tensor_new(TG_F64, TG_SHAPE(4));
    tg_tensor *Wy = tg_tensor_from(TG_F64, TG_SHAPE(2, 4), (double[]){1, 0, 0, 0, 0, 1, 0, 0});
    tg_tensor *by = tg_tensor_new(TG_F64, TG_SHAPE(2));
    tg_tensor *params[4] = {Wh, bh, Wy, by};
    for (int i = 0; i < 4; i++)
        tg_tensor_set_requires_grad(params[i], 1);
    net_ctx c = {tg_tensor_from(TG_I32, TG_SHAPE(1), (int32_t[]){0})};
    tg_tape *t = tg_tape_new();
    tg_tensor *in[5] = {X, Wh, bh, Wy, by};
    tg_tensor *loss = net(t, in, &c);
    cr_expect_float_eq(tg_tensor_item(loss), log(1 + exp(-2 * th)), 1e-15);
    cr_assert_eq(tg_backward(t, loss), TG_OK);
    /* dl/db_y = (p_0 - 1, p_1) = (-p1, p1); dl/dW_y[k,j] = dl/dy~_k h_j. */
    const double h[4] = {th, -th, -th, th};
    cr_expect_float_eq(tg_tensor_get(tg_tensor_grad(by), 0), -p1, 1e-15);
    cr_expect_float_eq(tg_tensor_get(tg_tensor_grad(by), 1), p1, 1e-15);
    for (int j = 0; j < 4; j++) {
        cr_expect_float_eq(tg_tensor_get(tg_tensor_grad(Wy), j), -p1 * h[j], 1e-15);
        cr_expect_float_eq(tg_tensor_get(tg_tensor_grad(Wy), 4 + j), p1 * h[j], 1e-15);
    }
    /* dl/dh~ = (1 - h^2) * W_y^T dl/dy~ = (1 - t^2)(-p1, p1, 0, 0); dl/db_h is the same. */
    const double d = 1 - th * th;
    cr_expect_float_eq(tg_tensor_get(tg_tensor_grad(bh), 0), -d * p1, 1e-15);
    cr_expect_float_eq(tg_tensor_get(tg_tensor_grad(bh), 1), d * p1, 1e-15);
    cr_expect_eq(tg_tensor_get(tg_tensor_grad(bh), 2), 0.0);
    cr_expect_eq(tg_tensor_get(tg_tensor_grad(bh), 3), 0.0);
    /* dl/dW_h[i,j] = dl/dh~_i x_j, x = (1, -1). */
    cr_expect_float_eq(tg_tensor_get(tg_tensor_grad(Wh), 0), -d * p1, 1e-15);
    cr_expect_float_eq(tg_tensor_get(tg_tensor_grad(Wh), 1), d * p1, 1e-15);
    cr_expect_float_eq(tg_tensor_get(tg_tensor_grad(Wh), 2), d * p1, 1e-15);
    cr_expect_float_eq(tg_tensor_get(tg_tensor_grad(Wh), 3), -d * p1, 1e-15);
    tg_tape_free(t);
    tg_tensor_free(c.labels);
    tg_tensor_free(X);
    for (int i = 0; i < 4; i++)
        tg_tensor_free(params[i]);
}

/* float32 and float64 runs of the same network agree to float32 precision. */
Test(network, f32_matches_f64) {
    tg_rng rng;
    tg_rng_seed(&rng, 23);
    tg_tensor *p64[5], *p32[5];
    const int64_t shapes[5][2] = {{16, 2}, {4, 2}, {4, 0}, {2, 4}, {2, 0}};
    for (int i = 0; i < 5; i++) {
        int rank = shapes[i][1] ? 2 : 1;
        p64[i] = tg_tensor_rand(TG_F64, rank, shapes[i], -1, 1, &rng);
        if (i)
            tg_tensor_set_requires_grad(p64[i], 1);
        p32[i] = tg_tensor_clone(p64[i], TG_F32);
    }
    net_ctx c = {tg_tensor_new(TG_I32, TG_SHAPE(16))};
    for (int n = 0; n < 16; n++)
        tg_tensor_set(c.labels, n, n % 2);
    tg_tape *t = tg_tape_new();
    tg_tensor *l64 = net(t, p64, &c), *l32 = net(t, p32, &c);
    cr_expect_float_eq(tg_tensor_item(l32), tg_tensor_item(l64), 1e-6);
    cr_assert_eq(tg_backward(t, l64), TG_OK);
    cr_assert_eq(tg_backward(t, l32), TG_OK);
    for (int i = 1; i < 5; i++)
        for (int64_t k = 0; k < tg_tensor_numel(p64[i]); k++)
            cr_expect_float_eq(tg_tensor_get(tg_tensor_grad(p32[i]), k),
                               tg_tensor_get(tg_tensor_grad(p64[i]), k), 1e-6);
    tg_tape_free(t);
    for (int i = 0; i < 5; i++) {
        tg_tensor_free(p64[i]);
        tg_tensor_free(p32[i]);
    }
    tg_tensor_free(c.labels);
}

/* ---- Memory: a steady loop stops growing the tape after its first steps ---- */

Test(network, tape_memory_is_reused_across_steps) {
    tg_rng rng;
    tg_rng_seed(&rng, 24);
    tg_tensor *in[5] = {
        tg_tensor_rand(TG_F32, TG_SHAPE(200, 2), -1, 1, &rng),
        tg_tensor_randn(TG_F32, TG_SHAPE(64, 2), 0, 1, &rng), tg_tensor_new(TG_F32, TG_SHAPE(64)),
        tg_tensor_randn(TG_F32, TG_SHAPE(2, 64), 0, 1, &rng), tg_tensor_new(TG_F32, TG_SHAPE(2))};
    for (int i = 1; i < 5; i++)
        tg_tensor_set_requires_grad(in[i], 1);
    net_ctx c = {tg_tensor_new(TG_I32, TG_SHAPE(200))};
    tg_tape *t = tg_tape_new();
    size_t after_warmup = 0;
    for (int step = 0; step < 10; step++) {
        tg_tape_reset(t);
        cr_assert_eq(tg_backward(t, net(t, in, &c)), TG_OK);
        if (step == 2)
            after_warmup = tg_tape_bytes(t);
        if (step > 2)
            cr_expect_eq(tg_tape_bytes(t), after_warmup, "step %d grew the tape", step);
    }
    tg_tape_free(t);
    for (int i = 0; i < 5; i++)
        tg_tensor_free(in[i]);
    tg_tensor_free(c.labels);
}

/* ---- Two tapes on two threads do not interfere ---- */

typedef struct {
    uint64_t seed;
    double loss;
    double grad0;
} thread_job;

static void *run_job(void *arg) {
    thread_job *job = arg;
    tg_rng rng;
    tg_rng_seed(&rng, job->seed);
    tg_tensor *in[5] = {
        tg_tensor_rand(TG_F64, TG_SHAPE(50, 2), -1, 1, &rng),
        tg_tensor_randn(TG_F64, TG_SHAPE(4, 2), 0, 1, &rng), tg_tensor_new(TG_F64, TG_SHAPE(4)),
        tg_tensor_randn(TG_F64, TG_SHAPE(2, 4), 0, 1, &rng), tg_tensor_new(TG_F64, TG_SHAPE(2))};
    tg_tensor_set_requires_grad(in[1], 1);
    net_ctx c = {tg_tensor_new(TG_I32, TG_SHAPE(50))};
    tg_tape *t = tg_tape_new();
    for (int step = 0; step < 200; step++) {
        tg_tape_reset(t);
        tg_tensor_zero_grad(in[1]);
        tg_tensor *loss = net(t, in, &c);
        tg_backward(t, loss);
        job->loss = tg_tensor_item(loss);
    }
    job->grad0 = tg_tensor_get(tg_tensor_grad(in[1]), 0);
    tg_tape_free(t);
    for (int i = 0; i < 5; i++)
        tg_tensor_free(in[i]);
    tg_tensor_free(c.labels);
    return NULL;
}

Test(network, two_tapes_on_two_threads) {
    thread_job solo = {.seed = 5}, a = {.seed = 5}, b = {.seed = 6};
    run_job(&solo);
    pthread_t ta, tb;
    pthread_create(&ta, NULL, run_job, &a);
    pthread_create(&tb, NULL, run_job, &b);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    cr_expect_eq(a.loss, solo.loss, "a thread's result must not depend on another thread");
    cr_expect_eq(a.grad0, solo.grad0);
    cr_expect_neq(b.loss, a.loss);
}

/* ---- The PRNG ---- */

Test(network, rng_is_seeded_and_uniform) {
    tg_rng r1, r2;
    tg_rng_seed(&r1, 0);
    tg_rng_seed(&r2, 0);
    /* splitmix64's first output from state 0 is the published 0xe220a8397b1dcdaf. */
    cr_expect_eq(r1.s[0], 0xe220a8397b1dcdafull);
    double sum = 0, sum2 = 0;
    const int n = 100000;
    for (int i = 0; i < n; i++) {
        uint64_t v = tg_rng_next(&r1);
        cr_assert_eq(v, tg_rng_next(&r2));
        double u = tg_rng_uniform(&r1);
        tg_rng_uniform(&r2);
        cr_assert(u >= 0 && u < 1);
        double z = tg_rng_normal(&r1);
        tg_rng_normal(&r2);
        sum += z;
        sum2 += z * z;
        cr_assert_lt(tg_rng_below(&r1, 7), 7u);
        tg_rng_below(&r2, 7);
    }
    /* Mean 0 and variance 1 within 5 standard errors. */
    cr_expect_lt(fabs(sum / n), 5 / sqrt(n));
    cr_expect_lt(fabs(sum2 / n - 1), 5 * sqrt(2.0 / n));
}
