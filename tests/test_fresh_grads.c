/* First writer writes (src/core/engine.h): an op with TG__OP_WRITES_GRAD may be handed a
 * gradient that holds older bytes, and must then store every element instead of adding. The
 * finite-difference tests feed ops leaves, whose gradients are never fresh, so this test routes
 * every input through a node (x * 1, exact) first: the op's input gradients are then fresh, the
 * engine fills them with NaN before the backward (tg__tape_poison_fresh), and an element the
 * backward leaves unwritten reaches the leaf as NaN. Every case of the test catalog, in float64
 * and, where the op takes it, float32 (the float32 kernels have paths of their own), must give
 * the leaf gradients of the plain call exactly. */
#include "core/engine.h"
#include "op_catalog.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The inputs in dtype (indices stay i32), requires_grad as in `in`. */
static void convert_inputs(tg_tensor *const *in, int n, tg_dtype dtype, tg_tensor **out) {
    for (int i = 0; i < n; i++) {
        if (tg_tensor_dtype(in[i]) == TG_I32 || dtype == TG_F64) {
            out[i] = in[i];
            continue;
        }
        out[i] = tg_tensor_new(dtype, tg_tensor_rank(in[i]), tg_tensor_shape(in[i]));
        cr_assert_not_null(out[i]);
        for (int64_t k = 0; k < tg_tensor_numel(in[i]); k++)
            tg_tensor_set(out[i], k, tg_tensor_get(in[i], k));
        tg_tensor_set_requires_grad(out[i], tg_tensor_requires_grad(in[i]));
    }
}

/* Runs the op on in[] directly (through_node false) or on x * 1 for every float input that
 * requires a gradient, backward from `seed` (made on the first call from the output's shape),
 * and copies each such input's gradient into grads[i] (malloc'ed, numel doubles). Returns false
 * when the op refuses the inputs (a float64-only case run in float32). */
static bool run(const cat_entry *e, const cat_case *c, tg_tensor *const *in, bool through_node,
                tg_tensor **seed, tg_rng *rng, double **grads) {
    tg_tape *t = tg_tape_new();
    cr_assert_not_null(t);
    tg__tape_poison_fresh(t, through_node);
    tg_tensor *arg[CAT_MAX_INPUTS];
    for (int i = 0; i < c->n_inputs; i++) {
        tg_tensor_zero_grad(in[i]);
        arg[i] = in[i];
        if (through_node && tg_tensor_dtype(in[i]) != TG_I32 && tg_tensor_requires_grad(in[i]))
            arg[i] = tg_scale(t, in[i], 1.0);
    }
    tg_tensor *y = e->build(t, arg, c);
    if (!y || tg_tape_status(t) != TG_OK || tg_tensor_dtype(y) == TG_I32) {
        tg_tape_free(t);
        return false;
    }
    if (!*seed) {
        *seed = tg_tensor_new(tg_tensor_dtype(y), tg_tensor_rank(y), tg_tensor_shape(y));
        cr_assert_not_null(*seed);
        for (int64_t k = 0; k < tg_tensor_numel(y); k++)
            tg_tensor_set(*seed, k, 2 * tg_rng_uniform(rng) - 1);
    }
    cr_assert_eq(tg_backward_seed(t, y, *seed), TG_OK, "%s (%s): backward: %s", e->op, c->what,
                 tg_tape_errmsg(t));
    for (int i = 0; i < c->n_inputs; i++) {
        grads[i] = NULL;
        if (tg_tensor_dtype(in[i]) == TG_I32 || !tg_tensor_requires_grad(in[i]))
            continue;
        const tg_tensor *g = tg_tensor_grad(in[i]);
        const int64_t n = tg_tensor_numel(in[i]);
        grads[i] = calloc((size_t)n + 1, sizeof(double));
        cr_assert_not_null(grads[i]);
        for (int64_t k = 0; g && k < n; k++)
            grads[i][k] = tg_tensor_get(g, k);
    }
    tg_tape_free(t);
    return true;
}

