/* Training: initializers, optimizers against hand-computed steps, datasets and mini-batches, the
 * linear layer, the circles dataset, the circles network's accuracy and bit-reproducibility. */
#include "core/engine.h"

#include <criterion/criterion.h>
#include <math.h>
#include <xxhash.h>

/* ---- Initializers ---- */

Test(init, zeros_and_constant) {
    tg_tensor *t = tg_tensor_ones(TG_F32, TG_SHAPE(2, 3));
    cr_assert_eq(tg_init_constant(t, -1.5), TG_OK);
    for (int i = 0; i < 6; i++)
        cr_assert_eq(tg_tensor_get(t, i), -1.5);
    cr_assert_eq(tg_init_zeros(t), TG_OK);
    for (int i = 0; i < 6; i++)
        cr_assert_eq(tg_tensor_get(t, i), 0.0);
    tg_tensor_free(t);
}

/* Each random initializer draws from the rng in row-major order: value i is the formula applied
 * to the i-th draw of a fresh rng with the same seed. */
Test(init, random_kinds_follow_the_rng_and_their_scale) {
    const double fi = 3, fo = 5;
    for (int kind = 0; kind < 6; kind++) {
        tg_tensor *w = tg_tensor_new(TG_F64, TG_SHAPE(5, 3));
        tg_rng rng, ref;
        tg_rng_seed(&rng, 42);
        tg_rng_seed(&ref, 42);
        tg_status s = TG_OK;
        switch (kind) {
        case 0: s = tg_init_uniform(w, -0.5, 2.0, &rng); break;
        case 1: s = tg_init_normal(w, 1.0, 0.25, &rng); break;
        case 2: s = tg_init_xavier_uniform(w, 3, 5, &rng); break;
        case 3: s = tg_init_xavier_normal(w, 3, 5, &rng); break;
        case 4: s = tg_init_he_uniform(w, 3, &rng); break;
        case 5: s = tg_init_he_normal(w, 3, &rng); break;
        }
        cr_assert_eq(s, TG_OK, "kind %d: %s", kind, tg_last_errmsg());
        for (int i = 0; i < 15; i++) {
            double want = 0;
            switch (kind) {
            case 0: want = -0.5 + 2.5 * tg_rng_uniform(&ref); break;
            case 1: want = 1.0 + 0.25 * tg_rng_normal(&ref); break;
            case 2: {
                double a = sqrt(6 / (fi + fo));
                want = -a + 2 * a * tg_rng_uniform(&ref);
                cr_assert(fabs(tg_tensor_get(w, i)) <= a);
                break;
            }
            case 3: want = sqrt(2 / (fi + fo)) * tg_rng_normal(&ref); break;
            case 4: {
                double a = sqrt(6 / fi);
                want = -a + 2 * a * tg_rng_uniform(&ref);
                cr_assert(fabs(tg_tensor_get(w, i)) <= a);
                break;
            }
            case 5: want = sqrt(2 / fi) * tg_rng_normal(&ref); break;
            }
            cr_assert_eq(tg_tensor_get(w, i), want, "kind %d element %d: %.17g vs %.17g", kind, i,
                         tg_tensor_get(w, i), want);
        }
        tg_tensor_free(w);
    }
}

Test(init, errors_name_the_function_and_the_problem) {
    tg_rng rng;
    tg_rng_seed(&rng, 1);
    tg_tensor *w = tg_tensor_new(TG_F32, TG_SHAPE(2, 2));
    tg_tensor *i32 = tg_tensor_new(TG_I32, TG_SHAPE(2));
    tg_tensor_set_name(i32, "labels");
    cr_assert_eq(tg_init_zeros(NULL), TG_ERR_NULL);
    cr_assert_str_eq(tg_last_errmsg(), "tg_init_zeros: tensor is NULL");
    cr_assert_eq(tg_init_normal(i32, 0, 1, &rng), TG_ERR_DTYPE);
    cr_assert_str_eq(tg_last_errmsg(),
                     "tg_init_normal: 'labels' is i32; initializers fill f32 or f64");
    cr_assert_eq(tg_init_xavier_uniform(w, 0, 4, &rng), TG_ERR_VALUE);
    cr_assert_str_eq(tg_last_errmsg(),
                     "tg_init_xavier_uniform: fan_in 0 and fan_out 4 must be >= 1");
    cr_assert_eq(tg_init_uniform(w, 1, 0, &rng), TG_ERR_VALUE);
    cr_assert_str_eq(tg_last_errmsg(), "tg_init_uniform: lo 1 is not <= hi 0");
    cr_assert_eq(tg_init_he_normal(w, 2, NULL), TG_ERR_NULL);
    cr_assert_str_eq(tg_last_errmsg(), "tg_init_he_normal: rng is NULL");
    tg_tensor_free(w);
    tg_tensor_free(i32);
}

