/* libFuzzer harness for the builder API (issue 12). The input is a small program run by an
 * interpreter: leaves made from bytes (any dtype, rank 0..8 with sizes 0..4, values including
 * NaN, infinities and huge numbers, some requiring a gradient), then builder calls whose operands
 * come from a pool of live tensors -- or are NULL, stale (from before a reset), from a second
 * tape, or a gradient -- with scalars, axes and shapes from the bytes, valid and invalid. At the
 * end of each of two rounds: a backward pass (tg_backward or tg_backward_seed), tg_gradcheck of
 * one recorded call on fresh small leaves, the listing, the trace and the DOT graph into memory
 * streams, then a reset and the same tape again.
 *
 * Invariants (abort on violation): a builder returning NULL leaves a message (the tape's, or
 * tg_last_errmsg for a NULL tape); after an error every builder call on that tape returns NULL and
 * the first message stays; a call the documentation says is valid succeeds (unless anomaly mode
 * or the fuzzer's observer stopped it), an invalid one fails; an output has the documented
 * dtype, rank and shape; a backward pass leaves gradients of their tensors' shapes and the seed in
 * the output's; gradcheck of a smooth call at finite values finds no mismatch. ASan and UBSan
 * report the rest (a crash, a leak, undefined behaviour).
 *
 * Encoding (tests/fuzz/make_api_corpus.py writes seeds in it): byte 0 sets modes (anomaly, trace,
 * evaluation mode, the observer's stop); then one action per byte (see run_round), each followed
 * by its arguments; 0xFF ends a round. A read past the end gives 0, so any input is a program.
 *
 * Stale tensors: a reset frees arena blocks when the tape grew past its first block; a pointer
 * from before such a reset points to freed memory, which no library can detect. The harness keeps
 * stale tensors only across resets that free nothing (tg_tape_bytes unchanged since the last
 * reset), where the library promises to reject them. */
#include "tapegrad.h"

#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum {
    POOL_MAX = 16,   /* live tensors an operand can name */
    LEAVES_MAX = 40, /* leaves made per input (all freed at the end) */
    STALE_MAX = 32,  /* tensors from before a reset */
    OTHER_MAX = 8,   /* nodes of the second tape */
    OPS_MAX = 40,    /* actions per round: fewer than the 64 nodes the warmed tape's list holds */
    NUMEL_MAX = 48,  /* elements of a leaf or a custom op's output */
    GC_NUMEL = 6,    /* elements per gradcheck input */
    GC_TOTAL = 12,   /* elements over all gradcheck inputs */
    POOL_NUMEL = 512 /* elements of a node that later calls may take as an operand */
};

