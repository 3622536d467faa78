/* anomaly.c -- anomaly mode: find the first op whose forward or backward produced a NaN or an Inf
 * and say which one, instead of letting the value spread silently to the loss and the parameters.
 * The checks read whole tensors once; they run only when tg_tape_set_anomaly turned them on. */
#include "anomaly.h"

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
    tg_shape_str(t, s, sizeof s);
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

bool tg__anomaly_forward(tg_tape *t, const tg_tensor *out, const char *file, int line,
                         const char *opname) {
    int64_t i = first_nonfinite(out);
    if (i < 0)
        return true;
    char s[TG_SHAPE_STR_LEN], ins[200];
    describe_inputs(out, ins, sizeof ins);
    tg__tape_fail(t, TG_ERR_NONFINITE, file, line, opname,
                  "anomaly: forward produced %s at element %lld of the output %s (tape index "
                  "%lld)%s",
                  value_at(out, i), (long long)i, tg_shape_str(out, s, sizeof s),
                  (long long)tg_tape_size(t), ins);
    return false;
}

bool tg__anomaly_backward(tg_tape *t, const tg_tensor *node) {
    for (int k = 0; k < node->n_inputs; k++) {
        const tg_tensor *x = node->inputs[k];
        int64_t i = x->requires_grad ? first_nonfinite(x->grad) : -1;
        if (i < 0)
            continue;
        char opname[48], d[TG_SHAPE_STR_LEN + TG_NAME_MAX + 4], ins[200];
        snprintf(opname, sizeof opname, "tg_%s", tg_op_table[node->op]->name);
        describe_inputs(node, ins, sizeof ins);
        tg__tape_fail(t, TG_ERR_NONFINITE, node->src_file, node->src_line, "tg_backward",
                      "anomaly: backward of %s (tape index %lld%s%s%s) produced %s at element "
                      "%lld of the gradient of input %d, %s%s",
                      opname, (long long)node->tape_index, node->name[0] ? ", output \"" : "",
                      node->name, node->name[0] ? "\"" : "", value_at(x->grad, i), (long long)i,
                      k + 1, describe(x, d, sizeof d), ins);
        return false;
    }
    return true;
}
