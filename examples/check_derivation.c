/* check_derivation.c -- the course report's hand-derived gradients (answers 15, 16, 17), checked
 * element by element with tg_gradcheck_yours, then the textbook derivation of every gradient, for
 * one sample and for a mini-batch with a mean loss.
 *
 * The network of the report: n_x = 2, n_h = 4, n_y = 2,
 *     h~ = W_h x + b_h,  h = tanh(h~),  y~ = W_y h + b_y,  y^ = softmax(y~),
 *     l = -sum_k y_k log y^_k   (y one-hot),   mini-batch: L = (1/N) sum_n l_n.
 * Samples are rows: X [N,2], Y [N,2], so h~ = X W_h^T + b_h is [N,4] and y~ = H W_y^T + b_y is
 * [N,2].
 *
 * Every gradient "yours" below is plain C written from the formula, never from tapegrad; tapegrad's
 * autodiff is the reference and central finite differences referee it. Exit status 0 when every
 * check ran and the textbook derivation passed (the report's failing equations are the finding,
 * not an error); 1 otherwise. */
#include "tapegrad.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { NX = 2, NH = 4, NY = 2, NB = 8 /* mini-batch */, NS = 4 /* samples for the report */ };

/* ---- The network, written with tapegrad (what autodiff differentiates) ------------------------
 */

/* L = -(1/N) sum_n sum_k Y_nk log y^_nk, written as the report writes it (softmax, then log). */
static tg_tensor *ce_from_probs(tg_tape *t, tg_tensor *yhat, tg_tensor *Y) {
    const double N = (double)tg_tensor_dim(yhat, 0);
    return tg_scale(t, tg_sum(t, tg_mul(t, Y, tg_log(t, yhat))), -1.0 / N);
}

static tg_tensor *ytilde_from_h(tg_tape *t, tg_tensor *h, tg_tensor *W_y, tg_tensor *b_y) {
    return tg_add(t, tg_matmul(t, h, tg_transpose(t, W_y)), b_y);
}

/* inputs: X, Y, W_h, b_h, W_y, b_y. The whole network: L as a function of the parameters. */
static tg_tensor *loss_of_params(tg_tape *t, tg_tensor *const *in, int n, tg_dtype dt, void *u) {
    (void)n, (void)dt, (void)u;
    tg_tensor *htilde = tg_add(t, tg_matmul(t, in[0], tg_transpose(t, in[2])), in[3]);
    tg_tensor *ytilde = ytilde_from_h(t, tg_tanh(t, htilde), in[4], in[5]);
    return ce_from_probs(t, tg_softmax(t, ytilde), in[1]);
}
/* inputs: h~, Y, W_y, b_y. L as a function of the hidden pre-activation h~. */
static tg_tensor *loss_of_htilde(tg_tape *t, tg_tensor *const *in, int n, tg_dtype dt, void *u) {
    (void)n, (void)dt, (void)u;
    tg_tensor *ytilde = ytilde_from_h(t, tg_tanh(t, in[0]), in[2], in[3]);
    return ce_from_probs(t, tg_softmax(t, ytilde), in[1]);
}
/* inputs: y~, Y. L as a function of the logits y~. */
static tg_tensor *loss_of_ytilde(tg_tape *t, tg_tensor *const *in, int n, tg_dtype dt, void *u) {
    (void)n, (void)dt, (void)u;
    return ce_from_probs(t, tg_softmax(t, in[0]), in[1]);
}
/* inputs: y^, Y. L as a function of the probabilities y^ themselves. */
static tg_tensor *loss_of_yhat(tg_tape *t, tg_tensor *const *in, int n, tg_dtype dt, void *u) {
    (void)n, (void)dt, (void)u;
    return ce_from_probs(t, in[0], in[1]);
}

/* ---- The same forward pass in plain C, which the hand-derived formulas use --------------------
 */

typedef struct params {
    double Wh[NH][NX], bh[NH], Wy[NY][NH], by[NY];
} params;

typedef struct sample {
    double x[NX], y[NY];                  /* input, one-hot target */
    double ht[NH], h[NH], yt[NY], yh[NY]; /* h~, h, y~, y^ */
} sample;

