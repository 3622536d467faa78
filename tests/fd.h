/* fd.h -- the shared finite-difference harness of the test suite.
 *
 * fd_check reduces an op's output y to a scalar L = sum(w * y) with fixed random weights w (so
 * every output element matters, each differently), runs tg_backward, and compares the gradient of
 * every input that requires one against central differences (L(x+eps) - L(x-eps)) / 2eps computed
 * in float64. An element passes when |autodiff - fd| <= atol + rtol * |fd|. */
#ifndef TG_TEST_FD_H
#define TG_TEST_FD_H

#include "tapegrad.h"

/* Builds y from the inputs on `tape`; may return NULL only on a bug (the harness then fails). */
typedef tg_tensor *(*fd_build_fn)(tg_tape *tape, tg_tensor *const *inputs, void *ctx);

typedef struct fd_opts {
    double eps;  /* step; default 1e-6 */
    double atol; /* default 1e-8 */
    double rtol; /* default 1e-6 */
} fd_opts;

/* Checks every input with requires_grad. `what` names the case in failure messages. All inputs
 * must be f64 leaves. Returns the number of mismatching elements (0 on success) and reports each
 * through Criterion. */
int fd_check(const char *what, fd_build_fn build, tg_tensor *const *inputs, int n_inputs, void *ctx,
             const fd_opts *opts);

/* A seeded f64 leaf with values uniform in [lo, hi), requiring a gradient. */
tg_tensor *fd_param(tg_rng *rng, int rank, const int64_t *shape, double lo, double hi);
/* The same, with values pushed away from 0: |x| in [0.1, hi) (for ops with a kink at 0). */
tg_tensor *fd_param_away_from_zero(tg_rng *rng, int rank, const int64_t *shape, double hi);

#endif
