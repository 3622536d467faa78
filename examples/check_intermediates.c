/* check_intermediates.c -- the course report's backward pass (answers 14-17), checked node by node
 * with tg_check_intermediates: not only the parameters' gradients but every intermediate one,
 * dl/dy^, dl/dy~, dl/dh, dl/dh~, so that a mistake shows where it is made, not only where it ends.
 *
 * The network of the report, one sample: n_x = 2, n_h = 4, n_y = 2,
 *     h~ = W_h x + b_h,  h = tanh(h~),  y~ = W_y h + b_y,  y^ = softmax(y~),
 *     l = -sum_k y_k log y^_k.
 * The loss function passes each intermediate through tg_probe, which lets the check perturb that
 * value itself (finite differences referee autodiff at every node).
 *
 * The student's derivation below is plain C, written from the formulas, never from tapegrad. It
 * is run twice: once with a deliberate mistake (tanh' taken at h~ instead of h: 1 - h~^2), once
 * corrected. dl/dW_y is stored in float32, as a training loop in float32 would store it: it comes
 * out "close", not "exact". Exit status 0 when the mistake is flagged at h~ and the corrected
 * derivation passes; 1 otherwise. */
#include "tapegrad.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { NX = 2, NH = 4, NY = 2 };

/* inputs: x [1,2], y [1,2] (one-hot), W_h [4,2], b_h [4], W_y [2,4], b_y [2]. */
static tg_tensor *net(tg_tape *t, tg_tensor *const *in, int n, tg_dtype dt, tg_probes *p, void *u) {
    (void)n, (void)dt, (void)u;
    tg_tensor *ht =
        tg_probe(p, t, tg_add(t, tg_matmul(t, in[0], tg_transpose(t, in[2])), in[3]), "h~");
    tg_tensor *h = tg_probe(p, t, tg_tanh(t, ht), "h");
    tg_tensor *yt = tg_probe(p, t, tg_add(t, tg_matmul(t, h, tg_transpose(t, in[4])), in[5]), "y~");
    tg_tensor *yh = tg_probe(p, t, tg_softmax(t, yt), "y^");
    return tg_neg(t, tg_sum(t, tg_mul(t, in[1], tg_log(t, yh)))); /* l = -sum_k y_k log y^_k */
}

/* ---- The student's side: forward and backward in plain C ------------------------------------- */

typedef struct net_values {
    double x[NX], y[NY], Wh[NH][NX], bh[NH], Wy[NY][NH], by[NY];
    double ht[NH], h[NH], yt[NY], yh[NY];
} net_values;

static void forward(net_values *v) {
    for (int i = 0; i < NH; i++) {
        v->ht[i] = v->bh[i];
        for (int j = 0; j < NX; j++)
            v->ht[i] += v->Wh[i][j] * v->x[j];
        v->h[i] = tanh(v->ht[i]);
    }
    double m = -INFINITY, z = 0;
    for (int k = 0; k < NY; k++) {
        v->yt[k] = v->by[k];
        for (int i = 0; i < NH; i++)
            v->yt[k] += v->Wy[k][i] * v->h[i];
        m = fmax(m, v->yt[k]);
    }
    for (int k = 0; k < NY; k++)
        z += exp(v->yt[k] - m);
    for (int k = 0; k < NY; k++)
        v->yh[k] = exp(v->yt[k] - m) / z;
}

/* Answer 14: l = -sum_i y_i y~_i + log sum_i e^(y~_i)  (using sum_i y_i = 1). */
static double answer14_loss(const net_values *v) {
    double lin = 0, z = 0;
    for (int i = 0; i < NY; i++) {
        lin += v->y[i] * v->yt[i];
        z += exp(v->yt[i]);
    }
    return -lin + log(z);
}

typedef struct derivation {
    double
        dyh[NY]; /* dl/dy^_k  = -y_k / y^_k                       (from answer 14's first line) */
    double dyt[NY];     /* dl/dy~_k  = y^_k - y_k                        (answer 15) */
    float dWy[NY][NH];  /* dl/dW_y,ij = (y^_i - y_i) h_j, in float32    (answer 16, corrected) */
    double dby[NY];     /* dl/db_y   = y^ - y */
    double dh[NH];      /* dl/dh_i   = sum_k (y^_k - y_k) W_y,ki          (answer 17) */
    double dht[NH];     /* dl/dh~_i  = (1 - h_i^2) dl/dh_i                (answer 17) */
    double dWh[NH][NX]; /* dl/dW_h,ij = dl/dh~_i x_j                   (answer 17) */
    double dbh[NH];     /* dl/db_h,i = dl/dh~_i                           (answer 17) */
} derivation;

