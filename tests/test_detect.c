/*
 * test_detect.c - tallies: exact scores against a naive recomputation,
 * the dedup / prompt / padding rules and their counts, merge algebra,
 * files, calibration under the null, power, tenant attribution, and the
 * multiple-testing and self-check statistics.
 */
#define _GNU_SOURCE 1 /* memmem */
#include <float.h>
#include <math.h>
#include <pthread.h>
#include <sys/mman.h>
#include <unistd.h>

#include <openssl/evp.h>
#define XXH_INLINE_ALL
#include <xxhash.h>

#include "testutil.h"

#include "../src/gumbel_log.h"
#include "../src/internal.h"

#define V 5000

/* test_generate (testutil.h) with this file's vocabulary. */
static void generate(const hm_ctx *ctx, const int32_t *prompt, size_t np,
                     int32_t *out, size_t n, uint64_t *rng)
{
    test_generate(ctx, prompt, np, out, n, rng, V);
}

static void random_tokens(int32_t *out, size_t n, int32_t vocab, uint64_t *s)
{
    for (size_t i = 0; i < n; i++)
        out[i] = (int32_t)(test_rand(s) % (uint64_t)vocab);
}

static hm_tally *tally1(const hm_ctx *ctx, unsigned flags)
{
    hm_tally *t;
    char msg[HM_ERRMSG_SIZE] = "";
    int rc = hm_tally_new(&t, &ctx, 1, flags, msg, sizeof msg);
    ck_assert_msg(rc == HM_OK, "hm_tally_new: %s", msg);
    return t;
}

/* ------------------------------------------------ naive recomputation */

typedef struct naive {
    int32_t tup[2000][HM_MAX_CONTEXT + 1];
    size_t n;
    double score;
    uint64_t dropped_prompt, padded;
    /* gumbel: the sum of the lowered scores cut to multiples of 2^-64,
     * in units of 2^-64, and of the exact scores (to about 2^-63) */
    unsigned __int128 cut;
    long double exact;
} naive;

/* Score documents the slow, obvious way: explicit windows, linear search
 * for repeats, hm_token_score per tuple.  kgw selfhash values depend on
 * the window only through a keyed anchor, so there a repeat is a repeated
 * PRF value (distinct anchors collide with probability 2^-64). */
static void naive_add(naive *nv, const hm_ctx *ctx, unsigned c,
                      const int32_t *prompt, size_t np, const int32_t *tok,
                      size_t n)
{
    unsigned w = hm_ctx_channel_window(ctx, c);
    int32_t doc[4096];
    memcpy(doc, prompt, np * sizeof *doc);
    memcpy(doc + np, tok, n * sizeof *doc);
    for (size_t j = 0; j < n; j++) {
        size_t p = np + j;
        int32_t tup[HM_MAX_CONTEXT + 1];
        for (unsigned i = 0; i < w; i++)
            tup[i] = p >= w - i ? doc[p - (w - i)] : -1;
        tup[w] = doc[p];
        nv->padded += p < w;
        int in_prompt = 0;
        for (size_t q = w; q < np && !in_prompt; q++)
            in_prompt = memcmp(doc + q - w, tup, w * sizeof *tup) == 0;
        if (in_prompt) {
            nv->dropped_prompt++;
            continue;
        }
        size_t have = p < w ? p : w;
        double sh = 0;
        int selfhash = hm_ctx_channel_param(ctx, c, "seeding", &sh) == HM_OK &&
                       sh == HM_SEEDING_SELFHASH;
        if (selfhash) {
            uint64_t x;
            ck_assert_int_eq(
                hm_token_prf(ctx, c, doc + p - have, have, doc[p], &x), HM_OK);
            memset(tup, 0, sizeof tup);
            memcpy(tup, &x, sizeof x);
        }
        int seen = 0;
        for (size_t k = 0; k < nv->n && !seen; k++)
            seen = memcmp(nv->tup[k], tup, (w + 1) * sizeof *tup) == 0;
        if (seen)
            continue;
        ck_assert_uint_lt(nv->n, 2000);
        memcpy(nv->tup[nv->n++], tup, sizeof tup);
        double s;
        ck_assert_int_eq(
            hm_token_score(ctx, c, doc + p - have, have, doc[p], &s), HM_OK);
        nv->score += s;
        if (hm_ctx_channel_scheme(ctx, c) == HM_SCHEME_GUMBEL) {
            uint64_t x;
            ck_assert_int_eq(
                hm_token_prf(ctx, c, doc + p - have, have, doc[p], &x), HM_OK);
            double low = hm_gumbel_score_low(x), ip = floor(low);
            nv->cut += (unsigned __int128)(uint64_t)ip << 64 |
                       (uint64_t)((low - ip) * 0x1p64);
            nv->exact -= logl(((long double)(~x >> 12) + 0.5L) * 0x1p-52L);
        }
    }
}

/* The largest double at most v 2^-64. */
static double down_double(unsigned __int128 v)
{
    double d = (double)v * 0x1p-64; /* to nearest */
    if (d * 0x1p64 >= 0x1p53 && (unsigned __int128)(d * 0x1p64) > v)
        d = nextafter(d, 0);
    return d;
}

static const char *const specs[] = {
    "gumbel", "kgw", "kgw:seeding=selfhash", "tournament",
    "kgw:h=1+gumbel:h=4", "kgw:gamma=0.5,h=2+tournament:m=20,h=3",
};

START_TEST(test_matches_naive)
{
    hm_key *k = test_key(11);
    hm_ctx *ctx = test_ctx(k, specs[_i]);
    hm_tally *t = tally1(ctx, 0);
    static naive nv[HM_MAX_CHANNELS];
    memset(nv, 0, sizeof nv);
    uint64_t s = 100 + (uint64_t)_i;
    uint64_t tokens = 0;
    for (int d = 0; d < 12; d++) {
        int32_t prompt[40], tok[120];
        size_t np = (size_t)(d % 3 == 0 ? 0 : 3 + d * 3);
        size_t n = 20 + (size_t)d * 8;
        /* a small vocabulary makes repeats, prompt windows and padding
         * all happen */
        random_tokens(prompt, np, 6, &s);
        random_tokens(tok, n, 6, &s);
        ck_assert_int_eq(hm_tally_add(t, prompt, np, tok, n), HM_OK);
        for (unsigned c = 0; c < hm_ctx_channels(ctx); c++)
            naive_add(&nv[c], ctx, c, prompt, np, tok, n);
        tokens += n;
    }
    for (unsigned c = 0; c < hm_ctx_channels(ctx); c++) {
        hm_result r;
        ck_assert_int_eq(hm_tally_result(t, 0, c, &r), HM_OK);
        ck_assert_uint_eq(r.documents, 12);
        ck_assert_uint_eq(r.tokens, tokens);
        ck_assert_uint_eq(r.scored, nv[c].n);
        ck_assert_uint_eq(r.dropped_prompt, nv[c].dropped_prompt);
        ck_assert_uint_eq(r.padded, nv[c].padded);
        ck_assert_uint_eq(r.dropped_padded, 0);
        ck_assert_uint_eq(r.dropped_repeat,
                          tokens - nv[c].n - nv[c].dropped_prompt);
        ck_assert_uint_gt(r.dropped_prompt, 0);
        ck_assert_uint_gt(r.dropped_repeat, 0);
        ck_assert_double_eq_tol(r.score, nv[c].score, 1e-9);
        double ref, m;
        int scheme = hm_ctx_channel_scheme(ctx, c);
        if (scheme == HM_SCHEME_GUMBEL) {
            /* exactly the cut sum rounded down; at most the exact sum,
             * and short of it by no more than hm_tally_new(3) says (the
             * exact sum in long double: where that is no wider than
             * double, only the first) */
            ck_assert(r.score == down_double(nv[c].cut));
#if LDBL_MANT_DIG >= 64
            long double ex = nv[c].exact, n = (long double)r.scored;
            ck_assert((long double)r.score <= ex * (1 - 0x1p-62L));
            ck_assert((long double)r.score >=
                      ex - n * 0x1p-63L - 0x1p-49L * ex);
#endif
        }
        if (scheme == HM_SCHEME_GUMBEL)
            ref = hm_log10_sf_gamma((double)r.scored, nv[c].score);
        else if (scheme == HM_SCHEME_KGW) {
            ck_assert_int_eq(hm_ctx_channel_param(ctx, c, "green", &m), HM_OK);
            ref = hm_log10_sf_binom((uint64_t)nv[c].score, r.scored, m);
        } else {
            ck_assert_int_eq(hm_ctx_channel_param(ctx, c, "m", &m), HM_OK);
            ref = hm_log10_sf_binom((uint64_t)nv[c].score,
                                    r.scored * (uint64_t)m, 0.5);
        }
        ck_assert_double_eq_tol(r.log10_p, ref, 1e-9 * (1 + fabs(ref)));
    }
    hm_tally_free(t);
    hm_ctx_free(ctx);
    hm_key_free(k);
}
END_TEST

