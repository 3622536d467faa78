/* batch_norm: y = xhat * gamma[c] + beta[c],  xhat = (x - mu_c) rstd_c,  rstd_c = 1/sqrt(v_c + eps)
 *   x [N,C,H,W] or [N,F] (HW = 1); gamma (weight), beta (bias) [C] or absent (1 and 0);
 *   running_mean, running_var [C] leaves or absent. Per channel c, over its M = N*H*W values.
 * Training: mu, v are the batch's mean and biased variance, and the running statistics are
 *   updated in place: r = (1 - momentum) r + momentum s, with the unbiased v M/(M-1) (PyTorch).
 *   Then mu and v depend on x:  dx = gamma rstd (dy - mean(dy) - xhat mean(dy xhat)),
 *   the means over the channel's M values.
 * Evaluation: mu, v are the running statistics, constants:  dx = dy gamma rstd.
 * Both:  dgamma[c] += sum dy xhat,  dbeta[c] += sum dy.
 * Saves mu and rstd [C] (in x's dtype); the mode is read from the tape when recorded. */
#include "batch_norm.h"

#include <math.h>

static const char *const bn_names[BN_N_OPTIONAL] = {"weight", "bias", "running_mean",
                                                    "running_var"};

typedef struct bn_saved {
    void *mean, *rstd; /* [C], x's dtype */
} bn_saved;

tg_status tg__bn_op_shape(tg_tensor *y, char *msg, size_t len) {
    const tg_tensor *x = y->inputs[0];
    bn_params *p = y->params;
    char s1[TG_SHAPE_STR_LEN], s2[TG_SHAPE_STR_LEN];
    if (!(p->eps > 0) || !isfinite(p->eps) || !(p->momentum >= 0 && p->momentum <= 1)) {
        snprintf(msg, len,
                 "eps is %g and momentum %g; eps must be finite and > 0, momentum in [0, 1]",
                 p->eps, p->momentum);
        return TG_ERR_VALUE;
    }
    const tg_status st =
        tg__bn_geom_init(&p->g, "batch_norm", x->rank, x->shape, p->training, msg, len);
    if (st != TG_OK) { /* the kernel's message starts "batch_norm: ": the engine's prefix says it */
        if (strncmp(msg, "batch_norm: ", 12) == 0)
            memmove(msg, msg + 12, strlen(msg + 12) + 1);
        return st;
    }
    const tg__bn_geom g = p->g;
    for (int k = 0; k < BN_N_OPTIONAL; k++) {
        const tg_tensor *t = tg__bn_input(y, k);
        if (t && (t->rank != 1 || t->shape[0] != g.C)) {
            snprintf(msg, len, "%s %s must be [%lld] for input %s", bn_names[k],
                     tg__shape_str(t, s1, sizeof s1), (long long)g.C,
                     tg__shape_str(x, s2, sizeof s2));
            return TG_ERR_SHAPE;
        }
        if (t && k >= BN_RMEAN && (t->on_tape || t->requires_grad)) {
            snprintf(msg, len,
                     "%s must be a leaf that requires no gradient (running statistics are "
                     "buffers, updated in place)",
                     bn_names[k]);
            return TG_ERR_VALUE;
        }
    }
    const bool rm = p->slot[BN_RMEAN] >= 0, rv = p->slot[BN_RVAR] >= 0;
    if (rm != rv) {
        snprintf(msg, len, "running_mean is %s but running_var %s: give both or neither",
                 rm ? "given" : "NULL", rv ? "given" : "NULL");
        return TG_ERR_NULL;
    }
    if (!p->training && !rm) {
        snprintf(msg, len,
                 "evaluation mode normalizes with running_mean and running_var, which are NULL");
        return TG_ERR_NULL;
    }
    y->rank = x->rank;
    memcpy(y->shape, x->shape, sizeof y->shape);
    return TG_OK;
}

tg_status tg__bn_op_forward(tg_tape *tape, tg_tensor *y) {
    const bn_params *p = y->params;
    const size_t bytes = (size_t)p->g.C * tg__dtype_size(y->dtype);
    bn_saved *sv = tg__tape_alloc(tape, sizeof *sv);
    void *mean = sv ? tg__tape_alloc_raw(tape, 2 * bytes) : NULL;
    if (!mean)
        return TG_ERR_NOMEM;
    sv->mean = mean;
    sv->rstd = (char *)mean + bytes;
    y->saved = sv;
    const void *x = y->inputs[0]->data, *gamma = tg__bn_data(y, BN_WEIGHT),
               *beta = tg__bn_data(y, BN_BIAS);
    if (p->training) /* the running statistics are leaves: updated in place, now */
        tg__bn_relu_forward_train(&p->g, y->dtype, p->relu, x, gamma, beta, p->eps, p->momentum,
                                  y->data, sv->mean, sv->rstd, (void *)tg__bn_data(y, BN_RMEAN),
                                  (void *)tg__bn_data(y, BN_RVAR));
    else
        tg__bn_relu_forward_eval(&p->g, y->dtype, p->relu, x, gamma, beta, tg__bn_data(y, BN_RMEAN),
                                 tg__bn_data(y, BN_RVAR), p->eps, y->data, sv->mean, sv->rstd);
    return TG_OK;
}

