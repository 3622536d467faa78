/* check.h -- private helpers shared by the checking tools: gradcheck.c (first-order checks),
 * intermediates.c (gradients of named nodes) and hessian.c (second derivatives). Not installed.
 *
 * The checking tools are built on the public API (include/tapegrad.h) and these helpers only;
 * the two functions of the core they need besides are declared here rather than through
 * core/engine.h, so that nothing in a checker reads a tensor's or a tape's fields. */
#ifndef TG_TOOLS_CHECK_H
#define TG_TOOLS_CHECK_H

#include "tapegrad.h"

#include <stdbool.h>
#include <stdio.h>

/* From the core (src/core/tensor.c; also declared in core/engine.h). */
tg_status tg__set_last_error(tg_status status, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
const char *tg__dtype_name(tg_dtype dtype);

/* |value - reference| <= atol + rtol |reference|, NaN-safe (a NaN never agrees). */
bool tg__agrees(double value, double reference, double atol, double rtol);
/* abs_err / |reference|: 0 when both are 0, inf when only the reference is. */
double tg__rel_err(double abs_err, double reference);

/* "[1,0]" from a flat row-major index into `shape`; returns buf. */
const char *tg__index_str(int rank, const int64_t *shape, int64_t flat, char *buf, size_t len);
/* "[2,4]"; returns buf. */
const char *tg__shape_text(int rank, const int64_t *shape, char *buf, size_t len);
/* 1 if a and b have the same rank and shape. */
bool tg__same_shape(const tg_tensor *a, const tg_tensor *b);

/* Checks what a checked function returned: a tensor (not NULL, no tape error), one element,
 * float64. TG_OK, or an error with tg_last_errmsg set, prefixed with `who` ("tg_gradcheck"). */
tg_status tg__check_loss(const tg_tape *tape, const tg_tensor *loss, const char *who);

/* f with the element being judged moved by h (f(x + h e_j)): TG_OK and *value, or an error with
 * tg_last_errmsg set. The element must be back at x when it returns. */
typedef tg_status (*tg__fd_eval_fn)(void *ctx, double h, double *value);

/* Judges one element whose e->autodiff and e->yours (NaN: none given) are set: central and
 * one-sided differences through `eval` (2 calls, 4 at a suspected kink), the kink test, then
 * yours against autodiff and autodiff against the central difference. Fills every field of e but
 * index. TG_OK, or the error of an evaluation. */
tg_status tg__fd_judge(tg__fd_eval_fn eval, void *ctx, double f0, double eps, double atol,
                       double rtol, tg_gradcheck_element *e);

/* Counts a judged element into c (n_ok / n_mismatch / n_kink, max errors, worst element).
 * *worst carries the worst excess seen so far; start it at -1. */
void tg__gc_tally(tg_gradcheck_tensor *c, const tg_gradcheck_element *e, double atol, double rtol,
                  double *worst);

/* The mismatch rows and kink rows of a checked tensor, as tg_gradcheck_print writes them
 * (the first max_rows of each, then a count of the rest). */
void tg__gc_print_rows(const tg_gradcheck_tensor *c, double atol, double rtol, int max_rows,
                       FILE *out);

#endif
