/* Gradient checking (src/tools/gradcheck.c): tg_gradcheck must pass every correct op, catch wrong
 * backwards and wrong user gradients element by element, report kinks as kinks, get the 1/N of a
 * mean loss right, and run in float64 when float32 is asked for. */
#define _POSIX_C_SOURCE 200809L /* open_memstream, to read the printer's output back */
#include "fd.h"
#include "op_catalog.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- Every correct built-in op passes -------------------------------------------------------- */

typedef struct {
    const cat_entry *e;
    const cat_case *c;
    int n_in; /* inputs of the op; the weights w follow them */
} op_ctx;

/* loss = sum(w * op(inputs)): fixed random weights make every output element count differently. */
static tg_tensor *weighted_op_loss(tg_tape *t, tg_tensor *const *in, int n, tg_dtype dt, void *u) {
    (void)n;
    cr_assert_eq(dt, TG_F64, "gradcheck must hand the function float64");
    const op_ctx *c = u;
    return tg_sum(t, tg_mul(t, c->e->build(t, in, c->c), in[c->n_in]));
}

/* The first case of every op of the test catalog, through tg_gradcheck. */
Test(gradcheck, passes_every_correct_op) {
    tg_rng rng;
    tg_rng_seed(&rng, 31);
    for (int k = 0; k < cat_n_entries; k++) {
        const cat_entry *e = &cat_entries[k];
        if (e->no_grad)
            continue; /* an integer output (argmax) has no gradient to check */
        const cat_case *cc = &e->cases[0];
        tg_tensor *in[CAT_MAX_INPUTS + 1] = {0};
        cat_make_inputs(cc, &rng, in);
        int n_grad = 0;
        for (int i = 0; i < cc->n_inputs; i++)
            n_grad += tg_tensor_requires_grad(in[i]);
        /* The weights take the op's output shape, found by building it once. */
        tg_tape *probe = tg_tape_new();
        tg_tensor *y = e->build(probe, in, cc);
        cr_assert(y, "%s: %s", e->op, tg_tape_errmsg(probe));
        in[cc->n_inputs] =
            tg_tensor_rand(TG_F64, tg_tensor_rank(y), tg_tensor_shape(y), -1, 1, &rng);
        tg_tape_free(probe);

        op_ctx c = {e, cc, cc->n_inputs};
        tg_gradcheck_report *r = tg_gradcheck(weighted_op_loss, in, cc->n_inputs + 1, &c, NULL);
        cr_assert(r, "%s: %s", e->op, tg_last_errmsg());
        cr_expect_eq(r->n_tensors, n_grad, "%s: checked %d tensors", e->op, r->n_tensors);
        for (int i = 0; i < r->n_tensors; i++) {
            const tg_gradcheck_tensor *c2 = &r->tensors[i];
            cr_expect(c2->passed, "%s input %d: %lld mismatches, max abs err %g", e->op, i,
                      (long long)c2->n_mismatch, c2->max_abs_err);
            cr_expect_eq(c2->n_kink, 0, "%s input %d: %lld kinks reported on a smooth point", e->op,
                         i, (long long)c2->n_kink);
            cr_expect_eq(c2->n_ok, c2->numel, "%s input %d", e->op, i);
            cr_expect_lt(c2->max_abs_err, 1e-6, "%s input %d: max abs err %g", e->op, i,
                         c2->max_abs_err);
        }
        cr_expect(r->passed, "%s", e->op);
        tg_gradcheck_report_free(r);
        for (int i = 0; i <= cc->n_inputs; i++)
            tg_tensor_free(in[i]);
    }
}

/* ---- Wrong backwards are caught ---------------------------------------------------------------- */

typedef enum { BUG_SIGN, BUG_NO_FACTOR_2, BUG_ASSIGN } bug_kind;

