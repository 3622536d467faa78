/* The engine's backward protocol (Engine v2): the engine alone decides which gradients flow.
 * A frozen parameter stops changing; a second loss on one tape gets exactly its own gradients;
 * only the nodes on the path from the output run; a custom op's backward gets NULL exactly for
 * the inputs that need no gradient; observers see every step in order and can stop a pass;
 * stale tensors (from before a reset) are refused with a message instead of crashing. */
#include "core/engine.h"

#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

/* ---- Freezing ---- */

/* Two linear maps y = W (V x) trained with SGD; W is frozen after the first step. */
Test(engine, frozen_parameter_stops_changing) {
    tg_rng rng;
    tg_rng_seed(&rng, 7);
    tg_tensor *V = tg_tensor_randn(TG_F64, TG_SHAPE(3, 2), 0, 1, &rng);
    tg_tensor *W = tg_tensor_randn(TG_F64, TG_SHAPE(2, 3), 0, 1, &rng);
    tg_tensor *x = tg_tensor_randn(TG_F64, TG_SHAPE(2, 4), 0, 1, &rng);
    tg_tensor *target = tg_tensor_randn(TG_F64, TG_SHAPE(2, 4), 0, 1, &rng);
    tg_tensor_set_requires_grad(V, 1);
    tg_tensor_set_requires_grad(W, 1);
    tg_tensor *params[2] = {V, W};
    tg_optim_config cfg = tg_optim_defaults(TG_OPTIM_MOMENTUM, 0.05);
    tg_optim *opt = tg_optim_new(&cfg, params, 2);
    cr_assert_not_null(opt, "%s", tg_last_errmsg());
    tg_tape *t = tg_tape_new();
    double w_frozen[6], v_before[6];
    for (int step = 0; step < 4; step++) {
        if (step == 1) { /* freeze W: from now on its bytes must not change */
            cr_assert_eq(tg_tensor_set_requires_grad(W, 0), TG_OK);
            memcpy(w_frozen, tg_tensor_cdata(W), sizeof w_frozen);
        }
        memcpy(v_before, tg_tensor_cdata(V), sizeof v_before);
        tg_tape_reset(t);
        tg_optim_zero_grad(opt);
        tg_tensor *loss = tg_mse(t, tg_matmul(t, W, tg_matmul(t, V, x)), target);
        cr_assert_eq(tg_backward(t, loss), TG_OK, "%s", tg_tape_errmsg(t));
        cr_assert_eq(tg_optim_step(opt), TG_OK);
        cr_expect(memcmp(v_before, tg_tensor_cdata(V), sizeof v_before) != 0,
                  "step %d: V, still trained, did not change", step);
        if (step >= 1)
            cr_expect(memcmp(w_frozen, tg_tensor_cdata(W), sizeof w_frozen) == 0,
                      "step %d: the frozen W changed", step);
    }
    tg_optim_free(opt);
    tg_tape_free(t);
    tg_tensor_free(V);
    tg_tensor_free(W);
    tg_tensor_free(x);
    tg_tensor_free(target);
}

/* Freezing after recording and before tg_backward counts too: the engine decides at backward. */
Test(engine, frozen_after_recording_gets_no_gradient) {
    tg_tensor *a = tg_tensor_from(TG_F64, TG_SHAPE(2), (double[]){1, 2});
    tg_tensor *b = tg_tensor_from(TG_F64, TG_SHAPE(2), (double[]){3, 4});
    tg_tensor_set_requires_grad(a, 1);
    tg_tensor_set_requires_grad(b, 1);
    tg_tape *t = tg_tape_new();
    tg_tensor *loss = tg_sum(t, tg_mul(t, a, b));
    tg_tensor_set_requires_grad(b, 0);
    cr_assert_eq(tg_backward(t, loss), TG_OK, "%s", tg_tape_errmsg(t));
    const double *ga = tg_tensor_cdata(tg_tensor_grad(a));
    cr_expect_eq(ga[0], 3.0);
    cr_expect_eq(ga[1], 4.0);
    cr_expect_null(tg_tensor_grad(b), "a frozen leaf got a gradient");
    tg_tape_free(t);
    tg_tensor_free(a);
    tg_tensor_free(b);
}

/* ---- A second loss on one tape ---- */

/* l1 = sum(log(w)) at w = 0 makes log's backward produce inf and NaN; l2 = sum(3 w) recorded
 * after it on the same tape must get exactly dl2/dw = 3: log's node is not on l2's path. */
