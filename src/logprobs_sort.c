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

/* On a grid of step q the order by value is the order by rank = mmax - m,
 * m = round(l / q), a small integer; -inf takes the rank after all others.
 * Each record becomes the 32-bit key rank << ibits | id (ibits the bits of
 * the largest id): the keys are distinct and in the order wanted, and
 * sorting them is a few counting sorts.  The values come in as j q for
 * integers j <= 0 (rounded, unless q is a power of two) and go out
 * shifted, (j q) - c, the common shift c being 0 or K q rounded: the
 * value comes back from the rank, computed as a kept order computes it.
 * (j q) / q rounds to j, and ((j q) - c) / q is within 2^-10 of j - K
 * while its size is below 2^40 (both exactly so when q is a power of
 * two), so m = j - K. */
#define DIGIT_BITS 11 /* of the rank per counting pass */
#define RANKS_MAX (1u << (2 * DIGIT_BITS))

/* The largest and smallest finite values (hi -inf, lo +inf if none) and
 * the OR of the ids, in eight lanes so that the loop vectorizes. */
LP_CLONES static uint32_t scan_row(const int32_t *restrict ids,
                                   const double *restrict l, size_t n,
                                   double *lo, double *hi)
{
    double a[8], b[8];
    uint32_t o = 0;
    for (int j = 0; j < 8; j++) {
        a[j] = INFINITY;
        b[j] = -INFINITY;
    }
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) {
            double x = l[i + j], y = x == -INFINITY ? INFINITY : x;
            a[j] = y < a[j] ? y : a[j];
            b[j] = x > b[j] ? x : b[j];
        }
    for (; i < n; i++) {
        double x = l[i], y = x == -INFINITY ? INFINITY : x;
        a[0] = y < a[0] ? y : a[0];
        b[0] = x > b[0] ? x : b[0];
    }
    for (int j = 1; j < 8; j++) {
        a[0] = a[j] < a[0] ? a[j] : a[0];
        b[0] = b[j] > b[0] ? b[j] : b[0];
    }
    for (i = 0; i < n; i++)
        o |= (uint32_t)ids[i];
    *lo = a[0];
    *hi = b[0];
    return o;
}

/* round(t) for |t| < 2^51, ties to even, from the bits of t + 1.5 2^52. */
static inline __attribute__((always_inline)) int64_t grid_int(double t)
{
    double sh = t + ROUND_MAGIC;
    int64_t b;
    memcpy(&b, &sh, sizeof b);
    return b - INT64_C(0x4338000000000000);
}

/* The keys.  inv is 1/q when q is a power of two (then l * inv is l / q,
 * exactly), else 0. */
LP_CLONES static void grid_keys(const double *restrict l,
                                const int32_t *restrict ids, size_t n,
                                double q, double inv, int64_t mmax,
                                uint32_t inf_rank, unsigned ibits,
                                uint32_t *restrict key)
{
    if (inv != 0) /* (two loops: a select would compute both) */
        for (size_t i = 0; i < n; i++) {
            uint32_t rank = l[i] == -INFINITY
                                ? inf_rank
                                : (uint32_t)(mmax - grid_int(l[i] * inv));
            key[i] = rank << ibits | (uint32_t)ids[i];
        }
    else
        for (size_t i = 0; i < n; i++) {
            uint32_t rank = l[i] == -INFINITY
                                ? inf_rank
                                : (uint32_t)(mmax - grid_int(l[i] / q));
            key[i] = rank << ibits | (uint32_t)ids[i];
        }
}

/* Counts into offsets: c[d] becomes the sum of the counts below d. */
static void offsets(uint32_t *c, size_t nd)
{
    uint32_t acc = 0;
    size_t d = 0;
    for (; d + 4 <= nd; d += 4) { /* (four at a time: fewer loop tests) */
        uint32_t c0 = c[d], c1 = c[d + 1], c2 = c[d + 2], c3 = c[d + 3];
        c[d] = acc;
        c[d + 1] = acc + c0;
        c[d + 2] = acc + c0 + c1;
        c[d + 3] = acc + c0 + c1 + c2;
        acc += c0 + c1 + c2 + c3;
    }
    for (; d < nd; d++) {
        uint32_t c0 = c[d];
        c[d] = acc;
        acc += c0;
    }
}

/* One stable counting-sort pass of n keys from src to dst on the digit
 * (key >> sh) & mask, whose counts are in pos (nd of them); pos is used
 * up.  Nothing moves when one digit holds all keys (returns 0). */
static int scatter(const uint32_t *restrict src, uint32_t *restrict dst,
                   size_t n, unsigned sh, uint32_t mask, uint32_t *pos,
                   size_t nd)
{
    if (pos[(src[0] >> sh) & mask] == n)
        return 0;
    offsets(pos, nd);
    for (size_t i = 0; i < n; i++) {
        uint32_t k = src[i];
        dst[pos[(k >> sh) & mask]++] = k;
    }
    return 1;
}

/* The keys sorted, 8 bits at a time, least significant first.  Returns
 * the array that holds them. */
