/* Checking intermediates (src/tools/intermediates.c): tg_check_intermediates must call a right
 * gradient of any node exact (or close), name the wrong elements of a wrong one, list nodes in
 * backward order with the first wrong one, perturb a probed node and nothing upstream of it,
 * catch a wrong backward through its finite-difference referee, report kinks, and refuse misuse
 * with exact messages. tg_probe outside a check must record nothing. */
#define _POSIX_C_SOURCE 200809L /* open_memstream, to read the printer's output back */
#include <criterion/criterion.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tapegrad.h"

static tg_tensor *vec(const char *name, int64_t n, const double *v) {
    tg_tensor *t = tg_tensor_from(TG_F64, 1, (const int64_t[]){n}, v);
    cr_assert(t, "%s", tg_last_errmsg());
    tg_tensor_set_name(t, name);
    return t;
}

/* inputs: x [4], c [4].  t = tanh(x) (probed), L = sum(c * t).
 * So dL/dt = c and dL/dx = c (1 - t^2). */
static tg_tensor *tanh_loss(tg_tape *t, tg_tensor *const *in, int n, tg_dtype dt, tg_probes *p,
                            void *u) {
    (void)n, (void)u;
    cr_assert_eq(dt, TG_F64);
    tg_tensor *th = tg_probe(p, t, tg_tanh(t, in[0]), "t");
    return tg_sum(t, tg_mul(t, in[1], th));
}

static const double X4[4] = {0.3, -1.2, 0.8, 2.0}, C4[4] = {1.5, -0.5, 2.0, 0.25};

static tg_intermediates_report *run(tg_probed_fn f, tg_tensor *const *in, int n,
                                    const tg_node_grad *g, int ng) {
    tg_intermediates_report *r = tg_check_intermediates(f, in, n, NULL, g, ng, NULL);
    cr_assert(r, "%s", tg_last_errmsg());
    return r;
}

static const tg_node_check *node(const tg_intermediates_report *r, const char *name) {
    for (int k = 0; k < r->n_nodes; k++)
        if (strcmp(r->nodes[k].check.name, name) == 0)
            return &r->nodes[k];
    cr_assert_fail("no node %s in the report", name);
    return NULL;
}

