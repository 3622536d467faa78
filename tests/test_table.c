/* The op table is complete: every op has a name, a phrase for what it saves, a shape check, a
 * forward, a backward and a phrase for its backward rule (shown by the trace), and the names are
 * unique. */
#include "internal.h"

#include <criterion/criterion.h>

Test(op_table, every_op_is_complete) {
    cr_expect_null(tg_op_table[TG_OP_LEAF], "TG_OP_LEAF is not an op");
    for (int op = 1; op < TG_OP_COUNT; op++) {
        const tg_op_desc *d = tg_op_table[op];
        cr_assert_not_null(d, "op %d has no descriptor", op);
        cr_expect(d->name && d->name[0], "op %d has no name", op);
        cr_expect(d->saves && d->saves[0], "op %s does not say what it saves", d->name);
        cr_expect_not_null(d->shape, "op %s has no shape check", d->name);
        cr_expect_not_null(d->forward, "op %s has no forward", d->name);
        cr_expect_not_null(d->backward, "op %s has no backward", d->name);
        cr_expect(d->local && d->local[0], "op %s does not state its backward rule", d->name);
        for (int other = 1; other < op; other++)
            cr_expect_str_neq(d->name, tg_op_table[other]->name, "two ops are named %s", d->name);
    }
}

Test(op_table, names_match_the_file_list) {
#define TG_X_NAME(NAME, file) cr_expect_str_eq(tg_op_table[TG_OP_##NAME]->name, #file);
    TG_OP_LIST(TG_X_NAME)
#undef TG_X_NAME
}
