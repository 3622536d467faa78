/* Gradient tests: every op's backward against central differences in float64, over several
 * shapes, size-1 and broadcast axes included. */
#include "fd.h"
#include "op_catalog.h"

#include <criterion/criterion.h>

/* The context of fd_check's callback: one op application (tests/op_catalog.h). */
typedef test_op_call build_ctx;

static tg_tensor *build(tg_tape *t, tg_tensor *const *in, void *vctx) {
    return test_op_apply(t, vctx, in);
}

typedef struct {
    int rank;
    int64_t shape[4];
} shp;

#define S0()                                                                                       \
    {                                                                                              \
        0, { 0 }                                                                                   \
    }
#define S(...)                                                                                     \
    {                                                                                              \
        (int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)), { __VA_ARGS__ }                 \
    }

/* Broadcast pairs: equal shapes, a row vector, a column, both broadcast, rank 0, rank 4. */
static const shp bcast_pairs[][2] = {
    {S(3, 4), S(3, 4)},    {S(3, 4), S(4)}, {S(3, 4), S(3, 1)}, {S(1, 4), S(3, 1)},
    {S(2, 3, 4), S(3, 1)}, {S0(), S(2, 3)}, {S(1), S(1)},       {S(2, 1, 3, 1), S(4, 1, 5)},
};

static const shp unary_shapes[] = {S(5), S(3, 4), S(1), S0(), S(2, 3, 1, 2)};

static void check_binary(test_op op, const char *name, double blo) {
    tg_rng rng;
    tg_rng_seed(&rng, 1);
    build_ctx c = {.op = op};
    for (size_t k = 0; k < sizeof bcast_pairs / sizeof bcast_pairs[0]; k++) {
        for (int swap = 0; swap < 2; swap++) {
            const shp *sa = &bcast_pairs[k][swap], *sb = &bcast_pairs[k][!swap];
            tg_tensor *in[2] = {fd_param(&rng, sa->rank, sa->shape, -1, 1),
                                blo > 0 ? fd_param_away_from_zero(&rng, sb->rank, sb->shape, 2)
                                        : fd_param(&rng, sb->rank, sb->shape, -1, 1)};
            char what[64];
            snprintf(what, sizeof what, "%s pair %zu%s", name, k, swap ? " swapped" : "");
            fd_check(what, build, in, 2, &c, NULL);
            tg_tensor_free(in[0]);
            tg_tensor_free(in[1]);
        }
    }
}

Test(grad, add) { check_binary(ADD, "add", 0); }
Test(grad, sub) { check_binary(SUB, "sub", 0); }
Test(grad, mul) { check_binary(MUL, "mul", 0); }
Test(grad, div) { check_binary(DIV, "div", 0.5); }

/* Same input on both sides: the two contributions must add up. */
Test(grad, binary_same_input_twice) {
    tg_rng rng;
    tg_rng_seed(&rng, 2);
    const test_op ops[] = {ADD, SUB, MUL};
    for (size_t k = 0; k < 3; k++) {
        build_ctx c = {.op = ops[k]};
        tg_tensor *x = fd_param(&rng, TG_SHAPE(2, 3), -1, 1);
        tg_tensor *in[2] = {x, x};
        fd_check("x op x", build, in, 2, &c, NULL);
        tg_tensor_free(x);
    }
}

static void check_unary(test_op op, const char *name, double lo, double hi, bool away_from_zero) {
    tg_rng rng;
    tg_rng_seed(&rng, 3);
    build_ctx c = {.op = op};
    for (size_t k = 0; k < sizeof unary_shapes / sizeof unary_shapes[0]; k++) {
        const shp *s = &unary_shapes[k];
        tg_tensor *x = away_from_zero ? fd_param_away_from_zero(&rng, s->rank, s->shape, hi)
                                      : fd_param(&rng, s->rank, s->shape, lo, hi);
        char what[64];
        snprintf(what, sizeof what, "%s shape %zu", name, k);
        fd_check(what, build, &x, 1, &c, NULL);
        tg_tensor_free(x);
    }
}

