/* tape.c -- the tape: its arena, recording a node, observers, and the reverse pass.
 * The reverse pass is the one place that calls an op's backward (besides the teaching tools'
 * local derivatives); it alone decides which gradients flow. */
#include "engine.h"

#include <stdlib.h>

/* The arena is a list of blocks. Allocation bumps a pointer in the current block; reset rewinds.
 * When one step needed more than one block, reset replaces them with one block big enough for all,
 * so from the second step on a steady training loop allocates nothing. */
typedef struct tg_block {
    struct tg_block *next;
    size_t size; /* usable bytes after the header */
    size_t used;
    _Alignas(64) unsigned char mem[];
} tg_block;

#define TG_ALIGN 64
#define TG_FIRST_BLOCK (1u << 16)
#define TG_ERRMSG_LEN 512
#define TG_MAX_OBSERVERS 8
/* Inputs of one node whose destination gradients fit on the stack in the reverse pass. */
#define TG_STACK_GRADS 16

typedef struct observer {
    tg_observer_fn fn;
    void *user;
    void (*release)(void *user); /* a tool's own state, freed with the tape (or NULL) */
} observer;

struct tg_tape {
    tg_block *blocks; /* current block first */
    size_t arena_bytes;
    tg_tensor **nodes; /* forward order */
    int64_t n_nodes, cap_nodes;
    tg_status status;
    char errmsg[TG_ERRMSG_LEN];
    uint64_t generation; /* bumped by every reset: tensors of an older one are stale */
    uint32_t pass;       /* bumped by every backward pass: stamps the tensors' scratch fields */
    bool training;       /* tg_tape_set_training */
    bool poison_fresh;   /* tests: fresh gradients are filled with NaN (tg__tape_poison_fresh) */
    observer observers[TG_MAX_OBSERVERS];
    int n_observers;
    tg_tensor **grads_scratch; /* destination gradients of a node with many inputs */
    int grads_cap;
    const char *last_file, *last_base; /* tg__base_name(last_file), for the next record */
};

static tg_block *block_new(size_t size) {
    tg_block *b = malloc(sizeof(tg_block) + size);
    if (!b)
        return NULL;
    b->next = NULL;
    b->size = size;
    b->used = 0;
    return b;
}

tg_tape *tg_tape_new(void) {
    tg_tape *t = calloc(1, sizeof *t);
    if (!t) {
        tg__set_last_error(TG_ERR_NOMEM, "tg_tape_new: out of memory");
        return NULL;
    }
    t->blocks = block_new(TG_FIRST_BLOCK);
    if (!t->blocks) {
        free(t);
        tg__set_last_error(TG_ERR_NOMEM, "tg_tape_new: out of memory");
        return NULL;
    }
    t->arena_bytes = TG_FIRST_BLOCK;
    t->generation = 1;
    t->training = true;
    return t;
}

static void free_blocks(tg_block *b) {
    while (b) {
        tg_block *next = b->next;
        free(b);
        b = next;
    }
}

void tg_tape_free(tg_tape *t) {
    if (!t)
        return;
    for (int i = 0; i < t->n_observers; i++)
        if (t->observers[i].release)
            t->observers[i].release(t->observers[i].user);
    free_blocks(t->blocks);
    free(t->nodes);
    free(t->grads_scratch);
    free(t);
}

void tg_tape_reset(tg_tape *t) {
    if (!t)
        return;
    if (t->blocks && t->blocks->next) {
        /* Several blocks were needed: keep one block the size of all of them. */
        size_t total = 0;
        for (tg_block *b = t->blocks; b; b = b->next)
            total += b->size;
        tg_block *big = block_new(total);
        if (big) {
            free_blocks(t->blocks);
            t->blocks = big;
            t->arena_bytes = total;
        } else { /* keep the old blocks; they still work */
            for (tg_block *b = t->blocks; b; b = b->next)
                b->used = 0;
        }
    }
    if (t->blocks)
        t->blocks->used = 0;
    t->n_nodes = 0;
    t->generation++;
    t->status = TG_OK;
    t->errmsg[0] = '\0';
}

static size_t round_up(size_t bytes) { return (bytes + TG_ALIGN - 1) & ~(size_t)(TG_ALIGN - 1); }

/* A tensor struct's piece of the arena (round_up(sizeof(tg_tensor)) bytes, aligned), zeroed with
 * plain vector stores: a memset of this constant size compiles to rep stos, which takes longer
 * to start than these take to finish, twice per node of a small graph. */
