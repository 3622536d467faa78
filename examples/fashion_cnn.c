/* fashion_cnn.c -- a small convolutional network learns Fashion-MNIST.
 *
 *     x [B,1,28,28] (standardized pixels)
 *       -> conv 1->32 3x3 pad 1 -> batch norm -> relu -> max pool 2x2    [B,32,14,14]
 *       -> conv 32->64 3x3 pad 1 -> batch norm -> relu -> max pool 2x2   [B,64,7,7]
 *       -> dropout 0.25 -> flatten [B,3136] -> linear 3136->128 -> relu -> linear 128->10
 *     loss = softmax cross-entropy of the logits against the class labels, mean over the batch
 *
 * trained with Adam on mini-batches of 128 shuffled images, the learning rate going from 3e-3 down
 * to 0 along a half cosine over the run (tg_optim_config.total_steps). As in examples/mnist_mlp.c the images stay in memory as bytes, each batch is converted
 * into tensors allocated once and the tape is reset, not freed: a training step allocates nothing
 * once the first steps have sized the tape. Accuracy is measured in evaluation mode
 * (tg_tape_set_training(t, 0)): batch norm uses its running statistics, dropout does nothing.
 *
 * After training it draws three pictures with gnuplot into --out DIR (default fashion-cnn-out/):
 *   filters.png       the 32 learned 3x3 filters of the first convolution
 *   feature_maps.png  a test image and its 32 maps after the first conv, batch norm and relu
 *   confusion.png     the confusion matrix of the test set (true class x predicted class)
 *
 * Data: Debian's dataset-fashion-mnist package (/usr/share/datasets/fashion-mnist) by default;
 * --data DIR reads any directory holding the four MNIST-style files (.gz or not).
 * Run `fashion_cnn --help` for the flags; `--bench N` times N steps and prints one JSON line.
 * --checkpoint saves the best model (running statistics of batch norm included); --eval FILE
 * measures such a file and draws its pictures; --state / --resume continue a stopped run exactly.
 */
#define _POSIX_C_SOURCE 200809L /* isatty, fileno, clock_gettime, mkdir */

#include <tapegrad.h>

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ---- Counting heap allocations (for --bench) ------------------------------------------------
 * As in mnist_mlp.c: tests/alloc_counter.h defines malloc and friends for the whole process and
 * counts while started; under sanitizers and valgrind --bench reports allocs_per_step as null. */
#include "alloc_counter.h" /* this file is the program's one includer */

/* ---- Options --------------------------------------------------------------------------------- */

#define N_CLASSES 10
#define ADAM_LR 3e-3 /* the default --lr of each optimizer */
#define SGD_LR 0.05
#define SIDE 28
#define EVAL_BATCH 250 /* images per forward pass when measuring accuracy */
#define BENCH_WARMUP 5 /* steps before --bench starts the clock */
/* One --seed drives four independent random streams: the weights, the shuffling, dropout and
 * the flips. */
#define WEIGHT_STREAM 0x9e3779b97f4a7c15ull
#define SHUFFLE_STREAM 0x3c6ef372fe94f82aull
#define DROPOUT_STREAM 0xa54ff53a5f1d36f1ull
#define FLIP_STREAM 0x510e527fade682d1ull

static const char *const class_names[N_CLASSES] = {
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};

typedef struct options {
    const char *data;
    const char *out;
    int epochs;
    int sgd;   /* --optim sgd: SGD with momentum 0.9 instead of Adam */
    double lr; /* --lr, or ADAM_LR / SGD_LR when not given */
    int lr_given;
    double weight_decay;  /* Adam's L2 penalty */
    const char *schedule; /* "cosine" (lr down to 0 as a half cosine), "halve" or "constant" */
    int halve_every;      /* "halve": the rate is halved after every this many epochs */
    int batch;
    unsigned long long seed;
    int threads;
    int64_t train_eval; /* training images whose accuracy is measured per epoch (0: all) */
    const char *checkpoint;
    const char *state;  /* --state: the training state file */
    const char *resume; /* --resume: continue from this state file */
    const char *eval;   /* --eval: evaluate this model file, no training */
    long bench;         /* > 0: time this many steps and print JSON instead of training */
    int log_every;      /* plain-line mode: a line every this many batches (0: once per epoch) */
    int no_pictures;
    int flip;  /* mirror a random half of each training batch left-right */
    int shift; /* move each training image by up to this many pixels in x and y */
} options;

static const options defaults = {.data = TG_FASHION_MNIST_DIR,
                                 .out = "fashion-cnn-out",
                                 .epochs = 10,
                                 .schedule = "cosine",
                                 .halve_every = 3,
                                 .batch = 128,
                                 .seed = 1,
                                 .threads = 1,
                                 .train_eval = 10000};

static void usage(FILE *f, const char *prog) {
    fprintf(
        f,
        "usage: %s [options]\n"
        "Trains a convolutional network on Fashion-MNIST (conv 32 - batch norm - relu - max pool,\n"
        "conv 64 - batch norm - relu - max pool, dropout 0.25, linear 128 - relu, linear 10;\n"
        "softmax cross-entropy, Adam), prints the train and test accuracy after each epoch, then\n"
        "draws the first layer's filters, what they make of a test image and the test set's\n"
        "confusion matrix with gnuplot.\n\n"
        "  --data DIR        folder with train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz,\n"
        "                    t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz (or unpacked)\n"
        "                    (default %s,\n"
        "                    from: apt-get install dataset-fashion-mnist)\n"
        "  --epochs E        passes over the 60,000 training images (default %d)\n"
        "  --optim NAME      adam (default) or sgd (SGD with momentum 0.9)\n"
        "  --lr LR           initial learning rate (default %g for adam, %g for sgd)\n"
        "  --schedule S      the learning rate over the run: cosine (from --lr down to 0\n"
        "                    at the last step, as a half cosine), halve (halved after\n"
        "                    every --halve-every epochs) or constant (default %s)\n"
        "  --halve-every E   with --schedule halve: epochs between halvings (default %d)\n"
        "  --batch B         images per mini-batch (default %d)\n"
        "  --seed S          seed of the weights, the shuffling, dropout and the flips (default "
        "%llu)\n"
        "  --threads T       threads for the kernels (default %d)\n"
        "  --weight-decay W  L2 penalty added to the gradients, g += W p (default %g)\n"
        "  --flip 0|1        mirror a random half of each training batch left-right (default %d)\n"
        "  --shift K         move each training image by a random -K..K pixels across and down,\n"
        "                    the uncovered border background (default %d)\n"
        "  --train-eval N    measure the training accuracy on the first N training images\n"
        "                    (0: all of them; default %lld)\n"
        "  --out DIR         folder for the pictures filters.png, feature_maps.png,\n"
        "                    confusion.png, their gnuplot script and data (default %s)\n"
        "  --no-pictures     do not draw them\n"
        "  --checkpoint PATH save the model with the best test accuracy there (safetensors,\n"
        "                    with batch norm's running statistics and the input standardization)\n"
        "  --state FILE      save the whole training state there (weights, Adam, the data order\n"
        "                    and the dropout and flip generators) after each epoch, for --resume\n"
        "  --resume FILE     continue the run saved in FILE exactly (same flags as that run)\n"
        "  --eval FILE       only measure a model saved by --checkpoint on the test set (and draw\n"
        "                    its pictures)\n"
        "  --log-every N     when the output is not a terminal: a line every N batches\n"
        "                    (default: one line per epoch)\n"
        "  --bench N         benchmark: time N training steps after %d warm-up steps and print\n"
        "                    one JSON line (samples/s, peak RSS, allocations per step)\n"
        "  --help            this text\n",
        prog, defaults.data, defaults.epochs, ADAM_LR, SGD_LR, defaults.schedule,
        defaults.halve_every, defaults.batch, defaults.seed, defaults.threads,
        defaults.weight_decay, defaults.flip, defaults.shift, (long long)defaults.train_eval,
        defaults.out, BENCH_WARMUP);
}

