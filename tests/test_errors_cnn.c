/* Caller mistakes with the cnnops ops and layers (issue 14): each fails with NULL and a message
 * naming the caller's line, the op, the arguments and the shapes. */
#include "tapegrad.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>

static tg_tape *tape;
static void setup(void) { tape = tg_tape_new(); }
static void teardown(void) { tg_tape_free(tape); }
TestSuite(errors_cnn, .init = setup, .fini = teardown);

/* Expects the tape's status and message "test_errors_cnn.c:<line>: <rest>", then resets it. */
static void expect_msg(tg_status st, int line, const char *rest) {
    char want[512];
    snprintf(want, sizeof want, "test_errors_cnn.c:%d: %s", line, rest);
    cr_expect_eq(tg_tape_status(tape), st, "status %s for %s", tg_status_name(tg_tape_status(tape)),
                 rest);
    cr_expect_str_eq(tg_tape_errmsg(tape), want);
    tg_tape_reset(tape);
}

Test(errors_cnn, conv2d_shapes_and_options) {
    tg_tensor *x = tg_tensor_new(TG_F32, TG_SHAPE(2, 3, 5, 5));
    tg_tensor *w = tg_tensor_new(TG_F32, TG_SHAPE(4, 2, 3, 3));
    tg_tensor *w3 = tg_tensor_new(TG_F32, TG_SHAPE(4, 3, 3, 3));
    tg_tensor *x3 = tg_tensor_new(TG_F32, TG_SHAPE(3, 5, 5));
    tg_tensor *b = tg_tensor_new(TG_F32, TG_SHAPE(5));
    tg_tensor *w7 = tg_tensor_new(TG_F32, TG_SHAPE(4, 3, 7, 3));
    int line = __LINE__ + 1;
    cr_expect_null(tg_conv2d(tape, x, w, NULL, NULL));
    expect_msg(TG_ERR_SHAPE, line,
               "tg_conv2d: input [2,3,5,5] has 3 channels but weight [4,2,3,3] with groups 1 "
               "expects 2");
    line = __LINE__ + 1;
    cr_expect_null(tg_conv2d(tape, x3, w3, NULL, NULL));
    expect_msg(TG_ERR_SHAPE, line, "tg_conv2d: input [3,5,5] must be rank 4 [N,C,H,W]");
    line = __LINE__ + 1;
    cr_expect_null(tg_conv2d(tape, x, w3, b, NULL));
    expect_msg(TG_ERR_SHAPE, line, "tg_conv2d: bias [5] must be [4] for weight [4,3,3,3]");
    line = __LINE__ + 1;
    cr_expect_null(tg_conv2d(tape, x, w3, NULL, &(tg_conv2d_opts){.groups = 2}));
    expect_msg(TG_ERR_VALUE, line,
               "tg_conv2d: groups 2 must be >= 1 and divide the input channels (input "
               "[2,3,5,5]) and the output channels (weight [4,3,3,3])");
    line = __LINE__ + 1;
    cr_expect_null(tg_conv2d(tape, x, w3, NULL, &(tg_conv2d_opts){.stride = {-1, 1}}));
    expect_msg(TG_ERR_VALUE, line,
               "tg_conv2d: stride [-1,1] and dilation [1,1] must be >= 1, padding [0,0] >= 0");
    line = __LINE__ + 1;
    cr_expect_null(tg_conv2d(tape, x, w7, NULL, &(tg_conv2d_opts){.padding = {0, 1}}));
    expect_msg(TG_ERR_SHAPE, line,
               "tg_conv2d: input [2,3,5,5] with padding [0,1] is smaller than weight [4,3,7,3] "
               "dilated by [1,1] (7 x 3)");
    line = __LINE__ + 1;
    cr_expect_null(tg_conv2d(tape, x, NULL, NULL, NULL));
    expect_msg(TG_ERR_NULL, line, "tg_conv2d: input 2 is NULL");
    tg_tensor *xd = tg_tensor_new(TG_F64, TG_SHAPE(2, 3, 5, 5));
    line = __LINE__ + 1;
    cr_expect_null(tg_conv2d(tape, xd, w3, NULL, NULL));
    expect_msg(TG_ERR_DTYPE, line, "tg_conv2d: dtypes differ: input 1 is f64, input 2 is f32");
    tg_tensor_free(xd);
    tg_tensor_free(x);
    tg_tensor_free(w);
    tg_tensor_free(w3);
    tg_tensor_free(x3);
    tg_tensor_free(b);
    tg_tensor_free(w7);
}

