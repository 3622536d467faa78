/* checkpoint_io.h -- the IO calls tg_checkpoint_save goes through. Private (not installed).
 *
 * A table of function pointers so that a test can make a write or an fsync fail mid-save and
 * check that the previous checkpoint survives. Library code only reads it; tests may swap entries
 * and must restore tg__checkpoint_io_default() afterwards. Not thread-safe to modify. */
#ifndef TG_CHECKPOINT_IO_H
#define TG_CHECKPOINT_IO_H

#include <stddef.h>
#include <stdio.h>

typedef struct tg__ckpt_io {
    size_t (*write)(const void *buf, size_t size, size_t n, FILE *f); /* as fwrite */
    int (*fsync)(int fd);                                             /* as fsync */
    int (*rename)(const char *from, const char *to);                  /* as rename */
} tg__ckpt_io;

extern tg__ckpt_io tg__checkpoint_io;
/* The real calls (fwrite, fsync, rename). */
tg__ckpt_io tg__checkpoint_io_default(void);

#endif
