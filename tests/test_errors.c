/* Caller mistakes never abort: the failing call returns NULL, the tape keeps the first error with
 * the caller's file and line, the op and the shapes, and later calls do no work. */
#include "core/engine.h"

#include <criterion/criterion.h>
#include <math.h>

static tg_tape *tape;
static void setup(void) { tape = tg_tape_new(); }
static void teardown(void) { tg_tape_free(tape); }
TestSuite(errors, .init = setup, .fini = teardown);

/* Expects the tape's message to be "test_errors.c:<line>: <rest>". */
static void expect_msg(int line, const char *rest) {
    char want[512];
    snprintf(want, sizeof want, "test_errors.c:%d: %s", line, rest);
    cr_expect_str_eq(tg_tape_errmsg(tape), want);
}

Test(errors, matmul_inner_dimensions) {
    tg_tensor *X = tg_tensor_new(TG_F32, TG_SHAPE(200, 2));
    tg_tensor *W = tg_tensor_new(TG_F32, TG_SHAPE(4, 2));
    int line = __LINE__ + 1;
    tg_tensor *y = tg_matmul(tape, X, W);
    cr_expect_null(y);
    cr_expect_eq(tg_tape_status(tape), TG_ERR_SHAPE);
    expect_msg(line, "tg_matmul: inner dimensions differ: [200,2] x [4,2]");
    tg_tensor_free(X);
    tg_tensor_free(W);
}

Test(errors, matmul_bt_inner_dimensions) {
    tg_tensor *X = tg_tensor_new(TG_F32, TG_SHAPE(200, 2));
    tg_tensor *W = tg_tensor_new(TG_F32, TG_SHAPE(4, 3));
    int line = __LINE__ + 1;
    cr_expect_null(tg_matmul_bt(tape, X, W));
    expect_msg(line, "tg_matmul_bt: inner dimensions differ: [200,2] x [4,3]^T");
    tg_tensor_free(X);
    tg_tensor_free(W);
}

Test(errors, matmul_needs_2d) {
    tg_tensor *a = tg_tensor_new(TG_F64, TG_SHAPE(3));
    tg_tensor *b = tg_tensor_new(TG_F64, TG_SHAPE(3, 2));
    int line = __LINE__ + 1;
    cr_expect_null(tg_matmul(tape, a, b));
    expect_msg(line, "tg_matmul: needs two 2-D tensors, got [3] x [3,2]");
    tg_tensor_free(a);
    tg_tensor_free(b);
}

Test(errors, broadcast_mismatch) {
    tg_tensor *a = tg_tensor_new(TG_F32, TG_SHAPE(200, 4));
    tg_tensor *b = tg_tensor_new(TG_F32, TG_SHAPE(2));
    int line = __LINE__ + 1;
    cr_expect_null(tg_add(tape, a, b));
    expect_msg(line, "tg_add: shapes [200,4] and [2] do not broadcast (axis 1: 4 vs 2)");
    tg_tensor_free(a);
    tg_tensor_free(b);
}

Test(errors, dtype_mismatch) {
    tg_tensor *a = tg_tensor_new(TG_F32, TG_SHAPE(2, 2));
    tg_tensor *b = tg_tensor_new(TG_F64, TG_SHAPE(2, 2));
    int line = __LINE__ + 1;
    cr_expect_null(tg_mul(tape, a, b));
    cr_expect_eq(tg_tape_status(tape), TG_ERR_DTYPE);
    expect_msg(line, "tg_mul: dtypes differ: input 1 is f32, input 2 is f64");
    tg_tensor_free(a);
    tg_tensor_free(b);
}

Test(errors, integer_input_to_float_op) {
    tg_tensor *a = tg_tensor_new(TG_I32, TG_SHAPE(2));
    int line = __LINE__ + 1;
    cr_expect_null(tg_tanh(tape, a));
    expect_msg(line, "tg_tanh: input 1 has dtype i32; this op takes f32 or f64");
    tg_tensor_free(a);
}

Test(errors, null_input) {
    int line = __LINE__ + 1;
    cr_expect_null(tg_relu(tape, NULL));
    cr_expect_eq(tg_tape_status(tape), TG_ERR_NULL);
    expect_msg(line, "tg_relu: input 1 is NULL");
}

Test(errors, null_tape_does_not_crash) {
    tg_tensor *a = tg_tensor_new(TG_F32, TG_SHAPE(2));
    cr_expect_null(tg_exp(NULL, a));
    cr_expect(strstr(tg_last_errmsg(), "tg_exp: tape is NULL") != NULL, "got: %s",
              tg_last_errmsg());
    cr_expect_eq(tg_backward(NULL, a), TG_ERR_NULL);
    tg_tensor_free(a);
}

