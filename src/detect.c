/*
 * detect.c - tallies: exact, deduplicated, mergeable detection tests.
 *
 * Per channel a tally is a set of tuples (context window, token), each
 * identified by a 64-bit hash of its ids and carrying the channel's PRF
 * value under every key.  Counts of what each rule dropped sit beside it.
 * The test statistic is computed from the set when asked for, in an order
 * that does not matter (integer sums), so merging is a set union and is
 * commutative and associative, and a merged tally equals one that saw all
 * the inputs.
 *
 * A hash collision between two different tuples drops one of them.  The
 * hash is unkeyed, so which tuples are dropped does not depend on the key
 * and the null distribution of the test is unchanged.
 *
 * kgw with selfhash seeding is the exception to "one set for all keys":
 * its value depends on the window only through an anchor token chosen by
 * a keyed min-hash (or on the token alone), so two different windows can
 * give the same value under one key and different values under another.
 * Scores are independent only if each (anchor, token) pair counts once,
 * and that pair depends on the key, so such channels keep one set per key.
 */
#include "internal.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <xxhash.h>

#define TALLY_MAGIC "hallmark-tally 1\n"
#define MAX_KEYS 100000

typedef struct tally_table {
    size_t cap;     /* slots, a power of two (0: none yet) */
    size_t n;       /* tuples held */
    size_t w;       /* words per record: the hash, then the PRF values */
    uint64_t *rec;  /* cap records; a hash of 0 marks an empty slot */
} tally_table;

/* One record holds a tuple's hash and its values together, so a probe
 * costs one cache miss, not two. */
#define HASH(tb, i) ((tb)->rec[(size_t)(i) * (tb)->w])
#define VAL(tb, i, k) ((tb)->rec[(size_t)(i) * (tb)->w + 1 + (k)])

/* A growable set of window hashes (the filter). */
typedef struct wset {
    size_t cap, n;
    uint64_t *h;
} wset;

typedef struct tally_channel {
    int per_key;     /* one table per key (selfhash) */
    size_t n_tables; /* 1 (one set for all keys) or n_keys (selfhash) */
    size_t vpr;      /* PRF values per record: n_keys, or 1 */
    tally_table *tab;
    uint64_t tokens, padded, dropped_padded, dropped_prompt, dropped_filter;
    wset filter; /* windows of the provider's own outputs */
} tally_channel;

typedef struct tally_key {
    char fingerprint[HM_FINGERPRINT_SIZE];
    char tenant[HM_TENANT_MAX];
    const hm_ctx *ctx; /* NULL for a loaded tally */
} tally_key;

struct hm_tally {
    hm_ctx params; /* channel parameters (no keys used) */
    char spec[1024];
    unsigned flags;
    int filtering;          /* a window filter is set */
    uint64_t filter_count;  /* its windows, over all channels */
    uint64_t filter_digest; /* order-independent digest of them */
    const hm_sketch *sketch; /* a sketch filter instead of the window sets */
    size_t n_keys;
    tally_key *keys;
    uint64_t documents;
    tally_channel ch[HM_MAX_CHANNELS];
};

/* ----------------------------------------------------------- helpers */

static uint64_t tuple_hash(const uint32_t *w, unsigned n, uint32_t token)
{
    unsigned char buf[4 * (HM_MAX_CONTEXT + 1)];
    for (unsigned i = 0; i <= n; i++) {
        uint32_t v = i < n ? w[i] : token;
        buf[4 * i] = (unsigned char)v;
        buf[4 * i + 1] = (unsigned char)(v >> 8);
        buf[4 * i + 2] = (unsigned char)(v >> 16);
        buf[4 * i + 3] = (unsigned char)(v >> 24);
    }
    uint64_t h = XXH3_64bits(buf, 4 * (size_t)(n + 1));
    return h ? h : 1u;
}

/* A tuple's first slot: the high half of (mixed hash) x cap, so that a
 * table of any size (not only a power of two) is filled evenly, even
 * when its hashes share their top bits (a partition of an audit). */
static size_t home_of(const tally_table *tc, uint64_t h)
{
#ifdef __SIZEOF_INT128__
    return (size_t)(((unsigned __int128)(h * UINT64_C(0x9E3779B97F4A7C15)) *
                     tc->cap) >> 64);
#else
    return (size_t)((h * UINT64_C(0x9E3779B97F4A7C15)) >> 32) % tc->cap;
#endif
}

static size_t slot_of(const tally_table *tc, uint64_t h)
{
    size_t i = home_of(tc, h);
    while (HASH(tc, i) != 0 && HASH(tc, i) != h)
        if (++i == tc->cap)
            i = 0;
    return i;
}

/* Large tables are probed at random: ask for huge pages, so that each
 * probe costs a cache miss but rarely a TLB miss as well. */
static void *table_alloc(size_t bytes, int zero)
{
    const size_t huge = (size_t)2 << 20;
    if (bytes < 2 * huge)
        return zero ? calloc(1, bytes) : malloc(bytes);
    void *p = NULL;
    if (posix_memalign(&p, huge, bytes) != 0)
        return NULL;
#ifdef MADV_HUGEPAGE
    (void)madvise(p, bytes, MADV_HUGEPAGE); /* advice only */
#endif
    if (zero)
        memset(p, 0, bytes);
    return p;
}

/* Slots for need tuples at a load of at most 3/4; 0 on overflow. */
static size_t cap_for(size_t need, size_t n_keys)
{
    size_t cap = need / 3 * 4 + (need % 3 ? 4 : 0);
    cap = cap < 64 ? 64 : (cap + 63) / 64 * 64;
    if (cap > SIZE_MAX / 4 / (n_keys + 1) / sizeof(uint64_t))
        return 0;
    return cap;
}

/* Make room for extra more tuples (load factor at most 3/4).  A table
 * that must grow at least doubles, unless exact says to size it for
 * exactly the tuples asked for (hm_tally_reserve). */
