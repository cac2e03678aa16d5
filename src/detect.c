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
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <pthread.h>
#include <string.h>
#include <time.h>
#include <sys/mman.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/rand.h>
#define XXH_INLINE_ALL /* short keys: no call, same hashes */
#include <xxhash.h>

#define TALLY_MAGIC "hallmark-tally 1\n"
#define MAX_KEYS 100000

/*
 * A channel's tuples are kept in 2^bits partitions by the top bits of
 * their hash, each sized to a few hundred KB.  A partition holds a run
 * of distinct records, then records waiting to join it, both in arrival
 * order.  A record is the hash, then the PRF values.
 *
 * Adding a tuple appends its record to its partition: a sequential write
 * to one of a few thousand places.  Deduplication waits until the
 * partition settles: the run's hashes and then the waiting ones go into
 * a hash set in scratch memory sized to the partition, which fits the
 * cache, and a waiting record whose hash is new joins the run, moved
 * down in place.  This replaces the random probe of a hash set of
 * hundreds of MB that a tuple used to cost (a cache miss and a TLB miss
 * each, which prefetching hid only in part), and a record takes 8(V+1)
 * bytes, without empty slots.  The set places hashes by a mix with a
 * random seed, so that text made to give hashes that share bits, which
 * anyone can make (the hash has no key), cannot be aimed at one run of
 * slots without the seed (a performance defence: the mix is no keyed
 * PRF, and no result depends on where a hash sits).
 *
 * The set is the one that inserting tuples in arrival order into a hash
 * set would give: of two records with one hash the earlier one stays, as
 * a run holds records older than any waiting one and a merge adds src's
 * records after dst's.  Only a file needs order: it lists each run sorted
 * by hash (write_tally), partition after partition, so by hash.  Each
 * channel keeps its statistic per key (integer sums, see sum128) and
 * adds a tuple's score when the tuple joins a run, so that a result
 * costs nothing more once the partitions have settled.
 *
 * A partition settles when an add finds it full and at least
 * max(SETTLE_MIN, an eighth of it) records waited from before that add
 * (part_full), and all settle before the set is read, grown or merged.  An
 * add only appends and grows partitions: on failure it truncates them
 * back (each partition remembers its length before the add), so that it
 * is all or nothing.
 */
typedef struct tally_part {
    size_t run;     /* records [0, run): distinct, in arrival order */
    size_t n;       /* records [run, n): waiting, in arrival order */
    size_t cap;     /* records allocated */
    size_t mark;    /* n before the add that last touched it */
    uint64_t epoch; /* that add (0: none) */
    uint64_t *rec;  /* records of w words */
} tally_part;

typedef struct tally_table {
    unsigned bits;     /* 2^bits partitions, once part is set */
    size_t w;          /* words per record: the hash, then the values */
    size_t n;          /* distinct tuples in the runs */
    size_t waiting;    /* records waiting, over all partitions */
    tally_part *part;  /* NULL before the first tuple or size hint */
    void *arena;       /* one block holding many partitions' records */
    size_t arena_bytes;
} tally_table;

/* Exact, order-independent sum of gumbel scores: each score, computed
 * by hallmark's own logarithm and lowered below its exact value
 * (gumbel_log.h), is cut to a multiple of 2^-64 and added in 128-bit
 * integers.  The sum is thus never above the exact one (the test can
 * only become more conservative), and below it by less than
 * n 2^-63 + 2^-49 S.  kgw and tournament counts use lo alone. */
typedef struct sum128 {
    uint64_t lo, hi;
} sum128;

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
    sum128 *sum;     /* per key: the statistic of its tuples */
    int summed;      /* sum is kept up to date (not after a load) */
} tally_channel;

typedef struct tally_key {
    char fingerprint[HM_FINGERPRINT_SIZE];
    char tenant[HM_TENANT_MAX];
    const hm_ctx *ctx; /* NULL for a loaded tally */
} tally_key;

