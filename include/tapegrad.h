/* tapegrad.h -- reverse-mode automatic differentiation on a tape, in C11.
 *
 * A worked example: the 2-4-2 network of the course report (h~ = W_h x + b_h,
 * h = tanh(h~), y~ = W_y h + b_y, loss = cross-entropy(softmax(y~), y)) on a batch X [N,2]:
 *
 *     tg_tape *t = tg_tape_new();
 *     tg_tensor *h    = tg_tanh(t, tg_add(t, tg_matmul(t, X, tg_transpose(t, W_h)), b_h));
 *     tg_tensor *y_   = tg_add(t, tg_matmul(t, h, tg_transpose(t, W_y)), b_y);
 *     tg_tensor *loss = tg_softmax_cross_entropy(t, y_, labels);
 *     if (tg_backward(t, loss) != TG_OK)
 *         fprintf(stderr, "%s\n", tg_tape_errmsg(t));
 *     // tg_tensor_grad(W_h) ... now hold d loss / d W_h ...; tg_tape_reset(t) before the next step
 *     tg_tape_free(t);
 *
 * Every builder call (tg_add, tg_matmul, ...) computes its result at once and records a node on
 * the tape holding its inputs, its output and what its backward needs. tg_backward replays the
 * tape in reverse; a value used by several ops receives the sum of their contributions.
 *
 * Ownership, in one paragraph. Leaf tensors (tg_tensor_new and friends) are the caller's: they
 * live until tg_tensor_free. Tensors returned by builder calls belong to the tape: they stay valid
 * until tg_tape_reset or tg_tape_free, and must not be freed (tg_tensor_free ignores them). A
 * leaf's gradient belongs to the leaf and accumulates across tg_backward calls until
 * tg_tensor_zero_grad. No function keeps a pointer to caller memory past its return unless it says so.
 *
 * Errors. No call aborts on a caller's mistake. A failing builder call returns NULL and the tape
 * keeps the first error (tg_tape_status, tg_tape_errmsg), e.g.
 *     circles.c:42: tg_matmul: inner dimensions differ: [200,2] x [4,2]
 * Later builder calls on a failed tape return NULL without work, and tg_backward returns the
 * error, so a model written as nested builder calls is checked once, at the end. Calls that take
 * no tape (tensor constructors) return NULL or a negative tg_status and leave a message for the
 * calling thread in tg_last_errmsg().
 */
#ifndef TAPEGRAD_H
#define TAPEGRAD_H

#include <stdint.h>
#include <stddef.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

#define TG_MAX_RANK 4 /**< tensors have rank 0 to 4 */

/** Element types, chosen per tensor at run time. */
typedef enum tg_dtype {
    TG_F32 = 0, /**< float */
    TG_F64 = 1, /**< double */
    TG_I32 = 2  /**< int32_t; only for class-index targets (tg_softmax_cross_entropy) */
} tg_dtype;

/** Result codes: TG_OK, or a negative code naming the kind of error. */
typedef enum tg_status {
    TG_OK = 0,
    TG_ERR_NULL = -1,      /**< a NULL argument */
    TG_ERR_SHAPE = -2,     /**< shapes do not fit the op */
    TG_ERR_DTYPE = -3,     /**< element types do not fit the op */
    TG_ERR_VALUE = -4,     /**< a value out of range (class index, axis, rank, size) */
    TG_ERR_NOMEM = -5,     /**< out of memory */
    TG_ERR_IO = -6,        /**< a file could not be opened, read or written */
    TG_ERR_FORMAT = -7,    /**< a file is malformed */
    TG_ERR_NONFINITE = -8, /**< a NaN or an Inf appeared (anomaly mode) */
    TG_ERR_STATE = -9      /**< the call does not fit the object's state */
} tg_status;

typedef struct tg_tape tg_tape;     /**< opaque: a recording of ops, owns its intermediates */
typedef struct tg_tensor tg_tensor; /**< opaque: an n-d array, a leaf or a node of a tape */

