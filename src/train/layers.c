/* layers.c -- layers: nothing here records anything the user could not record by hand (the linear
 * layer is exactly matmul_bt + add; the conv2d and batch-norm layers are one op each). */
#include "core/engine.h"

#include <stdlib.h>

void tg_linear_free(tg_linear *l) {
    if (!l)
        return;
    tg_tensor_free(l->W);
    tg_tensor_free(l->b);
    free(l);
}

tg_linear *tg_linear_new(tg_dtype dtype, int64_t n_in, int64_t n_out, const char *name,
                         tg_rng *rng) {
    const char *who = "tg_linear_new";
    if (dtype != TG_F32 && dtype != TG_F64) {
        tg__set_last_error(TG_ERR_DTYPE, "%s: dtype must be f32 or f64, not %s", who,
                           tg__dtype_name(dtype));
        return NULL;
    }
    if (n_in < 1 || n_out < 1) {
        tg__set_last_error(TG_ERR_VALUE, "%s: n_in %lld and n_out %lld must be >= 1", who,
                           (long long)n_in, (long long)n_out);
        return NULL;
    }
    if (!rng) {
        tg__set_last_error(TG_ERR_NULL, "%s: rng is NULL", who);
        return NULL;
    }
    tg_linear *l = calloc(1, sizeof *l);
    if (!l) {
        tg__set_last_error(TG_ERR_NOMEM, "%s: out of memory", who);
        return NULL;
    }
    l->W = tg_tensor_new(dtype, 2, (const int64_t[]){n_out, n_in});
    l->b = tg_tensor_new(dtype, 1, (const int64_t[]){n_out});
    if (!l->W || !l->b || tg_init_xavier_uniform(l->W, n_in, n_out, rng) != TG_OK) {
        tg_linear_free(l); /* the message of the failing call stays in tg_last_errmsg */
        return NULL;
    }
    tg_tensor_set_requires_grad(l->W, 1);
    tg_tensor_set_requires_grad(l->b, 1);
    char buf[TG_NAME_MAX + 8];
    snprintf(buf, sizeof buf, "%s%sW", name ? name : "", name && name[0] ? "." : "");
    tg_tensor_set_name(l->W, buf);
    snprintf(buf, sizeof buf, "%s%sb", name ? name : "", name && name[0] ? "." : "");
    tg_tensor_set_name(l->b, buf);
    return l;
}

tg_tensor *tg_linear_forward_at(tg_tape *t, const tg_linear *l, tg_tensor *x, const char *file,
                                int line) {
    /* Every failure leaves its own message: on the tape when there is one, else (no tape to
     * hold it) in tg_last_errmsg. */
    if (!t) {
        tg__set_last_error(TG_ERR_NULL, "%s:%d: tg_linear_forward: tape is NULL%s",
                           tg__base_name(file), line, l ? "" : " (and layer is NULL)");
        return NULL;
    }
    if (!l) {
        tg__tape_fail(t, TG_ERR_NULL, file, line, "tg_linear_forward", "layer is NULL");
        return NULL;
    }
    /* NULL inputs and a failed tape are handled by the builder calls themselves. */
    return tg_add_at(t, tg_matmul_bt_at(t, x, l->W, file, line), l->b, file, line);
}

/* ---- Convolutional layers (cnnops): each records exactly one op ---- */

/* "name.suffix", or "suffix" without a name. */
static void layer_name(tg_tensor *t, const char *name, const char *suffix) {
    char buf[TG_NAME_MAX + 16];
    snprintf(buf, sizeof buf, "%s%s%s", name ? name : "", name && name[0] ? "." : "", suffix);
    tg_tensor_set_name(t, buf);
}

static bool layer_dtype_ok(const char *who, tg_dtype dtype) {
    if (dtype == TG_F32 || dtype == TG_F64)
        return true;
    tg__set_last_error(TG_ERR_DTYPE, "%s: dtype must be f32 or f64, not %s", who,
                       tg__dtype_name(dtype));
    return false;
}

