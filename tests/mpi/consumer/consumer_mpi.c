/* consumer_mpi.c -- a program built against the installed libtapegrad_mpi: one process (MPI's
 * singleton mode, no mpirun) averages the gradient of a one-parameter model; checks the values. */
#include <tapegrad_mpi.h>

#include <stdio.h>

int main(int argc, char **argv) {
    if (tg_mpi_init(&argc, &argv) != TG_OK) {
        fprintf(stderr, "consumer_mpi: %s\n", tg_mpi_errmsg());
        return 1;
    }
    tg_tensor *w = tg_tensor_from(TG_F32, 1, (const int64_t[]){2}, (const float[]){1, 2});
    tg_tensor_set_requires_grad(w, 1);
    tg_tensor_set_name(w, "w");
    tg_tape *t = tg_tape_new();
    tg_mpi_dp *dp = tg_mpi_dp_new(NULL, &w, 1);
    int ok = dp && tg_mpi_dp_broadcast(dp) == TG_OK && tg_mpi_dp_attach(dp, t) == TG_OK &&
             tg_mpi_dp_begin(dp, 1, 1) == TG_OK;
    double loss = 0;
    if (ok) {
        tg_tensor *l = tg_sum(t, tg_mul(t, w, w)); /* d/dw sum(w^2) = 2w */
        tg_status st = tg_backward(t, l);
        loss = tg_tensor_item(l);
        ok = tg_mpi_dp_wait(dp, st, tg_tape_errmsg(t), &loss) == TG_OK;
    }
    ok = ok && tg_tensor_get(tg_tensor_grad(w), 0) == 2 &&
         tg_tensor_get(tg_tensor_grad(w), 1) == 4 && loss == 5;
    printf("consumer_mpi: %s (%d rank, gradient %g %g, loss %g)%s%s\n", ok ? "ok" : "FAILED",
           tg_mpi_world_size(), tg_tensor_get(tg_tensor_grad(w), 0),
           tg_tensor_get(tg_tensor_grad(w), 1), loss, ok ? "" : ": ", ok ? "" : tg_mpi_errmsg());
    tg_mpi_dp_free(dp);
    tg_tape_free(t);
    tg_tensor_free(w);
    tg_mpi_finalize();
    return ok ? 0 : 1;
}
