/* anomaly.c -- anomaly mode: find the first op whose forward or backward produced a NaN or an Inf
 * and say which one, instead of letting the value spread silently to the loss and the parameters.
 * The checks read whole tensors once; they run only when tg_tape_set_anomaly turned them on. */
#include "core/engine.h"

#include <math.h>

/* Index of the first NaN or Inf among t's values, or -1 (also for integer tensors). */
static int64_t first_nonfinite(const tg_tensor *t) {
    if (!t || !t->data || (t->dtype != TG_F32 && t->dtype != TG_F64))
        return -1;
    TG_FOR_DTYPE(t->dtype, T, const T *d = t->data; for (int64_t i = 0; i < t->numel; i++) {
        if (!isfinite(d[i]))
            return i;
    });
    return -1;
}

/* "NaN", "Inf" or "-Inf" for element i (the sign of a NaN is noise: 0/0 gives -NaN on x86). */
static const char *value_at(const tg_tensor *t, int64_t i) {
    double v =
        t->dtype == TG_F32 ? (double)((const float *)t->data)[i] : ((const double *)t->data)[i];
    return isnan(v) ? "NaN" : v > 0 ? "Inf" : "-Inf";
}

/* `"name" [2,3]`, or `[2,3]` for an unnamed tensor. */
static const char *describe(const tg_tensor *t, char *buf, size_t len) {
    char s[TG_SHAPE_STR_LEN];
    tg__shape_str(t, s, sizeof s);
    if (t->name[0])
        snprintf(buf, len, "\"%s\" %s", t->name, s);
    else
        snprintf(buf, len, "%s", s);
    return buf;
}

/* "; inputs: "x" [2,3], [3]" then, if an input already held a NaN/Inf, which one. */
static void describe_inputs(const tg_tensor *node, char *buf, size_t len) {
    size_t n = (size_t)snprintf(buf, len, "; inputs:");
    char d[TG_SHAPE_STR_LEN + TG_NAME_MAX + 4];
    for (int k = 0; k < node->n_inputs && n < len; k++)
        n += (size_t)snprintf(buf + n, len - n, "%s %s", k ? "," : "",
                              describe(node->inputs[k], d, sizeof d));
    for (int k = 0; k < node->n_inputs && n < len; k++) {
        int64_t i = first_nonfinite(node->inputs[k]);
        if (i >= 0) {
            snprintf(buf + n, len - n, " (input %d already held %s at element %lld)", k + 1,
                     value_at(node->inputs[k], i), (long long)i);
            break;
        }
    }
}

/* A node's output just computed: every value finite, or the tape fails naming the op. */
static tg_status check_forward(tg_tape *t, const tg_tensor *out) {
    int64_t i = first_nonfinite(out);
    if (i < 0)
        return TG_OK;
    char s[TG_SHAPE_STR_LEN], ins[200], opname[64];
    describe_inputs(out, ins, sizeof ins);
    tg__tape_fail(t, TG_ERR_NONFINITE, out->src_file, out->src_line,
                  tg__op_label(out->op, out->params, opname, sizeof opname),
                  "anomaly: forward produced %s at element %lld of the output %s (tape index "
                  "%lld)%s",
                  value_at(out, i), (long long)i, tg__shape_str(out, s, sizeof s),
                  (long long)out->tape_index, ins);
    return TG_ERR_NONFINITE;
}

/* Before a pass: a leaf whose gradient already holds a NaN/Inf (from an earlier pass that was not
 * zeroed) would make the first node that adds to it look guilty; say so up front instead. */
static tg_status check_leaves(tg_tape *t, const tg_tensor *output) {
    for (int64_t n = 0; n <= output->tape_index; n++) {
        const tg_tensor *node = tg_tape_node(t, n);
        for (int k = 0; k < node->n_inputs; k++) {
            const tg_tensor *x = node->inputs[k];
            int64_t i = !x->on_tape && x->requires_grad ? first_nonfinite(x->grad) : -1;
            if (i < 0)
                continue;
            char d[TG_SHAPE_STR_LEN + TG_NAME_MAX + 4];
            tg__tape_fail(t, TG_ERR_NONFINITE, NULL, 0, "tg_backward",
                          "anomaly: before the pass, the gradient of leaf %s (input %d of tape "
                          "index %lld) already holds %s at element %lld, left from an earlier "
                          "pass; zero it (tg_tensor_zero_grad) before tg_backward",
                          describe(x, d, sizeof d), k + 1, (long long)n, value_at(x->grad, i),
                          (long long)i);
            return TG_ERR_NONFINITE;
        }
    }
    return TG_OK;
}

/* After `node`'s backward accumulated into grads: the first NaN/Inf is blamed on it. */
static tg_status check_backward(tg_tape *t, const tg_tensor *node, tg_tensor *const *grads) {
    for (int k = 0; k < node->n_inputs; k++) {
        const tg_tensor *x = node->inputs[k];
        int64_t i = grads[k] ? first_nonfinite(grads[k]) : -1;
        if (i < 0)
            continue;
        char opname[64], d[TG_SHAPE_STR_LEN + TG_NAME_MAX + 4], ins[200];
        tg__op_label(node->op, node->params, opname, sizeof opname);
        describe_inputs(node, ins, sizeof ins);
        tg__tape_fail(t, TG_ERR_NONFINITE, node->src_file, node->src_line, "tg_backward",
                      "anomaly: backward of %s (tape index %lld%s%s%s) produced %s at element "
                      "%lld of the gradient of input %d, %s%s",
                      opname, (long long)node->tape_index, node->name[0] ? ", output \"" : "",
                      node->name, node->name[0] ? "\"" : "", value_at(grads[k], i), (long long)i,
                      k + 1, describe(x, d, sizeof d), ins);
        return TG_ERR_NONFINITE;
    }
    return TG_OK;
}

/* Anomaly mode is an observer of the tape: it reads what the engine produced, never runs an op. */
static tg_status anomaly_observer(const tg_event *ev, void *user) {
    (void)user;
    switch (ev->kind) {
    case TG_EVENT_FORWARD: return check_forward(ev->tape, ev->tensor);
    case TG_EVENT_BACKWARD_BEGIN: return check_leaves(ev->tape, ev->output);
    case TG_EVENT_AFTER_BACKWARD: return check_backward(ev->tape, ev->tensor, ev->grads);
    default: return TG_OK;
    }
}

tg_status tg_tape_set_anomaly(tg_tape *t, int on) {
    if (!t)
        return tg__set_last_error(TG_ERR_NULL, "tg_tape_set_anomaly: tape is NULL");
    const bool was = tg__tape_has_observer(t, anomaly_observer, NULL);
    if (on && !was)
        return tg_tape_observe(t, anomaly_observer, NULL);
    if (!on && was)
        return tg_tape_unobserve(t, anomaly_observer, NULL);
    return TG_OK;
}

int tg_tape_anomaly(const tg_tape *t) {
    return t && tg__tape_has_observer(t, anomaly_observer, NULL);
}
