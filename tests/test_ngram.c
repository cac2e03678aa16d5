/*
 * test_ngram.c - the evaluation's Kneser-Ney n-gram model (eval/ngram.h):
 * hand-derived probabilities, an independent brute-force reference, rows
 * that sum to one, ng_logits against ng_prob, save/load, damaged files,
 * and perplexity against a Markov chain's entropy rate.
 */
#include <check.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "ngram.h"

static uint64_t rnd(uint64_t *s)
{
    uint64_t z = (*s += UINT64_C(0x9E3779B97F4A7C15));
    z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
    return z ^ (z >> 31);
}

static double unif(uint64_t *s) { return (double)(rnd(s) >> 11) * 0x1p-53; }

static ng_model *train_or_fail(int order, int32_t v, const int32_t *const *docs,
                               const size_t *lens, size_t n)
{
    ng_model *m = NULL;
    char err[NG_ERRMSG_SIZE] = "";
    ck_assert_msg(ng_train(&m, order, v, docs, lens, n, err, sizeof err) == 0,
                  "ng_train: %s", err);
    return m;
}

/* --------------------------------------------------- hand-derived values
 *
 * Corpus: V = 4 (id 3 never occurs), B = NG_BOS = 4, three documents
 *   d1 = 0 1 2,   d2 = 0 1 0 1,   d3 = 1 2.
 * Discount rule: Y = n1/(n1+2n2), Di = i - (i+1) Y n_{i+1}/n_i, replaced
 * by i/2 when undefined or outside (0, i).
 *
 * Order-1 model.  Raw counts c(0) = 3, c(1) = 4, c(2) = 2, total 9;
 *   n1..n4 = 0,1,1,1: n1 = 0, so D = 1/2, 1, 3/2 (all fall back).
 *   gamma = (D2 [c=2] + 2 D3+ [c=3,4]) / 9 = (1 + 3)/9 = 4/9.
 *   P(0) = (3 - 3/2)/9 + 4/9 * 1/4 = 1/6 + 1/9 = 5/18
 *   P(1) = (4 - 3/2)/9 + 1/9 = 7/18,  P(2) = (2 - 1)/9 + 1/9 = 2/9,
 *   P(3) = 1/9.                        (sum 5+7+4+2 = 18/18)
 *
 * Order-2 model.  Padded bigrams: (B0)(01)(12) (B0)(01)(10)(01) (B1)(12):
 *   raw c(01) = 3, c(10) = 1, c(12) = 2, c(B0) = 2, c(B1) = 1;
 *   n1..n4 = 2,2,1,0: Y = 1/3, D1 = 1 - 2/3 * 2/2 = 1/3,
 *   D2 = 2 - 3 * 1/3 * 1/2 = 3/2, D3+ = 3 - 0 = 3 (not < 3) -> 3/2.
 *   Unigram level (continuation counts): left neighbours of 0: {B,1},
 *   of 1: {0,B}, of 2: {1} -> N(0) = 2, N(1) = 2, N(2) = 1, total 5;
 *   n1..n4 = 1,2,0,0: Y = 1/5, D1 = 1 - 2/5 * 2 = 1/5,
 *   D2 = 2 - 0 = 2 (not < 2) -> 1, D3+ (n3 = 0) -> 3/2.
 *   gamma1 = (2 D2 + D1)/5 = 11/25, so with 1/V = 1/4:
 *   P1(0) = (2-1)/5 + 11/100 = 31/100 = P1(1),
 *   P1(2) = (1 - 1/5)/5 + 11/100 = 27/100,  P1(3) = 11/100.
 *   History B (ctx []): {0:2, 1:1}, gamma = (D2 + D1)/3 = 11/18:
 *   P(0|B) = (2 - 3/2)/3 + 11/18 * 31/100 = 1/6 + 341/1800 = 641/1800,
 *   P(1|B) = (1 - 1/3)/3 + 341/1800 = 247/600, P(2|B) = 11/18 * 27/100
 *   = 33/200, P(3|B) = 121/1800.
 *   History 0 ({1:3}, gamma = D3+/3 = 1/2): P(1|0) = 3/2/3 + 31/200
 *   = 131/200, P(0|0) = 31/200, P(2|0) = 27/200, P(3|0) = 11/200.
 *   History 1 ({0:1, 2:2}, gamma 11/18): P(2|1) = 1/6 + 11/18 * 27/100
 *   = 199/600, P(0|1) = (1 - 1/3)/3 + 341/1800 = 247/600.
 *   History 2 or 3 (never a history): the unigram level, P1.
 *
 * Order-3 model.  Padded trigrams: (BB0)(B01)(012) (BB0)(B01)(010)(101)
 *   (BB1)(B12): raw c(BB0) = 2, c(B01) = 2, the other five 1;
 *   n1..n4 = 5,2,0,0: Y = 5/9, D1 = 1 - 2 * 5/9 * 2/5 = 5/9,
 *   D2 = 2 - 0 -> 1, D3+ -> 3/2.
 *   Bigram level, continuation counts (distinct trigrams ending in it):
 *   B0: {BB0} 1, 01: {B01, 101} 2, 12: {012, B12} 2, 10: {010} 1,
 *   B1: {BB1} 1;  n1..n4 = 3,2,0,0: Y = 3/7, D1 = 1 - 2 * 3/7 * 2/3 = 3/7,
 *   D2 -> 1, D3+ -> 3/2.
 *   Unigram level: the same five bigrams, so P1 as for order 2.
 *   P2(.|B): {0:1, 1:1}, gamma 2 D1/2 = 3/7: P2(0|B) = (4/7)/2 +
 *   3/7 * 31/100 = 293/700 = P2(1|B), P2(2|B) = 81/700, P2(3|B) = 33/700.
 *   P2(.|0): {1:2}, gamma D2/2 = 1/2: P2(1|0) = 1/2 + 31/200 = 131/200,
 *   P2(0|0) = 31/200, P2(2|0) = 27/200, P2(3|0) = 11/200.
 *   P2(.|1): {0:1, 2:2}, gamma (D1 + D2)/3 = 10/21: P2(0|1) = (4/7)/3 +
 *   10/21 * 31/100 = 71/210, P2(1|1) = 31/210, P2(2|1) = 1/3 + 10/21 *
 *   27/100 = 97/210, P2(3|1) = 11/210.
 *   ctx [] = BB: {0:2, 1:1}, gamma (D2 + D1)/3 = 14/27:
 *     P(0) = 1/3 + 14/27 * 293/700 = 743/1350, P(1) = (4/9)/3 + 293/1350
 *     = 493/1350, P(2) = 14/27 * 81/700 = 3/50, P(3) = 11/450.
 *   ctx [0] = B0: {1:2}, gamma 1/2: P(1) = 1/2 + 1/2 * 131/200 = 331/400,
 *     P(0) = 31/400, P(2) = 27/400, P(3) = 11/400.
 *   ctx [1] = B1: {2:1}, gamma 5/9: P(2) = 4/9 + 5/9 * 97/210 = 265/378,
 *     P(0) = 5/9 * 71/210 = 71/378, P(1) = 31/378, P(3) = 11/378.
 *   ctx [0 1]: {0:1, 2:1}, gamma 5/9: P(0) = (4/9)/2 + 5/9 * 71/210 =
 *     155/378, P(2) = 2/9 + 5/9 * 97/210 = 181/378, P(1) = 31/378,
 *     P(3) = 11/378.
 *   ctx [1 0]: {1:1}, gamma 5/9: P(1) = 4/9 + 5/9 * 131/200 = 97/120,
 *     P(0) = 31/360, P(2) = 3/40, P(3) = 11/360.
 *   ctx [2 1] and [1 1]: unseen histories, so P2(.|1).
 *   ctx [3]: B3 and 3 unseen, so P1.
 */
