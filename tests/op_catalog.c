/* op_catalog.c -- see op_catalog.h. One entry per op: a BUILD line (how to call it), its cases
 * (which inputs), a row of cat_entries. */
#include "op_catalog.h"

#include <math.h>
#include <string.h>

/* ---- Inputs ---- */

#define IN(kind, lo, hi, rank, ...)                                                                \
    { rank, {__VA_ARGS__}, kind, lo, hi }
#define R(lo, hi, rank, ...) IN(CAT_REAL, lo, hi, rank, __VA_ARGS__)
#define R0(lo, hi) IN(CAT_REAL, lo, hi, 0, 0)
#define N_CASES(a) (int)(sizeof(a) / sizeof((a)[0]))

void cat_make_inputs(const cat_case *c, tg_rng *rng, tg_tensor **in) {
    for (int i = 0; i < c->n_inputs; i++) {
        const cat_input *s = &c->in[i];
        if (s->kind == CAT_INDEX) {
            in[i] = tg_tensor_new(TG_I32, s->rank, s->shape);
            for (int64_t k = 0; k < tg_tensor_numel(in[i]); k++)
                tg_tensor_set(in[i], k, (double)tg_rng_below(rng, (uint64_t)s->hi));
            continue;
        }
        in[i] = tg_tensor_new(TG_F64, s->rank, s->shape);
        double *v = tg_tensor_data(in[i]);
        const int64_t n = tg_tensor_numel(in[i]);
        for (int64_t k = 0; k < n; k++) {
            const double u = s->lo + (s->hi - s->lo) * tg_rng_uniform(rng);
            v[k] = s->kind == CAT_AWAY0 && tg_rng_uniform(rng) < 0.5 ? -u : u;
        }
        if (s->kind == CAT_PROB_ROWS && s->rank > 0) {
            const int64_t C = s->shape[s->rank - 1];
            for (int64_t r = 0; C > 0 && r < n / C; r++) {
                double sum = 0;
                for (int64_t k = 0; k < C; k++)
                    sum += v[r * C + k];
                for (int64_t k = 0; k < C; k++)
                    v[r * C + k] /= sum;
            }
        }
        tg_tensor_set_requires_grad(in[i], s->kind != CAT_CONST);
    }
}

/* ---- Case families ---- */

/* Broadcast pairs, both orders: equal shapes, a row vector, a column, both broadcast, rank 0,
 * rank 4, rank 6 (beyond the old limit), size 1. B is the second input's kind and range. */
#define BCAST_PAIR(B, blo, bhi, ra, sa, rb, sb)                                                    \
    {"a " #sa " b " #sb, 2, {R(-1, 1, ra, ESC sa), IN(B, blo, bhi, rb, ESC sb)}, {0}, {0}}, {      \
        "a " #sb " b " #sa, 2, {R(-1, 1, rb, ESC sb), IN(B, blo, bhi, ra, ESC sa)}, {0}, { 0 }     \
    }
#define ESC(...) __VA_ARGS__
#define BCAST_CASES(B, blo, bhi)                                                                   \
    {                                                                                              \
        BCAST_PAIR(B, blo, bhi, 2, (3, 4), 2, (3, 4)), BCAST_PAIR(B, blo, bhi, 2, (3, 4), 1, (4)), \
            BCAST_PAIR(B, blo, bhi, 2, (3, 4), 2, (3, 1)),                                         \
            BCAST_PAIR(B, blo, bhi, 2, (1, 4), 2, (3, 1)),                                         \
            BCAST_PAIR(B, blo, bhi, 3, (2, 3, 4), 2, (3, 1)),                                      \
            BCAST_PAIR(B, blo, bhi, 0, (0), 2, (2, 3)), BCAST_PAIR(B, blo, bhi, 1, (1), 1, (1)),   \
            BCAST_PAIR(B, blo, bhi, 4, (2, 1, 3, 1), 3, (4, 1, 5)),                                \
            BCAST_PAIR(B, blo, bhi, 6, (2, 1, 2, 1, 3, 1), 3, (2, 1, 2))                           \
    }

/* One input, several shapes: a vector, a matrix, size 1, rank 0, rank 4, rank 8. */
#define UNARY_CASES(K, lo, hi)                                                                     \
    {                                                                                              \
        {"[5]", 1, {IN(K, lo, hi, 1, 5)}, {0}, {0}},                                               \
            {"[3,4]", 1, {IN(K, lo, hi, 2, 3, 4)}, {0}, {0}},                                      \
            {"[1]", 1, {IN(K, lo, hi, 1, 1)}, {0}, {0}},                                           \
            {"[]", 1, {IN(K, lo, hi, 0, 0)}, {0}, {0}},                                            \
            {"[2,3,1,2]", 1, {IN(K, lo, hi, 4, 2, 3, 1, 2)}, {0}, {0}}, {                          \
            "[1,2,1,2,1,2,1,2]", 1, {IN(K, lo, hi, 8, 1, 2, 1, 2, 1, 2, 1, 2)}, {0}, { 0 }         \
        }                                                                                          \
    }

/* Along the last axis: rows of several shapes. */
#define ROWS_CASES(lo, hi)                                                                         \
    {                                                                                              \
        {"[3,4]", 1, {R(lo, hi, 2, 3, 4)}, {0}, {0}}, {"[5]", 1, {R(lo, hi, 1, 5)}, {0}, {0}},     \
            {"[2,3,4]", 1, {R(lo, hi, 3, 2, 3, 4)}, {0}, {0}},                                     \
            {"[4,1]", 1, {R(lo, hi, 2, 4, 1)}, {0}, {0}}, {                                        \
            "[1,2]", 1, {R(lo, hi, 2, 1, 2)}, {0}, { 0 }                                           \
        }                                                                                          \
    }

static const cat_case bcast_cases[] = BCAST_CASES(CAT_REAL, -1, 1);
static const cat_case bcast_cases_nonzero_b[] = BCAST_CASES(CAT_AWAY0, 0.5, 2);
static const cat_case unary_cases[] = UNARY_CASES(CAT_REAL, -2, 2);
static const cat_case exp_cases[] = UNARY_CASES(CAT_REAL, -3, 3);
static const cat_case log_cases[] = UNARY_CASES(CAT_REAL, 0.2, 5);
static const cat_case tanh_cases[] = UNARY_CASES(CAT_REAL, -3, 3);
static const cat_case sigmoid_cases[] = UNARY_CASES(CAT_REAL, -6, 6);
static const cat_case away0_cases[] = UNARY_CASES(CAT_AWAY0, 0.1, 2);
static const cat_case rows_cases[] = ROWS_CASES(-3, 3);

