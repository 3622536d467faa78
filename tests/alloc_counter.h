/* alloc_counter.h -- count heap allocations, for the zero-allocation checks of tests/test_alloc.c,
 * tests/test_mnist.c and examples/mnist_mlp.c (--bench).
 *
 * Include this header from exactly ONE translation unit of a program: it defines (not declares)
 * malloc, calloc, realloc, aligned_alloc, memalign, posix_memalign and free. By ELF symbol
 * interposition every caller in the process then uses them, libtapegrad and libc included; they
 * count while the counter is started and forward to glibc's __libc_* entry points.
 *
 * Sanitizer builds replace malloc themselves, so there the overrides are compiled out; valgrind
 * replaces the program's malloc too, so under it the counter sees nothing. Before trusting a zero,
 * ask alloc_counter_unavailable(): it names these cases, and a probe checks that the counter does
 * count, so a zero cannot pass by accident.
 *
 *     const char *why = alloc_counter_unavailable();   // NULL: counting works
 *     alloc_counter_start();
 *     ... code that must not allocate ...
 *     long n = alloc_counter_stop();                    // allocations since the start
 */
#ifndef TG_ALLOC_COUNTER_H
#define TG_ALLOC_COUNTER_H

#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdlib.h>

#if defined(__SANITIZE_ADDRESS__)
#define TG_COUNT_ALLOCS 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(memory_sanitizer)
#define TG_COUNT_ALLOCS 0
#endif
#endif
#if !defined(TG_COUNT_ALLOCS) && defined(__GLIBC__) /* the __libc_* entry points are glibc's */
#define TG_COUNT_ALLOCS 1
#endif
#ifndef TG_COUNT_ALLOCS
#define TG_COUNT_ALLOCS 0
#endif
#if defined(__has_include)
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#define TG_ON_VALGRIND() RUNNING_ON_VALGRIND
#endif
#endif
#ifndef TG_ON_VALGRIND
#define TG_ON_VALGRIND() 0
#endif

static atomic_bool alloc_counter_on;
static atomic_long alloc_counter_n;

#if TG_COUNT_ALLOCS
extern void *__libc_malloc(size_t size);
extern void *__libc_calloc(size_t n, size_t size);
extern void *__libc_realloc(void *p, size_t size);
extern void *__libc_memalign(size_t align, size_t size);
extern void __libc_free(void *p);

static inline void alloc_counter_count(void) {
    if (atomic_load_explicit(&alloc_counter_on, memory_order_relaxed))
        atomic_fetch_add_explicit(&alloc_counter_n, 1, memory_order_relaxed);
}
void *malloc(size_t size) {
    alloc_counter_count();
    return __libc_malloc(size);
}
void *calloc(size_t n, size_t size) {
    alloc_counter_count();
    return __libc_calloc(n, size);
}
void *realloc(void *p, size_t size) {
    alloc_counter_count();
    return __libc_realloc(p, size);
}
void *aligned_alloc(size_t align, size_t size) {
    alloc_counter_count();
    return __libc_memalign(align, size);
}
void *memalign(size_t align, size_t size) {
    alloc_counter_count();
    return __libc_memalign(align, size);
}
int posix_memalign(void **out, size_t align, size_t size) {
    alloc_counter_count();
    void *p = __libc_memalign(align, size);
    if (!p)
        return ENOMEM;
    *out = p;
    return 0;
}
void free(void *p) { __libc_free(p); }
#endif

/* Resets the count to 0 and counts every allocation from now on, in every thread. */
static inline void alloc_counter_start(void) {
    atomic_store(&alloc_counter_n, 0);
    atomic_store(&alloc_counter_on, true);
}

/* Stops counting; returns the allocations seen since alloc_counter_start(). */
static inline long alloc_counter_stop(void) {
    atomic_store(&alloc_counter_on, false);
    return atomic_load(&alloc_counter_n);
}

/* Why allocations cannot be counted in this run (a static string), or NULL when they can. */
static inline const char *alloc_counter_unavailable(void) {
    if (!TG_COUNT_ALLOCS)
        return "this build replaces malloc (sanitizer or non-glibc), so the counter cannot "
               "interpose it";
    if (TG_ON_VALGRIND())
        return "valgrind replaces the program's malloc, so its counter sees nothing";
    /* The probe goes through a volatile pointer, which the compiler cannot optimize away. */
    void *(*volatile alloc)(size_t) = malloc;
    alloc_counter_start();
    void *p = alloc(16);
    const long n = alloc_counter_stop();
    free(p);
    if (n == 0)
        return "malloc is replaced by a tool, so allocations cannot be counted";
    return NULL;
}

#endif
