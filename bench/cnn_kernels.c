/* cnn_kernels.c -- the conv kernels of issue 14 against the plain GEMMs they reduce to, one JSON
 * line per result on stdout.
 *
 * For the Fashion-MNIST CNN's two convolutions at batch 128, float32:
 *   conv1  1 -> 32, 3x3, pad 1, on 28x28; backward dw + db (the images need no gradient)
 *   conv2 32 -> 64, 3x3, pad 1, on 14x14; backward dx + dw + db
 * the time of tg__conv2d_forward and tg__conv2d_backward, and of the whole-batch GEMMs with the
 * same sizes through tg_gemm on buffers already laid out (no im2col):
 *   forward  [K, CRS] x [CRS, N*OH*OW]
 *   dw       [CRS, N*OH*OW] x [K, N*OH*OW]^T
 *   dx       [K, CRS]^T x [K, N*OH*OW]          (conv2 only)
 * ratio = conv (forward + backward) / GEMMs (forward + backward); the target is <= 1.3. Also the
 * pooling and batch-norm kernels on the activations of the same network.
 * Each at 1 and 2 threads. In each round the conv and the GEMMs run back to back (alternating
 * sides, so load from other processes falls on both); the best of the rounds is kept.
 *
 * Usage: tg_cnn_bench [--rounds R] [--only conv|bn_pool] [--cpu]
 *   --rounds R  (default 7); --only: one half of the figures; --cpu: 1 thread only, timed by
 *   the thread's CPU clock (on a loaded machine, to compare two builds); --narrow: the baseline
 *   SIMD build of the batch-norm and pooling kernels even where AVX-512 is available */
#include "kernels/conv.h"
#include "kernels/parallel.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

/* --cpu: the calling thread's CPU time instead of the wall clock (for 1 thread on a loaded
 * machine: time the scheduler gives to others is not counted; 2-thread runs keep the wall clock) */
static bool use_cpu_clock;