static const cat_case matmul_cases[] = {
    {"[3,4] x [4,5]", 2, {R(-1, 1, 2, 3, 4), R(-1, 1, 2, 4, 5)}, {0}, {0}},
    {"[1,4] x [4,1]", 2, {R(-1, 1, 2, 1, 4), R(-1, 1, 2, 4, 1)}, {0}, {0}},
    {"[2,1] x [1,3]", 2, {R(-1, 1, 2, 2, 1), R(-1, 1, 2, 1, 3)}, {0}, {0}},
    {"[4,2] x [2,4]", 2, {R(-1, 1, 2, 4, 2), R(-1, 1, 2, 2, 4)}, {0}, {0}},
};
static const cat_case matmul_bt_cases[] = {
    {"[3,4] x [5,4]^T", 2, {R(-1, 1, 2, 3, 4), R(-1, 1, 2, 5, 4)}, {0}, {0}},
    {"[1,4] x [1,4]^T", 2, {R(-1, 1, 2, 1, 4), R(-1, 1, 2, 1, 4)}, {0}, {0}},
    {"[2,1] x [3,1]^T", 2, {R(-1, 1, 2, 2, 1), R(-1, 1, 2, 3, 1)}, {0}, {0}},
    {"[4,2] x [4,2]^T", 2, {R(-1, 1, 2, 4, 2), R(-1, 1, 2, 4, 2)}, {0}, {0}},
};
static const cat_case transpose_cases[] = {
    {"[3,4]", 1, {R(-1, 1, 2, 3, 4)}, {0}, {0}},
    {"[1,5]", 1, {R(-1, 1, 2, 1, 5)}, {0}, {0}},
    {"[4,1]", 1, {R(-1, 1, 2, 4, 1)}, {0}, {0}},
};
/* iarg: rank, then the shape */
static const cat_case reshape_cases[] = {
    {"[2,6] -> [3,4]", 1, {R(-1, 1, 2, 2, 6)}, {2, 3, 4}, {0}},
    {"[2,6] -> [3,-1,2]", 1, {R(-1, 1, 2, 2, 6)}, {3, 3, -1, 2}, {0}},
    {"[2,6] -> [12]", 1, {R(-1, 1, 2, 2, 6)}, {1, 12}, {0}},
    {"[2,3,4] -> [1,2,1,3,1,4]", 1, {R(-1, 1, 3, 2, 3, 4)}, {6, 1, 2, 1, 3, 1, 4}, {0}},
};
/* iarg: axis, keepdims */
static const cat_case axis_cases[] = {
    {"[2,3,4] axis -1", 1, {R(-1, 1, 3, 2, 3, 4)}, {-1, 0}, {0}},
    {"[2,3,4] axis 0 keepdims", 1, {R(-1, 1, 3, 2, 3, 4)}, {0, 1}, {0}},
    {"[2,3,4] axis 1", 1, {R(-1, 1, 3, 2, 3, 4)}, {1, 0}, {0}},
    {"[2,3,4] axis 2 keepdims", 1, {R(-1, 1, 3, 2, 3, 4)}, {2, 1}, {0}},
    {"[5] axis 0", 1, {R(-1, 1, 1, 5)}, {0, 0}, {0}},
    {"[5] axis -1 keepdims", 1, {R(-1, 1, 1, 5)}, {-1, 1}, {0}},
    {"[3,1] axis 1", 1, {R(-1, 1, 2, 3, 1)}, {1, 0}, {0}},
    {"[3,1] axis 0 keepdims", 1, {R(-1, 1, 2, 3, 1)}, {0, 1}, {0}},
    {"[2,1,2,3] axis 1", 1, {R(-1, 1, 4, 2, 1, 2, 3)}, {1, 0}, {0}},
    {"[2,1,2,3] axis -2 keepdims", 1, {R(-1, 1, 4, 2, 1, 2, 3)}, {-2, 1}, {0}},
};
static const cat_case sce_cases[] = {
    {"indices [4,3]", 2, {R(-3, 3, 2, 4, 3), IN(CAT_INDEX, 0, 3, 1, 4)}, {0}, {0}},
    {"indices [1,2]", 2, {R(-3, 3, 2, 1, 2), IN(CAT_INDEX, 0, 2, 1, 1)}, {0}, {0}},
    {"indices [6,5]", 2, {R(-3, 3, 2, 6, 5), IN(CAT_INDEX, 0, 5, 1, 6)}, {0}, {0}},
    {"indices [3,1]", 2, {R(-3, 3, 2, 3, 1), IN(CAT_INDEX, 0, 1, 1, 3)}, {0}, {0}},
    /* probability targets that also need a gradient (soft labels that are learned) */
    {"probabilities [4,3]", 2, {R(-3, 3, 2, 4, 3), IN(CAT_PROB_ROWS, 0.05, 1, 2, 4, 3)}, {0}, {0}},
};
static const cat_case mse_cases[] = {
    {"[3,4]", 2, {R(-1, 1, 2, 3, 4), R(-1, 1, 2, 3, 4)}, {0}, {0}},
    {"[1]", 2, {R(-1, 1, 1, 1), R(-1, 1, 1, 1)}, {0}, {0}},
    {"[]", 2, {R0(-1, 1), R0(-1, 1)}, {0}, {0}},
    {"[2,2,2]", 2, {R(-1, 1, 3, 2, 2, 2), R(-1, 1, 3, 2, 2, 2)}, {0}, {0}},
};

