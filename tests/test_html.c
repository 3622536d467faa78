/* The step-through page (tg_tape_write_html): its pass is tg_backward's (gradients bitwise, the
 * trace printed once and the same), the file is self-contained (no address, the graph inline, the
 * steps' text is the trace's), names are escaped, large tensors are summarised, and every error
 * path. The page in a real browser is tested by tests/browser (headless chromium). */
#define _POSIX_C_SOURCE 200809L /* setenv, mkdtemp */

#include "tools/explain.h"

#include <criterion/criterion.h>
#include <stdlib.h>
#include <unistd.h>

/* ---- Helpers ---- */

static char *slurp(FILE *f) {
    long len = ftell(f);
    cr_assert(len >= 0);
    char *s = malloc((size_t)len + 1);
    cr_assert_not_null(s);
    rewind(f);
    size_t got = fread(s, 1, (size_t)len, f);
    s[got] = '\0';
    return s;
}

static char *read_path(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    char *s = slurp(f);
    fclose(f);
    return s;
}

static size_t count(const char *s, const char *what) {
    size_t n = 0;
    for (const char *p = strstr(s, what); p; p = strstr(p + 1, what))
        n++;
    return n;
}

static bool have_dot(void) { return system("command -v dot >/dev/null 2>&1") == 0; }

/* A fresh directory for the pages of one test, and a path in it. */
static char page_dir[64];
static void make_dir(void) {
    snprintf(page_dir, sizeof page_dir, "/tmp/tg_test_html_XXXXXX");
    cr_assert_not_null(mkdtemp(page_dir));
}
static void page_path(char *buf, size_t len, const char *name) {
    snprintf(buf, len, "%s/%s", page_dir, name);
}
static void remove_dir(void) {
    char p[128];
    page_path(p, sizeof p, "page.html");
    remove(p);
    rmdir(page_dir);
}

/* test_teach's tiny graph: a feeds two ops (its gradient is a sum), w is used twice by one op.
 *     u = a * b,   v = tanh(a),   w = u + v,   q = w * w,   s = sum(q) */
typedef struct tiny {
    tg_tape *tape;
    tg_tensor *a, *b, *s;
} tiny;

static tiny tiny_new(void) {
    tiny g;
    const double av[] = {0.5, -1.0}, bv[] = {2.0, 0.25};
    g.a = tg_tensor_from(TG_F64, TG_SHAPE(2), av);
    g.b = tg_tensor_from(TG_F64, TG_SHAPE(2), bv);
    cr_assert(g.a && g.b);
    tg_tensor_set_name(g.a, "a");
    tg_tensor_set_requires_grad(g.a, 1);
    tg_tensor_set_requires_grad(g.b, 1);
    g.tape = tg_tape_new();
    tg_tensor *u = tg_mul(g.tape, g.a, g.b);
    tg_tensor *v = tg_tanh(g.tape, g.a);
    tg_tensor *w = tg_add(g.tape, u, v);
    tg_tensor *q = tg_mul(g.tape, w, w);
    g.s = tg_sum(g.tape, q);
    cr_assert_eq(tg_tape_status(g.tape), TG_OK, "%s", tg_tape_errmsg(g.tape));
    tg_tensor_set_name(u, "u");
    tg_tensor_set_name(w, "w");
    tg_tensor_set_name(q, "q");
    tg_tensor_set_name(g.s, "s");
    return g;
}

static void tiny_free(tiny *g) {
    tg_tape_free(g->tape);
    tg_tensor_free(g->a);
    tg_tensor_free(g->b);
}

/* The 2-4-2 network on a batch of 5, f32 (rounding would show if the page disturbed the order of
 * the sums); h feeds two heads. Gradients of the four parameters into `out`, the trace into
 * `text`; with `page`, the pass is tg_tape_write_html's. */