typedef uint64_t tg__zero_vec __attribute__((vector_size(16)));
_Static_assert(sizeof(tg_tensor) > 192 && sizeof(tg_tensor) <= 256,
               "zero_tensor_piece clears the 256 bytes of round_up(sizeof(tg_tensor))");
static void zero_tensor_piece(void *p) {
    tg__zero_vec *v = p;
    const tg__zero_vec z = {0, 0};
    v[0] = z, v[1] = z, v[2] = z, v[3] = z, v[4] = z, v[5] = z, v[6] = z, v[7] = z;
    v[8] = z, v[9] = z, v[10] = z, v[11] = z, v[12] = z, v[13] = z, v[14] = z, v[15] = z;
}

static void *arena_alloc(tg_tape *t, size_t bytes, bool zero) {
    size_t need = round_up(bytes);
    if (need == 0)
        need = TG_ALIGN;
    tg_block *b = t->blocks;
    if (!b || b->size - b->used < need) {
        /* Blocks after the first are only used until the next reset merges them. */
        size_t size = t->arena_bytes > need ? t->arena_bytes : need;
        tg_block *nb = block_new(size);
        if (!nb) {
            tg__tape_fail(t, TG_ERR_NOMEM, NULL, 0, "tapegrad",
                          "out of memory (asked for %zu bytes)", bytes);
            return NULL;
        }
        nb->next = b;
        t->blocks = nb;
        t->arena_bytes += size;
        b = nb;
    }
    void *p = b->mem + b->used;
    b->used += need;
    if (zero)
        memset(p, 0, need);
    return p;
}

void *tg__tape_alloc(tg_tape *t, size_t bytes) { return arena_alloc(t, bytes, true); }
void *tg__tape_alloc_raw(tg_tape *t, size_t bytes) { return arena_alloc(t, bytes, false); }

/* 1 if p points into memory the arena has handed out since the last reset (so reading it is
 * safe whatever it holds). */
static bool arena_holds(const tg_tape *t, const void *p) {
    const unsigned char *c = p;
    for (const tg_block *b = t->blocks; b; b = b->next)
        if (c >= b->mem && c < b->mem + b->used)
            return true;
    return false;
}

/* 1 if p points anywhere inside the arena's blocks, used or not: memory that is allocated, so
 * reading it is safe, but past what this recording used it holds only older bytes. */
static bool arena_contains(const tg_tape *t, const void *p) {
    const unsigned char *c = p;
    for (const tg_block *b = t->blocks; b; b = b->next)
        if (c >= b->mem && c < b->mem + b->size)
            return true;
    return false;
}

tg_status tg_tape_status(const tg_tape *t) { return t ? t->status : TG_ERR_NULL; }
const char *tg_tape_errmsg(const tg_tape *t) { return t ? t->errmsg : "tape is NULL"; }
int64_t tg_tape_size(const tg_tape *t) { return t ? t->n_nodes : 0; }
tg_tensor *tg_tape_node(const tg_tape *t, int64_t i) {
    return (t && i >= 0 && i < t->n_nodes) ? t->nodes[i] : NULL;
}
size_t tg_tape_bytes(const tg_tape *t) {
    return t ? t->arena_bytes + (size_t)t->cap_nodes * sizeof(tg_tensor *) : 0;
}
uint64_t tg__tape_generation(const tg_tape *t) { return t->generation; }
int tg__tensor_stale(const tg_tensor *x) {
    return x->on_tape && x->tape && x->generation != x->tape->generation;
}

tg_status tg_tape_set_training(tg_tape *t, int training) {
    if (!t)
        return tg__set_last_error(TG_ERR_NULL, "tg_tape_set_training: tape is NULL");
    t->training = training != 0;
    return TG_OK;
}
int tg_tape_training(const tg_tape *t) { return t && t->training; }
int tg__tape_training(const tg_tape *t) { return t->training; }

/* ---- Observers ---- */

tg_status tg_tape_observe(tg_tape *t, tg_observer_fn fn, void *user) {
    return tg__tape_observe_owned(t, fn, user, NULL);
}

tg_status tg__tape_observe_owned(tg_tape *t, tg_observer_fn fn, void *user,
                                 void (*release)(void *user)) {
    if (!t || !fn)
        return tg__set_last_error(TG_ERR_NULL, "tg_tape_observe: %s is NULL", !t ? "tape" : "fn");
    for (int i = 0; i < t->n_observers; i++)
        if (t->observers[i].fn == fn && t->observers[i].user == user)
            return tg__set_last_error(TG_ERR_VALUE,
                                      "tg_tape_observe: this observer is already added");
    if (t->n_observers == TG_MAX_OBSERVERS)
        return tg__set_last_error(
            TG_ERR_STATE, "tg_tape_observe: the tape has %d observers already", TG_MAX_OBSERVERS);
    t->observers[t->n_observers++] = (observer){fn, user, release};
    return TG_OK;
}

