/* hessian.c -- second derivatives of any scalar built on a tape, and a check of a hand-derived
 * Hessian against them, entry by entry.
 *
 * Hessian-vector products from tapegrad's exact gradient g = grad f (one forward and backward pass,
 * in float64), by central differences along v:
 *     D(h) = (g(x + h v) - g(x - h v)) / 2h = H v + (h^2 / 6) g'''[v,v,v] + O(h^4)
 * and one Richardson step, which cancels the h^2 term:
 *     H v ~ (4 D(h/2) - D(h)) / 3,   error O(h^4).
 * Only first derivatives are differenced, so the rounding error is that of g (about 1e-16 |g|)
 * divided by h. The step is relative, h = eps max(1, |x|_inf) / |v|_inf with eps = 1e-3: the
 * truncation error (~h^4) and the rounding error (~1e-16 / h) are then both far below the
 * default tolerances (atol 1e-6, rtol 1e-5).
 *
 * Kinks, as in gradcheck. A kink of f's gradient (relu' at 0; |x| at 0) within the step makes the
 * difference meaningless. The one-sided differences d+ = (g(x + h v) - g(x)) / h and d- =
 * (g(x) - g(x - h v)) / h differ by about f'''[v,v] h for a smooth f, which halves with h; across a
 * kink the gap does not shrink (a jump in the slope of g) or grows (a jump in g). The gradients at
 * h/2 are computed anyway for the Richardson step, so the test costs one more pass (g(x)). Such
 * entries are reported as kinks and never judged.
 *
 * Built on the public API (tg_backward, tg_tensor_grad) and the helpers of src/tools/check.h. */
#include "tools/check.h"

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

tg_hessian_opts tg_hessian_defaults(void) {
    return (tg_hessian_opts){.eps = 1e-3,
                             .atol = 1e-6,
                             .rtol = 1e-5,
                             .max_dense = 64,
                             .n_probes = 8,
                             .seed = 1,
                             .max_rows = 10};
}

/* What one computation needs while it runs. */
typedef struct hv_run {
    const char *who; /* "tg_hvp" or "tg_hessian_check", for messages */
    tg_gradcheck_fn f;
    void *user;
    tg_tensor **copies; /* float64 copies of the inputs (i32 stay i32) */
    int n_inputs;
    int wrt;
    int64_t n;   /* elements of inputs[wrt] */
    double atol; /* for the kink test */
    double rtol;
    double eps;
    double scale; /* max(1, |x|_inf) */
    tg_tape *tape;
    double *x0;                       /* inputs[wrt] */
    double *g0, *gp, *gm, *gp2, *gm2; /* g at x, x +- h v, x +- h/2 v */
    double f0;
} hv_run;

/* g at x0 + s v (x0 when v is NULL) into g; f's value into *value if asked. */
static tg_status grad_at(hv_run *run, const double *v, double s, double *g, double *value) {
    tg_tensor *x = run->copies[run->wrt];
    double *px = tg_tensor_data(x);
    for (int64_t i = 0; i < run->n; i++)
        px[i] = v ? run->x0[i] + s * v[i] : run->x0[i];
    tg_tape_reset(run->tape);
    tg_tensor_zero_grad(x);
    tg_tensor *loss = run->f(run->tape, run->copies, run->n_inputs, TG_F64, run->user);
    tg_status st = tg__check_loss(run->tape, loss, run->who);
    if (st == TG_OK && tg_backward(run->tape, loss) != TG_OK)
        st = tg__set_last_error(tg_tape_status(run->tape), "%s: tg_backward failed: %s", run->who,
                                tg_tape_errmsg(run->tape));
    if (st == TG_OK) {
        const tg_tensor *gx = tg_tensor_grad(x); /* NULL: f does not depend on x */
        for (int64_t i = 0; i < run->n; i++)
            g[i] = gx ? tg_tensor_get(gx, i) : 0.0;
        if (value)
            *value = tg_tensor_item(loss);
    }
    memcpy(px, run->x0, sizeof(double) * (size_t)run->n);
    return st;
}

/* H v into hv. With kink non-NULL (then run->g0 holds g(x)), also the one-sided differences at
 * step h into fwd and bwd, and kink[i] = 1 where the gradient does not vary smoothly. */
