/* engine.h -- the engine's private interface: the tensor and node struct, the op descriptor and
 * the backward protocol, recording, errors, broadcasting. Included by src/ and ops/; not
 * installed. Nothing here names an op: everything the engine and the tools know about an op is a
 * field of its descriptor (tg__op_desc), defined at the bottom of ops/<op>.c. */
#ifndef TG_ENGINE_H
#define TG_ENGINE_H

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

#define TG_NAME_MAX 32

typedef struct tg__op_desc tg__op_desc;

/* Who owns a tensor struct (tg_tensor_free refuses what the caller does not own). */
typedef enum tg__owner {
    TG__OWN_CALLER = 0, /* a leaf made by tg_tensor_new and friends */
    TG__OWN_TAPE = 1,   /* a node, or a node's gradient: the tape's arena */
    TG__OWN_GRAD = 2,   /* a leaf's gradient: freed with the leaf */
    TG__OWN_DATASET = 3 /* a tg_dataset's batch: freed with the dataset */
} tg__owner;

struct tg_tensor {
    tg_dtype dtype;
    int rank;
    int64_t shape[TG_MAX_RANK];
    int64_t numel;
    void *data;

    /* The gradient: same shape and dtype, or NULL. A leaf's is malloc'ed and persists; a node's
     * lives in the tape's arena and is zeroed by each backward pass that reaches the node, right
     * before the first backward that adds into it (until then, during the pass, it holds older
     * bytes: an observer reads only the grads its event hands it). */
    struct tg_tensor *grad;
    bool requires_grad; /* leaves: set by the caller; nodes: any input's, at recording time */
    bool on_tape;       /* owned by a tape: data, grad and this struct live in its arena */
    /* A node's gradient during one backward call: its memory holds no value of this pass yet,
     * and the op (one with TG__OP_WRITES_GRAD) writes it instead of adding (tg__dx_fresh). */
    bool fresh;
    uint8_t owner; /* tg__owner */
    char name[TG_NAME_MAX];

    /* Engine scratch for one backward pass, valid while pass == the tape's pass counter. */
    uint32_t pass;
    bool needs;          /* needs a gradient in this pass */
    int32_t senders;     /* nodes: how many inputs of nodes on the path are this node */
    int64_t ready_after; /* leaves: the tape index of the last node (in reverse) that uses it */

    /* Nodes only. */
    const tg__op_desc *op; /* NULL for a leaf */
    int n_inputs;
    struct tg_tensor **inputs; /* n_inputs entries, arena */
    void *params;              /* the op's private parameters (op->params_size bytes), arena */
    void *saved;               /* what backward needs beyond inputs and output, arena */
    int64_t tape_index;
    const tg_tape *tape;
    uint64_t generation;  /* the tape's generation when recorded (stale after a reset) */
    const char *src_file; /* base name of the caller's file; points into the caller's __FILE__ */
    int src_line;
};

/* ---- The op descriptor ------------------------------------------------------------------------
 *
 * The backward protocol. The engine alone decides which inputs need a gradient: from the leaves'
 * requires_grad and the path from the output tg_backward starts at. It calls an op's backward
 * once per pass, only for a node on that path, as
 *     op->backward(y, dy, dx)
 * where y is the node (inputs, params, saved, output values), dy is dL/dy (y's shape and dtype)
 * and dx[k] is the gradient tensor of input k to accumulate into (+=), or NULL when input k needs
 * none. An op never looks at an input's ->grad. tg_backward is the only caller of a backward
 * besides the teaching tools, which call it on scratch tensors to read a local derivative.
 *
 * First writer writes. A node's gradient would have to be zeroed before the first backward adds
 * into it: a pass over memory that the add then reads and writes again. An op whose descriptor
 * has TG__OP_WRITES_GRAD may instead be handed a dx that is *fresh* (tg__dx_fresh): it holds
 * older bytes, and the backward must store every element (=) instead of adding (+=), as
 * if dx had been zeroed (a broadcast sum starts from 0, a GEMM takes beta = 0). The engine
 * decides: dx is fresh only when this node is the first (in reverse) to reach it, the input
 * appears once among the node's inputs, and no observer watches the pass (the tools read dx
 * before a backward runs). A backward that cannot store every element on some path (a scatter)
 * calls tg__dx_zero_if_fresh first and adds as usual. Leaves' gradients are never fresh: they
 * accumulate across passes.
 *
 * Shared gradients. When an op's rule for input k is dx = dy element for element (add of an
 * input of the output's shape, reshape, flatten: the descriptor's grad_is_dy says so), and y is
 * the only node of the pass that sends x a gradient, a fresh dx would be a copy of dy that
 * nothing changes afterwards. The engine then points x's gradient at dy's memory and passes
 * dx[k] = NULL, under the same conditions as a fresh dx (no observer, the input appears once)
 * and for nodes only. Both read the same numbers, as after a copy; a later pass gives x its
 * own memory back (with the shared values) before it starts. */
