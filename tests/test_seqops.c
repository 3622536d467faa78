/* The seqops ops (issues 14, 15) by value: their kinks, ties and edge cases as PyTorch has them
 * (finite differences cannot judge those; test_ops_grad checks everything smooth), reference
 * values computed from the definitions, argmax against a scan by hand, and float32 with threads
 * against float64. */
#include "op_catalog.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static tg_tape *tape;
static void setup(void) { tape = tg_tape_new(); }
static void teardown(void) { tg_tape_free(tape); }
TestSuite(seqops, .init = setup, .fini = teardown);

/* A float64 leaf that requires a gradient. */
static tg_tensor *leaf(int rank, const int64_t *shape, const double *v) {
    tg_tensor *x = tg_tensor_from(TG_F64, rank, shape, v);
    cr_assert_not_null(x, "%s", tg_last_errmsg());
    tg_tensor_set_requires_grad(x, 1);
    return x;
}

/* backward of sum(y); fails on an error */
static void backward_sum(tg_tensor *y) {
    cr_assert_not_null(y, "%s", tg_tape_errmsg(tape));
    cr_assert_eq(tg_backward(tape, tg_sum(tape, y)), TG_OK, "%s", tg_tape_errmsg(tape));
}

/* Exact comparison that also treats two NaNs (and equal infinities) as equal. */
static void expect_values(const char *what, const tg_tensor *t, const double *want, int64_t n,
                          double tol) {
    cr_assert_eq(tg_tensor_numel(t), n, "%s: %lld elements", what, (long long)tg_tensor_numel(t));
    for (int64_t i = 0; i < n; i++) {
        const double got = tg_tensor_get(t, i);
        if (isnan(want[i]) || isinf(want[i]))
            cr_expect(isnan(want[i]) ? isnan(got) : got == want[i], "%s[%lld]: got %g, want %g",
                      what, (long long)i, got, want[i]);
        else
            cr_expect(fabs(got - want[i]) <= tol, "%s[%lld]: got %.17g, want %.17g", what,
                      (long long)i, got, want[i]);
    }
}

Test(seqops, leaky_relu_kink_takes_the_slope) {
    tg_tensor *x = leaf(TG_SHAPE(3), (double[]){-2, 0, 3});
    tg_tensor *y = tg_leaky_relu(tape, x, 0.1);
    backward_sum(y);
    expect_values("y", y, (double[]){-0.2, 0, 3}, 3, 1e-15);
    expect_values("dx", tg_tensor_grad(x), (double[]){0.1, 0.1, 1}, 3, 0); /* x = 0: the slope */
    tg_tensor_free(x);
}

Test(seqops, elu_kink_takes_alpha) {
    tg_tensor *x = leaf(TG_SHAPE(3), (double[]){-1, 0, 2});
    tg_tensor *y = tg_elu(tape, x, 1.5);
    backward_sum(y);
    expect_values("y", y, (double[]){-0.9481808382428365, 0, 2}, 3, 1e-15);
    expect_values("dx", tg_tensor_grad(x), (double[]){0.5518191617571635, 1.5, 1}, 3, 1e-15);
    tg_tensor_free(x);
}

/* torch.clamp's backward passes the gradient where min <= x <= max: 1 at the bounds. */
Test(seqops, clamp_passes_the_gradient_at_the_bounds) {
    tg_tensor *x = leaf(TG_SHAPE(6), (double[]){-1, -0.5, 0, 0.7, 1, NAN});
    tg_tensor *y = tg_clamp(tape, x, -0.5, 0.7);
    backward_sum(y);
    expect_values("y", y, (double[]){-0.5, -0.5, 0, 0.7, 0.7, NAN}, 6, 0);
    expect_values("dx", tg_tensor_grad(x), (double[]){0, 1, 1, 1, 0, 0}, 6, 0);
    tg_tensor_free(x);
}

Test(seqops, clamp_min_above_max_gives_max) {
    tg_tensor *x = leaf(TG_SHAPE(3), (double[]){-2, 0, 2});
    tg_tensor *y = tg_clamp(tape, x, 1, -1);
    backward_sum(y);
    expect_values("y", y, (double[]){-1, -1, -1}, 3, 0);
    expect_values("dx", tg_tensor_grad(x), (double[]){0, 0, 0}, 3, 0);
    tg_tensor_free(x);
}

