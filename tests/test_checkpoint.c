/* Checkpoint tests: safetensors round trips, the file's layout, one test per bad-file case (each
 * checking the exact message and that the model is untouched), atomic saves under injected IO
 * failures, a NumPy cross-check, and a train / save / load round trip. */
#define _POSIX_C_SOURCE 200809L
#include "io/checkpoint_io.h"
#include "tapegrad.h"

#include <cjson/cJSON.h>
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static char dir[64];

static void make_dir(void) {
    strcpy(dir, "/tmp/tg_ckpt_XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
}
static void remove_dir(void) {
    tg__checkpoint_io = tg__checkpoint_io_default();
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    cr_expect_eq(system(cmd), 0);
}
TestSuite(ckpt, .init = make_dir, .fini = remove_dir);

static const char *path_of(const char *name) {
    static char p[4][128];
    static int i;
    i = (i + 1) % 4;
    snprintf(p[i], sizeof p[i], "%s/%s", dir, name);
    return p[i];
}

static uint8_t *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "%s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *buf = malloc((size_t)n + 1);
    cr_assert_eq(fread(buf, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return buf;
}

static void write_file(const char *path, const void *buf, size_t n) {
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f);
    cr_assert_eq(fwrite(buf, 1, n, f), n);
    cr_assert_eq(fclose(f), 0);
}

/* A model of three named parameters of different dtypes and ranks. */
typedef struct {
    tg_tensor *p[3];
} model;

static model model_new(uint64_t seed) {
    tg_rng rng;
    tg_rng_seed(&rng, seed);
    model m;
    m.p[0] = tg_tensor_randn(TG_F32, TG_SHAPE(2, 3), 0, 1, &rng);
    m.p[1] = tg_tensor_randn(TG_F64, TG_SHAPE(3), 0, 1, &rng);
    m.p[2] = tg_tensor_rand(TG_F64, 0, NULL, -1, 1, &rng);
    tg_tensor_set_name(m.p[0], "W");
    tg_tensor_set_name(m.p[1], "b");
    tg_tensor_set_name(m.p[2], "scale");
    return m;
}
static void model_free(model *m) {
    for (int i = 0; i < 3; i++)
        tg_tensor_free(m->p[i]);
}
static bool same_bits(const tg_tensor *a, const tg_tensor *b) {
    size_t size = tg_tensor_dtype(a) == TG_F32 ? 4 : 8;
    return tg_tensor_dtype(a) == tg_tensor_dtype(b) && tg_tensor_numel(a) == tg_tensor_numel(b) &&
           memcmp(tg_tensor_cdata(a), tg_tensor_cdata(b), (size_t)tg_tensor_numel(a) * size) == 0;
}

Test(ckpt, save_then_load_is_bit_identical) {
    model a = model_new(1), b = model_new(2);
    const char *p = path_of("m.safetensors");
    cr_assert_eq(tg_checkpoint_save(p, a.p, 3, NULL), TG_OK, "%s", tg_last_errmsg());
    cr_assert_eq(tg_checkpoint_load(p, b.p, 3, NULL), TG_OK, "%s", tg_last_errmsg());
    for (int i = 0; i < 3; i++)
        cr_expect(same_bits(a.p[i], b.p[i]), "parameter %d differs", i);
    model_free(&a);
    model_free(&b);
}

Test(ckpt, explicit_names_and_any_order) {
    model a = model_new(1), b = model_new(2);
    const char *names[3] = {"layer1.weight", "layer1.bias", "s"};
    const char *p = path_of("m.safetensors");
    cr_assert_eq(tg_checkpoint_save(p, a.p, 3, names), TG_OK, "%s", tg_last_errmsg());
    tg_tensor *rev[3] = {b.p[2], b.p[0], b.p[1]};
    const char *rnames[3] = {"s", "layer1.weight", "layer1.bias"};
    cr_assert_eq(tg_checkpoint_load(p, rev, 3, rnames), TG_OK, "%s", tg_last_errmsg());
    for (int i = 0; i < 3; i++)
        cr_expect(same_bits(a.p[i], b.p[i]));
    model_free(&a);
    model_free(&b);
}

Test(ckpt, i32_and_empty_tensors) {
    tg_tensor *k = tg_tensor_from(TG_I32, TG_SHAPE(3), (const int32_t[]){-7, 0, 1 << 30});
    tg_tensor *e = tg_tensor_new(TG_F32, TG_SHAPE(0, 4));
    tg_tensor_set_name(k, "k");
    tg_tensor_set_name(e, "empty");
    tg_tensor *p[2] = {e, k};
    const char *path = path_of("i.safetensors");
    cr_assert_eq(tg_checkpoint_save(path, p, 2, NULL), TG_OK, "%s", tg_last_errmsg());
    tg_tensor *k2 = tg_tensor_new(TG_I32, TG_SHAPE(3)), *e2 = tg_tensor_new(TG_F32, TG_SHAPE(0, 4));
    tg_tensor_set_name(k2, "k");
    tg_tensor_set_name(e2, "empty");
    tg_tensor *q[2] = {k2, e2};
    cr_assert_eq(tg_checkpoint_load(path, q, 2, NULL), TG_OK, "%s", tg_last_errmsg());
    cr_expect(memcmp(tg_tensor_cdata(k), tg_tensor_cdata(k2), 12) == 0);
    tg_tensor *all[4] = {k, e, k2, e2};
    for (int i = 0; i < 4; i++)
        tg_tensor_free(all[i]);
}

Test(ckpt, file_layout_is_safetensors) {
    model a = model_new(3);
    const char *p = path_of("m.safetensors");
    cr_assert_eq(tg_checkpoint_save(p, a.p, 3, NULL), TG_OK, "%s", tg_last_errmsg());
    size_t len;
    uint8_t *buf = read_file(p, &len);
    uint64_t hlen = 0;
    for (int i = 0; i < 8; i++)
        hlen |= (uint64_t)buf[i] << (8 * i);
    cr_assert_eq(hlen % 8, 0, "header padded to 8 bytes");
    cr_assert_eq(len, 8 + hlen + 24 + 24 + 8, "header, then 6 floats, 3 doubles, 1 double");
    cr_assert_eq(buf[8], '{');
    cJSON *root = cJSON_ParseWithLength((const char *)buf + 8, hlen);
    cr_assert_not_null(root);
    const cJSON *w = cJSON_GetObjectItemCaseSensitive(root, "W");
    cr_expect_str_eq(cJSON_GetObjectItemCaseSensitive(w, "dtype")->valuestring, "F32");
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(w, "shape");
    cr_expect_eq(cJSON_GetArraySize(shape), 2);
    cr_expect_eq(cJSON_GetArrayItem(shape, 0)->valueint, 2);
    cr_expect_eq(cJSON_GetArrayItem(shape, 1)->valueint, 3);
    const cJSON *offs = cJSON_GetObjectItemCaseSensitive(w, "data_offsets");
    cr_expect_eq(cJSON_GetArrayItem(offs, 0)->valueint, 0);
    cr_expect_eq(cJSON_GetArrayItem(offs, 1)->valueint, 24);
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(root, "scale");
    cr_expect_eq(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(s, "shape")), 0);
    const cJSON *meta = cJSON_GetObjectItemCaseSensitive(root, "__metadata__");
    cr_expect_str_eq(cJSON_GetObjectItemCaseSensitive(meta, "format")->valuestring, "tapegrad");
    const cJSON *sum = cJSON_GetObjectItemCaseSensitive(meta, "xxh3_64:W");
    cr_assert(cJSON_IsString(sum));
    cr_expect_eq(strlen(sum->valuestring), 16);
    cr_expect_eq(strspn(sum->valuestring, "0123456789abcdef"), 16);
    /* Raw little-endian data: W's first float is at the start of the data section. */
    float w0;
    memcpy(&w0, buf + 8 + hlen, 4);
    cr_expect_eq(w0, ((const float *)tg_tensor_cdata(a.p[0]))[0]);
    cJSON_Delete(root);
    free(buf);
    model_free(&a);
}

