/* pooling.h -- private to ops/: what max_pool2d, avg_pool2d and batch_norm_relu_max_pool2d share
 * (the pool's parameters, the builder's reading of tg_pool2d_opts, the shape check, the
 * listing). Not an op (CMake compiles only the .c files of ops/). */
#ifndef TG_OPS_POOLING_H
#define TG_OPS_POOLING_H

#include "kernels/conv.h"

typedef struct tg__pool2d_params {
    int64_t kernel[2], stride[2], pad[2]; /* stride 0 replaced by the kernel */
    int count_include_pad;                /* avg_pool2d only */
    bool opts_missing;                    /* the caller passed NULL opts */
    tg__pool2d_geom g;                    /* filled by the shape check */
} tg__pool2d_params;

static inline tg__pool2d_params tg__pool2d_params_of(const tg_pool2d_opts *opts) {
    tg__pool2d_params p = {.opts_missing = !opts};
    if (!opts)
        return p;
    for (int i = 0; i < 2; i++) {
        p.kernel[i] = opts->kernel[i];
        p.stride[i] = opts->stride[i] ? opts->stride[i] : opts->kernel[i];
        p.pad[i] = opts->padding[i];
    }
    p.count_include_pad = opts->count_include_pad != 0;
    return p;
}

/* The shape check: the geometry into *p (y's params, or a fused op's part of them), the message
 * without the kernel's "op: " prefix (the engine's prefix names the op). */
static inline tg_status tg__pool2d_shape_of(tg__pool2d_params *p, tg_tensor *y, const char *op,
                                            char *msg, size_t len) {
    const tg_tensor *x = y->inputs[0];
    if (p->opts_missing) {
        snprintf(msg, len, "opts is NULL (the kernel size is required)");
        return TG_ERR_NULL;
    }
    const tg_status st =
        tg__pool2d_geom_init(&p->g, op, x->rank, x->shape, p->kernel, p->stride, p->pad, msg, len);
    const size_t n = strlen(op);
    if (st != TG_OK) {
        if (strncmp(msg, op, n) == 0 && msg[n] == ':' && msg[n + 1] == ' ')
            memmove(msg, msg + n + 2, strlen(msg + n + 2) + 1);
        return st;
    }
    y->rank = 4;
    y->shape[0] = p->g.N;
    y->shape[1] = p->g.C;
    y->shape[2] = p->g.OH;
    y->shape[3] = p->g.OW;
    return TG_OK;
}

static inline tg_status tg__pool2d_shape(tg_tensor *y, const char *op, char *msg, size_t len) {
    return tg__pool2d_shape_of(y->params, y, op, msg, len);
}

static inline int tg__pool2d_print_of(const tg__pool2d_params *p, bool avg, char *buf, size_t len) {
    return snprintf(buf, len, "kernel=[%lld,%lld], stride=[%lld,%lld], padding=[%lld,%lld]%s",
                    (long long)p->kernel[0], (long long)p->kernel[1], (long long)p->stride[0],
                    (long long)p->stride[1], (long long)p->pad[0], (long long)p->pad[1],
                    avg ? (p->count_include_pad ? ", count_include_pad" : ", padding not counted")
                        : "");
}

static inline int tg__pool2d_print(const tg_tensor *y, bool avg, char *buf, size_t len) {
    return tg__pool2d_print_of(y->params, avg, buf, len);
}

#endif /* TG_OPS_POOLING_H */