Test(engine, second_loss_gets_exactly_its_own_gradient) {
    tg_tensor *w = tg_tensor_from(TG_F64, TG_SHAPE(2), (double[]){0, 0});
    tg_tensor_set_requires_grad(w, 1);
    tg_tape *t = tg_tape_new();
    tg_tensor *l1 = tg_sum(t, tg_log(t, w));
    cr_assert_eq(tg_backward(t, l1), TG_OK);
    cr_expect(isinf(tg_tensor_get(tg_tensor_grad(w), 0)));
    tg_tensor *l2 = tg_sum(t, tg_scale(t, w, 3));
    tg_tensor_zero_grad(w);
    cr_assert_eq(tg_backward(t, l2), TG_OK, "%s", tg_tape_errmsg(t));
    cr_expect_eq(tg_tape_status(t), TG_OK);
    cr_expect_eq(tg_tensor_get(tg_tensor_grad(w), 0), 3.0);
    cr_expect_eq(tg_tensor_get(tg_tensor_grad(w), 1), 3.0);
    tg_tape_free(t);
    tg_tensor_free(w);
}

/* ---- Custom ops: NULL exactly where no gradient is needed; only the path runs ---- */

typedef struct probe {
    int calls;
    int null_at[4]; /* 1 where din[k] was NULL on the last call */
} probe;

static tg_status copy_forward(tg_tensor *out, tg_tensor *const *in, int n, void *user) {
    (void)n;
    (void)user;
    memcpy(tg_tensor_data(out), tg_tensor_cdata(in[0]),
           sizeof(double) * (size_t)tg_tensor_numel(out));
    return TG_OK;
}

/* y = x0 (the others are ignored): dx0 += dy; records which destinations it was given. */
static void copy_backward(const tg_tensor *out, const tg_tensor *dout, tg_tensor *const *in,
                          tg_tensor *const *din, int n, void *user) {
    (void)out;
    (void)in;
    probe *p = user;
    p->calls++;
    for (int k = 0; k < n && k < 4; k++)
        p->null_at[k] = din[k] == NULL;
    if (din[0]) {
        double *dx = tg_tensor_data(din[0]);
        const double *dy = tg_tensor_cdata(dout);
        for (int64_t i = 0; i < tg_tensor_numel(dout); i++)
            dx[i] += dy[i];
    }
}

static const tg_custom_op copy_op = {"copy", copy_forward, copy_backward};

Test(engine, custom_gets_null_exactly_where_no_gradient_is_needed) {
    tg_tensor *x = tg_tensor_ones(TG_F64, TG_SHAPE(3));    /* a parameter */
    tg_tensor *data = tg_tensor_ones(TG_F64, TG_SHAPE(3)); /* data: no gradient */
    tg_tensor *frozen = tg_tensor_ones(TG_F64, TG_SHAPE(3));
    tg_tensor_set_requires_grad(x, 1);
    tg_tensor_set_requires_grad(frozen, 1);
    tg_tape *t = tg_tape_new();
    probe p = {0};
    tg_tensor *in[3] = {x, data, frozen};
    tg_tensor *y = tg_custom(t, &copy_op, &p, in, 3, TG_SHAPE(3));
    tg_tensor *loss = tg_sum(t, y);
    tg_tensor_set_requires_grad(frozen, 0);
    cr_assert_eq(tg_backward(t, loss), TG_OK, "%s", tg_tape_errmsg(t));
    cr_expect_eq(p.calls, 1);
    cr_expect_eq(p.null_at[0], 0, "x needs a gradient: its destination must be given");
    cr_expect_eq(p.null_at[1], 1, "data needs no gradient: NULL");
    cr_expect_eq(p.null_at[2], 1, "a leaf frozen before the pass: NULL");
    tg_tape_free(t);
    tg_tensor_free(x);
    tg_tensor_free(data);
    tg_tensor_free(frozen);
}

Test(engine, only_nodes_on_the_path_run) {
    tg_tensor *x = tg_tensor_ones(TG_F64, TG_SHAPE(2));
    tg_tensor_set_requires_grad(x, 1);
    tg_tape *t = tg_tape_new();
    probe off = {0}, on = {0};
    tg_tensor *branch = tg_custom(t, &copy_op, &off, &x, 1, TG_SHAPE(2)); /* not used by loss */
    tg_tensor *loss = tg_sum(t, tg_custom(t, &copy_op, &on, &x, 1, TG_SHAPE(2)));
    cr_assert_not_null(branch);
    cr_assert_eq(tg_backward(t, loss), TG_OK);
    cr_expect_eq(on.calls, 1);
    cr_expect_eq(off.calls, 0, "a node the loss does not depend on ran its backward");
    cr_expect_null(tg_tensor_grad(branch), "a node off the path got a gradient");
    tg_tape_free(t);
    tg_tensor_free(x);
}

