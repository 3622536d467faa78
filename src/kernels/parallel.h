/* parallel.h -- private: the kernels layer. The thread pool (threads.c), the matrix multiply and
 * its micro-kernels (gemm*.c) and vector math (vmath.c). Not installed. */
#ifndef TG_PARALLEL_H
#define TG_PARALLEL_H

#include "core/engine.h"

/* ---- Thread pool (threads.c) ----
 * A fixed set of tg_get_num_threads() - 1 workers plus the calling thread. Between jobs a worker
 * polls for a while (yielding its CPU), then sleeps on a condition variable, so a job costs a
 * hand-off well under a microsecond in a training loop; callers only go parallel above a size
 * threshold. */

/* A job: run by `nth` threads, thread `tid` in 0..nth-1 (the caller is 0). */
typedef void (*tg__job_fn)(void *ctx, int tid, int nth);

/* Runs fn on min(nth, tg_get_num_threads()) threads and returns when all are done. Runs it on the
 * caller alone (tid 0, nth 1) when nth <= 1, when called from inside a job, or when another
 * thread is using the pool: jobs must therefore give the same result for any nth. */
void tg__parallel_run(int nth, tg__job_fn fn, void *ctx);
/* Whether this thread is running a part of a job (a tg__parallel_run inside runs on it alone). */
bool tg__parallel_in_job(void);

/* This thread's 64-byte aligned scratch of at least `bytes` (the matmul's pack buffers), kept
 * until the thread or the pool ends; NULL if out of memory. Parts of a job are claimed, not
 * assigned, so which thread meets which size changes from step to step: each scratch therefore
 * grows to the largest size any thread has asked for, and tg__parallel_run brings every
 * worker's (and the caller's) up to that mark before it posts a job. After one step has asked
 * for every size, no thread allocates, whatever parts it claims and however late it wakes. The
 * contents do not outlive the call that asked for them: callers pack, use and forget. */
void *tg__thread_scratch(size_t bytes);

/* The part [begin, end) of n items, in units of `align` items, that thread tid of nth gets.
 * Contiguous and in order, so the split is the same for a given nth. */
void tg__split(int64_t n, int64_t align, int tid, int nth, int64_t *begin, int64_t *end);

/* Elementwise helper: runs body(ctx, i0, i1) over [0, n) in chunks, in parallel when n is at
 * least `min_parallel` and threads are available. Only for loops whose elements are
 * independent (the result cannot depend on the split). */
typedef void (*tg__range_fn)(void *ctx, int64_t i0, int64_t i1);
void tg__parallel_range(int64_t n, int64_t min_parallel, tg__range_fn body, void *ctx);

/* Below this many elements an elementwise loop is not worth handing to the workers. With the
 * workers polling between jobs a hand-off costs about a microsecond, the time of some 10^4
 * float adds; the MLP's [128,256] activations (32768 elements) are split. */
#define TG_PAR_MIN_ELEMS ((int64_t)1 << 14)

/* Threads for a job over `rows` independent rows holding `elems` elements in all: 1 below
 * TG_PAR_MIN_ELEMS elements or 2 rows, else one per TG_PAR_MIN_ELEMS / 2 elements, at most one
 * per row (tg__parallel_run caps it at the pool's size). For the ops that split rows themselves
 * (layer norm, permute, slice), so they take the same halves as tg__parallel_range's ops. */
int tg__threads_for_rows(int64_t elems, int64_t rows);

/* ---- Matrix multiply (gemm.c) ----
 * C[M,N] = beta * C + op(A) op(B), op(X) = X or X^T, row-major with leading dimensions.
 * beta is 0 (overwrite) or 1 (accumulate: backward's +=). */
void tg__gemm(tg_dtype dtype, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K,
              const void *A, int64_t lda, const void *B, int64_t ldb, int beta, void *C,
              int64_t ldc);

/* For tests: with `on`, every product takes the blocked, packed path (split over threads above
 * its threshold), so that its bits can be compared with the direct kernel's. Returns the
 * previous setting. */
bool tg__gemm_force_blocked(bool on);

/* ---- Matrix-multiply micro-kernels (gemm.c, gemm_avx2.c, gemm_avx512.c) ---- */

/* A micro-kernel computes one MR x NR tile of C from packed panels:
 *   C[r*ldc + c] = (accumulate ? C[r*ldc + c] : 0) + sum_k a[k*MR + r] * b[k*NR + c]
 * the sum taken in increasing k, one (fused, for the SIMD kernels) multiply-add at a time. */
typedef void (*tg__ukernel_fn)(int64_t kc, const void *a, const void *b, void *c, int64_t ldc,
                               int accumulate);

/* The micro-kernel on an edge tile: the same arithmetic, C's first `rows` rows and `cols`
 * columns loaded (when accumulating) and stored, the rest of the (zero-padded) tile dropped. */
typedef void (*tg__edge_fn)(int64_t kc, const void *a, const void *b, void *c, int64_t ldc,
                            int accumulate, int rows, int cols);

/* A direct kernel computes a whole small product without packing or cache blocks:
 *   C[i*ldc + j] = (beta ? C[i*ldc + j] : 0) + sum_k op(A)[i][k] * B[k*ldb + j]
 * with op(A)[i][k] = ta ? A[k*lda + i] : A[i*lda + k] and B already in the not-transposed form
 * [K, N] (tg__gemm packs a transposed B first). Each element is summed in increasing k, one
 * multiply-add at a time, with the arithmetic of the micro-kernel of the same kernel (fused for
 * the SIMD ones) and from the same start (C, or +0): storing C between k blocks is exact, so its
 * result is the blocked path's, bit for bit, and tg__gemm may take either path by size. */
