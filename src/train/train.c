/* train.c -- what turns the engine into something one trains models with: initializers, optimizers
 * (SGD, momentum, Nesterov, Adam), mini-batches over a dataset, a linear layer, the report's
 * circles dataset and an accuracy helper. Nothing here records anything the user could not record
 * by hand: the linear layer is three builder calls. */
#include "core/engine.h"
#include "kernels/parallel.h"

#include <math.h>
#include <stdlib.h>
#include <tgmath.h>

/* ---- Initializers ---- */

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

/* ---- Optimizers ---- */

struct tg_optim {
    tg_optim_config cfg;
    int n_params;
    tg_tensor **params; /* the caller's leaves, not owned */
    void **m;           /* first state buffer per parameter: velocity (momentum) or Adam's m */
    double **v;         /* Adam's second moment; NULL otherwise */
    int64_t steps;
};

tg_optim_config tg_optim_defaults(tg_optim_kind kind, double lr) {
    return (tg_optim_config){.kind = kind,
                             .lr = lr,
                             .momentum = 0.9,
                             .beta1 = 0.9,
                             .beta2 = 0.999,
                             .eps = 1e-8,
                             .weight_decay = kind == TG_OPTIM_ADAMW ? 0.01 : 0.0, /* torch's */
                             .decay_every = 0,
                             .decay_factor = 1.0};
}

/* The warm-up + cosine fields of a config (issue 15). */
static tg_status check_schedule(const tg_optim_config *c) {
    const char *who = "tg_optim_new";
    if (c->warmup_steps == 0 && c->total_steps == 0)
        return TG_OK;
    if (c->warmup_steps < 0 || c->total_steps < 0 ||
        (c->total_steps > 0 && c->total_steps < c->warmup_steps))
        return tg__set_last_error(TG_ERR_VALUE,
                                  "%s: warmup_steps %lld and total_steps %lld must be >= 0 with "
                                  "total_steps >= warmup_steps (or 0)",
                                  who, (long long)c->warmup_steps, (long long)c->total_steps);
    if (!(c->min_lr >= 0 && c->min_lr <= c->lr))
        return tg__set_last_error(TG_ERR_VALUE, "%s: min_lr %g must be in [0, lr = %g]", who,
                                  c->min_lr, c->lr);
    if (c->decay_every > 0)
        return tg__set_last_error(
            TG_ERR_VALUE, "%s: decay_every and a warm-up/cosine schedule cannot be combined", who);
    return TG_OK;
}

/* Validates a config; the negated comparisons also reject NaN. */
static tg_status check_config(const tg_optim_config *c) {
    const char *who = "tg_optim_new";
    if (c->kind < TG_OPTIM_SGD || c->kind > TG_OPTIM_ADAMW)
        return tg__set_last_error(TG_ERR_VALUE, "%s: unknown optimizer kind %d", who, (int)c->kind);
    if (!(c->lr > 0) || isinf(c->lr))
        return tg__set_last_error(TG_ERR_VALUE, "%s: lr %g must be positive and finite", who,
                                  c->lr);
    if ((c->kind == TG_OPTIM_MOMENTUM || c->kind == TG_OPTIM_NESTEROV) &&
        !(c->momentum >= 0 && c->momentum < 1))
        return tg__set_last_error(TG_ERR_VALUE, "%s: momentum %g is outside [0, 1)", who,
                                  c->momentum);
    if (c->kind == TG_OPTIM_ADAM || c->kind == TG_OPTIM_ADAMW) {
        if (!(c->beta1 >= 0 && c->beta1 < 1) || !(c->beta2 >= 0 && c->beta2 < 1))
            return tg__set_last_error(TG_ERR_VALUE, "%s: beta1 %g and beta2 %g must be in [0, 1)",
                                      who, c->beta1, c->beta2);
        if (!(c->eps > 0))
            return tg__set_last_error(TG_ERR_VALUE, "%s: eps %g must be positive", who, c->eps);
    }
    if (!(c->weight_decay >= 0) || isinf(c->weight_decay))
        return tg__set_last_error(TG_ERR_VALUE, "%s: weight_decay %g must be >= 0 and finite", who,
                                  c->weight_decay);
    if (c->decay_every < 0)
        return tg__set_last_error(TG_ERR_VALUE, "%s: decay_every %lld is negative", who,
                                  (long long)c->decay_every);
    if (c->decay_every > 0 && !(c->decay_factor > 0 && c->decay_factor <= 1))
        return tg__set_last_error(TG_ERR_VALUE, "%s: decay_factor %g is outside (0, 1]", who,
                                  c->decay_factor);
    return check_schedule(c);
}