/* ---- Bad files: exact message, and the model left exactly as it was ---- */

/* A two-tensor model matching the crafted files below: A f32 [2] and B f32 [1]. */
typedef struct {
    tg_tensor *p[2];
    tg_tensor *copy[2];
} small;

static small small_new(void) {
    small s;
    s.p[0] = tg_tensor_from(TG_F32, TG_SHAPE(2), (const float[]){1.5f, -2.5f});
    s.p[1] = tg_tensor_from(TG_F32, TG_SHAPE(1), (const float[]){3.25f});
    tg_tensor_set_name(s.p[0], "A");
    tg_tensor_set_name(s.p[1], "B");
    for (int i = 0; i < 2; i++)
        s.copy[i] = tg_tensor_clone(s.p[i], TG_F32);
    return s;
}
static void small_free(small *s) {
    for (int i = 0; i < 2; i++) {
        tg_tensor_free(s->p[i]);
        tg_tensor_free(s->copy[i]);
    }
}

/* Writes [8-byte length][json][data_len bytes 0x40..] as a file; returns its path. */
static const char *craft(const char *json, size_t data_len) {
    size_t jl = strlen(json);
    uint8_t *buf = malloc(8 + jl + data_len + 1);
    for (int i = 0; i < 8; i++)
        buf[i] = (uint8_t)((uint64_t)jl >> (8 * i));
    memcpy(buf + 8, json, jl);
    for (size_t i = 0; i < data_len; i++)
        buf[8 + jl + i] = (uint8_t)(0x40 + i);
    const char *p = path_of("bad.safetensors");
    write_file(p, buf, 8 + jl + data_len);
    free(buf);
    return p;
}

#define ENTRY_A "\"A\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}"
#define ENTRY_B "\"B\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}"

/* Loads `path` into a fresh small model, expects `status` and the message `tail` after
 * "tg_checkpoint_load: <path>: ", and checks the model did not change. */
static void expect_load_fails(const char *path, tg_status status, const char *tail) {
    small s = small_new();
    cr_expect_eq(tg_checkpoint_load(path, s.p, 2, NULL), status, "%s", tg_last_errmsg());
    char msg[1024];
    snprintf(msg, sizeof msg, "tg_checkpoint_load: %s: %s", path, tail);
    cr_expect_str_eq(tg_last_errmsg(), msg);
    for (int i = 0; i < 2; i++)
        cr_expect(same_bits(s.p[i], s.copy[i]), "parameter %d changed by a failed load", i);
    small_free(&s);
}