/* torch.maximum / minimum split the gradient half and half at a tie; a NaN sends it to both. */
Test(seqops, maximum_minimum_ties_split_the_gradient) {
    tg_tensor *a = leaf(TG_SHAPE(4), (double[]){1, 2, 3, NAN});
    tg_tensor *b = leaf(TG_SHAPE(4), (double[]){1, 5, 0, 1});
    tg_tensor *y = tg_maximum(tape, a, b);
    backward_sum(y);
    expect_values("max", y, (double[]){1, 5, 3, NAN}, 4, 0);
    expect_values("da", tg_tensor_grad(a), (double[]){0.5, 0, 1, 1}, 4, 0);
    expect_values("db", tg_tensor_grad(b), (double[]){0.5, 1, 0, 1}, 4, 0);
    tg_tensor_zero_grad(a);
    tg_tensor_zero_grad(b);
    tg_tape_reset(tape);
    y = tg_minimum(tape, a, b);
    backward_sum(y);
    expect_values("min", y, (double[]){1, 2, 0, NAN}, 4, 0);
    expect_values("da", tg_tensor_grad(a), (double[]){0.5, 1, 0, 1}, 4, 0);
    expect_values("db", tg_tensor_grad(b), (double[]){0.5, 0, 1, 1}, 4, 0);
    tg_tensor_free(a);
    tg_tensor_free(b);
}

Test(seqops, maximum_tie_under_broadcasting_sums_the_halves) {
    tg_tensor *a = leaf(TG_SHAPE(3), (double[]){2, 2, 4});
    tg_tensor *b = leaf(TG_SHAPE(1), (double[]){2});
    backward_sum(tg_maximum(tape, a, b));
    expect_values("da", tg_tensor_grad(a), (double[]){0.5, 0.5, 1}, 3, 0);
    expect_values("db", tg_tensor_grad(b), (double[]){1}, 1, 0); /* two halves */
    tg_tensor_free(a);
    tg_tensor_free(b);
}

/* max(dim) / min(dim): the gradient goes to the first extremum in scan order (PyTorch's index);
 * a NaN is the extremum. */
Test(seqops, max_min_axis_ties_go_to_the_first) {
    tg_tensor *x = leaf(TG_SHAPE(2, 4), (double[]){2, 5, 5, 1, 3, 1, 1, 3});
    tg_tensor *y = tg_max_axis(tape, x, 1, 0);
    backward_sum(y);
    expect_values("max", y, (double[]){5, 3}, 2, 0);
    expect_values("dx", tg_tensor_grad(x), (double[]){0, 1, 0, 0, 1, 0, 0, 0}, 8, 0);
    tg_tensor_zero_grad(x);
    tg_tape_reset(tape);
    y = tg_min_axis(tape, x, -1, 1);
    cr_assert_eq(tg_tensor_rank(y), 2);
    cr_expect_eq(tg_tensor_shape(y)[1], 1);
    backward_sum(y);
    expect_values("min", y, (double[]){1, 1}, 2, 0);
    expect_values("dx", tg_tensor_grad(x), (double[]){0, 0, 0, 1, 0, 1, 0, 0}, 8, 0);
    tg_tensor_zero_grad(x);
    tg_tape_reset(tape);
    tg_tensor *z = leaf(TG_SHAPE(3), (double[]){1, NAN, 3});
    y = tg_max_axis(tape, z, 0, 0);
    backward_sum(y);
    expect_values("max with NaN", y, (double[]){NAN}, 1, 0);
    expect_values("dz", tg_tensor_grad(z), (double[]){0, 1, 0}, 3, 0);
    tg_tensor_free(x);
    tg_tensor_free(z);
}

/* argmax: ties and NaNs by hand, then every catalog case against a scan written out here. */
Test(seqops, argmax_by_hand) {
    tg_tensor *x = tg_tensor_from(TG_F64, TG_SHAPE(2, 3), (double[]){1, 3, 3, NAN, 2, NAN});
    tg_tensor *rows = tg_argmax(tape, x, 1, 0), *cols = tg_argmax(tape, x, 0, 1);
    cr_assert(rows && cols, "%s", tg_tape_errmsg(tape));
    cr_expect_eq(tg_tensor_dtype(rows), TG_I32);
    cr_expect_not(tg_tensor_requires_grad(rows));
    expect_values("rows", rows, (double[]){1, 0}, 2, 0);
    cr_expect_eq(tg_tensor_rank(cols), 2);
    expect_values("cols", cols, (double[]){1, 0, 1}, 3, 0);
    tg_tensor_free(x);
}