typedef void (*tg__backward_fn)(const tg_tensor *y, const tg_tensor *dy, tg_tensor *const *dx);

/* The arguments of a backward, bundled for a kernel split over threads (tg__parallel_range). */
typedef struct tg__backward_args {
    const tg_tensor *y, *dout;
    tg_tensor *const *din;
} tg__backward_args;

/* A named view of something an op saved for backward ("p", the probabilities), for the tools. */
typedef struct tg__saved_view {
    const char *name; /* as in the rule text: "p" */
    const char *what; /* "the probabilities softmax(z)" */
    tg_tensor tensor; /* a header over the saved memory (data points into the arena) */
} tg__saved_view;

/* A view named `name` of `data` (arena memory an op saved) as a tensor of dtype and shape, for
 * the tools: the returned header points into the arena and owns nothing. */
tg__saved_view tg__view(const char *name, const char *what, tg_dtype dtype, int rank,
                        const int64_t *shape, const void *data);

/* Flags of an op. */
enum {
    /* one float input, output of its shape, y_i depends on x_i only: the local derivative
     * dy/dx is the diagonal backward(ones) produces */
    TG__OP_ELEMENTWISE = 1u << 0,
    /* NumPy broadcasting of its inputs (backward sums over broadcast axes) */
    TG__OP_BROADCAST = 1u << 1,
    /* forward may leave output elements unwritten: the engine zeroes the output first */
    TG__OP_ZERO_OUTPUT = 1u << 2,
    /* the output's dtype is not inputs[0]'s: shape() sets it */
    TG__OP_SETS_DTYPE = 1u << 3,
    /* backward honours a fresh dx (see "First writer writes" above) */
    TG__OP_WRITES_GRAD = 1u << 4,
    /* the output holds inputs[0]'s elements in the same order (reshape, flatten): when that
     * input lives in the same tape's arena, the engine gives the output its data instead of a
     * copy, and forward finds y->data == x->data. Nodes are never written after their forward,
     * so the two stay equal; a leaf input is copied, since its owner may change it before
     * backward. */
    TG__OP_VIEW = 1u << 5,
};

/* Whether a backward stores into dx (true: dx holds no value yet) or adds into it (false). */
static inline bool tg__dx_fresh(const tg_tensor *dx) { return dx && dx->fresh; }

/* For a backward path that only adds: a fresh dx is zeroed first (and is then an ordinary one). */
void tg__dx_zero_if_fresh(tg_tensor *dx);

struct tg__op_desc {
    const char *name; /* "matmul": the builder is tg_<name> */
    int min_inputs, max_inputs;
    unsigned index_inputs; /* bit k: input k may be an integer (TG_I32) tensor of indices */
    unsigned flags;        /* TG__OP_* */
    size_t params_size;    /* bytes of private parameters the engine copies into the arena */

    const char *saves; /* what forward keeps, as a phrase: "its output y" */
    const char *rule;  /* the backward as a phrase, for traces: "dx += dy * (1 - y^2)" */
    const char *local; /* elementwise ops: the local derivative dy/dx as a phrase: "1 - y^2" */

    /* Validates inputs and params; sets y->rank and y->shape (and y->dtype with
     * TG__OP_SETS_DTYPE). On error returns a status and writes the reason, without the
     * "file:line: tg_op: " prefix, into msg. */
    tg_status (*shape)(tg_tensor *y, char *msg, size_t msg_len);
    /* Fills y->data (allocated; zeroed only with TG__OP_ZERO_OUTPUT), may set y->saved. */
    tg_status (*forward)(tg_tape *tape, tg_tensor *y);
    tg__backward_fn backward;