void tg__bn_op_backward(const tg_tensor *y, const tg_tensor *dout, tg_tensor *const *din) {
    const bn_params *p = y->params;
    const bn_saved *sv = y->saved;
    void *dx = din[0] ? din[0]->data : NULL;
    for (int k = 1; k < y->n_inputs; k++)
        tg__dx_zero_if_fresh(din[k]); /* dgamma and dbeta are sums that add */
    void *dgamma =
        p->slot[BN_WEIGHT] >= 0 && din[p->slot[BN_WEIGHT]] ? din[p->slot[BN_WEIGHT]]->data : NULL;
    void *dbeta =
        p->slot[BN_BIAS] >= 0 && din[p->slot[BN_BIAS]] ? din[p->slot[BN_BIAS]]->data : NULL;
    /* running statistics get no gradient (the shape check refused any that wanted one) */
    /* the fused relu's mask is its output: y > 0 exactly where bn(x) > 0 */
    tg__bn_relu_backward(&p->g, y->dtype, p->training, y->inputs[0]->data, p->relu ? y->data : NULL,
                         tg__bn_data(y, BN_WEIGHT), sv->mean, sv->rstd, dout->data, dx, dgamma,
                         dbeta, tg__dx_fresh(din[0]));
}

int tg__bn_op_print(const tg_tensor *y, char *buf, size_t len) {
    const bn_params *p = y->params;
    return snprintf(buf, len, "%s, eps=%g, momentum=%g",
                    p->training ? "training (batch statistics)" : "evaluation (running statistics)",
                    p->eps, p->momentum);
}

/* mu and rstd, [C]: what backward reads. */
int tg__bn_op_saved_views(const tg_tensor *y, tg__saved_view *views, int max) {
    const bn_saved *sv = y->saved;
    if (max < 2 || !sv)
        return 0;
    const int64_t C = y->inputs[0]->shape[1];
    const bn_params *p = y->params;
    views[0] = tg__view(
        "mu", p->training ? "the batch mean of each channel" : "the running mean of each channel",
        y->dtype, 1, &C, sv->mean);
    views[1] = tg__view(
        "rstd", p->training ? "1 / sqrt(batch variance + eps)" : "1 / sqrt(running variance + eps)",
        y->dtype, 1, &C, sv->rstd);
    return 2;
}

const tg__op_desc tg__op_batch_norm = {
    .name = "batch_norm",
    .saves = "each channel's mean mu and rstd = 1/sqrt(var + eps)",
    .min_inputs = 1,
    .flags = TG__OP_WRITES_GRAD,
    .max_inputs = 5,
    .params_size = sizeof(bn_params),
    .shape = tg__bn_op_shape,
    .forward = tg__bn_op_forward,
    .backward = tg__bn_op_backward,
    .print_params = tg__bn_op_print,
    .saved_views = tg__bn_op_saved_views,
    .rule =
        "dx += gamma rstd (dy - mean(dy) - xhat mean(dy xhat)) (training; eval: dy gamma rstd), "
        "dgamma += sum dy xhat, dbeta += sum dy",
};

int tg__bn_op_inputs(bn_params *p, tg_tensor *in[1 + BN_N_OPTIONAL], tg_tensor *x,
                     tg_tensor *weight, tg_tensor *bias, tg_tensor *running_mean,
                     tg_tensor *running_var) {
    tg_tensor *opt[BN_N_OPTIONAL] = {weight, bias, running_mean, running_var};
    in[0] = x;
    int n = 1;
    for (int k = 0; k < BN_N_OPTIONAL; k++) {
        p->slot[k] = opt[k] ? n : -1;
        if (opt[k])
            in[n++] = opt[k];
    }
    return n;
}

tg_tensor *tg__bn_op_record(tg_tape *t, const tg__op_desc *op, bool relu, tg_tensor *x,
                            tg_tensor *weight, tg_tensor *bias, tg_tensor *running_mean,
                            tg_tensor *running_var, double momentum, double eps, const char *file,
                            int line) {
    bn_params p = {.training = tg_tape_training(t), .relu = relu, .momentum = momentum, .eps = eps};
    tg_tensor *in[1 + BN_N_OPTIONAL];
    const int n = tg__bn_op_inputs(&p, in, x, weight, bias, running_mean, running_var);
    return tg__record(t, op, in, n, &p, file, line);
}

tg_tensor *tg_batch_norm_at(tg_tape *t, tg_tensor *x, tg_tensor *weight, tg_tensor *bias,
                            tg_tensor *running_mean, tg_tensor *running_var, double momentum,
                            double eps, const char *file, int line) {
    return tg__bn_op_record(t, &tg__op_batch_norm, false, x, weight, bias, running_mean,
                            running_var, momentum, eps, file, line);
}
