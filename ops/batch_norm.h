/* batch_norm.h -- what batch_norm.c shares with the fused ops after it: one set of callbacks for
 * batch_norm and batch_norm_relu (the shape check, forward, backward, print and saved views read
 * the fused relu from the op's parameters), the builder both public functions call, and the
 * parameters, shape check and inputs that batch_norm_relu_max_pool2d.c builds on. Not an op
 * (CMake compiles only the .c files of ops/). */
#ifndef TG_OPS_BATCH_NORM_H
#define TG_OPS_BATCH_NORM_H

#include "kernels/conv.h"

enum { BN_WEIGHT, BN_BIAS, BN_RMEAN, BN_RVAR, BN_N_OPTIONAL };

typedef struct bn_params {   /* both ops' private parameters */
    int slot[BN_N_OPTIONAL]; /* the input index of weight, bias, running_mean, running_var; -1 */
    int training;            /* the tape's mode at recording time */
    bool relu;               /* batch_norm_relu: y = max(bn(x), 0) (batch_norm_relu.c) */
    double momentum, eps;
    tg__bn_geom g; /* filled by the shape check */
} bn_params;

/* The optional input `which` of op y (NULL: not given), and its data. */
static inline const tg_tensor *tg__bn_input(const tg_tensor *y, int which) {
    const bn_params *p = y->params;
    return p->slot[which] >= 0 ? y->inputs[p->slot[which]] : NULL;
}
static inline const void *tg__bn_data(const tg_tensor *y, int which) {
    const tg_tensor *t = tg__bn_input(y, which);
    return t ? t->data : NULL;
}

/* The callbacks read y->params as bn_params: a fused op's parameters start with one. */
tg_status tg__bn_op_shape(tg_tensor *y, char *msg, size_t len);
tg_status tg__bn_op_forward(tg_tape *tape, tg_tensor *y);
void tg__bn_op_backward(const tg_tensor *y, const tg_tensor *dout, tg_tensor *const *din);
int tg__bn_op_print(const tg_tensor *y, char *buf, size_t len);
int tg__bn_op_saved_views(const tg_tensor *y, tg__saved_view *views, int max);

/* in = x and the optional inputs that are given, their slots in *p; returns their count. */
int tg__bn_op_inputs(bn_params *p, tg_tensor *in[1 + BN_N_OPTIONAL], tg_tensor *x,
                     tg_tensor *weight, tg_tensor *bias, tg_tensor *running_mean,
                     tg_tensor *running_var);

/* Records op (tg__op_batch_norm or tg__op_batch_norm_relu) on x and the optional inputs. */
tg_tensor *tg__bn_op_record(tg_tape *t, const tg__op_desc *op, bool relu, tg_tensor *x,
                            tg_tensor *weight, tg_tensor *bias, tg_tensor *running_mean,
                            tg_tensor *running_var, double momentum, double eps, const char *file,
                            int line);

#endif /* TG_OPS_BATCH_NORM_H */
