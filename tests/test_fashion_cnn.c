/* The training loop of examples/fashion_cnn.c, scaled down: the same layers (conv - batch norm -
 * relu - max pool, twice, dropout, flatten, linear - relu - linear, softmax cross-entropy, Adam)
 * with fewer channels, on the first N_TRAIN images of Fashion-MNIST's test files (or, when the
 * data is not installed, or TG_TEST_SYNTHETIC is set, a synthetic 28x28 data set the test writes,
 * with a message saying so).
 * Checks that the loss falls, that the model then classifies its images in evaluation mode, that
 * evaluation mode is deterministic (dropout off, batch norm on its running statistics, which
 * training moved), and that a steady-state training epoch -- shuffle, batch conversion, tape reset,
 * forward, backward, update, the short last batch included -- calls no malloc, calloc or realloc.
 *
 * Counting allocations: tests/alloc_counter.h, as in tests/test_mnist.c (skipped with a message
 * under sanitizers and valgrind, where the counter cannot interpose malloc). */
#define _POSIX_C_SOURCE 200809L /* mkdtemp */

#include "tapegrad.h"

#include "alloc_counter.h" /* this file is the program's one includer */
#include <criterion/criterion.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define SIDE 28
#define CLASSES 10
#define N_TRAIN 200 /* not a multiple of BATCH: every epoch ends with a short batch */
#define BATCH 32
#define C1 4
#define C2 8
#define HIDDEN 32
#define EPOCHS 10

/* ---- The data: real images if installed, else a synthetic set ---------------------------------
 * Synthetic: class c draws a bright bar in one of 10 positions/orientations (5 horizontal, 5
 * vertical) over noise, so that a convolution can learn it and a random network cannot. */
static void put_be32(FILE *f, uint32_t v) {
    unsigned char b[4] = {(unsigned char)(v >> 24), (unsigned char)(v >> 16),
                          (unsigned char)(v >> 8), (unsigned char)v};
    cr_assert_eq(fwrite(b, 1, 4, f), 4);
}

static void write_idx(const char *dir, const char *name, const uint32_t *dims, int rank,
                      const uint8_t *data, size_t len) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f, "cannot write %s: %s", path, strerror(errno));
    const unsigned char magic[4] = {0, 0, 0x08, (unsigned char)rank};
    cr_assert_eq(fwrite(magic, 1, 4, f), 4);
    for (int i = 0; i < rank; i++)
        put_be32(f, dims[i]);
    cr_assert_eq(fwrite(data, 1, len, f), len);
    cr_assert_eq(fclose(f), 0);
}

