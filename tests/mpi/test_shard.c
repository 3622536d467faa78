/* test_shard.c -- the sharding of a global batch and the reference accumulation, simulated in one
 * process (no MPI call: these are plain functions). */
#include <tapegrad_mpi.h>

#include <criterion/criterion.h>
#include <string.h>

/* For every world size and batch length, the ranks' slices in rank order are the batch itself:
 * disjoint, covering, in order, sizes differing by at most one, larger ones first. */
Test(shard, ranks_in_order_make_up_the_batch) {
    int64_t batch[50];
    for (int i = 0; i < 50; i++)
        batch[i] = 1000 + 7 * i; /* arbitrary indices: the slices point into the array */
    for (int world = 1; world <= 9; world++) {
        for (int64_t n = 0; n <= 50; n++) {
            int64_t next = 0, prev_len = -1;
            for (int r = 0; r < world; r++) {
                const int64_t *mine = NULL;
                const int64_t len = tg_mpi_shard(r, world, batch, n, &mine);
                cr_assert_geq(len, 0, "world %d n %lld rank %d", world, (long long)n, r);
                cr_assert_eq(len, n / world + (r < n % world), "world %d n %lld rank %d", world,
                             (long long)n, r);
                if (len > 0)
                    cr_assert_eq(mine, batch + next, "world %d n %lld rank %d", world, (long long)n,
                                 r);
                if (prev_len >= 0)
                    cr_assert(len == prev_len || len == prev_len - 1);
                prev_len = len;
                next += len;
            }
            cr_assert_eq(next, n, "world %d n %lld: the slices cover %lld", world, (long long)n,
                         (long long)next);
        }
    }
}

Test(shard, scale_is_rows_over_global_batch) {
    cr_assert_eq(tg_mpi_shard_scale(3, 8), 0.375);
    cr_assert_eq(tg_mpi_shard_scale(0, 8), 0.0);
    cr_assert_eq(tg_mpi_shard_scale(8, 8), 1.0);
    cr_assert_eq(tg_mpi_shard_scale(1, 0), 0.0);
}

Test(shard, bad_arguments) {
    int64_t batch[4] = {0, 1, 2, 3};
    const int64_t *mine = batch;
    cr_assert_eq(tg_mpi_shard(2, 2, batch, 4, &mine), -1);
    cr_assert_null(mine);
    cr_assert_str_eq(tg_mpi_errmsg(), "tg_mpi_shard: need world >= 1, 0 <= rank < world and n "
                                      ">= 0; got rank 2, world 2, n 4");
    cr_assert_eq(tg_mpi_shard(0, 0, batch, 4, &mine), -1);
    cr_assert_eq(tg_mpi_shard(-1, 2, batch, 4, &mine), -1);
    cr_assert_eq(tg_mpi_shard(0, 2, batch, -1, &mine), -1);
    cr_assert_eq(tg_mpi_shard(0, 2, NULL, 4, &mine), -1);
    cr_assert_str_eq(tg_mpi_errmsg(), "tg_mpi_shard: batch is NULL");
    cr_assert_eq(tg_mpi_shard(0, 2, batch, 4, NULL), -1);
    cr_assert_eq(tg_mpi_shard(1, 3, NULL, 0, &mine), 0); /* an empty batch may be NULL */
}

/* Every rank draws the same permutation from (seed, epoch) alone; another epoch or seed gives
 * another one. */
Test(shard, permutation_depends_on_seed_and_epoch_only) {
    enum { N = 257 };
    int64_t a[N], b[N], c[N], d[N];
    cr_assert_eq(tg_mpi_permutation(a, N, 5, 3), TG_OK);
    cr_assert_eq(tg_mpi_permutation(b, N, 5, 3), TG_OK);
    cr_assert_eq(tg_mpi_permutation(c, N, 5, 4), TG_OK);
    cr_assert_eq(tg_mpi_permutation(d, N, 6, 3), TG_OK);
    cr_assert_arr_eq(a, b, sizeof a);
    cr_assert(memcmp(a, c, sizeof a) != 0);
    cr_assert(memcmp(a, d, sizeof a) != 0);
    int seen[N] = {0};
    for (int i = 0; i < N; i++) {
        cr_assert(a[i] >= 0 && a[i] < N);
        cr_assert_eq(seen[a[i]]++, 0, "%lld appears twice", (long long)a[i]);
    }
    cr_assert_eq(tg_mpi_permutation(NULL, 3, 1, 1), TG_ERR_NULL);
    cr_assert_eq(tg_mpi_permutation(a, -1, 1, 1), TG_ERR_VALUE);
    cr_assert_eq(tg_mpi_permutation(NULL, 0, 1, 1), TG_OK);
}

