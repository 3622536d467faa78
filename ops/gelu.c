/* gelu: y = x Phi(x), Phi the standard normal CDF          x [..], y same shape
 * approximate = 0 (PyTorch's approximate='none'): Phi(x) = (1 + erf(x / sqrt 2)) / 2, and
 *   dy/dx = Phi(x) + x phi(x),  phi(x) = e^(-x^2/2) / sqrt(2 pi)
 * approximate = 1 (PyTorch's approximate='tanh'): y = x (1 + t) / 2, t = tanh(u),
 *   u = sqrt(2/pi) (x + 0.044715 x^3), and
 *   dy/dx = (1 + t) / 2 + (x / 2) (1 - t^2) sqrt(2/pi) (1 + 3 * 0.044715 x^2)
 * so  dx += dy * dy/dx  -- forward saves Phi(x) (erf form) or t (tanh form); PyTorch's formulas,
 * term for term. */
#include "kernels/parallel.h"

#include <tgmath.h>

#define GELU_SQRT1_2 0.70710678118654752440      /* 1/sqrt(2) */
#define GELU_INV_SQRT_2PI 0.39894228040143267794 /* 1/sqrt(2 pi) */
#define GELU_SQRT_2_PI 0.79788456080286535588    /* sqrt(2/pi) */
#define GELU_KAPPA 0.044715

typedef struct gelu_params {
    int approximate; /* 0: erf, 1: tanh */
} gelu_params;

static int approx_of(const tg_tensor *y) { return ((const gelu_params *)y->params)->approximate; }

static tg_status gelu_shape(tg_tensor *y, char *msg, size_t len) {
    const int a = approx_of(y);
    if (a != 0 && a != 1) {
        snprintf(msg, len, "approximate is %d; use 0 (the exact erf form) or 1 (the tanh form)", a);
        return TG_ERR_VALUE;
    }
    return tg__shape_same(y, msg, len);
}

static int gelu_print(const tg_tensor *y, char *buf, size_t len) {
    return snprintf(buf, len, "approximate=%s", approx_of(y) ? "tanh" : "none");
}

/* float32, erf form, in blocks that stay in the L1 cache: Phi = (1 + erf(x / sqrt 2)) / 2 with
 * the vector erf (src/kernels/vmath.c), y = x Phi. */
enum { GELU_BLOCK = 512 };

static void gelu_erf_forward_f32(const float *restrict x, float *restrict phi, float *restrict y,
                                 int64_t n) {
    for (int64_t i = 0; i < n; i++)
        phi[i] = x[i] * (float)GELU_SQRT1_2;
    tg__erf_f32(phi, phi, n);
    for (int64_t i = 0; i < n; i++) {
        phi[i] = 0.5f * (1 + phi[i]);
        y[i] = x[i] * phi[i];
    }
}

/* Elements are independent: above TG_PAR_MIN_ELEMS the range is split over the threads. */
static void gelu_forward_range(void *ctx, int64_t i0, int64_t i1) {
    tg_tensor *y = ctx;
    const tg_tensor *x = y->inputs[0];
    if (approx_of(y) == 0 && y->dtype == TG_F32) {
        for (int64_t b = i0; b < i1; b += GELU_BLOCK)
            gelu_erf_forward_f32((const float *)x->data + b, (float *)y->saved + b,
                                 (float *)y->data + b, i1 - b < GELU_BLOCK ? i1 - b : GELU_BLOCK);
        return;
    }
    if (approx_of(y) == 0) {
        const double *px = x->data;
        double *py = y->data, *phi = y->saved;
        for (int64_t i = i0; i < i1; i++) {
            phi[i] = 0.5 * (1 + erf(px[i] * GELU_SQRT1_2));
            py[i] = px[i] * phi[i];
        }
        return;
    }
    TG_FOR_DTYPE(y->dtype, T, const T *px = x->data; T *t = y->saved;
                 for (int64_t i = i0; i < i1; i++) /* u first, tanh'ed in place below */
                 t[i] = (T)GELU_SQRT_2_PI * (px[i] + (T)GELU_KAPPA * px[i] * px[i] * px[i]););
    if (y->dtype == TG_F32) /* 8 lanes at a time (src/kernels/vmath.c) */
        tg__tanh_f32((float *)y->saved + i0, (float *)y->saved + i0, i1 - i0);
    else
        for (int64_t i = i0; i < i1; i++)
            ((double *)y->saved)[i] = tanh(((double *)y->saved)[i]);
    TG_FOR_DTYPE(y->dtype, T, const T *px = x->data; T *py = y->data; const T *t = y->saved;
                 for (int64_t i = i0; i < i1; i++) py[i] = (T)0.5 * px[i] * (1 + t[i]););
}

static tg_status gelu_forward(tg_tape *tape, tg_tensor *y) {
    y->saved = tg__tape_alloc_raw(tape, (size_t)y->numel * tg__dtype_size(y->dtype));
    if (!y->saved)
        return TG_ERR_NOMEM;
    tg__parallel_range(y->numel, TG_PAR_MIN_ELEMS, gelu_forward_range, y);
    return TG_OK;
}

