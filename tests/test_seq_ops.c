/* The sequence-model ops (issue 15) beyond the catalog's finite differences: exact error
 * messages, values worked out by hand, masks that are exactly zero, and results that do not
 * depend on the thread count. */
#include "core/engine.h"

#include <criterion/criterion.h>
#include <math.h>

static tg_tape *tape;
static void setup(void) { tape = tg_tape_new(); }
static void teardown(void) {
    tg_tape_free(tape);
    tg_set_num_threads(1);
}
TestSuite(seq, .init = setup, .fini = teardown);

static void expect_msg(int line, const char *rest) {
    char want[512];
    snprintf(want, sizeof want, "test_seq_ops.c:%d: %s", line, rest);
    cr_expect_str_eq(tg_tape_errmsg(tape), want);
}

static tg_tensor *param(tg_rng *rng, int rank, const int64_t *shape) {
    tg_tensor *x = tg_tensor_randn(TG_F64, rank, shape, 0, 1, rng);
    tg_tensor_set_requires_grad(x, 1);
    return x;
}

/* ---- Errors ---- */

Test(seq, embedding_index_out_of_range) {
    tg_tensor *table = tg_tensor_new(TG_F32, TG_SHAPE(27, 8));
    tg_tensor *idx = tg_tensor_from(TG_I32, TG_SHAPE(2, 3), (int32_t[]){0, 1, 2, 3, 27, 5});
    int line = __LINE__ + 1;
    cr_expect_null(tg_embedding(tape, table, idx));
    cr_expect_eq(tg_tape_status(tape), TG_ERR_VALUE);
    expect_msg(line, "tg_embedding: index 27 at position [1,1] of the indices [2,3] is out of "
                     "range for a table of V = 27 rows");
    tg_tensor_free(table);
    tg_tensor_free(idx);
}

Test(seq, embedding_negative_index_and_float_indices) {
    tg_tensor *table = tg_tensor_new(TG_F64, TG_SHAPE(4, 2));
    tg_tensor *idx = tg_tensor_from(TG_I32, TG_SHAPE(3), (int32_t[]){0, -1, 2});
    int line = __LINE__ + 1;
    cr_expect_null(tg_embedding(tape, table, idx));
    expect_msg(line, "tg_embedding: index -1 at position [1] of the indices [3] is out of range "
                     "for a table of V = 4 rows");
    tg_tape_reset(tape);
    tg_tensor *fidx = tg_tensor_new(TG_F64, TG_SHAPE(3));
    line = __LINE__ + 1;
    cr_expect_null(tg_embedding(tape, table, fidx));
    expect_msg(line, "tg_embedding: the indices must be i32, got f64 [3]");
    tg_tensor_free(table);
    tg_tensor_free(idx);
    tg_tensor_free(fidx);
}

Test(seq, matmul_batched_shapes) {
    tg_tensor *a = tg_tensor_new(TG_F32, TG_SHAPE(2, 3, 4));
    tg_tensor *b = tg_tensor_new(TG_F32, TG_SHAPE(3, 4, 5));
    tg_tensor *c = tg_tensor_new(TG_F32, TG_SHAPE(2, 5, 4));
    tg_tensor *v = tg_tensor_new(TG_F32, TG_SHAPE(4));
    int line = __LINE__ + 1;
    cr_expect_null(tg_bmm(tape, a, b));
    expect_msg(line, "tg_matmul_batched: batch dimensions of [2,3,4] and [3,4,5] do not broadcast");
    tg_tape_reset(tape);
    line = __LINE__ + 1;
    cr_expect_null(tg_bmm(tape, a, c));
    expect_msg(line, "tg_matmul_batched: inner dimensions differ: [2,3,4] x [2,5,4]");
    tg_tape_reset(tape);
    cr_expect_not_null(tg_matmul_batched(tape, a, c, 0, 1)); /* [2,3,4] x [2,5,4]^T */
    line = __LINE__ + 1;
    cr_expect_null(tg_matmul_batched(tape, a, c, 1, 0));
    expect_msg(line, "tg_matmul_batched: inner dimensions differ: [2,3,4]^T x [2,5,4]");
    tg_tape_reset(tape);
    line = __LINE__ + 1;
    cr_expect_null(tg_bmm(tape, a, v));
    expect_msg(
        line,
        "tg_matmul_batched: needs tensors of rank >= 2 ([..,M,K] x [..,K,N]), got [2,3,4] x [4]");
    tg_tensor_free(a);
    tg_tensor_free(b);
    tg_tensor_free(c);
    tg_tensor_free(v);
}