/* y = x^2 with one deliberate bug in backward. */
static void buggy_square_bwd(const tg_tensor *out, const tg_tensor *dout, tg_tensor *const *in,
                             tg_tensor *const *din, int n, void *user) {
    (void)out;
    (void)n;
    const bug_kind bug = *(const bug_kind *)user;
    if (!din[0])
        return;
    const double *x = tg_tensor_cdata(in[0]), *dy = tg_tensor_cdata(dout);
    double *dx = tg_tensor_data(din[0]);
    for (int64_t i = 0; i < tg_tensor_numel(in[0]); i++) {
        switch (bug) {
        case BUG_SIGN: dx[i] += -2 * x[i] * dy[i]; break;
        case BUG_NO_FACTOR_2: dx[i] += x[i] * dy[i]; break;
        case BUG_ASSIGN: dx[i] = 2 * x[i] * dy[i]; break; /* forgets earlier contributions */
        }
    }
}
static const tg_custom_op buggy_square_op = {"buggy_square", test_square_forward, buggy_square_bwd};

typedef struct {
    bug_kind bug;
    bool fan_out; /* x also feeds a second op, so its gradient has two contributions */
} bug_ctx;

/* loss = sum(w * square(x)) [+ sum(x * v) when fan_out]. The x * v term is recorded after the
 * square, so its backward runs first and an assigning backward then overwrites its part. */
static tg_tensor *buggy_loss(tg_tape *t, tg_tensor *const *in, int n, tg_dtype dt, void *u) {
    (void)n;
    (void)dt;
    bug_ctx *c = u;
    tg_tensor *sq = tg_custom(t, &buggy_square_op, &c->bug, in, 1, tg_tensor_rank(in[0]),
                              tg_tensor_shape(in[0]));
    tg_tensor *loss = tg_sum(t, tg_mul(t, sq, in[1]));
    if (c->fan_out)
        loss = tg_add(t, loss, tg_sum(t, tg_mul(t, in[0], in[2])));
    return loss;
}

static tg_gradcheck_report *check_bug(bug_kind bug, bool fan_out) {
    tg_rng rng;
    tg_rng_seed(&rng, 32);
    tg_tensor *in[3] = {fd_param_away_from_zero(&rng, TG_SHAPE(2, 3), 2),
                        tg_tensor_rand(TG_F64, TG_SHAPE(2, 3), 0.5, 1.5, &rng),
                        tg_tensor_rand(TG_F64, TG_SHAPE(2, 3), 0.5, 1.5, &rng)};
    tg_tensor_set_name(in[0], "x");
    bug_ctx c = {bug, fan_out};
    tg_gradcheck_report *r = tg_gradcheck(buggy_loss, in, 3, &c, NULL);
    cr_assert(r, "%s", tg_last_errmsg());
    /* The check worked on copies: the caller's input has no gradient and its values are intact. */
    cr_expect_null(tg_tensor_grad(in[0]));
    for (int i = 0; i < 3; i++)
        tg_tensor_free(in[i]);
    return r;
}

Test(gradcheck, catches_sign_error) {
    tg_gradcheck_report *r = check_bug(BUG_SIGN, false);
    cr_expect_not(r->passed);
    cr_assert_eq(r->n_tensors, 1);
    const tg_gradcheck_tensor *c = &r->tensors[0];
    cr_expect_str_eq(c->name, "x");
    cr_expect_eq(c->n_mismatch, 6, "every element is wrong, got %lld", (long long)c->n_mismatch);
    for (int j = 0; j < 6; j++) { /* autodiff is exactly minus the truth */
        const tg_gradcheck_element *e = &c->elements[j];
        cr_expect_eq(e->status, TG_GC_MISMATCH);
        cr_expect_eq(e->disagree, TG_GC_AUTODIFF_VS_FD);
        cr_expect(fabs(e->autodiff + e->fd) < 1e-6 * (1 + fabs(e->fd)), "[%d] %g vs %g", j,
                  e->autodiff, e->fd);
        cr_expect(fabs(e->rel_err - 2) < 1e-6, "[%d] rel err %g, expected 2", j, e->rel_err);
    }
    tg_gradcheck_report_free(r);
}

