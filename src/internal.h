/* internal.h -- private structures shared by src/ and ops/. Not installed. */
#ifndef TG_INTERNAL_H
#define TG_INTERNAL_H

#include "tapegrad.h"

#include <assert.h>
#include <stdarg.h>
#include <stdbool.h>
#include <string.h>

/* An internal invariant (a bug in tapegrad itself, never a caller's mistake). Stays on in release
 * builds: a wrong gradient is worse than a crash with a line number. */
#define TG_CHECK(cond)                                                                             \
    do {                                                                                           \
        if (!(cond))                                                                               \
            tg__invariant_failed(#cond, __FILE__, __LINE__);                                       \
    } while (0)
_Noreturn void tg__invariant_failed(const char *cond, const char *file, int line);

/* The op list, written once. X(ENUM_SUFFIX, file_name). Every op has a descriptor
 * `tg_op_<file_name>` defined at the bottom of ops/<file_name>.c. */
#define TG_OP_LIST(X)                                                                              \
    X(ADD, add)                                                                                    \
    X(SUB, sub)                                                                                    \
    X(MUL, mul)                                                                                    \
    X(DIV, div)                                                                                    \
    X(NEG, neg)                                                                                    \
    X(SCALE, scale)                                                                                \
    X(ADD_SCALAR, add_scalar)                                                                      \
    X(MATMUL, matmul)                                                                              \
    X(MATMUL_BT, matmul_bt)                                                                        \
    X(TRANSPOSE, transpose)                                                                        \
    X(RESHAPE, reshape)                                                                            \
    X(SUM, sum)                                                                                    \
    X(MEAN, mean)                                                                                  \
    X(SUM_AXIS, sum_axis)                                                                          \
    X(MEAN_AXIS, mean_axis)                                                                        \
    X(EXP, exp)                                                                                    \
    X(LOG, log)                                                                                    \
    X(TANH, tanh)                                                                                  \
    X(SIGMOID, sigmoid)                                                                            \
    X(RELU, relu)                                                                                  \
    X(SOFTMAX, softmax)                                                                            \
    X(LOG_SOFTMAX, log_softmax)                                                                    \
    X(SOFTMAX_CROSS_ENTROPY, softmax_cross_entropy)                                                \
    X(MSE, mse)                                                                                    \
    X(CUSTOM, custom)

typedef enum tg_op {
    TG_OP_LEAF = 0, /* not an op: a tensor made by the caller */
#define TG_X_ENUM(NAME, file) TG_OP_##NAME,
    TG_OP_LIST(TG_X_ENUM)
#undef TG_X_ENUM
        TG_OP_COUNT
} tg_op;

/* Extra arguments of an op, fixed when it is recorded. */
typedef struct tg_op_params {
    int axis;      /* sum_axis, mean_axis: the axis reduced (normalised to 0..rank-1 by shape) */
    int keepdims;  /* sum_axis, mean_axis */
    double scalar; /* scale, add_scalar */
    int rank;      /* reshape, custom: the requested output shape */
    int64_t shape[TG_MAX_RANK];
    const tg_custom_op *custom; /* custom */
    void *user;                 /* custom */
} tg_op_params;

#define TG_MAX_INPUTS TG_CUSTOM_MAX_INPUTS
#define TG_NAME_MAX 32

/* Values of tg_tensor.owner. tg_tensor_free refuses all but TG__OWN_CALLER. */
enum { TG__OWN_CALLER = 0, TG__OWN_GRAD = 1, TG__OWN_DATASET = 2 };

struct tg_tensor {
    tg_dtype dtype;
    int rank;
    int64_t shape[TG_MAX_RANK];
    int64_t numel;
    void *data;

    /* The gradient: same shape and dtype, or NULL. A leaf's is malloc'ed and persists; a tape
     * tensor's lives in the tape's arena and is rebuilt by each backward. */
    struct tg_tensor *grad;
    bool requires_grad;
    bool on_tape;  /* owned by a tape: data, grad and this struct live in its arena */
    uint8_t owner; /* who frees a leaf: TG__OWN_CALLER (tg_tensor_free), TG__OWN_GRAD (a leaf's
                      gradient, freed with the leaf), TG__OWN_DATASET (a tg_dataset's batch) */
    char name[TG_NAME_MAX];

    /* Tape nodes only. */
    tg_op op;
    int n_inputs;
    struct tg_tensor *inputs[TG_MAX_INPUTS];
    tg_op_params params;
    void *saved; /* what backward needs beyond inputs and output (e.g. softmax probabilities) */
    int64_t tape_index;
    const tg_tape *tape;
    const char *src_file; /* base name of the caller's file; points into the caller's __FILE__ */
    int src_line;
};

/* An op: everything tapegrad knows about it, side by side.
 * shape:    validates inputs and params, sets out->rank/out->shape. On error returns a status and
 *           writes the reason (without the "file:line: tg_op: " prefix) into msg.
 * forward:  fills out->data (allocated, uninitialised), may set out->saved (arena memory).
 * backward: accumulates (+=) into inputs[i]->grad for every input whose grad is non-NULL,
 *           from out->grad, using what forward saved. */
typedef struct tg_op_desc {
    const char *name;  /* "matmul" */
    const char *saves; /* what forward keeps for backward, as a phrase: "its output y" */
    int n_inputs;      /* -1: variable (custom) */
    tg_status (*shape)(tg_tensor *out, char *msg, size_t msg_len);
    tg_status (*forward)(tg_tape *tape, tg_tensor *out);
    void (*backward)(tg_tensor *out);
    const char *local; /* the backward's rule as a phrase, for traces: "dx += dy * (1 - y^2)" */
} tg_op_desc;

#define TG_X_DECL(NAME, file) extern const tg_op_desc tg_op_##file;
TG_OP_LIST(TG_X_DECL)
#undef TG_X_DECL

/* The op table, indexed by tg_op (TG_OP_LEAF's entry is NULL). */
extern const tg_op_desc *const tg_op_table[TG_OP_COUNT];

/* ---- Tape internals (src/tape.c) ---- */

/* Arena memory of the tape, 64-byte aligned, zeroed; valid until reset. NULL on no memory (and the
 * tape is then in error). */
void *tg__tape_alloc(tg_tape *tape, size_t bytes);

/* Records an op: checks the tape, inputs and shapes, allocates the output, runs forward, appends
 * the node. The common path of every builder call. */
tg_tensor *tg__record(tg_tape *tape, tg_op op, tg_tensor *const *inputs, int n_inputs,
                      const tg_op_params *params, const char *file, int line);

/* Sets the tape's error if it has none; the message is prefixed with "file:line: tg_<op>: ". */
void tg__tape_fail(tg_tape *tape, tg_status status, const char *file, int line, const char *op,
                   const char *fmt, ...) __attribute__((format(printf, 6, 7)));

/* Thread-local error for tape-less calls. Returns status for convenience. */
tg_status tg__set_last_error(tg_status status, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* ---- Backward trace (src/teach.c); called by tg_backward only when the tape has a trace FILE * */

FILE *tg__tape_trace(const tg_tape *tape);
void tg__trace_begin(tg_tape *tape, const tg_tensor *output);
/* Runs n's backward between a snapshot of its inputs' gradients and the report of what changed. */
void tg__trace_node(tg_tape *tape, tg_tensor *n, const tg_tensor *output);
void tg__trace_end(tg_tape *tape, const tg_tensor *output);
/* The probabilities softmax_cross_entropy's forward saved ([N,C], logits' dtype). */
const void *tg__sce_probs(const tg_tensor *y);

/* ---- Helpers for ops ---- */

size_t tg_dtype_size(tg_dtype dtype);
const char *tg_dtype_name(tg_dtype dtype);
/* "[200,2]" into buf; returns buf. */
const char *tg_shape_str(const tg_tensor *t, char *buf, size_t len);
#define TG_SHAPE_STR_LEN 96

/* Runs `body` with T defined as the element type of dtype (TG_F32 -> float, TG_F64 -> double).
 * With <tgmath.h>, exp/log/tanh in the body pick the float or double version. */
#define TG_FOR_DTYPE(dtype, T, ...)                                                                \
    do {                                                                                           \
        if ((dtype) == TG_F32) {                                                                   \
            typedef float T;                                                                       \
            __VA_ARGS__                                                                            \
        } else {                                                                                   \
            typedef double T;                                                                      \
            __VA_ARGS__                                                                            \
        }                                                                                          \
    } while (0)

/* NumPy broadcasting of two tensors to a 4-D iteration space. Strides are in elements, 0 along
 * broadcast axes, so `out[o] op= a[ia] * b[ib]` over the space covers every case, and backward's
 * `da[ia] += ...` sums over the broadcast axes by itself. */
typedef struct tg_bcast {
    int64_t dim[TG_MAX_RANK];      /* output shape, left-padded with 1s */
    int64_t stride_a[TG_MAX_RANK]; /* a's strides in that space */
    int64_t stride_b[TG_MAX_RANK];
} tg_bcast;

/* Output shape of broadcasting a with b. TG_OK, or TG_ERR_SHAPE with msg set. */
tg_status tg_bcast_shape(const tg_tensor *a, const tg_tensor *b, tg_tensor *out, char *msg,
                         size_t msg_len);
void tg_bcast_init(tg_bcast *bc, const tg_tensor *a, const tg_tensor *b, const tg_tensor *out);

/* Iterates the broadcast space: o (output index), ia, ib (input indices) are int64_t lvalues
 * in scope during body. */
#define TG_BCAST_FOR(bc, o, ia, ib, ...)                                                           \
    do {                                                                                           \
        int64_t o = 0;                                                                             \
        for (int64_t i0_ = 0; i0_ < (bc).dim[0]; i0_++)                                            \
            for (int64_t i1_ = 0; i1_ < (bc).dim[1]; i1_++)                                        \
                for (int64_t i2_ = 0; i2_ < (bc).dim[2]; i2_++) {                                  \
                    int64_t ia =                                                                   \
                        i0_ * (bc).stride_a[0] + i1_ * (bc).stride_a[1] + i2_ * (bc).stride_a[2];  \
                    int64_t ib =                                                                   \
                        i0_ * (bc).stride_b[0] + i1_ * (bc).stride_b[1] + i2_ * (bc).stride_b[2];  \
                    const int64_t sa3_ = (bc).stride_a[3], sb3_ = (bc).stride_b[3];                \
                    for (int64_t i3_ = 0; i3_ < (bc).dim[3]; i3_++, o++, ia += sa3_, ib += sb3_) { \
                        __VA_ARGS__                                                                \
                    }                                                                              \
                }                                                                                  \
    } while (0)

/* ---- Matrix multiply (src/gemm.c) ----
 * C[M,N] = beta * C + op(A) op(B), op(X) = X or X^T, row-major with leading dimensions.
 * beta is 0 (overwrite) or 1 (accumulate: backward's +=). */
void tg_gemm(tg_dtype dtype, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K,
             const void *A, int64_t lda, const void *B, int64_t ldb, int beta, void *C,
             int64_t ldc);

/* Reductions along one axis, shared by sum_axis and mean_axis (ops/sum_axis.c). */
tg_status tg__reduce_axis_shape(tg_tensor *y, char *msg, size_t len);
int64_t tg__reduce_axis_len(const tg_tensor *y);
void tg__reduce_axis_forward(tg_tensor *y, double factor);
void tg__reduce_axis_backward(tg_tensor *y, double factor);

/* Shared shape check for ops with one input and an output of the same shape. */
tg_status tg__shape_same(tg_tensor *out, char *msg, size_t msg_len);
/* The same, for ops along the last axis (softmax, log_softmax): rank >= 1. */
tg_status tg__shape_last_axis(tg_tensor *out, char *msg, size_t msg_len);

#endif /* TG_INTERNAL_H */