Test(seqops, argmax_every_catalog_case) {
    const cat_entry *e = cat_find("argmax");
    cr_assert_not_null(e);
    cr_assert(e->no_grad);
    tg_rng rng;
    tg_rng_seed(&rng, 5);
    for (int k = 0; k < e->n_cases; k++) {
        const cat_case *c = &e->cases[k];
        tg_tensor *in[CAT_MAX_INPUTS] = {0};
        cat_make_inputs(c, &rng, in);
        tg_tensor *y = e->build(tape, in, c);
        cr_assert_not_null(y, "case %d: %s", k, tg_tape_errmsg(tape));
        const int rank = tg_tensor_rank(in[0]);
        const int axis = rank == 0 ? 0 : (c->iarg[0] + rank) % rank;
        int64_t n = rank ? tg_tensor_shape(in[0])[axis] : 1, inner = 1;
        for (int i = axis + 1; i < rank; i++)
            inner *= tg_tensor_shape(in[0])[i];
        const double *v = tg_tensor_cdata(in[0]);
        for (int64_t out = 0; out < tg_tensor_numel(y); out++) {
            const int64_t base = out / inner * n * inner + out % inner;
            int64_t best = 0;
            for (int64_t j = 1; j < n; j++)
                if (v[base + j * inner] > v[base + best * inner])
                    best = j;
            cr_expect_eq(tg_tensor_get(y, out), (double)best, "case %d (%s), output %lld", k,
                         c->what, (long long)out);
        }
        tg_tensor_free(in[0]);
        tg_tape_reset(tape);
    }
}

/* An integer output takes no part in backward: the float path beside it still gets its gradient. */
Test(seqops, argmax_on_a_tape_with_a_loss) {
    tg_tensor *x = leaf(TG_SHAPE(2, 2), (double[]){1, 4, 3, 2});
    tg_tensor *idx = tg_argmax(tape, x, 1, 0);
    cr_assert_not_null(idx);
    expect_values("argmax", idx, (double[]){1, 0}, 2, 0);
    backward_sum(tg_max_axis(tape, x, 1, 0));
    expect_values("dx", tg_tensor_grad(x), (double[]){0, 1, 1, 0}, 4, 0);
    tg_tensor_free(x);
}

/* Reference values from the definitions (erf and tanh forms, as torch.nn.functional.gelu). */
Test(seqops, gelu_values_and_derivatives) {
    const double xs[3] = {1, -0.5, 2};
    const double y_erf[3] = {0.8413447460685429, -0.15426876936299344, 1.9544997361036416};
    const double d_erf[3] = {1.0833154705876864, 0.13250487534383712, 1.085231801078197};
    const double y_tanh[3] = {0.8411919906082768, -0.15428599017485606, 1.954597694087775};
    const double d_tanh[3] = {1.0829640838457826, 0.13263009646535764, 1.0860992566236183};
    for (int approx = 0; approx <= 1; approx++) {
        tg_tensor *x = leaf(TG_SHAPE(3), xs);
        tg_tensor *y = tg_gelu(tape, x, approx);
        backward_sum(y);
        expect_values(approx ? "tanh y" : "erf y", y, approx ? y_tanh : y_erf, 3, 1e-15);
        expect_values(approx ? "tanh dx" : "erf dx", tg_tensor_grad(x), approx ? d_tanh : d_erf, 3,
                      1e-15);
        tg_tensor_free(x);
        tg_tape_reset(tape);
    }
}

Test(seqops, silu_values) {
    tg_tensor *x = leaf(TG_SHAPE(3), (double[]){1, -2, -1000});
    tg_tensor *y = tg_silu(tape, x);
    backward_sum(y);
    expect_values("y", y, (double[]){0.7310585786300049, -0.2384058440442351, -0.0}, 3, 1e-15);
    const double *g = tg_tensor_cdata(tg_tensor_grad(x));
    cr_expect(fabs(g[0] - 0.9276705118714869) < 1e-15, "%.17g", g[0]);
    cr_expect(isfinite(g[2]) && g[2] == 0, "far left: %g", g[2]); /* no NaN from e^1000 */
    tg_tensor_free(x);
}

