/* Issue 12, "nothing lost, nothing wrong": calls that used to overflow a buffer, invoke undefined
 * behaviour, segfault, free twice or leave a stale message. Each test fails on the code before
 * its fix. */
#include "core/engine.h"

#include <criterion/criterion.h>
#include <math.h>

/* ---- Break 2: an integer clone never requires a gradient; gradcheck refuses one that does ---- */

Test(robustness, clone_to_i32_drops_requires_grad) {
    tg_tensor *p = tg_tensor_from(TG_F32, TG_SHAPE(3), (const float[]){1, 2, 3});
    cr_assert_eq(tg_tensor_set_requires_grad(p, 1), TG_OK);
    tg_tensor *i = tg_tensor_clone(p, TG_I32);
    cr_assert_not_null(i, "%s", tg_last_errmsg());
    cr_expect_eq(tg_tensor_requires_grad(i), 0);
    cr_expect_eq(tg_tensor_get(i, 2), 3.0);
    tg_tensor *d = tg_tensor_clone(p, TG_F64); /* a float clone keeps it */
    cr_expect_eq(tg_tensor_requires_grad(d), 1);
    tg_tensor_free(d);
    tg_tensor_free(i);
    tg_tensor_free(p);
}

static tg_tensor *sum_of(tg_tape *t, tg_tensor *const *in, int n, tg_dtype dtype, void *user) {
    (void)n;
    (void)dtype;
    (void)user;
    return tg_sum(t, in[0]);
}

Test(robustness, gradcheck_refuses_an_i32_input_that_requires_a_gradient) {
    /* The state the old clone produced (set directly: the public API can no longer make it). */
    tg_tensor *i = tg_tensor_new(TG_I32, TG_SHAPE(64));
    i->requires_grad = true;
    tg_tensor *x = tg_tensor_ones(TG_F64, TG_SHAPE(2));
    tg_tensor_set_requires_grad(x, 1);
    tg_tensor *in[2] = {x, i};
    tg_gradcheck_report *r = tg_gradcheck(sum_of, in, 2, NULL, NULL);
    cr_expect_null(r);
    cr_expect_str_eq(tg_last_errmsg(), "tg_gradcheck: input 1 ('') is i32 but requires a "
                                       "gradient; only f32/f64 inputs can be checked");
    tg_gradcheck_report_free(r);
    tg_tensor_free(x);
    tg_tensor_free(i);
}

/* ---- Break 3: conversions to int32 refuse what an int32 cannot hold, and write nothing ---- */

Test(robustness, set_refuses_values_an_i32_cannot_hold) {
    tg_tensor *t = tg_tensor_from(TG_I32, TG_SHAPE(2), (const int32_t[]){7, 8});
    const double bad[] = {NAN, INFINITY, -INFINITY, 2147483648.0, -2147483649.0, 1e300};
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        cr_expect_eq(tg_tensor_set(t, 1, bad[k]), TG_ERR_VALUE, "value %g", bad[k]);
        cr_expect_eq(((int32_t *)tg_tensor_data(t))[1], 8, "value %g", bad[k]);
    }
    cr_expect(strstr(tg_last_errmsg(), "tg_tensor_set: 1e+300 does not fit an i32 element") ==
                  tg_last_errmsg(),
              "%s", tg_last_errmsg());
    /* The edges and truncation toward zero still work. */
    cr_expect_eq(tg_tensor_set(t, 0, 2147483647.9), TG_OK);
    cr_expect_eq(((int32_t *)tg_tensor_data(t))[0], INT32_MAX);
    cr_expect_eq(tg_tensor_set(t, 0, -2147483648.9), TG_OK);
    cr_expect_eq(((int32_t *)tg_tensor_data(t))[0], INT32_MIN);
    tg_tensor_free(t);
}