Test(intermediates, closed_form_right_is_exact_and_a_wrong_element_is_named) {
    tg_tensor *in[2] = {vec("x", 4, X4), vec("c", 4, C4)};
    double dx[4], dt_wrong[4];
    for (int i = 0; i < 4; i++) {
        dx[i] = C4[i] * (1 - tanh(X4[i]) * tanh(X4[i]));
        dt_wrong[i] = C4[i];
    }
    dt_wrong[2] = 2 * C4[2]; /* one wrong element */
    tg_tensor *gt = vec("dt", 4, C4), *gx = vec("dx", 4, dx), *gw = vec("dtw", 4, dt_wrong);

    tg_node_grad right[2] = {{"x", gx}, {"t", gt}};
    tg_intermediates_report *r = run(tanh_loss, in, 2, right, 2);
    cr_expect(r->passed);
    cr_expect_eq(r->n_nodes, 2);
    cr_expect_eq(r->first_wrong, -1);
    /* Backward order: the probe node t first, then the input x, whatever order they were given. */
    cr_expect_str_eq(r->nodes[0].check.name, "t");
    cr_expect_str_eq(r->nodes[1].check.name, "x");
    const tg_node_check *t = node(r, "t"), *x = node(r, "x");
    cr_expect_eq(t->verdict, TG_NODE_EXACT, "dL/dt = c is exact");
    cr_expect(t->refereed);
    cr_expect_str_eq(t->op, "tanh");
    cr_expect_geq(t->tape_index, 0);
    cr_expect_eq(t->n_fd_disagree, 0);
    cr_expect_eq(t->check.n_ok, 4);
    for (int i = 0; i < 4; i++) {
        cr_expect_eq(t->check.elements[i].autodiff, C4[i]);
        cr_expect_float_eq(t->check.elements[i].fd, C4[i], 1e-8, "fd of element %d", i);
    }
    cr_expect_neq(x->verdict, TG_NODE_WRONG);
    cr_expect_lt(x->check.max_abs_err, 1e-15);
    cr_expect_str_eq(x->op, "input");
    cr_expect_eq(x->tape_index, -1);
    cr_expect_eq(x->check.input, 0);
    tg_intermediates_report_free(r);

    tg_node_grad wrong[2] = {{"t", gw}, {"x", gx}};
    r = run(tanh_loss, in, 2, wrong, 2);
    cr_expect_not(r->passed);
    t = node(r, "t");
    cr_expect_eq(t->verdict, TG_NODE_WRONG);
    cr_expect_eq(t->n_wrong, 1);
    cr_expect_eq(t->check.n_mismatch, 1);
    cr_expect_eq(t->check.worst_index, 2);
    for (int i = 0; i < 4; i++)
        cr_expect_eq(t->check.elements[i].status, i == 2 ? TG_GC_MISMATCH : TG_GC_OK, "el %d", i);
    cr_expect_eq(t->check.elements[2].disagree, TG_GC_YOURS_VS_AUTODIFF);
    cr_expect_float_eq(t->check.elements[2].abs_err, C4[2], 1e-15);
    cr_expect_eq(r->first_wrong, 0);
    cr_expect_eq(node(r, "x")->verdict, TG_NODE_EXACT);

    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    tg_intermediates_print(r, f);
    fclose(f);
    cr_expect(strstr(buf, "intermediates: FAILED"), "%s", buf);
    cr_expect(strstr(buf, "WRONG  1 of 4 elements"), "%s", buf);
    cr_expect(strstr(buf, "first wrong node, in backward order: t (tape node"), "%s", buf);
    cr_expect(strstr(buf, "    [2]          | +4.000000e+00 | +2.000000e+00 |"), "%s", buf);
    cr_expect(strstr(buf, "agree with autodiff on 4 of 4"), "%s", buf);
    free(buf);
    tg_intermediates_report_free(r);
    tg_tensor_free(gt), tg_tensor_free(gx), tg_tensor_free(gw);
    tg_tensor_free(in[0]), tg_tensor_free(in[1]);
}

Test(intermediates, close_when_off_by_float32_rounding) {
    tg_tensor *in[2] = {vec("x", 4, X4), vec("c", 4, C4)};
    double d[4];
    for (int i = 0; i < 4; i++)
        d[i] = C4[i] * (1 + 1e-7); /* a float32-sized error: inside tolerance, not rounding */
    tg_tensor *g = vec("g", 4, d);
    tg_node_grad mine[1] = {{"t", g}};
    tg_intermediates_report *r = run(tanh_loss, in, 2, mine, 1);
    cr_expect(r->passed);
    cr_expect_eq(r->nodes[0].verdict, TG_NODE_CLOSE);
    cr_expect_float_eq(r->nodes[0].check.max_abs_err, 2e-7, 1e-12);
    tg_intermediates_report_free(r);
    tg_tensor_free(g), tg_tensor_free(in[0]), tg_tensor_free(in[1]);
}

/* inputs: x [3].  v = 2x (probed), L = sum(v * v) + sum(exp(v)) + sum(x * x * x).
 * dL/dv = 2v + exp(v): the x^3 term reaches x by another path and must not move when v is
 * perturbed. The node "s" = v * v is named with tg_tensor_set_name only: dL/ds = 1, unrefereed. */
