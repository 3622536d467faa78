/* idx.c -- IDX files (the MNIST / Fashion-MNIST format), plain or gzip'ed, kept as bytes.
 *
 * The format (big-endian): bytes 0,1 are 0; byte 2 is the element type (0x08 = unsigned byte, the
 * only one MNIST-style data sets use); byte 3 is the number of dimensions d; then d 32-bit sizes;
 * then the elements, row-major, and nothing after them. Everything is checked against that: a file
 * is accepted only if its length is exactly 4 + 4d + product(sizes) bytes.
 *
 * Images stay uint8 in memory (Fashion-MNIST: 55 MB instead of 220 as float); a batch is
 * converted into a caller-provided tensor by tg_idx_dataset_batch, which allocates nothing. */
#include "core/engine.h"
#include "kernels/parallel.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

struct tg_idx {
    int rank;
    int64_t shape[TG_MAX_RANK];
    int64_t numel;
    uint8_t *data; /* numel bytes (at least 1 allocated) */
};

struct tg_idx_dataset {
    tg_idx *images; /* [N, ...] */
    tg_idx *labels; /* [N] */
    int64_t n, features;
    int classes; /* 1 + the largest label */
};

/* ---- A byte source: a file (plain or gzip'ed) or a memory buffer ----
 *
 * Files are read with read(2) through a buffer and, when they start with the gzip magic, inflated
 * with zlib's inflate() directly rather than gzread: gzread stops at the end of a gzip member and
 * silently ignores whatever follows it, so a file with bytes after its gzip stream would load.
 * Here the end of each member is seen, and what follows must be another gzip member (as `cat
 * a.gz b.gz` makes, which gzip itself accepts) or nothing. */

#define TG_IDX_INBUF (1u << 17)

typedef struct reader {
    int fd;             /* file source, or -1 */
    bool gz;            /* the file is gzip'ed */
    bool z_ready;       /* inflateInit2 succeeded (inflateEnd needed) */
    bool in_eof;        /* read(2) returned 0 */
    bool z_done;        /* the last gzip member ended and nothing follows */
    z_stream z;         /* gzip state; z.next_in / z.avail_in index `in` for plain files too */
    uint8_t *in;        /* TG_IDX_INBUF bytes */
    uint64_t file_pos;  /* bytes read from the file so far */
    const uint8_t *mem; /* memory source */
    size_t mem_len;
    size_t pos;       /* bytes delivered so far = offset in the (decompressed) IDX stream */
    const char *name; /* for messages */
    const char *who;  /* the public function, for messages */
} reader;

/* Refills r->in (after moving what is left of it to the front). -1 after setting the error. */
static int fill(reader *r) {
    if (r->in_eof)
        return 0;
    size_t keep = r->z.avail_in;
    if (keep && r->z.next_in != r->in)
        memmove(r->in, r->z.next_in, keep);
    ssize_t k;
    do
        k = read(r->fd, r->in + keep, TG_IDX_INBUF - keep);
    while (k < 0 && errno == EINTR);
    if (k < 0) {
        tg__set_last_error(TG_ERR_IO, "%s: %s: read error at offset %llu of the file: %s", r->who,
                           r->name, (unsigned long long)r->file_pos, strerror(errno));
        return -1;
    }
    if (k == 0)
        r->in_eof = true;
    r->file_pos += (uint64_t)k;
    r->z.next_in = r->in;
    r->z.avail_in = (uInt)(keep + (size_t)k);
    return 0;
}

/* The end of a gzip member: accepts nothing more, or another member (restarting inflate).
 * -1 after setting the error for any other byte. */
static int member_end(reader *r) {
    while (r->z.avail_in < 2 && !r->in_eof)
        if (fill(r) < 0)
            return -1;
    if (r->z.avail_in == 0) {
        r->z_done = true;
        return 0;
    }
    if (r->z.avail_in >= 2 && r->z.next_in[0] == 0x1f && r->z.next_in[1] == 0x8b)
        return inflateReset(&r->z) == Z_OK ? 0 : -1;
    const uint64_t at = r->file_pos - r->z.avail_in;
    tg__set_last_error(TG_ERR_FORMAT,
                       "%s: %s: trailing data: %s after the end of the gzip stream at offset %llu "
                       "of the file",
                       r->who, r->name,
                       r->z.avail_in == 1 ? "a byte that is not gzip" : "bytes that are not gzip",
                       (unsigned long long)at);
    return -1;
}

