/* dp.c -- averaging the gradients over the ranks: buckets packed in one fixed order, each sent
 * as soon as the backward pass has made its gradients final (the tape's TG_EVENT_GRAD_READY), so
 * communication overlaps the rest of the backward pass; one wait before the optimizer step, which
 * is also every step's synchronisation point for errors.
 *
 * Fast mode: MPI_Iallreduce(MPI_SUM) of each bucket, in place.
 * Deterministic mode: a reduce-scatter whose sums are done in rank order, then an allgather.
 * A bucket is cut into `world` segments; MPI_Ialltoallv sends segment r of every rank's bucket to
 * rank r, which sums the `world` contributions in rank order (tg__mpi_sum_ranks, the arithmetic of
 * tg_mpi_accumulate); MPI_Iallgatherv then gives every rank every summed segment. Each rank sends
 * 2 (world-1)/world of the bucket, as a ring allreduce does, and the result is bit-identical to
 * one process summing the shards in rank order. The allgathers start in bucket order on a second
 * communicator, so that the ranks start their collectives on each communicator in one order. */
#include "mpi_internal.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TG_MPI_MAX_TAPES 8

typedef struct bucket {
    tg_dtype dtype;
    int first, count; /* entries [first, first + count) of dp->order */
    int64_t numel;    /* elements in all */
    int waiting;      /* gradients of this step not final yet */
    int phase;        /* 0 not started; 1 alltoall (or fast allreduce) started; 2 allgather */
    void *buf;        /* numel: this rank's scaled gradients (in fast mode, the sum in place) */
    /* Deterministic mode: segment r is elements [displs[r], displs[r] + counts[r]). */
    int *counts, *displs;
    int *seg_counts, *seg_displs; /* what each rank sends me: counts[me] at r * counts[me] */
    void *recv;   /* world * counts[me]: every rank's part of my segment, in rank order */
    void *seg;    /* counts[me]: my segment, summed in rank order */
    void *result; /* numel: every rank's summed segment: the bucket's sum */
    MPI_Request req;
} bucket;

struct tg_mpi_dp {
    tg_mpi_mode mode;
    int overlap;
    MPI_Comm comm;  /* buckets' first collective, the status exchange */
    MPI_Comm comm2; /* deterministic mode: the allgathers */
    int rank, world;
    int n;
    tg_tensor **params;
    int *order;       /* parameter indices in bucket order: the list reversed */
    int64_t *offset;  /* per parameter: its first element in its bucket */
    int *bucket_of;   /* per parameter */
    uint8_t *ready;   /* per parameter: its gradient was final this step */
    tg_tensor **keys; /* the parameters sorted by address, for the observer's lookup */
    int *key_index;
    bucket *buckets;
    int n_buckets, next_launch, next_gather;
    int in_step;
    double scale;
    tg_status failed; /* an error of the observer during this step (message in error) */
    char error[512];
    tg_tape *tapes[TG_MPI_MAX_TAPES];
    int n_tapes;
    tg_mpi_stats stats;
};

tg_mpi_config tg_mpi_defaults(void) {
    return (tg_mpi_config){
        .mode = TG_MPI_DETERMINISTIC, .bucket_bytes = (size_t)256 * 1024, .overlap = 1};
}

static MPI_Datatype mpi_type(tg_dtype dtype) { return dtype == TG_F64 ? MPI_DOUBLE : MPI_FLOAT; }

/* The index of parameter `t` in the list, or -1 (binary search over the addresses). */
static int find(const tg_mpi_dp *dp, const tg_tensor *t) {
    int lo = 0, hi = dp->n - 1;
    while (lo <= hi) {
        const int mid = lo + (hi - lo) / 2;
        if (dp->keys[mid] == t)
            return dp->key_index[mid];
        if ((uintptr_t)dp->keys[mid] < (uintptr_t)t)
            lo = mid + 1;
        else
            hi = mid - 1;
    }
    return -1;
}

static int compare_keys(const void *a, const void *b) {
    const uintptr_t x = (uintptr_t) * (tg_tensor *const *)a,
                    y = (uintptr_t) * (tg_tensor *const *)b;
    return x < y ? -1 : x > y;
}

