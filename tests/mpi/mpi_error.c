/* mpi_error.c -- an error on rank 1 stops every rank with rank 1's message, instead of a
 * deadlock.
 *
 *     mpirun -np P mpi_error tape|file|checkpoint
 *
 * tape: at step 3 rank 1's batch has the wrong number of features, its tape fails, and it hands
 * the error to tg_mpi_dp_wait like any step's result; file: rank 1 cannot read its data file
 * (tg_idx_load of a missing file) and says so at tg_mpi_agree; checkpoint: resuming from a
 * missing file (rank 0 reads, every rank must stop). Every rank exits 4 when it stopped with the
 * failing rank's message (printed by rank 0), 0 if no error reached it (a failure of the test). */
#include "mlp.h"

enum { FAIL_STEP = 3 };

static int train(int rank, int world) {
    data d;
    data_make(&d);
    mlp m = {0};
    if (mlp_init(&m, N_HIDDEN, 1))
        return 1;
    context c = {.d = &d, .m = &m};
    tg_mpi_dp *dp = tg_mpi_dp_new(NULL, m.params, 4);
    tg_tape *t = tg_tape_new();
    tg_optim *opt = make_optim(&m);
    int rc = 1;
    if (!dp || !t || !opt || tg_mpi_dp_broadcast(dp) != TG_OK || tg_mpi_dp_attach(dp, t) != TG_OK)
        goto done;
    int64_t perm[N_ROWS], batch[BATCH];
    for (int k = 0; k < 10; k++) {
        const int64_t n = global_batch(k, perm, batch);
        const int64_t *mine;
        const int64_t rows = tg_mpi_shard(rank, world, batch, n, &mine);
        tg_optim_zero_grad(opt);
        tg_mpi_dp_begin(dp, rows, n);
        tg_tape_reset(t);
        const int n_in = rank == 1 && k == FAIL_STEP ? N_IN + 1 : N_IN;
        tg_status st = tg_backward(t, shard_loss_n(t, mine, rows, &c, n_in));
        st = tg_mpi_dp_wait(dp, st, tg_tape_errmsg(t), NULL);
        if (st != TG_OK) {
            if (rank == 0)
                fprintf(stderr, "mpi_error: stopped at step %d: %s\n", k, tg_mpi_errmsg());
            rc = 4;
            goto done;
        }
        tg_optim_step(opt);
    }
    if (rank == 0)
        printf("mpi_error: no error reached rank 0\n");
    rc = 0;
done:
    tg_mpi_dp_free(dp);
    tg_tape_free(t);
    tg_optim_free(opt);
    context_free(&c);
    mlp_free(&m);
    return rc;
}

int main(int argc, char **argv) {
    if (tg_mpi_init(&argc, &argv) != TG_OK) {
        fprintf(stderr, "mpi_error: %s\n", tg_mpi_errmsg());
        return 1;
    }
    const int rank = tg_mpi_rank(), world = tg_mpi_world_size();
    const char *mode = argc > 1 ? argv[1] : "tape";
    int rc = 0;
    if (!strcmp(mode, "tape")) {
        rc = train(rank, world);
    } else if (!strcmp(mode, "file")) {
        tg_idx *idx = rank == 1 ? tg_idx_load("/nonexistent/rank1-images.idx") : NULL;
        tg_status st = TG_OK;
        const char *msg = NULL;
        if (rank == 1 && !idx) {
            st = TG_ERR_IO;
            msg = tg_last_errmsg();
        }
        tg_idx_free(idx);
        if (tg_mpi_agree(st, msg) != TG_OK) {
            if (rank == 0)
                fprintf(stderr, "mpi_error: stopped loading the data: %s\n", tg_mpi_errmsg());
            rc = 4;
        } else if (rank == 0) {
            printf("mpi_error: no error reached rank 0\n");
        }
    } else {
        mlp m = {0};
        if (mlp_init(&m, N_HIDDEN, 1 + (uint64_t)rank))
            rc = 1;
        else if (tg_mpi_checkpoint_load("/nonexistent/model.safetensors", m.params, 4, NULL) !=
                 TG_OK) {
            if (rank == 1) /* this time rank 1 prints: it is rank 0's error */
                fprintf(stderr, "mpi_error: rank 1 stopped resuming: %s\n", tg_mpi_errmsg());
            rc = 4;
        }
        mlp_free(&m);
    }
    tg_mpi_finalize();
    return rc;
}