Test(robustness, clone_and_copy_refuse_nan_inf_and_out_of_range_and_modify_nothing) {
    tg_tensor *f = tg_tensor_from(TG_F64, TG_SHAPE(3), (const double[]){1, 2, NAN});
    cr_expect_null(tg_tensor_clone(f, TG_I32));
    cr_expect_str_eq(tg_last_errmsg(),
                     "tg_tensor_clone: element 2 is nan, which an i32 cannot hold (NaN, an "
                     "infinity, or outside [-2147483648, 2147483647]); nothing was written");
    tg_tensor *dst = tg_tensor_from(TG_I32, TG_SHAPE(3), (const int32_t[]){5, 6, 7});
    cr_expect_eq(tg_tensor_copy(dst, f), TG_ERR_VALUE);
    tg_tensor_set(f, 2, 3e9);
    cr_expect_eq(tg_tensor_copy(dst, f), TG_ERR_VALUE);
    cr_expect(strstr(tg_last_errmsg(), "tg_tensor_copy: element 2 is 3e+09") == tg_last_errmsg(),
              "%s", tg_last_errmsg());
    const int32_t *d = tg_tensor_cdata(dst);
    cr_expect(d[0] == 5 && d[1] == 6 && d[2] == 7, "the first elements were written");
    tg_tensor *g = tg_tensor_from(TG_F32, TG_SHAPE(3), (const float[]){-INFINITY, 0, 0});
    cr_expect_eq(tg_tensor_copy(dst, g), TG_ERR_VALUE);
    tg_tensor_set(f, 2, -2.5);
    cr_expect_eq(tg_tensor_copy(dst, f), TG_OK);
    cr_expect(d[0] == 1 && d[1] == 2 && d[2] == -2);
    tg_tensor_free(g);
    tg_tensor_free(dst);
    tg_tensor_free(f);
}

/* ---- Break 9: the generator's calls on NULL are safe and say so ---- */

Test(robustness, rng_calls_on_null_return_0_or_nan_with_a_message) {
    tg_last_errmsg(); /* whatever was there */
    cr_expect_eq(tg_rng_next(NULL), 0);
    cr_expect_str_eq(tg_last_errmsg(), "tg_rng_next: rng is NULL; returned 0");
    cr_expect(isnan(tg_rng_uniform(NULL)));
    cr_expect_str_eq(tg_last_errmsg(), "tg_rng_uniform: rng is NULL; returned NaN");
    cr_expect(isnan(tg_rng_normal(NULL)));
    cr_expect_str_eq(tg_last_errmsg(), "tg_rng_normal: rng is NULL; returned NaN");
    cr_expect_eq(tg_rng_below(NULL, 10), 0);
    cr_expect_str_eq(tg_last_errmsg(), "tg_rng_below: rng is NULL; returned 0");
    tg_rng_seed(NULL, 1);
    cr_expect_str_eq(tg_last_errmsg(), "tg_rng_seed: rng is NULL");
}

/* ---- Break 10: tg_linear_forward leaves its own message on every failing path ---- */

Test(robustness, linear_forward_without_a_tape_leaves_its_own_message) {
    tg_tensor_new(TG_F32, -1, NULL); /* an older, unrelated error */
    cr_assert(strstr(tg_last_errmsg(), "tg_tensor_new") != NULL);
    tg_tensor *x = tg_tensor_new(TG_F32, TG_SHAPE(1, 2));
    int line = __LINE__ + 1;
    cr_expect_null(tg_linear_forward(NULL, NULL, x));
    char want[128];
    snprintf(want, sizeof want,
             "test_robustness.c:%d: tg_linear_forward: tape is NULL (and layer is NULL)", line);
    cr_expect_str_eq(tg_last_errmsg(), want);
    tg_tape *t = tg_tape_new();
    line = __LINE__ + 1;
    cr_expect_null(tg_linear_forward(t, NULL, x));
    snprintf(want, sizeof want, "test_robustness.c:%d: tg_linear_forward: layer is NULL", line);
    cr_expect_str_eq(tg_tape_errmsg(t), want);
    tg_tape_free(t);
    tg_tensor_free(x);
}

/* ---- Break 11: the random constructors validate their bounds as the initializers do ---- */