tg_status tg_tape_unobserve(tg_tape *t, tg_observer_fn fn, void *user) {
    if (!t || !fn)
        return tg__set_last_error(TG_ERR_NULL, "tg_tape_unobserve: %s is NULL", !t ? "tape" : "fn");
    for (int i = 0; i < t->n_observers; i++)
        if (t->observers[i].fn == fn && t->observers[i].user == user) {
            memmove(t->observers + i, t->observers + i + 1,
                    sizeof(observer) * (size_t)(t->n_observers - i - 1));
            t->n_observers--;
            return TG_OK;
        }
    return tg__set_last_error(TG_ERR_VALUE, "tg_tape_unobserve: no such observer on this tape");
}

bool tg__node_runs(const tg_tensor *n) {
    return n->on_tape && n->tape && n->pass == n->tape->pass && n->ready_after && n->needs;
}

void *tg__tape_tool_state(const tg_tape *t, tg_observer_fn fn) {
    for (int i = 0; i < t->n_observers; i++)
        if (t->observers[i].fn == fn)
            return t->observers[i].user;
    return NULL;
}

bool tg__tape_has_observer(const tg_tape *t, tg_observer_fn fn, const void *user) {
    for (int i = 0; i < t->n_observers; i++)
        if (t->observers[i].fn == fn && t->observers[i].user == user)
            return true;
    return false;
}

/* Tells every observer; the first that says stop puts the tape in error. */
static tg_status notify(tg_tape *t, tg_event_kind kind, tg_tensor *tensor, tg_tensor *output,
                        tg_tensor *const *grads, int n_grads) {
    if (t->n_observers == 0)
        return TG_OK; /* the common case: one branch */
    tg_event ev = {kind, t, tensor, output, grads, n_grads};
    for (int i = 0; i < t->n_observers; i++) {
        tg_status st = t->observers[i].fn(&ev, t->observers[i].user);
        if (st != TG_OK) {
            if (t->status == TG_OK)
                tg__tape_fail(t, st, NULL, 0, "tapegrad", "an observer stopped the pass: %s",
                              tg_last_errmsg());
            return t->status;
        }
    }
    return TG_OK;
}

/* ---- Errors ---- */

const char *tg__base_name(const char *path) {
    if (!path)
        return NULL;
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

void tg__tape_fail(tg_tape *t, tg_status status, const char *file, int line, const char *op,
                   const char *fmt, ...) {
    if (!t || t->status != TG_OK)
        return; /* the first error is the one that explains the others */
    t->status = status;
    /* snprintf returns the length it wanted, not what it wrote: clamp so that a long file name
     * truncates the message instead of moving the write past the buffer. */
    const int last = (int)sizeof t->errmsg - 1;
    int n = 0;
    if (file)
        n = snprintf(t->errmsg, sizeof t->errmsg, "%s:%d: ", tg__base_name(file), line);
    n = n < 0 ? 0 : n > last ? last : n;
    n += snprintf(t->errmsg + n, sizeof t->errmsg - (size_t)n, "%s: ", op);
    n = n < 0 ? 0 : n > last ? last : n;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t->errmsg + n, sizeof t->errmsg - (size_t)n, fmt, ap);
    va_end(ap);
}

/* ---- Recording ---- */

static bool push_node(tg_tape *t, tg_tensor *node) {
    if (t->n_nodes == t->cap_nodes) {
        int64_t cap = t->cap_nodes ? 2 * t->cap_nodes : 64;
        tg_tensor **nodes = realloc(t->nodes, (size_t)cap * sizeof *nodes);
        if (!nodes)
            return false;
        t->nodes = nodes;
        t->cap_nodes = cap;
    }
    node->tape_index = t->n_nodes;
    t->nodes[t->n_nodes++] = node;
    return true;
}

/* Why x cannot be an input of tape t, or NULL if it can. A pointer into t's arena must be one of
 * its current nodes; anything else is a leaf or another tape's node, whose fields are safe to
 * read. */