static void network(const char *page, float out[4][8], char **text) {
    tg_rng rng;
    tg_rng_seed(&rng, 7);
    tg_tensor *W[4] = {
        tg_tensor_randn(TG_F32, TG_SHAPE(4, 2), 0, 1, &rng),
        tg_tensor_randn(TG_F32, TG_SHAPE(4), 0, 1, &rng),
        tg_tensor_randn(TG_F32, TG_SHAPE(2, 4), 0, 1, &rng),
        tg_tensor_randn(TG_F32, TG_SHAPE(2), 0, 1, &rng),
    };
    tg_tensor *X = tg_tensor_randn(TG_F32, TG_SHAPE(5, 2), 0, 1, &rng);
    const int32_t lab[] = {0, 1, 1, 0, 1};
    tg_tensor *y = tg_tensor_from(TG_I32, TG_SHAPE(5), lab);
    for (int i = 0; i < 4; i++)
        tg_tensor_set_requires_grad(W[i], 1);
    tg_tape *t = tg_tape_new();
    FILE *f = tmpfile();
    cr_assert_not_null(f);
    tg_tape_set_trace(t, f);
    tg_tensor *h = tg_tanh(t, tg_add(t, tg_matmul(t, X, tg_transpose(t, W[0])), W[1]));
    tg_tensor *z1 = tg_add(t, tg_matmul(t, h, tg_transpose(t, W[2])), W[3]);
    tg_tensor *z2 = tg_matmul(t, tg_scale(t, h, 0.5), tg_transpose(t, W[2]));
    tg_tensor *loss = tg_softmax_cross_entropy(t, tg_add(t, z1, z2), y);
    if (page)
        cr_assert_eq(tg_tape_write_html(t, loss, page), TG_OK, "%s", tg_last_errmsg());
    else
        cr_assert_eq(tg_backward(t, loss), TG_OK, "%s", tg_tape_errmsg(t));
    for (int i = 0; i < 4; i++)
        memcpy(out[i], tg_tensor_cdata(tg_tensor_grad(W[i])),
               (size_t)tg_tensor_numel(W[i]) * sizeof(float));
    *text = slurp(f);
    fclose(f);
    tg_tape_free(t);
    for (int i = 0; i < 4; i++)
        tg_tensor_free(W[i]);
    tg_tensor_free(X);
    tg_tensor_free(y);
}

/* ---- The page's pass is tg_backward's ---- */

Test(html, gradients_and_trace_are_those_of_tg_backward_bitwise) {
    make_dir();
    char page[128];
    page_path(page, sizeof page, "page.html");
    float plain[4][8] = {{0}}, paged[4][8] = {{0}};
    char *text_plain = NULL, *text_paged = NULL;
    network(NULL, plain, &text_plain);
    network(page, paged, &text_paged);
    cr_expect(memcmp(plain, paged, sizeof plain) == 0, "gradients differ with the page");
    /* One pass, seen once by the trace, and the same pass. */
    cr_expect_str_eq(text_paged, text_plain);
    cr_expect_eq(count(text_paged, "end of the backward pass from"), 1);
    char *html = read_path(page);
    cr_assert_not_null(html, "no page at %s", page);
    cr_expect_not_null(strstr(html, "entries, norm"), "a [5,4] tensor is summarised");
    cr_expect_not_null(strstr(html, "\"head\":["), "the summary's entries are in the data");
    free(html);
    free(text_plain);
    free(text_paged);
    remove_dir();
}

Test(html, gradients_accumulate_as_with_tg_backward) {
    make_dir();
    char page[128];
    page_path(page, sizeof page, "page.html");
    tiny g1 = tiny_new(), g2 = tiny_new();
    /* Twice without zeroing: the second pass adds to the first, for both. */
    for (int pass = 0; pass < 2; pass++) {
        cr_assert_eq(tg_backward(g1.tape, g1.s), TG_OK);
        cr_assert_eq(tg_tape_write_html(g2.tape, g2.s, page), TG_OK, "%s", tg_last_errmsg());
    }
    cr_expect(memcmp(tg_tensor_cdata(tg_tensor_grad(g1.a)), tg_tensor_cdata(tg_tensor_grad(g2.a)),
                     2 * sizeof(double)) == 0);
    cr_expect(memcmp(tg_tensor_cdata(tg_tensor_grad(g1.b)), tg_tensor_cdata(tg_tensor_grad(g2.b)),
                     2 * sizeof(double)) == 0);
    char *html = read_path(page);
    cr_assert_not_null(html);
    cr_expect_not_null(strstr(html, "added to what it held before this pass"),
                       "the second page shows the gradients it added to");
    free(html);
    tiny_free(&g1);
    tiny_free(&g2);
    remove_dir();
}

/* ---- The file ---- */

/* The trace's steps, each as a JSON string (as the page's data holds it). */
static void expect_steps_in_page(const char *trace, const char *html) {
    int found = 0;
    for (const char *p = strstr(trace, "\n#"); p; p = strstr(p + 1, "\n#")) {
        const char *end = strstr(p + 1, "\n\n");
        end = end ? end + 1 : p + strlen(p);
        char *step = strndup(p + 1, (size_t)(end - p - 1));
        char *json = NULL;
        size_t len = 0;
        FILE *m = open_memstream(&json, &len);
        cr_assert_not_null(m);
        fputs("\"text\":", m);
        tg__json_string(m, step);
        fclose(m);
        cr_expect_not_null(strstr(html, json), "the page lacks the trace's step\n%s", step);
        found++;
        free(json);
        free(step);
    }
    cr_expect_eq(found, 5, "five backward steps in the trace");
}