static uint32_t *radix_keys(uint32_t *a, uint32_t *b, size_t n)
{
    uint32_t cnt[256];
    for (unsigned sh = 0; sh < 32; sh += 8) {
        memset(cnt, 0, sizeof cnt);
        for (size_t i = 0; i < n; i++)
            cnt[(a[i] >> sh) & 255]++;
        if (scatter(a, b, n, sh, 255, cnt, 256)) {
            uint32_t *t = a;
            a = b;
            b = t;
        }
    }
    return a;
}

/* The first i >= from (from >= 1) with key[i] < key[i - 1], or n; sixteen
 * at a time in a loop that vectorizes. */
LP_CLONES static size_t next_descent(const uint32_t *key, size_t from,
                                     size_t n)
{
    size_t i = from;
    for (; i + 16 <= n; i += 16) {
        unsigned m = 0;
        for (int j = 0; j < 16; j++)
            m |= key[i + j] < key[i + j - 1];
        if (m)
            break;
    }
    for (; i < n; i++)
        if (key[i] < key[i - 1])
            return i;
    return n;
}

/* Insertion sort, linear when few keys are out of place; 0 (a permutation
 * of the keys left) after budget moves. */
static int insertion_keys(uint32_t *key, size_t n, size_t budget)
{
    for (size_t i = 1; (i = next_descent(key, i, n)) < n; i++) {
        uint32_t k = key[i];
        size_t j = i;
        while (j > 0 && k < key[j - 1]) {
            key[j] = key[j - 1];
            j--;
            if (--budget == 0) {
                key[j] = k;
                return 0;
            }
        }
        key[j] = k;
    }
    return 1;
}

/* The order of the keys in linear time.  Many values of a top-k share a
 * rank at k = 1024 (a dozen or more in the tail) and end up tens of places
 * from where they came in, too far for an insertion sort alone.  Counting
 * sorts, least significant digit first, on the id's top abits (about n/4
 * buckets, at most 256) and on the rank (one pass below 2048 ranks, else
 * two of 11 bits), all counted in one read; then an insertion sort among
 * the few keys that share a rank and those id bits.  Past 2n moves it
 * gives up, and the radix sort on all the bits takes over (ids that share
 * their top bits: see the tests).  Returns the array holding the order;
 * *radix says whether the radix sort ran. */
static uint32_t *order_keys(uint32_t *key, uint32_t *tmp, size_t n,
                            uint32_t n_ranks, unsigned ibits, int *radix)
{
    uint32_t ca[256], cb[1u << DIGIT_BITS], cc[1u << DIGIT_BITS];
    unsigned abits = 2;
    while (abits < 8 && (n >> (abits + 2)) != 0)
        abits++;
    abits = abits < ibits ? abits : ibits;
    const unsigned ash = ibits - abits, bsh = ibits;
    const uint32_t amask = (1u << abits) - 1;
    const int two = n_ranks > (1u << DIGIT_BITS);
    const uint32_t bmask = two ? (1u << DIGIT_BITS) - 1 : UINT32_MAX;
    const size_t nb = two ? (size_t)1 << DIGIT_BITS : n_ranks;
    const size_t nc = two ? ((n_ranks - 1) >> DIGIT_BITS) + 1 : 0;
    memset(ca, 0, ((size_t)1 << abits) * sizeof *ca);
    memset(cb, 0, nb * sizeof *cb);
    if (two) {
        memset(cc, 0, nc * sizeof *cc);
        for (size_t i = 0; i < n; i++) {
            uint32_t k = key[i];
            ca[(k >> ash) & amask]++;
            cb[(k >> bsh) & bmask]++;
            cc[k >> (bsh + DIGIT_BITS)]++;
        }
    } else {
        for (size_t i = 0; i < n; i++) {
            uint32_t k = key[i];
            ca[(k >> ash) & amask]++;
            cb[k >> bsh]++;
        }
    }
    uint32_t *a = key, *b = tmp, *t;
    if (scatter(a, b, n, ash, amask, ca, (size_t)1 << abits))
        t = a, a = b, b = t;
    if (scatter(a, b, n, bsh, bmask, cb, nb))
        t = a, a = b, b = t;
    if (two && scatter(a, b, n, bsh + DIGIT_BITS, UINT32_MAX, cc, nc))
        t = a, a = b, b = t;
    *radix = !insertion_keys(a, n, 2 * n + 16);
    return *radix ? radix_keys(a, b, n) : a;
}

/* The records in key order: the ids from the keys, the values from the
 * ranks, j = jmax - rank. */
