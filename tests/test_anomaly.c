/* Anomaly mode: the first op producing a NaN or an Inf, forward or backward, is reported by op,
 * file:line, tape index, names and input shapes, and the tape stops with TG_ERR_NONFINITE.
 * Plus: softmax, log_softmax and softmax cross-entropy stay finite for extreme and equal logits. */
#include "tapegrad.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>

static tg_tape *anomaly_tape(void) {
    tg_tape *t = tg_tape_new();
    cr_assert_not_null(t);
    cr_assert_eq(tg_tape_set_anomaly(t, 1), TG_OK);
    cr_assert_eq(tg_tape_anomaly(t), 1);
    return t;
}

static void expect_msg(const tg_tape *t, int line, const char *rest) {
    char msg[1024];
    snprintf(msg, sizeof msg, "test_anomaly.c:%d: %s", line, rest);
    cr_expect_eq(tg_tape_status(t), TG_ERR_NONFINITE, "%s", tg_tape_errmsg(t));
    cr_expect_str_eq(tg_tape_errmsg(t), msg);
}

Test(anomaly, log_of_zero) {
    tg_tape *t = anomaly_tape();
    tg_tensor *x = tg_tensor_from(TG_F64, TG_SHAPE(3), (const double[]){1, 0, 2});
    tg_tensor_set_name(x, "x");
    tg_tensor *e = tg_exp(t, x); /* fine: tape index 0 */
    cr_assert_not_null(e);
    int line = __LINE__ + 1;
    tg_tensor *y = tg_log(t, x);
    cr_expect_null(y);
    expect_msg(t, line,
               "tg_log: anomaly: forward produced -Inf at element 1 of the output [3] (tape "
               "index 1); inputs: \"x\" [3]");
    /* The tape stays failed: later calls do nothing and backward reports the error. */
    cr_expect_null(tg_sum(t, e));
    cr_expect_eq(tg_backward(t, e), TG_ERR_NONFINITE);
    cr_expect_eq(tg_tape_size(t), 1);
    tg_tensor_free(x);
    tg_tape_free(t);
}

Test(anomaly, exp_overflow_f32_and_f64) {
    tg_tape *t = anomaly_tape();
    tg_tensor *x = tg_tensor_from(TG_F32, TG_SHAPE(2, 2), (const float[]){0, 1, 88, 89});
    int line = __LINE__ + 1;
    cr_expect_null(tg_exp(t, x));
    expect_msg(t, line,
               "tg_exp: anomaly: forward produced Inf at element 3 of the output [2,2] (tape "
               "index 0); inputs: [2,2]");
    tg_tape_reset(t); /* clears the error, keeps anomaly mode */
    cr_expect_eq(tg_tape_anomaly(t), 1);
    tg_tensor *ok = tg_tensor_from(TG_F32, TG_SHAPE(1), (const float[]){88});
    cr_expect_not_null(tg_exp(t, ok), "f32 e^88 is finite: %s", tg_tape_errmsg(t));
    tg_tensor_free(ok);
    tg_tape_reset(t);
    tg_tensor *xd = tg_tensor_from(TG_F64, TG_SHAPE(2), (const double[]){709, 710});
    line = __LINE__ + 1;
    cr_expect_null(tg_exp(t, xd));
    expect_msg(t, line,
               "tg_exp: anomaly: forward produced Inf at element 1 of the output [2] (tape index "
               "0); inputs: [2]");
    tg_tensor_free(x);
    tg_tensor_free(xd);
    tg_tape_free(t);
}

Test(anomaly, zero_over_zero_in_div) {
    tg_tape *t = anomaly_tape();
    tg_tensor *a = tg_tensor_from(TG_F64, TG_SHAPE(2), (const double[]){1, 0});
    tg_tensor *b = tg_tensor_from(TG_F64, TG_SHAPE(2), (const double[]){2, 0});
    tg_tensor_set_name(a, "num");
    tg_tensor_set_name(b, "den");
    int line = __LINE__ + 1;
    cr_expect_null(tg_div(t, a, b));
    expect_msg(t, line,
               "tg_div: anomaly: forward produced NaN at element 1 of the output [2] (tape index "
               "0); inputs: \"num\" [2], \"den\" [2]");
    tg_tensor_free(a);
    tg_tensor_free(b);
    tg_tape_free(t);
}

Test(anomaly, nan_fed_in_is_caught_at_the_first_op_using_it) {
    tg_tape *t = anomaly_tape();
    tg_tensor *w = tg_tensor_ones(TG_F32, TG_SHAPE(2, 2));
    tg_tensor *x = tg_tensor_from(TG_F32, TG_SHAPE(1, 2), (const float[]){0.5f, NAN});
    tg_tensor_set_name(w, "W");
    tg_tensor_set_name(x, "batch");
    int line = __LINE__ + 1;
    cr_expect_null(tg_matmul(t, x, w));
    expect_msg(t, line,
               "tg_matmul: anomaly: forward produced NaN at element 0 of the output [1,2] (tape "
               "index 0); inputs: \"batch\" [1,2], \"W\" [2,2] (input 1 already held NaN at "
               "element 1)");
    tg_tensor_free(w);
    tg_tensor_free(x);
    tg_tape_free(t);
}