static int reserve_table(tally_table *tc, size_t n_keys, size_t extra,
                         int exact)
{
    if (extra > SIZE_MAX / 2 - tc->n)
        return HM_ENOMEM;
    size_t need = tc->n + extra;
    if (tc->cap != 0 && need <= tc->cap / 4 * 3)
        return HM_OK;
    if (!exact && need < 2 * (tc->cap / 4 * 3))
        need = 2 * (tc->cap / 4 * 3);
    size_t cap = cap_for(need, n_keys);
    if (cap == 0)
        return HM_ENOMEM;
    if (cap <= tc->cap)
        return HM_OK;
    tally_table nt = *tc;
    nt.cap = cap;
    nt.w = n_keys + 1;
    nt.rec = table_alloc(cap * nt.w * sizeof *nt.rec, 1);
    if (nt.rec == NULL) {
        return HM_ENOMEM;
    }
    for (size_t i = 0; i < tc->cap; i++) {
        if (HASH(tc, i) == 0)
            continue;
        size_t j = slot_of(&nt, HASH(tc, i));
        memcpy(&nt.rec[j * nt.w], &tc->rec[i * tc->w], nt.w * sizeof *nt.rec);
    }
    free(tc->rec);
    *tc = nt;
    return HM_OK;
}

static int reserve(tally_table *tc, size_t n_keys, size_t extra)
{
    return reserve_table(tc, n_keys, extra, 0);
}

static void table_free(tally_table *tb)
{
    free(tb->rec);
    memset(tb, 0, sizeof *tb);
}

static int per_key(const hm_channel *ch)
{
    return ch->scheme == HM_SCHEME_KGW && ch->seeding == HM_SEEDING_SELFHASH;
}

/* Empty tables for every channel of t (params and n_keys set). */
static int channels_init(hm_tally *t)
{
    for (unsigned c = 0; c < t->params.n_channels; c++) {
        tally_channel *tc = &t->ch[c];
        int pk = per_key(&t->params.ch[c]);
        tc->per_key = pk;
        tc->n_tables = pk ? t->n_keys : 1;
        tc->vpr = pk ? 1 : t->n_keys;
        tc->tab = calloc(tc->n_tables, sizeof *tc->tab);
        if (tc->tab == NULL)
            return HM_ENOMEM;
    }
    return HM_OK;
}

/* The table holding key k's tuples, and where its value sits in a record. */
static tally_table *table_of(const tally_channel *tc, size_t k, size_t *off)
{
    *off = tc->per_key ? 0 : k;
    return &tc->tab[tc->per_key ? k : 0];
}

static hm_tally *tally_alloc(size_t n_keys)
{
    hm_tally *t = calloc(1, sizeof *t);
    if (t == NULL)
        return NULL;
    t->keys = calloc(n_keys ? n_keys : 1, sizeof *t->keys);
    if (t->keys == NULL) {
        free(t);
        return NULL;
    }
    t->n_keys = n_keys;
    return t;
}

/* --------------------------------------------------------- lifecycle */

int hm_tally_new(hm_tally **out, const hm_ctx *const *ctxs, size_t n_keys,
                 unsigned flags, char *errmsg, size_t errlen)
{
    if (out == NULL || ctxs == NULL || n_keys == 0 ||
        (flags & ~HM_TALLY_SKIP_PADDED) != 0)
        return HM_EINVAL;
    *out = NULL;
    if (n_keys > MAX_KEYS) {
        hm_errf(errmsg, errlen, "too many keys (%zu, at most %d)", n_keys,
                MAX_KEYS);
        return HM_ERANGE;
    }
    char spec[sizeof((hm_tally *)0)->spec];
    for (size_t i = 0; i < n_keys; i++) {
        char s[sizeof spec];
        if (ctxs[i] == NULL)
            return HM_EINVAL;
        if (hm_ctx_spec(ctxs[i], s, sizeof s) >= sizeof s)
            return HM_ERANGE;
        if (i == 0)
            memcpy(spec, s, sizeof s);
        else if (strcmp(s, spec) != 0) {
            hm_errf(errmsg, errlen,
                    "key %zu has spec '%s', key 0 has '%s': a tally needs "
                    "one spec",
                    i, s, spec);
            return HM_EINVAL;
        }
    }
    hm_tally *t = tally_alloc(n_keys);
    if (t == NULL)
        return HM_ENOMEM;
    memcpy(t->spec, spec, sizeof spec);
    t->flags = flags;
    int rc = hm_spec_parse(&t->params, spec, errmsg, errlen);
    if (rc == HM_OK)
        rc = channels_init(t);
    if (rc != HM_OK) {
        hm_tally_free(t);
        return rc;
    }
    for (size_t i = 0; i < n_keys; i++) {
        tally_key *k = &t->keys[i];
        k->ctx = ctxs[i];
        memcpy(k->fingerprint, ctxs[i]->fingerprint, sizeof k->fingerprint);
        memcpy(k->tenant, ctxs[i]->tenant, sizeof k->tenant);
    }
    *out = t;
    return HM_OK;
}

void hm_tally_clear(hm_tally *t)
{
    if (t == NULL)
        return;
    for (unsigned c = 0; c < HM_MAX_CHANNELS; c++) {
        tally_channel *tc = &t->ch[c];
        for (size_t i = 0; tc->tab != NULL && i < tc->n_tables; i++)
            table_free(&tc->tab[i]);
        tc->tokens = tc->padded = tc->dropped_padded = tc->dropped_prompt = 0;
        tc->dropped_filter = 0;
    }
    t->documents = 0;
}

void hm_tally_free(hm_tally *t)
{
    if (t == NULL)
        return;
    hm_tally_clear(t);
    for (unsigned c = 0; c < HM_MAX_CHANNELS; c++) {
        free(t->ch[c].tab);
        free(t->ch[c].filter.h);
    }
    free(t->keys);
    free(t);
}

size_t hm_tally_keys(const hm_tally *t)
{
    return t ? t->n_keys : 0;
}

unsigned hm_tally_channels(const hm_tally *t)
{
    return t ? t->params.n_channels : 0;
}

size_t hm_tally_spec(const hm_tally *t, char *buf, size_t len)
{
    if (t == NULL)
        return 0;
    size_t n = strlen(t->spec);
    if (buf != NULL && len > 0) {
        size_t m = n < len - 1 ? n : len - 1;
        memcpy(buf, t->spec, m);
        buf[m] = '\0';
    }
    return n;
}