static tg_status hvp_run(hv_run *run, const double *v, double *hv, double *fwd, double *bwd,
                         unsigned char *kink) {
    double vmax = 0;
    for (int64_t i = 0; i < run->n; i++)
        vmax = fmax(vmax, fabs(v[i]));
    if (vmax == 0 || !isfinite(vmax)) {
        for (int64_t i = 0; i < run->n; i++) {
            hv[i] = vmax == 0 ? 0.0 : NAN;
            if (kink)
                fwd[i] = bwd[i] = hv[i], kink[i] = 0;
        }
        return TG_OK;
    }
    const double h = run->eps * run->scale / vmax;
    tg_status st = grad_at(run, v, h, run->gp, NULL);
    if (st == TG_OK)
        st = grad_at(run, v, -h, run->gm, NULL);
    if (st == TG_OK)
        st = grad_at(run, v, h / 2, run->gp2, NULL);
    if (st == TG_OK)
        st = grad_at(run, v, -h / 2, run->gm2, NULL);
    if (st != TG_OK)
        return st;
    double gmax = 0; /* the size of the gradients: what their rounding is relative to */
    for (int64_t i = 0; kink && i < run->n; i++)
        gmax = fmax(gmax, fmax(fabs(run->g0[i]), fmax(fabs(run->gp[i]), fabs(run->gm[i]))));
    const double noise = 64 * DBL_EPSILON * gmax / h;
    for (int64_t i = 0; i < run->n; i++) {
        const double d1 = (run->gp[i] - run->gm[i]) / (2 * h);
        const double d2 = (run->gp2[i] - run->gm2[i]) / h;
        hv[i] = (4 * d2 - d1) / 3;
        if (!kink)
            continue;
        fwd[i] = (run->gp[i] - run->g0[i]) / h;
        bwd[i] = (run->g0[i] - run->gm[i]) / h;
        const double tol = run->atol + run->rtol * fmax(fabs(fwd[i]), fabs(bwd[i])) + noise;
        const double gap = fwd[i] - bwd[i];
        kink[i] = 0;
        if (!(fabs(gap) <= tol)) { /* smooth: the gap halves with the step; a kink's does not */
            const double gap2 =
                (run->gp2[i] - run->g0[i]) / (h / 2) - (run->g0[i] - run->gm2[i]) / (h / 2);
            kink[i] = !(fabs(gap - 2 * gap2) <= tol + 2 * noise);
        }
    }
    return TG_OK;
}

static tg_status check_common(const char *who, tg_gradcheck_fn f, tg_tensor *const *inputs,
                              int n_inputs, int wrt, const tg_hessian_opts *o) {
    if (!f)
        return tg__set_last_error(TG_ERR_NULL, "%s: the function f is NULL", who);
    if (!inputs || n_inputs < 1)
        return tg__set_last_error(TG_ERR_NULL, "%s: no inputs (inputs %s, n_inputs %d)", who,
                                  inputs ? "given" : "NULL", n_inputs);
    for (int i = 0; i < n_inputs; i++)
        if (!inputs[i])
            return tg__set_last_error(TG_ERR_NULL, "%s: input %d is NULL", who, i);
    if (wrt < 0 || wrt >= n_inputs)
        return tg__set_last_error(TG_ERR_VALUE, "%s: wrt %d is not an input (0..%d)", who, wrt,
                                  n_inputs - 1);
    if (tg_tensor_dtype(inputs[wrt]) == TG_I32)
        return tg__set_last_error(TG_ERR_DTYPE,
                                  "%s: input %d ('%s') is i32; second derivatives need an f32 or "
                                  "f64 input",
                                  who, wrt, tg_tensor_name(inputs[wrt]));
    if (!(o->eps > 0) || !isfinite(o->eps) || !(o->atol >= 0) || !(o->rtol >= 0) ||
        o->n_probes < 1 || o->max_dense < 0)
        return tg__set_last_error(TG_ERR_VALUE,
                                  "%s: bad options: eps %g must be > 0, atol %g and rtol %g >= 0, "
                                  "n_probes %d >= 1, max_dense %lld >= 0",
                                  who, o->eps, o->atol, o->rtol, o->n_probes,
                                  (long long)o->max_dense);
    return TG_OK;
}