Test(anomaly, backward_overflow_is_reported_by_the_node) {
    /* log(1e-310) = -713.8 is finite, but its derivative 1/x = 1e310 overflows a double. */
    tg_tape *t = anomaly_tape();
    tg_tensor *x = tg_tensor_from(TG_F64, TG_SHAPE(2), (const double[]){1, 1e-310});
    tg_tensor_set_name(x, "x");
    tg_tensor_set_requires_grad(x, 1);
    int line = __LINE__ + 1;
    tg_tensor *y = tg_log(t, x);
    tg_tensor_set_name(y, "logx");
    tg_tensor *loss = tg_sum(t, y);
    cr_assert_not_null(loss, "%s", tg_tape_errmsg(t));
    cr_expect_eq(tg_backward(t, loss), TG_ERR_NONFINITE);
    expect_msg(t, line,
               "tg_backward: anomaly: backward of tg_log (tape index 0, output \"logx\") "
               "produced Inf at element 1 of the gradient of input 1, \"x\" [2]; inputs: \"x\" "
               "[2]");
    tg_tensor_free(x);
    tg_tape_free(t);
}

Test(anomaly, off_by_default_and_switchable) {
    tg_tape *t = tg_tape_new();
    cr_expect_eq(tg_tape_anomaly(t), 0);
    tg_tensor *x = tg_tensor_from(TG_F64, TG_SHAPE(1), (const double[]){0});
    tg_tensor *y = tg_log(t, x);
    cr_assert_not_null(y, "without anomaly mode a -inf is just a value");
    cr_expect(isinf(tg_tensor_get(y, 0)));
    cr_expect_eq(tg_tape_status(t), TG_OK);
    tg_tape_set_anomaly(t, 1);
    cr_expect_null(tg_log(t, x));
    tg_tape_reset(t);
    tg_tape_set_anomaly(t, 0);
    cr_expect_not_null(tg_log(t, x));
    cr_expect_eq(tg_tape_set_anomaly(NULL, 1), TG_ERR_NULL);
    cr_expect_eq(tg_tape_anomaly(NULL), 0);
    tg_tensor_free(x);
    tg_tape_free(t);
}

/* ---- Stability of the softmax family (anomaly mode on: any NaN/Inf would fail the tape) ---- */

static void check_stable(tg_dtype dt) {
    /* Row 0: +/-1e4 logits; row 1: all equal. */
    const double v[2][3] = {{1e4, -1e4, 0}, {7, 7, 7}};
    tg_tensor *x = tg_tensor_new(dt, TG_SHAPE(2, 3));
    for (int i = 0; i < 6; i++)
        tg_tensor_set(x, i, v[i / 3][i % 3]);
    tg_tensor_set_requires_grad(x, 1);
    tg_tensor *y = tg_tensor_from(TG_I32, TG_SHAPE(2), (const int32_t[]){1, 2});
    tg_tape *t = anomaly_tape();
    double tol = dt == TG_F32 ? 1e-6 : 1e-12;

    tg_tensor *s = tg_softmax(t, x);
    tg_tensor *ls = tg_log_softmax(t, x);
    tg_tensor *ce = tg_softmax_cross_entropy(t, x, y);
    cr_assert_not_null(ce, "%s", tg_tape_errmsg(t));
    const double want_s[6] = {1, 0, 0, 1 / 3.0, 1 / 3.0, 1 / 3.0};
    const double want_ls[6] = {0, -2e4, -1e4, -log(3.0), -log(3.0), -log(3.0)};
    for (int i = 0; i < 6; i++) {
        cr_expect(fabs(tg_tensor_get(s, i) - want_s[i]) <= tol, "softmax[%d] = %g", i,
                  tg_tensor_get(s, i));
        cr_expect(fabs(tg_tensor_get(ls, i) - want_ls[i]) <= tol * (1 + fabs(want_ls[i])),
                  "log_softmax[%d] = %.17g", i, tg_tensor_get(ls, i));
    }
    /* Mean over the rows of -log p(target): (2e4 + log 3) / 2. */
    double want_ce = (2e4 + log(3.0)) / 2;
    cr_expect(fabs(tg_tensor_item(ce) - want_ce) <= tol * want_ce, "ce = %.17g",
              tg_tensor_item(ce));
    /* Backward through all three stays finite too. */
    tg_tensor *total = tg_add(t, tg_add(t, tg_sum(t, s), tg_sum(t, ls)), ce);
    cr_assert_eq(tg_backward(t, total), TG_OK, "%s", tg_tape_errmsg(t));
    const tg_tensor *g = tg_tensor_grad(x);
    for (int i = 0; i < 6; i++)
        cr_expect(isfinite(tg_tensor_get(g, i)), "grad[%d] = %g", i, tg_tensor_get(g, i));
    tg_tape_free(t);
    tg_tensor_free(x);
    tg_tensor_free(y);
}

Test(anomaly, softmax_family_stable_f64) { check_stable(TG_F64); }
Test(anomaly, softmax_family_stable_f32) { check_stable(TG_F32); }