const char *hm_tally_fingerprint(const hm_tally *t, size_t i)
{
    return t && i < t->n_keys ? t->keys[i].fingerprint : NULL;
}

const char *hm_tally_tenant(const hm_tally *t, size_t i)
{
    return t && i < t->n_keys ? t->keys[i].tenant : NULL;
}

/* ------------------------------------------------------------ adding */

/* The window of width n before position p of the document made of the
 * prompt followed by the tokens, padded before its start. */
static void doc_window(const int32_t *prompt, size_t n_prompt,
                       const int32_t *tokens, size_t p, unsigned n,
                       uint32_t *w)
{
    for (unsigned i = 0; i < n; i++) {
        size_t back = n - i; /* position p - back */
        if (back > p)
            w[i] = HM_PAD_ID;
        else if (p - back < n_prompt)
            w[i] = (uint32_t)prompt[p - back];
        else
            w[i] = (uint32_t)tokens[p - back - n_prompt];
    }
}

/* A small set of the windows inside the prompt (those preceding a prompt
 * token with no padding). */
typedef struct window_set {
    size_t cap;
    uint64_t *h;
} window_set;

static int prompt_windows(window_set *s, const int32_t *prompt,
                          size_t n_prompt, unsigned n)
{
    s->cap = 0;
    s->h = NULL;
    if (n_prompt <= n)
        return HM_OK;
    size_t cap = 16;
    while (cap < 2 * (n_prompt - n))
        cap *= 2;
    s->h = calloc(cap, sizeof *s->h);
    if (s->h == NULL)
        return HM_ENOMEM;
    s->cap = cap;
    for (size_t p = n; p < n_prompt; p++) {
        uint32_t w[HM_MAX_CONTEXT];
        doc_window(prompt, n_prompt, NULL, p, n, w);
        uint64_t h = tuple_hash(w, n, HM_PAD_ID);
        size_t i = (size_t)h & (cap - 1);
        while (s->h[i] != 0 && s->h[i] != h)
            i = (i + 1) & (cap - 1);
        s->h[i] = h;
    }
    return HM_OK;
}

static int window_in(const window_set *s, const uint32_t *w, unsigned n)
{
    if (s->cap == 0)
        return 0;
    uint64_t h = tuple_hash(w, n, HM_PAD_ID);
    size_t i = (size_t)h & (s->cap - 1);
    while (s->h[i] != 0) {
        if (s->h[i] == h)
            return 1;
        i = (i + 1) & (s->cap - 1);
    }
    return 0;
}

static int negative_id(const int32_t *ids, size_t n)
{
    int32_t any = 0; /* the sign bit of any id; vectorises */
    for (size_t i = 0; i < n; i++)
        any |= ids[i];
    return any < 0;
}

static int wset_has(const wset *s, uint64_t h)
{
    if (s->cap == 0)
        return 0;
    size_t i = (size_t)(h ^ (h >> 29)) & (s->cap - 1);
    while (s->h[i] != 0) {
        if (s->h[i] == h)
            return 1;
        i = (i + 1) & (s->cap - 1);
    }
    return 0;
}

/* Insert h; 1 if it was new, 0 if present, -1 without memory. */
static int wset_put(wset *s, uint64_t h)
{
    if (2 * (s->n + 1) > s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 256;
        uint64_t *nh = calloc(cap, sizeof *nh);
        if (nh == NULL)
            return -1;
        for (size_t i = 0; i < s->cap; i++)
            if (s->h[i] != 0) {
                size_t j = (size_t)(s->h[i] ^ (s->h[i] >> 29)) & (cap - 1);
                while (nh[j] != 0)
                    j = (j + 1) & (cap - 1);
                nh[j] = s->h[i];
            }
        free(s->h);
        s->h = nh;
        s->cap = cap;
    }
    size_t i = (size_t)(h ^ (h >> 29)) & (s->cap - 1);
    while (s->h[i] != 0) {
        if (s->h[i] == h)
            return 0;
        i = (i + 1) & (s->cap - 1);
    }
    s->h[i] = h;
    s->n++;
    return 1;
}

/* A tuple's window passes the filter (always, without one). */
static int filter_keeps(const hm_tally *t, const tally_channel *tc,
                        const uint32_t *w, unsigned n)
{
    if (t->sketch != NULL)
        return hm_sketch_has_window(t->sketch, w, n);
    return !t->filtering || wset_has(&tc->filter, tuple_hash(w, n, HM_PAD_ID));
}

/* The sketch's windows as the filter.  Its count and the first 64 bits of
 * its SHA-256 stand for it in the tally file, so tallies merge only with
 * tallies filtered by the same sketch content. */
int hm_tally_filter_sketch(hm_tally *t, const hm_sketch *s, char *errmsg,
                           size_t errlen)
{
    if (t == NULL || s == NULL)
        return HM_EINVAL;
    if (t->keys[0].ctx == NULL || t->documents > 0 || t->filtering) {
        hm_errf(errmsg, errlen, "the tally is loaded, already has "
                                "documents, or already has a filter");
        return HM_ENOTSUP;
    }
    for (unsigned c = 0; c < t->params.n_channels; c++)
        if (!hm_sketch_has_width(s, t->params.ch[c].window)) {
            hm_errf(errmsg, errlen,
                    "channel %u reads windows of %u tokens, which the "
                    "sketch does not record",
                    c, t->params.ch[c].window);
            return HM_EINVAL;
        }
    char hex[65];
    double count;
    int rc = hm_sketch_digest(s, hex, sizeof hex);
    if (rc == HM_OK)
        rc = hm_sketch_param(s, "count", &count);
    if (rc != HM_OK)
        return rc;
    uint64_t d = 0;
    for (int i = 0; i < 16; i++)
        d = d << 4 | (uint64_t)(hex[i] <= '9' ? hex[i] - '0' : hex[i] - 'a' + 10);
    t->sketch = s;
    t->filtering = 1;
    t->filter_count = count > 0 ? (uint64_t)count : 1;
    t->filter_digest = d;
    return HM_OK;
}

