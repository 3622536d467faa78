/* The kernels of the convolutional ops (src/kernels/conv.c): conv2d, max_pool2d, avg_pool2d and
 * batch norm, each against a naive direct loop in float64 (and float32 against the same loop at
 * float32's tolerance), each backward against central finite differences of its forward in
 * float64 and against the naive loop, the backward's accumulation (+=) into pre-filled
 * destinations, results on 1 and 2 threads identical bit for bit, and the geometry errors. */
#include "kernels/conv.h"
#include "kernels/parallel.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- Helpers ---- */

static double rnd(tg_rng *rng) { return tg_rng_uniform(rng) * 2 - 1; }

static double *rand_buf(tg_rng *rng, int64_t n) {
    double *p = malloc(sizeof(double) * (size_t)(n > 0 ? n : 1));
    cr_assert(p);
    for (int64_t i = 0; i < n; i++)
        p[i] = (float)rnd(rng); /* exactly representable in float: f32 and f64 see the same */
    return p;
}

static double *copy_buf(const double *src, int64_t n) {
    double *p = malloc(sizeof(double) * (size_t)(n > 0 ? n : 1));
    cr_assert(p);
    memcpy(p, src, sizeof(double) * (size_t)n);
    return p;
}

static float *to_f32(const double *src, int64_t n) {
    float *p = malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
    cr_assert(p);
    for (int64_t i = 0; i < n; i++)
        p[i] = (float)src[i];
    return p;
}

static double dot(const double *a, const double *b, int64_t n) {
    double s = 0;
    for (int64_t i = 0; i < n; i++)
        s += a[i] * b[i];
    return s;
}

/* Number of elements where |got - want| > atol + rtol |want|, each reported. */
static int compare(const char *what, const double *got, const double *want, int64_t n, double atol,
                   double rtol) {
    int bad = 0;
    for (int64_t i = 0; i < n; i++) {
        const double tol = atol + rtol * fabs(want[i]);
        if (!(fabs(got[i] - want[i]) <= tol)) {
            if (bad < 5)
                cr_log_error("%s: element %lld: got %.17g, want %.17g", what, (long long)i, got[i],
                             want[i]);
            bad++;
        }
    }
    return bad;
}

/* float32 against the float64 reference. Rounding in a sum grows with the sum of the absolute
 * values of its terms, so the tolerance includes that sum (absref; NULL: |want|). */
static int compare_f32(const char *what, const float *got, const double *want, const double *absref,
                       int64_t n) {
    int bad = 0;
    for (int64_t i = 0; i < n; i++) {
        const double tol = 2e-5 + 2e-5 * fabs(want[i]) + 1e-6 * (absref ? absref[i] : 0);
        if (!(fabs((double)got[i] - want[i]) <= tol)) {
            if (bad < 5)
                cr_log_error("%s: element %lld: got %.9g, want %.17g", what, (long long)i,
                             (double)got[i], want[i]);
            bad++;
        }
    }
    return bad;
}

static double *abs_buf(const double *src, int64_t n) {
    double *p = copy_buf(src, n);
    for (int64_t i = 0; i < n; i++)
        p[i] = fabs(p[i]);
    return p;
}

/* ---- conv2d ---- */

typedef struct conv_case {
    int64_t N, C, H, W, K, R, S;
    int64_t stride[2], pad[2], dil[2], groups;
    bool bias;
    bool fd; /* small enough for finite differences of every input */
} conv_case;

/* Odd sizes, size-1 dimensions, strides that do not divide the input, dilation, groups,
 * depthwise (groups = C), padding wider than the kernel, N = 1, the 1x1 no-copy path; the last
 * two are big enough to run threaded, over 4 and 6 partitions of the batch. */
static const conv_case conv_cases[] = {
    {2, 3, 5, 5, 4, 3, 3, {1, 1}, {1, 1}, {1, 1}, 1, true, true},
    {1, 2, 7, 6, 3, 2, 3, {2, 3}, {1, 0}, {1, 2}, 1, true, true},
    {2, 4, 6, 5, 6, 3, 2, {1, 1}, {0, 1}, {2, 1}, 2, false, true},
    {2, 3, 5, 5, 6, 3, 3, {1, 1}, {1, 1}, {1, 1}, 3, true, true},  /* depthwise, multiplier 2 */
    {1, 4, 6, 7, 4, 3, 3, {2, 2}, {1, 1}, {1, 1}, 4, true, true},  /* depthwise, stride 2 */
    {3, 4, 3, 4, 5, 1, 1, {1, 1}, {0, 0}, {1, 1}, 1, true, true},  /* 1x1: col is x */
    {2, 4, 3, 4, 6, 1, 1, {1, 1}, {0, 0}, {3, 1}, 2, false, true}, /* 1x1 grouped, dilated */
    {1, 2, 5, 5, 3, 1, 1, {2, 2}, {0, 0}, {1, 1}, 1, true, true},  /* 1x1, stride 2 */
    {1, 1, 1, 7, 1, 1, 3, {1, 2}, {0, 2}, {1, 1}, 1, true, true},  /* size-1 dims */
    {1, 2, 3, 3, 2, 2, 2, {1, 1}, {3, 2}, {1, 1}, 1, true, true},  /* padding > kernel */
    {2, 1, 4, 9, 2, 3, 2, {3, 2}, {2, 1}, {1, 3}, 1, true, true},
    {1, 3, 8, 1, 2, 3, 1, {3, 1}, {0, 0}, {2, 1}, 1, true, true}, /* W = 1 */
    /* stride 1 and OW = W: col2im's flat rows, with shifts of 2 columns, a dilated kernel, a
     * kernel row alone, and a 1-wide image whose every column wraps */
    {2, 3, 6, 7, 4, 5, 5, {1, 1}, {2, 2}, {1, 1}, 1, true, true},
    {1, 2, 7, 6, 3, 3, 3, {1, 1}, {2, 2}, {2, 2}, 1, true, true},
    {2, 2, 4, 5, 3, 1, 3, {1, 1}, {0, 1}, {1, 1}, 1, false, true},
    {1, 1, 3, 1, 1, 3, 3, {1, 1}, {1, 1}, {1, 1}, 1, true, true},
    {4, 8, 20, 20, 16, 3, 3, {1, 1}, {1, 1}, {1, 1}, 1, true, false},
    {6, 2, 30, 30, 3, 3, 3, {1, 1}, {1, 1}, {1, 1}, 1, true, false},
};
#define N_CONV (sizeof conv_cases / sizeof conv_cases[0])

static void conv_geom(const conv_case *cs, tg__conv2d_geom *g) {
    const int64_t xs[4] = {cs->N, cs->C, cs->H, cs->W};
    const int64_t ws[4] = {cs->K, cs->C / cs->groups, cs->R, cs->S};
    const int64_t bs[1] = {cs->K};
    char msg[256];
    const tg_status st = tg__conv2d_geom_init(g, 4, xs, 4, ws, 1, cs->bias ? bs : NULL, cs->stride,
                                              cs->pad, cs->dil, cs->groups, msg, sizeof msg);
    cr_assert_eq(st, TG_OK, "geometry rejected: %s", msg);
}

static int64_t numel_x(const tg__conv2d_geom *g) { return g->N * g->C * g->H * g->W; }
static int64_t numel_w(const tg__conv2d_geom *g) { return g->K * (g->C / g->groups) * g->R * g->S; }
static int64_t numel_y(const tg__conv2d_geom *g) { return g->N * g->K * g->OH * g->OW; }

