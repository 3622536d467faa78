/* runtime.c -- MPI's start and end, the library's errors, and the error synchronisation that
 * keeps one rank's failure from becoming everyone else's deadlock. */
#include "mpi_internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { TG_MPI_MSG = 1024 }; /* bytes of a message, here and on the wire */

static _Thread_local char errmsg[TG_MPI_MSG];
static MPI_Comm lib_comm = MPI_COMM_NULL;
static int we_initialized; /* tg_mpi_init called MPI_Init_thread (so finalize calls MPI_Finalize) */
static int my_rank, world_size = 1;

const char *tg_mpi_errmsg(void) { return errmsg; }

tg_status tg__mpi_fail(tg_status status, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(errmsg, sizeof errmsg, fmt, ap);
    va_end(ap);
    return status;
}

tg_status tg__mpi_error(int rc, const char *what) {
    char text[MPI_MAX_ERROR_STRING] = "";
    int len = 0;
    if (MPI_Error_string(rc, text, &len) != MPI_SUCCESS)
        snprintf(text, sizeof text, "MPI error %d", rc);
    return tg__mpi_fail(TG_ERR_IO, "%s: %s", what, text);
}

MPI_Comm tg__mpi_comm(void) { return lib_comm; }
int tg_mpi_rank(void) { return my_rank; }
int tg_mpi_world_size(void) { return world_size; }

tg_status tg_mpi_init(int *argc, char ***argv) {
    if (lib_comm != MPI_COMM_NULL)
        return tg__mpi_fail(TG_ERR_STATE, "tg_mpi_init: called twice");
    int initialized = 0, finalized = 0, rc;
    MPI_Initialized(&initialized);
    MPI_Finalized(&finalized);
    if (finalized)
        return tg__mpi_fail(TG_ERR_STATE, "tg_mpi_init: MPI is already finalized");
    int provided = MPI_THREAD_SINGLE;
    if (!initialized) {
        rc = MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided);
        if (rc != MPI_SUCCESS)
            return tg__mpi_error(rc, "tg_mpi_init: MPI_Init_thread");
        we_initialized = 1;
    } else {
        MPI_Query_thread(&provided);
    }
    if (provided < MPI_THREAD_FUNNELED) {
        if (we_initialized) {
            MPI_Finalize();
            we_initialized = 0;
        }
        return tg__mpi_fail(TG_ERR_STATE,
                            "tg_mpi_init: MPI provides thread level %d, below MPI_THREAD_FUNNELED",
                            provided);
    }
    /* Errors come back as codes (turned into messages), instead of aborting every rank. */
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    rc = MPI_Comm_dup(MPI_COMM_WORLD, &lib_comm);
    if (rc != MPI_SUCCESS) {
        lib_comm = MPI_COMM_NULL;
        return tg__mpi_error(rc, "tg_mpi_init: MPI_Comm_dup");
    }
    MPI_Comm_set_errhandler(lib_comm, MPI_ERRORS_RETURN);
    MPI_Comm_rank(lib_comm, &my_rank);
    MPI_Comm_size(lib_comm, &world_size);
    errmsg[0] = '\0';
    return TG_OK;
}

tg_status tg_mpi_finalize(void) {
    if (lib_comm == MPI_COMM_NULL)
        return TG_OK;
    MPI_Comm_free(&lib_comm);
    lib_comm = MPI_COMM_NULL;
    my_rank = 0;
    world_size = 1;
    if (we_initialized) {
        we_initialized = 0;
        int rc = MPI_Finalize();
        if (rc != MPI_SUCCESS)
            return tg__mpi_error(rc, "tg_mpi_finalize: MPI_Finalize");
    }
    return TG_OK;
}

/* What each rank tells the others at a synchronisation point. */
typedef struct report {
    int32_t status;
    int32_t pad;
    double value;
} report;

tg_status tg__mpi_exchange(MPI_Comm comm, tg_status status, const char *message, double value,
                           double *sum) {
    int rank = 0, world = 1;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &world);
    report mine = {.status = (int32_t)status, .value = value}, stack[16];
    report *all = world <= 16 ? stack : malloc(sizeof *all * (size_t)world);
    if (!all)
        return tg__mpi_fail(TG_ERR_NOMEM, "tg_mpi: out of memory for %d ranks' reports", world);
    int rc =
        MPI_Allgather(&mine, (int)sizeof mine, MPI_BYTE, all, (int)sizeof mine, MPI_BYTE, comm);
    if (rc != MPI_SUCCESS) {
        if (all != stack)
            free(all);
        return tg__mpi_error(rc, "tg_mpi: MPI_Allgather of the ranks' status");
    }
    int first = -1, failed = 0;
    double total = 0;
    for (int r = 0; r < world; r++) {
        total += all[r].value; /* in rank order: the same sum on every rank */
        if (all[r].status != TG_OK) {
            failed++;
            if (first < 0)
                first = r;
        }
    }
    const tg_status agreed = first < 0 ? TG_OK : (tg_status)all[first].status;
    if (all != stack)
        free(all);
    if (sum)
        *sum = total;
    if (first < 0)
        return TG_OK;
    /* The lowest failing rank's message, to every rank. */
    char text[TG_MPI_MSG] = "";
    if (rank == first)
        snprintf(text, sizeof text, "%s", message && message[0] ? message : tg_status_name(status));
    rc = MPI_Bcast(text, (int)sizeof text, MPI_CHAR, first, comm);
    if (rc != MPI_SUCCESS)
        return tg__mpi_error(rc, "tg_mpi: MPI_Bcast of the failing rank's message");
    text[sizeof text - 1] = '\0';
    if (failed > 1)
        tg__mpi_fail(agreed, "rank %d: %s (and %d other rank%s failed)", first, text, failed - 1,
                     failed > 2 ? "s" : "");
    else
        tg__mpi_fail(agreed, "rank %d: %s", first, text);
    return agreed;
}

tg_status tg_mpi_agree(tg_status status, const char *message) {
    if (lib_comm == MPI_COMM_NULL)
        return tg__mpi_fail(TG_ERR_STATE, "tg_mpi_agree: call tg_mpi_init first");
    return tg__mpi_exchange(lib_comm, status, message, 0, NULL);
}

tg_status tg_mpi_sum(double *values, int n) {
    if (!values || n < 0)
        return tg__mpi_fail(TG_ERR_NULL, "tg_mpi_sum: values is NULL or n < 0");
    if (lib_comm == MPI_COMM_NULL)
        return tg__mpi_fail(TG_ERR_STATE, "tg_mpi_sum: call tg_mpi_init first");
    int rc = MPI_Allreduce(MPI_IN_PLACE, values, n, MPI_DOUBLE, MPI_SUM, lib_comm);
    return rc == MPI_SUCCESS ? TG_OK : tg__mpi_error(rc, "tg_mpi_sum: MPI_Allreduce");
}
