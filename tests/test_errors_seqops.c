/* Caller mistakes with the seqops ops (issues 14, 15): each fails with NULL and a message naming
 * the caller's line, the op, the arguments and the shapes. */
#include "tapegrad.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>

static tg_tape *tape;
static void setup(void) { tape = tg_tape_new(); }
static void teardown(void) { tg_tape_free(tape); }
TestSuite(errors_seqops, .init = setup, .fini = teardown);

/* Expects the tape's message to be "test_errors_seqops.c:<line>: <rest>", then resets the tape. */
static void expect_msg(int line, const char *rest) {
    char want[512];
    snprintf(want, sizeof want, "test_errors_seqops.c:%d: %s", line, rest);
    cr_expect_str_eq(tg_tape_errmsg(tape), want);
    tg_tape_reset(tape);
}

Test(errors_seqops, gelu_approximate) {
    tg_tensor *x = tg_tensor_new(TG_F32, TG_SHAPE(2));
    int line = __LINE__ + 1;
    cr_expect_null(tg_gelu(tape, x, 2));
    cr_expect_eq(tg_tape_status(tape), TG_ERR_VALUE);
    expect_msg(line, "tg_gelu: approximate is 2; use 0 (the exact erf form) or 1 (the tanh form)");
    tg_tensor_free(x);
}

Test(errors_seqops, softplus_beta_and_threshold) {
    tg_tensor *x = tg_tensor_new(TG_F64, TG_SHAPE(2));
    int line = __LINE__ + 1;
    cr_expect_null(tg_softplus(tape, x, 0, 20));
    expect_msg(line, "tg_softplus: beta is 0 and threshold 20; beta must be finite and nonzero, "
                     "threshold a number");
    line = __LINE__ + 1;
    cr_expect_null(tg_softplus(tape, x, 1, NAN));
    expect_msg(line, "tg_softplus: beta is 1 and threshold nan; beta must be finite and nonzero, "
                     "threshold a number");
    tg_tensor_free(x);
}

Test(errors_seqops, clamp_nan_bound) {
    tg_tensor *x = tg_tensor_new(TG_F64, TG_SHAPE(2));
    int line = __LINE__ + 1;
    cr_expect_null(tg_clamp(tape, x, NAN, 1));
    cr_expect_eq(tg_tape_status(tape), TG_ERR_VALUE);
    expect_msg(line, "tg_clamp: min nan and max 1: a bound is NaN (use -INFINITY or INFINITY for "
                     "none)");
    tg_tensor_free(x);
}

Test(errors_seqops, binary_shapes_and_dtypes) {
    tg_tensor *a = tg_tensor_new(TG_F32, TG_SHAPE(2, 3));
    tg_tensor *b = tg_tensor_new(TG_F32, TG_SHAPE(4));
    tg_tensor *c = tg_tensor_new(TG_F64, TG_SHAPE(2, 3));
    int line = __LINE__ + 1;
    cr_expect_null(tg_pow(tape, a, b));
    cr_expect_eq(tg_tape_status(tape), TG_ERR_SHAPE);
    expect_msg(line, "tg_pow: shapes [2,3] and [4] do not broadcast (axis 1: 3 vs 4)");
    line = __LINE__ + 1;
    cr_expect_null(tg_maximum(tape, b, a));
    expect_msg(line, "tg_maximum: shapes [4] and [2,3] do not broadcast (axis 1: 4 vs 3)");
    line = __LINE__ + 1;
    cr_expect_null(tg_minimum(tape, a, c));
    cr_expect_eq(tg_tape_status(tape), TG_ERR_DTYPE);
    expect_msg(line, "tg_minimum: dtypes differ: input 1 is f32, input 2 is f64");
    tg_tensor_free(a);
    tg_tensor_free(b);
    tg_tensor_free(c);
}

Test(errors_seqops, flatten_dims) {
    tg_tensor *x = tg_tensor_new(TG_F64, TG_SHAPE(2, 3, 4));
    tg_tensor *s = tg_tensor_new(TG_F64, 0, NULL);
    int line = __LINE__ + 1;
    cr_expect_null(tg_flatten(tape, x, 0, 3));
    cr_expect_eq(tg_tape_status(tape), TG_ERR_VALUE);
    expect_msg(line, "tg_flatten: start_dim 0 or end_dim 3 is out of range for [2,3,4]");
    line = __LINE__ + 1;
    cr_expect_null(tg_flatten(tape, x, -4, -1));
    expect_msg(line, "tg_flatten: start_dim -4 or end_dim -1 is out of range for [2,3,4]");
    line = __LINE__ + 1;
    cr_expect_null(tg_flatten(tape, x, 2, 1));
    expect_msg(line, "tg_flatten: start_dim 2 comes after end_dim 1 for [2,3,4]");
    line = __LINE__ + 1;
    cr_expect_null(tg_flatten(tape, s, 1, 1));
    expect_msg(line, "tg_flatten: start_dim 1 or end_dim 1 is out of range for []");
    tg_tensor_free(x);
    tg_tensor_free(s);
}