/* A direction or result tensor `what` of the caller: of inputs[wrt]'s shape, f32 or f64. */
static tg_status check_vector(const char *who, const char *what, const tg_tensor *t,
                              tg_tensor *const *inputs, int wrt) {
    if (!t)
        return tg__set_last_error(TG_ERR_NULL, "%s: %s is NULL", who, what);
    char s1[96], s2[96];
    if (!tg__same_shape(t, inputs[wrt]))
        return tg__set_last_error(
            TG_ERR_SHAPE, "%s: %s has shape %s, input %d ('%s') has shape %s", who, what,
            tg__shape_text(tg_tensor_rank(t), tg_tensor_shape(t), s1, sizeof s1), wrt,
            tg_tensor_name(inputs[wrt]),
            tg__shape_text(tg_tensor_rank(inputs[wrt]), tg_tensor_shape(inputs[wrt]), s2,
                           sizeof s2));
    if (tg_tensor_dtype(t) != TG_F32 && tg_tensor_dtype(t) != TG_F64)
        return tg__set_last_error(TG_ERR_DTYPE, "%s: %s is %s; it must be f32 or f64", who, what,
                                  tg__dtype_name(tg_tensor_dtype(t)));
    return TG_OK;
}

static void run_free(hv_run *run) {
    for (int i = 0; run->copies && i < run->n_inputs; i++)
        tg_tensor_free(run->copies[i]);
    free(run->copies);
    free(run->x0);
    free(run->g0);
    free(run->gp);
    free(run->gm);
    free(run->gp2);
    free(run->gm2);
    tg_tape_free(run->tape);
}

/* Copies, buffers and a tape; x0 and scale. The check also gets g(x) and f(x). */
static tg_status run_init(hv_run *run, tg_gradcheck_fn f, tg_tensor *const *inputs, int n_inputs,
                          void *user, int wrt, const tg_hessian_opts *o, int want_g0) {
    *run = (hv_run){.who = run->who,
                    .f = f,
                    .user = user,
                    .n_inputs = n_inputs,
                    .wrt = wrt,
                    .atol = o->atol,
                    .rtol = o->rtol,
                    .eps = o->eps,
                    .scale = 1};
    run->n = tg_tensor_numel(inputs[wrt]);
    const size_t bytes = sizeof(double) * (size_t)(run->n > 0 ? run->n : 1);
    run->copies = calloc((size_t)n_inputs, sizeof *run->copies);
    run->x0 = malloc(bytes);
    run->g0 = malloc(bytes);
    run->gp = malloc(bytes);
    run->gm = malloc(bytes);
    run->gp2 = malloc(bytes);
    run->gm2 = malloc(bytes);
    run->tape = tg_tape_new();
    if (!run->copies || !run->x0 || !run->g0 || !run->gp || !run->gm || !run->gp2 || !run->gm2 ||
        !run->tape)
        return tg__set_last_error(TG_ERR_NOMEM, "%s: out of memory", run->who);
    for (int i = 0; i < n_inputs; i++) {
        const tg_dtype dt = tg_tensor_dtype(inputs[i]);
        run->copies[i] = tg_tensor_clone(inputs[i], dt == TG_I32 ? TG_I32 : TG_F64);
        if (!run->copies[i])
            return TG_ERR_NOMEM; /* tg_tensor_clone left the message */
        if (dt != TG_I32)        /* only the differentiated input needs a gradient */
            tg_tensor_set_requires_grad(run->copies[i], i == wrt);
    }
    for (int64_t i = 0; i < run->n; i++) {
        run->x0[i] = tg_tensor_get(run->copies[wrt], i);
        run->scale = fmax(run->scale, fabs(run->x0[i]));
    }
    return want_g0 ? grad_at(run, NULL, 0, run->g0, &run->f0) : TG_OK;
}

