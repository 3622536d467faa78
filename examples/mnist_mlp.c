/* mnist_mlp.c -- a 784-256-128-10 ReLU network learns Fashion-MNIST (or MNIST).
 *
 *     x [B,784] (pixels / 255) -> fc1 -> relu -> fc2 -> relu -> fc3 -> logits [B,10]
 *     loss = softmax cross-entropy of the logits against the class labels, mean over the batch
 *
 * trained with Adam (or SGD with momentum) on mini-batches of 128 shuffled images. The images stay
 * in memory as bytes (55 MB for the 70,000 of them); each batch is converted to floats into
 * tensors allocated once, and the tape is reset, not freed, between steps: a training step
 * allocates nothing once the first steps have sized the tape.
 *
 * Data: Debian's dataset-fashion-mnist package (/usr/share/datasets/fashion-mnist) by default;
 * --data DIR reads any directory holding the four MNIST-style files (.gz or not).
 * Run `mnist_mlp --help` for the flags; `--bench N` times N steps and prints one JSON line.
 *
 * Exact resume: --state FILE saves the whole training state (weights, Adam's moments and step
 * count, the shuffling generator and the position in the epoch) with tg_train_state_save;
 * --resume FILE continues from it and ends bit-identical to a run that was never stopped.
 * --eval FILE measures a model saved by --checkpoint on the test set, without training. */
#define _POSIX_C_SOURCE 200809L /* isatty, fileno, clock_gettime */

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
 * tests/alloc_counter.h makes this program define malloc and friends, which every caller in the
 * process then uses, libtapegrad included, and which count while the counter runs. Under
 * sanitizers and valgrind (which replace malloc themselves) --bench reports allocs_per_step as
 * null; a probe checks that the counter counts before a zero is trusted. */
#include "alloc_counter.h" /* this file is the program's one includer */

/* ---- Options --------------------------------------------------------------------------------- */

#define N_CLASSES 10
#define EVAL_BATCH 1000 /* rows per forward pass when measuring accuracy */
#define BENCH_WARMUP 20 /* steps before --bench starts the clock */
/* One --seed drives two independent random streams: the initial weights and the shuffling. */
#define WEIGHT_STREAM 0x9e3779b97f4a7c15ull
#define SHUFFLE_STREAM 0x3c6ef372fe94f82aull

typedef struct options {
    const char *data;
    int epochs;
    double lr;       /* 0: the optimizer's default */
    int halve_every; /* the learning rate is halved after every this many epochs; 0: constant */
    int batch;
    unsigned long long seed;
    int threads;
    int sgd; /* 0: Adam, 1: SGD with momentum 0.9 */
    const char *checkpoint;
    const char *state;  /* --state: the training state file */
    const char *resume; /* --resume: continue from this state file */
    const char *eval;   /* --eval: evaluate this model file, no training */
    long state_every;   /* a state file every this many batches (0: at the end of each epoch) */
    long bench;         /* > 0: time this many steps and print JSON instead of training */
    int log_every;      /* plain-line mode: a line every this many batches (0: once per epoch) */
    /* --dist, --dist-fast, --dist-blocking: data-parallel over MPI ranks (examples/mnist_dist.h) */
    int dist, dist_fast, dist_blocking;
} options;

static const options defaults = {.data = TG_FASHION_MNIST_DIR,
                                 .epochs = 10,
                                 .batch = 128,
                                 .seed = 1,
                                 .threads = 1,
                                 .halve_every = 2};
#define ADAM_LR 2e-3
#define SGD_LR 0.05

