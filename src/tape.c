/* tape.c -- the tape: its arena, recording a node, and the reverse pass. */
#include "anomaly.h"
#include "internal.h"

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

struct tg_tape {
    tg_block *blocks; /* current block first */
    size_t arena_bytes;
    tg_tensor **nodes; /* forward order */
    int64_t n_nodes, cap_nodes;
    tg_status status;
    char errmsg[TG_ERRMSG_LEN];
    FILE *trace;  /* tg_tape_set_trace: where tg_backward explains itself; NULL (off) by default */
    bool anomaly; /* tg_tape_set_anomaly: check every op's output and gradients for NaN/Inf */
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
    free_blocks(t->blocks);
    free(t->nodes);
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
    t->status = TG_OK;
    t->errmsg[0] = '\0';
}

void *tg__tape_alloc(tg_tape *t, size_t bytes) {
    size_t need = (bytes + TG_ALIGN - 1) & ~(size_t)(TG_ALIGN - 1);
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
    memset(p, 0, need);
    return p;
}

tg_status tg_tape_status(const tg_tape *t) { return t ? t->status : TG_ERR_NULL; }
const char *tg_tape_errmsg(const tg_tape *t) { return t ? t->errmsg : "tape is NULL"; }
int64_t tg_tape_size(const tg_tape *t) { return t ? t->n_nodes : 0; }
tg_tensor *tg_tape_node(const tg_tape *t, int64_t i) {
    return (t && i >= 0 && i < t->n_nodes) ? t->nodes[i] : NULL;
}
tg_status tg_tape_set_trace(tg_tape *t, FILE *out) {
    if (!t)
        return tg__set_last_error(TG_ERR_NULL, "tg_tape_set_trace: tape is NULL");
    t->trace = out;
    return TG_OK;
}
FILE *tg__tape_trace(const tg_tape *t) { return t->trace; }
tg_status tg_tape_set_anomaly(tg_tape *t, int on) {
    if (!t)
        return tg__set_last_error(TG_ERR_NULL, "tg_tape_set_anomaly: tape is NULL");
    t->anomaly = on != 0;
    return TG_OK;
}
int tg_tape_anomaly(const tg_tape *t) { return t && t->anomaly; }
size_t tg_tape_bytes(const tg_tape *t) {
    return t ? t->arena_bytes + (size_t)t->cap_nodes * sizeof(tg_tensor *) : 0;
}

static const char *base_name(const char *path) {
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
        n = snprintf(t->errmsg, sizeof t->errmsg, "%s:%d: ", base_name(file), line);
    n = n < 0 ? 0 : n > last ? last : n;
    n += snprintf(t->errmsg + n, sizeof t->errmsg - (size_t)n, "%s: ", op);
    n = n < 0 ? 0 : n > last ? last : n;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t->errmsg + n, sizeof t->errmsg - (size_t)n, fmt, ap);
    va_end(ap);
}

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

static const char *op_display_name(const tg_op_desc *d, const tg_op_params *params, char *buf,
                                   size_t len) {
    if (params && params->custom && params->custom->name)
        snprintf(buf, len, "tg_custom(%s)", params->custom->name);
    else
        snprintf(buf, len, "tg_%s", d->name);
    return buf;
}