static const int32_t hd1[] = {0, 1, 2}, hd2[] = {0, 1, 0, 1}, hd3[] = {1, 2};
static const int32_t *const hdocs[] = {hd1, hd2, hd3};
static const size_t hlens[] = {3, 4, 2};

struct hand_case {
    int order;
    int32_t ctx[2];
    size_t h;
    double p[4];
};

static const struct hand_case hand[] = {
    {1, {0}, 0, {5. / 18, 7. / 18, 2. / 9, 1. / 9}},
    {1, {0, 1}, 2, {5. / 18, 7. / 18, 2. / 9, 1. / 9}},
    {2, {0}, 0, {641. / 1800, 247. / 600, 33. / 200, 121. / 1800}},
    {2, {0}, 1, {31. / 200, 131. / 200, 27. / 200, 11. / 200}},
    {2, {1}, 1, {247. / 600, 341. / 1800, 199. / 600, 121. / 1800}},
    {2, {2}, 1, {31. / 100, 31. / 100, 27. / 100, 11. / 100}},
    {2, {1, 0}, 2, {31. / 200, 131. / 200, 27. / 200, 11. / 200}},
    {3, {0}, 0, {743. / 1350, 493. / 1350, 3. / 50, 11. / 450}},
    {3, {0}, 1, {31. / 400, 331. / 400, 27. / 400, 11. / 400}},
    {3, {1}, 1, {71. / 378, 31. / 378, 265. / 378, 11. / 378}},
    {3, {0, 1}, 2, {155. / 378, 31. / 378, 181. / 378, 11. / 378}},
    {3, {1, 0}, 2, {31. / 360, 97. / 120, 3. / 40, 11. / 360}},
    {3, {2, 1}, 2, {71. / 210, 31. / 210, 97. / 210, 11. / 210}},
    {3, {1, 1}, 2, {71. / 210, 31. / 210, 97. / 210, 11. / 210}},
    {3, {3}, 1, {31. / 100, 31. / 100, 27. / 100, 11. / 100}},
};