/* Parses argv into o; returns 0, 1 after --help, or -1 on a bad flag (with a message). */
static int parse_args(int argc, char **argv, options *o) {
    *o = defaults;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout, argv[0]);
            return 1;
        }
        if (!strcmp(a, "--no-pictures")) {
            o->no_pictures = 1;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "%s: unknown flag or missing value: %s (try --help)\n", argv[0], a);
            return -1;
        }
        const char *v = argv[++i];
        char *end = NULL;
        errno = 0;
        if (!strcmp(a, "--data")) {
            o->data = v;
            continue;
        } else if (!strcmp(a, "--out")) {
            o->out = v;
            continue;
        } else if (!strcmp(a, "--checkpoint")) {
            o->checkpoint = v;
            continue;
        } else if (!strcmp(a, "--state")) {
            o->state = v;
            continue;
        } else if (!strcmp(a, "--resume")) {
            o->resume = v;
            continue;
        } else if (!strcmp(a, "--eval")) {
            o->eval = v;
            continue;
        } else if (!strcmp(a, "--optim")) {
            if (strcmp(v, "adam") && strcmp(v, "sgd")) {
                fprintf(stderr, "%s: --optim takes adam or sgd, got '%s'\n", argv[0], v);
                return -1;
            }
            o->sgd = !strcmp(v, "sgd");
            continue;
        } else if (!strcmp(a, "--schedule")) {
            if (strcmp(v, "cosine") && strcmp(v, "halve") && strcmp(v, "constant")) {
                fprintf(stderr, "%s: --schedule is cosine, halve or constant, not '%s'\n", argv[0],
                        v);
                return -1;
            }
            o->schedule = v;
            continue;
        } else if (!strcmp(a, "--epochs"))
            o->epochs = (int)strtol(v, &end, 10);
        else if (!strcmp(a, "--lr")) {
            o->lr = strtod(v, &end);
            o->lr_given = 1;
        } else if (!strcmp(a, "--halve-every"))
            o->halve_every = (int)strtol(v, &end, 10);
        else if (!strcmp(a, "--batch"))
            o->batch = (int)strtol(v, &end, 10);
        else if (!strcmp(a, "--seed"))
            o->seed = strtoull(v, &end, 10);
        else if (!strcmp(a, "--threads"))
            o->threads = (int)strtol(v, &end, 10);
        else if (!strcmp(a, "--weight-decay"))
            o->weight_decay = strtod(v, &end);
        else if (!strcmp(a, "--flip"))
            o->flip = (int)strtol(v, &end, 10);
        else if (!strcmp(a, "--shift"))
            o->shift = (int)strtol(v, &end, 10);
        else if (!strcmp(a, "--train-eval"))
            o->train_eval = strtoll(v, &end, 10);
        else if (!strcmp(a, "--bench"))
            o->bench = strtol(v, &end, 10);
        else if (!strcmp(a, "--log-every"))
            o->log_every = (int)strtol(v, &end, 10);
        else {
            fprintf(stderr, "%s: unknown flag %s (try --help)\n", argv[0], a);
            return -1;
        }
        if (errno || !end || *end || end == v) {
            fprintf(stderr, "%s: %s needs a number, got '%s'\n", argv[0], a, v);
            return -1;
        }
    }
    if (!o->lr_given)
        o->lr = o->sgd ? SGD_LR : ADAM_LR;
    if (o->epochs < 1 || o->batch < 1 || o->threads < 1 || o->threads > 256 || o->bench < 0 ||
        o->log_every < 0 || o->halve_every < 0 || o->train_eval < 0 || !(o->lr > 0) ||
        (o->flip != 0 && o->flip != 1) || o->shift < 0 || o->shift > 8) {
        fprintf(stderr,
                "%s: need --epochs >= 1, --lr > 0, --batch >= 1, --threads in 1..256, "
                "--bench >= 0, --log-every >= 0, --halve-every >= 0, --train-eval >= 0, --flip 0 "
                "or 1, --shift in 0..8\n",
                argv[0]);
        return -1;
    }
    if (o->resume && !o->state)
        o->state = o->resume;
    return 0;
}

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- The model ------------------------------------------------------------------------------- */

enum { N_PARAMS = 12, N_SAVED = 18 }; /* 12 parameters; + 4 running statistics + 2 input stats */

typedef struct model {
    /* x = (pixel / 255 - mean) / std with the training set's mean and standard deviation. */
    float mean, inv_std;
    tg_conv2d_layer *conv1, *conv2;
    tg_batch_norm_layer *bn1, *bn2;
    tg_linear *fc1, *fc2;
    tg_rng dropout_rng, flip_rng;
    int flip;                    /* --flip */
    int shift;                   /* --shift (its draws come from flip_rng too) */
    tg_tensor *params[N_PARAMS]; /* what Adam updates */
    /* What a checkpoint holds: the parameters, batch norm's running means and variances, and the
     * standardization as the one-element tensors "input.mean" and "input.std". */
    tg_tensor *saved[N_SAVED];
} model;

static void model_free(model *m) {
    tg_conv2d_layer_free(m->conv1);
    tg_conv2d_layer_free(m->conv2);
    tg_batch_norm_layer_free(m->bn1);
    tg_batch_norm_layer_free(m->bn2);
    tg_linear_free(m->fc1);
    tg_linear_free(m->fc2);
    tg_tensor_free(m->saved[N_SAVED - 2]);
    tg_tensor_free(m->saved[N_SAVED - 1]);
}

/* The layers with their default initialization (the conv layers' own, He-uniform for fc1, which
 * a relu follows, Xavier for fc2), named conv1.W ... fc2.b for the checkpoint. */
static int model_init(model *m, unsigned long long seed) {
    tg_rng rng;
    tg_rng_seed(&rng, seed + WEIGHT_STREAM);
    tg_rng_seed(&m->dropout_rng, seed + DROPOUT_STREAM);
    tg_rng_seed(&m->flip_rng, seed + FLIP_STREAM);
    const tg_conv2d_opts pad1 = {.padding = {1, 1}};
    m->conv1 = tg_conv2d_layer_new(TG_F32, 1, 32, 3, 3, &pad1, "conv1", &rng);
    m->bn1 = tg_batch_norm_layer_new(TG_F32, 32, "bn1");
    m->conv2 = tg_conv2d_layer_new(TG_F32, 32, 64, 3, 3, &pad1, "conv2", &rng);
    m->bn2 = tg_batch_norm_layer_new(TG_F32, 64, "bn2");
    m->fc1 = tg_linear_new(TG_F32, 64 * 7 * 7, 128, "fc1", &rng);
    m->fc2 = tg_linear_new(TG_F32, 128, N_CLASSES, "fc2", &rng);
    if (!m->conv1 || !m->bn1 || !m->conv2 || !m->bn2 || !m->fc1 || !m->fc2 ||
        tg_init_he_uniform(m->fc1->W, 64 * 7 * 7, &rng) != TG_OK) {
        fprintf(stderr, "model: %s\n", tg_last_errmsg());
        return -1;
    }
    tg_tensor *p[N_SAVED] = {m->conv1->W,
                             m->conv1->b,
                             m->bn1->weight,
                             m->bn1->bias,
                             m->conv2->W,
                             m->conv2->b,
                             m->bn2->weight,
                             m->bn2->bias,
                             m->fc1->W,
                             m->fc1->b,
                             m->fc2->W,
                             m->fc2->b,
                             m->bn1->running_mean,
                             m->bn1->running_var,
                             m->bn2->running_mean,
                             m->bn2->running_var,
                             NULL,
                             NULL};
    memcpy(m->params, p, sizeof m->params);
    memcpy(m->saved, p, sizeof p);
    const float stats[2] = {m->mean, 1 / m->inv_std};
    for (int i = 0; i < 2; i++) {
        m->saved[N_SAVED - 2 + i] = tg_tensor_from(TG_F32, 1, (const int64_t[]){1}, &stats[i]);
        if (!m->saved[N_SAVED - 2 + i]) {
            fprintf(stderr, "model: %s\n", tg_last_errmsg());
            return -1;
        }
        tg_tensor_set_name(m->saved[N_SAVED - 2 + i], i ? "input.std" : "input.mean");
    }
    return 0;
}

/* m->mean, m->inv_std from the tensors input.mean and input.std (after a checkpoint load). */
static void model_read_standardization(model *m) {
    const float std = *(const float *)tg_tensor_cdata(m->saved[N_SAVED - 1]);
    m->mean = *(const float *)tg_tensor_cdata(m->saved[N_SAVED - 2]);
    m->inv_std = std > 0 ? 1 / std : 1.0f;
}