tg_status tg_hvp(tg_gradcheck_fn f, tg_tensor *const *inputs, int n_inputs, void *user, int wrt,
                 const tg_tensor *v, tg_tensor *hv, const tg_hessian_opts *opts) {
    const tg_hessian_opts o = opts ? *opts : tg_hessian_defaults();
    tg_status st = check_common("tg_hvp", f, inputs, n_inputs, wrt, &o);
    if (st == TG_OK)
        st = check_vector("tg_hvp", "v", v, inputs, wrt);
    if (st == TG_OK)
        st = check_vector("tg_hvp", "hv", hv, inputs, wrt);
    if (st == TG_OK && tg_tensor_tape_index(hv) >= 0)
        st = tg__set_last_error(TG_ERR_STATE,
                                "tg_hvp: hv is a tensor of a tape; pass a leaf (tg_tensor_new)");
    if (st != TG_OK)
        return st;
    hv_run run = {.who = "tg_hvp"};
    st = run_init(&run, f, inputs, n_inputs, user, wrt, &o, 0);
    const size_t bytes = sizeof(double) * (size_t)(run.n > 0 ? run.n : 1);
    double *dv = calloc(1, bytes), *res = malloc(bytes);
    if (st == TG_OK && (!dv || !res)) {
        st = TG_ERR_NOMEM; /* set here, not from tg__set_last_error: the analyzer sees this one */
        tg__set_last_error(st, "tg_hvp: out of memory");
    }
    for (int64_t i = 0; st == TG_OK && i < run.n; i++)
        dv[i] = tg_tensor_get(v, i);
    if (st == TG_OK)
        st = hvp_run(&run, dv, res, NULL, NULL, NULL);
    for (int64_t i = 0; st == TG_OK && i < run.n; i++)
        tg_tensor_set(hv, i, res[i]);
    free(dv);
    free(res);
    run_free(&run);
    return st;
}

/* ---- The check ------------------------------------------------------------------------------- */

void tg_hessian_report_free(tg_hessian_report *r) {
    if (!r)
        return;
    free(r->entries);
    free(r);
}

static const char WHO[] = "tg_hessian_check";

/* Your matrix's shape: [n, n], or the input's shape twice. */
static tg_status check_matrix(const tg_tensor *yours, const tg_tensor *x, int wrt) {
    const tg_dtype dt = tg_tensor_dtype(yours);
    if (dt != TG_F32 && dt != TG_F64)
        return tg__set_last_error(TG_ERR_DTYPE, "%s: your Hessian is %s; it must be f32 or f64",
                                  WHO, tg__dtype_name(dt));
    const int64_t n = tg_tensor_numel(x);
    const int rx = tg_tensor_rank(x), ry = tg_tensor_rank(yours);
    const int64_t *sx = tg_tensor_shape(x), *sy = tg_tensor_shape(yours);
    if (ry == 2 && sy[0] == n && sy[1] == n)
        return TG_OK;
    int64_t twice[TG_MAX_RANK] = {0};
    const int doubled = 2 * rx <= TG_MAX_RANK && rx != 1;
    if (doubled) {
        memcpy(twice, sx, sizeof(int64_t) * (size_t)rx);
        memcpy(twice + rx, sx, sizeof(int64_t) * (size_t)rx);
        if (ry == 2 * rx && memcmp(sy, twice, sizeof(int64_t) * (size_t)ry) == 0)
            return TG_OK;
    }
    char s1[96], s2[96], s3[96];
    return tg__set_last_error(
        TG_ERR_SHAPE,
        "%s: your Hessian has shape %s; input %d ('%s') %s has %lld elements, so it "
        "must be [%lld,%lld]%s%s",
        WHO, tg__shape_text(ry, sy, s1, sizeof s1), wrt, tg_tensor_name(x),
        tg__shape_text(rx, sx, s2, sizeof s2), (long long)n, (long long)n, (long long)n,
        doubled ? " or " : "", doubled ? tg__shape_text(2 * rx, twice, s3, sizeof s3) : "");
}

/* Your H v: the matrix times v, or your function. */
static tg_status yours_times(hv_run *run, const tg_tensor *yours, tg_hvp_fn fn, void *fn_user,
                             tg_tensor *vt, tg_tensor *out, const double *v, double *yv,
                             int64_t col) {
    const int64_t n = run->n;
    if (yours) {
        const int f64 = tg_tensor_dtype(yours) == TG_F64;
        const double *yd = tg_tensor_cdata(yours);
        const float *yf = tg_tensor_cdata(yours);
        for (int64_t i = 0; i < n; i++) {
            double acc = 0;
            for (int64_t j = 0; j < n; j++)
                if (v[j] != 0)
                    acc += (f64 ? yd[i * n + j] : (double)yf[i * n + j]) * v[j];
            yv[i] = acc;
        }
        return TG_OK;
    }
    double *pv = tg_tensor_data(vt), *po = tg_tensor_data(out);
    memcpy(pv, v, sizeof(double) * (size_t)n);
    memset(po, 0, sizeof(double) * (size_t)n);
    const tg_status st = fn(run->copies[run->wrt], vt, out, fn_user);
    if (st != TG_OK)
        return tg__set_last_error(st, "%s: your H v function returned %s for %s %lld", WHO,
                                  tg_status_name(st), "direction", (long long)col);
    memcpy(yv, po, sizeof(double) * (size_t)n);
    return TG_OK;
}