Test(gradcheck, catches_missing_factor_2) {
    tg_gradcheck_report *r = check_bug(BUG_NO_FACTOR_2, false);
    cr_expect_not(r->passed);
    const tg_gradcheck_tensor *c = &r->tensors[0];
    cr_expect_eq(c->n_mismatch, 6);
    for (int j = 0; j < 6; j++) /* half the truth: rel err 1/2 */
        cr_expect(fabs(c->elements[j].rel_err - 0.5) < 1e-6, "[%d] rel err %g", j,
                  c->elements[j].rel_err);
    cr_expect(fabs(c->max_rel_err - 0.5) < 1e-6);
    tg_gradcheck_report_free(r);
}

/* An assigning backward is right when its input feeds one op and wrong at fan-out; gradcheck must
 * tell the two apart. */
Test(gradcheck, catches_assign_instead_of_accumulate_at_fan_out) {
    tg_gradcheck_report *alone = check_bug(BUG_ASSIGN, false);
    cr_expect(alone->passed, "without fan-out, assigning happens to be right");
    tg_gradcheck_report_free(alone);

    tg_gradcheck_report *r = check_bug(BUG_ASSIGN, true);
    cr_expect_not(r->passed);
    const tg_gradcheck_tensor *c = &r->tensors[0];
    cr_expect_eq(c->n_mismatch, 6);
    /* What is lost is exactly the other branch's contribution v (in [0.5, 1.5)). */
    for (int j = 0; j < 6; j++)
        cr_expect(c->elements[j].abs_err >= 0.5 - 1e-6 && c->elements[j].abs_err < 1.5 + 1e-6,
                  "[%d] abs err %g", j, c->elements[j].abs_err);
    tg_gradcheck_report_free(r);
}

/* ---- A wrong user gradient, and the 1/N of a mean loss --------------------------------------- */

/* Mini-batch linear regression: loss = mean over N rows and 2 outputs of (X W - Y)^2. */
static tg_tensor *mse_loss(tg_tape *t, tg_tensor *const *in, int n, tg_dtype dt, void *u) {
    (void)n;
    (void)dt;
    (void)u;
    return tg_mse(t, tg_matmul(t, in[1], in[0]), in[2]);
}

/* dL/dW = (2 / (N*2)) X^T (X W - Y), or without the 1/(N*2) when `forget_mean`. */
static tg_tensor *my_mse_grad(tg_tensor *W, tg_tensor *X, tg_tensor *Y, bool forget_mean) {
    const int64_t N = tg_tensor_dim(X, 0), D = tg_tensor_dim(X, 1), K = tg_tensor_dim(W, 1);
    tg_tensor *g = tg_tensor_new(TG_F64, TG_SHAPE(D, K));
    const double *w = tg_tensor_cdata(W), *x = tg_tensor_cdata(X), *y = tg_tensor_cdata(Y);
    double *pg = tg_tensor_data(g);
    const double scale = forget_mean ? 2.0 : 2.0 / (double)(N * K);
    for (int64_t nn = 0; nn < N; nn++)
        for (int64_t k = 0; k < K; k++) {
            double r = -y[nn * K + k];
            for (int64_t d = 0; d < D; d++)
                r += x[nn * D + d] * w[d * K + k];
            for (int64_t d = 0; d < D; d++)
                pg[d * K + k] += scale * x[nn * D + d] * r;
        }
    return g;
}

