/* intermediates.c -- checks a hand-derived gradient of the loss with respect to any value inside
 * the network (dl/dy~, dl/dh, dl/dh~ ...), node by node, against autodiff, with finite
 * differences that perturb the value itself as the referee.
 *
 * How a value inside the network is perturbed. Every builder call computes its result at once, so
 * the only way to evaluate f(v + delta) for an intermediate v is to build the loss again with
 * delta added at v. The loss function passes v through tg_probe; during a check, for a name whose
 * gradient is being checked, tg_probe records a custom identity node y = v + delta (delta zero
 * except at the element being judged), and the loss is built from y. Its backward passes the
 * gradient through unchanged, so d loss / d y, read with tg_tensor_grad, is the gradient of the
 * value; and moving delta moves v alone: nothing upstream of it (its inputs, their other uses)
 * changes. Outside a check tg_probe only names v and records nothing, so the same loss function
 * trains. Inputs are perturbed directly, as tg_gradcheck does.
 *
 * Built on the public API (tg_custom, tg_backward, tg_tensor_grad, tg_tape_node) and the shared
 * finite-difference judge of src/tools/check.h. */
#include "tools/check.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char WHO[] = "tg_check_intermediates";

/* ---- Probes ---------------------------------------------------------------------------------- */

typedef struct probe_slot {
    tg_probes *probes;
    int k; /* index into the wanted names */
} probe_slot;

struct tg_probes {
    const tg_node_grad *wanted; /* the caller's names and gradients */
    int n_wanted;
    probe_slot *slots; /* n_wanted; the custom op's user pointers */
    tg_tensor **hit;   /* n_wanted: the probe node of the current build, or NULL */
    int twice;         /* a wanted name probed twice in the current build, or -1 */
    int perturb;       /* the wanted name being perturbed, or -1 */
    int64_t perturb_j; /* its element */
    double perturb_h;  /* by how much */
};

/* y = x + delta: delta is perturb_h at element perturb_j of the probe being perturbed, else 0. */
static tg_status probe_forward(tg_tensor *out, tg_tensor *const *in, int n, void *user) {
    (void)n;
    const probe_slot *s = user;
    tg_status st = tg_tensor_copy(out, in[0]);
    if (st == TG_OK && s->probes->perturb == s->k) {
        const int64_t j = s->probes->perturb_j;
        st = tg_tensor_set(out, j, tg_tensor_get(out, j) + s->probes->perturb_h);
    }
    return st;
}

/* dy/dx = identity, so dx += dy. */
static void probe_backward(const tg_tensor *out, const tg_tensor *dout, tg_tensor *const *in,
                           tg_tensor *const *din, int n, void *user) {
    (void)out, (void)in, (void)n, (void)user;
    if (!din[0])
        return;
    const int64_t numel = tg_tensor_numel(dout);
    if (tg_tensor_dtype(dout) == TG_F64) {
        const double *dy = tg_tensor_cdata(dout);
        double *dx = tg_tensor_data(din[0]);
        for (int64_t i = 0; i < numel; i++)
            dx[i] += dy[i];
    } else {
        const float *dy = tg_tensor_cdata(dout);
        float *dx = tg_tensor_data(din[0]);
        for (int64_t i = 0; i < numel; i++)
            dx[i] += dy[i];
    }
}

static const tg_custom_op probe_op = {"probe", probe_forward, probe_backward};

tg_tensor *tg_probe_at(tg_probes *probes, tg_tape *t, tg_tensor *x, const char *name,
                       const char *file, int line) {
    if (!x || (t && tg_tape_status(t) != TG_OK))
        return NULL;
    int k = -1;
    for (int i = 0; probes && name && i < probes->n_wanted && k < 0; i++)
        if (strcmp(probes->wanted[i].name, name) == 0)
            k = i;
    if (k < 0) { /* not under a check, or a value whose gradient is not being checked */
        tg_tensor_set_name(x, name);
        return x;
    }
    if (!t)
        return NULL;
    if (probes->hit[k]) {
        probes->twice = k;
        return NULL;
    }
    tg_tensor *y = tg_custom_at(t, &probe_op, &probes->slots[k], &x, 1, tg_tensor_rank(x),
                                tg_tensor_shape(x), file, line);
    if (y) {
        tg_tensor_set_name(y, name);
        probes->hit[k] = y;
    }
    return y;
}