/* ---- Sequence models (issue 15) ---- */
static const cat_case embedding_cases[] = {
    {"table [5,3] idx [4]", 2, {R(-1, 1, 2, 5, 3), IN(CAT_INDEX, 0, 5, 1, 4)}, {0}, {0}},
    /* three rows, six lookups: repeated indices add up */
    {"table [3,2] idx [2,3]", 2, {R(-1, 1, 2, 3, 2), IN(CAT_INDEX, 0, 3, 2, 2, 3)}, {0}, {0}},
    {"table [4,2] idx []", 2, {R(-1, 1, 2, 4, 2), IN(CAT_INDEX, 0, 4, 0, 0)}, {0}, {0}},
    {"table [1,1] idx [1]", 2, {R(-1, 1, 2, 1, 1), IN(CAT_INDEX, 0, 1, 1, 1)}, {0}, {0}},
    {"table [2,4] idx [2,1,3]", 2, {R(-1, 1, 2, 2, 4), IN(CAT_INDEX, 0, 2, 3, 2, 1, 3)}, {0}, {0}},
};
/* iarg: trans_a, trans_b */
static const cat_case matmul_batched_cases[] = {
    {"[2,3,4] x [4,5]", 2, {R(-1, 1, 3, 2, 3, 4), R(-1, 1, 2, 4, 5)}, {0, 0}, {0}},
    {"[1,3,4] x [2,4,2]", 2, {R(-1, 1, 3, 1, 3, 4), R(-1, 1, 3, 2, 4, 2)}, {0, 0}, {0}},
    {"[2,2,3,4] x [2,2,4,3]", 2, {R(-1, 1, 4, 2, 2, 3, 4), R(-1, 1, 4, 2, 2, 4, 3)}, {0, 0}, {0}},
    {"[2,1,3,2] x [3,2,4]", 2, {R(-1, 1, 4, 2, 1, 3, 2), R(-1, 1, 3, 3, 2, 4)}, {0, 0}, {0}},
    {"[2,3,4] x [2,5,4]^T", 2, {R(-1, 1, 3, 2, 3, 4), R(-1, 1, 3, 2, 5, 4)}, {0, 1}, {0}},
    {"[2,4,3]^T x [4,2]", 2, {R(-1, 1, 3, 2, 4, 3), R(-1, 1, 2, 4, 2)}, {1, 0}, {0}},
    {"[2,4,3]^T x [1,5,4]^T", 2, {R(-1, 1, 3, 2, 4, 3), R(-1, 1, 3, 1, 5, 4)}, {1, 1}, {0}},
    {"[3,4] x [4,1]", 2, {R(-1, 1, 2, 3, 4), R(-1, 1, 2, 4, 1)}, {0, 0}, {0}},
    {"[1,1,1] x [1,1]", 2, {R(-1, 1, 3, 1, 1, 1), R(-1, 1, 2, 1, 1)}, {0, 0}, {0}},
};
/* iarg: the axes (as many as the input's rank) */
static const cat_case permute_cases[] = {
    {"[2,3,4] (2,0,1)", 1, {R(-1, 1, 3, 2, 3, 4)}, {2, 0, 1}, {0}},
    {"[2,3,4,5] (0,2,1,3)", 1, {R(-1, 1, 4, 2, 3, 4, 5)}, {0, 2, 1, 3}, {0}},
    {"[3,1,2] (-1,0,1)", 1, {R(-1, 1, 3, 3, 1, 2)}, {-1, 0, 1}, {0}},
    {"[5] (0)", 1, {R(-1, 1, 1, 5)}, {0}, {0}},
    {"[1,2,1,2,1,2,1,2] reversed",
     1,
     {R(-1, 1, 8, 1, 2, 1, 2, 1, 2, 1, 2)},
     {7, 6, 5, 4, 3, 2, 1, 0},
     {0}},
};
/* iarg: axis; the inputs are the case's */
static const cat_case concat_cases[] = {
    {"[2,3] [2,1] [2,2] axis 1",
     3,
     {R(-1, 1, 2, 2, 3), R(-1, 1, 2, 2, 1), R(-1, 1, 2, 2, 2)},
     {1},
     {0}},
    {"[1,3] [2,3] axis 0", 2, {R(-1, 1, 2, 1, 3), R(-1, 1, 2, 2, 3)}, {0}, {0}},
    {"[4] alone", 1, {R(-1, 1, 1, 4)}, {0}, {0}},
    {"4 x [2,k,2] axis -2",
     4,
     {R(-1, 1, 3, 2, 1, 2), R(-1, 1, 3, 2, 2, 2), R(-1, 1, 3, 2, 1, 2), R(-1, 1, 3, 2, 3, 2)},
     {-2},
     {0}},
    {"[2,2,1] [2,2,3] axis 2", 2, {R(-1, 1, 3, 2, 2, 1), R(-1, 1, 3, 2, 2, 3)}, {2}, {0}},
};
static const cat_case stack_cases[] = {
    {"3 x [2,3] axis 0", 3, {R(-1, 1, 2, 2, 3), R(-1, 1, 2, 2, 3), R(-1, 1, 2, 2, 3)}, {0}, {0}},
    {"2 x [2,3] axis 2", 2, {R(-1, 1, 2, 2, 3), R(-1, 1, 2, 2, 3)}, {2}, {0}},
    {"2 x [3,1] axis -2", 2, {R(-1, 1, 2, 3, 1), R(-1, 1, 2, 3, 1)}, {-2}, {0}},
    {"4 x [] axis 0", 4, {R0(-1, 1), R0(-1, 1), R0(-1, 1), R0(-1, 1)}, {0}, {0}},
    {"[2,2] alone axis 1", 1, {R(-1, 1, 2, 2, 2)}, {1}, {0}},
};
/* iarg: axis, start, length, step */
static const cat_case slice_cases[] = {
    {"[5,4] axis 0 1:+2:2", 1, {R(-1, 1, 2, 5, 4)}, {0, 1, 2, 2}, {0}},
    {"[3,6] axis -1 -4:+2:3", 1, {R(-1, 1, 2, 3, 6)}, {-1, -4, 2, 3}, {0}},
    {"[2,3,4] axis 1 0:+3:1", 1, {R(-1, 1, 3, 2, 3, 4)}, {1, 0, 3, 1}, {0}},
    {"[4] axis 0 3:+1:5", 1, {R(-1, 1, 1, 4)}, {0, 3, 1, 5}, {0}},
    {"[2,1,5] axis 2 0:+3:2", 1, {R(-1, 1, 3, 2, 1, 5)}, {2, 0, 3, 2}, {0}},
};
/* iarg: normalized_ndim, has weight, has bias; darg: eps. Inputs: x, then weight, then bias. */
static const cat_case layer_norm_cases[] = {
    {"[3,4] k 1 w b", 3, {R(-1, 1, 2, 3, 4), R(0.5, 1.5, 1, 4), R(-1, 1, 1, 4)}, {1, 1, 1}, {1e-5}},
    {"[2,3,4] k 2 w b",
     3,
     {R(-1, 1, 3, 2, 3, 4), R(0.5, 1.5, 2, 3, 4), R(-1, 1, 2, 3, 4)},
     {2, 1, 1},
     {1e-5}},
    {"[4,5] k 1 no w no b", 1, {R(-2, 2, 2, 4, 5)}, {1, 0, 0}, {1e-5}},
    {"[2,5] k 1 w only", 2, {R(-1, 1, 2, 2, 5), R(0.5, 1.5, 1, 5)}, {1, 1, 0}, {1e-3}},
    {"[3,2] k 1 b only", 2, {R(-1, 1, 2, 3, 2), R(-1, 1, 1, 2)}, {1, 0, 1}, {0.1}},
    {"[3,1] k 1 w b (one element)",
     3,
     {R(-1, 1, 2, 3, 1), R(0.5, 1.5, 1, 1), R(-1, 1, 1, 1)},
     {1, 1, 1},
     {1e-5}},
    {"[2,3] k 2 (the whole tensor)", 1, {R(-1, 1, 2, 2, 3)}, {2, 0, 0}, {1e-5}},
};
static const cat_case softmax_causal_cases[] = {
    {"[3,3]", 1, {R(-3, 3, 2, 3, 3)}, {0}, {0}},
    {"[2,4,4]", 1, {R(-3, 3, 3, 2, 4, 4)}, {0}, {0}},
    {"[1,1]", 1, {R(-3, 3, 2, 1, 1)}, {0}, {0}},
    {"[2,3,5] (T < S)", 1, {R(-3, 3, 3, 2, 3, 5)}, {0}, {0}},
    {"[4,2] (T > S)", 1, {R(-3, 3, 2, 4, 2)}, {0}, {0}},
    {"[2,1,3,3]", 1, {R(-3, 3, 4, 2, 1, 3, 3)}, {0}, {0}},
};
/* darg: value. The mask: i32 0/1. */
static const cat_case masked_fill_cases[] = {
    {"[3,4] mask [3,4]", 2, {R(-1, 1, 2, 3, 4), IN(CAT_INDEX, 0, 2, 2, 3, 4)}, {0}, {-3.5}},
    {"[2,3,4] mask [3,1]", 2, {R(-1, 1, 3, 2, 3, 4), IN(CAT_INDEX, 0, 2, 2, 3, 1)}, {0}, {0.0}},
    {"[3,3] mask []", 2, {R(-1, 1, 2, 3, 3), IN(CAT_INDEX, 0, 2, 0, 0)}, {0}, {2.0}},
    {"[1,5] mask [5]", 2, {R(-1, 1, 2, 1, 5), IN(CAT_INDEX, 0, 2, 1, 5)}, {0}, {-7.0}},
};
/* ---- end of sequence models ---- */

/* ---- The custom op used by the tests: y = x^2 with a correct backward ---- */

tg_status test_square_forward(tg_tensor *out, tg_tensor *const *in, int n, void *user) {
    (void)n;
    (void)user;
    const double *x = tg_tensor_cdata(in[0]);
    double *y = tg_tensor_data(out);
    for (int64_t i = 0; i < tg_tensor_numel(out); i++)
        y[i] = x[i] * x[i];
    return TG_OK;
}

