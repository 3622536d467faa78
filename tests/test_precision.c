/* Forward precision for extreme logits (log_softmax, softmax_cross_entropy within a few ulp of the
 * exact value for any finite logits), NaN propagation through relu (as PyTorch), and anomaly mode
 * blaming a leaf's stale gradient rather than the clean op that adds to it. */
#include "tapegrad.h"

#include <criterion/criterion.h>
#include <float.h>
#include <math.h>
#include <string.h>

/* Distance in units in the last place between two floats/doubles of the same sign. */
static double ulps_f(float a, float b) {
    return fabs((double)a - (double)b) / (double)(nextafterf(fabsf(b), INFINITY) - fabsf(b));
}
static double ulps_d(double a, double b) {
    return fabs(a - b) / (nextafter(fabs(b), INFINITY) - fabs(b));
}

/* log_softmax of [a, a] is -ln 2 exactly, whatever a; of [a, a, a] -ln 3. */
Test(precision, log_softmax_of_equal_large_logits) {
    const double scales[] = {1e4,   -1e4,        1e7,          -1e7,    1e30,
                             -1e30, FLT_MAX / 2, -FLT_MAX / 2, FLT_MAX, -FLT_MAX};
    tg_tape *t = tg_tape_new();
    for (size_t k = 0; k < sizeof scales / sizeof scales[0]; k++) {
        for (int n = 2; n <= 3; n++) {
            const float a = (float)scales[k];
            float xs[3] = {a, a, a};
            tg_tensor *x = tg_tensor_from(TG_F32, 1, (const int64_t[]){n}, xs);
            tg_tape_reset(t);
            tg_tensor *y = tg_log_softmax(t, x);
            cr_assert_not_null(y, "%s", tg_tape_errmsg(t));
            const float want = -logf((float)n);
            for (int i = 0; i < n; i++) {
                const float got = ((const float *)tg_tensor_cdata(y))[i];
                cr_expect_leq(ulps_f(got, want), 2.0, "f32 log_softmax of %d x %g: %.9g, want %.9g",
                              n, scales[k], (double)got, (double)want);
            }
            tg_tensor_free(x);
        }
    }
    tg_tape_free(t);
}

/* Cross-entropy of a row of C equal logits is ln C, in f32 and f64, at any finite scale
 * (three logits of -1e30 gave 0). */
Test(precision, cross_entropy_of_equal_large_logits) {
    const double scales[] = {1e4, -1e4, 1e7, -1e7, 1e30, -1e30, DBL_MAX / 2, -DBL_MAX};
    tg_tape *t = tg_tape_new();
    for (size_t k = 0; k < sizeof scales / sizeof scales[0]; k++) {
        const double a = scales[k];
        const int32_t cls[1] = {1};
        tg_tensor *y = tg_tensor_from(TG_I32, TG_SHAPE(1), cls);
        /* f64 at every scale */
        tg_tensor *z = tg_tensor_from(TG_F64, TG_SHAPE(1, 3), (double[]){a, a, a});
        tg_tape_reset(t);
        tg_tensor *l = tg_softmax_cross_entropy(t, z, y);
        cr_assert_not_null(l, "%s", tg_tape_errmsg(t));
        cr_expect_leq(ulps_d(tg_tensor_item(l), log(3.0)), 2.0, "f64 scale %g: %.17g", a,
                      tg_tensor_item(l));
        tg_tensor_free(z);
        /* f32 where the scale is a float */
        if (fabs(a) <= FLT_MAX) {
            const float af = (float)a;
            tg_tensor *zf = tg_tensor_from(TG_F32, TG_SHAPE(1, 3), (float[]){af, af, af});
            tg_tape_reset(t);
            tg_tensor *lf = tg_softmax_cross_entropy(t, zf, y);
            cr_assert_not_null(lf, "%s", tg_tape_errmsg(t));
            const float got = *(const float *)tg_tensor_cdata(lf);
            cr_expect_leq(ulps_f(got, logf(3.0f)), 2.0, "f32 scale %g: %.9g", a, (double)got);
            tg_tensor_free(zf);
        }
        tg_tensor_free(y);
    }
    tg_tape_free(t);
}

/* Unequal large logits: [a, a - 1] gives log(1 + e^-1) for class 0 in f64, exactly as for a = 0. */
Test(precision, cross_entropy_keeps_the_small_difference) {
    tg_tape *t = tg_tape_new();
    const double want = log1p(exp(-1.0));
    const double scales[] = {0, 1e7, -1e7, 1e12};
    for (size_t k = 0; k < sizeof scales / sizeof scales[0]; k++) {
        const double a = scales[k];
        tg_tensor *z = tg_tensor_from(TG_F64, TG_SHAPE(1, 2), (double[]){a, a - 1});
        tg_tensor *y = tg_tensor_from(TG_I32, TG_SHAPE(1), (int32_t[]){0});
        tg_tape_reset(t);
        tg_tensor *l = tg_softmax_cross_entropy(t, z, y);
        cr_assert_not_null(l);
        cr_expect_leq(ulps_d(tg_tensor_item(l), want), 4.0, "scale %g: %.17g want %.17g", a,
                      tg_tensor_item(l), want);
        tg_tensor_free(z);
        tg_tensor_free(y);
    }
    tg_tape_free(t);
}

/* relu(NaN) is NaN (it was 0: the NaN vanished). */
Test(precision, relu_passes_nan) {
    tg_tensor *x = tg_tensor_from(TG_F64, TG_SHAPE(3), (double[]){NAN, -1, 2});
    tg_tape *t = tg_tape_new();
    tg_tensor *y = tg_relu(t, x);
    cr_assert_not_null(y);
    cr_expect(isnan(tg_tensor_get(y, 0)));
    cr_expect_eq(tg_tensor_get(y, 1), 0.0);
    cr_expect_eq(tg_tensor_get(y, 2), 2.0);
    tg_tape_free(t);
    tg_tensor_free(x);
}

/* A leaf whose gradient already holds -inf from an earlier pass: anomaly mode names the leaf
 * before the pass, instead of blaming the first (clean) op that adds to it. */
Test(precision, anomaly_names_a_stale_leaf_gradient) {
    tg_tensor *w = tg_tensor_from(TG_F64, TG_SHAPE(2), (double[]){0, 1});
    tg_tensor_set_name(w, "w");
    tg_tensor_set_requires_grad(w, 1);
    tg_tape *t = tg_tape_new();
    cr_assert_eq(tg_backward(t, tg_sum(t, tg_log(t, w))), TG_OK); /* dw[0] = 1/0 = inf */
    cr_assert(isinf(tg_tensor_get(tg_tensor_grad(w), 0)));
    tg_tape_reset(t);
    tg_tape_set_anomaly(t, 1);
    tg_tensor *l = tg_sum(t, tg_scale(t, w, 2)); /* clean */
    cr_expect_eq(tg_backward(t, l), TG_ERR_NONFINITE);
    cr_expect(strstr(tg_tape_errmsg(t), "before the pass, the gradient of leaf \"w\" [2]") != NULL,
              "%s", tg_tape_errmsg(t));
    cr_expect(strstr(tg_tape_errmsg(t), "backward of tg_scale") == NULL, "%s", tg_tape_errmsg(t));
    tg_tape_free(t);
    tg_tensor_free(w);
}