/* The definition, term by term. */
static void naive_conv(const tg__conv2d_geom *g, const double *x, const double *w, const double *b,
                       double *y) {
    const int64_t Cg = g->C / g->groups, Kg = g->K / g->groups;
    for (int64_t n = 0; n < g->N; n++)
        for (int64_t k = 0; k < g->K; k++)
            for (int64_t oh = 0; oh < g->OH; oh++)
                for (int64_t ow = 0; ow < g->OW; ow++) {
                    double s = b ? b[k] : 0;
                    for (int64_t c = 0; c < Cg; c++)
                        for (int64_t r = 0; r < g->R; r++)
                            for (int64_t q = 0; q < g->S; q++) {
                                const int64_t ih = oh * g->stride[0] - g->pad[0] + r * g->dil[0];
                                const int64_t iw = ow * g->stride[1] - g->pad[1] + q * g->dil[1];
                                if (ih < 0 || ih >= g->H || iw < 0 || iw >= g->W)
                                    continue;
                                const int64_t ci = (k / Kg) * Cg + c;
                                s += w[((k * Cg + c) * g->R + r) * g->S + q] *
                                     x[((n * g->C + ci) * g->H + ih) * g->W + iw];
                            }
                    y[((n * g->K + k) * g->OH + oh) * g->OW + ow] = s;
                }
}

/* The gradients by the same loop, each term sent back to its inputs. */
static void naive_conv_backward(const tg__conv2d_geom *g, const double *x, const double *w,
                                const double *dy, double *dx, double *dw, double *db) {
    const int64_t Cg = g->C / g->groups, Kg = g->K / g->groups;
    for (int64_t n = 0; n < g->N; n++)
        for (int64_t k = 0; k < g->K; k++)
            for (int64_t oh = 0; oh < g->OH; oh++)
                for (int64_t ow = 0; ow < g->OW; ow++) {
                    const double d = dy[((n * g->K + k) * g->OH + oh) * g->OW + ow];
                    db[k] += d;
                    for (int64_t c = 0; c < Cg; c++)
                        for (int64_t r = 0; r < g->R; r++)
                            for (int64_t q = 0; q < g->S; q++) {
                                const int64_t ih = oh * g->stride[0] - g->pad[0] + r * g->dil[0];
                                const int64_t iw = ow * g->stride[1] - g->pad[1] + q * g->dil[1];
                                if (ih < 0 || ih >= g->H || iw < 0 || iw >= g->W)
                                    continue;
                                const int64_t xi =
                                    ((n * g->C + (k / Kg) * Cg + c) * g->H + ih) * g->W + iw;
                                const int64_t wi = ((k * Cg + c) * g->R + r) * g->S + q;
                                dx[xi] += w[wi] * d;
                                dw[wi] += x[xi] * d;
                            }
                }
}

typedef struct conv_bufs {
    double *x, *w, *b, *dy;
    void *ws;
    size_t ws_bytes;
} conv_bufs;

static void conv_bufs_make(const tg__conv2d_geom *g, const conv_case *cs, uint64_t seed,
                           conv_bufs *B) {
    tg_rng rng;
    tg_rng_seed(&rng, seed);
    B->x = rand_buf(&rng, numel_x(g));
    B->w = rand_buf(&rng, numel_w(g));
    B->b = cs->bias ? rand_buf(&rng, g->K) : NULL;
    B->dy = rand_buf(&rng, numel_y(g));
    B->ws_bytes = tg__conv2d_workspace_bytes(g, TG_F64, 2);
    B->ws = aligned_alloc(64, (B->ws_bytes + 63) & ~(size_t)63);
    cr_assert(B->ws);
}

static void conv_bufs_free(conv_bufs *B) {
    free(B->x);
    free(B->w);
    free(B->b);
    free(B->dy);
    free(B->ws);
}

static void conv_run(const tg__conv2d_geom *g, const conv_bufs *B, double *y) {
    cr_assert_eq(tg__conv2d_forward(g, TG_F64, B->x, B->w, B->b, y, B->ws, B->ws_bytes), TG_OK);
}

/* Central differences of L = sum(dy * conv(x, w, b)) (so dL/dy = dy) with respect to every
 * step-th element of p, into out[i / step]: (L(p + eps) - L(p - eps)) / 2 eps, the difference taken element by element
 * before the sum so that summing tens of thousands of terms does not swamp it. */
static void conv_fd(const tg__conv2d_geom *g, conv_bufs *B, double *p, int64_t n, int64_t step,
                    double *out) {
    const double eps = 1e-6;
    const int64_t ny = numel_y(g);
    double *yp = malloc(sizeof(double) * (size_t)ny), *ym = malloc(sizeof(double) * (size_t)ny);
    cr_assert(yp && ym);
    for (int64_t i = 0; i < n; i += step) {
        const double keep = p[i];
        p[i] = keep + eps;
        conv_run(g, B, yp);
        p[i] = keep - eps;
        conv_run(g, B, ym);
        p[i] = keep;
        double s = 0;
        for (int64_t j = 0; j < ny; j++)
            s += B->dy[j] * (yp[j] - ym[j]);
        out[i / step] = s / (2 * eps);
    }
    free(yp), free(ym);
}

Test(conv2d, forward_matches_naive_loop) {
    for (size_t ci = 0; ci < N_CONV; ci++) {
        tg__conv2d_geom g;
        conv_geom(&conv_cases[ci], &g);
        conv_bufs B;
        conv_bufs_make(&g, &conv_cases[ci], 100 + ci, &B);
        const int64_t ny = numel_y(&g);
        double *want = malloc(sizeof(double) * (size_t)ny), *got = malloc(sizeof(double) * ny);
        cr_assert(want && got);
        naive_conv(&g, B.x, B.w, B.b, want);
        for (int64_t i = 0; i < ny; i++)
            got[i] = NAN; /* the forward must overwrite */
        cr_assert_eq(tg__conv2d_forward(&g, TG_F64, B.x, B.w, B.b, got, B.ws, B.ws_bytes), TG_OK);
        char what[64];
        snprintf(what, sizeof what, "conv2d f64 case %zu", ci);
        cr_expect_eq(compare(what, got, want, ny, 1e-12, 1e-12), 0, "%s", what);

        float *x32 = to_f32(B.x, numel_x(&g)), *w32 = to_f32(B.w, numel_w(&g));
        float *b32 = B.b ? to_f32(B.b, g.K) : NULL, *y32 = malloc(sizeof(float) * (size_t)ny);
        cr_assert(y32);
        cr_assert_eq(tg__conv2d_forward(&g, TG_F32, x32, w32, b32, y32, B.ws, B.ws_bytes), TG_OK);
        snprintf(what, sizeof what, "conv2d f32 case %zu", ci);
        double *ax = abs_buf(B.x, numel_x(&g)), *aw = abs_buf(B.w, numel_w(&g));
        double *ab = B.b ? abs_buf(B.b, g.K) : NULL;
        naive_conv(&g, ax, aw, ab, got); /* the sum of |terms| of each output */
        cr_expect_eq(compare_f32(what, y32, want, got, ny), 0, "%s", what);
        free(ax), free(aw), free(ab);
        free(x32), free(w32), free(b32), free(y32), free(want), free(got);
        conv_bufs_free(&B);
    }
}

/* Backward: against the naive loop, and for small cases against finite differences, each
 * gradient added to a destination that already holds values (the kernels accumulate). */