/* ---- tg_mpi_accumulate: the P shards' gradients, in one process ------------------------------ */

/* loss = mean over the rows of (w . x_i - t_i)^2 / 2 for a linear model w [1,3] (f64). */
typedef struct lin {
    tg_tensor *w;
    double x[8][3], t[8];
    tg_tensor *xb, *tb;
} lin;

static tg_tensor *lin_loss(tg_tape *tape, const int64_t *idx, int64_t n, void *user) {
    lin *l = user;
    tg_tensor_free(l->xb);
    tg_tensor_free(l->tb);
    l->xb = tg_tensor_new(TG_F64, 2, (const int64_t[]){n, 3});
    l->tb = tg_tensor_new(TG_F64, 2, (const int64_t[]){n, 1});
    for (int64_t i = 0; i < n; i++) {
        for (int j = 0; j < 3; j++)
            tg_tensor_set(l->xb, i * 3 + j, l->x[idx[i]][j]);
        tg_tensor_set(l->tb, i, l->t[idx[i]]);
    }
    tg_tensor *r = tg_sub(tape, tg_matmul_bt(tape, l->xb, l->w), l->tb);
    return tg_scale(tape, tg_mean(tape, tg_mul(tape, r, r)), 0.5);
}

/* Against the closed form: d/dw mean_i (w.x_i - t_i)^2 / 2 = mean_i (w.x_i - t_i) x_i over the
 * whole batch, whatever the number of shards (5 rows over 1, 2, 3 and 7 "ranks", one with empty
 * shards). */
Test(accumulate, shards_sum_to_the_whole_batch_gradient) {
    lin l = {0};
    tg_rng rng;
    tg_rng_seed(&rng, 3);
    for (int i = 0; i < 8; i++) {
        for (int j = 0; j < 3; j++)
            l.x[i][j] = tg_rng_normal(&rng);
        l.t[i] = tg_rng_normal(&rng);
    }
    l.w = tg_tensor_from(TG_F64, 2, (const int64_t[]){1, 3}, (const double[]){0.5, -1, 2});
    tg_tensor_set_requires_grad(l.w, 1);
    const int64_t batch[5] = {6, 1, 3, 0, 4};
    double expect[3] = {0}, expect_loss = 0;
    for (int i = 0; i < 5; i++) {
        const double *x = l.x[batch[i]];
        const double r = 0.5 * x[0] - x[1] + 2 * x[2] - l.t[batch[i]];
        expect_loss += r * r / 2 / 5;
        for (int j = 0; j < 3; j++)
            expect[j] += r * x[j] / 5;
    }
    tg_tape *t = tg_tape_new();
    const int worlds[4] = {1, 2, 3, 7};
    for (int k = 0; k < 4; k++) {
        double loss = -1;
        cr_assert_eq(tg_mpi_accumulate(t, &l.w, 1, worlds[k], batch, 5, lin_loss, &l, &loss), TG_OK,
                     "%s", tg_mpi_errmsg());
        cr_assert_float_eq(loss, expect_loss, 1e-12, "world %d", worlds[k]);
        for (int j = 0; j < 3; j++)
            cr_assert_float_eq(tg_tensor_get(tg_tensor_grad(l.w), j), expect[j], 1e-12,
                               "world %d, dw[%d]", worlds[k], j);
    }
    cr_assert_eq(tg_mpi_accumulate(t, &l.w, 1, 0, batch, 5, lin_loss, &l, NULL), TG_ERR_VALUE);
    cr_assert_eq(tg_mpi_accumulate(NULL, &l.w, 1, 2, batch, 5, lin_loss, &l, NULL), TG_ERR_NULL);
    tg_tape_free(t);
    tg_tensor_free(l.w);
    tg_tensor_free(l.xb);
    tg_tensor_free(l.tb);
}