/* This rank's own verdict on its list (before the ranks compare them). */
static tg_status check_list(tg_tensor *const *params, int n) {
    if (!params || n < 1)
        return tg__mpi_fail(TG_ERR_NULL, "tg_mpi_dp_new: params is NULL or n < 1 (n = %d)", n);
    for (int i = 0; i < n; i++) {
        const tg_tensor *p = params[i];
        if (!p)
            return tg__mpi_fail(TG_ERR_NULL, "tg_mpi_dp_new: parameter %d is NULL", i);
        if (tg_tensor_dtype(p) != TG_F32 && tg_tensor_dtype(p) != TG_F64)
            return tg__mpi_fail(TG_ERR_DTYPE, "tg_mpi_dp_new: parameter %d ('%s') is not f32/f64",
                                i, tg_tensor_name(p));
        if (tg_tensor_tape_index(p) >= 0 || !tg_tensor_requires_grad(p))
            return tg__mpi_fail(TG_ERR_VALUE,
                                "tg_mpi_dp_new: parameter %d ('%s') is not a leaf requiring a "
                                "gradient",
                                i, tg_tensor_name(p));
        if (tg_tensor_numel(p) > INT_MAX)
            return tg__mpi_fail(TG_ERR_VALUE,
                                "tg_mpi_dp_new: parameter %d ('%s') has %lld elements, more than "
                                "one MPI message holds (%d)",
                                i, tg_tensor_name(p), (long long)tg_tensor_numel(p), INT_MAX);
        for (int j = 0; j < i; j++)
            if (params[j] == p)
                return tg__mpi_fail(TG_ERR_VALUE,
                                    "tg_mpi_dp_new: parameter %d ('%s') is also parameter %d", i,
                                    tg_tensor_name(p), j);
    }
    return TG_OK;
}

/* Buckets over the list reversed, cut where the dtype changes or the next parameter would take
 * the bucket past bucket_bytes. The same list gives the same buckets on every rank. */
static tg_status make_buckets(tg_mpi_dp *dp, size_t bucket_bytes) {
    dp->buckets = calloc((size_t)dp->n, sizeof *dp->buckets);
    if (!dp->buckets)
        return tg__mpi_fail(TG_ERR_NOMEM, "tg_mpi_dp_new: out of memory");
    bucket *b = NULL;
    for (int k = 0; k < dp->n; k++) {
        const int i = dp->order[k];
        const tg_tensor *p = dp->params[i];
        const tg_dtype dt = tg_tensor_dtype(p);
        const int64_t numel = tg_tensor_numel(p);
        const size_t esize = tg__mpi_dtype_size(dt);
        if (!b || b->dtype != dt || (size_t)(b->numel + numel) * esize > bucket_bytes ||
            b->numel + numel > INT_MAX) {
            b = &dp->buckets[dp->n_buckets++];
            *b = (bucket){.dtype = dt, .first = k, .req = MPI_REQUEST_NULL};
        }
        dp->bucket_of[i] = (int)(b - dp->buckets);
        dp->offset[i] = b->numel;
        b->numel += numel;
        b->count++;
    }
    const int P = dp->world, me = dp->rank;
    for (int j = 0; j < dp->n_buckets; j++) {
        b = &dp->buckets[j];
        const size_t esize = tg__mpi_dtype_size(b->dtype);
        const size_t bytes = (size_t)b->numel * esize;
        b->buf = malloc(bytes ? bytes : 1);
        if (!b->buf)
            return tg__mpi_fail(TG_ERR_NOMEM, "tg_mpi_dp_new: out of memory for the buckets");
        /* Each rank sends its whole bucket once (fast: inside MPI's algorithm). */
        dp->stats.bytes_per_step += (double)bytes;
        if (dp->mode != TG_MPI_DETERMINISTIC)
            continue;
        b->counts = malloc(sizeof(int) * 4 * (size_t)P);
        if (!b->counts)
            return tg__mpi_fail(TG_ERR_NOMEM, "tg_mpi_dp_new: out of memory for the buckets");
        b->displs = b->counts + P;
        b->seg_counts = b->counts + (ptrdiff_t)2 * P;
        b->seg_displs = b->counts + (ptrdiff_t)3 * P;
        const int64_t base = b->numel / P, extra = b->numel % P;
        for (int r = 0, at = 0; r < P; r++) {
            b->counts[r] = (int)(base + (r < extra ? 1 : 0));
            b->displs[r] = at;
            at += b->counts[r];
        }
        for (int r = 0; r < P; r++) {
            b->seg_counts[r] = b->counts[me];
            b->seg_displs[r] = r * b->counts[me];
        }
        const size_t seg = (size_t)b->counts[me] * esize;
        b->recv = malloc(seg * (size_t)P + 1);
        b->seg = malloc(seg + 1);
        b->result = malloc(bytes + 1);
        if (!b->recv || !b->seg || !b->result)
            return tg__mpi_fail(TG_ERR_NOMEM, "tg_mpi_dp_new: out of memory for the buckets");
    }
    dp->stats.buckets = dp->n_buckets;
    return TG_OK;
}