/* ---- The check ------------------------------------------------------------------------------- */

/* What one check needs while it runs. */
typedef struct ic_run {
    tg_probed_fn f;
    void *user;
    tg_tensor **copies; /* float64 copies of the inputs (i32 stay i32), each float one requiring a
                           gradient */
    int n_inputs;
    tg_probes probes;
    tg_tape *tape; /* reused for every finite-difference evaluation */
} ic_run;

/* Builds the loss on `tape`; TG_OK and *loss, or an error with tg_last_errmsg set. */
static tg_status build(ic_run *run, tg_tape *tape, tg_tensor **loss) {
    tg_tape_reset(tape);
    for (int k = 0; k < run->probes.n_wanted; k++)
        run->probes.hit[k] = NULL;
    run->probes.twice = -1;
    *loss = run->f(tape, run->copies, run->n_inputs, TG_F64, &run->probes, run->user);
    if (run->probes.twice >= 0)
        return tg__set_last_error(TG_ERR_STATE,
                                  "%s: '%s' is probed twice in one build of the loss; probe each "
                                  "value once",
                                  WHO, run->probes.wanted[run->probes.twice].name);
    return tg__check_loss(tape, *loss, WHO);
}

/* Where a checked name was found. */
typedef struct ic_target {
    tg_tensor *node; /* the probe node, the named node, or the input's copy */
    int input;       /* the input's position, or -1 */
    int probed;      /* a tg_probe point */
} ic_target;

/* The element being judged: f with element j of target k moved by h. */
typedef struct ic_element {
    ic_run *run;
    int k;
    const ic_target *target;
    int64_t j;
} ic_element;

static tg_status eval_moved(void *ctx, double h, double *value) {
    ic_element *el = ctx;
    ic_run *run = el->run;
    *value = NAN;
    tg_tensor *loss = NULL;
    tg_status st;
    if (el->target->input >= 0) {
        double *px = tg_tensor_data(run->copies[el->target->input]);
        const double saved = px[el->j];
        px[el->j] = saved + h;
        st = build(run, run->tape, &loss);
        px[el->j] = saved;
    } else {
        run->probes.perturb = el->k;
        run->probes.perturb_j = el->j;
        run->probes.perturb_h = h;
        st = build(run, run->tape, &loss);
        run->probes.perturb = -1;
        if (st == TG_OK && !run->probes.hit[el->k])
            st = tg__set_last_error(TG_ERR_STATE,
                                    "%s: the function did not probe '%s' when called again; it "
                                    "must compute the same function every time",
                                    WHO, run->probes.wanted[el->k].name);
    }
    if (st == TG_OK)
        *value = tg_tensor_item(loss);
    return st;
}

static tg_status check_args(tg_probed_fn f, tg_tensor *const *inputs, int n_inputs,
                            const tg_node_grad *yours, int n_yours, const tg_gradcheck_opts *o) {
    if (!f) { /* the status spelled out: the analyzer cannot see tg__set_last_error return it */
        tg__set_last_error(TG_ERR_NULL, "%s: the function f is NULL", WHO);
        return TG_ERR_NULL;
    }
    if (!inputs || n_inputs < 1)
        return tg__set_last_error(TG_ERR_NULL, "%s: no inputs (inputs %s, n_inputs %d)", WHO,
                                  inputs ? "given" : "NULL", n_inputs);
    for (int i = 0; i < n_inputs; i++)
        if (!inputs[i])
            return tg__set_last_error(TG_ERR_NULL, "%s: input %d is NULL", WHO, i);
    if (!yours || n_yours < 1)
        return tg__set_last_error(TG_ERR_NULL, "%s: no gradients to check (yours %s, n_yours %d)",
                                  WHO, yours ? "given" : "NULL", n_yours);
    if (!(o->eps > 0) || !(o->atol >= 0) || !(o->rtol >= 0) || !isfinite(o->eps))
        return tg__set_last_error(TG_ERR_VALUE,
                                  "%s: bad options: eps %g must be > 0, atol %g and rtol %g must "
                                  "be >= 0",
                                  WHO, o->eps, o->atol, o->rtol);
    for (int k = 0; k < n_yours; k++) {
        const char *nm = yours[k].name;
        if (!nm || !nm[0])
            return tg__set_last_error(TG_ERR_NULL, "%s: gradient %d has no name", WHO, k);
        if (strlen(nm) > 31)
            return tg__set_last_error(TG_ERR_VALUE,
                                      "%s: gradient %d: the name '%s' is longer than the 31 bytes "
                                      "a tensor's name keeps",
                                      WHO, k, nm);
        if (!yours[k].grad)
            return tg__set_last_error(TG_ERR_NULL, "%s: gradient %d ('%s') is NULL", WHO, k, nm);
        const tg_dtype dt = tg_tensor_dtype(yours[k].grad);
        if (dt != TG_F32 && dt != TG_F64)
            return tg__set_last_error(TG_ERR_DTYPE,
                                      "%s: your gradient for '%s' is %s; it must be f32 or f64",
                                      WHO, nm, tg__dtype_name(dt));
        for (int q = 0; q < k; q++)
            if (strcmp(yours[q].name, nm) == 0)
                return tg__set_last_error(TG_ERR_VALUE,
                                          "%s: the name '%s' is given twice (gradients %d and %d)",
                                          WHO, nm, q, k);
    }
    return TG_OK;
}

