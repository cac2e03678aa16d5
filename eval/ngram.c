/*
 * ngram.c - training and querying the interpolated modified Kneser-Ney
 * model described in ngram.h.
 *
 * Training counts the top-order n-grams in a hash table, sorts them, and
 * derives each lower order's continuation counts from the distinct n-grams
 * of the order above: every (k-1)-gram occurrence is the suffix of a
 * k-gram occurrence (documents are padded with NG_BOS), so the number of
 * distinct left extensions of a (k-1)-gram is the number of distinct
 * k-grams it ends.
 */
#define _GNU_SOURCE /* qsort_r */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "ngram_impl.h"

void ng__err(char *err, size_t errlen, const char *fmt, ...)
{
    if (err == NULL || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* ------------------------------------------------------ counting table */

/* k-gram -> count, open addressing over an append-only array of keys. */
struct gram_table {
    int k;
    size_t n, cap;      /* entries, allocated entries */
    int32_t *keys;      /* cap x k */
    uint32_t *counts;   /* cap */
    uint32_t *slots;    /* entry index + 1; 0 is empty */
    size_t mask;
};

static uint64_t hash_ids(const int32_t *ids, int k)
{
    return XXH3_64bits(ids, (size_t)k * sizeof *ids);
}

static int table_init(struct gram_table *t, int k, size_t expect)
{
    size_t slots = 1024;
    while (slots / 4 * 3 < expect)
        slots *= 2;
    memset(t, 0, sizeof *t);
    t->k = k;
    t->cap = slots / 4 * 3;
    t->mask = slots - 1;
    t->keys = malloc(t->cap * (size_t)k * sizeof *t->keys);
    t->counts = malloc(t->cap * sizeof *t->counts);
    t->slots = calloc(slots, sizeof *t->slots);
    return t->keys && t->counts && t->slots ? 0 : -1;
}

static void table_free(struct gram_table *t)
{
    free(t->keys);
    free(t->counts);
    free(t->slots);
    memset(t, 0, sizeof *t);
}

/* Double the table: load factor stays at most 3/4. */
static int table_grow(struct gram_table *t)
{
    size_t slots = (t->mask + 1) * 2, cap = slots / 4 * 3;
    int32_t *keys = realloc(t->keys, cap * (size_t)t->k * sizeof *keys);
    if (keys == NULL)
        return -1;
    t->keys = keys;
    uint32_t *counts = realloc(t->counts, cap * sizeof *counts);
    if (counts == NULL)
        return -1;
    t->counts = counts;
    uint32_t *s = calloc(slots, sizeof *s);
    if (s == NULL)
        return -1;
    free(t->slots);
    t->slots = s;
    t->mask = slots - 1;
    t->cap = cap;
    for (size_t e = 0; e < t->n; e++) {
        size_t i = hash_ids(t->keys + e * (size_t)t->k, t->k) & t->mask;
        while (s[i] != 0)
            i = (i + 1) & t->mask;
        s[i] = (uint32_t)(e + 1);
    }
    return 0;
}

static int table_add(struct gram_table *t, const int32_t *key, uint32_t inc)
{
    size_t kb = (size_t)t->k * sizeof *key;
    size_t i = hash_ids(key, t->k) & t->mask;
    for (;;) {
        uint32_t s = t->slots[i];
        if (s == 0)
            break;
        if (memcmp(t->keys + (size_t)(s - 1) * (size_t)t->k, key, kb) == 0) {
            t->counts[s - 1] += inc;
            return 0;
        }
        i = (i + 1) & t->mask;
    }
    if (t->n == t->cap) {
        if (t->n >= UINT32_MAX - 1 || table_grow(t) != 0)
            return -1;
        return table_add(t, key, inc);
    }
    memcpy(t->keys + t->n * (size_t)t->k, key, kb);
    t->counts[t->n] = inc;
    t->slots[i] = (uint32_t)(++t->n);
    return 0;
}

/* The table's entries as sorted records (k ids, count; stride k+1). */
static int cmp_records(const void *a, const void *b, void *arg)
{
    const uint32_t *x = a, *y = b;
    int k = *(const int *)arg;
    for (int i = 0; i < k; i++)
        if (x[i] != y[i])
            return x[i] < y[i] ? -1 : 1;
    return 0;
}

static uint32_t *table_records(const struct gram_table *t)
{
    size_t stride = (size_t)t->k + 1;
    uint32_t *rec = malloc((t->n ? t->n : 1) * stride * sizeof *rec);
    if (rec == NULL)
        return NULL;
    for (size_t e = 0; e < t->n; e++) {
        memcpy(rec + e * stride, t->keys + e * (size_t)t->k,
               (size_t)t->k * sizeof *rec);
        rec[e * stride + (size_t)t->k] = t->counts[e];
    }
    int k = t->k;
    qsort_r(rec, t->n, stride * sizeof *rec, cmp_records, &k);
    return rec;
}

/* ------------------------------------------------------------ trainer */

struct ng_trainer {
    int order;
    int32_t vocab;
    uint64_t tokens, docs;
    struct gram_table top;
};

ng_trainer *ng_trainer_new(int order, int32_t vocab, char *err, size_t errlen)
{
    if (order < NG_MIN_ORDER || order > NG_MAX_ORDER) {
        ng__err(err, errlen, "order %d outside [%d, %d]", order,
                NG_MIN_ORDER, NG_MAX_ORDER);
        return NULL;
    }
    if (vocab < 1 || vocab > NG_MAX_VOCAB) {
        ng__err(err, errlen, "vocabulary size %ld outside [1, %ld]",
                (long)vocab, (long)NG_MAX_VOCAB);
        return NULL;
    }
    ng_trainer *t = calloc(1, sizeof *t);
    if (t == NULL || table_init(&t->top, order, 1 << 16) != 0) {
        if (t != NULL)
            table_free(&t->top);
        free(t);
        ng__err(err, errlen, "out of memory");
        return NULL;
    }
    t->order = order;
    t->vocab = vocab;
    return t;
}

void ng_trainer_free(ng_trainer *t)
{
    if (t == NULL)
        return;
    table_free(&t->top);
    free(t);
}

uint64_t ng_trainer_tokens(const ng_trainer *t) { return t->tokens; }
uint64_t ng_trainer_docs(const ng_trainer *t) { return t->docs; }

int ng_trainer_add(ng_trainer *t, const int32_t *ids, size_t n,
                   size_t *bad_index, char *err, size_t errlen)
{
    if (n == 0)
        return 0; /* nothing to predict: not counted as a document */
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= t->vocab) {
            if (bad_index != NULL)
                *bad_index = i;
            ng__err(err, errlen, "id %ld outside the vocabulary [0, %ld)",
                    (long)ids[i], (long)t->vocab);
            return -1;
        }
    }
    /* Counts are 32-bit: refuse rather than wrap. */
    if (n > UINT32_MAX - t->tokens) {
        if (bad_index != NULL)
            *bad_index = n;
        ng__err(err, errlen, "more than %lu training tokens",
                (unsigned long)UINT32_MAX);
        return -1;
    }
    int32_t key[NG_MAX_ORDER];
    int k = t->order;
    for (int j = 0; j < k; j++)
        key[j] = t->vocab; /* NG_BOS */
    for (size_t i = 0; i < n; i++) {
        memmove(key, key + 1, (size_t)(k - 1) * sizeof *key);
        key[k - 1] = ids[i];
        if (table_add(&t->top, key, 1) != 0) {
            /* The counts of this document's first i tokens stay: the
             * trainer is then only good for freeing. */
            if (bad_index != NULL)
                *bad_index = n;
            ng__err(err, errlen, "out of memory");
            return -1;
        }
    }
    t->tokens += n;
    t->docs++;
    return 0;
}

