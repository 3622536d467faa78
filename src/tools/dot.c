/* dot.c -- the recorded graph as Graphviz DOT, and a picture of it through Graphviz's `dot`. */
#include "explain.h"

#include <stdlib.h>
#include <unistd.h>

/* In the picture, values are shown up to this many elements. */
#define TG_DOT_FULL 8

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
    tg__vals x = tg__vals_of(t);
    double *v = x.v;
    if (!v)
        return;
    int w = 1; /* the widest entry, so the entries line up */
    for (int64_t i = 0; i < x.numel; i++) {
        char b[32];
        tg__fmt_num(b, sizeof b, v[i], x.integer);
        int l = (int)strlen(b) + (!x.integer && b[0] != '-');
        w = l > w ? l : w;
    }
    const bool matrix = t->rank == 2 && t->shape[0] > 1 && t->shape[1] > 1;
    const int64_t cols = matrix ? t->shape[1] : t->numel;
    for (int64_t i = 0; i < t->numel || i == 0; i += cols) {
        fprintf(f, "<TR><TD ALIGN=\"LEFT\"><FONT FACE=\"monospace\" COLOR=\"%s\">%-5s ", color,
                i ? "" : label);
        if (t->rank == 0) { /* a scalar, e.g. the loss: no brackets */
            char b[32];
            tg__fmt_num(b, sizeof b, v[0], x.integer);
            fputs(b, f);
        } else {
            fputc('[', f);
            for (int64_t c = i; c < i + cols; c++) {
                char b[32];
                tg__fmt_num(b, sizeof b, v[c], x.integer);
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
                     bool is_output, bool values) {
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
    dot_escape(f, tg__name_of(tape, t, nb, sizeof nb));
    fprintf(f, "</B> %s</TD></TR>", tg__shape_str(t, sb, sizeof sb));
    fprintf(f, "<TR><TD><FONT POINT-SIZE=\"11\">");
    if (t->on_tape)
        dot_escape(f, tg__node_expr(tape, t, eb, sizeof eb));
    else
        fputs(t->requires_grad ? "parameter" : "data", f);
    fprintf(f, "</FONT></TD></TR>");
    if (!values) { /* the step-through page shows the numbers beside the graph */
        fprintf(f, "</TABLE>>];\n");
        return;
    }
    dot_values(f, "value", t, "black");
    /* What the node keeps for backward, where the op shows it (the probabilities of the fused
     * cross-entropy: the prediction y^ of the notes). */
    tg__saved_view views[4];
    const int nv = t->op && t->op->saved_views ? t->op->saved_views(t, views, 4) : 0;
    for (int i = 0; i < nv; i++) {
        fprintf(f, "<TR><TD ALIGN=\"LEFT\"><FONT COLOR=\"#1f5fa8\">saved ");
        dot_escape(f, views[i].name);
        fprintf(f, ": ");
        dot_escape(f, views[i].what);
        fprintf(f, "</FONT></TD></TR>");
        dot_values(f, views[i].name, &views[i].tensor, "#1f5fa8");
    }
    if (t->grad)
        dot_values(f, "grad", t->grad, "#b30000");
    fprintf(f, "</TABLE>>];\n");
}

/* The graph as DOT; with `values`, each box shows its values, what it saved and its gradient. */
static tg_status write_dot(const tg_tape *tape, FILE *out, bool values) {
    const int64_t n = tg_tape_size(tape);
    int64_t n_leaves = 0;
    const tg_tensor **leaves = tg__collect_leaves(tape, &n_leaves);
    fprintf(out, "digraph tape {\n");
    fprintf(out,
            "  graph [rankdir=TB, ordering=in, nodesep=0.25, ranksep=0.35, fontsize=12,\n"
            "         labelloc=b, label=\"yellow: parameters   grey, dashed: data   white: "
            "computed on the tape   blue: output%s\"];\n",
            values ? "   red: gradient dl/d(this)" : "");
    fprintf(out, "  node [fontname=\"Helvetica\", fontsize=12, margin=\"0.08,0.04\"];\n");
    fprintf(out, "  edge [arrowsize=0.7];\n");
    for (int64_t j = 0; j < n_leaves; j++) {
        char id[32];
        tg__textf(id, sizeof id, "leaf%lld", (long long)j);
        dot_node(out, tape, leaves[j], id, false, values);
    }
    for (int64_t i = 0; i < n; i++) {
        const tg_tensor *t = tg_tape_node(tape, i);
        bool used = false;
        for (int64_t m = i + 1; m < n && !used; m++)
            for (int k = 0; k < tg_tape_node(tape, m)->n_inputs; k++)
                used |= tg_tape_node(tape, m)->inputs[k] == t;
        char id[32];
        tg__textf(id, sizeof id, "n%lld", (long long)i);
        dot_node(out, tape, t, id, !used, values);
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

tg_status tg_tape_write_dot(const tg_tape *tape, FILE *out) {
    if (!tape || !out)
        return tg__set_last_error(TG_ERR_NULL, "tg_tape_write_dot: %s is NULL",
                                  !tape ? "tape" : "out");
    return write_dot(tape, out, true);
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

static tg_status render(const tg_tape *tape, const char *path, bool values) {
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
    tg__textf(tmp, sizeof tmp, "%s/tapegrad-XXXXXX", tmpdir && tmpdir[0] ? tmpdir : "/tmp");
    int fd = mkstemp(tmp);
    FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (!f) {
        if (fd >= 0)
            close(fd);
        return tg__set_last_error(TG_ERR_IO, "tg_tape_render: cannot create a temporary file %s",
                                  tmp);
    }
    tg_status st = write_dot(tape, f, values);
    if (fclose(f) != 0 && st == TG_OK)
        st = tg__set_last_error(TG_ERR_IO, "tg_tape_render: writing %s failed", tmp);
    if (st == TG_OK) {
        char cmd[2048];
        tg__textf(cmd, sizeof cmd, "dot -T%s -o ", fmt);
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

tg_status tg_tape_render(const tg_tape *tape, const char *path) {
    if (!tape || !path)
        return tg__set_last_error(TG_ERR_NULL, "tg_tape_render: %s is NULL",
                                  !tape ? "tape" : "path");
    return render(tape, path, true);
}

tg_status tg__tape_render_plain(const tg_tape *tape, const char *path) {
    return render(tape, path, false);
}