START_TEST(test_rules)
{
    hm_key *k = test_key(12);
    hm_ctx *ctx = test_ctx(k, "gumbel:h=4");
    hm_tally *t = tally1(ctx, 0), *ts = tally1(ctx, HM_TALLY_SKIP_PADDED);
    int32_t tok[10] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
    hm_result r;
    /* no prompt: the first 4 windows are padded */
    ck_assert_int_eq(hm_tally_add(t, NULL, 0, tok, 10), HM_OK);
    ck_assert_int_eq(hm_tally_add(ts, NULL, 0, tok, 10), HM_OK);
    ck_assert_int_eq(hm_tally_result(t, 0, 0, &r), HM_OK);
    ck_assert_uint_eq(r.padded, 4);
    ck_assert_uint_eq(r.scored, 10);
    ck_assert_int_eq(hm_tally_result(ts, 0, 0, &r), HM_OK);
    ck_assert_uint_eq(r.padded, 4);
    ck_assert_uint_eq(r.dropped_padded, 4);
    ck_assert_uint_eq(r.scored, 6);
    /* the same document again: every tuple is a repeat */
    ck_assert_int_eq(hm_tally_add(t, NULL, 0, tok, 10), HM_OK);
    ck_assert_int_eq(hm_tally_result(t, 0, 0, &r), HM_OK);
    ck_assert_uint_eq(r.documents, 2);
    ck_assert_uint_eq(r.scored, 10);
    ck_assert_uint_eq(r.dropped_repeat, 10);
    /* windows inside the prompt are excluded; the window ending the
     * prompt is not inside it */
    hm_tally_clear(t);
    int32_t prompt[8] = {1, 2, 3, 4, 5, 9, 9, 9};
    int32_t gen[3] = {77, 78, 79};
    /* tokens after (1,2,3,4) and after (9,9,9,77) ... */
    ck_assert_int_eq(hm_tally_add(t, prompt, 8, gen, 3), HM_OK);
    ck_assert_int_eq(hm_tally_result(t, 0, 0, &r), HM_OK);
    ck_assert_uint_eq(r.dropped_prompt, 0);
    ck_assert_uint_eq(r.scored, 3);
    int32_t prompt2[6] = {1, 2, 3, 4, 5, 6};
    int32_t gen2[6] = {1, 2, 3, 4, 99, 1}; /* window 1,2,3,4 is in prompt */
    ck_assert_int_eq(hm_tally_add(t, prompt2, 6, gen2, 6), HM_OK);
    ck_assert_int_eq(hm_tally_result(t, 0, 0, &r), HM_OK);
    ck_assert_uint_eq(r.dropped_prompt, 1);
    ck_assert_uint_eq(r.scored, 8);
    ck_assert_uint_eq(r.padded, 0);
    /* all or nothing: a negative id changes nothing */
    hm_result before, after;
    ck_assert_int_eq(hm_tally_result(t, 0, 0, &before), HM_OK);
    int32_t badtok[3] = {5, -1, 6};
    ck_assert_int_eq(hm_tally_add(t, NULL, 0, badtok, 3), HM_ERANGE);
    ck_assert_int_eq(hm_tally_add(t, badtok + 1, 1, tok, 3), HM_ERANGE);
    ck_assert_int_eq(hm_tally_add(t, NULL, 2, tok, 3), HM_EINVAL);
    ck_assert_int_eq(hm_tally_result(t, 0, 0, &after), HM_OK);
    ck_assert_mem_eq(&before, &after, sizeof before);
    ck_assert_int_eq(hm_tally_result(t, 1, 0, &r), HM_EINVAL);
    ck_assert_int_eq(hm_tally_result(t, 0, 1, &r), HM_EINVAL);
    /* an empty tally tests nothing and says p = 1 */
    hm_tally_clear(t);
    ck_assert_int_eq(hm_tally_result(t, 0, 0, &r), HM_OK);
    ck_assert_uint_eq(r.scored, 0);
    ck_assert_double_eq(r.log10_p, 0);
    hm_tally_free(t);
    hm_tally_free(ts);
    hm_ctx_free(ctx);
    hm_key_free(k);
}
END_TEST

/* ------------------------------------------------------------- merge */

static void save(const hm_tally *t, const char *path)
{
    char msg[HM_ERRMSG_SIZE] = "";
    ck_assert_msg(hm_tally_save(t, path, msg, sizeof msg) == HM_OK, "%s",
                  msg);
}

static unsigned char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    ck_assert_ptr_nonnull(f);
    static unsigned char buf[1 << 22];
    *len = fread(buf, 1, sizeof buf, f);
    fclose(f);
    unsigned char *out = malloc(*len + 1);
    memcpy(out, buf, *len);
    return out;
}

static void same_results(const hm_tally *a, const hm_tally *b)
{
    ck_assert_uint_eq(hm_tally_keys(a), hm_tally_keys(b));
    for (size_t k = 0; k < hm_tally_keys(a); k++)
        for (unsigned c = 0; c < hm_tally_channels(a); c++) {
            hm_result ra, rb;
            ck_assert_int_eq(hm_tally_result(a, k, c, &ra), HM_OK);
            ck_assert_int_eq(hm_tally_result(b, k, c, &rb), HM_OK);
            ck_assert_mem_eq(&ra, &rb, sizeof ra);
        }
}

START_TEST(test_merge_algebra)
{
    hm_key *k1 = test_key(21), *k2 = test_key(22);
    const char *spec = "kgw:h=1+gumbel:h=4";
    hm_ctx *ctxs[2] = {NULL, NULL};
    char msg[HM_ERRMSG_SIZE];
    ck_assert_int_eq(hm_ctx_new(&ctxs[0], k1, spec, "acme", msg, sizeof msg),
                     HM_OK);
    ck_assert_int_eq(hm_ctx_new(&ctxs[1], k2, spec, NULL, msg, sizeof msg),
                     HM_OK);
    const hm_ctx *const *cc = (const hm_ctx *const *)ctxs;
    hm_tally *all, *part[3];
    ck_assert_int_eq(hm_tally_new(&all, cc, 2, 0, msg, sizeof msg), HM_OK);
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(hm_tally_new(&part[i], cc, 2, 0, msg, sizeof msg),
                         HM_OK);
    uint64_t s = 5;
    for (int d = 0; d < 60; d++) {
        int32_t prompt[10], tok[50];
        random_tokens(prompt, 10, 40, &s);
        random_tokens(tok, 50, 40, &s);
        ck_assert_int_eq(hm_tally_add(all, prompt, 10, tok, 50), HM_OK);
        /* some documents go to two parts: overlaps must not count twice */
        int p = (int)(test_rand(&s) % 3);
        ck_assert_int_eq(hm_tally_add(part[p], prompt, 10, tok, 50), HM_OK);
        if (d % 7 == 0) {
            hm_tally *q = part[(p + 1) % 3];
            ck_assert_int_eq(hm_tally_add(q, prompt, 10, tok, 50), HM_OK);
            ck_assert_int_eq(hm_tally_add(all, prompt, 10, tok, 50), HM_OK);
        }
    }
    char dir[] = "/tmp/hm-detect-XXXXXX", p1[64], p2[64], p3[64];
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(p1, sizeof p1, "%s/a", dir);
    snprintf(p2, sizeof p2, "%s/b", dir);
    snprintf(p3, sizeof p3, "%s/c", dir);
    /* (A+B)+C, A+(B+C) and C+B+A all equal the single tally, bit for
     * bit, and save to identical bytes */
    hm_tally *x, *y, *z;
    ck_assert_int_eq(hm_tally_new(&x, cc, 2, 0, msg, sizeof msg), HM_OK);
    ck_assert_int_eq(hm_tally_new(&y, cc, 2, 0, msg, sizeof msg), HM_OK);
    ck_assert_int_eq(hm_tally_new(&z, cc, 2, 0, msg, sizeof msg), HM_OK);
    ck_assert_int_eq(hm_tally_merge(x, part[0], msg, sizeof msg), HM_OK);
    ck_assert_int_eq(hm_tally_merge(x, part[1], msg, sizeof msg), HM_OK);
    ck_assert_int_eq(hm_tally_merge(x, part[2], msg, sizeof msg), HM_OK);
    ck_assert_int_eq(hm_tally_merge(y, part[1], msg, sizeof msg), HM_OK);
    ck_assert_int_eq(hm_tally_merge(y, part[2], msg, sizeof msg), HM_OK);
    ck_assert_int_eq(hm_tally_merge(z, part[0], msg, sizeof msg), HM_OK);
    ck_assert_int_eq(hm_tally_merge(z, y, msg, sizeof msg), HM_OK);
    same_results(x, all);
    same_results(z, all);
    save(all, p1);
    save(z, p2);
    size_t la, lb;
    unsigned char *a = slurp(p1, &la), *b = slurp(p2, &lb);
    ck_assert_uint_eq(la, lb);
    ck_assert_mem_eq(a, b, la);
    /* load: same results, merges with a live tally, saves identically */
    hm_tally *l;
    ck_assert_msg(hm_tally_load(&l, p2, msg, sizeof msg) == HM_OK, "%s", msg);
    same_results(l, all);
    ck_assert_str_eq(hm_tally_tenant(l, 0), "acme");
    ck_assert_str_eq(hm_tally_tenant(l, 1), "");
    ck_assert_str_eq(hm_tally_fingerprint(l, 0), hm_ctx_fingerprint(ctxs[0]));
    ck_assert_ptr_null(hm_tally_fingerprint(l, 2));
    int32_t tok[3] = {1, 2, 3};
    ck_assert_int_eq(hm_tally_add(l, NULL, 0, tok, 3), HM_ENOTSUP);
    save(l, p3);
    free(b);
    b = slurp(p3, &lb);
    ck_assert_uint_eq(la, lb);
    ck_assert_mem_eq(a, b, la);
    free(a);
    free(b);
    /* merging inputs seen before adds no tuple, only counts; merging a
     * tally with itself doubles its counts */
    hm_result r0, r1, rp;
    ck_assert_int_eq(hm_tally_result(l, 1, 1, &r0), HM_OK);
    ck_assert_int_eq(hm_tally_result(part[1], 1, 1, &rp), HM_OK);
    ck_assert_int_eq(hm_tally_merge(l, part[1], msg, sizeof msg), HM_OK);
    ck_assert_int_eq(hm_tally_result(l, 1, 1, &r1), HM_OK);
    ck_assert_uint_eq(r1.scored, r0.scored);
    ck_assert_double_eq(r1.score, r0.score);
    ck_assert_uint_eq(r1.tokens, r0.tokens + rp.tokens);
    ck_assert_uint_eq(r1.documents, r0.documents + rp.documents);
    ck_assert_uint_eq(r1.dropped_repeat, r0.dropped_repeat + rp.tokens -
                                             rp.dropped_prompt);
    ck_assert_int_eq(hm_tally_merge(l, l, msg, sizeof msg), HM_OK);
    ck_assert_int_eq(hm_tally_result(l, 1, 1, &r0), HM_OK);
    ck_assert_uint_eq(r0.scored, r1.scored);
    ck_assert_uint_eq(r0.tokens, 2 * r1.tokens);
    hm_tally_free(l);

    /* mismatches are refused with a message */
    hm_tally *other;
    hm_ctx *octx = test_ctx(k1, "kgw:h=2+gumbel:h=4");
    ck_assert_int_eq(hm_tally_new(&other, (const hm_ctx *const *)&octx, 1, 0,
                                  msg, sizeof msg),
                     HM_OK);
    msg[0] = '\0';
    ck_assert_int_eq(hm_tally_merge(x, other, msg, sizeof msg), HM_EINVAL);
    ck_assert_msg(strstr(msg, "spec") != NULL, "%s", msg);
    hm_tally_free(other);
    hm_ctx *swapped[2] = {ctxs[1], ctxs[0]};
    ck_assert_int_eq(hm_tally_new(&other, (const hm_ctx *const *)swapped, 2,
                                  0, msg, sizeof msg),
                     HM_OK);
    ck_assert_int_eq(hm_tally_merge(x, other, msg, sizeof msg), HM_EINVAL);
    ck_assert_msg(strstr(msg, "key 0 differs") != NULL, "%s", msg);
    hm_tally_free(other);
    ck_assert_int_eq(hm_tally_new(&other, cc, 2, HM_TALLY_SKIP_PADDED, msg,
                                  sizeof msg),
                     HM_OK);
    ck_assert_int_eq(hm_tally_merge(x, other, msg, sizeof msg), HM_EINVAL);
    hm_tally_free(other);
    /* a tally needs one spec */
    hm_ctx *mixed[2] = {ctxs[0], octx};
    msg[0] = '\0';
    ck_assert_int_eq(hm_tally_new(&other, (const hm_ctx *const *)mixed, 2, 0,
                                  msg, sizeof msg),
                     HM_EINVAL);
    ck_assert_msg(strstr(msg, "one spec") != NULL, "%s", msg);
    hm_ctx_free(octx);

    unlink(p1);
    unlink(p2);
    unlink(p3);
    rmdir(dir);
    hm_tally_free(x);
    hm_tally_free(y);
    hm_tally_free(z);
    hm_tally_free(all);
    for (int i = 0; i < 3; i++)
        hm_tally_free(part[i]);
    hm_ctx_free(ctxs[0]);
    hm_ctx_free(ctxs[1]);
    hm_key_free(k1);
    hm_key_free(k2);
}
END_TEST

