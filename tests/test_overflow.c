/* test_overflow.c -- shapes whose element count overflows int64_t are refused with an error, not
 * wrapped around into a small tensor that claims a huge shape (found while
 * triaging static-analysis output). */
#include <criterion/criterion.h>
#include <stdint.h>
#include <string.h>

#include "tapegrad.h"

/* (2^62 + 1) * 4 = 2^64 + 4: wraps to 4, the element count of the input. */
static const int64_t huge_by_4[2] = {((int64_t)1 << 62) + 1, 4};

Test(overflow, reshape_refuses_shape_whose_count_wraps) {
    tg_tensor *x = tg_tensor_ones(TG_F64, TG_SHAPE(4));
    tg_tape *t = tg_tape_new();
    cr_assert_null(tg_reshape(t, x, 2, huge_by_4));
    cr_assert_eq(tg_tape_status(t), TG_ERR_VALUE);
    cr_assert(strstr(tg_tape_errmsg(t), "tg_reshape") != NULL, "%s", tg_tape_errmsg(t));
    cr_assert(strstr(tg_tape_errmsg(t), "too many elements") != NULL, "%s", tg_tape_errmsg(t));
    tg_tape_free(t);
    tg_tensor_free(x);
}

static tg_status never_called(tg_tensor *out, tg_tensor *const *in, int n, void *user) {
    (void)out, (void)in, (void)n, (void)user;
    cr_assert_fail("forward must not run for an output that cannot be allocated");
    return TG_ERR_STATE;
}

static void no_backward(const tg_tensor *out, const tg_tensor *dout, tg_tensor *const *in,
                        tg_tensor *const *din, int n, void *user) {
    (void)out, (void)dout, (void)in, (void)din, (void)n, (void)user;
}

Test(overflow, custom_op_refuses_output_shape_whose_count_wraps) {
    static const tg_custom_op op = {"huge", never_called, no_backward};
    tg_tensor *x = tg_tensor_ones(TG_F64, TG_SHAPE(4));
    tg_tape *t = tg_tape_new();
    tg_tensor *in[1] = {x};
    cr_assert_null(tg_custom(t, &op, NULL, in, 1, 2, huge_by_4));
    cr_assert_eq(tg_tape_status(t), TG_ERR_VALUE);
    cr_assert(strstr(tg_tape_errmsg(t), "too many elements") != NULL, "%s", tg_tape_errmsg(t));
    tg_tape_free(t);
    tg_tensor_free(x);
}

Test(overflow, matmul_of_empty_operands_refuses_huge_output) {
    /* [2^40, 0] x [0, 2^40] is legal input (no elements) but its output has 2^80 elements. */
    const int64_t big = (int64_t)1 << 40;
    tg_tensor *a = tg_tensor_new(TG_F64, TG_SHAPE(big, 0));
    tg_tensor *b = tg_tensor_new(TG_F64, TG_SHAPE(0, big));
    cr_assert_not_null(a);
    cr_assert_not_null(b);
    tg_tape *t = tg_tape_new();
    cr_assert_null(tg_matmul(t, a, b));
    cr_assert_eq(tg_tape_status(t), TG_ERR_VALUE);
    cr_assert(strstr(tg_tape_errmsg(t), "tg_matmul") != NULL, "%s", tg_tape_errmsg(t));
    cr_assert(strstr(tg_tape_errmsg(t), "too many elements") != NULL, "%s", tg_tape_errmsg(t));
    tg_tape_free(t);
    tg_tensor_free(a);
    tg_tensor_free(b);
}

/* A file name longer than the tape's message buffer (any string can reach tg_*_at, and #line can
 * make __FILE__ anything) must be truncated, not written past the buffer. */
Test(overflow, error_message_with_long_file_name_is_truncated) {
    char name[1200];
    memset(name, 'f', sizeof name - 1);
    name[sizeof name - 1] = '\0';
    tg_tensor *a = tg_tensor_ones(TG_F64, TG_SHAPE(2, 3));
    tg_tape *t = tg_tape_new();
    cr_assert_null(tg_matmul_at(t, a, a, name, 7));
    cr_assert_eq(tg_tape_status(t), TG_ERR_SHAPE);
    const char *msg = tg_tape_errmsg(t);
    cr_assert_lt(strlen(msg), sizeof name - 1);
    cr_assert(strncmp(msg, "ffff", 4) == 0, "%s", msg);
    tg_tape_free(t);
    tg_tensor_free(a);
}