static tg_tensor *fanout_loss(tg_tape *t, tg_tensor *const *in, int n, tg_dtype dt, tg_probes *p,
                              void *u) {
    (void)n, (void)dt, (void)u;
    tg_tensor *v = tg_probe(p, t, tg_scale(t, in[0], 2.0), "v");
    tg_tensor *s = tg_mul(t, v, v);
    tg_tensor_set_name(s, "s");
    tg_tensor *cube = tg_mul(t, tg_mul(t, in[0], in[0]), in[0]);
    return tg_add(t, tg_add(t, tg_sum(t, s), tg_sum(t, tg_exp(t, v))), tg_sum(t, cube));
}

Test(intermediates, a_probe_perturbs_the_node_and_nothing_upstream) {
    const double x[3] = {0.5, -0.25, 1.0};
    tg_tensor *in[1] = {vec("x", 3, x)};
    double dv[3], ds[3] = {1, 1, 1}, dxs[3];
    for (int i = 0; i < 3; i++) {
        dv[i] = 2 * (2 * x[i]) + exp(2 * x[i]);
        dxs[i] = 2 * dv[i] + 3 * x[i] * x[i];
    }
    tg_tensor *gv = vec("gv", 3, dv), *gs = vec("gs", 3, ds), *gx = vec("gx", 3, dxs);
    tg_node_grad mine[3] = {{"x", gx}, {"s", gs}, {"v", gv}};
    tg_intermediates_report *r = run(fanout_loss, in, 1, mine, 3);
    cr_expect(r->passed);
    const tg_node_check *v = node(r, "v"), *s = node(r, "s");
    cr_expect(v->refereed);
    for (int i = 0; i < 3; i++)
        cr_expect_float_eq(v->check.elements[i].fd, dv[i], 1e-7, "fd of v[%d]", i);
    cr_expect_not(s->refereed, "a node only named cannot be perturbed");
    cr_expect_eq(s->verdict, TG_NODE_EXACT);
    cr_expect(isnan(s->check.elements[0].fd));
    cr_expect_str_eq(s->op, "mul");
    cr_expect_str_eq(v->op, "scale");
    /* s, then v, then x: the order the reverse pass finishes them. */
    cr_expect_str_eq(r->nodes[0].check.name, "s");
    cr_expect_str_eq(r->nodes[1].check.name, "v");
    cr_expect_str_eq(r->nodes[2].check.name, "x");
    tg_intermediates_report_free(r);
    tg_tensor_free(gv), tg_tensor_free(gs), tg_tensor_free(gx), tg_tensor_free(in[0]);
}

/* y = x^2 with a backward missing its factor 2: autodiff is wrong, the referee must say so. */
static tg_status sq_fwd(tg_tensor *out, tg_tensor *const *in, int n, void *u) {
    (void)n, (void)u;
    for (int64_t i = 0; i < tg_tensor_numel(out); i++)
        tg_tensor_set(out, i, tg_tensor_get(in[0], i) * tg_tensor_get(in[0], i));
    return TG_OK;
}
static void sq_bwd_buggy(const tg_tensor *out, const tg_tensor *dout, tg_tensor *const *in,
                         tg_tensor *const *din, int n, void *u) {
    (void)out, (void)n, (void)u;
    if (!din[0])
        return;
    for (int64_t i = 0; i < tg_tensor_numel(dout); i++)
        tg_tensor_set(din[0], i,
                      tg_tensor_get(din[0], i) + tg_tensor_get(dout, i) * tg_tensor_get(in[0], i));
}
static const tg_custom_op buggy_square = {"buggy_square", sq_fwd, sq_bwd_buggy};

/* h = probe(3 x), L = sum(buggy_square(h)). */
static tg_tensor *buggy_loss(tg_tape *t, tg_tensor *const *in, int n, tg_dtype dt, tg_probes *p,
                             void *u) {
    (void)n, (void)dt, (void)u;
    tg_tensor *h = tg_probe(p, t, tg_scale(t, in[0], 3.0), "h");
    return tg_sum(t,
                  tg_custom(t, &buggy_square, NULL, &h, 1, tg_tensor_rank(h), tg_tensor_shape(h)));
}

