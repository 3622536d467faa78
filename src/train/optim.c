/* optim.c -- optimizers (SGD, momentum, Nesterov, Adam, weight decay, step decay): one update of
 * every parameter from its gradient, vectorized, split over the thread pool, bit-identical for any
 * thread count; frozen parameters are left exactly as they are. */
#include "core/engine.h"
#include "kernels/parallel.h"
#include "train/state.h"

#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <tgmath.h>

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

/* Whether a step updates P: it has a gradient (a tg_backward reached it) and requires one now.
 * A frozen parameter (tg_tensor_set_requires_grad(P, 0)) is left exactly as it is, state
 * included, whatever its gradient holds from before it was frozen. */
static bool updated(const tg_tensor *P) { return P->grad && P->requires_grad; }

/* One pass over all the parameters' elements as one range, split over the threads: the check
 * for NaN and Inf (check set), or the update. One job per pass, not one per parameter: a job
 * costs a hand-off to the workers, and the MLP's four small parameters would each run alone.
 * The update of each element depends on that element only, so the split changes no bit. */
typedef struct optim_pass {
    const tg_optim *o;
    optim_job j; /* the step's constants; P, m, v are set per parameter */
    int64_t total;
    bool check;
    atomic_int bad; /* check: some thread saw a NaN or Inf */
} optim_pass;

static bool nonfinite_in(const tg_tensor *g, int64_t k0, int64_t k1) {
    unsigned bad = 0;
    if (g->dtype == TG_F32) {
        const uint32_t *u = g->data;
        for (int64_t k = k0; k < k1; k++)
            bad |= (u[k] & 0x7f800000u) == 0x7f800000u;
    } else {
        const uint64_t *u = g->data;
        for (int64_t k = k0; k < k1; k++)
            bad |= (u[k] & 0x7ff0000000000000ull) == 0x7ff0000000000000ull;
    }
    return bad != 0;
}

static void optim_pass_run(void *ctx, int tid, int nth) {
    optim_pass *ps = ctx;
    int64_t b, e, base = 0;
    tg__split(ps->total, 64, tid, nth, &b, &e);
    for (int i = 0; i < ps->o->n_params && base < e; i++) {
        tg_tensor *P = ps->o->params[i];
        if (!updated(P))
            continue;
        const int64_t n = P->numel;
        const int64_t k0 = b > base ? b - base : 0, k1 = e - base < n ? e - base : n;
        base += n;
        if (k0 >= k1)
            continue;
        if (ps->check) {
            if (nonfinite_in(P->grad, k0, k1))
                atomic_store_explicit(&ps->bad, 1, memory_order_relaxed);
            continue;
        }
        optim_job j = ps->j;
        j.P = P;
        j.m = ps->o->m ? ps->o->m[i] : NULL;
        j.v = ps->o->v ? ps->o->v[i] : NULL;
        /* tg_optim_new allocated the state this kind uses, and the kind never changes. */
        TG_CHECK(j.m || j.c->kind == TG_OPTIM_SGD);
        TG_CHECK(j.v || (j.c->kind != TG_OPTIM_ADAM && j.c->kind != TG_OPTIM_ADAMW));
        if (j.c->kind == TG_OPTIM_ADAMW)
            adamw_update_range(&j, k0, k1);
        else
            optim_update_range(&j, k0, k1);
    }
}

tg_status tg_optim_step(tg_optim *o) {
    if (!o)
        return tg__set_last_error(TG_ERR_NULL, "tg_optim_step: optimizer is NULL");
    const tg_optim_config *c = &o->cfg;
    const double t = (double)(o->steps + 1);
    optim_pass ps = {.o = o, .j = {.c = c, .lr = tg_optim_lr(o)}, .check = true};
    ps.j.adam_step = ps.j.lr / (1 - pow(c->beta1, t));
    ps.j.adam_rsqrt_bc2 = 1 / sqrt(1 - pow(c->beta2, t));
    for (int i = 0; i < o->n_params; i++)
        if (updated(o->params[i]))
            ps.total += o->params[i]->numel;
    const int64_t per = TG_PAR_MIN_ELEMS / 2;
    const int nth =
        ps.total < TG_PAR_MIN_ELEMS ? 1 : (int)(ps.total / per < 256 ? ps.total / per : 256);
    atomic_init(&ps.bad, 0);
    /* Check every gradient first, so a NaN leaves all parameters (and state) as they were. */
    tg__parallel_run(nth, optim_pass_run, &ps);
    if (atomic_load(&ps.bad))
        for (int i = 0; i < o->n_params; i++) { /* find the first, for the message */
            const tg_tensor *P = o->params[i];
            if (!updated(P))
                continue;
            const int64_t k = first_nonfinite(P->grad);
            if (k >= 0)
                return tg__set_last_error(TG_ERR_NONFINITE,
                                          "tg_optim_step: the gradient of params[%d] ('%s') holds "
                                          "%g at element %lld; no parameter was changed",
                                          i, P->name, tg_tensor_get(P->grad, k), (long long)k);
        }
    ps.check = false;
    tg__parallel_run(nth, optim_pass_run, &ps);
    o->steps++;
    return TG_OK;
}

/* ---- Optimizer state, for tg_train_state_save/load (src/io/checkpoint.c) ---- */

int tg__optim_n_params(const tg_optim *o) { return o->n_params; }
tg_tensor *tg__optim_param(const tg_optim *o, int i) { return o->params[i]; }
tg_optim_kind tg__optim_kind(const tg_optim *o) { return o->cfg.kind; }
int tg__optim_n_buffers(const tg_optim *o) { return o->v ? 2 : o->m ? 1 : 0; }
void *tg__optim_buffer(const tg_optim *o, int i, int k) {
    return k == 0 && o->m ? o->m[i] : k == 1 && o->v ? o->v[i] : NULL;
}
void tg__optim_set_steps(tg_optim *o, int64_t steps) { o->steps = steps; }

/* Zeroing every parameter's gradient, as one range over all their elements split over the
 * threads (the MLP's 235k floats, a megabyte, each step). */
typedef struct zero_pass {
    const tg_optim *o;
    int64_t total;
} zero_pass;

static void zero_pass_run(void *ctx, int tid, int nth) {
    const zero_pass *zp = ctx;
    int64_t b, e, base = 0;
    tg__split(zp->total, 64, tid, nth, &b, &e);
    for (int i = 0; i < zp->o->n_params && base < e; i++) {
        const tg_tensor *P = zp->o->params[i];
        if (!P->grad)
            continue;
        const int64_t n = P->numel;
        const int64_t k0 = b > base ? b - base : 0, k1 = e - base < n ? e - base : n;
        base += n;
        if (k0 < k1) {
            const size_t esz = tg__dtype_size(P->dtype);
            memset((char *)P->grad->data + (size_t)k0 * esz, 0, (size_t)(k1 - k0) * esz);
        }
    }
}

void tg_optim_zero_grad(tg_optim *o) {
    if (!o)
        return;
    zero_pass zp = {.o = o};
    for (int i = 0; i < o->n_params; i++)
        if (o->params[i]->grad)
            zp.total += o->params[i]->numel;
    /* memset moves tens of bytes a cycle: below ~64k elements a hand-off costs more than it
     * saves */
    const int64_t per = 4 * TG_PAR_MIN_ELEMS;
    const int nth = zp.total < 2 * per ? 1 : (int)(zp.total / per < 256 ? zp.total / per : 256);
    tg__parallel_run(nth, zero_pass_run, &zp);
}

/* ---- The warm-up + cosine schedule and gradient clipping ---- */

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
