/* metrics.c -- measures of a model's output (accuracy). */
#include "core/engine.h"

double tg_accuracy(const tg_tensor *logits, const tg_tensor *labels) {
    const char *who = "tg_accuracy";
    char s1[TG_SHAPE_STR_LEN], s2[TG_SHAPE_STR_LEN];
    if (!logits || !labels) {
        tg__set_last_error(TG_ERR_NULL, "%s: %s is NULL", who, logits ? "labels" : "logits");
        return -1.0;
    }
    if (logits->rank != 2 || logits->shape[0] < 1 || labels->dtype != TG_I32 || labels->rank != 1 ||
        labels->shape[0] != logits->shape[0]) {
        tg__set_last_error(TG_ERR_SHAPE,
                           "%s: need logits [N,C] (N >= 1) and i32 labels [N], got %s and %s %s",
                           who, tg__shape_str(logits, s1, sizeof s1), tg__dtype_name(labels->dtype),
                           tg__shape_str(labels, s2, sizeof s2));
        return -1.0;
    }
    const int64_t N = logits->shape[0], C = logits->shape[1];
    const int32_t *lab = labels->data;
    int64_t correct = 0;
    for (int64_t i = 0; i < N; i++) {
        int64_t best = 0;
        for (int64_t c = 1; c < C; c++)
            if (tg_tensor_get(logits, i * C + c) > tg_tensor_get(logits, i * C + best))
                best = c;
        correct += best == lab[i];
    }
    return (double)correct / (double)N;
}
