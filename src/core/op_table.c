/* op_table.c -- the one table of ops. The list is not kept by hand: CMake writes tg_op_list.h
 * from the files in ops/ (one op per file, the file's name is the op's), so adding an op is adding
 * its file. */
#include "engine.h"
#include "tg_op_list.h"

#define TG_X_DECL(file) extern const tg__op_desc tg__op_##file;
TG_OP_LIST(TG_X_DECL)
#undef TG_X_DECL

const tg__op_desc *const tg__op_table[] = {
#define TG_X_ENTRY(file) &tg__op_##file,
    TG_OP_LIST(TG_X_ENTRY)
#undef TG_X_ENTRY
};

const int tg__op_count = (int)(sizeof tg__op_table / sizeof tg__op_table[0]);