static void usage(FILE *f, const char *prog) {
    fprintf(
        f,
        "usage: %s [options]\n"
        "Trains a 784-256-128-10 ReLU network (softmax cross-entropy) on Fashion-MNIST and\n"
        "prints the train and test accuracy after each epoch.\n\n"
        "  --data DIR        folder with train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz,\n"
        "                    t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz (or unpacked);\n"
        "                    original MNIST works too (default %s,\n"
        "                    from: apt-get install dataset-fashion-mnist)\n"
        "  --epochs E        passes over the 60,000 training images (default %d)\n"
        "  --optim NAME      adam (default) or sgd (SGD with momentum 0.9)\n"
        "  --lr LR           initial learning rate (default %g for adam, %g for sgd)\n"
        "  --halve-every E   halve the learning rate after every E epochs; 0 keeps it\n"
        "                    constant (default %d)\n"
        "  --batch B         images per mini-batch (default %d)\n"
        "  --seed S          seed of the initial weights and the shuffling (default %llu)\n"
        "  --threads T       threads for the kernels (default %d)\n"
        "  --checkpoint PATH save the model with the best test accuracy there (safetensors)\n"
        "  --state FILE      save the whole training state there (weights, optimizer, data\n"
        "                    order) at the end of each epoch, for --resume\n"
        "  --state-every N   ... and every N batches\n"
        "  --resume FILE     continue the run saved in FILE exactly (same flags as that run);\n"
        "                    goes on saving its state there unless --state says elsewhere\n"
        "  --eval FILE       only measure the test accuracy of a model saved by --checkpoint\n"
        "  --log-every N     when the output is not a terminal: a line every N batches\n"
        "                    (default: one line per epoch)\n"
        "  --dist            data-parallel over MPI ranks: mpirun -np 2 %s --dist\n"
        "                    (deterministic gradient sum; --dist-fast: MPI's allreduce;\n"
        "                    --dist-blocking: blocking collectives after backward, no overlap)\n"
        "  --bench N         benchmark: time N training steps after %d warm-up steps and print\n"
        "                    one JSON line (samples/s, peak RSS, allocations per step)\n"
        "  --help            this text\n",
        prog, defaults.data, defaults.epochs, ADAM_LR, SGD_LR, defaults.halve_every, defaults.batch,
        defaults.seed, defaults.threads, prog, BENCH_WARMUP);
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
        if (!strcmp(a, "--dist") || !strcmp(a, "--dist-fast") || !strcmp(a, "--dist-blocking")) {
            o->dist = 1;
            o->dist_fast |= !strcmp(a, "--dist-fast");
            o->dist_blocking |= !strcmp(a, "--dist-blocking");
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
        } else if (!strcmp(a, "--epochs"))
            o->epochs = (int)strtol(v, &end, 10);
        else if (!strcmp(a, "--lr"))
            o->lr = strtod(v, &end);
        else if (!strcmp(a, "--halve-every"))
            o->halve_every = (int)strtol(v, &end, 10);
        else if (!strcmp(a, "--batch"))
            o->batch = (int)strtol(v, &end, 10);
        else if (!strcmp(a, "--seed"))
            o->seed = strtoull(v, &end, 10);
        else if (!strcmp(a, "--threads"))
            o->threads = (int)strtol(v, &end, 10);
        else if (!strcmp(a, "--bench"))
            o->bench = strtol(v, &end, 10);
        else if (!strcmp(a, "--state-every"))
            o->state_every = strtol(v, &end, 10);
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
        if (!strcmp(a, "--lr") && !(o->lr > 0)) {
            fprintf(stderr, "%s: --lr must be > 0, got '%s'\n", argv[0], v);
            return -1;
        }
    }
    if (o->epochs < 1 || o->batch < 1 || o->threads < 1 || o->threads > 256 || o->bench < 0 ||
        o->log_every < 0 || o->halve_every < 0 || o->state_every < 0) {
        fprintf(stderr,
                "%s: need --epochs >= 1, --batch >= 1, --threads in 1..256, --bench >= 0, "
                "--log-every >= 0, --halve-every >= 0, --state-every >= 0\n",
                argv[0]);
        return -1;
    }
    if (o->lr == 0)
        o->lr = o->sgd ? SGD_LR : ADAM_LR;
    if (o->resume && !o->state)
        o->state = o->resume;
    if (o->state_every && !o->state) {
        fprintf(stderr, "%s: --state-every needs --state FILE\n", argv[0]);
        return -1;
    }
    return 0;
}

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- The model ------------------------------------------------------------------------------- */

