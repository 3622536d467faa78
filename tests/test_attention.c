/* A whole pre-LayerNorm causal self-attention block passes tg_gradcheck in float64:
 *   h = layer_norm(x; w, b), q = h Wq, k = h Wk, v = h Wv        x [B,T,C], W* [C,C]
 *   per head (H heads of C/H): a = softmax_causal(q k^T / sqrt(C/H)), o = a v
 *   y = x + concat_heads(o) Wo;  loss = sum(y * r) with fixed weights r
 * once with tg_softmax_causal and once with the causal mask given as an i32 input
 * (tg_masked_fill(-inf) then tg_softmax); both must pass and agree. */
#include "tapegrad.h"

#include <criterion/criterion.h>
#include <math.h>

enum { B = 2, T = 4, C = 8, H = 2, HD = C / H };

/* inputs: x, ln_w, ln_b, Wq, Wk, Wv, Wo, r (weights of the loss), mask [T,T] (i32) */
static tg_tensor *block(tg_tape *t, tg_tensor *const *in, int n, tg_dtype dt, void *user) {
    (void)n;
    (void)dt;
    const int use_mask = *(const int *)user;
    tg_tensor *h = tg_layer_norm(t, in[0], in[1], in[2], 1, 1e-5);
    tg_tensor *qkv[3];
    for (int k = 0; k < 3; k++) /* [B,T,C] -> [B,H,T,HD] */
        qkv[k] = tg_permute(t, tg_reshape(t, tg_bmm(t, h, in[3 + k]), TG_SHAPE(B, T, H, HD)), 4,
                            ((int[]){0, 2, 1, 3}));
    tg_tensor *s = tg_scale(t, tg_matmul_batched(t, qkv[0], qkv[1], 0, 1), 1 / sqrt((double)HD));
    tg_tensor *a =
        use_mask ? tg_softmax(t, tg_masked_fill(t, s, in[8], -INFINITY)) : tg_softmax_causal(t, s);
    tg_tensor *o =
        tg_reshape(t, tg_transpose_axes(t, tg_bmm(t, a, qkv[2]), 1, 2), TG_SHAPE(B, T, C));
    tg_tensor *y = tg_add(t, in[0], tg_bmm(t, o, in[6]));
    return tg_sum(t, tg_mul(t, y, in[7]));
}

static void make_inputs(tg_tensor **in) {
    tg_rng rng;
    tg_rng_seed(&rng, 15);
    in[0] = tg_tensor_randn(TG_F64, TG_SHAPE(B, T, C), 0, 1, &rng);
    in[1] = tg_tensor_rand(TG_F64, TG_SHAPE(C), 0.5, 1.5, &rng);
    in[2] = tg_tensor_randn(TG_F64, TG_SHAPE(C), 0, 0.5, &rng);
    for (int k = 3; k < 7; k++)
        in[k] = tg_tensor_randn(TG_F64, TG_SHAPE(C, C), 0, 0.5, &rng);
    in[7] = tg_tensor_randn(TG_F64, TG_SHAPE(B, T, C), 0, 1, &rng);
    const char *names[] = {"x", "ln.w", "ln.b", "Wq", "Wk", "Wv", "Wo"};
    for (int k = 0; k < 7; k++) {
        tg_tensor_set_requires_grad(in[k], 1);
        tg_tensor_set_name(in[k], names[k]);
    }
    int32_t m[T * T];
    for (int i = 0; i < T; i++)
        for (int j = 0; j < T; j++)
            m[i * T + j] = j > i;
    in[8] = tg_tensor_from(TG_I32, TG_SHAPE(T, T), m);
}

Test(attention, block_passes_gradcheck_both_masks) {
    tg_tensor *in[9];
    make_inputs(in);
    double loss[2];
    for (int use_mask = 0; use_mask < 2; use_mask++) {
        tg_gradcheck_report *r = tg_gradcheck(block, in, 9, &use_mask, NULL);
        cr_assert_not_null(r, "%s", tg_last_errmsg());
        if (!r->passed)
            tg_gradcheck_print(r, stderr);
        cr_expect(r->passed, "%s", use_mask ? "masked_fill + softmax" : "softmax_causal");
        cr_expect_eq(r->n_tensors, 7);
        for (int k = 0; k < r->n_tensors; k++) {
            cr_expect_eq(r->tensors[k].n_mismatch, 0, "%s", r->tensors[k].name);
            cr_expect_eq(r->tensors[k].n_kink, 0, "%s", r->tensors[k].name);
            cr_log_info("%s: %s max abs err %.3g, max |autodiff - fd| %.3g",
                        use_mask ? "mask" : "causal", r->tensors[k].name, r->tensors[k].max_abs_err,
                        r->tensors[k].max_fd_err);
        }
        loss[use_mask] = r->loss;
        tg_gradcheck_report_free(r);
    }
    cr_expect_eq(loss[0], loss[1]); /* the two masks compute the same function, bit for bit */
    for (int k = 0; k < 9; k++)
        tg_tensor_free(in[k]);
}