/* Appends ", name" to buf once (names listed in a "no such name" message). */
static void list_name(char *buf, size_t len, const char *name) {
    if (!name[0])
        return;
    const size_t n = strlen(name);
    for (const char *p = buf; (p = strstr(p, name)) != NULL; p += n)
        if ((p == buf || p[-1] == ' ') && (p[n] == ',' || p[n] == '\0'))
            return; /* already listed */
    const size_t used = strlen(buf);
    snprintf(buf + used, len - used, "%s%s", used ? ", " : "", name);
}

/* Finds target k on the autodiff tape `ad`. */
static tg_status resolve(ic_run *run, tg_tape *ad, int k, ic_target *tg) {
    const char *nm = run->probes.wanted[k].name;
    *tg = (ic_target){.input = -1};
    if (run->probes.hit[k]) {
        tg->node = run->probes.hit[k];
        tg->probed = 1;
        return TG_OK;
    }
    int64_t found[2] = {-1, -1};
    int n_found = 0;
    for (int64_t i = 0; i < tg_tape_size(ad); i++)
        if (strcmp(tg_tensor_name(tg_tape_node(ad, i)), nm) == 0 && n_found++ < 2)
            found[n_found - 1] = i;
    if (n_found > 1)
        return tg__set_last_error(TG_ERR_VALUE,
                                  "%s: the name '%s' is on %d nodes of the tape (%lld and %lld); "
                                  "name one only, or pass it through tg_probe",
                                  WHO, nm, n_found, (long long)found[0], (long long)found[1]);
    if (n_found == 1) {
        tg->node = tg_tape_node(ad, found[0]);
        return TG_OK;
    }
    for (int i = 0; i < run->n_inputs; i++) {
        if (strcmp(tg_tensor_name(run->copies[i]), nm) != 0)
            continue;
        if (tg->input >= 0)
            return tg__set_last_error(TG_ERR_VALUE, "%s: the name '%s' is on inputs %d and %d", WHO,
                                      nm, tg->input, i);
        tg->input = i;
    }
    if (tg->input >= 0) {
        tg->node = run->copies[tg->input];
        if (tg_tensor_dtype(tg->node) == TG_I32)
            return tg__set_last_error(TG_ERR_DTYPE,
                                      "%s: '%s' is input %d, an i32 tensor: it has "
                                      "no gradient",
                                      WHO, nm, tg->input);
        return TG_OK;
    }
    char nodes[256] = "", ins[256] = "";
    for (int64_t i = 0; i < tg_tape_size(ad); i++)
        list_name(nodes, sizeof nodes, tg_tensor_name(tg_tape_node(ad, i)));
    for (int i = 0; i < run->n_inputs; i++)
        list_name(ins, sizeof ins, tg_tensor_name(run->copies[i]));
    return tg__set_last_error(TG_ERR_VALUE,
                              "%s: no probe, node or input is named '%s' (named on the tape: %s; "
                              "inputs: %s)",
                              WHO, nm, nodes[0] ? nodes : "none", ins[0] ? ins : "none");
}

