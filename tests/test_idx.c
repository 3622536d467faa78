/* IDX loader tests: small files written by the test itself (plain and gzip'ed), one test per
 * malformed case with its exact message, batches, paths, and the real Fashion-MNIST when present. */
#define _POSIX_C_SOURCE 200809L
#include "tapegrad.h"

#include <criterion/criterion.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

static char dir[64];

static void make_dir(void) {
    strcpy(dir, "/tmp/tg_idx_XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
}
static void remove_dir(void) {
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    cr_expect_eq(system(cmd), 0);
}
TestSuite(idx, .init = make_dir, .fini = remove_dir);

/* An IDX file of bytes: type 0x08, `rank` sizes, then the data (or as much as is given). */
static size_t make_idx(uint8_t *buf, int rank, const uint32_t *dims, const uint8_t *data,
                       size_t n) {
    size_t k = 0;
    buf[k++] = 0;
    buf[k++] = 0;
    buf[k++] = 0x08;
    buf[k++] = (uint8_t)rank;
    for (int i = 0; i < rank; i++) {
        buf[k++] = (uint8_t)(dims[i] >> 24);
        buf[k++] = (uint8_t)(dims[i] >> 16);
        buf[k++] = (uint8_t)(dims[i] >> 8);
        buf[k++] = (uint8_t)dims[i];
    }
    if (n)
        memcpy(buf + k, data, n);
    return k + n;
}

static const char *path_of(const char *name) {
    static char p[4][128];
    static int i;
    i = (i + 1) % 4;
    snprintf(p[i], sizeof p[i], "%s/%s", dir, name);
    return p[i];
}

static const char *write_plain(const char *name, const void *bytes, size_t n) {
    const char *p = path_of(name);
    FILE *f = fopen(p, "wb");
    cr_assert_not_null(f);
    cr_assert_eq(fwrite(bytes, 1, n, f), n);
    cr_assert_eq(fclose(f), 0);
    return p;
}

static const char *write_gz(const char *name, const void *bytes, size_t n) {
    const char *p = path_of(name);
    gzFile g = gzopen(p, "wb");
    cr_assert_not_null(g);
    cr_assert_eq(gzwrite(g, bytes, (unsigned)n), (int)n);
    cr_assert_eq(gzclose(g), Z_OK);
    return p;
}

/* Three 2x2 "images" with pixel values 0..11 and labels 2, 0, 1. */
static const uint8_t pixels[12] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 255};
static const uint8_t labels[3] = {2, 0, 1};
static const uint32_t img_dims[3] = {3, 2, 2};
static const uint32_t lab_dims[1] = {3};

static void check_images(const tg_idx *idx) {
    cr_assert_not_null(idx, "%s", tg_last_errmsg());
    cr_assert_eq(tg_idx_rank(idx), 3);
    cr_assert_eq(tg_idx_dim(idx, 0), 3);
    cr_assert_eq(tg_idx_dim(idx, 1), 2);
    cr_assert_eq(tg_idx_dim(idx, -1), 2);
    cr_assert_eq(tg_idx_dim(idx, 3), 0);
    cr_assert_eq(tg_idx_numel(idx), 12);
    cr_assert_arr_eq(tg_idx_data(idx), pixels, 12);
}

Test(idx, loads_plain_file) {
    uint8_t buf[64];
    size_t n = make_idx(buf, 3, img_dims, pixels, 12);
    tg_idx *idx = tg_idx_load(write_plain("a", buf, n));
    check_images(idx);
    tg_idx_free(idx);
}

Test(idx, loads_gzip_file) {
    uint8_t buf[64];
    size_t n = make_idx(buf, 3, img_dims, pixels, 12);
    tg_idx *idx = tg_idx_load(write_gz("a.gz", buf, n));
    check_images(idx);
    tg_idx_free(idx);
}