/* ---- Observers ---- */

typedef struct event_log {
    char text[1024];
    int stop_at_kind; /* -1: never stop */
} event_log;

static tg_status log_events(const tg_event *ev, void *user) {
    event_log *log = user;
    static const char *names[] = {"F", "B", "<", ">", "R", "E"};
    char one[64];
    const char *nm = ev->tensor ? tg_tensor_name(ev->tensor) : "";
    snprintf(one, sizeof one, "%s%s%s ", names[ev->kind], nm[0] ? ":" : "", nm);
    strncat(log->text, one, sizeof log->text - strlen(log->text) - 1);
    if ((int)ev->kind == log->stop_at_kind)
        return TG_ERR_VALUE;
    return TG_OK;
}

static tg_tensor *named(tg_tensor *x, const char *name) {
    tg_tensor_set_name(x, name);
    return x;
}

/* loss = sum(a * b + a): a feeds two nodes, so its gradient is ready only after the first of them
 * (in forward order) has run; b's after mul. Every event, in order. */
Test(engine, observers_see_every_step_in_order) {
    tg_tensor *a = named(tg_tensor_ones(TG_F64, TG_SHAPE(2)), "a");
    tg_tensor *b = named(tg_tensor_ones(TG_F64, TG_SHAPE(2)), "b");
    tg_tensor_set_requires_grad(a, 1);
    tg_tensor_set_requires_grad(b, 1);
    tg_tape *t = tg_tape_new();
    event_log log = {.stop_at_kind = -1};
    cr_assert_eq(tg_tape_observe(t, log_events, &log), TG_OK);
    cr_expect_eq(tg_tape_observe(t, log_events, &log), TG_ERR_VALUE, "added twice");
    tg_tensor *ab = named(tg_mul(t, a, b), "ab");
    tg_tensor *s = named(tg_add(t, ab, a), "s");
    tg_tensor *loss = named(tg_sum(t, s), "loss");
    cr_assert_eq(tg_backward(t, loss), TG_OK);
    /* forward: F:ab? names are set after recording, so forward events show no name */
    cr_expect_str_eq(log.text, "F F F B <:loss >:loss <:s >:s <:ab >:ab R:a R:b E ");
    cr_assert_eq(tg_tape_unobserve(t, log_events, &log), TG_OK);
    cr_expect_eq(tg_tape_unobserve(t, log_events, &log), TG_ERR_VALUE);
    tg_tape_free(t);
    tg_tensor_free(a);
    tg_tensor_free(b);
}

Test(engine, an_observer_can_stop_the_pass) {
    tg_tensor *a = tg_tensor_ones(TG_F64, TG_SHAPE(2));
    tg_tensor_set_requires_grad(a, 1);
    tg_tape *t = tg_tape_new();
    event_log log = {.stop_at_kind = TG_EVENT_AFTER_BACKWARD};
    tg_tape_observe(t, log_events, &log);
    tg_tensor *loss = tg_sum(t, tg_tanh(t, a));
    tg__set_last_error(TG_ERR_VALUE, "the observer's reason");
    cr_expect_eq(tg_backward(t, loss), TG_ERR_VALUE);
    cr_expect_str_eq(tg_tape_errmsg(t),
                     "tapegrad: an observer stopped the pass: the observer's reason");
    cr_expect_null(tg_tensor_grad(a), "the pass went on after the observer stopped it");
    tg_tape_free(t);
    tg_tensor_free(a);
}

/* ---- Stale tensors ---- */

/* A stale pointer is caught when its memory is not a current node. (One that happens to alias a
 * node recorded since, at the same arena offset, is that node: memory-safe, and undetectable.) */
Test(engine, tensors_from_before_a_reset_are_refused) {
    tg_tensor *a = tg_tensor_ones(TG_F64, TG_SHAPE(2));
    tg_tensor_set_requires_grad(a, 1);
    tg_tape *t = tg_tape_new();
    tg_tensor *old = tg_tanh(t, a);
    tg_tensor *old_loss = tg_sum(t, old);
    tg_tape_reset(t);
    int line = __LINE__ + 1;
    cr_expect_null(tg_add(t, old, a));
    char want[256];
    snprintf(want, sizeof want,
             "test_engine.c:%d: tg_add: input 1 is from before tg_tape_reset (stale)", line);
    cr_expect_str_eq(tg_tape_errmsg(t), want);
    tg_tape_reset(t);
    cr_expect_eq(tg_backward(t, old_loss), TG_ERR_STATE);
    cr_expect_str_eq(tg_tape_errmsg(t), "tg_backward: output is from before tg_tape_reset, not a "
                                        "tensor recorded on this tape");
    tg_tape_free(t);
    tg_tensor_free(a);
}