Test(errors_cnn, pooling) {
    tg_tensor *x = tg_tensor_new(TG_F32, TG_SHAPE(1, 2, 4, 4));
    int line = __LINE__ + 1;
    cr_expect_null(tg_max_pool2d(tape, x, NULL));
    expect_msg(TG_ERR_NULL, line, "tg_max_pool2d: opts is NULL (the kernel size is required)");
    line = __LINE__ + 1;
    cr_expect_null(tg_avg_pool2d(tape, x, &(tg_pool2d_opts){.kernel = {2, 2}, .padding = {2, 0}}));
    expect_msg(TG_ERR_VALUE, line,
               "tg_avg_pool2d: kernel [2,2] and stride [2,2] must be >= 1, padding [2,0] between "
               "0 and half the kernel");
    line = __LINE__ + 1;
    cr_expect_null(tg_max_pool2d(tape, x, &(tg_pool2d_opts){.kernel = {5, 1}}));
    expect_msg(TG_ERR_SHAPE, line,
               "tg_max_pool2d: input [1,2,4,4] with padding [0,0] is smaller than the kernel "
               "[5,1]");
    tg_tensor *x2 = tg_tensor_new(TG_F32, TG_SHAPE(4, 4));
    line = __LINE__ + 1;
    cr_expect_null(tg_max_pool2d(tape, x2, &(tg_pool2d_opts){.kernel = {2, 2}}));
    expect_msg(TG_ERR_SHAPE, line, "tg_max_pool2d: input [4,4] must be rank 4 [N,C,H,W]");
    tg_tensor_free(x);
    tg_tensor_free(x2);
}

/* The fused op shares batch_norm's checks; its messages name it. */
Test(errors_cnn, batch_norm_relu) {
    tg_tensor *x = tg_tensor_new(TG_F64, TG_SHAPE(4, 3));
    tg_tensor *c2 = tg_tensor_new(TG_F64, TG_SHAPE(2));
    tg_tensor *x5 = tg_tensor_new(TG_F64, TG_SHAPE(2, 3, 4));
    int line = __LINE__ + 1;
    cr_expect_null(tg_batch_norm_relu(tape, x, c2, NULL, NULL, NULL, 0.1, 1e-5));
    expect_msg(TG_ERR_SHAPE, line, "tg_batch_norm_relu: weight [2] must be [3] for input [4,3]");
    line = __LINE__ + 1;
    cr_expect_null(tg_batch_norm_relu(tape, x5, NULL, NULL, NULL, NULL, 0.1, 1e-5));
    expect_msg(TG_ERR_SHAPE, line,
               "tg_batch_norm_relu: input [2,3,4] must be rank 2 [N,F] or rank 4 [N,C,H,W]");
    tg_tape_set_training(tape, 0);
    line = __LINE__ + 1;
    cr_expect_null(tg_batch_norm_relu(tape, x, NULL, NULL, NULL, NULL, 0.1, 1e-5));
    expect_msg(TG_ERR_NULL, line,
               "tg_batch_norm_relu: evaluation mode normalizes with running_mean and running_var, "
               "which are NULL");
    tg_tape_set_training(tape, 1);
    line = __LINE__ + 1;
    cr_expect_null(tg_batch_norm_layer_forward_relu(tape, NULL, NULL));
    expect_msg(TG_ERR_NULL, line, "tg_batch_norm_layer_forward_relu: layer is NULL");
    tg_batch_norm_layer *bn = tg_batch_norm_layer_new(TG_F64, 2, "bn");
    line = __LINE__ + 1;
    cr_expect_null(tg_batch_norm_layer_forward_relu(tape, bn, x));
    expect_msg(TG_ERR_SHAPE, line, "tg_batch_norm_relu: weight [2] must be [3] for input [4,3]");
    tg_batch_norm_layer_free(bn);
    tg_tensor_free(x);
    tg_tensor_free(c2);
    tg_tensor_free(x5);
}

