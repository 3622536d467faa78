/* op_catalog.h -- every built-in op behind one switch, for the tests that loop over the ops
 * (test_ops_grad.c against finite differences, test_gradcheck.c through tg_gradcheck).
 * Adding an op to tapegrad means adding it here once. */
#ifndef TG_TEST_OP_CATALOG_H
#define TG_TEST_OP_CATALOG_H

#include "tapegrad.h"

typedef enum {
    ADD,
    SUB,
    MUL,
    DIV,
    NEG,
    SCALE,      /* by -2.5 */
    ADD_SCALAR, /* + 0.75 */
    MATMUL,
    MATMUL_BT,
    TRANSPOSE,
    RESHAPE, /* to (rank, shape) */
    SUM,
    MEAN,
    SUM_AXIS, /* along axis, keepdims */
    MEAN_AXIS,
    EXP,
    LOG,
    TANH,
    SIGMOID,
    RELU,
    SOFTMAX,
    LOG_SOFTMAX,
    SCE,
    MSE,
    CUSTOM_SQUARE /* a custom op, y = x^2, with a correct hand-written backward */
} test_op;

/* One application of an op: which, and its extra arguments where it has any. */
typedef struct test_op_call {
    test_op op;
    int axis, keepdims; /* SUM_AXIS, MEAN_AXIS */
    int rank;           /* RESHAPE */
    int64_t shape[4];
} test_op_call;

/* Records c->op on t over in[0] (and in[1] for binary ops); NULL when the tape fails. */
tg_tensor *test_op_apply(tg_tape *t, const test_op_call *c, tg_tensor *const *in);

/* The custom square op's forward (f64), for tests that pair it with a deliberately wrong backward. */
tg_status test_square_forward(tg_tensor *out, tg_tensor *const *in, int n, void *user);

#endif
