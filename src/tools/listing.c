/* listing.c -- the tape as a listing in forward order (tg_tape_print). */
#include "explain.h"

#include <stdlib.h>

tg_status tg_tape_print(const tg_tape *tape, FILE *out) {
    if (!tape || !out)
        return tg__set_last_error(TG_ERR_NULL, "tg_tape_print: %s is NULL", !tape ? "tape" : "out");
    const int64_t n = tg_tape_size(tape);
    int64_t n_leaves = 0;
    const tg_tensor **leaves = tg__collect_leaves(tape, &n_leaves);

    /* Column widths from the content, so the listing lines up whatever the names. */
    int w_name = 4, w_op = 2, w_in = 6, w_shape = 5;
    char nb[48], sb[TG_SHAPE_STR_LEN], eb[256];
    for (int64_t j = 0; j < n_leaves; j++) {
        int l = (int)strlen(tg__name_of(tape, leaves[j], nb, sizeof nb));
        w_name = l > w_name ? l : w_name;
        l = (int)strlen(tg__shape_str(leaves[j], sb, sizeof sb));
        w_shape = l > w_shape ? l : w_shape;
    }
    for (int64_t i = 0; i < n; i++) {
        const tg_tensor *t = tg_tape_node(tape, i);
        int l = (int)strlen(tg__name_of(tape, t, nb, sizeof nb));
        w_name = l > w_name ? l : w_name;
        l = (int)strlen(tg__node_op_name(t));
        w_op = l > w_op ? l : w_op;
        const char *e = tg__node_expr(tape, t, eb, sizeof eb);
        l = (int)(strlen(e) - strlen(tg__node_op_name(t)) -
                  2); /* the inputs, without "op(" and ")" */
        w_in = l > w_in ? l : w_in;
        l = (int)strlen(tg__shape_str(t, sb, sizeof sb));
        w_shape = l > w_shape ? l : w_shape;
    }
    int w_idx = tg__textf(NULL, 0, "%lld", (long long)(n > 0 ? n - 1 : 0));
    w_idx = w_idx < 1 ? 1 : w_idx;

    fprintf(out, "leaves (made by the caller)\n");
    fprintf(out, "  %*s  %-*s  %-*s  %s\n", w_idx, "", w_name, "name", w_shape, "shape", "role");
    for (int64_t j = 0; j < n_leaves; j++) {
        const tg_tensor *x = leaves[j];
        const char *role = x->requires_grad     ? "parameter: gets a gradient"
                           : x->dtype == TG_I32 ? "data: class indices"
                                                : "data: no gradient";
        fprintf(out, "  %*s  %-*s  %-*s  %s\n", w_idx, "", w_name,
                tg__name_of(tape, x, nb, sizeof nb), w_shape, tg__shape_str(x, sb, sizeof sb),
                role);
    }
    fprintf(out, "tape (%lld node%s, forward order)\n", (long long)n, n == 1 ? "" : "s");
    fprintf(out, "  %*s  %-*s  %-*s  %-*s  %-*s  %s\n", w_idx, "#", w_name, "name", w_op, "op",
            w_in, "inputs", w_shape, "shape", "saves for backward");
    for (int64_t i = 0; i < n; i++) {
        const tg_tensor *t = tg_tape_node(tape, i);
        const char *e = tg__node_expr(tape, t, eb, sizeof eb);
        const char *ins = e + strlen(tg__node_op_name(t)) + 1;
        int in_len = (int)strlen(ins) - 1;
        char saves[256];
        tg__with_names(tape, t, tg_tensor_op_saves(t), saves, sizeof saves);
        fprintf(out, "  %*lld  %-*s  %-*s  %-*.*s  %-*s  %s\n", w_idx, (long long)i, w_name,
                tg__name_of(tape, t, nb, sizeof nb), w_op, tg__node_op_name(t), w_in, in_len, ins,
                w_shape, tg__shape_str(t, sb, sizeof sb), saves);
    }
    free(leaves);
    return ferror(out) ? tg__set_last_error(TG_ERR_IO, "tg_tape_print: writing failed") : TG_OK;
}