/* dx += 2 x dy */
static void square_backward(const tg_tensor *out, const tg_tensor *dout, tg_tensor *const *in,
                            tg_tensor *const *din, int n, void *user) {
    (void)out;
    (void)n;
    (void)user;
    if (!din[0])
        return;
    const double *x = tg_tensor_cdata(in[0]), *dy = tg_tensor_cdata(dout);
    double *dx = tg_tensor_data(din[0]);
    for (int64_t i = 0; i < tg_tensor_numel(in[0]); i++)
        dx[i] += 2 * x[i] * dy[i];
}

static const tg_custom_op square_op = {"square", test_square_forward, square_backward};

/* ---- How to call each op ---- */

#define BUILD(name, expr)                                                                          \
    static tg_tensor *build_##name(tg_tape *t, tg_tensor *const *in, const cat_case *c) {          \
        (void)c;                                                                                   \
        return expr;                                                                               \
    }

BUILD(add, tg_add(t, in[0], in[1]))
BUILD(sub, tg_sub(t, in[0], in[1]))
BUILD(mul, tg_mul(t, in[0], in[1]))
BUILD(div, tg_div(t, in[0], in[1]))
BUILD(neg, tg_neg(t, in[0]))
BUILD(scale, tg_scale(t, in[0], -2.5))
BUILD(add_scalar, tg_add_scalar(t, in[0], 0.75))
BUILD(matmul, tg_matmul(t, in[0], in[1]))
BUILD(matmul_bt, tg_matmul_bt(t, in[0], in[1]))
BUILD(transpose, tg_transpose(t, in[0]))
BUILD(reshape, tg_reshape(t, in[0], c->iarg[0],
                          (const int64_t[]){c->iarg[1], c->iarg[2], c->iarg[3], c->iarg[4],
                                            c->iarg[5], c->iarg[6], c->iarg[7]}))
BUILD(sum, tg_sum(t, in[0]))
BUILD(mean, tg_mean(t, in[0]))
BUILD(sum_axis, tg_sum_axis(t, in[0], c->iarg[0], c->iarg[1]))
BUILD(mean_axis, tg_mean_axis(t, in[0], c->iarg[0], c->iarg[1]))
BUILD(exp, tg_exp(t, in[0]))
BUILD(log, tg_log(t, in[0]))
BUILD(tanh, tg_tanh(t, in[0]))
BUILD(sigmoid, tg_sigmoid(t, in[0]))
BUILD(relu, tg_relu(t, in[0]))
BUILD(abs, tg_abs(t, in[0]))
BUILD(softmax, tg_softmax(t, in[0]))
BUILD(log_softmax, tg_log_softmax(t, in[0]))
BUILD(softmax_cross_entropy, tg_softmax_cross_entropy(t, in[0], in[1]))
BUILD(mse, tg_mse(t, in[0], in[1]))
/* ---- seqops (issues 14, 15): activations, powers, extrema, axis reductions ---------------- */

/* One input, the shapes of UNARY_CASES, with the builder's arguments: iarg[0] = i0, darg = d0, d1 */
#define SEQ_SHAPES(K, lo, hi, i0, d0, d1)                                                          \
    {"[5]", 1, {IN(K, lo, hi, 1, 5)}, {i0}, {d0, d1}},                                             \
        {"[3,4]", 1, {IN(K, lo, hi, 2, 3, 4)}, {i0}, {d0, d1}},                                    \
        {"[1]", 1, {IN(K, lo, hi, 1, 1)}, {i0}, {d0, d1}},                                         \
        {"[]", 1, {IN(K, lo, hi, 0, 0)}, {i0}, {d0, d1}},                                          \
        {"[2,3,1,2]", 1, {IN(K, lo, hi, 4, 2, 3, 1, 2)}, {i0}, {d0, d1}}, {                        \
        "[1,2,1,2,1,2,1,2]", 1, {IN(K, lo, hi, 8, 1, 2, 1, 2, 1, 2, 1, 2)}, {i0}, { d0, d1 }       \
    }
/* Broadcast pairs with fixed ranges per role (a positive base for pow), both orders of shapes. */
#define SEQ_PAIR(alo, ahi, blo, bhi, ra, sa, rb, sb)                                               \
    {"a " #sa " b " #sb, 2, {R(alo, ahi, ra, ESC sa), R(blo, bhi, rb, ESC sb)}, {0}, {0}}, {       \
        "a " #sb " b " #sa, 2, {R(alo, ahi, rb, ESC sb), R(blo, bhi, ra, ESC sa)}, {0}, { 0 }      \
    }

/* leaky_relu, elu: away from the kink at 0 (tested by value in test_seqops) */
static const cat_case seq_leaky_relu_cases[] = {
    SEQ_SHAPES(CAT_AWAY0, 0.1, 2, 0, 0.2, 0),
    {"[3,4] slope 0.01", 1, {IN(CAT_AWAY0, 0.1, 2, 2, 3, 4)}, {0}, {0.01}},
    {"[3,4] slope -0.5", 1, {IN(CAT_AWAY0, 0.1, 2, 2, 3, 4)}, {0}, {-0.5}},
};
static const cat_case seq_elu_cases[] = {
    SEQ_SHAPES(CAT_AWAY0, 0.1, 3, 0, 1.5, 0),
    {"[3,4] alpha 1", 1, {IN(CAT_AWAY0, 0.1, 3, 2, 3, 4)}, {0}, {1}},
    {"[3,4] alpha 0.3", 1, {IN(CAT_AWAY0, 0.1, 3, 2, 3, 4)}, {0}, {0.3}},
};
/* iarg[0]: approximate (0 erf, 1 tanh) */
static const cat_case seq_gelu_cases[] = {SEQ_SHAPES(CAT_REAL, -3, 3, 0, 0, 0),
                                          SEQ_SHAPES(CAT_REAL, -3, 3, 1, 0, 0)};