LP_CLONES static void keys_out(const uint32_t *restrict key, size_t n,
                               unsigned ibits, double jmax, uint32_t inf_rank,
                               double q, double c, int32_t *restrict ids,
                               double *restrict l)
{
    const uint32_t id_mask = (1u << ibits) - 1;
    if (c != 0) /* (two loops: harden subtracts only a shift that is not 0) */
        for (size_t i = 0; i < n; i++) {
            uint32_t rank = key[i] >> ibits;
            ids[i] = (int32_t)(key[i] & id_mask);
            l[i] = rank == inf_rank ? -INFINITY
                                    : (jmax - (double)rank) * q - c;
        }
    else
        for (size_t i = 0; i < n; i++) {
            uint32_t rank = key[i] >> ibits;
            ids[i] = (int32_t)(key[i] & id_mask);
            l[i] = rank == inf_rank ? -INFINITY : (jmax - (double)rank) * q;
        }
}

/* ---------------------------------------------------- AVX-512 bitonic */

/* With AVX-512 the keys are sorted by a bitonic network instead: blocks
 * of up to 256 keys (16 registers of 16) entirely in registers, then the
 * last merges of a larger row through memory.  It does the same work for
 * any order of the input, which the counting sorts' two scatters lose to
 * on this hardware from about 64 keys up.  Each step is a compare-
 * exchange: a lane takes the smaller of itself and its partner, or the
 * larger.  The keys are distinct and the result is the unique order, so
 * either way of sorting gives the same records. */
#if defined(__x86_64__) && defined(__GNUC__) &&                             \
    (defined(__clang__) || __GNUC__ >= 10)
#define HAVE_BITONIC 1
#include <immintrin.h>

#define BT_FN                                                                 \
    __attribute__((target("avx512f"))) static inline                         \
        __attribute__((always_inline))

/* Partners: lane ^ 1, 2, 4, 8, and the mirror images within 4, 8, 16. */
#define BT_X1 _mm512_set_epi32(14, 15, 12, 13, 10, 11, 8, 9, 6, 7, 4, 5, 2, 3, 0, 1)
#define BT_X2 _mm512_set_epi32(13, 12, 15, 14, 9, 8, 11, 10, 5, 4, 7, 6, 1, 0, 3, 2)
#define BT_X4 _mm512_set_epi32(11, 10, 9, 8, 15, 14, 13, 12, 3, 2, 1, 0, 7, 6, 5, 4)
#define BT_X8 _mm512_set_epi32(7, 6, 5, 4, 3, 2, 1, 0, 15, 14, 13, 12, 11, 10, 9, 8)
#define BT_M4 _mm512_set_epi32(12, 13, 14, 15, 8, 9, 10, 11, 4, 5, 6, 7, 0, 1, 2, 3)
#define BT_M8 _mm512_set_epi32(8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7)
#define BT_M16 _mm512_set_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)

/* Compare-exchange within a vector: the lanes in lo take the minimum. */
BT_FN __m512i bt_cx(__m512i a, __m512i partner, __mmask16 lo)
{
    __m512i b = _mm512_permutexvar_epi32(partner, a);
    return _mm512_mask_min_epu32(_mm512_max_epu32(a, b), lo, a, b);
}

/* Two vectors into their minima and maxima, lane by lane. */
BT_FN void bt_cx2(__m512i *a, __m512i *b)
{
    __m512i t = *a;
    *a = _mm512_min_epu32(t, *b);
    *b = _mm512_max_epu32(t, *b);
}

/* Runs of m vectors at s and s + m merged into one of 2m, but for the
 * half-cleaners within vectors (bt_clean_all) that end it: the mirror
 * pairing (vector i with the reversed vector 2m - 1 - i), then
 * half-cleaners between vectors. */
BT_FN void bt_merge_vectors(__m512i *v, int s, int m)
{
    #pragma GCC unroll 16
    for (int i = 0; i < m; i++) {
        __m512i b = _mm512_permutexvar_epi32(BT_M16, v[s + 2 * m - 1 - i]);
        v[s + 2 * m - 1 - i] = _mm512_max_epu32(v[s + i], b);
        v[s + i] = _mm512_min_epu32(v[s + i], b);
    }
    #pragma GCC unroll 16
    for (int h = m / 2; h >= 1; h /= 2)
        #pragma GCC unroll 16
        for (int b0 = s; b0 < s + 2 * m; b0 += 2 * h)
            #pragma GCC unroll 16
            for (int i = 0; i < h; i++)
                bt_cx2(&v[b0 + i], &v[b0 + h + i]);
}

/* One compare-exchange step within each of nv vectors, a step at a time
 * across them (see bt_block). */
BT_FN void bt_cx_all(__m512i *v, int nv, __m512i partner, __mmask16 lo)
{
    #pragma GCC unroll 16
    for (int i = 0; i < nv; i++)
        v[i] = bt_cx(v[i], partner, lo);
}

/* The half-cleaners within each of nv vectors that end every merge. */
BT_FN void bt_clean_all(__m512i *v, int nv)
{
    bt_cx_all(v, nv, BT_X8, 0x00FF);
    bt_cx_all(v, nv, BT_X4, 0x0F0F);
    bt_cx_all(v, nv, BT_X2, 0x3333);
    bt_cx_all(v, nv, BT_X1, 0x5555);
}

