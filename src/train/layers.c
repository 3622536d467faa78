/* layers.c -- layers: nothing here records anything the user could not record by hand (the linear
 * layer is exactly matmul_bt + add). */
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