/* yours against autodiff only (a node that cannot be perturbed). */
static void judge_unrefereed(double atol, double rtol, tg_gradcheck_element *e) {
    e->fd = e->fd_forward = e->fd_backward = NAN;
    e->disagree = tg__agrees(e->yours, e->autodiff, atol, rtol) ? 0u : TG_GC_YOURS_VS_AUTODIFF;
    e->abs_err = fabs(e->yours - e->autodiff);
    e->rel_err = isnan(e->abs_err) ? NAN : tg__rel_err(e->abs_err, e->autodiff);
    e->status = e->disagree ? TG_GC_MISMATCH : TG_GC_OK;
}

/* The position at which the reverse pass has finished a target's gradient: a node's own index; an
 * input's first use (it receives its last contribution there). Twice the index, plus one for a
 * node, which finishes before the inputs it hands gradients to. -1 for an unused input. */
static int64_t backward_key(const tg_tape *ad, const ic_target *tg) {
    if (tg->input < 0)
        return 2 * tg_tensor_tape_index(tg->node) + 1;
    for (int64_t i = 0; i < tg_tape_size(ad); i++) {
        const tg_tensor *n = tg_tape_node(ad, i);
        for (int q = 0; q < tg_tensor_n_inputs(n); q++)
            if (tg_tensor_input(n, q) == tg->node)
                return 2 * i;
    }
    return -1;
}

void tg_intermediates_report_free(tg_intermediates_report *r) {
    if (!r)
        return;
    for (int k = 0; k < r->n_nodes; k++) {
        free(r->nodes[k].check.elements);
        free((void *)r->nodes[k].check.shape); /* owned by the report; const for its readers */
    }
    free(r->nodes);
    free(r);
}

/* Fills node c for target tg: autodiff from the tape, then each element judged. */
static tg_status check_node(ic_run *run, const tg_intermediates_report *r, int k,
                            const ic_target *tg, double f0, tg_node_check *nc) {
    tg_gradcheck_tensor *c = &nc->check;
    const tg_tensor *mine = run->probes.wanted[k].grad;
    const tg_tensor *g = tg_tensor_grad(tg->node); /* NULL: the loss does not depend on it */
    snprintf(c->name, sizeof c->name, "%s", run->probes.wanted[k].name);
    c->input = tg->input;
    c->rank = tg_tensor_rank(tg->node);
    int64_t *shape = calloc(c->rank > 0 ? (size_t)c->rank : 1, sizeof *shape);
    if (!shape)
        return tg__set_last_error(TG_ERR_NOMEM, "tg_check_intermediates: out of memory");
    memcpy(shape, tg_tensor_shape(tg->node), sizeof(int64_t) * (size_t)c->rank);
    c->shape = shape;
    c->numel = tg_tensor_numel(tg->node);
    c->has_yours = 1;
    c->worst_index = -1;
    nc->tape_index = tg_tensor_tape_index(tg->node);
    nc->refereed = tg->probed || tg->input >= 0;
    const tg_tensor *producer = tg->probed ? tg_tensor_input(tg->node, 0) : tg->node;
    snprintf(nc->op, sizeof nc->op, "%s",
             tg->input >= 0 || tg_tensor_tape_index(producer) < 0 ? "input"
                                                                  : tg_tensor_op_name(producer));
    c->elements = calloc(c->numel > 0 ? (size_t)c->numel : 1, sizeof *c->elements);
    if (!c->elements)
        return tg__set_last_error(TG_ERR_NOMEM, "%s: out of memory for the report", WHO);

    double worst = -1, scale = 0;
    tg_status st = TG_OK;
    for (int64_t j = 0; st == TG_OK && j < c->numel; j++) {
        tg_gradcheck_element *e = &c->elements[j];
        e->index = j;
        e->autodiff = g ? tg_tensor_get(g, j) : 0.0;
        e->yours = tg_tensor_get(mine, j);
        scale = fmax(scale, fabs(e->autodiff));
        if (nc->refereed) {
            ic_element el = {run, k, tg, j};
            st = tg__fd_judge(eval_moved, &el, f0, r->eps, r->atol, r->rtol, e);
        } else {
            judge_unrefereed(r->atol, r->rtol, e);
        }
        if (st != TG_OK)
            break;
        tg__gc_tally(c, e, r->atol, r->rtol, &worst);
        if (e->status != TG_GC_KINK) {
            nc->n_wrong += (e->disagree & TG_GC_YOURS_VS_AUTODIFF) != 0;
            nc->n_fd_disagree += (e->disagree & TG_GC_AUTODIFF_VS_FD) != 0;
        }
    }
    c->passed = c->n_mismatch == 0;
    /* max_abs_err is the largest |yours - autodiff| (yours is given for every element). */
    nc->verdict = nc->n_wrong > 0                              ? TG_NODE_WRONG
                  : c->max_abs_err <= 64 * DBL_EPSILON * scale ? TG_NODE_EXACT
                                                               : TG_NODE_CLOSE;
    return st;
}

