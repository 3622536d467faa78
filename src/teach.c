/* teach.c -- tools for teaching backpropagation: the recorded graph as Graphviz DOT (and a picture
 * through Graphviz's `dot`), the tape as a listing, and the chain-rule trace of tg_backward.
 *
 * Everything here reads the tape; nothing changes a value or a gradient. The trace is called from
 * tg_backward's loop only when the tape has a trace FILE * (tg_tape_set_trace); it runs each node's
 * backward itself, between a snapshot of the inputs' gradients and a report of what changed, so
 * the per-input contributions come out exactly as the op computed them, without a second copy of
 * any derivative. Speed is not a goal here: the trace and the listing are O(nodes^2) in the worst
 * case, which is nothing next to printing them. */
#include "internal.h"

#include <math.h>
#include <stdlib.h>
#include <unistd.h>

/* Tensors up to this many elements print in full; larger ones as a summary. */
#define TG_TRACE_FULL 16
/* In the picture, values are shown up to this many elements. */
#define TG_DOT_FULL 8
/* Entries shown in a summary of a large tensor: the first few and the last one. */
#define TG_SUMMARY_HEAD 3

/* snprintf for display text: a name or a line cut short is acceptable here, so truncation is not
 * an error (and gcc's -Wformat-truncation, which cannot know names are at most 31 bytes, is not
 * consulted). Returns what vsnprintf returns. */
static int textf(char *buf, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int textf(char *buf, size_t len, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, len, fmt, ap);
    va_end(ap);
    return n;
}

/* ---- Names ---- */

/* Distinct leaves used by the tape's nodes, in order of first use. Caller frees. NULL if none
 * (or no memory: the leaves are then unnamed "leaf" in the output, nothing worse). */
static const tg_tensor **collect_leaves(const tg_tape *tape, int64_t *count) {
    int64_t n = tg_tape_size(tape), cap = 0, len = 0;
    const tg_tensor **leaves = NULL;
    for (int64_t i = 0; i < n; i++) {
        const tg_tensor *node = tg_tape_node(tape, i);
        for (int k = 0; k < node->n_inputs; k++) {
            const tg_tensor *x = node->inputs[k];
            if (x->on_tape)
                continue;
            int64_t j = 0;
            while (j < len && leaves[j] != x)
                j++;
            if (j < len)
                continue;
            if (len == cap) {
                int64_t c = cap ? 2 * cap : 16;
                const tg_tensor **l = realloc(leaves, (size_t)c * sizeof *l);
                if (!l) {
                    *count = len;
                    return leaves;
                }
                leaves = l;
                cap = c;
            }
            leaves[len++] = x;
        }
    }
    *count = len;
    return leaves;
}

/* The tensor's name, else "op#index" for a node, else "leaf#k" (k in order of first use). */
static const char *name_of(const tg_tape *tape, const tg_tensor *t, char *buf, size_t len) {
    if (t->name[0]) {
        textf(buf, len, "%s", t->name);
        return buf;
    }
    if (t->on_tape) {
        textf(buf, len, "%s#%lld", tg_tensor_op_name(t), (long long)t->tape_index);
        return buf;
    }
    int64_t n_leaves = 0;
    const tg_tensor **leaves = collect_leaves(tape, &n_leaves);
    int64_t k = 0;
    while (k < n_leaves && leaves[k] != t)
        k++;
    if (k < n_leaves)
        textf(buf, len, "leaf#%lld", (long long)k);
    else
        textf(buf, len, "leaf");
    free(leaves);
    return buf;
}

/* The op's name as shown: a custom op's own name, else the table's. */
static const char *op_label(const tg_tensor *t) {
    if (t->op == TG_OP_CUSTOM && t->params.custom && t->params.custom->name)
        return t->params.custom->name;
    return tg_tensor_op_name(t);
}

/* A name as it appears inside a formula: in parentheses when it holds an operator or a space
 * ("dl/d(W_h x)", "(y~^T)"), so the formula stays unambiguous. */
static const char *formula_name(const char *name, char *buf, size_t len) {
    if (strpbrk(name, " ^+-*/()")) {
        textf(buf, len, "(%s)", name);
        return buf;
    }
    return name;
}

/* The node's right-hand side: "tanh(h~)", "add(W_h x, b_h)". */
static const char *node_expr(const tg_tape *tape, const tg_tensor *t, char *buf, size_t len) {
    size_t n = (size_t)textf(buf, len, "%s(", op_label(t));
    for (int k = 0; k < t->n_inputs && n < len; k++) {
        char nb[48];
        n += (size_t)textf(buf + n, len - n, "%s%s", k ? ", " : "",
                           name_of(tape, t->inputs[k], nb, sizeof nb));
    }
    if (t->op == TG_OP_SCALE || t->op == TG_OP_ADD_SCALAR)
        n += (size_t)textf(buf + n, n < len ? len - n : 0, ", %g", t->params.scalar);
    if (n < len)
        textf(buf + n, len - n, ")");
    return buf;
}

/* An op's phrase (its rule or what it saves) with the tensors' names: "dx += dy * (1 - y^2)"
 * becomes "dl/dh~ += dl/dh * (1 - h^2)". The phrases name the first input x, a or z, the second
 * b or t, the output y (L for a loss); dx is written dl/dx. A name holding an operator or a space
 * is parenthesised, except where it already stands alone in parentheses: softmax(y~^T). */