/* A size hint large enough that the partitions share one arena: the same
 * results and bytes as without, also when partitions outgrow it, when a
 * later hint repartitions the table into a new arena, through a merge,
 * and after a clear. */
START_TEST(test_reserve_arena)
{
    hm_key *k = test_key(32);
    hm_ctx *ctx = test_ctx(k, specs[_i]);
    hm_tally *t[3] = {tally1(ctx, 0), tally1(ctx, 0), tally1(ctx, 0)};
    char dir[] = "/tmp/hm-arena-XXXXXX", path[2][64];
    ck_assert_ptr_nonnull(mkdtemp(dir));
    ck_assert_int_eq(hm_tally_reserve(t[1], 300000), HM_OK);
    uint64_t s = 700 + (uint64_t)_i;
    static int32_t tok[20000];
    for (int d = 0; d < 30; d++) {
        int32_t prompt[20];
        random_tokens(prompt, 20, 50, &s);
        random_tokens(tok, 20000, d % 2 ? 5000 : 200000, &s);
        for (int i = 0; i < 2; i++)
            ck_assert_int_eq(hm_tally_add(t[i], prompt, 20, tok, 20000),
                             HM_OK);
        if (d == 20) /* past the hint: a larger one */
            ck_assert_int_eq(hm_tally_reserve(t[1], 2000000), HM_OK);
    }
    ck_assert_int_eq(hm_tally_merge(t[2], t[1], NULL, 0), HM_OK);
    for (int i = 0; i < 2; i++)
        snprintf(path[i], sizeof path[i], "%s/%d", dir, i);
    size_t l0, l1;
    for (int i = 1; i < 3; i++) {
        same_results(t[0], t[i]);
        save(t[0], path[0]);
        save(t[i], path[1]);
        unsigned char *b0 = slurp(path[0], &l0), *b1 = slurp(path[1], &l1);
        ck_assert_uint_eq(l0, l1);
        ck_assert_mem_eq(b0, b1, l0);
        free(b0);
        free(b1);
    }
    /* cleared, hinted and filled again: as new */
    hm_tally_clear(t[1]);
    hm_tally_clear(t[2]);
    ck_assert_int_eq(hm_tally_reserve(t[1], 400000), HM_OK);
    for (int i = 1; i < 3; i++)
        ck_assert_int_eq(hm_tally_add(t[i], NULL, 0, tok, 20000), HM_OK);
    same_results(t[1], t[2]);
    for (int i = 0; i < 2; i++)
        unlink(path[i]);
    rmdir(dir);
    for (int i = 0; i < 3; i++)
        hm_tally_free(t[i]);
    hm_ctx_free(ctx);
    hm_key_free(k);
}
END_TEST

/* Damaged files are refused with the file name and the problem. */
/* A size hint changes nothing but the memory: the same results and the
 * same bytes saved, with the hint too small, exact or generous; and a
 * hint that cannot be met fails cleanly. */
START_TEST(test_reserve)
{
    hm_key *k = test_key(31);
    hm_ctx *ctx = test_ctx(k, specs[_i]);
    static const size_t hints[] = {0, 50, 2400, 100000};
    hm_tally *t[4];
    char dir[] = "/tmp/hm-reserve-XXXXXX", path[4][64];
    ck_assert_ptr_nonnull(mkdtemp(dir));
    for (int i = 0; i < 4; i++) {
        t[i] = tally1(ctx, 0);
        if (hints[i] > 0)
            ck_assert_int_eq(hm_tally_reserve(t[i], hints[i]), HM_OK);
        snprintf(path[i], sizeof path[i], "%s/%d", dir, i);
    }
    uint64_t s = 300 + (uint64_t)_i;
    for (int d = 0; d < 30; d++) {
        int32_t prompt[20], tok[80];
        random_tokens(prompt, 20, 50, &s);
        random_tokens(tok, 80, d % 2 ? 50 : 5000, &s);
        for (int i = 0; i < 4; i++)
            ck_assert_int_eq(hm_tally_add(t[i], prompt, 20, tok, 80), HM_OK);
        if (d == 10) /* a hint after some tuples are in */
            ck_assert_int_eq(hm_tally_reserve(t[1], 5000), HM_OK);
    }
    size_t l0, li;
    save(t[0], path[0]);
    unsigned char *b0 = slurp(path[0], &l0);
    for (int i = 1; i < 4; i++) {
        same_results(t[0], t[i]);
        save(t[i], path[i]);
        unsigned char *bi = slurp(path[i], &li);
        ck_assert_uint_eq(l0, li);
        ck_assert_mem_eq(b0, bi, l0);
        free(bi);
        unlink(path[i]);
    }
    free(b0);
    unlink(path[0]);
    rmdir(dir);
    /* an impossible hint: HM_ENOMEM, and the tally is as it was */
    hm_result before, after;
    ck_assert_int_eq(hm_tally_result(t[2], 0, 0, &before), HM_OK);
    ck_assert_int_eq(hm_tally_reserve(t[2], SIZE_MAX / 2), HM_ENOMEM);
    ck_assert_int_eq(hm_tally_result(t[2], 0, 0, &after), HM_OK);
    ck_assert_mem_eq(&before, &after, sizeof before);
    same_results(t[0], t[2]);
    ck_assert_int_eq(hm_tally_reserve(NULL, 10), HM_EINVAL);
    ck_assert_int_eq(hm_tally_reserve(t[3], 0), HM_OK);
    for (int i = 0; i < 4; i++)
        hm_tally_free(t[i]);
    hm_ctx_free(ctx);
    hm_key_free(k);
}
END_TEST

/* Write to path the tally file data (len bytes with its checksum) with
 * the first from replaced by tolen bytes of to, under a new checksum;
 * -1 when from is not there. */
static int rewrite(const unsigned char *data, size_t len, const char *from,
                   const char *to, size_t tolen, const char *path)
{
    const unsigned char *at = memmem(data, len - 32, from, strlen(from));
    if (at == NULL)
        return -1;
    size_t head = (size_t)(at - data), tail = len - 32 - head - strlen(from);
    unsigned char *out = malloc(len + tolen);
    ck_assert_ptr_nonnull(out);
    memcpy(out, data, head);
    memcpy(out + head, to, tolen);
    memcpy(out + head + tolen, at + strlen(from), tail);
    size_t n = head + tolen + tail;
    ck_assert_int_eq(EVP_Digest(out, n, out + n, NULL, EVP_sha256(), NULL), 1);
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(out, 1, n + 32, f), n + 32);
    ck_assert_int_eq(fclose(f), 0);
    free(out);
    return 0;
}

