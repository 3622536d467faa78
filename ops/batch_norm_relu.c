/* batch_norm_relu: y = relu(batch_norm(x)) = max(xhat * gamma[c] + beta[c], 0), one op
 *   The inputs, modes and running statistics of batch_norm (batch_norm.c), whose callbacks this
 *   op shares; the relu after it is fused: the conv - batch norm - relu of a CNN.
 * With z = batch_norm(x) and y = max(z, 0):  dz = dy [y > 0]  (relu's rule; y > 0 exactly where
 *   z > 0), then batch_norm's backward of dz:
 *   dx = gamma rstd (dz - mean(dz) - xhat mean(dz xhat)) (training; eval: dz gamma rstd),
 *   dgamma += sum dz xhat, dbeta += sum dz.
 * Why fuse: the pair is memory-bound; apart, relu reads z and writes y in the forward, and its
 *   backward writes dz, which batch norm reads again, over tensors the size of the conv's output.
 *   Fused, z is never stored and dz is formed a chunk at a time on the stack. The values and the
 *   gradients are the pair's bit for bit: the same arithmetic in the same order (relu's select,
 *   v < 0 ? 0 : v forward and y > 0 ? dy : 0 backward, and batch norm's sums over the same
 *   chunks); tests/test_cnn.c checks it.
 * Saves mu and rstd [C], as batch_norm, and its output y, which is the mask. */
#include "batch_norm.h"

const tg__op_desc tg__op_batch_norm_relu = {
    .name = "batch_norm_relu",
    .saves = "each channel's mean mu and rstd = 1/sqrt(var + eps), and its output y (the mask)",
    .min_inputs = 1,
    .flags = TG__OP_WRITES_GRAD,
    .max_inputs = 5,
    .params_size = sizeof(bn_params), /* batch_norm's, with relu set */
    .shape = tg__bn_op_shape,
    .forward = tg__bn_op_forward,
    .backward = tg__bn_op_backward,
    .print_params = tg__bn_op_print,
    .saved_views = tg__bn_op_saved_views,
    .rule = "dz = dy [y > 0]; dx += gamma rstd (dz - mean(dz) - xhat mean(dz xhat)) (training; "
            "eval: dz gamma rstd), dgamma += sum dz xhat, dbeta += sum dz",
};

tg_tensor *tg_batch_norm_relu_at(tg_tape *t, tg_tensor *x, tg_tensor *weight, tg_tensor *bias,
                                 tg_tensor *running_mean, tg_tensor *running_var, double momentum,
                                 double eps, const char *file, int line) {
    return tg__bn_op_record(t, &tg__op_batch_norm_relu, true, x, weight, bias, running_mean,
                            running_var, momentum, eps, file, line);
}