static void dp_release(tg_mpi_dp *dp) {
    if (!dp)
        return;
    for (int j = 0; j < dp->n_buckets; j++) {
        free(dp->buckets[j].buf);
        free(dp->buckets[j].counts);
        free(dp->buckets[j].recv);
        free(dp->buckets[j].seg);
        free(dp->buckets[j].result);
    }
    free(dp->buckets);
    free(dp->params);
    free(dp->order);
    free(dp->offset);
    free(dp->bucket_of);
    free(dp->ready);
    free(dp->keys);
    free(dp->key_index);
    if (dp->comm != MPI_COMM_NULL)
        MPI_Comm_free(&dp->comm);
    if (dp->comm2 != MPI_COMM_NULL)
        MPI_Comm_free(&dp->comm2);
    free(dp);
}

tg_mpi_dp *tg_mpi_dp_new(const tg_mpi_config *config, tg_tensor *const *params, int n) {
    MPI_Comm lib = tg__mpi_comm();
    if (lib == MPI_COMM_NULL) {
        tg__mpi_fail(TG_ERR_STATE, "tg_mpi_dp_new: call tg_mpi_init first");
        return NULL;
    }
    const tg_mpi_config cfg = config ? *config : tg_mpi_defaults();
    tg_status local = check_list(params, n);
    if (local == TG_OK && cfg.mode != TG_MPI_DETERMINISTIC && cfg.mode != TG_MPI_FAST)
        local = tg__mpi_fail(TG_ERR_VALUE, "tg_mpi_dp_new: unknown mode %d", (int)cfg.mode);
    for (int i = 0; i < n && local == TG_OK; i++)
        local = tg__mpi_ensure_grad(params[i]);
    /* Every rank compares, even one whose own list is unfit: then all of them fail alike. */
    tg_status st = tg__mpi_compare_structure(lib, params, n, local, "tg_mpi_dp_new");
    if (st != TG_OK)
        return NULL;
    tg_mpi_dp *dp = calloc(1, sizeof *dp);
    if (!dp) {
        tg__mpi_fail(TG_ERR_NOMEM, "tg_mpi_dp_new: out of memory");
        return NULL;
    }
    dp->comm = dp->comm2 = MPI_COMM_NULL;
    /* The communicators are made first, by every rank, whatever happens after: collective. */
    int rc = MPI_Comm_dup(lib, &dp->comm);
    if (rc == MPI_SUCCESS)
        rc = MPI_Comm_dup(lib, &dp->comm2);
    if (rc != MPI_SUCCESS) {
        if (dp->comm != MPI_COMM_NULL)
            MPI_Comm_free(&dp->comm);
        dp->comm = dp->comm2 = MPI_COMM_NULL;
        tg__mpi_error(rc, "tg_mpi_dp_new: MPI_Comm_dup");
        dp_release(dp);
        return NULL;
    }
    MPI_Comm_set_errhandler(dp->comm, MPI_ERRORS_RETURN);
    MPI_Comm_set_errhandler(dp->comm2, MPI_ERRORS_RETURN);
    MPI_Comm_rank(dp->comm, &dp->rank);
    MPI_Comm_size(dp->comm, &dp->world);
    dp->mode = cfg.mode;
    dp->overlap = cfg.overlap != 0;
    dp->n = n;
    const size_t nn = (size_t)n;
    dp->params = malloc(sizeof *dp->params * nn);
    dp->order = malloc(sizeof *dp->order * nn);
    dp->offset = malloc(sizeof *dp->offset * nn);
    dp->bucket_of = malloc(sizeof *dp->bucket_of * nn);
    dp->ready = calloc(nn, 1);
    dp->keys = malloc(sizeof *dp->keys * nn);
    dp->key_index = malloc(sizeof *dp->key_index * nn);
    if (!dp->params || !dp->order || !dp->offset || !dp->bucket_of || !dp->ready || !dp->keys ||
        !dp->key_index)
        st = tg__mpi_fail(TG_ERR_NOMEM, "tg_mpi_dp_new: out of memory");
    else {
        memcpy(dp->params, params, sizeof *dp->params * nn);
        for (int i = 0; i < n; i++)
            dp->order[i] = n - 1 - i;
        memcpy(dp->keys, params, sizeof *dp->keys * nn);
        qsort(dp->keys, nn, sizeof *dp->keys, compare_keys);
        for (int k = 0; k < n; k++)
            for (int i = 0; i < n; i++)
                if (params[i] == dp->keys[k])
                    dp->key_index[k] = i;
        st = make_buckets(dp, cfg.bucket_bytes ? cfg.bucket_bytes : 1);
    }
    /* Memory can fail on one rank only: agree, so that no rank goes on alone. */
    if (tg__mpi_exchange(dp->comm, st, tg_mpi_errmsg(), 0, NULL) != TG_OK) {
        dp_release(dp);
        return NULL;
    }
    return dp;
}

