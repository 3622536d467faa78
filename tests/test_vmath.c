/* The vectorized float32 exp, log, erf and tanh (src/kernels/vmath.c) against double precision:
 * every 97th bit pattern of the positive floats and their negatives (denormals, the range where
 * exp overflows or underflows, |x| past erf's and tanh's saturation included), on each SIMD path
 * the CPU runs. Error bounds: exp, log 1 ulp; erf, tanh 2 ulp. The two SIMD paths must agree
 * bit for bit, an element's result must not depend on its position in the array or the
 * array's length (the tails), and the special values are exact. */
#include "kernels/parallel.h"

#include <criterion/criterion.h>
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef void (*vm_fn)(const float *, float *, int64_t);

typedef struct vm_case {
    const char *name;
    vm_fn fn;
    double (*ref)(double);
    double max_ulp;
} vm_case;

static const vm_case cases[4] = {
    {"exp", tg__exp_f32, exp, 1.0},
    {"log", tg__log_f32, log, 1.0},
    {"erf", tg__erf_f32, erf, 2.0},
    {"tanh", tg__tanh_f32, tanh, 2.0},
};

static double ulp_of(float f) {
    f = fabsf(f);
    if (f < FLT_MIN)
        return ldexp(1.0, -149);
    if (f == FLT_MAX)
        return ldexp(1.0, 104);
    return nextafterf(f, INFINITY) - f;
}

/* The error of y against the exact value ref, in ulp of the float nearest ref; 0 when both are
 * the same infinity or both NaN, huge when only one is. */
static double ulp_err(float y, double ref) {
    const float rf = (float)ref;
    if (isnan(ref) || isnan(y))
        return isnan(ref) && isnan(y) ? 0 : 1e30;
    if (isinf(rf) || isinf(y))
        return y == rf ? 0 : 1e30;
    return fabs((double)y - ref) / ulp_of(rf);
}

static int isa_count(int *isas) {
    int n = 0;
    for (int isa = TG_VMATH_AVX2; isa <= TG_VMATH_AVX512; isa++)
        if (tg__vmath_set_isa(isa) == 0)
            isas[n++] = isa;
    tg__vmath_set_isa(TG_VMATH_PORTABLE);
    return n;
}

static void restore_isa(void) {
    for (int isa = TG_VMATH_AVX512; isa >= TG_VMATH_PORTABLE; isa--)
        if (tg__vmath_set_isa(isa) == 0)
            return;
}

static void sweep(const vm_case *c) {
    enum { CHUNK = 4099 };
    int isas[2];
    const int n_isa = isa_count(isas);
    if (n_isa == 0) {
        cr_log_info("%s: no SIMD path on this CPU (libm runs)", c->name);
        restore_isa();
        return;
    }
    float *x = malloc(sizeof(float) * CHUNK),
          *y[2] = {malloc(sizeof(float) * CHUNK), malloc(sizeof(float) * CHUNK)};
    cr_assert(x && y[0] && y[1]);
    double worst = 0;
    float worst_x = 0;
    int64_t mismatches = 0;
    uint32_t bits = 0;
    const uint32_t inf_bits = 0x7f800000u;
    while (bits < inf_bits) {
        int n = 0;
        for (; n < CHUNK && bits < inf_bits; n++, bits += 97) {
            float f;
            memcpy(&f, &bits, sizeof f);
            x[n] = (n & 1) ? -f : f;
        }
        for (int k = 0; k < n_isa; k++) {
            tg__vmath_set_isa(isas[k]);
            c->fn(x, y[k], n);
        }
        for (int i = 0; i < n; i++) {
            const double err = ulp_err(y[0][i], c->ref((double)x[i]));
            if (err > worst) {
                worst = err;
                worst_x = x[i];
            }
            if (n_isa == 2 && memcmp(&y[0][i], &y[1][i], sizeof(float)) != 0)
                mismatches++;
        }
    }
    restore_isa();
    cr_log_info("%s f32: worst error %.3f ulp at x = %.9g", c->name, worst, (double)worst_x);
    cr_expect_leq(worst, c->max_ulp, "%s: worst error %.3f ulp at x = %.9g", c->name, worst,
                  (double)worst_x);
    cr_expect_eq(mismatches, 0, "%s: AVX2 and AVX-512 differ at %lld inputs", c->name,
                 (long long)mismatches);
    free(x), free(y[0]), free(y[1]);
}

Test(vmath, exp_f32_within_one_ulp) { sweep(&cases[0]); }
Test(vmath, log_f32_within_one_ulp) { sweep(&cases[1]); }
Test(vmath, erf_f32_within_two_ulp) { sweep(&cases[2]); }
Test(vmath, tanh_f32_within_two_ulp) { sweep(&cases[3]); }

/* Near the branch points of each method, every float (not every 97th): 2^16 floats on each
 * side of each point, both signs. */
