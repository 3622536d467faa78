/* embedding: y[p, :] = table[idx[p], :]     table [V,D], idx i32 of any shape S, y [S..., D]
 * (torch.nn.functional.embedding(idx, table)). y is a gather of rows, so
 * dtable[v, :] += sum over the positions p with idx[p] == v of dy[p, :]. The positions are added
 * in increasing p on one thread, so repeated indices give the same bits for any thread count.
 * Saves nothing: backward reads the indices, which the node references. */
#include "core/engine.h"

/* The position of flat element p of idx as "[i,j,...]". */
static void position_str(const tg_tensor *idx, int64_t p, char *buf, size_t len) {
    int64_t sub[TG_MAX_RANK] = {0};
    for (int k = idx->rank - 1; k >= 0; k--) {
        sub[k] = idx->shape[k] ? p % idx->shape[k] : 0;
        p = idx->shape[k] ? p / idx->shape[k] : 0;
    }
    size_t n = (size_t)snprintf(buf, len, "[");
    for (int k = 0; k < idx->rank && n < len; k++)
        n += (size_t)snprintf(buf + n, len - n, "%s%lld", k ? "," : "", (long long)sub[k]);
    if (n < len)
        snprintf(buf + n, len - n, "]");
}

static tg_status embedding_shape(tg_tensor *y, char *msg, size_t len) {
    const tg_tensor *table = y->inputs[0], *idx = y->inputs[1];
    char s1[TG_SHAPE_STR_LEN], s2[TG_SHAPE_STR_LEN];
    if (table->rank != 2) {
        snprintf(msg, len, "the table must be [V,D], got %s", tg__shape_str(table, s1, sizeof s1));
        return TG_ERR_SHAPE;
    }
    if (idx->dtype != TG_I32) {
        snprintf(msg, len, "the indices must be i32, got %s %s", tg__dtype_name(idx->dtype),
                 tg__shape_str(idx, s2, sizeof s2));
        return TG_ERR_DTYPE;
    }
    if (idx->rank > TG_MAX_RANK - 1) {
        snprintf(msg, len, "indices %s have rank %d; the output adds an axis (at most %d)",
                 tg__shape_str(idx, s2, sizeof s2), idx->rank, TG_MAX_RANK);
        return TG_ERR_SHAPE;
    }
    const int64_t V = table->shape[0];
    const int32_t *ix = idx->data;
    for (int64_t p = 0; p < idx->numel; p++)
        if (ix[p] < 0 || ix[p] >= V) {
            char pos[TG_SHAPE_STR_LEN];
            position_str(idx, p, pos, sizeof pos);
            snprintf(msg, len,
                     "index %d at position %s of the indices %s is out of range for a "
                     "table of V = %lld rows",
                     (int)ix[p], pos, tg__shape_str(idx, s2, sizeof s2), (long long)V);
            return TG_ERR_VALUE;
        }
    y->rank = idx->rank + 1;
    memcpy(y->shape, idx->shape, sizeof(int64_t) * (size_t)idx->rank);
    y->shape[idx->rank] = table->shape[1];
    return TG_OK;
}

static tg_status embedding_forward(tg_tape *tape, tg_tensor *y) {
    (void)tape;
    const tg_tensor *table = y->inputs[0], *idx = y->inputs[1];
    const int64_t D = table->shape[1];
    const size_t row = (size_t)D * tg__dtype_size(y->dtype);
    const int32_t *ix = idx->data;
    for (int64_t p = 0; p < idx->numel; p++)
        memcpy((char *)y->data + (size_t)p * row, (const char *)table->data + (size_t)ix[p] * row,
               row);
    return TG_OK;
}

static void embedding_backward(const tg_tensor *y, const tg_tensor *dout, tg_tensor *const *din) {
    if (!din[0])
        return; /* the engine decided the table needs no gradient */
    const tg_tensor *table = y->inputs[0], *idx = y->inputs[1];
    const int64_t D = table->shape[1];
    const int32_t *ix = idx->data;
    TG_FOR_DTYPE(y->dtype, T, const T *dy = dout->data; T *dt = din[0]->data;
                 for (int64_t p = 0; p < idx->numel; p++) {
                     T *r = dt + (int64_t)ix[p] * D;
                     const T *g = dy + p * D;
                     for (int64_t d = 0; d < D; d++) r[d] += g[d];
                 });
}

const tg__op_desc tg__op_embedding = {
    .name = "embedding",
    .saves = "nothing (backward reads the indices)",
    .min_inputs = 2,
    .max_inputs = 2,
    .index_inputs = 1u << 1, /* the indices */
    .shape = embedding_shape,
    .forward = embedding_forward,
    .backward = embedding_backward,
    .rule = "dtable[idx[p]] += dy[p] for every position p, in order",
};

tg_tensor *tg_embedding_at(tg_tape *t, tg_tensor *table, tg_tensor *idx, const char *file,
                           int line) {
    tg_tensor *in[2] = {table, idx};
    return tg__record(t, &tg__op_embedding, in, 2, NULL, file, line);
}