static const char *bad_input(const tg_tape *t, const tg_tensor *x) {
    if (arena_holds(t, x)) {
        if (x->tape_index >= 0 && x->tape_index < t->n_nodes && t->nodes[x->tape_index] == x)
            return NULL;
        return "is not a node of this tape's current recording (a gradient, or a tensor from "
               "before tg_tape_reset)";
    }
    if (arena_contains(t, x)) /* past what this recording used: a node of an earlier one */
        return "is from before tg_tape_reset (stale)";
    if (x->on_tape)
        return x->tape == t ? "is from before tg_tape_reset (stale)"
                            : "was recorded on another tape";
    /* Cheap sanity for what cannot be checked fully (a freed or stale pointer whose memory now
     * holds other bytes): refuse a header no tensor can have rather than index with it. */
    if (x->rank < 0 || x->rank > TG_MAX_RANK ||
        (x->dtype != TG_F32 && x->dtype != TG_F64 && x->dtype != TG_I32))
        return "is not a valid tensor (freed, stale, or never a tensor)";
    return NULL;
}

const char *tg__op_label(const tg__op_desc *op, const void *params, char *buf, size_t len) {
    const char *own = op->instance_name && params ? op->instance_name(params) : NULL;
    if (own)
        snprintf(buf, len, "tg_%s(%s)", op->name, own);
    else
        snprintf(buf, len, "tg_%s", op->name);
    return buf;
}

const char *tg__node_op_name(const tg_tensor *n) {
    if (!n->op)
        return "leaf";
    const char *own = n->op->instance_name ? n->op->instance_name(n->params) : NULL;
    return own ? own : n->op->name;
}