Test(idx, loads_from_memory) {
    uint8_t buf[64];
    size_t n = make_idx(buf, 3, img_dims, pixels, 12);
    tg_idx *idx = tg_idx_load_mem(buf, n, "mem");
    check_images(idx);
    tg_idx_free(idx);
}

Test(idx, loads_empty_array) {
    uint8_t buf[64];
    const uint32_t dims[2] = {0, 28};
    size_t n = make_idx(buf, 2, dims, NULL, 0);
    tg_idx *idx = tg_idx_load_mem(buf, n, "empty");
    cr_assert_not_null(idx, "%s", tg_last_errmsg());
    cr_assert_eq(tg_idx_numel(idx), 0);
    tg_idx_free(idx);
}

Test(idx, loads_a_gzip_file_larger_than_the_first_buffer) {
    /* 3 MB of data: the file loader grows its buffer from 1 MiB as the data arrives. */
    const uint32_t dims[3] = {3000, 32, 32};
    size_t n_data = 3000u * 32 * 32;
    uint8_t *buf = malloc(16 + n_data);
    uint8_t *data = malloc(n_data);
    cr_assert(buf && data);
    for (size_t i = 0; i < n_data; i++)
        data[i] = (uint8_t)(i * 7 + i / 251);
    size_t n = make_idx(buf, 3, dims, data, n_data);
    tg_idx *idx = tg_idx_load(write_gz("big.gz", buf, n));
    cr_assert_not_null(idx, "%s", tg_last_errmsg());
    cr_assert_eq(tg_idx_numel(idx), (int64_t)n_data);
    cr_assert(memcmp(tg_idx_data(idx), data, n_data) == 0);
    tg_idx_free(idx);
    free(buf);
    free(data);
}

/* ---- Malformed files: each rejected with its exact message ---- */

static void expect_mem_error(const uint8_t *buf, size_t n, const char *msg) {
    tg_idx *idx = tg_idx_load_mem(buf, n, "t.idx");
    cr_expect_null(idx);
    cr_expect_str_eq(tg_last_errmsg(), msg);
    tg_idx_free(idx);
}

Test(idx, rejects_empty_file) {
    expect_mem_error((const uint8_t *)"", 0,
                     "tg_idx_load_mem: t.idx: truncated: the 4-byte magic number needs 4 bytes, "
                     "found 0");
}

Test(idx, rejects_bad_magic) {
    const uint8_t buf[] = {0x1f, 0x8b, 0x08, 0x00, 1, 2, 3, 4};
    expect_mem_error(buf, sizeof buf,
                     "tg_idx_load_mem: t.idx: not an IDX file: magic number 0x1f8b0800 at offset "
                     "0 should start with two zero bytes (e.g. 0x00000803)");
}

Test(idx, rejects_other_element_types) {
    uint8_t buf[64];
    size_t n = make_idx(buf, 1, lab_dims, labels, 3);
    buf[2] = 0x0D;
    expect_mem_error(buf, n,
                     "tg_idx_load_mem: t.idx: element type 0x0d (float32) at offset 2 is not "
                     "supported; expected 0x08 (unsigned byte)");
    buf[2] = 0x42;
    expect_mem_error(buf, n,
                     "tg_idx_load_mem: t.idx: element type 0x42 (not an IDX type) at offset 2 is "
                     "not supported; expected 0x08 (unsigned byte)");
}

Test(idx, rejects_zero_dimensions) {
    const uint8_t buf[] = {0, 0, 8, 0, 7};
    expect_mem_error(buf, sizeof buf,
                     "tg_idx_load_mem: t.idx: number of dimensions 0 at offset 3 is outside 1..8");
}

Test(idx, rejects_too_many_dimensions) {
    uint8_t buf[64] = {0, 0, 8, 9};
    for (int i = 4; i < 40; i += 4)
        buf[i + 3] = 1;
    buf[40] = 9;
    expect_mem_error(buf, 41,
                     "tg_idx_load_mem: t.idx: number of dimensions 9 at offset 3 is outside 1..8");
}

