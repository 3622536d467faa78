/* gradcheck.c -- element-by-element gradient checks: autodiff against central finite differences,
 * and a caller's own gradient against autodiff with finite differences as the referee.
 *
 * Why float64, always: a finite difference (f(x+eps) - f(x-eps)) / 2eps divides the rounding error
 * of f (about |f| * 6e-8 in float32, 1e-16 in float64) by eps. With eps = 1e-6 that is ~6e-2 |f| in
 * float32 -- useless -- and ~1e-10 |f| in float64, far below atol = 1e-5. So the caller's function
 * is always run on float64 copies of the inputs, whatever dtype the caller trains in.
 *
 * Kinks: at x within eps of a kink (relu at 0, |x| at 0) the central difference averages two
 * different slopes and judges nothing. We detect it from the one-sided differences
 *     d+ = (f(x+eps) - f(x)) / eps,   d- = (f(x) - f(x-eps)) / eps.
 * For a smooth f, d+ - d- = f''(x) eps + O(eps^2); at a kink it is the jump in slope, which does
 * not shrink with eps. So when d+ and d- disagree beyond tolerance we evaluate at eps/2 as well:
 * smooth curvature halves the gap, a kink does not. Kink elements are reported as such, never
 * judged. */
#include "core/engine.h"
#include "tools/check.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>

tg_gradcheck_opts tg_gradcheck_defaults(void) {
    return (tg_gradcheck_opts){
        .eps = 1e-6, .atol = 1e-5, .rtol = 1e-3, .dtype = TG_F64, .max_rows = 10};
}

/* What one check needs while it runs; freed at the end of run_check. */
typedef struct gc_run {
    tg_gradcheck_fn f;
    void *user;
    tg_tensor **copies; /* float64 copies of the caller's inputs (i32 ones stay i32) */
    int n_inputs;
    tg_tape *tape; /* reused for every finite-difference evaluation */
} gc_run;

/* f at the copies' current values. TG_OK and *value, or an error with tg_last_errmsg set (and
 * *value NaN, so that no caller can read an unset value on an error path). */
static tg_status eval_f(gc_run *run, tg_tape *tape, tg_tensor **loss_out, double *value) {
    *value = NAN;
    tg_tape_reset(tape);
    tg_tensor *loss = run->f(tape, run->copies, run->n_inputs, TG_F64, run->user);
    const tg_status st = tg__check_loss(tape, loss, "tg_gradcheck");
    if (st != TG_OK)
        return st;
    if (loss_out)
        *loss_out = loss;
    *value = tg_tensor_item(loss);
    return TG_OK;
}

tg_status tg__check_loss(const tg_tape *tape, const tg_tensor *loss, const char *who) {
    if (!loss || tg_tape_status(tape) != TG_OK) {
        tg_status st = tg_tape_status(tape) != TG_OK ? tg_tape_status(tape) : TG_ERR_STATE;
        return tg__set_last_error(st, "%s: the function failed to build its loss: %s", who,
                                  tg_tape_status(tape) != TG_OK
                                      ? tg_tape_errmsg(tape)
                                      : "it returned NULL without a tape error");
    }
    if (tg_tensor_numel(loss) != 1) {
        char s[96];
        return tg__set_last_error(
            TG_ERR_SHAPE,
            "%s: the function returned a tensor of shape %s; it must return one element (a loss)",
            who, tg__shape_text(tg_tensor_rank(loss), tg_tensor_shape(loss), s, sizeof s));
    }
    if (tg_tensor_dtype(loss) != TG_F64)
        return tg__set_last_error(TG_ERR_DTYPE,
                                  "%s: the function returned a %s loss from float64 inputs; build "
                                  "it in the dtype it is given",
                                  who, tg__dtype_name(tg_tensor_dtype(loss)));
    return TG_OK;
}

bool tg__agrees(double value, double reference, double atol, double rtol) {
    return fabs(value - reference) <= atol + rtol * fabs(reference);
}

double tg__rel_err(double abs_err, double reference) {
    if (reference != 0)
        return abs_err / fabs(reference);
    return abs_err == 0 ? 0 : INFINITY;
}