Test(intermediates, the_referee_catches_a_wrong_backward) {
    const double x[2] = {0.5, -1.0};
    tg_tensor *in[1] = {vec("x", 2, x)};
    const double dh_autodiff[2] = {1.5, -3.0}; /* what the buggy backward gives: h, not 2h */
    tg_tensor *g = vec("g", 2, dh_autodiff);
    tg_node_grad mine[1] = {{"h", g}};
    tg_intermediates_report *r = run(buggy_loss, in, 1, mine, 1);
    cr_expect_not(r->passed, "autodiff disagrees with finite differences");
    cr_expect_eq(r->nodes[0].verdict, TG_NODE_EXACT, "yours equals (the wrong) autodiff");
    cr_expect_eq(r->nodes[0].n_fd_disagree, 2);
    cr_expect_eq(r->nodes[0].check.elements[1].disagree, TG_GC_AUTODIFF_VS_FD);
    cr_expect_float_eq(r->nodes[0].check.elements[1].fd, -6.0, 1e-7);
    cr_expect_eq(r->first_wrong, -1);
    tg_intermediates_report_free(r);
    tg_tensor_free(g), tg_tensor_free(in[0]);
}

/* r = probe(relu(x)) at an x with a 0: L = sum(c * relu(v)), v = probe(x - 1). */
static tg_tensor *relu_loss(tg_tape *t, tg_tensor *const *in, int n, tg_dtype dt, tg_probes *p,
                            void *u) {
    (void)n, (void)dt, (void)u;
    tg_tensor *v = tg_probe(p, t, tg_add_scalar(t, in[0], -1.0), "v");
    return tg_sum(t, tg_mul(t, in[1], tg_relu(t, v)));
}

Test(intermediates, a_kink_at_a_probed_node_is_reported_not_judged) {
    const double x[3] = {1.0, 2.0, 0.0}, c[3] = {2.0, 3.0, 4.0};
    tg_tensor *in[2] = {vec("x", 3, x), vec("c", 3, c)};
    const double dv[3] = {0.0, 3.0, 0.0}; /* relu' = 0 at 0 (tapegrad's subgradient) and below */
    tg_tensor *g = vec("g", 3, dv);
    tg_node_grad mine[1] = {{"v", g}};
    tg_intermediates_report *r = run(relu_loss, in, 2, mine, 1);
    cr_expect(r->passed);
    cr_expect_eq(r->nodes[0].check.n_kink, 1);
    cr_expect_eq(r->nodes[0].check.elements[0].status, TG_GC_KINK);
    cr_expect_eq(r->nodes[0].check.n_ok, 2);
    tg_intermediates_report_free(r);
    tg_tensor_free(g), tg_tensor_free(in[0]), tg_tensor_free(in[1]);
}

Test(intermediates, probe_outside_a_check_names_and_records_nothing) {
    tg_tape *t = tg_tape_new();
    tg_tensor *x = vec("x", 4, X4), *c = vec("c", 4, C4);
    tg_tensor *in[2] = {x, c};
    tg_tensor *loss = tanh_loss(t, in, 2, TG_F64, NULL, NULL);
    cr_assert(loss, "%s", tg_tape_errmsg(t));
    cr_expect_eq(tg_tape_size(t), 3, "tanh, mul, sum: no probe node");
    cr_expect_str_eq(tg_tensor_name(tg_tape_node(t, 0)), "t");
    cr_expect_str_eq(tg_tensor_op_name(tg_tape_node(t, 0)), "tanh");
    cr_expect_null(tg_probe(NULL, t, NULL, "y"));
    tg_tape_free(t);
    tg_tensor_free(x), tg_tensor_free(c);
}

/* ---- Usage errors: exact messages ------------------------------------------------------------ */