static const cat_case seq_silu_cases[] = {SEQ_SHAPES(CAT_REAL, -4, 4, 0, 0, 0)};
/* darg: beta, threshold; the ranges reach past the threshold (the linear part) */
static const cat_case seq_softplus_cases[] = {
    SEQ_SHAPES(CAT_REAL, -30, 30, 0, 1, 20),
    {"[3,4] beta 2 threshold 5", 1, {R(-5, 5, 2, 3, 4)}, {0}, {2, 5}},
    {"[2,5] beta 0.5 threshold 3", 1, {R(-12, 12, 2, 2, 5)}, {0}, {0.5, 3}},
};
static const cat_case seq_sqrt_cases[] = {SEQ_SHAPES(CAT_REAL, 0.2, 4, 0, 0, 0)};
/* darg[0]: p; negative bases only for integer p */
static const cat_case seq_pow_scalar_cases[] = {
    {"[3,4] p 2", 1, {R(-2, 2, 2, 3, 4)}, {0}, {2}},
    {"[5] p 3", 1, {R(-2, 2, 1, 5)}, {0}, {3}},
    {"[] p 0.5", 1, {R0(0.2, 3)}, {0}, {0.5}},
    {"[1] p -1.5", 1, {R(0.2, 3, 1, 1)}, {0}, {-1.5}},
    {"[2,3,1,2] p 2.7", 1, {R(0.2, 3, 4, 2, 3, 1, 2)}, {0}, {2.7}},
    {"[1,2,1,2,1,2,1,2] p -2", 1, {IN(CAT_AWAY0, 0.3, 2, 8, 1, 2, 1, 2, 1, 2, 1, 2)}, {0}, {-2}},
    {"[2,2] p -1", 1, {IN(CAT_AWAY0, 0.3, 2, 2, 2, 2)}, {0}, {-1}},
    {"[2,2] p -0.5", 1, {R(0.2, 3, 2, 2, 2)}, {0}, {-0.5}},
    {"[2,2] p 1", 1, {R(-2, 2, 2, 2, 2)}, {0}, {1}},
    {"[2,2] p 0", 1, {R(-2, 2, 2, 2, 2)}, {0}, {0}},
};
/* a^b: a in [0.3, 2) (log a), b in [-2, 2) */
static const cat_case seq_pow_cases[] = {
    SEQ_PAIR(0.3, 2, -2, 2, 2, (3, 4), 2, (3, 4)),
    SEQ_PAIR(0.3, 2, -2, 2, 2, (3, 4), 1, (4)),
    SEQ_PAIR(0.3, 2, -2, 2, 2, (1, 4), 2, (3, 1)),
    SEQ_PAIR(0.3, 2, -2, 2, 0, (0), 2, (2, 3)),
    SEQ_PAIR(0.3, 2, -2, 2, 1, (1), 1, (1)),
    SEQ_PAIR(0.3, 2, -2, 2, 4, (2, 1, 3, 1), 3, (4, 1, 5)),
    SEQ_PAIR(0.3, 2, -2, 2, 6, (2, 1, 2, 1, 3, 1), 3, (2, 1, 2)),
};
/* darg: min, max (random inputs land on a bound with probability 0; bounds by value) */
static const cat_case seq_clamp_cases[] = {
    SEQ_SHAPES(CAT_REAL, -2, 2, 0, -0.5, 0.7),
    {"[3,4] no min", 1, {R(-2, 2, 2, 3, 4)}, {0}, {-INFINITY, 0.3}},
    {"[3,4] no max", 1, {R(-2, 2, 2, 3, 4)}, {0}, {-0.2, INFINITY}},
    {"[3,4] min > max", 1, {R(-2, 2, 2, 3, 4)}, {0}, {0.5, -0.5}},
};
/* iarg: start_dim, end_dim */
static const cat_case seq_flatten_cases[] = {
    {"[2,3,4] 0..-1", 1, {R(-1, 1, 3, 2, 3, 4)}, {0, -1}, {0}},
    {"[2,3,4] 1..2", 1, {R(-1, 1, 3, 2, 3, 4)}, {1, 2}, {0}},
    {"[2,3,4] 0..1", 1, {R(-1, 1, 3, 2, 3, 4)}, {0, 1}, {0}},
    {"[2,3,4] -2..-1", 1, {R(-1, 1, 3, 2, 3, 4)}, {-2, -1}, {0}},
    {"[2,3,4] 1..1", 1, {R(-1, 1, 3, 2, 3, 4)}, {1, 1}, {0}},
    {"[] 0..-1", 1, {R0(-1, 1)}, {0, -1}, {0}},
    {"[5] 0..0", 1, {R(-1, 1, 1, 5)}, {0, 0}, {0}},
    {"[3,1,4] 1..2", 1, {R(-1, 1, 3, 3, 1, 4)}, {1, 2}, {0}},
    {"[1,2,1,2,1,2,1,2] 2..5", 1, {R(-1, 1, 8, 1, 2, 1, 2, 1, 2, 1, 2)}, {2, 5}, {0}},
};
/* iarg: axis, keepdims (the shapes of axis_cases, plus rank 0 and rank 6) */
#define SEQ_AXIS_CASES(lo, hi)                                                                     \
    {"[2,3,4] axis -1", 1, {R(lo, hi, 3, 2, 3, 4)}, {-1, 0}, {0}},                                 \
        {"[2,3,4] axis 0 keepdims", 1, {R(lo, hi, 3, 2, 3, 4)}, {0, 1}, {0}},                      \
        {"[2,3,4] axis 1", 1, {R(lo, hi, 3, 2, 3, 4)}, {1, 0}, {0}},                               \
        {"[2,3,4] axis 2 keepdims", 1, {R(lo, hi, 3, 2, 3, 4)}, {2, 1}, {0}},                      \
        {"[5] axis 0", 1, {R(lo, hi, 1, 5)}, {0, 0}, {0}},                                         \
        {"[5] axis -1 keepdims", 1, {R(lo, hi, 1, 5)}, {-1, 1}, {0}},                              \
        {"[3,1] axis 1", 1, {R(lo, hi, 2, 3, 1)}, {1, 0}, {0}},                                    \
        {"[3,1] axis 0 keepdims", 1, {R(lo, hi, 2, 3, 1)}, {0, 1}, {0}},                           \
        {"[2,1,2,3] axis -2 keepdims", 1, {R(lo, hi, 4, 2, 1, 2, 3)}, {-2, 1}, {0}},               \
        {"[] axis 0", 1, {R0(lo, hi)}, {0, 0}, {0}},                                               \
        {"[] axis -1 keepdims", 1, {R0(lo, hi)}, {-1, 1}, {0}}, {                                  \
        "[2,1,2,1,3,2] axis 4", 1, {R(lo, hi, 6, 2, 1, 2, 1, 3, 2)}, {4, 0}, { 0 }                 \
    }
/* max/min/argmax: random values, so no ties (ties by value in test_seqops) */
static const cat_case seq_axis_cases[] = {SEQ_AXIS_CASES(-1, 1)};
/* (stability for large x, where float64 finite differences lose digits: by value in test_seqops) */
static const cat_case seq_logsumexp_cases[] = {SEQ_AXIS_CASES(-3, 3)};
/* iarg: axis, keepdims; darg[0]: correction. n = 1 only with correction 0 (else NaN by design) */
static const cat_case seq_var_cases[] = {
    {"[2,3,4] axis -1 c 1", 1, {R(-1, 1, 3, 2, 3, 4)}, {-1, 0}, {1}},
    {"[2,3,4] axis 0 keepdims c 0", 1, {R(-1, 1, 3, 2, 3, 4)}, {0, 1}, {0}},
    {"[2,3,4] axis 1 c 1", 1, {R(-1, 1, 3, 2, 3, 4)}, {1, 0}, {1}},
    {"[2,3,4] axis 2 keepdims c 2", 1, {R(-1, 1, 3, 2, 3, 4)}, {2, 1}, {2}},
    {"[5] axis 0 c 0", 1, {R(-1, 1, 1, 5)}, {0, 0}, {0}},
    {"[5] axis -1 keepdims c 1", 1, {R(-1, 1, 1, 5)}, {-1, 1}, {1}},
    {"[3,1] axis 1 c 0", 1, {R(-1, 1, 2, 3, 1)}, {1, 0}, {0}},
    {"[3,1] axis 0 keepdims c 1", 1, {R(-1, 1, 2, 3, 1)}, {0, 1}, {1}},
    {"[2,1,2,3] axis -2 keepdims c 0.5", 1, {R(-1, 1, 4, 2, 1, 2, 3)}, {-2, 1}, {0.5}},
    {"[] axis 0 c 0", 1, {R0(-1, 1)}, {0, 0}, {0}},
    {"[2,1,2,1,3,2] axis 4 c 1", 1, {R(-1, 1, 6, 2, 1, 2, 1, 3, 2)}, {4, 0}, {1}},
};

