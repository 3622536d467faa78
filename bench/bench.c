/* bench.c -- tapegrad's benchmarks, one JSON line per result on stdout.
 *
 *   matmul      the CPU's cache sizes and measured FMA peak (a register-only loop, per vector
 *               width, 1 and 2 threads); then f32 and f64 C = op(A) op(B) for n x n, n = 256..2048,
 *               the Fashion-MNIST step's first-layer shapes (128x784x256 and its transposes),
 *               the CNN's first linear layer (128x3136 times 3136x128, and its backward's two
 *               products), and
 *               small products (attention's 16^3 per head, the 2-4-2 network's [200,2]x[2,4]):
 *               tapegrad's own kernel (TG_KERNEL's if set, else the best SIMD one), OpenBLAS
 *               (when found at build time; same process, same data, runs alternating), a naive
 *               loop at small n. GFLOP/s = 2MNK / best time; of_fma_peak = that / the peak.
 *               With OPENBLAS_CORETYPE set, the OpenBLAS lines are run again in a child process
 *               with it unset (OpenBLAS reads it once, at load), i.e. with its own choice of kernel.
 *   circles     the course report's 2-4-2 tanh network on 200 points: one training step
 *               (tape reset, forward, softmax cross-entropy, backward, plain SGD on the four
 *               parameters through tg_tensor_data). Microseconds per step.
 *   mlp         a 784-256-128-10 ReLU MLP step on a random batch of 128 (forward, backward,
 *               SGD through tg_optim, zeroing the gradients), as Fashion-MNIST training would run
 *               it. Samples per second.
 * Each at 1 and 2 threads (tg_set_num_threads, and openblas_set_num_threads for OpenBLAS).
 *
 * Usage: tg_bench [--quick] [--only matmul|circles|mlp|cpu]   (--quick: n <= 512, fewer steps;
 *        --only cpu: the machine line alone) */
#include "kernels/parallel.h"

#include <dirent.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#ifdef TG_BENCH_OPENBLAS
#include <cblas.h>
#endif

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static long peak_rss_kib(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss;
}

static int quick;

#define TG_BENCH_MAX_THREADS 256

/* ---- FMA peak: a register-only loop of independent multiply-adds, per vector width ----
 * 16 accumulators (more than latency x ports on current cores) and no memory access: the most
 * multiply-adds this core retires per second at this width, the ceiling for any matmul kernel. */

#define PEAK_ACC(X)                                                                                \
    X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11) X(12) X(13) X(14) X(15)
#define PEAK_DECL(i) vt a##i = vset1((double)(i));
#define PEAK_FMA(i) a##i = vfma(a##i, x, y);
#define PEAK_ADD(i) s = vadd(s, a##i);
/* The loop, for the vector type vt and its vset1, vfma, vadd defined by the caller. */
#define PEAK_BODY                                                                                  \
    const vt x = vset1(0.999999), y = vset1(1e-7);                                                 \
    PEAK_ACC(PEAK_DECL)                                                                            \
    for (int64_t i = 0; i < iters; i++) {                                                          \
        PEAK_ACC(PEAK_FMA)                                                                         \
        __asm__ volatile("" : "+x"(a0), "+x"(a1), "+x"(a2), "+x"(a3));                             \
    }                                                                                              \
    vt s = vset1(0);                                                                               \
    PEAK_ACC(PEAK_ADD)                                                                             \
    double out;                                                                                    \
    memcpy(&out, &s, sizeof out);                                                                  \
    return out;

#if defined(__x86_64__)
#include <immintrin.h>
__attribute__((target("avx512f"))) static double peak_avx512_f32(int64_t iters) {
    typedef __m512 vt;
#define vset1(v) _mm512_set1_ps((float)(v))
#define vfma _mm512_fmadd_ps
#define vadd _mm512_add_ps
    PEAK_BODY
#undef vset1
#undef vfma
#undef vadd
}
__attribute__((target("avx512f"))) static double peak_avx512_f64(int64_t iters) {
    typedef __m512d vt;
#define vset1(v) _mm512_set1_pd(v)
#define vfma _mm512_fmadd_pd
#define vadd _mm512_add_pd
    PEAK_BODY
#undef vset1
#undef vfma
#undef vadd
}
__attribute__((target("avx2,fma"))) static double peak_avx2_f32(int64_t iters) {
    typedef __m256 vt;
#define vset1(v) _mm256_set1_ps((float)(v))
#define vfma _mm256_fmadd_ps
#define vadd _mm256_add_ps
    PEAK_BODY
#undef vset1
#undef vfma
#undef vadd
}
__attribute__((target("avx2,fma"))) static double peak_avx2_f64(int64_t iters) {
    typedef __m256d vt;
#define vset1(v) _mm256_set1_pd(v)
#define vfma _mm256_fmadd_pd
#define vadd _mm256_add_pd
    PEAK_BODY
#undef vset1
#undef vfma
#undef vadd
}
#endif

