/* Second derivatives (src/tools/hessian.c): tg_hvp must reproduce Hessians known in closed form
 * (x^T A x, sum(exp), logistic regression) to near float64 precision; tg_hessian_check must pass
 * them given as a matrix or as a function, entry by entry or by random probes, flag wrong entries
 * exactly, report the symmetry of the user's matrix, report kinks of the gradient as kinks, and
 * refuse misuse with exact messages. */
#define _POSIX_C_SOURCE 200809L /* open_memstream, to read the printer's output back */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tapegrad.h"

static tg_tensor *leaf(const char *name, int rank, const int64_t *shape, const double *v) {
    tg_tensor *t = tg_tensor_from(TG_F64, rank, shape, v);
    cr_assert(t, "%s", tg_last_errmsg());
    tg_tensor_set_name(t, name);
    return t;
}

static tg_hessian_report *check(tg_gradcheck_fn f, tg_tensor *const *in, int n, int wrt,
                                const tg_tensor *yours, tg_hvp_fn fn, void *fu,
                                const tg_hessian_opts *o) {
    tg_hessian_report *r = tg_hessian_check(f, in, n, NULL, wrt, yours, fn, fu, o);
    cr_assert(r, "%s", tg_last_errmsg());
    return r;
}

/* ---- x^T A x: H = A + A^T -------------------------------------------------------------------- */

enum { NQ = 4 };
static const double A[NQ * NQ] = {2.0, 1.0,  0.0, -1.0, 3.0,  4.0, 0.5, 0.0,
                                  0.0, -2.0, 1.0, 1.5,  0.25, 0.0, 2.5, 3.0};
static const double XQ[NQ] = {0.5, -1.0, 2.0, 0.3};

/* inputs: x [4,1], A [4,4].  f = sum(x * (A x)) = x^T A x. */
static tg_tensor *quadratic(tg_tape *t, tg_tensor *const *in, int n, tg_dtype dt, void *u) {
    (void)n, (void)u;
    cr_assert_eq(dt, TG_F64);
    return tg_sum(t, tg_mul(t, in[0], tg_matmul(t, in[1], in[0])));
}