/* batch norm's checks, then the pool's, each naming the fused op; the layer helper's NULLs. */
Test(errors_cnn, batch_norm_relu_max_pool2d) {
    tg_tensor *x = tg_tensor_new(TG_F32, TG_SHAPE(2, 3, 4, 4));
    tg_tensor *x2 = tg_tensor_new(TG_F32, TG_SHAPE(4, 3));
    tg_tensor *c2 = tg_tensor_new(TG_F32, TG_SHAPE(2));
    const tg_pool2d_opts p2 = {.kernel = {2, 2}}, big = {.kernel = {5, 2}};
    const tg_pool2d_opts wide_pad = {.kernel = {2, 2}, .padding = {2, 0}};
    int line = __LINE__ + 1;
    cr_expect_null(tg_batch_norm_relu_max_pool2d(tape, x, c2, NULL, NULL, NULL, 0.1, 1e-5, &p2));
    expect_msg(TG_ERR_SHAPE, line,
               "tg_batch_norm_relu_max_pool2d: weight [2] must be [3] for input [2,3,4,4]");
    line = __LINE__ + 1;
    cr_expect_null(tg_batch_norm_relu_max_pool2d(tape, x, NULL, NULL, NULL, NULL, 0.1, 1e-5, NULL));
    expect_msg(TG_ERR_NULL, line,
               "tg_batch_norm_relu_max_pool2d: opts is NULL (the kernel size is required)");
    line = __LINE__ + 1;
    cr_expect_null(tg_batch_norm_relu_max_pool2d(tape, x2, NULL, NULL, NULL, NULL, 0.1, 1e-5, &p2));
    expect_msg(TG_ERR_SHAPE, line,
               "tg_batch_norm_relu_max_pool2d: input [4,3] must be rank 4 [N,C,H,W]");
    line = __LINE__ + 1;
    cr_expect_null(tg_batch_norm_relu_max_pool2d(tape, x, NULL, NULL, NULL, NULL, 0.1, 1e-5, &big));
    expect_msg(TG_ERR_SHAPE, line,
               "tg_batch_norm_relu_max_pool2d: input [2,3,4,4] with padding [0,0] is smaller "
               "than the kernel [5,2]");
    line = __LINE__ + 1;
    cr_expect_null(tg_batch_norm_relu_max_pool2d(tape, x, NULL, NULL, NULL, NULL, 0, 1, &wide_pad));
    expect_msg(TG_ERR_VALUE, line,
               "tg_batch_norm_relu_max_pool2d: kernel [2,2] and stride [2,2] must be >= 1, "
               "padding [2,0] between 0 and half the kernel");
    tg_tape_set_training(tape, 0);
    line = __LINE__ + 1;
    cr_expect_null(tg_batch_norm_relu_max_pool2d(tape, x, NULL, NULL, NULL, NULL, 0.1, 1e-5, &p2));
    expect_msg(TG_ERR_NULL, line,
               "tg_batch_norm_relu_max_pool2d: evaluation mode normalizes with running_mean and "
               "running_var, which are NULL");
    tg_tape_set_training(tape, 1);
    line = __LINE__ + 1;
    cr_expect_null(tg_batch_norm_layer_forward_relu_max_pool2d(tape, NULL, x, &p2));
    expect_msg(TG_ERR_NULL, line, "tg_batch_norm_layer_forward_relu_max_pool2d: layer is NULL");
    tg_batch_norm_layer *bn = tg_batch_norm_layer_new(TG_F32, 3, "bn");
    line = __LINE__ + 1;
    cr_expect_null(tg_batch_norm_layer_forward_relu_max_pool2d(tape, bn, x, NULL));
    expect_msg(TG_ERR_NULL, line,
               "tg_batch_norm_relu_max_pool2d: opts is NULL (the kernel size is required)");
    line = __LINE__ + 1;
    cr_expect_null(tg_batch_norm_layer_forward_relu_max_pool2d(NULL, bn, x, &p2));
    char want[128];
    snprintf(want, sizeof want,
             "test_errors_cnn.c:%d: tg_batch_norm_layer_forward_relu_max_pool2d: tape is NULL",
             line);
    cr_expect_str_eq(tg_last_errmsg(), want);
    tg_batch_norm_layer_free(bn);
    tg_tensor_free(x);
    tg_tensor_free(x2);
    tg_tensor_free(c2);
}

