/* The op table is complete: every op has a name, input counts, a phrase for what it saves, a
 * shape check, a forward, a backward and a phrase for its backward rule (shown by the trace);
 * elementwise ops state their local derivative; the names are unique; and every op has an entry
 * in the test catalog (tests/op_catalog.c), so none goes without a gradient test. */
#include "core/engine.h"
#include "op_catalog.h"

#include <criterion/criterion.h>

Test(op_table, every_op_is_complete) {
    cr_assert_gt(tg__op_count, 0);
    for (int op = 0; op < tg__op_count; op++) {
        const tg__op_desc *d = tg__op_table[op];
        cr_assert_not_null(d, "op %d has no descriptor", op);
        cr_expect(d->name && d->name[0], "op %d has no name", op);
        cr_expect(d->min_inputs >= 1 && d->max_inputs >= d->min_inputs,
                  "op %s: input counts %d..%d", d->name, d->min_inputs, d->max_inputs);
        cr_expect(d->saves && d->saves[0], "op %s does not say what it saves", d->name);
        cr_expect_not_null(d->shape, "op %s has no shape check", d->name);
        cr_expect_not_null(d->forward, "op %s has no forward", d->name);
        cr_expect_not_null(d->backward, "op %s has no backward", d->name);
        cr_expect(d->rule && d->rule[0], "op %s does not state its backward rule", d->name);
        if (d->flags & TG__OP_ELEMENTWISE)
            cr_expect(d->local && d->local[0] && d->max_inputs == 1,
                      "elementwise op %s: one input and a local derivative phrase", d->name);
        for (int other = 0; other < op; other++)
            cr_expect_str_neq(d->name, tg__op_table[other]->name, "two ops are named %s", d->name);
    }
}

Test(op_table, every_op_has_a_gradient_test) {
    for (int op = 0; op < tg__op_count; op++) {
        const char *name = tg__op_table[op]->name;
        const cat_entry *e = cat_find(name);
        cr_expect_not_null(e, "op %s has no entry in tests/op_catalog.c (no gradient test)", name);
        if (e)
            cr_expect_gt(e->n_cases, 0, "op %s has no test case", name);
    }
    /* and the catalog names no op the library lacks */
    for (int i = 0; i < cat_n_entries; i++) {
        bool found = false;
        for (int op = 0; op < tg__op_count; op++)
            found |= strcmp(tg__op_table[op]->name, cat_entries[i].op) == 0;
        cr_expect(found, "the test catalog has an entry for %s, which is not an op",
                  cat_entries[i].op);
    }
}

/* An entry marked no_grad skips the gradient tests, so it must be what the mark says: an op whose
 * output is an integer (which the engine gives no gradient), on every case; every other entry's
 * output is a float. */
Test(op_table, no_grad_entries_are_integer_outputs) {
    tg_rng rng;
    tg_rng_seed(&rng, 7);
    for (int i = 0; i < cat_n_entries; i++) {
        const cat_entry *e = &cat_entries[i];
        for (int k = 0; k < e->n_cases; k++) {
            tg_tensor *in[CAT_MAX_INPUTS] = {0};
            cat_make_inputs(&e->cases[k], &rng, in);
            tg_tape *t = tg_tape_new();
            tg_tensor *y = e->build(t, in, &e->cases[k]);
            cr_assert_not_null(y, "%s case %d: %s", e->op, k, tg_tape_errmsg(t));
            if (e->no_grad) {
                cr_expect_eq(tg_tensor_dtype(y), TG_I32,
                             "%s is marked no_grad but its output is %s", e->op,
                             tg__dtype_name(tg_tensor_dtype(y)));
                cr_expect_not(tg_tensor_requires_grad(y), "%s: an integer output needs no gradient",
                              e->op);
            } else {
                cr_expect_neq(tg_tensor_dtype(y), TG_I32,
                              "%s has an integer output: mark its catalog entry no_grad", e->op);
            }
            tg_tape_free(t);
            for (int j = 0; j < e->cases[k].n_inputs; j++)
                tg_tensor_free(in[j]);
        }
    }
}