Test(errors, class_index_out_of_range) {
    tg_tensor *z = tg_tensor_new(TG_F32, TG_SHAPE(3, 2));
    tg_tensor *y = tg_tensor_from(TG_I32, TG_SHAPE(3), (int32_t[]){0, 2, 1});
    int line = __LINE__ + 1;
    cr_expect_null(tg_softmax_cross_entropy(tape, z, y));
    cr_expect_eq(tg_tape_status(tape), TG_ERR_VALUE);
    expect_msg(line, "tg_softmax_cross_entropy: class index 2 in row 1 is out of range 0..1");
    tg_tensor_free(z);
    tg_tensor_free(y);
}

Test(errors, targets_wrong_shape) {
    tg_tensor *z = tg_tensor_new(TG_F32, TG_SHAPE(3, 2));
    tg_tensor *y = tg_tensor_new(TG_I32, TG_SHAPE(4));
    tg_tensor *p = tg_tensor_new(TG_F32, TG_SHAPE(3, 3));
    int line = __LINE__ + 1;
    cr_expect_null(tg_softmax_cross_entropy(tape, z, y));
    expect_msg(line, "tg_softmax_cross_entropy: class-index targets must be [3] for logits [3,2], "
                     "got [4]");
    tg_tape_reset(tape);
    line = __LINE__ + 1;
    cr_expect_null(tg_softmax_cross_entropy(tape, z, p));
    expect_msg(line, "tg_softmax_cross_entropy: probability targets must have the logits' shape "
                     "[3,2], got [3,3]");
    tg_tensor_free(z);
    tg_tensor_free(y);
    tg_tensor_free(p);
}

Test(errors, reshape_and_axis) {
    tg_tensor *x = tg_tensor_new(TG_F64, TG_SHAPE(2, 3));
    int line = __LINE__ + 1;
    cr_expect_null(tg_reshape(tape, x, TG_SHAPE(4, 2)));
    expect_msg(line, "tg_reshape: [2,3] has 6 elements, [4,2] has 8");
    tg_tape_reset(tape);
    line = __LINE__ + 1;
    cr_expect_null(tg_sum_axis(tape, x, 2, 0));
    cr_expect_eq(tg_tape_status(tape), TG_ERR_VALUE);
    expect_msg(line, "tg_sum_axis: axis 2 is out of range for [2,3]");
    tg_tensor_free(x);
}

Test(errors, mse_shapes_and_softmax_scalar) {
    tg_tensor *a = tg_tensor_new(TG_F64, TG_SHAPE(2, 3));
    tg_tensor *b = tg_tensor_new(TG_F64, TG_SHAPE(3, 2));
    tg_tensor *s = tg_tensor_new(TG_F64, 0, NULL);
    int line = __LINE__ + 1;
    cr_expect_null(tg_mse(tape, a, b));
    expect_msg(line, "tg_mse: shapes differ: [2,3] and [3,2]");
    tg_tape_reset(tape);
    line = __LINE__ + 1;
    cr_expect_null(tg_softmax(tape, s));
    expect_msg(line, "tg_softmax: needs at least one axis (works along the last), got a scalar");
    tg_tensor_free(a);
    tg_tensor_free(b);
    tg_tensor_free(s);
}

/* A model written as nested calls is checked once, at the end: the first error wins, later calls
 * return NULL without work, and tg_backward reports it. */
Test(errors, first_error_wins_and_backward_reports_it) {
    tg_tensor *X = tg_tensor_new(TG_F32, TG_SHAPE(200, 2));
    tg_tensor *W = tg_tensor_new(TG_F32, TG_SHAPE(4, 3));
    tg_tensor *b = tg_tensor_new(TG_F32, TG_SHAPE(4));
    tg_tensor_set_requires_grad(W, 1);
    int line = __LINE__ + 1;
    tg_tensor *h = tg_tanh(tape, tg_add(tape, tg_matmul(tape, X, tg_transpose(tape, W)), b));
    cr_expect_null(h);
    cr_expect_eq(tg_tape_size(tape), 1, "only the transpose was recorded");
    cr_expect_eq(tg_backward(tape, h), TG_ERR_SHAPE);
    expect_msg(line, "tg_matmul: inner dimensions differ: [200,2] x [3,4]");
    tg_tape_reset(tape);
    cr_expect_eq(tg_tape_status(tape), TG_OK, "reset clears the error");
    cr_expect_str_eq(tg_tape_errmsg(tape), "");
    tg_tensor_free(X);
    tg_tensor_free(W);
    tg_tensor_free(b);
}