Test(errors_cnn, batch_norm) {
    tg_tensor *x = tg_tensor_new(TG_F64, TG_SHAPE(4, 3));
    tg_tensor *c3 = tg_tensor_new(TG_F64, TG_SHAPE(3));
    tg_tensor *c2 = tg_tensor_new(TG_F64, TG_SHAPE(2));
    int line = __LINE__ + 1;
    cr_expect_null(tg_batch_norm(tape, x, c2, NULL, NULL, NULL, 0.1, 1e-5));
    expect_msg(TG_ERR_SHAPE, line, "tg_batch_norm: weight [2] must be [3] for input [4,3]");
    line = __LINE__ + 1;
    cr_expect_null(tg_batch_norm(tape, x, NULL, NULL, c3, NULL, 0.1, 1e-5));
    expect_msg(TG_ERR_NULL, line,
               "tg_batch_norm: running_mean is given but running_var NULL: give both or neither");
    line = __LINE__ + 1;
    cr_expect_null(tg_batch_norm(tape, x, NULL, NULL, NULL, NULL, 0.1, 0));
    expect_msg(TG_ERR_VALUE, line,
               "tg_batch_norm: eps is 0 and momentum 0.1; eps must be finite and > 0, momentum "
               "in [0, 1]");
    line = __LINE__ + 1;
    cr_expect_null(tg_batch_norm(tape, x, NULL, NULL, NULL, NULL, NAN, 1e-5));
    expect_msg(TG_ERR_VALUE, line,
               "tg_batch_norm: eps is 1e-05 and momentum nan; eps must be finite and > 0, "
               "momentum in [0, 1]");
    tg_tensor *x1 = tg_tensor_new(TG_F64, TG_SHAPE(1, 3, 1, 1));
    line = __LINE__ + 1;
    cr_expect_null(tg_batch_norm(tape, x1, NULL, NULL, NULL, NULL, 0.1, 1e-5));
    expect_msg(TG_ERR_SHAPE, line,
               "tg_batch_norm: input [1,3,1,1] has 1 value per channel; training needs more "
               "than 1");
    tg_tensor *x5 = tg_tensor_new(TG_F64, TG_SHAPE(2, 3, 4));
    line = __LINE__ + 1;
    cr_expect_null(tg_batch_norm(tape, x5, NULL, NULL, NULL, NULL, 0.1, 1e-5));
    expect_msg(TG_ERR_SHAPE, line,
               "tg_batch_norm: input [2,3,4] must be rank 2 [N,F] or rank 4 [N,C,H,W]");
    tg_tensor *rv = tg_tensor_ones(TG_F64, TG_SHAPE(3));
    tg_tensor_set_requires_grad(rv, 1);
    line = __LINE__ + 1;
    cr_expect_null(tg_batch_norm(tape, x, NULL, NULL, c3, rv, 0.1, 1e-5));
    expect_msg(TG_ERR_VALUE, line,
               "tg_batch_norm: running_var must be a leaf that requires no gradient (running "
               "statistics are buffers, updated in place)");
    tg_tape_set_training(tape, 0);
    line = __LINE__ + 1;
    cr_expect_null(tg_batch_norm(tape, x, c3, c3, NULL, NULL, 0.1, 1e-5));
    expect_msg(TG_ERR_NULL, line,
               "tg_batch_norm: evaluation mode normalizes with running_mean and running_var, "
               "which are NULL");
    tg_tensor_free(x);
    tg_tensor_free(c3);
    tg_tensor_free(c2);
    tg_tensor_free(x1);
    tg_tensor_free(x5);
    tg_tensor_free(rv);
}