/* The backward pass, node by node from the loss. With `mistake`, tanh' is taken at h~. */
static void backward(const net_values *v, int mistake, derivation *d) {
    for (int k = 0; k < NY; k++) {
        d->dyh[k] = -v->y[k] / v->yh[k];
        d->dyt[k] = v->yh[k] - v->y[k];
        d->dby[k] = d->dyt[k];
        for (int j = 0; j < NH; j++)
            d->dWy[k][j] = (float)(d->dyt[k] * v->h[j]);
    }
    for (int i = 0; i < NH; i++) {
        d->dh[i] = 0;
        for (int k = 0; k < NY; k++)
            d->dh[i] += d->dyt[k] * v->Wy[k][i];
        const double a = mistake ? v->ht[i] : v->h[i]; /* the deliberate mistake: 1 - h~^2 */
        d->dht[i] = (1 - a * a) * d->dh[i];
        d->dbh[i] = d->dht[i];
        for (int j = 0; j < NX; j++)
            d->dWh[i][j] = d->dht[i] * v->x[j];
    }
}

/* ---- Small helpers --------------------------------------------------------------------------- */

static tg_tensor *leaf(tg_dtype dt, const char *name, int rank, const int64_t *shape,
                       const void *data) {
    tg_tensor *t = tg_tensor_from(dt, rank, shape, data);
    if (!t) {
        fprintf(stderr, "check_intermediates: %s\n", tg_last_errmsg());
        exit(1);
    }
    tg_tensor_set_name(t, name);
    return t;
}

enum { N_GRADS = 8 };

/* Runs the check of one derivation. Returns the report (caller frees). */
static tg_intermediates_report *check(tg_tensor *const *in, const derivation *d) {
    tg_tensor *g[N_GRADS] = {
        leaf(TG_F64, "dl/dy^", TG_SHAPE(1, NY), d->dyh),
        leaf(TG_F64, "dl/dy~", TG_SHAPE(1, NY), d->dyt),
        leaf(TG_F32, "dl/dW_y", TG_SHAPE(NY, NH), &d->dWy[0][0]),
        leaf(TG_F64, "dl/db_y", TG_SHAPE(NY), d->dby),
        leaf(TG_F64, "dl/dh", TG_SHAPE(1, NH), d->dh),
        leaf(TG_F64, "dl/dh~", TG_SHAPE(1, NH), d->dht),
        leaf(TG_F64, "dl/dW_h", TG_SHAPE(NH, NX), &d->dWh[0][0]),
        leaf(TG_F64, "dl/db_h", TG_SHAPE(NH), d->dbh),
    };
    /* Any order will do: the report lists the nodes in the order backward reaches them. */
    const tg_node_grad mine[N_GRADS] = {{"y^", g[0]}, {"y~", g[1]}, {"W_y", g[2]}, {"b_y", g[3]},
                                        {"h", g[4]},  {"h~", g[5]}, {"W_h", g[6]}, {"b_h", g[7]}};
    tg_intermediates_report *r = tg_check_intermediates(net, in, 6, NULL, mine, N_GRADS, NULL);
    if (!r) {
        fprintf(stderr, "check_intermediates: %s\n", tg_last_errmsg());
        exit(1);
    }
    for (int k = 0; k < N_GRADS; k++)
        tg_tensor_free(g[k]);
    return r;
}