void tg_optim_free(tg_optim *o) {
    if (!o)
        return;
    for (int i = 0; i < o->n_params; i++) {
        if (o->m)
            free(o->m[i]);
        if (o->v)
            free(o->v[i]);
    }
    free(o->m);
    free(o->v);
    free(o->params);
    free(o);
}

tg_optim *tg_optim_new(const tg_optim_config *cfg, tg_tensor *const *params, int n_params) {
    const char *who = "tg_optim_new";
    if (!cfg || !params) {
        tg__set_last_error(TG_ERR_NULL, "%s: %s is NULL", who, cfg ? "params" : "config");
        return NULL;
    }
    if (check_config(cfg) != TG_OK)
        return NULL;
    if (n_params < 1) {
        tg__set_last_error(TG_ERR_VALUE, "%s: n_params is %d; give at least one parameter", who,
                           n_params);
        return NULL;
    }
    for (int i = 0; i < n_params; i++) {
        const tg_tensor *p = params[i];
        if (!p) {
            tg__set_last_error(TG_ERR_NULL, "%s: params[%d] is NULL", who, i);
            return NULL;
        }
        if (p->on_tape || !p->requires_grad || (p->dtype != TG_F32 && p->dtype != TG_F64)) {
            tg__set_last_error(TG_ERR_VALUE,
                               "%s: params[%d] ('%s', %s) must be an f32/f64 leaf that requires a "
                               "gradient",
                               who, i, p->name, tg__dtype_name(p->dtype));
            return NULL;
        }
        for (int j = 0; j < i; j++)
            if (params[j] == p) {
                tg__set_last_error(TG_ERR_VALUE,
                                   "%s: params[%d] and params[%d] are the same tensor '%s'; it "
                                   "would be updated twice per step",
                                   who, j, i, p->name);
                return NULL;
            }
    }
    tg_optim *o = calloc(1, sizeof *o);
    if (!o)
        goto nomem;
    o->cfg = *cfg;
    o->n_params = n_params;
    o->params = malloc(sizeof *o->params * (size_t)n_params);
    bool has_m = cfg->kind != TG_OPTIM_SGD,
         has_v = cfg->kind == TG_OPTIM_ADAM || cfg->kind == TG_OPTIM_ADAMW;
    o->m = has_m ? calloc((size_t)n_params, sizeof *o->m) : NULL;
    o->v = has_v ? calloc((size_t)n_params, sizeof *o->v) : NULL;
    if (!o->params || (has_m && !o->m) || (has_v && !o->v))
        goto nomem;
    for (int i = 0; i < n_params; i++) {
        o->params[i] = params[i];
        size_t n = (size_t)params[i]->numel;
        const size_t elem = tg__dtype_size(params[i]->dtype); /* state in the parameter's dtype */
        if (has_m && !(o->m[i] = calloc(n ? n : 1, elem)))
            goto nomem;
        if (has_v && !(o->v[i] = calloc(n ? n : 1, elem)))
            goto nomem;
    }
    return o;
nomem:
    tg_optim_free(o);
    tg__set_last_error(TG_ERR_NOMEM, "%s: out of memory for %d parameters", who, n_params);
    return NULL;
}

