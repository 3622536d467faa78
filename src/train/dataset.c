/* dataset.c -- mini-batches over (inputs, targets): seeded shuffling per epoch, batches copied into
 * tensors the dataset owns (nothing allocated per batch), and the data position for exact resume. */
#include "core/engine.h"

#include <stdlib.h>

struct tg_dataset {
    const tg_tensor *inputs, *targets; /* the caller's, not owned */
    int64_t n, batch_size, cursor;
    bool shuffle;
    uint64_t seed;
    int64_t epoch; /* reshuffles since tg_dataset_new: the current epoch, from 0 */
    tg_rng rng;
    tg_rng epoch_rng;           /* rng as it was before this epoch's shuffle: the epoch's seed */
    int64_t *order;             /* the rows of this epoch, in visiting order */
    tg_tensor *x_full, *y_full; /* batches of batch_size rows */
    tg_tensor *x_last, *y_last; /* the smaller last batch, when batch_size does not divide n */
};

void tg_dataset_free(tg_dataset *ds) {
    if (!ds)
        return;
    /* The batch tensors are marked as the dataset's, so tg_tensor_free refuses them: hand them
     * back to the caller (here, the dataset itself) first. */
    tg_tensor *batches[4] = {ds->x_full, ds->y_full, ds->x_last, ds->y_last};
    for (int i = 0; i < 4; i++) {
        if (batches[i])
            batches[i]->owner = TG__OWN_CALLER;
        tg_tensor_free(batches[i]);
    }
    free(ds->order);
    free(ds);
}

/* A leaf like `src` with `rows` rows instead of src->shape[0]. */
static tg_tensor *batch_like(const tg_tensor *src, int64_t rows) {
    int64_t shape[TG_MAX_RANK];
    memcpy(shape, src->shape, sizeof shape);
    shape[0] = rows;
    tg_tensor *t = tg_tensor_new(src->dtype, src->rank, shape);
    if (t)
        t->owner = TG__OWN_DATASET; /* tg_tensor_free refuses it; tg_dataset_free frees it */
    return t;
}

/* Fisher-Yates with the dataset's own rng: the order depends on the seed and the epoch only. */
static void reshuffle(tg_dataset *ds) {
    ds->epoch_rng = ds->rng;
    for (int64_t i = 0; i < ds->n; i++)
        ds->order[i] = i;
    if (!ds->shuffle)
        return;
    for (int64_t i = ds->n - 1; i > 0; i--) {
        int64_t j = (int64_t)tg_rng_below(&ds->rng, (uint64_t)i + 1);
        int64_t tmp = ds->order[i];
        ds->order[i] = ds->order[j];
        ds->order[j] = tmp;
    }
}

tg_dataset *tg_dataset_new(const tg_tensor *inputs, const tg_tensor *targets, int64_t batch_size,
                           int shuffle, uint64_t seed) {
    const char *who = "tg_dataset_new";
    char s1[TG_SHAPE_STR_LEN], s2[TG_SHAPE_STR_LEN];
    if (!inputs || !targets) {
        tg__set_last_error(TG_ERR_NULL, "%s: %s is NULL", who, inputs ? "targets" : "inputs");
        return NULL;
    }
    if (inputs->rank < 1 || targets->rank < 1 || inputs->shape[0] != targets->shape[0]) {
        tg__set_last_error(TG_ERR_SHAPE,
                           "%s: inputs %s and targets %s must have the same number of rows "
                           "(axis 0)",
                           who, tg__shape_str(inputs, s1, sizeof s1),
                           tg__shape_str(targets, s2, sizeof s2));
        return NULL;
    }
    const int64_t n = inputs->shape[0];
    if (n < 1 || batch_size < 1 || batch_size > n) {
        tg__set_last_error(TG_ERR_VALUE, "%s: batch_size %lld must be in 1..%lld (rows of %s)", who,
                           (long long)batch_size, (long long)n,
                           tg__shape_str(inputs, s1, sizeof s1));
        return NULL;
    }
    tg_dataset *ds = calloc(1, sizeof *ds);
    if (!ds)
        goto nomem;
    ds->inputs = inputs;
    ds->targets = targets;
    ds->n = n;
    ds->batch_size = batch_size;
    ds->shuffle = shuffle != 0;
    ds->seed = seed;
    tg_rng_seed(&ds->rng, seed);
    ds->order = malloc(sizeof *ds->order * (size_t)n);
    ds->x_full = batch_like(inputs, batch_size);
    ds->y_full = batch_like(targets, batch_size);
    if (!ds->order || !ds->x_full || !ds->y_full)
        goto nomem;
    if (n % batch_size) {
        ds->x_last = batch_like(inputs, n % batch_size);
        ds->y_last = batch_like(targets, n % batch_size);
        if (!ds->x_last || !ds->y_last)
            goto nomem;
    }
    reshuffle(ds);
    return ds;
nomem:
    tg_dataset_free(ds);
    tg__set_last_error(TG_ERR_NOMEM, "%s: out of memory for batches of %lld rows of %s", who,
                       (long long)batch_size, tg__shape_str(inputs, s1, sizeof s1));
    return NULL;
}