Test(ckpt, crafted_file_without_metadata_loads) {
    /* As a file from another safetensors writer: no checksums, so none are checked. */
    const char *p = craft("{" ENTRY_A "," ENTRY_B "}", 12);
    small s = small_new();
    cr_assert_eq(tg_checkpoint_load(p, s.p, 2, NULL), TG_OK, "%s", tg_last_errmsg());
    uint8_t want[12];
    for (int i = 0; i < 12; i++)
        want[i] = (uint8_t)(0x40 + i);
    cr_expect(memcmp(tg_tensor_cdata(s.p[0]), want, 8) == 0);
    cr_expect(memcmp(tg_tensor_cdata(s.p[1]), want + 8, 4) == 0);
    small_free(&s);
}

Test(ckpt, rejects_truncated_file) {
    const char *p = path_of("bad.safetensors");
    write_file(p, "\x10\0\0", 3);
    expect_load_fails(p, TG_ERR_FORMAT, "truncated: 3 bytes, less than the 8-byte header length");
}

Test(ckpt, rejects_file_truncated_in_the_data) {
    const char *p = craft("{" ENTRY_A "," ENTRY_B "}", 10);
    expect_load_fails(p, TG_ERR_FORMAT,
                      "tensor \"B\": data_offsets [8,12] out of range: the data section holds 10 "
                      "bytes");
}

Test(ckpt, rejects_header_length_past_the_end) {
    const char *p = path_of("bad.safetensors");
    write_file(p, "\x00\x01\0\0\0\0\0\0{}", 10);
    expect_load_fails(p, TG_ERR_FORMAT,
                      "header length 256 (at offset 0) runs past the end of the file: 2 bytes "
                      "follow it");
    write_file(p, "\xff\xff\xff\xff\xff\xff\xff\xff{}", 10);
    expect_load_fails(p, TG_ERR_FORMAT,
                      "header length 18446744073709551615 (at offset 0) runs past the end of the "
                      "file: 2 bytes follow it");
}

Test(ckpt, rejects_malformed_json) {
    expect_load_fails(craft("{" ENTRY_A ",\"B\":{\"dtype\":}}", 12), TG_ERR_FORMAT,
                      "malformed JSON header near byte 75 of the file");
    expect_load_fails(craft("", 12), TG_ERR_FORMAT,
                      "malformed JSON header near byte 8 of the file");
    expect_load_fails(craft("{" ENTRY_A "," ENTRY_B "}  x", 12), TG_ERR_FORMAT,
                      "malformed JSON header: unexpected data at byte 118 after the header object");
    expect_load_fails(craft("[1,2]", 0), TG_ERR_FORMAT, "the JSON header is not an object");
}

Test(ckpt, rejects_bad_entries) {
    expect_load_fails(craft("{\"A\":3}", 0), TG_ERR_FORMAT, "tensor \"A\": entry is not an object");
    expect_load_fails(craft("{\"A\":{\"dtype\":\"F32\",\"shape\":[2]}}", 0), TG_ERR_FORMAT,
                      "tensor \"A\": needs \"dtype\" (a string), \"shape\" and \"data_offsets\" "
                      "(arrays)");
    expect_load_fails(craft("{\"A\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", 8),
                      TG_ERR_FORMAT, "tensor \"A\": shape[0] is not a non-negative integer");
    expect_load_fails(
        craft("{\"A\":{\"dtype\":\"F32\",\"shape\":[2.5],\"data_offsets\":[0,8]}}", 8),
        TG_ERR_FORMAT, "tensor \"A\": shape[0] is not a non-negative integer");
    expect_load_fails(
        craft("{\"A\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,2],\"data_offsets\":[0,8]}}",
              8),
        TG_ERR_FORMAT, "tensor \"A\": rank 9 is above tapegrad's 8");
    expect_load_fails(craft("{\"A\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0]}}", 8),
                      TG_ERR_FORMAT,
                      "tensor \"A\": data_offsets must be two non-negative integers [begin, end]");
    expect_load_fails(
        craft("{\"A\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4294967296],"
              "\"data_offsets\":[0,8]}}",
              8),
        TG_ERR_FORMAT, "tensor \"A\": shape overflows");
    expect_load_fails(craft("{\"__metadata__\":{\"format\":1}," ENTRY_A "," ENTRY_B "}", 12),
                      TG_ERR_FORMAT, "\"__metadata__\" value \"format\" is not a string");
}

Test(ckpt, rejects_unknown_dtype) {
    expect_load_fails(
        craft("{\"A\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[0,4]}," ENTRY_B "}", 12),
        TG_ERR_FORMAT,
        "tensor \"A\": unknown or unsupported dtype \"BF16\" (tapegrad reads F32, "
        "F64, I32)");
}

Test(ckpt, rejects_dtype_or_shape_differing_from_the_model) {
    expect_load_fails(
        craft("{\"A\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[0,8]}," ENTRY_B "}", 12),
        TG_ERR_SHAPE, "tensor \"A\" is F64 [1] in the file but F32 [2] in the model");
    expect_load_fails(
        craft("{\"A\":{\"dtype\":\"F32\",\"shape\":[2,1],\"data_offsets\":[0,8]}," ENTRY_B "}", 12),
        TG_ERR_SHAPE, "tensor \"A\" is F32 [2,1] in the file but F32 [2] in the model");
}