int hm_tally_filter_add(hm_tally *t, const int32_t *prompt, size_t n_prompt,
                        const int32_t *tokens, size_t n_tokens)
{
    if (t == NULL || (prompt == NULL && n_prompt > 0) ||
        (tokens == NULL && n_tokens > 0))
        return HM_EINVAL;
    if (t->keys[0].ctx == NULL || t->documents > 0 || t->sketch != NULL)
        return HM_ENOTSUP; /* loaded, documents already scored, or sketch */
    if (negative_id(prompt, n_prompt) || negative_id(tokens, n_tokens))
        return HM_ERANGE;
    for (unsigned c = 0; c < t->params.n_channels; c++) {
        unsigned n = t->params.ch[c].window;
        for (size_t j = 0; j < n_tokens; j++) {
            uint32_t w[HM_MAX_CONTEXT];
            doc_window(prompt, n_prompt, tokens, n_prompt + j, n, w);
            uint64_t h = tuple_hash(w, n, HM_PAD_ID);
            int rc = wset_put(&t->ch[c].filter, h);
            if (rc < 0)
                return HM_ENOMEM; /* windows added so far stay */
            if (rc > 0) {
                t->filtering = 1; /* a filter without windows is none */
                t->filter_count++;
                t->filter_digest += hm_mix(c, UINT64_C(0x9E3779B97F4A7C15), h);
            }
        }
    }
    return HM_OK;
}

/* Channels with one table for all keys, in chunks: hash every tuple and
 * prefetch its slot, then insert in order, then compute the PRF values of
 * the new tuples with batched AES, key by key. */
static void add_shared(hm_tally *t, unsigned c, const int32_t *prompt,
                       size_t np, const int32_t *tokens, size_t nt,
                       const window_set *ps)
{
    enum { CHUNK = 256 };
    tally_channel *tc = &t->ch[c];
    tally_table *tb = &tc->tab[0];
    const unsigned n = t->params.ch[c].window;
    uint32_t ids[HM_MAX_CONTEXT + CHUNK], wins[CHUNK * HM_MAX_CONTEXT];
    uint64_t hs[CHUNK];
    size_t slot[CHUNK], pend[CHUNK];
    hm_seed seeds[CHUNK];
    for (size_t j0 = 0; j0 < nt; j0 += CHUNK) {
        size_t m = nt - j0 < CHUNK ? nt - j0 : CHUNK, p0 = np + j0;
        for (unsigned i = 0; i < n; i++) {
            size_t back = n - i;
            size_t q = p0 - back;
            ids[i] = p0 < back  ? HM_PAD_ID
                     : q < np ? (uint32_t)prompt[q]
                              : (uint32_t)tokens[q - np];
        }
        for (size_t i = 0; i < m; i++)
            ids[n + i] = (uint32_t)tokens[j0 + i];
        for (size_t i = 0; i < m; i++) {
            int padded = p0 + i < n;
            tc->tokens++;
            tc->padded += (uint64_t)padded;
            hs[i] = 0;
            if (padded && (t->flags & HM_TALLY_SKIP_PADDED)) {
                tc->dropped_padded++;
                continue;
            }
            if (ps->cap != 0 && window_in(ps, ids + i, n)) {
                tc->dropped_prompt++;
                continue;
            }
            if (!filter_keeps(t, tc, ids + i, n)) {
                tc->dropped_filter++;
                continue;
            }
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
            uint64_t h = XXH3_64bits(ids + i, 4 * (size_t)(n + 1));
            hs[i] = h ? h : 1u; /* as tuple_hash */
#else
            hs[i] = tuple_hash(ids + i, n, ids[n + i]);
#endif
            __builtin_prefetch(&HASH(tb, home_of(tb, hs[i])), 1);
        }
        size_t np_new = 0;
        for (size_t i = 0; i < m; i++) {
            if (hs[i] == 0)
                continue;
            size_t sl = slot_of(tb, hs[i]);
            if (HASH(tb, sl) != 0)
                continue; /* scored before */
            HASH(tb, sl) = hs[i];
            tb->n++;
            slot[np_new] = sl;
            pend[np_new++] = i;
        }
        if (np_new == 0)
            continue;
        for (size_t q = 0; q < np_new; q++)
            memcpy(wins + q * n, ids + pend[q], n * sizeof *wins);
        for (size_t k = 0; k < t->n_keys; k++) {
            hm_seed_windows(&t->keys[k].ctx->ch[c].cmac, wins, n, n, np_new,
                            seeds);
            for (size_t q = 0; q < np_new; q++)
                VAL(tb, slot[q], k) =
                    hm_mix(seeds[q].a, seeds[q].g, ids[n + pend[q]]);
        }
    }
}

int hm_tally_reserve(hm_tally *t, size_t n_tokens)
{
    if (t == NULL)
        return HM_EINVAL;
    for (unsigned c = 0; c < t->params.n_channels; c++)
        for (size_t i = 0; i < t->ch[c].n_tables; i++) {
            int rc = reserve_table(&t->ch[c].tab[i], t->ch[c].vpr, n_tokens,
                                   1);
            if (rc != HM_OK)
                return rc;
        }
    return HM_OK;
}

