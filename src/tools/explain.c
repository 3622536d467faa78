/* explain.c -- names, numbers and the description of a step, shared by the teaching tools (see
 * explain.h). Speed is not a goal here: these are O(nodes^2) in the worst case, which is nothing
 * next to printing them. */
#include "explain.h"

#include <math.h>
#include <stdlib.h>

/* Entries shown in a summary of a large tensor: the first few and the last one. */
#define TG_SUMMARY_HEAD 3

int tg__textf(char *buf, size_t len, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, len, fmt, ap);
    va_end(ap);
    return n;
}

/* ---- Names ---- */

/* Distinct leaves used by the tape's nodes, in order of first use. Caller frees. NULL if none
 * (or no memory: the leaves are then unnamed "leaf" in the output, nothing worse). */
const tg_tensor **tg__collect_leaves(const tg_tape *tape, int64_t *count) {
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
const char *tg__name_of(const tg_tape *tape, const tg_tensor *t, char *buf, size_t len) {
    if (t->name[0]) {
        tg__textf(buf, len, "%s", t->name);
        return buf;
    }
    if (t->on_tape) {
        tg__textf(buf, len, "%s#%lld", tg_tensor_op_name(t), (long long)t->tape_index);
        return buf;
    }
    int64_t n_leaves = 0;
    const tg_tensor **leaves = tg__collect_leaves(tape, &n_leaves);
    int64_t k = 0;
    while (k < n_leaves && leaves[k] != t)
        k++;
    if (k < n_leaves)
        tg__textf(buf, len, "leaf#%lld", (long long)k);
    else
        tg__textf(buf, len, "leaf");
    free(leaves);
    return buf;
}

/* A name as it appears inside a formula: in parentheses when it holds an operator or a space
 * ("dl/d(W_h x)", "(y~^T)"), so the formula stays unambiguous. */
const char *tg__formula_name(const char *name, char *buf, size_t len) {
    if (strpbrk(name, " ^+-*/()")) {
        tg__textf(buf, len, "(%s)", name);
        return buf;
    }
    return name;
}

/* The node's right-hand side: "tanh(h~)", "add(W_h x, b_h)", "scale(h, 3)": the op's own
 * parameters, as its descriptor prints them, after the inputs. */
const char *tg__node_expr(const tg_tape *tape, const tg_tensor *t, char *buf, size_t len) {
    size_t n = (size_t)tg__textf(buf, len, "%s(", tg__node_op_name(t));
    for (int k = 0; k < t->n_inputs && n < len; k++) {
        char nb[48];
        n += (size_t)tg__textf(buf + n, len - n, "%s%s", k ? ", " : "",
                               tg__name_of(tape, t->inputs[k], nb, sizeof nb));
    }
    char pb[128];
    if (t->op && t->op->print_params && t->op->print_params(t, pb, sizeof pb) > 0 && n < len)
        n += (size_t)tg__textf(buf + n, len - n, "%s%s", t->n_inputs ? ", " : "", pb);
    if (n < len)
        tg__textf(buf + n, len - n, ")");
    return buf;
}

/* An op's phrase (its rule or what it saves) with the tensors' names: "dx += dy * (1 - y^2)"
 * becomes "dl/dh~ += dl/dh * (1 - h^2)". The phrases name the first input x, a or z, the second
 * b or t, the output y (L for a loss); dx is written dl/dx. A name holding an operator or a space
 * is parenthesised, except where it already stands alone in parentheses: softmax(y~^T). */
void tg__with_names(const tg_tape *tape, const tg_tensor *n, const char *phrase, char *buf,
                    size_t len) {
    char names[3][48] = {"", "", ""}; /* first input, second input, output */
    for (int k = 0; k < 2 && k < n->n_inputs; k++)
        tg__name_of(tape, n->inputs[k], names[k], sizeof names[k]);
    tg__name_of(tape, n, names[2], sizeof names[2]);

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
        tg__textf(word, sizeof word, "%.*s", (int)(p - start), start);
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
            o += (size_t)tg__textf(buf + o, len - o, "%s", word);
        } else {
            const char *nm = names[which];
            bool alone = !grad && start > phrase && start[-1] == '(' && *p == ')';
            bool wrap = !alone && strpbrk(nm, " ^+-*/()") != NULL;
            o += (size_t)tg__textf(buf + o, len - o, "%s%s%s%s", grad ? "dl/d" : "",
                                   wrap ? "(" : "", nm, wrap ? ")" : "");
        }
        if (o >= len)
            o = len - 1;
    }
}