Test(conv2d, backward_matches_naive_and_finite_differences) {
    for (size_t ci = 0; ci < N_CONV; ci++) {
        const conv_case *cs = &conv_cases[ci];
        tg__conv2d_geom g;
        conv_geom(cs, &g);
        conv_bufs B;
        conv_bufs_make(&g, cs, 200 + ci, &B);
        const int64_t nx = numel_x(&g), nw = numel_w(&g), K = g.K;
        tg_rng rng;
        tg_rng_seed(&rng, 300 + ci);
        double *dx0 = rand_buf(&rng, nx), *dw0 = rand_buf(&rng, nw), *db0 = rand_buf(&rng, K);
        double *dx = copy_buf(dx0, nx), *dw = copy_buf(dw0, nw), *db = copy_buf(db0, K);
        double *rx = copy_buf(dx0, nx), *rw = copy_buf(dw0, nw), *rb = copy_buf(db0, K);
        cr_assert_eq(tg__conv2d_backward(&g, TG_F64, B.x, B.w, B.dy, dx, dw, B.b ? db : NULL, B.ws,
                                         B.ws_bytes, false),
                     TG_OK);
        naive_conv_backward(&g, B.x, B.w, B.dy, rx, rw, rb);
        char what[64];
        snprintf(what, sizeof what, "conv2d case %zu dx vs naive", ci);
        cr_expect_eq(compare(what, dx, rx, nx, 1e-12, 1e-12), 0, "%s", what);
        snprintf(what, sizeof what, "conv2d case %zu dw vs naive", ci);
        cr_expect_eq(compare(what, dw, rw, nw, 1e-11, 1e-12), 0, "%s", what);
        if (B.b) {
            snprintf(what, sizeof what, "conv2d case %zu db vs naive", ci);
            cr_expect_eq(compare(what, db, rb, K, 1e-11, 1e-12), 0, "%s", what);
        } else {
            cr_expect_eq(memcmp(db, db0, sizeof(double) * (size_t)K), 0, "db NULL: untouched");
        }

        /* finite differences of the forward: gradient = (after - before) */
        double *fd = malloc(sizeof(double) * (size_t)(nx > nw ? nx : nw));
        double *gr = malloc(sizeof(double) * (size_t)(nx > nw ? nx : nw));
        cr_assert(fd && gr);
        /* small cases: every element; large ones: a spread of about 40 (the naive loop above
         * already checked them all) */
        const int64_t stx = cs->fd ? 1 : nx / 40 + 1, stw = cs->fd ? 1 : nw / 40 + 1;
        conv_fd(&g, &B, B.x, nx, stx, fd);
        for (int64_t i = 0; i < nx; i += stx)
            gr[i / stx] = dx[i] - dx0[i];
        snprintf(what, sizeof what, "conv2d case %zu dx vs finite differences", ci);
        cr_expect_eq(compare(what, gr, fd, (nx + stx - 1) / stx, 1e-8, 1e-6), 0, "%s", what);
        conv_fd(&g, &B, B.w, nw, stw, fd);
        for (int64_t i = 0; i < nw; i += stw)
            gr[i / stw] = dw[i] - dw0[i];
        snprintf(what, sizeof what, "conv2d case %zu dw vs finite differences", ci);
        cr_expect_eq(compare(what, gr, fd, (nw + stw - 1) / stw, 1e-8, 1e-6), 0, "%s", what);
        if (B.b) {
            conv_fd(&g, &B, B.b, K, 1, fd);
            for (int64_t i = 0; i < K; i++)
                gr[i] = db[i] - db0[i];
            snprintf(what, sizeof what, "conv2d case %zu db vs finite differences", ci);
            cr_expect_eq(compare(what, gr, fd, K, 1e-8, 1e-6), 0, "%s", what);
        }

        /* float32: the same gradients at float32's tolerance, from zeroed destinations */
        float *x32 = to_f32(B.x, nx), *w32 = to_f32(B.w, nw), *dy32 = to_f32(B.dy, numel_y(&g));
        float *dx32 = calloc((size_t)nx, sizeof(float)), *dw32 = calloc((size_t)nw, sizeof(float));
        float *db32 = calloc((size_t)K, sizeof(float));
        cr_assert(dx32 && dw32 && db32);
        cr_assert_eq(tg__conv2d_backward(&g, TG_F32, x32, w32, dy32, dx32, dw32, db32, B.ws,
                                         B.ws_bytes, false),
                     TG_OK);
        double *zx = calloc((size_t)nx, 8), *zw = calloc((size_t)nw, 8), *zb = calloc(K, 8);
        cr_assert(zx && zw && zb);
        naive_conv_backward(&g, B.x, B.w, B.dy, zx, zw, zb);
        double *ax = abs_buf(B.x, nx), *aw = abs_buf(B.w, nw), *ady = abs_buf(B.dy, numel_y(&g));
        double *sx = calloc((size_t)nx, 8), *sw = calloc((size_t)nw, 8), *sb = calloc(K, 8);
        cr_assert(sx && sw && sb);
        naive_conv_backward(&g, ax, aw, ady, sx, sw, sb); /* the sums of |terms| */
        snprintf(what, sizeof what, "conv2d case %zu f32 dx", ci);
        cr_expect_eq(compare_f32(what, dx32, zx, sx, nx), 0, "%s", what);
        snprintf(what, sizeof what, "conv2d case %zu f32 dw", ci);
        cr_expect_eq(compare_f32(what, dw32, zw, sw, nw), 0, "%s", what);
        snprintf(what, sizeof what, "conv2d case %zu f32 db", ci);
        cr_expect_eq(compare_f32(what, db32, zb, sb, K), 0, "%s", what);
        free(zx), free(zw), free(zb), free(ax), free(aw), free(ady), free(sx), free(sw), free(sb);

        free(x32), free(w32), free(dy32), free(dx32), free(dw32), free(db32);
        free(fd), free(gr), free(dx0), free(dw0), free(db0), free(dx), free(dw), free(db);
        free(rx), free(rw), free(rb);
        conv_bufs_free(&B);
    }
}

/* Only what is asked is computed: a NULL destination, and the inputs it would need may be
 * NULL too (dx needs w, dw needs x). */
Test(conv2d, backward_null_destinations) {
    const conv_case *cs = &conv_cases[0];
    tg__conv2d_geom g;
    conv_geom(cs, &g);
    conv_bufs B;
    conv_bufs_make(&g, cs, 7, &B);
    double *dx = calloc((size_t)numel_x(&g), sizeof(double));
    double *dw = calloc((size_t)numel_w(&g), sizeof(double));
    double *rx = calloc((size_t)numel_x(&g), sizeof(double));
    double *rw = calloc((size_t)numel_w(&g), sizeof(double)), *rb = calloc(g.K, sizeof(double));
    cr_assert(dx && dw && rx && rw && rb);
    naive_conv_backward(&g, B.x, B.w, B.dy, rx, rw, rb);
    cr_assert_eq(
        tg__conv2d_backward(&g, TG_F64, NULL, B.w, B.dy, dx, NULL, NULL, B.ws, B.ws_bytes, false),
        TG_OK);
    cr_expect_eq(compare("dx alone", dx, rx, numel_x(&g), 1e-12, 1e-12), 0);
    cr_assert_eq(
        tg__conv2d_backward(&g, TG_F64, B.x, NULL, B.dy, NULL, dw, NULL, B.ws, B.ws_bytes, false),
        TG_OK);
    cr_expect_eq(compare("dw alone", dw, rw, numel_w(&g), 1e-12, 1e-12), 0);
    cr_expect_eq(
        tg__conv2d_backward(&g, TG_F64, NULL, B.w, B.dy, NULL, dw, NULL, B.ws, B.ws_bytes, false),
        TG_ERR_NULL);
    cr_expect_str_eq(tg_last_errmsg(), "tg__conv2d_backward: x (needed for dw) is NULL");
    free(dx), free(dw), free(rx), free(rw), free(rb);
    conv_bufs_free(&B);
}

