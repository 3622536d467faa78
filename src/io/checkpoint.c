/* checkpoint.c -- named parameter sets saved and loaded as safetensors, with XXH3-64 checksums.
 *
 * The layout (https://github.com/huggingface/safetensors): an 8-byte little-endian header length
 * H; H bytes of JSON, padded with spaces to a multiple of 8; the data section, every tensor's raw
 * little-endian bytes back to back. The JSON maps each tensor name to
 *     {"dtype": "F32", "shape": [4, 2], "data_offsets": [begin, end]}
 * (offsets relative to the data section) and "__metadata__" to a string-to-string map, where
 * tapegrad puts "format": "tapegrad" and, for each tensor, "xxh3_64:<name>": 16 hex digits, the
 * XXH3-64 of that tensor's bytes as stored.
 *
 * Saving is atomic: a temporary file in the same directory, fflush + fsync, rename over the old
 * file, fsync of the directory. Loading checks the whole file (structure, coverage of the data
 * section, the model's names, dtypes and shapes, the checksums) before it writes to any parameter,
 * so a failed load leaves the model exactly as it was. */
#include "checkpoint_io.h"
#include "core/engine.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#define TG_CKPT_FORMAT "tapegrad"
#define TG_CKPT_SUM_PREFIX "xxh3_64:"
/* As the reference implementation: a larger header is refused before it is parsed. */
#define TG_CKPT_MAX_HEADER (100u << 20)

static size_t io_fwrite(const void *b, size_t s, size_t n, FILE *f) { return fwrite(b, s, n, f); }
static int io_fsync(int fd) { return fsync(fd); }
static int io_rename(const char *a, const char *b) { return rename(a, b); }

tg__ckpt_io tg__checkpoint_io_default(void) {
    return (tg__ckpt_io){io_fwrite, io_fsync, io_rename};
}
tg__ckpt_io tg__checkpoint_io = {io_fwrite, io_fsync, io_rename};

static bool host_is_le(void) {
    const uint16_t one = 1;
    return *(const uint8_t *)&one == 1;
}

/* Copies n elements of `size` bytes, reversing each element's bytes on a big-endian host (the
 * file is little-endian). */
static void copy_le(void *dst, const void *src, size_t n, size_t size) {
    if (host_is_le()) {
        memcpy(dst, src, n * size);
        return;
    }
    const uint8_t *s = src;
    uint8_t *d = dst;
    for (size_t i = 0; i < n; i++)
        for (size_t b = 0; b < size; b++)
            d[i * size + b] = s[i * size + size - 1 - b];
}

static const char *st_dtype(tg_dtype d) {
    return d == TG_F32 ? "F32" : d == TG_F64 ? "F64" : "I32";
}

/* The name of parameter i, or NULL after setting the error. */
static const char *param_name(const char *who, const char *path, tg_tensor *const *params,
                              const char *const *names, int i) {
    const char *nm = names ? names[i] : tg_tensor_name(params[i]);
    if (!nm || !nm[0]) {
        tg__set_last_error(TG_ERR_VALUE,
                           "%s: %s: parameter %d has no name; name it with tg_tensor_set_name "
                           "or pass names",
                           who, path, i);
        return NULL;
    }
    if (strcmp(nm, "__metadata__") == 0 || strlen(nm) > 1024) {
        tg__set_last_error(TG_ERR_VALUE, "%s: %s: parameter %d: the name \"%.64s\" is not allowed",
                           who, path, i, nm);
        return NULL;
    }
    return nm;
}

/* Checks the parameter list: non-NULL tensors of a supported dtype, named, names unique. */
static tg_status check_params(const char *who, const char *path, tg_tensor *const *params, int n,
                              const char *const *names) {
    if (!path)
        return tg__set_last_error(TG_ERR_NULL, "%s: path is NULL", who);
    if (n < 0 || (n > 0 && !params))
        return tg__set_last_error(n < 0 ? TG_ERR_VALUE : TG_ERR_NULL, "%s: %s: %d parameters%s",
                                  who, path, n, n < 0 ? "" : " but params is NULL");
    for (int i = 0; i < n; i++) {
        if (!params[i])
            return tg__set_last_error(TG_ERR_NULL, "%s: %s: parameter %d is NULL", who, path, i);
        const char *nm = param_name(who, path, params, names, i);
        if (!nm)
            return TG_ERR_VALUE;
        for (int j = 0; j < i; j++)
            if (strcmp(nm, param_name(who, path, params, names, j)) == 0)
                return tg__set_last_error(TG_ERR_VALUE,
                                          "%s: %s: parameters %d and %d are both named \"%s\"", who,
                                          path, j, i, nm);
    }
    return TG_OK;
}