/* Chen & Goodman's estimates from the count-of-counts of one order. */
static void estimate_discounts(double d[4], const uint32_t *rec, size_t n,
                               int k)
{
    double c[5] = {0};
    for (size_t e = 0; e < n; e++) {
        uint32_t v = rec[e * (size_t)(k + 1) + (size_t)k];
        if (v <= 4)
            c[v]++;
    }
    d[0] = 0;
    double y = c[1] + 2 * c[2] > 0 ? c[1] / (c[1] + 2 * c[2]) : 0;
    for (int i = 1; i <= 3; i++) {
        double est = NAN;
        if (c[1] > 0 && c[i] > 0)
            est = i - (i + 1) * y * c[i + 1] / c[i];
        d[i] = est > 0 && est < i ? est : i / 2.0;
    }
}

int ng_trainer_finish(ng_trainer *t, ng_model **out, char *err,
                      size_t errlen)
{
    *out = NULL;
    if (t->tokens == 0) {
        ng__err(err, errlen, "no training tokens");
        return -1;
    }
    int order = t->order;
    ng_model *m = ng__alloc(order, t->vocab);
    uint32_t *rec = m ? table_records(&t->top) : NULL;
    size_t n = t->top.n;
    for (int k = order; rec != NULL; k--) {
        struct ng_level *lv = &m->lv[k];
        estimate_discounts(lv->d, rec, n, k);
        if (ng__level_build(lv, rec, n) != 0)
            break;
        if (k == 1) {
            free(rec);
            if (ng__finish(m) != 0)
                break;
            *out = m;
            return 0;
        }
        /* Continuation counts of order k-1: one per distinct k-gram. */
        struct gram_table low;
        if (table_init(&low, k - 1, n) != 0) {
            table_free(&low);
            break;
        }
        int fail = 0;
        for (size_t e = 0; e < n && !fail; e++)
            fail = table_add(&low, (const int32_t *)rec + e * (size_t)(k + 1) + 1,
                             1);
        free(rec);
        rec = fail ? NULL : table_records(&low);
        n = low.n;
        table_free(&low);
    }
    free(rec);
    ng_free(m);
    ng__err(err, errlen, "out of memory");
    return -1;
}

