/* conv.h -- private: the kernels of the convolutional ops (issue 14), in float32 and float64.
 * Not installed. The ops (conv2d, max_pool2d, avg_pool2d, batch_norm) wrap these; each kernel
 * follows PyTorch's convention for the same layer exactly (NCHW, cross-correlation, the same
 * output sizes, tie rules and running-statistics update).
 *
 * Conventions shared by every kernel here:
 *   - Tensors are dense, row-major, in the element type `dtype` (TG_F32 or TG_F64); pointers are
 *     `void *` to data of that type.
 *   - Forward kernels write (=) their outputs. Backward kernels ACCUMULATE (+=) into their
 *     destinations, and a NULL destination means "not needed" (nothing is computed for it).
 *   - Results are bit-identical for any thread count (tg_set_num_threads): work is split over
 *     images, channels or output columns, never in a way that reorders a sum.
 *   - No kernel allocates: conv2d takes a caller-provided workspace (from the tape's arena). */
#ifndef TG_KERNELS_CONV_H
#define TG_KERNELS_CONV_H

#include "core/engine.h"

/* ---- conv2d ----
 * y[n,k,oh,ow] = b[k] + sum_{c,r,s} w[k,c,r,s] x[n, g*Cg + c, oh*sh - ph + r*dh, ow*sw - pw + s*dw]
 * with g = k / (K/groups), Cg = C/groups, x taken as 0 outside the image (zero padding).
 *   x [N,C,H,W], w [K, C/groups, R, S], b [K] (optional), y [N,K,OH,OW]
 *   OH = floor((H + 2 ph - dh (R - 1) - 1) / sh) + 1, and likewise OW with (W, pw, dw, S, sw).
 * Index 0 of stride/pad/dil is the height axis, index 1 the width axis. */
typedef struct tg__conv2d_geom {
    int64_t N, C, H, W; /* input */
    int64_t K, R, S;    /* output channels, kernel height and width */
    int64_t stride[2], pad[2], dil[2], groups;
    int64_t OH, OW; /* output height and width (filled by tg__conv2d_geom_init) */
} tg__conv2d_geom;

/* Validates the shapes and parameters and fills *g. x_shape must be rank 4 [N,C,H,W], w_shape
 * rank 4 [K, C/groups, R, S], b_shape (NULL: no bias) rank 1 [K]; stride and dil >= 1, pad >= 0,
 * groups >= 1 dividing C and K, and an output of at least 1 x 1. TG_OK, or TG_ERR_SHAPE /
 * TG_ERR_VALUE with the reason, naming the shapes, in msg (e.g. "input [2,3,5,5] has 3 channels
 * but weight [4,2,3,3] with groups 1 expects 2"). */
tg_status tg__conv2d_geom_init(tg__conv2d_geom *g, int x_rank, const int64_t *x_shape, int w_rank,
                               const int64_t *w_shape, int b_rank, const int64_t *b_shape,
                               const int64_t stride[2], const int64_t pad[2], const int64_t dil[2],
                               int64_t groups, char *msg, size_t msg_len);

/* Bytes of workspace that tg__conv2d_forward and tg__conv2d_backward need to run on up to
 * `nthreads` threads (pass tg_get_num_threads()): one im2col buffer [Cg*R*S, OH*OW] per thread
 * plus backward's 8 partial sums of dw and db (for conv2 of the Fashion-MNIST CNN in f32 at 2
 * threads, about 1 MB). The same size serves both calls. A smaller workspace makes them use
 * fewer threads (same result) down to the 1-thread size, below which they fail. */
size_t tg__conv2d_workspace_bytes(const tg__conv2d_geom *g, tg_dtype dtype, int nthreads);

/* y = conv2d(x, w) + b (b may be NULL). ws: at least tg__conv2d_workspace_bytes(g, dtype, 1)
 * bytes, 64-byte aligned, contents undefined on entry and exit. TG_OK, or TG_ERR_VALUE (message
 * in tg_last_errmsg) if the workspace is too small. */
tg_status tg__conv2d_forward(const tg__conv2d_geom *g, tg_dtype dtype, const void *x, const void *w,
                             const void *b, void *y, void *ws, size_t ws_bytes);

/* Gradients of conv2d, each accumulated (+=) and each optional (NULL: not needed):
 *   dx [N,C,H,W] += sum over the windows containing each pixel of w dy   (w and dy needed)
 *   dw [K,Cg,R,S] += sum_{n,oh,ow} dy[n,k,oh,ow] x[n, ..window..]        (x and dy needed)
 *   db [K]       += sum_{n,oh,ow} dy[n,k,oh,ow]
 * x may be NULL when dw is, w when dx is. dx_fresh: dx holds no value yet, and is stored as if
 * it had been zeroed first. Same workspace rule and status as the forward. */
