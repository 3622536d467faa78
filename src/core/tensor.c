/* tensor.c -- leaf tensors, accessors, errors without a tape, small helpers shared by the ops. */
#include "engine.h"

#include <math.h>
#include <stdlib.h>

_Noreturn void tg__invariant_failed(const char *cond, const char *file, int line) {
    fprintf(stderr, "tapegrad: internal error (please report): %s:%d: %s\n", file, line, cond);
    abort();
}

static _Thread_local char last_errmsg[512];

tg_status tg__set_last_error(tg_status status, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_errmsg, sizeof last_errmsg, fmt, ap);
    va_end(ap);
    return status;
}

const char *tg_last_errmsg(void) { return last_errmsg; }

const char *tg_status_name(tg_status s) {
    switch (s) {
    case TG_OK: return "TG_OK";
    case TG_ERR_NULL: return "TG_ERR_NULL";
    case TG_ERR_SHAPE: return "TG_ERR_SHAPE";
    case TG_ERR_DTYPE: return "TG_ERR_DTYPE";
    case TG_ERR_VALUE: return "TG_ERR_VALUE";
    case TG_ERR_NOMEM: return "TG_ERR_NOMEM";
    case TG_ERR_IO: return "TG_ERR_IO";
    case TG_ERR_FORMAT: return "TG_ERR_FORMAT";
    case TG_ERR_NONFINITE: return "TG_ERR_NONFINITE";
    case TG_ERR_STATE: return "TG_ERR_STATE";
    }
    return "TG_ERR_UNKNOWN";
}

size_t tg__dtype_size(tg_dtype dtype) {
    switch (dtype) {
    case TG_F32: return sizeof(float);
    case TG_F64: return sizeof(double);
    case TG_I32: return sizeof(int32_t);
    }
    return 0;
}

const char *tg__dtype_name(tg_dtype dtype) {
    switch (dtype) {
    case TG_F32: return "f32";
    case TG_F64: return "f64";
    case TG_I32: return "i32";
    }
    return "unknown dtype";
}

const char *tg__shape_str(const tg_tensor *t, char *buf, size_t len) {
    size_t n = (size_t)snprintf(buf, len, "[");
    for (int i = 0; i < t->rank && n < len; i++)
        n += (size_t)snprintf(buf + n, len - n, i ? ",%lld" : "%lld", (long long)t->shape[i]);
    if (n < len)
        snprintf(buf + n, len - n, "]");
    return buf;
}

/* ---- Construction ---- */

/* Validates (dtype, rank, shape) for `who`; fills t's shape fields. */
static tg_status check_shape(const char *who, tg_dtype dtype, int rank, const int64_t *shape,
                             tg_tensor *t) {
    if (dtype != TG_F32 && dtype != TG_F64 && dtype != TG_I32)
        return tg__set_last_error(TG_ERR_DTYPE, "%s: unknown dtype %d", who, (int)dtype);
    if (rank < 0 || rank > TG_MAX_RANK)
        return tg__set_last_error(TG_ERR_VALUE, "%s: rank %d is outside 0..%d", who, rank,
                                  TG_MAX_RANK);
    if (rank > 0 && !shape)
        return tg__set_last_error(TG_ERR_NULL, "%s: shape is NULL for rank %d", who, rank);
    int64_t numel = 1, sizes = 1; /* sizes: the product of the nonzero sizes bounds every stride */
    for (int i = 0; i < rank; i++) {
        if (shape[i] < 0)
            return tg__set_last_error(TG_ERR_VALUE, "%s: axis %d has negative size %lld", who, i,
                                      (long long)shape[i]);
        if (shape[i] > 0 && sizes > INT64_MAX / 16 / shape[i])
            return tg__set_last_error(TG_ERR_VALUE, "%s: too many elements", who);
        sizes *= shape[i] > 0 ? shape[i] : 1;
        numel *= shape[i];
        t->shape[i] = shape[i];
    }
    t->dtype = dtype;
    t->rank = rank;
    t->numel = numel;
    t->tape_index = -1;
    return TG_OK;
}