/** A short name for a status code ("TG_ERR_SHAPE"). Static string; never NULL. */
const char *tg_status_name(tg_status status);

/** The last error message of a call on this thread that takes no tape (e.g. tg_tensor_new).
 *  Valid until the next such call on this thread; never NULL ("" when none). */
const char *tg_last_errmsg(void);

/** Builds a shape argument pair: TG_SHAPE(200, 2) expands to `2, (const int64_t[]){200, 2}`. */
#define TG_SHAPE(...)                                                                              \
    (int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)), (const int64_t[]) { __VA_ARGS__ }

/* ---- Random numbers --------------------------------------------------------------------------- */

/** The project's PRNG: xoshiro256** (Blackman & Vigna), seeded through splitmix64. Integer output
 *  is identical on every platform; tg_rng_uniform is exact (53 bits / 2^53); tg_rng_normal uses the
 *  Box-Muller transform (log, sqrt, cos from the C library). The struct is public so it can live
 *  on the stack; treat its field as private. */
typedef struct tg_rng {
    uint64_t s[4];
} tg_rng;

void tg_rng_seed(tg_rng *rng, uint64_t seed);   /**< any seed, 0 included */
uint64_t tg_rng_next(tg_rng *rng);              /**< 64 random bits */
double tg_rng_uniform(tg_rng *rng);             /**< uniform in [0, 1) */
double tg_rng_normal(tg_rng *rng);              /**< standard normal */
uint64_t tg_rng_below(tg_rng *rng, uint64_t n); /**< uniform in [0, n), unbiased; 0 if n == 0 */

/* ---- Tensors ---------------------------------------------------------------------------------- */

/** A new leaf of zeros. rank 0..4; shape[i] >= 0 (shape may be NULL when rank is 0).
 *  Returns NULL on bad arguments or no memory (see tg_last_errmsg). Caller frees with tg_tensor_free. */
tg_tensor *tg_tensor_new(tg_dtype dtype, int rank, const int64_t *shape);
/** A new leaf of ones. As tg_tensor_new. */
tg_tensor *tg_tensor_ones(tg_dtype dtype, int rank, const int64_t *shape);
/** A new leaf holding a copy of `data` (numel elements of `dtype`, row-major). As tg_tensor_new. */
tg_tensor *tg_tensor_from(tg_dtype dtype, int rank, const int64_t *shape, const void *data);
/** A new leaf of values uniform in [lo, hi) drawn from `rng`. As tg_tensor_new. */
tg_tensor *tg_tensor_rand(tg_dtype dtype, int rank, const int64_t *shape, double lo, double hi,
                          tg_rng *rng);
/** A new leaf of values normal(mean, std) drawn from `rng`. As tg_tensor_new. */
tg_tensor *tg_tensor_randn(tg_dtype dtype, int rank, const int64_t *shape, double mean, double std,
                           tg_rng *rng);
/** A new leaf with the shape and values of `src` (leaf or tape tensor), converted to `dtype`.
 *  Name and requires-grad are copied; the gradient is not. Caller frees with tg_tensor_free. */
tg_tensor *tg_tensor_clone(const tg_tensor *src, tg_dtype dtype);
/** Copies the values of `src` into `dst` (same shape; dtypes may differ). TG_OK or an error. */
tg_status tg_tensor_copy(tg_tensor *dst, const tg_tensor *src);
/** Frees a leaf and its gradient. NULL, and tensors owned by a tape, are ignored. */
void tg_tensor_free(tg_tensor *tensor);

tg_dtype tg_tensor_dtype(const tg_tensor *tensor);
int tg_tensor_rank(const tg_tensor *tensor);
/** The shape, `rank` entries. Owned by the tensor; valid as long as it is. */
const int64_t *tg_tensor_shape(const tg_tensor *tensor);
/** Size of axis `axis`; negative axes count from the end. 0 for a bad axis. */
int64_t tg_tensor_dim(const tg_tensor *tensor, int axis);
int64_t tg_tensor_numel(const tg_tensor *tensor);
/** The elements, row-major, of the tensor's dtype. Owned by the tensor. Writing to a leaf's data
 *  between steps is how parameters are updated; writing to a tape tensor's data is not supported. */