typedef struct peak_job {
    double (*fn)(int64_t);
    int64_t iters;
    double sink[TG_BENCH_MAX_THREADS];
} peak_job;

typedef struct peak_arg {
    peak_job *j;
    int tid;
} peak_arg;

static void *peak_thread(void *p) {
    peak_arg *a = p;
    a->j->sink[a->tid] = a->j->fn(a->j->iters);
    return NULL;
}

/* The loop on `threads` threads of their own, all at once. Not through the library's pool: the
 * pool lets its caller run a part a worker has not claimed yet, which is right for the library
 * and wrong for a peak (a late worker halves it). */
static void peak_threads(peak_job *j, int threads) {
    pthread_t th[TG_BENCH_MAX_THREADS];
    peak_arg args[TG_BENCH_MAX_THREADS];
    int started = 0;
    for (int t = 1; t < threads; t++) {
        args[t] = (peak_arg){j, t};
        if (pthread_create(&th[t], NULL, peak_thread, &args[t]) == 0)
            started = t;
    }
    args[0] = (peak_arg){j, 0};
    peak_thread(&args[0]);
    for (int t = 1; t <= started; t++)
        pthread_join(th[t], NULL);
}

/* Core-to-core latency: the round trip of a cache line between two threads that hand a counter
 * back and forth (best of a few rounds), in ns. What a thread pays to see another's write: on
 * one die it is tens of ns; between the vCPUs of some virtual machines, hundreds. */
static atomic_int pingpong_word;
static void *pingpong_peer(void *p) {
    const int n = *(const int *)p;
    for (int i = 0; i < n; i++) {
        while (atomic_load_explicit(&pingpong_word, memory_order_acquire) != 2 * i + 1)
            ;
        atomic_store_explicit(&pingpong_word, 2 * i + 2, memory_order_release);
    }
    return NULL;
}
static double pingpong_ns(void) {
    int n = 20000;
    double best = -1;
    for (int r = 0; r < 3; r++) {
        atomic_store(&pingpong_word, 0);
        pthread_t th;
        if (pthread_create(&th, NULL, pingpong_peer, &n) != 0)
            return -1;
        const double t0 = now();
        for (int i = 0; i < n; i++) {
            atomic_store_explicit(&pingpong_word, 2 * i + 1, memory_order_release);
            while (atomic_load_explicit(&pingpong_word, memory_order_acquire) != 2 * i + 2)
                ;
        }
        const double dt = (now() - t0) / n * 1e9;
        pthread_join(th, NULL);
        if (best < 0 || dt < best)
            best = dt;
    }
    return best;
}

/* What a line the other core touched costs. A 128 KiB buffer (a [128, 256] float32 activation,
 * which stays in one core's L2), GB/s of four passes, the median of 201 rounds each (not the
 * best: in a round where the scheduler ran both threads on one core, this core would find the
 * lines in its own cache):
 *   read_own         reading a buffer this thread just wrote;
 *   read_other       reading one the other thread just wrote (each line crosses);
 *   write_own        writing a buffer only this thread touches;
 *   write_after_read writing one the other thread just read (each store must first take the
 *                    line from the other core's cache).
 * A two-thread training step pays the second wherever an op reads rows another thread wrote,
 * and the fourth wherever it writes memory the other thread read in the step before. */
#define XFER_WORDS ((size_t)16384) /* 128 KiB of uint64_t */
#define XFER_ROUNDS 201
static int cmp_double(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}
static atomic_int xfer_word;
static uint64_t *xfer_buf;
static volatile uint64_t xfer_sink;
static void xfer_fill(uint64_t seed) { /* plain stores, as an op's loop makes them */
    for (size_t j = 0; j < XFER_WORDS; j += 8)
        for (int l = 0; l < 8; l++)
            xfer_buf[j + l] = seed + (uint64_t)l;
}
static uint64_t xfer_read(void) {
    uint64_t acc[8] = {0};
    for (size_t j = 0; j < XFER_WORDS; j += 8)
        for (int l = 0; l < 8; l++)
            acc[l] ^= xfer_buf[j + l];
    return acc[0] ^ acc[1] ^ acc[2] ^ acc[3] ^ acc[4] ^ acc[5] ^ acc[6] ^ acc[7];
}
typedef struct xfer_arg {
    int rounds;
    bool peer_writes; /* else the peer reads */
} xfer_arg;
static void *xfer_peer(void *p) {
    const xfer_arg *a = p;
    for (int i = 0; i < a->rounds; i++) {
        while (atomic_load_explicit(&xfer_word, memory_order_acquire) != 2 * i + 1)
            ;
        if (a->peer_writes)
            xfer_fill((uint64_t)i);
        else
            xfer_sink ^= xfer_read();
        atomic_store_explicit(&xfer_word, 2 * i + 2, memory_order_release);
    }
    return NULL;
}
/* GB/s of the median of t[0..n) */
static double xfer_rate(double *t, int n) {
    qsort(t, (size_t)n, sizeof t[0], cmp_double);
    return (double)(XFER_WORDS * sizeof(uint64_t)) / t[n / 2] * 1e-9;
}
/* One pass timed per round, this thread writing (else reading); with the peer's pass (a write
 * when this one reads, a read when it writes) before each, or none. GB/s, -1 if no thread. */