/* Mean and 1/std of all pixels of ds (scaled to [0,1]), from a histogram of the bytes, into m
 * and into the tensors a checkpoint saves them in. */
static void model_set_standardization(model *m, const tg_idx_dataset *ds) {
    const tg_idx *images = tg_idx_dataset_images(ds);
    const uint8_t *px = tg_idx_data(images);
    const int64_t n = tg_idx_numel(images);
    int64_t hist[256] = {0};
    for (int64_t i = 0; i < n; i++)
        hist[px[i]]++;
    double sum = 0, sum2 = 0;
    for (int v = 0; v < 256; v++) {
        sum += (double)hist[v] * (v / 255.0);
        sum2 += (double)hist[v] * (v / 255.0) * (v / 255.0);
    }
    const double mean = n ? sum / (double)n : 0, var = n ? sum2 / (double)n - mean * mean : 0;
    m->mean = (float)mean;
    m->inv_std = var > 1e-12 ? (float)(1 / sqrt(var)) : 1.0f;
    *(float *)tg_tensor_data(m->saved[N_SAVED - 2]) = m->mean;
    *(float *)tg_tensor_data(m->saved[N_SAVED - 1]) = 1 / m->inv_std;
}

/* x = (x - mean) / std in place, on a batch just converted by tg_idx_dataset_batch. */
static void model_standardize(const model *m, tg_tensor *x) {
    float *d = tg_tensor_data(x);
    const int64_t n = tg_tensor_numel(x);
    for (int64_t i = 0; i < n; i++)
        d[i] = (d[i] - m->mean) * m->inv_std;
}

/* Augmentation: each image of the batch x [B,1,28,28] is mirrored left-right with probability
 * 1/2 (a shirt seen in a mirror is still a shirt), a new draw at every step. */
static void model_flip(model *m, tg_tensor *x) {
    float *d = tg_tensor_data(x);
    const int64_t n = tg_tensor_dim(x, 0);
    for (int64_t i = 0; i < n; i++) {
        if (!tg_rng_below(&m->flip_rng, 2))
            continue;
        for (int64_t r = 0; r < SIDE; r++) {
            float *row = d + (i * SIDE + r) * SIDE;
            for (int64_t c = 0; c < SIDE / 2; c++) {
                const float v = row[c];
                row[c] = row[SIDE - 1 - c];
                row[SIDE - 1 - c] = v;
            }
        }
    }
}

/* Moves each image of x (standardized) by dx, dy in -shift..shift, drawn per image; the pixels
 * moved in from outside are the background (a 0 pixel, standardized). */
static void model_shift(model *m, tg_tensor *x) {
    float *d = tg_tensor_data(x);
    const int64_t n = tg_tensor_dim(x, 0), k = m->shift;
    const float background = (0.0f - m->mean) * m->inv_std;
    float img[SIDE * SIDE];
    for (int64_t i = 0; i < n; i++) {
        const int64_t dx = (int64_t)tg_rng_below(&m->flip_rng, (uint64_t)(2 * k + 1)) - k;
        const int64_t dy = (int64_t)tg_rng_below(&m->flip_rng, (uint64_t)(2 * k + 1)) - k;
        float *im = d + i * SIDE * SIDE;
        memcpy(img, im, sizeof img);
        for (int64_t r = 0; r < SIDE; r++)
            for (int64_t c = 0; c < SIDE; c++) {
                const int64_t sr = r - dy, sc = c - dx;
                im[r * SIDE + c] =
                    sr >= 0 && sr < SIDE && sc >= 0 && sc < SIDE ? img[sr * SIDE + sc] : background;
            }
    }
}

/* The logits [B,10] of x [B,1,28,28]. Batch norm and dropout follow the tape's mode. Each batch
 * norm, its relu and the pool after them are one op, batch_norm_relu_max_pool2d: the same numbers
 * as tg_max_pool2d(tg_relu(tg_batch_norm_layer_forward(...))), bit for bit, without storing the
 * relu's output (the size of the conv's) or reading it back either way. */
static tg_tensor *model_logits(tg_tape *t, model *m, tg_tensor *x) {
    const tg_pool2d_opts pool2 = {.kernel = {2, 2}};
    tg_tensor *h = tg_conv2d_layer_forward(t, m->conv1, x);
    h = tg_batch_norm_layer_forward_relu_max_pool2d(t, m->bn1, h, &pool2);
    h = tg_conv2d_layer_forward(t, m->conv2, h);
    h = tg_batch_norm_layer_forward_relu_max_pool2d(t, m->bn2, h, &pool2);
    h = tg_flatten(t, tg_dropout(t, h, 0.25, &m->dropout_rng), 1, -1);
    h = tg_relu(t, tg_linear_forward(t, m->fc1, h));
    return tg_linear_forward(t, m->fc2, h);
}

/* ---- Data ------------------------------------------------------------------------------------ */

/* The training set and the tensors its batches are converted into, allocated once. */
typedef struct split {
    tg_idx_dataset *ds;
    int64_t n, batch;
    int64_t *order;           /* the rows in visiting order; reshuffled each epoch */
    tg_tensor *x, *y;         /* [batch,1,28,28] f32, [batch] i32 */
    tg_tensor *x_rem, *y_rem; /* the smaller last batch, when batch does not divide n */
} split;

static void split_free(split *s) {
    free(s->order);
    tg_tensor_free(s->x);
    tg_tensor_free(s->y);
    tg_tensor_free(s->x_rem);
    tg_tensor_free(s->y_rem);
}

/* Checks that ds holds 28x28 images in at most 10 classes. */
static int check_images(const tg_idx_dataset *ds, const char *dir, const char *which) {
    const tg_idx *im = tg_idx_dataset_images(ds);
    if (tg_idx_dataset_size(ds) < 1 || tg_idx_rank(im) != 3 || tg_idx_dim(im, 1) != SIDE ||
        tg_idx_dim(im, 2) != SIDE || tg_idx_dataset_classes(ds) > N_CLASSES) {
        fprintf(stderr,
                "fashion_cnn: %s: the %s set has %lld images of %lld values in %d classes; "
                "expected 28x28 images in at most %d classes\n",
                dir, which, (long long)tg_idx_dataset_size(ds),
                (long long)tg_idx_dataset_features(ds), tg_idx_dataset_classes(ds), N_CLASSES);
        return -1;
    }
    return 0;
}

static int split_init(split *s, tg_idx_dataset *ds, int64_t batch) {
    memset(s, 0, sizeof *s);
    s->ds = ds;
    s->n = tg_idx_dataset_size(ds);
    s->batch = batch < s->n ? batch : s->n;
    s->order = malloc(sizeof *s->order * (size_t)s->n);
    s->x = tg_tensor_new(TG_F32, 4, (const int64_t[]){s->batch, 1, SIDE, SIDE});
    s->y = tg_tensor_new(TG_I32, 1, (const int64_t[]){s->batch});
    const int64_t rem = s->n % s->batch;
    if (rem) {
        s->x_rem = tg_tensor_new(TG_F32, 4, (const int64_t[]){rem, 1, SIDE, SIDE});
        s->y_rem = tg_tensor_new(TG_I32, 1, (const int64_t[]){rem});
    }
    if (!s->order || !s->x || !s->y || (rem && (!s->x_rem || !s->y_rem))) {
        fprintf(stderr, "out of memory for the batches\n");
        return -1;
    }
    for (int64_t i = 0; i < s->n; i++)
        s->order[i] = i;
    return 0;
}

static int64_t split_batches(const split *s) { return (s->n + s->batch - 1) / s->batch; }

/* Fisher-Yates: the order depends on the seed and the epoch only. */
static void split_shuffle(split *s, tg_rng *rng) {
    for (int64_t i = s->n - 1; i > 0; i--) {
        int64_t j = (int64_t)tg_rng_below(rng, (uint64_t)i + 1);
        int64_t tmp = s->order[i];
        s->order[i] = s->order[j];
        s->order[j] = tmp;
    }
}