/* ---- Optimizers: first steps against values worked out by hand ----
 * The loss is sum(p * c) for a constant c, so d loss / d p = c exactly: the test chooses the
 * gradient of each step. p starts at [1, -2]. */

typedef struct {
    tg_tensor *p, *c;
    tg_tape *tape;
} quad;

static quad quad_new(tg_dtype dtype) {
    quad q = {tg_tensor_from(dtype, TG_SHAPE(2),
                             dtype == TG_F64 ? (const void *)(const double[]){1.0, -2.0}
                                             : (const void *)(const float[]){1.0f, -2.0f}),
              tg_tensor_new(dtype, TG_SHAPE(2)), tg_tape_new()};
    tg_tensor_set_requires_grad(q.p, 1);
    tg_tensor_set_name(q.p, "p");
    return q;
}

static void quad_free(quad *q) {
    tg_tensor_free(q->p);
    tg_tensor_free(q->c);
    tg_tape_free(q->tape);
}

/* One training step with gradient (g0, g1). */
static void quad_step(quad *q, tg_optim *opt, double g0, double g1) {
    tg_tensor_set(q->c, 0, g0);
    tg_tensor_set(q->c, 1, g1);
    tg_tape_reset(q->tape);
    tg_optim_zero_grad(opt);
    tg_tensor *loss = tg_sum(q->tape, tg_mul(q->tape, q->p, q->c));
    cr_assert_eq(tg_backward(q->tape, loss), TG_OK, "%s", tg_tape_errmsg(q->tape));
    cr_assert_eq(tg_optim_step(opt), TG_OK, "%s", tg_last_errmsg());
}

static void expect_p(const quad *q, double p0, double p1, double tol, const char *what) {
    cr_expect(fabs(tg_tensor_get(q->p, 0) - p0) <= tol, "%s: p[0] = %.17g, want %.17g", what,
              tg_tensor_get(q->p, 0), p0);
    cr_expect(fabs(tg_tensor_get(q->p, 1) - p1) <= tol, "%s: p[1] = %.17g, want %.17g", what,
              tg_tensor_get(q->p, 1), p1);
}

Test(optim, sgd_by_hand) {
    quad q = quad_new(TG_F64);
    tg_optim_config cfg = tg_optim_defaults(TG_OPTIM_SGD, 0.1);
    tg_optim *opt = tg_optim_new(&cfg, &q.p, 1);
    cr_assert_not_null(opt, "%s", tg_last_errmsg());
    quad_step(&q, opt, 0.5, -1.0); /* p = [1 - 0.05, -2 + 0.1] */
    expect_p(&q, 0.95, -1.9, 1e-15, "sgd step 1");
    quad_step(&q, opt, -0.25, 2.0); /* p = [0.95 + 0.025, -1.9 - 0.2] */
    expect_p(&q, 0.975, -2.1, 1e-15, "sgd step 2");
    cr_expect_eq(tg_optim_steps(opt), 2);
    tg_optim_free(opt);
    quad_free(&q);
}

Test(optim, sgd_in_f32) {
    quad q = quad_new(TG_F32);
    tg_optim_config cfg = tg_optim_defaults(TG_OPTIM_SGD, 0.1);
    tg_optim *opt = tg_optim_new(&cfg, &q.p, 1);
    quad_step(&q, opt, 0.5, -1.0);
    expect_p(&q, 0.95, -1.9, 1e-7, "sgd f32 step 1");
    tg_optim_free(opt);
    quad_free(&q);
}

