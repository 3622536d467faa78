/* custom: y = f(x_1, .., x_k) with a forward and a backward the caller writes (tg_custom_op).
 * The chain rule is the caller's: backward must accumulate dL/dx_i += (dy/dx_i)^T dL/dy.
 * Useful for an op tapegrad lacks, and for checking a hand-derived backward with tg_gradcheck.
 * Saves whatever the caller's functions keep in `user`. The engine's destinations are handed to
 * the caller's backward as they are: an entry is NULL exactly when that input needs no gradient. */
#include "core/engine.h"

typedef struct custom_params {
    const tg_custom_op *op;
    void *user;
    int rank; /* the requested output shape */
    int64_t shape[TG_MAX_RANK];
} custom_params;

static tg_status custom_shape(tg_tensor *y, char *msg, size_t len) {
    const custom_params *p = y->params;
    if (p->rank < 0 || p->rank > TG_MAX_RANK) {
        snprintf(msg, len, "output rank %d is outside 0..%d", p->rank, TG_MAX_RANK);
        return TG_ERR_VALUE;
    }
    for (int i = 0; i < p->rank; i++)
        if (p->shape[i] < 0) {
            snprintf(msg, len, "output axis %d has negative size %lld", i, (long long)p->shape[i]);
            return TG_ERR_VALUE;
        }
    y->rank = p->rank;
    memcpy(y->shape, p->shape, sizeof y->shape);
    return TG_OK;
}

static tg_status custom_forward(tg_tape *tape, tg_tensor *y) {
    (void)tape;
    const custom_params *p = y->params;
    return p->op->forward(y, y->inputs, y->n_inputs, p->user);
}

static void custom_backward(const tg_tensor *y, const tg_tensor *dout, tg_tensor *const *din) {
    const custom_params *p = y->params;
    p->op->backward(y, dout, y->inputs, din, y->n_inputs, p->user);
}

static const char *custom_instance_name(const void *params) {
    const custom_params *p = params;
    return p->op && p->op->name ? p->op->name : NULL;
}

const tg__op_desc tg__op_custom = {
    .name = "custom",
    .saves = "whatever its functions keep (caller-defined)",
    .min_inputs = 1,
    .max_inputs = TG_CUSTOM_MAX_INPUTS,
    .flags = TG__OP_ZERO_OUTPUT, /* the caller's forward is promised zeros */
    .params_size = sizeof(custom_params),
    .shape = custom_shape,
    .forward = custom_forward,
    .backward = custom_backward,
    .instance_name = custom_instance_name,
    .rule = "the caller's backward function",
};

tg_tensor *tg_custom_at(tg_tape *t, const tg_custom_op *op, void *user, tg_tensor *const *inputs,
                        int n_inputs, int rank, const int64_t *shape, const char *file, int line) {
    custom_params p = {.op = op, .user = user, .rank = rank};
    const char *problem = NULL;
    if (!op)
        problem = "op is NULL";
    else if (!op->forward || !op->backward)
        problem = "op has no forward or no backward function";
    else if (!inputs)
        problem = "inputs is NULL";
    else if (n_inputs < 1 || n_inputs > TG_CUSTOM_MAX_INPUTS)
        problem = "needs 1 to TG_CUSTOM_MAX_INPUTS (64) inputs";
    else if (rank > 0 && !shape)
        problem = "shape is NULL";
    if (problem) {
        char where[64];
        snprintf(where, sizeof where, "tg_custom%s%s%s", op && op->name ? "(" : "",
                 op && op->name ? op->name : "", op && op->name ? ")" : "");
        if (!t) {
            tg__set_last_error(TG_ERR_NULL, "%s:%d: %s: tape is NULL (and %s)", tg__base_name(file),
                               line, where, problem);
            return NULL;
        }
        if (tg_tape_status(t) != TG_OK)
            return NULL;
        tg__tape_fail(t, TG_ERR_VALUE, file, line, where, "%s", problem);
        return NULL;
    }
    if (rank > 0 && rank <= TG_MAX_RANK)
        memcpy(p.shape, shape, sizeof(int64_t) * (size_t)rank);
    return tg__record(t, &tg__op_custom, inputs, n_inputs, &p, file, line);
}
