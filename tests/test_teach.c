/* The teaching tools: the listing and the trace of a fixed tiny graph against golden text, the
 * DOT export (structure always, Graphviz's parser when installed), rendering errors, and that
 * tracing leaves every gradient bitwise unchanged.
 *
 * Golden files live in $TG_TEST_DATA (tests/data). After a deliberate change of the format,
 * regenerate them with TG_UPDATE_GOLDEN=1 build/tests/test_teach, and read the diff. */
#define _POSIX_C_SOURCE 200809L /* setenv */

#include "core/engine.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <unistd.h> /* close */

/* ---- Helpers ---- */

/* Everything written to f so far, as a NUL-terminated string (caller frees). */
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

static void data_path(char *buf, size_t len, const char *name) {
    const char *dir = getenv("TG_TEST_DATA");
    snprintf(buf, len, "%s/%s", dir && dir[0] ? dir : "data", name);
}

/* Compares `got` with the golden file `name`; with TG_UPDATE_GOLDEN set, rewrites it instead. */
static void expect_golden(const char *got, const char *name) {
    char path[1024];
    data_path(path, sizeof path, name);
    if (getenv("TG_UPDATE_GOLDEN")) {
        FILE *f = fopen(path, "wb");
        cr_assert_not_null(f, "cannot write %s", path);
        fputs(got, f);
        fclose(f);
    }
    char *want = read_path(path);
    cr_assert_not_null(want, "golden file %s is missing (TG_TEST_DATA=%s)", path,
                       getenv("TG_TEST_DATA") ? getenv("TG_TEST_DATA") : "unset");
    /* Report the first differing line, which says more than two whole texts. */
    const char *a = got, *b = want;
    int line = 1;
    while (*a && *a == *b) {
        line += *a == '\n';
        a++;
        b++;
    }
    cr_expect(*a == '\0' && *b == '\0',
              "%s differs from the output at line %d:\n got: %.80s\nwant: %.80s", name, line, a, b);
    free(want);
}

static bool have_dot(void) { return system("command -v dot >/dev/null 2>&1") == 0; }

/* The fixed tiny graph: a feeds two ops (so its gradient is a sum), b and one node are unnamed
 * (so the fallbacks show), and w is used twice by one op (mul(w, w)).
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

/* ---- The listing and the trace against golden text ---- */

Test(teach, listing_matches_golden) {
    tiny g = tiny_new();
    FILE *f = tmpfile();
    cr_assert_not_null(f);
    cr_assert_eq(tg_tape_print(g.tape, f), TG_OK);
    char *got = slurp(f);
    fclose(f);
    expect_golden(got, "teach_listing.txt");
    free(got);
    tiny_free(&g);
}

Test(teach, trace_matches_golden) {
    tiny g = tiny_new();
    FILE *f = tmpfile();
    cr_assert_not_null(f);
    tg_tape_set_trace(g.tape, f);
    cr_assert_eq(tg_backward(g.tape, g.s), TG_OK, "%s", tg_tape_errmsg(g.tape));
    char *got = slurp(f);
    fclose(f);
    expect_golden(got, "teach_trace.txt");
    /* The numbers in the golden text are the gradients themselves: check two by hand.
     * w = a*b + tanh(a), ds/dw = 2w; ds/da = 2w (b + 1 - tanh(a)^2), ds/db = 2w a. */
    for (int i = 0; i < 2; i++) {
        double a = tg_tensor_get(g.a, i), b = tg_tensor_get(g.b, i);
        double w = a * b + tanh(a);
        cr_expect_float_eq(tg_tensor_get(tg_tensor_grad(g.a), i),
                           2 * w * (b + 1 - tanh(a) * tanh(a)), 1e-12);
        cr_expect_float_eq(tg_tensor_get(tg_tensor_grad(g.b), i), 2 * w * a, 1e-12);
    }
    free(got);
    tiny_free(&g);
}

Test(teach, trace_shows_the_sum_of_two_paths) {
    tiny g = tiny_new();
    FILE *f = tmpfile();
    tg_tape_set_trace(g.tape, f);
    cr_assert_eq(tg_backward(g.tape, g.s), TG_OK);
    char *got = slurp(f);
    fclose(f);
    /* a feeds mul (#0) and tanh (#1): #1 runs first, so its part is contribution 1 of 2. */
    cr_expect_not_null(strstr(got, "(contribution 1 of 2)"), "%s", got);
    cr_expect_not_null(strstr(got, "(contribution 2 of 2)"), "%s", got);
    cr_expect_not_null(strstr(got, "(all contributions summed)"), "%s", got);
    cr_expect_not_null(strstr(got, "(input 2 is input 1 again"), "%s", got);
    cr_expect_not_null(strstr(got, "tanh#1"), "unnamed nodes fall back to op#index:\n%s", got);
    cr_expect_not_null(strstr(got, "leaf#1"), "unnamed leaves fall back to leaf#k:\n%s", got);
    free(got);
    tiny_free(&g);
}