/* Softplus is the identity above the threshold (beta x > threshold), as torch's. */
Test(seqops, softplus_is_linear_above_the_threshold) {
    tg_tensor *x = leaf(TG_SHAPE(4), (double[]){25, 19, 0, -50});
    tg_tensor *y = tg_softplus(tape, x, 1, 20);
    backward_sum(y);
    expect_values("y", y, (double[]){25, 19.000000005602796, 0.6931471805599453, exp(-50.0)}, 4,
                  1e-14);
    expect_values("dx", tg_tensor_grad(x), (double[]){1, 0.9999999943972036, 0.5, exp(-50.0)}, 4,
                  1e-15);
    tg_tensor_free(x);
    tg_tape_reset(tape);
    tg_tensor *z = leaf(TG_SHAPE(2), (double[]){3, 2});
    y = tg_softplus(tape, z, 2, 5); /* 2 * 3 = 6 > 5: linear; 2 * 2 = 4: not */
    backward_sum(y);
    expect_values("y", y, (double[]){3, log1p(exp(4.0)) / 2}, 2, 1e-15);
    tg_tensor_free(z);
}

Test(seqops, sqrt_at_zero_has_an_infinite_gradient) {
    tg_tensor *x = leaf(TG_SHAPE(2), (double[]){0, 4});
    tg_tensor *y = tg_sqrt(tape, x);
    backward_sum(y);
    expect_values("y", y, (double[]){0, 2}, 2, 0);
    expect_values("dx", tg_tensor_grad(x), (double[]){INFINITY, 0.25}, 2, 0);
    tg_tensor_free(x);
}

/* pow_backward: p = 0 gives 0 (also at x = 0); powers PyTorch computes as products are exact. */
Test(seqops, pow_scalar_edges) {
    tg_tensor *x = leaf(TG_SHAPE(3), (double[]){0, -3, 2});
    tg_tensor *y = tg_pow_scalar(tape, x, 0);
    backward_sum(y);
    expect_values("x^0", y, (double[]){1, 1, 1}, 3, 0);
    expect_values("dx", tg_tensor_grad(x), (double[]){0, 0, 0}, 3, 0);
    tg_tensor_zero_grad(x);
    tg_tape_reset(tape);
    y = tg_pow_scalar(tape, x, 3);
    backward_sum(y);
    expect_values("x^3", y, (double[]){0, -27, 8}, 3, 0);
    expect_values("dx", tg_tensor_grad(x), (double[]){0, 27, 12}, 3, 0);
    tg_tensor_free(x);
}

/* pow_backward_self / pow_backward_exponent: 0 where b = 0 (for a), 0 where a = 0 and b >= 0
 * (for b); otherwise the IEEE values: 0^-1 = inf, and its b-gradient inf * log 0 = -inf. */
Test(seqops, pow_at_a_zero_base_as_pytorch) {
    tg_tensor *a = leaf(TG_SHAPE(4), (double[]){0, 0, 2, 0});
    tg_tensor *b = leaf(TG_SHAPE(4), (double[]){2, -1, 0, 0});
    tg_tensor *y = tg_pow(tape, a, b);
    backward_sum(y);
    expect_values("y", y, (double[]){0, INFINITY, 1, 1}, 4, 0);
    expect_values("da", tg_tensor_grad(a), (double[]){0, -INFINITY, 0, 0}, 4, 0);
    expect_values("db", tg_tensor_grad(b), (double[]){0, -INFINITY, log(2.0), 0}, 4, 1e-15);
    tg_tensor_free(a);
    tg_tensor_free(b);
}

Test(seqops, logsumexp_is_stable_and_handles_infinities) {
    tg_tensor *x = leaf(TG_SHAPE(4, 2),
                        (double[]){1000, 1000, -INFINITY, -INFINITY, INFINITY, 1, -INFINITY, 0});
    tg_tensor *y = tg_logsumexp(tape, x, 1, 0);
    cr_assert_not_null(y);
    expect_values("y", y, (double[]){1000.6931471805599, -INFINITY, INFINITY, 0}, 4, 1e-12);
    tg_tensor_free(x);
    tg_tape_reset(tape);
    tg_tensor *z = leaf(TG_SHAPE(3), (double[]){1, 2, 3});
    y = tg_logsumexp(tape, z, 0, 1);
    backward_sum(y);
    expect_values("y", y, (double[]){3.40760596444438}, 1, 1e-14);
    const double s = exp(1.0) + exp(2.0) + exp(3.0); /* the softmax */
    expect_values("dz", tg_tensor_grad(z), (double[]){exp(1.0) / s, exp(2.0) / s, exp(3.0) / s}, 3,
                  1e-15);
    tg_tensor_free(z);
    tg_tape_reset(tape);
    tg_tensor *e = tg_tensor_new(TG_F64, TG_SHAPE(2, 0));
    y = tg_logsumexp(tape, e, 1, 0); /* an empty sum: log 0 */
    cr_assert_not_null(y, "%s", tg_tape_errmsg(tape));
    expect_values("empty", y, (double[]){-INFINITY, -INFINITY}, 2, 0);
    tg_tensor_free(e);
}

