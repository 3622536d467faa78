/* op_catalog.h -- the test catalog: for every op, how to call it and on which inputs, in one
 * table (tests/op_catalog.c). test_ops_grad checks every case against finite differences,
 * test_gradcheck runs every op through tg_gradcheck, and test_table fails when an op of the
 * library's table (made from the files in ops/) has no entry here.
 *
 * Adding an op to tapegrad: ops/<op>.c, its declaration in include/tapegrad.h, and one entry
 * here (a BUILD line, its cases, a row of cat_entries). */
#ifndef TG_TEST_OP_CATALOG_H
#define TG_TEST_OP_CATALOG_H

#include "tapegrad.h"

#include <stdbool.h>

/* How one input of a case is made (always float64, except indices). */
typedef enum cat_kind {
    CAT_REAL,      /* uniform in [lo, hi), requires a gradient */
    CAT_AWAY0,     /* |x| uniform in [lo, hi) with a random sign (ops with a kink or pole at 0) */
    CAT_PROB_ROWS, /* positive rows along the last axis that sum to 1, requires a gradient */
    CAT_INDEX,     /* i32 integers uniform in [0, hi) (class indices, embedding ids) */
    CAT_CONST      /* uniform in [lo, hi), needs no gradient (data) */
} cat_kind;

typedef struct cat_input {
    int rank;
    int64_t shape[TG_MAX_RANK];
    cat_kind kind;
    double lo, hi;
} cat_input;

#define CAT_MAX_INPUTS 6

/* One application of an op: its inputs and the extra arguments its builder reads. */
typedef struct cat_case {
    const char *what; /* names the case in messages */
    int n_inputs;
    cat_input in[CAT_MAX_INPUTS];
    int iarg[8];    /* integer arguments (axis, keepdims, a shape, ...) */
    double darg[4]; /* real arguments (a scalar, eps, ...) */
} cat_case;

typedef tg_tensor *(*cat_build_fn)(tg_tape *t, tg_tensor *const *in, const cat_case *c);

typedef struct cat_entry {
    const char *op; /* the descriptor's name (the file ops/<op>.c) */
    cat_build_fn build;
    const cat_case *cases;
    int n_cases;
    /* the op has a kink where finite differences cannot judge; its cases keep away from it */
    bool has_kink;
    /* the op's output is an integer (argmax): no gradient to check, its values are checked by
     * hand (test_seqops.c); test_table requires the output to be an integer */
    bool no_grad;
} cat_entry;

extern const cat_entry cat_entries[];
extern const int cat_n_entries;

/* The entry of op `name`, or NULL. */
const cat_entry *cat_find(const char *name);

/* Makes the inputs of case c into in[0..c->n_inputs) (caller frees each with tg_tensor_free). */
void cat_make_inputs(const cat_case *c, tg_rng *rng, tg_tensor **in);

/* The custom square op's forward (f64), for tests that pair it with a deliberately wrong backward. */
tg_status test_square_forward(tg_tensor *out, tg_tensor *const *in, int n, void *user);

#endif