Test(optim, momentum_by_hand) {
    quad q = quad_new(TG_F64);
    tg_optim_config cfg = tg_optim_defaults(TG_OPTIM_MOMENTUM, 0.1); /* mu = 0.9 */
    tg_optim *opt = tg_optim_new(&cfg, &q.p, 1);
    /* Constant g = [0.5, -1]: v1 = g, v2 = 1.9 g, v3 = 2.71 g; p -= 0.1 v each step. */
    quad_step(&q, opt, 0.5, -1.0);
    expect_p(&q, 0.95, -1.9, 1e-15, "momentum step 1");
    quad_step(&q, opt, 0.5, -1.0);
    expect_p(&q, 0.855, -1.71, 1e-15, "momentum step 2");
    quad_step(&q, opt, 0.5, -1.0);
    expect_p(&q, 0.7195, -1.439, 1e-15, "momentum step 3");
    tg_optim_free(opt);
    quad_free(&q);
}

Test(optim, nesterov_by_hand) {
    quad q = quad_new(TG_F64);
    tg_optim_config cfg = tg_optim_defaults(TG_OPTIM_NESTEROV, 0.1);
    tg_optim *opt = tg_optim_new(&cfg, &q.p, 1);
    /* v1 = g, step g + 0.9 v1 = 1.9 g; v2 = 1.9 g, step g + 0.9 * 1.9 g = 2.71 g. */
    quad_step(&q, opt, 0.5, -1.0);
    expect_p(&q, 0.905, -1.81, 1e-15, "nesterov step 1");
    quad_step(&q, opt, 0.5, -1.0);
    expect_p(&q, 0.7695, -1.539, 1e-15, "nesterov step 2");
    tg_optim_free(opt);
    quad_free(&q);
}

Test(optim, adam_by_hand_with_bias_correction) {
    quad q = quad_new(TG_F64);
    tg_optim_config cfg = tg_optim_defaults(TG_OPTIM_ADAM, 0.1); /* b1 .9, b2 .999, eps 1e-8 */
    tg_optim *opt = tg_optim_new(&cfg, &q.p, 1);
    /* Step 1, g = [0.5, -1]: m = 0.1 g, v = 0.001 g^2; corrected mhat = g, vhat = g^2, so the
     * step is lr g / (|g| + eps): 0.1 * 0.5 / 0.50000001 = 0.099999998 and -0.099999999.
     * (Without the correction it would be 0.1 * 0.1 g / (sqrt(0.001) |g|) = 0.0316.) */
    quad_step(&q, opt, 0.5, -1.0);
    expect_p(&q, 0.900000002, -1.900000001, 1e-12, "adam step 1");
    /* Step 2, g = [-0.25, 2]:
     *   p[0]: m = 0.9*0.05 + 0.1*(-0.25) = 0.02;   v = 0.999*0.00025 + 0.001*0.0625 = 0.00031225
     *         mhat = 0.02 / (1 - 0.81) = 0.1052631579;  vhat = 0.00031225 / 0.001999 = 0.1562031016
     *         step = 0.1 * 0.1052631579 / (0.3952253808 + 1e-8) = 0.0266337033
     *   p[1]: m = 0.9*(-0.1) + 0.1*2 = 0.11;  v = 0.999*0.001 + 0.001*4 = 0.004999
     *         mhat = 0.11 / 0.19 = 0.5789473684;  vhat = 0.004999 / 0.001999 = 2.5007503752
     *         step = 0.1 * 0.5789473684 / (1.5813760387 + 1e-8) = 0.0366103525 */
    quad_step(&q, opt, -0.25, 2.0);
    expect_p(&q, 0.900000002 - 0.0266337032921536, -1.900000001 - 0.0366103524720748, 1e-12,
             "adam step 2");
    tg_optim_free(opt);
    quad_free(&q);
}

Test(optim, weight_decay_adds_to_the_gradient) {
    quad q = quad_new(TG_F64);
    tg_optim_config cfg = tg_optim_defaults(TG_OPTIM_SGD, 0.1);
    cfg.weight_decay = 0.01;
    tg_optim *opt = tg_optim_new(&cfg, &q.p, 1);
    /* g' = g + 0.01 p = [0.5 + 0.01, -1 - 0.02]; p -= 0.1 g' */
    quad_step(&q, opt, 0.5, -1.0);
    expect_p(&q, 0.949, -1.898, 1e-15, "weight decay");
    tg_optim_free(opt);
    quad_free(&q);
}