/* Reads up to n bytes of the IDX stream into buf. Returns the count (short only at the end of the
 * data), or -1 after setting the error (an IO error, a corrupt or truncated gzip stream, bytes
 * after it). */
static int64_t rd(reader *r, void *buf, size_t n) {
    if (r->fd < 0) {
        size_t left = r->mem_len - r->pos;
        size_t k = n < left ? n : left;
        if (k)
            memcpy(buf, r->mem + r->pos, k);
        r->pos += k;
        return (int64_t)k;
    }
    uint8_t *out = buf;
    size_t got = 0;
    while (got < n) {
        if (r->z.avail_in == 0 && !r->in_eof && fill(r) < 0)
            return -1;
        if (!r->gz) {
            if (r->z.avail_in == 0)
                break; /* end of the file */
            size_t k = n - got < r->z.avail_in ? n - got : r->z.avail_in;
            memcpy(out + got, r->z.next_in, k);
            r->z.next_in += k;
            r->z.avail_in -= (uInt)k;
            got += k;
            continue;
        }
        if (r->z_done)
            break;
        const size_t want = n - got < (1u << 30) ? n - got : (1u << 30);
        r->z.next_out = out + got;
        r->z.avail_out = (uInt)want;
        const int ret = inflate(&r->z, Z_NO_FLUSH);
        got += want - r->z.avail_out;
        if (ret == Z_STREAM_END) {
            if (member_end(r) < 0) {
                r->pos += got;
                return -1;
            }
            continue;
        }
        if (ret == Z_OK)
            continue;
        if (ret == Z_BUF_ERROR && !(r->in_eof && r->z.avail_in == 0))
            continue; /* needs more input, which the next round reads */
        r->pos += got;
        tg__set_last_error(TG_ERR_IO, "%s: %s: %s at offset %zu of the decompressed data", r->who,
                           r->name,
                           ret == Z_BUF_ERROR   ? "gzip stream is truncated"
                           : ret == Z_MEM_ERROR ? "out of memory in zlib"
                           : r->z.msg           ? r->z.msg
                                                : "corrupt gzip stream",
                           r->pos);
        return -1;
    }
    r->pos += got;
    return (int64_t)got;
}

static const char *idx_type_name(unsigned code) {
    switch (code) {
    case 0x08: return "unsigned byte";
    case 0x09: return "signed byte";
    case 0x0B: return "int16";
    case 0x0C: return "int32";
    case 0x0D: return "float32";
    case 0x0E: return "float64";
    }
    return "not an IDX type";
}

static uint32_t be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

