/* The vectorized float32 tanh (src/vmath.c) against double-precision tanh: at most 2 ulp over
 * the whole float range (every 97th bit pattern of the positive floats, and their negatives),
 * exact at the special values. Arrays of odd length so the scalar tail runs too. */
#include "kernels/parallel.h"

#include <criterion/criterion.h>
#include <float.h>
#include <math.h>
#include <stdlib.h>

static double ulp_of(float f) {
    f = fabsf(f);
    if (f < FLT_MIN)
        return ldexp(1.0, -149);
    return nextafterf(f, INFINITY) - f;
}

Test(vmath, tanh_f32_within_two_ulp) {
    enum { CHUNK = 4099 };
    float *x = malloc(sizeof(float) * CHUNK), *y = malloc(sizeof(float) * CHUNK);
    cr_assert(x && y);
    double worst = 0;
    float worst_x = 0;
    uint32_t bits = 0;
    const uint32_t inf_bits = 0x7f800000u;
    while (bits < inf_bits) {
        int n = 0;
        for (; n < CHUNK && bits < inf_bits; n++, bits += 97) {
            float f;
            memcpy(&f, &bits, sizeof f);
            x[n] = (n & 1) ? -f : f;
        }
        tg__tanh_f32(x, y, n);
        for (int i = 0; i < n; i++) {
            const double ref = tanh((double)x[i]);
            const double err = fabs((double)y[i] - ref) / ulp_of((float)ref);
            if (err > worst) {
                worst = err;
                worst_x = x[i];
            }
        }
    }
    cr_log_info("tanh f32: worst error %.3f ulp at x = %.9g", worst, (double)worst_x);
    cr_expect_leq(worst, 2.0, "worst error %.3f ulp at x = %.9g", worst, (double)worst_x);
    free(x), free(y);
}

Test(vmath, tanh_f32_special_values) {
    const float in[9] = {0.0f, -0.0f, INFINITY, -INFINITY, NAN, 100.0f, -100.0f, 1e-30f, -1e-30f};
    const float want[9] = {0.0f, -0.0f, 1.0f, -1.0f, NAN, 1.0f, -1.0f, 1e-30f, -1e-30f};
    float out[9];
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 0) /* the first 8 in one vector, the 9th in the scalar tail */
            tg__tanh_f32(in, out, 9);
        else /* one at a time: the scalar path */
            for (int i = 0; i < 9; i++)
                tg__tanh_f32(in + i, out + i, 1);
        for (int i = 0; i < 9; i++) {
            if (isnan(want[i]))
                cr_expect(isnan(out[i]), "pass %d: tanh(NaN) = %g", pass, (double)out[i]);
            else
                cr_expect(out[i] == want[i] && signbit(out[i]) == signbit(want[i]),
                          "pass %d: tanh(%g) = %g, want %g", pass, (double)in[i], (double)out[i],
                          (double)want[i]);
        }
    }
}