Test(engine, a_gradient_is_not_an_input) {
    tg_tensor *a = tg_tensor_ones(TG_F64, TG_SHAPE(2));
    tg_tensor_set_requires_grad(a, 1);
    tg_tape *t = tg_tape_new();
    tg_tensor *h = tg_tanh(t, a);
    cr_assert_eq(tg_backward(t, tg_sum(t, h)), TG_OK);
    cr_expect_null(tg_exp(t, tg_tensor_grad(h)));
    cr_expect(strstr(tg_tape_errmsg(t), "is not a node of this tape's current recording") != NULL,
              "%s", tg_tape_errmsg(t));
    tg_tape_free(t);
    tg_tensor_free(a);
}

/* ---- Rank 8 broadcasting against a direct index computation ---- */

Test(engine, rank_8_broadcast_matches_direct_indexing) {
    const int64_t sa[8] = {2, 1, 3, 1, 2, 1, 2, 3}, sb[5] = {2, 1, 2, 1, 1};
    tg_rng rng;
    tg_rng_seed(&rng, 3);
    tg_tensor *a = tg_tensor_randn(TG_F64, 8, sa, 0, 1, &rng);
    /* b [2,1,2,1,1] aligns with a's last five axes [1,2,1,2,3]: both broadcast */
    tg_tensor *b = tg_tensor_randn(TG_F64, 5, sb, 0, 1, &rng);
    tg_tape *t = tg_tape_new();
    tg_tensor *y = tg_mul(t, a, b);
    cr_assert_not_null(y, "%s", tg_tape_errmsg(t));
    cr_assert_eq(tg_tensor_rank(y), 8);
    const int64_t *sy = tg_tensor_shape(y);
    const int64_t want[8] = {2, 1, 3, 2, 2, 2, 2, 3};
    for (int i = 0; i < 8; i++)
        cr_expect_eq(sy[i], want[i], "axis %d", i);
    int64_t idx[8] = {0};
    for (int64_t o = 0; o < tg_tensor_numel(y); o++) {
        int64_t r = o;
        for (int i = 7; i >= 0; i--) {
            idx[i] = r % sy[i];
            r /= sy[i];
        }
        int64_t ia = 0, ib = 0;
        for (int i = 0; i < 8; i++)
            ia = ia * sa[i] + (sa[i] == 1 ? 0 : idx[i]);
        for (int i = 0; i < 5; i++)
            ib = ib * sb[i] + (sb[i] == 1 ? 0 : idx[i + 3]);
        cr_assert_eq(tg_tensor_get(y, o), tg_tensor_get(a, ia) * tg_tensor_get(b, ib),
                     "element %lld", (long long)o);
    }
    tg_tape_free(t);
    tg_tensor_free(a);
    tg_tensor_free(b);
}

/* A recorded node's values are read-only: its saved values would no longer match them. */
Test(engine, recorded_values_are_read_only) {
    tg_tensor *a = tg_tensor_ones(TG_F64, TG_SHAPE(2));
    tg_tensor_set_requires_grad(a, 1);
    tg_tape *t = tg_tape_new();
    tg_tensor *h = tg_tanh(t, a);
    tg_tensor_set_name(h, "h");
    cr_expect_eq(tg_tensor_set(h, 0, 5.0), TG_ERR_STATE);
    cr_expect_str_eq(tg_last_errmsg(), "tg_tensor_set: 'h' belongs to a tape and is read-only once "
                                       "recorded (its gradients would no longer match its values)");
    cr_expect_eq(tg_tensor_copy(h, a), TG_ERR_STATE);
    cr_expect_float_eq(tg_tensor_get(h, 0), tanh(1.0), 1e-15, "the value is unchanged");
    tg_tape_free(t);
    tg_tensor_free(a);
}

/* ---- Node gradients start every pass from zero ---- */

static bool all_equal(const tg_tensor *g, double v) {
    for (int64_t i = 0; i < tg_tensor_numel(g); i++)
        if (tg_tensor_get(g, i) != v)
            return false;
    return true;
}

