/* op_table.c -- the one table of ops, indexed by tg_op. The list itself is TG_OP_LIST. */
#include "internal.h"

const tg_op_desc *const tg_op_table[TG_OP_COUNT] = {[TG_OP_LEAF] = NULL,
#define TG_X_ENTRY(NAME, file) [TG_OP_##NAME] = &tg_op_##file,
                                                    TG_OP_LIST(TG_X_ENTRY)
#undef TG_X_ENTRY
};

_Static_assert(sizeof tg_op_table / sizeof tg_op_table[0] == TG_OP_COUNT,
               "the op table must have one entry per op");