START_TEST(test_hand_values)
{
    ng_model *m[4] = {NULL};
    for (int k = 1; k <= 3; k++)
        m[k] = train_or_fail(k, 4, hdocs, hlens, 3);
    for (size_t i = 0; i < sizeof hand / sizeof hand[0]; i++) {
        const struct hand_case *c = &hand[i];
        float row[4];
        ng_logits(m[c->order], c->ctx, c->h, row);
        for (int32_t w = 0; w < 4; w++) {
            double p = ng_prob(m[c->order], c->ctx, c->h, w);
            ck_assert_msg(fabs(p - c->p[w]) <= 1e-15,
                          "order %d case %zu: P(%d) = %.17g, want %.17g",
                          c->order, i, (int)w, p, c->p[w]);
            ck_assert_msg(fabs(row[w] - log(c->p[w])) <= 4 * FLT_EPSILON,
                          "order %d case %zu: row[%d] = %.9g, want %.9g",
                          c->order, i, (int)w, (double)row[w], log(c->p[w]));
        }
    }
    /* The discounts derived above, falling back or not. */
    static const double d[4][4][4] = {
        [1] = {[1] = {0, .5, 1, 1.5}},
        [2] = {[1] = {0, 1. / 5, 1, 1.5}, [2] = {0, 1. / 3, 1.5, 1.5}},
        [3] = {[1] = {0, 1. / 5, 1, 1.5}, [2] = {0, 3. / 7, 1, 1.5},
               [3] = {0, 5. / 9, 1, 1.5}}};
    for (int o = 1; o <= 3; o++)
        for (int k = 1; k <= o; k++)
            for (int c = 1; c <= 3; c++)
                ck_assert_msg(fabs(ng_discount(m[o], k, c) - d[o][k][c]) <
                                  1e-15,
                              "order %d model, D_%d(%d) = %g", o, k, c,
                              ng_discount(m[o], k, c));
    ck_assert_uint_eq(ng_count(m[3], 3), 7);
    ck_assert_uint_eq(ng_count(m[3], 2), 5);
    ck_assert_uint_eq(ng_count(m[3], 1), 3);
    ck_assert(ng_prob(m[3], NULL, 0, 4) == 0);
    ck_assert(ng_prob(m[3], NULL, 0, -1) == 0);
    for (int k = 1; k <= 3; k++)
        ng_free(m[k]);
}
END_TEST

/* ------------------------------------------------- brute-force reference
 *
 * The model computed from its definition, straight from the padded token
 * stream: raw counts by scanning every position, continuation counts by
 * collecting the distinct left neighbours, no hashing, no projection of
 * the order above.  Small corpora only (quadratic). */
struct ref {
    int order;
    int32_t v;
    int32_t *tok;   /* documents, each preceded by order-1 NG_BOS */
    size_t n;
    double d[NG_MAX_ORDER + 1][4];
};

/* Whether position i of tok predicts a real token (not padding). */
static int ref_real(const struct ref *r, size_t i) { return r->tok[i] != r->v; }

/* c_k(g) for the k-gram g: raw at the top order, else distinct left
 * neighbours. */
static unsigned ref_count(const struct ref *r, int k, const int32_t *g)
{
    int32_t seen[4096];
    unsigned c = 0, ns = 0;
    for (size_t i = (size_t)k - 1; i < r->n; i++) {
        if (!ref_real(r, i) ||
            memcmp(r->tok + i + 1 - (size_t)k, g, (size_t)k * sizeof *g) != 0)
            continue;
        if (k == r->order) {
            c++;
            continue;
        }
        int32_t left = r->tok[i - (size_t)k];
        unsigned j = 0;
        while (j < ns && seen[j] != left)
            j++;
        if (j == ns) {
            ck_assert_uint_lt(ns, 4096);
            seen[ns++] = left;
        }
    }
    return k == r->order ? c : ns;
}

static void ref_discounts(struct ref *r)
{
    for (int k = 1; k <= r->order; k++) {
        double nc[5] = {0};
        /* Every distinct k-gram once: at its first occurrence. */
        for (size_t i = (size_t)r->order - 1; i < r->n; i++) {
            if (!ref_real(r, i))
                continue;
            const int32_t *g = r->tok + i + 1 - (size_t)k;
            int first = 1;
            for (size_t j = (size_t)r->order - 1; j < i && first; j++)
                first = !ref_real(r, j) ||
                        memcmp(r->tok + j + 1 - (size_t)k, g,
                               (size_t)k * sizeof *g) != 0;
            if (first) {
                unsigned c = ref_count(r, k, g);
                if (c <= 4)
                    nc[c]++;
            }
        }
        double y = nc[1] / (nc[1] + 2 * nc[2]);
        for (int i = 1; i <= 3; i++) {
            double e = nc[1] > 0 && nc[i] > 0
                           ? i - (i + 1) * y * nc[i + 1] / nc[i]
                           : -1;
            r->d[k][i] = e > 0 && e < i ? e : i / 2.0;
        }
    }
}