/* Puts s->order and *rng where they are after `epochs` epochs' shuffles from the seed. */
static void split_replay(split *s, tg_rng *rng, uint64_t seed, int64_t epochs) {
    for (int64_t i = 0; i < s->n; i++)
        s->order[i] = i;
    tg_rng_seed(rng, seed);
    for (int64_t e = 0; e < epochs; e++)
        split_shuffle(s, rng);
}

/* Converts batch number b (of split_batches) into the split's tensors; allocates nothing. */
static int split_batch(split *s, int64_t b, tg_tensor **x, tg_tensor **y) {
    const int64_t from = b * s->batch;
    const int64_t rows = s->n - from < s->batch ? s->n - from : s->batch;
    *x = rows == s->batch ? s->x : s->x_rem;
    *y = rows == s->batch ? s->y : s->y_rem;
    if (tg_idx_dataset_batch(s->ds, s->order + from, rows, *x, *y) != TG_OK) {
        fprintf(stderr, "batch: %s\n", tg_last_errmsg());
        return -1;
    }
    return 0;
}

/* ---- Training and evaluation ----------------------------------------------------------------- */

/* One step in training mode: forward, backward, update. The loss goes to *loss. */
static int train_step(tg_tape *t, model *m, tg_optim *opt, tg_tensor *x, tg_tensor *y,
                      double *loss) {
    model_standardize(m, x);
    if (m->flip)
        model_flip(m, x);
    if (m->shift)
        model_shift(m, x);
    tg_tape_reset(t);
    tg_tensor *l = tg_softmax_cross_entropy(t, model_logits(t, m, x), y);
    tg_optim_zero_grad(opt);
    if (tg_backward(t, l) != TG_OK) {
        fprintf(stderr, "train: %s\n", tg_tape_errmsg(t));
        return -1;
    }
    tg_status st = tg_optim_step(opt);
    if (st != TG_OK) {
        fprintf(stderr, "train: %s%s\n", tg_last_errmsg(),
                st == TG_ERR_NONFINITE ? " -- training diverged; try a smaller --lr" : "");
        return -1;
    }
    *loss = tg_tensor_item(l);
    return 0;
}

/* What measuring accuracy needs, allocated once: batch tensors of EVAL_BATCH images and the
 * indices 0, 1, 2, ... of every sample (the evaluation visits the files in order). */
typedef struct evaluator {
    tg_tensor *x, *y; /* [EVAL_BATCH,1,28,28] f32, [EVAL_BATCH] i32 */
    int64_t *ident;   /* n_max entries */
} evaluator;

static int evaluator_init(evaluator *e, int64_t n_max) {
    e->x = tg_tensor_new(TG_F32, 4, (const int64_t[]){EVAL_BATCH, 1, SIDE, SIDE});
    e->y = tg_tensor_new(TG_I32, 1, (const int64_t[]){EVAL_BATCH});
    e->ident = malloc(sizeof *e->ident * (size_t)n_max);
    if (!e->x || !e->y || !e->ident) {
        fprintf(stderr, "out of memory for the evaluation batches\n");
        return -1;
    }
    for (int64_t i = 0; i < n_max; i++)
        e->ident[i] = i;
    return 0;
}

static void evaluator_free(evaluator *e) {
    tg_tensor_free(e->x);
    tg_tensor_free(e->y);
    free(e->ident);
}

/* Fraction of the first n samples of ds that m classifies right, in evaluation mode. With
 * `confusion` (10x10, row = true class, column = predicted), also counts every prediction. */
static int evaluate(tg_tape *t, model *m, const tg_idx_dataset *ds, int64_t n, evaluator *e,
                    double *acc, int64_t confusion[N_CLASSES][N_CLASSES]) {
    int64_t correct = 0;
    int rc = -1;
    if (confusion)
        memset(confusion, 0, sizeof(int64_t) * N_CLASSES * N_CLASSES);
    tg_tape_set_training(t, 0);
    for (int64_t from = 0; from < n; from += EVAL_BATCH) {
        const int64_t rows = n - from < EVAL_BATCH ? n - from : EVAL_BATCH;
        /* A short last batch gets tensors of its own: evaluation is not the training step, so it
         * may allocate. */
        tg_tensor *x = e->x, *y = e->y;
        if (rows < EVAL_BATCH) {
            x = tg_tensor_new(TG_F32, 4, (const int64_t[]){rows, 1, SIDE, SIDE});
            y = tg_tensor_new(TG_I32, 1, (const int64_t[]){rows});
        }
        tg_tape_reset(t);
        tg_tensor *logits = NULL;
        if (x && y && tg_idx_dataset_batch(ds, e->ident + from, rows, x, y) == TG_OK) {
            model_standardize(m, x);
            logits = model_logits(t, m, x);
        }
        if (!logits) {
            fprintf(stderr, "evaluate: %s\n",
                    tg_tape_status(t) != TG_OK ? tg_tape_errmsg(t) : tg_last_errmsg());
        } else {
            const float *lg = tg_tensor_cdata(logits);
            const int32_t *lab = tg_tensor_cdata(y);
            for (int64_t i = 0; i < rows; i++) {
                int best = 0;
                for (int c = 1; c < N_CLASSES; c++)
                    if (lg[i * N_CLASSES + c] > lg[i * N_CLASSES + best])
                        best = c;
                correct += best == lab[i];
                if (confusion && lab[i] >= 0 && lab[i] < N_CLASSES)
                    confusion[lab[i]][best]++;
            }
        }
        if (x != e->x) {
            tg_tensor_free(x);
            tg_tensor_free(y);
        }
        if (!logits)
            goto done;
    }
    *acc = (double)correct / (double)n;
    rc = 0;
done:
    tg_tape_reset(t);
    tg_tape_set_training(t, 1);
    return rc;
}

/* ---- Progress: a redrawn bar on a terminal, plain lines otherwise ---------------------------- */

typedef struct progress {
    int tty;       /* stdout is a terminal: redraw one line with \r */
    int log_every; /* plain mode: a line every this many batches (0: none within an epoch) */
    int epoch, epochs;
    int64_t total, batch;
    double t0, last_draw;
    int drawn; /* a bar is on the screen, waiting for its newline */
} progress;

static void fmt_duration(char *buf, size_t len, double s) {
    long v = s < 0 ? 0 : (long)(s + 0.5);
    if (v >= 3600)
        snprintf(buf, len, "%ld:%02ld:%02ld", v / 3600, v / 60 % 60, v % 60);
    else
        snprintf(buf, len, "%ld:%02ld", v / 60, v % 60);
}

/* Batch `done` of total finished; mean_loss is the mean training loss of the epoch so far. */
static void progress_update(progress *p, int64_t done, double mean_loss) {
    const double now = now_seconds();
    const int last = done == p->total;
    if (p->tty) {
        if (!last && now - p->last_draw < 0.1)
            return; /* at most ~10 redraws a second */
        p->last_draw = now;
    } else if (!(p->log_every > 0 && (done % p->log_every == 0) && !last)) {
        return;
    }
    const double el = now - p->t0;
    const double rate = el > 0 ? (double)(done * p->batch) / el : 0;
    char left[32];
    fmt_duration(left, sizeof left, done > 0 ? el * (double)(p->total - done) / (double)done : 0);
    if (p->tty) {
        enum { WIDTH = 24 };
        char bar[WIDTH + 1];
        int fill = (int)(WIDTH * done / p->total);
        for (int i = 0; i < WIDTH; i++)
            bar[i] = i < fill ? '#' : '.';
        bar[WIDTH] = '\0';
        printf("\repoch %*d/%d [%s] %*lld/%lld  %6.0f samples/s  loss %.4f  %s left\033[K",
               p->epochs >= 10 ? 2 : 1, p->epoch, p->epochs, bar,
               (int)snprintf(NULL, 0, "%lld", (long long)p->total), (long long)done,
               (long long)p->total, rate, mean_loss, left);
        p->drawn = 1;
    } else {
        printf("epoch %d/%d  batch %lld/%lld  %.0f samples/s  loss %.4f  %s left\n", p->epoch,
               p->epochs, (long long)done, (long long)p->total, rate, mean_loss, left);
    }
    fflush(stdout);
}

/* The epoch's batches are done: on a terminal, the bar gives way to a note while the accuracy is
 * measured, which the epoch's summary line then replaces. */