typedef void (*tg__direct_fn)(bool ta, int64_t M, int64_t N, int64_t K, const void *A, int64_t lda,
                              const void *B, int64_t ldb, int beta, void *C, int64_t ldc);

/* dst[k*N + j] = B[j*ldb + k] for k < K, j < N: a transposed B in the form a direct kernel
 * reads (copies only: the result does not depend on how). */
typedef void (*tg__transpose_fn)(const void *B, int64_t ldb, int64_t K, int64_t N, void *dst);

/* Packing a block whose rows are the panel's rows (op(A) = A) or columns (op(B) = B^T), k
 * contiguous in each: panels of w rows of src, panel p holding
 *   dst[p*w*kb + k*w + r] = src[(p*w + r)*ld + k]  for r < rows - p*w, else 0,
 * for k < kb and p*w < rows (copies only: the result does not depend on how). */
typedef void (*tg__pack_t_fn)(const void *src, int64_t ld, int64_t rows, int64_t kb, int w,
                              void *dst);

typedef struct tg__ukernel {
    int mr, nr; /* tile */
    int64_t mc, kc,
        nc; /* default cache blocks (mc multiple of mr, nc of nr), see tg__gemm_blocks */
    tg__ukernel_fn fn;
    tg__direct_fn direct;       /* the same arithmetic for small products */
    tg__transpose_fn transpose; /* for the direct kernel's B (NULL: a plain loop) */
    tg__edge_fn edge;           /* NULL: edge tiles through a scratch tile */
    tg__pack_t_fn pack_t;       /* NULL: the portable packing loops */
} tg__ukernel;

/* The kernels available in this build, portable first. TG_KERNEL=<name> picks one at startup. */
typedef enum tg__kernel_id {
    TG_KERNEL_PORTABLE = 0,
    TG_KERNEL_AVX2 = 1,
    TG_KERNEL_AVX512 = 2,
    TG_KERNEL_OPENBLAS = 3,
    TG_KERNEL_COUNT
} tg__kernel_id;

/* 1 if kernel `id` is compiled in and the CPU can run it. */
int tg__kernel_available(tg__kernel_id id);
/* tg__kernel_available(TG_KERNEL_AVX512), asked of the CPU once: for the ops whose loops have an
 * AVX-512 clone and ask on every call. */
bool tg__have_avx512(void);
/* Selects the kernel used by tg_gemm from now on (tests). TG_ERR_VALUE if not available. Not
 * safe while another thread is inside tg_gemm. */
tg_status tg__kernel_set(tg__kernel_id id);
tg__kernel_id tg__kernel_get(void);
const char *tg__kernel_id_name(tg__kernel_id id);

/* The cache sizes the CPU reports (L1 data, L2, L3, bytes; 0 where unknown), read once. */
void tg__gemm_cache_sizes(int64_t sizes[3]);
/* The cache blocks tg_gemm uses with micro-kernel uk for elements of esz bytes: chosen from the
 * cache sizes, or uk's own mc, kc, nc when those are unknown. */
void tg__gemm_blocks(const tg__ukernel *uk, size_t esz, int64_t *mc, int64_t *kc, int64_t *nc);

/* The SIMD micro-kernels, each in its own file compiled with target attributes. */
extern const tg__ukernel tg__uk_avx2_f32, tg__uk_avx2_f64;
extern const tg__ukernel tg__uk_avx512_f32, tg__uk_avx512_f64;

/* A narrow float32 product for AVX-512 (the 2-4-2 network's [200,2] x [2,4] and [200,4] x [4,2]):
 * C = beta C + A B with A [M,K] and C [M,N] contiguous (lda = K, ldc = N), N in {1, 2, 4, 8}
 * and 16/N rows of A in two vectors (K <= 2N). C is computed as one flat array, 16 elements at a
 * time (16/N rows), each element summed in increasing k by fused multiply-adds from C or +0:
 * the bits of the direct and blocked paths. Returns false (nothing done) for another shape. */
bool tg__gemm_narrow_avx512_f32(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda,
                                const float *B, int64_t ldb, int beta, float *C, int64_t ldc);

/* ---- Vector math (vmath.c) ----
 * y[i] = f(x[i]) for i in [0, n), float32, y may be x. Within a few ulp of the exact values
 * (tests/test_vmath.c): exp and log <= 1 ulp, erf <= 2, tanh <= 2 (libm's on the portable
 * path). An element's result depends on nothing but its value and the path (tg__vmath_isa),
 * which is chosen once for the process: not on its position, n, or the thread. The AVX2 and
 * AVX-512 paths give the same bits. */
void tg__exp_f32(const float *x, float *y, int64_t n);
void tg__log_f32(const float *x, float *y, int64_t n);
void tg__erf_f32(const float *x, float *y, int64_t n);
void tg__tanh_f32(const float *x, float *y, int64_t n);

/* The paths: libm, AVX2+FMA (8 lanes), AVX-512F (16 lanes). */
enum { TG_VMATH_PORTABLE = 0, TG_VMATH_AVX2 = 1, TG_VMATH_AVX512 = 2 };
/* The path in use: the best the CPU runs, unless a test chose another. */
int tg__vmath_isa(void);
/* Chooses the path (tests): 0, or -1 if the CPU cannot run it. Not while another thread is in
 * one of the functions above. */
int tg__vmath_set_isa(int isa);

#endif /* TG_PARALLEL_H */
