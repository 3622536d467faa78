/* Threaded elementwise ops (add, relu, tanh, softmax, above TG_PAR_MIN_ELEMS elements), the
 * optimizers and layer_norm give the
 * same bits on 1 and 2 threads, forward and backward, and agree with a small-size run of the
 * same values (the code path under the threshold). */
#include "kernels/parallel.h"

#include <criterion/criterion.h>
#include <stdatomic.h>
#include <sys/wait.h>
#include <unistd.h>

/* loss = sum(w * (softmax(tanh(a + bias)) + relu(a + c))) on [rows, cols]; returns the clones of
 * y, da, dbias, dc (caller frees). */
static tg_tensor *leaf(tg_dtype dt, int rank, const int64_t *shape, const double *vals) {
    tg_tensor *f64 = tg_tensor_from(TG_F64, rank, shape, vals);
    tg_tensor *t = tg_tensor_clone(f64, dt);
    tg_tensor_free(f64);
    return t;
}

/* The inputs: a, c, w [300, 401] and bias [401], fixed random values. */
enum { ROWS = 300, COLS = 401 }; /* 120,300 elements: above the threshold */
static double a_v[ROWS * COLS], c_v[ROWS * COLS], w_v[ROWS * COLS], bias_v[COLS];

static void run(tg_dtype dt, int threads, int64_t rows, int64_t cols, tg_tensor *out[4]) {
    tg_tensor *a = leaf(dt, TG_SHAPE(rows, cols), a_v);
    tg_tensor *bias = leaf(dt, TG_SHAPE(cols), bias_v);
    tg_tensor *c = leaf(dt, TG_SHAPE(rows, cols), c_v);
    tg_tensor *w = leaf(dt, TG_SHAPE(rows, cols), w_v);
    tg_tensor_set_requires_grad(a, 1);
    tg_tensor_set_requires_grad(bias, 1);
    tg_tensor_set_requires_grad(c, 1);
    cr_assert_eq(tg_set_num_threads(threads), TG_OK);
    tg_tape *t = tg_tape_new();
    tg_tensor *y =
        tg_add(t, tg_softmax(t, tg_tanh(t, tg_add(t, a, bias))), tg_relu(t, tg_add(t, a, c)));
    cr_assert_eq(tg_backward(t, tg_sum(t, tg_mul(t, y, w))), TG_OK, "%s", tg_tape_errmsg(t));
    out[0] = tg_tensor_clone(y, dt);
    out[1] = tg_tensor_clone(tg_tensor_grad(a), dt);
    out[2] = tg_tensor_clone(tg_tensor_grad(bias), dt);
    out[3] = tg_tensor_clone(tg_tensor_grad(c), dt);
    tg_set_num_threads(1);
    tg_tape_free(t);
    tg_tensor_free(a), tg_tensor_free(bias), tg_tensor_free(c), tg_tensor_free(w);
}

static void check(tg_dtype dt) {
    const int64_t rows = ROWS, cols = COLS;
    tg_rng rng;
    tg_rng_seed(&rng, 99);
    for (int64_t i = 0; i < rows * cols; i++) {
        a_v[i] = 6 * tg_rng_uniform(&rng) - 3;
        c_v[i] = 2 * tg_rng_uniform(&rng) - 1;
        w_v[i] = 2 * tg_rng_uniform(&rng) - 1;
    }
    for (int64_t i = 0; i < cols; i++)
        bias_v[i] = 2 * tg_rng_uniform(&rng) - 1;
    tg_tensor *one[4], *two[4];
    run(dt, 1, rows, cols, one);
    run(dt, 2, rows, cols, two);
    const char *what[4] = {"y", "da", "dbias", "dc"};
    for (int k = 0; k < 4; k++) {
        cr_expect(memcmp(tg_tensor_cdata(one[k]), tg_tensor_cdata(two[k]),
                         tg__dtype_size(dt) * (size_t)tg_tensor_numel(one[k])) == 0,
                  "%s %s differs between 1 and 2 threads", tg__dtype_name(dt), what[k]);
    }
    /* The first row alone (401 elements: the unthreaded path) gives the same y and da as row 0
     * of the large run: same values, same per-element arithmetic. */
    tg_tensor *small[4];
    run(dt, 1, 1, cols, small);
    cr_expect(memcmp(tg_tensor_cdata(small[0]), tg_tensor_cdata(one[0]),
                     tg__dtype_size(dt) * (size_t)cols) == 0,
              "%s: y's first row differs between the threaded and the plain path",
              tg__dtype_name(dt));
    cr_expect(memcmp(tg_tensor_cdata(small[1]), tg_tensor_cdata(one[1]),
                     tg__dtype_size(dt) * (size_t)cols) == 0,
              "%s: da's first row differs between the threaded and the plain path",
              tg__dtype_name(dt));
    for (int k = 0; k < 4; k++) {
        tg_tensor_free(one[k]);
        tg_tensor_free(two[k]);
        tg_tensor_free(small[k]);
    }
}