/* nv (a constant after inlining) vectors at k sorted in registers.  The
 * loops over the register arrays are unrolled so that they stay registers
 * (left to itself GCC kept loops and put the arrays on the stack; unrolled,
 * the sort ran in 0.76 of the time at k = 256 and 1024).  The networks
 * within vectors go a step at a time across all of them: each vector's
 * steps are a chain of dependent permutes, and written vector after
 * vector the core had few of them under way at once. */
BT_FN void bt_block(uint32_t *k, int nv)
{
    __m512i v[16];
    #pragma GCC unroll 16
    for (int i = 0; i < nv; i++)
        v[i] = _mm512_loadu_si512(k + 16 * i);
    /* sixteen keys in each sorted: runs of 1, 2, 4, 8 merged with the
     * mirror pairing (which needs no change of direction), each followed
     * by half-cleaners */
    bt_cx_all(v, nv, BT_X1, 0x5555);
    bt_cx_all(v, nv, BT_M4, 0x3333);
    bt_cx_all(v, nv, BT_X1, 0x5555);
    bt_cx_all(v, nv, BT_M8, 0x0F0F);
    bt_cx_all(v, nv, BT_X2, 0x3333);
    bt_cx_all(v, nv, BT_X1, 0x5555);
    bt_cx_all(v, nv, BT_M16, 0x00FF);
    bt_cx_all(v, nv, BT_X4, 0x0F0F);
    bt_cx_all(v, nv, BT_X2, 0x3333);
    bt_cx_all(v, nv, BT_X1, 0x5555);
    #pragma GCC unroll 16
    for (int m = 1; m < nv; m *= 2) {
        #pragma GCC unroll 16
        for (int s = 0; s < nv; s += 2 * m)
            bt_merge_vectors(v, s, m);
        bt_clean_all(v, nv);
    }
    #pragma GCC unroll 16
    for (int i = 0; i < nv; i++)
        _mm512_storeu_si512(k + 16 * i, v[i]);
}

/* Runs of m >= 16 vectors merged pairwise in memory: the mirror pairing
 * and the half-cleaners 16 or more vectors apart, then the rest in
 * registers, 16 vectors at a time. */
BT_FN void bt_merge_mem(uint32_t *k, int nv, int m)
{
    for (int s = 0; s < nv; s += 2 * m) {
        for (int i = 0; i < m; i++) {
            uint32_t *p = k + 16 * (s + i), *q = k + 16 * (s + 2 * m - 1 - i);
            __m512i a = _mm512_loadu_si512(p);
            __m512i b = _mm512_permutexvar_epi32(BT_M16, _mm512_loadu_si512(q));
            _mm512_storeu_si512(p, _mm512_min_epu32(a, b));
            _mm512_storeu_si512(q, _mm512_max_epu32(a, b));
        }
        for (int h = m / 2; h >= 16; h /= 2)
            for (int b0 = s; b0 < s + 2 * m; b0 += 2 * h)
                for (int i = 0; i < h; i++) {
                    uint32_t *p = k + 16 * (b0 + i), *q = p + 16 * h;
                    __m512i a = _mm512_loadu_si512(p), b = _mm512_loadu_si512(q);
                    _mm512_storeu_si512(p, _mm512_min_epu32(a, b));
                    _mm512_storeu_si512(q, _mm512_max_epu32(a, b));
                }
        for (int b0 = s; b0 < s + 2 * m; b0 += 16) {
            __m512i w[16];
            #pragma GCC unroll 16
            for (int i = 0; i < 16; i++)
                w[i] = _mm512_loadu_si512(k + 16 * (b0 + i));
            #pragma GCC unroll 16
            for (int h = 8; h >= 1; h /= 2)
                #pragma GCC unroll 16
                for (int c0 = 0; c0 < 16; c0 += 2 * h)
                    #pragma GCC unroll 16
                    for (int i = 0; i < h; i++)
                        bt_cx2(&w[c0 + i], &w[c0 + h + i]);
            bt_clean_all(w, 16);
            #pragma GCC unroll 16
            for (int i = 0; i < 16; i++)
                _mm512_storeu_si512(k + 16 * (b0 + i), w[i]);
        }
    }
}

/* The n <= 1024 keys sorted in place (room for 1024, 64-byte aligned),
 * padded with all ones to 16 times a power of two (a pad equal to a key
 * is the same bits). */
__attribute__((target("avx512f"))) static void bitonic_keys(uint32_t *key,
                                                            size_t n)
{
    int nv = 1;
    while ((size_t)(16 * nv) < n)
        nv *= 2;
    memset(key + n, 0xFF, (16 * (size_t)nv - n) * sizeof *key);
    switch (nv) { /* (each size its own unrolled network) */
    case 1:
        bt_block(key, 1);
        break;
    case 2:
        bt_block(key, 2);
        break;
    case 4:
        bt_block(key, 4);
        break;
    case 8:
        bt_block(key, 8);
        break;
    default:
        for (int b = 0; b < nv; b += 16)
            bt_block(key + 16 * b, 16);
        for (int m = 16; m < nv; m *= 2)
            bt_merge_mem(key, nv, m);
    }
}
#else
static void bitonic_keys(uint32_t *key, size_t n)
{
    (void)key, (void)n;
}
#endif

