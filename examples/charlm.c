/* charlm.c -- a tiny GPT learns to spell: a character-level transformer on the words of
 * /usr/share/dict/words (Debian: wamerican), as in Karpathy's makemore.
 *
 * The words: lowercase a-z only, deduplicated, at most 15 letters, shuffled with --seed, 90% for
 * training and 10% for validation. 27 tokens: '.' (0) marks a word's start and end, a-z are 1-26.
 * A word is one sequence of the context of 16: the input is '.' + word, the target word + '.', and
 * the positions after the end are padding that the loss ignores (a zero target row).
 *
 * The model: token + position embeddings of 64; 2 pre-LayerNorm blocks, each a 4-head causal
 * self-attention (fused q,k,v projection, softmax_causal) and a 64-256-64 GELU MLP, both residual;
 * a final layer norm; a linear map to the 27 tokens; cross-entropy at every position; AdamW with a
 * warm-up and a cosine decay, gradients clipped to norm 1.
 *
 * The closing lines put the validation loss next to two baselines computed here on the same
 * split: a uniform guess (ln 27) and the bigram count model. It then samples words, counts those
 * that are not in the dictionary, and draws (gnuplot) the loss curves and the attention of each
 * head of the last block on a validation word. Run `charlm --help` for the flags. */
#define _POSIX_C_SOURCE 200809L /* clock_gettime, mkdir */

#include <tapegrad.h>

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

enum { V = 27, CTX = 16, EMB = 64, HEADS = 4, HD = EMB / HEADS, MLP = 256, LAYERS = 2 };
enum { MAX_LETTERS = CTX - 1, BENCH_WARMUP = 20, EVAL_BATCH = 256, MAX_PARAMS = 64 };

#define WORDS_PATH "/usr/share/dict/words"
#define ADAMW_LR 2e-3 /* the default --lr of each optimizer */
#define SGD_LR 0.05

/* ---- Options --------------------------------------------------------------------------------- */

typedef struct options {
    long steps, sample, bench, eval_every, batch;
    int threads;
    int sgd; /* --optim sgd: SGD with momentum 0.9 instead of AdamW */
    double lr;
    int lr_given;
    unsigned long long seed;
    const char *checkpoint, *out, *words;
} options;

static const options defaults = {.steps = 3000,
                                 .sample = 20,
                                 .bench = 0,
                                 .eval_every = 250,
                                 .batch = 32,
                                 .threads = 1,
                                 .seed = 1,
                                 .checkpoint = NULL,
                                 .out = "charlm_out",
                                 .words = WORDS_PATH};

static void usage(const char *argv0) {
    printf("usage: %s [flags]\n"
           "A tiny GPT (2 blocks, 4 heads, embedding 64, context 16) learns to spell the words of\n"
           "%s, then samples new ones and draws its loss curves and attention.\n\n"
           "  --steps N         training steps (default %ld); 0 with --checkpoint loads the model\n"
           "                    from the checkpoint instead of training\n"
           "  --batch B         words per step (default %ld)\n"
           "  --optim NAME      adamw (default; weight decay 0.01) or sgd (SGD with momentum 0.9)\n"
           "  --lr LR           peak learning rate (default %g for adamw, %g for sgd)\n"
           "  --eval-every N    train and validation loss every N steps (default %ld)\n"
           "  --threads T       threads for the kernels (default %d)\n"
           "  --seed S          seed of the split, the weights, the batches and the samples "
           "(default %llu)\n"
           "  --checkpoint PATH save the trained model there (safetensors); with --steps 0, load\n"
           "  --sample N        words to sample at the end (default %ld)\n"
           "  --out DIR         folder for the pictures and their data (default %s)\n"
           "  --words PATH      the word list (default %s)\n"
           "  --bench N         benchmark: time N training steps after %d warm-up steps and print\n"
           "                    one JSON line (tokens/s counts the %d positions of a step)\n"
           "  --help            this text\n",
           argv0, WORDS_PATH, defaults.steps, defaults.batch, ADAMW_LR, SGD_LR, defaults.eval_every,
           defaults.threads, defaults.seed, defaults.sample, defaults.out, WORDS_PATH, BENCH_WARMUP,
           (int)defaults.batch * CTX);
}