/* Symmetry of a matrix given as entries: every pair (i, j) with i < j that was not a kink. */
static void symmetry_dense(const tg_hessian_report *r, int use_yours, double *max_asym,
                           int64_t *at_i, int64_t *at_j, int64_t *n_asym) {
    const int64_t n = r->numel;
    *max_asym = 0, *at_i = *at_j = -1, *n_asym = 0;
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = i + 1; j < n; j++) {
            const tg_hessian_entry *a = &r->entries[j * n + i], *b = &r->entries[i * n + j];
            if (!use_yours && (a->status == TG_GC_KINK || b->status == TG_GC_KINK))
                continue;
            const double ya = use_yours ? a->yours : a->reference;
            const double yb = use_yours ? b->yours : b->reference;
            const double d = fabs(ya - yb);
            *n_asym += !tg__agrees(ya, yb, r->atol, r->rtol);
            if (!(d <= *max_asym)) {
                *max_asym = d;
                *at_i = i, *at_j = j;
            }
        }
}

/* Symmetry by probes: u^T (Y v) against v^T (Y u) for consecutive directions u, v. */
static void symmetry_probes(const tg_hessian_report *r, const double *dirs, int use_yours,
                            double *max_asym, int64_t *at_i, int64_t *at_j, int64_t *n_asym) {
    const int64_t n = r->numel;
    *max_asym = 0, *at_i = *at_j = -1, *n_asym = 0;
    for (int64_t a = 0; a + 1 < r->n_cols; a++) {
        const int64_t b = a + 1;
        double uyv = 0, vyu = 0;
        for (int64_t i = 0; i < n; i++) {
            const tg_hessian_entry *ea = &r->entries[a * n + i], *eb = &r->entries[b * n + i];
            uyv += dirs[a * n + i] * (use_yours ? eb->yours : eb->reference);
            vyu += dirs[b * n + i] * (use_yours ? ea->yours : ea->reference);
        }
        const double d = fabs(uyv - vyu);
        *n_asym += !tg__agrees(uyv, vyu, r->atol, r->rtol);
        if (!(d <= *max_asym)) {
            *max_asym = d;
            *at_i = a, *at_j = b;
        }
    }
}

