// consumer.cpp -- proves <tapegrad.h> compiles as C++ (its extern "C" guards give the functions
// C linkage, so they link against the C library) and works from a C++ program.
// TG_SHAPE is not used: it builds a compound literal, which ISO C++ lacks.
#include <tapegrad.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <memory>

namespace {
struct TapeDeleter {
    void operator()(tg_tape *t) const { tg_tape_free(t); }
};
struct TensorDeleter {
    void operator()(tg_tensor *x) const { tg_tensor_free(x); }
};
} // namespace

int main() {
    const std::int64_t shape[2] = {2, 2};
    const double av[4] = {1.0, 2.0, 3.0, 4.0};
    std::unique_ptr<tg_tensor, TensorDeleter> a(tg_tensor_from(TG_F64, 2, shape, av));
    if (!a) {
        std::fprintf(stderr, "consumer.cpp: %s\n", tg_last_errmsg());
        return 1;
    }
    tg_tensor_set_requires_grad(a.get(), 1);

    // loss = mean(a a) = 1/4 sum_ij sum_k a_ik a_kj, so d loss / d a_pq = (r_q + c_p) / 4 with
    // r_q the sum of row q and c_p the sum of column p: r = {3, 7}, c = {4, 6}.
    std::unique_ptr<tg_tape, TapeDeleter> t(tg_tape_new());
    tg_tensor *loss = tg_mean(t.get(), tg_matmul(t.get(), a.get(), a.get()));
    if (tg_backward(t.get(), loss) != TG_OK) {
        std::fprintf(stderr, "consumer.cpp: %s\n", tg_tape_errmsg(t.get()));
        return 1;
    }
    const double expect[4] = {(3.0 + 4.0) / 4, (7.0 + 4.0) / 4, (3.0 + 6.0) / 4, (7.0 + 6.0) / 4};
    int failures = 0;
    for (int i = 0; i < 4; i++) {
        double got = tg_tensor_get(tg_tensor_grad(a.get()), i);
        if (std::fabs(got - expect[i]) > 1e-12) {
            std::fprintf(stderr, "consumer.cpp: da[%d] = %.17g, expected %.17g\n", i, got,
                         expect[i]);
            failures++;
        }
    }
    std::printf("consumer (C++, tapegrad %s): loss = %.6f, %s\n", tg_version(),
                tg_tensor_item(loss), failures ? "FAIL" : "ok");
    return failures ? 1 : 0;
}
