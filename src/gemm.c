/* gemm.c -- C = beta C + op(A) op(B), row-major. The portable reference kernel. */
#include "internal.h"

/* Loop order i-k-j keeps the innermost loop contiguous in B and C (vectorizable) for the plain
 * case; the transposed forms go through element access with strides. */
#define GEMM_BODY(T)                                                                               \
    do {                                                                                           \
        const T *a = A, *b = B;                                                                    \
        T *c = C;                                                                                  \
        for (int64_t i = 0; i < M; i++) {                                                          \
            T *crow = c + i * ldc;                                                                 \
            if (!beta)                                                                             \
                for (int64_t j = 0; j < N; j++)                                                    \
                    crow[j] = 0;                                                                   \
            for (int64_t k = 0; k < K; k++) {                                                      \
                const T aik = trans_a ? a[k * lda + i] : a[i * lda + k];                           \
                if (!trans_b) {                                                                    \
                    const T *brow = b + k * ldb;                                                   \
                    for (int64_t j = 0; j < N; j++)                                                \
                        crow[j] += aik * brow[j];                                                  \
                } else {                                                                           \
                    for (int64_t j = 0; j < N; j++)                                                \
                        crow[j] += aik * b[j * ldb + k];                                           \
                }                                                                                  \
            }                                                                                      \
        }                                                                                          \
    } while (0)

void tg_gemm(tg_dtype dtype, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K,
             const void *A, int64_t lda, const void *B, int64_t ldb, int beta, void *C,
             int64_t ldc) {
    if (dtype == TG_F32)
        GEMM_BODY(float);
    else
        GEMM_BODY(double);
}