Test(hessian, hvp_of_a_quadratic_is_A_plus_A_transpose) {
    tg_tensor *in[2] = {leaf("x", TG_SHAPE(NQ, 1), XQ), leaf("A", TG_SHAPE(NQ, NQ), A)};
    const double v[NQ] = {1.0, -2.0, 0.5, 3.0};
    tg_tensor *vt = leaf("v", TG_SHAPE(NQ, 1), v), *hv = tg_tensor_new(TG_F64, TG_SHAPE(NQ, 1));
    cr_assert_eq(tg_hvp(quadratic, in, 2, NULL, 0, vt, hv, NULL), TG_OK, "%s", tg_last_errmsg());
    for (int i = 0; i < NQ; i++) {
        double exact = 0;
        for (int j = 0; j < NQ; j++)
            exact += (A[i * NQ + j] + A[j * NQ + i]) * v[j];
        cr_expect_float_eq(tg_tensor_get(hv, i), exact, 1e-9, "row %d", i);
    }
    cr_expect_eq(tg_tensor_get(in[0], 0), XQ[0], "the input is not modified");
    tg_tensor_free(vt), tg_tensor_free(hv);

    double H[NQ * NQ], wrong[NQ * NQ];
    for (int i = 0; i < NQ; i++)
        for (int j = 0; j < NQ; j++) {
            H[i * NQ + j] = A[i * NQ + j] + A[j * NQ + i];
            wrong[i * NQ + j] = 2 * A[i * NQ + j]; /* the classic: 2A, right only if A = A^T */
        }
    tg_tensor *mine = leaf("H", TG_SHAPE(NQ, NQ), H), *bad = leaf("H", TG_SHAPE(NQ, NQ), wrong);
    tg_hessian_report *r = check(quadratic, in, 2, 0, mine, NULL, NULL, NULL);
    cr_expect(r->passed);
    cr_expect_not(r->by_probes);
    cr_expect_eq(r->n_cols, NQ);
    cr_expect_eq(r->n_ok, NQ * NQ);
    cr_expect_eq(r->n_kink, 0);
    cr_expect(r->symmetric);
    cr_expect_lt(r->max_abs_err, 1e-8);
    cr_expect_str_eq(r->name, "x");
    tg_hessian_report_free(r);

    r = check(quadratic, in, 2, 0, bad, NULL, NULL, NULL);
    cr_expect_not(r->passed);
    int64_t expected_wrong = 0, expected_pairs = 0;
    for (int i = 0; i < NQ; i++)
        for (int j = 0; j < NQ; j++) {
            const int differs = A[i * NQ + j] != A[j * NQ + i];
            expected_wrong += differs;
            expected_pairs += differs && i < j;
            const tg_hessian_entry *e = &r->entries[j * NQ + i];
            cr_expect_eq(e->row, i);
            cr_expect_eq(e->col, j);
            cr_expect_eq(e->status, differs ? TG_GC_MISMATCH : TG_GC_OK, "entry %d %d", i, j);
            cr_expect_eq(e->yours, wrong[i * NQ + j]);
            cr_expect_float_eq(e->reference, H[i * NQ + j], 1e-8);
        }
    cr_expect_eq(r->n_mismatch, expected_wrong);
    cr_expect_not(r->symmetric);
    cr_expect_eq(r->n_asym, expected_pairs);
    double max_pair = 0;
    for (int i = 0; i < NQ; i++)
        for (int j = 0; j < NQ; j++)
            max_pair = fmax(max_pair, fabs(wrong[i * NQ + j] - wrong[j * NQ + i]));
    cr_expect_eq(r->max_asym, max_pair, "the largest |2A_ij - 2A_ji|");
    cr_expect_float_eq(max_pair, 5.0, 1e-15, "pair (1,2): 2 * 0.5 - 2 * -2");
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    tg_hessian_print(r, f);
    fclose(f);
    cr_expect(strstr(buf, "hessian check: FAILED"), "%s", buf);
    cr_expect(strstr(buf, "your matrix is NOT symmetric"), "%s", buf);
    cr_expect(strstr(buf, "      0 [0,0]     . X . X"), "%s", buf);
    cr_expect(strstr(buf, "    [0,0] [1,0]            | +2.000000e+00 | +4.000000e+00 |"), "%s",
              buf);
    free(buf);
    tg_hessian_report_free(r);
    tg_tensor_free(mine), tg_tensor_free(bad), tg_tensor_free(in[0]), tg_tensor_free(in[1]);
}

/* ---- sum(exp(x)): H = diag(exp(x)) ----------------------------------------------------------- */

static tg_tensor *sum_exp(tg_tape *t, tg_tensor *const *in, int n, tg_dtype dt, void *u) {
    (void)n, (void)dt, (void)u;
    return tg_sum(t, tg_exp(t, in[0]));
}

/* Your H v = exp(x) * v, optionally with every entry off the diagonal set to `off`. */
static tg_status exp_hvp(const tg_tensor *x, const tg_tensor *v, tg_tensor *hv, void *user) {
    const double off = user ? *(const double *)user : 0.0;
    double vsum = 0;
    for (int64_t i = 0; i < tg_tensor_numel(v); i++)
        vsum += tg_tensor_get(v, i);
    for (int64_t i = 0; i < tg_tensor_numel(v); i++)
        tg_tensor_set(hv, i,
                      exp(tg_tensor_get(x, i)) * tg_tensor_get(v, i) +
                          off * (vsum - tg_tensor_get(v, i)));
    return TG_OK;
}