BUILD(leaky_relu, tg_leaky_relu(t, in[0], c->darg[0]))
BUILD(gelu, tg_gelu(t, in[0], c->iarg[0]))
BUILD(silu, tg_silu(t, in[0]))
BUILD(softplus, tg_softplus(t, in[0], c->darg[0], c->darg[1]))
BUILD(elu, tg_elu(t, in[0], c->darg[0]))
BUILD(sqrt, tg_sqrt(t, in[0]))
BUILD(pow_scalar, tg_pow_scalar(t, in[0], c->darg[0]))
BUILD(pow, tg_pow(t, in[0], in[1]))
BUILD(clamp, tg_clamp(t, in[0], c->darg[0], c->darg[1]))
BUILD(maximum, tg_maximum(t, in[0], in[1]))
BUILD(minimum, tg_minimum(t, in[0], in[1]))
BUILD(flatten, tg_flatten(t, in[0], c->iarg[0], c->iarg[1]))
BUILD(max_axis, tg_max_axis(t, in[0], c->iarg[0], c->iarg[1]))
BUILD(min_axis, tg_min_axis(t, in[0], c->iarg[0], c->iarg[1]))
BUILD(logsumexp, tg_logsumexp(t, in[0], c->iarg[0], c->iarg[1]))
BUILD(var, tg_var(t, in[0], c->iarg[0], c->darg[0], c->iarg[1]))
BUILD(std, tg_std(t, in[0], c->iarg[0], c->darg[0], c->iarg[1]))
BUILD(argmax, tg_argmax(t, in[0], c->iarg[0], c->iarg[1]))

/* An op whose output is an integer (TG_I32): no gradient to check; test_table requires such an
 * entry's output to be an integer, test_seqops checks its values by hand. */