Test(optim, step_decay_of_the_learning_rate) {
    quad q = quad_new(TG_F64);
    tg_optim_config cfg = tg_optim_defaults(TG_OPTIM_SGD, 0.1);
    cfg.decay_every = 2;
    cfg.decay_factor = 0.5;
    tg_optim *opt = tg_optim_new(&cfg, &q.p, 1);
    const double lrs[5] = {0.1, 0.1, 0.05, 0.05, 0.025};
    for (int i = 0; i < 4; i++) {
        cr_expect_eq(tg_optim_lr(opt), lrs[i], "before step %d: lr %g", i + 1, tg_optim_lr(opt));
        quad_step(&q, opt, 1.0, 0.0);
    }
    cr_expect_eq(tg_optim_lr(opt), lrs[4]);
    expect_p(&q, 1 - 0.3, -2.0, 1e-15, "step decay"); /* 0.1 + 0.1 + 0.05 + 0.05 */
    tg_optim_free(opt);
    quad_free(&q);
}

Test(optim, skips_parameters_without_gradient_and_refuses_nan) {
    quad q = quad_new(TG_F64);
    tg_tensor *unused = tg_tensor_ones(TG_F64, TG_SHAPE(3));
    tg_tensor_set_requires_grad(unused, 1);
    tg_tensor *params[2] = {q.p, unused};
    tg_optim_config cfg = tg_optim_defaults(TG_OPTIM_ADAM, 0.1);
    tg_optim *opt = tg_optim_new(&cfg, params, 2);
    quad_step(&q, opt, 0.5, -1.0);
    cr_expect_null(tg_tensor_grad(unused));
    cr_expect_eq(tg_tensor_get(unused, 0), 1.0);

    tg_tensor_set(tg_tensor_grad(q.p), 1, NAN);
    double before = tg_tensor_get(q.p, 0);
    cr_expect_eq(tg_optim_step(opt), TG_ERR_NONFINITE);
    cr_expect_str_eq(tg_last_errmsg(), "tg_optim_step: the gradient of params[0] ('p') holds nan "
                                       "at element 1; no parameter was changed");
    cr_expect_eq(tg_tensor_get(q.p, 0), before);
    cr_expect_eq(tg_optim_steps(opt), 1);
    tg_optim_free(opt);
    tg_tensor_free(unused);
    quad_free(&q);
}

/* tg_optim_zero_grad zeroes every gradient whole, split over the threads when the parameters are
 * big (here 3 parameters, 140k elements, the split falling inside the second), and leaves a
 * parameter without a gradient without one. */
Test(optim, zero_grad_on_two_threads_zeroes_everything) {
    const int64_t sizes[3] = {50000, 70001, 20000};
    tg_tensor *p[4];
    for (int i = 0; i < 3; i++) {
        p[i] = tg_tensor_ones(TG_F32, TG_SHAPE(sizes[i]));
        tg_tensor_set_requires_grad(p[i], 1);
    }
    p[3] = tg_tensor_ones(TG_F32, TG_SHAPE(5)); /* never reached by a backward */
    tg_tensor_set_requires_grad(p[3], 1);
    tg_tape *t = tg_tape_new();
    tg_tensor *l = tg_add(t, tg_add(t, tg_sum(t, p[0]), tg_sum(t, p[1])), tg_sum(t, p[2]));
    cr_assert_eq(tg_backward(t, l), TG_OK, "%s", tg_tape_errmsg(t));
    tg_optim_config cfg = tg_optim_defaults(TG_OPTIM_SGD, 0.1);
    tg_optim *opt = tg_optim_new(&cfg, p, 4);
    cr_assert_not_null(opt, "%s", tg_last_errmsg());
    cr_assert_eq(tg_set_num_threads(2), TG_OK);
    tg_optim_zero_grad(opt);
    tg_set_num_threads(1);
    for (int i = 0; i < 3; i++) {
        const float *g = tg_tensor_cdata(tg_tensor_grad(p[i]));
        int64_t nonzero = 0;
        for (int64_t k = 0; k < sizes[i]; k++)
            nonzero += g[k] != 0;
        cr_expect_eq(nonzero, 0, "params[%d] has %lld nonzero gradients", i, (long long)nonzero);
    }
    cr_expect_null(tg_tensor_grad(p[3]));
    tg_optim_free(opt);
    tg_tape_free(t);
    for (int i = 0; i < 4; i++)
        tg_tensor_free(p[i]);
}

