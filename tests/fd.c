/* fd.c -- central differences in float64 against tg_backward. See fd.h. */
#include "fd.h"

#include <criterion/criterion.h>
#include <math.h>

/* L = sum(w * y): one forward pass on a fresh tape; w fixed by the caller. */
static double loss_value(fd_build_fn build, tg_tensor *const *inputs, void *ctx,
                         const tg_tensor *w) {
    tg_tape *t = tg_tape_new();
    tg_tensor *y = build(t, inputs, ctx);
    double L = NAN;
    if (y) {
        const double *py = tg_tensor_cdata(y), *pw = tg_tensor_cdata(w);
        L = 0;
        for (int64_t i = 0; i < tg_tensor_numel(y); i++)
            L += pw[i] * py[i];
    }
    tg_tape_free(t);
    return L;
}

int fd_check(const char *what, fd_build_fn build, tg_tensor *const *inputs, int n_inputs, void *ctx,
             const fd_opts *opts) {
    const double eps = opts && opts->eps > 0 ? opts->eps : 1e-6;
    const double atol = opts && opts->atol > 0 ? opts->atol : 1e-8;
    const double rtol = opts && opts->rtol > 0 ? opts->rtol : 1e-6;

    for (int i = 0; i < n_inputs; i++) {
        /* Inputs that need no gradient may be anything (class indices are i32). */
        cr_assert(!tg_tensor_requires_grad(inputs[i]) || tg_tensor_dtype(inputs[i]) == TG_F64,
                  "%s: input %d requires a gradient and must be f64", what, i);
        tg_tensor_zero_grad(inputs[i]);
    }

    /* Autodiff: L = sum(w * y) on the tape, so dL/dy = w is the seed. */
    tg_tape *t = tg_tape_new();
    tg_tensor *y = build(t, inputs, ctx);
    cr_assert(y, "%s: building the graph failed: %s", what, tg_tape_errmsg(t));
    tg_rng rng;
    tg_rng_seed(&rng, 12345);
    tg_tensor *w = tg_tensor_rand(TG_F64, tg_tensor_rank(y), tg_tensor_shape(y), -1, 1, &rng);
    tg_tensor *L = tg_sum(t, tg_mul(t, y, w));
    cr_assert_eq(tg_backward(t, L), TG_OK, "%s: backward failed: %s", what, tg_tape_errmsg(t));

    int bad = 0, checked = 0;
    for (int i = 0; i < n_inputs; i++) {
        tg_tensor *x = inputs[i];
        if (!tg_tensor_requires_grad(x))
            continue;
        const tg_tensor *g = tg_tensor_grad(x);
        cr_assert(g, "%s: input %d requires a gradient but got none", what, i);
        double *px = tg_tensor_data(x);
        const double *pg = tg_tensor_cdata(g);
        for (int64_t j = 0; j < tg_tensor_numel(x); j++) {
            const double saved = px[j];
            px[j] = saved + eps;
            const double Lp = loss_value(build, inputs, ctx, w);
            px[j] = saved - eps;
            const double Lm = loss_value(build, inputs, ctx, w);
            px[j] = saved;
            const double fd = (Lp - Lm) / (2 * eps);
            const double err = fabs(pg[j] - fd);
            checked++;
            if (!(err <= atol + rtol * fabs(fd))) {
                bad++;
                cr_expect(0,
                          "%s: input %d element %lld: autodiff %.12g, finite difference %.12g "
                          "(abs err %.3g)",
                          what, i, (long long)j, pg[j], fd, err);
            }
        }
    }
    cr_expect_gt(checked, 0, "%s: no input requires a gradient, nothing was checked", what);
    tg_tensor_free(w);
    tg_tape_free(t);
    return bad;
}

tg_tensor *fd_param(tg_rng *rng, int rank, const int64_t *shape, double lo, double hi) {
    tg_tensor *x = tg_tensor_rand(TG_F64, rank, shape, lo, hi, rng);
    cr_assert(x, "fd_param: %s", tg_last_errmsg());
    tg_tensor_set_requires_grad(x, 1);
    return x;
}

tg_tensor *fd_param_away_from_zero(tg_rng *rng, int rank, const int64_t *shape, double hi) {
    tg_tensor *x = fd_param(rng, rank, shape, 0.1, hi);
    double *p = tg_tensor_data(x);
    for (int64_t i = 0; i < tg_tensor_numel(x); i++)
        if (tg_rng_uniform(rng) < 0.5)
            p[i] = -p[i];
    return x;
}