void tg_conv2d_layer_free(tg_conv2d_layer *l) {
    if (!l)
        return;
    tg_tensor_free(l->W);
    tg_tensor_free(l->b);
    free(l);
}

tg_conv2d_layer *tg_conv2d_layer_new(tg_dtype dtype, int64_t in_channels, int64_t out_channels,
                                     int64_t kh, int64_t kw, const tg_conv2d_opts *opts,
                                     const char *name, tg_rng *rng) {
    const char *who = "tg_conv2d_layer_new";
    if (!layer_dtype_ok(who, dtype))
        return NULL;
    const tg_conv2d_opts o = opts ? *opts : (tg_conv2d_opts){0};
    const int64_t groups = o.groups ? o.groups : 1;
    if (in_channels < 1 || out_channels < 1 || kh < 1 || kw < 1) {
        tg__set_last_error(TG_ERR_VALUE,
                           "%s: in_channels %lld, out_channels %lld and the kernel %lld x %lld "
                           "must be >= 1",
                           who, (long long)in_channels, (long long)out_channels, (long long)kh,
                           (long long)kw);
        return NULL;
    }
    if (groups < 1 || in_channels % groups || out_channels % groups) {
        tg__set_last_error(TG_ERR_VALUE,
                           "%s: groups %lld must be >= 1 and divide in_channels %lld and "
                           "out_channels %lld",
                           who, (long long)groups, (long long)in_channels, (long long)out_channels);
        return NULL;
    }
    for (int i = 0; i < 2; i++)
        if (o.stride[i] < 0 || o.padding[i] < 0 || o.dilation[i] < 0) {
            tg__set_last_error(TG_ERR_VALUE,
                               "%s: stride [%lld,%lld], padding [%lld,%lld] and dilation "
                               "[%lld,%lld] must be >= 0 (0: the default)",
                               who, (long long)o.stride[0], (long long)o.stride[1],
                               (long long)o.padding[0], (long long)o.padding[1],
                               (long long)o.dilation[0], (long long)o.dilation[1]);
            return NULL;
        }
    if (!rng) {
        tg__set_last_error(TG_ERR_NULL, "%s: rng is NULL", who);
        return NULL;
    }
    tg_conv2d_layer *l = calloc(1, sizeof *l);
    if (!l) {
        tg__set_last_error(TG_ERR_NOMEM, "%s: out of memory", who);
        return NULL;
    }
    l->opts = o;
    const int64_t cg = in_channels / groups;
    l->W = tg_tensor_new(dtype, 4, (const int64_t[]){out_channels, cg, kh, kw});
    l->b = tg_tensor_new(dtype, 1, (const int64_t[]){out_channels});
    /* He uniform from the fan-in of one output: C/groups * kh * kw inputs (for relu networks) */
    if (!l->W || !l->b || tg_init_he_uniform(l->W, cg * kh * kw, rng) != TG_OK) {
        tg_conv2d_layer_free(l); /* the message of the failing call stays in tg_last_errmsg */
        return NULL;
    }
    tg_tensor_set_requires_grad(l->W, 1);
    tg_tensor_set_requires_grad(l->b, 1);
    layer_name(l->W, name, "W");
    layer_name(l->b, name, "b");
    return l;
}

tg_tensor *tg_conv2d_layer_forward_at(tg_tape *t, const tg_conv2d_layer *l, tg_tensor *x,
                                      const char *file, int line) {
    if (!t) {
        tg__set_last_error(TG_ERR_NULL, "%s:%d: tg_conv2d_layer_forward: tape is NULL%s",
                           tg__base_name(file), line, l ? "" : " (and layer is NULL)");
        return NULL;
    }
    if (!l) {
        tg__tape_fail(t, TG_ERR_NULL, file, line, "tg_conv2d_layer_forward", "layer is NULL");
        return NULL;
    }
    return tg_conv2d_at(t, x, l->W, l->b, &l->opts, file, line);
}

void tg_batch_norm_layer_free(tg_batch_norm_layer *l) {
    if (!l)
        return;
    tg_tensor_free(l->weight);
    tg_tensor_free(l->bias);
    tg_tensor_free(l->running_mean);
    tg_tensor_free(l->running_var);
    free(l);
}