/* Parses a whole IDX stream from r. NULL on error (message set). */
static tg_idx *parse(reader *r) {
    const char *who = r->who, *name = r->name;
    uint8_t head[4 + 4 * TG_MAX_RANK];
    int64_t k = rd(r, head, 4);
    if (k < 0)
        return NULL;
    if (k < 4) {
        tg__set_last_error(TG_ERR_FORMAT,
                           "%s: %s: truncated: the 4-byte magic number needs 4 bytes, found %lld",
                           who, name, (long long)k);
        return NULL;
    }
    if (head[0] != 0 || head[1] != 0) {
        tg__set_last_error(TG_ERR_FORMAT,
                           "%s: %s: not an IDX file: magic number 0x%02x%02x%02x%02x at offset 0 "
                           "should start with two zero bytes (e.g. 0x00000803)",
                           who, name, head[0], head[1], head[2], head[3]);
        return NULL;
    }
    if (head[2] != 0x08) {
        tg__set_last_error(TG_ERR_FORMAT,
                           "%s: %s: element type 0x%02x (%s) at offset 2 is not supported; "
                           "expected 0x08 (unsigned byte)",
                           who, name, head[2], idx_type_name(head[2]));
        return NULL;
    }
    int rank = head[3];
    if (rank < 1 || rank > TG_MAX_RANK) {
        tg__set_last_error(TG_ERR_FORMAT,
                           "%s: %s: number of dimensions %d at offset 3 is outside 1..%d", who,
                           name, rank, TG_MAX_RANK);
        return NULL;
    }
    size_t header = 4 + 4 * (size_t)rank;
    k = rd(r, head + 4, 4 * (size_t)rank);
    if (k < 0)
        return NULL;
    if (k < 4 * (int64_t)rank) {
        tg__set_last_error(TG_ERR_FORMAT,
                           "%s: %s: truncated header: %d dimensions need %zu header bytes, the "
                           "file has %zu",
                           who, name, rank, header, (size_t)(4 + k));
        return NULL;
    }
    tg_idx *idx = calloc(1, sizeof *idx);
    if (!idx) {
        tg__set_last_error(TG_ERR_NOMEM, "%s: %s: out of memory", who, name);
        return NULL;
    }
    idx->rank = rank;
    idx->numel = 1;
    for (int i = 0; i < rank; i++) {
        idx->shape[i] = be32(head + 4 + 4 * (size_t)i);
        /* Sizes are < 2^32 each; cap the product well below what size_t and int64_t hold. */
        if (idx->shape[i] > 0 && idx->numel > (INT64_MAX / 4) / idx->shape[i]) {
            tg__set_last_error(TG_ERR_FORMAT,
                               "%s: %s: sizes overflow: the product of the dimensions up to "
                               "dimension %d (size %lld at offset %d) exceeds 2^61 bytes",
                               who, name, i, (long long)idx->shape[i], 4 + 4 * i);
            free(idx);
            return NULL;
        }
        idx->numel *= idx->shape[i];
    }
    if ((uint64_t)idx->numel > SIZE_MAX - 64) {
        tg__set_last_error(TG_ERR_FORMAT, "%s: %s: %lld elements do not fit in memory", who, name,
                           (long long)idx->numel);
        free(idx);
        return NULL;
    }
    /* The data. From memory, the length is known: check it before allocating. From a file, the
     * declared size may be a lie (a truncated or hostile file), so grow the buffer as data actually
     * arrives instead of trusting it with one big allocation. */
    size_t want = (size_t)idx->numel;
    if (r->fd < 0 && r->mem_len - r->pos < want) {
        tg__set_last_error(TG_ERR_FORMAT,
                           "%s: %s: truncated: expected %zu bytes of data after the %zu-byte "
                           "header (file length %zu), found %zu",
                           who, name, want, header, header + want, r->mem_len - r->pos);
        free(idx);
        return NULL;
    }
    size_t cap = want < (1u << 20) || r->fd < 0 ? want : (1u << 20), have = 0;
    idx->data = malloc(cap ? cap : 1);
    while (idx->data) {
        k = rd(r, idx->data + have, cap - have);
        if (k < 0) {
            free(idx->data);
            free(idx);
            return NULL;
        }
        have += (size_t)k;
        if (have < cap || cap == want)
            break;
        size_t ncap = cap > want / 2 ? want : 2 * cap;
        uint8_t *p = realloc(idx->data, ncap);
        if (!p) {
            free(idx->data);
            idx->data = NULL;
            break;
        }
        idx->data = p;
        cap = ncap;
    }
    if (!idx->data) {
        tg__set_last_error(TG_ERR_NOMEM, "%s: %s: out of memory for %zu bytes of data", who, name,
                           want);
        free(idx);
        return NULL;
    }
    if (have < want) {
        tg__set_last_error(TG_ERR_FORMAT,
                           "%s: %s: truncated: expected %zu bytes of data after the %zu-byte "
                           "header (file length %zu), found %zu",
                           who, name, want, header, header + want, have);
        tg_idx_free(idx);
        return NULL;
    }
    uint8_t extra;
    k = rd(r, &extra, 1);
    if (k != 0) {
        if (k > 0) {
            size_t total = r->fd >= 0 ? 0 : r->mem_len;
            if (total)
                tg__set_last_error(TG_ERR_FORMAT,
                                   "%s: %s: trailing data: the header declares %zu bytes in all, "
                                   "the file has %zu (extra bytes from offset %zu)",
                                   who, name, header + want, total, header + want);
            else
                tg__set_last_error(TG_ERR_FORMAT,
                                   "%s: %s: trailing data: the header declares %zu bytes in all, "
                                   "the file has more (extra bytes from offset %zu)",
                                   who, name, header + want, header + want);
        }
        tg_idx_free(idx);
        return NULL;
    }
    return idx;
}

