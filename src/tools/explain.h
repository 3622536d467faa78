/* explain.h -- private: what the teaching tools share. Names as a reader sees them, numbers laid
 * out for reading, and the one description of a step of the forward or backward pass that both
 * the text trace (trace.c) and the step-through page (html.c) are made from, so the two cannot
 * disagree. Everything here reads the tape; nothing changes a value or a gradient. */
#ifndef TG_EXPLAIN_H
#define TG_EXPLAIN_H

#include "core/engine.h"

/* Tensors up to this many elements print in full; larger ones as a summary. */
#define TG_TRACE_FULL 16

/* snprintf for display text: a name or a line cut short is acceptable here, so truncation is not
 * an error. Returns what vsnprintf returns. */
int tg__textf(char *buf, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* ---- Names ---- */

/* Distinct leaves used by the tape's nodes, in order of first use. Caller frees. NULL if none
 * (or no memory: the leaves are then unnamed "leaf" in the output, nothing worse). */
const tg_tensor **tg__collect_leaves(const tg_tape *tape, int64_t *count);
/* The tensor's name, else "op#index" for a node, else "leaf#k" (k in order of first use). */
const char *tg__name_of(const tg_tape *tape, const tg_tensor *t, char *buf, size_t len);
/* The name as it appears inside a formula: parenthesised when it holds an operator or a space. */
const char *tg__formula_name(const char *name, char *buf, size_t len);
/* The node's right-hand side: "tanh(h~)", "add(W_h x, b_h)", "scale(h, 3)". */
const char *tg__node_expr(const tg_tape *tape, const tg_tensor *t, char *buf, size_t len);
/* An op's phrase (its rule, what it saves, its local derivative) with the tensors' names:
 * "dx += dy * (1 - y^2)" becomes "dl/dh~ += dl/dh * (1 - h^2)". */
void tg__with_names(const tg_tape *tape, const tg_tensor *n, const char *phrase, char *buf,
                    size_t len);

/* ---- Numbers ---- */

/* The values of one tensor, laid out for reading: shape plus doubles. */
typedef struct tg__vals {
    int rank;
    int64_t shape[TG_MAX_RANK];
    int64_t numel;
    double *v; /* owned by whoever made it (tg__vals_of: the caller, free()) */
    bool integer;
} tg__vals;

/* t's values as doubles (v NULL on no memory). */
tg__vals tg__vals_of(const tg_tensor *t);
void tg__fmt_num(char *buf, size_t len, double v, bool integer);
/* Prints `prefix` then the values and `suffix` and a newline; a small matrix one line per row,
 * continuation rows aligned under the first '['; a column vector on one line marked ^T; a large
 * tensor as a few entries and its norm. */
void tg__print_line(FILE *f, const char *prefix, const tg__vals *x, const char *suffix);

/* ---- The description of one step ---- */

/* One line of a step: a label in the left column ("upstream", "rule", "-> W_y"), then either a
 * text, or a left-hand side, a relation and values, and a note. */
typedef struct tg__row {
    char label[48];
    char text[320];
    char lhs[96];
    char rel[4]; /* "=", "+=", or " =" (lined up under a "+=") */
    bool pad;    /* lhs padded to the step's lhs_width, so the values line up */
    tg__vals vals;
    bool has_vals;
    char note[160];
} tg__row;

typedef enum tg__step_kind { TG__STEP_FORWARD, TG__STEP_BACKWARD } tg__step_kind;

typedef struct tg__step {
    tg__step_kind kind;
    int64_t index;                /* tape index of the node */
    char name[48];                /* the node's name as shown */
    char expr[256];               /* its right-hand side */
    char shape[TG_SHAPE_STR_LEN]; /* its shape */
    int n_inputs;
    int lhs_width;
    tg__row *rows;
    int n_rows, cap_rows;
    /* backward only: the inputs' gradients before the node's backward ran (owned) */
    double **before;
    int n_before;
} tg__step;

/* A forward step: the node, its value and what it saved. TG_OK or TG_ERR_NOMEM. */
tg_status tg__step_forward(tg__step *s, const tg_tape *tape, const tg_tensor *node);
/* A backward step in two halves around the node's backward, as an observer sees it: begin
 * (BEFORE_BACKWARD) writes the upstream gradient, what was saved, the rule and the local
 * derivative, and snapshots the destinations; end (AFTER_BACKWARD) writes what reached each
 * input, with the running sum where a value feeds several nodes. */
tg_status tg__step_backward_begin(tg__step *s, const tg_tape *tape, const tg_tensor *node,
                                  const tg_tensor *output, tg_tensor *const *grads);
tg_status tg__step_backward_end(tg__step *s, const tg_tape *tape, const tg_tensor *node,
                                const tg_tensor *output, tg_tensor *const *grads);
/* The step as text, as tg_tape_set_trace prints it. */
void tg__step_print(const tg__step *s, FILE *f);
/* Frees what the step owns and empties it (it can be reused). */
void tg__step_clear(tg__step *s);

/* ---- The graph without its numbers (dot.c, for the step-through page) ---- */

/* As tg_tape_render, each box with its name, shape and expression only (no values, saved
 * tensors or gradients). */
tg_status tg__tape_render_plain(const tg_tape *tape, const char *path);

/* ---- The step as JSON (for the step-through page, html.c) ---- */

/* Writes s as a JSON string: quotes, backslashes and control characters escaped, and '<', '>',
 * '&' as \u escapes, so the text can sit inside an HTML <script> element. */
void tg__json_string(FILE *f, const char *s);
/* Writes the step as one JSON object: kind, index, name, expr, shape, lhs_width, its rows (label,
 * text, lhs, rel, pad, note, and vals: rank, shape, integer, v (the numbers, null where not
 * finite) and s (each as tg__fmt_num writes it); beyond TG_TRACE_FULL entries also head, last and
 * norm, the summary the text shows; beyond `max_vals` entries only that summary), and "text":
 * the step exactly as tg__step_print writes it. TG_OK or TG_ERR_NOMEM. */
tg_status tg__step_write_json(const tg__step *s, FILE *f, int64_t max_vals);

#endif /* TG_EXPLAIN_H */