/* float32, erf form: dx += dy (Phi + x phi(x)), phi(x) = e^(-x^2/2) / sqrt(2 pi) with the
 * vector exp, a block at a time. */
static void gelu_erf_backward_f32(const float *restrict x, const float *restrict phi,
                                  const float *restrict dy, float *restrict dx, int64_t n,
                                  bool fresh) {
    float e[GELU_BLOCK];
    for (int64_t i = 0; i < n; i++)
        e[i] = -0.5f * x[i] * x[i];
    tg__exp_f32(e, e, n);
    for (int64_t i = 0; i < n; i++) {
        const float pdf = e[i] * (float)GELU_INV_SQRT_2PI;
        dx[i] = (fresh ? 0 : dx[i]) + dy[i] * (phi[i] + x[i] * pdf);
    }
}

/* float32, tanh form: the derivative from the saved t, in the order of the generic loop. */
static void gelu_tanh_backward_f32(const float *restrict x, const float *restrict t,
                                   const float *restrict dy, float *restrict dx, int64_t n,
                                   bool fresh) {
    for (int64_t i = 0; i < n; i++) {
        const float left = 0.5f * (1 + t[i]);
        const float right = 0.5f * x[i] * (1 - t[i] * t[i]) * (float)GELU_SQRT_2_PI *
                            (1 + 3 * (float)GELU_KAPPA * x[i] * x[i]);
        dx[i] = (fresh ? 0 : dx[i]) + dy[i] * (left + right);
    }
}

static void gelu_backward_range(void *ctx, int64_t i0, int64_t i1) {
    const tg__backward_args *g = ctx;
    const tg_tensor *y = g->y;
    const bool fresh = tg__dx_fresh(g->din[0]); /* store, not add (the same value either way) */
    if (y->dtype == TG_F32) {
        const float *x = y->inputs[0]->data, *sv = y->saved, *dy = g->dout->data;
        float *dx = g->din[0]->data;
        for (int64_t b = i0; b < i1; b += GELU_BLOCK) {
            const int64_t n = i1 - b < GELU_BLOCK ? i1 - b : GELU_BLOCK;
            if (approx_of(y) == 0)
                gelu_erf_backward_f32(x + b, sv + b, dy + b, dx + b, n, fresh);
            else
                gelu_tanh_backward_f32(x + b, sv + b, dy + b, dx + b, n, fresh);
        }
        return;
    }
    const double *px = y->inputs[0]->data, *sv = y->saved, *dy = g->dout->data;
    double *dx = g->din[0]->data;
    if (approx_of(y) == 0) {
        for (int64_t i = i0; i < i1; i++) {
            const double pdf = exp(-0.5 * px[i] * px[i]) * GELU_INV_SQRT_2PI;
            dx[i] = (fresh ? 0 : dx[i]) + dy[i] * (sv[i] + px[i] * pdf);
        }
        return;
    }
    for (int64_t i = i0; i < i1; i++) {
        const double x = px[i];
        const double left = 0.5 * (1 + sv[i]);
        const double right =
            0.5 * x * (1 - sv[i] * sv[i]) * GELU_SQRT_2_PI * (1 + 3 * GELU_KAPPA * x * x);
        dx[i] = (fresh ? 0 : dx[i]) + dy[i] * (left + right);
    }
}

static void gelu_backward(const tg_tensor *y, const tg_tensor *dout, tg_tensor *const *din) {
    if (!din[0])
        return; /* the engine decided x needs no gradient */
    tg__backward_args g = {y, dout, din};
    tg__parallel_range(y->numel, TG_PAR_MIN_ELEMS, gelu_backward_range, &g);
}

static int gelu_saved_views(const tg_tensor *y, tg__saved_view *views, int max) {
    if (max < 1 || !y->saved)
        return 0;
    const bool tanh_form = approx_of(y) == 1;
    views[0] = tg__view(tanh_form ? "t" : "Phi",
                        tanh_form ? "tanh(sqrt(2/pi) (x + 0.044715 x^3))" : "the normal CDF of x",
                        y->dtype, y->rank, y->shape, y->saved);
    return 1;
}

const tg__op_desc tg__op_gelu = {
    .name = "gelu",
    .saves = "its input x (by reference) and Phi(x) (erf form) or t = tanh(u) (tanh form)",
    .min_inputs = 1,
    .max_inputs = 1,
    .flags = TG__OP_ELEMENTWISE | TG__OP_WRITES_GRAD,
    .params_size = sizeof(gelu_params),
    .local = "Phi(x) + x phi(x)  (tanh form: (1 + t)/2 + x/2 (1 - t^2) u')",
    .shape = gelu_shape,
    .print_params = gelu_print,
    .saved_views = gelu_saved_views,
    .forward = gelu_forward,
    .backward = gelu_backward,
    .rule = "dx += dy * (Phi(x) + x phi(x)), or the tanh form's derivative",
};

tg_tensor *tg_gelu_at(tg_tape *t, tg_tensor *x, int approximate, const char *file, int line) {
    gelu_params p = {approximate};
    return tg__record(t, &tg__op_gelu, &x, 1, &p, file, line);
}
