/* check_hessian.c -- two Hessians a student derives, checked entry by entry with tg_hessian_check
 * against tapegrad's own second derivatives (central differences of its exact gradient, with a
 * Richardson step), each once right and once with a typical mistake:
 *
 * 1. Logistic regression, L(w) = (1/N) sum_n [log(1 + e^(z_n)) - y_n z_n], z = X w, p = sigmoid(z):
 *        H = X^T diag(p (1 - p)) X / N            mistake: the 1/N of the mean forgotten.
 *    Then the same Hessian for 200 features, given as a function returning H v and checked along
 *    random directions (a 200 x 200 matrix is never formed).
 * 2. The course report's 2-4-2 network, one sample, as a function of W_y [2,4]:
 *        d2l / dW_y,ij dW_y,kl = (diag(p) - p p^T)_ik h_j h_l,  i.e. (diag(p) - p p^T) (x) h h^T,
 *    with p = y^ = softmax(y~)          mistake: softmax's Jacobian with an index slipped,
 *    dp_i/dy~_k = p_i (delta_ik - p_i) instead of p_i (delta_ik - p_k), which is not symmetric.
 *
 * Every "yours" is plain C from the formula. Exit status 0 when the right derivations pass and
 * the mistakes are flagged; 1 otherwise. */
#include "tapegrad.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void die(const char *what) {
    fprintf(stderr, "check_hessian: %s: %s\n", what, tg_last_errmsg());
    exit(1);
}

static tg_tensor *leaf(const char *name, int rank, const int64_t *shape, const double *data) {
    tg_tensor *t = tg_tensor_from(TG_F64, rank, shape, data);
    if (!t)
        die(name);
    tg_tensor_set_name(t, name);
    return t;
}

static tg_hessian_report *check(tg_gradcheck_fn f, tg_tensor *const *in, int n, int wrt,
                                const tg_tensor *yours, tg_hvp_fn fn, void *fn_user) {
    tg_hessian_report *r = tg_hessian_check(f, in, n, NULL, wrt, yours, fn, fn_user, NULL);
    if (!r)
        die("tg_hessian_check");
    return r;
}

/* Prints the report indented, so the example's own structure stays visible. */
static void show(const tg_hessian_report *r) {
    FILE *f = tmpfile();
    if (!f) {
        tg_hessian_print(r, stdout);
        return;
    }
    tg_hessian_print(r, f);
    rewind(f);
    char line[512];
    while (fgets(line, sizeof line, f))
        printf("   %s", line);
    fclose(f);
}

/* ---- 1. Logistic regression ------------------------------------------------------------------ */

/* inputs: X [N,d], y [N,1] (0 or 1), w [d,1].  L = mean(log(1 + e^z) - y z), z = X w. */
static tg_tensor *logistic_loss(tg_tape *t, tg_tensor *const *in, int n, tg_dtype dt, void *u) {
    (void)n, (void)dt, (void)u;
    tg_tensor *z = tg_matmul(t, in[0], in[2]);
    tg_tensor *softplus = tg_log(t, tg_add_scalar(t, tg_exp(t, z), 1.0));
    return tg_mean(t, tg_sub(t, softplus, tg_mul(t, in[1], z)));
}

typedef struct logistic {
    int64_t N, d;
    double *X, *y, *w, *s; /* s_n = p_n (1 - p_n) */
} logistic;

static void logistic_make(logistic *lr, int64_t N, int64_t d, tg_rng *rng) {
    lr->N = N, lr->d = d;
    lr->X = malloc(sizeof(double) * (size_t)(N * d));
    lr->y = malloc(sizeof(double) * (size_t)N);
    lr->w = malloc(sizeof(double) * (size_t)d);
    lr->s = malloc(sizeof(double) * (size_t)N);
    if (!lr->X || !lr->y || !lr->w || !lr->s)
        exit(1);
    for (int64_t j = 0; j < d; j++)
        lr->w[j] = tg_rng_normal(rng) / sqrt((double)d);
    for (int64_t n = 0; n < N; n++) {
        double z = 0;
        for (int64_t j = 0; j < d; j++) {
            lr->X[n * d + j] = j == 0 ? 1.0 : tg_rng_normal(rng); /* column 0: the bias */
            z += lr->X[n * d + j] * lr->w[j];
        }
        const double p = 1 / (1 + exp(-z));
        lr->y[n] = tg_rng_uniform(rng) < p;
        lr->s[n] = p * (1 - p);
    }
}

static void logistic_free(logistic *lr) { free(lr->X), free(lr->y), free(lr->w), free(lr->s); }