static tg_tensor *leaf_new(const char *who, tg_dtype dtype, int rank, const int64_t *shape) {
    tg_tensor tmp = {0};
    if (check_shape(who, dtype, rank, shape, &tmp) != TG_OK)
        return NULL;
    tg_tensor *t = malloc(sizeof *t);
    /* 64-byte aligned so the SIMD kernels can load rows without splits; never 0 bytes. */
    size_t bytes = (size_t)tmp.numel * tg__dtype_size(dtype);
    size_t alloc = ((bytes + 63) / 64) * 64;
    void *data = aligned_alloc(64, alloc ? alloc : 64);
    if (!t || !data) {
        free(t);
        free(data);
        tg__set_last_error(TG_ERR_NOMEM, "%s: out of memory for %zu bytes", who, bytes);
        return NULL;
    }
    *t = tmp;
    t->data = data;
    memset(data, 0, alloc ? alloc : 64);
    return t;
}

tg_tensor *tg_tensor_new(tg_dtype dtype, int rank, const int64_t *shape) {
    return leaf_new("tg_tensor_new", dtype, rank, shape);
}

static void fill(tg_tensor *t, double v) {
    if (t->dtype == TG_I32) {
        int32_t *d = t->data;
        for (int64_t i = 0; i < t->numel; i++)
            d[i] = (int32_t)v;
        return;
    }
    TG_FOR_DTYPE(t->dtype, T, T *d = t->data; for (int64_t i = 0; i < t->numel; i++) d[i] = (T)v;);
}

tg_tensor *tg_tensor_ones(tg_dtype dtype, int rank, const int64_t *shape) {
    tg_tensor *t = leaf_new("tg_tensor_ones", dtype, rank, shape);
    if (t)
        fill(t, 1.0);
    return t;
}

tg_tensor *tg_tensor_from(tg_dtype dtype, int rank, const int64_t *shape, const void *data) {
    if (!data) {
        tg__set_last_error(TG_ERR_NULL, "tg_tensor_from: data is NULL");
        return NULL;
    }
    tg_tensor *t = leaf_new("tg_tensor_from", dtype, rank, shape);
    if (t)
        memcpy(t->data, data, (size_t)t->numel * tg__dtype_size(dtype));
    return t;
}

static tg_tensor *random_leaf(const char *who, tg_dtype dtype, int rank, const int64_t *shape,
                              double a, double b, tg_rng *rng, bool normal) {
    if (!rng) {
        tg__set_last_error(TG_ERR_NULL, "%s: rng is NULL", who);
        return NULL;
    }
    if (dtype == TG_I32) {
        tg__set_last_error(TG_ERR_DTYPE, "%s: random values need f32 or f64, not i32", who);
        return NULL;
    }
    /* The same rules as tg_init_uniform / tg_init_normal; the negated tests also reject NaN. */
    if (!normal && !(a <= b && isfinite(a) && isfinite(b))) {
        tg__set_last_error(TG_ERR_VALUE, "%s: lo %g and hi %g must be finite with lo <= hi", who, a,
                           b);
        return NULL;
    }
    if (normal && !(b >= 0 && isfinite(a) && isfinite(b))) {
        tg__set_last_error(TG_ERR_VALUE, "%s: mean %g must be finite and std %g finite and >= 0",
                           who, a, b);
        return NULL;
    }
    tg_tensor *t = leaf_new(who, dtype, rank, shape);
    if (!t)
        return NULL;
    TG_FOR_DTYPE(dtype, T, T *d = t->data; for (int64_t i = 0; i < t->numel; i++) d[i] =
                               (T)(normal ? a + b * tg_rng_normal(rng)
                                          : a + (b - a) * tg_rng_uniform(rng)););
    return t;
}

tg_tensor *tg_tensor_rand(tg_dtype dtype, int rank, const int64_t *shape, double lo, double hi,
                          tg_rng *rng) {
    return random_leaf("tg_tensor_rand", dtype, rank, shape, lo, hi, rng, false);
}