static double now(void) {
    struct timespec ts;
    clock_gettime(use_cpu_clock ? CLOCK_THREAD_CPUTIME_ID : CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static float *rand_f32(tg_rng *rng, int64_t n) {
    float *p = aligned_alloc(64, ((size_t)n * sizeof(float) + 63) & ~(size_t)63);
    if (!p) {
        fprintf(stderr, "tg_cnn_bench: out of memory\n");
        exit(1);
    }
    for (int64_t i = 0; i < n; i++)
        p[i] = (float)(tg_rng_uniform(rng) * 2 - 1);
    return p;
}

typedef struct layer {
    const char *name;
    int64_t N, C, H, W, K;
    bool need_dx;
} layer;

static double min_d(double a, double b) { return a < b ? a : b; }

static void bench_conv(const layer *L, int threads, int rounds) {
    const int64_t xs[4] = {L->N, L->C, L->H, L->W}, wsh[4] = {L->K, L->C, 3, 3}, bs[1] = {L->K};
    const int64_t one[2] = {1, 1};
    tg__conv2d_geom g;
    char msg[256];
    if (tg__conv2d_geom_init(&g, 4, xs, 4, wsh, 1, bs, one, one, one, 1, msg, sizeof msg) !=
        TG_OK) {
        fprintf(stderr, "tg_cnn_bench: %s\n", msg);
        exit(1);
    }
    tg_rng rng;
    tg_rng_seed(&rng, 1);
    const int64_t nx = g.N * g.C * g.H * g.W, nw = g.K * g.C * 9, ohow = g.OH * g.OW;
    const int64_t ny = g.N * g.K * ohow, crs = g.C * 9, cols = g.N * ohow;
    float *x = rand_f32(&rng, nx), *w = rand_f32(&rng, nw), *b = rand_f32(&rng, g.K);
    float *y = rand_f32(&rng, ny), *dy = rand_f32(&rng, ny), *dx = rand_f32(&rng, nx);
    float *dw = rand_f32(&rng, nw), *db = rand_f32(&rng, g.K);
    /* the GEMMs' operands: col [CRS, N*OHOW], dY [K, N*OHOW], their products */
    float *col = rand_f32(&rng, crs * cols), *dyk = rand_f32(&rng, g.K * cols);
    float *yk = rand_f32(&rng, g.K * cols), *dwt = rand_f32(&rng, crs * g.K);
    float *dcol = rand_f32(&rng, crs * cols);
    const size_t ws_bytes = tg__conv2d_workspace_bytes(&g, TG_F32, threads);
    void *ws = aligned_alloc(64, (ws_bytes + 63) & ~(size_t)63);
    if (!ws) {
        fprintf(stderr, "tg_cnn_bench: out of memory\n");
        exit(1);
    }
    tg_set_num_threads(threads);
    double cf = 1e30, cb = 1e30, gf = 1e30, gb = 1e30;
    for (int r = 0; r < rounds + 1; r++) { /* round 0 warms up (pack buffers, workers, pages) */
        double t0 = now();
        tg__conv2d_forward(&g, TG_F32, x, w, b, y, ws, ws_bytes);
        double t1 = now();
        tg__conv2d_backward(&g, TG_F32, x, w, dy, L->need_dx ? dx : NULL, dw, db, ws, ws_bytes,
                            false);
        double t2 = now();
        tg__gemm(TG_F32, false, false, g.K, cols, crs, w, crs, col, cols, 0, yk, cols);
        double t3 = now();
        tg__gemm(TG_F32, false, true, crs, g.K, cols, col, cols, dyk, cols, 0, dwt, g.K);
        if (L->need_dx)
            tg__gemm(TG_F32, true, false, crs, cols, g.K, w, crs, dyk, cols, 0, dcol, cols);
        double t4 = now();
        if (r == 0)
            continue;
        cf = min_d(cf, t1 - t0), cb = min_d(cb, t2 - t1);
        gf = min_d(gf, t3 - t2), gb = min_d(gb, t4 - t3);
    }
    printf("{\"bench\":\"cnn_conv\",\"layer\":\"%s\",\"x\":[%lld,%lld,%lld,%lld],\"weight\":"
           "[%lld,%lld,3,3],\"threads\":%d,\"kernel\":\"%s\",\"backward\":\"%s\","
           "\"conv_fwd_ms\":%.3f,\"conv_bwd_ms\":%.3f,\"gemm_fwd_ms\":%.3f,\"gemm_bwd_ms\":%.3f,"
           "\"gemm_fwd_mnk\":[%lld,%lld,%lld],\"ratio_fwd\":%.3f,\"ratio_bwd\":%.3f,"
           "\"ratio\":%.3f,\"conv_gflops\":%.1f,\"rounds\":%d}\n",
           L->name, (long long)g.N, (long long)g.C, (long long)g.H, (long long)g.W, (long long)g.K,
           (long long)g.C, threads, tg_kernel_name(), L->need_dx ? "dx+dw+db" : "dw+db", 1e3 * cf,
           1e3 * cb, 1e3 * gf, 1e3 * gb, (long long)g.K, (long long)cols, (long long)crs, cf / gf,
           cb / gb, (cf + cb) / (gf + gb),
           2.0 * (double)(g.K * crs * cols) * (L->need_dx ? 3 : 2) / (cf + cb) * 1e-9, rounds);
    fflush(stdout);
    free(x), free(w), free(b), free(y), free(dy), free(dx), free(dw), free(db), free(col);
    free(dyk), free(yk), free(dwt), free(dcol), free(ws);
}

/* Batch norm (training forward + backward), 2x2 max pooling (forward + backward) and the three
 * fused as the CNN runs them (batch_norm_relu_max_pool2d's kernels, forward + backward into a
 * fresh dx) on the activations after conv1 [128,32,28,28] and conv2 [128,64,14,14]. The buffers
 * are the same in every round, so these are the kernels with the caches as warm as they get,
 * not the share of a training step. */
static void bench_bn_pool(const char *name, int64_t N, int64_t C, int64_t H, int64_t W, int threads,
                          int rounds) {
    const int64_t xs[4] = {N, C, H, W}, k2[2] = {2, 2}, p0[2] = {0, 0};
    tg__bn_geom bg;
    tg__pool2d_geom pg;
    char msg[256];
    if (tg__bn_geom_init(&bg, "batch_norm", 4, xs, 1, msg, sizeof msg) != TG_OK ||
        tg__pool2d_geom_init(&pg, "max_pool2d", 4, xs, k2, k2, p0, msg, sizeof msg) != TG_OK) {
        fprintf(stderr, "tg_cnn_bench: %s\n", msg);
        exit(1);
    }
    tg_rng rng;
    tg_rng_seed(&rng, 2);
    const int64_t n = N * C * H * W, np = N * C * pg.OH * pg.OW;
    float *x = rand_f32(&rng, n), *y = rand_f32(&rng, n), *dy = rand_f32(&rng, n);
    float *dx = rand_f32(&rng, n), *gamma = rand_f32(&rng, C), *beta = rand_f32(&rng, C);
    float *sm = rand_f32(&rng, C), *sr = rand_f32(&rng, C), *rm = rand_f32(&rng, C);
    float *rv = rand_f32(&rng, C), *dg = rand_f32(&rng, C), *dbt = rand_f32(&rng, C);
    float *py = rand_f32(&rng, np), *pdy = rand_f32(&rng, np);
    int32_t *am = calloc((size_t)np, sizeof(int32_t));
    const size_t ws_bytes = tg__bn_relu_pool_workspace_bytes(&bg, TG_F32, threads);
    void *ws = aligned_alloc(64, ws_bytes);
    if (!am || !ws)
        exit(1);
    tg_set_num_threads(threads);
    double bf = 1e30, bb = 1e30, pf = 1e30, pb = 1e30, ff = 1e30, fb = 1e30;
    for (int r = 0; r < rounds + 1; r++) {
        double t0 = now();
        tg__bn_forward_train(&bg, TG_F32, x, gamma, beta, 1e-5, 0.1, y, sm, sr, rm, rv);
        double t1 = now();
        tg__bn_backward(&bg, TG_F32, 1, x, gamma, sm, sr, dy, dx, dg, dbt, true);
        double t2 = now();
        tg__max_pool2d_forward(&pg, TG_F32, x, py, am);
        double t3 = now();
        tg__max_pool2d_backward(&pg, TG_F32, am, pdy, dx, false);
        double t4 = now();
        if (tg__bn_relu_pool_forward(&bg, &pg, TG_F32, 1, x, gamma, beta, 1e-5, 0.1, rm, rv, py, am,
                                     sm, sr, ws, ws_bytes) != TG_OK)
            exit(1);
        double t5 = now();
        if (tg__bn_relu_pool_backward(&bg, &pg, TG_F32, 1, x, py, am, gamma, sm, sr, pdy, dx, dg,
                                      dbt, true, ws, ws_bytes) != TG_OK)
            exit(1);
        double t6 = now();
        if (r == 0)
            continue;
        bf = min_d(bf, t1 - t0), bb = min_d(bb, t2 - t1), pf = min_d(pf, t3 - t2);
        pb = min_d(pb, t4 - t3), ff = min_d(ff, t5 - t4), fb = min_d(fb, t6 - t5);
    }
    printf("{\"bench\":\"cnn_bn_pool\",\"at\":\"%s\",\"x\":[%lld,%lld,%lld,%lld],\"threads\":%d,"
           "\"bn_fwd_ms\":%.3f,\"bn_bwd_ms\":%.3f,\"maxpool_fwd_ms\":%.3f,\"maxpool_bwd_ms\":%.3f,"
           "\"bn_relu_pool_fwd_ms\":%.3f,\"bn_relu_pool_bwd_ms\":%.3f,\"rounds\":%d}\n",
           name, (long long)N, (long long)C, (long long)H, (long long)W, threads, 1e3 * bf,
           1e3 * bb, 1e3 * pf, 1e3 * pb, 1e3 * ff, 1e3 * fb, rounds);
    fflush(stdout);
    free(x), free(y), free(dy), free(dx), free(gamma), free(beta), free(sm), free(sr), free(rm);
    free(rv), free(dg), free(dbt), free(py), free(pdy), free(am), free(ws);
}

int main(int argc, char **argv) {
    int rounds = 7, max_threads = 2;
    bool conv = true, bn_pool = true;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--rounds") == 0 && i + 1 < argc) {
            rounds = atoi(argv[++i]);
            if (rounds < 1)
                rounds = 1;
        } else if (strcmp(argv[i], "--only") == 0 && i + 1 < argc) {
            ++i;
            conv = strcmp(argv[i], "conv") == 0;
            bn_pool = strcmp(argv[i], "bn_pool") == 0;
            if (!conv && !bn_pool) {
                fprintf(stderr, "%s: --only conv or --only bn_pool\n", argv[0]);
                return 2;
            }
        } else if (strcmp(argv[i], "--narrow") == 0) {
            tg__conv_wide_simd(0);
        } else if (strcmp(argv[i], "--cpu") == 0) {
            use_cpu_clock = true;
            max_threads = 1;
        } else {
            fprintf(stderr,
                    "usage: %s [--rounds R] [--only conv|bn_pool] [--cpu (1 thread)] [--narrow]\n",
                    argv[0]);
            return 2;
        }
    }
    const layer layers[2] = {{"conv1", 128, 1, 28, 28, 32, false},
                             {"conv2", 128, 32, 14, 14, 64, true}};
    for (int t = 1; conv && t <= max_threads; t++)
        for (int l = 0; l < 2; l++)
            bench_conv(&layers[l], t, rounds);
    for (int t = 1; bn_pool && t <= max_threads; t++) {
        bench_bn_pool("conv1", 128, 32, 28, 28, t, rounds);
        bench_bn_pool("conv2", 128, 64, 14, 14, t, rounds);
    }
    return 0;
}
