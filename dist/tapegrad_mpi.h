/* tapegrad_mpi.h -- data-parallel training over MPI ranks (the optional libtapegrad_mpi).
 *
 * Every rank holds the whole model. Each step, the ranks draw the same global batch, each takes
 * its own slice of it (tg_mpi_shard), runs forward and backward on that slice, and the gradients
 * are averaged over the ranks before the optimizer step, so every rank takes the same step:
 *
 *     tg_mpi_init(&argc, &argv);
 *     tg_mpi_dp *dp = tg_mpi_dp_new(NULL, params, n_params); // collective: same list everywhere
 *     tg_mpi_dp_broadcast(dp);                               // rank 0's initial values
 *     tg_mpi_dp_attach(dp, tape);                            // buckets leave during backward
 *     for each step:
 *         const int64_t *mine;
 *         int64_t n = tg_mpi_shard(tg_mpi_rank(), tg_mpi_world_size(), batch, B, &mine);
 *         tg_optim_zero_grad(opt);
 *         tg_mpi_dp_begin(dp, n, B);
 *         ... loss = the mean loss over the n rows `mine`; st = tg_backward(tape, loss) ...
 *         st = tg_mpi_dp_wait(dp, st, tg_tape_errmsg(tape), &loss_value); // collective
 *         if (st != TG_OK) -> every rank gets here, with the failing rank's message
 *         tg_optim_step(opt);
 *     tg_mpi_dp_free(dp);
 *     tg_mpi_finalize();
 *
 * How the average is formed (both modes): rank r, holding n_r of the B rows of the global batch,
 * computes g_r, the gradient of its mean loss over its n_r rows; it sends s_r * g_r with
 * s_r = n_r / B (computed in double, rounded once to the parameter's dtype; the product rounded
 * to the dtype); the gradient every rank ends with is the sum over r of s_r * g_r, which is the
 * gradient of the mean loss over all B rows.
 *   - TG_MPI_DETERMINISTIC: every sum is done in rank order, ((s_0 g_0 + s_1 g_1) + s_2 g_2) +
 *     ..., in the dtype: each bucket is cut into P segments, rank r receives segment r of every
 *     rank's bucket (MPI_Ialltoallv), sums them in rank order, and the summed segments are
 *     gathered by every rank (MPI_Iallgatherv). The result is bit-identical to tg_mpi_accumulate
 *     (one process computing the same P shards one after the other), whatever MPI's algorithms,
 *     the network or the timing, and each rank sends 2 (P-1)/P of the gradients' bytes per step,
 *     as a ring allreduce does.
 *   - TG_MPI_FAST: MPI_Iallreduce(MPI_SUM) of the scaled gradients: MPI picks its algorithm and
 *     the order of the additions, so results agree with the deterministic mode only to rounding
 *     (for 2 ranks a + b = b + a: they agree bit for bit). One collective per bucket instead of
 *     two, and no pass over the data between them.
 *
 * Only the thread that called tg_mpi_init calls MPI (MPI_THREAD_FUNNELED); tapegrad's kernel
 * threads (tg_set_num_threads) never do. Messages of failed calls are in tg_mpi_errmsg(). Calls
 * marked "collective" must be made by every rank, in the same order; a rank that fails between
 * two collective calls passes its error to the next one (tg_mpi_dp_wait, tg_mpi_agree) instead
 * of returning early, so that every rank returns the error instead of waiting forever. */
#ifndef TAPEGRAD_MPI_H
#define TAPEGRAD_MPI_H

#include <tapegrad.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- The MPI runtime -------------------------------------------------------------------------- */

/** Initializes MPI with MPI_THREAD_FUNNELED (unless the program already did: then MPI is used as
 *  it is), with errors returned rather than aborting. argc and argv may be NULL. Collective.
 *  TG_OK, TG_ERR_STATE (called twice, or MPI cannot give FUNNELED) or TG_ERR_IO (MPI failed). */