Test(idx, rejects_truncated_header) {
    uint8_t buf[64];
    make_idx(buf, 3, img_dims, pixels, 12);
    expect_mem_error(buf, 10,
                     "tg_idx_load_mem: t.idx: truncated header: 3 dimensions need 16 header "
                     "bytes, the file has 10");
}

Test(idx, rejects_truncated_data) {
    uint8_t buf[64];
    size_t n = make_idx(buf, 3, img_dims, pixels, 12);
    expect_mem_error(buf, n - 1,
                     "tg_idx_load_mem: t.idx: truncated: expected 12 bytes of data after the "
                     "16-byte header (file length 28), found 11");
}

Test(idx, rejects_trailing_data) {
    uint8_t buf[64];
    size_t n = make_idx(buf, 3, img_dims, pixels, 12);
    buf[n] = 0;
    expect_mem_error(buf, n + 1,
                     "tg_idx_load_mem: t.idx: trailing data: the header declares 28 bytes in all, "
                     "the file has 29 (extra bytes from offset 28)");
}

Test(idx, rejects_sizes_that_overflow) {
    const uint32_t dims[4] = {0xFFFFFFFFu, 0xFFFFFFFFu, 0xFFFFFFFFu, 2};
    uint8_t buf[64];
    size_t n = make_idx(buf, 4, dims, NULL, 0);
    expect_mem_error(buf, n,
                     "tg_idx_load_mem: t.idx: sizes overflow: the product of the dimensions up to "
                     "dimension 1 (size 4294967295 at offset 8) exceeds 2^61 bytes");
}

Test(idx, rejects_a_huge_declared_size_in_a_short_file_without_allocating_it) {
    /* 32 GiB declared, 3 bytes present: must fail as truncated, not run out of memory, from a
     * gzip file (whose length is not known in advance) as from memory. */
    const uint32_t dims[3] = {2, 0x80000000u, 8};
    uint8_t buf[64];
    size_t n = make_idx(buf, 3, dims, pixels, 3);
    const char *p = write_gz("huge.gz", buf, n);
    cr_expect_null(tg_idx_load(p));
    char msg[512];
    snprintf(msg, sizeof msg,
             "tg_idx_load: %s: truncated: expected 34359738368 bytes of data after the 16-byte "
             "header (file length 34359738384), found 3",
             p);
    cr_expect_str_eq(tg_last_errmsg(), msg);
    expect_mem_error(buf, n,
                     "tg_idx_load_mem: t.idx: truncated: expected 34359738368 bytes of data after "
                     "the 16-byte header (file length 34359738384), found 3");
}

Test(idx, rejects_truncated_file_with_its_path) {
    uint8_t buf[64];
    size_t n = make_idx(buf, 3, img_dims, pixels, 12);
    const char *p = write_plain("cut", buf, n - 5);
    cr_expect_null(tg_idx_load(p));
    char msg[512];
    snprintf(msg, sizeof msg,
             "tg_idx_load: %s: truncated: expected 12 bytes of data after the 16-byte header "
             "(file length 28), found 7",
             p);
    cr_expect_str_eq(tg_last_errmsg(), msg);
}

Test(idx, rejects_trailing_data_in_gzip_file) {
    uint8_t buf[64];
    size_t n = make_idx(buf, 3, img_dims, pixels, 12);
    buf[n] = 1;
    const char *p = write_gz("long.gz", buf, n + 1);
    cr_expect_null(tg_idx_load(p));
    char msg[512];
    snprintf(msg, sizeof msg,
             "tg_idx_load: %s: trailing data: the header declares 28 bytes in all, the file has "
             "more (extra bytes from offset 28)",
             p);
    cr_expect_str_eq(tg_last_errmsg(), msg);
}