Test(hessian, sum_exp_as_a_matrix_and_as_a_function) {
    const double x[2][3] = {{0.1, -0.7, 1.3}, {2.0, 0.0, -1.5}};
    tg_tensor *in[1] = {leaf("x", TG_SHAPE(2, 3), &x[0][0])};
    double H[36] = {0};
    for (int i = 0; i < 6; i++)
        H[i * 6 + i] = exp((&x[0][0])[i]);
    /* The input's shape twice, [2,3,2,3], is accepted as well as [6,6]. */
    tg_tensor *mine = leaf("H", TG_SHAPE(2, 3, 2, 3), H);
    tg_hessian_report *r = check(sum_exp, in, 1, 0, mine, NULL, NULL, NULL);
    cr_expect(r->passed);
    cr_expect_eq(r->n_ok, 36);
    cr_expect_lt(r->max_rel_err, 1e-9, "Richardson: %g", r->max_rel_err);
    tg_hessian_report_free(r);

    r = check(sum_exp, in, 1, 0, NULL, exp_hvp, NULL, NULL);
    cr_expect(r->passed);
    cr_expect(r->symmetric);
    tg_hessian_report_free(r);

    const double off = 0.01; /* a small wrong coupling between every pair */
    r = check(sum_exp, in, 1, 0, NULL, exp_hvp, (void *)&off, NULL);
    cr_expect_not(r->passed);
    cr_expect_eq(r->n_mismatch, 30, "every entry off the diagonal, none on it");
    for (int i = 0; i < 6; i++)
        cr_expect_eq(r->entries[i * 6 + i].status, TG_GC_OK);
    cr_expect(r->symmetric, "wrong, but symmetric");
    tg_hessian_report_free(r);
    tg_tensor_free(mine), tg_tensor_free(in[0]);
}

static tg_tensor *sum_exp3(tg_tape *t, tg_tensor *const *in, int n, tg_dtype dt, void *u) {
    (void)n, (void)dt, (void)u;
    return tg_sum(t, tg_exp(t, tg_scale(t, in[0], 3.0)));
}

Test(hessian, hvp_is_accurate_beyond_plain_central_differences) {
    /* f = sum(exp(3x)): H v = 9 exp(3x) v. With h = 1e-3 a plain central difference of the
     * gradient is off by h^2 f'''' / 6 = 81 h^2 / 6 ~ 1.4e-5 relative; the Richardson step must
     * bring it below 1e-9. */
    const double x[3] = {0.5, -0.2, 0.9}, v[3] = {1.0, 0.5, -2.0};
    tg_tensor *xt = leaf("x", TG_SHAPE(3), x);
    tg_tensor *in[1] = {xt};
    tg_tensor *vt = leaf("v", TG_SHAPE(3), v), *hv = tg_tensor_new(TG_F32, TG_SHAPE(3));
    tg_tensor *hv64 = tg_tensor_new(TG_F64, TG_SHAPE(3));
    cr_assert_eq(tg_hvp(sum_exp3, in, 1, NULL, 0, vt, hv64, NULL), TG_OK, "%s", tg_last_errmsg());
    for (int i = 0; i < 3; i++) {
        const double exact = 9 * exp(3 * x[i]) * v[i];
        cr_expect(fabs(tg_tensor_get(hv64, i) - exact) <= 1e-9 * fabs(exact),
                  "row %d: %.17g vs %.17g", i, tg_tensor_get(hv64, i), exact);
    }
    cr_assert_eq(tg_hvp(sum_exp3, in, 1, NULL, 0, vt, hv, NULL), TG_OK, "an f32 result is fine");
    cr_expect_float_eq(tg_tensor_get(hv, 0), (float)(9 * exp(1.5)), 1e-5);
    tg_tensor_free(vt), tg_tensor_free(hv), tg_tensor_free(hv64), tg_tensor_free(xt);
}

/* ---- Logistic regression: H = X^T diag(p (1 - p)) X / N -------------------------------------- */