Test(errors_seqops, reductions_axis) {
    tg_tensor *x = tg_tensor_new(TG_F64, TG_SHAPE(2, 3));
    tg_tensor *s = tg_tensor_new(TG_F64, 0, NULL);
    int line = __LINE__ + 1;
    cr_expect_null(tg_logsumexp(tape, x, 2, 0));
    cr_expect_eq(tg_tape_status(tape), TG_ERR_VALUE);
    expect_msg(line, "tg_logsumexp: axis 2 is out of range for [2,3]");
    line = __LINE__ + 1;
    cr_expect_null(tg_var(tape, x, -3, 1, 0));
    expect_msg(line, "tg_var: axis -3 is out of range for [2,3]");
    line = __LINE__ + 1;
    cr_expect_null(tg_max_axis(tape, s, 1, 0));
    expect_msg(line, "tg_max_axis: axis 1 is out of range for [] (a scalar takes axis 0 or -1)");
    line = __LINE__ + 1;
    cr_expect_null(tg_argmax(tape, x, 5, 1));
    expect_msg(line, "tg_argmax: axis 5 is out of range for [2,3]");
    tg_tensor_free(x);
    tg_tensor_free(s);
}

/* As PyTorch: no max, min or argmax of an empty axis (logsumexp and var of one are defined). */
Test(errors_seqops, extremum_of_an_empty_axis) {
    tg_tensor *x = tg_tensor_new(TG_F64, TG_SHAPE(2, 0));
    int line = __LINE__ + 1;
    cr_expect_null(tg_max_axis(tape, x, 1, 0));
    cr_expect_eq(tg_tape_status(tape), TG_ERR_SHAPE);
    expect_msg(line, "tg_max_axis: axis 1 of [2,0] is empty: no maximum");
    line = __LINE__ + 1;
    cr_expect_null(tg_min_axis(tape, x, -1, 1));
    expect_msg(line, "tg_min_axis: axis 1 of [2,0] is empty: no minimum");
    line = __LINE__ + 1;
    cr_expect_null(tg_argmax(tape, x, 1, 0));
    expect_msg(line, "tg_argmax: axis 1 of [2,0] is empty: no maximum");
    cr_expect_not_null(tg_max_axis(tape, x, 0, 0)); /* reducing the other axis: [0], fine */
    cr_expect_not_null(tg_logsumexp(tape, x, 1, 0));
    cr_expect_not_null(tg_var(tape, x, 1, 0, 0));
    cr_expect_eq(tg_tape_status(tape), TG_OK, "%s", tg_tape_errmsg(tape));
    tg_tensor_free(x);
}

Test(errors_seqops, var_std_correction) {
    tg_tensor *x = tg_tensor_new(TG_F64, TG_SHAPE(3));
    int line = __LINE__ + 1;
    cr_expect_null(tg_var(tape, x, 0, -1, 0));
    cr_expect_eq(tg_tape_status(tape), TG_ERR_VALUE);
    expect_msg(line, "tg_var: correction is -1; it must be finite and >= 0 (0 biased, 1 unbiased)");
    line = __LINE__ + 1;
    cr_expect_null(tg_std(tape, x, 0, INFINITY, 0));
    expect_msg(line,
               "tg_std: correction is inf; it must be finite and >= 0 (0 biased, 1 unbiased)");
    tg_tensor_free(x);
}

/* argmax's integer output feeds no float op and starts no backward pass. */
Test(errors_seqops, argmax_output_is_an_integer) {
    tg_tensor *x = tg_tensor_new(TG_F64, TG_SHAPE(2, 3));
    tg_tensor_set_requires_grad(x, 1);
    tg_tensor *i = tg_argmax(tape, x, 1, 0);
    cr_assert_not_null(i);
    int line = __LINE__ + 1;
    cr_expect_null(tg_exp(tape, i));
    expect_msg(line, "tg_exp: input 1 has dtype i32; this op takes f32 or f64");
    tg_tensor *one = tg_argmax(tape, tg_sum_axis(tape, x, 1, 0), 0, 0);
    cr_assert_not_null(one, "%s", tg_tape_errmsg(tape));
    cr_expect_eq(tg_backward(tape, one), TG_ERR_DTYPE);
    cr_expect_str_eq(tg_tape_errmsg(tape), "tg_backward: output has dtype i32: no gradient");
    tg_tensor_free(x);
}