/* ---- Tracing changes no gradient ---- */

/* The report's 2-4-2 network on a batch of 5 (large enough that the trace summarises some
 * tensors), f32 so rounding would show if the trace disturbed the order of the sums. */
static void network_grads(bool trace, float out[4][8], char **text) {
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
    FILE *f = trace ? tmpfile() : NULL;
    tg_tape_set_trace(t, f);
    /* h is used twice (two heads summed), so the trace's summing path runs too. */
    tg_tensor *h = tg_tanh(t, tg_add(t, tg_matmul(t, X, tg_transpose(t, W[0])), W[1]));
    tg_tensor *z1 = tg_add(t, tg_matmul(t, h, tg_transpose(t, W[2])), W[3]);
    tg_tensor *z2 = tg_matmul(t, tg_scale(t, h, 0.5), tg_transpose(t, W[2]));
    tg_tensor *loss = tg_softmax_cross_entropy(t, tg_add(t, z1, z2), y);
    cr_assert_eq(tg_backward(t, loss), TG_OK, "%s", tg_tape_errmsg(t));
    for (int i = 0; i < 4; i++)
        memcpy(out[i], tg_tensor_cdata(tg_tensor_grad(W[i])),
               (size_t)tg_tensor_numel(W[i]) * sizeof(float));
    if (f) {
        *text = slurp(f);
        fclose(f);
    }
    tg_tape_free(t);
    for (int i = 0; i < 4; i++)
        tg_tensor_free(W[i]);
    tg_tensor_free(X);
    tg_tensor_free(y);
}

Test(teach, tracing_changes_no_gradient_bitwise) {
    float off[4][8] = {{0}}, on[4][8] = {{0}};
    char *text = NULL;
    network_grads(false, off, NULL);
    network_grads(true, on, &text);
    cr_expect(memcmp(off, on, sizeof off) == 0, "gradients differ with the trace on");
    cr_assert_not_null(text);
    cr_expect_not_null(strstr(text, "entries, norm"), "a [5,4] tensor is summarised:\n%s", text);
    cr_expect_not_null(strstr(text, "contribution 2 of 2"), "h feeds two heads:\n%s", text);
    cr_expect_not_null(strstr(text, "(summed over the axes it was broadcast along)"),
                       "the biases [4] are broadcast over the batch:\n%s", text);
    free(text);
}

Test(teach, trace_off_writes_nothing) {
    tiny g = tiny_new();
    FILE *f = tmpfile();
    tg_tape_set_trace(g.tape, f);
    tg_tape_set_trace(g.tape, NULL);
    cr_assert_eq(tg_backward(g.tape, g.s), TG_OK);
    cr_expect_eq(ftell(f), 0);
    fclose(f);
    tiny_free(&g);
}

/* ---- DOT ---- */

static size_t count(const char *s, const char *what) {
    size_t n = 0;
    for (const char *p = strstr(s, what); p; p = strstr(p + 1, what))
        n++;
    return n;
}

Test(teach, dot_is_well_formed) {
    tiny g = tiny_new();
    cr_assert_eq(tg_backward(g.tape, g.s), TG_OK);
    FILE *f = tmpfile();
    cr_assert_eq(tg_tape_write_dot(g.tape, f), TG_OK);
    char *dot = slurp(f);
    fclose(f);

    cr_expect(strncmp(dot, "digraph tape {\n", 15) == 0, "%s", dot);
    cr_expect(strcmp(dot + strlen(dot) - 2, "}\n") == 0);
    cr_expect_eq(count(dot, "{"), count(dot, "}"), "braces balance");
    cr_expect_eq(count(dot, "<TABLE"), count(dot, "</TABLE>"));
    cr_expect_eq(count(dot, "<TR>"), count(dot, "</TR>"));
    cr_expect_eq(count(dot, "<FONT"), count(dot, "</FONT>"));
    /* One box per node (n0..n4) and per leaf (a, b), one edge per input, in data-flow order. */
    for (int i = 0; i < 5; i++) {
        char id[16];
        snprintf(id, sizeof id, "  n%d [", i);
        cr_expect_not_null(strstr(dot, id), "node %d missing", i);
    }
    cr_expect_not_null(strstr(dot, "  leaf0 ["));
    cr_expect_not_null(strstr(dot, "  leaf1 ["));
    cr_expect_null(strstr(dot, "  leaf2 ["));
    const char *edges[] = {"leaf0 -> n0;", "leaf1 -> n0;", "leaf0 -> n1;", "n0 -> n2;",
                           "n1 -> n2;",    "n2 -> n3;",    "n2 -> n3;",    "n3 -> n4;"};
    const char *at = dot;
    for (size_t i = 0; i < sizeof edges / sizeof *edges; i++) {
        const char *e = strstr(at, edges[i]);
        cr_expect_not_null(e, "edge %s missing or out of order", edges[i]);
        if (e)
            at = e + 1;
    }
    cr_expect_eq(count(dot, " -> "), 8);
    /* Parameters and data are styled apart; after backward, gradients are shown. */
    cr_expect_eq(count(dot, "#fff2cc"), 2, "two parameter leaves");
    cr_expect_not_null(strstr(dot, "grad"));
    cr_expect_not_null(strstr(dot, "<B>tanh#1</B>"), "fallback name in the picture");
    free(dot);
    tiny_free(&g);
}

