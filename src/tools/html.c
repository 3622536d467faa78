/* html.c -- the step-through page: one self-contained HTML file (the graph as inline SVG from
 * Graphviz, the steps as JSON, the script and the styles inline; nothing fetched) in which a
 * student steps through the forward pass and then the reverse pass, node by node.
 *
 * Every step is explain.c's tg__step, the same description the text trace prints: the forward
 * steps are made from the recorded nodes, the backward steps by an observer of the one reverse
 * pass that tg_tape_write_html runs (tg_backward itself), exactly as trace.c makes them. The page's
 * script lays the rows out as tg__step_print does, from the numbers tg__fmt_num formatted. */
#include "explain.h"

#include "tg_html_assets.h" /* tg__html_css, tg__html_js: src/tools/html_page.{css,js} */

#include <stdlib.h>
#include <unistd.h>

/* Tensors with more entries than this carry only their summary (a few entries and the norm). */
#define TG_HTML_MAX_VALS 4096

/* What the observer collects during the pass: the backward steps in the order they ran. */
typedef struct html_state {
    tg__step *steps;
    int n_steps, cap_steps;
    tg__step cur; /* the step under way, between BEFORE_ and AFTER_BACKWARD */
    tg_status status;
} html_state;

static tg_status html_observer(const tg_event *ev, void *user) {
    html_state *hs = user;
    if (hs->status != TG_OK)
        return TG_OK; /* out of memory earlier: let the pass finish, report it at the end */
    if (ev->kind == TG_EVENT_BEFORE_BACKWARD) {
        hs->status = tg__step_backward_begin(&hs->cur, ev->tape, ev->tensor, ev->output, ev->grads);
    } else if (ev->kind == TG_EVENT_AFTER_BACKWARD) {
        hs->status = tg__step_backward_end(&hs->cur, ev->tape, ev->tensor, ev->output, ev->grads);
        if (hs->status == TG_OK && hs->n_steps == hs->cap_steps) {
            int cap = hs->cap_steps ? 2 * hs->cap_steps : 16;
            tg__step *s = realloc(hs->steps, sizeof *s * (size_t)cap);
            if (s) {
                hs->steps = s;
                hs->cap_steps = cap;
            } else {
                hs->status = TG_ERR_NOMEM;
            }
        }
        if (hs->status == TG_OK) {
            hs->steps[hs->n_steps++] = hs->cur; /* moved: the array owns it now */
            memset(&hs->cur, 0, sizeof hs->cur);
        }
    }
    return TG_OK; /* the page never stops a pass */
}

static void html_state_clear(html_state *hs) {
    for (int i = 0; i < hs->n_steps; i++)
        tg__step_clear(&hs->steps[i]);
    free(hs->steps);
    tg__step_clear(&hs->cur);
}