Test(threads, elementwise_ops_f32_bit_identical) { check(TG_F32); }
Test(threads, elementwise_ops_f64_bit_identical) { check(TG_F64); }

/* A child forked after the pool started runs parallel work too (its workers are its own). */
static void fill_job(void *ctx, int tid, int nth) {
    int *hits = ctx;
    (void)nth;
    hits[tid] = 1;
}

Test(threads, pool_works_after_fork) {
    cr_assert_eq(tg_set_num_threads(2), TG_OK);
    int hits[2] = {0, 0};
    tg__parallel_run(2, fill_job, hits); /* starts the worker */
    cr_assert(hits[0] && hits[1], "both threads ran the job");
    /* The child reports through a pipe, not its exit status: under valgrind the child's exit
     * status is valgrind's verdict on memory it inherited from the test runner. */
    int fds[2];
    cr_assert_eq(pipe(fds), 0);
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        close(fds[0]);
        alarm(20); /* a child stuck waiting for the parent's workers dies; the read sees EOF */
        int child_hits[2] = {0, 0};
        tg__parallel_run(2, fill_job, child_hits);
        const char verdict = child_hits[0] && child_hits[1] ? 'y' : 'n';
        ssize_t w = write(fds[1], &verdict, 1);
        _exit(w == 1 ? 0 : 3);
    }
    close(fds[1]);
    char verdict = '?';
    const ssize_t got = read(fds[0], &verdict, 1);
    close(fds[0]);
    int status = 0;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_expect(got == 1 && verdict == 'y',
              "the child's parallel job did not run on 2 threads (verdict '%c')", verdict);
    tg_set_num_threads(1);
}

/* Every part of a job runs exactly once, whichever thread claims it (the caller takes the parts
 * no worker has started), for jobs of several sizes back to back. */
static void count_job(void *ctx, int tid, int nth) {
    atomic_int *hits = ctx;
    (void)nth;
    atomic_fetch_add(&hits[tid], 1);
}

Test(threads, every_part_runs_once) {
    cr_assert_eq(tg_set_num_threads(2), TG_OK);
    for (int round = 0; round < 2000; round++) {
        atomic_int hits[2] = {0, 0};
        tg__parallel_run(2, count_job, hits);
        cr_assert(atomic_load(&hits[0]) == 1 && atomic_load(&hits[1]) == 1,
                  "round %d: parts ran %d and %d times", round, atomic_load(&hits[0]),
                  atomic_load(&hits[1]));
    }
    tg_set_num_threads(1);
}

/* The optimizer's threaded passes (NaN check, update) give the same bits on 1 and 2 threads:
 * three Adam and three momentum steps on parameters above and below TG_PAR_MIN_ELEMS. */