tg_hessian_report *tg_hessian_check(tg_gradcheck_fn f, tg_tensor *const *inputs, int n_inputs,
                                    void *user, int wrt, const tg_tensor *yours, tg_hvp_fn yours_fn,
                                    void *yours_user, const tg_hessian_opts *opts) {
    const tg_hessian_opts o = opts ? *opts : tg_hessian_defaults();
    if (check_common(WHO, f, inputs, n_inputs, wrt, &o) != TG_OK)
        return NULL;
    if (!yours && !yours_fn) {
        tg__set_last_error(TG_ERR_NULL, "%s: no Hessian to check: yours and yours_fn are both NULL",
                           WHO);
        return NULL;
    }
    if (yours && yours_fn) {
        tg__set_last_error(TG_ERR_VALUE,
                           "%s: yours and yours_fn are both given; pass the matrix or the "
                           "function, not both",
                           WHO);
        return NULL;
    }
    if (yours && check_matrix(yours, inputs[wrt], wrt) != TG_OK)
        return NULL;

    hv_run run = {.who = WHO};
    tg_status st = run_init(&run, f, inputs, n_inputs, user, wrt, &o, 1);
    const int64_t n = run.n;
    const int by_probes = st == TG_OK && n > o.max_dense;
    const int64_t cols = by_probes ? o.n_probes : n;
    tg_hessian_report *r = NULL;
    double *v = NULL, *ref = NULL, *fwd = NULL, *bwd = NULL, *yv = NULL, *dirs = NULL;
    unsigned char *kink = NULL;
    tg_tensor *vt = NULL, *out = NULL;
    if (st == TG_OK) {
        const size_t bytes = sizeof(double) * (size_t)(n > 0 ? n : 1);
        r = calloc(1, sizeof *r);
        const size_t n_entries = (size_t)cols * (size_t)n;
        if (r && (n == 0 || (size_t)cols <= SIZE_MAX / sizeof *r->entries / (size_t)n))
            r->entries = calloc(n_entries > 0 ? n_entries : 1, sizeof *r->entries);
        v = malloc(bytes), ref = malloc(bytes), fwd = malloc(bytes), bwd = malloc(bytes);
        /* kink zeroed: hvp_run fills run.n flags, which the analyzer cannot tie to n */
        yv = malloc(bytes), kink = calloc((size_t)(n > 0 ? n : 1), 1);
        if (by_probes)
            dirs = malloc(bytes * (size_t)cols);
        if (yours_fn) {
            vt = tg_tensor_new(TG_F64, tg_tensor_rank(inputs[wrt]), tg_tensor_shape(inputs[wrt]));
            out = tg_tensor_new(TG_F64, tg_tensor_rank(inputs[wrt]), tg_tensor_shape(inputs[wrt]));
        }
        if (!r || !r->entries || !v || !ref || !fwd || !bwd || !yv || !kink ||
            (by_probes && !dirs) || (yours_fn && (!vt || !out))) {
            st = TG_ERR_NOMEM; /* set here, not from tg__set_last_error: the analyzer sees it */
            tg__set_last_error(st, "%s: out of memory for %lld entries", WHO, (long long)n_entries);
        }
    }
    if (st == TG_OK) {
        const char *nm = tg_tensor_name(inputs[wrt]);
        if (nm[0])
            snprintf(r->name, sizeof r->name, "%s", nm);
        else
            snprintf(r->name, sizeof r->name, "input %d", wrt);
        r->input = wrt;
        r->rank = tg_tensor_rank(inputs[wrt]);
        memcpy(r->shape, tg_tensor_shape(inputs[wrt]), sizeof(int64_t) * (size_t)r->rank);
        r->numel = n;
        r->by_probes = by_probes;
        r->n_cols = cols;
        r->worst = -1;
        r->f0 = run.f0;
        r->eps = o.eps;
        r->atol = o.atol;
        r->rtol = o.rtol;
        r->max_rows = o.max_rows > 0 ? o.max_rows : 10;
    }
    tg_rng rng;
    tg_rng_seed(&rng, o.seed);
    double worst = -1;
    for (int64_t c = 0; st == TG_OK && c < cols; c++) {
        for (int64_t i = 0; i < n; i++)
            v[i] = by_probes ? tg_rng_normal(&rng) : (double)(i == c);
        if (by_probes)
            memcpy(dirs + c * n, v, sizeof(double) * (size_t)n);
        st = hvp_run(&run, v, ref, fwd, bwd, kink);
        if (st == TG_OK)
            st = yours_times(&run, yours, yours_fn, yours_user, vt, out, v, yv, c);
        for (int64_t i = 0; st == TG_OK && i < n; i++) {
            tg_hessian_entry *e = &r->entries[c * n + i];
            *e = (tg_hessian_entry){.row = i,
                                    .col = c,
                                    .yours = yv[i],
                                    .reference = ref[i],
                                    .fd_forward = fwd[i],
                                    .fd_backward = bwd[i]};
            e->abs_err = fabs(e->yours - e->reference);
            e->rel_err = isnan(e->abs_err) ? NAN : tg__rel_err(e->abs_err, e->reference);
            if (kink[i]) {
                e->status = TG_GC_KINK;
                r->n_kink++;
                continue;
            }
            const int ok = tg__agrees(e->yours, e->reference, o.atol, o.rtol);
            e->status = ok ? TG_GC_OK : TG_GC_MISMATCH;
            r->n_ok += ok;
            r->n_mismatch += !ok;
            const double excess = e->abs_err / (o.atol + o.rtol * fabs(e->reference) + DBL_MIN);
            if (!(excess <= worst)) { /* NaN counts as the worst */
                worst = isnan(excess) ? INFINITY : excess;
                r->worst = c * n + i;
            }
            r->max_abs_err = fmax(r->max_abs_err, e->abs_err);
            r->max_rel_err = fmax(r->max_rel_err, e->rel_err);
            if (isnan(e->abs_err))
                r->max_abs_err = r->max_rel_err = NAN;
        }
    }
    if (st == TG_OK) {
        r->passed = r->n_mismatch == 0;
        int64_t ui, uj, un; /* where the reference is least symmetric: not reported */
        if (!by_probes) {
            symmetry_dense(r, 1, &r->max_asym, &r->asym_row, &r->asym_col, &r->n_asym);
            symmetry_dense(r, 0, &r->ref_asym, &ui, &uj, &un);
        } else {
            symmetry_probes(r, dirs, 1, &r->max_asym, &r->asym_row, &r->asym_col, &r->n_asym);
            symmetry_probes(r, dirs, 0, &r->ref_asym, &ui, &uj, &un);
        }
        if (yours && by_probes) { /* the whole matrix is at hand: check every pair of it */
            const int f64 = tg_tensor_dtype(yours) == TG_F64;
            const double *yd = tg_tensor_cdata(yours);
            const float *yf = tg_tensor_cdata(yours);
            r->max_asym = 0, r->asym_row = r->asym_col = -1, r->n_asym = 0;
            for (int64_t i = 0; i < n; i++)
                for (int64_t j = i + 1; j < n; j++) {
                    const double a = f64 ? yd[i * n + j] : yf[i * n + j];
                    const double b = f64 ? yd[j * n + i] : yf[j * n + i];
                    r->n_asym += !tg__agrees(a, b, o.atol, o.rtol);
                    if (!(fabs(a - b) <= r->max_asym)) {
                        r->max_asym = fabs(a - b);
                        r->asym_row = i, r->asym_col = j;
                    }
                }
        }
        r->symmetric = r->n_asym == 0;
    }
    free(v), free(ref), free(fwd), free(bwd), free(yv), free(kink), free(dirs);
    tg_tensor_free(vt);
    tg_tensor_free(out);
    run_free(&run);
    if (st != TG_OK) {
        tg_hessian_report_free(r);
        return NULL;
    }
    return r;
}