Test(seq, shape_op_errors) {
    tg_tensor *x = tg_tensor_new(TG_F64, TG_SHAPE(2, 3, 4));
    tg_tensor *z = tg_tensor_new(TG_F64, TG_SHAPE(2, 5, 3));
    int line = __LINE__ + 1;
    cr_expect_null(tg_permute(tape, x, 3, ((int[]){0, 2, 0})));
    expect_msg(line, "tg_permute: axis 0 appears twice in the permutation of [2,3,4]");
    tg_tape_reset(tape);
    line = __LINE__ + 1;
    cr_expect_null(tg_permute(tape, x, 2, ((int[]){0, 1})));
    expect_msg(line, "tg_permute: 2 axes given for [2,3,4] of rank 3");
    tg_tape_reset(tape);
    line = __LINE__ + 1;
    cr_expect_null(tg_transpose_axes(tape, x, 0, 3));
    expect_msg(line, "tg_permute: axis 3 is out of range for [2,3,4]");
    tg_tape_reset(tape);
    tg_tensor *two[2] = {x, z};
    line = __LINE__ + 1;
    cr_expect_null(tg_concat(tape, two, 2, 1));
    expect_msg(line, "tg_concat: input 2 [2,5,3] does not fit input 1 [2,3,4] (only axis 1 may "
                     "differ)");
    tg_tape_reset(tape);
    line = __LINE__ + 1;
    cr_expect_null(tg_concat(tape, two, 0, 1));
    expect_msg(line, "tg_concat: takes 1 to 64 inputs, got 0");
    tg_tape_reset(tape);
    line = __LINE__ + 1;
    cr_expect_null(tg_stack(tape, two, 2, 0));
    expect_msg(line, "tg_stack: input 2 [2,5,3] differs from input 1 [2,3,4]; stacked inputs "
                     "share a shape");
    tg_tape_reset(tape);
    line = __LINE__ + 1;
    cr_expect_null(tg_stack(tape, two, 1, 4));
    expect_msg(line,
               "tg_stack: axis 4 is out of range for stacking tensors of shape [2,3,4] (0..3)");
    tg_tape_reset(tape);
    line = __LINE__ + 1;
    cr_expect_null(tg_slice(tape, x, 2, 1, 2, 3));
    expect_msg(line, "tg_slice: start 1, length 2, step 3 reach past axis 2 of [2,3,4] (size 4)");
    tg_tape_reset(tape);
    line = __LINE__ + 1;
    cr_expect_null(tg_slice(tape, x, 0, 0, 1, 0));
    expect_msg(line, "tg_slice: step 0 must be >= 1 and length 1 >= 0");
    tg_tensor_free(x);
    tg_tensor_free(z);
}

Test(seq, layer_norm_masks_errors) {
    tg_tensor *x = tg_tensor_new(TG_F32, TG_SHAPE(2, 3, 4));
    tg_tensor *w = tg_tensor_new(TG_F32, TG_SHAPE(3));
    tg_tensor *v = tg_tensor_new(TG_F32, TG_SHAPE(4));
    tg_tensor *m = tg_tensor_new(TG_I32, TG_SHAPE(3, 3));
    int line = __LINE__ + 1;
    cr_expect_null(tg_layer_norm(tape, x, w, NULL, 1, 1e-5));
    expect_msg(line, "tg_layer_norm: the weight is [3]; it must be the normalized shape [4]");
    tg_tape_reset(tape);
    line = __LINE__ + 1;
    cr_expect_null(tg_layer_norm(tape, x, NULL, w, 1, 1e-5));
    expect_msg(line, "tg_layer_norm: the bias is [3]; it must be the normalized shape [4]");
    tg_tape_reset(tape);
    line = __LINE__ + 1;
    cr_expect_null(tg_layer_norm(tape, x, NULL, NULL, 4, 1e-5));
    expect_msg(line, "tg_layer_norm: normalized_ndim 4 must be in 1..3 for [2,3,4]");
    tg_tape_reset(tape);
    line = __LINE__ + 1;
    cr_expect_null(tg_masked_fill(tape, x, m, 0.0));
    expect_msg(line, "tg_masked_fill: the mask [3,3] does not broadcast to x [2,3,4]");
    tg_tape_reset(tape);
    line = __LINE__ + 1;
    cr_expect_null(tg_softmax_causal(tape, v));
    expect_msg(line, "tg_softmax_causal: needs at least two axes [.., T, T] (rows i, columns j), "
                     "got [4]");
    tg_tensor_free(x);
    tg_tensor_free(w);
    tg_tensor_free(v);
    tg_tensor_free(m);
}