Test(gradcheck, user_gradient_right_and_wrong_mean_loss) {
    tg_rng rng;
    tg_rng_seed(&rng, 33);
    tg_tensor *W = fd_param(&rng, TG_SHAPE(3, 2), -1, 1);
    tg_tensor_set_name(W, "W");
    tg_tensor *X = tg_tensor_rand(TG_F64, TG_SHAPE(8, 3), -1, 1, &rng);
    tg_tensor *Y = tg_tensor_rand(TG_F64, TG_SHAPE(8, 2), -1, 1, &rng);
    tg_tensor *in[3] = {W, X, Y};

    tg_tensor *right = my_mse_grad(W, X, Y, false);
    tg_tensor *yours[3] = {right, NULL, NULL};
    tg_gradcheck_report *r = tg_gradcheck_yours(mse_loss, in, 3, NULL, yours, NULL);
    cr_assert(r, "%s", tg_last_errmsg());
    cr_expect(r->passed);
    cr_expect(r->tensors[0].has_yours);
    cr_expect_eq(r->tensors[0].n_ok, 6);
    cr_expect_lt(r->tensors[0].max_abs_err, 1e-12, "yours vs autodiff: %g",
                 r->tensors[0].max_abs_err);
    tg_gradcheck_report_free(r);

    /* Forgetting the 1/(N*2) of the mean: every element is 16 times too large. */
    tg_tensor *wrong = my_mse_grad(W, X, Y, true);
    yours[0] = wrong;
    r = tg_gradcheck_yours(mse_loss, in, 3, NULL, yours, NULL);
    cr_assert(r, "%s", tg_last_errmsg());
    cr_expect_not(r->passed);
    const tg_gradcheck_tensor *c = &r->tensors[0];
    cr_expect_eq(c->n_mismatch, 6);
    for (int j = 0; j < 6; j++) {
        const tg_gradcheck_element *e = &c->elements[j];
        cr_expect_eq(e->disagree, TG_GC_YOURS_VS_AUTODIFF, "autodiff itself agrees with fd");
        cr_expect(fabs(e->yours / e->autodiff - 16) < 1e-9, "[%d] ratio %g", j,
                  e->yours / e->autodiff);
        cr_expect(fabs(e->rel_err - 15) < 1e-9);
    }
    cr_expect_geq(c->worst_index, 0);
    cr_expect_lt(c->worst_index, 6);
    tg_gradcheck_report_free(r);
    tg_tensor_free(right);
    tg_tensor_free(wrong);
    tg_tensor_free(W);
    tg_tensor_free(X);
    tg_tensor_free(Y);
}

/* ---- Kinks ------------------------------------------------------------------------------------ */

static tg_tensor *relu_loss(tg_tape *t, tg_tensor *const *in, int n, tg_dtype dt, void *u) {
    (void)n;
    (void)dt;
    (void)u;
    return tg_sum(t, tg_mul(t, tg_relu(t, in[0]), in[1]));
}

Test(gradcheck, relu_at_zero_is_reported_as_kink) {
    /* Elements 1 and 4 sit exactly on the kink; element 3 lies 2e-7 from it, within eps. */
    tg_tensor *x = tg_tensor_from(TG_F64, TG_SHAPE(2, 3), (double[]){-1, 0, 2, 2e-7, 0, 0.5});
    tg_tensor *w = tg_tensor_from(TG_F64, TG_SHAPE(2, 3), (double[]){0.5, 1.5, -2, 1, -0.75, 3});
    tg_tensor_set_requires_grad(x, 1);
    tg_tensor *in[2] = {x, w};
    tg_gradcheck_report *r = tg_gradcheck(relu_loss, in, 2, NULL, NULL);
    cr_assert(r, "%s", tg_last_errmsg());
    const tg_gradcheck_tensor *c = &r->tensors[0];
    cr_expect_eq(c->n_kink, 3, "kinks: %lld", (long long)c->n_kink);
    cr_expect_eq(c->n_ok, 3);
    cr_expect_eq(c->n_mismatch, 0, "kinks must not count as failures");
    cr_expect(c->passed);
    cr_expect(r->passed);
    const int kinks[] = {1, 3, 4};
    for (int k = 0; k < 3; k++) {
        const tg_gradcheck_element *e = &c->elements[kinks[k]];
        cr_expect_eq(e->status, TG_GC_KINK, "element %d", kinks[k]);
    }
    /* At exactly 0 the slope is 0 to the left and w to the right. */
    cr_expect(fabs(c->elements[1].fd_backward) < 1e-9);
    cr_expect(fabs(c->elements[1].fd_forward - 1.5) < 1e-6);
    cr_expect_eq(c->elements[0].status, TG_GC_OK);
    cr_expect_eq(c->elements[2].status, TG_GC_OK);
    cr_expect_eq(c->elements[5].status, TG_GC_OK);

    /* The printer lists them as kinks, with their two-d indices. */
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    tg_gradcheck_print(r, f);
    fclose(f);
    cr_expect(strstr(buf, "3 at a kink (not judged)"), "%s", buf);
    cr_expect(strstr(buf, "[0,1]"), "%s", buf);
    cr_expect(strstr(buf, "[1,0]"), "%s", buf);
    cr_expect(strstr(buf, "[1,1]"), "%s", buf);
    cr_expect(strstr(buf, "PASSED"), "%s", buf);
    free(buf);
    tg_gradcheck_report_free(r);
    tg_tensor_free(x);
    tg_tensor_free(w);
}

