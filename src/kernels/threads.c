/* threads.c -- a small pthread pool: tg_get_num_threads() - 1 sleeping workers and the caller.
 *
 * Why not OpenMP: the pool is joined when the thread count drops and at exit, so valgrind and
 * LeakSanitizer see no thread left behind, and a job costs no allocation (the zero-allocation
 * steady state holds with threads too). A worker that finished a job polls for the next one for
 * a while (yielding its CPU as it does, for a caller that may share it), then sleeps on a
 * condition variable.
 *
 * Determinism: every job must compute the same result whatever the number of threads it gets (the
 * pool may run it on the caller alone). The matmul splits C into blocks of rows or columns, never
 * the inner dimension, so each element's sum runs in the same order on any thread count. */
#define _GNU_SOURCE /* syscall(SYS_futex) */
#include "parallel.h"

#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>
#if defined(__linux__)
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

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
 * (bits 0-8) in one atomic word, so a worker reads both consistently. Parts 1..nth-1 are claimed
 * from `job_claim` (same generation bits, then the next part), so a worker that wakes late for an
 * old job claims nothing. job_fn and job_ctx are written before the word is bumped and read only
 * by threads holding a claimed, unfinished part, and all parts finish (job_pending 0) before the
 * next job may replace them. */
#define TG_NTH_BITS 9
#define TG_NTH_MASK ((1ul << TG_NTH_BITS) - 1)
static atomic_ulong job_word;
static tg__job_fn job_fn;
static void *job_ctx;
static atomic_ulong job_claim;  /* the job's generation and its next unclaimed part */
static atomic_uint job_pending; /* parts other than the caller's part 0 not yet finished */
static atomic_int n_sleeping;   /* workers blocked on pool_wake */
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

/* ---- Each thread's scratch (see tg__thread_scratch in parallel.h) ----
 * A worker's lives in worker_scratch[tid], owned by the pool: the worker grows it while it runs a
 * part (the caller touches none while parts run), the caller grows it between jobs under run_mu
 * (no worker touches it then: all parts of the last job are done, and a worker that wakes late
 * for an old job claims nothing). The pool's job_word and job_pending order these writes. Any
 * other thread (a program's own threads, the caller) has one of its own, freed when the thread
 * exits (the main thread's at unload). */
typedef struct scratch {
    void *mem;
    size_t bytes;
} scratch;
static scratch worker_scratch[TG_MAX_THREADS + 1];
static _Thread_local scratch *tls_scratch;
static atomic_size_t scratch_high_water; /* the largest size any thread has asked for */
static pthread_key_t scratch_key;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;

static void scratch_release(void *p) {
    scratch *sc = p;
    if (sc) {
        free(sc->mem);
        free(sc);
    }
}
static void scratch_key_make(void) { (void)pthread_key_create(&scratch_key, scratch_release); }

/* Grows sc to at least `bytes`, and then to the high-water mark: a thread that must grow at all
 * grows once to the largest size yet. */
static void scratch_grow(scratch *sc, size_t bytes) {
    size_t mark = atomic_load_explicit(&scratch_high_water, memory_order_relaxed);
    while (mark < bytes &&
           !atomic_compare_exchange_weak_explicit(&scratch_high_water, &mark, bytes,
                                                  memory_order_relaxed, memory_order_relaxed))
        ;
    const size_t want = ((mark > bytes ? mark : bytes) + 63) & ~(size_t)63;
    free(sc->mem);
    sc->mem = aligned_alloc(64, want);
    sc->bytes = sc->mem ? want : 0;
}

static scratch *own_scratch(void) {
    if (!tls_scratch) {
        pthread_once(&scratch_once, scratch_key_make);
        scratch *sc = calloc(1, sizeof *sc);
        if (!sc)
            return NULL;
        tls_scratch = sc;
        (void)pthread_setspecific(scratch_key, sc); /* freed when the thread exits */
    }
    return tls_scratch;
}

void *tg__thread_scratch(size_t bytes) {
    scratch *sc = own_scratch();
    if (!sc)
        return NULL;
    if (sc->bytes < bytes)
        scratch_grow(sc, bytes);
    return sc->mem;
}

/* Before a job is posted (caller holds run_mu, no part runs): every worker's scratch and the
 * caller's up to the high-water mark. */
static void scratch_reserve(int workers) {
    const size_t mark = atomic_load_explicit(&scratch_high_water, memory_order_relaxed);
    if (!mark)
        return;
    for (int tid = 1; tid <= workers; tid++)
        if (worker_scratch[tid].bytes < mark)
            scratch_grow(&worker_scratch[tid], mark);
    (void)tg__thread_scratch(mark);
}

/* The main thread's: thread-exit destructors do not run for it. */
__attribute__((destructor)) static void scratch_release_main(void) {
    if (tls_scratch) { /* the main thread is never a worker: this one is its own */
        (void)pthread_setspecific(scratch_key, NULL);
        scratch_release(tls_scratch);
        tls_scratch = NULL;
    }
}

/* ---- Waiting for a word to change: poll briefly, then sleep in the kernel (futex) ----
 * Polling alone is fast on a quiet machine but, when the thread we wait for has been preempted
 * by another job, burns our own time slice for nothing: a 2-thread training step was then
 * several times slower than 1 thread. A sched_yield between polls hands the CPU to a thread of
 * ours that shares it (seen on a busy machine), not to one preempted elsewhere; so after
 * TG_WAIT_SPIN_NS the waiter sleeps until the writer's tg__wake. The writer makes the syscall
 * only when someone sleeps (n_futex_sleepers, checked after the write; the sleeper counts itself
 * before its last look, and FUTEX_WAIT rechecks the word in the kernel, so no wake-up is lost). */