double tg_optim_lr(const tg_optim *o) {
    if (!o)
        return 0.0;
    if (o->cfg.warmup_steps > 0 || o->cfg.total_steps > 0)
        return tg_lr_warmup_cosine(o->steps, o->cfg.lr, o->cfg.warmup_steps, o->cfg.total_steps,
                                   o->cfg.min_lr);
    if (o->cfg.decay_every <= 0)
        return o->cfg.lr;
    const int64_t decays = o->steps / o->cfg.decay_every; /* a step schedule: whole periods only */
    return o->cfg.lr * pow(o->cfg.decay_factor, (double)decays);
}

int64_t tg_optim_steps(const tg_optim *o) { return o ? o->steps : 0; }

/* One optimizer update over elements [k0, k1) of one parameter. One loop per algorithm, so the
 * compiler vectorizes each; elements are independent, so the range can be split over threads
 * without changing a bit of the result. State and arithmetic are in the parameter's dtype, as in
 * PyTorch: the Fashion-MNIST MLP updates 235k float32 parameters per step, and this loop, memory
 * bound, was a third of its step while its state was float64. */
typedef struct optim_job {
    const tg_optim_config *c;
    tg_tensor *P;
    void *m, *v;                          /* state buffers, in the parameter's dtype */
    double lr, adam_step, adam_rsqrt_bc2; /* Adam: lr / (1 - b1^t) and 1 / sqrt(1 - b2^t) */
} optim_job;

#define TG_OPTIM_UPDATE(T)                                                                           \
    do {                                                                                             \
        T *restrict p = j->P->data;                                                                  \
        const T *restrict g = j->P->grad->data;                                                      \
        T *restrict m = j->m, *restrict v = j->v;                                                    \
        const T lr = (T)j->lr, wd = (T)j->c->weight_decay, mu = (T)j->c->momentum;                   \
        const T b1 = (T)j->c->beta1, b2 = (T)j->c->beta2, eps = (T)j->c->eps;                        \
        switch (j->c->kind) {                                                                        \
        case TG_OPTIM_MOMENTUM:                                                                      \
            for (int64_t k = k0; k < k1; k++) {                                                      \
                const T gk = g[k] + wd * p[k];                                                       \
                m[k] = mu * m[k] + gk;                                                               \
                p[k] -= lr * m[k];                                                                   \
            }                                                                                        \
            break;                                                                                   \
        case TG_OPTIM_NESTEROV:                                                                      \
            for (int64_t k = k0; k < k1; k++) {                                                      \
                const T gk = g[k] + wd * p[k];                                                       \
                m[k] = mu * m[k] + gk;                                                               \
                p[k] -= lr * (gk + mu * m[k]);                                                       \
            }                                                                                        \
            break;                                                                                   \
        case TG_OPTIM_ADAM: {                                                                        \
            /* p -= lr m^ / (sqrt(v^) + eps), m^ = m / (1 - b1^t), v^ = v / (1 - b2^t): the two    \
             * corrections are folded into constants, leaving one sqrt and one division. */ \
            const T step = (T)j->adam_step, rs = (T)j->adam_rsqrt_bc2;                               \
            for (int64_t k = k0; k < k1; k++) {                                                      \
                const T gk = g[k] + wd * p[k];                                                       \
                m[k] = b1 * m[k] + (1 - b1) * gk;                                                    \
                v[k] = b2 * v[k] + (1 - b2) * gk * gk;                                               \
                p[k] -= step * m[k] / (sqrt(v[k]) * rs + eps);                                       \
            }                                                                                        \
            break;                                                                                   \
        }                                                                                            \
        default:                                                                                     \
            for (int64_t k = k0; k < k1; k++) {                                                      \
                const T gk = g[k] + wd * p[k];                                                       \
                p[k] -= lr * gk;                                                                     \
            }                                                                                        \
            break;                                                                                   \
        }                                                                                            \
    } while (0)