/* ---- Values ---- */

Test(seq, embedding_gathers_and_accumulates_repeats) {
    tg_tensor *table = tg_tensor_from(TG_F64, TG_SHAPE(3, 2), (double[]){1, 2, 3, 4, 5, 6});
    tg_tensor_set_requires_grad(table, 1);
    tg_tensor *idx = tg_tensor_from(TG_I32, TG_SHAPE(2, 2), (int32_t[]){2, 0, 2, 2});
    tg_tensor *y = tg_embedding(tape, table, idx);
    cr_assert_not_null(y);
    cr_expect_eq(tg_tensor_rank(y), 3);
    const double want[] = {5, 6, 1, 2, 5, 6, 5, 6};
    for (int i = 0; i < 8; i++)
        cr_expect_eq(tg_tensor_get(y, i), want[i]);
    cr_assert_eq(tg_backward(tape, tg_sum(tape, y)), TG_OK);
    const double g[] = {1, 1, 0, 0, 3, 3}; /* row 2 is used three times */
    for (int i = 0; i < 6; i++)
        cr_expect_eq(tg_tensor_get(tg_tensor_grad(table), i), g[i]);
    tg_tensor_free(table);
    tg_tensor_free(idx);
}

Test(seq, layer_norm_by_hand) {
    /* x = 1 2 3 4: mean 2.5, biased var 1.25; y = (x - 2.5) / sqrt(1.25 + eps) * w + b */
    tg_tensor *x = tg_tensor_from(TG_F64, TG_SHAPE(1, 4), (double[]){1, 2, 3, 4});
    tg_tensor *w = tg_tensor_from(TG_F64, TG_SHAPE(4), (double[]){1, 2, 1, 2});
    tg_tensor *b = tg_tensor_from(TG_F64, TG_SHAPE(4), (double[]){0, 0, 1, 1});
    tg_tensor *y = tg_layer_norm(tape, x, w, b, 1, 1e-5);
    cr_assert_not_null(y);
    const double r = 1 / sqrt(1.25 + 1e-5);
    const double want[] = {-1.5 * r, -0.5 * r * 2, 0.5 * r + 1, 1.5 * r * 2 + 1};
    for (int i = 0; i < 4; i++)
        cr_expect_float_eq(tg_tensor_get(y, i), want[i], 1e-15, "element %d", i);
    tg_tensor_free(x);
    tg_tensor_free(w);
    tg_tensor_free(b);
}

Test(seq, transpose_axes_is_permute) {
    tg_rng rng;
    tg_rng_seed(&rng, 3);
    tg_tensor *x = param(&rng, TG_SHAPE(2, 3, 4));
    tg_tensor *a = tg_transpose_axes(tape, x, 0, -1);
    tg_tensor *b = tg_permute(tape, x, 3, ((int[]){2, 1, 0}));
    cr_assert(a && b);
    cr_expect_eq(tg_tensor_dim(a, 0), 4);
    cr_expect_eq(tg_tensor_dim(a, 2), 2);
    for (int64_t i = 0; i < 24; i++)
        cr_expect_eq(tg_tensor_get(a, i), tg_tensor_get(b, i));
    /* element [i,j,k] of a is x[k,j,i] */
    cr_expect_eq(tg_tensor_get(a, (3 * 3 + 1) * 2 + 1), tg_tensor_get(x, (1 * 3 + 1) * 4 + 3));
    tg_tensor_free(x);
}

