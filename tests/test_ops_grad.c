/* Gradient tests: every op's backward against central differences in float64, over every case
 * of the test catalog (tests/op_catalog.c: several shapes, size-1, broadcast and high-rank axes
 * included), plus the cases that need a test of their own. */
#include "fd.h"
#include "op_catalog.h"

#include <criterion/criterion.h>
#include <stdio.h>

typedef struct build_ctx {
    const cat_entry *e;
    const cat_case *c;
} build_ctx;

static tg_tensor *build(tg_tape *t, tg_tensor *const *in, void *vctx) {
    const build_ctx *b = vctx;
    return b->e->build(t, in, b->c);
}

/* Every case of one op; fails naming the op and the case. */
static void check_op(const cat_entry *e, uint64_t seed) {
    tg_rng rng;
    tg_rng_seed(&rng, seed);
    for (int k = 0; k < e->n_cases; k++) {
        const cat_case *c = &e->cases[k];
        tg_tensor *in[CAT_MAX_INPUTS] = {0};
        cat_make_inputs(c, &rng, in);
        build_ctx b = {e, c};
        char what[128];
        snprintf(what, sizeof what, "%s, case %d (%s)", e->op, k, c->what);
        fd_check(what, build, in, c->n_inputs, &b, NULL);
        for (int i = 0; i < c->n_inputs; i++)
            tg_tensor_free(in[i]);
    }
}

/* Every op in the catalog, each case (the catalog is checked complete by test_table). */
Test(grad, every_op_against_finite_differences) {
    for (int i = 0; i < cat_n_entries; i++)
        if (!cat_entries[i].no_grad) /* an integer output (argmax): test_seqops checks values */
            check_op(&cat_entries[i], 100 + (uint64_t)i);
}

/* Same input on both sides: the two contributions must add up. */
Test(grad, binary_same_input_twice) {
    tg_rng rng;
    tg_rng_seed(&rng, 2);
    const char *ops[] = {"add", "sub", "mul"};
    for (size_t k = 0; k < 3; k++) {
        build_ctx b = {cat_find(ops[k]), NULL};
        cr_assert_not_null(b.e);
        b.c = &b.e->cases[0];
        tg_tensor *x = fd_param(&rng, TG_SHAPE(2, 3), -1, 1);
        tg_tensor *in[2] = {x, x};
        fd_check("x op x", build, in, 2, &b, NULL);
        tg_tensor_free(x);
    }
}

/* At x = 0 relu's derivative is undefined; tapegrad takes the subgradient 0 (as PyTorch does). */
Test(grad, relu_kink_is_zero) {
    tg_tensor *x = tg_tensor_from(TG_F64, TG_SHAPE(3), (double[]){-1, 0, 2});
    tg_tensor_set_requires_grad(x, 1);
    tg_tape *t = tg_tape_new();
    cr_assert_eq(tg_backward(t, tg_sum(t, tg_relu(t, x))), TG_OK);
    const double *g = tg_tensor_cdata(tg_tensor_grad(x));
    cr_expect_eq(g[0], 0.0);
    cr_expect_eq(g[1], 0.0);
    cr_expect_eq(g[2], 1.0);
    tg_tape_free(t);
    tg_tensor_free(x);
}
