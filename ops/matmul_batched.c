/* matmul_batched: y[..] = op(a[..]) op(b[..]) per batch, op(x) = x or x^T (trans_a, trans_b)
 *   a [..A, M, K] (trans_a: [..A, K, M]), b [..B, K, N] (trans_b: [..B, N, K]), y [..Y, M, N]
 *   where the batch dims ..Y are NumPy's broadcast of ..A and ..B (torch.matmul for rank >= 2):
 *   [B,M,K] x [K,N], [1,M,K] x [B,K,N], [B,H,M,K] x [B,H,K,N].
 * Per batch, with A' = op(a), B' = op(b): dA' = dy B'^T and dB' = A'^T dy, so
 *   da += dy B'^T (trans_a: da += B' dy^T),  db += A'^T dy (trans_b: db += dy^T A').
 * A batch of a (or b) used by several output batches (broadcast) receives their sum, added in
 * increasing output batch. Saves the batch offsets of a and b for each output batch.
 * Threads: several batches are split over the threads (each batch's GEMM then runs on its
 * thread alone); a single batch's GEMM uses the threads itself. tg__gemm gives the same bits for
 * any thread count, and no sum is split, so the result does not depend on the thread count. */
#include "kernels/parallel.h"

typedef struct bmm_params {
    int trans_a, trans_b;
} bmm_params;

typedef struct bmm_saved {
    int64_t n;              /* output batches */
    int64_t *off_a, *off_b; /* [n] element offsets of each batch's matrix in a and b */
} bmm_saved;

typedef struct bmm_dims {
    int64_t M, K, N, lda, ldb, na, nb; /* na, nb: batches of a and b */
} bmm_dims;

static bmm_dims dims_of(const tg_tensor *y) {
    const bmm_params *p = y->params;
    const tg_tensor *a = y->inputs[0], *b = y->inputs[1];
    bmm_dims d;
    const int64_t a0 = a->shape[a->rank - 2], a1 = a->shape[a->rank - 1];
    const int64_t b0 = b->shape[b->rank - 2], b1 = b->shape[b->rank - 1];
    d.M = p->trans_a ? a1 : a0;
    d.K = p->trans_a ? a0 : a1;
    d.N = p->trans_b ? b0 : b1;
    d.lda = a1;
    d.ldb = b1;
    d.na = a0 * a1 != 0 ? a->numel / (a0 * a1) : 0;
    d.nb = b0 * b1 != 0 ? b->numel / (b0 * b1) : 0;
    return d;
}

static tg_status bmm_shape(tg_tensor *y, char *msg, size_t len) {
    const bmm_params *p = y->params;
    const tg_tensor *a = y->inputs[0], *b = y->inputs[1];
    char s1[TG_SHAPE_STR_LEN], s2[TG_SHAPE_STR_LEN];
    if (a->rank < 2 || b->rank < 2) {
        snprintf(msg, len, "needs tensors of rank >= 2 ([..,M,K] x [..,K,N]), got %s x %s",
                 tg__shape_str(a, s1, sizeof s1), tg__shape_str(b, s2, sizeof s2));
        return TG_ERR_SHAPE;
    }
    const int64_t Ka = p->trans_a ? a->shape[a->rank - 2] : a->shape[a->rank - 1];
    const int64_t Kb = p->trans_b ? b->shape[b->rank - 1] : b->shape[b->rank - 2];
    if (Ka != Kb) {
        snprintf(msg, len, "inner dimensions differ: %s%s x %s%s", tg__shape_str(a, s1, sizeof s1),
                 p->trans_a ? "^T" : "", tg__shape_str(b, s2, sizeof s2), p->trans_b ? "^T" : "");
        return TG_ERR_SHAPE;
    }
    /* The batch dims broadcast as NumPy's: headers over all but the last two axes. */
    tg_tensor ba = {.rank = a->rank - 2}, bb = {.rank = b->rank - 2}, by = {0};
    memcpy(ba.shape, a->shape, sizeof(int64_t) * (size_t)ba.rank);
    memcpy(bb.shape, b->shape, sizeof(int64_t) * (size_t)bb.rank);
    if (tg__bcast_shape(&ba, &bb, &by, msg, len) != TG_OK) {
        snprintf(msg, len, "batch dimensions of %s and %s do not broadcast",
                 tg__shape_str(a, s1, sizeof s1), tg__shape_str(b, s2, sizeof s2));
        return TG_ERR_SHAPE;
    }
    y->rank = by.rank + 2;
    memcpy(y->shape, by.shape, sizeof(int64_t) * (size_t)by.rank);
    y->shape[by.rank] = p->trans_a ? a->shape[a->rank - 1] : a->shape[a->rank - 2];
    y->shape[by.rank + 1] = p->trans_b ? b->shape[b->rank - 2] : b->shape[b->rank - 1];
    return TG_OK;
}