Test(html, the_file_is_self_contained_and_holds_the_traces_text) {
    make_dir();
    char page[128];
    page_path(page, sizeof page, "page.html");
    tiny g = tiny_new();
    FILE *f = tmpfile();
    tg_tape_set_trace(g.tape, f);
    cr_assert_eq(tg_tape_write_html(g.tape, g.s, page), TG_OK, "%s", tg_last_errmsg());
    char *trace = slurp(f);
    fclose(f);
    char *html = read_path(page);
    cr_assert_not_null(html);
    cr_expect(strncmp(html, "<!DOCTYPE html>\n", 16) == 0);
    cr_expect_not_null(strstr(html, "</html>\n"));
    /* Nothing to fetch: no address at all, no external script, style or image. */
    cr_expect_null(strstr(html, "http://"));
    cr_expect_null(strstr(html, "https://"));
    cr_expect_null(strstr(html, "<script src"));
    cr_expect_null(strstr(html, "<link"));
    cr_expect_null(strstr(html, "<img"));
    cr_expect_not_null(strstr(html, "Content-Security-Policy\" content=\"default-src 'none'"));
    cr_expect_eq(count(html, "<script"), 2, "the data and the script, inline");
    cr_expect_eq(count(html, "</script>"), 2);
    cr_expect_not_null(strstr(html, "<style>"));
    /* The graph, inline, one box per node and leaf, without its numbers (the page shows them). */
    if (have_dot()) {
        cr_expect_eq(count(html, "<svg"), 1);
        cr_expect_eq(count(html, "class=\"node\""), 7, "five nodes and two leaves");
        cr_expect_not_null(strstr(html, "<title>n4</title>"));
        cr_expect_not_null(strstr(html, "<title>leaf1</title>"));
        cr_expect_null(strstr(html, "<?xml"));
    }
    /* The steps: five forward, then the five of the trace, whose text is in the data as is. */
    cr_expect_eq(count(html, "{\"svg\":\"n"), 10);
    cr_expect_eq(count(html, "\"kind\":\"forward\""), 5);
    cr_expect_eq(count(html, "\"kind\":\"backward\""), 5);
    expect_steps_in_page(trace, html);
    cr_expect_not_null(strstr(html, "\"s\":[\"2.9242\",\"-2.0232\"]"),
                       "the numbers as tg__fmt_num formats them");
    free(html);
    free(trace);
    tiny_free(&g);
    remove_dir();
}

Test(html, names_cannot_break_out_of_the_page) {
    make_dir();
    char page[128];
    page_path(page, sizeof page, "page.html");
    tiny g = tiny_new();
    tg_tensor_set_name(g.s, "</script><b>");
    cr_assert_eq(tg_tape_write_html(g.tape, g.s, page), TG_OK, "%s", tg_last_errmsg());
    char *html = read_path(page);
    cr_assert_not_null(html);
    cr_expect_eq(count(html, "</script>"), 2, "the name did not close a script");
    cr_expect_null(strstr(html, "<b>"));
    cr_expect_not_null(strstr(html, "\\u003c/script\\u003e\\u003cb\\u003e"), "escaped in JSON");
    cr_expect_not_null(strstr(html, "<title>tapegrad: step through the backward pass from "
                                    "&lt;/script&gt;&lt;b&gt;</title>"));
    free(html);
    tiny_free(&g);
    remove_dir();
}

Test(html, large_tensors_carry_only_their_summary) {
    make_dir();
    char page[128];
    page_path(page, sizeof page, "page.html");
    tg_tensor *x = tg_tensor_ones(TG_F64, TG_SHAPE(100, 50));
    tg_tensor_set_requires_grad(x, 1);
    tg_tape *t = tg_tape_new();
    tg_tensor *s = tg_sum(t, tg_tanh(t, x));
    cr_assert_eq(tg_tape_write_html(t, s, page), TG_OK, "%s", tg_last_errmsg());
    char *html = read_path(page);
    cr_assert_not_null(html);
    cr_expect_not_null(strstr(html, "\"numel\":5000,\"integer\":false,\"head\":["));
    cr_expect_not_null(strstr(html, "(5000 entries, norm "));
    cr_expect_lt(strlen(html), 200000, "5000 entries per tensor are not written out");
    free(html);
    tg_tape_free(t);
    tg_tensor_free(x);
    remove_dir();
}

