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
 *
 * What no call can check: the caller's responsibilities, all in one place. Everything else a
 * caller can get wrong (NULLs, shapes, dtypes, values, stale tape tensors, malformed files) is
 * reported as an error.
 *   1. Pointers must point to live objects: a tensor after tg_tensor_free, a tape after
 *      tg_tape_free, or memory that never was a tensor cannot be told from a valid one.
 *   2. A tensor recorded before tg_tape_reset is refused by its own tape, except when a node
 *      recorded since happens to sit at the same address in the tape's memory (it is then that
 *      node); given to another tape, it cannot be told from a leaf.
 *   3. Arrays passed with a length (tg_tensor_from's data, shapes, tg_idx_dataset_batch's
 *      indices, tg_idx_path's buffer) must hold that many elements.
 *   4. Objects that keep pointers (an optimizer its parameters, a dataset its tensors, a custom
 *      op its tg_custom_op and user data, a traced tape its FILE *) need them alive and unchanged
 *      in shape for as long as they are used.
 *   5. A leaf's values must not change between recording and tg_backward: ops read their inputs
 *      by reference (matmul's operands), so update parameters between steps.
 *   6. One thread at a time per tape; two tapes on two threads must not share a leaf that
 *      requires a gradient (its gradient accumulates unsynchronized); tg_set_num_threads is
 *      called from one thread, between computations.
 *   7. A custom op's callbacks must write only their output (forward) or the gradients they are
 *      handed (backward), accumulating, and keep no pointer to the tensors past the call.
 */
#ifndef TAPEGRAD_H
#define TAPEGRAD_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Marks a declaration as part of the library's interface: the shared library exports exactly
 *  these symbols (everything else is built with hidden visibility). */
#if defined(_WIN32)
#define TG_API
#elif defined(__GNUC__) || defined(__clang__)
#define TG_API __attribute__((visibility("default")))
#else
#define TG_API
#endif

#define TG_MAX_RANK 8 /**< tensors have rank 0 to 8 */

/** Element types, chosen per tensor at run time. */
typedef enum tg_dtype {
    TG_F32 = 0, /**< float */
    TG_F64 = 1, /**< double */
    TG_I32 = 2  /**< int32_t; only for class-index targets (tg_softmax_cross_entropy) */
} tg_dtype;

/** Result codes: TG_OK, or a negative code naming the kind of error. */
typedef enum tg_status {
    TG_OK = 0,             /**< success */
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
TG_API const char *tg_status_name(tg_status status);

/** The last error message of a call on this thread that takes no tape (e.g. tg_tensor_new).
 *  Valid until the next such call on this thread; never NULL ("" when none). */
TG_API const char *tg_last_errmsg(void);

/** Builds a shape argument pair: TG_SHAPE(200, 2) expands to `2, (const int64_t[]){200, 2}`. */
#define TG_SHAPE(...)                                                                              \
    (int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)), (const int64_t[]) { __VA_ARGS__ }

/* ---- Random numbers -------------------------------------------------------------------------- */

/** The project's PRNG: xoshiro256** (Blackman & Vigna), seeded through splitmix64. Integer output
 *  is identical on every platform; tg_rng_uniform is exact (53 bits / 2^53); tg_rng_normal uses the
 *  Box-Muller transform (log, sqrt, cos from the C library). The struct is public so it can live
 *  on the stack; treat its field as private. */
typedef struct tg_rng {
    uint64_t s[4]; /**< the generator's state; set only through tg_rng_seed */
} tg_rng;

/* A NULL rng is never dereferenced: tg_rng_seed does nothing, tg_rng_next and tg_rng_below return
 * 0, tg_rng_uniform and tg_rng_normal return NaN, and each sets tg_last_errmsg(). */
TG_API void tg_rng_seed(tg_rng *rng, uint64_t seed); /**< any seed, 0 included */
TG_API uint64_t tg_rng_next(tg_rng *rng);            /**< 64 random bits */
TG_API double tg_rng_uniform(tg_rng *rng);           /**< uniform in [0, 1) */
TG_API double tg_rng_normal(tg_rng *rng);            /**< standard normal */
TG_API uint64_t tg_rng_below(tg_rng *rng,
                             uint64_t n); /**< uniform in [0, n), unbiased; 0 if n == 0 */

/* ---- Tensors --------------------------------------------------------------------------------- */

/** A new leaf of zeros. rank 0..TG_MAX_RANK (8); shape[i] >= 0 (shape may be NULL when rank is 0).
 *  Returns NULL on bad arguments or no memory (see tg_last_errmsg). Caller frees with tg_tensor_free. */
TG_API tg_tensor *tg_tensor_new(tg_dtype dtype, int rank, const int64_t *shape);
/** A new leaf of ones. As tg_tensor_new. */
TG_API tg_tensor *tg_tensor_ones(tg_dtype dtype, int rank, const int64_t *shape);
/** A new leaf holding a copy of `data` (numel elements of `dtype`, row-major). As tg_tensor_new. */
TG_API tg_tensor *tg_tensor_from(tg_dtype dtype, int rank, const int64_t *shape, const void *data);
/** A new leaf of values uniform in [lo, hi) drawn from `rng`. As tg_tensor_new; also NULL
 *  (TG_ERR_VALUE) unless lo and hi are finite and lo <= hi. */
TG_API tg_tensor *tg_tensor_rand(tg_dtype dtype, int rank, const int64_t *shape, double lo,
                                 double hi, tg_rng *rng);
/** A new leaf of values normal(mean, std) drawn from `rng`. As tg_tensor_new; also NULL
 *  (TG_ERR_VALUE) unless mean and std are finite and std >= 0. */
TG_API tg_tensor *tg_tensor_randn(tg_dtype dtype, int rank, const int64_t *shape, double mean,
                                  double std, tg_rng *rng);
/** A new leaf with the shape and values of `src` (leaf or tape tensor), converted to `dtype`
 *  (to TG_I32: truncated toward zero). Name and requires-grad are copied (requires-grad only to
 *  an f32/f64 clone: an i32 tensor never requires a gradient); the gradient is not. NULL
 *  (TG_ERR_VALUE) if an element does not fit an i32 (NaN, an infinity, beyond int32's range).
 *  Caller frees with tg_tensor_free. */
TG_API tg_tensor *tg_tensor_clone(const tg_tensor *src, tg_dtype dtype);
/** Copies the values of `src` into `dst` (same shape; dtypes may differ). TG_OK or an error;
 *  TG_ERR_VALUE, with nothing written, if dst is TG_I32 and an element of src does not fit. */
TG_API tg_status tg_tensor_copy(tg_tensor *dst, const tg_tensor *src);
/** Frees a leaf and its gradient. NULL, and tensors owned by a tape, are ignored. A tensor that
 *  is not the caller's -- a leaf's gradient (tg_tensor_grad), a tg_dataset's batch -- is not freed
 *  (its owner frees it): the call does nothing but set tg_last_errmsg(). */
TG_API void tg_tensor_free(tg_tensor *tensor);

/** The element type (TG_F32 for a NULL tensor). */
TG_API tg_dtype tg_tensor_dtype(const tg_tensor *tensor);
/** The number of axes, 0 to TG_MAX_RANK (0 for a NULL tensor). */
TG_API int tg_tensor_rank(const tg_tensor *tensor);
/** The shape, `rank` entries. Owned by the tensor; valid as long as it is. */
TG_API const int64_t *tg_tensor_shape(const tg_tensor *tensor);
/** Size of axis `axis`; negative axes count from the end. 0 for a bad axis. */
TG_API int64_t tg_tensor_dim(const tg_tensor *tensor, int axis);
/** The number of elements, the product of the shape (1 for rank 0; 0 for a NULL tensor). */
TG_API int64_t tg_tensor_numel(const tg_tensor *tensor);
/** The elements, row-major, of the tensor's dtype. Owned by the tensor. Writing to a leaf's data
 *  between steps is how parameters are updated; writing to a tape tensor's data is not supported. */
TG_API void *tg_tensor_data(tg_tensor *tensor);
/** As tg_tensor_data, read-only; for leaves and tape tensors alike. NULL for a NULL tensor. */
TG_API const void *tg_tensor_cdata(const tg_tensor *tensor);
/** Element `index` (flat, row-major) as a double. 0 if out of range. */
TG_API double tg_tensor_get(const tg_tensor *tensor, int64_t index);
/** Sets element `index` (flat, row-major). TG_ERR_VALUE if out of range, or if the tensor is
 *  TG_I32 and `value` does not fit (NaN, an infinity, beyond int32's range; the element is kept). */
TG_API tg_status tg_tensor_set(tg_tensor *tensor, int64_t index, double value);
/** The single value of a one-element tensor (e.g. a loss), as a double; NaN otherwise. */
TG_API double tg_tensor_item(const tg_tensor *tensor);

/** The tensor's gradient, a tensor of the same shape and dtype, or NULL if it has none yet.
 *  Owned by `tensor`: a leaf's lives until tg_tensor_free; a tape tensor's until tg_tape_reset.
 *  Never free it yourself (tg_tensor_free refuses it). */
TG_API tg_tensor *tg_tensor_grad(const tg_tensor *tensor);
/** Marks a leaf as a parameter: tg_backward will accumulate its gradient. Returns TG_ERR_STATE
 *  for a tape tensor (whether it needs a gradient follows from its inputs). */
TG_API tg_status tg_tensor_set_requires_grad(tg_tensor *tensor, int requires_grad);
/** 1 if tg_backward computes a gradient for this tensor (a marked leaf, or a tape tensor with such
 *  an input), else 0 (also for NULL). */
TG_API int tg_tensor_requires_grad(const tg_tensor *tensor);
/** Sets the gradient of a leaf to zeros (no-op if it has none). */
TG_API void tg_tensor_zero_grad(tg_tensor *tensor);

/** An optional name (e.g. "W_h"), copied; at most 31 bytes are kept. NULL clears it. */
TG_API void tg_tensor_set_name(tg_tensor *tensor, const char *name);
/** The name, or "" if none. Owned by the tensor. */
TG_API const char *tg_tensor_name(const tg_tensor *tensor);
/** Writes a readable dump (name, shape, values; long tensors elided) to `out`. */
TG_API void tg_tensor_print(const tg_tensor *tensor, FILE *out);

/* ---- Introspection of recorded nodes (used by the teaching tools) ---------------------------- */

/** The op's name ("matmul"), or "leaf" for a leaf. Static string. */
TG_API const char *tg_tensor_op_name(const tg_tensor *tensor);
/** Number of inputs of a tape tensor's op (0 for a leaf). */
TG_API int tg_tensor_n_inputs(const tg_tensor *tensor);
/** Input `i` of a tape tensor's op, or NULL. */
TG_API tg_tensor *tg_tensor_input(const tg_tensor *tensor, int i);
/** Position on its tape (0-based), or -1 for a leaf. */
TG_API int64_t tg_tensor_tape_index(const tg_tensor *tensor);
/** Where the builder call was written ("circles.c", 42); NULL and 0 for a leaf. */
TG_API const char *tg_tensor_src_file(const tg_tensor *tensor);
/** The line of that builder call; 0 for a leaf. */
TG_API int tg_tensor_src_line(const tg_tensor *tensor);
/** One sentence saying what the op keeps for backward ("its output y"). Static string. */
TG_API const char *tg_tensor_op_saves(const tg_tensor *tensor);

/* ---- The tape -------------------------------------------------------------------------------- */

/** A new, empty tape. NULL if out of memory. Free with tg_tape_free. */
TG_API tg_tape *tg_tape_new(void);
/** Frees the tape and every tensor it owns. NULL is ignored. */
TG_API void tg_tape_free(tg_tape *tape);
/** Forgets every node and clears the error; keeps the memory for reuse, so a steady training loop
 *  allocates nothing after its first steps. Tensors from before the reset become invalid. */
TG_API void tg_tape_reset(tg_tape *tape);
/** TG_OK, or the first error recorded since the last reset. */
TG_API tg_status tg_tape_status(const tg_tape *tape);
/** The first error's message ("" if none), naming the caller's file and line, the op and the
 *  shapes. Owned by the tape; valid until the next reset. */
TG_API const char *tg_tape_errmsg(const tg_tape *tape);
/** Number of nodes recorded since the last reset. */
TG_API int64_t tg_tape_size(const tg_tape *tape);
/** Node `index` (0-based, forward order), or NULL. */
TG_API tg_tensor *tg_tape_node(const tg_tape *tape, int64_t index);
/** Bytes of memory the tape holds (arena and node list), for benchmarks. */
TG_API size_t tg_tape_bytes(const tg_tape *tape);

/** Training (1, the default) or evaluation (0) mode of the ops recorded from now on: dropout and
 *  batch normalization read it when they are recorded. Survives tg_tape_reset. TG_OK, or
 *  TG_ERR_NULL for a NULL tape. */
TG_API tg_status tg_tape_set_training(tg_tape *tape, int training);
/** 1 in training mode, 0 in evaluation mode (and for NULL). */
TG_API int tg_tape_training(const tg_tape *tape);

/* ---- Observers of the tape ----------------------------------------------------------------------
 * Tools watch the tape through observers instead of driving it: the chain-rule trace, anomaly
 * mode and the data-parallel gradient buckets are observers. tg_backward alone runs the ops'
 * backwards; an observer sees each step and may stop the pass. */

/** What an observer is told about. */
typedef enum tg_event_kind {
    TG_EVENT_FORWARD = 0,         /**< a node was recorded: `tensor` is it, forward has run */
    TG_EVENT_BACKWARD_BEGIN = 1,  /**< a pass starts from `output`; its gradient holds the seed */
    TG_EVENT_BEFORE_BACKWARD = 2, /**< `tensor`'s backward is about to run (grads: its inputs') */
    TG_EVENT_AFTER_BACKWARD = 3,  /**< `tensor`'s backward has accumulated into `grads` */
    /** the gradient of leaf `tensor` is final for this pass: no node still to run uses it */
    TG_EVENT_GRAD_READY = 4,
    TG_EVENT_BACKWARD_END = 5 /**< the pass from `output` is complete */
} tg_event_kind;

/** One event. Valid during the observer's call only. */
typedef struct tg_event {
    tg_event_kind kind; /**< which */
    tg_tape *tape;      /**< the tape */
    tg_tensor *tensor;  /**< the node or leaf it is about (NULL for BEGIN and END) */
    tg_tensor *output;  /**< the tensor the pass started from (backward events) */
    /** BEFORE_ and AFTER_BACKWARD: `n_grads` = the node's input count entries, the gradient each
     *  input receives in this pass, or NULL where the engine decided it needs none. */
    tg_tensor *const *grads;
    int n_grads; /**< entries of grads */
} tg_event;

/** An observer: returns TG_OK to go on; any other status stops the forward or backward pass
 *  and puts the tape in error with that status (and tg_last_errmsg() as its message unless the
 *  observer set the tape's error itself). */
typedef tg_status (*tg_observer_fn)(const tg_event *event, void *user);

/** Adds an observer (up to 8 per tape; they are called in the order added). Survives
 *  tg_tape_reset. TG_OK, TG_ERR_NULL, TG_ERR_VALUE (the same fn and user twice) or TG_ERR_STATE
 *  (8 already). */
TG_API tg_status tg_tape_observe(tg_tape *tape, tg_observer_fn fn, void *user);
/** Removes the observer added with the same fn and user. TG_OK, TG_ERR_NULL or TG_ERR_VALUE
 *  (not found). */
TG_API tg_status tg_tape_unobserve(tg_tape *tape, tg_observer_fn fn, void *user);

/** Reverse-mode pass from a one-element `loss`: seeds d loss / d loss = 1 and replays the tape in
 *  reverse, accumulating into the gradient of every leaf that requires one. Only the nodes the
 *  loss depends on run, and only inputs that lead to such a leaf receive a gradient (decided
 *  now, from the leaves' current requires_grad: a leaf frozen after recording gets nothing).
 *  The gradients of tape tensors on that path are recomputed on each call. Returns TG_OK, the tape's first error, or a new error
 *  (a NULL or non-scalar loss, a loss from another tape). */
TG_API tg_status tg_backward(tg_tape *tape, tg_tensor *loss);
/** As tg_backward from a tensor of any shape, seeded with `seed` (same shape and dtype). */
TG_API tg_status tg_backward_seed(tg_tape *tape, tg_tensor *output, const tg_tensor *seed);

/* ---- Builder calls ------------------------------------------------------------------------------
 * Each computes its output now and records it on the tape. Each is a macro passing the caller's
 * __FILE__ and __LINE__ to a function of the same name with an `_at` suffix, so an error message
 * names the line of the caller's model. Inputs must share a dtype (TG_F32 or TG_F64). Returned
 * tensors belong to the tape. On error: NULL, and the tape keeps the message. */

/** The caller's location, the last two parameters of every `_at` function. */
#define TG_LOC_PARAMS const char *file, int line

/* Elementwise binary ops with NumPy broadcasting: shapes are aligned on the right; each axis must
 * match or be 1 in one of them. Backward sums over the broadcast axes. */
TG_API tg_tensor *tg_add_at(tg_tape *t, tg_tensor *a, tg_tensor *b,
                            TG_LOC_PARAMS); /**< y = a + b */
TG_API tg_tensor *tg_sub_at(tg_tape *t, tg_tensor *a, tg_tensor *b,
                            TG_LOC_PARAMS); /**< y = a - b */
TG_API tg_tensor *tg_mul_at(tg_tape *t, tg_tensor *a, tg_tensor *b,
                            TG_LOC_PARAMS); /**< y = a * b */
TG_API tg_tensor *tg_div_at(tg_tape *t, tg_tensor *a, tg_tensor *b,
                            TG_LOC_PARAMS);                                       /**< y = a / b */
TG_API tg_tensor *tg_neg_at(tg_tape *t, tg_tensor *x, TG_LOC_PARAMS);             /**< y = -x */
TG_API tg_tensor *tg_scale_at(tg_tape *t, tg_tensor *x, double s, TG_LOC_PARAMS); /**< y = s x */
TG_API tg_tensor *tg_add_scalar_at(tg_tape *t, tg_tensor *x, double s,
                                   TG_LOC_PARAMS); /**< y = x + s */
/** y = a b for a [M,K], b [K,N]: y [M,N]. */
TG_API tg_tensor *tg_matmul_at(tg_tape *t, tg_tensor *a, tg_tensor *b, TG_LOC_PARAMS);
/** y = a b^T for a [M,K], b [N,K]: y [M,N]. A linear layer's x W^T with W stored [out,in],
 *  without materialising W^T (backward: da += dy b, db += dy^T a). */
TG_API tg_tensor *tg_matmul_bt_at(tg_tape *t, tg_tensor *a, tg_tensor *b, TG_LOC_PARAMS);
/** y = x^T for a 2-D x. */
TG_API tg_tensor *tg_transpose_at(tg_tape *t, tg_tensor *x, TG_LOC_PARAMS);
/** Same elements, new shape (same number of elements); one entry may be -1 (inferred). */
TG_API tg_tensor *tg_reshape_at(tg_tape *t, tg_tensor *x, int rank, const int64_t *shape,
                                TG_LOC_PARAMS);
/** y = sum of all elements (rank 0). */
TG_API tg_tensor *tg_sum_at(tg_tape *t, tg_tensor *x, TG_LOC_PARAMS);
/** y = mean of all elements (rank 0). */
TG_API tg_tensor *tg_mean_at(tg_tape *t, tg_tensor *x, TG_LOC_PARAMS);
/** Sum along `axis` (negative counts from the end); keepdims keeps it as size 1. */
TG_API tg_tensor *tg_sum_axis_at(tg_tape *t, tg_tensor *x, int axis, int keepdims, TG_LOC_PARAMS);
/** Mean along `axis`; as tg_sum_axis. */
TG_API tg_tensor *tg_mean_axis_at(tg_tape *t, tg_tensor *x, int axis, int keepdims, TG_LOC_PARAMS);
TG_API tg_tensor *tg_exp_at(tg_tape *t, tg_tensor *x, TG_LOC_PARAMS);     /**< y = e^x */
TG_API tg_tensor *tg_log_at(tg_tape *t, tg_tensor *x, TG_LOC_PARAMS);     /**< y = ln x */
TG_API tg_tensor *tg_tanh_at(tg_tape *t, tg_tensor *x, TG_LOC_PARAMS);    /**< y = tanh x */
TG_API tg_tensor *tg_sigmoid_at(tg_tape *t, tg_tensor *x, TG_LOC_PARAMS); /**< y = 1 / (1 + e^-x) */
TG_API tg_tensor *tg_relu_at(tg_tape *t, tg_tensor *x, TG_LOC_PARAMS);    /**< y = max(x, 0) */
TG_API tg_tensor *tg_abs_at(tg_tape *t, tg_tensor *x, TG_LOC_PARAMS);     /**< y = |x| */
/** y_i = e^(x_i - max) / sum_j e^(x_j - max) along the last axis. */
TG_API tg_tensor *tg_softmax_at(tg_tape *t, tg_tensor *x, TG_LOC_PARAMS);
/** y_i = x_i - max - log sum_j e^(x_j - max) along the last axis. */
TG_API tg_tensor *tg_log_softmax_at(tg_tape *t, tg_tensor *x, TG_LOC_PARAMS);
/** Mean over the batch of -sum_c target_c log softmax(logits)_c, fused and stable.
 *  logits [N,C]; targets either class indices (TG_I32, shape [N], each in [0,C)) or probability
 *  rows (logits' dtype, shape [N,C]); N and C at least 1. Output rank 0. */
TG_API tg_tensor *tg_softmax_cross_entropy_at(tg_tape *t, tg_tensor *logits, tg_tensor *targets,
                                              TG_LOC_PARAMS);
/** Mean squared error: mean((a - b)^2) over all elements, a and b of one shape. Output rank 0. */
TG_API tg_tensor *tg_mse_at(tg_tape *t, tg_tensor *a, tg_tensor *b, TG_LOC_PARAMS);

/** y = a + b, broadcasting; tg_add_at with the caller's file and line. */
#define tg_add(t, a, b) tg_add_at((t), (a), (b), __FILE__, __LINE__)
/** y = a - b, broadcasting; tg_sub_at with the caller's file and line. */
#define tg_sub(t, a, b) tg_sub_at((t), (a), (b), __FILE__, __LINE__)
/** y = a * b, broadcasting; tg_mul_at with the caller's file and line. */
#define tg_mul(t, a, b) tg_mul_at((t), (a), (b), __FILE__, __LINE__)
/** y = a / b, broadcasting; tg_div_at with the caller's file and line. */
#define tg_div(t, a, b) tg_div_at((t), (a), (b), __FILE__, __LINE__)
/** y = -x; tg_neg_at with the caller's file and line. */
#define tg_neg(t, x) tg_neg_at((t), (x), __FILE__, __LINE__)
/** y = s x; tg_scale_at with the caller's file and line. */
#define tg_scale(t, x, s) tg_scale_at((t), (x), (s), __FILE__, __LINE__)
/** y = x + s; tg_add_scalar_at with the caller's file and line. */
#define tg_add_scalar(t, x, s) tg_add_scalar_at((t), (x), (s), __FILE__, __LINE__)
/** y = a b; tg_matmul_at with the caller's file and line. */
#define tg_matmul(t, a, b) tg_matmul_at((t), (a), (b), __FILE__, __LINE__)
/** y = a b^T; tg_matmul_bt_at with the caller's file and line. */
#define tg_matmul_bt(t, a, b) tg_matmul_bt_at((t), (a), (b), __FILE__, __LINE__)
/** y = x^T; tg_transpose_at with the caller's file and line. */
#define tg_transpose(t, x) tg_transpose_at((t), (x), __FILE__, __LINE__)
/** Same elements, new shape; tg_reshape_at with the caller's file and line. The rank and shape
 *  may be given as TG_SHAPE(3, 4). */
#define tg_reshape(t, x, ...) tg_reshape_at((t), (x), __VA_ARGS__, __FILE__, __LINE__)
/** Sum of all elements; tg_sum_at with the caller's file and line. */
#define tg_sum(t, x) tg_sum_at((t), (x), __FILE__, __LINE__)
/** Mean of all elements; tg_mean_at with the caller's file and line. */
#define tg_mean(t, x) tg_mean_at((t), (x), __FILE__, __LINE__)
/** Sum along an axis; tg_sum_axis_at with the caller's file and line. */
#define tg_sum_axis(t, x, axis, keepdims)                                                          \
    tg_sum_axis_at((t), (x), (axis), (keepdims), __FILE__, __LINE__)
/** Mean along an axis; tg_mean_axis_at with the caller's file and line. */
#define tg_mean_axis(t, x, axis, keepdims)                                                         \
    tg_mean_axis_at((t), (x), (axis), (keepdims), __FILE__, __LINE__)
/** y = e^x; tg_exp_at with the caller's file and line. */
#define tg_exp(t, x) tg_exp_at((t), (x), __FILE__, __LINE__)
/** y = ln x; tg_log_at with the caller's file and line. */
#define tg_log(t, x) tg_log_at((t), (x), __FILE__, __LINE__)
/** y = tanh x; tg_tanh_at with the caller's file and line. */
#define tg_tanh(t, x) tg_tanh_at((t), (x), __FILE__, __LINE__)
/** y = 1 / (1 + e^-x); tg_sigmoid_at with the caller's file and line. */
#define tg_sigmoid(t, x) tg_sigmoid_at((t), (x), __FILE__, __LINE__)
/** y = max(x, 0); tg_relu_at with the caller's file and line. */
#define tg_relu(t, x) tg_relu_at((t), (x), __FILE__, __LINE__)
/** y = |x| (gradient sign(x), 0 at 0); tg_abs_at with the caller's file and line. */
#define tg_abs(t, x) tg_abs_at((t), (x), __FILE__, __LINE__)
/** Softmax along the last axis; tg_softmax_at with the caller's file and line. */
#define tg_softmax(t, x) tg_softmax_at((t), (x), __FILE__, __LINE__)
/** Log-softmax along the last axis; tg_log_softmax_at with the caller's file and line. */
#define tg_log_softmax(t, x) tg_log_softmax_at((t), (x), __FILE__, __LINE__)
/** Fused softmax cross-entropy; tg_softmax_cross_entropy_at with the caller's file and line. */
#define tg_softmax_cross_entropy(t, logits, targets)                                               \
    tg_softmax_cross_entropy_at((t), (logits), (targets), __FILE__, __LINE__)
/** Mean squared error; tg_mse_at with the caller's file and line. */
#define tg_mse(t, a, b) tg_mse_at((t), (a), (b), __FILE__, __LINE__)

/* ---- Builder calls: activations, powers, extrema and axis reductions (issues 14, 15) ---------
 * PyTorch's conventions, including at kinks and ties, so numbers port; each op's file in ops/
 * states its derivative and its edge cases. */

/** y = x where x > 0, negative_slope * x elsewhere (PyTorch's default slope: 0.01). */
TG_API tg_tensor *tg_leaky_relu_at(tg_tape *t, tg_tensor *x, double negative_slope, TG_LOC_PARAMS);
/** y = x Phi(x): approximate 0 is the exact erf form (PyTorch's approximate='none'), 1 the tanh
 *  form 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) (approximate='tanh'). */
TG_API tg_tensor *tg_gelu_at(tg_tape *t, tg_tensor *x, int approximate, TG_LOC_PARAMS);
/** y = x sigmoid(x) (also called swish). */
TG_API tg_tensor *tg_silu_at(tg_tape *t, tg_tensor *x, TG_LOC_PARAMS);
/** y = log(1 + e^(beta x)) / beta, and y = x where beta x > threshold (PyTorch: 1 and 20). */
TG_API tg_tensor *tg_softplus_at(tg_tape *t, tg_tensor *x, double beta, double threshold,
                                 TG_LOC_PARAMS);
/** y = x where x > 0, alpha (e^x - 1) elsewhere (PyTorch's default alpha: 1). */
TG_API tg_tensor *tg_elu_at(tg_tape *t, tg_tensor *x, double alpha, TG_LOC_PARAMS);
/** y = sqrt(x). */
TG_API tg_tensor *tg_sqrt_at(tg_tape *t, tg_tensor *x, TG_LOC_PARAMS);
/** y = x^p for a scalar p. */
TG_API tg_tensor *tg_pow_scalar_at(tg_tape *t, tg_tensor *x, double p, TG_LOC_PARAMS);
/** y = a^b elementwise, broadcasting; gradients for both a and b (b's: a^b log a). */
TG_API tg_tensor *tg_pow_at(tg_tape *t, tg_tensor *a, tg_tensor *b, TG_LOC_PARAMS);
/** y = min(max(x, min), max); -INFINITY / INFINITY for no bound. Gradient 1 for min <= x <= max. */
TG_API tg_tensor *tg_clamp_at(tg_tape *t, tg_tensor *x, double min, double max, TG_LOC_PARAMS);
/** y = max(a, b) elementwise, broadcasting; a tie splits the gradient half and half. */
TG_API tg_tensor *tg_maximum_at(tg_tape *t, tg_tensor *a, tg_tensor *b, TG_LOC_PARAMS);
/** y = min(a, b) elementwise, broadcasting; a tie splits the gradient half and half. */
TG_API tg_tensor *tg_minimum_at(tg_tape *t, tg_tensor *a, tg_tensor *b, TG_LOC_PARAMS);
/** Axes start_dim..end_dim merged into one, as torch.flatten (negative axes count from the end). */
TG_API tg_tensor *tg_flatten_at(tg_tape *t, tg_tensor *x, int start_dim, int end_dim,
                                TG_LOC_PARAMS);
/** y = max along `axis`; the gradient goes to the first maximum (PyTorch's max(dim) index). */
TG_API tg_tensor *tg_max_axis_at(tg_tape *t, tg_tensor *x, int axis, int keepdims, TG_LOC_PARAMS);
/** y = min along `axis`; the gradient goes to the first minimum. */
TG_API tg_tensor *tg_min_axis_at(tg_tape *t, tg_tensor *x, int axis, int keepdims, TG_LOC_PARAMS);
/** y = log sum e^x along `axis`, computed stably. */
TG_API tg_tensor *tg_logsumexp_at(tg_tape *t, tg_tensor *x, int axis, int keepdims, TG_LOC_PARAMS);
/** y = sum (x - mean)^2 / (n - correction) along `axis` (correction 0 biased, 1 unbiased). */
TG_API tg_tensor *tg_var_at(tg_tape *t, tg_tensor *x, int axis, double correction, int keepdims,
                            TG_LOC_PARAMS);
/** y = sqrt(var(x)) along `axis`, as tg_var; the gradient is 0 where y = 0 (as PyTorch). */
TG_API tg_tensor *tg_std_at(tg_tape *t, tg_tensor *x, int axis, double correction, int keepdims,
                            TG_LOC_PARAMS);
/** y = the index (TG_I32) of the first maximum along `axis`; no gradient. */
TG_API tg_tensor *tg_argmax_at(tg_tape *t, tg_tensor *x, int axis, int keepdims, TG_LOC_PARAMS);

/** Leaky ReLU; tg_leaky_relu_at with the caller's file and line. */
#define tg_leaky_relu(t, x, negative_slope)                                                        \
    tg_leaky_relu_at((t), (x), (negative_slope), __FILE__, __LINE__)
/** GELU (approximate 0: erf, 1: tanh); tg_gelu_at with the caller's file and line. */
#define tg_gelu(t, x, approximate) tg_gelu_at((t), (x), (approximate), __FILE__, __LINE__)
/** y = x sigmoid(x); tg_silu_at with the caller's file and line. */
#define tg_silu(t, x) tg_silu_at((t), (x), __FILE__, __LINE__)
/** Softplus; tg_softplus_at with the caller's file and line. */
#define tg_softplus(t, x, beta, threshold)                                                         \
    tg_softplus_at((t), (x), (beta), (threshold), __FILE__, __LINE__)
/** ELU; tg_elu_at with the caller's file and line. */
#define tg_elu(t, x, alpha) tg_elu_at((t), (x), (alpha), __FILE__, __LINE__)
/** y = sqrt(x); tg_sqrt_at with the caller's file and line. */
#define tg_sqrt(t, x) tg_sqrt_at((t), (x), __FILE__, __LINE__)
/** y = x^p; tg_pow_scalar_at with the caller's file and line. */
#define tg_pow_scalar(t, x, p) tg_pow_scalar_at((t), (x), (p), __FILE__, __LINE__)
/** y = a^b, broadcasting; tg_pow_at with the caller's file and line. */
#define tg_pow(t, a, b) tg_pow_at((t), (a), (b), __FILE__, __LINE__)
/** y = min(max(x, min), max); tg_clamp_at with the caller's file and line. */
#define tg_clamp(t, x, min, max) tg_clamp_at((t), (x), (min), (max), __FILE__, __LINE__)
/** y = max(a, b), broadcasting; tg_maximum_at with the caller's file and line. */
#define tg_maximum(t, a, b) tg_maximum_at((t), (a), (b), __FILE__, __LINE__)
/** y = min(a, b), broadcasting; tg_minimum_at with the caller's file and line. */
#define tg_minimum(t, a, b) tg_minimum_at((t), (a), (b), __FILE__, __LINE__)
/** torch.flatten; tg_flatten_at with the caller's file and line. */
#define tg_flatten(t, x, start_dim, end_dim)                                                       \
    tg_flatten_at((t), (x), (start_dim), (end_dim), __FILE__, __LINE__)
/** Max along an axis; tg_max_axis_at with the caller's file and line. */
#define tg_max_axis(t, x, axis, keepdims)                                                          \
    tg_max_axis_at((t), (x), (axis), (keepdims), __FILE__, __LINE__)
/** Min along an axis; tg_min_axis_at with the caller's file and line. */
#define tg_min_axis(t, x, axis, keepdims)                                                          \
    tg_min_axis_at((t), (x), (axis), (keepdims), __FILE__, __LINE__)
/** Log-sum-exp along an axis; tg_logsumexp_at with the caller's file and line. */
#define tg_logsumexp(t, x, axis, keepdims)                                                         \
    tg_logsumexp_at((t), (x), (axis), (keepdims), __FILE__, __LINE__)
/** Variance along an axis; tg_var_at with the caller's file and line. */
#define tg_var(t, x, axis, correction, keepdims)                                                   \
    tg_var_at((t), (x), (axis), (correction), (keepdims), __FILE__, __LINE__)
/** Standard deviation along an axis; tg_std_at with the caller's file and line. */
#define tg_std(t, x, axis, correction, keepdims)                                                   \
    tg_std_at((t), (x), (axis), (correction), (keepdims), __FILE__, __LINE__)
/** Index of the maximum along an axis (TG_I32); tg_argmax_at with the caller's file and line. */
#define tg_argmax(t, x, axis, keepdims)                                                            \
    tg_argmax_at((t), (x), (axis), (keepdims), __FILE__, __LINE__)
/* ---- end of the activations, powers, extrema and axis reductions ---- */

/* ---- Sequence models (issue 15): embeddings, batched matmul, shape ops, layer norm, masks ----- */

/** y[p, :] = table[idx[p], :] for table [V,D] and TG_I32 indices idx of any shape S: y [S..., D]
 *  (torch.nn.functional.embedding). An index outside 0..V-1 is an error naming it and its
 *  position. Backward adds repeated indices in a fixed order (bit-identical for any threads). */
TG_API tg_tensor *tg_embedding_at(tg_tape *t, tg_tensor *table, tg_tensor *idx, TG_LOC_PARAMS);
/** y = op(a) op(b) per batch, op(x) = x^T when its flag is set: a [..,M,K] (trans_a: [..,K,M]),
 *  b [..,K,N] (trans_b: [..,N,K]), batch dims broadcast as NumPy's (torch.matmul for rank >= 2),
 *  y [..,M,N]. trans_b gives q k^T without materialising k^T. */
TG_API tg_tensor *tg_matmul_batched_at(tg_tape *t, tg_tensor *a, tg_tensor *b, int trans_a,
                                       int trans_b, TG_LOC_PARAMS);
/** y = x with its axes reordered: y.shape[i] = x.shape[axes[i]]; n_axes = rank (torch.permute). */
TG_API tg_tensor *tg_permute_at(tg_tape *t, tg_tensor *x, int n_axes, const int *axes,
                                TG_LOC_PARAMS);
/** y = x with axes axis0 and axis1 swapped (torch.transpose); recorded as a permute node. */
TG_API tg_tensor *tg_transpose_axes_at(tg_tape *t, tg_tensor *x, int axis0, int axis1,
                                       TG_LOC_PARAMS);
/** y = inputs[0..n) joined along `axis`; shapes agree except along it (torch.cat), n 1..64. */
TG_API tg_tensor *tg_concat_at(tg_tape *t, tg_tensor *const *inputs, int n, int axis,
                               TG_LOC_PARAMS);
/** y = inputs[0..n) (one shape) stacked along a new axis at `axis` in 0..rank (torch.stack). */
TG_API tg_tensor *tg_stack_at(tg_tape *t, tg_tensor *const *inputs, int n, int axis, TG_LOC_PARAMS);
/** y = x[.., start, start+step, .., start+(length-1)*step, ..] along `axis`; step >= 1, a
 *  negative start counts from the end. */
TG_API tg_tensor *tg_slice_at(tg_tape *t, tg_tensor *x, int axis, int64_t start, int64_t length,
                              int64_t step, TG_LOC_PARAMS);
/** y = (x - mean) / sqrt(var + eps) * weight + bias over the last normalized_ndim axes, biased
 *  variance (torch.nn.functional.layer_norm); weight and bias (that shape) may each be NULL. */
TG_API tg_tensor *tg_layer_norm_at(tg_tape *t, tg_tensor *x, tg_tensor *weight, tg_tensor *bias,
                                   int normalized_ndim, double eps, TG_LOC_PARAMS);
/** Softmax along the last axis of x [.., T, S] with position j > i of row i excluded: exactly 0
 *  there, in value and gradient (causal self-attention). */
TG_API tg_tensor *tg_softmax_causal_at(tg_tape *t, tg_tensor *x, TG_LOC_PARAMS);
/** y = mask != 0 ? value : x; mask (TG_I32 or x's dtype) broadcasts to x's shape; value may be
 *  -INFINITY. No gradient flows to the filled positions (nor to the mask). */
TG_API tg_tensor *tg_masked_fill_at(tg_tape *t, tg_tensor *x, tg_tensor *mask, double value,
                                    TG_LOC_PARAMS);

/** Embedding lookup; tg_embedding_at with the caller's file and line. */
#define tg_embedding(t, table, idx) tg_embedding_at((t), (table), (idx), __FILE__, __LINE__)
/** Batched matmul with optional transposes; tg_matmul_batched_at with the caller's location. */
#define tg_matmul_batched(t, a, b, trans_a, trans_b)                                               \
    tg_matmul_batched_at((t), (a), (b), (trans_a), (trans_b), __FILE__, __LINE__)
/** Batched matmul without transposes (torch.matmul for rank >= 2). */
#define tg_bmm(t, a, b) tg_matmul_batched_at((t), (a), (b), 0, 0, __FILE__, __LINE__)
/** Axes reordered; tg_permute_at with the caller's file and line. The axes may be a compound
 *  literal: tg_permute(t, x, 4, (int[]){0, 2, 1, 3}). */
#define tg_permute(t, x, ...) tg_permute_at((t), (x), __VA_ARGS__, __FILE__, __LINE__)
/** Two axes swapped; tg_transpose_axes_at with the caller's file and line. */
#define tg_transpose_axes(t, x, axis0, axis1)                                                      \
    tg_transpose_axes_at((t), (x), (axis0), (axis1), __FILE__, __LINE__)
/** Concatenation; tg_concat_at with the caller's file and line. The inputs may be a compound
 *  literal: tg_concat(t, (tg_tensor *[]){a, b}, 2, axis). */
#define tg_concat(t, ...) tg_concat_at((t), __VA_ARGS__, __FILE__, __LINE__)
/** Stacking; tg_stack_at with the caller's file and line (inputs as for tg_concat). */
#define tg_stack(t, ...) tg_stack_at((t), __VA_ARGS__, __FILE__, __LINE__)
/** Strided slice; tg_slice_at with the caller's file and line. */
#define tg_slice(t, x, axis, start, length, step)                                                  \
    tg_slice_at((t), (x), (axis), (start), (length), (step), __FILE__, __LINE__)
/** Layer normalization; tg_layer_norm_at with the caller's file and line. */
#define tg_layer_norm(t, x, weight, bias, normalized_ndim, eps)                                    \
    tg_layer_norm_at((t), (x), (weight), (bias), (normalized_ndim), (eps), __FILE__, __LINE__)
/** Causal softmax; tg_softmax_causal_at with the caller's file and line. */
#define tg_softmax_causal(t, x) tg_softmax_causal_at((t), (x), __FILE__, __LINE__)
/** Masked fill; tg_masked_fill_at with the caller's file and line. */
#define tg_masked_fill(t, x, mask, value)                                                          \
    tg_masked_fill_at((t), (x), (mask), (value), __FILE__, __LINE__)
/* ---- end of the sequence-model ops (issue 15) ---- */

/* ---- Builder calls: convolution, pooling, batch norm, dropout (issue 14) ---------------------
 * NCHW layout and PyTorch's conventions (output sizes, tie rules, running statistics), so numbers
 * port; each op's file in ops/ states its derivative. */

/** Options of tg_conv2d; index 0 is the height axis, 1 the width axis. NULL opts, or 0 in a
 *  field: stride 1, padding 0, dilation 1, groups 1. */
typedef struct tg_conv2d_opts {
    int64_t stride[2];   /**< step of the window per axis; 0 means 1 */
    int64_t padding[2];  /**< zeros added on both sides per axis; default 0 */
    int64_t dilation[2]; /**< spacing of the kernel's taps per axis; 0 means 1 */
    int64_t groups;      /**< C and K split into this many groups (C for depthwise); 0 means 1 */
} tg_conv2d_opts;

/** y[n,k,i,j] = b[k] + sum_{c,r,s} w[k,c,r,s] x[n, g C/G + c, i sh - ph + r dh, j sw - pw + s dw]
 *  (cross-correlation, G = groups, g the group of k, zero padding). x [N,C,H,W], w [K,C/G,R,S],
 *  b [K] or NULL (no bias), y [N,K,OH,OW], OH = floor((H + 2 ph - dh (R-1) - 1) / sh) + 1, OW alike. */
TG_API tg_tensor *tg_conv2d_at(tg_tape *t, tg_tensor *x, tg_tensor *w, tg_tensor *b,
                               const tg_conv2d_opts *opts, TG_LOC_PARAMS);

/** Options of tg_max_pool2d and tg_avg_pool2d (index 0: height, 1: width). stride 0: = kernel;
 *  padding at most half the kernel; count_include_pad is read by avg_pool2d only. */
typedef struct tg_pool2d_opts {
    int64_t kernel[2];     /**< window size per axis (height, width) */
    int64_t stride[2];     /**< step of the window per axis; 0 means the kernel's size */
    int64_t padding[2];    /**< padding on both sides per axis (max: -inf; avg: see below) */
    int count_include_pad; /**< avg_pool2d: 1 divides by the whole window, padding included */
} tg_pool2d_opts;

/** y[n,c,i,j] = max of x over the window (padding as -inf); the gradient goes to the first maximum
 *  in scan order. x [N,C,H,W], y [N,C,OH,OW], OH = floor((H + 2 ph - kh) / sh) + 1, OW alike. */
TG_API tg_tensor *tg_max_pool2d_at(tg_tape *t, tg_tensor *x, const tg_pool2d_opts *opts,
                                   TG_LOC_PARAMS);
/** y[n,c,i,j] = mean of x over the window: divided by kh kw with count_include_pad (padding as
 *  zeros), by the number of image pixels in the window without. Shapes as tg_max_pool2d. */
TG_API tg_tensor *tg_avg_pool2d_at(tg_tape *t, tg_tensor *x, const tg_pool2d_opts *opts,
                                   TG_LOC_PARAMS);

/** y = (x - mean) / sqrt(var + eps) * weight[c] + bias[c], per channel c over N (and H, W).
 *  x [N,C,H,W] or [N,F]; weight, bias [C] or NULL (1 and 0); running_mean, running_var [C] leaves
 *  (may be NULL: no running statistics, as track_running_stats=False). Training mode
 *  (tg_tape_training(t)): normalizes with the batch's mean and biased variance and updates
 *  running_mean/var in place: r = (1 - momentum) r + momentum * batch stat, the variance unbiased
 *  (PyTorch). Evaluation mode: uses the running statistics (required then). */
TG_API tg_tensor *tg_batch_norm_at(tg_tape *t, tg_tensor *x, tg_tensor *weight, tg_tensor *bias,
                                   tg_tensor *running_mean, tg_tensor *running_var, double momentum,
                                   double eps, TG_LOC_PARAMS);

/** y = relu(batch_norm(x, ...)) as one op, with tg_batch_norm_at's arguments and modes: the values
 *  and gradients of tg_relu(t, tg_batch_norm(...)) bit for bit, with one pass less over memory
 *  each way (relu's output is formed in batch norm's pass; its backward, a chunk at a time in
 *  batch norm's). The conv - batch norm - relu of a CNN; the graph shows one node. */
TG_API tg_tensor *tg_batch_norm_relu_at(tg_tape *t, tg_tensor *x, tg_tensor *weight,
                                        tg_tensor *bias, tg_tensor *running_mean,
                                        tg_tensor *running_var, double momentum, double eps,
                                        TG_LOC_PARAMS);

/** y = max_pool2d(relu(batch_norm(x, ...)), pool) as one op: tg_batch_norm_at's arguments and
 *  modes, then tg_max_pool2d_at's window (pool: kernel, stride, padding; NULL is an error). The
 *  values and gradients of tg_max_pool2d(t, tg_batch_norm_relu(...), pool) bit for bit, without
 *  storing the relu's output: each image's plane of it is formed in a small buffer and pooled
 *  there, and its gradient likewise. The conv - batch norm - relu - pool block of a CNN; x
 *  [N,C,H,W], y [N,C,OH,OW]; the graph shows one node. */
TG_API tg_tensor *tg_batch_norm_relu_max_pool2d_at(tg_tape *t, tg_tensor *x, tg_tensor *weight,
                                                   tg_tensor *bias, tg_tensor *running_mean,
                                                   tg_tensor *running_var, double momentum,
                                                   double eps, const tg_pool2d_opts *pool,
                                                   TG_LOC_PARAMS);

/** y = x * m / (1 - p), m_i ~ Bernoulli(1 - p) (inverted dropout): the mask is drawn from rng (the
 *  caller's, seeded) and is what backward saves; identity in evaluation mode; p in [0, 1).
 *  Each call in training mode takes one tg_rng_next from rng as a key k; element i (row-major)
 *  is kept when (z_i >> 11) 2^-53 >= p, z_i the i-th output of SplitMix64 seeded with k, so the
 *  mask is the same for any thread count. */
TG_API tg_tensor *tg_dropout_at(tg_tape *t, tg_tensor *x, double p, tg_rng *rng, TG_LOC_PARAMS);

/* The opts argument of these macros may be a compound literal with commas in it:
 * tg_max_pool2d(t, x, &(tg_pool2d_opts){.kernel = {2, 2}}). */
/** 2-D convolution tg_conv2d(t, x, w, b, opts); tg_conv2d_at with the caller's file and line. */
#define tg_conv2d(t, x, w, b, ...) tg_conv2d_at((t), (x), (w), (b), __VA_ARGS__, __FILE__, __LINE__)
/** 2-D max pooling tg_max_pool2d(t, x, opts); tg_max_pool2d_at with the caller's file and line. */
#define tg_max_pool2d(t, x, ...) tg_max_pool2d_at((t), (x), __VA_ARGS__, __FILE__, __LINE__)
/** 2-D average pooling tg_avg_pool2d(t, x, opts); tg_avg_pool2d_at with the caller's file and
 *  line. */
#define tg_avg_pool2d(t, x, ...) tg_avg_pool2d_at((t), (x), __VA_ARGS__, __FILE__, __LINE__)
/** Batch normalization; tg_batch_norm_at with the caller's file and line. */
#define tg_batch_norm(t, x, weight, bias, running_mean, running_var, momentum, eps)                \
    tg_batch_norm_at((t), (x), (weight), (bias), (running_mean), (running_var), (momentum), (eps), \
                     __FILE__, __LINE__)
/** Batch normalization then relu, fused; tg_batch_norm_relu_at with the caller's file and line. */
#define tg_batch_norm_relu(t, x, weight, bias, running_mean, running_var, momentum, eps)           \
    tg_batch_norm_relu_at((t), (x), (weight), (bias), (running_mean), (running_var), (momentum),   \
                          (eps), __FILE__, __LINE__)
/** Batch normalization, relu and max pooling, fused; tg_batch_norm_relu_max_pool2d_at with the
 *  caller's file and line (pool may be a compound literal, as for tg_max_pool2d). */
#define tg_batch_norm_relu_max_pool2d(t, x, weight, bias, running_mean, running_var, momentum,     \
                                      eps, ...)                                                    \
    tg_batch_norm_relu_max_pool2d_at((t), (x), (weight), (bias), (running_mean), (running_var),    \
                                     (momentum), (eps), __VA_ARGS__, __FILE__, __LINE__)
/** Inverted dropout; tg_dropout_at with the caller's file and line. */
#define tg_dropout(t, x, p, rng) tg_dropout_at((t), (x), (p), (rng), __FILE__, __LINE__)
/* ---- end of convolution, pooling, batch norm, dropout ---- */

/* ---- Custom ops: your own forward and backward, recorded like any other op ----------------------
 * For an op tapegrad lacks, or to check a hand-derived backward with tg_gradcheck. */

/** The most inputs a custom op may take. */
#define TG_CUSTOM_MAX_INPUTS 64

/** A custom op: a name and a forward and backward callback. Owned by the caller, who keeps it
 *  valid while any tape holds a node recorded with it. */
typedef struct tg_custom_op {
    const char *name; /**< shown in errors, listings and traces */
    /** Fills `out` (already shaped and allocated, zeros) from the inputs. Return TG_OK or an error. */
    tg_status (*forward)(tg_tensor *out, tg_tensor *const *inputs, int n_inputs, void *user);
    /** Accumulates (+=) into `input_grads[i]`, d loss / d input i, given `out_grad`. An entry is
     *  NULL exactly when the engine decided that input needs no gradient in this pass (data, an
     *  integer tensor, a frozen leaf, or nothing upstream of it requires one). Called only when
     *  the node is on the path from the output tg_backward started at. */
    void (*backward)(const tg_tensor *out, const tg_tensor *out_grad, tg_tensor *const *inputs,
                     tg_tensor *const *input_grads, int n_inputs, void *user);
} tg_custom_op;

/** Records a custom op with output shape (rank, shape) and the outputs' dtype of inputs[0].
 *  `op` and `user` must stay valid until the tape is reset. */
TG_API tg_tensor *tg_custom_at(tg_tape *t, const tg_custom_op *op, void *user,
                               tg_tensor *const *inputs, int n_inputs, int rank,
                               const int64_t *shape, TG_LOC_PARAMS);
/** Records a custom op; tg_custom_at with the caller's file and line. The output rank and shape
 *  may be given as TG_SHAPE(3, 4). */
#define tg_custom(t, op, user, inputs, n_inputs, ...)                                              \
    tg_custom_at((t), (op), (user), (inputs), (n_inputs), __VA_ARGS__, __FILE__, __LINE__)

/* ---- Gradient checking (src/tools/gradcheck.c) ----------------------------------------------- */

/* Checks a gradient element by element: autodiff against central finite differences, or a
 * gradient you derived yourself (e.g. your C code for the report's dL/dW_y) against autodiff, with
 * finite differences as the referee. The check always runs in float64: in float32 the rounding
 * error of a finite difference (about 6e-8 / eps) swamps any useful tolerance.
 *
 *     static tg_tensor *loss_fn(tg_tape *t, tg_tensor *const *in, int n, tg_dtype dt, void *u) {
 *         return tg_softmax_cross_entropy(t, tg_matmul(t, in[0], in[1]), in[2]);
 *     }
 *     tg_gradcheck_report *r = tg_gradcheck(loss_fn, inputs, 3, NULL, NULL);
 *     if (!r) fprintf(stderr, "%s\n", tg_last_errmsg());
 *     else { tg_gradcheck_print(r, stdout); tg_gradcheck_report_free(r); }
 */

/** Builds a one-element tensor (the loss) from `inputs` on `tape`, in the dtype `dtype` (always
 *  TG_F64 under tg_gradcheck: the inputs it passes are float64 copies of the caller's). Constants
 *  the loss needs (data, targets) should be passed as inputs that do not require a gradient.
 *  Returns the loss (a tensor of `tape`), or NULL after a failed builder call. Called many times
 *  (twice per checked element, plus a few); it must compute the same function every time. */
typedef tg_tensor *(*tg_gradcheck_fn)(tg_tape *tape, tg_tensor *const *inputs, int n_inputs,
                                      tg_dtype dtype, void *user);

/** Settings of a check. Start from tg_gradcheck_defaults() and change what you need. */
typedef struct tg_gradcheck_opts {
    double eps;  /**< finite-difference step; default 1e-6 */
    double atol; /**< absolute tolerance; default 1e-5 */
    double rtol; /**< relative tolerance; default 1e-3. An element agrees when
                      |value - reference| <= atol + rtol * |reference| */
    /** The dtype you train in. TG_F32 is accepted, but the check still runs in float64 and the
     *  report says so (tg_gradcheck_report.note). Default TG_F64. */
    tg_dtype dtype;
    int max_rows; /**< rows tg_gradcheck_print shows per list before eliding; default 10 */
} tg_gradcheck_opts;

/** The defaults: eps 1e-6, atol 1e-5, rtol 1e-3 (as PyTorch's gradcheck), dtype TG_F64,
 *  max_rows 10. */
TG_API tg_gradcheck_opts tg_gradcheck_defaults(void);

/** What one element turned out to be. */
typedef enum tg_gradcheck_status {
    TG_GC_OK = 0,       /**< every value agrees within tolerance */
    TG_GC_MISMATCH = 1, /**< a comparison failed; see tg_gradcheck_element.disagree */
    /** The one-sided differences (f(x+eps)-f(x))/eps and (f(x)-f(x-eps))/eps disagree by more than
     *  curvature explains: a kink (e.g. relu at 0) lies within eps, so finite differences cannot
     *  judge this element. Reported, never counted as a pass or a failure. */
    TG_GC_KINK = 2
} tg_gradcheck_status;

#define TG_GC_YOURS_VS_AUTODIFF 1u /**< disagree bit: your gradient differs from autodiff */
#define TG_GC_AUTODIFF_VS_FD 2u    /**< disagree bit: autodiff differs from finite differences */

/** One element of a checked tensor. */
typedef struct tg_gradcheck_element {
    int64_t index;              /**< flat, row-major */
    tg_gradcheck_status status; /**< OK, MISMATCH or KINK */
    unsigned disagree;          /**< TG_GC_YOURS_VS_AUTODIFF | TG_GC_AUTODIFF_VS_FD bits */
    double yours;               /**< your gradient; NaN when you gave none for this tensor */
    double autodiff;            /**< tg_backward's gradient */
    double fd;                  /**< central difference (f(x+eps) - f(x-eps)) / 2eps */
    double fd_forward;          /**< (f(x+eps) - f(x)) / eps */
    double fd_backward;         /**< (f(x) - f(x-eps)) / eps */
    /** |value - reference| of the main comparison: yours vs autodiff when you gave a gradient,
     *  autodiff vs finite difference otherwise. */
    double abs_err;
    double
        rel_err; /**< abs_err / |reference| (0 when both are 0, inf when only the reference is) */
} tg_gradcheck_element;

/** The verdict on one input that requires a gradient. */
typedef struct tg_gradcheck_tensor {
    char name[32];        /**< the input's name, or "input <i>" */
    int input;            /**< its position in the inputs array */
    int rank;             /**< its rank */
    const int64_t *shape; /**< its shape, `rank` entries; owned by the report */
    int64_t numel;        /**< its number of elements */
    int has_yours;        /**< 1 if you supplied a gradient for it */
    int passed;           /**< 1 if no element mismatches (kinks do not count) */
    int64_t n_ok;         /**< elements that agree */
    int64_t n_mismatch;   /**< elements that do not */
    int64_t n_kink;       /**< elements at a kink, not judged */
    double max_abs_err;   /**< largest abs_err over judged (non-kink) elements */
    double max_rel_err;   /**< largest rel_err over judged elements */
    /** Flat index of the element furthest outside tolerance (largest abs_err / (atol + rtol
     *  |reference|)) among judged elements; -1 if none was judged. */
    int64_t worst_index;
    double max_fd_err; /**< largest |autodiff - finite difference| over judged elements */
    tg_gradcheck_element *elements; /**< numel entries, in index order; owned by the report */
} tg_gradcheck_tensor;

/** The whole verdict. Read its fields; free it with tg_gradcheck_report_free. */
typedef struct tg_gradcheck_report {
    int passed;                   /**< 1 if every tensor passed */
    int n_tensors;                /**< checked inputs (those that require a gradient) */
    tg_gradcheck_tensor *tensors; /**< n_tensors entries; owned by the report */
    double loss;                  /**< f at the unperturbed inputs */
    double eps;                   /**< the finite-difference step used */
    double atol;                  /**< the absolute tolerance used */
    double rtol;                  /**< the relative tolerance used */
    int max_rows;                 /**< rows tg_gradcheck_print shows per list */
    tg_dtype requested_dtype;     /**< asked for: opts.dtype, or TG_F32 if an input was f32 */
    tg_dtype dtype;               /**< what the check ran in: always TG_F64 */
    char note[200];               /**< "" or a sentence for the reader (e.g. why float64) */
} tg_gradcheck_report;

/** Checks the autodiff gradient of every input that requires one against central finite
 *  differences of `f`. The inputs are not modified: f runs on float64 copies (i32 inputs, such
 *  as class indices, are passed through as i32 copies). `opts` may be NULL (defaults).
 *  Returns a new report, owned by the caller (tg_gradcheck_report_free), whatever the verdict; or
 *  NULL on a usage error, with tg_last_errmsg() naming it: NULL f or inputs, no input requiring a
 *  gradient, bad options (eps <= 0, atol or rtol < 0), f failing to build (the tape's message is
 *  quoted), f returning more than one element, or no memory. */
TG_API tg_gradcheck_report *tg_gradcheck(tg_gradcheck_fn f, tg_tensor *const *inputs, int n_inputs,
                                         void *user, const tg_gradcheck_opts *opts);

/** As tg_gradcheck, and also checks gradients you computed yourself: yours[i] is your d f /
 *  d inputs[i] (same shape as inputs[i], f32 or f64), or NULL for an input you did not derive
 *  (its autodiff is then checked against finite differences as by tg_gradcheck). An element of
 *  yours passes when it agrees with autodiff and autodiff agrees with finite differences.
 *  Additional errors: yours[i] given for an input that does not require a gradient, or of the
 *  wrong shape or dtype. Returns a new report owned by the caller, or NULL (tg_last_errmsg). */
TG_API tg_gradcheck_report *tg_gradcheck_yours(tg_gradcheck_fn f, tg_tensor *const *inputs,
                                               int n_inputs, void *user, tg_tensor *const *yours,
                                               const tg_gradcheck_opts *opts);

/** Writes the report to `out`: one line per tensor (verdict, counts, max errors, worst element),
 *  then its mismatching elements as rows `index | yours | autodiff | finite difference | abs err |
 *  rel err` (multi-d indices such as [1,0]; the first max_rows, then a count of the rest), then
 *  its kink elements with both one-sided differences. NULL report or out: nothing is written. */
TG_API void tg_gradcheck_print(const tg_gradcheck_report *report, FILE *out);

/** Frees a report and everything it owns. NULL is ignored. */
TG_API void tg_gradcheck_report_free(tg_gradcheck_report *report);

/* ---- Checking intermediates and second derivatives (src/tools/intermediates.c, hessian.c) ---- */

/* Two checks for derivations done by hand, both run in float64 like tg_gradcheck.
 *
 * Intermediates: the gradient of the loss with respect to any value inside the network (dl/dy~,
 * dl/dh, dl/dh~ ...), not only the parameters. Your loss function passes each value you derived a
 * gradient for through tg_probe; tg_check_intermediates compares your gradients with tapegrad's
 * gradient of that node and has finite differences referee autodiff by perturbing the node itself:
 *
 *     static tg_tensor *net(tg_tape *t, tg_tensor *const *in, int n, tg_dtype dt,
 *                           tg_probes *p, void *u) {
 *         tg_tensor *ht = tg_probe(p, t, tg_add(t, tg_matmul(t, in[0], in[1]), in[2]), "h~");
 *         return tg_softmax_cross_entropy(t, tg_matmul(t, tg_tanh(t, ht), in[3]), in[4]);
 *     }
 *     tg_node_grad mine[] = {{"h~", my_dl_dhtilde}, {"W_y", my_dl_dWy}};
 *     tg_intermediates_report *r = tg_check_intermediates(net, in, 5, NULL, mine, 2, NULL);
 *
 * Second derivatives: tg_hvp computes a Hessian-vector product of any scalar built on a tape from
 * tapegrad's own exact gradient; tg_hessian_check compares your Hessian (a matrix, or a function
 * returning H v) with it entry by entry, and reports whether your matrix is symmetric. */

/** opaque: the points of a loss where a check may perturb it (see tg_probe). Created and owned by
 *  tg_check_intermediates for the duration of the check; a loss function only passes it on. */
typedef struct tg_probes tg_probes;

/** Builds a loss like tg_gradcheck_fn, with `probes` to hand to tg_probe. Called once with
 *  unperturbed values and then twice per checked element of each probed node (four times at a
 *  suspected kink); it must compute the same function, with the same probes, every time. The
 *  same function serves training: call it with probes NULL. */
typedef tg_tensor *(*tg_probed_fn)(tg_tape *tape, tg_tensor *const *inputs, int n_inputs,
                                   tg_dtype dtype, tg_probes *probes, void *user);

/** Marks `x` (a tensor of `t`, or a leaf) as the intermediate called `name` and returns the tensor
 *  to use in its place. With probes NULL (training, or outside a check) it names x
 *  (tg_tensor_set_name) and returns x itself: nothing is recorded. Under tg_check_intermediates,
 *  for a name whose gradient is being checked, it records an identity node named `name`,
 *  y = x + delta, whose delta the check moves to perturb that value and nothing upstream of it;
 *  d loss / d y is then the gradient of the node. Returns NULL without work if x is NULL or the
 *  tape has failed; NULL too if the same name is probed twice in one build (the check then fails
 *  with a message naming it). The returned tensor belongs to the tape (or is x). */
TG_API tg_tensor *tg_probe_at(tg_probes *probes, tg_tape *t, tg_tensor *x, const char *name,
                              TG_LOC_PARAMS);
/** tg_probe_at with the caller's file and line. */
#define tg_probe(probes, t, x, name) tg_probe_at((probes), (t), (x), (name), __FILE__, __LINE__)

/** Your gradient of the loss with respect to one named value. Both pointers are the caller's. */
typedef struct tg_node_grad {
    const char *name;      /**< a tg_probe name, a node's name (tg_tensor_set_name) or an input's */
    const tg_tensor *grad; /**< d loss / d value: the value's shape, f32 or f64 */
} tg_node_grad;

/** The verdict on your gradient of one node. */
typedef enum tg_node_verdict {
    /** Equal to autodiff up to float64 rounding: |yours - autodiff| <= 64 DBL_EPSILON max|autodiff|
     *  for every judged element. */
    TG_NODE_EXACT = 0,
    TG_NODE_CLOSE = 1, /**< within atol + rtol |autodiff| everywhere, but not exact */
    TG_NODE_WRONG = 2  /**< some element outside tolerance (tg_gradcheck_element.disagree) */
} tg_node_verdict;

/** One checked node: the per-element comparison of tg_gradcheck (yours, autodiff, finite
 *  difference, status) plus where the node is and what to call the result. */
typedef struct tg_node_check {
    /** The elements and counts, as tg_gradcheck reports an input: name, shape, elements[] (owned
     *  by the report), n_ok / n_mismatch / n_kink, max_abs_err (the largest |yours - autodiff|).
     *  .input is the input's position for an input, -1 for a node. */
    tg_gradcheck_tensor check;
    tg_node_verdict verdict; /**< exact, close or wrong */
    int64_t tape_index;      /**< the node's position on the tape; -1 for an input */
    char op[32];             /**< the op that produced the value ("tanh"), "input" for an input */
    /** 1 if finite differences refereed autodiff (a tg_probe node or an input); 0 for a node only
     *  named with tg_tensor_set_name, which cannot be perturbed (yours vs autodiff only). */
    int refereed;
    int64_t n_wrong;       /**< elements where yours disagrees with autodiff */
    int64_t n_fd_disagree; /**< elements where autodiff disagrees with finite differences */
} tg_node_check;

/** The whole verdict. Read its fields; free it with tg_intermediates_report_free. */
typedef struct tg_intermediates_report {
    /** 1 if every node is exact or close and autodiff agrees with finite differences wherever
     *  they refereed it. */
    int passed;
    int n_nodes; /**< checked nodes */
    /** n_nodes entries in the order the reverse pass finishes them (the loss's end first; an input
     *  where its first use is reached), so the first wrong node is where a derivation went wrong
     *  and the wrong nodes after it may only inherit the mistake. Owned by the report. */
    tg_node_check *nodes;
    int first_wrong; /**< index into nodes of the first wrong node, or -1 */
    double loss;     /**< the loss at the unperturbed inputs */
    double eps;      /**< the finite-difference step used */
    double atol;     /**< the absolute tolerance used */
    double rtol;     /**< the relative tolerance used */
    int max_rows;    /**< rows tg_intermediates_print shows per list */
} tg_intermediates_report;

/** Checks your gradients of named values of the loss f (see tg_probe) against tapegrad's gradient
 *  of each node, with central finite differences perturbing the node (or input) itself as the
 *  referee. Names are looked up among f's tg_probe points, then the tape's nodes (tg_tensor_name;
 *  such a node is compared with autodiff but not refereed), then the inputs. f runs on float64
 *  copies of the inputs (each float copy requires a gradient, so every node has one; your tensors
 *  are not modified). `opts` may be NULL (tg_gradcheck_defaults(): eps, atol, rtol, max_rows are
 *  used). Returns a new report owned by the caller (tg_intermediates_report_free), whatever the
 *  verdict; or NULL on a usage error, with tg_last_errmsg() naming it: NULL f, inputs or yours, a
 *  NULL or empty name or a NULL gradient, a name given twice, a name on no probe, node or input
 *  (the message lists the names there are), a name on two nodes, a gradient of the wrong shape or
 *  dtype, bad options, f failing to build or returning more than one element, or no memory. */
TG_API tg_intermediates_report *tg_check_intermediates(tg_probed_fn f, tg_tensor *const *inputs,
                                                       int n_inputs, void *user,
                                                       const tg_node_grad *yours, int n_yours,
                                                       const tg_gradcheck_opts *opts);

/** Writes the report to `out`: one table row per node (name, op, shape, verdict, largest
 *  |yours - autodiff|, what finite differences said), a line naming the first wrong node, then
 *  for each wrong node its wrong elements as tg_gradcheck_print shows them. NULL report or out:
 *  nothing is written. */
TG_API void tg_intermediates_print(const tg_intermediates_report *report, FILE *out);

/** Frees a report and everything it owns. NULL is ignored. */
TG_API void tg_intermediates_report_free(tg_intermediates_report *report);

/** Settings of a second-derivative computation or check. Start from tg_hessian_defaults(). */
typedef struct tg_hessian_opts {
    /** Relative step of the differences of the gradient: h = eps max(1, |x|_inf) / |v|_inf;
     *  default 1e-3 (with the Richardson step the error is O(h^4); rounding is O(1e-16 / h)). */
    double eps;
    double atol; /**< absolute tolerance of an entry; default 1e-6 */
    double rtol; /**< relative tolerance; default 1e-5: |yours - ref| <= atol + rtol |ref| */
    /** Up to this many elements in the input, tg_hessian_check compares every entry (numel
     *  Hessian-vector products); above it, n_probes random directions. Default 64. */
    int64_t max_dense;
    int n_probes;  /**< random probe directions for large inputs; default 8 */
    uint64_t seed; /**< seed of the probe directions (standard normal); default 1 */
    int max_rows;  /**< rows tg_hessian_print shows per list; default 10 */
} tg_hessian_opts;

/** The defaults: eps 1e-3, atol 1e-6, rtol 1e-5, max_dense 64, n_probes 8, seed 1, max_rows 10. */
TG_API tg_hessian_opts tg_hessian_defaults(void);

/** Writes H v into `hv`, H the Hessian of the scalar f with respect to inputs[wrt], from central
 *  differences of tapegrad's exact gradient along v, in float64, with one Richardson step:
 *  D(h) = (g(x + h v) - g(x - h v)) / 2h, H v = (4 D(h/2) - D(h)) / 3 (four forward and backward
 *  passes). f is a tg_gradcheck_fn and runs on float64 copies (the inputs are not modified; their
 *  requires-grad flags do not matter). v and hv are leaves of inputs[wrt]'s shape, f32 or f64;
 *  hv is the caller's and is overwritten. Near a kink of the gradient the result means nothing
 *  (tg_hessian_check detects such entries). `opts` may be NULL (only eps is used). Returns TG_OK,
 *  or an error with tg_last_errmsg set: NULL f, inputs, v or hv; wrt out of range or an i32
 *  input; v or hv of the wrong shape or dtype, hv not a leaf; bad options; f failing. */
TG_API tg_status tg_hvp(tg_gradcheck_fn f, tg_tensor *const *inputs, int n_inputs, void *user,
                        int wrt, const tg_tensor *v, tg_tensor *hv, const tg_hessian_opts *opts);

/** Your Hessian as a function: writes H v into hv (zeros on entry, of x's shape, float64) for the
 *  direction v at the point x (the float64 copy of the checked input). TG_OK or an error. */
typedef tg_status (*tg_hvp_fn)(const tg_tensor *x, const tg_tensor *v, tg_tensor *hv, void *user);

/** One compared entry: row `row` of H times direction `col` (a column of H when dense). */
typedef struct tg_hessian_entry {
    int64_t row;                /**< flat index i into the input: the entry is d2f / dx_i dx_j */
    int64_t col;                /**< flat index j (dense), or the probe number (probes) */
    tg_gradcheck_status status; /**< OK, MISMATCH, or KINK (the gradient jumps within h) */
    double yours;               /**< your value */
    double reference;           /**< tapegrad's: the Richardson difference of its gradient */
    double fd_forward;          /**< (g(x + h v) - g(x)) / h, row `row` */
    double fd_backward;         /**< (g(x) - g(x - h v)) / h, row `row` */
    double abs_err;             /**< |yours - reference| */
    double rel_err;             /**< abs_err / |reference| (0 if both 0, inf if only it is) */
} tg_hessian_entry;

/** The verdict of tg_hessian_check. Read its fields; free it with tg_hessian_report_free. */
typedef struct tg_hessian_report {
    int passed;                 /**< 1 if no entry mismatches (kinks do not count) */
    char name[32];              /**< the input's name, or "input <wrt>" */
    int input;                  /**< wrt */
    int rank;                   /**< the input's rank */
    int64_t shape[TG_MAX_RANK]; /**< the input's shape */
    int64_t numel;              /**< n: H is n x n */
    int by_probes;              /**< 0: every entry compared; 1: n_cols random directions */
    int64_t n_cols;             /**< columns compared: n, or the number of probes */
    /** n_cols * numel entries, column after column: entries[col * numel + row]. Owned by the
     *  report. */
    tg_hessian_entry *entries;
    int64_t n_ok;       /**< entries that agree */
    int64_t n_mismatch; /**< entries that do not */
    int64_t n_kink;     /**< entries at a kink, not judged */
    double max_abs_err; /**< largest abs_err over judged entries */
    double max_rel_err; /**< largest rel_err over judged entries */
    int64_t worst;      /**< index into entries of the entry furthest outside tolerance, or -1 */
    /** 1 if your matrix is symmetric within atol + rtol: every pair (i,j), (j,i) when dense; else
     *  u^T (Y v) against v^T (Y u) for consecutive probe directions u, v. */
    int symmetric;
    double max_asym;  /**< largest |Y_ij - Y_ji| (dense) or |u^T Y v - v^T Y u| (probes) */
    int64_t asym_row; /**< where it is: i (dense) or the first probe of the pair; -1 if none */
    int64_t asym_col; /**< j, or the second probe */
    int64_t n_asym;   /**< pairs outside tolerance */
    double ref_asym;  /**< the same measure for tapegrad's reference: its own error, for scale */
    double f0;        /**< f at the unperturbed inputs */
    double eps;       /**< the relative step used */
    double atol;      /**< the absolute tolerance used */
    double rtol;      /**< the relative tolerance used */
    int max_rows;     /**< rows tg_hessian_print shows per list */
} tg_hessian_report;

/** Checks your Hessian of f with respect to inputs[wrt] against tg_hvp's, given either as a dense
 *  matrix `yours` (f32 or f64, shape [n, n] or the input's shape twice, e.g. [2,4,2,4] for a
 *  [2,4] input; row-major over the flattened input) or as a function `yours_fn` (with
 *  `yours_user`) returning H v; exactly one of the two. With n <= opts.max_dense every entry is
 *  compared (H e_j for each j); above it, opts.n_probes random directions v, entry i of H v.
 *  Entries where the gradient jumps within the step (a kink of f's gradient, e.g. relu' at 0) are
 *  reported as TG_GC_KINK and not judged. f runs on float64 copies; nothing of the caller's is
 *  modified or kept. `opts` may be NULL. Returns a new report owned by the caller
 *  (tg_hessian_report_free), whatever the verdict; or NULL on a usage error (as tg_hvp, plus:
 *  neither or both of yours and yours_fn, yours of the wrong shape or dtype, yours_fn failing)
 *  with tg_last_errmsg() naming it. */
TG_API tg_hessian_report *tg_hessian_check(tg_gradcheck_fn f, tg_tensor *const *inputs,
                                           int n_inputs, void *user, int wrt,
                                           const tg_tensor *yours, tg_hvp_fn yours_fn,
                                           void *yours_user, const tg_hessian_opts *opts);

/** Writes the report to `out`: the verdict and counts, the symmetry of your matrix, a map of the
 *  entries (one character each: . agrees, X wrong, k kink) when every entry was compared and n <=
 *  32, then the mismatching entries as rows `entry | yours | reference | abs err | rel err` (the
 *  entry d2f / dx_i dx_j as the two multi-d indices, [0,1] [1,2]) and the kink entries with both
 *  one-sided differences. NULL report or out: nothing is written. */
TG_API void tg_hessian_print(const tg_hessian_report *report, FILE *out);

/** Frees a report and everything it owns. NULL is ignored. */
TG_API void tg_hessian_report_free(tg_hessian_report *report);

/* ---- Teaching: graph, listing, trace (src/tools/: listing.c, dot.c, trace.c) ----------------- */

/** Writes the tape as a listing in forward order, for reading or teaching: first the leaves it uses
 *  (name, shape, parameter or data), then one line per node: index, name, op, inputs, output shape
 *  and what the node saved for backward. Unnamed tensors show as "op#index" (nodes) and "leaf#k"
 *  (leaves, numbered in order of first use). Returns TG_OK, TG_ERR_NULL (tape or out NULL; see
 *  tg_last_errmsg) or TG_ERR_IO if writing failed. Reads the tape only. */
TG_API tg_status tg_tape_print(const tg_tape *tape, FILE *out);

/** Writes the recorded graph as Graphviz DOT to `out`: one box per leaf and per node with its name,
 *  op, shape, its values when it has at most 8 elements and, once tg_backward has run, its
 *  gradient; parameters, data and computed tensors are styled apart and the output is
 *  highlighted; edges run from inputs to the ops that use them, in recording order. Returns TG_OK,
 *  TG_ERR_NULL or TG_ERR_IO (message in tg_last_errmsg). Reads the tape only. */
TG_API tg_status tg_tape_write_dot(const tg_tape *tape, FILE *out);
/** As tg_tape_write_dot into the file at `path` (created or truncated). TG_ERR_IO if it cannot be
 *  opened or written, with the path in tg_last_errmsg. */
TG_API tg_status tg_tape_save_dot(const tg_tape *tape, const char *path);
/** Draws the graph into `path` with Graphviz's `dot` program; the format follows the name's end
 *  (.png, .svg or .pdf, else TG_ERR_VALUE). Returns TG_ERR_IO, with a message naming Debian's
 *  graphviz package, when `dot` is not on the PATH, and TG_ERR_IO when `dot` fails. Uses a
 *  temporary file in $TMPDIR (or /tmp), removed before returning. Messages in tg_last_errmsg. */
TG_API tg_status tg_tape_render(const tg_tape *tape, const char *path);

/** Turns the chain-rule trace of tg_backward on (`out` non-NULL) or off (NULL, the default). While
 *  on, each backward pass writes to `out`, node by node in reverse order: the upstream gradient,
 *  what forward saved, the op's rule with the tensors' names (dl/dh~ += dl/dh * (1 - h^2)), the
 *  local derivative's numbers where it has its own (tanh, sigmoid, exp, log, relu, scale, mean,
 *  softmax_cross_entropy), and the gradient passed to each input; where a value feeds several ops,
 *  each contribution and the running sum. Tensors of up to 16 elements print in full, larger ones
 *  as a few entries and the norm. Gradients are bitwise the same as with the trace off. `out` is
 *  the caller's and must stay open while tracing is on; the setting survives tg_tape_reset.
 *  Returns TG_OK, or TG_ERR_NULL for a NULL tape. */
TG_API tg_status tg_tape_set_trace(tg_tape *tape, FILE *out);

/* ---- Teaching: the step-through page (src/tools/html.c) -------------------------------------- */

/** Runs the backward pass from `loss`, as tg_backward(tape, loss) does, and writes the page of
 *  that pass to `path`: one self-contained HTML file (the graph drawn by Graphviz as inline SVG,
 *  the script and the styles inline; it fetches nothing) in which a student steps, with buttons,
 *  the arrow keys or a slider, through the forward pass node by node and then through the reverse
 *  pass, the current node highlighted in the graph. Each step shows what the chain-rule trace
 *  (tg_tape_set_trace) prints for that node, made from the same description: the value (a table,
 *  or a heat map for a matrix), what was saved, the rule with the tensors' names, the upstream
 *  gradient, the local derivative and the gradient passed to each input, with the sum where a
 *  value feeds several ops. An exercise mode hides the gradients, lets the student type
 *  dl/d(node) and marks each element against the recorded values.
 *
 *  Call it in place of tg_backward for the pass to be shown: it is that pass (there is no second
 *  one), so the gradients are bitwise those of tg_backward, accumulated in the same way, and every
 *  observer on the tape (a trace, anomaly mode) sees the pass once. Without Graphviz's `dot` on
 *  the PATH the page is written without the graph and says why. Needs one free observer slot.
 *  Returns TG_OK; TG_ERR_NULL; TG_ERR_IO when `path` cannot be written (then no pass has run);
 *  the status of tg_backward when the pass fails (the tape's error says why); TG_ERR_NOMEM when
 *  the steps do not fit in memory (the pass has run, the gradients are complete). On an error no
 *  file is left at `path`. Messages in tg_last_errmsg. `path` is the caller's (not kept). */
TG_API tg_status tg_tape_write_html(tg_tape *tape, tg_tensor *loss, const char *path);

/* ---- Training: initializers, optimizers, batches, layers (src/train/) ------------------------- */

/* Initializers fill an existing f32/f64 leaf in place, drawing from `rng` in row-major order, so a
 * seed fixes the weights on every platform. fan_in / fan_out are the number of inputs and outputs
 * of the layer the tensor belongs to (for a linear layer's W [out,in]: in and out). Each returns
 * TG_OK, or TG_ERR_NULL / TG_ERR_DTYPE / TG_ERR_VALUE with a message in tg_last_errmsg(). */

/** Sets every element to 0. */
TG_API tg_status tg_init_zeros(tg_tensor *tensor);
/** Sets every element to `value`. */
TG_API tg_status tg_init_constant(tg_tensor *tensor, double value);
/** Uniform in [lo, hi). TG_ERR_VALUE unless lo <= hi. */
TG_API tg_status tg_init_uniform(tg_tensor *tensor, double lo, double hi, tg_rng *rng);
/** Normal(mean, std^2). TG_ERR_VALUE if std < 0. */
TG_API tg_status tg_init_normal(tg_tensor *tensor, double mean, double std, tg_rng *rng);
/** Xavier/Glorot uniform: U(-a, a), a = sqrt(6 / (fan_in + fan_out)). Keeps the variance of
 *  activations and gradients about constant through tanh/sigmoid layers. Fans must be >= 1. */
TG_API tg_status tg_init_xavier_uniform(tg_tensor *tensor, int64_t fan_in, int64_t fan_out,
                                        tg_rng *rng);
/** Xavier/Glorot normal: N(0, s^2), s = sqrt(2 / (fan_in + fan_out)). Fans must be >= 1. */
TG_API tg_status tg_init_xavier_normal(tg_tensor *tensor, int64_t fan_in, int64_t fan_out,
                                       tg_rng *rng);
/** He/Kaiming uniform (for relu layers): U(-a, a), a = sqrt(6 / fan_in). fan_in >= 1. */
TG_API tg_status tg_init_he_uniform(tg_tensor *tensor, int64_t fan_in, tg_rng *rng);
/** He/Kaiming normal (for relu layers): N(0, s^2), s = sqrt(2 / fan_in). fan_in >= 1. */
TG_API tg_status tg_init_he_normal(tg_tensor *tensor, int64_t fan_in, tg_rng *rng);

/** Optimizer algorithms. With g the gradient (plus weight_decay * p when weight decay is on),
 *  p a parameter, lr the learning rate of this step and t = 1, 2, ... the step number:
 *  - TG_OPTIM_SGD:      p -= lr g
 *  - TG_OPTIM_MOMENTUM: v = mu v + g;  p -= lr v          (v starts at 0, as in PyTorch's SGD)
 *  - TG_OPTIM_NESTEROV: v = mu v + g;  p -= lr (g + mu v)
 *  - TG_OPTIM_ADAM:     m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2  (m, v start at 0);
 *                       p -= lr (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps)  (bias-corrected)
 *  - TG_OPTIM_ADAMW:    decoupled weight decay (torch.optim.AdamW): p -= lr wd p first, then the
 *                       Adam step on the plain gradient g (weight_decay is not added to g) */
typedef enum tg_optim_kind {
    TG_OPTIM_SGD = 0,      /**< plain gradient descent */
    TG_OPTIM_MOMENTUM = 1, /**< heavy-ball momentum */
    TG_OPTIM_NESTEROV = 2, /**< Nesterov momentum */
    TG_OPTIM_ADAM = 3,     /**< Adam (Kingma & Ba) */
    TG_OPTIM_ADAMW = 4     /**< AdamW (Loshchilov & Hutter): Adam with decoupled weight decay */
} tg_optim_kind;

/** Settings of an optimizer. Start from tg_optim_defaults and change what you need. */
typedef struct tg_optim_config {
    tg_optim_kind kind; /**< the algorithm */
    double lr;          /**< learning rate, > 0 */
    double momentum;    /**< mu of TG_OPTIM_MOMENTUM / TG_OPTIM_NESTEROV, in [0, 1); default 0.9 */
    double beta1;       /**< TG_OPTIM_ADAM's decay of the first moment, in [0, 1); default 0.9 */
    double beta2;       /**< TG_OPTIM_ADAM's decay of the second moment, in [0, 1); default 0.999 */
    double eps;         /**< TG_OPTIM_ADAM, > 0; default 1e-8 */
    double weight_decay; /**< L2 penalty added to the gradient (g += wd p), >= 0; default 0 */
    int64_t decay_every; /**< step decay: lr is multiplied by decay_factor after every decay_every
                              steps; 0 (default) keeps lr constant */
    double decay_factor; /**< in (0, 1]; default 1 */
    /* Warm-up + cosine schedule (issue 15), off when both counts are 0 (the default); see
     * tg_lr_warmup_cosine. Cannot be combined with decay_every. */
    int64_t warmup_steps; /**< linear warm-up over the first warmup_steps steps; default 0 */
    int64_t total_steps;  /**< cosine decay from lr to min_lr ends at this step; default 0 */
    double min_lr;        /**< the schedule's floor, in [0, lr]; default 0 */
} tg_optim_config;

typedef struct tg_optim tg_optim; /**< opaque: an optimizer over a fixed list of parameters */

/** The default settings of `kind` with learning rate `lr` (see tg_optim_config). */
TG_API tg_optim_config tg_optim_defaults(tg_optim_kind kind, double lr);
/** A new optimizer updating the `n_params` leaves in `params` (f32 or f64, requiring a gradient;
 *  each at most once). The optimizer keeps the pointers, not the tensors: they must outlive it.
 *  Its state (velocities, moments) has each parameter's dtype and starts at zero. Returns NULL on a bad config or
 *  parameter, or no memory (see tg_last_errmsg). Free with tg_optim_free. */
TG_API tg_optim *tg_optim_new(const tg_optim_config *config, tg_tensor *const *params,
                              int n_params);
/** One update of every parameter from its current gradient. A parameter without a gradient yet
 *  (no tg_backward reached it), or that does not require one now (frozen with
 *  tg_tensor_set_requires_grad(p, 0)), is skipped: its values and its state stay as they are. Does not zero the gradients. Returns TG_OK, TG_ERR_NULL,
 *  or TG_ERR_NONFINITE if a gradient holds a NaN or Inf (then no parameter is changed). */
TG_API tg_status tg_optim_step(tg_optim *optim);
/** Zeros the gradient of every parameter (call it before each backward: leaves accumulate). */
TG_API void tg_optim_zero_grad(tg_optim *optim);
/** The learning rate the next step will use (after step decay, or from the warm-up + cosine
 *  schedule when the config has one). 0 for NULL. */
TG_API double tg_optim_lr(const tg_optim *optim);
/** Number of steps taken. */
TG_API int64_t tg_optim_steps(const tg_optim *optim);
/** Frees the optimizer and its state (not the parameters). NULL is ignored. */
TG_API void tg_optim_free(tg_optim *optim);

/* ---- Sequence models (issue 15): schedule, clipping, sampling -------------------------------- */

/** The learning rate of step `step` (0-based: the step about to run) under a linear warm-up and a
 *  cosine decay, as nanoGPT's get_lr: step < warmup: lr (step + 1) / warmup; step >= total:
 *  min_lr; between: min_lr + (lr - min_lr) (1 + cos(pi (step - warmup) / (total - warmup))) / 2.
 *  total = 0 means no decay (lr after the warm-up). NaN on bad arguments (negative counts,
 *  total < warmup when total > 0). tg_optim_lr uses it when the config has a schedule. */
TG_API double tg_lr_warmup_cosine(int64_t step, double lr, int64_t warmup_steps,
                                  int64_t total_steps, double min_lr);
/** Clips gradients by their global norm, as torch.nn.utils.clip_grad_norm_: the norm
 *  N = sqrt(sum of g^2 over every element of every parameter's gradient) (computed in double;
 *  parameters without a gradient are skipped); every gradient is multiplied by
 *  c = max_norm / (N + 1e-6) when c < 1. Returns N (before clipping). A non-finite N leaves the gradients as they
 *  are (tg_optim_step then refuses them). Returns -1 on bad arguments (NULL, n < 1, max_norm not
 *  positive and finite, a parameter that is not an f32/f64 leaf), see tg_last_errmsg. */
TG_API double tg_clip_grad_norm(tg_tensor *const *params, int n, double max_norm);
/** Draws an index in [0, n) with probability proportional to probs[i]^(1/temperature) (the
 *  weights need not sum to 1; temperature 1 samples the row as given, < 1 sharpens it, > 1
 *  flattens it, 0 picks the first largest). One tg_rng_uniform draw per call (none for
 *  temperature 0), so a seed fixes the sequence. Returns -1 on bad arguments (NULL, n < 1, a
 *  negative or non-finite weight, all weights 0, temperature negative or NaN), see
 *  tg_last_errmsg. */
TG_API int64_t tg_sample(const double *probs, int64_t n, double temperature, tg_rng *rng);
/** Draws an index from softmax(logits[row, :] / temperature) for logits [.., C] (f32 or f64; row
 *  counts the rows of the flattened [rows, C] view; any leaf or tape tensor). Temperature 0 picks
 *  the first largest logit. One tg_rng_uniform draw per call. Returns -1 on bad arguments (as
 *  tg_sample, a row out of range, C > 4096), see tg_last_errmsg. */
TG_API int64_t tg_sample_logits(const tg_tensor *logits, int64_t row, double temperature,
                                tg_rng *rng);
/* ---- end of issue 15's training additions ---- */

typedef struct tg_dataset tg_dataset; /**< opaque: mini-batches over (inputs, targets) */

/** A view of `inputs` [N, ...] and `targets` [N, ...] (e.g. TG_I32 class indices [N]) as
 *  mini-batches of `batch_size` rows (the last batch of an epoch may be smaller). With `shuffle`,
 *  each epoch visits the rows in a new order drawn from a tg_rng seeded with `seed`; otherwise in
 *  order. batch_size = N is full-batch gradient descent, 1 is stochastic, anything between is
 *  mini-batch. Keeps pointers to inputs and targets (they must outlive it; their values are read
 *  at each tg_dataset_next). Returns NULL on bad arguments or no memory (see tg_last_errmsg).
 *  Free with tg_dataset_free. */
TG_API tg_dataset *tg_dataset_new(const tg_tensor *inputs, const tg_tensor *targets,
                                  int64_t batch_size, int shuffle, uint64_t seed);
/** Copies the next batch into tensors the dataset owns and points *inputs and *targets at them:
 *  leaves of shape [B, ...] (B = batch_size, or the remainder for the last batch), valid until the
 *  next call or tg_dataset_free (do not free them: tg_tensor_free refuses). Nothing is allocated
 *  per batch. Returns 1 when a batch was produced, 0 at the end of an epoch (the next call starts
 *  a new epoch, reshuffled), or a negative tg_status (see tg_last_errmsg). Loop: while (tg_dataset_next(ds, &x, &y) == 1) { ... } */
TG_API int tg_dataset_next(tg_dataset *dataset, tg_tensor **inputs, tg_tensor **targets);
/** Number of rows N. */
TG_API int64_t tg_dataset_size(const tg_dataset *dataset);
/** Number of batches in an epoch: ceil(N / batch_size). */
TG_API int64_t tg_dataset_n_batches(const tg_dataset *dataset);
/** Frees the dataset and its batch tensors (not the inputs and targets). NULL is ignored. */
TG_API void tg_dataset_free(tg_dataset *dataset);

/** A linear (fully connected) layer y = x W^T + b, for x [N,in]: W [out,in], b [out], y [N,out].
 *  The fields are the caller's to read and pass to an optimizer; both require a gradient. */
typedef struct tg_linear {
    tg_tensor *W; /**< [out,in], Xavier-uniform (fan_in = in, fan_out = out) */
    tg_tensor *b; /**< [out], zeros */
} tg_linear;

/** A new linear layer of dtype (TG_F32 or TG_F64) with `n_in` inputs and `n_out` outputs, W drawn
 *  from `rng` (Xavier uniform, the right scale for tanh; for relu re-draw W with tg_init_he_*).
 *  W and b are named `name`.W and `name`.b (name may be NULL). Returns NULL on bad arguments or no
 *  memory (see tg_last_errmsg). Free with tg_linear_free. */
TG_API tg_linear *tg_linear_new(tg_dtype dtype, int64_t n_in, int64_t n_out, const char *name,
                                tg_rng *rng);
/** Records tg_add(t, tg_matmul_bt(t, x, W), b), i.e. x W^T + b -- exactly the two nodes a user
 *  would write, attributed to the caller's file and line. x [N,in] gives [N,out]. Errors as for
 *  any builder call (on the tape). */
TG_API tg_tensor *tg_linear_forward_at(tg_tape *t, const tg_linear *layer, tg_tensor *x,
                                       TG_LOC_PARAMS);
/** tg_linear_forward_at with the caller's file and line. */
#define tg_linear_forward(t, layer, x) tg_linear_forward_at((t), (layer), (x), __FILE__, __LINE__)
/** Frees W, b and the layer. NULL is ignored. */
TG_API void tg_linear_free(tg_linear *layer);

/* -- Convolutional layers (branch cnnops): own their parameters, record exactly one op. -- */

/** A conv2d layer: W [K, C/groups, R, S] and b [K] require a gradient; opts as for tg_conv2d.
 *  W is He (Kaiming) uniform, U(-a, a) with a = sqrt(6 / fan_in), fan_in = C/groups * R * S: the
 *  right scale for relu networks (PyTorch's default, kaiming_uniform with a = sqrt(5), is a
 *  smaller U(-1/sqrt(fan_in), 1/sqrt(fan_in))); b is zeros. */
typedef struct tg_conv2d_layer {
    tg_tensor *W;        /**< [K, C/groups, R, S], He uniform */
    tg_tensor *b;        /**< [K], zeros */
    tg_conv2d_opts opts; /**< as given (zeros: the defaults) */
} tg_conv2d_layer;

/** A new conv2d layer of dtype (TG_F32 or TG_F64), `in_channels` C to `out_channels` K with a
 *  kh x kw kernel, W drawn from `rng`; opts may be NULL (copied). Named `name`.W and `name`.b
 *  (name may be NULL). Returns NULL on bad arguments (channels not divisible by groups, sizes
 *  < 1, negative options) or no memory (see tg_last_errmsg). Free with tg_conv2d_layer_free. */
TG_API tg_conv2d_layer *tg_conv2d_layer_new(tg_dtype dtype, int64_t in_channels,
                                            int64_t out_channels, int64_t kh, int64_t kw,
                                            const tg_conv2d_opts *opts, const char *name,
                                            tg_rng *rng);
/** Records exactly tg_conv2d(t, x, W, b, &opts), attributed to the caller's file and line. */
TG_API tg_tensor *tg_conv2d_layer_forward_at(tg_tape *t, const tg_conv2d_layer *layer, tg_tensor *x,
                                             TG_LOC_PARAMS);
/** tg_conv2d_layer_forward_at with the caller's file and line. */
#define tg_conv2d_layer_forward(t, layer, x)                                                       \
    tg_conv2d_layer_forward_at((t), (layer), (x), __FILE__, __LINE__)
/** Frees W, b and the layer. NULL is ignored. */
TG_API void tg_conv2d_layer_free(tg_conv2d_layer *layer);

/** A batch-norm layer over `features` channels: weight (ones) and bias (zeros) require a
 *  gradient; running_mean (zeros) and running_var (ones) are plain leaves without one, updated
 *  in place by each training-mode forward, so checkpoints carry them like any tensor. */
typedef struct tg_batch_norm_layer {
    tg_tensor *weight;       /**< [C], ones */
    tg_tensor *bias;         /**< [C], zeros */
    tg_tensor *running_mean; /**< [C], zeros; no gradient */
    tg_tensor *running_var;  /**< [C], ones; no gradient */
    double momentum;         /**< 0.1 (PyTorch's) */
    double eps;              /**< 1e-5 (PyTorch's) */
} tg_batch_norm_layer;

/** A new batch-norm layer of dtype (TG_F32 or TG_F64) over `features` >= 1 channels, its tensors
 *  named `name`.weight, `name`.bias, `name`.running_mean, `name`.running_var (name may be NULL).
 *  Returns NULL on bad arguments or no memory (see tg_last_errmsg). Free with
 *  tg_batch_norm_layer_free. */
TG_API tg_batch_norm_layer *tg_batch_norm_layer_new(tg_dtype dtype, int64_t features,
                                                    const char *name);
/** Records exactly tg_batch_norm(t, x, weight, bias, running_mean, running_var, momentum, eps),
 *  in the tape's mode, attributed to the caller's file and line. */
TG_API tg_tensor *tg_batch_norm_layer_forward_at(tg_tape *t, const tg_batch_norm_layer *layer,
                                                 tg_tensor *x, TG_LOC_PARAMS);
/** tg_batch_norm_layer_forward_at with the caller's file and line. */
#define tg_batch_norm_layer_forward(t, layer, x)                                                   \
    tg_batch_norm_layer_forward_at((t), (layer), (x), __FILE__, __LINE__)
/** Records exactly tg_batch_norm_relu(t, x, weight, bias, running_mean, running_var, momentum,
 *  eps): the layer followed by relu, fused. */
TG_API tg_tensor *tg_batch_norm_layer_forward_relu_at(tg_tape *t, const tg_batch_norm_layer *layer,
                                                      tg_tensor *x, TG_LOC_PARAMS);
/** tg_batch_norm_layer_forward_relu_at with the caller's file and line. */
#define tg_batch_norm_layer_forward_relu(t, layer, x)                                              \
    tg_batch_norm_layer_forward_relu_at((t), (layer), (x), __FILE__, __LINE__)
/** Records exactly tg_batch_norm_relu_max_pool2d(t, x, weight, bias, running_mean, running_var,
 *  momentum, eps, pool): the layer followed by relu and max pooling, fused. */
TG_API tg_tensor *tg_batch_norm_layer_forward_relu_max_pool2d_at(tg_tape *t,
                                                                 const tg_batch_norm_layer *layer,
                                                                 tg_tensor *x,
                                                                 const tg_pool2d_opts *pool,
                                                                 TG_LOC_PARAMS);
/** tg_batch_norm_layer_forward_relu_max_pool2d_at with the caller's file and line. */
#define tg_batch_norm_layer_forward_relu_max_pool2d(t, layer, x, ...)                              \
    tg_batch_norm_layer_forward_relu_max_pool2d_at((t), (layer), (x), __VA_ARGS__, __FILE__,       \
                                                   __LINE__)
/** Frees the four tensors and the layer. NULL is ignored. */
TG_API void tg_batch_norm_layer_free(tg_batch_norm_layer *layer);
/* -- end of the convolutional layers -- */

/** The report's dataset: `n` points uniform in [-1,1]^2 drawn from `rng`, labelled 1 inside the
 *  circle of radius sqrt(2/pi) (area 2, half the square: balanced classes) and 0 outside.
 *  On TG_OK, *inputs is a new [n,2] leaf of `dtype` and *labels a new TG_I32 [n] leaf, both the
 *  caller's to free. On error both are NULL and tg_last_errmsg() says why. */
TG_API tg_status tg_circles_make(tg_dtype dtype, int64_t n, tg_rng *rng, tg_tensor **inputs,
                                 tg_tensor **labels);

/** Fraction of rows of `logits` [N,C] whose largest entry (first on ties) is at the class in
 *  `labels` (TG_I32 [N]), in [0, 1]. -1 on bad arguments (see tg_last_errmsg). */
TG_API double tg_accuracy(const tg_tensor *logits, const tg_tensor *labels);

/* ---- Data: IDX files (src/io/idx.c) ---------------------------------------------------------- */

/** Where Debian's dataset-fashion-mnist package installs Fashion-MNIST; the default directory. */
#define TG_FASHION_MNIST_DIR "/usr/share/datasets/fashion-mnist"

/** opaque: one IDX file (the MNIST format) held in memory as unsigned bytes */
typedef struct tg_idx tg_idx;

/** Loads an IDX file of unsigned bytes (type 0x08), gzip'ed or plain (detected from the gzip magic).
 *  Checks the magic number, the element type, the number of dimensions (1..TG_MAX_RANK), the sizes (without
 *  overflow) and the length: a truncated file or one with trailing data is rejected; so are a
 *  broken gzip stream (CRC included) and bytes after it (other than further gzip members, which
 *  continue the data as gzip -d does). Anything but a regular file (a FIFO, a device) is refused
 *  before it is read, so the call never blocks. Returns NULL
 *  on any error (TG_ERR_IO, TG_ERR_FORMAT, TG_ERR_NOMEM) with a message naming the file, what was
 *  expected and what was found (see tg_last_errmsg). Caller frees with tg_idx_free. */
TG_API tg_idx *tg_idx_load(const char *path);
/** As tg_idx_load, from `len` bytes of an uncompressed IDX file in memory (copied; `bytes` is not
 *  kept). `name` (may be NULL) is used in messages. */
TG_API tg_idx *tg_idx_load_mem(const void *bytes, size_t len, const char *name);
/** Frees an IDX array. NULL is ignored. */
TG_API void tg_idx_free(tg_idx *idx);
/** Number of dimensions (1..TG_MAX_RANK); 0 for NULL. */
TG_API int tg_idx_rank(const tg_idx *idx);
/** Size of dimension `axis` (negative counts from the end); 0 for a bad axis or NULL. */
TG_API int64_t tg_idx_dim(const tg_idx *idx, int axis);
/** Number of elements (the product of the sizes). */
TG_API int64_t tg_idx_numel(const tg_idx *idx);
/** The elements, row-major. Owned by `idx`; valid until tg_idx_free. */
TG_API const uint8_t *tg_idx_data(const tg_idx *idx);

/** The four files of an MNIST-style data set. */
typedef enum tg_idx_part {
    TG_IDX_TRAIN_IMAGES = 0, /**< train-images-idx3-ubyte[.gz] */
    TG_IDX_TRAIN_LABELS = 1, /**< train-labels-idx1-ubyte[.gz] */
    TG_IDX_TEST_IMAGES = 2,  /**< t10k-images-idx3-ubyte[.gz] */
    TG_IDX_TEST_LABELS = 3   /**< t10k-labels-idx1-ubyte[.gz] */
} tg_idx_part;

/** Writes the path of `part` in `dir` (NULL: TG_FASHION_MNIST_DIR) into buf (len bytes): the
 *  `.gz` name, or the plain name if only that one exists. Does not check that the file exists.
 *  TG_OK, or TG_ERR_NULL / TG_ERR_VALUE (bad part, buffer too small; see tg_last_errmsg). */
TG_API tg_status tg_idx_path(const char *dir, tg_idx_part part, char *buf, size_t len);

/** opaque: images [N, ...] and their labels [N], both kept as bytes */
typedef struct tg_idx_dataset tg_idx_dataset;

/** Loads an images file and its labels file (1 dimension, as many labels as images). Returns NULL
 *  on any error of tg_idx_load or a mismatch (TG_ERR_FORMAT), see tg_last_errmsg. Caller frees
 *  with tg_idx_dataset_free. */
TG_API tg_idx_dataset *tg_idx_dataset_load(const char *images_path, const char *labels_path);
/** Loads the training (train != 0) or test set of an MNIST-style directory (NULL:
 *  TG_FASHION_MNIST_DIR), with file names from tg_idx_path. As tg_idx_dataset_load. */
TG_API tg_idx_dataset *tg_idx_dataset_load_dir(const char *dir, int train);
/** Frees a data set. NULL is ignored. */
TG_API void tg_idx_dataset_free(tg_idx_dataset *ds);
/** Number of samples N. */
TG_API int64_t tg_idx_dataset_size(const tg_idx_dataset *ds);
/** Values per sample (784 for 28x28 images). */
TG_API int64_t tg_idx_dataset_features(const tg_idx_dataset *ds);
/** 1 + the largest label (10 for MNIST). */
TG_API int tg_idx_dataset_classes(const tg_idx_dataset *ds);
/** The images array [N, rows, cols]. Owned by `ds`. */
TG_API const tg_idx *tg_idx_dataset_images(const tg_idx_dataset *ds);
/** The labels array [N]. Owned by `ds`. */
TG_API const tg_idx *tg_idx_dataset_labels(const tg_idx_dataset *ds);
/** Converts the samples indices[0..n) (any order, repeats allowed: shuffled mini-batches) into
 *  the caller's tensors, allocating nothing: x (f32 or f64, shape [n, ...] with n * features
 *  elements) gets the pixels scaled to [0,1] (byte / 255), y (i32 [n], or NULL) the labels.
 *  Returns TG_OK, or TG_ERR_NULL / TG_ERR_DTYPE / TG_ERR_SHAPE / TG_ERR_VALUE (an index out of
 *  range) with a message in tg_last_errmsg; on error x and y are untouched. */
TG_API tg_status tg_idx_dataset_batch(const tg_idx_dataset *ds, const int64_t *indices, int64_t n,
                                      tg_tensor *x, tg_tensor *y);

/* ---- Checkpoints: safetensors (src/io/checkpoint.c) ------------------------------------------ */

/** Saves `n` parameters as a safetensors file at `path`: an 8-byte little-endian header length, a
 *  JSON header (per tensor: dtype F32/F64/I32, shape, data_offsets; "__metadata__" holds
 *  "format": "tapegrad" and "xxh3_64:<name>": the XXH3-64 of the tensor's bytes in 16 hex digits),
 *  then the raw little-endian data, in the order given. Names are names[i], or, when `names` is
 *  NULL, tg_tensor_name(params[i]); each must be non-empty and unique. The save is atomic: the
 *  data goes to a temporary file in the same directory, is flushed and fsync'ed, and is renamed
 *  over `path` (then the directory is fsync'ed), so a failure at any point leaves a previous file
 *  at `path` intact. Returns TG_OK, TG_ERR_NULL / TG_ERR_VALUE (bad arguments, missing or repeated
 *  names), TG_ERR_IO (with the step that failed), TG_ERR_NOMEM; message in tg_last_errmsg. */
TG_API tg_status tg_checkpoint_save(const char *path, tg_tensor *const *params, int n,
                                    const char *const *names);
/** Loads a safetensors file into `n` parameters (named as for tg_checkpoint_save), which must
 *  match the file exactly: the same set of names, and for each the same dtype and shape. The whole
 *  file is checked first -- header length, JSON, dtypes, shapes, data offsets (in range, no
 *  overlap, covering the data section), checksums (required when the file's format is
 *  "tapegrad", checked when present otherwise, so files from other safetensors writers load) --
 *  and only then copied into the parameters: on any error no parameter is modified. Returns TG_OK,
 *  TG_ERR_IO, TG_ERR_FORMAT (malformed file, checksum mismatch naming the tensor, missing or extra
 *  tensors), TG_ERR_SHAPE (dtype or shape differs from the model's), TG_ERR_NULL / TG_ERR_VALUE /
 *  TG_ERR_NOMEM; message in tg_last_errmsg naming the file, the tensor and the offsets. */
TG_API tg_status tg_checkpoint_load(const char *path, tg_tensor *const *params, int n,
                                    const char *const *names);
/** As tg_checkpoint_load, from `len` bytes in memory (not kept); `name` (may be NULL) is used in
 *  messages. */
TG_API tg_status tg_checkpoint_load_mem(const void *bytes, size_t len, const char *name,
                                        tg_tensor *const *params, int n, const char *const *names);

/* ---- Training state: exact resume after a crash (src/io/checkpoint.c) ---------------------------
 * A training run can be stopped at any step (a crash, kill -9, a power cut) and continued from its
 * last saved state so that it ends bit-identical to a run that was never interrupted: save the
 * parameters, the optimizer's state, every random generator and the position in the data, all in
 * one file, at the same step; load them all before the next step. */

/** Where a run is in its data: the epoch, the generator that draws the epoch's permutation (its
 *  state before that epoch's shuffle: the permutation's seed) and the position in it. A tg_dataset
 *  fills and restores it (tg_dataset_get_position / tg_dataset_set_position); a loop that batches
 *  its own data fills the fields with its own meaning (e.g. cursor = batches done). */
typedef struct tg_data_position {
    uint64_t seed;  /**< the dataset's seed (tg_dataset_set_position checks it) */
    int64_t epoch;  /**< epochs finished before the current one (0 during the first) */
    int64_t cursor; /**< rows (or batches) of the current epoch already delivered */
    tg_rng rng;     /**< the shuffling generator before the current epoch's shuffle */
} tg_data_position;

/** The dataset's current position. TG_OK or TG_ERR_NULL. */
TG_API tg_status tg_dataset_get_position(const tg_dataset *dataset, tg_data_position *pos);
/** Puts the dataset at `pos` (from tg_dataset_get_position on a dataset made with the same
 *  arguments): the next tg_dataset_next returns what it returned then. TG_OK, TG_ERR_NULL, or
 *  TG_ERR_VALUE (another seed, a cursor beyond the rows); on error nothing changes. */
TG_API tg_status tg_dataset_set_position(tg_dataset *dataset, const tg_data_position *pos);

/** Everything a training state file holds; the same struct describes what to save and where to
 *  load. Pointers are the caller's; nothing is kept after the call. */
typedef struct tg_train_state {
    tg_tensor *const *params; /**< the model's parameters (f32/f64/i32 leaves) */
    int n_params;             /**< how many */
    const char *const *names; /**< their names, or NULL for tg_tensor_name(params[i]) */
    tg_optim *optim;          /**< its optimizer (each of its parameters is in params), or NULL */
    tg_rng *const *rngs;      /**< every generator the run draws from (dropout, noise...) */
    int n_rngs;               /**< how many (0: none) */
    tg_data_position *data;   /**< the data position, or NULL */
} tg_train_state;

/** Saves a training state at `path` as one safetensors file, written atomically as
 *  tg_checkpoint_save writes (a crash at any point leaves the previous file intact), readable by
 *  any safetensors reader: the parameters under their names; the optimizer's state buffers as
 *  tensors "__optim__.m.<name>" (momentum's velocity, Adam's first moment) and "__optim__.v.<name>"
 *  (Adam's second moment), in the parameter's dtype and shape; every tensor with its XXH3-64 in
 *  __metadata__. The scalars are strings in __metadata__: "tapegrad.train_state" ("1"),
 *  "optim.kind" (sgd, momentum, nesterov, adam, or none), "optim.steps" (which fixes the
 *  learning-rate schedule's position and Adam's bias correction), "rng.count" and "rng.<i>"
 *  (the 4 state words in hex), "data.seed", "data.epoch", "data.cursor", "data.rng", and
 *  "state.xxh3_64", the XXH3-64 of those values. Returns TG_OK or an error as
 *  tg_checkpoint_save (TG_ERR_VALUE also for an optimizer parameter missing from params). */
TG_API tg_status tg_train_state_save(const char *path, const tg_train_state *state);
/** Loads a training state saved by tg_train_state_save into `state`, which must describe the same
 *  run: the same parameter names, dtypes and shapes, an optimizer of the same kind over the same
 *  parameters (or none in both), as many generators, a data position in both or neither. The whole
 *  file is verified first -- its structure and checksums as by tg_checkpoint_load, the state values
 *  against their checksum -- and only then are the parameters, the optimizer's buffers and step
 *  count, the generators and *state->data written: on any error nothing is modified. Reads the
 *  8-byte header length and the header before the data, so memory stays bounded by the model's
 *  size. Returns TG_OK or an error as tg_checkpoint_load, with the message in tg_last_errmsg. */
TG_API tg_status tg_train_state_load(const char *path, const tg_train_state *state);

/** Anomaly mode (off by default; survives tg_tape_reset). When on, after every op's forward and
 *  after every node's backward the tape checks the values just produced; the first NaN or Inf puts
 *  the tape in error TG_ERR_NONFINITE with a message naming the op, the caller's file and line,
 *  the tensor's name, its tape index, the input shapes and where the value appeared, e.g.
 *      model.c:12: tg_log: anomaly: forward produced -inf at element 0 of the output [2,3] ...
 *  The failing builder call returns NULL (tg_backward returns TG_ERR_NONFINITE); later calls do
 *  no work, as after any tape error. Costs one pass over each output and gradient. Returns TG_OK
 *  or TG_ERR_NULL. */
TG_API tg_status tg_tape_set_anomaly(tg_tape *tape, int on);
/** 1 if anomaly mode is on, else 0 (also for NULL). */
TG_API int tg_tape_anomaly(const tg_tape *tape);

/* ---- Threads and kernels (src/kernels/) ------------------------------------------------------ */

/** Sets how many threads tapegrad's kernels use (matmul, and large elementwise ops), counting
 *  the calling thread: 1 (the default, or TG_NUM_THREADS from the environment) to 256. Results
 *  are bit-identical whatever the count: work is split over rows and columns of the output, never
 *  over a sum. Returns TG_OK, or TG_ERR_VALUE for a count out of range (see tg_last_errmsg).
 *  Call it from one thread, between computations; lowering the count joins the extra workers. */
TG_API tg_status tg_set_num_threads(int n);
/** The thread count set by tg_set_num_threads (or TG_NUM_THREADS, or 1). */
TG_API int tg_get_num_threads(void);
/** The matmul kernel in use: "avx512", "avx2", "portable" or "openblas". The best one the CPU
 *  runs is chosen at the first call; TG_KERNEL=NAME in the environment picks another if it is
 *  available. Static string; never NULL. */
TG_API const char *tg_kernel_name(void);

/* ---- Version --------------------------------------------------------------------------------- */

/* The one version number lives in CMakeLists.txt (project(VERSION)); CMake refuses to configure
 * if these macros disagree with it, so a release bumps both in one commit. */
#define TG_VERSION_MAJOR 0        /**< major version: incompatible API changes */
#define TG_VERSION_MINOR 1        /**< minor version: added functionality */
#define TG_VERSION_PATCH 0        /**< patch version: fixes only */
#define TG_VERSION_STRING "0.1.0" /**< "MAJOR.MINOR.PATCH" of this header */
/** The header's version as one comparable integer: MAJOR * 10000 + MINOR * 100 + PATCH. */
#define TG_VERSION_NUMBER (TG_VERSION_MAJOR * 10000 + TG_VERSION_MINOR * 100 + TG_VERSION_PATCH)

/** The version of the library actually linked at run time ("0.1.0"), which may differ from the
 *  TG_VERSION_STRING a program was compiled against (a newer shared library). Static string,
 *  never NULL; reports no errors. */
TG_API const char *tg_version(void);

#ifdef __cplusplus
}
#endif

#endif /* TAPEGRAD_H */