tg_batch_norm_layer *tg_batch_norm_layer_new(tg_dtype dtype, int64_t features, const char *name) {
    const char *who = "tg_batch_norm_layer_new";
    if (!layer_dtype_ok(who, dtype))
        return NULL;
    if (features < 1) {
        tg__set_last_error(TG_ERR_VALUE, "%s: features %lld must be >= 1", who,
                           (long long)features);
        return NULL;
    }
    tg_batch_norm_layer *l = calloc(1, sizeof *l);
    if (!l) {
        tg__set_last_error(TG_ERR_NOMEM, "%s: out of memory", who);
        return NULL;
    }
    const int64_t shape[1] = {features};
    l->weight = tg_tensor_ones(dtype, 1, shape);
    l->bias = tg_tensor_new(dtype, 1, shape);
    l->running_mean = tg_tensor_new(dtype, 1, shape);
    l->running_var = tg_tensor_ones(dtype, 1, shape);
    if (!l->weight || !l->bias || !l->running_mean || !l->running_var) {
        tg_batch_norm_layer_free(l);
        return NULL;
    }
    l->momentum = 0.1;
    l->eps = 1e-5;
    tg_tensor_set_requires_grad(l->weight, 1);
    tg_tensor_set_requires_grad(l->bias, 1);
    layer_name(l->weight, name, "weight");
    layer_name(l->bias, name, "bias");
    layer_name(l->running_mean, name, "running_mean");
    layer_name(l->running_var, name, "running_var");
    return l;
}

/* What a layer forward records after batch norm. */
typedef enum bn_after { BN_ALONE, BN_RELU, BN_RELU_MAX_POOL } bn_after;

/* The layer forwards: NULL checks naming `fn`, then the op (pool: BN_RELU_MAX_POOL's window,
 * whose NULL the op reports). */
static tg_tensor *bn_layer_forward(tg_tape *t, const tg_batch_norm_layer *l, tg_tensor *x,
                                   bn_after after, const tg_pool2d_opts *pool, const char *fn,
                                   const char *file, int line) {
    if (!t) {
        tg__set_last_error(TG_ERR_NULL, "%s:%d: %s: tape is NULL%s", tg__base_name(file), line, fn,
                           l ? "" : " (and layer is NULL)");
        return NULL;
    }
    if (!l) {
        tg__tape_fail(t, TG_ERR_NULL, file, line, fn, "layer is NULL");
        return NULL;
    }
    if (after == BN_RELU_MAX_POOL)
        return tg_batch_norm_relu_max_pool2d_at(t, x, l->weight, l->bias, l->running_mean,
                                                l->running_var, l->momentum, l->eps, pool, file,
                                                line);
    return (after == BN_RELU ? tg_batch_norm_relu_at : tg_batch_norm_at)(
        t, x, l->weight, l->bias, l->running_mean, l->running_var, l->momentum, l->eps, file, line);
}

tg_tensor *tg_batch_norm_layer_forward_at(tg_tape *t, const tg_batch_norm_layer *l, tg_tensor *x,
                                          const char *file, int line) {
    return bn_layer_forward(t, l, x, BN_ALONE, NULL, "tg_batch_norm_layer_forward", file, line);
}

tg_tensor *tg_batch_norm_layer_forward_relu_at(tg_tape *t, const tg_batch_norm_layer *l,
                                               tg_tensor *x, const char *file, int line) {
    return bn_layer_forward(t, l, x, BN_RELU, NULL, "tg_batch_norm_layer_forward_relu", file, line);
}

tg_tensor *tg_batch_norm_layer_forward_relu_max_pool2d_at(tg_tape *t, const tg_batch_norm_layer *l,
                                                          tg_tensor *x, const tg_pool2d_opts *pool,
                                                          const char *file, int line) {
    return bn_layer_forward(t, l, x, BN_RELU_MAX_POOL, pool,
                            "tg_batch_norm_layer_forward_relu_max_pool2d", file, line);
}