static int bmm_print(const tg_tensor *y, char *buf, size_t len) {
    const bmm_params *p = y->params;
    if (!p->trans_a && !p->trans_b)
        return 0;
    return snprintf(buf, len, "%s%s%s", p->trans_a ? "a^T" : "",
                    p->trans_a && p->trans_b ? ", " : "", p->trans_b ? "b^T" : "");
}

typedef struct bmm_job {
    const tg_tensor *y, *dy;
    tg_tensor *const *din;
    const bmm_saved *sv;
    bmm_dims d;
} bmm_job;

static void bmm_forward_batches(void *ctx, int64_t i0, int64_t i1) {
    const bmm_job *j = ctx;
    const tg_tensor *y = j->y, *a = y->inputs[0], *b = y->inputs[1];
    const bmm_params *p = y->params;
    const size_t es = tg__dtype_size(y->dtype);
    const bmm_dims d = j->d;
    for (int64_t i = i0; i < i1; i++)
        tg__gemm(y->dtype, p->trans_a, p->trans_b, d.M, d.N, d.K,
                 (const char *)a->data + (size_t)j->sv->off_a[i] * es, d.lda,
                 (const char *)b->data + (size_t)j->sv->off_b[i] * es, d.ldb, 0,
                 (char *)y->data + (size_t)(i * d.M * d.N) * es, d.N);
}

/* Batches of at least this many multiply-adds in all are worth splitting over threads. */
static int64_t min_batches(const bmm_dims *d) {
    const int64_t work = d->M * d->N * d->K;
    return work >= TG_PAR_MIN_ELEMS ? 2 : (TG_PAR_MIN_ELEMS + work - 1) / (work ? work : 1) + 1;
}

static tg_status bmm_forward(tg_tape *tape, tg_tensor *y) {
    bmm_saved *sv = tg__tape_alloc(tape, sizeof *sv);
    const int nb = y->rank - 2;
    const int64_t n =
        y->shape[nb] * y->shape[nb + 1] != 0 ? y->numel / (y->shape[nb] * y->shape[nb + 1]) : 0;
    int64_t *off = sv ? tg__tape_alloc_raw(tape, sizeof(int64_t) * (size_t)(2 * n + 1)) : NULL;
    if (!off)
        return TG_ERR_NOMEM;
    sv->n = n;
    sv->off_a = off;
    sv->off_b = off + n;
    y->saved = sv;
    const tg_tensor *a = y->inputs[0], *b = y->inputs[1];
    /* Strides of a's and b's batches along the output's batch axes (0 where broadcast). */
    int64_t sa[TG_MAX_RANK] = {0}, sb[TG_MAX_RANK] = {0};
    int64_t s = a->shape[a->rank - 2] * a->shape[a->rank - 1];
    for (int i = nb - 1, ia = a->rank - 3; i >= 0; i--, ia--) {
        const int64_t da = ia >= 0 ? a->shape[ia] : 1;
        sa[i] = da == 1 ? 0 : s;
        s *= da;
    }
    s = b->shape[b->rank - 2] * b->shape[b->rank - 1];
    for (int i = nb - 1, ib = b->rank - 3; i >= 0; i--, ib--) {
        const int64_t db = ib >= 0 ? b->shape[ib] : 1;
        sb[i] = db == 1 ? 0 : s;
        s *= db;
    }
    for (int64_t o = 0; o < n; o++) {
        int64_t r = o, oa = 0, ob = 0;
        for (int i = nb - 1; i >= 0; i--) {
            const int64_t k = r % y->shape[i];
            r /= y->shape[i];
            oa += k * sa[i];
            ob += k * sb[i];
        }
        sv->off_a[o] = oa;
        sv->off_b[o] = ob;
    }
    bmm_job j = {.y = y, .sv = sv, .d = dims_of(y)};
    if (y->numel == 0)
        return TG_OK;
    if (j.d.K == 0) { /* empty sums: tg__gemm is not asked for K = 0 */
        memset(y->data, 0, (size_t)y->numel * tg__dtype_size(y->dtype));
        return TG_OK;
    }
    if (n == 1)
        bmm_forward_batches(&j, 0, 1); /* the GEMM uses the threads */
    else if (n > 1)
        tg__parallel_range(n, min_batches(&j.d), bmm_forward_batches, &j);
    return TG_OK;
}