/* ---- The printer ----------------------------------------------------------------------------- */

/* "[0,1] [1,2]" (dense: d2f / dx_i dx_j) or "[0,1] of H v3" (probes). */
static const char *entry_str(const tg_hessian_report *r, const tg_hessian_entry *e, char *buf,
                             size_t len) {
    char a[48], b[48];
    tg__index_str(r->rank, r->shape, e->row, a, sizeof a);
    if (r->by_probes)
        snprintf(buf, len, "%s of H v%lld", a, (long long)e->col);
    else
        snprintf(buf, len, "%s %s", a, tg__index_str(r->rank, r->shape, e->col, b, sizeof b));
    return buf;
}

/* The k-th entry listed: row by row when every entry was compared, else direction by direction. */
static int64_t listed(const tg_hessian_report *r, int64_t k) {
    return r->by_probes ? k : (k % r->numel) * r->numel + k / r->numel;
}

static void print_map(const tg_hessian_report *r, FILE *out) {
    const int64_t n = r->numel;
    char ib[48];
    fprintf(out, "  entries (row i down, column j across; . agrees, X wrong, k kink):\n");
    fprintf(out, "    %-14s", "");
    for (int64_t j = 0; j < n; j++)
        fprintf(out, "%s%lld", j ? " " : "", (long long)(j % 10));
    fprintf(out, "\n");
    for (int64_t i = 0; i < n; i++) {
        fprintf(out, "    %3lld %-10s", (long long)i,
                tg__index_str(r->rank, r->shape, i, ib, sizeof ib));
        for (int64_t j = 0; j < n; j++) {
            const tg_gradcheck_status s = r->entries[j * n + i].status;
            fprintf(out, "%s%c", j ? " " : "",
                    s == TG_GC_OK         ? '.'
                    : s == TG_GC_MISMATCH ? 'X'
                                          : 'k');
        }
        fprintf(out, "\n");
    }
}