static double xfer_pass(bool write, bool with_peer) {
    double t[XFER_ROUNDS];
    const int n = XFER_ROUNDS;
    xfer_arg arg = {n, !write};
    pthread_t th;
    atomic_store(&xfer_word, 0);
    if (with_peer && pthread_create(&th, NULL, xfer_peer, &arg) != 0)
        return -1;
    for (int i = 0; i < n; i++) {
        if (!with_peer || write)
            xfer_fill((uint64_t)i); /* this thread's lines (which the peer then reads) */
        if (with_peer) {
            atomic_store_explicit(&xfer_word, 2 * i + 1, memory_order_release);
            while (atomic_load_explicit(&xfer_word, memory_order_acquire) != 2 * i + 2)
                ;
        }
        const double t0 = now();
        if (write)
            xfer_fill((uint64_t)i + 1);
        else
            xfer_sink ^= xfer_read();
        t[i] = now() - t0;
    }
    if (with_peer)
        pthread_join(th, NULL);
    return xfer_rate(t, n);
}
/* gbps: read_own, read_other, write_own, write_after_read; -1 where not measured. */
static void xfer_gbps(double gbps[4]) {
    gbps[0] = gbps[1] = gbps[2] = gbps[3] = -1;
    xfer_buf = aligned_alloc(64, XFER_WORDS * sizeof(uint64_t));
    if (!xfer_buf)
        return;
    gbps[0] = xfer_pass(false, false);
    gbps[1] = xfer_pass(false, true);
    gbps[2] = xfer_pass(true, false);
    gbps[3] = xfer_pass(true, true);
    free(xfer_buf);
}

/* The "cpu" line: the cache sizes the blocks come from, the load average (other jobs on a shared
 * machine), and how far apart two threads' cores are (pingpong_ns, xfer_gbps). On a virtual
 * machine the last changes when the host moves the vCPUs: the comparison scripts print this line
 * before and after their runs (tg_bench --only cpu). */
static void print_cpu_line(void) {
    int64_t cs[3];
    tg__gemm_cache_sizes(cs);
    double load = -1;
    FILE *f = fopen("/proc/loadavg", "r");
    if (f) {
        if (fscanf(f, "%lf", &load) != 1)
            load = -1;
        fclose(f);
    }
    double xfer[4];
    xfer_gbps(xfer);
    printf("{\"bench\":\"cpu\",\"l1d_bytes\":%lld,\"l2_bytes\":%lld,\"l3_bytes\":%lld,"
           "\"loadavg_1min\":%.2f,\"core_to_core_round_trip_ns\":%.0f,"
           "\"read_own_128k_gb_s\":%.1f,\"read_other_cores_128k_gb_s\":%.1f,"
           "\"write_own_128k_gb_s\":%.1f,\"write_after_other_core_read_128k_gb_s\":%.1f}\n",
           (long long)cs[0], (long long)cs[1], (long long)cs[2], load, pingpong_ns(), xfer[0],
           xfer[1], xfer[2], xfer[3]);
    fflush(stdout);
}

/* GFLOP/s of the FMA loop on `threads` threads (each runs it), best of a few runs. */
static double fma_peak(tg__kernel_id width, tg_dtype dt, int threads) {
    peak_job j = {.iters = quick ? 2000000 : 10000000};
    int lanes = 0;
#if defined(__x86_64__)
    if (width == TG_KERNEL_AVX512) {
        j.fn = dt == TG_F32 ? peak_avx512_f32 : peak_avx512_f64;
        lanes = dt == TG_F32 ? 16 : 8;
    } else if (width == TG_KERNEL_AVX2) {
        j.fn = dt == TG_F32 ? peak_avx2_f32 : peak_avx2_f64;
        lanes = dt == TG_F32 ? 8 : 4;
    }
#endif
    if (!j.fn || !tg__kernel_available(width))
        return 0;
    tg_set_num_threads(threads);
    double best = 1e30;
    for (int r = 0; r < 5; r++) {
        const double t0 = now();
        peak_threads(&j, threads);
        const double el = now() - t0;
        if (r > 0 && el < best)
            best = el;
    }
    tg_set_num_threads(1);
    return (double)j.iters * 16 * lanes * 2 * threads / best * 1e-9;
}

