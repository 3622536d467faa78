/* circles.c -- the course report's dataset: points in [-1,1]^2 labelled by a circle. Course
 * material, kept apart from the training layer proper. */
#include "core/engine.h"

tg_status tg_circles_make(tg_dtype dtype, int64_t n, tg_rng *rng, tg_tensor **inputs,
                          tg_tensor **labels) {
    const char *who = "tg_circles_make";
    if (!inputs || !labels)
        return tg__set_last_error(TG_ERR_NULL, "%s: %s is NULL", who, inputs ? "labels" : "inputs");
    *inputs = *labels = NULL;
    if (!rng)
        return tg__set_last_error(TG_ERR_NULL, "%s: rng is NULL", who);
    if (dtype != TG_F32 && dtype != TG_F64)
        return tg__set_last_error(TG_ERR_DTYPE, "%s: dtype must be f32 or f64, not %s", who,
                                  tg__dtype_name(dtype));
    if (n < 1)
        return tg__set_last_error(TG_ERR_VALUE, "%s: n is %lld; need at least one point", who,
                                  (long long)n);
    tg_tensor *x = tg_tensor_new(dtype, 2, (const int64_t[]){n, 2});
    tg_tensor *y = x ? tg_tensor_new(TG_I32, 1, (const int64_t[]){n}) : NULL;
    if (!y) {
        tg_tensor_free(x);
        return TG_ERR_NOMEM; /* tg_tensor_new left the message */
    }
    /* Inside when x1^2 + x2^2 < 2/pi: the disc then has area 2, half of the square's 4. */
    const double r2 = 2.0 / 3.14159265358979323846;
    int32_t *lab = y->data;
    for (int64_t i = 0; i < n; i++) {
        double a = 2 * tg_rng_uniform(rng) - 1, b = 2 * tg_rng_uniform(rng) - 1;
        tg_tensor_set(x, 2 * i, a);
        tg_tensor_set(x, 2 * i + 1, b);
        lab[i] = a * a + b * b < r2;
    }
    *inputs = x;
    *labels = y;
    return TG_OK;
}
