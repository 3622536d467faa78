/* mnist_dist.h -- `mnist_mlp --dist`: the same training, data-parallel over MPI ranks
 * (dist/tapegrad_mpi.h). Included by mnist_mlp.c, after its model, data and evaluation helpers,
 * when the build found MPI (TG_HAVE_MPI); kept in its own file so that mnist_mlp.c changes by a
 * few lines only.
 *
 *     mpirun -np 2 build/examples/mnist_mlp --dist [--dist-fast] [--dist-blocking] [flags]
 *
 * Every rank loads the data and builds the model; rank 0's initial weights are broadcast. Each
 * epoch every rank draws the same permutation (--seed and the epoch number), cuts it into global
 * batches of --batch images, and takes its slice of each (tg_mpi_shard): the global batch, and so
 * the learning rate, mean the same as in one process, whatever the number of ranks. Gradients are
 * averaged in buckets sent during backward; the accuracy is measured on each rank's share of the
 * images and summed. Rank 0 alone prints and writes the checkpoint. */
#include <tapegrad_mpi.h>

/* Batch tensors for the few shard sizes an epoch has (its full batches and the last one). */
typedef struct shard_tensors {
    int64_t rows[4];
    tg_tensor *x[4], *y[4];
} shard_tensors;

static int shard_get(shard_tensors *s, int64_t rows, int64_t features, tg_tensor **x,
                     tg_tensor **y) {
    for (int i = 0; i < 4; i++) {
        if (!s->x[i]) {
            s->rows[i] = rows;
            s->x[i] = tg_tensor_new(TG_F32, 2, (const int64_t[]){rows, features});
            s->y[i] = tg_tensor_new(TG_I32, 1, (const int64_t[]){rows});
        }
        if (s->rows[i] == rows) {
            *x = s->x[i];
            *y = s->y[i];
            return *x && *y ? 0 : -1;
        }
    }
    return -1;
}

static void shard_tensors_free(shard_tensors *s) {
    for (int i = 0; i < 4; i++) {
        tg_tensor_free(s->x[i]);
        tg_tensor_free(s->y[i]);
    }
}

/* Accuracy over ds: this rank evaluates its slice of the images, the counts are summed. */
static int dist_evaluate(tg_tape *t, const model *m, const tg_idx_dataset *ds, evaluator *e,
                         double *acc) {
    const int64_t n = tg_idx_dataset_size(ds);
    const int64_t *mine;
    const int64_t count = tg_mpi_shard(tg_mpi_rank(), tg_mpi_world_size(), e->ident, n, &mine);
    const int64_t first = mine ? mine - e->ident : 0;
    const int64_t F = tg_idx_dataset_features(ds);
    double correct = 0;
    tg_status st = TG_OK;
    char msg[512] = "";
    for (int64_t from = first; from < first + count && st == TG_OK; from += EVAL_BATCH) {
        const int64_t rows = first + count - from < EVAL_BATCH ? first + count - from : EVAL_BATCH;
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
        const double a = logits ? tg_accuracy(logits, y) : -1;
        if (a < 0) {
            st = TG_ERR_STATE;
            snprintf(msg, sizeof msg, "evaluate: %s",
                     tg_tape_status(t) != TG_OK ? tg_tape_errmsg(t) : tg_last_errmsg());
        } else {
            correct += (double)llround(a * (double)rows);
        }
        if (x != e->x) {
            tg_tensor_free(x);
            tg_tensor_free(y);
        }
    }
    if (tg_mpi_agree(st, msg) != TG_OK || tg_mpi_sum(&correct, 1) != TG_OK) {
        if (tg_mpi_rank() == 0)
            fprintf(stderr, "mnist_mlp --dist: %s\n", tg_mpi_errmsg());
        return -1;
    }
    *acc = correct / (double)n;
    return 0;
}

/* One data-parallel step on this rank's slice `mine` (rows of the global batch of n). */
static int dist_step(tg_tape *t, const model *m, tg_optim *opt, tg_mpi_dp *dp, split *train,
                     shard_tensors *st_, const int64_t *mine, int64_t rows, int64_t n,
                     double *loss) {
    tg_status st = TG_OK;
    char msg[512] = "";
    double l_value = 0;
    tg_optim_zero_grad(opt);
    tg_mpi_dp_begin(dp, rows, n);
    if (rows > 0) {
        tg_tensor *x = NULL, *y = NULL;
        if (shard_get(st_, rows, tg_idx_dataset_features(train->ds), &x, &y) ||
            tg_idx_dataset_batch(train->ds, mine, rows, x, y) != TG_OK) {
            st = TG_ERR_NOMEM;
            snprintf(msg, sizeof msg, "batch: %s", tg_last_errmsg());
        } else {
            model_standardize(m, x);
            tg_tape_reset(t);
            tg_tensor *l = tg_softmax_cross_entropy(t, model_logits(t, m, x), y);
            st = tg_backward(t, l);
            if (st != TG_OK)
                snprintf(msg, sizeof msg, "train: %s", tg_tape_errmsg(t));
            else
                l_value = tg_tensor_item(l);
        }
    }
    if (tg_mpi_dp_wait(dp, st, msg, &l_value) != TG_OK) {
        if (tg_mpi_rank() == 0)
            fprintf(stderr, "mnist_mlp --dist: %s\n", tg_mpi_errmsg());
        return -1;
    }
    st = tg_optim_step(opt); /* the same gradients everywhere: all ranks fail alike, or none */
    if (st != TG_OK) {
        if (tg_mpi_rank() == 0)
            fprintf(stderr, "train: %s%s\n", tg_last_errmsg(),
                    st == TG_ERR_NONFINITE ? " -- training diverged; try a smaller --lr" : "");
        return -2;
    }
    *loss = l_value;
    return 0;
}