tg_status tg__conv2d_backward(const tg__conv2d_geom *g, tg_dtype dtype, const void *x,
                              const void *w, const void *dy, void *dx, void *dw, void *db, void *ws,
                              size_t ws_bytes, bool dx_fresh);

/* ---- max_pool2d and avg_pool2d (ceil_mode false, dilation 1) ----
 *   x [N,C,H,W] -> y [N,C,OH,OW], OH = floor((H + 2 ph - kh) / sh) + 1, likewise OW.
 * As in PyTorch, the padding may be at most half the kernel (so every window holds at least one
 * pixel of the image). */
typedef struct tg__pool2d_geom {
    int64_t N, C, H, W;
    int64_t kernel[2], stride[2], pad[2];
    int64_t OH, OW; /* filled by tg__pool2d_geom_init */
} tg__pool2d_geom;

/* Validates and fills *g: x rank 4, kernel and stride >= 1, 0 <= pad <= kernel / 2, output at
 * least 1 x 1, H*W < 2^31 (max_pool2d's int32 argmax). `op` names the op in the message. */
tg_status tg__pool2d_geom_init(tg__pool2d_geom *g, const char *op, int x_rank,
                               const int64_t *x_shape, const int64_t kernel[2],
                               const int64_t stride[2], const int64_t pad[2], char *msg,
                               size_t msg_len);

/* y = the maximum of each window, the padding counting as -inf. argmax [N,C,OH,OW] receives, as
 * PyTorch's return_indices, the index ih*W + iw within the (n,c) plane of the maximum: the first
 * in scan order (row by row) on ties; a NaN counts as larger than anything, and the last NaN in
 * scan order wins (PyTorch's CPU kernel: `if (v > max || isnan(v))`). */
void tg__max_pool2d_forward(const tg__pool2d_geom *g, tg_dtype dtype, const void *x, void *y,
                            int32_t *argmax);
/* dx[n,c, argmax[n,c,oh,ow]] += dy[n,c,oh,ow]: the gradient of each window goes to its argmax.
 * dx_fresh: dx holds no value yet, and is stored as if it had been zeroed first. */
void tg__max_pool2d_backward(const tg__pool2d_geom *g, tg_dtype dtype, const int32_t *argmax,
                             const void *dy, void *dx, bool dx_fresh);

/* y = the mean of each window. count_include_pad != 0: divided by kh*kw (padding counts as
 * zeros); 0: divided by the number of image pixels in the window. */
void tg__avg_pool2d_forward(const tg__pool2d_geom *g, tg_dtype dtype, int count_include_pad,
                            const void *x, void *y);
/* dx[pixel] += dy[window] / divisor, for every window containing the pixel. */
void tg__avg_pool2d_backward(const tg__pool2d_geom *g, tg_dtype dtype, int count_include_pad,
                             const void *dy, void *dx);

/* ---- batch norm ----
 * Over the channels of x [N,C,H,W] or the features of x [N,F] (HW = 1): for each channel c, with
 * the statistics over its M = N*H*W values,
 *   y = (x - mean) * rstd * gamma[c] + beta[c],   rstd = 1 / sqrt(var + eps)
 * gamma and beta are optional (NULL: 1 and 0, PyTorch's affine=False). Statistics are summed in
 * double in float64; in float32 in 16 float lanes over chunks of at most 1024 values, the lanes
 * and chunks added in double, the variance by the corrected two-pass formula about the mean (so a
 * large mean costs no accuracy), and y and dx formed about the mean too (conv.c). Mean, rstd and
 * the running statistics are [C] in x's dtype. */
typedef struct tg__bn_geom {
    int64_t N, C, HW;
} tg__bn_geom;

/* Validates and fills *g: x rank 2 [N,F] or rank 4 [N,C,H,W]; in training (training != 0) more
 * than one value per channel (PyTorch's rule). `op` names the op in the message. */
tg_status tg__bn_geom_init(tg__bn_geom *g, const char *op, int x_rank, const int64_t *x_shape,
                           int training, char *msg, size_t msg_len);

/* Training: the batch mean and the biased variance normalize; save_mean and save_rstd (both
 * required, [C]) receive them for backward. If running_mean / running_var are not NULL they are
 * updated as PyTorch does: r = (1 - momentum) r + momentum * s, with the UNBIASED variance
 * var * M / (M - 1) for running_var (PyTorch's momentum is 0.1). */
void tg__bn_forward_train(const tg__bn_geom *g, tg_dtype dtype, const void *x, const void *gamma,
                          const void *beta, double eps, double momentum, void *y, void *save_mean,
                          void *save_rstd, void *running_mean, void *running_var);

/* Evaluation: normalizes with running_mean and running_var (both required). save_mean and
 * save_rstd (optional) receive running_mean and 1 / sqrt(running_var + eps) for backward. */
void tg__bn_forward_eval(const tg__bn_geom *g, tg_dtype dtype, const void *x, const void *gamma,
                         const void *beta, const void *running_mean, const void *running_var,
                         double eps, void *y, void *save_mean, void *save_rstd);