Test(ckpt, rejects_offsets_out_of_range) {
    expect_load_fails(
        craft("{\"A\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}," ENTRY_B "}", 12),
        TG_ERR_FORMAT,
        "tensor \"A\": data_offsets [8,0] out of range: the data section holds 12 "
        "bytes");
    expect_load_fails(
        craft("{\"A\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,9]}," ENTRY_B "}", 12),
        TG_ERR_FORMAT, "tensor \"A\": data_offsets [0,9] span 9 bytes but F32 [2] needs 8");
    expect_load_fails(craft("{\"A\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,"
                            "1152921504606846976]}}",
                            12),
                      TG_ERR_FORMAT,
                      "tensor \"A\": data_offsets must be two non-negative integers [begin, end]");
}

Test(ckpt, rejects_overlapping_offsets) {
    expect_load_fails(craft("{" ENTRY_A ",\"B\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":"
                            "[4,8]}}",
                            12),
                      TG_ERR_FORMAT, "tensors \"A\" and \"B\" overlap: [4,8] starts before 8");
}

Test(ckpt, rejects_offsets_not_covering_the_data) {
    expect_load_fails(
        craft("{\"A\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]},\"B\":"
              "{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[12,16]}}",
              16),
        TG_ERR_FORMAT, "data bytes [0,4] belong to no tensor (before \"A\")");
    expect_load_fails(craft("{" ENTRY_A "," ENTRY_B "}", 16), TG_ERR_FORMAT,
                      "data bytes [12,16] after the last tensor belong to no tensor");
}

Test(ckpt, rejects_missing_and_extra_tensors) {
    expect_load_fails(craft("{" ENTRY_A "}", 8), TG_ERR_FORMAT,
                      "tensor \"B\" of the model is missing from the file");
    expect_load_fails(craft("{" ENTRY_A "," ENTRY_B
                            ",\"C\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[12,16]}}",
                            16),
                      TG_ERR_FORMAT, "the file holds tensor \"C\", which the model does not have");
    expect_load_fails(craft("{" ENTRY_A "," ENTRY_A "," ENTRY_B "}", 12), TG_ERR_FORMAT,
                      "tensor \"A\" appears twice");
}

Test(ckpt, rejects_checksum_mismatch_naming_the_tensor) {
    small s = small_new();
    const char *p = path_of("m.safetensors");
    cr_assert_eq(tg_checkpoint_save(p, s.p, 2, NULL), TG_OK, "%s", tg_last_errmsg());
    size_t len;
    uint8_t *buf = read_file(p, &len);
    buf[len - 1] ^= 0x01; /* one bit of B, the last tensor */
    write_file(p, buf, len);
    small t = small_new();
    tg_tensor_set(t.p[1], 0, 99);
    tg_tensor_free(t.copy[1]);
    t.copy[1] = tg_tensor_clone(t.p[1], TG_F32);
    cr_expect_eq(tg_checkpoint_load(p, t.p, 2, NULL), TG_ERR_FORMAT);
    cr_expect(strstr(tg_last_errmsg(), "checksum mismatch in tensor \"B\": the file says ") != NULL,
              "%s", tg_last_errmsg());
    for (int i = 0; i < 2; i++)
        cr_expect(same_bits(t.p[i], t.copy[i]), "parameter %d changed by a failed load", i);
    free(buf);
    small_free(&s);
    small_free(&t);
}

Test(ckpt, rejects_missing_or_stray_checksums_in_tapegrad_files) {
    expect_load_fails(
        craft("{\"__metadata__\":{\"format\":\"tapegrad\"}," ENTRY_A "," ENTRY_B "}", 12),
        TG_ERR_FORMAT, "tensor \"A\" has no checksum (\"xxh3_64:A\" in __metadata__)");
    expect_load_fails(craft("{\"__metadata__\":{\"xxh3_64:Z\":\"0\"}," ENTRY_A "," ENTRY_B "}", 12),
                      TG_ERR_FORMAT,
                      "__metadata__ has a checksum for tensor \"Z\", which the file does not hold");
}

Test(ckpt, rejects_missing_file) {
    const char *p = path_of("none.safetensors");
    expect_load_fails(p, TG_ERR_IO, "cannot open: No such file or directory");
    expect_load_fails(dir, TG_ERR_IO, "not a regular file");
}

Test(ckpt, load_mem_names_the_buffer) {
    small s = small_new();
    cr_expect_eq(tg_checkpoint_load_mem("\x01\0\0\0\0\0\0\0{", 9, "blob", s.p, 2, NULL),
                 TG_ERR_FORMAT);
    cr_expect_str_eq(tg_last_errmsg(),
                     "tg_checkpoint_load_mem: blob: malformed JSON header near byte 8 of the file");
    small_free(&s);
}