Test(optim, bad_arguments) {
    tg_tensor *p = tg_tensor_ones(TG_F64, TG_SHAPE(2));
    tg_tensor_set_name(p, "W");
    tg_optim_config cfg = tg_optim_defaults(TG_OPTIM_SGD, 0.1);
    cr_expect_null(tg_optim_new(&cfg, &p, 1));
    cr_expect_str_eq(tg_last_errmsg(), "tg_optim_new: params[0] ('W', f64) must be an f32/f64 "
                                       "leaf that requires a gradient");
    tg_tensor_set_requires_grad(p, 1);
    tg_tensor *twice[2] = {p, p};
    cr_expect_null(tg_optim_new(&cfg, twice, 2));
    cr_expect_str_eq(tg_last_errmsg(), "tg_optim_new: params[0] and params[1] are the same tensor "
                                       "'W'; it would be updated twice per step");
    cfg.lr = 0;
    cr_expect_null(tg_optim_new(&cfg, &p, 1));
    cr_expect_str_eq(tg_last_errmsg(), "tg_optim_new: lr 0 must be positive and finite");
    cfg = tg_optim_defaults(TG_OPTIM_MOMENTUM, 0.1);
    cfg.momentum = 1.0;
    cr_expect_null(tg_optim_new(&cfg, &p, 1));
    cr_expect_str_eq(tg_last_errmsg(), "tg_optim_new: momentum 1 is outside [0, 1)");
    cr_expect_null(tg_optim_new(NULL, &p, 1));
    cr_expect_eq(tg_optim_step(NULL), TG_ERR_NULL);
    tg_optim_zero_grad(NULL);
    tg_optim_free(NULL);
    tg_tensor_free(p);
}

/* ---- Datasets ---- */

/* inputs row i = [i, 10 i], targets i, for i < n. */
static void make_rows(int64_t n, tg_tensor **x, tg_tensor **y) {
    *x = tg_tensor_new(TG_F64, TG_SHAPE(n, 2));
    *y = tg_tensor_new(TG_I32, TG_SHAPE(n));
    for (int64_t i = 0; i < n; i++) {
        tg_tensor_set(*x, 2 * i, (double)i);
        tg_tensor_set(*x, 2 * i + 1, 10.0 * (double)i);
        tg_tensor_set(*y, i, (double)i);
    }
}

/* Runs one epoch; records the row order in `order` and checks batch sizes and pairing. */
static void one_epoch(tg_dataset *ds, int64_t n, int64_t batch, int64_t *order,
                      tg_tensor *seen_x[2]) {
    tg_tensor *bx, *by;
    int64_t k = 0, nb = 0;
    int r;
    while ((r = tg_dataset_next(ds, &bx, &by)) == 1) {
        int64_t rows = tg_tensor_dim(bx, 0);
        cr_assert_eq(rows, (k + batch <= n) ? batch : n - k);
        cr_assert_eq(tg_tensor_dim(by, 0), rows);
        cr_assert_eq(tg_tensor_dim(bx, 1), 2);
        /* No allocation per batch: the same two tensors come back every full batch. */
        if (rows == batch) {
            if (!seen_x[0])
                seen_x[0] = bx;
            cr_assert_eq(bx, seen_x[0]);
        }
        for (int64_t j = 0; j < rows; j++) {
            int64_t i = (int64_t)tg_tensor_get(by, j);
            cr_assert_eq(tg_tensor_get(bx, 2 * j), (double)i, "row %lld lost its target",
                         (long long)i);
            cr_assert_eq(tg_tensor_get(bx, 2 * j + 1), 10.0 * (double)i);
            order[k++] = i;
        }
        nb++;
    }
    cr_assert_eq(r, 0);
    cr_assert_eq(k, n);
    cr_assert_eq(nb, tg_dataset_n_batches(ds));
    /* Every row exactly once. */
    for (int64_t i = 0; i < n; i++) {
        int count = 0;
        for (int64_t j = 0; j < n; j++)
            count += order[j] == i;
        cr_assert_eq(count, 1, "row %lld seen %d times", (long long)i, count);
    }
}