/* ---- Numbers ---- */

void tg__fmt_num(char *buf, size_t len, double v, bool integer) {
    double a = fabs(v);
    if (integer)
        tg__textf(buf, len, "%.0f", v);
    else if (v == 0)
        tg__textf(buf, len, "0");
    else if (a >= 1e-3 && a < 1e4)
        tg__textf(buf, len, "%.4f", v);
    else
        tg__textf(buf, len, "%.3e", v);
}

tg__vals tg__vals_of(const tg_tensor *t) {
    tg__vals x = {.rank = t->rank, .numel = t->numel, .integer = t->dtype == TG_I32};
    memcpy(x.shape, t->shape, sizeof x.shape);
    x.v = malloc((size_t)(t->numel ? t->numel : 1) * sizeof *x.v);
    if (x.v)
        for (int64_t i = 0; i < t->numel; i++)
            x.v[i] = tg_tensor_get(t, i);
    return x;
}

/* Width of the widest entry, so that the entries of one tensor line up. */
static int vals_width(const tg__vals *x, int64_t from, int64_t to) {
    int w = 1;
    for (int64_t i = from; i < to; i++) {
        char b[32];
        tg__fmt_num(b, sizeof b, x->v[i], x->integer);
        /* A column for the sign even when all are positive, so that tensors shown one under the
         * other (upstream, local, result) line up. */
        int l = (int)strlen(b) + (!x->integer && b[0] != '-');
        w = l > w ? l : w;
    }
    return w;
}

static void print_row(FILE *f, const tg__vals *x, int64_t from, int64_t to, int w) {
    fprintf(f, "[");
    for (int64_t i = from; i < to; i++) {
        char b[32];
        tg__fmt_num(b, sizeof b, x->v[i], x->integer);
        fprintf(f, "%s%*s", i > from ? "  " : " ", w, b);
    }
    fprintf(f, " ]");
}

/* Prints the values, `suffix` and a newline. A small matrix gets one line per row, each
 * continuation line starting at column `col` (where the first '[' was printed); a column vector
 * [n,1] prints on one line marked ^T; a large tensor prints as a few entries and its norm. */