Test(ckpt, save_rejects_unnamed_or_repeated_names) {
    small s = small_new();
    const char *p = path_of("m.safetensors");
    tg_tensor_set_name(s.p[1], NULL);
    cr_expect_eq(tg_checkpoint_save(p, s.p, 2, NULL), TG_ERR_VALUE);
    char msg[512];
    snprintf(msg, sizeof msg,
             "tg_checkpoint_save: %s: parameter 1 has no name; name it with tg_tensor_set_name or "
             "pass names",
             p);
    cr_expect_str_eq(tg_last_errmsg(), msg);
    const char *names[2] = {"x", "x"};
    cr_expect_eq(tg_checkpoint_save(p, s.p, 2, names), TG_ERR_VALUE);
    snprintf(msg, sizeof msg, "tg_checkpoint_save: %s: parameters 0 and 1 are both named \"x\"", p);
    cr_expect_str_eq(tg_last_errmsg(), msg);
    tg_tensor *withnull[2] = {s.p[0], NULL};
    cr_expect_eq(tg_checkpoint_save(p, withnull, 2, NULL), TG_ERR_NULL);
    cr_expect_eq(tg_checkpoint_save(NULL, s.p, 2, NULL), TG_ERR_NULL);
    cr_expect_eq(access(p, F_OK), -1, "nothing written");
    small_free(&s);
}

/* ---- Atomic saves: a failure mid-save leaves the previous file intact ---- */

static size_t write_budget;
static size_t failing_write(const void *b, size_t s, size_t n, FILE *f) {
    size_t bytes = s * n;
    if (bytes <= write_budget) {
        write_budget -= bytes;
        return fwrite(b, s, n, f);
    }
    /* Part of the data reaches the file, then the disk is "full". */
    size_t k = fwrite(b, 1, write_budget, f);
    write_budget = 0;
    errno = ENOSPC;
    return k / (s ? s : 1);
}
static int failing_fsync(int fd) {
    (void)fd;
    errno = EIO;
    return -1;
}
static int failing_rename(const char *a, const char *b) {
    (void)a;
    (void)b;
    errno = EXDEV;
    return -1;
}