Test(teach, dot_escapes_names) {
    tiny g = tiny_new();
    tg_tensor_set_name(tg_tape_node(g.tape, 2), "w<&>\"");
    FILE *f = tmpfile();
    cr_assert_eq(tg_tape_write_dot(g.tape, f), TG_OK);
    char *dot = slurp(f);
    fclose(f);
    cr_expect_not_null(strstr(dot, "w&lt;&amp;&gt;&quot;"), "%s", dot);
    cr_expect_null(strstr(dot, "w<&>"));
    free(dot);
    tiny_free(&g);
}

Test(teach, dot_is_parsed_by_graphviz) {
    if (!have_dot())
        cr_skip_test("Graphviz's dot is not installed (apt-get install graphviz)");
    tiny g = tiny_new();
    tg_tensor_set_name(tg_tape_node(g.tape, 2), "w<&>\"");
    cr_assert_eq(tg_backward(g.tape, g.s), TG_OK);
    char dot_path[] = "/tmp/tg_test_teach_XXXXXX";
    int fd = mkstemp(dot_path);
    cr_assert(fd >= 0);
    close(fd);
    cr_assert_eq(tg_tape_save_dot(g.tape, dot_path), TG_OK, "%s", tg_last_errmsg());
    char cmd[256];
    snprintf(cmd, sizeof cmd, "dot -Tcanon '%s' >/dev/null 2>&1", dot_path);
    cr_expect_eq(system(cmd), 0, "dot rejected %s", dot_path);
    remove(dot_path);

    char svg[64];
    snprintf(svg, sizeof svg, "%s.svg", dot_path);
    cr_assert_eq(tg_tape_render(g.tape, svg), TG_OK, "%s", tg_last_errmsg());
    char *text = read_path(svg);
    cr_assert_not_null(text);
    cr_expect_not_null(strstr(text, "<svg"));
    cr_expect_not_null(strstr(text, "tanh#1"), "the picture shows the nodes");
    free(text);
    remove(svg);
    tiny_free(&g);
}

/* ---- Errors ---- */

Test(teach, render_without_graphviz_names_the_package) {
    tiny g = tiny_new();
    setenv("PATH", "/nonexistent", 1); /* this test runs in its own process */
    cr_expect_eq(tg_tape_render(g.tape, "/tmp/tg_never_written.png"), TG_ERR_IO);
    cr_expect_not_null(strstr(tg_last_errmsg(), "apt-get install graphviz"), "%s",
                       tg_last_errmsg());
    cr_expect_not_null(strstr(tg_last_errmsg(), "tg_never_written.png"), "%s", tg_last_errmsg());
    tiny_free(&g);
}

Test(teach, bad_arguments) {
    tiny g = tiny_new();
    cr_expect_eq(tg_tape_render(g.tape, "graph.jpg"), TG_ERR_VALUE);
    cr_expect_str_eq(tg_last_errmsg(),
                     "tg_tape_render: graph.jpg: the name must end in .png, .svg or .pdf");
    cr_expect_eq(tg_tape_print(NULL, stdout), TG_ERR_NULL);
    cr_expect_str_eq(tg_last_errmsg(), "tg_tape_print: tape is NULL");
    cr_expect_eq(tg_tape_write_dot(g.tape, NULL), TG_ERR_NULL);
    cr_expect_str_eq(tg_last_errmsg(), "tg_tape_write_dot: out is NULL");
    cr_expect_eq(tg_tape_save_dot(g.tape, "/nonexistent/dir/g.dot"), TG_ERR_IO);
    cr_expect_str_eq(tg_last_errmsg(),
                     "tg_tape_save_dot: cannot open /nonexistent/dir/g.dot for writing");
    cr_expect_eq(tg_tape_set_trace(NULL, stdout), TG_ERR_NULL);
    tiny_free(&g);
}