/* Parses argv into o; returns 0, 1 after --help, or -1 on a bad flag (with a message). */
static int parse_args(int argc, char **argv, options *o) {
    *o = defaults;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(argv[0]);
            return 1;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "%s: unknown flag or missing value: %s (try --help)\n", argv[0], a);
            return -1;
        }
        const char *v = argv[++i];
        char *end = NULL;
        if (!strcmp(a, "--checkpoint"))
            o->checkpoint = v;
        else if (!strcmp(a, "--optim")) {
            if (strcmp(v, "adamw") && strcmp(v, "sgd")) {
                fprintf(stderr, "%s: --optim takes adamw or sgd, got '%s'\n", argv[0], v);
                return -1;
            }
            o->sgd = !strcmp(v, "sgd");
        } else if (!strcmp(a, "--out"))
            o->out = v;
        else if (!strcmp(a, "--words"))
            o->words = v;
        else if (!strcmp(a, "--steps"))
            o->steps = strtol(v, &end, 10);
        else if (!strcmp(a, "--batch"))
            o->batch = strtol(v, &end, 10);
        else if (!strcmp(a, "--eval-every"))
            o->eval_every = strtol(v, &end, 10);
        else if (!strcmp(a, "--sample"))
            o->sample = strtol(v, &end, 10);
        else if (!strcmp(a, "--bench"))
            o->bench = strtol(v, &end, 10);
        else if (!strcmp(a, "--threads"))
            o->threads = (int)strtol(v, &end, 10);
        else if (!strcmp(a, "--lr")) {
            o->lr = strtod(v, &end);
            o->lr_given = 1;
        } else if (!strcmp(a, "--seed"))
            o->seed = strtoull(v, &end, 10);
        else {
            fprintf(stderr, "%s: unknown flag %s (try --help)\n", argv[0], a);
            return -1;
        }
        if (end && (*end || end == v)) {
            fprintf(stderr, "%s: %s takes a number, got '%s'\n", argv[0], a, v);
            return -1;
        }
    }
    if (!o->lr_given)
        o->lr = o->sgd ? SGD_LR : ADAMW_LR;
    if (o->steps < 0 || o->batch < 1 || o->batch > 4096 || o->eval_every < 1 || o->sample < 0 ||
        o->bench < 0 || o->threads < 1 || o->threads > 256 || !(o->lr > 0)) {
        fprintf(stderr,
                "%s: need --steps >= 0, --batch in 1..4096, --eval-every >= 1, --sample >= 0, "
                "--bench >= 0, --threads in 1..256, --lr > 0\n",
                argv[0]);
        return -1;
    }
    if (o->steps == 0 && !o->checkpoint && !o->bench) {
        fprintf(stderr, "%s: --steps 0 needs --checkpoint PATH to load a model from\n", argv[0]);
        return -1;
    }
    return 0;
}

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- The words ------------------------------------------------------------------------------- */

typedef struct words {
    char **w;   /* sorted, unique: the dictionary (for "is it new?") */
    int64_t n;  /* how many */
    char **all; /* the same words, shuffled: train = all[0, n_train), validation = the rest */
    int64_t n_train;
} words;

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int is_word(const char *s) {
    size_t n = 0;
    for (; s[n]; n++)
        if (s[n] < 'a' || s[n] > 'z')
            return 0;
    return n >= 1 && n <= MAX_LETTERS;
}

static void words_free(words *d) {
    for (int64_t i = 0; d->w && i < d->n; i++)
        free(d->w[i]);
    free(d->w);
    free(d->all);
}

/* Reads, filters, deduplicates, shuffles and splits. Returns 0, or -1 with a message. */
static int words_load(const char *path, tg_rng *rng, words *d) {
    memset(d, 0, sizeof *d);
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "cannot open %s: %s\n(Debian: sudo apt-get install wamerican)\n", path,
                strerror(errno));
        return -1;
    }
    char line[256];
    int64_t cap = 0;
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\r\n")] = '\0';
        if (!is_word(line))
            continue;
        if (d->n == cap) {
            cap = cap ? 2 * cap : 4096;
            char **w = realloc(d->w, sizeof *w * (size_t)cap);
            if (!w)
                goto nomem;
            d->w = w;
        }
        if (!(d->w[d->n] = strdup(line)))
            goto nomem;
        d->n++;
    }
    fclose(f);
    f = NULL;
    qsort(d->w, (size_t)d->n, sizeof *d->w, cmp_str);
    int64_t u = 0;
    for (int64_t i = 0; i < d->n; i++) {
        if (u > 0 && !strcmp(d->w[u - 1], d->w[i]))
            free(d->w[i]);
        else
            d->w[u++] = d->w[i];
    }
    d->n = u;
    if (d->n < 10) {
        fprintf(stderr, "%s has only %lld usable words (a-z, 1 to %d letters)\n", path,
                (long long)d->n, MAX_LETTERS);
        return -1;
    }
    if (!(d->all = malloc(sizeof *d->all * (size_t)d->n)))
        goto nomem;
    memcpy(d->all, d->w, sizeof *d->all * (size_t)d->n);
    for (int64_t i = d->n - 1; i > 0; i--) { /* Fisher-Yates */
        const int64_t j = (int64_t)tg_rng_below(rng, (uint64_t)i + 1);
        char *s = d->all[i];
        d->all[i] = d->all[j];
        d->all[j] = s;
    }
    d->n_train = d->n * 9 / 10;
    return 0;
nomem:
    if (f)
        fclose(f);
    fprintf(stderr, "out of memory reading %s\n", path);
    return -1;
}