void *tg_tensor_data(tg_tensor *tensor);
const void *tg_tensor_cdata(const tg_tensor *tensor);
/** Element `index` (flat, row-major) as a double. 0 if out of range. */
double tg_tensor_get(const tg_tensor *tensor, int64_t index);
/** Sets element `index` (flat, row-major). TG_ERR_VALUE if out of range. */
tg_status tg_tensor_set(tg_tensor *tensor, int64_t index, double value);
/** The single value of a one-element tensor (e.g. a loss), as a double; NaN otherwise. */
double tg_tensor_item(const tg_tensor *tensor);

/** The tensor's gradient, a tensor of the same shape and dtype, or NULL if it has none yet.
 *  Owned by `tensor`: a leaf's lives until tg_tensor_free; a tape tensor's until tg_tape_reset. */
tg_tensor *tg_tensor_grad(const tg_tensor *tensor);
/** Marks a leaf as a parameter: tg_backward will accumulate its gradient. Returns TG_ERR_STATE
 *  for a tape tensor (whether it needs a gradient follows from its inputs). */
tg_status tg_tensor_set_requires_grad(tg_tensor *tensor, int requires_grad);
int tg_tensor_requires_grad(const tg_tensor *tensor);
/** Sets the gradient of a leaf to zeros (no-op if it has none). */
void tg_tensor_zero_grad(tg_tensor *tensor);

/** An optional name (e.g. "W_h"), copied; at most 31 bytes are kept. NULL clears it. */
void tg_tensor_set_name(tg_tensor *tensor, const char *name);
/** The name, or "" if none. Owned by the tensor. */
const char *tg_tensor_name(const tg_tensor *tensor);
/** Writes a readable dump (name, shape, values; long tensors elided) to `out`. */
void tg_tensor_print(const tg_tensor *tensor, FILE *out);

/* ---- Introspection of recorded nodes (used by the teaching tools) ---------------------------- */

/** The op's name ("matmul"), or "leaf" for a leaf. Static string. */
const char *tg_tensor_op_name(const tg_tensor *tensor);
/** Number of inputs of a tape tensor's op (0 for a leaf). */
int tg_tensor_n_inputs(const tg_tensor *tensor);
/** Input `i` of a tape tensor's op, or NULL. */
tg_tensor *tg_tensor_input(const tg_tensor *tensor, int i);
/** Position on its tape (0-based), or -1 for a leaf. */
int64_t tg_tensor_tape_index(const tg_tensor *tensor);
/** Where the builder call was written ("circles.c", 42); NULL and 0 for a leaf. */
const char *tg_tensor_src_file(const tg_tensor *tensor);
int tg_tensor_src_line(const tg_tensor *tensor);
/** One sentence saying what the op keeps for backward ("its output y"). Static string. */
const char *tg_tensor_op_saves(const tg_tensor *tensor);

/* ---- The tape --------------------------------------------------------------------------------- */

/** A new, empty tape. NULL if out of memory. Free with tg_tape_free. */
tg_tape *tg_tape_new(void);
/** Frees the tape and every tensor it owns. NULL is ignored. */
void tg_tape_free(tg_tape *tape);
/** Forgets every node and clears the error; keeps the memory for reuse, so a steady training loop
 *  allocates nothing after its first steps. Tensors from before the reset become invalid. */
void tg_tape_reset(tg_tape *tape);
/** TG_OK, or the first error recorded since the last reset. */
tg_status tg_tape_status(const tg_tape *tape);
/** The first error's message ("" if none), naming the caller's file and line, the op and the
 *  shapes. Owned by the tape; valid until the next reset. */