Test(dataset, shuffled_epochs_visit_every_row_once_in_batches) {
    tg_tensor *x, *y;
    make_rows(7, &x, &y);
    tg_dataset *ds = tg_dataset_new(x, y, 3, 1, 99);
    cr_assert_not_null(ds, "%s", tg_last_errmsg());
    cr_expect_eq(tg_dataset_size(ds), 7);
    cr_expect_eq(tg_dataset_n_batches(ds), 3);
    int64_t e1[7], e2[7];
    tg_tensor *seen[2] = {NULL, NULL};
    one_epoch(ds, 7, 3, e1, seen);
    one_epoch(ds, 7, 3, e2, seen);
    cr_expect(memcmp(e1, e2, sizeof e1) != 0, "two epochs visited the rows in the same order");

    /* The same seed gives the same orders. */
    tg_dataset *again = tg_dataset_new(x, y, 3, 1, 99);
    int64_t f1[7];
    tg_tensor *seen2[2] = {NULL, NULL};
    one_epoch(again, 7, 3, f1, seen2);
    cr_expect(memcmp(e1, f1, sizeof e1) == 0);
    tg_dataset_free(again);
    tg_dataset_free(ds);
    tg_tensor_free(x);
    tg_tensor_free(y);
}

Test(dataset, unshuffled_is_in_order_and_full_batch_is_one_batch) {
    tg_tensor *x, *y;
    make_rows(5, &x, &y);
    tg_dataset *ds = tg_dataset_new(x, y, 2, 0, 1);
    int64_t order[5];
    tg_tensor *seen[2] = {NULL, NULL};
    one_epoch(ds, 5, 2, order, seen);
    for (int64_t i = 0; i < 5; i++)
        cr_expect_eq(order[i], i);
    tg_dataset_free(ds);
    ds = tg_dataset_new(x, y, 5, 1, 1);
    cr_expect_eq(tg_dataset_n_batches(ds), 1);
    tg_tensor *seen2[2] = {NULL, NULL};
    one_epoch(ds, 5, 5, order, seen2);
    tg_dataset_free(ds);
    tg_tensor_free(x);
    tg_tensor_free(y);
}

Test(dataset, bad_arguments) {
    tg_tensor *x, *y;
    make_rows(4, &x, &y);
    tg_tensor *y3 = tg_tensor_new(TG_I32, TG_SHAPE(3));
    cr_expect_null(tg_dataset_new(x, y3, 2, 1, 0));
    cr_expect_str_eq(tg_last_errmsg(), "tg_dataset_new: inputs [4,2] and targets [3] must have "
                                       "the same number of rows (axis 0)");
    cr_expect_null(tg_dataset_new(x, y, 5, 1, 0));
    cr_expect_str_eq(tg_last_errmsg(),
                     "tg_dataset_new: batch_size 5 must be in 1..4 (rows of [4,2])");
    cr_expect_null(tg_dataset_new(NULL, y, 2, 1, 0));
    cr_expect_str_eq(tg_last_errmsg(), "tg_dataset_new: inputs is NULL");
    tg_tensor *bx, *by;
    cr_expect_eq(tg_dataset_next(NULL, &bx, &by), TG_ERR_NULL);
    tg_dataset_free(NULL);
    tg_tensor_free(x);
    tg_tensor_free(y);
    tg_tensor_free(y3);
}

/* ---- Linear layer ---- */