static int in_dictionary(const words *d, const char *s) {
    return bsearch(&s, d->w, (size_t)d->n, sizeof *d->w, cmp_str) != NULL;
}

static int tok(char c) { return c == '.' ? 0 : c - 'a' + 1; }
static char chr(int t) { return t == 0 ? '.' : (char)('a' + t - 1); }

/* The bigram count model of the training words (counts + 1, as makemore), and its loss per token
 * on the validation words: the mean of -log P(next | current) over every transition, the final
 * '.' included -- exactly the targets the transformer is scored on. */
static double bigram_loss(const words *d) {
    static double count[V][V];
    for (int a = 0; a < V; a++)
        for (int b = 0; b < V; b++)
            count[a][b] = 1;
    for (int64_t i = 0; i < d->n_train; i++) {
        int prev = 0;
        for (const char *s = d->all[i];; s++) {
            const int t = *s ? tok(*s) : 0;
            count[prev][t] += 1;
            if (!*s)
                break;
            prev = t;
        }
    }
    double nll = 0;
    int64_t n = 0;
    for (int64_t i = d->n_train; i < d->n; i++) {
        int prev = 0;
        for (const char *s = d->all[i];; s++) {
            const int t = *s ? tok(*s) : 0;
            double row = 0;
            for (int b = 0; b < V; b++)
                row += count[prev][b];
            nll -= log(count[prev][t] / row);
            n++;
            if (!*s)
                break;
            prev = t;
        }
    }
    return nll / (double)n;
}

/* ---- The model ------------------------------------------------------------------------------- */

typedef struct block {
    tg_tensor *ln1_w, *ln1_b, *qkv_w, *qkv_b, *proj_w, *proj_b;
    tg_tensor *ln2_w, *ln2_b, *fc_w, *fc_b, *out_w, *out_b;
} block;

typedef struct model {
    tg_tensor *wte, *wpe, *lnf_w, *lnf_b, *head_w, *head_b;
    block blk[LAYERS];
    tg_tensor *params[MAX_PARAMS];
    char names[MAX_PARAMS][32];
    const char *name_of[MAX_PARAMS];
    int n;
    int64_t numel;
} model;

enum init_kind { INIT_ZERO, INIT_ONE, INIT_NORMAL, INIT_NORMAL_PROJ };

/* A parameter, GPT-2's initialization: weights N(0, 0.02), the projections into the residual
 * stream N(0, 0.02 / sqrt(2 layers)), biases 0, layer-norm gains 1. */
static tg_tensor *param(model *m, const char *name, int rank, const int64_t *shape,
                        enum init_kind init, tg_rng *rng) {
    tg_tensor *p = tg_tensor_new(TG_F32, rank, shape);
    if (!p || m->n == MAX_PARAMS)
        return NULL;
    if (init == INIT_ONE)
        tg_init_constant(p, 1.0);
    else if (init == INIT_NORMAL)
        tg_init_normal(p, 0.0, 0.02, rng);
    else if (init == INIT_NORMAL_PROJ)
        tg_init_normal(p, 0.0, 0.02 / sqrt(2.0 * LAYERS), rng);
    tg_tensor_set_requires_grad(p, 1);
    snprintf(m->names[m->n], sizeof m->names[m->n], "%s", name);
    tg_tensor_set_name(p, name);
    m->name_of[m->n] = m->names[m->n];
    m->params[m->n++] = p;
    m->numel += tg_tensor_numel(p);
    return p;
}

static void model_free(model *m) {
    for (int i = 0; i < m->n; i++)
        tg_tensor_free(m->params[i]);
}