/* Copies the rows order[from .. from+rows) of src into dst. */
static void gather_rows(tg_tensor *dst, const tg_tensor *src, const int64_t *order, int64_t rows) {
    const size_t row_bytes = (size_t)(src->numel / src->shape[0]) * tg__dtype_size(src->dtype);
    for (int64_t r = 0; r < rows; r++)
        memcpy((char *)dst->data + (size_t)r * row_bytes,
               (const char *)src->data + (size_t)order[r] * row_bytes, row_bytes);
}

int tg_dataset_next(tg_dataset *ds, tg_tensor **x, tg_tensor **y) {
    if (!ds || !x || !y)
        return tg__set_last_error(TG_ERR_NULL, "tg_dataset_next: %s is NULL",
                                  !ds  ? "dataset"
                                  : !x ? "inputs"
                                       : "targets");
    if (ds->cursor >= ds->n) {
        ds->cursor = 0;
        ds->epoch++;
        reshuffle(ds);
        return 0;
    }
    const int64_t rows = ds->n - ds->cursor < ds->batch_size ? ds->n - ds->cursor : ds->batch_size;
    tg_tensor *bx = rows == ds->batch_size ? ds->x_full : ds->x_last;
    tg_tensor *by = rows == ds->batch_size ? ds->y_full : ds->y_last;
    gather_rows(bx, ds->inputs, ds->order + ds->cursor, rows);
    gather_rows(by, ds->targets, ds->order + ds->cursor, rows);
    ds->cursor += rows;
    *x = bx;
    *y = by;
    return 1;
}

tg_status tg_dataset_get_position(const tg_dataset *ds, tg_data_position *pos) {
    if (!ds || !pos)
        return tg__set_last_error(TG_ERR_NULL, "tg_dataset_get_position: %s is NULL",
                                  ds ? "pos" : "dataset");
    *pos = (tg_data_position){
        .seed = ds->seed, .epoch = ds->epoch, .cursor = ds->cursor, .rng = ds->epoch_rng};
    return TG_OK;
}

tg_status tg_dataset_set_position(tg_dataset *ds, const tg_data_position *pos) {
    const char *who = "tg_dataset_set_position";
    if (!ds || !pos)
        return tg__set_last_error(TG_ERR_NULL, "%s: %s is NULL", who, ds ? "pos" : "dataset");
    if (pos->seed != ds->seed)
        return tg__set_last_error(TG_ERR_VALUE,
                                  "%s: the position is of a dataset seeded with %llu, this one "
                                  "was seeded with %llu",
                                  who, (unsigned long long)pos->seed, (unsigned long long)ds->seed);
    if (pos->epoch < 0 || pos->cursor < 0 || pos->cursor > ds->n)
        return tg__set_last_error(TG_ERR_VALUE,
                                  "%s: epoch %lld and cursor %lld must be >= 0, the cursor at "
                                  "most the %lld rows",
                                  who, (long long)pos->epoch, (long long)pos->cursor,
                                  (long long)ds->n);
    /* Replaying the epoch's shuffle from its starting generator rebuilds the order and leaves the
     * generator where the uninterrupted run has it. */
    ds->rng = pos->rng;
    reshuffle(ds);
    ds->epoch = pos->epoch;
    ds->cursor = pos->cursor;
    return TG_OK;
}

int64_t tg_dataset_size(const tg_dataset *ds) { return ds ? ds->n : 0; }

int64_t tg_dataset_n_batches(const tg_dataset *ds) {
    return ds ? (ds->n + ds->batch_size - 1) / ds->batch_size : 0;
}
