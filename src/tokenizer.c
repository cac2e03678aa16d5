/*
 * tokenizer.c - byte-level BPE exactly as the teacher's tokenizer does it:
 * tiktoken rank files with the presets' pre-tokenization patterns.
 *
 * Text is split by the preset's pattern (PCRE2, UTF + UCP, JIT when
 * available); each piece is looked up whole, and otherwise merged from its
 * bytes: repeatedly the adjacent pair whose concatenation has the lowest
 * rank, the leftmost on ties (tiktoken's rule).  A heap of candidate pairs
 * with lazy invalidation makes that O(n log n) in the piece length, where
 * the usual rescan is quadratic.  Bytes the pattern does not match (only
 * invalid UTF-8 can be left over) are merged as one piece, byte-wise, as
 * byte-level BPE does, and counted.
 */
#include "internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <openssl/evp.h>
#include <xxhash.h>

#define EMPTY UINT32_MAX
#define MAX_TOKEN_BYTES 4096

/* The presets: tiktoken's pre-tokenization patterns (pat_str), verbatim. */
static const struct preset {
    const char *name;
    const char *pattern;
} presets[] = {
    {"r50k_base", "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+"
                  "|\\s+(?!\\S)|\\s+"},
    {"p50k_base", "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+"
                  "|\\s+(?!\\S)|\\s+"},
    {"cl100k_base",
     "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}"
     "| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},
    /* Llama 3: tiktoken-style ranks with cl100k's pattern */
    {"llama3",
     "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}"
     "| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},
    {"o200k_base",
     "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*"
     "[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
     "|[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+"
     "[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
     "|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)"
     "|\\s+"},
};

struct hm_tokenizer {
    char name[32];
    char digest[65]; /* SHA-256 of the rank file, hex */
    pcre2_code *re;
    size_t n_ranks;     /* largest rank + 1 */
    unsigned char *arena;
    uint32_t *off;      /* per rank: offset in arena (EMPTY: unused rank) */
    uint16_t *len;      /* per rank: byte length */
    uint32_t *slot;     /* open addressing: rank or EMPTY */
    size_t mask;
    uint32_t byte_rank[256];
};

/* ------------------------------------------------------------ lookup */

static uint32_t lookup(const hm_tokenizer *t, const unsigned char *b,
                       size_t n)
{
    if (n == 1)
        return t->byte_rank[b[0]];
    if (n > MAX_TOKEN_BYTES)
        return EMPTY;
    size_t i = (size_t)XXH3_64bits(b, n) & t->mask;
    for (uint32_t r; (r = t->slot[i]) != EMPTY; i = (i + 1) & t->mask)
        if (t->len[r] == n && memcmp(t->arena + t->off[r], b, n) == 0)
            return r;
    return EMPTY;
}

/* ----------------------------------------------------------- loading */

static int add_token(hm_tokenizer *t, const unsigned char *b, size_t n,
                     uint32_t rank)
{
    size_t i = (size_t)XXH3_64bits(b, n) & t->mask;
    for (uint32_t r; (r = t->slot[i]) != EMPTY; i = (i + 1) & t->mask)
        if (t->len[r] == n && memcmp(t->arena + t->off[r], b, n) == 0)
            return -1; /* the same bytes twice */
    t->slot[i] = rank;
    return 0;
}

static int parse_ranks(hm_tokenizer *t, const char *path, char *text,
                       size_t size, char *errmsg, size_t errlen)
{
    /* pass 1: count lines, largest rank, arena size */
    size_t lines = 0, arena = 0;
    unsigned long long maxrank = 0;
    for (char *p = text; p < text + size;) {
        char *nl = memchr(p, '\n', (size_t)(text + size - p));
        char *e = nl ? nl : text + size;
        char *sp = memchr(p, ' ', (size_t)(e - p));
        lines++;
        if (e > p && e[-1] == '\r')
            e--;
        if (e == p) { /* blank line */
            p = nl ? nl + 1 : text + size;
            continue;
        }
        if (sp == NULL || sp == p) {
            hm_errf(errmsg, errlen,
                    "%s:%zu: expected '<base64 bytes> <rank>'", path, lines);
            return HM_EFORMAT;
        }
        char *end;
        errno = 0;
        unsigned long long r = strtoull(sp + 1, &end, 10);
        if (errno || end != e || sp[1] < '0' || sp[1] > '9' ||
            r >= UINT32_MAX - 1) {
            hm_errf(errmsg, errlen, "%s:%zu: bad rank", path, lines);
            return HM_EFORMAT;
        }
        if (r > maxrank)
            maxrank = r;
        arena += (size_t)(sp - p) / 4 * 3 + 3;
        p = nl ? nl + 1 : text + size;
    }
    if (lines == 0) {
        hm_errf(errmsg, errlen, "%s: empty rank file", path);
        return HM_EFORMAT;
    }
    t->n_ranks = (size_t)maxrank + 1;
    size_t cap = 16;
    while (cap < 2 * t->n_ranks)
        cap *= 2;
    t->mask = cap - 1;
    t->arena = malloc(arena + 1);
    t->off = malloc(t->n_ranks * sizeof *t->off);
    t->len = calloc(t->n_ranks, sizeof *t->len);
    t->slot = malloc(cap * sizeof *t->slot);
    if (!t->arena || !t->off || !t->len || !t->slot)
        return HM_ENOMEM;
    memset(t->off, 0xff, t->n_ranks * sizeof *t->off);
    memset(t->slot, 0xff, cap * sizeof *t->slot);
    for (int b = 0; b < 256; b++)
        t->byte_rank[b] = EMPTY;
    /* pass 2: decode and insert */
    size_t used = 0, line = 0;
    for (char *p = text; p < text + size;) {
        char *nl = memchr(p, '\n', (size_t)(text + size - p));
        char *e = nl ? nl : text + size;
        line++;
        if (e > p && e[-1] == '\r')
            e--;
        if (e == p) {
            p = nl ? nl + 1 : text + size;
            continue;
        }
        char *sp = memchr(p, ' ', (size_t)(e - p));
        size_t b64 = (size_t)(sp - p);
        uint32_t rank = (uint32_t)strtoull(sp + 1, NULL, 10);
        int n = b64 % 4 == 0 ? EVP_DecodeBlock(t->arena + used,
                                               (const unsigned char *)p,
                                               (int)b64)
                             : -1;
        if (n < 0) {
            hm_errf(errmsg, errlen, "%s:%zu: bad base64", path, line);
            return HM_EFORMAT;
        }
        /* EVP_DecodeBlock counts the padding as zero bytes */
        if (b64 >= 1 && p[b64 - 1] == '=')
            n--;
        if (b64 >= 2 && p[b64 - 2] == '=')
            n--;
        if (n <= 0 || n > MAX_TOKEN_BYTES) {
            hm_errf(errmsg, errlen, "%s:%zu: token of %d bytes", path, line,
                    n);
            return HM_EFORMAT;
        }
        if (t->off[rank] != EMPTY) {
            hm_errf(errmsg, errlen, "%s:%zu: rank %lu given twice", path,
                    line, (unsigned long)rank);
            return HM_EFORMAT;
        }
        t->off[rank] = (uint32_t)used;
        t->len[rank] = (uint16_t)n;
        if (add_token(t, t->arena + used, (size_t)n, rank) != 0) {
            hm_errf(errmsg, errlen, "%s:%zu: the same bytes as an earlier "
                                    "rank",
                    path, line);
            return HM_EFORMAT;
        }
        if (n == 1)
            t->byte_rank[t->arena[used]] = rank;
        used += (size_t)n;
        p = nl ? nl + 1 : text + size;
    }
    for (int b = 0; b < 256; b++)
        if (t->byte_rank[b] == EMPTY) {
            hm_errf(errmsg, errlen,
                    "%s: no token for byte 0x%02x: not a byte-level BPE "
                    "vocabulary",
                    path, b);
            return HM_EFORMAT;
        }
    return HM_OK;
}

int hm_tokenizer_load_tiktoken(hm_tokenizer **out, const char *preset,
                               const char *path, char *errmsg, size_t errlen)
{
    if (out == NULL || preset == NULL || path == NULL)
        return HM_EINVAL;
    *out = NULL;
    const struct preset *pr = NULL;
    for (size_t i = 0; i < sizeof presets / sizeof presets[0]; i++)
        if (strcmp(presets[i].name, preset) == 0)
            pr = &presets[i];
    if (pr == NULL) {
        hm_errf(errmsg, errlen,
                "unknown tokenizer preset '%s' (r50k_base, p50k_base, "
                "cl100k_base, o200k_base or llama3)",
                preset);
        return HM_EINVAL;
    }
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        hm_errf(errmsg, errlen, "%s: %s", path, strerror(errno));
        return HM_EIO;
    }
    size_t cap = 1 << 20, size = 0;
    char *text = malloc(cap);
    int rc = text ? HM_OK : HM_ENOMEM;
    for (size_t r; rc == HM_OK && (r = fread(text + size, 1, cap - size, f)) > 0;) {
        size += r;
        if (size == cap) {
            char *nt = realloc(text, cap * 2);
            if (nt == NULL)
                rc = HM_ENOMEM;
            else {
                text = nt;
                cap *= 2;
            }
        }
    }
    if (rc == HM_OK && ferror(f)) {
        hm_errf(errmsg, errlen, "%s: read error", path);
        rc = HM_EIO;
    }
    fclose(f);
    hm_tokenizer *t = rc == HM_OK ? calloc(1, sizeof *t) : NULL;
    if (rc == HM_OK && t == NULL)
        rc = HM_ENOMEM;
    if (rc == HM_OK) {
        unsigned char md[32];
        snprintf(t->name, sizeof t->name, "%s", pr->name);
        if (EVP_Digest(text, size, md, NULL, EVP_sha256(), NULL) != 1)
            rc = HM_ECRYPTO;
        for (int i = 0; i < 32; i++)
            snprintf(t->digest + 2 * i, 3, "%02x", md[i]);
    }
    if (rc == HM_OK)
        rc = parse_ranks(t, path, text, size, errmsg, errlen);
    free(text);
    if (rc == HM_OK) {
        int err;
        PCRE2_SIZE at;
        t->re = pcre2_compile((PCRE2_SPTR)pr->pattern, PCRE2_ZERO_TERMINATED,
                              PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF,
                              &err, &at, NULL);
        if (t->re == NULL) {
            hm_errf(errmsg, errlen, "pattern of %s does not compile",
                    pr->name);
            rc = HM_ENOTSUP;
        } else
            (void)pcre2_jit_compile(t->re, PCRE2_JIT_COMPLETE); /* optional */
    }
    if (rc != HM_OK) {
        hm_tokenizer_free(t);
        return rc;
    }
    *out = t;
    return HM_OK;
}

void hm_tokenizer_free(hm_tokenizer *t)
{
    if (t == NULL)
        return;
    pcre2_code_free(t->re);
    free(t->arena);
    free(t->off);
    free(t->len);
    free(t->slot);
    free(t);
}

const char *hm_tokenizer_name(const hm_tokenizer *t)
{
    return t ? t->name : NULL;
}

const char *hm_tokenizer_digest(const hm_tokenizer *t)
{
    return t ? t->digest : NULL;
}

size_t hm_tokenizer_vocab(const hm_tokenizer *t)
{
    return t ? t->n_ranks : 0;
}

int hm_tokenizer_piece(const hm_tokenizer *t, int32_t id,
                       const unsigned char **bytes, size_t *len)
{
    if (t == NULL || bytes == NULL || len == NULL)
        return HM_EINVAL;
    if (id < 0 || (size_t)id >= t->n_ranks || t->off[id] == EMPTY)
        return HM_ERANGE;
    *bytes = t->arena + t->off[id];
    *len = t->len[id];
    return HM_OK;
}

/* ---------------------------------------------------------- encoding */

typedef struct out_buf {
    int32_t *ids;
    size_t n, cap;
} out_buf;

static int emit(out_buf *o, uint32_t r)
{
    if (o->n == o->cap) {
        size_t nc = o->cap ? 2 * o->cap : 1024;
        int32_t *ni = realloc(o->ids, nc * sizeof *ni);
        if (ni == NULL)
            return HM_ENOMEM;
        o->ids = ni;
        o->cap = nc;
    }
    o->ids[o->n++] = (int32_t)r;
    return HM_OK;
}

/* Work space for merging one piece of n bytes. */
typedef struct heap_ent {
    uint32_t rank, start, node, ver;
} heap_ent;

typedef struct work {
    size_t cap;
    uint32_t *start, *next, *prev, *ver;
    heap_ent *heap;
    size_t nheap;
} work;

static int work_grow(work *w, size_t n)
{
    if (n <= w->cap)
        return HM_OK;
    size_t c = w->cap ? w->cap : 64;
    while (c < n)
        c *= 2;
    uint32_t *a = realloc(w->start, c * sizeof *a);
    if (a) w->start = a;
    uint32_t *b = a ? realloc(w->next, c * sizeof *b) : NULL;
    if (b) w->next = b;
    uint32_t *d = b ? realloc(w->prev, c * sizeof *d) : NULL;
    if (d) w->prev = d;
    uint32_t *v = d ? realloc(w->ver, c * sizeof *v) : NULL;
    if (v) w->ver = v;
    heap_ent *h = v ? realloc(w->heap, 2 * c * sizeof *h) : NULL;
    if (h) w->heap = h;
    if (h == NULL)
        return HM_ENOMEM;
    w->cap = c;
    return HM_OK;
}

static int ent_less(const heap_ent *a, const heap_ent *b)
{
    return a->rank < b->rank || (a->rank == b->rank && a->start < b->start);
}

static void heap_push(work *w, heap_ent e)
{
    size_t i = w->nheap++;
    while (i > 0 && ent_less(&e, &w->heap[(i - 1) / 2])) {
        w->heap[i] = w->heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    w->heap[i] = e;
}

static heap_ent heap_pop(work *w)
{
    heap_ent top = w->heap[0], last = w->heap[--w->nheap];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        const heap_ent *best = &last;
        if (l < w->nheap && ent_less(&w->heap[l], best)) {
            m = l;
            best = &w->heap[l];
        }
        if (r < w->nheap && ent_less(&w->heap[r], best))
            m = r;
        if (m == i)
            break;
        w->heap[i] = w->heap[m];
        i = m;
    }
    if (w->nheap > 0)
        w->heap[i] = last;
    return top;
}

/* Push the pair starting at node i (if it has a next and a rank). */
static void push_pair(const hm_tokenizer *t, work *w, const unsigned char *p,
                      size_t n, uint32_t i)
{
    uint32_t j = w->next[i];
    if (j == EMPTY)
        return;
    uint32_t k = w->next[j];
    size_t end = k == EMPTY ? n : w->start[k];
    uint32_t r = lookup(t, p + w->start[i], end - w->start[i]);
    if (r != EMPTY)
        heap_push(w, (heap_ent){r, w->start[i], i, w->ver[i]});
}

static int encode_piece(const hm_tokenizer *t, work *w, const unsigned char *p,
                        size_t n, out_buf *o)
{
    uint32_t whole = lookup(t, p, n);
    if (whole != EMPTY)
        return emit(o, whole);
    if (n > UINT32_MAX - 1)
        return HM_ERANGE;
    int rc = work_grow(w, n);
    if (rc != HM_OK)
        return rc;
    for (size_t i = 0; i < n; i++) {
        w->start[i] = (uint32_t)i;
        w->next[i] = i + 1 < n ? (uint32_t)(i + 1) : EMPTY;
        w->prev[i] = i > 0 ? (uint32_t)(i - 1) : EMPTY;
        w->ver[i] = 0;
    }
    w->nheap = 0;
    for (uint32_t i = 0; i + 1 < n; i++)
        push_pair(t, w, p, n, i);
    while (w->nheap > 0) {
        heap_ent e = heap_pop(w);
        uint32_t i = e.node;
        if (w->ver[i] != e.ver || w->next[i] == EMPTY)
            continue; /* stale: node i changed since */
        /* merge i with its next */
        uint32_t j = w->next[i], k = w->next[j];
        w->next[i] = k;
        if (k != EMPTY)
            w->prev[k] = i;
        w->ver[j] = UINT32_MAX; /* dead */
        w->ver[i]++;
        push_pair(t, w, p, n, i);
        uint32_t h = w->prev[i];
        if (h != EMPTY) {
            w->ver[h]++;
            push_pair(t, w, p, n, h);
        }
    }
    for (uint32_t i = 0; i != EMPTY; i = w->next[i]) {
        uint32_t k = w->next[i];
        size_t end = k == EMPTY ? n : w->start[k];
        uint32_t r = lookup(t, p + w->start[i], end - w->start[i]);
        if (r == EMPTY)
            return HM_EFORMAT; /* cannot happen with all 256 bytes */
        if ((rc = emit(o, r)) != HM_OK)
            return rc;
    }
    return HM_OK;
}

int hm_tokenizer_encode(const hm_tokenizer *t, const char *text, size_t len,
                        int32_t **ids, size_t *n_ids, size_t *invalid)
{
    if (t == NULL || (text == NULL && len > 0) || ids == NULL ||
        n_ids == NULL)
        return HM_EINVAL;
    *ids = NULL;
    *n_ids = 0;
    if (invalid)
        *invalid = 0;
    out_buf o = {NULL, 0, 0};
    work w = {0};
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(t->re, NULL);
    int rc = md ? HM_OK : HM_ENOMEM;
    const unsigned char *s = (const unsigned char *)text;
    size_t pos = 0;
    while (rc == HM_OK && pos < len) {
        int m = pcre2_match(t->re, s, len, pos, 0, md, NULL);
        size_t ms = len, me = len;
        if (m > 0) {
            PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
            ms = ov[0];
            me = ov[1];
        } else if (m != PCRE2_ERROR_NOMATCH) {
            rc = HM_ENOMEM; /* match limits: not reachable with these */
            break;
        }
        if (ms > pos) { /* bytes the pattern skipped: invalid UTF-8 */
            if (invalid)
                *invalid += ms - pos;
            rc = encode_piece(t, &w, s + pos, ms - pos, &o);
        }
        if (rc == HM_OK && me > ms)
            rc = encode_piece(t, &w, s + ms, me - ms, &o);
        if (me == ms) /* an empty match cannot happen; never loop */
            me = ms + 1 > len ? len : ms + 1;
        pos = me > pos ? me : pos + 1;
    }
    pcre2_match_data_free(md);
    free(w.start);
    free(w.next);
    free(w.prev);
    free(w.ver);
    free(w.heap);
    if (rc != HM_OK) {
        free(o.ids);
        return rc;
    }
    *ids = o.ids;
    *n_ids = o.n;
    return HM_OK;
}

void hm_tokens_free(int32_t *ids)
{
    free(ids);
}
