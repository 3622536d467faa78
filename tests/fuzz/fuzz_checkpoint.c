/* libFuzzer harness for the safetensors loader: any input must be either loaded or rejected with
 * a message, without a crash, a leak or undefined behaviour, and a rejected input must leave the
 * model's parameters exactly as they were. The model matches the seed corpus (corpus/checkpoint),
 * so mutations of valid files reach the checksum and commit stages. */
#include "tapegrad.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum { NP = 3 };
static tg_tensor *params[NP], *copies[NP];

static void setup(void) {
    params[0] = tg_tensor_new(TG_F32, TG_SHAPE(2, 3));
    params[1] = tg_tensor_new(TG_F64, TG_SHAPE(3));
    params[2] = tg_tensor_new(TG_I32, 0, NULL);
    const char *names[NP] = {"W", "b", "k"};
    for (int i = 0; i < NP; i++) {
        tg_tensor_set_name(params[i], names[i]);
        for (int64_t j = 0; j < tg_tensor_numel(params[i]); j++)
            tg_tensor_set(params[i], j, 0.5 * (double)(i + j));
        copies[i] = tg_tensor_clone(params[i], tg_tensor_dtype(params[i]));
    }
}

static size_t bytes_of(const tg_tensor *t) {
    return (size_t)tg_tensor_numel(t) * (tg_tensor_dtype(t) == TG_F64 ? 8 : 4);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!params[0])
        setup();
    tg_status st = tg_checkpoint_load_mem(data, size, "fuzz", params, NP, NULL);
    if (st == TG_OK) {
        /* Loaded: remember the new values as the ones a later failure must preserve. */
        for (int i = 0; i < NP; i++)
            tg_tensor_copy(copies[i], params[i]);
        return 0;
    }
    if (tg_last_errmsg()[0] == '\0')
        abort(); /* an error without a message */
    for (int i = 0; i < NP; i++)
        if (memcmp(tg_tensor_cdata(params[i]), tg_tensor_cdata(copies[i]), bytes_of(params[i])))
            abort(); /* a failed load modified the model */
    return 0;
}
