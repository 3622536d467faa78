/* add: y = a + b                         a, b broadcastable (NumPy rules); y their broadcast shape
 * dy/da = 1 and dy/db = 1, so  da += dy,  db += dy,  each summed over the axes along which that
 * input was broadcast (TG_BCAST_FOR gives such axes stride 0, so `+=` does the sum).
 * Saves nothing: the derivative is the constant 1. */
#include "kernels/parallel.h"

static tg_status add_shape(tg_tensor *y, char *msg, size_t len) {
    return tg__bcast_shape(y->inputs[0], y->inputs[1], y, msg, len);
}

/* The two layouts a network's `x W + b` produces, taken without the 4-D broadcast loop (its
 * index arithmetic costs more than the adds on small tensors): both inputs the output's shape,
 * or a full and b one row of the last axis's length, repeated. Returns that row length (the
 * output's size for equal shapes), or 0 for another layout. Same sums, same order. */
static int64_t add_fast_row(const tg_tensor *y, const tg__bcast *bc) {
    const tg_tensor *a = y->inputs[0], *b = y->inputs[1];
    if (a->numel != y->numel)
        return 0;
    if (b->numel == y->numel)
        return y->numel;
    if (b->numel == bc->dim[bc->n - 1] && bc->stride_b[bc->n - 1] == 1 && b->numel > 0)
        return b->numel;
    return 0;
}

typedef struct add_rows {
    tg_tensor *y;
    int64_t row;
} add_rows;

/* Rows [r0, r1) of the fast layout: y = a + b (b one row, or a whole tensor when row = numel). */
static void add_forward_rows(void *ctx, int64_t r0, int64_t r1) {
    const add_rows *ar = ctx;
    const tg_tensor *y = ar->y, *a = y->inputs[0], *b = y->inputs[1];
    const int64_t row = ar->row;
    /* A short row (a layer's bias of 2..16) is repeated into a buffer of whole rows of about 64
     * elements, so the inner loop is long enough to vectorize; each output is still one add. */
    TG_FOR_DTYPE(y->dtype, T, const T *pa = a->data; const T *pb = b->data; T *py = y->data;
                 int64_t o = r0 * row; const int64_t end = r1 * row; if (row > 0 && row < 16) {
                     T rep[64];
                     const int64_t len = (64 / row) * row;
                     for (int64_t c = 0; c < len; c += row) for (int64_t k = 0; k < row; k++)
                         rep[c + k] = pb[k];
                     for (; o + len <= end; o += len)
                         for (int64_t c = 0; c < len; c++) py[o + c] = pa[o + c] + rep[c];
                 } for (; o < end; o += row) {
                     for (int64_t c = 0; c < row; c++) py[o + c] = pa[o + c] + pb[c];
                 });
}

/* y = a + b over elements [i0, i1), a and b of the output's shape. */
static void add_forward_same(void *ctx, int64_t i0, int64_t i1) {
    const tg_tensor *y = ctx, *a = y->inputs[0], *b = y->inputs[1];
    TG_FOR_DTYPE(y->dtype, T, const T *pa = a->data; const T *pb = b->data; T *py = y->data;
                 for (int64_t o = i0; o < i1; o++) py[o] = pa[o] + pb[o];);
}

/* da += dy over elements [i0, i1) (a has the output's shape). */
static void add_backward_da(void *ctx, int64_t i0, int64_t i1) {
    const tg__backward_args *g = ctx;
    const tg_tensor *y = g->y;
    if (tg__dx_fresh(g->din[0])) {
        memcpy((char *)g->din[0]->data + i0 * (int64_t)tg__dtype_size(y->dtype),
               (const char *)g->dout->data + i0 * (int64_t)tg__dtype_size(y->dtype),
               (size_t)(i1 - i0) * tg__dtype_size(y->dtype));
        return;
    }
    TG_FOR_DTYPE(y->dtype, T, const T *dy = g->dout->data; T *da = g->din[0]->data;
                 for (int64_t o = i0; o < i1; o++) da[o] += dy[o];);
}