/* ------------------------------------------------------- AVX2 bitonic */

/* The same network on CPUs with AVX2 but not the AVX-512 above (Zen 2
 * and 3, Intel's client cores): vectors of 8 keys, the lanes' partners
 * brought by a shuffle, and a compare-exchange within a vector is a
 * minimum, a maximum and a blend of the two (AVX2 has no masked minimum).
 * Each block of 8 vectors (64 keys, which with the shuffle constant fit
 * the 16 registers; blocks of 16 vectors spilled, and the sort of 1024
 * keys took 1.15 times as long) starts with its columns sorted across the
 * vectors by Batcher's network of 19 compare-exchanges, each a minimum
 * and a maximum of whole vectors, and the block transposed: 8 sorted runs
 * of 8 for about a third of what the six steps within each vector would
 * cost.  Then runs merged as above, in registers up to the block, through
 * memory beyond it. */
#if defined(__x86_64__) && defined(__GNUC__) &&                             \
    (defined(__clang__) || __GNUC__ >= 10)
#define HAVE_BITONIC_AVX2 1
#include <immintrin.h>

#define B2_FN                                                                 \
    __attribute__((target("avx2"))) static inline                            \
        __attribute__((always_inline))

/* Partners (macros: the shuffles take immediates): lane ^ 1, 2, 4, and
 * the mirror image within 8 (by the index vector rev). */
#define B2_X1(a) _mm256_shuffle_epi32((a), 0xB1)
#define B2_X2(a) _mm256_shuffle_epi32((a), 0x4E)
#define B2_X4(a) _mm256_permute2x128_si256((a), (a), 0x01)
#define B2_M8(a) _mm256_permutevar8x32_epi32((a), rev)
#define B2_REV _mm256_set_epi32(0, 1, 2, 3, 4, 5, 6, 7)

/* Compare-exchange within each of nv vectors: the lanes set in hi (a
 * blend immediate) take the maximum, the others the minimum. */
#define B2_CX_ALL(v, nv, PARTNER, hi)                                        \
    do {                                                                     \
        _Pragma("GCC unroll 16") for (int i_ = 0; i_ < (nv); i_++)           \
        {                                                                    \
            __m256i b_ = PARTNER((v)[i_]);                                   \
            (v)[i_] = _mm256_blend_epi32(_mm256_min_epu32((v)[i_], b_),      \
                                         _mm256_max_epu32((v)[i_], b_),      \
                                         (hi));                              \
        }                                                                    \
    } while (0)

/* The half-cleaners within each of nv vectors that end every merge. */
#define B2_CLEAN_ALL(v, nv)                                                  \
    do {                                                                     \
        B2_CX_ALL(v, nv, B2_X4, 0xF0);                                       \
        B2_CX_ALL(v, nv, B2_X2, 0xCC);                                       \
        B2_CX_ALL(v, nv, B2_X1, 0xAA);                                       \
    } while (0)

/* Two vectors into their minima and maxima, lane by lane. */
B2_FN void b2_cx2(__m256i *a, __m256i *b)
{
    __m256i t = *a;
    *a = _mm256_min_epu32(t, *b);
    *b = _mm256_max_epu32(t, *b);
}

/* The 8 x 8 keys of v transposed. */
B2_FN void b2_transpose(__m256i *v)
{
    __m256i t[8], u[8];
    #pragma GCC unroll 4
    for (int i = 0; i < 8; i += 2) {
        t[i] = _mm256_unpacklo_epi32(v[i], v[i + 1]);
        t[i + 1] = _mm256_unpackhi_epi32(v[i], v[i + 1]);
    }
    #pragma GCC unroll 2
    for (int i = 0; i < 8; i += 4) {
        u[i] = _mm256_unpacklo_epi64(t[i], t[i + 2]);
        u[i + 1] = _mm256_unpackhi_epi64(t[i], t[i + 2]);
        u[i + 2] = _mm256_unpacklo_epi64(t[i + 1], t[i + 3]);
        u[i + 3] = _mm256_unpackhi_epi64(t[i + 1], t[i + 3]);
    }
    #pragma GCC unroll 4
    for (int i = 0; i < 4; i++) {
        v[i] = _mm256_permute2x128_si256(u[i], u[i + 4], 0x20);
        v[i + 4] = _mm256_permute2x128_si256(u[i], u[i + 4], 0x31);
    }
}