Test(idx, rejects_truncated_gzip_stream) {
    /* Incompressible data, so that cutting the .gz file cuts the stream in the data. */
    const uint32_t dims[1] = {4000};
    uint8_t buf[4100], data[4000];
    tg_rng rng;
    tg_rng_seed(&rng, 7);
    for (int i = 0; i < 4000; i++)
        data[i] = (uint8_t)tg_rng_next(&rng);
    size_t n = make_idx(buf, 1, dims, data, 4000);
    const char *p = write_gz("cut.gz", buf, n);
    struct stat st;
    cr_assert_eq(stat(p, &st), 0);
    cr_assert_eq(truncate(p, st.st_size / 2), 0);
    cr_expect_null(tg_idx_load(p));
    char start[256];
    snprintf(start, sizeof start, "tg_idx_load: %s: gzip stream is truncated at offset ", p);
    cr_expect(strncmp(tg_last_errmsg(), start, strlen(start)) == 0, "%s", tg_last_errmsg());
}

/* Issue 12, break 5: zlib's gzread stops at the end of a gzip member and ignores what follows. */
Test(idx, rejects_bytes_after_the_gzip_stream) {
    uint8_t buf[64];
    size_t n = make_idx(buf, 3, img_dims, pixels, 12);
    const char *p = write_gz("tail.gz", buf, n);
    struct stat st;
    cr_assert_eq(stat(p, &st), 0);
    FILE *f = fopen(p, "ab");
    cr_assert_not_null(f);
    cr_assert_eq(fwrite("junk", 1, 4, f), 4);
    cr_assert_eq(fclose(f), 0);
    cr_expect_null(tg_idx_load(p));
    char msg[512];
    snprintf(msg, sizeof msg,
             "tg_idx_load: %s: trailing data: bytes that are not gzip after the end of the gzip "
             "stream at offset %lld of the file",
             p, (long long)st.st_size);
    cr_expect_str_eq(tg_last_errmsg(), msg);
    /* One stray byte too (e.g. a zero from a careless copy). */
    cr_assert_eq(truncate(p, st.st_size + 1), 0);
    cr_expect_null(tg_idx_load(p));
    cr_expect(strstr(tg_last_errmsg(), "a byte that is not gzip") != NULL, "%s", tg_last_errmsg());
}

Test(idx, loads_concatenated_gzip_members) {
    /* `cat a.gz b.gz` is one valid gzip file (gzip -d accepts it): the data continues. */
    uint8_t buf[64];
    size_t n = make_idx(buf, 3, img_dims, pixels, 12);
    const char *p = path_of("two.gz");
    for (int part = 0; part < 2; part++) {
        gzFile g = gzopen(p, part ? "ab" : "wb");
        cr_assert_not_null(g);
        size_t from = part ? 10 : 0, len = part ? n - 10 : 10;
        cr_assert_eq(gzwrite(g, buf + from, (unsigned)len), (int)len);
        cr_assert_eq(gzclose(g), Z_OK);
    }
    tg_idx *idx = tg_idx_load(p);
    check_images(idx);
    tg_idx_free(idx);
}

/* Issue 12, break 8: opening a FIFO used to block forever (until a writer came). */
Test(idx, refuses_a_fifo_without_blocking, .timeout = 20) {
    const char *p = path_of("fifo");
    cr_assert_eq(mkfifo(p, 0600), 0);
    cr_expect_null(tg_idx_load(p));
    char msg[512];
    snprintf(msg, sizeof msg, "tg_idx_load: %s: not a regular file (a FIFO, device or directory?)",
             p);
    cr_expect_str_eq(tg_last_errmsg(), msg);
    cr_expect_null(tg_idx_load(dir));
    cr_expect_null(tg_idx_dataset_load(p, p));
}

Test(idx, rejects_missing_file) {
    const char *p = path_of("nope.gz");
    cr_expect_null(tg_idx_load(p));
    char msg[512];
    snprintf(msg, sizeof msg, "tg_idx_load: %s: cannot open: No such file or directory", p);
    cr_expect_str_eq(tg_last_errmsg(), msg);
    cr_expect_null(tg_idx_load(NULL));
    cr_expect_str_eq(tg_last_errmsg(), "tg_idx_load: path is NULL");
}

