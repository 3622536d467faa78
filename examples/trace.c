/* trace.c -- one sample through the course report's 2-4-2 network, with every step shown.
 *
 * The report (equation 7) writes the network with column vectors:
 *     h~ = W_h x + b_h,   h = tanh(h~),   y~ = W_y h + b_y,   y^ = softmax(y~)
 * and the loss l = -sum_i y_i log y^_i (equation 14). tapegrad's softmax_cross_entropy fuses the
 * softmax and the loss (it is stabler), so y^ is not a tensor of its own: it is what the loss node
 * saves for backward, and the trace prints it there as p = softmax(y~). The fused op takes a batch
 * of rows, so the column y~ [2,1] is transposed into one row, y~^T [1,2], first.
 *
 * Prints the tape as a listing, the forward values, the backward pass as the chain rule with
 * numbers, and the loss; writes the graph as DOT and, when Graphviz is installed, as a picture.
 *
 *     build/examples/trace [--decay] [--html page.html] [picture.png|.svg]
 *                                                          (default picture: trace.png here)
 *
 * --html also writes the step-through page of the same pass (tg_tape_write_html runs the backward
 * pass in place of tg_backward, with the trace on: the text above and the page are one pass).
 *
 * --decay adds weight decay on W_y, loss = cross-entropy + 0.1 mean(W_y^2), so that W_y feeds two
 * ops and the trace shows its gradient as the sum of two contributions.
 */
#include <tapegrad.h>

#include <stdio.h>
#include <string.h>

/* A leaf of doubles with a name; marks it as a parameter when `param` is set. */
static tg_tensor *leaf(const char *name, int rank, const int64_t *shape, const double *values,
                       int param) {
    tg_tensor *t = tg_tensor_from(TG_F64, rank, shape, values);
    if (!t) {
        fprintf(stderr, "trace: %s\n", tg_last_errmsg());
        return NULL;
    }
    tg_tensor_set_name(t, name);
    tg_tensor_set_requires_grad(t, param);
    return t;
}

/* "  name  = [ 0.3000  0.7000 ]^T": one line per matrix row, column vectors marked ^T as in the
 * trace, so the forward numbers read like the backward ones. */
static void show(const tg_tensor *t) {
    const int rank = tg_tensor_rank(t);
    const int64_t *shape = tg_tensor_shape(t);
    const int64_t rows = rank == 2 && shape[1] > 1 ? shape[0] : 1;
    const int64_t cols = tg_tensor_numel(t) / rows;
    const int column = rank == 2 && shape[0] > 1 && shape[1] == 1;
    printf("  %-6s = ", tg_tensor_name(t));
    if (rank == 0) {
        printf("%.4f\n", tg_tensor_item(t));
        return;
    }
    for (int64_t r = 0; r < rows; r++) {
        printf("%s[", r ? "           " : "");
        for (int64_t c = 0; c < cols; c++)
            printf(" %7.4f", tg_tensor_get(t, r * cols + c));
        printf(" ]%s\n", column ? "^T" : "");
    }
}

static void rule(const char *title) {
    printf("\n==== %s ", title);
    for (size_t i = strlen(title); i < 90; i++)
        putchar('=');
    printf("\n\n");
}