/* The engine zeroes a node's gradient right before the first backward that adds into it. A pass
 * stopped before that point must still leave zeros, not the arena's older bytes: the tape first
 * holds a recording full of 7s, whose memory the next recording's gradients then reuse. */
Test(engine, a_stopped_pass_leaves_node_gradients_zeroed) {
    tg_tensor *sevens = tg_tensor_ones(TG_F64, TG_SHAPE(4096));
    tg_tensor *a = tg_tensor_ones(TG_F64, TG_SHAPE(4));
    tg_tensor_set_requires_grad(a, 1);
    tg_tape *t = tg_tape_new();
    for (int round = 0; round < 2; round++) { /* twice: a reset after growth gives fresh memory */
        cr_assert_not_null(tg_scale(t, sevens, 7.0));
        tg_tape_reset(t);
    }
    event_log log = {.stop_at_kind = TG_EVENT_BEFORE_BACKWARD};
    cr_assert_eq(tg_tape_observe(t, log_events, &log), TG_OK);
    tg_tensor *h = tg_tanh(t, a);
    tg_tensor *s = tg_scale(t, h, 2.0);
    tg_tensor *loss = tg_sum(t, s);
    tg__set_last_error(TG_ERR_VALUE, "stop");
    cr_expect_eq(tg_backward(t, loss), TG_ERR_VALUE);
    cr_assert_not_null(tg_tensor_grad(s));
    cr_assert_not_null(tg_tensor_grad(h));
    cr_expect(all_equal(tg_tensor_grad(s), 0.0), "the first node's destination");
    cr_expect(all_equal(tg_tensor_grad(h), 0.0), "a gradient the pass did not reach");
    tg_tape_free(t);
    tg_tensor_free(a);
    tg_tensor_free(sevens);
}

/* Two passes over one recording, the leaf's gradient zeroed in between: every gradient is the
 * same after each (the node's zeroed again, here by the threads: it is big enough to be split),
 * and 1 and 2 threads agree bitwise. */
Test(engine, node_gradients_restart_from_zero_each_pass_on_any_thread_count) {
    enum { R = 256, C = 160 }; /* 320 KB of f64: zeroed by the threads */
    tg_rng rng;
    tg_rng_seed(&rng, 3);
    tg_tensor *x = tg_tensor_rand(TG_F64, TG_SHAPE(R, C), -2, 2, &rng);
    tg_tensor_set_requires_grad(x, 1);
    tg_tensor *g1[2] = {NULL, NULL}, *gh[2] = {NULL, NULL};
    for (int th = 1; th <= 2; th++) {
        cr_assert_eq(tg_set_num_threads(th), TG_OK);
        tg_tape *t = tg_tape_new();
        tg_tensor *h = tg_tanh(t, x);
        tg_tensor *loss = tg_sum(t, tg_mul(t, h, x));
        tg_tensor_zero_grad(x);
        cr_assert_eq(tg_backward(t, loss), TG_OK, "%s", tg_tape_errmsg(t));
        g1[th - 1] = tg_tensor_clone(tg_tensor_grad(x), TG_F64);
        gh[th - 1] = tg_tensor_clone(tg_tensor_grad(h), TG_F64);
        tg_tensor_zero_grad(x);
        cr_assert_eq(tg_backward(t, loss), TG_OK, "%s", tg_tape_errmsg(t));
        const tg_tensor *g2 = tg_tensor_grad(x), *h2 = tg_tensor_grad(h);
        for (int64_t i = 0; i < R * C; i++) {
            cr_assert_eq(tg_tensor_get(h2, i), tg_tensor_get(gh[th - 1], i), "dh[%lld]",
                         (long long)i);
            cr_assert_eq(tg_tensor_get(g2, i), tg_tensor_get(g1[th - 1], i), "dx[%lld]",
                         (long long)i);
        }
        /* d/dx (x tanh x) = tanh x + x (1 - tanh^2 x); dh = x */
        const double x0 = tg_tensor_get(x, 0), t0 = tanh(x0);
        cr_expect_float_eq(tg_tensor_get(g1[th - 1], 0), t0 + x0 * (1 - t0 * t0), 1e-12);
        cr_expect_eq(tg_tensor_get(gh[th - 1], 0), x0);
        tg_tape_free(t);
    }
    tg_set_num_threads(1);
    cr_expect_eq(memcmp(tg_tensor_cdata(g1[0]), tg_tensor_cdata(g1[1]), sizeof(double) * R * C), 0);
    for (int k = 0; k < 2; k++) {
        tg_tensor_free(g1[k]);
        tg_tensor_free(gh[k]);
    }
    tg_tensor_free(x);
}