struct hm_tally {
    hm_ctx params; /* channel parameters (no keys used) */
    char spec[HM_SPEC_SIZE];
    unsigned flags;
    int filtering;          /* a window filter is set */
    uint64_t filter_count;  /* its windows, over all channels */
    uint64_t filter_digest; /* order-independent digest of them */
    const hm_sketch *sketch; /* a sketch filter instead of the window sets */
    size_t n_keys;
    tally_key *keys;
    uint64_t documents;
    uint64_t epoch;          /* adds and merges so far */
    int unsettled;           /* records may wait */
    int unsummed;            /* a channel's sums are missing (a load) */
    pthread_mutex_t settling; /* held by the one settling */
    uint64_t probe_seed;     /* settle's hash-set slots (random) */
    uint64_t *scratch;       /* for settling */
    size_t scratch_words;
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

/* hs[kept[q]] = tuple_hash of the tuple at ids + kept[q] (n ids, then
 * the token), for q < nk.  The ids are the little-endian bytes that
 * tuple_hash builds on such machines, so XXH3 reads them in place, and a
 * constant length for the usual windows lets its code for that length
 * alone be inlined into the loop. */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define HASH_LOOP(len)                                                      \
    for (size_t q = 0; q < nk; q++)                                         \
        hs[kept[q]] = XXH3_64bits(ids + kept[q], (len))
__attribute__((flatten)) static void hash_short(const uint32_t *ids,
                                                unsigned n,
                                                const size_t *kept,
                                                size_t nk, uint64_t *hs)
{
    switch (n) {
    case 1: HASH_LOOP(8); break;
    case 2: HASH_LOOP(12); break;
    case 3: HASH_LOOP(16); break;
    case 4: HASH_LOOP(20); break;
    }
}

static void hash_tuples(const uint32_t *ids, unsigned n, const size_t *kept,
                        size_t nk, uint64_t *hs)
{
    if (n >= 1 && n <= 4)
        hash_short(ids, n, kept, nk, hs);
    else /* wider windows: XXH3 called, not inlined whole */
        HASH_LOOP(4 * (size_t)(n + 1));
    for (size_t q = 0; q < nk; q++) /* as tuple_hash */
        hs[kept[q]] += hs[kept[q]] == 0;
}
#undef HASH_LOOP
#else
static void hash_tuples(const uint32_t *ids, unsigned n, const size_t *kept,
                        size_t nk, uint64_t *hs)
{
    for (size_t q = 0; q < nk; q++)
        hs[kept[q]] = tuple_hash(ids + kept[q], n, ids[n + kept[q]]);
}
#endif

/* ------------------------------------------------------- tuple sets */

enum {
    PART_BYTES = 256 << 10, /* a partition's target size */
    PART_BITS_MAX = 16,
    SETTLE_MIN = 64,        /* waiting records worth settling early */
    DIGIT_BITS_MAX = 16,    /* counting sort of a run, for its file */
    INSERT_MOVES = 8,       /* insertion sort moves a record, at most */
    SET_BYTES = 512 << 10   /* settle's hash set, when not larger */
};

/* Add to s the sum part[0] + part[1] 2^-32 + part[2] 2^-64 of at most 2^32
 * scores, from hm_k_gumbel_parts. */
static void add_parts(sum128 *s, const uint64_t part[3])
{
    /* fh 2^32 + fl as 128 bits, added to s */
    uint64_t fh = part[1], lo = part[2], hi = 0, add = fh << 32;
    lo += add;
    hi += (fh >> 32) + (lo < add);
    uint64_t sl = s->lo + lo;
    s->hi += part[0] + hi + (sl < s->lo);
    s->lo = sl;
}

/* The sum as a double, its bits past the 53rd dropped: rounded toward
 * zero, so that it too is at most the exact sum. */
static double sum_value(const sum128 *s)
{
    int nb = s->hi ? 128 - __builtin_clzll(s->hi)
                   : s->lo ? 64 - __builtin_clzll(s->lo) : 0;
    if (nb <= 53)
        return (double)s->lo * 0x1p-64; /* exact */
    int drop = nb - 53;
    uint64_t m = drop >= 64 ? s->hi >> (drop - 64)
                            : s->hi << (64 - drop) | s->lo >> drop;
    return ldexp((double)m, drop - 64);
}

/* How a table's values score, and where their sums go (sum NULL: the
 * sums are not kept, see tally_channel.summed). */
typedef struct scorer {
    int scheme;
    uint64_t below, mask;
    sum128 *sum; /* one per value of a record */
} scorer;

static scorer scorer_of(const hm_tally *t, unsigned c, size_t table)
{
    const hm_channel *ch = &t->params.ch[c];
    const tally_channel *tc = &t->ch[c];
    scorer sc = {ch->scheme, ch->green_below,
                 ch->layers >= 64 ? ~UINT64_C(0)
                                  : (UINT64_C(1) << ch->layers) - 1,
                 NULL};
    if (tc->summed)
        sc.sum = tc->sum + (tc->per_key ? table : 0);
    return sc;
}

/* Add the scores of the values of m records of w words, the gumbel ones
 * summed by a vectorised kernel (hm_k_gumbel_parts). */
static void score_records(const scorer *sc, const uint64_t *r, size_t m,
                          size_t w)
{
    if (sc->sum == NULL)
        return;
    for (size_t k = 0; k + 1 < w; k++) {
        sum128 *s = &sc->sum[k];
        const uint64_t *x = r + 1 + k;
        if (sc->scheme == HM_SCHEME_GUMBEL) {
            for (size_t i0 = 0; i0 < m; i0 += UINT32_MAX) {
                uint64_t part[3];
                hm_k_gumbel_parts(x + i0 * w, w,
                                  m - i0 < UINT32_MAX ? m - i0 : UINT32_MAX,
                                  part);
                add_parts(s, part);
            }
        } else if (sc->scheme == HM_SCHEME_KGW) {
            for (size_t i = 0; i < m; i++)
                s->lo += x[i * w] < sc->below;
        } else {
            for (size_t i = 0; i < m; i++)
                s->lo += hm_popcount64(x[i * w] & sc->mask);
        }
    }
}

static void copy_rec(uint64_t *dst, const uint64_t *src, size_t w)
{
    if (w == 2) {
        dst[0] = src[0];
        dst[1] = src[1];
    } else {
        memcpy(dst, src, w * sizeof *dst);
    }
}

static size_t part_of(const tally_table *tb, uint64_t h)
{
    return tb->bits ? (size_t)(h >> (64 - tb->bits)) : 0;
}

/* Partition bits for count records: partitions near PART_BYTES. */
static unsigned bits_for(size_t count, size_t w)
{
    size_t target = PART_BYTES / (w * sizeof(uint64_t));
    unsigned b = 0;
    if (target < 256)
        target = 256;
    while (b < PART_BITS_MAX && count / target >= ((size_t)1 << b))
        b++;
    return b;
}

/* Whether records r sit in tb's arena (and so are not to be freed
 * alone). */
static int in_arena(const tally_table *tb, const uint64_t *r)
{
    uintptr_t a = (uintptr_t)tb->arena, x = (uintptr_t)r;
    return tb->arena != NULL && x >= a && x - a < tb->arena_bytes;
}

/* Room for need records in partition p of tb (at least half as many
 * again when it grows by itself, exactly need when exact). */
static int part_room(tally_table *tb, tally_part *p, size_t need, int exact)
{
    const size_t w = tb->w;
    if (need <= p->cap)
        return HM_OK;
    size_t cap = need;
    if (!exact && cap - p->cap < p->cap / 2 + 16)
        cap = p->cap + p->cap / 2 + 16;
    if (cap > SIZE_MAX / sizeof(uint64_t) / w)
        return HM_ENOMEM;
    uint64_t *r;
    if (in_arena(tb, p->rec)) { /* moves out of it */
        if ((r = malloc(cap * w * sizeof *r)) == NULL)
            return HM_ENOMEM;
        memcpy(r, p->rec, p->n * w * sizeof *r);
    } else if ((r = realloc(p->rec, cap * w * sizeof *r)) == NULL) {
        return HM_ENOMEM;
    }
    p->rec = r;
    p->cap = cap;
    return HM_OK;
}

/* Room for p->n + extra records in every partition of tb, all in one new
 * arena (the records move to it), when it would be large: an add writes
 * the partitions' memory for the first time, and a page fault for every
 * 4 KB of it (with the page cleared) cost more than the writes.  The
 * arena is on huge pages where the system gives them on request (most
 * of the gain: also no TLB misses on the thousand write streams, which
 * in a VM cost a two-level page walk; in one, the first huge pages a
 * process touches after other work can be slow to come, so a process's
 * first large tally may gain nothing).  On failure tb is as it was. */
static int table_arena(tally_table *tb, size_t extra)
{
    const size_t np = (size_t)1 << tb->bits, w = tb->w;
    const size_t huge = (size_t)2 << 20, rb = w * sizeof(uint64_t);
    size_t bytes = 0;
    for (size_t i = 0; i < np; i++) {
        size_t cap = tb->part[i].n + extra;
        if (cap < tb->part[i].n || cap > (SIZE_MAX / 2 - bytes) / rb)
            return HM_ENOMEM;
        bytes += (cap * rb + 63) & ~(size_t)63; /* each on a cache line */
    }
    if (bytes < 2 * huge)
        return HM_ENOMEM; /* not worth it: partition by partition */
    bytes = (bytes + huge - 1) & ~(huge - 1);
    void *a = NULL;
    if (posix_memalign(&a, huge, bytes) != 0)
        return HM_ENOMEM;
#ifdef MADV_HUGEPAGE
    (void)madvise(a, bytes, MADV_HUGEPAGE); /* advice only */
#endif
    unsigned char *at = a;
    for (size_t i = 0; i < np; i++) {
        tally_part *p = &tb->part[i];
        size_t cap = p->n + extra;
        if (p->n > 0)
            memcpy(at, p->rec, p->n * rb);
        if (!in_arena(tb, p->rec))
            free(p->rec);
        p->rec = (uint64_t *)(void *)at;
        p->cap = cap;
        at += (cap * rb + 63) & ~(size_t)63;
    }
    free(tb->arena);
    tb->arena = a;
    tb->arena_bytes = bytes;
    return HM_OK;
}

static void table_free(tally_table *tb)
{
    for (size_t i = 0; tb->part != NULL && i < (size_t)1 << tb->bits; i++)
        if (!in_arena(tb, tb->part[i].rec))
            free(tb->part[i].rec);
    free(tb->part);
    free(tb->arena);
    size_t w = tb->w;
    memset(tb, 0, sizeof *tb);
    tb->w = w;
}

/* Scratch words for settling, kept by the tally between settles. */
static uint64_t *scratch(hm_tally *t, size_t words)
{
    if (words > t->scratch_words) {
        if (words > SIZE_MAX / sizeof(uint64_t))
            return NULL;
        uint64_t *s = realloc(t->scratch, words * sizeof *s);
        if (s == NULL)
            return NULL;
        t->scratch = s;
        t->scratch_words = words;
    }
    return t->scratch;
}

/* Sort n (hash, x) pairs by hash, stably, through tmp of 2n words:
 * runs of eight by insertion, then merges. */
static void merge_sort_pairs(uint64_t *a, uint64_t *tmp, size_t n)
{
    enum { RUN = 8 };
    for (size_t lo = 0; lo < n; lo += RUN) {
        size_t hi = n - lo < RUN ? n : lo + RUN;
        for (size_t i = lo + 1; i < hi; i++) {
            uint64_t h = a[2 * i], x = a[2 * i + 1];
            size_t j = i;
            for (; j > lo && a[2 * (j - 1)] > h; j--) {
                a[2 * j] = a[2 * (j - 1)];
                a[2 * j + 1] = a[2 * (j - 1) + 1];
            }
            a[2 * j] = h;
            a[2 * j + 1] = x;
        }
    }
    uint64_t *src = a, *dst = tmp;
    for (size_t width = RUN; width < n; width *= 2) {
        for (size_t lo = 0; lo < n; lo += 2 * width) {
            size_t mid = n - lo < width ? n : lo + width;
            size_t hi = n - lo < 2 * width ? n : lo + 2 * width;
            size_t i = lo, j = mid, k = lo;
            while (i < mid && j < hi) { /* ties from the left: stable */
                size_t from = src[2 * j] < src[2 * i] ? j++ : i++;
                dst[2 * k] = src[2 * from];
                dst[2 * k++ + 1] = src[2 * from + 1];
            }
            memcpy(dst + 2 * k, src + 2 * i, (mid - i) * 2 * sizeof *dst);
            k += mid - i;
            memcpy(dst + 2 * k, src + 2 * j, (hi - j) * 2 * sizeof *dst);
        }
        uint64_t *swap = src;
        src = dst;
        dst = swap;
    }
    if (src != a)
        memcpy(a, src, 2 * n * sizeof *a);
}

/* Sort n (hash, x) pairs of distinct hashes, which a counting sort on the
 * hash bits after the partition's has left in runs of a few, by hash,
 * through tmp of 2n words if need be.  The insertion sort stops when it
 * has moved more than INSERT_MOVES pairs a record, many times what random
 * hashes need, and the merge sort finishes from where it stopped (both
 * are stable, which distinct hashes do not need). */
static void sort_pairs(uint64_t *pair, uint64_t *tmp, size_t n)
{
    size_t budget = INSERT_MOVES * n;
    for (size_t i = 1; i < n; i++) {
        uint64_t h = pair[2 * i], at = pair[2 * i + 1];
        size_t j = i;
        for (; j > 0 && pair[2 * (j - 1)] > h; j--) {
            pair[2 * j] = pair[2 * (j - 1)];
            pair[2 * j + 1] = pair[2 * (j - 1) + 1];
        }
        pair[2 * j] = h;
        pair[2 * j + 1] = at;
        if (i - j > budget) {
            merge_sort_pairs(pair, tmp, n);
            return;
        }
        budget -= i - j;
    }
}

/* The n distinct records rec (w words, in one partition of 2^bits) in
 * order of hash: *order gets n (hash, index) pairs, in *work (of
 * *words words, grown as needed).  A counting sort on the hash bits after
 * the partition's, about two records a digit, then sort_pairs. */
static int run_order(const uint64_t *rec, size_t n, size_t w, unsigned bits,
                     uint64_t **work, size_t *words, const uint64_t **order)
{
    unsigned d = 1;
    while (d < DIGIT_BITS_MAX && ((size_t)2 << d) < n)
        d++;
    const size_t digits = (size_t)1 << d;
    if (n > (SIZE_MAX / sizeof(uint64_t) - digits) / 4)
        return HM_ENOMEM;
    const size_t need = 4 * n + digits;
    if (need > *words) {
        uint64_t *m = realloc(*work, need * sizeof *m);
        if (m == NULL)
            return HM_ENOMEM;
        *work = m;
        *words = need;
    }
    uint64_t *pair = *work, *tmp = pair + 2 * n, *start = tmp + 2 * n;
    const unsigned shift = 64 - d;
    memset(start, 0, digits * sizeof *start);
#define DIGIT(h) ((size_t)(((h) << bits) >> shift))
    for (size_t i = 0; i < n; i++)
        start[DIGIT(rec[i * w])]++;
    for (size_t g = 0, sum = 0; g < digits; g++) {
        size_t m = start[g];
        start[g] = sum;
        sum += m;
    }
    for (size_t i = 0; i < n; i++) {
        size_t j = start[DIGIT(rec[i * w])]++;
        pair[2 * j] = rec[i * w];
        pair[2 * j + 1] = i;
    }
#undef DIGIT
    sort_pairs(pair, tmp, n);
    *order = pair;
    return HM_OK;
}

/* Settle the records of p that wait before upto: each whose hash is in
 * neither the run nor among the waiting ones before it joins the run, in
 * arrival order, and is scored.  The hash set is in scratch memory, with
 * open addressing from the slot that the hash mixed with the tally's
 * random seed picks (the hashes are never 0), and its slots are fetched a
 * few records ahead. */
static int settle_part(hm_tally *t, const scorer *sc, tally_table *tb,
                       tally_part *p, size_t upto)
{
    const size_t w = tb->w, run = p->run;
    if (upto == run)
        return HM_OK;
    /* a load of at most a half, and of at most a quarter while the set
     * stays within SET_BYTES: fewer and shorter probe runs */
    unsigned lg = 6;
    while (((size_t)1 << lg) < 2 * upto)
        lg++;
    if (((size_t)8 << lg) < SET_BYTES)
        lg++;
    const size_t slots = (size_t)1 << lg, mask = slots - 1;
    uint64_t *set = scratch(t, slots);
    if (set == NULL)
        return HM_ENOMEM;
    memset(set, 0, slots * sizeof *set);
    const unsigned sh = 64 - lg;
    const uint64_t seed = t->probe_seed;
    uint64_t *rec = p->rec;
#define SLOT(h) ((size_t)(hm_mix(seed, UINT64_C(0x9E3779B97F4A7C15), (h)) >> sh))
    /* the slots of the next AHEAD records are found and fetched ahead */
    enum { AHEAD = 8 };
    size_t ring[AHEAD];
    for (size_t i = 0; i < AHEAD && i < upto; i++) {
        ring[i] = SLOT(rec[i * w]);
        __builtin_prefetch(set + ring[i], 1);
    }
    size_t out = 0;
    for (size_t i = 0; i < upto; i++) {
        uint64_t h = rec[i * w];
        size_t s = ring[i % AHEAD];
        if (i + AHEAD < upto) {
            size_t a = SLOT(rec[(i + AHEAD) * w]);
            ring[i % AHEAD] = a;
            __builtin_prefetch(set + a, 1);
        }
        while (set[s] != 0 && set[s] != h)
            s = (s + 1) & mask;
        if (set[s] == h) /* a run's hashes are distinct: never there */
            continue;
        set[s] = h;
        if (out != i)
            copy_rec(rec + out * w, rec + i * w, w);
        out++;
    }
#undef SLOT
    const size_t fresh = out - run, q = upto - run;
    score_records(sc, rec + run * w, fresh, w);
    const size_t tail = p->n - upto;
    if (tail > 0)
        memmove(rec + out * w, rec + upto * w, tail * w * sizeof *rec);
    if (p->mark >= upto)
        p->mark -= upto - out;
    p->run = out;
    p->n = out + tail;
    tb->n += fresh;
    tb->waiting -= q;
    return HM_OK;
}

static int settle_table(hm_tally *t, unsigned c, size_t ti)
{
    tally_table *tb = &t->ch[c].tab[ti];
    if (tb->waiting == 0)
        return HM_OK;
    scorer sc = scorer_of(t, c, ti);
    for (size_t i = 0; i < (size_t)1 << tb->bits; i++) {
        int rc = settle_part(t, &sc, tb, &tb->part[i], tb->part[i].n);
        if (rc != HM_OK)
            return rc;
    }
    return HM_OK;
}

static void sum_channel(hm_tally *t, unsigned c);

/* Settle every partition, and when sums is set make every channel's
 * sums (a loaded tally has none until a result asks): before the sets or
 * the sums are read.  Only where the tuples sit changes, so the functions
 * taking a const tally do it too, and as they may run at once on one
 * tally (hm_tally_new(3), Threads), the first does it under a lock while
 * the others wait. */
static int settle(const hm_tally *ct, int sums)
{
    hm_tally *t = (hm_tally *)ct;
    if (!__atomic_load_n(&t->unsettled, __ATOMIC_ACQUIRE) &&
        (!sums || !__atomic_load_n(&t->unsummed, __ATOMIC_ACQUIRE)))
        return HM_OK;
    (void)pthread_mutex_lock(&t->settling); /* a default mutex: no error */
    int rc = HM_OK;
    if (__atomic_load_n(&t->unsettled, __ATOMIC_RELAXED)) {
        for (unsigned c = 0; rc == HM_OK && c < t->params.n_channels; c++)
            for (size_t i = 0; rc == HM_OK && i < t->ch[c].n_tables; i++)
                rc = settle_table(t, c, i);
        if (rc == HM_OK)
            __atomic_store_n(&t->unsettled, 0, __ATOMIC_RELEASE);
    }
    if (rc == HM_OK && sums && __atomic_load_n(&t->unsummed, __ATOMIC_RELAXED)) {
        for (unsigned c = 0; c < t->params.n_channels; c++)
            if (!t->ch[c].summed)
                sum_channel(t, c);
        __atomic_store_n(&t->unsummed, 0, __ATOMIC_RELEASE);
    }
    pthread_mutex_unlock(&t->settling);
    return rc;
}

/* A change is coming: the next reader settles. */
static void unsettle(hm_tally *t)
{
    __atomic_store_n(&t->unsettled, 1, __ATOMIC_RELAXED);
}

/* Give tb 2^bits partitions (more than it has), keeping its tuples: each
 * run splits by the next bits of the hash.  Everything is allocated before
 * anything moves, so that on failure tb is as it was. */
static int repartition(hm_tally *t, unsigned c, size_t ti, unsigned bits)
{
    tally_table *tb = &t->ch[c].tab[ti];
    const size_t w = tb->w, np = (size_t)1 << bits;
    if (tb->part != NULL && bits <= tb->bits)
        return HM_OK;
    tally_part *parts = calloc(np, sizeof *parts);
    if (parts == NULL)
        return HM_ENOMEM;
    if (tb->part == NULL) {
        tb->part = parts;
        tb->bits = bits;
        return HM_OK;
    }
    int rc = settle_table(t, c, ti);
    if (rc != HM_OK) {
        free(parts);
        return rc;
    }
    const size_t op = (size_t)1 << tb->bits;
    const unsigned shift = 64 - bits;
    tally_table fresh = {.w = w}; /* no arena */
    for (size_t o = 0; o < op; o++)
        for (size_t i = 0; i < tb->part[o].run; i++)
            parts[(size_t)(tb->part[o].rec[i * w] >> shift)].n++;
    for (size_t i = 0; i < np && rc == HM_OK; i++) {
        size_t need = parts[i].n + parts[i].n / 8 + 16;
        parts[i].n = 0;
        rc = part_room(&fresh, &parts[i], need, 1);
    }
    if (rc != HM_OK) {
        for (size_t i = 0; i < np; i++)
            free(parts[i].rec);
        free(parts);
        return rc;
    }
    for (size_t o = 0; o < op; o++) {
        tally_part *src = &tb->part[o];
        /* a new partition's records all come from one old one, so
         * they keep their order */
        for (size_t i = 0; i < src->run; i++) {
            tally_part *dst = &parts[(size_t)(src->rec[i * w] >> shift)];
            copy_rec(dst->rec + dst->n++ * w, src->rec + i * w, w);
            dst->run = dst->n;
        }
        if (!in_arena(tb, src->rec))
            free(src->rec);
    }
    free(tb->part);
    free(tb->arena);
    tb->arena = NULL;
    tb->arena_bytes = 0;
    tb->part = parts;
    tb->bits = bits;
    return HM_OK;
}

/* Make tb ready for extra more records: partitions for the size it will
 * reach, and with exact (a size hint), room in every partition for its
 * share of them.  Growing the partitions is only worth it, so a failure
 * without exact is no error. */
static int table_prepare(hm_tally *t, unsigned c, size_t ti, size_t extra,
                         int exact)
{
    tally_table *tb = &t->ch[c].tab[ti];
    if (extra > SIZE_MAX / 2 - tb->n - tb->waiting)
        return HM_ENOMEM;
    size_t total = tb->n + tb->waiting + extra;
    unsigned bits = bits_for(total, tb->w);
    /* grow the partitions when they would be four times the target */
    if (tb->part == NULL || bits >= tb->bits + 2 || (exact && bits > tb->bits)) {
        int rc = repartition(t, c, ti, tb->part ? bits : bits_for(extra, tb->w));
        if (rc != HM_OK && (exact || tb->part == NULL))
            return rc;
    }
    if (!exact)
        return HM_OK;
    const size_t np = (size_t)1 << tb->bits, share = extra / np;
    const size_t room = share + share / 8 + 16;
    size_t grow = 0;
    for (size_t i = 0; i < np; i++)
        grow += tb->part[i].n + room > tb->part[i].cap;
    if (grow == np && table_arena(tb, room) == HM_OK)
        return HM_OK; /* every partition grows: all in one arena */
    for (size_t i = 0; i < np; i++) {
        tally_part *p = &tb->part[i];
        int rc = part_room(tb, p, p->n + room, 1);
        if (rc != HM_OK)
            return rc;
    }
    return HM_OK;
}

/* A full partition p: settle the records that waited before the add
 * under way (when there are enough to be worth it), then grow it unless
 * that left a quarter of it free.  Failing to settle is no error (the
 * records keep waiting); failing to grow is. */
static __attribute__((noinline)) int part_full(hm_tally *t, const scorer *sc,
                                               tally_table *tb, tally_part *p)
{
    size_t older = p->mark - p->run;
    if (older >= SETTLE_MIN && older >= p->cap / 8)
        (void)settle_part(t, sc, tb, p, p->mark);
    if (p->n < p->cap - p->cap / 4)
        return HM_OK;
    return part_room(tb, p, p->n + 1, 0);
}

/* Room for one more record of tb in the partition of hash h, on behalf
 * of the add (or merge) epoch: the record to fill, or NULL without
 * memory.  Each partition remembers its length when an epoch first
 * reaches it, for undo.  Records pushed by the epoch stay waiting until
 * it is over, so that undo can truncate them. */
static inline uint64_t *table_push(hm_tally *t, const scorer *sc,
                                   tally_table *tb, uint64_t h,
                                   uint64_t epoch)
{
    tally_part *p = &tb->part[part_of(tb, h)];
    if (p->epoch != epoch) {
        p->epoch = epoch;
        p->mark = p->n;
    }
    if (p->n == p->cap && part_full(t, sc, tb, p) != HM_OK)
        return NULL;
    tb->waiting++;
    uint64_t *r = p->rec + p->n++ * tb->w;
    r[0] = h;
    return r;
}

/* Forget the records that epoch pushed. */
static void tally_undo(hm_tally *t, uint64_t epoch)
{
    for (unsigned c = 0; c < t->params.n_channels; c++)
        for (size_t ti = 0; ti < t->ch[c].n_tables; ti++) {
            tally_table *tb = &t->ch[c].tab[ti];
            for (size_t i = 0; tb->part && i < (size_t)1 << tb->bits; i++) {
                tally_part *p = &tb->part[i];
                if (p->epoch == epoch) {
                    tb->waiting -= p->n - p->mark;
                    p->n = p->mark;
                    p->epoch = 0;
                }
            }
        }
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
        tc->sum = calloc(t->n_keys, sizeof *tc->sum);
        tc->summed = 1;
        if (tc->tab == NULL || tc->sum == NULL)
            return HM_ENOMEM;
        for (size_t i = 0; i < tc->n_tables; i++)
            tc->tab[i].w = tc->vpr + 1;
    }
    return HM_OK;
}

