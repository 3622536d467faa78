/* Issue 15's training pieces: AdamW, gradient clipping by global norm, the warm-up + cosine
 * schedule and sampling, against values worked out by hand (and checked once against
 * torch.optim.AdamW and torch.nn.utils.clip_grad_norm_, whose printed values are quoted). */
#include "tapegrad.h"

#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

static tg_tensor *leaf(int n, const double *v) {
    tg_tensor *t = tg_tensor_from(TG_F64, 1, (const int64_t[]){n}, v);
    tg_tensor_set_requires_grad(t, 1);
    return t;
}

static void set_grad(tg_tensor *p, const double *g) {
    /* A gradient appears with the first backward; sum(p * g) gives exactly g. */
    tg_tensor_zero_grad(p);
    tg_tape *t = tg_tape_new();
    tg_tensor *c = tg_tensor_from(TG_F64, 1, (const int64_t[]){tg_tensor_numel(p)}, g);
    cr_assert_eq(tg_backward(t, tg_sum(t, tg_mul(t, p, c))), TG_OK);
    tg_tape_free(t);
    tg_tensor_free(c);
}

/* Step 1 by hand, p = 1, g = 0.5, lr 0.1, wd 0.1: p *= 1 - 0.01 -> 0.99; m = 0.05,
 * v = 0.00025; m^ = 0.5, v^ = 0.25; p -= 0.1 * 0.5 / (0.5 + 1e-8) -> 0.890000002.
 * Steps 2 and 3 continue the same way; torch.optim.AdamW prints the same values. */
Test(adamw, three_steps_as_torch) {
    tg_tensor *p = leaf(2, (double[]){1.0, -2.0});
    tg_optim_config c = tg_optim_defaults(TG_OPTIM_ADAMW, 0.1);
    cr_expect_eq(c.weight_decay, 0.01); /* torch's default */
    c.weight_decay = 0.1;
    tg_optim *o = tg_optim_new(&c, &p, 1);
    cr_assert_not_null(o, "%s", tg_last_errmsg());
    const double g[3][2] = {{0.5, 0.3}, {-0.25, 0.1}, {0.125, -0.7}};
    const double want[3][2] = {{0.99 - 0.1 * 0.5 / (0.5 + 1e-8), -2.079999996666667},
                               {0.8544662986878463, -2.146306387876138},
                               {0.8118787219097756, -2.0943163252691748}};
    for (int s = 0; s < 3; s++) {
        set_grad(p, g[s]);
        cr_assert_eq(tg_optim_step(o), TG_OK);
        for (int k = 0; k < 2; k++)
            cr_expect_float_eq(tg_tensor_get(p, k), want[s][k], 1e-14, "step %d element %d", s + 1,
                               k);
    }
    tg_optim_free(o);
    tg_tensor_free(p);
}

/* Decoupled decay differs from Adam's L2 penalty: with g = 0 AdamW only shrinks p by 1 - lr wd,
 * while Adam's g = wd p is normalised away into a full step of size lr. */
Test(adamw, decay_is_decoupled) {
    tg_tensor *p = leaf(1, (double[]){2.0}), *q = leaf(1, (double[]){2.0});
    tg_optim_config cw = tg_optim_defaults(TG_OPTIM_ADAMW, 0.1),
                    ca = tg_optim_defaults(TG_OPTIM_ADAM, 0.1);
    cw.weight_decay = ca.weight_decay = 0.5;
    tg_optim *ow = tg_optim_new(&cw, &p, 1), *oa = tg_optim_new(&ca, &q, 1);
    set_grad(p, (double[]){0.0});
    set_grad(q, (double[]){0.0});
    cr_assert_eq(tg_optim_step(ow), TG_OK);
    cr_assert_eq(tg_optim_step(oa), TG_OK);
    cr_expect_float_eq(tg_tensor_get(p, 0), 2.0 * (1 - 0.05), 1e-15);
    cr_expect_float_eq(tg_tensor_get(q, 0), 2.0 - 0.1 * 1.0 / (1.0 + 1e-8), 1e-15);
    tg_optim_free(ow);
    tg_optim_free(oa);
    tg_tensor_free(p);
    tg_tensor_free(q);
}