/* Gradients, accumulated and optional (NULL: not needed), from the mean and rstd that forward
 * saved; dx is stored instead (as if zeroed first) when dx_fresh. training != 0: the statistics were the batch's, so dx includes their dependence on x;
 * 0: they were constants (eval), dx = dy * gamma * rstd.
 *   dgamma [C] += sum dy * xhat, dbeta [C] += sum dy, xhat = (x - mean) * rstd. */
void tg__bn_backward(const tg__bn_geom *g, tg_dtype dtype, int training, const void *x,
                     const void *gamma, const void *mean, const void *rstd, const void *dy,
                     void *dx, void *dgamma, void *dbeta, bool dx_fresh);

/* The same three with relu fused after the normalization (the fused op batch_norm_relu):
 * forward y = max(bn(x), 0) (relu's select, v < 0 ? 0 : v, so a NaN passes); backward from
 * relu_y, that forward's y (NULL: plain batch norm): batch norm's backward of the masked
 * gradient y > 0 ? dy : 0. Bit for bit the values and gradients of batch norm then relu. */
void tg__bn_relu_forward_train(const tg__bn_geom *g, tg_dtype dtype, bool relu, const void *x,
                               const void *gamma, const void *beta, double eps, double momentum,
                               void *y, void *save_mean, void *save_rstd, void *running_mean,
                               void *running_var);
void tg__bn_relu_forward_eval(const tg__bn_geom *g, tg_dtype dtype, bool relu, const void *x,
                              const void *gamma, const void *beta, const void *running_mean,
                              const void *running_var, double eps, void *y, void *save_mean,
                              void *save_rstd);
void tg__bn_relu_backward(const tg__bn_geom *g, tg_dtype dtype, int training, const void *x,
                          const void *relu_y, const void *gamma, const void *mean, const void *rstd,
                          const void *dy, void *dx, void *dgamma, void *dbeta, bool dx_fresh);

/* ---- batch norm, relu and max pooling fused (the op batch_norm_relu_max_pool2d) ----
 * y = max_pool2d(relu(batch_norm(x))) with batch norm's statistics and modes (training != 0: the
 * batch's, the running statistics updated; 0: the running ones) and the pool of geometry pg
 * (whose N, C, H, W are x's), bit for bit the three kernels above in turn, without storing
 * relu's output: each (n, c) plane of it is formed in a buffer of the workspace and pooled from
 * there. argmax [N,C,OH,OW] as tg__max_pool2d_forward's; save_mean, save_rstd [C] as batch
 * norm's. The workspace is one buffer of H*W values per thread: with fewer than
 * tg__bn_relu_pool_workspace_bytes(g, dtype, nthreads), fewer threads run (the same result);
 * below one buffer, TG_ERR_VALUE (tg_last_errmsg says so). */
size_t tg__bn_relu_pool_workspace_bytes(const tg__bn_geom *g, tg_dtype dtype, int nthreads);
tg_status tg__bn_relu_pool_forward(const tg__bn_geom *g, const tg__pool2d_geom *pg, tg_dtype dtype,
                                   int training, const void *x, const void *gamma, const void *beta,
                                   double eps, double momentum, void *running_mean,
                                   void *running_var, void *y, int32_t *argmax, void *save_mean,
                                   void *save_rstd, void *ws, size_t ws_bytes);
/* Its backward from forward's y, argmax, mean and rstd: dx (stored when dx_fresh), dgamma and
 * dbeta accumulated and optional, as tg__bn_relu_backward's; the same workspace rule. */
tg_status tg__bn_relu_pool_backward(const tg__bn_geom *g, const tg__pool2d_geom *pg, tg_dtype dtype,
                                    int training, const void *x, const void *y,
                                    const int32_t *argmax, const void *gamma, const void *mean,
                                    const void *rstd, const void *dy, void *dx, void *dgamma,
                                    void *dbeta, bool dx_fresh, void *ws, size_t ws_bytes);

/* ---- SIMD width (tests) ----
 * The float32 batch-norm and 2x2 max-pool kernels run an AVX-512 build where the CPU has it and
 * the baseline build otherwise, with the same results bit for bit. on = 0 forces the baseline,
 * 1 restores the choice; returns the previous state (1: the AVX-512 build was in use). */
int tg__conv_wide_simd(int on);
/* Whether the AVX-512 builds are in use (the CPU has AVX-512 and tests have not forced the
 * baseline): dropout's mask follows the same switch. */
bool tg__conv_wide_simd_in_use(void);

/* Outputs of at least this many bytes (twice the L2 cache; 4 MiB if unknown) are written by the
 * float32 batch-norm forward and relu with streaming (non-temporal) stores: they cannot stay in
 * the caches for the next op anyway, and streaming them saves reading each line before it is
 * written. The values are the same. */
size_t tg__stream_min_bytes(void);

#endif /* TG_KERNELS_CONV_H */