/* Strong curvature makes the one-sided differences disagree too; that is not a kink.
 * f = sum(500 x^2 + e^(4x) - 4x): f'(0) = 0 and f''(0) = 1016, so near 0 the one-sided differences
 * differ by f'' eps ~ 1e-3, a hundred times atol, while the slope itself is ~0. */
static tg_tensor *curved_loss(tg_tape *t, tg_tensor *const *in, int n, tg_dtype dt, void *u) {
    (void)n;
    (void)dt;
    (void)u;
    tg_tensor *x = in[0];
    tg_tensor *per = tg_add(t, tg_scale(t, tg_mul(t, x, x), 500),
                            tg_sub(t, tg_exp(t, tg_scale(t, x, 4)), tg_scale(t, x, 4)));
    return tg_sum(t, per);
}

Test(gradcheck, curvature_is_not_a_kink) {
    tg_tensor *x = tg_tensor_from(TG_F64, TG_SHAPE(4), (double[]){0, 2e-9, -1e-8, 3e-7});
    tg_tensor_set_requires_grad(x, 1);
    tg_gradcheck_report *r = tg_gradcheck(curved_loss, &x, 1, NULL, NULL);
    cr_assert(r, "%s", tg_last_errmsg());
    const tg_gradcheck_tensor *c = &r->tensors[0];
    for (int j = 0; j < 4; j++) { /* the first test alone would call every one of these a kink */
        const tg_gradcheck_element *e = &c->elements[j];
        const double gap = fabs(e->fd_forward - e->fd_backward);
        cr_expect_gt(gap, r->atol + r->rtol * fmax(fabs(e->fd_forward), fabs(e->fd_backward)),
                     "[%d] gap %g", j, gap);
        cr_expect_eq(e->status, TG_GC_OK, "[%d] status %d", j, e->status);
    }
    cr_expect_eq(c->n_kink, 0);
    cr_expect(r->passed, "max abs err %g", c->max_abs_err);
    tg_gradcheck_report_free(r);
    tg_tensor_free(x);
}

/* ---- float32 is checked in float64, and the report says so ------------------------------------ */

