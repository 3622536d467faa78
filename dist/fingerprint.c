/* fingerprint.c -- the ranks compare their parameter lists before anything would hang on a
 * mismatch: first the count, dtypes and shapes (an XXH3-64 of them, with a readable description
 * for the message), later the values (an XXH3-64 of the bytes). */
#include "mpi_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

enum { DESC = 1024 }; /* bytes of a list's description on the wire */

/* What a rank says about its list. */
typedef struct fingerprint {
    int32_t status; /* this rank's own verdict on its list; desc is then its message */
    int32_t n;
    uint64_t shape_hash;
    char desc[DESC]; /* "6 tensors: fc1.W f32[256,784], fc1.b f32[256], ..." */
} fingerprint;

static void describe(fingerprint *f, tg_tensor *const *params, int n) {
    int len = snprintf(f->desc, DESC, "%d tensor%s:", n, n == 1 ? "" : "s");
    uint64_t h = XXH3_64bits(&n, sizeof n);
    for (int i = 0; i < n; i++) {
        const tg_tensor *p = params[i];
        const int32_t meta[2] = {(int32_t)tg_tensor_dtype(p), tg_tensor_rank(p)};
        h = XXH3_64bits_withSeed(meta, sizeof meta, h);
        h = XXH3_64bits_withSeed(tg_tensor_shape(p), sizeof(int64_t) * (size_t)meta[1], h);
        char one[160];
        int k = snprintf(one, sizeof one, "%s %s %s[", i ? "," : "",
                         tg_tensor_name(p)[0] ? tg_tensor_name(p) : "(unnamed)",
                         meta[0] == TG_F64   ? "f64"
                         : meta[0] == TG_F32 ? "f32"
                                             : "i32");
        for (int a = 0; a < meta[1] && k < (int)sizeof one; a++)
            k += snprintf(one + k, sizeof one - (size_t)k, "%s%lld", a ? "," : "",
                          (long long)tg_tensor_shape(p)[a]);
        if (k < (int)sizeof one)
            snprintf(one + k, sizeof one - (size_t)k, "]");
        if (len >= 0 && len < DESC)
            len += snprintf(f->desc + len, (size_t)(DESC - len), "%s", one);
    }
    if (len >= DESC)
        memcpy(f->desc + DESC - 5, "...", 4);
    f->n = n;
    f->shape_hash = h;
}

tg_status tg__mpi_compare_structure(MPI_Comm comm, tg_tensor *const *params, int n, tg_status local,
                                    const char *who) {
    int rank = 0, world = 1;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &world);
    /* (Failing here leaves the other ranks waiting: a few KiB cannot be missing in practice.) */
    fingerprint *all = malloc(sizeof *all * ((size_t)world + 1));
    if (!all)
        return tg__mpi_fail(TG_ERR_NOMEM, "%s: out of memory for %d fingerprints", who, world);
    fingerprint *mine = all + world;
    memset(mine, 0, sizeof *mine);
    mine->status = (int32_t)local;
    if (local == TG_OK)
        describe(mine, params, n);
    else
        snprintf(mine->desc, DESC, "%s", tg_mpi_errmsg());
    int rc =
        MPI_Allgather(mine, (int)sizeof *mine, MPI_BYTE, all, (int)sizeof *mine, MPI_BYTE, comm);
    tg_status st = TG_OK;
    if (rc != MPI_SUCCESS) {
        st = tg__mpi_error(rc, "MPI_Allgather of the parameter lists' fingerprints");
    } else {
        for (int r = 0; r < world && st == TG_OK; r++)
            if (all[r].status != TG_OK)
                st = tg__mpi_fail((tg_status)all[r].status, "%s: rank %d: %.*s", who, r, DESC - 1,
                                  all[r].desc);
        for (int r = 1; r < world && st == TG_OK; r++)
            if (all[r].n != all[0].n || all[r].shape_hash != all[0].shape_hash)
                st = tg__mpi_fail(TG_ERR_SHAPE,
                                  "%s: the ranks' parameter lists differ (count, dtypes or "
                                  "shapes), so they cannot train together: rank 0 has %.*s; "
                                  "rank %d has %.*s",
                                  who, 400, all[0].desc, r, 400, all[r].desc);
    }
    free(all);
    return st;
}

uint64_t tg__mpi_values_hash(tg_tensor *const *params, int n) {
    uint64_t h = 0;
    for (int i = 0; i < n; i++)
        h = XXH3_64bits_withSeed(
            tg_tensor_cdata(params[i]),
            (size_t)tg_tensor_numel(params[i]) * tg__mpi_dtype_size(tg_tensor_dtype(params[i])), h);
    return h;
}

tg_status tg__mpi_compare_values(MPI_Comm comm, tg_tensor *const *params, int n, const char *who) {
    int world = 1;
    MPI_Comm_size(comm, &world);
    unsigned long long mine = tg__mpi_values_hash(params, n);
    unsigned long long *all = malloc(sizeof *all * (size_t)world);
    if (!all)
        return tg__mpi_fail(TG_ERR_NOMEM, "%s: out of memory", who);
    int rc = MPI_Allgather(&mine, 1, MPI_UNSIGNED_LONG_LONG, all, 1, MPI_UNSIGNED_LONG_LONG, comm);
    tg_status st = TG_OK;
    if (rc != MPI_SUCCESS)
        st = tg__mpi_error(rc, "MPI_Allgather of the parameters' XXH3-64");
    for (int r = 1; r < world && st == TG_OK; r++)
        if (all[r] != all[0])
            st = tg__mpi_fail(TG_ERR_STATE,
                              "%s: the parameters' values differ between ranks: XXH3-64 of their "
                              "bytes %016llx on rank 0, %016llx on rank %d",
                              who, all[0], all[r], r);
    free(all);
    return st;
}

tg_status tg__mpi_broadcast_values(MPI_Comm comm, tg_tensor *const *params, int n) {
    for (int i = 0; i < n; i++) {
        const int64_t numel = tg_tensor_numel(params[i]);
        const tg_dtype dt = tg_tensor_dtype(params[i]);
        const MPI_Datatype t = dt == TG_F64 ? MPI_DOUBLE : dt == TG_I32 ? MPI_INT32_T : MPI_FLOAT;
        int rc = MPI_Bcast(tg_tensor_data(params[i]), (int)numel, t, 0, comm);
        if (rc != MPI_SUCCESS) {
            char what[96];
            snprintf(what, sizeof what, "MPI_Bcast of '%s'", tg_tensor_name(params[i]));
            return tg__mpi_error(rc, what);
        }
    }
    return TG_OK;
}