static tg_tensor *twice_loss(tg_tape *t, tg_tensor *const *in, int n, tg_dtype dt, tg_probes *p,
                             void *u) {
    (void)n, (void)dt, (void)u;
    tg_tensor *a = tg_probe(p, t, tg_tanh(t, in[0]), "t");
    tg_tensor *b = tg_probe(p, t, tg_exp(t, a), "t");
    return tg_sum(t, b);
}

static tg_tensor *two_named_loss(tg_tape *t, tg_tensor *const *in, int n, tg_dtype dt, tg_probes *p,
                                 void *u) {
    (void)n, (void)dt, (void)p, (void)u;
    tg_tensor *a = tg_tanh(t, in[0]);
    tg_tensor *b = tg_exp(t, a);
    tg_tensor_set_name(a, "z");
    tg_tensor_set_name(b, "z");
    return tg_sum(t, b);
}

static int calls;
static tg_tensor *fickle_loss(tg_tape *t, tg_tensor *const *in, int n, tg_dtype dt, tg_probes *p,
                              void *u) {
    (void)n, (void)dt, (void)u;
    tg_tensor *a = tg_tanh(t, in[0]);
    if (calls++ == 0)
        a = tg_probe(p, t, a, "t");
    return tg_sum(t, a);
}

static tg_tensor *failing_loss(tg_tape *t, tg_tensor *const *in, int n, tg_dtype dt, tg_probes *p,
                               void *u) {
    (void)n, (void)dt, (void)p, (void)u;
    return tg_sum(t, tg_matmul(t, in[0], in[0]));
}

static tg_tensor *vector_loss(tg_tape *t, tg_tensor *const *in, int n, tg_dtype dt, tg_probes *p,
                              void *u) {
    (void)n, (void)dt, (void)p, (void)u;
    return tg_tanh(t, in[0]);
}

#define EXPECT_ERR(call, msg)                                                                      \
    do {                                                                                           \
        cr_expect_null(call);                                                                      \
        cr_expect_str_eq(tg_last_errmsg(), msg);                                                   \
    } while (0)