Test(grad, neg) { check_unary(NEG, "neg", -2, 2, false); }
Test(grad, scale) { check_unary(SCALE, "scale", -2, 2, false); }
Test(grad, add_scalar) { check_unary(ADD_SCALAR, "add_scalar", -2, 2, false); }
Test(grad, sum) { check_unary(SUM, "sum", -2, 2, false); }
Test(grad, mean) { check_unary(MEAN, "mean", -2, 2, false); }
Test(grad, exp) { check_unary(EXP, "exp", -3, 3, false); }
Test(grad, log) { check_unary(LOG, "log", 0.2, 5, false); }
Test(grad, tanh) { check_unary(TANH, "tanh", -3, 3, false); }
Test(grad, sigmoid) { check_unary(SIGMOID, "sigmoid", -6, 6, false); }
/* relu away from its kink; the kink itself is tested by value below. */
Test(grad, relu) { check_unary(RELU, "relu", 0, 2, true); }
Test(grad, custom_square) { check_unary(CUSTOM_SQUARE, "custom square", -2, 2, false); }

/* At x = 0 relu's derivative is undefined; tapegrad takes the subgradient 0 (as PyTorch does). */
Test(grad, relu_kink_is_zero) {
    tg_tensor *x = tg_tensor_from(TG_F64, TG_SHAPE(3), (double[]){-1, 0, 2});
    tg_tensor_set_requires_grad(x, 1);
    tg_tape *t = tg_tape_new();
    cr_assert_eq(tg_backward(t, tg_sum(t, tg_relu(t, x))), TG_OK);
    const double *g = tg_tensor_cdata(tg_tensor_grad(x));
    cr_expect_eq(g[0], 0.0);
    cr_expect_eq(g[1], 0.0);
    cr_expect_eq(g[2], 1.0);
    tg_tape_free(t);
    tg_tensor_free(x);
}

Test(grad, matmul) {
    tg_rng rng;
    tg_rng_seed(&rng, 4);
    const shp pairs[][2] = {
        {S(3, 4), S(4, 5)}, {S(1, 4), S(4, 1)}, {S(2, 1), S(1, 3)}, {S(4, 2), S(2, 4)}};
    build_ctx c = {.op = MATMUL};
    for (size_t k = 0; k < 4; k++) {
        tg_tensor *in[2] = {fd_param(&rng, pairs[k][0].rank, pairs[k][0].shape, -1, 1),
                            fd_param(&rng, pairs[k][1].rank, pairs[k][1].shape, -1, 1)};
        fd_check("matmul", build, in, 2, &c, NULL);
        tg_tensor_free(in[0]);
        tg_tensor_free(in[1]);
    }
}

Test(grad, matmul_bt) {
    tg_rng rng;
    tg_rng_seed(&rng, 12);
    const shp pairs[][2] = {
        {S(3, 4), S(5, 4)}, {S(1, 4), S(1, 4)}, {S(2, 1), S(3, 1)}, {S(4, 2), S(4, 2)}};
    build_ctx c = {.op = MATMUL_BT};
    for (size_t k = 0; k < 4; k++) {
        tg_tensor *in[2] = {fd_param(&rng, pairs[k][0].rank, pairs[k][0].shape, -1, 1),
                            fd_param(&rng, pairs[k][1].rank, pairs[k][1].shape, -1, 1)};
        fd_check("matmul_bt", build, in, 2, &c, NULL);
        tg_tensor_free(in[0]);
        tg_tensor_free(in[1]);
    }
}

Test(grad, transpose) {
    tg_rng rng;
    tg_rng_seed(&rng, 5);
    const shp shapes[] = {S(3, 4), S(1, 5), S(4, 1)};
    build_ctx c = {.op = TRANSPOSE};
    for (size_t k = 0; k < 3; k++) {
        tg_tensor *x = fd_param(&rng, shapes[k].rank, shapes[k].shape, -1, 1);
        fd_check("transpose", build, &x, 1, &c, NULL);
        tg_tensor_free(x);
    }
}

Test(grad, reshape) {
    tg_rng rng;
    tg_rng_seed(&rng, 6);
    tg_tensor *x = fd_param(&rng, TG_SHAPE(2, 6), -1, 1);
    build_ctx c1 = {.op = RESHAPE, .rank = 2, .shape = {3, 4}};
    build_ctx c2 = {.op = RESHAPE, .rank = 3, .shape = {3, -1, 2}};
    build_ctx c3 = {.op = RESHAPE, .rank = 1, .shape = {12}};
    fd_check("reshape [3,4]", build, &x, 1, &c1, NULL);
    fd_check("reshape [3,-1,2]", build, &x, 1, &c2, NULL);
    fd_check("reshape [12]", build, &x, 1, &c3, NULL);
    tg_tensor_free(x);
}