Test(seqops, var_and_std_values) {
    tg_tensor *x = leaf(TG_SHAPE(2, 4), (double[]){1, 2, 3, 4, 2, 2, 2, 2});
    tg_tensor *v1 = tg_var(tape, x, 1, 1, 0), *v0 = tg_var(tape, x, 1, 0, 0);
    tg_tensor *s1 = tg_std(tape, x, -1, 1, 1);
    cr_assert(v1 && v0 && s1, "%s", tg_tape_errmsg(tape));
    expect_values("var c=1", v1, (double[]){5.0 / 3, 0}, 2, 1e-15);
    expect_values("var c=0", v0, (double[]){1.25, 0}, 2, 1e-15);
    expect_values("std c=1", s1, (double[]){sqrt(5.0 / 3), 0}, 2, 1e-15);
    backward_sum(s1);
    /* row 0: (x - 2.5) / (3 std); row 1: std = 0, and PyTorch's std_backward gives 0 there */
    const double k = 1 / (3 * sqrt(5.0 / 3));
    expect_values("dx", tg_tensor_grad(x),
                  (double[]){-1.5 * k, -0.5 * k, 0.5 * k, 1.5 * k, 0, 0, 0, 0}, 8, 1e-15);
    tg_tensor_free(x);
}

/* n = correction: var and std are NaN (0 / 0), and so are their gradients (inf * 0). */
Test(seqops, var_of_one_element_unbiased_is_nan) {
    tg_tensor *x = leaf(TG_SHAPE(2, 1), (double[]){1, 2});
    tg_tensor *y = tg_var(tape, x, 1, 1, 0);
    backward_sum(y);
    expect_values("var", y, (double[]){NAN, NAN}, 2, 0);
    expect_values("dx", tg_tensor_grad(x), (double[]){NAN, NAN}, 2, 0);
    tg_tensor_free(x);
}

Test(seqops, flatten_shapes_as_torch) {
    tg_tensor *x = tg_tensor_new(TG_F64, TG_SHAPE(2, 3, 4, 5));
    struct {
        int start, end, rank;
        int64_t shape[4];
    } want[] = {{0, -1, 1, {120}},
                {1, 2, 3, {2, 12, 5}},
                {-2, -1, 3, {2, 3, 20}},
                {2, 2, 4, {2, 3, 4, 5}},
                {0, 0, 4, {2, 3, 4, 5}}};
    for (size_t k = 0; k < sizeof want / sizeof want[0]; k++) {
        tg_tensor *y = tg_flatten(tape, x, want[k].start, want[k].end);
        cr_assert_not_null(y, "%s", tg_tape_errmsg(tape));
        cr_expect_eq(tg_tensor_rank(y), want[k].rank, "case %zu", k);
        for (int i = 0; i < want[k].rank; i++)
            cr_expect_eq(tg_tensor_shape(y)[i], want[k].shape[i], "case %zu axis %d", k, i);
    }
    tg_tensor *s = tg_tensor_new(TG_F64, 0, NULL);
    tg_tensor *y = tg_flatten(tape, s, 0, -1); /* a scalar becomes [1] */
    cr_assert_not_null(y, "%s", tg_tape_errmsg(tape));
    cr_expect_eq(tg_tensor_rank(y), 1);
    cr_expect_eq(tg_tensor_shape(y)[0], 1);
    tg_tensor_free(s);
    tg_tensor_free(x);
}

/* float32 on more elements than TG_PAR_MIN_ELEMS, on 1 and 2 threads: the same bits for both
 * thread counts, and within float32 rounding of float64. */