    /* Optional. Writes the parameters as the tools show them ("axis=1, keepdims", "s=3") into
     * buf; returns the length (0: nothing to show). */
    int (*print_params)(const tg_tensor *y, char *buf, size_t len);
    /* Optional. The name of this instance when it has its own ("square" for a custom op), from
     * the params alone (messages need it before the node exists); NULL to use name. */
    const char *(*instance_name)(const void *params);
    /* Optional. Fills up to max views of what forward saved; returns how many. */
    int (*saved_views)(const tg_tensor *y, tg__saved_view *views, int max);
    /* Optional. Whether backward's rule for input k is dx = dy, element i for element i (same
     * element count and order): the engine may then share dy's memory (see "Shared
     * gradients"). */
    bool (*grad_is_dy)(const tg_tensor *y, int k);
};

/* The op table: every descriptor, from the list CMake generates out of the files in ops/. */
extern const tg__op_desc *const tg__op_table[];
extern const int tg__op_count;

/* "tg_matmul", "tg_custom(square)": the op's name as messages show it. */
const char *tg__op_label(const tg__op_desc *op, const void *params, char *buf, size_t len);
/* "matmul", "square": the name of a node's op as listings and traces show it. */
const char *tg__node_op_name(const tg_tensor *node);

/* ---- Recording (src/core/tape.c) ---- */

/* Records an op: checks the tape, inputs (count, NULLs, tapes, dtypes) and shapes, copies the
 * params, allocates the output, runs forward, tells the observers, appends the node. The common
 * path of every builder call. */
tg_tensor *tg__record(tg_tape *tape, const tg__op_desc *op, tg_tensor *const *inputs, int n_inputs,
                      const void *params, const char *file, int line);

/* Arena memory of the tape, 64-byte aligned and zeroed; valid until reset. NULL on no memory
 * (and the tape is then in error). */
void *tg__tape_alloc(tg_tape *tape, size_t bytes);
/* As tg__tape_alloc without the zeroing, for memory the caller overwrites entirely. */
void *tg__tape_alloc_raw(tg_tape *tape, size_t bytes);

/* Sets the tape's error if it has none; the message is prefixed with "file:line: op: ". */
void tg__tape_fail(tg_tape *tape, tg_status status, const char *file, int line, const char *op,
                   const char *fmt, ...) __attribute__((format(printf, 6, 7)));