static void check_axis(test_op op, const char *name) {
    tg_rng rng;
    tg_rng_seed(&rng, 7);
    const shp shapes[] = {S(2, 3, 4), S(5), S(3, 1), S(2, 1, 2, 3)};
    for (size_t k = 0; k < 4; k++) {
        tg_tensor *x = fd_param(&rng, shapes[k].rank, shapes[k].shape, -1, 1);
        for (int axis = -1; axis < shapes[k].rank; axis++)
            for (int keep = 0; keep < 2; keep++) {
                build_ctx c = {.op = op, .axis = axis, .keepdims = keep};
                char what[64];
                snprintf(what, sizeof what, "%s shape %zu axis %d keepdims %d", name, k, axis,
                         keep);
                fd_check(what, build, &x, 1, &c, NULL);
            }
        tg_tensor_free(x);
    }
}

Test(grad, sum_axis) { check_axis(SUM_AXIS, "sum_axis"); }
Test(grad, mean_axis) { check_axis(MEAN_AXIS, "mean_axis"); }

static void check_rows(test_op op, const char *name) {
    tg_rng rng;
    tg_rng_seed(&rng, 8);
    const shp shapes[] = {S(3, 4), S(5), S(2, 3, 4), S(4, 1), S(1, 2)};
    build_ctx c = {.op = op};
    for (size_t k = 0; k < 5; k++) {
        tg_tensor *x = fd_param(&rng, shapes[k].rank, shapes[k].shape, -3, 3);
        fd_check(name, build, &x, 1, &c, NULL);
        tg_tensor_free(x);
    }
}

Test(grad, softmax) { check_rows(SOFTMAX, "softmax"); }
Test(grad, log_softmax) { check_rows(LOG_SOFTMAX, "log_softmax"); }

Test(grad, softmax_cross_entropy_class_indices) {
    tg_rng rng;
    tg_rng_seed(&rng, 9);
    build_ctx c = {.op = SCE};
    const int64_t sizes[][2] = {{4, 3}, {1, 2}, {6, 5}, {3, 1}};
    for (size_t k = 0; k < 4; k++) {
        const int64_t N = sizes[k][0], C = sizes[k][1];
        tg_tensor *z = fd_param(&rng, TG_SHAPE(N, C), -3, 3);
        tg_tensor *idx = tg_tensor_new(TG_I32, TG_SHAPE(N));
        for (int64_t n = 0; n < N; n++)
            tg_tensor_set(idx, n, (double)tg_rng_below(&rng, (uint64_t)C));
        tg_tensor *in[2] = {z, idx};
        fd_check("softmax_cross_entropy (indices)", build, in, 2, &c, NULL);
        tg_tensor_free(z);
        tg_tensor_free(idx);
    }
}

/* Probability targets, which also need a gradient here (soft labels that are learned). */
Test(grad, softmax_cross_entropy_probabilities) {
    tg_rng rng;
    tg_rng_seed(&rng, 10);
    build_ctx c = {.op = SCE};
    tg_tensor *z = fd_param(&rng, TG_SHAPE(4, 3), -3, 3);
    tg_tensor *p = fd_param(&rng, TG_SHAPE(4, 3), 0.05, 1);
    double *pp = tg_tensor_data(p);
    for (int n = 0; n < 4; n++) { /* rows sum to 1 */
        double s = pp[3 * n] + pp[3 * n + 1] + pp[3 * n + 2];
        for (int k = 0; k < 3; k++)
            pp[3 * n + k] /= s;
    }
    tg_tensor *in[2] = {z, p};
    fd_check("softmax_cross_entropy (probabilities)", build, in, 2, &c, NULL);
    tg_tensor_free(z);
    tg_tensor_free(p);
}

Test(grad, mse) {
    tg_rng rng;
    tg_rng_seed(&rng, 11);
    build_ctx c = {.op = MSE};
    const shp shapes[] = {S(3, 4), S(1), S0(), S(2, 2, 2)};
    for (size_t k = 0; k < 4; k++) {
        tg_tensor *in[2] = {fd_param(&rng, shapes[k].rank, shapes[k].shape, -1, 1),
                            fd_param(&rng, shapes[k].rank, shapes[k].shape, -1, 1)};
        fd_check("mse", build, in, 2, &c, NULL);
        tg_tensor_free(in[0]);
        tg_tensor_free(in[1]);
    }
}