static void print_vals(FILE *f, const tg__vals *x, int col, const char *suffix) {
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
        tg__fmt_num(nb, sizeof nb, sqrt(ss), false);
        int w = vals_width(x, 0, TG_SUMMARY_HEAD);
        int wl = vals_width(x, x->numel - 1, x->numel);
        fprintf(f, "[");
        for (int64_t i = 0; i < TG_SUMMARY_HEAD; i++) {
            tg__fmt_num(b, sizeof b, x->v[i], x->integer);
            fprintf(f, "%s%*s", i ? "  " : " ", w, b);
        }
        tg__fmt_num(b, sizeof b, x->v[x->numel - 1], x->integer);
        fprintf(f, "  ... %*s ]  (%lld entries, norm %s)%s\n", wl, b, (long long)x->numel, nb,
                suffix);
        return;
    }
    if (x->rank == 0 && x->numel == 1) {
        tg__fmt_num(b, sizeof b, x->v[0], x->integer);
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
void tg__print_line(FILE *f, const char *prefix, const tg__vals *x, const char *suffix) {
    fputs(prefix, f);
    print_vals(f, x, (int)strlen(prefix), suffix);
}

/* ---- The description of one step ---- */

static tg__row *add_row(tg__step *s, const char *label) {
    if (s->n_rows == s->cap_rows) {
        int cap = s->cap_rows ? 2 * s->cap_rows : 16;
        tg__row *r = realloc(s->rows, sizeof *r * (size_t)cap);
        if (!r)
            return NULL;
        s->rows = r;
        s->cap_rows = cap;
    }
    tg__row *r = &s->rows[s->n_rows++];
    memset(r, 0, sizeof *r);
    tg__textf(r->label, sizeof r->label, "%s", label);
    return r;
}

/* A row "label  lhs rel values note"; takes the values (even on failure). */
static tg_status add_vals(tg__step *s, const char *label, const char *lhs, const char *rel,
                          bool pad, tg__vals v, const char *note) {
    tg__row *r = v.v ? add_row(s, label) : NULL;
    if (!r) {
        free(v.v);
        return TG_ERR_NOMEM;
    }
    tg__textf(r->lhs, sizeof r->lhs, "%s", lhs);
    tg__textf(r->rel, sizeof r->rel, "%s", rel);
    tg__textf(r->note, sizeof r->note, "%s", note ? note : "");
    r->pad = pad;
    r->vals = v;
    r->has_vals = true;
    return TG_OK;
}

static tg_status add_text(tg__step *s, const char *label, const char *text) {
    tg__row *r = add_row(s, label);
    if (!r)
        return TG_ERR_NOMEM;
    tg__textf(r->text, sizeof r->text, "%s", text);
    return TG_OK;
}

/* The name of t as it stands in a formula ("h", "(W_h x)"). */
static const char *fname(const tg_tape *tape, const tg_tensor *t, char *buf, size_t len) {
    char nb[48];
    tg__name_of(tape, t, nb, sizeof nb);
    if (strpbrk(nb, " ^+-*/()"))
        tg__textf(buf, len, "(%s)", nb);
    else
        tg__textf(buf, len, "%s", nb);
    return buf;
}

static void step_header(tg__step *s, tg__step_kind kind, const tg_tape *tape,
                        const tg_tensor *node) {
    tg__step_clear(s);
    s->kind = kind;
    s->index = node->tape_index;
    s->n_inputs = node->n_inputs;
    tg__name_of(tape, node, s->name, sizeof s->name);
    tg__node_expr(tape, node, s->expr, sizeof s->expr);
    tg__shape_str(node, s->shape, sizeof s->shape);
    /* The left-hand sides dl/d(name) share one width, so the values line up. */
    char fb[56];
    s->lhs_width = (int)strlen(fname(tape, node, fb, sizeof fb)) + 4;
    for (int k = 0; k < node->n_inputs; k++) {
        int l = (int)strlen(fname(tape, node->inputs[k], fb, sizeof fb)) + 4;
        s->lhs_width = l > s->lhs_width ? l : s->lhs_width;
    }
}

/* What forward saved: the op's phrase with names, then each saved view's values. */
static tg_status step_saved(tg__step *s, const tg_tape *tape, const tg_tensor *node) {
    char text[320];
    tg__with_names(tape, node, tg_tensor_op_saves(node), text, sizeof text);
    tg_status st = add_text(s, "saved", text);
    tg__saved_view views[4];
    const int nv = node->op && node->op->saved_views ? node->op->saved_views(node, views, 4) : 0;
    for (int i = 0; i < nv && st == TG_OK; i++) {
        char note[160];
        tg__textf(note, sizeof note, "   (%s)", views[i].what);
        st = add_vals(s, "", views[i].name, "=", false, tg__vals_of(&views[i].tensor), note);
    }
    return st;
}

tg_status tg__step_forward(tg__step *s, const tg_tape *tape, const tg_tensor *node) {
    step_header(s, TG__STEP_FORWARD, tape, node);
    char fb[56];
    tg_status st =
        add_vals(s, "value", fname(tape, node, fb, sizeof fb), "=", true, tg__vals_of(node), "");
    return st == TG_OK ? step_saved(s, tape, node) : st;
}

/* The nodes that run in this pass and use x, in reverse order (the order their contributions
 * arrive); list gets the first `cap` of them. */
static int64_t consumers(const tg_tape *tape, const tg_tensor *output, const tg_tensor *x,
                         int64_t *list, int64_t cap) {
    int64_t count = 0;
    for (int64_t m = output->tape_index; m >= 0; m--) {
        const tg_tensor *t = tg_tape_node(tape, m);
        if (!tg__node_runs(t))
            continue;
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
        n += (size_t)tg__textf(buf + n, len - n, "%s#%lld",
                               c == 0 ? "" : (c == count - 1 ? " and " : ", "), (long long)list[c]);
    if (count > cap && n < len)
        tg__textf(buf + n, len - n, " ...");
}

/* The local derivative, from the op's own backward (no second copy of any derivative): for an
 * elementwise op, backward with an upstream of ones gives the diagonal dy_i/dx_i; for an op with a
 * one-element output (a loss, a sum), it gives dy/dx of the first input whole. */
static tg_status step_local(tg__step *s, const tg_tape *tape, const tg_tensor *node) {
    if (!node->op || node->n_inputs < 1)
        return TG_OK;
    const bool elementwise = node->op->flags & TG__OP_ELEMENTWISE;
    const tg_tensor *x = node->inputs[0];
    if (!(elementwise || node->numel == 1) || (x->dtype != TG_F32 && x->dtype != TG_F64))
        return TG_OK;
    tg_tensor *ones = tg_tensor_ones(node->dtype, node->rank, node->shape);
    tg_tensor *dx = tg_tensor_new(x->dtype, x->rank, x->shape);
    enum { MAX_IN = 16 };
    tg_tensor *din[MAX_IN] = {0};
    tg_status st = TG_ERR_NOMEM;
    if (ones && dx && node->n_inputs <= MAX_IN) {
        din[0] = dx;
        node->op->backward(node, ones, din);
        char yf[56], xf[56], lhs[96], phrase[128];
        fname(tape, node, yf, sizeof yf);
        fname(tape, x, xf, sizeof xf);
        if (elementwise && node->op->local) {
            tg__with_names(tape, node, node->op->local, phrase, sizeof phrase);
            tg__textf(lhs, sizeof lhs, "d%s/d%s = %s", yf, xf, phrase);
        } else {
            tg__textf(lhs, sizeof lhs, "d%s/d%s", yf, xf);
        }
        tg__vals v = tg__vals_of(dx);
        /* Whole numbers (relu's mask, sum's ones) print as such. */
        bool whole = v.v != NULL;
        for (int64_t i = 0; whole && i < v.numel; i++)
            whole = v.v[i] == floor(v.v[i]) && fabs(v.v[i]) < 1e6;
        v.integer = whole;
        st = add_vals(s, "local", lhs, "=", false, v, "");
    } else if (node->n_inputs > MAX_IN) {
        st = TG_OK; /* nothing to show for such an op */
    }
    tg_tensor_free(ones);
    tg_tensor_free(dx);
    return st;
}

tg_status tg__step_backward_begin(tg__step *s, const tg_tape *tape, const tg_tensor *node,
                                  const tg_tensor *output, tg_tensor *const *grads) {
    step_header(s, TG__STEP_BACKWARD, tape, node);
    char fb[56], lhs[96], note[160] = "";
    /* Upstream: dl/d(this node's output), complete now that every node using it has run. */
    int64_t list[8], c = consumers(tape, output, node, list, 8);
    if (c > 1) {
        char l2[96];
        format_list(l2, sizeof l2, list, c, 8);
        tg__textf(note, sizeof note, "   (the sum from %s)", l2);
    } else if (node == output) {
        tg__textf(note, sizeof note, "   (the seed)");
    }
    tg__textf(lhs, sizeof lhs, "dl/d%s", fname(tape, node, fb, sizeof fb));
    tg_status st = add_vals(s, "upstream", lhs, "=", true, tg__vals_of(node->grad), note);
    if (st == TG_OK)
        st = step_saved(s, tape, node);
    if (st == TG_OK) {
        char text[320];
        tg__with_names(tape, node, node->op->rule, text, sizeof text);
        st = add_text(s, "rule", text);
    }
    if (st == TG_OK)
        st = step_local(s, tape, node);
    /* Snapshot the destinations, to report what this node's backward adds to each. */
    s->before = calloc((size_t)(node->n_inputs ? node->n_inputs : 1), sizeof *s->before);
    if (!s->before)
        return TG_ERR_NOMEM;
    s->n_before = node->n_inputs;
    for (int k = 0; k < node->n_inputs && st == TG_OK; k++)
        if (grads[k]) {
            s->before[k] = tg__vals_of(grads[k]).v;
            if (!s->before[k])
                st = TG_ERR_NOMEM;
        }
    return st;
}

tg_status tg__step_backward_end(tg__step *s, const tg_tape *tape, const tg_tensor *node,
                                const tg_tensor *output, tg_tensor *const *grads) {
    tg_status st = TG_OK;
    for (int k = 0; k < node->n_inputs && st == TG_OK; k++) {
        const tg_tensor *x = node->inputs[k];
        char xb[48], arrow[64], text[160];
        tg__textf(arrow, sizeof arrow, "-> %s", tg__name_of(tape, x, xb, sizeof xb));
        int dup = -1;
        for (int j = 0; j < k && dup < 0; j++)
            if (node->inputs[j] == x)
                dup = j;
        if (dup >= 0) {
            tg__textf(text, sizeof text,
                      "(input %d is input %d again: both parts are in the line above)", k + 1,
                      dup + 1);
            st = add_text(s, arrow, text);
            continue;
        }
        if (!grads[k]) {
            tg__textf(text, sizeof text, "no gradient: %s",
                      x->dtype == TG_I32 ? "class indices"
                      : x->on_tape       ? "no parameter upstream of it"
                                         : "data, not a parameter");
            st = add_text(s, arrow, text);
            continue;
        }
        tg__vals after = tg__vals_of(grads[k]);
        const double *before = k < s->n_before ? s->before[k] : NULL;
        if (!after.v || !before) {
            free(after.v);
            return TG_ERR_NOMEM;
        }
        bool had = false;
        for (int64_t i = 0; i < x->numel; i++)
            had |= before[i] != 0;
        int64_t list[8], which = 1;
        const int64_t count = consumers(tape, output, x, list, 8);
        for (int64_t c = 0; c < count && c < 8; c++)
            if (list[c] == node->tape_index)
                which = c + 1;
        const char *bcast = (node->op->flags & TG__OP_BROADCAST) && x->numel < node->numel
                                ? "   (summed over the axes it was broadcast along)"
                                : "";
        char fb[56], lhs[96];
        tg__textf(lhs, sizeof lhs, "dl/d%s", fname(tape, x, fb, sizeof fb));
        if (count <= 1 && !had) {
            st = add_vals(s, arrow, lhs, "=", true, after, bcast);
            continue;
        }
        /* The gradient has x's shape; the loop runs over what tg__vals_of filled. */
        tg__vals part = after;
        part.v = malloc(sizeof *part.v * (size_t)(after.numel ? after.numel : 1));
        if (!part.v) {
            free(after.v);
            return TG_ERR_NOMEM;
        }
        for (int64_t i = 0; i < after.numel; i++)
            part.v[i] = after.v[i] - before[i];
        char note[160];
        if (count > 1)
            tg__textf(note, sizeof note, "   (contribution %lld of %lld)%s", (long long)which,
                      (long long)count, bcast);
        else
            tg__textf(note, sizeof note, "%s", bcast);
        st = add_vals(s, arrow, lhs, "+=", true, part, note);
        if (st == TG_OK)
            st = add_vals(s, "", lhs, " =", true, after,
                          which < count ? "   (sum so far)"
                          : count > 1   ? "   (all contributions summed)"
                                        : "   (added to what it held before this pass)");
        else
            free(after.v);
    }
    return st;
}

void tg__step_print(const tg__step *s, FILE *f) {
    fprintf(f, "\n#%lld  %s = %s   %s\n", (long long)s->index, s->name, s->expr, s->shape);
    for (int i = 0; i < s->n_rows; i++) {
        const tg__row *r = &s->rows[i];
        char pre[512];
        if (!r->has_vals) {
            fprintf(f, "    %-11s %s\n", r->label, r->text);
            continue;
        }
        tg__textf(pre, sizeof pre, "    %-11s %-*s %s ", r->label, r->pad ? s->lhs_width : 0,
                  r->lhs, r->rel);
        tg__print_line(f, pre, &r->vals, r->note);
    }
}

void tg__step_clear(tg__step *s) {
    for (int i = 0; i < s->n_rows; i++)
        free(s->rows[i].vals.v);
    free(s->rows);
    for (int k = 0; k < s->n_before; k++)
        free(s->before[k]);
    free(s->before);
    memset(s, 0, sizeof *s);
}

/* ---- The step as JSON (for the step-through page, html.c) ---- */

void tg__json_string(FILE *f, const char *s) {
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        switch (*p) {
        case '"': fputs("\\\"", f); break;
        case '\\': fputs("\\\\", f); break;
        case '\n': fputs("\\n", f); break;
        case '\t': fputs("\\t", f); break;
        case '<':
        case '>':
        case '&': fprintf(f, "\\u%04x", *p); break;
        default:
            if (*p < 0x20)
                fprintf(f, "\\u%04x", *p);
            else
                fputc(*p, f);
        }
    }
    fputc('"', f);
}

/* A number as JSON: the shortest exact form; null for NaN and infinities (JSON has none). */
static void json_number(FILE *f, double v) {
    if (isfinite(v))
        fprintf(f, "%.17g", v);
    else
        fputs("null", f);
}

static void json_vals(FILE *f, const tg__vals *x, int64_t max_vals) {
    char b[32];
    fprintf(f, "{\"rank\":%d,\"shape\":[", x->rank);
    for (int d = 0; d < x->rank; d++)
        fprintf(f, "%s%lld", d ? "," : "", (long long)x->shape[d]);
    fprintf(f, "],\"numel\":%lld,\"integer\":%s", (long long)x->numel,
            x->integer ? "true" : "false");
    if (x->numel > TG_TRACE_FULL) { /* the summary the text shows: a few entries and the norm */
        double ss = 0;
        for (int64_t i = 0; i < x->numel; i++)
            ss += x->v[i] * x->v[i];
        fputs(",\"head\":[", f);
        for (int64_t i = 0; i < TG_SUMMARY_HEAD; i++) {
            tg__fmt_num(b, sizeof b, x->v[i], x->integer);
            fputs(i ? "," : "", f);
            tg__json_string(f, b);
        }
        fputs("],\"last\":", f);
        tg__fmt_num(b, sizeof b, x->v[x->numel - 1], x->integer);
        tg__json_string(f, b);
        fputs(",\"norm\":", f);
        tg__fmt_num(b, sizeof b, sqrt(ss), false);
        tg__json_string(f, b);
    }
    if (x->numel <= max_vals) {
        fputs(",\"v\":[", f);
        for (int64_t i = 0; i < x->numel; i++) {
            fputs(i ? "," : "", f);
            json_number(f, x->v[i]);
        }
        fputs("],\"s\":[", f);
        for (int64_t i = 0; i < x->numel; i++) {
            tg__fmt_num(b, sizeof b, x->v[i], x->integer);
            fputs(i ? "," : "", f);
            tg__json_string(f, b);
        }
        fputs("]", f);
    }
    fputs("}", f);
}

tg_status tg__step_write_json(const tg__step *s, FILE *f, int64_t max_vals) {
    /* The text as the trace prints it, without the blank line that separates steps there. */
    char *text = NULL;
    size_t text_len = 0;
    FILE *m = open_memstream(&text, &text_len);
    if (!m)
        return TG_ERR_NOMEM;
    tg__step_print(s, m);
    if (fclose(m) != 0 || !text) {
        free(text);
        return TG_ERR_NOMEM;
    }
    fprintf(f, "{\"kind\":\"%s\",\"index\":%lld,\"name\":",
            s->kind == TG__STEP_FORWARD ? "forward" : "backward", (long long)s->index);
    tg__json_string(f, s->name);
    fputs(",\"expr\":", f);
    tg__json_string(f, s->expr);
    fputs(",\"shape\":", f);
    tg__json_string(f, s->shape);
    fprintf(f, ",\"lhs_width\":%d,\"rows\":[", s->lhs_width);
    for (int i = 0; i < s->n_rows; i++) {
        const tg__row *r = &s->rows[i];
        fputs(i ? ",\n{\"label\":" : "\n{\"label\":", f);
        tg__json_string(f, r->label);
        fputs(",\"text\":", f);
        tg__json_string(f, r->text);
        fputs(",\"lhs\":", f);
        tg__json_string(f, r->lhs);
        fputs(",\"rel\":", f);
        tg__json_string(f, r->rel);
        fprintf(f, ",\"pad\":%s,\"note\":", r->pad ? "true" : "false");
        tg__json_string(f, r->note);
        fputs(",\"vals\":", f);
        if (r->has_vals)
            json_vals(f, &r->vals, max_vals);
        else
            fputs("null", f);
        fputs("}", f);
    }
    fputs("],\n\"text\":", f);
    tg__json_string(f, text[0] == '\n' ? text + 1 : text);
    fputs("}", f);
    free(text);
    return TG_OK;
}
