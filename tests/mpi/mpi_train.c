/* mpi_train.c -- K training steps of a small MLP on P ranks, then rank 0 replays them in one
 * process and compares the parameters' bytes.
 *
 *     mpirun -np P mpi_train det|fast|det-blocking|fast-blocking [STEPS] [CHECKPOINT]
 *
 * (-blocking: tg_mpi_config.overlap = 0, blocking collectives in tg_mpi_dp_wait.)
 * det: the ranks' parameters must be bit-identical to tg_mpi_accumulate over the same P shards.
 * fast: MPI's allreduce sums in its own order, so they must agree within a tolerance (below).
 * Both: they must also agree within that tolerance with plain training on whole batches (one
 * shard: the same mean, a different order of the additions). With CHECKPOINT, rank 0 saves the
 * trained parameters there, every rank then loads them into freshly drawn ones
 * (tg_mpi_checkpoint_load), and every rank must hold the saved bytes.
 * Prints one line per check from rank 0; exits 0 when every check passed, 1 otherwise. */
#include "mlp.h"

#include <math.h>

/* Tolerance of the fast mode and of whole batches: float32 rounds each add to 2^-24 relative;
 * a gradient is a sum of ~BATCH terms, and STEPS momentum steps add up the differences, so
 * after 20 steps a few hundred ulps of a parameter of size ~1 is the expected scale. */
#define ATOL 1e-5
#define RTOL 1e-4

static int run_dist(mlp *m, tg_mpi_mode mode, int overlap, int steps, int rank, int world,
                    double *last_loss) {
    data d;
    data_make(&d);
    context c = {.d = &d, .m = m};
    tg_mpi_config cfg = tg_mpi_defaults();
    cfg.mode = mode;
    cfg.bucket_bytes = 256; /* several buckets, even for this model */
    cfg.overlap = overlap;
    tg_mpi_dp *dp = tg_mpi_dp_new(&cfg, m->params, 4);
    tg_tape *t = tg_tape_new();
    tg_optim *opt = make_optim(m);
    int rc = 1;
    if (!dp || !t || !opt) {
        fprintf(stderr, "rank %d: setup: %s\n", rank, dp ? tg_last_errmsg() : tg_mpi_errmsg());
        goto done;
    }
    if (tg_mpi_dp_broadcast(dp) != TG_OK || tg_mpi_dp_attach(dp, t) != TG_OK) {
        fprintf(stderr, "rank %d: %s\n", rank, tg_mpi_errmsg());
        goto done;
    }
    int64_t perm[N_ROWS], batch[BATCH];
    for (int k = 0; k < steps; k++) {
        const int64_t n = global_batch(k, perm, batch);
        const int64_t *mine;
        const int64_t rows = tg_mpi_shard(rank, world, batch, n, &mine);
        tg_optim_zero_grad(opt);
        tg_mpi_dp_begin(dp, rows, n);
        tg_status st = TG_OK;
        double loss = 0;
        if (rows > 0) {
            tg_tape_reset(t);
            tg_tensor *l = shard_loss(t, mine, rows, &c);
            st = tg_backward(t, l);
            loss = tg_tensor_item(l);
        }
        st = tg_mpi_dp_wait(dp, st, tg_tape_errmsg(t), &loss);
        if (st != TG_OK) {
            fprintf(stderr, "rank %d: step %d: %s\n", rank, k, tg_mpi_errmsg());
            goto done;
        }
        if (tg_optim_step(opt) != TG_OK) {
            fprintf(stderr, "rank %d: step %d: %s\n", rank, k, tg_last_errmsg());
            goto done;
        }
        *last_loss = loss;
    }
    rc = tg_mpi_dp_check(dp) == TG_OK ? 0 : 1;
    if (rc)
        fprintf(stderr, "rank %d: %s\n", rank, tg_mpi_errmsg());
done:
    tg_mpi_dp_free(dp);
    tg_tape_free(t);
    tg_optim_free(opt);
    context_free(&c);
    return rc;
}

/* The same steps in one process: each step's gradient from tg_mpi_accumulate over `world`
 * shards. */
static int run_reference(mlp *m, int steps, int world, double *last_loss) {
    data d;
    data_make(&d);
    context c = {.d = &d, .m = m};
    tg_tape *t = tg_tape_new();
    tg_optim *opt = make_optim(m);
    int rc = 1;
    if (!t || !opt)
        goto done;
    int64_t perm[N_ROWS], batch[BATCH];
    for (int k = 0; k < steps; k++) {
        const int64_t n = global_batch(k, perm, batch);
        if (tg_mpi_accumulate(t, m->params, 4, world, batch, n, shard_loss, &c, last_loss) !=
                TG_OK ||
            tg_optim_step(opt) != TG_OK) {
            fprintf(stderr, "reference: step %d: %s %s\n", k, tg_mpi_errmsg(), tg_last_errmsg());
            goto done;
        }
    }
    rc = 0;
done:
    tg_tape_free(t);
    tg_optim_free(opt);
    context_free(&c);
    return rc;
}

/* Compares a's parameters with b's: 1 if bit-identical, else 0 and *max_excess = the largest
 * |a - b| / (ATOL + RTOL |b|) (a value <= 1 is within tolerance). */