START_TEST(test_bad_files)
{
    hm_key *k = test_key(31);
    hm_ctx *ctx = test_ctx(k, "tournament");
    hm_tally *t = tally1(ctx, 0), *l = NULL;
    int32_t tok[30];
    uint64_t s = 9;
    random_tokens(tok, 30, 100, &s);
    ck_assert_int_eq(hm_tally_add(t, NULL, 0, tok, 30), HM_OK);
    char dir[] = "/tmp/hm-detect-XXXXXX", p[64], q[64], msg[HM_ERRMSG_SIZE];
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(p, sizeof p, "%s/t", dir);
    snprintf(q, sizeof q, "%s/bad", dir);
    save(t, p);
    size_t len;
    unsigned char *data = slurp(p, &len);
    /* truncated */
    FILE *f = fopen(q, "wb");
    fwrite(data, 1, len - 10, f);
    fclose(f);
    ck_assert_int_eq(hm_tally_load(&l, q, msg, sizeof msg), HM_EFORMAT);
    ck_assert_msg(strstr(msg, q) && strstr(msg, "checksum"), "%s", msg);
    ck_assert_ptr_null(l);
    /* one flipped bit */
    data[len / 2] ^= 4;
    f = fopen(q, "wb");
    fwrite(data, 1, len, f);
    fclose(f);
    ck_assert_int_eq(hm_tally_load(&l, q, msg, sizeof msg), HM_EFORMAT);
    /* not a tally */
    f = fopen(q, "wb");
    fputs("hello\n", f);
    fclose(f);
    ck_assert_int_eq(hm_tally_load(&l, q, msg, sizeof msg), HM_EFORMAT);
    ck_assert_msg(strstr(msg, "not a hallmark tally") != NULL, "%s", msg);
    /* header lines must be canonical and free of NUL bytes, even under
     * a right checksum */
    free(data);
    data = slurp(p, &len);
    static const struct {
        const char *from, *to;
        size_t tolen; /* 0: strlen(to) */
    } bad_heads[] = {
        {"flags 0\n", "flags 00\n", 0},
        {"flags 0\n", "flags +0\n", 0},
        {"documents 1\n", "documents 1 \n", 0},
        {"documents 1\n", "documents 1x\n", 0},
        {"keys 1\n", "keys  1\n", 0},
        {"documents 1\n", "documents 1\0x\n", 14},
        {"spec tournament:id=main,h=4", "spec tournament:h=4,id=main", 0},
        {"key 0 hmk1-", "key 0 HMK1-", 0},
        {"key 0 hmk1-", "key 00 hmk1-", 0},
        {" -\n", " 6A62\n", 0}, /* a tenant in upper-case hex */
        {"\nchannel 0 ", "\nchannel 00 ", 0},
        {"\ntable 0 ", "\ntable +0 ", 0},
        {"filter 0 0\n", "filter 0 5\n", 0}, /* a digest, no windows */
    };
    for (size_t i = 0; i < sizeof bad_heads / sizeof bad_heads[0]; i++) {
        const char *from = bad_heads[i].from, *to = bad_heads[i].to;
        size_t tolen = bad_heads[i].tolen ? bad_heads[i].tolen : strlen(to);
        ck_assert_int_eq(rewrite(data, len, from, to, tolen, q), 0);
        ck_assert_msg(hm_tally_load(&l, q, msg, sizeof msg) == HM_EFORMAT,
                      "%s loads", to);
        ck_assert_msg(strstr(msg, q) != NULL, "%s", msg);
        ck_assert_ptr_null(l);
    }
    /* a fingerprint in upper-case hex */
    const unsigned char *fp = memmem(data, len, "key 0 hmk1-", 11);
    ck_assert_ptr_nonnull(fp);
    char from[13], to[13];
    memcpy(from, fp, 12);
    from[12] = '\0';
    memcpy(to, from, sizeof to);
    to[11] = 'F';
    ck_assert_int_eq(rewrite(data, len, from, to, 12, q), 0);
    ck_assert_int_eq(hm_tally_load(&l, q, msg, sizeof msg), HM_EFORMAT);
    ck_assert_msg(strstr(msg, "bad 'key' line") != NULL, "%s", msg);
    /* the same tenant in lower case loads */
    ck_assert_int_eq(rewrite(data, len, " -\n", " 6a62\n", 6, q), 0);
    ck_assert_msg(hm_tally_load(&l, q, msg, sizeof msg) == HM_OK, "%s", msg);
    ck_assert_str_eq(hm_tally_tenant(l, 0), "jb");
    hm_tally_free(l);
    l = NULL;
    /* counts near 2^64 load (a file may say anything), but a merge that
     * would wrap them fails and changes nothing */
    ck_assert_int_eq(rewrite(data, len, "documents 1\n",
                             "documents 18446744073709551000\n", 31, q),
                     0);
    ck_assert_msg(hm_tally_load(&l, q, msg, sizeof msg) == HM_OK, "%s", msg);
    hm_result before, after;
    ck_assert_int_eq(hm_tally_result(l, 0, 0, &before), HM_OK);
    ck_assert_int_eq(hm_tally_merge(t, l, msg, sizeof msg), HM_OK);
    ck_assert_int_eq(hm_tally_merge(l, l, msg, sizeof msg), HM_ERANGE);
    ck_assert_msg(strstr(msg, "2^64") != NULL, "%s", msg);
    ck_assert_int_eq(hm_tally_merge(l, t, msg, sizeof msg), HM_ERANGE);
    ck_assert_int_eq(hm_tally_result(l, 0, 0, &after), HM_OK);
    ck_assert_mem_eq(&before, &after, sizeof before);
    hm_tally_free(l);
    l = NULL;
    /* a channel's tokens near 2^64, merged into a keyed tally: an add
     * that would wrap them fails and changes nothing */
    ck_assert_int_eq(rewrite(data, len, "\nchannel 0 30 ",
                             "\nchannel 0 18446744073709551600 ", 32, q),
                     0);
    ck_assert_msg(hm_tally_load(&l, q, msg, sizeof msg) == HM_OK, "%s", msg);
    hm_tally *keyed = tally1(ctx, 0);
    ck_assert_int_eq(hm_tally_merge(keyed, l, msg, sizeof msg), HM_OK);
    ck_assert_int_eq(hm_tally_result(keyed, 0, 0, &before), HM_OK);
    ck_assert_int_eq(hm_tally_add(keyed, NULL, 0, tok, 30), HM_ERANGE);
    ck_assert_int_eq(hm_tally_result(keyed, 0, 0, &after), HM_OK);
    ck_assert_mem_eq(&before, &after, sizeof before);
    ck_assert_int_eq(hm_tally_add(keyed, NULL, 0, tok, 15), HM_OK);
    hm_tally_free(keyed);
    hm_tally_free(l);
    l = NULL;
    /* missing */
    ck_assert_int_eq(hm_tally_load(&l, "/nonexistent/t", msg, sizeof msg),
                     HM_EIO);
    ck_assert_msg(strstr(msg, "/nonexistent/t") != NULL, "%s", msg);
    /* a failed save leaves nothing behind and no partial file */
    snprintf(q, sizeof q, "%s/none/t", dir);
    ck_assert_int_eq(hm_tally_save(t, q, msg, sizeof msg), HM_EIO);
    ck_assert_msg(strstr(msg, q) != NULL, "%s", msg);
    free(data);
    unlink(p);
    snprintf(q, sizeof q, "%s/bad", dir);
    unlink(q);
    ck_assert_int_eq(rmdir(dir), 0); /* empty: no temporary files left */
    hm_tally_free(t);
    hm_ctx_free(ctx);
    hm_key_free(k);
}
END_TEST

/* The filtered test keeps exactly the tuples whose window the filter has
 * seen, and stays exact: innocent text filtered by the provider's own
 * watermarked outputs is not evidence (filtering on whole tuples would
 * keep mostly the green ones and make it look watermarked). */
START_TEST(test_filter)
{
    hm_key *k = test_key(51), *k2 = test_key(52);
    hm_ctx *ctx = test_ctx(k, "kgw:h=1+gumbel:h=2");
    hm_tally *t = tally1(ctx, 0), *ref = tally1(ctx, 0);
    char msg[HM_ERRMSG_SIZE];
    hm_result r;
    /* kgw h=1: windows are single tokens.  The filter holds documents
     * with tokens below 25, so kept tuples follow a token below 25. */
    uint64_t s = 8;
    int32_t f[3][40], d[6][60];
    for (int i = 0; i < 3; i++) {
        random_tokens(f[i], 40, 25, &s);
        ck_assert_int_eq(hm_tally_filter_add(t, NULL, 0, f[i], 40), HM_OK);
    }
    for (int i = 0; i < 6; i++) {
        random_tokens(d[i], 60, 50, &s);
        ck_assert_int_eq(hm_tally_add(t, NULL, 0, d[i], 60), HM_OK);
    }
    ck_assert_int_eq(hm_tally_filter_add(t, NULL, 0, f[0], 40), HM_ENOTSUP);
    /* documents without tokens add no window: no filter at all */
    ck_assert_int_eq(hm_tally_filter_add(ref, NULL, 0, NULL, 0), HM_OK);
    ck_assert_int_eq(hm_tally_add(ref, NULL, 0, d[0], 60), HM_OK);
    ck_assert_int_eq(hm_tally_result(ref, 0, 0, &r), HM_OK);
    ck_assert_uint_eq(r.dropped_filter, 0);
    hm_tally_clear(ref);
    /* the reference: channel 0 scored by hand on the kept tuples */
    int32_t pairs[400][2];
    size_t n_pairs = 0;
    double score = 0;
    uint64_t dropped = 0;
    int seen_w[50] = {0};
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 40; j++)
            if (j > 0)
                seen_w[f[i][j - 1]] = 1;
    for (int i = 0; i < 6; i++)
        for (int j = 0; j < 60; j++) {
            /* window of position j: the token before, or padding */
            int keep = j > 0 ? seen_w[d[i][j - 1]] : 1; /* pad seen at j=0 */
            if (!keep) {
                dropped++;
                continue;
            }
            int32_t w = j > 0 ? d[i][j - 1] : -1;
            int dup = 0;
            for (size_t q = 0; q < n_pairs && !dup; q++)
                dup = pairs[q][0] == w && pairs[q][1] == d[i][j];
            if (dup)
                continue;
            ck_assert_uint_lt(n_pairs, 400);
            pairs[n_pairs][0] = w;
            pairs[n_pairs++][1] = d[i][j];
            double sc;
            ck_assert_int_eq(hm_token_score(ctx, 0, d[i], (size_t)j, d[i][j],
                                            &sc),
                             HM_OK);
            score += sc;
        }
    ck_assert_int_eq(hm_tally_result(t, 0, 0, &r), HM_OK);
    ck_assert_uint_eq(r.dropped_filter, dropped);
    ck_assert_uint_gt(r.dropped_filter, 100);
    ck_assert_uint_eq(r.scored, n_pairs);
    ck_assert_double_eq_tol(r.score, score, 1e-9);
    ck_assert_uint_eq(r.dropped_repeat,
                      r.tokens - r.dropped_filter - r.scored);
    /* merging needs the same filter; a file keeps it */
    ck_assert_int_eq(hm_tally_merge(ref, t, msg, sizeof msg), HM_EINVAL);
    ck_assert_msg(strstr(msg, "filter") != NULL, "%s", msg);
    char dir[] = "/tmp/hm-detect-XXXXXX", p[64];
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(p, sizeof p, "%s/f", dir);
    save(t, p);
    hm_tally *l;
    ck_assert_msg(hm_tally_load(&l, p, msg, sizeof msg) == HM_OK, "%s", msg);
    same_results(l, t);
    ck_assert_int_eq(hm_tally_merge(l, t, msg, sizeof msg), HM_OK);
    ck_assert_int_eq(hm_tally_merge(l, ref, msg, sizeof msg), HM_EINVAL);
    hm_tally_free(l);
    unlink(p);
    rmdir(dir);
    hm_tally_free(t);
    hm_tally_free(ref);

    /* exactness: innocent text, filtered by text served under the key */
    hm_ctx *kg = test_ctx(k, "kgw:h=1");
    hm_ctx *other = test_ctx(k2, "kgw:h=1");
    hm_tally *ft = tally1(kg, 0);
    for (int i = 0; i < 40; i++) {
        int32_t prompt[4], tok[100];
        random_tokens(prompt, 4, V, &s);
        generate(kg, prompt, 4, tok, 100, &s);
        ck_assert_int_eq(hm_tally_filter_add(ft, prompt, 4, tok, 100), HM_OK);
    }
    for (int i = 0; i < 40; i++) {
        int32_t prompt[4], tok[100];
        random_tokens(prompt, 4, V, &s);
        generate(other, prompt, 4, tok, 100, &s);
        ck_assert_int_eq(hm_tally_add(ft, prompt, 4, tok, 100), HM_OK);
    }
    ck_assert_int_eq(hm_tally_result(ft, 0, 0, &r), HM_OK);
    ck_assert_uint_gt(r.scored, 300);
    ck_assert_msg(r.log10_p > -3, "innocent text filtered: log10 p %g "
                  "(%g green of %llu)", r.log10_p, r.score,
                  (unsigned long long)r.scored);
    hm_tally_free(ft);
    hm_ctx_free(kg);
    hm_ctx_free(other);
    hm_ctx_free(ctx);
    hm_key_free(k);
    hm_key_free(k2);
}
END_TEST

/* --------------------------------------------------- null and power */

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Under the null (text independent of the key), p-values are uniform
 * (gumbel) or super-uniform (binomial tests): checked over 400 keys
 * derived from a public label on the same unwatermarked documents. */