bool tg__same_shape(const tg_tensor *a, const tg_tensor *b) {
    const int rank = tg_tensor_rank(a);
    return rank == tg_tensor_rank(b) && (rank == 0 || memcmp(tg_tensor_shape(a), tg_tensor_shape(b),
                                                             sizeof(int64_t) * (size_t)rank) == 0);
}

static tg_status check_args(tg_gradcheck_fn f, tg_tensor *const *inputs, int n_inputs,
                            tg_tensor *const *yours, const tg_gradcheck_opts *o) {
    if (!f)
        return tg__set_last_error(TG_ERR_NULL, "tg_gradcheck: the function f is NULL");
    if (!inputs || n_inputs < 1)
        return tg__set_last_error(TG_ERR_NULL, "tg_gradcheck: no inputs (inputs %s, n_inputs %d)",
                                  inputs ? "given" : "NULL", n_inputs);
    if (!(o->eps > 0) || !(o->atol >= 0) || !(o->rtol >= 0) || !isfinite(o->eps))
        return tg__set_last_error(TG_ERR_VALUE,
                                  "tg_gradcheck: bad options: eps %g must be > 0, atol %g and "
                                  "rtol %g must be >= 0",
                                  o->eps, o->atol, o->rtol);
    if (o->dtype != TG_F32 && o->dtype != TG_F64)
        return tg__set_last_error(TG_ERR_DTYPE,
                                  "tg_gradcheck: opts.dtype is %s; gradients are checked for f32 "
                                  "or f64",
                                  tg__dtype_name(o->dtype));
    int n_grad = 0;
    for (int i = 0; i < n_inputs; i++) {
        if (!inputs[i])
            return tg__set_last_error(TG_ERR_NULL, "tg_gradcheck: input %d is NULL", i);
        /* Only a float input can be perturbed; an integer one that claims a gradient (once made
         * by tg_tensor_clone) would be written as doubles past the end of its int32 data. */
        if (tg_tensor_requires_grad(inputs[i]) && inputs[i]->dtype == TG_I32)
            return tg__set_last_error(TG_ERR_DTYPE,
                                      "tg_gradcheck: input %d ('%s') is i32 but requires a "
                                      "gradient; only f32/f64 inputs can be checked",
                                      i, tg_tensor_name(inputs[i]));
        n_grad += tg_tensor_requires_grad(inputs[i]) ? 1 : 0;
        const tg_tensor *y = yours ? yours[i] : NULL;
        if (!y)
            continue;
        const char *nm = tg_tensor_name(inputs[i]);
        char s1[TG_SHAPE_STR_LEN], s2[TG_SHAPE_STR_LEN];
        if (!tg_tensor_requires_grad(inputs[i]))
            return tg__set_last_error(TG_ERR_STATE,
                                      "tg_gradcheck_yours: a gradient was given for input %d "
                                      "('%s'), which does not require a gradient",
                                      i, nm);
        if (y->rank != inputs[i]->rank ||
            memcmp(y->shape, inputs[i]->shape, sizeof(int64_t) * (size_t)y->rank) != 0)
            return tg__set_last_error(TG_ERR_SHAPE,
                                      "tg_gradcheck_yours: your gradient for input %d ('%s') has "
                                      "shape %s, the input has shape %s",
                                      i, nm, tg__shape_str(y, s1, sizeof s1),
                                      tg__shape_str(inputs[i], s2, sizeof s2));
        if (y->dtype != TG_F32 && y->dtype != TG_F64)
            return tg__set_last_error(
                TG_ERR_DTYPE,
                "tg_gradcheck_yours: your gradient for input %d ('%s') is %s; "
                "it must be f32 or f64",
                i, nm, tg__dtype_name(y->dtype));
    }
    if (n_grad == 0)
        return tg__set_last_error(TG_ERR_STATE,
                                  "tg_gradcheck: none of the %d inputs requires a gradient; mark "
                                  "the ones to check with tg_tensor_set_requires_grad",
                                  n_inputs);
    return TG_OK;
}

/* The element being judged: f with element j of a float64 copy moved by h. */
typedef struct gc_element {
    gc_run *run;
    double *px;
    int64_t j;
} gc_element;