Test(gradcheck, float32_request_runs_in_float64) {
    tg_rng rng;
    tg_rng_seed(&rng, 34);
    tg_tensor *x = tg_tensor_rand(TG_F32, TG_SHAPE(3, 4), -2, 2, &rng);
    tg_tensor *w = tg_tensor_rand(TG_F32, TG_SHAPE(3, 4), -1, 1, &rng);
    tg_tensor_set_requires_grad(x, 1);
    float before[12];
    memcpy(before, tg_tensor_cdata(x), sizeof before);
    op_ctx c = {cat_find("tanh"), &cat_find("tanh")->cases[0], 1};
    tg_tensor *in[2] = {x, w};
    tg_gradcheck_report *r = tg_gradcheck(weighted_op_loss, in, 2, &c, NULL);
    cr_assert(r, "%s", tg_last_errmsg());
    cr_expect_eq(r->requested_dtype, TG_F32);
    cr_expect_eq(r->dtype, TG_F64);
    cr_expect(strstr(r->note, "float32 was asked for; the check ran in float64"), "%s", r->note);
    cr_expect(r->passed);
    cr_expect_lt(r->tensors[0].max_abs_err, 1e-7, "float64 precision, not float32's");
    cr_expect_eq(memcmp(before, tg_tensor_cdata(x), sizeof before), 0, "input untouched");
    cr_expect_eq(tg_tensor_dtype(x), TG_F32);
    tg_gradcheck_report_free(r);

    /* Asking through the options, with float64 inputs, says the same. */
    tg_tensor *x64 = tg_tensor_clone(x, TG_F64), *w64 = tg_tensor_clone(w, TG_F64);
    tg_tensor *in64[2] = {x64, w64};
    tg_gradcheck_opts o = tg_gradcheck_defaults();
    o.dtype = TG_F32;
    r = tg_gradcheck(weighted_op_loss, in64, 2, &c, &o);
    cr_assert(r, "%s", tg_last_errmsg());
    cr_expect_eq(r->requested_dtype, TG_F32);
    cr_expect_eq(r->dtype, TG_F64);
    cr_expect_neq(r->note[0], '\0');
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    tg_gradcheck_print(r, f);
    fclose(f);
    cr_expect(strstr(buf, "note: float32 was asked for"), "%s", buf);
    free(buf);
    tg_gradcheck_report_free(r);
    tg_tensor_free(x64);
    tg_tensor_free(w64);
    tg_tensor_free(x);
    tg_tensor_free(w);
}

/* ---- Options, printer, errors ----------------------------------------------------------------- */

Test(gradcheck, defaults_and_options) {
    const tg_gradcheck_opts d = tg_gradcheck_defaults();
    cr_expect_eq(d.eps, 1e-6);
    cr_expect_eq(d.atol, 1e-5);
    cr_expect_eq(d.rtol, 1e-3);
    cr_expect_eq(d.dtype, TG_F64);
    cr_expect_eq(d.max_rows, 10);

    /* A missing factor 2 slips through absurdly loose tolerances: the options are really used. */
    tg_rng rng;
    tg_rng_seed(&rng, 35);
    tg_tensor *in[2] = {fd_param_away_from_zero(&rng, TG_SHAPE(4), 1),
                        tg_tensor_rand(TG_F64, TG_SHAPE(4), 0.5, 1.5, &rng)};
    bug_ctx c = {BUG_NO_FACTOR_2, false};
    tg_gradcheck_opts o = d;
    o.rtol = 0.6;
    o.eps = 1e-5;
    tg_gradcheck_report *r = tg_gradcheck(buggy_loss, in, 2, &c, &o);
    cr_assert(r, "%s", tg_last_errmsg());
    cr_expect(r->passed);
    cr_expect_eq(r->eps, 1e-5);
    cr_expect_eq(r->rtol, 0.6);
    tg_gradcheck_report_free(r);
    tg_tensor_free(in[0]);
    tg_tensor_free(in[1]);
}