tg_tensor *tg__record(tg_tape *t, const tg__op_desc *d, tg_tensor *const *inputs, int n_inputs,
                      const void *params, const char *file, int line) {
    TG_CHECK(d != NULL);
    /* The name for messages ("tg_matmul", "tg_custom(square)"), formatted only when one is
     * written: a builder call on the hot path does no string work. */
    char opname_buf[64];
#define opname tg__op_label(d, params, opname_buf, sizeof opname_buf)

    if (!t) {
        tg__set_last_error(TG_ERR_NULL, "%s:%d: %s: tape is NULL", tg__base_name(file), line,
                           opname);
        return NULL;
    }
    if (t->status != TG_OK)
        return NULL; /* an earlier call failed; its message stays */
    if (n_inputs < d->min_inputs || n_inputs > d->max_inputs || (n_inputs > 0 && !inputs)) {
        if (!inputs && n_inputs > 0)
            tg__tape_fail(t, TG_ERR_NULL, file, line, opname, "the inputs array is NULL");
        else if (d->min_inputs == d->max_inputs)
            tg__tape_fail(t, TG_ERR_VALUE, file, line, opname, "takes %d input%s, got %d",
                          d->min_inputs, d->min_inputs == 1 ? "" : "s", n_inputs);
        else
            tg__tape_fail(t, TG_ERR_VALUE, file, line, opname, "takes %d to %d inputs, got %d",
                          d->min_inputs, d->max_inputs, n_inputs);
        return NULL;
    }

    bool needs_grad = false;
    const tg_tensor *first_float = NULL; /* the input whose dtype every float input shares */
    int first_float_at = 0;
    for (int i = 0; i < n_inputs; i++) {
        const tg_tensor *x = inputs[i];
        if (!x) {
            tg__tape_fail(t, TG_ERR_NULL, file, line, opname, "input %d is NULL", i + 1);
            return NULL;
        }
        const char *why = bad_input(t, x);
        if (why) {
            tg__tape_fail(t, TG_ERR_STATE, file, line, opname, "input %d %s", i + 1, why);
            return NULL;
        }
        const bool index_ok = i < 32 && (d->index_inputs >> i & 1u);
        if (x->dtype == TG_I32 && index_ok)
            continue; /* integer indices: the op's shape check validates them */
        if (x->dtype != TG_F32 && x->dtype != TG_F64) {
            tg__tape_fail(t, TG_ERR_DTYPE, file, line, opname,
                          "input %d has dtype %s; this op takes f32 or f64%s", i + 1,
                          tg__dtype_name(x->dtype), index_ok ? " (or i32 indices)" : "");
            return NULL;
        }
        if (!first_float) {
            first_float = x;
            first_float_at = i + 1;
        } else if (x->dtype != first_float->dtype) {
            tg__tape_fail(t, TG_ERR_DTYPE, file, line, opname,
                          "dtypes differ: input %d is %s, input %d is %s", first_float_at,
                          tg__dtype_name(first_float->dtype), i + 1, tg__dtype_name(x->dtype));
            return NULL;
        }
        needs_grad |= x->requires_grad;
    }

    /* The node, its inputs and its params in one piece of the arena (each part aligned). */
    const size_t node_bytes = round_up(sizeof(tg_tensor)), /* 256 */
        in_bytes = round_up(sizeof(tg_tensor *) * (size_t)n_inputs);
    unsigned char *piece = arena_alloc(t, node_bytes + in_bytes + d->params_size, false);
    if (!piece)
        return NULL;
    tg_tensor *out = (tg_tensor *)piece;
    zero_tensor_piece(out);
    tg_tensor **in = n_inputs ? (tg_tensor **)(piece + node_bytes) : NULL;
    void *p = d->params_size ? piece + node_bytes + in_bytes : NULL;
    if (n_inputs)
        memcpy(in, inputs, sizeof *in * (size_t)n_inputs);
    if (d->params_size) {
        if (params)
            memcpy(p, params, d->params_size);
        else
            memset(p, 0, d->params_size);
    }
    if (file != t->last_file) { /* a loop's builder calls come from a few lines of one file */
        t->last_file = file;
        t->last_base = tg__base_name(file);
    }
    /* The struct is zeroed (one short memset: a compound literal here compiles to rep stos,
     * slower for 256 bytes); the rest is set field by field. */
    out->on_tape = true;
    out->owner = TG__OWN_TAPE;
    out->tape = t;
    out->generation = t->generation;
    out->op = d;
    out->dtype = first_float ? first_float->dtype : TG_F32;
    out->n_inputs = n_inputs;
    out->inputs = in;
    out->params = p;
    out->requires_grad = needs_grad;
    out->src_file = t->last_base;
    out->src_line = line;
    out->tape_index = -1;

    char msg[TG_ERRMSG_LEN / 2];
    msg[0] = '\0';
    tg_status st = d->shape(out, msg, sizeof msg);
    if (st != TG_OK) {
        tg__tape_fail(t, st, file, line, opname, "%s", msg);
        return NULL;
    }
    /* Output sizes can come from the caller (custom ops) or from zero-element inputs ([M,0] x
     * [0,N]); their product must fit, as tensor.c requires of leaves, or it would wrap. */
    out->numel = 1;
    int64_t sizes = 1; /* as tensor.c: the product of the nonzero sizes, which bounds strides */
    for (int i = 0; i < out->rank; i++) {
        int64_t grown; /* sizes * shape[i] <= INT64_MAX / 16, without a division */
        if (out->shape[i] > 0 &&
            (__builtin_mul_overflow(sizes, out->shape[i], &grown) || grown > INT64_MAX / 16)) {
            char s[TG_SHAPE_STR_LEN];
            tg__tape_fail(t, TG_ERR_VALUE, file, line, opname, "output %s has too many elements",
                          tg__shape_str(out, s, sizeof s));
            return NULL;
        }
        sizes *= out->shape[i] > 0 ? out->shape[i] : 1;
        out->numel *= out->shape[i];
    }
    if (out->dtype == TG_I32)
        out->requires_grad = false; /* integer outputs (argmax) carry no gradient */
    const size_t bytes = (size_t)out->numel * tg__dtype_size(out->dtype);
    const tg_tensor *viewed = (d->flags & TG__OP_VIEW) ? out->inputs[0] : NULL;
    if (viewed && viewed->on_tape && viewed->tape == t && viewed->generation == t->generation &&
        viewed->dtype == out->dtype && viewed->numel == out->numel && out->numel > 0)
        out->data = viewed->data; /* a view: see TG__OP_VIEW */
    else
        out->data = (d->flags & TG__OP_ZERO_OUTPUT) ? tg__tape_alloc(t, bytes)
                                                    : tg__tape_alloc_raw(t, bytes);
    if (!out->data)
        return NULL;
    st = d->forward(t, out);
    if (st != TG_OK) {
        tg__tape_fail(t, st, file, line, opname, "forward failed (%s)", tg_status_name(st));
        return NULL;
    }
    if (t->status != TG_OK) /* forward ran out of arena memory */
        return NULL;
    /* Observers see the node complete, at the index it is about to take; one that stops the
     * recording (anomaly mode) keeps it off the tape. */
    out->tape_index = t->n_nodes;
    if (notify(t, TG_EVENT_FORWARD, out, NULL, NULL, 0) != TG_OK)
        return NULL;
    if (!push_node(t, out)) {
        tg__tape_fail(t, TG_ERR_NOMEM, file, line, opname, "out of memory for the node list");
        return NULL;
    }
    return out;
}
#undef opname

/* ---- The reverse pass ---- */