typedef struct model {
    /* Inputs are standardized, x = (pixel / 255 - mean) / std, with the mean and standard
     * deviation of all training pixels: centred inputs of unit scale suit He-initialized relu
     * layers, and Adam then needs no warm-up to find the scale of the first layer. */
    float mean, inv_std;
    tg_linear *fc1, *fc2, *fc3;
    tg_tensor *params[6];
    /* What a checkpoint holds: the parameters, then the standardization as two one-element
     * tensors "input.mean" and "input.std", so that a saved model can be used on its own. */
    tg_tensor *saved[8];
} model;

static void model_free(model *m) {
    tg_linear_free(m->fc1);
    tg_linear_free(m->fc2);
    tg_linear_free(m->fc3);
    tg_tensor_free(m->saved[6]);
    tg_tensor_free(m->saved[7]);
}

/* He-uniform weights for the layers followed by a relu (their outputs keep about the variance of
 * their inputs), Xavier-uniform (tg_linear_new's default) for the last one, zero biases. */
static int model_init(model *m, int64_t n_in, unsigned long long seed) {
    tg_rng rng;
    tg_rng_seed(&rng, seed + WEIGHT_STREAM);
    m->fc1 = tg_linear_new(TG_F32, n_in, 256, "fc1", &rng);
    m->fc2 = tg_linear_new(TG_F32, 256, 128, "fc2", &rng);
    m->fc3 = tg_linear_new(TG_F32, 128, N_CLASSES, "fc3", &rng);
    if (!m->fc1 || !m->fc2 || !m->fc3 || tg_init_he_uniform(m->fc1->W, n_in, &rng) != TG_OK ||
        tg_init_he_uniform(m->fc2->W, 256, &rng) != TG_OK) {
        fprintf(stderr, "model: %s\n", tg_last_errmsg());
        return -1;
    }
    tg_tensor *p[6] = {m->fc1->W, m->fc1->b, m->fc2->W, m->fc2->b, m->fc3->W, m->fc3->b};
    memcpy(m->params, p, sizeof p);
    return 0;
}

static int model_stat_tensors(model *m);

/* Mean and 1/std of all pixels of ds (scaled to [0,1]), from a histogram of the bytes; also
 * the tensors a checkpoint saves them in. */
static int model_set_standardization(model *m, const tg_idx_dataset *ds) {
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
    return model_stat_tensors(m);
}

/* The checkpoint's view of the model: the parameters, and the standardization as the tensors
 * "input.mean" and "input.std" (from m->mean and m->inv_std). */
static int model_stat_tensors(model *m) {
    const float stats[2] = {m->mean, 1 / m->inv_std};
    memcpy(m->saved, m->params, sizeof m->params);
    for (int i = 0; i < 2; i++) {
        m->saved[6 + i] = tg_tensor_from(TG_F32, 1, (const int64_t[]){1}, &stats[i]);
        if (!m->saved[6 + i]) {
            fprintf(stderr, "model: %s\n", tg_last_errmsg());
            return -1;
        }
        tg_tensor_set_name(m->saved[6 + i], i ? "input.std" : "input.mean");
    }
    return 0;
}

/* x = (x - mean) / std in place, on a batch just converted by tg_idx_dataset_batch. */
static void model_standardize(const model *m, tg_tensor *x) {
    float *d = tg_tensor_data(x);
    const int64_t n = tg_tensor_numel(x);
    for (int64_t i = 0; i < n; i++)
        d[i] = (d[i] - m->mean) * m->inv_std;
}

static tg_tensor *model_logits(tg_tape *t, const model *m, tg_tensor *x) {
    tg_tensor *h1 = tg_relu(t, tg_linear_forward(t, m->fc1, x));
    tg_tensor *h2 = tg_relu(t, tg_linear_forward(t, m->fc2, h1));
    return tg_linear_forward(t, m->fc3, h2);
}

/* ---- Data ------------------------------------------------------------------------------------ */