/* 64 keys at k sorted in registers. */
B2_FN void b2_block(uint32_t *k)
{
    static const unsigned char net[19][2] = {
        {0, 1}, {2, 3}, {4, 5}, {6, 7}, {0, 2}, {1, 3}, {4, 6},
        {5, 7}, {1, 2}, {5, 6}, {0, 4}, {1, 5}, {2, 6}, {3, 7},
        {2, 4}, {3, 5}, {1, 2}, {3, 4}, {5, 6}};
    const __m256i rev = B2_REV;
    __m256i v[8];
    #pragma GCC unroll 8
    for (int i = 0; i < 8; i++)
        v[i] = _mm256_loadu_si256((const __m256i *)(k + 8 * i));
    #pragma GCC unroll 19
    for (int c = 0; c < 19; c++)
        b2_cx2(&v[net[c][0]], &v[net[c][1]]);
    b2_transpose(v);
    /* runs of 1, 2, 4 vectors merged: the mirror pairing, half-cleaners
     * between vectors, then within them */
    #pragma GCC unroll 4
    for (int m = 1; m < 8; m *= 2) {
        #pragma GCC unroll 4
        for (int s = 0; s < 8; s += 2 * m) {
            #pragma GCC unroll 4
            for (int i = 0; i < m; i++) {
                __m256i b = B2_M8(v[s + 2 * m - 1 - i]);
                v[s + 2 * m - 1 - i] = _mm256_max_epu32(v[s + i], b);
                v[s + i] = _mm256_min_epu32(v[s + i], b);
            }
            #pragma GCC unroll 4
            for (int h = m / 2; h >= 1; h /= 2)
                #pragma GCC unroll 4
                for (int b0 = s; b0 < s + 2 * m; b0 += 2 * h)
                    #pragma GCC unroll 4
                    for (int i = 0; i < h; i++)
                        b2_cx2(&v[b0 + i], &v[b0 + h + i]);
        }
        B2_CLEAN_ALL(v, 8);
    }
    #pragma GCC unroll 8
    for (int i = 0; i < 8; i++)
        _mm256_storeu_si256((__m256i *)(k + 8 * i), v[i]);
}

/* Compare-exchange of the vectors at p and q in memory. */
B2_FN void b2_cx_mem(uint32_t *p, uint32_t *q)
{
    __m256i a = _mm256_loadu_si256((const __m256i *)p);
    __m256i b = _mm256_loadu_si256((const __m256i *)q);
    _mm256_storeu_si256((__m256i *)p, _mm256_min_epu32(a, b));
    _mm256_storeu_si256((__m256i *)q, _mm256_max_epu32(a, b));
}

/* Runs of m >= 8 vectors merged pairwise in memory: the mirror pairing
 * and the half-cleaners 8 or more vectors apart, then the rest in
 * registers, 8 vectors at a time.  The steps in memory go two at a time
 * where they can, on four vectors that only meet one another in both
 * (the mirror pairing with the first half-cleaner: i, i + m/2, 3m/2 - 1
 * - i and 2m - 1 - i; two half-cleaners: i, i + h/2, i + h, i + 3h/2):
 * fewer passes over the keys. */
B2_FN void b2_merge_mem(uint32_t *k, int nv, int m)
{
    const __m256i rev = B2_REV;
    for (int s = 0; s < nv; s += 2 * m) {
        int h = m / 2;
        if (h >= 8) {
            for (int i = 0; i < h; i++) {
                __m256i *pa = (__m256i *)(k + 8 * (s + i)), *pb = pa + h;
                __m256i *pd = (__m256i *)(k + 8 * (s + 2 * m - 1 - i));
                __m256i *pc = pd - h;
                __m256i a = _mm256_loadu_si256(pa);
                __m256i b = _mm256_loadu_si256(pb);
                __m256i c = B2_M8(_mm256_loadu_si256(pc));
                __m256i d = B2_M8(_mm256_loadu_si256(pd));
                __m256i a1 = _mm256_min_epu32(a, d);
                __m256i d1 = _mm256_max_epu32(a, d);
                __m256i b1 = _mm256_min_epu32(b, c);
                __m256i c1 = _mm256_max_epu32(b, c);
                _mm256_storeu_si256(pa, _mm256_min_epu32(a1, b1));
                _mm256_storeu_si256(pb, _mm256_max_epu32(a1, b1));
                _mm256_storeu_si256(pc, _mm256_min_epu32(c1, d1));
                _mm256_storeu_si256(pd, _mm256_max_epu32(c1, d1));
            }
            h /= 2;
        } else {
            for (int i = 0; i < m; i++) {
                __m256i *p = (__m256i *)(k + 8 * (s + i));
                __m256i *q = (__m256i *)(k + 8 * (s + 2 * m - 1 - i));
                __m256i a = _mm256_loadu_si256(p);
                __m256i b = B2_M8(_mm256_loadu_si256(q));
                _mm256_storeu_si256(p, _mm256_min_epu32(a, b));
                _mm256_storeu_si256(q, _mm256_max_epu32(a, b));
            }
        }
        for (; h >= 16; h /= 4)
            for (int b0 = s; b0 < s + 2 * m; b0 += 2 * h)
                for (int i = 0; i < h / 2; i++) {
                    __m256i *pa = (__m256i *)(k + 8 * (b0 + i));
                    __m256i *pb = pa + h / 2;
                    __m256i *pc = pa + h, *pd = pb + h;
                    __m256i a = _mm256_loadu_si256(pa);
                    __m256i b = _mm256_loadu_si256(pb);
                    __m256i c = _mm256_loadu_si256(pc);
                    __m256i d = _mm256_loadu_si256(pd);
                    __m256i a1 = _mm256_min_epu32(a, c);
                    __m256i c1 = _mm256_max_epu32(a, c);
                    __m256i b1 = _mm256_min_epu32(b, d);
                    __m256i d1 = _mm256_max_epu32(b, d);
                    _mm256_storeu_si256(pa, _mm256_min_epu32(a1, b1));
                    _mm256_storeu_si256(pb, _mm256_max_epu32(a1, b1));
                    _mm256_storeu_si256(pc, _mm256_min_epu32(c1, d1));
                    _mm256_storeu_si256(pd, _mm256_max_epu32(c1, d1));
                }
        if (h == 8)
            for (int b0 = s; b0 < s + 2 * m; b0 += 16)
                for (int i = 0; i < 8; i++)
                    b2_cx_mem(k + 8 * (b0 + i), k + 8 * (b0 + 8 + i));
        for (int b0 = s; b0 < s + 2 * m; b0 += 8) {
            __m256i w[8];
            #pragma GCC unroll 8
            for (int i = 0; i < 8; i++)
                w[i] =
                    _mm256_loadu_si256((const __m256i *)(k + 8 * (b0 + i)));
            #pragma GCC unroll 4
            for (int hh = 4; hh >= 1; hh /= 2)
                #pragma GCC unroll 4
                for (int c0 = 0; c0 < 8; c0 += 2 * hh)
                    #pragma GCC unroll 4
                    for (int i = 0; i < hh; i++)
                        b2_cx2(&w[c0 + i], &w[c0 + hh + i]);
            B2_CLEAN_ALL(w, 8);
            #pragma GCC unroll 8
            for (int i = 0; i < 8; i++)
                _mm256_storeu_si256((__m256i *)(k + 8 * (b0 + i)), w[i]);
        }
    }
}