static tg_status eval_moved(void *ctx, double h, double *value) {
    gc_element *el = ctx;
    const double saved = el->px[el->j];
    el->px[el->j] = saved + h;
    const tg_status st = eval_f(el->run, el->run->tape, NULL, value);
    el->px[el->j] = saved;
    return st;
}

tg_status tg__fd_judge(tg__fd_eval_fn eval, void *ctx, double f0, double eps, double atol,
                       double rtol, tg_gradcheck_element *e) {
    double fp, fm;
    tg_status st = eval(ctx, eps, &fp);
    if (st == TG_OK)
        st = eval(ctx, -eps, &fm);
    if (st != TG_OK)
        return st;
    e->fd = (fp - fm) / (2 * eps);
    e->fd_forward = (fp - f0) / eps;
    e->fd_backward = (f0 - fm) / eps;

    /* Rounding in f, divided by eps: the part of d+ - d- that is noise, not slope. */
    const double noise = 64 * DBL_EPSILON * fmax(fabs(f0), fmax(fabs(fp), fabs(fm))) / eps;
    const double slope_tol = atol + rtol * fmax(fabs(e->fd_forward), fabs(e->fd_backward)) + noise;
    const double gap = e->fd_forward - e->fd_backward;
    bool kink = false;
    if (!(fabs(gap) <= slope_tol)) {
        /* Smooth f: the gap is f'' eps, so at eps/2 it is half as wide. A kink keeps its gap. */
        double fp2, fm2;
        st = eval(ctx, eps / 2, &fp2);
        if (st == TG_OK)
            st = eval(ctx, -eps / 2, &fm2);
        if (st != TG_OK)
            return st;
        const double gap2 = (fp2 - f0) / (eps / 2) - (f0 - fm2) / (eps / 2);
        kink = !(fabs(gap - 2 * gap2) <= slope_tol + 2 * noise);
    }

    const bool fd_ok = tg__agrees(e->autodiff, e->fd, atol, rtol);
    const bool have_yours = !isnan(e->yours);
    const bool yours_ok = !have_yours || tg__agrees(e->yours, e->autodiff, atol, rtol);
    e->disagree = (fd_ok ? 0u : TG_GC_AUTODIFF_VS_FD) | (yours_ok ? 0u : TG_GC_YOURS_VS_AUTODIFF);
    const double value = have_yours ? e->yours : e->autodiff;
    const double reference = have_yours ? e->autodiff : e->fd;
    e->abs_err = fabs(value - reference);
    e->rel_err = tg__rel_err(e->abs_err, reference);
    if (isnan(e->abs_err))
        e->rel_err = NAN;
    e->status = kink ? TG_GC_KINK : e->disagree ? TG_GC_MISMATCH : TG_GC_OK;
    return TG_OK;
}

void tg_gradcheck_report_free(tg_gradcheck_report *r) {
    if (!r)
        return;
    for (int k = 0; k < r->n_tensors; k++) {
        free(r->tensors[k].elements);
        free((void *)r->tensors[k].shape); /* owned by the report; const for its readers */
    }
    free(r->tensors);
    free(r);
}