static void progress_measuring(progress *p) {
    if (p->tty) {
        printf("\r\033[Kepoch %d/%d: measuring the accuracy on the training and test sets...",
               p->epoch, p->epochs);
        fflush(stdout);
        p->drawn = 1;
    }
}

/* Before an error message: end the bar's line, so the message starts on its own. */
static void progress_abort(progress *p) {
    if (p->tty && p->drawn) {
        printf("\n");
        fflush(stdout);
        p->drawn = 0;
    }
}

/* Clears the bar or the note, so that what follows starts on a clean line. */
static void progress_end(progress *p) {
    if (p->tty && p->drawn) {
        printf("\r\033[K");
        p->drawn = 0;
    }
}

/* ---- Pictures: data files and a gnuplot script in the output folder --------------------------- */

static FILE *open_out(const char *dir, const char *name) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    if (!f)
        fprintf(stderr, "fashion_cnn: cannot write %s: %s\n", path, strerror(errno));
    return f;
}

/* Filters: 4 rows of 8 tiles, each a 3x3 filter scaled by its own largest |weight| (batch norm
 * follows the convolution and undoes any scale, so only each filter's pattern matters). One box
 * per weight: x y value, with x, y the centre of the box in picture units (a tile is 3 units wide
 * with 1 unit between tiles; y grows downwards, as in the images). Also each tile's scale. */
enum { TILE_COLS = 8, TILE_GAP = 1 };

static int write_filters(const char *dir, const model *m) {
    FILE *f = open_out(dir, "filters.dat"), *g = f ? open_out(dir, "filter_labels.dat") : NULL;
    if (!f || !g) {
        if (f)
            fclose(f);
        return -1;
    }
    const float *w = tg_tensor_cdata(m->conv1->W); /* [32,1,3,3] */
    const int64_t K = tg_tensor_dim(m->conv1->W, 0);
    fprintf(f, "# column row weight/max|weight|: the first convolution's filters (fashion_cnn)\n");
    fprintf(g, "# column row filter-number max|weight|\n");
    for (int64_t k = 0; k < K; k++) {
        float mx = 0;
        for (int i = 0; i < 9; i++)
            mx = fabsf(w[k * 9 + i]) > mx ? fabsf(w[k * 9 + i]) : mx;
        const int64_t tx = (k % TILE_COLS) * (3 + TILE_GAP), ty = (k / TILE_COLS) * (3 + TILE_GAP);
        for (int r = 0; r < 3; r++)
            for (int s = 0; s < 3; s++)
                fprintf(f, "%lld %lld %.5f\n", (long long)(tx + s), (long long)(ty + r),
                        mx > 0 ? w[k * 9 + r * 3 + s] / mx : 0.0);
        fprintf(g, "%lld %.2f %lld %.3f\n", (long long)(tx + 1), (double)ty - 0.95,
                (long long)k + 1, mx);
    }
    fclose(g);
    return fclose(f) ? -1 : 0;
}

/* Feature maps: the first test image, and what the first layer (conv1, batch norm in evaluation
 * mode, relu) makes of it: 32 maps of 28x28, each scaled to its own maximum, laid out as the
 * filters are, as one matrix for gnuplot's `with image` (-1 between the maps: white). */
enum { MAP_GAP = 4 };

static int write_feature_maps(const char *dir, model *m, const tg_idx_dataset *test, int *label) {
    const int64_t K = tg_tensor_dim(m->conv1->W, 0), rows = (K + TILE_COLS - 1) / TILE_COLS;
    const int64_t width = TILE_COLS * (SIDE + MAP_GAP) - MAP_GAP;
    const int64_t height = rows * (SIDE + MAP_GAP) - MAP_GAP;
    tg_tensor *x = tg_tensor_new(TG_F32, 4, (const int64_t[]){1, 1, SIDE, SIDE});
    tg_tensor *y = tg_tensor_new(TG_I32, 1, (const int64_t[]){1});
    tg_tape *t = tg_tape_new();
    float *grid = malloc(sizeof *grid * (size_t)(width * height));
    FILE *fi = NULL, *fm = NULL;
    int rc = -1;
    if (!x || !y || !t || !grid || tg_tape_set_training(t, 0) != TG_OK ||
        tg_idx_dataset_batch(test, (const int64_t[]){0}, 1, x, y) != TG_OK) {
        fprintf(stderr, "feature maps: %s\n", tg_last_errmsg());
        goto done;
    }
    *label = *(const int32_t *)tg_tensor_cdata(y);
    fi = open_out(dir, "input.dat");
    fm = fi ? open_out(dir, "maps.dat") : NULL;
    if (!fm)
        goto done;
    const float *px = tg_tensor_cdata(x); /* pixels / 255, before standardization */
    for (int r = 0; r < SIDE; r++)
        for (int c = 0; c < SIDE; c++)
            fprintf(fi, "%.4f%c", px[r * SIDE + c], c + 1 < SIDE ? ' ' : '\n');
    model_standardize(m, x);
    tg_tensor *h =
        tg_batch_norm_layer_forward_relu(t, m->bn1, tg_conv2d_layer_forward(t, m->conv1, x));
    if (!h) {
        fprintf(stderr, "feature maps: %s\n", tg_tape_errmsg(t));
        goto done;
    }
    const float *hd = tg_tensor_cdata(h); /* [1,K,28,28] */
    for (int64_t i = 0; i < width * height; i++)
        grid[i] = -1;
    for (int64_t k = 0; k < K; k++) {
        float mx = 0;
        for (int64_t i = 0; i < SIDE * SIDE; i++)
            mx = hd[k * SIDE * SIDE + i] > mx ? hd[k * SIDE * SIDE + i] : mx;
        const int64_t x0 = (k % TILE_COLS) * (SIDE + MAP_GAP),
                      y0 = (k / TILE_COLS) * (SIDE + MAP_GAP);
        for (int64_t r = 0; r < SIDE; r++)
            for (int64_t c = 0; c < SIDE; c++)
                grid[(y0 + r) * width + x0 + c] = mx > 0 ? hd[(k * SIDE + r) * SIDE + c] / mx : 0;
    }
    for (int64_t r = 0; r < height; r++)
        for (int64_t c = 0; c < width; c++)
            fprintf(fm, "%.3f%c", grid[r * width + c], c + 1 < width ? ' ' : '\n');
    FILE *fl = open_out(dir, "map_labels.dat");
    if (!fl)
        goto done;
    for (int64_t k = 0; k < K; k++)
        fprintf(fl, "%lld %lld %lld\n", (long long)((k % TILE_COLS) * (SIDE + MAP_GAP) + SIDE / 2),
                (long long)((k / TILE_COLS) * (SIDE + MAP_GAP) - 2), (long long)k + 1);
    rc = fclose(fl) ? -1 : 0;
done:
    if (fi && fclose(fi))
        rc = -1;
    if (fm && fclose(fm))
        rc = -1;
    free(grid);
    tg_tape_free(t);
    tg_tensor_free(x);
    tg_tensor_free(y);
    return rc;
}

/* The confusion matrix as rows "true predicted count percent-of-true-class". */
static int write_confusion(const char *dir, const int64_t cm[N_CLASSES][N_CLASSES]) {
    FILE *f = open_out(dir, "confusion.dat");
    if (!f)
        return -1;
    fprintf(f, "# true predicted count percent_of_true_class (fashion_cnn, test set)\n");
    for (int i = 0; i < N_CLASSES; i++) {
        int64_t row = 0;
        for (int j = 0; j < N_CLASSES; j++)
            row += cm[i][j];
        for (int j = 0; j < N_CLASSES; j++)
            fprintf(f, "%d %d %lld %.3f\n", i, j, (long long)cm[i][j],
                    row ? 100.0 * (double)cm[i][j] / (double)row : 0.0);
    }
    return fclose(f) ? -1 : 0;
}

/* The script drawing the three pictures. `what` describes the model in the titles; `label` is
 * the class of the image whose feature maps are drawn. */