tg_tensor *tg_tensor_randn(tg_dtype dtype, int rank, const int64_t *shape, double mean, double std,
                           tg_rng *rng) {
    return random_leaf("tg_tensor_randn", dtype, rank, shape, mean, std, rng, true);
}

/* Element i of src (any dtype) as a double. */
static double elem_as_double(const void *src, tg_dtype sd, int64_t i) {
    return sd == TG_F32   ? ((const float *)src)[i]
           : sd == TG_F64 ? ((const double *)src)[i]
                          : ((const int32_t *)src)[i];
}

/* A value an int32 holds exactly after truncation toward zero: finite and within
 * [INT32_MIN, INT32_MAX] once truncated. A plain C cast of anything else is undefined behaviour. */
static bool fits_i32(double v) { return v > -2147483649.0 && v < 2147483648.0; }

/* Before converting n elements of src (dtype sd) to dd: TG_OK, or TG_ERR_VALUE naming `who` and
 * the first element an int32 cannot hold (NaN, an infinity, beyond int32's range). Checked for
 * every element before any is written, so a refused conversion modifies nothing. */
static tg_status check_convert(const char *who, tg_dtype dd, const void *src, tg_dtype sd,
                               int64_t n) {
    if (dd != TG_I32 || sd == TG_I32)
        return TG_OK;
    for (int64_t i = 0; i < n; i++) {
        const double v = elem_as_double(src, sd, i);
        if (!fits_i32(v))
            return tg__set_last_error(TG_ERR_VALUE,
                                      "%s: element %lld is %g, which an i32 cannot hold (NaN, "
                                      "an infinity, or outside [-2147483648, 2147483647]); "
                                      "nothing was written",
                                      who, (long long)i, v);
    }
    return TG_OK;
}

/* Converts n elements between any two dtypes; check_convert has accepted them. */
static void convert(void *dst, tg_dtype dd, const void *src, tg_dtype sd, int64_t n) {
    if (dd == sd) {
        memmove(dst, src, (size_t)n * tg__dtype_size(dd));
        return;
    }
    for (int64_t i = 0; i < n; i++) {
        double v = elem_as_double(src, sd, i);
        if (dd == TG_F32)
            ((float *)dst)[i] = (float)v;
        else if (dd == TG_F64)
            ((double *)dst)[i] = v;
        else
            ((int32_t *)dst)[i] = (int32_t)v;
    }
}

tg_tensor *tg_tensor_clone(const tg_tensor *src, tg_dtype dtype) {
    if (!src) {
        tg__set_last_error(TG_ERR_NULL, "tg_tensor_clone: src is NULL");
        return NULL;
    }
    if (check_convert("tg_tensor_clone", dtype, src->data, src->dtype, src->numel) != TG_OK)
        return NULL;
    tg_tensor *t = leaf_new("tg_tensor_clone", dtype, src->rank, src->shape);
    if (!t)
        return NULL;
    convert(t->data, dtype, src->data, src->dtype, src->numel);
    memcpy(t->name, src->name, sizeof t->name);
    /* An integer tensor never requires a gradient (tg_tensor_set_requires_grad refuses it):
     * gradcheck and the optimizers would treat its int32 data as floating point. */
    t->requires_grad = src->requires_grad && dtype != TG_I32;
    return t;
}

/* A node's values are read-only once recorded (what its backward and its consumers' backwards use
 * would no longer match them); a custom op's forward fills its own output while it is being
 * recorded, and backwards write gradients. */
static bool writable(const tg_tensor *t) { return !t->on_tape || !t->op || t->tape_index < 0; }

static tg_status refuse_write(const char *who, const tg_tensor *t) {
    return tg__set_last_error(TG_ERR_STATE,
                              "%s: '%s' belongs to a tape and is read-only once recorded (its "
                              "gradients would no longer match its values)",
                              who, t->name[0] ? t->name : tg_tensor_op_name(t));
}

