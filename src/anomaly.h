/* anomaly.h -- anomaly mode's checks, called by src/tape.c when the tape's flag is on. Private. */
#ifndef TG_ANOMALY_H
#define TG_ANOMALY_H

#include "internal.h"

/* After op `opname` (recorded at file:line) computed `out`, not yet on the tape: true if every
 * value is finite; otherwise fails the tape with TG_ERR_NONFINITE and returns false. */
bool tg__anomaly_forward(tg_tape *tape, const tg_tensor *out, const char *file, int line,
                         const char *opname);
/* After `node`'s backward accumulated into its inputs' gradients: as tg__anomaly_forward. */
bool tg__anomaly_backward(tg_tape *tape, const tg_tensor *node);

#endif