/* ---- matmul ---- */

static void naive_sgemm(int64_t n, const float *A, const float *B, float *C) {
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < n; j++) {
            float s = 0;
            for (int64_t k = 0; k < n; k++)
                s += A[i * n + k] * B[k * n + j];
            C[i * n + j] = s;
        }
}

typedef enum { IMPL_OWN, IMPL_OPENBLAS, IMPL_NAIVE } impl;

/* One product C = op(A) op(B), op(A) [M,K], op(B) [K,N], all tightly packed. */
typedef struct gemm_shape {
    bool ta, tb;
    int64_t M, N, K;
} gemm_shape;

static double run_once(impl which, tg_dtype dt, const gemm_shape *g, const void *A, const void *B,
                       void *C) {
    const int64_t lda = g->ta ? g->M : g->K, ldb = g->tb ? g->K : g->N;
    const double t0 = now();
    switch (which) {
    case IMPL_OWN: tg__gemm(dt, g->ta, g->tb, g->M, g->N, g->K, A, lda, B, ldb, 0, C, g->N); break;
    case IMPL_NAIVE: naive_sgemm(g->M, A, B, C); break;
    case IMPL_OPENBLAS:
#ifdef TG_BENCH_OPENBLAS
        if (dt == TG_F32)
            cblas_sgemm(CblasRowMajor, g->ta ? CblasTrans : CblasNoTrans,
                        g->tb ? CblasTrans : CblasNoTrans, (int)g->M, (int)g->N, (int)g->K, 1.0f, A,
                        (int)lda, B, (int)ldb, 0.0f, C, (int)g->N);
        else
            cblas_dgemm(CblasRowMajor, g->ta ? CblasTrans : CblasNoTrans,
                        g->tb ? CblasTrans : CblasNoTrans, (int)g->M, (int)g->N, (int)g->K, 1.0, A,
                        (int)lda, B, (int)ldb, 0.0, C, (int)g->N);
#endif
        break;
    }
    return now() - t0;
}

/* Waits (at most half a second) until every other thread of this process sleeps: state S in
 * /proc/self/task/<tid>/stat. OpenBLAS's threads keep spinning for a while after each call (up to
 * 2^28 TSC cycles, about 0.1 s, by default) and tapegrad's poll for 20 us; a product timed while
 * the other library's threads still spin shares the two cores with them. Returns the seconds
 * waited, or -1 when the threads cannot be read (then it has waited the half second). */
static void sleep_s(double s) {
    const struct timespec ts = {.tv_sec = (time_t)s,
                                .tv_nsec = (long)((s - (double)(time_t)s) * 1e9)};
    nanosleep(&ts, NULL);
}

/* (called on the main thread, whose thread id is the process id) */
static double wait_threads_idle(void) {
    const double t0 = now();
    const int self = (int)getpid();
    while (now() - t0 < 0.5) {
        DIR *d = opendir("/proc/self/task");
        if (!d) {
            sleep_s(0.5);
            return -1;
        }
        bool busy = false;
        for (struct dirent *e; !busy && (e = readdir(d)) != NULL;) {
            if (e->d_name[0] < '0' || e->d_name[0] > '9' || atoi(e->d_name) == self)
                continue;
            char path[300], buf[256];
            snprintf(path, sizeof path, "/proc/self/task/%s/stat", e->d_name);
            FILE *f = fopen(path, "r");
            if (!f)
                continue;
            const size_t got = fread(buf, 1, sizeof buf - 1, f);
            fclose(f);
            buf[got] = 0;
            const char *close = strrchr(buf, ')'); /* "tid (name) S ..." */
            busy = close && close[1] == ' ' && close[2] == 'R';
        }
        closedir(d);
        if (!busy)
            return now() - t0;
        sleep_s(0.002);
    }
    return now() - t0;
}

/* GFLOP/s of each of the `n_impls` implementations, from its best run. Each implementation runs
 * in a block of its own (a warm-up call, then `reps` timed ones), started only once the threads
 * of the other have gone to sleep (wait_threads_idle): alternating single calls, as this did
 * before, timed tapegrad's 2-thread 256^3 at 184 GFLOP/s (400 alone) while OpenBLAS's spinning
 * thread held a core. Three rounds of blocks, alternating, so that a burst of load on a shared
 * machine hits both. */
