/* quickstart.c -- the course report's 2-4-2 network, trained with plain gradient descent.
 *
 * h~ = W_h x + b_h, h = tanh(h~), y~ = W_y h + b_y, loss = cross-entropy(softmax(y~), y), written
 * for a batch of row vectors X [N,2] as H~ = X W_h^T + b_h. The data: 4 points of XOR, which no
 * linear model separates. Prints the loss as it falls, then the predictions. */
#include <stdio.h>
#include <tapegrad.h>

int main(void) {
    const float xor_x[8] = {-1, -1, -1, 1, 1, -1, 1, 1};
    const int32_t xor_y[4] = {0, 1, 1, 0};
    tg_tensor *X = tg_tensor_from(TG_F32, TG_SHAPE(4, 2), xor_x);
    tg_tensor *y = tg_tensor_from(TG_I32, TG_SHAPE(4), xor_y);

    tg_rng rng;
    tg_rng_seed(&rng, 42);
    tg_tensor *W_h = tg_tensor_randn(TG_F32, TG_SHAPE(4, 2), 0, 1, &rng);
    tg_tensor *b_h = tg_tensor_new(TG_F32, TG_SHAPE(4));
    tg_tensor *W_y = tg_tensor_randn(TG_F32, TG_SHAPE(2, 4), 0, 0.5, &rng);
    tg_tensor *b_y = tg_tensor_new(TG_F32, TG_SHAPE(2));
    tg_tensor *params[] = {W_h, b_h, W_y, b_y};
    for (int i = 0; i < 4; i++)
        tg_tensor_set_requires_grad(params[i], 1);

    tg_tape *t = tg_tape_new();
    const float lr = 0.5f;
    tg_tensor *y_tilde = NULL;
    for (int step = 0; step <= 300; step++) {
        tg_tape_reset(t); /* reuses the tape's memory: no allocation after the first steps */
        tg_tensor *h = tg_tanh(t, tg_add(t, tg_matmul(t, X, tg_transpose(t, W_h)), b_h));
        y_tilde = tg_add(t, tg_matmul(t, h, tg_transpose(t, W_y)), b_y);
        tg_tensor *loss = tg_softmax_cross_entropy(t, y_tilde, y);
        if (tg_backward(t, loss) != TG_OK) { /* one check for the whole model */
            fprintf(stderr, "%s\n", tg_tape_errmsg(t));
            return 1;
        }
        if (step % 50 == 0)
            printf("step %3d  loss %.4f\n", step, tg_tensor_item(loss));
        for (int i = 0; i < 4; i++) { /* gradient descent: p -= lr * dl/dp */
            float *p = tg_tensor_data(params[i]);
            const float *g = tg_tensor_data(tg_tensor_grad(params[i]));
            for (int64_t k = 0; k < tg_tensor_numel(params[i]); k++)
                p[k] -= lr * g[k];
            tg_tensor_zero_grad(params[i]);
        }
    }
    int correct = 0;
    for (int n = 0; n < 4; n++) {
        const float *z = (const float *)tg_tensor_data(y_tilde) + 2 * n;
        int pred = z[1] > z[0];
        correct += pred == xor_y[n];
        printf("x = (%2.0f, %2.0f)  class %d  predicted %d\n", xor_x[2 * n], xor_x[2 * n + 1],
               xor_y[n], pred);
    }
    printf("%d of 4 correct\n", correct);

    tg_tape_free(t);
    for (int i = 0; i < 4; i++)
        tg_tensor_free(params[i]);
    tg_tensor_free(X);
    tg_tensor_free(y);
    return correct == 4 ? 0 : 1;
}