int hm_tally_add(hm_tally *t, const int32_t *prompt, size_t n_prompt,
                 const int32_t *tokens, size_t n_tokens)
{
    if (t == NULL || (prompt == NULL && n_prompt > 0) ||
        (tokens == NULL && n_tokens > 0))
        return HM_EINVAL;
    if (t->keys[0].ctx == NULL)
        return HM_ENOTSUP; /* loaded from a file: no keys */
    if (negative_id(prompt, n_prompt) || negative_id(tokens, n_tokens))
        return HM_ERANGE;
    /* Reserve first, so that nothing fails half-way through. */
    for (unsigned c = 0; c < t->params.n_channels; c++)
        for (size_t i = 0; i < t->ch[c].n_tables; i++) {
            int rc = reserve(&t->ch[c].tab[i], t->ch[c].vpr, n_tokens);
            if (rc != HM_OK)
                return rc;
        }
    window_set ps[HM_MAX_CHANNELS];
    int rc = HM_OK;
    unsigned made = 0;
    for (; made < t->params.n_channels && rc == HM_OK; made++)
        rc = prompt_windows(&ps[made], prompt, n_prompt,
                            t->params.ch[made].window);
    for (unsigned c = 0; rc == HM_OK && c < t->params.n_channels; c++) {
        tally_channel *tc = &t->ch[c];
        unsigned n = t->params.ch[c].window;
        if (!tc->per_key) {
            add_shared(t, c, prompt, n_prompt, tokens, n_tokens, &ps[c]);
            continue;
        }
        for (size_t j = 0; j < n_tokens; j++) {
            size_t p = n_prompt + j;
            uint32_t w[HM_MAX_CONTEXT], v = (uint32_t)tokens[j];
            int padded = p < n;
            tc->tokens++;
            tc->padded += (uint64_t)padded;
            if (padded && (t->flags & HM_TALLY_SKIP_PADDED)) {
                tc->dropped_padded++;
                continue;
            }
            doc_window(prompt, n_prompt, tokens, p, n, w);
            if (window_in(&ps[c], w, n)) {
                tc->dropped_prompt++;
                continue;
            }
            if (!filter_keeps(t, tc, w, n)) {
                tc->dropped_filter++;
                continue;
            }
            /* selfhash: the value is a function of (anchor, token), or
             * of the token alone when it is its own anchor */
            for (size_t k = 0; k < t->n_keys; k++) {
                tally_table *tb = &tc->tab[k];
                hm_kgw_step st;
                hm_kgw_prepare(&t->keys[k].ctx->ch[c], w, &st);
                uint64_t x = hm_kgw_value(&st, v);
                int self = hm_mix(st.hash_seed.a, st.hash_seed.g, v) <
                           st.min_hash;
                uint64_t h = self ? tuple_hash(NULL, 0, v)
                                  : tuple_hash(&st.anchor, 1, v);
                size_t s = slot_of(tb, h);
                if (HASH(tb, s) != 0)
                    continue;
                HASH(tb, s) = h;
                tb->n++;
                VAL(tb, s, 0) = x;
            }
        }
    }
    for (unsigned c = 0; c < made; c++)
        free(ps[c].h);
    if (rc == HM_OK)
        t->documents++;
    return rc;
}

/* ----------------------------------------------------------- merging */

static int compatible(const hm_tally *a, const hm_tally *b, char *errmsg,
                      size_t errlen)
{
    if (strcmp(a->spec, b->spec) != 0) {
        hm_errf(errmsg, errlen, "different specs: '%s' and '%s'", a->spec,
                b->spec);
        return 0;
    }
    if (a->flags != b->flags) {
        hm_errf(errmsg, errlen, "different flags: %u and %u", a->flags,
                b->flags);
        return 0;
    }
    if (a->filtering != b->filtering || a->filter_count != b->filter_count ||
        a->filter_digest != b->filter_digest) {
        hm_errf(errmsg, errlen,
                "different filters (%llu and %llu windows)",
                (unsigned long long)a->filter_count,
                (unsigned long long)b->filter_count);
        return 0;
    }
    if (a->n_keys != b->n_keys) {
        hm_errf(errmsg, errlen, "different numbers of keys: %zu and %zu",
                a->n_keys, b->n_keys);
        return 0;
    }
    for (size_t i = 0; i < a->n_keys; i++)
        if (strcmp(a->keys[i].fingerprint, b->keys[i].fingerprint) != 0 ||
            strcmp(a->keys[i].tenant, b->keys[i].tenant) != 0) {
            hm_errf(errmsg, errlen,
                    "key %zu differs: %s tenant '%s' and %s tenant '%s'", i,
                    a->keys[i].fingerprint, a->keys[i].tenant,
                    b->keys[i].fingerprint, b->keys[i].tenant);
            return 0;
        }
    return 1;
}

int hm_tally_merge(hm_tally *dst, const hm_tally *src, char *errmsg,
                   size_t errlen)
{
    if (dst == NULL || src == NULL)
        return HM_EINVAL;
    if (!compatible(dst, src, errmsg, errlen))
        return HM_EINVAL;
    for (unsigned c = 0; c < dst->params.n_channels; c++)
        for (size_t t = 0; t < dst->ch[c].n_tables; t++) {
            int rc = reserve(&dst->ch[c].tab[t], dst->ch[c].vpr,
                             src->ch[c].tab[t].n);
            if (rc != HM_OK)
                return rc;
        }
    for (unsigned c = 0; c < dst->params.n_channels; c++) {
        tally_channel *d = &dst->ch[c];
        const tally_channel *s = &src->ch[c];
        for (size_t t = 0; dst != src && t < d->n_tables; t++) {
            tally_table *dt = &d->tab[t];
            const tally_table *st = &s->tab[t];
            for (size_t i = 0; i < st->cap; i++) {
                if (HASH(st, i) == 0)
                    continue;
                size_t j = slot_of(dt, HASH(st, i));
                if (HASH(dt, j) != 0)
                    continue;
                dt->n++;
                memcpy(&dt->rec[j * dt->w], &st->rec[i * st->w],
                       dt->w * sizeof *dt->rec);
            }
        }
        d->tokens += s->tokens;
        d->padded += s->padded;
        d->dropped_padded += s->dropped_padded;
        d->dropped_prompt += s->dropped_prompt;
        d->dropped_filter += s->dropped_filter;
    }
    dst->documents += src->documents;
    return HM_OK;
}

/* ----------------------------------------------------------- testing */

/* Exact, order-independent sum of gumbel scores: each score is cut to a
 * multiple of 2^-64 (never rounded up, so the test can only become more
 * conservative, by at most n 2^-64) and added in 128-bit integers. */
typedef struct sum128 {
    uint64_t lo, hi;
} sum128;

/* x >= 0 (a score): its integer part and its fraction cut to 64 bits,
 * through conversions below 2^32, which need no branch. */
static void sum_add(sum128 *s, double x)
{
    double ip = (double)(int64_t)x; /* floor(x), as x >= 0 */
    uint64_t i = (uint64_t)(int64_t)ip;
    double y = (x - ip) * 0x1p32; /* exact: a power of 2 */
    double yi = (double)(int64_t)y;
    uint64_t f = (uint64_t)(int64_t)yi << 32 |
                 (uint64_t)(int64_t)((y - yi) * 0x1p32);
    uint64_t lo = s->lo + f;
    s->hi += i + (lo < s->lo);
    s->lo = lo;
}