Test(vmath, every_float_near_the_branch_points) {
    const struct {
        int fn;
        float at;
    } points[] = {
        {0, 0.0f}, {0, 0.35f},   {0, 88.7f},   {0, -87.3f},    {0, -103.9f},
        {1, 1.0f}, {1, 0.7071f}, {1, 1.4142f}, {1, 0x1p-126f}, {2, 0.0f},
        {2, 1.0f}, {2, 2.5f},    {2, 3.92f},   {3, 0.625f},    {3, 10.0f},
    };
    enum { HALF = 1 << 16 };
    float *x = malloc(sizeof(float) * 2 * HALF), *y = malloc(sizeof(float) * 2 * HALF);
    cr_assert(x && y);
    for (size_t r = 0; r < sizeof points / sizeof points[0]; r++) {
        const vm_case *c = &cases[points[r].fn];
        double worst = 0;
        float worst_x = 0;
        for (int sgn = 0; sgn < 2; sgn++) {
            float f = points[r].at;
            for (int i = 0; i < HALF; i++)
                f = nextafterf(f, -INFINITY);
            for (int i = 0; i < 2 * HALF; i++, f = nextafterf(f, INFINITY))
                x[i] = sgn ? -f : f;
            c->fn(x, y, 2 * HALF);
            for (int i = 0; i < 2 * HALF; i++) {
                const double err = ulp_err(y[i], c->ref((double)x[i]));
                if (err > worst)
                    worst = err, worst_x = x[i];
            }
        }
        cr_expect_leq(worst, c->max_ulp, "%s near %g: %.3f ulp at x = %.9g", c->name,
                      (double)points[r].at, worst, (double)worst_x);
    }
    free(x), free(y);
}

Test(vmath, special_values) {
    enum { N = 11 };
    const float in[N] = {0.0f,    -0.0f,  INFINITY, -INFINITY, NAN,       100.0f,
                         -100.0f, 1e-30f, -1e-30f,  0x1p-149f, -0x1p-149f};
    const float want[4][N] = {
        {1, 1, INFINITY, 0, NAN, INFINITY, 3.72007598e-44f /* exp(-100), a denormal */, 1, 1, 1, 1},
        {-INFINITY, -INFINITY, INFINITY, NAN, NAN, 4.60517025f, NAN, -69.0775528f, NAN,
         -103.278931f, NAN},
        {0.0f, -0.0f, 1, -1, NAN, 1, -1, 1.12837917e-30f, -1.12837917e-30f, 0x1p-149f, -0x1p-149f},
        {0.0f, -0.0f, 1, -1, NAN, 1, -1, 1e-30f, -1e-30f, 0x1p-149f, -0x1p-149f},
    };
    int isas[2];
    const int n_isa = isa_count(isas);
    for (int k = -1; k < n_isa; k++) { /* libm, then each SIMD path */
        tg__vmath_set_isa(k < 0 ? TG_VMATH_PORTABLE : isas[k]);
        for (int f = 0; f < 4; f++) {
            float out[N], one[N];
            cases[f].fn(in, out, N);    /* a vector and a tail */
            for (int i = 0; i < N; i++) /* one at a time: each a tail of its own */
                cases[f].fn(in + i, one + i, 1);
            for (int i = 0; i < N; i++) {
                const float w = want[f][i];
                for (int pass = 0; pass < 2; pass++) {
                    const float o = pass ? one[i] : out[i];
                    if (isnan(w))
                        cr_expect(isnan(o), "isa %d: %s(%g) = %g, want NaN", k, cases[f].name,
                                  (double)in[i], (double)o);
                    else if (isfinite(w) && w != 0 && fabsf(w) != 1) /* an ordinary value */
                        cr_expect(ulp_err(o, cases[f].ref((double)in[i])) <= cases[f].max_ulp,
                                  "isa %d: %s(%g) = %a", k, cases[f].name, (double)in[i],
                                  (double)o);
                    else
                        cr_expect(o == w && signbit(o) == signbit(w),
                                  "isa %d: %s(%g) = %g, want %g", k, cases[f].name, (double)in[i],
                                  (double)o, (double)w);
                }
            }
        }
    }
    restore_isa();
}

/* An element's result is the same whatever its position and the array's length (each path's
 * tail goes through the vector code), and in place (y = x) gives the same as out of place. */
Test(vmath, same_result_at_any_position_and_in_place) {
    enum { N = 67 };
    float x[N], ref[N], y[N + 16], z[N];
    for (int i = 0; i < N; i++)
        x[i] = (float)(i - 30) * 0.37f + 0.011f * (float)(i % 7);
    for (int f = 0; f < 4; f++) {
        for (int i = 0; i < N; i++)
            cases[f].fn(x + i, ref + i, 1);
        for (int off = 0; off < 17; off++)
            for (int len = 1; off + len <= N; len += 5) {
                cases[f].fn(x + off, y, len);
                for (int i = 0; i < len; i++)
                    cr_assert(memcmp(&y[i], &ref[off + i], sizeof(float)) == 0,
                              "%s: x[%d] at position %d of %d: %a vs %a alone", cases[f].name,
                              off + i, i, len, (double)y[i], (double)ref[off + i]);
            }
        memcpy(z, x, sizeof z);
        cases[f].fn(z, z, N);
        cr_expect(memcmp(z, ref, sizeof z) == 0, "%s in place differs", cases[f].name);
    }
}