/* Gradients (3, 4) and (12): the global norm is 13. Clipped to 6.5 every entry is multiplied by
 * 6.5 / (13 + 1e-6): torch.nn.utils.clip_grad_norm_ prints 1.4999998846153937, ... */
Test(clip, global_norm_as_torch) {
    tg_tensor *a = leaf(2, (double[]){0, 0}), *b = leaf(1, (double[]){0}),
              *none = leaf(1, (double[]){0});
    set_grad(a, (double[]){3, 4});
    set_grad(b, (double[]){12});
    tg_tensor *ps[3] = {a, none, b}; /* `none` has no gradient: skipped */
    cr_expect_eq(tg_clip_grad_norm(ps, 3, 20.0), 13.0);
    cr_expect_eq(tg_tensor_get(tg_tensor_grad(a), 0), 3.0); /* below max_norm: untouched */
    cr_expect_eq(tg_clip_grad_norm(ps, 3, 6.5), 13.0);
    cr_expect_float_eq(tg_tensor_get(tg_tensor_grad(a), 0), 1.4999998846153937, 1e-15);
    cr_expect_float_eq(tg_tensor_get(tg_tensor_grad(a), 1), 1.9999998461538582, 1e-15);
    cr_expect_float_eq(tg_tensor_get(tg_tensor_grad(b), 0), 5.999999538461575, 1e-15);
    cr_expect_null(tg_tensor_grad(none));
    cr_expect_eq(tg_clip_grad_norm(ps, 3, 0.0), -1.0);
    cr_expect_str_eq(tg_last_errmsg(), "tg_clip_grad_norm: max_norm 0 must be positive and finite");
    cr_expect_eq(tg_clip_grad_norm(NULL, 3, 1.0), -1.0);
    cr_expect_str_eq(tg_last_errmsg(), "tg_clip_grad_norm: params is NULL");
    tg_tensor_free(a);
    tg_tensor_free(b);
    tg_tensor_free(none);
}

/* lr 1, warm-up 10, total 110, floor 0.1: step 0 -> 1/10; step 9 -> 1; step 60 is halfway down
 * the cosine -> 0.1 + 0.9/2 = 0.55; step 35 is a quarter -> 0.1 + 0.45 (1 + cos(pi/4)). */
Test(schedule, warmup_cosine_by_hand) {
    cr_expect_float_eq(tg_lr_warmup_cosine(0, 1.0, 10, 110, 0.1), 0.1, 1e-15);
    cr_expect_float_eq(tg_lr_warmup_cosine(4, 1.0, 10, 110, 0.1), 0.5, 1e-15);
    cr_expect_eq(tg_lr_warmup_cosine(9, 1.0, 10, 110, 0.1), 1.0);
    cr_expect_eq(tg_lr_warmup_cosine(10, 1.0, 10, 110, 0.1), 1.0);
    cr_expect_float_eq(tg_lr_warmup_cosine(35, 1.0, 10, 110, 0.1), 0.8681980515339464, 1e-15);
    cr_expect_float_eq(tg_lr_warmup_cosine(60, 1.0, 10, 110, 0.1), 0.55, 1e-15);
    cr_expect_eq(tg_lr_warmup_cosine(110, 1.0, 10, 110, 0.1), 0.1);
    cr_expect_eq(tg_lr_warmup_cosine(500, 1.0, 10, 110, 0.1), 0.1);
    cr_expect_eq(tg_lr_warmup_cosine(500, 1.0, 10, 0, 0.1), 1.0); /* no decay */
    cr_expect(isnan(tg_lr_warmup_cosine(0, 1.0, 10, 5, 0.1)));
    /* The optimizer follows it: tg_optim_lr is the rate of the next step. */
    tg_tensor *p = leaf(1, (double[]){1});
    tg_optim_config c = tg_optim_defaults(TG_OPTIM_SGD, 1.0);
    c.warmup_steps = 10;
    c.total_steps = 110;
    c.min_lr = 0.1;
    tg_optim *o = tg_optim_new(&c, &p, 1);
    cr_assert_not_null(o, "%s", tg_last_errmsg());
    set_grad(p, (double[]){1.0});
    cr_expect_float_eq(tg_optim_lr(o), 0.1, 1e-15);
    for (int s = 0; s < 60; s++)
        cr_assert_eq(tg_optim_step(o), TG_OK);
    cr_expect_float_eq(tg_optim_lr(o), 0.55, 1e-15);
    tg_optim_free(o);
    c.decay_every = 5;
    cr_expect_null(tg_optim_new(&c, &p, 1));
    cr_expect_str_eq(tg_last_errmsg(),
                     "tg_optim_new: decay_every and a warm-up/cosine schedule cannot be combined");
    c.decay_every = 0;
    c.min_lr = 2;
    cr_expect_null(tg_optim_new(&c, &p, 1));
    cr_expect_str_eq(tg_last_errmsg(), "tg_optim_new: min_lr 2 must be in [0, lr = 1]");
    tg_tensor_free(p);
}