static int count_files(void) {
    DIR *d = opendir(dir);
    int n = 0;
    for (struct dirent *e; (e = readdir(d));)
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

/* Saves model 1, then tries to save model 2 with `io`; the file must still be model 1's. */
static void check_failed_save_keeps_old_file(tg__ckpt_io io, const char *step) {
    model a = model_new(1), b = model_new(2), c = model_new(3);
    const char *p = path_of("m.safetensors");
    cr_assert_eq(tg_checkpoint_save(p, a.p, 3, NULL), TG_OK, "%s", tg_last_errmsg());
    size_t len0;
    uint8_t *before = read_file(p, &len0);
    tg__checkpoint_io = io;
    cr_expect_eq(tg_checkpoint_save(p, b.p, 3, NULL), TG_ERR_IO);
    tg__checkpoint_io = tg__checkpoint_io_default();
    cr_expect(strstr(tg_last_errmsg(), step) != NULL, "%s", tg_last_errmsg());
    cr_expect(strstr(tg_last_errmsg(), "the previous file, if any, is unchanged") != NULL);
    size_t len1;
    uint8_t *after = read_file(p, &len1);
    cr_expect(len0 == len1 && memcmp(before, after, len0) == 0, "the old checkpoint changed");
    cr_expect_eq(count_files(), 1, "the temporary file was removed");
    cr_expect_eq(tg_checkpoint_load(p, c.p, 3, NULL), TG_OK, "%s", tg_last_errmsg());
    for (int i = 0; i < 3; i++)
        cr_expect(same_bits(a.p[i], c.p[i]));
    free(before);
    free(after);
    model_free(&a);
    model_free(&b);
    model_free(&c);
}

Test(ckpt, failing_write_mid_header_keeps_old_file) {
    tg__ckpt_io io = tg__checkpoint_io_default();
    io.write = failing_write;
    write_budget = 20;
    check_failed_save_keeps_old_file(io, ": write of the temporary file");
}

Test(ckpt, failing_write_mid_data_keeps_old_file) {
    tg__ckpt_io io = tg__checkpoint_io_default();
    io.write = failing_write;
    write_budget = 8 + 200; /* the length, the header (< 200 bytes) and part of the data */
    check_failed_save_keeps_old_file(io, "No space left on device");
}

Test(ckpt, failing_fsync_keeps_old_file) {
    tg__ckpt_io io = tg__checkpoint_io_default();
    io.fsync = failing_fsync;
    check_failed_save_keeps_old_file(io, ": fsync of the temporary file");
}

Test(ckpt, failing_rename_keeps_old_file) {
    tg__ckpt_io io = tg__checkpoint_io_default();
    io.rename = failing_rename;
    check_failed_save_keeps_old_file(io, ": rename to the final name of the temporary file");
}

Test(ckpt, save_into_missing_directory_fails_cleanly) {
    small s = small_new();
    char p[128];
    snprintf(p, sizeof p, "%s/no/such/dir/m.safetensors", dir);
    cr_expect_eq(tg_checkpoint_save(p, s.p, 2, NULL), TG_ERR_IO);
    cr_expect(strstr(tg_last_errmsg(), "cannot create a temporary file") != NULL, "%s",
              tg_last_errmsg());
    small_free(&s);
}

/* ---- NumPy reads the file with plain json + numpy.frombuffer ---- */

static const char numpy_reader[] =
    "import json, struct, sys\n"
    "import numpy as np\n"
    "b = open(sys.argv[1], 'rb').read()\n"
    "n = struct.unpack('<Q', b[:8])[0]\n"
    "h = json.loads(b[8:8 + n])\n"
    "data = b[8 + n:]\n"
    "for name in ['W', 'b', 'scale']:\n"
    "    e = h[name]\n"
    "    dt = {'F32': '<f4', 'F64': '<f8'}[e['dtype']]\n"
    "    lo, hi = e['data_offsets']\n"
    "    a = np.frombuffer(data[lo:hi], dtype=dt).reshape(e['shape'])\n"
    "    print(name, a.ndim, ' '.join(float(v).hex() for v in a.ravel()))\n";

Test(ckpt, numpy_reads_the_same_numbers) {
    if (access("/usr/bin/python3", X_OK) != 0 ||
        system("/usr/bin/python3 -c 'import numpy' >/dev/null 2>&1") != 0)
        cr_skip_test("/usr/bin/python3 with numpy not available");
    model a = model_new(5);
    const char *p = path_of("m.safetensors");
    cr_assert_eq(tg_checkpoint_save(p, a.p, 3, NULL), TG_OK, "%s", tg_last_errmsg());
    const char *script = path_of("read.py");
    write_file(script, numpy_reader, strlen(numpy_reader));
    char cmd[512];
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 '%s' '%s'", script, p);
    FILE *py = popen(cmd, "r");
    cr_assert_not_null(py);
    char line[4096];
    const char *want_names[3] = {"W", "b", "scale"};
    const int want_rank[3] = {2, 1, 0};
    int lines = 0;
    while (fgets(line, sizeof line, py) && lines < 3) {
        char name[16];
        int rank, used;
        cr_assert_eq(sscanf(line, "%15s %d%n", name, &rank, &used), 2, "%s", line);
        cr_expect_str_eq(name, want_names[lines]);
        cr_expect_eq(rank, want_rank[lines]);
        const tg_tensor *t = a.p[lines];
        char *s = line + used;
        for (int64_t i = 0; i < tg_tensor_numel(t); i++) {
            char *end;
            double v = strtod(s, &end); /* hex floats: exact */
            cr_assert(end != s, "missing value %lld in: %s", (long long)i, line);
            cr_expect_eq(v, tg_tensor_get(t, i), "%s[%lld]", name, (long long)i);
            s = end;
        }
        lines++;
    }
    cr_expect_eq(pclose(py), 0);
    cr_expect_eq(lines, 3);
    model_free(&a);
}

/* ---- Round trip: train, save, load into a fresh model, same bits and same predictions ---- */

typedef struct {
    tg_tensor *p[4]; /* W_h [4,2], b_h [4], W_y [2,4], b_y [2] */
} net;

static net net_new(uint64_t seed) {
    tg_rng rng;
    tg_rng_seed(&rng, seed);
    net n = {{tg_tensor_randn(TG_F32, TG_SHAPE(4, 2), 0, 0.5, &rng),
              tg_tensor_new(TG_F32, TG_SHAPE(4)),
              tg_tensor_randn(TG_F32, TG_SHAPE(2, 4), 0, 0.5, &rng),
              tg_tensor_new(TG_F32, TG_SHAPE(2))}};
    const char *names[4] = {"W_h", "b_h", "W_y", "b_y"};
    tg_tensor **ps = n.p;
    for (int i = 0; i < 4; i++) {
        tg_tensor_set_name(ps[i], names[i]);
        tg_tensor_set_requires_grad(ps[i], 1);
    }
    return n;
}

/* The report's 2-4-2 network: logits = W_y tanh(W_h x + b_h) + b_y. */
static tg_tensor *forward(tg_tape *t, const net *n, tg_tensor *X) {
    tg_tensor *h = tg_tanh(t, tg_add(t, tg_matmul(t, X, tg_transpose(t, n->p[0])), n->p[1]));
    return tg_add(t, tg_matmul(t, h, tg_transpose(t, n->p[2])), n->p[3]);
}

Test(ckpt, train_save_load_round_trip) {
    /* Points inside (class 0) or outside (class 1) a circle of radius 0.6. */
    enum { N = 64 };
    tg_rng rng;
    tg_rng_seed(&rng, 42);
    tg_tensor *X = tg_tensor_rand(TG_F32, TG_SHAPE(N, 2), -1, 1, &rng);
    tg_tensor *Y = tg_tensor_new(TG_I32, TG_SHAPE(N));
    for (int i = 0; i < N; i++) {
        double x = tg_tensor_get(X, 2 * i), y = tg_tensor_get(X, 2 * i + 1);
        tg_tensor_set(Y, i, x * x + y * y > 0.36);
    }
    net a = net_new(7);
    tg_tensor **pa = a.p;
    tg_tape *t = tg_tape_new();
    double first = 0, last = 0;
    for (int step = 0; step < 20; step++) {
        tg_tape_reset(t);
        tg_tensor *loss = tg_softmax_cross_entropy(t, forward(t, &a, X), Y);
        cr_assert_eq(tg_backward(t, loss), TG_OK, "%s", tg_tape_errmsg(t));
        last = tg_tensor_item(loss);
        if (step == 0)
            first = last;
        for (int i = 0; i < 4; i++) { /* plain SGD, lr 0.5 */
            float *w = tg_tensor_data(pa[i]);
            const float *g = tg_tensor_cdata(tg_tensor_grad(pa[i]));
            for (int64_t k = 0; k < tg_tensor_numel(pa[i]); k++)
                w[k] -= 0.5f * g[k];
            tg_tensor_zero_grad(pa[i]);
        }
    }
    cr_assert_lt(last, first, "training lowered the loss");
    const char *p = path_of("circles.safetensors");
    cr_assert_eq(tg_checkpoint_save(p, pa, 4, NULL), TG_OK, "%s", tg_last_errmsg());

    net b = net_new(99); /* different initial values */
    tg_tensor **pb = b.p;
    cr_assert_eq(tg_checkpoint_load(p, pb, 4, NULL), TG_OK, "%s", tg_last_errmsg());
    for (int i = 0; i < 4; i++)
        cr_expect(same_bits(pa[i], pb[i]), "%s differs after the round trip",
                  tg_tensor_name(pa[i]));
    tg_tape_reset(t);
    tg_tensor *la = forward(t, &a, X), *lb = forward(t, &b, X);
    cr_assert_not_null(lb, "%s", tg_tape_errmsg(t));
    cr_expect(same_bits(la, lb), "predictions differ");

    tg_tape_free(t);
    for (int i = 0; i < 4; i++) {
        tg_tensor_free(pa[i]);
        tg_tensor_free(pb[i]);
    }
    tg_tensor_free(X);
    tg_tensor_free(Y);
}

/* ---- Issue 12 ---- */

/* Break 7: a name that is not UTF-8 went into the JSON header raw; Python's json rejects it. */
Test(ckpt, save_refuses_names_that_are_not_utf8) {
    model a = model_new(1);
    const char *p = path_of("m.safetensors");
    const char *bad[] = {"W\xff", "\xc3", "\xc0\xaf" /* overlong '/' */,
                         "\xed\xa0\x80" /* surrogate */, "\xf4\x90\x80\x80" /* above U+10FFFF */};
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        const char *names[3] = {"ok", "b", bad[k]};
        cr_expect_eq(tg_checkpoint_save(p, a.p, 3, names), TG_ERR_VALUE, "name %zu", k);
        char msg[512];
        snprintf(msg, sizeof msg,
                 "tg_checkpoint_save: %s: tensor 2: its name is not valid UTF-8, which a "
                 "safetensors (JSON) header cannot hold",
                 p);
        cr_expect_str_eq(tg_last_errmsg(), msg);
    }
    cr_expect_eq(access(p, F_OK), -1, "nothing written");
    /* e-acute, nabla (then b, as an octal escape: a hex one would swallow it), an emoji */
    const char *good[3] = {"poids_\xc3\xa9", "\xe2\x88\x87\142", "\xf0\x9f\x98\x80"};
    cr_expect_eq(tg_checkpoint_save(p, a.p, 3, good), TG_OK, "%s", tg_last_errmsg());
    model_free(&a);
}