static tg_gradcheck_report *report_new(tg_tensor *const *inputs, int n_inputs,
                                       const tg_gradcheck_opts *o) {
    int n_grad = 0;
    for (int i = 0; i < n_inputs; i++)
        n_grad += tg_tensor_requires_grad(inputs[i]) ? 1 : 0;
    TG_CHECK(n_grad > 0); /* check_args rejected inputs of which none requires a gradient */
    tg_gradcheck_report *r = calloc(1, sizeof *r);
    if (r)
        r->tensors = calloc((size_t)n_grad, sizeof *r->tensors);
    if (!r || !r->tensors) {
        free(r);
        tg__set_last_error(TG_ERR_NOMEM, "tg_gradcheck: out of memory for the report");
        return NULL;
    }
    r->eps = o->eps;
    r->atol = o->atol;
    r->rtol = o->rtol;
    r->max_rows = o->max_rows > 0 ? o->max_rows : 10;
    r->dtype = TG_F64;
    r->requested_dtype = o->dtype;
    for (int i = 0; i < n_inputs; i++) {
        if (!tg_tensor_requires_grad(inputs[i]))
            continue;
        if (inputs[i]->dtype == TG_F32)
            r->requested_dtype = TG_F32;
        tg_gradcheck_tensor *c = &r->tensors[r->n_tensors++];
        const char *nm = tg_tensor_name(inputs[i]);
        if (nm[0])
            snprintf(c->name, sizeof c->name, "%s", nm);
        else
            snprintf(c->name, sizeof c->name, "input %d", i);
        c->input = i;
        c->rank = inputs[i]->rank;
        int64_t *shape = calloc(c->rank > 0 ? (size_t)c->rank : 1, sizeof *shape);
        if (shape)
            memcpy(shape, inputs[i]->shape, sizeof *shape * (size_t)c->rank);
        c->shape = shape;
        c->numel = inputs[i]->numel;
        c->worst_index = -1;
        c->elements = calloc(c->numel > 0 ? (size_t)c->numel : 1, sizeof *c->elements);
        if (!c->elements || !shape) {
            tg_gradcheck_report_free(r);
            tg__set_last_error(TG_ERR_NOMEM, "tg_gradcheck: out of memory for the report");
            return NULL;
        }
    }
    if (r->requested_dtype == TG_F32)
        snprintf(r->note, sizeof r->note,
                 "float32 was asked for; the check ran in float64: in float32 rounding alone puts "
                 "an error of about %.0e |f| into a finite difference with eps %g.",
                 (double)FLT_EPSILON / 2 / r->eps, r->eps);
    return r;
}

void tg__gc_tally(tg_gradcheck_tensor *c, const tg_gradcheck_element *e, double atol, double rtol,
                  double *worst) {
    if (e->status == TG_GC_KINK) {
        c->n_kink++;
        return;
    }
    c->n_ok += e->status == TG_GC_OK;
    c->n_mismatch += e->status == TG_GC_MISMATCH;
    const double reference = c->has_yours ? e->autodiff : e->fd;
    const double excess = e->abs_err / (atol + rtol * fabs(reference) + DBL_MIN);
    if (!(excess <= *worst)) { /* NaN counts as the worst */
        *worst = isnan(excess) ? INFINITY : excess;
        c->worst_index = e->index;
    }
    c->max_abs_err = fmax(c->max_abs_err, e->abs_err);
    c->max_rel_err = fmax(c->max_rel_err, e->rel_err);
    c->max_fd_err = fmax(c->max_fd_err, fabs(e->autodiff - e->fd));
    if (isnan(e->abs_err))
        c->max_abs_err = c->max_rel_err = NAN;
}

/* Fills the report: one autodiff pass, then finite differences element by element. */
static tg_status run_check(gc_run *run, tg_gradcheck_report *r, tg_tensor *const *yours) {
    tg_tape *ad = tg_tape_new();
    run->tape = tg_tape_new();
    if (!ad || !run->tape) {
        tg_tape_free(ad);
        return tg__set_last_error(TG_ERR_NOMEM, "tg_gradcheck: out of memory for a tape");
    }
    tg_tensor *loss = NULL;
    double f0;
    tg_status st = eval_f(run, ad, &loss, &f0);
    if (st == TG_OK && tg_backward(ad, loss) != TG_OK)
        st = tg__set_last_error(tg_tape_status(ad), "tg_gradcheck: tg_backward failed: %s",
                                tg_tape_errmsg(ad));
    r->loss = f0;
    r->passed = 1;
    for (int k = 0; st == TG_OK && k < r->n_tensors; k++) {
        tg_gradcheck_tensor *c = &r->tensors[k];
        tg_tensor *x = run->copies[c->input];
        const tg_tensor *g = tg_tensor_grad(x); /* NULL: the loss does not depend on x */
        const tg_tensor *y = yours ? yours[c->input] : NULL;
        c->has_yours = y != NULL;
        double worst = -1;
        for (int64_t j = 0; st == TG_OK && j < c->numel; j++) {
            tg_gradcheck_element *e = &c->elements[j];
            e->index = j;
            e->autodiff = g ? tg_tensor_get(g, j) : 0.0;
            e->yours = y ? tg_tensor_get(y, j) : NAN;
            gc_element el = {run, tg_tensor_data(x), j};
            st = tg__fd_judge(eval_moved, &el, f0, r->eps, r->atol, r->rtol, e);
            if (st == TG_OK)
                tg__gc_tally(c, e, r->atol, r->rtol, &worst);
        }
        c->passed = c->n_mismatch == 0;
        r->passed &= c->passed;
    }
    tg_tape_free(ad);
    tg_tape_free(run->tape);
    run->tape = NULL;
    return st;
}