static int write_script(const char *dir, const int64_t cm[N_CLASSES][N_CLASSES], double test_acc,
                        const char *what, int label) {
    FILE *f = open_out(dir, "plots.gp");
    if (!f)
        return -1;
    int64_t n = 0;
    for (int i = 0; i < N_CLASSES; i++)
        for (int j = 0; j < N_CLASSES; j++)
            n += cm[i][j];
    fprintf(f,
            "# Written by fashion_cnn; run `gnuplot plots.gp` in this folder to redraw.\n"
            "# (In tic labels gnuplot reads %% as a format character: a literal one is %%%%.)\n");
    /* Filters: a diverging palette, white at 0, so the sign of each weight reads at a glance. */
    fprintf(f,
            "set terminal pngcairo size 1100,640 font 'Sans,12'\n"
            "set output 'filters.png'\n"
            "set title \"The 32 filters of the first convolution (3x3), %s\\n"
            "each scaled by its largest |weight| (the batch norm after it undoes any scale)\" "
            "font ',13'\n"
            "set palette defined (-1 '#2166ac', -0.5 '#92c5de', 0 '#f7f7f7', 0.5 '#f4a582', "
            "1 '#b2182b')\n"
            "set cbrange [-1:1]\n"
            "set cbtics ('-1' -1, '0' 0, '+1' 1)\n"
            "set cblabel 'weight / largest |weight| of its filter'\n"
            "unset xtics; unset ytics; unset border; unset key\n"
            "set size ratio -1\n"
            "set xrange [-0.6:%d.6]\n"
            "set yrange [%d.6:-2.0]\n"
            "plot 'filters.dat' using 1:2:(0.5):(0.5):3 with boxxyerror fs solid 1.0 noborder "
            "fc palette, \\\n"
            "     'filter_labels.dat' using 1:2:3 with labels font ',10' tc rgb '#444444'\n",
            what, TILE_COLS * (3 + TILE_GAP) - TILE_GAP - 1, 4 * (3 + TILE_GAP) - TILE_GAP - 1);
    /* Feature maps: the image in grey, its 32 maps in a dark-to-bright palette, white between. */
    const int map_w = TILE_COLS * (SIDE + MAP_GAP) - MAP_GAP,
              map_h = 4 * (SIDE + MAP_GAP) - MAP_GAP;
    fprintf(f,
            "reset\n"
            "set terminal pngcairo size 1400,620 font 'Sans,12'\n"
            "set output 'feature_maps.png'\n"
            "set multiplot title \"What the first layer sees: a test image (%s) and its 32 maps "
            "after conv1, batch norm and relu\\n%s; map k comes from filter k of filters.png, "
            "each map scaled to its own maximum (black 0, bright the largest)\" font ',13'\n"
            "unset xtics; unset ytics; unset border; unset key; unset colorbox\n"
            "set size ratio -1\n"
            "set origin 0,0.1; set size 0.22,0.75\n"
            "set title 'the input (28x28)'\n"
            "set palette grey\n"
            "set xrange [-0.5:27.5]; set yrange [27.5:-0.5]\n"
            "plot 'input.dat' matrix with image\n"
            "set origin 0.21,0.02; set size 0.79,0.9\n"
            "set title ''\n"
            "set palette defined (-1 'white', -0.0001 'white', 0 '#000004', 0.25 '#3b0f70', "
            "0.5 '#b5367a', 0.75 '#fb8861', 1 '#fcfdbf')\n"
            "set cbrange [-1:1]\n"
            "set xrange [-0.5:%d.5]; set yrange [%d.5:-6]\n"
            "plot 'maps.dat' matrix with image, 'map_labels.dat' using 1:2:3 with labels "
            "font ',10' tc rgb '#444444'\n"
            "unset multiplot\n",
            class_names[label], what, map_w - 1, map_h - 1);
    /* Confusion matrix: the colour is the share of the true class (log scale, so the rare
     * mistakes show next to the ~90% diagonal); each cell prints its count; empty cells stay
     * white. */
    fprintf(f, "reset\n"
               "set terminal pngcairo size 1000,860 font 'Sans,12'\n"
               "set output 'confusion.png'\n");
    fprintf(f,
            "set title \"Fashion-MNIST test set: %lld images, accuracy %.2f%%\\n%s\" "
            "font ',13'\n",
            (long long)n, 100 * test_acc, what);
    fprintf(f, "set xtics (");
    for (int j = 0; j < N_CLASSES; j++)
        fprintf(f, "%s\"%s\" %d", j ? ", " : "", class_names[j], j);
    fprintf(f, ") rotate by 35 right scale 0\n"
               "set ytics (");
    for (int i = 0; i < N_CLASSES; i++) {
        int64_t row = 0;
        for (int j = 0; j < N_CLASSES; j++)
            row += cm[i][j];
        fprintf(f, "%s\"%s  %.1f%%%%\" %d", i ? ", " : "", class_names[i],
                row ? 100.0 * (double)cm[i][i] / (double)row : 0.0, i);
    }
    fprintf(
        f,
        ") scale 0\n"
        "set xlabel 'predicted class (each cell: how many images of its row were predicted as its "
        "column)'\n"
        "set ylabel 'true class, and the share of it predicted right'\n"
        "set xrange [-0.5:9.5]; set yrange [9.5:-0.5]\n"
        "set size ratio -1\n"
        "set logscale cb; set cbrange [0.1:100]\n"
        "set cbtics ('0.1%%%%' 0.1, '1%%%%' 1, '10%%%%' 10, '100%%%%' 100)\n"
        "set cblabel 'share of the true class (log scale)'\n"
        "set palette defined (0 '#fff7ec', 1 '#fdd49e', 2 '#fc8d59', 3 '#d7301f', "
        "4 '#7f0000')\n"
        "unset key\n"
        "plot 'confusion.dat' using 2:1:(0.5):(0.5):($3 > 0 ? ($4 > 0.1 ? $4 : 0.1) : NaN) "
        "with boxxyerror fs solid 1.0 border lc rgb 'white' fc palette, \\\n"
        "     '' using 2:1:($3 > 0 ? sprintf(\"%%d\", int($3)) : \"\"):($4 > 30 ? 0xffffff : "
        "0x222222) with labels tc rgb variable font ',11'\n");
    return fclose(f) ? -1 : 0;
}

/* Writes the data files and the script into o->out and runs gnuplot there. */
static int draw_pictures(const options *o, model *m, const tg_idx_dataset *test,
                         const int64_t cm[N_CLASSES][N_CLASSES], double test_acc,
                         const char *what) {
    if (mkdir(o->out, 0777) != 0 && errno != EEXIST) {
        fprintf(stderr, "fashion_cnn: cannot create the folder %s: %s\n", o->out, strerror(errno));
        return -1;
    }
    int label = 0;
    if (write_filters(o->out, m) || write_feature_maps(o->out, m, test, &label) ||
        write_confusion(o->out, cm) || write_script(o->out, cm, test_acc, what, label))
        return -1;
    if (system("gnuplot --version > /dev/null 2>&1") != 0) {
        printf("gnuplot was not found, so no pictures were drawn. Install it with\n"
               "    sudo apt-get install gnuplot-nox\n"
               "then run `gnuplot plots.gp` inside %s.\n",
               o->out);
        return 0;
    }
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "cd '%s' && gnuplot plots.gp", o->out);
    if (system(cmd) != 0) {
        fprintf(stderr, "fashion_cnn: gnuplot failed on %s/plots.gp (see its messages above)\n",
                o->out);
        return -1;
    }
    printf("pictures: %s/filters.png (the first layer's filters), %s/feature_maps.png (what they\n"
           "          make of a test image), %s/confusion.png (the test set's confusion matrix)\n",
           o->out, o->out, o->out);
    return 0;
}

/* ---- Threads, peak memory, missing data ------------------------------------------------------ */

/* Sets the kernels' thread count; returns the count in force (unchanged on a bad value). */
static int set_threads(int n) {
    if (tg_set_num_threads(n) != TG_OK)
        fprintf(stderr, "fashion_cnn: --threads %d: %s\n", n, tg_last_errmsg());
    return tg_get_num_threads();
}

/* The process's peak resident set size in MiB (Linux reports ru_maxrss in KiB). */
static double peak_rss_mib(void) {
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0)
        return -1;
    return (double)ru.ru_maxrss / 1024.0;
}

/* Returns 0 if dir holds the four files, else says what is missing and how to get it and
 * returns 1. (Malformed files are reported later, by the loader, with what is wrong.) */