tg_status tg_mpi_dp_broadcast(tg_mpi_dp *dp) {
    if (!dp)
        return tg__mpi_fail(TG_ERR_NULL, "tg_mpi_dp_broadcast: dp is NULL");
    tg_status st = tg__mpi_broadcast_values(dp->comm, dp->params, dp->n);
    if (st != TG_OK)
        return st;
    return tg__mpi_compare_values(dp->comm, dp->params, dp->n, "tg_mpi_dp_broadcast");
}

tg_status tg_mpi_dp_check(tg_mpi_dp *dp) {
    if (!dp)
        return tg__mpi_fail(TG_ERR_NULL, "tg_mpi_dp_check: dp is NULL");
    return tg__mpi_compare_values(dp->comm, dp->params, dp->n, "tg_mpi_dp_check");
}

uint64_t tg_mpi_dp_fingerprint(const tg_mpi_dp *dp) {
    return dp ? tg__mpi_values_hash(dp->params, dp->n) : 0;
}

/* Packs bucket j and starts its collective. */
static tg_status launch(tg_mpi_dp *dp, int j, int zeros) {
    bucket *b = &dp->buckets[j];
    const size_t esize = tg__mpi_dtype_size(b->dtype);
    if (zeros) {
        memset(b->buf, 0, (size_t)b->numel * esize);
    } else {
        for (int k = b->first; k < b->first + b->count; k++) {
            const int i = dp->order[k];
            tg__mpi_pack((char *)b->buf + (size_t)dp->offset[i] * esize, dp->params[i], dp->scale);
        }
    }
    const MPI_Datatype t = mpi_type(b->dtype);
    if (!dp->overlap) { /* blocking collectives, from tg_mpi_dp_wait: the same sums */
        int rc;
        b->phase = 2;
        if (dp->mode == TG_MPI_FAST)
            rc = MPI_Allreduce(MPI_IN_PLACE, b->buf, (int)b->numel, t, MPI_SUM, dp->comm);
        else {
            rc = MPI_Alltoallv(b->buf, b->counts, b->displs, t, b->recv, b->seg_counts,
                               b->seg_displs, t, dp->comm);
            dp->next_gather++;
            if (rc == MPI_SUCCESS) {
                const int me = dp->rank;
                tg__mpi_sum_ranks(b->seg, b->recv, dp->world, b->counts[me], b->counts[me],
                                  b->dtype);
                rc = MPI_Allgatherv(b->seg, b->counts[me], t, b->result, b->counts, b->displs, t,
                                    dp->comm2);
            }
        }
        return rc == MPI_SUCCESS ? TG_OK : tg__mpi_error(rc, "the blocking sum of a bucket");
    }
    int rc =
        dp->mode == TG_MPI_DETERMINISTIC
            ? MPI_Ialltoallv(b->buf, b->counts, b->displs, t, b->recv, b->seg_counts, b->seg_displs,
                             t, dp->comm, &b->req)
            : MPI_Iallreduce(MPI_IN_PLACE, b->buf, (int)b->numel, t, MPI_SUM, dp->comm, &b->req);
    b->phase = 1;
    if (rc != MPI_SUCCESS) {
        b->req = MPI_REQUEST_NULL;
        return tg__mpi_error(rc, dp->mode == TG_MPI_DETERMINISTIC ? "MPI_Ialltoallv of a bucket"
                                                                  : "MPI_Iallreduce of a bucket");
    }
    return TG_OK;
}