tg_gradcheck_report *tg_gradcheck_yours(tg_gradcheck_fn f, tg_tensor *const *inputs, int n_inputs,
                                        void *user, tg_tensor *const *yours,
                                        const tg_gradcheck_opts *opts) {
    const tg_gradcheck_opts o = opts ? *opts : tg_gradcheck_defaults();
    if (check_args(f, inputs, n_inputs, yours, &o) != TG_OK)
        return NULL;
    tg_gradcheck_report *r = report_new(inputs, n_inputs, &o);
    if (!r)
        return NULL;
    gc_run run = {.f = f, .user = user, .n_inputs = n_inputs};
    run.copies = calloc((size_t)n_inputs, sizeof *run.copies);
    tg_status st = run.copies ? TG_OK : TG_ERR_NOMEM;
    for (int i = 0; st == TG_OK && i < n_inputs; i++) {
        /* clone keeps the name and requires-grad flag; the gradient starts empty. */
        run.copies[i] = tg_tensor_clone(inputs[i], inputs[i]->dtype == TG_I32 ? TG_I32 : TG_F64);
        if (!run.copies[i])
            st = TG_ERR_NOMEM; /* tg_tensor_clone left the message */
    }
    if (!run.copies)
        tg__set_last_error(st, "tg_gradcheck: out of memory for the input copies");
    if (st == TG_OK)
        st = run_check(&run, r, yours);
    for (int i = 0; run.copies && i < n_inputs; i++)
        tg_tensor_free(run.copies[i]);
    free(run.copies);
    if (st != TG_OK) {
        tg_gradcheck_report_free(r);
        return NULL;
    }
    return r;
}

tg_gradcheck_report *tg_gradcheck(tg_gradcheck_fn f, tg_tensor *const *inputs, int n_inputs,
                                  void *user, const tg_gradcheck_opts *opts) {
    return tg_gradcheck_yours(f, inputs, n_inputs, user, NULL, opts);
}

/* ---- The printer ---- */

const char *tg__index_str(int rank, const int64_t *shape, int64_t flat, char *buf, size_t len) {
    int64_t idx[TG_MAX_RANK] = {0};
    for (int a = rank - 1; a >= 0; a--) {
        if (shape[a] > 0) {
            idx[a] = flat % shape[a];
            flat /= shape[a];
        }
    }
    size_t n = (size_t)snprintf(buf, len, "[");
    for (int a = 0; a < rank && n < len; a++)
        n += (size_t)snprintf(buf + n, len - n, "%s%lld", a ? "," : "", (long long)idx[a]);
    if (n < len)
        snprintf(buf + n, len - n, "]");
    return buf;
}

const char *tg__shape_text(int rank, const int64_t *shape, char *buf, size_t len) {
    size_t n = (size_t)snprintf(buf, len, "[");
    for (int a = 0; a < rank && n < len; a++)
        n += (size_t)snprintf(buf + n, len - n, "%s%lld", a ? "," : "", (long long)shape[a]);
    if (n < len)
        snprintf(buf + n, len - n, "]");
    return buf;
}

/* "[1,0]" from a flat row-major index into a checked tensor. */
static const char *index_str(const tg_gradcheck_tensor *c, int64_t flat, char *buf, size_t len) {
    return tg__index_str(c->rank, c->shape, flat, buf, len);
}

/* The "yours" column: the user's value, or "-" when the check had no user gradient. */
static void yours_str(const tg_gradcheck_tensor *c, const tg_gradcheck_element *e, char *buf,
                      size_t len) {
    if (c->has_yours)
        snprintf(buf, len, "%+.6e", e->yours);
    else
        snprintf(buf, len, "-");
}