static tg_idx_dataset *synthetic_dataset(void) {
    char dir[256];
    snprintf(dir, sizeof dir, "%s/tg_fcnn_XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    cr_assert_not_null(mkdtemp(dir), "mkdtemp: %s", strerror(errno));
    static uint8_t images[N_TRAIN * SIDE * SIDE], labels[N_TRAIN];
    tg_rng rng;
    tg_rng_seed(&rng, 5);
    for (int i = 0; i < N_TRAIN; i++) {
        const int c = (int)tg_rng_below(&rng, CLASSES), at = 3 + (c % 5) * 5;
        labels[i] = (uint8_t)c;
        for (int y = 0; y < SIDE; y++)
            for (int x = 0; x < SIDE; x++) {
                const int on = c < 5 ? (y >= at && y < at + 3) : (x >= at && x < at + 3);
                images[(i * SIDE + y) * SIDE + x] =
                    (uint8_t)((on ? 150 : 0) + (int)tg_rng_below(&rng, 100));
            }
    }
    write_idx(dir, "t10k-images-idx3-ubyte", (const uint32_t[]){N_TRAIN, SIDE, SIDE}, 3, images,
              sizeof images);
    write_idx(dir, "t10k-labels-idx1-ubyte", (const uint32_t[]){N_TRAIN}, 1, labels, sizeof labels);
    tg_idx_dataset *ds = tg_idx_dataset_load_dir(dir, 0);
    cr_assert_not_null(ds, "%s", tg_last_errmsg());
    char path[512];
    snprintf(path, sizeof path, "%s/t10k-images-idx3-ubyte", dir);
    remove(path);
    snprintf(path, sizeof path, "%s/t10k-labels-idx1-ubyte", dir);
    remove(path);
    rmdir(dir);
    return ds;
}

/* Fashion-MNIST's 10,000 test images (the smaller file: quick to load, also under valgrind), or
 * the synthetic set. *real says which. */
static tg_idx_dataset *load_data(int *real) {
    char path[4096];
    struct stat st;
    *real = tg_idx_path(NULL, TG_IDX_TEST_IMAGES, path, sizeof path) == TG_OK &&
            stat(path, &st) == 0 && !getenv("TG_TEST_SYNTHETIC");
    if (!*real) {
        cr_log_info("%s: training on a synthetic 28x28 data set instead",
                    getenv("TG_TEST_SYNTHETIC")
                        ? "TG_TEST_SYNTHETIC is set"
                        : "Fashion-MNIST is not installed in " TG_FASHION_MNIST_DIR
                          " (apt-get install dataset-fashion-mnist)");
        return synthetic_dataset();
    }
    tg_idx_dataset *ds = tg_idx_dataset_load_dir(NULL, 0);
    cr_assert_not_null(ds, "%s", tg_last_errmsg());
    cr_assert_geq(tg_idx_dataset_size(ds), N_TRAIN);
    cr_assert_eq(tg_idx_dataset_features(ds), SIDE * SIDE);
    return ds;
}

/* ---- The example's model and loop, with fewer channels --------------------------------------- */

typedef struct trainer {
    tg_idx_dataset *ds;
    tg_conv2d_layer *conv1, *conv2;
    tg_batch_norm_layer *bn1, *bn2;
    tg_linear *fc1, *fc2;
    tg_tensor *params[12];
    tg_optim *opt;
    tg_tape *tape;
    tg_rng dropout, shuffle;
    int64_t order[N_TRAIN];
    tg_tensor *x, *y, *x_rem, *y_rem; /* full and short batches, allocated once */
    float mean, inv_std;
} trainer;

static void trainer_init(trainer *tr) {
    memset(tr, 0, sizeof *tr);
    int real;
    tr->ds = load_data(&real);
    tg_rng rng;
    tg_rng_seed(&rng, 7);
    tg_rng_seed(&tr->dropout, 9);
    tg_rng_seed(&tr->shuffle, 11);
    const tg_conv2d_opts pad1 = {.padding = {1, 1}};
    tr->conv1 = tg_conv2d_layer_new(TG_F32, 1, C1, 3, 3, &pad1, "conv1", &rng);
    tr->bn1 = tg_batch_norm_layer_new(TG_F32, C1, "bn1");
    tr->conv2 = tg_conv2d_layer_new(TG_F32, C1, C2, 3, 3, &pad1, "conv2", &rng);
    tr->bn2 = tg_batch_norm_layer_new(TG_F32, C2, "bn2");
    tr->fc1 = tg_linear_new(TG_F32, C2 * 7 * 7, HIDDEN, "fc1", &rng);
    tr->fc2 = tg_linear_new(TG_F32, HIDDEN, CLASSES, "fc2", &rng);
    cr_assert(tr->conv1 && tr->bn1 && tr->conv2 && tr->bn2 && tr->fc1 && tr->fc2, "%s",
              tg_last_errmsg());
    cr_assert_eq(tg_init_he_uniform(tr->fc1->W, C2 * 7 * 7, &rng), TG_OK);
    tg_tensor *p[12] = {tr->conv1->W, tr->conv1->b, tr->bn1->weight, tr->bn1->bias,
                        tr->conv2->W, tr->conv2->b, tr->bn2->weight, tr->bn2->bias,
                        tr->fc1->W,   tr->fc1->b,   tr->fc2->W,      tr->fc2->b};
    memcpy(tr->params, p, sizeof p);
    tg_optim_config cfg = tg_optim_defaults(TG_OPTIM_ADAM, 3e-3);
    tr->opt = tg_optim_new(&cfg, tr->params, 12);
    tr->tape = tg_tape_new();
    tr->x = tg_tensor_new(TG_F32, 4, (const int64_t[]){BATCH, 1, SIDE, SIDE});
    tr->y = tg_tensor_new(TG_I32, 1, (const int64_t[]){BATCH});
    tr->x_rem = tg_tensor_new(TG_F32, 4, (const int64_t[]){N_TRAIN % BATCH, 1, SIDE, SIDE});
    tr->y_rem = tg_tensor_new(TG_I32, 1, (const int64_t[]){N_TRAIN % BATCH});
    cr_assert(tr->opt && tr->tape && tr->x && tr->y && tr->x_rem && tr->y_rem, "%s",
              tg_last_errmsg());
    for (int64_t i = 0; i < N_TRAIN; i++)
        tr->order[i] = i;
    /* the standardization of the example, from the training images' bytes */
    const uint8_t *px = tg_idx_data(tg_idx_dataset_images(tr->ds));
    double s = 0, s2 = 0;
    for (int64_t i = 0; i < (int64_t)N_TRAIN * SIDE * SIDE; i++) {
        s += px[i] / 255.0;
        s2 += (px[i] / 255.0) * (px[i] / 255.0);
    }
    const double n = (double)N_TRAIN * SIDE * SIDE, mean = s / n;
    tr->mean = (float)mean;
    tr->inv_std = (float)(1 / sqrt(s2 / n - mean * mean));
}

static void trainer_free(trainer *tr) {
    tg_tape_free(tr->tape);
    tg_optim_free(tr->opt);
    tg_conv2d_layer_free(tr->conv1);
    tg_conv2d_layer_free(tr->conv2);
    tg_batch_norm_layer_free(tr->bn1);
    tg_batch_norm_layer_free(tr->bn2);
    tg_linear_free(tr->fc1);
    tg_linear_free(tr->fc2);
    tg_tensor_free(tr->x);
    tg_tensor_free(tr->y);
    tg_tensor_free(tr->x_rem);
    tg_tensor_free(tr->y_rem);
    tg_idx_dataset_free(tr->ds);
}

static tg_tensor *logits_of(trainer *tr, tg_tensor *x) {
    tg_tape *t = tr->tape;
    const tg_pool2d_opts pool2 = {.kernel = {2, 2}};
    tg_tensor *h = tg_conv2d_layer_forward(t, tr->conv1, x);
    h = tg_max_pool2d(t, tg_relu(t, tg_batch_norm_layer_forward(t, tr->bn1, h)), &pool2);
    h = tg_conv2d_layer_forward(t, tr->conv2, h);
    h = tg_max_pool2d(t, tg_relu(t, tg_batch_norm_layer_forward(t, tr->bn2, h)), &pool2);
    h = tg_flatten(t, tg_dropout(t, h, 0.25, &tr->dropout), 1, -1);
    return tg_linear_forward(t, tr->fc2, tg_relu(t, tg_linear_forward(t, tr->fc1, h)));
}

static void standardize(const trainer *tr, tg_tensor *x) {
    float *d = tg_tensor_data(x);
    for (int64_t i = 0; i < tg_tensor_numel(x); i++)
        d[i] = (d[i] - tr->mean) * tr->inv_std;
}

/* One epoch: reshuffle, then every batch (the last one short). Returns the mean batch loss. No
 * cr_assert inside the loop (Criterion's assertions may allocate, and this loop is what the
 * allocation count measures): errors come back as NaN with *status, reported by the caller. */
static double run_epoch(trainer *tr, tg_status *status) {
    for (int64_t i = N_TRAIN - 1; i > 0; i--) {
        int64_t j = (int64_t)tg_rng_below(&tr->shuffle, (uint64_t)i + 1), tmp = tr->order[i];
        tr->order[i] = tr->order[j];
        tr->order[j] = tmp;
    }
    double sum = 0;
    int batches = 0;
    for (int64_t from = 0; from < N_TRAIN; from += BATCH, batches++) {
        const int64_t rows = N_TRAIN - from < BATCH ? N_TRAIN - from : BATCH;
        tg_tensor *x = rows == BATCH ? tr->x : tr->x_rem, *y = rows == BATCH ? tr->y : tr->y_rem;
        tg_tape_reset(tr->tape);
        *status = tg_idx_dataset_batch(tr->ds, tr->order + from, rows, x, y);
        if (*status != TG_OK)
            return NAN;
        standardize(tr, x);
        tg_tensor *loss = tg_softmax_cross_entropy(tr->tape, logits_of(tr, x), y);
        tg_optim_zero_grad(tr->opt);
        *status = tg_backward(tr->tape, loss);
        if (*status != TG_OK)
            return NAN;
        *status = tg_optim_step(tr->opt);
        if (*status != TG_OK)
            return NAN;
        sum += tg_tensor_item(loss);
    }
    return sum / batches;
}

/* Accuracy over the N_TRAIN images in evaluation mode, one forward pass; the logits go to
 * `logits_out` (N_TRAIN x CLASSES floats) when given. */
static double accuracy(trainer *tr, float *logits_out) {
    tg_tensor *x = tg_tensor_new(TG_F32, 4, (const int64_t[]){N_TRAIN, 1, SIDE, SIDE});
    tg_tensor *y = tg_tensor_new(TG_I32, 1, (const int64_t[]){N_TRAIN});
    int64_t ident[N_TRAIN];
    for (int64_t i = 0; i < N_TRAIN; i++)
        ident[i] = i;
    cr_assert_eq(tg_idx_dataset_batch(tr->ds, ident, N_TRAIN, x, y), TG_OK, "%s", tg_last_errmsg());
    standardize(tr, x);
    cr_assert_eq(tg_tape_set_training(tr->tape, 0), TG_OK);
    tg_tape_reset(tr->tape);
    tg_tensor *logits = logits_of(tr, x);
    cr_assert_not_null(logits, "%s", tg_tape_errmsg(tr->tape));
    const double acc = tg_accuracy(logits, y);
    if (logits_out)
        memcpy(logits_out, tg_tensor_cdata(logits), sizeof(float) * N_TRAIN * CLASSES);
    tg_tape_reset(tr->tape);
    cr_assert_eq(tg_tape_set_training(tr->tape, 1), TG_OK);
    tg_tensor_free(x);
    tg_tensor_free(y);
    return acc;
}

Test(fashion_cnn, learns_without_allocating) {
    trainer tr;
    trainer_init(&tr);
    const double acc0 = accuracy(&tr, NULL);
    tg_status st = TG_OK;
    const double first = run_epoch(&tr, &st);
    cr_assert_eq(st, TG_OK, "epoch 1: %s | %s", tg_tape_errmsg(tr.tape), tg_last_errmsg());
    double last = first;
    long allocs = -1;
    for (int epoch = 2; epoch <= EPOCHS; epoch++) {
        /* Epochs 1 and 2 size the tape (the short batch is its own shape); from epoch 3 on a
         * whole epoch, shuffle and short batch included, must not touch the heap. */
        if (epoch == 3)
            alloc_counter_start();
        last = run_epoch(&tr, &st);
        if (epoch == 3)
            allocs = alloc_counter_stop();
        cr_assert_eq(st, TG_OK, "epoch %d: %s | %s", epoch, tg_tape_errmsg(tr.tape),
                     tg_last_errmsg());
    }
    static float logits_a[N_TRAIN * CLASSES], logits_b[N_TRAIN * CLASSES];
    const double acc = accuracy(&tr, logits_a);
    cr_log_info("loss %.4f -> %.4f over %d epochs of %d images, accuracy (evaluation mode) "
                "%.1f%% -> %.1f%%, %ld allocations in epoch 3",
                first, last, EPOCHS, N_TRAIN, 100 * acc0, 100 * acc, allocs);
    /* ln 10 = 2.30 is the loss of a uniform guess. On real images this small CNN reaches about
     * 0.6 within these epochs; the synthetic bars are easier still. */
    cr_assert(first > 1.0, "first-epoch loss %g is already small: the test learns nothing", first);
    cr_assert(last < 0.5 * first, "loss fell only from %g to %g", first, last);
    cr_assert(acc0 < 0.35, "the untrained network already classifies %.0f%%", 100 * acc0);
    cr_assert(acc > 0.75, "accuracy %.1f%% after training (%.1f%% before)", 100 * acc, 100 * acc0);

    /* Evaluation mode draws nothing (dropout is off) and reads the running statistics, which the
     * training forwards moved away from their initial 0 and 1. */
    cr_assert_eq(accuracy(&tr, logits_b), acc);
    cr_assert_arr_eq(logits_a, logits_b, sizeof logits_a, "evaluation mode is not deterministic");
    const float *rm = tg_tensor_cdata(tr.bn1->running_mean);
    const float *rv = tg_tensor_cdata(tr.bn1->running_var);
    /* A channel is left at its initial values when both its mean and its variance are: either
     * one may end near its start (channel 1's running mean came out at 6e-4, its variance at
     * 0.24, in the baseline SIMD build under valgrind). */
    int moved = 0;
    for (int c = 0; c < C1; c++) {
        const bool m = fabsf(rm[c]) > 1e-3f || fabsf(rv[c] - 1) > 1e-3f;
        moved += m;
        if (!m)
            cr_log_error("bn1 channel %d: running mean %g, running var %g", c, (double)rm[c],
                         (double)rv[c]);
    }
    cr_assert_eq(moved, C1, "training left bn1's running statistics at their initial values");

    const char *why = alloc_counter_unavailable();
    if (why)
        cr_log_info("allocation count skipped: %s", why);
    else
        cr_expect_eq(allocs, 0, "a steady-state epoch of %d steps made %ld heap allocations",
                     (N_TRAIN + BATCH - 1) / BATCH, allocs);
    trainer_free(&tr);
}