/* Frequencies of 40000 draws within 5 standard deviations of the probabilities. */
static void expect_freq(const double *probs, int n, double temperature, const double *want) {
    tg_rng rng;
    tg_rng_seed(&rng, 42);
    int count[8] = {0};
    const int N = 40000;
    for (int k = 0; k < N; k++) {
        const int64_t i = tg_sample(probs, n, temperature, &rng);
        cr_assert(i >= 0 && i < n);
        count[i]++;
    }
    for (int i = 0; i < n; i++) {
        const double sd = sqrt(want[i] * (1 - want[i]) / N);
        cr_expect(fabs(count[i] / (double)N - want[i]) <= 5 * sd + 1e-12, "index %d: %g vs %g", i,
                  count[i] / (double)N, want[i]);
    }
}

Test(sample, frequencies_and_temperature) {
    expect_freq((double[]){0.2, 0.3, 0.5}, 3, 1.0, (double[]){0.2, 0.3, 0.5});
    expect_freq((double[]){2, 0, 6}, 3, 1.0, (double[]){0.25, 0, 0.75}); /* unnormalised */
    /* T = 0.5 squares the weights: 0.04 and 0.64 -> 1/17 and 16/17 */
    expect_freq((double[]){0.2, 0.8}, 2, 0.5, (double[]){1.0 / 17, 16.0 / 17});
    tg_rng rng;
    tg_rng_seed(&rng, 1);
    cr_expect_eq(tg_sample((double[]){0.2, 0.5, 0.3}, 3, 0.0, &rng), 1); /* greedy */
    cr_expect_eq(tg_sample((double[]){0, 1, 0}, 3, 1.0, &rng), 1);
}

Test(sample, seeded_and_logits) {
    tg_rng r1, r2;
    tg_rng_seed(&r1, 7);
    tg_rng_seed(&r2, 7);
    const double p[4] = {0.1, 0.2, 0.3, 0.4};
    for (int k = 0; k < 100; k++)
        cr_expect_eq(tg_sample(p, 4, 1.0, &r1), tg_sample(p, 4, 1.0, &r2));
    /* logits ln(1), ln(3) in row 1 of [2,2]: probabilities 1/4, 3/4 */
    tg_tensor *z = tg_tensor_from(TG_F64, TG_SHAPE(2, 2), (double[]){5, -5, 0, log(3.0)});
    int c1 = 0;
    const int N = 40000;
    for (int k = 0; k < N; k++)
        c1 += tg_sample_logits(z, 1, 1.0, &r1) == 1;
    cr_expect(fabs(c1 / (double)N - 0.75) < 5 * sqrt(0.75 * 0.25 / N));
    cr_expect_eq(tg_sample_logits(z, 0, 0.0, &r1), 0);
    cr_expect_eq(tg_sample_logits(z, 2, 1.0, &r1), -1);
    cr_expect_str_eq(tg_last_errmsg(), "tg_sample_logits: row 2 of logits [2,2] is out of range (2 "
                                       "rows of at most 4096 classes)");
    cr_expect_eq(tg_sample((double[]){0.5, -0.1}, 2, 1.0, &r1), -1);
    cr_expect_str_eq(tg_last_errmsg(),
                     "tg_sample: probs[1] is -0.1; weights must be >= 0 and finite");
    cr_expect_eq(tg_sample((double[]){0, 0}, 2, 1.0, &r1), -1);
    cr_expect_str_eq(tg_last_errmsg(), "tg_sample: all 2 weights are 0");
    tg_tensor_free(z);
}