static long peak_rss_kib(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss;
}

/* Break 8: a 256 MiB file whose first 8 bytes are wrong, or whose header does not fit the model,
 * used to be read whole before its header was looked at. Sparse files: no disk space used. */
Test(ckpt, load_reads_the_header_before_the_data) {
    model a = model_new(1), b = model_new(2);
    const char *p = path_of("big.safetensors");
    const off_t big = (off_t)256 << 20;
    FILE *f = fopen(p, "wb");
    cr_assert_not_null(f);
    cr_assert_eq(fwrite("\xff\xff\xff\xff\xff\xff\xff\x7f", 1, 8, f), 8);
    cr_assert_eq(fclose(f), 0);
    cr_assert_eq(truncate(p, big), 0);
    const long before = peak_rss_kib();
    cr_expect_eq(tg_checkpoint_load(p, b.p, 3, NULL), TG_ERR_FORMAT);
    cr_expect(strstr(tg_last_errmsg(), "runs past the end of the file") != NULL, "%s",
              tg_last_errmsg());
    /* A real checkpoint of the model, then 256 MiB more: the header's offsets do not cover the
     * data section, which is then never read. */
    const char *q = path_of("long.safetensors");
    cr_assert_eq(tg_checkpoint_save(q, a.p, 3, NULL), TG_OK, "%s", tg_last_errmsg());
    cr_assert_eq(truncate(q, big), 0);
    cr_expect_eq(tg_checkpoint_load(q, b.p, 3, NULL), TG_ERR_FORMAT);
    cr_expect(strstr(tg_last_errmsg(), "after the last tensor belong to no tensor") != NULL, "%s",
              tg_last_errmsg());
    const long grown = peak_rss_kib() - before;
    cr_expect_lt(grown, 32 * 1024, "loading grew the peak RSS by %ld KiB", grown);
    model_free(&a);
    model_free(&b);
}