Test(seq, softmax_causal_is_exactly_masked) {
    tg_rng rng;
    tg_rng_seed(&rng, 5);
    tg_tensor *x = param(&rng, TG_SHAPE(2, 4, 4));
    double *px = tg_tensor_data(x);
    px[1] = NAN; /* above the diagonal: never read */
    px[16 + 3] = INFINITY;
    tg_tensor *y = tg_softmax_causal(tape, x);
    cr_assert_not_null(y);
    tg_rng_seed(&rng, 6);
    tg_tensor *wt = tg_tensor_randn(TG_F64, TG_SHAPE(2, 4, 4), 0, 1, &rng);
    cr_assert_eq(tg_backward(tape, tg_sum(tape, tg_mul(tape, y, wt))), TG_OK);
    const tg_tensor *g = tg_tensor_grad(x);
    for (int b = 0; b < 2; b++)
        for (int i = 0; i < 4; i++) {
            double s = 0;
            for (int j = 0; j < 4; j++) {
                const int64_t k = (b * 4 + i) * 4 + j;
                if (j > i) {
                    cr_expect_eq(tg_tensor_get(y, k), 0.0);
                    cr_expect_eq(tg_tensor_get(g, k), 0.0);
                } else
                    s += tg_tensor_get(y, k);
            }
            cr_expect_float_eq(s, 1.0, 1e-15);
        }
    cr_expect_eq(tg_tensor_get(y, 0), 1.0); /* row 0: one element survives */
    cr_expect_eq(tg_tensor_get(g, 0), 0.0); /* and a constant has no gradient */
    tg_tensor_free(x);
    tg_tensor_free(wt);
}

/* softmax_causal(x) equals softmax(masked_fill(x, j > i, -inf)) bit for bit. */
Test(seq, softmax_causal_equals_masked_fill_softmax) {
    tg_rng rng;
    tg_rng_seed(&rng, 8);
    tg_tensor *x = param(&rng, TG_SHAPE(3, 5, 5));
    int32_t mk[25];
    for (int i = 0; i < 5; i++)
        for (int j = 0; j < 5; j++)
            mk[i * 5 + j] = j > i;
    tg_tensor *mask = tg_tensor_from(TG_I32, TG_SHAPE(5, 5), mk);
    tg_tensor *a = tg_softmax_causal(tape, x);
    tg_tensor *filled = tg_masked_fill(tape, x, mask, -INFINITY);
    tg_tensor *b = tg_softmax(tape, filled);
    cr_assert(a && b);
    for (int64_t i = 0; i < 75; i++) {
        cr_expect_eq(tg_tensor_get(a, i), tg_tensor_get(b, i), "element %lld", (long long)i);
        if (mk[i % 25])
            cr_expect(isinf(tg_tensor_get(filled, i)) && tg_tensor_get(filled, i) < 0);
    }
    /* The filled positions get no gradient through masked_fill. */
    cr_assert_eq(tg_backward(tape, tg_sum(tape, tg_mul(tape, b, b))), TG_OK);
    for (int64_t i = 0; i < 75; i++)
        if (mk[i % 25])
            cr_expect_eq(tg_tensor_get(tg_tensor_grad(x), i), 0.0);
    tg_tensor_free(x);
    tg_tensor_free(mask);
}

Test(seq, masked_fill_float_mask) {
    tg_tensor *x = tg_tensor_from(TG_F32, TG_SHAPE(2, 3), (float[]){1, 2, 3, 4, 5, 6});
    tg_tensor_set_requires_grad(x, 1);
    tg_tensor *m = tg_tensor_from(TG_F32, TG_SHAPE(3), (float[]){0, 0.5f, 0});
    tg_tensor *y = tg_masked_fill(tape, x, m, -2.0);
    cr_assert_not_null(y);
    const double want[] = {1, -2, 3, 4, -2, 6};
    for (int i = 0; i < 6; i++)
        cr_expect_eq(tg_tensor_get(y, i), want[i]);
    cr_assert_eq(tg_backward(tape, tg_sum(tape, y)), TG_OK);
    const double g[] = {1, 0, 1, 1, 0, 1};
    for (int i = 0; i < 6; i++)
        cr_expect_eq(tg_tensor_get(tg_tensor_grad(x), i), g[i]);
    tg_tensor_free(x);
    tg_tensor_free(m);
}