static double ref_prob(const struct ref *r, const int32_t *hist, int32_t w)
{
    /* hist: order-1 ids, padded. */
    double p = 1.0 / r->v;
    int32_t g[NG_MAX_ORDER];
    for (int k = 1; k <= r->order; k++) {
        const int32_t *h = hist + (r->order - k);
        memcpy(g, h, (size_t)(k - 1) * sizeof *g);
        double total = 0, left = 0, own = 0;
        for (int32_t x = 0; x < r->v; x++) {
            g[k - 1] = x;
            unsigned c = ref_count(r, k, g);
            if (c == 0)
                continue;
            double dc = r->d[k][c < 3 ? c : 3];
            total += c;
            left += dc;
            if (x == w)
                own = c - dc;
        }
        if (total == 0)
            break;
        p = own / total + left / total * p;
    }
    return p;
}

START_TEST(test_reference)
{
    uint64_t s = 7;
    const int32_t v = 9;
    for (int order = 1; order <= 5; order++) {
        /* Skewed random documents of random lengths (0 included). */
        int32_t *docs[40];
        size_t lens[40], total = 0;
        for (int d = 0; d < 40; d++) {
            lens[d] = rnd(&s) % 25;
            docs[d] = malloc((lens[d] + 1) * sizeof **docs);
            for (size_t i = 0; i < lens[d]; i++) {
                double u = unif(&s);
                docs[d][i] = (int32_t)((v - 1) * u * u); /* id 8 never */
                if (i > 0 && unif(&s) < 0.5)
                    docs[d][i] = (docs[d][i - 1] + 1) % (v - 1);
            }
            total += lens[d];
        }
        struct ref r = {order, v, NULL, 0, {{0}}};
        r.tok = malloc((total + 40 * (size_t)order) * sizeof *r.tok);
        for (int d = 0; d < 40; d++) {
            for (int j = 0; j < order - 1; j++)
                r.tok[r.n++] = v;
            memcpy(r.tok + r.n, docs[d], lens[d] * sizeof *r.tok);
            r.n += lens[d];
        }
        ref_discounts(&r);
        ng_model *m = train_or_fail(order, v, (const int32_t *const *)docs,
                                    lens, 40);
        for (int k = 1; k <= order; k++)
            for (int c = 1; c <= 3; c++)
                ck_assert_msg(fabs(ng_discount(m, k, c) - r.d[k][c]) < 1e-12,
                              "order %d: D_%d(%d) %g, reference %g", order, k,
                              c, ng_discount(m, k, c), r.d[k][c]);
        /* Contexts: every document prefix of the first documents, plus
         * random contexts (mostly unseen histories). */
        for (int t = 0; t < 120; t++) {
            int32_t ctx[8], hist[NG_MAX_ORDER];
            size_t h;
            if (t < 80) {
                int d = t % 40;
                h = lens[d] ? rnd(&s) % (lens[d] + 1) : 0;
                if (h > 8)
                    h = 8;
                memcpy(ctx, docs[d] + (lens[d] ? rnd(&s) % (lens[d] - h + 1)
                                               : 0),
                       h * sizeof *ctx);
                if (t < 40) /* a true document prefix */
                    memcpy(ctx, docs[d], h * sizeof *ctx);
            } else {
                h = rnd(&s) % 9;
                for (size_t i = 0; i < h; i++)
                    ctx[i] = (int32_t)(rnd(&s) % (uint64_t)v);
            }
            for (int j = 0; j < order - 1; j++) {
                size_t back = (size_t)(order - 1 - j);
                hist[j] = back <= h ? ctx[h - back] : v;
            }
            float row[9];
            ng_logits(m, ctx, h, row);
            double sum = 0;
            for (int32_t w = 0; w < v; w++) {
                double want = ref_prob(&r, hist, w);
                double got = ng_prob(m, ctx, h, w);
                sum += got;
                ck_assert_msg(fabs(got - want) <= 1e-12 * want,
                              "order %d ctx %d: P(%d) = %.17g, reference "
                              "%.17g", order, t, (int)w, got, want);
                ck_assert_msg(fabs(row[w] - log(want)) <=
                                  4 * FLT_EPSILON * fmax(1, -log(want)),
                              "order %d ctx %d: row[%d] %.9g vs %.9g", order,
                              t, (int)w, (double)row[w], log(want));
            }
            ck_assert_msg(fabs(sum - 1) < 1e-12, "sum %.17g", sum);
        }
        ng_free(m);
        free(r.tok);
        for (int d = 0; d < 40; d++)
            free(docs[d]);
    }
}
END_TEST

/* ------------------------------------------------ a larger synthetic model
 *
 * A second-order Markov source over V ids with a Zipf-like marginal, in
 * documents of varying length: enough structure for every order of a
 * 4-gram model to have long continuation lists and many unseen histories.
 */
#define BIG_V 5000
#define BIG_DOCS 200

static int32_t **big_docs(size_t *lens, uint64_t seed)
{
    uint64_t s = seed;
    int32_t **docs = malloc(BIG_DOCS * sizeof *docs);
    for (int d = 0; d < BIG_DOCS; d++) {
        lens[d] = 50 + rnd(&s) % 400;
        docs[d] = malloc(lens[d] * sizeof **docs);
        for (size_t i = 0; i < lens[d]; i++) {
            double u = unif(&s);
            int32_t z = (int32_t)(exp(u * log((double)BIG_V)) - 1);
            if (i >= 2 && unif(&s) < 0.6)
                z = (int32_t)((docs[d][i - 1] * 31 + docs[d][i - 2] * 7 +
                               (int32_t)(rnd(&s) % 4)) % BIG_V);
            docs[d][i] = z;
        }
    }
    return docs;
}