Test(errors_cnn, dropout) {
    tg_tensor *x = tg_tensor_new(TG_F32, TG_SHAPE(2, 3));
    tg_rng rng;
    tg_rng_seed(&rng, 1);
    int line = __LINE__ + 1;
    cr_expect_null(tg_dropout(tape, x, 1, &rng));
    expect_msg(TG_ERR_VALUE, line, "tg_dropout: p is 1; it must be in [0, 1)");
    line = __LINE__ + 1;
    cr_expect_null(tg_dropout(tape, x, -0.1, &rng));
    expect_msg(TG_ERR_VALUE, line, "tg_dropout: p is -0.1; it must be in [0, 1)");
    line = __LINE__ + 1;
    cr_expect_null(tg_dropout(tape, x, 0.5, NULL));
    expect_msg(TG_ERR_NULL, line,
               "tg_dropout: rng is NULL; training mode with p 0.5 draws the mask from it");
    tg_tensor_free(x);
}

Test(errors_cnn, layers) {
    tg_rng rng;
    tg_rng_seed(&rng, 1);
    cr_expect_null(
        tg_conv2d_layer_new(TG_F32, 3, 4, 3, 3, &(tg_conv2d_opts){.groups = 2}, "c", &rng));
    cr_expect_str_eq(tg_last_errmsg(), "tg_conv2d_layer_new: groups 2 must be >= 1 and divide "
                                       "in_channels 3 and out_channels 4");
    cr_expect_null(tg_conv2d_layer_new(TG_F32, 3, 4, 0, 3, NULL, "c", &rng));
    cr_expect_str_eq(tg_last_errmsg(), "tg_conv2d_layer_new: in_channels 3, out_channels 4 and "
                                       "the kernel 0 x 3 must be >= 1");
    cr_expect_null(tg_conv2d_layer_new(TG_F32, 3, 4, 3, 3, NULL, "c", NULL));
    cr_expect_str_eq(tg_last_errmsg(), "tg_conv2d_layer_new: rng is NULL");
    cr_expect_null(tg_conv2d_layer_new(TG_I32, 3, 4, 3, 3, NULL, "c", &rng));
    cr_expect_str_eq(tg_last_errmsg(), "tg_conv2d_layer_new: dtype must be f32 or f64, not i32");
    cr_expect_null(tg_batch_norm_layer_new(TG_F32, 0, "bn"));
    cr_expect_str_eq(tg_last_errmsg(), "tg_batch_norm_layer_new: features 0 must be >= 1");
    int line = __LINE__ + 1;
    cr_expect_null(tg_conv2d_layer_forward(tape, NULL, NULL));
    expect_msg(TG_ERR_NULL, line, "tg_conv2d_layer_forward: layer is NULL");
    line = __LINE__ + 1;
    cr_expect_null(tg_batch_norm_layer_forward(tape, NULL, NULL));
    expect_msg(TG_ERR_NULL, line, "tg_batch_norm_layer_forward: layer is NULL");
    tg_batch_norm_layer *bn = tg_batch_norm_layer_new(TG_F32, 3, "bn");
    tg_tensor *x = tg_tensor_new(TG_F32, TG_SHAPE(2, 4));
    line = __LINE__ + 1;
    cr_expect_null(tg_batch_norm_layer_forward(tape, bn, x));
    expect_msg(TG_ERR_SHAPE, line, "tg_batch_norm: weight [3] must be [4] for input [2,4]");
    tg_tensor_free(x);
    tg_batch_norm_layer_free(bn);
}
