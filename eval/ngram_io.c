/*
 * ngram_io.c - saving and loading models (format in ngram.h).  The file
 * holds only the counts and the discounts; the per-history sums, the hash
 * tables and the base row are rebuilt on load, so a file cannot make them
 * disagree with its counts.
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "ngram_impl.h"

#define HEADER_BYTES 24 /* magic, version, order, vocab, reserved */
#define SHA_BYTES 32

static void put32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static void put64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static uint32_t get32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
           (uint32_t)p[3] << 24;
}

static uint64_t get64(const unsigned char *p)
{
    return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32;
}

static uint64_t f64_bits(double d)
{
    uint64_t u;
    memcpy(&u, &d, sizeof u);
    return u;
}

static double bits_f64(uint64_t u)
{
    double d;
    memcpy(&d, &u, sizeof d);
    return d;
}

/* ---------------------------------------------------------------- save */

struct writer {
    FILE *f;
    EVP_MD_CTX *sha;
    int fail;
};

static void emit(struct writer *w, const void *p, size_t n)
{
    if (w->fail)
        return;
    if (EVP_DigestUpdate(w->sha, p, n) != 1 || fwrite(p, 1, n, w->f) != n)
        w->fail = 1;
}

static void write_model(struct writer *w, const ng_model *m)
{
    unsigned char b[HEADER_BYTES];
    memcpy(b, NG_FILE_MAGIC, 8);
    put32(b + 8, NG_FILE_VERSION);
    put32(b + 12, (uint32_t)m->order);
    put32(b + 16, (uint32_t)m->vocab);
    put32(b + 20, 0);
    emit(w, b, sizeof b);
    for (int k = 1; k <= m->order; k++) {
        put64(b, m->lv[k].n);
        emit(w, b, 8);
    }
    for (int k = 1; k <= m->order; k++)
        for (int c = 1; c <= 3; c++) {
            put64(b, f64_bits(m->lv[k].d[c]));
            emit(w, b, 8);
        }
    unsigned char r[4 * (NG_MAX_ORDER + 1)];
    for (int k = 1; k <= m->order; k++) {
        const struct ng_level *lv = &m->lv[k];
        for (size_t h = 0; h < lv->n_hist; h++) {
            for (int j = 0; j < k - 1; j++)
                put32(r + 4 * j,
                      (uint32_t)lv->hist_ids[h * (size_t)(k - 1) + (size_t)j]);
            for (uint32_t e = lv->hist_start[h]; e < lv->hist_start[h + 1];
                 e++) {
                put32(r + 4 * (k - 1), (uint32_t)lv->word[e]);
                put32(r + 4 * k, lv->count[e]);
                emit(w, r, 4 * ((size_t)k + 1));
            }
        }
    }
}

int ng_save(const ng_model *m, const char *path, char *err, size_t errlen)
{
    size_t plen = strlen(path);
    char *tmp = malloc(plen + 12);
    if (tmp == NULL) {
        ng__err(err, errlen, "%s: out of memory", path);
        return -1;
    }
    memcpy(tmp, path, plen);
    memcpy(tmp + plen, ".tmpXXXXXX", 11);
    int fd = mkstemp(tmp);
    if (fd < 0) {
        ng__err(err, errlen, "%s: cannot create a temporary file: %s", path,
                strerror(errno));
        free(tmp);
        return -1;
    }
    /* mkstemp makes 0600; a model is not secret: the usual 0666 & ~umask. */
    mode_t mask = umask(0);
    umask(mask);
    struct writer w = {fdopen(fd, "wb"), EVP_MD_CTX_new(), 0};
    const char *what = NULL;
    if (fchmod(fd, 0666 & ~mask) != 0)
        what = strerror(errno);
    else if (w.f == NULL || w.sha == NULL ||
             EVP_DigestInit_ex(w.sha, EVP_sha256(), NULL) != 1)
        what = "out of memory";
    if (what == NULL) {
        unsigned char digest[SHA_BYTES];
        unsigned dlen = 0;
        write_model(&w, m);
        if (w.fail || EVP_DigestFinal_ex(w.sha, digest, &dlen) != 1 ||
            dlen != SHA_BYTES || fwrite(digest, 1, SHA_BYTES, w.f) != SHA_BYTES ||
            fflush(w.f) != 0 || fsync(fd) != 0)
            what = strerror(errno);
    }
    if (w.f != NULL) {
        if (fclose(w.f) != 0 && what == NULL)
            what = strerror(errno);
    } else {
        close(fd);
    }
    EVP_MD_CTX_free(w.sha);
    if (what == NULL && rename(tmp, path) != 0)
        what = strerror(errno);
    if (what != NULL) {
        ng__err(err, errlen, "%s: cannot write: %s", path, what);
        unlink(tmp);
    }
    free(tmp);
    return what == NULL ? 0 : -1;
}