tg_intermediates_report *tg_check_intermediates(tg_probed_fn f, tg_tensor *const *inputs,
                                                int n_inputs, void *user, const tg_node_grad *yours,
                                                int n_yours, const tg_gradcheck_opts *opts) {
    const tg_gradcheck_opts o = opts ? *opts : tg_gradcheck_defaults();
    if (check_args(f, inputs, n_inputs, yours, n_yours, &o) != TG_OK)
        return NULL;
    ic_run run = {.f = f, .user = user, .n_inputs = n_inputs};
    run.probes = (tg_probes){.wanted = yours, .n_wanted = n_yours, .twice = -1, .perturb = -1};
    tg_intermediates_report *r = calloc(1, sizeof *r);
    run.copies = calloc((size_t)n_inputs, sizeof *run.copies);
    run.probes.slots = calloc((size_t)n_yours, sizeof *run.probes.slots);
    run.probes.hit = calloc((size_t)n_yours, sizeof *run.probes.hit);
    ic_target *targets = calloc((size_t)n_yours, sizeof *targets);
    int64_t *keys = calloc((size_t)n_yours, sizeof *keys);
    tg_tape *ad = tg_tape_new();
    run.tape = tg_tape_new();
    tg_status st = TG_OK;
    if (r)
        r->nodes = calloc((size_t)n_yours, sizeof *r->nodes);
    if (!r || !r->nodes || !run.copies || !run.probes.slots || !run.probes.hit || !targets ||
        !keys || !ad || !run.tape) {
        st = TG_ERR_NOMEM; /* set here, not from tg__set_last_error: the analyzer sees this one */
        tg__set_last_error(st, "%s: out of memory", WHO);
    }
    for (int k = 0; st == TG_OK && k < n_yours; k++)
        run.probes.slots[k] = (probe_slot){&run.probes, k};
    for (int i = 0; st == TG_OK && i < n_inputs; i++) {
        const tg_dtype dt = tg_tensor_dtype(inputs[i]);
        run.copies[i] = tg_tensor_clone(inputs[i], dt == TG_I32 ? TG_I32 : TG_F64);
        if (!run.copies[i])
            st = TG_ERR_NOMEM; /* tg_tensor_clone left the message */
        else if (dt != TG_I32) /* so that every node built from it has a gradient */
            tg_tensor_set_requires_grad(run.copies[i], 1);
    }

    tg_tensor *loss = NULL;
    if (st == TG_OK)
        st = build(&run, ad, &loss);
    if (st == TG_OK && tg_backward(ad, loss) != TG_OK)
        st = tg__set_last_error(tg_tape_status(ad), "%s: tg_backward failed: %s", WHO,
                                tg_tape_errmsg(ad));
    for (int k = 0; st == TG_OK && k < n_yours; k++) {
        st = resolve(&run, ad, k, &targets[k]);
        char s1[96], s2[96];
        const tg_tensor *mine = yours[k].grad, *node = targets[k].node;
        if (st == TG_OK && !tg__same_shape(mine, node))
            st = tg__set_last_error(
                TG_ERR_SHAPE, "%s: your gradient for '%s' has shape %s, the %s has shape %s", WHO,
                yours[k].name, tg__shape_text(tg_tensor_rank(mine), tg_tensor_shape(mine), s1, 96),
                targets[k].input >= 0 ? "input" : "node",
                tg__shape_text(tg_tensor_rank(node), tg_tensor_shape(node), s2, 96));
        keys[k] = st == TG_OK ? backward_key(ad, &targets[k]) : 0;
    }
    if (st == TG_OK) {
        r->loss = tg_tensor_item(loss);
        r->eps = o.eps;
        r->atol = o.atol;
        r->rtol = o.rtol;
        r->max_rows = o.max_rows > 0 ? o.max_rows : 10;
        r->passed = 1;
        r->first_wrong = -1;
    }
    /* Nodes in the order the reverse pass finishes them: largest key first, ties as given. */
    for (int done = 0; st == TG_OK && done < n_yours; done++) {
        int k = -1;
        for (int q = 0; q < n_yours; q++)
            if (keys[q] != INT64_MIN && (k < 0 || keys[q] > keys[k]))
                k = q;
        keys[k] = INT64_MIN;
        tg_node_check *nc = &r->nodes[r->n_nodes++];
        st = check_node(&run, r, k, &targets[k], r->loss, nc);
        r->passed &= nc->check.passed;
        if (nc->verdict == TG_NODE_WRONG && r->first_wrong < 0)
            r->first_wrong = r->n_nodes - 1;
    }

    for (int i = 0; run.copies && i < n_inputs; i++)
        tg_tensor_free(run.copies[i]);
    free(run.copies);
    free(run.probes.slots);
    free(run.probes.hit);
    free(targets);
    free(keys);
    tg_tape_free(ad);
    tg_tape_free(run.tape);
    if (st != TG_OK) {
        tg_intermediates_report_free(r);
        return NULL;
    }
    return r;
}