/* ---- Save ---- */

static cJSON *raw_int(uint64_t v) {
    char buf[32];
    snprintf(buf, sizeof buf, "%llu", (unsigned long long)v);
    return cJSON_CreateRaw(buf);
}

/* The JSON header, padded with spaces to a multiple of 8 bytes. Caller frees. NULL on no memory. */
static char *build_header(tg_tensor *const *params, int n, const char *const *names, size_t *len) {
    cJSON *root = cJSON_CreateObject(), *meta = cJSON_CreateObject();
    bool ok = root && meta && cJSON_AddItemToObject(root, "__metadata__", meta);
    if (!ok)
        cJSON_Delete(meta);
    ok = ok && cJSON_AddStringToObject(meta, "format", TG_CKPT_FORMAT);
    uint64_t off = 0;
    for (int i = 0; ok && i < n; i++) {
        const tg_tensor *t = params[i];
        const char *nm = names ? names[i] : t->name;
        size_t bytes = (size_t)t->numel * tg__dtype_size(t->dtype);
        cJSON *e = cJSON_CreateObject(), *shape = cJSON_CreateArray(), *offs = cJSON_CreateArray();
        ok = e && shape && offs && cJSON_AddItemToObject(root, nm, e);
        if (!ok) {
            cJSON_Delete(e);
            cJSON_Delete(shape);
            cJSON_Delete(offs);
            break;
        }
        ok = cJSON_AddStringToObject(e, "dtype", st_dtype(t->dtype)) &&
             cJSON_AddItemToObject(e, "shape", shape);
        if (!ok) {
            cJSON_Delete(shape);
            cJSON_Delete(offs);
            break;
        }
        for (int d = 0; ok && d < t->rank; d++)
            ok = cJSON_AddItemToArray(shape, raw_int((uint64_t)t->shape[d]));
        ok = ok && cJSON_AddItemToObject(e, "data_offsets", offs);
        if (!ok) {
            cJSON_Delete(offs);
            break;
        }
        ok = cJSON_AddItemToArray(offs, raw_int(off)) &&
             cJSON_AddItemToArray(offs, raw_int(off + bytes));
        off += bytes;
        /* The checksum covers the bytes as stored: little-endian. */
        uint64_t h;
        if (host_is_le()) {
            h = XXH3_64bits(t->data, bytes);
        } else {
            void *tmp = malloc(bytes ? bytes : 1);
            ok = ok && tmp;
            if (tmp)
                copy_le(tmp, t->data, (size_t)t->numel, tg__dtype_size(t->dtype));
            h = tmp ? XXH3_64bits(tmp, bytes) : 0;
            free(tmp);
        }
        char key[1100], hex[17];
        snprintf(key, sizeof key, TG_CKPT_SUM_PREFIX "%s", nm);
        snprintf(hex, sizeof hex, "%016llx", (unsigned long long)h);
        ok = ok && cJSON_AddStringToObject(meta, key, hex);
    }
    char *json = ok ? cJSON_PrintUnformatted(root) : NULL;
    cJSON_Delete(root);
    if (!json)
        return NULL;
    size_t jl = strlen(json), padded = (jl + 7) / 8 * 8;
    char *out = realloc(json, padded + 1);
    if (!out) {
        free(json);
        return NULL;
    }
    memset(out + jl, ' ', padded - jl);
    out[padded] = '\0';
    *len = padded;
    return out;
}

static bool write_all(FILE *f, const void *buf, size_t n) {
    return n == 0 || tg__checkpoint_io.write(buf, 1, n, f) == n;
}

/* Writes one tensor's data little-endian, in chunks (no copy of the whole tensor). */
static bool write_tensor(FILE *f, const tg_tensor *t) {
    size_t size = tg__dtype_size(t->dtype), n = (size_t)t->numel;
    if (host_is_le())
        return write_all(f, t->data, n * size);
    uint8_t chunk[4096];
    for (size_t i = 0; i < n;) {
        size_t k = n - i < sizeof chunk / size ? n - i : sizeof chunk / size;
        copy_le(chunk, (const uint8_t *)t->data + i * size, k, size);
        if (!write_all(f, chunk, k * size))
            return false;
        i += k;
    }
    return true;
}