void tg_hessian_print(const tg_hessian_report *r, FILE *out) {
    if (!r || !out)
        return;
    char sh[64], eb[96];
    fprintf(out,
            "hessian check: %s  (float64, step %g relative, Richardson; atol %g, rtol %g; "
            "f %.10g)\n",
            r->passed ? "PASSED" : "FAILED", r->eps, r->atol, r->rtol, r->f0);
    fprintf(out, "  %s %s: H is %lld x %lld; ", r->name,
            tg__shape_text(r->rank, r->shape, sh, sizeof sh), (long long)r->numel,
            (long long)r->numel);
    if (r->by_probes)
        fprintf(out, "compared along %lld random directions v (entry i of H v)\n",
                (long long)r->n_cols);
    else
        fprintf(out, "every entry compared (one Hessian-vector product per column)\n");
    const int64_t total = r->n_cols * r->numel;
    fprintf(out, "  %s: %lld of %lld entries agree", r->passed ? "PASS" : "FAIL",
            (long long)r->n_ok, (long long)total);
    if (r->n_kink)
        fprintf(out, ", %lld at a kink (not judged)", (long long)r->n_kink);
    if (r->worst >= 0)
        fprintf(out, "; max abs err %.3e, max rel err %.3e, worst %s", r->max_abs_err,
                r->max_rel_err, entry_str(r, &r->entries[r->worst], eb, sizeof eb));
    fprintf(out, "\n");
    /* Probes measure symmetry on pairs of directions, unless your whole matrix was given. */
    const int pairs = r->by_probes && r->asym_col == r->asym_row + 1 && r->asym_col < r->n_cols;
    if (r->symmetric) {
        fprintf(out, "  your matrix is symmetric (max %s %.1e; the reference's own %.1e)\n",
                pairs ? "|u^T H v - v^T H u|" : "|H_ij - H_ji|", r->max_asym, r->ref_asym);
    } else {
        char a[48], b[48];
        if (pairs) {
            snprintf(a, sizeof a, "v%lld", (long long)r->asym_row);
            snprintf(b, sizeof b, "v%lld", (long long)r->asym_col);
        } else {
            tg__index_str(r->rank, r->shape, r->asym_row, a, sizeof a);
            tg__index_str(r->rank, r->shape, r->asym_col, b, sizeof b);
        }
        fprintf(out,
                "  your matrix is NOT symmetric: %lld pairs differ, max %s %.3e at %s %s (the "
                "reference's own %.1e)\n",
                (long long)r->n_asym, pairs ? "|u^T H v - v^T H u|" : "|H_ij - H_ji|", r->max_asym,
                a, b, r->ref_asym);
    }
    if (!r->by_probes && r->numel <= 32 && (r->n_mismatch || r->n_kink))
        print_map(r, out);

    if (r->n_mismatch > 0) {
        fprintf(out, "    %-22s | %13s | %13s | %9s | %9s\n",
                r->by_probes ? "entry i of H v" : "entry i j", "yours", "reference", "abs err",
                "rel err");
        int64_t shown = 0;
        for (int64_t k = 0; k < total && shown < r->max_rows; k++) {
            const tg_hessian_entry *e = &r->entries[listed(r, k)];
            if (e->status != TG_GC_MISMATCH)
                continue;
            fprintf(out, "    %-22s | %+.6e | %+.6e | %9.2e | %9.2e\n",
                    entry_str(r, e, eb, sizeof eb), e->yours, e->reference, e->abs_err, e->rel_err);
            shown++;
        }
        if (r->n_mismatch > shown)
            fprintf(out, "    ... and %lld more mismatching entries (%lld in all)\n",
                    (long long)(r->n_mismatch - shown), (long long)r->n_mismatch);
    }
    if (r->n_kink > 0) {
        fprintf(out, "    kinks: the gradient does not vary smoothly within the step, so finite "
                     "differences cannot judge these\n");
        fprintf(out, "    %-22s | %13s | %17s | %17s\n",
                r->by_probes ? "entry i of H v" : "entry i j", "yours", "(g(x)-g(x-hv))/h",
                "(g(x+hv)-g(x))/h");
        int64_t shown = 0;
        for (int64_t k = 0; k < total && shown < r->max_rows; k++) {
            const tg_hessian_entry *e = &r->entries[listed(r, k)];
            if (e->status != TG_GC_KINK)
                continue;
            fprintf(out, "    %-22s | %+.6e | %+17.6e | %+17.6e\n", entry_str(r, e, eb, sizeof eb),
                    e->yours, e->fd_backward, e->fd_forward);
            shown++;
        }
        if (r->n_kink > shown)
            fprintf(out, "    ... and %lld more kink entries (%lld in all)\n",
                    (long long)(r->n_kink - shown), (long long)r->n_kink);
    }
}