static void forward(const params *p, sample *s) {
    for (int i = 0; i < NH; i++) {
        s->ht[i] = p->bh[i];
        for (int j = 0; j < NX; j++)
            s->ht[i] += p->Wh[i][j] * s->x[j];
        s->h[i] = tanh(s->ht[i]);
    }
    double m = -INFINITY, z = 0;
    for (int k = 0; k < NY; k++) {
        s->yt[k] = p->by[k];
        for (int i = 0; i < NH; i++)
            s->yt[k] += p->Wy[k][i] * s->h[i];
        m = fmax(m, s->yt[k]);
    }
    for (int k = 0; k < NY; k++)
        z += exp(s->yt[k] - m);
    for (int k = 0; k < NY; k++)
        s->yh[k] = exp(s->yt[k] - m) / z;
}

/* ---- Small helpers ----------------------------------------------------------------------------
 */

static tg_tensor *leaf(const char *name, int rank, const int64_t *shape, const double *data) {
    tg_tensor *t = tg_tensor_from(TG_F64, rank, shape, data);
    if (!t) {
        fprintf(stderr, "check_derivation: %s\n", tg_last_errmsg());
        exit(1);
    }
    tg_tensor_set_name(t, name);
    return t;
}

/* The batch tensors X, Y and the per-sample rows of h~, y~, y^ for samples [first, first + n). */
static tg_tensor *rows(const char *name, const sample *s, int first, int n, int what) {
    double buf[NB * NH];
    const int w = what == 2 ? NH : 2;
    for (int r = 0; r < n; r++)
        for (int c = 0; c < w; c++) {
            const sample *q = &s[first + r];
            buf[r * w + c] = what == 0   ? q->x[c]
                             : what == 1 ? q->y[c]
                             : what == 2 ? q->ht[c]
                             : what == 3 ? q->yt[c]
                                         : q->yh[c];
        }
    return leaf(name, 2, (const int64_t[]){n, w}, buf);
}
enum { ROW_X, ROW_Y, ROW_HT, ROW_YT, ROW_YH };

static tg_gradcheck_report *check(tg_gradcheck_fn f, tg_tensor *const *in, int n,
                                  tg_tensor *const *yours) {
    tg_gradcheck_report *r = tg_gradcheck_yours(f, in, n, NULL, yours, NULL);
    if (!r) {
        fprintf(stderr, "check_derivation: %s\n", tg_last_errmsg());
        exit(1);
    }
    return r;
}

static void only_grad(tg_tensor *const *in, int n, int which) {
    for (int i = 0; i < n; i++)
        tg_tensor_set_requires_grad(in[i], i == which);
}

/* ---- Part 1: the report's formulas, exactly as written, for one sample ----------------------- */

enum { EQ15, EQ15_LABEL, EQ16, EQ17_HT, EQ17_WH, EQ17_BH, N_EQ };

static const struct {
    const char *eq, *grad, *formula, *aside, *why;
} eqs[N_EQ] = {
    [EQ15] = {"15", "dl/dy~_i", "y^_i - y_i", "", NULL},
    [EQ15_LABEL] =
        {"15", "dl/dy^_i", "y^_i - y_i", "   (as its vector is labelled)",
         "the vector in answer 15 labels its entries dl/dy^_k, but dl/dy^_k = -y_k / y^_k;\n"
         "        its values y^_k - y_k are dl/dy~_k: the labels slipped, not the derivation."},
    [EQ16] = {"16", "dl/dW_y,ij", "sum_k (y^_k - y_k) h_j", "",
              "dy~_k/dW_y,ij is h_j only for k = i and 0 otherwise, so the sum over k keeps one\n"
              "        term, (y^_i - y_i) h_j; summing every k gives h_j (1 - 1) = 0 for every "
              "element."},
    [EQ17_HT] = {"17", "dl/dh~_i", "(1 - h_i^2) sum_k (y^_k - y_k) W_y,ki", "", NULL},
    [EQ17_WH] = {"17", "dl/dW_h,ij", "((1 - h_i^2) sum_k (y^_k - y_k) W_y,ki) x_j", "", NULL},
    [EQ17_BH] = {"17", "dl/db_h,i", "(1 - h_i^2) sum_k (y^_k - y_k) W_y,ki", "", NULL},
};

/* The printer's output, indented to sit inside the example's own layout. tmpfile() is plain C. */
static void print_indented(const tg_gradcheck_report *r, const char *indent) {
    FILE *f = tmpfile();
    if (!f) {
        tg_gradcheck_print(r, stdout);
        return;
    }
    tg_gradcheck_print(r, f);
    rewind(f);
    char line[512];
    while (fgets(line, sizeof line, f))
        printf("%s%s", indent, line);
    fclose(f);
}

