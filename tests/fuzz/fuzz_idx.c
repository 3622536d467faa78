/* libFuzzer harness for the IDX loader: from memory for every input, and through a file (gzip'ed
 * inputs, which is how zlib's side is reached) when the input starts with the gzip magic. Any
 * input must load or be rejected with a message; a loaded array must be self-consistent. */
#include "tapegrad.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void check(const tg_idx *idx) {
    if (!idx) {
        if (tg_last_errmsg()[0] == '\0')
            abort(); /* an error without a message */
        return;
    }
    int64_t n = 1;
    for (int i = 0; i < tg_idx_rank(idx); i++)
        n *= tg_idx_dim(idx, i);
    if (tg_idx_rank(idx) < 1 || tg_idx_rank(idx) > TG_MAX_RANK || n != tg_idx_numel(idx))
        abort();
    /* Touch every byte, so ASan sees a short buffer. */
    volatile uint8_t sum = 0;
    const uint8_t *d = tg_idx_data(idx);
    for (int64_t i = 0; i < n; i++)
        sum += d[i];
    (void)sum;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    tg_idx *idx = tg_idx_load_mem(data, size, "fuzz");
    check(idx);
    tg_idx_free(idx);
    if (size >= 2 && data[0] == 0x1f && data[1] == 0x8b) {
        static char path[64];
        if (!path[0])
            snprintf(path, sizeof path, "/tmp/tg_fuzz_idx_%d.gz", (int)getpid());
        FILE *f = fopen(path, "wb");
        if (!f)
            return 0;
        fwrite(data, 1, size, f);
        fclose(f);
        idx = tg_idx_load(path);
        check(idx);
        tg_idx_free(idx);
        unlink(path);
    }
    return 0;
}