Test(seq, concat_stack_slice_values) {
    tg_tensor *a = tg_tensor_from(TG_F64, TG_SHAPE(2, 1), (double[]){1, 2});
    tg_tensor *b = tg_tensor_from(TG_F64, TG_SHAPE(2, 2), (double[]){3, 4, 5, 6});
    tg_tensor *ab[2] = {a, b};
    tg_tensor *c = tg_concat(tape, ab, 2, -1);
    cr_assert_not_null(c);
    const double wc[] = {1, 3, 4, 2, 5, 6};
    for (int i = 0; i < 6; i++)
        cr_expect_eq(tg_tensor_get(c, i), wc[i]);
    tg_tensor *aa[2] = {a, a};
    tg_tensor *s = tg_stack(tape, aa, 2, 1); /* [2,2,1]: a[0] a[0] a[1] a[1] */
    cr_assert_not_null(s);
    const double ws[] = {1, 1, 2, 2};
    for (int i = 0; i < 4; i++)
        cr_expect_eq(tg_tensor_get(s, i), ws[i]);
    tg_tensor *sl = tg_slice(tape, c, 1, -3, 2, 2); /* columns 0 and 2 */
    cr_assert_not_null(sl);
    const double wl[] = {1, 4, 2, 6};
    for (int i = 0; i < 4; i++)
        cr_expect_eq(tg_tensor_get(sl, i), wl[i]);
    tg_tensor_free(a);
    tg_tensor_free(b);
}

/* ---- Threads ---- */

/* Forward and every gradient of y = bmm(a, b) with broadcast batches and an embedding with many
 * repeated indices, at 1 and 2 threads: the same bits. */
static void run_threads(int threads, double *out, size_t n_out) {
    tg_set_num_threads(threads);
    tg_rng rng;
    tg_rng_seed(&rng, 11);
    tg_tensor *a = param(&rng, TG_SHAPE(8, 1, 40, 48));
    tg_tensor *b = param(&rng, TG_SHAPE(4, 56, 48));
    tg_tensor *table = param(&rng, TG_SHAPE(5, 56));
    tg_tensor *idx = tg_tensor_new(TG_I32, TG_SHAPE(8, 4, 40));
    for (int64_t i = 0; i < tg_tensor_numel(idx); i++)
        tg_tensor_set(idx, i, (double)tg_rng_below(&rng, 5));
    tg_tape *t = tg_tape_new();
    tg_tensor *y = tg_matmul_batched(t, a, b, 0, 1); /* [8,4,40,56] */
    tg_tensor *e = tg_embedding(t, table, idx);      /* [8,4,40,56] */
    tg_tensor *l = tg_sum(t, tg_mul(t, tg_mul(t, y, e), y));
    cr_assert_eq(tg_backward(t, l), TG_OK, "%s", tg_tape_errmsg(t));
    size_t k = 0;
    const tg_tensor *parts[] = {y, tg_tensor_grad(a), tg_tensor_grad(b), tg_tensor_grad(table)};
    for (int p = 0; p < 4; p++)
        for (int64_t i = 0; i < tg_tensor_numel(parts[p]) && k < n_out; i++)
            out[k++] = tg_tensor_get(parts[p], i);
    cr_assert_eq(k, n_out);
    tg_tape_free(t);
    tg_tensor_free(a);
    tg_tensor_free(b);
    tg_tensor_free(table);
    tg_tensor_free(idx);
}

Test(seq, matmul_batched_and_embedding_same_bits_for_any_threads) {
    const size_t n = 8 * 4 * 40 * 56 + 8 * 40 * 48 + 4 * 56 * 48 + 5 * 56;
    double *one = malloc(n * sizeof *one), *two = malloc(n * sizeof *two);
    run_threads(1, one, n);
    run_threads(2, two, n);
    cr_expect_eq(memcmp(one, two, n * sizeof *one), 0);
    free(one);
    free(two);
}