Test(html, without_graphviz_the_page_says_why) {
    make_dir();
    char page[128];
    page_path(page, sizeof page, "page.html");
    tiny g = tiny_new();
    char *path = strdup(getenv("PATH") ? getenv("PATH") : "/usr/bin:/bin");
    setenv("PATH", "/nonexistent", 1);
    tg_status st = tg_tape_write_html(g.tape, g.s, page);
    setenv("PATH", path, 1);
    free(path);
    cr_assert_eq(st, TG_OK, "%s", tg_last_errmsg());
    char *html = read_path(page);
    cr_assert_not_null(html);
    cr_expect_null(strstr(html, "<svg"));
    cr_expect_not_null(strstr(html, "No graph: tg_tape_render: cannot draw"), "%.400s",
                       strstr(html, "<section"));
    cr_expect_not_null(strstr(html, "apt-get install graphviz"));
    cr_expect_eq(count(html, "\"kind\":\"backward\""), 5, "the steps are there all the same");
    free(html);
    tiny_free(&g);
    remove_dir();
}

/* ---- Errors ---- */

Test(html, null_arguments) {
    tiny g = tiny_new();
    cr_expect_eq(tg_tape_write_html(NULL, g.s, "/tmp/x.html"), TG_ERR_NULL);
    cr_expect_str_eq(tg_last_errmsg(), "tg_tape_write_html: tape is NULL");
    cr_expect_eq(tg_tape_write_html(g.tape, NULL, "/tmp/x.html"), TG_ERR_NULL);
    cr_expect_str_eq(tg_last_errmsg(), "tg_tape_write_html: loss is NULL");
    cr_expect_eq(tg_tape_write_html(g.tape, g.s, NULL), TG_ERR_NULL);
    cr_expect_str_eq(tg_last_errmsg(), "tg_tape_write_html: path is NULL");
    cr_expect_null(tg_tensor_grad(g.a), "no pass ran");
    tiny_free(&g);
}

Test(html, an_unwritable_path_fails_before_the_pass) {
    tiny g = tiny_new();
    cr_expect_eq(tg_tape_write_html(g.tape, g.s, "/nonexistent/dir/page.html"), TG_ERR_IO);
    cr_expect_str_eq(tg_last_errmsg(),
                     "tg_tape_write_html: cannot open /nonexistent/dir/page.html for writing");
    cr_expect_null(tg_tensor_grad(g.a), "no pass ran");
    tiny_free(&g);
}

Test(html, a_failed_pass_leaves_no_file) {
    make_dir();
    char page[128];
    page_path(page, sizeof page, "page.html");
    tiny g = tiny_new();
    /* Not one element: tg_backward refuses it, and so the page. */
    tg_tensor *q = tg_tape_node(g.tape, 3);
    cr_expect_eq(tg_tape_write_html(g.tape, q, page), TG_ERR_SHAPE);
    cr_expect_not_null(strstr(tg_last_errmsg(), "tg_tape_write_html: "), "%s", tg_last_errmsg());
    cr_expect_not_null(strstr(tg_last_errmsg(), "not one element"), "%s", tg_last_errmsg());
    cr_expect_neq(access(page, F_OK), 0, "no half-written page");
    /* The tape is now in error: refused at once. */
    cr_expect_eq(tg_tape_write_html(g.tape, g.s, page), TG_ERR_SHAPE);
    cr_expect_not_null(strstr(tg_last_errmsg(), "the tape is in error"), "%s", tg_last_errmsg());
    cr_expect_neq(access(page, F_OK), 0);
    tiny_free(&g);
    remove_dir();
}

static tg_status nop_observer(const tg_event *ev, void *user) {
    (void)ev;
    (void)user;
    return TG_OK;
}

Test(html, no_free_observer_slot) {
    make_dir();
    char page[128];
    page_path(page, sizeof page, "page.html");
    tiny g = tiny_new();
    int users[8];
    for (int i = 0; i < 8; i++)
        cr_assert_eq(tg_tape_observe(g.tape, nop_observer, &users[i]), TG_OK);
    cr_expect_eq(tg_tape_write_html(g.tape, g.s, page), TG_ERR_STATE);
    cr_expect_not_null(strstr(tg_last_errmsg(),
                              "tg_tape_write_html: tg_tape_observe: the tape has 8 "
                              "observers already"),
                       "%s", tg_last_errmsg());
    cr_expect_null(tg_tensor_grad(g.a), "no pass ran");
    cr_expect_neq(access(page, F_OK), 0);
    tiny_free(&g);
    remove_dir();
}