/* fsync of the directory holding `path`, so the rename itself is durable. Best effort: some file
 * systems refuse to open or sync a directory, and the data is already safe by then. */
static void sync_dir(const char *path) {
    char dir[4096];
    const char *slash = strrchr(path, '/');
    if (!slash)
        snprintf(dir, sizeof dir, ".");
    else if (slash == path)
        snprintf(dir, sizeof dir, "/");
    else
        snprintf(dir, sizeof dir, "%.*s", (int)(slash - path), path);
    int fd = open(dir, O_RDONLY);
    if (fd >= 0) {
        tg__checkpoint_io.fsync(fd);
        close(fd);
    }
}

tg_status tg_checkpoint_save(const char *path, tg_tensor *const *params, int n,
                             const char *const *names) {
    static const char who[] = "tg_checkpoint_save";
    tg_status st = check_params(who, path, params, n, names);
    if (st != TG_OK)
        return st;
    for (int i = 0; i < n; i++)
        if (params[i]->dtype != TG_F32 && params[i]->dtype != TG_F64 && params[i]->dtype != TG_I32)
            return tg__set_last_error(TG_ERR_DTYPE, "%s: %s: parameter %d has an unknown dtype",
                                      who, path, i);
    size_t hlen = 0;
    char *header = build_header(params, n, names, &hlen);
    if (!header)
        return tg__set_last_error(TG_ERR_NOMEM, "%s: %s: out of memory for the header", who, path);

    size_t pl = strlen(path);
    char *tmp = malloc(pl + 16);
    if (!tmp) {
        free(header);
        return tg__set_last_error(TG_ERR_NOMEM, "%s: %s: out of memory", who, path);
    }
    /* Same directory as the target, so that rename() replaces it atomically. */
    memcpy(tmp, path, pl);
    memcpy(tmp + pl, ".tmp-XXXXXX", 12);
    int fd = mkstemp(tmp);
    if (fd < 0) {
        st = tg__set_last_error(TG_ERR_IO, "%s: %s: cannot create a temporary file %s: %s", who,
                                path, tmp, strerror(errno));
        free(tmp);
        free(header);
        return st;
    }
    fchmod(fd, 0644); /* mkstemp makes it 0600; a model file is usually shared read-only */
    FILE *f = fdopen(fd, "wb");
    const char *step = "write";
    bool ok = f != NULL;
    if (!f)
        close(fd);
    uint8_t len8[8];
    for (int i = 0; i < 8; i++)
        len8[i] = (uint8_t)((uint64_t)hlen >> (8 * i));
    ok = ok && write_all(f, len8, 8) && write_all(f, header, hlen);
    for (int i = 0; ok && i < n; i++)
        ok = write_tensor(f, params[i]);
    if (ok && fflush(f) != 0)
        ok = false;
    if (ok && tg__checkpoint_io.fsync(fileno(f)) != 0) {
        ok = false;
        step = "fsync";
    }
    int saved_errno = errno;
    if (f && fclose(f) != 0 && ok) {
        ok = false;
        saved_errno = errno;
        step = "close";
    }
    if (ok && tg__checkpoint_io.rename(tmp, path) != 0) {
        ok = false;
        saved_errno = errno;
        step = "rename to the final name";
    }
    if (!ok) {
        unlink(tmp);
        st = tg__set_last_error(TG_ERR_IO,
                                "%s: %s: %s of the temporary file %s failed: %s; the previous "
                                "file, if any, is unchanged",
                                who, path, step, tmp,
                                saved_errno ? strerror(saved_errno) : "short write");
    } else {
        sync_dir(path);
    }
    free(tmp);
    free(header);
    return st;
}

/* ---- Load ---- */

typedef struct entry {
    const char *name;
    tg_dtype dtype;
    int rank;
    int64_t shape[TG_MAX_RANK];
    uint64_t begin, end;
    int param; /* index of the model's parameter, -1 until matched */
} entry;