Test(linear, records_exactly_matmul_bt_add) {
    tg_rng rng;
    tg_rng_seed(&rng, 3);
    tg_linear *l = tg_linear_new(TG_F64, 2, 3, "h", &rng);
    cr_assert_not_null(l, "%s", tg_last_errmsg());
    cr_expect_str_eq(tg_tensor_name(l->W), "h.W");
    cr_expect_str_eq(tg_tensor_name(l->b), "h.b");
    cr_expect_eq(tg_tensor_dim(l->W, 0), 3);
    cr_expect_eq(tg_tensor_dim(l->W, 1), 2);
    cr_expect_eq(tg_tensor_rank(l->b), 1);
    cr_expect(tg_tensor_requires_grad(l->W) && tg_tensor_requires_grad(l->b));
    double a = sqrt(6.0 / 5.0);
    for (int i = 0; i < 6; i++)
        cr_expect(fabs(tg_tensor_get(l->W, i)) <= a);
    tg_init_constant(l->b, 0.25);

    tg_tensor *x = tg_tensor_from(TG_F64, TG_SHAPE(2, 2), (const double[]){1, 2, -3, 0.5});
    tg_tape *t = tg_tape_new();
    tg_tensor *y = tg_linear_forward(t, l, x);
    cr_assert_not_null(y, "%s", tg_tape_errmsg(t));
    cr_expect_eq(tg_tape_size(t), 2);
    cr_expect_str_eq(tg_tensor_op_name(tg_tape_node(t, 0)), "matmul_bt");
    cr_expect_str_eq(tg_tensor_op_name(tg_tape_node(t, 1)), "add");
    cr_expect_str_eq(tg_tensor_src_file(y), "test_train.c");
    for (int n = 0; n < 2; n++)
        for (int o = 0; o < 3; o++) {
            double want = 0.25 + tg_tensor_get(l->W, o * 2) * tg_tensor_get(x, n * 2) +
                          tg_tensor_get(l->W, o * 2 + 1) * tg_tensor_get(x, n * 2 + 1);
            cr_expect(fabs(tg_tensor_get(y, n * 3 + o) - want) < 1e-15);
        }
    /* A wrong input width fails on the tape, naming the caller's line. */
    tg_tape_reset(t);
    tg_tensor *x3 = tg_tensor_new(TG_F64, TG_SHAPE(2, 3));
    cr_expect_null(tg_linear_forward(t, l, x3));
    cr_expect_eq(tg_tape_status(t), TG_ERR_SHAPE);
    cr_expect(strstr(tg_tape_errmsg(t), "test_train.c:") == tg_tape_errmsg(t), "%s",
              tg_tape_errmsg(t));
    cr_expect_null(tg_linear_new(TG_I32, 2, 3, NULL, &rng));
    cr_expect_str_eq(tg_last_errmsg(), "tg_linear_new: dtype must be f32 or f64, not i32");
    tg_tensor_free(x3);
    tg_tensor_free(x);
    tg_tape_free(t);
    tg_linear_free(l);
    tg_linear_free(NULL);
}

/* ---- Circles dataset and accuracy ---- */

Test(circles, labels_follow_the_circle_and_are_balanced) {
    tg_rng rng;
    tg_rng_seed(&rng, 5);
    tg_tensor *x, *y;
    cr_assert_eq(tg_circles_make(TG_F32, 4000, &rng, &x, &y), TG_OK, "%s", tg_last_errmsg());
    int64_t inside = 0;
    for (int64_t i = 0; i < 4000; i++) {
        double a = tg_tensor_get(x, 2 * i), b = tg_tensor_get(x, 2 * i + 1);
        cr_assert(a >= -1 && a < 1 && b >= -1 && b < 1);
        int want = a * a + b * b < 2 / 3.14159265358979323846;
        cr_assert_eq((int)tg_tensor_get(y, i), want, "point %lld (%g, %g)", (long long)i, a, b);
        inside += want;
    }
    /* Binomial(4000, 1/2): the standard deviation of the fraction is 0.8%; allow 5 of them. */
    cr_expect(inside > 1840 && inside < 2160, "%lld of 4000 inside", (long long)inside);
    tg_tensor_free(x);
    tg_tensor_free(y);
    cr_expect_eq(tg_circles_make(TG_F64, 0, &rng, &x, &y), TG_ERR_VALUE);
    cr_expect_null(x);
    cr_expect_str_eq(tg_last_errmsg(), "tg_circles_make: n is 0; need at least one point");
}

Test(circles, accuracy_counts_argmax_matches) {
    tg_tensor *logits =
        tg_tensor_from(TG_F64, TG_SHAPE(4, 2), (const double[]){0, 1, 2, -1, 0.5, 0.5, -3, -2});
    tg_tensor *labels = tg_tensor_from(TG_I32, TG_SHAPE(4), (const int32_t[]){1, 1, 0, 0});
    /* argmax rows: 1, 0, 0 (tie: first), 1 -> matches rows 0 and 2 */
    cr_expect_eq(tg_accuracy(logits, labels), 0.5);
    cr_expect_eq(tg_accuracy(logits, logits), -1.0);
    cr_expect_str_eq(tg_last_errmsg(), "tg_accuracy: need logits [N,C] (N >= 1) and i32 labels "
                                       "[N], got [4,2] and f64 [4,2]");
    tg_tensor_free(logits);
    tg_tensor_free(labels);
}