/* Compiled twice, for AVX2 (4 doubles per instruction, sqrt and division included) and for the
 * baseline; the loader picks one for this CPU. target("avx2") does not enable FMA, so no
 * multiply-add is fused and both clones round every operation the same way. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("avx2", "default")))
#endif
static void
optim_update_range(void *ctx, int64_t k0, int64_t k1) {
    const optim_job *j = ctx;
    if (j->P->dtype == TG_F32)
        TG_OPTIM_UPDATE(float);
    else
        TG_OPTIM_UPDATE(double);
}

/* AdamW (issue 15), as torch.optim.AdamW: p *= 1 - lr wd (the decay, decoupled from the
 * gradient), then Adam's step with the plain gradient. Elements are independent, as above. */
#define TG_ADAMW_UPDATE(T)                                                                         \
    do {                                                                                           \
        T *restrict p = j->P->data;                                                                \
        const T *restrict g = j->P->grad->data;                                                    \
        T *restrict m = j->m, *restrict v = j->v;                                                  \
        const T decay = (T)(1 - j->lr * j->c->weight_decay);                                       \
        const T b1 = (T)j->c->beta1, b2 = (T)j->c->beta2, eps = (T)j->c->eps;                      \
        const T step = (T)j->adam_step, rs = (T)j->adam_rsqrt_bc2;                                 \
        for (int64_t k = k0; k < k1; k++) {                                                        \
            p[k] *= decay;                                                                         \
            m[k] = b1 * m[k] + (1 - b1) * g[k];                                                    \
            v[k] = b2 * v[k] + (1 - b2) * g[k] * g[k];                                             \
            p[k] -= step * m[k] / (sqrt(v[k]) * rs + eps);                                         \
        }                                                                                          \
    } while (0)

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("avx2", "default")))
#endif
static void
adamw_update_range(void *ctx, int64_t k0, int64_t k1) {
    const optim_job *j = ctx;
    if (j->P->dtype == TG_F32)
        TG_ADAMW_UPDATE(float);
    else
        TG_ADAMW_UPDATE(double);
}

/* The index of the first NaN or Inf among the n values of g (f32 or f64), or -1. A first pass
 * only ORs together whether each exponent field is all ones (a vectorizable integer loop); only
 * when that finds one does a second pass look for where. */
static int64_t first_nonfinite(const tg_tensor *g) {
    const int64_t n = g->numel;
    unsigned bad = 0;
    if (g->dtype == TG_F32) {
        const uint32_t *u = g->data;
        for (int64_t k = 0; k < n; k++)
            bad |= (u[k] & 0x7f800000u) == 0x7f800000u;
    } else {
        const uint64_t *u = g->data;
        for (int64_t k = 0; k < n; k++)
            bad |= (u[k] & 0x7ff0000000000000ull) == 0x7ff0000000000000ull;
    }
    if (!bad)
        return -1;
    for (int64_t k = 0; k < n; k++)
        if (!isfinite(tg_tensor_get(g, k)))
            return k;
    return -1;
}