int ng_train(ng_model **out, int order, int32_t vocab,
             const int32_t *const *docs, const size_t *lens, size_t n_docs,
             char *err, size_t errlen)
{
    *out = NULL;
    ng_trainer *t = ng_trainer_new(order, vocab, err, errlen);
    if (t == NULL)
        return -1;
    char msg[NG_ERRMSG_SIZE];
    for (size_t d = 0; d < n_docs; d++) {
        size_t bad;
        if (ng_trainer_add(t, docs[d], lens[d], &bad, msg, sizeof msg) != 0) {
            ng__err(err, errlen, "document %zu, token %zu: %s", d, bad, msg);
            ng_trainer_free(t);
            return -1;
        }
    }
    int rc = ng_trainer_finish(t, out, err, errlen);
    ng_trainer_free(t);
    return rc;
}

/* -------------------------------------------------------------- model */

ng_model *ng__alloc(int order, int32_t vocab)
{
    ng_model *m = calloc(1, sizeof *m);
    if (m == NULL)
        return NULL;
    m->order = order;
    m->vocab = vocab;
    for (int k = 1; k <= order; k++)
        m->lv[k].k = k;
    return m;
}

static void level_free(struct ng_level *lv)
{
    free(lv->hist_ids);
    free(lv->hist_start);
    free(lv->hist_inv);
    free(lv->hist_gamma);
    free(lv->slots);
    free(lv->word);
    free(lv->count);
}

void ng_free(ng_model *m)
{
    if (m == NULL)
        return;
    for (int k = 1; k <= m->order; k++)
        level_free(&m->lv[k]);
    free(m->base);
    free(m->logbase);
    free(m);
}

int ng_order(const ng_model *m) { return m->order; }
int32_t ng_vocab(const ng_model *m) { return m->vocab; }

uint64_t ng_count(const ng_model *m, int k)
{
    return k >= 1 && k <= m->order ? m->lv[k].n : 0;
}

double ng_discount(const ng_model *m, int k, int c)
{
    return k >= 1 && k <= m->order && c >= 1 && c <= 3 ? m->lv[k].d[c] : NAN;
}

size_t ng_memory(const ng_model *m)
{
    size_t b = sizeof *m + (size_t)m->vocab * (sizeof *m->base +
                                             sizeof *m->logbase);
    for (int k = 1; k <= m->order; k++) {
        const struct ng_level *lv = &m->lv[k];
        b += lv->n * (sizeof *lv->word + sizeof *lv->count);
        b += lv->n_hist * ((size_t)(k - 1) * sizeof(int32_t) +
                           sizeof(uint32_t) + 2 * sizeof(double));
        b += (lv->mask + 1) * sizeof(uint32_t);
    }
    return b;
}

static int same_hist(const uint32_t *a, const uint32_t *b, int len)
{
    return memcmp(a, b, (size_t)len * sizeof *a) == 0;
}