static void time_gemm(const impl *which, int n_impls, tg_dtype dt, const gemm_shape *g,
                      const void *A, const void *B, void *C, double *gflops) {
    const double flop = 2.0 * (double)g->M * (double)g->N * (double)g->K;
    int reps = which[0] == IMPL_NAIVE ? 2 : flop > 4e9 ? 3 : flop > 2e8 ? 5 : 10;
    const int rounds = which[0] == IMPL_NAIVE ? 1 : quick ? 2 : 3;
    if (quick)
        reps = reps > 3 ? 3 : reps;
    /* small products: time a batch of calls (some microseconds at least) */
    const int inner = flop < 1e6 ? 1000 : flop < 1e8 ? 20 : 1;
    double best[4] = {1e30, 1e30, 1e30, 1e30};
    for (int round = 0; round < rounds; round++)
        for (int i = 0; i < n_impls; i++) {
            if (n_impls > 1)
                (void)wait_threads_idle();
            for (int r = 0; r < reps + 1; r++) { /* run 0 warms caches and pack buffers */
                double dtime = 0;
                for (int k = 0; k < inner; k++)
                    dtime += run_once(which[i], dt, g, A, B, C);
                if (r > 0 && dtime / inner < best[i])
                    best[i] = dtime / inner;
            }
        }
    for (int i = 0; i < n_impls; i++)
        gflops[i] = flop / best[i] * 1e-9;
}

static int openblas_child; /* this process is the re-run with OPENBLAS_CORETYPE unset */