tg_status tg_tensor_copy(tg_tensor *dst, const tg_tensor *src) {
    if (!dst || !src)
        return tg__set_last_error(TG_ERR_NULL, "tg_tensor_copy: %s is NULL", dst ? "src" : "dst");
    if (!writable(dst))
        return refuse_write("tg_tensor_copy", dst);
    char s1[TG_SHAPE_STR_LEN], s2[TG_SHAPE_STR_LEN];
    if (dst->rank != src->rank ||
        memcmp(dst->shape, src->shape, sizeof(int64_t) * (size_t)src->rank) != 0)
        return tg__set_last_error(TG_ERR_SHAPE, "tg_tensor_copy: shapes differ: dst %s, src %s",
                                  tg__shape_str(dst, s1, sizeof s1),
                                  tg__shape_str(src, s2, sizeof s2));
    tg_status st = check_convert("tg_tensor_copy", dst->dtype, src->data, src->dtype, src->numel);
    if (st != TG_OK)
        return st;
    convert(dst->data, dst->dtype, src->data, src->dtype, src->numel);
    return TG_OK;
}

/* Frees a leaf and its gradient, whoever owns them. */
static void free_leaf(tg_tensor *t) {
    if (!t || t->on_tape)
        return;
    free_leaf(t->grad);
    free(t->data);
    free(t);
}

void tg_tensor_free(tg_tensor *t) {
    if (!t || t->on_tape)
        return;
    if (t->owner != TG__OWN_CALLER) {
        /* Freeing it here would free it again when its owner goes. */
        tg__set_last_error(TG_ERR_STATE,
                           "tg_tensor_free: %s '%s' %s is not the caller's to free; it was "
                           "ignored (%s)",
                           t->owner == TG__OWN_GRAD ? "the gradient" : "the batch tensor", t->name,
                           tg__dtype_name(t->dtype),
                           t->owner == TG__OWN_GRAD ? "it is freed with its tensor"
                                                    : "tg_dataset_free frees it");
        return;
    }
    free_leaf(t);
}

/* ---- Accessors ---- */

tg_dtype tg_tensor_dtype(const tg_tensor *t) { return t ? t->dtype : TG_F32; }
int tg_tensor_rank(const tg_tensor *t) { return t ? t->rank : 0; }
const int64_t *tg_tensor_shape(const tg_tensor *t) { return t ? t->shape : NULL; }
int64_t tg_tensor_numel(const tg_tensor *t) { return t ? t->numel : 0; }
void *tg_tensor_data(tg_tensor *t) { return t ? t->data : NULL; }
const void *tg_tensor_cdata(const tg_tensor *t) { return t ? t->data : NULL; }
tg_tensor *tg_tensor_grad(const tg_tensor *t) {
    /* A leaf's gradient is made by tg_backward, marked TG__OWN_GRAD (tg_tensor_free refuses it)
     * and freed with the leaf. */
    return t ? t->grad : NULL;
}
int tg_tensor_requires_grad(const tg_tensor *t) { return t ? t->requires_grad : 0; }
const char *tg_tensor_name(const tg_tensor *t) { return t ? t->name : ""; }

int64_t tg_tensor_dim(const tg_tensor *t, int axis) {
    if (!t)
        return 0;
    if (axis < 0)
        axis += t->rank;
    return (axis >= 0 && axis < t->rank) ? t->shape[axis] : 0;
}

double tg_tensor_get(const tg_tensor *t, int64_t i) {
    if (!t || i < 0 || i >= t->numel)
        return 0.0;
    switch (t->dtype) {
    case TG_F32: return ((const float *)t->data)[i];
    case TG_F64: return ((const double *)t->data)[i];
    case TG_I32: return ((const int32_t *)t->data)[i];
    }
    return 0.0;
}