int main(void) {
    /* Parameters and one sample, seeded as in check_derivation, so every run prints the same. */
    tg_rng rng;
    tg_rng_seed(&rng, 2021);
    net_values v;
    for (int i = 0; i < NH; i++) {
        for (int j = 0; j < NX; j++)
            v.Wh[i][j] = tg_rng_normal(&rng);
        v.bh[i] = 0.5 * tg_rng_normal(&rng);
    }
    for (int k = 0; k < NY; k++) {
        for (int i = 0; i < NH; i++)
            v.Wy[k][i] = tg_rng_normal(&rng);
        v.by[k] = 0.5 * tg_rng_normal(&rng);
    }
    for (int j = 0; j < NX; j++)
        v.x[j] = 3 * tg_rng_uniform(&rng) - 1.5;
    const int c = (int)tg_rng_below(&rng, NY);
    for (int k = 0; k < NY; k++)
        v.y[k] = k == c;
    forward(&v);

    tg_tensor *in[6] = {leaf(TG_F64, "x", TG_SHAPE(1, NX), v.x),
                        leaf(TG_F64, "y", TG_SHAPE(1, NY), v.y),
                        leaf(TG_F64, "W_h", TG_SHAPE(NH, NX), &v.Wh[0][0]),
                        leaf(TG_F64, "b_h", TG_SHAPE(NH), v.bh),
                        leaf(TG_F64, "W_y", TG_SHAPE(NY, NH), &v.Wy[0][0]),
                        leaf(TG_F64, "b_y", TG_SHAPE(NY), v.by)};

    printf("Checking the course report's backward pass node by node\n"
           "========================================================\n"
           "One sample, seed 2021:  h~ = W_h x + b_h,  h = tanh(h~),  y~ = W_y h + b_y,\n"
           "                        y^ = softmax(y~),  l = -sum_k y_k log y^_k\n\n"
           "The derivation checked, from the loss back (plain C, one line per node):\n"
           "   node  ans  your gradient of l\n"
           "   y^    14   dl/dy^_k   = -y_k / y^_k\n"
           "   y~    15   dl/dy~_k   = y^_k - y_k\n"
           "   W_y   16   dl/dW_y,ij = (y^_i - y_i) h_j       (stored in float32)\n"
           "   b_y   -    dl/db_y,i  = y^_i - y_i\n"
           "   h     17   dl/dh_i    = sum_k (y^_k - y_k) W_y,ki\n"
           "   h~    17   dl/dh~_i   = (1 - h~_i^2) dl/dh_i   <- the deliberate mistake\n"
           "   W_h   17   dl/dW_h,ij = dl/dh~_i x_j\n"
           "   b_h   17   dl/db_h,i  = dl/dh~_i\n\n");

    const double l14 = answer14_loss(&v);
    derivation d;
    backward(&v, 1, &d);
    tg_intermediates_report *wrong = check(in, &d);
    const double dl = fabs(l14 - wrong->loss);
    printf("Answer 14, the loss: -sum_i y_i y~_i + log sum_i e^(y~_i) = %.12f\n"
           "          tapegrad's -sum_k y_k log y^_k                 = %.12f  (%s, diff %.1e)\n\n",
           l14, wrong->loss, dl <= 1e-12 * fabs(l14) ? "equal" : "DIFFERENT", dl);

    printf("1. With the mistake\n\n");
    tg_intermediates_print(wrong, stdout);
    const int flagged = !wrong->passed && wrong->first_wrong >= 0 &&
                        strcmp(wrong->nodes[wrong->first_wrong].check.name, "h~") == 0;

    backward(&v, 0, &d);
    tg_intermediates_report *right = check(in, &d);
    printf("\n2. Corrected: dl/dh~_i = (1 - h_i^2) dl/dh_i, since h = tanh(h~) and tanh' = 1 - "
           "tanh^2\n\n");
    tg_intermediates_print(right, stdout);

    printf("\nSummary\n"
           "   With the mistake: %s. The first wrong node is %s; W_h and b_h are\n"
           "   wrong only because they are computed from it, and every node before it is right.\n"
           "   Corrected: %s. dl/dW_y is close, not exact: it was stored in float32.\n",
           flagged ? "flagged" : "NOT FLAGGED",
           wrong->first_wrong >= 0 ? wrong->nodes[wrong->first_wrong].check.name : "(none)",
           right->passed ? "every node passes" : "STILL FAILING");
    const int ok = flagged && right->passed && dl <= 1e-12 * fabs(l14);
    tg_intermediates_report_free(wrong);
    tg_intermediates_report_free(right);
    for (int i = 0; i < 6; i++)
        tg_tensor_free(in[i]);
    return ok ? 0 : 1;
}
