/* custom: y = f(x_1, .., x_k) with a forward and a backward the caller writes (tg_custom_op).
 * The chain rule is the caller's: backward must accumulate dL/dx_i += (dy/dx_i)^T dL/dy.
 * Useful for an op tapegrad lacks, and for checking a hand-derived backward with tg_gradcheck.
 * Saves whatever the caller's functions keep in `user`. */
#include "internal.h"

static tg_status custom_shape(tg_tensor *y, char *msg, size_t len) {
    const tg_op_params *p = &y->params;
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
    return y->params.custom->forward(y, y->inputs, y->n_inputs, y->params.user);
}

static void custom_backward(tg_tensor *y) {
    tg_tensor *grads[TG_MAX_INPUTS] = {0};
    for (int i = 0; i < y->n_inputs; i++)
        grads[i] = y->inputs[i]->grad;
    y->params.custom->backward(y, y->grad, y->inputs, grads, y->n_inputs, y->params.user);
}

tg_tensor *tg_custom_at(tg_tape *t, const tg_custom_op *op, void *user, tg_tensor *const *inputs,
                        int n_inputs, int rank, const int64_t *shape, const char *file, int line) {
    tg_op_params p = {.custom = op, .user = user, .rank = rank};
    const char *problem = NULL;
    if (!op)
        problem = "op is NULL";
    else if (!op->forward || !op->backward)
        problem = "op has no forward or no backward function";
    else if (!inputs)
        problem = "inputs is NULL";
    else if (n_inputs < 1 || n_inputs > TG_MAX_INPUTS)
        problem = "needs 1 to TG_CUSTOM_MAX_INPUTS (4) inputs";
    else if (rank > 0 && !shape)
        problem = "shape is NULL";
    if (problem) {
        if (!t || tg_tape_status(t) != TG_OK)
            return NULL;
        tg__tape_fail(t, TG_ERR_VALUE, file, line, "tg_custom", "%s", problem);
        return NULL;
    }
    if (rank > 0 && rank <= TG_MAX_RANK)
        memcpy(p.shape, shape, sizeof(int64_t) * (size_t)rank);
    return tg__record(t, TG_OP_CUSTOM, inputs, n_inputs, &p, file, line);
}

const tg_op_desc tg_op_custom = {
    .name = "custom",
    .saves = "whatever its functions keep (caller-defined)",
    .n_inputs = -1,
    .shape = custom_shape,
    .forward = custom_forward,
    .backward = custom_backward,
    .local = "the caller's backward function",
};