/* A gradient for x: for leaves malloc'ed, zeroed and kept; for tape tensors in the arena and not
 * zeroed: the reverse walk zeroes a node's gradient right before the first backward that adds
 * into it (zero_node_grad). */
static tg_status ensure_grad(tg_tape *t, tg_tensor *x) {
    if (x->grad)
        return TG_OK;
    size_t bytes = (size_t)x->numel * tg__dtype_size(x->dtype);
    tg_tensor *g;
    if (x->on_tape) {
        unsigned char *piece = arena_alloc(t, round_up(sizeof *g) + bytes, false);
        if (!piece)
            return TG_ERR_NOMEM;
        g = (tg_tensor *)piece;
        zero_tensor_piece(g);
        g->data = piece + round_up(sizeof *g);
        g->dtype = x->dtype;
        g->rank = x->rank;
        g->numel = x->numel;
        g->on_tape = true;
        g->owner = TG__OWN_TAPE;
        g->tape = t;
        g->generation = t->generation;
        g->tape_index = -1;
    } else {
        g = tg_tensor_new(x->dtype, x->rank, x->shape);
        if (!g) {
            tg__tape_fail(t, TG_ERR_NOMEM, NULL, 0, "tg_backward", "out of memory for a gradient");
            return TG_ERR_NOMEM;
        }
        g->owner = TG__OWN_GRAD;
    }
    memcpy(g->shape, x->shape, sizeof g->shape);
    x->grad = g;
    return TG_OK;
}

static void fill_one(tg_tensor *g) {
    TG_FOR_DTYPE(g->dtype, T, T *d = g->data; for (int64_t i = 0; i < g->numel; i++) d[i] = 1;);
}

static bool is_float(const tg_tensor *x) { return x->dtype == TG_F32 || x->dtype == TG_F64; }

/* Whether x needs a gradient in pass `pass`: a leaf when it requires one (now, not when it was
 * recorded); a node when one of its inputs does (computed in forward order below). */
static bool needs(const tg_tensor *x, uint32_t pass) {
    if (!x->on_tape)
        return x->requires_grad && is_float(x);
    return x->pass == pass && x->needs;
}

static tg_status check_output(tg_tape *t, const tg_tensor *output, const tg_tensor *seed) {
    if (!output) {
        tg__tape_fail(t, TG_ERR_NULL, NULL, 0, "tg_backward", "output is NULL");
        return t->status;
    }
    if (!arena_holds(t, output)) {
        tg__tape_fail(t, TG_ERR_STATE, NULL, 0, "tg_backward",
                      "output is %s, not a tensor recorded on this tape",
                      arena_contains(t, output) || (output->on_tape && output->tape == t)
                          ? "from before tg_tape_reset"
                      : output->on_tape ? "from another tape"
                                        : "a leaf");
        return t->status;
    }
    if (!(output->tape_index >= 0 && output->tape_index < t->n_nodes &&
          t->nodes[output->tape_index] == output)) {
        tg__tape_fail(t, TG_ERR_STATE, NULL, 0, "tg_backward",
                      "output is not a node of this tape's current recording (a gradient, or a "
                      "tensor from before tg_tape_reset)");
        return t->status;
    }
    char s1[TG_SHAPE_STR_LEN], s2[TG_SHAPE_STR_LEN];
    if (!seed) {
        if (output->numel != 1) {
            tg__tape_fail(t, TG_ERR_SHAPE, NULL, 0, "tg_backward",
                          "output has shape %s, not one element; pass a seed gradient with "
                          "tg_backward_seed",
                          tg__shape_str(output, s1, sizeof s1));
            return t->status;
        }
    } else if (seed->numel != output->numel || seed->rank != output->rank ||
               memcmp(seed->shape, output->shape, sizeof(int64_t) * (size_t)output->rank) != 0 ||
               seed->dtype != output->dtype) {
        tg__tape_fail(t, TG_ERR_SHAPE, NULL, 0, "tg_backward", "seed is %s %s but output is %s %s",
                      tg__dtype_name(seed->dtype), tg__shape_str(seed, s1, sizeof s1),
                      tg__dtype_name(output->dtype), tg__shape_str(output, s2, sizeof s2));
        return t->status;
    }
    if (!is_float(output)) {
        tg__tape_fail(t, TG_ERR_DTYPE, NULL, 0, "tg_backward", "output has dtype %s: no gradient",
                      tg__dtype_name(output->dtype));
        return t->status;
    }
    return TG_OK;
}