Test(robustness, random_constructors_refuse_bad_bounds) {
    tg_rng rng;
    tg_rng_seed(&rng, 1);
    cr_expect_null(tg_tensor_rand(TG_F32, TG_SHAPE(2), 1, 0, &rng));
    cr_expect_str_eq(tg_last_errmsg(),
                     "tg_tensor_rand: lo 1 and hi 0 must be finite with lo <= hi");
    cr_expect_null(tg_tensor_rand(TG_F32, TG_SHAPE(2), NAN, 1, &rng));
    cr_expect_null(tg_tensor_rand(TG_F32, TG_SHAPE(2), 0, NAN, &rng));
    cr_expect_null(tg_tensor_randn(TG_F64, TG_SHAPE(2), 0, -1, &rng));
    cr_expect_str_eq(tg_last_errmsg(),
                     "tg_tensor_randn: mean 0 must be finite and std -1 finite and >= 0");
    cr_expect_null(tg_tensor_randn(TG_F64, TG_SHAPE(2), 0, NAN, &rng));
    cr_expect_null(tg_tensor_randn(TG_F64, TG_SHAPE(2), NAN, 1, &rng));
    tg_tensor *ok = tg_tensor_rand(TG_F32, TG_SHAPE(2), 2, 2, &rng); /* lo == hi is allowed */
    cr_expect_not_null(ok);
    cr_expect_eq(tg_tensor_get(ok, 0), 2.0);
    tg_tensor_free(ok);
    ok = tg_tensor_randn(TG_F32, TG_SHAPE(2), 3, 0, &rng); /* std 0 too */
    cr_expect_eq(tg_tensor_get(ok, 1), 3.0);
    tg_tensor_free(ok);
}

/* ---- Break 13: freeing a tensor that is not the caller's is refused, not a double free ---- */

Test(robustness, freeing_a_gradient_is_refused) {
    tg_tensor *w = tg_tensor_ones(TG_F32, TG_SHAPE(3));
    tg_tensor_set_requires_grad(w, 1);
    tg_tensor_set_name(w, "w");
    tg_tape *t = tg_tape_new();
    cr_assert_eq(tg_backward(t, tg_sum(t, w)), TG_OK, "%s", tg_tape_errmsg(t));
    tg_tensor *g = tg_tensor_grad(w);
    cr_assert_not_null(g);
    tg_tensor_free(g); /* used to free it here, and again in tg_tensor_free(w) */
    cr_expect_eq(strncmp(tg_last_errmsg(), "tg_tensor_free: the gradient", 28), 0, "%s",
                 tg_last_errmsg());
    cr_expect_eq(tg_tensor_get(g, 0), 1.0); /* still alive */
    tg_tape_free(t);
    tg_tensor_free(w);
}

Test(robustness, freeing_a_dataset_batch_is_refused) {
    tg_tensor *x = tg_tensor_ones(TG_F32, TG_SHAPE(4, 2));
    tg_tensor *y = tg_tensor_new(TG_I32, TG_SHAPE(4));
    tg_dataset *ds = tg_dataset_new(x, y, 3, 1, 5);
    tg_tensor *bx, *by;
    cr_assert_eq(tg_dataset_next(ds, &bx, &by), 1);
    tg_tensor_free(bx);
    cr_expect_eq(strncmp(tg_last_errmsg(), "tg_tensor_free: the batch tensor", 32), 0, "%s",
                 tg_last_errmsg());
    tg_tensor_free(by);
    cr_assert_eq(tg_dataset_next(ds, &bx, &by), 1); /* the last, smaller batch */
    tg_tensor_free(bx);
    cr_assert_eq(tg_dataset_next(ds, &bx, &by), 0);
    cr_assert_eq(tg_dataset_next(ds, &bx, &by), 1); /* batches still usable */
    cr_expect_eq(tg_tensor_get(bx, 0), 1.0);
    tg_dataset_free(ds); /* frees them once */
    tg_tensor_free(x);
    tg_tensor_free(y);
}