const char *tg_tape_errmsg(const tg_tape *tape);
/** Number of nodes recorded since the last reset. */
int64_t tg_tape_size(const tg_tape *tape);
/** Node `index` (0-based, forward order), or NULL. */
tg_tensor *tg_tape_node(const tg_tape *tape, int64_t index);
/** Bytes of memory the tape holds (arena and node list), for benchmarks. */
size_t tg_tape_bytes(const tg_tape *tape);

/** Reverse-mode pass from a one-element `loss`: seeds d loss / d loss = 1 and replays the tape in
 *  reverse, accumulating into the gradient of every leaf that requires one. The gradients of tape
 *  tensors are recomputed on each call. Returns TG_OK, the tape's first error, or a new error
 *  (a NULL or non-scalar loss, a loss from another tape). */
tg_status tg_backward(tg_tape *tape, tg_tensor *loss);
/** As tg_backward from a tensor of any shape, seeded with `seed` (same shape and dtype). */
tg_status tg_backward_seed(tg_tape *tape, tg_tensor *output, const tg_tensor *seed);

/* ---- Builder calls ----------------------------------------------------------------------------
 * Each computes its output now and records it on the tape. Each is a macro passing the caller's
 * __FILE__ and __LINE__ to a function of the same name with an `_at` suffix, so an error message
 * names the line of the caller's model. Inputs must share a dtype (TG_F32 or TG_F64). Returned
 * tensors belong to the tape. On error: NULL, and the tape keeps the message. */

#define TG_LOC_PARAMS const char *file, int line

/* Elementwise binary ops with NumPy broadcasting: shapes are aligned on the right; each axis must
 * match or be 1 in one of them. Backward sums over the broadcast axes. */
tg_tensor *tg_add_at(tg_tape *t, tg_tensor *a, tg_tensor *b, TG_LOC_PARAMS); /**< y = a + b */
tg_tensor *tg_sub_at(tg_tape *t, tg_tensor *a, tg_tensor *b, TG_LOC_PARAMS); /**< y = a - b */
tg_tensor *tg_mul_at(tg_tape *t, tg_tensor *a, tg_tensor *b, TG_LOC_PARAMS); /**< y = a * b */
tg_tensor *tg_div_at(tg_tape *t, tg_tensor *a, tg_tensor *b, TG_LOC_PARAMS); /**< y = a / b */
tg_tensor *tg_neg_at(tg_tape *t, tg_tensor *x, TG_LOC_PARAMS);               /**< y = -x */
tg_tensor *tg_scale_at(tg_tape *t, tg_tensor *x, double s, TG_LOC_PARAMS);      /**< y = s x */
tg_tensor *tg_add_scalar_at(tg_tape *t, tg_tensor *x, double s, TG_LOC_PARAMS); /**< y = x + s */
/** y = a b for a [M,K], b [K,N]: y [M,N]. */
tg_tensor *tg_matmul_at(tg_tape *t, tg_tensor *a, tg_tensor *b, TG_LOC_PARAMS);
/** y = x^T for a 2-D x. */
tg_tensor *tg_transpose_at(tg_tape *t, tg_tensor *x, TG_LOC_PARAMS);
/** Same elements, new shape (same number of elements); one entry may be -1 (inferred). */
tg_tensor *tg_reshape_at(tg_tape *t, tg_tensor *x, int rank, const int64_t *shape, TG_LOC_PARAMS);
/** y = sum of all elements (rank 0). */
tg_tensor *tg_sum_at(tg_tape *t, tg_tensor *x, TG_LOC_PARAMS);
/** y = mean of all elements (rank 0). */
tg_tensor *tg_mean_at(tg_tape *t, tg_tensor *x, TG_LOC_PARAMS);
/** Sum along `axis` (negative counts from the end); keepdims keeps it as size 1. */
tg_tensor *tg_sum_axis_at(tg_tape *t, tg_tensor *x, int axis, int keepdims, TG_LOC_PARAMS);
/** Mean along `axis`; as tg_sum_axis. */
tg_tensor *tg_mean_axis_at(tg_tape *t, tg_tensor *x, int axis, int keepdims, TG_LOC_PARAMS);
tg_tensor *tg_exp_at(tg_tape *t, tg_tensor *x, TG_LOC_PARAMS);     /**< y = e^x */
tg_tensor *tg_log_at(tg_tape *t, tg_tensor *x, TG_LOC_PARAMS);     /**< y = ln x */
tg_tensor *tg_tanh_at(tg_tape *t, tg_tensor *x, TG_LOC_PARAMS);    /**< y = tanh x */
tg_tensor *tg_sigmoid_at(tg_tape *t, tg_tensor *x, TG_LOC_PARAMS); /**< y = 1 / (1 + e^-x) */
tg_tensor *tg_relu_at(tg_tape *t, tg_tensor *x, TG_LOC_PARAMS);    /**< y = max(x, 0) */
/** y_i = e^(x_i - max) / sum_j e^(x_j - max) along the last axis. */
tg_tensor *tg_softmax_at(tg_tape *t, tg_tensor *x, TG_LOC_PARAMS);
/** y_i = x_i - max - log sum_j e^(x_j - max) along the last axis. */
tg_tensor *tg_log_softmax_at(tg_tape *t, tg_tensor *x, TG_LOC_PARAMS);
/** Mean over the batch of -sum_c target_c log softmax(logits)_c, fused and stable.
 *  logits [N,C]; targets either class indices (TG_I32, shape [N], each in [0,C)) or probability
 *  rows (logits' dtype, shape [N,C]). Output rank 0. */