Test(conv2d, workspace_too_small_is_an_error) {
    tg__conv2d_geom g;
    conv_geom(&conv_cases[0], &g);
    conv_bufs B;
    conv_bufs_make(&g, &conv_cases[0], 8, &B);
    double *y = malloc(sizeof(double) * (size_t)numel_y(&g));
    cr_assert(y);
    const size_t need = tg__conv2d_workspace_bytes(&g, TG_F64, 1);
    cr_expect_eq(tg__conv2d_forward(&g, TG_F64, B.x, B.w, B.b, y, B.ws, need - 1), TG_ERR_VALUE);
    char want[160];
    snprintf(want, sizeof want,
             "tg__conv2d_forward: workspace of %zu bytes, at least %zu needed "
             "(tg__conv2d_workspace_bytes)",
             need - 1, need);
    cr_expect_str_eq(tg_last_errmsg(), want);
    /* exactly the minimum works, on one thread, with the same result */
    double *y2 = malloc(sizeof(double) * (size_t)numel_y(&g));
    cr_assert(y2);
    cr_expect_eq(tg__conv2d_forward(&g, TG_F64, B.x, B.w, B.b, y, B.ws, need), TG_OK);
    cr_expect_eq(tg__conv2d_forward(&g, TG_F64, B.x, B.w, B.b, y2, B.ws, B.ws_bytes), TG_OK);
    cr_expect_eq(memcmp(y, y2, sizeof(double) * (size_t)numel_y(&g)), 0);
    free(y), free(y2);
    conv_bufs_free(&B);
}

static tg_status geom_try(const int64_t *xs, const int64_t *wsh, const int64_t *bs, int64_t sh,
                          int64_t ph, int64_t dh, int64_t groups, char *msg, size_t len) {
    tg__conv2d_geom g;
    const int64_t stride[2] = {sh, 1}, pad[2] = {ph, 0}, dil[2] = {dh, 1};
    return tg__conv2d_geom_init(&g, 4, xs, 4, wsh, 1, bs, stride, pad, dil, groups, msg, len);
}

Test(conv2d, geometry_errors_name_the_shapes) {
    char msg[256];
    const int64_t x[4] = {2, 3, 5, 5}, w_bad_c[4] = {4, 2, 3, 3}, w[4] = {4, 3, 3, 3};
    cr_expect_eq(geom_try(x, w_bad_c, NULL, 1, 0, 1, 1, msg, sizeof msg), TG_ERR_SHAPE);
    cr_expect_str_eq(msg, "conv2d: input [2,3,5,5] has 3 channels but weight [4,2,3,3] with "
                          "groups 1 expects 2");
    const int64_t b_bad[1] = {3};
    cr_expect_eq(geom_try(x, w, b_bad, 1, 0, 1, 1, msg, sizeof msg), TG_ERR_SHAPE);
    cr_expect_str_eq(msg, "conv2d: bias [3] must be [4] for weight [4,3,3,3]");
    cr_expect_eq(geom_try(x, w, NULL, 1, 0, 1, 2, msg, sizeof msg), TG_ERR_VALUE);
    cr_expect_str_eq(msg, "conv2d: groups 2 must be >= 1 and divide the input channels (input "
                          "[2,3,5,5]) and the output channels (weight [4,3,3,3])");
    cr_expect_eq(geom_try(x, w, NULL, 0, 0, 1, 1, msg, sizeof msg), TG_ERR_VALUE);
    cr_expect_str_eq(msg, "conv2d: stride [0,1] and dilation [1,1] must be >= 1, padding [0,0] "
                          ">= 0");
    cr_expect_eq(geom_try(x, w, NULL, 1, 0, 3, 1, msg, sizeof msg), TG_ERR_SHAPE);
    cr_expect_str_eq(msg, "conv2d: input [2,3,5,5] with padding [0,0] is smaller than weight "
                          "[4,3,3,3] dilated by [3,1] (7 x 3)");
    tg__conv2d_geom g;
    const int64_t one[2] = {1, 1}, zero[2] = {0, 0};
    cr_expect_eq(tg__conv2d_geom_init(&g, 3, x, 4, w, 0, NULL, one, zero, one, 1, msg, sizeof msg),
                 TG_ERR_SHAPE);
    cr_expect_str_eq(msg, "conv2d: input [2,3,5] must be rank 4 [N,C,H,W]");
    /* the output size, PyTorch's formula: floor((7 + 2*1 - 2*(3-1) - 1) / 2) + 1 = 3 */
    const int64_t x7[4] = {1, 3, 7, 7}, s2[2] = {2, 2}, d2[2] = {2, 2};
    cr_assert_eq(tg__conv2d_geom_init(&g, 4, x7, 4, w, 0, NULL, s2, one, d2, 1, msg, sizeof msg),
                 TG_OK);
    cr_expect_eq(g.OH, 3);
    cr_expect_eq(g.OW, 3);
}

/* The same results bit for bit on 1 and 2 threads, in f32 and f64, for the two large cases
 * (threaded forward, dx, dw and db). */
Test(conv2d, thread_count_bit_identity) {
    /* OpenBLAS (-DTG_USE_OPENBLAS=ON) promises no bit-identity across thread counts: test the
     * library's own best kernel, which does */
    const tg__kernel_id kept = tg__kernel_get();
    if (kept == TG_KERNEL_OPENBLAS)
        for (int id = TG_KERNEL_OPENBLAS - 1; id >= 0; id--)
            if (tg__kernel_available((tg__kernel_id)id)) {
                cr_assert_eq(tg__kernel_set((tg__kernel_id)id), TG_OK);
                break;
            }
    for (size_t ci = N_CONV - 2; ci < N_CONV; ci++) {
        tg__conv2d_geom g;
        conv_geom(&conv_cases[ci], &g);
        conv_bufs B;
        conv_bufs_make(&g, &conv_cases[ci], 400 + ci, &B);
        for (int d = 0; d < 2; d++) {
            const tg_dtype dt = d ? TG_F64 : TG_F32;
            const size_t esz = tg__dtype_size(dt);
            const int64_t n[5] = {numel_x(&g), numel_w(&g), g.K, numel_y(&g), numel_y(&g)};
            void *in[4];
            const double *src[4] = {B.x, B.w, B.b, B.dy};
            for (int i = 0; i < 4; i++) {
                in[i] = d ? (void *)copy_buf(src[i], n[i == 3 ? 3 : i])
                          : (void *)to_f32(src[i], n[i == 3 ? 3 : i]);
            }
            void *out[2][4];
            for (int t = 0; t < 2; t++) {
                cr_assert_eq(tg_set_num_threads(t + 1), TG_OK);
                out[t][0] = calloc((size_t)n[3], esz); /* y */
                out[t][1] = calloc((size_t)n[0], esz); /* dx */
                out[t][2] = calloc((size_t)n[1], esz); /* dw */
                out[t][3] = calloc((size_t)n[2], esz); /* db */
                cr_assert(out[t][0] && out[t][1] && out[t][2] && out[t][3]);
                cr_assert_eq(
                    tg__conv2d_forward(&g, dt, in[0], in[1], in[2], out[t][0], B.ws, B.ws_bytes),
                    TG_OK);
                cr_assert_eq(tg__conv2d_backward(&g, dt, in[0], in[1], in[3], out[t][1], out[t][2],
                                                 out[t][3], B.ws, B.ws_bytes, false),
                             TG_OK);
            }
            const int64_t cnt[4] = {n[3], n[0], n[1], n[2]};
            static const char *const names[4] = {"y", "dx", "dw", "db"};
            for (int i = 0; i < 4; i++) {
                cr_expect_eq(memcmp(out[0][i], out[1][i], (size_t)cnt[i] * esz), 0,
                             "case %zu %s %s differs between 1 and 2 threads", ci,
                             tg__dtype_name(dt), names[i]);
                free(out[0][i]), free(out[1][i]);
            }
            for (int i = 0; i < 4; i++)
                free(in[i]);
        }
        conv_bufs_free(&B);
    }
    tg_set_num_threads(1);
    tg__kernel_set(kept);
}

