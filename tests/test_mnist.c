/* The training loop of examples/mnist_mlp.c on a tiny synthetic data set written by the test
 * (no real data needed): IDX files -> tg_idx_dataset -> batches converted into preallocated
 * tensors -> a relu MLP with softmax cross-entropy and Adam or SGD with momentum. Checks that the
 * loss falls, that the model then classifies the data, and that a steady-state step -- tape reset,
 * batch conversion, forward, backward, update, including the short last batch of an epoch and
 * the reshuffle between epochs -- calls no malloc, calloc or realloc.
 *
 * Counting allocations: tests/alloc_counter.h makes this executable define malloc and friends,
 * which every caller in the process then uses and which count while the counter runs. Sanitizer
 * builds and valgrind replace malloc themselves: then the zero-allocation assertion is skipped
 * with a message (everything else still runs); elsewhere a probe first checks that the counter
 * does count, so a zero cannot pass by accident. */
#define _POSIX_C_SOURCE 200809L /* mkdtemp */

#include "tapegrad.h"

#include "alloc_counter.h" /* this file is the program's one includer */
#include <criterion/criterion.h>
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- A synthetic MNIST-style data set ---------------------------------------------------------
 * N images of SIDE x SIDE bytes in CLASSES classes: class c lights up the c-th horizontal band of
 * the image (values 160..255) over a noisy background (0..95), so the classes are learnable but
 * the first steps of a random network get them wrong. */
#define SIDE 8
#define FEATURES (SIDE * SIDE)
#define CLASSES 4
#define N_TRAIN 250 /* not a multiple of BATCH: every epoch ends with a short batch */
#define BATCH 32
#define HIDDEN 16

static void put_be32(FILE *f, uint32_t v) {
    unsigned char b[4] = {(unsigned char)(v >> 24), (unsigned char)(v >> 16),
                          (unsigned char)(v >> 8), (unsigned char)v};
    cr_assert_eq(fwrite(b, 1, 4, f), 4);
}