/* H = X^T diag(s) X / N, or without the 1/N. */
static void logistic_hessian(const logistic *lr, int forget_mean, double *H) {
    const int64_t N = lr->N, d = lr->d;
    for (int64_t i = 0; i < d; i++)
        for (int64_t j = 0; j < d; j++) {
            double acc = 0;
            for (int64_t n = 0; n < N; n++)
                acc += lr->X[n * d + i] * lr->s[n] * lr->X[n * d + j];
            H[i * d + j] = forget_mean ? acc : acc / (double)N;
        }
}

/* H v = X^T (s * (X v)) / N, never forming H: your Hessian as a function. */
static tg_status logistic_hvp(const tg_tensor *x, const tg_tensor *v, tg_tensor *hv, void *user) {
    (void)x;
    const logistic *lr = user;
    const double *pv = tg_tensor_cdata(v);
    double *out = tg_tensor_data(hv);
    for (int64_t n = 0; n < lr->N; n++) {
        double xv = 0;
        for (int64_t j = 0; j < lr->d; j++)
            xv += lr->X[n * lr->d + j] * pv[j];
        for (int64_t i = 0; i < lr->d; i++)
            out[i] += lr->X[n * lr->d + i] * lr->s[n] * xv / (double)lr->N;
    }
    return TG_OK;
}

/* ---- 2. The 2-4-2 network as a function of W_y ----------------------------------------------- */

enum { NX = 2, NH = 4, NY = 2 };

/* inputs: x [1,2], y [1,2] (one-hot), W_h [4,2], b_h [4], W_y [2,4], b_y [2]. */
static tg_tensor *net_loss(tg_tape *t, tg_tensor *const *in, int n, tg_dtype dt, void *u) {
    (void)n, (void)dt, (void)u;
    tg_tensor *h = tg_tanh(t, tg_add(t, tg_matmul(t, in[0], tg_transpose(t, in[2])), in[3]));
    tg_tensor *yhat = tg_softmax(t, tg_add(t, tg_matmul(t, h, tg_transpose(t, in[4])), in[5]));
    return tg_neg(t, tg_sum(t, tg_mul(t, in[1], tg_log(t, yhat))));
}

/* d2l / dW_y,ij dW_y,kl = A_ik h_j h_l with A = softmax's Jacobian: A_ik = p_i (delta_ik - p_k),
 * or, with the slip, p_i (delta_ik - p_i). H as [2,4,2,4]. */
static void net_hessian(const double *p, const double *h, int slip, double *H) {
    for (int i = 0; i < NY; i++)
        for (int j = 0; j < NH; j++)
            for (int k = 0; k < NY; k++)
                for (int l = 0; l < NH; l++) {
                    const double A = p[i] * ((i == k) - (slip ? p[i] : p[k]));
                    H[((i * NH + j) * NY + k) * NH + l] = A * h[j] * h[l];
                }
}