TG_API tg_status tg_mpi_init(int *argc, char ***argv);
/** Frees what tg_mpi_init made and finalizes MPI if tg_mpi_init initialized it. Collective.
 *  TG_OK, or TG_ERR_IO. A no-op before tg_mpi_init. */
TG_API tg_status tg_mpi_finalize(void);
/** This process's rank, 0 .. world size - 1 (0 before tg_mpi_init). */
TG_API int tg_mpi_rank(void);
/** The number of ranks (1 before tg_mpi_init). */
TG_API int tg_mpi_world_size(void);
/** The message of the last failed tg_mpi_ call on this thread ("" if none). Valid until the
 *  next tg_mpi_ call on this thread. */
TG_API const char *tg_mpi_errmsg(void);

/** A synchronisation point for errors. Collective. Every rank passes its own status (TG_OK or the
 *  error it met, e.g. loading a file) and message (may be NULL); every rank gets TG_OK if all
 *  passed TG_OK, else the status of the lowest failing rank, with tg_mpi_errmsg() saying
 *  "rank R: <its message>" (and how many other ranks failed). Use it after anything that may fail
 *  on some ranks only, before the next collective call. TG_ERR_IO if MPI itself failed. */
TG_API tg_status tg_mpi_agree(tg_status status, const char *message);
/** Sums `n` doubles over the ranks, in place (MPI_Allreduce; for statistics such as the number of
 *  correct answers, not for gradients). Collective. TG_OK, TG_ERR_NULL or TG_ERR_IO. */
TG_API tg_status tg_mpi_sum(double *values, int n);

/* ---- Sharded data (plain functions: no MPI, usable and testable in one process) --------------- */

/** This rank's part of a global batch of `n` indices: a contiguous slice, the first n % world
 *  ranks taking one index more, so that the slices of ranks 0, 1, ... in order are the batch.
 *  Sets *mine to the slice's first entry (batch + offset) and returns its length (0 when n <
 *  world leaves this rank nothing). Returns -1 (and sets *mine to NULL) for world < 1, rank
 *  outside [0, world), n < 0, or NULL mine / batch (batch may be NULL when n is 0). */
TG_API int64_t tg_mpi_shard(int rank, int world, const int64_t *batch, int64_t n,
                            const int64_t **mine);
/** The visiting order of an epoch: perm[0..n) becomes a permutation of 0..n-1 that depends only
 *  on `seed` and `epoch` (Fisher-Yates with a tg_rng seeded from both), so every rank draws the
 *  same one without communicating. TG_OK, or TG_ERR_NULL / TG_ERR_VALUE (n < 0). */
TG_API tg_status tg_mpi_permutation(int64_t *perm, int64_t n, uint64_t seed, int64_t epoch);
/** s_r = n_r / B, the weight of a shard of `rows` rows in a global batch of `global_rows` (0 when
 *  global_rows <= 0): what tg_mpi_dp_begin and tg_mpi_accumulate scale a shard's gradient by. */
TG_API double tg_mpi_shard_scale(int64_t rows, int64_t global_rows);

/* ---- Averaging the gradients ------------------------------------------------------------------ */

/** How the gradients are summed over the ranks (see the top of this header). */
typedef enum tg_mpi_mode {
    TG_MPI_DETERMINISTIC = 0, /**< sums in rank order (reduce-scatter, allgather): reproducible */
    TG_MPI_FAST = 1           /**< MPI's allreduce: less traffic, rounding depends on MPI */
} tg_mpi_mode;

/** Settings of a tg_mpi_dp. Start from tg_mpi_defaults(). */
typedef struct tg_mpi_config {
    tg_mpi_mode mode; /**< default TG_MPI_DETERMINISTIC */
    /** Gradients are packed into buckets of about this many bytes, filled in the reverse order of
     *  the parameter list (the last layers' gradients are final first); a bucket is sent as soon
     *  as all its gradients are final. Default 256 KiB; a parameter larger than this gets a
     *  bucket of its own. */
    size_t bucket_bytes;
    /** 1 (default): non-blocking collectives started during backward, overlapping it. 0:
     *  blocking collectives, all in tg_mpi_dp_wait: the same sums, bit for bit, without overlap
     *  (for an MPI whose non-blocking collectives are slow, or to measure what overlap gains). */
    int overlap;
} tg_mpi_config;