#define ENTRY_NO_GRAD(name, cases)                                                                 \
    { #name, build_##name, cases, N_CASES(cases), false, true }
/* ---- end of seqops ---- */

/* ---- Sequence models (issue 15) ---- */
BUILD(embedding, tg_embedding(t, in[0], in[1]))
BUILD(matmul_batched, tg_matmul_batched(t, in[0], in[1], c->iarg[0], c->iarg[1]))
BUILD(permute, tg_permute(t, in[0], tg_tensor_rank(in[0]), c->iarg))
BUILD(concat, tg_concat(t, in, c->n_inputs, c->iarg[0]))
BUILD(stack, tg_stack(t, in, c->n_inputs, c->iarg[0]))
BUILD(slice, tg_slice(t, in[0], c->iarg[0], c->iarg[1], c->iarg[2], c->iarg[3]))
BUILD(layer_norm, tg_layer_norm(t, in[0], c->iarg[1] ? in[1] : NULL,
                                c->iarg[2] ? in[1 + c->iarg[1]] : NULL, c->iarg[0], c->darg[0]))
BUILD(softmax_causal, tg_softmax_causal(t, in[0]))
BUILD(masked_fill, tg_masked_fill(t, in[0], in[1], c->darg[0]))
/* ---- end of sequence models ---- */

/* ---- cnnops (issue 14): conv2d, max_pool2d, avg_pool2d, batch_norm, dropout ---------------- */

/* conv2d. iarg: stride h, w; padding h, w; dilation h, w; groups (0: the defaults). A third input
 * is the bias. Odd sizes, strides that do not divide the input, dilation, groups, depthwise, 1x1,
 * a kernel as large as the image, size-1 dims, N = 1, and N = 9 (more images than backward's 8
 * partial sums of dw and db). */
static const cat_case cnn_conv2d_cases[] = {
    {"x [2,3,5,5] w [4,3,3,3] b",
     3,
     {R(-1, 1, 4, 2, 3, 5, 5), R(-1, 1, 4, 4, 3, 3, 3), R(-1, 1, 1, 4)},
     {0},
     {0}},
    {"x [2,2,7,6] w [3,2,3,2] b stride 2,3 pad 1,0",
     3,
     {R(-1, 1, 4, 2, 2, 7, 6), R(-1, 1, 4, 3, 2, 3, 2), R(-1, 1, 1, 3)},
     {2, 3, 1, 0},
     {0}},
    {"x [1,2,7,7] w [2,2,3,3] dilation 2,1 pad 2,1",
     2,
     {R(-1, 1, 4, 1, 2, 7, 7), R(-1, 1, 4, 2, 2, 3, 3)},
     {1, 1, 2, 1, 2, 1},
     {0}},
    {"x [2,4,5,4] w [6,2,3,3] groups 2 pad 1",
     2,
     {R(-1, 1, 4, 2, 4, 5, 4), R(-1, 1, 4, 6, 2, 3, 3)},
     {1, 1, 1, 1, 1, 1, 2},
     {0}},
    {"x [2,3,5,5] w [3,1,3,3] b depthwise pad 1 stride 2",
     3,
     {R(-1, 1, 4, 2, 3, 5, 5), R(-1, 1, 4, 3, 1, 3, 3), R(-1, 1, 1, 3)},
     {2, 2, 1, 1, 1, 1, 3},
     {0}},
    {"x [1,1,1,1] w [1,1,1,1] b",
     3,
     {R(-1, 1, 4, 1, 1, 1, 1), R(-1, 1, 4, 1, 1, 1, 1), R(-1, 1, 1, 1)},
     {0},
     {0}},
    {"x [3,4,2,3] w [5,4,1,1] (1x1)",
     2,
     {R(-1, 1, 4, 3, 4, 2, 3), R(-1, 1, 4, 5, 4, 1, 1)},
     {0},
     {0}},
    {"x [2,2,3,3] w [2,2,3,3] b (1x1 output)",
     3,
     {R(-1, 1, 4, 2, 2, 3, 3), R(-1, 1, 4, 2, 2, 3, 3), R(-1, 1, 1, 2)},
     {0},
     {0}},
    {"x [1,3,4,9] w [2,3,1,4] stride 1,2 dilation 1,2",
     2,
     {R(-1, 1, 4, 1, 3, 4, 9), R(-1, 1, 4, 2, 3, 1, 4)},
     {1, 2, 0, 0, 1, 2},
     {0}},
    {"x [9,2,4,4] w [3,2,2,2] b stride 2",
     3,
     {R(-1, 1, 4, 9, 2, 4, 4), R(-1, 1, 4, 3, 2, 2, 2), R(-1, 1, 1, 3)},
     {2, 2},
     {0}},
};
/* pooling. iarg: kernel h, w; stride h, w (0: the kernel); padding h, w; count_include_pad.
 * Random values: no ties within a window (ties are tested by value in test_cnn). */
#define CNN_POOL_CASES(cip)                                                                        \
    {"[2,3,4,4] k 2", 1, {R(-1, 1, 4, 2, 3, 4, 4)}, {2, 2, 0, 0, 0, 0, cip}, {0}},                 \
        {"[1,2,5,7] k 3,2 stride 2,3 pad 1,1",                                                     \
         1,                                                                                        \
         {R(-1, 1, 4, 1, 2, 5, 7)},                                                                \
         {3, 2, 2, 3, 1, 1, cip},                                                                  \
         {0}},                                                                                     \
        {"[2,1,5,5] k 3 stride 1 pad 1",                                                           \
         1,                                                                                        \
         {R(-1, 1, 4, 2, 1, 5, 5)},                                                                \
         {3, 3, 1, 1, 1, 1, cip},                                                                  \
         {0}},                                                                                     \
        {"[1,1,1,1] k 1", 1, {R(-1, 1, 4, 1, 1, 1, 1)}, {1, 1, 0, 0, 0, 0, cip}, {0}},             \
        {"[3,2,6,5] k 2,3 stride 1,2",                                                             \
         1,                                                                                        \
         {R(-1, 1, 4, 3, 2, 6, 5)},                                                                \
         {2, 3, 1, 2, 0, 0, cip},                                                                  \
         {0}},                                                                                     \
    {                                                                                              \
        "[1,2,7,1] k 3,1 stride 2,1 pad 1,0", 1, {R(-1, 1, 4, 1, 2, 7, 1)},                        \
            {3, 1, 2, 1, 1, 0, cip}, {                                                             \
            0                                                                                      \
        }                                                                                          \
    }
static const cat_case cnn_max_pool2d_cases[] = {CNN_POOL_CASES(0)};
static const cat_case cnn_avg_pool2d_cases[] = {CNN_POOL_CASES(0), CNN_POOL_CASES(1)};
/* batch_norm. iarg[0]: bit 0 weight, bit 1 bias given (as in[1], in[2] in that order); iarg[1]: 1
 * for evaluation mode, with running_mean and running_var the last two inputs (data, no
 * gradient; the variance positive). darg[0]: eps. In training mode the running statistics are
 * NULL, so each call is the same function (no statistic is updated between finite differences);
 * the update is tested by value in test_cnn. */
static const cat_case cnn_batch_norm_cases[] = {
    {"[4,3] weight bias", 3, {R(-1, 1, 2, 4, 3), R(0.5, 2, 1, 3), R(-1, 1, 1, 3)}, {3}, {1e-5}},
    {"[2,3,3,2] weight bias",
     3,
     {R(-1, 1, 4, 2, 3, 3, 2), R(0.5, 2, 1, 3), R(-1, 1, 1, 3)},
     {3},
     {1e-5}},
    {"[1,2,2,2] weight bias (N = 1)",
     3,
     {R(-1, 1, 4, 1, 2, 2, 2), R(0.5, 2, 1, 2), R(-1, 1, 1, 2)},
     {3},
     {1e-5}},
    {"[3,1,2,3] weight bias (C = 1)",
     3,
     {R(-1, 1, 4, 3, 1, 2, 3), R(0.5, 2, 1, 1), R(-1, 1, 1, 1)},
     {3},
     {1e-3}},
    {"[5,4] no affine", 1, {R(-1, 1, 2, 5, 4)}, {0}, {1e-5}},
    {"[2,2,2,2] weight only", 2, {R(-1, 1, 4, 2, 2, 2, 2), R(0.5, 2, 1, 2)}, {1}, {1e-5}},
    {"[3,2,1,1] bias only", 2, {R(-1, 1, 4, 3, 2, 1, 1), R(-1, 1, 1, 2)}, {2}, {0.1}},
    {"[2,1] (M = 2)", 1, {R(-1, 1, 2, 2, 1)}, {0}, {1e-5}},
    {"eval [4,3] weight bias",
     5,
     {R(-1, 1, 2, 4, 3), R(0.5, 2, 1, 3), R(-1, 1, 1, 3), IN(CAT_CONST, -1, 1, 1, 3),
      IN(CAT_CONST, 0.5, 2, 1, 3)},
     {3, 1},
     {1e-5}},
    {"eval [1,2,1,3] no affine (N = 1)",
     3,
     {R(-1, 1, 4, 1, 2, 1, 3), IN(CAT_CONST, -1, 1, 1, 2), IN(CAT_CONST, 0.5, 2, 1, 2)},
     {0, 1},
     {1e-5}},
};
/* batch_norm_relu_max_pool2d. iarg[0], iarg[1], darg[0] as batch_norm's; iarg[2..7]: the pool's
 * kernel, stride and padding (height, width each). */
static const cat_case cnn_bn_relu_pool_cases[] = {
    {"[2,3,4,4] weight bias, 2x2 pool",
     3,
     {R(-1, 1, 4, 2, 3, 4, 4), R(0.5, 2, 1, 3), R(-1, 1, 1, 3)},
     {3, 0, 2, 2, 2, 2, 0, 0},
     {1e-5}},
    {"[1,2,5,5] weight bias, 3x3 stride 2 padding 1 (overlapping windows, N = 1)",
     3,
     {R(-1, 1, 4, 1, 2, 5, 5), R(0.5, 2, 1, 2), R(-1, 1, 1, 2)},
     {3, 0, 3, 3, 2, 2, 1, 1},
     {1e-5}},
    {"[3,1,3,4] no affine, 2x3 stride [1,2] padding 1 (C = 1)",
     1,
     {R(-1, 1, 4, 3, 1, 3, 4)},
     {0, 0, 2, 3, 1, 2, 1, 1},
     {1e-5}},
    {"[2,2,3,3] weight only, 2x2 (the last row and column in no window)",
     2,
     {R(-1, 1, 4, 2, 2, 3, 3), R(0.5, 2, 1, 2)},
     {1, 0, 2, 2, 2, 2, 0, 0},
     {1e-5}},
    {"[4,2,1,2] bias only, 1x2 window",
     2,
     {R(-1, 1, 4, 4, 2, 1, 2), R(-1, 1, 1, 2)},
     {2, 0, 1, 2, 1, 1, 0, 0},
     {1e-3}},
    {"eval [2,3,4,4] weight bias, 2x2 pool",
     5,
     {R(-1, 1, 4, 2, 3, 4, 4), R(0.5, 2, 1, 3), R(-1, 1, 1, 3), IN(CAT_CONST, -1, 1, 1, 3),
      IN(CAT_CONST, 0.5, 2, 1, 3)},
     {3, 1, 2, 2, 2, 2, 0, 0},
     {1e-5}},
};
/* dropout. darg[0]: p. */
static const cat_case cnn_dropout_cases[] = {
    SEQ_SHAPES(CAT_REAL, -2, 2, 0, 0.5, 0),
    {"[3,4] p 0", 1, {R(-2, 2, 2, 3, 4)}, {0}, {0}},
    {"[4,5] p 0.9", 1, {R(-2, 2, 2, 4, 5)}, {0}, {0.9}},
    {"[2,3,4] p 0.2", 1, {R(-2, 2, 3, 2, 3, 4)}, {0}, {0.2}},
};

static tg_tensor *build_conv2d(tg_tape *t, tg_tensor *const *in, const cat_case *c) {
    const tg_conv2d_opts o = {
        {c->iarg[0], c->iarg[1]}, {c->iarg[2], c->iarg[3]}, {c->iarg[4], c->iarg[5]}, c->iarg[6]};
    return tg_conv2d(t, in[0], in[1], c->n_inputs > 2 ? in[2] : NULL, &o);
}
static tg_tensor *build_max_pool2d(tg_tape *t, tg_tensor *const *in, const cat_case *c) {
    const tg_pool2d_opts o = {
        {c->iarg[0], c->iarg[1]}, {c->iarg[2], c->iarg[3]}, {c->iarg[4], c->iarg[5]}, c->iarg[6]};
    return tg_max_pool2d(t, in[0], &o);
}
static tg_tensor *build_avg_pool2d(tg_tape *t, tg_tensor *const *in, const cat_case *c) {
    const tg_pool2d_opts o = {
        {c->iarg[0], c->iarg[1]}, {c->iarg[2], c->iarg[3]}, {c->iarg[4], c->iarg[5]}, c->iarg[6]};
    return tg_avg_pool2d(t, in[0], &o);
}
/* batch_norm, batch_norm_relu (relu != 0) and batch_norm_relu_max_pool2d (pool) on one case */
static tg_tensor *bn_op(tg_tape *t, tg_tensor *x, tg_tensor *w, tg_tensor *b, tg_tensor *rm,
                        tg_tensor *rv, double eps, int relu, const tg_pool2d_opts *pool) {
    if (pool)
        return tg_batch_norm_relu_max_pool2d(t, x, w, b, rm, rv, 0.1, eps, pool);
    return relu ? tg_batch_norm_relu(t, x, w, b, rm, rv, 0.1, eps)
                : tg_batch_norm(t, x, w, b, rm, rv, 0.1, eps);
}
static tg_tensor *build_bn_case(tg_tape *t, tg_tensor *const *in, const cat_case *c, int relu,
                                const tg_pool2d_opts *pool) {
    int k = 1;
    tg_tensor *w = c->iarg[0] & 1 ? in[k++] : NULL;
    tg_tensor *b = c->iarg[0] & 2 ? in[k++] : NULL;
    if (!c->iarg[1]) /* training: no running statistics, so nothing changes between calls */
        return bn_op(t, in[0], w, b, NULL, NULL, c->darg[0], relu, pool);
    const int was = tg_tape_training(t);
    tg_tape_set_training(t, 0);
    tg_tensor *y = bn_op(t, in[0], w, b, in[k], in[k + 1], c->darg[0], relu, pool);
    tg_tape_set_training(t, was);
    return y;
}
static tg_tensor *build_batch_norm(tg_tape *t, tg_tensor *const *in, const cat_case *c) {
    return build_bn_case(t, in, c, 0, NULL);
}
/* batch_norm_relu: batch_norm's cases through the fused op (bit-identity with the pair is tested
 * in test_cnn). Finite differences cannot judge a value of batch norm's output at relu's kink; no
 * case's output comes within the step of 0 (they would fail if one did). */
static tg_tensor *build_batch_norm_relu(tg_tape *t, tg_tensor *const *in, const cat_case *c) {
    return build_bn_case(t, in, c, 1, NULL);
}
/* batch_norm_relu_max_pool2d: finite differences cannot judge relu's kink or a tie in a window;
 * no case comes within the step of either (they would fail if one did). */
static tg_tensor *build_batch_norm_relu_max_pool2d(tg_tape *t, tg_tensor *const *in,
                                                   const cat_case *c) {
    const tg_pool2d_opts o = {
        {c->iarg[2], c->iarg[3]}, {c->iarg[4], c->iarg[5]}, {c->iarg[6], c->iarg[7]}, 0};
    return build_bn_case(t, in, c, 1, &o);
}
/* The harness calls the function many times (forward for each finite difference, backward once)
 * and compares them: each call must be the same function, so each draws the same mask from an rng
 * reseeded here. (A model reseeds nothing: each step draws a new mask from the caller's rng.) */
static tg_tensor *build_dropout(tg_tape *t, tg_tensor *const *in, const cat_case *c) {
    static tg_rng rng;
    tg_rng_seed(&rng, 20240614);
    return tg_dropout(t, in[0], c->darg[0], &rng);
}
/* ---- end of cnnops ---- */

BUILD(custom, tg_custom(t, &square_op, NULL, in, 1, tg_tensor_rank(in[0]), tg_tensor_shape(in[0])))

#define ENTRY(name, cases)                                                                         \
    { #name, build_##name, cases, N_CASES(cases), false, false }
#define ENTRY_KINK(name, cases)                                                                    \
    { #name, build_##name, cases, N_CASES(cases), true, false }

const cat_entry cat_entries[] = {
    ENTRY(add, bcast_cases),
    ENTRY(sub, bcast_cases),
    ENTRY(mul, bcast_cases),
    ENTRY(div, bcast_cases_nonzero_b),
    ENTRY(neg, unary_cases),
    ENTRY(scale, unary_cases),
    ENTRY(add_scalar, unary_cases),
    ENTRY(matmul, matmul_cases),
    ENTRY(matmul_bt, matmul_bt_cases),
    ENTRY(transpose, transpose_cases),
    ENTRY(reshape, reshape_cases),
    ENTRY(sum, unary_cases),
    ENTRY(mean, unary_cases),
    ENTRY(sum_axis, axis_cases),
    ENTRY(mean_axis, axis_cases),
    ENTRY(exp, exp_cases),
    ENTRY(log, log_cases),
    ENTRY(tanh, tanh_cases),
    ENTRY(sigmoid, sigmoid_cases),
    ENTRY_KINK(relu, away0_cases), /* the kink itself is tested by value in test_ops_grad */
    ENTRY_KINK(abs, away0_cases),
    ENTRY(softmax, rows_cases),
    ENTRY(log_softmax, rows_cases),
    ENTRY(softmax_cross_entropy, sce_cases),
    ENTRY(mse, mse_cases),
    /* ---- seqops (issues 14, 15) ---- */
    ENTRY_KINK(leaky_relu, seq_leaky_relu_cases),
    ENTRY(gelu, seq_gelu_cases),
    ENTRY(silu, seq_silu_cases),
    ENTRY(softplus, seq_softplus_cases),
    ENTRY_KINK(elu, seq_elu_cases),
    ENTRY(sqrt, seq_sqrt_cases),
    ENTRY(pow_scalar, seq_pow_scalar_cases),
    ENTRY(pow, seq_pow_cases),
    ENTRY_KINK(clamp, seq_clamp_cases),
    ENTRY_KINK(maximum, bcast_cases),
    ENTRY_KINK(minimum, bcast_cases),
    ENTRY(flatten, seq_flatten_cases),
    ENTRY_KINK(max_axis, seq_axis_cases),
    ENTRY_KINK(min_axis, seq_axis_cases),
    ENTRY(logsumexp, seq_logsumexp_cases),
    ENTRY(var, seq_var_cases),
    ENTRY(std, seq_var_cases),
    ENTRY_NO_GRAD(argmax, seq_axis_cases),
    /* ---- end of seqops ---- */
    /* ---- Sequence models (issue 15) ---- */
    ENTRY(embedding, embedding_cases),
    ENTRY(matmul_batched, matmul_batched_cases),
    ENTRY(permute, permute_cases),
    ENTRY(concat, concat_cases),
    ENTRY(stack, stack_cases),
    ENTRY(slice, slice_cases),
    ENTRY(layer_norm, layer_norm_cases),
    ENTRY(softmax_causal, softmax_causal_cases),
    ENTRY(masked_fill, masked_fill_cases),
    /* ---- end of sequence models ---- */

    /* ---- cnnops (issue 14) ---- */
    ENTRY(conv2d, cnn_conv2d_cases),
    ENTRY_KINK(max_pool2d, cnn_max_pool2d_cases),
    ENTRY(avg_pool2d, cnn_avg_pool2d_cases),
    ENTRY(batch_norm, cnn_batch_norm_cases),
    ENTRY_KINK(batch_norm_relu, cnn_batch_norm_cases),
    ENTRY_KINK(batch_norm_relu_max_pool2d, cnn_bn_relu_pool_cases),
    ENTRY(dropout, cnn_dropout_cases),
    /* ---- end of cnnops ---- */
    ENTRY(custom, unary_cases),
};
const int cat_n_entries = N_CASES(cat_entries);

const cat_entry *cat_find(const char *name) {
    for (int i = 0; i < cat_n_entries; i++)
        if (strcmp(cat_entries[i].op, name) == 0)
            return &cat_entries[i];
    return NULL;
}