static void bench_matmul(void) {
    /* The own kernel: TG_KERNEL's if it names an own kernel this CPU runs, else the best SIMD
     * one available (even if the library defaults to OpenBLAS). */
    tg__kernel_id own = TG_KERNEL_PORTABLE;
    for (int id = TG_KERNEL_AVX512; id >= TG_KERNEL_PORTABLE; id--)
        if (tg__kernel_available((tg__kernel_id)id)) {
            own = (tg__kernel_id)id;
            break;
        }
    const char *want = getenv("TG_KERNEL");
    for (int id = TG_KERNEL_PORTABLE; want && id <= TG_KERNEL_AVX512; id++)
        if (strcmp(want, tg__kernel_id_name((tg__kernel_id)id)) == 0 &&
            tg__kernel_available((tg__kernel_id)id))
            own = (tg__kernel_id)id;
    tg__kernel_set(own);

    /* The machine: cache sizes (which set the blocks), how far apart its cores are, and the FMA
     * peak per width and thread. */
    if (!openblas_child)
        print_cpu_line();
    double peak[2][3] = {{0}}; /* [dtype][threads] for the own kernel's width */
    const tg__kernel_id widths[2] = {TG_KERNEL_AVX512, TG_KERNEL_AVX2};
    for (int w = 0; w < 2; w++)
        for (int d = 0; d < 2; d++)
            for (int threads = 1; threads <= 2; threads++) {
                const double gf = fma_peak(widths[w], d ? TG_F64 : TG_F32, threads);
                if (gf <= 0)
                    continue;
                if (widths[w] == own)
                    peak[d][threads] = gf;
                if (!openblas_child)
                    printf(
                        "{\"bench\":\"fma_peak\",\"width\":\"%s\",\"dtype\":\"%s\",\"threads\":%d,"
                        "\"gflops\":%.1f}\n",
                        tg__kernel_id_name(widths[w]), d ? "f64" : "f32", threads, gf);
                fflush(stdout);
            }

    const gemm_shape shapes[] = {
        {false, false, 256, 256, 256},
        {false, false, 512, 512, 512},
        {false, false, 1024, 1024, 1024},
        {false, false, 2048, 2048, 2048},
        /* the Fashion-MNIST step's first layer: forward X W1, dX = dY W1^T, dW1 = X^T dY */
        {false, false, 128, 256, 784},
        {false, true, 128, 784, 256},
        {true, false, 784, 256, 128},
        /* the Fashion-MNIST CNN's first linear layer (3136 -> 128, batch 128): forward X W^T,
         * dX = dY W and dW = dY^T X */
        {false, true, 128, 128, 3136},
        {false, false, 128, 3136, 128},
        {true, false, 128, 3136, 128},
        /* small products (tg__gemm's direct kernels): the char-level transformer's per-head
         * attention, [16,16] x [16,16] as S = Q K^T, Y = P V and dK = dS^T Q; the 2-4-2
         * network's [200,2] x [2,4], its backward dH = dY W^T and dW = X^T dH; and 64^3 */
        {false, true, 16, 16, 16},
        {false, false, 16, 16, 16},
        {true, false, 16, 16, 16},
        {false, false, 200, 4, 2},
        {false, true, 200, 4, 2},
        {true, false, 2, 4, 200},
        {false, false, 64, 64, 64},
    };
    const int n_shapes = sizeof shapes / sizeof shapes[0];
    const int64_t nmax = quick ? 512 : 2048;
    double *A = aligned_alloc(64, sizeof(double) * (size_t)(nmax * nmax));
    double *B = aligned_alloc(64, sizeof(double) * (size_t)(nmax * nmax));
    double *C = aligned_alloc(64, sizeof(double) * (size_t)(nmax * nmax));
    if (!A || !B || !C) {
        fprintf(stderr, "tg_bench: out of memory\n");
        exit(1);
    }
    const char *corename = "";
#ifdef TG_BENCH_OPENBLAS
    corename = openblas_get_corename();
#endif
    const char *coretype = getenv("OPENBLAS_CORETYPE");
    for (int d = 0; d < 2; d++) {
        const tg_dtype dt = d ? TG_F64 : TG_F32;
        tg_rng rng;
        tg_rng_seed(&rng, 1);
        for (int64_t i = 0; i < nmax * nmax; i++) {
            const double a = tg_rng_uniform(&rng) - 0.5, b = tg_rng_uniform(&rng) - 0.5;
            if (d)
                A[i] = a, B[i] = b;
            else
                ((float *)A)[i] = (float)a, ((float *)B)[i] = (float)b;
        }
        for (int s = 0; s < n_shapes; s++) {
            const gemm_shape *g = &shapes[s];
            if (g->M * g->K > nmax * nmax || g->K * g->N > nmax * nmax ||
                g->M * g->N > nmax * nmax) /* the buffers hold nmax^2 elements */
                continue;
            int64_t mc, kc, nc;
            tg__gemm_blocks(d ? (own == TG_KERNEL_AVX512 ? &tg__uk_avx512_f64 : &tg__uk_avx2_f64)
                              : (own == TG_KERNEL_AVX512 ? &tg__uk_avx512_f32 : &tg__uk_avx2_f32),
                            d ? 8 : 4, &mc, &kc, &nc);
            for (int threads = 1; threads <= 2; threads++) {
                tg_set_num_threads(threads);
                impl which[2] = {IMPL_OWN, IMPL_OPENBLAS};
                double gf[2];
#ifdef TG_BENCH_OPENBLAS
                openblas_set_num_threads(threads);
                time_gemm(which, 2, dt, g, A, B, C, gf);
#else
                time_gemm(which, 1, dt, g, A, B, C, gf);
#endif
                char shape[96];
                snprintf(shape, sizeof shape,
                         "\"ta\":%d,\"tb\":%d,\"M\":%lld,\"N\":%lld,\"K\":%lld", g->ta, g->tb,
                         (long long)g->M, (long long)g->N, (long long)g->K);
                if (!openblas_child) {
                    printf("{\"bench\":\"matmul\",\"impl\":\"tapegrad-%s\",\"dtype\":\"%s\",%s,"
                           "\"threads\":%d,\"gflops\":%.2f,\"of_fma_peak\":%.3f,"
                           "\"blocks\":[%lld,%lld,%lld]}\n",
                           tg__kernel_id_name(own), d ? "f64" : "f32", shape, threads, gf[0],
                           peak[d][threads] > 0 ? gf[0] / peak[d][threads] : 0.0, (long long)mc,
                           (long long)kc, (long long)nc);
                }
#ifdef TG_BENCH_OPENBLAS
                printf("{\"bench\":\"matmul\",\"impl\":\"openblas\",\"core\":\"%s\","
                       "\"OPENBLAS_CORETYPE\":\"%s\",\"dtype\":\"%s\",%s,\"threads\":%d,"
                       "\"gflops\":%.2f,\"of_fma_peak\":%.3f,\"tapegrad_over_openblas\":%.2f}\n",
                       corename, coretype ? coretype : "", d ? "f64" : "f32", shape, threads, gf[1],
                       peak[d][threads] > 0 ? gf[1] / peak[d][threads] : 0.0, gf[0] / gf[1]);
#else
                (void)corename, (void)coretype;
#endif
                fflush(stdout);
            }
            if (!d && !g->ta && !g->tb && g->M == g->N && g->M == g->K && g->M <= 512 &&
                !openblas_child) {
                impl naive = IMPL_NAIVE;
                double gf;
                time_gemm(&naive, 1, dt, g, A, B, C, &gf);
                printf("{\"bench\":\"matmul\",\"impl\":\"naive\",\"dtype\":\"f32\",\"M\":%lld,"
                       "\"N\":%lld,\"K\":%lld,\"threads\":1,\"gflops\":%.2f}\n",
                       (long long)g->M, (long long)g->N, (long long)g->K, gf);
                fflush(stdout);
            }
        }
    }
    tg_set_num_threads(1);
    free(A), free(B), free(C);
}