/* A batched product equals the 2-D matmul of each batch, bit for bit (one GEMM each). */
Test(seq, matmul_batched_matches_matmul_per_batch) {
    tg_rng rng;
    tg_rng_seed(&rng, 12);
    tg_tensor *a = param(&rng, TG_SHAPE(3, 5, 7));
    tg_tensor *b = param(&rng, TG_SHAPE(7, 4));
    tg_tensor *y = tg_bmm(tape, a, b);
    cr_assert_not_null(y);
    for (int k = 0; k < 3; k++) {
        tg_tensor *ak = tg_reshape(tape, tg_slice(tape, a, 0, k, 1, 1), TG_SHAPE(5, 7));
        tg_tensor *yk = tg_matmul(tape, ak, b);
        cr_assert_not_null(yk);
        for (int64_t i = 0; i < 20; i++)
            cr_expect_eq(tg_tensor_get(yk, i), tg_tensor_get(y, k * 20 + i));
    }
    tg_tensor_free(a);
    tg_tensor_free(b);
}

/* ---- The float32 paths (vector exp/log/erf, float elementwise layer_norm) ---- */

enum { F32_ROWS = 37, F32_COLS = 29 }; /* odd sizes: every vector tail runs */

/* op k of the f32 checks applied to x [F32_ROWS, F32_COLS] (w, b [F32_COLS], tp [rows, cols]
 * probability targets, ti [rows] class indices), all of x's dtype */
static tg_tensor *f32_op(int k, tg_tensor *x, tg_tensor *w, tg_tensor *b, tg_tensor *tp,
                         tg_tensor *ti) {
    switch (k) {
    case 0: return tg_gelu(tape, x, 0);
    case 1: return tg_gelu(tape, x, 1);
    case 2: return tg_layer_norm(tape, x, w, b, 1, 1e-5);
    case 3: return tg_layer_norm(tape, x, NULL, NULL, 1, 1e-5);
    case 4: return tg_softmax(tape, x);
    case 5: return tg_softmax_causal(tape, tg_reshape(tape, x, TG_SHAPE(1, F32_ROWS, F32_COLS)));
    case 6: return tg_log_softmax(tape, x);
    case 7: return tg_softmax_cross_entropy(tape, x, tp);
    default: return tg_softmax_cross_entropy(tape, x, ti);
    }
}
static const char *const f32_names[9] = {"gelu erf",    "gelu tanh",   "layer_norm w b",
                                         "layer_norm",  "softmax",     "softmax_causal",
                                         "log_softmax", "sce (probs)", "sce (indices)"};

/* Runs op k in dtype dt on the given values (x offset by `shift`, as layer_norm's large means)
 * and returns y and dL/dx, L = sum(y * u) with fixed weights u, as doubles. */
