/* A CNN with batch norm through a checkpoint (cnnops, issue 14): the running statistics are plain
 * leaves, so tg_checkpoint_save / tg_checkpoint_load carry them like the parameters, and a fresh
 * model loaded from the file gives bit-identical evaluation-mode outputs. */
#define _POSIX_C_SOURCE 200809L /* mkdtemp */
#include "tapegrad.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct model {
    tg_conv2d_layer *c1;
    tg_batch_norm_layer *bn;
    tg_linear *fc;
    tg_tensor *all[8]; /* what a checkpoint holds: parameters and running statistics */
} model;

static model model_new(uint64_t seed) {
    tg_rng rng;
    tg_rng_seed(&rng, seed);
    model m = {0};
    m.c1 =
        tg_conv2d_layer_new(TG_F32, 1, 4, 3, 3, &(tg_conv2d_opts){.padding = {1, 1}}, "c1", &rng);
    m.bn = tg_batch_norm_layer_new(TG_F32, 4, "bn");
    m.fc = tg_linear_new(TG_F32, 4 * 3 * 3, 5, "fc", &rng);
    cr_assert(m.c1 && m.bn && m.fc, "%s", tg_last_errmsg());
    tg_tensor *all[8] = {m.c1->W,           m.c1->b, m.bn->weight, m.bn->bias, m.bn->running_mean,
                         m.bn->running_var, m.fc->W, m.fc->b};
    memcpy(m.all, all, sizeof all);
    return m;
}

static void model_free(model *m) {
    tg_conv2d_layer_free(m->c1);
    tg_batch_norm_layer_free(m->bn);
    tg_linear_free(m->fc);
}

static tg_tensor *forward(tg_tape *t, const model *m, tg_tensor *x) {
    tg_tensor *h =
        tg_relu(t, tg_batch_norm_layer_forward(t, m->bn, tg_conv2d_layer_forward(t, m->c1, x)));
    h = tg_max_pool2d(t, h, &(tg_pool2d_opts){.kernel = {2, 2}});
    return tg_linear_forward(t, m->fc, tg_flatten(t, h, 1, -1));
}

Test(cnn_checkpoint, batch_norm_running_statistics_round_trip) {
    tg_rng rng;
    tg_rng_seed(&rng, 4);
    tg_tensor *x = tg_tensor_rand(TG_F32, TG_SHAPE(8, 1, 6, 6), -1, 1, &rng);
    int32_t lab[8] = {0, 1, 2, 3, 4, 0, 1, 2};
    tg_tensor *y = tg_tensor_from(TG_I32, TG_SHAPE(8), lab);
    model a = model_new(1);
    tg_optim_config cfg = tg_optim_defaults(TG_OPTIM_SGD, 0.1);
    tg_tensor *params[6] = {a.all[0], a.all[1], a.all[2], a.all[3], a.all[6], a.all[7]};
    tg_optim *opt = tg_optim_new(&cfg, params, 6);
    cr_assert_not_null(opt, "%s", tg_last_errmsg());
    tg_tape *t = tg_tape_new();
    for (int s = 0; s < 5; s++) { /* training moves the parameters and the running statistics */
        tg_tape_reset(t);
        tg_optim_zero_grad(opt);
        cr_assert_eq(tg_backward(t, tg_softmax_cross_entropy(t, forward(t, &a, x), y)), TG_OK, "%s",
                     tg_tape_errmsg(t));
        cr_assert_eq(tg_optim_step(opt), TG_OK);
    }
    cr_expect_neq(tg_tensor_get(a.bn->running_mean, 0), 0.0);
    cr_expect_neq(tg_tensor_get(a.bn->running_var, 0), 1.0);

    char dir[] = "/tmp/tg_cnnckpt_XXXXXX", path[64];
    cr_assert_not_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/cnn.safetensors", dir);
    cr_assert_eq(tg_checkpoint_save(path, a.all, 8, NULL), TG_OK, "%s", tg_last_errmsg());
    model b = model_new(2); /* other weights, fresh running statistics */
    cr_assert_eq(tg_checkpoint_load(path, b.all, 8, NULL), TG_OK, "%s", tg_last_errmsg());
    remove(path);
    rmdir(dir);

    tg_tape_set_training(t, 0);
    tg_tape_reset(t);
    tg_tensor *za = forward(t, &a, x), *zb = forward(t, &b, x);
    cr_assert(za && zb, "%s", tg_tape_errmsg(t));
    cr_expect_eq(memcmp(tg_tensor_cdata(za), tg_tensor_cdata(zb), 8 * 5 * sizeof(float)), 0,
                 "evaluation outputs differ after the round trip");
    /* and the running statistics themselves, bit for bit */
    cr_expect_eq(memcmp(tg_tensor_cdata(a.bn->running_var), tg_tensor_cdata(b.bn->running_var),
                        4 * sizeof(float)),
                 0);
    /* a model that did not load them differs (the test would see a missing tensor) */
    model c = model_new(1);
    tg_tensor *zc = forward(t, &c, x);
    cr_expect_neq(memcmp(tg_tensor_cdata(za), tg_tensor_cdata(zc), 8 * 5 * sizeof(float)), 0);
    tg_tape_free(t);
    tg_optim_free(opt);
    model_free(&a);
    model_free(&b);
    model_free(&c);
    tg_tensor_free(x);
    tg_tensor_free(y);
}