tg_status tg_tensor_set(tg_tensor *t, int64_t i, double v) {
    if (!t)
        return tg__set_last_error(TG_ERR_NULL, "tg_tensor_set: tensor is NULL");
    if (!writable(t))
        return refuse_write("tg_tensor_set", t);
    if (i < 0 || i >= t->numel)
        return tg__set_last_error(TG_ERR_VALUE, "tg_tensor_set: index %lld is outside 0..%lld",
                                  (long long)i, (long long)t->numel - 1);
    if (t->dtype == TG_I32 && !fits_i32(v))
        return tg__set_last_error(TG_ERR_VALUE,
                                  "tg_tensor_set: %g does not fit an i32 element (NaN, an "
                                  "infinity, or outside [-2147483648, 2147483647]); element %lld "
                                  "is unchanged",
                                  v, (long long)i);
    convert((char *)t->data + (size_t)i * tg__dtype_size(t->dtype), t->dtype, &v, TG_F64, 1);
    return TG_OK;
}

double tg_tensor_item(const tg_tensor *t) {
    return (t && t->numel == 1) ? tg_tensor_get(t, 0) : NAN;
}

tg_status tg_tensor_set_requires_grad(tg_tensor *t, int requires_grad) {
    if (!t)
        return tg__set_last_error(TG_ERR_NULL, "tg_tensor_set_requires_grad: tensor is NULL");
    if (t->on_tape)
        return tg__set_last_error(TG_ERR_STATE,
                                  "tg_tensor_set_requires_grad: '%s' is a tape tensor; whether it "
                                  "needs a gradient follows from its inputs",
                                  t->name[0] ? t->name : tg_tensor_op_name(t));
    if (t->dtype == TG_I32 && requires_grad)
        return tg__set_last_error(TG_ERR_DTYPE,
                                  "tg_tensor_set_requires_grad: an i32 tensor has no gradient");
    t->requires_grad = requires_grad != 0;
    return TG_OK;
}

void tg_tensor_zero_grad(tg_tensor *t) {
    if (t && t->grad)
        memset(t->grad->data, 0, (size_t)t->numel * tg__dtype_size(t->dtype));
}

void tg_tensor_set_name(tg_tensor *t, const char *name) {
    if (!t)
        return;
    if (!name)
        name = "";
    snprintf(t->name, sizeof t->name, "%s", name);
}

const char *tg_tensor_op_name(const tg_tensor *t) { return t ? tg__node_op_name(t) : "leaf"; }

const char *tg_tensor_op_saves(const tg_tensor *t) {
    if (!t || !t->op)
        return "nothing (a leaf)";
    return t->op->saves;
}

int tg_tensor_n_inputs(const tg_tensor *t) { return t ? t->n_inputs : 0; }
tg_tensor *tg_tensor_input(const tg_tensor *t, int i) {
    return (t && i >= 0 && i < t->n_inputs) ? t->inputs[i] : NULL;
}
int64_t tg_tensor_tape_index(const tg_tensor *t) { return (t && t->on_tape) ? t->tape_index : -1; }
const char *tg_tensor_src_file(const tg_tensor *t) { return t ? t->src_file : NULL; }
int tg_tensor_src_line(const tg_tensor *t) { return t ? t->src_line : 0; }

void tg_tensor_print(const tg_tensor *t, FILE *out) {
    if (!out)
        return;
    if (!t) {
        fprintf(out, "(null tensor)\n");
        return;
    }
    char s[TG_SHAPE_STR_LEN];
    fprintf(out, "%s %s %s", t->name[0] ? t->name : tg_tensor_op_name(t), tg__dtype_name(t->dtype),
            tg__shape_str(t, s, sizeof s));
    const int64_t shown = 8; /* first and last `shown / 2` elements of a long tensor */
    fprintf(out, " = [");
    for (int64_t i = 0; i < t->numel; i++) {
        if (t->numel > shown && i == shown / 2) {
            fprintf(out, ", ...");
            i = t->numel - shown / 2;
        }
        fprintf(out, "%s%.6g", i ? ", " : "", tg_tensor_get(t, i));
    }
    fprintf(out, "]\n");
}

/* ---- Saved views ---- */

tg__saved_view tg__view(const char *name, const char *what, tg_dtype dtype, int rank,
                        const int64_t *shape, const void *data) {
    tg__saved_view v = {.name = name, .what = what};
    v.tensor = (tg_tensor){.dtype = dtype,
                           .rank = rank,
                           .numel = 1,
                           .data = (void *)data, /* read only: the tools never write a view */
                           .owner = TG__OWN_TAPE,
                           .on_tape = true,
                           .tape_index = -1};
    for (int i = 0; i < rank; i++) {
        v.tensor.shape[i] = shape[i];
        v.tensor.numel *= shape[i];
    }
    return v;
}

