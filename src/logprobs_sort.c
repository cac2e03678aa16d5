/*
 * logprobs_sort.c - the order of hardened log-probabilities
 * (hm_logprobs_new(3)): larger returned value first, ties to the smaller
 * id.  Values on the grid are sorted by their integers, others by
 * comparison.
 */
#include "internal.h"

#include <math.h>
#include <string.h>

/* Run-time dispatched copies of the loops, as in kernels.c (GCC only). */
#if defined(HAVE_TARGET_CLONES) && defined(__x86_64__) && \
    !defined(HM_NO_CLONES) && !defined(__clang__)
#define LP_CLONES \
    __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", \
                                 "default")))
#else
#define LP_CLONES
#endif

/* 1.5 * 2^52: (t + R) - R rounds t to an integer, ties to even, for
 * |t| < 2^51. */
#define ROUND_MAGIC 0x1.8p52

/* ----------------------------------------------------- by comparison */
typedef struct rec {
    double r;
    int32_t id;
} rec;

/* Larger value first, then smaller id: a total order on distinct ids that
 * depends on returned values only, never on the true ranking. */
static inline int before(const rec *a, const rec *b)
{
    return a->r > b->r || (a->r == b->r && a->id < b->id);
}

static void sift(rec *a, size_t i, size_t n)
{
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n)
            return;
        /* max-heap under "after": the root is the record that goes last */
        if (c + 1 < n && before(&a[c], &a[c + 1]))
            c++;
        if (!before(&a[i], &a[c]))
            return;
        rec t = a[i];
        a[i] = a[c];
        a[c] = t;
        i = c;
    }
}

/* Insertion sort, which is linear on the nearly sorted input the usual
 * callers give (records in true order, values moved by at most eta);
 * heapsort once it has done 8n moves, so the worst case is n log n. */
static void sort_recs(rec *a, size_t n)
{
    size_t budget = 8 * n + 16;
    for (size_t i = 1; i < n; i++) {
        rec t = a[i];
        size_t j = i;
        while (j > 0 && before(&t, &a[j - 1])) {
            a[j] = a[j - 1];
            j--;
            if (--budget == 0) {
                a[j] = t;
                for (size_t k = n / 2; k-- > 0;)
                    sift(a, k, n);
                for (size_t k = n; k-- > 1;) {
                    rec u = a[0];
                    a[0] = a[k];
                    a[k] = u;
                    sift(a, 0, k);
                }
                return;
            }
        }
        a[j] = t;
    }
}

/* ----------------------------------------------------------- on the grid */

/* Sorting values on the grid by their integers: key = (rank of the value,
 * largest first; id; position), in 64 bits.  The keys are distinct, and the
 * position in their low 10 bits says where each record came from. */

static inline __attribute__((always_inline)) int64_t
grid_int(double t, double l, int64_t *bad)
{
    *bad |= (int64_t)(l != -INFINITY) & !(fabs(t) < 0x1p40);
    double sh = t + ROUND_MAGIC; /* low bits: round(t), ties to even */
    int64_t b;
    memcpy(&b, &sh, sizeof b);
    return b - INT64_C(0x4338000000000000);
}

/* m[i] = round(l[i] / q) (anything for -inf), and the largest and
 * smallest over the finite values; 0 when a finite |l/q| is 2^40 or more.
 * inv is 1/q when q is a power of two (then l * inv is l / q), else 0. */
LP_CLONES static int grid_ints(const double *restrict l, size_t n, double q,
                               double inv, int64_t *restrict m,
                               int64_t *mmax, int64_t *mmin)
{
    int64_t hi = INT64_MIN, lo = INT64_MAX;
    int64_t bad = 0;
    if (inv != 0) /* (two loops: a select would compute both) */
        for (size_t i = 0; i < n; i++)
            m[i] = grid_int(l[i] * inv, l[i], &bad);
    else
        for (size_t i = 0; i < n; i++)
            m[i] = grid_int(l[i] / q, l[i], &bad);
    for (size_t i = 0; i < n; i++) {
        int64_t fin = l[i] != -INFINITY;
        int64_t vh = fin ? m[i] : INT64_MIN, vl = fin ? m[i] : INT64_MAX;
        hi = vh > hi ? vh : hi;
        lo = vl < lo ? vl : lo;
    }
    *mmax = hi;
    *mmin = lo;
    return !bad;
}

/* key[i] = (((rank << ibits) | id) << 10) | i, rank = mmax - m[i], and
 * inf_rank for -inf. */
LP_CLONES static void grid_keys(const double *restrict l,
                                const int64_t *restrict m,
                                const int32_t *restrict ids, size_t n,
                                int64_t mmax, uint64_t inf_rank,
                                unsigned ibits, uint64_t *restrict key)
{
    for (size_t i = 0; i < n; i++) {
        uint64_t rank =
            l[i] == -INFINITY ? inf_rank : (uint64_t)(mmax - m[i]);
        key[i] = (((rank << ibits) | (uint32_t)ids[i]) << 10) | i;
    }
}

/* One stable counting-sort pass of n keys on the digit (key >> sh) & mask,
 * which is below nd, from src to dst; cnt has nd + 1 entries. */