tg_tensor *tg__record(tg_tape *t, tg_op op, tg_tensor *const *inputs, int n_inputs,
                      const tg_op_params *params, const char *file, int line) {
    TG_CHECK(op > TG_OP_LEAF && op < TG_OP_COUNT);
    const tg_op_desc *d = tg_op_table[op];
    /* The name for messages ("tg_matmul", "tg_custom(square)"), formatted only when one is
     * written: a builder call on the hot path does no string work. */
    char opname_buf[48];
#define opname op_display_name(d, params, opname_buf, sizeof opname_buf)

    if (!t) {
        tg__set_last_error(TG_ERR_NULL, "%s:%d: %s: tape is NULL", base_name(file), line, opname);
        return NULL;
    }
    if (t->status != TG_OK)
        return NULL; /* an earlier call failed; its message stays */

    bool needs_grad = false;
    for (int i = 0; i < n_inputs; i++) {
        const tg_tensor *x = inputs[i];
        if (!x) {
            tg__tape_fail(t, TG_ERR_NULL, file, line, opname, "input %d is NULL", i + 1);
            return NULL;
        }
        if (x->on_tape && x->tape != t) {
            tg__tape_fail(t, TG_ERR_STATE, file, line, opname,
                          "input %d was recorded on another tape", i + 1);
            return NULL;
        }
        /* Class-index targets (TG_I32) are the one integer input; the op's shape check
         * validates them. Every other input is float and shares inputs[0]'s dtype. */
        bool int_target = (op == TG_OP_SOFTMAX_CROSS_ENTROPY && i == 1 && x->dtype == TG_I32);
        if (!int_target && (x->dtype != TG_F32 && x->dtype != TG_F64)) {
            tg__tape_fail(t, TG_ERR_DTYPE, file, line, opname,
                          "input %d has dtype %s; this op takes f32 or f64", i + 1,
                          tg_dtype_name(x->dtype));
            return NULL;
        }
        if (!int_target && x->dtype != inputs[0]->dtype) {
            tg__tape_fail(t, TG_ERR_DTYPE, file, line, opname,
                          "dtypes differ: input 1 is %s, input %d is %s",
                          tg_dtype_name(inputs[0]->dtype), i + 1, tg_dtype_name(x->dtype));
            return NULL;
        }
        needs_grad |= x->requires_grad;
    }

    tg_tensor *out = tg__tape_alloc(t, sizeof *out);
    if (!out)
        return NULL;
    out->on_tape = true;
    out->tape = t;
    out->op = op;
    out->dtype = n_inputs > 0 ? inputs[0]->dtype : TG_F32;
    out->n_inputs = n_inputs;
    for (int i = 0; i < n_inputs; i++)
        out->inputs[i] = inputs[i];
    if (params)
        out->params = *params;
    out->requires_grad = needs_grad;
    out->src_file = base_name(file);
    out->src_line = line;

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
    for (int i = 0; i < out->rank; i++) {
        if (out->shape[i] > 0 && out->numel > INT64_MAX / 16 / out->shape[i]) {
            char s[TG_SHAPE_STR_LEN];
            tg__tape_fail(t, TG_ERR_VALUE, file, line, opname, "output %s has too many elements",
                          tg_shape_str(out, s, sizeof s));
            return NULL;
        }
        out->numel *= out->shape[i];
    }
    out->data = tg__tape_alloc(t, (size_t)out->numel * tg_dtype_size(out->dtype));
    if (!out->data)
        return NULL;
    st = d->forward(t, out);
    if (st != TG_OK) {
        tg__tape_fail(t, st, file, line, opname, "forward failed (%s)", tg_status_name(st));
        return NULL;
    }
    if (t->status != TG_OK) /* forward ran out of arena memory */
        return NULL;
    if (t->anomaly && !tg__anomaly_forward(t, out, file, line, opname))
        return NULL;
    if (!push_node(t, out)) {
        tg__tape_fail(t, TG_ERR_NOMEM, file, line, opname, "out of memory for the node list");
        return NULL;
    }
    return out;
}
#undef opname

/* A zeroed gradient for x: in the arena for tape tensors, malloc'ed (and kept) for leaves. */
static tg_status ensure_grad(tg_tape *t, tg_tensor *x) {
    if (x->grad)
        return TG_OK;
    size_t bytes = (size_t)x->numel * tg_dtype_size(x->dtype);
    tg_tensor *g;
    if (x->on_tape) {
        g = tg__tape_alloc(t, sizeof *g);
        if (!g)
            return TG_ERR_NOMEM;
        *g = (tg_tensor){.dtype = x->dtype,
                         .rank = x->rank,
                         .numel = x->numel,
                         .on_tape = true,
                         .tape = t,
                         .tape_index = -1};
        g->data = tg__tape_alloc(t, bytes);
        if (!g->data)
            return TG_ERR_NOMEM;
    } else {
        g = tg_tensor_new(x->dtype, x->rank, x->shape);
        if (!g) {
            tg__tape_fail(t, TG_ERR_NOMEM, NULL, 0, "tg_backward", "out of memory for a gradient");
            return TG_ERR_NOMEM;
        }
    }
    memcpy(g->shape, x->shape, sizeof g->shape);
    x->grad = g;
    return TG_OK;
}