/* The report's formula for equation `eq`, for sample s, into g (row-major, the tensor's shape). */
static void report_formula(int eq, const params *p, const sample *s, double *g) {
    double dht[NH]; /* answer 17's dl/dh~_i */
    for (int i = 0; i < NH; i++) {
        double acc = 0;
        for (int k = 0; k < NY; k++)
            acc += (s->yh[k] - s->y[k]) * p->Wy[k][i];
        dht[i] = (1 - s->h[i] * s->h[i]) * acc;
    }
    switch (eq) {
    case EQ15:
    case EQ15_LABEL:
        for (int i = 0; i < NY; i++)
            g[i] = s->yh[i] - s->y[i];
        break;
    case EQ16: /* sum_k (y^_k - y_k) h_j, as written: the same for every row i */
        for (int i = 0; i < NY; i++)
            for (int j = 0; j < NH; j++) {
                double acc = 0;
                for (int k = 0; k < NY; k++)
                    acc += (s->yh[k] - s->y[k]) * s->h[j];
                g[i * NH + j] = acc;
            }
        break;
    case EQ17_HT:
    case EQ17_BH: memcpy(g, dht, sizeof dht); break;
    case EQ17_WH:
        for (int i = 0; i < NH; i++)
            for (int j = 0; j < NX; j++)
                g[i * NX + j] = dht[i] * s->x[j];
        break;
    }
}

/* Runs one equation on sample n. Returns the report (caller frees). */
static tg_gradcheck_report *check_report_eq(int eq, const params *p, const sample *s, int n,
                                            tg_tensor *const *par) {
    double g[NH * NX];
    report_formula(eq, p, &s[n], g);
    tg_tensor *X = rows("x", s, n, 1, ROW_X), *Y = rows("y", s, n, 1, ROW_Y);
    tg_gradcheck_report *r;
    if (eq == EQ15 || eq == EQ15_LABEL || eq == EQ17_HT) {
        /* A gradient with respect to an intermediate: check L as a function of that value. */
        const int what = eq == EQ15 ? ROW_YT : eq == EQ15_LABEL ? ROW_YH : ROW_HT;
        tg_tensor *v = rows(eq == EQ15 ? "y~" : eq == EQ15_LABEL ? "y^" : "h~", s, n, 1, what);
        tg_tensor_set_requires_grad(v, 1);
        tg_tensor *mine = leaf("yours", 2, tg_tensor_shape(v), g);
        tg_tensor *in[4] = {v, Y, par[4], par[5]};
        tg_tensor *yours[4] = {mine, NULL, NULL, NULL};
        only_grad(in + 1, 3, -1);
        r = check(eq == EQ15         ? loss_of_ytilde
                  : eq == EQ15_LABEL ? loss_of_yhat
                                     : loss_of_htilde,
                  in, eq == EQ17_HT ? 4 : 2, yours);
        tg_tensor_free(v);
        tg_tensor_free(mine);
    } else {
        const int which = eq == EQ16 ? 4 : eq == EQ17_WH ? 2 : 3;
        tg_tensor *mine = leaf("yours", tg_tensor_rank(par[which]), tg_tensor_shape(par[which]), g);
        tg_tensor *in[6] = {X, Y, par[2], par[3], par[4], par[5]};
        tg_tensor *yours[6] = {NULL};
        yours[which] = mine;
        only_grad(in, 6, which);
        r = check(loss_of_params, in, 6, yours);
        tg_tensor_free(mine);
    }
    tg_tensor_free(X);
    tg_tensor_free(Y);
    return r;
}

/* ---- Part 2: the textbook derivation, batch form, mean loss ---------------------------------- */

/* For rows [first, first + N):  D = (Y^ - Y) / N = dL/dy~;  dW_y = D^T H;  db_y = sum_n D_n;
 * G = (D W_y) * (1 - H^2) = dL/dh~;  dW_h = G^T X;  db_h = sum_n G_n.
 * With `forget_mean`, D = Y^ - Y (the classic slip). */
typedef struct grads {
    double D[NB][NY], G[NB][NH], Wy[NY][NH], by[NY], Wh[NH][NX], bh[NH];
} grads;