/* On nodes, ready_after during a pass: 0 off the path from the output, ON_PATH on it with the
 * gradient not yet zeroed, ZEROED once it has been (tg__node_runs reads any nonzero as "runs"). */
enum { ON_PATH = 1, ZEROED = 2 };

/* Node x's gradient starts the pass from zero, right before the first backward adds into it, so
 * that its memory is in cache when the += comes (and never zeroed long before). */
static void zero_node_grad(tg_tensor *x) {
    memset(x->grad->data, 0, (size_t)x->numel * tg__dtype_size(x->dtype));
    x->ready_after = ZEROED;
}

/* A node's gradient memory, right after its header in the same arena piece (ensure_grad). */
static void *own_grad_data(tg_tensor *g) { return (unsigned char *)g + round_up(sizeof *g); }

/* x's gradient is n's, element for element, and x has no other sender: x reads n's memory
 * (see "Shared gradients" in engine.h). Nothing writes either afterwards in this pass. */
static void share_grad(tg_tensor *x, const tg_tensor *n) {
    x->grad->data = n->grad->data;
    x->grad->fresh = false;
    x->ready_after = ZEROED;
}

/* Before a pass: a shared gradient gets its own memory back with the values it showed (the
 * sharer's gradient may be rewritten by this pass while x is not reached). */
static void unshare_grad(tg_tensor *x) {
    if (!x->grad || !x->on_tape)
        return;
    void *own = own_grad_data(x->grad);
    if (x->grad->data != own) {
        memcpy(own, x->grad->data, (size_t)x->numel * tg__dtype_size(x->dtype));
        x->grad->data = own;
    }
}

void tg__dx_zero_if_fresh(tg_tensor *dx) {
    if (dx && dx->fresh) {
        memset(dx->data, 0, (size_t)dx->numel * tg__dtype_size(dx->dtype));
        dx->fresh = false;
    }
}

void tg__tape_poison_fresh(tg_tape *t, bool on) {
    if (t)
        t->poison_fresh = on;
}

/* Input k of node n is not also another of its inputs (a fresh dx is written by one input's
 * rule only; mul(x, x) adds two contributions into one gradient). */
static bool input_once(const tg_tensor *n, int k) {
    for (int j = 0; j < n->n_inputs; j++)
        if (j != k && n->inputs[j] == n->inputs[k])
            return false;
    return true;
}

/* A pass that stops early (an observer, no memory) leaves every gradient on the path zeroed or
 * accumulated, never the arena's older bytes. */
static tg_status stop_pass(tg_tape *t, int64_t top) {
    for (int64_t i = 0; i < top; i++) {
        tg_tensor *n = t->nodes[i];
        if (n->ready_after == ON_PATH && n->needs && n->grad)
            zero_node_grad(n);
    }
    return t->status;
}