static int dist_main(const options *o, int *argc, char ***argv) {
    if (tg_mpi_init(argc, argv) != TG_OK) {
        fprintf(stderr, "mnist_mlp --dist: %s\n", tg_mpi_errmsg());
        return 1;
    }
    const int rank = tg_mpi_rank(), world = tg_mpi_world_size();
    const int quiet = o->bench > 0 || rank != 0;
    int rc = 1;
    model m = {0};
    split train = {0};
    tg_idx_dataset *test = NULL;
    evaluator ev = {0};
    shard_tensors shards = {0};
    tg_tape *t = NULL;
    tg_optim *opt = NULL;
    tg_mpi_dp *dp = NULL;
    /* Loading can fail on one rank only (its copy of the files): every rank learns it. */
    tg_status st = TG_OK;
    char msg[512] = "";
    if (split_init(&train, o->data, 1, o->batch) || !(test = tg_idx_dataset_load_dir(o->data, 0)) ||
        model_init(&m, tg_idx_dataset_features(train.ds), o->seed) ||
        evaluator_init(&ev, tg_idx_dataset_features(train.ds),
                       train.n > tg_idx_dataset_size(test) ? train.n : tg_idx_dataset_size(test)) ||
        model_set_standardization(&m, train.ds)) {
        st = TG_ERR_IO;
        snprintf(msg, sizeof msg, "setup: %s", tg_last_errmsg());
    }
    if (tg_mpi_agree(st, msg) != TG_OK) {
        if (rank == 0)
            fprintf(stderr, "mnist_mlp --dist: %s\n", tg_mpi_errmsg());
        goto done;
    }
    tg_mpi_config cfg = tg_mpi_defaults();
    cfg.mode = o->dist_fast ? TG_MPI_FAST : TG_MPI_DETERMINISTIC;
    cfg.overlap = !o->dist_blocking;
    dp = tg_mpi_dp_new(&cfg, m.params, 6);
    tg_optim_config ocfg = tg_optim_defaults(o->sgd ? TG_OPTIM_MOMENTUM : TG_OPTIM_ADAM, o->lr);
    if (o->halve_every > 0) {
        ocfg.decay_every = (int64_t)o->halve_every * split_batches(&train);
        ocfg.decay_factor = 0.5;
    }
    opt = tg_optim_new(&ocfg, m.params, 6);
    t = tg_tape_new();
    if (!dp || tg_mpi_dp_broadcast(dp) != TG_OK || !opt || !t || tg_mpi_dp_attach(dp, t) != TG_OK) {
        if (rank == 0)
            fprintf(stderr, "mnist_mlp --dist: %s\n",
                    opt && t ? tg_mpi_errmsg() : tg_last_errmsg());
        goto done;
    }
    const int64_t nb = split_batches(&train);
    if (!quiet)
        printf("dist:  %d rank%s x %d thread%s, %s gradient sum, global batch %lld (%lld per "
               "rank), %s (lr %g), seed %llu\n",
               world, world == 1 ? "" : "s", o->threads, o->threads == 1 ? "" : "s",
               o->dist_fast ? "MPI_Allreduce (fast)" : "rank-order (deterministic)",
               (long long)train.batch, (long long)((train.batch + world - 1) / world),
               o->sgd ? "SGD with momentum 0.9" : "Adam", o->lr, o->seed);
    if (o->bench > 0) {
        /* BENCH_WARMUP steps, then o->bench timed ones; the clock starts when all ranks do. */
        double loss = 0, t0 = 0;
        tg_mpi_stats s0 = {0};
        for (long i = 0; i < BENCH_WARMUP + o->bench; i++) {
            if (i == BENCH_WARMUP) {
                tg_mpi_agree(TG_OK, NULL);
                t0 = now_seconds();
                s0 = tg_mpi_dp_stats(dp);
            }
            const int64_t b = i % nb;
            if (b == 0)
                tg_mpi_permutation(train.order, train.n, o->seed, i / nb);
            const int64_t from = b * train.batch;
            const int64_t n = train.n - from < train.batch ? train.n - from : train.batch;
            const int64_t *mine;
            const int64_t rows = tg_mpi_shard(rank, world, train.order + from, n, &mine);
            if (dist_step(t, &m, opt, dp, &train, &shards, mine, rows, n, &loss))
                goto done;
        }
        const double secs = now_seconds() - t0;
        const tg_mpi_stats s = tg_mpi_dp_stats(dp);
        const double steps = (double)o->bench;
        /* Each rank's time blocked in the wait: the last rank to arrive waits only for the
         * transfer, the others also for it (the spread is imbalance, e.g. a descheduled rank). */
        enum { MAX_RANKS = 256 };
        double waits[MAX_RANKS] = {0};
        if (rank < MAX_RANKS)
            waits[rank] = 1e3 * (s.wait_seconds - s0.wait_seconds) / steps;
        tg_mpi_sum(waits, MAX_RANKS);
        double wmin = waits[0], wmax = waits[0];
        for (int r = 1; r < world && r < MAX_RANKS; r++) {
            wmin = waits[r] < wmin ? waits[r] : wmin;
            wmax = waits[r] > wmax ? waits[r] : wmax;
        }
        if (rank == 0)
            printf("{\"bench\":\"mnist_mlp_dist\",\"ranks\":%d,\"threads\":%d,\"batch\":%d,"
                   "\"mode\":\"%s\",\"overlap\":%d,\"steps\":%ld,\"samples_per_s\":%.1f,"
                   "\"step_ms\":%.3f,"
                   "\"wait_ms_per_step\":%.3f,\"wait_ms_per_step_min_rank\":%.3f,"
                   "\"wait_ms_per_step_max_rank\":%.3f,\"launch_ms_per_step\":%.3f,"
                   "\"comm_share\":%.3f,\"buckets\":%lld,\"early_buckets_per_step\":%.2f,"
                   "\"bytes_per_step\":%.0f,\"final_loss\":%.4f}\n",
                   world, o->threads, o->batch, o->dist_fast ? "fast" : "deterministic",
                   !o->dist_blocking, o->bench, steps * (double)train.batch / secs,
                   1e3 * secs / steps, waits[0], wmin, wmax,
                   1e3 * (s.launch_seconds - s0.launch_seconds) / steps,
                   (s.wait_seconds - s0.wait_seconds + s.launch_seconds - s0.launch_seconds) / secs,
                   (long long)s.buckets, (double)(s.early_buckets - s0.early_buckets) / steps,
                   s.bytes_per_step, loss);
        rc = 0;
        goto done;
    }
    double best = -1;
    int best_epoch = 0;
    for (int epoch = 1; epoch <= o->epochs; epoch++) {
        tg_mpi_permutation(train.order, train.n, o->seed, epoch);
        const double t0 = now_seconds();
        double sum_loss = 0;
        for (int64_t b = 0; b < nb; b++) {
            const int64_t from = b * train.batch;
            const int64_t n = train.n - from < train.batch ? train.n - from : train.batch;
            const int64_t *mine;
            const int64_t rows = tg_mpi_shard(rank, world, train.order + from, n, &mine);
            double loss = 0;
            if (dist_step(t, &m, opt, dp, &train, &shards, mine, rows, n, &loss))
                goto done;
            sum_loss += loss;
        }
        const double secs = now_seconds() - t0;
        double train_acc, test_acc;
        if (dist_evaluate(t, &m, train.ds, &ev, &train_acc) ||
            dist_evaluate(t, &m, test, &ev, &test_acc))
            goto done;
        if (!quiet) {
            char took[32];
            fmt_duration(took, sizeof took, secs);
            printf("epoch %2d/%d  loss %.4f  train acc %5.2f%%  test acc %5.2f%%  (%s, %.0f "
                   "samples/s on %d ranks)",
                   epoch, o->epochs, sum_loss / (double)nb, 100 * train_acc, 100 * test_acc, took,
                   (double)train.n / secs, world);
        }
        if (test_acc > best) {
            best = test_acc;
            best_epoch = epoch;
            if (o->checkpoint) {
                if (tg_mpi_checkpoint_save(o->checkpoint, m.saved, 8, NULL) != TG_OK) {
                    if (!quiet)
                        printf("\n");
                    if (rank == 0)
                        fprintf(stderr, "checkpoint: %s\n", tg_mpi_errmsg());
                    goto done;
                }
                if (!quiet)
                    printf("  best so far: saved");
            }
        }
        if (!quiet) {
            printf("\n");
            fflush(stdout);
        }
    }
    if (!quiet)
        printf("done: best test accuracy %.2f%% after epoch %d (%d ranks)\n", 100 * best,
               best_epoch, world);
    rc = 0;
done:
    tg_mpi_dp_free(dp);
    tg_tape_free(t);
    tg_optim_free(opt);
    shard_tensors_free(&shards);
    model_free(&m);
    split_free(&train);
    tg_idx_dataset_free(test);
    evaluator_free(&ev);
    tg_mpi_finalize();
    return rc;
}