int ng__level_build(struct ng_level *lv, const uint32_t *rec, size_t n)
{
    int k = lv->k, hl = k - 1;
    size_t stride = (size_t)k + 1, nh = 0;
    for (size_t e = 0; e < n; e++)
        nh += e == 0 || !same_hist(rec + e * stride, rec + (e - 1) * stride, hl);
    size_t slots = 2;
    while (slots < 2 * nh)
        slots *= 2;
    lv->n = n;
    lv->n_hist = nh;
    lv->hist_ids = malloc((nh * (size_t)hl + 1) * sizeof *lv->hist_ids);
    lv->hist_start = malloc((nh + 1) * sizeof *lv->hist_start);
    lv->hist_inv = malloc((nh + 1) * sizeof *lv->hist_inv);
    lv->hist_gamma = malloc((nh + 1) * sizeof *lv->hist_gamma);
    lv->slots = calloc(slots, sizeof *lv->slots);
    lv->mask = slots - 1;
    lv->word = malloc((n + 1) * sizeof *lv->word);
    lv->count = malloc((n + 1) * sizeof *lv->count);
    if (!lv->hist_ids || !lv->hist_start || !lv->hist_inv ||
        !lv->hist_gamma || !lv->slots || !lv->word || !lv->count)
        return -1;
    size_t h = 0;
    for (size_t e = 0; e < n; e++) {
        const uint32_t *r = rec + e * stride;
        if (e == 0 || !same_hist(r, r - stride, hl)) {
            memcpy(lv->hist_ids + h * (size_t)hl, r, (size_t)hl * sizeof *r);
            lv->hist_start[h++] = (uint32_t)e;
        }
        lv->word[e] = (int32_t)r[hl];
        lv->count[e] = r[k];
    }
    lv->hist_start[nh] = (uint32_t)n;
    for (h = 0; h < nh; h++) {
        double total = 0, left = 0;
        for (uint32_t e = lv->hist_start[h]; e < lv->hist_start[h + 1]; e++) {
            uint32_t c = lv->count[e];
            total += c;
            left += lv->d[c < 3 ? c : 3];
        }
        lv->hist_inv[h] = 1 / total;
        lv->hist_gamma[h] = left / total;
        size_t i = hl ? hash_ids(lv->hist_ids + h * (size_t)hl, hl) & lv->mask
                      : 0;
        while (lv->slots[i] != 0)
            i = (i + 1) & lv->mask;
        lv->slots[i] = (uint32_t)(h + 1);
    }
    return 0;
}

long ng__find_hist(const struct ng_level *lv, const int32_t *h)
{
    int hl = lv->k - 1;
    if (hl == 0)
        return lv->n_hist ? 0 : -1;
    size_t i = hash_ids(h, hl) & lv->mask;
    for (;;) {
        uint32_t s = lv->slots[i];
        if (s == 0)
            return -1;
        if (memcmp(lv->hist_ids + (size_t)(s - 1) * (size_t)hl, h,
                   (size_t)hl * sizeof *h) == 0)
            return (long)(s - 1);
        i = (i + 1) & lv->mask;
    }
}

uint32_t ng__cont_count(const struct ng_level *lv, size_t hi, int32_t w)
{
    size_t lo = lv->hist_start[hi], hi_e = lv->hist_start[hi + 1];
    while (lo < hi_e) {
        size_t mid = lo + (hi_e - lo) / 2;
        if (lv->word[mid] < w)
            lo = mid + 1;
        else
            hi_e = mid;
    }
    return lo < lv->hist_start[hi + 1] && lv->word[lo] == w ? lv->count[lo]
                                                            : 0;
}

/* The discounted own mass of a k-gram seen c times, before the history's
 * 1/c_k(h.). */
static inline double own(const struct ng_level *lv, uint32_t c)
{
    return c - lv->d[c < 3 ? c : 3];
}

int ng__finish(ng_model *m)
{
    size_t v = (size_t)m->vocab;
    m->base = malloc(v * sizeof *m->base);
    m->logbase = malloc(v * sizeof *m->logbase);
    if (m->base == NULL || m->logbase == NULL)
        return -1;
    const struct ng_level *lv = &m->lv[1];
    double uni = lv->hist_gamma[0] / (double)m->vocab;
    for (size_t w = 0; w < v; w++)
        m->base[w] = uni;
    for (size_t e = 0; e < lv->n; e++)
        m->base[lv->word[e]] += own(lv, lv->count[e]) * lv->hist_inv[0];
    for (size_t w = 0; w < v; w++)
        m->logbase[w] = (float)log(m->base[w]);
    return 0;
}