/* Break 8: opening a FIFO blocked forever. */
Test(ckpt, load_refuses_a_fifo_without_blocking, .timeout = 20) {
    model b = model_new(2);
    const char *p = path_of("fifo");
    cr_assert_eq(mkfifo(p, 0600), 0);
    cr_expect_eq(tg_checkpoint_load(p, b.p, 3, NULL), TG_ERR_IO);
    char msg[256];
    snprintf(msg, sizeof msg, "tg_checkpoint_load: %s: not a regular file", p);
    cr_expect_str_eq(tg_last_errmsg(), msg);
    cr_expect_eq(tg_checkpoint_load(dir, b.p, 3, NULL), TG_ERR_IO);
    model_free(&b);
}

static int count_temps_of(const char *base) {
    DIR *d = opendir(dir);
    int n = 0;
    size_t bl = strlen(base);
    for (struct dirent *e; (e = readdir(d));)
        n += strncmp(e->d_name, base, bl) == 0 && strncmp(e->d_name + bl, ".tmp-", 5) == 0;
    closedir(d);
    return n;
}

/* Break 6: saves killed with SIGKILL leave their temporary files; the next save removes them. A
 * 4 MiB tensor makes each save long enough to be killed in the middle of it. */
Test(ckpt, a_save_removes_what_killed_saves_left, .timeout = 120) {
    const char *p = path_of("m.safetensors");
    tg_rng rng;
    tg_rng_seed(&rng, 3);
    tg_tensor *w = tg_tensor_rand(TG_F32, TG_SHAPE(1024, 1024), -1, 1, &rng);
    tg_tensor_set_name(w, "w");
    int kills = 0;
    /* Each save removes what the previous kill left, so kill until one kill leaves a file. */
    for (int round = 0; round < 500 && count_temps_of("m.safetensors") == 0; round++) {
        fflush(NULL);
        pid_t pid = fork();
        cr_assert(pid >= 0);
        if (pid == 0) {
            for (;;)
                tg_checkpoint_save(p, &w, 1, NULL);
        }
        /* Kill while a temporary exists (a save under way), whatever the machine's speed (under
         * valgrind a save takes far longer): poll for it for up to 10 s, then a random extra. */
        for (int poll = 0; poll < 50000 && count_temps_of("m.safetensors") == 0; poll++)
            nanosleep(&(struct timespec){0, 200000}, NULL);
        nanosleep(&(struct timespec){0, 100000 * (long)tg_rng_below(&rng, 10)}, NULL);
        cr_assert_eq(kill(pid, SIGKILL), 0);
        int status;
        cr_assert_eq(waitpid(pid, &status, 0), pid);
        cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
        kills++;
    }
    cr_assert_gt(count_temps_of("m.safetensors"), 0, "%d kills left no temporary file", kills);
    /* Two more, as a crashed writer leaves them: named with a pid that is no longer alive. */
    fflush(NULL);
    pid_t dead = fork();
    if (dead == 0)
        _exit(0);
    cr_assert_eq(waitpid(dead, NULL, 0), dead);
    for (int k = 0; k < 2; k++) {
        char stale_name[256];
        snprintf(stale_name, sizeof stale_name, "%s.tmp-%ld-zzzzz%d", p, (long)dead, k);
        write_file(stale_name, "partial", 7);
    }
    const int stale = count_temps_of("m.safetensors");
    cr_assert_geq(stale, 3);

    /* A live writer's temporary (its process alive and holding the lock) and another target's
     * must survive; the dead writers' go. */
    char live[256], other[256];
    int to_child[2];
    cr_assert_eq(pipe(to_child), 0);
    fflush(NULL);
    pid_t writer = fork();
    cr_assert(writer >= 0);
    if (writer == 0) {
        snprintf(live, sizeof live, "%s.tmp-%ld-abcdef", p, (long)getpid());
        int fd = open(live, O_CREAT | O_WRONLY, 0600);
        flock(fd, LOCK_EX);
        char c = 1;
        (void)!write(to_child[1], &c, 1);
        pause(); /* until killed */
        _exit(0);
    }
    char c;
    cr_assert_eq(read(to_child[0], &c, 1), 1);
    snprintf(live, sizeof live, "%s.tmp-%ld-abcdef", p, (long)writer);
    snprintf(other, sizeof other, "%s/n.safetensors.tmp-999999999-abcdef", dir);
    write_file(other, "x", 1);

    cr_assert_eq(tg_checkpoint_save(p, &w, 1, NULL), TG_OK, "%s", tg_last_errmsg());
    cr_expect_eq(count_temps_of("m.safetensors"), 1, "%d stale files were left", stale);
    cr_expect_eq(access(live, F_OK), 0, "a live writer's temporary file was removed");
    cr_expect_eq(access(other, F_OK), 0, "another file's temporary was removed");
    kill(writer, SIGKILL);
    waitpid(writer, NULL, 0);
    cr_assert_eq(tg_checkpoint_save(p, &w, 1, NULL), TG_OK, "%s", tg_last_errmsg());
    cr_expect_eq(count_temps_of("m.safetensors"), 0);
    tg_tensor *back = tg_tensor_new(TG_F32, TG_SHAPE(1024, 1024));
    tg_tensor_set_name(back, "w");
    cr_expect_eq(tg_checkpoint_load(p, &back, 1, NULL), TG_OK, "%s", tg_last_errmsg());
    cr_expect(same_bits(w, back));
    tg_tensor_free(back);
    tg_tensor_free(w);
    close(to_child[0]);
    close(to_child[1]);
}