static int model_init(model *m, tg_rng *rng) {
    memset(m, 0, sizeof *m);
    char nm[32];
    m->wte = param(m, "wte", TG_SHAPE(V, EMB), INIT_NORMAL, rng);
    m->wpe = param(m, "wpe", TG_SHAPE(CTX, EMB), INIT_NORMAL, rng);
    for (int l = 0; l < LAYERS; l++) {
        block *b = &m->blk[l];
#define P(field, init, ...)                                                                        \
    (snprintf(nm, sizeof nm, "h%d.%s", l, #field), b->field = param(m, nm, __VA_ARGS__, init, rng))
        P(ln1_w, INIT_ONE, TG_SHAPE(EMB));
        P(ln1_b, INIT_ZERO, TG_SHAPE(EMB));
        P(qkv_w, INIT_NORMAL, TG_SHAPE(3 * EMB, EMB));
        P(qkv_b, INIT_ZERO, TG_SHAPE(3 * EMB));
        P(proj_w, INIT_NORMAL_PROJ, TG_SHAPE(EMB, EMB));
        P(proj_b, INIT_ZERO, TG_SHAPE(EMB));
        P(ln2_w, INIT_ONE, TG_SHAPE(EMB));
        P(ln2_b, INIT_ZERO, TG_SHAPE(EMB));
        P(fc_w, INIT_NORMAL, TG_SHAPE(MLP, EMB));
        P(fc_b, INIT_ZERO, TG_SHAPE(MLP));
        P(out_w, INIT_NORMAL_PROJ, TG_SHAPE(EMB, MLP));
        P(out_b, INIT_ZERO, TG_SHAPE(EMB));
#undef P
    }
    m->lnf_w = param(m, "ln_f.w", TG_SHAPE(EMB), INIT_ONE, rng);
    m->lnf_b = param(m, "ln_f.b", TG_SHAPE(EMB), INIT_ZERO, rng);
    m->head_w = param(m, "head.w", TG_SHAPE(V, EMB), INIT_NORMAL, rng);
    m->head_b = param(m, "head.b", TG_SHAPE(V), INIT_ZERO, rng);
    for (int i = 0; i < m->n; i++)
        if (!m->params[i])
            return -1;
    return m->head_b ? 0 : -1;
}

/* x W^T + b for x [N,in], W [out,in]. */
static tg_tensor *linear(tg_tape *t, tg_tensor *x, tg_tensor *W, tg_tensor *b) {
    return tg_add(t, tg_matmul_bt(t, x, W), b);
}

/* [B*CTX, EMB] columns [at, at+EMB) -> [B, HEADS, CTX, HD] */
static tg_tensor *heads(tg_tape *t, tg_tensor *qkv, int at, int64_t B) {
    static const int to_heads[4] = {0, 2, 1, 3};
    return tg_permute(t,
                      tg_reshape(t, tg_slice(t, qkv, 1, at, EMB, 1), TG_SHAPE(B, CTX, HEADS, HD)),
                      4, to_heads);
}

/* The logits [B*CTX, V] of idx [B, CTX]. att (may be NULL) receives the last block's attention
 * probabilities [B, HEADS, CTX, CTX] (a tape tensor). */
static tg_tensor *forward(tg_tape *t, const model *m, tg_tensor *idx, int64_t B, tg_tensor **att) {
    tg_tensor *x =
        tg_reshape(t, tg_add(t, tg_embedding(t, m->wte, idx), m->wpe), TG_SHAPE(B * CTX, EMB));
    for (int l = 0; l < LAYERS; l++) {
        const block *b = &m->blk[l];
        tg_tensor *qkv =
            linear(t, tg_layer_norm(t, x, b->ln1_w, b->ln1_b, 1, 1e-5), b->qkv_w, b->qkv_b);
        tg_tensor *q = heads(t, qkv, 0, B), *k = heads(t, qkv, EMB, B),
                  *v = heads(t, qkv, 2 * EMB, B);
        tg_tensor *a =
            tg_softmax_causal(t, tg_scale(t, tg_matmul_batched(t, q, k, 0, 1), 1 / sqrt(HD)));
        if (att && l == LAYERS - 1)
            *att = a;
        tg_tensor *y =
            tg_reshape(t, tg_transpose_axes(t, tg_bmm(t, a, v), 1, 2), TG_SHAPE(B * CTX, EMB));
        x = tg_add(t, x, linear(t, y, b->proj_w, b->proj_b));
        tg_tensor *h = tg_layer_norm(t, x, b->ln2_w, b->ln2_b, 1, 1e-5);
        x = tg_add(t, x,
                   linear(t, tg_gelu(t, linear(t, h, b->fc_w, b->fc_b), 0), b->out_w, b->out_b));
    }
    x = tg_layer_norm(t, x, m->lnf_w, m->lnf_b, 1, 1e-5);
    return linear(t, x, m->head_w, m->head_b);
}

/* ---- Batches --------------------------------------------------------------------------------- */

typedef struct batch {
    int64_t B;
    tg_tensor *idx;     /* i32 [B, CTX]: '.' then the letters, then '.' padding */
    tg_tensor *targets; /* f32 [B*CTX, V]: one-hot of the next token; zero rows past the end */
    int64_t n_real;     /* positions with a target */
} batch;

static int batch_new(batch *b, int64_t B) {
    b->B = B;
    b->idx = tg_tensor_new(TG_I32, TG_SHAPE(B, CTX));
    b->targets = tg_tensor_new(TG_F32, TG_SHAPE(B * CTX, V));
    return b->idx && b->targets ? 0 : -1;
}

static void batch_free(batch *b) {
    tg_tensor_free(b->idx);
    tg_tensor_free(b->targets);
}

/* Fills the batch with words w[0..n) (n <= B; rows past n are all padding). */
static void batch_fill(batch *b, char *const *w, int64_t n) {
    int32_t *idx = tg_tensor_data(b->idx);
    float *tg = tg_tensor_data(b->targets);
    memset(idx, 0, sizeof *idx * (size_t)(b->B * CTX));
    memset(tg, 0, sizeof *tg * (size_t)(b->B * CTX * V));
    b->n_real = 0;
    for (int64_t r = 0; r < n; r++) {
        const char *s = w[r];
        const int len = (int)strlen(s);
        for (int p = 0; p <= len; p++) { /* input '.' s[0] .. s[len-1]; target s[0] .. '.' */
            idx[r * CTX + p] = p == 0 ? 0 : tok(s[p - 1]);
            tg[(r * CTX + p) * V + (p < len ? tok(s[p]) : 0)] = 1.0f;
        }
        b->n_real += len + 1;
    }
}

/* The loss per real position: the mean over all B*CTX rows rescaled to the real ones. */
static tg_tensor *loss_of(tg_tape *t, tg_tensor *logits, const batch *b) {
    return tg_scale(t, tg_softmax_cross_entropy(t, logits, b->targets),
                    (double)(b->B * CTX) / (double)(b->n_real ? b->n_real : 1));
}

/* The mean loss per token over words w[0..n), in batches of EVAL_BATCH. Returns NAN on error. */
static double evaluate(tg_tape *t, const model *m, char *const *w, int64_t n, batch *eb) {
    double sum = 0;
    int64_t real = 0;
    tg_tape_set_training(t, 0);
    for (int64_t i = 0; i < n; i += EVAL_BATCH) {
        const int64_t k = n - i < EVAL_BATCH ? n - i : EVAL_BATCH;
        batch_fill(eb, w + i, k);
        tg_tape_reset(t);
        tg_tensor *l = loss_of(t, forward(t, m, eb->idx, eb->B, NULL), eb);
        if (!l) {
            fprintf(stderr, "%s\n", tg_tape_errmsg(t));
            return NAN;
        }
        sum += tg_tensor_item(l) * (double)eb->n_real;
        real += eb->n_real;
    }
    tg_tape_set_training(t, 1);
    return sum / (double)real;
}

/* ---- Sampling -------------------------------------------------------------------------------- */

/* One new word into buf (up to MAX_LETTERS letters): '.' then a letter at a time from the
 * softmax of the last position's logits, until '.' comes out. Returns 0 or -1. */
static int sample_word(tg_tape *t, const model *m, tg_rng *rng, char *buf) {
    int32_t ctx[CTX] = {0};
    int len = 0;
    for (int p = 0; p < CTX; p++) {
        tg_tensor *idx = tg_tensor_from(TG_I32, TG_SHAPE(1, CTX), ctx);
        tg_tape_reset(t);
        tg_tensor *logits = forward(t, m, idx, 1, NULL);
        const int64_t c = logits ? tg_sample_logits(logits, p, 1.0, rng) : -1;
        tg_tensor_free(idx);
        if (c < 0) {
            fprintf(stderr, "sampling failed: %s%s\n", tg_tape_errmsg(t), tg_last_errmsg());
            return -1;
        }
        if (c == 0 || len == MAX_LETTERS)
            break;
        buf[len++] = chr((int)c);
        if (p + 1 < CTX)
            ctx[p + 1] = (int32_t)c;
    }
    buf[len] = '\0';
    return 0;
}

/* ---- Progress: a redrawn bar on a terminal, plain lines otherwise ---------------------------- */

typedef struct progress {
    int tty, drawn;
    long total;
    double t0, last_draw;
} progress;

static void progress_update(progress *p, long done, double loss, double lr) {
    const double now = now_seconds();
    if (!p->tty || (done != p->total && now - p->last_draw < 0.1))
        return;
    p->last_draw = now;
    enum { WIDTH = 24 };
    char bar[WIDTH + 1];
    const int fill = (int)(WIDTH * done / p->total);
    for (int i = 0; i < WIDTH; i++)
        bar[i] = i < fill ? '#' : '.';
    bar[WIDTH] = '\0';
    const double el = now - p->t0, left = done ? el * (double)(p->total - done) / (double)done : 0;
    printf("\rstep [%s] %ld/%ld  loss %.4f  lr %.2e  %.0f s left\033[K", bar, done, p->total, loss,
           lr, left);
    fflush(stdout);
    p->drawn = 1;
}

static void progress_clear(progress *p) {
    if (p->tty && p->drawn)
        printf("\r\033[K");
    p->drawn = 0;
}

/* ---- Pictures -------------------------------------------------------------------------------- */

static const char *gp_preamble = "if (strstrt(GPVAL_TERMINALS, 'pngcairo') > 0) {\n"
                                 "  set terminal pngcairo size %d,%d enhanced font 'sans,11'\n"
                                 "} else {\n"
                                 "  set terminal png size %d,%d\n"
                                 "}\n"
                                 "set output '%s'\n";

static FILE *open_out(const char *dir, const char *name) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    if (!f)
        fprintf(stderr, "cannot write %s: %s\n", path, strerror(errno));
    return f;
}

typedef struct curve {
    long *step;
    double *train, *val;
    int n, cap;
} curve;

static int curve_add(curve *c, long step, double train, double val) {
    if (c->n == c->cap) {
        const int cap = c->cap ? 2 * c->cap : 64;
        long *s = realloc(c->step, sizeof *s * (size_t)cap);
        if (s)
            c->step = s;
        double *a = realloc(c->train, sizeof *a * (size_t)cap);
        if (a)
            c->train = a;
        double *b = realloc(c->val, sizeof *b * (size_t)cap);
        if (b)
            c->val = b;
        if (!s || !a || !b)
            return -1;
        c->cap = cap;
    }
    c->step[c->n] = step;
    c->train[c->n] = train;
    c->val[c->n++] = val;
    return 0;
}

/* loss.png: the training and validation loss against steps, the two baselines as lines. */
static int write_loss_plot(const char *dir, const curve *c, double bigram) {
    FILE *f = open_out(dir, "loss.dat");
    if (!f)
        return -1;
    fprintf(f, "# step train_loss validation_loss (nats per token)\n");
    for (int i = 0; i < c->n; i++)
        fprintf(f, "%ld %.6f %.6f\n", c->step[i], c->train[i], c->val[i]);
    fclose(f);
    if (!(f = open_out(dir, "loss.gp")))
        return -1;
    fprintf(f, "# Written by charlm; run `gnuplot loss.gp` in this folder to redraw.\n");
    fprintf(f, gp_preamble, 800, 520, 800, 520, "loss.png");
    fprintf(f,
            "set title 'charlm: a 2-block GPT on %s'\n"
            "set xlabel 'training step'\nset ylabel 'cross-entropy (nats per token)'\n"
            "set grid\nset key top right\nset yrange [1.4:3.5]\n"
            "plot 'loss.dat' using 1:2 with linespoints lw 2 pt 7 ps 0.6 title 'training "
            "(mean since the last point)', \\\n"
            "     'loss.dat' using 1:3 with linespoints lw 2 pt 5 ps 0.6 title 'validation', \\\n"
            "     %.6f with lines dt 2 lw 2 title sprintf('bigram counts (%%.3f)', %.6f), \\\n"
            "     log(27) with lines dt 3 lw 2 title sprintf('uniform, ln 27 (%%.3f)', log(27))\n",
            WORDS_PATH, bigram, bigram);
    fclose(f);
    return 0;
}

/* attention.png: the last block's attention of each head on `word`, rows = the position that
 * looks (the query), columns = the positions it looks at; zero above the diagonal. */
static int write_attention_plot(const char *dir, const char *word, const tg_tensor *att) {
    const int L = (int)strlen(word) + 1; /* '.' + letters */
    FILE *f = open_out(dir, "attention.dat");
    if (!f)
        return -1;
    for (int h = 0; h < HEADS; h++) { /* one block per head, separated by two blank lines */
        for (int i = 0; i < L; i++) {
            for (int j = 0; j < L; j++)
                fprintf(f, "%s%.5f", j ? " " : "",
                        tg_tensor_get(att, ((int64_t)h * CTX + i) * CTX + j));
            fprintf(f, "\n");
        }
        fprintf(f, "\n\n");
    }
    fclose(f);
    if (!(f = open_out(dir, "attention.gp")))
        return -1;
    fprintf(f, "# Written by charlm; run `gnuplot attention.gp` in this folder to redraw.\n");
    fprintf(f, gp_preamble, 900, 860, 900, 860, "attention.png");
    char tics[512];
    size_t n = 0;
    for (int i = 0; i < L && n < sizeof tics; i++)
        n += (size_t)snprintf(tics + n, sizeof tics - n, "%s\"%c\" %d", i ? ", " : "",
                              i == 0 ? '.' : word[i - 1], i);
    fprintf(f,
            "set multiplot layout 2,2 title \"attention of the last block on '.%s' (row: the "
            "position predicting the next letter; column: where it looks)\" font ',12'\n"
            "set xtics (%s)\nset ytics (%s)\nset yrange [%d.5:-0.5] reverse\n"
            "set xrange [-0.5:%d.5]\nset cbrange [0:1]\nset palette defined (0 'white', 1 "
            "'#2060b0')\nset size square\nunset key\n",
            word, tics, tics, L - 1, L - 1);
    for (int h = 0; h < HEADS; h++)
        fprintf(f, "set title 'head %d'\nplot 'attention.dat' index %d matrix with image\n", h + 1,
                h);
    fprintf(f, "unset multiplot\n");
    fclose(f);
    return 0;
}

static int run_gnuplot(const char *dir, const char *script) {
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "cd '%s' && gnuplot '%s'", dir, script);
    return system(cmd);
}