static void textbook(const params *p, const sample *s, int N, int forget_mean, grads *g) {
    memset(g, 0, sizeof *g);
    const double inv_n = forget_mean ? 1.0 : 1.0 / N;
    for (int n = 0; n < N; n++) {
        for (int k = 0; k < NY; k++) {
            g->D[n][k] = (s[n].yh[k] - s[n].y[k]) * inv_n;
            g->by[k] += g->D[n][k];
            for (int j = 0; j < NH; j++)
                g->Wy[k][j] += g->D[n][k] * s[n].h[j];
        }
        for (int i = 0; i < NH; i++) {
            double back = 0;
            for (int k = 0; k < NY; k++)
                back += g->D[n][k] * p->Wy[k][i];
            g->G[n][i] = back * (1 - s[n].h[i] * s[n].h[i]);
            g->bh[i] += g->G[n][i];
            for (int j = 0; j < NX; j++)
                g->Wh[i][j] += g->G[n][i] * s[n].x[j];
        }
    }
}

enum { TB_YT, TB_WY, TB_BY, TB_HT, TB_WH, TB_BH, N_TB };
static const struct {
    const char *grad, *formula;
} tbs[N_TB] = {
    [TB_YT] = {"dL/dy~", "D = (Y^ - Y) / N"},
    [TB_WY] = {"dL/dW_y", "D^T H          (one sample: (y^_i - y_i) h_j)"},
    [TB_BY] = {"dL/db_y", "sum_n D_n      (one sample: y^ - y)"},
    [TB_HT] = {"dL/dh~", "G = (D W_y) * (1 - H^2), elementwise"},
    [TB_WH] = {"dL/dW_h", "G^T X"},
    [TB_BH] = {"dL/db_h", "sum_n G_n"},
};

typedef struct tb_result {
    int passed[N_TB];
    int64_t ok[N_TB], numel[N_TB];
    double max_err; /* max |yours - autodiff| over every element */
    tg_gradcheck_report *first_failure;
} tb_result;

static void note_tensor(tb_result *res, int which, const tg_gradcheck_tensor *c,
                        tg_gradcheck_report *r, int *keep) {
    res->passed[which] = c->passed;
    res->ok[which] = c->n_ok;
    res->numel[which] = c->numel;
    res->max_err = fmax(res->max_err, c->max_abs_err);
    if (!c->passed && !res->first_failure) {
        res->first_failure = r;
        *keep = 1;
    }
}

/* Checks the six textbook gradients on rows [0, N). */
static void check_textbook(const params *p, const sample *s, int N, int forget_mean,
                           tg_tensor *const *par, tb_result *res) {
    memset(res, 0, sizeof *res);
    grads g;
    textbook(p, s, N, forget_mean, &g);
    tg_tensor *X = rows("x", s, 0, N, ROW_X), *Y = rows("y", s, 0, N, ROW_Y);
    int keep = 0;

    /* The four parameters at once: one report with four tensors. */
    tg_tensor *mine[4] = {
        leaf("W_h", TG_SHAPE(NH, NX), &g.Wh[0][0]), leaf("b_h", TG_SHAPE(NH), g.bh),
        leaf("W_y", TG_SHAPE(NY, NH), &g.Wy[0][0]), leaf("b_y", TG_SHAPE(NY), g.by)};
    tg_tensor *in[6] = {X, Y, par[2], par[3], par[4], par[5]};
    tg_tensor *yours[6] = {NULL, NULL, mine[0], mine[1], mine[2], mine[3]};
    for (int i = 0; i < 6; i++)
        tg_tensor_set_requires_grad(in[i], i >= 2);
    tg_gradcheck_report *r = check(loss_of_params, in, 6, yours);
    const int order[4] = {TB_WH, TB_BH, TB_WY, TB_BY};
    for (int k = 0; k < 4; k++)
        note_tensor(res, order[k], &r->tensors[k], r, &keep);
    if (!keep)
        tg_gradcheck_report_free(r);
    for (int k = 0; k < 4; k++)
        tg_tensor_free(mine[k]);

    /* The two intermediates, each as the variable of L. */
    const int intermediates[2] = {TB_YT, TB_HT};
    for (int q = 0; q < 2; q++) {
        const int which = intermediates[q];
        keep = 0;
        const int yt = which == TB_YT;
        tg_tensor *v = rows(yt ? "y~" : "h~", s, 0, N, yt ? ROW_YT : ROW_HT);
        tg_tensor_set_requires_grad(v, 1);
        tg_tensor *m = leaf("yours", 2, tg_tensor_shape(v), yt ? &g.D[0][0] : &g.G[0][0]);
        tg_tensor *in2[4] = {v, Y, par[4], par[5]};
        tg_tensor *yours2[4] = {m, NULL, NULL, NULL};
        only_grad(in2 + 1, 3, -1);
        r = check(yt ? loss_of_ytilde : loss_of_htilde, in2, yt ? 2 : 4, yours2);
        note_tensor(res, which, &r->tensors[0], r, &keep);
        if (!keep)
            tg_gradcheck_report_free(r);
        tg_tensor_free(v);
        tg_tensor_free(m);
    }
    tg_tensor_free(X);
    tg_tensor_free(Y);
}