static void free_docs(int32_t **docs)
{
    for (int d = 0; d < BIG_DOCS; d++)
        free(docs[d]);
    free(docs);
}

/* Context number t: prefixes of training documents, then random ones. */
static size_t pick_ctx(int32_t **docs, const size_t *lens, int t, uint64_t *s,
                       int32_t *buf, const int32_t **ctx)
{
    if (t % 4 == 3) {
        size_t h = rnd(s) % 6;
        for (size_t i = 0; i < h; i++)
            buf[i] = (int32_t)(rnd(s) % BIG_V);
        *ctx = buf;
        return h;
    }
    int d = (int)(rnd(s) % BIG_DOCS);
    *ctx = docs[d];
    return t % 4 == 0 ? (size_t)(t / 4 % 4) : rnd(s) % lens[d];
}

START_TEST(test_rows_sum_to_one)
{
    size_t lens[BIG_DOCS];
    int32_t **docs = big_docs(lens, 11);
    float *row = malloc(BIG_V * sizeof *row);
    uint64_t s = 5;
    for (int order = 2; order <= 4; order++) {
        ng_model *m = train_or_fail(order, BIG_V,
                                    (const int32_t *const *)docs, lens,
                                    BIG_DOCS);
        for (int t = 0; t < 400; t++) {
            int32_t buf[8];
            const int32_t *ctx;
            size_t h = pick_ctx(docs, lens, t, &s, buf, &ctx);
            ng_logits(m, ctx, h, row);
            double sum = 0;
            for (int w = 0; w < BIG_V; w++)
                sum += exp((double)row[w]);
            ck_assert_msg(fabs(sum - 1) <= 1e-6,
                          "order %d context %d: row sums to %.12g", order, t,
                          sum);
            /* ng_logits agrees with ng_prob for every token (float
             * rounding of ln p: a few ulps of |ln p|). */
            if (t % 10 == 0)
                for (int32_t w = 0; w < BIG_V; w++) {
                    double lp = log(ng_prob(m, ctx, h, w));
                    ck_assert_msg(fabs(row[w] - lp) <=
                                      4 * FLT_EPSILON * fmax(1, -lp),
                                  "order %d context %d: row[%d] %.9g, "
                                  "ln ng_prob %.9g", order, t, (int)w,
                                  (double)row[w], lp);
                }
        }
        ng_free(m);
    }
    free(row);
    free_docs(docs);
}
END_TEST

/* ------------------------------------------------------------ files */

/* A fresh directory per test (Check may run each test in its own
 * process); each test removes its files, then the directory, which fails
 * if a temporary file was left behind. */
static char tmpdir[64];

static void make_tmpdir(void)
{
    snprintf(tmpdir, sizeof tmpdir, "%s", "/tmp/test_ngram.XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(tmpdir));
}

static void path_in_tmp(char *buf, size_t len, const char *name)
{
    snprintf(buf, len, "%s/%s", tmpdir, name);
}

static unsigned char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    ck_assert_ptr_nonnull(f);
    fseek(f, 0, SEEK_END);
    *len = (size_t)ftell(f);
    rewind(f);
    unsigned char *b = malloc(*len + 1);
    ck_assert_uint_eq(fread(b, 1, *len, f), *len);
    fclose(f);
    return b;
}

static void spill(const char *path, const unsigned char *b, size_t len)
{
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(b, 1, len, f), len);
    ck_assert_int_eq(fclose(f), 0);
}

/* Rewrite the SHA-256 trailer, so a deliberate change passes it. */
static void reseal(unsigned char *b, size_t len)
{
    unsigned dl;
    ck_assert_int_eq(EVP_Digest(b, len - 32, b + len - 32, &dl, EVP_sha256(),
                                NULL), 1);
}