/* Deterministic mode, second half: for the started buckets in order, once a bucket's alltoall
 * has arrived, sums my segment in rank order and starts its allgather. With `block`, waits for
 * each; otherwise stops at the first bucket still in flight. */
static tg_status advance(tg_mpi_dp *dp, int block) {
    while (dp->next_gather < dp->next_launch) {
        bucket *b = &dp->buckets[dp->next_gather];
        int done = 1, rc;
        /* The requests live in the buckets, started and completed in other calls: */
        // NOLINTNEXTLINE(clang-analyzer-optin.mpi.MPI-Checker)
        rc = block ? MPI_Wait(&b->req, MPI_STATUS_IGNORE)
                   : MPI_Test(&b->req, &done, MPI_STATUS_IGNORE);
        if (rc != MPI_SUCCESS)
            return tg__mpi_error(rc, "MPI_Ialltoallv of a bucket");
        if (!done)
            return TG_OK;
        const int me = dp->rank;
        tg__mpi_sum_ranks(b->seg, b->recv, dp->world, b->counts[me], b->counts[me], b->dtype);
        const MPI_Datatype t = mpi_type(b->dtype);
        rc = MPI_Iallgatherv(b->seg, b->counts[me], t, b->result, b->counts, b->displs, t,
                             dp->comm2, &b->req);
        b->phase = 2;
        dp->next_gather++;
        if (rc != MPI_SUCCESS) {
            b->req = MPI_REQUEST_NULL;
            return tg__mpi_error(rc, "MPI_Iallgatherv of a bucket");
        }
    }
    return TG_OK;
}

/* Starts the buckets whose gradients are all final, in bucket order: every rank starts its
 * collectives in the same order, whatever order the gradients became final in. */
static tg_status launch_ready(tg_mpi_dp *dp) {
    if (!dp->overlap)
        return TG_OK; /* everything happens in tg_mpi_dp_wait */
    while (dp->next_launch < dp->n_buckets && dp->buckets[dp->next_launch].waiting == 0) {
        tg_status st = launch(dp, dp->next_launch++, 0);
        if (st != TG_OK)
            return st;
        dp->stats.early_buckets++;
    }
    return TG_OK;
}

/* Lets MPI progress the collectives in flight (Open MPI's non-blocking collectives advance only
 * inside MPI calls made by this thread), and starts the allgathers that can start. */
static tg_status poke(tg_mpi_dp *dp) {
    if (dp->mode == TG_MPI_DETERMINISTIC)
        return advance(dp, 0);
    for (int j = 0; j < dp->next_launch; j++) {
        if (dp->buckets[j].req != MPI_REQUEST_NULL) {
            int done = 0;
            MPI_Test(&dp->buckets[j].req, &done, MPI_STATUS_IGNORE);
            break; /* one test drives the progress engine for all of them */
        }
    }
    return TG_OK;
}