static tg_status add_forward(tg_tape *tape, tg_tensor *y) {
    (void)tape;
    const tg_tensor *a = y->inputs[0], *b = y->inputs[1];
    tg__bcast bc;
    tg__bcast_init(&bc, a, b, y);
    const int64_t row = add_fast_row(y, &bc);
    if (row && row == y->numel) { /* same shapes: elements are independent */
        tg__parallel_range(y->numel, TG_PAR_MIN_ELEMS, add_forward_same, y);
        return TG_OK;
    }
    if (row) {
        /* rows are independent: split them over the threads above the size threshold */
        add_rows ar = {y, row};
        const int64_t rows = y->numel / row;
        tg__parallel_range(rows, (TG_PAR_MIN_ELEMS + row - 1) / row, add_forward_rows, &ar);
        return TG_OK;
    }
    TG_FOR_DTYPE(y->dtype, T, const T *pa = a->data; const T *pb = b->data; T *py = y->data;
                 TG_BCAST_FOR(bc, o, ia, ib, py[o] = pa[ia] + pb[ib];););
    return TG_OK;
}

static void add_backward(const tg_tensor *y, const tg_tensor *dout, tg_tensor *const *din) {
    const tg_tensor *a = y->inputs[0], *b = y->inputs[1];
    tg__bcast bc;
    tg__bcast_init(&bc, a, b, y);
    const int64_t row = add_fast_row(y, &bc);
    if (row) {
        tg__backward_args g = {y, dout, din};
        if (din[0]) /* elements are independent: threaded above the size threshold */
            tg__parallel_range(y->numel, TG_PAR_MIN_ELEMS, add_backward_da, &g);
        /* db: a sum over rows, in row order on one thread (the order fixes the bits); a short
         * row (a layer's bias of 2..8) is summed in registers, with its length known. */
        if (din[1] && row == y->numel && tg__dx_fresh(din[1])) { /* b of y's shape: a copy */
            memcpy(din[1]->data, dout->data, (size_t)y->numel * tg__dtype_size(y->dtype));
        } else if (din[1]) {
            const bool fresh = tg__dx_fresh(din[1]); /* the sum starts from 0, not db */
            if (fresh && row > 8)
                memset(din[1]->data, 0, (size_t)row * tg__dtype_size(y->dtype));
            switch (row) {
#define ADD_DB_CASE(RR)                                                                            \
    case RR:                                                                                       \
        TG_FOR_DTYPE(y->dtype, T, const T *dy = dout->data; T *db = din[1]->data; T acc[RR];    \
                     for (int c = 0; c < (RR); c++) acc[c] = fresh ? 0 : db[c];                    \
                     for (int64_t o = 0; o < y->numel; o += (RR))                                  \
                         for (int c = 0; c < (RR); c++) acc[c] += dy[o + c];                       \
                     for (int c = 0; c < (RR); c++) db[c] = acc[c];);          \
        break;
                ADD_DB_CASE(1) ADD_DB_CASE(2) ADD_DB_CASE(3) ADD_DB_CASE(4)
                ADD_DB_CASE(5) ADD_DB_CASE(6) ADD_DB_CASE(7) ADD_DB_CASE(8)
#undef ADD_DB_CASE
            default:
                TG_FOR_DTYPE(y->dtype, T, const T *dy = dout->data; T *db = din[1]->data;
                             for (int64_t o = 0; o < y->numel; o += row) {
                                 for (int64_t c = 0; c < row; c++) db[c] += dy[o + c];
                             });
            }
        }
        return;
    }
    tg__dx_zero_if_fresh(din[0]); /* broadcast sums add into their gradients */
    tg__dx_zero_if_fresh(din[1]);
    TG_FOR_DTYPE(y->dtype, T, const T *dy = dout->data;
                 T *da = din[0] ? din[0]->data : NULL; T *db = din[1] ? din[1]->data : NULL;
                 if (da) TG_BCAST_FOR(bc, o, ia, ib, (void)ib; da[ia] += dy[o];);
                 if (db) TG_BCAST_FOR(bc, o, ia, ib, (void)ia; db[ib] += dy[o];););
}

/* da = dy exactly when a has the output's shape (no axis of a was broadcast). */
static bool add_grad_is_dy(const tg_tensor *y, int k) { return y->inputs[k]->numel == y->numel; }

const tg__op_desc tg__op_add = {
    .name = "add",
    .saves = "nothing (the derivative is 1)",
    .min_inputs = 2,
    .max_inputs = 2,
    .flags = TG__OP_BROADCAST | TG__OP_WRITES_GRAD,
    .shape = add_shape,
    .forward = add_forward,
    .backward = add_backward,
    .rule = "da += dy, db += dy",
    .grad_is_dy = add_grad_is_dy,
};

tg_tensor *tg_add_at(tg_tape *t, tg_tensor *a, tg_tensor *b, const char *file, int line) {
    tg_tensor *in[2] = {a, b};
    return tg__record(t, &tg__op_add, in, 2, NULL, file, line);
}