/* ---------------------------------------------------------------- load */

static int read_file(const char *path, unsigned char **data, size_t *len,
                     char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    struct stat st;
    if (f == NULL || fstat(fileno(f), &st) != 0) {
        ng__err(err, errlen, "%s: %s", path, strerror(errno));
        if (f != NULL)
            fclose(f);
        return -1;
    }
    if (!S_ISREG(st.st_mode)) {
        ng__err(err, errlen, "%s: not a regular file", path);
        fclose(f);
        return -1;
    }
    size_t n = (size_t)st.st_size;
    unsigned char *buf = malloc(n ? n : 1);
    if (buf == NULL) {
        ng__err(err, errlen, "%s: out of memory (%zu bytes)", path, n);
        fclose(f);
        return -1;
    }
    size_t got = fread(buf, 1, n, f);
    int bad = ferror(f);
    fclose(f);
    if (bad || got != n) {
        ng__err(err, errlen, "%s: read error", path);
        free(buf);
        return -1;
    }
    *data = buf;
    *len = n;
    return 0;
}

/* Whether the (k-1)-gram suffix of record r (k ids) is stored at lower. */
static int has_suffix(const struct ng_level *lower, const uint32_t *r, int k)
{
    long hi = ng__find_hist(lower, (const int32_t *)r + 1);
    return hi >= 0 && ng__cont_count(lower, (size_t)hi,
                                     (int32_t)r[k - 1]) != 0;
}

/* Check the records of order k and build its level. */
static int load_level(ng_model *m, int k, const unsigned char *p, size_t n,
                      const char *path, char *err, size_t errlen)
{
    size_t stride = (size_t)k + 1;
    uint32_t *rec = malloc((n ? n : 1) * stride * sizeof *rec);
    if (rec == NULL) {
        ng__err(err, errlen, "%s: out of memory", path);
        return -1;
    }
    const char *bad = NULL;
    size_t e;
    for (e = 0; e < n && bad == NULL; e++) {
        uint32_t *r = rec + e * stride;
        for (size_t j = 0; j < stride; j++)
            r[j] = get32(p + 4 * (e * stride + j));
        for (int j = 0; j < k - 1; j++)
            if (r[j] > (uint32_t)m->vocab)
                bad = "history id outside the vocabulary";
        if (r[k - 1] >= (uint32_t)m->vocab)
            bad = "predicted id outside the vocabulary";
        else if (r[k] == 0)
            bad = "zero count";
        else if (e > 0) {
            const uint32_t *q = r - stride;
            int j = 0;
            while (j < k && q[j] == r[j])
                j++;
            if (j == k || q[j] > r[j])
                bad = "records out of order";
        }
        if (bad == NULL && k > 1 && !has_suffix(&m->lv[k - 1], r, k))
            bad = "k-gram whose suffix is missing at the order below";
    }
    if (bad != NULL) {
        ng__err(err, errlen, "%s: order %d, record %zu: %s", path, k, e - 1,
                bad);
        free(rec);
        return -1;
    }
    int rc = ng__level_build(&m->lv[k], rec, n);
    free(rec);
    if (rc != 0)
        ng__err(err, errlen, "%s: out of memory", path);
    return rc;
}