/* da for a's batches [i0, i1): each sums, in increasing output batch, the batches that read it. */
static void bmm_backward_a(void *ctx, int64_t i0, int64_t i1) {
    const bmm_job *j = ctx;
    const tg_tensor *y = j->y, *b = y->inputs[1];
    const bmm_params *p = y->params;
    const size_t es = tg__dtype_size(y->dtype);
    const bmm_dims d = j->d;
    char *da = j->din[0]->data;
    const char *dy = j->dy->data, *pb = b->data;
    for (int64_t i = i0; i < i1; i++) {
        int beta = !tg__dx_fresh(j->din[0]); /* a fresh da: the first product stores */
        for (int64_t o = 0; o < j->sv->n; o++) {
            if (j->sv->off_a[o] != i * d.M * d.K)
                continue;
            const char *g = dy + (size_t)(o * d.M * d.N) * es;
            const char *bo = pb + (size_t)j->sv->off_b[o] * es;
            char *dst = da + (size_t)(i * d.M * d.K) * es;
            if (!p->trans_a) /* da[M,K] += dy[M,N] B'^T */
                tg__gemm(y->dtype, false, !p->trans_b, d.M, d.K, d.N, g, d.N, bo, d.ldb, beta, dst,
                         d.K);
            else /* da[K,M] += B'[K,N] dy^T */
                tg__gemm(y->dtype, p->trans_b, true, d.K, d.M, d.N, bo, d.ldb, g, d.N, beta, dst,
                         d.M);
            beta = 1;
        }
    }
}

static void bmm_backward_b(void *ctx, int64_t i0, int64_t i1) {
    const bmm_job *j = ctx;
    const tg_tensor *y = j->y, *a = y->inputs[0];
    const bmm_params *p = y->params;
    const size_t es = tg__dtype_size(y->dtype);
    const bmm_dims d = j->d;
    char *db = j->din[1]->data;
    const char *dy = j->dy->data, *pa = a->data;
    for (int64_t i = i0; i < i1; i++) {
        int beta = !tg__dx_fresh(j->din[1]);
        for (int64_t o = 0; o < j->sv->n; o++) {
            if (j->sv->off_b[o] != i * d.K * d.N)
                continue;
            const char *g = dy + (size_t)(o * d.M * d.N) * es;
            const char *ao = pa + (size_t)j->sv->off_a[o] * es;
            char *dst = db + (size_t)(i * d.K * d.N) * es;
            if (!p->trans_b) /* db[K,N] += A'^T dy[M,N] */
                tg__gemm(y->dtype, !p->trans_a, false, d.K, d.N, d.M, ao, d.lda, g, d.N, beta, dst,
                         d.N);
            else /* db[N,K] += dy^T A'[M,K] */
                tg__gemm(y->dtype, true, p->trans_a, d.N, d.K, d.M, g, d.N, ao, d.lda, beta, dst,
                         d.K);
            beta = 1;
        }
    }
}

static void bmm_backward(const tg_tensor *y, const tg_tensor *dout, tg_tensor *const *din) {
    bmm_job j = {.y = y, .dy = dout, .din = din, .sv = y->saved, .d = dims_of(y)};
    if (j.sv->n == 0 || j.d.M == 0 || j.d.N == 0 || j.d.K == 0) {
        tg__dx_zero_if_fresh(din[0]); /* nothing flows (an empty sum contributes 0) */
        tg__dx_zero_if_fresh(din[1]);
        return;
    }
    if (din[0]) {
        if (j.d.na == 1)
            bmm_backward_a(&j, 0, 1);
        else
            tg__parallel_range(j.d.na, min_batches(&j.d), bmm_backward_a, &j);
    }
    if (din[1]) {
        if (j.d.nb == 1)
            bmm_backward_b(&j, 0, 1);
        else
            tg__parallel_range(j.d.nb, min_batches(&j.d), bmm_backward_b, &j);
    }
}

const tg__op_desc tg__op_matmul_batched = {
    .name = "matmul_batched",
    .saves = "the batch offsets of a and b (the operands by reference)",
    .min_inputs = 2,
    .flags = TG__OP_WRITES_GRAD,
    .max_inputs = 2,
    .params_size = sizeof(bmm_params),
    .shape = bmm_shape,
    .forward = bmm_forward,
    .backward = bmm_backward,
    .print_params = bmm_print,
    .rule = "da += dy op(b)^T, db += op(a)^T dy per batch, summed over broadcast batches",
};

tg_tensor *tg_matmul_batched_at(tg_tape *t, tg_tensor *a, tg_tensor *b, int trans_a, int trans_b,
                                const char *file, int line) {
    tg_tensor *in[2] = {a, b};
    bmm_params p = {trans_a != 0, trans_b != 0};
    return tg__record(t, &tg__op_matmul_batched, in, 2, &p, file, line);
}