static double sum_value(const sum128 *s)
{
    return (double)s->hi + (double)s->lo * 0x1p-64;
}

static double gumbel_score(uint64_t x)
{
    return -log(((double)(int64_t)(~x >> 12) + 0.5) * 0x1p-52);
}

/* The values at offset off of the occupied slots from slot *pos on, up
 * to 512 of them into buf: a scan without unpredictable branches. */
enum { SCAN = 512 };
static size_t scan_values(const tally_table *tc, size_t off, size_t *pos,
                          uint64_t *buf)
{
    size_t m = 0, i = *pos;
    for (; i < tc->cap && m < SCAN; i++) {
        buf[m] = VAL(tc, i, off);
        m += HASH(tc, i) != 0;
    }
    *pos = i;
    return m;
}

int hm_tally_result(const hm_tally *t, size_t key, unsigned channel,
                    hm_result *r)
{
    if (t == NULL || r == NULL || key >= t->n_keys ||
        channel >= t->params.n_channels)
        return HM_EINVAL;
    const hm_channel *ch = &t->params.ch[channel];
    const tally_channel *tch = &t->ch[channel];
    size_t off;
    const tally_table *tc = table_of(tch, key, &off);
    memset(r, 0, sizeof *r);
    r->documents = t->documents;
    r->tokens = tch->tokens;
    r->padded = tch->padded;
    r->dropped_padded = tch->dropped_padded;
    r->dropped_prompt = tch->dropped_prompt;
    r->dropped_filter = tch->dropped_filter;
    r->scored = tc->n;
    r->dropped_repeat = tch->tokens - tch->dropped_padded -
                        tch->dropped_prompt - tch->dropped_filter - tc->n;
    uint64_t n = tc->n;
    switch (ch->scheme) {
    case HM_SCHEME_GUMBEL: {
        sum128 s = {0, 0};
        uint64_t buf[SCAN];
        for (size_t pos = 0, m; (m = scan_values(tc, off, &pos, buf)) > 0;)
            for (size_t i = 0; i < m; i++)
                sum_add(&s, gumbel_score(buf[i]));
        r->score = sum_value(&s);
        r->expected = (double)n;
        r->log10_p = n ? hm_log10_sf_gamma((double)n, r->score) : 0;
        break;
    }
    case HM_SCHEME_KGW: {
        uint64_t green = 0;
        double p = ldexp((double)ch->green_below, -64);
        uint64_t buf[SCAN];
        for (size_t pos = 0, m; (m = scan_values(tc, off, &pos, buf)) > 0;)
            green += hm_k_count_below(buf, m, ch->green_below);
        r->score = (double)green;
        r->expected = (double)n * p;
        r->log10_p = hm_log10_sf_binom(green, n, p);
        break;
    }
    default: {
        uint64_t mask = ch->layers >= 64 ? ~UINT64_C(0)
                                         : (UINT64_C(1) << ch->layers) - 1;
        uint64_t ones = 0;
        uint64_t buf[SCAN];
        for (size_t pos = 0, m; (m = scan_values(tc, off, &pos, buf)) > 0;)
            ones += hm_k_popcount_sum(buf, m, mask);
        r->score = (double)ones;
        r->expected = (double)n * ch->layers / 2;
        r->log10_p = hm_log10_sf_binom(ones, n * ch->layers, 0.5);
        break;
    }
    }
    return HM_OK;
}

/* ------------------------------------------------------------- files */

/*
 * Format (version 1), all integers little-endian:
 *   "hallmark-tally 1\n"
 *   text header lines "NAME VALUE\n": spec, flags, "filter WINDOWS
 *   DIGEST" (0 0 without a filter),
 *   keys, then per key "key I FINGERPRINT HEX(TENANT)" (HEX is "-" for
 *   the default tenant), documents, then per channel
 *   "channel C TOKENS PADDED DROPPED_PADDED DROPPED_PROMPT DROPPED_FILTER
 *   TABLES" and per table (one, or one per key for kgw selfhash)
 *   "table T TUPLES",
 *   and "data\n";
 *   per channel and table, TUPLES records sorted by hash: u64 hash, then
 *   u64 PRF values (one per key, or one in a per-key table);
 *   a 32-byte SHA-256 of everything before it.
 */

typedef hm_out writer;
#define w_bytes hm_out_bytes

static void w_text(writer *w, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void w_text(writer *w, const char *fmt, ...)
{
    char buf[2048];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof buf)
        w->err = 1;
    else
        w_bytes(w, buf, (size_t)n);
}