static tg_status observe(const tg_event *ev, void *user) {
    tg_mpi_dp *dp = user;
    if (!dp->in_step || dp->failed != TG_OK)
        return TG_OK;
    tg_status st = TG_OK;
    const double t0 = MPI_Wtime();
    if (ev->kind == TG_EVENT_AFTER_BACKWARD) {
        if (dp->next_launch > 0)
            st = poke(dp);
    } else if (ev->kind != TG_EVENT_GRAD_READY) {
        return TG_OK;
    }
    const int i = ev->kind == TG_EVENT_GRAD_READY ? find(dp, ev->tensor) : -1;
    if (i < 0) {
        /* not a parameter of this list, or AFTER_BACKWARD */
    } else if (dp->ready[i]) {
        st = tg__mpi_fail(TG_ERR_STATE,
                          "tg_mpi_dp: the gradient of '%s' was made final twice in one step (its "
                          "bucket may be sent already): run one backward pass between "
                          "tg_mpi_dp_begin and tg_mpi_dp_wait",
                          tg_tensor_name(ev->tensor));
    } else {
        dp->ready[i] = 1;
        dp->buckets[dp->bucket_of[i]].waiting--;
        st = launch_ready(dp);
    }
    dp->stats.launch_seconds += MPI_Wtime() - t0;
    if (st != TG_OK) {
        dp->failed = st;
        snprintf(dp->error, sizeof dp->error, "%s", tg_mpi_errmsg());
    }
    return st;
}

tg_status tg_mpi_dp_attach(tg_mpi_dp *dp, tg_tape *tape) {
    if (!dp || !tape)
        return tg__mpi_fail(TG_ERR_NULL, "tg_mpi_dp_attach: dp or tape is NULL");
    if (dp->n_tapes == TG_MPI_MAX_TAPES)
        return tg__mpi_fail(TG_ERR_STATE, "tg_mpi_dp_attach: already attached to %d tapes",
                            TG_MPI_MAX_TAPES);
    tg_status st = tg_tape_observe(tape, observe, dp);
    if (st != TG_OK)
        return tg__mpi_fail(st, "tg_mpi_dp_attach: %s", tg_last_errmsg());
    dp->tapes[dp->n_tapes++] = tape;
    return TG_OK;
}

static void start_step(tg_mpi_dp *dp, double scale) {
    dp->in_step = 1;
    dp->scale = scale;
    dp->failed = TG_OK;
    dp->error[0] = '\0';
    dp->next_launch = dp->next_gather = 0;
    memset(dp->ready, 0, (size_t)dp->n);
    for (int j = 0; j < dp->n_buckets; j++) {
        dp->buckets[j].waiting = dp->buckets[j].count;
        dp->buckets[j].phase = 0;
    }
}

tg_status tg_mpi_dp_begin(tg_mpi_dp *dp, int64_t rows, int64_t global_rows) {
    if (!dp)
        return tg__mpi_fail(TG_ERR_NULL, "tg_mpi_dp_begin: dp is NULL");
    if (dp->in_step)
        return tg__mpi_fail(TG_ERR_STATE,
                            "tg_mpi_dp_begin: a step is in progress (call tg_mpi_dp_wait first)");
    if (global_rows < 1 || rows < 0 || rows > global_rows)
        return tg__mpi_fail(TG_ERR_VALUE,
                            "tg_mpi_dp_begin: need 0 <= rows <= global_rows and global_rows >= "
                            "1; got %lld of %lld",
                            (long long)rows, (long long)global_rows);
    start_step(dp, tg_mpi_shard_scale(rows, global_rows));
    return TG_OK;
}