int main(int argc, char **argv) {
    const char *picture = "trace.png", *html = NULL;
    int decay = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--decay") == 0) {
            decay = 1;
        } else if (strcmp(argv[i], "--html") == 0) {
            if (i + 1 == argc) {
                fprintf(stderr, "trace: --html needs a file name (e.g. --html page.html)\n");
                return 2;
            }
            html = argv[++i];
        } else {
            picture = argv[i];
        }
    }

    /* Small round numbers, so a student can redo the forward pass by hand. */
    const double W_h[] = {0.5, -0.4, 0.3, 0.8, -0.7, 0.2, 0.1, -0.6};
    const double b_h[] = {0.1, -0.2, 0.0, 0.3};
    const double W_y[] = {0.6, -0.5, 0.4, 0.2, -0.3, 0.7, -0.8, 0.5};
    const double b_y[] = {0.1, -0.1};
    const double x_v[] = {1.0, 0.5};
    const int32_t label[] = {1}; /* the sample belongs to class 1 (0-based): y = (0, 1) */

    tg_tensor *Wh = leaf("W_h", TG_SHAPE(4, 2), W_h, 1);
    tg_tensor *bh = leaf("b_h", TG_SHAPE(4, 1), b_h, 1);
    tg_tensor *Wy = leaf("W_y", TG_SHAPE(2, 4), W_y, 1);
    tg_tensor *by = leaf("b_y", TG_SHAPE(2, 1), b_y, 1);
    tg_tensor *x = leaf("x", TG_SHAPE(2, 1), x_v, 0);
    tg_tensor *y = tg_tensor_from(TG_I32, TG_SHAPE(1), label);
    tg_tape *t = tg_tape_new();
    if (!Wh || !bh || !Wy || !by || !x || !y || !t) {
        fprintf(stderr, "trace: out of memory\n");
        return 1;
    }
    tg_tensor_set_name(y, "y");

    /* Equation 7, one builder call per term, each result named as in the report. */
    tg_tensor *Whx = tg_matmul(t, Wh, x);
    tg_tensor *h_ = tg_add(t, Whx, bh);
    tg_tensor *h = tg_tanh(t, h_);
    tg_tensor *Wyh = tg_matmul(t, Wy, h);
    tg_tensor *y_ = tg_add(t, Wyh, by);
    tg_tensor *y_row = tg_transpose(t, y_);
    tg_tensor *ce = tg_softmax_cross_entropy(t, y_row, y);
    tg_tensor *loss = ce, *zero = NULL;
    if (decay) { /* loss = ce + 0.1 mean((W_y - 0)^2): a second path from W_y to the loss */
        zero = tg_tensor_new(TG_F64, TG_SHAPE(2, 4));
        tg_tensor_set_name(zero, "0");
        tg_tensor *r = tg_mse(t, Wy, zero);
        tg_tensor *lr = tg_scale(t, r, 0.1);
        loss = tg_add(t, ce, lr);
        tg_tensor_set_name(ce, "ce");
        tg_tensor_set_name(r, "r");
        tg_tensor_set_name(lr, "0.1 r");
    }
    if (tg_tape_status(t) != TG_OK) {
        fprintf(stderr, "trace: %s\n", tg_tape_errmsg(t));
        return 1;
    }
    tg_tensor_set_name(Whx, "W_h x");
    tg_tensor_set_name(h_, "h~");
    tg_tensor_set_name(h, "h");
    tg_tensor_set_name(Wyh, "W_y h");
    tg_tensor_set_name(y_, "y~");
    tg_tensor_set_name(y_row, "y~^T");
    tg_tensor_set_name(loss, "loss");

    rule("the tape: what forward recorded");
    tg_tape_print(t, stdout);

    rule("forward values");
    const tg_tensor *params[] = {Wh, bh, Wy, by, x};
    for (int i = 0; i < 5; i++)
        show(params[i]);
    printf("  y      = class %d, one-hot (0, 1)\n\n", label[0]);
    for (int64_t i = 0; i < tg_tape_size(t); i++)
        show(tg_tape_node(t, i));

    rule("backward: the chain rule, node by node");
    tg_tape_set_trace(t, stdout);
    /* The page's pass is the backward pass: the trace prints it as it runs. */
    if (html ? tg_tape_write_html(t, loss, html) != TG_OK : tg_backward(t, loss) != TG_OK) {
        fprintf(stderr, "trace: %s\n", html ? tg_last_errmsg() : tg_tape_errmsg(t));
        return 1;
    }
    tg_tape_set_trace(t, NULL);

    rule("result");
    printf("loss = %.6f\n", tg_tensor_item(loss));
    if (html)
        printf("step-through page: %s\n", html);

    /* The picture: the DOT text always, the image when Graphviz is installed. */
    char dot_path[512];
    snprintf(dot_path, sizeof dot_path, "%.*s.dot",
             (int)(strrchr(picture, '.') ? strrchr(picture, '.') - picture : (long)strlen(picture)),
             picture);
    if (tg_tape_save_dot(t, dot_path) == TG_OK)
        printf("graph: %s", dot_path);
    else
        printf("graph: %s", tg_last_errmsg());
    if (tg_tape_render(t, picture) == TG_OK)
        printf(", picture: %s\n", picture);
    else
        printf("\n(no picture: %s)\n", tg_last_errmsg());

    tg_tape_free(t);
    tg_tensor_free(Wh);
    tg_tensor_free(bh);
    tg_tensor_free(Wy);
    tg_tensor_free(by);
    tg_tensor_free(x);
    tg_tensor_free(y);
    tg_tensor_free(zero);
    return 0;
}