Test(gradcheck, printer_rows_and_elision) {
    tg_rng rng;
    tg_rng_seed(&rng, 36);
    tg_tensor *in[2] = {fd_param_away_from_zero(&rng, TG_SHAPE(5, 6), 2),
                        tg_tensor_rand(TG_F64, TG_SHAPE(5, 6), 0.5, 1.5, &rng)};
    tg_tensor_set_name(in[0], "W");
    bug_ctx c = {BUG_SIGN, false};
    tg_gradcheck_report *r = tg_gradcheck(buggy_loss, in, 2, &c, NULL);
    cr_assert(r, "%s", tg_last_errmsg());
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    tg_gradcheck_print(r, f);
    fclose(f);
    cr_expect(strstr(buf, "gradcheck: FAILED"), "%s", buf);
    cr_expect(strstr(buf, "W          [5,6]     FAIL"), "%s", buf);
    cr_expect(strstr(buf, "index        |         yours |      autodiff | finite difference |"
                          "   abs err |   rel err"),
              "%s", buf);
    cr_expect(strstr(buf, "[0,0]"), "%s", buf);
    cr_expect(strstr(buf, "[1,3]"), "%s", buf);  /* the 10th mismatch is shown */
    cr_expect(!strstr(buf, "[1,4]"), "%s", buf); /* the 11th is not */
    cr_expect(strstr(buf, "... and 20 more mismatching elements (30 in all)"), "%s", buf);
    free(buf);
    tg_gradcheck_print(NULL, stdout); /* harmless */
    tg_gradcheck_report_free(NULL);
    tg_gradcheck_report_free(r);
    tg_tensor_free(in[0]);
    tg_tensor_free(in[1]);
}

static tg_tensor *vector_loss(tg_tape *t, tg_tensor *const *in, int n, tg_dtype dt, void *u) {
    (void)n;
    (void)dt;
    (void)u;
    return tg_tanh(t, in[0]);
}
static tg_tensor *failing_loss(tg_tape *t, tg_tensor *const *in, int n, tg_dtype dt, void *u) {
    (void)n;
    (void)dt;
    (void)u;
    return tg_matmul(t, in[0], in[0]);
}

Test(gradcheck, usage_errors_name_the_problem) {
    tg_tensor *x = tg_tensor_ones(TG_F64, TG_SHAPE(2, 3));
    tg_tensor *in[1] = {x};
    cr_expect_null(tg_gradcheck(vector_loss, in, 1, NULL, NULL));
    cr_expect_str_eq(tg_last_errmsg(),
                     "tg_gradcheck: none of the 1 inputs requires a gradient; mark the ones to "
                     "check with tg_tensor_set_requires_grad");
    tg_tensor_set_requires_grad(x, 1);
    cr_expect_null(tg_gradcheck(NULL, in, 1, NULL, NULL));
    cr_expect_str_eq(tg_last_errmsg(), "tg_gradcheck: the function f is NULL");
    cr_expect_null(tg_gradcheck(vector_loss, in, 1, NULL, NULL));
    cr_expect_str_eq(tg_last_errmsg(),
                     "tg_gradcheck: the function returned a tensor of shape [2,3]; it must "
                     "return one element (a loss)");
    cr_expect_null(tg_gradcheck(failing_loss, in, 1, NULL, NULL));
    cr_expect(strstr(tg_last_errmsg(), "tg_gradcheck: the function failed to build its loss: "
                                       "test_gradcheck.c:"),
              "%s", tg_last_errmsg());
    cr_expect(strstr(tg_last_errmsg(), "tg_matmul: inner dimensions differ: [2,3] x [2,3]"), "%s",
              tg_last_errmsg());
    tg_gradcheck_opts o = tg_gradcheck_defaults();
    o.eps = 0;
    cr_expect_null(tg_gradcheck(vector_loss, in, 1, NULL, &o));
    cr_expect_str_eq(tg_last_errmsg(), "tg_gradcheck: bad options: eps 0 must be > 0, atol 1e-05 "
                                       "and rtol 0.001 must be >= 0");
    tg_tensor *bad = tg_tensor_new(TG_F64, TG_SHAPE(3, 2));
    tg_tensor *yours[1] = {bad};
    tg_tensor_set_name(x, "x");
    cr_expect_null(tg_gradcheck_yours(vector_loss, in, 1, NULL, yours, NULL));
    cr_expect_str_eq(tg_last_errmsg(), "tg_gradcheck_yours: your gradient for input 0 ('x') has "
                                       "shape [3,2], the input has shape [2,3]");
    tg_tensor_free(bad);
    tg_tensor_free(x);
}
