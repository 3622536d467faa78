/* rng.c -- xoshiro256** seeded through splitmix64: the same numbers on every platform. */
#include "engine.h"

#include <math.h>

/* splitmix64 spreads one 64-bit seed over the four state words (so seed 0 is fine). */
static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void tg_rng_seed(tg_rng *rng, uint64_t seed) {
    if (!rng) {
        tg__set_last_error(TG_ERR_NULL, "tg_rng_seed: rng is NULL");
        return;
    }
    for (int i = 0; i < 4; i++)
        rng->s[i] = splitmix64(&seed);
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t tg_rng_next(tg_rng *rng) {
    if (!rng) {
        tg__set_last_error(TG_ERR_NULL, "tg_rng_next: rng is NULL; returned 0");
        return 0;
    }
    uint64_t *s = rng->s;
    const uint64_t result = rotl(s[1] * 5, 7) * 9;
    const uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

/* The top 53 bits as a fraction of 2^53: exact, uniform in [0, 1). */
double tg_rng_uniform(tg_rng *rng) {
    if (!rng) {
        tg__set_last_error(TG_ERR_NULL, "tg_rng_uniform: rng is NULL; returned NaN");
        return NAN;
    }
    return (double)(tg_rng_next(rng) >> 11) * 0x1.0p-53;
}

/* Box-Muller: one normal per call; 1 - u keeps log's argument in (0, 1]. */
double tg_rng_normal(tg_rng *rng) {
    if (!rng) {
        tg__set_last_error(TG_ERR_NULL, "tg_rng_normal: rng is NULL; returned NaN");
        return NAN;
    }
    double u1 = 1.0 - tg_rng_uniform(rng);
    double u2 = tg_rng_uniform(rng);
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586476925 * u2);
}

/* Lemire's multiply-and-reject: unbiased without a division in the common case. */
uint64_t tg_rng_below(tg_rng *rng, uint64_t n) {
    if (!rng) {
        tg__set_last_error(TG_ERR_NULL, "tg_rng_below: rng is NULL; returned 0");
        return 0;
    }
    if (n == 0)
        return 0;
    unsigned __int128 m = (unsigned __int128)tg_rng_next(rng) * n;
    uint64_t low = (uint64_t)m;
    if (low < n) {
        uint64_t threshold = -n % n;
        while (low < threshold) {
            m = (unsigned __int128)tg_rng_next(rng) * n;
            low = (uint64_t)m;
        }
    }
    return (uint64_t)(m >> 64);
}