/* A JSON number that is a non-negative integer below 2^53 (exact in a double). */
static bool json_uint(const cJSON *j, uint64_t *v) {
    if (!cJSON_IsNumber(j))
        return false;
    double d = j->valuedouble;
    if (!(d >= 0 && d <= 9007199254740992.0) || d != (double)(uint64_t)d)
        return false;
    *v = (uint64_t)d;
    return true;
}

static const char *shape_str(const int64_t *shape, int rank, char *buf, size_t len) {
    tg_tensor t = {.rank = rank};
    memcpy(t.shape, shape, sizeof(int64_t) * (size_t)rank);
    return tg__shape_str(&t, buf, len);
}

/* Parses and checks one tensor entry. TG_OK or an error (message set). */
static tg_status parse_entry(const char *who, const char *file, const cJSON *j, entry *e,
                             uint64_t data_len) {
    const char *nm = j->string;
    e->name = nm;
    e->param = -1;
    if (!cJSON_IsObject(j))
        return tg__set_last_error(TG_ERR_FORMAT, "%s: %s: tensor \"%s\": entry is not an object",
                                  who, file, nm);
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(j, "dtype");
    const cJSON *sh = cJSON_GetObjectItemCaseSensitive(j, "shape");
    const cJSON *of = cJSON_GetObjectItemCaseSensitive(j, "data_offsets");
    if (!cJSON_IsString(dt) || !cJSON_IsArray(sh) || !cJSON_IsArray(of))
        return tg__set_last_error(TG_ERR_FORMAT,
                                  "%s: %s: tensor \"%s\": needs \"dtype\" (a string), \"shape\" "
                                  "and \"data_offsets\" (arrays)",
                                  who, file, nm);
    if (strcmp(dt->valuestring, "F32") == 0)
        e->dtype = TG_F32;
    else if (strcmp(dt->valuestring, "F64") == 0)
        e->dtype = TG_F64;
    else if (strcmp(dt->valuestring, "I32") == 0)
        e->dtype = TG_I32;
    else
        return tg__set_last_error(TG_ERR_FORMAT,
                                  "%s: %s: tensor \"%s\": unknown or unsupported dtype \"%.32s\" "
                                  "(tapegrad reads F32, F64, I32)",
                                  who, file, nm, dt->valuestring);
    int rank = cJSON_GetArraySize(sh);
    if (rank > TG_MAX_RANK)
        return tg__set_last_error(TG_ERR_FORMAT,
                                  "%s: %s: tensor \"%s\": rank %d is above tapegrad's %d", who,
                                  file, nm, rank, TG_MAX_RANK);
    e->rank = rank;
    uint64_t numel = 1, size = tg__dtype_size(e->dtype);
    int d = 0;
    for (const cJSON *s = sh->child; s; s = s->next, d++) {
        uint64_t v;
        if (!json_uint(s, &v))
            return tg__set_last_error(TG_ERR_FORMAT,
                                      "%s: %s: tensor \"%s\": shape[%d] is not a non-negative "
                                      "integer",
                                      who, file, nm, d);
        e->shape[d] = (int64_t)v;
        if (v > 0 && numel > (UINT64_MAX / 16) / v)
            return tg__set_last_error(TG_ERR_FORMAT, "%s: %s: tensor \"%s\": shape overflows", who,
                                      file, nm);
        numel *= v;
    }
    uint64_t be[2];
    if (cJSON_GetArraySize(of) != 2 || !json_uint(of->child, &be[0]) ||
        !json_uint(of->child->next, &be[1]))
        return tg__set_last_error(TG_ERR_FORMAT,
                                  "%s: %s: tensor \"%s\": data_offsets must be two non-negative "
                                  "integers [begin, end]",
                                  who, file, nm);
    e->begin = be[0];
    e->end = be[1];
    if (e->end < e->begin || e->end > data_len)
        return tg__set_last_error(TG_ERR_FORMAT,
                                  "%s: %s: tensor \"%s\": data_offsets [%llu,%llu] out of range: "
                                  "the data section holds %llu bytes",
                                  who, file, nm, (unsigned long long)e->begin,
                                  (unsigned long long)e->end, (unsigned long long)data_len);
    char s1[TG_SHAPE_STR_LEN];
    if (e->end - e->begin != numel * size)
        return tg__set_last_error(
            TG_ERR_FORMAT,
            "%s: %s: tensor \"%s\": data_offsets [%llu,%llu] span %llu "
            "bytes but %s %s needs %llu",
            who, file, nm, (unsigned long long)e->begin, (unsigned long long)e->end,
            (unsigned long long)(e->end - e->begin), dt->valuestring,
            shape_str(e->shape, rank, s1, sizeof s1), (unsigned long long)(numel * size));
    return TG_OK;
}