/* OPENBLAS_CORETYPE is read once, when OpenBLAS is loaded, so the lines for OpenBLAS's own
 * choice of kernel (its AVX-512 one on such CPUs) come from a second run of this program with
 * the variable removed; the tapegrad side runs in that child too, alternating, so each ratio is
 * still from one process. */
static void rerun_without_coretype(char **argv) {
#ifdef TG_BENCH_OPENBLAS
    const char *ct = getenv("OPENBLAS_CORETYPE");
    if (!ct || !*ct || openblas_child)
        return;
    fflush(stdout);
    const pid_t pid = fork();
    if (pid == 0) {
        unsetenv("OPENBLAS_CORETYPE");
        char *args[] = {argv[0], "--only", "matmul", "--openblas-child", quick ? "--quick" : NULL,
                        NULL};
        execv("/proc/self/exe", args);
        _exit(127);
    }
    int status;
    if (pid > 0)
        waitpid(pid, &status, 0);
#else
    (void)argv;
#endif
}

/* ---- plain SGD on leaves, inline ---- */

static void sgd(tg_tensor *const *params, int n, float lr) {
    for (int i = 0; i < n; i++) {
        float *w = tg_tensor_data(params[i]);
        const float *g = tg_tensor_cdata(tg_tensor_grad(params[i]));
        const int64_t len = tg_tensor_numel(params[i]);
        for (int64_t k = 0; k < len; k++)
            w[k] -= lr * g[k];
        tg_tensor_zero_grad(params[i]);
    }
}

static tg_tensor *param(tg_rng *rng, int64_t rows, int64_t cols, double bound) {
    tg_tensor *p = cols ? tg_tensor_rand(TG_F32, TG_SHAPE(rows, cols), -bound, bound, rng)
                        : tg_tensor_rand(TG_F32, TG_SHAPE(rows), -bound, bound, rng);
    tg_tensor_set_requires_grad(p, 1);
    return p;
}

/* ---- circles: 2-4-2, tanh, softmax cross-entropy, 200 points ---- */

static void bench_circles(void) {
    enum { NPTS = 200 };
    tg_rng rng;
    tg_rng_seed(&rng, 42);
    float xs[NPTS * 2];
    int32_t ys[NPTS];
    for (int i = 0; i < NPTS; i++) { /* two noisy concentric circles, radii 0.5 and 1 */
        const double r = (i % 2 ? 1.0 : 0.5) + 0.1 * tg_rng_normal(&rng);
        const double a = 6.283185307179586 * tg_rng_uniform(&rng);
        xs[2 * i] = (float)(r * cos(a));
        xs[2 * i + 1] = (float)(r * sin(a));
        ys[i] = i % 2;
    }
    tg_tensor *X = tg_tensor_from(TG_F32, TG_SHAPE(NPTS, 2), xs);
    tg_tensor *Y = tg_tensor_from(TG_I32, TG_SHAPE(NPTS), ys);
    tg_tensor *P[4] = {param(&rng, 2, 4, 0.7), param(&rng, 4, 0, 0.7), param(&rng, 4, 2, 0.5),
                       param(&rng, 2, 0, 0.5)};
    tg_tape *t = tg_tape_new();
    const int steps = quick ? 2000 : 20000;
    for (int threads = 1; threads <= 2; threads++) {
        tg_set_num_threads(threads);
        double best = 1e30, loss = 0;
        for (int rep = 0; rep < 4; rep++) { /* rep 0 warms up (arena sizing) */
            const double t0 = now();
            for (int s = 0; s < steps; s++) {
                tg_tape_reset(t);
                tg_tensor *h = tg_tanh(t, tg_add(t, tg_matmul(t, X, P[0]), P[1]));
                tg_tensor *l =
                    tg_softmax_cross_entropy(t, tg_add(t, tg_matmul(t, h, P[2]), P[3]), Y);
                if (tg_backward(t, l) != TG_OK) {
                    fprintf(stderr, "tg_bench: %s\n", tg_tape_errmsg(t));
                    exit(1);
                }
                loss = tg_tensor_item(l);
                sgd(P, 4, 0.1f);
            }
            const double dt = (now() - t0) / steps;
            if (rep > 0 && dt < best)
                best = dt;
        }
        printf("{\"bench\":\"circles\",\"impl\":\"tapegrad\",\"threads\":%d,\"points\":%d,"
               "\"us_per_step\":%.3f,\"loss\":%.4f}\n",
               threads, NPTS, best * 1e6, loss);
        fflush(stdout);
    }
    tg_set_num_threads(1);
    tg_tape_free(t);
    for (int i = 0; i < 4; i++)
        tg_tensor_free(P[i]);
    tg_tensor_free(X), tg_tensor_free(Y);
}