/* inputs: X [N,d], y [N,1], w [d,1]. */
static tg_tensor *logistic(tg_tape *t, tg_tensor *const *in, int n, tg_dtype dt, void *u) {
    (void)n, (void)dt, (void)u;
    tg_tensor *z = tg_matmul(t, in[0], in[2]);
    tg_tensor *sp = tg_log(t, tg_add_scalar(t, tg_exp(t, z), 1.0));
    return tg_mean(t, tg_sub(t, sp, tg_mul(t, in[1], z)));
}

typedef struct lr_data {
    int64_t N, d;
    double *X, *s, scale; /* scale 1/N, or 1 for the mistake */
} lr_data;

static tg_status lr_hvp(const tg_tensor *x, const tg_tensor *v, tg_tensor *hv, void *user) {
    (void)x;
    const lr_data *lr = user;
    const double *pv = tg_tensor_cdata(v);
    double *out = tg_tensor_data(hv);
    for (int64_t n = 0; n < lr->N; n++) {
        double xv = 0;
        for (int64_t j = 0; j < lr->d; j++)
            xv += lr->X[n * lr->d + j] * pv[j];
        for (int64_t i = 0; i < lr->d; i++)
            out[i] += lr->X[n * lr->d + i] * lr->s[n] * xv * lr->scale;
    }
    return TG_OK;
}

static void lr_setup(lr_data *lr, int64_t N, int64_t d, tg_tensor **in) {
    tg_rng rng;
    tg_rng_seed(&rng, 17);
    lr->N = N, lr->d = d, lr->scale = 1.0 / (double)N;
    lr->X = malloc(sizeof(double) * (size_t)(N * d));
    lr->s = malloc(sizeof(double) * (size_t)N);
    double *y = malloc(sizeof(double) * (size_t)N), *w = malloc(sizeof(double) * (size_t)d);
    cr_assert(lr->X && lr->s && y && w);
    for (int64_t j = 0; j < d; j++)
        w[j] = tg_rng_normal(&rng) / sqrt((double)d);
    for (int64_t n = 0; n < N; n++) {
        double z = 0;
        for (int64_t j = 0; j < d; j++) {
            lr->X[n * d + j] = tg_rng_normal(&rng);
            z += lr->X[n * d + j] * w[j];
        }
        const double p = 1 / (1 + exp(-z));
        lr->s[n] = p * (1 - p);
        y[n] = tg_rng_uniform(&rng) < 0.5;
    }
    in[0] = leaf("X", TG_SHAPE(N, d), lr->X);
    in[1] = leaf("y", TG_SHAPE(N, 1), y);
    in[2] = leaf("w", TG_SHAPE(d, 1), w);
    free(y), free(w);
}

Test(hessian, logistic_regression_dense_and_by_probes) {
    lr_data lr;
    tg_tensor *in[3];
    lr_setup(&lr, 12, 3, in);
    double H[9];
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++) {
            double acc = 0;
            for (int n = 0; n < 12; n++)
                acc += lr.X[n * 3 + i] * lr.s[n] * lr.X[n * 3 + j];
            H[i * 3 + j] = acc / 12;
        }
    tg_tensor *mine = leaf("H", TG_SHAPE(3, 3), H);
    tg_hessian_report *r = check(logistic, in, 3, 2, mine, NULL, NULL, NULL);
    cr_expect(r->passed);
    cr_expect_eq(r->n_ok, 9);
    cr_expect_lt(r->max_abs_err, 1e-10);
    tg_hessian_report_free(r);
    /* Forced into probe mode, the same matrix passes along random directions. */
    tg_hessian_opts o = tg_hessian_defaults();
    o.max_dense = 2;
    o.n_probes = 5;
    r = check(logistic, in, 3, 2, mine, NULL, NULL, &o);
    cr_expect(r->passed);
    cr_expect(r->by_probes);
    cr_expect_eq(r->n_cols, 5);
    cr_expect_eq(r->n_ok, 15);
    cr_expect(r->symmetric);
    tg_hessian_report_free(r);
    tg_tensor_free(mine);
    for (int i = 0; i < 3; i++)
        tg_tensor_free(in[i]);
    free(lr.X), free(lr.s);

    /* 80 weights: above max_dense (64), so probes; right function passes, 1/N forgotten fails. */
    lr_setup(&lr, 30, 80, in);
    r = check(logistic, in, 3, 2, NULL, lr_hvp, &lr, NULL);
    cr_expect(r->passed);
    cr_expect(r->by_probes);
    cr_expect_eq(r->n_cols, 8);
    cr_expect_eq(r->n_ok, 8 * 80);
    cr_expect(r->symmetric);
    cr_expect_lt(r->ref_asym, 1e-8);
    tg_hessian_report_free(r);
    lr.scale = 1.0;
    r = check(logistic, in, 3, 2, NULL, lr_hvp, &lr, NULL);
    cr_expect_not(r->passed);
    cr_expect_eq(r->n_mismatch, 8 * 80, "every entry of every H v is 30 times too large");
    cr_expect_float_eq(r->entries[r->worst].yours / r->entries[r->worst].reference, 30.0, 1e-6);
    tg_hessian_report_free(r);
    for (int i = 0; i < 3; i++)
        tg_tensor_free(in[i]);
    free(lr.X), free(lr.s);
}