#define REQUIRE(cond)                                                                              \
    do {                                                                                           \
        if (!(cond))                                                                               \
            violated(#cond, __LINE__);                                                             \
    } while (0)

/* FUZZ_API_VERBOSE=1 in the environment: each action is described on stderr (to turn a finding
 * into a regression test). The checks once held back for two tape.c fixes (stale tensors past the
 * part of the arena used since the reset; a seed that is a gradient the pass zeroes) are on: both
 * are fixed and have tests in tests/test_fuzz_regressions.c. FUZZ_API_LENIENT=1 turns them off. */
static bool verbose, pending = true;

/* Where an operand came from. */
enum { SRC_LEAF, SRC_NODE, SRC_STALE, SRC_OTHER, SRC_NODE_GRAD, SRC_NULL };

static void describe(const char *what, const tg_tensor *x, int src) {
    if (!verbose)
        return;
    fprintf(stderr, "  %s: %p src %d dtype %d [", what, (const void *)x, src,
            x && src != SRC_STALE ? (int)tg_tensor_dtype(x) : -1);
    for (int i = 0; x && src != SRC_STALE && i < tg_tensor_rank(x); i++)
        fprintf(stderr, "%s%lld", i ? "," : "", (long long)tg_tensor_shape(x)[i]);
    fprintf(stderr, "]%s\n",
            x && src != SRC_STALE && tg_tensor_requires_grad(x) ? " requires grad" : "");
}

static void violated(const char *what, int line) {
    fprintf(stderr, "fuzz_api.c:%d: invariant violated: %s\n", line, what);
    abort();
}

/* ---- Reading the program ---- */

typedef struct reader {
    const uint8_t *p;
    size_t n, i;
} reader;

static unsigned u8(reader *r) { return r->i < r->n ? r->p[r->i++] : 0; }
static bool at_end(const reader *r) { return r->i >= r->n; }

static const double special[] = {
    0.0,    -0.0, 1.0,   -1.0,   0.5,    2.0,     -2.0,    1e-7, 1e8,  -1e8,     1e30,
    3.4e38, 1e39, 1e300, -1e300, 1e-310, DBL_MIN, FLT_MIN, NAN,  -NAN, INFINITY, -INFINITY,
    20.0,   88.0, 89.0,  709.0,  710.0,  -750.0,  0.01,    3.0,  4.0,  1e-45};
#define N_SPECIAL ((unsigned)(sizeof special / sizeof special[0]))

/* Values and scalars: a smooth range -4..4 for most bytes, the edge cases for the rest. */
static double value_of(unsigned b) {
    return b < 192 ? ((double)b - 96.0) / 24.0 : special[(b - 192) % N_SPECIAL];
}

static const int odd_ints[] = {INT_MIN, INT_MAX, INT_MIN + 1, 1000, -1000, 8, -9, 2, -3};
/* Axes: -9..9 (rank 8 takes -8..7), or far outside. */
static int axis_of(unsigned b) {
    return b < 240 ? (int)(b % 19) - 9 : odd_ints[(b - 240) % (sizeof odd_ints / sizeof(int))];
}

/* ---- The harness's state ---- */

typedef struct operand {
    tg_tensor *x;
    int src;
} operand;

typedef struct state {
    tg_tape *tape, *tape2;
    operand pool[POOL_MAX];
    int pool_n, pool_next;
    tg_tensor *leaves[LEAVES_MAX];
    int n_leaves;
    tg_tensor *stale[STALE_MAX];
    int n_stale;
    tg_tensor *other[OTHER_MAX];
    int n_other;
    size_t bytes_at_reset; /* tg_tape_bytes after the last reset */
    int nodes_this_gen;
    bool anomaly;
    FILE *trace;
    char *trace_buf;
    size_t trace_len;
    /* the observer */
    long events, stop_at;
    bool observer_stopped;
    char sentinel[160]; /* tg_last_errmsg() after mark_last_error() */
} state;

/* Puts a message no API call writes into tg_last_errmsg, so a failing tape-less call can be
 * seen to set its own. */
static void mark_last_error(state *s) {
    (void)tg_rng_next(NULL);
    snprintf(s->sentinel, sizeof s->sentinel, "%s", tg_last_errmsg());
}
static bool new_last_error(const state *s) {
    return tg_last_errmsg()[0] != '\0' && strcmp(tg_last_errmsg(), s->sentinel) != 0;
}

static void touch(const tg_tensor *x) {
    const int64_t n = tg_tensor_numel(x);
    const size_t bytes = (size_t)n * (tg_tensor_dtype(x) == TG_F64 ? 8 : 4);
    const unsigned char *d = tg_tensor_cdata(x);
    volatile unsigned char sum = 0;
    for (size_t i = 0; i < bytes; i++)
        sum += d[i];
    (void)sum;
}

static void pool_add(state *s, tg_tensor *x, int src) {
    if (s->pool_n < POOL_MAX) {
        s->pool[s->pool_n++] = (operand){x, src};
        return;
    }
    s->pool[s->pool_next] = (operand){x, src};
    s->pool_next = (s->pool_next + 1) % POOL_MAX;
}

static bool is_float(tg_dtype d) { return d == TG_F32 || d == TG_F64; }

static bool same_shape(const tg_tensor *a, const tg_tensor *b) {
    return tg_tensor_rank(a) == tg_tensor_rank(b) &&
           !memcmp(tg_tensor_shape(a), tg_tensor_shape(b),
                   sizeof(int64_t) * (size_t)tg_tensor_rank(a));
}

/* ---- The observer ---- */

static tg_status observer(const tg_event *ev, void *user) {
    state *s = user;
    REQUIRE(ev->tape == s->tape);
    REQUIRE(ev->kind >= TG_EVENT_FORWARD && ev->kind <= TG_EVENT_BACKWARD_END);
    if (ev->kind == TG_EVENT_FORWARD || ev->kind == TG_EVENT_BEFORE_BACKWARD ||
        ev->kind == TG_EVENT_AFTER_BACKWARD || ev->kind == TG_EVENT_GRAD_READY)
        REQUIRE(ev->tensor != NULL);
    if (ev->kind == TG_EVENT_BEFORE_BACKWARD || ev->kind == TG_EVENT_AFTER_BACKWARD) {
        REQUIRE(ev->n_grads == tg_tensor_n_inputs(ev->tensor));
        for (int k = 0; k < ev->n_grads; k++)
            if (ev->grads[k])
                REQUIRE(same_shape(ev->grads[k], tg_tensor_input(ev->tensor, k)));
    }
    if (ev->kind != TG_EVENT_FORWARD)
        REQUIRE(ev->output != NULL);
    if (++s->events == s->stop_at) {
        s->observer_stopped = true;
        mark_last_error(s); /* the tape quotes tg_last_errmsg() */
        return TG_ERR_STATE;
    }
    return TG_OK;
}

/* ---- The ops ---- */

typedef tg_tensor *(*un_fn)(tg_tape *, tg_tensor *, const char *, int);
typedef tg_tensor *(*s1_fn)(tg_tape *, tg_tensor *, double, const char *, int);
typedef tg_tensor *(*s2_fn)(tg_tape *, tg_tensor *, double, double, const char *, int);
typedef tg_tensor *(*int_fn)(tg_tape *, tg_tensor *, int, const char *, int);
typedef tg_tensor *(*bin_fn)(tg_tape *, tg_tensor *, tg_tensor *, const char *, int);
typedef tg_tensor *(*ax_fn)(tg_tape *, tg_tensor *, int, int, const char *, int);
typedef tg_tensor *(*var_fn)(tg_tape *, tg_tensor *, int, double, int, const char *, int);

typedef enum args {
    A_UN,
    A_S1,
    A_S2,
    A_INT,
    A_BIN,
    A_AX,
    A_VAR,
    A_RESHAPE,
    A_FLATTEN,
    A_CUSTOM
} args;
typedef enum rule {
    R_SAME,     /* output of the input's shape */
    R_SCALAR,   /* rank 0 */
    R_LASTAXIS, /* the input's shape, rank >= 1 */
    R_T,        /* a 2-D transpose */
    R_BCAST,
    R_MATMUL,
    R_MATMUL_BT,
    R_MSE,
    R_SCE,
    R_SUM_AXIS, /* sum_axis, mean_axis: rank >= 1 */
    R_AXIS,     /* logsumexp, var, std: also rank 0 (axis 0 or -1) */
    R_AXIS_NE,  /* max_axis, min_axis, argmax: as R_AXIS, the axis nonempty */
    R_RESHAPE,
    R_FLATTEN,
    R_CUSTOM
} rule;
typedef enum check { V_NONE, V_SOFTPLUS, V_CLAMP, V_GELU, V_VAR } check;

typedef struct opinfo {
    const char *name; /* tg_tensor_op_name of its nodes */
    args args;
    rule rule;
    check check;
    bool gc;       /* smooth enough (or kinks detectable) for the gradcheck piece */
    bool positive; /* gradcheck: input 1 only in a positive domain */
    un_fn un;
    s1_fn s1;
    s2_fn s2;
    int_fn in;
    bin_fn bin;
    ax_fn ax;
    var_fn var;
} opinfo;

static const opinfo OPS[] = {
    {"neg", A_UN, R_SAME, V_NONE, true, false, .un = tg_neg_at},
    {"exp", A_UN, R_SAME, V_NONE, true, false, .un = tg_exp_at},
    {"log", A_UN, R_SAME, V_NONE, true, true, .un = tg_log_at},
    {"tanh", A_UN, R_SAME, V_NONE, true, false, .un = tg_tanh_at},
    {"sigmoid", A_UN, R_SAME, V_NONE, true, false, .un = tg_sigmoid_at},
    {"relu", A_UN, R_SAME, V_NONE, true, false, .un = tg_relu_at},
    {"abs", A_UN, R_SAME, V_NONE, true, false, .un = tg_abs_at},
    {"silu", A_UN, R_SAME, V_NONE, true, false, .un = tg_silu_at},
    {"sqrt", A_UN, R_SAME, V_NONE, true, true, .un = tg_sqrt_at},
    {"sum", A_UN, R_SCALAR, V_NONE, true, false, .un = tg_sum_at},
    {"mean", A_UN, R_SCALAR, V_NONE, true, false, .un = tg_mean_at},
    {"softmax", A_UN, R_LASTAXIS, V_NONE, true, false, .un = tg_softmax_at},
    {"log_softmax", A_UN, R_LASTAXIS, V_NONE, true, false, .un = tg_log_softmax_at},
    {"transpose", A_UN, R_T, V_NONE, true, false, .un = tg_transpose_at},
    {"scale", A_S1, R_SAME, V_NONE, true, false, .s1 = tg_scale_at},
    {"add_scalar", A_S1, R_SAME, V_NONE, true, false, .s1 = tg_add_scalar_at},
    {"leaky_relu", A_S1, R_SAME, V_NONE, true, false, .s1 = tg_leaky_relu_at},
    {"elu", A_S1, R_SAME, V_NONE, true, false, .s1 = tg_elu_at},
    {"pow_scalar", A_S1, R_SAME, V_NONE, true, true, .s1 = tg_pow_scalar_at},
    {"softplus", A_S2, R_SAME, V_SOFTPLUS, true, false, .s2 = tg_softplus_at},
    {"clamp", A_S2, R_SAME, V_CLAMP, true, false, .s2 = tg_clamp_at},
    {"gelu", A_INT, R_SAME, V_GELU, true, false, .in = tg_gelu_at},
    {"add", A_BIN, R_BCAST, V_NONE, true, false, .bin = tg_add_at},
    {"sub", A_BIN, R_BCAST, V_NONE, true, false, .bin = tg_sub_at},
    {"mul", A_BIN, R_BCAST, V_NONE, true, false, .bin = tg_mul_at},
    {"div", A_BIN, R_BCAST, V_NONE, true, false, .bin = tg_div_at},
    {"pow", A_BIN, R_BCAST, V_NONE, true, true, .bin = tg_pow_at},
    {"maximum", A_BIN, R_BCAST, V_NONE, true, false, .bin = tg_maximum_at},
    {"minimum", A_BIN, R_BCAST, V_NONE, true, false, .bin = tg_minimum_at},
    {"matmul", A_BIN, R_MATMUL, V_NONE, true, false, .bin = tg_matmul_at},
    {"matmul_bt", A_BIN, R_MATMUL_BT, V_NONE, true, false, .bin = tg_matmul_bt_at},
    {"mse", A_BIN, R_MSE, V_NONE, true, false, .bin = tg_mse_at},
    {"softmax_cross_entropy", A_BIN, R_SCE, V_NONE, true, false,
     .bin = tg_softmax_cross_entropy_at},
    {"sum_axis", A_AX, R_SUM_AXIS, V_NONE, true, false, .ax = tg_sum_axis_at},
    {"mean_axis", A_AX, R_SUM_AXIS, V_NONE, true, false, .ax = tg_mean_axis_at},
    {"max_axis", A_AX, R_AXIS_NE, V_NONE, true, false, .ax = tg_max_axis_at},
    {"min_axis", A_AX, R_AXIS_NE, V_NONE, true, false, .ax = tg_min_axis_at},
    {"logsumexp", A_AX, R_AXIS, V_NONE, true, false, .ax = tg_logsumexp_at},
    {"argmax", A_AX, R_AXIS_NE, V_NONE, false, false, .ax = tg_argmax_at},
    {"var", A_VAR, R_AXIS, V_VAR, true, false, .var = tg_var_at},
    {"std", A_VAR, R_AXIS, V_VAR, true, false, .var = tg_std_at},
    {"reshape", A_RESHAPE, R_RESHAPE, V_NONE, true, false, .un = NULL},
    {"flatten", A_FLATTEN, R_FLATTEN, V_NONE, true, false, .un = NULL},
    {"fz_custom", A_CUSTOM, R_CUSTOM, V_NONE, true, false, .un = NULL},
};
#define N_OPS ((unsigned)(sizeof OPS / sizeof OPS[0]))

/* The custom op: y_i = sum_k x_k[i mod numel_k], so dx_k[i mod numel_k] += dy_i. */
static double elem(const tg_tensor *x, int64_t i) { return tg_tensor_get(x, i); }

static tg_status custom_forward(tg_tensor *out, tg_tensor *const *in, int n, void *user) {
    (void)user;
    REQUIRE(is_float(tg_tensor_dtype(out)));
    const int64_t m = tg_tensor_numel(out);
    void *d = tg_tensor_data(out);
    for (int64_t i = 0; i < m; i++) {
        double v = 0;
        for (int k = 0; k < n; k++) {
            const int64_t nk = tg_tensor_numel(in[k]);
            if (nk)
                v += elem(in[k], i % nk);
        }
        if (tg_tensor_dtype(out) == TG_F64)
            ((double *)d)[i] = v;
        else
            ((float *)d)[i] = (float)v;
    }
    return TG_OK;
}

static void custom_backward(const tg_tensor *out, const tg_tensor *dout, tg_tensor *const *in,
                            tg_tensor *const *din, int n, void *user) {
    (void)user;
    (void)in;
    REQUIRE(same_shape(out, dout));
    const int64_t m = tg_tensor_numel(out);
    for (int k = 0; k < n; k++) {
        if (!din[k])
            continue;
        const int64_t nk = tg_tensor_numel(din[k]);
        for (int64_t i = 0; nk && i < m; i++) {
            const int64_t j = i % nk;
            const double g = tg_tensor_get(din[k], j) + tg_tensor_get(dout, i);
            if (tg_tensor_dtype(din[k]) == TG_F64)
                ((double *)tg_tensor_data(din[k]))[j] = g;
            else
                ((float *)tg_tensor_data(din[k]))[j] = (float)g;
        }
    }
}

static const tg_custom_op custom_ok = {"fz_custom", custom_forward, custom_backward};
static const tg_custom_op custom_no_backward = {"fz_half", custom_forward, NULL};

enum { CUSTOM_IN_MAX = TG_CUSTOM_MAX_INPUTS + 1 };

/* One builder call: the op and every argument but the operands. */
typedef struct insn {
    unsigned op;
    int n_in; /* operands */
    bool tape_null;
    const char *file;
    int line;
    double s1, s2;
    int i1, i2;
    int rank;
    bool shape_null;
    int64_t shape[TG_MAX_RANK];
    int custom; /* 0 a good op, 1 NULL op, 2 no backward, 3 NULL inputs array */
} insn;

static tg_tensor *build(tg_tape *t, const insn *c, tg_tensor **x) {
    const opinfo *o = &OPS[c->op];
    const char *f = c->file;
    const int l = c->line;
    switch (o->args) {
    case A_UN: return o->un(t, x[0], f, l);
    case A_S1: return o->s1(t, x[0], c->s1, f, l);
    case A_S2: return o->s2(t, x[0], c->s1, c->s2, f, l);
    case A_INT: return o->in(t, x[0], c->i1, f, l);
    case A_BIN: return o->bin(t, x[0], x[1], f, l);
    case A_AX: return o->ax(t, x[0], c->i1, c->i2, f, l);
    case A_VAR: return o->var(t, x[0], c->i1, c->s1, c->i2, f, l);
    case A_RESHAPE: return tg_reshape_at(t, x[0], c->rank, c->shape_null ? NULL : c->shape, f, l);
    case A_FLATTEN: return tg_flatten_at(t, x[0], c->i1, c->i2, f, l);
    case A_CUSTOM: {
        const tg_custom_op *op = c->custom == 1   ? NULL
                                 : c->custom == 2 ? &custom_no_backward
                                                  : &custom_ok;
        return tg_custom_at(t, op, NULL, c->custom == 3 ? NULL : x, c->n_in, c->rank,
                            c->shape_null ? NULL : c->shape, f, l);
    }
    }
    return NULL;
}

/* ---- What the documentation says a call gives ---- */

typedef struct expect {
    bool ok; /* the call must succeed (else it must fail) */
    tg_dtype dtype;
    int rank;
    int64_t shape[TG_MAX_RANK];
} expect;

/* The library's bound on sizes (tensor.c, tape.c, reshape.c): the product of the nonzero sizes
 * stays below INT64_MAX / 16, so no stride overflows, even beside a size 0. */
static bool count_fits(int rank, const int64_t *shape) {
    int64_t n = 1;
    for (int i = 0; i < rank; i++) {
        if (shape[i] > 0 && n > INT64_MAX / 16 / shape[i])
            return false;
        n *= shape[i] > 0 ? shape[i] : 1;
    }
    return true;
}

static bool axis_norm(int axis, int rank, int *out) {
    const long a = axis < 0 ? (long)axis + rank : axis;
    if (a < 0 || a >= rank)
        return false;
    *out = (int)a;
    return true;
}

static void reduce_shape(expect *e, const tg_tensor *x, int axis, bool keepdims) {
    const int r = tg_tensor_rank(x);
    const int64_t *sh = tg_tensor_shape(x);
    e->rank = 0;
    for (int i = 0; i < r; i++) {
        if (i != axis)
            e->shape[e->rank++] = sh[i];
        else if (keepdims)
            e->shape[e->rank++] = 1;
    }
}

static bool bcast(expect *e, const tg_tensor *a, const tg_tensor *b) {
    const int ra = tg_tensor_rank(a), rb = tg_tensor_rank(b);
    const int r = ra > rb ? ra : rb;
    for (int i = 0; i < r; i++) {
        const int ia = ra - r + i, ib = rb - r + i;
        const int64_t da = ia >= 0 ? tg_tensor_shape(a)[ia] : 1;
        const int64_t db = ib >= 0 ? tg_tensor_shape(b)[ib] : 1;
        if (da != db && da != 1 && db != 1)
            return false;
        e->shape[i] = da == 1 ? db : da;
    }
    e->rank = r;
    return true;
}

static bool input_valid(const state *s, tg_tape *t, const operand *o) {
    switch (o->src) {
    case SRC_LEAF: return true;
    case SRC_NODE: return t == s->tape;
    case SRC_OTHER: return t == s->tape2;
    case SRC_STALE: /* a stale pointer may be a current node's address again */
        if (t != s->tape)
            return false;
        for (int64_t i = 0; i < tg_tape_size(t); i++) /* its own fields may now be any bytes */
            if (tg_tape_node(t, i) == o->x)
                return true;
        return false;
    default: return false;
    }
}

static expect predict(const state *s, tg_tape *t, const insn *c, const operand *in) {
    const opinfo *o = &OPS[c->op];
    expect e = {.ok = false};
    if (!t)
        return e;
    if (o->args == A_CUSTOM && (c->custom != 0 || c->n_in < 1 || c->n_in > TG_CUSTOM_MAX_INPUTS ||
                                (c->rank > 0 && c->shape_null)))
        return e;
    const tg_tensor *first = NULL;
    for (int k = 0; k < c->n_in; k++) {
        if (!in[k].x || !input_valid(s, t, &in[k]))
            return e;
        const tg_dtype d = tg_tensor_dtype(in[k].x);
        if (d == TG_I32 && o->rule == R_SCE && k == 1)
            continue;
        if (!is_float(d) || (first && d != tg_tensor_dtype(first)))
            return e;
        if (!first)
            first = in[k].x;
    }
    const tg_tensor *x = in[0].x;
    const int r = tg_tensor_rank(x);
    const int64_t *sh = tg_tensor_shape(x);
    e.dtype = tg_tensor_dtype(first);
    e.rank = r;
    memcpy(e.shape, sh, sizeof(int64_t) * (size_t)r);
    int axis = 0;
    switch (o->check) {
    case V_NONE: break;
    case V_SOFTPLUS:
        if (!(c->s1 != 0 && isfinite(c->s1)) || isnan(c->s2))
            return e;
        break;
    case V_CLAMP:
        if (isnan(c->s1) || isnan(c->s2))
            return e;
        break;
    case V_GELU:
        if (c->i1 != 0 && c->i1 != 1)
            return e;
        break;
    case V_VAR:
        if (!(c->s1 >= 0) || isinf(c->s1))
            return e;
        break;
    }
    switch (o->rule) {
    case R_SAME: break;
    case R_SCALAR: e.rank = 0; break;
    case R_LASTAXIS:
        if (r < 1)
            return e;
        break;
    case R_T:
        if (r != 2)
            return e;
        e.shape[0] = sh[1];
        e.shape[1] = sh[0];
        break;
    case R_BCAST:
        if (!bcast(&e, x, in[1].x))
            return e;
        break;
    case R_MATMUL:
    case R_MATMUL_BT: {
        const tg_tensor *b = in[1].x;
        if (r != 2 || tg_tensor_rank(b) != 2)
            return e;
        const int64_t *bs = tg_tensor_shape(b);
        const bool bt = o->rule == R_MATMUL_BT;
        if (sh[1] != bs[bt ? 1 : 0])
            return e;
        e.shape[1] = bs[bt ? 0 : 1];
        if (!count_fits(2, e.shape))
            return e;
        break;
    }
    case R_MSE:
        if (!same_shape(x, in[1].x))
            return e;
        e.rank = 0;
        break;
    case R_SCE: {
        const tg_tensor *y = in[1].x;
        if (r != 2 || sh[0] == 0) /* an empty batch has no mean (the header does not say) */
            return e;
        if (sh[1] == 0) /* no classes: no softmax */
            return e;
        if (tg_tensor_dtype(y) == TG_I32) {
            if (tg_tensor_rank(y) != 1 || tg_tensor_shape(y)[0] != sh[0])
                return e;
            for (int64_t i = 0; i < sh[0]; i++) {
                const double v = tg_tensor_get(y, i);
                if (v < 0 || v >= (double)sh[1])
                    return e;
            }
        } else if (!same_shape(x, y)) {
            return e;
        }
        e.rank = 0;
        break;
    }
    case R_SUM_AXIS:
        if (!axis_norm(c->i1, r, &axis))
            return e;
        reduce_shape(&e, x, axis, c->i2 != 0);
        break;
    case R_AXIS:
    case R_AXIS_NE:
        if (r == 0) {
            if (c->i1 != 0 && c->i1 != -1)
                return e;
            e.rank = 0;
        } else {
            if (!axis_norm(c->i1, r, &axis))
                return e;
            if (o->rule == R_AXIS_NE && sh[axis] == 0)
                return e;
            reduce_shape(&e, x, axis, c->i2 != 0);
        }
        if (!strcmp(o->name, "argmax"))
            e.dtype = TG_I32;
        break;
    case R_RESHAPE: {
        if ((c->rank > 0 && c->shape_null) || c->rank < 0 || c->rank > TG_MAX_RANK)
            return e;
        if (!count_fits(c->rank, c->shape)) /* -1 counts as a size 1 here */
            return e;
        int infer = -1;
        int64_t known = 1;
        for (int i = 0; i < c->rank; i++) {
            if (c->shape[i] == -1 && infer < 0)
                infer = i;
            else if (c->shape[i] < 0)
                return e;
            else
                known *= c->shape[i];
        }
        e.rank = c->rank;
        memcpy(e.shape, c->shape, sizeof(int64_t) * (size_t)c->rank);
        const int64_t n = tg_tensor_numel(x);
        if (infer >= 0) {
            if (known == 0 || n % known != 0)
                return e;
            e.shape[infer] = n / known;
            known *= e.shape[infer];
        }
        if (known != n)
            return e;
        break;
    }
    case R_FLATTEN: {
        const int rr = r > 0 ? r : 1;
        const long st = c->i1 < 0 ? (long)c->i1 + rr : c->i1;
        const long en = c->i2 < 0 ? (long)c->i2 + rr : c->i2;
        if (st < 0 || st >= rr || en < 0 || en >= rr || st > en)
            return e;
        if (r == 0) {
            e.rank = 1;
            e.shape[0] = 1;
            break;
        }
        e.rank = 0;
        for (int i = 0; i < st; i++)
            e.shape[e.rank++] = sh[i];
        int64_t m = 1;
        for (long i = st; i <= en; i++)
            m *= sh[i];
        e.shape[e.rank++] = m;
        for (int i = (int)en + 1; i < r; i++)
            e.shape[e.rank++] = sh[i];
        break;
    }
    case R_CUSTOM:
        if (c->rank < 0 || c->rank > TG_MAX_RANK)
            return e;
        for (int i = 0; i < c->rank; i++)
            if (c->shape[i] < 0)
                return e;
        if (!count_fits(c->rank, c->shape))
            return e;
        e.rank = c->rank;
        memcpy(e.shape, c->shape, sizeof(int64_t) * (size_t)c->rank);
        break;
    }
    e.ok = true;
    return e;
}

/* ---- Running one call and checking it ---- */

/* The last successful call whose inputs are small enough to gradcheck. */
typedef struct gc_piece {
    bool have;
    insn c;
    int n;
    tg_dtype dtype[2];
    int rank[2];
    int64_t shape[2][TG_MAX_RANK];
    int32_t ints[GC_NUMEL]; /* an i32 input's values (class indices) */
} gc_piece;

static void remember_for_gradcheck(gc_piece *g, const insn *c, const operand *in) {
    const opinfo *o = &OPS[c->op];
    if (!o->gc || c->n_in > 2)
        return;
    int64_t total = 0;
    for (int k = 0; k < c->n_in; k++) {
        const int64_t n = tg_tensor_numel(in[k].x);
        if (n > GC_NUMEL)
            return;
        total += n;
    }
    if (total > GC_TOTAL)
        return;
    g->have = true;
    g->c = *c;
    g->n = c->n_in;
    for (int k = 0; k < c->n_in; k++) {
        g->dtype[k] = tg_tensor_dtype(in[k].x);
        g->rank[k] = tg_tensor_rank(in[k].x);
        memcpy(g->shape[k], tg_tensor_shape(in[k].x), sizeof(int64_t) * (size_t)g->rank[k]);
        if (g->dtype[k] == TG_I32)
            for (int64_t i = 0; i < tg_tensor_numel(in[k].x); i++)
                g->ints[i] = (int32_t)tg_tensor_get(in[k].x, i);
    }
}

static tg_tensor *call(state *s, gc_piece *g, tg_tape *t, const insn *c, operand *in) {
    const opinfo *o = &OPS[c->op];
    const expect e = predict(s, t, c, in);
    const tg_status before = tg_tape_status(t);
    char msg_before[512] = "";
    if (t)
        snprintf(msg_before, sizeof msg_before, "%s", tg_tape_errmsg(t));
    const int64_t size_before = tg_tape_size(t);
    mark_last_error(s);
    s->observer_stopped = false;

    tg_tensor *x[CUSTOM_IN_MAX];
    for (int k = 0; k < c->n_in && k < CUSTOM_IN_MAX; k++)
        x[k] = in[k].x;
    if (verbose) {
        fprintf(stderr, "tg_%s on %s\n", o->name, !t ? "NULL" : t == s->tape ? "tape" : "tape2");
        for (int k = 0; k < c->n_in && k < 4; k++)
            describe("input", in[k].x, in[k].src);
    }
    tg_tensor *y = build(t, c, x);
    if (verbose)
        fprintf(stderr, "  -> %p %s\n", (void *)y, t ? tg_tape_errmsg(t) : tg_last_errmsg());

    if (!t) {
        REQUIRE(y == NULL);
        REQUIRE(new_last_error(s));
        return NULL;
    }
    REQUIRE(tg_tape_errmsg(t) != NULL);
    if (before != TG_OK) { /* a failed tape does no work and keeps its first message */
        REQUIRE(y == NULL);
        REQUIRE(tg_tape_status(t) == before);
        REQUIRE(strcmp(tg_tape_errmsg(t), msg_before) == 0);
        REQUIRE(tg_tape_size(t) == size_before);
        return NULL;
    }
    if (!y) {
        REQUIRE(tg_tape_status(t) != TG_OK);
        REQUIRE(tg_tape_errmsg(t)[0] != '\0');
        REQUIRE(tg_tape_size(t) == size_before);
        const bool excused =
            s->observer_stopped || (s->anomaly && tg_tape_status(t) == TG_ERR_NONFINITE);
        if (e.ok && !excused) {
            fprintf(stderr, "a valid call of tg_%s failed: %s\n", o->name, tg_tape_errmsg(t));
            REQUIRE(!"a valid call failed");
        }
        return NULL;
    }
    if (!e.ok) {
        fprintf(stderr, "an invalid call of tg_%s succeeded\n", o->name);
        REQUIRE(!"an invalid call succeeded");
    }
    REQUIRE(tg_tape_status(t) == TG_OK);
    REQUIRE(tg_tape_size(t) == size_before + 1);
    REQUIRE(tg_tape_node(t, size_before) == y);
    REQUIRE(tg_tensor_tape_index(y) == size_before);
    REQUIRE(tg_tensor_dtype(y) == e.dtype);
    REQUIRE(tg_tensor_rank(y) == e.rank);
    REQUIRE(!memcmp(tg_tensor_shape(y), e.shape, sizeof(int64_t) * (size_t)e.rank));
    int64_t n = 1;
    for (int i = 0; i < e.rank; i++)
        n *= e.shape[i];
    REQUIRE(tg_tensor_numel(y) == n);
    REQUIRE(!strcmp(tg_tensor_op_name(y), o->name));
    REQUIRE(tg_tensor_n_inputs(y) == c->n_in);
    bool needs = false;
    for (int k = 0; k < c->n_in; k++) {
        REQUIRE(tg_tensor_input(y, k) == in[k].x);
        needs |= tg_tensor_requires_grad(in[k].x) != 0;
    }
    REQUIRE(tg_tensor_requires_grad(y) == (needs && is_float(e.dtype)));
    REQUIRE(tg_tensor_grad(y) == NULL);
    touch(y);
    if (t == s->tape) {
        s->nodes_this_gen++;
        remember_for_gradcheck(g, c, in);
    }
    return y;
}

/* ---- Operands and arguments from the bytes ---- */

static bool matches(const opinfo *o, int k, const tg_tensor *a, const tg_tensor *b) {
    if (!a || !b || k == 0)
        return true;
    const bool same_dt = tg_tensor_dtype(a) == tg_tensor_dtype(b);
    expect e;
    switch (o->rule) {
    case R_BCAST: return same_dt && bcast(&e, a, b);
    case R_MATMUL:
    case R_MATMUL_BT:
        return same_dt && tg_tensor_rank(a) == 2 && tg_tensor_rank(b) == 2 &&
               tg_tensor_dim(a, 1) == tg_tensor_dim(b, o->rule == R_MATMUL ? 0 : 1);
    case R_MSE: return same_dt && same_shape(a, b);
    case R_SCE:
        return tg_tensor_rank(a) == 2 && ((tg_tensor_dtype(b) == TG_I32 && tg_tensor_rank(b) == 1 &&
                                           tg_tensor_dim(b, 0) == tg_tensor_dim(a, 0)) ||
                                          (same_dt && same_shape(a, b)));
    default: return same_dt;
    }
}

/* An operand: a pool entry (plain, or the first one that fits the op with operand 0), NULL, a
 * stale tensor, another tape's node, or a gradient. */
static operand pick(state *s, reader *r, const opinfo *o, int k, const tg_tensor *first) {
    const unsigned b = u8(r);
    const operand none = {NULL, SRC_NULL};
    if (b < 200)
        return s->pool_n ? s->pool[b % (unsigned)s->pool_n] : none;
    if (b < 232) {
        for (int j = 0; j < s->pool_n; j++) {
            const operand *p = &s->pool[(b + (unsigned)j) % (unsigned)s->pool_n];
            if (matches(o, k, first, p->x))
                return *p;
        }
        return s->pool_n ? s->pool[b % (unsigned)s->pool_n] : none;
    }
    if (b < 238)
        return none;
    if (b < 244) {
        if (!s->n_stale)
            return none;
        tg_tensor *x = s->stale[b % (unsigned)s->n_stale];
        /* Safe to hand over only inside the part of the arena used since the reset: below the
         * newest node, in the one block (no block added since the last reset). */
        const int64_t n = tg_tape_size(s->tape);
        const bool inside = tg_tape_bytes(s->tape) == s->bytes_at_reset && n > 0 &&
                            (uintptr_t)x < (uintptr_t)tg_tape_node(s->tape, n - 1);
        return inside || pending ? (operand){x, SRC_STALE} : none;
    }
    if (b < 250)
        return s->n_other ? (operand){s->other[b % (unsigned)s->n_other], SRC_OTHER} : none;
    if (!s->pool_n)
        return none;
    const operand *p = &s->pool[b % (unsigned)s->pool_n];
    tg_tensor *gr = tg_tensor_grad(p->x);
    return gr ? (operand){gr, p->src == SRC_LEAF ? SRC_LEAF : SRC_NODE_GRAD} : none;
}

static char long_file[400];

static void read_location(reader *r, insn *c) {
    const unsigned v = u8(r);
    c->tape_null = v == 0xFF;
    c->file = (v & 3) == 2 ? "" : (v & 3) == 3 && v > 0x80 ? long_file : __FILE__;
    c->line = v == 0xFE ? INT_MIN : (int)v;
}

static int64_t dim_of(unsigned b) {
    static const int64_t odd[] = {-1, -2, INT64_MAX, INT64_MIN, (int64_t)1 << 62, 0};
    return b < 240 ? (int64_t)(b % 6) - 1 : odd[(b - 240) % 6];
}

/* A shape for reshape: sizes -1..4 and odd ones, or one fitted to x's element count. */
static void read_reshape(reader *r, insn *c, const tg_tensor *x) {
    const unsigned b = u8(r);
    const int64_t n = tg_tensor_numel(x);
    c->rank = 0;
    if (b >= 240) {
        switch (b - 240) {
        case 0: c->rank = 1, c->shape[0] = -1; break;
        case 1: c->rank = 1, c->shape[0] = n; break;
        case 2: c->rank = 2, c->shape[0] = 1, c->shape[1] = -1; break;
        case 3: c->rank = 2, c->shape[0] = -1, c->shape[1] = 1; break;
        case 4: c->rank = 0; break;
        case 5: c->rank = 2, c->shape[0] = 2, c->shape[1] = -1; break;
        case 6: c->rank = 3, c->shape[0] = -1, c->shape[1] = 1, c->shape[2] = -1; break;
        case 7: c->rank = 9; break;
        case 8: c->rank = -1; break;
        case 9: c->rank = INT_MAX; break;
        case 10: c->rank = 2, c->shape_null = true; break;
        default:
            c->rank = 8;
            for (int i = 0; i < 8; i++)
                c->shape[i] = 1;
            c->shape[7] = -1;
        }
        return;
    }
    c->rank = (int)(b % 9);
    for (int i = 0; i < c->rank; i++)
        c->shape[i] = dim_of(u8(r));
}

/* A custom op's output shape: small sizes (the product capped at NUMEL_MAX), or odd ones. */
static void read_custom_shape(reader *r, insn *c) {
    const unsigned b = u8(r);
    if (b >= 250) {
        c->rank = b == 250 ? 9 : b == 251 ? -1 : 2;
        c->shape_null = b == 252;
        if (b >= 253)
            c->shape[0] = b == 253 ? -3 : (int64_t)1 << 62, c->shape[1] = (int64_t)1 << 62;
        return;
    }
    c->rank = (int)(b % 9);
    int64_t n = 1;
    for (int i = 0; i < c->rank; i++) {
        int64_t d = u8(r) % 5;
        if (d > 1 && n * d > NUMEL_MAX)
            d = 1;
        c->shape[i] = d;
        n *= d;
    }
}

static void builder(state *s, gc_piece *g, reader *r, unsigned which) {
    insn c = {.op = which % N_OPS};
    const opinfo *o = &OPS[c.op];
    read_location(r, &c);
    operand in[CUSTOM_IN_MAX];
    c.n_in = o->args == A_BIN ? 2 : 1;
    if (o->args == A_CUSTOM) {
        const unsigned b = u8(r);
        c.custom = b >= 248 ? (int)(b - 248) % 4 : 0;
        const unsigned k = u8(r);
        c.n_in = k < 250 ? (int)(k % 4) + 1 : k < 253 ? 0 : k == 253 ? -1 : CUSTOM_IN_MAX;
    }
    const int n_read = c.n_in < 0 ? 0 : c.n_in > 4 ? 4 : c.n_in;
    for (int k = 0; k < n_read; k++)
        in[k] = pick(s, r, o, k, k ? in[0].x : NULL);
    for (int k = n_read; k < c.n_in; k++) /* 65 inputs: the first ones repeated */
        in[k] = in[k % 4];
    switch (o->args) {
    case A_S1: c.s1 = value_of(u8(r)); break;
    case A_S2:
        c.s1 = value_of(u8(r));
        c.s2 = value_of(u8(r));
        break;
    case A_INT: {
        const unsigned b = u8(r);
        c.i1 = b < 200 ? (int)(b % 2) : axis_of(b);
        break;
    }
    case A_AX:
    case A_VAR: {
        c.i1 = axis_of(u8(r));
        if (o->args == A_VAR) {
            const unsigned b = u8(r);
            c.s1 = b < 64 ? (double)(b % 3) : value_of(b);
        }
        const unsigned k = u8(r);
        c.i2 = k % 3 == 0 ? 0 : (int)k;
        break;
    }
    case A_FLATTEN:
        c.i1 = axis_of(u8(r));
        c.i2 = axis_of(u8(r));
        break;
    case A_RESHAPE: read_reshape(r, &c, in[0].x); break;
    case A_CUSTOM: read_custom_shape(r, &c); break;
    default: break;
    }
    tg_tensor *y = call(s, g, c.tape_null ? NULL : s->tape, &c, in);
    if (y && tg_tensor_numel(y) <= POOL_NUMEL) /* broadcasts and reshapes do not grow forever */
        pool_add(s, y, SRC_NODE);
}

/* ---- Leaves ---- */

static bool is_our_leaf(const state *s, const tg_tensor *x) {
    for (int i = 0; i < s->n_leaves; i++)
        if (s->leaves[i] == x)
            return true;
    return false;
}

/* Keeps a new leaf (or frees it when the list is full). Returns whether it was kept. */
static bool keep_leaf(state *s, tg_tensor *x) {
    if (s->n_leaves == LEAVES_MAX) {
        tg_tensor_free(x);
        return false;
    }
    s->leaves[s->n_leaves++] = x;
    pool_add(s, x, SRC_LEAF);
    return true;
}

static void fill_from_bytes(tg_tensor *x, reader *r) {
    const int64_t n = tg_tensor_numel(x);
    void *d = tg_tensor_data(x);
    for (int64_t i = 0; i < n; i++) {
        const unsigned b = u8(r);
        switch (tg_tensor_dtype(x)) {
        case TG_F64: ((double *)d)[i] = value_of(b); break;
        case TG_F32: {
            const double v = value_of(b);
            ((float *)d)[i] =
                isfinite(v) && fabs(v) > FLT_MAX ? (float)copysign(INFINITY, v) : (float)v;
            break;
        }
        case TG_I32:
            ((int32_t *)d)[i] = b < 250 ? (int32_t)(b % 7) - 1 : b & 1 ? INT32_MAX : INT32_MIN;
            break;
        }
    }
}

static void make_leaf(state *s, reader *r) {
    const unsigned h = u8(r), m = u8(r);
    const tg_dtype dt = h >= 248 ? (tg_dtype)((int)h - 250) : (tg_dtype)(h % 3);
    int rank = (int)((h >> 2) % 10);
    if (rank == 9 && (h & 1))
        rank = -1;
    int64_t shape[TG_MAX_RANK] = {0};
    int64_t small = 1; /* the product of the small sizes read so far, for the cap */
    bool dims_ok = true;
    for (int i = 0; i < rank && i < TG_MAX_RANK; i++) {
        const unsigned b = u8(r);
        int64_t d = b < 250 ? (int64_t)(b % 5) : b < 253 ? -1 : INT64_MAX;
        if (d > 1 && d != INT64_MAX && small * d > NUMEL_MAX)
            d = 1;
        shape[i] = d;
        dims_ok &= d >= 0;
        if (d >= 0 && d != INT64_MAX)
            small *= d;
    }
    const bool null_shape = (m >> 4) == 15;
    const int64_t *sp = null_shape ? NULL : shape;
    int verdict = (dt == TG_F32 || dt == TG_F64 || dt == TG_I32) && rank >= 0 &&
                  rank <= TG_MAX_RANK && !(rank > 0 && null_shape) && dims_ok &&
                  count_fits(rank, shape);
    int64_t n = 1; /* the element count of a valid shape (a huge size only after a 0) */
    for (int i = 0; verdict && i < rank; i++)
        n = shape[i] == 0 || n == 0 ? 0 : n * shape[i];
    mark_last_error(s);
    tg_tensor *x = NULL;
    switch (m & 3) {
    case 0:
        x = tg_tensor_new(dt, rank, sp);
        if (x)
            fill_from_bytes(x, r);
        break;
    case 1: x = tg_tensor_ones(dt, rank, sp); break;
    case 2: {
        const double lo = value_of(u8(r)), hi = value_of(u8(r));
        tg_rng rng;
        tg_rng_seed(&rng, h * 31u + m);
        if (m & 0x40) {
            x = tg_tensor_randn(dt, rank, sp, lo, hi, &rng);
            if (!(isfinite(lo) && isfinite(hi) && hi >= 0))
                verdict = 0;
        } else {
            x = tg_tensor_rand(dt, rank, sp, lo, hi, &rng);
            if (!(isfinite(lo) && isfinite(hi) && lo <= hi))
                verdict = 0;
        }
        if (verdict && dt == TG_I32)
            verdict = -1; /* random integers: not specified */
        break;
    }
    default: {
        /* From a buffer of bytes (copied); an i32 tensor's values as they come. */
        int64_t k = verdict ? n : 0;
        double buf[NUMEL_MAX];
        for (int64_t i = 0; i < k; i++)
            buf[i] = value_of(u8(r));
        float fbuf[NUMEL_MAX];
        int32_t ibuf[NUMEL_MAX];
        for (int64_t i = 0; i < k; i++) {
            fbuf[i] = isfinite(buf[i]) && fabs(buf[i]) > FLT_MAX ? (float)copysign(INFINITY, buf[i])
                                                                 : (float)buf[i];
            ibuf[i] = (int32_t)(i % 5) - 1;
        }
        const void *data = dt == TG_F64   ? (const void *)buf
                           : dt == TG_F32 ? (const void *)fbuf
                                          : (const void *)ibuf;
        x = tg_tensor_from(dt, rank, sp, (m & 0x40) ? NULL : data);
        if (m & 0x40)
            verdict = verdict ? -1 : 0; /* NULL data: not specified */
    }
    }
    if (verbose) {
        fprintf(stderr, "leaf mode %u%s\n", m & 3, m & 4 ? " requires grad" : "");
        describe("leaf", x, SRC_LEAF);
    }
    if (!x) {
        REQUIRE(new_last_error(s));
        if (verdict == 1) {
            fprintf(stderr, "a valid leaf (dtype %d, rank %d) was refused: %s\n", (int)dt, rank,
                    tg_last_errmsg());
            REQUIRE(!"a valid leaf was refused");
        }
        return;
    }
    REQUIRE(verdict != 0);
    REQUIRE(tg_tensor_dtype(x) == dt);
    REQUIRE(tg_tensor_rank(x) == rank && rank >= 0);
    REQUIRE(!memcmp(tg_tensor_shape(x), shape, sizeof(int64_t) * (size_t)rank));
    REQUIRE(tg_tensor_numel(x) == n);
    REQUIRE(tg_tensor_grad(x) == NULL && !tg_tensor_requires_grad(x));
    REQUIRE(!strcmp(tg_tensor_op_name(x), "leaf") && tg_tensor_tape_index(x) == -1);
    touch(x);
    if (m & 4) {
        const tg_status st = tg_tensor_set_requires_grad(x, 1);
        REQUIRE(st == (dt == TG_I32 ? TG_ERR_DTYPE : TG_OK));
        REQUIRE(tg_tensor_requires_grad(x) == (dt != TG_I32));
    }
    if (m & 8)
        tg_tensor_set_name(x, m & 0x20 ? long_file : "w");
    keep_leaf(s, x);
}

/* ---- Other actions ---- */

static void set_requires_grad(state *s, reader *r) {
    const operand o = pick(s, r, &OPS[0], 0, NULL);
    const unsigned v = u8(r);
    if (o.src == SRC_STALE)
        return; /* it would write to a stale tensor: the caller's bug, not the library's */
    mark_last_error(s);
    const tg_status st = tg_tensor_set_requires_grad(o.x, (int)v - 1);
    if (!o.x)
        REQUIRE(st == TG_ERR_NULL);
    else if (o.src != SRC_LEAF)
        REQUIRE(st == TG_ERR_STATE);
    else if (tg_tensor_dtype(o.x) == TG_I32 && v != 1)
        REQUIRE(st == TG_ERR_DTYPE);
    else
        REQUIRE(st == TG_OK && tg_tensor_requires_grad(o.x) == (v != 1));
    if (st != TG_OK)
        REQUIRE(new_last_error(s));
}

static void clone_action(state *s, reader *r) {
    const operand o = pick(s, r, &OPS[0], 0, NULL);
    const unsigned b = u8(r);
    const tg_dtype dt = b % 4 == 3 ? (tg_dtype)7 : (tg_dtype)(b % 4);
    if (o.src == SRC_STALE)
        return;
    mark_last_error(s);
    tg_tensor *x = tg_tensor_clone(o.x, dt);
    if (!x) {
        REQUIRE(new_last_error(s));
        REQUIRE(!o.x || dt == (tg_dtype)7 || (dt == TG_I32 && is_float(tg_tensor_dtype(o.x))));
        return;
    }
    REQUIRE(o.x && dt != (tg_dtype)7);
    REQUIRE(tg_tensor_dtype(x) == dt && same_shape(x, o.x));
    REQUIRE(tg_tensor_requires_grad(x) == (tg_tensor_requires_grad(o.x) && is_float(dt)));
    for (int64_t i = 0; i < tg_tensor_numel(x) && dt != TG_I32; i++) {
        const double a = tg_tensor_get(x, i), v = tg_tensor_get(o.x, i);
        REQUIRE((isnan(a) && isnan(v)) || a == (dt == TG_F32 ? (double)(float)v : v));
    }
    keep_leaf(s, x);
}

static void copy_action(state *s, reader *r) {
    const operand d = pick(s, r, &OPS[0], 0, NULL), o = pick(s, r, &OPS[0], 0, NULL);
    if (d.src != SRC_LEAF || o.src == SRC_STALE || !is_our_leaf(s, d.x))
        return; /* writing into a tape tensor is not supported */
    mark_last_error(s);
    const tg_status st = tg_tensor_copy(d.x, o.x);
    if (st != TG_OK) {
        REQUIRE(new_last_error(s));
        REQUIRE(!o.x || !same_shape(d.x, o.x) ||
                (tg_tensor_dtype(d.x) == TG_I32 && tg_tensor_dtype(o.x) != TG_I32));
        return;
    }
    REQUIRE(o.x && same_shape(d.x, o.x));
}

static void print_and_free(state *s, reader *r, FILE *out) {
    const operand o = pick(s, r, &OPS[0], 0, NULL);
    if (o.src == SRC_STALE)
        return;
    tg_tensor_print(o.x, out);
    tg_tensor_print(o.x, NULL);
    /* Anything but our own leaves: ignored (nodes) or refused (gradients). */
    if (!is_our_leaf(s, o.x)) {
        tg_tensor_free(o.x);
        if (o.x)
            touch(o.x); /* still alive */
    }
}

static void introspect(state *s, reader *r) {
    const operand o = pick(s, r, &OPS[0], 0, NULL);
    const int axis = axis_of(u8(r));
    if (o.src == SRC_STALE)
        return;
    const tg_tensor *x = o.x;
    REQUIRE(tg_tensor_op_name(x) != NULL && tg_tensor_op_saves(x) != NULL);
    REQUIRE(tg_tensor_name(x) != NULL);
    (void)tg_tensor_dim(x, axis);
    (void)tg_tensor_get(x, axis);
    (void)tg_tensor_item(x);
    (void)tg_tensor_src_file(x);
    (void)tg_tensor_src_line(x);
    for (int k = -1; k <= tg_tensor_n_inputs(x); k++) {
        const tg_tensor *in = tg_tensor_input(x, k);
        REQUIRE((k >= 0 && k < tg_tensor_n_inputs(x)) == (in != NULL));
    }
    if (o.src == SRC_NODE)
        REQUIRE(tg_tape_node(s->tape, tg_tensor_tape_index(x)) == x);
}

static void check_outputs(state *s, FILE *out, unsigned how) {
    REQUIRE(tg_tape_print(s->tape, out) == TG_OK);
    REQUIRE(tg_tape_write_dot(s->tape, out) == TG_OK);
    mark_last_error(s);
    REQUIRE(tg_tape_print(s->tape, NULL) == TG_ERR_NULL && new_last_error(s));
    mark_last_error(s);
    REQUIRE(tg_tape_write_dot(NULL, out) == TG_ERR_NULL && new_last_error(s));
    if (how & 1) { /* a stream that fills up after a few bytes */
        char small[24];
        FILE *f = fmemopen(small, sizeof small, "w");
        if (f) {
            const tg_status a = tg_tape_print(s->tape, f), b = tg_tape_write_dot(s->tape, f);
            REQUIRE(a == TG_OK || a == TG_ERR_IO);
            REQUIRE(b == TG_OK || b == TG_ERR_IO);
            fclose(f);
        }
    }
}

static void set_trace(state *s, bool on) {
    if (on && !s->trace)
        s->trace = open_memstream(&s->trace_buf, &s->trace_len);
    REQUIRE(tg_tape_set_trace(s->tape, on ? s->trace : NULL) == TG_OK);
}

/* tg_backward from a one-element node, or tg_backward_seed from any operand with a seed that
 * fits it (or one that does not). */
static void backward_action(state *s, reader *r) {
    const unsigned b = u8(r);
    tg_tape *t = b == 0xFF ? NULL : s->tape;
    operand out = {NULL, SRC_NULL};
    if (b & 0x40) {
        out = pick(s, r, &OPS[0], 0, NULL);
    } else {
        const unsigned k = u8(r);
        for (int j = 0; j < s->pool_n; j++) {
            const operand *p = &s->pool[(k + (unsigned)j) % (unsigned)s->pool_n];
            if (p->src == SRC_NODE && tg_tensor_numel(p->x) == 1) {
                out = *p;
                break;
            }
        }
    }
    tg_tensor *seed = NULL;
    bool own_seed = false, seed_zeroed = false;
    if (b & 0x80) {
        const unsigned m = u8(r);
        if (m < 200 && out.x && out.src != SRC_STALE) {
            seed = tg_tensor_new(tg_tensor_dtype(out.x), tg_tensor_rank(out.x),
                                 tg_tensor_shape(out.x));
            REQUIRE(seed != NULL);
            fill_from_bytes(seed, r);
            own_seed = true;
        } else {
            const operand o = pick(s, r, &OPS[0], 0, NULL);
            if (o.src != SRC_STALE)
                seed = o.x;
            seed_zeroed = o.src == SRC_NODE_GRAD && !pending; /* the pass may zero it first */
        }
    }
    const bool out_ok =
        out.x && (out.src == SRC_NODE || (out.src == SRC_STALE && input_valid(s, s->tape, &out)));
    const bool valid =
        t && out_ok && is_float(tg_tensor_dtype(out.x)) &&
        (seed ? same_shape(seed, out.x) && tg_tensor_dtype(seed) == tg_tensor_dtype(out.x)
              : tg_tensor_numel(out.x) == 1);
    const tg_status before = tg_tape_status(t);
    char msg_before[512] = "";
    if (t)
        snprintf(msg_before, sizeof msg_before, "%s", tg_tape_errmsg(t));
    mark_last_error(s);
    s->observer_stopped = false;
    /* The seed's values now: it may be a gradient the pass accumulates into. */
    tg_tensor *seed_copy = valid && seed ? tg_tensor_clone(seed, tg_tensor_dtype(seed)) : NULL;
    if (verbose) {
        fprintf(stderr, "backward%s\n", t ? "" : " (NULL tape)");
        describe("output", out.x, out.src);
        describe("seed", seed, own_seed ? SRC_LEAF : 0);
    }
    const tg_status st = seed ? tg_backward_seed(t, out.x, seed) : tg_backward(t, out.x);
    if (verbose)
        fprintf(stderr, "  -> %s %s\n", tg_status_name(st), t ? tg_tape_errmsg(t) : "");
    if (!t) {
        REQUIRE(st == TG_ERR_NULL && new_last_error(s));
    } else if (before != TG_OK) {
        REQUIRE(st == before && !strcmp(tg_tape_errmsg(t), msg_before));
    } else if (st != TG_OK) {
        REQUIRE(tg_tape_status(t) == st && tg_tape_errmsg(t)[0] != '\0');
        const bool excused = s->observer_stopped || (s->anomaly && st == TG_ERR_NONFINITE);
        if (valid && !excused) {
            fprintf(stderr, "a valid backward failed: %s\n", tg_tape_errmsg(t));
            REQUIRE(!"a valid backward failed");
        }
    } else {
        REQUIRE(valid);
        const tg_tensor *g = tg_tensor_grad(out.x);
        REQUIRE(g && same_shape(g, out.x) && tg_tensor_dtype(g) == tg_tensor_dtype(out.x));
        const size_t bytes = (size_t)tg_tensor_numel(g) * (tg_tensor_dtype(g) == TG_F64 ? 8 : 4);
        if (seed && !seed_zeroed)
            REQUIRE(!memcmp(tg_tensor_cdata(g), tg_tensor_cdata(seed_copy), bytes));
        else if (!seed)
            REQUIRE(tg_tensor_item(g) == 1.0);
        for (int i = 0; i < s->n_leaves; i++) {
            const tg_tensor *lg = tg_tensor_grad(s->leaves[i]);
            if (lg) {
                REQUIRE(same_shape(lg, s->leaves[i]));
                REQUIRE(tg_tensor_dtype(lg) == tg_tensor_dtype(s->leaves[i]));
                touch(lg);
            }
        }
        for (int i = 0; i < s->pool_n; i++) {
            const tg_tensor *pg = tg_tensor_grad(s->pool[i].x);
            if (pg && s->pool[i].src == SRC_NODE) {
                REQUIRE(same_shape(pg, s->pool[i].x));
                touch(pg);
            }
        }
    }
    tg_tensor_free(seed_copy);
    if (own_seed)
        tg_tensor_free(seed);
}

static void other_tape_action(state *s, gc_piece *g, reader *r) {
    const unsigned b = u8(r);
    insn c = {.op = b & 1 ? 22 /* add */ : 1 /* exp */, .file = __FILE__, .line = (int)b};
    const opinfo *o = &OPS[c.op];
    c.n_in = o->args == A_BIN ? 2 : 1;
    operand in[2];
    for (int k = 0; k < c.n_in; k++) {
        const unsigned sel = u8(r);
        if (sel < 128 && s->n_other)
            in[k] = (operand){s->other[sel % (unsigned)s->n_other], SRC_OTHER};
        else
            in[k] = pick(s, r, o, k, k ? in[0].x : NULL);
        /* A stale tensor of the first tape is not in tape2's arena: tape2 cannot tell it from a
         * leaf (the header's caller responsibility 2), so it is never passed there. */
        if (in[k].src == SRC_STALE)
            in[k] = (operand){NULL, SRC_NULL};
    }
    tg_tensor *y = call(s, g, s->tape2, &c, in);
    if (y && s->n_other < OTHER_MAX)
        s->other[s->n_other++] = y;
}

static void do_reset(state *s) {
    /* A reset that merges blocks frees them: every stale pointer would then dangle. */
    const bool frees_nothing = tg_tape_bytes(s->tape) == s->bytes_at_reset;
    if (!frees_nothing)
        s->n_stale = 0;
    int w = 0;
    for (int i = 0; i < s->pool_n; i++) {
        if (s->pool[i].src == SRC_LEAF)
            s->pool[w++] = s->pool[i];
        else if (frees_nothing && s->n_stale < STALE_MAX)
            s->stale[s->n_stale++] = s->pool[i].x;
    }
    s->pool_n = w;
    s->pool_next = 0;
    tg_tape_reset(s->tape);
    REQUIRE(tg_tape_status(s->tape) == TG_OK && tg_tape_errmsg(s->tape)[0] == '\0');
    REQUIRE(tg_tape_size(s->tape) == 0);
    s->bytes_at_reset = tg_tape_bytes(s->tape);
    s->nodes_this_gen = 0;
}

/* ---- Gradcheck of one recorded call, on fresh small leaves ---- */

static tg_tensor *gc_loss(tg_tape *t, tg_tensor *const *in, int n, tg_dtype dtype, void *user) {
    (void)dtype;
    const gc_piece *g = user;
    tg_tensor *x[2] = {in[0], n > 1 ? in[1] : NULL};
    tg_tensor *y = build(t, &g->c, x);
    return tg_sum(t, tg_mul(t, y, y));
}

static double tame(double v) { return isfinite(v) && fabs(v) <= 3 ? v : 1.25; }

static void gradcheck_piece(state *s, gc_piece *g, reader *r) {
    /* Always GC_TOTAL bytes of values, so the next round starts at a fixed place. */
    unsigned char vals[GC_TOTAL];
    for (int i = 0; i < GC_TOTAL; i++)
        vals[i] = (unsigned char)u8(r);
    int next = 0;
    if (!g->have)
        return;
    g->have = false;
    const opinfo *o = &OPS[g->c.op];
    g->c.file = __FILE__;
    g->c.tape_null = false;
    g->c.custom = 0;
    g->c.s1 = tame(g->c.s1);
    g->c.s2 = tame(g->c.s2);
    if (o->check == V_SOFTPLUS && fabs(g->c.s1) < 0.25)
        g->c.s1 = 1;
    if (o->check == V_VAR)
        g->c.s1 = g->c.s1 >= 1 ? 1 : 0;
    tg_tensor *in[2] = {NULL, NULL};
    for (int k = 0; k < g->n; k++) {
        if (g->dtype[k] == TG_I32) {
            in[k] = tg_tensor_from(TG_I32, g->rank[k], g->shape[k], g->ints);
        } else {
            in[k] = tg_tensor_new(g->dtype[k], g->rank[k], g->shape[k]);
            for (int64_t i = 0; in[k] && i < tg_tensor_numel(in[k]); i++) {
                const unsigned b = vals[next++ % GC_TOTAL];
                const double mag = 0.3 + (double)(b & 63) / 42.0;
                const bool neg = (b & 64) && !(o->positive && k == 0);
                tg_tensor_set(in[k], i, neg ? -mag : mag);
            }
            if (in[k])
                tg_tensor_set_requires_grad(in[k], 1);
        }
        REQUIRE(in[k] != NULL);
    }
    tg_gradcheck_report *rep = tg_gradcheck(gc_loss, in, g->n, g, NULL);
    if (!rep) {
        fprintf(stderr, "tg_gradcheck of tg_%s refused: %s\n", o->name, tg_last_errmsg());
        REQUIRE(!"tg_gradcheck refused a valid call");
    }
    bool finite = isfinite(rep->loss);
    for (int k = 0; k < rep->n_tensors; k++)
        for (int64_t i = 0; i < rep->tensors[k].numel; i++) {
            const tg_gradcheck_element *e = &rep->tensors[k].elements[i];
            finite &= isfinite(e->autodiff) && isfinite(e->fd) && fabs(e->fd) < 1e6;
        }
    if (finite)
        for (int k = 0; k < rep->n_tensors; k++)
            if (rep->tensors[k].n_mismatch) {
                fprintf(stderr, "tg_%s: gradient mismatch\n", o->name);
                tg_gradcheck_print(rep, stderr);
                REQUIRE(!"a gradient disagrees with finite differences");
            }
    FILE *devnull = fopen("/dev/null", "w");
    if (devnull) {
        tg_gradcheck_print(rep, devnull);
        fclose(devnull);
    }
    (void)s;
    tg_gradcheck_report_free(rep);
    tg_tensor_free(in[0]);
    tg_tensor_free(in[1]);
}

/* ---- The program ---- */

static void run_round(state *s, gc_piece *g, reader *r, FILE *out) {
    for (int k = 0; k < OPS_MAX && !at_end(r); k++) {
        const unsigned a = u8(r);
        if (a == 0xFF)
            break;
        if (a < 176)
            builder(s, g, r, a);
        else if (a < 200 || a >= 248)
            make_leaf(s, r);
        else if (a < 206)
            do_reset(s);
        else if (a < 212)
            backward_action(s, r);
        else if (a < 216)
            set_requires_grad(s, r);
        else if (a < 218) {
            const operand o = pick(s, r, &OPS[0], 0, NULL);
            if (o.src != SRC_STALE)
                tg_tensor_zero_grad(o.x);
        } else if (a < 222)
            clone_action(s, r);
        else if (a < 226)
            copy_action(s, r);
        else if (a < 228) {
            s->anomaly = a & 1;
            REQUIRE(tg_tape_set_anomaly(s->tape, s->anomaly) == TG_OK);
            REQUIRE(tg_tape_anomaly(s->tape) == s->anomaly);
        } else if (a < 230) {
            REQUIRE(tg_tape_set_training(s->tape, a & 1) == TG_OK);
            REQUIRE(tg_tape_training(s->tape) == (a & 1));
        } else if (a < 234)
            other_tape_action(s, g, r);
        else if (a < 236)
            print_and_free(s, r, out);
        else if (a < 240)
            check_outputs(s, out, a);
        else if (a < 244)
            set_trace(s, a & 1);
        else
            introspect(s, r);
        REQUIRE(s->nodes_this_gen < 64);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!long_file[0]) {
        verbose = getenv("FUZZ_API_VERBOSE") != NULL;
        pending = getenv("FUZZ_API_LENIENT") == NULL;
        memset(long_file, 'd', sizeof long_file - 1);
        long_file[100] = '/';
    }
    reader r = {data, size, 0};
    static state s;
    memset(&s, 0, sizeof s);
    s.tape = tg_tape_new();
    s.tape2 = tg_tape_new();
    REQUIRE(s.tape && s.tape2);
    /* Warm up the node list to 64 entries, so tg_tape_bytes changes only with the arena. */
    tg_tensor *w = tg_tensor_ones(TG_F32, 0, NULL);
    REQUIRE(tg_neg_at(s.tape, w, __FILE__, __LINE__) != NULL);
    tg_tape_reset(s.tape);
    tg_tensor_free(w);
    s.bytes_at_reset = tg_tape_bytes(s.tape);

    const unsigned modes = u8(&r);
    if (modes & 1) {
        REQUIRE(tg_tape_set_anomaly(s.tape, 1) == TG_OK);
        s.anomaly = true;
    }
    if (modes & 2)
        REQUIRE(tg_tape_set_training(s.tape, 0) == TG_OK);
    if (modes & 4)
        set_trace(&s, true);
    s.stop_at = (modes & 8) ? (long)(modes >> 4) * 3 + 1 : 0;
    REQUIRE(tg_tape_observe(s.tape, observer, &s) == TG_OK);
    REQUIRE(tg_tape_observe(s.tape, observer, &s) == TG_ERR_VALUE);

    char *out_buf = NULL;
    size_t out_len = 0;
    FILE *out = open_memstream(&out_buf, &out_len);
    REQUIRE(out != NULL);
    static gc_piece g;
    memset(&g, 0, sizeof g);
    for (int round = 0; round < 2; round++) {
        run_round(&s, &g, &r, out);
        backward_action(&s, &r);
        check_outputs(&s, out, u8(&r));
        gradcheck_piece(&s, &g, &r);
        do_reset(&s);
    }
    REQUIRE(tg_tape_unobserve(s.tape, observer, &s) == TG_OK);
    REQUIRE(tg_tape_set_trace(s.tape, NULL) == TG_OK);
    if (s.trace)
        fclose(s.trace);
    free(s.trace_buf);
    fclose(out);
    free(out_buf);
    tg_tape_free(s.tape);
    tg_tape_free(s.tape2);
    for (int i = 0; i < s.n_leaves; i++)
        tg_tensor_free(s.leaves[i]);
    return 0;
}