static void count_pass(const uint64_t *src, uint64_t *dst, size_t n,
                       unsigned sh, uint64_t mask, size_t nd, uint16_t *cnt)
{
    memset(cnt, 0, (nd + 1) * sizeof *cnt);
    for (size_t i = 0; i < n; i++)
        cnt[((src[i] >> sh) & mask) + 1]++;
    if (cnt[((src[0] >> sh) & mask) + 1] == n) { /* one digit everywhere */
        memcpy(dst, src, n * sizeof *src);
        return;
    }
    for (size_t d = 1, acc = 0; d <= nd; d++) { /* acc: no reload */
        acc += cnt[d];
        cnt[d] = (uint16_t)acc;
    }
    for (size_t i = 0; i < n; i++)
        dst[cnt[(src[i] >> sh) & mask]++] = src[i];
}

/* Least significant byte first on the rank and id bits (10 + bits of
 * them); the keys are distinct, so any order of them in gives the sorted
 * order out.  Returns the array that holds it. */
static uint64_t *radix_keys(uint64_t *a, uint64_t *b, size_t n,
                            unsigned bits, uint16_t *cnt)
{
    for (unsigned shift = 10; shift < 10 + bits; shift += 8) {
        count_pass(a, b, n, shift, 255, 256, cnt);
        uint64_t *t = a;
        a = b;
        b = t;
    }
    return a;
}

/* The order of the keys in linear time either way.  Many values of a
 * top-k share a rank at k = 1024 (a dozen or more in the tail) and end up
 * tens of places from where they came in, too far for an insertion sort.
 * With fewer than 2048 ranks and at least 100 keys: two counting-sort
 * passes, least significant first, on the id's top bits (about n/4
 * buckets, at most 256; ids are scattered, so equal digits are rarely
 * adjacent and the counters do not wait on each other) and on the whole
 * rank, then an insertion sort among the few keys that share a rank and
 * those bits (past 2n moves the radix sort takes over).  Otherwise the
 * radix sort, 8 bits a pass. */
static uint64_t *order_keys(uint64_t *key, uint64_t *tmp, size_t n,
                            uint64_t inf_rank, unsigned rbits,
                            unsigned ibits)
{
    uint16_t cnt[2 * HM_LOGPROBS_TOPK_MAX + 2];
    if (n < 100 || inf_rank >= 2 * HM_LOGPROBS_TOPK_MAX)
        return radix_keys(key, tmp, n, rbits + ibits, cnt);
    unsigned abits = 2;
    while (abits < 8 && (n >> (abits + 2)) != 0)
        abits++;
    abits = abits < ibits ? abits : ibits;
    count_pass(key, tmp, n, 10 + ibits - abits, (UINT64_C(1) << abits) - 1,
               (size_t)1 << abits, cnt);
    count_pass(tmp, key, n, 10 + ibits, UINT64_MAX, (size_t)inf_rank + 1,
               cnt);
    size_t budget = 2 * n + 16;
    uint64_t prev = key[0];
    for (size_t i = 1; i < n; i++) {
        uint64_t k = key[i];
        if (k > prev) { /* the usual case: no store, no reload */
            prev = k;
            continue;
        }
        size_t j = i;
        while (j > 0 && k < key[j - 1]) {
            key[j] = key[j - 1];
            j--;
            if (--budget == 0) {
                key[j] = k; /* (a permutation of the keys again) */
                return radix_keys(key, tmp, n, rbits + ibits, cnt);
            }
        }
        key[j] = k;
        prev = key[i];
    }
    return key;
}

/* Returns 0 (nothing done) when a value is too far off the grid's
 * integers or the key does not fit in 64 bits. */
static int sort_grid(int32_t *ids, double *l, size_t n, double q)
{
    int64_t m[HM_LOGPROBS_TOPK_MAX], mmax, mmin;
    uint64_t key[HM_LOGPROBS_TOPK_MAX], tmp[HM_LOGPROBS_TOPK_MAX];
    int e;
    double inv = frexp(q, &e) == 0.5 ? 1 / q : 0;
    if (!grid_ints(l, n, q, inv, m, &mmax, &mmin))
        return 0;
    if (mmax == INT64_MIN) /* all -inf: order by id */
        mmax = mmin = 0;
    uint64_t inf_rank = (uint64_t)(mmax - mmin) + 1;
    uint32_t id_or = 0;
    for (size_t i = 0; i < n; i++)
        id_or |= (uint32_t)ids[i];
    unsigned rbits = 0, ibits = 0;
    while (rbits < 64 && (inf_rank >> rbits) != 0)
        rbits++;
    while (ibits < 32 && (id_or >> ibits) != 0)
        ibits++;
    if (rbits + ibits + 10 > 64)
        return 0;
    grid_keys(l, m, ids, n, mmax, inf_rank, ibits, key);
    const uint64_t *sorted = order_keys(key, tmp, n, inf_rank, rbits, ibits);
    /* m is free now: it keeps the old values' bits while permuting (the
     * ids are in the keys) */
    memcpy(m, l, n * sizeof *l);
    const uint64_t id_mask = (UINT64_C(1) << ibits) - 1;
    for (size_t i = 0; i < n; i++) {
        memcpy(&l[i], &m[sorted[i] & 1023], sizeof l[i]);
        ids[i] = (int32_t)((sorted[i] >> 10) & id_mask);
    }
    return 1;
}

void hm_lp_sort(int32_t *ids, double *l, size_t n, double q)
{
    if (n > 32 && q > 0 && sort_grid(ids, l, n, q))
        return;
    rec a[HM_LOGPROBS_TOPK_MAX];
    for (size_t i = 0; i < n; i++) {
        a[i].r = l[i];
        a[i].id = ids[i];
    }
    sort_recs(a, n);
    for (size_t i = 0; i < n; i++) {
        l[i] = a[i].r;
        ids[i] = a[i].id;
    }
}