START_TEST(test_calibration)
{
    enum { KEYS = 400 };
    static hm_key *keys[KEYS];
    static hm_ctx *ctxs[KEYS];
    static double p[HM_MAX_CHANNELS][KEYS];
    const char *spec =
        "kgw:h=1+gumbel:h=4+kgw:id=b,gamma=0.5,h=3+kgw:id=s,seeding=selfhash";
    char msg[HM_ERRMSG_SIZE];
    for (int i = 0; i < KEYS; i++) {
        ck_assert_int_eq(hm_key_from_label(&keys[i], "calibration",
                                           (uint32_t)i),
                         HM_OK);
        ck_assert_int_eq(hm_ctx_new(&ctxs[i], keys[i], spec, NULL, msg,
                                    sizeof msg),
                         HM_OK);
    }
    hm_tally *t;
    ck_assert_int_eq(hm_tally_new(&t, (const hm_ctx *const *)ctxs, KEYS, 0,
                                  msg, sizeof msg),
                     HM_OK);
    /* Zipf-like text: repeated tokens and windows, as in real text */
    uint64_t s = 77;
    for (int d = 0; d < 20; d++) {
        int32_t tok[100];
        for (int i = 0; i < 100; i++)
            tok[i] = (int32_t)floor(pow(30000, test_uniform(&s))) - 1;
        ck_assert_int_eq(hm_tally_add(t, NULL, 0, tok, 100), HM_OK);
    }
    for (unsigned c = 0; c < 4; c++)
        for (int i = 0; i < KEYS; i++) {
            hm_result r;
            ck_assert_int_eq(hm_tally_result(t, (size_t)i, c, &r), HM_OK);
            ck_assert_uint_gt(r.scored, 500);
            p[c][i] = pow(10, r.log10_p);
        }
    /* gumbel: KS both ways; 1.63/sqrt(n) is the 1% critical value */
    qsort(p[1], KEYS, sizeof(double), cmp_d);
    double dmax = 0;
    for (int i = 0; i < KEYS; i++) {
        double a = fabs(p[1][i] - (double)i / KEYS);
        double b = fabs((double)(i + 1) / KEYS - p[1][i]);
        dmax = fmax(dmax, fmax(a, b));
    }
    ck_assert_msg(dmax < 1.63 / sqrt(KEYS), "gumbel KS D = %g", dmax);
    /* binomial tests: never too many small p-values (one-sided KS) */
    for (unsigned c = 0; c < 4; c += c == 0 ? 2 : 1) {
        double dp, lp;
        ck_assert_int_eq(hm_ks_uniform(p[c], KEYS, &dp, &lp), HM_OK);
        ck_assert_msg(lp > -2, "channel %u: D+ = %g, log10 p = %g", c, dp,
                      lp);
        int small = 0;
        for (int i = 0; i < KEYS; i++)
            small += p[c][i] <= 0.05;
        ck_assert_int_le(small, 0.05 * KEYS + 3 * sqrt(0.05 * 0.95 * KEYS));
    }
    hm_tally_free(t);
    for (int i = 0; i < KEYS; i++) {
        hm_ctx_free(ctxs[i]);
        hm_key_free(keys[i]);
    }
}
END_TEST

/* Text served through libhallmark is detected under its key and tenant,
 * and only there: tenant attribution with Holm correction. */
START_TEST(test_power_and_tenants)
{
    enum { TENANTS = 12, LEAK = 7 };
    hm_key *k = test_key(41);
    hm_ctx *ctxs[TENANTS];
    const char *spec = specs[_i];
    char msg[HM_ERRMSG_SIZE], name[16];
    for (int i = 0; i < TENANTS; i++) {
        snprintf(name, sizeof name, "tenant-%d", i);
        ck_assert_int_eq(hm_ctx_new(&ctxs[i], k, spec, name, msg, sizeof msg),
                         HM_OK);
    }
    hm_tally *t;
    ck_assert_int_eq(hm_tally_new(&t, (const hm_ctx *const *)ctxs, TENANTS,
                                  0, msg, sizeof msg),
                     HM_OK);
    uint64_t s = 3;
    for (int d = 0; d < 4; d++) {
        int32_t prompt[8], tok[100];
        random_tokens(prompt, 8, V, &s);
        generate(ctxs[LEAK], prompt, 8, tok, 100, &s);
        ck_assert_int_eq(hm_tally_add(t, prompt, 8, tok, 100), HM_OK);
    }
    unsigned c = hm_ctx_channels(ctxs[0]) - 1; /* the last channel */
    double lp[TENANTS], adj[TENANTS];
    for (int i = 0; i < TENANTS; i++) {
        hm_result r;
        ck_assert_int_eq(hm_tally_result(t, (size_t)i, c, &r), HM_OK);
        lp[i] = r.log10_p;
    }
    ck_assert_int_eq(hm_log10_adjust(lp, adj, TENANTS, HM_ADJUST_HOLM),
                     HM_OK);
    for (int i = 0; i < TENANTS; i++)
        if (i == LEAK)
            ck_assert_msg(adj[i] < -6, "%s: leaking tenant log10 p %g", spec,
                          adj[i]);
        else
            ck_assert_msg(adj[i] > -3, "%s: tenant %d log10 p %g", spec, i,
                          adj[i]);
    hm_tally_free(t);
    for (int i = 0; i < TENANTS; i++)
        hm_ctx_free(ctxs[i]);
    hm_key_free(k);
}
END_TEST

/* ------------------------------------------------- multiple testing */

START_TEST(test_adjust)
{
    /* p = 0.01, 0.04, 0.03, 0.5 */
    const double p[4] = {0.01, 0.04, 0.03, 0.5};
    double in[4], out[4];
    for (int i = 0; i < 4; i++)
        in[i] = log10(p[i]);
    ck_assert_int_eq(hm_log10_adjust(in, out, 4, HM_ADJUST_BONFERRONI),
                     HM_OK);
    const double bonf[4] = {0.04, 0.16, 0.12, 1};
    for (int i = 0; i < 4; i++)
        ck_assert_double_eq_tol(out[i], log10(bonf[i]), 1e-12);
    ck_assert_int_eq(hm_log10_adjust(in, out, 4, HM_ADJUST_SIDAK), HM_OK);
    for (int i = 0; i < 4; i++)
        ck_assert_double_eq_tol(out[i], log10(1 - pow(1 - p[i], 4)), 1e-12);
    /* Holm: sorted 0.01, 0.03, 0.04, 0.5 times 4, 3, 2, 1 = 0.04, 0.09,
     * 0.08 -> 0.09 (monotone), 0.5 */
    ck_assert_int_eq(hm_log10_adjust(in, out, 4, HM_ADJUST_HOLM), HM_OK);
    const double holm[4] = {0.04, 0.09, 0.09, 0.5};
    for (int i = 0; i < 4; i++)
        ck_assert_double_eq_tol(out[i], log10(holm[i]), 1e-12);
    /* far below 1e-300 */
    double tiny[2] = {-5000, -0.1};
    ck_assert_int_eq(hm_log10_adjust(tiny, out, 2, HM_ADJUST_SIDAK), HM_OK);
    ck_assert_double_eq_tol(out[0], -5000 + log10(2), 1e-9);
    ck_assert_int_eq(hm_log10_adjust(tiny, tiny, 2, HM_ADJUST_HOLM), HM_OK);
    ck_assert_double_eq_tol(tiny[0], -5000 + log10(2), 1e-9);
    ck_assert_double_eq_tol(tiny[1], -0.1, 1e-12);
    double badp[1] = {0.5};
    ck_assert_int_eq(hm_log10_adjust(badp, out, 1, HM_ADJUST_HOLM), HM_EINVAL);
    ck_assert_int_eq(hm_log10_adjust(in, out, 4, 99), HM_EINVAL);
}
END_TEST

START_TEST(test_ks)
{
    double d, lp;
    /* n = 1: D+ = 1 - p and P[D+ >= d] = 1 - d */
    double one[1] = {0.3};
    ck_assert_int_eq(hm_ks_uniform(one, 1, &d, &lp), HM_OK);
    ck_assert_double_eq_tol(d, 0.7, 1e-15);
    ck_assert_double_eq_tol(lp, log10(0.3), 1e-12);
    /* n = 2, p = (0.1, 0.2): D+ = max(0.5-0.1, 1-0.2) = 0.8;
     * P = 0.8 [(0.2)^2 (0.8)^-1 + 2 (0.2 - 0.5 + ... )] by the formula
     * with j = 0 only (floor(2*0.2) = 0): 0.8 * 0.2^2 / 0.8 = 0.04 */
    double two[2] = {0.2, 0.1};
    ck_assert_int_eq(hm_ks_uniform(two, 2, &d, &lp), HM_OK);
    ck_assert_double_eq_tol(d, 0.8, 1e-15);
    ck_assert_double_eq_tol(lp, log10(0.04), 1e-12);
    /* calibration: under uniform p the KS p-value is uniform itself */
    uint64_t s = 1;
    int small = 0;
    for (int rep = 0; rep < 2000; rep++) {
        double u[50];
        for (int i = 0; i < 50; i++)
            u[i] = test_uniform(&s);
        ck_assert_int_eq(hm_ks_uniform(u, 50, &d, &lp), HM_OK);
        small += lp <= log10(0.05);
    }
    ck_assert_msg(abs(small - 100) < 40, "%d of 2000 below 0.05", small);
    /* and p-values that are too small are caught */
    double skew[50];
    for (int i = 0; i < 50; i++)
        skew[i] = pow(test_uniform(&s), 2);
    ck_assert_int_eq(hm_ks_uniform(skew, 50, &d, &lp), HM_OK);
    ck_assert_double_lt(lp, -2);
    double bad[2] = {0.5, 1.5};
    ck_assert_int_eq(hm_ks_uniform(bad, 2, &d, &lp), HM_EINVAL);
}
END_TEST

START_TEST(test_label_keys)
{
    unsigned char md[32];
    const char *msg = "hallmark/v1/self-check/public label/7";
    ck_assert_int_eq(
        EVP_Digest(msg, strlen(msg), md, NULL, EVP_sha256(), NULL), 1);
    hm_key *a, *b, *c;
    ck_assert_int_eq(hm_key_from_label(&a, "public label", 7), HM_OK);
    ck_assert_int_eq(hm_key_from_bytes(&b, md, 32), HM_OK);
    ck_assert_int_eq(hm_key_from_label(&c, "public label", 8), HM_OK);
    char fa[HM_FINGERPRINT_SIZE], fb[HM_FINGERPRINT_SIZE],
        fc[HM_FINGERPRINT_SIZE];
    ck_assert_int_eq(hm_key_fingerprint(a, fa, sizeof fa), HM_OK);
    ck_assert_int_eq(hm_key_fingerprint(b, fb, sizeof fb), HM_OK);
    ck_assert_int_eq(hm_key_fingerprint(c, fc, sizeof fc), HM_OK);
    ck_assert_str_eq(fa, fb);
    ck_assert_str_ne(fa, fc);
    ck_assert_int_eq(hm_key_from_label(NULL, "x", 1), HM_EINVAL);
    ck_assert_int_eq(hm_key_from_label(&c, NULL, 1), HM_EINVAL);
    hm_key_free(a);
    hm_key_free(b);
    hm_key_free(c);
}
END_TEST

/* The batch PRF equals hm_token_prf at every position, for every scheme,
 * across chunk boundaries and with the portable AES. */