/* ---- MLP 784-256-128-10, ReLU, batch 128, random data ---- */

static void bench_mlp(void) {
    enum { BATCH = 128, IN = 784 };
    tg_rng rng;
    tg_rng_seed(&rng, 7);
    tg_tensor *X = tg_tensor_rand(TG_F32, TG_SHAPE(BATCH, IN), 0, 1, &rng);
    int32_t ys[BATCH];
    for (int i = 0; i < BATCH; i++)
        ys[i] = (int32_t)tg_rng_below(&rng, 10);
    tg_tensor *Y = tg_tensor_from(TG_I32, TG_SHAPE(BATCH), ys);
    tg_tensor *P[6] = {param(&rng, IN, 256, 0.087),  param(&rng, 256, 0, 0.0),
                       param(&rng, 256, 128, 0.125), param(&rng, 128, 0, 0.0),
                       param(&rng, 128, 10, 0.2),    param(&rng, 10, 0, 0.0)};
    tg_tape *t = tg_tape_new();
    const tg_optim_config cfg = tg_optim_defaults(TG_OPTIM_SGD, 0.01);
    tg_optim *opt = tg_optim_new(&cfg, P, 6);
    if (!opt) {
        fprintf(stderr, "tg_bench: %s\n", tg_last_errmsg());
        exit(1);
    }
    const int steps = quick ? 20 : 200;
    for (int threads = 1; threads <= 2; threads++) {
        tg_set_num_threads(threads);
        double best = 1e30;
        for (int rep = 0; rep < 4; rep++) {
            const double t0 = now();
            for (int s = 0; s < steps; s++) {
                tg_tape_reset(t);
                tg_tensor *h1 = tg_relu(t, tg_add(t, tg_matmul(t, X, P[0]), P[1]));
                tg_tensor *h2 = tg_relu(t, tg_add(t, tg_matmul(t, h1, P[2]), P[3]));
                tg_tensor *l =
                    tg_softmax_cross_entropy(t, tg_add(t, tg_matmul(t, h2, P[4]), P[5]), Y);
                tg_optim_zero_grad(opt);
                if (tg_backward(t, l) != TG_OK || tg_optim_step(opt) != TG_OK) {
                    fprintf(stderr, "tg_bench: %s %s\n", tg_tape_errmsg(t), tg_last_errmsg());
                    exit(1);
                }
            }
            const double dt = (now() - t0) / steps;
            if (rep > 0 && dt < best)
                best = dt;
        }
        printf("{\"bench\":\"mlp\",\"impl\":\"tapegrad\",\"kernel\":\"%s\",\"threads\":%d,"
               "\"batch\":%d,\"us_per_step\":%.1f,\"samples_per_s\":%.0f}\n",
               tg_kernel_name(), threads, BATCH, best * 1e6, BATCH / best);
        fflush(stdout);
    }
    tg_set_num_threads(1);
    tg_optim_free(opt);
    tg_tape_free(t);
    for (int i = 0; i < 6; i++)
        tg_tensor_free(P[i]);
    tg_tensor_free(X), tg_tensor_free(Y);
}

int main(int argc, char **argv) {
    const char *only = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--quick") == 0)
            quick = 1;
        else if (strcmp(argv[i], "--openblas-child") == 0)
            openblas_child = 1;
        else if (strcmp(argv[i], "--only") == 0 && i + 1 < argc)
            only = argv[++i];
        else {
            fprintf(stderr, "usage: %s [--quick] [--only matmul|circles|mlp|cpu]\n", argv[0]);
            return 2;
        }
    }
    if (only && strcmp(only, "cpu") != 0 && strcmp(only, "circles") != 0 &&
        strcmp(only, "mlp") != 0 && strcmp(only, "matmul") != 0) {
        fprintf(stderr, "%s: --only %s: expected matmul, circles, mlp or cpu\n", argv[0], only);
        return 2;
    }
    if (only && strcmp(only, "cpu") == 0) {
        print_cpu_line();
        return 0;
    }
    if (!only || strcmp(only, "circles") == 0)
        bench_circles();
    if (!only || strcmp(only, "mlp") == 0)
        bench_mlp();
    if (!only || strcmp(only, "matmul") == 0) {
        bench_matmul();
        rerun_without_coretype(argv);
    }
    if (openblas_child)
        return 0;
    printf("{\"bench\":\"process\",\"peak_rss_kib\":%ld}\n", peak_rss_kib());
    return 0;
}
