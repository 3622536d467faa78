/* trace.c -- the chain-rule trace of tg_backward: an observer of the tape that prints each node's
 * step of the reverse pass as it happens (the description is explain.c's, shared with the
 * step-through page). It never runs a backward of its own. */
#include "explain.h"

#include <stdlib.h>

/* The trace's state: where it writes and the step under way (between BEFORE and AFTER). */
typedef struct trace_state {
    FILE *out;
    tg__step step;
} trace_state;

static tg_status trace_observer(const tg_event *ev, void *user) {
    trace_state *ts = user;
    FILE *f = ts->out;
    char nb[48];
    switch (ev->kind) {
    case TG_EVENT_BACKWARD_BEGIN: {
        tg__name_of(ev->tape, ev->output, nb, sizeof nb);
        fprintf(f,
                "backward pass from %s (node #%lld). l = %s; dl/dv is the gradient of l with "
                "respect to v.\n",
                nb, (long long)ev->output->tape_index, nb);
        fprintf(f,
                "Nodes run in reverse order; each turns dl/d(its output) into dl/d(each input).\n");
        tg__vals v = tg__vals_of(ev->output->grad);
        if (v.v) {
            char pre[160];
            tg__textf(pre, sizeof pre, "seed: dl/d%s = ", nb);
            tg__print_line(f, pre, &v, "");
            free(v.v);
        }
        return TG_OK;
    }
    case TG_EVENT_BEFORE_BACKWARD:
        if (tg__step_backward_begin(&ts->step, ev->tape, ev->tensor, ev->output, ev->grads) !=
            TG_OK)
            fprintf(f, "\n#%lld  (out of memory for the trace)\n",
                    (long long)ev->tensor->tape_index);
        return TG_OK; /* the trace never stops a pass */
    case TG_EVENT_AFTER_BACKWARD:
        if (tg__step_backward_end(&ts->step, ev->tape, ev->tensor, ev->output, ev->grads) != TG_OK)
            fprintf(f, "    (out of memory for the trace)\n");
        tg__step_print(&ts->step, f);
        tg__step_clear(&ts->step);
        return TG_OK;
    case TG_EVENT_BACKWARD_END:
        fprintf(f, "\nend of the backward pass from %s\n",
                tg__name_of(ev->tape, ev->output, nb, sizeof nb));
        fflush(f);
        return TG_OK;
    default: return TG_OK;
    }
}

static void trace_release(void *user) {
    trace_state *ts = user;
    tg__step_clear(&ts->step);
    free(ts);
}

/* The trace's state is the observer's user pointer: found again by its function, freed when the
 * trace is turned off or with the tape. */
tg_status tg_tape_set_trace(tg_tape *t, FILE *out) {
    if (!t)
        return tg__set_last_error(TG_ERR_NULL, "tg_tape_set_trace: tape is NULL");
    trace_state *old = tg__tape_tool_state(t, trace_observer);
    if (old) {
        tg_tape_unobserve(t, trace_observer, old);
        trace_release(old);
    }
    if (!out)
        return TG_OK;
    trace_state *ts = calloc(1, sizeof *ts);
    if (!ts)
        return tg__set_last_error(TG_ERR_NOMEM, "tg_tape_set_trace: out of memory");
    ts->out = out;
    tg_status st = tg__tape_observe_owned(t, trace_observer, ts, trace_release);
    if (st != TG_OK)
        free(ts);
    return st;
}