/* ---- Pooling ---- */

typedef struct pool_case {
    int64_t N, C, H, W, kernel[2], stride[2], pad[2];
} pool_case;

static const pool_case pool_cases[] = {
    {2, 3, 6, 6, {2, 2}, {2, 2}, {0, 0}}, {1, 2, 7, 5, {2, 2}, {2, 2}, {0, 0}},
    {2, 2, 6, 7, {3, 3}, {2, 2}, {1, 1}}, {1, 3, 5, 8, {3, 2}, {1, 3}, {1, 0}},
    {2, 1, 4, 4, {1, 1}, {1, 1}, {0, 0}}, {1, 2, 1, 6, {1, 3}, {1, 2}, {0, 1}},
    {1, 1, 5, 5, {5, 4}, {2, 1}, {2, 2}}, {3, 2, 9, 4, {2, 3}, {3, 2}, {1, 1}},
};
#define N_POOL (sizeof pool_cases / sizeof pool_cases[0])

static void pool_geom(const pool_case *pc, tg__pool2d_geom *g) {
    const int64_t xs[4] = {pc->N, pc->C, pc->H, pc->W};
    char msg[256];
    cr_assert_eq(tg__pool2d_geom_init(g, "max_pool2d", 4, xs, pc->kernel, pc->stride, pc->pad, msg,
                                      sizeof msg),
                 TG_OK, "%s", msg);
}

/* Naive pooling: window by window over the padded image. kind 0: max (first maximum in scan
 * order, padding -inf), 1: average with padding counted, 2: average over the image pixels. */
static void naive_pool(const tg__pool2d_geom *g, int kind, const double *x, double *y,
                       int32_t *am) {
    for (int64_t p = 0; p < g->N * g->C; p++)
        for (int64_t oh = 0; oh < g->OH; oh++)
            for (int64_t ow = 0; ow < g->OW; ow++) {
                double best = -INFINITY, s = 0;
                int64_t bi = -1, cnt = 0;
                for (int64_t r = 0; r < g->kernel[0]; r++)
                    for (int64_t q = 0; q < g->kernel[1]; q++) {
                        const int64_t ih = oh * g->stride[0] - g->pad[0] + r;
                        const int64_t iw = ow * g->stride[1] - g->pad[1] + q;
                        if (ih < 0 || ih >= g->H || iw < 0 || iw >= g->W)
                            continue;
                        const double v = x[p * g->H * g->W + ih * g->W + iw];
                        if (bi < 0 || v > best) {
                            best = v;
                            bi = ih * g->W + iw;
                        }
                        s += v;
                        cnt++;
                    }
                const int64_t o = (p * g->OH + oh) * g->OW + ow;
                if (kind == 0) {
                    y[o] = best;
                    am[o] = (int32_t)bi;
                } else {
                    y[o] = s / (double)(kind == 1 ? g->kernel[0] * g->kernel[1] : cnt);
                }
            }
}

static int64_t pnx(const tg__pool2d_geom *g) { return g->N * g->C * g->H * g->W; }
static int64_t pny(const tg__pool2d_geom *g) { return g->N * g->C * g->OH * g->OW; }

/* Distinct values, at least 1/64 apart (no ties: finite differences cannot move a maximum),
 * or (ties) values from {-1, 0, 1} so that windows hold equal maxima. */
static double *pool_input(tg_rng *rng, int64_t n, bool ties) {
    double *x = malloc(sizeof(double) * (size_t)n);
    cr_assert(x);
    for (int64_t i = 0; i < n; i++)
        x[i] = ties ? (double)tg_rng_below(rng, 3) - 1 : (double)i / 64;
    if (!ties)
        for (int64_t i = n - 1; i > 0; i--) { /* shuffle */
            const int64_t j = (int64_t)tg_rng_below(rng, (uint64_t)i + 1);
            const double t = x[i];
            x[i] = x[j];
            x[j] = t;
        }
    return x;
}

static void pool_forward(const tg__pool2d_geom *g, int kind, tg_dtype dt, const void *x, void *y,
                         int32_t *am) {
    if (kind == 0)
        tg__max_pool2d_forward(g, dt, x, y, am);
    else
        tg__avg_pool2d_forward(g, dt, kind == 1, x, y);
}

static void pool_backward(const tg__pool2d_geom *g, int kind, tg_dtype dt, const int32_t *am,
                          const void *dy, void *dx) {
    if (kind == 0)
        tg__max_pool2d_backward(g, dt, am, dy, dx, false);
    else
        tg__avg_pool2d_backward(g, dt, kind == 1, dy, dx);
}