/* ---- Kinks: f = sum(relu(x)^2) / 2, whose gradient relu(x) has a kink at 0 ------------------- */

static tg_tensor *half_relu_sq(tg_tape *t, tg_tensor *const *in, int n, tg_dtype dt, void *u) {
    (void)n, (void)dt, (void)u;
    tg_tensor *r = tg_relu(t, in[0]);
    return tg_scale(t, tg_sum(t, tg_mul(t, r, r)), 0.5);
}

Test(hessian, a_kink_of_the_gradient_is_reported_not_judged) {
    const double x[3] = {0.0, 1.0, -1.0};
    tg_tensor *in[1] = {leaf("x", TG_SHAPE(3), x)};
    const double H[9] = {0, 0, 0, 0, 1, 0, 0, 0, 0}; /* step(x) on the diagonal */
    tg_tensor *mine = leaf("H", TG_SHAPE(3, 3), H);
    tg_hessian_report *r = check(half_relu_sq, in, 1, 0, mine, NULL, NULL, NULL);
    cr_expect(r->passed, "the kink is not counted as a failure");
    cr_expect_eq(r->n_kink, 1);
    cr_expect_eq(r->entries[0].status, TG_GC_KINK, "d2f/dx0^2 at x0 = 0");
    cr_expect_float_eq(r->entries[0].fd_forward, 1.0, 1e-9);
    cr_expect_float_eq(r->entries[0].fd_backward, 0.0, 1e-9);
    cr_expect_eq(r->n_ok, 8);
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    tg_hessian_print(r, f);
    fclose(f);
    cr_expect(strstr(buf, "1 at a kink (not judged)"), "%s", buf);
    cr_expect(strstr(buf, "kinks: the gradient does not vary smoothly"), "%s", buf);
    free(buf);
    tg_hessian_report_free(r);
    tg_tensor_free(mine), tg_tensor_free(in[0]);
}

/* ---- Usage errors: exact messages ------------------------------------------------------------ */

static tg_tensor *vector_out(tg_tape *t, tg_tensor *const *in, int n, tg_dtype dt, void *u) {
    (void)n, (void)dt, (void)u;
    return tg_exp(t, in[0]);
}

static tg_tensor *failing(tg_tape *t, tg_tensor *const *in, int n, tg_dtype dt, void *u) {
    (void)n, (void)dt, (void)u;
    return tg_sum(t, tg_matmul(t, in[0], in[0]));
}

static tg_status refusing_hvp(const tg_tensor *x, const tg_tensor *v, tg_tensor *hv, void *u) {
    (void)x, (void)v, (void)hv, (void)u;
    return TG_ERR_VALUE;
}

