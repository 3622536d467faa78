/* shard.c -- which rows of a global batch each rank takes, and the epoch's order: plain
 * functions of their arguments, the same on every rank without any communication. */
#include "mpi_internal.h"

int64_t tg_mpi_shard(int rank, int world, const int64_t *batch, int64_t n, const int64_t **mine) {
    if (mine)
        *mine = NULL;
    if (!mine || (!batch && n > 0)) {
        tg__mpi_fail(TG_ERR_NULL, "tg_mpi_shard: %s is NULL", mine ? "batch" : "mine");
        return -1;
    }
    if (world < 1 || rank < 0 || rank >= world || n < 0) {
        tg__mpi_fail(TG_ERR_VALUE,
                     "tg_mpi_shard: need world >= 1, 0 <= rank < world and n >= 0; got rank %d, "
                     "world %d, n %lld",
                     rank, world, (long long)n);
        return -1;
    }
    /* Ranks 0 .. extra-1 take base + 1 rows, the others base: sizes differ by at most one. */
    const int64_t base = n / world, extra = n % world;
    const int64_t first = (int64_t)rank * base + (rank < extra ? rank : extra);
    *mine = batch ? batch + first : NULL;
    return base + (rank < extra ? 1 : 0);
}

double tg_mpi_shard_scale(int64_t rows, int64_t global_rows) {
    return global_rows > 0 ? (double)rows / (double)global_rows : 0.0;
}

tg_status tg_mpi_permutation(int64_t *perm, int64_t n, uint64_t seed, int64_t epoch) {
    if (!perm && n > 0)
        return tg__mpi_fail(TG_ERR_NULL, "tg_mpi_permutation: perm is NULL");
    if (n < 0)
        return tg__mpi_fail(TG_ERR_VALUE, "tg_mpi_permutation: n is %lld, must be >= 0",
                            (long long)n);
    /* One stream per (seed, epoch): the seed's first output, shifted by the epoch, seeds it. */
    tg_rng rng;
    tg_rng_seed(&rng, seed);
    tg_rng_seed(&rng, tg_rng_next(&rng) + (uint64_t)epoch * 0x9e3779b97f4a7c15ull);
    for (int64_t i = 0; i < n; i++)
        perm[i] = i;
    for (int64_t i = n - 1; i > 0; i--) {
        const int64_t j = (int64_t)tg_rng_below(&rng, (uint64_t)i + 1);
        const int64_t tmp = perm[i];
        perm[i] = perm[j];
        perm[j] = tmp;
    }
    return TG_OK;
}