static void f32_run(int k, tg_dtype dt, double shift, double *y_out, double *dx_out) {
    enum { N = F32_ROWS * F32_COLS };
    tg_rng rng;
    tg_rng_seed(&rng, 7);
    double xv[N], uv[N], wv[F32_COLS], bv[F32_COLS], tv[N];
    int32_t iv[F32_ROWS];
    for (int i = 0; i < N; i++) {
        xv[i] = shift + 2.5 * tg_rng_normal(&rng);
        uv[i] = tg_rng_normal(&rng);
        tv[i] = tg_rng_uniform(&rng) / F32_COLS;
    }
    for (int i = 0; i < F32_COLS; i++)
        wv[i] = 1 + 0.3 * tg_rng_normal(&rng), bv[i] = 0.1 * tg_rng_normal(&rng);
    for (int i = 0; i < F32_ROWS; i++)
        iv[i] = (int32_t)tg_rng_below(&rng, F32_COLS);
    /* both runs on the same values: those of float32 */
    for (int i = 0; i < N; i++)
        xv[i] = (float)xv[i], uv[i] = (float)uv[i], tv[i] = (float)tv[i];
    for (int i = 0; i < F32_COLS; i++)
        wv[i] = (float)wv[i], bv[i] = (float)bv[i];
    float xf[N], uf[N], wf[F32_COLS], bf[F32_COLS], tf[N];
    for (int i = 0; i < N; i++)
        xf[i] = (float)xv[i], uf[i] = (float)uv[i], tf[i] = (float)tv[i];
    for (int i = 0; i < F32_COLS; i++)
        wf[i] = (float)wv[i], bf[i] = (float)bv[i];
    const int f = dt == TG_F32;
    tg_tensor *x = tg_tensor_from(dt, TG_SHAPE(F32_ROWS, F32_COLS), f ? (void *)xf : (void *)xv);
    tg_tensor *u = tg_tensor_from(dt, TG_SHAPE(F32_ROWS, F32_COLS), f ? (void *)uf : (void *)uv);
    tg_tensor *w = tg_tensor_from(dt, TG_SHAPE(F32_COLS), f ? (void *)wf : (void *)wv);
    tg_tensor *b = tg_tensor_from(dt, TG_SHAPE(F32_COLS), f ? (void *)bf : (void *)bv);
    tg_tensor *tp = tg_tensor_from(dt, TG_SHAPE(F32_ROWS, F32_COLS), f ? (void *)tf : (void *)tv);
    tg_tensor *ti = tg_tensor_from(TG_I32, TG_SHAPE(F32_ROWS), iv);
    tg_tensor_set_requires_grad(x, 1);
    tg_tape_reset(tape);
    tg_tensor *y = f32_op(k, x, w, b, tp, ti);
    tg_tensor *L = tg_tensor_numel(y) == 1 ? tg_sum(tape, y) : tg_sum(tape, tg_mul(tape, y, u));
    cr_assert_eq(tg_backward(tape, L), TG_OK, "%s: %s", f32_names[k], tg_tape_errmsg(tape));
    const int64_t ny = tg_tensor_numel(y);
    for (int64_t i = 0; i < N; i++) {
        if (i < ny)
            y_out[i] = f ? (double)((const float *)tg_tensor_data(y))[i]
                         : ((const double *)tg_tensor_data(y))[i];
        const tg_tensor *g = tg_tensor_grad(x);
        dx_out[i] = f ? (double)((const float *)tg_tensor_data((tg_tensor *)g))[i]
                      : ((const double *)tg_tensor_data((tg_tensor *)g))[i];
    }
    for (int64_t i = ny; i < N; i++)
        y_out[i] = 0;
    tg_tensor_free(x), tg_tensor_free(u), tg_tensor_free(w), tg_tensor_free(b);
    tg_tensor_free(tp), tg_tensor_free(ti);
}

static double max_abs(const double *v, int n) {
    double m = 0;
    for (int i = 0; i < n; i++)
        m = fabs(v[i]) > m ? fabs(v[i]) : m;
    return m;
}

/* Each op's float32 result and gradient against its float64 one on the same (float32) values:
 * within 1e-6 of the largest magnitude (some ulp). layer_norm also on rows of mean 1000 and spread 2.5,
 * where a float variance or x - (float)mu would lose digits. */
Test(seq, float32_paths_agree_with_float64) {
    enum { N = F32_ROWS * F32_COLS };
    static double y32[N], y64[N], d32[N], d64[N];
    for (int k = 0; k < 9; k++)
        for (int s = 0; s < (k == 2 || k == 3 ? 2 : 1); s++) {
            const double shift = s ? 1000.0 : 0.0;
            f32_run(k, TG_F32, shift, y32, d32);
            f32_run(k, TG_F64, shift, y64, d64);
            const double tol_y = 1e-6 * max_abs(y64, N);
            const double tol_d = 1e-6 * max_abs(d64, N) + 1e-12;
            double ey = 0, ed = 0;
            for (int i = 0; i < N; i++) {
                ey = fmax(ey, fabs(y32[i] - y64[i]));
                ed = fmax(ed, fabs(d32[i] - d64[i]));
            }
            cr_expect_leq(ey, tol_y, "%s (shift %g): y differs by %g", f32_names[k], shift, ey);
            cr_expect_leq(ed, tol_d, "%s (shift %g): dx differs by %g", f32_names[k], shift, ed);
        }
}