static int data_missing(const char *dir) {
    struct stat st;
    char missing[256] = "";
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        fprintf(stderr, "fashion_cnn: no data: %s %s.\n", dir,
                errno == ENOENT ? "does not exist" : "is not a readable folder");
    } else {
        static const char *const names[4] = {"train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"};
        for (int part = 0; part < 4; part++) {
            char path[4096];
            if (tg_idx_path(dir, (tg_idx_part)part, path, sizeof path) != TG_OK ||
                stat(path, &st) != 0) {
                size_t len = strlen(missing);
                snprintf(missing + len, sizeof missing - len, "%s%s[.gz]", len ? ", " : "",
                         names[part]);
            }
        }
        if (!missing[0])
            return 0;
        fprintf(stderr, "fashion_cnn: no data: %s has no %s.\n", dir, missing);
    }
    fprintf(stderr,
            "Fashion-MNIST comes with Debian; install it with\n"
            "    sudo apt-get install dataset-fashion-mnist\n"
            "which puts it in %s (the default folder), or pass --data DIR.\n",
            TG_FASHION_MNIST_DIR);
    return 1;
}

/* ---- The modes: --bench, --eval, training ---------------------------------------------------- */

/* --bench: BENCH_WARMUP steps, then o->bench timed steps counting heap allocations; a JSON line. */
static int run_bench(const options *o, tg_tape *t, model *m, tg_optim *opt, split *train,
                     tg_rng *shuffle) {
    const int64_t nb = split_batches(train);
    int64_t b = 0;
    double loss = 0, t0 = 0;
    const long steps = BENCH_WARMUP + o->bench;
    int64_t samples = 0;
    const int can_count = alloc_counter_unavailable() == NULL;
    split_shuffle(train, shuffle);
    for (long i = 0; i < steps; i++) {
        if (i == BENCH_WARMUP) {
            t0 = now_seconds();
            alloc_counter_start();
        }
        if (b == nb) {
            b = 0;
            split_shuffle(train, shuffle);
        }
        tg_tensor *x, *y;
        if (split_batch(train, b++, &x, &y) || train_step(t, m, opt, x, y, &loss))
            return -1;
        if (i >= BENCH_WARMUP)
            samples += tg_tensor_dim(y, 0);
    }
    const long n_allocs = alloc_counter_stop();
    const double secs = now_seconds() - t0;
    char allocs[32] = "null";
    if (can_count)
        snprintf(allocs, sizeof allocs, "%.3f", (double)n_allocs / (double)o->bench);
    printf("{\"bench\":\"fashion_cnn\",\"optim\":\"%s\",\"threads\":%d,\"batch\":%d,\"steps\":%ld,"
           "\"samples_per_s\":%.1f,\"step_ms\":%.2f,\"peak_rss_mib\":%.1f,"
           "\"allocs_per_step\":%s,\"tape_mib\":%.1f,\"kernel\":\"%s\",\"final_loss\":%.4f}\n",
           o->sgd ? "sgd" : "adam", o->threads, o->batch, o->bench, (double)samples / secs,
           1e3 * secs / (double)o->bench, peak_rss_mib(), allocs,
           (double)tg_tape_bytes(t) / (1024.0 * 1024.0), tg_kernel_name(), loss);
    return 0;
}

/* --eval: the test accuracy of a model saved by --checkpoint, and its pictures. */
static int run_eval(const options *o) {
    int rc = 1;
    model m = {.mean = 0, .inv_std = 1};
    evaluator ev = {0};
    tg_tape *t = tg_tape_new();
    tg_idx_dataset *test = tg_idx_dataset_load_dir(o->data, 0);
    if (!test || !t) {
        fprintf(stderr, "fashion_cnn: cannot load the test set: %s\n", tg_last_errmsg());
        goto done;
    }
    if (check_images(test, o->data, "test") || model_init(&m, o->seed) ||
        evaluator_init(&ev, tg_idx_dataset_size(test)))
        goto done;
    if (tg_checkpoint_load(o->eval, m.saved, N_SAVED, NULL) != TG_OK) {
        fprintf(stderr, "fashion_cnn: --eval: %s\n", tg_last_errmsg());
        goto done;
    }
    model_read_standardization(&m);
    const int64_t n = tg_idx_dataset_size(test);
    int64_t cm[N_CLASSES][N_CLASSES];
    double acc;
    if (evaluate(t, &m, test, n, &ev, &acc, cm))
        goto done;
    printf("%s: test accuracy %.2f%% on the %lld test images of %s\n", o->eval, 100 * acc,
           (long long)n, o->data);
    char what[512];
    snprintf(what, sizeof what, "model %s", o->eval);
    rc = o->no_pictures || draw_pictures(o, &m, test, cm, acc, what) == 0 ? 0 : 1;
done:
    tg_tape_free(t);
    model_free(&m);
    tg_idx_dataset_free(test);
    evaluator_free(&ev);
    return rc;
}

/* What --state saves besides the model: the run's own counters, as one f64 tensor "run.stats". */
enum { STAT_BEST, STAT_BEST_EPOCH, STAT_TRAIN_TIME, STAT_WALL_TIME, N_STATS };

/* Saves the training state at the end of epoch `epochs_done` (shuffle: the generator after it). */
static int save_state(const options *o, model *m, tg_tensor *stats, tg_optim *opt,
                      const tg_rng *shuffle, int64_t epochs_done) {
    tg_tensor *params[N_SAVED + 1];
    memcpy(params, m->saved, sizeof m->saved);
    params[N_SAVED] = stats;
    tg_rng *rngs[2] = {&m->dropout_rng, &m->flip_rng};
    tg_data_position pos = {
        .seed = o->seed + SHUFFLE_STREAM, .epoch = epochs_done, .cursor = 0, .rng = *shuffle};
    tg_train_state ts = {.params = params,
                         .n_params = N_SAVED + 1,
                         .optim = opt,
                         .rngs = rngs,
                         .n_rngs = 2,
                         .data = &pos};
    if (tg_train_state_save(o->state, &ts) != TG_OK) {
        fprintf(stderr, "fashion_cnn: --state: %s\n", tg_last_errmsg());
        return -1;
    }
    return 0;
}

