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
#include <stdatomic.h>
#include <stdlib.h>

#define TG_MAX_THREADS 256

/* One job at a time uses the pool; a caller that finds it busy runs its job alone. */
static pthread_mutex_t run_mu = PTHREAD_MUTEX_INITIALIZER;

/* The job board, protected by pool_mu. */
static pthread_mutex_t pool_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t pool_wake = PTHREAD_COND_INITIALIZER;
static pthread_cond_t pool_done = PTHREAD_COND_INITIALIZER;
static pthread_t workers[TG_MAX_THREADS];
static unsigned long start_generation[TG_MAX_THREADS + 1]; /* per tid: the last job before it */
static int n_workers;                                      /* running workers, tids 1..n_workers */
static unsigned long generation;                           /* bumped for each job */
static tg__job_fn job_fn;
static void *job_ctx;
static int job_nth;
static int pending; /* workers still running the current job */
static bool stopping;

static atomic_int num_threads; /* 0 until read from TG_NUM_THREADS */
static _Thread_local bool in_job;

static void *worker_main(void *arg) {
    const int tid = (int)(intptr_t)arg;
    pthread_mutex_lock(&pool_mu);
    /* Not `generation`: a job may have been posted between pthread_create and this line. */
    unsigned long seen = start_generation[tid];
    for (;;) {
        while (generation == seen && !stopping)
            pthread_cond_wait(&pool_wake, &pool_mu);
        if (stopping)
            break;
        seen = generation;
        if (tid < job_nth) {
            tg__job_fn fn = job_fn;
            void *ctx = job_ctx;
            int nth = job_nth;
            pthread_mutex_unlock(&pool_mu);
            in_job = true;
            fn(ctx, tid, nth);
            in_job = false;
            pthread_mutex_lock(&pool_mu);
            if (--pending == 0)
                pthread_cond_signal(&pool_done);
        }
    }
    pthread_mutex_unlock(&pool_mu);
    return NULL;
}

/* Joins every worker. Caller holds run_mu (no job is running). */
static void stop_workers(void) {
    pthread_mutex_lock(&pool_mu);
    stopping = true;
    pthread_cond_broadcast(&pool_wake);
    pthread_mutex_unlock(&pool_mu);
    for (int i = 0; i < n_workers; i++)
        pthread_join(workers[i], NULL);
    pthread_mutex_lock(&pool_mu);
    stopping = false;
    n_workers = 0;
    pthread_mutex_unlock(&pool_mu);
}

/* A forked child has none of the parent's workers: forget them, so that the child's first
 * parallel job starts its own instead of waiting for threads that do not exist. */
static void after_fork_in_child(void) {
    pthread_mutex_t fresh = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t fresh_cond = PTHREAD_COND_INITIALIZER;
    run_mu = fresh;
    pool_mu = fresh;
    pool_wake = fresh_cond;
    pool_done = fresh_cond;
    n_workers = 0;
    pending = 0;
    stopping = false;
    in_job = false;
}
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;
static void atfork_register(void) { (void)pthread_atfork(NULL, NULL, after_fork_in_child); }

/* Starts workers up to `want` of them. Caller holds run_mu. Returns how many run. */
static int start_workers(int want) {
    pthread_once(&atfork_once, atfork_register);
    while (n_workers < want) {
        pthread_t th;
        /* No job runs now (we hold run_mu): the new worker must wait for the next one. */
        pthread_mutex_lock(&pool_mu);
        start_generation[n_workers + 1] = generation;
        pthread_mutex_unlock(&pool_mu);
        if (pthread_create(&th, NULL, worker_main, (void *)(intptr_t)(n_workers + 1)) != 0)
            break;
        pthread_mutex_lock(&pool_mu);
        workers[n_workers++] = th;
        pthread_mutex_unlock(&pool_mu);
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
    pthread_mutex_lock(&pool_mu);
    job_fn = fn;
    job_ctx = ctx;
    job_nth = nth;
    pending = nth - 1;
    generation++;
    pthread_cond_broadcast(&pool_wake);
    pthread_mutex_unlock(&pool_mu);

    in_job = true;
    fn(ctx, 0, nth);
    in_job = false;

    pthread_mutex_lock(&pool_mu);
    while (pending > 0)
        pthread_cond_wait(&pool_done, &pool_mu);
    pthread_mutex_unlock(&pool_mu);
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