Test(intermediates, usage_errors_name_the_problem) {
    tg_tensor *x = vec("x", 4, X4), *c = vec("c", 4, C4);
    tg_tensor *in[2] = {x, c}, *in_null[2] = {x, NULL};
    tg_tensor *g4 = vec("g", 4, C4);
    tg_tensor *g3 = vec("g3", 3, C4);
    tg_tensor *gi = tg_tensor_new(TG_I32, TG_SHAPE(4));
    tg_node_grad ok[1] = {{"t", g4}};

    EXPECT_ERR(tg_check_intermediates(NULL, in, 2, NULL, ok, 1, NULL),
               "tg_check_intermediates: the function f is NULL");
    EXPECT_ERR(tg_check_intermediates(tanh_loss, NULL, 2, NULL, ok, 1, NULL),
               "tg_check_intermediates: no inputs (inputs NULL, n_inputs 2)");
    EXPECT_ERR(tg_check_intermediates(tanh_loss, in_null, 2, NULL, ok, 1, NULL),
               "tg_check_intermediates: input 1 is NULL");
    EXPECT_ERR(tg_check_intermediates(tanh_loss, in, 2, NULL, NULL, 1, NULL),
               "tg_check_intermediates: no gradients to check (yours NULL, n_yours 1)");
    EXPECT_ERR(tg_check_intermediates(tanh_loss, in, 2, NULL, ok, 0, NULL),
               "tg_check_intermediates: no gradients to check (yours given, n_yours 0)");
    tg_node_grad unnamed[1] = {{NULL, g4}};
    EXPECT_ERR(tg_check_intermediates(tanh_loss, in, 2, NULL, unnamed, 1, NULL),
               "tg_check_intermediates: gradient 0 has no name");
    tg_node_grad long_name[1] = {{"a_name_much_longer_than_31_bytes_!", g4}};
    EXPECT_ERR(tg_check_intermediates(tanh_loss, in, 2, NULL, long_name, 1, NULL),
               "tg_check_intermediates: gradient 0: the name 'a_name_much_longer_than_31_bytes_!' "
               "is longer than the 31 bytes a tensor's name keeps");
    tg_node_grad null_grad[1] = {{"t", NULL}};
    EXPECT_ERR(tg_check_intermediates(tanh_loss, in, 2, NULL, null_grad, 1, NULL),
               "tg_check_intermediates: gradient 0 ('t') is NULL");
    tg_node_grad int_grad[1] = {{"t", gi}};
    EXPECT_ERR(tg_check_intermediates(tanh_loss, in, 2, NULL, int_grad, 1, NULL),
               "tg_check_intermediates: your gradient for 't' is i32; it must be f32 or f64");
    tg_node_grad dup[2] = {{"t", g4}, {"t", g4}};
    EXPECT_ERR(tg_check_intermediates(tanh_loss, in, 2, NULL, dup, 2, NULL),
               "tg_check_intermediates: the name 't' is given twice (gradients 0 and 1)");
    tg_node_grad missing[1] = {{"h~", g4}};
    EXPECT_ERR(tg_check_intermediates(tanh_loss, in, 2, NULL, missing, 1, NULL),
               "tg_check_intermediates: no probe, node or input is named 'h~' (named on the tape: "
               "t; inputs: x, c)");
    tg_node_grad shape[1] = {{"t", g3}};
    EXPECT_ERR(tg_check_intermediates(tanh_loss, in, 2, NULL, shape, 1, NULL),
               "tg_check_intermediates: your gradient for 't' has shape [3], the node has shape "
               "[4]");
    tg_node_grad shape_in[1] = {{"c", g3}};
    EXPECT_ERR(tg_check_intermediates(tanh_loss, in, 2, NULL, shape_in, 1, NULL),
               "tg_check_intermediates: your gradient for 'c' has shape [3], the input has shape "
               "[4]");
    EXPECT_ERR(tg_check_intermediates(twice_loss, in, 2, NULL, ok, 1, NULL),
               "tg_check_intermediates: 't' is probed twice in one build of the loss; probe each "
               "value once");
    tg_node_grad z[1] = {{"z", g4}};
    EXPECT_ERR(tg_check_intermediates(two_named_loss, in, 2, NULL, z, 1, NULL),
               "tg_check_intermediates: the name 'z' is on 2 nodes of the tape (0 and 1); name "
               "one only, or pass it through tg_probe");
    calls = 0;
    EXPECT_ERR(tg_check_intermediates(fickle_loss, in, 2, NULL, ok, 1, NULL),
               "tg_check_intermediates: the function did not probe 't' when called again; it "
               "must compute the same function every time");
    EXPECT_ERR(tg_check_intermediates(vector_loss, in, 2, NULL, ok, 1, NULL),
               "tg_check_intermediates: the function returned a tensor of shape [4]; it must "
               "return one element (a loss)");
    cr_expect_null(tg_check_intermediates(failing_loss, in, 2, NULL, ok, 1, NULL));
    cr_expect(strstr(tg_last_errmsg(), "tg_check_intermediates: the function failed to build its "
                                       "loss: test_intermediates.c:"),
              "%s", tg_last_errmsg());
    cr_expect(strstr(tg_last_errmsg(), "tg_matmul: "), "%s", tg_last_errmsg());
    tg_gradcheck_opts o = tg_gradcheck_defaults();
    o.atol = -1;
    EXPECT_ERR(tg_check_intermediates(tanh_loss, in, 2, NULL, ok, 1, &o),
               "tg_check_intermediates: bad options: eps 1e-06 must be > 0, atol -1 and rtol "
               "0.001 must be >= 0");
    tg_intermediates_print(NULL, stdout); /* harmless */
    tg_intermediates_report_free(NULL);
    tg_tensor_free(x), tg_tensor_free(c), tg_tensor_free(g4), tg_tensor_free(g3);
    tg_tensor_free(gi);
}