/* ---- Data sets and batches ---- */

static tg_idx_dataset *small_dataset(int gz) {
    uint8_t a[64], b[64];
    size_t na = make_idx(a, 3, img_dims, pixels, 12), nb = make_idx(b, 1, lab_dims, labels, 3);
    const char *pi = gz ? write_gz("i.gz", a, na) : write_plain("i", a, na);
    const char *pl = gz ? write_gz("l.gz", b, nb) : write_plain("l", b, nb);
    tg_idx_dataset *ds = tg_idx_dataset_load(pi, pl);
    cr_assert_not_null(ds, "%s", tg_last_errmsg());
    return ds;
}

Test(idx, dataset_batch_f32_shuffled) {
    tg_idx_dataset *ds = small_dataset(1);
    cr_assert_eq(tg_idx_dataset_size(ds), 3);
    cr_assert_eq(tg_idx_dataset_features(ds), 4);
    cr_assert_eq(tg_idx_dataset_classes(ds), 3);
    cr_assert_eq(tg_idx_dim(tg_idx_dataset_images(ds), 1), 2);
    cr_assert_eq(tg_idx_dim(tg_idx_dataset_labels(ds), 0), 3);
    tg_tensor *x = tg_tensor_new(TG_F32, TG_SHAPE(4, 4));
    tg_tensor *y = tg_tensor_new(TG_I32, TG_SHAPE(4));
    const int64_t idx[4] = {2, 0, 2, 1};
    cr_assert_eq(tg_idx_dataset_batch(ds, idx, 4, x, y), TG_OK, "%s", tg_last_errmsg());
    const float *px = tg_tensor_cdata(x);
    const int32_t *py = tg_tensor_cdata(y);
    for (int i = 0; i < 4; i++) {
        cr_expect_eq(py[i], labels[idx[i]]);
        for (int j = 0; j < 4; j++)
            cr_expect_eq(px[i * 4 + j], (float)pixels[idx[i] * 4 + j] / 255.0f);
    }
    cr_expect_eq(px[3 * 4 + 3], 7.0f / 255.0f); /* sample 1, last pixel */
    cr_expect_eq(px[0 * 4 + 3], 1.0f);          /* 255 -> exactly 1 */
    tg_tensor_free(x);
    tg_tensor_free(y);
    tg_idx_dataset_free(ds);
}

/* A batch big enough to be split over the threads (tg__parallel_range over rows) is the same
 * at 1 and 2 threads, and each value is exactly pixel / 255. 300 rows of 100 bytes, visited
 * backwards with repeats. */
