/* mpi_internal.h -- what the files of libtapegrad_mpi share (not installed).
 * The library uses only the public API of tapegrad.h; every private name has the tg__mpi_ prefix
 * and hidden visibility. */
#ifndef TAPEGRAD_MPI_INTERNAL_H
#define TAPEGRAD_MPI_INTERNAL_H

#include "tapegrad_mpi.h"

#include <mpi.h>

/* The message of tg_mpi_errmsg(), printf-style; returns `status` for `return tg__mpi_fail(...)`. */
tg_status tg__mpi_fail(tg_status status, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* As tg__mpi_fail with TG_ERR_IO, for an MPI call that returned `rc`: "<what>: <MPI's text>". */
tg_status tg__mpi_error(int rc, const char *what);

/* The communicator tg_mpi_init made for the library (a duplicate of MPI_COMM_WORLD), or
 * MPI_COMM_NULL before it. */
MPI_Comm tg__mpi_comm(void);

/* The error synchronisation of tg_mpi_agree and tg_mpi_dp_wait on `comm`: every rank passes its
 * status, its message (NULL: none) and a value; every rank gets the status of the lowest failing
 * rank (message "rank R: ..." set) or TG_OK, and *sum = the values summed in rank order. */
tg_status tg__mpi_exchange(MPI_Comm comm, tg_status status, const char *message, double value,
                           double *sum);

/* The comparison of tg_mpi_dp_new: count, dtypes and shapes of the list must be the same on every
 * rank of `comm`; `local` is this rank's own verdict on its list (TG_OK or an error already in
 * tg_mpi_errmsg). Every rank gets the same status; `who` names the caller in messages. */
tg_status tg__mpi_compare_structure(MPI_Comm comm, tg_tensor *const *params, int n, tg_status local,
                                    const char *who);
/* The comparison of tg_mpi_dp_check: the XXH3-64 of the bytes. */
tg_status tg__mpi_compare_values(MPI_Comm comm, tg_tensor *const *params, int n, const char *who);
uint64_t tg__mpi_values_hash(tg_tensor *const *params, int n);
/* MPI_Bcast of the n tensors' data from rank 0 (the structure is already known to agree). */
tg_status tg__mpi_broadcast_values(MPI_Comm comm, tg_tensor *const *params, int n);

/* The arithmetic both the ranks and tg_mpi_accumulate use, so that they agree bit for bit.
 * pack: dst[i] = (T)scale * g[i] for the numel elements of the leaf's gradient g (T its dtype:
 * the scale is rounded once to T, the product once to T), or zeros when g is NULL. */
void tg__mpi_pack(void *dst, tg_tensor *param, double scale);
/* sum_ranks: out[i] = ((g_0[i] + g_1[i]) + g_2[i]) + ... for world rows g_r = gathered + r *
 * stride (in elements of dtype), i < numel. */
void tg__mpi_sum_ranks(void *out, const void *gathered, int world, int64_t numel, int64_t stride,
                       tg_dtype dtype);
/* Gives a parameter without a gradient one of zeros. TG_OK or an error (message set). */
tg_status tg__mpi_ensure_grad(tg_tensor *param);
/* Bytes of one element of dtype (f32, f64, i32). */
size_t tg__mpi_dtype_size(tg_dtype dtype);

#endif /* TAPEGRAD_MPI_INTERNAL_H */