static int check_entry(const cat_entry *e, tg_dtype dtype, uint64_t seed_value) {
    tg_rng rng;
    tg_rng_seed(&rng, seed_value);
    int checked = 0;
    for (int k = 0; k < e->n_cases; k++) {
        const cat_case *c = &e->cases[k];
        tg_tensor *in64[CAT_MAX_INPUTS] = {0}, *in[CAT_MAX_INPUTS] = {0};
        cat_make_inputs(c, &rng, in64);
        convert_inputs(in64, c->n_inputs, dtype, in);
        tg_tensor *seed = NULL;
        double *plain[CAT_MAX_INPUTS] = {0}, *fresh[CAT_MAX_INPUTS] = {0};
        if (run(e, c, in, false, &seed, &rng, plain)) {
            cr_assert(run(e, c, in, true, &seed, &rng, fresh), "%s (%s): refused through a node",
                      e->op, c->what);
            checked++;
            for (int i = 0; i < c->n_inputs; i++) {
                if (!plain[i])
                    continue;
                for (int64_t q = 0; q < tg_tensor_numel(in[i]); q++) {
                    const double a = plain[i][q], b = fresh[i][q];
                    cr_assert(a == b || (isnan(a) && isnan(b)),
                              "%s %s (%s): d input %d [%lld]: %.17g added, %.17g stored into a "
                              "fresh gradient",
                              e->op, dtype == TG_F32 ? "f32" : "f64", c->what, i, (long long)q, a,
                              b);
                }
                free(plain[i]);
                free(fresh[i]);
            }
        }
        tg_tensor_free(seed);
        for (int i = 0; i < c->n_inputs; i++) {
            if (in[i] != in64[i])
                tg_tensor_free(in[i]);
            tg_tensor_free(in64[i]);
        }
    }
    return checked;
}

Test(fresh_grads, every_op_stores_what_it_would_add_f64) {
    for (int i = 0; i < cat_n_entries; i++)
        if (!cat_entries[i].no_grad)
            cr_expect_gt(check_entry(&cat_entries[i], TG_F64, 500 + (uint64_t)i), 0,
                         "%s: no case ran", cat_entries[i].op);
}

/* The custom op's catalog entry is the test's own square op, written for float64 only
 * (test_square_forward reads doubles): it is left out of the float32 run. */
Test(fresh_grads, every_op_stores_what_it_would_add_f32) {
    for (int i = 0; i < cat_n_entries; i++)
        if (!cat_entries[i].no_grad && strcmp(cat_entries[i].op, "custom") != 0)
            (void)check_entry(&cat_entries[i], TG_F32, 900 + (uint64_t)i);
}

/* The engine hands a fresh gradient only where it may: not to an input that appears twice
 * (mul(x, x) adds two contributions into one gradient), and not while an observer watches. */
static tg_status count_events(const tg_event *ev, void *user) {
    (void)ev;
    ++*(int *)user;
    return TG_OK;
}

Test(fresh_grads, repeated_input_and_observers_accumulate) {
    tg_tensor *x = tg_tensor_from(TG_F64, TG_SHAPE(3), (double[]){1, -2, 3});
    tg_tensor_set_requires_grad(x, 1);
    for (int observed = 0; observed < 2; observed++) {
        tg_tape *t = tg_tape_new();
        int events = 0;
        if (observed)
            cr_assert_eq(tg_tape_observe(t, count_events, &events), TG_OK);
        tg__tape_poison_fresh(t, true);
        tg_tensor *h = tg_scale(t, x, 1.0);
        /* h used twice by one node, then again by another: d/dx sum(h*h + h) = 2x + 1 */
        tg_tensor *loss = tg_sum(t, tg_add(t, tg_mul(t, h, h), h));
        tg_tensor_zero_grad(x);
        cr_assert_eq(tg_backward(t, loss), TG_OK);
        const double *g = tg_tensor_cdata(tg_tensor_grad(x));
        cr_expect_eq(g[0], 3.0);
        cr_expect_eq(g[1], -3.0);
        cr_expect_eq(g[2], 7.0);
        cr_expect_eq(events > 0, observed == 1);
        tg_tape_free(t);
    }
    tg_tensor_free(x);
}

/* ---- Shared gradients (src/core/engine.h) ----
 * x = exp(a) feeds only y = x + w (w a leaf of y's shape): x's gradient is dy, and the engine
 * points it at y's memory instead of copying. Both must read dL/dy; a second pass that reaches y
 * but not x (a frozen) must leave x showing the first pass's values; with an observer nothing is
 * shared, and the numbers are the same. */