static int parse(ng_model **out, const unsigned char *b, size_t len,
                 const char *path, char *err, size_t errlen)
{
    if (memcmp(b, NG_FILE_MAGIC, len < 8 ? len : 8) != 0) {
        ng__err(err, errlen, "%s: not an n-gram model file (bad magic)", path);
        return -1;
    }
    if (len < HEADER_BYTES) {
        ng__err(err, errlen, "%s: truncated (%zu bytes)", path, len);
        return -1;
    }
    uint32_t version = get32(b + 8), order = get32(b + 12),
             vocab = get32(b + 16);
    if (version != NG_FILE_VERSION) {
        ng__err(err, errlen, "%s: format version %lu, this build reads %d",
                path, (unsigned long)version, NG_FILE_VERSION);
        return -1;
    }
    if (order < NG_MIN_ORDER || order > NG_MAX_ORDER || vocab < 1 ||
        vocab > NG_MAX_VOCAB || get32(b + 20) != 0) {
        ng__err(err, errlen, "%s: bad header (order %lu, vocabulary %lu)",
                path, (unsigned long)order, (unsigned long)vocab);
        return -1;
    }
    /* Expected size, checked for overflow: counts come from the file. */
    size_t fixed = HEADER_BYTES + 8 * (size_t)order + 24 * (size_t)order;
    uint64_t n[NG_MAX_ORDER + 1] = {0}, need = fixed + SHA_BYTES;
    int huge = len < fixed;
    for (uint32_t k = 1; k <= order && !huge; k++) {
        n[k] = get64(b + HEADER_BYTES + 8 * (k - 1));
        uint64_t rb = 4 * ((uint64_t)k + 1);
        if (n[k] >= UINT32_MAX || n[k] > (UINT64_MAX - need) / rb)
            huge = 1;
        else
            need += n[k] * rb;
    }
    if (huge || need != len) {
        if (huge || need > len)
            ng__err(err, errlen, "%s: truncated (%zu bytes%s)", path, len,
                    huge ? "" : ", header says more");
        else
            ng__err(err, errlen, "%s: %zu bytes of trailing data", path,
                    (size_t)(len - need));
        return -1;
    }
    unsigned char digest[SHA_BYTES];
    unsigned dlen = 0;
    if (EVP_Digest(b, len - SHA_BYTES, digest, &dlen, EVP_sha256(), NULL) !=
            1 ||
        dlen != SHA_BYTES) {
        ng__err(err, errlen, "%s: SHA-256 failed", path);
        return -1;
    }
    if (memcmp(digest, b + len - SHA_BYTES, SHA_BYTES) != 0) {
        ng__err(err, errlen, "%s: checksum mismatch (corrupted file)", path);
        return -1;
    }
    if (n[1] == 0) {
        ng__err(err, errlen, "%s: no unigrams", path);
        return -1;
    }
    ng_model *m = ng__alloc((int)order, (int32_t)vocab);
    if (m == NULL) {
        ng__err(err, errlen, "%s: out of memory", path);
        return -1;
    }
    const unsigned char *p = b + HEADER_BYTES + 8 * (size_t)order;
    for (uint32_t k = 1; k <= order; k++)
        for (int c = 1; c <= 3; c++, p += 8) {
            double d = bits_f64(get64(p));
            if (!(d > 0 && d < c)) {
                ng__err(err, errlen, "%s: order %lu: discount D%d = %g "
                        "outside (0, %d)", path, (unsigned long)k, c, d, c);
                ng_free(m);
                return -1;
            }
            m->lv[k].d[c] = d;
        }
    for (uint32_t k = 1; k <= order; k++) {
        if (load_level(m, (int)k, p, (size_t)n[k], path, err, errlen) != 0) {
            ng_free(m);
            return -1;
        }
        p += (size_t)n[k] * 4 * (k + 1);
    }
    if (ng__finish(m) != 0) {
        ng__err(err, errlen, "%s: out of memory", path);
        ng_free(m);
        return -1;
    }
    *out = m;
    return 0;
}

int ng_load(ng_model **out, const char *path, char *err, size_t errlen)
{
    unsigned char *b;
    size_t len;
    *out = NULL;
    if (read_file(path, &b, &len, err, errlen) != 0)
        return -1;
    int rc = parse(out, b, len, path, err, errlen);
    free(b);
    return rc;
}