/* ---- The circles network, end to end ---- */

typedef struct {
    double test_acc;
    uint64_t hash; /* XXH3-64 of the bytes of W_h, b_h, W_y, b_y after training */
} run_result;

/* The example's recipe (examples/circles.c): 1000 train / 500 test points, 2-4-2 tanh network,
 * SGD lr 1 on batches of 20, lr halved after each quarter of the epochs. */
static run_result train_circles(uint64_t seed, int epochs) {
    tg_rng rng;
    tg_rng_seed(&rng, seed);
    tg_tensor *xtr, *ytr, *xte, *yte;
    cr_assert_eq(tg_circles_make(TG_F64, 1000, &rng, &xtr, &ytr), TG_OK);
    cr_assert_eq(tg_circles_make(TG_F64, 500, &rng, &xte, &yte), TG_OK);
    tg_rng wrng; /* separate streams for the weights and the shuffling, as in the example */
    tg_rng_seed(&wrng, seed + 0x9e3779b97f4a7c15ull);
    tg_linear *hid = tg_linear_new(TG_F64, 2, 4, "h", &wrng);
    tg_linear *out = tg_linear_new(TG_F64, 4, 2, "y", &wrng);
    tg_tensor *params[4] = {hid->W, hid->b, out->W, out->b};
    tg_optim_config cfg = tg_optim_defaults(TG_OPTIM_SGD, 1.0);
    cfg.decay_factor = 0.5;
    cfg.decay_every = (int64_t)(epochs / 4) * 50; /* 50 batches per epoch */
    tg_optim *opt = tg_optim_new(&cfg, params, 4);
    tg_dataset *ds = tg_dataset_new(xtr, ytr, 20, 1, seed + 0x3c6ef372fe94f82aull);
    tg_tape *t = tg_tape_new();
    cr_assert(opt && ds && t, "%s", tg_last_errmsg());
    for (int e = 0; e < epochs; e++) {
        tg_tensor *xb, *yb;
        while (tg_dataset_next(ds, &xb, &yb) == 1) {
            tg_tape_reset(t);
            tg_tensor *h = tg_tanh(t, tg_linear_forward(t, hid, xb));
            tg_tensor *loss = tg_softmax_cross_entropy(t, tg_linear_forward(t, out, h), yb);
            tg_optim_zero_grad(opt);
            cr_assert_eq(tg_backward(t, loss), TG_OK, "%s", tg_tape_errmsg(t));
            cr_assert_eq(tg_optim_step(opt), TG_OK);
        }
    }
    tg_tape_reset(t);
    tg_tensor *logits = tg_linear_forward(t, out, tg_tanh(t, tg_linear_forward(t, hid, xte)));
    run_result r = {tg_accuracy(logits, yte), 0};
    XXH3_state_t *st = XXH3_createState();
    XXH3_64bits_reset(st);
    for (int i = 0; i < 4; i++)
        XXH3_64bits_update(st, tg_tensor_cdata(params[i]),
                           (size_t)tg_tensor_numel(params[i]) * sizeof(double));
    r.hash = XXH3_64bits_digest(st);
    XXH3_freeState(st);
    tg_tape_free(t);
    tg_dataset_free(ds);
    tg_optim_free(opt);
    tg_linear_free(hid);
    tg_linear_free(out);
    tg_tensor_free(xtr);
    tg_tensor_free(ytr);
    tg_tensor_free(xte);
    tg_tensor_free(yte);
    return r;
}

Test(circles, network_reaches_95_percent_test_accuracy) {
    run_result r = train_circles(1, 200);
    cr_expect(r.test_acc >= 0.95, "test accuracy %.1f%%", 100 * r.test_acc);
}

Test(circles, same_seed_same_bits_other_seed_other_bits) {
    run_result a = train_circles(7, 4), b = train_circles(7, 4), c = train_circles(8, 4);
    cr_expect_eq(a.hash, b.hash, "seed 7 twice: %016llx vs %016llx", (unsigned long long)a.hash,
                 (unsigned long long)b.hash);
    cr_expect_neq(a.hash, c.hash, "seeds 7 and 8 gave the same weights");
}