tg_tensor *tg_softmax_cross_entropy_at(tg_tape *t, tg_tensor *logits, tg_tensor *targets,
                                       TG_LOC_PARAMS);
/** Mean squared error: mean((a - b)^2) over all elements, a and b of one shape. Output rank 0. */
tg_tensor *tg_mse_at(tg_tape *t, tg_tensor *a, tg_tensor *b, TG_LOC_PARAMS);

#define tg_add(t, a, b) tg_add_at((t), (a), (b), __FILE__, __LINE__)
#define tg_sub(t, a, b) tg_sub_at((t), (a), (b), __FILE__, __LINE__)
#define tg_mul(t, a, b) tg_mul_at((t), (a), (b), __FILE__, __LINE__)
#define tg_div(t, a, b) tg_div_at((t), (a), (b), __FILE__, __LINE__)
#define tg_neg(t, x) tg_neg_at((t), (x), __FILE__, __LINE__)
#define tg_scale(t, x, s) tg_scale_at((t), (x), (s), __FILE__, __LINE__)
#define tg_add_scalar(t, x, s) tg_add_scalar_at((t), (x), (s), __FILE__, __LINE__)
#define tg_matmul(t, a, b) tg_matmul_at((t), (a), (b), __FILE__, __LINE__)
#define tg_transpose(t, x) tg_transpose_at((t), (x), __FILE__, __LINE__)
#define tg_reshape(t, x, rank, shape) tg_reshape_at((t), (x), (rank), (shape), __FILE__, __LINE__)
#define tg_sum(t, x) tg_sum_at((t), (x), __FILE__, __LINE__)
#define tg_mean(t, x) tg_mean_at((t), (x), __FILE__, __LINE__)
#define tg_sum_axis(t, x, axis, keepdims)                                                          \
    tg_sum_axis_at((t), (x), (axis), (keepdims), __FILE__, __LINE__)
#define tg_mean_axis(t, x, axis, keepdims)                                                         \
    tg_mean_axis_at((t), (x), (axis), (keepdims), __FILE__, __LINE__)
