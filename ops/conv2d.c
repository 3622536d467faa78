/* conv2d: y[n,k,i,j] = b[k] + sum_{c,r,s} w[k,c,r,s] x[n, g Cg + c, i sh - ph + r dh, j sw - pw + s dw]
 *   x [N,C,H,W], w [K,Cg,R,S] (Cg = C/groups, g = k / (K/groups)), b [K] or absent, y [N,K,OH,OW],
 *   OH = floor((H + 2 ph - dh (R-1) - 1) / sh) + 1 (OW alike); x is 0 outside the image.
 * y is linear in each of x, w, b, so
 *   dx[n, g Cg + c, i sh - ph + r dh, j sw - pw + s dw] += w[k,c,r,s] dy[n,k,i,j]  (over every
 *     window holding the pixel: the transposed convolution of dy),
 *   dw[k,c,r,s] += sum_{n,i,j} dy[n,k,i,j] x[n, g Cg + c, ...],   db[k] += sum_{n,i,j} dy[n,k,i,j].
 * Saves nothing but the workspace (the im2col buffers and dw's partial sums, from the tape's
 * arena, sized for the thread count at recording time): backward reads x and w by reference. */
#include "kernels/conv.h"

typedef struct conv2d_params {
    int64_t stride[2], pad[2], dil[2], groups; /* the defaults filled in */
    tg__conv2d_geom g;                         /* filled by the shape check */
} conv2d_params;

typedef struct conv2d_saved {
    void *ws; /* the kernels' workspace, shared by forward and backward */
    size_t ws_bytes;
} conv2d_saved;

static tg_status conv2d_shape(tg_tensor *y, char *msg, size_t len) {
    const tg_tensor *x = y->inputs[0], *w = y->inputs[1];
    const tg_tensor *b = y->n_inputs > 2 ? y->inputs[2] : NULL;
    conv2d_params *p = y->params;
    const tg_status st =
        tg__conv2d_geom_init(&p->g, x->rank, x->shape, w->rank, w->shape, b ? b->rank : 0,
                             b ? b->shape : NULL, p->stride, p->pad, p->dil, p->groups, msg, len);
    if (st != TG_OK) { /* the kernel's message starts "conv2d: ", which the engine's prefix says */
        if (strncmp(msg, "conv2d: ", 8) == 0)
            memmove(msg, msg + 8, strlen(msg + 8) + 1);
        return st;
    }
    y->rank = 4;
    y->shape[0] = p->g.N;
    y->shape[1] = p->g.K;
    y->shape[2] = p->g.OH;
    y->shape[3] = p->g.OW;
    return TG_OK;
}

static tg_status conv2d_forward(tg_tape *tape, tg_tensor *y) {
    const conv2d_params *p = y->params;
    conv2d_saved *sv = tg__tape_alloc(tape, sizeof *sv);
    if (!sv)
        return TG_ERR_NOMEM;
    /* sized for the threads now; fewer later (tg_set_num_threads) gives the same result */
    sv->ws_bytes = tg__conv2d_workspace_bytes(&p->g, y->dtype, tg_get_num_threads());
    sv->ws = tg__tape_alloc_raw(tape, sv->ws_bytes);
    if (!sv->ws)
        return TG_ERR_NOMEM;
    y->saved = sv;
    const tg_tensor *b = y->n_inputs > 2 ? y->inputs[2] : NULL;
    return tg__conv2d_forward(&p->g, y->dtype, y->inputs[0]->data, y->inputs[1]->data,
                              b ? b->data : NULL, y->data, sv->ws, sv->ws_bytes);
}

static void conv2d_backward(const tg_tensor *y, const tg_tensor *dout, tg_tensor *const *din) {
    const conv2d_params *p = y->params;
    const conv2d_saved *sv = y->saved;
    void *dx = din[0] ? din[0]->data : NULL, *dw = din[1] ? din[1]->data : NULL;
    tg__dx_zero_if_fresh(din[1]); /* dw and db are sums over the images that add */
    if (y->n_inputs > 2)
        tg__dx_zero_if_fresh(din[2]);
    void *db = y->n_inputs > 2 && din[2] ? din[2]->data : NULL;
    /* x is read only for dw, w only for dx */
    const tg_status st = tg__conv2d_backward(&p->g, y->dtype, dw ? y->inputs[0]->data : NULL,
                                             dx ? y->inputs[1]->data : NULL, dout->data, dx, dw, db,
                                             sv->ws, sv->ws_bytes, tg__dx_fresh(din[0]));
    TG_CHECK(st == TG_OK); /* the workspace was sized for this geometry */
}

static int conv2d_print(const tg_tensor *y, char *buf, size_t len) {
    const conv2d_params *p = y->params;
    return snprintf(
        buf, len, "stride=[%lld,%lld], padding=[%lld,%lld], dilation=[%lld,%lld], groups=%lld",
        (long long)p->stride[0], (long long)p->stride[1], (long long)p->pad[0],
        (long long)p->pad[1], (long long)p->dil[0], (long long)p->dil[1], (long long)p->groups);
}

const tg__op_desc tg__op_conv2d = {
    .name = "conv2d",
    .saves = "nothing new: x and w by reference (and a workspace from the tape's arena)",
    .min_inputs = 2,
    .flags = TG__OP_WRITES_GRAD,
    .max_inputs = 3,
    .params_size = sizeof(conv2d_params),
    .shape = conv2d_shape,
    .forward = conv2d_forward,
    .backward = conv2d_backward,
    .print_params = conv2d_print,
    .rule = "dx += conv_transpose(dy, w), dw += sum over n,i,j of dy x-window, db += sum dy",
};

tg_tensor *tg_conv2d_at(tg_tape *t, tg_tensor *x, tg_tensor *w, tg_tensor *b,
                        const tg_conv2d_opts *opts, const char *file, int line) {
    const tg_conv2d_opts o = opts ? *opts : (tg_conv2d_opts){0};
    conv2d_params p = {.groups = o.groups ? o.groups : 1};
    for (int i = 0; i < 2; i++) {
        p.stride[i] = o.stride[i] ? o.stride[i] : 1;
        p.pad[i] = o.padding[i];
        p.dil[i] = o.dilation[i] ? o.dilation[i] : 1;
    }
    tg_tensor *in[3] = {x, w, b};
    return tg__record(t, &tg__op_conv2d, in, b ? 3 : 2, &p, file, line);
}