tg_idx *tg_idx_load_mem(const void *bytes, size_t len, const char *name) {
    if (!name)
        name = "(memory)";
    if (!bytes && len) {
        tg__set_last_error(TG_ERR_NULL, "tg_idx_load_mem: %s: bytes is NULL", name);
        return NULL;
    }
    reader r = {.fd = -1, .mem = bytes, .mem_len = len, .name = name, .who = "tg_idx_load_mem"};
    return parse(&r);
}

tg_idx *tg_idx_load(const char *path) {
    static const char who[] = "tg_idx_load";
    if (!path) {
        tg__set_last_error(TG_ERR_NULL, "tg_idx_load: path is NULL");
        return NULL;
    }
    /* O_NONBLOCK: opening a FIFO for reading would block until a writer comes; fstat first, and
     * refuse anything but a regular file (a FIFO, a device, a directory) before any read. */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        tg__set_last_error(TG_ERR_IO, "%s: %s: cannot open: %s", who, path, strerror(errno));
        return NULL;
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        tg__set_last_error(TG_ERR_IO, "%s: %s: not a regular file (a FIFO, device or directory?)",
                           who, path);
        close(fd);
        return NULL;
    }
    int flags = fcntl(fd, F_GETFL);
    if (flags >= 0)
        fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
    reader r = {.fd = fd, .name = path, .who = who};
    r.in = malloc(TG_IDX_INBUF);
    tg_idx *idx = NULL;
    if (!r.in) {
        tg__set_last_error(TG_ERR_NOMEM, "%s: %s: out of memory", who, path);
    } else if (fill(&r) == 0) {
        while (r.z.avail_in < 2 && !r.in_eof && fill(&r) == 0)
            ;
        r.gz = r.z.avail_in >= 2 && r.in[0] == 0x1f && r.in[1] == 0x8b;
        bool ok = true;
        if (r.gz) {
            /* 16 + MAX_WBITS: a gzip wrapper (header and CRC-32 trailer), checked by zlib. */
            ok = r.z_ready = inflateInit2(&r.z, 16 + MAX_WBITS) == Z_OK;
            if (!ok)
                tg__set_last_error(TG_ERR_NOMEM, "%s: %s: out of memory in zlib", who, path);
        }
        if (ok)
            idx = parse(&r);
    }
    if (r.z_ready)
        inflateEnd(&r.z);
    free(r.in);
    close(fd);
    return idx;
}

void tg_idx_free(tg_idx *idx) {
    if (!idx)
        return;
    free(idx->data);
    free(idx);
}

int tg_idx_rank(const tg_idx *idx) { return idx ? idx->rank : 0; }

int64_t tg_idx_dim(const tg_idx *idx, int axis) {
    if (!idx)
        return 0;
    if (axis < 0)
        axis += idx->rank;
    return axis >= 0 && axis < idx->rank ? idx->shape[axis] : 0;
}

int64_t tg_idx_numel(const tg_idx *idx) { return idx ? idx->numel : 0; }

const uint8_t *tg_idx_data(const tg_idx *idx) { return idx ? idx->data : NULL; }

/* ---- Paths ---- */

