/* mlp.h -- what the MPI test programs share: a small MLP on synthetic data, its mean loss over
 * a list of rows, and the training step on P ranks and in one process. Static functions: each
 * program includes it once. */
#ifndef TG_TESTS_MPI_MLP_H
#define TG_TESTS_MPI_MLP_H

#include <tapegrad_mpi.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { N_ROWS = 100, N_IN = 12, N_HIDDEN = 16, N_OUT = 3, BATCH = 24 };

typedef struct data {
    float x[N_ROWS * N_IN];
    int32_t y[N_ROWS];
} data;

typedef struct mlp {
    tg_linear *l1, *l2;
    tg_tensor *params[4];
    int n_hidden;
} mlp;

typedef struct context {
    const data *d;
    const mlp *m;
    tg_tensor *x, *y; /* the last shard's batch (freed by the next one, or by context_free) */
} context;

/* Points from a fixed Gaussian, labelled by the largest of three fixed linear scores. */
static inline void data_make(data *d) {
    tg_rng rng;
    tg_rng_seed(&rng, 7);
    float w[N_OUT][N_IN];
    for (int c = 0; c < N_OUT; c++)
        for (int j = 0; j < N_IN; j++)
            w[c][j] = (float)tg_rng_normal(&rng);
    for (int i = 0; i < N_ROWS; i++) {
        float best = -1e30f;
        for (int j = 0; j < N_IN; j++)
            d->x[i * N_IN + j] = (float)tg_rng_normal(&rng);
        for (int c = 0; c < N_OUT; c++) {
            float s = 0;
            for (int j = 0; j < N_IN; j++)
                s += w[c][j] * d->x[i * N_IN + j];
            if (s > best) {
                best = s;
                d->y[i] = c;
            }
        }
    }
}

static inline int mlp_init(mlp *m, int n_hidden, uint64_t seed) {
    tg_rng rng;
    tg_rng_seed(&rng, seed);
    m->n_hidden = n_hidden;
    m->l1 = tg_linear_new(TG_F32, N_IN, n_hidden, "l1", &rng);
    m->l2 = tg_linear_new(TG_F32, n_hidden, N_OUT, "l2", &rng);
    if (!m->l1 || !m->l2) {
        fprintf(stderr, "mlp_init: %s\n", tg_last_errmsg());
        return -1;
    }
    /* Non-zero biases, so that their bytes take part in the comparisons too. */
    tg_init_uniform(m->l1->b, -0.1, 0.1, &rng);
    tg_init_uniform(m->l2->b, -0.1, 0.1, &rng);
    tg_tensor *p[4] = {m->l1->W, m->l1->b, m->l2->W, m->l2->b};
    memcpy(m->params, p, sizeof p);
    return 0;
}

static inline void mlp_free(mlp *m) {
    tg_linear_free(m->l1);
    tg_linear_free(m->l2);
}

static inline void context_free(context *c) {
    tg_tensor_free(c->x);
    tg_tensor_free(c->y);
    c->x = c->y = NULL;
}

/* The mean cross-entropy over the rows `idx` (tg_mpi_loss_fn). `n_in` may differ from N_IN to
 * make the tape fail on purpose (mpi_error). */
static inline tg_tensor *shard_loss_n(tg_tape *t, const int64_t *idx, int64_t n, context *c,
                                      int n_in) {
    context_free(c);
    c->x = tg_tensor_new(TG_F32, 2, (const int64_t[]){n, n_in});
    c->y = tg_tensor_new(TG_I32, 1, (const int64_t[]){n});
    if (!c->x || !c->y)
        return NULL;
    float *x = tg_tensor_data(c->x);
    int32_t *y = tg_tensor_data(c->y);
    for (int64_t i = 0; i < n; i++) {
        for (int j = 0; j < n_in; j++)
            x[i * n_in + j] = c->d->x[idx[i] * N_IN + (j % N_IN)];
        y[i] = c->d->y[idx[i]];
    }
    tg_tensor *h = tg_tanh(t, tg_linear_forward(t, c->m->l1, c->x));
    return tg_softmax_cross_entropy(t, tg_linear_forward(t, c->m->l2, h), c->y);
}

static inline tg_tensor *shard_loss(tg_tape *t, const int64_t *idx, int64_t n, void *user) {
    return shard_loss_n(t, idx, n, user, N_IN);
}

/* The global batch of step k: batches of BATCH rows (the last of an epoch smaller) over the
 * epoch's permutation. Writes it into batch and returns its length. */
static inline int64_t global_batch(int64_t k, int64_t *perm, int64_t *batch) {
    const int64_t per_epoch = (N_ROWS + BATCH - 1) / BATCH;
    const int64_t epoch = k / per_epoch, b = k % per_epoch;
    tg_mpi_permutation(perm, N_ROWS, 42, epoch);
    const int64_t from = b * BATCH, n = N_ROWS - from < BATCH ? N_ROWS - from : BATCH;
    memcpy(batch, perm + from, sizeof *batch * (size_t)n);
    return n;
}

/* SGD with momentum: the optimizer both paths use. */
static inline tg_optim *make_optim(mlp *m) {
    tg_optim_config cfg = tg_optim_defaults(TG_OPTIM_MOMENTUM, 0.1);
    return tg_optim_new(&cfg, m->params, 4);
}

#endif /* TG_TESTS_MPI_MLP_H */