/* The table holding key k's tuples. */
static const tally_table *table_of(const tally_channel *tc, size_t k)
{
    return &tc->tab[tc->per_key ? k : 0];
}

static hm_tally *tally_alloc(size_t n_keys)
{
    hm_tally *t = calloc(1, sizeof *t);
    if (t == NULL)
        return NULL;
    t->keys = calloc(n_keys ? n_keys : 1, sizeof *t->keys);
    if (t->keys == NULL || pthread_mutex_init(&t->settling, NULL) != 0) {
        free(t->keys);
        free(t);
        return NULL;
    }
    /* the seed only places hashes in settle's sets: without one from the
     * system, an address and the clock still vary it from run to run */
    if (RAND_bytes((unsigned char *)&t->probe_seed, sizeof t->probe_seed) != 1)
        t->probe_seed = hm_mix((uint64_t)(uintptr_t)t,
                               UINT64_C(0x9E3779B97F4A7C15),
                               (uint64_t)time(NULL));
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
    char spec[HM_SPEC_SIZE];
    int rc = hm_ctx_one_spec(ctxs, n_keys, "a tally", spec, errmsg, errlen);
    if (rc != HM_OK)
        return rc;
    hm_tally *t = tally_alloc(n_keys);
    if (t == NULL)
        return HM_ENOMEM;
    memcpy(t->spec, spec, sizeof spec);
    t->flags = flags;
    rc = hm_spec_parse(&t->params, spec, errmsg, errlen);
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
        if (tc->sum != NULL)
            memset(tc->sum, 0, t->n_keys * sizeof *tc->sum);
        tc->summed = 1;
    }
    t->documents = 0;
    t->unsummed = 0;
    free(t->scratch);
    t->scratch = NULL;
    t->scratch_words = 0;
}