Test(idx, dataset_batch_split_over_threads_is_exact) {
    enum { N = 300, F = 100, B = 256 };
    static uint8_t img[16 + N * F], lab[8 + N], px[N * F], lb[N];
    for (int i = 0; i < N * F; i++)
        px[i] = (uint8_t)(i * 7 + i / F);
    for (int i = 0; i < N; i++)
        lb[i] = (uint8_t)(i % 10);
    const uint32_t dims[2] = {N, F}, ldims[1] = {N};
    size_t ni = make_idx(img, 2, dims, px, sizeof px), nl = make_idx(lab, 1, ldims, lb, N);
    tg_idx_dataset *ds =
        tg_idx_dataset_load(write_plain("big", img, ni), write_plain("bigl", lab, nl));
    cr_assert_not_null(ds, "%s", tg_last_errmsg());
    int64_t idx[B];
    for (int i = 0; i < B; i++)
        idx[i] = (N - 1 - 3 * i % N + N) % N;
    tg_tensor *x[2], *y[2];
    for (int th = 1; th <= 2; th++) {
        cr_assert_eq(tg_set_num_threads(th), TG_OK);
        x[th - 1] = tg_tensor_new(TG_F32, TG_SHAPE(B, F));
        y[th - 1] = tg_tensor_new(TG_I32, TG_SHAPE(B));
        cr_assert_eq(tg_idx_dataset_batch(ds, idx, B, x[th - 1], y[th - 1]), TG_OK, "%s",
                     tg_last_errmsg());
    }
    tg_set_num_threads(1);
    const float *a = tg_tensor_cdata(x[0]), *b = tg_tensor_cdata(x[1]);
    for (int i = 0; i < B; i++) {
        cr_expect_eq(((const int32_t *)tg_tensor_cdata(y[1]))[i], lb[idx[i]]);
        for (int j = 0; j < F; j++)
            cr_assert_eq(b[i * F + j], (float)px[idx[i] * F + j] / 255.0f, "row %d col %d", i, j);
    }
    cr_expect_eq(memcmp(a, b, sizeof(float) * B * F), 0);
    for (int k = 0; k < 2; k++) {
        tg_tensor_free(x[k]);
        tg_tensor_free(y[k]);
    }
    tg_idx_dataset_free(ds);
}

Test(idx, dataset_batch_f64_image_shaped_without_labels) {
    tg_idx_dataset *ds = small_dataset(0);
    tg_tensor *x = tg_tensor_new(TG_F64, TG_SHAPE(2, 2, 2));
    const int64_t idx[2] = {1, 1};
    cr_assert_eq(tg_idx_dataset_batch(ds, idx, 2, x, NULL), TG_OK, "%s", tg_last_errmsg());
    for (int j = 0; j < 8; j++)
        cr_expect_eq(tg_tensor_get(x, j), pixels[4 + j % 4] / 255.0);
    tg_tensor_free(x);
    tg_idx_dataset_free(ds);
}

Test(idx, dataset_batch_errors_leave_tensors_untouched) {
    tg_idx_dataset *ds = small_dataset(0);
    tg_tensor *x = tg_tensor_ones(TG_F32, TG_SHAPE(2, 4));
    tg_tensor *y = tg_tensor_ones(TG_I32, TG_SHAPE(2));
    const int64_t bad[2] = {0, 3};
    cr_expect_eq(tg_idx_dataset_batch(ds, bad, 2, x, y), TG_ERR_VALUE);
    cr_expect_str_eq(tg_last_errmsg(),
                     "tg_idx_dataset_batch: indices[1] = 3 is outside the data set [0,3)");
    for (int j = 0; j < 8; j++)
        cr_expect_eq(tg_tensor_get(x, j), 1.0);
    cr_expect_eq(tg_tensor_get(y, 0), 1.0);

    const int64_t ok[3] = {0, 1, 2};
    cr_expect_eq(tg_idx_dataset_batch(ds, ok, 3, x, y), TG_ERR_SHAPE);
    cr_expect_str_eq(tg_last_errmsg(), "tg_idx_dataset_batch: x has shape [2,4]; expected 3 rows "
                                       "of 4 values (e.g. [3,4])");
    tg_tensor *yf = tg_tensor_new(TG_F32, TG_SHAPE(2));
    cr_expect_eq(tg_idx_dataset_batch(ds, ok, 2, x, yf), TG_ERR_SHAPE);
    cr_expect_str_eq(tg_last_errmsg(), "tg_idx_dataset_batch: y is f32 [2]; expected i32 [2]");
    tg_tensor *xi = tg_tensor_new(TG_I32, TG_SHAPE(2, 4));
    cr_expect_eq(tg_idx_dataset_batch(ds, ok, 2, xi, y), TG_ERR_DTYPE);
    cr_expect_str_eq(tg_last_errmsg(),
                     "tg_idx_dataset_batch: x has dtype i32; expected f32 or f64");
    cr_expect_eq(tg_idx_dataset_batch(ds, NULL, 2, x, y), TG_ERR_NULL);
    cr_expect_str_eq(tg_last_errmsg(), "tg_idx_dataset_batch: indices is NULL");
    tg_tensor_free(x);
    tg_tensor_free(y);
    tg_tensor_free(yf);
    tg_tensor_free(xi);
    tg_idx_dataset_free(ds);
}

