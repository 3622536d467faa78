/* mpi_mismatch.c -- rank 1 builds a different parameter list: every rank must stop at
 * tg_mpi_dp_new with a message showing both lists, instead of hanging in a collective.
 *
 *     mpirun -np P mpi_mismatch shape|count
 *
 * shape: rank 1's hidden layer has 17 units instead of 16; count: rank 1 passes 3 of the 4
 * parameters. Exits 3 on every rank when the mismatch was caught (rank 0 prints the message),
 * 0 if it was not (a failure of the test). */
#include "mlp.h"

int main(int argc, char **argv) {
    if (tg_mpi_init(&argc, &argv) != TG_OK) {
        fprintf(stderr, "mpi_mismatch: %s\n", tg_mpi_errmsg());
        return 1;
    }
    const int rank = tg_mpi_rank();
    const int count = argc > 1 && !strcmp(argv[1], "count");
    mlp m = {0};
    if (mlp_init(&m, rank == 1 && !count ? N_HIDDEN + 1 : N_HIDDEN, 1)) {
        tg_mpi_finalize();
        return 1;
    }
    tg_mpi_dp *dp = tg_mpi_dp_new(NULL, m.params, rank == 1 && count ? 3 : 4);
    int rc = 0;
    if (!dp) {
        if (rank == 0)
            fprintf(stderr, "mpi_mismatch: stopped: %s\n", tg_mpi_errmsg());
        rc = 3;
    } else if (rank == 0) {
        printf("mpi_mismatch: the mismatch was not detected\n");
    }
    tg_mpi_dp_free(dp);
    mlp_free(&m);
    tg_mpi_finalize();
    return rc;
}