void hm_tally_free(hm_tally *t)
{
    if (t == NULL)
        return;
    hm_tally_clear(t);
    for (unsigned c = 0; c < HM_MAX_CHANNELS; c++) {
        free(t->ch[c].tab);
        free(t->ch[c].sum);
        free(t->ch[c].filter.h);
    }
    free(t->keys);
    pthread_mutex_destroy(&t->settling);
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

/* Channels with one table for all keys, in chunks: apply the rules and
 * hash the tuples, append a record for each tuple kept, then compute the
 * PRF values key by key, the whole chunk at once (AES-NI/VAES kernel over
 * the sliding windows when there is one, batched AES otherwise).  Values
 * are computed for repeated tuples too: a few ns, less than finding out
 * that they are repeats would cost here. */
static int add_shared(hm_tally *t, unsigned c, const int32_t *prompt,
                      size_t np, const int32_t *tokens, size_t nt,
                      const window_set *ps, uint64_t epoch)
{
    enum { CHUNK = 256, VALUES = 2048 };
    tally_channel *tc = &t->ch[c];
    tally_table *tb = &tc->tab[0];
    const unsigned n = t->params.ch[c].window;
    const size_t nk_keys = t->n_keys;
    const scorer sc = scorer_of(t, c, 0);
    uint32_t ids[HM_MAX_CONTEXT + CHUNK + 16], wins[CHUNK * HM_MAX_CONTEXT];
    uint64_t hs[CHUNK], x[CHUNK], buf[VALUES];
    size_t kept[CHUNK];
    hm_seed seeds[CHUNK];
    unsigned char pad[16];
    const int wide = n <= 4 && hm_k_prf_windows_ok() &&
                     t->keys[0].ctx->ch[c].cmac.aes.use_ni;
    /* all the values of a chunk are computed before its records are
     * pushed (a push may move the records pushed before it) */
    size_t chunk = VALUES / nk_keys;
    chunk = chunk < 1 ? 1 : chunk > CHUNK ? CHUNK : chunk;
    uint64_t *vals = buf; /* chunk * nk_keys values */
    if (nk_keys > VALUES && (vals = malloc(nk_keys * sizeof *vals)) == NULL)
        return HM_ENOMEM;
    int rc = HM_OK;
    for (size_t j0 = 0; j0 < nt; j0 += chunk) {
        size_t m = nt - j0 < chunk ? nt - j0 : chunk, p0 = np + j0;
        for (unsigned i = 0; i < n; i++) {
            size_t back = n - i;
            size_t q = p0 - back;
            ids[i] = p0 < back  ? HM_PAD_ID
                     : q < np ? (uint32_t)prompt[q]
                              : (uint32_t)tokens[q - np];
        }
        for (size_t i = 0; i < m; i++)
            ids[n + i] = (uint32_t)tokens[j0 + i];
        memset(ids + n + m, 0, 16 * sizeof *ids); /* the kernel reads on */
        /* the counts in registers: as the channel's fields, a store and
         * a load a token that the next token waits for */
        size_t nk = 0;
        uint64_t padded_n = 0, drop_pad = 0, drop_prompt = 0, drop_filter = 0;
        for (size_t i = 0; i < m; i++) {
            int padded = p0 + i < n;
            padded_n += (uint64_t)padded;
            if (padded && (t->flags & HM_TALLY_SKIP_PADDED)) {
                drop_pad++;
                continue;
            }
            if (ps->cap != 0 && window_in(ps, ids + i, n)) {
                drop_prompt++;
                continue;
            }
            if (!filter_keeps(t, tc, ids + i, n)) {
                drop_filter++;
                continue;
            }
            kept[nk++] = i;
        }
        tc->tokens += m;
        tc->padded += padded_n;
        tc->dropped_padded += drop_pad;
        tc->dropped_prompt += drop_prompt;
        tc->dropped_filter += drop_filter;
        if (nk == 0)
            continue;
        hash_tuples(ids, n, kept, nk, hs);
        if (!wide)
            for (size_t q = 0; q < nk; q++)
                memcpy(wins + q * n, ids + kept[q], n * sizeof *wins);
        for (size_t k = 0; k < nk_keys; k++) {
            const hm_cmac *cm = &t->keys[k].ctx->ch[c].cmac;
            if (wide) {
                hm_cmac_pad(cm, n, pad);
                size_t done = hm_k_prf_windows(cm->aes.u.rk, pad, n, ids, m, x);
                hm_seed_windows(cm, ids + done, n, 1, m - done, seeds);
                for (size_t i = done; i < m; i++)
                    x[i] = hm_mix(seeds[i - done].a, seeds[i - done].g,
                                  ids[n + i]);
                for (size_t q = 0; q < nk; q++)
                    vals[q * nk_keys + k] = x[kept[q]];
            } else {
                hm_seed_windows(cm, wins, n, n, nk, seeds);
                for (size_t q = 0; q < nk; q++)
                    vals[q * nk_keys + k] =
                        hm_mix(seeds[q].a, seeds[q].g, ids[n + kept[q]]);
            }
        }
        /* Staging records in a cache line per partition and writing
         * whole lines (software write-combining, with plain or
         * non-temporal stores) measured about 10% slower here: the
         * thousand or so tail lines stay in L2 and combine there. */
        enum { AHEAD = 8 }; /* the partition tails, to be written */
        for (size_t q = 0; q < nk && q < AHEAD; q++) {
            const tally_part *pp = &tb->part[part_of(tb, hs[kept[q]])];
            __builtin_prefetch(pp->rec + pp->n * tb->w, 1);
        }
        for (size_t q = 0; q < nk; q++) {
            if (q + AHEAD < nk) {
                const tally_part *pp =
                    &tb->part[part_of(tb, hs[kept[q + AHEAD]])];
                __builtin_prefetch(pp->rec + pp->n * tb->w, 1);
            }
            uint64_t *r = table_push(t, &sc, tb, hs[kept[q]], epoch);
            if (r == NULL) {
                rc = HM_ENOMEM;
                goto done;
            }
            if (nk_keys == 1)
                r[1] = vals[q];
            else
                memcpy(r + 1, vals + q * nk_keys, nk_keys * sizeof *r);
        }
    }
done:
    if (wide)
        OPENSSL_cleanse(pad, sizeof pad);
    if (vals != buf)
        free(vals);
    return rc;
}

/* kgw selfhash: a table per key, the value a function of (anchor, token),
 * or of the token alone when it is its own anchor. */
static int add_per_key(hm_tally *t, unsigned c, const int32_t *prompt,
                       size_t n_prompt, const int32_t *tokens,
                       size_t n_tokens, const window_set *ps, uint64_t epoch)
{
    tally_channel *tc = &t->ch[c];
    unsigned n = t->params.ch[c].window;
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
        if (window_in(ps, w, n)) {
            tc->dropped_prompt++;
            continue;
        }
        if (!filter_keeps(t, tc, w, n)) {
            tc->dropped_filter++;
            continue;
        }
        for (size_t k = 0; k < t->n_keys; k++) {
            hm_kgw_step st;
            hm_kgw_prepare(&t->keys[k].ctx->ch[c], w, &st);
            uint64_t x = hm_kgw_value(&st, v);
            int self = hm_mix(st.hash_seed.a, st.hash_seed.g, v) <
                       st.min_hash;
            uint64_t h = self ? tuple_hash(NULL, 0, v)
                              : tuple_hash(&st.anchor, 1, v);
            scorer sc = scorer_of(t, c, k);
            uint64_t *r = table_push(t, &sc, &tc->tab[k], h, epoch);
            if (r == NULL)
                return HM_ENOMEM;
            r[1] = x;
        }
    }
    return HM_OK;
}