tg_status tg_backward_seed(tg_tape *t, tg_tensor *output, const tg_tensor *seed) {
    if (!t)
        return tg__set_last_error(TG_ERR_NULL, "tg_backward: tape is NULL");
    if (t->status != TG_OK)
        return t->status;
    if (check_output(t, output, seed) != TG_OK)
        return t->status;
    const int64_t top = output->tape_index;
    const uint32_t pass = ++t->pass;

    /* 1. Which nodes need a gradient: forward order, from the leaves' requires_grad now. */
    int max_inputs = 0;
    for (int64_t i = 0; i <= top; i++) {
        tg_tensor *n = t->nodes[i];
        bool any = false;
        for (int k = 0; k < n->n_inputs; k++)
            any |= needs(n->inputs[k], pass);
        n->pass = pass;
        n->needs = any && is_float(n);
        n->ready_after = 0; /* on nodes: 1 when on the path from the output */
        n->senders = 0;
        max_inputs = n->n_inputs > max_inputs ? n->n_inputs : max_inputs;
    }
    /* 2. Which of those the output depends on (reverse order), and for each leaf the last node
     *    to run that feeds it: after that node its gradient is final. */
    output->ready_after = ON_PATH;
    for (int64_t i = top; i >= 0; i--) {
        tg_tensor *n = t->nodes[i];
        if (!n->ready_after || !n->needs)
            continue;
        for (int k = 0; k < n->n_inputs; k++) {
            tg_tensor *x = n->inputs[k];
            if (!needs(x, pass))
                continue;
            if (x->on_tape) {
                x->ready_after = ON_PATH;
                x->senders++;
            } else {
                x->pass = pass; /* leaves: stamped, ready after the lowest index that uses them */
                x->ready_after = i;
            }
        }
    }
    /* The seed first: it may be the gradient of a node on the path (an earlier pass's), which
     * the walk zeroes. The output's own gradient is not among those. */
    if (ensure_grad(t, output) != TG_OK)
        return t->status;
    if (seed)
        memcpy(output->grad->data, seed->data, (size_t)seed->numel * tg__dtype_size(seed->dtype));
    else
        fill_one(output->grad);
    output->ready_after = ZEROED; /* holds the seed: nothing zeroes it */
    /* 3. Every node on the path gets a gradient (an earlier pass's is reused); the walk zeroes
     *    each before its first use. Leaves keep accumulating. A gradient an earlier pass shared
     *    (see share_grad) gets its own memory back first, holding the shared values, for the
     *    nodes this pass does not reach. */
    for (int64_t i = 0; i < t->n_nodes; i++)
        unshare_grad(t->nodes[i]);
    for (int64_t i = 0; i < top; i++) {
        tg_tensor *n = t->nodes[i];
        if (n->ready_after && n->needs && ensure_grad(t, n) != TG_OK)
            return stop_pass(t, top);
    }
    if (max_inputs > TG_STACK_GRADS && max_inputs > t->grads_cap) {
        tg_tensor **g = realloc(t->grads_scratch, sizeof *g * (size_t)max_inputs);
        if (!g) {
            tg__tape_fail(t, TG_ERR_NOMEM, NULL, 0, "tg_backward", "out of memory");
            return stop_pass(t, top);
        }
        t->grads_scratch = g;
        t->grads_cap = max_inputs;
    }
    if (notify(t, TG_EVENT_BACKWARD_BEGIN, NULL, output, NULL, 0) != TG_OK)
        return stop_pass(t, top);

    /* 4. The reverse walk: each node on the path, with the destinations the engine chose. */
    tg_tensor *stack_grads[TG_STACK_GRADS] = {0};
    for (int64_t i = top; i >= 0 && output->needs; i--) {
        tg_tensor *n = t->nodes[i];
        if (!n->ready_after || !n->needs)
            continue; /* not on a path from the output, or no parameter upstream */
        tg_tensor **dx = n->n_inputs <= TG_STACK_GRADS ? stack_grads : t->grads_scratch;
        const bool may_write = (n->op->flags & TG__OP_WRITES_GRAD) && t->n_observers == 0;
        for (int k = 0; k < n->n_inputs; k++) {
            tg_tensor *x = n->inputs[k];
            dx[k] = NULL;
            if (!needs(x, pass))
                continue;
            if (ensure_grad(t, x) != TG_OK)
                return stop_pass(t, top);
            if (x->on_tape && x->ready_after == ON_PATH) { /* n is the first (in reverse) */
                if (may_write && input_once(n, k) && x->senders == 1 && n->op->grad_is_dy &&
                    x->dtype == n->dtype && x->numel == n->numel && n->op->grad_is_dy(n, k)) {
                    share_grad(x, n); /* dx = dy, and nothing else adds into dx */
                    continue;
                }
                if (may_write && input_once(n, k)) {
                    x->grad->fresh = true; /* n's backward writes it: no zeroing */
                    x->ready_after = ZEROED;
                    if (t->poison_fresh)
                        memset(x->grad->data, 0xff, (size_t)x->numel * tg__dtype_size(x->dtype));
                } else {
                    zero_node_grad(x);
                }
            }
            dx[k] = x->grad;
        }
        if (notify(t, TG_EVENT_BEFORE_BACKWARD, n, output, dx, n->n_inputs) != TG_OK)
            return stop_pass(t, top);
        n->op->backward(n, n->grad, dx);
        for (int k = 0; k < n->n_inputs; k++)
            if (dx[k])
                dx[k]->fresh = false; /* written: from here on the next backward adds */
        if (notify(t, TG_EVENT_AFTER_BACKWARD, n, output, dx, n->n_inputs) != TG_OK)
            return stop_pass(t, top);
        for (int k = 0; k < n->n_inputs; k++) {
            tg_tensor *x = n->inputs[k];
            if (!x->on_tape && dx[k] && x->pass == pass && x->ready_after == i) {
                x->ready_after = -1; /* told once, even when it is several inputs of n */
                if (notify(t, TG_EVENT_GRAD_READY, x, output, NULL, 0) != TG_OK)
                    return stop_pass(t, top);
            }
        }
    }
    return notify(t, TG_EVENT_BACKWARD_END, NULL, output, NULL, 0);
}

tg_status tg_backward(tg_tape *t, tg_tensor *loss) { return tg_backward_seed(t, loss, NULL); }