Test(pool2d, forward_and_backward_match_naive_and_finite_differences) {
    for (size_t ci = 0; ci < N_POOL; ci++)
        for (int kind = 0; kind < 3; kind++)
            for (int ties = 0; ties < 2; ties++) {
                tg__pool2d_geom g;
                pool_geom(&pool_cases[ci], &g);
                tg_rng rng;
                tg_rng_seed(&rng, 500 + ci * 8 + (size_t)kind * 2 + (size_t)ties);
                const int64_t nx = pnx(&g), ny = pny(&g);
                double *x = pool_input(&rng, nx, ties);
                double *dy = rand_buf(&rng, ny), *dx0 = rand_buf(&rng, nx);
                double *y = malloc(sizeof(double) * (size_t)ny), *ry = malloc(sizeof(double) * ny);
                int32_t *am = malloc(sizeof(int32_t) * (size_t)ny);
                int32_t *ram = malloc(sizeof(int32_t) * (size_t)ny);
                cr_assert(y && ry && am && ram);
                pool_forward(&g, kind, TG_F64, x, y, am);
                naive_pool(&g, kind, x, ry, ram);
                char what[80];
                snprintf(what, sizeof what, "pool case %zu kind %d ties %d forward", ci, kind,
                         ties);
                cr_expect_eq(compare(what, y, ry, ny, 1e-14, 1e-14), 0, "%s", what);
                if (kind == 0)
                    cr_expect_eq(memcmp(am, ram, sizeof(int32_t) * (size_t)ny), 0,
                                 "%s: argmax is not the first maximum", what);

                /* backward vs naive: the scatter of dy through the windows */
                double *dx = copy_buf(dx0, nx), *rdx = copy_buf(dx0, nx);
                pool_backward(&g, kind, TG_F64, am, dy, dx);
                for (int64_t p = 0; p < g.N * g.C; p++)
                    for (int64_t oh = 0; oh < g.OH; oh++)
                        for (int64_t ow = 0; ow < g.OW; ow++) {
                            const int64_t o = (p * g.OH + oh) * g.OW + ow;
                            int64_t cnt = 0;
                            for (int pass = 0; pass < 2; pass++)
                                for (int64_t r = 0; r < g.kernel[0]; r++)
                                    for (int64_t q = 0; q < g.kernel[1]; q++) {
                                        const int64_t ih = oh * g.stride[0] - g.pad[0] + r;
                                        const int64_t iw = ow * g.stride[1] - g.pad[1] + q;
                                        if (ih < 0 || ih >= g.H || iw < 0 || iw >= g.W)
                                            continue;
                                        if (pass == 0) {
                                            cnt++;
                                            continue;
                                        }
                                        const int64_t xi = p * g.H * g.W + ih * g.W + iw;
                                        if (kind == 0)
                                            rdx[xi] += (ih * g.W + iw == ram[o]) ? dy[o] : 0;
                                        else
                                            rdx[xi] += dy[o] / (double)(kind == 1 ? g.kernel[0] *
                                                                                        g.kernel[1]
                                                                                  : cnt);
                                    }
                        }
                snprintf(what, sizeof what, "pool case %zu kind %d ties %d backward", ci, kind,
                         ties);
                cr_expect_eq(compare(what, dx, rdx, nx, 1e-14, 1e-14), 0, "%s", what);

                /* finite differences of L = sum(dy * pool(x)) (no ties: max is differentiable) */
                if (!ties) {
                    double *fd = malloc(sizeof(double) * (size_t)nx), *gr = malloc(8 * nx);
                    cr_assert(fd && gr);
                    const double eps = 1e-6;
                    for (int64_t i = 0; i < nx; i++) {
                        const double keep = x[i];
                        x[i] = keep + eps;
                        pool_forward(&g, kind, TG_F64, x, y, am);
                        const double lp = dot(dy, y, ny);
                        x[i] = keep - eps;
                        pool_forward(&g, kind, TG_F64, x, y, am);
                        const double lm = dot(dy, y, ny);
                        x[i] = keep;
                        fd[i] = (lp - lm) / (2 * eps);
                        gr[i] = dx[i] - dx0[i];
                    }
                    snprintf(what, sizeof what, "pool case %zu kind %d finite differences", ci,
                             kind);
                    cr_expect_eq(compare(what, gr, fd, nx, 1e-8, 1e-6), 0, "%s", what);
                    free(fd), free(gr);
                }

                /* float32 forward and backward (from zero) against the same references */
                float *x32 = to_f32(x, nx), *y32 = malloc(sizeof(float) * (size_t)ny);
                float *dy32 = to_f32(dy, ny), *dx32 = calloc((size_t)nx, sizeof(float));
                cr_assert(y32 && dx32);
                pool_forward(&g, kind, TG_F32, x32, y32, am);
                snprintf(what, sizeof what, "pool case %zu kind %d ties %d f32", ci, kind, ties);
                cr_expect_eq(compare_f32(what, y32, ry, NULL, ny), 0, "%s", what);
                if (kind == 0)
                    cr_expect_eq(memcmp(am, ram, sizeof(int32_t) * (size_t)ny), 0, "%s: argmax",
                                 what);
                pool_backward(&g, kind, TG_F32, am, dy32, dx32);
                for (int64_t i = 0; i < nx; i++)
                    rdx[i] -= dx0[i];
                cr_expect_eq(compare_f32(what, dx32, rdx, NULL, nx), 0, "%s backward", what);
                free(x32), free(y32), free(dy32), free(dx32);
                free(x), free(dy), free(dx0), free(y), free(ry), free(am), free(ram), free(dx);
                free(rdx);
            }
}

/* PyTorch's CPU rule `if (v > max || isnan(v))`: a NaN beats any number, and a later NaN the
 * earlier one; an all -inf window reports its first pixel. */
Test(pool2d, max_pool_nan_and_minus_infinity) {
    const pool_case pc = {1, 1, 2, 4, {2, 2}, {2, 2}, {0, 0}};
    tg__pool2d_geom g;
    pool_geom(&pc, &g);
    const double x[8] = {1, NAN, -INFINITY, -INFINITY, NAN, 5, -INFINITY, -INFINITY};
    double y[2];
    int32_t am[2];
    tg__max_pool2d_forward(&g, TG_F64, x, y, am);
    cr_expect(isnan(y[0]));
    cr_expect_eq(am[0], 4, "the last NaN in scan order: index 4, got %d", am[0]);
    cr_expect(isinf(y[1]) && y[1] < 0);
    cr_expect_eq(am[1], 2);
}

Test(pool2d, geometry_errors) {
    tg__pool2d_geom g;
    char msg[256];
    const int64_t x[4] = {1, 2, 3, 3}, k2[2] = {2, 2}, k4[2] = {4, 4}, s1[2] = {1, 1};
    const int64_t p0[2] = {0, 0}, p2[2] = {2, 0};
    cr_expect_eq(tg__pool2d_geom_init(&g, "max_pool2d", 4, x, k2, s1, p2, msg, sizeof msg),
                 TG_ERR_VALUE);
    cr_expect_str_eq(msg, "max_pool2d: kernel [2,2] and stride [1,1] must be >= 1, padding [2,0] "
                          "between 0 and half the kernel");
    cr_expect_eq(tg__pool2d_geom_init(&g, "avg_pool2d", 4, x, k4, s1, p0, msg, sizeof msg),
                 TG_ERR_SHAPE);
    cr_expect_str_eq(msg, "avg_pool2d: input [1,2,3,3] with padding [0,0] is smaller than the "
                          "kernel [4,4]");
    cr_expect_eq(tg__pool2d_geom_init(&g, "avg_pool2d", 2, x, k2, s1, p0, msg, sizeof msg),
                 TG_ERR_SHAPE);
    cr_expect_str_eq(msg, "avg_pool2d: input [1,2] must be rank 4 [N,C,H,W]");
}

Test(pool2d, thread_count_bit_identity) {
    const pool_case pc = {4, 8, 34, 34, {3, 3}, {2, 2}, {1, 1}};
    tg__pool2d_geom g;
    pool_geom(&pc, &g);
    tg_rng rng;
    tg_rng_seed(&rng, 9);
    const int64_t nx = pnx(&g), ny = pny(&g);
    double *x = pool_input(&rng, nx, true), *dy = rand_buf(&rng, ny);
    for (int kind = 0; kind < 3; kind++) {
        double *y[2], *dx[2];
        int32_t *am[2];
        for (int t = 0; t < 2; t++) {
            cr_assert_eq(tg_set_num_threads(t + 1), TG_OK);
            y[t] = malloc(sizeof(double) * (size_t)ny);
            am[t] = calloc((size_t)ny, sizeof(int32_t));
            dx[t] = calloc((size_t)nx, sizeof(double));
            cr_assert(y[t] && am[t] && dx[t]);
            pool_forward(&g, kind, TG_F64, x, y[t], am[t]);
            pool_backward(&g, kind, TG_F64, am[t], dy, dx[t]);
        }
        cr_expect_eq(memcmp(y[0], y[1], sizeof(double) * (size_t)ny), 0, "kind %d y", kind);
        cr_expect_eq(memcmp(am[0], am[1], sizeof(int32_t) * (size_t)ny), 0, "kind %d am", kind);
        cr_expect_eq(memcmp(dx[0], dx[1], sizeof(double) * (size_t)nx), 0, "kind %d dx", kind);
        for (int t = 0; t < 2; t++)
            free(y[t]), free(am[t]), free(dx[t]);
    }
    free(x), free(dy);
    tg_set_num_threads(1);
}

/* ---- Batch norm ---- */

typedef struct bn_case {
    int rank;
    int64_t shape[4];
} bn_case;