tg_status tg_optim_step(tg_optim *o) {
    if (!o)
        return tg__set_last_error(TG_ERR_NULL, "tg_optim_step: optimizer is NULL");
    /* Check every gradient first, so a NaN leaves all parameters (and state) as they were. */
    for (int i = 0; i < o->n_params; i++) {
        const tg_tensor *P = o->params[i];
        if (!P->grad)
            continue;
        const int64_t k = first_nonfinite(P->grad);
        if (k >= 0)
            return tg__set_last_error(TG_ERR_NONFINITE,
                                      "tg_optim_step: the gradient of params[%d] ('%s') holds "
                                      "%g at element %lld; no parameter was changed",
                                      i, P->name, tg_tensor_get(P->grad, k), (long long)k);
    }
    const tg_optim_config *c = &o->cfg;
    const double t = (double)(o->steps + 1);
    optim_job j = {.c = c, .lr = tg_optim_lr(o)};
    j.adam_step = j.lr / (1 - pow(c->beta1, t));
    j.adam_rsqrt_bc2 = 1 / sqrt(1 - pow(c->beta2, t));
    for (int i = 0; i < o->n_params; i++) {
        j.P = o->params[i];
        if (!j.P->grad)
            continue;
        j.m = o->m ? o->m[i] : NULL;
        j.v = o->v ? o->v[i] : NULL;
        /* tg_optim_new allocated the state this kind uses, and the kind never changes. */
        TG_CHECK(j.m || c->kind == TG_OPTIM_SGD);
        TG_CHECK(j.v || (c->kind != TG_OPTIM_ADAM && c->kind != TG_OPTIM_ADAMW));
        tg__parallel_range(j.P->numel, TG_PAR_MIN_ELEMS,
                           c->kind == TG_OPTIM_ADAMW ? adamw_update_range : optim_update_range, &j);
    }
    o->steps++;
    return TG_OK;
}

void tg_optim_zero_grad(tg_optim *o) {
    if (!o)
        return;
    for (int i = 0; i < o->n_params; i++)
        tg_tensor_zero_grad(o->params[i]);
}

/* ---- Datasets and mini-batches ---- */

struct tg_dataset {
    const tg_tensor *inputs, *targets; /* the caller's, not owned */
    int64_t n, batch_size, cursor;
    bool shuffle;
    tg_rng rng;
    int64_t *order;             /* the rows of this epoch, in visiting order */
    tg_tensor *x_full, *y_full; /* batches of batch_size rows */
    tg_tensor *x_last, *y_last; /* the smaller last batch, when batch_size does not divide n */
};

void tg_dataset_free(tg_dataset *ds) {
    if (!ds)
        return;
    tg_tensor_free(ds->x_full);
    tg_tensor_free(ds->y_full);
    tg_tensor_free(ds->x_last);
    tg_tensor_free(ds->y_last);
    free(ds->order);
    free(ds);
}

/* A leaf like `src` with `rows` rows instead of src->shape[0]. */
static tg_tensor *batch_like(const tg_tensor *src, int64_t rows) {
    int64_t shape[TG_MAX_RANK];
    memcpy(shape, src->shape, sizeof shape);
    shape[0] = rows;
    return tg_tensor_new(src->dtype, src->rank, shape);
}

/* Fisher-Yates with the dataset's own rng: the order depends on the seed and the epoch only. */
static void reshuffle(tg_dataset *ds) {
    for (int64_t i = 0; i < ds->n; i++)
        ds->order[i] = i;
    if (!ds->shuffle)
        return;
    for (int64_t i = ds->n - 1; i > 0; i--) {
        int64_t j = (int64_t)tg_rng_below(&ds->rng, (uint64_t)i + 1);
        int64_t tmp = ds->order[i];
        ds->order[i] = ds->order[j];
        ds->order[j] = tmp;
    }
}