/* A data set and the tensors its batches are converted into, allocated once. */
typedef struct split {
    tg_idx_dataset *ds;
    int64_t n, batch;
    int64_t *order;           /* the rows in visiting order; reshuffled each epoch for training */
    tg_tensor *x, *y;         /* [batch,784] f32, [batch] i32 */
    tg_tensor *x_rem, *y_rem; /* the smaller last batch, when batch does not divide n */
} split;

static void split_free(split *s) {
    tg_idx_dataset_free(s->ds);
    free(s->order);
    tg_tensor_free(s->x);
    tg_tensor_free(s->y);
    tg_tensor_free(s->x_rem);
    tg_tensor_free(s->y_rem);
}

static int split_init(split *s, const char *dir, int train, int64_t batch) {
    memset(s, 0, sizeof *s);
    s->ds = tg_idx_dataset_load_dir(dir, train);
    if (!s->ds) {
        fprintf(stderr, "mnist_mlp: cannot load the %s set: %s\n", train ? "training" : "test",
                tg_last_errmsg());
        return -1;
    }
    s->n = tg_idx_dataset_size(s->ds);
    const int64_t F = tg_idx_dataset_features(s->ds);
    if (s->n < 1 || tg_idx_dataset_classes(s->ds) > N_CLASSES) {
        fprintf(stderr,
                "%s: the %s set has %lld images and %d classes; expected some images "
                "and at most %d classes\n",
                dir, train ? "training" : "test", (long long)s->n, tg_idx_dataset_classes(s->ds),
                N_CLASSES);
        return -1;
    }
    s->batch = batch < s->n ? batch : s->n;
    s->order = malloc(sizeof *s->order * (size_t)s->n);
    s->x = tg_tensor_new(TG_F32, 2, (const int64_t[]){s->batch, F});
    s->y = tg_tensor_new(TG_I32, 1, (const int64_t[]){s->batch});
    const int64_t rem = s->n % s->batch;
    if (rem) {
        s->x_rem = tg_tensor_new(TG_F32, 2, (const int64_t[]){rem, F});
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

/* Puts s->order and *rng where they are after `epochs` epochs' shuffles from the seed: the order
 * of each epoch is the previous one shuffled, so a position is replayed, not stored. */
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

/* One step: forward, backward, update. The loss goes to *loss. */
static int train_step(tg_tape *t, const model *m, tg_optim *opt, tg_tensor *x, tg_tensor *y,
                      double *loss) {
    model_standardize(m, x);
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

/* What measuring accuracy needs, allocated once: batch tensors of EVAL_BATCH rows and the
 * indices 0, 1, 2, ... of every sample (the evaluation visits the files in order). */
typedef struct evaluator {
    tg_tensor *x, *y; /* [EVAL_BATCH,784] f32, [EVAL_BATCH] i32 */
    int64_t *ident;   /* n_max entries */
} evaluator;

static int evaluator_init(evaluator *e, int64_t features, int64_t n_max) {
    e->x = tg_tensor_new(TG_F32, 2, (const int64_t[]){EVAL_BATCH, features});
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

/* Fraction of the samples of ds that m classifies right, EVAL_BATCH at a time. */
static int evaluate(tg_tape *t, const model *m, const tg_idx_dataset *ds, evaluator *e,
                    double *acc) {
    const int64_t n = tg_idx_dataset_size(ds), F = tg_idx_dataset_features(ds);
    int64_t correct = 0;
    for (int64_t from = 0; from < n; from += EVAL_BATCH) {
        const int64_t rows = n - from < EVAL_BATCH ? n - from : EVAL_BATCH;
        /* A short last batch (a data set whose size is not a multiple of EVAL_BATCH) gets
         * tensors of its own; evaluation is not the training step, so it may allocate. */
        tg_tensor *x = e->x, *y = e->y;
        if (rows < EVAL_BATCH) {
            x = tg_tensor_new(TG_F32, 2, (const int64_t[]){rows, F});
            y = tg_tensor_new(TG_I32, 1, (const int64_t[]){rows});
        }
        tg_tape_reset(t);
        tg_tensor *logits = NULL;
        if (x && y && tg_idx_dataset_batch(ds, e->ident + from, rows, x, y) == TG_OK) {
            model_standardize(m, x);
            logits = model_logits(t, m, x);
        }
        double a = logits ? tg_accuracy(logits, y) : -1;
        if (a < 0)
            fprintf(stderr, "evaluate: %s\n",
                    tg_tape_status(t) != TG_OK ? tg_tape_errmsg(t) : tg_last_errmsg());
        else
            correct += llround(a * (double)rows);
        if (x != e->x) {
            tg_tensor_free(x);
            tg_tensor_free(y);
        }
        if (a < 0)
            return -1;
    }
    *acc = (double)correct / (double)n;
    return 0;
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

/* ---- Threads, peak memory -------------------------------------------------------------------- */

/* Sets the kernels' thread count; returns the count in force (unchanged on a bad value). */
static int set_threads(int n) {
    if (tg_set_num_threads(n) != TG_OK)
        fprintf(stderr, "mnist_mlp: --threads %d: %s\n", n, tg_last_errmsg());
    return tg_get_num_threads();
}

/* The process's peak resident set size in MiB (Linux reports ru_maxrss in KiB). */
static double peak_rss_mib(void) {
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0)
        return -1;
    return (double)ru.ru_maxrss / 1024.0;
}

/* ---- main ------------------------------------------------------------------------------------ */

/* Returns 0 if dir holds the four files, else says what is missing and how to get it and
 * returns 1. (Malformed files are reported later, by the loader, with what is wrong.) */
static int data_missing(const char *dir) {
    static const char *const names[4] = {"train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                         "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"};
    struct stat st;
    char missing[256] = "";
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        fprintf(stderr, "mnist_mlp: no data: %s %s.\n", dir,
                errno == ENOENT ? "does not exist" : "is not a readable folder");
    } else {
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
        fprintf(stderr, "mnist_mlp: no data: %s has no %s.\n", dir, missing);
    }
    fprintf(stderr,
            "Fashion-MNIST comes with Debian; install it with\n"
            "    sudo apt-get install dataset-fashion-mnist\n"
            "which puts it in %s (the default folder).\n"
            "Or pass --data DIR, a folder with train-images-idx3-ubyte, train-labels-idx1-ubyte,\n"
            "t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte (gzip'ed or not; the original\n"
            "MNIST works too).\n",
            TG_FASHION_MNIST_DIR);
    return 1;
}

/* --bench: BENCH_WARMUP steps, then o->bench timed steps counting heap allocations; a JSON line. */
static int run_bench(const options *o, tg_tape *t, const model *m, tg_optim *opt, split *train,
                     tg_rng *shuffle) {
    const int64_t nb = split_batches(train);
    int64_t b = 0;
    double loss = 0, t0 = 0;
    long steps = BENCH_WARMUP + o->bench;
    int64_t samples = 0;
    const int can_count = alloc_counter_unavailable() == NULL;
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
    printf("{\"bench\":\"mnist_mlp\",\"threads\":%d,\"batch\":%d,\"optim\":\"%s\",\"steps\":%ld,"
           "\"samples_per_s\":%.1f,\"peak_rss_mib\":%.1f,\"allocs_per_step\":%s,"
           "\"final_loss\":%.4f}\n",
           o->threads, o->batch, o->sgd ? "sgd" : "adam", o->bench, (double)samples / secs,
           peak_rss_mib(), allocs, loss);
    return 0;
}

/* --eval: the test accuracy of a model saved by --checkpoint. */
static int run_eval(const options *o) {
    int rc = 1;
    model m = {0};
    evaluator ev = {0};
    tg_tape *t = tg_tape_new();
    tg_idx_dataset *test = tg_idx_dataset_load_dir(o->data, 0);
    if (!test || !t) {
        fprintf(stderr, "mnist_mlp: cannot load the test set: %s\n", tg_last_errmsg());
        goto done;
    }
    const int64_t features = tg_idx_dataset_features(test), n = tg_idx_dataset_size(test);
    m.mean = 0;
    m.inv_std = 1;
    if (model_init(&m, features, o->seed) || model_stat_tensors(&m) ||
        evaluator_init(&ev, features, n))
        goto done;
    if (tg_checkpoint_load(o->eval, m.saved, 8, NULL) != TG_OK) {
        fprintf(stderr, "mnist_mlp: --eval: %s\n", tg_last_errmsg());
        goto done;
    }
    const float std = *(const float *)tg_tensor_cdata(m.saved[7]);
    m.mean = *(const float *)tg_tensor_cdata(m.saved[6]);
    m.inv_std = std > 0 ? 1 / std : 1.0f;
    double acc;
    if (evaluate(t, &m, test, &ev, &acc))
        goto done;
    printf("%s: test accuracy %.2f%% on the %lld test images of %s\n", o->eval, 100 * acc,
           (long long)n, o->data);
    rc = 0;
done:
    tg_tape_free(t);
    model_free(&m);
    tg_idx_dataset_free(test);
    evaluator_free(&ev);
    return rc;
}

/* What --state saves besides the model: the run's own counters, as one f64 tensor "run.stats":
 * the best test accuracy so far, its epoch, the sum of the losses of the current epoch's batches
 * done so far, and the training time (s). */
enum { STAT_BEST, STAT_BEST_EPOCH, STAT_SUM_LOSS, STAT_TRAIN_TIME, N_STATS };

/* Saves the training state: the model (m->saved and stats), the optimizer, the shuffling
 * generator as it was before the current epoch's shuffle, `epochs_done` and `batches_done`. */
static int save_state(const options *o, model *m, tg_tensor *stats, tg_optim *opt,
                      const tg_rng *epoch_rng, int64_t epochs_done, int64_t batches_done) {
    tg_tensor *params[9];
    memcpy(params, m->saved, sizeof m->saved);
    params[8] = stats;
    tg_data_position pos = {.seed = o->seed + SHUFFLE_STREAM,
                            .epoch = epochs_done,
                            .cursor = batches_done,
                            .rng = *epoch_rng};
    tg_train_state ts = {.params = params, .n_params = 9, .optim = opt, .data = &pos};
    if (tg_train_state_save(o->state, &ts) != TG_OK) {
        fprintf(stderr, "mnist_mlp: --state: %s\n", tg_last_errmsg());
        return -1;
    }
    return 0;
}
#ifdef TG_HAVE_MPI
#include "mnist_dist.h" /* --dist: dist_main, data-parallel over MPI ranks */
#endif

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
    if (o.dist) {
#ifdef TG_HAVE_MPI
        return dist_main(&o, &argc, &argv);
#else
        fprintf(stderr,
                "%s: --dist: built without MPI (apt-get install libopenmpi-dev, then "
                "re-run cmake)\n",
                argv[0]);
        return 2;
#endif
    }

    int rc = 1;
    model m = {0};
    split train = {0};
    tg_idx_dataset *test = NULL;
    evaluator ev = {0};
    tg_tape *t = NULL;
    tg_optim *opt = NULL;
    tg_tensor *stats = tg_tensor_new(TG_F64, 1, (const int64_t[]){N_STATS});
    tg_tensor_set_name(stats, "run.stats");
    const int quiet = o.bench > 0; /* bench mode: stdout is the JSON line only */
    double start = now_seconds();
    if (split_init(&train, o.data, 1, o.batch))
        goto done;
    const int64_t features = tg_idx_dataset_features(train.ds);
    test = tg_idx_dataset_load_dir(o.data, 0);
    if (!test) {
        fprintf(stderr, "mnist_mlp: cannot load the test set: %s\n", tg_last_errmsg());
        goto done;
    }
    if (tg_idx_dataset_features(test) != features || tg_idx_dataset_size(test) < 1) {
        fprintf(stderr, "%s: the test images have %lld pixels, the training images %lld\n", o.data,
                (long long)tg_idx_dataset_features(test), (long long)features);
        goto done;
    }
    const int64_t n_test = tg_idx_dataset_size(test);
    if (model_init(&m, features, o.seed) ||
        evaluator_init(&ev, features, train.n > n_test ? train.n : n_test))
        goto done;
    if (model_set_standardization(&m, train.ds))
        goto done;
    int64_t n_params = 0;
    for (int i = 0; i < 6; i++)
        n_params += tg_tensor_numel(m.params[i]);
    char halving[48] = "";
    if (o.halve_every > 0)
        snprintf(halving, sizeof halving, ", halved every %d epoch%s", o.halve_every,
                 o.halve_every == 1 ? "" : "s");
    if (!quiet)
        printf("data:  %s: %lld training and %lld test images of %lld pixels (loaded in %.1f s)\n"
               "       standardized: x = (pixel / 255 - %.4f) / %.4f, the training set's mean and "
               "std\n"
               "model: %lld-256-128-%d ReLU MLP, %lld parameters; %s (lr %g%s), batch %lld,\n"
               "       seed %llu, %d thread%s\n"
               "After each epoch: the mean training loss of its batches, then the accuracy on all\n"
               "training and all test images.\n",
               o.data, (long long)train.n, (long long)n_test, (long long)features,
               now_seconds() - start, m.mean, 1 / m.inv_std, (long long)features, N_CLASSES,
               (long long)n_params, o.sgd ? "SGD with momentum 0.9" : "Adam", o.lr, halving,
               (long long)train.batch, o.seed, o.threads, o.threads == 1 ? "" : "s");
    tg_optim_config cfg = tg_optim_defaults(o.sgd ? TG_OPTIM_MOMENTUM : TG_OPTIM_ADAM, o.lr);
    /* Big steps early find a good region fast; smaller ones later settle into it instead of
     * jittering around it (worth about half a point of test accuracy here). */
    if (o.halve_every > 0) {
        cfg.decay_every = (int64_t)o.halve_every * split_batches(&train);
        cfg.decay_factor = 0.5;
    }
    opt = tg_optim_new(&cfg, m.params, 6);
    t = tg_tape_new();
    if (!opt || !t) {
        fprintf(stderr, "setup: %s\n", tg_last_errmsg());
        goto done;
    }
    tg_rng shuffle, epoch_rng;
    tg_rng_seed(&shuffle, o.seed + SHUFFLE_STREAM);
    double *st = tg_tensor_data(stats);
    int first_epoch = 1;
    int64_t first_batch = 0;
    if (o.resume && !quiet) {
        tg_tensor *params[9];
        memcpy(params, m.saved, sizeof m.saved);
        params[8] = stats;
        tg_data_position pos;
        tg_train_state ts = {.params = params, .n_params = 9, .optim = opt, .data = &pos};
        if (!stats || tg_train_state_load(o.resume, &ts) != TG_OK) {
            fprintf(stderr, "mnist_mlp: --resume: %s\n", tg_last_errmsg());
            goto done;
        }
        /* Replay the data order of the epochs done; it must arrive where the file says. */
        split_replay(&train, &shuffle, o.seed + SHUFFLE_STREAM, pos.epoch);
        if (pos.seed != o.seed + SHUFFLE_STREAM || pos.cursor > split_batches(&train) ||
            memcmp(&shuffle, &pos.rng, sizeof shuffle) != 0) {
            fprintf(stderr,
                    "mnist_mlp: --resume: %s is the state of another run (other --seed or "
                    "--batch?)\n",
                    o.resume);
            goto done;
        }
        first_epoch = (int)pos.epoch + 1;
        first_batch = pos.cursor;
        printf("resumed from %s: %lld epochs and %lld batches done, %lld steps\n", o.resume,
               (long long)pos.epoch, (long long)pos.cursor, (long long)tg_optim_steps(opt));
    } else if (stats) {
        st[STAT_BEST] = -1;
    }
    if (!stats) {
        fprintf(stderr, "setup: %s\n", tg_last_errmsg());
        goto done;
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
    double best = st[STAT_BEST], train_time = st[STAT_TRAIN_TIME];
    int best_epoch = (int)st[STAT_BEST_EPOCH];
    const double run_start = now_seconds();
    for (int epoch = first_epoch; epoch <= o.epochs; epoch++) {
        epoch_rng = shuffle; /* the epoch's permutation seed, for --state */
        split_shuffle(&train, &shuffle);
        p.epoch = epoch;
        p.t0 = p.last_draw = now_seconds();
        const int64_t b0 = epoch == first_epoch ? first_batch : 0;
        double sum_loss = b0 ? st[STAT_SUM_LOSS] : 0;
        for (int64_t b = b0; b < p.total; b++) {
            tg_tensor *x, *y;
            double loss;
            if (split_batch(&train, b, &x, &y) || train_step(t, &m, opt, x, y, &loss)) {
                progress_abort(&p);
                goto done;
            }
            sum_loss += loss;
            progress_update(&p, b + 1, sum_loss / (double)(b + 1));
            if (o.state_every > 0 && (b + 1) % o.state_every == 0 && b + 1 < p.total) {
                st[STAT_BEST] = best;
                st[STAT_BEST_EPOCH] = best_epoch;
                st[STAT_SUM_LOSS] = sum_loss;
                st[STAT_TRAIN_TIME] = train_time;
                if (save_state(&o, &m, stats, opt, &epoch_rng, epoch - 1, b + 1)) {
                    progress_abort(&p);
                    goto done;
                }
            }
        }
        const double secs = now_seconds() - p.t0;
        train_time += secs;
        progress_measuring(&p);
        /* Accuracy in file order, over the whole training set too: the running figure of
         * the epoch would mix many versions of the weights. */
        double train_acc, test_acc;
        if (evaluate(t, &m, train.ds, &ev, &train_acc) || evaluate(t, &m, test, &ev, &test_acc)) {
            progress_abort(&p);
            goto done;
        }
        progress_end(&p);
        char took[32];
        fmt_duration(took, sizeof took, secs);
        printf("epoch %2d/%d  loss %.4f  train acc %5.2f%%  test acc %5.2f%%  (%s, %.0f samples/s)",
               epoch, o.epochs, sum_loss / (double)p.total, 100 * train_acc, 100 * test_acc, took,
               (double)train.n / secs);
        if (test_acc > best) {
            best = test_acc;
            best_epoch = epoch;
            if (o.checkpoint) {
                if (tg_checkpoint_save(o.checkpoint, m.saved, 8, NULL) != TG_OK) {
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
            st[STAT_SUM_LOSS] = 0;
            st[STAT_TRAIN_TIME] = train_time;
            if (save_state(&o, &m, stats, opt, &shuffle, epoch, 0))
                goto done;
        }
    }
    char total[32], training[32];
    fmt_duration(total, sizeof total, now_seconds() - run_start);
    fmt_duration(training, sizeof training, train_time);
    printf("done: best test accuracy %.2f%% after epoch %d; %s in all (%s training, the rest "
           "measuring accuracy)\n",
           100 * best, best_epoch, total, training);
    if (o.checkpoint)
        printf("the best model (epoch %d, test accuracy %.2f%%) is in %s:\n"
               "  safetensors with fc1.W fc1.b fc2.W fc2.b fc3.W fc3.b, and input.mean input.std\n"
               "  for x = (pixel / 255 - mean) / std; read it back with tg_checkpoint_load\n",
               best_epoch, 100 * best, o.checkpoint);
    else
        printf("no model was saved (add --checkpoint PATH to keep the best one)\n");
    rc = 0;
done:
    tg_tape_free(t);
    tg_optim_free(opt);
    tg_tensor_free(stats);
    model_free(&m);
    split_free(&train);
    tg_idx_dataset_free(test);
    evaluator_free(&ev);
    return rc;
}