int hm_tally_reserve(hm_tally *t, size_t n_tokens)
{
    if (t == NULL)
        return HM_EINVAL;
    int rc = settle(t, 0);
    for (unsigned c = 0; rc == HM_OK && c < t->params.n_channels; c++)
        for (size_t i = 0; rc == HM_OK && i < t->ch[c].n_tables; i++)
            rc = table_prepare(t, c, i, n_tokens, 1);
    return rc;
}

/* Whether adding docs documents to t, and to each channel src's tokens
 * (src NULL: tokens), would wrap a count: counts read from files can be
 * near 2^64.  The padded and dropped counts never pass the tokens. */
static int counts_wrap(const hm_tally *t, uint64_t docs, const hm_tally *src,
                       uint64_t tokens)
{
    int wraps = t->documents + docs < t->documents;
    for (unsigned c = 0; c < t->params.n_channels; c++) {
        uint64_t add = src ? src->ch[c].tokens : tokens;
        wraps |= t->ch[c].tokens + add < t->ch[c].tokens;
    }
    return wraps;
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
    if (counts_wrap(t, 1, NULL, n_tokens))
        return HM_ERANGE;
    int rc = HM_OK;
    unsettle(t);
    for (unsigned c = 0; rc == HM_OK && c < t->params.n_channels; c++)
        for (size_t i = 0; rc == HM_OK && i < t->ch[c].n_tables; i++)
            rc = table_prepare(t, c, i, n_tokens, 0);
    if (rc != HM_OK)
        return rc;
    window_set ps[HM_MAX_CHANNELS];
    unsigned made = 0;
    for (; made < t->params.n_channels && rc == HM_OK; made++)
        rc = prompt_windows(&ps[made], prompt, n_prompt,
                            t->params.ch[made].window);
    /* all or nothing: counts saved, records pushed by this epoch undone */
    tally_channel saved[HM_MAX_CHANNELS];
    memcpy(saved, t->ch, sizeof saved);
    const uint64_t epoch = ++t->epoch;
    for (unsigned c = 0; rc == HM_OK && c < t->params.n_channels; c++)
        rc = t->ch[c].per_key
                 ? add_per_key(t, c, prompt, n_prompt, tokens, n_tokens,
                               &ps[c], epoch)
                 : add_shared(t, c, prompt, n_prompt, tokens, n_tokens,
                              &ps[c], epoch);
    for (unsigned c = 0; c < made; c++)
        free(ps[c].h);
    if (rc == HM_OK) {
        t->documents++;
    } else {
        tally_undo(t, epoch);
        for (unsigned c = 0; c < t->params.n_channels; c++) {
            tally_channel *tc = &t->ch[c];
            tc->tokens = saved[c].tokens;
            tc->padded = saved[c].padded;
            tc->dropped_padded = saved[c].dropped_padded;
            tc->dropped_prompt = saved[c].dropped_prompt;
            tc->dropped_filter = saved[c].dropped_filter;
        }
    }
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
    if (counts_wrap(dst, src->documents, src, 0)) {
        hm_errf(errmsg, errlen, "the merged counts would pass 2^64 - 1");
        return HM_ERANGE;
    }
    int rc = settle(dst, 0);
    if (rc == HM_OK)
        rc = settle(src, 0);
    if (rc != HM_OK)
        return rc;
    const uint64_t epoch = ++dst->epoch;
    unsettle(dst);
    /* src's tuples wait in dst's partitions, after dst's own */
    for (unsigned c = 0; c < dst->params.n_channels && dst != src; c++)
        for (size_t ti = 0; ti < dst->ch[c].n_tables; ti++) {
            tally_table *dt = &dst->ch[c].tab[ti];
            const tally_table *st = &src->ch[c].tab[ti];
            scorer sc = scorer_of(dst, c, ti);
            if (st->n == 0)
                continue;
            if ((rc = table_prepare(dst, c, ti, st->n, 0)) != HM_OK)
                goto fail;
            for (size_t i = 0; i < (size_t)1 << st->bits; i++) {
                const tally_part *sp = &st->part[i];
                for (size_t j = 0; j < sp->run; j++) {
                    const uint64_t *r = sp->rec + j * st->w;
                    uint64_t *d = table_push(dst, &sc, dt, r[0], epoch);
                    if (d == NULL) {
                        rc = HM_ENOMEM;
                        goto fail;
                    }
                    copy_rec(d, r, dt->w);
                }
            }
        }
    for (unsigned c = 0; c < dst->params.n_channels; c++) {
        tally_channel *d = &dst->ch[c];
        const tally_channel *s = &src->ch[c];
        d->tokens += s->tokens;
        d->padded += s->padded;
        d->dropped_padded += s->dropped_padded;
        d->dropped_prompt += s->dropped_prompt;
        d->dropped_filter += s->dropped_filter;
    }
    dst->documents += src->documents;
    return HM_OK;
fail:
    tally_undo(dst, epoch);
    return rc;
}