typedef tg_tensor *(*unary_fn)(tg_tape *, tg_tensor *);
static tg_tensor *u_leaky(tg_tape *t, tg_tensor *x) { return tg_leaky_relu(t, x, 0.01); }
static tg_tensor *u_gelu(tg_tape *t, tg_tensor *x) { return tg_gelu(t, x, 0); }
static tg_tensor *u_gelu_tanh(tg_tape *t, tg_tensor *x) { return tg_gelu(t, x, 1); }
static tg_tensor *u_silu(tg_tape *t, tg_tensor *x) { return tg_silu(t, x); }
static tg_tensor *u_softplus(tg_tape *t, tg_tensor *x) { return tg_softplus(t, x, 1, 20); }
static tg_tensor *u_elu(tg_tape *t, tg_tensor *x) { return tg_elu(t, x, 1); }
static tg_tensor *u_clamp(tg_tape *t, tg_tensor *x) { return tg_clamp(t, x, -1, 2); }
static tg_tensor *u_pow(tg_tape *t, tg_tensor *x) { return tg_pow_scalar(t, x, 2); }

static void run_f32(unary_fn f, tg_tensor *x, float *y, float *g) {
    tg_tape *t = tg_tape_new();
    tg_tensor_zero_grad(x);
    tg_tensor *out = f(t, x);
    cr_assert_not_null(out, "%s", tg_tape_errmsg(t));
    cr_assert_eq(tg_backward(t, tg_sum(t, out)), TG_OK, "%s", tg_tape_errmsg(t));
    memcpy(y, tg_tensor_cdata(out), sizeof(float) * (size_t)tg_tensor_numel(x));
    memcpy(g, tg_tensor_cdata(tg_tensor_grad(x)), sizeof(float) * (size_t)tg_tensor_numel(x));
    tg_tape_free(t);
}

Test(seqops, float32_threads_match) {
    enum { N = 150000 };
    const unary_fn fns[] = {u_leaky,    u_gelu, u_gelu_tanh, u_silu,
                            u_softplus, u_elu,  u_clamp,     u_pow};
    tg_rng rng;
    tg_rng_seed(&rng, 9);
    tg_tensor *x32 = tg_tensor_rand(TG_F32, TG_SHAPE(N), -4, 4, &rng);
    tg_tensor *x64 = tg_tensor_clone(x32, TG_F64);
    tg_tensor_set_requires_grad(x32, 1);
    tg_tensor_set_requires_grad(x64, 1);
    float *y1 = malloc(sizeof(float) * N), *g1 = malloc(sizeof(float) * N);
    float *y2 = malloc(sizeof(float) * N), *g2 = malloc(sizeof(float) * N);
    const int threads = tg_get_num_threads();
    for (size_t k = 0; k < sizeof fns / sizeof fns[0]; k++) {
        tg_set_num_threads(1);
        run_f32(fns[k], x32, y1, g1);
        tg_set_num_threads(2);
        run_f32(fns[k], x32, y2, g2);
        cr_expect(memcmp(y1, y2, sizeof(float) * N) == 0, "op %zu: y differs across threads", k);
        cr_expect(memcmp(g1, g2, sizeof(float) * N) == 0, "op %zu: dx differs across threads", k);
        tg_tape *t = tg_tape_new();
        tg_tensor_zero_grad(x64);
        tg_tensor *y64 = fns[k](t, x64);
        cr_assert_eq(tg_backward(t, tg_sum(t, y64)), TG_OK);
        const double *yd = tg_tensor_cdata(y64), *gd = tg_tensor_cdata(tg_tensor_grad(x64));
        int bad = 0;
        for (int i = 0; i < N && bad < 3; i++) {
            const bool ok = fabs(y1[i] - yd[i]) <= 1e-6 * (1 + fabs(yd[i])) &&
                            fabs(g1[i] - gd[i]) <= 1e-5 * (1 + fabs(gd[i]));
            if (!ok) {
                cr_expect(ok, "op %zu element %d (x = %g): f32 %g %g, f64 %g %g", k, i,
                          tg_tensor_get(x64, i), y1[i], g1[i], yd[i], gd[i]);
                bad++;
            }
        }
        tg_tape_free(t);
    }
    tg_set_num_threads(threads);
    free(y1);
    free(g1);
    free(y2);
    free(g2);
    tg_tensor_free(x32);
    tg_tensor_free(x64);
}