static void fill_one(tg_tensor *g) {
    TG_FOR_DTYPE(g->dtype, T, T *d = g->data; for (int64_t i = 0; i < g->numel; i++) d[i] = 1;);
}

tg_status tg_backward_seed(tg_tape *t, tg_tensor *output, const tg_tensor *seed) {
    if (!t)
        return tg__set_last_error(TG_ERR_NULL, "tg_backward: tape is NULL");
    if (t->status != TG_OK)
        return t->status;
    if (!output) {
        tg__tape_fail(t, TG_ERR_NULL, NULL, 0, "tg_backward", "output is NULL");
        return t->status;
    }
    if (!output->on_tape || output->tape != t) {
        tg__tape_fail(t, TG_ERR_STATE, NULL, 0, "tg_backward",
                      "output is %s, not a tensor recorded on this tape",
                      output->on_tape ? "from another tape" : "a leaf");
        return t->status;
    }
    char s1[TG_SHAPE_STR_LEN], s2[TG_SHAPE_STR_LEN];
    if (!seed) {
        if (output->numel != 1) {
            tg__tape_fail(t, TG_ERR_SHAPE, NULL, 0, "tg_backward",
                          "output has shape %s, not one element; pass a seed gradient with "
                          "tg_backward_seed",
                          tg_shape_str(output, s1, sizeof s1));
            return t->status;
        }
    } else if (seed->numel != output->numel || seed->rank != output->rank ||
               memcmp(seed->shape, output->shape, sizeof(int64_t) * (size_t)output->rank) != 0 ||
               seed->dtype != output->dtype) {
        tg__tape_fail(t, TG_ERR_SHAPE, NULL, 0, "tg_backward", "seed is %s %s but output is %s %s",
                      tg_dtype_name(seed->dtype), tg_shape_str(seed, s1, sizeof s1),
                      tg_dtype_name(output->dtype), tg_shape_str(output, s2, sizeof s2));
        return t->status;
    }

    /* Tape gradients start from zero on every pass; leaves keep accumulating. */
    for (int64_t i = 0; i <= output->tape_index; i++) {
        tg_tensor *n = t->nodes[i];
        if (n->grad)
            memset(n->grad->data, 0, (size_t)n->numel * tg_dtype_size(n->dtype));
    }
    if (ensure_grad(t, output) != TG_OK)
        return t->status;
    if (seed)
        memcpy(output->grad->data, seed->data, (size_t)seed->numel * tg_dtype_size(seed->dtype));
    else
        fill_one(output->grad);
    if (!output->requires_grad)
        return TG_OK; /* nothing upstream wants a gradient */

    if (t->trace)
        tg__trace_begin(t, output);
    for (int64_t i = output->tape_index; i >= 0; i--) {
        tg_tensor *n = t->nodes[i];
        if (!n->grad || !n->requires_grad)
            continue; /* not on a path from the output, or no parameter upstream */
        for (int k = 0; k < n->n_inputs; k++) {
            tg_tensor *x = n->inputs[k];
            if (x->requires_grad && x->dtype != TG_I32 && ensure_grad(t, x) != TG_OK)
                return t->status;
        }
        if (t->trace) /* one branch per node when tracing is off */
            tg__trace_node(t, n, output);
        else
            tg_op_table[n->op]->backward(n);
        if (t->anomaly && !tg__anomaly_backward(t, n))
            return t->status;
    }
    if (t->trace)
        tg__trace_end(t, output);
    return TG_OK;
}

tg_status tg_backward(tg_tape *t, tg_tensor *loss) { return tg_backward_seed(t, loss, NULL); }
