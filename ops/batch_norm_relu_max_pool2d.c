/* batch_norm_relu_max_pool2d: y = max_pool2d(relu(batch_norm(x))), one op
 *   batch_norm's inputs, modes and running statistics (batch_norm.c, whose shape check and
 *   printing this op shares), then relu, then max_pool2d's window (pooling.h): the
 *   conv - batch norm - relu - pool block of a CNN. x [N,C,H,W], y [N,C,OH,OW].
 * With z = relu(batch_norm(x)) and a the argmax of each window in z (the first maximum in scan
 *   order, as max_pool2d), y = z[a], and z[a] > 0 exactly where y > 0, so going back through the
 *   pool and the relu,
 *   dz[a] += y > 0 ? dy : 0  (zero elsewhere; overlapping windows add),
 *   then batch_norm's backward of dz:
 *   dx = gamma rstd (dz - mean(dz) - xhat mean(dz xhat)) (training; eval: dz gamma rstd),
 *   dgamma += sum dz xhat, dbeta += sum dz.
 * Why fuse: apart, batch_norm_relu writes z, the size of the conv's output, max_pool2d reads it
 *   and its backward writes dz at that size again for batch norm to read. Fused, z and dz are
 *   formed a plane at a time in a buffer (L1 for the CNN's images) and never stored, and the
 *   tape keeps the pooled y instead of z. The values and gradients are the three ops' bit for bit:
 *   each plane goes through their own kernels in the same order (tests/test_cnn.c checks it).
 * Saves mu and rstd [C] as batch_norm, the argmax [N,C,OH,OW] as max_pool2d, and the per-thread
 *   plane buffers (from the tape's arena, sized for the thread count at recording time: fewer
 *   threads later give the same result). Its output y is the relu's mask. */
#include "batch_norm.h"
#include "pooling.h"

typedef struct bnp_params {
    bn_params bn; /* first: batch_norm's shape check and listing read y->params as bn_params */
    tg__pool2d_params pool;
} bnp_params;

typedef struct bnp_saved {
    void *mean, *rstd; /* [C], x's dtype */
    int32_t *argmax;   /* [N,C,OH,OW]: ih*W + iw within the plane, as max_pool2d's */
    void *ws;          /* the kernels' plane buffers */
    size_t ws_bytes;
} bnp_saved;

static tg_status bnp_shape(tg_tensor *y, char *msg, size_t len) {
    bnp_params *p = y->params;
    const tg_status st = tg__bn_op_shape(y, msg, len);
    if (st != TG_OK)
        return st;
    return tg__pool2d_shape_of(&p->pool, y, "batch_norm_relu_max_pool2d", msg, len);
}

static tg_status bnp_forward(tg_tape *tape, tg_tensor *y) {
    const bnp_params *p = y->params;
    const size_t bytes = (size_t)p->bn.g.C * tg__dtype_size(y->dtype);
    bnp_saved *sv = tg__tape_alloc(tape, sizeof *sv);
    void *mean = sv ? tg__tape_alloc_raw(tape, 2 * bytes) : NULL;
    int32_t *argmax = mean ? tg__tape_alloc_raw(tape, (size_t)y->numel * sizeof(int32_t)) : NULL;
    const size_t ws_bytes =
        tg__bn_relu_pool_workspace_bytes(&p->bn.g, y->dtype, tg_get_num_threads());
    void *ws = argmax ? tg__tape_alloc_raw(tape, ws_bytes) : NULL;
    if (!ws)
        return TG_ERR_NOMEM;
    *sv = (bnp_saved){.mean = mean,
                      .rstd = (char *)mean + bytes,
                      .argmax = argmax,
                      .ws = ws,
                      .ws_bytes = ws_bytes};
    y->saved = sv;
    /* in training the running statistics (leaves) are updated in place, now */
    return tg__bn_relu_pool_forward(
        &p->bn.g, &p->pool.g, y->dtype, p->bn.training, y->inputs[0]->data,
        tg__bn_data(y, BN_WEIGHT), tg__bn_data(y, BN_BIAS), p->bn.eps, p->bn.momentum,
        (void *)tg__bn_data(y, BN_RMEAN), (void *)tg__bn_data(y, BN_RVAR), y->data, sv->argmax,
        sv->mean, sv->rstd, sv->ws, sv->ws_bytes);
}