/** The defaults: deterministic, 256 KiB buckets, overlap on. */
TG_API tg_mpi_config tg_mpi_defaults(void);

/** opaque: the parameter list, its buckets and the step in progress */
typedef struct tg_mpi_dp tg_mpi_dp;

/** Data-parallel training of the `n` parameters `params` (f32 or f64 leaves requiring a
 *  gradient; the pointers are kept, the tensors must outlive it). Collective: the ranks first
 *  compare a fingerprint of their lists -- the count, each dtype and shape -- and every rank
 *  returns NULL, with a message showing the lists of rank 0 and of the first rank that differs,
 *  if any rank's list differs (or a parameter is unfit on any rank). A parameter without a
 *  gradient gets one (zeros). `config` may be NULL (defaults). Free with tg_mpi_dp_free. */
TG_API tg_mpi_dp *tg_mpi_dp_new(const tg_mpi_config *config, tg_tensor *const *params, int n);
/** Copies rank 0's parameter values to every rank (at the start, and after rank 0 loaded a
 *  checkpoint), then checks, as tg_mpi_dp_check, that every rank holds the same bytes. Collective.
 *  TG_OK, or TG_ERR_IO / TG_ERR_STATE on every rank. */
TG_API tg_status tg_mpi_dp_broadcast(tg_mpi_dp *dp);
/** Compares an XXH3-64 of the parameters' bytes over the ranks. Collective. TG_OK, or
 *  TG_ERR_STATE on every rank with a message naming the first rank whose values differ from rank
 *  0's and both hashes. */
TG_API tg_status tg_mpi_dp_check(tg_mpi_dp *dp);
/** The XXH3-64 of this rank's parameter bytes, in list order (the value tg_mpi_dp_check compares). */
TG_API uint64_t tg_mpi_dp_fingerprint(const tg_mpi_dp *dp);
/** Watches `tape` (an observer): during a step, each bucket is sent as soon as the backward pass
 *  on this tape has made all its gradients final. Attach every tape the step's backward runs on.
 *  TG_OK, or the error of tg_tape_observe. */
TG_API tg_status tg_mpi_dp_attach(tg_mpi_dp *dp, tg_tape *tape);
/** Starts a step in which this rank computes the gradient of its mean loss over `rows` of the
 *  `global_rows` rows of the global batch (rows may be 0). The gradients must hold zeros before
 *  the step's one backward pass (tg_optim_zero_grad). Not collective. TG_OK, TG_ERR_NULL,
 *  TG_ERR_VALUE (rows outside [0, global_rows]) or TG_ERR_STATE (a step is in progress). */
TG_API tg_status tg_mpi_dp_begin(tg_mpi_dp *dp, int64_t rows, int64_t global_rows);
/** Ends the step, before the optimizer step. Collective. Sends the buckets not sent yet, waits for
 *  all of them, and writes the averaged gradients into the parameters' gradients. `status` and
 *  `message` are this rank's result so far (TG_OK, or e.g. tg_backward's error and
 *  tg_tape_errmsg): if any rank passes an error, no gradient is written, and every rank returns
 *  the status of the lowest failing rank, with "rank R: <message>" in tg_mpi_errmsg(). `loss` may
 *  be NULL; otherwise it holds this rank's mean loss over its rows, and on TG_OK it becomes the
 *  global batch's mean loss (the sum of s_r * loss_r). TG_ERR_IO if MPI failed. */
TG_API tg_status tg_mpi_dp_wait(tg_mpi_dp *dp, tg_status status, const char *message, double *loss);

