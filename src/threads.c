/* threads.c -- a small pthread pool: tg_get_num_threads() - 1 sleeping workers and the caller.
 *
 * Why not OpenMP: the pool is joined when the thread count drops and at exit, so valgrind and
 * LeakSanitizer see no thread left behind, and a job costs no allocation (the zero-allocation
 * steady state holds with threads too). Workers sleep on a condition variable instead of spinning
 * because the machines this runs on are shared; a job therefore costs a wake-up of a few
 * microseconds, and callers go parallel only above a size threshold.
 *
 * Determinism: every job must compute the same result whatever the number of threads it gets (the
 * pool may run it on the caller alone). The matmul splits C into blocks of rows or columns, never
 * the inner dimension, so each element's sum runs in the same order on any thread count. */
#include "parallel.h"

#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

#define TG_MAX_THREADS 256

/* How long a worker that finished a job keeps polling for the next one before it sleeps, and how
 * long the caller polls for the workers to finish before it yields. A training step posts a job
 * every few tens of microseconds; a sleeping worker costs a futex wake-up, which on a virtual
 * machine (an inter-processor interrupt through the hypervisor) takes 20-50 us -- as long as a
 * whole 128 x 256 x 128 product. Polling for at most this long and then sleeping keeps the step
 * fast and leaves an idle program idle. */
#define TG_POOL_SPIN_NS 300000

/* One job at a time uses the pool; a caller that finds it busy runs its job alone. */
static pthread_mutex_t run_mu = PTHREAD_MUTEX_INITIALIZER;

/* The job board. `job_word` holds the job's generation (bits 9 and up) and its thread count
 * (bits 0-8) in one atomic word, so a worker reads both consistently; job_fn and job_ctx are
 * written before the word is bumped and read only by the job's participants, which must all
 * finish (job_pending 0) before the next job may replace them. */
#define TG_NTH_BITS 9
#define TG_NTH_MASK ((1ul << TG_NTH_BITS) - 1)
static atomic_ulong job_word;
static tg__job_fn job_fn;
static void *job_ctx;
static atomic_int job_pending; /* participants (other than the caller) still running */
static atomic_int n_sleeping;  /* workers blocked on pool_wake */
static atomic_bool stopping;

/* Sleeping workers wait here; pool_mu also guards the worker list. */
static pthread_mutex_t pool_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t pool_wake = PTHREAD_COND_INITIALIZER;
static pthread_t workers[TG_MAX_THREADS];
static unsigned long start_word[TG_MAX_THREADS + 1]; /* per tid: the last job before it */
static int n_workers;                                /* running workers, tids 1..n_workers */

static atomic_int num_threads; /* 0 until read from TG_NUM_THREADS */
static _Thread_local bool in_job;

static void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Waits until job_word differs from `seen` (or the pool stops): polls for TG_POOL_SPIN_NS, then
 * sleeps on pool_wake. The sleeper announces itself in n_sleeping before its last look at
 * job_word, and the poster bumps job_word before it looks at n_sleeping (both sequentially
 * consistent), so one of the two always sees the other: no wake-up is lost. */
static unsigned long wait_for_job(unsigned long seen) {
    unsigned long w;
    int64_t t0 = 0;
    for (unsigned spins = 0;; spins++) {
        w = atomic_load_explicit(&job_word, memory_order_acquire);
        if (w != seen || atomic_load_explicit(&stopping, memory_order_relaxed))
            return w;
        if ((spins & 63) == 63) {
            const int64_t t = now_ns();
            if (!t0)
                t0 = t;
            else if (t - t0 > TG_POOL_SPIN_NS)
                break;
        }
        cpu_relax();
    }
    pthread_mutex_lock(&pool_mu);
    atomic_fetch_add(&n_sleeping, 1);
    while ((w = atomic_load(&job_word)) == seen && !atomic_load(&stopping))
        pthread_cond_wait(&pool_wake, &pool_mu);
    atomic_fetch_sub(&n_sleeping, 1);
    pthread_mutex_unlock(&pool_mu);
    return w;
}

static void *worker_main(void *arg) {
    const int tid = (int)(intptr_t)arg;
    /* Not job_word: a job may have been posted between pthread_create and this line. */
    unsigned long seen = start_word[tid];
    for (;;) {
        const unsigned long w = wait_for_job(seen);
        if (atomic_load(&stopping))
            break;
        seen = w;
        if (tid < (int)(w & TG_NTH_MASK)) {
            in_job = true;
            job_fn(job_ctx, tid, (int)(w & TG_NTH_MASK));
            in_job = false;
            atomic_fetch_sub_explicit(&job_pending, 1, memory_order_release);
        }
    }
    return NULL;
}

/* Joins every worker. Caller holds run_mu (no job is running). */
static void stop_workers(void) {
    atomic_store(&stopping, true);
    pthread_mutex_lock(&pool_mu);
    pthread_cond_broadcast(&pool_wake);
    pthread_mutex_unlock(&pool_mu);
    for (int i = 0; i < n_workers; i++)
        pthread_join(workers[i], NULL);
    atomic_store(&stopping, false);
    n_workers = 0;
}

/* A forked child has none of the parent's workers: forget them, so that the child's first
 * parallel job starts its own instead of waiting for threads that do not exist. */