int main(int argc, char **argv) {
    options o;
    int pr = parse_args(argc, argv, &o);
    if (pr)
        return pr > 0 ? 0 : 2;
    if (data_missing(o.data))
        return 1;
    o.threads = set_threads(o.threads);
    if (o.eval)
        return run_eval(&o);

    int rc = 1;
    model m = {.mean = 0, .inv_std = 1};
    split train = {0};
    tg_idx_dataset *train_ds = NULL, *test = NULL;
    evaluator ev = {0};
    tg_tape *t = NULL;
    tg_optim *opt = NULL;
    tg_tensor *stats = tg_tensor_new(TG_F64, 1, (const int64_t[]){N_STATS});
    tg_tensor_set_name(stats, "run.stats");
    const int quiet = o.bench > 0; /* bench mode: stdout is the JSON line only */
    const double start = now_seconds();
    train_ds = tg_idx_dataset_load_dir(o.data, 1);
    test = quiet ? NULL : tg_idx_dataset_load_dir(o.data, 0);
    if (!train_ds || (!quiet && !test)) {
        fprintf(stderr, "fashion_cnn: cannot load the %s set: %s\n", train_ds ? "test" : "training",
                tg_last_errmsg());
        goto done;
    }
    if (check_images(train_ds, o.data, "training") || (test && check_images(test, o.data, "test")))
        goto done;
    if (split_init(&train, train_ds, o.batch) || model_init(&m, o.seed))
        goto done;
    m.flip = o.flip;
    m.shift = o.shift;
    model_set_standardization(&m, train_ds);
    const int64_t n_test = test ? tg_idx_dataset_size(test) : 0;
    const int64_t n_train_eval =
        o.train_eval == 0 || o.train_eval > train.n ? train.n : o.train_eval;
    char train_what[64] = "all training images";
    if (n_train_eval < train.n)
        snprintf(train_what, sizeof train_what, "the first %lld training images",
                 (long long)n_train_eval);
    if (!quiet && evaluator_init(&ev, train.n > n_test ? train.n : n_test))
        goto done;
    int64_t n_params = 0;
    for (int i = 0; i < N_PARAMS; i++)
        n_params += tg_tensor_numel(m.params[i]);
    const int halve = !strcmp(o.schedule, "halve") && o.halve_every > 0;
    char shifting[64] = "";
    if (o.shift)
        snprintf(shifting, sizeof shifting, "; training images shifted by up to %d pixel%s",
                 o.shift, o.shift == 1 ? "" : "s");
    char halving[48] = "";
    if (!strcmp(o.schedule, "cosine"))
        snprintf(halving, sizeof halving, ", cosine decay to 0");
    else if (halve)
        snprintf(halving, sizeof halving, ", halved every %d epoch%s", o.halve_every,
                 o.halve_every == 1 ? "" : "s");
    if (!quiet)
        printf("data:  %s: %lld training and %lld test images of 28x28 (loaded in %.1f s)\n"
               "       standardized: x = (pixel / 255 - %.4f) / %.4f, the training set's mean and "
               "std\n"
               "model: conv 32 - bn - relu - pool, conv 64 - bn - relu - pool, dropout 0.25,\n"
               "       linear 3136-128 - relu - 10; %lld parameters; %s (lr %g%s), batch %lld,\n"
               "       seed %llu, %d thread%s%s%s\n"
               "After each epoch: the mean training loss of its batches, then the accuracy (in\n"
               "evaluation mode) on %s and on all test images.\n",
               o.data, (long long)train.n, (long long)n_test, now_seconds() - start, m.mean,
               1 / m.inv_std, (long long)n_params, o.sgd ? "SGD with momentum 0.9" : "Adam", o.lr,
               halving, (long long)train.batch, o.seed, o.threads, o.threads == 1 ? "" : "s",
               o.flip ? "; random left-right flips of the training images" : "", shifting,
               train_what);
    tg_optim_config cfg = tg_optim_defaults(o.sgd ? TG_OPTIM_MOMENTUM : TG_OPTIM_ADAM, o.lr);
    cfg.weight_decay = o.weight_decay;
    if (!strcmp(o.schedule, "cosine"))
        cfg.total_steps = (int64_t)o.epochs * split_batches(&train);
    if (halve) {
        cfg.decay_every = (int64_t)o.halve_every * split_batches(&train);
        cfg.decay_factor = 0.5;
    }
    opt = tg_optim_new(&cfg, m.params, N_PARAMS);
    t = tg_tape_new();
    if (!opt || !t || !stats) {
        fprintf(stderr, "setup: %s\n", tg_last_errmsg());
        goto done;
    }
    tg_rng shuffle;
    tg_rng_seed(&shuffle, o.seed + SHUFFLE_STREAM);
    double *st = tg_tensor_data(stats);
    st[STAT_BEST] = -1;
    int first_epoch = 1;
    if (o.resume && !quiet) {
        tg_tensor *params[N_SAVED + 1];
        memcpy(params, m.saved, sizeof m.saved);
        params[N_SAVED] = stats;
        tg_rng *rngs[2] = {&m.dropout_rng, &m.flip_rng};
        tg_data_position pos;
        tg_train_state ts = {.params = params,
                             .n_params = N_SAVED + 1,
                             .optim = opt,
                             .rngs = rngs,
                             .n_rngs = 2,
                             .data = &pos};
        if (tg_train_state_load(o.resume, &ts) != TG_OK) {
            fprintf(stderr, "fashion_cnn: --resume: %s\n", tg_last_errmsg());
            goto done;
        }
        model_read_standardization(&m);
        split_replay(&train, &shuffle, o.seed + SHUFFLE_STREAM, pos.epoch);
        if (pos.seed != o.seed + SHUFFLE_STREAM || pos.cursor != 0 ||
            memcmp(&shuffle, &pos.rng, sizeof shuffle) != 0) {
            fprintf(stderr, "fashion_cnn: --resume: %s is the state of another run (--seed?)\n",
                    o.resume);
            goto done;
        }
        first_epoch = (int)pos.epoch + 1;
        printf("resumed from %s: %lld epochs done, %lld steps\n", o.resume, (long long)pos.epoch,
               (long long)tg_optim_steps(opt));
    }
    if (quiet) {
        rc = run_bench(&o, t, &m, opt, &train, &shuffle) ? 1 : 0;
        goto done;
    }

    progress p = {.tty = isatty(fileno(stdout)),
                  .log_every = o.log_every,
                  .epochs = o.epochs,
                  .total = split_batches(&train),
                  .batch = train.batch};
    double best = st[STAT_BEST], train_time = st[STAT_TRAIN_TIME], last_test_acc = 0;
    int best_epoch = (int)st[STAT_BEST_EPOCH];
    int64_t cm[N_CLASSES][N_CLASSES] = {{0}};
    const double run_start = now_seconds(), wall_before = st[STAT_WALL_TIME];
    for (int epoch = first_epoch; epoch <= o.epochs; epoch++) {
        split_shuffle(&train, &shuffle);
        p.epoch = epoch;
        p.t0 = p.last_draw = now_seconds();
        const double lr = tg_optim_lr(opt); /* the epoch's rate (the schedule steps at its end) */
        double sum_loss = 0;
        for (int64_t b = 0; b < p.total; b++) {
            tg_tensor *x, *y;
            double loss;
            if (split_batch(&train, b, &x, &y) || train_step(t, &m, opt, x, y, &loss)) {
                progress_abort(&p);
                goto done;
            }
            sum_loss += loss;
            progress_update(&p, b + 1, sum_loss / (double)(b + 1));
        }
        const double secs = now_seconds() - p.t0;
        train_time += secs;
        progress_measuring(&p);
        double train_acc, test_acc;
        if (evaluate(t, &m, train.ds, n_train_eval, &ev, &train_acc, NULL) ||
            evaluate(t, &m, test, n_test, &ev, &test_acc, cm)) {
            progress_abort(&p);
            goto done;
        }
        last_test_acc = test_acc;
        progress_end(&p);
        char took[32];
        fmt_duration(took, sizeof took, secs);
        printf("epoch %2d/%d  loss %.4f  train acc %5.2f%%  test acc %5.2f%%  (%s, %.0f "
               "samples/s, lr %.3g)",
               epoch, o.epochs, sum_loss / (double)p.total, 100 * train_acc, 100 * test_acc, took,
               (double)train.n / secs, lr);
        if (test_acc > best) {
            best = test_acc;
            best_epoch = epoch;
            if (o.checkpoint) {
                if (tg_checkpoint_save(o.checkpoint, m.saved, N_SAVED, NULL) != TG_OK) {
                    printf("\n");
                    fprintf(stderr, "checkpoint: %s\n", tg_last_errmsg());
                    goto done;
                }
                printf("  best so far: saved");
            }
        }
        printf("\n");
        fflush(stdout);
        if (o.state) {
            st[STAT_BEST] = best;
            st[STAT_BEST_EPOCH] = best_epoch;
            st[STAT_TRAIN_TIME] = train_time;
            st[STAT_WALL_TIME] = wall_before + now_seconds() - run_start;
            if (save_state(&o, &m, stats, opt, &shuffle, epoch))
                goto done;
        }
    }
    char total[32], training[32];
    fmt_duration(total, sizeof total, wall_before + now_seconds() - run_start);
    fmt_duration(training, sizeof training, train_time);
    printf("done: best test accuracy %.2f%% after epoch %d; %s in all (%s training, the rest "
           "measuring accuracy)\n",
           100 * best, best_epoch, total, training);
    if (o.checkpoint)
        printf("the best model (epoch %d) is in %s (safetensors: the parameters, bn*.running_*\n"
               "  and input.mean, input.std); measure it again with --eval %s\n",
               best_epoch, o.checkpoint, o.checkpoint);
    if (!o.no_pictures && first_epoch <= o.epochs) {
        char what[128];
        snprintf(what, sizeof what, "after %d epoch%s of training", o.epochs,
                 o.epochs == 1 ? "" : "s");
        if (draw_pictures(&o, &m, test, cm, last_test_acc, what))
            goto done;
    }
    rc = 0;
done:
    tg_tape_free(t);
    tg_optim_free(opt);
    tg_tensor_free(stats);
    model_free(&m);
    split_free(&train);
    tg_idx_dataset_free(train_ds);
    tg_idx_dataset_free(test);
    evaluator_free(&ev);
    return rc;
}