static int compare(const mlp *a, const mlp *b, double *max_excess, double *max_diff) {
    int same = 1;
    *max_excess = *max_diff = 0;
    for (int p = 0; p < 4; p++) {
        const float *x = tg_tensor_cdata(a->params[p]), *y = tg_tensor_cdata(b->params[p]);
        const int64_t n = tg_tensor_numel(a->params[p]);
        same &= memcmp(x, y, sizeof *x * (size_t)n) == 0;
        for (int64_t i = 0; i < n; i++) {
            const double diff = fabs((double)x[i] - (double)y[i]);
            const double excess = diff / (ATOL + RTOL * fabs((double)y[i]));
            *max_diff = diff > *max_diff ? diff : *max_diff;
            *max_excess = excess > *max_excess ? excess : *max_excess;
        }
    }
    return same;
}

int main(int argc, char **argv) {
    if (tg_mpi_init(&argc, &argv) != TG_OK) {
        fprintf(stderr, "mpi_train: %s\n", tg_mpi_errmsg());
        return 1;
    }
    const int rank = tg_mpi_rank(), world = tg_mpi_world_size();
    const char *mode = argc > 1 ? argv[1] : "";
    const int det = !strncmp(mode, "det", 3), overlap = !strstr(mode, "-blocking");
    if (strcmp(mode, "det") && strcmp(mode, "fast") && strcmp(mode, "det-blocking") &&
        strcmp(mode, "fast-blocking")) {
        if (rank == 0)
            fprintf(stderr,
                    "usage: mpirun -np P %s det|fast|det-blocking|fast-blocking [STEPS] "
                    "[CHECKPOINT]\n",
                    argv[0]);
        tg_mpi_finalize();
        return 2;
    }
    const int steps = argc > 2 ? atoi(argv[2]) : 20;
    const char *checkpoint = argc > 3 ? argv[3] : NULL;
    int failed = 0;

    /* Ranks other than 0 draw different initial weights: the broadcast must replace them. */
    mlp dist = {0};
    double dist_loss = 0;
    if (mlp_init(&dist, N_HIDDEN, 1 + (uint64_t)rank * 1000) ||
        run_dist(&dist, det ? TG_MPI_DETERMINISTIC : TG_MPI_FAST, overlap, steps, rank, world,
                 &dist_loss)) {
        mlp_free(&dist);
        tg_mpi_finalize();
        return 1;
    }

    if (rank == 0) {
        mlp shards = {0}, whole = {0};
        double shards_loss = 0, whole_loss = 0, excess, diff;
        if (mlp_init(&shards, N_HIDDEN, 1) || mlp_init(&whole, N_HIDDEN, 1) ||
            run_reference(&shards, steps, world, &shards_loss) ||
            run_reference(&whole, steps, 1, &whole_loss)) {
            failed = 1;
        } else {
            const int same = compare(&dist, &shards, &excess, &diff);
            const int ok = det ? same : excess <= 1;
            printf("%s: %s mode, %d ranks, %d steps: parameters %s the single-process "
                   "accumulation of the same %d shards (max |diff| %.3g, %s; last loss %.6f vs "
                   "%.6f)\n",
                   ok ? "PASS" : "FAIL", argv[1], world, steps,
                   same ? "bit-identical to"
                   : ok ? "within tolerance of"
                        : "DIFFER from",
                   world, diff, det ? "must be 0" : "tolerance 1e-5 + 1e-4 |p|", dist_loss,
                   shards_loss);
            failed |= !ok;
            compare(&dist, &whole, &excess, &diff);
            printf("%s: %s mode, %d ranks: parameters within tolerance of whole-batch training "
                   "in one process (max |diff| %.3g, max |diff| / (1e-5 + 1e-4 |p|) = %.3g)\n",
                   excess <= 1 ? "PASS" : "FAIL", argv[1], world, diff, excess);
            failed |= excess > 1;
        }
        mlp_free(&shards);
        mlp_free(&whole);
    }
    failed = tg_mpi_agree(failed ? TG_ERR_STATE : TG_OK, "the comparison failed") != TG_OK;

    if (checkpoint && !failed) {
        /* Rank 0 writes; every rank reads back into weights drawn afresh, differently per rank. */
        mlp fresh = {0};
        tg_status st = tg_mpi_checkpoint_save(checkpoint, dist.params, 4, NULL);
        if (st == TG_OK)
            st = mlp_init(&fresh, N_HIDDEN, 99 + (uint64_t)rank) ? TG_ERR_NOMEM : TG_OK;
        st = tg_mpi_agree(st, tg_mpi_errmsg());
        if (st == TG_OK)
            st = tg_mpi_checkpoint_load(checkpoint, fresh.params, 4, NULL);
        double excess, diff;
        const int same = st == TG_OK && compare(&fresh, &dist, &excess, &diff);
        st = tg_mpi_agree(same ? TG_OK : TG_ERR_STATE,
                          st != TG_OK ? tg_mpi_errmsg() : "the loaded parameters differ");
        if (rank == 0)
            printf("%s: resume on %d ranks: rank 0 saved %s, every rank loaded it and holds the "
                   "same bytes%s%s\n",
                   st == TG_OK ? "PASS" : "FAIL", world, checkpoint, st == TG_OK ? "" : ": ",
                   st == TG_OK ? "" : tg_mpi_errmsg());
        failed |= st != TG_OK;
        mlp_free(&fresh);
    }
    mlp_free(&dist);
    tg_mpi_finalize();
    return failed;
}
