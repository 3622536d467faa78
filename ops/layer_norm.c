/* layer_norm: y = (x - mu) * rstd * w + b over the last k axes (torch.nn.functional.layer_norm)
 *   x [.., S] with S the last k = normalized_ndim axes (n elements per row), weight w and bias b
 *   of shape S (each optional), mu = mean of the row, var = mean of (x - mu)^2 (biased),
 *   rstd = 1 / sqrt(var + eps), xhat = (x - mu) * rstd.
 * With g = dy * w (dy where there is no weight), per row:
 *   dx = rstd * (g - mean(g) - xhat * mean(g * xhat))
 *   (from dxhat_j/dx_i = rstd (delta_ij - 1/n - xhat_i xhat_j / n)),
 *   dw += sum over rows of dy * xhat,  db += sum over rows of dy  (rows added in order).
 * Fused: saves each row's mu and rstd (double) and rebuilds xhat from x, with no second pass
 * over the statistics. */
#include "core/engine.h"

#include <math.h>

typedef struct ln_params {
    int k; /* normalized_ndim */
    int has_w, has_b;
    double eps;
} ln_params;

typedef struct ln_saved {
    double *mean, *rstd; /* [rows] */
} ln_saved;

static tg_status ln_shape(tg_tensor *y, char *msg, size_t len) {
    const ln_params *p = y->params;
    const tg_tensor *x = y->inputs[0];
    char s1[TG_SHAPE_STR_LEN], s2[TG_SHAPE_STR_LEN];
    if (p->k < 1 || p->k > x->rank) {
        snprintf(msg, len, "normalized_ndim %d must be in 1..%d for %s", p->k, x->rank,
                 tg__shape_str(x, s1, sizeof s1));
        return TG_ERR_VALUE;
    }
    if (!(p->eps >= 0) || isinf(p->eps)) {
        snprintf(msg, len, "eps %g must be >= 0 and finite", p->eps);
        return TG_ERR_VALUE;
    }
    for (int i = 1; i < y->n_inputs; i++) {
        const tg_tensor *w = y->inputs[i];
        bool ok = w->rank == p->k;
        for (int j = 0; ok && j < p->k; j++)
            ok = w->shape[j] == x->shape[x->rank - p->k + j];
        if (!ok) {
            tg_tensor sh = {.rank = p->k};
            memcpy(sh.shape, x->shape + x->rank - p->k, sizeof(int64_t) * (size_t)p->k);
            snprintf(msg, len, "the %s is %s; it must be the normalized shape %s",
                     i == 1 && p->has_w ? "weight" : "bias", tg__shape_str(w, s1, sizeof s1),
                     tg__shape_str(&sh, s2, sizeof s2));
            return TG_ERR_SHAPE;
        }
    }
    return tg__shape_same(y, msg, len);
}

static int ln_print(const tg_tensor *y, char *buf, size_t len) {
    const ln_params *p = y->params;
    return snprintf(buf, len, "normalized_ndim=%d, eps=%g%s%s", p->k, p->eps,
                    p->has_w ? ", weight" : "", p->has_b ? ", bias" : "");
}

static int64_t row_len(const tg_tensor *y) {
    const ln_params *p = y->params;
    int64_t n = 1;
    for (int j = y->rank - p->k; j < y->rank; j++)
        n *= y->shape[j];
    return n;
}