Test(idx, dataset_rejects_count_mismatch) {
    uint8_t a[64], b[64];
    const uint32_t two[1] = {2};
    size_t na = make_idx(a, 3, img_dims, pixels, 12), nb = make_idx(b, 1, two, labels, 2);
    const char *pi = write_plain("i", a, na), *pl = write_plain("l", b, nb);
    cr_expect_null(tg_idx_dataset_load(pi, pl));
    char msg[512];
    snprintf(msg, sizeof msg, "tg_idx_dataset_load: %s holds 3 images but %s holds 2 labels", pi,
             pl);
    cr_expect_str_eq(tg_last_errmsg(), msg);
}

Test(idx, dataset_rejects_labels_with_two_dimensions) {
    uint8_t a[64], b[64];
    const uint32_t d2[2] = {3, 1};
    size_t na = make_idx(a, 3, img_dims, pixels, 12), nb = make_idx(b, 2, d2, labels, 3);
    const char *pi = write_plain("i", a, na), *pl = write_plain("l", b, nb);
    cr_expect_null(tg_idx_dataset_load(pi, pl));
    char msg[512];
    snprintf(msg, sizeof msg, "tg_idx_dataset_load: %s: labels must have 1 dimension, found 2", pl);
    cr_expect_str_eq(tg_last_errmsg(), msg);
}

Test(idx, dataset_rejects_a_bad_images_file) {
    uint8_t b[64];
    size_t nb = make_idx(b, 1, lab_dims, labels, 3);
    const char *pi = write_plain("i", "junk", 4), *pl = write_plain("l", b, nb);
    cr_expect_null(tg_idx_dataset_load(pi, pl));
    cr_expect(strstr(tg_last_errmsg(), "not an IDX file") != NULL, "%s", tg_last_errmsg());
}

/* Issue 12, break 4: 0 images of (2^32-1) x (2^32-1) pixels: the loader's product is 0, and the
 * values per image used to overflow int64 (UBSan aborted, a release build wrapped). */
Test(idx, dataset_rejects_images_too_large_even_when_there_are_none) {
    uint8_t a[64], b[64];
    const uint32_t dims[3] = {0, 0xFFFFFFFFu, 0xFFFFFFFFu}, zero[1] = {0};
    size_t na = make_idx(a, 3, dims, NULL, 0), nb = make_idx(b, 1, zero, NULL, 0);
    const char *pi = write_plain("i", a, na), *pl = write_plain("l", b, nb);
    cr_expect_null(tg_idx_dataset_load(pi, pl));
    char msg[512];
    snprintf(msg, sizeof msg,
             "tg_idx_dataset_load: %s: sizes overflow: one image's dimensions (up to dimension 2, "
             "size 4294967295 at offset 12) exceed 2^61 values",
             pi);
    cr_expect_str_eq(tg_last_errmsg(), msg);
    /* A large but representable image size with 0 images still loads. */
    const uint32_t ok[3] = {0, 0xFFFFFFFFu, 2};
    na = make_idx(a, 3, ok, NULL, 0);
    pi = write_plain("i", a, na);
    tg_idx_dataset *ds = tg_idx_dataset_load(pi, pl);
    cr_expect_not_null(ds, "%s", tg_last_errmsg());
    cr_expect_eq(tg_idx_dataset_features(ds), 2 * (int64_t)0xFFFFFFFFu);
    tg_idx_dataset_free(ds);
}

/* ---- Paths ---- */