static int cmp_begin(const void *a, const void *b) {
    const entry *x = *(const entry *const *)a, *y = *(const entry *const *)b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}

/* Everything but the copy into the parameters. On success *entries (n_entries) describe the file,
 * matched to the parameters. */
static tg_status verify(const char *who, const char *file, const uint8_t *buf, size_t len,
                        tg_tensor *const *params, int n, const char *const *names, cJSON **root_out,
                        entry **entries_out, const uint8_t **data_out) {
    if (len < 8)
        return tg__set_last_error(TG_ERR_FORMAT,
                                  "%s: %s: truncated: %zu bytes, less than the 8-byte header "
                                  "length",
                                  who, file, len);
    uint64_t hlen = 0;
    for (int i = 0; i < 8; i++)
        hlen |= (uint64_t)buf[i] << (8 * i);
    if (hlen > len - 8)
        return tg__set_last_error(TG_ERR_FORMAT,
                                  "%s: %s: header length %llu (at offset 0) runs past the end of "
                                  "the file: %zu bytes follow it",
                                  who, file, (unsigned long long)hlen, len - 8);
    if (hlen > TG_CKPT_MAX_HEADER)
        return tg__set_last_error(TG_ERR_FORMAT,
                                  "%s: %s: header length %llu is above the limit of %u bytes", who,
                                  file, (unsigned long long)hlen, TG_CKPT_MAX_HEADER);
    const char *json = (const char *)buf + 8, *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(json, (size_t)hlen, &end, 0);
    if (!root) {
        size_t at = end && end >= json ? (size_t)(end - json) : 0;
        return tg__set_last_error(TG_ERR_FORMAT,
                                  "%s: %s: malformed JSON header near byte %zu of the file", who,
                                  file, 8 + at);
    }
    *root_out = root;
    /* After the object only the padding may follow: spaces (and, leniently, other whitespace). */
    for (const char *p = end; p < json + hlen; p++)
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r')
            return tg__set_last_error(TG_ERR_FORMAT,
                                      "%s: %s: malformed JSON header: unexpected data at byte %zu "
                                      "after the header object",
                                      who, file, 8 + (size_t)(p - json));
    if (!cJSON_IsObject(root))
        return tg__set_last_error(TG_ERR_FORMAT, "%s: %s: the JSON header is not an object", who,
                                  file);
    const uint8_t *data = buf + 8 + hlen;
    uint64_t data_len = len - 8 - hlen;
    *data_out = data;

    int count = 0;
    const cJSON *meta = NULL;
    for (const cJSON *j = root->child; j; j = j->next) {
        if (!j->string) /* cJSON sets a key on every member of an object */
            return tg__set_last_error(TG_ERR_FORMAT, "%s: %s: a header entry has no name", who,
                                      file);
        if (strcmp(j->string, "__metadata__") == 0) {
            if (meta)
                return tg__set_last_error(TG_ERR_FORMAT, "%s: %s: two \"__metadata__\" entries",
                                          who, file);
            meta = j;
        } else {
            count++;
        }
    }
    if (meta) {
        if (!cJSON_IsObject(meta))
            return tg__set_last_error(TG_ERR_FORMAT, "%s: %s: \"__metadata__\" is not an object",
                                      who, file);
        for (const cJSON *m = meta->child; m; m = m->next)
            if (!cJSON_IsString(m))
                return tg__set_last_error(TG_ERR_FORMAT,
                                          "%s: %s: \"__metadata__\" value \"%s\" is not a string",
                                          who, file, m->string);
    }
    entry *es = calloc((size_t)count + 1, sizeof *es);
    entry **sorted = calloc((size_t)count + 1, sizeof *sorted);
    *entries_out = es;
    if (!es || !sorted) {
        free(sorted);
        return tg__set_last_error(TG_ERR_NOMEM, "%s: %s: out of memory", who, file);
    }
    tg_status st = TG_OK;
    int k = 0;
    for (const cJSON *j = root->child; j && st == TG_OK; j = j->next) {
        if (j == meta)
            continue;
        st = parse_entry(who, file, j, &es[k], data_len);
        for (int i = 0; st == TG_OK && i < k; i++)
            if (strcmp(es[i].name, j->string) == 0)
                st = tg__set_last_error(TG_ERR_FORMAT, "%s: %s: tensor \"%s\" appears twice", who,
                                        file, j->string);
        sorted[k] = &es[k];
        k++;
    }
    if (st != TG_OK) {
        free(sorted);
        return st;
    }
    /* The tensors must tile the data section: no overlap, no gap, nothing after the last. */
    qsort(sorted, (size_t)count, sizeof *sorted, cmp_begin);
    uint64_t at = 0;
    for (int i = 0; i < count && st == TG_OK; i++) {
        const entry *e = sorted[i];
        if (e->begin < at)
            st = tg__set_last_error(TG_ERR_FORMAT,
                                    "%s: %s: tensors \"%s\" and \"%s\" overlap: [%llu,%llu] "
                                    "starts before %llu",
                                    who, file, sorted[i - 1]->name, e->name,
                                    (unsigned long long)e->begin, (unsigned long long)e->end,
                                    (unsigned long long)at);
        else if (e->begin > at)
            st = tg__set_last_error(TG_ERR_FORMAT,
                                    "%s: %s: data bytes [%llu,%llu] belong to no tensor (before "
                                    "\"%s\")",
                                    who, file, (unsigned long long)at, (unsigned long long)e->begin,
                                    e->name);
        at = e->end;
    }
    free(sorted);
    if (st != TG_OK)
        return st;
    if (at != data_len)
        return tg__set_last_error(TG_ERR_FORMAT,
                                  "%s: %s: data bytes [%llu,%llu] after the last tensor belong to "
                                  "no tensor",
                                  who, file, (unsigned long long)at, (unsigned long long)data_len);

    /* The model's tensors against the file's. */
    char s1[TG_SHAPE_STR_LEN], s2[TG_SHAPE_STR_LEN];
    for (int p = 0; p < n; p++) {
        const char *nm = names ? names[p] : tg_tensor_name(params[p]);
        const tg_tensor *t = params[p];
        entry *e = NULL;
        for (int i = 0; i < count && !e; i++)
            if (strcmp(es[i].name, nm) == 0)
                e = &es[i];
        if (!e)
            return tg__set_last_error(TG_ERR_FORMAT,
                                      "%s: %s: tensor \"%s\" of the model is missing from the file",
                                      who, file, nm);
        e->param = p;
        if (e->dtype != t->dtype || e->rank != t->rank ||
            memcmp(e->shape, t->shape, sizeof(int64_t) * (size_t)t->rank) != 0)
            return tg__set_last_error(TG_ERR_SHAPE,
                                      "%s: %s: tensor \"%s\" is %s %s in the file but %s %s in "
                                      "the model",
                                      who, file, nm, st_dtype(e->dtype),
                                      shape_str(e->shape, e->rank, s1, sizeof s1),
                                      st_dtype(t->dtype), tg__shape_str(t, s2, sizeof s2));
    }
    for (int i = 0; i < count; i++)
        if (es[i].param < 0)
            return tg__set_last_error(TG_ERR_FORMAT,
                                      "%s: %s: the file holds tensor \"%s\", which the model does "
                                      "not have",
                                      who, file, es[i].name);

    /* Checksums: required in tapegrad's files, checked when present in others (a file written by
     * the safetensors library has none). */
    const cJSON *fmt = meta ? cJSON_GetObjectItemCaseSensitive(meta, "format") : NULL;
    bool ours = cJSON_IsString(fmt) && strcmp(fmt->valuestring, TG_CKPT_FORMAT) == 0;
    for (int i = 0; i < count; i++) {
        const cJSON *sum = NULL;
        for (const cJSON *m = meta ? meta->child : NULL; m && !sum; m = m->next)
            if (strncmp(m->string, TG_CKPT_SUM_PREFIX, strlen(TG_CKPT_SUM_PREFIX)) == 0 &&
                strcmp(m->string + strlen(TG_CKPT_SUM_PREFIX), es[i].name) == 0)
                sum = m;
        if (!sum) {
            if (ours)
                return tg__set_last_error(TG_ERR_FORMAT,
                                          "%s: %s: tensor \"%s\" has no checksum (\"%s%s\" in "
                                          "__metadata__)",
                                          who, file, es[i].name, TG_CKPT_SUM_PREFIX, es[i].name);
            continue;
        }
        uint64_t h = XXH3_64bits(data + es[i].begin, (size_t)(es[i].end - es[i].begin));
        char hex[17];
        snprintf(hex, sizeof hex, "%016llx", (unsigned long long)h);
        if (strcmp(hex, sum->valuestring) != 0)
            return tg__set_last_error(TG_ERR_FORMAT,
                                      "%s: %s: checksum mismatch in tensor \"%s\": the file says "
                                      "%.20s, its data hashes to %s (XXH3-64)",
                                      who, file, es[i].name, sum->valuestring, hex);
    }
    for (const cJSON *m = meta ? meta->child : NULL; m; m = m->next) {
        if (strncmp(m->string, TG_CKPT_SUM_PREFIX, strlen(TG_CKPT_SUM_PREFIX)) != 0)
            continue;
        const char *tn = m->string + strlen(TG_CKPT_SUM_PREFIX);
        bool found = false;
        for (int i = 0; i < count && !found; i++)
            found = strcmp(es[i].name, tn) == 0;
        if (!found)
            return tg__set_last_error(TG_ERR_FORMAT,
                                      "%s: %s: __metadata__ has a checksum for tensor \"%s\", "
                                      "which the file does not hold",
                                      who, file, tn);
    }
    return TG_OK;
}