static const bn_case bn_cases[] = {
    {2, {5, 3, 1, 1}}, {2, {2, 1, 1, 1}}, {4, {1, 4, 3, 2}},
    {4, {3, 2, 1, 1}}, {4, {2, 3, 4, 5}}, {4, {2, 1, 1, 3}},
};
#define N_BN (sizeof bn_cases / sizeof bn_cases[0])

static void bn_geom(const bn_case *bc, tg__bn_geom *g) {
    char msg[256];
    cr_assert_eq(tg__bn_geom_init(g, "batch_norm", bc->rank, bc->shape, 1, msg, sizeof msg), TG_OK,
                 "%s", msg);
}

/* Naive batch norm in double: statistics straight from the definition. */
static void naive_bn(const tg__bn_geom *g, bool training, const double *x, const double *gamma,
                     const double *beta, const double *rm, const double *rv, double eps, double *y,
                     double *mean, double *var_b, double *var_u) {
    const int64_t m = g->N * g->HW;
    for (int64_t c = 0; c < g->C; c++) {
        double s = 0, ss = 0;
        for (int64_t n = 0; n < g->N; n++)
            for (int64_t q = 0; q < g->HW; q++)
                s += x[(n * g->C + c) * g->HW + q];
        const double mu = s / (double)m;
        for (int64_t n = 0; n < g->N; n++)
            for (int64_t q = 0; q < g->HW; q++) {
                const double d = x[(n * g->C + c) * g->HW + q] - mu;
                ss += d * d;
            }
        mean[c] = mu;
        var_b[c] = ss / (double)m;
        var_u[c] = m > 1 ? ss / (double)(m - 1) : NAN;
        const double um = training ? mu : rm[c], uv = training ? var_b[c] : rv[c];
        for (int64_t n = 0; n < g->N; n++)
            for (int64_t q = 0; q < g->HW; q++) {
                const int64_t i = (n * g->C + c) * g->HW + q;
                y[i] = (x[i] - um) / sqrt(uv + eps) * (gamma ? gamma[c] : 1) + (beta ? beta[c] : 0);
            }
    }
}

Test(batch_norm, forward_matches_naive_loop) {
    const double eps = 1e-5, mom = 0.1;
    for (size_t ci = 0; ci < N_BN; ci++)
        for (int affine = 0; affine < 2; affine++) {
            tg__bn_geom g;
            bn_geom(&bn_cases[ci], &g);
            const int64_t nx = g.N * g.C * g.HW, C = g.C;
            tg_rng rng;
            tg_rng_seed(&rng, 600 + ci * 2 + (size_t)affine);
            double *x = rand_buf(&rng, nx), *gamma = affine ? rand_buf(&rng, C) : NULL;
            double *beta = affine ? rand_buf(&rng, C) : NULL;
            double *rm0 = rand_buf(&rng, C), *rv0 = rand_buf(&rng, C);
            for (int64_t c = 0; c < C; c++)
                rv0[c] = fabs(rv0[c]) + 0.5;
            double *rm = copy_buf(rm0, C), *rv = copy_buf(rv0, C);
            double *y = malloc(8 * (size_t)nx), *ry = malloc(8 * (size_t)nx);
            double *sm = malloc(8 * (size_t)C), *sr = malloc(8 * (size_t)C);
            double *mean = malloc(8 * (size_t)C), *vb = malloc(8 * (size_t)C);
            double *vu = malloc(8 * (size_t)C), *want_r = malloc(8 * (size_t)C);
            cr_assert(y && ry && sm && sr && mean && vb && vu && want_r);
            char what[80];

            tg__bn_forward_train(&g, TG_F64, x, gamma, beta, eps, mom, y, sm, sr, rm, rv);
            naive_bn(&g, true, x, gamma, beta, NULL, NULL, eps, ry, mean, vb, vu);
            snprintf(what, sizeof what, "bn case %zu affine %d train y", ci, affine);
            cr_expect_eq(compare(what, y, ry, nx, 1e-12, 1e-12), 0, "%s", what);
            cr_expect_eq(compare("saved mean", sm, mean, C, 1e-14, 1e-13), 0);
            for (int64_t c = 0; c < C; c++)
                want_r[c] = 1 / sqrt(vb[c] + eps);
            cr_expect_eq(compare("saved rstd", sr, want_r, C, 1e-12, 1e-12), 0);
            for (int64_t c = 0; c < C; c++)
                want_r[c] = 0.9 * rm0[c] + 0.1 * mean[c];
            cr_expect_eq(compare("running mean", rm, want_r, C, 1e-14, 1e-13), 0);
            for (int64_t c = 0; c < C; c++)
                want_r[c] = 0.9 * rv0[c] + 0.1 * vu[c]; /* the unbiased variance */
            cr_expect_eq(compare("running var", rv, want_r, C, 1e-14, 1e-13), 0);

            tg__bn_forward_eval(&g, TG_F64, x, gamma, beta, rm0, rv0, eps, y, sm, sr);
            naive_bn(&g, false, x, gamma, beta, rm0, rv0, eps, ry, mean, vb, vu);
            snprintf(what, sizeof what, "bn case %zu affine %d eval y", ci, affine);
            cr_expect_eq(compare(what, y, ry, nx, 1e-12, 1e-12), 0, "%s", what);
            cr_expect_eq(memcmp(sm, rm0, 8 * (size_t)C), 0, "eval saves the running mean");
            for (int64_t c = 0; c < C; c++)
                want_r[c] = 1 / sqrt(rv0[c] + eps);
            cr_expect_eq(compare("eval rstd", sr, want_r, C, 1e-14, 1e-14), 0);

            /* float32 training forward */
            float *x32 = to_f32(x, nx), *g32 = gamma ? to_f32(gamma, C) : NULL;
            float *b32 = beta ? to_f32(beta, C) : NULL, *y32 = malloc(4 * (size_t)nx);
            float *sm32 = malloc(4 * (size_t)C), *sr32 = malloc(4 * (size_t)C);
            cr_assert(y32 && sm32 && sr32);
            tg__bn_forward_train(&g, TG_F32, x32, g32, b32, eps, mom, y32, sm32, sr32, NULL, NULL);
            naive_bn(&g, true, x, gamma, beta, NULL, NULL, eps, ry, mean, vb, vu);
            snprintf(what, sizeof what, "bn case %zu affine %d f32 y", ci, affine);
            /* normalized values are up to 1/sqrt(eps) times the input's rounding when a channel
             * is nearly constant; these are not */
            cr_expect_eq(compare_f32(what, y32, ry, NULL, nx), 0, "%s", what);
            free(x32), free(g32), free(b32), free(y32), free(sm32), free(sr32);
            free(x), free(gamma), free(beta), free(rm0), free(rv0), free(rm), free(rv), free(y);
            free(ry), free(sm), free(sr), free(mean), free(vb), free(vu), free(want_r);
        }
}

typedef struct bn_fd_ctx {
    const tg__bn_geom *g;
    bool training;
    double *x, *gamma, *beta, *rm, *rv, *dy, *y, *sm, *sr;
} bn_fd_ctx;

static double bn_loss(const bn_fd_ctx *c) {
    const double eps = 1e-5;
    if (c->training)
        tg__bn_forward_train(c->g, TG_F64, c->x, c->gamma, c->beta, eps, 0.1, c->y, c->sm, c->sr,
                             NULL, NULL);
    else
        tg__bn_forward_eval(c->g, TG_F64, c->x, c->gamma, c->beta, c->rm, c->rv, eps, c->y, c->sm,
                            c->sr);
    return dot(c->dy, c->y, c->g->N * c->g->C * c->g->HW);
}