static tg_status ln_forward(tg_tape *tape, tg_tensor *y) {
    const ln_params *p = y->params;
    const tg_tensor *x = y->inputs[0];
    const tg_tensor *w = p->has_w ? y->inputs[1] : NULL;
    const tg_tensor *b = p->has_b ? y->inputs[1 + p->has_w] : NULL;
    const int64_t n = row_len(y), rows = n ? y->numel / n : 0;
    ln_saved *sv = tg__tape_alloc(tape, sizeof *sv);
    double *st = sv ? tg__tape_alloc_raw(tape, sizeof(double) * (size_t)(2 * rows + 1)) : NULL;
    if (!st)
        return TG_ERR_NOMEM;
    sv->mean = st;
    sv->rstd = st + rows;
    y->saved = sv;
    TG_FOR_DTYPE(y->dtype, T, const T *px = x->data; T *py = y->data;
                 const T *pw = w ? w->data : NULL; const T *pb = b ? b->data : NULL;
                 for (int64_t r = 0; r < rows; r++) {
                     const T *xr = px + r * n;
                     T *yr = py + r * n;
                     double mu = 0, var = 0;
                     for (int64_t i = 0; i < n; i++) mu += (double)xr[i];
                     mu /= (double)n;
                     for (int64_t i = 0; i < n; i++) {
                         const double c = (double)xr[i] - mu;
                         var += c * c;
                     }
                     var /= (double)n;
                     const double rstd = 1.0 / sqrt(var + p->eps);
                     sv->mean[r] = mu;
                     sv->rstd[r] = rstd;
                     for (int64_t i = 0; i < n; i++) {
                         double v = ((double)xr[i] - mu) * rstd;
                         if (pw)
                             v *= (double)pw[i];
                         if (pb)
                             v += (double)pb[i];
                         yr[i] = (T)v;
                     }
                 });
    return TG_OK;
}

static void ln_backward(const tg_tensor *y, const tg_tensor *dout, tg_tensor *const *din) {
    const ln_params *p = y->params;
    const tg_tensor *x = y->inputs[0];
    const tg_tensor *w = p->has_w ? y->inputs[1] : NULL;
    tg_tensor *dx = din[0], *dw = p->has_w ? din[1] : NULL,
              *db = p->has_b ? din[1 + p->has_w] : NULL;
    const ln_saved *sv = y->saved;
    const int64_t n = row_len(y), rows = n ? y->numel / n : 0;
    TG_FOR_DTYPE(y->dtype, T, const T *px = x->data; const T *dy = dout->data;
                 const T *pw = w ? w->data : NULL; T *pdx = dx ? dx->data : NULL;
                 T *pdw = dw ? dw->data : NULL; T *pdb = db ? db->data : NULL;
                 for (int64_t r = 0; r < rows; r++) {
                     const T *xr = px + r * n, *dyr = dy + r * n;
                     const double mu = sv->mean[r], rstd = sv->rstd[r];
                     if (pdx) {
                         double mg = 0, mgx = 0; /* mean(g), mean(g * xhat) */
                         for (int64_t i = 0; i < n; i++) {
                             const double g = (double)dyr[i] * (pw ? (double)pw[i] : 1.0);
                             mg += g;
                             mgx += g * ((double)xr[i] - mu) * rstd;
                         }
                         mg /= (double)n;
                         mgx /= (double)n;
                         for (int64_t i = 0; i < n; i++) {
                             const double g = (double)dyr[i] * (pw ? (double)pw[i] : 1.0);
                             const double xh = ((double)xr[i] - mu) * rstd;
                             pdx[r * n + i] += (T)(rstd * (g - mg - xh * mgx));
                         }
                     }
                     if (pdw)
                         for (int64_t i = 0; i < n; i++)
                             pdw[i] += (T)((double)dyr[i] * ((double)xr[i] - mu) * rstd);
                     if (pdb)
                         for (int64_t i = 0; i < n; i++) pdb[i] += dyr[i];
                 });
}

const tg__op_desc tg__op_layer_norm = {
    .name = "layer_norm",
    .saves = "each row's mean and 1/sqrt(var + eps)",
    .min_inputs = 1,
    .max_inputs = 3,
    .params_size = sizeof(ln_params),
    .shape = ln_shape,
    .forward = ln_forward,
    .backward = ln_backward,
    .print_params = ln_print,
    .rule =
        "dx += rstd (g - mean(g) - xhat mean(g xhat)), g = dy w; dw += sum dy xhat; db += sum dy",
};

tg_tensor *tg_layer_norm_at(tg_tape *t, tg_tensor *x, tg_tensor *weight, tg_tensor *bias,
                            int normalized_ndim, double eps, const char *file, int line) {
    tg_tensor *in[3] = {x, weight, bias};
    int n = 1;
    if (weight)
        in[n++] = weight;
    if (bias)
        in[n++] = bias;
    ln_params p = {normalized_ndim, weight != NULL, bias != NULL, eps};
    return tg__record(t, &tg__op_layer_norm, in, n, &p, file, line);
}