/* ----------------------------------------------------------- testing */

/* The sums of channel c from its runs (a loaded tally keeps none). */
static void sum_channel(hm_tally *t, unsigned c)
{
    tally_channel *tc = &t->ch[c];
    memset(tc->sum, 0, t->n_keys * sizeof *tc->sum);
    tc->summed = 1;
    for (size_t ti = 0; ti < tc->n_tables; ti++) {
        const tally_table *tb = &tc->tab[ti];
        scorer sc = scorer_of(t, c, ti);
        for (size_t i = 0; tb->part && i < (size_t)1 << tb->bits; i++)
            score_records(&sc, tb->part[i].rec, tb->part[i].run, tb->w);
    }
}

int hm_tally_result(const hm_tally *t, size_t key, unsigned channel,
                    hm_result *r)
{
    if (t == NULL || r == NULL || key >= t->n_keys ||
        channel >= t->params.n_channels)
        return HM_EINVAL;
    int rc = settle(t, 1);
    if (rc != HM_OK)
        return rc;
    const hm_channel *ch = &t->params.ch[channel];
    const tally_channel *tch = &t->ch[channel];
    const tally_table *tc = table_of(tch, key);
    const sum128 *s = &tch->sum[key];
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
    case HM_SCHEME_GUMBEL:
        r->score = sum_value(s);
        r->expected = (double)n;
        r->log10_p = n ? hm_log10_sf_gamma((double)n, r->score) : 0;
        break;
    case HM_SCHEME_KGW: {
        uint64_t green = s->lo;
        double p = ldexp((double)ch->green_below, -64);
        r->score = (double)green;
        r->expected = (double)n * p;
        r->log10_p = hm_log10_sf_binom(green, n, p);
        break;
    }
    default: {
        uint64_t ones = s->lo;
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
    /* each run sorted by hash, partition after partition: by hash */
    uint64_t *work = NULL;
    size_t work_words = 0;
    int rc = HM_OK;
    for (unsigned c = 0; c < t->params.n_channels && rc == HM_OK; c++)
        for (size_t tk = 0; tk < t->ch[c].n_tables && rc == HM_OK; tk++) {
            const tally_table *tb = &t->ch[c].tab[tk];
            for (size_t i = 0; tb->part && i < (size_t)1 << tb->bits; i++) {
                const tally_part *p = &tb->part[i];
                const uint64_t *order;
                if (p->run == 0)
                    continue;
                if ((rc = run_order(p->rec, p->run, tb->w, tb->bits, &work,
                                    &work_words, &order)) != HM_OK)
                    break;
                for (size_t j = 0; j < p->run && !w->err; j++) {
                    const uint64_t *r = p->rec + order[2 * j + 1] * tb->w;
                    for (size_t k = 0; k < tb->w; k++)
                        w_u64(w, r[k]);
                }
            }
        }
    free(work);
    if (rc != HM_OK)
        return rc;
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
    int rc = settle(t, 0);
    if (rc != HM_OK)
        return rc;
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
    if (memchr(r->p, '\0', (size_t)(nl - r->p)) != NULL) {
        hm_errf(r->errmsg, r->errlen, "%s:%u: NUL byte in a header line",
                r->path, r->line);
        return HM_EFORMAT;
    }
    memcpy(buf, r->p, (size_t)(nl - r->p));
    buf[nl - r->p] = '\0';
    r->p = nl + 1;
    return HM_OK;
}

/* Whether line is exactly what fmt makes of the values read from it:
 * header lines are canonical (no sign, leading zero, upper-case hex,
 * extra space or trailing text), so that a file loads only as the bytes
 * hm_tally_save would write for it. */
static int canonical(const char *line, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static int canonical(const char *line, const char *fmt, ...)
{
    char buf[2 * HM_TENANT_MAX + 1200];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    return n >= 0 && (size_t)n < sizeof buf && strcmp(buf, line) == 0;
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
    char spec[HM_SPEC_SIZE];
    if (strlen(line + 5) >= sizeof spec)
        return r_bad(r, "spec too long");
    strcpy(spec, line + 5);
    if ((rc = r_line(r, line, sizeof line)) != HM_OK)
        return rc;
    if (sscanf(line, "flags %u", &flags) != 1 ||
        (flags & ~HM_TALLY_SKIP_PADDED) ||
        !canonical(line, "flags %u", flags))
        return r_bad(r, "bad 'flags'");
    unsigned long long fcount, fdigest;
    if ((rc = r_line(r, line, sizeof line)) != HM_OK)
        return rc;
    if (sscanf(line, "filter %llu %llu", &fcount, &fdigest) != 2 ||
        !canonical(line, "filter %llu %llu", fcount, fdigest) ||
        (fcount == 0 && fdigest != 0))
        return r_bad(r, "bad 'filter'");
    if ((rc = r_line(r, line, sizeof line)) != HM_OK)
        return rc;
    if (sscanf(line, "keys %zu", &n_keys) != 1 || n_keys == 0 ||
        n_keys > MAX_KEYS || !canonical(line, "keys %zu", n_keys))
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
    if (rc == HM_OK) {
        char canon[HM_SPEC_SIZE];
        hm_ctx_spec(&t->params, canon, sizeof canon);
        if (strcmp(canon, spec) != 0) {
            snprintf(msg, sizeof msg, "not canonical (it would be '%.160s')",
                     canon);
            rc = HM_EFORMAT;
        }
    }
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
            strspn(fp + 5, "0123456789abcdef") != strlen(fp + 5) ||
            hex_decode(hex, t->keys[i].tenant, HM_TENANT_MAX) != 0) {
            rc = r_bad(r, "bad 'key' line");
            goto fail;
        }
        hex_encode(t->keys[i].tenant, hex);
        if (!canonical(line, "key %zu %s %s", idx, fp, hex)) {
            rc = r_bad(r, "bad 'key' line");
            goto fail;
        }
        memcpy(t->keys[i].fingerprint, fp, HM_FINGERPRINT_SIZE);
    }
    unsigned long long docs;
    if ((rc = r_line(r, line, sizeof line)) != HM_OK)
        goto fail;
    if (sscanf(line, "documents %llu", &docs) != 1 ||
        !canonical(line, "documents %llu", docs)) {
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
            v[4] > v[0] - v[2] - v[3] || nt != tc->n_tables ||
            !canonical(line, "channel %u %llu %llu %llu %llu %llu %zu", idx,
                       v[0], v[1], v[2], v[3], v[4], nt)) {
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
                n > v[0] - v[2] - v[3] - v[4] ||
                !canonical(line, "table %zu %zu", ik, n)) {
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
    unsettle(t);
    t->unsummed = 1; /* summed when a result asks */
    for (unsigned c = 0; c < t->params.n_channels; c++) {
        t->ch[c].summed = 0;
        for (size_t k = 0; k < t->ch[c].n_tables; k++) {
            tally_table *tb = &t->ch[c].tab[k];
            size_t w = tb->w, count = tb->n;
            tb->n = 0;
            if (count > (size_t)(r->end - r->p) / (8 * w)) {
                rc = r_bad(r, "truncated data");
                goto fail;
            }
            if ((rc = table_prepare(t, c, k, count, 1)) != HM_OK)
                goto fail;
            scorer sc = scorer_of(t, c, k);
            uint64_t prev = 0;
            for (size_t i = 0; i < count; i++) {
                uint64_t h = r_u64(r);
                if (h <= prev) {
                    rc = r_bad(r, "tuples out of order");
                    goto fail;
                }
                prev = h;
                uint64_t *rec = table_push(t, &sc, tb, h, 0);
                if (rec == NULL) {
                    rc = HM_ENOMEM;
                    goto fail;
                }
                for (size_t j = 1; j < w; j++)
                    rec[j] = r_u64(r);
            }
            /* records in hash order, distinct: runs already */
            for (size_t i = 0; tb->part && i < (size_t)1 << tb->bits; i++)
                tb->part[i].run = tb->part[i].n;
            tb->n = count;
            tb->waiting = 0;
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