Test(fresh_grads, shared_gradient_reads_dy_and_survives_a_later_pass) {
    tg_tensor *a = tg_tensor_from(TG_F64, TG_SHAPE(2, 2), (double[]){0.5, -1, 2, 0});
    tg_tensor *w = tg_tensor_from(TG_F64, TG_SHAPE(2, 2), (double[]){1, 2, 3, 4});
    tg_tensor *c1 = tg_tensor_from(TG_F64, TG_SHAPE(2, 2), (double[]){3, -1, 0.25, 7});
    tg_tensor *c2 = tg_tensor_from(TG_F64, TG_SHAPE(2, 2), (double[]){-2, 5, 1, 0.5});
    tg_tensor_set_requires_grad(a, 1);
    tg_tensor_set_requires_grad(w, 1);
    for (int observed = 0; observed < 2; observed++) {
        tg_tape *t = tg_tape_new();
        int events = 0;
        if (observed)
            cr_assert_eq(tg_tape_observe(t, count_events, &events), TG_OK);
        tg_tensor_set_requires_grad(a, 1);
        tg_tensor_zero_grad(a);
        tg_tensor *x = tg_exp(t, a);
        tg_tensor *y = tg_add(t, x, w);
        tg_tensor *l1 = tg_sum(t, tg_mul(t, y, c1));
        cr_assert_eq(tg_backward(t, l1), TG_OK);
        const double *gx = tg_tensor_cdata(tg_tensor_grad(x));
        const double *gy = tg_tensor_cdata(tg_tensor_grad(y));
        cr_expect_eq(gx == gy, !observed, "shared only without an observer");
        for (int i = 0; i < 4; i++) {
            const double want = ((const double *)tg_tensor_cdata(c1))[i];
            cr_expect_eq(gx[i], want, "dL1/dx[%d] = %g, want %g", i, gx[i], want);
            cr_expect_eq(gy[i], want);
            const double ga = ((const double *)tg_tensor_cdata(tg_tensor_grad(a)))[i];
            const double ai = ((const double *)tg_tensor_cdata(a))[i];
            cr_expect_eq(ga, want * exp(ai), "dL1/da[%d]", i);
        }
        /* pass 2: a frozen, so x needs no gradient; y still does (w) and gets dL2/dy = c2 */
        tg_tensor_set_requires_grad(a, 0);
        tg_tensor *l2 = tg_sum(t, tg_mul(t, y, c2));
        cr_assert_eq(tg_backward(t, l2), TG_OK);
        gx = tg_tensor_cdata(tg_tensor_grad(x));
        gy = tg_tensor_cdata(tg_tensor_grad(y));
        cr_expect_neq(gx, gy, "the second pass gave x its own memory back");
        for (int i = 0; i < 4; i++) {
            cr_expect_eq(gy[i], ((const double *)tg_tensor_cdata(c2))[i]);
            cr_expect_eq(gx[i], ((const double *)tg_tensor_cdata(c1))[i],
                         "x keeps pass 1's gradient at %d: %g", i, gx[i]);
        }
        cr_expect_eq(events > 0, observed == 1);
        tg_tape_free(t);
    }
    tg_tensor_free(a), tg_tensor_free(w), tg_tensor_free(c1), tg_tensor_free(c2);
}

/* x feeds two nodes: no sharing, and dx is the sum of both contributions. */
Test(fresh_grads, two_senders_are_not_shared) {
    tg_tensor *a = tg_tensor_from(TG_F64, TG_SHAPE(3), (double[]){1, 2, 3});
    tg_tensor_set_requires_grad(a, 1);
    tg_tape *t = tg_tape_new();
    tg_tensor *x = tg_scale(t, a, 2.0);
    tg_tensor *y = tg_reshape(t, x, TG_SHAPE(3, 1));
    tg_tensor *l = tg_add(t, tg_sum(t, y), tg_sum(t, tg_mul(t, x, x))); /* d/dx = 1 + 2x */
    cr_assert_eq(tg_backward(t, l), TG_OK);
    const double *gx = tg_tensor_cdata(tg_tensor_grad(x));
    cr_expect_neq(gx, tg_tensor_cdata(tg_tensor_grad(y)));
    for (int i = 0; i < 3; i++)
        cr_expect_eq(gx[i], 1 + 2 * 2.0 * (i + 1), "dl/dx[%d] = %g", i, gx[i]);
    tg_tape_free(t);
    tg_tensor_free(a);
}