static void optim_run(tg_optim_kind kind, int threads, tg_tensor *out[2]) {
    tg_rng rng;
    tg_rng_seed(&rng, 5);
    tg_tensor *P[2] = {tg_tensor_rand(TG_F32, TG_SHAPE(300, 401), -1, 1, &rng),
                       tg_tensor_rand(TG_F32, TG_SHAPE(1000), -1, 1, &rng)};
    cr_assert_eq(tg_set_num_threads(threads), TG_OK);
    for (int i = 0; i < 2; i++)
        tg_tensor_set_requires_grad(P[i], 1);
    const tg_optim_config cfg = tg_optim_defaults(kind, 0.01);
    tg_optim *o = tg_optim_new(&cfg, P, 2);
    cr_assert(o);
    for (int step = 0; step < 3; step++) {
        tg_tape *t = tg_tape_new();
        tg_tensor *l = tg_add(t, tg_sum(t, tg_mul(t, tg_tanh(t, P[0]), P[0])),
                              tg_sum(t, tg_mul(t, P[1], P[1])));
        cr_assert_eq(tg_backward(t, l), TG_OK, "%s", tg_tape_errmsg(t));
        cr_assert_eq(tg_optim_step(o), TG_OK, "%s", tg_last_errmsg());
        tg_optim_zero_grad(o);
        tg_tape_free(t);
    }
    out[0] = P[0], out[1] = P[1];
    tg_optim_free(o);
    tg_set_num_threads(1);
}

static void optim_check(tg_optim_kind kind, const char *name) {
    tg_tensor *one[2], *two[2];
    optim_run(kind, 1, one);
    optim_run(kind, 2, two);
    for (int i = 0; i < 2; i++) {
        cr_expect(memcmp(tg_tensor_cdata(one[i]), tg_tensor_cdata(two[i]),
                         sizeof(float) * (size_t)tg_tensor_numel(one[i])) == 0,
                  "%s: parameter %d differs between 1 and 2 threads", name, i);
        tg_tensor_free(one[i]), tg_tensor_free(two[i]);
    }
}

Test(threads, optimizer_bit_identical) {
    optim_check(TG_OPTIM_ADAM, "adam");
    optim_check(TG_OPTIM_MOMENTUM, "momentum");
}

/* layer_norm splits rows (y, dx) and columns (dw, db) over threads: y and every gradient are the
 * same bits on 1, 2 and 3 threads, with dx fresh (x used once) and accumulated (x used twice),
 * on a row length that is not a multiple of a cache line. */
static void ln_run(int threads, int64_t rows, int64_t cols, bool x_twice, tg_tensor *out[4]) {
    tg_tensor *x = leaf(TG_F32, TG_SHAPE(rows, cols), a_v);
    tg_tensor *wt = leaf(TG_F32, TG_SHAPE(cols), bias_v);
    tg_tensor *b = leaf(TG_F32, TG_SHAPE(cols), w_v + 7); /* w_v holds ROWS * COLS values */
    tg_tensor *w = leaf(TG_F32, TG_SHAPE(rows, cols), w_v);
    tg_tensor_set_requires_grad(x, 1);
    tg_tensor_set_requires_grad(wt, 1);
    tg_tensor_set_requires_grad(b, 1);
    cr_assert_eq(tg_set_num_threads(threads), TG_OK);
    tg_tape *t = tg_tape_new();
    tg_tensor *y = tg_layer_norm(t, x, wt, b, 1, 1e-5);
    tg_tensor *loss = tg_sum(t, tg_mul(t, y, w));
    if (x_twice)
        loss = tg_add(t, loss, tg_sum(t, tg_mul(t, x, w)));
    cr_assert_eq(tg_backward(t, loss), TG_OK, "%s", tg_tape_errmsg(t));
    out[0] = tg_tensor_clone(y, TG_F32);
    out[1] = tg_tensor_clone(tg_tensor_grad(x), TG_F32);
    out[2] = tg_tensor_clone(tg_tensor_grad(wt), TG_F32);
    out[3] = tg_tensor_clone(tg_tensor_grad(b), TG_F32);
    tg_set_num_threads(1);
    tg_tape_free(t);
    tg_tensor_free(x), tg_tensor_free(wt), tg_tensor_free(b), tg_tensor_free(w);
}