#define tg_exp(t, x) tg_exp_at((t), (x), __FILE__, __LINE__)
#define tg_log(t, x) tg_log_at((t), (x), __FILE__, __LINE__)
#define tg_tanh(t, x) tg_tanh_at((t), (x), __FILE__, __LINE__)
#define tg_sigmoid(t, x) tg_sigmoid_at((t), (x), __FILE__, __LINE__)
#define tg_relu(t, x) tg_relu_at((t), (x), __FILE__, __LINE__)
#define tg_softmax(t, x) tg_softmax_at((t), (x), __FILE__, __LINE__)
#define tg_log_softmax(t, x) tg_log_softmax_at((t), (x), __FILE__, __LINE__)
#define tg_softmax_cross_entropy(t, logits, targets)                                               \
    tg_softmax_cross_entropy_at((t), (logits), (targets), __FILE__, __LINE__)
#define tg_mse(t, a, b) tg_mse_at((t), (a), (b), __FILE__, __LINE__)

/* ---- Custom ops: your own forward and backward, recorded like any other op --------------------
 * For an op tapegrad lacks, or to check a hand-derived backward with tg_gradcheck. */

#define TG_CUSTOM_MAX_INPUTS 4

typedef struct tg_custom_op {
    const char *name; /**< shown in errors, listings and traces */
    /** Fills `out` (already shaped and allocated, zeros) from the inputs. Return TG_OK or an error. */
    tg_status (*forward)(tg_tensor *out, tg_tensor *const *inputs, int n_inputs, void *user);
    /** Accumulates (+=) into `input_grads[i]`, d loss / d input i, given `out_grad`. An entry is
     *  NULL when that input needs no gradient. */
    void (*backward)(const tg_tensor *out, const tg_tensor *out_grad, tg_tensor *const *inputs,
                     tg_tensor *const *input_grads, int n_inputs, void *user);
} tg_custom_op;

/** Records a custom op with output shape (rank, shape) and the outputs' dtype of inputs[0].
 *  `op` and `user` must stay valid until the tape is reset. */
tg_tensor *tg_custom_at(tg_tape *t, const tg_custom_op *op, void *user, tg_tensor *const *inputs,
                        int n_inputs, int rank, const int64_t *shape, TG_LOC_PARAMS);
#define tg_custom(t, op, user, inputs, n_inputs, rank, shape)                                      \
    tg_custom_at((t), (op), (user), (inputs), (n_inputs), (rank), (shape), __FILE__, __LINE__)

/* ---- Gradient checking (src/gradcheck.c) ------------------------------------------------------ */

/* ---- Teaching: graph, listing, trace (src/teach.c) -------------------------------------------- */

/* ---- Training: initializers, optimizers, batches, layers (src/train.c) ------------------------ */

/* ---- Data: IDX files (src/idx.c) -------------------------------------------------------------- */

/* ---- Checkpoints: safetensors (src/checkpoint.c) ---------------------------------------------- */

/* ---- Threads and kernels (src/gemm.c) --------------------------------------------------------- */

/** Sets how many threads tapegrad's kernels use (matmul, and large elementwise ops), counting
 *  the calling thread: 1 (the default, or TG_NUM_THREADS from the environment) to 256. Results
 *  are bit-identical whatever the count: work is split over rows and columns of the output, never
 *  over a sum. Returns TG_OK, or TG_ERR_VALUE for a count out of range (see tg_last_errmsg).
 *  Call it from one thread, between computations; lowering the count joins the extra workers. */
tg_status tg_set_num_threads(int n);
/** The thread count set by tg_set_num_threads (or TG_NUM_THREADS, or 1). */
int tg_get_num_threads(void);
/** The matmul kernel in use: "avx512", "avx2", "portable" or "openblas". The best one the CPU
 *  runs is chosen at the first call; TG_KERNEL=<name> in the environment picks another if it is
 *  available. Static string; never NULL. */
const char *tg_kernel_name(void);

/* ---- Version ---------------------------------------------------------------------------------- */

#ifdef __cplusplus
}
#endif

#endif /* TAPEGRAD_H */