static void bnp_backward(const tg_tensor *y, const tg_tensor *dout, tg_tensor *const *din) {
    const bnp_params *p = y->params;
    const bnp_saved *sv = y->saved;
    for (int k = 1; k < y->n_inputs; k++)
        tg__dx_zero_if_fresh(din[k]); /* dgamma and dbeta are sums that add */
    const int sw = p->bn.slot[BN_WEIGHT], sb = p->bn.slot[BN_BIAS];
    void *dgamma = sw >= 0 && din[sw] ? din[sw]->data : NULL;
    void *dbeta = sb >= 0 && din[sb] ? din[sb]->data : NULL;
    /* running statistics get no gradient (the shape check refused any that wanted one) */
    const tg_status st = tg__bn_relu_pool_backward(
        &p->bn.g, &p->pool.g, y->dtype, p->bn.training, y->inputs[0]->data, y->data, sv->argmax,
        tg__bn_data(y, BN_WEIGHT), sv->mean, sv->rstd, dout->data, din[0] ? din[0]->data : NULL,
        dgamma, dbeta, tg__dx_fresh(din[0]), sv->ws, sv->ws_bytes);
    TG_CHECK(st == TG_OK); /* the workspace was sized for this geometry */
}

static int bnp_print(const tg_tensor *y, char *buf, size_t len) {
    const bnp_params *p = y->params;
    char bn[128], pool[128];
    tg__bn_op_print(y, bn, sizeof bn);
    tg__pool2d_print_of(&p->pool, false, pool, sizeof pool);
    return snprintf(buf, len, "%s; pool %s", bn, pool);
}

/* mu and rstd [C], what batch norm's backward reads; a, where each window's gradient goes. */
static int bnp_saved_views(const tg_tensor *y, tg__saved_view *views, int max) {
    const bnp_saved *sv = y->saved;
    if (max < 3 || !sv)
        return 0;
    const bnp_params *p = y->params;
    const int64_t C = p->bn.g.C;
    views[0] = tg__view("mu",
                        p->bn.training ? "the batch mean of each channel"
                                       : "the running mean of each channel",
                        y->dtype, 1, &C, sv->mean);
    views[1] = tg__view("rstd",
                        p->bn.training ? "1 / sqrt(batch variance + eps)"
                                       : "1 / sqrt(running variance + eps)",
                        y->dtype, 1, &C, sv->rstd);
    views[2] =
        tg__view("a", "the argmax of each window (ih*W + iw)", TG_I32, 4, y->shape, sv->argmax);
    return 3;
}

const tg__op_desc tg__op_batch_norm_relu_max_pool2d = {
    .name = "batch_norm_relu_max_pool2d",
    .saves = "each channel's mean mu and rstd = 1/sqrt(var + eps), the argmax a of each window, "
             "and its output y (the mask)",
    .min_inputs = 1,
    .flags = TG__OP_WRITES_GRAD,
    .max_inputs = 5,
    .params_size = sizeof(bnp_params),
    .shape = bnp_shape,
    .forward = bnp_forward,
    .backward = bnp_backward,
    .print_params = bnp_print,
    .saved_views = bnp_saved_views,
    .rule = "dz[a] += y > 0 ? dy : 0; dx += gamma rstd (dz - mean(dz) - xhat mean(dz xhat)) "
            "(training; eval: dz gamma rstd), dgamma += sum dz xhat, dbeta += sum dz",
};

tg_tensor *tg_batch_norm_relu_max_pool2d_at(tg_tape *t, tg_tensor *x, tg_tensor *weight,
                                            tg_tensor *bias, tg_tensor *running_mean,
                                            tg_tensor *running_var, double momentum, double eps,
                                            const tg_pool2d_opts *pool, const char *file,
                                            int line) {
    bnp_params p = {
        .bn = {.training = tg_tape_training(t), .relu = true, .momentum = momentum, .eps = eps},
        .pool = tg__pool2d_params_of(pool)};
    tg_tensor *in[1 + BN_N_OPTIONAL];
    const int n = tg__bn_op_inputs(&p.bn, in, x, weight, bias, running_mean, running_var);
    return tg__record(t, &tg__op_batch_norm_relu_max_pool2d, in, n, &p, file, line);
}