static const char *const part_names[4] = {"train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                          "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"};

tg_status tg_idx_path(const char *dir, tg_idx_part part, char *buf, size_t len) {
    if (!buf || len == 0)
        return tg__set_last_error(TG_ERR_NULL, "tg_idx_path: buf is NULL or empty");
    buf[0] = '\0';
    if ((int)part < 0 || (int)part > 3)
        return tg__set_last_error(TG_ERR_VALUE, "tg_idx_path: part %d is outside 0..3", (int)part);
    if (!dir)
        dir = TG_FASHION_MNIST_DIR;
    size_t dl = strlen(dir);
    const char *sep = dl && dir[dl - 1] == '/' ? "" : "/";
    /* Prefer the .gz as distributed; fall back to an unpacked file of the same name. */
    int n = snprintf(buf, len, "%s%s%s.gz", dir, sep, part_names[part]);
    if (n < 0 || (size_t)n >= len) {
        buf[0] = '\0';
        return tg__set_last_error(TG_ERR_VALUE, "tg_idx_path: %s%s%s.gz does not fit in %zu bytes",
                                  dir, sep, part_names[part], len);
    }
    struct stat st;
    if (stat(buf, &st) != 0) {
        char plain[4096];
        int m = snprintf(plain, sizeof plain, "%s%s%s", dir, sep, part_names[part]);
        if (m > 0 && (size_t)m < sizeof plain && stat(plain, &st) == 0)
            memcpy(buf, plain, (size_t)m + 1); /* shorter than the .gz name, so it fits */
    }
    return TG_OK;
}

/* ---- Data sets: images and labels ---- */

tg_idx_dataset *tg_idx_dataset_load(const char *images_path, const char *labels_path) {
    if (!images_path || !labels_path) {
        tg__set_last_error(TG_ERR_NULL, "tg_idx_dataset_load: %s path is NULL",
                           images_path ? "labels" : "images");
        return NULL;
    }
    tg_idx_dataset *ds = calloc(1, sizeof *ds);
    if (!ds) {
        tg__set_last_error(TG_ERR_NOMEM, "tg_idx_dataset_load: out of memory");
        return NULL;
    }
    ds->images = tg_idx_load(images_path);
    if (!ds->images)
        goto fail;
    ds->labels = tg_idx_load(labels_path);
    if (!ds->labels)
        goto fail;
    if (ds->labels->rank != 1) {
        tg__set_last_error(TG_ERR_FORMAT,
                           "tg_idx_dataset_load: %s: labels must have 1 dimension, found %d",
                           labels_path, ds->labels->rank);
        goto fail;
    }
    if (ds->labels->shape[0] != ds->images->shape[0]) {
        tg__set_last_error(TG_ERR_FORMAT,
                           "tg_idx_dataset_load: %s holds %lld images but %s holds %lld labels",
                           images_path, (long long)ds->images->shape[0], labels_path,
                           (long long)ds->labels->shape[0]);
        goto fail;
    }
    ds->n = ds->images->shape[0];
    /* The values per image, the product of the other sizes. With 0 images the loader's check of
     * the whole product says nothing about it (0 x anything is 0), so check it here. */
    ds->features = 1;
    for (int i = 1; i < ds->images->rank; i++) {
        const int64_t d = ds->images->shape[i];
        if (d > 0 && ds->features > (INT64_MAX / 4) / d) {
            tg__set_last_error(TG_ERR_FORMAT,
                               "tg_idx_dataset_load: %s: sizes overflow: one image's dimensions "
                               "(up to dimension %d, size %lld at offset %d) exceed 2^61 values",
                               images_path, i, (long long)d, 4 + 4 * i);
            goto fail;
        }
        ds->features *= d;
    }
    for (int64_t i = 0; i < ds->n; i++)
        if (ds->labels->data[i] >= ds->classes)
            ds->classes = ds->labels->data[i] + 1;
    return ds;
fail:
    tg_idx_dataset_free(ds);
    return NULL;
}

tg_idx_dataset *tg_idx_dataset_load_dir(const char *dir, int train) {
    char img[4096], lab[4096];
    if (tg_idx_path(dir, train ? TG_IDX_TRAIN_IMAGES : TG_IDX_TEST_IMAGES, img, sizeof img) ||
        tg_idx_path(dir, train ? TG_IDX_TRAIN_LABELS : TG_IDX_TEST_LABELS, lab, sizeof lab))
        return NULL;
    return tg_idx_dataset_load(img, lab);
}

void tg_idx_dataset_free(tg_idx_dataset *ds) {
    if (!ds)
        return;
    tg_idx_free(ds->images);
    tg_idx_free(ds->labels);
    free(ds);
}

int64_t tg_idx_dataset_size(const tg_idx_dataset *ds) { return ds ? ds->n : 0; }
int64_t tg_idx_dataset_features(const tg_idx_dataset *ds) { return ds ? ds->features : 0; }
int tg_idx_dataset_classes(const tg_idx_dataset *ds) { return ds ? ds->classes : 0; }
const tg_idx *tg_idx_dataset_images(const tg_idx_dataset *ds) { return ds ? ds->images : NULL; }
const tg_idx *tg_idx_dataset_labels(const tg_idx_dataset *ds) { return ds ? ds->labels : NULL; }

/* Converting rows [r0, r1) of a batch: x[i, :] = images[indices[i], :] / 255. */
typedef struct batch_job {
    const tg_idx_dataset *ds;
    const int64_t *indices;
    tg_tensor *x;
} batch_job;

/* How many rows ahead the conversion asks for the bytes of: a row is 13 cache lines of Fashion-
 * MNIST's 784 bytes, at a random place, so without asking early each one waits on memory. */
#define TG_IDX_PREFETCH_ROWS 2

static void prefetch_row(const uint8_t *row, int64_t F) {
    for (int64_t b = 0; b < F; b += 64)
        __builtin_prefetch(row + b);
    if (F > 0)
        __builtin_prefetch(row + F - 1); /* a row need not start on a cache line */
}

static void batch_rows(void *ctx, int64_t r0, int64_t r1) {
    const batch_job *j = ctx;
    const int64_t F = j->ds->features;
    const uint8_t *images = j->ds->images->data;
    for (int64_t i = r0; i < r1 && i < r0 + TG_IDX_PREFETCH_ROWS; i++)
        prefetch_row(images + j->indices[i] * F, F);
    /* Multiplying by the float nearest 1/255 differs from dividing in the last bit for some
     * values; divide, so x matches what numpy's x / 255 gives. */
    TG_FOR_DTYPE(j->x->dtype, T, T *px = j->x->data; for (int64_t i = r0; i < r1; i++) {
        if (i + TG_IDX_PREFETCH_ROWS < r1)
            prefetch_row(images + j->indices[i + TG_IDX_PREFETCH_ROWS] * F, F);
        const uint8_t *src = images + j->indices[i] * F;
        T *dst = px + i * F;
        for (int64_t k = 0; k < F; k++)
            dst[k] = (T)src[k] / (T)255;
    });
}

tg_status tg_idx_dataset_batch(const tg_idx_dataset *ds, const int64_t *indices, int64_t n,
                               tg_tensor *x, tg_tensor *y) {
    static const char who[] = "tg_idx_dataset_batch";
    if (!ds || !indices || !x)
        return tg__set_last_error(TG_ERR_NULL, "%s: %s is NULL", who,
                                  !ds        ? "ds"
                                  : !indices ? "indices"
                                             : "x");
    char s[TG_SHAPE_STR_LEN];
    if (x->dtype != TG_F32 && x->dtype != TG_F64)
        return tg__set_last_error(TG_ERR_DTYPE, "%s: x has dtype %s; expected f32 or f64", who,
                                  tg__dtype_name(x->dtype));
    if (n < 0 || x->rank < 1 || x->shape[0] != n ||
        (ds->features > 0 && n > INT64_MAX / ds->features) || x->numel != n * ds->features)
        return tg__set_last_error(TG_ERR_SHAPE,
                                  "%s: x has shape %s; expected %lld rows of %lld values "
                                  "(e.g. [%lld,%lld])",
                                  who, tg__shape_str(x, s, sizeof s), (long long)n,
                                  (long long)ds->features, (long long)n, (long long)ds->features);
    if (y && (y->dtype != TG_I32 || y->rank != 1 || y->numel != n))
        return tg__set_last_error(TG_ERR_SHAPE, "%s: y is %s %s; expected i32 [%lld]", who,
                                  tg__dtype_name(y->dtype), tg__shape_str(y, s, sizeof s),
                                  (long long)n);
    for (int64_t i = 0; i < n; i++)
        if (indices[i] < 0 || indices[i] >= ds->n)
            return tg__set_last_error(TG_ERR_VALUE,
                                      "%s: indices[%lld] = %lld is outside the data set [0,%lld)",
                                      who, (long long)i, (long long)indices[i], (long long)ds->n);
    batch_job j = {ds, indices, x};
    /* Rows are independent: above TG_PAR_MIN_ELEMS values they are split over the threads, which
     * also doubles the loads in flight (the rows are scattered over the 47 MB of images). */
    const int64_t F = ds->features > 0 ? ds->features : 1;
    tg__parallel_range(n, (TG_PAR_MIN_ELEMS + F - 1) / F, batch_rows, &j);
    if (y) {
        int32_t *py = y->data;
        for (int64_t i = 0; i < n; i++)
            py[i] = ds->labels->data[indices[i]];
    }
    return TG_OK;
}