static const char *verdict(int passed) { return passed ? "PASS" : "FAIL"; }

int main(void) {
    /* Parameters and samples: seeded, so every run prints the same. */
    tg_rng rng;
    tg_rng_seed(&rng, 2021);
    params p;
    for (int i = 0; i < NH; i++) {
        for (int j = 0; j < NX; j++)
            p.Wh[i][j] = tg_rng_normal(&rng);
        p.bh[i] = 0.5 * tg_rng_normal(&rng);
    }
    for (int k = 0; k < NY; k++) {
        for (int i = 0; i < NH; i++)
            p.Wy[k][i] = tg_rng_normal(&rng);
        p.by[k] = 0.5 * tg_rng_normal(&rng);
    }
    sample s[NB];
    for (int n = 0; n < NB; n++) {
        for (int j = 0; j < NX; j++)
            s[n].x[j] = 3 * tg_rng_uniform(&rng) - 1.5;
        const int c = (int)tg_rng_below(&rng, NY);
        for (int k = 0; k < NY; k++)
            s[n].y[k] = k == c;
        forward(&p, &s[n]);
    }
    tg_tensor *par[6] = {NULL,
                         NULL,
                         leaf("W_h", TG_SHAPE(NH, NX), &p.Wh[0][0]),
                         leaf("b_h", TG_SHAPE(NH), p.bh),
                         leaf("W_y", TG_SHAPE(NY, NH), &p.Wy[0][0]),
                         leaf("b_y", TG_SHAPE(NY), p.by)};
    const tg_gradcheck_opts o = tg_gradcheck_defaults();

    printf(
        "Checking the course report's gradients with tapegrad\n"
        "====================================================\n"
        "Network 2-4-2:  h~ = W_h x + b_h,  h = tanh(h~),  y~ = W_y h + b_y,  y^ = softmax(y~),\n"
        "                l = -sum_k y_k log y^_k (one-hot y);  mini-batch: L = (1/N) sum_n l_n\n"
        "Parameters and %d samples drawn with seed 2021. Every check runs in float64 (eps %g,\n"
        "atol %g, rtol %g): your formula against autodiff, central differences as referee.\n\n",
        NB, o.eps, o.atol, o.rtol);

    /* Part 1. */
    printf("1. The report's equations, exactly as written, checked on each of samples 0..%d\n\n",
           NS - 1);
    printf("   %-4s %-11s %-45s %-10s %s\n", "ans", "gradient", "the report writes", "holds on",
           "verdict");
    int holds[N_EQ] = {0};
    tg_gradcheck_report *evidence[N_EQ] = {NULL};
    int evidence_sample[N_EQ] = {0};
    for (int eq = 0; eq < N_EQ; eq++) {
        for (int n = 0; n < NS; n++) {
            tg_gradcheck_report *r = check_report_eq(eq, &p, s, n, par);
            holds[eq] += r->passed;
            if (!r->passed && !evidence[eq]) {
                evidence[eq] = r;
                evidence_sample[eq] = n;
            } else {
                tg_gradcheck_report_free(r);
            }
        }
        char formula[96];
        snprintf(formula, sizeof formula, "%s%s", eqs[eq].formula, eqs[eq].aside);
        printf("   %-4s %-11s %-45s %d of %d     %s\n", eqs[eq].eq, eqs[eq].grad, formula,
               holds[eq], NS,
               holds[eq] == NS ? "HOLDS"
               : holds[eq]     ? "PARTLY"
                               : "FAILS");
    }
    printf("   %-4s %-11s %s\n", "-", "dl/db_y", "(the report gives no formula; see part 2)");
    for (int eq = 0; eq < N_EQ; eq++) {
        if (!evidence[eq])
            continue;
        printf("\n   Evidence against answer %s, %s = %s%s, on sample %d:\n", eqs[eq].eq,
               eqs[eq].grad, eqs[eq].formula, eqs[eq].aside, evidence_sample[eq]);
        print_indented(evidence[eq], "   ");
        if (eqs[eq].why)
            printf("   Why: %s\n", eqs[eq].why);
    }

    /* Part 2. */
    printf("\n2. The textbook derivation, in batch form (rows are samples; D = dL/dy~, G = "
           "dL/dh~)\n\n");
    tb_result one, batch, slip;
    check_textbook(&p, s, 1, 0, par, &one);
    check_textbook(&p, s, NB, 0, par, &batch);
    check_textbook(&p, s, NB, 1, par, &slip);
    printf("   %-9s %-47s %-12s %s\n", "gradient", "formula", "one sample", "mini-batch, N = 8");
    int textbook_ok = 1;
    for (int k = 0; k < N_TB; k++) {
        char a[32], b[32];
        snprintf(a, sizeof a, "%s %lld/%lld", verdict(one.passed[k]), (long long)one.ok[k],
                 (long long)one.numel[k]);
        snprintf(b, sizeof b, "%s %lld/%lld", verdict(batch.passed[k]), (long long)batch.ok[k],
                 (long long)batch.numel[k]);
        printf("   %-9s %-47s %-12s %s\n", tbs[k].grad, tbs[k].formula, a, b);
        textbook_ok &= one.passed[k] && batch.passed[k];
    }
    printf("   largest |yours - autodiff| over all elements: %.1e (one sample), %.1e (batch)\n",
           one.max_err, batch.max_err);
    int slip_caught = 1;
    for (int k = 0; k < N_TB; k++)
        slip_caught &= !slip.passed[k];
    printf("\n   Sensitivity: the same formulas with the 1/N of the mean forgotten (D = Y^ - Y):\n"
           "   %s on every gradient of the batch of 8%s\n",
           slip_caught ? "FAIL" : "not caught",
           slip_caught ? ", as it must: each element is 8 times too large." : "!");
    if (slip.first_failure) {
        const tg_gradcheck_tensor *c = NULL;
        for (int k = 0; k < slip.first_failure->n_tensors && !c; k++)
            if (!slip.first_failure->tensors[k].passed)
                c = &slip.first_failure->tensors[k];
        const tg_gradcheck_element *e = &c->elements[c->worst_index];
        char idx[32] = "[";
        for (int a = 0, rest = (int)e->index; a < c->rank; a++) {
            int stride = 1;
            for (int b = a + 1; b < c->rank; b++)
                stride *= (int)c->shape[b];
            snprintf(idx + strlen(idx), sizeof idx - strlen(idx), "%s%d%s", a ? "," : "",
                     rest / stride, a == c->rank - 1 ? "]" : "");
            rest %= stride;
        }
        printf("   e.g. %s%s: yours %+.6f, autodiff %+.6f, ratio %.3f\n", c->name, idx, e->yours,
               e->autodiff, e->yours / e->autodiff);
    }
    for (tb_result *t = &one; t; t = t == &one ? &batch : t == &batch ? &slip : NULL)
        tg_gradcheck_report_free(t->first_failure);

    /* Summary, from the results above. */
    printf("\nSummary\n");
    for (int answer = 15; answer <= 17; answer++) {
        char list[160] = "";
        for (int eq = 0; eq < N_EQ; eq++)
            if (holds[eq] == NS && atoi(eqs[eq].eq) == answer)
                snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s",
                         list[0] ? ", " : "", eqs[eq].grad);
        if (list[0])
            printf("   Answer %d is right: %s.\n", answer, list);
    }
    for (int eq = 0; eq < N_EQ; eq++) {
        if (holds[eq] == NS)
            continue;
        if (eq == EQ15_LABEL)
            printf("   Answer 15's vector is labelled dl/dy^ but holds dl/dy~: a notation slip.\n");
        else if (eq == EQ16)
            printf("   Answer 16 is wrong: as written it is 0 for every element; the correct\n"
                   "   gradient is dl/dW_y,ij = (y^_i - y_i) h_j.\n");
        else
            printf("   Answer %s, %s, does not hold.\n", eqs[eq].eq, eqs[eq].grad);
    }
    printf("   The report gives no dl/db_y; it is y^ - y for one sample, sum_n (y^_n - y_n) / N\n"
           "   for a mini-batch.\n");
    printf("   The textbook derivation %s for one sample and for a mini-batch of %d.\n",
           textbook_ok ? "passes every gradient" : "FAILS somewhere (see above)", NB);

    for (int eq = 0; eq < N_EQ; eq++)
        tg_gradcheck_report_free(evidence[eq]);
    for (int i = 2; i < 6; i++)
        tg_tensor_free(par[i]);
    return textbook_ok && slip_caught ? 0 : 1;
}