/** What a tg_mpi_dp has done so far, for benchmarks. */
typedef struct tg_mpi_stats {
    int64_t steps;         /**< tg_mpi_dp_wait calls that ended a step */
    int64_t buckets;       /**< buckets in the list */
    int64_t early_buckets; /**< buckets sent during backward (the rest left in tg_mpi_dp_wait) */
    double
        bytes_per_step; /**< bytes of gradients this rank sends per step, before MPI's algorithm */
    double launch_seconds; /**< time packing and starting buckets, during backward */
    double wait_seconds;   /**< time blocked in tg_mpi_dp_wait (what overlap did not hide) */
} tg_mpi_stats;

/** The statistics so far (zeros for NULL). */
TG_API tg_mpi_stats tg_mpi_dp_stats(const tg_mpi_dp *dp);
/** Stops watching the tapes it was attached to (they must still exist: free the tg_mpi_dp before
 *  its tapes) and frees the buckets and its communicator (not the parameters). Collective (as
 *  MPI_Comm_free). After a step abandoned without tg_mpi_dp_wait, with collectives still in
 *  flight, it only detaches: their buffers stay allocated rather than be freed under MPI. NULL is
 *  ignored. */
TG_API void tg_mpi_dp_free(tg_mpi_dp *dp);

/* ---- Checkpoints ------------------------------------------------------------------------------ */

/** tg_checkpoint_save on rank 0 only (the save is atomic); the other ranks write nothing.
 *  Collective: every rank returns rank 0's status, with its message. */
TG_API tg_status tg_mpi_checkpoint_save(const char *path, tg_tensor *const *params, int n,
                                        const char *const *names);
/** Resumes on every rank from one file: rank 0 runs tg_checkpoint_load, every rank learns its
 *  status, then the ranks compare the fingerprint of the `n` tensors' count, dtypes and shapes
 *  (as tg_mpi_dp_new), rank 0's values are broadcast, and the ranks check that they hold the same
 *  bytes (as tg_mpi_dp_check). `params` may hold more than a tg_mpi_dp's list (e.g. the input's
 *  standardization). Collective. TG_OK, or the first error on every rank. */
TG_API tg_status tg_mpi_checkpoint_load(const char *path, tg_tensor *const *params, int n,
                                        const char *const *names);

/* ---- The single-process reference -------------------------------------------------------------- */

/** Builds, on `tape`, the mean loss over the `n` rows `indices` (n >= 1) and returns it (a
 *  one-element tensor of the tape), or NULL after a failed builder call. */
typedef tg_tensor *(*tg_mpi_loss_fn)(tg_tape *tape, const int64_t *indices, int64_t n, void *user);

/** Gradient accumulation in one process: what `world` ranks in TG_MPI_DETERMINISTIC mode compute
 *  from the global batch `batch` (n indices), bit for bit. For r = 0 .. world-1 in order, the
 *  shard tg_mpi_shard(r, world, ...) is run as a rank would: the gradients are zeroed, the tape
 *  reset, `fn` builds the shard's mean loss (skipped for an empty shard) and tg_backward runs;
 *  the gradient scaled by tg_mpi_shard_scale is kept. Then the parameters' gradients are set to
 *  the sum in rank order, exactly as tg_mpi_dp_wait writes it. *loss (may be NULL) receives the
 *  sum of s_r * loss_r. No MPI call. TG_OK, TG_ERR_NULL / TG_ERR_VALUE / TG_ERR_DTYPE (bad
 *  arguments), TG_ERR_NOMEM, or the tape's error (message in tg_mpi_errmsg). */
TG_API tg_status tg_mpi_accumulate(tg_tape *tape, tg_tensor *const *params, int n_params, int world,
                                   const int64_t *batch, int64_t n, tg_mpi_loss_fn fn, void *user,
                                   double *loss);

#ifdef __cplusplus
}
#endif

#endif /* TAPEGRAD_MPI_H */