static void w_u64(writer *w, uint64_t v)
{
    unsigned char b[8];
    for (int i = 0; i < 8; i++)
        b[i] = (unsigned char)(v >> (8 * i));
    w_bytes(w, b, 8);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

static void hex_encode(const char *s, char *out)
{
    static const char hex[] = "0123456789abcdef";
    size_t i = 0;
    for (; s[i]; i++) {
        out[2 * i] = hex[(unsigned char)s[i] >> 4];
        out[2 * i + 1] = hex[(unsigned char)s[i] & 15];
    }
    if (i == 0) { /* the default tenant */
        out[0] = '-';
        out[1] = '\0';
        return;
    }
    out[2 * i] = '\0';
}

static int write_tally(const hm_tally *t, writer *w)
{
    w_bytes(w, TALLY_MAGIC, strlen(TALLY_MAGIC));
    w_text(w, "spec %s\nflags %u\nfilter %llu %llu\nkeys %zu\n", t->spec,
           t->flags, (unsigned long long)t->filter_count,
           (unsigned long long)t->filter_digest, t->n_keys);
    for (size_t i = 0; i < t->n_keys; i++) {
        char hex[2 * HM_TENANT_MAX + 2];
        hex_encode(t->keys[i].tenant, hex);
        w_text(w, "key %zu %s %s\n", i, t->keys[i].fingerprint, hex);
    }
    w_text(w, "documents %llu\n", (unsigned long long)t->documents);
    for (unsigned c = 0; c < t->params.n_channels; c++) {
        const tally_channel *tc = &t->ch[c];
        w_text(w, "channel %u %llu %llu %llu %llu %llu %zu\n", c,
               (unsigned long long)tc->tokens, (unsigned long long)tc->padded,
               (unsigned long long)tc->dropped_padded,
               (unsigned long long)tc->dropped_prompt,
               (unsigned long long)tc->dropped_filter, tc->n_tables);
        for (size_t k = 0; k < tc->n_tables; k++)
            w_text(w, "table %zu %zu\n", k, tc->tab[k].n);
    }
    w_text(w, "data\n");
    for (unsigned c = 0; c < t->params.n_channels && !w->err; c++)
        for (size_t tk = 0; tk < t->ch[c].n_tables && !w->err; tk++) {
        const tally_table *tc = &t->ch[c].tab[tk];
        size_t vpr = t->ch[c].vpr;
        /* sorted (hash, slot) pairs give a canonical byte stream */
        uint64_t *order = malloc((tc->n ? tc->n : 1) * 2 * sizeof *order);
        if (order == NULL)
            return HM_ENOMEM;
        size_t k = 0;
        for (size_t i = 0; i < tc->cap; i++)
            if (HASH(tc, i) != 0) {
                order[2 * k] = HASH(tc, i);
                order[2 * k + 1] = i;
                k++;
            }
        qsort(order, k, 2 * sizeof *order, cmp_u64);
        for (size_t i = 0; i < k; i++) {
            w_u64(w, order[2 * i]);
            for (size_t j = 0; j < vpr; j++)
                w_u64(w, VAL(tc, order[2 * i + 1], j));
        }
        free(order);
        }
    return w->err ? HM_EIO : HM_OK;
}

static int write_tally_cb(const void *t, hm_out *o)
{
    return write_tally(t, o);
}

int hm_tally_save(const hm_tally *t, const char *path, char *errmsg,
                  size_t errlen)
{
    if (t == NULL || path == NULL)
        return HM_EINVAL;
    return hm_save_digested(path, write_tally_cb, t, errmsg, errlen);
}

/* Reading: the whole file is checked against its digest before parsing,
 * so a truncated or altered file is refused rather than half-read. */
static int read_file(const char *path, unsigned char **data, size_t *len,
                     char *errmsg, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        hm_errf(errmsg, errlen, "%s: %s", path, strerror(errno));
        return HM_EIO;
    }
    size_t cap = 1 << 16, n = 0;
    unsigned char *buf = malloc(cap);
    int rc = buf ? HM_OK : HM_ENOMEM;
    while (rc == HM_OK) {
        if (n == cap) {
            unsigned char *nb = cap > SIZE_MAX / 2 ? NULL : realloc(buf, cap * 2);
            if (nb == NULL) {
                rc = HM_ENOMEM;
                break;
            }
            buf = nb;
            cap *= 2;
        }
        size_t r = fread(buf + n, 1, cap - n, f);
        n += r;
        if (r == 0) {
            if (ferror(f)) {
                hm_errf(errmsg, errlen, "%s: read error", path);
                rc = HM_EIO;
            }
            break;
        }
    }
    fclose(f);
    if (rc != HM_OK) {
        free(buf);
        return rc;
    }
    *data = buf;
    *len = n;
    return HM_OK;
}

typedef struct reader {
    const unsigned char *p, *end;
    unsigned line;
    const char *path;
    char *errmsg;
    size_t errlen;
} reader;

/* Next header line into buf (without the newline). */
static int r_line(reader *r, char *buf, size_t cap)
{
    const unsigned char *nl = memchr(r->p, '\n', (size_t)(r->end - r->p));
    r->line++;
    if (nl == NULL || (size_t)(nl - r->p) >= cap) {
        hm_errf(r->errmsg, r->errlen, "%s:%u: truncated or overlong line",
                r->path, r->line);
        return HM_EFORMAT;
    }
    memcpy(buf, r->p, (size_t)(nl - r->p));
    buf[nl - r->p] = '\0';
    r->p = nl + 1;
    return HM_OK;
}

static int r_bad(reader *r, const char *what)
{
    hm_errf(r->errmsg, r->errlen, "%s:%u: %s", r->path, r->line, what);
    return HM_EFORMAT;
}

static uint64_t r_u64(reader *r)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)r->p[i] << (8 * i);
    r->p += 8;
    return v;
}

static int hex_decode(const char *hex, char *out, size_t cap)
{
    size_t n = strlen(hex);
    if (strcmp(hex, "-") == 0) {
        out[0] = '\0';
        return 0;
    }
    if (n % 2 || n / 2 >= cap)
        return -1;
    for (size_t i = 0; i < n / 2; i++) {
        unsigned v;
        if (sscanf(hex + 2 * i, "%2x", &v) != 1 || v == 0)
            return -1;
        out[i] = (char)v;
    }
    out[n / 2] = '\0';
    return 0;
}