/* ---- Broadcasting ---- */

tg_status tg__bcast_shape(const tg_tensor *a, const tg_tensor *b, tg_tensor *out, char *msg,
                          size_t msg_len) {
    int rank = a->rank > b->rank ? a->rank : b->rank;
    for (int i = 0; i < rank; i++) {
        /* Axis i of the output, counted from the right, aligns with the same of a and b. */
        int ia = a->rank - rank + i, ib = b->rank - rank + i;
        int64_t da = ia >= 0 ? a->shape[ia] : 1, db = ib >= 0 ? b->shape[ib] : 1;
        if (da != db && da != 1 && db != 1) {
            char s1[TG_SHAPE_STR_LEN], s2[TG_SHAPE_STR_LEN];
            snprintf(msg, msg_len, "shapes %s and %s do not broadcast (axis %d: %lld vs %lld)",
                     tg__shape_str(a, s1, sizeof s1), tg__shape_str(b, s2, sizeof s2), i,
                     (long long)da, (long long)db);
            return TG_ERR_SHAPE;
        }
        out->shape[i] = da == 1 ? db : da;
    }
    out->rank = rank;
    return TG_OK;
}

/* Strides of x aligned with out's axes (right-aligned), 0 along axes where x has size 1 (or
 * none) and out does not. */
static void bcast_strides(const tg_tensor *x, const tg_tensor *out, int64_t *stride) {
    int64_t s = 1;
    for (int i = out->rank - 1; i >= 0; i--) {
        const int ix = x->rank - out->rank + i; /* x's axis aligned with out's axis i */
        const int64_t dx = ix >= 0 ? x->shape[ix] : 1;
        stride[i] = (dx == 1 && out->shape[i] != 1) ? 0 : s;
        s *= dx;
    }
}

void tg__bcast_init(tg__bcast *bc, const tg_tensor *a, const tg_tensor *b, const tg_tensor *out) {
    int64_t sa[TG_MAX_RANK], sb[TG_MAX_RANK];
    bcast_strides(a, out, sa);
    bcast_strides(b, out, sb);
    /* Collapse: axis i merges into the axis after it when, for both inputs, stepping along i is
     * the same as stepping dim(i+1) times along i+1 (contiguous, or broadcast along both).
     * Size-1 axes are dropped first. */
    int n = 0;
    for (int i = 0; i < out->rank; i++) {
        if (out->shape[i] == 1)
            continue;
        if (n > 0) {
            const bool merge_a = bc->stride_a[n - 1] == sa[i] * out->shape[i] ||
                                 (bc->stride_a[n - 1] == 0 && sa[i] == 0);
            const bool merge_b = bc->stride_b[n - 1] == sb[i] * out->shape[i] ||
                                 (bc->stride_b[n - 1] == 0 && sb[i] == 0);
            if (merge_a && merge_b) {
                bc->dim[n - 1] *= out->shape[i];
                bc->stride_a[n - 1] = sa[i];
                bc->stride_b[n - 1] = sb[i];
                continue;
            }
        }
        bc->dim[n] = out->shape[i];
        bc->stride_a[n] = sa[i];
        bc->stride_b[n] = sb[i];
        n++;
    }
    if (n == 0) { /* every axis has size 1 (or rank 0): one element */
        bc->dim[0] = 1;
        bc->stride_a[0] = 0;
        bc->stride_b[0] = 0;
        n = 1;
    }
    bc->n = n;
}

tg_status tg__shape_same(tg_tensor *out, char *msg, size_t msg_len) {
    (void)msg;
    (void)msg_len;
    const tg_tensor *x = out->inputs[0];
    out->rank = x->rank;
    memcpy(out->shape, x->shape, sizeof out->shape);
    return TG_OK;
}