Test(hessian, usage_errors_name_the_problem) {
    const double x[3] = {1, 2, 3};
    tg_tensor *xt = leaf("x", TG_SHAPE(3), x), *labels = tg_tensor_new(TG_I32, TG_SHAPE(3));
    tg_tensor *in[2] = {xt, labels}, *in_null[1] = {NULL};
    tg_tensor *v = leaf("v", TG_SHAPE(3), x), *hv = tg_tensor_new(TG_F64, TG_SHAPE(3));
    tg_tensor *v2 = tg_tensor_new(TG_F64, TG_SHAPE(2)), *vi = tg_tensor_new(TG_I32, TG_SHAPE(3));
    const tg_hessian_opts d = tg_hessian_defaults();
#define EXPECT_ST(call, code, msg)                                                                 \
    do {                                                                                           \
        cr_expect_eq(call, code);                                                                  \
        cr_expect_str_eq(tg_last_errmsg(), msg);                                                   \
    } while (0)
    EXPECT_ST(tg_hvp(NULL, in, 2, NULL, 0, v, hv, NULL), TG_ERR_NULL,
              "tg_hvp: the function f is NULL");
    EXPECT_ST(tg_hvp(sum_exp, NULL, 2, NULL, 0, v, hv, NULL), TG_ERR_NULL,
              "tg_hvp: no inputs (inputs NULL, n_inputs 2)");
    EXPECT_ST(tg_hvp(sum_exp, in_null, 1, NULL, 0, v, hv, NULL), TG_ERR_NULL,
              "tg_hvp: input 0 is NULL");
    EXPECT_ST(tg_hvp(sum_exp, in, 2, NULL, 2, v, hv, NULL), TG_ERR_VALUE,
              "tg_hvp: wrt 2 is not an input (0..1)");
    EXPECT_ST(tg_hvp(sum_exp, in, 2, NULL, 1, v, hv, NULL), TG_ERR_DTYPE,
              "tg_hvp: input 1 ('') is i32; second derivatives need an f32 or f64 input");
    EXPECT_ST(tg_hvp(sum_exp, in, 2, NULL, 0, NULL, hv, NULL), TG_ERR_NULL, "tg_hvp: v is NULL");
    EXPECT_ST(tg_hvp(sum_exp, in, 2, NULL, 0, v, NULL, NULL), TG_ERR_NULL, "tg_hvp: hv is NULL");
    EXPECT_ST(tg_hvp(sum_exp, in, 2, NULL, 0, v2, hv, NULL), TG_ERR_SHAPE,
              "tg_hvp: v has shape [2], input 0 ('x') has shape [3]");
    EXPECT_ST(tg_hvp(sum_exp, in, 2, NULL, 0, v, vi, NULL), TG_ERR_DTYPE,
              "tg_hvp: hv is i32; it must be f32 or f64");
    tg_tape *t = tg_tape_new();
    tg_tensor *node = tg_exp(t, xt);
    EXPECT_ST(tg_hvp(sum_exp, in, 2, NULL, 0, v, node, NULL), TG_ERR_STATE,
              "tg_hvp: hv is a tensor of a tape; pass a leaf (tg_tensor_new)");
    tg_tape_free(t);
    tg_hessian_opts o = d;
    o.eps = -1;
    EXPECT_ST(tg_hvp(sum_exp, in, 2, NULL, 0, v, hv, &o), TG_ERR_VALUE,
              "tg_hvp: bad options: eps -1 must be > 0, atol 1e-06 and rtol 1e-05 >= 0, "
              "n_probes 8 >= 1, max_dense 64 >= 0");
    EXPECT_ST(tg_hvp(vector_out, in, 2, NULL, 0, v, hv, NULL), TG_ERR_SHAPE,
              "tg_hvp: the function returned a tensor of shape [3]; it must return one element "
              "(a loss)");
    cr_expect_eq(tg_hvp(failing, in, 2, NULL, 0, v, hv, NULL), TG_ERR_SHAPE);
    cr_expect(strstr(tg_last_errmsg(), "tg_hvp: the function failed to build its loss: "
                                       "test_hessian.c:"),
              "%s", tg_last_errmsg());

#define EXPECT_NULL(call, msg)                                                                     \
    do {                                                                                           \
        cr_expect_null(call);                                                                      \
        cr_expect_str_eq(tg_last_errmsg(), msg);                                                   \
    } while (0)
    double H[9] = {0};
    tg_tensor *h33 = leaf("H", TG_SHAPE(3, 3), H), *h34 = tg_tensor_new(TG_F64, TG_SHAPE(3, 4));
    tg_tensor *hi = tg_tensor_new(TG_I32, TG_SHAPE(3, 3));
    EXPECT_NULL(tg_hessian_check(sum_exp, in, 2, NULL, 0, NULL, NULL, NULL, NULL),
                "tg_hessian_check: no Hessian to check: yours and yours_fn are both NULL");
    EXPECT_NULL(tg_hessian_check(sum_exp, in, 2, NULL, 0, h33, exp_hvp, NULL, NULL),
                "tg_hessian_check: yours and yours_fn are both given; pass the matrix or the "
                "function, not both");
    EXPECT_NULL(tg_hessian_check(sum_exp, in, 2, NULL, 0, h34, NULL, NULL, NULL),
                "tg_hessian_check: your Hessian has shape [3,4]; input 0 ('x') [3] has 3 "
                "elements, so it must be [3,3]");
    EXPECT_NULL(tg_hessian_check(sum_exp, in, 2, NULL, 0, hi, NULL, NULL, NULL),
                "tg_hessian_check: your Hessian is i32; it must be f32 or f64");
    EXPECT_NULL(tg_hessian_check(sum_exp, in, 2, NULL, 0, NULL, refusing_hvp, NULL, NULL),
                "tg_hessian_check: your H v function returned TG_ERR_VALUE for direction 0");
    EXPECT_NULL(tg_hessian_check(NULL, in, 2, NULL, 0, h33, NULL, NULL, NULL),
                "tg_hessian_check: the function f is NULL");
    o = d;
    o.n_probes = 0;
    EXPECT_NULL(tg_hessian_check(sum_exp, in, 2, NULL, 0, h33, NULL, NULL, &o),
                "tg_hessian_check: bad options: eps 0.001 must be > 0, atol 1e-06 and rtol 1e-05 "
                ">= 0, n_probes 0 >= 1, max_dense 64 >= 0");
    const double w4[4] = {1, 2, 3, 4};
    tg_tensor *w = leaf("W", TG_SHAPE(2, 2), w4), *win[1] = {w};
    EXPECT_NULL(tg_hessian_check(sum_exp, win, 1, NULL, 0, h34, NULL, NULL, NULL),
                "tg_hessian_check: your Hessian has shape [3,4]; input 0 ('W') [2,2] has 4 "
                "elements, so it must be [4,4] or [2,2,2,2]");
    tg_hessian_print(NULL, stdout); /* harmless */
    tg_hessian_report_free(NULL);
    tg_tensor_free(w), tg_tensor_free(h33), tg_tensor_free(h34), tg_tensor_free(hi);
    tg_tensor_free(xt), tg_tensor_free(labels), tg_tensor_free(v), tg_tensor_free(hv);
    tg_tensor_free(v2), tg_tensor_free(vi);
}

Test(hessian, defaults) {
    const tg_hessian_opts o = tg_hessian_defaults();
    cr_expect_eq(o.eps, 1e-3);
    cr_expect_eq(o.atol, 1e-6);
    cr_expect_eq(o.rtol, 1e-5);
    cr_expect_eq(o.max_dense, 64);
    cr_expect_eq(o.n_probes, 8);
    cr_expect_eq(o.seed, 1);
    cr_expect_eq(o.max_rows, 10);
}