static int parse_tally(hm_tally **out, reader *r)
{
    char line[2 * HM_TENANT_MAX + 1200];
    unsigned flags;
    size_t n_keys;
    int rc;
    if ((rc = r_line(r, line, sizeof line)) != HM_OK)
        return rc;
    if (strcmp(line, "hallmark-tally 1") != 0)
        return r_bad(r, strncmp(line, "hallmark-tally ", 15) == 0
                            ? "unsupported tally version"
                            : "not a hallmark tally file");
    if ((rc = r_line(r, line, sizeof line)) != HM_OK)
        return rc;
    if (strncmp(line, "spec ", 5) != 0)
        return r_bad(r, "expected 'spec'");
    char spec[1024];
    if (strlen(line + 5) >= sizeof spec)
        return r_bad(r, "spec too long");
    strcpy(spec, line + 5);
    if ((rc = r_line(r, line, sizeof line)) != HM_OK)
        return rc;
    if (sscanf(line, "flags %u", &flags) != 1 ||
        (flags & ~HM_TALLY_SKIP_PADDED))
        return r_bad(r, "bad 'flags'");
    unsigned long long fcount, fdigest;
    if ((rc = r_line(r, line, sizeof line)) != HM_OK)
        return rc;
    if (sscanf(line, "filter %llu %llu", &fcount, &fdigest) != 2)
        return r_bad(r, "bad 'filter'");
    if ((rc = r_line(r, line, sizeof line)) != HM_OK)
        return rc;
    if (sscanf(line, "keys %zu", &n_keys) != 1 || n_keys == 0 ||
        n_keys > MAX_KEYS)
        return r_bad(r, "bad 'keys'");
    hm_tally *t = tally_alloc(n_keys);
    if (t == NULL)
        return HM_ENOMEM;
    strcpy(t->spec, spec);
    t->flags = flags;
    t->filtering = fcount > 0;
    t->filter_count = fcount;
    t->filter_digest = fdigest;
    char msg[HM_ERRMSG_SIZE];
    rc = hm_spec_parse(&t->params, spec, msg, sizeof msg);
    if (rc == HM_OK && (rc = channels_init(t)) != HM_OK)
        goto fail;
    if (rc != HM_OK) {
        r->line--; /* the spec line */
        hm_errf(r->errmsg, r->errlen, "%s:2: bad spec: %s", r->path, msg);
        goto fail;
    }
    for (size_t i = 0; i < n_keys && rc == HM_OK; i++) {
        char fp[64], hex[2 * HM_TENANT_MAX + 8];
        size_t idx;
        if ((rc = r_line(r, line, sizeof line)) != HM_OK)
            goto fail;
        if (sscanf(line, "key %zu %63s %519s", &idx, fp, hex) != 3 ||
            idx != i || strlen(fp) != HM_FINGERPRINT_SIZE - 1 ||
            strncmp(fp, "hmk1-", 5) != 0 ||
            hex_decode(hex, t->keys[i].tenant, HM_TENANT_MAX) != 0) {
            rc = r_bad(r, "bad 'key' line");
            goto fail;
        }
        memcpy(t->keys[i].fingerprint, fp, HM_FINGERPRINT_SIZE);
    }
    unsigned long long docs;
    if ((rc = r_line(r, line, sizeof line)) != HM_OK)
        goto fail;
    if (sscanf(line, "documents %llu", &docs) != 1) {
        rc = r_bad(r, "bad 'documents'");
        goto fail;
    }
    t->documents = docs;
    for (unsigned c = 0; c < t->params.n_channels; c++) {
        tally_channel *tc = &t->ch[c];
        unsigned idx;
        unsigned long long v[5];
        size_t nt;
        if ((rc = r_line(r, line, sizeof line)) != HM_OK)
            goto fail;
        if (sscanf(line, "channel %u %llu %llu %llu %llu %llu %zu", &idx,
                   &v[0], &v[1], &v[2], &v[3], &v[4], &nt) != 7 ||
            idx != c || v[1] > v[0] || v[2] > v[1] || v[3] > v[0] - v[2] ||
            v[4] > v[0] - v[2] - v[3] || nt != tc->n_tables) {
            rc = r_bad(r, "bad 'channel' line");
            goto fail;
        }
        tc->tokens = v[0];
        tc->padded = v[1];
        tc->dropped_padded = v[2];
        tc->dropped_prompt = v[3];
        tc->dropped_filter = v[4];
        for (size_t k = 0; k < nt; k++) {
            size_t ik, n;
            if ((rc = r_line(r, line, sizeof line)) != HM_OK)
                goto fail;
            if (sscanf(line, "table %zu %zu", &ik, &n) != 2 || ik != k ||
                n > v[0] - v[2] - v[3] - v[4]) {
                rc = r_bad(r, "bad 'table' line");
                goto fail;
            }
            tc->tab[k].n = n; /* the count to read; reset below */
        }
    }
    if ((rc = r_line(r, line, sizeof line)) != HM_OK)
        goto fail;
    if (strcmp(line, "data") != 0) {
        rc = r_bad(r, "expected 'data'");
        goto fail;
    }
    for (unsigned c = 0; c < t->params.n_channels; c++)
        for (size_t k = 0; k < t->ch[c].n_tables; k++) {
            tally_table *tb = &t->ch[c].tab[k];
            size_t vpr = t->ch[c].vpr, count = tb->n;
            size_t rec = 8 * (vpr + 1);
            tb->n = 0;
            if (count > (size_t)(r->end - r->p) / rec) {
                rc = r_bad(r, "truncated data");
                goto fail;
            }
            if ((rc = reserve(tb, vpr, count)) != HM_OK)
                goto fail;
            uint64_t prev = 0;
            for (size_t i = 0; i < count; i++) {
                uint64_t h = r_u64(r);
                if (h <= prev) {
                    rc = r_bad(r, "tuples out of order");
                    goto fail;
                }
                prev = h;
                size_t sl = slot_of(tb, h);
                HASH(tb, sl) = h;
                tb->n++;
                for (size_t j = 0; j < vpr; j++)
                    VAL(tb, sl, j) = r_u64(r);
            }
        }
    if (r->p != r->end) {
        rc = r_bad(r, "trailing bytes after the data");
        goto fail;
    }
    *out = t;
    return HM_OK;
fail:
    hm_tally_free(t);
    return rc;
}

int hm_tally_load(hm_tally **out, const char *path, char *errmsg,
                  size_t errlen)
{
    unsigned char *data, md[32];
    size_t len;
    if (out == NULL || path == NULL)
        return HM_EINVAL;
    *out = NULL;
    int rc = read_file(path, &data, &len, errmsg, errlen);
    if (rc != HM_OK)
        return rc;
    if (len < strlen(TALLY_MAGIC) + 32 ||
        memcmp(data, TALLY_MAGIC, 15) != 0) {
        hm_errf(errmsg, errlen, "%s:1: not a hallmark tally file", path);
        free(data);
        return HM_EFORMAT;
    }
    if (EVP_Digest(data, len - 32, md, NULL, EVP_sha256(), NULL) != 1)
        rc = HM_ECRYPTO;
    else if (memcmp(md, data + len - 32, 32) != 0) {
        hm_errf(errmsg, errlen,
                "%s: checksum mismatch (truncated or modified file)", path);
        rc = HM_EFORMAT;
    } else {
        reader r = {data, data + len - 32, 0, path, errmsg, errlen};
        rc = parse_tally(out, &r);
    }
    free(data);
    return rc;
}
