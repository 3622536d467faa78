/* elu: y = x if x > 0, else a (e^x - 1) (a = alpha, PyTorch's default 1)   x [..], y same shape
 * dy/dx = 1 where x > 0, a e^x = y + a where x <= 0 (PyTorch's elu_backward tests x <= 0, so at
 * the kink x = 0 the gradient is a), so  dx += dy * (x > 0 ? 1 : y + a)  -- uses the saved output
 * y (and reads x for the test). */
#include "kernels/parallel.h"

#include <tgmath.h>

typedef struct elu_params {
    double alpha;
} elu_params;

static double alpha_of(const tg_tensor *y) { return ((const elu_params *)y->params)->alpha; }

static int elu_print(const tg_tensor *y, char *buf, size_t len) {
    return snprintf(buf, len, "alpha=%g", alpha_of(y));
}

/* Elements are independent: above TG_PAR_MIN_ELEMS the range is split over the threads. */
static void elu_forward_range(void *ctx, int64_t i0, int64_t i1) {
    tg_tensor *y = ctx;
    const tg_tensor *x = y->inputs[0];
    TG_FOR_DTYPE(y->dtype, T, const T a = (T)alpha_of(y); const T *px = x->data; T *py = y->data;
                 for (int64_t i = i0; i < i1; i++) py[i] = px[i] > 0 ? px[i] : a * expm1(px[i]););
}

static tg_status elu_forward(tg_tape *tape, tg_tensor *y) {
    (void)tape;
    tg__parallel_range(y->numel, TG_PAR_MIN_ELEMS, elu_forward_range, y);
    return TG_OK;
}

static void elu_backward_range(void *ctx, int64_t i0, int64_t i1) {
    const tg__backward_args *g = ctx;
    const tg_tensor *y = g->y;
    TG_FOR_DTYPE(y->dtype, T, const T a = (T)alpha_of(y); const T *px = y->inputs[0]->data;
                 const T *py = y->data; const T *dy = g->dout->data; T *dx = g->din[0]->data;
                 for (int64_t i = i0; i < i1; i++)
                     {
                     /* selects of a value or 0, then arithmetic for all: vectorizes */
                     const T up = dy[i], p = px[i] > 0 ? up : 0, q = px[i] > 0 ? 0 : up;
                     dx[i] += p + q * (py[i] + a);
                 });
}

static void elu_backward(const tg_tensor *y, const tg_tensor *dout, tg_tensor *const *din) {
    if (!din[0])
        return; /* the engine decided x needs no gradient */
    tg__backward_args g = {y, dout, din};
    tg__parallel_range(y->numel, TG_PAR_MIN_ELEMS, elu_backward_range, &g);
}

const tg__op_desc tg__op_elu = {
    .name = "elu",
    .saves = "its output y = elu(x), its input x (by reference) and alpha",
    .min_inputs = 1,
    .max_inputs = 1,
    .flags = TG__OP_ELEMENTWISE,
    .params_size = sizeof(elu_params),
    .local = "1 where x > 0, y + a where x <= 0",
    .shape = tg__shape_same,
    .print_params = elu_print,
    .forward = elu_forward,
    .backward = elu_backward,
    .rule = "dx += dy * (x > 0 ? 1 : y + a)",
};

tg_tensor *tg_elu_at(tg_tape *t, tg_tensor *x, double alpha, const char *file, int line) {
    elu_params p = {alpha};
    return tg__record(t, &tg__op_elu, &x, 1, &p, file, line);
}