static void after_fork_in_child(void) {
    pthread_mutex_t fresh = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t fresh_cond = PTHREAD_COND_INITIALIZER;
    run_mu = fresh;
    pool_mu = fresh;
    pool_wake = fresh_cond;
    n_workers = 0;
    atomic_store(&job_pending, 0);
    atomic_store(&n_sleeping, 0);
    atomic_store(&stopping, false);
    in_job = false;
}
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;
static void atfork_register(void) { (void)pthread_atfork(NULL, NULL, after_fork_in_child); }

/* Starts workers up to `want` of them. Caller holds run_mu (no job runs now, so a new worker
 * waits for the next job). Returns how many run. */
static int start_workers(int want) {
    pthread_once(&atfork_once, atfork_register);
    while (n_workers < want) {
        pthread_t th;
        start_word[n_workers + 1] = atomic_load(&job_word);
        if (pthread_create(&th, NULL, worker_main, (void *)(intptr_t)(n_workers + 1)) != 0)
            break;
        workers[n_workers++] = th;
    }
    return n_workers;
}

static int parse_threads(const char *s) {
    if (!s || !*s)
        return 1;
    char *end;
    long v = strtol(s, &end, 10);
    if (*end != '\0' || v < 1)
        return 1;
    return v > TG_MAX_THREADS ? TG_MAX_THREADS : (int)v;
}

int tg_get_num_threads(void) {
    int n = atomic_load(&num_threads);
    if (n == 0) {
        int expected = 0;
        atomic_compare_exchange_strong(&num_threads, &expected,
                                       parse_threads(getenv("TG_NUM_THREADS")));
        n = atomic_load(&num_threads);
    }
    return n;
}

tg_status tg_set_num_threads(int n) {
    if (n < 1 || n > TG_MAX_THREADS)
        return tg__set_last_error(TG_ERR_VALUE,
                                  "tg_set_num_threads: %d threads asked, must be in 1..%d", n,
                                  TG_MAX_THREADS);
    pthread_mutex_lock(&run_mu);
    if (n_workers > n - 1)
        stop_workers(); /* fewer threads: release the extra ones now; the rest start on demand */
    atomic_store(&num_threads, n);
    pthread_mutex_unlock(&run_mu);
    return TG_OK;
}

void tg__parallel_run(int nth, tg__job_fn fn, void *ctx) {
    int avail = tg_get_num_threads();
    if (nth > avail)
        nth = avail;
    if (nth <= 1 || in_job || pthread_mutex_trylock(&run_mu) != 0) {
        fn(ctx, 0, 1);
        return;
    }
    int have = start_workers(nth - 1);
    if (nth > have + 1)
        nth = have + 1; /* could not start them all: fewer threads, same result */
    if (nth <= 1) {
        pthread_mutex_unlock(&run_mu);
        fn(ctx, 0, 1);
        return;
    }
    job_fn = fn;
    job_ctx = ctx;
    atomic_store_explicit(&job_pending, nth - 1, memory_order_relaxed);
    const unsigned long w = atomic_load_explicit(&job_word, memory_order_relaxed);
    atomic_store(&job_word, ((w >> TG_NTH_BITS) + 1) << TG_NTH_BITS | (unsigned long)nth);
    if (atomic_load(&n_sleeping) > 0) {
        pthread_mutex_lock(&pool_mu);
        pthread_cond_broadcast(&pool_wake);
        pthread_mutex_unlock(&pool_mu);
    }

    in_job = true;
    fn(ctx, 0, nth);
    in_job = false;

    /* The workers are running a part of the same size as ours: poll, yielding the core after a
     * while in case a worker was preempted (the machine is shared). */
    for (unsigned spins = 0; atomic_load_explicit(&job_pending, memory_order_acquire) > 0;
         spins++) {
        if (spins < 20000)
            cpu_relax();
        else
            sched_yield();
    }
    pthread_mutex_unlock(&run_mu);
}

void tg__split(int64_t n, int64_t align, int tid, int nth, int64_t *begin, int64_t *end) {
    const int64_t units = (n + align - 1) / align;
    int64_t b = units * tid / nth * align, e = units * (tid + 1) / nth * align;
    *begin = b < n ? b : n;
    *end = e < n ? e : n;
}

typedef struct range_job {
    int64_t n;
    tg__range_fn body;
    void *ctx;
} range_job;

static void range_run(void *p, int tid, int nth) {
    const range_job *j = p;
    int64_t b, e;
    tg__split(j->n, 64, tid, nth, &b, &e);
    if (b < e)
        j->body(j->ctx, b, e);
}

void tg__parallel_range(int64_t n, int64_t min_parallel, tg__range_fn body, void *ctx) {
    if (n <= 0)
        return;
    if (n < min_parallel || tg_get_num_threads() <= 1) {
        body(ctx, 0, n);
        return;
    }
    range_job j = {n, body, ctx};
    int64_t max_nth = n / (min_parallel / 2 > 0 ? min_parallel / 2 : 1);
    tg__parallel_run(max_nth > INT_MAX ? INT_MAX : (int)max_nth, range_run, &j);
}

/* At exit, join the workers so that leak checkers see no thread behind (skipped if a job is
 * still running on another thread). */
__attribute__((destructor)) static void pool_shutdown(void) {
    if (pthread_mutex_trylock(&run_mu) != 0)
        return;
    stop_workers();
    pthread_mutex_unlock(&run_mu);
}
