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
#include "kernels/parallel.h"

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

/* The float32 path. Sums over a row go by blocks of 64: 8 interleaved float partial sums
 * (x_0 + x_8 + ..., x_1 + x_9 + ...) of 8 terms each, added in double: a fixed order the
 * compiler can put in vector registers. The elementwise parts are float: xhat = ((x - mu_hi) -
 * mu_lo) rstd with mu = mu_hi + mu_lo in two floats (x - mu_hi is exact for x near mu, so rows
 * of a large mean keep their precision), y = xhat w + b, and dx. On several threads each takes
 * a contiguous part of the rows (the same halves as the matmul and the elementwise ops take of a
 * [tokens, features] activation, so a row stays in the cache of the core that made it), and, for
 * dw and db, a part of the columns, each column summed over all rows in order as on one thread:
 * the bits do not depend on the thread count. */
enum { LN_LANES = 8 };

static double ln_lanes_total(const double *acc) {
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

/* The sum of v[0..m), m <= LN_BLOCK, as float partial sums in LN_LANES lanes (each of at most
 * LN_BLOCK / LN_LANES terms) added in double. */
enum { LN_BLOCK = 64 };

static double ln_block_sum(const float *restrict v, int64_t m) {
    float acc[LN_LANES] = {0};
    int64_t i = 0;
    for (; i + LN_LANES <= m; i += LN_LANES)
        for (int j = 0; j < LN_LANES; j++)
            /* v[0..m) is written by every caller; the analyzer cannot see m there */
            // cppcheck-suppress uninitvar
            acc[j] += v[i + j];
    for (int j = 0; i < m; i++, j++)
        acc[j] += v[i];
    double d[LN_LANES];
    for (int j = 0; j < LN_LANES; j++)
        d[j] = (double)acc[j];
    return ln_lanes_total(d);
}

/* mu and var of one row: m = sum(x) / n, then with d = x - (float)m (exact for x near m),
 * mu = (float)m + mean(d) and var = mean(d^2) - mean(d)^2: mean(d) is only m's rounding, a
 * correction, not a cancellation, so rows of a large mean keep their digits. */
static void ln_stats_f32(const float *restrict x, int64_t n, double *mu, double *var) {
    double s = 0;
    for (int64_t b = 0; b < n; b += LN_BLOCK)
        s += ln_block_sum(x + b, n - b < LN_BLOCK ? n - b : LN_BLOCK);
    const double m = s / (double)n;
    const float mf = (float)m;
    double sd = 0, sq = 0;
    for (int64_t b = 0; b < n; b += LN_BLOCK) {
        const int64_t k = n - b < LN_BLOCK ? n - b : LN_BLOCK;
        float d[LN_BLOCK], d2[LN_BLOCK];
        for (int64_t i = 0; i < k; i++) {
            d[i] = x[b + i] - mf;
            d2[i] = d[i] * d[i];
        }
        sd += ln_block_sum(d, k);
        sq += ln_block_sum(d2, k);
    }
    const double md = sd / (double)n, v = sq / (double)n - md * md;
    *mu = (double)mf + md; /* the float partial sums' rounding of m corrected */
    *var = v > 0 ? v : 0;
}

static void ln_row_forward_f32(const float *restrict x, const float *restrict w,
                               const float *restrict b, float *restrict y, int64_t n, float mu,
                               float mu_lo, float rstd) {
    if (w && b)
        for (int64_t i = 0; i < n; i++)
            y[i] = ((x[i] - mu) - mu_lo) * rstd * w[i] + b[i];
    else if (w)
        for (int64_t i = 0; i < n; i++)
            y[i] = ((x[i] - mu) - mu_lo) * rstd * w[i];
    else if (b)
        for (int64_t i = 0; i < n; i++)
            y[i] = ((x[i] - mu) - mu_lo) * rstd + b[i];
    else
        for (int64_t i = 0; i < n; i++)
            y[i] = ((x[i] - mu) - mu_lo) * rstd;
}

static void ln_forward_rows_f32(const tg_tensor *y, const ln_saved *sv, int64_t n, int64_t r0,
                                int64_t r1) {
    const ln_params *p = y->params;
    const float *px = y->inputs[0]->data, *pw = p->has_w ? y->inputs[1]->data : NULL;
    const float *pb = p->has_b ? y->inputs[1 + p->has_w]->data : NULL;
    float *py = y->data;
    for (int64_t r = r0; r < r1; r++) {
        double mu, var;
        ln_stats_f32(px + r * n, n, &mu, &var);
        const double rstd = 1.0 / sqrt(var + p->eps);
        sv->mean[r] = mu;
        sv->rstd[r] = rstd;
        ln_row_forward_f32(px + r * n, pw, pb, py + r * n, n, (float)mu,
                           (float)(mu - (double)(float)mu), (float)rstd);
    }
}

/* A job over the rows (forward) or the rows and columns (backward) of a float32 layer norm. */
typedef struct ln_job {
    const tg_tensor *y, *dout;
    tg_tensor *const *din;
    const ln_saved *sv;
    int64_t n, rows;
} ln_job;

static void ln_forward_job(void *ctx, int tid, int nth) {
    const ln_job *j = ctx;
    int64_t r0, r1;
    tg__split(j->rows, 1, tid, nth, &r0, &r1);
    ln_forward_rows_f32(j->y, j->sv, j->n, r0, r1);
}

static void ln_forward_f32(const tg_tensor *y, const ln_saved *sv, int64_t n, int64_t rows) {
    ln_job j = {.y = y, .sv = sv, .n = n, .rows = rows};
    tg__parallel_run(tg__threads_for_rows(n * rows, rows), ln_forward_job, &j);
}

/* One row of dx: g = dy w (dy without a weight), xhat = (x - mu) rstd;
 * dx += rstd (g - mean(g) - xhat mean(g xhat)).
 * The sums over the row go a block of LN_BLOCK at a time through small buffers. */
static void ln_row_dx_f32(const float *restrict x, const float *restrict dy,
                          const float *restrict w, float *restrict dx, int64_t n, float mu,
                          float mu_lo, float rstd, bool dx_fresh) {
    double sg = 0, sgx = 0;
    for (int64_t b = 0; b < n; b += LN_BLOCK) {
        const int64_t m = n - b < LN_BLOCK ? n - b : LN_BLOCK;
        float g[LN_BLOCK], gx[LN_BLOCK];
        if (w)
            for (int64_t i = 0; i < m; i++)
                g[i] = dy[b + i] * w[b + i];
        else
            for (int64_t i = 0; i < m; i++)
                g[i] = dy[b + i];
        for (int64_t i = 0; i < m; i++)
            gx[i] = g[i] * (((x[b + i] - mu) - mu_lo) * rstd);
        sg += ln_block_sum(g, m);
        sgx += ln_block_sum(gx, m);
    }
    const float mg = (float)(sg / (double)n), mgx = (float)(sgx / (double)n);
    if (dx_fresh) /* the first gradient dx receives: stored, the same arithmetic */
        for (int64_t i = 0; i < n; i++)
            dx[i] = rstd * ((w ? dy[i] * w[i] : dy[i]) - mg - (((x[i] - mu) - mu_lo) * rstd) * mgx);
    else if (w)
        for (int64_t i = 0; i < n; i++)
            dx[i] += rstd * (dy[i] * w[i] - mg - (((x[i] - mu) - mu_lo) * rstd) * mgx);
    else
        for (int64_t i = 0; i < n; i++)
            dx[i] += rstd * (dy[i] - mg - (((x[i] - mu) - mu_lo) * rstd) * mgx);
}

/* Thread tid's part of the backward: dx of its rows, then dw += dy xhat and db += dy over all
 * rows, in order, for its columns. */
static void ln_backward_job(void *ctx, int tid, int nth) {
    const ln_job *j = ctx;
    const tg_tensor *y = j->y;
    const ln_params *p = y->params;
    const ln_saved *sv = j->sv;
    const int64_t n = j->n;
    const float *px = y->inputs[0]->data, *dy = j->dout->data;
    const float *pw = p->has_w ? y->inputs[1]->data : NULL;
    tg_tensor *const *din = j->din;
    float *dx = din[0] ? din[0]->data : NULL;
    float *dw = p->has_w && din[1] ? din[1]->data : NULL;
    float *db = p->has_b && din[1 + p->has_w] ? din[1 + p->has_w]->data : NULL;
    if (dx) {
        const bool dx_fresh = tg__dx_fresh(din[0]);
        int64_t r0, r1;
        tg__split(j->rows, 1, tid, nth, &r0, &r1);
        for (int64_t r = r0; r < r1; r++) {
            const double mu = sv->mean[r];
            ln_row_dx_f32(px + r * n, dy + r * n, pw, dx + r * n, n, (float)mu,
                          (float)(mu - (double)(float)mu), (float)sv->rstd[r], dx_fresh);
        }
    }
    if (!dw && !db)
        return;
    int64_t c0, c1; /* whole cache lines of a row where the row has them */
    tg__split(n, 16, tid, nth, &c0, &c1);
    for (int64_t r = 0; r < j->rows; r++) {
        const float *x = px + r * n, *g = dy + r * n;
        const double mu = sv->mean[r];
        const float mu_hi = (float)mu, mu_lo = (float)(mu - (double)mu_hi),
                    rstd = (float)sv->rstd[r];
        if (dw)
            for (int64_t i = c0; i < c1; i++)
                dw[i] += g[i] * (((x[i] - mu_hi) - mu_lo) * rstd);
        if (db)
            for (int64_t i = c0; i < c1; i++)
                db[i] += g[i];
    }
}

static void ln_backward_f32(const tg_tensor *y, const tg_tensor *dout, tg_tensor *const *din,
                            int64_t n, int64_t rows) {
    const ln_params *p = y->params;
    if (p->has_w)
        tg__dx_zero_if_fresh(din[1]); /* the weight's and bias's sums over rows add */
    if (p->has_b)
        tg__dx_zero_if_fresh(din[1 + p->has_w]);
    ln_job j = {.y = y, .dout = dout, .din = din, .sv = y->saved, .n = n, .rows = rows};
    tg__parallel_run(tg__threads_for_rows(n * rows, rows), ln_backward_job, &j);
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
    if (y->dtype == TG_F32) {
        ln_forward_f32(y, sv, n, rows);
        return TG_OK;
    }
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
    if (y->dtype == TG_F32) {
        ln_backward_f32(y, dout, din, n, rows);
        return;
    }
    for (int k = 0; k < 1 + p->has_w + p->has_b; k++)
        tg__dx_zero_if_fresh(din[k]); /* the loops below add */
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
    .flags = TG__OP_WRITES_GRAD,
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
