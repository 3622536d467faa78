/* accumulate.c -- the arithmetic of the average (scaling a shard's gradient, the sum in rank
 * order), shared by the ranks (dp.c) and the single-process reference, tg_mpi_accumulate, so
 * that both round exactly alike. The library is compiled with -ffp-contract=off: a multiply and
 * an add are never fused into one rounding in one path and not in the other. */
#include "mpi_internal.h"

#include <stdlib.h>
#include <string.h>

size_t tg__mpi_dtype_size(tg_dtype dtype) { return dtype == TG_F64 ? 8 : 4; }

void tg__mpi_pack(void *dst, tg_tensor *param, double scale) {
    const tg_tensor *g = tg_tensor_grad(param);
    const int64_t n = tg_tensor_numel(param);
    if (tg_tensor_dtype(param) == TG_F64) {
        double *d = dst;
        const double *x = g ? tg_tensor_cdata(g) : NULL;
        for (int64_t i = 0; i < n; i++)
            d[i] = x ? scale * x[i] : 0.0;
    } else {
        float *d = dst;
        const float s = (float)scale; /* rounded once */
        const float *x = g ? tg_tensor_cdata(g) : NULL;
        for (int64_t i = 0; i < n; i++)
            d[i] = x ? s * x[i] : 0.0f;
    }
}

void tg__mpi_sum_ranks(void *out, const void *gathered, int world, int64_t numel, int64_t stride,
                       tg_dtype dtype) {
    if (dtype == TG_F64) {
        double *o = out;
        const double *g = gathered;
        memcpy(o, g, sizeof *o * (size_t)numel);
        for (int r = 1; r < world; r++)
            for (int64_t i = 0; i < numel; i++)
                o[i] += g[(int64_t)r * stride + i];
    } else {
        float *o = out;
        const float *g = gathered;
        memcpy(o, g, sizeof *o * (size_t)numel);
        for (int r = 1; r < world; r++)
            for (int64_t i = 0; i < numel; i++)
                o[i] += g[(int64_t)r * stride + i];
    }
}

/* A backward pass of sum(p) seeded with 0: the public API's only way to make a leaf's gradient. */
tg_status tg__mpi_ensure_grad(tg_tensor *p) {
    if (tg_tensor_grad(p))
        return TG_OK;
    tg_tape *t = tg_tape_new();
    tg_tensor *zero = tg_tensor_new(tg_tensor_dtype(p), 0, NULL);
    tg_status st = t && zero ? tg_backward_seed(t, tg_sum(t, p), zero) : TG_ERR_NOMEM;
    if (st != TG_OK)
        tg__mpi_fail(st, "tg_mpi: cannot make a gradient for '%s': %s", tg_tensor_name(p),
                     t && tg_tape_status(t) != TG_OK ? tg_tape_errmsg(t) : "out of memory");
    tg_tensor_free(zero);
    tg_tape_free(t);
    return st;
}

tg_status tg_mpi_accumulate(tg_tape *tape, tg_tensor *const *params, int n_params, int world,
                            const int64_t *batch, int64_t n, tg_mpi_loss_fn fn, void *user,
                            double *loss) {
    if (!tape || !params || !fn || (!batch && n > 0))
        return tg__mpi_fail(TG_ERR_NULL, "tg_mpi_accumulate: tape, params, fn or batch is NULL");
    if (n_params < 1 || world < 1 || n < 1)
        return tg__mpi_fail(TG_ERR_VALUE,
                            "tg_mpi_accumulate: need n_params >= 1, world >= 1, n >= 1; got %d, "
                            "%d, %lld",
                            n_params, world, (long long)n);
    size_t total = 0;
    for (int p = 0; p < n_params; p++) {
        const tg_dtype dt = tg_tensor_dtype(params[p]);
        if (!params[p] || (dt != TG_F32 && dt != TG_F64) || !tg_tensor_requires_grad(params[p]))
            return tg__mpi_fail(TG_ERR_DTYPE,
                                "tg_mpi_accumulate: parameter %d is NULL, not f32/f64 or does not "
                                "require a gradient",
                                p);
        total += (size_t)tg_tensor_numel(params[p]) * tg__mpi_dtype_size(dt) * (size_t)world;
    }
    /* Row r of parameter p's block holds s_r * g_r, as rank r would send it. */
    char *rows = malloc(total ? total : 1);
    if (!rows)
        return tg__mpi_fail(TG_ERR_NOMEM, "tg_mpi_accumulate: out of memory (%zu bytes)", total);
    tg_status st = TG_OK;
    double sum_loss = 0;
    for (int r = 0; r < world && st == TG_OK; r++) {
        const int64_t *mine;
        const int64_t rows_r = tg_mpi_shard(r, world, batch, n, &mine);
        const double s = tg_mpi_shard_scale(rows_r, n);
        for (int p = 0; p < n_params; p++)
            tg_tensor_zero_grad(params[p]);
        double loss_r = 0;
        if (rows_r > 0) {
            tg_tape_reset(tape);
            tg_tensor *l = fn(tape, mine, rows_r, user);
            st = l ? tg_backward(tape, l) : tg_tape_status(tape);
            if (st == TG_OK && !l)
                st = TG_ERR_STATE;
            if (st != TG_OK) {
                tg__mpi_fail(st, "tg_mpi_accumulate: shard %d of %d: %s", r, world,
                             tg_tape_status(tape) != TG_OK ? tg_tape_errmsg(tape)
                                                           : "the loss function returned NULL");
                break;
            }
            loss_r = tg_tensor_item(l);
        }
        sum_loss += s * loss_r;
        char *at = rows;
        for (int p = 0; p < n_params; p++) {
            const size_t row =
                (size_t)tg_tensor_numel(params[p]) * tg__mpi_dtype_size(tg_tensor_dtype(params[p]));
            tg__mpi_pack(at + (size_t)r * row, params[p], s);
            at += row * (size_t)world;
        }
    }
    char *at = rows;
    for (int p = 0; p < n_params && st == TG_OK; p++) {
        const int64_t numel = tg_tensor_numel(params[p]);
        const tg_dtype dt = tg_tensor_dtype(params[p]);
        st = tg__mpi_ensure_grad(params[p]);
        if (st == TG_OK)
            tg__mpi_sum_ranks(tg_tensor_data(tg_tensor_grad(params[p])), at, world, numel, numel,
                              dt);
        at += (size_t)numel * tg__mpi_dtype_size(dt) * (size_t)world;
    }
    free(rows);
    if (st == TG_OK && loss)
        *loss = sum_loss;
    return st;
}
