/* sample.c -- drawing a token from a probability row or from logits (issue 15), with the
 * project's seeded generator: one tg_rng_uniform per draw, so a seed fixes a whole sampled text. */
#include "core/engine.h"

#include <math.h>
#include <stdlib.h>

/* The index of the draw u in [0, total) over the weights w: the first i whose running sum
 * exceeds u; rounding can leave u at the very end, then the last positive weight. */
static int64_t draw(const double *w, int64_t n, double total, tg_rng *rng) {
    const double u = tg_rng_uniform(rng) * total;
    double run = 0;
    int64_t last = -1;
    for (int64_t i = 0; i < n; i++) {
        if (w[i] <= 0)
            continue;
        run += w[i];
        last = i;
        if (u < run)
            return i;
    }
    return last;
}

int64_t tg_sample(const double *probs, int64_t n, double temperature, tg_rng *rng) {
    const char *who = "tg_sample";
    if (!probs || !rng) {
        tg__set_last_error(TG_ERR_NULL, "%s: %s is NULL", who, probs ? "rng" : "probs");
        return -1;
    }
    if (n < 1 || !(temperature >= 0) || isinf(temperature)) {
        tg__set_last_error(TG_ERR_VALUE, "%s: n %lld must be >= 1 and temperature %g >= 0", who,
                           (long long)n, temperature);
        return -1;
    }
    int64_t best = -1;
    for (int64_t i = 0; i < n; i++) {
        if (!(probs[i] >= 0) || isinf(probs[i])) {
            tg__set_last_error(TG_ERR_VALUE,
                               "%s: probs[%lld] is %g; weights must be >= 0 and finite", who,
                               (long long)i, probs[i]);
            return -1;
        }
        if (probs[i] > 0 && (best < 0 || probs[i] > probs[best]))
            best = i;
    }
    if (best < 0) {
        tg__set_last_error(TG_ERR_VALUE, "%s: all %lld weights are 0", who, (long long)n);
        return -1;
    }
    if (temperature == 0)
        return best;
    if (temperature == 1) {
        double total = 0;
        for (int64_t i = 0; i < n; i++)
            total += probs[i];
        return draw(probs, n, total, rng);
    }
    /* p^(1/T) relative to the largest: exp((log p - log p_max) / T), no overflow. */
    double buf[256], total = 0;
    double *w = n <= 256 ? buf : malloc(sizeof(double) * (size_t)n);
    if (!w) {
        tg__set_last_error(TG_ERR_NOMEM, "%s: out of memory for %lld weights", who, (long long)n);
        return -1;
    }
    const double lmax = log(probs[best]);
    for (int64_t i = 0; i < n; i++)
        total += (w[i] = probs[i] > 0 ? exp((log(probs[i]) - lmax) / temperature) : 0);
    const int64_t k = draw(w, n, total, rng);
    if (w != buf)
        free(w);
    return k;
}

int64_t tg_sample_logits(const tg_tensor *logits, int64_t row, double temperature, tg_rng *rng) {
    const char *who = "tg_sample_logits";
    if (!logits || !rng) {
        tg__set_last_error(TG_ERR_NULL, "%s: %s is NULL", who, logits ? "rng" : "logits");
        return -1;
    }
    char s[TG_SHAPE_STR_LEN];
    if ((logits->dtype != TG_F32 && logits->dtype != TG_F64) || logits->rank < 1) {
        tg__set_last_error(TG_ERR_VALUE, "%s: logits %s %s must be f32 or f64 of rank >= 1", who,
                           tg__dtype_name(logits->dtype), tg__shape_str(logits, s, sizeof s));
        return -1;
    }
    const int64_t C = logits->shape[logits->rank - 1], rows = C ? logits->numel / C : 0;
    if (row < 0 || row >= rows || C > 4096) {
        tg__set_last_error(TG_ERR_VALUE,
                           "%s: row %lld of logits %s is out of range (%lld rows of "
                           "at most 4096 classes)",
                           who, (long long)row, tg__shape_str(logits, s, sizeof s),
                           (long long)rows);
        return -1;
    }
    if (!(temperature >= 0) || isinf(temperature)) {
        tg__set_last_error(TG_ERR_VALUE, "%s: temperature %g must be >= 0 and finite", who,
                           temperature);
        return -1;
    }
    double z[4096], m = -INFINITY;
    for (int64_t c = 0; c < C; c++) {
        z[c] = tg_tensor_get(logits, row * C + c);
        if (isnan(z[c])) {
            tg__set_last_error(TG_ERR_VALUE, "%s: logit %lld of row %lld is NaN", who, (long long)c,
                               (long long)row);
            return -1;
        }
        m = z[c] > m ? z[c] : m;
    }
    if (temperature == 0 || isinf(m)) {
        for (int64_t c = 0; c < C; c++)
            if (z[c] == m)
                return c;
    }
    double total = 0;
    for (int64_t c = 0; c < C; c++)
        total += (z[c] = exp((z[c] - m) / temperature));
    return draw(z, C, total, rng);
}