static tg_status load_buffer(const char *who, const char *file, const uint8_t *buf, size_t len,
                             tg_tensor *const *params, int n, const char *const *names) {
    tg_status st = check_params(who, file, params, n, names);
    if (st != TG_OK)
        return st;
    cJSON *root = NULL;
    entry *es = NULL;
    const uint8_t *data = NULL;
    st = verify(who, file, buf, len, params, n, names, &root, &es, &data);
    if (st == TG_OK) {
        /* Commit: nothing below can fail, so the model is never half-loaded. */
        for (int i = 0; es[i].name; i++) {
            tg_tensor *t = params[es[i].param];
            copy_le(t->data, data + es[i].begin, (size_t)t->numel, tg__dtype_size(t->dtype));
        }
    }
    free(es);
    cJSON_Delete(root);
    return st;
}

tg_status tg_checkpoint_load_mem(const void *bytes, size_t len, const char *name,
                                 tg_tensor *const *params, int n, const char *const *names) {
    if (!name)
        name = "(memory)";
    if (!bytes && len)
        return tg__set_last_error(TG_ERR_NULL, "tg_checkpoint_load_mem: %s: bytes is NULL", name);
    return load_buffer("tg_checkpoint_load_mem", name, bytes ? bytes : (const void *)"", len,
                       params, n, names);
}