tg_status tg_mpi_dp_wait(tg_mpi_dp *dp, tg_status status, const char *message, double *loss) {
    if (!dp)
        return tg__mpi_fail(TG_ERR_NULL, "tg_mpi_dp_wait: dp is NULL");
    const double t0 = MPI_Wtime();
    char local_msg[512];
    snprintf(local_msg, sizeof local_msg, "%s", message ? message : "");
    if (!dp->in_step) {
        /* Still take part (with zeros), so that the others are not left waiting. */
        start_step(dp, 0);
        if (status == TG_OK) {
            status = TG_ERR_STATE;
            snprintf(local_msg, sizeof local_msg, "tg_mpi_dp_wait: no tg_mpi_dp_begin before it");
        }
    }
    if (dp->failed != TG_OK) { /* the observer's own error explains the tape's */
        status = dp->failed;
        snprintf(local_msg, sizeof local_msg, "%s", dp->error);
    }
    /* Every bucket is started on every rank, in order, even on a rank that failed (with zeros:
     * its result is thrown away), so that every collective completes. */
    tg_status mpi_st = TG_OK;
    while (dp->next_launch < dp->n_buckets) {
        /* The requests live in the buckets, started and completed in other calls: */
        // NOLINTNEXTLINE(clang-analyzer-optin.mpi.MPI-Checker)
        tg_status st = launch(dp, dp->next_launch++, status != TG_OK);
        if (st != TG_OK && mpi_st == TG_OK) {
            mpi_st = st;
            snprintf(local_msg, sizeof local_msg, "%s", tg_mpi_errmsg());
        }
    }
    if (dp->mode == TG_MPI_DETERMINISTIC) {
        tg_status st = advance(dp, 1);
        if (st != TG_OK && mpi_st == TG_OK) {
            mpi_st = st;
            snprintf(local_msg, sizeof local_msg, "%s", tg_mpi_errmsg());
        }
    }
    for (int j = 0; j < dp->n_buckets; j++) {
        /* The requests live in the buckets, started and completed in other calls: */
        // NOLINTNEXTLINE(clang-analyzer-optin.mpi.MPI-Checker)
        int rc = MPI_Wait(&dp->buckets[j].req, MPI_STATUS_IGNORE);
        if (rc != MPI_SUCCESS && mpi_st == TG_OK) {
            mpi_st = tg__mpi_error(rc, "MPI_Wait for a bucket");
            snprintf(local_msg, sizeof local_msg, "%s", tg_mpi_errmsg());
        }
    }
    if (status == TG_OK)
        status = mpi_st;
    const double my_loss = status == TG_OK && loss ? dp->scale * *loss : 0;
    double sum_loss = 0;
    dp->in_step = 0;
    tg_status st = tg__mpi_exchange(dp->comm, status, local_msg, my_loss, &sum_loss);
    if (st == TG_OK) {
        for (int j = 0; j < dp->n_buckets; j++) {
            const bucket *b = &dp->buckets[j];
            const size_t esize = tg__mpi_dtype_size(b->dtype);
            for (int k = b->first; k < b->first + b->count; k++) {
                const int i = dp->order[k];
                void *g = tg_tensor_data(tg_tensor_grad(dp->params[i]));
                const int64_t numel = tg_tensor_numel(dp->params[i]);
                const void *sum = dp->mode == TG_MPI_DETERMINISTIC ? b->result : b->buf;
                memcpy(g, (const char *)sum + (size_t)dp->offset[i] * esize, (size_t)numel * esize);
            }
        }
        if (loss)
            *loss = sum_loss;
        dp->stats.steps++;
    }
    dp->stats.wait_seconds += MPI_Wtime() - t0;
    return st; // NOLINT(clang-analyzer-optin.mpi.MPI-Checker): the buckets' requests, see above
}

tg_mpi_stats tg_mpi_dp_stats(const tg_mpi_dp *dp) { return dp ? dp->stats : (tg_mpi_stats){0}; }

void tg_mpi_dp_free(tg_mpi_dp *dp) {
    if (!dp)
        return;
    for (int k = 0; k < dp->n_tapes; k++)
        tg_tape_unobserve(dp->tapes[k], observe, dp);
    /* A step abandoned midway (no tg_mpi_dp_wait) may leave collectives in flight that other
     * ranks never join: MPI may still write into their buffers, and waiting could hang, so then
     * the buffers and the communicator are left allocated on purpose. */
    for (int j = 0; j < dp->n_buckets; j++)
        if (dp->buckets[j].req != MPI_REQUEST_NULL)
            return;
    dp_release(dp);
}