static void write_file(const char *dir, const char *name, const uint32_t *dims, int rank,
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

/* Writes the training pair (plain, uncompressed IDX files) into a new temporary folder. */
static void make_dataset(char *dir, size_t len, uint64_t seed) {
    snprintf(dir, len, "%s/tg_mnist_XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    cr_assert_not_null(mkdtemp(dir), "mkdtemp: %s", strerror(errno));
    static uint8_t images[N_TRAIN * FEATURES], labels[N_TRAIN];
    tg_rng rng;
    tg_rng_seed(&rng, seed);
    for (int i = 0; i < N_TRAIN; i++) {
        int c = (int)tg_rng_below(&rng, CLASSES);
        labels[i] = (uint8_t)c;
        for (int p = 0; p < FEATURES; p++) {
            int band =
                (p / SIDE) * CLASSES / SIDE; /* which of the CLASSES bands row p/SIDE is in */
            int base = band == c ? 160 : 0;
            images[i * FEATURES + p] = (uint8_t)(base + (int)tg_rng_below(&rng, 96));
        }
    }
    write_file(dir, "train-images-idx3-ubyte", (const uint32_t[]){N_TRAIN, SIDE, SIDE}, 3, images,
               sizeof images);
    write_file(dir, "train-labels-idx1-ubyte", (const uint32_t[]){N_TRAIN}, 1, labels,
               sizeof labels);
}

static void remove_dataset(const char *dir) {
    char path[512];
    snprintf(path, sizeof path, "%s/train-images-idx3-ubyte", dir);
    remove(path);
    snprintf(path, sizeof path, "%s/train-labels-idx1-ubyte", dir);
    remove(path);
    rmdir(dir);
}

/* ---- The example's training loop, scaled down ------------------------------------------------ */

typedef struct trainer {
    tg_idx_dataset *ds;
    tg_linear *fc1, *fc2;
    tg_tensor *params[4];
    tg_optim *opt;
    tg_tape *tape;
    int64_t order[N_TRAIN];
    tg_tensor *x, *y, *x_rem, *y_rem; /* full and short batches, allocated once */
    tg_rng shuffle;
} trainer;

static void trainer_init(trainer *tr, const char *dir, tg_optim_kind kind, double lr) {
    memset(tr, 0, sizeof *tr);
    tr->ds = tg_idx_dataset_load_dir(dir, 1);
    cr_assert_not_null(tr->ds, "%s", tg_last_errmsg());
    cr_assert_eq(tg_idx_dataset_size(tr->ds), N_TRAIN);
    cr_assert_eq(tg_idx_dataset_features(tr->ds), FEATURES);
    tg_rng rng;
    tg_rng_seed(&rng, 7);
    tr->fc1 = tg_linear_new(TG_F32, FEATURES, HIDDEN, "fc1", &rng);
    tr->fc2 = tg_linear_new(TG_F32, HIDDEN, CLASSES, "fc2", &rng);
    cr_assert(tr->fc1 && tr->fc2, "%s", tg_last_errmsg());
    cr_assert_eq(tg_init_he_uniform(tr->fc1->W, FEATURES, &rng), TG_OK);
    tg_tensor *p[4] = {tr->fc1->W, tr->fc1->b, tr->fc2->W, tr->fc2->b};
    memcpy(tr->params, p, sizeof p);
    tg_optim_config cfg = tg_optim_defaults(kind, lr);
    tr->opt = tg_optim_new(&cfg, tr->params, 4);
    tr->tape = tg_tape_new();
    tr->x = tg_tensor_new(TG_F32, 2, (const int64_t[]){BATCH, FEATURES});
    tr->y = tg_tensor_new(TG_I32, 1, (const int64_t[]){BATCH});
    tr->x_rem = tg_tensor_new(TG_F32, 2, (const int64_t[]){N_TRAIN % BATCH, FEATURES});
    tr->y_rem = tg_tensor_new(TG_I32, 1, (const int64_t[]){N_TRAIN % BATCH});
    cr_assert(tr->opt && tr->tape && tr->x && tr->y && tr->x_rem && tr->y_rem, "%s",
              tg_last_errmsg());
    for (int64_t i = 0; i < N_TRAIN; i++)
        tr->order[i] = i;
    tg_rng_seed(&tr->shuffle, 11);
}

static void trainer_free(trainer *tr) {
    tg_tape_free(tr->tape);
    tg_optim_free(tr->opt);
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
    return tg_linear_forward(t, tr->fc2, tg_relu(t, tg_linear_forward(t, tr->fc1, x)));
}

/* One epoch: reshuffle, then every batch (the last one short). Returns the mean batch loss. Uses
 * no cr_assert inside the loop: Criterion's assertions may allocate, and this loop is what the
 * allocation count measures. Errors are returned as NaN and reported by the caller. */
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

/* Accuracy over the whole training set, one forward pass of N_TRAIN rows. */
static double accuracy(trainer *tr) {
    tg_tensor *x = tg_tensor_new(TG_F32, 2, (const int64_t[]){N_TRAIN, FEATURES});
    tg_tensor *y = tg_tensor_new(TG_I32, 1, (const int64_t[]){N_TRAIN});
    int64_t ident[N_TRAIN];
    for (int64_t i = 0; i < N_TRAIN; i++)
        ident[i] = i;
    cr_assert_eq(tg_idx_dataset_batch(tr->ds, ident, N_TRAIN, x, y), TG_OK, "%s", tg_last_errmsg());
    tg_tape_reset(tr->tape);
    tg_tensor *logits = logits_of(tr, x);
    cr_assert_not_null(logits, "%s", tg_tape_errmsg(tr->tape));
    double acc = tg_accuracy(logits, y);
    tg_tensor_free(x);
    tg_tensor_free(y);
    return acc;
}

static void train_and_check(tg_optim_kind kind, double lr, const char *what) {
    char dir[256];
    make_dataset(dir, sizeof dir, 3);
    trainer tr;
    trainer_init(&tr, dir, kind, lr);
    remove_dataset(dir); /* loaded: the bytes now live in memory */

    const double acc0 = accuracy(&tr);
    tg_status st = TG_OK;
    const double first = run_epoch(&tr, &st);
    cr_assert_eq(st, TG_OK, "%s: epoch 1: %s | %s", what, tg_tape_errmsg(tr.tape),
                 tg_last_errmsg());
    double last = first;
    long allocs = -1;
    for (int epoch = 2; epoch <= 6; epoch++) {
        /* Epochs 1 and 2 size the tape (the short batch is its own shape); from epoch 3 on a
         * whole epoch, shuffle and short batch included, must not touch the heap. */
        if (epoch == 3)
            alloc_counter_start();
        last = run_epoch(&tr, &st);
        if (epoch == 3)
            allocs = alloc_counter_stop();
        cr_assert_eq(st, TG_OK, "%s: epoch %d: %s | %s", what, epoch, tg_tape_errmsg(tr.tape),
                     tg_last_errmsg());
    }
    const double acc = accuracy(&tr);
    cr_log_info("%s: loss %.4f -> %.4f, accuracy %.1f%% -> %.1f%%, %ld allocations in epoch 3",
                what, first, last, 100 * acc0, 100 * acc, allocs);
    /* ln 4 = 1.386 is the loss of a uniform guess; the bands are easy, so the loss must fall far
     * below it and the accuracy from chance (about 25%) to nearly all. */
    cr_assert(first > 0.5, "%s: first-epoch loss %g is already small: the test learns nothing",
              what, first);
    cr_assert(last < 0.25 * first, "%s: loss fell only from %g to %g", what, first, last);
    cr_assert(acc0 < 0.6, "%s: the untrained network already classifies %.0f%%", what, 100 * acc0);
    cr_assert(acc > 0.95, "%s: accuracy %.1f%% after training (%.1f%% before)", what, 100 * acc,
              100 * acc0);
    const char *why = alloc_counter_unavailable();
    if (why)
        cr_log_info("%s: allocation count skipped: %s", what, why);
    else
        cr_expect_eq(allocs, 0, "%s: a steady-state epoch of %d steps made %ld heap allocations",
                     what, (N_TRAIN + BATCH - 1) / BATCH, allocs);
    trainer_free(&tr);
}

Test(mnist, adam_learns_without_allocating) { train_and_check(TG_OPTIM_ADAM, 1e-2, "adam"); }

Test(mnist, sgd_momentum_learns_without_allocating) {
    train_and_check(TG_OPTIM_MOMENTUM, 0.05, "sgd+momentum");
}

/* The counter itself works: without this, a broken interposer would make the zero above vacuous. */
Test(mnist, allocation_counter_counts) {
    const char *why = alloc_counter_unavailable();
    if (why)
        cr_skip_test("%s", why);
    alloc_counter_start();
    tg_tensor *x = tg_tensor_new(TG_F32, TG_SHAPE(3, 4));
    const long allocs = alloc_counter_stop();
    cr_assert_not_null(x);
    cr_assert_gt(allocs, 0, "tg_tensor_new allocated nothing that was counted");
    tg_tensor_free(x);
}