/* Writes s with HTML escapes. */
static void html_escape(FILE *f, const char *s) {
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

/* The id of t's box in the graph, as tg_tape_write_dot names it: "n<index>" or "leaf<k>". */
static void svg_id(const tg_tensor *t, const tg_tensor **leaves, int64_t n_leaves, char *buf,
                   size_t len) {
    if (t->on_tape) {
        tg__textf(buf, len, "n%lld", (long long)t->tape_index);
        return;
    }
    int64_t k = 0;
    while (k < n_leaves && leaves[k] != t)
        k++;
    tg__textf(buf, len, "leaf%lld", (long long)k);
}

/* The whole file at `path` (NUL-terminated, caller frees), or NULL. */
static char *read_all(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *buf = NULL;
    size_t len = 0, cap = 0, got;
    char chunk[8192];
    while ((got = fread(chunk, 1, sizeof chunk, f)) > 0) {
        if (len + got + 1 > cap) {
            size_t c = cap ? 2 * cap : 65536;
            while (c < len + got + 1)
                c *= 2;
            char *b = realloc(buf, c);
            if (!b) {
                free(buf);
                fclose(f);
                return NULL;
            }
            buf = b;
            cap = c;
        }
        memcpy(buf + len, chunk, got);
        len += got;
    }
    fclose(f);
    if (buf)
        buf[len] = '\0';
    return buf;
}

/* The graph as SVG, drawn by Graphviz (names, shapes and expressions only) (caller frees), or NULL with the
 * reason in `why` (Graphviz missing, no temporary directory, no memory). */
static char *graph_svg(const tg_tape *tape, char *why, size_t why_len) {
    const char *tmpdir = getenv("TMPDIR");
    char dir[512], path[600];
    tg__textf(dir, sizeof dir, "%s/tapegrad-html-XXXXXX", tmpdir && tmpdir[0] ? tmpdir : "/tmp");
    if (!mkdtemp(dir)) {
        tg__textf(why, why_len, "cannot create a temporary directory in %s",
                  tmpdir && tmpdir[0] ? tmpdir : "/tmp");
        return NULL;
    }
    tg__textf(path, sizeof path, "%s/graph.svg", dir);
    char *svg = NULL;
    if (tg__tape_render_plain(tape, path) == TG_OK) {
        svg = read_all(path);
        if (!svg)
            tg__textf(why, why_len, "cannot read %s back", path);
    } else {
        tg__textf(why, why_len, "%s", tg_last_errmsg());
    }
    remove(path);
    rmdir(dir);
    return svg;
}

/* Writes Graphviz's SVG as an element of the page: from "<svg" on (no XML prolog, no DOCTYPE),
 * without the xmlns attributes (the HTML parser puts <svg> in its namespace by itself), so that
 * the page names no external address at all. */
static void write_svg(FILE *f, const char *svg) {
    const char *p = strstr(svg, "<svg");
    if (!p) {
        fputs("<p class=\"nograph\">(Graphviz wrote no SVG)</p>", f);
        return;
    }
    while (*p) {
        if (p[0] == ' ' && strncmp(p + 1, "xmlns", 5) == 0) {
            const char *q = strchr(p + 1, '"');
            q = q ? strchr(q + 1, '"') : NULL;
            if (q) {
                p = q + 1;
                continue;
            }
        }
        fputc(*p++, f);
    }
}

/* The data the script reads: the steps in the order the page shows them, each with its box in
 * the graph and its inputs' boxes. */
static tg_status write_data(FILE *f, const tg_tape *tape, const tg_tensor *loss,
                            const html_state *hs) {
    int64_t n_leaves = 0;
    const tg_tensor **leaves = tg__collect_leaves(tape, &n_leaves);
    char nb[48], id[32];
    fputs("{\"loss\":", f);
    tg__json_string(f, tg__name_of(tape, loss, nb, sizeof nb));
    fprintf(f, ",\"loss_index\":%lld,\"version\":", (long long)loss->tape_index);
    tg__json_string(f, tg_version());
    fputs(",\n\"steps\":[", f);
    tg_status st = TG_OK;
    const int64_t n = tg_tape_size(tape);
    tg__step fwd = {0};
    for (int64_t i = 0; i < n + hs->n_steps && st == TG_OK; i++) {
        const tg__step *s;
        if (i < n) {
            st = tg__step_forward(&fwd, tape, tg_tape_node(tape, i));
            s = &fwd;
        } else {
            s = &hs->steps[i - n];
        }
        if (st != TG_OK)
            break;
        const tg_tensor *node = tg_tape_node(tape, s->index);
        svg_id(node, leaves, n_leaves, id, sizeof id);
        fprintf(f, "%s\n{\"svg\":\"%s\",\"inputs\":[", i ? "," : "", id);
        for (int k = 0; k < node->n_inputs; k++) {
            svg_id(node->inputs[k], leaves, n_leaves, id, sizeof id);
            fprintf(f, "%s\"%s\"", k ? "," : "", id);
        }
        fputs("],\"step\":", f);
        st = tg__step_write_json(s, f, TG_HTML_MAX_VALS);
        fputs("}", f);
    }
    tg__step_clear(&fwd);
    fputs("]}", f);
    free(leaves);
    return st;
}

static tg_status write_page(FILE *f, const tg_tape *tape, const tg_tensor *loss,
                            const html_state *hs) {
    char nb[48], why[600] = "";
    tg__name_of(tape, loss, nb, sizeof nb);
    char *svg = graph_svg(tape, why, sizeof why);
    fputs("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n", f);
    /* Nothing may be fetched: the policy forbids every source but the page's own inline parts. */
    fputs("<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
          "style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:\">\n",
          f);
    fputs("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n", f);
    fputs("<title>tapegrad: step through the backward pass from ", f);
    html_escape(f, nb);
    fputs("</title>\n<style>\n", f);
    fputs(tg__html_css, f);
    fputs("</style>\n</head>\n<body>\n<div id=\"app\">\n<section id=\"graph\">\n", f);
    if (svg) {
        write_svg(f, svg);
    } else {
        fputs("<p class=\"nograph\">No graph: ", f);
        html_escape(f, why);
        fputs("</p>", f);
    }
    free(svg);
    fputs("\n</section>\n</div>\n<script type=\"application/json\" id=\"tg-data\">\n", f);
    tg_status st = write_data(f, tape, loss, hs);
    fputs("\n</script>\n<script>\n", f);
    fputs(tg__html_js, f);
    fputs("</script>\n</body>\n</html>\n", f);
    return st;
}

tg_status tg_tape_write_html(tg_tape *tape, tg_tensor *loss, const char *path) {
    if (!tape || !loss || !path)
        return tg__set_last_error(TG_ERR_NULL, "tg_tape_write_html: %s is NULL",
                                  !tape   ? "tape"
                                  : !loss ? "loss"
                                          : "path");
    if (tg_tape_status(tape) != TG_OK)
        return tg__set_last_error(tg_tape_status(tape),
                                  "tg_tape_write_html: the tape is in error: %s",
                                  tg_tape_errmsg(tape));
    /* Opened first: a path that cannot be written fails before any gradient changes. */
    FILE *f = fopen(path, "w");
    if (!f)
        return tg__set_last_error(TG_ERR_IO, "tg_tape_write_html: cannot open %s for writing",
                                  path);
    html_state hs = {.status = TG_OK};
    tg_status st = tg_tape_observe(tape, html_observer, &hs);
    if (st == TG_OK) {
        st = tg_backward(tape, loss);
        tg_tape_unobserve(tape, html_observer, &hs);
        if (st != TG_OK)
            tg__set_last_error(st, "tg_tape_write_html: %s", tg_tape_errmsg(tape));
    } else { /* the message is copied first: it would be overwritten while being read */
        char why[512];
        tg__textf(why, sizeof why, "%s", tg_last_errmsg());
        st = tg__set_last_error(st, "tg_tape_write_html: %s", why);
    }
    if (st == TG_OK && hs.status != TG_OK)
        st = tg__set_last_error(hs.status, "tg_tape_write_html: out of memory for the steps "
                                           "(the gradients are complete)");
    if (st == TG_OK && write_page(f, tape, loss, &hs) != TG_OK)
        st = tg__set_last_error(TG_ERR_NOMEM, "tg_tape_write_html: out of memory writing %s", path);
    if (st == TG_OK && ferror(f))
        st = tg__set_last_error(TG_ERR_IO, "tg_tape_write_html: writing %s failed", path);
    if (fclose(f) != 0 && st == TG_OK)
        st = tg__set_last_error(TG_ERR_IO, "tg_tape_write_html: writing %s failed", path);
    if (st != TG_OK)
        remove(path); /* no half-written page */
    html_state_clear(&hs);
    return st;
}
