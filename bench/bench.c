/* bench.c -- tapegrad's benchmarks, one JSON line per result on stdout.
 *
 *   matmul      f32 C = A B, n x n, for n = 256..2048: tapegrad's own kernel (the best SIMD one
 *               this CPU runs), OpenBLAS (when found at build time; same process, same data),
 *               and a naive triple loop at small n. GFLOP/s = 2 n^3 / best time of a few runs.
 *   circles     the course report's 2-4-2 tanh network on 200 points: one training step
 *               (tape reset, forward, softmax cross-entropy, backward, plain SGD on the four
 *               parameters through tg_tensor_data). Microseconds per step.
 *   mlp         a 784-256-128-10 ReLU MLP step on a random batch of 128 (forward, backward,
 *               SGD), as Fashion-MNIST training would run it. Samples per second.
 * Each at 1 and 2 threads (tg_set_num_threads, and openblas_set_num_threads for OpenBLAS).
 *
 * Usage: tg_bench [--quick] [--only matmul|circles|mlp]   (--quick: n <= 512, fewer steps) */
#include "kernels/parallel.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
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

static double run_once(impl which, int64_t n, const float *A, const float *B, float *C) {
    const double t0 = now();
    switch (which) {
    case IMPL_OWN: tg__gemm(TG_F32, false, false, n, n, n, A, n, B, n, 0, C, n); break;
    case IMPL_NAIVE: naive_sgemm(n, A, B, C); break;
    case IMPL_OPENBLAS:
#ifdef TG_BENCH_OPENBLAS
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)n, (int)n, (int)n, 1.0f, A,
                    (int)n, B, (int)n, 0.0f, C, (int)n);
#endif
        break;
    }
    return now() - t0;
}

/* GFLOP/s of each of the `n_impls` implementations, from the best of a few runs. The runs
 * alternate between the implementations, so a burst of load on a shared machine hits both. */
static void time_matmul(const impl *which, int n_impls, int64_t n, const float *A, const float *B,
                        float *C, double *gflops) {
    const double flop = 2.0 * (double)n * (double)n * (double)n;
    const int reps = which[0] == IMPL_NAIVE ? 2 : flop > 4e9 ? 4 : flop > 2e8 ? 6 : 12;
    double best[4] = {1e30, 1e30, 1e30, 1e30};
    for (int r = 0; r < reps + 1; r++) /* run 0 warms caches and pack buffers */
        for (int i = 0; i < n_impls; i++) {
            const double dt = run_once(which[i], n, A, B, C);
            if (r > 0 && dt < best[i])
                best[i] = dt;
        }
    for (int i = 0; i < n_impls; i++)
        gflops[i] = flop / best[i] * 1e-9;
}

static void bench_matmul(void) {
    /* The own kernel: the best SIMD one available, even if the library defaults to OpenBLAS. */
    tg__kernel_id own = TG_KERNEL_PORTABLE;
    for (int id = TG_KERNEL_AVX512; id >= TG_KERNEL_PORTABLE; id--)
        if (tg__kernel_available((tg__kernel_id)id)) {
            own = (tg__kernel_id)id;
            break;
        }
    tg__kernel_set(own);
    const int64_t sizes[] = {256, 512, 1024, 2048};
    const int n_sizes = quick ? 2 : 4;
    const int64_t nmax = sizes[n_sizes - 1];
    float *A = aligned_alloc(64, sizeof(float) * (size_t)(nmax * nmax));
    float *B = aligned_alloc(64, sizeof(float) * (size_t)(nmax * nmax));
    float *C = aligned_alloc(64, sizeof(float) * (size_t)(nmax * nmax));
    if (!A || !B || !C) {
        fprintf(stderr, "tg_bench: out of memory\n");
        exit(1);
    }
    tg_rng rng;
    tg_rng_seed(&rng, 1);
    for (int64_t i = 0; i < nmax * nmax; i++) {
        A[i] = (float)(tg_rng_uniform(&rng) - 0.5);
        B[i] = (float)(tg_rng_uniform(&rng) - 0.5);
    }
    const char *corename = "";
#ifdef TG_BENCH_OPENBLAS
    corename = openblas_get_corename();
#endif
    const char *coretype = getenv("OPENBLAS_CORETYPE");
    for (int s = 0; s < n_sizes; s++) {
        const int64_t n = sizes[s];
        for (int threads = 1; threads <= 2; threads++) {
            tg_set_num_threads(threads);
            impl which[2] = {IMPL_OWN, IMPL_OPENBLAS};
            double gf[2];
#ifdef TG_BENCH_OPENBLAS
            openblas_set_num_threads(threads);
            time_matmul(which, 2, n, A, B, C, gf);
#else
            time_matmul(which, 1, n, A, B, C, gf);
#endif
            printf("{\"bench\":\"matmul\",\"impl\":\"tapegrad-%s\",\"dtype\":\"f32\",\"n\":%lld,"
                   "\"threads\":%d,\"gflops\":%.2f}\n",
                   tg__kernel_id_name(own), (long long)n, threads, gf[0]);
#ifdef TG_BENCH_OPENBLAS
            printf("{\"bench\":\"matmul\",\"impl\":\"openblas\",\"core\":\"%s\","
                   "\"OPENBLAS_CORETYPE\":\"%s\",\"dtype\":\"f32\",\"n\":%lld,\"threads\":%d,"
                   "\"gflops\":%.2f,\"tapegrad_over_openblas\":%.2f}\n",
                   corename, coretype ? coretype : "", (long long)n, threads, gf[1], gf[0] / gf[1]);
#else
            (void)corename, (void)coretype;
#endif
            fflush(stdout);
        }
        if (n <= 512) {
            impl naive = IMPL_NAIVE;
            double gf;
            time_matmul(&naive, 1, n, A, B, C, &gf);
            printf("{\"bench\":\"matmul\",\"impl\":\"naive\",\"dtype\":\"f32\",\"n\":%lld,"
                   "\"threads\":1,\"gflops\":%.2f}\n",
                   (long long)n, gf);
            fflush(stdout);
        }
    }
    tg_set_num_threads(1);
    free(A), free(B), free(C);
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
                if (tg_backward(t, l) != TG_OK) {
                    fprintf(stderr, "tg_bench: %s\n", tg_tape_errmsg(t));
                    exit(1);
                }
                sgd(P, 6, 0.01f);
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
        else if (strcmp(argv[i], "--only") == 0 && i + 1 < argc)
            only = argv[++i];
        else {
            fprintf(stderr, "usage: %s [--quick] [--only matmul|circles|mlp]\n", argv[0]);
            return 2;
        }
    }
    if (!only || strcmp(only, "circles") == 0)
        bench_circles();
    if (!only || strcmp(only, "mlp") == 0)
        bench_mlp();
    if (!only || strcmp(only, "matmul") == 0)
        bench_matmul();
    printf("{\"bench\":\"process\",\"peak_rss_kib\":%ld}\n", peak_rss_kib());
    return 0;
}