START_TEST(test_save_load)
{
    make_tmpdir();
    size_t lens[BIG_DOCS];
    int32_t **docs = big_docs(lens, 23);
    ng_model *m = train_or_fail(4, BIG_V, (const int32_t *const *)docs, lens,
                                BIG_DOCS), *m2 = NULL;
    char path[256], err[NG_ERRMSG_SIZE];
    path_in_tmp(path, sizeof path, "model.ngm");
    ck_assert_msg(ng_save(m, path, err, sizeof err) == 0, "%s", err);
    ck_assert_msg(ng_load(&m2, path, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(ng_order(m2), 4);
    ck_assert_int_eq(ng_vocab(m2), BIG_V);
    for (int k = 1; k <= 4; k++) {
        ck_assert_uint_eq(ng_count(m2, k), ng_count(m, k));
        for (int c = 1; c <= 3; c++)
            ck_assert(ng_discount(m2, k, c) == ng_discount(m, k, c));
    }
    float *a = malloc(BIG_V * sizeof *a), *b = malloc(BIG_V * sizeof *b);
    uint64_t s = 3;
    for (int t = 0; t < 100; t++) {
        int32_t buf[8];
        const int32_t *ctx;
        size_t h = pick_ctx(docs, lens, t, &s, buf, &ctx);
        ng_logits(m, ctx, h, a);
        ng_logits(m2, ctx, h, b);
        ck_assert_msg(memcmp(a, b, BIG_V * sizeof *a) == 0,
                      "context %d: rows differ after load", t);
    }
    /* Saving the loaded model gives the same bytes. */
    char path2[256];
    path_in_tmp(path2, sizeof path2, "again.ngm");
    ck_assert_msg(ng_save(m2, path2, err, sizeof err) == 0, "%s", err);
    size_t l1, l2;
    unsigned char *f1 = slurp(path, &l1), *f2 = slurp(path2, &l2);
    ck_assert_uint_eq(l1, l2);
    ck_assert(memcmp(f1, f2, l1) == 0);
    free(f2);
    free(f1);
    unlink(path);
    unlink(path2);
    ck_assert_int_eq(rmdir(tmpdir), 0);
    free(a);
    free(b);
    ng_free(m2);
    ng_free(m);
    free_docs(docs);
}
END_TEST

/* Expect ng_load to refuse the file with a message containing what (and
 * the file's name). */
static void refused(const char *path, const char *what)
{
    ng_model *m = (ng_model *)1;
    char err[NG_ERRMSG_SIZE] = "";
    ck_assert_int_eq(ng_load(&m, path, err, sizeof err), -1);
    ck_assert_ptr_null(m);
    ck_assert_msg(strstr(err, path) != NULL, "message lacks the file: %s",
                  err);
    ck_assert_msg(strstr(err, what) != NULL, "want '%s', got: %s", what,
                  err);
}

START_TEST(test_damaged_files)
{
    make_tmpdir();
    ng_model *m = train_or_fail(3, 4, hdocs, hlens, 3);
    char path[256], bad[256], err[NG_ERRMSG_SIZE];
    path_in_tmp(path, sizeof path, "small.ngm");
    path_in_tmp(bad, sizeof bad, "bad.ngm");
    ck_assert_msg(ng_save(m, path, err, sizeof err) == 0, "%s", err);
    ng_free(m);
    size_t len;
    unsigned char *b = slurp(path, &len), *c = malloc(len + 1);
    /* Header 24 + 3 counts 24 + 9 discounts 72, then 3x8 + 5x12 + 7x16
     * bytes of records, then 32 bytes of SHA-256. */
    ck_assert_uint_eq(len, 24 + 24 + 72 + 24 + 60 + 112 + 32);

    refused("/nonexistent/dir/x.ngm", "No such file");
    for (size_t cut = 0; cut < len; cut += cut < 130 ? 1 : 7) {
        spill(bad, b, cut);
        refused(bad, "truncated");
    }
    memcpy(c, b, len);
    c[len] = 0;
    spill(bad, c, len + 1);
    refused(bad, "trailing data");
    for (size_t i = 48; i < len; i += 5) { /* any flipped bit of the body */
        memcpy(c, b, len);
        c[i] ^= 0x10;
        spill(bad, c, len);
        refused(bad, "checksum mismatch");
    }
    memcpy(c, b, len);
    c[0] = 'X';
    spill(bad, c, len);
    refused(bad, "bad magic");
    memcpy(c, b, len);
    c[8] = 2;
    spill(bad, c, len);
    refused(bad, "format version 2");
    /* Changes that keep the checksum valid are checked field by field. */
    struct {
        size_t off;
        unsigned char val;
        const char *what;
    } sealed[] = {
        {55, 0xbf, "discount"},                    /* D1 of order 1 < 0 */
        {55, 0x40, "discount"},                    /* D1 of order 1 > 1 */
        {120, 4, "predicted id outside"},          /* unigram 0 -> id 4 */
        {124, 0, "zero count"},                    /* its count */
        {128, 0, "out of order"},                  /* unigram 1 -> 0 */
        {144 + 4, 3, "suffix is missing"},         /* bigram (B,0) -> (B,3) */
        {144, 9, "history id outside"},            /* bigram (9,0) */
        {12, 3, "bad header"},                     /* order byte: 3 -> 259 */
    };
    for (size_t i = 0; i < sizeof sealed / sizeof sealed[0]; i++) {
        memcpy(c, b, len);
        if (sealed[i].off == 12)
            c[13] = 1;
        else
            c[sealed[i].off] = sealed[i].val;
        reseal(c, len);
        spill(bad, c, len);
        refused(bad, sealed[i].what);
    }
    /* The original still loads; a failed save leaves nothing behind. */
    ck_assert_msg(ng_load(&m, path, err, sizeof err) == 0, "%s", err);
    char missing[256];
    path_in_tmp(missing, sizeof missing, "no/such/dir.ngm");
    ck_assert_int_eq(ng_save(m, missing, err, sizeof err), -1);
    ck_assert_msg(strstr(err, missing) != NULL, "%s", err);
    ng_free(m);
    free(b);
    free(c);
    unlink(bad);
    unlink(path);
    ck_assert_int_eq(rmdir(tmpdir), 0);
}
END_TEST

/* Random changes that keep the checksum valid: every file is either
 * refused with a message or loads as a proper model (rows sum to one).
 * Mostly a job for the sanitizer build. */
START_TEST(test_sealed_mutations)
{
    make_tmpdir();
    size_t lens[BIG_DOCS];
    int32_t **docs = big_docs(lens, 31);
    for (int d = 0; d < BIG_DOCS; d++)
        lens[d] /= 20; /* a small model: fast to load 3000 times */
    ng_model *m = train_or_fail(3, BIG_V, (const int32_t *const *)docs, lens,
                                BIG_DOCS);
    char path[256], err[NG_ERRMSG_SIZE];
    path_in_tmp(path, sizeof path, "m.ngm");
    ck_assert_msg(ng_save(m, path, err, sizeof err) == 0, "%s", err);
    ng_free(m);
    size_t len;
    unsigned char *b = slurp(path, &len), *c = malloc(len);
    float *row = malloc(BIG_V * sizeof *row);
    uint64_t s = 99;
    int loaded = 0;
    for (int t = 0; t < 3000; t++) {
        memcpy(c, b, len);
        /* Header fields, the discounts or the records (the trailer is
         * rewritten anyway). */
        for (int j = 0; j < 1 + t % 3; j++) {
            size_t at = t % 4 == 0 ? rnd(&s) % 120 : rnd(&s) % (len - 32);
            c[at] = t % 2 ? (unsigned char)rnd(&s) : c[at] ^ (1u << (t % 8));
        }
        reseal(c, len);
        spill(path, c, len);
        m = NULL;
        err[0] = '\0';
        if (ng_load(&m, path, err, sizeof err) != 0) {
            ck_assert_msg(strstr(err, path) != NULL, "message: %s", err);
            continue;
        }
        loaded++;
        /* The vocabulary field may have changed: size the row by it. */
        float *r2 = realloc(row, (size_t)ng_vocab(m) * sizeof *row);
        ck_assert_ptr_nonnull(r2);
        row = r2;
        int32_t ctx[2] = {(int32_t)(rnd(&s) % BIG_V), docs[0][0]};
        ng_logits(m, ctx, t % 3, row);
        double sum = 0;
        for (int32_t w = 0; w < ng_vocab(m); w++)
            sum += exp((double)row[w]);
        ck_assert_msg(fabs(sum - 1) < 1e-5, "mutant %d: row sum %.9g", t,
                      sum);
        ng_free(m);
    }
    ck_assert_int_gt(loaded, 0); /* count changes, for instance */
    free(row);
    free(b);
    free(c);
    unlink(path);
    ck_assert_int_eq(rmdir(tmpdir), 0);
    free_docs(docs);
}
END_TEST

START_TEST(test_bad_input)
{
    char err[NG_ERRMSG_SIZE];
    ck_assert_ptr_null(ng_trainer_new(0, 10, err, sizeof err));
    ck_assert_ptr_nonnull(strstr(err, "order 0"));
    ck_assert_ptr_null(ng_trainer_new(7, 10, err, sizeof err));
    ck_assert_ptr_null(ng_trainer_new(3, 0, err, sizeof err));
    ng_trainer *t = ng_trainer_new(3, 10, err, sizeof err);
    ng_model *m = (ng_model *)1;
    ck_assert_int_eq(ng_trainer_finish(t, &m, err, sizeof err), -1);
    ck_assert_ptr_null(m);
    ck_assert_ptr_nonnull(strstr(err, "no training tokens"));
    const int32_t ids[] = {1, 2, 10, 3};
    size_t bad = 99;
    ck_assert_int_eq(ng_trainer_add(t, ids, 4, &bad, err, sizeof err), -1);
    ck_assert_uint_eq(bad, 2);
    ck_assert_ptr_nonnull(strstr(err, "id 10 outside"));
    ck_assert_uint_eq(ng_trainer_tokens(t), 0); /* nothing of it counted */
    ck_assert_int_eq(ng_trainer_add(t, ids, 0, &bad, err, sizeof err), 0);
    ck_assert_int_eq(ng_trainer_add(t, ids, 2, &bad, err, sizeof err), 0);
    ck_assert_uint_eq(ng_trainer_docs(t), 1);
    ck_assert_uint_eq(ng_trainer_tokens(t), 2);
    ck_assert_int_eq(ng_trainer_finish(t, &m, err, sizeof err), 0);
    ck_assert_uint_eq(ng_count(m, 3), 2);
    ck_assert(isnan(ng_perplexity(m, ids, 0)));
    ng_free(m);
    ng_trainer_free(t);
    ng_trainer_free(NULL);
    ng_free(NULL);
}
END_TEST

/* ----------------------------------------------------- Markov chain
 *
 * A first-order chain over 64 ids, each with 8 successors of random
 * weights.  An order-2 model trained on 400k of its tokens must reach the
 * chain's entropy rate H = -sum_i pi_i sum_j P_ij ln P_ij on fresh text:
 *  - The expected excess E[CE] - H is the KL divergence from the chain to
 *    the model: about (#parameters)/(2 N) = 64*7/(2*400k) = 0.0006 nats for
 *    the estimates, plus the mass KN moves to the 56 never-seen successors,
 *    gamma ~ D*8/c(i) ~ 0.9*8/6250 ~ 0.0012 nats: well under 0.005.
 *  - The held-out average of -ln q over N' = 200k tokens has a standard
 *    error of sd(-ln P)/sqrt(N') ~ 0.7/447 ~ 0.0016 nats (the chain mixes
 *    in a few steps, so correlation inflates this little).
 * So |CE - H| <= 0.01 nats is > 5 standard errors above the bias (false
 * alarm well below 1e-6 for this fixed seed anyway), yet a model off by
 * 1 % in perplexity fails.  The exact cross-entropy sum_i pi_i sum_j P_ij
 * (-ln q(j|i)) (no sampling noise) must lie in [H, H + 0.005].
 */
#define MC_V 64
#define MC_SUCC 8

START_TEST(test_markov_entropy)
{
    static double P[MC_V][MC_V];
    uint64_t s = 2024;
    for (int i = 0; i < MC_V; i++) {
        double z = 0;
        for (int j = 0; j < MC_SUCC; j++) {
            int to = (int)(rnd(&s) % MC_V);
            double wgt = 0.05 + unif(&s);
            P[i][to] += wgt;
            z += wgt;
        }
        for (int j = 0; j < MC_V; j++)
            P[i][j] /= z;
    }
    /* Stationary distribution by power iteration. */
    double pi[MC_V], nx[MC_V];
    for (int i = 0; i < MC_V; i++)
        pi[i] = 1.0 / MC_V;
    for (int it = 0; it < 2000; it++) {
        memset(nx, 0, sizeof nx);
        for (int i = 0; i < MC_V; i++)
            for (int j = 0; j < MC_V; j++)
                nx[j] += pi[i] * P[i][j];
        memcpy(pi, nx, sizeof pi);
    }
    double H = 0;
    for (int i = 0; i < MC_V; i++)
        for (int j = 0; j < MC_V; j++)
            if (P[i][j] > 0)
                H -= pi[i] * P[i][j] * log(P[i][j]);
    /* Documents of 2000 tokens, each starting from pi. */
    enum { DOC = 2000, TRAIN = 200, TEST = 100 };
    int32_t *docs[TRAIN + TEST];
    size_t lens[TRAIN + TEST];
    for (int d = 0; d < TRAIN + TEST; d++) {
        docs[d] = malloc(DOC * sizeof **docs);
        lens[d] = DOC;
        int x = 0;
        double u = unif(&s), acc = 0;
        while (x < MC_V - 1 && (acc += pi[x]) <= u)
            x++;
        for (int i = 0; i < DOC; i++) {
            docs[d][i] = x;
            u = unif(&s);
            acc = 0;
            int y = 0;
            while (y < MC_V - 1 && (acc += P[x][y]) <= u)
                y++;
            x = y;
        }
    }
    ng_model *m = train_or_fail(2, MC_V, (const int32_t *const *)docs, lens,
                                TRAIN);
    double lp = 0;
    for (int d = TRAIN; d < TRAIN + TEST; d++)
        lp += ng_logprob(m, docs[d], DOC);
    double ce = -lp / ((double)TEST * DOC);
    ck_assert_msg(fabs(ce - H) <= 0.01,
                  "held-out cross-entropy %.5f nats, entropy rate %.5f", ce,
                  H);
    double pp = ng_perplexity(m, docs[TRAIN], DOC);
    ck_assert_msg(fabs(log(pp) - H) < 0.1, "one document: ppl %g vs %g", pp,
                  exp(H));
    double exact = 0;
    for (int i = 0; i < MC_V; i++)
        for (int j = 0; j < MC_V; j++) {
            int32_t c = i;
            if (P[i][j] > 0)
                exact -= pi[i] * P[i][j] * log(ng_prob(m, &c, 1, j));
        }
    ck_assert_msg(exact >= H && exact <= H + 0.005,
                  "exact cross-entropy %.6f, entropy rate %.6f", exact, H);
    ng_free(m);
    for (int d = 0; d < TRAIN + TEST; d++)
        free(docs[d]);
}
END_TEST

static Suite *ngram_suite(void)
{
    Suite *s = suite_create("ngram");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_hand_values);
    tcase_add_test(tc, test_reference);
    tcase_add_test(tc, test_rows_sum_to_one);
    tcase_add_test(tc, test_save_load);
    tcase_add_test(tc, test_damaged_files);
    tcase_add_test(tc, test_sealed_mutations);
    tcase_add_test(tc, test_bad_input);
    tcase_add_test(tc, test_markov_entropy);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(ngram_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