#define TG_WAIT_SPIN_NS 50000
/* Both waits poll without yielding for this long first. A sched_yield is a system call, 1.2 us
 * on the AVX-512 virtual machine even with no other thread to run: a poller inside one misses the
 * word's change for that long, and a worker that comes late to a job finds its part taken by the
 * caller, which then works on rows that are in the other core's cache. Jobs of a training step
 * follow each other within microseconds, so the first wait is almost always this short. */
#define TG_YIELD_AFTER_NS 20000
static atomic_int n_futex_sleepers;

static void wait_change(atomic_uint *word, unsigned old) {
    int64_t t0 = 0;
    for (unsigned spins = 0; atomic_load_explicit(word, memory_order_acquire) == old; spins++) {
        if ((spins & 63) == 63) {
            const int64_t t = now_ns();
            if (!t0)
                t0 = t;
            else if (t - t0 > TG_WAIT_SPIN_NS)
                break;
            else if (t - t0 > TG_YIELD_AFTER_NS)
                sched_yield(); /* the thread we wait for may be waiting for this very CPU */
        }
        cpu_relax();
    }
    if (atomic_load_explicit(word, memory_order_acquire) != old)
        return;
    atomic_fetch_add(&n_futex_sleepers, 1);
    while (atomic_load(word) == old) {
#if defined(__linux__)
        syscall(SYS_futex, (unsigned *)word, FUTEX_WAIT_PRIVATE, old, NULL, NULL, 0);
#else
        sched_yield();
#endif
    }
    atomic_fetch_sub(&n_futex_sleepers, 1);
}

static void wake(atomic_uint *word) {
#if defined(__linux__)
    if (atomic_load(&n_futex_sleepers) > 0)
        syscall(SYS_futex, (unsigned *)word, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
#else
    (void)word;
#endif
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
            /* On a busy machine the caller may share this CPU: polling must not take its turn
             * for long (a 2-thread step was then slower than 1 thread). */
            else if (t - t0 > TG_YIELD_AFTER_NS)
                sched_yield();
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

/* Claims the next unstarted part of job `w` (its generation and thread count), or returns -1
 * when all are taken or the job is no longer the current one. Parts are claimed, not assigned:
 * if a worker is slow to come (preempted on a busy machine), the caller runs its part too. */
static int claim_part(unsigned long w) {
    const unsigned long gen = w >> TG_NTH_BITS, nth = w & TG_NTH_MASK;
    unsigned long c = atomic_load_explicit(&job_claim, memory_order_acquire);
    for (;;) {
        if (c >> TG_NTH_BITS != gen || (c & TG_NTH_MASK) >= nth)
            return -1;
        if (atomic_compare_exchange_weak_explicit(&job_claim, &c, c + 1, memory_order_acq_rel,
                                                  memory_order_acquire))
            return (int)(c & TG_NTH_MASK);
    }
}

/* Runs parts of job w until none is left. Each part is the same function call whichever thread
 * makes it, so the result does not depend on who ran what. */
static void run_parts(unsigned long w) {
    for (int part; (part = claim_part(w)) >= 0;) {
        in_job = true;
        job_fn(job_ctx, part, (int)(w & TG_NTH_MASK));
        in_job = false;
        if (atomic_fetch_sub_explicit(&job_pending, 1, memory_order_acq_rel) == 1)
            wake(&job_pending);
    }
}

static void *worker_main(void *arg) {
    const int tid = (int)(intptr_t)arg;
    tls_scratch = &worker_scratch[tid];
    /* Not job_word: a job may have been posted between pthread_create and this line. */
    unsigned long seen = start_word[tid];
    for (;;) {
        const unsigned long w = wait_for_job(seen);
        if (atomic_load(&stopping))
            break;
        seen = w;
        run_parts(w);
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
    for (int tid = 1; tid <= n_workers; tid++) {
        free(worker_scratch[tid].mem);
        worker_scratch[tid] = (scratch){0};
    }
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

bool tg__parallel_in_job(void) { return in_job; }

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
    scratch_reserve(have);
    job_fn = fn;
    job_ctx = ctx;
    atomic_store_explicit(&job_pending, (unsigned)(nth - 1), memory_order_relaxed);
    const unsigned long gen =
        (atomic_load_explicit(&job_word, memory_order_relaxed) >> TG_NTH_BITS) + 1;
    const unsigned long w = gen << TG_NTH_BITS | (unsigned long)nth;
    atomic_store_explicit(&job_claim, gen << TG_NTH_BITS | 1ul, memory_order_relaxed);
    atomic_store(&job_word, w);
    if (atomic_load(&n_sleeping) > 0) {
        pthread_mutex_lock(&pool_mu);
        pthread_cond_broadcast(&pool_wake);
        pthread_mutex_unlock(&pool_mu);
    }

    in_job = true;
    fn(ctx, 0, nth);
    in_job = false;
    /* Parts no worker has started yet, the caller runs itself. A job whose parts wait for each
     * other (the matmul's barrier) never gets here with parts unclaimed: part 0 returns only
     * after every part reached the barrier. */
    run_parts(w);

    /* The workers are running parts of the same size as ours: poll, then sleep. */
    for (unsigned p; (p = atomic_load_explicit(&job_pending, memory_order_acquire)) > 0;)
        wait_change(&job_pending, p);
    job_ctx = NULL; /* every part is done: nothing reads it until the next job sets it */
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

int tg__threads_for_rows(int64_t elems, int64_t rows) {
    if (rows < 2 || elems < TG_PAR_MIN_ELEMS || tg_get_num_threads() <= 1)
        return 1;
    const int64_t by_size = elems / (TG_PAR_MIN_ELEMS / 2);
    const int64_t most = by_size < rows ? by_size : rows;
    return most < INT_MAX ? (int)most : INT_MAX;
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