Test(errors, backward_of_non_scalar_needs_seed) {
    tg_tensor *x = tg_tensor_ones(TG_F64, TG_SHAPE(2, 2));
    tg_tensor_set_requires_grad(x, 1);
    tg_tensor *y = tg_tanh(tape, x);
    cr_expect_eq(tg_backward(tape, y), TG_ERR_SHAPE);
    cr_expect_str_eq(tg_tape_errmsg(tape), "tg_backward: output has shape [2,2], not one element; "
                                           "pass a seed gradient with tg_backward_seed");
    tg_tensor_free(x);
}

Test(errors, backward_seed_shape_and_leaf_output) {
    tg_tensor *x = tg_tensor_ones(TG_F64, TG_SHAPE(2, 2));
    tg_tensor *seed = tg_tensor_ones(TG_F64, TG_SHAPE(4));
    tg_tensor_set_requires_grad(x, 1);
    tg_tensor *y = tg_exp(tape, x);
    cr_expect_eq(tg_backward_seed(tape, y, seed), TG_ERR_SHAPE);
    cr_expect_str_eq(tg_tape_errmsg(tape), "tg_backward: seed is f64 [4] but output is f64 [2,2]");
    tg_tape_reset(tape);
    cr_expect_eq(tg_backward(tape, x), TG_ERR_STATE);
    cr_expect_str_eq(tg_tape_errmsg(tape),
                     "tg_backward: output is a leaf, not a tensor recorded on this tape");
    tg_tensor_free(x);
    tg_tensor_free(seed);
}

Test(errors, tensor_from_another_tape) {
    tg_tape *other = tg_tape_new();
    tg_tensor *x = tg_tensor_ones(TG_F64, TG_SHAPE(2));
    tg_tensor *y = tg_exp(other, x);
    int line = __LINE__ + 1;
    cr_expect_null(tg_tanh(tape, y));
    expect_msg(line, "tg_tanh: input 1 was recorded on another tape");
    tg_tape_free(other);
    tg_tensor_free(x);
}

Test(errors, custom_op_errors) {
    tg_tensor *x = tg_tensor_ones(TG_F64, TG_SHAPE(2));
    tg_custom_op broken = {"broken", NULL, NULL};
    int line = __LINE__ + 1;
    cr_expect_null(tg_custom(tape, &broken, NULL, &x, 1, TG_SHAPE(2)));
    expect_msg(line, "tg_custom(broken): op has no forward or no backward function");
    tg_tensor_free(x);
}

Test(errors, constructors_report_bad_arguments) {
    cr_expect_null(tg_tensor_new(TG_F32, 9, (int64_t[]){1, 1, 1, 1, 1, 1, 1, 1, 1}));
    cr_expect_str_eq(tg_last_errmsg(), "tg_tensor_new: rank 9 is outside 0..8");
    cr_expect_null(tg_tensor_new(TG_F32, TG_SHAPE(2, -3)));
    cr_expect_str_eq(tg_last_errmsg(), "tg_tensor_new: axis 1 has negative size -3");
    cr_expect_null(tg_tensor_from(TG_F64, TG_SHAPE(2), NULL));
    cr_expect_str_eq(tg_last_errmsg(), "tg_tensor_from: data is NULL");
    cr_expect_null(tg_tensor_rand(TG_F64, TG_SHAPE(2), 0, 1, NULL));
    cr_expect_str_eq(tg_last_errmsg(), "tg_tensor_rand: rng is NULL");
    tg_tensor *i = tg_tensor_new(TG_I32, TG_SHAPE(2));
    cr_expect_eq(tg_tensor_set_requires_grad(i, 1), TG_ERR_DTYPE);
    cr_expect_eq(tg_tensor_set(i, 2, 1.0), TG_ERR_VALUE);
    cr_expect_str_eq(tg_last_errmsg(), "tg_tensor_set: index 2 is outside 0..1");
    tg_tensor_free(i);
    tg_tensor_free(NULL); /* harmless */
    tg_tape_free(NULL);
}

Test(errors, tape_tensor_cannot_be_freed_or_marked) {
    tg_tensor *x = tg_tensor_ones(TG_F64, TG_SHAPE(2));
    tg_tensor *y = tg_exp(tape, x);
    tg_tensor_free(y); /* ignored: the tape owns it */
    cr_expect_eq(tg_tensor_set_requires_grad(y, 1), TG_ERR_STATE);
    cr_expect_float_eq(tg_tensor_get(y, 0), exp(1.0), 1e-12);
    tg_tensor_free(x);
}