/* "circles.c" of "/home/me/circles.c" (a pointer into path). */
const char *tg__base_name(const char *path);
/* Thread-local error for tape-less calls. Returns status for convenience. */
tg_status tg__set_last_error(tg_status status, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* The tape's current generation (bumped by every reset). */
uint64_t tg__tape_generation(const tg_tape *tape);
/* 1 if t was recorded on a tape and that tape has been reset since (t is stale). */
int tg__tensor_stale(const tg_tensor *t);
/* During or after a backward pass: 1 if node n ran (or runs) in the tape's latest pass. */
bool tg__node_runs(const tg_tensor *n);
/* tg_tape_observe for a tool whose `user` is its own state: release(user) is called when the
 * tape is freed (tg_tape_unobserve does not call it: the tool frees what it takes back). */
tg_status tg__tape_observe_owned(tg_tape *tape, tg_observer_fn fn, void *user,
                                 void (*release)(void *user));
/* The user pointer of the first observer with this fn, or NULL. */
void *tg__tape_tool_state(const tg_tape *tape, tg_observer_fn fn);
/* 1 if the observer (fn, user) is on the tape. */
bool tg__tape_has_observer(const tg_tape *tape, tg_observer_fn fn, const void *user);
/* Tests: fill each fresh gradient with NaN before the backward that writes it, so that a
 * backward which leaves an element unwritten shows (off by default). */
void tg__tape_poison_fresh(tg_tape *tape, bool on);
/* The tape's training flag (tg_tape_set_training). */
int tg__tape_training(const tg_tape *tape);

/* ---- Helpers for ops ---- */

size_t tg__dtype_size(tg_dtype dtype);
const char *tg__dtype_name(tg_dtype dtype);
/* "[200,2]" into buf; returns buf. */
const char *tg__shape_str(const tg_tensor *t, char *buf, size_t len);
#define TG_SHAPE_STR_LEN 128

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

/* NumPy broadcasting of two tensors, as an odometer over collapsed dimensions: adjacent axes
 * along which neither input changes how it is broadcast merge into one, so [B,M,N] + [N] is two
 * loops and equal shapes one. Strides are in elements, 0 along broadcast axes, so
 * `out[o] = f(a[ia], b[ib])` over the space covers every case, and backward's `da[ia] += ...`
 * sums over the broadcast axes by itself. */
typedef struct tg__bcast {
    int n;                         /* collapsed axes, >= 1 */
    int64_t dim[TG_MAX_RANK];      /* sizes of the collapsed axes */
    int64_t stride_a[TG_MAX_RANK]; /* a's strides along them */
    int64_t stride_b[TG_MAX_RANK];
} tg__bcast;

/* Output shape of broadcasting a with b. TG_OK, or TG_ERR_SHAPE with msg set. */
tg_status tg__bcast_shape(const tg_tensor *a, const tg_tensor *b, tg_tensor *out, char *msg,
                          size_t msg_len);
void tg__bcast_init(tg__bcast *bc, const tg_tensor *a, const tg_tensor *b, const tg_tensor *out);

/* Iterates the broadcast space in row-major order: o (output index), ia, ib (input indices) are
 * int64_t lvalues in scope during body. The last collapsed axis is the inner loop; the others
 * advance as an odometer. */
#define TG_BCAST_FOR(bc, o, ia, ib, ...)                                                           \
    do {                                                                                           \
        const tg__bcast *bc_ = &(bc);                                                              \
        const int last_ = bc_->n - 1;                                                              \
        const int64_t inner_ = bc_->dim[last_], sa_ = bc_->stride_a[last_],                        \
                      sb_ = bc_->stride_b[last_];                                                  \
        int64_t outer_ = 1;                                                                        \
        for (int k_ = 0; k_ < last_; k_++)                                                         \
            outer_ *= bc_->dim[k_];                                                                \
        int64_t idx_[TG_MAX_RANK] = {0};                                                           \
        int64_t base_a_ = 0, base_b_ = 0, o = 0;                                                   \
        for (int64_t r_ = 0; r_ < outer_ && inner_ > 0; r_++) {                                    \
            int64_t ia = base_a_, ib = base_b_;                                                    \
            for (int64_t c_ = 0; c_ < inner_; c_++, o++, ia += sa_, ib += sb_) {                   \
                __VA_ARGS__                                                                        \
            }                                                                                      \
            for (int k_ = last_ - 1; k_ >= 0; k_--) { /* the odometer */                           \
                base_a_ += bc_->stride_a[k_];                                                      \
                base_b_ += bc_->stride_b[k_];                                                      \
                if (++idx_[k_] < bc_->dim[k_])                                                     \
                    break;                                                                         \
                base_a_ -= bc_->stride_a[k_] * bc_->dim[k_];                                       \
                base_b_ -= bc_->stride_b[k_] * bc_->dim[k_];                                       \
                idx_[k_] = 0;                                                                      \
            }                                                                                      \
        }                                                                                          \
    } while (0)

/* Shared shape check for ops with one input and an output of the same shape. */
tg_status tg__shape_same(tg_tensor *y, char *msg, size_t msg_len);
/* The same, for ops along the last axis (softmax, log_softmax): rank >= 1. */
tg_status tg__shape_last_axis(tg_tensor *y, char *msg, size_t msg_len);

/* Reductions along one axis, shared by sum_axis and mean_axis (ops/sum_axis.c). */
typedef struct tg__axis_params {
    int axis; /* as given; normalised to 0..rank-1 by the shape check */
    int keepdims;
} tg__axis_params;
tg_status tg__reduce_axis_shape(tg_tensor *y, char *msg, size_t len);
int tg__reduce_axis_print(const tg_tensor *y, char *buf, size_t len);
int64_t tg__reduce_axis_len(const tg_tensor *y);
void tg__reduce_axis_forward(tg_tensor *y, double factor);
void tg__reduce_axis_backward(const tg_tensor *y, const tg_tensor *dy, tg_tensor *dx,
                              double factor);

/* Ops that take one double (scale, add_scalar). */
typedef struct tg__scalar_params {
    double s;
} tg__scalar_params;
int tg__scalar_print(const tg_tensor *y, char *buf, size_t len);

#endif /* TG_ENGINE_H */
