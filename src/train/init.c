/* init.c -- initializers: fill a parameter in place from the project's seeded generator, so a seed
 * fixes the weights on every platform (zeros, constant, uniform, normal, Xavier, He). */
#include "core/engine.h"

#include <math.h>

/* A parameter to fill: an f32/f64 leaf. Sets the last error naming `who` otherwise. */
static tg_status check_fillable(const char *who, const tg_tensor *t) {
    if (!t)
        return tg__set_last_error(TG_ERR_NULL, "%s: tensor is NULL", who);
    if (t->dtype != TG_F32 && t->dtype != TG_F64)
        return tg__set_last_error(TG_ERR_DTYPE, "%s: '%s' is %s; initializers fill f32 or f64", who,
                                  t->name, tg__dtype_name(t->dtype));
    if (t->on_tape)
        return tg__set_last_error(TG_ERR_STATE,
                                  "%s: '%s' is a tape tensor; initializers fill leaves", who,
                                  tg_tensor_op_name(t));
    return TG_OK;
}

/* Fills t with a + b u (uniform u in [0,1)) or a + b z (standard normal z), in row-major order. */
static tg_status fill_random(const char *who, tg_tensor *t, double a, double b, bool normal,
                             tg_rng *rng) {
    tg_status s = check_fillable(who, t);
    if (s != TG_OK)
        return s;
    if (!rng)
        return tg__set_last_error(TG_ERR_NULL, "%s: rng is NULL", who);
    TG_FOR_DTYPE(t->dtype, T, T *d = t->data;
                 for (int64_t i = 0; i < t->numel; i++) d[i] =
                     (T)(a + b * (normal ? tg_rng_normal(rng) : tg_rng_uniform(rng))););
    return TG_OK;
}

tg_status tg_init_constant(tg_tensor *t, double value) {
    tg_status s = check_fillable("tg_init_constant", t);
    if (s != TG_OK)
        return s;
    TG_FOR_DTYPE(t->dtype, T, T *d = t->data;
                 for (int64_t i = 0; i < t->numel; i++) d[i] = (T)value;);
    return TG_OK;
}

tg_status tg_init_zeros(tg_tensor *t) {
    tg_status s = check_fillable("tg_init_zeros", t);
    if (s != TG_OK)
        return s;
    memset(t->data, 0, (size_t)t->numel * tg__dtype_size(t->dtype));
    return TG_OK;
}

tg_status tg_init_uniform(tg_tensor *t, double lo, double hi, tg_rng *rng) {
    if (!(lo <= hi)) /* also rejects NaN */
        return tg__set_last_error(TG_ERR_VALUE, "tg_init_uniform: lo %g is not <= hi %g", lo, hi);
    return fill_random("tg_init_uniform", t, lo, hi - lo, false, rng);
}

tg_status tg_init_normal(tg_tensor *t, double mean, double std, tg_rng *rng) {
    if (!(std >= 0))
        return tg__set_last_error(TG_ERR_VALUE, "tg_init_normal: std %g is negative", std);
    return fill_random("tg_init_normal", t, mean, std, true, rng);
}

static tg_status check_fans(const char *who, int64_t fan_in, int64_t fan_out) {
    if (fan_in < 1 || fan_out < 1)
        return tg__set_last_error(TG_ERR_VALUE, "%s: fan_in %lld and fan_out %lld must be >= 1",
                                  who, (long long)fan_in, (long long)fan_out);
    return TG_OK;
}

/* Glorot & Bengio (2010): Var(W) = 2 / (fan_in + fan_out); U(-a,a) has variance a^2 / 3. */
tg_status tg_init_xavier_uniform(tg_tensor *t, int64_t fan_in, int64_t fan_out, tg_rng *rng) {
    const char *who = "tg_init_xavier_uniform";
    tg_status s = check_fans(who, fan_in, fan_out);
    if (s != TG_OK)
        return s;
    double a = sqrt(6.0 / (double)(fan_in + fan_out));
    return fill_random(who, t, -a, 2 * a, false, rng);
}

tg_status tg_init_xavier_normal(tg_tensor *t, int64_t fan_in, int64_t fan_out, tg_rng *rng) {
    const char *who = "tg_init_xavier_normal";
    tg_status s = check_fans(who, fan_in, fan_out);
    if (s != TG_OK)
        return s;
    return fill_random(who, t, 0.0, sqrt(2.0 / (double)(fan_in + fan_out)), true, rng);
}

/* He et al. (2015): relu zeroes half its inputs, so Var(W) = 2 / fan_in keeps the scale. */
tg_status tg_init_he_uniform(tg_tensor *t, int64_t fan_in, tg_rng *rng) {
    const char *who = "tg_init_he_uniform";
    tg_status s = check_fans(who, fan_in, 1);
    if (s != TG_OK)
        return s;
    double a = sqrt(6.0 / (double)fan_in);
    return fill_random(who, t, -a, 2 * a, false, rng);
}

tg_status tg_init_he_normal(tg_tensor *t, int64_t fan_in, tg_rng *rng) {
    const char *who = "tg_init_he_normal";
    tg_status s = check_fans(who, fan_in, 1);
    if (s != TG_OK)
        return s;
    return fill_random(who, t, 0.0, sqrt(2.0 / (double)fan_in), true, rng);
}