/* ------------------------------------------------------------ queries */

/* The last order-1 ids of ctx[0..h), NG_BOS-padded on the left. */
static void last_ids(const ng_model *m, const int32_t *ctx, size_t h,
                     int32_t *hist)
{
    int hl = m->order - 1;
    for (int j = 0; j < hl; j++) {
        size_t back = (size_t)(hl - j);
        hist[j] = back <= h ? ctx[h - back] : m->vocab;
    }
}

double ng_prob(const ng_model *m, const int32_t *ctx, size_t h, int32_t tok)
{
    if (tok < 0 || tok >= m->vocab)
        return 0;
    int32_t hist[NG_MAX_ORDER];
    int hl = m->order - 1;
    last_ids(m, ctx, h, hist);
    double p = m->base[tok];
    for (int k = 2; k <= m->order; k++) {
        const struct ng_level *lv = &m->lv[k];
        long hi = ng__find_hist(lv, hist + hl - (k - 1));
        if (hi < 0)
            break; /* a longer history containing it is unseen too */
        uint32_t c = ng__cont_count(lv, (size_t)hi, tok);
        p = (c ? own(lv, c) * lv->hist_inv[hi] : 0) + lv->hist_gamma[hi] * p;
    }
    return p;
}

/* row[w] = ln(base[w]) + lm for every w: the shared part of every row. */
static void fill_base(float *restrict row, const float *restrict logbase,
                      size_t v, double lm)
{
    for (size_t w = 0; w < v; w++)
        row[w] = logbase[w] + (float)lm;
}

void ng_logits(const ng_model *m, const int32_t *ctx, size_t h, float *row)
{
    /* P(w) = M_1 base[w] + sum_{k>=2} M_k A_k(w), with A_k(w) the own mass
     * at order k and M_k the product of the gammas above k: only ids seen
     * after the order-2 history (a superset of those seen at higher
     * orders) differ from the scaled base row. */
    int32_t hist[NG_MAX_ORDER];
    long hi[NG_MAX_ORDER + 1];
    double mult[NG_MAX_ORDER + 1];
    int hl = m->order - 1, top = 1;
    last_ids(m, ctx, h, hist);
    for (int k = 2; k <= m->order; k++) {
        hi[k] = ng__find_hist(&m->lv[k], hist + hl - (k - 1));
        if (hi[k] < 0)
            break;
        top = k;
    }
    mult[top] = 1;
    for (int k = top; k >= 2; k--)
        mult[k - 1] = mult[k] * m->lv[k].hist_gamma[hi[k]];
    fill_base(row, m->logbase, (size_t)m->vocab, log(mult[1]));
    if (top < 2)
        return;
    const struct ng_level *l2 = &m->lv[2];
    size_t pos[NG_MAX_ORDER + 1], end[NG_MAX_ORDER + 1];
    for (int k = 3; k <= top; k++) {
        pos[k] = m->lv[k].hist_start[hi[k]];
        end[k] = m->lv[k].hist_start[hi[k] + 1];
    }
    for (size_t e = l2->hist_start[hi[2]]; e < l2->hist_start[hi[2] + 1];
         e++) {
        int32_t w = l2->word[e];
        double p = mult[1] * m->base[w] +
                   mult[2] * own(l2, l2->count[e]) * l2->hist_inv[hi[2]];
        for (int k = 3; k <= top; k++) {
            const struct ng_level *lv = &m->lv[k];
            if (pos[k] < end[k] && lv->word[pos[k]] == w) {
                p += mult[k] * own(lv, lv->count[pos[k]]) * lv->hist_inv[hi[k]];
                pos[k]++;
            }
        }
        row[w] = logf((float)p);
    }
}

double ng_logprob(const ng_model *m, const int32_t *ids, size_t n)
{
    double s = 0;
    for (size_t i = 0; i < n; i++)
        s += log(ng_prob(m, ids, i, ids[i]));
    return s;
}

double ng_perplexity(const ng_model *m, const int32_t *ids, size_t n)
{
    return n ? exp(-ng_logprob(m, ids, n) / (double)n) : NAN;
}