/* The 64 < n <= 1024 keys sorted in place (room for 1024), padded with
 * all ones to 8 times a power of two (a pad equal to a key is the same
 * bits). */
__attribute__((target("avx2"))) static void bitonic2_keys(uint32_t *key,
                                                          size_t n)
{
    int nv = 8;
    while ((size_t)(8 * nv) < n)
        nv *= 2;
    memset(key + n, 0xFF, (8 * (size_t)nv - n) * sizeof *key);
    for (int b = 0; b < nv; b += 8)
        b2_block(key + 8 * b);
    for (int m = 8; m < nv; m *= 2)
        b2_merge_mem(key, nv, m);
}
#else
static void bitonic2_keys(uint32_t *key, size_t n)
{
    (void)key, (void)n;
}
#endif

/* Tests set these: hm_lp_sort_portable to take no bitonic sort at all
 * (the counting and insertion sorts), hm_lp_sort_avx2 to take the AVX2
 * one where the AVX-512 one would run. */
int hm_lp_sort_portable = 0;
int hm_lp_sort_avx2 = 0;

/* Which bitonic sort, if any (its path number, else 0): from 65 keys up
 * (below, the insertion and counting sorts are as fast), with AVX-512 on
 * the CPUs whose AVX-512 the PRF kernel uses too (those with VAES: Ice
 * Lake, Zen 4 and later), else with AVX2. */
static int use_bitonic(size_t n)
{
    if (n <= 64 || hm_lp_sort_portable)
        return 0;
#ifdef HAVE_BITONIC
    if (!hm_lp_sort_avx2 && hm_cpu_has_avx512_vaes())
        return 3;
#endif
#ifdef HAVE_BITONIC_AVX2
    if (hm_cpu_has_avx2())
        return 5;
#endif
    return 0;
}

/* l[i] - c over the row, in a loop that vectorizes: the common shift,
 * where the values themselves are sorted. */
LP_CLONES static void shift_row(double *l, size_t n, double c)
{
    for (size_t i = 0; i < n; i++)
        l[i] -= c;
}

/* Keys too wide for 32 bits (a fine grid, large ids): rank << (ibits +
 * 10) | id << 10 | position in 64 bits (ibits + rbits + 10 <= 64), sorted
 * 8 bits at a time, least significant first, and the values (shifted)
 * found again by position; what the grid sort did for every row before
 * the 32-bit keys. */