int main(void) {
    tg_rng rng;
    tg_rng_seed(&rng, 2021);
    int ok = 1;
    printf("Checking hand-derived Hessians with tapegrad\n"
           "============================================\n"
           "Reference: central differences of tapegrad's exact gradient along each column\n"
           "(or random direction), float64, one Richardson step. Defaults: relative step 1e-3,\n"
           "atol 1e-6, rtol 1e-5.\n\n");

    /* 1. Logistic regression, 20 samples, 3 weights (a bias and two features). */
    logistic lr;
    logistic_make(&lr, 20, 3, &rng);
    tg_tensor *lin[3] = {leaf("X", TG_SHAPE(20, 3), lr.X), leaf("y", TG_SHAPE(20, 1), lr.y),
                         leaf("w", TG_SHAPE(3, 1), lr.w)};
    double H3[9];
    printf(
        "1. Logistic regression, N = 20, w [3,1]:  L = (1/N) sum_n log(1 + e^(z_n)) - y_n z_n\n\n"
        "   a) H = X^T diag(p (1 - p)) X / N\n");
    logistic_hessian(&lr, 0, H3);
    tg_tensor *mine = leaf("H", TG_SHAPE(3, 3), H3);
    tg_hessian_report *r = check(logistic_loss, lin, 3, 2, mine, NULL, NULL);
    show(r);
    ok &= r->passed;
    tg_hessian_report_free(r);
    tg_tensor_free(mine);

    printf("\n   b) the mistake: H = X^T diag(p (1 - p)) X   (the 1/N of the mean forgotten)\n");
    logistic_hessian(&lr, 1, H3);
    mine = leaf("H", TG_SHAPE(3, 3), H3);
    r = check(logistic_loss, lin, 3, 2, mine, NULL, NULL);
    show(r);
    ok &= !r->passed && r->n_mismatch == 9;
    tg_hessian_report_free(r);
    tg_tensor_free(mine);
    for (int i = 0; i < 3; i++)
        tg_tensor_free(lin[i]);
    logistic_free(&lr);

    printf("\n   c) 200 weights, N = 50: H v = X^T (p (1 - p) * (X v)) / N as a function\n");
    logistic big;
    logistic_make(&big, 50, 200, &rng);
    tg_tensor *bin[3] = {leaf("X", TG_SHAPE(50, 200), big.X), leaf("y", TG_SHAPE(50, 1), big.y),
                         leaf("w", TG_SHAPE(200, 1), big.w)};
    r = check(logistic_loss, bin, 3, 2, NULL, logistic_hvp, &big);
    show(r);
    ok &= r->passed && r->by_probes;
    tg_hessian_report_free(r);
    for (int i = 0; i < 3; i++)
        tg_tensor_free(bin[i]);
    logistic_free(&big);

    /* 2. The network, one sample; parameters as in check_derivation's draws. */
    double x[NX], y[NY] = {0}, Wh[NH * NX], bh[NH], Wy[NY * NH], by[NY], h[NH], p[NY];
    for (int i = 0; i < NH; i++) {
        for (int j = 0; j < NX; j++)
            Wh[i * NX + j] = tg_rng_normal(&rng);
        bh[i] = 0.5 * tg_rng_normal(&rng);
    }
    for (int k = 0; k < NY; k++) {
        for (int i = 0; i < NH; i++)
            Wy[k * NH + i] = tg_rng_normal(&rng);
        by[k] = 0.5 * tg_rng_normal(&rng);
    }
    for (int j = 0; j < NX; j++)
        x[j] = 3 * tg_rng_uniform(&rng) - 1.5;
    y[tg_rng_below(&rng, NY)] = 1;
    double z = 0, yt[NY];
    for (int i = 0; i < NH; i++) {
        double a = bh[i];
        for (int j = 0; j < NX; j++)
            a += Wh[i * NX + j] * x[j];
        h[i] = tanh(a);
    }
    for (int k = 0; k < NY; k++) {
        yt[k] = by[k];
        for (int i = 0; i < NH; i++)
            yt[k] += Wy[k * NH + i] * h[i];
        z += exp(yt[k]);
    }
    for (int k = 0; k < NY; k++)
        p[k] = exp(yt[k]) / z;
    tg_tensor *nin[6] = {leaf("x", TG_SHAPE(1, NX), x),     leaf("y", TG_SHAPE(1, NY), y),
                         leaf("W_h", TG_SHAPE(NH, NX), Wh), leaf("b_h", TG_SHAPE(NH), bh),
                         leaf("W_y", TG_SHAPE(NY, NH), Wy), leaf("b_y", TG_SHAPE(NY), by)};
    double H8[NY * NH * NY * NH];
    printf("\n2. The 2-4-2 network, one sample, l as a function of W_y [2,4] (H is 8 x 8,\n"
           "   given as [2,4,2,4]: entry [i,j,k,l] = d2l / dW_y,ij dW_y,kl)\n\n"
           "   a) H = (diag(p) - p p^T) (x) h h^T,  p = y^ = (%.4f, %.4f)\n",
           p[0], p[1]);
    net_hessian(p, h, 0, H8);
    mine = leaf("H", TG_SHAPE(NY, NH, NY, NH), H8);
    r = check(net_loss, nin, 6, 4, mine, NULL, NULL);
    show(r);
    ok &= r->passed && r->symmetric;
    tg_hessian_report_free(r);
    tg_tensor_free(mine);

    printf("\n   b) the mistake: dp_i/dy~_k = p_i (delta_ik - p_i), an index slipped in softmax's\n"
           "      Jacobian: right on the diagonal blocks (i = k), wrong and asymmetric off them\n");
    net_hessian(p, h, 1, H8);
    mine = leaf("H", TG_SHAPE(NY, NH, NY, NH), H8);
    r = check(net_loss, nin, 6, 4, mine, NULL, NULL);
    show(r);
    ok &= !r->passed && !r->symmetric;
    tg_hessian_report_free(r);
    tg_tensor_free(mine);
    for (int i = 0; i < 6; i++)
        tg_tensor_free(nin[i]);

    printf("\nSummary: %s\n", ok ? "the right Hessians pass; both mistakes are flagged, entry by "
                                   "entry."
                                 : "UNEXPECTED: see above.");
    return ok ? 0 : 1;
}