Test(idx, paths_prefer_gz_and_fall_back_to_plain) {
    char buf[256], want[256];
    cr_assert_eq(tg_idx_path(NULL, TG_IDX_TRAIN_IMAGES, buf, sizeof buf), TG_OK);
    cr_expect_str_eq(buf, "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz");
    cr_assert_eq(tg_idx_path("/data/", TG_IDX_TEST_LABELS, buf, sizeof buf), TG_OK);
    cr_expect_str_eq(buf, "/data/t10k-labels-idx1-ubyte.gz");
    write_plain("t10k-images-idx3-ubyte", "x", 1);
    cr_assert_eq(tg_idx_path(dir, TG_IDX_TEST_IMAGES, buf, sizeof buf), TG_OK);
    snprintf(want, sizeof want, "%s/t10k-images-idx3-ubyte", dir);
    cr_expect_str_eq(buf, want);
    cr_expect_eq(tg_idx_path("/data", TG_IDX_TRAIN_LABELS, buf, 10), TG_ERR_VALUE);
    cr_expect_str_eq(buf, "");
    cr_expect_eq(tg_idx_path("/data", (tg_idx_part)4, buf, sizeof buf), TG_ERR_VALUE);
}

Test(idx, loads_a_directory_of_plain_files) {
    uint8_t a[64], b[64];
    size_t na = make_idx(a, 3, img_dims, pixels, 12), nb = make_idx(b, 1, lab_dims, labels, 3);
    write_plain("t10k-images-idx3-ubyte", a, na);
    write_gz("t10k-labels-idx1-ubyte.gz", b, nb);
    tg_idx_dataset *ds = tg_idx_dataset_load_dir(dir, 0);
    cr_assert_not_null(ds, "%s", tg_last_errmsg());
    cr_expect_eq(tg_idx_dataset_size(ds), 3);
    tg_idx_dataset_free(ds);
    cr_expect_null(tg_idx_dataset_load_dir(dir, 1)); /* no training files there */
    cr_expect(strstr(tg_last_errmsg(), "train-images-idx3-ubyte.gz: cannot open") != NULL);
}

/* ---- The real thing, when installed (apt-get install dataset-fashion-mnist) ---- */

Test(idx, real_fashion_mnist) {
    char p[512];
    tg_idx_path(NULL, TG_IDX_TEST_IMAGES, p, sizeof p);
    if (access(p, R_OK) != 0)
        cr_skip_test("Fashion-MNIST not installed under %s", TG_FASHION_MNIST_DIR);
    /* Inflating 30 MB takes about 2 minutes under valgrind; the normal and sanitizer runs cover
     * this test, the small files above cover the loader under valgrind. */
    const char *preload = getenv("LD_PRELOAD");
    if (preload && strstr(preload, "vgpreload"))
        cr_skip_test("skipped under valgrind (slow)");
    for (int train = 1; train >= 0; train--) {
        tg_idx_dataset *ds = tg_idx_dataset_load_dir(NULL, train);
        cr_assert_not_null(ds, "%s", tg_last_errmsg());
        const tg_idx *im = tg_idx_dataset_images(ds);
        cr_expect_eq(tg_idx_dataset_size(ds), train ? 60000 : 10000);
        cr_expect_eq(tg_idx_rank(im), 3);
        cr_expect_eq(tg_idx_dim(im, 1), 28);
        cr_expect_eq(tg_idx_dim(im, 2), 28);
        cr_expect_eq(tg_idx_dataset_features(ds), 784);
        cr_expect_eq(tg_idx_dataset_classes(ds), 10);
        /* Fashion-MNIST is balanced: every class has N/10 samples. */
        int64_t count[10] = {0};
        const uint8_t *lab = tg_idx_data(tg_idx_dataset_labels(ds));
        for (int64_t i = 0; i < tg_idx_dataset_size(ds); i++)
            count[lab[i]]++;
        for (int c = 0; c < 10; c++)
            cr_expect_eq(count[c], train ? 6000 : 1000);
        tg_idx_dataset_free(ds);
    }
}