/* ---- Training -------------------------------------------------------------------------------- */

/* One step on batch b: forward, backward, clip, AdamW. Returns the loss, or NAN (message out). */
static double train_step(tg_tape *t, const model *m, tg_optim *opt, const batch *b) {
    tg_tape_reset(t);
    tg_optim_zero_grad(opt);
    tg_tensor *loss = loss_of(t, forward(t, m, b->idx, b->B, NULL), b);
    if (tg_backward(t, loss) != TG_OK) {
        fprintf(stderr, "%s\n", tg_tape_errmsg(t));
        return NAN;
    }
    if (tg_clip_grad_norm(m->params, m->n, 1.0) < 0 || tg_optim_step(opt) != TG_OK) {
        fprintf(stderr, "%s\n", tg_last_errmsg());
        return NAN;
    }
    return tg_tensor_item(loss);
}

static void random_batch(batch *b, const words *d, tg_rng *rng) {
    char *w[4096];
    for (int64_t r = 0; r < b->B; r++)
        w[r] = d->all[tg_rng_below(rng, (uint64_t)d->n_train)];
    batch_fill(b, w, b->B);
}

int main(int argc, char **argv) {
    options o;
    const int pa = parse_args(argc, argv, &o);
    if (pa != 0)
        return pa > 0 ? 0 : 2;
    if (tg_set_num_threads(o.threads) != TG_OK) {
        fprintf(stderr, "%s\n", tg_last_errmsg());
        return 2;
    }
    /* One seed, four independent streams: split, weights, batches, samples. */
    tg_rng rng_split, rng_init, rng_batch, rng_sample;
    tg_rng_seed(&rng_split, o.seed);
    tg_rng_seed(&rng_init, o.seed + 1);
    tg_rng_seed(&rng_batch, o.seed + 2);
    tg_rng_seed(&rng_sample, o.seed + 3);

    int status = 1;
    words d = {0};
    model m;
    batch b = {0}, eb = {0};
    tg_tape *t = tg_tape_new();
    tg_optim *opt = NULL;
    curve c = {0};
    memset(&m, 0, sizeof m);
    if (!t || words_load(o.words, &rng_split, &d) != 0)
        goto done;
    if (model_init(&m, &rng_init) != 0 || batch_new(&b, o.batch) != 0 ||
        batch_new(&eb, EVAL_BATCH) != 0) {
        fprintf(stderr, "out of memory\n");
        goto done;
    }
    tg_optim_config cfg = tg_optim_defaults(o.sgd ? TG_OPTIM_MOMENTUM : TG_OPTIM_ADAMW, o.lr);
    cfg.weight_decay = o.sgd ? 0 : 0.01;
    cfg.warmup_steps = o.steps > 1000 ? 100 : o.steps / 10;
    cfg.total_steps = o.steps > cfg.warmup_steps ? o.steps : 0;
    cfg.min_lr = o.lr / 10;
    if (o.bench) {
        cfg.warmup_steps = cfg.total_steps = 0;
        cfg.min_lr = 0;
    }
    if (!(opt = tg_optim_new(&cfg, m.params, m.n))) {
        fprintf(stderr, "%s\n", tg_last_errmsg());
        goto done;
    }

    if (o.bench) { /* one JSON line: the time of a training step */
        for (int i = 0; i < BENCH_WARMUP; i++) {
            random_batch(&b, &d, &rng_batch);
            if (isnan(train_step(t, &m, opt, &b)))
                goto done;
        }
        const double t0 = now_seconds();
        for (long i = 0; i < o.bench; i++) {
            random_batch(&b, &d, &rng_batch);
            if (isnan(train_step(t, &m, opt, &b)))
                goto done;
        }
        const double s = (now_seconds() - t0) / (double)o.bench;
        printf("{\"bench\": \"charlm_train_step\", \"optim\": \"%s\", \"threads\": %d, \"kernel\": "
               "\"%s\", \"batch\": "
               "%ld, \"context\": %d, \"params\": %lld, \"steps\": %ld, \"ms_per_step\": %.3f, "
               "\"tokens_per_s\": %.0f}\n",
               o.sgd ? "sgd" : "adamw", o.threads, tg_kernel_name(), o.batch, CTX,
               (long long)m.numel, o.bench, 1e3 * s, (double)(o.batch * CTX) / s);
        status = 0;
        goto done;
    }

    const double bigram = bigram_loss(&d);
    printf("%lld words of %s (a-z, 1 to %d letters): %lld for training, %lld for validation\n",
           (long long)d.n, o.words, MAX_LETTERS, (long long)d.n_train,
           (long long)(d.n - d.n_train));
    printf("model: %d blocks, %d heads, embedding %d, MLP %d, context %d: %lld parameters\n",
           LAYERS, HEADS, EMB, MLP, CTX, (long long)m.numel);

    if (o.steps == 0) {
        if (tg_checkpoint_load(o.checkpoint, m.params, m.n, m.name_of) != TG_OK) {
            fprintf(stderr, "%s\n", tg_last_errmsg());
            goto done;
        }
        printf("loaded %s\n", o.checkpoint);
    } else {
        printf("training: %ld steps of %ld words, %s lr %g (warm-up %lld, cosine to %g), "
               "%d thread%s\n",
               o.steps, o.batch, o.sgd ? "SGD with momentum 0.9" : "AdamW", o.lr,
               (long long)cfg.warmup_steps, cfg.min_lr, o.threads, o.threads == 1 ? "" : "s");
        progress p = {.tty = isatty(STDOUT_FILENO), .total = o.steps, .t0 = now_seconds()};
        double run = 0;
        long run_n = 0;
        for (long s = 0; s < o.steps; s++) {
            const double lr = tg_optim_lr(opt);
            random_batch(&b, &d, &rng_batch);
            const double l = train_step(t, &m, opt, &b);
            if (isnan(l)) {
                progress_clear(&p);
                goto done;
            }
            run += l;
            run_n++;
            progress_update(&p, s + 1, run / (double)run_n, lr);
            if ((s + 1) % o.eval_every == 0 || s + 1 == o.steps) {
                const double val = evaluate(t, &m, d.all + d.n_train, d.n - d.n_train, &eb);
                if (isnan(val))
                    goto done;
                progress_clear(&p);
                printf("step %5ld  train loss %.4f  validation loss %.4f  (%.0f s)\n", s + 1,
                       run / (double)run_n, val, now_seconds() - p.t0);
                fflush(stdout);
                if (curve_add(&c, s + 1, run / (double)run_n, val) != 0)
                    goto done;
                run = 0;
                run_n = 0;
            }
        }
        printf("trained in %.1f s (%.1f ms per step)\n", now_seconds() - p.t0,
               1e3 * (now_seconds() - p.t0) / (double)o.steps);
        if (o.checkpoint) {
            if (tg_checkpoint_save(o.checkpoint, m.params, m.n, m.name_of) != TG_OK) {
                fprintf(stderr, "%s\n", tg_last_errmsg());
                goto done;
            }
            printf("saved the model to %s\n", o.checkpoint);
        }
    }

    const double val =
        c.n ? c.val[c.n - 1] : evaluate(t, &m, d.all + d.n_train, d.n - d.n_train, &eb);
    if (isnan(val))
        goto done;

    /* Samples, and how many of them the dictionary does not have. */
    int fresh = 0;
    if (o.sample > 0) {
        printf("\n%ld sampled words (* = not in the dictionary):\n", o.sample);
        for (long i = 0; i < o.sample; i++) {
            char w[CTX + 1];
            if (sample_word(t, &m, &rng_sample, w) != 0)
                goto done;
            const int is_new = !in_dictionary(&d, w);
            fresh += is_new;
            printf("  %-16s%s\n", w[0] ? w : "(empty)", is_new ? " *" : "");
        }
    }

    /* Pictures: the loss curves, and the last block's attention on a validation word. */
    const char *word = d.all[d.n_train];
    for (int64_t i = d.n_train; i < d.n; i++)
        if (strlen(d.all[i]) >= 9) {
            word = d.all[i];
            break;
        }
    tg_tensor *att = NULL;
    batch_fill(&eb, (char *const *)&word, 1);
    tg_tape_reset(t);
    int pictures = mkdir(o.out, 0777) == 0 || errno == EEXIST;
    if (!pictures)
        fprintf(stderr, "cannot create the folder %s: %s\n", o.out, strerror(errno));
    if (pictures && forward(t, &m, eb.idx, eb.B, &att) && att &&
        write_attention_plot(o.out, word, att) == 0 &&
        (c.n == 0 || write_loss_plot(o.out, &c, bigram) == 0)) {
        if (system("gnuplot --version > /dev/null 2>&1") != 0)
            printf("\ngnuplot was not found (sudo apt-get install gnuplot-nox): no pictures\n");
        else if (run_gnuplot(o.out, "attention.gp") != 0 ||
                 (c.n && run_gnuplot(o.out, "loss.gp") != 0))
            fprintf(stderr, "gnuplot failed on the scripts in %s\n", o.out);
        else if (c.n)
            printf("\npictures: %s/loss.png, %s/attention.png (the attention on '%s')\n", o.out,
                   o.out, word);
        else
            printf("\npicture: %s/attention.png (the attention on '%s')\n", o.out, word);
    }

    printf("\nvalidation loss %.4f nats per token; baselines on the same split: bigram counts "
           "%.4f, uniform ln 27 = %.4f\n",
           val, bigram, log(27.0));
    if (o.sample > 0)
        printf("%d of %ld sampled words are not in the dictionary\n", fresh, o.sample);
    status = 0;
done:
    free(c.step);
    free(c.train);
    free(c.val);
    tg_optim_free(opt);
    batch_free(&b);
    batch_free(&eb);
    model_free(&m);
    if (d.w || d.all)
        words_free(&d);
    tg_tape_free(t);
    return status;
}
