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
#include "train/state.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/file.h>
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

/* One tensor of a file: what to write (save) or where its bytes go (load). */
typedef struct ck_item {
    const char *name;
    tg_dtype dtype;
    int rank;
    const int64_t *shape;
    int64_t numel;
    void *data;
} ck_item;

/* A string entry of __metadata__ besides the format and the checksums. */
typedef struct ck_kv {
    const char *key;
    const char *value;
} ck_kv;

static cJSON *raw_int(uint64_t v) {
    char buf[32];
    snprintf(buf, sizeof buf, "%llu", (unsigned long long)v);
    return cJSON_CreateRaw(buf);
}

/* 1 if the n bytes at s are well-formed UTF-8 (RFC 3629: no overlong forms, no surrogates, nothing
 * above U+10FFFF). JSON text is UTF-8; cJSON would write other bytes raw, and Python's json (the
 * safetensors library) then cannot read the header. */
static bool utf8_valid(const char *str) {
    const uint8_t *s = (const uint8_t *)str;
    while (*s) {
        const uint8_t c = *s;
        int len = c < 0x80             ? 1
                  : (c & 0xE0) == 0xC0 ? 2
                  : (c & 0xF0) == 0xE0 ? 3
                  : (c & 0xF8) == 0xF0 ? 4
                                       : 0;
        if (!len)
            return false;
        uint32_t cp = len == 1 ? c : len == 2 ? c & 0x1Fu : len == 3 ? c & 0x0Fu : c & 0x07u;
        for (int i = 1; i < len; i++) {
            if ((s[i] & 0xC0) != 0x80)
                return false;
            cp = cp << 6 | (s[i] & 0x3Fu);
        }
        static const uint32_t min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
        if (cp < min_cp[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return false;
        s += len;
    }
    return true;
}

/* The JSON header, padded with spaces to a multiple of 8 bytes. Caller frees. NULL on no memory. */
static char *build_header(const ck_item *items, int n, const ck_kv *kvs, int n_kv, size_t *len) {
    cJSON *root = cJSON_CreateObject(), *meta = cJSON_CreateObject();
    bool ok = root && meta && cJSON_AddItemToObject(root, "__metadata__", meta);
    if (!ok)
        cJSON_Delete(meta);
    ok = ok && cJSON_AddStringToObject(meta, "format", TG_CKPT_FORMAT);
    for (int i = 0; ok && i < n_kv; i++)
        ok = cJSON_AddStringToObject(meta, kvs[i].key, kvs[i].value) != NULL;
    uint64_t off = 0;
    for (int i = 0; ok && i < n; i++) {
        const ck_item *t = &items[i];
        size_t bytes = (size_t)t->numel * tg__dtype_size(t->dtype);
        cJSON *e = cJSON_CreateObject(), *shape = cJSON_CreateArray(), *offs = cJSON_CreateArray();
        ok = e && shape && offs && cJSON_AddItemToObject(root, t->name, e);
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
        snprintf(key, sizeof key, TG_CKPT_SUM_PREFIX "%s", t->name);
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
static bool write_item(FILE *f, const ck_item *t) {
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

/* The directory part of path into dir ("." for a bare name). */
static void dir_of(const char *path, char *dir, size_t len) {
    const char *slash = strrchr(path, '/');
    if (!slash)
        snprintf(dir, len, ".");
    else if (slash == path)
        snprintf(dir, len, "/");
    else
        snprintf(dir, len, "%.*s", (int)(slash - path), path);
}

/* fsync of the directory holding `path`, so the rename itself is durable. Best effort: some file
 * systems refuse to open or sync a directory, and the data is already safe by then. */
static void sync_dir(const char *path) {
    char dir[4096];
    dir_of(path, dir, sizeof dir);
    int fd = open(dir, O_RDONLY);
    if (fd >= 0) {
        tg__checkpoint_io.fsync(fd);
        close(fd);
    }
}

/* Removes the temporary files that earlier saves to the same `path` left when they were killed
 * (kill -9, a crash, a power cut: no chance to unlink). A temporary is named
 * "<name>.tmp-<pid>-XXXXXX" and its writer holds an flock on it from creation to rename. A file
 * is removed only when both say its writer is gone:
 *   - its pid is not a live process (kill(pid, 0) fails with ESRCH), which covers the moment
 *     between mkstemp and flock, when a live writer does not hold the lock yet;
 *   - an flock(LOCK_EX | LOCK_NB) on it succeeds, so no process holds it: this protects a live
 *     writer whose pid means nothing here (another pid namespace sharing the folder) or was
 *     reused, and other threads of this very process saving the same path.
 * A lock alone would race with the mkstemp-to-flock window; a pid alone is wrong across pid
 * namespaces; a separate lock file would stay behind in the user's folder. What is not removed
 * (a dead writer's pid reused by a live process) is only left for a later save. Best effort:
 * errors are ignored, the save itself does not depend on it. */
static void remove_stale_temps(const char *path) {
    char dir[4096];
    dir_of(path, dir, sizeof dir);
    const char *slash = strrchr(path, '/');
    const char *base = slash ? slash + 1 : path;
    const size_t bl = strlen(base);
    DIR *d = opendir(dir);
    if (!d)
        return;
    const pid_t self = getpid();
    /* readdir on a stream of our own is thread-safe in glibc; readdir_r is deprecated. */
    // cppcheck-suppress readdirCalled
    for (struct dirent *de; (de = readdir(d)) != NULL;) {
        const char *nm = de->d_name;
        if (strncmp(nm, base, bl) != 0 || strncmp(nm + bl, ".tmp-", 5) != 0)
            continue;
        char *end = NULL;
        errno = 0;
        long pid = strtol(nm + bl + 5, &end, 10);
        if (errno || end == nm + bl + 5 || *end != '-' || strlen(end + 1) != 6 || pid <= 0)
            continue; /* not one of ours */
        if ((pid_t)pid != self && !(kill((pid_t)pid, 0) != 0 && errno == ESRCH))
            continue; /* its writer may be alive */
        char full[8192];
        if (snprintf(full, sizeof full, "%s/%s", dir, nm) >= (int)sizeof full)
            continue;
        int fd = open(full, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0)
            continue;
        struct stat sb;
        if (fstat(fd, &sb) == 0 && S_ISREG(sb.st_mode) && flock(fd, LOCK_EX | LOCK_NB) == 0)
            unlink(full);
        close(fd); /* releases the lock */
    }
    closedir(d);
}

/* Writes items as a safetensors file at path, atomically: a locked temporary file in the same
 * directory, flushed and fsync'ed, renamed over path, then the directory fsync'ed. */
static tg_status write_file(const char *who, const char *path, const ck_item *items, int n,
                            const ck_kv *kvs, int n_kv) {
    tg_status st = TG_OK;
    for (int i = 0; i < n; i++)
        if (!utf8_valid(items[i].name))
            return tg__set_last_error(TG_ERR_VALUE,
                                      "%s: %s: tensor %d: its name is not valid UTF-8, which a "
                                      "safetensors (JSON) header cannot hold",
                                      who, path, i);
    size_t hlen = 0;
    char *header = build_header(items, n, kvs, n_kv, &hlen);
    if (!header)
        return tg__set_last_error(TG_ERR_NOMEM, "%s: %s: out of memory for the header", who, path);

    remove_stale_temps(path);
    size_t pl = strlen(path);
    char *tmp = malloc(pl + 48);
    if (!tmp) {
        free(header);
        return tg__set_last_error(TG_ERR_NOMEM, "%s: %s: out of memory", who, path);
    }
    /* Same directory as the target, so that rename() replaces it atomically; the pid lets a later
     * save tell a dead writer's leftover from a live writer's file (remove_stale_temps). */
    snprintf(tmp, pl + 48, "%s.tmp-%ld-XXXXXX", path, (long)getpid());
    int fd = mkstemp(tmp);
    if (fd < 0) {
        st = tg__set_last_error(TG_ERR_IO, "%s: %s: cannot create a temporary file %s: %s", who,
                                path, tmp, strerror(errno));
        free(tmp);
        free(header);
        return st;
    }
    flock(fd, LOCK_EX); /* held until close: "a writer is here" (remove_stale_temps) */
    fchmod(fd, 0644);   /* mkstemp makes it 0600; a model file is usually shared read-only */
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
        ok = write_item(f, &items[i]);
    if (ok && fflush(f) != 0)
        ok = false;
    if (ok && tg__checkpoint_io.fsync(fileno(f)) != 0) {
        ok = false;
        step = "fsync";
    }
    int saved_errno = errno;
    /* Rename while the lock is held, so no cleaner can take the file for a dead writer's. */
    if (ok && tg__checkpoint_io.rename(tmp, path) != 0) {
        ok = false;
        saved_errno = errno;
        step = "rename to the final name";
    }
    if (!ok)
        unlink(tmp);
    if (f && fclose(f) != 0 && ok) {
        /* The data was fsync'ed and renamed; a close error cannot lose it now. */
        saved_errno = errno;
    }
    if (!ok) {
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

/* params as items (names from names[] or the tensors), after check_params. */
static void params_as_items(tg_tensor *const *params, int n, const char *const *names,
                            ck_item *items) {
    for (int i = 0; i < n; i++) {
        tg_tensor *t = params[i];
        items[i] = (ck_item){.name = names ? names[i] : t->name,
                             .dtype = t->dtype,
                             .rank = t->rank,
                             .shape = t->shape,
                             .numel = t->numel,
                             .data = t->data};
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
    ck_item *items = malloc(sizeof *items * (n > 0 ? (size_t)n : 1));
    if (!items)
        return tg__set_last_error(TG_ERR_NOMEM, "%s: %s: out of memory", who, path);
    params_as_items(params, n, names, items);
    st = write_file(who, path, items, n, NULL, 0);
    free(items);
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

/* A file being loaded: its parsed header, its entries matched to the items, its data section. */
typedef struct ck_file {
    cJSON *root;
    const cJSON *meta; /* __metadata__, or NULL */
    entry *es;         /* count entries (+1 zeroed) */
    int count;
    const uint8_t *data; /* the data section */
    uint8_t *owned;      /* data, when read from a file */
} ck_file;

static void ck_close(ck_file *f) {
    cJSON_Delete(f->root);
    free(f->es);
    free(f->owned);
    memset(f, 0, sizeof *f);
}

/* The header length from the first 8 bytes of a file of `len` bytes. */
static tg_status check_length(const char *who, const char *file, const uint8_t *buf, uint64_t len,
                              uint64_t *hlen_out) {
    if (len < 8)
        return tg__set_last_error(TG_ERR_FORMAT,
                                  "%s: %s: truncated: %llu bytes, less than the 8-byte header "
                                  "length",
                                  who, file, (unsigned long long)len);
    uint64_t hlen = 0;
    for (int i = 0; i < 8; i++)
        hlen |= (uint64_t)buf[i] << (8 * i);
    if (hlen > len - 8)
        return tg__set_last_error(TG_ERR_FORMAT,
                                  "%s: %s: header length %llu (at offset 0) runs past the end of "
                                  "the file: %llu bytes follow it",
                                  who, file, (unsigned long long)hlen,
                                  (unsigned long long)(len - 8));
    if (hlen > TG_CKPT_MAX_HEADER)
        return tg__set_last_error(TG_ERR_FORMAT,
                                  "%s: %s: header length %llu is above the limit of %u bytes", who,
                                  file, (unsigned long long)hlen, TG_CKPT_MAX_HEADER);
    *hlen_out = hlen;
    return TG_OK;
}

/* Everything the header says, checked against the n items (the model): JSON, entries, the tiling
 * of a data section of data_len bytes, names, dtypes and shapes. Reads no data. On TG_OK, f holds
 * the header and the entries matched to the items (es[i].param). */
static tg_status verify_header(const char *who, const char *file, const char *json, uint64_t hlen,
                               uint64_t data_len, const ck_item *items, int n, ck_file *f) {
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(json, (size_t)hlen, &end, 0);
    if (!root) {
        size_t at = end && end >= json ? (size_t)(end - json) : 0;
        return tg__set_last_error(TG_ERR_FORMAT,
                                  "%s: %s: malformed JSON header near byte %zu of the file", who,
                                  file, 8 + at);
    }
    f->root = root;
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
    f->es = es;
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
    count = k; /* the same number (meta is skipped once), in a form the analyzer can follow */
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
        const char *nm = items[p].name;
        const ck_item *t = &items[p];
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
            return tg__set_last_error(
                TG_ERR_SHAPE,
                "%s: %s: tensor \"%s\" is %s %s in the file but %s %s in "
                "the model",
                who, file, nm, st_dtype(e->dtype), shape_str(e->shape, e->rank, s1, sizeof s1),
                st_dtype(t->dtype), shape_str(t->shape, t->rank, s2, sizeof s2));
    }
    for (int i = 0; i < count; i++)
        if (es[i].param < 0)
            return tg__set_last_error(TG_ERR_FORMAT,
                                      "%s: %s: the file holds tensor \"%s\", which the model does "
                                      "not have",
                                      who, file, es[i].name);

    f->meta = meta;
    f->count = count;
    return TG_OK;
}

/* The checksums of the data section f->data, which verify_header accepted. */
static tg_status verify_sums(const char *who, const char *file, const ck_file *f) {
    const cJSON *meta = f->meta;
    const entry *es = f->es;
    const int count = f->count;
    const uint8_t *data = f->data;
    /* Checksums: required in tapegrad's files, checked when present in others (a file written by
     * the safetensors library has none). */
    const cJSON *fmt = meta ? cJSON_GetObjectItemCaseSensitive(meta, "format") : NULL;
    bool ours = fmt && cJSON_IsString(fmt) && strcmp(fmt->valuestring, TG_CKPT_FORMAT) == 0;
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

/* Copies the verified data into the items: nothing here can fail, so nothing is half-loaded. */
static void ck_commit(const ck_file *f, const ck_item *items) {
    /* f->es is set on every TG_OK path of the verifiers; the analyzer cannot see their statuses
     * (tg__set_last_error's return), hence the check. */
    for (int i = 0; f->es && f->es[i].name; i++) {
        const ck_item *t = &items[f->es[i].param];
        copy_le(t->data, f->data + f->es[i].begin, (size_t)t->numel, tg__dtype_size(t->dtype));
    }
}

/* Verifies a file in memory against the items; f holds it on TG_OK (data not owned). */
static tg_status ck_verify_mem(const char *who, const char *file, const uint8_t *buf, size_t len,
                               const ck_item *items, int n, ck_file *f) {
    uint64_t hlen = 0;
    tg_status st = check_length(who, file, buf, len, &hlen);
    if (st == TG_OK)
        st = verify_header(who, file, (const char *)buf + 8, hlen, len - 8 - hlen, items, n, f);
    if (st == TG_OK) {
        f->data = buf + 8 + hlen;
        st = verify_sums(who, file, f);
    }
    if (st != TG_OK)
        ck_close(f);
    return st;
}

/* Reads exactly n bytes at the current offset of fd. */
static tg_status read_exact(const char *who, const char *path, int fd, void *buf, size_t n,
                            uint64_t at, const char *what) {
    size_t got = 0;
    while (got < n) {
        ssize_t k = read(fd, (uint8_t *)buf + got, n - got);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return tg__set_last_error(
                TG_ERR_IO, "%s: %s: reading %s: got %zu of %zu bytes at offset %llu%s%s", who, path,
                what, got, n, (unsigned long long)at,
                k < 0 ? ": " : " (file changed while reading?)", k < 0 ? strerror(errno) : "");
        got += (size_t)k;
    }
    return TG_OK;
}

/* Verifies the file at path against the items, reading the 8-byte length, then the header, and
 * only once the header fits the model the data section (whose size then equals the model's): a
 * hostile or mistaken file costs at most its header in memory. f holds it on TG_OK. */
static tg_status ck_verify_path(const char *who, const char *path, const ck_item *items, int n,
                                ck_file *f) {
    /* O_NONBLOCK: opening a FIFO for reading would block until a writer comes. fstat refuses
     * anything but a regular file before a read could block. */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return tg__set_last_error(TG_ERR_IO, "%s: %s: cannot open: %s", who, path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return tg__set_last_error(TG_ERR_IO, "%s: %s: not a regular file", who, path);
    }
    int flags = fcntl(fd, F_GETFL);
    if (flags >= 0)
        fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
    const uint64_t len = (uint64_t)sb.st_size;
    uint8_t len8[8];
    uint64_t hlen = 0;
    char *json = NULL;
    tg_status st =
        read_exact(who, path, fd, len8, len < 8 ? (size_t)len : 8, 0, "the header length");
    if (st == TG_OK)
        st = check_length(who, path, len8, len, &hlen);
    if (st == TG_OK && !(json = malloc(hlen ? (size_t)hlen : 1)))
        st = tg__set_last_error(TG_ERR_NOMEM, "%s: %s: out of memory for a %llu-byte header", who,
                                path, (unsigned long long)hlen);
    if (st == TG_OK)
        st = read_exact(who, path, fd, json, (size_t)hlen, 8, "the header");
    if (st == TG_OK)
        st = verify_header(who, path, json, hlen, len - 8 - hlen, items, n, f);
    free(json);
    const uint64_t data_len = len - 8 - hlen;
    if (st == TG_OK && data_len > SIZE_MAX - 1)
        st = tg__set_last_error(TG_ERR_NOMEM, "%s: %s: %llu bytes of data do not fit in memory",
                                who, path, (unsigned long long)data_len);
    if (st == TG_OK && !(f->owned = malloc(data_len ? (size_t)data_len : 1)))
        st = tg__set_last_error(TG_ERR_NOMEM, "%s: %s: out of memory for %llu bytes of data", who,
                                path, (unsigned long long)data_len);
    if (st == TG_OK)
        st = read_exact(who, path, fd, f->owned, (size_t)data_len, 8 + hlen, "the data");
    close(fd);
    if (st == TG_OK) {
        f->data = f->owned;
        st = verify_sums(who, path, f);
    }
    if (st != TG_OK)
        ck_close(f);
    return st;
}

/* The items of a plain checkpoint, after check_params. NULL (message set) on no memory. */
static ck_item *load_items(const char *who, const char *file, tg_tensor *const *params, int n,
                           const char *const *names) {
    ck_item *items = malloc(sizeof *items * (n > 0 ? (size_t)n : 1));
    if (!items)
        tg__set_last_error(TG_ERR_NOMEM, "%s: %s: out of memory", who, file);
    else
        params_as_items(params, n, names, items);
    return items;
}

tg_status tg_checkpoint_load_mem(const void *bytes, size_t len, const char *name,
                                 tg_tensor *const *params, int n, const char *const *names) {
    static const char who[] = "tg_checkpoint_load_mem";
    if (!name)
        name = "(memory)";
    if (!bytes && len)
        return tg__set_last_error(TG_ERR_NULL, "%s: %s: bytes is NULL", who, name);
    tg_status st = check_params(who, name, params, n, names);
    if (st != TG_OK)
        return st;
    ck_item *items = load_items(who, name, params, n, names);
    if (!items)
        return TG_ERR_NOMEM;
    ck_file f = {0};
    st = ck_verify_mem(who, name, bytes ? bytes : (const void *)"", len, items, n, &f);
    if (st == TG_OK)
        ck_commit(&f, items);
    ck_close(&f);
    free(items);
    return st;
}

tg_status tg_checkpoint_load(const char *path, tg_tensor *const *params, int n,
                             const char *const *names) {
    static const char who[] = "tg_checkpoint_load";
    if (!path)
        return tg__set_last_error(TG_ERR_NULL, "%s: path is NULL", who);
    tg_status st = check_params(who, path, params, n, names);
    if (st != TG_OK)
        return st;
    ck_item *items = load_items(who, path, params, n, names);
    if (!items)
        return TG_ERR_NOMEM;
    ck_file f = {0};
    st = ck_verify_path(who, path, items, n, &f);
    if (st == TG_OK)
        ck_commit(&f, items);
    ck_close(&f);
    free(items);
    return st;
}

/* ---- Training state ---- */

#define TG_TS_MAX_RNGS 1024

static const char *const optim_kind_names[] = {"sgd", "momentum", "nesterov", "adam"};

/* Everything a state file holds besides the parameters' own tensors, as built for a save or
 * expected by a load. */
typedef struct ts_plan {
    ck_item *items; /* params, then the optimizer's buffers */
    int n_items;
    char **names; /* the buffers' names, owned */
    int n_names;
    ck_kv *kvs; /* the state values as metadata, owned strings in `store` */
    int n_kv;
    char *store; /* the keys and values, back to back */
} ts_plan;

static void plan_free(ts_plan *p) {
    for (int i = 0; i < p->n_names; i++)
        free(p->names[i]);
    free(p->names);
    free(p->items);
    free(p->kvs);
    free(p->store);
}

static void rng_hex(const tg_rng *r, char out[65]) {
    snprintf(out, 65, "%016llx%016llx%016llx%016llx", (unsigned long long)r->s[0],
             (unsigned long long)r->s[1], (unsigned long long)r->s[2], (unsigned long long)r->s[3]);
}

/* The hash over the state's keys and values, in their order: the header's values have no
 * checksum of their own (the tensors' cover their data only). */
static void state_hash(const ck_kv *kvs, int n, char hex[17]) {
    XXH3_state_t *h = XXH3_createState();
    uint64_t v = 0;
    if (h && XXH3_64bits_reset(h) == XXH_OK) {
        for (int i = 0; i < n; i++) {
            XXH3_64bits_update(h, kvs[i].key, strlen(kvs[i].key) + 1);
            XXH3_64bits_update(h, kvs[i].value, strlen(kvs[i].value) + 1);
        }
        v = XXH3_64bits_digest(h);
    }
    XXH3_freeState(h);
    snprintf(hex, 17, "%016llx", (unsigned long long)v);
}

/* Validates a tg_train_state and lays out its tensors and (for a save, with_values) the values of
 * its scalars. The keys are the same for a load; their values are then the caller's current ones
 * and only their presence in the file matters. */
static tg_status plan_state(const char *who, const char *path, const tg_train_state *s,
                            ts_plan *p) {
    memset(p, 0, sizeof *p);
    if (!s)
        return tg__set_last_error(TG_ERR_NULL, "%s: %s: state is NULL", who, path ? path : "?");
    tg_status st = check_params(who, path, s->params, s->n_params, s->names);
    if (st != TG_OK)
        return st;
    if (s->n_rngs < 0 || s->n_rngs > TG_TS_MAX_RNGS || (s->n_rngs > 0 && !s->rngs))
        return tg__set_last_error(TG_ERR_VALUE, "%s: %s: %d generators%s (0..%d)", who, path,
                                  s->n_rngs, s->n_rngs > 0 && !s->rngs ? " but rngs is NULL" : "",
                                  TG_TS_MAX_RNGS);
    for (int i = 0; i < s->n_rngs; i++)
        if (!s->rngs[i])
            return tg__set_last_error(TG_ERR_NULL, "%s: %s: rngs[%d] is NULL", who, path, i);
    const int n_opt = s->optim ? tg__optim_n_params(s->optim) : 0;
    const int n_buf = s->optim ? tg__optim_n_buffers(s->optim) : 0;
    p->n_items = s->n_params + n_opt * n_buf;
    p->items = malloc(sizeof *p->items * (size_t)(p->n_items ? p->n_items : 1));
    p->names = calloc((size_t)(n_opt * n_buf) + 1, sizeof *p->names);
    /* Keys: the marker, optim.kind, optim.steps, rng.count, rng.<i>, 4 data keys, the hash. */
    const int max_kv = 4 + s->n_rngs + 4 + 1;
    p->kvs = calloc((size_t)max_kv, sizeof *p->kvs);
    p->store = malloc((size_t)max_kv * 128);
    if (!p->items || !p->names || !p->kvs || !p->store)
        return tg__set_last_error(TG_ERR_NOMEM, "%s: %s: out of memory", who, path);
    params_as_items(s->params, s->n_params, s->names, p->items);
    int k = s->n_params;
    for (int b = 0; b < n_buf; b++)
        for (int i = 0; i < n_opt; i++) {
            tg_tensor *t = tg__optim_param(s->optim, i);
            int j = 0;
            while (j < s->n_params && s->params[j] != t)
                j++;
            if (j >= s->n_params)
                return tg__set_last_error(TG_ERR_VALUE,
                                          "%s: %s: the optimizer's parameter %d ('%s') is not "
                                          "among the %d params; its state would be lost",
                                          who, path, i, t->name, s->n_params);
            const char *nm = p->items[j].name;
            char *full = malloc(strlen(nm) + 16);
            if (!full)
                return tg__set_last_error(TG_ERR_NOMEM, "%s: %s: out of memory", who, path);
            sprintf(full, "__optim__.%c.%s", b ? 'v' : 'm', nm);
            p->names[p->n_names++] = full;
            p->items[k++] = (ck_item){.name = full,
                                      .dtype = t->dtype,
                                      .rank = t->rank,
                                      .shape = t->shape,
                                      .numel = t->numel,
                                      .data = tg__optim_buffer(s->optim, i, b)};
        }
    for (int i = 0; i < p->n_items; i++)
        for (int j = 0; j < s->n_params; j++)
            if (i >= s->n_params && strcmp(p->items[i].name, p->items[j].name) == 0)
                return tg__set_last_error(TG_ERR_VALUE,
                                          "%s: %s: parameter %d is named \"%s\", the name of an "
                                          "optimizer state tensor",
                                          who, path, j, p->items[j].name);
    /* The scalars, as strings: key at store[128 i], value at store[128 i + 32]. */
    int n = 0;
#define TS_KV(KEY, ...)                                                                            \
    do {                                                                                           \
        char *kk = p->store + 128 * (size_t)n, *vv = kk + 32;                                      \
        snprintf(kk, 32, "%s", KEY);                                                               \
        snprintf(vv, 96, __VA_ARGS__);                                                             \
        p->kvs[n++] = (ck_kv){kk, vv};                                                             \
    } while (0)
    TS_KV("tapegrad.train_state", "1");
    TS_KV("optim.kind", "%s", s->optim ? optim_kind_names[tg__optim_kind(s->optim)] : "none");
    TS_KV("optim.steps", "%lld", (long long)(s->optim ? tg_optim_steps(s->optim) : 0));
    TS_KV("rng.count", "%d", s->n_rngs);
    for (int i = 0; i < s->n_rngs; i++) {
        char key[32], hex[65];
        snprintf(key, sizeof key, "rng.%d", i);
        rng_hex(s->rngs[i], hex);
        TS_KV(key, "%s", hex);
    }
    if (s->data) {
        char hex[65];
        rng_hex(&s->data->rng, hex);
        TS_KV("data.seed", "%llu", (unsigned long long)s->data->seed);
        TS_KV("data.epoch", "%lld", (long long)s->data->epoch);
        TS_KV("data.cursor", "%lld", (long long)s->data->cursor);
        TS_KV("data.rng", "%s", hex);
    }
#undef TS_KV
    p->n_kv = n;
    return TG_OK;
}

tg_status tg_train_state_save(const char *path, const tg_train_state *state) {
    static const char who[] = "tg_train_state_save";
    ts_plan p;
    tg_status st = plan_state(who, path, state, &p);
    if (st == TG_OK) {
        char hex[17];
        state_hash(p.kvs, p.n_kv, hex);
        char *kk = p.store + 128 * (size_t)p.n_kv, *vv = kk + 32;
        snprintf(kk, 32, "state.xxh3_64");
        snprintf(vv, 96, "%s", hex);
        p.kvs[p.n_kv] = (ck_kv){kk, vv};
        st = write_file(who, path, p.items, p.n_items, p.kvs, p.n_kv + 1);
    }
    plan_free(&p);
    return st;
}

/* A metadata string of the file, or NULL after setting the error. */
static const char *meta_str(const char *who, const char *path, const cJSON *meta, const char *key) {
    const cJSON *m = meta ? cJSON_GetObjectItemCaseSensitive(meta, key) : NULL;
    if (!m || !cJSON_IsString(m)) {
        tg__set_last_error(TG_ERR_FORMAT, "%s: %s: __metadata__ has no \"%s\"; %s", who, path, key,
                           meta && cJSON_GetObjectItemCaseSensitive(meta, "tapegrad.train_state")
                               ? "the run saved differs from this one (another optimizer, "
                                 "generators or data position)"
                               : "not a training state (tg_train_state_save) file");
        return NULL;
    }
    return m->valuestring;
}

static bool parse_i64(const char *v, int64_t *out) {
    char *end = NULL;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (errno || end == v || *end || x < 0)
        return false;
    *out = x;
    return true;
}

static bool parse_rng(const char *v, tg_rng *r) {
    if (strlen(v) != 64)
        return false;
    for (int i = 0; i < 4; i++) {
        char word[17];
        memcpy(word, v + 16 * (size_t)i, 16);
        word[16] = '\0';
        char *end = NULL;
        errno = 0;
        r->s[i] = strtoull(word, &end, 16);
        if (errno || *end || word[0] == '-' || word[0] == '+' || word[0] == ' ')
            return false;
    }
    return true;
}

tg_status tg_train_state_load(const char *path, const tg_train_state *state) {
    static const char who[] = "tg_train_state_load";
    if (!path)
        return tg__set_last_error(TG_ERR_NULL, "%s: path is NULL", who);
    ts_plan p;
    ck_file f = {0};
    tg_status st = plan_state(who, path, state, &p);
    if (st == TG_OK)
        st = ck_verify_path(who, path, p.items, p.n_items, &f);
    /* The scalars: the same keys as this run's plan, each well-formed, their hash matching. */
    int64_t steps = 0;
    tg_rng *rngs = NULL;
    tg_data_position data = {0};
    ck_kv *file_kvs = NULL;
    if (st == TG_OK) {
        rngs = malloc(sizeof *rngs * (size_t)(state->n_rngs + 1));
        file_kvs = malloc(sizeof *file_kvs * (size_t)(p.n_kv + 1));
        if (!rngs || !file_kvs)
            st = tg__set_last_error(TG_ERR_NOMEM, "%s: %s: out of memory", who, path);
    }
    for (int i = 0; st == TG_OK && i < p.n_kv; i++) {
        const char *key = p.kvs[i].key, *v = meta_str(who, path, f.meta, key);
        if (!v) {
            st = TG_ERR_FORMAT;
            break;
        }
        file_kvs[i] = (ck_kv){key, v};
        bool ok = true, same = true;
        int64_t x = 0;
        if (!strcmp(key, "tapegrad.train_state") || !strcmp(key, "optim.kind") ||
            !strcmp(key, "rng.count"))
            same = strcmp(v, p.kvs[i].value) == 0;
        else if (!strcmp(key, "optim.steps"))
            ok = parse_i64(v, &steps);
        else if (!strncmp(key, "rng.", 4))
            ok = parse_rng(v, &rngs[strtol(key + 4, NULL, 10)]); /* "rng.<i>", our own key */
        else if (!strcmp(key, "data.rng"))
            ok = parse_rng(v, &data.rng);
        else if (!strcmp(key, "data.seed")) {
            char *end = NULL;
            errno = 0;
            data.seed = strtoull(v, &end, 10);
            ok = !errno && end != v && !*end && v[0] != '-';
        } else if (!strcmp(key, "data.epoch"))
            ok = parse_i64(v, &x) && (data.epoch = x, true);
        else if (!strcmp(key, "data.cursor"))
            ok = parse_i64(v, &x) && (data.cursor = x, true);
        if (!ok)
            st = tg__set_last_error(TG_ERR_FORMAT,
                                    "%s: %s: __metadata__ \"%s\" is malformed: \"%.70s\"", who,
                                    path, key, v);
        else if (!same)
            st = tg__set_last_error(TG_ERR_VALUE,
                                    "%s: %s: the file's \"%s\" is \"%.40s\", this run's is \"%s\"",
                                    who, path, key, v, p.kvs[i].value);
    }
    if (st == TG_OK) {
        /* Keys this run does not have mean another run's layout (a data position saved, none
         * given now; more generators). */
        const cJSON *extra = NULL;
        for (const cJSON *m = f.meta ? f.meta->child : NULL; m && !extra; m = m->next) {
            const bool ours = !strncmp(m->string, "rng.", 4) || !strncmp(m->string, "data.", 5);
            bool known = false;
            for (int i = 0; i < p.n_kv && !known; i++)
                known = !strcmp(m->string, p.kvs[i].key);
            if (ours && !known)
                extra = m;
        }
        if (extra)
            st = tg__set_last_error(TG_ERR_VALUE,
                                    "%s: %s: the file holds \"%s\", which this run's state does "
                                    "not (a data position or generator more)",
                                    who, path, extra->string);
    }
    if (st == TG_OK) {
        char hex[17];
        state_hash(file_kvs, p.n_kv, hex);
        const char *sum = meta_str(who, path, f.meta, "state.xxh3_64");
        if (!sum)
            st = TG_ERR_FORMAT;
        else if (strcmp(sum, hex) != 0)
            st = tg__set_last_error(TG_ERR_FORMAT,
                                    "%s: %s: checksum mismatch in the state values (optim.*, "
                                    "rng.*, data.*): the file says %.20s, they hash to %s",
                                    who, path, sum, hex);
    }
    if (st == TG_OK) {
        /* Commit: nothing below can fail. */
        ck_commit(&f, p.items);
        if (state->optim)
            tg__optim_set_steps(state->optim, steps);
        for (int i = 0; i < state->n_rngs; i++)
            *state->rngs[i] = rngs[i];
        if (state->data)
            *state->data = data;
    }
    free(rngs);
    free(file_kvs);
    ck_close(&f);
    plan_free(&p);
    return st;
}