static void bn_fd(bn_fd_ctx *c, double *p, int64_t n, double *out) {
    const double h = 1e-6;
    for (int64_t i = 0; i < n; i++) {
        const double keep = p[i];
        p[i] = keep + h;
        const double lp = bn_loss(c);
        p[i] = keep - h;
        const double lm = bn_loss(c);
        p[i] = keep;
        out[i] = (lp - lm) / (2 * h);
    }
}

Test(batch_norm, backward_matches_finite_differences) {
    for (size_t ci = 0; ci < N_BN; ci++)
        for (int training = 0; training < 2; training++)
            for (int affine = 0; affine < 2; affine++) {
                tg__bn_geom g;
                bn_geom(&bn_cases[ci], &g);
                const int64_t nx = g.N * g.C * g.HW, C = g.C;
                tg_rng rng;
                tg_rng_seed(&rng, 700 + ci * 4 + (size_t)training * 2 + (size_t)affine);
                bn_fd_ctx c = {.g = &g, .training = training};
                c.x = rand_buf(&rng, nx);
                c.gamma = affine ? rand_buf(&rng, C) : NULL;
                c.beta = affine ? rand_buf(&rng, C) : NULL;
                c.rm = rand_buf(&rng, C);
                c.rv = rand_buf(&rng, C);
                for (int64_t i = 0; i < C; i++)
                    c.rv[i] = fabs(c.rv[i]) + 0.5;
                c.dy = rand_buf(&rng, nx);
                c.y = malloc(8 * (size_t)nx);
                c.sm = malloc(8 * (size_t)C);
                c.sr = malloc(8 * (size_t)C);
                cr_assert(c.y && c.sm && c.sr);
                bn_loss(&c); /* fills the saved mean and rstd */
                double *dx0 = rand_buf(&rng, nx), *dg0 = rand_buf(&rng, C);
                double *db0 = rand_buf(&rng, C);
                double *dx = copy_buf(dx0, nx), *dg = copy_buf(dg0, C), *db = copy_buf(db0, C);
                tg__bn_backward(&g, TG_F64, training, c.x, c.gamma, c.sm, c.sr, c.dy, dx, dg, db,
                                false);
                double *fd = malloc(8 * (size_t)nx), *gr = malloc(8 * (size_t)nx);
                cr_assert(fd && gr);
                char what[80];
                bn_fd(&c, c.x, nx, fd); /* leaves the saved statistics of a perturbed x... */
                bn_loss(&c);            /* ...so restore them */
                for (int64_t i = 0; i < nx; i++)
                    gr[i] = dx[i] - dx0[i];
                snprintf(what, sizeof what, "bn case %zu training %d affine %d dx", ci, training,
                         affine);
                cr_expect_eq(compare(what, gr, fd, nx, 1e-7, 1e-6), 0, "%s", what);
                if (affine) {
                    bn_fd(&c, c.gamma, C, fd);
                    for (int64_t i = 0; i < C; i++)
                        gr[i] = dg[i] - dg0[i];
                    snprintf(what, sizeof what, "bn case %zu training %d dgamma", ci, training);
                    cr_expect_eq(compare(what, gr, fd, C, 1e-7, 1e-6), 0, "%s", what);
                    bn_fd(&c, c.beta, C, fd);
                    for (int64_t i = 0; i < C; i++)
                        gr[i] = db[i] - db0[i];
                    snprintf(what, sizeof what, "bn case %zu training %d dbeta", ci, training);
                    cr_expect_eq(compare(what, gr, fd, C, 1e-7, 1e-6), 0, "%s", what);
                }
                /* NULL destinations: dx alone gives the same dx */
                double *dx2 = copy_buf(dx0, nx);
                tg__bn_backward(&g, TG_F64, training, c.x, c.gamma, c.sm, c.sr, c.dy, dx2, NULL,
                                NULL, false);
                cr_expect_eq(memcmp(dx, dx2, 8 * (size_t)nx), 0, "dx alone");
                free(dx2), free(fd), free(gr), free(dx0), free(dg0), free(db0), free(dx);
                free(dg), free(db), free(c.x), free(c.gamma), free(c.beta), free(c.rm);
                free(c.rv), free(c.dy), free(c.y), free(c.sm), free(c.sr);
            }
}

Test(batch_norm, geometry_errors) {
    tg__bn_geom g;
    char msg[256];
    const int64_t one[4] = {1, 3, 1, 1}, x3[3] = {2, 3, 4};
    cr_expect_eq(tg__bn_geom_init(&g, "batch_norm", 4, one, 1, msg, sizeof msg), TG_ERR_SHAPE);
    cr_expect_str_eq(msg, "batch_norm: input [1,3,1,1] has 1 value per channel; training needs "
                          "more than 1");
    cr_expect_eq(tg__bn_geom_init(&g, "batch_norm", 4, one, 0, msg, sizeof msg), TG_OK);
    cr_expect_eq(tg__bn_geom_init(&g, "batch_norm", 3, x3, 1, msg, sizeof msg), TG_ERR_SHAPE);
    cr_expect_str_eq(msg, "batch_norm: input [2,3,4] must be rank 2 [N,F] or rank 4 [N,C,H,W]");
}

Test(batch_norm, thread_count_bit_identity) {
    const bn_case bc = {4, {8, 16, 24, 24}};
    tg__bn_geom g;
    bn_geom(&bc, &g);
    const int64_t nx = g.N * g.C * g.HW, C = g.C;
    tg_rng rng;
    tg_rng_seed(&rng, 11);
    double *x = rand_buf(&rng, nx), *gamma = rand_buf(&rng, C), *beta = rand_buf(&rng, C);
    double *dy = rand_buf(&rng, nx);
    double *y[2], *dx[2], *dg[2], *db[2], *sm[2], *sr[2], *rm[2], *rv[2];
    for (int t = 0; t < 2; t++) {
        cr_assert_eq(tg_set_num_threads(t + 1), TG_OK);
        y[t] = malloc(8 * (size_t)nx), dx[t] = calloc((size_t)nx, 8);
        dg[t] = calloc((size_t)C, 8), db[t] = calloc((size_t)C, 8);
        sm[t] = malloc(8 * (size_t)C), sr[t] = malloc(8 * (size_t)C);
        rm[t] = calloc((size_t)C, 8), rv[t] = calloc((size_t)C, 8);
        tg__bn_forward_train(&g, TG_F64, x, gamma, beta, 1e-5, 0.1, y[t], sm[t], sr[t], rm[t],
                             rv[t]);
        tg__bn_backward(&g, TG_F64, 1, x, gamma, sm[t], sr[t], dy, dx[t], dg[t], db[t], false);
    }
    cr_expect_eq(memcmp(y[0], y[1], 8 * (size_t)nx), 0);
    cr_expect_eq(memcmp(dx[0], dx[1], 8 * (size_t)nx), 0);
    cr_expect_eq(memcmp(dg[0], dg[1], 8 * (size_t)C), 0);
    cr_expect_eq(memcmp(db[0], db[1], 8 * (size_t)C), 0);
    cr_expect_eq(memcmp(rv[0], rv[1], 8 * (size_t)C), 0);
    for (int t = 0; t < 2; t++)
        free(y[t]), free(dx[t]), free(dg[t]), free(db[t]), free(sm[t]), free(sr[t]), free(rm[t]),
            free(rv[t]);
    free(x), free(gamma), free(beta), free(dy);
    tg_set_num_threads(1);
}