tg_dataset *tg_dataset_new(const tg_tensor *inputs, const tg_tensor *targets, int64_t batch_size,
                           int shuffle, uint64_t seed) {
    const char *who = "tg_dataset_new";
    char s1[TG_SHAPE_STR_LEN], s2[TG_SHAPE_STR_LEN];
    if (!inputs || !targets) {
        tg__set_last_error(TG_ERR_NULL, "%s: %s is NULL", who, inputs ? "targets" : "inputs");
        return NULL;
    }
    if (inputs->rank < 1 || targets->rank < 1 || inputs->shape[0] != targets->shape[0]) {
        tg__set_last_error(TG_ERR_SHAPE,
                           "%s: inputs %s and targets %s must have the same number of rows "
                           "(axis 0)",
                           who, tg__shape_str(inputs, s1, sizeof s1),
                           tg__shape_str(targets, s2, sizeof s2));
        return NULL;
    }
    const int64_t n = inputs->shape[0];
    if (n < 1 || batch_size < 1 || batch_size > n) {
        tg__set_last_error(TG_ERR_VALUE, "%s: batch_size %lld must be in 1..%lld (rows of %s)", who,
                           (long long)batch_size, (long long)n,
                           tg__shape_str(inputs, s1, sizeof s1));
        return NULL;
    }
    tg_dataset *ds = calloc(1, sizeof *ds);
    if (!ds)
        goto nomem;
    ds->inputs = inputs;
    ds->targets = targets;
    ds->n = n;
    ds->batch_size = batch_size;
    ds->shuffle = shuffle != 0;
    tg_rng_seed(&ds->rng, seed);
    ds->order = malloc(sizeof *ds->order * (size_t)n);
    ds->x_full = batch_like(inputs, batch_size);
    ds->y_full = batch_like(targets, batch_size);
    if (!ds->order || !ds->x_full || !ds->y_full)
        goto nomem;
    if (n % batch_size) {
        ds->x_last = batch_like(inputs, n % batch_size);
        ds->y_last = batch_like(targets, n % batch_size);
        if (!ds->x_last || !ds->y_last)
            goto nomem;
    }
    reshuffle(ds);
    return ds;
nomem:
    tg_dataset_free(ds);
    tg__set_last_error(TG_ERR_NOMEM, "%s: out of memory for batches of %lld rows of %s", who,
                       (long long)batch_size, tg__shape_str(inputs, s1, sizeof s1));
    return NULL;
}

/* Copies the rows order[from .. from+rows) of src into dst. */
static void gather_rows(tg_tensor *dst, const tg_tensor *src, const int64_t *order, int64_t rows) {
    const size_t row_bytes = (size_t)(src->numel / src->shape[0]) * tg__dtype_size(src->dtype);
    for (int64_t r = 0; r < rows; r++)
        memcpy((char *)dst->data + (size_t)r * row_bytes,
               (const char *)src->data + (size_t)order[r] * row_bytes, row_bytes);
}

int tg_dataset_next(tg_dataset *ds, tg_tensor **x, tg_tensor **y) {
    if (!ds || !x || !y)
        return tg__set_last_error(TG_ERR_NULL, "tg_dataset_next: %s is NULL",
                                  !ds  ? "dataset"
                                  : !x ? "inputs"
                                       : "targets");
    if (ds->cursor >= ds->n) {
        ds->cursor = 0;
        reshuffle(ds);
        return 0;
    }
    const int64_t rows = ds->n - ds->cursor < ds->batch_size ? ds->n - ds->cursor : ds->batch_size;
    tg_tensor *bx = rows == ds->batch_size ? ds->x_full : ds->x_last;
    tg_tensor *by = rows == ds->batch_size ? ds->y_full : ds->y_last;
    gather_rows(bx, ds->inputs, ds->order + ds->cursor, rows);
    gather_rows(by, ds->targets, ds->order + ds->cursor, rows);
    ds->cursor += rows;
    *x = bx;
    *y = by;
    return 1;
}

int64_t tg_dataset_size(const tg_dataset *ds) { return ds ? ds->n : 0; }

int64_t tg_dataset_n_batches(const tg_dataset *ds) {
    return ds ? (ds->n + ds->batch_size - 1) / ds->batch_size : 0;
}

/* ---- Linear layer ---- */

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
    if (!l) {
        tg__tape_fail(t, TG_ERR_NULL, file, line, "tg_linear_forward", "layer is NULL");
        return NULL;
    }
    /* NULL inputs and a failed tape are handled by the builder calls themselves. */
    return tg_add_at(t, tg_matmul_bt_at(t, x, l->W, file, line), l->b, file, line);
}

/* ---- The circles dataset and accuracy ---- */

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

