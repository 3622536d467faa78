/* Issue 12: what the builder-API fuzzer (tests/fuzz/fuzz_api.c) found. Each test fails on the
 * code before its fix. */
#include "tapegrad.h"

#include <criterion/criterion.h>
#include <stdint.h>
#include <string.h>

/* ---- A size 0 beside a huge size: the strides overflowed (UBSan in tg__bcast_init) ---------
 * Shapes such as [0, INT64_MAX, 3] have no elements, so the old bound on the element count let
 * them through; the row-major strides of such a tensor (3 * INT64_MAX) overflow in every
 * broadcasting op, and a reduction over the 0 axis asked for INT64_MAX / 32 elements. The bound
 * is now on the product of the nonzero sizes. */

Test(fuzz_regressions, leaf_with_a_zero_and_a_huge_size_is_refused) {
    const int64_t shapes[][3] = {{0, INT64_MAX, 3}, {INT64_MAX, 0, 1}, {0, INT64_MAX / 32, 64}};
    for (int k = 0; k < 3; k++) {
        tg_tensor *x = tg_tensor_new(TG_F32, 3, shapes[k]);
        cr_expect_null(x, "shape %d was accepted", k);
        cr_expect_str_eq(tg_last_errmsg(), "tg_tensor_new: too many elements");
        tg_tensor_free(x);
    }
    /* Sizes 0 are still fine beside reasonable ones. */
    tg_tensor *z = tg_tensor_new(TG_F32, TG_SHAPE(0, 1000, 3));
    cr_assert_not_null(z, "%s", tg_last_errmsg());
    cr_expect_eq(tg_tensor_numel(z), 0);
    tg_tape *t = tg_tape_new();
    tg_tensor *y = tg_add(t, z, z);
    cr_assert_not_null(y, "%s", tg_tape_errmsg(t));
    cr_expect_eq(tg_tensor_dim(y, 1), 1000);
    tg_tape_free(t);
    tg_tensor_free(z);
}

Test(fuzz_regressions, reshape_to_a_zero_and_a_huge_size_is_refused) {
    tg_tensor *x = tg_tensor_new(TG_F64, TG_SHAPE(0));
    tg_tape *t = tg_tape_new();
    const int64_t shape[] = {0, (int64_t)1 << 62};
    cr_expect_null(tg_reshape(t, x, 2, shape));
    cr_expect_eq(tg_tape_status(t), TG_ERR_VALUE);
    cr_expect(strstr(tg_tape_errmsg(t), "tg_reshape: too many elements (axis 1 has size "
                                        "4611686018427387904)") != NULL,
              "%s", tg_tape_errmsg(t));
    tg_tape_free(t);
    tg_tensor_free(x);
}

static tg_status zero_forward(tg_tensor *out, tg_tensor *const *in, int n, void *user) {
    (void)out;
    (void)in;
    (void)n;
    (void)user;
    return TG_OK;
}
static void zero_backward(const tg_tensor *out, const tg_tensor *dout, tg_tensor *const *in,
                          tg_tensor *const *din, int n, void *user) {
    (void)out;
    (void)dout;
    (void)in;
    (void)din;
    (void)n;
    (void)user;
}
static const tg_custom_op zero_op = {"zero", zero_forward, zero_backward};

Test(fuzz_regressions, custom_output_with_a_zero_and_a_huge_size_is_refused) {
    tg_tensor *x = tg_tensor_ones(TG_F32, TG_SHAPE(2));
    tg_tape *t = tg_tape_new();
    cr_expect_null(tg_custom(t, &zero_op, NULL, &x, 1, TG_SHAPE(0, INT64_MAX / 32, 64)));
    cr_expect_eq(tg_tape_status(t), TG_ERR_VALUE);
    cr_expect(strstr(tg_tape_errmsg(t), "tg_custom(zero): output [0,288230376151711743,64] has "
                                        "too many elements") != NULL,
              "%s", tg_tape_errmsg(t));
    tg_tape_free(t);
    tg_tensor_free(x);
}
