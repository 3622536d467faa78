/* consumer.c -- a program outside the tapegrad tree, built against the *installed* package.
 * loss = sum(tanh(w * x)) for a parameter w and a constant x; checks d loss / d w against the
 * closed form x (1 - tanh^2(w x)) and that the linked library is the header's version. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include <tapegrad.h>

int main(void) {
    int failures = 0;
    if (strcmp(tg_version(), TG_VERSION_STRING) != 0) {
        fprintf(stderr, "consumer.c: library %s but header %s\n", tg_version(), TG_VERSION_STRING);
        failures++;
    }

    const double wv[3] = {0.5, -1.0, 2.0};
    const double xv[3] = {1.5, 0.25, -0.75};
    tg_tensor *w = tg_tensor_from(TG_F64, TG_SHAPE(3), wv);
    tg_tensor *x = tg_tensor_from(TG_F64, TG_SHAPE(3), xv);
    if (!w || !x) {
        fprintf(stderr, "consumer.c: %s\n", tg_last_errmsg());
        return 1;
    }
    tg_tensor_set_requires_grad(w, 1);

    tg_tape *t = tg_tape_new();
    tg_tensor *loss = tg_sum(t, tg_tanh(t, tg_mul(t, w, x)));
    if (tg_backward(t, loss) != TG_OK) {
        fprintf(stderr, "consumer.c: %s\n", tg_tape_errmsg(t));
        return 1;
    }
    for (int i = 0; i < 3; i++) {
        double y = tanh(wv[i] * xv[i]);
        double expect = xv[i] * (1.0 - y * y);
        double got = tg_tensor_get(tg_tensor_grad(w), i);
        if (fabs(got - expect) > 1e-12) {
            fprintf(stderr, "consumer.c: dw[%d] = %.17g, expected %.17g\n", i, got, expect);
            failures++;
        }
    }
    printf("consumer (C, tapegrad %s): loss = %.6f, %s\n", tg_version(), tg_tensor_item(loss),
           failures ? "FAIL" : "ok");
    tg_tape_free(t);
    tg_tensor_free(w);
    tg_tensor_free(x);
    return failures ? 1 : 0;
}
