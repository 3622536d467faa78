/* checkpoint.c -- one file for all ranks: rank 0 writes it (tg_checkpoint_save is atomic) and
 * reads it back; the others receive the values. */
#include "mpi_internal.h"

tg_status tg_mpi_checkpoint_save(const char *path, tg_tensor *const *params, int n,
                                 const char *const *names) {
    MPI_Comm comm = tg__mpi_comm();
    if (comm == MPI_COMM_NULL)
        return tg__mpi_fail(TG_ERR_STATE, "tg_mpi_checkpoint_save: call tg_mpi_init first");
    tg_status st = TG_OK;
    if (tg_mpi_rank() == 0)
        st = tg_checkpoint_save(path, params, n, names);
    return tg__mpi_exchange(comm, st, st == TG_OK ? NULL : tg_last_errmsg(), 0, NULL);
}

tg_status tg_mpi_checkpoint_load(const char *path, tg_tensor *const *params, int n,
                                 const char *const *names) {
    MPI_Comm comm = tg__mpi_comm();
    if (comm == MPI_COMM_NULL)
        return tg__mpi_fail(TG_ERR_STATE, "tg_mpi_checkpoint_load: call tg_mpi_init first");
    tg_status st = TG_OK;
    if (!params || n < 1)
        st = tg__mpi_fail(TG_ERR_NULL, "tg_mpi_checkpoint_load: params is NULL or n < 1");
    else
        for (int i = 0; i < n && st == TG_OK; i++)
            if (!params[i])
                st = tg__mpi_fail(TG_ERR_NULL, "tg_mpi_checkpoint_load: tensor %d is NULL", i);
    /* The lists are compared before rank 0 reads anything: a broadcast over lists that differ
     * would hang or corrupt memory. */
    st = tg__mpi_compare_structure(comm, params, n, st, "tg_mpi_checkpoint_load");
    if (st != TG_OK)
        return st;
    if (tg_mpi_rank() == 0)
        st = tg_checkpoint_load(path, params, n, names);
    st = tg__mpi_exchange(comm, st, st == TG_OK ? NULL : tg_last_errmsg(), 0, NULL);
    if (st != TG_OK)
        return st;
    st = tg__mpi_broadcast_values(comm, params, n);
    st = tg__mpi_exchange(comm, st, st == TG_OK ? NULL : tg_mpi_errmsg(), 0, NULL);
    if (st != TG_OK)
        return st;
    return tg__mpi_compare_values(comm, params, n, "tg_mpi_checkpoint_load");
}