/* ---- The printer ----------------------------------------------------------------------------- */

static const char *verdict_name(tg_node_verdict v) {
    return v == TG_NODE_EXACT ? "EXACT" : v == TG_NODE_CLOSE ? "CLOSE" : "WRONG";
}

void tg_intermediates_print(const tg_intermediates_report *r, FILE *out) {
    if (!r || !out)
        return;
    fprintf(out, "intermediates: %s  (float64, eps %g, atol %g, rtol %g; loss %.10g)\n",
            r->passed ? "PASSED" : "FAILED", r->eps, r->atol, r->rtol, r->loss);
    fprintf(out, "  %-10s %-8s %-7s %-36s %s\n", "node", "op", "shape", "your gradient vs autodiff",
            "finite differences (referee)");
    for (int k = 0; k < r->n_nodes; k++) {
        const tg_node_check *nc = &r->nodes[k];
        const tg_gradcheck_tensor *c = &nc->check;
        char sh[64], yours[64], ref[96];
        const int64_t judged = c->numel - c->n_kink;
        if (nc->verdict == TG_NODE_WRONG)
            snprintf(yours, sizeof yours, "WRONG  %lld of %lld elements", (long long)nc->n_wrong,
                     (long long)judged);
        else
            snprintf(yours, sizeof yours, "%s  max |diff| %.1e", verdict_name(nc->verdict),
                     c->max_abs_err);
        if (!nc->refereed)
            snprintf(ref, sizeof ref, "- (named, not probed: cannot be perturbed)");
        else if (nc->n_fd_disagree)
            snprintf(ref, sizeof ref, "DISAGREE with autodiff on %lld of %lld",
                     (long long)nc->n_fd_disagree, (long long)judged);
        else
            snprintf(ref, sizeof ref, "agree with autodiff on %lld of %lld", (long long)judged,
                     (long long)judged);
        if (nc->refereed && c->n_kink)
            snprintf(ref + strlen(ref), sizeof ref - strlen(ref), ", %lld at a kink",
                     (long long)c->n_kink);
        fprintf(out, "  %-10s %-8s %-7s %-36s %s\n", c->name, nc->op,
                tg__shape_text(c->rank, c->shape, sh, sizeof sh), yours, ref);
    }
    if (r->first_wrong >= 0) {
        const tg_node_check *w = &r->nodes[r->first_wrong];
        fprintf(out, "  first wrong node, in backward order: %s", w->check.name);
        if (w->tape_index >= 0)
            fprintf(out, " (tape node %lld)", (long long)w->tape_index);
        fprintf(out, "; wrong nodes after it may only inherit its mistake\n");
    }
    for (int k = 0; k < r->n_nodes; k++) {
        const tg_node_check *nc = &r->nodes[k];
        if (nc->check.n_mismatch == 0 && nc->check.n_kink == 0)
            continue;
        char sh[64];
        fprintf(out, "\n  %s %s: %s\n", nc->check.name,
                tg__shape_text(nc->check.rank, nc->check.shape, sh, sizeof sh),
                nc->verdict == TG_NODE_WRONG ? "your gradient is wrong at"
                                             : "autodiff and finite differences");
        tg__gc_print_rows(&nc->check, r->atol, r->rtol, r->max_rows, out);
    }
}