static void with_names(const tg_tape *tape, const tg_tensor *n, const char *phrase, char *buf,
                       size_t len) {
    char names[3][48] = {"", "", ""}; /* first input, second input, output */
    for (int k = 0; k < 2 && k < n->n_inputs; k++)
        name_of(tape, n->inputs[k], names[k], sizeof names[k]);
    name_of(tape, n, names[2], sizeof names[2]);

    size_t o = 0;
    buf[0] = '\0';
    for (const char *p = phrase; *p && o + 1 < len;) {
        if (!(*p == '_' || (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z'))) {
            buf[o++] = *p++;
            buf[o] = '\0';
            continue;
        }
        const char *start = p;
        while (*p == '_' || (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
               (*p >= '0' && *p <= '9'))
            p++;
        char word[32];
        textf(word, sizeof word, "%.*s", (int)(p - start), start);
        bool grad = word[0] == 'd' && word[1] && !word[2];
        const char *base = grad ? word + 1 : word;
        int which = -1;
        if (base[0] && !base[1]) {
            switch (base[0]) {
            case 'x':
            case 'a':
            case 'z': which = n->n_inputs > 0 ? 0 : -1; break;
            case 'b':
            case 't': which = n->n_inputs > 1 ? 1 : -1; break;
            case 'y':
            case 'L': which = 2; break;
            default: break;
            }
        }
        if (which < 0) {
            o += (size_t)textf(buf + o, len - o, "%s", word);
        } else {
            const char *nm = names[which];
            bool alone = !grad && start > phrase && start[-1] == '(' && *p == ')';
            bool wrap = !alone && strpbrk(nm, " ^+-*/()") != NULL;
            o += (size_t)textf(buf + o, len - o, "%s%s%s%s", grad ? "dl/d" : "", wrap ? "(" : "",
                               nm, wrap ? ")" : "");
        }
        if (o >= len)
            o = len - 1;
    }
}

/* ---- Numbers ---- */

static void fmt_num(char *buf, size_t len, double v, bool integer) {
    double a = fabs(v);
    if (integer)
        textf(buf, len, "%.0f", v);
    else if (v == 0)
        textf(buf, len, "0");
    else if (a >= 1e-3 && a < 1e4)
        textf(buf, len, "%.4f", v);
    else
        textf(buf, len, "%.3e", v);
}

/* A tensor's elements as doubles. Caller frees; NULL on no memory. */
static double *to_doubles(const tg_tensor *t) {
    double *v = malloc((size_t)(t->numel ? t->numel : 1) * sizeof *v);
    if (v)
        for (int64_t i = 0; i < t->numel; i++)
            v[i] = tg_tensor_get(t, i);
    return v;
}

/* The values of one tensor, laid out for reading (a view: shape plus doubles). */
typedef struct vals {
    int rank;
    const int64_t *shape;
    int64_t numel;
    const double *v;
    bool integer;
} vals;

/* Width of the widest entry, so that the entries of one tensor line up. */
static int vals_width(const vals *x, int64_t from, int64_t to) {
    int w = 1;
    for (int64_t i = from; i < to; i++) {
        char b[32];
        fmt_num(b, sizeof b, x->v[i], x->integer);
        /* A column for the sign even when all are positive, so that tensors shown one under the
         * other (upstream, local, result) line up. */
        int l = (int)strlen(b) + (!x->integer && b[0] != '-');
        w = l > w ? l : w;
    }
    return w;
}

static void print_row(FILE *f, const vals *x, int64_t from, int64_t to, int w) {
    fprintf(f, "[");
    for (int64_t i = from; i < to; i++) {
        char b[32];
        fmt_num(b, sizeof b, x->v[i], x->integer);
        fprintf(f, "%s%*s", i > from ? "  " : " ", w, b);
    }
    fprintf(f, " ]");
}

/* Prints the values, `suffix` and a newline. A small matrix gets one line per row, each
 * continuation line starting at column `col` (where the first '[' was printed); a column vector
 * [n,1] prints on one line marked ^T; a large tensor prints as a few entries and its norm. */
static void print_vals(FILE *f, const vals *x, int col, const char *suffix) {
    char b[32];
    if (x->numel <= 0) { /* nothing to lay out (to_doubles gave one unset double) */
        fprintf(f, "[ ]%s\n", suffix);
        return;
    }
    if (x->numel > TG_TRACE_FULL) {
        double ss = 0;
        for (int64_t i = 0; i < x->numel; i++)
            ss += x->v[i] * x->v[i];
        char nb[32];
        fmt_num(nb, sizeof nb, sqrt(ss), false);
        int w = vals_width(x, 0, TG_SUMMARY_HEAD);
        int wl = vals_width(x, x->numel - 1, x->numel);
        fprintf(f, "[");
        for (int64_t i = 0; i < TG_SUMMARY_HEAD; i++) {
            fmt_num(b, sizeof b, x->v[i], x->integer);
            fprintf(f, "%s%*s", i ? "  " : " ", w, b);
        }
        fmt_num(b, sizeof b, x->v[x->numel - 1], x->integer);
        fprintf(f, "  ... %*s ]  (%lld entries, norm %s)%s\n", wl, b, (long long)x->numel, nb,
                suffix);
        return;
    }
    if (x->rank == 0 && x->numel == 1) {
        fmt_num(b, sizeof b, x->v[0], x->integer);
        fprintf(f, "%s%s\n", b, suffix);
        return;
    }
    int w = vals_width(x, 0, x->numel);
    if (x->rank == 2 && x->shape[0] > 1 && x->shape[1] > 1) {
        for (int64_t r = 0; r < x->shape[0]; r++) {
            if (r)
                fprintf(f, "%*s", col, "");
            /* numel is shape[0] * shape[1]; the bound lets the analyzer see no row reads past it */
            const int64_t end = (r + 1) * x->shape[1];
            print_row(f, x, r * x->shape[1], end < x->numel ? end : x->numel, w);
            fprintf(f, "%s\n", r == x->shape[0] - 1 ? suffix : "");
        }
        return;
    }
    print_row(f, x, 0, x->numel, w);
    fprintf(f, "%s%s\n", (x->rank == 2 && x->shape[0] > 1 && x->shape[1] == 1) ? "^T" : "", suffix);
}

/* Prints `prefix` then the values and `suffix`, continuation rows aligned under the first '['. */
static void print_line(FILE *f, const char *prefix, const vals *x, const char *suffix) {
    fputs(prefix, f);
    print_vals(f, x, (int)strlen(prefix), suffix);
}

/* ---- The listing ---- */

tg_status tg_tape_print(const tg_tape *tape, FILE *out) {
    if (!tape || !out)
        return tg__set_last_error(TG_ERR_NULL, "tg_tape_print: %s is NULL", !tape ? "tape" : "out");
    const int64_t n = tg_tape_size(tape);
    int64_t n_leaves = 0;
    const tg_tensor **leaves = collect_leaves(tape, &n_leaves);

    /* Column widths from the content, so the listing lines up whatever the names. */
    int w_name = 4, w_op = 2, w_in = 6, w_shape = 5;
    char nb[48], sb[TG_SHAPE_STR_LEN], eb[256];
    for (int64_t j = 0; j < n_leaves; j++) {
        int l = (int)strlen(name_of(tape, leaves[j], nb, sizeof nb));
        w_name = l > w_name ? l : w_name;
        l = (int)strlen(tg_shape_str(leaves[j], sb, sizeof sb));
        w_shape = l > w_shape ? l : w_shape;
    }
    for (int64_t i = 0; i < n; i++) {
        const tg_tensor *t = tg_tape_node(tape, i);
        int l = (int)strlen(name_of(tape, t, nb, sizeof nb));
        w_name = l > w_name ? l : w_name;
        l = (int)strlen(op_label(t));
        w_op = l > w_op ? l : w_op;
        const char *e = node_expr(tape, t, eb, sizeof eb);
        l = (int)(strlen(e) - strlen(op_label(t)) - 2); /* the inputs, without "op(" and ")" */
        w_in = l > w_in ? l : w_in;
        l = (int)strlen(tg_shape_str(t, sb, sizeof sb));
        w_shape = l > w_shape ? l : w_shape;
    }
    int w_idx = textf(NULL, 0, "%lld", (long long)(n > 0 ? n - 1 : 0));
    w_idx = w_idx < 1 ? 1 : w_idx;

    fprintf(out, "leaves (made by the caller)\n");
    fprintf(out, "  %*s  %-*s  %-*s  %s\n", w_idx, "", w_name, "name", w_shape, "shape", "role");
    for (int64_t j = 0; j < n_leaves; j++) {
        const tg_tensor *x = leaves[j];
        const char *role = x->requires_grad     ? "parameter: gets a gradient"
                           : x->dtype == TG_I32 ? "data: class indices"
                                                : "data: no gradient";
        fprintf(out, "  %*s  %-*s  %-*s  %s\n", w_idx, "", w_name, name_of(tape, x, nb, sizeof nb),
                w_shape, tg_shape_str(x, sb, sizeof sb), role);
    }
    fprintf(out, "tape (%lld node%s, forward order)\n", (long long)n, n == 1 ? "" : "s");
    fprintf(out, "  %*s  %-*s  %-*s  %-*s  %-*s  %s\n", w_idx, "#", w_name, "name", w_op, "op",
            w_in, "inputs", w_shape, "shape", "saves for backward");
    for (int64_t i = 0; i < n; i++) {
        const tg_tensor *t = tg_tape_node(tape, i);
        const char *e = node_expr(tape, t, eb, sizeof eb);
        const char *ins = e + strlen(op_label(t)) + 1;
        int in_len = (int)strlen(ins) - 1;
        char saves[256];
        with_names(tape, t, tg_tensor_op_saves(t), saves, sizeof saves);
        fprintf(out, "  %*lld  %-*s  %-*s  %-*.*s  %-*s  %s\n", w_idx, (long long)i, w_name,
                name_of(tape, t, nb, sizeof nb), w_op, op_label(t), w_in, in_len, ins, w_shape,
                tg_shape_str(t, sb, sizeof sb), saves);
    }
    free(leaves);
    return ferror(out) ? tg__set_last_error(TG_ERR_IO, "tg_tape_print: writing failed") : TG_OK;
}

/* ---- The graph as DOT ---- */

/* Writes s with HTML-label escapes (names may hold '<', '&' ...). */
static void dot_escape(FILE *f, const char *s) {
    for (; *s; s++) {
        switch (*s) {
        case '&': fputs("&amp;", f); break;
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '"': fputs("&quot;", f); break;
        default: fputc(*s, f);
        }
    }
}

/* A value table row: "value [ 0.1  0.2 ]", one row per matrix row; omitted when large. */
static void dot_values(FILE *f, const char *label, const tg_tensor *t, const char *color) {
    if (t->numel > TG_DOT_FULL) {
        fprintf(f, "<TR><TD ALIGN=\"LEFT\"><FONT COLOR=\"%s\">%s: %lld entries</FONT></TD></TR>",
                color, label, (long long)t->numel);
        return;
    }
    double *v = to_doubles(t);
    if (!v)
        return;
    vals x = {t->rank, t->shape, t->numel, v, t->dtype == TG_I32};
    int w = vals_width(&x, 0, x.numel);
    const bool matrix = t->rank == 2 && t->shape[0] > 1 && t->shape[1] > 1;
    const int64_t cols = matrix ? t->shape[1] : t->numel;
    for (int64_t i = 0; i < t->numel || i == 0; i += cols) {
        fprintf(f, "<TR><TD ALIGN=\"LEFT\"><FONT FACE=\"monospace\" COLOR=\"%s\">%-5s ", color,
                i ? "" : label);
        if (t->rank == 0) { /* a scalar, e.g. the loss: no brackets */
            char b[32];
            fmt_num(b, sizeof b, v[0], x.integer);
            fputs(b, f);
        } else {
            fputc('[', f);
            for (int64_t c = i; c < i + cols; c++) {
                char b[32];
                fmt_num(b, sizeof b, v[c], x.integer);
                fprintf(f, "%s%*s", c > i ? "  " : " ", w, b);
            }
            fprintf(f, " ]%s", (t->rank == 2 && t->shape[0] > 1 && t->shape[1] == 1) ? "^T" : "");
        }
        fprintf(f, "</FONT></TD></TR>");
        if (t->numel == 0)
            break;
    }
    free(v);
}

static void dot_node(FILE *f, const tg_tape *tape, const tg_tensor *t, const char *id,
                     bool is_output) {
    char nb[48], sb[TG_SHAPE_STR_LEN], eb[256];
    const char *style;
    if (t->on_tape)
        style = is_output ? "shape=box, style=\"rounded,filled,bold\", fillcolor=\"#dae8fc\""
                          : "shape=box, style=\"rounded,filled\", fillcolor=\"white\"";
    else if (t->requires_grad)
        style = "shape=box, style=filled, fillcolor=\"#fff2cc\"";
    else
        style = "shape=box, style=\"filled,dashed\", fillcolor=\"#eeeeee\"";
    fprintf(f, "  %s [%s, label=<<TABLE BORDER=\"0\" CELLBORDER=\"0\" CELLSPACING=\"1\">", id,
            style);
    fprintf(f, "<TR><TD><B>");
    dot_escape(f, name_of(tape, t, nb, sizeof nb));
    fprintf(f, "</B> %s</TD></TR>", tg_shape_str(t, sb, sizeof sb));
    fprintf(f, "<TR><TD><FONT POINT-SIZE=\"11\">");
    if (t->on_tape)
        dot_escape(f, node_expr(tape, t, eb, sizeof eb));
    else
        fputs(t->requires_grad ? "parameter" : "data", f);
    fprintf(f, "</FONT></TD></TR>");
    dot_values(f, "value", t, "black");
    if (t->op == TG_OP_SOFTMAX_CROSS_ENTROPY && t->saved) {
        /* What the fused node keeps: the probabilities, the prediction y^ of the notes. */
        const tg_tensor *z = t->inputs[0];
        tg_tensor p = {.dtype = z->dtype,
                       .rank = z->rank,
                       .numel = z->numel,
                       .data = (void *)tg__sce_probs(t)};
        memcpy(p.shape, z->shape, sizeof p.shape);
        char zb[48];
        fprintf(f, "<TR><TD ALIGN=\"LEFT\"><FONT COLOR=\"#1f5fa8\">saved p = softmax(");
        dot_escape(f, name_of(tape, z, zb, sizeof zb));
        fprintf(f, "), the prediction y^</FONT></TD></TR>");
        dot_values(f, "p", &p, "#1f5fa8");
    }
    if (t->grad)
        dot_values(f, "grad", t->grad, "#b30000");
    fprintf(f, "</TABLE>>];\n");
}

tg_status tg_tape_write_dot(const tg_tape *tape, FILE *out) {
    if (!tape || !out)
        return tg__set_last_error(TG_ERR_NULL, "tg_tape_write_dot: %s is NULL",
                                  !tape ? "tape" : "out");
    const int64_t n = tg_tape_size(tape);
    int64_t n_leaves = 0;
    const tg_tensor **leaves = collect_leaves(tape, &n_leaves);
    fprintf(out, "digraph tape {\n");
    fprintf(out, "  graph [rankdir=TB, ordering=in, nodesep=0.25, ranksep=0.35, fontsize=12,\n"
                 "         labelloc=b, label=\"yellow: parameters   grey, dashed: data   white: "
                 "computed on the tape   blue: output   red: gradient dl/d(this)\"];\n");
    fprintf(out, "  node [fontname=\"Helvetica\", fontsize=12, margin=\"0.08,0.04\"];\n");
    fprintf(out, "  edge [arrowsize=0.7];\n");
    for (int64_t j = 0; j < n_leaves; j++) {
        char id[32];
        textf(id, sizeof id, "leaf%lld", (long long)j);
        dot_node(out, tape, leaves[j], id, false);
    }
    for (int64_t i = 0; i < n; i++) {
        const tg_tensor *t = tg_tape_node(tape, i);
        bool used = false;
        for (int64_t m = i + 1; m < n && !used; m++)
            for (int k = 0; k < tg_tape_node(tape, m)->n_inputs; k++)
                used |= tg_tape_node(tape, m)->inputs[k] == t;
        char id[32];
        textf(id, sizeof id, "n%lld", (long long)i);
        dot_node(out, tape, t, id, !used);
    }
    /* Edges in data-flow order: node by node as recorded, each from its inputs in order. */
    for (int64_t i = 0; i < n; i++) {
        const tg_tensor *t = tg_tape_node(tape, i);
        for (int k = 0; k < t->n_inputs; k++) {
            const tg_tensor *x = t->inputs[k];
            if (x->on_tape) {
                fprintf(out, "  n%lld -> n%lld;\n", (long long)x->tape_index, (long long)i);
            } else {
                int64_t j = 0;
                while (j < n_leaves && leaves[j] != x)
                    j++;
                fprintf(out, "  leaf%lld -> n%lld;\n", (long long)j, (long long)i);
            }
        }
    }
    fprintf(out, "}\n");
    free(leaves);
    return ferror(out) ? tg__set_last_error(TG_ERR_IO, "tg_tape_write_dot: writing failed") : TG_OK;
}

tg_status tg_tape_save_dot(const tg_tape *tape, const char *path) {
    if (!tape || !path)
        return tg__set_last_error(TG_ERR_NULL, "tg_tape_save_dot: %s is NULL",
                                  !tape ? "tape" : "path");
    FILE *f = fopen(path, "w");
    if (!f)
        return tg__set_last_error(TG_ERR_IO, "tg_tape_save_dot: cannot open %s for writing", path);
    tg_status st = tg_tape_write_dot(tape, f);
    if (fclose(f) != 0 && st == TG_OK)
        st = tg__set_last_error(TG_ERR_IO, "tg_tape_save_dot: writing %s failed", path);
    return st;
}

/* Appends s to buf in single quotes for the shell ('it'\''s'). False if it does not fit. */
static bool shell_quote(char *buf, size_t len, const char *s) {
    size_t n = strlen(buf);
    if (n + 2 >= len) /* room for the two quotes and the terminator, even when s is empty */
        return false;
    buf[n++] = '\'';
    for (; *s; s++) {
        const char *piece = *s == '\'' ? "'\\''" : NULL;
        size_t pl = piece ? strlen(piece) : 1;
        if (n + pl + 2 >= len)
            return false;
        if (piece)
            memcpy(buf + n, piece, pl);
        else
            buf[n] = *s;
        n += pl;
    }
    buf[n++] = '\'';
    buf[n] = '\0';
    return true;
}

tg_status tg_tape_render(const tg_tape *tape, const char *path) {
    if (!tape || !path)
        return tg__set_last_error(TG_ERR_NULL, "tg_tape_render: %s is NULL",
                                  !tape ? "tape" : "path");
    const char *ext = strrchr(path, '.');
    const char *fmt = NULL;
    if (ext && (strcmp(ext, ".png") == 0 || strcmp(ext, ".svg") == 0 || strcmp(ext, ".pdf") == 0))
        fmt = ext + 1;
    if (!fmt)
        return tg__set_last_error(
            TG_ERR_VALUE, "tg_tape_render: %s: the name must end in .png, .svg or .pdf", path);
    if (system("command -v dot >/dev/null 2>&1") != 0)
        return tg__set_last_error(
            TG_ERR_IO,
            "tg_tape_render: cannot draw %s: Graphviz's `dot` is not installed (Debian: "
            "apt-get install graphviz); the DOT text is available from tg_tape_save_dot",
            path);
    /* The DOT text goes to a temporary file rather than a pipe: a pipe to a `dot` that dies early
     * would raise SIGPIPE in the caller's program. */
    const char *tmpdir = getenv("TMPDIR");
    char tmp[512];
    textf(tmp, sizeof tmp, "%s/tapegrad-XXXXXX", tmpdir && tmpdir[0] ? tmpdir : "/tmp");
    int fd = mkstemp(tmp);
    FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (!f) {
        if (fd >= 0)
            close(fd);
        return tg__set_last_error(TG_ERR_IO, "tg_tape_render: cannot create a temporary file %s",
                                  tmp);
    }
    tg_status st = tg_tape_write_dot(tape, f);
    if (fclose(f) != 0 && st == TG_OK)
        st = tg__set_last_error(TG_ERR_IO, "tg_tape_render: writing %s failed", tmp);
    if (st == TG_OK) {
        char cmd[2048];
        textf(cmd, sizeof cmd, "dot -T%s -o ", fmt);
        bool ok = shell_quote(cmd, sizeof cmd, path);
        const size_t used = ok ? strlen(cmd) : sizeof cmd;
        ok = ok && used + 1 < sizeof cmd;
        if (ok) { /* the separator, and its terminator: room checked just above */
            cmd[used] = ' ';
            cmd[used + 1] = '\0';
        }
        ok = ok && shell_quote(cmd, sizeof cmd, tmp);
        if (!ok)
            st = tg__set_last_error(TG_ERR_VALUE, "tg_tape_render: the path %s is too long", path);
        else if (system(cmd) != 0)
            st = tg__set_last_error(TG_ERR_IO, "tg_tape_render: `dot -T%s` failed to write %s", fmt,
                                    path);
    }
    remove(tmp);
    return st;
}

/* ---- The chain-rule trace ---- */

/* Marks the nodes whose backward runs in this pass: those on a path to `output` that need a
 * gradient. Caller frees; NULL on no memory. */
static bool *active_nodes(const tg_tape *tape, const tg_tensor *output) {
    int64_t top = output->tape_index;
    bool *on = calloc((size_t)top + 1, 1);
    if (!on)
        return NULL;
    on[top] = true;
    for (int64_t i = top; i >= 0; i--) {
        const tg_tensor *t = tg_tape_node(tape, i);
        if (!on[i] || !t->requires_grad) {
            on[i] = false;
            continue;
        }
        for (int k = 0; k < t->n_inputs; k++)
            if (t->inputs[k]->on_tape)
                on[t->inputs[k]->tape_index] = true;
    }
    return on;
}

/* The active nodes that use x, in reverse order (the order their contributions arrive). */
static int64_t consumers(const tg_tape *tape, const bool *on, int64_t top, const tg_tensor *x,
                         int64_t *list, int64_t cap) {
    int64_t count = 0;
    for (int64_t m = top; m >= 0; m--) {
        if (!on[m])
            continue;
        const tg_tensor *t = tg_tape_node(tape, m);
        for (int k = 0; k < t->n_inputs; k++)
            if (t->inputs[k] == x) {
                if (count < cap)
                    list[count] = m;
                count++;
                break;
            }
    }
    return count;
}

/* Formats "#5 and #7" or "#3, #5 and #7". */
static void format_list(char *buf, size_t len, const int64_t *list, int64_t count, int64_t cap) {
    size_t n = 0;
    buf[0] = '\0';
    for (int64_t c = 0; c < count && c < cap && n < len; c++)
        n += (size_t)textf(buf + n, len - n, "%s#%lld",
                           c == 0 ? "" : (c == count - 1 ? " and " : ", "), (long long)list[c]);
    if (count > cap && n < len)
        textf(buf + n, len - n, " ...");
}

/* "    label       ": the trace's left column, 4 spaces and a label padded to 12. */
static const char *lab(char *buf, size_t len, const char *label) {
    textf(buf, len, "    %-11s ", label);
    return buf;
}

/* The numbers of the local derivative, for the ops where it is a tensor of its own computed from
 * what forward saved (tanh's 1 - h^2) or a constant (scale's s). Printed after the rule. */
static void trace_local(FILE *f, const tg_tape *tape, const tg_tensor *n) {
    char yb[48], xb[48], yf[56], xf[56], what[128], pre[256], lb[32];
    name_of(tape, n, yb, sizeof yb);
    formula_name(yb, yf, sizeof yf);
    if (!strpbrk(yb, " ^+-*/()"))
        textf(yf, sizeof yf, "%s", yb);
    if (n->n_inputs < 1)
        return; /* every op with a local derivative to show has an input */
    const tg_tensor *x = n->inputs[0];
    name_of(tape, x, xb, sizeof xb);
    formula_name(xb, xf, sizeof xf);
    if (!strpbrk(xb, " ^+-*/()"))
        textf(xf, sizeof xf, "%s", xb);
    switch (n->op) {
    case TG_OP_TANH:
    case TG_OP_SIGMOID:
    case TG_OP_EXP:
    case TG_OP_RELU:
    case TG_OP_LOG: {
        double *v = to_doubles(n->op == TG_OP_LOG ? x : n);
        if (!v)
            return;
        for (int64_t i = 0; i < n->numel; i++) {
            const double s = v[i]; /* the saved output y, or x for log */
            switch (n->op) {
            case TG_OP_TANH: v[i] = 1 - s * s; break;
            case TG_OP_SIGMOID: v[i] = s * (1 - s); break;
            case TG_OP_RELU: v[i] = s > 0; break;
            case TG_OP_LOG: v[i] = 1 / s; break;
            default: break; /* exp: the derivative is the output itself */
            }
        }
        switch (n->op) {
        case TG_OP_TANH: textf(what, sizeof what, "1 - %s^2", yf); break;
        case TG_OP_SIGMOID: textf(what, sizeof what, "%s (1 - %s)", yf, yf); break;
        case TG_OP_RELU: textf(what, sizeof what, "[%s > 0]", yf); break;
        case TG_OP_LOG: textf(what, sizeof what, "1 / %s", xf); break;
        default: textf(what, sizeof what, "%s", yf); break;
        }
        textf(pre, sizeof pre, "%sd%s/d%s = %s = ", lab(lb, sizeof lb, "local"), yf, xf, what);
        vals vv = {n->rank, n->shape, n->numel, v, n->op == TG_OP_RELU};
        print_line(f, pre, &vv, "");
        free(v);
        break;
    }
    case TG_OP_SOFTMAX_CROSS_ENTROPY: {
        /* dl/dz = (p - t) / N per element: the one-hot (or given) targets, then the difference. */
        const tg_tensor *z = n->inputs[0], *t = n->inputs[1];
        const int64_t N = z->shape[0], C = z->shape[1];
        double *v = malloc((size_t)(2 * N * C) * sizeof *v);
        if (!v)
            return;
        double *pt = v + N * C;
        tg_tensor p = {
            .dtype = z->dtype, .rank = 2, .numel = N * C, .data = (void *)tg__sce_probs(n)};
        memcpy(p.shape, z->shape, sizeof p.shape);
        for (int64_t i = 0; i < N * C; i++) {
            v[i] = tg_tensor_get(&p, i);
            pt[i] = t->dtype == TG_I32 ? 0 : tg_tensor_get(t, i);
        }
        if (t->dtype == TG_I32)
            for (int64_t r = 0; r < N; r++)
                pt[r * C + (int64_t)tg_tensor_get(t, r)] = 1;
        char tb[48], l1[64], l2[64];
        name_of(tape, t, tb, sizeof tb);
        textf(l1, sizeof l1, "%s%s", tb, t->dtype == TG_I32 ? " as one-hot" : "");
        textf(l2, sizeof l2, "(p - %s) / N", tb);
        const int w = (int)(strlen(l1) > strlen(l2) ? strlen(l1) : strlen(l2));
        vals vt = {2, z->shape, N * C, pt, true};
        textf(pre, sizeof pre, "%s%-*s = ", lab(lb, sizeof lb, "local"), w, l1);
        print_line(f, pre, &vt, "");
        for (int64_t i = 0; i < N * C; i++)
            v[i] = (v[i] - pt[i]) / (double)N;
        vals vp = {2, z->shape, N * C, v, false};
        char nn[48];
        textf(nn, sizeof nn, "   (N = %lld row%s)", (long long)N, N == 1 ? "" : "s");
        textf(pre, sizeof pre, "%s%-*s = ", lab(lb, sizeof lb, ""), w, l2);
        print_line(f, pre, &vp, nn);
        free(v);
        break;
    }
    case TG_OP_SCALE:
        fprintf(f, "%ss = %g\n", lab(lb, sizeof lb, "local"), n->params.scalar);
        break;
    case TG_OP_MEAN:
        fprintf(f, "%s1/n = 1/%lld\n", lab(lb, sizeof lb, "local"), (long long)x->numel);
        break;
    default: break;
    }
}

/* What forward saved, with names, and for softmax_cross_entropy the saved probabilities. */
static void trace_saved(FILE *f, const tg_tape *tape, const tg_tensor *n) {
    char text[256], lb[32], pre[128];
    with_names(tape, n, tg_tensor_op_saves(n), text, sizeof text);
    fprintf(f, "%s%s\n", lab(lb, sizeof lb, "saved"), text);
    if (n->op == TG_OP_SOFTMAX_CROSS_ENTROPY) {
        const tg_tensor *z = n->inputs[0];
        tg_tensor p = {
            .dtype = z->dtype, .rank = 2, .numel = z->numel, .data = (void *)tg__sce_probs(n)};
        memcpy(p.shape, z->shape, sizeof p.shape);
        double *v = to_doubles(&p);
        if (!v)
            return;
        vals vp = {2, z->shape, z->numel, v, false};
        textf(pre, sizeof pre, "%sp = ", lab(lb, sizeof lb, ""));
        print_line(f, pre, &vp, "   (the prediction, y^ in the usual notation)");
        free(v);
    }
}

void tg__trace_begin(tg_tape *tape, const tg_tensor *output) {
    FILE *f = tg__tape_trace(tape);
    char nb[48], pre[160];
    name_of(tape, output, nb, sizeof nb);
    fprintf(f,
            "backward pass from %s (node #%lld). l = %s; dl/dv is the gradient of l with "
            "respect to v.\n",
            nb, (long long)output->tape_index, nb);
    fprintf(f, "Nodes run in reverse order; each turns dl/d(its output) into dl/d(each input).\n");
    double *v = to_doubles(output->grad);
    if (v) {
        vals x = {output->rank, output->shape, output->numel, v, false};
        textf(pre, sizeof pre, "seed: dl/d%s = ", nb);
        print_line(f, pre, &x, "");
        free(v);
    }
}

void tg__trace_end(tg_tape *tape, const tg_tensor *output) {
    FILE *f = tg__tape_trace(tape);
    char nb[48];
    fprintf(f, "\nend of the backward pass from %s\n", name_of(tape, output, nb, sizeof nb));
    fflush(f);
}

/* Reports what n's backward added to input k's gradient: the total when it is the only
 * contribution, else this contribution and the sum so far. `before` is overwritten. */
static void trace_input(FILE *f, const tg_tape *tape, const tg_tensor *n, int k, double *before,
                        const bool *on, int64_t top, int w) {
    const tg_tensor *x = n->inputs[k];
    char xb[48], xf[56], lb[64], pre[256];
    name_of(tape, x, xb, sizeof xb);
    formula_name(xb, xf, sizeof xf);
    if (!strpbrk(xb, " ^+-*/()"))
        textf(xf, sizeof xf, "%s", xb);
    char arrow_buf[64];
    textf(lb, sizeof lb, "-> %s", xb);
    lab(arrow_buf, sizeof arrow_buf, lb);
    for (int j = 0; j < k; j++)
        if (n->inputs[j] == x) {
            fprintf(f, "%s(input %d is input %d again: both parts are in the line above)\n",
                    arrow_buf, k + 1, j + 1);
            return;
        }
    if (!x->grad) {
        fprintf(f, "%sno gradient: %s\n", arrow_buf,
                x->dtype == TG_I32 ? "class indices"
                : x->on_tape       ? "no parameter upstream of it"
                                   : "data, not a parameter");
        return;
    }
    double *after = to_doubles(x->grad);
    if (!after || !before) {
        fprintf(f, "%s(out of memory for the trace)\n", arrow_buf);
        free(after);
        return;
    }
    bool had = false;
    for (int64_t i = 0; i < x->numel; i++)
        had |= before[i] != 0;
    int64_t count = 1, which = 1, list[8];
    if (on) {
        count = consumers(tape, on, top, x, list, 8);
        for (int64_t c = 0; c < count && c < 8; c++)
            if (list[c] == n->tape_index)
                which = c + 1;
    }
    /* Only the elementwise binary ops broadcast; a matmul operand is simply smaller. */
    const bool elementwise =
        n->op == TG_OP_ADD || n->op == TG_OP_SUB || n->op == TG_OP_MUL || n->op == TG_OP_DIV;
    const char *bcast = elementwise && x->numel < n->numel
                            ? "   (summed over the axes it was broadcast along)"
                            : "";
    vals total = {x->rank, x->shape, x->numel, after, false};
    char lhs[64];
    textf(lhs, sizeof lhs, "dl/d%s", xf);
    if (count <= 1 && !had) {
        textf(pre, sizeof pre, "%s%-*s = ", arrow_buf, w, lhs);
        print_line(f, pre, &total, bcast);
    } else {
        for (int64_t i = 0; i < x->numel; i++)
            before[i] = after[i] - before[i];
        vals part = {x->rank, x->shape, x->numel, before, false};
        char note[96];
        if (count > 1)
            textf(note, sizeof note, "   (contribution %lld of %lld)%s", (long long)which,
                  (long long)count, bcast);
        else
            textf(note, sizeof note, "%s", bcast);
        textf(pre, sizeof pre, "%s%-*s += ", arrow_buf, w, lhs);
        print_line(f, pre, &part, note);
        textf(pre, sizeof pre, "%s%-*s  = ", lab(lb, sizeof lb, ""), w, lhs);
        print_line(f, pre, &total,
                   which < count ? "   (sum so far)"
                   : count > 1   ? "   (all contributions summed)"
                                 : "   (added to what it held before this pass)");
    }
    free(after);
}

void tg__trace_node(tg_tape *tape, tg_tensor *n, const tg_tensor *output) {
    FILE *f = tg__tape_trace(tape);
    char nb[48], nf[56], eb[256], sb[TG_SHAPE_STR_LEN], pre[256], lb[32], text[256];
    name_of(tape, n, nb, sizeof nb);
    formula_name(nb, nf, sizeof nf);
    if (!strpbrk(nb, " ^+-*/()"))
        textf(nf, sizeof nf, "%s", nb);

    /* The left-hand sides dl/d(name) share one width, so the values line up. */
    int w = (int)strlen(nf) + 4;
    for (int k = 0; k < n->n_inputs; k++) {
        char ib[48], ifm[56];
        name_of(tape, n->inputs[k], ib, sizeof ib);
        int l = (int)strlen(formula_name(ib, ifm, sizeof ifm)) + 4;
        w = l > w ? l : w;
    }

    /* Which nodes run in this pass, to count where each gradient comes from. */
    const int64_t top = output->tape_index;
    bool *on = active_nodes(tape, output);

    fprintf(f, "\n#%lld  %s = %s   %s\n", (long long)n->tape_index, nb,
            node_expr(tape, n, eb, sizeof eb), tg_shape_str(n, sb, sizeof sb));

    /* Upstream: dl/d(this node's output), complete now that every node using it has run. */
    const tg_tensor *g = n->grad; /* n's shape; its own fields say how many doubles `up` holds */
    double *up = to_doubles(g);
    if (up) {
        int64_t list[8], c = on ? consumers(tape, on, top, n, list, 8) : 0;
        char note[160] = "";
        if (c > 1) {
            char l2[96];
            format_list(l2, sizeof l2, list, c, 8);
            textf(note, sizeof note, "   (the sum from %s)", l2);
        } else if (n == output) {
            textf(note, sizeof note, "   (the seed)");
        }
        vals x = {g->rank, g->shape, g->numel, up, false};
        char lhs[64];
        textf(lhs, sizeof lhs, "dl/d%s", nf);
        textf(pre, sizeof pre, "%s%-*s = ", lab(lb, sizeof lb, "upstream"), w, lhs);
        print_line(f, pre, &x, note);
        free(up);
    }
    trace_saved(f, tape, n);
    with_names(tape, n, tg_op_table[n->op]->local, text, sizeof text);
    fprintf(f, "%s%s\n", lab(lb, sizeof lb, "rule"), text);
    trace_local(f, tape, n);

    /* Snapshot the inputs' gradients, run the op's own backward, report the difference. */
    double *before[TG_MAX_INPUTS] = {0};
    for (int k = 0; k < n->n_inputs; k++)
        if (n->inputs[k]->grad)
            before[k] = to_doubles(n->inputs[k]->grad);
    tg_op_table[n->op]->backward(n);
    for (int k = 0; k < n->n_inputs; k++) {
        trace_input(f, tape, n, k, before[k], on, top, w);
        free(before[k]);
    }
    free(on);
}
