/* relu: y = max(x, 0)                    x [..], y same shape
 * dy/dx = 1 where x > 0, 0 where x < 0; at the kink x = 0 we take 0 (the usual subgradient).
 * So  dx += dy * [y > 0]  -- the saved output y is the mask: y > 0 exactly where x > 0. */
#include "kernels/conv.h" /* tg__stream_min_bytes */
#include "kernels/parallel.h"

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

/* The float32 loops, written once and built twice: for the baseline ISA and, on x86-64, for
 * AVX-512 (streaming loops over tensors larger than the caches, which wider vectors run
 * faster), chosen at run time. Selects only: both builds give the same bits. */
/* y = x < 0 ? 0 : x with streaming stores (an output too large to stay in the caches, see
 * tg__stream_min_bytes), from the first 16-byte aligned y to the last whole vector; returns the
 * first index not done (the caller's loop does the rest). */
static int64_t relu_stream(const float *x, float *y, int64_t n) {
    int64_t i = 0;
#if defined(__SSE2__)
    for (; i < n && ((uintptr_t)(y + i) & 15) != 0; i++)
        y[i] = x[i] < 0 ? 0 : x[i];
    const __m128 zero = _mm_setzero_ps();
    for (; i + 4 <= n; i += 4) { /* x < 0 ? 0 : x (NaN kept): x and not the mask [x < 0] */
        const __m128 v = _mm_loadu_ps(x + i);
        _mm_stream_ps(y + i, _mm_andnot_ps(_mm_cmplt_ps(v, zero), v));
    }
    _mm_sfence();
#else
    (void)x, (void)y, (void)n;
#endif
    return i;
}

#define RELU_F32_LOOPS(sfx, attr)                                                                  \
    attr static void relu_fwd_f32_##sfx(const float *restrict x, float *restrict y, int64_t n,     \
                                        bool stream) {                                             \
        int64_t i = stream ? relu_stream(x, y, n) : 0;                                             \
        for (; i < n; i++)                                                                         \
            y[i] = x[i] < 0 ? 0 : x[i];                                                            \
    }                                                                                              \
    attr static void relu_bwd_f32_##sfx(const float *restrict y, const float *restrict dy,         \
                                        float *restrict dx, int64_t n, bool fresh) {               \
        if (fresh) {                                                                               \
            for (int64_t i = 0; i < n; i++) {                                                      \
                const float up = dy[i];                                                            \
                dx[i] = y[i] > 0 ? up : 0;                                                         \
            }                                                                                      \
            return;                                                                                \
        }                                                                                          \
        for (int64_t i = 0; i < n; i++) {                                                          \
            const float up = dy[i];                                                                \
            dx[i] += y[i] > 0 ? up : 0;                                                            \
        }                                                                                          \
    }
RELU_F32_LOOPS(base, )
#if defined(__x86_64__)
RELU_F32_LOOPS(wide, __attribute__((target("avx512f"))))
#endif

static bool relu_wide(void) {
#if defined(__x86_64__)
    return tg__have_avx512();
#else
    return false;
#endif
}

/* Elements are independent: above TG_PAR_MIN_ELEMS the range is split over the threads. */
static void relu_forward_range(void *ctx, int64_t i0, int64_t i1) {
    tg_tensor *y = ctx;
    const tg_tensor *x = y->inputs[0];
    if (y->dtype == TG_F32 && x->data != y->data) {
        const float *px = (const float *)x->data + i0;
        float *py = (float *)y->data + i0;
        const bool stream = (size_t)y->numel * sizeof(float) >= tg__stream_min_bytes();
#if defined(__x86_64__)
        if (relu_wide()) {
            relu_fwd_f32_wide(px, py, i1 - i0, stream);
            return;
        }
#endif
        relu_fwd_f32_base(px, py, i1 - i0, stream);
        return;
    }
    TG_FOR_DTYPE(y->dtype, T, const T *px = x->data; T *py = y->data;
                 /* x < 0 ? 0 : x, not x > 0 ? x : 0: a NaN passes through, as in PyTorch */
                 for (int64_t i = i0; i < i1; i++) py[i] = px[i] < 0 ? 0 : px[i];);
}

static tg_status relu_forward(tg_tape *tape, tg_tensor *y) {
    (void)tape;
    tg__parallel_range(y->numel, TG_PAR_MIN_ELEMS, relu_forward_range, y);
    return TG_OK;
}

static void relu_backward_range(void *ctx, int64_t i0, int64_t i1) {
    const tg__backward_args *g = ctx;
    const tg_tensor *y = g->y;
    if (y->dtype == TG_F32 && g->din[0]->data != y->data && g->din[0]->data != g->dout->data) {
        const float *py = (const float *)y->data + i0, *dy = (const float *)g->dout->data + i0;
        float *dx = (float *)g->din[0]->data + i0;
#if defined(__x86_64__)
        if (relu_wide()) {
            relu_bwd_f32_wide(py, dy, dx, i1 - i0, tg__dx_fresh(g->din[0]));
            return;
        }
#endif
        relu_bwd_f32_base(py, dy, dx, i1 - i0, tg__dx_fresh(g->din[0]));
        return;
    }
    TG_FOR_DTYPE(y->dtype, T, const T *py = y->data; const T *dy = g->dout->data;
                 T *dx = g->din[0]->data;
                 /* dy read unconditionally so the compiler can vectorize the select */
                 if (tg__dx_fresh(g->din[0])) {
                     for (int64_t i = i0; i < i1; i++) {
                         const T up = dy[i];
                         dx[i] = py[i] > 0 ? up : 0;
                     }
                 } else {
                     for (int64_t i = i0; i < i1; i++) {
                         const T up = dy[i];
                         dx[i] += py[i] > 0 ? up : 0;
                     }
                 });
}

static void relu_backward(const tg_tensor *y, const tg_tensor *dout, tg_tensor *const *din) {
    if (!din[0])
        return;
    tg__backward_args g = {y, dout, din};
    tg__parallel_range(y->numel, TG_PAR_MIN_ELEMS, relu_backward_range, &g);
}

const tg__op_desc tg__op_relu = {
    .name = "relu",
    .saves = "its output y, whose sign is the mask [x > 0]",
    .min_inputs = 1,
    .max_inputs = 1,
    .flags = TG__OP_ELEMENTWISE | TG__OP_WRITES_GRAD,
    .local = "[y > 0]",
    .shape = tg__shape_same,
    .forward = relu_forward,
    .backward = relu_backward,
    .rule = "dx += dy * [y > 0]",
};

tg_tensor *tg_relu_at(tg_tape *t, tg_tensor *x, const char *file, int line) {
    return tg__record(t, &tg__op_relu, &x, 1, NULL, file, line);
}