START_TEST(test_sequence_prf)
{
    hm_key *k = test_key(61);
    static int32_t seq[1300];
    static uint64_t out[1300];
    uint64_t s = 4;
    random_tokens(seq, 1300, 70000, &s);
    const char *sp[] = {"gumbel", "gumbel:h=2", "gumbel:h=7", "kgw",
                        "kgw:seeding=selfhash", "tournament:h=16"};
    for (size_t i = 0; i < sizeof sp / sizeof *sp; i++) {
        hm_ctx *ctx = test_ctx(k, sp[i]);
        for (size_t start = 0; start < 600; start += 299) {
            ck_assert_int_eq(hm_sequence_prf(ctx, 0, seq, 1300, start, out),
                             HM_OK);
            for (size_t p = start; p < 1300; p++) {
                uint64_t x;
                ck_assert_int_eq(hm_token_prf(ctx, 0, seq, p, seq[p], &x),
                                 HM_OK);
                if (x != out[p - start])
                    ck_abort_msg("%s: position %zu differs", sp[i], p);
            }
        }
        hm_ctx_free(ctx);
    }
    /* the sum of scores without dedup equals hm_token_score's */
    const char *ss[] = {"gumbel", "kgw:gamma=0.3", "tournament:m=40",
                        "kgw:seeding=selfhash"};
    static int32_t big[9000];
    random_tokens(big, 9000, 5000, &s);
    for (size_t i = 0; i < 4; i++) {
        hm_ctx *ctx = test_ctx(k, ss[i]);
        for (size_t start = 0; start < 9000; start += 4321) {
            double sum = -1, ref = 0;
            ck_assert_int_eq(hm_sequence_score(ctx, 0, big, 9000, start,
                                               &sum),
                             HM_OK);
            for (size_t p = start; p < 9000; p++) {
                double sc;
                ck_assert_int_eq(hm_token_score(ctx, 0, big, p, big[p], &sc),
                                 HM_OK);
                ref += sc;
            }
            ck_assert_msg(fabs(sum - ref) <= 1e-9 * ref, "%s: %.17g vs %.17g",
                          ss[i], sum, ref);
        }
        double z = -1;
        ck_assert_int_eq(hm_sequence_score(ctx, 0, big, 9000, 9000, &z),
                         HM_OK);
        ck_assert_double_eq(z, 0);
        hm_ctx_free(ctx);
    }
    seq[5] = -1;
    hm_ctx *ctx = test_ctx(k, "gumbel");
    double sum;
    ck_assert_int_eq(hm_sequence_score(ctx, 0, seq, 10, 0, &sum), HM_ERANGE);
    ck_assert_int_eq(hm_sequence_score(ctx, 0, seq, 10, 0, NULL), HM_EINVAL);
    ck_assert_int_eq(hm_sequence_prf(ctx, 0, seq, 10, 0, out), HM_ERANGE);
    ck_assert_int_eq(hm_sequence_prf(ctx, 1, seq, 10, 0, out), HM_EINVAL);
    ck_assert_int_eq(hm_sequence_prf(ctx, 0, seq, 10, 11, out), HM_EINVAL);
    ck_assert_int_eq(hm_sequence_prf(ctx, 0, seq, 4, 4, NULL), HM_OK);
    hm_ctx_free(ctx);
    hm_key_free(k);
}
END_TEST

/* ------------------------------------------------ the gumbel logarithm */

/* What hm_k_gumbel_parts computes, by this file's scalar build of
 * gumbel_log.h. */
static void scalar_parts(const uint64_t *x, size_t w, size_t n,
                         uint64_t part[3])
{
    part[0] = part[1] = part[2] = 0;
    for (size_t i = 0; i < n; i++)
        hm_gumbel_parts_add(x[i * w], &part[0], &part[1], &part[2]);
}

/* The kernel as dispatched for this CPU, and its AVX2 loop where the CPU
 * has AVX2 (on AVX-512 CPUs the dispatch takes the AVX-512 clone). */
static void check_parts(const uint64_t *x, size_t w, size_t n)
{
    uint64_t a[3], b[3];
    hm_k_gumbel_parts(x, w, n, a);
    scalar_parts(x, w, n, b);
    ck_assert_msg(a[0] == b[0] && a[1] == b[1] && a[2] == b[2],
                  "w %zu n %zu: kernel and scalar differ", w, n);
    if (hm_k_gumbel_avx2_ok()) {
        hm_k_gumbel_force_avx2 = 1;
        hm_k_gumbel_parts(x, w, n, a);
        hm_k_gumbel_force_avx2 = 0;
        ck_assert_msg(a[0] == b[0] && a[1] == b[1] && a[2] == b[2],
                      "w %zu n %zu: AVX2 loop and scalar differ", w, n);
    }
}

/* hallmark's own logarithm (gumbel_log.h) against mpmath's values
 * (tests/vectors/gumbel-log-ref.txt, 40 digits, read as long doubles):
 * within its stated bound, 2^-53 s + 2^-68, and lowered below the exact
 * value; the library's kernel (on x86-64, the clone for this CPU) sums
 * what this file's scalar build of the same code computes. */
START_TEST(test_gumbel_log_ref)
{
#if LDBL_MANT_DIG < 64
    /* the reference values, read as long doubles, need more bits than
     * the scores they check */
    return;
#endif
    FILE *f = test_open_vectors("gumbel-log-ref.txt");
    char line[256];
    size_t n = 0, cap = 16384;
    uint64_t *x = malloc(cap * sizeof *x);
    long double *ref = malloc(cap * sizeof *ref);
    ck_assert_ptr_nonnull(x);
    ck_assert_ptr_nonnull(ref);
    while (fgets(line, sizeof line, f)) {
        if (line[0] == '#')
            continue;
        char *end;
        ck_assert_uint_lt(n, cap);
        x[n] = strtoull(line, &end, 16);
        ref[n] = strtold(end, &end);
        ck_assert_msg(*end == '\n', "gumbel-log-ref.txt: bad line %s", line);
        n++;
    }
    fclose(f);
    ck_assert_uint_ge(n, 4000);
    long double worst = 0;
    for (size_t i = 0; i < n; i++) {
        double s1 = hm_gumbel_score(x[i]);
        long double err = fabsl((long double)s1 - ref[i]);
        /* ref is within 2^-63 ref of the exact value */
        long double bound = 0x1p-53L * s1 + 0x1p-68L + 0x1p-63L * ref[i];
        ck_assert_msg(err <= bound, "x = %016llx: %a, exact %La",
                      (unsigned long long)x[i], s1, ref[i]);
        if (err / ref[i] > worst)
            worst = err / ref[i];
        double l = hm_gumbel_score_low(x[i]);
        ck_assert_msg((long double)l < ref[i] * (1 - 0x1p-62L),
                      "x = %016llx: lowered %a, exact %La",
                      (unsigned long long)x[i], l, ref[i]);
        ck_assert(l > 0);
        check_parts(x + i, 1, 1);
    }
    /* no better than it must be would suggest a wrong reference */
    ck_assert(worst > 0x1p-60L && worst <= 0x1p-52L);
    check_parts(x, 1, n);
    free(x);
    free(ref);
}
END_TEST

/* Over random PRF values, strided as in a tally's records: the kernel
 * sums what the scalar code computes, over every length up to 80 (the
 * vector loop and its remainders) and over long runs; and the scores
 * agree with libm's log to within an ulp or so (libm is no reference, but
 * a wrong table entry would show as a larger difference). */
START_TEST(test_gumbel_log_random)
{
    enum { N = 1 << 16, W = 3 };
    static uint64_t x[N * W];
    uint64_t st = 77;
    for (size_t i = 0; i < N * W; i++)
        x[i] = test_rand(&st);
    for (size_t w = 1; w <= W; w++) {
        for (size_t n = 0; n <= 80; n++)
            check_parts(x + n, w, n);
        check_parts(x, w, N);
        for (size_t i = 0; i < N; i++) {
            uint64_t v = x[i * w];
            double g = hm_gumbel_score(v);
            double m = -log(((double)(int64_t)(~v >> 12) + 0.5) * 0x1p-52);
            ck_assert_msg(fabs(g - m) <= 0x1p-51 * m,
                          "x = %016llx: %a, libm %a",
                          (unsigned long long)v, g, m);
        }
    }
}
END_TEST

/* The value x whose n = 2 (NOT x >> 12) + 1 is the odd number n, with
 * low bits (which n ignores) from r. */
static uint64_t x_of_n(uint64_t n, uint64_t r)
{
    return ~((n >> 1) << 12) ^ (r & 0xfff);
}

/* The kernels against the scalar code over a million random values and
 * the edges of every step: x = 0 and UINT64_MAX; n near 1 and 2^53; n
 * on either side of every power of two; every table index j (the top 8
 * bits of n's fraction) for every exponent from 8 up, with the rest of
 * the fraction 0, all ones and random, so that R takes its extremes.
 * Compared four values at a time (one vector of the AVX2 loop, so that
 * a wrong lane shows) and as one sum, at strides 1 to 3. */
START_TEST(test_gumbel_log_edges)
{
    enum { NR = 1 << 20, W = 3 };
    size_t cap = NR + 2 * 8192 + 4 * 54 + 3 * 45 * 256 + 8, n = 0;
    uint64_t *v = malloc(cap * sizeof *v), st = 1234;
    ck_assert_ptr_nonnull(v);
    if (!hm_k_gumbel_avx2_ok())
        printf("test_gumbel_log_edges: no AVX2 on this CPU, only the "
               "dispatched kernel checked\n");
    v[n++] = 0;
    v[n++] = UINT64_MAX;
    for (uint64_t q = 0; q < 8192; q++) {
        v[n++] = x_of_n(2 * q + 1, test_rand(&st));
        v[n++] = x_of_n((UINT64_C(1) << 53) - 1 - 2 * q, test_rand(&st));
    }
    for (unsigned k = 1; k <= 53; k++) {
        uint64_t p = UINT64_C(1) << k;
        v[n++] = x_of_n(p - 1, test_rand(&st));
        v[n++] = x_of_n(p - 3, test_rand(&st));
        if (k < 53) { /* n stays below 2^53 */
            v[n++] = x_of_n(p + 1, test_rand(&st));
            v[n++] = x_of_n(p + 3, test_rand(&st));
        }
    }
    for (unsigned e = 8; e <= 52; e++)
        for (uint64_t j = 0; j < 256; j++) {
            uint64_t top = (UINT64_C(1) << e) | (j << (e - 8));
            uint64_t rest = (UINT64_C(1) << (e - 8)) - 1;
            v[n++] = x_of_n(top | 1, test_rand(&st));
            v[n++] = x_of_n(top | rest | 1, test_rand(&st)); /* (odd) */
            v[n++] = x_of_n(top | (test_rand(&st) & rest) | 1,
                            test_rand(&st));
        }
    while (n < cap - 8)
        v[n++] = test_rand(&st);
    /* every value lands in the kernels' vector loops: four at a time from
     * offset 0, and again shifted by two */
    for (size_t off = 0; off <= 2; off += 2)
        for (size_t i = off; i + 4 <= n; i += 4)
            check_parts(v + i, 1, 4);
    for (size_t w = 1; w <= W; w++)
        check_parts(v, w, n / w);
    free(v);
}
END_TEST