tg_status tg_checkpoint_load(const char *path, tg_tensor *const *params, int n,
                             const char *const *names) {
    static const char who[] = "tg_checkpoint_load";
    if (!path)
        return tg__set_last_error(TG_ERR_NULL, "%s: path is NULL", who);
    FILE *f = fopen(path, "rb");
    if (!f)
        return tg__set_last_error(TG_ERR_IO, "%s: %s: cannot open: %s", who, path, strerror(errno));
    struct stat sb;
    if (fstat(fileno(f), &sb) != 0 || !S_ISREG(sb.st_mode)) {
        fclose(f);
        return tg__set_last_error(TG_ERR_IO, "%s: %s: not a regular file", who, path);
    }
    size_t len = (size_t)sb.st_size;
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf) {
        fclose(f);
        return tg__set_last_error(TG_ERR_NOMEM, "%s: %s: out of memory for %zu bytes", who, path,
                                  len);
    }
    size_t got = fread(buf, 1, len, f);
    bool err = ferror(f);
    fclose(f);
    tg_status st;
    if (err || got != len)
        st = tg__set_last_error(TG_ERR_IO, "%s: %s: read %zu of %zu bytes%s", who, path, got, len,
                                err ? ": read error" : " (file changed while reading?)");
    else
        st = load_buffer(who, path, buf, len, params, n, names);
    free(buf);
    return st;
}