double tg_accuracy(const tg_tensor *logits, const tg_tensor *labels) {
    const char *who = "tg_accuracy";
    char s1[TG_SHAPE_STR_LEN], s2[TG_SHAPE_STR_LEN];
    if (!logits || !labels) {
        tg__set_last_error(TG_ERR_NULL, "%s: %s is NULL", who, logits ? "labels" : "logits");
        return -1.0;
    }
    if (logits->rank != 2 || logits->shape[0] < 1 || labels->dtype != TG_I32 || labels->rank != 1 ||
        labels->shape[0] != logits->shape[0]) {
        tg__set_last_error(TG_ERR_SHAPE,
                           "%s: need logits [N,C] (N >= 1) and i32 labels [N], got %s and %s %s",
                           who, tg__shape_str(logits, s1, sizeof s1), tg__dtype_name(labels->dtype),
                           tg__shape_str(labels, s2, sizeof s2));
        return -1.0;
    }
    const int64_t N = logits->shape[0], C = logits->shape[1];
    const int32_t *lab = labels->data;
    int64_t correct = 0;
    for (int64_t i = 0; i < N; i++) {
        int64_t best = 0;
        for (int64_t c = 1; c < C; c++)
            if (tg_tensor_get(logits, i * C + c) > tg_tensor_get(logits, i * C + best))
                best = c;
        correct += best == lab[i];
    }
    return (double)correct / (double)N;
}

/* ---- Issue 15: the warm-up + cosine schedule and gradient clipping ---- */

double tg_lr_warmup_cosine(int64_t step, double lr, int64_t warmup, int64_t total, double min_lr) {
    if (step < 0 || warmup < 0 || total < 0 || (total > 0 && total < warmup))
        return NAN;
    if (step < warmup)
        return lr * (double)(step + 1) / (double)warmup;
    if (total == 0)
        return lr;
    if (step >= total)
        return min_lr;
    const double ratio = (double)(step - warmup) / (double)(total - warmup);
    return min_lr + (lr - min_lr) * 0.5 * (1 + cos(3.14159265358979323846 * ratio));
}

double tg_clip_grad_norm(tg_tensor *const *params, int n, double max_norm) {
    const char *who = "tg_clip_grad_norm";
    if (!params || n < 1) {
        tg__set_last_error(params ? TG_ERR_VALUE : TG_ERR_NULL, "%s: %s", who,
                           params ? "n must be >= 1" : "params is NULL");
        return -1;
    }
    if (!(max_norm > 0) || isinf(max_norm)) {
        tg__set_last_error(TG_ERR_VALUE, "%s: max_norm %g must be positive and finite", who,
                           max_norm);
        return -1;
    }
    for (int i = 0; i < n; i++)
        if (!params[i] || params[i]->on_tape ||
            (params[i]->dtype != TG_F32 && params[i]->dtype != TG_F64)) {
            tg__set_last_error(params[i] ? TG_ERR_VALUE : TG_ERR_NULL,
                               "%s: params[%d] must be an f32/f64 leaf", who, i);
            return -1;
        }
    /* The sum of squares in double, parameter by parameter in the order given: one thread, a
     * fixed order, the same bits every time. */
    double ss = 0;
    for (int i = 0; i < n; i++) {
        const tg_tensor *g = params[i]->grad;
        if (!g)
            continue;
        TG_FOR_DTYPE(g->dtype, T, const T *pg = g->data;
                     for (int64_t k = 0; k < g->numel; k++) ss += (double)pg[k] * (double)pg[k];);
    }
    const double norm = sqrt(ss);
    const double coef = max_norm / (norm + 1e-6); /* torch's clip_coef, applied when < 1 */
    if (!isfinite(norm) || !(coef < 1))
        return norm;
    for (int i = 0; i < n; i++) {
        tg_tensor *g = params[i]->grad;
        if (!g)
            continue;
        TG_FOR_DTYPE(g->dtype, T, T *pg = g->data; const T c = (T)coef;
                     for (int64_t k = 0; k < g->numel; k++) pg[k] *= c;);
    }
    return norm;
}