/* The kernels read nothing past the last value they sum: records that
 * end where a page the process may not read begins, at strides 1 to 3
 * (the tally passes x = records + 1 at stride 2, so that x[2 n - 1] is
 * not its own) and every count up to 40, through the dispatched kernel
 * and the AVX2 loop (check_parts). */
START_TEST(test_gumbel_parts_bounds)
{
    long page = sysconf(_SC_PAGESIZE);
    ck_assert_int_gt(page, 0);
    unsigned char *m = mmap(NULL, 2 * (size_t)page, PROT_READ | PROT_WRITE,
                            MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    ck_assert_ptr_ne(m, MAP_FAILED);
    ck_assert_int_eq(mprotect(m + page, (size_t)page, PROT_NONE), 0);
    uint64_t *end = (uint64_t *)(m + page), st = 99;
    for (uint64_t *p = (uint64_t *)m; p < end; p++)
        *p = test_rand(&st);
    for (size_t w = 1; w <= 3; w++)
        for (size_t n = 1; n <= 40; n++)
            check_parts(end - ((n - 1) * w + 1), w, n);
    munmap(m, 2 * (size_t)page);
}
END_TEST

/* ------------------------------------------------------ golden files */

/* The bytes of every saved file and every result, over inputs large
 * enough to fill big tables (repeats within and across documents, prompt
 * windows, padding, filters, several keys and tenants, merges, loads),
 * must stay what they were.  The kgw digests without a filter were made
 * by the tally code of d8d5c72 (one open-addressing table per channel,
 * tuples inserted in arrival order); the others were remade when the
 * gumbel scores moved from libm's log to gumbel_log.h, and the filtered
 * inputs gained served documents, without which the filtered gumbel
 * channel scored nothing.  The gumbel scores no longer depend on the
 * machine's libm. */
static void digest_file(EVP_MD_CTX *md, const char *path)
{
    FILE *f = fopen(path, "rb");
    ck_assert_ptr_nonnull(f);
    unsigned char buf[1 << 16];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0)
        EVP_DigestUpdate(md, buf, n);
    fclose(f);
}

static void digest_results(EVP_MD_CTX *md, const hm_tally *t)
{
    for (size_t k = 0; k < hm_tally_keys(t); k++)
        for (unsigned c = 0; c < hm_tally_channels(t); c++) {
            hm_result r;
            ck_assert_int_eq(hm_tally_result(t, k, c, &r), HM_OK);
            EVP_DigestUpdate(md, &r, sizeof r);
        }
}

static const struct golden {
    const char *spec;
    unsigned flags;
    int filter;
    const char *sha256;
} goldens[] = {
    {"gumbel", 0, 0,
     "48d800f0e1b859a9c790e0f75faa837d23aaa3f63eb5e46755549f3bf7583828"},
    {"kgw", 0, 0,
     "fb742729633dc0d88467f8e921f602d9c430ef032028000389ad472ad008e984"},
    {"kgw:h=3", HM_TALLY_SKIP_PADDED, 0,
     "cba74152b8c1a2b39ca2195c31bd6d844229f5d2f40c595956d11e96eb89657d"},
    {"kgw:seeding=selfhash", 0, 0,
     "4f0e65d21d81249ee36595f421ec1abb61eca0795c85555e922324d3fd576747"},
    {"tournament", 0, 1,
     "c26d83aa2e2e637885f088665b4ea592c52fcc10733245b560a31c36a5a627d8"},
    {"kgw:h=1+gumbel:h=4", HM_TALLY_SKIP_PADDED, 1,
     "d098249da0b58b5de8cdb71b9df34aff07ac9d66653c715d5994e76adc7c3baf"},
};

START_TEST(test_golden)
{
    const struct golden *g = &goldens[_i];
    hm_key *k[3] = {test_key(61), test_key(62), test_key(63)};
    static const char *const tenants[3] = {NULL, "acme", "bob"};
    hm_ctx *ctxs[3];
    char msg[HM_ERRMSG_SIZE] = "";
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(
            hm_ctx_new(&ctxs[i], k[i], g->spec, tenants[i], msg, sizeof msg),
            HM_OK);
    const hm_ctx *const *cc = (const hm_ctx *const *)ctxs;
    /* one tally with everything (in a hinted and an unhinted variant),
     * and two halves merged */
    hm_tally *all, *hinted, *half[2], *merged;
    ck_assert_int_eq(hm_tally_new(&all, cc, 3, g->flags, msg, sizeof msg),
                     HM_OK);
    ck_assert_int_eq(hm_tally_new(&hinted, cc, 3, g->flags, msg, sizeof msg),
                     HM_OK);
    ck_assert_int_eq(hm_tally_reserve(hinted, 150000), HM_OK);
    for (int i = 0; i < 2; i++)
        ck_assert_int_eq(
            hm_tally_new(&half[i], cc, 3, g->flags, msg, sizeof msg), HM_OK);
    ck_assert_int_eq(hm_tally_new(&merged, cc, 3, g->flags, msg, sizeof msg),
                     HM_OK);
    uint64_t s = 900 + (uint64_t)_i;
    enum { DOCS = 120 };
    static int32_t tok[DOCS][2000], prompt[DOCS][64];
    size_t ns[DOCS], nps[DOCS];
    hm_tally *tf[5] = {all, hinted, half[0], half[1], merged};
    if (g->filter)
        for (int d = 0; d < 40; d++) {
            random_tokens(tok[0], 1000, 300, &s);
            for (int i = 0; i < 5; i++)
                ck_assert_int_eq(
                    hm_tally_filter_add(tf[i], NULL, 0, tok[0], 1000), HM_OK);
        }
    for (int d = 0; d < DOCS; d++) {
        size_t n = ns[d] = 1 + test_rand(&s) % 2000;
        size_t np = nps[d] = test_rand(&s) % 64;
        /* small vocabularies in some documents: many repeats */
        int32_t vocab = d % 3 == 0 ? 300 : 200000;
        random_tokens(prompt[d], np, vocab, &s);
        random_tokens(tok[d], n, vocab, &s);
        if (d % 10 == 9) /* a document seen before */
            memcpy(tok[d] + n / 2, tok[d], n / 2 * sizeof **tok);
    }
    /* the provider served every fourth document (so that a channel of
     * wide windows scores some tuples), and windows of its own */
    for (int d = 0; g->filter && d < DOCS; d += 4)
        for (int i = 0; i < 5; i++)
            ck_assert_int_eq(hm_tally_filter_add(tf[i], prompt[d], nps[d],
                                                 tok[d], ns[d]),
                             HM_OK);
    for (int d = 0; d < DOCS; d++) {
        size_t n = ns[d], np = nps[d];
        ck_assert_int_eq(hm_tally_add(all, prompt[d], np, tok[d], n), HM_OK);
        ck_assert_int_eq(hm_tally_add(hinted, prompt[d], np, tok[d], n),
                         HM_OK);
        ck_assert_int_eq(hm_tally_add(half[d % 2], prompt[d], np, tok[d], n),
                         HM_OK);
        if (d == 60) { /* results in the middle change nothing */
            hm_result r;
            ck_assert_int_eq(hm_tally_result(all, 1, 0, &r), HM_OK);
        }
    }
    ck_assert_int_eq(hm_tally_merge(merged, half[1], msg, sizeof msg), HM_OK);
    ck_assert_int_eq(hm_tally_merge(merged, half[0], msg, sizeof msg), HM_OK);
    char dir[] = "/tmp/hm-golden-XXXXXX", path[64];
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/t", dir);
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    ck_assert_ptr_nonnull(md);
    ck_assert_int_eq(EVP_DigestInit_ex(md, EVP_sha256(), NULL), 1);
    hm_tally *ts[4] = {all, hinted, half[0], merged};
    for (int i = 0; i < 4; i++) {
        digest_results(md, ts[i]);
        save(ts[i], path);
        digest_file(md, path);
    }
    /* a loaded tally merged into a live one */
    hm_tally *l;
    ck_assert_msg(hm_tally_load(&l, path, msg, sizeof msg) == HM_OK, "%s", msg);
    digest_results(md, l);
    ck_assert_int_eq(hm_tally_merge(half[1], l, msg, sizeof msg), HM_OK);
    digest_results(md, half[1]);
    save(half[1], path);
    digest_file(md, path);
    unsigned char d[32];
    char hex[65];
    ck_assert_int_eq(EVP_DigestFinal_ex(md, d, NULL), 1);
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", d[i]);
    ck_assert_msg(strcmp(hex, g->sha256) == 0, "%s: %s", g->spec, hex);
    EVP_MD_CTX_free(md);
    hm_tally_free(l);
    unlink(path);
    rmdir(dir);
    for (int i = 0; i < 2; i++)
        hm_tally_free(half[i]);
    hm_tally_free(all);
    hm_tally_free(hinted);
    hm_tally_free(merged);
    for (int i = 0; i < 3; i++) {
        hm_ctx_free(ctxs[i]);
        hm_key_free(k[i]);
    }
}
END_TEST

/* The functions taking a const tally may run at once on one tally that
 * no thread changes (hm_tally_new(3), Threads), even while records wait
 * to be sorted: the first settles them while the others wait.  Threads
 * released together by a barrier ask one unsettled tally for results,
 * save it and merge it into tallies of their own, and ask a loaded tally
 * (whose sums are made by its first reader) for results; each must see
 * what one thread alone sees.  Without the lock, threads sort the same
 * partitions in the same scratch memory at once, and the results, files
 * or merges come out wrong (or a sanitizer objects). */
enum { READERS = 4, READ_KEYS = 3 };

typedef struct reader_arg {
    pthread_barrier_t *go;
    const hm_tally *t;  /* unsettled, after adds */
    const hm_tally *l;  /* loaded, sums not yet made */
    hm_tally *dst;      /* empty: t is merged into it */
    const char *path;   /* where to save t */
    int order;          /* which call comes first */
    hm_result r[READ_KEYS][HM_MAX_CHANNELS], lr[READ_KEYS][HM_MAX_CHANNELS];
    int rc;
} reader_arg;

static int read_all(const hm_tally *t, hm_result r[][HM_MAX_CHANNELS])
{
    int rc = HM_OK;
    for (size_t k = 0; k < hm_tally_keys(t) && rc == HM_OK; k++)
        for (unsigned c = 0; c < hm_tally_channels(t) && rc == HM_OK; c++)
            rc = hm_tally_result(t, k, c, &r[k][c]);
    return rc;
}