static void print_tensor(const tg_gradcheck_report *r, const tg_gradcheck_tensor *c, FILE *out) {
    char sh[64], ib[64];
    fprintf(out, "  %-10s %-9s %s  %s: %lld of %lld elements agree", c->name,
            tg__shape_text(c->rank, c->shape, sh, sizeof sh), c->passed ? "PASS" : "FAIL",
            c->has_yours ? "yours vs autodiff" : "autodiff vs finite differences",
            (long long)c->n_ok, (long long)c->numel);
    if (c->n_kink)
        fprintf(out, ", %lld at a kink (not judged)", (long long)c->n_kink);
    fprintf(out, "\n");
    if (c->worst_index >= 0)
        fprintf(out, "             max abs err %.3e, max rel err %.3e, worst element %s\n",
                c->max_abs_err, c->max_rel_err, index_str(c, c->worst_index, ib, sizeof ib));

    tg__gc_print_rows(c, r->atol, r->rtol, r->max_rows, out);
}

void tg__gc_print_rows(const tg_gradcheck_tensor *c, double atol, double rtol, int max_rows,
                       FILE *out) {
    char ib[64];
    if (c->n_mismatch > 0) {
        fprintf(out, "    %-12s | %13s | %13s | %17s | %9s | %9s\n", "index", "yours", "autodiff",
                "finite difference", "abs err", "rel err");
        int64_t shown = 0;
        for (int64_t j = 0; j < c->numel && shown < max_rows; j++) {
            const tg_gradcheck_element *e = &c->elements[j];
            if (e->status != TG_GC_MISMATCH)
                continue;
            char yb[32];
            yours_str(c, e, yb, sizeof yb);
            fprintf(out, "    %-12s | %13s | %+.6e | %+17.6e | %9.2e | %9.2e%s\n",
                    index_str(c, j, ib, sizeof ib), yb, e->autodiff, e->fd, e->abs_err, e->rel_err,
                    c->has_yours && (e->disagree & TG_GC_AUTODIFF_VS_FD)
                        ? "  (autodiff disagrees with finite differences too)"
                        : "");
            shown++;
        }
        if (c->n_mismatch > shown)
            fprintf(out, "    ... and %lld more mismatching elements (%lld in all)\n",
                    (long long)(c->n_mismatch - shown), (long long)c->n_mismatch);
    }
    if (c->n_kink > 0) {
        fprintf(out, "    kinks: the one-sided differences disagree, so a kink lies within eps and "
                     "finite differences cannot judge these\n");
        fprintf(out, "    %-12s | %13s | %13s | %19s | %19s\n", "index", "yours", "autodiff",
                "(f(x)-f(x-eps))/eps", "(f(x+eps)-f(x))/eps");
        int64_t shown = 0;
        for (int64_t j = 0; j < c->numel && shown < max_rows; j++) {
            const tg_gradcheck_element *e = &c->elements[j];
            if (e->status != TG_GC_KINK)
                continue;
            char yb[32];
            yours_str(c, e, yb, sizeof yb);
            /* A correct derivative at a single kink is one of the one-sided slopes (or between). */
            const double tol = atol + rtol * fmax(fabs(e->fd_backward), fabs(e->fd_forward));
            const bool between = e->autodiff >= fmin(e->fd_backward, e->fd_forward) - tol &&
                                 e->autodiff <= fmax(e->fd_backward, e->fd_forward) + tol;
            fprintf(out, "    %-12s | %13s | %+.6e | %+19.6e | %+19.6e%s\n",
                    index_str(c, j, ib, sizeof ib), yb, e->autodiff, e->fd_backward, e->fd_forward,
                    between ? "" : "  (autodiff is outside both one-sided slopes)");
            shown++;
        }
        if (c->n_kink > shown)
            fprintf(out, "    ... and %lld more kink elements (%lld in all)\n",
                    (long long)(c->n_kink - shown), (long long)c->n_kink);
    }
}

void tg_gradcheck_print(const tg_gradcheck_report *r, FILE *out) {
    if (!r || !out)
        return;
    fprintf(out, "gradcheck: %s  (float64, eps %g, atol %g, rtol %g; loss %.10g)\n",
            r->passed ? "PASSED" : "FAILED", r->eps, r->atol, r->rtol, r->loss);
    if (r->note[0])
        fprintf(out, "  note: %s\n", r->note);
    for (int k = 0; k < r->n_tensors; k++)
        print_tensor(r, &r->tensors[k], out);
}