/* The float32 elementwise and row ops above the threading threshold give the same bits at 1
 * and 2 threads (the vector math's tails and the split must not show). */
Test(seq, float32_paths_same_bits_for_any_threads) {
    enum { R = 16 * 64 + 3, C = 65 };
    tg_rng rng;
    tg_rng_seed(&rng, 11);
    tg_tensor *x = tg_tensor_randn(TG_F32, TG_SHAPE(R, C), 0, 3, &rng);
    tg_tensor_set_requires_grad(x, 1);
    for (int k = 0; k < 4; k++) {
        float *out[2], *grad[2];
        for (int th = 1; th <= 2; th++) {
            tg_set_num_threads(th);
            tg_tape_reset(tape);
            tg_tensor_zero_grad(x);
            tg_tensor *y = k == 0   ? tg_gelu(tape, x, 0)
                           : k == 1 ? tg_gelu(tape, x, 1)
                           : k == 2
                               ? tg_softmax(tape, x)
                               : tg_softmax_causal(tape, tg_reshape(tape, x, TG_SHAPE(R, 1, C)));
            tg_tensor *L = tg_sum(tape, tg_mul(tape, y, y));
            cr_assert_eq(tg_backward(tape, L), TG_OK, "%s", tg_tape_errmsg(tape));
            out[th - 1] = malloc(sizeof(float) * R * C);
            grad[th - 1] = malloc(sizeof(float) * R * C);
            memcpy(out[th - 1], tg_tensor_data(y), sizeof(float) * R * C);
            memcpy(grad[th - 1], tg_tensor_data(tg_tensor_grad(x)), sizeof(float) * R * C);
        }
        cr_expect_eq(memcmp(out[0], out[1], sizeof(float) * R * C), 0, "op %d: y", k);
        cr_expect_eq(memcmp(grad[0], grad[1], sizeof(float) * R * C), 0, "op %d: dx", k);
        free(out[0]), free(out[1]), free(grad[0]), free(grad[1]);
    }
    tg_tensor_free(x);
}

/* reshape and flatten of a node share its data (TG__OP_VIEW); of a leaf they copy, so a leaf
 * changed after recording leaves the recorded value alone. Values and gradients are the same
 * either way. */
Test(seq, reshape_of_a_node_is_a_view_of_a_leaf_a_copy) {
    tg_tensor *a = tg_tensor_from(TG_F64, TG_SHAPE(2, 3), (double[]){1, 2, 3, 4, 5, 6});
    tg_tensor_set_requires_grad(a, 1);
    tg_tensor *e = tg_exp(tape, a);
    tg_tensor *r = tg_reshape(tape, e, TG_SHAPE(3, 2));
    tg_tensor *f = tg_flatten(tape, r, 0, 1);
    cr_assert_not_null(f);
    cr_expect_eq(tg_tensor_cdata(r), tg_tensor_cdata(e));
    cr_expect_eq(tg_tensor_cdata(f), tg_tensor_cdata(e));
    tg_tensor *c = tg_reshape(tape, a, TG_SHAPE(6)); /* a leaf: copied */
    cr_expect_neq(tg_tensor_cdata(c), tg_tensor_cdata(a));
    ((double *)tg_tensor_data(a))[0] = 100;
    cr_expect_eq(((const double *)tg_tensor_cdata(c))[0], 1.0);
    /* L = sum(f * c) with the recorded values: dL/da = f + e c = exp(a0) + exp(a0) a0, a0 = 1 */
    tg_tensor *l = tg_sum(tape, tg_mul(tape, f, c));
    cr_assert_eq(tg_backward(tape, l), TG_OK);
    const double *g = tg_tensor_cdata(tg_tensor_grad(a));
    for (int i = 0; i < 6; i++) {
        const double ai = i + 1, want = exp(ai) + exp(ai) * ai;
        cr_expect(fabs(g[i] - want) <= 1e-12 * want, "grad[%d] = %.17g, want %.17g", i, g[i], want);
    }
    tg_tensor_free(a);
}