static void *reader(void *p)
{
    reader_arg *a = p;
    char msg[HM_ERRMSG_SIZE];
    pthread_barrier_wait(a->go);
    a->rc = HM_OK;
    for (int step = 0; step < 4 && a->rc == HM_OK; step++)
        switch ((a->order + step) % 4) {
        case 0:
            a->rc = read_all(a->t, a->r);
            break;
        case 1:
            a->rc = hm_tally_save(a->t, a->path, msg, sizeof msg);
            break;
        case 2:
            a->rc = hm_tally_merge(a->dst, a->t, msg, sizeof msg);
            break;
        default:
            a->rc = read_all(a->l, a->lr);
        }
    return NULL;
}

static int same_file(const char *p, const char *q)
{
    FILE *f = fopen(p, "rb"), *g = fopen(q, "rb");
    int same = f != NULL && g != NULL;
    while (same) {
        int a = getc(f), b = getc(g);
        same = a == b;
        if (a == EOF)
            break;
    }
    if (f != NULL)
        fclose(f);
    if (g != NULL)
        fclose(g);
    return same;
}

START_TEST(test_concurrent_reads)
{
    static const char *const read_specs[] = {"kgw:h=1+gumbel:h=4",
                                             "kgw:seeding=selfhash+gumbel"};
    const char *spec = read_specs[_i];
    hm_key *k[READ_KEYS];
    hm_ctx *ctxs[READ_KEYS];
    for (int i = 0; i < READ_KEYS; i++) {
        k[i] = test_key((unsigned char)(71 + i));
        ctxs[i] = test_ctx(k[i], spec);
    }
    const hm_ctx *const *cc = (const hm_ctx *const *)ctxs;
    char msg[HM_ERRMSG_SIZE] = "";
    /* t is read by the threads; u, fed the same, by this one alone */
    hm_tally *t, *u;
    ck_assert_int_eq(hm_tally_new(&t, cc, READ_KEYS, 0, msg, sizeof msg),
                     HM_OK);
    ck_assert_int_eq(hm_tally_new(&u, cc, READ_KEYS, 0, msg, sizeof msg),
                     HM_OK);
    char dir[] = "/tmp/hm-readers-XXXXXX", ref[64], path[READERS][64];
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(ref, sizeof ref, "%s/ref", dir);
    for (int i = 0; i < READERS; i++)
        snprintf(path[i], sizeof path[i], "%s/t%d", dir, i);
    pthread_barrier_t go;
    ck_assert_int_eq(pthread_barrier_init(&go, NULL, READERS), 0);
    uint64_t s = 77 + (uint64_t)_i;
    static int32_t tok[8000];
    /* rounds of adds, each leaving records to settle, many of them
     * repeats (a small vocabulary) */
    for (int round = 0; round < 6; round++) {
        for (int d = 0; d < 3; d++) {
            size_t n = 2000 + test_rand(&s) % 6000;
            random_tokens(tok, n, round % 2 ? 1000 : 100000, &s);
            ck_assert_int_eq(hm_tally_add(t, NULL, 0, tok, n), HM_OK);
            ck_assert_int_eq(hm_tally_add(u, NULL, 0, tok, n), HM_OK);
        }
        hm_result want[READ_KEYS][HM_MAX_CHANNELS];
        ck_assert_int_eq(read_all(u, want), HM_OK);
        save(u, ref);
        hm_tally *l;
        ck_assert_msg(hm_tally_load(&l, ref, msg, sizeof msg) == HM_OK, "%s",
                      msg);
        pthread_t th[READERS];
        reader_arg a[READERS];
        for (int i = 0; i < READERS; i++) {
            memset(&a[i], 0, sizeof a[i]);
            a[i].go = &go;
            a[i].t = t;
            a[i].l = l;
            a[i].path = path[i];
            a[i].order = (i + round) % 4;
            ck_assert_int_eq(
                hm_tally_new(&a[i].dst, cc, READ_KEYS, 0, msg, sizeof msg),
                HM_OK);
            ck_assert_int_eq(pthread_create(&th[i], NULL, reader, &a[i]), 0);
        }
        for (int i = 0; i < READERS; i++)
            ck_assert_int_eq(pthread_join(th[i], NULL), 0);
        for (int i = 0; i < READERS; i++) {
            ck_assert_int_eq(a[i].rc, HM_OK);
            hm_result got[READ_KEYS][HM_MAX_CHANNELS];
            ck_assert_int_eq(read_all(a[i].dst, got), HM_OK);
            for (size_t j = 0; j < READ_KEYS; j++)
                for (unsigned c = 0; c < hm_tally_channels(t); c++) {
                    ck_assert_mem_eq(&a[i].r[j][c], &want[j][c],
                                     sizeof want[j][c]);
                    ck_assert_mem_eq(&a[i].lr[j][c], &want[j][c],
                                     sizeof want[j][c]);
                    ck_assert_mem_eq(&got[j][c], &want[j][c],
                                     sizeof want[j][c]);
                }
            ck_assert_msg(same_file(path[i], ref), "round %d: %s differs",
                          round, path[i]);
            hm_tally_free(a[i].dst);
            unlink(path[i]);
        }
        hm_tally_free(l);
    }
    pthread_barrier_destroy(&go);
    unlink(ref);
    rmdir(dir);
    hm_tally_free(t);
    hm_tally_free(u);
    for (int i = 0; i < READ_KEYS; i++) {
        hm_ctx_free(ctxs[i]);
        hm_key_free(k[i]);
    }
}
END_TEST

/* Text whose tuple hashes share their top 16 bits, which anyone can make
 * since the hash has no key, lands in one digit of the counting sort that
 * orders a run for its file (and would land in one partition of a large
 * tally; this one has a single partition anyway).  The results are
 * still the naive ones, with one and with two keys, the same text again
 * adds only repeats, and the file (whose insertion sort gives up on such
 * hashes, so that the merge sort orders it) loads with the same results
 * and saves back to the same bytes. */
START_TEST(test_crafted_hashes)
{
    enum { N = 1500 };
    hm_key *k[2] = {test_key(13), test_key(14)};
    hm_ctx *ctxs[2] = {test_ctx(k[0], "kgw:h=1"), test_ctx(k[1], "kgw:h=1")};
    const size_t nk = (size_t)_i + 1;
    hm_tally *t;
    char msg[HM_ERRMSG_SIZE] = "";
    ck_assert_int_eq(hm_tally_new(&t, (const hm_ctx *const *)ctxs, nk, 0,
                                  msg, sizeof msg),
                     HM_OK);
    static int32_t tok[N];
    uint64_t s = 4242;
    tok[0] = 7;
    for (size_t i = 1; i < N; i++) {
        uint32_t b = (uint32_t)test_rand(&s) & 0x3fffffff, w[2];
        for (;; b = (b + 1) & 0x3fffffff) {
            w[0] = (uint32_t)tok[i - 1]; /* little-endian, as the tally */
            w[1] = b;
            if (XXH3_64bits(w, sizeof w) >> 48 == 0x5eed)
                break;
        }
        tok[i] = (int32_t)b;
    }
    static naive nv[2];
    memset(nv, 0, sizeof nv);
    for (int rep = 0; rep < 2; rep++) {
        ck_assert_int_eq(hm_tally_add(t, NULL, 0, tok, N), HM_OK);
        for (size_t j = 0; j < nk; j++)
            naive_add(&nv[j], ctxs[j], 0, tok, 0, tok, N);
    }
    for (size_t j = 0; j < nk; j++) {
        hm_result r;
        ck_assert_int_eq(hm_tally_result(t, j, 0, &r), HM_OK);
        ck_assert_uint_eq(r.scored, nv[j].n);
        ck_assert_uint_ge(r.scored, N - 10); /* chains rarely repeat */
        ck_assert_uint_eq(r.dropped_repeat, 2 * N - nv[j].n);
        ck_assert_double_eq_tol(r.score, nv[j].score, 1e-9);
    }
    char dir[] = "/tmp/hm-crafted-XXXXXX", path[64], again[64];
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/t", dir);
    snprintf(again, sizeof again, "%s/u", dir);
    save(t, path);
    hm_tally *l;
    ck_assert_msg(hm_tally_load(&l, path, msg, sizeof msg) == HM_OK, "%s", msg);
    for (size_t j = 0; j < nk; j++) {
        hm_result r, rl;
        ck_assert_int_eq(hm_tally_result(t, j, 0, &r), HM_OK);
        ck_assert_int_eq(hm_tally_result(l, j, 0, &rl), HM_OK);
        ck_assert_mem_eq(&r, &rl, sizeof r);
    }
    save(l, again);
    ck_assert(same_file(path, again));
    hm_tally_free(l);
    unlink(path);
    unlink(again);
    rmdir(dir);
    hm_tally_free(t);
    for (int i = 0; i < 2; i++) {
        hm_ctx_free(ctxs[i]);
        hm_key_free(k[i]);
    }
}
END_TEST

static Suite *detect_suite(void)
{
    Suite *s = suite_create("detect");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 120);
    tcase_add_loop_test(tc, test_matches_naive, 0,
                        (int)(sizeof specs / sizeof *specs));
    tcase_add_test(tc, test_rules);
    tcase_add_test(tc, test_merge_algebra);
    tcase_add_loop_test(tc, test_reserve, 0,
                        (int)(sizeof specs / sizeof specs[0]));
    tcase_add_loop_test(tc, test_reserve_arena, 0,
                        (int)(sizeof specs / sizeof specs[0]));
    tcase_add_test(tc, test_bad_files);
    tcase_add_test(tc, test_filter);
    tcase_add_test(tc, test_calibration);
    tcase_add_loop_test(tc, test_power_and_tenants, 0,
                        (int)(sizeof specs / sizeof *specs));
    tcase_add_test(tc, test_adjust);
    tcase_add_test(tc, test_ks);
    tcase_add_test(tc, test_label_keys);
    tcase_add_test(tc, test_sequence_prf);
    tcase_add_loop_test(tc, test_crafted_hashes, 0, 2);
    tcase_add_test(tc, test_gumbel_log_ref);
    tcase_add_test(tc, test_gumbel_log_random);
    tcase_add_test(tc, test_gumbel_log_edges);
    tcase_add_test(tc, test_gumbel_parts_bounds);
    tcase_add_loop_test(tc, test_golden, 0,
                        (int)(sizeof goldens / sizeof goldens[0]));
    suite_add_tcase(s, tc);
    /* on its own, so that CK_RUN_CASE=threads runs it (under TSan) */
    TCase *th = tcase_create("threads");
    tcase_set_timeout(th, 120);
    tcase_add_loop_test(th, test_concurrent_reads, 0, 2);
    suite_add_tcase(s, th);
    return s;
}

int main(void)
{
    return test_run(detect_suite());
}
