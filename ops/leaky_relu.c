/* leaky_relu: y = x if x > 0, else s x (s = negative_slope; PyTorch's default is 0.01)
 *                                        x [..], y same shape
 * dy/dx = 1 where x > 0, s where x <= 0 (at the kink x = 0 PyTorch takes s: its backward tests
 * x > 0), so  dx += dy * (x > 0 ? 1 : s)  -- reads the input x (y's sign is x's only for s >= 0). */
#include "kernels/parallel.h"

typedef struct leaky_relu_params {
    double slope;
} leaky_relu_params;

static double slope_of(const tg_tensor *y) { return ((const leaky_relu_params *)y->params)->slope; }

static int leaky_relu_print(const tg_tensor *y, char *buf, size_t len) {
    return snprintf(buf, len, "negative_slope=%g", slope_of(y));
}

/* Elements are independent: above TG_PAR_MIN_ELEMS the range is split over the threads. */
static void leaky_relu_forward_range(void *ctx, int64_t i0, int64_t i1) {
    tg_tensor *y = ctx;
    const tg_tensor *x = y->inputs[0];
    TG_FOR_DTYPE(y->dtype, T, const T s = (T)slope_of(y); const T *px = x->data; T *py = y->data;
                 /* two selects of a value or 0, then arithmetic for all: gcc vectorizes this (a
                    multiply under a condition it does not, as it may trap). A NaN goes to q; x = -0
                    gives +0 where PyTorch gives -0. */
                 for (int64_t i = i0; i < i1; i++) {
        const T v = px[i], p = v > 0 ? v : 0, q = v > 0 ? 0 : v;
        py[i] = p + s * q;
                 });
}

static tg_status leaky_relu_forward(tg_tape *tape, tg_tensor *y) {
    (void)tape;
    tg__parallel_range(y->numel, TG_PAR_MIN_ELEMS, leaky_relu_forward_range, y);
    return TG_OK;
}

static void leaky_relu_backward_range(void *ctx, int64_t i0, int64_t i1) {
    const tg__backward_args *g = ctx;
    const tg_tensor *y = g->y;
    TG_FOR_DTYPE(y->dtype, T, const T s = (T)slope_of(y); const T *px = y->inputs[0]->data;
                 const T *dy = g->dout->data; T *dx = g->din[0]->data;
                 for (int64_t i = i0; i < i1; i++) {
                     const T up = dy[i], p = px[i] > 0 ? up : 0, q = px[i] > 0 ? 0 : up;
                     dx[i] += p + s * q; /* as in forward: vectorizes */
                 });
}

static void leaky_relu_backward(const tg_tensor *y, const tg_tensor *dout, tg_tensor *const *din) {
    if (!din[0])
        return; /* the engine decided x needs no gradient */
    tg__backward_args g = {y, dout, din};
    tg__parallel_range(y->numel, TG_PAR_MIN_ELEMS, leaky_relu_backward_range, &g);
}

const tg__op_desc tg__op_leaky_relu = {
    .name = "leaky_relu",
    .saves = "its input x (by reference) and the slope s",
    .min_inputs = 1,
    .max_inputs = 1,
    .flags = TG__OP_ELEMENTWISE,
    .params_size = sizeof(leaky_relu_params),
    .local = "1 where x > 0, s where x <= 0",
    .shape = tg__shape_same,
    .print_params = leaky_relu_print,
    .forward = leaky_relu_forward,
    .backward = leaky_relu_backward,
    .rule = "dx += dy * (x > 0 ? 1 : s)",
};

tg_tensor *tg_leaky_relu_at(tg_tape *t, tg_tensor *x, double negative_slope, const char *file,
                            int line) {
    leaky_relu_params p = {negative_slope};
    return tg__record(t, &tg__op_leaky_relu, &x, 1, &p, file, line);
}