static int sort_wide(int32_t *ids, double *l, size_t n, double q,
                     double inv, int64_t mmax, uint64_t inf_rank,
                     unsigned ibits, unsigned rbits)
{
    uint64_t key[HM_LOGPROBS_TOPK_MAX], tmp[HM_LOGPROBS_TOPK_MAX], *a = key,
                                                                  *b = tmp;
    uint32_t cnt[256];
    const unsigned bits = ibits + rbits;
    for (size_t i = 0; i < n; i++) {
        uint64_t rank = l[i] == -INFINITY
                            ? inf_rank
                            : (uint64_t)(mmax - grid_int(inv != 0 ? l[i] * inv
                                                                  : l[i] / q));
        key[i] = (rank << ibits | (uint32_t)ids[i]) << 10 | i;
    }
    for (unsigned sh = 10; sh < 10 + bits; sh += 8) {
        memset(cnt, 0, sizeof cnt);
        for (size_t i = 0; i < n; i++)
            cnt[(a[i] >> sh) & 255]++;
        if (cnt[(a[0] >> sh) & 255] == n)
            continue; /* one digit everywhere */
        offsets(cnt, 256);
        for (size_t i = 0; i < n; i++)
            b[cnt[(a[i] >> sh) & 255]++] = a[i];
        uint64_t *t = a;
        a = b;
        b = t;
    }
    memcpy(b, l, n * sizeof *l); /* (the other array keeps the values) */
    for (size_t i = 0; i < n; i++) {
        memcpy(&l[i], &b[a[i] & 1023], sizeof l[i]);
        ids[i] = (int32_t)((a[i] >> 10) & ((UINT64_C(1) << ibits) - 1));
    }
    return 4;
}

/* Returns 0 (nothing done, the values not shifted) when a value is too
 * far off the grid's integers or even 64-bit keys would not do; else 1,
 * 2 when the radix sort ran, 3 when the bitonic sort did (5 the AVX2
 * one), 4 for 64-bit keys.  When the ranks outnumber the records four to
 * one (k up to a few hundred) few values share one, an insertion sort
 * usually finishes within n moves, and the counting sorts, whose offsets
 * cost a step per rank, are left for when it does not.
 *
 * The values come unshifted, j q; the ranks are those of the shifted
 * values (j q) - c, as harden once stored them: the row's extremes
 * shifted are the extremes of the shifted row (x - c rounded is monotone
 * in x), which give mmax and the number of ranks; (j q) / q rounds to j
 * and ((j q) - c) / q to j - K (see above), so mmax + K - round(l / q) is
 * the shifted value's rank, and the keys are the same bits. */
static int sort_grid(int32_t *ids, double *l, size_t n, double q, double c)
{
    uint32_t key[HM_LOGPROBS_TOPK_MAX] __attribute__((aligned(64)));
    uint32_t tmp[HM_LOGPROBS_TOPK_MAX];
    int e, radix;
    double lo, hi;
    const int pow2 = frexp(q, &e) == 0.5;
    const double inv = pow2 ? 1 / q : 0;
    uint32_t id_or = scan_row(ids, l, n, &lo, &hi);
    int64_t mmax = 0, mmin = 0;
    if (hi != -INFINITY) { /* (else all -inf: ordered by id) */
        double tlo = pow2 ? (lo - c) * inv : (lo - c) / q;
        double thi = pow2 ? (hi - c) * inv : (hi - c) / q;
        if (!(fabs(tlo) < 0x1p40)) /* the values are <= 0: |t| <= |tlo| */
            return 0;
        mmax = grid_int(thi);
        mmin = grid_int(tlo);
    }
    unsigned ibits = 0, rbits = 0;
    while (ibits < 31 && (id_or >> ibits) != 0)
        ibits++;
    uint64_t n_ranks = (uint64_t)(mmax - mmin) + 2; /* -inf's included */
    while (rbits < 42 && ((n_ranks - 1) >> rbits) != 0)
        rbits++;
    if (n_ranks > RANKS_MAX || ibits + rbits > 32) {
        if (ibits + rbits + 10 > 64)
            return 0;
        if (c != 0)
            shift_row(l, n, c);
        return sort_wide(ids, l, n, q, inv, mmax, n_ranks - 1, ibits, rbits);
    }
    const uint32_t inf_rank = (uint32_t)n_ranks - 1;
    const int64_t k_shift = grid_int(c / q);
    grid_keys(l, ids, n, q, inv, mmax + k_shift, inf_rank, ibits, key);
    const uint32_t *sorted = key;
    int path = use_bitonic(n);
    if (path == 3) {
        bitonic_keys(key, n);
    } else if (path == 5) {
        bitonic2_keys(key, n);
    } else {
        path = 1;
        if (n_ranks <= 4 * n || !insertion_keys(key, n, n)) {
            sorted = order_keys(key, tmp, n, (uint32_t)n_ranks, ibits,
                                &radix);
            path += radix;
        }
    }
    keys_out(sorted, n, ibits, (double)(mmax + k_shift), inf_rank, q, c, ids,
             l);
    return path;
}

/* Returns how the records were sorted, for the tests: 0 by comparison, 1
 * on the grid, 2 on the grid with the radix sort at the end, 3 on the
 * grid by the bitonic sort, 4 on the grid with 64-bit keys, 5 on the grid
 * by the AVX2 bitonic sort. */
int hm_lp_sort(int32_t *ids, double *l, size_t n, double q, double c)
{
    int path;
    if (n > 32 && q > 0 && (path = sort_grid(ids, l, n, q, c)) != 0)
        return path;
    if (c != 0)
        shift_row(l, n, c);
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
    return 0;
}