Test(threads, layer_norm_bit_identical) {
    tg_rng rng;
    tg_rng_seed(&rng, 7);
    for (int64_t i = 0; i < ROWS * COLS; i++) {
        a_v[i] = 6 * tg_rng_uniform(&rng) - 3 + 40 * (double)(i % 3); /* rows of large means too */
        w_v[i] = 2 * tg_rng_uniform(&rng) - 1;
    }
    for (int64_t i = 0; i < COLS; i++)
        bias_v[i] = 2 * tg_rng_uniform(&rng) - 1;
    static const int64_t shapes[][2] = {{512, 64}, {300, 67}, {129, 401}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int twice = 0; twice < 2; twice++) {
            const int64_t rows = shapes[s][0], cols = shapes[s][1];
            tg_tensor *one[4], *more[4];
            ln_run(1, rows, cols, twice, one);
            for (int th = 2; th <= 3; th++) {
                ln_run(th, rows, cols, twice, more);
                const char *what[4] = {"y", "dx", "dweight", "dbias"};
                for (int k = 0; k < 4; k++) {
                    cr_expect(memcmp(tg_tensor_cdata(one[k]), tg_tensor_cdata(more[k]),
                                     sizeof(float) * (size_t)tg_tensor_numel(one[k])) == 0,
                              "layer_norm [%lld, %lld]%s: %s differs between 1 and %d threads",
                              (long long)rows, (long long)cols, twice ? " (x used twice)" : "",
                              what[k], th);
                    tg_tensor_free(more[k]);
                }
            }
            for (int k = 0; k < 4; k++)
                tg_tensor_free(one[k]);
        }
}

/* permute and slice split rows over threads: every element moves once, so y and dx are the same
 * on 1, 2 and 3 threads, through the stored (fresh) and the accumulated dx of permute. Shapes of
 * an attention block's heads: x [B*T, 3E] sliced to [B*T, E], reshaped to [B, T, H, D] and
 * permuted to [B, H, T, D], with odd sizes. */
static void shape_run(int threads, bool x_twice, tg_tensor *out[2]) {
    enum { B = 47, T = 9, H = 4, D = 13 }; /* y: 21,996 elements, threaded */
    tg_tensor *x = leaf(TG_F32, TG_SHAPE(B * T, 3 * H * D), a_v);
    tg_tensor *w = leaf(TG_F32, TG_SHAPE(B, H, T, D), w_v);
    tg_tensor_set_requires_grad(x, 1);
    cr_assert_eq(tg_set_num_threads(threads), TG_OK);
    tg_tape *t = tg_tape_new();
    static const int to_heads[4] = {0, 2, 1, 3};
    tg_tensor *y = tg_permute(
        t, tg_reshape(t, tg_slice(t, x, 1, H * D, H * D, 1), TG_SHAPE(B, T, H, D)), 4, to_heads);
    tg_tensor *loss = tg_sum(t, tg_mul(t, y, w));
    if (x_twice) /* a second slice (step 2) and a transposed permute of the same x */
        loss =
            tg_add(t, loss, tg_sum(t, tg_transpose_axes(t, tg_slice(t, x, 1, 1, H * D, 2), 0, 1)));
    cr_assert_eq(tg_backward(t, loss), TG_OK, "%s", tg_tape_errmsg(t));
    out[0] = tg_tensor_clone(y, TG_F32);
    out[1] = tg_tensor_clone(tg_tensor_grad(x), TG_F32);
    tg_set_num_threads(1);
    tg_tape_free(t);
    tg_tensor_free(x), tg_tensor_free(w);
}

Test(threads, permute_and_slice_bit_identical) {
    tg_rng rng;
    tg_rng_seed(&rng, 11);
    for (int64_t i = 0; i < ROWS * COLS; i++) {
        a_v[i] = 2 * tg_rng_uniform(&rng) - 1;
        w_v[i] = 2 * tg_rng_uniform(&rng) - 1;
    }
    for (int twice = 0; twice < 2; twice++) {
        tg_tensor *one[2], *more[2];
        shape_run(1, twice, one);
        for (int th = 2; th <= 3; th++) {
            shape_run(th, twice, more);
            for (int k = 0; k < 2; k++) {
                cr_expect(memcmp(tg_tensor_cdata(one[k]), tg_tensor_cdata(more[k]),
                                 sizeof(float) * (size_t)tg_tensor_numel(one[k])) == 0,
                          "%s%s differs between 1 and %d threads", k ? "dx" : "y",
                          twice ? " (x used twice)" : "", th);
                tg_tensor_free(more[k]);
            }
        }
        tg_tensor_free(one[0]), tg_tensor_free(one[1]);
    }
}
